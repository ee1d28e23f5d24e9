# 500 sessions leak a transaction at once under one policy: every one is
# ended and audited exactly once, no session of another application is
# touched, and the server stays responsive meanwhile.
#
# Responsive means that an application's open session keeps getting
# answers.  500 backends exiting at once keep a 2-core machine busy for
# seconds whoever ends them: the test measures that first with PostgreSQL's
# own idle_in_transaction_session_timeout (slowest answer 0.9-1.4 s seen on
# the development machine), then with the policy (1.5-4.5 s seen: the
# worker also logs and audits every termination, and the exits are spread
# over as long).  A worker that blocked queries would exceed the bound.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;
use Time::HiRes qw(time);

my $node = ph_node('mass', conf => "max_connections = 600\nmax_files_per_process = 1000");
my $conninfo = 'dbname=postgres host=' . $node->host . ' port=' . $node->port . ' user=app';
$node->safe_psql('postgres', q{
	CREATE EXTENSION dblink;
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('leaky', 'leaky-%', '2s');
});
my ($monitor) = ph_session($node);    # an application's open connection

# holders(app, n, conninfo options): sessions holding n connections of
# application "app-i" between them, 100 each (a backend opens only so many files)
sub holders
{
	my ($app, $n, $options) = @_;
	my @holders;
	for (my $first = 1; $first <= $n; $first += 100)
	{
		my $last = $first + 99 < $n ? $first + 99 : $n;
		my ($psql) = ph_session($node);
		$psql->query_safe(
			"SELECT count(dblink_connect('$app-' || i, '$conninfo $options application_name=$app-' || i)) FROM generate_series($first, $last) i");
		push @holders, $psql;
	}
	return @holders;
}

# all the holders' connections begin a transaction, within a second or two
sub begin_all
{
	for my $psql (@_)
	{
		$psql->query_until(qr/^$/,
			"SELECT count(dblink_exec(c, 'BEGIN')) FROM unnest(dblink_get_connections()) c;\n");
	}
}

# the slowest answer the open session gets until no session of app is left
sub slowest_until_gone
{
	my ($app) = @_;
	my $slowest = 0;
	for (1 .. 600)
	{
		my $t0 = time;
		my $left = $monitor->query_safe(
			"SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '$app-%'");
		my $elapsed = time - $t0;
		$slowest = $elapsed if $elapsed > $slowest;
		return $slowest if $left eq '0';
		select(undef, undef, undef, 0.1);
	}
	return undef;
}

# --- the baseline: PostgreSQL's own timeout ends 500 sessions at once -----------
# (on a 2-core machine their exits alone keep it busy for seconds)
my @builtin = holders('builtin', 500, 'options=-cidle_in_transaction_session_timeout=2s');
begin_all(@builtin);
my $baseline = slowest_until_gone('builtin');
ok(defined $baseline, "idle_in_transaction_session_timeout ends 500 sessions");
$_->quit for @builtin;

# --- 500 leaky sessions under a policy, and 50 bystanders -------------------------
my @leaky = holders('leaky', 500, '');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'leaky-%'"),
	'500', '500 leaky sessions');
my @others = holders('bystander', 50, '');
my @bystanders = split /\n/, $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'bystander-%' ORDER BY pid");
is(scalar(@bystanders), 50, '50 bystanders of another application');

# all leak at once; the bystanders are idle in transaction too
begin_all(@leaky, @others);
my $slowest = slowest_until_gone('leaky');
ok(defined $slowest, 'all 500 leaky sessions are ended');
ok( $slowest < 10,
	sprintf('an open session got every answer meanwhile (slowest %.3fs; %.3fs with the built-in timeout)',
		$slowest, $baseline));
# each row is committed with the worker's pass, shortly after its signal
ok( $node->poll_query_until('postgres',
		"SELECT count(*) >= 500 FROM pool_health.terminations WHERE policy = 'leaky'"),
	'the terminations are audited');
is( $node->safe_psql('postgres',
		"SELECT count(*) || ':' || count(DISTINCT pid) || ':' || bool_and(success) FROM pool_health.terminations WHERE policy = 'leaky'"),
	'500:500:true', 'exactly one audit row per termination');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid IN (" . join(',', @bystanders) . ") AND state = 'idle in transaction'"),
	'50', 'no bystander was touched');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminations WHERE application_name NOT LIKE 'leaky-%'"),
	'0', 'nor audited');
$_->quit for @leaky, @others;
$monitor->quit;
$node->stop;
done_testing();
