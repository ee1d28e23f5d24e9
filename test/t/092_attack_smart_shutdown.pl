# Attack (issue 24): during a smart shutdown the postmaster refuses every
# new login ("the database system is shutting down") while sessions
# already open finish; background workers, the HTTP worker among them,
# keep running.  /readyz must then be 503 ("200 when a new ordinary
# login would be admitted") and the agent "down" ("when ... not
# accepting connections"), so that a load balancer stops sending new
# connections; both say ready and "accepting_connections": true.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('p',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");

sub code
{
	my ($path) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}',
		"http://127.0.0.1:$http_port$path" ], '>', \$out);
	return $out;
}
sub agent
{
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $agent_port, Timeout => 2)
	  or return '';
	my $sel = IO::Select->new($sock);
	my $text = '';
	my $deadline = time + 2;
	while (time < $deadline && $sel->can_read($deadline - time))
	{
		my $n = sysread($sock, my $chunk, 4096);
		last if !$n;
		$text .= $chunk;
	}
	close $sock;
	return $text;
}
sub wait_for
{
	my ($secs, $sub) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		my $r = $sub->();
		return $r if $r;
		usleep(50_000);
	}
	return undef;
}
ok(wait_for(10, sub { code('/readyz') eq '200' }), 'before: /readyz 200');
like(agent(), qr/^up ready/, 'before: the agent says up ready');

# a session open: the smart shutdown waits for it
my $session = $node->background_psql('postgres');
$session->query_safe('SELECT 1');
PostgreSQL::Test::Utils::system_log('pg_ctl', '-D', $node->data_dir, '-m', 'smart', '-W', 'stop');
ok(wait_for(10, sub {
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', 'SELECT 1' ],
		'>', \$out, '2>', \$err);
	$err =~ /the database system is shutting down/;
}), 'smart shutdown under way: a new login is refused');
is(code('/livez'), '200', '/livez: 200 (the worker answers)');
ok(wait_for(5, sub { code('/readyz') eq '503' }), 'smart shutdown: /readyz 503')
  or diag(code('/readyz'));
ok(wait_for(5, sub { agent() =~ /^down\b/ }), 'smart shutdown: the agent says down')
  or diag(agent());

$session->quit;
$node->stop('smart');
done_testing();
