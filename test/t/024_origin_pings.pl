# Pings and pool housekeeping are not where a transaction came from: real
# clients and a real pooler, each leaking a transaction from a tagged route
# right after its pool pinged the connection.
# - SQLAlchemy 1.4, create_async_engine with asyncpg and pool_pre_ping: the
#   ping (SELECT 1) runs in the transaction the adapter opens, and the
#   route's statement follows in it; directly, and through pgbouncer 1.18
#   in transaction mode with server_check_query (server_check_delay = 0:
#   before every transaction) and its SET client_encoding;
# - SQLAlchemy 1.4 with psycopg2 and pool_pre_ping, through that pgbouncer;
# - a JDBC-style isValid(): empty queries (psycopg 3, by the simple and the
#   extended protocol, the latter as pgjdbc sends it) in the transaction
#   before the route's statement.
# Each shows the route's statement and tags in pool_health.sessions and
# pool_health.leaks, and, once a policy ends it, in pool_health.terminations.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $python = '/usr/bin/python3';
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

my $node = ph_node('pings',
	conf => "pool_health.sample_interval = '100ms'\npool_health.leak_after = '1s'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE TABLE orders (id int PRIMARY KEY, status text);
	INSERT INTO orders SELECT i, 'new' FROM generate_series(1, 10) i;
	GRANT ALL ON orders TO app;
});

