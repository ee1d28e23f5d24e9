# Admission control with real connections: a policy's quota refuses the
# next connection of that application with SQLSTATE 53300 and the policy's
# name, others are admitted, superusers always; counts go down when
# sessions end; refuse_at sheds load at a level; admission off refuses
# nothing; policy edits apply without restart.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# the SQLSTATE of refusals is checked in the server log (%e)
my $node = ph_node('admission', conf => "max_connections = 23\npool_health.sample_interval = '200ms'\nlog_line_prefix = '%m [%p] %e %q%a '");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE ops LOGIN;
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('reporting', 'report%', 3);
});

# wait until the worker enforces what was committed
sub policies_in_effect
{
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s");
}

# undef when admitted (and kept open), else the error
sub try_connect { return ph_try_connect($node, @_); }
sub close_all { ph_close_all(); }

ok(policies_in_effect(), 'the quota policy is in effect');

# --- the quota -----------------------------------------------------------------
is(try_connect('report-1', 'app'), undef, 'report 1 of 3 admitted');
is(try_connect('report-2', 'app'), undef, 'report 2 of 3 admitted');
is(try_connect('report-3', 'app'), undef, 'report 3 of 3 admitted');
my $log_offset = -s $node->logfile;
my $err = try_connect('report-4', 'app');
like($err, qr/FATAL:  too many connections for pool_health policy "reporting"/,
	'the 4th report connection is refused, naming the policy');
ok($node->wait_for_log(qr/ 53300 .*FATAL:  too many connections for pool_health policy "reporting"/, $log_offset),
	'with SQLSTATE 53300');
like($err, qr/DETAIL:  Connections governed by the policy: 3 open, at most 3 allowed \(max_connections\)\./,
	'the detail gives the counts');
like($err, qr/HINT:  .*raise max_connections of policy "reporting" in pool_health.policies/,
	'the hint says what to change');
is(try_connect('web-1', 'app'), undef, 'another application is admitted');
is(try_connect('report-5', $node->safe_psql('postgres', 'SELECT current_user')), undef,
	'a superuser of the same application is admitted');
is( $node->safe_psql('postgres',
		"SELECT connections || ':' || max_connections || ':' || refused FROM pool_health.usage_by_policy WHERE policy = 'reporting'"),
	'4:3:1', 'usage_by_policy: 4 governed (with the superuser), quota 3, 1 refused');
is( $node->safe_psql('postgres',
		"SELECT (q->>'refused')::int || ':' || (s->'worker'->>'refusals') FROM pool_health.status() s, jsonb_array_elements(s->'policies'->'quotas') q WHERE q->>'policy' = 'reporting'"),
	'1:1', 'status() shows the refusal');
ok( $node->poll_query_until('postgres',
		"SELECT sum(refused) = 1 FROM pool_health.get_history(now() - interval '1 minute', NULL, 'raw')"),
	'the history records it');
is( $node->safe_psql('postgres',
		"SELECT policy || ':' || quota FROM pool_health.usage_by_application WHERE application_name = 'report-1'"),
	'reporting:3', 'usage_by_application shows the governing policy and its quota');

# counts go down when sessions end (by exit and by termination)
close_all();
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 0 FROM pool_health.usage_by_policy WHERE policy = 'reporting'"),
	'the counter goes back to 0 when the sessions exit');
is(try_connect('report-1', 'app'), undef, 'and reports are admitted again');
my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE application_name = 'report-1'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 0 FROM pool_health.usage_by_policy WHERE policy = 'reporting'"),
	'also when a session is terminated');
close_all();

# --- policy edits apply without restart ---------------------------------------------
$node->safe_psql('postgres', "UPDATE pool_health.policies SET max_connections = 1 WHERE name = 'reporting'");
ok(policies_in_effect(), 'the edit is in effect');
is(try_connect('report-1', 'app'), undef, '1 of 1 admitted');
like(try_connect('report-2', 'app'), qr/FATAL:  too many connections for pool_health policy "reporting"/,
	'the lowered quota refuses the 2nd');
close_all();

# --- refuse_at: shed load at a level ------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, refuse_at) VALUES
	    ('batch', 'batch%', 'critical'),
	    ('api', 'api%', NULL);
});
ok(policies_in_effect(), 'refuse_at policies in effect');
# 23 slots, 3 reserved: 20 usable; critical at 90 %: 18 client sessions
is(try_connect("api-$_", 'app'), undef, "api connection $_") for 1 .. 17;
# the 18th, held open, so that the level does not depend on whether the
# test's own short connections are counted when the worker samples
my ($pin) = ph_session($node);
ok( $node->poll_query_until('postgres',
		"SELECT status->>'level' = 'critical' FROM pool_health.status() status"),
	'the server is critical');
ok( $node->poll_query_until('postgres',
		"SELECT level = 'critical' FROM pool_health.get_history(now() - interval '1 second', NULL, 'raw') ORDER BY at DESC LIMIT 1"),
	'and the worker has seen it');
$log_offset = -s $node->logfile;
like(try_connect('batch-1', 'app'),
	qr/FATAL:  connection refused by pool_health policy "batch": server connection health is critical/,
	'a refuse_at = critical connection is refused');
ok($node->wait_for_log(qr/ 53300 .*FATAL:  connection refused by pool_health policy "batch"/, $log_offset),
	'with SQLSTATE 53300');
$pin->quit;
is(try_connect('api-18', 'app'), undef, 'a connection of a policy without refuse_at is admitted');

ph_set($node, 'pool_health.protected_roles' => 'ops');
is(try_connect('batch-ops', 'ops'), undef, 'a role listed in protected_roles is never refused');

# --- admission off refuses nothing --------------------------------------------------
ph_set($node, 'pool_health.admission' => 'off');
# the check itself runs in a new session: pg_reload_conf reaches new backends at start
is(try_connect('batch-2', 'app'), undef, 'with pool_health.admission = off nothing is refused');
close_all();
$node->stop;
done_testing();
