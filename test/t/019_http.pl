# Health over HTTP, without a connection slot (pool_health.http_listen):
# /health 200 with a level; every usable slot taken by an ordinary role:
# a new ordinary connection is refused while /health answers 503 within a
# second; /status and /metrics (promtool check metrics; a real Prometheus
# scrapes it, up == 1); 404, 405, 400 for a body; malformed and oversized
# requests, a client sending one byte a second, 16 idle connections from
# one address (the next from it is closed, another address is answered)
# and 200 requests leave it answering, without a line in the log; killed,
# it comes back and serves again; it serves while the main worker
# restarts; a hot standby whose pool_health.database does not exist
# answers too; a standby in recovery without hot_standby (connections
# refused) is 503.  Malformed addresses are rejected.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

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
like($body, qr/^\{"level": "healthy", "reasons": \[\], "usage": \{"max_connections": 12, .*"usable": 9, "used": \d+/,
	'with the level, reasons and usage');
my ($web) = ph_app_session($node, 'web-frontend', role => 'app');
($status, $body) = get('/status');
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
# closed, another address is answered
my @idle;
for (1 .. 16)
{
	push @idle, IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port") or die $!;
}
# (until the worker has accepted all 16)
for (1 .. 50)
{
	($status) = get('/health', 2);
	last if $status eq '000';
	usleep(100_000);
}
is($status, '000', 'over 16 connections from one address: closed');
IPC::Run::run([ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1',
		'--interface', '127.0.0.2', "$base/health" ], '>', \$out);
is($out, '200', 'while another address is answered');
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
	"pool_health.http_listen = '127.0.0.1:$standby_port'\npool_health.database = 'no_such_database'");
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
