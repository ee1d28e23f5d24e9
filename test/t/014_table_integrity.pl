# Table integrity: the worker (a superuser) trusts only the extension's own
# tables, with the column types it expects, and acts with the rights of
# the policies' owner.
#  2. a look-alike pool_health.policies that is not a member of the
#     extension (the member renamed away) is ignored, with an
#     allow_superuser row in it: no superuser session is ended.
#  3. the table owner changes a column's type (action to integer): no
#     crash, the table is ignored with a WARNING and listed in
#     policy_errors; logins and views work; the server never restarts.
#     The same for pool_health.terminations: the audit row is skipped,
#     the log and recent_actions have it (a column my_terminations shows
#     cannot change its type: the view keeps it).
#     The owner locks the table: the worker samples and enforces on.
#     A non-superuser owner's allow_superuser policy cannot end a
#     superuser session (nothing through pool_health beyond what the owner
#     could do by hand).
# 14. a limit with mixed signs is enforced with the meaning it was
#     validated with ('1 year -360 days 2 seconds' is 2 seconds).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('integrity', conf => "pool_health.sample_interval = '100ms'");
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE dba LOGIN;
	GRANT pg_signal_backend TO dba;
});

sub policies_in_effect
{
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s");
}

sub samples
{
	return $node->safe_psql('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int");
}

# --- 14. one meaning for a limit ------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('mixed', 'mixed%', '1 year -360 days 2 seconds')});
ok(policies_in_effect(), "a limit of '1 year -360 days 2 seconds' is accepted");
my ($mixed, $mixed_pid) = ph_app_session($node, 'mixed-1', role => 'app', on_error_stop => 0);
$mixed->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $mixed_pid), 'and enforced as 2 seconds');
like( $node->safe_psql('postgres', "SELECT reason FROM pool_health.terminations WHERE pid = $mixed_pid"),
	qr/^idle_in_transaction_timeout 00:00:02 exceeded/, 'the audit says 2 seconds');
$node->safe_psql('postgres', 'DELETE FROM pool_health.policies');

# --- a non-superuser owner ------------------------------------------------------------------
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies OWNER TO dba;
	ALTER TABLE pool_health.terminations OWNER TO dba;
});
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, allow_superuser)
	VALUES ('everyone', 'victim%', '1s', true)}, extra_params => [ '-U', 'dba' ]);
ok(policies_in_effect(), "the owner dba (not a superuser) writes an allow_superuser policy");
my ($su, $su_pid) = ph_app_session($node, 'victim-su');
my ($app, $app_pid) = ph_app_session($node, 'victim-app', role => 'app', on_error_stop => 0);
$su->query_safe('BEGIN; SELECT 1;');
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), "a session dba could end by hand is ended");
is( $node->safe_psql('postgres', "SELECT policy || ': ' || exempt FROM pool_health.sessions WHERE pid = $su_pid"),
	'everyone: superuser session',
	'the superuser session is exempt: allow_superuser counts only in a superuser\'s policies');
$node->poll_query_until('postgres', "SELECT idle_for > interval '2s' FROM pool_health.sessions WHERE pid = $su_pid");
ok(ph_alive($node, $su_pid), 'it lives on past the limit');
$su->query_safe('ROLLBACK');

# --- 3. the owner changes a column's type ---------------------------------------------------
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies DROP CONSTRAINT action_is_terminate_or_log,
	    ALTER COLUMN action DROP DEFAULT,
	    ALTER COLUMN action TYPE integer USING 1;
}, extra_params => [ '-U', 'dba' ]);
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: column "action" of table pool_health.policies has type integer, not text: the table is ignored/,
		$log_offset),
	'the worker ignores the table, with a WARNING');
is( $node->safe_psql('postgres', 'SELECT coalesce(name, \'(table)\') || \': \' || error FROM pool_health.policy_errors'),
	'(table): column "action" of table pool_health.policies has type integer, not text: the table is ignored',
	'policy_errors says so');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pool_health.usage_by_policy'),
	'0', 'no policy is in effect');
my $before = samples();
ok($node->poll_query_until('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int > $before + 5"),
	'the worker samples on');
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM pool_health.sessions', extra_params => [ '-U', 'app' ]),
	't', 'logins and views work');
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies ALTER COLUMN action TYPE text USING 'terminate',
	    ALTER COLUMN action SET DEFAULT 'terminate',
	    ADD CONSTRAINT action_is_terminate_or_log CHECK (action IN ('terminate', 'log'));
}, extra_params => [ '-U', 'dba' ]);
ok( $node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM pool_health.usage_by_policy'),
	'restored, the policy is in effect again');

