# Admission accuracy: quota counters exact by construction.
#  4. clients reconnecting as fast as they can (pgbench -C) below their
#     quota, with the worker sampling every 10 ms, for 10 s: zero
#     refusals, the counter never below zero, back to 0 at the end;
#     concurrent clients above a quota: never more sessions than the quota.
#  5. changing the policies while a quota is full admits nobody more.
#  6. more enabled policies than pool_health.max_policies: the extra ones
#     are listed as errors, and the worker, the views and admission all
#     leave them out.
# 12. refuse_at follows the capacity level only (not another
#     application's leak), computed at login from an exact count (not the
#     last sample).
# 15. refusal messages count right ("1 open").
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PoolHealthTest;

my $node = ph_node('accuracy',
	conf => "max_connections = 40\npool_health.sample_interval = '10ms'\npool_health.max_policies = 4\nlog_line_prefix = '%m [%p] %e %q%a '");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, max_connections)
	VALUES ('churn', 'churn%', 5), ('tight', 'tight%', 3);
});

sub policies_in_effect
{
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s");
}
ok(policies_in_effect(), 'quotas of 5 (churn) and 3 (tight)');

# --- 4. churn below the quota ------------------------------------------------------------
my $script = "$PostgreSQL::Test::Utils::tmp_check/select.sql";
PostgreSQL::Test::Utils::append_to_file($script, "SELECT 1;\n");
# a monitor samples the counter all along: it must never go below 0 (nor
# above the quota)
my $monitor = $node->background_psql('postgres');
$monitor->query_safe('CREATE TABLE counter_seen (admitted int)');
$monitor->query_until(qr/started/, q{
	\echo started
	DO $$
	BEGIN
	    FOR i IN 1 .. 2000 LOOP
	        INSERT INTO counter_seen SELECT admitted FROM pool_health.usage_by_policy WHERE policy = 'churn';
	        PERFORM pg_sleep(0.005);
	    END LOOP;
	END $$;
});
my $log_offset = -s $node->logfile;
my ($stdout, $stderr);
# 2 clients below a quota of 5: a backend still exiting keeps its count
# until it is gone, so room for one lingering backend per client and one
# more (a loaded machine can take that long to end a process)
my $started = time;
IPC::Run::run(
	[ 'pgbench', '-n', '-C', '-c', '2', '-j', '2', '-T', '10', '-f', $script,
	  '-h', $node->host, '-p', $node->port, '-U', 'app', 'postgres' ],
	'>', \$stdout, '2>', \$stderr,
	init => sub { $ENV{PGAPPNAME} = 'churn-pgbench' });
my $seconds = time - $started;
my ($xacts) = $stdout =~ /number of transactions actually processed: (\d+)/;
my ($failed) = $stdout =~ /number of failed transactions: (\d+)/;
$failed //= 0;
note("pgbench -C -c 2 for ${seconds}s: $xacts connections, $failed failed; $stderr");
ok($xacts > 100, "2 clients reconnected $xacts times in 10 s");
unlike($stderr, qr/too many connections|aborted/, 'pgbench saw no refusal');
unlike(slurp_file($node->logfile, $log_offset), qr/too many connections for pool_health policy "churn"/,
	'the server refused none');
$monitor->query_safe('SELECT 1');	# the DO loop has ended
is( $node->safe_psql('postgres', 'SELECT min(admitted) >= 0 AND max(admitted) <= 5 AND count(*) > 100 FROM counter_seen'),
	't', 'the counter stayed between 0 and the quota all along');
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 0 AND refused = 0 FROM pool_health.usage_by_policy WHERE policy = 'churn'"),
	'and is 0 at the end, with 0 refusals');
$monitor->quit;

# --- 4. concurrent clients above a quota: never past it ------------------------------------
# 8 loops of short connections against a quota of 3; a monitor counts the
# sessions of the policy that are visible, every 5 ms
$node->safe_psql('postgres', 'CREATE TABLE seen (n int)');
$monitor = $node->background_psql('postgres');
$monitor->query_until(qr/started/, q{
	\echo started
	DO $$
	BEGIN
	    FOR i IN 1 .. 1000 LOOP
	        INSERT INTO seen SELECT count(*) FROM pool_health.sessions WHERE application_name LIKE 'tight%';
	        PERFORM pg_sleep(0.005);
	    END LOOP;
	END $$;
});
my @loops;
my $connstr = $node->connstr('postgres') . ' user=app application_name=tight-loop';
for my $i (1 .. 8)
{
	my ($out, $err) = ('', '');
	push @loops, [ IPC::Run::start(
		[ 'bash', '-c', "for i in \$(seq 25); do psql -XAtq -d '$connstr' -c 'SELECT pg_sleep(0.02)' 2>&1; done" ],
		'>', \$out, '2>', \$err), \$out ];
}
my $refusals = 0;
for (@loops)
{
	$_->[0]->finish;
	$refusals += () = ${ $_->[1] } =~ /too many connections for pool_health policy "tight"/g;
}
$monitor->query_safe('SELECT 1');
my $max_seen = $node->safe_psql('postgres', 'SELECT max(n) FROM seen');
ok($refusals > 0, "$refusals of 200 connections were refused");
ok($max_seen <= 3, "never more than 3 sessions of the policy at once (seen at most $max_seen)");
is( $node->safe_psql('postgres', "SELECT refused FROM pool_health.usage_by_policy WHERE policy = 'tight'"),
	$refusals, 'usage_by_policy counts every refusal');
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 0 FROM pool_health.usage_by_policy WHERE policy = 'tight'"),
	'the counter is back to 0');
$monitor->quit;

