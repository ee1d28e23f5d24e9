# Policies enforced by the worker with real sessions: timely termination
# with an audit row, bystanders untouched, dry run, safety exclusions,
# policy changes without restart, the re-check that spares a session that
# moved on, blocking and transaction timeouts; the upgrade window (this
# library on an extension installed at 1.1 or 1.2: rows with that table's
# columns, a WARNING at the worker's start; after the update, a session
# ended in the window is in its role's my_terminations once).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('enforce', conf => "max_connections = 40");
$node->safe_psql('postgres', q{
	CREATE TABLE t (i int);
	CREATE ROLE app LOGIN;
	CREATE ROLE ops LOGIN;
	GRANT ALL ON t TO app, ops;
});

# a policy added while running applies without restart
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, role, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'app', 'web%', '2s')});

# --- a leaked session is ended within a second of its deadline, audited ----
my ($bystander, $bystander_pid) = ph_app_session($node, 'batch', role => 'app');
$bystander->query_safe('BEGIN; SELECT 1;');
my ($leaker, $leaker_pid) = ph_app_session($node, 'web-1', role => 'app', on_error_stop => 0);
$leaker->query_safe("BEGIN; SELECT 'leaking';");
my $last_query = $node->safe_psql('postgres', "SELECT query FROM pg_stat_activity WHERE pid = $leaker_pid");
ok(ph_gone($node, $leaker_pid), 'the leaked web session is terminated');
is( $node->safe_psql('postgres', qq{
	SELECT count(*) || ':' || min(policy) || ':' || min(action) || ':' || bool_and(success) || ':' || bool_and(NOT dry_run)
	    || ':' || min(source) || ':' || min(application_name) || ':' || (min(query) = \$q\$$last_query\$q\$)
	FROM pool_health.terminations WHERE pid = $leaker_pid}),
	"1:web:terminate:true:true:worker:web-1:true",
	'exactly one audit row, with the policy, the action and the last query');
is( $node->safe_psql('postgres',
		"SELECT limit_name || ':' || (role_id = 'app'::regrole) FROM pool_health.terminations WHERE pid = $leaker_pid"),
	'idle_in_transaction_timeout:true', 'the row names the limit and the role by OID');
my $lateness = $node->safe_psql('postgres', qq{
	SELECT extract(epoch FROM at - (state_change + interval '2s'))
	FROM pool_health.terminations WHERE pid = $leaker_pid});
ok($lateness >= 0 && $lateness < 1, "terminated ${lateness}s after the deadline (within a second)");
like( $node->safe_psql('postgres', "SELECT reason FROM pool_health.terminations WHERE pid = $leaker_pid"),
	qr/^idle_in_transaction_timeout 00:00:02 exceeded: idle in transaction for 00:00:02/,
	'the reason names the limit, its value and the observed age');
ok(ph_alive($node, $bystander_pid), 'the idle-in-transaction session of another application is untouched');
like(slurp_file($node->logfile),
	qr/LOG:  pool_health: terminated session $leaker_pid \(role "app", database "postgres", application "web-1"\): idle_in_transaction_timeout/,
	'the termination is in the server log');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.recent_actions WHERE pid = $leaker_pid AND success"),
	'1', 'and in the in-memory list');
ok( $node->poll_query_until('postgres',
		"SELECT (s->'worker'->>'terminations')::int >= 1 FROM pool_health.status() s"),
	'status() counts the termination');
$bystander->query_safe('ROLLBACK');

# --- dry run: audited, not killed, once ------------------------------------------------
$node->safe_psql('postgres', "UPDATE pool_health.policies SET dry_run = true WHERE name = 'web'");
my ($dry, $dry_pid) = ph_app_session($node, 'web-2', role => 'app');
$dry->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $dry_pid AND dry_run AND success IS NULL"),
	'a dry-run policy audits what it would do');
my $samples = $node->safe_psql('postgres', "SELECT status->'worker'->>'samples' FROM pool_health.status() status");
$node->poll_query_until('postgres',
	"SELECT (status->'worker'->>'samples')::int >= $samples + 3 FROM pool_health.status() status");
