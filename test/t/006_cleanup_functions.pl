# The functions for psql and schedulers: terminate_idle_in_transaction(),
# terminate_idle(), reclaim() and cleanup(), with enforcement off: they act
# when called, audit like the worker, and never let a role end a session
# it could not end with pg_terminate_backend().
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('functions', conf => "max_connections = 23\npool_health.enforce = off");
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE helper LOGIN IN ROLE pg_signal_backend;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'web%', '1s');
});

# --- enforce = off: the worker leaves it, cleanup() acts -----------------------
my ($leaker, $leaker_pid) = ph_app_session($node, 'web-1', role => 'bob', on_error_stop => 0);
$leaker->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres',
		"SELECT leak = 'idle_in_transaction' AND idle_for > '1.2s' FROM pool_health.sessions WHERE pid = $leaker_pid"),
	'past its limit');
ok(ph_alive($node, $leaker_pid), 'with enforce = off the worker does not end it');
is( $node->safe_psql('postgres',
		"SELECT pid || ':' || policy || ':' || dry_run || ':' || (success IS NULL) FROM pool_health.cleanup(dry_run => true)"),
	"$leaker_pid:web:true:true", 'cleanup(dry_run => true) returns what it would do');
ok(ph_alive($node, $leaker_pid), 'and does nothing');
is( $node->safe_psql('postgres',
		"SELECT pid || ':' || policy || ':' || action || ':' || success FROM pool_health.cleanup()"),
	"$leaker_pid:web:terminate:true", 'cleanup() ends it');
ok(ph_gone($node, $leaker_pid), 'the session is gone');
is( $node->safe_psql('postgres',
		"SELECT string_agg(source || '/' || requested_by || '/' || dry_run, ',' ORDER BY id) FROM pool_health.terminations WHERE pid = $leaker_pid"),
	'cleanup/postgres/true,cleanup/postgres/false', 'both calls are audited, with who asked');

# --- terminate_idle_in_transaction() and terminate_idle() ------------------------------
my ($old_iit, $old_iit_pid) = ph_app_session($node, 'report', role => 'bob', on_error_stop => 0);
$old_iit->query_safe('BEGIN; SELECT 1;');
my ($old_idle, $old_idle_pid) = ph_app_session($node, 'report', role => 'bob', on_error_stop => 0);
$node->poll_query_until('postgres',
	"SELECT min(idle_for) > '1s' FROM pool_health.sessions WHERE pid IN ($old_iit_pid, $old_idle_pid)");
my ($young, $young_pid) = ph_app_session($node, 'report', role => 'bob');
$young->query_safe('BEGIN; SELECT 1;');
is( $node->safe_psql('postgres',
		"SELECT string_agg(pid::text || ':' || (policy IS NULL), ',') FROM pool_health.terminate_idle_in_transaction('1s')"),
	"$old_iit_pid:true", 'terminate_idle_in_transaction(1s) ends only the older one, with no policy');
is( $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',') FROM pool_health.terminate_idle('1s')"),
	"$old_idle_pid", 'terminate_idle(1s) ends the idle one');
ok(ph_gone($node, $old_iit_pid) && ph_gone($node, $old_idle_pid), 'both are gone');
ok(ph_alive($node, $young_pid), 'the younger session survives');
$young->query_safe('ROLLBACK');

# superusers are never touched by the manual functions
my ($super, $super_pid) = ph_app_session($node, 'psql-admin');
$super->query_safe('BEGIN; SELECT 1;');
$node->poll_query_until('postgres', "SELECT idle_for > '0.2s' FROM pool_health.sessions WHERE pid = $super_pid");
is($node->safe_psql('postgres', "SELECT count(*) FROM pool_health.terminate_idle_in_transaction('0.1s')"),
	'0', 'a superuser session is not ended by terminate_idle_in_transaction()');
$super->query_safe('ROLLBACK');

# --- an unprivileged role cannot end others' sessions through any function -------
my ($bobs, $bobs_pid) = ph_app_session($node, 'web-bob', role => 'bob');
$bobs->query_safe('BEGIN; SELECT 1;');
my ($bobs_idle, $bobs_idle_pid) = ph_app_session($node, 'idle-bob', role => 'bob');
$node->poll_query_until('postgres',
	"SELECT min(idle_for) > '1.2s' FROM pool_health.sessions WHERE pid IN ($bobs_pid, $bobs_idle_pid)");
for my $call ("pool_health.cleanup()", "pool_health.terminate_idle_in_transaction('0.1s')",
	"pool_health.terminate_idle('0.1s')", "pool_health.reclaim(0)")
{
	my ($ret, $out, $err) = $node->psql('postgres', "SELECT count(*) FROM $call",
		extra_params => [ '-U', 'alice' ]);
	is($out, '0', "alice ends nothing through $call");
	like($err, qr/NOTICE:  \d+ sessions? (was|were) skipped: you could not end (it|them) with pg_terminate_backend\(\)/,
		"and is told why ($call)");
}
ok(ph_alive($node, $bobs_pid) && ph_alive($node, $bobs_idle_pid), "bob's sessions survive");
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM pool_health.terminations',
	extra_params => [ '-U', 'alice' ]);
