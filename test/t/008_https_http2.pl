# HTTPS as providers serve it: nginx (a real HTTP/2 server, Debian package
# nginx) in front of the mock, with a certificate for "localhost" signed by a
# test CA (swarm.ca_file).
#  1. HTTP/2: 2,000 requests at 400 in flight share at most 400 / 20
#     connections, both as the adaptive limit ramps up and when all 400 are
#     added at once (the limit off): nginx's access log names each request's
#     connection, and the connections open are sampled while it runs;
#  1b. a server that allows only 5 streams per connection: the cap rises to
#     what 400 in flight need at 5 each (80 connections, not 20 carrying
#     100), and the worker logs it;
#  2. a connection lost with its streams open (the nginx worker killed)
#     fails only those streams' attempts, which are retried: every request
#     ends with exactly one message;
#  3. HTTP/1.1 only (the other port): requests succeed, each in flight on a
#     connection of its own (not held to the HTTP/2 connection cap), and new
#     connections resume TLS sessions made by other handles (one session
#     cache for all); met cold with 100 at once, the transfers started before
#     the server's first answer are not held to that cap either;
#  4. the certificate is still verified: an URL naming 127.0.0.1, which the
#     certificate does not, fails at the first attempt.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

plan skip_all => 'nginx is not installed (Debian package nginx)' unless SwarmTest::find_program('nginx');
plan skip_all => 'openssl is not on PATH' unless SwarmTest::find_program('openssl');

my $tls = PostgreSQL::Test::Utils::tempdir('h2');
SwarmTest::make_ca($tls, 'ca', 'pg_swarm test CA');
SwarmTest::make_server_cert($tls, 'server', 'ca', 'localhost', 'DNS:localhost', 2);

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 300, '--threads' => 2);
my $front = SwarmTest::start_tls_front($tls, $mock_port, 'server');
END
{
	local $?;
	SwarmTest::stop_tls_front($front);
	SwarmTest::stop_mock($mock) if $mock;
}

my $node = SwarmTest::new_node('h2', $mock_port,
	"swarm.ca_file = '$tls/ca.crt'", 'swarm.max_concurrent = 400', 'swarm.max_retries = 3',
	'swarm.request_timeout = 20s');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(qq{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.create_agents(2000, 1);
	SELECT swarm.add_endpoint('h2', 'https://localhost:$front->{h2}/v1', max_in_flight => 400);
	SELECT swarm.add_endpoint('h2_few', 'https://localhost:$front->{h2_few}/v1', max_in_flight => 400);
	SELECT swarm.add_endpoint('h1', 'https://localhost:$front->{h1}/v1', max_in_flight => 5);
	SELECT swarm.add_endpoint('h1_cold', 'https://localhost:$front->{h1}/v1', max_in_flight => 100);
	SELECT swarm.add_endpoint('by_ip', 'https://127.0.0.1:$front->{h2}/v1');
});

# the client connections to `port` open now (ESTABLISHED in /proc/net/tcp)
sub open_connections
{
	my ($port) = @_;
	my $hex = sprintf(':%04X', $port);
	return scalar grep { my @f = split; $f[2] && substr($f[2], -5) eq $hex && $f[3] eq '01' }
	  split /\n/, slurp_file('/proc/net/tcp');
}

# wait for a job, sampling the connections open to `port` as it runs; returns their peak
sub wait_job
{
	my ($job, $label, $port) = @_;
	my $peak = 0;
	for (1 .. 6000)
	{
		if ($port)
		{
			my $n = open_connections($port);
			$peak = $n if $n > $peak;
		}
		return $peak
		  if sql("SELECT status = 'completed' FROM swarm.jobs WHERE id = $job") eq 't';
		sleep 0.05;
	}
	die "$label: job $job did not complete";
}

# the access log's lines since `offset` bytes: [connection, protocol, reused, status]
sub log_lines
{
	my ($offset) = @_;
	sleep 0.3;    # nginx flushes its log buffer every 100 ms
	my $log = slurp_file($front->{log}, $offset // 0);
	return map { [ split / / ] } grep { /\S/ } split /\n/, $log;
}

# 1. Multiplexing: 400 in flight on at most 400 / 20 connections, first as the
#    adaptive limit grows, then with all 400 added at once by a fresh worker
#    (no connections yet).
my $cap = 400 / 20;
for my $burst (0, 1)
{
	my $how = $burst ? 'added at once' : 'as the limit grows';
	if ($burst)
	{
		# a fresh worker, with no connections yet
		sql("ALTER SYSTEM SET swarm.adaptive_concurrency = off; SELECT pg_reload_conf()");
		my $old = SwarmTest::worker_pid($node);
		sql("SELECT pg_terminate_backend($old)");
		$node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker' AND pid <> $old")
		  or die 'the worker did not come back';
	}
	my $offset = -s $front->{log} // 0;
	my $job = sql("SELECT swarm.generate('h2 $burst', endpoints => ARRAY['h2'])");
	my $peak = wait_job($job, "h2 $burst", $front->{h2});
	is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 2000, "HTTP/2 ($how): every request succeeded");
	my @lines = log_lines($offset);
	my %conns = map { $_->[0] => 1 } @lines;
	is(scalar(grep { $_->[1] eq 'HTTP/2.0' } @lines), scalar(@lines),
		"HTTP/2 ($how): all " . scalar(@lines) . " requests came over HTTP/2");
	# one connection per request in flight, as HTTP/1.1 needs, would be 400
	cmp_ok(scalar(keys %conns), '<=', $cap,
		"HTTP/2 ($how): 2,000 requests at 400 in flight came over " . scalar(keys %conns) . " connections");
	cmp_ok($peak, '<=', $cap, "HTTP/2 ($how): at most $peak connections were open at once");
}

