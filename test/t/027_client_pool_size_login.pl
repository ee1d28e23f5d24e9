# pool_health.client_pool_size in the startup options never fails a login.
# A pool's configuration that says "-c pool_health.client_pool_size=$SIZE"
# with $SIZE unset or mistyped sends a value the server cannot take; the
# session logs in all the same, its pool size not declared (0), with a
# WARNING the client sees.  A good value still declares; SET still
# rejects a bad one (SQLSTATE 22023); a parallel worker does not repeat
# the WARNING.  Real psql sessions, PGOPTIONS as a pool's environment.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('pool_size_login',
	conf => "max_connections = 30\npool_health.sample_interval = '100ms'");
ok($node->poll_query_until('postgres',
		"SELECT pool_health.status()->'applications'->>'minute_start' IS NOT NULL"),
	'the accounting has begun its first minute');

# login(application_name, size, sql...): psql with PGOPTIONS declaring
# size; its exit code, stdout and stderr (login_to: on that node)
sub login { return login_to($node, @_); }

sub login_to
{
	my ($node, $app, $size, @sql) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGOPTIONS} = "-c pool_health.client_pool_size=$size";
	my $ok = IPC::Run::run(
		[ 'psql', '-XAtq', '-v', 'VERBOSITY=verbose', '-d',
		  $node->connstr('postgres') . " application_name=$app",
		  map { ('-c', $_) } @sql ],
		'>', \$out, '2>', \$err);
	chomp $out;
	return ($ok, $out, $err);
}

# --- a bad value: the login succeeds, the size is not declared ---------------------------------
my $long = '9' x 2000;
my %bad = (
	'bad-negative' => '-1',
	'bad-huge'     => '99999999999',
	'bad-word'     => 'abc',
	'bad-empty'    => '',
	'bad-unit'     => '20\ connections',
	'bad-long'     => $long,
	'bad-utf8'     => "vingt\x{c3}\x{a9}");
