# pg_swarm on Citus (issue 20): a coordinator and two worker nodes on this
# machine, each with shared_preload_libraries = 'citus,pg_swarm'.
#  1. CREATE EXTENSION pg_swarm on the coordinator reaches both workers (Citus
#     propagates it), at the same version, and pg_swarm's install-time checks
#     accept the schema Citus prepares there.
#  2. A pg_swarm worker runs on every node.
#  3. Undistributed (the tables local to the coordinator), a job runs as on a
#     single server: every request stored once, on the coordinator.
#  4. swarm.distribute(): what it refuses; then the per-agent tables
#     distributed by agent id and co-located, the shared ones reference
#     tables, no trigger left, RLS policies on the shards.
#  5. A 100,000-request generate job on the distributed swarm, with one
#     worker node's pg_swarm worker killed (kill -9: that node restarts) and
#     the other worker node restarted mid-job: every request stored exactly
#     once, each worker node sent its shards' share (within 10% of even),
#     the coordinator's job_progress and a LISTEN there saw all of it.
#  6. Two users on the distributed tables: each sees only their own rows.
#  7. What does not run distributed (next_batch) says so; the response
#     store and replay run on every node's shards.
#  8. A shard moved by Citus (citus_move_shard_placement, blocking writes and
#     by logical replication) while a job runs: stored exactly once, counted
#     once.  Endpoint budgets split between the nodes by their shares.
#  9. The social world built on the cluster is the one built on one server
#     (a fourth node, pg_swarm alone) for the same seeds (checksums of
#     agents, friendships but their 'since', which is drawn back from the day
#     they are built, communities, members); and so are the conversations of
#     interact(), turn by turn (the mock's words hash the request body, so
#     equal messages mean equal prompts), with one node's worker killed
#     mid-job on the cluster: every turn stored and followed once; a job
#     whose turns the conductor read past is swept and completes.
# 10. Simulations (with actions, with a clock and mixed feeds, and without)
#     on the cluster are those of one server, message for message and action
#     for action (and so are the graph they grow and the memories), with one
#     node's worker killed mid-run; only the coordinator's step builder
#     builds and settles steps; the job completes once its last step is
#     settled, and a LISTEN on the coordinator hears it.
# Endpoint: the mock over plain HTTP/1.1 at a fixed 10 ms, no errors (this
# test is about where requests are sent from and stored, not how endpoints
# behave).
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
		"listen_addresses = '127.0.0.1'", 'max_prepared_transactions = 20', 'wal_level = logical',
		'max_wal_senders = 10', 'max_replication_slots = 10');
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	push @nodes, $node;
}
my ($coordinator, @workers) = @nodes;
sub sql { return $coordinator->safe_psql('postgres', $_[0]); }

# kill -9 a node's pg_swarm worker; its postmaster restarts every backend:
# wait until it answers again with a new worker
sub kill_worker
{
	my ($node) = @_;
	my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'");
	kill 'KILL', $pid;
	$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker' AND pid <> $pid")
	  or die $node->name . ' did not come back';
}
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

###############################################################################
# 4. swarm.distribute()
###############################################################################

my $w1 = $workers[0];
($ret, $out, $err) = $w1->psql('postgres', 'SELECT swarm.distribute()');
like($err, qr/swarm.distribute\(\) runs on the coordinator/, 'distribute: refused on a worker node');
($ret, $out, $err) = $coordinator->psql('postgres', 'SELECT swarm.distribute(shard_count => 0)');
like($err, qr/shard_count must be between 1 and 64000/, 'distribute: refuses shard_count 0');
my $held = sql("SELECT swarm.generate('held', endpoints => NULL, agents => ARRAY[1])");
# (the job completes in a moment: the refusal is checked inside one transaction)
($ret, $out, $err) = $coordinator->psql('postgres',
	"BEGIN; UPDATE swarm.jobs SET status = 'running' WHERE id = $held; SELECT swarm.distribute(); ROLLBACK;");
like($err, qr/jobs are running/, 'distribute: refused while a job runs');

