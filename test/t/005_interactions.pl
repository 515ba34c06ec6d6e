# Upgrades, and crashes in the middle of swarm.interact() and swarm.simulate()
# jobs.
#
#  1. Upgrade: the worker's database holds 0.1.0 (agents, friendships, a
#     finished job's messages); the current library's worker warns and runs
#     nothing; ALTER EXTENSION pg_swarm UPDATE (0.1.0 -> 0.2.0 -> current)
#     keeps every row, the jobs queued meanwhile then run, and
#     swarm.interact() works.  The upgraded schema is the same as a fresh
#     install's (pg_dump of both, extension members included), from 0.1.0,
#     0.2.0 and 0.3.0 alike.  Rows 0.2.0 let users write (a channel NOTIFY
#     refuses, queued requests quoting another job's conversation) are
#     repaired or cancelled, with warnings, instead of stopping the update.
#  2. kill -9 of the worker, and an immediate server stop, in the middle of an
#     interact job: every conversation still has its turns exactly once, the
#     speakers alternate, each turn replies to the one before, and the counts
#     add up.
#  3. kill -9 of the worker in the middle of a simulate job: every step has
#     exactly its active agents' posts, nobody posts twice in a step, and step
#     s + 1 is stored after the whole of step s.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 200, '--jitter-ms' => 100);
END { SwarmTest::stop_mock($mock) if $mock; }
my $node = SwarmTest::new_node('interactions', $mock_port,
	'swarm.max_concurrent = 50', 'swarm.request_timeout = 5s', 'swarm.max_retries = 3');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the version this library is: what CREATE EXTENSION installs
my $current = sql("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_swarm'");
(my $current_re = $current) =~ s/\./\\./g;

sub wait_completed
{
	my ($job, $label) = @_;
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "$label: job $job did not complete";
}

###############################################################################
# 1. Upgrade from 0.1.0
###############################################################################

my $log_offset = -s $node->logfile;
sql("CREATE EXTENSION pg_swarm VERSION '0.1.0'");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"), '0.1.0',
	'upgrade: the worker\'s database holds 0.1.0');

# Data as 0.1.0 knows it: agents, friendships, and a finished job with its
# messages (written directly: the 0.2.0 library does not run 0.1.0 jobs).
sql(q{
	SELECT swarm.create_agents(20, 7);
	SELECT swarm.build_friendships(3, 'random', 7);
	WITH j AS (
		INSERT INTO swarm.jobs (status, context, model, max_tokens, channel, system_template,
		                        user_template, total, succeeded, prompt_tokens, completion_tokens,
		                        started_at, finished_at, params)
		VALUES ('completed', 'written under 0.1.0', 'gpt-3.5-turbo', 150, 'swarm', 'You are {name}.',
		        '{context}', 3, 3, 30, 60, now(), now(), '{"agents": "list"}')
		RETURNING id),
	r AS (
		INSERT INTO swarm.requests (job_id, agent_id)
		SELECT j.id, g FROM j, generate_series(1, 3) g
		RETURNING id, job_id, agent_id)
	INSERT INTO swarm.messages (job_id, request_id, agent_id, content, model, prompt_tokens,
	                            completion_tokens, latency_ms, finish_reason, attempts)
	SELECT r.job_id, r.id, r.agent_id, 'message ' || r.agent_id || ' from 0.1.0', 'gpt-3.5-turbo',
	       10, 20, 12.5, 'stop', 1
	FROM r;
	-- as the worker does: an answered request leaves the queue
	DELETE FROM swarm.requests r USING swarm.messages m WHERE m.request_id = r.id;
});
my ($agents, $friendships) = split /\|/,
  sql("SELECT (SELECT count(*) FROM swarm.agents), (SELECT count(*) FROM swarm.friendships)");
cmp_ok($friendships, '>', 0, "upgrade: 0.1.0 data made ($agents agents, $friendships friendship rows)");

