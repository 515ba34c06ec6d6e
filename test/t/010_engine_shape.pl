# The worker's own resources and settings, seen from outside:
#  1. Memory per loop pass is bounded: 1,000,000 requests expire against an
#     endpoint that refuses connections (its breaker open, every request
#     waits for it and fails at its 1 s deadline; the first ones fail their
#     attempts, are retried, and fail for good), in ten jobs of 100,000, and
#     the worker's memory, read from its memory contexts
#     (pg_log_backend_memory_contexts), stays within 10%: idle after each
#     job, and in the middle of each.  Before 0.4.0 every expired request
#     left two error texts in TopMemoryContext.
#  2. A reloaded swarm.request_timeout is used by every attempt started from
#     then on.  The server starts with request_timeout = 3 s, against an
#     endpoint that answers in 5 s: an attempt times out.  After ALTER SYSTEM
#     ... = 10 s and pg_reload_conf(), a job of 3 requests, sent at once to
#     that endpoint through 'default' and through a named endpoint without a
#     timeout of its own, succeeds at the first attempt each, the endpoint
#     receiving exactly 3 requests per job, in about 5 s (0.3.0: 5 requests
#     for 3, 20.7 s: transfers to a plain-http endpoint waited for the first
#     connection's answer before being sent, and that wait counted against
#     their time limit).
#  3. A table locked (ACCESS EXCLUSIVE, past the worker's lock_timeout) while
#     a restarted worker prepares its statements: once the lock is gone, a
#     job queued meanwhile completes.  Before, the statements prepared before
#     the lock timeout were kept, the rest never prepared, and every claim
#     failed with SPI_ERROR_ARGUMENT from then on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($slow, $slow_port) = SwarmTest::start_mock('--latency-ms' => 5000);
END { SwarmTest::stop_mock($slow) if defined $slow; }
# a port nothing listens on: connections are refused
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();

my $node = SwarmTest::new_node('shape', $slow_port,
	'swarm.request_timeout = 3s', 'swarm.max_retries = 1',
	'swarm.max_concurrent = 10000', 'swarm.batch_size = 5000', 'swarm.flush_interval = 100ms',
	'log_min_messages = log');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(qq{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.add_endpoint('dead', 'http://127.0.0.1:$dead_port/v1');
	SELECT swarm.add_endpoint('slow', 'http://127.0.0.1:$slow_port/v1');
});

sub mock_requests
{
	my ($port) = @_;
	my ($out) = run_command([ 'curl', '-s', "http://127.0.0.1:$port/mock/stats" ]);
	return $out =~ /"requests":(\d+)/ ? $1 : -1;
}

###############################################################################
# 2. The reload (first: it needs the server's first request_timeout)
###############################################################################

sql("SELECT swarm.create_agents(3, 1)");
my $job = sql("SELECT swarm.generate('before the reload')");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
  or die 'the first job did not end';
like(sql("SELECT min(last_error) FROM swarm.requests WHERE job_id = $job"), qr/timed out after 3\d\d\d milli/,
	'request_timeout = 3 s: an attempt to an endpoint answering in 5 s times out after 3 s');

for my $endpoints ('NULL', "ARRAY['slow']")
{
	my $label = $endpoints eq 'NULL' ? "'default'" : 'a named endpoint without its own timeout';
	my $before = mock_requests($slow_port);
	sql("ALTER SYSTEM SET swarm.request_timeout = " . ($endpoints eq 'NULL' ? '10000' : '9000'));
	sql("SELECT pg_reload_conf()");
	my $t0 = time;
	$job = sql("SELECT swarm.generate('after the reload', endpoints => $endpoints)");
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "the job after the reload ($label) did not end";
	my $took = time - $t0;
	is(sql("SELECT succeeded || '/' || total || ', attempts ' || (SELECT string_agg(attempts::text, ',')
	                                                               FROM swarm.messages WHERE job_id = $job)
	        FROM swarm.jobs WHERE id = $job"),
		'3/3, attempts 1,1,1', "after the reload ($label): each request succeeded at its first attempt");
	is(mock_requests($slow_port) - $before, 3, "after the reload ($label): the endpoint received 3 requests for 3 agents");
	cmp_ok($took, '<', 8, sprintf("after the reload (%s): the job took %.1f s (the endpoint answers in 5 s)", $label, $took));
}

