# Trust, second round: a hostile user's jobs run beside another user's, and
# what an installation adopts.  Each case failed on 0.3.0.  Endpoint: the
# mock over plain HTTP/1.1 at a fixed 20 ms, never saturated; 'slow' is the
# same mock behind a budget of one request a minute; the 404 is the mock's
# recorded OpenAI reply for an unknown model.
#  1. Fairness (item 4).  mallory's 100 jobs wait on an endpoint that admits
#     one request a minute ('slow', request_deadline 7 days) and a
#     2,000-request job of hers runs on 'default'; alice's one-request job on
#     'default' ends within seconds (0.3.0: still running after 20 s, held
#     60-120 s).  The slow endpoint holds only what it has room for.
#  1b. An owner's jobs take turns too: alice's 10-request job ends while her
#     older 2,000-request job on the same endpoint is still running.
#  2. Quadratic templates (item 2).  mallory's requests with a template of a
#     million '{' take no time worth noticing, and alice's job beside them
#     ends at once (0.3.0: 6.5 s of worker time per request); a 2 MB
#     swarm.system_template set for her session is refused at generate().
#  3. A model that does not exist (item 5): 40 requests of mallory's get a
#     404 model_not_found; 'default' stays 'ok' (0.3.0 opened its breaker
#     and alice's request took 4.4 s).
#  4. A simulation step that cannot be built (item 6) ends its own job,
#     saying why, and alice's job beside it completes; the worker never
#     logs "could not record request".  A seed that would overflow is
#     refused at simulate().
#  4b. swarm.default_roles names who may use 'default' (item 11).
#  5. Install time (items 1, 9), on a second server: a schema swarm owned by
#     the database owner, or granting CREATE to others, is refused (USAGE
#     alone is not: Citus grants it on its workers); a
#     pre-existing swarm_admin that can log in is refused, and a group role
#     of that name is adopted with a warning naming its members.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 20);
END { SwarmTest::stop_mock($mock) if defined $mock; }

my $node = SwarmTest::new_node('hostile', $mock_port,
	'swarm.max_concurrent = 200', 'swarm.batch_size = 100', 'swarm.max_retries = 1',
	'swarm.flush_interval = 20ms');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub as
{
	my ($role, $query) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role; $query");
}
sql(qq{
	CREATE EXTENSION pg_swarm;
	CREATE ROLE alice IN ROLE swarm_user;
	CREATE ROLE mallory IN ROLE swarm_user;
	SELECT swarm.create_agents(2000, 1);
	SELECT swarm.add_endpoint('slow', 'http://127.0.0.1:$mock_port/v1', requests_per_minute => 1);
});

# alice's one-request job on 'default': how long it takes from enqueue to end
sub alice_job_seconds
{
	my ($label) = @_;
	my $t0 = time;
	my $job = as('alice', "SELECT swarm.generate('$label', agents => ARRAY[7])");
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "alice's job ($label) did not end";
	return (time - $t0, $job);
}

###############################################################################
# 1. Fairness
###############################################################################

as('mallory', q{
	SELECT count(swarm.generate('hog', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 200),
	                            endpoints => ARRAY['slow'], request_deadline => '7 days'))
	FROM generate_series(1, 100)});
my $big = as('mallory', "SELECT swarm.generate('mallory on default')");
sleep 1;
my ($took, $job) = alice_job_seconds('alice beside the hog');
cmp_ok($took, '<', 10, sprintf("fairness: alice's job on 'default' ended in %.1f s beside mallory's 100 jobs on an endpoint admitting one request a minute and her 2,000 on 'default'", $took));
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 1, 'fairness: and succeeded');
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $big")
  or die "mallory's job on default did not end";
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $big"), 2000, "fairness: mallory's 2,000 requests on 'default' ran too");
sql("SELECT count(swarm.cancel(id)) FROM swarm.jobs WHERE context = 'hog' AND status IN ('queued', 'running')");

