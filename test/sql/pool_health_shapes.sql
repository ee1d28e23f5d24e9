-- Object shapes: the names users, docs and tests depend on (SPEC.md).
CREATE EXTENSION pool_health;

-- helper for the tests that follow: wait until the worker runs here and
-- enforces the policies last committed (it polls pool_health.status(),
-- which reads shared memory afresh at each call)
CREATE FUNCTION wait_for_policies() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 6000 LOOP
        IF (SELECT s->'worker'->>'mode' = 'running' AND (s->'policies'->>'in_effect')::boolean
            FROM pool_health.status() s) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN false;
END $$;

-- helper for the tests that follow: run a statement that must fail, show
-- its SQLSTATE and message
CREATE FUNCTION expect_error(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- every object of the extension, and its comment
SELECT pg_describe_object(classid, objid, 0) AS object,
       obj_description(objid, classid::regclass::text) IS NOT NULL AS documented
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pool_health')
  AND deptype = 'e'
  -- PostgreSQL 18 also records the row types of relations and the array
  -- types as members: they come with their relation or type
  AND NOT (classid = 'pg_type'::regclass AND EXISTS (
      SELECT FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
      WHERE t.oid = objid AND (t.typcategory = 'A' OR c.relkind <> 'c')))
ORDER BY 1;

-- the columns of each view
SELECT c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.relnamespace = 'pool_health'::regnamespace AND c.relkind = 'v'
GROUP BY c.relname ORDER BY c.relname;

-- the schema is fixed
SELECT extrelocatable, extnamespace::regnamespace FROM pg_extension WHERE extname = 'pool_health';
ALTER EXTENSION pool_health SET SCHEMA public;

-- usage is exactly one row; used counts this client backend
SELECT count(*) FROM pool_health.usage;
SELECT max_connections, reserved_connections, usable, used >= 1 AS counts_me,
       used = (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used_is_client_backends
FROM pool_health.usage;

-- sessions sees this session, with its query, and the auxiliary processes
SELECT backend_type, state, query LIKE 'SELECT backend_type%' AS my_query, pins_xmin, blocking, leak
FROM pool_health.sessions WHERE pid = pg_backend_pid();
SELECT count(*) > 0 AS sees_aux FROM pool_health.sessions WHERE backend_type = 'checkpointer';

-- same backends as pg_stat_activity
SELECT (SELECT count(*) FROM pool_health.sessions) = (SELECT count(*) FROM pg_stat_activity) AS same_count;

-- status() carries the documented keys
SELECT jsonb_object_keys(pool_health.status()) ORDER BY 1;
SELECT pool_health.status()->'worker'->'preloaded' AS preloaded;
SELECT pool_health.ping();

-- history and forecast: shapes and argument checks (their contents are
-- tested with a running worker in the TAP tests)
SELECT expect_error($$SELECT * FROM pool_health.get_history(resolution => 'hourly')$$);
SELECT expect_error($$SELECT * FROM pool_health.get_history(resolution => NULL)$$);
SELECT count(*) >= 0 AS ok FROM pool_health.get_history(now() - interval '1 hour', now(), 'raw');
SELECT samples >= 0 AS ok, resolution IN ('raw', 'minute') AS ok2 FROM pool_health.forecast;
SELECT jsonb_object_keys(pool_health.status()->'worker') ORDER BY 1;