ok(ph_alive($node, $dry_pid), 'without ending the session');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminations WHERE pid = $dry_pid"),
	'1', 'and audits it once, not at every cycle');
$dry->query_safe('ROLLBACK');

# enforce = dry_run makes every policy a dry run
$node->safe_psql('postgres', "UPDATE pool_health.policies SET dry_run = false WHERE name = 'web'");
ph_set($node, 'pool_health.enforce' => 'dry_run');
my ($dry2, $dry2_pid) = ph_app_session($node, 'web-3', role => 'app');
$dry2->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $dry2_pid AND dry_run"),
	'pool_health.enforce = dry_run only audits');
ok(ph_alive($node, $dry2_pid), 'and ends nothing');
$dry2->query_safe('ROLLBACK');
ph_set($node, 'pool_health.enforce' => 'on');

# --- superusers, protected roles and disabled policies are spared ------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('everyone', 'spare%', '1s');
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, enabled)
	VALUES ('disabled', 'off%', '1s', false)});
ph_set($node, 'pool_health.protected_roles' => 'ops');
my ($super, $super_pid) = ph_app_session($node, 'spare-super');
my ($protected, $protected_pid) = ph_app_session($node, 'spare-ops', role => 'ops');
my ($off, $off_pid) = ph_app_session($node, 'off-1', role => 'app');
$_->query_safe('BEGIN; SELECT 1;') for ($super, $protected, $off);
# a canary governed by the same policy, leaking after the others
my ($canary, $canary_pid) = ph_app_session($node, 'spare-canary', role => 'app', on_error_stop => 0);
$canary->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $canary_pid), 'the canary, an ordinary session, is ended');
ok(ph_alive($node, $super_pid), 'a superuser session past the same limit survives');
ok(ph_alive($node, $protected_pid), 'a session of a protected role survives');
ok(ph_alive($node, $off_pid), 'a session governed only by a disabled policy survives');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.terminations WHERE pid IN ($super_pid, $protected_pid, $off_pid)"),
	'0', 'none of them is even audited');
is( $node->safe_psql('postgres',
		"SELECT string_agg(coalesce(policy, '-'), ',' ORDER BY pid = $super_pid, pid = $protected_pid) FROM pool_health.sessions WHERE pid IN ($super_pid, $protected_pid, $off_pid)"),
	'-,everyone,everyone', 'sessions shows the governing policy (none for the disabled one)');
$_->query_safe('ROLLBACK') for ($super, $protected, $off);

# a policy that allows superusers does end them
$node->safe_psql('postgres', "UPDATE pool_health.policies SET allow_superuser = true WHERE name = 'everyone'");
$super->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $super_pid), 'allow_superuser lets a policy end a superuser session');

# disabling a policy while running takes effect
$node->safe_psql('postgres', "UPDATE pool_health.policies SET enabled = false WHERE name = 'everyone'");
ok( $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool FROM pool_health.status() s"),
	'the change is in effect');
my ($spared, $spared_pid) = ph_app_session($node, 'spare-later', role => 'app');
$spared->query_safe('BEGIN; SELECT 1;');
my ($canary2, $canary2_pid) = ph_app_session($node, 'web-canary', role => 'app', on_error_stop => 0);
$canary2->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $canary2_pid), 'another policy still ends its sessions');
ok(ph_alive($node, $spared_pid), 'the disabled policy no longer does');
$spared->query_safe('ROLLBACK');

# --- a session that commits just before its deadline survives -------------------------------------
my ($late, $late_pid) = ph_app_session($node, 'web-late', role => 'app');
$late->query_safe('BEGIN; SELECT 1;');
# (true as well if the session is already gone, so that the COMMIT fails at once)
$node->poll_query_until('postgres',
	"SELECT coalesce((SELECT idle_for > '1.5s' FROM pool_health.sessions WHERE pid = $late_pid), true)");
$late->query_safe('COMMIT');
my ($canary3, $canary3_pid) = ph_app_session($node, 'web-canary3', role => 'app', on_error_stop => 0);
$canary3->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $canary3_pid), 'a later leak is ended');
ok(ph_alive($node, $late_pid), 'the session that committed 0.5 s before its deadline survives');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminations WHERE pid = $late_pid"),
	'0', 'and is not audited');

