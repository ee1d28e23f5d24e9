# Attack (issue 24): the agent says "ready" on every check while healthy.
# In HAProxy's agent grammar "ready" sets the server's administrative
# state to READY, "canceling any DRAIN or MAINT state" -- also one that an
# operator set on the stats socket (set server .../state maint) to take
# the server out for maintenance.  Within an agent interval the server is
# back in the farm and receives new connections.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::UNIX;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('s1',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");

sub wait_for
{
	my ($secs, $sub) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		my $r = $sub->();
		return $r if $r;
		usleep(100_000);
	}
	return undef;
}

my $dir = PostgreSQL::Test::Utils::tempdir();
my $stats = "$dir/haproxy.sock";
my $lb = PostgreSQL::Test::Cluster::get_free_port();
my $port = $node->port;
PostgreSQL::Test::Utils::append_to_file("$dir/haproxy.cfg", <<"EOF2");
global
    stats socket $stats mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
listen pg
    bind 127.0.0.1:$lb
    server s1 127.0.0.1:$port weight 100 check inter 200ms agent-check agent-port $agent_port agent-inter 200ms
EOF2
my ($hout, $herr) = ('', '');
my $haproxy = IPC::Run::start([ 'haproxy', '-db', '-f', "$dir/haproxy.cfg" ], '>', \$hout, '2>', \$herr);

sub cli
{
	my ($cmd) = @_;
	my $sock = IO::Socket::UNIX->new(Peer => $stats) or return '';
	print $sock "$cmd\n";
	my $text = join '', <$sock>;
	close $sock;
	return $text;
}
sub status
{
	for (split /\n/, cli('show stat'))
	{
		my @f = split /,/;
		return $f[17] if ($f[1] // '') eq 's1';
	}
	return '';
}
ok(wait_for(10, sub { status() eq 'UP' }), 'HAProxy: s1 UP') or diag($herr);
# the agent has answered a few times
usleep(1_000_000);

foreach my $state ('maint', 'drain')
{
	cli("set server pg/s1 state $state");
	like(status(), qr/^(MAINT|DRAIN)/i, "the operator sets s1 to $state: " . status());
	usleep(1_500_000);	# several agent intervals (200 ms)
	like(status(), $state eq 'maint' ? qr/^MAINT/ : qr/^DRAIN/,
		"1.5 s later s1 is still in $state") or diag('status: ' . status());
	cli('set server pg/s1 state ready');
	ok(wait_for(5, sub { status() eq 'UP' }), 'the operator sets it ready: UP');
}

$haproxy->kill_kill;
done_testing();
