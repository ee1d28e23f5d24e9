# Behind a connection pooler: the real pgbouncer (Debian's 1.18) in
# transaction mode, on a free port, run as the test's user.  pgbouncer's
# server connections log in without the clients' application_name and
# then forward each client's name with a SET when they serve it, so:
#   - a quota by application_name does not apply (9 clients admitted);
#     pool_health sees sessions change application_name between
#     transactions and says so: status()->'policies'->'warnings', a
#     WARNING in the server log once per policy, and the (all) row;
#   - the accounting follows the name pgbouncer forwards (each client's
#     transactions in its group), and the (all) row counts the server's
#     connections, not one per name;
#   - a timeout by name applies to the transaction of the client named,
#     with its first statement and tags;
#   - a quota by role applies: pgbouncer's pool for that role gets the
#     connections the quota allows and serves every client with them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => "pgbouncer is needed at $pgbouncer" unless -x $pgbouncer;

my $node = ph_node('pooled',
	conf => "max_connections = 40\npool_health.sample_interval = '100ms'");
$node->safe_psql('postgres', q{
	CREATE ROLE report LOGIN;
	CREATE ROLE batch LOGIN;
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('reports', 'report-%', 2);
});
ok($node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s"),
	'the quota of 2 on report-% is in effect');

# directly, the quota applies
is(ph_try_connect($node, 'report-a', 'report'), undef, 'directly: report-a admitted');
is(ph_try_connect($node, 'report-b', 'report'), undef, 'report-b admitted');
my ($o, $e) = ('', '');
IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres') . ' user=report application_name=report-c',
				'-c', 'SELECT 1' ], '>', \$o, '2>', \$e);
like($e, qr/too many connections for pool_health policy "reports"/, 'report-c refused: the quota of 2');
ph_close_all();
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = 'report'"),
	'the direct sessions are gone');

# --- pgbouncer, transaction mode -----------------------------------------------------------
my $dir = "$PostgreSQL::Test::Utils::tmp_check/pgbouncer";
mkdir $dir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $me = getpwuid($<);
append_to_file("$dir/users.txt", qq{"report" ""\n"batch" ""\n"$me" ""\n});
append_to_file("$dir/pgbouncer.ini", join("\n",
	'[databases]',
	'postgres = host=' . $node->host . ' port=' . $node->port . ' dbname=postgres',
	'[pgbouncer]',
	'listen_addr = 127.0.0.1',
	"listen_port = $port",
	'unix_socket_dir =',
	'auth_type = trust',
	"auth_file = $dir/users.txt",
	'pool_mode = transaction',
	'default_pool_size = 3',
	'server_login_retry = 1',
	"logfile = $dir/pgbouncer.log",
	"pidfile = $dir/pgbouncer.pid",
	''));
my ($bout, $berr) = ('', '');
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ], '>', \$bout, '2>', \$berr);
my $through = "host=127.0.0.1 port=$port dbname=postgres";
my $up = 0;
for (1 .. 100)
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', "$through user=report", '-c', 'SELECT 1' ], '>', \$o, '2>', \$e);
	if ($o =~ /^1$/m) { $up = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($up, "pgbouncer 1.18 listening on port $port, transaction mode, pool of 3") or BAIL_OUT("pgbouncer: $berr");

# clients(role, n, prefix): n clients at once through pgbouncer, each
# with its own application_name, each running 3 transactions of 0.2 s;
# returns how many ran all 3
sub clients
{
	my ($role, $n, $prefix) = @_;
	my @h;
	for my $i (1 .. $n)
	{
		my $o = '';
		my $e = '';
		push @h, [ IPC::Run::start(
				[ 'psql', '-XAtq', '-d', "$through user=$role application_name=$prefix-$i",
				  map { ('-c', "SELECT 'done', pg_sleep(0.2)") } 1 .. 3 ],
				'>', \$o, '2>', \$e), \$o, \$e ];
	}
	my $served = 0;
	for (@h)
	{
		my ($handle, $o, $e) = @$_;
		$handle->finish;
		my $done = () = $$o =~ /^done/mg;
		$served++ if $done == 3;
		diag("$prefix: $$e") if $$e ne '';
	}
	return $served;
}

my $refused_before = $node->safe_psql('postgres',
	"SELECT refused FROM pool_health.usage_by_policy WHERE policy = 'reports'");
is(clients('report', 9, 'report'), 9, 'through pgbouncer: 9 clients of report-% served');
is( $node->safe_psql('postgres',
		"SELECT refused FROM pool_health.usage_by_policy WHERE policy = 'reports'"),
	$refused_before, 'none refused: pgbouncer\'s server connections log in without their names');

# pool_health says why
ok($node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'renamed_sessions')::int > 0 FROM pool_health.status() s"),
	'status(): sessions that changed application_name between transactions');
