-- Settings: defaults, units, validation.  They are reloadable (sighup):
-- a session cannot SET them, ALTER SYSTEM validates them.
SELECT name, setting, unit, context, vartype, min_val, max_val, boot_val
FROM pg_settings WHERE name LIKE 'pool_health.%' ORDER BY name;
SHOW pool_health.leak_after;

SET pool_health.degraded_percent = 50;
ALTER SYSTEM SET pool_health.degraded_percent = 0;
ALTER SYSTEM SET pool_health.degraded_percent = 101;
ALTER SYSTEM SET pool_health.critical_percent = -5;
ALTER SYSTEM SET pool_health.critical_percent = 'lots';
ALTER SYSTEM SET pool_health.leak_after = '-1s';
ALTER SYSTEM SET pool_health.leak_after = 0;
ALTER SYSTEM SET pool_health.leak_after = '10 parsecs';
ALTER SYSTEM SET pool_health.sample_interval = '5ms';
ALTER SYSTEM SET pool_health.sample_interval = '2h';
ALTER SYSTEM SET pool_health.notify_channel = 'a_channel_name_that_is_much_longer_than_sixty_three_bytes_allowed_';
ALTER SYSTEM SET pool_health.history_retention = '10min';
ALTER SYSTEM SET pool_health.history_raw_samples = -1;
ALTER SYSTEM SET pool_health.forecast_window = '1s';
ALTER SYSTEM SET pool_health.enforce = 'maybe';
ALTER SYSTEM SET pool_health.protected_roles = 'admin, "unterminated';
ALTER SYSTEM SET pool_health.client_pool_size = 'twenty';
SET pool_health.database = 'other';
ALTER SYSTEM SET pool_health.no_such_setting = 1;
-- nothing was written
SELECT pg_read_file('postgresql.auto.conf') LIKE '%pool_health%' AS written;

-- the one a session sets: the size of its client pool, as declared
SET pool_health.client_pool_size = -1;
SET pool_health.client_pool_size = 2147483648;
SET pool_health.client_pool_size = 'twenty';
SET pool_health.client_pool_size = '';
ALTER ROLE CURRENT_USER SET pool_health.client_pool_size = 'twenty';
SHOW pool_health.client_pool_size;
SET pool_health.client_pool_size = 20;
SHOW pool_health.client_pool_size;
-- as the server's integers: rounded, exponents; shown as understood
SET pool_health.client_pool_size = '1.5';
SHOW pool_health.client_pool_size;
SET pool_health.client_pool_size = ' 1e3 ';
SHOW pool_health.client_pool_size;
RESET pool_health.client_pool_size;