# 1b. An owner's jobs take turns too.  With 4 requests in flight on
# 'default' (room for 2 x 4 + a batch), alice's 2,000-request job runs for
# seconds; her 10-request job enqueued after it is claimed at her next turn
# and ends while the big one is still running (0.7.0 claimed an owner's
# oldest job first: the small one waited for every request of the big one
# to be claimed).
sql("ALTER SYSTEM SET swarm.max_concurrent = 4; SELECT pg_reload_conf();");
sleep 1;
my $long_job = as('alice', "SELECT swarm.generate('alice, long')");
$node->poll_query_until('postgres', "SELECT succeeded > 0 FROM swarm.jobs WHERE id = $long_job")
  or die "alice's long job did not start";
my $short_job = as('alice', "SELECT swarm.generate('alice, short', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 10))");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $short_job")
  or die "alice's short job did not end";
my $long_done = sql("SELECT succeeded FROM swarm.jobs WHERE id = $long_job");
cmp_ok($long_done, '<', 1000,
	"an owner's jobs take turns: her 10-request job ended when her older 2,000-request job had $long_done done");
sql("ALTER SYSTEM RESET swarm.max_concurrent; SELECT pg_reload_conf();");
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $long_job")
  or die "alice's long job did not end";

###############################################################################
# 2. Quadratic templates
###############################################################################

my $t0 = time;
my $braces = as('mallory', q{SELECT swarm.generate('braces', agents => ARRAY[1, 2, 3, 4],
                                                   user_template => repeat('{', 1000000) || '}')});
($took) = alice_job_seconds('alice beside the braces');
cmp_ok($took, '<', 5, sprintf("templates: alice's job ended in %.1f s beside 4 requests with a million '{' each", $took));
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $braces")
  or die 'the braces job did not end';
cmp_ok(time - $t0, '<', 10, sprintf("templates: the million-brace requests were built and sent in %.1f s", time - $t0));
my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT set_config('swarm.system_template', repeat('{', 2000000) || '}', false);
	 SELECT swarm.generate('big default template', agents => ARRAY[1]);");
like($err, qr/prompt too large: 2000\d+ bytes of context and templates/,
	'templates: a 2 MB swarm.system_template counts against swarm.max_prompt_bytes');

###############################################################################
# 3. A model that does not exist
###############################################################################

my $nomodel = as('mallory', q{SELECT swarm.generate('[[mock:fixture=openai_404_model_not_found]] hi',
                                                    model => 'no-such-model',
                                                    agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 40))});
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $nomodel")
  or die 'the no-such-model job did not end';
is(sql("SELECT failed FROM swarm.jobs WHERE id = $nomodel"), 40, 'no such model: 40 requests failed with the 404');
is(sql("SELECT state FROM swarm.endpoint_status WHERE endpoint = 'default'"), 'ok',
	"no such model: 'default' stays ok (its breaker did not open)");
($took) = alice_job_seconds('alice after the 404s');
cmp_ok($took, '<', 3, sprintf("no such model: alice's next request ended in %.1f s", $took));

###############################################################################
# 4. A simulation step that cannot be built
###############################################################################

($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT swarm.simulate(3, activity => 0.05, seed => 9223372036853275807)");
like($err, qr/seed must be between/, 'simulate: a seed that would overflow is refused');
sql("SELECT swarm.build_friendships(3, 'random', 1)");
my $log_offset = -s $node->logfile;
# a corrupted row (as only a superuser could write it) makes step 2 fail;
# corrupted in the transaction that enqueues step 1, before the worker can
# answer it and the step builder build step 2
my $sim = sql(q{
	BEGIN;
	SET LOCAL ROLE mallory;
	CREATE TEMP TABLE broken_sim ON COMMIT DROP AS SELECT swarm.simulate(3, activity => 0.05, seed => 7) AS id;
	RESET ROLE;
	UPDATE swarm.jobs SET params = jsonb_set(params, '{seed}', '9223372036854775807')
	WHERE id = (SELECT id FROM broken_sim);
	SELECT id FROM broken_sim;
	COMMIT;});
my $beside = as('alice', "SELECT swarm.generate('alice beside the broken step',
                                                 agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 300))");
$node->poll_query_until('postgres', "SELECT status <> 'running' FROM swarm.jobs WHERE id = $sim")
  or die 'the broken simulation did not end';
