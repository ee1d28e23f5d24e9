# Checks: after max_connections was lowered so that the reserves no
# longer fit, an UPDATE that does not raise the sum of the enabled
# reserves (lowering one, editing a comment) is accepted.
#
# Attack on issue 23 (bad input at INSERT/UPDATE, a reserve changed):
# validate_policy() checks the sum of the reserves on every UPDATE of a
# reserved row against the usable connections of now.  After a restart
# with a lower max_connections the reserves no longer fit (the worker
# leaves a policy out, as it should), and then the operator cannot repair
# them step by step: LOWERING a reserve is refused ("does not fit") as
# long as the sum stays above the new limit, and so is any edit of a
# reserved row that does not touch its reserve (a comment).  A change
# that does not raise the sum of the reserves must be accepted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $node = ph_node('lowerafter',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n");
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, priority, application_name, reserve_connections)
	VALUES ('a', 2, 'a%', 9), ('b', 1, 'b%', 8);
});

# the server now has 15 slots: 12 usable, 17 reserved
$node->append_conf('postgresql.conf', "max_connections = 15\n");
$node->restart;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pool_health.policy_errors WHERE name = 'b' AND error LIKE '%does not fit%'"),
	'the worker leaves b out: 9 + 8 do not fit in 12');

my ($stdout, $stderr);
my $rc = $node->psql('postgres',
	"UPDATE pool_health.policies SET reserve_connections = 5 WHERE name = 'a'",
	stdout => \$stdout, stderr => \$stderr);
is($rc, 0, 'lowering a reserve (9 to 5: 17 reserved to 13) is accepted')
  or diag($stderr);

$rc = $node->psql('postgres',
	"UPDATE pool_health.policies SET comment = 'nightly batch' WHERE name = 'b'",
	stdout => \$stdout, stderr => \$stderr);
is($rc, 0, 'a comment on a reserved row is accepted') or diag($stderr);

$rc = $node->psql('postgres',
	"UPDATE pool_health.policies SET reserve_connections = 3 WHERE name = 'b'",
	stdout => \$stdout, stderr => \$stderr);
is($rc, 0, 'then lowering b to 3 is accepted') or diag($stderr);

$node->stop;
done_testing();
