/* pool_health--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pool_health UPDATE TO '1.1'" to load this file. \quit

-- 1.1: policies, enforcement and audit, cleanup functions, admission
-- control, Prometheus metrics; the per-group views show the governing
-- policy and its quota.

-- ---------------------------------------------------------------------
-- Policies: which sessions may stay how long, edited with plain SQL
-- ---------------------------------------------------------------------

CREATE TABLE pool_health.policies (
    name text PRIMARY KEY,
    priority integer NOT NULL DEFAULT 0,
    database name,
    role name,
    application_name text,
    client_addr cidr,
    idle_in_transaction_timeout interval,
    idle_timeout interval,
    transaction_timeout interval,
    blocking_timeout interval,
    max_connections integer,
    action text NOT NULL DEFAULT 'terminate',
    dry_run boolean NOT NULL DEFAULT false,
    allow_superuser boolean NOT NULL DEFAULT false,
    refuse_at text,
    enabled boolean NOT NULL DEFAULT true,
    comment text
);

COMMENT ON TABLE pool_health.policies IS
'Policies: a session is governed by the enabled policy of highest priority whose match columns (NULL matches anything) all match it; ties go to the most specific policy, then to the name. Its limits are enforced by the worker (pool_health.enforce) and by pool_health.cleanup()';
COMMENT ON COLUMN pool_health.policies.priority IS 'Higher wins when several policies match';
COMMENT ON COLUMN pool_health.policies.database IS 'Match: database name (NULL: any)';
COMMENT ON COLUMN pool_health.policies.role IS 'Match: role name (NULL: any)';
COMMENT ON COLUMN pool_health.policies.application_name IS 'Match: a LIKE pattern on application_name (NULL: any)';
COMMENT ON COLUMN pool_health.policies.client_addr IS 'Match: the client address is in this network (NULL: any; a Unix-socket session never matches a network)';
COMMENT ON COLUMN pool_health.policies.idle_in_transaction_timeout IS 'Limit: how long a session may stay idle in transaction';
COMMENT ON COLUMN pool_health.policies.idle_timeout IS 'Limit: how long a session may stay idle outside a transaction';
COMMENT ON COLUMN pool_health.policies.transaction_timeout IS 'Limit: how old a transaction may get, active or idle';
COMMENT ON COLUMN pool_health.policies.blocking_timeout IS 'Limit: how old a transaction may get while other sessions wait on its locks (a shorter limit for blockers)';
COMMENT ON COLUMN pool_health.policies.max_connections IS 'Quota: connections the governed sessions may hold together (admission control)';
COMMENT ON COLUMN pool_health.policies.action IS 'terminate (end the session) or log (only record it)';
COMMENT ON COLUMN pool_health.policies.dry_run IS 'Record what would be done, do nothing';
COMMENT ON COLUMN pool_health.policies.allow_superuser IS 'Whether the policy may end superuser sessions (never by default)';
COMMENT ON COLUMN pool_health.policies.refuse_at IS 'Admission control: refuse new governed connections while the level is at or above degraded or critical';
COMMENT ON COLUMN pool_health.policies.enabled IS 'Disabled policies govern nothing';

CREATE FUNCTION pool_health.validate_policy()
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
           (extract(epoch FROM limit_value) < 0.001 OR extract(epoch FROM limit_value) > 31536000) THEN
            RAISE EXCEPTION 'invalid % for policy "%": %', limit_name, NEW.name, limit_value
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A limit must be positive: at least 1 millisecond, at most 1 year.',
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

COMMENT ON FUNCTION pool_health.validate_policy() IS
'Trigger: rejects invalid policies (non-positive limits, unknown action or refuse_at, quota below 1, bad pattern) with a clear message';

CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON pool_health.policies
    FOR EACH ROW EXECUTE FUNCTION pool_health.validate_policy();

CREATE FUNCTION pool_health.policies_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pool_health_policies_changed'
LANGUAGE C;

COMMENT ON FUNCTION pool_health.policies_changed() IS
'Trigger: tells the worker, at commit, that the policies changed';

CREATE TRIGGER changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pool_health.policies
    FOR EACH STATEMENT EXECUTE FUNCTION pool_health.policies_changed();

SELECT pg_catalog.pg_extension_config_dump('pool_health.policies', '');

-- ---------------------------------------------------------------------
-- Audit: every action taken, or that would have been taken
-- ---------------------------------------------------------------------

CREATE TABLE pool_health.terminations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    pid integer NOT NULL,
    role name,
    database name,
    application_name text,
    client_addr inet,
    backend_start timestamptz,
    xact_start timestamptz,
    state text,
    state_change timestamptz,
    query text,
    policy text,
    reason text NOT NULL,
    action text NOT NULL,
    dry_run boolean NOT NULL,
    success boolean,
    source text NOT NULL,
    requested_by name
);

CREATE INDEX ON pool_health.terminations (at);

COMMENT ON SEQUENCE pool_health.terminations_id_seq IS
'Numbers the rows of pool_health.terminations';

COMMENT ON TABLE pool_health.terminations IS
'Audit log: one row per session pool_health ended, logged, or (dry run) would have ended, by the worker or by a function. On a standby the same records go to the server log and to pool_health.recent_actions';
COMMENT ON COLUMN pool_health.terminations.query IS 'The session''s last query, truncated to 1 kB';
COMMENT ON COLUMN pool_health.terminations.policy IS 'The policy applied; NULL for manual calls such as terminate_idle()';
COMMENT ON COLUMN pool_health.terminations.reason IS 'Which limit, its value and the observed age';
COMMENT ON COLUMN pool_health.terminations.action IS 'terminate or log';
COMMENT ON COLUMN pool_health.terminations.success IS 'Whether the termination signal was delivered; NULL when nothing was sent (dry run, log)';
COMMENT ON COLUMN pool_health.terminations.source IS 'worker, or the function that acted (cleanup, terminate_idle, terminate_idle_in_transaction, reclaim)';
COMMENT ON COLUMN pool_health.terminations.requested_by IS 'The role that called the function; NULL for the worker';

SELECT pg_catalog.pg_extension_config_dump('pool_health.terminations', '');
SELECT pg_catalog.pg_extension_config_dump('pool_health.terminations_id_seq', '');

CREATE TYPE pool_health.action AS (
    at timestamptz,
    pid integer,
    role name,
    database name,
    application_name text,
    client_addr inet,
    backend_start timestamptz,
    xact_start timestamptz,
    state text,
    state_change timestamptz,
    query text,
    policy text,
    reason text,
    action text,
    dry_run boolean,
    success boolean,
    source text,
    requested_by name);

COMMENT ON TYPE pool_health.action IS
'One action on a session, as audited: the columns of pool_health.terminations; returned by the cleanup functions and pool_health.recent_actions';

CREATE FUNCTION pool_health.get_recent_actions()
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_get_recent_actions'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_recent_actions() IS
'The in-memory audit list; the function behind pool_health.recent_actions';

CREATE VIEW pool_health.recent_actions AS
    SELECT * FROM pool_health.get_recent_actions();

COMMENT ON VIEW pool_health.recent_actions IS
'The last pool_health.audit_memory actions of this server, from shared memory: the same records as pool_health.terminations, and the only queryable ones on a hot standby. Needs the preload';

-- ---------------------------------------------------------------------
-- Cleanup on request (psql, pg_cron): each returns what it did
-- ---------------------------------------------------------------------

CREATE FUNCTION pool_health.cleanup(
    dry_run boolean DEFAULT false)
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_cleanup'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pool_health.cleanup(boolean) IS
'Apply every policy now, as the worker does, and return the sessions acted on; each is audited. Acts only on sessions the caller could end with pg_terminate_backend()';

CREATE FUNCTION pool_health.terminate_idle_in_transaction(
    older_than interval,
    dry_run boolean DEFAULT false)
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_terminate_idle_in_transaction'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pool_health.terminate_idle_in_transaction(interval, boolean) IS
'End the sessions idle in transaction for longer than older_than (never superusers or protected roles), audited; returns them';

CREATE FUNCTION pool_health.terminate_idle(
    older_than interval,
    dry_run boolean DEFAULT false)
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_terminate_idle'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pool_health.terminate_idle(interval, boolean) IS
'End the sessions idle (outside a transaction) for longer than older_than (never superusers or protected roles), audited; returns them';

CREATE FUNCTION pool_health.reclaim(
    target_percent integer,
    dry_run boolean DEFAULT false)
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_reclaim'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pool_health.reclaim(integer, boolean) IS
'When usage is above target_percent of the usable slots, end idle sessions, lowest policy priority and longest idle first, until it is at most the target; audited; returns them';

-- ---------------------------------------------------------------------
-- Admission control: quotas and load shedding per policy
-- ---------------------------------------------------------------------

CREATE FUNCTION pool_health.get_policy_usage(
    OUT policy text,
    OUT priority integer,
    OUT connections integer,
    OUT max_connections integer,
    OUT refuse_at text,
    OUT admitted integer,
    OUT refused bigint,
    OUT quota_percent double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_policy_usage'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_policy_usage() IS
'Per enabled policy: governed sessions now, quota, refuse_at, admission counter and refusals; the function behind pool_health.usage_by_policy';

CREATE VIEW pool_health.usage_by_policy AS
    SELECT policy, priority, connections, max_connections, refuse_at,
           admitted, refused, round(quota_percent::numeric, 1) AS quota_percent
    FROM pool_health.get_policy_usage();

COMMENT ON VIEW pool_health.usage_by_policy IS
'Client sessions per governing policy, with the policy''s quota (max_connections), refuse_at, the admission counter that connections are checked against, and the connections refused since the policies last changed (those two need the preload)';
COMMENT ON COLUMN pool_health.usage_by_policy.connections IS
'Client sessions the policy governs now';
COMMENT ON COLUMN pool_health.usage_by_policy.admitted IS
'The admission counter new connections are checked against (kept at connect and exit, set right by the worker from its samples)';

CREATE FUNCTION pool_health.metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'pool_health_metrics'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.metrics() IS
'The health figures in Prometheus text exposition format (pool_health_* metrics with HELP and TYPE); per-group series bounded by pool_health.metrics_top_groups. Counts only; callable by every role';

-- ---------------------------------------------------------------------
-- The per-group views gain the governing policy and its quota
-- ---------------------------------------------------------------------

DROP VIEW pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client;
DROP FUNCTION pool_health.usage_by_group(text);

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
    OUT share_percent numeric,
    OUT policy text,
    OUT quota integer)
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
    WITH groups AS (
        SELECT g.k,
               count(*)::integer AS connections,
               count(*) FILTER (WHERE s.state = 'active')::integer AS active,
               count(*) FILTER (WHERE s.state = 'idle')::integer AS idle,
               count(*) FILTER (WHERE s.state LIKE 'idle in transaction%')::integer AS idle_in_transaction,
               count(*) FILTER (WHERE s.waiting)::integer AS waiting,
               count(s.leak)::integer AS leaked,
               max(s.xact_age) AS oldest_xact_age,
               max(s.idle_for) AS longest_idle,
               round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS share_percent,
               -- the policy, when one governs the whole group
               CASE WHEN count(DISTINCT s.policy) = 1 AND count(s.policy) = count(*)
                    THEN min(s.policy) END AS policy
        FROM pool_health.sessions s,
             LATERAL (SELECT CASE group_by
                                 WHEN 'database' THEN s.database::text
                                 WHEN 'role' THEN s.role::text
                                 WHEN 'application_name' THEN s.application_name
                                 WHEN 'client_addr' THEN s.client_addr::text
                             END AS k) g
        WHERE s.backend_type = 'client backend'
        GROUP BY g.k)
    SELECT groups.*, u.max_connections
    FROM groups LEFT JOIN pool_health.get_policy_usage() u ON u.policy = groups.policy;
END
$$;

COMMENT ON FUNCTION pool_health.usage_by_group(text) IS
'Client connections grouped by one column of pool_health.sessions (database, role, application_name or client_addr), with the policy governing the whole group, if one does, and its quota; the function behind the usage_by_* views';

CREATE VIEW pool_health.usage_by_database AS
    SELECT key::name AS database, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent,
           policy, quota
    FROM pool_health.usage_by_group('database');

CREATE VIEW pool_health.usage_by_role AS
    SELECT key::name AS role, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent,
           policy, quota
    FROM pool_health.usage_by_group('role');

CREATE VIEW pool_health.usage_by_application AS
    SELECT key AS application_name, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent,
           policy, quota
    FROM pool_health.usage_by_group('application_name');

CREATE VIEW pool_health.usage_by_client AS
    SELECT key::inet AS client_addr, connections, active, idle, idle_in_transaction,
           waiting, leaked, oldest_xact_age, longest_idle, share_percent,
           policy, quota
    FROM pool_health.usage_by_group('client_addr');

COMMENT ON VIEW pool_health.usage_by_database IS
'Client connections per database: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_role IS
'Client connections per role: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_application IS
'Client connections per application_name: counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';
COMMENT ON VIEW pool_health.usage_by_client IS
'Client connections per client address (NULL: Unix socket): counts per state, leaks, oldest transaction, longest idle time, share of all client connections, and the policy governing the whole group with its quota';

-- ---------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------

REVOKE ALL ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.usage_by_group(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_policy_usage() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.usage_by_group(text),
    pool_health.get_policy_usage() TO pg_monitor;
GRANT SELECT ON pool_health.usage_by_database, pool_health.usage_by_role,
    pool_health.usage_by_application, pool_health.usage_by_client,
    pool_health.usage_by_policy TO pg_monitor;
-- policies and the audit: readable by pg_monitor, changed by their owner only
REVOKE ALL ON pool_health.policies, pool_health.terminations FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_recent_actions() FROM PUBLIC;
GRANT SELECT ON pool_health.policies, pool_health.terminations,
    pool_health.recent_actions TO pg_monitor;
GRANT EXECUTE ON FUNCTION pool_health.get_recent_actions() TO pg_monitor;
-- the cleanup functions act only where the caller could by hand
GRANT EXECUTE ON FUNCTION pool_health.cleanup(boolean),
    pool_health.terminate_idle_in_transaction(interval, boolean),
    pool_health.terminate_idle(interval, boolean),
    pool_health.reclaim(integer, boolean) TO PUBLIC;
