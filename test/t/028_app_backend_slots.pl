# The per-application accounting publishes a transaction's count, time
# and histogram in its backend's own slot, folded into the group when the
# backend leaves it (exit, change of application_name); readers add the
# two.  Exact counts through a reset while a session holds counts in its
# slot, a change of application_name after that reset (the fold of a slot
# whose group was reset), the session's exit, and 400 sessions of one
# transaction each (pgbench -C: a fold at every exit) while a reader
# watches the count never go down.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('slots',
	conf => "max_connections = 40\npool_health.sample_interval = '100ms'");

sub stat_of
{
	my ($app, $column) = @_;
	return $node->safe_psql('postgres',
		"SELECT $column FROM pool_health.application_stats WHERE application_name = '$app'");
}

# --- a session's slot, through a reset and a change of name ----------------------------------
my ($s, $pid) = ph_app_session($node, 'slot-a');
$s->query_safe('SELECT pg_sleep(0.02)') for 1 .. 3;
is(stat_of('slot-a', "connections || ' ' || xacts || ' ' || (xact_p50 >= '15ms') || ' ' || (xact_time >= '60ms')"),
	'1 3 true true', 'three transactions of an attached session, with their time and histogram');

$node->safe_psql('postgres', 'SELECT pool_health.reset_application_stats()');
is(stat_of('slot-a', "connections || ' ' || xacts || ' ' || (xact_p50 IS NULL) || ' ' || (xact_time = '0')"),
	'1 0 true true', 'reset while the session holds them in its slot: all 0, no percentile');

$s->query_safe('SELECT pg_sleep(0.02)') for 1 .. 2;
is(stat_of('slot-a', "xacts || ' ' || (xact_p50 >= '15ms') || ' ' || (xact_time BETWEEN '40ms' AND '1s')"),
	'2 true true', 'after the reset: only its two new transactions');

# the SET is a transaction of slot-a; the session moves at the next one
$s->query_safe("SET application_name = 'slot-b'");
$s->query_safe('SELECT 1');
is(stat_of('slot-a', "connections || ' ' || xacts || ' ' || (xact_time BETWEEN '40ms' AND '1s')"),
	'0 3 true', 'moved: what its slot held since the reset folded into slot-a, exactly');
is(stat_of('slot-b', "connections || ' ' || xacts"), '1 1', 'and its new group has its new transaction');

$s->quit;
ok(ph_gone($node, $pid), 'the session exited');
is(stat_of('slot-b', "connections || ' ' || xacts"), '0 1', 'its exit folded its slot into slot-b');
is(stat_of('slot-a', 'xacts'), '3', 'slot-a unchanged');

# --- many folds, a reader watching --------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE FUNCTION watch_churn(n int) RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
		prev bigint := 0;
		cur bigint;
		decreases int := 0;
		readings int := 0;
	BEGIN
		FOR i IN 1 .. n LOOP
			SELECT coalesce(sum(xacts), 0) INTO cur FROM pool_health.application_stats
			WHERE application_name = 'slot-churn';
			IF cur < prev THEN decreases := decreases + 1; END IF;
			IF cur > 0 THEN readings := readings + 1; END IF;
			prev := cur;
			EXIT WHEN cur >= 400;
			PERFORM pg_sleep(0.001);
		END LOOP;
		RETURN decreases || ' ' || (readings > 0);
	END $$;
});
my $script = "$PostgreSQL::Test::Utils::tmp_check/one.sql";
append_to_file($script, "SELECT 1;\n");
my ($watch_out, $watch_err) = ('', '');
my $watcher = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', 'SELECT watch_churn(100000)' ],
	'>', \$watch_out, '2>', \$watch_err);
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-C', '-c', 4, '-j', 4, '-t', 100, '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err,
	init => sub { $ENV{PGAPPNAME} = 'slot-churn' });
$bench->finish;
like($out, qr/number of transactions actually processed: 400\/400/, 'pgbench ran 400 sessions of one transaction')
  or diag($err);
$watcher->finish;
is($watch_out, "0 true\n", 'a reader during the churn never saw the count go down') or diag($watch_err);
ok($node->poll_query_until('postgres',
		"SELECT connections = 0 FROM pool_health.application_stats WHERE application_name = 'slot-churn'"),
	'every churned session gone');
is(stat_of('slot-churn', 'xacts'), '400', 'exactly 400 transactions, each folded in at its exit');

$node->stop;
done_testing();
