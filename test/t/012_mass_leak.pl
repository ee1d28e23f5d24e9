# 500 sessions leak a transaction at once under one policy: every one is
# ended and audited exactly once, no session of another application is
# touched, and the server stays responsive meanwhile.
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

# holders of 100 connections each (a backend opens only so many files)
my @holders;
for my $h (0 .. 5)
{
	my ($psql) = ph_session($node);
	my $app = $h < 5 ? 'leaky' : 'bystander';
	my $n = $h < 5 ? 100 : 50;
	$psql->query_safe(
		"SELECT count(dblink_connect('c' || i, '$conninfo application_name=$app-' || i)) FROM generate_series(1, $n) i");
	push @holders, $psql;
}
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'leaky-%'"),
	'500', '500 leaky sessions');
my @bystanders = split /\n/, $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'bystander-%' ORDER BY pid");
is(scalar(@bystanders), 50, '50 bystanders of another application');

# all leak at once (within a fraction of a second); bystanders idle in transaction too
for my $h (0 .. 5)
{
	my $n = $h < 5 ? 100 : 50;
	$holders[$h]->query_until(qr/^$/,
		"SELECT count(dblink_exec('c' || i, 'BEGIN')) FROM generate_series(1, $n) i;\n");
}

# responsiveness while the worker ends them
my $slowest = 0;
my $done = 0;
for (1 .. 600)
{
	my $t0 = time;
	my $left = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'leaky-%'");
	my $elapsed = time - $t0;
	$slowest = $elapsed if $elapsed > $slowest;
	if ($left eq '0') { $done = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($done, 'all 500 leaky sessions are ended');
ok($slowest < 5, sprintf('the server answered every query meanwhile (slowest %.3fs)', $slowest));
is( $node->safe_psql('postgres',
		"SELECT count(*) || ':' || count(DISTINCT pid) || ':' || bool_and(success) FROM pool_health.terminations WHERE policy = 'leaky'"),
	'500:500:true', 'exactly one audit row per termination');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid IN (" . join(',', @bystanders) . ") AND state = 'idle in transaction'"),
	'50', 'no bystander was touched');
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminations WHERE application_name NOT LIKE 'leaky-%'"),
	'0', 'nor audited');
$_->quit for @holders;
$node->stop;
done_testing();
