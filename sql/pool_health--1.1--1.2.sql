/* pool_health--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pool_health UPDATE TO '1.2'" to load this file. \quit

-- 1.2: policies validated where nothing can bypass it (CHECK constraints,
-- and again by the worker, which lists the rows it leaves out in
-- pool_health.policy_errors); sessions show why pool_health never acts on
-- them and whom they wait for; usage shows superusers in reserved slots
-- and long lock waits; the per-group views are computed in C from the
-- same evaluation as everything else; the audit has the client port.

-- ---------------------------------------------------------------------
-- Policies: constraints that session_replication_role = replica, disabled
-- triggers and pg_restore --disable-triggers do not bypass
-- ---------------------------------------------------------------------

-- a limit is compared as PostgreSQL compares intervals (a month is 30
-- days, a day 24 hours), which is how the worker enforces it
CREATE OR REPLACE FUNCTION pool_health.validate_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limit_name text;
    limit_value interval;
BEGIN
    IF NEW.name IS NULL OR NEW.name = '' OR octet_length(NEW.name) >= 64 THEN
        RAISE EXCEPTION 'invalid policy name: %', quote_nullable(NEW.name)
            USING ERRCODE = 'check_violation',
                  DETAIL = 'A policy name must be 1 to 63 bytes long.';
    END IF;
    FOREACH limit_name IN ARRAY ARRAY['idle_in_transaction_timeout', 'idle_timeout',
                                      'transaction_timeout', 'blocking_timeout'] LOOP
        limit_value := CASE limit_name
                           WHEN 'idle_in_transaction_timeout' THEN NEW.idle_in_transaction_timeout
                           WHEN 'idle_timeout' THEN NEW.idle_timeout
                           WHEN 'transaction_timeout' THEN NEW.transaction_timeout
                           ELSE NEW.blocking_timeout
                       END;
        IF limit_value IS NOT NULL AND
           NOT (limit_value BETWEEN interval '1 millisecond' AND interval '365 days') THEN
            RAISE EXCEPTION 'invalid % for policy "%": %', limit_name, NEW.name, limit_value
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A limit must be positive: at least 1 millisecond, at most 365 days (a month counts 30 days, a day 24 hours).',
                      HINT = 'Use NULL for no limit.';
        END IF;
    END LOOP;
    IF NEW.max_connections IS NOT NULL AND NEW.max_connections < 1 THEN
        RAISE EXCEPTION 'invalid max_connections for policy "%": %', NEW.name, NEW.max_connections
            USING ERRCODE = 'check_violation',
                  DETAIL = 'A connection quota must be at least 1.',
                  HINT = 'Use NULL for no quota.';
    END IF;
    IF NEW.action IS NULL OR NEW.action NOT IN ('terminate', 'log') THEN
        RAISE EXCEPTION 'invalid action for policy "%": %', NEW.name, quote_nullable(NEW.action)
            USING ERRCODE = 'check_violation',
                  HINT = 'Use terminate or log.';
    END IF;
    IF NEW.refuse_at IS NOT NULL AND NEW.refuse_at NOT IN ('degraded', 'critical') THEN
        RAISE EXCEPTION 'invalid refuse_at for policy "%": %', NEW.name, quote_literal(NEW.refuse_at)
            USING ERRCODE = 'check_violation',
                  HINT = 'Use degraded, critical, or NULL to never refuse.';
    END IF;
    IF NEW.application_name IS NOT NULL THEN
        IF octet_length(NEW.application_name) > 255 THEN
            RAISE EXCEPTION 'invalid application_name pattern for policy "%": too long', NEW.name
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A pattern may be at most 255 bytes long.';
        END IF;
        -- the one syntax error of a LIKE pattern: a trailing, unescaped escape
        IF length(substring(NEW.application_name FROM '\\*$')) % 2 = 1 THEN
            RAISE EXCEPTION 'invalid application_name pattern for policy "%": %', NEW.name, quote_literal(NEW.application_name)
                USING ERRCODE = 'check_violation',
                      DETAIL = 'LIKE pattern must not end with escape character.',
                      HINT = 'application_name is a LIKE pattern: % matches any string, _ any character, \ escapes them.';
        END IF;
    END IF;
    IF NEW.priority IS NULL OR NEW.dry_run IS NULL OR NEW.allow_superuser IS NULL OR NEW.enabled IS NULL THEN
        RAISE EXCEPTION 'invalid policy "%": priority, dry_run, allow_superuser and enabled cannot be NULL', NEW.name
            USING ERRCODE = 'not_null_violation';
    END IF;
    RETURN NEW;
END
$$;

-- The same rules as constraints.  Rows that break them already (written
-- with triggers bypassed) do not stop the update: the constraints are then
-- left NOT VALID, still checked for every new row, and those rows are
-- listed in pool_health.policy_errors.
ALTER TABLE pool_health.policies
    ADD CONSTRAINT name_is_1_to_63_bytes
        CHECK (octet_length(name) BETWEEN 1 AND 63) NOT VALID,
    ADD CONSTRAINT idle_in_transaction_timeout_in_range
        CHECK (idle_in_transaction_timeout BETWEEN interval '1 millisecond' AND interval '365 days') NOT VALID,
    ADD CONSTRAINT idle_timeout_in_range
        CHECK (idle_timeout BETWEEN interval '1 millisecond' AND interval '365 days') NOT VALID,
    ADD CONSTRAINT transaction_timeout_in_range
        CHECK (transaction_timeout BETWEEN interval '1 millisecond' AND interval '365 days') NOT VALID,
    ADD CONSTRAINT blocking_timeout_in_range
        CHECK (blocking_timeout BETWEEN interval '1 millisecond' AND interval '365 days') NOT VALID,
    ADD CONSTRAINT max_connections_at_least_1
        CHECK (max_connections >= 1) NOT VALID,
    ADD CONSTRAINT action_is_terminate_or_log
        CHECK (action IN ('terminate', 'log')) NOT VALID,
    ADD CONSTRAINT refuse_at_is_degraded_or_critical
        CHECK (refuse_at IN ('degraded', 'critical')) NOT VALID,
    ADD CONSTRAINT application_name_is_a_like_pattern
        CHECK (octet_length(application_name) <= 255 AND
               application_name !~ '(^|[^\\])(\\\\)*\\$') NOT VALID;

DO $$
DECLARE
    c name;
BEGIN
    FOR c IN SELECT conname FROM pg_catalog.pg_constraint
             WHERE conrelid = 'pool_health.policies'::pg_catalog.regclass
               AND contype = 'c' AND NOT convalidated
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('ALTER TABLE pool_health.policies VALIDATE CONSTRAINT %I', c);
        EXCEPTION WHEN check_violation THEN
            RAISE WARNING 'pool_health.policies has rows that break constraint "%"', c
                USING HINT = 'They are not in effect: see pool_health.policy_errors.';
        END;
    END LOOP;
END
$$;

COMMENT ON FUNCTION pool_health.validate_policy() IS
'Trigger: rejects invalid policies (limits outside 1 millisecond to 365 days, unknown action or refuse_at, quota below 1, bad pattern) with a clear message; the table''s CHECK constraints and the worker check the same rules';

CREATE FUNCTION pool_health.get_policy_errors(
    OUT name text,
    OUT error text,
    OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_policy_errors'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_policy_errors() IS
'Rows of pool_health.policies not in effect, and why; the function behind pool_health.policy_errors';

CREATE VIEW pool_health.policy_errors AS
    SELECT name, error, since FROM pool_health.get_policy_errors();

COMMENT ON VIEW pool_health.policy_errors IS
'Enabled rows of pool_health.policies that are not in effect, and why: rows that break the rules (written with triggers bypassed, or after constraints were dropped), more policies than pool_health.max_policies, or a table the worker cannot use. Each is logged once as a WARNING; "since" is when it was first seen';

-- ---------------------------------------------------------------------
-- Audit: the client port
-- ---------------------------------------------------------------------

ALTER TABLE pool_health.terminations ADD COLUMN client_port integer,
    ADD COLUMN xact_first_query text,
    ADD COLUMN xact_tags jsonb;
COMMENT ON COLUMN pool_health.terminations.client_port IS
'The client''s TCP port (-1 for a Unix socket), to trace the session to one client process';
COMMENT ON COLUMN pool_health.terminations.xact_first_query IS
'The first statement of the session''s transaction (after BEGIN, or the statement itself in autocommit), truncated to pool_health.first_query_size: the code path that opened it';
COMMENT ON COLUMN pool_health.terminations.xact_tags IS
'The key/value pairs of a sqlcommenter comment in xact_first_query (/*route=''/checkout'',...*/, URL-decoded), or NULL';
ALTER TYPE pool_health.action ADD ATTRIBUTE client_port integer,
    ADD ATTRIBUTE xact_first_query text,
    ADD ATTRIBUTE xact_tags jsonb;
