# Per-application accounting and pool advice: pgbench with known
# concurrency per application_name (6 clients of app-six, 2 of app-two,
# each transaction holding pg_sleep(0.05)) -> exact peaks and transaction
# counts, the median within the histogram's error; a burst shorter than
# the sample interval is caught; an application holding 20 connections
# but never more than 3 in a transaction shows 17 excess connections and
# a smaller suggested pool; three connections all in a transaction for
# an instant are not a saturated pool, three declared
# (pool_health.client_pool_size) and all busy for a second are; time idle
# inside transactions; an
# application_name changed by SET moves the session; terminations and
# refusals counted per group; metrics(), status(); reset; privileges;
# the per-minute history; eviction into (other) at max_groups; a standby
# accounts too; a failed transaction block counts until its ROLLBACK; a
# role churning application_names cannot push another application's
# minutes out of the history (each minute appends at most the ring's
# budget of rows, the rest in (other)'s row), and groups are still found
# after thousands of evictions.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use PoolHealthTest;

my $node = ph_node('accounting',
	init => { allows_streaming => 1 },
	conf => "max_connections = 60\npool_health.sample_interval = '100ms'\npool_health.metrics_min_age = 0");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
});

my $script = "$PostgreSQL::Test::Utils::tmp_check/sleep.sql";
append_to_file($script, "BEGIN;\nSELECT pg_sleep(0.05);\nCOMMIT;\n");

# pgbench(app, clients, transactions each, script): started, not waited for
sub pgbench
{
	my ($app, $clients, $xacts, $file) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', $clients, '-j', $clients, '-t', $xacts, '-f', $file,
		  '-h', $node->host, '-p', $node->port, '-U', 'app', 'postgres' ],
		'>', \$out, '2>', \$err,
		init => sub { $ENV{PGAPPNAME} = $app });
	return sub { $h->finish; return ($out, $err); };
}

sub stat_of
{
	my ($app, $column) = @_;
	return $node->safe_psql('postgres',
		"SELECT $column FROM pool_health.application_stats WHERE application_name = '$app'");
}

# the worker has begun the first minute: what follows is in application_history
ok($node->poll_query_until('postgres',
		"SELECT pool_health.status()->'applications'->>'minute_start' IS NOT NULL"),
	'status(): the accounting has begun its first minute');

# --- known concurrency -----------------------------------------------------------------------
my $six = pgbench('app-six', 6, 20, $script);
my $two = pgbench('app-two', 2, 20, $script);
my ($out6) = $six->();
my ($out2) = $two->();
like($out6, qr/number of transactions actually processed: 120\b/, 'app-six ran 120 transactions');
like($out2, qr/number of transactions actually processed: 40\b/, 'app-two ran 40');

is(stat_of('app-six', 'in_xact_peak'), '6', 'app-six: 6 sessions in a transaction at once (exact)');
is(stat_of('app-two', 'in_xact_peak'), '2', 'app-two: 2');
# (pgbench's own first connection, closed before its clients connect, may
# still be exiting when they log in: 7 at once is what the server held)
like(stat_of('app-six', 'connections_peak'), qr/^[67]$/, 'app-six held 6 connections at once (7 with pgbench\'s first)');
is(stat_of('app-six', 'xacts'), '120', "app-six: xacts is pgbench's transaction count");
is(stat_of('app-two', 'xacts'), '40', 'app-two: 40');
ok( $node->poll_query_until('postgres',
		"SELECT connections = 0 AND in_xact = 0 FROM pool_health.application_stats WHERE application_name = 'app-six'"),
	'nothing held once pgbench is gone (its backends have exited)');
# 50 ms of sleep per transaction: the median is the middle of its bucket,
# within 1/16 of the true duration (50 ms plus a little overhead)
my ($p50, $max) = split /\|/, stat_of('app-six',
	"extract(epoch FROM xact_p50) * 1000, extract(epoch FROM xact_max) * 1000");
ok($p50 >= 50 * (1 - 1 / 16) && $p50 <= 56 * (1 + 1 / 16),
	"app-six: xact_p50 $p50 ms for transactions of 50 ms and a little more");
ok($max >= 50 && $max >= $p50, "xact_max $max ms: at least the sleep and the median");
is( stat_of('app-six',
		"xact_time >= interval '6 seconds' AND xact_p95 >= xact_p50 AND xact_p99 >= xact_p95 AND xact_max >= xact_p99"),
	't', 'total time (120 x 50 ms) and ordered percentiles');