# --- 5. republishing while a quota is full ---------------------------------------------------
my @held;
for my $i (1 .. 3)
{
	my ($psql) = ph_app_session($node, "tight-$i", role => 'app');
	push @held, $psql;
}
# a session's application_name is set after login here: the worker counts
# it where it belongs at its next sample
ok( $node->poll_query_until('postgres',
		"SELECT admitted = 3 FROM pool_health.usage_by_policy WHERE policy = 'tight'"),
	'3 of 3 held (counted by the worker after SET application_name)');
$node->safe_psql('postgres', "UPDATE pool_health.policies SET max_connections = 6 WHERE name = 'churn'");
ok(policies_in_effect(), 'another policy changed: the set is republished');
is( $node->safe_psql('postgres', "SELECT admitted FROM pool_health.usage_by_policy WHERE policy = 'tight'"),
	'3', 'the full quota kept its count');
my ($ret, $out, $errtext) = $node->psql('postgres', 'SELECT 1',
	extra_params => [ '-d', $node->connstr('postgres') . ' user=app application_name=tight-x' ]);
like($errtext, qr/FATAL:  too many connections for pool_health policy "tight"/,
	'a new connection is refused at once');
like($errtext, qr/DETAIL:  Connections governed by the policy: 3 open, at most 3 allowed/,
	'the detail counts right');
# renamed while full: the count goes with it (the worker samples only every
# hour meanwhile, so nothing but the republication can carry it)
ph_set($node, 'pool_health.sample_interval' => '1h');
$node->safe_psql('postgres', "UPDATE pool_health.policies SET name = 'tight-renamed' WHERE name = 'tight'");
ok(policies_in_effect(), 'the full policy is renamed');
is( $node->safe_psql('postgres', "SELECT admitted FROM pool_health.usage_by_policy WHERE policy = 'tight-renamed'"),
	'3', 'its count went with it');
($ret, $out, $errtext) = $node->psql('postgres', 'SELECT 1',
	extra_params => [ '-d', $node->connstr('postgres') . ' user=app application_name=tight-y' ]);
like($errtext, qr/FATAL:  too many connections for pool_health policy "tight-renamed"/,
	'a new connection is still refused');
$node->safe_psql('postgres', "UPDATE pool_health.policies SET name = 'tight' WHERE name = 'tight-renamed'");
ph_set($node, 'pool_health.sample_interval' => '10ms');
$_->quit for @held;

# --- 6. more policies than pool_health.max_policies (4) -------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, priority, application_name, max_connections) VALUES
	    ('p3', 3, 'p3%', 10), ('p4', 2, 'p4%', 10), ('p5', -1, 'fifth%', 1);
});
ok(policies_in_effect(), 'five enabled policies');
is( $node->safe_psql('postgres', q{SELECT name || ': ' || error FROM pool_health.policy_errors}),
	'p5: not in effect: more than pool_health.max_policies (4) enabled policies; raise it and restart the server',
	'the fifth (lowest precedence) is listed as not in effect');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pool_health.usage_by_policy'),
	'4', 'usage_by_policy shows the 4 in effect');
my @fifth = map { (ph_app_session($node, "fifth-$_", role => 'app'))[0] } 1 .. 2;
is( $node->safe_psql('postgres', "SELECT count(*) FROM pool_health.sessions WHERE application_name LIKE 'fifth%' AND policy IS NULL"),
	'2', 'its sessions are governed by no policy in the views');
($ret, $out, $errtext) = $node->psql('postgres', 'SELECT 1',
	extra_params => [ '-d', $node->connstr('postgres') . ' user=app application_name=fifth-3' ]);
is($ret, 0, 'and its quota of 1 is not enforced: what the views show is what is enforced');
$_->quit for @fifth;
$node->safe_psql('postgres', "DELETE FROM pool_health.policies WHERE name IN ('p3', 'p4', 'p5')");

# --- 12. refuse_at: capacity only, exact at login ----------------------------------------------
# 40 slots, 3 reserved: 37 usable; degraded at 70 %: 26 sessions
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, refuse_at, idle_in_transaction_timeout)
	VALUES ('batch', 'batch%', 'degraded', NULL),
	       ('leaky', 'leaky%', NULL, NULL);
});
ok(policies_in_effect(), 'refuse_at = degraded for batch%');
ph_set($node, 'pool_health.leak_after' => '100ms');
my ($leaker) = ph_app_session($node, 'leaky-1', role => 'app');
$leaker->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres', "SELECT level = 'degraded' AND leaked = 1 FROM pool_health.usage"),
	'another application leaks: the level is degraded');
($ret, $out, $errtext) = $node->psql('postgres', 'SELECT 1',
	extra_params => [ '-d', $node->connstr('postgres') . ' user=app application_name=batch-1' ]);
is($ret, 0, 'a batch connection is admitted: capacity is healthy, only a leak raised the level');
$leaker->quit;

# the worker stops sampling (1 h): only the exact count at login can see
# the burst that follows
ph_set($node, 'pool_health.sample_interval' => '1h');
my @burst = map { (ph_session($node))[0] } 1 .. 26;
($ret, $out, $errtext) = $node->psql('postgres', 'SELECT 1',
	extra_params => [ '-d', $node->connstr('postgres') . ' user=app application_name=batch-2' ]);
like($errtext, qr/FATAL:  connection refused by pool_health policy "batch": server connection health is degraded/,
	'after a burst of 26 sessions a batch connection is refused, without waiting for a sample');
like($errtext, qr/DETAIL:  (2[6-9]) of 37 usable connections in use\./, 'the detail counts them');
$_->quit for @burst;

unlike(slurp_file($node->logfile), qr/TRAP:|terminated by signal|PANIC/, 'nothing crashed');
$node->stop;
done_testing();
