# Checks: when a reserved policy's match changes while sessions it
# governed are connected, its reserve counts as wholly unused until the
# worker has re-homed those sessions: no other login is admitted into it,
# and the policy's new application then finds its reserved slots.
#
# Attack on issue 23 (reserve_connections changed while sessions are
# connected): a reserved policy's counter is kept by name across edits,
# so when the policy's match columns change, the counter still holds the
# sessions of the OLD match until the worker re-homes them (two samples
# later).  Meanwhile the reserve looks used (reserve_unused 0) although no
# session of the policy is connected, and other logins are admitted into
# it: they keep the slots, and the reserved application is then locked
# out by the server ("remaining connection slots are reserved").
# SPEC "Headroom and storms": a login no reserve covers is refused when
# admitting it would leave fewer free usable slots than the reserves
# still unused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable; a slow sampling so that the
# window before the worker re-homes the sessions is a few seconds wide
my $node = ph_node('matchchange',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '5s'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, reserve_connections)
	VALUES ('web', 'web%', 5);
	INSERT INTO pool_health.policies (name, application_name) VALUES ('batch', 'batch%');
});

sub in_effect
{
	my ($cond) = @_;
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s")
	  && $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.usage_by_policy WHERE $cond");
}
ok(in_effect("policy = 'web' AND reserve_connections = 5"), 'web reserves 5 of 17');

# 5 web sessions (the whole reserve in use) and 7 batch ones: 12 of 17
for (1 .. 5)
{
	my $err = ph_try_connect($node, 'web-1', 'app');
	is($err, undef, 'a web session') or diag($err);
}
for (1 .. 7)
{
	my $err = ph_try_connect($node, 'batch-1', 'app');
	is($err, undef, 'a batch session') or diag($err);
}
is($node->safe_psql('postgres',
	"SELECT admitted, reserve_unused FROM pool_health.usage_by_policy WHERE policy = 'web'"),
	'5|0', 'web uses its whole reserve');

# the web policy now governs another application; none of its sessions
# is connected: its reserve of 5 is unused, and 12 + 5 = 17 slots are
# taken or kept
my $version = $node->safe_psql('postgres',
	"SELECT pool_health.status()->'policies'->>'version'");
$node->safe_psql('postgres',
	"UPDATE pool_health.policies SET application_name = 'api%' WHERE name = 'web'");
$node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'in_effect')::bool AND (s->'policies'->>'version')::int > $version FROM pool_health.status() s")
  or die 'the change was not published';

my $admitted = 0;
for (1 .. 5)
{
	$admitted++ unless defined ph_try_connect($node, 'batch-1', 'app');
}
is($admitted, 0,
	'no batch login is admitted into the unused reserve of web (12 in use + 5 reserved = 17)');

# once the worker has re-homed the old web sessions, the reserved
# application must find its slots
ok($node->poll_query_until('postgres',
	"SELECT admitted = 0 FROM pool_health.usage_by_policy WHERE policy = 'web'"),
	'the old web sessions are no longer counted in web');
my $err = ph_try_connect($node, 'api-1', 'app');
is($err, undef, 'a login of the new web application gets a slot of its reserve')
  or diag($err);

ph_close_all();
$node->stop;
done_testing();
