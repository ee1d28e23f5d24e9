# Without shared_preload_libraries the live views and endpoints still work.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('nopreload', preload => 0);

is($node->safe_psql('postgres', 'SELECT used >= 1 FROM pool_health.usage'),
	't', 'usage works without the preload');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.sessions WHERE pid = pg_backend_pid()"),
	'1', 'sessions works without the preload');
is( $node->safe_psql('postgres',
		"SELECT (s->>'level') || ':' || (s->'worker'->>'preloaded') FROM pool_health.status() s"),
	'healthy:false', 'status() works and says the library is not preloaded');
is($node->safe_psql('postgres', 'SELECT pool_health.ping()'),
	't', 'ping() works');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pool_health.leaks'),
	'0', 'leaks works');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT * FROM pool_health.history',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55000: pool_health history requires pool_health to be loaded via shared_preload_libraries/,
	'history says the library must be preloaded (SQLSTATE 55000)');
($ret, $out, $err) = $node->psql('postgres', 'SELECT * FROM pool_health.forecast',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  55000: pool_health.forecast requires pool_health to be loaded via shared_preload_libraries/,
	'so does forecast');
like($err, qr/HINT:  Add pool_health to shared_preload_libraries/, 'with a hint');
is( $node->safe_psql('postgres', "SELECT status->'worker' FROM pool_health.status() status"),
	'{"preloaded": false}', 'status() shows no worker');

# a function's action is audited in the table, which my_terminations shows
# its role (the in-memory records need the preload: none, and no error)
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
my ($idle, $idle_pid) = ph_session($node, role => 'app');
$node->poll_query_until('postgres',
	"SELECT idle_for > '0.2s' FROM pool_health.sessions WHERE pid = $idle_pid");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.terminate_idle('0.1s', dry_run => true) WHERE pid = $idle_pid"),
	'1', 'terminate_idle() works without the preload');
is( $node->safe_psql('postgres', "SELECT limit_name FROM pool_health.my_terminations WHERE pid = $idle_pid",
		extra_params => [ '-U', 'app' ]),
	'older_than', 'my_terminations works without the preload');
$idle->quit;
$node->stop;
done_testing();