# 100,000 agents, made on one server and then distributed with their rows
sql('SELECT swarm.create_agents(99500, 2)');
my $t0 = time;
$out = sql('SELECT swarm.distribute(shard_count => 8)');
like($out, qr/distributed: 8 shards of each per-agent table over 2 worker nodes/,
	sprintf('distribute(shard_count => 8) on 100,000 agents (%.1f s): %s', time - $t0, $out));
is(sql('SELECT swarm.distribute()'), 'already distributed', 'distribute: a second call changes nothing');
is(sql(q{SELECT string_agg(logicalrelid::text || '=' || partmethod::text || coalesce(column_to_column_name(logicalrelid, partkey), ''), ',' ORDER BY logicalrelid::text)
         FROM pg_dist_partition WHERE logicalrelid::text LIKE 'swarm.%'}),
	'swarm._endpoint_keys=n,swarm.actions=hagent_id,swarm.agent_memory=hagent_id,swarm.agents=hid,swarm.communities=n,swarm.community_members=hagent_id,swarm.endpoints=n,swarm.follows=hagent_id,swarm.friendships=hagent_id,swarm.job_kinds=n,swarm.jobs=n,swarm.likes=hagent_id,swarm.memberships=hagent_id,swarm.messages=hagent_id,swarm.mutes=hagent_id,swarm.reposts=hagent_id,swarm.requests=hagent_id,swarm.responses=hagent_id',
	'distribute: per-agent tables (with what simulations with actions record and the response store) hashed by the agent id, shared tables reference tables');
is(sql(q{SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h' AND logicalrelid::text LIKE 'swarm.%'}),
	1, 'distribute: the per-agent tables are co-located');
for my $node (@nodes)
{
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'swarm.agents'::regclass AND NOT tgisinternal"),
		0, sprintf('distribute: no trigger on swarm.agents on %s', $node->name));
}
is($w1->safe_psql('postgres', q{SET citus.override_table_visibility = off;
                                SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                                WHERE c.relname ~ '^(requests|messages)_[0-9]+$' AND p.polname IN ('requests_owner', 'messages_owner')}),
	8, 'distribute: the row-level security policies are on every shard of requests and messages of a worker node (4 + 4)');
# deleting agents: no trigger, the foreign keys and swarm.delete_agents()
sql(q{INSERT INTO swarm.friendships VALUES (99999, 100000, now(), 0.5), (100000, 99999, now(), 0.5)});
is(sql('SELECT swarm.delete_agents(ARRAY[100000])'), 1, 'delete_agents: one agent deleted');
is(sql('SELECT count(*) FROM swarm.friendships WHERE 100000 IN (agent_id, friend_id)'), 0,
	'delete_agents: its friendships went with it, both directions');

###############################################################################
# 5. 100,000 requests, a worker killed and a node restarted mid-job
###############################################################################

my $listener = $coordinator->background_psql('postgres');
$listener->query_safe('LISTEN swarm');
$job = sql("SELECT swarm.generate('distributed', agents => (SELECT array_agg(id) FROM swarm.agents WHERE id <= 100001))");
is(sql("SELECT total FROM swarm.jobs WHERE id = $job"), 99999, 'a job of 99,999 requests (every agent left)');
my $stored_at = sub { sql("SELECT count(*) FROM swarm.messages WHERE job_id = $job") };
$coordinator->poll_query_until('postgres', "SELECT count(*) > 15000 FROM swarm.messages WHERE job_id = $job")
  or die 'the job made no progress';
kill_worker($w1);
my $at_kill = $stored_at->();
$coordinator->poll_query_until('postgres', "SELECT count(*) > $at_kill + 15000 FROM swarm.messages WHERE job_id = $job")
  or die 'the job made no progress after the kill';
$workers[1]->restart;
$workers[1]->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
  or die 'worker node 2 did not come back';
my $at_restart = $stored_at->();
cmp_ok($at_restart, '<', 99999, "interrupted mid-job: kill -9 at $at_kill stored, worker node 2 restarted at $at_restart");
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job"),
	'the job completes on the coordinator');
