# Faults: the audit table refuses a row (one action, not the pass), the worker's
# database dropped and re-created, DROP EXTENSION while the worker
# enforces, a client stalled in authentication (listed with no role on
# PostgreSQL 18) while a policy names a role.  The worker logs, counts, and carries on; the server never
# restarts.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::UNIX;
use PoolHealthTest;

my $node = ph_node('faults', conf => "pool_health.database = 'app'", create => 0);
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', q{
	CREATE EXTENSION pool_health;
	CREATE ROLE web LOGIN;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'web%', '1s');
});
my $postmaster_pid = $node->safe_psql('app', 'SELECT pg_postmaster_start_time()');
ok( $node->poll_query_until('app',
		"SELECT status->'worker'->>'mode' = 'running' FROM pool_health.status() status"),
	'the worker runs in database app');

# --- the audit table refuses a row -----------------------------------------------
# (a trigger of the table's owner refuses the rows of web-1 only): the
# action is still logged and listed, the other actions of the same pass
# are still stored, and the worker carries on
$node->safe_psql('app', q{
	CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
	$$ BEGIN
	    IF NEW.application_name = 'web-1' THEN
	        RAISE EXCEPTION 'audit storage is full (test)';
	    END IF;
	    RETURN NEW;
	END $$;
	CREATE TRIGGER refuse BEFORE INSERT ON pool_health.terminations
	    FOR EACH ROW EXECUTE FUNCTION public.refuse();
});
my ($leaker, $leaker_pid) = ph_app_session($node, 'web-1', db => 'app', role => 'web', on_error_stop => 0);
my ($other, $other_pid) = ph_app_session($node, 'web-1b', db => 'app', role => 'web', on_error_stop => 0);
$leaker->query_safe('BEGIN; SELECT 1;');
$other->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $leaker_pid), 'the leaked session is still ended');
ok(ph_gone($node, $other_pid), 'and so is the other');
ok( $node->wait_for_log(
		qr/WARNING:  pool_health: action on session $leaker_pid not written to pool_health.terminations: audit storage is full \(test\)/),
	'the refused row is reported as a WARNING');
like(slurp_file($node->logfile),
	qr/LOG:  pool_health: terminated session $leaker_pid /,
	'the termination is in the server log');
is($node->safe_psql('app', "SELECT count(*) FROM pool_health.recent_actions WHERE pid = $leaker_pid"),
	'1', 'and in the in-memory list');
ok( $node->poll_query_until('app',
		"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $other_pid"),
	'the other termination is audited in the table');
my $samples = $node->safe_psql('app', "SELECT status->'worker'->>'samples' FROM pool_health.status() status");
ok( $node->poll_query_until('app',
		"SELECT (status->'worker'->>'samples')::int > $samples + 2 FROM pool_health.status() status"),
	'the next cycles run');
$node->safe_psql('app', 'DROP TRIGGER refuse ON pool_health.terminations');
my ($leaker2, $leaker2_pid) = ph_app_session($node, 'web-1', db => 'app', role => 'web', on_error_stop => 0);
$leaker2->query_safe('BEGIN; SELECT 1;');
ok(ph_gone($node, $leaker2_pid), 'once the table accepts rows again');
ok( $node->poll_query_until('app',
		"SELECT count(*) = 1 FROM pool_health.terminations WHERE pid = $leaker2_pid"),
	'the next termination is audited in the table');

# --- DROP EXTENSION while the worker enforces ---------------------------------------------
$node->safe_psql('app', 'DROP EXTENSION pool_health');
my ($leaker3, $leaker3_pid) = ph_app_session($node, 'web-3', db => 'app', role => 'web');
$leaker3->query_safe('BEGIN; SELECT 1;');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $leaker3_pid AND state = 'idle in transaction' AND now() - state_change > interval '2s'");
ok(ph_alive($node, $leaker3_pid), 'without the extension (and its policies) nothing is ended');
$node->safe_psql('app', q{
	CREATE EXTENSION pool_health;
	INSERT INTO pool_health.policies (name, application_name, idle_in_transaction_timeout)
	VALUES ('web', 'web%', '1s');
});
ok(ph_gone($node, $leaker3_pid), 'created again, the policy is enforced again');

# --- a client still authenticating (PostgreSQL 18 lists it, with no role yet) ------------
# while a policy names a role: the worker classifies it without a role,
# matches no role's policy, and counts it
$node->safe_psql('app', q{
	CREATE ROLE pw LOGIN PASSWORD 'secret';
	INSERT INTO pool_health.policies (name, role, idle_in_transaction_timeout)
	VALUES ('by-role', 'web', '1h');
});
$node->append_conf('pg_hba.conf', '');
my $hba = $node->data_dir . '/pg_hba.conf';
my $hba_text = slurp_file($hba);
open my $hba_fh, '>', $hba or die "pg_hba.conf: $!";
print $hba_fh "local all pw scram-sha-256\n$hba_text";
close $hba_fh;
$node->reload;
# a startup packet, then silence: the server waits for the password
my $stalled = IO::Socket::UNIX->new(
	Type => SOCK_STREAM(),
	Peer => $node->host . '/.s.PGSQL.' . $node->port) or die "connect: $!";
my $params = "user\0pw\0database\0app\0\0";
print $stalled pack('NN', 8 + length($params), 196608) . $params;
$stalled->flush;
my $auth_request;
$stalled->sysread($auth_request, 1);
is($auth_request, 'R', 'a client waits in authentication');
$samples = $node->safe_psql('app', "SELECT status->'worker'->>'samples' FROM pool_health.status() status");
ok( $node->poll_query_until('app',
		"SELECT (status->'worker'->>'samples')::int > $samples + 2 FROM pool_health.status() status"),
	'the worker samples on while it does');
close $stalled;

# --- the worker's database dropped and re-created ------------------------------------------
my $worker_pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pool_health'");
$node->safe_psql('postgres', 'DROP DATABASE app WITH (FORCE)');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pool_health' AND datname IS NULL"),
	'the worker comes back without its database');
$node->safe_psql('postgres', 'CREATE DATABASE app');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pool_health' AND datname = 'app'"),
	'and connects when it is created again');
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $postmaster_pid,
	'the server never restarted');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated|TRAP:/,
	'no process crashed');
$node->stop;
done_testing();
