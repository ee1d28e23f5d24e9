# Names from the shared catalogs in another database's encoding: a role and
# a database named with a LATIN1 byte (created from a LATIN1 database) are
# invalid UTF-8 in a UTF8 database.  Every formatter shows them escaped
# (\xe9), so that no output fails to convert to the client's encoding and
# the HTTP, JSON and Prometheus outputs stay valid UTF-8: the views,
# status(), metrics(), the accounting, the audit (table, log line,
# NOTIFY).  Each such role reads its own records in my_terminations, from
# a database of either encoding.
use strict;
use warnings;

use Encode qw(decode FB_CROAK LEAVE_SRC);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('names',
	init => { extra => [ '--encoding=UTF8', '--locale=C' ] },
	conf => "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'");
is($node->safe_psql('postgres', 'SHOW server_encoding'), 'UTF8', 'the database is UTF8');

# a LATIN1 database, and from it a role and a database named with byte 0xe9
my $role = "r\xe9";
my $db = "d\xe9";
my $long = "\xe9" x 40;			# 160 bytes once escaped
$node->safe_psql('postgres',
	"CREATE DATABASE l1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('l1', qq{SET client_encoding = 'LATIN1';
	CREATE ROLE "$role" LOGIN; CREATE ROLE "$long" LOGIN;
	CREATE DATABASE "$db" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});

# the role holds a transaction open in that database
$ENV{PGCLIENTENCODING} = 'LATIN1';
my $s = $node->background_psql($db, on_error_stop => 1,
	extra_params => [ '-U', $role ]);
$s->query_safe("SET application_name = 'names'; BEGIN; SELECT 1;");
my $pid = $s->query_safe('SELECT pg_backend_pid()');
my $s2 = $node->background_psql('l1', on_error_stop => 1,
	extra_params => [ '-U', $long ]);
$s2->query_safe("SET application_name = 'long'; SELECT 1");
my $long_pid = $s2->query_safe('SELECT pg_backend_pid()');
delete $ENV{PGCLIENTENCODING};

# read from the UTF8 database by a client in LATIN1 (conversion of invalid
# UTF-8 fails there) and one in UTF8 (the bytes must be valid)
sub read_both
{
	my ($sql, $name) = @_;
	my $out;
	for my $encoding ('LATIN1', 'UTF8')
	{
		my ($ret, $stdout, $stderr) = $node->psql('postgres',
			"SET client_encoding = '$encoding'; $sql");
		is($stderr, '', "$name: no error with client_encoding $encoding");
		ok(eval { decode('UTF-8', $stdout, FB_CROAK | LEAVE_SRC); 1 },
			"$name: valid UTF-8") if $encoding eq 'UTF8';
		$out = $stdout;
	}
	return $out;
}

ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.application_stats WHERE application_name = 'names' AND in_xact = 1"),
	'the session is accounted');
is(read_both("SELECT role || ' ' || database FROM pool_health.sessions WHERE pid = $pid", 'sessions'),
	'r\xe9 d\xe9', 'sessions: the names escaped');
is(length(read_both("SELECT role FROM pool_health.sessions WHERE application_name = 'long'", 'sessions, a long name')),
	63, 'a long escaped name is cut to 63 bytes, as a name');
like(read_both('SELECT role FROM pool_health.usage_by_role', 'usage_by_role'),
	qr/^r\\xe9$/m, 'usage_by_role');

# a role named in ASCII as the other is shown does not show alike: its
# backslash is doubled
$node->safe_psql('postgres', q{CREATE ROLE "r\xe9" LOGIN});
my $ascii = $node->background_psql('postgres', extra_params => [ '-U', 'r\xe9' ]);
$ascii->query_safe("SET application_name = 'ascii'; SELECT 1");
is(read_both("SELECT string_agg(role::text, ' ' ORDER BY role) FROM pool_health.usage_by_role WHERE role::text LIKE 'r%'", 'usage_by_role, two roles'),
	'r\\\\xe9 r\\xe9', 'usage_by_role: the ASCII name with its backslash doubled, apart from the escaped one');
my $metrics = read_both('SELECT pool_health.metrics()', 'metrics(), two roles');
ok($metrics =~ /^pool_health_role_connections\{role="r\\\\xe9"\} 1$/m
	  && $metrics =~ /^pool_health_role_connections\{role="r\\\\\\\\xe9"\} 1$/m,
	'metrics(): two series for the two roles');
$ascii->quit;
like(read_both('SELECT database FROM pool_health.usage_by_database', 'usage_by_database'),
	qr/^d\\xe9$/m, 'usage_by_database');
like(read_both('SELECT pool_health.status()::text', 'status()'),
	qr/"role": "r\\\\xe9"/, 'status(): escaped, then JSON-escaped');
like(read_both('SELECT pool_health.metrics()', 'metrics()'),
	qr/^pool_health_role_connections\{role="r\\\\xe9"\} 1$/m, 'metrics(): escaped, then label-escaped');
