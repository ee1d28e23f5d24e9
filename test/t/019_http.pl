# Health over HTTP, without a connection slot (pool_health.http_listen):
# /health 200 with a level; every usable slot taken by an ordinary role:
# a new ordinary connection is refused while /health answers 503 within a
# second; /status and /metrics (promtool check metrics; a real Prometheus
# scrapes it, up == 1); 404, 405, 400 for a body; malformed and oversized
# requests, a client sending one byte a second, 16 idle connections from
# one address (the next from it is answered, the oldest of them gives way;
# another address is answered) and 200 requests leave it answering,
# without a line in the log; a second of checks of /health, /status,
# /metrics, /readyz and /primary back to back costs at most one
# evaluation per 100 ms period (status() counts requests and evaluations).
# Hostile clients: the Host header (loopback names and addresses in any
# form, none at all: answered; another name: 421, also at /status;
# allowed by pool_health.http_allowed_hosts after a reload, or by *;
# malformed or repeated: 400; a NUL byte in a header, a blank before a
# colon or starting a line, a folded line: 400); /health%00x and a NUL
# byte in the target
# are 404; a connection trickling a byte every 250 ms is closed at
# pool_health.http_request_timeout (2 s), not with a 1 min timeout set by
# a reload; while 40 source addresses (127.0.0.10-49) hold 10 trickling
# connections each, every /health check from 127.0.0.1 is answered
# within a second, with the deadline and with only the oldest connection
# giving way (1 min); so is every check from 127.0.0.1 while 40
# connections from 127.0.0.1 itself trickle a byte a second (the oldest
# of that address gives way at 16).  Slow readers: 16 connections that
# pipeline 300 GET /metrics and never read get no more than their small
# send buffers hold (0.6 MB in all, 34 MB before), reset when their
# answers are not taken within the timeout, which frees the kernel's
# queues while they stay open; so are 100 that ask once in HTTP/1.0 and do
# not read.  Killed, it comes back and serves again; it serves
# while the main worker restarts; a hot standby whose pool_health.database
# does not exist answers too, on every address (IPv4 and IPv6) with
# http_listen = ':port'; a standby in recovery without hot_standby
# (connections refused) is 503.  Malformed addresses are rejected.
# libmicrohttpd is mapped by the HTTP worker only.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use IO::Socket::IP;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

# a server that closes a trickling connection must not kill the test
$SIG{PIPE} = 'IGNORE';

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('http',
	init => { allows_streaming => 1 },
	conf => "max_connections = 12\nsuperuser_reserved_connections = 3\npool_health.http_listen = '127.0.0.1:$http_port'\npool_health.sample_interval = '100ms'");
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
my $base = "http://127.0.0.1:$http_port";

