# Where a transaction came from, and a termination its client can read.
# - BEGIN, then /*route='/checkout'*/ UPDATE, then SELECT, left idle:
#   xact_first_query is the UPDATE, xact_tags {"route": "/checkout"},
#   query the SELECT; SAVEPOINT is not a first statement; a function's
#   inner statements are not; autocommit statements are their own first;
#   a new transaction resets it; other roles see it only as they see query.
# - tags found as the server's lexer reads the text: literals ('', E'',
#   U&'', dollar quotes, with standard_conforming_strings on and off),
#   quoted identifiers, nested and line comments; a pair that decodes to a
#   NUL or invalid text is dropped; prose is not tags; hostile texts (a
#   1 MB nested comment, 2001 transactions in one message, a literal the
#   scan reads unterminated).
# - pings and housekeeping (SELECT 1, SET, SHOW, RESET) are not the first
#   statement; tags come from the first statement that has them; a
#   transaction of pings shows its first ping.
# - the extended protocol, a prepared statement executed again without
#   parsing (pgbench -M prepared): recorded too.
# - a session ended by a policy: its client reads, on its next request,
#   the FATAL (57P01) with a DETAIL naming pool_health, the policy, the
#   limit and age, and the first statement, and a HINT; the audit, the
#   NOTIFY and the log line carry the first statement and its tags.
# - a session ended by pg_terminate_backend(): PostgreSQL's message only.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('origin', conf => "pool_health.sample_interval = '100ms'",
	init => { extra => [ '--encoding=UTF8', '--locale=C' ] });
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	CREATE ROLE other LOGIN;
	CREATE TABLE orders (id int PRIMARY KEY, status text);
	INSERT INTO orders VALUES (1, 'new'), (2, 'new');
	GRANT ALL ON orders TO app;
	CREATE FUNCTION touch() RETURNS int LANGUAGE plpgsql AS
	$$ BEGIN UPDATE orders SET status = 'touched' WHERE id = 2; RETURN 1; END $$;
});

# client(app): a psql client of role app reading its commands from stdin,
# as an application's connection; returns a hash with its pid
sub client
{
	my ($app) = @_;
	my %c = (stdin => '', stdout => '', stderr => '');
	$c{run} = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres') . " user=app application_name=$app" ],
		'<', \$c{stdin}, '>', \$c{stdout}, '2>', \$c{stderr});
	$c{stdin} .= "SELECT 'pid:' || pg_backend_pid();\n";
	IPC::Run::pump($c{run}) until $c{stdout} =~ /pid:(\d+)/;
	$c{pid} = $1;
	return \%c;
}

# send(client, sql): run statements and wait until they are done
my $marker = 0;
sub send_sql
{
	my ($c, $sql) = @_;
	$marker++;
	$c->{stdin} .= "$sql\nSELECT 'done $marker';\n";
	IPC::Run::pump($c->{run}) until $c->{stdout} =~ /done $marker/;
}

# next_request(client): what the client prints when it sends its next
# request (after its session was ended), and its end
sub next_request
{
	my ($c) = @_;
	$c->{stdin} .= "SELECT 'again';\n\\q\n";
	$c->{run}->finish;
	return $c->{stderr};
}

sub origin_of
{
	my ($pid, %opt) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(xact_first_query, 'NULL') || ' | ' || coalesce(xact_tags::text, 'NULL') || ' | ' || btrim(query, E' \\n;') FROM pool_health.sessions WHERE pid = $pid",
		$opt{role} ? (extra_params => [ '-U', $opt{role} ]) : ());
}

