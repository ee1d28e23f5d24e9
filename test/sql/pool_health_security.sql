-- search_path hijack: an unprivileged role creates look-alikes of what
-- pool_health's SQL resolves by name (functions, operators) in a schema a
-- superuser then puts first on its search_path.  Calling every view and
-- function of pool_health must run none of them: views are bound when
-- created, SQL functions and triggers pin their search_path, and the C
-- code's queries are fully qualified.
CREATE ROLE ph_attacker;
CREATE SCHEMA evil AUTHORIZATION ph_attacker;
SET ROLE ph_attacker;
CREATE TABLE evil.hits (what text);
GRANT INSERT, SELECT ON evil.hits TO PUBLIC;
CREATE FUNCTION evil.hit(what text) RETURNS boolean LANGUAGE sql
    AS $$ INSERT INTO evil.hits VALUES (what) RETURNING true $$;
CREATE FUNCTION evil.quote_nullable(anyelement) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.hit('quote_nullable')::text $$;
CREATE FUNCTION evil.quote_literal(text) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.hit('quote_literal')::text $$;
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE sql
    AS $$ SELECT evil.hit('length')::int $$;
CREATE FUNCTION evil.octet_length(text) RETURNS integer LANGUAGE sql
    AS $$ SELECT evil.hit('octet_length')::int $$;
CREATE FUNCTION evil.substring(text, text) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.hit('substring')::text $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT CASE WHEN evil.hit('now') THEN pg_catalog.now() END $$;
CREATE FUNCTION evil.round(numeric, integer) RETURNS numeric LANGUAGE sql
    AS $$ SELECT evil.hit('round')::int::numeric $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.hit('current_setting')::text $$;
CREATE FUNCTION evil.textlike(text, text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('textlike') $$;
CREATE FUNCTION evil.name_eq(name, name) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('name =') $$;
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.name_eq);
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('text =') $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.text_like(text, text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('text ~~') $$;
CREATE OPERATOR evil.~~ (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_like);
CREATE FUNCTION evil.int_lt(integer, integer) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('int <') $$;
CREATE OPERATOR evil.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.int_lt);
CREATE FUNCTION evil.num_lt(numeric, numeric) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('numeric <') $$;
CREATE OPERATOR evil.< (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.num_lt);
CREATE FUNCTION evil.oid_eq(oid, oid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('oid =') $$;
CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.oid_eq);
CREATE FUNCTION evil.int_eq(integer, integer) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('int =') $$;
CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.int_eq);
CREATE FUNCTION evil.timestamptz_eq(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.hit('timestamptz =') $$;
CREATE OPERATOR evil.= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.timestamptz_eq);
CREATE VIEW evil.pg_roles AS
    SELECT r.oid, r.rolname FROM pg_catalog.pg_roles r WHERE evil.hit('pg_roles');
GRANT SELECT ON evil.pg_roles TO PUBLIC;
CREATE TABLE evil.policies (name text);
CREATE TABLE evil.terminations (pid int);
GRANT ALL ON evil.policies, evil.terminations TO PUBLIC;
RESET ROLE;

-- a superuser with the attacker's schema first
SET search_path = evil, pg_catalog, public;
SELECT count(*) >= 1 AS ok FROM pool_health.sessions;
SELECT count(*) = 1 AS ok FROM pool_health.usage;
SELECT count(*) >= 1 AS ok FROM pool_health.usage_by_database;
SELECT count(*) >= 1 AS ok FROM pool_health.usage_by_role;
SELECT count(*) >= 1 AS ok FROM pool_health.usage_by_application;
SELECT count(*) >= 1 AS ok FROM pool_health.usage_by_client;
SELECT count(*) >= 0 AS ok FROM pool_health.usage_by_policy;
SELECT count(*) >= 0 AS ok FROM pool_health.leaks;
SELECT count(*) >= 0 AS ok FROM pool_health.history;
SELECT count(*) = 1 AS ok FROM pool_health.forecast;
SELECT count(*) >= 0 AS ok FROM pool_health.recent_actions;
SELECT count(*) >= 0 AS ok FROM pool_health.my_terminations;
SELECT count(*) >= 0 AS ok FROM pool_health.get_my_recent_actions();
SELECT pool_health.status() IS NOT NULL AS ok, pool_health.ping() IS NOT NULL AS ok2,
       pool_health.metrics() IS NOT NULL AS ok3;
INSERT INTO pool_health.policies (name, role, application_name, idle_timeout, refuse_at)
VALUES ('hijack-test', 'nobody', 'x%', '1 hour', 'critical');
-- (the test's own comparisons are qualified: the attacker's = comes first here)
UPDATE pool_health.policies SET idle_in_transaction_timeout = '1 min' WHERE name OPERATOR(pg_catalog.=) 'hijack-test';
SELECT count(*) >= 0 AS ok FROM pool_health.cleanup(dry_run => true);
SELECT count(*) >= 0 AS ok FROM pool_health.terminate_idle('1 hour', dry_run => true);
SELECT count(*) >= 0 AS ok FROM pool_health.terminate_idle_in_transaction('1 hour', dry_run => true);
SELECT count(*) >= 0 AS ok FROM pool_health.reclaim(100, dry_run => true);
DELETE FROM pool_health.policies WHERE name OPERATOR(pg_catalog.=) 'hijack-test';
RESET search_path;

-- nothing of the attacker's ran, and the look-alike tables were not used
SELECT what, count(*) FROM evil.hits GROUP BY what ORDER BY what;
SELECT (SELECT count(*) FROM evil.policies) + (SELECT count(*) FROM evil.terminations) AS written_to_evil;

DROP SCHEMA evil CASCADE;
DROP ROLE ph_attacker;

-- schema squatting: a role allowed to create schemas prepares "pool_health"
-- before the extension is created; CREATE EXTENSION refuses the schema
-- until a superuser owns it, nobody else may create in it, and it is empty
CREATE ROLE ph_squatter;
CREATE DATABASE pool_health_squat;
\c pool_health_squat
CREATE SCHEMA pool_health AUTHORIZATION ph_squatter;
-- (the context of an error in an extension script differs between majors)
\set SHOW_CONTEXT never
CREATE EXTENSION pool_health;
ALTER SCHEMA pool_health OWNER TO CURRENT_USER;
GRANT CREATE ON SCHEMA pool_health TO ph_squatter;
CREATE EXTENSION pool_health;
REVOKE CREATE ON SCHEMA pool_health FROM ph_squatter;
CREATE TABLE pool_health.policies (name text, allow_superuser boolean);
CREATE EXTENSION pool_health;
DROP TABLE pool_health.policies;
\set SHOW_CONTEXT errors
CREATE EXTENSION pool_health;
SELECT extname FROM pg_extension WHERE extname = 'pool_health';
\c contrib_regression
DROP DATABASE pool_health_squat;
DROP ROLE ph_squatter;
