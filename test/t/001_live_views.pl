# Live views with real sessions: leak classification after leak_after,
# pins_xmin, blocking, used = client backends, levels following the
# thresholds, and what an unprivileged role may see.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('live',
	conf => "max_connections = 20\nmax_prepared_transactions = 5\npool_health.leak_after = '10s'",
	init => { allows_streaming => 'logical' });
$node->safe_psql('postgres', 'CREATE TABLE t (i int); INSERT INTO t VALUES (1)');

# --- leak classification -------------------------------------------------
my ($leaker, $leaker_pid) = ph_session($node);
$leaker->query_safe('BEGIN; SELECT 1;');
is( $node->safe_psql('postgres',
		"SELECT state || ':' || coalesce(leak, 'none') FROM pool_health.sessions WHERE pid = $leaker_pid"),
	'idle in transaction:none',
	'idle in transaction, not yet leaked before leak_after');

ph_set($node, 'pool_health.leak_after' => '1s');
ok( $node->poll_query_until('postgres',
		"SELECT leak FROM pool_health.sessions WHERE pid = $leaker_pid",
		'idle_in_transaction'),
	'classified as idle_in_transaction after leak_after');
is( $node->safe_psql('postgres',
		"SELECT idle_for >= '1s' FROM pool_health.sessions WHERE pid = $leaker_pid"),
	't', 'idle_for covers leak_after');

my ($aborted, $aborted_pid) = ph_session($node, on_error_stop => 0);
$aborted->query('BEGIN; SELECT 1/0;');
ok( $node->poll_query_until('postgres',
		"SELECT leak FROM pool_health.sessions WHERE pid = $aborted_pid",
		'idle_in_transaction_aborted'),
	'an aborted transaction left open is idle_in_transaction_aborted');

is( $node->safe_psql('postgres',
		"SELECT leaked || ':' || level || ':' || array_to_string(reasons, ';') FROM pool_health.usage"),
	'2:degraded:2 sessions idle in transaction for longer than pool_health.leak_after (1s)',
	'leaks raise the level to degraded, with the reason');
is( $node->safe_psql('postgres',
		"SELECT string_agg(kind || ':' || leak, ',' ORDER BY leaked_for DESC) FROM pool_health.leaks"),
	'session:idle_in_transaction,session:idle_in_transaction_aborted',
	'leaks lists both, the longer first');
is( $node->safe_psql('postgres',
		"SELECT (s->>'leaked') || ':' || (s->>'throttle') || ':' || pool_health.ping() FROM pool_health.status() s"),
	'2:none:true',
	'status() counts the leaks; leaks alone do not throttle clients nor fail ping()');

# a prepared transaction and a logical slot hold back the horizon
# (the slot first: creating a logical slot waits for transactions with xids)
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('stuck_slot', 'test_decoding')");
$node->safe_psql('postgres', "BEGIN; INSERT INTO t VALUES (2); PREPARE TRANSACTION 'forgotten'");
ok( $node->poll_query_until('postgres',
		"SELECT string_agg(kind, ',' ORDER BY kind) FROM pool_health.leaks WHERE kind <> 'session'",
		'prepared_transaction,replication_slot'),
	'leaks lists the prepared transaction and the replication slot');
like( $node->safe_psql('postgres',
		"SELECT detail FROM pool_health.leaks WHERE kind = 'replication_slot'"),
	qr/logical replication slot stuck_slot holds xmin -, catalog_xmin \d+/,
	'the slot row says what it holds');
$node->safe_psql('postgres', "ROLLBACK PREPARED 'forgotten'");
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('stuck_slot')");

$leaker->query_safe('ROLLBACK');
$aborted->query('ROLLBACK');
ok( $node->poll_query_until('postgres',
		"SELECT leaked = 0 AND level = 'healthy' FROM pool_health.usage"),
	'leaks gone after ROLLBACK');

# --- pins_xmin -------------------------------------------------------------
my ($rc, $rc_pid) = ph_session($node);
my ($rr, $rr_pid) = ph_session($node);
$rc->query_safe('BEGIN ISOLATION LEVEL READ COMMITTED; SELECT count(*) FROM t;');
$rr->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t;');
is( $node->safe_psql('postgres',
		"SELECT string_agg(pins_xmin::text, ',' ORDER BY pid = $rr_pid) FROM pool_health.sessions WHERE pid IN ($rc_pid, $rr_pid)"),
	'false,true',
	'a READ COMMITTED reader does not pin xmin, a REPEATABLE READ snapshot does');
