-- Bad input to every function: NULL, negative, zero, huge and malformed
-- values get a clear error with an SQLSTATE, and change nothing.
SELECT count(*) AS policies_before FROM pool_health.policies;
SELECT count(*) AS audit_before FROM pool_health.terminations;

SELECT expect_error($$SELECT * FROM pool_health.get_history(NULL, NULL, NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.get_history(NULL, NULL, '')$$);
SELECT expect_error($$SELECT * FROM pool_health.get_history(NULL, NULL, 'RAW')$$);
SELECT expect_error($$SELECT * FROM pool_health.get_history('yesterday-ish')$$);
SELECT count(*) AS empty_range FROM pool_health.get_history('infinity', '-infinity', 'raw');
SELECT count(*) AS reversed_range FROM pool_health.get_history(now(), now() - interval '1 day', 'minute');

SELECT expect_error($$SELECT * FROM pool_health.terminate_idle(NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('-1 s')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('0')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('100000000 days')$$);
-- huge negative intervals, and ones whose parts overflow, are refused too
-- (they must not wrap around into a small positive age)
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('-178000000 years')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('178000000 years -2000000000 days')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle_in_transaction('-2147483648 months 1 s')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('1 fortnight')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle('1 s', NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle_in_transaction(NULL, false)$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle_in_transaction('-1 year')$$);
SELECT expect_error($$SELECT * FROM pool_health.terminate_idle_in_transaction('100000000 days')$$);

SELECT expect_error($$SELECT * FROM pool_health.reclaim(NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(-1)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(101)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(2147483647)$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim('half')$$);
SELECT expect_error($$SELECT * FROM pool_health.reclaim(50, NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.cleanup(NULL)$$);
SELECT expect_error($$SELECT * FROM pool_health.cleanup('maybe')$$);

SELECT expect_error($$SELECT * FROM pool_health.get_usage_by('')$$);
SELECT expect_error($$SELECT * FROM pool_health.get_usage_by('DATABASE')$$);

-- policies: huge values
SELECT expect_error($$INSERT INTO pool_health.policies (name, idle_timeout) VALUES ('p', '178000000 years')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, max_connections) VALUES ('p', 2147483648)$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, priority) VALUES ('p', 'high')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, client_addr) VALUES ('p', 'not-a-network')$$);
SELECT expect_error($$INSERT INTO pool_health.policies (name, role) VALUES ('p', repeat('r', 100))$$) LIKE 'no error' AS long_role_name_is_truncated_like_any_name;
DELETE FROM pool_health.policies;

-- nothing changed
SELECT count(*) AS policies_after FROM pool_health.policies;
SELECT count(*) AS audit_after FROM pool_health.terminations;
