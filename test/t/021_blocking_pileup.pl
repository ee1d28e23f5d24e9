# Lock pile-ups, counted from one pass over the lock table per evaluation:
# with 50 sessions waiting on one table in modes that block them hard (the
# holder's lock) and soft (a conflicting waiter ahead in the queue), a
# parallel query whose leader waits on one table and workers on another
# (each member is blocked by what blocks any of them), and a session
# waiting behind the locks that parallel query's leader and workers hold
# (blockers are named by their leader), every backend's blocking,
# blocked_by and blocking_since in pool_health.sessions are what
# pg_blocking_pids() and pg_locks.waitstart give.  A blocking_timeout then
# ends the holder once, naming how many it blocked, and nobody else.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('pileup',
	conf => "max_connections = 100\npool_health.sample_interval = '100ms'\nmax_worker_processes = 16\nmax_parallel_workers = 8");
$node->safe_psql('postgres', q{
	CREATE EXTENSION dblink;
	CREATE TABLE t (i int);
	CREATE TABLE b (i int);
	CREATE TABLE c (i int);
	CREATE TABLE a (i int) WITH (parallel_workers = 2);
	INSERT INTO a SELECT generate_series(1, 10000);
	ANALYZE a;
	CREATE ROLE app LOGIN;
	GRANT ALL ON t, b TO app;
	-- the leader reads b, its workers c
	CREATE FUNCTION public.look_up(i int, leader int) RETURNS boolean
	    LANGUAGE plpgsql PARALLEL SAFE AS $$
	BEGIN
	    IF pg_backend_pid() = leader THEN
	        RETURN EXISTS (SELECT FROM b WHERE b.i = look_up.i);
	    END IF;
	    RETURN EXISTS (SELECT FROM c WHERE c.i = look_up.i);
	END $$;
});

my ($holder, $holder_pid) = ph_app_session($node, 'migration', role => 'app', on_error_stop => 0);
$holder->query_safe('BEGIN; LOCK TABLE t, b IN ACCESS EXCLUSIVE MODE;');
my ($holder2, $holder2_pid) = ph_app_session($node, 'other-migration');
$holder2->query_safe('BEGIN; LOCK TABLE c IN ACCESS EXCLUSIVE MODE;');

# 50 waiters on t, one at a time so that the queue has their order:
# mostly readers (ACCESS SHARE, blocked by the holder only), and among
# them ACCESS EXCLUSIVE, SHARE and ROW EXCLUSIVE requests that conflict
# with some of the waiters behind them
my $driver = $node->background_psql('postgres');
my $connstr = $node->connstr('postgres');
$driver->query_safe(
	"SELECT dblink_connect('w' || i, \$\$$connstr application_name=waiter-\$\$ || i) FROM generate_series(1, 50) i");
for my $i (1 .. 50)
{
	my $sql =
		$i % 10 == 3 ? 'BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; COMMIT'
	  : $i % 7 == 0 ? 'BEGIN; LOCK TABLE t IN SHARE MODE; COMMIT'
	  : $i % 5 == 0 ? 'INSERT INTO t VALUES (1)'
	  :               'SELECT count(*) FROM t';
	$driver->query_safe("SELECT dblink_send_query('w$i', '$sql')");
	$node->poll_query_until('postgres',
		"SELECT count(*) = $i FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'waiter-%'")
	  or die "waiter $i does not wait";
}

# a parallel query: its leader waits on b, its workers on c
my ($parallel, $parallel_pid) = ph_app_session($node, 'report');
$parallel->query_until(qr/^$/, qq{
	SET parallel_setup_cost = 0;
	SET parallel_tuple_cost = 0;
	SET min_parallel_table_scan_size = 0;
	SET max_parallel_workers_per_gather = 2;
	SELECT count(*) FROM a WHERE look_up(i, $parallel_pid);
});
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) FILTER (WHERE pid <> $parallel_pid) >= 1
		       AND bool_and(wait_event_type IS NOT DISTINCT FROM 'Lock')
		FROM pg_stat_activity WHERE pid = $parallel_pid OR leader_pid = $parallel_pid}),
	'a parallel query waits: its leader on one lock, its workers on another');
# and a session that waits behind the locks the parallel query holds on a
$driver->query_safe(
	"SELECT dblink_connect('behind', \$\$$connstr application_name=behind-parallel\$\$), dblink_send_query('behind', 'BEGIN; LOCK TABLE a IN ACCESS EXCLUSIVE MODE; COMMIT')");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'behind-parallel' AND wait_event_type = 'Lock'")
  or die 'the session behind the parallel query does not wait';

