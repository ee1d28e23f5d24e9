/* pool_health--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pool_health UPDATE TO '1.3'" to load this file. \quit

-- 1.3: hostile clients held off (HTTP, statements, names), and what
-- applications and their pools are told is right at the edge.

-- ---------------------------------------------------------------------
-- Telling the application why (any driver): each audit row names the
-- limit and the session's login role by OID, and every role can read the
-- rows of its own sessions in pool_health.my_terminations.  The columns
-- are appended: the columns of an older version's table are a prefix of
-- a newer one's, which the library writes while the update has not run.
-- ---------------------------------------------------------------------

ALTER TABLE pool_health.terminations ADD COLUMN limit_name text,
    ADD COLUMN role_id oid;
COMMENT ON COLUMN pool_health.terminations.limit_name IS
'The limit that was exceeded: the policy''s (idle_in_transaction_timeout, idle_timeout, transaction_timeout, blocking_timeout), or the argument of the function called (older_than, target_percent); NULL in rows written before version 1.3';
COMMENT ON COLUMN pool_health.terminations.role_id IS
'The OID of the session''s login role (as pg_stat_activity.usesysid), by which pool_health.my_terminations finds a role''s rows; NULL in rows written before version 1.3';
CREATE INDEX terminations_role_id_pid_idx ON pool_health.terminations (role_id, pid);
COMMENT ON INDEX pool_health.terminations_role_id_pid_idx IS
'Finds a role''s rows, and one of its old backend pids, for pool_health.my_terminations';

ALTER TYPE pool_health.action ADD ATTRIBUTE limit_name text,
    ADD ATTRIBUTE role_id oid;
CREATE OR REPLACE VIEW pool_health.recent_actions AS
    SELECT * FROM pool_health.get_recent_actions();

CREATE FUNCTION pool_health.get_my_recent_actions()
RETURNS SETOF pool_health.action
AS 'MODULE_PATHNAME', 'pool_health_get_my_recent_actions'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION pool_health.get_my_recent_actions() IS
'The in-memory audit records of sessions of the session user (matched by role OID and name), oldest first; the in-memory part of pool_health.my_terminations. Empty without the preload';

CREATE FUNCTION pool_health.name_shown(name)
RETURNS name
AS 'MODULE_PATHNAME', 'pool_health_name_shown'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION pool_health.name_shown(name) IS
'A role or database name as pool_health shows and stores it in this database: each byte that is not part of a valid character written as \xHH and each backslash doubled, where there is one of either, cut to 63 bytes. The role of the audit rows is so; pool_health.my_terminations compares it with name_shown(session_user)';

-- A security barrier that holds: the view is one SELECT over the UNION
-- ALL of its two parts, not the UNION ALL itself, which the planner
-- would flatten into the caller's query (and with it the barrier), a
-- caller's cheap function then running before the role's condition.  So
-- only leakproof conditions (pid = 123: the lookup by pid uses the index)
-- reach the rows before the view's own; any other function of a caller
-- (in WHERE, a join, a view over this one) sees only the caller's rows.
-- A role's rows are those of its OID and of its name as the audit stored
-- it (name_shown(): escaped where it is not valid text here).  An
-- in-memory record is left out only when the table has it as a row this
-- condition shows: a row written without role_id (by a newer library on
-- an older table, in the upgrade window) does not hide the record.  The
-- view is bound at creation (OIDs): nothing in it resolves through a
-- caller's search_path.
CREATE VIEW pool_health.my_terminations WITH (security_barrier) AS
    SELECT mine.at, mine.pid, mine.backend_start, mine.database,
           mine.application_name, mine.client_addr, mine.client_port,
           mine.policy, mine.limit_name, mine.reason, mine.xact_first_query,
           mine.xact_tags, mine.dry_run, mine.action, mine.source
    FROM (
        SELECT t.at, t.pid, t.backend_start, t.database, t.application_name,
               t.client_addr, t.client_port, t.policy, t.limit_name, t.reason,
               t.xact_first_query, t.xact_tags, t.dry_run, t.action, t.source
        FROM pool_health.terminations t
        WHERE t.role_id OPERATOR(pg_catalog.=)
                  (SELECT r.oid FROM pg_catalog.pg_roles r
                   WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER)
          AND t.role OPERATOR(pg_catalog.=)
                  (SELECT pool_health.name_shown(SESSION_USER))
        UNION ALL
        SELECT m.at, m.pid, m.backend_start, m.database, m.application_name,
               m.client_addr, m.client_port, m.policy, m.limit_name, m.reason,
               m.xact_first_query, m.xact_tags, m.dry_run, m.action, m.source
        FROM pool_health.get_my_recent_actions() m
        WHERE NOT EXISTS (
            SELECT FROM pool_health.terminations t
            WHERE t.at OPERATOR(pg_catalog.=) m.at
              AND t.pid OPERATOR(pg_catalog.=) m.pid
              AND t.role_id OPERATOR(pg_catalog.=)
                      (SELECT r.oid FROM pg_catalog.pg_roles r
                       WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER)
              AND t.role OPERATOR(pg_catalog.=)
                      (SELECT pool_health.name_shown(SESSION_USER)))
    ) mine;
COMMENT ON VIEW pool_health.my_terminations IS
'What pool_health did to sessions of the current role (session_user; matched by role OID and name), for an application that lost its connection to look its old backend pid up: the rows of pool_health.terminations of this database, and the in-memory records of this server not in it (a hot standby''s own, a rolled-back call''s, other databases''). Open to every role';

GRANT SELECT ON pool_health.my_terminations TO PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_my_recent_actions() TO PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.name_shown(name) TO PUBLIC;
-- Pool advice that is right for every kind of pool: the kind of each
-- row (the (all) and (other) rows have no application_name), the pool
-- size a client declares, the share of the time a pool was saturated,
-- and the demand estimated by Little's law
-- ---------------------------------------------------------------------

DROP VIEW pool_health.pool_advice;
DROP FUNCTION pool_health.get_pool_advice();

CREATE FUNCTION pool_health.get_pool_advice(
    OUT kind text,
    OUT database text,
    OUT role text,
    OUT application_name text,
    OUT declared_pool_size integer,
    OUT connections_max integer,
    OUT in_xact_max integer,
    OUT in_xact_p99 integer,
    OUT in_xact_mean double precision,
    OUT saturated_share double precision,
    OUT xacts bigint,
    OUT idle_in_xact_share double precision,
    OUT demand_p99 integer,
    OUT suggested_pool_size integer,
    OUT excess_connections integer,
    OUT advice text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_pool_advice'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_pool_advice() IS
'Pool sizes from the measured concurrency of each group over pool_health.advice_window; the function behind pool_health.pool_advice';

CREATE VIEW pool_health.pool_advice AS
    SELECT kind, database, role, application_name, declared_pool_size,
           connections_max, in_xact_max, in_xact_p99,
           round(in_xact_mean::numeric, 2) AS in_xact_mean,
           round(saturated_share::numeric, 1) AS saturated_share, xacts,
           round(idle_in_xact_share::numeric, 1) AS idle_in_xact_share,
           demand_p99, suggested_pool_size, excess_connections, advice
    FROM pool_health.get_pool_advice();

COMMENT ON VIEW pool_health.pool_advice IS
'Per group over pool_health.advice_window (rates and means over the time each group existed in it): how many connections its pool held and needed at once, whether it was saturated, the pool size that serves it, and what to change. The last row (kind all) compares the sum of the suggested sizes with the usable connections, with the server''s exact maxima';
COMMENT ON COLUMN pool_health.pool_advice.kind IS
'application (a group), other (the groups evicted into (other)), or all (the whole server; application_name, database and role are null for other and all)';
COMMENT ON COLUMN pool_health.pool_advice.database IS 'The group''s database (null for other and all)';
COMMENT ON COLUMN pool_health.pool_advice.role IS 'The group''s login role (null for other and all)';
COMMENT ON COLUMN pool_health.pool_advice.application_name IS 'The group''s application_name (null for other and all)';
COMMENT ON COLUMN pool_health.pool_advice.declared_pool_size IS
'The largest pool size its sessions declared with pool_health.client_pool_size in the window (null: none declared)';
COMMENT ON COLUMN pool_health.pool_advice.connections_max IS
'The most connections held at once (for all: by the whole server, each session counted once, exact)';
COMMENT ON COLUMN pool_health.pool_advice.in_xact_max IS
'The most sessions in a transaction at once, exact (for all: by the whole server)';
COMMENT ON COLUMN pool_health.pool_advice.in_xact_p99 IS
'The 99th percentile of the per-minute in_xact_max';
COMMENT ON COLUMN pool_health.pool_advice.in_xact_mean IS
'Little''s law: transaction time / the time the group existed in the window (for all: since the accounting began in it), the connections its transactions kept busy on average';
COMMENT ON COLUMN pool_health.pool_advice.saturated_share IS
'Percent of the time the group existed in the window during which every connection it held was in a transaction (exact; null for other and all)';
COMMENT ON COLUMN pool_health.pool_advice.xacts IS 'Transactions finished in the window';
COMMENT ON COLUMN pool_health.pool_advice.idle_in_xact_share IS
'Percent of the transaction time spent idle inside transactions';
COMMENT ON COLUMN pool_health.pool_advice.demand_p99 IS
'Connections that leave 99 % of its requests one free (Erlang''s C formula), for requests arriving at random with the load of its busiest minutes (Little''s L: transaction time per unit of time), or, when saturated, the load that explains how often it was, if more (null for all)';
COMMENT ON COLUMN pool_health.pool_advice.suggested_pool_size IS
'Saturated (at its declared size, or at its peak connections for half the time, with every connection in a transaction): max(demand_p99, its size + 1); otherwise max(1, min(ceil(1.25 * in_xact_max), its size)). For all: the sum over the groups, those that only sessions which had changed application_name held counting for at most the most such sessions connected at once';
COMMENT ON COLUMN pool_health.pool_advice.excess_connections IS
'connections_max - in_xact_max: held beyond what its transactions ever used at once (for all: the sum over the groups)';
COMMENT ON COLUMN pool_health.pool_advice.advice IS
'What to change: pool saturated, pool larger than needed, declare the pool''s size, transactions idle too long, ran no transaction, or fits; for all, the connection budget';

REVOKE ALL ON pool_health.pool_advice FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_pool_advice() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_pool_advice() TO pg_monitor;
GRANT SELECT ON pool_health.pool_advice TO pg_monitor;

-- ---------------------------------------------------------------------
-- Comments that said otherwise than the code does, and a trigger
-- function nobody needs to be granted
-- ---------------------------------------------------------------------

COMMENT ON COLUMN pool_health.policies.blocking_timeout IS
'Limit: how long the session may keep other sessions waiting on its locks, counted from the earliest of their waits (sessions.blocking_since)';
COMMENT ON VIEW pool_health.usage_by_policy IS
'Client sessions per governing policy, with the policy''s quota (max_connections), refuse_at, the admission counter that connections are checked against, and the connections refused since the policy was created (counters are kept by policy name across edits; those two need the preload)';
REVOKE EXECUTE ON FUNCTION pool_health.validate_policy() FROM PUBLIC;
