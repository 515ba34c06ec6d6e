# TLS endpoints.  With swarm.ca_file naming the CA that signed the endpoint's
# certificate, https requests succeed.  A certificate the CA file cannot
# verify, one issued for another host name, or a CA file that cannot be read
# fails each request at once (one attempt, no retry) with a clear error;
# nothing, so no API key either, reaches the endpoint; the worker stays up.
# A reload switches the CA, also when the file is fixed in place.
#
# The endpoint is the mock behind stunnel (Debian package stunnel4), which
# serves two certificates on two ports: one for localhost and 127.0.0.1, one
# for another name.  The CAs and certificates are made here with the openssl
# command line, in this test's temporary directory.
use strict;
use warnings;
use File::Copy;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use lib "$ENV{TESTDIR}/t";
use SwarmTest;

my $stunnel = SwarmTest::find_program('stunnel4', 'stunnel');
my $openssl = SwarmTest::find_program('openssl');
plan skip_all => 'stunnel is not on PATH (Debian package stunnel4)' unless $stunnel;
plan skip_all => 'openssl is not on PATH (Debian package openssl)' unless $openssl;

# ---- certificates: a test CA, an unrelated CA, two server certificates ----

my $tls = PostgreSQL::Test::Utils::tempdir('tls');
SwarmTest::make_ca($tls, 'test_ca', 'pg_swarm test CA');
SwarmTest::make_ca($tls, 'other_ca', 'pg_swarm unrelated CA');
SwarmTest::make_server_cert($tls, 'server', 'test_ca', 'localhost', 'DNS:localhost, IP:127.0.0.1', 2);
SwarmTest::make_server_cert($tls, 'wrong_name', 'test_ca', 'other.invalid', 'DNS:other.invalid', 3);

# ---- the mock, and stunnel in front of it ----

my ($mock, $mock_port) = SwarmTest::start_mock();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $wrong_name_port = PostgreSQL::Test::Cluster::get_free_port();

append_to_file("$tls/stunnel.conf", <<"EOF");
foreground = yes
syslog = no
pid =
debug = 5

[localhost]
accept = 127.0.0.1:$port
connect = 127.0.0.1:$mock_port
cert = $tls/server.crt
key = $tls/server.key

[wrong_name]
accept = 127.0.0.1:$wrong_name_port
connect = 127.0.0.1:$mock_port
cert = $tls/wrong_name.crt
key = $tls/wrong_name.key
EOF

# stunnel logs to a file: a pipe nobody reads would fill up and stall it
my $stunnel_log = "$PostgreSQL::Test::Utils::log_path/003_tls_stunnel.log";
my $tunnel = IPC::Run::start([ $stunnel, "$tls/stunnel.conf" ],
	'<', \undef, '>', $stunnel_log, '2>&1');

sub port_open
{
	my ($p) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p, Proto => 'tcp');
	return 0 unless $s;
	close($s);
	return 1;
}
my $ready = 0;
for (1 .. 200)
{
	last if ($ready = port_open($port) && port_open($wrong_name_port));
	sleep 0.05;
}
BAIL_OUT("stunnel did not start:\n" . slurp_file($stunnel_log)) unless $ready;

# stop stunnel and the mock even when a test dies; keep the exit status
END
{
	local $?;
	if ($tunnel)
	{
		$tunnel->signal('TERM');
		$tunnel->finish;
	}
	SwarmTest::stop_mock($mock) if $mock;
}

# chat requests the mock has received (its /mock/stats counter)
sub mock_requests
{
	my $r = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$mock_port/mock/stats");
	die "mock stats: $r->{status} $r->{content}" unless $r->{success};
	$r->{content} =~ /"requests":(\d+)/ or die "mock stats: $r->{content}";
	return $1;
}

# ---- the node: an https endpoint, the test CA, an API key from a file ----

my $api_key = 'sk-tls-secret-31337';
append_to_file("$tls/api.key", "$api_key\n");
my $node = SwarmTest::new_node('tls', $mock_port,
	"swarm.base_url = 'https://localhost:$port/v1'",
	"swarm.ca_file = '$tls/test_ca.crt'",
	"swarm.api_key_file = '$tls/api.key'",
	'swarm.max_retries = 2',
	'swarm.connect_timeout = 2s',
	'swarm.request_timeout = 10s');
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_swarm;
	INSERT INTO swarm.agents (name) VALUES ('Ada'), ('Grace'), ('Edsger');
});
my $pid = SwarmTest::worker_pid($node);

