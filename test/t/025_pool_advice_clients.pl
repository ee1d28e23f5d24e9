# Pool advice tried on real client pools (SQLAlchemy 1.4's QueuePool over
# psycopg2: test/clients/pool_app.py), measured on the client's side
# (the most connections checked out at once, the time each request waited
# for a connection), and applied: each application is run again with the
# suggested pool_size, and must be served as well or better.
#
#   oversized	pool 20, opened up front, 20 requests/s of 60 ms
#   starved		pool 3, 55 requests/s of 60 ms (more than 3 connections serve)
#   lazy		pool 5 declared, 2 worker threads (SQLAlchemy opens 2)
#   lazyu		pool 5 not declared, 2 worker threads busy 40 % of the time, in
#			step (both in a transaction 40 % of the time: clear of the 50 %
#			at which an undeclared pool is called saturated)
#
# A request's arrivals come from a fixed seed: each round replays the
# same load.  The server's figures are checked against the client's:
# in_xact_mean (Little's law over the time the group existed) against
# the client's own transaction time per second.  Before the rounds: one connection that
# cycles through 300 application_names counts once in the (all) row, and
# in its budget (the 300 groups are that connection renamed: they count
# for 1, not 300; in the minute it left, and once the minute closed), and
# an application named "(all)" is an application.
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PoolHealthTest;

my $python = '/usr/bin/python3';
my $app_py = abs_path(dirname(__FILE__) . '/../clients/pool_app.py');
my ($ok_py) = `$python -c 'import sqlalchemy, psycopg2; print(sqlalchemy.__version__)' 2>&1`;
plan skip_all => "SQLAlchemy and psycopg2 for $python are needed: $ok_py"
  unless defined $ok_py && $ok_py =~ /^1\.4\./;

my $node = ph_node('advice_clients',
	conf => "max_connections = 80\npool_health.sample_interval = '100ms'");
ok($node->poll_query_until('postgres',
		"SELECT pool_health.status()->'applications'->>'minute_start' IS NOT NULL"),
	'the accounting has begun its first minute');

sub advice_of
{
	my ($app) = @_;
	my $row = $node->safe_psql('postgres',
		"SELECT row_to_json(a) FROM pool_health.pool_advice a WHERE kind = 'application' AND application_name = '$app'");
	die "no pool_advice row for $app" unless $row;
	return decode_json($row);
}

# --- (all) counts each session once; names are not kinds -------------------------------------
my $cycle = "$PostgreSQL::Test::Utils::tmp_check/cycle.sql";
append_to_file($cycle, join('', map { "SET application_name = 'cycle-$_';\nSELECT 1;\n" } 1 .. 300));
my ($out, $err) = ('', '');
# the (all) row read in the minute the cycle ran in (the minute being
# accumulated; a closed minute has its own row): run again if the worker
# closed it meanwhile
my ($cycle_minute, $all_sugg, $all_advice, $others_sugg, $cycle_sugg);
for my $attempt (1 .. 3)
{
	$cycle_minute = $node->safe_psql('postgres',
		"SELECT pool_health.status()->'applications'->>'minute_start'");
	IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', $cycle ],
		'>', \$out, '2>', \$err) or die "psql: $err";
	IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres') . " application_name='(all)'",
		'-c', 'SELECT 1' ], '>', \$out, '2>', \$err) or die "psql: $err";
	my $minute_after;
	($all_sugg, $all_advice, $others_sugg, $cycle_sugg, $minute_after) =
	  split /\|/, $node->safe_psql('postgres', q{
		SELECT a.suggested_pool_size, a.advice,
		       (SELECT sum(suggested_pool_size) FROM pool_health.pool_advice
		        WHERE kind <> 'all' AND coalesce(application_name, '') NOT LIKE 'cycle-%'),
		       (SELECT sum(suggested_pool_size) FROM pool_health.pool_advice
		        WHERE application_name LIKE 'cycle-%'),
		       pool_health.status()->'applications'->>'minute_start'
		FROM pool_health.pool_advice a WHERE kind = 'all'});
	last if $minute_after eq $cycle_minute;
	note("the minute closed during attempt $attempt: again");
}
note("the (all) row's advice: $all_advice");
ok($all_sugg <= $others_sugg + 1,
	"(all): the budget is $all_sugg: the groups the sessions logged in to ($others_sugg) and 1 for the session "
	  . "that took 300 names, not the $cycle_sugg the cycle-% groups' suggestions sum to");
