# What applications are told when a policy ends their session, with the
# real drivers (Debian's python3-psycopg2, python3-psycopg, python3-asyncpg,
# python3-sqlalchemy, run by /usr/bin/python3):
# - the README's driver table is what the drivers raise: psycopg2,
#   psycopg 3 and asyncpg, sessions ended idle in transaction, idle and
#   mid-statement (test/python/driver_table.py prints the table; a change
#   in a driver or in the README fails here);
# - each of those applications reconnects with its role and finds its old
#   backend pid in pool_health.my_terminations, with the limit;
# - the README's recipes, run as written (test/python/readme_recipes.py):
#   SQLAlchemy's handle_error + pool connect events and asyncpg's
#   termination listener find why their session ended; the sqlcommenter
#   listener, under SQLAlchemy with psycopg2 and with asyncpg, fails no
#   request and its tags reach pool_health for every kind of statement,
#   where a listener that never doubles % fails and one that always does
#   records wrong tags;
# - my_terminations shows a role only its own sessions' records.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $python = '/usr/bin/python3';
my $root = abs_path(dirname(__FILE__) . '/../..');
my $readme = "$root/README.md";

my $node = ph_node('drivers',
	conf => "listen_addresses = '127.0.0.1'\npool_health.sample_interval = '100ms'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE other LOGIN;
	CREATE TABLE tagged (i int);
	GRANT ALL ON tagged TO app;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout,
	    idle_timeout, transaction_timeout)
	VALUES ('drv-iit', 'drv-iit%', '1s', NULL, NULL),
	       ('drv-idle', 'drv-idle%', NULL, '1s', NULL),
	       ('drv-xact', 'drv-xact%', NULL, NULL, '2s');
});
my @server = ('127.0.0.1', $node->port, 'postgres', 'app');
my $monitor = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user='
  . $node->safe_psql('postgres', 'SELECT current_user');

sub python
{
	my ($script, @args) = @_;
	my ($stdout, $stderr) = ('', '');
	my $ok = IPC::Run::run([ $python, "$root/test/python/$script", @args ],
		'>', \$stdout, '2>', \$stderr);
	note("$script stderr:\n$stderr") if $stderr ne '';
	ok($ok, "$script runs") or diag($stderr);
	return $stdout;
}

# --- the driver table -------------------------------------------------------------
my $out = python('driver_table.py', @server, $monitor);
my ($table) = $out =~ /^TABLE BEGIN\n(.*?)^TABLE END$/ms;
$table //= '';
note("what the drivers raise:\n$table");
my ($readme_table) = slurp_file($readme) =~
  /^<!-- driver table: produced by test\/t\/023_drivers.pl -->\n(.*?)^<!-- end of driver table -->$/ms;
is($readme_table, $table, "the README's driver table is what the drivers raise");
my @rows = $table =~ /^\| (?:psycopg2|psycopg|asyncpg) /mg;
is(scalar(@rows), 9, 'three drivers, three cases each');

my @lookups = $out =~ /^(LOOKUP .*)$/mg;
is(scalar(@lookups), 9, 'each application looked its old pid up');
for my $lookup (@lookups)
{
	my ($driver, $case, $expected, $found, $tries) =
	  $lookup =~ /^LOOKUP (\S+) (\S+) pid=\d+ expected=(\S+) found=(\S+) tries=(\d+)/;
	is($found, $expected, "$driver, $case: my_terminations has the limit ($tries lookup(s))");
}
# and nothing of it is shown to another role
my $pids = join(',', map { /pid=(\d+)/ } @lookups);
is( $node->safe_psql('postgres', "SELECT count(*) FROM pool_health.my_terminations WHERE pid IN ($pids)",
		extra_params => [ '-U', 'other' ]),
	'0', "another role sees none of app's records");
is( $node->safe_psql('postgres',
		"SELECT count(*) || ':' || count(DISTINCT limit_name) FROM pool_health.terminations WHERE pid IN ($pids) AND role_id = 'app'::regrole"),
	'9:3', 'the audit rows carry the role OID and the limit');

# --- the README's recipes, as written ---------------------------------------------------
$out = python('readme_recipes.py', $readme, @server, $monitor, 200);
my %result = $out =~ /^RESULT (\S+) (.*)$/mg;
note($out);
for my $driver ('psycopg2', 'asyncpg')
{
	is($result{"sqlcommenter.recipe.$driver.failed"}, '0/200',
		"sqlcommenter recipe, SQLAlchemy with $driver: no request fails");
	for my $kind ('text_with_parameters', 'text_without_parameters', 'exec_driver_sql',
		'no_parameters', 'core_select', 'executemany')
	{
		is($result{"sqlcommenter.recipe.$driver.$kind"}, 'right',
			"sqlcommenter recipe, $driver, $kind: pool_health has the route's tags");
	}
	# the mistakes the recipe avoids (so that the test can tell)
	is($result{"sqlcommenter.naive.$driver.failed"}, '200/200',
		"without doubling %, SQLAlchemy with $driver fails every request");
	is($result{"sqlcommenter.doubling.$driver.no_parameters"}, 'wrong',
		"doubling % always, a statement sent with no_parameters has the wrong tags ($driver)");
}
like($result{'sqlcommenter.naive.asyncpg.error'} // '', qr/not enough arguments for format string/,
	'asyncpg: "not enough arguments for format string", as the README says');
like($result{'sqlcommenter.naive.psycopg2.error'} // '', qr/argument formats can't be mixed/,
	'psycopg2: "argument formats can\'t be mixed", as the README says');
for my $driver ('psycopg2', 'asyncpg')
{
	is($result{"sqlalchemy-why.$driver.idle_in_transaction"}, 'idle_in_transaction_timeout',
		"SQLAlchemy recipe ($driver): a pooled connection ended idle in transaction is explained");
	is($result{"sqlalchemy-why.$driver.mid-statement"}, 'transaction_timeout',
		"SQLAlchemy recipe ($driver): one ended mid-statement too");
}
is($result{'asyncpg-why.listener.idle_in_transaction'}, 'idle_in_transaction_timeout',
	'asyncpg recipe: the termination listener finds why');

$node->stop;
done_testing();