like($err, qr/permission denied for table terminations/, 'alice cannot read the audit table');
($ret, $out, $err) = $node->psql('postgres', "DELETE FROM pool_health.policies",
	extra_params => [ '-U', 'alice' ]);
like($err, qr/permission denied for table policies/, 'nor change the policies');

# alice may end her own sessions, pg_signal_backend members anyone's but superusers'
my ($alices, $alices_pid) = ph_app_session($node, 'web-alice', role => 'alice');
$alices->query_safe('BEGIN; SELECT 1;');
$node->poll_query_until('postgres', "SELECT idle_for > '1.2s' FROM pool_health.sessions WHERE pid = $alices_pid");
is( $node->safe_psql('postgres', "SELECT string_agg(pid::text, ',') FROM pool_health.cleanup()",
		extra_params => [ '-U', 'alice' ]),
	"$alices_pid", 'alice can end her own leaked session with cleanup()');
is( $node->safe_psql('postgres', "SELECT requested_by FROM pool_health.terminations WHERE pid = $alices_pid"),
	'alice', 'audited as requested by alice (who cannot write the table herself)');
is( $node->safe_psql('postgres', "SELECT string_agg(pid::text, ',') FROM pool_health.cleanup()",
		extra_params => [ '-U', 'helper' ]),
	"$bobs_pid", 'a pg_signal_backend member can end bob\'s');
$bobs_idle->quit;

# --- reclaim(): idle sessions, longest idle first, down to the target --------------
# 23 slots, 3 reserved: 20 usable.  Open 10 idle sessions, oldest first.
$_->quit for ($young, $super);
ok($node->poll_query_until('postgres', 'SELECT used = 1 FROM pool_health.usage'),
	'only the checking session is left');
# the longest idle of all: a superuser's and a protected role's, which
# reclaim() must pass over even when the caller is a superuser
$node->safe_psql('postgres', 'CREATE ROLE ops LOGIN');
ph_set($node, 'pool_health.protected_roles' => 'ops');
my ($super_idle, $super_idle_pid) = ph_app_session($node, 'pool-admin');
my ($ops_idle, $ops_idle_pid) = ph_app_session($node, 'pool-ops', role => 'ops');
my @idle;
for my $i (1 .. 10)
{
	push @idle, [ ph_app_session($node, "pool-$i", role => 'bob') ];
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.sessions WHERE pid = $idle[-1][1] AND state = 'idle'");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM pool_health.reclaim(100)'),
	'0', 'reclaim() does nothing while usage is below the target');
# target 30 % of 20 = 6 slots: the 12 idle sessions and the calling one
# are 13, so 7 must go, all of them bob's
my $reclaimed = $node->safe_psql('postgres',
	"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pool_health.reclaim(30)");
my @ended = split /,/, $reclaimed;
is(scalar(@ended), 7, 'reclaim(30) ends exactly enough sessions');
is( join(',', sort { $a <=> $b } @ended),
	join(',', sort { $a <=> $b } map { $_->[1] } @idle[ 0 .. $#ended ]),
	'the longest idle ones');
ok(ph_alive($node, $super_idle_pid), 'not the longer idle superuser session');
ok(ph_alive($node, $ops_idle_pid), 'nor the protected role\'s');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.terminations WHERE pid IN ($super_idle_pid, $ops_idle_pid)"),
	'0', 'and neither is audited as ended');
ok( $node->poll_query_until('postgres',
		"SELECT used <= 6 FROM pool_health.usage"),
	'usage is at the target afterwards');

# every action names its limit: the policy's, or the function's argument
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT source || '=' || limit_name, ',') FROM pool_health.terminations"),
	'cleanup=idle_in_transaction_timeout,reclaim=target_percent,terminate_idle=older_than,terminate_idle_in_transaction=older_than',
	'limit_name of every function\'s action');

# --- used and usable, in one wording ----------------------------------------------------
# Sessions of bob until 20 are in use (the checking session counted), then
# 2 superuser sessions: with a checking session, 22 used of 20 usable, the
# last 2 in slots reserved for superusers.  usage_percent stays at 100, and
# reclaim() says it as usage's reasons do.
my @fill;
while ($node->safe_psql('postgres', 'SELECT used FROM pool_health.usage') < 20)
{
	push @fill, [ ph_app_session($node, 'fill', role => 'bob') ];
}
push @fill, [ ph_app_session($node, 'fill-admin') ] for 1 .. 2;
is( $node->safe_psql('postgres',
		"SELECT used || ':' || usable || ':' || reserved_used || ':' || usage_percent || ':' || array_to_string(reasons, '; ') FROM pool_health.usage"),
	'22:20:2:100.0:no usable connection slot is free (20 of 20 usable connections in use); 2 sessions are in slots reserved for superusers',
	'usage: 22 used, 20 of them in usable slots, 2 in reserved ones');
is( $node->safe_psql('postgres',
		"SELECT DISTINCT limit_name || ': ' || split_part(reason, ': ', 1) FROM pool_health.reclaim(90, dry_run => true)"),
	'target_percent: target_percent 90 exceeded (20 of 20 usable connections in use, and 2 in the slots reserved for superusers)',
	'reclaim() counts the reserved slots apart, in the same words');
$_->[0]->quit for @fill;

$node->stop;
done_testing();
