# Headroom and storms (SPEC "Headroom and storms"), with real sessions:
#  1. reserve_connections is exact under concurrency: 8 loops of short
#     connections below the reserve line are never refused; above it, a
#     monitor never sees the free slots below the reserve not in use, and
#     the reserved application gets all its reserved connections while the
#     loops run; superusers are always admitted; the refusal names the
#     reserve in its DETAIL, for a governed login and an ungoverned one.
#  2. max_logins_per_second / login_burst: a token bucket; a login without
#     a token is held back until it is due, then refused, saying when to
#     retry; refusals are counted per policy, per reason and per
#     application.
#  3. at critical, refuse_at refuses the logins a reserve does not cover
#     and admits those it does.
#  4. a reserve changed while its sessions are connected ends nothing.
#  5. a storm (4 loops reconnecting as fast as they can) of a low-priority
#     application while a high-priority one serves requests through a
#     SQLAlchemy pool that keeps reconnecting: without policies the pool's
#     requests fail; with a reserve and a login rate limit none fails,
#     and its p99 stays within a loose bound of its p99 without the storm
#     (tools/bench storm measures the tight one).
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable; the health endpoints over HTTP
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('headroom',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '10ms'\n"
	  . "pool_health.protected_roles = 'ops'\n"
	  . "pool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "log_line_prefix = '%m [%p] %e %q%a '");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE ops LOGIN;
	INSERT INTO pool_health.policies (name, application_name, reserve_connections)
	VALUES ('web', 'web%', 5);
	INSERT INTO pool_health.policies (name, application_name) VALUES ('batch', 'batch%');
});

sub policies_in_effect
{
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s");
}
ok(policies_in_effect(), 'web reserves 5 of 17 usable connections');

my $connstr = $node->connstr('postgres') . ' user=app';

# n loops of m short connections of an application; returns the handles
sub start_loops
{
	my ($n, $m, $app, $sql) = @_;
	my @loops;
	for my $i (1 .. $n)
	{
		my ($out, $err) = ('', '');
		push @loops, [ IPC::Run::start(
			[ 'bash', '-c', "for i in \$(seq $m); do psql -XAtq -d '$connstr application_name=$app' -c '$sql' 2>&1; done" ],
			'>', \$out, '2>', \$err), \$out ];
	}
	return \@loops;
}

# wait for the loops; their output, together
sub finish_loops
{
	my ($loops) = @_;
	my $out = '';
	for (@$loops)
	{
		$_->[0]->finish;
		$out .= ${ $_->[1] };
	}
	return $out;
}

# a monitor recording, every 5 ms, the client backends and the web ones
sub start_monitor
{
	my ($table) = @_;
	$node->safe_psql('postgres', "CREATE TABLE $table (clients int, web int)");
	my $monitor = $node->background_psql('postgres');
	$monitor->query_until(qr/started/, qq{
		\\echo started
		DO \$\$
		BEGIN
		    FOR i IN 1 .. 600 LOOP
		        INSERT INTO $table
		        SELECT count(*), count(*) FILTER (WHERE application_name LIKE 'web%')
		        FROM pg_stat_activity WHERE backend_type = 'client backend';
		        PERFORM pg_stat_clear_snapshot();
		        PERFORM pg_sleep(0.005);
		    END LOOP;
		END \$\$;
	});
	return $monitor;
}

# --- 1. below the reserve line: no refusal ------------------------------------------
# 8 loops + the monitor: at most 9 sessions, 9 + 5 reserved <= 17
my $monitor = start_monitor('below');
my $out = finish_loops(start_loops(8, 25, 'batch-loop', 'SELECT pg_sleep(0.01)'));
$monitor->query_safe('SELECT 1');
$monitor->quit;
is(() = $out =~ /FATAL/g, 0, '200 connections of 8 loops below the reserve line: none refused');
is($node->safe_psql('postgres', 'SELECT count(*) > 50, max(clients) > 1 FROM below'), 't|t',
	'the monitor saw the loops');