$rc->query_safe('INSERT INTO t VALUES (3)');
is( $node->safe_psql('postgres',
		"SELECT pins_xmin AND backend_xid IS NOT NULL FROM pool_health.sessions WHERE pid = $rc_pid"),
	't', 'an assigned xid pins xmin');
$rc->query_safe('ROLLBACK');
$rr->query_safe('ROLLBACK');

# --- blocking ----------------------------------------------------------------
my ($holder, $holder_pid) = ph_session($node);
my ($waiter, $waiter_pid) = ph_session($node);
$holder->query_safe('BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;');
$waiter->query_until(qr/^$/, "SELECT count(*) FROM t;\n");
ok( $node->poll_query_until('postgres',
		"SELECT waiting FROM pool_health.sessions WHERE pid = $waiter_pid"),
	'the waiter is waiting on a lock');
is( $node->safe_psql('postgres',
		"SELECT blocking FROM pool_health.sessions WHERE pid = $holder_pid"),
	'1', 'the lock holder blocks one session');
is( $node->safe_psql('postgres',
		"SELECT blocking FROM pool_health.sessions WHERE pid = $waiter_pid"),
	'0', 'the waiter blocks nobody');
is($node->safe_psql('postgres', 'SELECT waiting FROM pool_health.usage'),
	'1', 'usage counts one waiting session');
$holder->query_safe('COMMIT');
ok( $node->poll_query_until('postgres',
		"SELECT NOT waiting FROM pool_health.sessions WHERE pid = $waiter_pid"),
	'the waiter proceeds');

# --- used = client backends ---------------------------------------------------
my @idle = map { [ ph_session($node) ] } 1 .. 5;
is( $node->safe_psql('postgres',
		"SELECT used = (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') FROM pool_health.usage"),
	't', 'used equals the number of client backends');
# sessions open here: leaker, aborted, rc, rr, holder, waiter, 5 idle, and the query itself
is($node->safe_psql('postgres', 'SELECT used FROM pool_health.usage'),
	'12', 'used counts every open session and nothing else');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pool_health.sessions WHERE backend_type <> 'client backend'") > 0 ? 1 : 0,
	1, 'auxiliary processes are listed but not counted');

# --- levels follow the thresholds ---------------------------------------------
# 20 slots, 3 reserved: 17 usable; 12 used is 70.6 %
ph_set($node, 'pool_health.degraded_percent' => '50');
is($node->safe_psql('postgres', 'SELECT level FROM pool_health.usage'),
	'degraded', 'lowering degraded_percent below usage: degraded');
ph_set($node, 'pool_health.critical_percent' => '60');
is( $node->safe_psql('postgres',
		"SELECT level || ':' || (NOT pool_health.ping()) || ':' || (pool_health.status()->>'throttle') FROM pool_health.usage"),
	'critical:true:aggressive', 'lowering critical_percent below usage: critical, ping false');
ph_set($node, 'pool_health.degraded_percent' => '70', 'pool_health.critical_percent' => '90');
is($node->safe_psql('postgres', 'SELECT level FROM pool_health.usage'),
	'degraded', 'raised back to 70/90: degraded at 70.6 %');
ph_set($node, 'pool_health.degraded_percent' => '80');
is($node->safe_psql('postgres', 'SELECT level FROM pool_health.usage'),
	'healthy', 'raised above usage: healthy again');

# --- an unprivileged role -----------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN');
$leaker->query_safe("SELECT 'secret query text'");
is( $node->safe_psql('postgres',
		"SELECT used FROM pool_health.usage", extra_params => [ '-U', 'app' ]),
	'12', 'an unprivileged role sees the counts');
is( $node->safe_psql('postgres',
		"SELECT query FROM pool_health.sessions WHERE pid = $leaker_pid",
		extra_params => [ '-U', 'app' ]),
	'<insufficient privilege>', 'but not the query text of others');
is( $node->safe_psql('postgres',
		"SELECT query FROM pool_health.sessions WHERE pid = pg_backend_pid()",
		extra_params => [ '-U', 'app' ]),
	'SELECT query FROM pool_health.sessions WHERE pid = pg_backend_pid()',
	'and sees its own');
$node->safe_psql('postgres', 'GRANT pg_monitor TO app');
like( $node->safe_psql('postgres',
		"SELECT query FROM pool_health.sessions WHERE pid = $leaker_pid",
		extra_params => [ '-U', 'app' ]),
	qr/^SELECT 'secret query text'/, 'pg_monitor sees it');

$_->[0]->quit for @idle;
$_->quit for ($leaker, $aborted, $rc, $rr, $holder, $waiter);
$node->stop;
done_testing();
