# The background worker: it samples into the history, alerts on level
# changes (log and NOTIFY), follows SIGHUP, comes back after being killed,
# its history survives worker restarts and clean server restarts, and it
# keeps sampling when every connection slot is taken.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use PoolHealthTest;

my $node = ph_node('worker', conf => "max_connections = 20");

# --- the worker runs and samples ---------------------------------------------
my ($client) = ph_session($node);    # a client connected while the worker samples
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pool_health' AND application_name = 'pool_health' AND datname = 'postgres'"),
	'one worker, backend_type pool_health, connected to pool_health.database');
ok( $node->poll_query_until('postgres',
		"SELECT status->'worker'->>'mode' = 'running' AND (status->'worker'->>'running')::bool FROM pool_health.status() status"),
	'status() reports the worker running');
ok($node->poll_query_until('postgres', "SELECT count(*) >= 3 FROM pool_health.get_history(resolution => 'raw') WHERE used >= 1"),
	'the history grows');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT level, ',') || ':' || min(usable) || ':' || (max(used) >= 1) FROM pool_health.get_history(resolution => 'raw')"),
	'healthy:17:true', 'history rows carry the level and usage');
is( $node->safe_psql('postgres',
		"SELECT resolution || ':' || samples FROM pool_health.history ORDER BY at LIMIT 1"),
	'raw:1', 'a fresh history has only raw samples');
is( $node->safe_psql('postgres',
		"SELECT count(*) >= 1 AND min(samples) >= 1 AND min(used_min) <= min(used_max) FROM pool_health.get_history(resolution => 'minute')"),
	't', 'the current minute is aggregated');

# --- a level change: logged and notified --------------------------------------
my ($listener) = ph_session($node);
$listener->query_safe('LISTEN pool_health');
my $log_offset = -s $node->logfile;
# 17 usable; the client and the listener are 2 connections: 11.8 %
ph_set($node, 'pool_health.degraded_percent' => '5');
my $notification = '';
for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
{
	$notification = $listener->query_safe('SELECT 1');
	last if $notification =~ /Asynchronous notification/;
	usleep(100_000);
}
like($notification,
	qr/Asynchronous notification "pool_health" with payload "\{"event": "level_change", "old_level": "healthy", "level": "degraded", "reasons": \["usage [\d.]+% is at or above pool_health.degraded_percent \(5%\)"\], "used": \d+, "usable": 17/,
	'a LISTENing session receives the level change as JSON');
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: connection health changed from healthy to degraded\n.*DETAIL:  \d+ of 17 usable connections in use \(/,
		$log_offset),
	'the degradation is logged as a WARNING with the reasons');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pool_health.get_history(resolution => 'raw') WHERE level = 'degraded'"),
	'the history records the degraded level');
$log_offset = -s $node->logfile;
ph_set($node, 'pool_health.degraded_percent' => '70');
ok($node->wait_for_log(qr/LOG:  pool_health: connection health changed from degraded to healthy/, $log_offset),
	'the recovery is logged as LOG');
$listener->quit;
$client->quit;

# --- SIGHUP changes the interval ------------------------------------------------
ph_set($node, 'pool_health.sample_interval' => '100ms');
ok( $node->poll_query_until('postgres',
		"SELECT max(gap) < '400ms' FROM (SELECT at - lag(at) OVER (ORDER BY at) AS gap FROM pool_health.get_history(now() - interval '1 second', NULL, 'raw')) g WHERE gap IS NOT NULL HAVING count(*) >= 5"),
	'after a reload the worker samples every 100 ms');

# --- the worker comes back after being terminated, history intact ---------------
my $old_pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pool_health'");
my $samples_before = $node->safe_psql('postgres', "SELECT count(*) FROM pool_health.get_history(resolution => 'raw')");
my $oldest = $node->safe_psql('postgres', "SELECT min(at) FROM pool_health.get_history(resolution => 'raw')");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pool_health' AND pid <> $old_pid"),
	'the terminated worker is restarted');
is( $node->safe_psql('postgres',
		"SELECT count(*) >= $samples_before AND min(at) = '$oldest' FROM pool_health.get_history(resolution => 'raw')"),
	't', 'the history survives the worker restart');
ok( $node->poll_query_until('postgres',
		"SELECT (status->'worker'->>'starts')::int = 2 AND status->'worker'->>'mode' = 'running' FROM pool_health.status() status"),
	'status() counts the restart');

# --- the history survives a clean server restart -------------------------------------
$log_offset = -s $node->logfile;
$node->restart(mode => 'fast');
ok($node->wait_for_log(qr/pool_health restored \d+ samples and \d+ minutes of history/, $log_offset),
	'the restart logs the restored history');
is( $node->safe_psql('postgres',
		"SELECT min(at) = '$oldest' FROM pool_health.get_history(resolution => 'raw')"),
	't', 'samples from before the restart are still there');
ok($node->poll_query_until('postgres', "SELECT max(at) > now() - interval '1 second' FROM pool_health.get_history(resolution => 'raw')"),
	'and new ones are appended');