# the same statement reads both: nobody moves while the holder holds
my $compare = q{
	WITH w AS (SELECT pid, pg_blocking_pids(pid) AS blockers
	           FROM pg_stat_activity WHERE wait_event_type = 'Lock'),
	expected AS (
	    SELECT a.pid,
	           (SELECT count(*) FROM w WHERE a.pid = ANY (w.blockers)) AS blocking,
	           (SELECT w.blockers[1] FROM w WHERE w.pid = a.pid) AS blocked_by,
	           (SELECT min(l.waitstart) FROM w JOIN pg_locks l ON l.pid = w.pid AND NOT l.granted
	            WHERE a.pid = ANY (w.blockers)) AS blocking_since
	    FROM pg_stat_activity a)
	SELECT count(*) || ' backends, '
	       || count(*) FILTER (WHERE s.blocking <> e.blocking) || ' with another blocking, '
	       || count(*) FILTER (WHERE s.blocked_by IS DISTINCT FROM e.blocked_by) || ' with another blocked_by, '
	       || count(*) FILTER (WHERE s.blocking_since IS DISTINCT FROM e.blocking_since) || ' with another blocking_since'
	FROM pool_health.sessions s JOIN expected e USING (pid)};
is($node->safe_psql('postgres', $compare) =~ s/^\d+ backends, //r,
	'0 with another blocking, 0 with another blocked_by, 0 with another blocking_since',
	'blocking, blocked_by and blocking_since of every backend are those of pg_blocking_pids() and pg_locks');
note($node->safe_psql('postgres', $compare));

my $holder_blocking = $node->safe_psql('postgres',
	"SELECT blocking FROM pool_health.sessions WHERE pid = $holder_pid");
my $parallel_waiters = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE (pid = $parallel_pid OR leader_pid = $parallel_pid) AND wait_event_type = 'Lock'");
is($holder_blocking, 50 + $parallel_waiters,
	"the holder blocks the 50 waiters, the parallel leader and its waiting workers ($holder_blocking)");
is( $node->safe_psql('postgres', "SELECT blocking FROM pool_health.sessions WHERE pid = $holder2_pid"),
	$parallel_waiters, 'and so does the holder of what only the workers wait for');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(s.blocking::text, ',' ORDER BY s.pid <> $parallel_pid)
		FROM pool_health.sessions s JOIN pg_stat_activity a USING (pid)
		WHERE s.pid = $parallel_pid OR a.leader_pid = $parallel_pid}),
	join(',', 1, map { 0 } 2 .. $parallel_waiters),
	'the session behind the parallel query is blocked by its leader, not its workers');
my ($soft) = $node->safe_psql('postgres', q{
	SELECT count(*) FROM pool_health.sessions
	WHERE blocking > 0 AND application_name LIKE 'waiter-%'});
cmp_ok($soft, '>=', 5, "waiters ahead in the queue block the conflicting ones behind them ($soft of them)");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM pool_health.sessions s JOIN pg_stat_activity a USING (pid)
		WHERE a.leader_pid = $parallel_pid AND a.backend_type = 'parallel worker' AND a.wait_event_type = 'Lock'
		  AND s.blocked_by = $holder_pid}),
	$parallel_waiters - 1, 'each waiting parallel worker is blocked_by the holder');

# --- blocking_timeout: the holder is ended once ------------------------------------------
my $before = $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'");
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, blocking_timeout)
	VALUES ('migration', 'migration', '1s')});
ok(ph_gone($node, $holder_pid), 'the holder is ended past blocking_timeout');
like( $node->safe_psql('postgres', "SELECT reason FROM pool_health.terminations WHERE pid = $holder_pid"),
	qr/^blocking_timeout 00:00:01 exceeded: blocking $holder_blocking sessions for /,
	'the reason says how many sessions it blocked');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pool_health.terminations'),
	'1', 'one action, on the holder only');
$holder2->query_safe('COMMIT');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
	'the waiters get their locks');
is( $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"),
	$before - 1, 'every other session is still there');
like($parallel->query_safe('SELECT 1'), qr/1$/, 'the parallel query finished');

$driver->quit;
$parallel->quit;
$holder2->quit;
$node->stop;
done_testing();
