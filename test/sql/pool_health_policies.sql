-- Policies: every validation error (clear message, SQLSTATE, nothing
-- written), defaults, precedence as shown by pool_health.sessions, and
-- argument checks of the cleanup functions.
INSERT INTO pool_health.policies (name) VALUES ('defaults');
SELECT name, priority, action, dry_run, allow_superuser, enabled, refuse_at
FROM pool_health.policies;
DELETE FROM pool_health.policies;

SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '0')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '-5 seconds')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_in_transaction_timeout) VALUES ('p', '-1 min')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, transaction_timeout) VALUES ('p', '0.0001 s')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, blocking_timeout) VALUES ('p', '2 years')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, action) VALUES ('p', 'kill')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, action) VALUES ('p', NULL)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_connections) VALUES ('p', 0)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_connections) VALUES ('p', -3)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name) VALUES ('p', 'web\')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name) VALUES ('p', 'web\\\')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name) VALUES ('p', repeat('x', 300))$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, refuse_at) VALUES ('p', 'healthy')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, refuse_at) VALUES ('p', 'exhausted')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name) VALUES ('')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name) VALUES (repeat('n', 64))$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, priority) VALUES ('p', NULL)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, client_addr) VALUES ('p', '10.0.0.1/8')$$);
-- an invalid UPDATE is rejected too, and leaves the row as it was
INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('ok', '5 min');
SELECT expect_error($$UPDATE pool_health.policies SET idle_timeout = '-1 min' WHERE name = 'ok'$$);
SELECT name, idle_timeout FROM pool_health.policies;
-- a valid pattern with escapes
INSERT INTO pool_health.policies (name, application_name) VALUES ('escaped', 'web\\%\_x');
-- injection through names and patterns is inert: they are data
INSERT INTO pool_health.policies (name, application_name)
VALUES ('x''); DROP TABLE pool_health.policies; --', '%''; SELECT 1; --');
SELECT count(*) FROM pool_health.policies;
DELETE FROM pool_health.policies;

-- a limit has one meaning, that of interval comparison (a month is 30
-- days): '1 year -360 days 2 seconds' is 2 seconds, and 13 months too long
INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('mixed', '1 year -360 days 2 seconds');
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '13 months')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '1 year -361 days')$$);
DELETE FROM pool_health.policies;

