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
REVOKE EXECUTE ON FUNCTION pool_health.validate_policy() FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Headroom and storms: connections reserved per policy, login rate
-- limits, and what they refused.  The columns are appended; until this
-- update has run, the library reads them as NULL.
-- ---------------------------------------------------------------------

ALTER TABLE pool_health.policies
    ADD COLUMN reserve_connections integer,
    ADD COLUMN max_logins_per_second numeric,
    ADD COLUMN login_burst integer,
    ADD CONSTRAINT reserve_connections_in_range
        CHECK (reserve_connections BETWEEN 0 AND 262143),
    ADD CONSTRAINT reserve_connections_within_max_connections
        CHECK (reserve_connections <= max_connections),
    ADD CONSTRAINT max_logins_per_second_in_range
        CHECK (max_logins_per_second BETWEEN 0.001 AND 1000000),
    ADD CONSTRAINT login_burst_in_range
        CHECK (login_burst BETWEEN 1 AND 1000000),
    ADD CONSTRAINT login_burst_needs_max_logins_per_second
        CHECK (login_burst IS NULL OR max_logins_per_second IS NOT NULL);

COMMENT ON COLUMN pool_health.policies.reserve_connections IS
'Admission control: connections kept free for the sessions this policy governs (NULL or 0: none). A login of another policy, or of none, is refused (53300) when admitting it would leave fewer free usable connections than the reserves not in use; the reserves of the enabled policies must fit in the usable connections together. Superusers, replication and protected roles are never refused';
COMMENT ON COLUMN pool_health.policies.max_logins_per_second IS
'Admission control: the logins per second the governed sessions may make together, a token bucket taken at login (NULL: no limit); a login without a token is refused (53300) with the time to retry after';
COMMENT ON COLUMN pool_health.policies.login_burst IS
'Admission control: logins admitted at once before max_logins_per_second applies, the size of its token bucket (NULL: max_logins_per_second rounded up)';

-- days, a day 24 hours), which is how the worker enforces it
CREATE OR REPLACE FUNCTION pool_health.validate_policy()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limit_name text;
    limit_value interval;
    usable integer;
    reserved bigint;
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
           NOT (limit_value BETWEEN interval '1 millisecond' AND interval '365 days') THEN
            RAISE EXCEPTION 'invalid % for policy "%": %', limit_name, NEW.name, limit_value
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A limit must be positive: at least 1 millisecond, at most 365 days (a month counts 30 days, a day 24 hours).',
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
    IF NEW.reserve_connections IS NOT NULL THEN
        IF NEW.reserve_connections < 0 OR NEW.reserve_connections > 262143 THEN
            RAISE EXCEPTION 'invalid reserve_connections for policy "%": %', NEW.name, NEW.reserve_connections
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A reserve is a number of connections, from 0 to 262143, and must fit in the usable connections.',
                      HINT = 'Use NULL or 0 for no reserve.';
        END IF;
        IF NEW.max_connections IS NOT NULL AND NEW.reserve_connections > NEW.max_connections THEN
            RAISE EXCEPTION 'reserve_connections of policy "%" is larger than its max_connections', NEW.name
                USING ERRCODE = 'check_violation',
                      DETAIL = format('The policy would reserve %s connections but may hold only %s.', NEW.reserve_connections, NEW.max_connections);
        END IF;
        IF NEW.reserve_connections > 0 AND NEW.role IS NOT NULL AND
           EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role AND r.rolsuper) THEN
            RAISE EXCEPTION 'policy "%" cannot reserve connections for superuser role "%"', NEW.name, NEW.role
                USING ERRCODE = 'check_violation',
                      DETAIL = 'Superusers are never counted nor refused by admission control: they have superuser_reserved_connections.';
        END IF;
        -- pool_health.protected_roles as the server splits it (a list of
        -- identifiers: unquoted ones folded to lower case)
        IF NEW.reserve_connections > 0 AND NEW.role IS NOT NULL AND
           EXISTS (SELECT FROM regexp_split_to_table(current_setting('pool_health.protected_roles', true), ',') AS item(v)
                   WHERE CASE WHEN btrim(v) ~ '^".*"$'
                              THEN replace(substr(btrim(v), 2, length(btrim(v)) - 2), '""', '"')
                              ELSE lower(btrim(v)) END = NEW.role) THEN
            RAISE EXCEPTION 'policy "%" cannot reserve connections for protected role "%"', NEW.name, NEW.role
                USING ERRCODE = 'check_violation',
                      DETAIL = 'Roles in pool_health.protected_roles are never counted nor refused by admission control: a reserve for them would keep connections free for no login.';
        END IF;
        -- the sum is checked when a row adds to the enabled reserves (an
        -- UPDATE that keeps or lowers them is accepted even when they no
        -- longer fit, e.g. after max_connections was lowered), under a
        -- transaction-level advisory lock on the fixed key
        -- 8101816766061437284 ('poolhead'): a concurrent writer waits, and
        -- under READ COMMITTED then sees the committed rows
        IF NEW.reserve_connections > 0 AND NEW.enabled AND
           NOT (TG_OP = 'UPDATE' AND coalesce(OLD.enabled, false) AND
                coalesce(OLD.reserve_connections, 0) >= NEW.reserve_connections) THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(8101816766061437284);
            usable := current_setting('max_connections')::int
                      - current_setting('superuser_reserved_connections')::int
                      - coalesce(current_setting('reserved_connections', true)::int, 0);
            SELECT coalesce(sum(p.reserve_connections), 0) INTO reserved
            FROM pool_health.policies p
            WHERE p.enabled AND p.reserve_connections > 0
              AND p.name IS DISTINCT FROM NEW.name
              AND (TG_OP = 'INSERT' OR p.name IS DISTINCT FROM OLD.name);
            IF reserved + NEW.reserve_connections > usable THEN
                RAISE EXCEPTION 'reserve_connections of policy "%" does not fit in the usable connections', NEW.name
                    USING ERRCODE = 'check_violation',
                          DETAIL = format('The enabled policies would reserve %s connections (%s of them for this one), but only %s are usable (max_connections minus superuser_reserved_connections and reserved_connections).',
                                          reserved + NEW.reserve_connections, NEW.reserve_connections, usable),
                          HINT = 'Lower the reserves, or raise max_connections (which needs a restart).';
            END IF;
        END IF;
    END IF;
    IF NEW.max_logins_per_second IS NOT NULL AND
       NOT (NEW.max_logins_per_second BETWEEN 0.001 AND 1000000) THEN
        RAISE EXCEPTION 'invalid max_logins_per_second for policy "%": %', NEW.name, NEW.max_logins_per_second
            USING ERRCODE = 'check_violation',
                  DETAIL = 'A login rate must be between 0.001 and 1000000 logins per second.',
                  HINT = 'Use NULL for no limit.';
    END IF;
    IF NEW.login_burst IS NOT NULL THEN
        IF NEW.login_burst < 1 OR NEW.login_burst > 1000000 THEN
            RAISE EXCEPTION 'invalid login_burst for policy "%": %', NEW.name, NEW.login_burst
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A burst is the number of logins admitted at once beyond the rate, from 1 to 1000000.',
                      HINT = 'Use NULL for the default, max_logins_per_second rounded up.';
        END IF;
        IF NEW.max_logins_per_second IS NULL THEN
            RAISE EXCEPTION 'login_burst of policy "%" needs max_logins_per_second', NEW.name
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A burst is only the size of the bucket of a login rate limit.';
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
'Trigger: rejects invalid policies (limits outside 1 millisecond to 365 days, unknown action or refuse_at, quota below 1, bad pattern, reserves that are negative, above the quota, for a superuser or protected role or beyond the usable connections together (checked when a row adds to the enabled reserves, under the transaction-level advisory lock 8101816766061437284 so that concurrent writers are checked one after the other), login rates and bursts out of range) with a clear message; the table''s CHECK constraints and the worker check the same rules';

