# Prometheus: metrics() is accepted by promtool with leaks, terminations and
# many applications present (labels escaped, groups bounded), and the real
# prometheus-postgres-exporter scrapes pool_health through the shipped
# query file, per-application accounting and pool advice included.  The
# level is a state set of its own, never a label of another family: a
# level change starts no new series, in metrics() and in the exporter.
# An application_name is a label only once known for
# pool_health.metrics_min_age or if it matches
# pool_health.metrics_application_pattern: an unprivileged role changing
# its application_name every tenth of a second creates no series in
# metrics() nor over HTTP, its counts summed in the _other families.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use PoolHealthTest;
use File::Basename;
use Cwd 'abs_path';

# every application_name may be a label at once (pattern %) until the
# labelling part below
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('prom',
	conf => "max_connections = 60\npool_health.leak_after = '1s'\npool_health.metrics_application_pattern = '%'\npool_health.http_listen = '127.0.0.1:$http_port'");
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
like($metrics, qr/^# TYPE pool_health_info gauge\npool_health_info\{version="\d+\.\d+"\} 1$/m,
	'pool_health_info gives the library\'s version');
like($metrics, qr/^pool_health_terminations_total [1-9]/m, 'the termination is counted');
like($metrics, qr/^pool_health_leaked_sessions [1-9]/m, 'the leak is counted');
like($metrics, qr/^pool_health_level\{level="degraded"\} 1$/m, 'the level is a labelled gauge');
is(join(' ', $metrics =~ /^pool_health_level\{level="(\w+)"\} ([01])$/mg), 'healthy 0 degraded 1 critical 0 exhausted 0',
	'a state set: each level, 1 for the current one');
unlike($metrics, qr/^pool_health_(?!level\{)\w+\{[^}]*\blevel=/m, 'no other family has a level label');
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
# scrape(): the exporter's page, once it has pool_health's families
sub scrape
{
	my $page = '';
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		$page = `curl -s http://127.0.0.1:$port/metrics`;
		last if $page =~ /^pool_health_usage_used\b/m;
		select(undef, undef, undef, 0.1);
	}
	return $page;
}
# series(page, prefix): the series (name and labels) of the families named
# prefix*, the per-group ones of metrics() (labelled by a group's name) apart
sub series
{
	my ($page, $prefix) = @_;
	return join "\n", sort grep { !/\{(database|role|application_name|policy)=/ }
	  $page =~ /^(\Q$prefix\E\w*(?:\{[^}]*\})?) /mg;
}
my $scrape = scrape();
like($scrape, qr/^pool_health_usage_used(\{[^}]*\})? \d+/m, 'the exporter scrapes pool_health_usage_used');
like($scrape, qr/^pool_health_level\{[^}]*level="degraded"[^}]*\} 1/m, 'and the level, as a state set');
like($scrape, qr/^pool_health_level\{[^}]*level="healthy"[^}]*\} 0/m, 'with a series for each level');
unlike($scrape, qr/^pool_health_usage_\w+\{[^}]*\blevel=/m, 'the usage gauges have no level label');
like($scrape, qr/^pool_health_worker_terminations_total(\{[^}]*\})? [1-9]/m, 'and the terminations counter');
like($scrape, qr/^pool_health_application_connections\{[^}]*application_name="app-1"[^}]*\} 1/m,
	'and per-application connections');
like($scrape, qr/^pool_health_application_other_connections(\{[^}]*\})? \d+/m, 'and the applications not labelled');
like($scrape, qr/^pool_health_policy_max_connections\{[^}]*policy="web"[^}]*\} 10/m, 'and policy quotas');
like($scrape, qr/^pool_health_info\{[^}]*extension_version="\d+\.\d+"[^}]*\} 1$/m,
	'and pool_health_info, the installed extension\'s version');
like($scrape, qr/^pool_health_policy_reserve_connections\{[^}]*policy="web"[^}]*\} 0$/m, 'and reserves (none here)');
like($scrape, qr/^pool_health_pool_in_xact\{[^}]*application_name="report"[^}]*\} 1$/m,
	'and per-application accounting: the leaker is in a transaction');
like($scrape, qr/^pool_health_pool_suggested_pool_size\{[^}]*application_name="report"[^}]*\} 1$/m,
	'and its pool advice: its one connection (not saturated: not told to grow)');
# the exporter's pool_health families pass promtool's lint (counters end in _total)
my $families = join '', grep { /^(# (HELP|TYPE) )?pool_health_/ } split /^/m, $scrape;
my $exported = "$PostgreSQL::Test::Utils::tmp_check/exporter.prom";
PostgreSQL::Test::Utils::append_to_file($exported, $families);
$ok = IPC::Run::run([ 'promtool', 'check', 'metrics' ], '<', $exported, '>', \$stdout, '2>', \$stderr);
ok($ok, 'promtool check metrics accepts the exporter\'s pool_health families');
is($stdout . $stderr, '', 'without a lint warning');

# the leak ends: the level goes back to healthy, and no usage series is new
my $usage_before = series($scrape, 'pool_health_usage_');
my $metrics_before = series($metrics, 'pool_health_');
$leaker->query_safe('COMMIT');
ok($node->poll_query_until('postgres', "SELECT level = 'healthy' FROM pool_health.usage"),
	'the leak committed: the level is healthy again');
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	$scrape = scrape();
	last if $scrape =~ /^pool_health_level\{[^}]*level="healthy"[^}]*\} 1/m;
	select(undef, undef, undef, 0.1);
}
like($scrape, qr/^pool_health_level\{[^}]*level="healthy"[^}]*\} 1/m, 'the exporter: healthy 1');
like($scrape, qr/^pool_health_level\{[^}]*level="degraded"[^}]*\} 0/m, 'degraded 0');
is(series($scrape, 'pool_health_usage_'), $usage_before,
	'the level change started no usage series in the exporter (the same series, before and after)');