# --- blocking_timeout: how long a session has kept others waiting -------------------------------
# The holder's transaction is older than blocking_timeout before anyone
# waits: it is not ended when a waiter appears, only once it has blocked
# that waiter for blocking_timeout.
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, blocking_timeout)
	VALUES ('locker', 'locker%', '1h', '2s')});
my ($holder, $holder_pid) = ph_app_session($node, 'locker-1', role => 'app', on_error_stop => 0);
my ($waiter, $waiter_pid) = ph_app_session($node, 'waiter', role => 'app');
$holder->query_safe('BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;');
$node->poll_query_until('postgres',
	"SELECT xact_age > interval '3s' FROM pool_health.sessions WHERE pid = $holder_pid")
  or die 'the holder never got old';
$waiter->query_until(qr/^$/, "SELECT count(*) FROM t;\n");
ok( $node->poll_query_until('postgres',
		"SELECT blocking = 1 FROM pool_health.sessions WHERE pid = $holder_pid"),
	'the holder blocks the waiter');
is( $node->safe_psql('postgres',
		"SELECT count(*) || ':' || bool_and(blocked_by = $holder_pid) FROM pool_health.sessions WHERE pid = $waiter_pid"),
	'1:true', 'sessions shows whom the waiter waits for');
ok(ph_alive($node, $holder_pid),
	'a transaction older than blocking_timeout is not ended the moment a waiter appears');
ok(ph_gone($node, $holder_pid), 'it is ended once it has blocked for blocking_timeout (2s)');
like( $node->safe_psql('postgres', "SELECT reason FROM pool_health.terminations WHERE pid = $holder_pid"),
	qr/^blocking_timeout 00:00:02 exceeded: blocking 1 session for 00:00:0[2-3]\./,
	'the reason says how long it blocked and how many waited');
ok( $node->poll_query_until('postgres',
		"SELECT state = 'idle' FROM pool_health.sessions WHERE pid = $waiter_pid"),
	'the waiter gets its lock and finishes');

# --- transaction_timeout ends an active long transaction -------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, transaction_timeout)
	VALUES ('batch', 'nightly%', '2s')});
my ($batch, $batch_pid) = ph_app_session($node, 'nightly-report', role => 'app', on_error_stop => 0);
$batch->query_until(qr/^$/, "BEGIN; SELECT pg_sleep(600);\n");
ok(ph_gone($node, $batch_pid), 'an active transaction older than transaction_timeout is ended');
is( $node->safe_psql('postgres',
		"SELECT state || ':' || (reason LIKE 'transaction_timeout 00:00:02 exceeded: in a transaction for%') FROM pool_health.terminations WHERE pid = $batch_pid"),
	'active:true', 'while active, with the reason');

# --- the leak classes ------------------------------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_timeout, transaction_timeout, action)
	VALUES ('observe', 'observe%', '1s', '1s', 'log')});
my ($stale, $stale_pid) = ph_app_session($node, 'observe-idle', role => 'app');
my ($long, $long_pid) = ph_app_session($node, 'observe-xact', role => 'app');
$long->query_until(qr/^$/, "BEGIN; SELECT pg_sleep(600);\n");
ok( $node->poll_query_until('postgres',
		"SELECT string_agg(leak, ',' ORDER BY pid = $long_pid) FROM pool_health.sessions WHERE pid IN ($stale_pid, $long_pid)",
		'stale_idle,long_transaction'),
	'sessions past idle_timeout and transaction_timeout are stale_idle and long_transaction');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pool_health.terminations WHERE pid IN ($stale_pid, $long_pid) AND action = 'log' AND success IS NULL"),
	'action log records them');
ok(ph_alive($node, $stale_pid) && ph_alive($node, $long_pid), 'and ends neither');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.leaks WHERE pid IN ($stale_pid, $long_pid)"),
	'2', 'both are listed in pool_health.leaks');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($long_pid)");