is(sql("SELECT status || ' ' || succeeded || '/' || total || ' failed ' || failed FROM swarm.jobs WHERE id = $job"),
	'completed 99999/99999 failed 0', 'every request succeeded');
is(sql("SELECT count(*) || ' ' || count(DISTINCT request_id) || ' ' || count(DISTINCT id) FROM swarm.messages WHERE job_id = $job"),
	'99999 99999 99999', 'every request stored exactly once (99,999 messages, distinct requests and ids)');
is(sql("SELECT count(*) FROM swarm.requests WHERE job_id = $job"), 0, 'nothing left in the queue');
my @sent = map { $_->safe_psql('postgres', "SELECT coalesce(sum(succeeded), 0) FROM swarm.job_node_progress WHERE job_id = $job") } @workers;
for my $i (0, 1)
{
	cmp_ok(abs($sent[$i] - 99999 / 2) / (99999 / 2), '<', 0.10,
		sprintf('worker node %d stored its shards\' share: %d of 99,999 (within 10%% of even)', $i + 1, $sent[$i]));
}
is($coordinator->safe_psql('postgres', "SELECT count(*) FROM swarm.job_node_progress"), 0,
	'the coordinator holds no shard and stored nothing itself');
is(sql("SELECT done || '/' || total FROM swarm.job_progress WHERE job_id = $job"), '99999/99999',
	'the coordinator\'s job_progress sums every node');
