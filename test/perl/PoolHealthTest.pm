# Helpers shared by pool_health's TAP tests.
package PoolHealthTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use Time::HiRes ();

use Exporter 'import';
our @EXPORT = qw(ph_node ph_session ph_set ph_app_session ph_gone ph_alive ph_try_connect ph_close_all
  ph_wait_for ph_http_code ph_http_json ph_http_head ph_agent_line
  ph_haproxy_start ph_hap_command ph_hap_stat ph_hap_is);

# ph_node(name, preload => 1, conf => "extra lines", create => 1, init => {...})
# A started cluster with pool_health preloaded and the extension created
# in "postgres" (the default pool_health.database).
sub ph_node
{
	my ($name, %opt) = @_;
	my $preload = exists $opt{preload} ? $opt{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} || {} });
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pool_health'") if $preload;
	# preload => 0 with conf setting shared_preload_libraries: as it says
	$node->append_conf('postgresql.conf', $opt{conf}) if $opt{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pool_health')
	  unless defined $opt{create} && !$opt{create};
	return $node;
}

# ph_session(node, db => 'postgres', role => undef, on_error_stop => 1):
# a background psql session; returns it and its backend pid.
sub ph_session
{
	my ($node, %opt) = @_;
	my $psql = $node->background_psql($opt{db} || 'postgres',
		on_error_stop => exists $opt{on_error_stop} ? $opt{on_error_stop} : 1,
		$opt{role} ? (extra_params => [ '-U', $opt{role} ]) : ());
	my $pid = $psql->query_safe('SELECT pg_backend_pid()');
	return ($psql, $pid);
}

# ph_app_session(node, application_name, %opt): a session of that
# application; returns it and its pid.
sub ph_app_session
{
	my ($node, $app, %opt) = @_;
	my ($psql, $pid) = ph_session($node, %opt);
	$psql->query_safe("SET application_name = '$app'");
	return ($psql, $pid);
}

# ph_gone(node, pid): wait until the backend has exited.
sub ph_gone
{
	my ($node, $pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
}

# ph_alive(node, pid): is the backend still there?
sub ph_alive
{
	my ($node, $pid) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $pid") eq 't';
}

# ph_set(node, name => value, ...): ALTER SYSTEM and reload, then wait
# until a new session sees the values.
sub ph_set
{
	my ($node, %settings) = @_;
	for my $name (sort keys %settings)
	{
		$node->safe_psql('postgres',
			"ALTER SYSTEM SET $name = '$settings{$name}'");
	}
	$node->reload;
	for my $name (sort keys %settings)
	{
		$node->poll_query_until('postgres',
			"SELECT setting = '$settings{$name}' OR current_setting('$name') = '$settings{$name}' FROM pg_settings WHERE name = '$name'")
		  or die "setting $name did not take effect";
	}
}

# ph_try_connect(node, application_name, role, options): a psql connection
# kept open when admitted (returns undef), else its error text.
# application_name undef: psql's own; options: the startup packet's.
my @open_connections;
sub ph_try_connect
{
	my ($node, $app, $role, $options) = @_;
	my ($stdout, $stderr) = ('', '');
	my $connstr = $node->connstr('postgres') . " user=$role";
	$connstr .= " application_name='$app'" if defined $app;
	$connstr .= " options='$options'" if defined $options;
	# the query comes with -c, nothing is written to psql's input (kept
	# open, empty, to hold the connection): a refusal that ends psql at
	# once leaves no write to fail with a broken pipe
	my $stdin = '';
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $connstr, '-c', "SELECT 'connected'", '-f', '-' ],
		'<', \$stdin, '>', \$stdout, '2>', \$stderr);
	IPC::Run::pump($h) until $stdout =~ /connected/ || !$h->pumpable;
	if ($stdout =~ /connected/)
	{
		push @open_connections, [ $h, \$stdin ];
		return undef;
	}
	$h->finish;
	return $stderr;
}

# ph_close_all(): close the connections ph_try_connect kept open.
sub ph_close_all
{
	for (@open_connections)
	{
		${ $_->[1] } .= "\\q\n";
		$_->[0]->finish;
	}
	@open_connections = ();
}

# ph_wait_for(secs, sub, pause): call sub until it returns true, at most
# secs seconds, pausing pause seconds (default 0.05) between calls;
# returns sub's true value, or undef when time ran out.
sub ph_wait_for
{
	my ($secs, $sub, $pause) = @_;
	my $deadline = Time::HiRes::time() + $secs;
	while (Time::HiRes::time() < $deadline)
	{
		my $r = $sub->();
		return $r if $r;
		Time::HiRes::usleep(($pause // 0.05) * 1_000_000);
	}
	return undef;
}

# ph_http_code(port, path, curl options...): the HTTP status code only
# (as a kubelet reads it) of a request to 127.0.0.1:port; extra curl
# options (-I, -X OPTIONS) pick the method.  '000' if none came.
sub ph_http_code
{
	my ($port, $path, @curl) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', @curl,
		"http://127.0.0.1:$port$path" ], '>', \$out);
	return $out;
}

