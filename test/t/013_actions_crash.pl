# Simulations with actions under crashes.  Endpoint: the project's mock at a
# fixed 20 ms, plain HTTP/1.1, never saturated, every reply a valid action
# (json_schema; part 5 tools).
#  1. A reference run: 3,000 agents, 6 steps of 30% active, seed 77, with
#     nothing killed.
#  2. The same run again, from the same (empty) memory, with the worker
#     kill -9'd twice mid-step and the step builder kill -9'd once, as step
#     5 ends and step 6 is to be built (each kill makes the postmaster
#     restart every backend).  Every action is recorded exactly once (one per message, one
#     message per request), the typed tables hold exactly what the changed
#     actions say, and the run is the same as the reference, message for
#     message: a resent request has the same prompt, so the same reply, and
#     nothing was applied twice or lost.
#  2b. The same run built in parts of 20 agents (swarm.step_part_agents),
#     the step builder kill -9'd while step 3 is half built: the build
#     resumes at its next part, and the run is the reference's again.
#  2c. The same run with the step builder kill -9'd during each of steps 1
#     to 5, before the next step is built: every step is built by a builder
#     that kept nothing and reads its whole window, where the reference's
#     builder kept the window's steps from step to step; the run is the
#     reference's again.
#  3. A generate job runs beside a simulation and completes while the
#     simulation's steps are built by the step builder, not the worker.
#  4. Prompts stay bounded over 100 steps: every agent-step's prompt within
#     the 1,000-token budget (as the mock counts them: bytes / 4), and they
#     level off: memories, follows and communities fill up over an agent's
#     first activations (measured: 461 tokens on average in steps 1-10, 621
#     in 61-70, 640 in 91-100, never above 696), then stop growing: the last
#     ten steps within 10% of steps 61-70.
#  5. swarm.structured_output = 'tools', reloaded: the default endpoint is
#     asked through a tool (the mock's replies then end with finish_reason
#     tool_calls) and the actions are read from the calls' arguments.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 20, '--threads' => 2);
END { SwarmTest::stop_mock($mock) if defined $mock; }

my $node = SwarmTest::new_node('actions', $mock_port,
	'swarm.max_concurrent = 500', 'swarm.flush_interval = 20ms');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.create_agents(3000, 5);
	SELECT swarm.build_friendships(6, 'small_world', 5);
	SELECT swarm.create_communities(ARRAY['chess', 'jazz', 'hiking', 'cooking'], 300, 'interests', 5);
});

sub wait_done
{
	my ($job, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'cancelled') FROM swarm.jobs WHERE id = $job", 't')
	  or die "$what did not end";
	return sql("SELECT status || ':' || total || ':' || succeeded || ':' || failed FROM swarm.jobs WHERE id = $job");
}

sub run_digest
{
	my ($job) = @_;
	return sql(qq{SELECT md5(string_agg(format('%s/%s/%s', m.turn, m.agent_id, m.content), '|'
	                                    ORDER BY m.turn, m.agent_id))
	              FROM swarm.messages m WHERE m.job_id = $job});
}

# After a kill -9 the postmaster resets every backend: until it accepts
# connections again, a psql that finds no server exits before reading its
# query, and IPC::Run dies writing it ("Broken pipe").  So each try is in an
# eval.  Returns once a backend of `type` other than `old` runs.
sub wait_replaced
{
	my ($type, $old) = @_;
	for (1 .. 1200)
	{
		my $n = eval {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$type' AND pid <> $old");
		};
		return if defined $n && $n eq '1';
		sleep 0.1;
	}
	die "no new $type";
}

sub pid_of
{
	my ($type) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = '$type'")
	  or die "no $type";
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = '$type'");
}

###############################################################################
# 1. The reference run
###############################################################################

my $ref = sql("SELECT swarm.simulate(6, activity => 0.3, seed => 77, actions => true)");
my $ref_end = wait_done($ref, 'the reference run');
is($ref_end, 'completed:5400:5400:0', 'reference: 6 steps of 900 agents, every request answered');
my $ref_digest = run_digest($ref);

###############################################################################
# 2. The same run, killed
###############################################################################

sql("DELETE FROM swarm.agent_memory");
my $job = sql("SELECT swarm.simulate(6, activity => 0.3, seed => 77, actions => true)");

# the worker, mid-step: once some of step 2 is stored, then some of step 4
for my $step (2, 4)
{
	$node->poll_query_until('postgres',
		"SELECT count(*) > 300 FROM swarm.messages WHERE job_id = $job AND turn = $step", 't')
	  or die "step $step did not start";
	my $pid = pid_of('pg_swarm worker');
	kill 'KILL', $pid;
	wait_replaced('pg_swarm worker', $pid);
	note("worker $pid killed during step $step");
}

