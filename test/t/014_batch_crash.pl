# Batch mode under crashes, expiry and cancel (docs/batch.md).  Endpoint: the
# project's mock Batch API, with batches that validate in 100 ms, run 500 ms
# and finalize in 100 ms, and whose upload, create and download calls answer
# 1.5 s after the mock has acted on them (--batch-api-delay-ms): the window
# in which the provider has the file or the batch and pg_swarm has not heard.
#  1. kill -9 of the batcher while a file is being uploaded: after the
#     restart it finds the file on the provider by its name, uploads nothing
#     twice, and every request is stored once.
#  2. kill -9 while the batch is being created: it finds the batch by its
#     input file and creates no second one.
#  3. kill -9 after the batch was created (submitted, being polled), and a
#     restart of the whole server: polling resumes.
#  4. kill -9 while the answers are being downloaded: downloaded again,
#     stored once.
#  5. A second mock whose batches expire with half their lines answered
#     (--batch-expire): the rest go back to the queue and into new batches,
#     until swarm.max_retries is spent; nothing is lost or stored twice.
#  6. swarm.cancel() of a job whose batch runs: the provider is asked to
#     cancel it, the batch is abandoned, nothing more is stored.
#  7. Idle, the batcher does not look every second.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--batch-validating-ms' => 100, '--batch-processing-ms' => 500,
	'--batch-finalizing-ms' => 100, '--batch-api-delay-ms' => 1500);
my ($slow, $slow_port) = SwarmTest::start_mock('--batch-validating-ms' => 100, '--batch-processing-ms' => 1500,
	'--batch-finalizing-ms' => 100, '--batch-expire');
END
{
	SwarmTest::stop_mock($mock) if defined $mock;
	SwarmTest::stop_mock($slow) if defined $slow;
}

my $node = SwarmTest::new_node('batch', $mock_port,
	'swarm.batch_poll_interval = 100ms', 'swarm.max_retries = 3', 'swarm.batch_file_max_requests = 600');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.create_agents(1000, 3);
});
sql("SELECT swarm.add_endpoint('expiring', 'http://127.0.0.1:$slow_port/v1')");

# what the provider holds, as the mock lists it
sub provider_list
{
	my ($port, $path) = @_;
	my ($out, $err) = run_command([ 'curl', '-s', "http://127.0.0.1:$port/v1/$path" ]);
	return $out;
}

sub batcher_pid
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm batcher'")
	  or die 'no pg_swarm batcher';
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm batcher'");
}

# kill -9 the batcher once one of the job's batches is in `state`; after a
# kill -9 the postmaster resets every backend: wait until it is back
sub kill_at
{
	my ($job, $state) = @_;
	my $pid = batcher_pid();
	$node->poll_query_until('postgres',
		"SELECT EXISTS (SELECT 1 FROM swarm.batches WHERE job_id = $job AND state = '$state')", 't')
	  or die "no batch of job $job got to $state";
	kill 'KILL', $pid;
	sleep 0.5;
	$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'the server did not come back';
	my $new = batcher_pid();
	return $new != $pid;
}

sub wait_done
{
	my ($job) = @_;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'cancelled') FROM swarm.jobs WHERE id = $job", 't')
	  or die "job $job did not end";
	return sql("SELECT status || ':' || total || ':' || succeeded || ':' || failed FROM swarm.jobs WHERE id = $job");
}

# every request of the job answered once, and each batch made once at the provider
sub check_once
{
	my ($job, $what) = @_;
	is(wait_done($job), 'completed:1000:1000:0', "$what: the job completes, every request answered");
	is(sql("SELECT count(*) || ':' || count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $job"),
		'1000:1000', "$what: one message per request");
	my $files = provider_list($mock_port, 'files?purpose=batch');
	my $batches = provider_list($mock_port, 'batches?limit=100');
	my $rows = sql("SELECT file_name || ' ' || input_file_id FROM swarm.batches WHERE job_id = $job ORDER BY id");
	my ($names, $ids) = (0, 0);
	foreach my $row (split /\n/, $rows)
	{
		my ($name, $file) = split / /, $row;
		my $n = () = $files =~ /"filename":"\Q$name\E"/g;
		my $b = () = $batches =~ /"input_file_id":"\Q$file\E"/g;
		$names++ if $n == 1;
		$ids++ if $b == 1;
	}
	my $count = scalar(split /\n/, $rows);
	ok($count >= 2, "$what: the job went in $count batches (600 lines a file at most)");
	is($names, $count, "$what: each batch's file is on the provider once");
	is($ids, $count, "$what: each batch was created once at the provider");
}

# 1. during an upload
my $job = sql("SELECT swarm.generate('one', mode => 'batch')");
ok(kill_at($job, 'uploading'), 'upload: the batcher was killed while uploading');
check_once($job, 'killed while uploading');