# ph_http_json(port, path): GET with a JSON body, as Patroni's clients
# read it: (status, decoded body or undef if not JSON, raw body).
sub ph_http_json
{
	my ($port, $path) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', '-w', '\n%{http_code}',
		"http://127.0.0.1:$port$path" ], '>', \$out);
	my ($body, $status) = $out =~ /^(.*)\n(\d+)$/s;
	my $json = eval { decode_json($body) };
	return ($status // '000', $json, $body // '');
}

# ph_http_head(port, path, method): HEAD (curl -I), or with method that
# method (curl -i -X method): (status, status line and headers, whatever
# came after them).
sub ph_http_head
{
	my ($port, $path, $method) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', $method ? ('-i', '-X', $method) : ('-I'),
		"http://127.0.0.1:$port$path" ], '>', \$out);
	my ($headers, $body) = split /\r\n\r\n/, $out, 2;
	my ($status) = ($headers // '') =~ m{^HTTP/\S+ (\d+)};
	return ($status // '000', $headers // '', $body // '');
}

# ph_agent_line(port, send): the HAProxy agent-check's answer to one
# connection to 127.0.0.1:port (what HAProxy reads), sending send first
# if given; undef if nothing came within 2 s.
sub ph_agent_line
{
	my ($port, $send) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 2)
	  or return undef;
	print $sock $send if defined $send;
	my $sel = IO::Select->new($sock);
	my $text = '';
	my $deadline = Time::HiRes::time() + 2;
	while (Time::HiRes::time() < $deadline && $sel->can_read($deadline - Time::HiRes::time()))
	{
		my $n = sysread($sock, my $chunk, 4096);
		last if !$n;
		$text .= $chunk;
	}
	close $sock;
	return $text eq '' ? undef : $text;
}

# ph_haproxy_start(config, global => "lines", defaults => "lines"): a real
# HAProxy in the foreground (-db) running config (its listen sections)
# after a global section with its stats socket (in a new temporary
# directory) and the tests' defaults (mode tcp; timeouts: connect 2s,
# client and server 60s, check 1s), each followed by the extra lines
# given.  Returns (IPC::Run handle, stats socket path, reference to its
# stderr).
sub ph_haproxy_start
{
	my ($config, %opt) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $stats = "$dir/haproxy.sock";
	PostgreSQL::Test::Utils::append_to_file("$dir/haproxy.cfg",
		"global\n    stats socket $stats mode 600 level admin\n" . ($opt{global} // '')
		  . "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n"
		  . "    timeout server 60s\n    timeout check 1s\n" . ($opt{defaults} // '')
		  . $config);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'haproxy', '-db', '-f', "$dir/haproxy.cfg" ], '>', \$out, '2>', \$err);
	return ($h, $stats, \$err);
}

# ph_hap_command(socket, command): HAProxy's answer to one command on its
# stats socket (a path); '' if the socket does not answer.
sub ph_hap_command
{
	my ($socket, $cmd) = @_;
	my $sock = IO::Socket::UNIX->new(Peer => $socket) or return '';
	print $sock "$cmd\n";
	my $text = join '', <$sock>;
	close $sock;
	return $text;
}

# ph_hap_stat(socket): HAProxy's "show stat" on that stats socket, its
# servers (not the FRONTEND and BACKEND rows):
# { "proxy/server" => { field => value } }; {} if the socket does not answer.
sub ph_hap_stat
{
	my ($socket) = @_;
	my @lines = split /\n/, ph_hap_command($socket, 'show stat');
	my @names = split /,/, substr(shift(@lines) // '# ', 2);
	my %stat;
	for (@lines)
	{
		my %row;
		@row{@names} = split /,/;
		next if !defined $row{svname} || $row{svname} =~ /^(FRONTEND|BACKEND)$/;
		$stat{"$row{pxname}/$row{svname}"} = \%row;
	}
	return \%stat;
}

# ph_hap_is(socket, "proxy/server", field, regexp): wait (10 s at most)
# until that server's field in ph_hap_stat matches.
sub ph_hap_is
{
	my ($socket, $server, $field, $want) = @_;
	return ph_wait_for(10, sub { my $s = ph_hap_stat($socket)->{$server}; $s && $s->{$field} =~ $want });
}

1;
