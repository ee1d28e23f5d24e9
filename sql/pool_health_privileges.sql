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

DROP ROLE ph_nobody, ph_monitor;