like(sql("SELECT status || ': ' || coalesce(error, '') FROM swarm.jobs WHERE id = $sim"),
	qr/^cancelled: step 2 could not be built: .*out of range/, 'simulate: the step that cannot be built ends its job, saying why');
$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $beside")
  or die "alice's job beside the broken step did not end";
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $beside"), 300, "simulate: alice's 300 requests beside it all stored");
unlike(slurp_file($node->logfile, $log_offset), qr/could not record request/,
	'simulate: the worker never failed to record a request');

###############################################################################
# 4b. Who may use 'default' (item 11): swarm.default_roles
###############################################################################

sql(q{ALTER SYSTEM SET swarm.default_roles = 'alice'; SELECT pg_reload_conf();});
$node->poll_query_until('postgres', "SELECT current_setting('swarm.default_roles') = 'alice'")
  or die 'swarm.default_roles was not reloaded';
($ret, $out, $err) = $node->psql('postgres', "SET ROLE mallory; SELECT swarm.generate('mine', agents => ARRAY[1])");
like($err, qr/permission denied for endpoint default/, "default_roles: mallory may no longer use 'default'");
($took) = alice_job_seconds('alice granted default');
cmp_ok($took, '<', 5, "default_roles: alice, named in it, still may");
sql(q{ALTER SYSTEM RESET swarm.default_roles; SELECT pg_reload_conf();});

###############################################################################
# 5. Install time, on a server of its own
###############################################################################

my $other = SwarmTest::new_node('install', $mock_port);
sub osql { my ($db, $q) = @_; return $other->psql($db, $q); }
$other->safe_psql('postgres', q{
	CREATE ROLE dbowner LOGIN;
	CREATE DATABASE owned OWNER dbowner;
	CREATE DATABASE granted;
});
$other->safe_psql('owned', 'SET ROLE dbowner; CREATE SCHEMA swarm;');
($ret, $out, $err) = osql('owned', 'CREATE EXTENSION pg_swarm');
like($err, qr/schema "swarm" already exists and belongs to dbowner, who is not a superuser/,
	"install: a schema swarm of the database owner's is refused");
$other->safe_psql('owned', 'DROP SCHEMA swarm; CREATE EXTENSION pg_swarm;');
is($other->safe_psql('owned', "SELECT r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE nspname = 'swarm'"),
	't', 'install: without it, the extension makes its schema, owned by a superuser');
$other->safe_psql('granted', 'CREATE SCHEMA swarm; GRANT CREATE ON SCHEMA swarm TO dbowner;');
($ret, $out, $err) = osql('granted', 'CREATE EXTENSION pg_swarm');
like($err, qr/lets other roles create in it/, 'install: a schema swarm that grants CREATE to others is refused');
$other->safe_psql('granted', 'REVOKE CREATE ON SCHEMA swarm FROM dbowner; GRANT USAGE ON SCHEMA swarm TO dbowner;');
($ret, $out, $err) = osql('granted', 'CREATE EXTENSION pg_swarm');
is($ret, 0, 'install: one that grants only USAGE (as Citus makes it on its workers) is adopted');

my $third = SwarmTest::new_node('roles', $mock_port);
$third->safe_psql('postgres', "CREATE ROLE swarm_admin LOGIN PASSWORD 'known'; CREATE ROLE eve LOGIN;");
($ret, $out, $err) = $third->psql('postgres', 'CREATE EXTENSION pg_swarm');
like($err, qr/role swarm_admin already exists, and can log in/, 'install: a swarm_admin that can log in is refused');
$third->safe_psql('postgres', 'ALTER ROLE swarm_admin NOLOGIN PASSWORD NULL; GRANT swarm_admin TO eve;');
($ret, $out, $err) = $third->psql('postgres', 'CREATE EXTENSION pg_swarm');
is($ret, 0, 'install: a group role swarm_admin is adopted');
like($err, qr/WARNING:  pg_swarm adopts the existing role swarm_admin.*\n.*Its members \(eve\) now see and may cancel every user's jobs/,
	'install: ... with a warning naming its members');

done_testing();