# --- a burst shorter than the sample interval is caught --------------------------------------
ph_set($node, 'pool_health.sample_interval' => '1h');
my $burst_script = "$PostgreSQL::Test::Utils::tmp_check/burst.sql";
append_to_file($burst_script, "BEGIN;\nSELECT pg_sleep(0.3);\nCOMMIT;\n");
my ($burst_out) = pgbench('app-burst', 5, 1, $burst_script)->();
like($burst_out, qr/processed: 5\b/, 'a burst of 5 transactions of 0.3 s, the worker sampling hourly');
is(stat_of('app-burst', 'in_xact_peak'), '5', 'the burst: 5 in a transaction at once, though no sample saw it');
is( $node->safe_psql('postgres',
		"SELECT in_xact_max FROM pool_health.pool_advice WHERE application_name = 'app-burst'"),
	'5', 'and pool_advice sees it in the current minute');
ph_set($node, 'pool_health.sample_interval' => '100ms');

# --- an oversized pool: 20 connections, at most 3 in a transaction ------------------------------
my @pool;
for (1 .. 20)
{
	my ($s) = ph_session($node, role => 'app');
	$s->query_safe("SET application_name = 'app-idle'");
	$s->query_safe('SELECT 1');
	push @pool, $s;
}
is(stat_of('app-idle', 'connections'), '20', 'SET application_name moved 20 sessions to app-idle (at their next transaction)');
$_->query_safe('BEGIN; SELECT 1') for @pool[0 .. 2];
is(stat_of('app-idle', 'in_xact'), '3', '3 of them in a transaction');
$_->query_safe('COMMIT') for @pool[0 .. 2];
my ($cmax, $imax, $suggested, $excess, $advice) = split /\|/, $node->safe_psql('postgres',
	"SELECT connections_max, in_xact_max, suggested_pool_size, excess_connections, advice
	 FROM pool_health.pool_advice WHERE application_name = 'app-idle'");
is("$cmax $imax", '20 3', 'pool_advice: app-idle held 20, at most 3 in a transaction');
is($excess, '17', '17 excess connections');
is($suggested, '4', 'suggested pool: ceil(1.25 x 3) = 4');
like($advice, qr/pool larger than needed: at most 3 of its 20 connections/, "advice: $advice");
my ($six_suggested) = split /\|/, $node->safe_psql('postgres',
	"SELECT suggested_pool_size, advice FROM pool_health.pool_advice WHERE application_name = 'app-six'");
ok($six_suggested >= 6 && $six_suggested < 20,
	"app-six: suggested $six_suggested covers its concurrency, well below app-idle's 20");
# 3 connections, all 3 in a transaction at once for an instant: not
# saturated (a pool that opens connections as it needs them looks the same)
my @sat;
for (1 .. 3)
{
	my ($s) = ph_session($node, role => 'app');
	$s->query_safe("SET application_name = 'app-sat'");
	$s->query_safe('SELECT 1');
	push @sat, $s;
}
$_->query_safe('BEGIN; SELECT 1') for @sat;
$_->query_safe('COMMIT') for @sat;
my ($sat_suggested, $sat_advice) = split /\|/, $node->safe_psql('postgres',
	"SELECT suggested_pool_size, advice FROM pool_health.pool_advice WHERE application_name = 'app-sat'");
is($sat_suggested, '3', 'app-sat: 3 of 3 in a transaction at once for an instant: kept at 3');
unlike($sat_advice, qr/saturated/, "not saturated: $sat_advice");
$_->quit for @sat;
# a pool declared at 3, at its size with all 3 in a transaction for a second: saturated
my @cap;
for (1 .. 3)
{
	my ($s) = ph_session($node, role => 'app');
	$s->query_safe("SET pool_health.client_pool_size = 3; SET application_name = 'app-cap'");
	$s->query_safe('SELECT 1');
	push @cap, $s;
}
$_->query_safe('BEGIN; SELECT 1') for @cap;
sleep 1;
$_->query_safe('COMMIT') for @cap;
my ($cap_declared, $cap_share, $cap_suggested, $cap_advice) = split /\|/, $node->safe_psql('postgres',
	"SELECT declared_pool_size, saturated_share, suggested_pool_size, advice FROM pool_health.pool_advice WHERE application_name = 'app-cap'");
is($cap_declared, '3', 'app-cap: its declared pool size');
ok($cap_share >= 10 && $cap_share <= 100, "app-cap: saturated $cap_share % of the time it existed");
ok($cap_suggested > 3, "app-cap: raised to $cap_suggested");
like($cap_advice, qr/^pool saturated: all 3 connections of its declared pool were in a transaction \d+% of the time.*raise the pool to $cap_suggested/,
	"advice: $cap_advice");
$_->quit for @cap;
like( $node->safe_psql('postgres', "SELECT advice FROM pool_health.pool_advice WHERE kind = 'all'"),
	qr/^the suggested pools sum to \d+ connections, \d+% of the 57 usable/, 'the (all) row: the connection budget');
like( $node->safe_psql('postgres',
		"SELECT pool_health.status()->'applications'->'most_excess_connections'->0->>'application_name'"),
	qr/^app-idle$/, 'status() names the application holding the most excess connections');
like($node->safe_psql('postgres', 'SELECT pool_health.metrics()'),
	qr/^pool_health_application_in_xact_peak\{application_name="app-six"\} 6$/m,
	'metrics(): per-application peaks');

# SET LOCAL moves nothing; a name of 64 bytes or more (stored as 63) is one group
$pool[4]->query_safe("BEGIN; SET LOCAL application_name = 'app-local'; SELECT 1; COMMIT");
$pool[4]->query_safe('SELECT 1');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.application_stats WHERE application_name = 'app-local' AND connections > 0"),
	'0', 'SET LOCAL application_name: the session stays in its group');
