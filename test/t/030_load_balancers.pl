# Fitting load balancers and orchestrators: /livez, /readyz, /primary and
# /replica as a kubelet (status code only) and a Patroni client (HEAD,
# GET with JSON) use them; OPTIONS (the status of GET); ?verbose; bad
# query parameters (a sign, blank, hexadecimal or exponent in a number;
# lag and max_lag together, named as written) are a 400 naming the
# parameter and change nothing; /readyz follows the level,
# ?min_free and a catch-all policy that refuses ordinary logins, and
# /livez never fails because slots are full.  The HAProxy agent-check
# (pool_health.agent_listen): one line per connection, whatever the client
# sends or does not send; "up drain" at critical, "up ready" for 10 s after
# its drain or down, then "up" without "ready"; its port in use: a WARNING, /health answers, and
# the agent answers once the port is free.  A real HAProxy (2.6) in front
# of two scratch servers, one filled with sessions: the split of new
# connections while it is at 80 % (by its agent weight), and how many
# client connections fail through HAProxy with a plain TCP check, the
# http check (GET /health) and the agent check once it is critical and
# then exhausted; it comes back when emptied.  A hot standby: /replica,
# /primary and ?lag (unknown once its primary is gone).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time usleep);
use PoolHealthTest;

$SIG{PIPE} = 'IGNORE';

# max_connections 20, 3 reserved: 17 usable; degraded at 12 (70 %),
# critical at 16 (90 %), exhausted at 17
my $conf = "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\npool_health.sample_interval = '100ms'";

my %http_port;
my %agent_port;
sub lb_node
{
	my ($name, $agent_held) = @_;
	$http_port{$name} = PostgreSQL::Test::Cluster::get_free_port();
	$agent_port{$name} = $agent_held // PostgreSQL::Test::Cluster::get_free_port();
	return ph_node($name,
		init => { allows_streaming => 1 },
		conf => "$conf\npool_health.http_listen = '127.0.0.1:$http_port{$name}'\npool_health.agent_listen = '127.0.0.1:$agent_port{$name}'");
}






# a session of role app holding a slot (a leaked transaction); with
# $superuser, of the test's superuser, which a full server still admits
# (when clients race for the last slots)
sub hold
{
	my ($node, $n, $list, $superuser) = @_;
	for (1 .. $n)
	{
		my $s = $node->background_psql('postgres', $superuser ? () : (extra_params => [ '-U', 'app' ]));
		$s->query_safe('BEGIN; SELECT 1');
		push @$list, $s;
	}
}

sub release
{
	my ($list, $n) = @_;
	$n //= scalar @$list;
	(pop @$list)->quit for 1 .. $n;
}

# the level and free slots as /readyz reports them
sub readyz_json { return (ph_http_json($http_port{$_[0]->name}, '/readyz'))[1]; }
sub wait_used
{
	my ($node, $used) = @_;
	return ph_wait_for(10, sub { my $j = readyz_json($node); $j && $j->{used} == $used });
}

# --- s1: the endpoints -----------------------------------------------------------------
my $s1 = lb_node('s1');
$s1->safe_psql('postgres', 'CREATE ROLE app LOGIN');
my $hp = $http_port{s1};
ok(ph_wait_for(10, sub { ph_http_code($hp, '/livez') eq '200' }), 'the HTTP worker answers /livez');
ok(wait_used($s1, 0), 'no client session');

is(ph_http_code($hp, '/livez'), '200', 'kubelet: /livez 200');
is(ph_http_code($hp, '/readyz'), '200', 'kubelet: /readyz 200 while healthy');
is(ph_http_code($hp, '/primary'), '200', '/primary 200 on a primary');
is(ph_http_code($hp, '/replica'), '503', '/replica 503 on a primary');
my ($status, $json, $body) = ph_http_json($hp, '/readyz');
is($status, '200', 'GET /readyz: 200');
is_deeply([ @$json{qw(status state role level accepting_connections usable used free)} ],
	[ 'ready', 'running', 'primary', 'healthy', JSON::PP::true, 17, 0, 17 ],
	'with a JSON body: status, state, role, level, usable, used, free');
ok(!exists $json->{reasons}, 'no reasons without ?verbose');
($status, $json) = ph_http_json($hp, '/replica?verbose');
is($status, '503', 'GET /replica?verbose: 503');
is($json->{role}, 'primary', 'the role, as Patroni names it (primary)');
is_deeply($json->{reasons}, [ 'the server is not in recovery' ], '?verbose: the reasons');
($status, $json) = ph_http_json($hp, '/livez');
is_deeply($json, { status => 'alive' }, '/livez body');