# --- 1. above it: the reserve is never eaten --------------------------------------
# 8 batch sessions held and 8 loops, all of application "batch-above" (one
# group of the accounting, whose peak of connections is exact), may take
# 17 - 5 = 12 slots; the web sessions take theirs when they come.  (A
# monitor reading pg_stat_activity entry by entry could count a backend
# that had left and one that came after it together.)
$node->safe_psql('postgres', 'SELECT pool_health.reset_application_stats()');
for my $i (1 .. 8)
{
	my $err = ph_try_connect($node, 'batch-above', 'app');
	is($err, undef, '8 batch sessions held') if $i == 8;
}
my $log_offset = -s $node->logfile;
my $loops = start_loops(8, 25, 'batch-above', 'SELECT pg_sleep(0.02)');
# while they run: pool_health admits the 5 web connections, and superusers.
# A login still authenticating, or refused and exiting, holds a slot of
# the server for a few ms: the server itself can then refuse a login it
# counts beyond max_connections ("too many clients", "remaining connection
# slots"); such a login is retried, a refusal by pool_health is not.
my (@web_refused, $server_refusals);
$server_refusals = 0;
for my $i (1 .. 5)
{
	for my $attempt (1 .. 100)
	{
		my $err = ph_try_connect($node, "web-$i", 'app');
		last unless defined $err;
		if ($err =~ /too many clients|remaining connection slots/)
		{
			$server_refusals++;
			next;
		}
		push @web_refused, $err;
		last;
	}
}
note("web logins refused by the server itself (slots held by logins in flight), retried: $server_refusals");
my $superuser_ok = 0;
for my $i (1 .. 3)
{
	$superuser_ok++ if $node->safe_psql('postgres', 'SELECT 1') eq '1';
}
$out = finish_loops($loops);
my $refused = () = $out =~ /the free connections are reserved/g;
is(scalar(@web_refused), 0, 'the 5 reserved web connections were admitted while 8 loops hammered')
  or diag(join "\n", @web_refused);
is($superuser_ok, 3, 'superusers were admitted all along');
ok($refused > 0, "$refused of 200 batch connections were refused");
my $peak = $node->safe_psql('postgres',
	"SELECT connections_peak FROM pool_health.application_stats WHERE application_name = 'batch-above'");
cmp_ok($peak, '<=', 12, "batch never had more than the 12 slots the reserve leaves (exact peak: $peak)");
is( $node->safe_psql('postgres', "SELECT refused, refused_reserve FROM pool_health.usage_by_policy WHERE policy = 'batch'"),
	"$refused|$refused", 'usage_by_policy counts every refusal, by reason');
# (in its group, or in (other) when the login found the accounting's lock
# taken to add a group: a login does not wait for it)
is( $node->safe_psql('postgres', "SELECT sum(refused) FROM pool_health.get_application_stats() WHERE application_name = 'batch-above' OR other"),
	$refused, 'and so does the application accounting');
like(slurp_file($node->logfile, $log_offset),
	qr/53300 \S+ FATAL:  connection refused by pool_health policy "batch": the free connections are reserved\n.*DETAIL:  \d+ of 17 usable connections would be in use, leaving \d+ free, and reserve_connections keeps \d+ free for other policies: policy "web" reserves 5 and uses \d of them\./,
	'the DETAIL names the reserve');
ph_close_all();
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 0 AND reserve_unused = 5 FROM pool_health.usage_by_policy WHERE policy = 'web'"),
	'the web reserve is unused again');

# --- 1. exactly at the line, with an ungoverned login -----------------------------
# (an application's group exists in the accounting once it has run a
# transaction: a refusal of an application never seen is counted in (other))
$node->safe_psql('postgres', 'SELECT 1', connstr => "$connstr application_name=psql-ad-hoc");
# 12 batch sessions take the 12 slots the reserve leaves; the 13th, and a
# login no policy governs, are refused; web and superusers are not
for my $i (1 .. 12)
{
	my $err = ph_try_connect($node, 'batch-held', 'app');
	is($err, undef, 'the 12th batch session is admitted') if $i == 12;
}
like(ph_try_connect($node, 'batch-13', 'app'), qr/the free connections are reserved/,
	'the 13th batch session is refused: no refusal below, none above');
$log_offset = -s $node->logfile;
like(ph_try_connect($node, 'psql-ad-hoc', 'app'),
	qr/connection refused by pool_health: the free connections are reserved/,
	'a login no policy governs is refused too');
like(slurp_file($node->logfile, $log_offset),
	qr/DETAIL:  13 of 17 usable connections would be in use, leaving 4 free, and reserve_connections keeps 5 free for other policies: policy "web" reserves 5 and uses 0 of them\./,
	'with the exact counts in its DETAIL');
is(ph_try_connect($node, 'web-a', 'app'), undef, 'a web login is admitted into its reserve');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'a superuser is admitted');
is($node->safe_psql('postgres', 'SELECT current_user', connstr => $node->connstr('postgres') . ' user=ops'),
	'ops', 'and so is a protected role');
is( $node->safe_psql('postgres', q{SELECT refused FROM pool_health.application_stats WHERE application_name = 'psql-ad-hoc'}),
	'1', 'the refusal is counted in the application accounting');