-- with the validation trigger bypassed (session_replication_role =
-- replica, as pg_restore --disable-triggers does), the table's constraints
-- still refuse every invalid row
SET session_replication_role = replica;
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name) VALUES ('p', '%\')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name) VALUES ('p', repeat('x', 256))$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name) VALUES ('')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name) VALUES (repeat('n', 64))$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_in_transaction_timeout) VALUES ('p', '0')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '-1 s')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, transaction_timeout) VALUES ('p', '366 days')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, blocking_timeout) VALUES ('p', '0.5 ms')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_connections) VALUES ('p', 0)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, action) VALUES ('p', 'kill')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, refuse_at) VALUES ('p', 'healthy')$$);
SELECT count(*) FROM pool_health.policies;
RESET session_replication_role;

-- a row that gets past everything (its constraint dropped by the owner,
-- triggers bypassed) is left out by the worker and listed in policy_errors
ALTER TABLE pool_health.policies DROP CONSTRAINT application_name_is_a_like_pattern;
SET session_replication_role = replica;
INSERT INTO pool_health.policies (name, application_name, idle_timeout) VALUES ('bad', '%\', '1h');
RESET session_replication_role;
INSERT INTO pool_health.policies (name, application_name, idle_timeout) VALUES ('good', 'pg_regress%', '1h');
SELECT wait_for_policies();
SELECT name, error FROM pool_health.policy_errors;
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();
SELECT jsonb_array_length(pool_health.status()->'policies'->'errors') AS errors_in_status;
SELECT policy, connections FROM pool_health.usage_by_policy;
DELETE FROM pool_health.policies;
ALTER TABLE pool_health.policies ADD CONSTRAINT application_name_is_a_like_pattern
    CHECK (octet_length(application_name) <= 255 AND
           application_name !~ '(^|[^\\])(\\\\)*\\$');
SELECT wait_for_policies();
SELECT count(*) AS errors FROM pool_health.policy_errors;

-- precedence: priority, then specificity, then name
INSERT INTO pool_health.policies (name, priority, application_name, idle_timeout) VALUES
    ('b_any_app', 0, NULL, '1h'),
    ('a_this_app', 0, 'pg_regress%', '1h'),
    ('z_this_app_and_role', 0, 'pg_regress%', '1h');
UPDATE pool_health.policies SET role = current_user WHERE name = 'z_this_app_and_role';
SELECT wait_for_policies();
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();
UPDATE pool_health.policies SET priority = 10 WHERE name = 'b_any_app';
SELECT wait_for_policies();
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();
UPDATE pool_health.policies SET enabled = false WHERE name = 'b_any_app';
SELECT wait_for_policies();
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();
UPDATE pool_health.policies SET client_addr = '10.0.0.0/8' WHERE name = 'z_this_app_and_role';
SELECT wait_for_policies();
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();
DELETE FROM pool_health.policies;
SELECT wait_for_policies();
SELECT policy FROM pool_health.sessions WHERE pid = pg_backend_pid();

-- headroom (reserve_connections, max_logins_per_second, login_burst): bad
-- input gets a clear error and changes nothing; this instance has 10
-- usable connections (12 - 2 for superusers)
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections) VALUES ('p', -1)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections) VALUES ('p', 1000000)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections) VALUES ('p', 11)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections, max_connections) VALUES ('p', 3, 2)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, role, reserve_connections) VALUES ('p', current_user, 1)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 0)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', -5)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 'NaN')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 'Infinity')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 1e7)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 0.0001)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second, login_burst) VALUES ('p', 10, 0)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second, login_burst) VALUES ('p', 10, 2000000)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, login_burst) VALUES ('p', 5)$$);
SELECT count(*) AS nothing_inserted FROM pool_health.policies;
-- the reserves of the enabled policies must fit together
INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('web', 'web%', 6);
SELECT expect_error($$INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('api', 'api%', 5)$$);
INSERT INTO pool_health.policies (name, application_name, reserve_connections, enabled) VALUES ('api', 'api%', 5, false);
SELECT expect_error($$UPDATE pool_health.policies SET enabled = true WHERE name = 'api'$$);
UPDATE pool_health.policies SET reserve_connections = 5 WHERE name = 'web';
UPDATE pool_health.policies SET enabled = true, max_logins_per_second = 2.5 WHERE name = 'api';
SELECT name, reserve_connections, max_logins_per_second, login_burst FROM pool_health.policies ORDER BY name;
-- the constraints hold with the trigger bypassed
SET session_replication_role = replica;
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections) VALUES ('p', -1)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, reserve_connections, max_connections) VALUES ('p', 3, 2)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second) VALUES ('p', 0)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, login_burst) VALUES ('p', 5)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_logins_per_second, login_burst) VALUES ('p', 1, 0)$$);
-- reserves beyond the usable connections get past the constraints, not
-- past the worker: the policy that does not fit (last in precedence) is
-- left out and listed
INSERT INTO pool_health.policies (name, priority, application_name, reserve_connections) VALUES ('greedy', -1, 'greedy%', 5);
RESET session_replication_role;
UPDATE pool_health.policies SET comment = NULL WHERE false;	-- tells the worker
SELECT wait_for_policies();
SELECT name, error FROM pool_health.policy_errors;
SELECT policy, reserve_connections, reserve_unused, max_logins_per_second, login_burst,
       login_tokens, refused_reserve, refused_login_rate
FROM pool_health.usage_by_policy ORDER BY policy;
SELECT q->>'policy' AS policy, q->'reserve_connections' AS reserve, q->'reserve_unused' AS unused,
       q->'max_logins_per_second' AS rate, q->'login_burst' AS burst, q->'login_tokens' AS tokens,
       q->'refused_by' AS refused_by
FROM jsonb_array_elements(pool_health.status()->'policies'->'quotas') q ORDER BY 1;
SELECT line FROM regexp_split_to_table(pool_health.metrics(), E'\n') line
WHERE line ~ '^pool_health_policy_(reserve|login|refusals_by_reason)' ORDER BY 1;
DELETE FROM pool_health.policies;
SELECT wait_for_policies();
-- headroom values past everything (their constraints dropped by the owner,
-- the trigger bypassed): the worker leaves each such policy out and lists it
ALTER TABLE pool_health.policies DROP CONSTRAINT reserve_connections_in_range,
    DROP CONSTRAINT login_burst_in_range,
    DROP CONSTRAINT login_burst_needs_max_logins_per_second;
SET session_replication_role = replica;
INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('negative_reserve', 'x%', -1);
INSERT INTO pool_health.policies (name, application_name, max_logins_per_second, login_burst) VALUES ('zero_burst', 'y%', 5, 0);
INSERT INTO pool_health.policies (name, application_name, login_burst) VALUES ('burst_without_rate', 'z%', 3);
RESET session_replication_role;
UPDATE pool_health.policies SET comment = NULL WHERE false;	-- tells the worker
SELECT wait_for_policies();
SELECT name, error FROM pool_health.policy_errors ORDER BY name;
SELECT count(*) AS in_effect FROM pool_health.usage_by_policy;
DELETE FROM pool_health.policies;
SELECT wait_for_policies();

-- the cleanup functions check their arguments
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle(NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('0')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle_in_transaction('-1 s')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('1 s', NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(101)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(-1)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.cleanup(NULL)$$);
-- nothing to do: no rows, and nothing audited
SELECT * FROM pool_health.cleanup();
SELECT * FROM pool_health.terminate_idle('1 h');
SELECT * FROM pool_health.reclaim(100);
SELECT count(*) FROM pool_health.terminations;