my $long = 'app-' . ('x' x 70);
my ($lout, $lerr) = ('', '');
IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres') . " application_name=$long",
				map { ('-c', 'SELECT 1') } 1 .. 5 ], '>', \$lout, '2>', \$lerr)
  or die "psql: $lerr";
ok( $node->poll_query_until('postgres',
		"SELECT connections || ' ' || connections_peak || ' ' || xacts FROM pool_health.application_stats WHERE application_name = left('$long', 63)",
		'0 1 5'),
	'a 74-byte application_name at login: one group, one connection at a time, its 5 transactions');

# --- time idle inside a transaction ----------------------------------------------------------
$pool[3]->query_safe("SET application_name = 'app-slow'");
$pool[3]->query_safe('BEGIN; SELECT 1');
sleep 1;	# the application "works" for a second while its transaction stays open
$pool[3]->query_safe('COMMIT');
my ($idle, $share) = split /\|/, stat_of('app-slow',
	'extract(epoch FROM idle_in_xact_time), idle_in_xact_share');
ok($idle >= 1 && $idle < 5, "a second idle in a transaction: idle_in_xact_time $idle s");
ok($share > 90, "idle_in_xact_share $share %");
$_->quit for @pool;

# --- transactions of one message: each from the end of the one before -------------------------
# (they all have the message's arrival as their start time): the first,
# which the BEGIN makes of the pg_sleep too, about 1 s, the two others
# microseconds, not 1 s each
# (psql -c sends it as one simple-query message)
IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres') . ' application_name=app-message',
	'-c', 'SELECT pg_sleep(1); BEGIN; SELECT 1; COMMIT; BEGIN; SELECT 1; COMMIT; BEGIN; SELECT 1; COMMIT;' ])
  or die 'psql -c failed';
my ($n_xacts, $xact_seconds, $xact_max) = split /\|/, stat_of('app-message',
	'xacts, extract(epoch FROM xact_time), extract(epoch FROM xact_max)');
is($n_xacts, 3, 'three transactions in one message');
ok($xact_seconds >= 1 && $xact_seconds < 1.5 && $xact_max < 1.5,
	"they took $xact_seconds s in all (the longest $xact_max s), not 3 s");

# --- a failed transaction block holds its connection until it is ended ---------------------------
my ($failing) = ph_app_session($node, 'app-fail', role => 'app', on_error_stop => 0);
my $fail = 'SELECT 1 / (SELECT 0)';	# fails when it runs, not when it is planned
$failing->query("BEGIN; $fail;");
$failing->query('SELECT 1');	# refused: the block is aborted
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '1 0',
	'a block that failed is still a transaction ("idle in transaction (aborted)")');
sleep 1;
$failing->query('ROLLBACK');
is(stat_of('app-fail', "in_xact || ' ' || xacts || ' ' || (xact_max >= '1s')"), '0 1 true',
	'its ROLLBACK ends it: one transaction, as long as the block was held');