my ($hstatus, $headers, $hbody) = ph_http_head($hp, '/readyz');
is($hstatus, '200', 'HEAD /readyz: 200');
is($hbody, '', 'no body');
($hstatus) = ph_http_head($hp, '/replica');
is($hstatus, '503', 'HEAD /replica: 503');
($hstatus, $headers, $hbody) = ph_http_head($hp, '/readyz', 'OPTIONS');
is($hstatus, '200', 'OPTIONS /readyz: 200, as GET');
like($headers, qr/^Allow: GET, HEAD, OPTIONS\r?$/mi, 'with Allow');
($hstatus, $headers) = ph_http_head($hp, '/readyz', 'DELETE');
is($hstatus, '405', 'DELETE: 405');
like($headers, qr/^Allow: GET, HEAD, OPTIONS\r?$/mi, 'with Allow');
is(ph_http_code($hp, '/readyz', '-H', 'Host: attacker.example'), '421', 'the Host check holds for /readyz');
is(ph_http_code($hp, '/livez%00'), '404', '/livez%00 is 404');

is(ph_http_code($hp, '/readyz?min_free=17'), '200', '?min_free=17 with 17 free: 200');
is(ph_http_code($hp, '/readyz?min_free=18'), '503', '?min_free=18: 503');
is(ph_http_code($hp, '/readyz?min_free=0'), '200', '?min_free=0: 200');
is(ph_http_code($hp, '/readyz?max_lag=1'), '200', '?max_lag on a primary: ignored');

# bad parameters: 400 with a JSON error naming the parameter
my $worker_pid = $s1->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'pid'");
foreach my $case (
	[ '/readyz?min_free=-1', 'min_free' ],
	[ '/readyz?min_free=abc', 'min_free' ],
	[ '/readyz?min_free=99999999999999999999', 'min_free' ],
	[ '/readyz?min_free=', 'min_free' ],
	[ '/readyz?min_free', 'min_free' ],
	[ '/readyz?min_free=1&min_free=2', 'min_free' ],
	[ '/readyz?max_lag=abc', 'max_lag' ],
	[ '/readyz?max_lag=-1', 'max_lag' ],
	[ '/readyz?max_lag=10parsecs', 'max_lag' ],
	[ '/readyz?max_lag=1e400', 'max_lag' ],
	[ '/readyz?max_lag=nan', 'max_lag' ],
	[ '/replica?lag=abc', 'lag' ],
	[ '/readyz?verbose=maybe', 'verbose' ],
	[ '/readyz?bogus=1', 'bogus' ],
	[ '/primary?min_free=1', 'min_free' ],
	[ '/livez?max_lag=1', 'max_lag' ],
	[ '/readyz?min%5ffree%00x=1', 'min_free?x' ],
	[ '/readyz?min_free=1%00', 'min_free' ],
	[ '/readyz?min_free=%FF%FE%C3%A9', 'min_free' ],
	[ '/readyz?%FF%C3%A9=1', '???' ],
	[ '/readyz?' . ('x' x 2000) . '=1', 'x' x 64 ],
	[ '/readyz?min_free=' . ('9' x 2000), 'min_free' ],
	[ '/readyz?min_free=+1', 'min_free' ],
	[ '/readyz?min_free=%201', 'min_free' ],
	[ '/readyz?min_free=1%20', 'min_free' ],
	[ '/readyz?max_lag=0x10', 'max_lag' ],
	[ '/readyz?max_lag=%2B1', 'max_lag' ],
	[ '/readyz?max_lag=1e3', 'max_lag' ],
	[ '/readyz?max_lag=1%20kB', 'max_lag' ],
	[ '/readyz?max_lag=1..2s', 'max_lag' ],
	[ '/replica?lag=1&max_lag=1', 'max_lag' ],
	[ '/replica?max_lag=1&lag=1', 'lag' ])
{
	my ($path, $param) = @$case;
	($status, $json, $body) = ph_http_json($hp, $path);
	my $short = length($path) > 50 ? substr($path, 0, 50) . '...' : $path;
	is($status, '400', "$short: 400");
	is($json && $json->{parameter}, $param, "$short: the JSON names \"$param\"");
	like($json && $json->{error}, qr/^invalid query parameter "\Q$param\E": /, "$short: the error says what");
}
($status, $json) = ph_http_json($hp, '/replica?lag=1&max_lag=1');
is($json && $json->{error}, 'invalid query parameter "max_lag": given more than once (also as "lag")',
	'lag and max_lag: the error names both as written');