# A job enqueued under 0.1.0 wakes the worker, which refuses the old schema.
my $queued_job = sql("SELECT swarm.generate('queued under 0.1.0')");
$node->wait_for_log(
	qr/WARNING:  pg_swarm worker is waiting: the extension's SQL is version 0\.1\.0, the library is $current_re/,
	$log_offset);
pass("upgrade: the worker warns that the SQL is 0.1.0 and the library $current");
sql("SELECT swarm._wake_worker()");    # wake it once more: it must stay put, and quiet
usleep(1_500_000);
is(sql("SELECT status, (SELECT count(*) FROM swarm.messages WHERE job_id = $queued_job),
             (SELECT count(*) FROM swarm.requests WHERE job_id = $queued_job AND status = 'queued')
      FROM swarm.jobs WHERE id = $queued_job"),
	"queued|0|$agents", 'upgrade: under 0.1.0 the worker runs nothing; the requests stay queued');
my @warnings = slurp_file($node->logfile, $log_offset) =~ /the extension's SQL is version 0\.1\.0/g;
is(scalar(@warnings), 1, 'upgrade: the warning is given once per version seen');

# Every row of 0.1.0's tables, in 0.1.0's columns.
my $fingerprint_sql = q{
	SELECT md5(concat_ws('/',
		(SELECT string_agg(concat_ws('|', id, name, persona, state, created_at), ',' ORDER BY id) FROM swarm.agents),
		(SELECT string_agg(concat_ws('|', agent_id, friend_id, since, strength), ',' ORDER BY agent_id, friend_id)
		 FROM swarm.friendships),
		(SELECT string_agg(concat_ws('|', id, kind, status, owner, context, model, max_tokens, channel,
		                             system_template, user_template, total, succeeded, failed, cancelled,
		                             prompt_tokens, completion_tokens, created_at, started_at, finished_at,
		                             params, endpoints), ',' ORDER BY id) FROM swarm.jobs),
		(SELECT string_agg(concat_ws('|', id, job_id, agent_id, status, attempts, last_error, finished_at),
		                   ',' ORDER BY id) FROM swarm.requests),
		(SELECT string_agg(concat_ws('|', id, job_id, request_id, agent_id, content, model, prompt_tokens,
		                             completion_tokens, latency_ms, finish_reason, attempts, created_at),
		                   ',' ORDER BY id) FROM swarm.messages)))
};
my $fingerprint = sql($fingerprint_sql);

# (checked before the update commits: at its commit the worker wakes and runs
# the job queued meanwhile)
is(sql("BEGIN; ALTER EXTENSION pg_swarm UPDATE; $fingerprint_sql; COMMIT"), $fingerprint,
	'upgrade: agents, friendships, jobs, requests and messages are unchanged');
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"), $current,
	"upgrade: ALTER EXTENSION UPDATE goes from 0.1.0 to $current");
is(sql("SELECT count(*) FILTER (WHERE conversation_id IS NULL AND turn IS NULL AND to_agent_id IS NULL
                                    AND reply_to IS NULL AND seen IS NULL), count(*)
      FROM swarm.messages"), '3|3', 'upgrade: old messages have the new columns empty');
is(sql("SELECT string_agg(DISTINCT kind, ',') FROM swarm.jobs"), 'generate', 'upgrade: old jobs are of kind generate');

# The update wakes the worker at its commit: the job queued under 0.1.0 runs
# without anything else submitted; then a new job runs too.
wait_completed($queued_job, 'upgrade (queued before, woken by the update)');
my $new_job = sql("SELECT swarm.generate('after the upgrade')");
wait_completed($new_job, 'upgrade');
is(sql("SELECT string_agg(concat_ws(':', j.succeeded, j.failed, j.total,
                                  (SELECT count(*) FROM swarm.messages m WHERE m.job_id = j.id),
                                  (SELECT count(*) FROM swarm.requests r WHERE r.job_id = j.id)), ' ' ORDER BY j.id)
      FROM swarm.jobs j WHERE j.id IN ($queued_job, $new_job)"),
	"$agents:0:$agents:$agents:0 $agents:0:$agents:$agents:0",
	'upgrade: a job submitted after the update, and the one queued before it, run to completion');