$out = $listener->query_safe('SELECT 1');
$listener->quit;
my @payloads = ($out . ($listener->{stdout} // '')) =~ /Asynchronous notification "swarm" with payload "([^"]*?\"job\" : $job,[^"]*?)" received/g;
@payloads = $out =~ /Asynchronous notification "swarm" with payload "(.*?)" received/g unless @payloads;
my @mine = grep { /"job" : $job,/ } @payloads;
cmp_ok(scalar(@mine), '>=', 3, sprintf('LISTEN on the coordinator: %d progress notifications of the job', scalar(@mine)));
my $sum = 0;
$sum += $_ for map { /"batch" : (\d+)/ ? $1 : 0 } @mine;
is($sum, 99999, 'LISTEN on the coordinator: the batches add up to the job');
like($mine[-1] // '', qr/"status" : "completed".*"done" : 99999/, 'LISTEN on the coordinator: the last says completed, 99,999 done');
($stats) = run_command([ 'curl', '-s', "http://127.0.0.1:$mock_port/mock/stats" ]);
my ($requests) = $stats =~ /"requests":(\d+)/;
cmp_ok($requests - 500 - 1, '>=', 99999, sprintf('the endpoint received %d requests for the job (re-sent after the kill and the restart: %d)',
	$requests - 501, $requests - 501 - 99999));

###############################################################################
# 6. Two users on the distributed tables
###############################################################################

sql('CREATE ROLE alice LOGIN IN ROLE swarm_user; CREATE ROLE bob LOGIN IN ROLE swarm_user');
my $a_job = sql("SET ROLE alice; SELECT swarm.generate('alice''s', agents => ARRAY[1, 2, 3, 4, 5])");
my $b_job = sql("SET ROLE bob; SELECT swarm.generate('bob''s', agents => ARRAY[6, 7, 8])");
$coordinator->poll_query_until('postgres', "SELECT bool_and(status = 'completed') FROM swarm.jobs WHERE id IN ($a_job, $b_job)")
  or die 'the users\' jobs did not complete';
is(sql("SET ROLE alice; SELECT count(*) || ' ' || string_agg(DISTINCT job_id::text, ',') FROM swarm.messages"),
	"5 $a_job", 'RLS on the distributed messages: alice sees her 5 messages only');
is(sql("SET ROLE bob; SELECT count(*) || ' ' || string_agg(DISTINCT job_id::text, ',') FROM swarm.messages"),
	"3 $b_job", '... and bob his 3');
is(sql("SET ROLE alice; SELECT count(*) FROM swarm.jobs"), 1, 'RLS on the reference table jobs: alice sees her job only');
($ret, $out, $err) = $coordinator->psql('postgres', "SET ROLE bob; SELECT swarm.cancel($a_job)");
like($err, qr/job $a_job does not exist/, 'bob cannot cancel alice\'s job');

###############################################################################
# 7. What does not run distributed says so
###############################################################################

($ret, $out, $err) = $coordinator->psql('postgres', "SELECT * FROM swarm.next_batch($job)");
like($err, qr/does not run on a distributed swarm/, "swarm.next_batch($job): refused, saying why");

# The response store and replay on the cluster: each node keeps its shards'
# answers and replays them from there, through an endpoint that refuses
# every connection (a request that reached the network would fail).
sql("SELECT swarm.add_endpoint('refusing', 'http://127.0.0.1:1/v1')");
my $kept = sql("SET swarm.response_store = on; SELECT swarm.generate('kept', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 2000))");
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $kept"),
	'response store on the cluster: the recorded job completes');
is(sql("SELECT count(*) || ' ' || count(DISTINCT agent_id) FROM swarm.responses WHERE job_id = $kept"), '2000 2000',
	'response store on the cluster: one answer kept per request, in the shards of swarm.responses');
my $replayed = sql("SET swarm.replay = on; SELECT swarm.generate('kept', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 2000), endpoints => ARRAY['refusing'])");
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $replayed"),
	'replay on the cluster: the job completes');
is(sql("SELECT j.succeeded || '/' || j.failed || ' ' || (SELECT count(*) FROM swarm.messages r JOIN swarm.messages o
            ON o.agent_id = r.agent_id AND o.job_id = $kept AND o.content = r.content WHERE r.job_id = $replayed)
        FROM swarm.jobs j WHERE j.id = $replayed"), '2000/0 2000',
	'replay on the cluster: every request answered from the store, no endpoint called, the same words');
for my $w (@workers)
{
	cmp_ok($w->safe_psql('postgres', "SELECT coalesce(sum(succeeded), 0) FROM swarm.job_node_progress WHERE job_id = $replayed"), '>', 0,
		'replay on the cluster: worker node ' . $w->name . ' replayed its shards\' share');
}
is(sql("SELECT swarm.prune_responses(job => $kept)"), 2000, 'prune_responses on the cluster: the job\'s answers deleted');
sql("SELECT swarm.drop_endpoint('refusing')");

###############################################################################
# 8. Shards moved while a job runs
###############################################################################

for my $mode ('block_writes', 'force_logical')
{
	my $moved_job = sql("SELECT swarm.generate('moved: $mode', agents => (SELECT array_agg(id) FROM swarm.agents WHERE id <= 30000))");
	$coordinator->poll_query_until('postgres', "SELECT count(*) > 3000 FROM swarm.messages WHERE job_id = $moved_job")
	  or die 'the job made no progress';
	my ($from, $to) = $mode eq 'block_writes' ? @workers : reverse @workers;
	my $shard = sql(sprintf(q{SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
	                          JOIN pg_dist_node n ON n.groupid = p.groupid
	                          WHERE s.logicalrelid = 'swarm.requests'::regclass AND n.nodeport = %d
	                          ORDER BY s.shardid LIMIT 1}, $from->port));
	my $before = sql("SELECT count(*) FROM swarm.messages WHERE job_id = $moved_job");
	# (a move refuses to start while Citus's maintenance daemon is still
	# dropping the copy an earlier move left behind: "the orphaned shard ...
	# could not be cleaned up"; tried again a second later)
	my ($moved, $move_err);
	for my $try (1 .. 20)
	{
		($moved, undef, $move_err) = $coordinator->psql('postgres',
			sprintf("SELECT citus_move_shard_placement(%d, '127.0.0.1', %d, '127.0.0.1', %d, shard_transfer_mode => '%s')",
				$shard, $from->port, $to->port, $mode));
		last if $moved == 0 || $move_err !~ /orphaned shard .* could not be cleaned up/;
		sleep 1;
	}
	is($moved, 0, "shard $shard moved ($mode) mid-job") or diag($move_err);
	ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $moved_job"),
		"shard $shard moved ($mode) at $before of 30,000 stored: the job completes");
	is(sql("SELECT succeeded || '/' || total || ' ' || (SELECT count(*) || ' ' || count(DISTINCT request_id) FROM swarm.messages WHERE job_id = $moved_job)
	        FROM swarm.jobs WHERE id = $moved_job"),
		'30000/30000 30000 30000', "shard moved ($mode): every request stored once and counted once");
}

# Budgets are split by shards: each worker node takes floor(budget x its
# shards / all shards) of an endpoint's max_in_flight, and 'default' too
sql(sprintf("SELECT swarm.add_endpoint('capped', 'http://127.0.0.1:%d/v1', max_in_flight => 10, requests_per_minute => 600)", $mock_port));
my $capped = sql("SELECT swarm.generate('capped', endpoints => ARRAY['capped'], agents => ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])");
$coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $capped")
  or die 'the capped job did not complete';
my $conc = $w1->safe_psql('postgres', 'SHOW swarm.max_concurrent');
my $sum = 0;
for my $w (@workers)
{
	my $local = sql(sprintf(q{SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n ON n.groupid = p.groupid
	                          JOIN pg_dist_shard s ON s.shardid = p.shardid
	                          WHERE s.logicalrelid = 'swarm.requests'::regclass AND n.nodeport = %d}, $w->port));
	my $status = $w->safe_psql('postgres', "SELECT string_agg(endpoint || '=' || max_in_flight, ',' ORDER BY endpoint) FROM swarm.endpoint_status");
	my ($capped_share) = $status =~ /capped=(\d+)/;
	$sum += $capped_share // 0;
	is($status, sprintf('capped=%d,default=%d', int(10 * $local / 8), int($conc * $local / 8)),
		sprintf('%s holds %d of 8 shards: max_in_flight of capped (10) and default (%d) split to %s', $w->name, $local, $conc, $status));
}
cmp_ok($sum, '<=', 10, "the nodes' shares of capped's max_in_flight add up to at most 10 ($sum)");

###############################################################################
# 9. The same social world as on one server
###############################################################################

my $build = q{
	SELECT swarm.create_agents(5000, 7);
	SELECT swarm.build_friendships(6, 'small_world', 7);
	SELECT swarm.create_communities(ARRAY['a', 'b', 'c'], 800, 'friendships', 7);
	SELECT swarm.create_communities(ARRAY['d', 'e'], 600, 'interests', 8);
	SELECT swarm.create_communities(ARRAY['f'], 500, 'random', 9);
};
my $checksums = q{
	SELECT count(*) || ' ' || md5(string_agg(id || name || persona::text, ',' ORDER BY id)) FROM swarm.agents;
	SELECT count(*) || ' ' || md5(string_agg(agent_id || ':' || friend_id || ':' || strength, ',' ORDER BY agent_id, friend_id)) FROM swarm.friendships;
	SELECT count(*) || ' ' || md5(string_agg(id || name || coalesce(topic, ''), ',' ORDER BY id)) FROM swarm.communities;
	SELECT count(*) || ' ' || md5(string_agg(community_id || ':' || agent_id, ',' ORDER BY community_id, agent_id)) FROM swarm.community_members;
};
my $one = SwarmTest::new_node('one_server', $mock_port);
$one->safe_psql('postgres', 'CREATE EXTENSION pg_swarm');
$one->safe_psql('postgres', $build);
my $single = $one->safe_psql('postgres', $checksums);
sql('TRUNCATE swarm.agents, swarm.friendships, swarm.community_members, swarm.agent_memory, swarm.communities RESTART IDENTITY CASCADE');
sql($build);
my $distributed = sql($checksums);
my @what = ('agents', 'friendships', 'communities', 'community members');
my @s = split /\n/, $single;
my @d = split /\n/, $distributed;
for my $i (0 .. 3)
{
	is($d[$i], $s[$i], "the social world: $what[$i] on the cluster are those of one server ($s[$i])");
}

# conversations: the same on the cluster as on one server
my $talk = "SELECT swarm.interact('talk', turns => 4)";
my $one_job = $one->safe_psql('postgres', $talk);
my $cl_job = sql($talk);
is(sql("SELECT total FROM swarm.jobs WHERE id = $cl_job"), $one->safe_psql('postgres', "SELECT total FROM swarm.jobs WHERE id = $one_job"),
	'interact on the cluster: as many turns to come as on one server (' . sql("SELECT total FROM swarm.jobs WHERE id = $cl_job") . ')');
$coordinator->poll_query_until('postgres', "SELECT count(*) > 4000 FROM swarm.messages WHERE job_id = $cl_job")
  or die 'the conversations made no progress';
kill_worker($w1);
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $cl_job"),
	'interact on the cluster, a node\'s worker killed mid-job: the job completes');