DROP VIEW pool_health.usage_by_policy;
DROP FUNCTION pool_health.get_policy_usage();

CREATE FUNCTION pool_health.get_policy_usage(
    OUT policy text,
    OUT priority integer,
    OUT connections integer,
    OUT max_connections integer,
    OUT refuse_at text,
    OUT admitted integer,
    OUT refused bigint,
    OUT quota_percent double precision,
    OUT reserve_connections integer,
    OUT reserve_unused integer,
    OUT max_logins_per_second double precision,
    OUT login_burst integer,
    OUT login_tokens double precision,
    OUT refused_reserve bigint,
    OUT refused_login_rate bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pool_health_get_policy_usage'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

COMMENT ON FUNCTION pool_health.get_policy_usage() IS
'Per enabled policy: governed sessions now, quota, refuse_at, admission counter, refusals, reserve and login rate; the function behind pool_health.usage_by_policy';

CREATE VIEW pool_health.usage_by_policy AS
    SELECT policy, priority, connections, max_connections, refuse_at,
           admitted, refused, round(quota_percent::numeric, 1) AS quota_percent,
           reserve_connections, reserve_unused, max_logins_per_second,
           login_burst, round(login_tokens::numeric, 2) AS login_tokens,
           refused_reserve, refused_login_rate
    FROM pool_health.get_policy_usage();

COMMENT ON VIEW pool_health.usage_by_policy IS
'Client sessions per governing policy, with the policy''s quota (max_connections), refuse_at, reserve and login rate, the admission counter that connections are checked against, and the connections refused since the policy was created, in all and because of a reserve or the login rate (counters are kept by policy name across edits; they need the preload)';
COMMENT ON COLUMN pool_health.usage_by_policy.connections IS
'Client sessions the policy governs now';
COMMENT ON COLUMN pool_health.usage_by_policy.admitted IS
'The admission counter new connections are checked against (kept at connect and exit, set right by the worker from its samples)';
COMMENT ON COLUMN pool_health.usage_by_policy.reserve_connections IS
'Connections kept free for the policy (0: none)';
COMMENT ON COLUMN pool_health.usage_by_policy.reserve_unused IS
'The part of the reserve no session of the policy uses now (reserve_connections - admitted, at least 0): the free connections refused to other logins';
COMMENT ON COLUMN pool_health.usage_by_policy.max_logins_per_second IS
'The policy''s login rate limit (NULL: none)';
COMMENT ON COLUMN pool_health.usage_by_policy.login_burst IS
'The size of its token bucket (NULL: no rate limit)';
COMMENT ON COLUMN pool_health.usage_by_policy.login_tokens IS
'Logins the policy may make at once now, at most login_burst (fractional: the next token is on its way; NULL: no rate limit)';
COMMENT ON COLUMN pool_health.usage_by_policy.refused_reserve IS
'Logins of the policy refused because the free connections were reserved for other policies';
COMMENT ON COLUMN pool_health.usage_by_policy.refused_login_rate IS
'Logins of the policy refused for want of a login token (max_logins_per_second)';

REVOKE ALL ON pool_health.usage_by_policy FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_policy_usage() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_policy_usage() TO pg_monitor;
GRANT SELECT ON pool_health.usage_by_policy TO pg_monitor;