for my $app (sort keys %bad)
{
	my ($ok, $out, $err) = login($app, $bad{$app},
		'SHOW pool_health.client_pool_size', "SELECT 'in'");
	my $shown = length($bad{$app}) > 20 ? substr($bad{$app}, 0, 20) . '... (' . length($bad{$app}) . ' bytes)' : $bad{$app};
	ok($ok, "$app: PGOPTIONS -c pool_health.client_pool_size=$shown: the login succeeds")
	  or diag($err);
	is($out, "0\nin", "$app: SHOW says 0 (not declared)");
	like($err, qr/^WARNING:  (?:22023: )?invalid value for parameter "pool_health\.client_pool_size": /m,
		"$app: the client is told (" . substr((split /\n/, $err)[0], 0, 120) . ')');
	like($err, qr/DETAIL:  The session's pool size is taken as not declared \(0\)/, "$app: and what was understood");
}
# the WARNING shows a value in ASCII, its first 64 bytes
{
	my ($ok, $out, $err) = login('bad-shown', "vingt\x{c3}\x{a9}\\\\" . ('9' x 100), 'SELECT 1');
	like($err, qr/": "vingt\\xc3\\xa9\\x5c9{56}\.\.\."\n/,
		'the value in the WARNING: bytes past ASCII and backslashes as \xHH, cut at 64 bytes');
}

# --- a good value still declares; fractions and exponents as the server's integers ----------------
my %good = ('good-20' => [ '20', '20' ], 'good-half' => [ '1.5', '2' ], 'good-exp' => [ '1e3', '1000' ]);
for my $app (sort keys %good)
{
	my ($given, $understood) = @{ $good{$app} };
	my ($ok, $out, $err) = login($app, $given,
		'SHOW pool_health.client_pool_size', "SELECT 'in'");
	ok($ok, "$app: -c pool_health.client_pool_size=$given: the login succeeds") or diag($err);
	is($out, "$understood\nin", "$app: SHOW says $understood");
	is($err, '', "$app: no warning");
}

# what the accounting saw: the bad ones declared nothing, the good ones their size
my $declared = $node->safe_psql('postgres', q{
	SELECT string_agg(application_name || '=' || coalesce(declared_pool_size::text, 'null'), ' '
	                  ORDER BY application_name)
	FROM pool_health.pool_advice
	WHERE kind = 'application' AND (application_name LIKE 'bad-%' OR application_name LIKE 'good-%')});
is($declared,
	join(" ", (map { "$_=null" } sort(keys %bad, "bad-shown")), 'good-20=20', 'good-exp=1000', 'good-half=2'),
	'pool_advice.declared_pool_size: null for every bad value, the size for the good ones');

# --- SET still rejects a bad value, with SQLSTATE 22023, and keeps the size -------------------------
{
	my ($ok, $out, $err) = login('set-bad', '12',
		"SET pool_health.client_pool_size = 'abc'", 'SHOW pool_health.client_pool_size',
		'SET pool_health.client_pool_size = -1', 'SET pool_health.client_pool_size = 7',
		'SHOW pool_health.client_pool_size');
	like($err, qr/^ERROR:  22023: invalid value for parameter "pool_health\.client_pool_size": "abc"\nDETAIL:  A pool size is an integer from 0 \(not declared\) to 2147483647\./m,
		'SET to abc: ERROR 22023, with what a pool size is');
	like($err, qr/^ERROR:  22023: invalid value for parameter "pool_health\.client_pool_size": "-1"/m,
		'SET to -1: ERROR 22023');
	is($out, "12\n7", 'the session kept its declared 12, then SET 7 took');
	my ($aok, $aout, $aerr) = login('set-role', '0',
		"ALTER ROLE CURRENT_USER SET pool_health.client_pool_size = 'twenty'");
	like($aerr, qr/^ERROR:  22023: invalid value for parameter "pool_health\.client_pool_size": "twenty"/m,
		'ALTER ROLE ... SET to a bad value: ERROR 22023');
}

# --- a parallel worker takes the size understood: no second WARNING ------------------------------
{
	my $force = $node->safe_psql('postgres', 'SHOW server_version_num') >= 160000 ?
	  'debug_parallel_query' : 'force_parallel_mode';
	my ($ok, $out, $err) = login('bad-parallel', 'abc',
		"SET $force = on",
		'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT count(*) FROM pg_class',
		'SHOW pool_health.client_pool_size');
	like($out, qr/Workers Launched: 1/, 'a query run by a parallel worker');
	like($out, qr/^0$/m, 'SHOW says 0');
	my $warnings = () = $err =~ /^WARNING:/mg;
	is($warnings, 1, 'one WARNING, at login, none from the worker');
}

unlike(slurp_file($node->logfile), qr/FATAL|TRAP:|terminated by signal|PANIC/,
	'no login failed, nothing crashed');
$node->stop;

# --- without the preload: the value waits as a placeholder until the library loads -----------------
# (then taken alike; the WARNING converts to a client encoding that has no
# such characters: the statement that loaded the library succeeds)
my $plain = ph_node('pool_size_plain', preload => 0);
{
	local $ENV{PGCLIENTENCODING} = 'LATIN1';
	my ($ok, $out, $err) = login_to($plain, 'plain', "\x{e6}\x{97}\x{a5}\x{e6}\x{9c}\x{ac}",
		'SELECT count(*) >= 0 FROM pool_health.sessions', 'SHOW pool_health.client_pool_size');
	ok($ok, 'no preload: the login, and the statement that loads the library, succeed') or diag($err);
	is($out, "t\n0", 'the library loaded, the size not declared');
	like($err, qr/^WARNING:  (?:22023: )?invalid value for parameter "pool_health\.client_pool_size": "\\xe6\\x97\\xa5\\xe6\\x9c\\xac"/m,
		'the WARNING, in a client encoding without those characters');
	unlike($err, qr/ERROR/, 'no ERROR');
}
$plain->stop;
done_testing();
