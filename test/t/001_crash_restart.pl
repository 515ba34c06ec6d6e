# Crash, restart and shutdown in the middle of a job: every request still ends
# exactly once (one message each, nothing lost, nothing duplicated), and the
# worker comes back by itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my $agents = 2000;
my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 150, '--jitter-ms' => 50);
my $node = SwarmTest::new_node('crash', $mock_port,
	'swarm.max_concurrent = 100', 'swarm.request_timeout = 5s');
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_swarm;
	INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, $agents) g;
});

sub enqueue_and_get_going
{
	my ($label) = @_;
	my $job = $node->safe_psql('postgres', "SELECT swarm.generate('$label')");
	$node->poll_query_until('postgres',
		"SELECT succeeded >= 200 FROM swarm.jobs WHERE id = $job")
	  or die "job $job made no progress";
	my $done = $node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $job");
	cmp_ok($done, '<', $agents, "$label: interrupted mid-job ($done of $agents done)");
	return $job;
}

sub finishes_exactly_once
{
	my ($job, $label) = @_;
	$node->poll_query_until('postgres',
		"SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "job $job did not complete";
	my $r = $node->safe_psql('postgres', qq{
		SELECT j.total, j.succeeded, j.failed,
		       (SELECT count(*) FROM swarm.messages m WHERE m.job_id = j.id),
		       (SELECT count(DISTINCT agent_id) FROM swarm.messages m WHERE m.job_id = j.id),
		       (SELECT count(*) FROM swarm.requests r WHERE r.job_id = j.id)
		FROM swarm.jobs j WHERE j.id = $job});
	is($r, "$agents|$agents|0|$agents|$agents|0",
		"$label: one message per request, none lost, none twice, queue empty");
}

# 1. kill -9 the worker: the postmaster resets the cluster and restarts it
my $job = enqueue_and_get_going('kill -9 worker');
my $pid = SwarmTest::worker_pid($node);
kill 'KILL', $pid;
finishes_exactly_once($job, 'kill -9 worker');
isnt(SwarmTest::worker_pid($node), $pid, 'kill -9 worker: a new worker took over');

# 2. the whole server crashes (immediate stop) and starts again
$job = enqueue_and_get_going('server crash');
$node->stop('immediate');
$node->start;
finishes_exactly_once($job, 'server crash');

# 3. a clean restart: the worker stores what arrived and stops
$job = enqueue_and_get_going('fast restart');
$node->restart;
finishes_exactly_once($job, 'fast restart');

# 4. pg_terminate_backend() on the worker: it is restarted within seconds
$job = enqueue_and_get_going('terminated worker');
$pid = SwarmTest::worker_pid($node);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
finishes_exactly_once($job, 'terminated worker');
isnt(SwarmTest::worker_pid($node), $pid, 'terminated worker: restarted');

# 5. two jobs enqueued at once, one cancelled while running: the other is intact
my $a = $node->safe_psql('postgres', "SELECT swarm.generate('concurrent A')");
my $b = $node->safe_psql('postgres', "SELECT swarm.generate('concurrent B')");
$node->poll_query_until('postgres', "SELECT succeeded > 0 FROM swarm.jobs WHERE id = $b")
  or die "job $b made no progress";
is($node->safe_psql('postgres', "SELECT swarm.cancel($b)"), 't', 'cancel: accepted');
my $at_cancel = $node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $b");
finishes_exactly_once($a, 'job beside a cancelled one');
my $c = $node->safe_psql('postgres', qq{
	SELECT j.status, j.succeeded + j.failed + j.cancelled = j.total,
	       j.succeeded = (SELECT count(*) FROM swarm.messages m WHERE m.job_id = j.id),
	       j.cancelled = (SELECT count(*) FROM swarm.requests r WHERE r.job_id = j.id AND r.status = 'cancelled'),
	       (SELECT count(*) FROM swarm.requests r WHERE r.job_id = j.id AND r.status = 'queued')
	FROM swarm.jobs j WHERE j.id = $b});
is($c, 'cancelled|t|t|t|0', 'cancelled job: counts add up, nothing left queued');
sleep 1;
is($node->safe_psql('postgres', "SELECT count(*) FROM swarm.messages WHERE job_id = $b"),
	$at_cancel, 'cancelled job: no message stored after the cancel');

$node->stop;
SwarmTest::stop_mock($mock);
done_testing();