# the audit table with a wrong type: the row is skipped, not the record
# (a column pool_health.my_terminations does not show: the view keeps its
# own columns' types)
my (undef, undef, $alter_err) = $node->psql('postgres',
	'ALTER TABLE pool_health.terminations ALTER COLUMN reason TYPE integer USING 0',
	extra_params => [ '-U', 'dba' ]);
like($alter_err, qr/cannot alter type of a column used by a view or rule/,
	'the type of a column my_terminations shows cannot be changed');
$node->safe_psql('postgres', 'ALTER TABLE pool_health.terminations ALTER COLUMN state TYPE integer USING 0',
	extra_params => [ '-U', 'dba' ]);
($app, $app_pid) = ph_app_session($node, 'victim-app2', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'a leak is still ended');
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: action on session $app_pid not written to pool_health.terminations: column "state" of table pool_health.terminations has type integer, not text/),
	'the audit row is skipped with a WARNING');
like(slurp_file($node->logfile), qr/LOG:  pool_health: terminated session $app_pid /, 'the log has the record');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.recent_actions WHERE pid = $app_pid"),
	'1', 'and so has recent_actions');
$node->safe_psql('postgres', 'ALTER TABLE pool_health.terminations ALTER COLUMN state TYPE text',
	extra_params => [ '-U', 'dba' ]);

# the owner locks the policies: the worker does not wait
my $locker = $node->background_psql('postgres', extra_params => [ '-U', 'dba' ]);
$locker->query_safe('BEGIN; LOCK TABLE pool_health.policies IN ACCESS EXCLUSIVE MODE');
# a change of a role makes the worker read the policies again: it cannot
$node->safe_psql('postgres', 'ALTER ROLE app CONNECTION LIMIT 100');
$before = samples();
ok($node->poll_query_until('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int > $before + 20"),
	'with the table locked, the worker samples on');
($app, $app_pid) = ph_app_session($node, 'victim-app3', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'and enforces the policies it has');
$locker->query_safe('ROLLBACK');
$locker->quit;

# --- the owner's code leaves nothing behind in the caller's session ---------------------------
# (a trigger of the terminations' owner that changes settings for good:
# search_path first, to run its own now() as the superuser who calls)
$node->safe_psql('postgres', 'GRANT CREATE ON SCHEMA public TO dba');
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.plant() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
	    PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
	    RETURN NEW;
	END $$;
	CREATE TRIGGER plant BEFORE INSERT ON pool_health.terminations
	    FOR EACH ROW EXECUTE FUNCTION public.plant();
	CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
	$$ SELECT CASE WHEN (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
	               THEN (SELECT 'infinity'::timestamptz FROM pg_catalog.pg_class LIMIT 1) END $$;
}, extra_params => [ '-U', 'dba' ]);
my ($idle, $idle_pid) = ph_app_session($node, 'idle-victim', role => 'app');
$node->poll_query_until('postgres', "SELECT idle_for > interval '1s' FROM pool_health.sessions WHERE pid = $idle_pid");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM pool_health.terminate_idle('1s') WHERE pid = $idle_pid;
		SHOW search_path;
		SHOW default_transaction_read_only;}),
	"1\n\"\$user\", public\noff", 'after a function wrote an audit row, the caller\'s settings are its own');
($app, $app_pid) = ph_app_session($node, 'victim-app4', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'the worker ends a leak (the trigger runs)');
($app, $app_pid) = ph_app_session($node, 'victim-app5', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'and the next one');
is( $node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminations WHERE application_name IN ('victim-app4', 'victim-app5')"),
	'2', 'both audited: the trigger did not make the worker read-only');
$node->safe_psql('postgres', 'DROP TRIGGER plant ON pool_health.terminations; DROP FUNCTION public.plant(), public.now()',
	extra_params => [ '-U', 'dba' ]);

# --- cleanup() acts with the policies' owner's rights too ----------------------------------------
# dba loses pg_signal_backend: a superuser calling cleanup() does not end,
# through dba's policy, a session dba could not end
$node->safe_psql('postgres', 'REVOKE pg_signal_backend FROM dba');
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_timeout)
	VALUES ('app-idle', 'app-idle%', '1s')}, extra_params => [ '-U', 'dba' ]);
ph_set($node, 'pool_health.enforce' => 'off');
my ($idler, $idler_pid) = ph_app_session($node, 'app-idle-1', role => 'app');
$node->poll_query_until('postgres', "SELECT idle_for > interval '1s' AND policy = 'app-idle' FROM pool_health.sessions WHERE pid = $idler_pid");
my ($ret, $out, $stderr) = $node->psql('postgres', 'SELECT count(*) FROM pool_health.cleanup()');
is($out, '0', 'a superuser calling cleanup() ends nothing dba could not end by hand');
like($stderr, qr/NOTICE:  1 session was skipped: the owner of pool_health.policies could not end it with pg_terminate_backend\(\)/,
	'and is told why');
