-- Privileges: usage, status() and ping() for every role (counts only);
-- sessions and leaks follow pg_stat_activity's visibility rule; the
-- per-group views are for pg_monitor.
CREATE ROLE ph_nobody;
CREATE ROLE ph_monitor IN ROLE pg_monitor;

SET ROLE ph_nobody;
SELECT used >= 1 AS sees_counts, level FROM pool_health.usage;
SELECT pool_health.ping(), (pool_health.status()->'usage'->>'used')::int >= 1 AS status_counts;
-- the backend belongs to the bootstrap superuser: identity visible, details hidden
SELECT backend_type, state, query, client_addr, xact_start, leak, pins_xmin
FROM pool_health.sessions WHERE pid = pg_backend_pid();
SELECT * FROM pool_health.usage_by_role;
SELECT * FROM pool_health.usage_by_database;
SELECT * FROM pool_health.usage_by_application;
SELECT * FROM pool_health.usage_by_client;
SELECT * FROM pool_health.get_usage_by('role');
RESET ROLE;

SET ROLE ph_monitor;
SELECT backend_type, state, query LIKE 'SELECT backend_type%' AS sees_query
FROM pool_health.sessions WHERE pid = pg_backend_pid();
SELECT count(*) >= 1 AS sees_groups FROM pool_health.usage_by_role;
SELECT expect_error($$SELECT * FROM pool_health.get_usage_by('query')$$);
SELECT expect_error($$SELECT * FROM pool_health.get_usage_by(NULL)$$);
SELECT count(*) >= 0 AS reads_leaks FROM pool_health.leaks;
RESET ROLE;

-- the schema and its objects cannot be changed by an ordinary role
SET ROLE ph_nobody;
CREATE VIEW pool_health.mine AS SELECT 1;
CREATE FUNCTION pool_health.ping() RETURNS boolean LANGUAGE sql AS 'SELECT false';
RESET ROLE;

-- my_terminations: any role reads the audit rows of its own sessions
-- (session_user, matched by role OID and name), and nothing of others'
CREATE ROLE ph_alice LOGIN;
CREATE ROLE ph_bob LOGIN;
GRANT ph_bob TO ph_alice;
INSERT INTO pool_health.terminations (at, pid, role, role_id, database, application_name,
    reason, action, dry_run, source, policy, limit_name, xact_first_query)
SELECT '2026-01-01 00:00:01+00'::timestamptz + n * interval '1 s', pid, r::name, r::regrole::oid,
       current_database(), r || '-app', 'idle_timeout 00:00:01 exceeded: idle for 00:00:02',
       'terminate', false, 'worker', 'p', 'idle_timeout',
       $q$select 'card 4111-1111-1111-1111 of $q$ || r || $q$' /*route='/pay'*/$q$
FROM (VALUES (1, 1001, 'ph_alice'), (2, 1002, 'ph_bob'), (3, 1003, 'ph_nobody'),
             (4, 1004, 'ph_monitor')) v(n, pid, r);
-- a row written before version 1.3 (no role_id): shown to nobody
INSERT INTO pool_health.terminations (at, pid, role, reason, action, dry_run, source)
VALUES ('2026-01-01 00:00:05+00', 1005, 'ph_alice', 'old', 'terminate', false, 'worker');
SET SESSION AUTHORIZATION ph_alice;
SELECT pid, database = current_database() AS db, application_name, policy, limit_name, reason, dry_run
FROM pool_health.my_terminations ORDER BY at;
-- SET ROLE changes current_user, not session_user: still alice's
SET ROLE ph_bob;
SELECT session_user, current_user, array_agg(pid) AS pids FROM pool_health.my_terminations;
RESET ROLE;
-- the audit table itself stays closed
SELECT expect_error($$SELECT count(*) FROM pool_health.terminations$$);
SELECT expect_error($$SELECT count(*) FROM pool_health.recent_actions$$);
RESET SESSION AUTHORIZATION;