# --- pgbouncer 1.18, transaction pooling, checking every server it hands out
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $ini = "$tmp/pgbouncer.ini";
PostgreSQL::Test::Utils::append_to_file($ini, sprintf(<<'INI', $node->host, $node->port, $bport, $tmp, $tmp));
[databases]
postgres = host=%s port=%d dbname=postgres user=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
server_check_query = select 1
server_check_delay = 0
default_pool_size = 4
max_client_conn = 20
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
INI
my ($bouncer_out, $bouncer_err) = ('', '');
my $bouncer = IPC::Run::start([ 'pgbouncer', $ini ], '>', \$bouncer_out, '2>', \$bouncer_err);
my $ready = 0;
for (1 .. 100)
{
	my ($ret) = IPC::Run::run([ 'psql', '-XAtq', '-h', '127.0.0.1', '-p', $bport, '-U', 'app',
			'-d', 'postgres', '-c', 'SELECT 1' ], '>', \my $o, '2>', \my $e);
	if ($ret) { $ready = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($ready, 'pgbouncer 1.18 accepts connections (transaction mode, server_check_query)')
  or note("pgbouncer: $bouncer_err " . (-e "$tmp/pgbouncer.log" ? slurp_file("$tmp/pgbouncer.log") : ''));

# --- the applications: each leaks a transaction from its tagged route -----------------------
PostgreSQL::Test::Utils::append_to_file("$tmp/async_app.py", <<'PY');
# SQLAlchemy 1.4 async with asyncpg, pool_pre_ping: use the pool once, then
# a route checks a connection out (the pre-ping runs SELECT 1 in the
# transaction the adapter begins), runs its tagged UPDATE and leaks it.
import asyncio, os, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

host, port, app, bouncer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "bouncer"

async def main():
    args = dict(host=host, port=port, user="app", database="postgres",
                server_settings={"application_name": app})
    if bouncer:
        args["statement_cache_size"] = 0
    engine = create_async_engine("postgresql+asyncpg://", pool_pre_ping=True,
                                 pool_size=1, max_overflow=0, connect_args=args)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT count(*) FROM orders"))
    conn = await engine.connect()
    await conn.execute(text("UPDATE orders SET status = 'paid' WHERE id = %d "
                            "/*route='checkout',controller='orders'*/" % (3 if bouncer else 1)))
    print("leaked", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    os._exit(0)

asyncio.run(main())
PY
PostgreSQL::Test::Utils::append_to_file("$tmp/sync_app.py", <<'PY');
# SQLAlchemy 1.4 with psycopg2, pool_pre_ping: the same route, synchronous.
import os, sys
from sqlalchemy import create_engine, text

url, app = sys.argv[1], sys.argv[2]
engine = create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=0,
                       connect_args=dict(application_name=app))
with engine.connect() as conn:
    conn.execute(text("SELECT count(*) FROM orders")).all()
conn = engine.connect()
conn.begin()
conn.execute(text("UPDATE orders SET status = 'refunded' WHERE id = 4 "
                  "/*route='refund',controller='payments'*/"))
print("leaked", flush=True)
sys.stdin.readline()
os._exit(0)
PY
PostgreSQL::Test::Utils::append_to_file("$tmp/isvalid_app.py", <<'PY');
# A JDBC-style isValid() in the transaction, with psycopg 3: an empty query
# as a simple Query message (psycopg begins the transaction before it), and
# by Parse/Bind/Execute, as pgjdbc's isValid() sends it
# (prepareStatement("").executeUpdate()).
import os, sys
import psycopg

conn = psycopg.connect(sys.argv[1], application_name=sys.argv[2])
cur = conn.cursor()
cur.execute("")
assert conn.pgconn.exec_params(b"", []).status == psycopg.pq.ExecStatus.EMPTY_QUERY
cur.execute("UPDATE orders SET status = 'valid' WHERE id = 5 /*route='isvalid'*/")
print("leaked", flush=True)
sys.stdin.readline()
os._exit(0)
PY

my %apps = (
	'pinged-async' => [ "$tmp/async_app.py", $node->host, $node->port, 'pinged-async', 'direct' ],
	'pinged-async-bouncer' => [ "$tmp/async_app.py", '127.0.0.1', $bport, 'pinged-async-bouncer', 'bouncer' ],
	'pinged-sync-bouncer' => [ "$tmp/sync_app.py", "postgresql+psycopg2://app\@127.0.0.1:$bport/postgres", 'pinged-sync-bouncer' ],
	'pinged-isvalid' => [ "$tmp/isvalid_app.py", 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=app', 'pinged-isvalid' ],
);
my %want = (
	'pinged-async' => [ q{UPDATE orders SET status = 'paid' WHERE id = 1 /*route='checkout',controller='orders'*/}, '{"route": "checkout", "controller": "orders"}' ],
	'pinged-async-bouncer' => [ q{UPDATE orders SET status = 'paid' WHERE id = 3 /*route='checkout',controller='orders'*/}, '{"route": "checkout", "controller": "orders"}' ],
	'pinged-sync-bouncer' => [ q{UPDATE orders SET status = 'refunded' WHERE id = 4 /*route='refund',controller='payments'*/}, '{"route": "refund", "controller": "payments"}' ],
	'pinged-isvalid' => [ q{UPDATE orders SET status = 'valid' WHERE id = 5 /*route='isvalid'*/}, '{"route": "isvalid"}' ],
);
my %run;
for my $app (sort keys %apps)
{
	my %h = (in => '', out => '', err => '');
	$h{run} = IPC::Run::start([ $python, @{ $apps{$app} } ],
		'<', \$h{in}, '>', \$h{out}, '2>', \$h{err}, IPC::Run::timeout(900));
	IPC::Run::pump($h{run}) until $h{out} =~ /leaked/ || !$h{run}->pumpable;
	ok($h{out} =~ /leaked/, "$app: the route leaked its transaction") or note("$app: $h{err}");
	$run{$app} = \%h;
}

# what each session's transaction shows, while it is leaked
for my $app (sort keys %apps)
{
	my ($first, $tags) = @{ $want{$app} };
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pool_health.sessions WHERE application_name = '$app' AND state = 'idle in transaction'"),
		"$app: the session is idle in transaction");
	is( $node->safe_psql('postgres',
			"SELECT xact_first_query || ' | ' || coalesce(xact_tags::text, 'NULL') FROM pool_health.sessions WHERE application_name = '$app' AND state = 'idle in transaction'"),
		"$first | $tags",
		"$app: pool_health.sessions shows the route's statement and tags, not the ping");
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(*) = 1 FROM pool_health.leaks
			WHERE kind = 'session' AND application_name = '$app'
			  AND xact_first_query = \$q\$$first\$q\$ AND xact_tags = '$tags'::jsonb}),
		"$app: so does pool_health.leaks");
}
note('what the pool pinged with: ' . $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT query, ', ') FROM pg_stat_activity WHERE application_name LIKE 'pinged-%'"));

# a policy ends them: the audit has the route too
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('pinged-leaks', 'pinged-%', '1s')});
for my $app (sort keys %apps)
{
	my ($first, $tags) = @{ $want{$app} };
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM pool_health.terminations WHERE application_name = '$app'"),
		"$app: the leak is ended by the policy");
	is( $node->safe_psql('postgres',
			"SELECT xact_first_query || ' | ' || coalesce(xact_tags::text, 'NULL') FROM pool_health.terminations WHERE application_name = '$app'"),
		"$first | $tags",
		"$app: pool_health.terminations has the route's statement and tags");
	$run{$app}{in} .= "\n";
	$run{$app}{run}->finish;
}

$bouncer->kill_kill;
$node->stop;
done_testing();