$metrics = $node->safe_psql('postgres', 'SELECT pool_health.metrics()');
like($metrics, qr/^pool_health_level\{level="healthy"\} 1$/m, 'metrics(): healthy 1');
is(series($metrics, 'pool_health_'), $metrics_before, 'metrics(): the same series, before and after');
$exporter->kill_kill;
unlike($err, qr/level=error/, 'without query errors') or diag($err);

# --- labels only for application_names old enough, or matching the pattern -----------
# (the default pool_health.metrics_min_age, 5 minutes: nothing here is that
# old) every other application is summed in the _other families
ph_set($node, 'pool_health.metrics_application_pattern' => 'match-%',
	'pool_health.metrics_top_groups' => '1000');
my $monitor;
{
	local $ENV{PGAPPNAME} = 'match-monitor';	# a label: its own transactions apart
	($monitor) = ph_session($node);
}
sub value
{
	my ($page, $name) = @_;
	return $page =~ /^\Q$name\E (\S+)$/m ? $1 : 'absent';
}
sub http_metrics { return `curl -s http://127.0.0.1:$http_port/metrics`; }
# only the sessions held from here on: the exporter's and psql's gone
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	last if $monitor->query_safe("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND (usename = 'exporter' OR application_name = '009_prometheus.pl')") eq '0';
	usleep(100_000);
}
my $m0 = $monitor->query_safe('SELECT pool_health.metrics()');
like($m0, qr/^pool_health_application_connections\{application_name="match-monitor"\} 1$/m,
	'a name matching the pattern is a label at once');
unlike($m0, qr/application_name="app-1"/, 'a name neither old enough nor matching is not');
my $churner;
{
	local $ENV{PGAPPNAME} = 'churn-0';
	($churner) = ph_session($node, role => 'app');
}
my ($labelled, $scrapes, $churn_xacts) = (0, 0, 1);	# its pg_backend_pid()
my ($other_ok, $http_ok) = (1, 0);
for my $i (1 .. 20)
{
	$churner->query_safe("SET application_name = 'churn-$i'; SELECT 1;");
	$churn_xacts += 2;
	my $m = $monitor->query_safe('SELECT pool_health.metrics()');
	my $h = http_metrics();
	$scrapes += 2;
	$http_ok++ if $h =~ /^pool_health_application_connections_other \d+$/m;
	$labelled++ for ($m =~ /application_name="churn-/g, $h =~ /application_name="churn-/g);
	$other_ok = 0
	  unless value($m, 'pool_health_application_connections_other') == value($m0, 'pool_health_application_connections_other') + 1;
	usleep(100_000);
}
is($labelled, 0, "20 application_names in 2 s: none a label in $scrapes scrapes of metrics() and /metrics");
is($http_ok, 20, 'over HTTP too (the same formatter)');
ok($other_ok, 'its connection is counted in pool_health_application_connections_other');
my $m1 = $monitor->query_safe('SELECT pool_health.metrics()');
is(value($m1, 'pool_health_application_xacts_other') - value($m0, 'pool_health_application_xacts_other'),
	$churn_xacts, "and its $churn_xacts transactions in pool_health_application_xacts_other");
like($m1, qr/^# TYPE pool_health_application_xacts_other gauge$/m, 'a gauge: the set it sums changes');
{
	local $ENV{PGAPPNAME} = 'match-new';
	my ($new) = ph_session($node);
	like($monitor->query_safe('SELECT pool_health.metrics()'),
		qr/^pool_health_application_connections\{application_name="match-new"\} 1$/m,
		'a new session whose name matches is a label at once');
	$new->quit;
}
# once old enough, a name is a label
ph_set($node, 'pool_health.metrics_min_age' => '2s');
ok($node->poll_query_until('postgres',
		q{SELECT pool_health.metrics() ~ '\npool_health_application_connections\{application_name="churn-20"\} 1\n'}),
	'a name known for pool_health.metrics_min_age is a label');
my ($ret, $bad);
($ret, $stdout, $bad) = $node->psql('postgres', q{ALTER SYSTEM SET pool_health.metrics_application_pattern = 'x\\'});
like($bad, qr/invalid value for parameter "pool_health.metrics_application_pattern".*\n.*DETAIL:  A LIKE pattern must not end with the escape character/,
	'a pattern ending with the escape character is refused');
($ret, $stdout, $bad) = $node->psql('postgres',
	"ALTER SYSTEM SET pool_health.metrics_application_pattern = '" . ('%' x 256) . "'");
like($bad, qr/DETAIL:  A pattern must be at most 255 bytes long/, 'so is a pattern of 256 bytes');
is($node->safe_psql('postgres', 'SHOW pool_health.metrics_application_pattern'), 'match-%', 'and nothing changed');
$churner->quit;
$monitor->quit;

$_->[0]->quit for @sessions;
$node->stop;
done_testing();
