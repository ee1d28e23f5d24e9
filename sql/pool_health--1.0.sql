/* pool_health--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pool_health" to load this file. \quit

-- Refuse a schema pool_health prepared by someone else: the worker runs as
-- a superuser and acts on what this extension creates in it, so nobody but
-- superusers may own the schema or create objects in it, and it must be
-- empty.  (CREATE EXTENSION would otherwise reuse it silently.)  Every
-- name and operator here is qualified: the schema may hold look-alikes.
DO $$
DECLARE
    owner_name name;
    owner_is_superuser boolean;
    creators text;
    objects bigint;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_is_superuser
    FROM pg_catalog.pg_namespace n
         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
    WHERE n.nspname OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.name;
    IF NOT owner_is_superuser THEN
        RAISE EXCEPTION 'schema "pool_health" already exists and is owned by role "%", not by a superuser', owner_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pool_health runs a superuser worker that acts on the objects of this schema.',
                  HINT = 'Drop the schema, or make a superuser its owner after checking its contents, then run CREATE EXTENSION again.';
    END IF;
    SELECT pg_catalog.string_agg(CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid
                                      THEN 'PUBLIC' ELSE g.rolname::pg_catalog.text END, ', ')
    INTO creators
    FROM pg_catalog.pg_namespace n
         CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
         LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
    WHERE n.nspname OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.name
      AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
      AND NOT coalesce(g.rolsuper, false);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'schema "pool_health" grants CREATE to roles that are not superusers: %', creators
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA pool_health from them, then run CREATE EXTENSION again.';
    END IF;
    SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c
            WHERE c.relnamespace OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.regnamespace)
         OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
            WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.regnamespace)
         OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_type t
            WHERE t.typnamespace OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.regnamespace)
         OPERATOR(pg_catalog.+)
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_operator o
            WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'pool_health'::pg_catalog.regnamespace)
    INTO objects;
    IF objects OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'schema "pool_health" already contains % objects', objects
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'Create the extension into an empty schema: drop or empty the existing one first.';
    END IF;
END
$$;

-- ---------------------------------------------------------------------
-- Live views: one C pass over backend status per query
-- ---------------------------------------------------------------------

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
    OUT query text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_sessions'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_sessions() IS
'One row per backend from one pass over backend status; the function behind pool_health.sessions';

CREATE VIEW pool_health.sessions AS
    SELECT * FROM pool_health.get_sessions();

COMMENT ON VIEW pool_health.sessions IS
'One row per backend: state, idle time, transaction age, whether it holds back vacuum, how many sessions it blocks, and why it counts as leaked. Details of other roles'' sessions need pg_read_all_stats, as in pg_stat_activity';
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
    OUT longest_idle_in_transaction interval)
RETURNS record
AS 'MODULE_PATHNAME', 'pool_health_get_usage'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_usage() IS
'Server-wide connection usage and health level; the function behind pool_health.usage';

CREATE VIEW pool_health.usage AS
    SELECT max_connections, reserved_connections, usable, used,
           active, idle, idle_in_transaction, waiting, leaked, free,
           round(usage_percent::numeric, 1) AS usage_percent,
           level, reasons, oldest_xact_age, longest_idle_in_transaction
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
'used / usable x 100';
COMMENT ON COLUMN pool_health.usage.level IS
'healthy, degraded (at pool_health.degraded_percent, or leaks), critical (at pool_health.critical_percent) or exhausted (no usable slot free)';

-- Per-group usage: counts per state over client backends, grouped by one
-- column of pool_health.sessions; the usage_by_* views name the key.
CREATE FUNCTION pool_health.usage_by_group(group_by text,
    OUT key text,
    OUT connections integer,
    OUT active integer,
    OUT idle integer,
    OUT idle_in_transaction integer,
    OUT waiting integer,
    OUT leaked integer,
    OUT oldest_xact_age interval,
    OUT longest_idle interval,
    OUT share_percent numeric)
RETURNS SETOF record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF group_by IS NULL OR group_by NOT IN ('database', 'role', 'application_name', 'client_addr') THEN
        RAISE EXCEPTION 'invalid group_by: %', quote_nullable(group_by)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use database, role, application_name or client_addr.';
    END IF;
    RETURN QUERY
        SELECT g.k,
               count(*)::integer AS connections,
               count(*) FILTER (WHERE s.state = 'active')::integer AS active,
               count(*) FILTER (WHERE s.state = 'idle')::integer AS idle,
               count(*) FILTER (WHERE s.state LIKE 'idle in transaction%')::integer AS idle_in_transaction,
               count(*) FILTER (WHERE s.waiting)::integer AS waiting,
               count(s.leak)::integer AS leaked,
               max(s.xact_age) AS oldest_xact_age,
               max(s.idle_for) AS longest_idle,
               round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS share_percent
        FROM pool_health.sessions s,
             LATERAL (SELECT CASE group_by
                                 WHEN 'database' THEN s.database::text
                                 WHEN 'role' THEN s.role::text
                                 WHEN 'application_name' THEN s.application_name
                                 WHEN 'client_addr' THEN s.client_addr::text
                             END AS k) g
        WHERE s.backend_type = 'client backend'
        GROUP BY g.k;
END
$$;

COMMENT ON FUNCTION pool_health.usage_by_group(text) IS
'Client connections grouped by one column of pool_health.sessions (database, role, application_name or client_addr); the function behind the usage_by_* views';

CREATE VIEW pool_health.usage_by_database AS
    SELECT key::name AS database, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent
    FROM pool_health.usage_by_group('database');

CREATE VIEW pool_health.usage_by_role AS
    SELECT key::name AS role, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent
    FROM pool_health.usage_by_group('role');

CREATE VIEW pool_health.usage_by_application AS
    SELECT key AS application_name, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent
    FROM pool_health.usage_by_group('application_name');

CREATE VIEW pool_health.usage_by_client AS
    SELECT key::inet AS client_addr, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent
    FROM pool_health.usage_by_group('client_addr');

COMMENT ON VIEW pool_health.usage_by_database IS
'Client connections per database: counts per state, leaks, oldest transaction, longest idle time and share of all client connections';
COMMENT ON VIEW pool_health.usage_by_role IS
'Client connections per role: counts per state, leaks, oldest transaction, longest idle time and share of all client connections';
COMMENT ON VIEW pool_health.usage_by_application IS
'Client connections per application_name: counts per state, leaks, oldest transaction, longest idle time and share of all client connections';
COMMENT ON VIEW pool_health.usage_by_client IS
'Client connections per client address (NULL: Unix socket): counts per state, leaks, oldest transaction, longest idle time and share of all client connections';

CREATE VIEW pool_health.leaks AS
    SELECT * FROM (
        SELECT 'session'::text AS kind,
               s.pid, s.database, s.role, s.application_name, s.client_addr,
               s.leak,
               CASE WHEN s.leak LIKE 'idle%' THEN s.idle_for ELSE s.xact_age END AS leaked_for,
               s.xact_start, s.state, s.pins_xmin, s.blocking,
               s.query AS detail
        FROM pool_health.sessions s
        WHERE s.leak IS NOT NULL
        UNION ALL
        SELECT 'prepared_transaction', NULL, p.database, p.owner, NULL, NULL,
               'prepared_transaction', now() - p.prepared,
               p.prepared, NULL, true, NULL,
               format('prepared transaction %L (xid %s)', p.gid, p.transaction)
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
                      coalesce(r.catalog_xmin::text, '-'))
        FROM pg_catalog.pg_replication_slots r
        WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
    ) l
    ORDER BY leaked_for DESC NULLS LAST, kind, pid;

COMMENT ON VIEW pool_health.leaks IS
'What holds connections or the xmin horizon for too long, worst first: leaked sessions (see pool_health.sessions.leak), prepared transactions older than pool_health.leak_after, and replication slots holding back xmin';

-- ---------------------------------------------------------------------
-- Health endpoints
-- ---------------------------------------------------------------------

CREATE FUNCTION pool_health.status()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pool_health_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.status() IS
'Health endpoint: level, reasons, usage, leaks, top consumers, worker state and back-pressure advice (throttle, suggested_new_connections) as jsonb. Counts only; callable by every role';

CREATE FUNCTION pool_health.ping()
RETURNS boolean
AS 'MODULE_PATHNAME', 'pool_health_ping'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.ping() IS
'True unless the level is critical or exhausted: for load-balancer health checks. Callable by every role';

-- ---------------------------------------------------------------------
-- History and forecast (need the preload: the worker fills shared memory)
-- ---------------------------------------------------------------------

CREATE FUNCTION pool_health.get_history(
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    resolution text DEFAULT 'auto',
    OUT at timestamptz,
    OUT resolution text,
    OUT samples integer,
    OUT usable integer,
    OUT used integer,
    OUT used_min integer,
    OUT used_avg double precision,
    OUT used_max integer,
    OUT active integer,
    OUT idle integer,
    OUT idle_in_transaction integer,
    OUT waiting integer,
    OUT leaked integer,
    OUT terminated integer,
    OUT refused integer,
    OUT usage_percent double precision,
    OUT level text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_history'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_history(timestamptz, timestamptz, text) IS
'History between two times (NULL: unbounded) at a resolution: raw (every sample), minute (per-minute aggregates) or auto (minutes older than the oldest raw sample, then raw samples). Needs the preload';

CREATE VIEW pool_health.history AS
    SELECT at, resolution, samples, usable, used, used_min,
           round(used_avg::numeric, 1) AS used_avg, used_max,
           active, idle, idle_in_transaction, waiting, leaked, terminated, refused,
           round(usage_percent::numeric, 1) AS usage_percent, level
    FROM pool_health.get_history();

COMMENT ON VIEW pool_health.history IS
'What the worker sampled, oldest first: per-minute aggregates for the past days, then raw samples for the recent past. Kept across worker restarts and clean server restarts. Needs the preload';
COMMENT ON COLUMN pool_health.history.resolution IS
'raw: one sample; minute: aggregate of the samples of the minute starting at "at"';
COMMENT ON COLUMN pool_health.history.used IS
'Client backends in use; for a minute, the peak (see used_min, used_avg, used_max)';
COMMENT ON COLUMN pool_health.history.active IS
'For a minute, the average over its samples (as idle and idle_in_transaction)';
COMMENT ON COLUMN pool_health.history.leaked IS
'Leaked sessions; for a minute, the peak (as waiting)';
COMMENT ON COLUMN pool_health.history.terminated IS
'Sessions pool_health ended since the previous sample (for a minute, in the minute)';
COMMENT ON COLUMN pool_health.history.refused IS
'Connections pool_health refused since the previous sample (for a minute, in the minute)';
COMMENT ON COLUMN pool_health.history.level IS
'Health level of the sample; for a minute, the worst';

CREATE FUNCTION pool_health.get_forecast(
    OUT window_start timestamptz,
    OUT window_end timestamptz,
    OUT samples integer,
    OUT resolution text,
    OUT used integer,
    OUT usable integer,
    OUT trend_per_minute double precision,
    OUT time_to_exhaustion interval,
    OUT exhaustion_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'pool_health_get_forecast'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_forecast() IS
'Linear trend of used over the last pool_health.forecast_window of history; the function behind pool_health.forecast';

CREATE VIEW pool_health.forecast AS
    SELECT window_start, window_end, samples, resolution, used, usable,
           round(trend_per_minute::numeric, 3) AS trend_per_minute,
           time_to_exhaustion, exhaustion_at
    FROM pool_health.get_forecast();

COMMENT ON VIEW pool_health.forecast IS
'Trend of connection usage over the last pool_health.forecast_window and the estimated time until no usable slot is free (NULL when usage is not rising). Needs the preload';
COMMENT ON COLUMN pool_health.forecast.trend_per_minute IS
'Slope of the least-squares line through used, in connections per minute';

-- ---------------------------------------------------------------------
-- Privileges: counts (usage, history, forecast) for everyone; per-session
-- details follow pg_stat_activity (filtered in C); per-group views for
-- pg_monitor.
-- ---------------------------------------------------------------------

GRANT USAGE ON SCHEMA pool_health TO PUBLIC;
GRANT SELECT ON pool_health.usage, pool_health.sessions, pool_health.leaks,
    pool_health.history, pool_health.forecast TO PUBLIC;
REVOKE ALL ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.usage_by_group(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.usage_by_group(text) TO pg_monitor;
GRANT SELECT ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client,
    pool_health.usage, pool_health.sessions, pool_health.leaks,
    pool_health.history, pool_health.forecast TO pg_monitor;