unlike($all_advice, qr/more than the server has/, '(all): not "more than the server has"');
like($all_advice,
	qr/; of them, the (?:2[5-9]\d|30\d) groups that only sessions which had changed application_name held count for 1, the most such sessions connected at once, not for the \d+ their suggested pools sum to: they are the same connections under other names;/,
	'(all) says why: ' . ($all_advice =~ /(; of them, [^;]*)/)[0]);
like($all_advice, qr/; 1 session changed application_name between transactions \(/,
	'(all): the session that changed its name is noted in the minute it left, before the minute closed');
my ($groups, $all_rows, $all_cmax, $all_imax, $named_all) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE application_name LIKE 'cycle-%'),
	       count(*) FILTER (WHERE kind = 'all'),
	       max(connections_max) FILTER (WHERE kind = 'all'),
	       max(in_xact_max) FILTER (WHERE kind = 'all'),
	       count(*) FILTER (WHERE kind = 'application' AND application_name = '(all)')
	FROM pool_health.pool_advice});
ok($groups >= 250, "one connection through 300 names: $groups groups by name (the rest in (other))");
is($all_rows, '1', 'one (all) row');
ok($all_cmax <= 3 && $all_imax <= 2,
	"the (all) row: the server held at most $all_cmax connections at once, $all_imax in a transaction (exact, not a sum over 250 groups)");
is($named_all, '1', 'an application named "(all)" is a row of kind application');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.pool_advice WHERE kind IN ('all', 'other') AND (application_name IS NOT NULL OR database IS NOT NULL OR role IS NOT NULL)"),
	'0', 'the (all) and (other) rows have no application_name, database or role');
is( $node->safe_psql('postgres',
		"SELECT kind || ' ' || coalesce(application_name, '-') FROM pool_health.pool_advice WHERE kind = 'other'"),
	'other -', 'the groups evicted are the row of kind other');

# a reconnect loop under many names: the server-wide counters come back
# to what is connected (this session, in this transaction)
my ($pout, $perr) = ('', '');
my $script = "$PostgreSQL::Test::Utils::tmp_check/rename.sql";
append_to_file($script, "SET application_name = 'loop-:client_id';\nSELECT 1;\nSET application_name = 'loop-x';\nSELECT 1;\n");
IPC::Run::run([ 'pgbench', '-n', '-C', '-c', 4, '-j', 2, '-t', 50, '-f', $script,
				'-h', $node->host, '-p', $node->port, 'postgres' ], '>', \$pout, '2>', \$perr)
  or die "pgbench: $perr";
