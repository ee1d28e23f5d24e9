# Checks: two transactions that each add a reserve fitting alone cannot
# both commit: the second INSERT waits for the first (validate_policy()'s
# advisory lock) and is then refused with "does not fit" (SQLSTATE 23514).
# Under REPEATABLE READ the check cannot see rows committed after the
# snapshot: the worker leaves the later policy out at compile (README).
#
# Attack on issue 23 (bad input at INSERT/UPDATE): "The sum of reserves
# cannot exceed the usable slots (a clear error at insert and at
# compile)".  validate_policy() sums the other rows it can see, so two
# transactions that each add a reserve fitting alone both commit (write
# skew): 10 + 10 reserved of 17 usable, no error at INSERT; the worker
# then leaves one policy out (policy_errors).  The check needs the rows
# of concurrent writers (a lock on the table, or on the reserves, taken
# before the sum).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $node = ph_node('sumrace',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n");

# a first transaction adds a reserve of 10, not yet committed
my ($first) = ph_session($node);
$first->query_safe('BEGIN');
$first->query_safe(
	"INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('w1', 'w1%', 10)");

# a second one adds another reserve of 10 (it may wait for the first)
my ($stdout, $stderr) = ('', '');
my $second = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c',
	  "INSERT INTO pool_health.policies (name, application_name, reserve_connections) VALUES ('w2', 'w2%', 10)" ],
	'>', \$stdout, '2>', \$stderr);
# let it run its trigger (or block) before the first commits: wait until
# it has finished, or waits for a lock
my $deadline = time + 60;
while (time < $deadline)
{
	$second->pump_nb;
	last unless $second->pumpable;
	last if $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO pool_health.policies%''w2''%' AND wait_event_type = 'Lock'") > 0;
	select(undef, undef, undef, 0.05);
}
$first->query_safe('COMMIT');
$second->finish;

like($stderr, qr/reserve_connections of policy "w2" does not fit/,
	'the second reserve of 10 is refused at INSERT: 20 of 17 usable would be reserved');
is($node->safe_psql('postgres',
	'SELECT sum(reserve_connections) <= 17 FROM pool_health.policies WHERE enabled'),
	't', 'the committed reserves fit in the usable connections');

$first->quit;
$node->stop;
done_testing();
