# A standby's lag as an interval is how long replay has been behind what
# it received, not the time since the last replayed commit: after 4 s
# without a commit on the primary, a record whose replay waits (an ACCESS
# EXCLUSIVE lock conflicting with a standby query) reports a lag no
# longer than the time since the lock was taken, and /replica?lag=3s
# stays 200 with under a second of real lag.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

my $conf = "listen_addresses = '127.0.0.1'\npool_health.sample_interval = '100ms'\n";
my $primary = ph_node('primary', init => { allows_streaming => 1 }, conf => $conf);
$primary->safe_psql('postgres', 'CREATE TABLE t (x int); INSERT INTO t VALUES (1)');
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf',
	"pool_health.http_listen = '127.0.0.1:$http_port'\nmax_standby_streaming_delay = -1\n");
$standby->start;


# streaming, the lag known (the primary reported its end of WAL)
ok(ph_wait_for(60, sub {
	$primary->safe_psql('postgres', 'SELECT pg_switch_wal(); SELECT pg_logical_emit_message(false, \'x\', \'y\')');
	(ph_http_json($http_port, '/replica?lag=3s'))[0] eq '200';
}, 0.1), 'the standby streams: /replica?lag=3s 200');
$primary->wait_for_catchup('standby', 'replay');
my $last_commit = time;
$primary->safe_psql('postgres', 'INSERT INTO t VALUES (2)');
$primary->wait_for_catchup('standby', 'replay');

# a standby query that the lock's replay must wait for
my $reader = $standby->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM t');

# 4 quiet seconds on the primary: no commit (the standby is caught up)
usleep(4_000_000);
my ($status, $json) = ph_http_json($http_port, '/replica?lag=3s');
is($status, '200', 'quiet primary, standby caught up: /replica?lag=3s 200');

my $locker = $primary->background_psql('postgres');
my $locked_at = time;
$locker->query_safe('BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
$primary->safe_psql('postgres', 'SELECT pg_switch_wal()');
ok(ph_wait_for(10, sub {
	$standby->safe_psql('postgres', 'SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()') eq 't';
}, 0.1), 'the lock record is received, its replay waits on the standby query');
usleep(300_000);	# past the probes' 100 ms cache
($status, $json) = ph_http_json($http_port, '/replica?lag=3s&verbose');
my $real = time - $locked_at;
note(sprintf('real lag at most %.2f s; reported lag_seconds %s, %.1f s since the last commit',
	$real, $json->{lag_seconds} // 'null', time - $last_commit));
cmp_ok($json->{lag_seconds} // 1e9, '<=', $real + 0.5,
	'the reported lag is no more than the time since the record waiting was written');
is($status, '200', sprintf('/replica?lag=3s with %.2f s of real lag: 200', $real)) if $real < 2.5;

$locker->query_safe('ROLLBACK');
$reader->query_safe('COMMIT');
$locker->quit;
$reader->quit;
done_testing();