# --- the first statement, its tags, the last query ----------------------------------------
my ($s, $pid) = ph_app_session($node, 'checkout', role => 'app');
$s->query_safe('BEGIN');
$s->query_safe(q{SAVEPOINT a});
$s->query_safe(q{/*route='%2Fcheckout',controller='orders',action='pay%20now'*/ UPDATE orders SET status = 'paid' WHERE id = 1});
$s->query_safe('SELECT 1');
is(origin_of($pid),
	q{/*route='%2Fcheckout',controller='orders',action='pay%20now'*/ UPDATE orders SET status = 'paid' WHERE id = 1 | {"route": "/checkout", "action": "pay now", "controller": "orders"} | SELECT 1},
	'xact_first_query is the UPDATE after BEGIN and SAVEPOINT, with its tags URL-decoded; query is the last statement');
$s->query_safe('COMMIT');
is(origin_of($pid), 'NULL | NULL | COMMIT', 'outside a transaction: none');
$s->query_safe('BEGIN');
$s->query_safe('SELECT touch()');
$s->query_safe('SELECT 2');
like(origin_of($pid), qr/^SELECT touch\(\) \| NULL \| SELECT 2$/,
	"a new transaction resets it; a function's inner UPDATE is not the client's statement");
$s->query_safe('ROLLBACK');
is( $node->safe_psql('postgres', "SELECT xact_first_query FROM pool_health.sessions WHERE pid = $pid", extra_params => [ '-U', 'other' ]),
	'', 'another role does not see it (as with query)');

# several statements in one simple-protocol message (psql's \\; sends
# them together): the statement itself is recorded, not the message
$s->query_safe(q{BEGIN \\; /*route='multi'*/ SELECT 3 \\; SELECT 4});
my $multi = origin_of($pid);
like($multi, qr{^/\*route='multi'\*/ SELECT 3 \| \{"route": "multi"\} \| BEGIN ; /\*route='multi'\*/ SELECT 3 ; SELECT 4$},
	'in a multi-statement message, the statement itself is recorded')
  or note("got: $multi");
$s->query_safe('ROLLBACK');
# a transaction committed earlier in the same message is not the current one
$s->query_safe(q{BEGIN \\; SELECT 'earlier' \\; COMMIT \\; BEGIN});
like(origin_of($pid), qr/^NULL \| NULL \| /, "a transaction that ran no statement yet has none (not the last message's)");
$s->query_safe('ROLLBACK');
# an aborted transaction keeps it (idle_in_transaction_aborted leaks too)
my ($aborted, $aborted_pid) = ph_app_session($node, 'aborted', role => 'app', on_error_stop => 0);
$aborted->query_safe('BEGIN');
$aborted->query_safe(q{SELECT 'before the error' /*route='/pay'*/});
$aborted->query('SELECT 1/0');
my $aborted_origin = origin_of($aborted_pid);
like($aborted_origin, qr{^SELECT 'before the error' /\*route='/pay'\*/ \| \{"route": "/pay"\} \| },
	'an aborted transaction still shows its first statement')
  or note("got: $aborted_origin; " . $node->safe_psql('postgres', "SELECT state FROM pool_health.sessions WHERE pid = $aborted_pid"));
$aborted->quit;
# tags: only a comment that ends (or starts) the statement; spaces allowed
$s->query_safe(q{BEGIN});
$s->query_safe(q{SELECT '/*lit=''x''*/' AS not_a_tag -- /*a='line'*/
});
like(origin_of($pid), qr/ \| NULL \| /, 'a comment in a literal or a line comment is not taken for tags');
$s->query_safe('ROLLBACK');
$s->query_safe(q{BEGIN});
$s->query_safe(q{SELECT 1 /*a ='x', b= 'y' , c='%00', d='z'*/});
like(origin_of($pid), qr/ \| \{"a": "x", "b": "y", "d": "z"\} \| /, 'spaces around keys and values are allowed; a value cut by %00 is left out');
$s->query_safe('ROLLBACK');