# the step builder, while it builds: when step 5's requests appear it has
# just committed one; kill it as soon as step 5 is done being answered
$node->poll_query_until('postgres',
	"SELECT count(*) > 800 FROM swarm.messages WHERE job_id = $job AND turn = 5", 't')
  or die 'step 5 did not run';
my $builder = pid_of('pg_swarm step builder');
kill 'KILL', $builder;
wait_replaced('pg_swarm step builder', $builder);
note("step builder $builder killed at the end of step 5");

is(wait_done($job, 'the killed run'), 'completed:5400:5400:0',
	'killed run: completed, every request answered once');
is(sql("SELECT count(*) || ':' || count(DISTINCT request_id) || ':' || count(DISTINCT (turn, agent_id))
        FROM swarm.messages WHERE job_id = $job"),
	'5400:5400:5400', 'killed run: one message per request, one per agent and step');
is(sql("SELECT count(*) FROM swarm.requests WHERE job_id = $job"), '0', 'killed run: nothing left queued');
is(sql("SELECT count(*) || ':' || count(*) FILTER (WHERE a.id IN (SELECT id FROM swarm.messages WHERE job_id = $job))
        FROM swarm.actions a WHERE a.job_id = $job"),
	'5400:5400', 'killed run: one action per message, each recorded once');
is(sql("SELECT string_agg(step || '=' || requests, ',' ORDER BY step) FROM swarm.simulation_steps WHERE job_id = $job"),
	'1=900,2=900,3=900,4=900,5=900,6=900', 'killed run: each step built once, with its 900 agents');

# what changed is in the typed tables, exactly
is(sql(qq{
	SELECT (SELECT count(*) FROM swarm.follows WHERE job_id = $job)
	       = (SELECT count(*) FILTER (WHERE kind = 'follow') - count(*) FILTER (WHERE kind = 'unfollow')
	          FROM swarm.actions WHERE job_id = $job AND changed)
	   AND (SELECT count(*) FROM swarm.mutes WHERE job_id = $job)
	       = (SELECT count(*) FROM swarm.actions WHERE job_id = $job AND kind = 'mute' AND changed)
	   AND (SELECT count(*) FROM swarm.reposts WHERE job_id = $job)
	       = (SELECT count(*) FROM swarm.actions WHERE job_id = $job AND kind IN ('repost', 'quote') AND valid)
	   AND (SELECT count(*) FROM swarm.likes WHERE job_id = $job)
	       = (SELECT count(DISTINCT (agent_id, post_id)) FROM swarm.actions
	          WHERE job_id = $job AND kind IN ('like', 'dislike') AND valid)}),
	't', 'killed run: follows, mutes, reposts and likes hold exactly what the actions changed');

is(run_digest($job), $ref_digest,
	'killed run: the same run as the reference, message for message (same prompts, same replies, nothing applied twice)');
is(sql(qq{SELECT (SELECT string_agg(format('%s>%s', agent_id, target_id), ',' ORDER BY agent_id, target_id)
                  FROM swarm.follows WHERE job_id = $job)
               = (SELECT string_agg(format('%s>%s', agent_id, target_id), ',' ORDER BY agent_id, target_id)
                  FROM swarm.follows WHERE job_id = $ref)}),
	't', 'killed run: the same follow graph as the reference');

###############################################################################
# 2b. The same run built in parts, the step builder killed between two parts
###############################################################################

# swarm.step_part_agents = 20: a step of 900 agents in 46 parts (4, then 20
# at a time), each committed on its own while the worker sends the first
sql("ALTER SYSTEM SET swarm.step_part_agents = 20; SELECT pg_reload_conf();");
sleep 1;
sql("DELETE FROM swarm.agent_memory");
my $parted = sql("SELECT swarm.simulate(6, activity => 0.3, seed => 77, actions => true)");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM swarm.simulation_steps WHERE job_id = $parted AND step = 3
	   AND parts_built BETWEEN 2 AND parts - 2", 't')
  or die 'step 3 was not seen half built';
$builder = pid_of('pg_swarm step builder');
kill 'KILL', $builder;
wait_replaced('pg_swarm step builder', $builder);
note("step builder $builder killed while it built step 3 in parts");

is(wait_done($parted, 'the run built in parts'), 'completed:5400:5400:0',
	'built in parts, killed: completed, every request answered once');
is(sql("SELECT count(*) || ':' || count(DISTINCT request_id) || ':' || count(DISTINCT (turn, agent_id))
        FROM swarm.messages WHERE job_id = $parted"),
	'5400:5400:5400', 'built in parts, killed: one message per request, one per agent and step');
is(sql("SELECT string_agg(format('%s=%s/%s/%s', step, requests, parts_built, parts), ',' ORDER BY step)
        FROM swarm.simulation_steps WHERE job_id = $parted AND agents IS NULL"),
	'1=900/46/46,2=900/46/46,3=900/46/46,4=900/46/46,5=900/46/46,6=900/46/46',
	'built in parts, killed: each step built once, in its 46 parts, its agents let go');
is(run_digest($parted), $ref_digest,
	'built in parts, killed: the same run as the reference, message for message');
sql("ALTER SYSTEM RESET swarm.step_part_agents; SELECT pg_reload_conf();");

###############################################################################
# 2c. The window read afresh at every step
###############################################################################

# The step builder keeps the window's steps from one step to the next (it
# reads only the step just ended); the reference run was built so.  Here
# the builder is kill -9'd during each of steps 1 to 5, before the next is
# built, so that every step is built by a new builder that reads its whole
# window: the same run again, message for message.  (10 requests in flight:
# a step lasts about two seconds, time to see it a third answered.)
sql("ALTER SYSTEM SET swarm.max_concurrent = 10; SELECT pg_reload_conf();");
sleep 1;
sql("DELETE FROM swarm.agent_memory");
my $fresh = sql("SELECT swarm.simulate(6, activity => 0.3, seed => 77, actions => true)");
my $fresh_reads = 0;
for my $step (1 .. 5)
{
	$node->poll_query_until('postgres',
		"SELECT count(*) >= 300 FROM swarm.messages WHERE job_id = $fresh AND turn = $step", 't')
	  or die "step $step did not run";
	# (not yet built: the step's next is built by the builder started now)
	$fresh_reads++
	  if sql("SELECT count(*) FROM swarm.simulation_steps WHERE job_id = $fresh AND step = $step + 1") eq '0';
	my $pid = pid_of('pg_swarm step builder');
	kill 'KILL', $pid;
	wait_replaced('pg_swarm step builder', $pid);
}
is(wait_done($fresh, 'the run read afresh'), 'completed:5400:5400:0',
	'window read afresh: completed, every request answered once');
is($fresh_reads, 5, 'window read afresh: steps 2 to 6 each built by a builder that kept nothing');
is(run_digest($fresh), $ref_digest,
	'window read afresh: the same run as the reference (whose builder kept its window), message for message');
sql("ALTER SYSTEM RESET swarm.max_concurrent; SELECT pg_reload_conf();");

###############################################################################
# 3. Other jobs flow while steps are built
###############################################################################

sql("DELETE FROM swarm.agent_memory");
my $sim = sql("SELECT swarm.simulate(4, activity => 0.5, seed => 3, actions => true)");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM swarm.simulation_steps WHERE job_id = $sim AND step = 2", 't')
  or die 'the simulation did not reach step 2';
my $gen = sql("SELECT swarm.generate('say hi')");
is(wait_done($gen, 'the generate job'), 'completed:3000:3000:0', 'beside a simulation: a generate job completes');
is(wait_done($sim, 'the simulation'), 'completed:6000:6000:0', 'beside a generate job: the simulation completes');
ok(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_swarm step builder'") == 1,
	'the step builder is a backend of its own');

###############################################################################
# 4. A hundred steps: bounded prompts
###############################################################################

sql("DELETE FROM swarm.agent_memory");
my $long = sql("SELECT swarm.simulate(100, activity => 0.05, seed => 11, actions => true)");
is(wait_done($long, 'the 100-step simulation'), 'completed:15000:15000:0', '100 steps: every request answered');
is(sql("SELECT count(*) || ':' || count(*) FILTER (WHERE prompt_tokens_max <= 1000) FROM swarm.step_tokens WHERE job_id = $long"),
	'100:100', '100 steps: every prompt within the 1,000-token budget');
my ($mid, $late) = split /\|/, sql(qq{
	SELECT (SELECT round(avg(prompt_tokens_avg), 1) FROM swarm.step_tokens WHERE job_id = $long AND step BETWEEN 61 AND 70),
	       (SELECT round(avg(prompt_tokens_avg), 1) FROM swarm.step_tokens WHERE job_id = $long AND step > 90)});
ok($late <= $mid * 1.1,
	"100 steps: prompts level off: steps 91-100 ($late tokens on average) within 10% of steps 61-70 ($mid)");
note("prompt tokens: steps 61-70 $mid, steps 91-100 $late on average");

###############################################################################
# 5. The default endpoint asked through tools
###############################################################################

sql("ALTER SYSTEM SET swarm.structured_output = 'tools'; SELECT pg_reload_conf();");
sleep 2;
my $tools = sql("SELECT swarm.simulate(2, activity => 0.05, seed => 5, actions => true)");
is(wait_done($tools, 'the tools simulation'), 'completed:300:300:0', 'tools: every request answered');
is(sql("SELECT string_agg(DISTINCT finish_reason, ',') || ' ' || count(*) FILTER (WHERE a.valid)
        FROM swarm.messages m JOIN swarm.actions a ON a.agent_id = m.agent_id AND a.id = m.id WHERE m.job_id = $tools"),
	'tool_calls 300', 'tools: swarm.structured_output = tools reaches the default endpoint, every call read as a valid action');

$node->stop;
done_testing();
