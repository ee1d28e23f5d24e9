# Helpers shared by pool_health's TAP tests.
package PoolHealthTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Exporter 'import';
our @EXPORT = qw(ph_node ph_session ph_set ph_app_session ph_gone ph_alive ph_try_connect ph_close_all);

# ph_node(name, preload => 1, conf => "extra lines", create => 1, init => {...})
# A started cluster with pool_health preloaded and the extension created
# in "postgres" (the default pool_health.database).
sub ph_node
{
	my ($name, %opt) = @_;
	my $preload = exists $opt{preload} ? $opt{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} || {} });
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pool_health'") if $preload;
	# preload => 0 with conf setting shared_preload_libraries: as it says
	$node->append_conf('postgresql.conf', $opt{conf}) if $opt{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pool_health')
	  unless defined $opt{create} && !$opt{create};
	return $node;
}

# ph_session(node, db => 'postgres', role => undef, on_error_stop => 1):
# a background psql session; returns it and its backend pid.
sub ph_session
{
	my ($node, %opt) = @_;
	my $psql = $node->background_psql($opt{db} || 'postgres',
		on_error_stop => exists $opt{on_error_stop} ? $opt{on_error_stop} : 1,
		$opt{role} ? (extra_params => [ '-U', $opt{role} ]) : ());
	my $pid = $psql->query_safe('SELECT pg_backend_pid()');
	return ($psql, $pid);
}

# ph_app_session(node, application_name, %opt): a session of that
# application; returns it and its pid.
sub ph_app_session
{
	my ($node, $app, %opt) = @_;
	my ($psql, $pid) = ph_session($node, %opt);
	$psql->query_safe("SET application_name = '$app'");
	return ($psql, $pid);
}

# ph_gone(node, pid): wait until the backend has exited.
sub ph_gone
{
	my ($node, $pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid");
}

# ph_alive(node, pid): is the backend still there?
sub ph_alive
{
	my ($node, $pid) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $pid") eq 't';
}

# ph_set(node, name => value, ...): ALTER SYSTEM and reload, then wait
# until a new session sees the values.
sub ph_set
{
	my ($node, %settings) = @_;
	for my $name (sort keys %settings)
	{
		$node->safe_psql('postgres',
			"ALTER SYSTEM SET $name = '$settings{$name}'");
	}
	$node->reload;
	for my $name (sort keys %settings)
	{
		$node->poll_query_until('postgres',
			"SELECT setting = '$settings{$name}' OR current_setting('$name') = '$settings{$name}' FROM pg_settings WHERE name = '$name'")
		  or die "setting $name did not take effect";
	}
}

# ph_try_connect(node, application_name, role, options): a psql connection
# kept open when admitted (returns undef), else its error text.
# application_name undef: psql's own; options: the startup packet's.
my @open_connections;
sub ph_try_connect
{
	my ($node, $app, $role, $options) = @_;
	my ($stdout, $stderr) = ('', '');
	my $connstr = $node->connstr('postgres') . " user=$role";
	$connstr .= " application_name='$app'" if defined $app;
	$connstr .= " options='$options'" if defined $options;
	# the query comes with -c, nothing is written to psql's input (kept
	# open, empty, to hold the connection): a refusal that ends psql at
	# once leaves no write to fail with a broken pipe
	my $stdin = '';
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $connstr, '-c', "SELECT 'connected'", '-f', '-' ],
		'<', \$stdin, '>', \$stdout, '2>', \$stderr);
	IPC::Run::pump($h) until $stdout =~ /connected/ || !$h->pumpable;
	if ($stdout =~ /connected/)
	{
		push @open_connections, [ $h, \$stdin ];
		return undef;
	}
	$h->finish;
	return $stderr;
}

# ph_close_all(): close the connections ph_try_connect kept open.
sub ph_close_all
{
	for (@open_connections)
	{
		${ $_->[1] } .= "\\q\n";
		$_->[0]->finish;
	}
	@open_connections = ();
}

1;
