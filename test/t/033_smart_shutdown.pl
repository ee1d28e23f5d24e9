# During a smart shutdown the postmaster refuses every new login ("the
# database system is shutting down") while the sessions open finish and
# the background workers, the HTTP worker among them, run on: /livez
# stays 200, /readyz is 503 with the reason "the server is shutting
# down" and accepting_connections false, and the agent says down, so
# that a load balancer sends no new connection there.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('p',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");

ok(ph_wait_for(10, sub { ph_http_code($http_port, '/readyz') eq '200' }), 'before: /readyz 200');
like(ph_agent_line($agent_port) // '', qr/^up (ready )?100% maxconn:17$/, 'before: the agent says up');

# a session open: the smart shutdown waits for it
my $session = $node->background_psql('postgres');
$session->query_safe('SELECT 1');
PostgreSQL::Test::Utils::system_log('pg_ctl', '-D', $node->data_dir, '-m', 'smart', '-W', 'stop');
ok(ph_wait_for(10, sub {
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', 'SELECT 1' ],
		'>', \$out, '2>', \$err);
	$err =~ /the database system is shutting down/;
}), 'smart shutdown under way: a new login is refused');
is(ph_http_code($http_port, '/livez'), '200', '/livez: 200 (the worker answers)');
ok(ph_wait_for(5, sub { ph_http_code($http_port, '/readyz') eq '503' }), 'smart shutdown: /readyz 503')
  or diag(ph_http_code($http_port, '/readyz'));
{
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', "http://127.0.0.1:$http_port/readyz?verbose" ], '>', \$out);
	like($out, qr/"accepting_connections":\s*false/, 'smart shutdown: accepting_connections false');
	like($out, qr/"the server is shutting down"/, 'smart shutdown: the reason says so');
}
ok(ph_wait_for(5, sub { (ph_agent_line($agent_port) // '') eq "down #not accepting connections (shutting down)\n" }),
	'smart shutdown: the agent says down (shutting down)')
  or diag(ph_agent_line($agent_port) // '');

# the last session gone, the smart shutdown ends by itself
$session->quit;
ok(ph_wait_for(30, sub { !-f $node->data_dir . '/postmaster.pid' }), 'the session gone, the server stops');
$node->_update_pid(0);
done_testing();
