# Attack on issue 23 (exactness of reserves): SPEC "Headroom and storms":
# reserve_connections are "slots kept free for the sessions that policy
# matches".  The login path covers a login only by the reserve of the
# policy that GOVERNS it (highest priority).  When a higher-priority
# policy also matches the reserved application's sessions (here a quota
# on their role), the reserve is never used by anyone, and it refuses
# the very application it was made for:
#   FATAL: connection refused by pool_health policy "approle": the free
#   connections are reserved
#   DETAIL: 13 of 17 usable connections would be in use, leaving 4 free,
#   and reserve_connections keeps 5 free for other policies: policy "web"
#   reserves 5 and uses 0 of them.
# Nothing warns at INSERT or at compile (policy_errors) that the reserve
# is shadowed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $node = ph_node('shadowed',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '10ms'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE batch LOGIN;
	INSERT INTO pool_health.policies (name, priority, application_name, reserve_connections)
	VALUES ('web', 0, 'web%', 5);
	-- a generous quota on the role the web application logs in as
	INSERT INTO pool_health.policies (name, priority, role, max_connections)
	VALUES ('approle', 10, 'app', 100);
});
ok($node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running'
	   AND jsonb_array_length(s->'policies'->'quotas') = 2 FROM pool_health.status() s"),
	'web reserves 5 of 17; approle governs role app');

# 12 sessions of a batch job no policy governs: 5 slots left, the reserve
for (1 .. 12)
{
	my $err = ph_try_connect($node, 'batch-1', 'batch');
	is($err, undef, 'a batch session') or diag($err);
}

# the web application's sessions are the sessions web matches
my $refused = 0;
my $first_err;
for (1 .. 5)
{
	my $err = ph_try_connect($node, 'web-1', 'app');
	next unless defined $err;
	$refused++;
	$first_err //= $err;
}
is($refused, 0, 'the 5 web logins (matched by web, governed by approle) get the 5 reserved slots')
  or diag($first_err);

ph_close_all();
$node->stop;
done_testing();
