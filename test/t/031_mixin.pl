# The Prometheus mixin (mixin/): promtool accepts the rules and passes
# their unit tests (each alert firing and quiet, from both sources), and a
# rule changed fails them; mixin/check.py finds every metric the recording
# rules and the dashboard read in real scrapes of HTTP /metrics and of
# prometheus-postgres-exporter with the shipped query file (and names
# what a scrape lacks); a real Prometheus loading the rules records each
# pool_health:* name for both sources, each source's rules only its own
# targets, and a real leak, refusal, termination and oversized pool put
# their alerts in pending, the running worker none.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JSON::PP;
use PoolHealthTest;
use File::Basename;
use File::Copy;
use Cwd 'abs_path';

my $mixin = abs_path(dirname(__FILE__) . '/../../mixin');
my $queries = abs_path(dirname(__FILE__) . '/../../exporter/pool_health_queries.yaml');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $python = '/usr/bin/python3';
my ($ok, $stdout, $stderr);

sub run_cmd
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	my $done = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	return ($done, $out . $err);
}

# --- promtool -------------------------------------------------------------------
($ok, $stdout) = run_cmd('promtool', 'check', 'rules', "$mixin/recording_rules.yaml", "$mixin/alerting_rules.yaml");
ok($ok, 'promtool check rules accepts both files') or diag($stdout);
like($stdout, qr/recording_rules.yaml\n  SUCCESS: 43 rules found\n/, '43 recording rules (20 names, both sources)');
like($stdout, qr/alerting_rules.yaml\n  SUCCESS: 7 rules found\n/, '7 alerts');
unlike($stdout, qr/lint|duplicate/i, 'without a lint warning');

($ok, $stdout) = run_cmd('promtool', 'test', 'rules', glob("$mixin/tests/*.yaml"));
ok($ok, 'promtool test rules: the unit tests pass') or diag($stdout);

# a rule changed fails them: a copy of the mixin whose leak alert waits 5
# minutes instead of 15
my $broken = "$tmp/031_broken_mixin";
mkdir $broken;
mkdir "$broken/tests";
copy("$mixin/$_", "$broken/$_") or die "copy $_: $!"
  for qw(recording_rules.yaml alerting_rules.yaml dashboard.json check.py), map { 'tests/' . basename($_) } glob("$mixin/tests/*.yaml");
my $rules = slurp_file("$broken/alerting_rules.yaml");
$rules =~ s/(pool_health:leaked_sessions > 0\n        for: )15m/${1}5m/ or die 'no leak alert';
open(my $fh, '>', "$broken/alerting_rules.yaml") or die;
print $fh $rules;
close $fh;
($ok, $stdout) = run_cmd('promtool', 'test', 'rules', glob("$broken/tests/*.yaml"));
ok(!$ok, 'a leak alert after 5 minutes fails the unit tests');
like($stdout, qr/alertname: PoolHealthSessionsLeaking, time: 10m/, 'naming the alert and the time');
copy("$mixin/alerting_rules.yaml", "$broken/alerting_rules.yaml") or die;

# --- real scrapes ------------------------------------------------------------------
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('mixin',
	conf => "max_connections = 40\npool_health.sample_interval = '200ms'\npool_health.leak_after = '1s'\npool_health.metrics_application_pattern = '%'\npool_health.http_listen = '127.0.0.1:$http_port'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE exporter LOGIN IN ROLE pg_monitor;
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('capped', 'capped%', 1);
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'web%', '1s');
});
ok($node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s"),
	'the policies are in effect');

# a pool of 8 sessions that never runs two transactions at once, a capped
# application at its quota (both named at login), and a leak
my @sessions;
my $capped;
{
	local $ENV{PGAPPNAME} = 'idle-pool';
	push @sessions, [ ph_session($node, role => 'app') ] for 1 .. 8;
	$ENV{PGAPPNAME} = 'capped-1';
	($capped) = ph_session($node, role => 'app');
}
my ($leaker) = ph_app_session($node, 'report', role => 'app');
$leaker->query_safe('BEGIN; SELECT 1;');
ok($node->poll_query_until('postgres', 'SELECT leaked >= 1 FROM pool_health.usage'), 'a session leaks');

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = 'host=' . $node->host . ' port=' . $node->port . ' user=exporter dbname=postgres sslmode=disable';
my ($exp_out, $exp_err) = ('', '');
my $exporter = IPC::Run::start(
	[ 'prometheus-postgres-exporter', "--extend.query-path=$queries",
	  "--web.listen-address=127.0.0.1:$port", '--disable-settings-metrics' ],
	'>', \$exp_out, '2>', \$exp_err,
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn });

# a page once it has what the pattern asks
sub scrape
{
	my ($url, $pattern) = @_;
	my $page = '';
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		$page = `curl -s $url`;
		last if $page =~ $pattern;
		usleep(100_000);
	}
	return $page;
}
my $http = scrape("http://127.0.0.1:$http_port/metrics",
	qr/^pool_health_application_excess_connections\{application_name="idle-pool"\}/m);
like($http, qr/^pool_health_worker_up 1$/m, 'HTTP /metrics: the worker is up');
my $exported = scrape("http://127.0.0.1:$port/metrics",
	qr/^pool_health_pool_excess_connections\{[^}]*application_name="idle-pool"/m);
like($exported, qr/^pool_health_pool_excess_connections\{[^}]*application_name="idle-pool"/m,
	'the exporter: per-application pool advice');
my $http_file = "$tmp/031_http.prom";
my $exporter_file = "$tmp/031_exporter.prom";
append_to_file($http_file, $http);
append_to_file($exporter_file, join '', grep { /^(# (HELP|TYPE) )?pool_health_/ } split /^/m, $exported);
for my $file ($http_file, $exporter_file)
{
	($ok, $stdout) = run_cmd('sh', '-c', "promtool check metrics < $file");
	ok($ok && $stdout eq '', 'promtool check metrics accepts ' . basename($file) . ' without a warning')
	  or diag($stdout);
}

($ok, $stdout) = run_cmd($python, "$mixin/check.py", '--metrics', $http_file, '--exporter', $exporter_file);
ok($ok, 'mixin/check.py: every name the rules and the dashboard read exists') or diag($stdout);
like($stdout, qr/^recording rules: 20 names for each source$/m, '20 names recorded for each source');
like($stdout, qr/^metrics scrape: \d+ pool_health names; the recording rules read 20 of them$/m,
	'the metrics() / HTTP rules read 20 names of the scrape');
like($stdout, qr/^exporter scrape: \d+ pool_health names; the recording rules read 23 of them$/m,
	'the exporter rules read 23 names of its scrape');
like($stdout, qr/^dashboard: \d+ expressions, 20 pool_health names$/m, 'the dashboard reads the 20 names');
like($stdout, qr/^unit tests: 7 alerts fire from both sources and stay quiet$/m,
	'the unit tests: each of the 7 alerts fires from both sources and stays quiet');
note($stdout);

# the check fails on a scrape without a family, and on a dashboard name
# that nothing records
my $lacking = "$tmp/031_exporter_lacking.prom";
append_to_file($lacking, join '', grep { !/pool_health_usage_leaked\b/ } split /^/m, slurp_file($exporter_file));
($ok, $stdout) = run_cmd($python, "$mixin/check.py", '--metrics', $http_file, '--exporter', $lacking);
ok(!$ok, 'check.py fails on an exporter scrape without pool_health_usage_leaked');
like($stdout, qr/^problem: recording group for exporter reads pool_health_usage_leaked, absent from its scrape$/m,
	'and names it');
my $dashboard = slurp_file("$broken/dashboard.json");
$dashboard =~ s/pool_health:leaked_sessions/pool_health:leaked_session/ or die;
open($fh, '>', "$broken/dashboard.json") or die;
print $fh $dashboard;
close $fh;
($ok, $stdout) = run_cmd($python, "$broken/check.py", '--metrics', $http_file, '--exporter', $exporter_file);
ok(!$ok, 'check.py fails on a dashboard reading pool_health:leaked_session');
like($stdout, qr/^problem: the dashboard uses pool_health:leaked_session, neither recorded/m, 'and names it');

# --- a real Prometheus with the rules ------------------------------------------------
my $prom_port = PostgreSQL::Test::Cluster::get_free_port();
my $config = "$tmp/031_prometheus.yml";
append_to_file($config, <<"EOF");
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $mixin/recording_rules.yaml
  - $mixin/alerting_rules.yaml
scrape_configs:
  - job_name: pool_health
    static_configs: [{targets: ['127.0.0.1:$http_port']}]
  - job_name: postgres_exporter
    static_configs: [{targets: ['127.0.0.1:$port']}]
EOF
my ($prom_out, $prom_err) = ('', '');
my $prometheus = IPC::Run::start(
	[ 'prometheus', "--config.file=$config", "--storage.tsdb.path=$tmp/031_prometheus_data",
	  "--web.listen-address=127.0.0.1:$prom_port" ],
	'>', \$prom_out, '2>', \$prom_err);

# query(promql): the result vector of an instant query
sub query
{
	my ($promql) = @_;
	my $answer = `curl -s -G http://127.0.0.1:$prom_port/api/v1/query --data-urlencode 'query=$promql'`;
	my $data = eval { decode_json($answer) };
	return [] unless $data && $data->{status} eq 'success';
	return $data->{data}{result};
}
# poll(promql, n): wait until the query returns at least n series
sub poll
{
	my ($promql, $n) = @_;
	my $result = [];
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		$result = query($promql);
		last if @$result >= $n;
		usleep(200_000);
	}
	return $result;
}
my @names = do
{
	my %seen;
	grep { !$seen{$_}++ } slurp_file("$mixin/recording_rules.yaml") =~ /^\s+- record: (\S+)$/mg;
};
# every name, for each source (the rates once two scrapes are in)
my $by_source = poll('count by (__name__, pool_health_source) ({__name__=~"pool_health:.+"})', 2 * @names);
my %recorded;
$recorded{"$_->{metric}{pool_health_source} $_->{metric}{__name__}"} = 1 for @$by_source;
is(join(' ', grep { !$recorded{"metrics $_"} } @names), '', 'Prometheus records every name from HTTP /metrics');
is(join(' ', grep { !$recorded{"exporter $_"} } @names), '', 'and every name from the exporter');
is(scalar(@$by_source), 2 * scalar(@names), 'and nothing else: ' . scalar(@names) . ' names for each source');
is(scalar(@{ query('{__name__=~"pool_health:.+",pool_health_source="metrics",job!="pool_health"}') }), 0,
	'the metrics() rules record nothing of the exporter target (shared names included)');
is(scalar(@{ query('{__name__=~"pool_health:.+",pool_health_source="exporter",job!="postgres_exporter"}') }), 0,
	'nor the exporter rules of the HTTP target');
my $levels = query('pool_health:level == 1');
is(join(' ', sort map { "$_->{metric}{job}:$_->{metric}{level}" } @$levels),
	'pool_health:degraded postgres_exporter:degraded', 'the level from both: degraded (the leak)');

# alerts: the leak's from both sources, then a refusal and a termination
sub pending
{
	my ($alert, $n) = @_;
	return join ' ', sort map { "$_->{metric}{job}:$_->{metric}{alertstate}" }
	  @{ poll("ALERTS{alertname=\"$alert\"}", $n) };
}
is(pending('PoolHealthSessionsLeaking', 2), 'pool_health:pending postgres_exporter:pending',
	'PoolHealthSessionsLeaking is pending for both sources');
like(ph_try_connect($node, 'capped-2', 'app'), qr/too many connections for pool_health policy "capped"/,
	'a login over the quota is refused');
is(pending('PoolHealthConnectionsRefused', 2), 'pool_health:pending postgres_exporter:pending',
	'PoolHealthConnectionsRefused is pending for both sources');
my ($victim, $victim_pid) = ph_app_session($node, 'web-1', role => 'app', on_error_stop => 0);
$victim->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $victim_pid), 'a session idle in transaction is terminated by its policy');
is(pending('PoolHealthSessionsTerminated', 2), 'pool_health:pending postgres_exporter:pending',
	'PoolHealthSessionsTerminated is pending for both sources');