$failing->query($fail);
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '0 2', 'a failed statement outside a block ends with its error');
$failing->query("BEGIN; $fail;");
$failing->query('ROLLBACK AND CHAIN');
$failing->query($fail);
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '1 3', 'a block chained by ROLLBACK AND CHAIN that fails stays open too');
$failing->query('COMMIT');
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '0 4', 'and its COMMIT (a rollback) ends it');
$failing->query('ROLLBACK AND CHAIN');	# refused outside a block: nothing chains
$failing->query("SELECT 1 \\; $fail");
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '0 6',
	'a ROLLBACK AND CHAIN refused outside a block, then a failed implicit block: both ended');
$failing->query('SELECT 1 \\; BEGIN ISOLATION LEVEL SERIALIZABLE');
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '0 7', 'a BEGIN that fails begins no block');
$failing->query('BEGIN; SELECT 1; COMMIT AND CHAIN;');
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '1 8',
	'COMMIT AND CHAIN: the chained block counts from the commit, idle as it is');
$failing->query('SELECT * FROM no_such_table');
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '1 8', 'it failed (in parse analysis): still open');
$failing->query('ROLLBACK');
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '0 9', 'until its ROLLBACK');
$failing->query("BEGIN; SAVEPOINT a; $fail;");
$failing->query('COMMIT AND CHAIN');	# rolls back, and chains
$failing->query($fail);
is(stat_of('app-fail', "in_xact || ' ' || xacts"), '1 10',
	'a COMMIT AND CHAIN that rolled back a failed savepoint chains a block too');
$failing->query('ROLLBACK');
my $idle_before = stat_of('app-fail', 'extract(epoch FROM idle_in_xact_time)');
$failing->query("BEGIN; $fail;");
sleep 1;
$failing->quit;
ok($node->poll_query_until('postgres',
		"SELECT connections = 0 AND in_xact = 0 AND xacts = 12 AND extract(epoch FROM idle_in_xact_time) >= $idle_before + 1 FROM pool_health.application_stats WHERE application_name = 'app-fail'"),
	'a failed block ended by the session\'s exit is counted when it exits, with its idle time');

# the group's role is the login role, as pg_stat_activity's, not SET SESSION AUTHORIZATION's
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
{
	my ($s) = ph_session($node);
	$s->query_safe("SET SESSION AUTHORIZATION app; SET application_name = 'app-sessauth'; SELECT 1;");
	is(stat_of('app-sessauth', "role || ' ' || connections || ' ' || xacts"), "$superuser 1 1",
		'SET SESSION AUTHORIZATION: counted for the login role');
	$s->quit;
}

# --- terminations and refusals per group --------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('leaks', 'app-leak', '1s');
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('quota', 'app-quota', 1);
});
$node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'in_effect')::bool AND (s->'policies'->>'enabled')::int = 2 FROM pool_health.status() s")
  or die 'policies not in effect';
my ($leaker, $leaker_pid) = ph_session($node, role => 'app', on_error_stop => 0);
$leaker->query_safe("SET application_name = 'app-leak'");
$leaker->query_safe('BEGIN; SELECT 1');
ok(ph_gone($node, $leaker_pid), 'a leaked session of app-leak is ended');
ok($node->poll_query_until('postgres',
		"SELECT terminated = 1 FROM pool_health.application_stats WHERE application_name = 'app-leak'"),
	'terminated = 1 in its group');
is(ph_try_connect($node, 'app-quota', 'app'), undef, 'one app-quota connection admitted');
like(ph_try_connect($node, 'app-quota', 'app'), qr/too many connections for pool_health policy "quota"/,
	'the second refused');
is(stat_of('app-quota', 'refused || \' \' || connections'), '1 1', 'refused = 1 in its group, 1 connection');
ph_close_all();

# --- privileges --------------------------------------------------------------------------------
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT * FROM pool_health.application_stats',
	extra_params => [ '-U', 'app' ]);
like($stderr, qr/permission denied for view application_stats/, 'an ordinary role may not read it');
($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT pool_health.reset_application_stats()',
	extra_params => [ '-U', 'watcher' ]);
like($stderr, qr/permission denied for function reset_application_stats/, 'nor may pg_monitor reset it');
ok( $node->safe_psql('postgres', "SELECT count(DISTINCT role) >= 2 FROM pool_health.application_stats",
		extra_params => [ '-U', 'watcher' ]) eq 't',
	'pg_monitor sees every role');
