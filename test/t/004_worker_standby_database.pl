# The worker on a hot standby (built with pg_basebackup -R), and a worker
# whose database does not exist yet: it waits and logs once, then connects.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# --- a standby runs the worker and serves usage and history ------------------
my $primary = ph_node('primary', init => { allows_streaming => 1 });
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

ok( $standby->poll_query_until('postgres',
		"SELECT status->'worker'->>'mode' = 'running' AND (status->'worker'->>'on_standby')::bool FROM pool_health.status() status"),
	'the worker runs on the standby and knows it');
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery() AND used >= 1 FROM pool_health.usage'),
	't', 'the standby serves pool_health.usage');
ok($standby->poll_query_until('postgres', "SELECT count(*) >= 2 FROM pool_health.history"),
	'the standby keeps its own history');

# a level change on the standby is logged, not notified (NOTIFY is impossible there)
my ($client) = ph_session($standby);    # in use while the worker samples
my $log_offset = -s $standby->logfile;
$standby->append_conf('postgresql.conf', 'pool_health.degraded_percent = 1');
$standby->reload;
ok($standby->wait_for_log(qr/WARNING:  pool_health: connection health changed from healthy to degraded/, $log_offset),
	'a level change on the standby is logged');
ok( $standby->poll_query_until('postgres',
		"SELECT (s->'worker'->>'errors')::int = 0 FROM pool_health.status() s"),
	'without an error (no NOTIFY attempted)');

# policies replicate; the standby's worker enforces them, and audits to the
# server log and the in-memory list (the table is read-only there)
$primary->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('replica-web', 'web%', '1s')});
$primary->wait_for_catchup($standby);
ok( $standby->poll_query_until('postgres',
		"SELECT (s->'policies'->>'enabled')::int = 1 FROM pool_health.status() s"),
	'the standby worker compiles the replicated policies');
my ($leaker, $leaker_pid) = ph_app_session($standby, 'web-ro', on_error_stop => 0);
$leaker->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;');
# superusers are spared: allow them for this policy on the primary
$primary->safe_psql('postgres', "UPDATE pool_health.policies SET allow_superuser = true");
$primary->wait_for_catchup($standby);
ok(ph_gone($standby, $leaker_pid), 'a leaked session on the standby is ended');
is( $standby->safe_psql('postgres',
		"SELECT policy || ':' || success FROM pool_health.recent_actions WHERE pid = $leaker_pid"),
	'replica-web:true', 'and audited in pool_health.recent_actions');
is( $standby->safe_psql('postgres',
		"SELECT policy || ':' || limit_name || ':' || NOT dry_run FROM pool_health.my_terminations WHERE pid = $leaker_pid"),
	'replica-web:idle_in_transaction_timeout:true',
	'its role reads it on the standby in pool_health.my_terminations');
like(slurp_file($standby->logfile), qr/LOG:  pool_health: terminated session $leaker_pid /,
	'and in the server log');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM pool_health.terminations'),
	'0', 'the read-only table is left alone');

# promotion: the worker carries on
$standby->promote;
ok( $standby->poll_query_until('postgres',
		"SELECT NOT (status->'worker'->>'on_standby')::bool AND status->'worker'->>'mode' = 'running' FROM pool_health.status() status"),
	'after promotion the worker runs as on a primary');
$client->quit;
$standby->stop;
$primary->stop;

# --- pool_health.database does not exist yet ---------------------------------------
my $node = ph_node('nodb', conf => "pool_health.database = 'appdb'");
ok( $node->poll_query_until('postgres',
		"SELECT status->'worker'->>'mode' = 'waiting for database' FROM pool_health.status() status"),
	'the worker waits for its database');
$node->wait_for_log(qr/pool_health: database "appdb" does not exist; sampling without it and waiting for it to be created/);
ok($node->poll_query_until('postgres', "SELECT (status->'worker'->>'samples')::int >= 5 FROM pool_health.status() status"),
	'and samples meanwhile');
my $log = slurp_file($node->logfile);
my $fatals = () = $log =~ /FATAL:  database "appdb" does not exist/g;
my $starts = $node->safe_psql('postgres', "SELECT status->'worker'->>'starts' FROM pool_health.status() status");
ok($fatals <= 1 && $starts <= 2, "no crash loop ($fatals failed connection, $starts starts)");
my $waits = () = $log =~ /waiting for it to be created/g;
is($waits, 1, 'the wait is logged once');

$node->safe_psql('postgres', 'CREATE DATABASE appdb');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pool_health' AND datname = 'appdb'"),
	'once the database exists the worker connects to it');
ok( $node->poll_query_until('postgres',
		"SELECT status->'worker'->>'mode' = 'waiting for extension' FROM pool_health.status() status"),
	'and waits for the extension there');
$node->safe_psql('appdb', 'CREATE EXTENSION pool_health');
ok( $node->poll_query_until('appdb',
		"SELECT status->'worker'->>'mode' = 'running' FROM pool_health.status() status"),
	'then runs');
$node->stop;
done_testing();
