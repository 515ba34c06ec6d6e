# Helpers shared by pg_swarm's TAP tests: a mock endpoint on a free port and a
# node with pg_swarm preloaded and pointed at it.
package SwarmTest;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

# start_mock(options...) -> (harness, port); '--port-fixed' => P picks the port
sub start_mock
{
	my (@opts) = @_;
	my $bin = $ENV{SWARM_MOCK} or BAIL_OUT('SWARM_MOCK (path of test/mock/mock_llm) is not set');
	my $port;
	# '--port-fixed' => P: listen on a port chosen earlier
	for (my $i = 0; $i < @opts; $i += 2)
	{
		if ($opts[$i] eq '--port-fixed')
		{
			$port = $opts[ $i + 1 ];
			splice(@opts, $i, 2);
			last;
		}
	}
	$port //= PostgreSQL::Test::Cluster::get_free_port();
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $bin, '--port', $port, '--quiet', @opts ], '>', \$out, '2>', \$err);
	for (1 .. 100)
	{
		$h->pump_nb;
		last if $out =~ /listening/;
		select(undef, undef, undef, 0.05);
	}
	BAIL_OUT("mock did not start: $err") unless $out =~ /listening/;
	return ($h, $port);
}

sub stop_mock
{
	my ($h) = @_;
	$h->signal('TERM');
	$h->finish;
}

# new_node(name, mock_port, extra conf lines...) -> started node
sub new_node
{
	my ($name, $mock_port, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'pg_swarm'",
		"restart_after_crash = on",
		"swarm.database = 'postgres'",
		"swarm.base_url = 'http://127.0.0.1:$mock_port/v1'",
		@conf) . "\n");
	$node->start;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
	  or BAIL_OUT('pg_swarm worker did not start');
	return $node;
}

sub worker_pid
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
	  or die 'no pg_swarm worker';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'");
}

1;