# reconfigure(setting => value, ...): append, reload, and return once the
# postmaster has read the file (new backends see its load time); the worker
# gets its SIGHUP from the postmaster right after, before it sees a new job.
sub reconfigure
{
	my (%set) = @_;
	my $loaded = $node->safe_psql('postgres', 'SELECT pg_conf_load_time()');
	$node->append_conf('postgresql.conf',
		join('', map { "$_ = '$set{$_}'\n" } sort keys %set));
	$node->reload;
	$node->poll_query_until('postgres', "SELECT pg_conf_load_time() > '$loaded'")
	  or die 'the reload was not seen';
	sleep 0.3;
}

# run_job(label) -> "succeeded|failed|messages|requests failed after 1 attempt|errors"
# once a job for the three agents has ended
sub run_job
{
	my ($label) = @_;
	my $job = $node->safe_psql('postgres',
		"SELECT swarm.generate('$label', agents => ARRAY[1, 2, 3]::bigint[])");
	$node->poll_query_until('postgres',
		"SELECT status = 'completed' FROM swarm.jobs WHERE id = $job")
	  or die "$label: job $job did not complete";
	return $node->safe_psql('postgres', qq{
		SELECT j.succeeded, j.failed,
		       (SELECT count(*) FROM swarm.messages m WHERE m.job_id = j.id),
		       (SELECT count(*) FROM swarm.requests r
		         WHERE r.job_id = j.id AND r.status = 'failed' AND r.attempts = 1),
		       (SELECT string_agg(DISTINCT r.last_error, ' / ') FROM swarm.requests r
		         WHERE r.job_id = j.id)
		FROM swarm.jobs j WHERE j.id = $job});
}

# refused(label, error pattern): a job fails each of its requests after one
# attempt with a matching error, the endpoint sees nothing, the worker stays
sub refused
{
	my ($label, $pattern) = @_;
	my $before = mock_requests();
	my ($ok, $failed, $messages, $once, $errors) = split(/\|/, run_job($label), 5);
	is("$ok|$failed|$messages", '0|3|0', "$label: all three requests failed");
	is($once, 3, "$label: each after one attempt, not retried");
	$errors //= '';
	like($errors, $pattern, "$label: the error says why ($errors)");
	is(mock_requests(), $before, "$label: nothing reached the endpoint");
	is(SwarmTest::worker_pid($node), $pid, "$label: the worker did not restart");
}

sub succeeds
{
	my ($label) = @_;
	my $before = mock_requests();
	is(run_job($label), '3|0|3|0|', "$label: three messages");
	is(mock_requests(), $before + 3, "$label: the endpoint answered three requests");
}

# The right CA: the certificate for localhost verifies.
succeeds('right CA');

# An unrelated CA: the endpoint's certificate does not verify.  (curl must not
# reuse the connection it verified with the previous CA.)
reconfigure('swarm.ca_file' => "$tls/other_ca.crt");
refused('unrelated CA', qr/^transport error: SSL certificate problem: .*issuer/);

# The right CA, but a certificate issued for another name: host name
# verification refuses it.
reconfigure(
	'swarm.ca_file' => "$tls/test_ca.crt",
	'swarm.base_url' => "https://localhost:$wrong_name_port/v1");
refused('certificate for another name', qr/^transport error: .*certificate.*'localhost'/i);

# Back to the right endpoint and CA: a reload is enough.
reconfigure('swarm.base_url' => "https://localhost:$port/v1");
succeeds('right CA again');

# By address: the certificate's IP entry matches 127.0.0.1.
reconfigure('swarm.base_url' => "https://127.0.0.1:$port/v1");
succeeds('by IP address');

# A CA file that does not exist: refused, not sent without verification.
reconfigure('swarm.ca_file' => "$tls/no_such_ca.crt");
refused('missing CA file', qr/^transport error: .*certificate.*no_such_ca\.crt/i);

# Empty: the system's trust store, which does not know the test CA.
reconfigure('swarm.ca_file' => '');
refused('system trust store', qr/^transport error: SSL certificate problem: /);

# A CA file fixed in place (same path, new contents) counts after a reload.
copy("$tls/other_ca.crt", "$tls/rotated_ca.crt") or die "copy: $!";
reconfigure('swarm.ca_file' => "$tls/rotated_ca.crt");
refused('CA file with the wrong CA', qr/^transport error: SSL certificate problem: /);
copy("$tls/test_ca.crt", "$tls/rotated_ca.crt") or die "copy: $!";
reconfigure();
succeeds('CA file fixed in place');

# The API key travelled in the requests but never reached the server log.
unlike(slurp_file($node->logfile), qr/\Q$api_key\E/, 'the API key never reaches the log');

$node->stop;
$tunnel->signal('TERM');
$tunnel->finish;
undef $tunnel;
SwarmTest::stop_mock($mock);
undef $mock;
done_testing();