foreach my $ok ('/readyz?max_lag=1.5', '/readyz?max_lag=16MB', '/readyz?max_lag=500ms', '/readyz?max_lag=.5s',
	'/readyz?min_free=007')
{
	is(ph_http_code($hp, $ok), '200', "$ok: accepted");
}
is(ph_http_code($hp, '/health'), '200', 'then /health: 200');
is($s1->safe_psql('postgres', "SELECT pool_health.status()->'http'->>'pid'"), $worker_pid,
	'the same HTTP worker');
is(ph_http_code($hp, '/health?anything=1'), '200', '/health ignores a query, as before');

# --- the agent ---------------------------------------------------------------------------
my $ap = $agent_port{s1};
like(ph_agent_line($ap), qr/^up (ready )?100% maxconn:17\n\z/, 'agent, healthy: up 100% maxconn:17');
like(ph_agent_line($ap, "s1\n"), qr/^up (ready )?100% maxconn:17\n\z/, 'the same after HAProxy\'s agent-send text');
like(ph_agent_line($ap, "\x00\xff garbage \r\n" x 100), qr/^up (ready )?100% maxconn:17\n\z/, 'and after garbage');
{
	# 200 connections that send nothing and never read, held open: every
	# one gets its line, the agent and /health go on answering at once
	my @idle = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ap) } 1 .. 200;
	is(scalar(grep { defined } @idle), 200, '200 connections to the agent, silent');
	my $started = time;
	is(ph_http_code($hp, '/health'), '200', 'meanwhile /health: 200');
	like(ph_agent_line($ap), qr/^up (ready )?100% maxconn:17\n\z/, 'and the agent answers another client');
	cmp_ok(time - $started, '<', 1, 'both within a second');
	my $answered = grep { my $l = <$_>; defined $l && $l =~ /^up (ready )?100% maxconn:17\n\z/ } grep { defined } @idle;
	is($answered, 200, 'each silent connection got its line and was closed');
	close $_ for grep { defined } @idle;
}
{
	# a client reconnecting in a loop (4 processes, 3 s): every /health
	# check is answered within a second meanwhile
	my @pids;
	for (1 .. 4)
	{
		my $pid = fork;
		if (!$pid)
		{
			my $end = time + 3;
			while (time < $end)
			{
				my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ap) or next;
				close $c;
			}
			POSIX::_exit(0);
		}
		push @pids, $pid;
	}
	my ($checks, $slowest) = ('', 0);
	for (1 .. 10)
	{
		my $t = time;
		$checks .= ph_http_code($hp, '/health') . ' ';
		$slowest = time - $t if time - $t > $slowest;
		usleep(200_000);
	}
	waitpid($_, 0) for @pids;
	is($checks, '200 ' x 10, 'while 4 clients reconnect to the agent in a loop, every /health check is answered');
	cmp_ok($slowest, '<', 1, sprintf('each within a second (slowest %.3f s)', $slowest));
	like(ph_agent_line($ap), qr/^up (ready )?100% maxconn:17\n\z/, 'and the agent still answers');
}
{
	# one that sends a megabyte: answered, nothing waits on it
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ap);
	$sock->blocking(0);
	syswrite($sock, 'x' x 65536) for 1 .. 16;
	is(ph_http_code($hp, '/health'), '200', 'a client writing a megabyte to the agent: /health 200');
	like(ph_agent_line($ap), qr/^up (ready )?100% maxconn:17\n\z/, 'the agent answers');
	close $sock;
}

my @s1_sessions;
hold($s1, 12, \@s1_sessions);
ok(wait_used($s1, 12), '12 sessions of 17: degraded');
($status, $json) = ph_http_json($hp, '/readyz');
is("$status $json->{level}", '200 degraded', '/readyz 200 while degraded');
like(ph_agent_line($ap), qr/^up (ready )?29% maxconn:5\n\z/, 'agent, degraded: weight 29% (5 of 17 free), maxconn:5');

