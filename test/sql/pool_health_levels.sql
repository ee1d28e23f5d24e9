-- Level thresholds, driven by real connections (dblink), on an instance with
-- max_connections = 12 and superuser_reserved_connections = 2: 10 usable.
-- Defaults: degraded at 70 %, critical at 90 %, exhausted when none is free.
CREATE FUNCTION open_connections(n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    conninfo text := format('dbname=%s port=%s host=%s', current_database(),
                            current_setting('port'),
                            split_part(current_setting('unix_socket_directories'), ',', 1));
    have int := coalesce(array_length(dblink_get_connections(), 1), 0);
BEGIN
    FOR i IN have + 1 .. have + n LOOP
        PERFORM dblink_connect('c' || i, conninfo);
    END LOOP;
END $$;

CREATE VIEW level_now AS
    SELECT used, free, usage_percent, level, reasons,
           pool_health.ping() AS ping,
           pool_health.status()->>'throttle' AS throttle,
           (pool_health.status()->>'suggested_new_connections')::int AS suggested
    FROM pool_health.usage;

-- 1 of 10: healthy
SELECT * FROM level_now;

-- 7 of 10: degraded
SELECT open_connections(6);
SELECT * FROM level_now;

-- 9 of 10: critical
SELECT open_connections(2);
SELECT * FROM level_now;

-- 10 of 10: exhausted
SELECT open_connections(1);
SELECT * FROM level_now;

-- per-group views see the same connections
SELECT database = current_database() AS this_db, connections, share_percent FROM pool_health.usage_by_database;
SELECT connections, idle, active FROM pool_health.usage_by_role WHERE role = current_user;
SELECT application_name, connections FROM pool_health.usage_by_application ORDER BY 1;
SELECT client_addr, connections FROM pool_health.usage_by_client;
SELECT (status->'top_consumers'->0->>'connections')::int AS top, status->'top_consumers'->0->>'application_name' AS app
FROM (SELECT pool_health.status() AS status) s;

-- idle-in-transaction sessions are counted (not leaked before leak_after);
-- a READ COMMITTED transaction that only read does not pin xmin, a
-- REPEATABLE READ one does, and so does one with an xid
CREATE TEMP TABLE conn_pid AS
    SELECT c AS conn, (SELECT pid FROM dblink(c, 'SELECT pg_backend_pid()') AS t(pid int)) AS pid
    FROM unnest(ARRAY['c1', 'c2', 'c3', 'c4']) c;
SELECT dblink_exec(c, 'BEGIN') FROM unnest(ARRAY['c1', 'c3', 'c4']) c;
SELECT dblink_exec('c2', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT x FROM dblink('c1', 'SELECT 1') AS t(x int);
SELECT x FROM dblink('c2', 'SELECT 1') AS t(x int);
SELECT x > 0 AS has_xid FROM dblink('c3', 'SELECT txid_current()') AS t(x bigint);
SELECT dblink_exec('c4', 'SELECT 1/0', false);
SELECT idle_in_transaction, leaked FROM pool_health.usage;
SELECT c.conn, s.state, s.pins_xmin, s.backend_xid IS NOT NULL AS has_xid,
       s.idle_for > '0' AS idle_for, s.xact_age >= s.idle_for AS xact_age, s.leak
FROM pool_health.sessions s JOIN conn_pid c USING (pid)
ORDER BY c.conn;

-- back down: disconnected backends exit asynchronously, wait for them
-- (pool_health.usage takes a fresh look at backend status on every call)
SELECT count(dblink_disconnect(c)) FROM unnest(dblink_get_connections()) c;
DO $$
BEGIN
    FOR i IN 1 .. 3000 LOOP
        EXIT WHEN (SELECT used FROM pool_health.usage) = 1;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SELECT * FROM level_now;