$node->safe_psql('postgres', q{
	GRANT SELECT ON pool_health.application_stats TO app;
	GRANT EXECUTE ON FUNCTION pool_health.get_application_stats() TO app;
});
is( $node->safe_psql('postgres', "SELECT string_agg(DISTINCT coalesce(role, '(null)'), ',') FROM pool_health.application_stats",
		extra_params => [ '-U', 'app' ]),
	'app', 'granted, an ordinary role sees only its own groups');

# --- bad settings change nothing -------------------------------------------------------------------
($ret, $stdout, $stderr) = $node->psql('postgres', "ALTER SYSTEM SET pool_health.advice_window = '0'");
like($stderr, qr/0 min is outside the valid range for parameter "pool_health.advice_window"/,
	'advice_window 0: rejected');
($ret, $stdout, $stderr) = $node->psql('postgres', "SET pool_health.advice_window = '1h'");
like($stderr, qr/parameter "pool_health.advice_window" cannot be changed now/, 'a session cannot SET it');

# --- reset ---------------------------------------------------------------------------------------
my $before = stat_of('app-six', 'since');
$node->safe_psql('postgres', 'SELECT pool_health.reset_application_stats()');
is(stat_of('app-six', "xacts || ' ' || in_xact_peak || ' ' || (since > '$before')"), '0 0 true',
	'reset: counters to 0, since moved');

# --- the per-minute history --------------------------------------------------------------------
# a group created within the minute: its durations are all the minute's
{
	my ($s) = ph_app_session($node, 'app-new', role => 'app');
	$s->query_safe('SELECT pg_sleep(0.05)') for 1 .. 4;
	$s->quit;
}
ok( $node->poll_query_until('postgres',
		"SELECT sum(xacts) = 4 AND bool_and(xact_p99 BETWEEN '45ms' AND '1s') FROM pool_health.application_history WHERE application_name = 'app-new'"),
	'application_history: the p99 of a group created within the minute');
ok( $node->poll_query_until('postgres',
		"SELECT sum(xacts) = 120 AND max(in_xact_max) = 6 FROM pool_health.application_history WHERE application_name = 'app-six'"),
	'application_history: the minute of app-six (120 transactions, 6 at once)');
is( $node->safe_psql('postgres',
		"SELECT max(connections_max) FROM pool_health.application_history WHERE application_name = 'app-idle'"),
	'20', 'and app-idle held 20');

# --- a standby accounts too --------------------------------------------------------------------
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('accounting_standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->start;
my ($sout, $serr) = ('', '');
IPC::Run::run(
	[ 'pgbench', '-n', '-c', '2', '-t', '10', '-f', $script,
	  '-h', $standby->host, '-p', $standby->port, 'postgres' ],
	'>', \$sout, '2>', \$serr,
	init => sub { $ENV{PGAPPNAME} = 'standby-app' });
is( $standby->safe_psql('postgres',
		"SELECT xacts || ' ' || in_xact_peak FROM pool_health.application_stats WHERE application_name = 'standby-app'"),
	'20 2', 'on a standby: 20 transactions, 2 at once');
$standby->stop;

# --- eviction into (other) at max_groups ------------------------------------------------------------
my $small = ph_node('accounting_small', conf => 'pool_health.max_groups = 3');
for my $i (1 .. 8)
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', $small->connstr('postgres') . " application_name=evict-$i",
					'-c', 'SELECT 1' ], '>', \$o, '2>', \$e)
	  or die "psql: $e";
}
my ($named, $present, $other) = split /\|/, $small->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE NOT coalesce(application_name = '(other)', false)),
	       coalesce(sum(xacts) FILTER (WHERE application_name LIKE 'evict-%'), 0),
	       coalesce(sum(xacts) FILTER (WHERE application_name = '(other)' AND database IS NULL), 0)
	FROM pool_health.application_stats});
ok($named <= 3, "at most max_groups (3) groups by name: $named");
ok($other >= 8 - $present, "the evicted groups' transactions are in (other): $other, $present still by name");
is( $small->safe_psql('postgres',
		"SELECT database IS NULL AND role IS NULL FROM pool_health.application_stats WHERE application_name = '(other)'"),
	't', '(other) has no database or role');

