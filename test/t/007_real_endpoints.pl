# Endpoints that behave like real ones (each named endpoint is a mock_llm with
# the behaviour its comment states):
#  1. latency that varies 10x (lognormal, sigma 1.0) does not throttle the
#     engine: the adaptive limit stays at max_in_flight, the endpoint sees
#     nearly max_in_flight requests in flight;
#  2. an endpoint that serves at most 10 at once and queues the rest (as a
#     vLLM server whose batch is full) brings the limit down near 10;
#  3. every request ends in bounded time: against an endpoint that answers
#     500 to everything, a job ends by its request_deadline, also for a
#     request that waits behind the open circuit breaker, with an error that
#     says why;
#  4. a Retry-After a year away pauses the endpoint at most 5 minutes, and
#     alter_endpoint() ends the pause;
#  5. a requests_per_minute budget is spent evenly: an endpoint that allows 2
#     requests a second (as providers enforce per-minute limits) answers no
#     429 to a job paced by requests_per_minute = 120.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($default, $default_port) = SwarmTest::start_mock('--latency-ms' => 10);
# 1. lognormal latency, median 300 ms, sigma 1.0 (p10 83 ms, p90 1.1 s)
my ($noisy, $noisy_port) = SwarmTest::start_mock('--latency' => 'lognormal:300,1.0', '--threads' => 2);
# 2. at most 10 in service, each lognormal (median 100 ms, sigma 0.4), the rest wait in a FIFO
my ($busy, $busy_port) = SwarmTest::start_mock('--latency' => 'lognormal:100,0.4', '--saturate' => 10);
# 3. 500 to every request
my ($down, $down_port) = SwarmTest::start_mock('--latency-ms' => 20, '--fault' => 'status=500');
# 4. 429 with a Retry-After one year ahead, as an HTTP date
my ($yearly, $yearly_port) = SwarmTest::start_mock('--fault' => 'status=429,retry_after_date=31536000');
# 5. at most 2 requests admitted per second, 429 past that
my ($strict, $strict_port) = SwarmTest::start_mock('--latency-ms' => 20, '--rps-limit' => 2);
END
{
	SwarmTest::stop_mock($_) for grep { defined } ($default, $noisy, $busy, $down, $yearly, $strict);
}

my $node = SwarmTest::new_node('real', $default_port,
	'swarm.max_concurrent = 200', 'swarm.max_retries = 2', 'swarm.request_timeout = 30s');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(qq{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.create_agents(1500, 1);
	SELECT swarm.add_endpoint('noisy', 'http://127.0.0.1:$noisy_port/v1', max_in_flight => 50);
	SELECT swarm.add_endpoint('busy', 'http://127.0.0.1:$busy_port/v1', max_in_flight => 100);
	SELECT swarm.add_endpoint('down', 'http://127.0.0.1:$down_port/v1', max_in_flight => 10);
	SELECT swarm.add_endpoint('yearly', 'http://127.0.0.1:$yearly_port/v1');
	SELECT swarm.add_endpoint('strict', 'http://127.0.0.1:$strict_port/v1', requests_per_minute => 120);
});

sub wait_job
{
	my ($job, $label) = @_;
	$node->poll_query_until('postgres', "SELECT status IN ('completed', 'cancelled') FROM swarm.jobs WHERE id = $job")
	  or die "$label: job $job did not end";
}

sub status_of
{
	my ($endpoint, $cols) = @_;
	return split /\|/, sql("SELECT $cols FROM swarm.endpoint_status WHERE endpoint = '$endpoint'");
}

# 1. Variable latency.  The worker's in-flight count, sampled every 100 ms
#    while 1,000 requests run at up to 50 in flight, until fewer than 50 are
#    left (then the tail of slow answers is all there is to wait for).
my $job = sql("SELECT swarm.generate('noisy', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 1000),
                                     endpoints => ARRAY['noisy'])");
my (@in_flight, @limits);
while (sql("SELECT total - succeeded - failed > 50 FROM swarm.jobs WHERE id = $job") eq 't')
{
	my ($n, $l) = status_of('noisy', 'in_flight, concurrency_limit');
	push @in_flight, $n;
	push @limits, $l;
	sleep 0.1;
}
wait_job($job, 'noisy');
my @sorted = sort { $a <=> $b } @in_flight;
my $median = $sorted[ int(@sorted / 2) ];
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 1000, 'variable latency: every request succeeded');
cmp_ok($median, '>=', 40, "variable latency (lognormal sigma 1.0): median in flight $median of 50");
# (sampled while the work runs, as in flight is: the limit read once the job
# has ended also holds what the tail of slow answers, a few in flight, did
# to it: 38 in one CI run where in flight stayed at 50 throughout)
my @sorted_limits = sort { $a <=> $b } @limits;
my $median_limit = $sorted_limits[ int(@sorted_limits / 2) ];
my ($limit) = status_of('noisy', 'concurrency_limit');
cmp_ok($median_limit, '>=', 45,
	"variable latency: the adaptive limit stays near max_in_flight while the work runs (median $median_limit of 50, lowest $sorted_limits[0], $limit at the end)");