# get(path, max_time): (status, body, seconds)
sub get
{
	my ($path, $max_time) = @_;
	my ($out, $err) = ('', '');
	my $started = time;
	IPC::Run::run([ 'curl', '-s', '--max-time', $max_time // 5, '-w', '\n%{http_code}', "$base$path" ],
		'>', \$out, '2>', \$err);
	my $seconds = time - $started;
	my ($body, $status) = $out =~ /^(.*)\n(\d+)$/s;
	return ($status // '000', $body // '', $seconds);
}

ok( $node->poll_query_until('postgres',
		"SELECT (pool_health.status()->'http'->>'pid')::int > 0"),
	'the HTTP worker runs');
my ($status, $body) = get('/health');
is($status, '200', 'GET /health: 200');

# libmicrohttpd is mapped by the HTTP worker only, not by every backend
# at its fork (the login cost it added, with the libraries it needs; some,
# such as GnuTLS, Debian's server maps anyway, through libldap)
sub maps
{
	my ($pid) = @_;
	return join '', grep { /microhttpd/ } split /^/m, slurp_file("/proc/$pid/maps");
}
my $http_worker_pid = $node->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'pid'");
like(maps($http_worker_pid), qr/libmicrohttpd/, 'the HTTP worker has libmicrohttpd mapped');
{
	my ($session, $pid) = ph_session($node);
	is(maps($pid), '', 'a backend does not map libmicrohttpd');
	$session->quit;
}
is(maps($node->safe_psql('postgres', "SELECT pool_health.status()->'worker'->>'pid'")), '',
	'nor does the main worker');
like($body, qr/^\{"level": "healthy", "reasons": \[\], "usage": \{"max_connections": 12, .*"usable": 9, "used": \d+/,
	'with the level, reasons and usage');
my ($web) = ph_app_session($node, 'web-frontend', role => 'app');
# an answer comes from the evaluation of its period, up to 100 ms old
($status, $body) = get('/status');
my $until = time + 10;
while ($body !~ /"top_consumers": \[\{"application_name": / && time < $until)
{
	usleep(20_000);
	($status, $body) = get('/status');
}
is($status, '200', 'GET /status: 200');
like($body, qr/"worker": \{"preloaded": true, "running": true/, 'with the worker state');
like($body, qr/"top_consumers": \[\{"application_name": /, 'top consumers by application_name (no catalog)');
unlike($body, qr/"top_consumers": \[\{"database"/, 'without database and role names');
($status, $body) = get('/metrics');
is($status, '200', 'GET /metrics: 200');
my $file = "$PostgreSQL::Test::Utils::tmp_check/http_metrics.prom";
PostgreSQL::Test::Utils::append_to_file($file, $body);
my ($out, $err) = ('', '');
ok(IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', $file, '>', \$out, '2>', \$err),
	'promtool check metrics accepts it');
is($out . $err, '', 'without a lint warning');
like($body, qr/^pool_health_used_connections \d+$/m, 'with the usage figures');
is((get('/nothing'))[0], '404', 'anything else: 404');
IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', "$base/health" ], '>', \$out);
is($out, '405', 'POST: 405');
IPC::Run::run([ 'curl', '-s', '-w', '\n%{http_code}', '-X', 'GET', '--data', 'x' x 1000, "$base/health" ], '>', \$out);
like($out, qr/^no request body expected\n+400$/, 'GET with a body: 400');
is((get('/health'))[0], '200', 'then GET /health: 200');
foreach my $bad ('[]:9188', ':65536', ':0', 'localhost:', ':99999999999999999999', '::1:9188x')
{
	my ($r, $o2, $e2) = $node->psql('postgres', "ALTER SYSTEM SET pool_health.http_listen = '$bad'");
	like($e2, qr/invalid value for parameter "pool_health.http_listen".*\n.*DETAIL:  The value must be host:port/,
		"a malformed address is rejected: $bad");
}

$web->quit;

# --- every usable slot taken ------------------------------------------------------------
my @held;
for (1 .. 20)
{
	my ($ret, $o, $e) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'app' ]);
	last if $e =~ /remaining connection slots are reserved|too many clients/;
	push @held, $node->background_psql('postgres', extra_params => [ '-U', 'app' ]);
}
my ($ret, $o, $refused) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'app' ]);
like($refused, qr/remaining connection slots are reserved|too many clients/,
	'every usable slot is taken: an ordinary role is refused (' . scalar(@held) . ' sessions held)');
my $seconds;
($status, $body, $seconds) = get('/health', 1);
is($status, '503', 'GET /health answers 503');
ok($seconds < 1, sprintf('within a second (%.3f s)', $seconds));
like($body, qr/"level": "exhausted"/, 'level exhausted');
$_->quit for @held;

# --- Prometheus scrapes it ----------------------------------------------------------------
my $prom_port = PostgreSQL::Test::Cluster::get_free_port();
my $prom_dir = "$PostgreSQL::Test::Utils::tmp_check/prometheus";
mkdir $prom_dir;
PostgreSQL::Test::Utils::append_to_file("$prom_dir/prometheus.yml", qq{global:
  scrape_interval: 1s
scrape_configs:
  - job_name: pool_health
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:$http_port']
});
my ($pout, $perr) = ('', '');
my $prometheus = IPC::Run::start(
	[ 'prometheus', "--config.file=$prom_dir/prometheus.yml",
	  "--storage.tsdb.path=$prom_dir/data", "--web.listen-address=127.0.0.1:$prom_port" ],
	'>', \$pout, '2>', \$perr);
my $up = '';
for (1 .. 300)
{
	IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$prom_port/api/v1/query?query=up%7Bjob%3D%22pool_health%22%7D" ],
		'>', \$up, '2>', \my $ignore);
	last if $up =~ /"value":\[[\d.]+,"1"\]/;
	usleep(100_000);
}
like($up, qr/"value":\[[\d.]+,"1"\]/, 'a real Prometheus scrapes it: up == 1');
$prometheus->kill_kill;

# --- bad clients --------------------------------------------------------------------------
my $log_before = -s $node->logfile;
my $sock = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
print $sock "GARBAGE\r\n\r\n";
my $reply = '';
$sock->recv($reply, 1024);
close $sock;
like($reply, qr/^(HTTP\/1\.[01] 400|)$/m, 'a malformed request: 400, or closed');
$sock = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
print $sock "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " . ('a' x 100_000) . "\r\n\r\n";
$reply = '';
$sock->recv($reply, 1024);
close $sock;
like($reply, qr/^(HTTP\/1\.[01] 4\d\d|$)/, 'an oversized request is refused (4xx or closed)');
# a client that sends one byte a second
my $slow = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
$slow->autoflush(1);
print $slow 'G';
($status, $body, $seconds) = get('/health', 1);
is($status, '200', 'while a client sends one byte a second, /health answers');
ok($seconds < 1, sprintf('at once (%.3f s)', $seconds));
print $slow 'E';
# 16 connections that send nothing, from one address: the next from it is
# answered, the oldest of them gives way; another address is answered too
# (within the 2 s they have)

# closed(socket): whether the server has closed a non-blocking socket:
# 'reset', 'closed' (a FIN), or '' if open (what the server sent before is
# read and dropped)
sub closed
{
	for (;;)
	{
		my $n = sysread($_[0], my $buf, 65536);
		return $!{EAGAIN} ? '' : $!{ECONNRESET} ? 'reset' : 'closed' if !defined $n;
		return 'closed' if $n == 0;
	}
}

my @idle;
for (1 .. 16)
{
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
	$s->blocking(0);
	push @idle, $s;
}
# (until the worker has accepted all 16: the first gives way once it has)
my $gave_way = 0;
for (1 .. 15)
{
	($status) = get('/health', 2);
	$gave_way = closed($idle[0]);
	last if $gave_way;
	usleep(100_000);
}
is($status, '200', 'over 16 connections from one address: the new one is answered');
ok($gave_way, 'and the oldest of that address gave way');
is(scalar(grep { !closed($_) } @idle[ 1 .. 15 ]), 15, 'the other 15 are still open');
IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1',
		'--interface', '127.0.0.2', "$base/health" ], '>', \$out);
is($out, '200', 'another address is answered');
close $_ foreach @idle;
# 200 requests, 10 at a time
my ($burst, $berr) = ('', '');
IPC::Run::run([ 'bash', '-c',
	"seq 200 | xargs -P 10 -I{} curl -s -o /dev/null -w '%{http_code}\\n' --max-time 10 $base/health" ],
	'>', \$burst, '2>', \$berr);
my $ok = () = $burst =~ /^200$/mg;
is($ok, 200, "200 requests, 10 at a time: all answered 200");
($status, $body, $seconds) = get('/status', 1);
is($status, '200', 'then /status still answers');
my $log = slurp_file($node->logfile, $log_before);
unlike($log, qr/pool_health http/, 'bad clients leave no line in the log');
close $slow;

# Every endpoint and probe answers from one evaluation per 100 ms (the
# sample interval here): checks of all of them, back to back for a
# second, cost no more evaluations than the 100 ms periods they span (one
# for each endpoint a period, and one more for the probes, before)
{
	my $http = sub { $node->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'$_[0]'") };
	my ($requests0, $evaluations0) = ($http->('requests'), $http->('evaluations'));
	my @paths = map { ('/health', '/status', '/metrics', '/readyz', '/primary') } 1 .. 20;
	my ($sent, $answered) = (0, 0);
	my $started = time;
	while (time - $started < 1)
	{
		my ($codes, $cerr) = ('', '');
		IPC::Run::run([ 'curl', '-s', '--max-time', '30', '-w', '%{http_code}\n',
				map { ('-o', '/dev/null', "$base$_") } @paths ],
			'>', \$codes, '2>', \$cerr);
		$sent += @paths;
		$answered += () = $codes =~ /^(200|503)$/mg;
	}
	my $periods = (time - $started) / 0.1;
	is($answered, $sent, "$sent checks of /health, /status, /metrics, /readyz and /primary in a second: all answered");
	is($http->('requests') - $requests0, $sent, 'status() counts them');
	my $evaluations = $http->('evaluations') - $evaluations0;
	cmp_ok($evaluations, '<=', int($periods) + 2,
		sprintf('with %d evaluations in %.1f periods of 100 ms', $evaluations, $periods));
	cmp_ok($evaluations, '>=', int($periods / 2), 'and one in most periods');
}

# --- the Host header (DNS rebinding) and paths byte for byte ----------------------------------

# curl_status(path, curl arguments...): (status, body, seconds)
sub curl_status
{
	my ($path, @args) = @_;
	my ($out, $err) = ('', '');
	my $started = time;
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', '-w', '\n%{http_code}', @args, "$base$path" ],
		'>', \$out, '2>', \$err);
	my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;
	return ($code // '000', $body // '', time - $started);
}

# raw(request bytes): the status line of the answer
sub raw
{
	my ($request) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
	print $sock $request;
	my $reply = '';
	$sock->recv($reply, 4096);
	close $sock;
	return $reply =~ /^(HTTP\/1\.[01] \d\d\d)/ ? $1 : "closed: $reply";
}

$log_before = -s $node->logfile;
my ($web2) = ph_app_session($node, 'billing-secret', role => 'app');
for (1 .. 100)
{
	($status, $body) = curl_status('/status');
	last if $body =~ /billing-secret/;
	usleep(100_000);
}
like($body, qr/"top_consumers": \[\{"application_name": "billing-secret"/, '/status names the applications');
foreach my $host ('localhost', 'LOCALHOST:80', 'localhost.', "127.0.0.1:$http_port", '127.0.0.5',
	'[::1]:9188', '[0:0:0:0:0:0:0:1]', '[::FFFF:127.0.0.1]:1')
{
	($status, $body) = curl_status('/status', '-H', "Host: $host");
	is($status, '200', "Host: $host: 200");
}
($status, $body) = curl_status('/status', '-H', 'Host:');
is($status, '200', 'no Host header (HTTP/1.1): 200');
($status, $body) = curl_status('/health', '--http1.0', '-H', 'Host:');
is($status, '200', 'no Host header, HTTP/1.0 as some health checkers send: 200');
foreach my $host ('attacker.example', "attacker.example:$http_port", 'localhost.attacker.example',
	'127.0.0.1.attacker.example', '127.attacker.example', '[2001:db8::1]')
{
	($status, $body) = curl_status('/status', '-H', "Host: $host");
	is($status, '421', "Host: $host: 421");
}
unlike($body, qr/billing-secret|top_consumers/, 'the 421 discloses nothing of /status');
like($body, qr/^misdirected request: .*pool_health.http_allowed_hosts/, 'and names the setting');
is((curl_status('/health', '-H', 'Host: attacker.example'))[0], '421', '/health too');
is((curl_status('/metrics', '-H', 'Host: attacker.example'))[0], '421', '/metrics too');
is(raw("GET /status HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\n\r\n"), 'HTTP/1.1 400',
	'two Host headers: 400');
is(raw("GET /status HTTP/1.1\r\nHost: [::1\r\n\r\n"), 'HTTP/1.1 400', 'a malformed Host: 400');
is(raw("GET /status HTTP/1.1\r\nHost: ::1\r\n\r\n"), 'HTTP/1.1 400', 'an IPv6 address without brackets: 400');
is(raw("GET /status HTTP/1.1\r\nHost: localhost:http\r\n\r\n"), 'HTTP/1.1 400', 'a port that is no number: 400');
# header lines MHD 0.9 reads otherwise than they were sent: a Host cut at
# a NUL byte, not recognised (a blank before the colon, or starting the
# line), or folded onto the next line
foreach my $case (
	[ "Host: localhost\0.attacker.example\r\n", 'a NUL byte in the Host' ],
	[ "Host : attacker.example\r\n", 'a space before the colon' ],
	[ "Host\t: attacker.example\r\n", 'a tab before the colon' ],
	[ " Host: attacker.example\r\n", 'a first header line starting with a space' ],
	[ "Host: localhost\r\n attacker.example\r\n", 'a folded Host' ],
	[ "Accept: */*\r\nHost: localhost\r\n\tattacker.example\r\n", 'a folded Host after another header' ],
	[ "X-A: 1\0\r\nHost: localhost\r\n", 'a NUL byte in another header' ],
	[ ": x\r\nHost: localhost\r\n", 'a header without a name' ])
{
	my ($lines, $what) = @$case;
	is(raw("GET /status HTTP/1.1\r\n$lines\r\n"), 'HTTP/1.1 400', "$what: 400");
}
is(raw("GET /status HTTP/1.1\nHost: localhost\nAccept: */*\n\n"), 'HTTP/1.1 200', 'bare LF line ends: 200');
is(raw("GET /status HTTP/1.1\r\nHost:localhost\r\nX-Empty:\r\nX-Blank: \r\nCookie: a=b; c=d\r\n\r\n"),
	'HTTP/1.1 200', 'no blank after a colon, empty values, a cookie: 200');
is(raw("GET /status HTTP/1.1\r\nX-Big: " . ('a' x 20000) . "\r\nHost: localhost\r\n\r\n"), 'HTTP/1.1 200',
	'a 20 kB header before the Host: 200');
{
	my $sock = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
	print $sock ("GET /health HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n" x 3)
	  . "GET /health HTTP/1.1\r\nHost : attacker.example\r\n\r\n";
	my ($reply, $chunk) = ('', '');
	while ($reply !~ /HTTP\/1\.1 400/ && defined $sock->recv($chunk, 65536) && $chunk ne '')
	{
		$reply .= $chunk;
	}
	close $sock;
	is(join(' ', $reply =~ /HTTP\/1\.1 (\d\d\d) /g), '200 200 200 400',
		'pipelined on one connection: each request checked by itself');
}

# allowed by the setting, after a reload
foreach my $bad ('a.example:9188', 'a b', '*.example', 'a,,b', 'a,', '[a.example]', 'a/b')
{
	my ($r, $o2, $e2) = $node->psql('postgres', "ALTER SYSTEM SET pool_health.http_allowed_hosts = '$bad'");
	like($e2, qr/invalid value for parameter "pool_health.http_allowed_hosts".*\n.*DETAIL:  ".*" is not a host name or address/,
		"http_allowed_hosts rejects \"$bad\"");
}
# addresses whose canonical form is longer than their text (1::2:3:4:5:6:7
# is written 1:0:2:3:4:5:6:7): accepted, and nothing written past the
# parsed list (an assertion-enabled server warns of such a write)
{
	my ($r, $o2, $e2) = $node->psql('postgres',
		"SET client_min_messages = warning; ALTER SYSTEM SET pool_health.http_allowed_hosts = '1::2:3:4:5:6:7, 1::2:3:4:5:1.1.1.1'");
	is($r . $e2, '0', 'http_allowed_hosts: IPv6 addresses longer once written canonically, without a warning');
}
ph_set($node, 'pool_health.http_allowed_hosts' => 'Attacker.Example., [2001:DB8:0::1], 192.0.2.7');
for (1 .. 100)
{
	($status) = curl_status('/status', '-H', 'Host: attacker.example');
	last if $status eq '200';
	usleep(100_000);
}
is($status, '200', 'Host: attacker.example, once listed in pool_health.http_allowed_hosts: 200');
is((curl_status('/status', '-H', "Host: ATTACKER.example.:$http_port"))[0], '200', 'in any case and port form');
is((curl_status('/status', '-H', 'Host: [2001:db8::1]'))[0], '200', 'an IPv6 address, compared as an address');
is((curl_status('/status', '-H', 'Host: 192.0.2.7:80'))[0], '200', 'an IPv4 address');
is((curl_status('/status', '-H', 'Host: other.example'))[0], '421', 'another name: still 421');
ph_set($node, 'pool_health.http_allowed_hosts' => '*');
for (1 .. 100)
{
	($status) = curl_status('/status', '-H', 'Host: other.example');
	last if $status eq '200';
	usleep(100_000);
}
is($status, '200', 'pool_health.http_allowed_hosts = *: any Host is answered');
ph_set($node, 'pool_health.http_allowed_hosts' => '');
for (1 .. 100)
{
	($status) = curl_status('/status', '-H', 'Host: attacker.example');
	last if $status eq '421';
	usleep(100_000);
}
is($status, '421', 'reset: 421 again');
$web2->quit;

is((curl_status('/health%00x'))[0], '404', '/health%00x: 404');
is((curl_status('/health%00'))[0], '404', '/health%00: 404');
is(raw("GET /health\0x HTTP/1.1\r\nHost: localhost\r\n\r\n"), 'HTTP/1.1 404', 'a NUL byte in the target: 404');
is(raw("GET /health\0 HTTP/1.0\r\n\r\n"), 'HTTP/1.1 404', 'a NUL byte ending the target: 404');
is((curl_status('/%68ealth'))[0], '200', '/%68ealth is /health, byte for byte once decoded: 200');
is((curl_status('/health?x=%00'))[0], '200', 'a query string is not part of the path: 200');
is((curl_status('/healthx'))[0], '404', '/healthx: 404');

# --- slow clients: the deadline, and the oldest gives way -----------------------------------------

# A client that trickles bytes: (seconds until the server closed the
# connection, or the seconds it gave up after)
my $trickle_file = "$PostgreSQL::Test::Utils::tmp_check/trickle.pl";
PostgreSQL::Test::Utils::append_to_file($trickle_file, <<'PERL');
# trickle.pl PORT FIRST ADDRESSES CONNECTIONS TICK SECONDS: from ADDRESSES
# source addresses 127.0.0.FIRST..., CONNECTIONS connections each, each
# sending one byte of an endless header every TICK seconds and opening
# again when the server closes it, for SECONDS seconds or until SIGTERM.  Prints "ready"
# once all are open; at the end how many it opened, how many the server
# closed, and the first closing's age.
use strict;
use warnings;
use IO::Socket::INET;
use IO::Socket::IP;
use Time::HiRes qw(time sleep);
my ($port, $first, $addresses, $conns, $tick, $seconds) = @ARGV;
$SIG{PIPE} = 'IGNORE';
$| = 1;
my (@socks, @opened_at);
my ($opened, $closed, $first_age) = (0, 0, -1);
my $end = time + $seconds;
my $ready = 0;
$SIG{TERM} = sub { $end = 0; };
while (time < $end)
{
	for my $i (0 .. $addresses * $conns - 1)
	{
		my $s = $socks[$i];
		if ($s)
		{
			my $buf;
			my $n = sysread($s, $buf, 4096);
			if (defined $n || !$!{EAGAIN} || !defined syswrite($s, 'a'))
			{
				$first_age = time - $opened_at[$i] if $first_age < 0;
				close $s;
				$s = $socks[$i] = undef;
				$closed++;
			}
		}
		if (!$s)
		{
			$s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
				LocalAddr => '127.0.0.' . ($first + int($i / $conns)), Timeout => 2) or next;
			$s->blocking(0);
			syswrite($s, "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
			$socks[$i] = $s;
			$opened_at[$i] = time;
			$opened++;
		}
	}
	print "ready\n" unless $ready++;
	sleep $tick;
}
printf "opened %d closed %d first %.2f\n", $opened, $closed, $first_age;
PERL

# trickle(addresses, connections, tick, seconds): its closing line, once done
sub trickle
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'perl', $trickle_file, $http_port, 10, @_ ], '>', \$out, '2>', \$err);
	return $out;
}

# attack(first address, addresses, connections each, tick): connections
# from 127.0.0.FIRST... trickle a byte every tick seconds while /health is
# checked 16 times from 127.0.0.1, 250 ms apart, once they are open;
# returns the checks' statuses, their slowest time and the attacker's
# closing line
sub attack
{
	my ($first, $addresses, $connections, $tick) = @_;
	my ($out, $err) = ('', '');
	my $attacker = IPC::Run::start(
		[ 'perl', $trickle_file, $http_port, $first, $addresses, $connections, $tick, 60 ],
		'>', \$out, '2>', \$err);
	IPC::Run::pump($attacker) until $out =~ /ready/ || !$attacker->pumpable;
	sleep 1;
	my (@codes, $slowest);
	$slowest = 0;
	for (1 .. 16)
	{
		my ($code, $b, $took) = curl_status('/health', '--max-time', '3');
		push @codes, $code;
		$slowest = $took if $took > $slowest;
		usleep(250_000);
	}
	$attacker->signal('TERM');
	$attacker->finish;
	return (join(' ', @codes), $slowest, $out);
}

my $trickled = trickle(1, 1, 0.25, 6);
my ($age) = $trickled =~ /first ([\d.]+)/;
ok($age > 1.5 && $age < 3.5,
	"a connection trickling a byte every 250 ms is closed at pool_health.http_request_timeout, 2 s ($age s)");
my ($codes, $slowest, $attacker) = attack(10, 40, 10, 0.25);
is($codes, join(' ', ('200') x 16),
	'while 40 addresses x 10 connections trickle bytes, every /health check is answered');
ok($slowest < 1, sprintf('each within a second (slowest %.3f s; attacker: %s)', $slowest, $attacker =~ s/^ready\n|\n$//gr));
# from the checker's own address: 40 connections from 127.0.0.1, a byte a
# second each (at the limit per address, its oldest unfinished one gives
# way to the check)
($codes, $slowest, $attacker) = attack(1, 1, 40, 1);
is($codes, join(' ', ('200') x 16),
	'while 40 connections from the checker\'s own address trickle a byte a second, every /health check from it is answered');
ok($slowest < 1, sprintf('each within a second (slowest %.3f s; attacker: %s)', $slowest, $attacker =~ s/^ready\n|\n$//gr));

# with a long deadline, the oldest unfinished connection gives way
ph_set($node, 'pool_health.http_request_timeout' => '1min');
$trickled = trickle(1, 1, 0.25, 4);
like($trickled, qr/closed 0 /, 'with http_request_timeout = 1min (reloaded), a trickling connection is kept 4 s');
($codes, $slowest, $attacker) = attack(10, 40, 10, 0.25);
is($codes, join(' ', ('200') x 16),
	'with 1min, while 40 x 10 connections trickle bytes, every /health check is answered (the oldest gives way)');
ok($slowest < 1, sprintf('each within a second (slowest %.3f s; attacker: %s)', $slowest, $attacker =~ s/^ready\n|\n$//gr));
($codes, $slowest, $attacker) = attack(1, 1, 40, 1);
is($codes, join(' ', ('200') x 16),
	'with 1min, while 40 connections from the checker\'s own address trickle, every /health check from it is answered');
ok($slowest < 1, sprintf('each within a second (slowest %.3f s; attacker: %s)', $slowest, $attacker =~ s/^ready\n|\n$//gr));
$node->safe_psql('postgres', 'ALTER SYSTEM RESET pool_health.http_request_timeout');
$node->reload;
is((get('/health', 2))[0], '200', 'after the attacks, /health answers');
unlike(slurp_file($node->logfile, $log_before), qr/pool_health http/, 'hostile clients leave no line in the log');

# --- slow readers: what the kernel holds for them -----------------------------------------------

# send_queue(): bytes queued in the server's sockets of the HTTP port
# (sent and not acknowledged, or not sent yet: /proc/net/tcp's tx_queue),
# and how many sockets hold some
sub send_queue
{
	my ($bytes, $sockets) = (0, 0);
	open(my $fh, '<', '/proc/net/tcp') or die "/proc/net/tcp: $!";
	while (<$fh>)
	{
		my @f = split;
		next unless $f[1] && $f[1] =~ /^[0-9A-F]{8}:([0-9A-F]{4})$/ && hex($1) == $http_port;
		next if $f[3] eq '0A';    # the listening socket
		my ($tx) = split /:/, $f[4];
		next if hex($tx) == 0;
		$bytes += hex($tx);
		$sockets++;
	}
	close $fh;
	return ($bytes, $sockets);
}

# slow_readers(connections, requests): connections from 127.0.0.60 with a
# 2 kB receive buffer, each sending the requests at once and never
# reading; they stay open until the caller drops them
sub slow_readers
{
	my ($connections, $requests) = @_;
	my @socks;
	for (1 .. $connections)
	{
		my $s = IO::Socket::INET->new(Proto => 'tcp', LocalAddr => '127.0.0.60') or die $!;
		setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 2048) or die $!;
		$s->connect(Socket::pack_sockaddr_in($http_port, Socket::inet_aton('127.0.0.1'))) or die $!;
		$s->blocking(0);
		syswrite($s, $requests);
		push @socks, $s;
	}
	return @socks;
}

# watch_send_queue(seconds): the largest send queue seen, and after how
# many seconds it was empty (-1: not within that time); /health is
# checked every 250 ms meanwhile: its statuses
sub watch_send_queue
{
	my ($seconds) = @_;
	my ($peak, $peak_sockets, $empty_after, @codes) = (0, 0, -1);
	my $started = time;
	while (time - $started < $seconds)
	{
		my ($bytes, $sockets) = send_queue();
		($peak, $peak_sockets) = ($bytes, $sockets) if $bytes > $peak;
		if ($bytes == 0 && $empty_after < 0 && @codes >= 2)
		{
			$empty_after = time - $started;
			last;
		}
		push @codes, (curl_status('/health', '--max-time', '1'))[0] if @codes < 4;
		usleep(250_000);
	}
	return ($peak, $peak_sockets, $empty_after, join(' ', @codes));
}

# 16 connections pipeline 300 GET /metrics each and never read: the
# server answers as long as their send buffers take it; unbounded, that
# was 2 MB a connection, kept for minutes (in FIN-WAIT-1 after the
# deadline's shutdown)
my $metrics_size = length((get('/metrics'))[1]);
my @readers = slow_readers(16, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n" x 300);
my ($peak, $peak_sockets, $empty_after, $reader_codes) = watch_send_queue(10);
ok($peak > 16 * 2048 && $peak <= 16 * 128 * 1024,
	"16 slow readers of 300 pipelined /metrics ($metrics_size bytes each): the send queue stays bounded, 128 kB a connection at most ($peak bytes in $peak_sockets sockets)");
ok($empty_after >= 0 && $empty_after < 5,
	sprintf('and is freed once their answers are not taken within http_request_timeout, while they stay open (empty after %.1f s)', $empty_after));
is($reader_codes, '200 200 200 200', 'meanwhile /health answers');
is(join(' ', map { closed($_) } @readers), join(' ', ('reset') x 16),
	'the slow readers were reset (not sent a FIN behind what they did not read)');
close $_ for @readers;

# 100 connections ask for /metrics once (HTTP/1.0: closed after the
# answer) and never read: their answers are not left to the kernel
@readers = slow_readers(100, "GET /metrics HTTP/1.0\r\n\r\n");
($peak, $peak_sockets, $empty_after, $reader_codes) = watch_send_queue(10);
ok($peak > 0, "100 slow readers of one /metrics each, HTTP/1.0: queued ($peak bytes in $peak_sockets sockets)");
ok($empty_after >= 0 && $empty_after < 5,
	sprintf('freed within http_request_timeout of the answer, while they stay open (empty after %.1f s)', $empty_after));
is($reader_codes, '200 200 200 200', 'meanwhile /health answers');
close $_ for @readers;

# --- killed, it comes back -----------------------------------------------------------------
my $http_pid = $node->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'pid'");
kill 'TERM', $http_pid;
ok( $node->poll_query_until('postgres',
		"SELECT (pool_health.status()->'http'->>'pid')::int NOT IN (0, $http_pid)"),
	'killed, the HTTP worker is started again');
my $back = '';
for (1 .. 100)
{
	($back) = get('/health', 1);
	last if $back eq '200';
	usleep(100_000);
}
is($back, '200', 'and serves again');

# --- the main worker restarts: HTTP answers all along -----------------------------------------
my $worker_pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pool_health'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker_pid)");
my $answered = 0;
for (1 .. 20)
{
	$answered++ if (get('/health', 1))[0] eq '200';
	usleep(100_000);
}
is($answered, 20, 'while the main worker restarts, every request is answered');

# --- a hot standby, its pool_health.database missing -----------------------------------------
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('http_standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
my $standby_port = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf',
	"pool_health.http_listen = ':$standby_port'\npool_health.database = 'no_such_database'");
$standby->start;
$base = "http://127.0.0.1:$standby_port";
my $standby_status = '';
for (1 .. 100)
{
	($standby_status, $body) = get('/status', 1);
	last if $standby_status eq '200' && $body =~ /"on_standby": true/;
	usleep(100_000);
}
is($standby_status, '200', 'a hot standby without its pool_health.database: /status 200');
like($body, qr/"on_standby": true/, 'and says it is a standby');
is((get('/health', 1))[0], '200', 'its /health answers');
like((get('/metrics', 1))[1], qr/^pool_health_used_connections \d+$/m, 'its /metrics too');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'it is in recovery');
# ':port' is every address: IPv4 and, where the machine has IPv6, IPv6 too
if (IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Listen => 1))
{
	$base = "http://[::1]:$standby_port";
	is((get('/health', 1))[0], '200', "pool_health.http_listen = ':port' answers on ::1 too (one dual-stack socket)");
}
else
{
	ok(!IO::Socket::IP->new(PeerHost => '::1', PeerPort => $standby_port),
		"no IPv6 on this machine: ':port' listens on IPv4 alone");
}

$standby->stop;

# --- in recovery without hot_standby: connections refused, /health 503 --------------------------
my $cold = PostgreSQL::Test::Cluster->new('http_cold');
$cold->init_from_backup($node, 'base', has_streaming => 1);
my $cold_port = PostgreSQL::Test::Cluster::get_free_port();
$cold->append_conf('postgresql.conf', "hot_standby = off\npool_health.http_listen = '127.0.0.1:$cold_port'");
$cold->start(fail_ok => 1);
$base = "http://127.0.0.1:$cold_port";
my $cold_status = '';
for (1 .. 100)
{
	($cold_status, $body) = get('/health', 1);
	last if $cold_status ne '000';
	usleep(100_000);
}
my ($cold_ret, $cold_out, $cold_err) = $cold->psql('postgres', 'SELECT 1');
like($cold_err, qr/the database system is not accepting connections|not yet accepting connections/,
	'a standby without hot_standby refuses connections');
is($cold_status, '503', 'its /health: 503');
like($body, qr/"accepting_connections": false, "refusing_because": "the server is in recovery/, 'and says why');
$cold->stop;

unlike(slurp_file($node->logfile) . slurp_file($standby->logfile) . slurp_file($cold->logfile),
	qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$node->stop;
done_testing();