# --- a role churning application_names cannot erase the history of the others -----------------
# An unprivileged role takes a new application_name for every transaction,
# 25 a second, while "billing" works steadily.  The ring holds 10 minutes x
# 32 rows; each closed minute appends at most 32 (the groups that existed
# before the minute first, then the busiest), the rest folded into
# (other)'s row of the minute.  Without the cap, the churner's 256 groups
# a minute overwrite billing's first minute within two closed minutes.
# Every session here stays connected (no group but the churner's is
# evicted), so that the churner's transactions can be counted exactly.
my $churn = ph_node('accounting_churn', create => 0,
	conf => "pool_health.application_history_retention = '10min'\npool_health.sample_interval = '100ms'");
my ($monitor, $billing, $churner);
{
	local $ENV{PGAPPNAME} = 'monitor';
	($monitor) = ph_session($churn);
}
$monitor->query_safe('CREATE EXTENSION pool_health; CREATE ROLE billing LOGIN; CREATE ROLE churner LOGIN');
# mq(sql): a query of the monitor session (no new connection, no new group)
sub mq { return $monitor->query_safe($_[0]); }
my $minute_start = "(pool_health.status()->'applications'->>'minute_start')::timestamptz";
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	last if mq("SELECT $minute_start IS NOT NULL") eq 't';
	usleep(100_000);
}
# billing's first minute: at least 15 s long
sleep(61 - time() % 60) if time() % 60 > 45;
{
	local $ENV{PGAPPNAME} = 'billing';
	($billing) = ph_session($churn, role => 'billing');
	local $ENV{PGAPPNAME} = 'churn-0';
	($churner) = ph_session($churn, role => 'churner');
}
my $first = mq("SELECT extract(epoch FROM $minute_start)");
my ($names, $churner_xacts) = (0, 1);	# its pg_backend_pid()
while (time() < $first + 110)	# until 50 s into the next minute
{
	$churner->query_safe(join '', map { $names++; "SET application_name = 'churn-$names';\nSELECT 1;\n" } 1 .. 10);
	$churner_xacts += 20;
	$billing->query_safe('SELECT 1');
	usleep(400_000);
}
$churner->quit;
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	last if mq("SELECT extract(epoch FROM $minute_start) >= $first + 120") eq 't';
	usleep(100_000);
}
my $closed = "at BETWEEN to_timestamp($first) AND to_timestamp($first + 60)";
is(mq("SELECT count(*) FROM pool_health.application_history WHERE application_name = 'billing' AND $closed"),
	'2', "billing keeps both its closed minutes, while a role took $names application_names");
ok(mq("SELECT (s->'applications'->>'evictions')::int > 0 FROM pool_health.status() s") eq 't',
	'the churn evicted groups');
is(mq("SELECT string_agg(n::text, ' ' ORDER BY at) FROM (SELECT at, count(*) AS n FROM pool_health.application_history WHERE $closed GROUP BY at) m"),
	'32 32', 'each closed minute appended the ring\'s budget of rows, 32, and no more');
is(mq("SELECT count(*) FROM pool_health.application_history WHERE $closed AND application_name = '(other)' AND database IS NULL AND xacts > 0"),
	'2', 'the rest of each minute is in (other)\'s row');
is(mq("SELECT sum(xacts) FROM pool_health.application_history WHERE $closed AND (role = 'churner' OR (application_name = '(other)' AND database IS NULL))"),
	$churner_xacts, "the churner's $churner_xacts transactions are all there, by name or in (other)");
is(mq("SELECT count(*) FROM pool_health.application_history WHERE $closed AND application_name = 'monitor'"),
	'2', 'and the monitor\'s minutes too');
# the group index after thousands of evictions: each group once, and a
# login finds its group
is(mq('SELECT count(*) - count(DISTINCT (database, role, application_name)) FROM pool_health.application_stats'),
	'0', 'no group twice');
my $billing_before = mq("SELECT xacts FROM pool_health.application_stats WHERE application_name = 'billing'");
for (1 .. 3)
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', $churn->connstr('postgres') . ' user=billing application_name=billing',
					'-c', 'SELECT 1' ], '>', \$o, '2>', \$e)
	  or die "psql: $e";
}
is(mq("SELECT count(*) || ' ' || sum(xacts) FROM pool_health.application_stats WHERE application_name = 'billing'"),
	'1 ' . ($billing_before + 3), 'new logins of billing find its group');
$billing->quit;
$monitor->quit;
unlike(slurp_file($churn->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed under the churn');
$churn->stop;

unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$small->stop;
$node->stop;
done_testing();
