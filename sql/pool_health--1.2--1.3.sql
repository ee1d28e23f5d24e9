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

-- A security barrier: a caller's own functions in WHERE (a leaky one that
-- raises a NOTICE with its argument) see only rows the view's condition
-- let through.  The view is bound at creation (OIDs): nothing in it
-- resolves through a caller's search_path.
CREATE VIEW pool_health.my_terminations WITH (security_barrier) AS
    SELECT t.at, t.pid, t.backend_start, t.database, t.application_name,
           t.client_addr, t.client_port, t.policy, t.limit_name, t.reason,
           t.xact_first_query, t.xact_tags, t.dry_run, t.action, t.source
    FROM pool_health.terminations t
    WHERE t.role_id OPERATOR(pg_catalog.=)
              (SELECT r.oid FROM pg_catalog.pg_roles r
               WHERE r.rolname OPERATOR(pg_catalog.=) SESSION_USER)
      AND t.role OPERATOR(pg_catalog.=) SESSION_USER
    UNION ALL
    SELECT m.at, m.pid, m.backend_start, m.database, m.application_name,
           m.client_addr, m.client_port, m.policy, m.limit_name, m.reason,
           m.xact_first_query, m.xact_tags, m.dry_run, m.action, m.source
    FROM pool_health.get_my_recent_actions() m
    WHERE NOT EXISTS (SELECT FROM pool_health.terminations t
                      WHERE t.at OPERATOR(pg_catalog.=) m.at
                        AND t.pid OPERATOR(pg_catalog.=) m.pid);
COMMENT ON VIEW pool_health.my_terminations IS
'What pool_health did to sessions of the current role (session_user; matched by role OID and name), for an application that lost its connection to look its old backend pid up: the rows of pool_health.terminations of this database, and the in-memory records of this server not in it (a hot standby''s own, a rolled-back call''s, other databases''). Open to every role';

GRANT SELECT ON pool_health.my_terminations TO PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_my_recent_actions() TO PUBLIC;
