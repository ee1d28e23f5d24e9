# The agent's maxconn is what HAProxy may hold to the server (HAProxy
# takes it as the most connections it may have there, not what is left):
# the free usable slots plus the sessions connected from HAProxy's
# address.  With 10 sessions through a real HAProxy and 7 slots free,
# an 11th client through HAProxy is admitted, not queued.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

$SIG{PIPE} = 'IGNORE';
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
# 20 - 3 reserved: 17 usable; degraded at 70 %, critical at 90 %
my $node = ph_node('s1',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');

my $lb = PostgreSQL::Test::Cluster::get_free_port();
my $port = $node->port;
my ($haproxy, $stats, $herr) = ph_haproxy_start(<<"EOF2", defaults => "    timeout queue 2s\n");
listen pg
    bind 127.0.0.1:$lb
    server s1 127.0.0.1:$port weight 100 check inter 200ms agent-check agent-port $agent_port agent-inter 200ms
EOF2

sub stat_of
{
	return ph_hap_stat($stats)->{'pg/s1'} // {};
}
ok(ph_wait_for(10, sub { (stat_of()->{status} // '') eq 'UP' }, 0.1), 'HAProxy: s1 UP') or diag($$herr);

# 10 application sessions through HAProxy (the server: 10 of 17 used)
my @held;
for (1 .. 10)
{
	my ($o, $e) = ('', '');
	push @held, IPC::Run::start([ 'psql', '-XAtq', '-d', "host=127.0.0.1 port=$lb user=app dbname=postgres",
		'-c', 'SELECT pg_sleep(60)' ], '>', \$o, '2>', \$e);
}
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM pg_stat_activity WHERE usename = 'app' AND query LIKE 'SELECT pg_sleep%'"),
	'10 sessions through HAProxy');
ok(ph_wait_for(10, sub {
	my $out = '';
	IPC::Run::run([ 'curl', '-s', "http://127.0.0.1:$http_port/readyz" ], '>', \$out);
	$out =~ /"free": 7\b/;
}, 0.1), 'pool_health sees 7 free slots');
usleep(1_000_000);	# 5 agent intervals: HAProxy has applied the agent's answer
note('HAProxy: scur ' . stat_of()->{scur} . ', slim ' . stat_of()->{slim});

# one more client: the server has 7 free slots
my ($out, $err) = ('', '');
my $started = time;
IPC::Run::run([ 'psql', '-XAtq', '-d', "host=127.0.0.1 port=$lb user=app dbname=postgres connect_timeout=10",
	'-c', 'SELECT 1' ], '>', \$out, '2>', \$err);
is($out, "1\n", 'an 11th client through HAProxy is admitted (7 slots free)')
  or diag(sprintf('after %.1f s: %s', time - $started, $err));

$_->kill_kill for @held;
$haproxy->kill_kill;
done_testing();
