# A freshly built standby of an idle primary streams, but its lag is
# unknown until the primary reports its position: the reason says so.
# A standby restarted (no commit replayed since), then with replay paused
# while the primary commits for 3 s: its lag as an interval counts from
# when replay was first seen behind (lag_seconds >= 1, /replica?lag=1s
# 503), and in bytes from the REPLAYED position as Patroni's
# /replica?lag= does (lag_bytes at least what is received and not
# replayed, /replica?lag=1kB 503).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use PoolHealthTest;

my $conf = "listen_addresses = '127.0.0.1'\npool_health.sample_interval = '100ms'\n";
my $primary = ph_node('primary', init => { allows_streaming => 1 }, conf => $conf);
$primary->safe_psql('postgres', 'CREATE TABLE t (x int)');
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf', "pool_health.http_listen = '127.0.0.1:$http_port'\n");
$standby->start;


# freshly built on an idle primary: its WAL receiver streams from the
# start of the segment after the backup's, where the primary has written
# nothing, so the primary reports its position with its first keepalive
# only: until then the lag is unknown, and the reason says why
ok(ph_wait_for(30, sub {
	$standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") eq '1';
}, 0.1), 'the fresh standby streams');
my ($fresh_status, $fresh) = ph_http_json($http_port, '/replica?lag=1GB&verbose');
SKIP:
{
	skip 'the primary reported its position already', 2
	  if $standby->safe_psql('postgres', 'SELECT latest_end_lsn IS NULL FROM pg_stat_wal_receiver') ne 't';
	is($fresh_status, '503', 'streaming, no position from the primary yet: /replica?lag=1GB 503 (lag unknown)');
	ok((grep { $_ eq 'the lag is unknown: the primary has reported no WAL position yet' } @{ $fresh->{reasons} // [] }),
		'the reason: no position reported by the primary yet, not "no WAL receiver is streaming"')
	  or diag(explain($fresh->{reasons}));
}

# the standby restarts from a restartpoint after the last commit
$primary->safe_psql('postgres', 'CHECKPOINT');
$primary->wait_for_catchup('standby', 'replay');
$standby->safe_psql('postgres', 'CHECKPOINT');
$standby->restart;
is($standby->safe_psql('postgres', 'SELECT pg_last_xact_replay_timestamp() IS NULL'), 't',
	'restarted: no commit replayed since');
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');

# the primary commits for 3 s; the standby receives it all, replays none
my $first = time;
while (time < $first + 3)
{
	$primary->safe_psql('postgres', 'INSERT INTO t VALUES (1)');
	usleep(100_000);
}
ok(ph_wait_for(10, sub {
	$standby->safe_psql('postgres',
		"SELECT pg_last_wal_receive_lsn() >= '" . $primary->lsn('insert') . "'::pg_lsn AND pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()") eq 't';
}, 0.1), 'the standby has received every commit and replayed none');
my $behind = time - $first;
usleep(300_000);	# past the probes' 100 ms cache
my ($status, $json) = ph_http_json($http_port, '/replica?lag=1s&verbose');
note(sprintf('commits not replayed for %.1f s; lag_bytes %s, lag_seconds %s', time - $first,
	$json->{lag_bytes} // 'null', $json->{lag_seconds} // 'null'));
cmp_ok($json->{lag_seconds} // 0, '>=', 1, 'the reported lag counts the commits not replayed');
is($status, '503', sprintf('/replica?lag=1s with %.1f s of commits not replayed: 503', $behind));
# in bytes, Patroni's /replica?lag= compares the primary's position with
# the REPLAYED one (patroni/api.py do_GET: leader_optime > replayed_location
# + lag), not with the later of received and replayed
my $unreplayed = $standby->safe_psql('postgres',
	'SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())');
($status, $json) = ph_http_json($http_port, '/replica?lag=1kB');
cmp_ok($json->{lag_bytes} // 0, '>=', $unreplayed, "lag_bytes counts the $unreplayed bytes received, not replayed");
is($status, '503', "/replica?lag=1kB with $unreplayed bytes not replayed: 503");

$standby->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
done_testing();