# a catch-all policy that refuses ordinary logins at degraded
$s1->safe_psql('postgres', "INSERT INTO pool_health.policies (name, refuse_at) VALUES ('everyone', 'degraded')");
ok(ph_wait_for(10, sub { ph_http_code($hp, '/readyz') eq '503' }), 'a catch-all policy refusing at degraded: /readyz 503');
($status, $json) = ph_http_json($hp, '/readyz?verbose=on');
ok((grep { $_ eq 'policy "everyone" refuses ordinary logins now' } @{ $json->{reasons} }),
	'the reason names the policy');
is(ph_agent_line($ap), "down #a catch-all policy refuses ordinary logins\n", 'agent: down');
like(ph_try_connect($s1, undef, 'app') // '', qr/connection refused by pool_health policy "everyone"/,
	'and an ordinary login is indeed refused');
$s1->safe_psql('postgres', "DELETE FROM pool_health.policies");
ok(ph_wait_for(10, sub { ph_http_code($hp, '/readyz') eq '200' }), 'the policy gone: /readyz 200');

hold($s1, 4, \@s1_sessions);
ok(wait_used($s1, 16), '16 of 17: critical');
is(ph_http_code($hp, '/readyz'), '503', 'kubelet: /readyz 503 at critical');
is(ph_http_code($hp, '/livez'), '200', '/livez 200');
is(ph_agent_line($ap), "up drain\n", 'agent, critical: up drain');
hold($s1, 1, \@s1_sessions);
ok(wait_used($s1, 17), '17 of 17: exhausted');
like(ph_try_connect($s1, undef, 'app') // '', qr/remaining connection slots are reserved/,
	'an ordinary login is refused');