ok($one->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $one_job"),
	'interact on one server: the job completes');
my $turns = q{
	WITH t AS MATERIALIZED (SELECT id, conversation_id, turn, agent_id, to_agent_id, reply_to, content
	                        FROM swarm.messages WHERE job_id = JOB)
	SELECT count(*) || ' ' || count(DISTINCT (m.conversation_id, m.turn)) || ' ' || count(DISTINCT m.conversation_id) || ' '
	       || md5(string_agg(o.agent_id || ':' || m.turn || ':' || m.agent_id || ':' || m.to_agent_id || ':'
	                         || (m.reply_to IS NOT DISTINCT FROM p.id) || ':' || m.content, ',' ORDER BY o.agent_id, m.turn))
	FROM t m
	JOIN t o ON o.conversation_id = m.conversation_id AND o.turn = 1
	LEFT JOIN t p ON p.conversation_id = m.conversation_id AND p.turn = m.turn - 1};
(my $one_turns = $turns) =~ s/JOB/$one_job/;
(my $cl_turns = $turns) =~ s/JOB/$cl_job/;
my $expect = $one->safe_psql('postgres', $one_turns);
is(sql($cl_turns), $expect,
	"interact: the cluster's conversations are one server's, turn by turn, every turn once, each replying to the turn before ($expect)");
