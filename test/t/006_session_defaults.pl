# Server-wide defaults meant for client sessions -- a 1 ms statement_timeout,
# SERIALIZABLE by default, read-only by default -- do not reach the worker:
# generation, a conversation job and a simulation still complete.  (Without
# the worker's own settings each of them would make every store fail.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my ($mock, $mock_port) = SwarmTest::start_mock('--latency-ms' => 5);
# This test's own sessions opt out of those defaults.
$ENV{PGOPTIONS} = '-c statement_timeout=0 -c default_transaction_read_only=off '
  . '-c default_transaction_isolation=read\ committed';
my $node = SwarmTest::new_node('defaults', $mock_port,
	'statement_timeout = 1', "default_transaction_isolation = 'serializable'",
	'default_transaction_read_only = on');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
	CREATE EXTENSION pg_swarm;
	SELECT swarm.create_agents(300, 1);
	SELECT swarm.build_friendships(4, 'random', 1);
});
my @jobs = (
	sql("SELECT swarm.generate('plain')"),
	sql("SELECT swarm.interact('talk', turns => 3)"),
	sql("SELECT swarm.simulate(3, 'post', activity => 0.5, seed => 1)"));
for my $job (@jobs)
{
	$node->poll_query_until('postgres', "SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or diag("job $job did not complete");
}
is(sql("SELECT string_agg(kind || ':' || status || ':' || (succeeded = total AND failed = 0), ' ' ORDER BY id)
        FROM swarm.jobs"),
	'generate:completed:true interact:completed:true simulate:completed:true',
	'every job completes, every request stored');
is(sql("SELECT count(*) FROM swarm.requests"), 0, 'nothing left in the queue');
unlike(slurp_file($node->logfile), qr/pg_swarm worker: .*(statement timeout|read-only|serializ)/,
	'the worker never hit the client defaults');

$node->stop;
SwarmTest::stop_mock($mock);
done_testing();