is(ph_http_code($hp, '/livez'), '200', 'exhausted: /livez 200');
($status, $json) = ph_http_json($hp, '/readyz?verbose');
is("$status $json->{level} $json->{free}", '503 exhausted 0', '/readyz 503, exhausted, 0 free');
is(ph_agent_line($ap), "down #exhausted: no usable connection slot is free\n", 'agent, exhausted: down');
release(\@s1_sessions);
ok(wait_used($s1, 0), 'emptied');
is(ph_agent_line($ap), "up ready 100% maxconn:17\n", 'agent, emptied: up ready 100% (ready undoes its drain and down)');
# 10 s after its last drain or down, no "ready" (it would cancel an
# operator's MAINT or DRAIN: 036_agent_operator_state.pl)
my $steady_from = time;
ok(ph_wait_for(15, sub { (ph_agent_line($ap) // '') eq "up 100% maxconn:17\n" }), 'then the steady state: up 100% maxconn:17');
cmp_ok(time - $steady_from, '>', 5, sprintf('after %.1f s of up ready', time - $steady_from));

# --- s2: its agent port in use -----------------------------------------------------------
my $held_port = PostgreSQL::Test::Cluster::get_free_port();
my $holder = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $held_port,
	Listen => 1, ReuseAddr => 0) or die "cannot hold port $held_port: $!";
my $s2 = lb_node('s2', $held_port);
$s2->safe_psql('postgres', 'CREATE ROLE app LOGIN');
ok(ph_wait_for(10, sub { ph_http_code($http_port{s2}, '/health') eq '200' }), 'agent port in use: /health 200');
ok(ph_wait_for(10, sub { slurp_file($s2->logfile) =~ /WARNING:  pool_health agent: could not listen on "127.0.0.1:$held_port": Address already in use/ }),
	'a WARNING: could not listen, address in use');
is(ph_http_code($http_port{s2}, '/readyz'), '200', '/readyz 200');
close $holder;
my $started = time;
ok(ph_wait_for(15, sub { (ph_agent_line($held_port) // '') =~ /^up (ready )?100% maxconn:17\n\z/ }),
	'the port freed: the agent answers within the retry period');
note(sprintf('the agent answered %.1f s after the port was freed', time - $started));
is(scalar(() = slurp_file($s2->logfile) =~ /could not listen on/g), 1, 'the failure was logged once');

# --- HAProxy in front of s1 and s2 -------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
my %lb = (tcp => PostgreSQL::Test::Cluster::get_free_port(),
	http => PostgreSQL::Test::Cluster::get_free_port(),
	agent => PostgreSQL::Test::Cluster::get_free_port());
my $servers = sub {
	my ($check) = @_;
	my $text = '';
	for my $n ($s1, $s2)
	{
		my $name = $n->name;
		# weight 100: the agent's percentages are of the initial weight
		$text .= "    server $name 127.0.0.1:" . $n->port . ' weight 100 check inter 200ms fall 1 rise 1';
		$text .= " port $http_port{$name}" if $check eq 'http';
		$text .= " agent-check agent-port $agent_port{$name} agent-inter 200ms agent-send \"$name\\n\""
		  if $check eq 'agent';
		$text .= "\n";
	}
	return $text;
};
my ($haproxy, $stats, $herr) = ph_haproxy_start(<<"EOF", global => "    maxconn 2000\n");
listen pg_tcp
    bind 127.0.0.1:$lb{tcp}
    balance roundrobin
@{[ $servers->('tcp') ]}
listen pg_http
    bind 127.0.0.1:$lb{http}
    balance roundrobin
    option httpchk GET /health
@{[ $servers->('http') ]}
listen pg_agent
    bind 127.0.0.1:$lb{agent}
    balance roundrobin
@{[ $servers->('agent') ]}
EOF

ok(ph_wait_for(15, sub { my $s = ph_hap_stat($stats); (grep { $_->{status} eq 'UP' } values %$s) == 6 }),
	'HAProxy started, the 6 servers UP') or diag("haproxy: $$herr");

# a client connection through HAProxy: the port of the server it reached,
# or undef if it failed
sub through
{
	my ($lbport) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', "host=127.0.0.1 port=$lbport user=app dbname=postgres connect_timeout=5",
		'-c', "SELECT current_setting('port')" ], '>', \$out, '2>', \$err);
	chomp $out;
	return $out =~ /^\d+$/ ? $out : undef;
}
sub split_of
{
	my ($lbport, $n) = @_;
	my %count = (s1 => 0, s2 => 0, failed => 0);
	for (1 .. $n)
	{
		my $port = through($lbport);
		$count{ !defined $port ? 'failed' : $port == $s1->port ? 's1' : 's2' }++;
	}
	return \%count;
}

# s1 at 14 of 17 (82 %)
hold($s1, 14, \@s1_sessions);
ok(wait_used($s1, 14), 's1 at 14 of 17 (82 %)');
ok(ph_hap_is($stats, 'pg_agent/s1', 'weight', qr/^(1[0-9]|2[0-9])$/), 'HAProxy took the agent\'s weight for s1 (18 % of 100)');
is(ph_hap_stat($stats)->{'pg_agent/s2'}{weight}, '100', 's2 (empty): weight 100');
my $agent_split = split_of($lb{agent}, 60);
my $http_split = split_of($lb{http}, 60);
note("60 connections while s1 is at 82 %: agent check s1 $agent_split->{s1}, s2 $agent_split->{s2}, failed $agent_split->{failed}; "
	. "http check s1 $http_split->{s1}, s2 $http_split->{s2}, failed $http_split->{failed}");
is($agent_split->{failed} + $http_split->{failed}, 0, 'none failed');
cmp_ok($agent_split->{s1}, '<=', 12, 'agent check: s1 (18 % of the weight) got at most 12 of 60');
cmp_ok($agent_split->{s1}, '>=', 3, 'and some');
cmp_ok($http_split->{s1}, '>=', 25, 'http check: s1 got about half (no weights)');

# critical: the agent drains s1, the http check takes it down
hold($s1, 2, \@s1_sessions);
ok(wait_used($s1, 16), 's1 at 16 of 17: critical');
$started = time;
ok(ph_hap_is($stats, 'pg_agent/s1', 'status', qr/^DRAIN/), 'agent check: s1 DRAIN');
ok(ph_hap_is($stats, 'pg_http/s1', 'status', qr/^DOWN/), 'http check: s1 DOWN');
note(sprintf('HAProxy saw both within %.2f s', time - $started));
my $critical_agent = split_of($lb{agent}, 20);
note("20 connections with s1 at critical, agent check: s1 $critical_agent->{s1}, s2 $critical_agent->{s2}, failed $critical_agent->{failed}");
is_deeply($critical_agent, { s1 => 0, s2 => 20, failed => 0 }, 'agent check at critical: all 20 to s2');

# exhausted: count failures through each
hold($s1, 1, \@s1_sessions);
ok(wait_used($s1, 17), 's1 exhausted');
ok(ph_hap_is($stats, 'pg_agent/s1', 'status', qr/^DOWN/), 'agent check: s1 DOWN (agent)');
my %failed;
$failed{$_} = split_of($lb{$_}, 40)->{failed} for qw(tcp http agent);
note("40 connections through HAProxy with s1 exhausted: failed with the plain TCP check $failed{tcp}, the http check $failed{http}, the agent check $failed{agent}");
cmp_ok($failed{tcp}, '>=', 10, 'plain TCP check: connections fail (s1 stays UP)');
is($failed{http}, 0, 'http check: none fails');
is($failed{agent}, 0, 'agent check: none fails');

# emptied: back in rotation, full weight
release(\@s1_sessions);
ok(wait_used($s1, 0), 's1 emptied');
ok(ph_hap_is($stats, 'pg_agent/s1', 'status', qr/^UP$/), 'agent check: s1 UP again (the agent brought it back)');
ok(ph_hap_is($stats, 'pg_agent/s1', 'weight', qr/^100$/), 'weight 100');
ok(ph_hap_is($stats, 'pg_http/s1', 'status', qr/^UP$/), 'http check: s1 UP');
cmp_ok(split_of($lb{agent}, 10)->{s1}, '>=', 3, 'agent check: s1 takes its share again');

# before and after, under load: clients connect through each of the three
# without pause while s1 fills to exhaustion, and until HAProxy has taken
# it out with every check that can; the counts of [succeeded, failed]
# per check, and the seconds the fill took
sub under_load
{
	my ($fill, $name, @checks) = @_;
	@checks = qw(tcp http agent) unless @checks;
	my $stop = "$dir/stop_$name";
	my %loop;
	my $parent = $$;
	for my $check (@checks)
	{
		my $pid = fork;
		if (!$pid)
		{
			my ($ok, $fail) = (0, 0);
			until (-e $stop || getppid() != $parent) { defined through($lb{$check}) ? $ok++ : $fail++; }
			PostgreSQL::Test::Utils::append_to_file("$dir/${name}_$check", "$ok $fail");
			POSIX::_exit(0);
		}
		$loop{$check} = $pid;
	}
	my $started = time;
	$fill->();
	my $filled = time - $started;
	ok(ph_hap_is($stats, 'pg_agent/s1', 'status', qr/^DOWN/) && ph_hap_is($stats, 'pg_http/s1', 'status', qr/^DOWN/),
		"$name: s1 taken out with the agent and the http check");
	usleep(500_000);
	PostgreSQL::Test::Utils::append_to_file($stop, '');
	waitpid($_, 0) for values %loop;
	my %counts = map { $_ => [ split / /, slurp_file("$dir/${name}_$_") ] } @checks;
	note(sprintf("$name: clients connecting without pause while s1 filled to exhaustion in %.1f s and until HAProxy took it out: "
		  . join(', ', map { "$_ check %d failed of %d" } @checks),
		$filled, map { ($counts{$_}[1], $counts{$_}[0] + $counts{$_}[1]) } @checks));
	release(\@s1_sessions);
	ok(wait_used($s1, 0), "$name: s1 emptied");
	ok(ph_hap_is($stats, 'pg_agent/s1', 'status', qr/^UP$/) && ph_hap_is($stats, 'pg_http/s1', 'status', qr/^UP$/),
		"$name: s1 UP again");
	return \%counts;
}

# a burst: 17 sessions as fast as they open (faster than the checks run),
# of the superuser: the clients through HAProxy race for the same slots
my $burst = under_load(sub { hold($s1, 17, \@s1_sessions, 1) }, 'burst');
cmp_ok($burst->{tcp}[1], '>', 0, 'burst: connections failed with the plain TCP check');
# paced, as a server fills when its load grows: to 15 at once, then to
# critical (16), which lasts until HAProxy has seen it (the agent check's
# DRAIN, the http check's DOWN; for the plain TCP check, which sees
# nothing, a second), then exhausted (17).  Each check's clients run
# alone: another check's clients on s1 (the plain TCP one's keep coming)
# would take its last slot.
my %paced;
for my $check (qw(tcp agent http))
{
	$paced{$check} = under_load(sub {
		hold($s1, 16, \@s1_sessions, 1);
		if ($check eq 'tcp') { sleep 1; }
		else
		{
			ok(ph_hap_is($stats, "pg_$check/s1", 'status', $check eq 'agent' ? qr/^DRAIN/ : qr/^DOWN/),
				"paced, $check check: HAProxy saw s1 critical");
			ok(wait_used($s1, 16), "paced, $check check: its clients have left s1");
		}
		hold($s1, 1, \@s1_sessions, 1);
	}, "paced_$check", $check)->{$check};
}
cmp_ok($paced{tcp}[1], '>', 0, 'paced: connections failed with the plain TCP check');
is($paced{agent}[1], 0, 'paced: none failed with the agent check (drained at critical, before exhaustion)');
is($paced{http}[1], 0, 'paced: none failed with the http check (down at critical)');

$haproxy->signal('TERM');
$haproxy->finish;

# --- a hot standby of s1 -----------------------------------------------------------------
$s1->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('s1_standby');
$standby->init_from_backup($s1, 'base', has_streaming => 1);
my $sp = PostgreSQL::Test::Cluster::get_free_port();
my $sap = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf',
	"pool_health.http_listen = '127.0.0.1:$sp'\npool_health.agent_listen = '127.0.0.1:$sap'\nlisten_addresses = '127.0.0.1'");
$standby->start;
$s1->safe_psql('postgres', 'CREATE TABLE t AS SELECT 1 AS x');
$s1->wait_for_catchup($standby);
ok(ph_wait_for(10, sub { ph_http_code($sp, '/replica') eq '200' }), 'standby: /replica 200');
is(ph_http_code($sp, '/primary'), '503', 'standby: /primary 503');
ok(ph_wait_for(10, sub { ph_http_code($sp, '/replica?lag=16MB') eq '200' }), 'standby, streaming: /replica?lag=16MB 200');
is(ph_http_code($sp, '/readyz?max_lag=10s'), '200', '/readyz?max_lag=10s 200');
($status, $json) = ph_http_json($sp, '/replica?lag=1MB');
is($status, '200', '/replica?lag=1MB: 200');
like("$json->{role} $json->{lag_bytes} $json->{lag_seconds}", qr/^replica \d+ [\d.]+$/, 'role replica, lag_bytes and lag_seconds');
is(ph_http_code($sp, '/replica?lag=abc'), '400', '/replica?lag=abc: 400');
like(ph_agent_line($sap), qr/^up (ready )?\d+% maxconn:\d+\n$/, 'standby: the agent answers up');

# replay held back (recovery_min_apply_delay): a commit received, not
# replayed; the lag as an interval grows, in bytes it stays within 16MB
$standby->append_conf('postgresql.conf', "recovery_min_apply_delay = '1h'");
$standby->reload;
$s1->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
ok(ph_wait_for(15, sub { ph_http_code($sp, '/replica?lag=1s') eq '503' }),
	'replay delayed: /replica?lag=1s 503 once the last replayed commit is older than 1 s');
is(ph_http_code($sp, '/readyz?max_lag=1s'), '503', '/readyz?max_lag=1s 503');
is(ph_http_code($sp, '/replica?lag=16MB'), '200', '/replica?lag=16MB 200 (the lag in bytes, as Patroni measures it, is what was not received)');
is(ph_http_code($sp, '/replica?lag=1h'), '200', '/replica?lag=1h 200');
($status, $json) = ph_http_json($sp, '/replica?lag=1s&verbose');
cmp_ok($json->{lag_seconds}, '>=', 1, "lag_seconds $json->{lag_seconds}, at least 1 s (ms precision)");
ok((grep { $_ eq 'the lag exceeds max_lag (interval)' } @{ $json->{reasons} }), 'the reason says so');
$s1->stop;
ok(ph_wait_for(15, sub { ph_http_code($sp, '/replica?lag=1GB') eq '503' }), 'its primary gone: /replica?lag=1GB 503 (lag unknown)');
($status, $json) = ph_http_json($sp, '/replica?lag=1GB&verbose');
ok((grep { /the lag is unknown/ } @{ $json->{reasons} }), 'because the lag is unknown');
ok(!defined $json->{lag_bytes} && exists $json->{lag_bytes}, 'lag_bytes null');
is(ph_http_code($sp, '/replica'), '200', '/replica without a lag maximum: 200');
$standby->stop;
$s2->stop;

# agent_listen without http_listen: a WARNING, no listener
my $lone_port = PostgreSQL::Test::Cluster::get_free_port();
my $s3 = ph_node('s3', conf => "pool_health.agent_listen = '127.0.0.1:$lone_port'");
like(slurp_file($s3->logfile), qr/WARNING:  pool_health.agent_listen is ignored: pool_health.http_listen is empty/,
	'agent_listen without http_listen: a WARNING at startup');
is(ph_agent_line($lone_port), undef, 'and nothing answers on its port');
$s3->stop;

done_testing();