ok(ph_alive($node, $idler_pid), 'the session lives on');
$idler->quit;
$node->safe_psql('postgres', "DELETE FROM pool_health.policies WHERE name = 'app-idle'; GRANT pg_signal_backend TO dba");
ph_set($node, 'pool_health.enforce' => 'on');

# --- the owner's code cannot stall the worker -----------------------------------------------------
# a trigger that sleeps, and a lock on the audit's sequence
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.sleepy() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
	CREATE TRIGGER sleepy BEFORE INSERT ON pool_health.terminations
	    FOR EACH ROW EXECUTE FUNCTION public.sleepy();
}, extra_params => [ '-U', 'dba' ]);
($app, $app_pid) = ph_app_session($node, 'victim-app6', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'a leak is ended');
$before = samples();
ok($node->poll_query_until('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int > $before + 20"),
	'while the audit trigger sleeps 30 s, the worker samples on (its insert times out)');
like(slurp_file($node->logfile),
	qr/WARNING:  pool_health: action on session $app_pid not written to pool_health.terminations: canceling statement due to statement timeout/,
	'the timeout is logged, the action not lost');
$node->safe_psql('postgres', 'DROP TRIGGER sleepy ON pool_health.terminations', extra_params => [ '-U', 'dba' ]);
$locker = $node->background_psql('postgres', extra_params => [ '-U', 'dba' ]);
$locker->query_safe('BEGIN; ALTER SEQUENCE pool_health.terminations_id_seq RESTART');
($app, $app_pid) = ph_app_session($node, 'victim-app7', role => 'app', on_error_stop => 0);
$app->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $app_pid), 'a leak is ended');
$before = samples();
ok($node->poll_query_until('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int > $before + 20"),
	'while its sequence is locked, the worker samples on');
$locker->query_safe('ROLLBACK');
$locker->quit;

# a row whose value is stored out of line (toasted): reading it would wait
# for the toast table's locks; it is left out instead
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies DISABLE TRIGGER validate,
	    DROP CONSTRAINT name_is_1_to_63_bytes,
	    DROP CONSTRAINT policies_pkey,
	    ALTER COLUMN comment SET STORAGE EXTERNAL,
	    ALTER COLUMN name SET STORAGE EXTERNAL;
	INSERT INTO pool_health.policies (name) SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) i;
	ALTER TABLE pool_health.policies ENABLE TRIGGER validate;
}, extra_params => [ '-U', 'dba' ]);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.policy_errors WHERE error = 'name is too long (stored out of line)'"),
	'a toasted name is listed as an error');
$locker = $node->background_psql('postgres', extra_params => [ '-U', 'dba' ]);
$locker->query_safe('BEGIN; REINDEX TABLE pool_health.policies');
$node->safe_psql('postgres', 'ALTER ROLE app CONNECTION LIMIT 99');
$before = samples();
ok($node->poll_query_until('postgres', "SELECT (pool_health.status()->'worker'->>'samples')::int > $before + 20"),
	'while its toast index is locked, the worker reads the policies and samples on');
$locker->query_safe('ROLLBACK');
$locker->quit;
$node->safe_psql('postgres', q{
	DELETE FROM pool_health.policies WHERE octet_length(name) > 63;
	ALTER TABLE pool_health.policies ADD CONSTRAINT name_is_1_to_63_bytes CHECK (octet_length(name) BETWEEN 1 AND 63),
	    ADD PRIMARY KEY (name);
});

# --- 2. a look-alike table that is not a member of the extension -----------------------------------
$node->safe_psql('postgres', 'ALTER TABLE pool_health.policies OWNER TO ' . $superuser);
# (from before the change: the worker may warn before the statements end)
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies RENAME TO policies_real;
	CREATE TABLE pool_health.policies (LIKE pool_health.policies_real INCLUDING DEFAULTS);
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, allow_superuser)
	VALUES ('lookalike', '%', '1s', true);
});
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: table pool_health.policies is not a table of extension pool_health: ignored/,
		$log_offset),
	'the worker ignores the look-alike, with a WARNING');
($su, $su_pid) = ph_app_session($node, 'anything');
$su->query_safe('BEGIN; SELECT 1;');
$node->poll_query_until('postgres',
	"SELECT idle_for > interval '2s' FROM pool_health.sessions WHERE pid = $su_pid");
ok(ph_alive($node, $su_pid), 'its allow_superuser row ends no session');
is($node->safe_psql('postgres', "SELECT policy IS NULL FROM pool_health.sessions WHERE pid = $su_pid"),
	't', 'and governs none in the views');
$su->query_safe('ROLLBACK');
$node->safe_psql('postgres', q{
	DROP TABLE pool_health.policies;
	ALTER TABLE pool_health.policies_real RENAME TO policies;
});

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started, 'the server never restarted');
unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'no process crashed');
$node->stop;
done_testing();
