# Checks: a reserve covers the logins its policy GOVERNS (README): when a
# higher-priority policy may govern the sessions a reserved policy
# matches, those logins are not covered (refused like any other while the
# reserve is unused), status()->'policies'->'warnings' names both
# policies, and the worker logs a WARNING once; given the higher priority,
# the reserved policy governs them and its reserve covers them.
#
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
	-- disjoint from web: application_name prefixes differ
	INSERT INTO pool_health.policies (name, priority, application_name, max_connections)
	VALUES ('batchq', 30, 'batch%', 100);
});
ok($node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running'
	   AND jsonb_array_length(s->'policies'->'quotas') = 3 FROM pool_health.status() s"),
	'web reserves 5 of 17; approle governs role app');

# 12 sessions of a batch job no policy governs: 5 slots left, the reserve
for (1 .. 12)
{
	my $err = ph_try_connect($node, 'batch-1', 'batch');
	is($err, undef, 'a batch session') or diag($err);
}

# the web application's sessions: matched by web, governed by approle
my $refused = 0;
my $first_err;
for (1 .. 5)
{
	my $err = ph_try_connect($node, 'web-1', 'app');
	next unless defined $err;
	$refused++;
	$first_err //= $err;
}
is($refused, 5,
	'the 5 web logins governed by approle are not covered by the reserve of web: refused');
like($first_err // '',
	qr/connection refused by pool_health policy "approle": the free connections are reserved.*policy "web" reserves 5 and uses 0 of them/s,
	'refused for the reserve of web');
is($node->safe_psql('postgres',
	"SELECT w->>'policy' || ' < ' || (w->>'shadowed_by') FROM jsonb_array_elements(pool_health.status()->'policies'->'warnings') w WHERE w ? 'shadowed_by'"),
	'web < approle', 'status() warns that approle shadows the reserve of web (batchq, application batch%, does not)');
ok($node->wait_for_log(qr/WARNING:  pool_health: the reserve of policy "web" does not cover the logins policy "approle" governs/),
	'the worker logs a WARNING naming both');

# a change elsewhere republishes the set: the WARNING is not repeated
my $version = $node->safe_psql('postgres', "SELECT pool_health.status()->'policies'->>'version'");
$node->safe_psql('postgres',
	"INSERT INTO pool_health.policies (name, application_name) VALUES ('other', 'other')");
ok($node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'version')::int > $version FROM pool_health.status() s"),
	'republished');
my $log = slurp_file($node->logfile);
my @warned = ($log =~ /the reserve of policy "web" does not cover/g);
is(scalar(@warned), 1, 'the WARNING is logged once');

# given the higher priority, web governs its sessions and its reserve covers them
$version = $node->safe_psql('postgres', "SELECT pool_health.status()->'policies'->>'version'");
$node->safe_psql('postgres', "UPDATE pool_health.policies SET priority = 20 WHERE name = 'web'");
ok($node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'version')::int > $version FROM pool_health.status() s"),
	'republished');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM jsonb_array_elements(pool_health.status()->'policies'->'warnings') w WHERE w ? 'shadowed_by'"),
	'0', 'no warning once web comes first');
# a role criterion and an application one are not provably disjoint:
# approle (now after web) does not shadow anything, web has no one before it
$refused = 0;
undef $first_err;
for (1 .. 5)
{
	my $err = ph_try_connect($node, 'web-1', 'app');
	next unless defined $err;
	$refused++;
	$first_err //= $err;
}
is($refused, 0, 'the 5 web logins, governed by web, get its 5 reserved slots')
  or diag($first_err);

ph_close_all();
$node->stop;
done_testing();