is(read_both("SELECT role || ' ' || database FROM pool_health.application_stats WHERE application_name = 'names'", 'application_stats'),
	'r\xe9 d\xe9', 'application_stats');
is(read_both("SELECT role || ' ' || database FROM pool_health.pool_advice WHERE application_name = 'names'", 'pool_advice'),
	'r\xe9 d\xe9', 'pool_advice');
read_both('SELECT * FROM pool_health.leaks', 'leaks');

# HTTP: valid UTF-8 whatever it shows
for my $path ('/status', '/metrics')
{
	my ($out, $err) = run_command([ 'curl', '-sS', "http://127.0.0.1:$http_port$path" ]);
	ok(length($out) > 0 && eval { decode('UTF-8', $out, FB_CROAK | LEAVE_SRC); 1 }, "HTTP $path is valid UTF-8");
}

# the ASCII role named as the other is shown holds a transaction open too
my $ascii_s = $node->background_psql('postgres', on_error_stop => 1,
	extra_params => [ '-U', 'r\xe9' ]);
$ascii_s->query_safe("SET application_name = 'names'; BEGIN; SELECT 1;");
my $ascii_pid = $ascii_s->query_safe('SELECT pg_backend_pid()');

# a policy ends the sessions: the audit, its log line and NOTIFY
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN pool_health');
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout) VALUES ('names', 'names', '1s')");
$node->safe_psql('postgres',
	"INSERT INTO pool_health.policies (name, application_name, idle_timeout) VALUES ('long', 'long', '1s')");
ok(ph_gone($node, $pid), 'the policy ends the session');
ok(ph_gone($node, $ascii_pid) && ph_gone($node, $long_pid), 'and those of the other two roles');
is(read_both("SELECT role || ' ' || database FROM pool_health.terminations WHERE pid = $pid", 'terminations'),
	'r\xe9 d\xe9', 'terminations');
is(read_both("SELECT role || ' ' || database FROM pool_health.recent_actions WHERE pid = $pid", 'recent_actions'),
	'r\xe9 d\xe9', 'recent_actions');
ok($node->wait_for_log(qr/terminated session $pid .*role "r\\xe9"/, $log_offset),
	'the log line names the role escaped');
my $notification = '';
for (1 .. 50)
{
	$notification = $listener->query_safe('SELECT 1');
	last if $notification =~ /Asynchronous notification/;
	sleep 0.1;
}
like($notification, qr/"role": ?"r\\\\xe9"/, 'the NOTIFY payload names the role escaped');
ok(eval { decode('UTF-8', $notification, FB_CROAK | LEAVE_SRC); 1 }, 'and is valid UTF-8');

# Each role reads its own records in my_terminations, though the audit
# stored its name escaped: in the UTF8 database (the table's row, its name
# escaped there; the in-memory record the same, so once), and in a LATIN1
# database where the extension is created too (no row in its table; the
# worker's in-memory record, its name escaped in the worker's UTF8, where
# the name is valid text and shown as it is).  Each sees its own only.
$node->safe_psql('l1', 'CREATE EXTENSION pool_health');
# (the worker writes the in-memory records, then the table's rows)
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM pool_health.terminations WHERE pid IN ($pid, $long_pid, $ascii_pid)"),
	'the three are audited');
sub my_terminations
{
	my ($role, $dbname, $pid) = @_;
	# a client in LATIN1 cannot log in to the UTF8 database as a role
	# whose name is not valid UTF-8 (the server's ParameterStatus fails to
	# convert); one in UTF8 can
	local $ENV{PGCLIENTENCODING} = $dbname eq 'l1' ? 'LATIN1' : 'UTF8';
	return $node->safe_psql($dbname,
		"SELECT count(*) FILTER (WHERE pid = $pid) || ' of ' || count(*) || ' ' || coalesce(min(limit_name), '') FROM pool_health.my_terminations",
		extra_params => [ '-U', $role ]);
}
for my $dbname ('postgres', 'l1')
{
	is(my_terminations($role, $dbname, $pid), '1 of 1 idle_in_transaction_timeout',
		"my_terminations in $dbname: the role named with byte 0xe9 reads its record once");
	is(my_terminations($long, $dbname, $long_pid), '1 of 1 idle_timeout',
		"my_terminations in $dbname: the role whose escaped name is cut reads its record once");
}
is(my_terminations('r\xe9', 'postgres', $ascii_pid), '1 of 1 idle_in_transaction_timeout',
	'my_terminations: the ASCII role named as the other is shown reads its record once');
is(my_terminations('r\xe9', 'l1', $ascii_pid), '1 of 1 idle_in_transaction_timeout',
	'my_terminations in l1: and so from the LATIN1 database');

$listener->quit;
eval { $s->quit };
eval { $s2->quit };
eval { $ascii_s->quit };
done_testing();