my $large = poll('ALERTS{alertname="PoolHealthPoolLargerThanNeeded",application_name="idle-pool"}', 2);
is(join(' ', sort map { "$_->{metric}{job}:$_->{metric}{application_name}" } @$large),
	'pool_health:idle-pool postgres_exporter:idle-pool',
	'PoolHealthPoolLargerThanNeeded is pending for the 8 idle sessions, from both sources');
is(scalar(@{ query('ALERTS{alertname=~"PoolHealthWorkerDown|PoolHealthLevelCritical|PoolHealthExhaustionForecast"}') }), 0,
	'no worker down, critical level or exhaustion forecast');

# every query of the dashboard's panels is valid PromQL and has data from
# both sources ($job and $instance: every target)
my $board = decode_json(slurp_file("$mixin/dashboard.json"));
my @targets = map { @{ $_->{targets} || [] } } @{ $board->{panels} };
my (@failed, @empty);
for my $target (@targets)
{
	(my $promql = $target->{expr}) =~ s/\$(job|instance)\b/.+/g;
	my $answer = `curl -s -G http://127.0.0.1:$prom_port/api/v1/query --data-urlencode 'query=$promql'`;
	my $data = eval { decode_json($answer) };
	if (!$data || $data->{status} ne 'success')
	{
		push @failed, $promql;
		next;
	}
	my %jobs = map { ($_->{metric}{job} // '') => 1 } @{ $data->{data}{result} };
	push @empty, $promql unless $jobs{pool_health} && $jobs{postgres_exporter};
}
is(join("\n", @failed), '', scalar(@targets) . ' dashboard queries: Prometheus accepts each');
is(join("\n", @empty), '', 'and each has series from both sources');

$prometheus->kill_kill;
$exporter->kill_kill;
unlike($exp_err, qr/level=error/, 'the exporter without query errors') or diag($exp_err);
$capped->quit;
$leaker->quit;
$_->[0]->quit for @sessions;
ph_close_all();
$node->stop;
done_testing();