# --- 4. a reserve changed while its sessions are connected -------------------------
for my $i (1 .. 3)
{
	my $err = ph_try_connect($node, "web-b$i", 'app');
	is($err, undef, '3 more web sessions') if $i == 3;
}
$node->safe_psql('postgres', "UPDATE pool_health.policies SET reserve_connections = 2 WHERE name = 'web'");
ok(policies_in_effect(), 'the web reserve lowered to 2 with 4 web sessions connected');
is( $node->safe_psql('postgres', "SELECT connections, reserve_unused FROM pool_health.usage_by_policy WHERE policy = 'web'"),
	'4|0', 'no web session ended; nothing of the reserve is unused');
is(ph_try_connect($node, 'batch-14', 'app'), undef, 'so a batch login fits again');
$node->safe_psql('postgres', "UPDATE pool_health.policies SET reserve_connections = 5 WHERE name = 'web'");
ok(policies_in_effect(), 'the web reserve raised to 5 again');
is( $node->safe_psql('postgres', "SELECT connections, reserve_unused FROM pool_health.usage_by_policy WHERE policy = 'web'"),
	'4|1', 'no session ended; one reserved slot unused');
ph_close_all();

# --- 3. priority under pressure: refuse_at at critical -------------------------------
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET pool_health.degraded_percent = 30;
	ALTER SYSTEM SET pool_health.critical_percent = 50;
	SELECT pg_reload_conf();
	UPDATE pool_health.policies SET refuse_at = 'critical';
});
ok(policies_in_effect(), 'refuse_at = critical for web (reserve 5) and batch (none)');
for my $i (1 .. 9) { ph_try_connect($node, 'batch-p', 'app'); }
ok( $node->poll_query_until('postgres', "SELECT level = 'critical' FROM pool_health.usage"),
	'9 batch sessions and this one: 10 of 17 is critical');
like(ph_try_connect($node, 'batch-p10', 'app'), qr/server connection health is critical/,
	'at critical, batch (no reserve) is refused');
is(ph_try_connect($node, 'web-p1', 'app'), undef, 'web, inside its reserve, is admitted');
ph_close_all();
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET pool_health.degraded_percent;
	ALTER SYSTEM RESET pool_health.critical_percent;
	SELECT pg_reload_conf();
	UPDATE pool_health.policies SET refuse_at = NULL;
});

# --- 2. the login rate limit ------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, max_logins_per_second, login_burst)
	VALUES ('storm', 'storm%', 2, 3);
});
ok(policies_in_effect(), 'storm: 2 logins a second, 3 at once');
$log_offset = -s $node->logfile;
my $started = time;
$out = finish_loops(start_loops(1, 12, 'storm-seq', 'SELECT 1'));
my $elapsed = time - $started;
my $rate_refused = () = $out =~ /too many logins for pool_health policy "storm"/g;
my $admitted = () = $out =~ /^1$/mg;
note("12 logins in ${elapsed}s: $admitted admitted, $rate_refused refused");
cmp_ok($admitted, '>=', 3, 'the burst of 3 was admitted');
# each refused login was held back until its token was due (at most
# 200 ms): the 9 logins after the burst take a while
cmp_ok($elapsed, '>', 0.5, "refused logins are held back (12 logins took ${elapsed}s)");
cmp_ok($admitted, '<=', 3 + int(2 * $elapsed) + 1, 'no more than the burst and the rate allow');
is($admitted + $rate_refused, 12, 'the others were refused for want of a token');
like(slurp_file($node->logfile, $log_offset),
	qr/53300 \S+ FATAL:  too many logins for pool_health policy "storm"\n.*DETAIL:  The policy admits 2 logins per second, 3 at once \(max_logins_per_second, login_burst\): retry after \d+ ms\./,
	'the DETAIL says when to retry');
is( $node->safe_psql('postgres', "SELECT refused, refused_login_rate, login_tokens < 3 FROM pool_health.usage_by_policy WHERE policy = 'storm'"),
	"$rate_refused|$rate_refused|t", 'refusals per policy and reason; the bucket is not full');
like($node->safe_psql('postgres', 'SELECT pool_health.metrics()'),
	qr/pool_health_policy_refusals_by_reason_total\{policy="storm",reason="login_rate"\} $rate_refused\n/,
	'metrics() counts them by reason');
# the same over HTTP (/metrics and /status are made by the same code)
my ($http_metrics, $http_status) = ('', '');
IPC::Run::run([ 'curl', '-s', '--max-time', '5', "http://127.0.0.1:$http_port/metrics" ], '>', \$http_metrics);
IPC::Run::run([ 'curl', '-s', '--max-time', '5', "http://127.0.0.1:$http_port/status" ], '>', \$http_status);
like($http_metrics,
	qr/pool_health_policy_refusals_by_reason_total\{policy="storm",reason="login_rate"\} $rate_refused\n/,
	'HTTP /metrics too');