like($pout, qr/processed: 200\b/, 'a reconnect loop: 200 connections, each changing its name twice');
ok( $node->poll_query_until('postgres', q{
		SELECT (a->>'connections')::int = (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
		   AND (a->>'in_xact')::int = 1 AND (a->>'renames')::int >= 400
		FROM pool_health.status() s, LATERAL (SELECT s->'applications') x(a)}),
	'status(): the server-wide counts are back to what is connected, 1 in a transaction; 400 renames');

# --- the applications ---------------------------------------------------------------------
my $url = 'postgresql+psycopg2://' . getpwuid($<) . '@/postgres?host=' . $node->host . '&port=' . $node->port;
my %load = (
	oversized => [ '--warm', '--declare', '--rate', 20, '--duration-ms', 60 ],
	starved => [ '--declare', '--rate', 55, '--duration-ms', 60 ],
	lazy => [ '--declare', '--workers', 2, '--think-ms', 10, '--duration-ms', 60 ],
	lazyu => [ '--workers', 2, '--think-ms', 60, '--duration-ms', 40 ]);
my $seconds = 15;

# run(round, app => pool_size, ...): the applications at once; returns
# app => the client's figures (and the server's advice for its group)
sub run_round
{
	my ($round, %pools) = @_;
	my %h;
	for my $app (sort keys %pools)
	{
		my ($o, $e) = ('', '');
		$h{$app} = [ IPC::Run::start(
				[ $python, $app_py, '--url', $url, '--app', "$app-$round",
				  '--pool-size', $pools{$app}, '--seconds', $seconds, @{ $load{$app} } ],
				'>', \$o, '2>', \$e), \$o, \$e ];
	}
	my %result;
	for my $app (sort keys %h)
	{
		my ($handle, $o, $e) = @{ $h{$app} };
		$handle->finish or die "$app-$round: $$e";
		my $client = decode_json($$o);
		die "$app-$round: $client->{errors} requests failed: @{ $client->{first_errors} }"
		  if $client->{errors};
		$result{$app} = $client;
	}
	# read at once: pool_advice has the minute being accumulated too
	for my $app (sort keys %result)
	{
		my $c = $result{$app};
		$c->{advice} = advice_of("$app-$round");
		note(sprintf "%-10s round %d: pool %2d, client: %4d requests, %d at once, %4d found the pool exhausted, wait p50 %8.3f p99 %8.3f ms; server: %s",
			$app, $round, $c->{pool_size}, $c->{requests}, $c->{peak_checkouts}, $c->{exhausted},
			$c->{wait_p50_ms}, $c->{wait_p99_ms},
			join(', ', map { "$_ " . ($c->{advice}{$_} // 'null') }
				qw(declared_pool_size connections_max in_xact_max in_xact_mean saturated_share demand_p99 suggested_pool_size advice)));
	}
	return %result;
}

my %r1 = run_round(1, oversized => 20, starved => 3, lazy => 5, lazyu => 5);

# oversized: 20 connections held, few of them in a transaction at once
my $o1 = $r1{oversized};
is($o1->{advice}{connections_max}, 20, 'oversized: the server saw its 20 connections');
ok($o1->{advice}{suggested_pool_size} < 20, "oversized: told to shrink to $o1->{advice}{suggested_pool_size}");
like($o1->{advice}{advice}, qr/^pool larger than needed/, 'oversized: pool larger than needed');
ok($o1->{advice}{suggested_pool_size} > $o1->{peak_checkouts},
	"oversized: the suggestion covers the client's peak of $o1->{peak_checkouts} checkouts");

# starved: its requests queued in the client
my $s1 = $r1{starved};
ok($s1->{wait_p50_ms} > 50, "starved: its requests waited (client: p50 $s1->{wait_p50_ms} ms)");
like($s1->{advice}{advice}, qr/^pool saturated: all 3 connections of its declared pool/,
	'starved: saturated at its declared size');
ok($s1->{advice}{saturated_share} >= 50,
	"starved: saturated $s1->{advice}{saturated_share} % of the time (the client: "
	  . sprintf('%.1f', 100 * $s1->{exhausted} / $s1->{requests}) . ' % of its requests found the pool exhausted)');
ok($s1->{advice}{suggested_pool_size} >= 5,
	"starved: raised from 3 to $s1->{advice}{suggested_pool_size} at once (its demand), not to 4");

# lazy: SQLAlchemy opened 2 of its 5; it never waited
for my $app (qw(lazy lazyu))
{
	my $l = $r1{$app};
	is($l->{opened}, 2, "$app: SQLAlchemy opened 2 connections of its 5 (lazily)");
	ok($l->{advice}{suggested_pool_size} <= ($app eq 'lazy' ? 5 : 2),
		"$app: not told to grow (suggested $l->{advice}{suggested_pool_size})");
	unlike($l->{advice}{advice}, qr/saturated/, "$app: not called saturated");
}
is($r1{lazy}{advice}{declared_pool_size}, 5, 'lazy: its declared pool size is shown');
ok(!defined $r1{lazyu}{advice}{declared_pool_size}, 'lazyu: none declared');
like($r1{lazyu}{advice}{advice}, qr/declare the pool's size \(pool_health\.client_pool_size\)/,
	'lazyu: told how to tell a lazy pool from a capped one');

# --- the advice, applied ---------------------------------------------------------------------
my %pool2 = map { $_ => $r1{$_}{advice}{suggested_pool_size} } keys %r1;
my %r2 = run_round(2, %pool2);

# Little's law over the time the group existed, against the client's own rate
for my $app (qw(oversized starved))
{
	my $c = $r2{$app};
	my $client_mean = $c->{xact_ms} / 1000 / $c->{seconds};
	my $mean = $c->{advice}{in_xact_mean};
	ok($mean >= 0.8 * $client_mean && $mean <= 1.25 * $client_mean,
		"$app: in_xact_mean $mean, the client's transaction time per second " . sprintf('%.2f', $client_mean)
		  . " ($c->{requests} requests in $c->{seconds} s)");
}

my $o2 = $r2{oversized};
ok($o2->{exhausted} <= 0.01 * $o2->{requests},
	"oversized, shrunk to $o2->{pool_size}: $o2->{exhausted} of $o2->{requests} requests found it exhausted (client peak $o2->{peak_checkouts} checkouts)");
ok($o2->{wait_p50_ms} <= 2 * $o1->{wait_p50_ms} + 1,
	"oversized: its requests were served as fast (wait p50 $o1->{wait_p50_ms} -> $o2->{wait_p50_ms} ms)");
ok($o2->{advice}{suggested_pool_size} <= $o2->{pool_size} && $o2->{advice}{advice} !~ /saturated/,
	"oversized at $o2->{pool_size}: kept or shrunk further (suggested $o2->{advice}{suggested_pool_size})");

for my $app (qw(lazy lazyu))
{
	my $l = $r2{$app};
	ok($l->{advice}{suggested_pool_size} <= $l->{pool_size} && $l->{advice}{advice} !~ /saturated/,
		"$app at $l->{pool_size}: kept (suggested $l->{advice}{suggested_pool_size})");
	is($l->{peak_checkouts}, 2, "$app: its 2 workers served as before");
}

# starved: converges in one or two steps, and its requests stop waiting
my %starved = (1 => $s1, 2 => $r2{starved});
my $steps = 1;
while ($starved{$steps + 1}{advice}{advice} =~ /^pool saturated/ && $steps < 3)
{
	$steps++;
	my %r = run_round($steps + 1, starved => $starved{$steps}{advice}{suggested_pool_size});
	$starved{$steps + 1} = $r{starved};
}
my $last = $starved{$steps + 1};
ok($steps <= 2, "starved: the advice applied $steps time(s) keeps the pool ("
	  . join(' -> ', map { $starved{$_}{pool_size} } sort keys %starved) . ')');
ok($last->{advice}{suggested_pool_size} <= $last->{pool_size},
	"starved at $last->{pool_size}: not told to grow (suggested $last->{advice}{suggested_pool_size})");
ok($last->{exhausted} / $last->{requests} < $s1->{exhausted} / $s1->{requests} / 4,
	"starved at $last->{pool_size}: $last->{exhausted} of $last->{requests} requests found the pool exhausted (were $s1->{exhausted} of $s1->{requests})");
ok($last->{wait_p50_ms} < $s1->{wait_p50_ms} / 20,
	"starved: wait p50 $s1->{wait_p50_ms} -> $last->{wait_p50_ms} ms");
ok($last->{wait_p99_ms} < $s1->{wait_p99_ms} / 5,
	"starved: wait p99 $s1->{wait_p99_ms} -> $last->{wait_p99_ms} ms");

# the declared size outlives the minute it was declared in
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pool_health.application_history
		WHERE application_name = 'lazy-1'
		  AND at < (pool_health.status()->'applications'->>'minute_start')::timestamptz}),
	"lazy-1's minute has closed");
