# The agent's faults that an operator or the machine causes: an
# agent_listen equal to http_listen (same address and port) is refused
# at the start with one WARNING naming both settings, and never tried
# again (no "could not listen" retries every 10 s) while /health answers;
# and accept() failing for want of descriptors (EMFILE: the HTTP
# worker's open-files limit lowered with prlimit while a connection
# waits) does not make the worker spin: it backs off (little CPU over
# 2 s), logs it once, and answers again once descriptors are free.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time usleep);
use PoolHealthTest;


# --- agent_listen = http_listen ---------------------------------------------------------
my $same_port = PostgreSQL::Test::Cluster::get_free_port();
my $same = ph_node('same',
	conf => "listen_addresses = '127.0.0.1'\npool_health.http_listen = '127.0.0.1:$same_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$same_port'");
ok(ph_wait_for(10, sub { ph_http_code($same_port, '/health') eq '200' }), 'agent_listen = http_listen: /health 200');
ok(ph_wait_for(10, sub { slurp_file($same->logfile) =~
	/WARNING:  pool_health agent: pool_health.agent_listen "127.0.0.1:$same_port" is the address of pool_health.http_listen "127.0.0.1:$same_port"/ }),
	'a WARNING naming both settings');
unlike(slurp_file($same->logfile), qr/could not listen on/, 'no try to listen, so no retry every 10 s');
is(scalar(() = slurp_file($same->logfile) =~ /is the address of pool_health.http_listen/g), 1, 'one WARNING');
$same->stop;

# --- accept() failing: EMFILE -----------------------------------------------------------
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $agent_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('p',
	conf => "listen_addresses = '127.0.0.1'\npool_health.http_listen = '127.0.0.1:$http_port'\n"
	  . "pool_health.agent_listen = '127.0.0.1:$agent_port'");
ok(ph_wait_for(10, sub { (ph_agent_line($agent_port) // '') =~ /^up / }), 'the agent answers');
my $pid = $node->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'pid'");
like($pid, qr/^\d+$/, "the HTTP worker: $pid");

# its lowest free descriptor becomes its limit: the next accept() fails
my %open = map { $_ => 1 } map { m{/(\d+)$} ? $1 : () } glob("/proc/$pid/fd/*");
my $lowest = 0;
$lowest++ while $open{$lowest};
my ($soft) = slurp_file("/proc/$pid/limits") =~ /^Max open files\s+(\d+)/m;
my ($out, $err) = ('', '');
ok(IPC::Run::run([ 'prlimit', "--pid=$pid", "--nofile=$lowest:" ], '>', \$out, '2>', \$err),
	"the worker's open-files limit lowered to $lowest") or diag($err);

sub cpu_ticks
{
	my @f = split ' ', (slurp_file("/proc/$pid/stat") =~ /\)\s+(.*)$/s)[0];
	return $f[11] + $f[12];		# utime + stime (fields 14 and 15)
}
# a connection waits in the backlog: the socket stays readable
my $waiting = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $agent_port, Timeout => 2);
ok($waiting, 'a client connects (the kernel queues it)');
usleep(200_000);
my $ticks = cpu_ticks();
my $from = time;
usleep(2_000_000);
my $used = (cpu_ticks() - $ticks) / POSIX::sysconf(POSIX::_SC_CLK_TCK);
my $elapsed = time - $from;
note(sprintf('HTTP worker CPU while accept() fails: %.2f s in %.2f s', $used, $elapsed));
cmp_ok($used, '<', 0.3 * $elapsed, 'it does not spin on the failing accept()');
ok(ph_wait_for(5, sub { slurp_file($node->logfile) =~ /LOG:  pool_health agent: could not accept a connection: Too many open files/ }),
	'logged: could not accept, too many open files');
is(scalar(() = slurp_file($node->logfile) =~ /could not accept a connection/g), 1, 'logged once');

# descriptors again: the waiting client gets its line
IPC::Run::run([ 'prlimit', "--pid=$pid", "--nofile=$soft:" ], '>', \$out, '2>', \$err);
my $sel = IO::Select->new($waiting);
my $line = '';
$line = <$waiting> if $sel->can_read(3);
like($line // '', qr/^up /, 'the limit raised: the waiting client gets its line');
like(ph_agent_line($agent_port) // '', qr/^up /, 'and the agent answers new clients');
is(ph_http_code($http_port, '/health'), '200', '/health 200');

done_testing();