unlike(slurp_file($node->logfile), qr/pool_health: extension "pool_health" version/,
	'the installed extension is the library\'s version: no WARNING');
$node->stop;

# --- the upgrade window: a new library on an older extension --------------------------
# The library's audit columns are a prefix list: on an older table it
# writes the columns that table has (the row is not lost), and the worker
# says at its start that the extension is not the library's version.
for my $version ('1.1', '1.2')
{
	my $old = ph_node("window_$version", create => 0,
		conf => "pool_health.sample_interval = '100ms'");
	$old->safe_psql('postgres', "CREATE ROLE app LOGIN; CREATE EXTENSION pool_health VERSION '$version'");
	$old->safe_psql('postgres', q{
		INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
		VALUES ('web', 'web%', '1s')});
	my ($s, $s_pid) = ph_app_session($old, 'web-old', role => 'app', on_error_stop => 0);
	$s->query_safe('BEGIN; SELECT 1;');
	ok(ph_gone($old, $s_pid), "$version: a leaked session is ended");
	ok( $old->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $s_pid"),
		"$version: and its audit row is written");
	is( $old->safe_psql('postgres',
			"SELECT policy || ':' || reason LIKE 'web:idle_in_transaction_timeout 00:00:01 exceeded: %' FROM pool_health.terminations WHERE pid = $s_pid"),
		't', "$version: with the columns that table has");
	my $columns = $old->safe_psql('postgres',
		"SELECT count(*) FROM pg_attribute WHERE attrelid = 'pool_health.terminations'::regclass AND attnum > 0 AND NOT attisdropped");
	is($columns, $version eq '1.1' ? 19 : 22, "$version: (the table has its version's columns)");
	unlike(slurp_file($old->logfile), qr/not written to pool_health.terminations/,
		"$version: no row was skipped");
	# (the worker has run since it found the extension: its start is logged)
	my @warnings = slurp_file($old->logfile) =~
	  /WARNING:  pool_health: extension "pool_health" version $version is installed in database "postgres", but the library is version 1\.3\n.*DETAIL:  Until the extension is updated, audit rows/g;
	is(scalar(@warnings), 1, "$version: the worker warned once that the extension is older than the library");

	$old->safe_psql('postgres', 'ALTER EXTENSION pool_health UPDATE');
	# the session ended in the window: its row has no role_id (the table
	# had no such column), the in-memory record has it; the role reads
	# the record once
	my $window_pid = $s_pid;
	is( $old->safe_psql('postgres',
			"SELECT role_id IS NULL FROM pool_health.terminations WHERE pid = $window_pid"),
		't', "$version: after ALTER EXTENSION UPDATE, the row written in the window has no role_id");
	is( $old->safe_psql('postgres',
			"SELECT format('%s %s %s', count(*), min(limit_name), min(policy)) FROM pool_health.my_terminations WHERE pid = $window_pid",
			extra_params => [ '-U', 'app' ]),
		'1 idle_in_transaction_timeout web',
		"$version: the session ended in the window is in the role's my_terminations once (its in-memory record)");
	($s, $s_pid) = ph_app_session($old, 'web-new', role => 'app', on_error_stop => 0);
	$s->query_safe('BEGIN; SELECT 1;');
	ok(ph_gone($old, $s_pid), "$version: after ALTER EXTENSION UPDATE, a leak is ended");
	ok( $old->poll_query_until('postgres',
			"SELECT limit_name = 'idle_in_transaction_timeout' AND role_id = 'app'::regrole AND client_port IS NOT NULL FROM pool_health.terminations WHERE pid = $s_pid"),
		"$version: its row has all the columns");
	is( $old->safe_psql('postgres', "SELECT limit_name FROM pool_health.my_terminations WHERE pid = $s_pid",
			extra_params => [ '-U', 'app' ]),
		'idle_in_transaction_timeout', "$version: and is in the role's my_terminations");
	is( $old->safe_psql('postgres', "SELECT count(*) FROM pool_health.my_terminations",
			extra_params => [ '-U', 'app' ]),
		'2', "$version: each of the role's two records once");
	$old->stop;
}

done_testing();