is($node->safe_psql('postgres',
		"SELECT declared_pool_size FROM pool_health.pool_advice WHERE application_name = 'lazy-1'"),
	'5', 'lazy-1: its declared pool size is kept once its minute has closed');

# once the cycle's minute closed: the budget from the closed minutes too
ok( $node->poll_query_until('postgres',
		"SELECT pool_health.status()->'applications'->>'minute_start' > '$cycle_minute'"),
	"the cycle's minute has closed");
my ($end_sugg, $end_advice, $end_named) = split /\|/, $node->safe_psql('postgres', q{
	SELECT a.suggested_pool_size, a.advice,
	       (SELECT sum(suggested_pool_size) FROM pool_health.pool_advice
	        WHERE kind <> 'all' AND coalesce(application_name, '') NOT LIKE 'cycle-%'
	          AND coalesce(application_name, '') NOT LIKE 'loop-%')
	FROM pool_health.pool_advice a WHERE kind = 'all'});
note("the (all) row's advice: $end_advice");
my ($end_renamed) = $end_advice =~ /application_name held count for (\d+), the most such sessions connected at once/;
ok(defined $end_renamed && $end_renamed <= 5,
	'(all), the minutes closed: the cycle-% and loop-% groups count for ' . ($end_renamed // 'all their suggestions')
	  . ' (the most sessions that had changed name at once: the cycle\'s 1, pgbench\'s 4)');
ok($end_sugg <= $end_named + ($end_renamed // 0),
	"(all): the budget is $end_sugg: the pools ($end_named) and those renamed sessions");
like($end_advice, qr/; [1-5] sessions? changed application_name between transactions \(/,
	'(all): the renamed sessions are noted from the closed minutes');

unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$node->stop;
done_testing();
