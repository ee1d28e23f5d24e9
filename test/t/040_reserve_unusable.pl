# Checks: a reserve no login can use (a superuser role written past the
# trigger, a role made superuser later, a role in
# pool_health.protected_roles) keeps no slot from other applications: the
# worker keeps the policy without its reserve (a policy_errors row and a
# WARNING), and the trigger refuses a reserve for a protected role.
#
# Attack on issue 23 (bad input that bypasses validation): a reserve that
# no login can ever use.  Superusers and pool_health.protected_roles are
# neither counted nor refused at login, so a reserve_connections of a
# policy matching only such a role stays wholly unused forever and takes
# its slots from every other application.  validate_policy() refuses a
# reserve for a superuser role at INSERT/UPDATE ("Superusers are never
# counted nor refused by admission control"), but
#  1. a row written with session_replication_role = replica (no CHECK
#     constraint covers it, the worker does not check it at compile);
#  2. a role made superuser after the row was written;
#  3. a role listed in pool_health.protected_roles (not checked at all)
# each keep 5 of the 17 usable slots from everyone, for nobody.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $node = ph_node('unusable',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '10ms'\n"
	  . "pool_health.protected_roles = 'guard'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE boss LOGIN SUPERUSER;
	CREATE ROLE ops LOGIN;
	CREATE ROLE guard LOGIN;
});

my $version = 0;
sub published
{
	my $ok = $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running'
		   AND (s->'policies'->>'version')::int > $version FROM pool_health.status() s");
	$version = $node->safe_psql('postgres',
		"SELECT pool_health.status()->'policies'->>'version'");
	return $ok;
}

# 12 sessions of an application no policy governs: 17 - 12 = 5 free
my @held;
for (1 .. 12)
{
	my ($psql) = ph_app_session($node, 'other', role => 'app');
	push @held, $psql;
}

# a 13th login of that application, closed again
sub thirteenth
{
	my $err = ph_try_connect($node, 'other', 'app');
	ph_close_all();
	return $err;
}
is(thirteenth(), undef, 'without a reserve, the 13th login is admitted');

# 1. a reserve for a superuser role, written past the trigger
$node->safe_psql('postgres', q{
	SET session_replication_role = replica;
	INSERT INTO pool_health.policies (name, role, reserve_connections)
	VALUES ('boss', 'boss', 5);
	RESET session_replication_role;
	-- an ordinary change, so that the worker reads the table again
	INSERT INTO pool_health.policies (name, application_name) VALUES ('bump1', 'bump1');
});
ok(published(), 'published');
my $err = thirteenth();
is($err, undef,
	'a reserve for a superuser role (written past the trigger) keeps no slot from others')
  or diag($err);
is($node->safe_psql('postgres',
	"SELECT error FROM pool_health.policy_errors WHERE name = 'boss'"),
	'in effect without its reserve_connections 5: role "boss" is a superuser, never counted nor refused at login',
	'policy_errors says the reserve of boss is left out');
ok($node->wait_for_log(qr/WARNING:  pool_health: policy "boss" is in effect without its reserve_connections 5/),
	'and the worker logs it once as a WARNING');
is($node->safe_psql('postgres',
	"SELECT reserve_connections FROM pool_health.usage_by_policy WHERE policy = 'boss'"),
	'0', 'usage_by_policy shows boss without a reserve');

# 2. a role made superuser after its reserve was accepted
$node->safe_psql('postgres', q{
	DELETE FROM pool_health.policies WHERE name = 'boss';
	INSERT INTO pool_health.policies (name, role, reserve_connections) VALUES ('ops', 'ops', 5);
	ALTER ROLE ops SUPERUSER;
	INSERT INTO pool_health.policies (name, application_name) VALUES ('bump2', 'bump2');
});
ok(published(), 'published');
$err = thirteenth();
is($err, undef,
	'a reserve for a role made superuser afterwards keeps no slot from others')
  or diag($err);

# 3. a reserve for a protected role: accepted at INSERT
$node->safe_psql('postgres', q{
	DELETE FROM pool_health.policies WHERE name = 'ops';
});
my ($stdout, $stderr);
$node->psql('postgres',
	"INSERT INTO pool_health.policies (name, role, reserve_connections) VALUES ('guard', 'guard', 5)",
	stdout => \$stdout, stderr => \$stderr);
ok(published(), 'published');
$err = thirteenth();
like($stderr, qr/ERROR:  policy "guard" cannot reserve connections for protected role "guard"/,
	'a reserve for a protected role is refused at INSERT');
is($err, undef, 'and keeps no slot from others') or diag($err);

# written past the trigger, the worker leaves that reserve out
$node->safe_psql('postgres', q{
	SET session_replication_role = replica;
	INSERT INTO pool_health.policies (name, role, reserve_connections)
	VALUES ('guard', 'guard', 5);
	RESET session_replication_role;
	INSERT INTO pool_health.policies (name, application_name) VALUES ('bump3', 'bump3');
});
ok(published(), 'published');
$err = thirteenth();
is($err, undef, 'a reserve for a protected role written past the trigger keeps no slot from others')
  or diag($err);
like($node->safe_psql('postgres',
	"SELECT error FROM pool_health.policy_errors WHERE name = 'guard'"),
	qr/in effect without its reserve_connections 5: role "guard" is in pool_health.protected_roles/,
	'policy_errors says so');

$_->quit for @held;
$node->stop;
done_testing();