is(sql("SELECT succeeded || '/' || total || ' failed ' || failed FROM swarm.jobs WHERE id = $cl_job"),
	$one->safe_psql('postgres', "SELECT succeeded || '/' || total || ' failed ' || failed FROM swarm.jobs WHERE id = $one_job"),
	'interact: the same counts on the cluster as on one server');

# A conversation job whose turns the conductor read past (as when a turn is
# stored in a shard while the shard moves): cursors set past every message
# before the job starts, so no next turn is ever enqueued from them.  The job
# stalls, and after 5 s its turns are read again from the start: it
# completes, each turn once.
my $stall_job = sql(q{BEGIN;
	SELECT swarm.interact('stalled', turns => 3, agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 300)) AS j \gset
	INSERT INTO swarm.job_conductor_cursors (job_id, node_group, last_message_id)
	SELECT :j, g, ((g::bigint + 1) << 48) - 1 FROM (SELECT DISTINCT groupid AS g FROM pg_dist_node) n;
	COMMIT;
	SELECT :j;});
$stall_job = (split /\n/, $stall_job)[-1];
ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $stall_job"),
	'interact: a job whose turns were read past stalls, then its turns are read again and it completes');
is(sql("SELECT j.succeeded || '/' || j.total || ' ' || (SELECT count(*) || ' ' || count(DISTINCT (conversation_id, turn)) FROM swarm.messages WHERE job_id = $stall_job)
        FROM swarm.jobs j WHERE j.id = $stall_job"),
	sql("SELECT total || '/' || total || ' ' || total || ' ' || total FROM swarm.jobs WHERE id = $stall_job"),
	'... every turn stored once');
ok(grep({ /interact job $stall_job had stalled/ } split /\n/, slurp_file($coordinator->logfile)),
	'... and the coordinator\'s log says it had stalled');

# swarm.delete_agents() on one server too (the triggers do the rest there)
$one->safe_psql('postgres', 'INSERT INTO swarm.agent_memory VALUES (1, \'x\', \'\\x80\')');
is($one->safe_psql('postgres', 'SELECT swarm.delete_agents(ARRAY[1])'), 1, 'delete_agents on one server: one agent deleted');
is($one->safe_psql('postgres', 'SELECT (SELECT count(*) FROM swarm.friendships WHERE 1 IN (agent_id, friend_id)) + (SELECT count(*) FROM swarm.community_members WHERE agent_id = 1) + (SELECT count(*) FROM swarm.agent_memory WHERE agent_id = 1)'),
	0, '... with its friendships both ways, memberships and memory');

###############################################################################
# 10. Simulations: the same on the cluster as on one server
###############################################################################

# Checksums that do not depend on message ids (the cluster's ids carry their
# node): a post an action names is named by its author and step.
my $simulation = q{
	WITH p AS (SELECT a.id, a.agent_id, a.step FROM swarm.actions a WHERE a.job_id = JOB)
	SELECT 'actions ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', a.agent_id, a.step, a.kind, a.valid, a.reason,
	       a.target_agent_id, a.community_id, a.content, a.changed, p.agent_id, p.step), ',' ORDER BY a.agent_id, a.step)), '-')
	FROM swarm.actions a LEFT JOIN p ON p.id = a.post_id WHERE a.job_id = JOB;
	SELECT 'messages ' || count(*) || ' ' || md5(string_agg(concat_ws(':', m.agent_id, m.turn, m.content, cardinality(m.seen)), ','
	       ORDER BY m.agent_id, m.turn)) FROM swarm.messages m WHERE m.job_id = JOB;
	SELECT 'follows ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', agent_id, target_id, step), ',' ORDER BY agent_id, target_id)), '-')
	FROM swarm.follows WHERE job_id = JOB;
	SELECT 'mutes ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', agent_id, target_id, step), ',' ORDER BY agent_id, target_id)), '-')
	FROM swarm.mutes WHERE job_id = JOB;
	WITH p AS (SELECT a.id, a.agent_id, a.step FROM swarm.actions a WHERE a.job_id = JOB)
	SELECT 'likes ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', l.agent_id, l.value, l.step, p.agent_id, p.step), ','
	       ORDER BY l.agent_id, p.agent_id, p.step)), '-') FROM swarm.likes l JOIN p ON p.id = l.post_id WHERE l.job_id = JOB;
	SELECT 'memberships ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', agent_id, community_id, member, step), ','
	       ORDER BY agent_id, community_id)), '-') FROM swarm.memberships WHERE job_id = JOB;
	SELECT 'reposts ' || count(*) || ' ' || coalesce(md5(string_agg(concat_ws(':', agent_id, quote, step), ',' ORDER BY agent_id, step)), '-')
	FROM swarm.reposts WHERE job_id = JOB;
	SELECT 'memory ' || count(*) || ' ' || md5(string_agg(agent_id || ':' || swarm.unpack(memory)::text, ',' ORDER BY agent_id))
	FROM swarm.agent_memory;
	SELECT 'job ' || status || ' ' || succeeded || '/' || total || ' failed ' || failed FROM swarm.jobs WHERE id = JOB;
};
my @runs = (
	['with actions', 'swarm.simulate(4, actions => true, seed => 5, activity => 0.2)', 1],
	['with actions, a clock and mixed feeds',
		"swarm.simulate(3, actions => true, seed => 9, activity => 0.05, start_time => '2026-01-01 06:00+00', step_minutes => 240, "
		  . "feed_weights => '{\"follows\": 0.3, \"interest\": 0.3, \"hot\": 0.4}')", 0],
	['without actions', 'swarm.simulate(3, seed => 5, activity => 0.05)', 0]);