# tags found with the server's lexer rules: literals, quoted identifiers,
# dollar quotes and nested comments are what the server reads them as
# (each statement alone in a transaction block, then rolled back)
sub tags_of
{
	my ($sql) = @_;
	$s->query_safe('BEGIN');
	$s->query_safe($sql);
	my ($first, $tags) = split / \| /, origin_of($pid);
	$s->query_safe('ROLLBACK');
	return $tags;
}
my @tag_cases = (
	[ q{SELECT 1 /*nul='a%00b',ok='y'*/}, '{"ok": "y"}', 'a value that decodes to a NUL is left out, not cut' ],
	[ q{SELECT 1 /*k%00ey='v',ok='y'*/}, '{"ok": "y"}', 'so is a key' ],
	[ q{SELECT 1 /* outer /* route='x' */ */}, 'NULL', 'a pair inside a nested comment is not a tag' ],
	[ q{/* note /* route='x' */ */ SELECT 2}, 'NULL', 'nor in a nested comment that starts the statement' ],
	[ q{SELECT '--' AS dashes /*route='real'*/}, '{"route": "real"}', "a '--' string literal hides nothing" ],
	[ q{SELECT E'it\'s -- here' AS e /*route='e'*/}, '{"route": "e"}', "an E'' string with an escaped quote" ],
	[ q{SELECT U&'\0041 -- ' AS u /*route='u'*/}, '{"route": "u"}', "a U&'' string" ],
	[ q{SELECT $$ -- $$ AS d, $t$ it's $$ -- $t$ AS t /*route='dollar'*/}, '{"route": "dollar"}', 'dollar quotes, $$ inside $t$' ],
	[ q{SELECT 1 AS "--", 2 AS "a""/*" /*route='ident'*/}, '{"route": "ident"}', 'quoted identifiers' ],
	[ q{SELECT 'a' AS x -- /*route='line'*/} . "\n", 'NULL', 'a comment in a line comment is not tags' ],
	[ q{SELECT 1 /* see ticket 42 */}, 'NULL', 'a comment of prose is not tags' ],
	[ q{SELECT 1 /*route='ok', and prose*/}, 'NULL', 'nor one that holds pairs and prose' ],
	[ q{SELECT 1 /*bad='%C3%28',good='%C3%A9'*/}, '{"good": "é"}', 'a value not valid in the encoding once decoded is left out' ],
	[ q{SELECT 1 /*esc='it\'s',pct='100%25'*/}, q{{"esc": "it's", "pct": "100%"}}, 'a backslash escapes a quote; %XX decoded' ],
	[ q{/*route='first'*/ SELECT 1 /*route='last'*/}, '{"route": "last"}', 'the comment that ends the statement before the one that starts it' ],
	[ q{SELECT 1 /*a='x',b='} . ('y' x 600) . q{'*/}, '{"a": "x"}', 'of a comment longer than 511 bytes, the pairs that fit whole' ],
);
for my $case (@tag_cases)
{
	my ($sql, $want, $name) = @$case;
	is(tags_of($sql), $want, $name);
}
# standard_conforming_strings off: a backslash escapes a quote in ''
$s->query_safe(q{SET escape_string_warning = off});
$s->query_safe(q{SET standard_conforming_strings = off});
is(tags_of(q{SELECT 'it\'s -- here' AS x /*route='off'*/}), '{"route": "off"}',
	'with standard_conforming_strings off, a backslash escapes a quote');
$s->query_safe(q{SET standard_conforming_strings = on});
# a statement whose text the scan reads differently from the server (the
# setting changed earlier in the same message: the server read the whole
# message with it on) ends in an unterminated literal: no tags, no error
$s->query_safe(q{SET standard_conforming_strings = off \\; BEGIN \\; SELECT 'a\' AS x FROM orders /*t='x'*/});
like(origin_of($pid), qr{^SELECT 'a\\' AS x FROM orders /\*t='x'\*/ \| NULL \| },
	'a literal the scan finds unterminated: the statement, without tags');
$s->query_safe('ROLLBACK');
$s->query_safe(q{SET standard_conforming_strings = on});

# hostile: a comment of 1 MB of nested openers (cost linear in the text;
# spaced, as the server's own lexer takes quadratic time over an unbroken
# run of "/*/*/*")
my $started = time;
$s->query_safe('BEGIN');
$s->query_safe(q{SELECT 'nested' AS n /* } . ('/* ' x 174763) . ('*/ ' x 174764));
my $nested = origin_of($pid);
$s->query_safe('ROLLBACK');
my $took = time - $started;
like($nested, qr{^SELECT 'nested' AS n /\* /\* /\* .* \| NULL \| }s, 'a 1 MB comment of nested openers: no tags');
is(length((split / \| /, $nested)[0]), 1024, 'the statement is kept to first_query_size');
cmp_ok($took, '<', 30, "and it took ${took} s to send, run and read");

# one message of many transactions: each statement is found in it (and
# the cost of finding it does not grow with the message: tools/bench
# multistatement)
$s->query_safe(join(' \\; ', ("BEGIN \\; SELECT 1 /*n='early'*/ \\; COMMIT") x 2000)
	  . q{ \\; BEGIN \\; /*route='last'*/ UPDATE orders SET status = 'x' WHERE id = 2 \\; SELECT 2});
like(origin_of($pid), qr{^/\*route='last'\*/ UPDATE orders SET status = 'x' WHERE id = 2 \| \{"route": "last"\} \| },
	'the last of 2001 transactions in one message: its own statement and tags');
$s->query_safe('ROLLBACK');

# EXPLAIN's query (as CREATE TABLE AS's) is nested in it and has no place
# of its own in the text: the EXPLAIN is the statement, with its own tags
# (none), not those of a transaction before it in the message
$s->query_safe(q{BEGIN \\; /*route='first'*/ SELECT 1 \\; COMMIT \\; BEGIN \\; EXPLAIN SELECT 2 \\; SELECT 3});
like(origin_of($pid), qr{^\s*EXPLAIN SELECT 2 \| NULL \| },
	"EXPLAIN in a message: the statement, without an earlier statement's tags");
$s->query_safe('ROLLBACK');
$s->query_safe(q{BEGIN \\; /*route='ctas'*/ CREATE TEMP TABLE t_ctas AS SELECT 1 AS i \\; SELECT 3});
like(origin_of($pid), qr{^\s*/\*route='ctas'\*/ CREATE TEMP TABLE t_ctas AS SELECT 1 AS i \| \{"route": "ctas"\} \| },
	'CREATE TABLE AS: the statement and its tags');
$s->query_safe('ROLLBACK');

# --- pings and pool housekeeping are not the origin ---------------------------------------
$s->query_safe('BEGIN');
$s->query_safe('SELECT 1');
$s->query_safe(q{SELECT 'ping' AS alive;});
$s->query_safe(q{SET LOCAL work_mem = '8MB'});
$s->query_safe('SHOW work_mem');
$s->query_safe('RESET lock_timeout');
$s->query_safe(q{/*route='%2Forders',controller='orders'*/ UPDATE orders SET status = 'pinged' WHERE id = 1});
$s->query_safe('SELECT 1');
like(origin_of($pid), qr{^/\*route='%2Forders',controller='orders'\*/ UPDATE orders SET status = 'pinged' WHERE id = 1 \| \{"route": "/orders", "controller": "orders"\} \| SELECT 1$},
	'SELECT 1, SELECT of a constant, SET, SHOW and RESET before it: the UPDATE is the first statement');
$s->query_safe('ROLLBACK');
$s->query_safe('BEGIN');
$s->query_safe('SELECT 1');
$s->query_safe(q{UPDATE orders SET status = 'untagged' WHERE id = 1});
$s->query_safe(q{SELECT status FROM orders WHERE id = 1 /*route='later'*/});
$s->query_safe(q{SELECT 2 /*route='even later'*/});
like(origin_of($pid), qr{^UPDATE orders SET status = 'untagged' WHERE id = 1 \| \{"route": "later"\} \| },
	'the tags are those of the first statement that carries tags, a later one');
$s->query_safe('ROLLBACK');
$s->query_safe('BEGIN');
$s->query_safe('SELECT 1;');
$s->query_safe('SELECT 2');
like(origin_of($pid), qr{^SELECT 1 \| NULL \| SELECT 2$}, 'a transaction of pings only shows its first ping');
$s->query_safe('ROLLBACK');
$s->query_safe('BEGIN');
$s->query_safe('SELECT now()');
$s->query_safe('SELECT 1 FROM orders LIMIT 1');
like(origin_of($pid), qr{^SELECT now\(\) \| NULL \| }, 'a SELECT that computes something is not a ping');
$s->query_safe('ROLLBACK');
$s->query_safe(q{UPDATE orders SET status = 'before begin' WHERE id = 2 \\; BEGIN \\; SELECT 3});
like(origin_of($pid), qr{^UPDATE orders SET status = 'before begin' WHERE id = 2 \| NULL \| },
	'a BEGIN after statements of the same transaction (one message) keeps them');
$s->query_safe('ROLLBACK');

# autocommit: the statement is its own first
my ($auto, $auto_pid) = ph_app_session($node, 'auto', role => 'app');
$auto->query_until(qr/^$/, "SELECT pg_sleep(30) /* autocommit */;\n");
ok( $node->poll_query_until('postgres',
		"SELECT xact_first_query = 'SELECT pg_sleep(30) /* autocommit */' FROM pool_health.sessions WHERE pid = $auto_pid"),
	'an autocommit statement is the first of its transaction');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($auto_pid)");

# --- the extended protocol: prepared statements executed again --------------------------------
my $script = "$PostgreSQL::Test::Utils::tmp_check/prepared.sql";
PostgreSQL::Test::Utils::append_to_file($script, q{BEGIN;
/*route='/prepared'*/ UPDATE orders SET status = 'p' WHERE id = 2;
SELECT pg_sleep(1.5);
END;
});
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-M', 'prepared', '-c', '1', '-t', '3', '-f', $script,
	  '-h', $node->host, '-p', $node->port, '-U', 'app', 'postgres' ],
	'>', \$out, '2>', \$err,
	init => sub { $ENV{PGAPPNAME} = 'prepared-client' });
$node->safe_psql('postgres', 'CREATE TABLE seen (xact_start timestamptz, first text)');
# (each poll records what it sees; the next one counts it)
ok( $node->poll_query_until('postgres', q{
		WITH now_seen AS (
		    INSERT INTO seen SELECT xact_start, xact_first_query FROM pool_health.sessions
		    WHERE application_name = 'prepared-client' AND query LIKE 'SELECT pg_sleep%')
		SELECT count(DISTINCT xact_start) >= 2 FROM seen}),
	'pgbench -M prepared ran two transactions (the second executes the prepared UPDATE without parsing)')
  or do { $bench->finish; note("pgbench: $out $err"); };
is( $node->safe_psql('postgres', "SELECT string_agg(DISTINCT first, ',') FROM seen"),
	q{/*route='/prepared'*/ UPDATE orders SET status = 'p' WHERE id = 2},
	'each time the prepared UPDATE is the first statement');
$bench->finish;

# --- an explained termination -----------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('checkout-leaks', 'leaky%', '1s')});
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN pool_health');
my $leaker = client('leaky-checkout');
send_sql($leaker, q{BEGIN;
/*route='/checkout'*/ UPDATE orders SET status = 'paid' WHERE id = 1;
SELECT 1;});
ok(ph_gone($node, $leaker->{pid}), 'the leaked session is ended');
my $error = next_request($leaker);
like($error, qr/FATAL:  terminating connection due to administrator command/,
	'its client gets the usual FATAL, on its next request');
like($error,
	qr{DETAIL:  pool_health ended this session \(policy "checkout-leaks", worker\): idle_in_transaction_timeout 00:00:01 exceeded: idle in transaction for 00:00:01[\d.]*\. The transaction began with: /\*route='/checkout'\*/ UPDATE orders SET status = 'paid' WHERE id = 1},
	'with a DETAIL: pool_health, the policy, the limit, the age, the first statement');
like($error, qr/HINT:  The record of the action is in pool_health.my_terminations, which this session's role can read, and in pool_health.terminations\./, 'and a HINT naming my_terminations');
note("what the client printed:\n$error");
is( $node->safe_psql('postgres', "SELECT xact_first_query || ' | ' || xact_tags::text FROM pool_health.terminations WHERE pid = $leaker->{pid}"),
	q{/*route='/checkout'*/ UPDATE orders SET status = 'paid' WHERE id = 1 | {"route": "/checkout"}},
	'the audit has the first statement and its tags');
like(slurp_file($node->logfile),
	qr{pool_health: terminated session $leaker->{pid} .*\n.*DETAIL:  Policy: checkout-leaks; source: worker; the transaction began with: /\*route='/checkout'\*/ UPDATE},
	'so has the log line');
my $notification = '';
for (1 .. 100)
{
	$notification = $listener->query_safe('SELECT 1');
	last if $notification =~ /"event": "termination"/;
}
like($notification, qr/"event": "termination"/, 'a NOTIFY is sent');
like($notification, qr/"limit_name": "idle_in_transaction_timeout"/, 'naming the limit');
unlike($notification, qr/xact_first_query/,
	'without the statement by default (any role that may connect may LISTEN)');
ph_set($node, 'pool_health.notify_statements' => 'on');
my $leaker2 = client('leaky-again');
send_sql($leaker2, q{BEGIN;
/*route='/checkout'*/ UPDATE orders SET status = 'paid' WHERE id = 1;
SELECT 1;});
ok(ph_gone($node, $leaker2->{pid}), 'another leak is ended');
next_request($leaker2);
$notification = '';
for (1 .. 100)
{
	$notification = $listener->query_safe('SELECT 1');
	last if $notification =~ /"event": "termination"/;
}
like($notification, qr/"xact_first_query": "\/\*route='\/checkout'\*\/ UPDATE orders SET status = 'paid' WHERE id = 1", "xact_tags": \{"route": "\/checkout"\}/,
	'with pool_health.notify_statements = on, the payload carries the statement and its tags');

# a statement that escapes to more than NOTIFY takes: the payload leaves it
# out, and the action is still stored
my $noisy = client('leaky-noisy');
send_sql($noisy, "BEGIN;\nSELECT 1 /*k='" . ("\x01" x 1000) . "'*/;\n");
ok(ph_gone($node, $noisy->{pid}), 'a leak whose statement and tags escape to 12 kB is ended');
next_request($noisy);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $noisy->{pid}"),
	'and audited (the NOTIFY went without the statement)');
$listener->quit;

# the client's DETAIL is ASCII: it converts to any client encoding, so the
# client always gets 57P01
$node->safe_psql('postgres', q{
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES (U&'cleanup-\00e9t\00e9', 'legacy%', '1s')});
my $legacy = client('legacy-client');
send_sql($legacy, "SET client_encoding = 'LATIN1';\nBEGIN;\nSELECT 1;");
ok(ph_gone($node, $legacy->{pid}), 'a LATIN1 client is ended by a policy with a non-ASCII name');
like(next_request($legacy), qr/FATAL:  terminating connection due to administrator command\nDETAIL:  pool_health ended this session \(policy "cleanup-\?\?t\?\?"/,
	'and still gets its FATAL, with the DETAIL in ASCII');

# --- ended by someone else: PostgreSQL's message only ------------------------------------------
my $plain = client('plain');
send_sql($plain, 'BEGIN; SELECT 1;');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($plain->{pid})");
ok(ph_gone($node, $plain->{pid}), 'a session ended by pg_terminate_backend()');
$error = next_request($plain);
like($error, qr/FATAL:  terminating connection due to administrator command/, 'gets the usual FATAL');
unlike($error, qr/pool_health|DETAIL/, 'and nothing from pool_health');

$node->stop;
done_testing();
