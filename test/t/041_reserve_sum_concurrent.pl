# Checks: two transactions that each add a reserve fitting alone cannot
# both commit under READ COMMITTED: the second INSERT waits for the first
# (validate_policy()'s advisory lock) and is then refused with "does not
# fit" (SQLSTATE 23514).  Under SERIALIZABLE the second fails with a
# serialization failure (40001); under REPEATABLE READ the check cannot
# see a row committed after its snapshot: both commit, and the worker
# leaves the later policy out at compile (README, "Bad input").
#
# Attack on issue 23 (bad input at INSERT/UPDATE): "The sum of reserves
# cannot exceed the usable slots (a clear error at insert and at
# compile)".  validate_policy() summed the other rows it could see, so two
# transactions that each add a reserve fitting alone both committed
# (write skew): 10 + 10 reserved of 17 usable, no error at INSERT.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $node = ph_node('sumrace',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n");

# a first transaction adds a reserve of 10, not yet committed; a second
# adds another reserve of 10 at the same isolation level; returns the
# second's stderr
sub race
{
	my ($isolation, $n1, $n2) = @_;
	my ($first) = ph_session($node);
	$first->query_safe("BEGIN ISOLATION LEVEL $isolation");
	$first->query_safe(
		"INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('$n1', '$n1%', 10)");

	my ($stdout, $stderr) = ('', '');
	my $second = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', "BEGIN ISOLATION LEVEL $isolation",
		  '-c', "INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('$n2', '$n2%', 10)",
		  '-c', 'COMMIT' ],
		'>', \$stdout, '2>', \$stderr);
	# let it run its trigger (or block) before the first commits: wait
	# until it has finished, or waits for a lock
	my $deadline = time + 60;
	while (time < $deadline)
	{
		$second->pump_nb;
		last unless $second->pumpable;
		last if $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO pool_health.policies%''$n2''%' AND wait_event_type = 'Lock'") > 0;
		select(undef, undef, undef, 0.05);
	}
	$first->query_safe('COMMIT');
	$second->finish;
	$first->quit;
	return $stderr;
}

my $stderr = race('READ COMMITTED', 'w1', 'w2');
like($stderr, qr/ERROR:  reserve_connections of policy "w2" does not fit/,
	'READ COMMITTED: the second reserve of 10 is refused at INSERT: 20 of 17 usable would be reserved');
is($node->safe_psql('postgres',
	'SELECT string_agg(name, \',\' ORDER BY name) FROM pool_health.policies WHERE reserve_connections > 0'),
	'w1', 'the committed reserves fit in the usable connections');

$node->safe_psql('postgres', 'DELETE FROM pool_health.policies');
$stderr = race('SERIALIZABLE', 's1', 's2');
like($stderr, qr/ERROR:  could not serialize access/,
	'SERIALIZABLE: the second fails with a serialization failure');
is($node->safe_psql('postgres',
	'SELECT string_agg(name, \',\' ORDER BY name) FROM pool_health.policies WHERE reserve_connections > 0'),
	's1', 'only the first reserve is committed');

$node->safe_psql('postgres', 'DELETE FROM pool_health.policies');
$stderr = race('REPEATABLE READ', 'r1', 'r2');
is($stderr, '', 'REPEATABLE READ: the second does not see the first row, and commits');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pool_health.policy_errors WHERE name = 'r2' AND error LIKE '%does not fit%'"),
	'the worker leaves the later policy out (policy_errors)');
is($node->safe_psql('postgres',
	"SELECT string_agg(policy, ',' ORDER BY policy) FROM pool_health.usage_by_policy WHERE reserve_connections > 0"),
	'r1', 'only r1 reserves in the policies in effect');

$node->stop;
done_testing();