like($http_metrics, qr/pool_health_policy_reserve_unused\{policy="web"\} 5\n/, 'with the reserves');
my $status_json = eval { decode_json($http_status) } || {};
my ($storm_quota) = grep { $_->{policy} eq 'storm' } @{ $status_json->{policies}{quotas} || [] };
is($storm_quota && $storm_quota->{refused_by}{login_rate}, $rate_refused, 'HTTP /status too, by reason');
ok( $node->poll_query_until('postgres',
		"SELECT login_tokens = 3 FROM pool_health.usage_by_policy WHERE policy = 'storm'"),
	'the bucket fills up again');
is(ph_try_connect($node, 'storm-later', 'app'), undef, 'and a login is admitted');
ph_close_all();

# --- 5. a storm while a pooled application serves requests --------------------------
$node->safe_psql('postgres', 'DELETE FROM pool_health.policies');
ok(policies_in_effect(), 'no policy');
my $url = 'postgresql://app@/postgres?host=' . $node->host . '&port=' . $node->port;

# the web application: a pool of 4 that replaces connections older than
# 0.5 s (it keeps connecting), 30 requests a second of 5 ms, for 6 s,
# while a batch job holds as many connections as it is given (up to 12:
# the web pool has the 5 others, one for a connection it has just
# replaced, still exiting); optionally a storm of 4 loops
my $web_runs = 0;
sub run_web
{
	my ($storm) = @_;
	for (1 .. 12) { ph_try_connect($node, 'batch-held', 'app'); }
	my ($stdout, $stderr) = ('', '');
	my @storm;
	my $storm_errors = $node->basedir . "/storm_errors_" . ++$web_runs;
	if ($storm)
	{
		for (1 .. 4)
		{
			push @storm, IPC::Run::start(
				[ 'bash', '-c', "end=\$((SECONDS + 7)); while [ \$SECONDS -lt \$end ]; do psql -XAtq -d '$connstr application_name=storm-loop' -c 'SELECT 1' >/dev/null 2>>'$storm_errors'; done" ]);
		}
	}
	IPC::Run::run(
		[ '/usr/bin/python3', "$ENV{PWD}/test/clients/pool_app.py", '--url', $url,
		  '--app', 'web-api', '--pool-size', '4', '--recycle-s', '0.5',
		  '--rate', '30', '--duration-ms', '5', '--seconds', '6' ],
		'>', \$stdout, '2>', \$stderr);
	$_->finish for @storm;
	ph_close_all();
	my $r = eval { decode_json($stdout) } or die "pool_app.py: $stdout $stderr";
	# the storm's logins the server itself refused: no slot was free
	$r->{storm_full} = () = (-e $storm_errors ? slurp_file($storm_errors) : '') =~ /too many clients|remaining connection slots are reserved/g;
	note("web with" . ($storm ? '' : 'out') . " storm: " . $stdout);
	return $r;
}

my $quiet = run_web(0);
is($quiet->{errors}, 0, "no storm: $quiet->{requests} requests, none failed");
my $unprotected = run_web(1);
# without policies the storm and the batch job take the free slots: the
# server refuses logins (the storm's; the pool's when it replaces a
# connection at the wrong moment, which a fast machine may never hit)
cmp_ok($unprotected->{storm_full}, '>', 0,
	"storm without policies: the server refused $unprotected->{storm_full} logins for want of a slot");
note("storm without policies: $unprotected->{errors} of "
	  . ($unprotected->{errors} + $unprotected->{requests}) . ' requests of the pool failed');
# the policies: a reserve of the pool's 4 connections, one for a
# connection it replaces while the old one exits and one for a login in
# flight (see the README); a quota for the batch job; a login rate limit
# for the storm, whose refused logins are held back in the free slots
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, reserve_connections)
	VALUES ('web', 'web%', 6);
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('batch', 'batch%', 6);
	INSERT INTO pool_health.policies (name, application_name, max_logins_per_second, login_burst)
	VALUES ('storm', 'storm%', 5, 5);
});
ok(policies_in_effect(), 'web reserves 6, batch may hold 6, storm may log in 5 times a second');
my $protected = run_web(1);
is($protected->{errors}, 0,
	"storm with the reserve and the rate limit: $protected->{requests} requests, none failed");
my $storm_refused = $node->safe_psql('postgres',
	"SELECT refused FROM pool_health.usage_by_policy WHERE policy = 'storm'");
cmp_ok($storm_refused, '>', 0, "the storm was refused $storm_refused times");
# a loose bound on two shared cores (the bench measures the 1.5x goal)
cmp_ok($protected->{latency_p99_ms}, '<=', 4 * $quiet->{latency_p99_ms} + 50,
	"p99 $protected->{latency_p99_ms} ms with the storm, $quiet->{latency_p99_ms} ms without (unprotected: $unprotected->{latency_p99_ms} ms)");

done_testing();