# --- a damaged history file is ignored with a warning ------------------------------------
$node->stop('fast');
my $file = $node->data_dir . '/pg_stat/pool_health.history';
ok(-s $file, 'a clean stop writes the history file');
truncate($file, (-s $file) - 100) or die "truncate: $!";
$log_offset = -s $node->logfile;
$node->start;
ok($node->wait_for_log(qr/WARNING:  ignoring pool_health history file "pg_stat\/pool_health.history": it is truncated or has trailing data/, $log_offset),
	'a truncated file is ignored with a warning');
is($node->safe_psql('postgres', "SELECT count(*) FILTER (WHERE at < '$oldest'::timestamptz + interval '1 second') FROM pool_health.get_history(resolution => 'raw')"),
	'0', 'and the history starts empty');
$node->stop('fast');
open(my $fh, '>', $file) or die;
print $fh "garbage" x 100;
close $fh;
$log_offset = -s $node->logfile;
$node->start;
ok($node->wait_for_log(qr/WARNING:  ignoring pool_health history file .*: it was not written by this version of pool_health/, $log_offset),
	'a foreign file is ignored with a warning');
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM pool_health.get_history()"),
	'the worker samples after that');

# --- entries no worker wrote, under a valid checksum -------------------------------------
# The file is rewritten with its checksum recomputed: good minutes and
# samples between bad ones (a minute of 0 samples, whose average divided
# by zero: "floating-point exception"; min > max; avg > max; a negative
# count; the future; out of order; a bad minute in progress).  The bad
# ones are dropped with a WARNING, the good ones restored, and every
# resolution answers.
sub crc32c
{
	my ($bytes) = @_;
	my @table = map {
		my $c = $_;
		$c = ($c & 1) ? (($c >> 1) ^ 0x82F63B78) : ($c >> 1) for 1 .. 8;
		$c
	} 0 .. 255;
	my $crc = 0xFFFFFFFF;
	$crc = ($crc >> 8) ^ $table[ ($crc ^ $_) & 0xFF ] for unpack('C*', $bytes);
	return $crc ^ 0xFFFFFFFF;
}
# PhMinute: at, samples, usable, used_min, used_max, used_sum, active_sum,
# idle_sum, idle_in_transaction_sum, waiting_max, leaked_max, terminated,
# refused, worst_level (80 bytes); PhSample: at, usable, used, active,
# idle, idle_in_transaction, waiting, leaked, terminated, refused, level
# (48 bytes); the header: magic, format, the two sizes, the two counts,
# terminations, refusals, the minute in progress (120 bytes)
sub minute_bytes { pack('q<l<l<l<l<q<q<q<q<l<l<l<l<Cx7', @_) }
sub sample_bytes { pack('q<l<9Cx3', @_) }
my $t0 = $node->safe_psql('postgres',
	"SELECT (extract(epoch FROM date_trunc('minute', now() - interval '10 minutes')) - 946684800)::bigint * 1000000");
my $minute = 60 * 1000000;
$node->stop('fast');
my $bytes = slurp_file($file);
my ($magic, $format, $sample_size, $minute_size, $raw_count, $minute_count, $terminations, $refusals) =
  unpack('L<L<L<L<l<l<Q<Q<', $bytes);
is("$sample_size:$minute_size", '48:80', 'the history file has the layout this test writes');
is(crc32c(substr($bytes, 0, length($bytes) - 4)), unpack('L<', substr($bytes, -4)),
	'and the checksum this test computes');
my $samples_bytes = substr($bytes, 120, $raw_count * 48);
my $last_at = unpack('q<', substr($samples_bytes, -48));
my @minutes = (
	minute_bytes($t0, 10, 17, 1, 3, 20, 5, 5, 0, 0, 0, 0, 0, 0),                  # good
	minute_bytes($t0 + $minute, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),          # 0 samples
	minute_bytes($t0 + 2 * $minute, 10, 17, 4, 2, 30, 0, 0, 0, 0, 0, 0, 0, 0),    # min > max
	minute_bytes($t0 + 3 * $minute, 10, 17, 1, 3, 90, 0, 0, 0, 0, 0, 0, 0, 0),    # avg > max
	minute_bytes($t0 + 4 * $minute, 10, 17, 1, 3, 20, 0, 0, 0, -1, 0, 0, 0, 0),   # negative
	minute_bytes($t0 + 1440 * $minute, 10, 17, 1, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0), # future
	minute_bytes($t0, 10, 17, 1, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0),                  # out of order
	minute_bytes($t0 + 5 * $minute, 20, 17, 2, 6, 80, 10, 10, 0, 1, 1, 2, 0, 1)); # good
my @samples = (
	sample_bytes($last_at + 1000, 17, -5, 0, 0, 0, 0, 0, 0, 0, 0),       # negative
	sample_bytes($last_at + 2000, 17, 3, 1, 1, 1, 0, 0, 0, 0, 9),        # no such level
	sample_bytes($last_at + 86400 * 1000000, 17, 3, 1, 1, 1, 0, 0, 0, 0, 0));    # future