###############################################################################
# 3. A lock held while a fresh worker prepares its statements
###############################################################################

my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK swarm.messages IN ACCESS EXCLUSIVE MODE;');
my $old_pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'");
sql("SELECT pg_terminate_backend($old_pid)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker' AND pid <> $old_pid")
  or die 'the worker did not come back';
$job = sql("SELECT swarm.generate('while messages is locked', endpoints => ARRAY['slow'])");
sleep 3;    # past the worker's lock_timeout, with the job's requests to claim
$locker->query_safe('COMMIT;');
$locker->quit;
my $t_unlocked = time;
ok($node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job"),
	sprintf('a table locked while a fresh worker starts: its job completes once the lock is gone (%.1f s)', time - $t_unlocked));
is(sql("SELECT succeeded || '/' || total FROM swarm.jobs WHERE id = $job"), '3/3', '... every request of it stored');

###############################################################################
# 1. Memory while a million requests expire
###############################################################################

# The worker's memory contexts, summed: the "Grand total ... used" line that
# pg_log_backend_memory_contexts() makes the worker log.
sub worker_memory
{
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'");
	my $offset = -s $node->logfile;
	sql("SELECT pg_log_backend_memory_contexts($pid)");
	for (1 .. 200)
	{
		my $log = slurp_file($node->logfile, $offset);
		return $1 if $log =~ /\[$pid\] LOG:  Grand total: \d+ bytes in \d+ blocks; \d+ free \(\d+ chunks\); (\d+) used/;
		sleep 0.05;
	}
	die "the worker did not log its memory contexts";
}

sql("ALTER SYSTEM SET swarm.request_timeout = 3000");
sql("SELECT pg_reload_conf()");
sql("TRUNCATE swarm.agents");
sql("SELECT swarm.create_agents(100000, 2)");

# Ten jobs of 100,000 requests, one after the other, against the dead
# endpoint; the worker's memory is read in the middle of each job and once
# it has ended (the worker then holds no request).
my $t0 = time;
my (@busy, @idle);
for my $round (1 .. 10)
{
	my $job = sql("SELECT swarm.generate('nobody answers', endpoints => ARRAY['dead'], request_deadline => '1 s')");
	$node->poll_query_until('postgres',
		"SELECT succeeded + failed + cancelled >= 50000 FROM swarm.jobs WHERE id = $job")
	  or die "round $round made no progress";
	push @busy, worker_memory();
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "round $round did not end";
	push @idle, worker_memory();
	die 'a million expiring requests took more than 20 minutes' if time - $t0 > 1200;
}
my $took = time - $t0;
is(sql("SELECT sum(failed) || '/' || sum(total) FROM swarm.jobs WHERE context = 'nobody answers'"),
	"1000000/1000000", sprintf('dead endpoint: all 1,000,000 requests failed (%.0f s)', $took));
my $odd = sql("SELECT string_agg(DISTINCT left(last_error, 60), ' | ') FROM swarm.requests
               WHERE job_id IN (SELECT id FROM swarm.jobs WHERE context = 'nobody answers')
                 AND last_error NOT LIKE 'the request''s deadline passed%'
                 AND last_error NOT LIKE 'transport error: Failed to connect%'");
is($odd, '', 'dead endpoint: each failure says it could not connect, or that its deadline passed');
cmp_ok(sql("SELECT count(*) FROM swarm.requests WHERE last_error LIKE 'the request''s deadline passed%'"),
	'>', 900000, 'dead endpoint: nearly every request expired waiting for the endpoint');

sub mb { return join(', ', map { sprintf('%.1f', $_ / 1048576) } @_); }
my @steady = @idle[ 1 .. $#idle ];
my ($low, $high) = (sort { $a <=> $b } @steady)[ 0, -1 ];
cmp_ok($high, '<=', 1.10 * $low,
	sprintf('memory flat while a million requests expire: idle after each 100,000, %s MB (from the second on within 10%%)',
		mb(@idle)));
my ($first, $last) = (0, 0);
$first = $_ > $first ? $_ : $first for @busy[ 0 .. 4 ];
$last = $_ > $last ? $_ : $last for @busy[ 5 .. 9 ];
cmp_ok($last, '<=', 1.10 * $first,
	sprintf('and while they expire: %s MB (the last five no more than 10%% above the first five)', mb(@busy)));

done_testing();
