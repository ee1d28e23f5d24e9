# Semantics of one evaluation that users rely on:
# - a lock pile-up is a reason in usage, naming the session that blocks,
#   and raises the level to degraded;
# - client_port in sessions, leaks and terminations is the client's own
#   socket port, so a leak can be traced to one client process;
# - leaks.leaked_for is set for every leak class, stale_idle included;
# - a session past a policy limit shorter than leak_after is leaked from
#   that limit on (and, with enforcement on, ended and audited then).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('semantics',
	conf => "listen_addresses = '127.0.0.1'\npool_health.sample_interval = '100ms'\npool_health.lock_wait_after = '500ms'\npool_health.leak_after = '200ms'");
$node->safe_psql('postgres', 'CREATE TABLE t (i int); CREATE ROLE app LOGIN; GRANT ALL ON t TO app');

# --- a lock pile-up ------------------------------------------------------------------
my ($holder, $holder_pid) = ph_app_session($node, 'migration');
$holder->query_safe('BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;');
my @waiters;
for my $i (1 .. 3)
{
	my ($w, $w_pid) = ph_app_session($node, "web-$i");
	$w->query_until(qr/^$/, "SELECT count(*) FROM t;\n");
	push @waiters, $w;
}
ok( $node->poll_query_until('postgres', 'SELECT lock_waits = 3 FROM pool_health.usage'),
	'three sessions wait on a lock for longer than pool_health.lock_wait_after');
my $reasons = $node->safe_psql('postgres', "SELECT level || ': ' || array_to_string(reasons, '; ') FROM pool_health.usage");
like($reasons,
	qr/^degraded: .*3 sessions waiting on locks for longer than pool_health.lock_wait_after \(500ms\), 3 of them behind session $holder_pid \(role "\w+", application "migration"\)/,
	'the level is degraded, and the reason names the blocker');
$holder->query_safe('ROLLBACK');
ok( $node->poll_query_until('postgres', "SELECT lock_waits = 0 AND level = 'healthy' FROM pool_health.usage"),
	'the waits end: healthy again');
$_->quit for @waiters;
$holder->quit;

# --- client_port: the client's own socket ---------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout, idle_timeout)
	VALUES ('tcp', 'tcp-client%', '3s', NULL), ('idle', 'stale%', NULL, '1s')});
# (the last -d wins: a TCP connection instead of the Unix socket)
my $tcp = $node->background_psql('postgres', on_error_stop => 0,
	extra_params => [ '-d', 'host=127.0.0.1 port=' . $node->port . ' dbname=postgres user=app application_name=tcp-client' ]);
my $port = $tcp->query_safe('SELECT inet_client_port()');
my $pid = $tcp->query_safe('SELECT pg_backend_pid()');
is($node->safe_psql('postgres', "SELECT client_port FROM pool_health.sessions WHERE pid = $pid"),
	$port, "sessions.client_port is the client's port ($port)");
$tcp->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres',
		"SELECT client_port = $port FROM pool_health.leaks WHERE pid = $pid"),
	'so is leaks.client_port');
ok(ph_gone($node, $pid), 'the leak is ended');
is($node->safe_psql('postgres', "SELECT client_port || ':' || host(client_addr) FROM pool_health.terminations WHERE pid = $pid"),
	"$port:127.0.0.1", 'and the audit has its address and port');
eval { $tcp->quit };

# --- leaked_for for every class -------------------------------------------------------------------
ph_set($node, 'pool_health.enforce' => 'off');
my ($stale, $stale_pid) = ph_app_session($node, 'stale-1');
ok( $node->poll_query_until('postgres',
		"SELECT leak = 'stale_idle' AND leaked_for >= interval '1s' FROM pool_health.leaks WHERE pid = $stale_pid"),
	'a stale_idle leak has leaked_for, its time idle');
$stale->quit;

# --- a policy's limit at or below leak_after ------------------------------------------------------
# A session is leaked from its policy's limit on, if that comes before
# leak_after: with enforcement off (or a dry run, or action log) it is
# listed in leaks from then; with enforcement on, the policy ends it at
# that moment, so it is in terminations, not in leaks.
ph_set($node, 'pool_health.leak_after' => '1min');
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('short', 'short%', '1s')});
my ($short, $short_pid) = ph_app_session($node, 'short-1', role => 'app', on_error_stop => 0);
$short->query_safe('BEGIN; SELECT 1;');
ok( $node->poll_query_until('postgres',
		"SELECT leak = 'idle_in_transaction' AND leaked_for >= interval '1s' AND leaked_for < interval '1min' FROM pool_health.leaks WHERE pid = $short_pid"),
	'past its policy\'s limit (1s), below leak_after (1min): in leaks');
like( $node->safe_psql('postgres', "SELECT leaked || ': ' || array_to_string(reasons, '; ') FROM pool_health.usage"),
	qr/^1: .*1 session past a policy limit/, 'counted as leaked, past a policy limit');
ph_set($node, 'pool_health.enforce' => 'on');
ok(ph_gone($node, $short_pid), 'with enforcement on, the policy ends it');
is( $node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM pool_health.leaks WHERE pid = $short_pid) || ':' || (SELECT limit_name FROM pool_health.terminations WHERE pid = $short_pid)"),
	'0:idle_in_transaction_timeout', 'then it is in terminations, no longer in leaks');
$node->stop;
done_testing();
