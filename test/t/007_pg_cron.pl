# Scheduled cleanup with a real pg_cron job (Debian's postgresql-15-cron):
# enforcement off, pool_health.cleanup() every minute ends the leak.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('cron', preload => 0, conf => q{
shared_preload_libraries = 'pool_health,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
pool_health.enforce = off
});
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'web%', '1s');
	SELECT cron.schedule('pool-health-cleanup', '* * * * *',
	                     'SELECT count(*) FROM pool_health.cleanup()');
});

my ($leaker, $leaker_pid) = ph_app_session($node, 'web-1', role => 'app', on_error_stop => 0);
$leaker->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $leaker_pid), 'the pg_cron job ends the leaked session (within a minute)');
is( $node->safe_psql('postgres',
		"SELECT source || ':' || policy || ':' || success FROM pool_health.terminations WHERE pid = $leaker_pid"),
	'cleanup:web:true', 'audited as done by cleanup()');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM cron.job_run_details WHERE status = 'succeeded' AND command LIKE '%pool_health.cleanup()%'"),
	'pg_cron records the run as succeeded');
$node->stop;
done_testing();
