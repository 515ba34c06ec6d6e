# Endpoint limits in motion: the adaptive concurrency limit settles under an
# endpoint that rejects load above N; a Retry-After pauses the whole endpoint,
# not only the request that got it; a circuit breaker opened by a dead endpoint
# closes again by itself when the endpoint comes back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 20);
my ($capped, $capped_port) = SwarmTest::start_mock('--latency-ms' => 50, '--max-inflight' => 20);
my $node = SwarmTest::new_node('limits', $mock_port,
	# 1,500 in flight overall spreads transfers over three curl multi handles
	'swarm.max_concurrent = 1500', 'swarm.max_retries = 30', 'swarm.connect_timeout = 1s');
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_swarm;
	INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 1000) g;
	SELECT swarm.add_endpoint('capped', 'http://127.0.0.1:$capped_port/v1', max_in_flight => 200);
	SELECT swarm.add_endpoint('polite', 'http://127.0.0.1:$mock_port/v1');
});

sub wait_job
{
	my ($job) = @_;
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "job $job did not complete";
}

# 1. Adaptive concurrency: 429 above 20 in flight.  The limit comes down near
#    20 after one round of excess, and the 429s stay a small share.
my $job = $node->safe_psql('postgres', "SELECT swarm.generate('adaptive', endpoints => ARRAY['capped'])");
wait_job($job);
is($node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $job"), 1000,
	'adaptive: every request succeeded');
my ($limit, $r429, $requests) = split /\|/, $node->safe_psql('postgres',
	"SELECT concurrency_limit, rate_limited, requests FROM swarm.endpoint_status WHERE endpoint = 'capped'");
cmp_ok($limit, '<=', 30, "adaptive: the limit settled near the endpoint's 20 (it is $limit)");
cmp_ok($limit, '>=', 10, "adaptive: ... without collapsing");
cmp_ok($r429, '<', 0.15 * $requests, "adaptive: $r429 429s in $requests attempts, no storm");

# 2. Retry-After pauses the whole endpoint: job A's requests get a 429 with
#    Retry-After: 2 once; job B, enqueued meanwhile, waits for the pause too.
my $t0 = time;
my $a = $node->safe_psql('postgres', q{
	SELECT swarm.generate('[[mock:status=429,retry_after=2,times=1]] ' || clock_timestamp(),
	                      agents => ARRAY[1, 2, 3, 4, 5]::bigint[], endpoints => ARRAY['polite'])});
sleep 0.5;
is($node->safe_psql('postgres', "SELECT state || ' ' || state_reason FROM swarm.endpoint_status WHERE endpoint = 'polite'"),
	'paused Retry-After', 'Retry-After: the endpoint is paused');
my $b = $node->safe_psql('postgres', q{
	SELECT swarm.generate('unrelated', agents => ARRAY[6, 7]::bigint[], endpoints => ARRAY['polite'])});
wait_job($a);
wait_job($b);
my $first_b = $node->safe_psql('postgres', qq{
	SELECT extract(epoch FROM min(m.created_at) - (SELECT started_at FROM swarm.jobs WHERE id = $a))
	FROM swarm.messages m WHERE m.job_id = $b});
cmp_ok($first_b, '>=', 1.9, "Retry-After: another job's requests also waited ($first_b s)");
is($node->safe_psql('postgres', "SELECT count(*) FROM swarm.messages WHERE job_id IN ($a, $b)"), 7,
	'Retry-After: every request of both jobs answered once the pause ended');

# 2b. OpenAI's rate-limit headers: "x-ratelimit-remaining-requests: 0" with
#     "x-ratelimit-reset-requests: 1s500ms" pauses the endpoint until the reset.
my $c = $node->safe_psql('postgres', q{
	SELECT swarm.generate('[[mock:ratelimit_remaining=0,ratelimit_reset=1s500ms,times=1]] ' || clock_timestamp(),
	                      agents => ARRAY[1]::bigint[], endpoints => ARRAY['polite'])});
wait_job($c);
is($node->safe_psql('postgres', "SELECT state || ' ' || state_reason FROM swarm.endpoint_status WHERE endpoint = 'polite'"),
	'paused request limit reached', 'x-ratelimit headers: the endpoint pauses until the reset');
my $d = $node->safe_psql('postgres', "SELECT swarm.generate('after the reset', agents => ARRAY[2]::bigint[], endpoints => ARRAY['polite'])");
wait_job($d);
my $waited = $node->safe_psql('postgres', qq{
	SELECT extract(epoch FROM (SELECT min(created_at) FROM swarm.messages WHERE job_id = $d)
	                          - (SELECT max(created_at) FROM swarm.messages WHERE job_id = $c))});
cmp_ok($waited, '>=', 1.2, "x-ratelimit headers: the next request waited for the reset ($waited s)");

# 3. The breaker: an endpoint that refuses connections opens its breaker, the
#    work waits (it does not fail), and when the endpoint comes up it closes.
my $flaky_port = PostgreSQL::Test::Cluster::get_free_port();
$node->safe_psql('postgres', "SELECT swarm.add_endpoint('flaky', 'http://127.0.0.1:$flaky_port/v1')");
$job = $node->safe_psql('postgres',
	"SELECT swarm.generate('flaky', agents => ARRAY[1, 2, 3, 4, 5, 6]::bigint[], endpoints => ARRAY['flaky'])");
$node->poll_query_until('postgres', "SELECT state = 'open' FROM swarm.endpoint_status WHERE endpoint = 'flaky'")
  or die 'breaker did not open';
pass('breaker: opened after repeated connection failures');
is($node->safe_psql('postgres', "SELECT failed FROM swarm.jobs WHERE id = $job"), 0,
	'breaker: while it is open, requests wait instead of failing');
my ($flaky, $port_again) = SwarmTest::start_mock('--port-fixed' => $flaky_port);
wait_job($job);
is($node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $job"), 6,
	'breaker: once the endpoint is back, every request succeeds');
is($node->safe_psql('postgres', "SELECT state FROM swarm.endpoint_status WHERE endpoint = 'flaky'"),
	'ok', 'breaker: closed again');

SwarmTest::stop_mock($flaky);
SwarmTest::stop_mock($capped);
SwarmTest::stop_mock($mock);
$node->stop;
done_testing();