-- a caller's function sees only the caller's rows, whatever its cost and
-- wherever it is (WHERE, a join, LATERAL, a view over this one, a UNION
-- ALL, a CTE), the table read by index or not: the view is a security
-- barrier the planner keeps (a UNION ALL as the view itself would be
-- flattened into the caller's query, the barrier with it, and a cheap
-- function run before the role's condition)
CREATE FUNCTION public.ph_leak(integer) RETURNS boolean LANGUAGE plpgsql COST 0.0000001
    AS $$ BEGIN RAISE NOTICE 'the function saw pid %', $1; RETURN true; END $$;
CREATE FUNCTION public.ph_leak3(integer, text, text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001
    AS $$ BEGIN RAISE NOTICE 'leak % % %', $1, $2, $3; RETURN true; END $$;
CREATE FUNCTION public.ph_leak_dear(integer) RETURNS boolean LANGUAGE plpgsql COST 1000000
    AS $$ BEGIN RAISE NOTICE 'the dear function saw pid %', $1; RETURN true; END $$;
CREATE FUNCTION public.ph_leak_sql(integer) RETURNS boolean LANGUAGE sql COST 0.0000001
    AS $$ SELECT public.ph_leak($1) $$;
CREATE FUNCTION public.ph_leak_int(integer) RETURNS integer LANGUAGE plpgsql COST 0.0000001
    AS $$ BEGIN RAISE NOTICE 'the int function saw pid %', $1; RETURN $1; END $$;
-- the plan of a query (JSON), as the caller
CREATE FUNCTION public.ph_plan(query text) RETURNS jsonb LANGUAGE plpgsql
    AS $$ DECLARE p jsonb; BEGIN EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO p; RETURN p; END $$;
SET SESSION AUTHORIZATION ph_alice;
CREATE TEMP VIEW ph_over AS
    SELECT * FROM pool_health.my_terminations WHERE public.ph_leak3(pid, xact_first_query, 'over');
-- the table read in full (a small table, or a planner that prefers it)
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT count(*) FROM pool_health.my_terminations WHERE public.ph_leak3(pid, xact_first_query, application_name);
SELECT count(*) FROM pool_health.my_terminations WHERE public.ph_leak(pid) OR pid = 1002;
SELECT count(*) FROM pool_health.my_terminations WHERE public.ph_leak_dear(pid);
SELECT count(*) FROM pool_health.my_terminations WHERE public.ph_leak_sql(pid);
SELECT count(*) FROM pool_health.my_terminations WHERE pid = public.ph_leak_int(pid);
SELECT count(*) FROM ph_over;
SELECT count(*) FROM pool_health.my_terminations m
    JOIN generate_series(1, 2) g ON public.ph_leak3(m.pid, m.xact_first_query, 'join ' || g);
SELECT count(*) FROM (VALUES (1001), (1002)) v(pid)
    JOIN pool_health.my_terminations m ON m.pid = v.pid AND public.ph_leak(m.pid);
SELECT count(*) FROM generate_series(1, 2) g,
    LATERAL (SELECT * FROM pool_health.my_terminations m
             WHERE public.ph_leak3(m.pid, m.xact_first_query, 'lateral ' || g)) x;
SELECT count(*) FROM (SELECT pid, xact_first_query FROM pool_health.my_terminations
                      UNION ALL SELECT 0, 'mine') u
    WHERE public.ph_leak3(pid, xact_first_query, 'union');
WITH c AS (SELECT * FROM pool_health.my_terminations)
SELECT count(*) FROM c WHERE public.ph_leak3(pid, xact_first_query, 'cte');
-- the table read by its index
RESET enable_indexscan;
RESET enable_bitmapscan;
SET enable_seqscan = off;
SELECT count(*) FROM pool_health.my_terminations WHERE public.ph_leak3(pid, xact_first_query, application_name);
SELECT count(*) FROM pool_health.my_terminations WHERE pid IN (1001, 1002) AND public.ph_leak(pid);
SELECT count(*) FROM ph_over;
DROP VIEW ph_over;
RESET enable_seqscan;
-- a lookup by pid still uses the index (pid = 1002 is leakproof: it may
-- reach the rows before the view's condition); the caller's function
-- filters what the view returns
WITH p AS (SELECT public.ph_plan('SELECT limit_name FROM pool_health.my_terminations
                                  WHERE pid = 1002 AND public.ph_leak(pid)') AS j)
SELECT jsonb_path_exists(j, 'strict $.**?(@."Index Name" == "terminations_role_id_pid_idx" && @."Index Cond" like_regex "pid = 1002")') AS pid_by_index,
       jsonb_path_query_array(j, 'strict $.**?(@."Filter" like_regex "ph_leak")."Alias"') AS leak_filters_on
FROM p;
RESET SESSION AUTHORIZATION;

-- a role with CREATE on the schema makes look-alikes of what the view
-- uses: the view is bound at creation, it uses none of them
GRANT CREATE ON SCHEMA pool_health TO ph_alice;
SET SESSION AUTHORIZATION ph_alice;
CREATE VIEW pool_health.pg_roles AS
    SELECT r.oid, 'ph_alice'::name AS rolname FROM pg_catalog.pg_roles r WHERE r.rolname = 'ph_bob';
CREATE FUNCTION pool_health.ph_oideq(oid, oid) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR pool_health.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = pool_health.ph_oideq);
SET search_path = pool_health, public;
SELECT array_agg(pid) AS pids FROM pool_health.my_terminations;
RESET search_path;
DROP OPERATOR pool_health.= (oid, oid);
DROP FUNCTION pool_health.ph_oideq(oid, oid);
DROP VIEW pool_health.pg_roles;
RESET SESSION AUTHORIZATION;
REVOKE CREATE ON SCHEMA pool_health FROM ph_alice;

-- a role renamed sees the records made since (those before name the old
-- role); a role dropped and created again with the same name sees none of
-- its namesake's (another OID)
ALTER ROLE ph_alice RENAME TO ph_alice2;
SET SESSION AUTHORIZATION ph_alice2;
SELECT count(*) AS renamed_sees FROM pool_health.my_terminations;
RESET SESSION AUTHORIZATION;
ALTER ROLE ph_alice2 RENAME TO ph_alice;
REVOKE ph_bob FROM ph_alice;
DROP ROLE ph_bob;
CREATE ROLE ph_bob LOGIN;
SET SESSION AUTHORIZATION ph_bob;
SELECT count(*) AS recreated_sees FROM pool_health.my_terminations;
RESET SESSION AUTHORIZATION;

-- a role whose name the audit stores escaped (each backslash doubled; a
-- byte not valid here as \xHH: test/t/022_names_encoding.pl) reads its
-- rows by the stored form, cut to 63 bytes as the audit cut it
SELECT pool_health.name_shown('ph_plain') AS plain,
       pool_health.name_shown('ph_c:\d') AS backslash,
       pool_health.name_shown('ph_' || repeat('\', 40)) = 'ph_' || repeat('\', 60) AS cut;
CREATE ROLE "ph_c:\d" LOGIN;
SELECT format('CREATE ROLE %I LOGIN', 'ph_' || repeat('\', 40)) \gexec
INSERT INTO pool_health.terminations (at, pid, role, role_id, reason, action, dry_run, source)
SELECT '2026-01-01 00:00:06+00', pid, shown, (SELECT oid FROM pg_roles WHERE rolname = r),
       'escaped', 'terminate', false, 'worker'
FROM (VALUES (1006, 'ph_c:\d', 'ph_c:\\d'),
             (1007, 'ph_' || repeat('\', 40), 'ph_' || repeat('\', 60))) v(pid, r, shown);
SET SESSION AUTHORIZATION "ph_c:\d";
SELECT array_agg(pid) AS pids FROM pool_health.my_terminations;
RESET SESSION AUTHORIZATION;
SELECT format('SET SESSION AUTHORIZATION %I', 'ph_' || repeat('\', 40)) \gexec
SELECT array_agg(pid) AS pids FROM pool_health.my_terminations;
RESET SESSION AUTHORIZATION;

-- the in-memory records: a call's action is there even when the call's
-- transaction rolled back (on a hot standby, the only records of its own
-- actions), once for an action in both
SELECT dblink_connect('alice', 'dbname=' || current_database() || ' user=ph_alice application_name=alice-mem');
SELECT pg_sleep(0.05);
SELECT count(*) AS audited FROM pool_health.terminate_idle('10 ms', dry_run => true) WHERE role = 'ph_alice';
BEGIN;
SELECT count(*) AS audited FROM pool_health.terminate_idle('10 ms', dry_run => true) WHERE role = 'ph_alice';
ROLLBACK;
SELECT count(*) AS in_table FROM pool_health.terminations WHERE application_name = 'alice-mem';
SET SESSION AUTHORIZATION ph_alice;
SELECT application_name, limit_name, split_part(reason, ': ', 1) AS reason,
       dry_run, action, source, client_port IS NOT NULL AS has_port
FROM pool_health.my_terminations WHERE application_name = 'alice-mem';
SELECT count(*) AS alice_records FROM pool_health.get_my_recent_actions();
RESET SESSION AUTHORIZATION;
-- a row without role_id (written in the upgrade window by this library
-- on an older table) is not shown and does not hide the in-memory record
-- of the same action
UPDATE pool_health.terminations SET role_id = NULL WHERE application_name = 'alice-mem';
SET SESSION AUTHORIZATION ph_alice;
SELECT count(*) AS alice_mem_records FROM pool_health.my_terminations WHERE application_name = 'alice-mem';
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION ph_bob;
SELECT count(*) AS bob_records FROM pool_health.get_my_recent_actions();
SELECT count(*) AS bob_sees FROM pool_health.my_terminations;
RESET SESSION AUTHORIZATION;
SELECT dblink_disconnect('alice');

DELETE FROM pool_health.terminations WHERE pid BETWEEN 1001 AND 1007 OR application_name = 'alice-mem';
DROP FUNCTION public.ph_leak(integer), public.ph_leak3(integer, text, text),
    public.ph_leak_dear(integer), public.ph_leak_sql(integer), public.ph_leak_int(integer),
    public.ph_plan(text);
DROP ROLE ph_nobody, ph_monitor, ph_alice, ph_bob, "ph_c:\d";
SELECT format('DROP ROLE %I', 'ph_' || repeat('\', 40)) \gexec