# 2. A saturating endpoint: 10 in service.  Its best is 10 / ~0.11 s = ~92
#    requests/s; the limit comes down from 64 towards 10.
$job = sql("SELECT swarm.generate('busy', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 1500),
                                  endpoints => ARRAY['busy'])");
wait_job($job, 'saturating');
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 1500, 'saturating endpoint: every request succeeded');
($limit) = status_of('busy', 'concurrency_limit');
cmp_ok($limit, '<=', 40, "saturating endpoint (10 in service, FIFO beyond): the limit came down to $limit");
cmp_ok($limit, '>=', 5, "saturating endpoint: and not below half of what it serves ($limit)");
my $p50 = sql("SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)) FROM swarm.messages
               WHERE job_id = $job AND id > (SELECT min(id) + 500 FROM swarm.messages WHERE job_id = $job)");
cmp_ok($p50, '<', 560, "saturating endpoint: median latency after the first 500 answers is $p50 ms (unloaded ~100; at the 64 in flight it starts with, ~640)");

# 3. Bounded time.  Every attempt gets a 500; max_retries = 2.  Three requests
#    use their attempts and fail; the breaker opens after five failures; a
#    request sent meanwhile waits for it, and fails at its deadline.
$job = sql("SELECT swarm.generate('down', agents => ARRAY[1, 2, 3], endpoints => ARRAY['down'],
                                  request_deadline => '20 s')");
wait_job($job, 'down');
is(sql("SELECT failed || ':' || total FROM swarm.jobs WHERE id = $job"), '3:3',
	'500 to everything: each request fails after its retries');
$node->poll_query_until('postgres', "SELECT state = 'open' FROM swarm.endpoint_status WHERE endpoint = 'down'")
  or die 'the breaker of down did not open';
my $t0 = time;
$job = sql("SELECT swarm.generate('down again', agents => ARRAY[4], endpoints => ARRAY['down'],
                                  request_deadline => '2 s')");
wait_job($job, 'down, breaker open');
my $took = time - $t0;
cmp_ok($took, '<', 15, sprintf('a request waiting for an open breaker ends by its deadline (%.1f s)', $took));
like(sql("SELECT last_error FROM swarm.requests WHERE job_id = $job"),
	qr/deadline passed \(2 s after it was claimed\)/, 'and its error says the deadline passed');
my ($reason) = status_of('down', 'coalesce(waiting_for, \'\')');
is($reason, 'breaker open', 'endpoint_status says what requests wait for');

# 4. A Retry-After a year away: the endpoint pauses, 5 minutes at most.
$job = sql("SELECT swarm.generate('yearly', agents => ARRAY[5], endpoints => ARRAY['yearly'],
                                  request_deadline => '3 s')");
$node->poll_query_until('postgres', "SELECT state = 'paused' FROM swarm.endpoint_status WHERE endpoint = 'yearly'")
  or die 'yearly did not pause';
my ($until_s) = status_of('yearly', 'extract(epoch FROM state_until - now())');
cmp_ok($until_s, '<=', 301, "a Retry-After a year ahead pauses the endpoint $until_s s (at most 5 minutes)");
wait_job($job, 'yearly');
like(sql("SELECT last_error FROM swarm.requests WHERE job_id = $job"), qr/HTTP 429/,
	'its request fails by its deadline, with the 429 it got');
sql("SELECT swarm.alter_endpoint('yearly', max_in_flight => 20)");
$node->poll_query_until('postgres', "SELECT state = 'ok' FROM swarm.endpoint_status WHERE endpoint = 'yearly'")
  or die 'alter_endpoint did not end the pause';
pass('alter_endpoint() ends the pause');

# 5. Paced budgets: 120 a minute is 2 a second, and the endpoint refuses a
#    third in any second.
$t0 = time;
$job = sql("SELECT swarm.generate('paced', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 12),
                                  endpoints => ARRAY['strict'])");
wait_job($job, 'paced');
$took = time - $t0;
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 12, 'paced budget: every request succeeded');
my ($r429) = status_of('strict', 'rate_limited');
is($r429, 0, 'paced budget: the endpoint that admits 2 a second answered no 429');
cmp_ok($took, '>=', 4.5, sprintf('paced budget: 12 requests at 2 a second took %.1f s', $took));

done_testing();
