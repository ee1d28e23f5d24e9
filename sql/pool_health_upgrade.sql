-- Upgrade path: install the oldest version, update step by step, and check
-- at each step what the update added or removed, that every object is
-- documented, and that the views work.  (A fresh install runs the same
-- path: there is one install script, pool_health--1.0.sql, and updates.)
SELECT name, version FROM pg_available_extension_versions
WHERE name = 'pool_health' ORDER BY version;

CREATE DATABASE pool_health_upgrade;
\c pool_health_upgrade
CREATE EXTENSION pool_health VERSION '1.0';
CREATE VIEW public.objects AS
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
          WHERE t.oid = objid AND (t.typcategory = 'A' OR c.relkind <> 'c')));
CREATE TABLE public.before AS SELECT * FROM public.objects;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT used >= 1 AS works FROM pool_health.usage;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;

ALTER EXTENSION pool_health UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'pool_health';
SELECT 'added' AS change, object FROM public.objects EXCEPT SELECT 'added', object FROM public.before
UNION ALL
SELECT 'removed', object FROM public.before EXCEPT SELECT 'removed', object FROM public.objects
ORDER BY 1, 2;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT count(*) > 0 AS works, count(*) = count(*) FILTER (WHERE quota IS NULL) AS no_quota_yet
FROM pool_health.usage_by_role;
SELECT count(*) = 0 AS works FROM pool_health.cleanup(dry_run => true);
SELECT pool_health.metrics() LIKE '%pool_health_used_connections%' AS works;

-- 1.2, with a row written with triggers bypassed before the update: the
-- update goes through, and the constraint it breaks is left NOT VALID with
-- a WARNING (the worker lists such rows in pool_health.policy_errors of
-- its database: see pool_health_policies)
DROP TABLE public.before;
CREATE TABLE public.before AS SELECT * FROM public.objects;
SET session_replication_role = replica;
INSERT INTO pool_health.policies (name, action) VALUES ('old_bad', 'kill');
RESET session_replication_role;
ALTER EXTENSION pool_health UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'pool_health';
SELECT 'added' AS change, object FROM public.objects EXCEPT SELECT 'added', object FROM public.before
UNION ALL
SELECT 'removed', object FROM public.before EXCEPT SELECT 'removed', object FROM public.objects
ORDER BY 1, 2;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT conname, convalidated FROM pg_constraint
WHERE conrelid = 'pool_health.policies'::regclass AND contype = 'c' ORDER BY conname;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;
SELECT count(*) = 0 AS works FROM pool_health.recent_actions WHERE client_port IS NOT NULL;

-- 1.3
DROP TABLE public.before;
CREATE TABLE public.before AS SELECT * FROM public.objects;
ALTER EXTENSION pool_health UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'pool_health';
SELECT 'added' AS change, object FROM public.objects EXCEPT SELECT 'added', object FROM public.before
UNION ALL
SELECT 'removed', object FROM public.before EXCEPT SELECT 'removed', object FROM public.objects
ORDER BY 1, 2;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;
\c contrib_regression
DROP DATABASE pool_health_upgrade;
