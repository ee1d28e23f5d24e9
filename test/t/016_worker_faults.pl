# Worker faults and the audit's privacy.
#  7. pool_health.forecast on flat usage: no error (the trend is flat, not
#     an overflowing time to exhaustion).
#  8. the disk is full when the history is written at shutdown: the
#     server stops cleanly (the file is closed once), and starts again.
#  9. pool_health.database is a template (template1: CREATE DATABASE must
#     keep working) or refuses connections (template0): the worker samples
#     without a database, no restart loop.
# 10. a pg_signal_backend member without pg_read_all_stats does not read
#     other roles' query text or client address through a dry run.
# 11. an ordinary role's dry runs cannot push the worker's records out of
#     recent_actions.
# 15. usage_percent stays at most 100 when superusers use the reserved
#     slots (shown as reserved_used).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('faults2', conf => "max_connections = 12\nsuperuser_reserved_connections = 3\npool_health.sample_interval = '50ms'\npool_health.audit_memory = 10\npool_health.forecast_window = '10s'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE other LOGIN;
	CREATE ROLE signaller LOGIN;
	GRANT pg_signal_backend TO signaller;
});

# --- 7. forecast on flat usage ------------------------------------------------------------
# one session asks, and nothing connects meanwhile: once the 10 s window
# holds only samples taken since, usage is exactly flat
# (3 sessions: with a used of 1 the least-squares sums are exact, with 3
# rounding can leave a tiny positive slope)
my @flat = map { (ph_session($node))[0] } 1 .. 2;
my $asker = $node->background_psql('postgres');
my $since = $asker->query_safe('SELECT clock_timestamp()');
# (polled from the same session: a new connection would break the flat line)
is( $asker->query_safe(qq{
		DO \$\$
		BEGIN
		    FOR i IN 1 .. 3000 LOOP
		        EXIT WHEN (SELECT window_start > '$since' AND samples > 100 FROM pool_health.forecast);
		        PERFORM pg_sleep(0.01);
		    END LOOP;
		END \$\$;
		SELECT window_start > '$since' FROM pool_health.forecast;}),
	't', 'the forecast window holds only flat usage');
my $answers = $asker->query_safe(
	join('', map { "SELECT coalesce(time_to_exhaustion::text, 'null') || ':' || trend_per_minute FROM pool_health.forecast;\n" } 1 .. 30));
my @answers = split /\n/, $answers;
is(scalar(grep { $_ eq 'null:0.000' } @answers), 30,
	'forecast answers 30 times over flat usage: no trend, no time to exhaustion')
  or note("answers: @answers");
$asker->quit;
$_->quit for @flat;

# --- 15. superusers in the reserved slots ---------------------------------------------------
# 12 slots, 3 reserved: 9 usable; the test's own connection plus 10 more
my @held = map { (ph_session($node))[0] } 1 .. 10;
is( $node->safe_psql('postgres', 'SELECT usage_percent || \':\' || reserved_used || \':\' || level FROM pool_health.usage'),
	'100.0:2:exhausted', 'usage_percent is 100, the 2 sessions in reserved slots are shown apart');
like($node->safe_psql('postgres', 'SELECT pool_health.metrics()'), qr/^pool_health_usage_ratio 1$/m,
	'the usage ratio is 1');
$_->quit for @held;

# --- 10. no details through a dry run -------------------------------------------------------
my ($other, $other_pid) = ph_app_session($node, 'other-app', role => 'other');
$other->query_safe("SELECT 'secret query text'");
$node->poll_query_until('postgres', "SELECT idle_for > interval '100ms' FROM pool_health.sessions WHERE pid = $other_pid");
is( $node->safe_psql('postgres',
		"SELECT pid || ':' || query || ':' || coalesce(client_addr::text, 'null') || ':' || coalesce(state, 'null') FROM pool_health.terminate_idle('10ms', dry_run => true) WHERE pid = $other_pid",
		extra_params => [ '-U', 'signaller' ]),
	"$other_pid:<insufficient privilege>:null:null",
	'a pg_signal_backend member sees the session it may end, not its query or address');
like( $node->safe_psql('postgres', "SELECT query FROM pool_health.terminations WHERE pid = $other_pid"),
	qr/secret query text/, 'the audit table keeps the details, for those who may read it');
$other->quit;

# --- 11. dry runs cannot push the worker's records out ----------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('leaks', 'leaky%', '200ms')});
my ($leaker, $leaker_pid) = ph_app_session($node, 'leaky-1', role => 'app', on_error_stop => 0);
$leaker->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $leaker_pid), 'the worker ends a leak');
my ($idler, $idler_pid) = ph_app_session($node, 'idler', role => 'app');
$node->poll_query_until('postgres', "SELECT idle_for > interval '50ms' FROM pool_health.sessions WHERE pid = $idler_pid");
my $flood = join('', map { "SELECT count(*) FROM pool_health.terminate_idle('10ms', dry_run => true);\n" } 1 .. 100);
$node->safe_psql('postgres', $flood, extra_params => [ '-U', 'app' ]);
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE source = 'worker' AND pid = $leaker_pid) || ':' || count(*) FILTER (WHERE requested_by = 'app') FROM pool_health.recent_actions"),
	"1:10", "after 100 dry runs of an ordinary role, recent_actions still holds the worker's record (10 of the calls)");
$idler->quit;

# --- 8. the disk is full at shutdown ------------------------------------------------------------
# the history file's temporary name is a link to /dev/full: every write
# fails when the file is closed
my $tmp = $node->data_dir . '/pg_stat/pool_health.history.tmp';
symlink('/dev/full', $tmp) or die "symlink: $!";
my $stopped = $node->stop('fast', fail_ok => 1);
ok($stopped, 'pg_ctl stop succeeds');
like(slurp_file($node->logfile), qr/LOG:  could not write pool_health history file ".*pool_health.history.tmp": No space left on device/,
	'the failed write is logged');
unlike(slurp_file($node->logfile), qr/double free|terminated by signal|PANIC/, 'nothing crashed');
ok(!-e $tmp, 'the temporary file is removed');
$node->start;
is($node->safe_psql('postgres', 'SELECT count(*) >= 0 FROM pool_health.history'), 't', 'the server starts again');
$node->stop;

# --- 9. pool_health.database is a template --------------------------------------------------
for my $template ('template1', 'template0')
{
	my $t = ph_node("tmpl_$template", conf => "pool_health.database = '$template'");
	ok( $t->poll_query_until('postgres',
			"SELECT status->'worker'->>'mode' = 'database not usable' AND (status->'worker'->>'samples')::int >= 5 FROM pool_health.status() status"),
		"with pool_health.database = $template the worker samples without it");
	is($t->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pool_health' AND datname IS NOT NULL"),
		'0', 'connected to no database');
	my ($ret, $out, $err) = $t->psql('postgres', 'CREATE DATABASE created_meanwhile');
	is($ret, 0, 'CREATE DATABASE works') or note($err);
	my $starts = $t->safe_psql('postgres', "SELECT status->'worker'->>'starts' FROM pool_health.status() status");
	ok($starts <= 2, "no restart loop ($starts starts)");
	like(slurp_file($t->logfile), qr/pool_health: database "$template" is a template or does not allow connections; sampling without it/,
		'it says why');
	$t->stop;
}
done_testing();