# (one server lost agent 1 above: so does the cluster)
sql('SELECT swarm.delete_agents(ARRAY[1])');
$listener = $coordinator->background_psql('postgres');
$listener->query_safe('LISTEN sims');
for my $run (@runs)
{
	my ($what, $call, $kill) = @$run;
	(my $sim_call = $call) =~ s/\)$/, channel => 'sims')/;
	# (each run from the same memories: none)
	$one->safe_psql('postgres', 'TRUNCATE swarm.agent_memory');
	sql('TRUNCATE swarm.agent_memory');
	my $one_sim = $one->safe_psql('postgres', "SELECT $sim_call");
	my $cl_sim = sql("SELECT $sim_call");
	if ($kill)
	{
		$coordinator->poll_query_until('postgres', "SELECT (params ->> 'step')::integer >= 2 FROM swarm.jobs WHERE id = $cl_sim")
		  or die 'the simulation made no progress';
		kill_worker($w1);
	}
	ok($coordinator->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $cl_sim"),
		"simulate $what on the cluster" . ($kill ? ", a node's worker killed mid-run" : '') . ': the job completes');
	ok($one->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $one_sim"),
		"simulate $what on one server: the job completes");
	(my $one_sums = $simulation) =~ s/JOB/$one_sim/g;
	(my $cl_sums = $simulation) =~ s/JOB/$cl_sim/g;
	my @o = split /\n/, $one->safe_psql('postgres', $one_sums);
	my @c = split /\n/, sql($cl_sums);
	for my $i (0 .. $#o)
	{
		is($c[$i], $o[$i], "simulate $what: $o[$i] on the cluster as on one server");
	}
	is(sql("SELECT params ->> 'settled' FROM swarm.jobs WHERE id = $cl_sim"), sql("SELECT params ->> 'steps' FROM swarm.jobs WHERE id = $cl_sim"),
		"simulate $what: every step settled on the cluster");
	my $heard = $listener->query_safe('SELECT 1');
	like($heard, qr/Asynchronous notification "sims" with payload "[^"]*"job" : $cl_sim,[^"]*"status" : "completed"/,
		"simulate $what: a LISTEN on the coordinator hears the job complete");
}
$listener->quit;