like( $node->safe_psql('postgres',
		"SELECT w->>'policy' || ': ' || (w->>'warning') FROM pool_health.status() s, jsonb_array_elements(s->'policies'->'warnings') w"),
	qr/^reports: matches application_name at login, but \d+ sessions? changed application_name between transactions .*its quota cannot apply/,
	"status()->'policies'->'warnings' names the policy");
my $warning = qr/WARNING:  pool_health: policy "reports" matches application_name at login, but \d+ sessions? changed application_name between transactions/;
ok($node->wait_for_log($warning), 'the worker logs a WARNING');

# the accounting follows the name pgbouncer forwards
my ($named, $xacts) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE xacts >= 3), sum(xacts)
	FROM pool_health.application_stats WHERE application_name LIKE 'report-%' AND role = 'report'});
is($named, 9, 'each client\'s transactions in the group of its own name (report-1 .. report-9)');
ok($xacts >= 27, "$xacts transactions by the forwarded names (27 the clients', and pgbouncer's SETs)");
my ($all_cmax, $all_imax, $sum_cmax, $all_advice) = split /\|/, $node->safe_psql('postgres', q{
	SELECT a.connections_max, a.in_xact_max,
	       (SELECT sum(connections_max) FROM pool_health.pool_advice
	        WHERE kind = 'application' AND application_name LIKE 'report-%'),
	       a.advice
	FROM pool_health.pool_advice a WHERE kind = 'all'});
note("the (all) row's advice: $all_advice");
ok($all_imax <= 4, "(all): at most $all_imax sessions in a transaction at once (pgbouncer's 3, and this one)");
ok($all_cmax < $sum_cmax,
	"(all): the server held at most $all_cmax connections at once, not the $sum_cmax the report-% groups sum to");
like($all_advice, qr/sessions? changed application_name between transactions \(a connection pooler/,
	'the (all) advice says the groups share connections');

# once per policy: more clients, and 20 samples more
clients('report', 9, 'report');
my $samples = $node->safe_psql('postgres', "SELECT pool_health.status()->'worker'->>'samples'");
ok($node->poll_query_until('postgres',
		"SELECT (s->'worker'->>'samples')::int >= $samples + 20 FROM pool_health.status() s"),
	'20 samples more');
my $log = slurp_file($node->logfile);
my $times = () = $log =~ /$warning/g;
is($times, 1, 'the WARNING is logged once for the policy');

# --- a timeout by name applies to the transaction of the client named ---------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, priority, application_name, idle_in_transaction_timeout)
	VALUES ('leaky', 10, 'report-leak%', '1s');
});
ok($node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'enabled')::int = 2 AND (s->'policies'->>'in_effect')::bool FROM pool_health.status() s"),
	'a policy by name with an idle-in-transaction timeout of 1 s');
{
	my ($in, $o, $e) = ('', '', '');
	my $leaker = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', "$through user=report application_name=report-leak-1", '-f', '-' ],
		'<', \$in, '>', \$o, '2>', \$e);
	$in .= "BEGIN;\n/*route='/export',controller='reports'*/ SELECT 'leaking';\n";
	IPC::Run::pump($leaker) until $o =~ /leaking/ || !$leaker->pumpable;
	ok($node->poll_query_until('postgres', q{
			SELECT count(*) = 1 FROM pool_health.terminations
			WHERE policy = 'leaky' AND application_name = 'report-leak-1'
			  AND xact_first_query LIKE '%SELECT ''leaking''%'
			  AND xact_tags->>'route' = '/export'}),
		'through pgbouncer, the server connection idle in the transaction of report-leak-1 is ended, with its first statement and tags');
	$in .= "SELECT 'after';\n\\q\n";
	$leaker->finish;
	like($e, qr/FATAL:  terminating connection due to administrator command/,
		'and its client is told, through pgbouncer: ' . (split /\n/, $e)[0]);
}
unlike(slurp_file($node->logfile), qr/policy "leaky" matches application_name/,
	'no warning for a policy by name whose limits are timeouts');

# --- a quota by role does apply ---------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, role, max_connections) VALUES ('batch-role', 'batch', 2);
});
ok($node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'enabled')::int = 3 AND (s->'policies'->>'in_effect')::bool FROM pool_health.status() s"),
	'a quota of 2 on role batch');
is(clients('batch', 9, 'batch'), 9, 'through pgbouncer: 9 clients of role batch served');
my ($batch_refused, $batch_max) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT refused FROM pool_health.usage_by_policy WHERE policy = 'batch-role'),
	       (SELECT max(connections) FROM pool_health.usage_by_policy WHERE policy = 'batch-role')});
ok($batch_refused >= 1, "pgbouncer's third server connection for batch refused ($batch_refused refused)");
like(slurp_file("$dir/pgbouncer.log"), qr/login failed: FATAL: too many connections for pool_health policy "batch-role"/,
	'pgbouncer logged the refusal, and served its clients with the 2 connections it had');
unlike(slurp_file($node->logfile), qr/policy "batch-role" matches application_name/,
	'no warning for a policy by role');

$bouncer->signal('TERM');
$bouncer->finish;
unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$node->stop;
done_testing();
