# pg_swarm beside Citus (issue 20, first step): a coordinator and two worker
# nodes on this machine, each with shared_preload_libraries = 'citus,pg_swarm'.
# What holds today, and what every later distributed test builds on:
#  1. CREATE EXTENSION pg_swarm on the coordinator reaches both workers (Citus
#     propagates it), at the same version, and pg_swarm's install-time checks
#     accept the schema Citus prepares there.
#  2. A pg_swarm worker runs on every node.
#  3. Undistributed (the tables local to the coordinator), a job runs as on a
#     single server: every request stored once, on the coordinator.
# Endpoint: the mock over plain HTTP/1.1 at a fixed 10 ms, no errors (this
# test is about where requests are sent from, not how endpoints behave).
# Skipped, saying why, when Citus is not installed (test/lib.sh builds it from
# vendor/citus before the TAP tests run).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my $sharedir = `pg_config --sharedir`;
chomp $sharedir;
my $control = slurp_file("$sharedir/extension/citus.control") if -f "$sharedir/extension/citus.control";
plan skip_all => "Citus 13.2 is not installed ($sharedir/extension/citus.control): test/lib.sh swarm_install_citus builds it from vendor/citus"
  unless defined $control && $control =~ /default_version = '13\.2-1'/;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 10);
END { SwarmTest::stop_mock($mock) if defined $mock; }

my @nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = SwarmTest::new_node($name, $mock_port,
		"shared_preload_libraries = 'citus,pg_swarm'",
		"listen_addresses = '127.0.0.1'", 'max_prepared_transactions = 20', 'wal_level = logical');
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	push @nodes, $node;
}
my ($coordinator, @workers) = @nodes;
sub sql { return $coordinator->safe_psql('postgres', $_[0]); }
sql("SELECT citus_set_coordinator_host('127.0.0.1', " . $coordinator->port . ")");
sql("SELECT citus_add_node('127.0.0.1', " . $_->port . ")") for @workers;
is(sql('SELECT count(*) FROM citus_get_active_worker_nodes()'), 2, 'cluster: two worker nodes are active');

###############################################################################
# 1. The extension on every node
###############################################################################

my ($ret, $out, $err) = $coordinator->psql('postgres', 'CREATE EXTENSION pg_swarm');
is($ret, 0, 'CREATE EXTENSION pg_swarm on the coordinator succeeds') or diag($err);
my $version = sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'");
like($version, qr/^\d+\.\d+\.\d+$/, "the coordinator has pg_swarm $version");
for my $w (@workers)
{
	is($w->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
		$version, sprintf('the worker node on port %d has pg_swarm %s too', $w->port, $version));
	is($w->safe_psql('postgres', "SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'swarm'"),
		't', sprintf('... in a schema swarm a superuser owns (port %d)', $w->port));
}

###############################################################################
# 2. A pg_swarm worker on every node
###############################################################################

for my $node (@nodes)
{
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'"),
		sprintf('a pg_swarm worker runs on %s', $node->name));
}

###############################################################################
# 3. Undistributed, a job runs as on one server
###############################################################################

sql('SELECT swarm.create_agents(500, 1)');
my $job = sql("SELECT swarm.generate('on the coordinator')");
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job"),
	'a job on the coordinator completes');
is(sql("SELECT succeeded || '/' || total || ' ' || (SELECT count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $job)
        FROM swarm.jobs WHERE id = $job"),
	'500/500 500', 'every request stored once');
my ($stats) = run_command([ 'curl', '-s', "http://127.0.0.1:$mock_port/mock/stats" ]);
like($stats, qr/"requests":500\b/, 'the endpoint received 500 requests for 500 agents');
for my $w (@workers)
{
	is($w->safe_psql('postgres', 'SELECT count(*) FROM swarm.jobs'), 0,
		sprintf('the worker node on port %d holds no job: its worker sent nothing', $w->port));
}

done_testing();