# swarm.interact() on the upgraded schema: every agent with a friend opens a
# conversation.
my $talk = sql("SELECT swarm.interact('after the upgrade', turns => 2)");
wait_completed($talk, 'upgrade interact');
my $conv = sql("SELECT count(DISTINCT agent_id) FROM swarm.friendships");
is(sql("SELECT succeeded || ':' || failed || ':' || total FROM swarm.jobs WHERE id = $talk"),
	(2 * $conv) . ':0:' . (2 * $conv), "upgrade: swarm.interact() completes, two turns in each of $conv conversations");
is(sql("SELECT count(*) FROM (SELECT conversation_id FROM swarm.messages WHERE job_id = $talk
                             GROUP BY 1 HAVING array_agg(turn ORDER BY turn) = '{1,2}') c"),
	$conv, 'upgrade: each conversation has turns 1 and 2');

# The upgraded schema equals a fresh install's.  A plain dump of the schema
# leaves extension members out, so compare in binary-upgrade mode too, which
# dumps each member with its definition, comments and initial privileges;
# only oids, relfilenodes, xids, column LSNs and the \restrict key must differ.
sql("CREATE DATABASE fresh");
$node->safe_psql('fresh', 'CREATE EXTENSION pg_swarm');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "fresh database: CREATE EXTENSION installs $current");
# and a database that was made at 0.2.0 and updated (no worker serves it:
# only its schema matters here)
sql("CREATE DATABASE from_0_2_0");
$node->safe_psql('from_0_2_0', "CREATE EXTENSION pg_swarm VERSION '0.2.0'");
# Rows 0.2.0 let a user write (its users inserted into the queue
# themselves): a channel NOTIFY refuses, and queued requests no job of
# theirs could have queued, quoting a finished job's conversation.
$node->safe_psql('from_0_2_0', q{
	INSERT INTO swarm.agents (id, name) VALUES (1, 'a'), (2, 'b');
	INSERT INTO swarm.jobs (kind, status, owner, context, model, max_tokens, channel, system_template, user_template, total)
	VALUES ('interact', 'completed', 'victim', 'secret talk', 'm', 10, 'swarm', 's', 'u', 1),
	       ('interact', 'running', 'eve', 'eve talks', 'm', 10, repeat('c', 100), 's', 'u', 3),
	       ('generate', 'running', 'eve', 'eve generates', 'm', 10, 'swarm', 's', 'u', 2);
	INSERT INTO swarm.requests (job_id, agent_id, status) VALUES (1, 1, 'failed');
	INSERT INTO swarm.messages (job_id, request_id, agent_id, content, to_agent_id, conversation_id, turn)
	VALUES (1, 1, 1, 'the victim''s secret', 2, 500, 1);
	INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, reply_to, vars) VALUES
	    (2, 1, 2, 900, 1, NULL, '{"history": "(nothing yet)"}'),  -- as interact() queues
	    (2, 2, 1, 901, 2, 1, '{}'),                                 -- replying to the victim's message
	    (2, 2, 1, 500, 2, NULL, '{}'),                              -- in the victim's conversation
	    (3, 1, NULL, NULL, NULL, NULL, NULL),                       -- as generate() queues
	    (3, 2, NULL, NULL, NULL, NULL, '{"x": 1}'),                 -- generate() sets no vars
	    (1, 2, NULL, NULL, NULL, NULL, NULL);                       -- of a job that has ended
});
my ($up_ret, $up_out, $up_err) = $node->psql('from_0_2_0', "ALTER EXTENSION pg_swarm UPDATE");
is($up_ret, 0, 'upgrade from 0.2.0: rows 0.2.0 let users write do not stop ALTER EXTENSION UPDATE');
is($node->safe_psql('from_0_2_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.2.0 to $current");
like($up_err, qr/set the channel of 1 jobs to 'swarm'/, 'upgrade from 0.2.0: a 100-byte channel becomes swarm, with a warning');
is($node->safe_psql('from_0_2_0', "SELECT string_agg(channel, ',' ORDER BY id) FROM swarm.jobs"), 'swarm,swarm,swarm',
	'upgrade from 0.2.0: ... and only it changed');
like($up_err, qr/cancelled 4 queued requests that their jobs could not have queued/,
	'upgrade: queued requests their jobs could not have queued are cancelled, with a warning');
is($node->safe_psql('from_0_2_0', "SELECT string_agg(id || ':' || status || ':' || coalesce((last_error LIKE 'cancelled by the update%')::text, '-'), ',' ORDER BY id)
                                   FROM swarm.requests WHERE id > 1"),
	'2:queued:-,3:cancelled:true,4:cancelled:true,5:queued:-,6:cancelled:true,7:cancelled:true',
	'upgrade: ... exactly those: a reply to, or a turn in, another job\'s conversation, vars on a generate request, a request of an ended job');
is($node->safe_psql('from_0_2_0', "SELECT string_agg(id || ':' || status || ':' || cancelled, ',' ORDER BY id) FROM swarm.jobs"),
	'1:completed:0,2:running:2,3:running:1', 'upgrade: the running jobs count what was cancelled');
# and one made at 0.3.0, with a job of each kind in it (their kinds must
# survive the move from a CHECK to swarm.job_kinds)
sql("CREATE DATABASE from_0_3_0");
$node->safe_psql('from_0_3_0', "CREATE EXTENSION pg_swarm VERSION '0.3.0'");
$node->safe_psql('from_0_3_0', q{
	INSERT INTO swarm.jobs (kind, status, context, model, max_tokens, channel, system_template, user_template)
	SELECT k, 'completed', 'written under 0.3.0', 'm', 10, 'swarm', 's', 'u'
	FROM unnest(ARRAY['generate', 'interact', 'simulate']) AS k});
$node->safe_psql('from_0_3_0', "ALTER EXTENSION pg_swarm UPDATE");
is($node->safe_psql('from_0_3_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.3.0 to $current");
is($node->safe_psql('from_0_3_0', "SELECT string_agg(j.kind || '=' || k.code, ',' ORDER BY j.id)
                                   FROM swarm.jobs j JOIN swarm.job_kinds k ON k.name = j.kind"),
	'generate=1,interact=2,simulate=3', 'upgrade from 0.3.0: every job keeps its kind, now a row of swarm.job_kinds');

# and one made at 0.4.0, with a queued request and a message of alice's job:
# 0.5.0 copies the job's owner onto both (row-level security reads it there)
sql("CREATE DATABASE from_0_4_0");
$node->safe_psql('from_0_4_0', "CREATE EXTENSION pg_swarm VERSION '0.4.0'");
$node->safe_psql('from_0_4_0', q{
	INSERT INTO swarm.jobs (owner, kind, status, context, model, max_tokens, channel, system_template, user_template, total)
	VALUES ('alice', 'generate', 'running', 'written under 0.4.0', 'm', 10, 'swarm', 's', 'u', 2);
	INSERT INTO swarm.requests (job_id, agent_id) VALUES (1, 1), (1, 2);
	INSERT INTO swarm.messages (job_id, request_id, agent_id, content) VALUES (1, 2, 2, 'answered under 0.4.0');
	DELETE FROM swarm.requests WHERE id = 2;
	INSERT INTO swarm.requests (job_id, agent_id) VALUES (99, 3);   -- of a job deleted by hand
});
$node->safe_psql('from_0_4_0', "ALTER EXTENSION pg_swarm UPDATE");
is($node->safe_psql('from_0_4_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.4.0 to $current");
is($node->safe_psql('from_0_4_0', "SELECT string_agg(id || ':' || owner, ',' ORDER BY id) FROM swarm.requests"),
	'1:alice,3:postgres', 'upgrade from 0.4.0: a request takes its job\'s owner (the superuser\'s when its job is gone)');
is($node->safe_psql('from_0_4_0', "SELECT string_agg(content || ':' || owner, ',') FROM swarm.messages"),
	'answered under 0.4.0:alice', 'upgrade from 0.4.0: a message takes its job\'s owner');

# and one made at 0.5.0, with an endpoint: 0.6.0 asks it for structured
# output the json_schema way
sql("CREATE DATABASE from_0_5_0");
$node->safe_psql('from_0_5_0', "CREATE EXTENSION pg_swarm VERSION '0.5.0'");
$node->safe_psql('from_0_5_0', "INSERT INTO swarm.endpoints (name, base_url) VALUES ('old', 'http://127.0.0.1:1/v1')");
$node->safe_psql('from_0_5_0', "ALTER EXTENSION pg_swarm UPDATE");
is($node->safe_psql('from_0_5_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.5.0 to $current");
is($node->safe_psql('from_0_5_0', "SELECT name || ':' || structured_output FROM swarm.endpoints"),
	'old:json_schema', 'upgrade from 0.5.0: an endpoint takes structured output as json_schema');

# and one made at 0.6.0, with a simulation's actions recorded
sql("CREATE DATABASE from_0_6_0");
$node->safe_psql('from_0_6_0', "CREATE EXTENSION pg_swarm VERSION '0.6.0'");
$node->safe_psql('from_0_6_0', "INSERT INTO swarm.actions (agent_id, id, job_id, step, kind, valid, owner) VALUES (1, 1, 1, 1, 'do_nothing', true, 'postgres')");
$node->safe_psql('from_0_6_0', "ALTER EXTENSION pg_swarm UPDATE");
is($node->safe_psql('from_0_6_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.6.0 to $current");
is($node->safe_psql('from_0_6_0', "SELECT kind FROM swarm.actions"), 'do_nothing', 'upgrade from 0.6.0: the actions stay');

# and one made at 0.7.0, with an answer kept for replay and a request queued:
# 0.8.0 gives requests a batch (none) and endpoints a mode (sync)
sql("CREATE DATABASE from_0_7_0");
$node->safe_psql('from_0_7_0', "CREATE EXTENSION pg_swarm VERSION '0.7.0'");
$node->safe_psql('from_0_7_0', "INSERT INTO swarm.responses (agent_id, key, owner, job_id, content) VALUES (1, sha256(''), 'postgres', 1, 'kept under 0.7.0')");
$node->safe_psql('from_0_7_0', "INSERT INTO swarm.endpoints (name, base_url) VALUES ('old', 'http://127.0.0.1:1/v1')");
$node->safe_psql('from_0_7_0', "INSERT INTO swarm.requests (job_id, agent_id, owner) VALUES (1, 1, 'postgres')");
$node->safe_psql('from_0_7_0', "ALTER EXTENSION pg_swarm UPDATE");
is($node->safe_psql('from_0_7_0', "SELECT extversion FROM pg_extension WHERE extname = 'pg_swarm'"),
	$current, "upgrade: ALTER EXTENSION UPDATE goes from 0.7.0 to $current");
is($node->safe_psql('from_0_7_0', "SELECT content FROM swarm.responses"), 'kept under 0.7.0', 'upgrade from 0.7.0: the kept answers stay');
is($node->safe_psql('from_0_7_0', "SELECT (SELECT mode FROM swarm.endpoints) || ':' || (SELECT coalesce(batch_id::text, 'none') FROM swarm.requests)"),
	'sync:none', 'upgrade from 0.7.0: an endpoint is synchronous, a queued request in no batch');

sub dump_schema
{
	my ($db, @opts) = @_;
	my ($out, $err) = run_command([ $node->installed_command('pg_dump'), '--schema-only',
		'--schema=swarm', @opts, '-d', $node->connstr($db) ]);
	die "pg_dump of $db failed: $err" if $err ne '' || $out eq '';
	$out =~ s/^\\(un)?restrict \S+$/\\${1}restrict KEY/mg;
	$out =~ s/(binary_upgrade_[a-z_]+\()'[^']*'/$1'N'/g;
	$out =~ s/relfrozenxid = '\d+', relminmxid = '\d+'/relfrozenxid = 'N', relminmxid = 'N'/g;
	$out =~ s/WHERE oid = '\d+'/WHERE oid = 'N'/g;
	# the oids of the tables and sequences whose data pg_dump keeps
	$out =~ s/(binary_upgrade_create_empty_extension\([^)]*?)'\{[0-9,]+\}'/$1'{N}'/g;
	# binary-upgrade mode carries sequence positions: data, not schema
	$out =~ s/(pg_catalog\.setval\('[^']+', )\d+, (true|false)\)/$1N, B)/g;
	return $out;
}

sub first_difference
{
	my ($a, $b) = @_;
	my @a = split /\n/, $a;
	my @b = split /\n/, $b;
	my @out;
	for my $i (0 .. ($#a > $#b ? $#a : $#b))
	{
		my ($x, $y) = ($a[$i] // '<end>', $b[$i] // '<end>');
		push @out, "line " . ($i + 1) . ":\n  upgraded: $x\n  fresh:    $y" if $x ne $y;
		last if @out >= 5;
	}
	return join("\n", @out) || 'none';
}

my $fresh = dump_schema('fresh');
my $fresh_members = dump_schema('fresh', '--binary-upgrade', '--extension=pg_swarm');
ok($fresh_members =~ /^CREATE TABLE swarm\.messages /m && $fresh_members =~ /^CREATE FUNCTION swarm\.interact\(/m
	  && $fresh_members =~ /^GRANT ALL ON FUNCTION swarm\.simulate\(/m
	  && $fresh_members =~ /^COMMENT ON COLUMN swarm\.messages\.turn /m,
	'upgrade: the binary-upgrade dump holds the extension\'s members');
for my $from (['0.1.0', 'postgres'], ['0.2.0', 'from_0_2_0'], ['0.3.0', 'from_0_3_0'], ['0.4.0', 'from_0_4_0'],
	['0.5.0', 'from_0_5_0'], ['0.6.0', 'from_0_6_0'], ['0.7.0', 'from_0_7_0'])
{
	my ($version, $db) = @$from;
	my $up = dump_schema($db);
	ok($up eq $fresh, "upgrade from $version: pg_dump --schema-only --schema=swarm is the same as a fresh install's")
	  or diag(first_difference($up, $fresh));
	$up = dump_schema($db, '--binary-upgrade', '--extension=pg_swarm');
	ok($up eq $fresh_members,
		"upgrade from $version: every member of the extension (tables, functions, comments, privileges) is the same as a fresh install's")
	  or diag(first_difference($up, $fresh_members));
}

###############################################################################
# 2. Crashes in the middle of conversations
###############################################################################

sql(q{
	TRUNCATE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members;
	SELECT swarm.create_agents(200, 1);
	SELECT swarm.build_friendships(4, 'random', 1);
});

# Starts an interact job and returns (job, conversations, total) once some,
# but not all, of its messages are stored.
sub start_conversations
{
	my ($label) = @_;
	my $job = sql("SELECT swarm.interact('$label', turns => 4)");
	# every agent with a friend opens one conversation
	my ($conv, $total) = split /\|/,
	  sql("SELECT (SELECT count(DISTINCT agent_id) FROM swarm.friendships), total FROM swarm.jobs WHERE id = $job");
	cmp_ok($conv, '>=', 150, "$label: $conv conversations");
	is($total, 4 * $conv, "$label: total is 4 x conversations");
	$node->poll_query_until('postgres',
		"SELECT count(*) >= 150 FROM swarm.messages WHERE job_id = $job", 't')
	  or die "$label: job $job made no progress";
	my $stored = sql("SELECT count(*) FROM swarm.messages WHERE job_id = $job");
	cmp_ok($stored, '<', $total, "$label: interrupted mid-job ($stored of $total messages stored)");
	return ($job, $conv, $total);
}

sub conversations_intact
{
	my ($job, $conv, $label) = @_;
	wait_completed($job, $label);
	my $t = 4 * $conv;
	is(sql("SELECT status, total, succeeded, failed, cancelled FROM swarm.jobs WHERE id = $job"),
		"completed|$t|$t|0|0", "$label: succeeded = total = 4 x $conv conversations");
	is(sql(qq{
		SELECT count(DISTINCT conversation_id),
		       count(*),
		       count(*) FILTER (WHERE conversation_id IS NULL OR turn IS NULL OR to_agent_id IS NULL)
		FROM swarm.messages WHERE job_id = $job}),
		"$conv|$t|0", "$label: $t messages in $conv conversations");
	is(sql(qq{
		SELECT count(*) FROM (
			SELECT conversation_id FROM swarm.messages WHERE job_id = $job
			GROUP BY conversation_id
			HAVING count(*) <> 4 OR array_agg(turn ORDER BY turn) <> '{1,2,3,4}') bad}),
		'0', "$label: every conversation has exactly 4 messages, turns 1..4");
	is(sql(qq{
		SELECT count(*) FROM (
			SELECT conversation_id, turn FROM swarm.messages WHERE job_id = $job
			GROUP BY 1, 2 HAVING count(*) > 1) dup}),
		'0', "$label: no (conversation_id, turn) twice");
	is(sql(qq{
		WITH m AS (SELECT * FROM swarm.messages WHERE job_id = $job)
		SELECT count(*),
		       count(*) FILTER (WHERE b.agent_id <> a.to_agent_id OR b.to_agent_id <> a.agent_id),
		       count(*) FILTER (WHERE b.reply_to IS DISTINCT FROM a.id),
		       count(*) FILTER (WHERE b.id <= a.id)
		FROM m a JOIN m b ON b.conversation_id = a.conversation_id AND b.turn = a.turn + 1}),
		(3 * $conv) . '|0|0|0',
		"$label: speakers alternate, turn t+1 replies to turn t and is stored after it");
	is(sql(qq{
		SELECT count(*) FILTER (WHERE reply_to IS NOT NULL),
		       count(*) FILTER (WHERE agent_id = to_agent_id),
		       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM swarm.friendships f
		                                          WHERE f.agent_id = m.agent_id AND f.friend_id = m.to_agent_id))
		FROM swarm.messages m WHERE job_id = $job AND turn = 1}),
		'0|0|0', "$label: turn 1 opens (no reply_to), between two friends");
	is(sql("SELECT count(*) FROM swarm.requests WHERE job_id = $job"), '0',
		"$label: no request left queued (or failed)")
	  or diag(sql("SELECT string_agg(concat_ws(' ', id, status, turn, attempts, last_error), E'\\n')
	               FROM swarm.requests WHERE job_id = $job"));
}

# 2a. kill -9 the worker: the postmaster resets the cluster and restarts it.
my ($job, $nconv) = start_conversations('interact, kill -9 worker');
my $pid = SwarmTest::worker_pid($node);
$log_offset = -s $node->logfile;
kill 'KILL', $pid;
conversations_intact($job, $nconv, 'interact, kill -9 worker');
ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $log_offset),
	'interact, kill -9 worker: the postmaster saw the worker die');
isnt(SwarmTest::worker_pid($node), $pid, 'interact, kill -9 worker: a new worker took over');

# 2b. the whole server crashes (immediate stop) and starts again.
($job, $nconv) = start_conversations('interact, server crash');
$node->stop('immediate');
$node->start;
conversations_intact($job, $nconv, 'interact, server crash');

###############################################################################
# 3. A crash in the middle of a simulation
###############################################################################

sql(q{
	TRUNCATE swarm.agents, swarm.friendships, swarm.communities, swarm.community_members;
	SELECT swarm.create_agents(100, 1);
	SELECT swarm.build_friendships(4, 'random', 1);
	SELECT swarm.create_communities(ARRAY['a', 'b', 'c'], 50, 'random', 1);
	ALTER SYSTEM SET swarm.max_concurrent = 10;
	SELECT pg_reload_conf();
});
# fewer in flight: a step takes several round trips, so a crash can land inside one
usleep(500_000);

my $sim = sql("SELECT swarm.simulate(3, 'ctx', activity => 0.5, seed => 1)");
my ($per_step, $steps, $sim_total) = split /\|/,
  sql("SELECT (params ->> 'active_per_step')::int, (params ->> 'steps')::int, total FROM swarm.jobs WHERE id = $sim");
is("$per_step|$steps|$sim_total", '50|3|150', 'simulate: 50 active agents per step, 3 steps, 150 posts');

# kill -9 the worker inside step 2 (step 1 stored, step 2 partly), then again
# inside step 3
for my $in_step (2, 3)
{
	my $after = ($in_step - 1) * $per_step + 5;
	$node->poll_query_until('postgres', "SELECT count(*) > $after FROM swarm.messages WHERE job_id = $sim")
	  or die "simulation $sim made no progress";
	my ($stored, $max_step) = split /\|/,
	  sql("SELECT count(*), max(turn) FROM swarm.messages WHERE job_id = $sim");
	cmp_ok($stored, '<', $in_step * $per_step,
		"simulate: kill -9 inside step $in_step ($stored of $sim_total posts stored, last in step $max_step)");
	$pid = SwarmTest::worker_pid($node);
	kill 'KILL', $pid;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker' AND pid <> $pid")
	  or die 'no new pg_swarm worker';
}
wait_completed($sim, 'simulate');

is(sql("SELECT status, total, succeeded, failed, params ->> 'step' FROM swarm.jobs WHERE id = $sim"),
	"completed|150|150|0|3", 'simulate: completed, succeeded = total, at step 3');
is(sql(qq{
	SELECT string_agg(turn || ':' || n, ' ' ORDER BY turn)
	FROM (SELECT turn, count(*) AS n FROM swarm.messages WHERE job_id = $sim GROUP BY turn) s}),
	join(' ', map { "$_:$per_step" } 1 .. $steps), 'simulate: every step has exactly active_per_step posts');
is(sql(qq{
	SELECT count(*) FROM (SELECT turn, agent_id FROM swarm.messages WHERE job_id = $sim
	                      GROUP BY 1, 2 HAVING count(*) > 1) dup}),
	'0', 'simulate: no agent posts twice in one step');
is(sql(qq{
	WITH s AS (SELECT turn, min(id) AS first, max(id) AS last FROM swarm.messages WHERE job_id = $sim GROUP BY turn)
	SELECT count(*) FROM s a JOIN s b ON b.turn = a.turn + 1 WHERE b.first <= a.last}),
	'0', 'simulate: every message of step s+1 has a larger id than every message of step s');
is(sql(qq{
	SELECT count(*) FROM swarm.messages m
	WHERE m.job_id = $sim AND m.reply_to IS NOT NULL
	  AND NOT EXISTS (SELECT 1 FROM swarm.messages r
	                  WHERE r.id = m.reply_to AND r.job_id = $sim AND r.turn < m.turn
	                    AND r.agent_id = m.to_agent_id)}),
	'0', 'simulate: replies answer an earlier step\'s post, addressed to its author');
is(sql("SELECT count(*) FROM swarm.requests WHERE job_id = $sim"), '0', 'simulate: no request left queued (or failed)');
# Each stored post updates its author's memory once, in the same transaction.
is(sql("SELECT sum((swarm.unpack(memory) ->> 'posts')::int) FROM swarm.agent_memory"),
	'150', 'simulate: the agents\' memories count each post once');

is(sql("SELECT count(*) FROM swarm.requests WHERE status = 'queued'"), '0', 'nothing left queued at the end');

$node->stop;
SwarmTest::stop_mock($mock);
undef $mock;
done_testing();