# a simulation cancelled mid-run: what its last step stored is settled all
# the same (as on one server, where the worker applies it as it stores it)
my $cancelled = sql('SELECT swarm.simulate(6, actions => true, seed => 3, activity => 0.2)');
$coordinator->poll_query_until('postgres', "SELECT count(*) > 1500 FROM swarm.messages WHERE job_id = $cancelled")
  or die 'the simulation to cancel made no progress';
sql("SELECT swarm.cancel($cancelled)");
ok($coordinator->poll_query_until('postgres', "SELECT params ->> 'settled' = params ->> 'step' FROM swarm.jobs WHERE id = $cancelled"),
	'simulate, cancelled mid-run on the cluster: its last step is settled');
my ($status_now, $stored, $acted) = split / /, sql("SELECT status || ' ' || (SELECT count(*) FROM swarm.messages WHERE job_id = $cancelled)
        || ' ' || (SELECT count(*) FROM swarm.actions WHERE job_id = $cancelled) FROM swarm.jobs WHERE id = $cancelled");
is($acted, $stored, "... every message it stored ($stored) has its action");
is($status_now, 'cancelled', '... and the job stays cancelled');
for my $w (@workers)
{
	is($w->safe_psql('postgres', 'SELECT count(*) FROM swarm.simulation_steps'), 0,
		'no step is built on worker node ' . $w->name . ' (the coordinator builds them)');
}

# every node runs a step builder too; only the coordinator's builds and
# settles steps, and none may log an error (0.6.0's first version failed a
# FOR UPDATE over a distributed table every second on every node)
for my $n (@nodes)
{
	unlike(slurp_file($n->logfile), qr/could not run distributed query with FOR UPDATE/,
		'the step builder stays quiet on ' . $n->name);
}

done_testing();
