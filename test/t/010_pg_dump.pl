# pg_dump includes the user's policies (pg_extension_config_dump), and a
# restore into a database with the extension brings them back.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('dump');
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, max_connections, comment)
	VALUES ('web', 'web-%', '30s', 20, 'keep the web tier honest');
});
my $dump = PostgreSQL::Test::Utils::tempdir() . '/dump.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump ], 'pg_dump runs');
my $text = slurp_file($dump);
like($text, qr/CREATE EXTENSION IF NOT EXISTS pool_health/, 'the dump creates the extension');
like($text, qr/COPY pool_health\.policies .*\nweb\t0\t\\N\t\\N\tweb-%\t\\N\t00:00:30\t/,
	'and contains the policy');

$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ],
	'the dump restores');
is( $node->safe_psql('restored',
		"SELECT name || ':' || idle_in_transaction_timeout || ':' || max_connections || ':' || comment FROM pool_health.policies"),
	'web:00:00:30:20:keep the web tier honest', 'the policy is back');
$node->stop;
done_testing();
