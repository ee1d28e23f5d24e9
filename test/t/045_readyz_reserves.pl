# /readyz and the reserves of admission policies: "a new ordinary login
# would be admitted" counts the free slots that other policies'
# reserve_connections keep (as the login path counts them), so /readyz
# turns 503 exactly when an ordinary login would be refused for a
# reserve, says so with ?verbose, and shows reserved_unused; a login the
# reserve covers (its application) is still admitted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

# 20 slots, 3 for superusers: 17 usable
my $http = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('readyz_reserves',
	conf => "max_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\n"
	  . "pool_health.http_listen = '127.0.0.1:$http'");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, reserve_connections)
	VALUES ('web', 'web%', 5);
});
ok($node->poll_query_until('postgres',
	"SELECT (s->'policies'->>'in_effect')::bool FROM pool_health.status() s"), 'web reserves 5 of 17');

# wait until /readyz reports this many used (the facts are cached 100 ms)
sub readyz_at
{
	my ($used) = @_;
	my ($status, $j);
	for (1 .. 100)
	{
		($status, $j) = ph_http_json($http, '/readyz?verbose');
		$j ||= {};
		return ($status, $j) if defined $j->{used} && $j->{used} == $used;
		select(undef, undef, undef, 0.1);
	}
	return ($status, $j);
}

my @held;
sub hold_ordinary
{
	my ($n) = @_;
	for (1 .. $n)
	{
		my ($s) = ph_app_session($node, 'other', role => 'app');
		push @held, $s;
	}
}

# 11 ordinary sessions: 6 free, 5 of them kept by web's reserve, 1 for an ordinary login
hold_ordinary(11);
my ($status, $j) = readyz_at(11);
is($status, '200', '11 used, 6 free, 5 reserved: ready (one slot for an ordinary login)');
is($j->{reserved_unused}, 5, 'reserved_unused 5');

# 12: 5 free, all 5 kept by the reserve: not ready, and an ordinary login is refused
hold_ordinary(1);
($status, $j) = readyz_at(12);
is($status, '503', '12 used, 5 free, 5 reserved: not ready');
like(join(' | ', @{ $j->{reasons} || [] }), qr/5 usable slots free, 5 of them kept by policies' reserves/,
	'the reason says the reserves keep them');
like(ph_try_connect($node, 'other', 'app') // 'admitted', qr/reserve/,
	'and an ordinary login is refused for the reserve, as /readyz said');

# a web login takes a reserved slot: 4 free, 4 reserved, still not ready
is(ph_try_connect($node, 'web-1', 'app'), undef, 'a web login is admitted into its reserve');
($status, $j) = readyz_at(13);
is($status, '503', 'a web session in its reserve: 4 free, 4 reserved, still not ready');
is($j->{reserved_unused}, 4, 'reserved_unused 4');

# ordinary sessions leave: ready again
$_->quit for splice(@held, 0, 2);
($status, $j) = readyz_at(11);
is($status, '200', '11 used, 6 free, 4 reserved: ready again');
is(ph_try_connect($node, 'other', 'app'), undef, 'and an ordinary login is admitted');

ph_close_all();
$_->quit for @held;
$node->stop;
done_testing();