COMMENT ON TYPE pool_health.action IS
'One action on a session, as audited: the columns of pool_health.terminations (but id); returned by the cleanup functions and pool_health.recent_actions';

CREATE OR REPLACE VIEW pool_health.recent_actions AS
    SELECT * FROM pool_health.get_recent_actions();
COMMENT ON VIEW pool_health.recent_actions IS
'The last pool_health.audit_memory actions of the worker and the last pool_health.audit_memory actions of function calls on this server, from shared memory, oldest first: the same records as pool_health.terminations, and the only queryable ones on a hot standby. Needs the preload';

-- ---------------------------------------------------------------------
-- Live views: exemptions, lock waits, reserved slots; per-group views in C
-- ---------------------------------------------------------------------

DROP VIEW pool_health.leaks;
DROP VIEW pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client;
DROP FUNCTION pool_health.usage_by_group(text);
DROP VIEW pool_health.sessions;
DROP FUNCTION pool_health.get_sessions();
DROP VIEW pool_health.usage;
DROP FUNCTION pool_health.get_usage();

CREATE FUNCTION pool_health.get_sessions(
    OUT pid integer,
    OUT backend_type text,
    OUT database name,
    OUT role name,
    OUT application_name text,
    OUT client_addr inet,
    OUT client_port integer,
    OUT state text,
    OUT backend_start timestamptz,
    OUT xact_start timestamptz,
    OUT query_start timestamptz,
    OUT state_change timestamptz,
    OUT wait_event_type text,
    OUT wait_event text,
    OUT waiting boolean,
    OUT idle_for interval,
    OUT xact_age interval,
    OUT backend_xid xid,
    OUT backend_xmin xid,
    OUT pins_xmin boolean,
    OUT blocking integer,
    OUT leak text,
    OUT policy text,
    OUT query text,
    OUT exempt text,
    OUT blocked_by integer,
    OUT blocking_since timestamptz,
    OUT xact_first_query text,
    OUT xact_first_query_at timestamptz,
    OUT xact_tags jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_sessions'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_sessions() IS
'One row per backend from one evaluation of backend status; the function behind pool_health.sessions';

CREATE VIEW pool_health.sessions AS
    SELECT * FROM pool_health.get_sessions();

COMMENT ON VIEW pool_health.sessions IS
'One row per backend: state, idle time, transaction age, whether it holds back vacuum, how many sessions it blocks and whom it waits for, why it counts as leaked, the policy governing it, and why pool_health never acts on it. Details of other roles'' sessions need pg_read_all_stats, as in pg_stat_activity';
COMMENT ON COLUMN pool_health.sessions.idle_for IS
'Time in the current state when idle or idle in transaction, else NULL';
COMMENT ON COLUMN pool_health.sessions.xact_age IS
'Age of the current transaction, NULL outside a transaction';
COMMENT ON COLUMN pool_health.sessions.waiting IS
'Waiting on a heavyweight lock';
COMMENT ON COLUMN pool_health.sessions.pins_xmin IS
'Holds an xid or a snapshot that holds back the xmin horizon (and so vacuum)';
COMMENT ON COLUMN pool_health.sessions.blocking IS
'Number of sessions waiting on locks this session holds';
COMMENT ON COLUMN pool_health.sessions.leak IS
'NULL, or why the session counts as leaked: idle_in_transaction, idle_in_transaction_aborted, long_transaction, stale_idle';
COMMENT ON COLUMN pool_health.sessions.policy IS
'Name of the policy governing the session, if any';
COMMENT ON COLUMN pool_health.sessions.exempt IS
'NULL, or why pool_health never acts on the session whatever a policy says: not a client backend, authenticating, the calling session, role listed in pool_health.protected_roles, superuser session (no allow_superuser)';
COMMENT ON COLUMN pool_health.sessions.blocked_by IS
'While waiting on a lock: the pid of the first session it waits for';
COMMENT ON COLUMN pool_health.sessions.blocking_since IS
'While others wait on its locks: when the earliest of those waits began (blocking_timeout counts from here)';
COMMENT ON COLUMN pool_health.sessions.xact_first_query IS
'The first statement of the current transaction (after BEGIN, or the statement itself in autocommit; the client''s, not one a function ran), truncated to pool_health.first_query_size; needs the preload; visible as query is';
COMMENT ON COLUMN pool_health.sessions.xact_first_query_at IS
'When xact_first_query started';
COMMENT ON COLUMN pool_health.sessions.xact_tags IS
'The key/value pairs of a sqlcommenter comment in xact_first_query (/*route=''/checkout'',controller=''orders''*/, URL-decoded), or NULL';

CREATE FUNCTION pool_health.get_usage(
    OUT max_connections integer,
    OUT reserved_connections integer,
    OUT usable integer,
    OUT used integer,
    OUT active integer,
    OUT idle integer,
    OUT idle_in_transaction integer,
    OUT waiting integer,
    OUT leaked integer,
    OUT free integer,
    OUT usage_percent double precision,
    OUT level text,
    OUT reasons text[],
    OUT oldest_xact_age interval,
    OUT longest_idle_in_transaction interval,
    OUT reserved_used integer,
    OUT lock_waits integer)
RETURNS record
AS 'MODULE_PATHNAME', 'pool_health_get_usage'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_usage() IS
'Server-wide connection usage and health level; the function behind pool_health.usage';

CREATE VIEW pool_health.usage AS
    SELECT max_connections, reserved_connections, usable, used,
           active, idle, idle_in_transaction, waiting, leaked, free,
           round(usage_percent::numeric, 1) AS usage_percent,
           level, reasons, oldest_xact_age, longest_idle_in_transaction,
           reserved_used, lock_waits
    FROM pool_health.get_usage();

COMMENT ON VIEW pool_health.usage IS
'One row: connection usage against the real limit and the health level (healthy, degraded, critical, exhausted) with the reasons for it. Counts only; readable by every role';
COMMENT ON COLUMN pool_health.usage.reserved_connections IS
'superuser_reserved_connections, plus reserved_connections on PostgreSQL 16 and later';
COMMENT ON COLUMN pool_health.usage.usable IS
'Slots ordinary roles can get: max_connections minus reserved_connections';
COMMENT ON COLUMN pool_health.usage.used IS
'Client backends; walsenders, autovacuum and background workers have slots of their own and are not counted';
COMMENT ON COLUMN pool_health.usage.waiting IS
'Client backends waiting on a heavyweight lock (a subset of active)';
COMMENT ON COLUMN pool_health.usage.leaked IS
'Client sessions with a non-NULL leak in pool_health.sessions';
COMMENT ON COLUMN pool_health.usage.free IS
'Usable slots not in use';
COMMENT ON COLUMN pool_health.usage.usage_percent IS
'used / usable x 100, at most 100 (see reserved_used)';
COMMENT ON COLUMN pool_health.usage.level IS
'healthy, degraded (at pool_health.degraded_percent, or leaks, or long lock waits), critical (at pool_health.critical_percent) or exhausted (no usable slot free)';
COMMENT ON COLUMN pool_health.usage.reserved_used IS
'Client backends beyond the usable slots: superusers (or, from PostgreSQL 16, pg_use_reserved_connections members) in the reserved slots';
COMMENT ON COLUMN pool_health.usage.lock_waits IS
'Client backends waiting on a lock for longer than pool_health.lock_wait_after (a reason, naming the blocker, and at least degraded)';

CREATE FUNCTION pool_health.get_usage_by(group_by text,
    OUT key text,
    OUT connections integer,
    OUT active integer,
    OUT idle integer,
    OUT idle_in_transaction integer,
    OUT waiting integer,
    OUT leaked integer,
    OUT oldest_xact_age interval,
    OUT longest_idle interval,
    OUT share_percent double precision,
    OUT policy text,
    OUT quota integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_usage_by'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_usage_by(text) IS
'Client connections grouped by database, role, application_name or client_addr, with the policy governing every session of the group, if one does, and its quota; the function behind the usage_by_* views';

CREATE VIEW pool_health.usage_by_database AS
    SELECT key::name AS database, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle,
           round(share_percent::numeric, 1) AS share_percent, policy, quota
    FROM pool_health.get_usage_by('database');

CREATE VIEW pool_health.usage_by_role AS
    SELECT key::name AS role, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle,
           round(share_percent::numeric, 1) AS share_percent, policy, quota
    FROM pool_health.get_usage_by('role');

CREATE VIEW pool_health.usage_by_application AS
    SELECT key AS application_name, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle,
           round(share_percent::numeric, 1) AS share_percent, policy, quota
    FROM pool_health.get_usage_by('application_name');

CREATE VIEW pool_health.usage_by_client AS
    SELECT key::inet AS client_addr, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle,
           round(share_percent::numeric, 1) AS share_percent, policy, quota
    FROM pool_health.get_usage_by('client_addr');

COMMENT ON VIEW pool_health.usage_by_database IS
'Client connections per database: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_role IS
'Client connections per role: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_application IS
'Client connections per application_name: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_client IS
'Client connections per client address (NULL: Unix socket): counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';

CREATE VIEW pool_health.leaks AS
    SELECT * FROM (
        SELECT 'session'::text AS kind,
               s.pid, s.database, s.role, s.application_name, s.client_addr,
               s.leak,
               CASE WHEN s.leak IN ('idle_in_transaction', 'idle_in_transaction_aborted', 'stale_idle')
                    THEN s.idle_for ELSE s.xact_age END AS leaked_for,
               s.xact_start, s.state, s.pins_xmin, s.blocking,
               s.query AS detail, s.client_port, s.xact_first_query, s.xact_tags
        FROM pool_health.sessions s
        WHERE s.leak IS NOT NULL
        UNION ALL
        SELECT 'prepared_transaction', NULL, p.database, p.owner, NULL, NULL,
               'prepared_transaction', now() - p.prepared,
               p.prepared, NULL, true, NULL,
               format('prepared transaction %L (xid %s)', p.gid, p.transaction), NULL, NULL, NULL
        FROM pg_catalog.pg_prepared_xacts p
        -- the setting is missing only until the library is loaded (no preload):
        -- fall back to its default
        WHERE now() - p.prepared >
              coalesce(current_setting('pool_health.leak_after', true), '1min')::interval
        UNION ALL
        SELECT 'replication_slot', r.active_pid, r.database, NULL, NULL, NULL,
               'replication_slot', NULL,
               NULL, CASE WHEN r.active THEN 'active' ELSE 'inactive' END, true, NULL,
               format('%s replication slot %I holds xmin %s, catalog_xmin %s',
                      r.slot_type, r.slot_name, coalesce(r.xmin::text, '-'),
                      coalesce(r.catalog_xmin::text, '-')), NULL, NULL, NULL
        FROM pg_catalog.pg_replication_slots r
        WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
    ) l
    ORDER BY leaked_for DESC NULLS LAST, kind, pid;

COMMENT ON VIEW pool_health.leaks IS
'What holds connections or the xmin horizon for too long, worst first: leaked sessions (see pool_health.sessions.leak, with the client port to find the client process and the first statement of the transaction to find the code that opened it), prepared transactions older than pool_health.leak_after, and replication slots holding back xmin';

-- ---------------------------------------------------------------------
-- Per-application accounting and pool sizing (with the preload)
-- ---------------------------------------------------------------------

CREATE FUNCTION pool_health.get_application_stats(
    OUT database text,
    OUT role text,
    OUT application_name text,
    OUT connections integer,
    OUT connections_peak integer,
    OUT in_xact integer,
    OUT in_xact_peak integer,
    OUT xacts bigint,
    OUT xact_time interval,
    OUT xact_p50 interval,
    OUT xact_p95 interval,
    OUT xact_p99 interval,
    OUT xact_max interval,
    OUT idle_in_xact_time interval,
    OUT idle_in_xact_share double precision,
    OUT terminated bigint,
    OUT refused bigint,
    OUT since timestamptz,
    OUT other boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_application_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_application_stats() IS
'Exact per-application accounting since the last reset, one row per (database, role, application_name) group; the function behind pool_health.application_stats';

CREATE VIEW pool_health.application_stats AS
    SELECT database, role, application_name, connections, connections_peak,
           in_xact, in_xact_peak, xacts, xact_time,
           xact_p50, xact_p95, xact_p99, xact_max,
           idle_in_xact_time,
           round(idle_in_xact_share::numeric, 1) AS idle_in_xact_share,
           terminated, refused, since
    FROM pool_health.get_application_stats()
    ORDER BY other, connections_peak DESC, xacts DESC, database, role, application_name;

COMMENT ON VIEW pool_health.application_stats IS
'Per (database, role, application_name), counted by each backend at login, at the start and end of every transaction and at exit: connections now and their exact peak, sessions in a transaction now and their exact peak (peaks between samples included), finished transactions, their total time, percentiles from a log-scale histogram (within 6.25 %), time idle inside transactions and its share, sessions pool_health terminated, connections refused, since the last reset. At most pool_health.max_groups groups; the least recently seen are folded into (other)';

CREATE FUNCTION pool_health.get_application_history(
    OUT at timestamptz,
    OUT database text,
    OUT role text,
    OUT application_name text,
    OUT connections_max integer,
    OUT in_xact_max integer,
    OUT xacts bigint,
    OUT xact_time interval,
    OUT xact_p99 interval,
    OUT idle_in_xact_time interval,
    OUT other boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_application_history'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_application_history() IS
'Per minute and group, the accounting of pool_health.application_stats; the function behind pool_health.application_history';

CREATE VIEW pool_health.application_history AS
    SELECT at, database, role, application_name, connections_max, in_xact_max,
           xacts, xact_time, xact_p99, idle_in_xact_time
    FROM pool_health.get_application_history()
    ORDER BY at, other, database, role, application_name;

COMMENT ON VIEW pool_health.application_history IS
'Per minute (at: its start) and group that held a connection or ran a transaction in it: the most connections held and in a transaction at once (exact), transactions finished, their time and 99th percentile, time idle inside them. Kept for pool_health.application_history_retention, in shared memory';

CREATE FUNCTION pool_health.get_pool_advice(
    OUT database text,
    OUT role text,
    OUT application_name text,
    OUT connections_max integer,
    OUT in_xact_max integer,
    OUT in_xact_p99 integer,
    OUT in_xact_mean double precision,
    OUT xacts bigint,
    OUT idle_in_xact_share double precision,
    OUT suggested_pool_size integer,
    OUT excess_connections integer,
    OUT advice text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_pool_advice'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_pool_advice() IS
'Pool sizes from the measured concurrency of each group over pool_health.advice_window; the function behind pool_health.pool_advice';

CREATE VIEW pool_health.pool_advice AS
    SELECT database, role, application_name, connections_max, in_xact_max,
           in_xact_p99, round(in_xact_mean::numeric, 2) AS in_xact_mean, xacts,
           round(idle_in_xact_share::numeric, 1) AS idle_in_xact_share,
           suggested_pool_size, excess_connections, advice
    FROM pool_health.get_pool_advice();

COMMENT ON VIEW pool_health.pool_advice IS
'Per group over pool_health.advice_window: the most connections held at once (connections_max), the most in a transaction at once (in_xact_max, exact) and the 99th percentile of its per-minute maxima, the mean by Little''s law (transaction time / elapsed time), suggested_pool_size = max(1, ceil(1.25 * in_xact_max)), excess_connections = connections_max - in_xact_max, and what to change. The last row, (all), sums per minute and compares the suggested sizes with the usable connections';

CREATE FUNCTION pool_health.reset_application_stats()
RETURNS void
AS 'MODULE_PATHNAME', 'pool_health_reset_application_stats'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.reset_application_stats() IS
'Reset the counters of pool_health.application_stats (not connections and sessions in a transaction now; their peaks restart from them). Superusers, and roles granted EXECUTE on it';

-- ---------------------------------------------------------------------
-- Privileges (as in 1.1 for the objects re-created)
-- ---------------------------------------------------------------------

GRANT SELECT ON pool_health.usage, pool_health.sessions, pool_health.leaks TO PUBLIC;
REVOKE ALL ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_usage_by(text) FROM PUBLIC;
REVOKE ALL ON pool_health.policy_errors FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_policy_errors() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_usage_by(text),
    pool_health.get_policy_errors() TO pg_monitor;
-- only the extension's own trigger uses it (a trigger fires whatever the
-- privileges of who fires it): nobody may attach it to a table of theirs
REVOKE ALL ON FUNCTION pool_health.policies_changed() FROM PUBLIC;
GRANT SELECT ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client,
    pool_health.usage, pool_health.sessions, pool_health.leaks,
    pool_health.policy_errors TO pg_monitor;

REVOKE ALL ON pool_health.application_stats, pool_health.application_history,
    pool_health.pool_advice FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_application_stats(),
    pool_health.get_application_history(), pool_health.get_pool_advice(),
    pool_health.reset_application_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_application_stats(),
    pool_health.get_application_history(), pool_health.get_pool_advice() TO pg_monitor;
GRANT SELECT ON pool_health.application_stats, pool_health.application_history,
    pool_health.pool_advice TO pg_monitor;
