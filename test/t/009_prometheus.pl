# Prometheus: metrics() is accepted by promtool with leaks, terminations and
# many applications present (labels escaped, groups bounded), and the real
# prometheus-postgres-exporter scrapes pool_health through the shipped
# query file, per-application accounting and pool advice included.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;
use File::Basename;
use Cwd 'abs_path';

my $node = ph_node('prom', conf => "max_connections = 60\npool_health.leak_after = '1s'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE exporter LOGIN IN ROLE pg_monitor;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, max_connections)
	VALUES ('web', 'web%', '1s', 10);
});

# many applications, one with a quote, a backslash and a newline in its name
my @sessions;
for my $i (1 .. 14)
{
	push @sessions, [ ph_app_session($node, "app-$i", role => 'app') ];
}
# (two sessions, so that it is among the largest groups)
push @sessions, [ ph_app_session($node, 'we"ird\\app', role => 'app') ] for 1 .. 2;
# a leak, and a termination
my ($leaker) = ph_app_session($node, 'report', role => 'app');
$leaker->query_safe('BEGIN; SELECT 1;');
my ($victim, $victim_pid) = ph_app_session($node, 'web-1', role => 'app', on_error_stop => 0);
$victim->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $victim_pid), 'a session was terminated');
ok($node->poll_query_until('postgres', 'SELECT leaked >= 1 FROM pool_health.usage'),
	'a session leaks');

my $metrics = $node->safe_psql('postgres', 'SELECT pool_health.metrics()');
my $file = "$PostgreSQL::Test::Utils::tmp_check/metrics.prom";
PostgreSQL::Test::Utils::append_to_file($file, "$metrics\n");
my ($stdout, $stderr);
my $ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', $file, '>', \$stdout, '2>', \$stderr);
ok($ok, 'promtool check metrics accepts the output');
is($stdout . $stderr, '', 'without a single lint warning');

like($metrics, qr/^# HELP pool_health_used_connections .+\n# TYPE pool_health_used_connections gauge\npool_health_used_connections \d+$/m,
	'families have HELP and TYPE');
like($metrics, qr/^pool_health_terminations_total [1-9]/m, 'the termination is counted');
like($metrics, qr/^pool_health_leaked_sessions [1-9]/m, 'the leak is counted');
like($metrics, qr/^pool_health_level\{level="degraded"\} 1$/m, 'the level is a labelled gauge');
like($metrics, qr/^pool_health_application_connections\{application_name="we\\"ird\\\\app"\} 2$/m,
	'label values are escaped');
my @app_series = $metrics =~ /^pool_health_application_connections\{/mg;
is(scalar(@app_series), 10, 'per-application series are bounded: 10 groups');
like($metrics, qr/^# TYPE pool_health_application_connections_other gauge\npool_health_application_connections_other [1-9]\d*$/m,
	'the rest is summed in a family of its own, so no application name can collide with it');
like($metrics, qr/^pool_health_policy_max_connections\{policy="web"\} 10$/m, 'policy quotas are exported');
is($node->safe_psql('postgres', "SELECT pool_health.metrics() LIKE '%pool_health_used_connections%'",
		extra_params => [ '-U', 'app' ]),
	't', 'any role may call metrics()');

# --- prometheus-postgres-exporter with the shipped query file -------------------
my $queries = abs_path(dirname(__FILE__) . '/../../exporter/pool_health_queries.yaml');
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = 'host=' . $node->host . ' port=' . $node->port . ' user=exporter dbname=postgres sslmode=disable';
my ($out, $err) = ('', '');
my $exporter = IPC::Run::start(
	[ 'prometheus-postgres-exporter', "--extend.query-path=$queries",
	  "--web.listen-address=127.0.0.1:$port", '--disable-settings-metrics' ],
	'>', \$out, '2>', \$err,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn });
my $scrape = '';
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	$scrape = `curl -s http://127.0.0.1:$port/metrics`;
	last if $scrape =~ /^pool_health_usage_used\b/m;
	select(undef, undef, undef, 0.1);
}
$exporter->kill_kill;
like($scrape, qr/^pool_health_usage_used(\{[^}]*\})? \d+/m, 'the exporter scrapes pool_health_usage_used');
like($scrape, qr/^pool_health_usage_level_value\{[^}]*level="degraded"[^}]*\} 1/m, 'and the level');
like($scrape, qr/^pool_health_worker_terminations(\{[^}]*\})? [1-9]/m, 'and the terminations counter');
like($scrape, qr/^pool_health_application_connections\{[^}]*application_name="app-1"[^}]*\} 1/m,
	'and per-application connections');
like($scrape, qr/^pool_health_policy_max_connections\{[^}]*policy="web"[^}]*\} 10/m, 'and policy quotas');
like($scrape, qr/^pool_health_pool_in_xact\{[^}]*application_name="report"[^}]*\} 1$/m,
	'and per-application accounting: the leaker is in a transaction');
like($scrape, qr/^pool_health_pool_suggested_pool_size\{[^}]*application_name="report"[^}]*\} 1$/m,
	'and its pool advice: its one connection (not saturated: not told to grow)');
unlike($err, qr/level=error/, 'without query errors') or diag($err);

$_->[0]->quit for @sessions;
$node->stop;
done_testing();