# 1b. 5 streams per connection (the limit still off, 400 in flight): at the
#     cap of $cap connections only 100 requests are sent at a time; the cap
#     rises to about 400 / 5 = 80.
{
	my $offset = -s $front->{log} // 0;
	my $log_offset = -s $node->logfile;
	my $job = sql("SELECT swarm.generate('h2 few', endpoints => ARRAY['h2_few'])");
	my $peak = wait_job($job, 'h2 few', $front->{h2_few});
	is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 2000,
		'HTTP/2 at 5 streams per connection: every request succeeded');
	my %conns = map { $_->[0] => 1 } log_lines($offset);
	my $n = keys %conns;
	cmp_ok($n, '>', $cap, "HTTP/2 at 5 streams: more connections than the cap of $cap ($n)");
	# curl opens a connection when those it has have no free stream: 400 / 5,
	# with some room for connections opened together before their first answer
	cmp_ok($peak, '<=', 100, "HTTP/2 at 5 streams: about 400 / 5 open at once ($peak)");
	# what it saw can be a little over 5: streams curl has sent that nginx
	# has not taken up yet count too
	my ($per, $to) = slurp_file($node->logfile, $log_offset) =~
	  /HTTP\/2 endpoint localhost:$front->{h2_few} carries about (\d+) requests per connection.*\n.*Up to (\d+) connections per host/;
	ok($per && $per >= 4 && $per <= 10 && $to > $cap && $to <= 100,
		'the worker logged the streams it saw per connection (' . ($per // 'none')
		  . ') and the new cap (' . ($to // 'none') . ')');
}
sql("ALTER SYSTEM RESET swarm.adaptive_concurrency; SELECT pg_reload_conf()");

# 2. The nginx worker dies with streams open: its connections are reset.
my $offset = -s $front->{log};
my $job = sql("SELECT swarm.generate('reset', endpoints => ARRAY['h2'])");
$node->poll_query_until('postgres', "SELECT in_flight >= 300 FROM swarm.endpoint_status WHERE endpoint = 'h2'")
  or die 'the h2 job did not get going';
my ($worker) = grep { /\d/ } split /\s+/, `pgrep -P $front->{pid}`;
ok($worker && kill('KILL', $worker), "the nginx worker ($worker) killed with 300 or more streams open");
wait_job($job, 'reset');
is(sql("SELECT succeeded || ':' || failed FROM swarm.jobs WHERE id = $job"), '2000:0',
	'connection reset with streams open: every request still succeeded');
is(sql("SELECT count(*) || ':' || count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $job"),
	'2000:2000', 'and each has exactly one message');
cmp_ok(sql("SELECT sum(attempts) - count(*) FROM swarm.messages WHERE job_id = $job"), '>=', 100,
	'the streams of the lost connection were retried');

# 3. HTTP/1.1: a job at 5 in flight, then one at 100: the 95 new connections
#    (new handles) resume the TLS sessions the first ones made.
$job = sql("SELECT swarm.generate('h1 a', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 20),
                                  endpoints => ARRAY['h1'])");
wait_job($job, 'h1 a');
$offset = -s $front->{log};
sql("SELECT swarm.alter_endpoint('h1', max_in_flight => 100)");
$job = sql("SELECT swarm.generate('h1 b', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 400),
                                  endpoints => ARRAY['h1'])");
wait_job($job, 'h1 b');
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 400, 'HTTP/1.1 only: every request succeeded');
my @lines = log_lines($offset);
my (%first, %reused);
for my $l (@lines)
{
	next if $first{ $l->[0] }++;
	$reused{ $l->[0] } = 1 if $l->[2] eq 'r';
}
my $new = keys %first;
my $resumed = keys %reused;
cmp_ok($new, '>=', 50, "HTTP/1.1: the second job opened $new connections (more than the HTTP/2 cap, $cap)");
cmp_ok($resumed, '>=', 0.8 * $new, "and $resumed of them resumed a TLS session (one session cache for every handle)");
is((grep { $_->[1] ne 'HTTP/1.1' } @lines), 0, 'and all of them spoke HTTP/1.1');

# 3b. HTTP/1.1 met cold, 100 at once (the limit off, max_in_flight 100):
#     all start before the first answer tells that the endpoint does not
#     multiplex; those still waiting for one of the HTTP/2 shard's $cap
#     connections then move on to connections of their own.
sql("ALTER SYSTEM SET swarm.adaptive_concurrency = off; SELECT pg_reload_conf()");
$offset = -s $front->{log};
$job = sql("SELECT swarm.generate('h1 cold', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 100),
                                  endpoints => ARRAY['h1_cold'])");
wait_job($job, 'h1 cold');
sql("ALTER SYSTEM RESET swarm.adaptive_concurrency; SELECT pg_reload_conf()");
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 100, 'HTTP/1.1 met cold: every request succeeded');
my %cold = map { $_->[0] => 1 } log_lines($offset);
cmp_ok(scalar(keys %cold), '>=', 50,
	'HTTP/1.1 met cold: 100 requests came over ' . scalar(keys %cold) . " connections (more than the HTTP/2 cap, $cap)");

# 4. Verification: the certificate is for localhost, not 127.0.0.1.
$job = sql("SELECT swarm.generate('by ip', agents => ARRAY[1], endpoints => ARRAY['by_ip'])");
wait_job($job, 'by ip');
like(sql("SELECT attempts || ' ' || last_error FROM swarm.requests WHERE job_id = $job"),
	qr/^1 transport error: .*(certificate|subject name)/i,
	'a certificate that does not name the host fails at the first attempt');

done_testing();
