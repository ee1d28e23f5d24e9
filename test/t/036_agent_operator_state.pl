# The agent does not cancel an operator's MAINT or DRAIN: in the steady
# state its line is "up N% maxconn:M", without "ready" (which, in
# HAProxy's agent grammar, cancels any DRAIN or MAINT state).  A server
# set to maint, then to drain, on HAProxy's stats socket stays so over
# several agent intervals, and comes back UP when the operator sets it
# ready.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('s1',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");

my $lb = PostgreSQL::Test::Cluster::get_free_port();
my $port = $node->port;
my ($haproxy, $stats, $herr) = ph_haproxy_start(<<"EOF2");
listen pg
    bind 127.0.0.1:$lb
    server s1 127.0.0.1:$port weight 100 check inter 200ms agent-check agent-port $agent_port agent-inter 200ms
EOF2

sub status
{
	return ph_hap_stat($stats)->{'pg/s1'}{status} // '';
}
ok(ph_wait_for(10, sub { status() eq 'UP' }, 0.1), 'HAProxy: s1 UP') or diag($$herr);
# the steady state: 10 s after its start the agent no longer says "ready"
# (which it says then to undo a DRAIN it may have set before a restart)
ok(ph_wait_for(15, sub { (ph_agent_line($agent_port) // '') eq "up 100% maxconn:17\n" }, 0.1), 'the agent, steady: up 100% maxconn:17');
usleep(1_000_000);	# HAProxy has applied it a few times

foreach my $state ('maint', 'drain')
{
	ph_hap_command($stats, "set server pg/s1 state $state");
	like(status(), qr/^(MAINT|DRAIN)/i, "the operator sets s1 to $state: " . status());
	usleep(1_500_000);	# several agent intervals (200 ms)
	like(status(), $state eq 'maint' ? qr/^MAINT/ : qr/^DRAIN/,
		"1.5 s later s1 is still in $state") or diag('status: ' . status());
	ph_hap_command($stats, 'set server pg/s1 state ready');
	ok(ph_wait_for(5, sub { status() eq 'UP' }, 0.1), 'the operator sets it ready: UP');
}

$haproxy->kill_kill;
done_testing();