my $body = pack('L<L<L<L<l<l<Q<Q<', $magic, $format, 48, 80, $raw_count + 3, scalar(@minutes),
	$terminations, $refusals)
  . minute_bytes($t0 + 6 * $minute, 5, 17, 4, 2, 15, 0, 0, 0, 0, 0, 0, 0, 0)    # in progress: min > max
  . $samples_bytes . join('', @samples) . join('', @minutes);
open(my $out, '>:raw', $file) or die "$file: $!";
print $out $body . pack('L<', crc32c($body));
close $out;
$log_offset = -s $node->logfile;
$node->start;
my $from = "('2000-01-01 00:00:00+00'::timestamptz + make_interval(secs => $t0 / 1e6))";
for my $resolution ('raw', 'minute', 'auto')
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT count(*) > 0, bool_and(samples >= 1 AND used_min <= used_avg AND used_avg <= used_max AND at <= clock_timestamp()) FROM pool_health.get_history(resolution => '$resolution')");
	is("$ret:$stdout:$stderr", '0:t|t:', "get_history(resolution => '$resolution') answers, every row valid");
}
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT count(*) FROM pool_health.history, pool_health.forecast');
	is("$ret:$stderr", '0:', 'history and forecast answer');
}
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(round(extract(epoch FROM at - $from) / 60) || ':' || samples || ':' || used_min || '-' || used_avg || '-' || used_max || ':' || level, ',' ORDER BY at)
		FROM pool_health.get_history(resolution => 'minute') WHERE at < $from + interval '7 minutes'}),
	'0:10:1-2-3:healthy,5:20:2-4-6:degraded',
	'get_history(minute) answers with the two good minutes only');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:  pool_health history file "pg_stat\/pool_health.history" holds 3 samples and 7 minutes that are not valid/,
	'the entries that are not valid are dropped with a WARNING naming the file and how many');
# (the ring keeps the newest 3600 samples: the 3 bad ones are the newest)
my $kept = $raw_count + 3 > 3600 ? 3597 : $raw_count;
like(slurp_file($node->logfile, $log_offset),
	qr/LOG:  pool_health restored $kept samples and 2 minutes of history/,
	'the valid ones are restored');
unlike(slurp_file($node->logfile, $log_offset), qr/terminated by signal|TRAP:/, 'no process crashed');

# --- DROP and CREATE EXTENSION do not disturb the worker ------------------------------------
my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pool_health'");
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP EXTENSION pool_health');
ok($node->wait_for_log(qr/pool_health: extension "pool_health" is not created in database "postgres"; sampling and waiting for it/, $log_offset),
	'the worker notices the extension is gone');
$node->safe_psql('postgres', 'CREATE EXTENSION pool_health');
ok( $node->poll_query_until('postgres',
		"SELECT status->'worker'->>'mode' = 'running' FROM pool_health.status() status"),
	'and resumes when it is created again');
is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pool_health'"),
	$pid, 'without restarting');

# --- forecast ------------------------------------------------------------------------------------
ph_set($node, 'pool_health.forecast_window' => '20s');
my @rising = map { [ ph_session($node) ] } 1 .. 6;
# the worker samples asynchronously: wait until its history shows the rise
ok( $node->poll_query_until('postgres',
		"SELECT used >= 7 AND samples > 5 AND trend_per_minute > 0 AND time_to_exhaustion > '0' AND exhaustion_at > now() FROM pool_health.forecast"),
	'rising usage gives a positive trend and a time to exhaustion')
  or diag($node->safe_psql('postgres', "SELECT f::text FROM pool_health.forecast f"), "\n",
	$node->safe_psql('postgres', "SELECT string_agg(to_char(at, 'MI:SS.MS') || '=' || used || '/' || usable, ' ' ORDER BY at) FROM pool_health.get_history(now() - interval '20 seconds', NULL, 'raw')"));
$_->[0]->quit for @rising;
ok( $node->poll_query_until('postgres',
		"SELECT time_to_exhaustion IS NULL FROM pool_health.forecast", 't'),
	'no time to exhaustion once usage stops rising');

# --- every usable slot taken: the worker has a slot of its own -------------------------------
# 17 usable slots; the 17 sessions and the queries below (superuser, in the
# reserved slots) leave none free
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
  or die 'the sessions of the forecast test did not end';
my @all = map { [ ph_session($node) ] } 1 .. 17;
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT 1', extra_params => [ '-U', 'app' ]);
like($stderr, qr/FATAL:  remaining connection slots are reserved/,
	'an ordinary role gets no connection: the server is full');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pool_health.get_history(now() - interval '2 seconds', NULL, 'raw') WHERE level = 'exhausted' AND used >= 17"),
	'the worker keeps sampling and records the exhausted level');
is( $node->safe_psql('postgres',
		"SELECT level || ':' || free || ':' || ((s->'worker'->>'last_sample_at')::timestamptz > now() - interval '2 seconds') FROM pool_health.usage, pool_health.status() s"),
	'exhausted:0:true', 'usage says exhausted, with a fresh sample from the worker');
$_->[0]->quit for @all;

$node->stop;
done_testing();
