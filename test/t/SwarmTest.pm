# Helpers shared by pg_swarm's TAP tests: a mock endpoint on a free port and a
# node with pg_swarm preloaded and pointed at it.
package SwarmTest;
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;

# start_mock(options...) -> (harness, port); '--port-fixed' => P picks the port
sub start_mock
{
	my (@opts) = @_;
	my $bin = $ENV{SWARM_MOCK} or BAIL_OUT('SWARM_MOCK (path of test/mock/mock_llm) is not set');
	my $port;
	# '--port-fixed' => P: listen on a port chosen earlier
	for (my $i = 0; $i < @opts; $i += 2)
	{
		if ($opts[$i] eq '--port-fixed')
		{
			$port = $opts[ $i + 1 ];
			splice(@opts, $i, 2);
			last;
		}
	}
	$port //= PostgreSQL::Test::Cluster::get_free_port();
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $bin, '--port', $port, '--quiet', @opts ], '>', \$out, '2>', \$err);
	for (1 .. 100)
	{
		$h->pump_nb;
		last if $out =~ /listening/;
		select(undef, undef, undef, 0.05);
	}
	BAIL_OUT("mock did not start: $err") unless $out =~ /listening/;
	return ($h, $port);
}

sub stop_mock
{
	my ($h) = @_;
	$h->signal('TERM');
	$h->finish;
}

# new_node(name, mock_port, extra conf lines...) -> started node
sub new_node
{
	my ($name, $mock_port, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'pg_swarm'",
		"restart_after_crash = on",
		"swarm.database = 'postgres'",
		"swarm.base_url = 'http://127.0.0.1:$mock_port/v1'",
		@conf) . "\n");
	$node->start;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
	  or BAIL_OUT('pg_swarm worker did not start');
	return $node;
}

# find_program(names...) -> the first of them found on PATH (or in the sbin
# directories), or undef
sub find_program
{
	foreach my $name (@_)
	{
		foreach my $dir (split(/:/, $ENV{PATH} // ''), '/usr/sbin', '/sbin')
		{
			return "$dir/$name" if $dir ne '' && -x "$dir/$name" && !-d "$dir/$name";
		}
	}
	return undef;
}

# ---- certificates, made with the openssl command line into a directory ----

my @new_key = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes');

# make_ca(dir, name, common name): dir/name.crt and dir/name.key
sub make_ca
{
	my ($dir, $name, $cn) = @_;
	my $openssl = find_program('openssl') or BAIL_OUT('openssl is not on PATH');
	system_or_bail($openssl, 'req', '-x509', '-new', @new_key,
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.crt", '-days', '2',
		'-subj', "/CN=$cn",
		'-addext', 'basicConstraints = critical, CA:TRUE',
		'-addext', 'keyUsage = critical, keyCertSign, cRLSign');
}

# make_server_cert(dir, name, ca, common name, subjectAltName, serial)
sub make_server_cert
{
	my ($dir, $name, $ca, $cn, $alt_names, $serial) = @_;
	my $openssl = find_program('openssl') or BAIL_OUT('openssl is not on PATH');
	system_or_bail($openssl, 'req', '-new', @new_key,
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.csr", '-subj', "/CN=$cn");
	append_to_file("$dir/$name.ext",
		"basicConstraints = CA:FALSE\n"
		  . "keyUsage = digitalSignature\n"
		  . "extendedKeyUsage = serverAuth\n"
		  . "subjectAltName = $alt_names\n");
	system_or_bail($openssl, 'x509', '-req', '-in', "$dir/$name.csr",
		'-CA', "$dir/$ca.crt", '-CAkey', "$dir/$ca.key", '-set_serial', $serial,
		'-days', '2', '-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt");
}

# ---- an HTTPS front (nginx, a real HTTP/2 server) before a mock ----

# start_tls_front(dir, mock port, cert name) -> { h2 => port, h2_few => port,
# h1 => port, pid => master pid, dir => its directory, log => access log }, or
# undef without nginx: nginx serving dir/<cert>.crt over TLS, with HTTP/2 on
# one port (128 streams per connection), HTTP/2 allowing only 5 streams per
# connection on another and HTTP/1.1 only on the third, proxying to the mock
# over kept-alive HTTP/1.1.  /nginx_status is nginx's stub_status (its "Active connections"
# are the clients' connections).  The access log has a line per request:
# its connection number, protocol, whether its TLS session was resumed
# ("r") and its status.
sub start_tls_front
{
	my ($dir, $mock_port, $cert) = @_;
	my $nginx = find_program('nginx') or return undef;
	my $h2 = PostgreSQL::Test::Cluster::get_free_port();
	my $h2_few = PostgreSQL::Test::Cluster::get_free_port();
	my $h1 = PostgreSQL::Test::Cluster::get_free_port();
	my $d = "$dir/nginx";
	mkdir $d;
	append_to_file("$d/nginx.conf", join("\n",
		'worker_processes 1;',
		# two descriptors per proxied request: raise nginx's own limit
		'worker_rlimit_nofile 16384;',
		"pid $d/nginx.pid;",
		"error_log $d/error.log warn;",
		'events { worker_connections 16384; }',
		'http {',
		"	log_format swarm '\$connection \$server_protocol \$ssl_session_reused \$status';",
		"	access_log $d/access.log swarm buffer=64k flush=100ms;",
		map({ "	${_}_temp_path $d/$_;" } qw(client_body proxy fastcgi uwsgi scgi)),
		'	keepalive_requests 1000000;',
		'	keepalive_timeout 120s;',
		"	ssl_certificate $dir/$cert.crt;",
		"	ssl_certificate_key $dir/$cert.key;",
		'	ssl_session_cache shared:swarm:10m;',
		"	upstream mock { server 127.0.0.1:$mock_port; keepalive 512; }",
		'	server {',
		"		listen 127.0.0.1:$h2 ssl http2;",
		'		http2_max_concurrent_streams 128;',
		'		location = /nginx_status { stub_status; }',
		'		location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }',
		'	}',
		'	server {',
		"		listen 127.0.0.1:$h2_few ssl http2;",
		'		http2_max_concurrent_streams 5;',
		'		location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }',
		'	}',
		'	server {',
		"		listen 127.0.0.1:$h1 ssl;",
		'		location = /nginx_status { stub_status; }',
		'		location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }',
		'	}',
		'}', ''));
	system_or_bail($nginx, '-q', '-p', $d, '-c', "$d/nginx.conf");
	for (1 .. 100)
	{
		last if -s "$d/nginx.pid";
		select(undef, undef, undef, 0.05);
	}
	my $pid = slurp_file("$d/nginx.pid");
	chomp $pid;
	return { h2 => $h2, h2_few => $h2_few, h1 => $h1, pid => $pid, dir => $d, log => "$d/access.log" };
}

sub stop_tls_front
{
	my ($front) = @_;
	kill 'QUIT', $front->{pid} if $front && $front->{pid};
}

sub worker_pid
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'")
	  or die 'no pg_swarm worker';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_swarm worker'");
}

1;
