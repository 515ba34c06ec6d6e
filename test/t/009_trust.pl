# Trust between users where the worker or a restart is involved:
#  6. a user's open transaction holding its own job's row (a cancel not yet
#     committed) does not stall the worker: another user's job completes;
# 12. a database-wide search_path that puts someone's schema before
#     pg_catalog runs none of their functions in the worker (a superuser);
# 16. pg_dump of a database with pg_swarm keeps its data: restored into a new
#     database, every agent, friendship, job, request and message is there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 50);
END { SwarmTest::stop_mock($mock) if $mock; }
my $node = SwarmTest::new_node('trust', $mock_port, 'swarm.max_concurrent = 50');
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(q{
	CREATE EXTENSION pg_swarm;
	CREATE ROLE alice IN ROLE swarm_user;
	CREATE ROLE bob IN ROLE swarm_user;
	SELECT swarm.create_agents(200, 1);
	SELECT swarm.build_friendships(4, 'random', 1);
});

sub wait_job
{
	my ($job, $label, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < ($timeout // 60))
	{
		return 1 if sql("SELECT status FROM swarm.jobs WHERE id = $job") =~ /completed|cancelled/;
		sleep 0.1;
	}
	return 0;
}

# 6. alice cancels her running job in a transaction she leaves open.
my $slow = sql(q{SET ROLE alice; SELECT swarm.generate('alice waits', user_template => '[[mock:delay=3000]] {context}')});
$node->poll_query_until('postgres', "SELECT status = 'running' FROM swarm.jobs WHERE id = $slow")
  or die 'alice\'s job did not start';
my $alice = $node->background_psql('postgres');
$alice->query_safe("SET ROLE alice; BEGIN; SELECT swarm.cancel($slow);");
my $t0 = time;
my $bob_job = sql(q{SET ROLE bob; SELECT swarm.generate('bob goes on', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 100))});
ok(wait_job($bob_job, 'bob', 30), sprintf('with alice\'s cancel open, bob\'s job completes (%.1f s)', time - $t0));
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $bob_job"), 100, 'every request of bob\'s job is stored');
$alice->query_safe('COMMIT;');
$alice->quit;
ok(wait_job($slow, 'alice', 30), 'alice\'s job ends once she commits the cancel');
is(sql("SELECT status || ':' || (SELECT count(*) FROM swarm.messages WHERE job_id = $slow) FROM swarm.jobs WHERE id = $slow"),
	'cancelled:0', 'and its late answers, deferred while her transaction held the job, were dropped');

# 12. A schema of someone's with a pg_notify() of its own, first on the
#     database's search_path: the worker must never call it.
sql(q{
	CREATE SCHEMA mal;
	CREATE TABLE mal.evidence (what text);
	CREATE FUNCTION mal.pg_notify(text, text) RETURNS void LANGUAGE sql
		AS $$ INSERT INTO mal.evidence VALUES ('pg_notify ran as ' || current_user) $$;
	CREATE FUNCTION mal.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
		AS $$ INSERT INTO mal.evidence VALUES ('unnest ran as ' || current_user) RETURNING NULL $$;
	GRANT USAGE ON SCHEMA mal TO PUBLIC;
	GRANT INSERT ON mal.evidence TO PUBLIC;
	ALTER DATABASE postgres SET search_path = mal, pg_catalog, public;
});
my $pid = SwarmTest::worker_pid($node);
sql("SELECT pg_terminate_backend($pid)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker' AND pid <> $pid")
  or die 'the worker did not restart';
my $job = sql(q{SELECT swarm.generate('path', agents => ARRAY[1, 2, 3])});
ok(wait_job($job, 'path'), 'a job runs under a database search_path that starts with another schema');
is(sql("SELECT succeeded FROM swarm.jobs WHERE id = $job"), 3, 'its requests are stored');
is(sql("SELECT count(*) FROM mal.evidence"), 0, 'and none of that schema\'s functions ran in the worker');
sql(q{ALTER DATABASE postgres RESET search_path; DROP SCHEMA mal CASCADE;});

# 16. pg_dump and restore keep the data.
my $talk = sql(q{SELECT swarm.interact('for the dump', agents => ARRAY[1, 2, 3])});
ok(wait_job($talk, 'talk'), 'an interaction to dump');
my $fingerprint = q{SELECT concat_ws('/', (SELECT count(*) FROM swarm.agents), (SELECT count(*) FROM swarm.friendships),
	(SELECT count(*) FROM swarm.jobs), (SELECT count(*) FROM swarm.requests), (SELECT count(*) FROM swarm.messages),
	(SELECT md5(string_agg(content, ',' ORDER BY id)) FROM swarm.messages))};
my $before = sql($fingerprint);
my $dump = PostgreSQL::Test::Utils::tempdir() . '/swarm.dump';
command_ok([ $node->installed_command('pg_dump'), '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump of the database');
sql('CREATE DATABASE restored');
command_ok([ $node->installed_command('pg_restore'), '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');
is($node->safe_psql('restored', $fingerprint), $before,
	"restored: agents, friendships, jobs, requests and messages are all there ($before)");
# the restored sequences go on where they were: a new job gets a new id
is($node->safe_psql('restored', "SELECT nextval(pg_get_serial_sequence('swarm.jobs', 'id')) > max(id) FROM swarm.jobs"),
	't', 'restored: identities continue past the restored rows');

done_testing();
