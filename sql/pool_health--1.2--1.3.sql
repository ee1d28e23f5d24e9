/* pool_health--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pool_health UPDATE TO '1.3'" to load this file. \quit

-- 1.3: hostile clients held off (HTTP, statements, names), and what
-- applications and their pools are told is right at the edge.

-- ---------------------------------------------------------------------
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
'Saturated (at its declared size, or at its peak connections for half the time, with every connection in a transaction): max(demand_p99, its size + 1); otherwise max(1, min(ceil(1.25 * in_xact_max), its size)). For all: the sum over the groups';
COMMENT ON COLUMN pool_health.pool_advice.excess_connections IS
'connections_max - in_xact_max: held beyond what its transactions ever used at once (for all: the sum over the groups)';
COMMENT ON COLUMN pool_health.pool_advice.advice IS
'What to change: pool saturated, pool larger than needed, declare the pool''s size, transactions idle too long, ran no transaction, or fits; for all, the connection budget';

REVOKE ALL ON pool_health.pool_advice FROM PUBLIC;
REVOKE ALL ON FUNCTION pool_health.get_pool_advice() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_health.get_pool_advice() TO pg_monitor;
GRANT SELECT ON pool_health.pool_advice TO pg_monitor;