# 2. during the creation of a batch
$job = sql("SELECT swarm.generate('two', mode => 'batch')");
ok(kill_at($job, 'creating'), 'create: the batcher was killed while creating a batch');
check_once($job, 'killed while creating');

# 3. once created, then the whole server restarted while it is polled
$job = sql("SELECT swarm.generate('three', mode => 'batch')");
ok(kill_at($job, 'submitted'), 'poll: the batcher was killed after a batch was created');
$node->poll_query_until('postgres',
	"SELECT EXISTS (SELECT 1 FROM swarm.batches WHERE job_id = $job AND state = 'submitted')", 't');
$node->restart;
check_once($job, 'killed after create, server restarted');

# 4. during a download
$job = sql("SELECT swarm.generate('four', mode => 'batch')");
ok(kill_at($job, 'downloading'), 'download: the batcher was killed while downloading answers');
check_once($job, 'killed while downloading');
is(sql("SELECT count(*) FROM swarm.batches WHERE state <> 'stored'"), '0', 'every batch is stored');

# 5. expiry: half of each batch's lines answered before the window ends;
# (the batcher's stores wake swarm.wait(): the progress generation moves
# with no synchronous job running, the worker storing nothing)
my $generation = sql("SELECT swarm._progress_generation()");
$job = sql("SELECT swarm.generate('five', agents => (SELECT array_agg(id) FROM generate_series(1, 64) id), "
	  . "endpoints => ARRAY['expiring'], mode => 'batch')");
my $end = wait_done($job);
my ($st, $total, $ok, $bad) = split /:/, $end;
is("$st:$total", 'completed:64', 'expiry: the job completes');
is("$ok:$bad", '60:4',
	'expiry: what an expired batch left unanswered went into new batches: 32 + 16 + 8 + 4 answered, 4 failed after 4 batches');
is(sql("SELECT count(*) = count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $job"), 't',
	'expiry: nothing stored twice');
cmp_ok(sql("SELECT swarm._progress_generation()"), '>', $generation,
	'the batcher announced its stores (what swarm.wait() sleeps on)');
is(sql("SELECT string_agg(DISTINCT status, ',') || ':' || count(*) FROM swarm.batches WHERE job_id = $job"),
	'expired:4', 'expiry: four batches, each expired (the first and three retries)');
like(sql("SELECT last_error FROM swarm.requests WHERE job_id = $job AND status = 'failed' LIMIT 1"),
	qr/batch_expired.*after 4 attempts/, 'expiry: a request that never got an answer says why');

# 6. cancel while a batch runs at the provider
$job = sql("SELECT swarm.generate('six', endpoints => ARRAY['expiring'], mode => 'batch')");
$node->poll_query_until('postgres',
	"SELECT EXISTS (SELECT 1 FROM swarm.batches WHERE job_id = $job AND state = 'submitted' AND status = 'in_progress')", 't')
  or die 'no batch in progress';
is(sql("SELECT swarm.cancel($job)"), 't', 'cancel: the job is cancelled');
$node->poll_query_until('postgres',
	"SELECT bool_and(state = 'abandoned') FROM swarm.batches WHERE job_id = $job", 't')
  or die 'the batches were not abandoned';
is(sql("SELECT bool_and(cancel_requested) FROM swarm.batches WHERE job_id = $job AND provider_batch_id IS NOT NULL"),
	't', 'cancel: the provider was asked to cancel the batch');
my $cancelled = sql("SELECT provider_batch_id FROM swarm.batches WHERE job_id = $job AND cancel_requested LIMIT 1");
like(provider_list($slow_port, "batches/$cancelled"), qr/"status":"cancel(ling|led)"/,
	'cancel: the provider\'s batch is cancelling');
sleep 2;
is(sql("SELECT count(*) FROM swarm.messages WHERE job_id = $job"), '0', 'cancel: nothing stored after the cancel');
is(sql("SELECT status || ':' || cancelled FROM swarm.jobs WHERE id = $job"), 'cancelled:1000',
	'cancel: every request cancelled');

# 7. Idle (no batch-mode job, no batch out): the batcher sleeps instead of
# looking every second; its activity entry changes at each round it runs
my %seen;
for (1 .. 12)
{
	$seen{ sql("SELECT state_change FROM pg_stat_activity WHERE backend_type = 'pg_swarm batcher'") } = 1;
	sleep 0.5;
}
cmp_ok(scalar(keys %seen), '<=', 2, 'idle: the batcher ran at most one round in 6 s (it sleeps 10 s when there is nothing)');

my $log = slurp_file($node->logfile);
unlike($log, qr/TRAP|terminated by signal (?!9)|PANIC/, 'no assertion, crash other than our kills, or panic');

done_testing();
