# Login safety: whatever is in pool_health.policies, logins fail open.
#  1. a row that bypassed every check (constraint dropped by the owner,
#     triggers bypassed with session_replication_role = replica) with an
#     invalid LIKE pattern: left out with one WARNING, listed in
#     policy_errors; superusers and ordinary roles log in; usage, status(),
#     ping() and metrics() work.
# 13. quotas see the application_name the session will have: set in
#     "options" (-c, --), longer than 63 bytes (truncated as the server
#     truncates it), with bytes the server replaces (non-ASCII).
# Superusers and protected roles are admitted before any policy is looked
# at, even with every quota full.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::UNIX;
use PoolHealthTest;

my $node = ph_node('login', conf => "max_connections = 30\npool_health.sample_interval = '100ms'");
my $superuser = $node->safe_psql('postgres', 'SELECT current_user');
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN; CREATE ROLE ops LOGIN');

sub policies_in_effect
{
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s");
}

sub try_connect { return ph_try_connect($node, @_); }

# raw_connect(user, options, name => value...): a connection whose startup
# packet has exactly these parameters (psql and libpq always send an
# application_name); the socket when admitted (kept open), else the error
# message
my @raw;
sub raw_connect
{
	my ($user, $options, %more) = @_;
	my $sock = IO::Socket::UNIX->new(
		Type => SOCK_STREAM(),
		Peer => $node->host . '/.s.PGSQL.' . $node->port) or die "connect: $!";
	my $params = "user\0$user\0database\0postgres\0";
	$params .= "options\0$options\0" if defined $options;
	$params .= "$_\0$more{$_}\0" for sort keys %more;
	$params .= "\0";
	print $sock pack('NN', 8 + length($params), 196608) . $params;
	$sock->flush;
	for (;;)
	{
		my ($type, $len, $body);
		$sock->read($type, 1) == 1 or return 'connection closed';
		$sock->read($len, 4);
		$sock->read($body, unpack('N', $len) - 4);
		if ($type eq 'Z')
		{
			push @raw, $sock;
			return undef;
		}
		if ($type eq 'E')
		{
			my %f = map { substr($_, 0, 1) => substr($_, 1) } grep { length } split /\0/, $body;
			return "$f{S}:  $f{M}";
		}
	}
}

sub close_all
{
	close($_) for @raw;
	@raw = ();
	ph_close_all();
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE usename IN ('app', 'ops', 'bob')");
}

# --- 1. an unusable row cannot lock anyone out ----------------------------------------------
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
	ALTER TABLE pool_health.policies DROP CONSTRAINT application_name_is_a_like_pattern;
	SET session_replication_role = replica;
	INSERT INTO pool_health.policies (name, application_name, max_connections, refuse_at)
	VALUES ('bad', '%\', 1, 'degraded');
	RESET session_replication_role;
	-- a valid edit makes the worker compile the table now
	INSERT INTO pool_health.policies (name, application_name, idle_timeout)
	VALUES ('other', 'nothing-matches-this', '1h');
});
ok(policies_in_effect(), 'the policies are compiled again');
is( $node->safe_psql('postgres', q{SELECT name || ': ' || error FROM pool_health.policy_errors}),
	q{bad: invalid application_name pattern E'%\\\\': LIKE pattern must not end with escape character},
	'the bad row is left out and listed in policy_errors');
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: policy "bad" is not in effect: invalid application_name pattern/,
		$log_offset),
	'with a WARNING');
is(try_connect('web', $superuser), undef, 'a superuser logs in');
is(try_connect('web', 'app'), undef, 'an ordinary role logs in');
is(try_connect('web', 'app'), undef, 'again: the bad quota of 1 does not apply');
is( $node->safe_psql('postgres', 'SELECT count(*) > 0 FROM pool_health.usage', extra_params => [ '-U', 'app' ]),
	't', 'usage works');
is( $node->safe_psql('postgres',
		q{SELECT (pool_health.status()->'policies'->'errors'->0->>'name') || ':' || pool_health.ping()::text || ':' || (pool_health.metrics() LIKE '%pool_health_policy_errors 1%')::text},
		extra_params => [ '-U', 'app' ]),
	'bad:true:true', 'status() names the error, ping() and metrics() work');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.sessions WHERE policy = 'bad'"),
	'0', 'the views evaluate without it');
$node->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
my $warnings = () = slurp_file($node->logfile, $log_offset) =~ /policy "bad" is not in effect/g;
is($warnings, 1, 'the WARNING is logged once, not at each compile');
close_all();
$node->safe_psql('postgres', q{
	DELETE FROM pool_health.policies;
	ALTER TABLE pool_health.policies ADD CONSTRAINT application_name_is_a_like_pattern
	    CHECK (octet_length(application_name) <= 255 AND application_name !~ '(^|[^\\\\])(\\\\\\\\)*\\\\$');
});

