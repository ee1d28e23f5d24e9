-- Upgrade path: install the oldest version, update step by step, and check
-- at each step what the update added or removed, that every object is
-- documented, and that the views work.  (A fresh install runs the same
-- path: there is one install script, pool_health--1.0.sql, and updates.)
SELECT name, version FROM pg_available_extension_versions
WHERE name = 'pool_health' ORDER BY version;

CREATE DATABASE pool_health_upgrade;
CREATE ROLE ph_upgrade_app LOGIN;
\c pool_health_upgrade
CREATE EXTENSION pool_health VERSION '1.0';
-- a session for the library (this version's) to audit while the installed
-- extension is older: the upgrade window
CREATE EXTENSION dblink;
SELECT dblink_connect('window', 'dbname=pool_health_upgrade user=ph_upgrade_app application_name=upgrade-window');
CREATE FUNCTION public.audit_window() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.02);
    RETURN (SELECT count(*) FROM pool_health.terminate_idle('10 ms', dry_run => true));
END $$;
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
-- the audit table's columns and the action type's attributes, in order, at
-- each version: the library writes an older table's columns as a prefix
-- of its own list (the upgrade window), so each version only appends
CREATE TABLE public.audit_columns (version text, table_columns text[], type_attributes text[]);
CREATE VIEW public.audit_columns_now AS
    SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pool_health') AS version,
           (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = to_regclass('pool_health.terminations') AND attnum > 0
              AND NOT attisdropped AND attname <> 'id') AS table_columns,
           (SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = (SELECT typrelid FROM pg_type WHERE oid = to_regtype('pool_health.action'))
              AND attnum > 0 AND NOT attisdropped) AS type_attributes;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT used >= 1 AS works FROM pool_health.usage;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;

ALTER EXTENSION pool_health UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'pool_health';
INSERT INTO public.audit_columns SELECT * FROM public.audit_columns_now;
SELECT public.audit_window() AS audited;
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
INSERT INTO public.audit_columns SELECT * FROM public.audit_columns_now;
SELECT public.audit_window() AS audited;
SELECT 'added' AS change, object FROM public.objects EXCEPT SELECT 'added', object FROM public.before
UNION ALL
SELECT 'removed', object FROM public.before EXCEPT SELECT 'removed', object FROM public.objects
ORDER BY 1, 2;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT conname, convalidated FROM pg_constraint
WHERE conrelid = 'pool_health.policies'::regclass AND contype = 'c' ORDER BY conname;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;
-- (the 1.3 library fills the 1.2 type: the two dry runs of
-- pool_health_privileges, with their client_port)
SELECT count(*) = 2 AS works, bool_and(client_port IS NOT NULL) AS with_port
FROM pool_health.recent_actions WHERE application_name = 'alice-mem';

-- 1.3
DROP TABLE public.before;
CREATE TABLE public.before AS SELECT * FROM public.objects;
ALTER EXTENSION pool_health UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'pool_health';
INSERT INTO public.audit_columns SELECT * FROM public.audit_columns_now;
SELECT public.audit_window() AS audited;
-- each version's audit columns are a prefix of the next one's, and the
-- type has the table's columns
SELECT a.version, array_length(a.table_columns, 1) AS columns,
       a.table_columns = a.type_attributes AS type_matches,
       a.table_columns = (b.table_columns)[1:array_length(a.table_columns, 1)] AS prefix_of_next
FROM public.audit_columns a LEFT JOIN public.audit_columns b ON b.version > a.version
    AND NOT EXISTS (SELECT FROM public.audit_columns c WHERE c.version > a.version AND c.version < b.version)
ORDER BY a.version;
SELECT table_columns[19:] AS appended_since_1_1 FROM public.audit_columns WHERE version = '1.3';
-- the rows the library wrote at each version: the columns that table had
SELECT id, application_name, role, client_port IS NOT NULL AS client_port,
       limit_name, role_id = 'ph_upgrade_app'::regrole AS role_id
FROM pool_health.terminations WHERE application_name = 'upgrade-window' ORDER BY id;
SELECT dblink_disconnect('window');
SELECT 'added' AS change, object FROM public.objects EXCEPT SELECT 'added', object FROM public.before
UNION ALL
SELECT 'removed', object FROM public.before EXCEPT SELECT 'removed', object FROM public.objects
ORDER BY 1, 2;
SELECT count(*) AS objects, bool_and(documented) AS all_documented FROM public.objects;
SELECT count(*) > 0 AS works FROM pool_health.usage_by_role;
SELECT count(*) = 2 AS works, bool_and(limit_name = 'older_than') AS with_limit_name
FROM pool_health.recent_actions WHERE application_name = 'alice-mem';
SELECT count(*) = 0 AS works FROM pool_health.my_terminations;
\c contrib_regression
DROP DATABASE pool_health_upgrade;
DROP ROLE ph_upgrade_app;
