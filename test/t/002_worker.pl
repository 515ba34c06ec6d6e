# The worker's behaviour as a process: NOTIFY after each committed batch, no CPU
# when idle, a job starts within milliseconds of the commit, SIGHUP reloads the
# endpoint, an unreachable endpoint fails requests cleanly, and enqueueing
# without the preloaded library is refused with a hint.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use IPC::Run;
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 20);
my $node = SwarmTest::new_node('worker', $mock_port,
	'swarm.max_concurrent = 50', 'swarm.max_retries = 1', 'swarm.connect_timeout = 1s');
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_swarm;
	INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 500) g;
});

# NOTIFY: progress after each batch, and a final "completed" whose counts match.
my ($out, $err) = ('', '');
$node->psql('postgres', q{
	LISTEN progress;
	SELECT swarm.generate('notify me', channel => 'progress') AS job \gset
	SET client_min_messages = warning;
	SELECT status FROM swarm.wait(:job);
}, stdout => \$out, stderr => \$err);
my @payloads = $out =~ /Asynchronous notification "progress" with payload "(.*?)" received/g;
cmp_ok(scalar(@payloads), '>=', 2, 'NOTIFY: several batches announced (' . scalar(@payloads) . ')');
my $batches = 0;
$batches += $_ for map { /"batch" : (\d+)/ ? $1 : 0 } @payloads;
is($batches, 500, 'NOTIFY: the batches add up to the job');
like($payloads[-1], qr/"status" : "completed".*"done" : 500.*"failed" : 0.*"total" : 500/,
	'NOTIFY: the last payload says completed, 500 of 500');

# A committed job starts at once: the worker is woken at commit, not polled.
my $t0 = time;
my $job = $node->safe_psql('postgres', "SELECT swarm.generate('wake up', agents => ARRAY[1]::bigint[])");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job");
my $started = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM started_at - created_at) * 1000 FROM swarm.jobs WHERE id = $job");
cmp_ok($started, '<', 500, "wake at commit: picked up ${started} ms after enqueue");

# swarm.wait() can be cancelled (Ctrl-C sends the same cancel request).
{
	my $slow = $node->safe_psql('postgres',
		"SELECT swarm.generate('slow [[mock:delay=5000]]', agents => ARRAY[1]::bigint[])");
	my ($stdout, $stderr) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', "SELECT status FROM swarm.wait($slow)" ],
		'>', \$stdout, '2>', \$stderr);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT status FROM swarm.wait%'")
	  or die 'wait() did not start';
	$node->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT status FROM swarm.wait%'");
	$h->finish;
	like($stderr, qr/canceling statement due to user request/, 'wait(): cancelled at once by a cancel request');
	$node->safe_psql('postgres', "SELECT swarm.cancel($slow)");
}

# Idle: no CPU used over two seconds (no polling, no fixed-step sleeps).
my $pid = SwarmTest::worker_pid($node);
sub cpu_ticks
{
	open(my $fh, '<', "/proc/$pid/stat") or die "no /proc/$pid/stat";
	my @f = split(/ /, <$fh>);
	close($fh);
	return $f[13] + $f[14];
}
my $before = cpu_ticks();
sleep 2;
my $used = cpu_ticks() - $before;
cmp_ok($used, '<=', 1, "idle worker used $used clock ticks in 2 s");

# An unreachable endpoint: requests fail with a transport error; worker stays up.
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
$node->append_conf('postgresql.conf', "swarm.base_url = 'http://127.0.0.1:$dead_port/v1'");
$node->reload;
sleep 0.5;
$job = $node->safe_psql('postgres', "SELECT swarm.generate('nobody home', agents => ARRAY[1, 2]::bigint[])");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
  or die 'job against a dead endpoint did not end';
like($node->safe_psql('postgres', "SELECT string_agg(last_error, ' | ') FROM swarm.requests WHERE job_id = $job"),
	qr/transport error: .*(connect|refused).*after 2 attempts/i, 'dead endpoint: a clear transport error after the retries');
is(SwarmTest::worker_pid($node), $pid, 'dead endpoint: the worker did not restart');

# SIGHUP: back to the mock, and jobs succeed again.
$node->append_conf('postgresql.conf', "swarm.base_url = 'http://127.0.0.1:$mock_port/v1'");
$node->reload;
sleep 0.5;
$job = $node->safe_psql('postgres', "SELECT swarm.generate('hello again', agents => ARRAY[1, 2]::bigint[])");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job");
is($node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $job"), 2,
	'reload: the new endpoint is used without a restart');

# The API key is sent as a Bearer token but never shows in the log.
$node->append_conf('postgresql.conf', "swarm.api_key_file = '" . $node->data_dir . "/key.txt'");
PostgreSQL::Test::Utils::append_to_file($node->data_dir . '/key.txt', "sk-file-secret-987\n");
$node->reload;
sleep 0.5;
$job = $node->safe_psql('postgres', "SELECT swarm.generate('with key', agents => ARRAY[1]::bigint[])");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job");
is($node->safe_psql('postgres', "SELECT succeeded FROM swarm.jobs WHERE id = $job"), 1, 'key file: job succeeds');
unlike(slurp_file($node->logfile), qr/sk-file-secret-987/, 'key file: the key never reaches the log');

# Without shared_preload_libraries, enqueueing is refused with a hint.
$node->stop;
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', "CREATE EXTENSION pg_swarm; INSERT INTO swarm.agents (name) VALUES ('a')");
my ($ret, $stdout, $stderr) = $plain->psql('postgres', "SELECT swarm.generate('hi')");
like($stderr, qr/not loaded through shared_preload_libraries.*HINT:.*shared_preload_libraries/s,
	'not preloaded: generate() refuses with a hint');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM swarm.jobs'), 0, 'not preloaded: nothing enqueued');
$plain->stop;

SwarmTest::stop_mock($mock);
done_testing();