# --- 13. the application_name the session will have -------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('report', 'report%', 1)});
ok(policies_in_effect(), 'a quota of 1 for report%');
is(raw_connect('app', '-c application_name=report-a'), undef,
	'the first report connection (name in options -c) is admitted');
like(raw_connect('app', '-c application_name=report-b'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'a second one with the name in options (-c) is refused');
like(raw_connect('app', '--application_name=report-c'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'with --name=value too');
like(raw_connect('app', '-c APPLICATION-NAME=report-d'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'names are read as the server reads them (case, dash)');
like(raw_connect('app', '-c work_mem=1MB -capplication_name=report-e'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'among other settings, and with -cname=value');
like(raw_connect('app', undef, Application_Name => 'report-f'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'a startup parameter spelled Application_Name counts (the server reads it case-insensitively)');
is(raw_connect('app', '-c application_name=x\\', APPLICATION_NAME => 'web-2'), undef,
	'the last spelling in the packet wins over options');
is(try_connect('web', 'app', '-c application_name=report-e'), undef,
	'the startup packet wins over options, as in the server');
is( $node->safe_psql('postgres',
		"SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_activity WHERE usename = 'app'"),
	'report-a,web,web-2', 'the sessions have those names');
close_all();

# a name the client does not send: ALTER ROLE ... SET applies, as in the server
$node->safe_psql('postgres', q{
	CREATE ROLE bob LOGIN;
	ALTER ROLE bob SET application_name = 'report-bob';
	UPDATE pool_health.policies SET comment = 'the worker reads the settings again' WHERE name = 'report';
});
ok(policies_in_effect(), 'the worker has read the settings again');
is(raw_connect('bob', undef), undef, 'bob, sending no name, is admitted');
is($node->safe_psql('postgres', "SELECT application_name FROM pg_stat_activity WHERE usename = 'bob'"),
	'report-bob', 'and named by ALTER ROLE ... SET');
like(raw_connect('bob', undef), qr/FATAL:  too many connections for pool_health policy "report"/,
	'a second such session is counted at login against the report quota');
close_all();

my $long = 'L' . ('x' x 62);		# 63 bytes
$node->safe_psql('postgres', qq{
	UPDATE pool_health.policies SET application_name = '$long' WHERE name = 'report'});
ok(policies_in_effect(), 'a quota of 1 for a 63-byte name, no wildcard');
is(try_connect($long . 'tail-beyond-63-bytes', 'app'), undef, 'a 83-byte name is admitted');
is( $node->safe_psql('postgres', "SELECT policy FROM pool_health.sessions WHERE application_name = '$long'"),
	'report', 'truncated to 63 bytes it is governed by the policy');
like(try_connect($long . 'other-tail', 'app'),
	qr/FATAL:  too many connections for pool_health policy "report"/,
	'and another long name with the same 63 bytes is counted against the same quota');
close_all();

# bytes the server replaces in application_name (non-ASCII): the policy
# written for the name the session shows governs it at login too
is(try_connect("caf\x{e9}-1", 'app'), undef, 'a non-ASCII application_name connects');
my $shown = $node->safe_psql('postgres', "SELECT application_name FROM pg_stat_activity WHERE usename = 'app'");
isnt($shown, "caf\x{e9}-1", "the server shows it as $shown");
close_all();
$node->safe_psql('postgres', qq{
	UPDATE pool_health.policies SET application_name = replace('$shown', '\\', '\\\\') WHERE name = 'report'});
ok(policies_in_effect(), 'a quota of 1 for that name');
is(try_connect("caf\x{e9}-1", 'app'), undef, 'the first is admitted');
like(try_connect("caf\x{e9}-1", 'app'), qr/FATAL:  too many connections for pool_health policy "report"/,
	'the second is refused: login saw the name the server keeps');
close_all();

# --- superusers and protected roles: admitted before any policy ----------------------------
$node->safe_psql('postgres', q{
	UPDATE pool_health.policies SET application_name = '%', refuse_at = 'degraded' WHERE name = 'report'});
ok(policies_in_effect(), 'every connection governed by a quota of 1');
is(try_connect('x', 'app'), undef, 'one ordinary connection');
like(try_connect('x', 'app'), qr/too many connections/, 'the next is refused');
ph_set($node, 'pool_health.protected_roles' => 'ops');
is(try_connect('x', 'ops'), undef, 'a protected role is admitted');
is(try_connect('x', $superuser), undef, 'a superuser is admitted');
is( $node->safe_psql('postgres', "SELECT admitted FROM pool_health.usage_by_policy WHERE policy = 'report'"),
	'1', 'neither is counted against the quota');
close_all();

unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$node->stop;
done_testing();
