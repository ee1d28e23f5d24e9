# OPTIONS on a probe answers the status GET would, as Patroni's REST API
# does (do_OPTIONS: the status code only), with Allow and no body: HEAD,
# OPTIONS and GET agree on /primary, /replica, /readyz (with ?min_free),
# /replica?lag=, /livez and /health.  A real HAProxy with Patroni's
# documented recipe ("option httpchk OPTIONS /primary", "http-check
# expect status 200") puts this primary UP in the primaries' backend and
# DOWN in the replicas' one (OPTIONS /replica, any 2xx accepted), so no
# connection through the replicas' backend reaches it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $http_port = PostgreSQL::Test::Cluster::get_free_port();
my $node = ph_node('p',
	conf => "listen_addresses = '127.0.0.1'\nmax_connections = 20\nsuperuser_reserved_connections = 3\n"
	  . "pool_health.sample_interval = '100ms'\npool_health.http_listen = '127.0.0.1:$http_port'");

ok(ph_wait_for(10, sub { ph_http_code($http_port, '/livez') eq '200' }), 'the HTTP worker answers');

# OPTIONS, HEAD and GET agree, as Patroni's do
foreach my $path ('/primary', '/replica', '/readyz', '/readyz?min_free=18', '/replica?lag=1MB', '/livez',
	'/health', '/readyz?min_free=x')
{
	my $get = ph_http_code($http_port, $path);
	is(ph_http_code($http_port, $path, '-I'), $get, "HEAD $path: $get as GET");
	is(ph_http_code($http_port, $path, '-X', 'OPTIONS'), $get, "OPTIONS $path: $get as GET");
}
# the status code only, with Allow; /status and /metrics: 204 as before
foreach my $case ([ '/primary', '200' ], [ '/replica', '503' ], [ '/status', '204' ], [ '/metrics', '204' ])
{
	my ($path, $want) = @$case;
	my (undef, $headers, $body) = ph_http_head($http_port, $path, 'OPTIONS');
	like($headers, qr{^HTTP/\S+ $want}, "OPTIONS $path: $want");
	like($headers, qr/^Allow: GET, HEAD, OPTIONS\r?$/mi, "OPTIONS $path: with Allow");
	is($body // '', '', "OPTIONS $path: no body");
}

# Patroni's HAProxy configuration in front of this primary
my ($lb_primary, $lb_replicas) =
  (PostgreSQL::Test::Cluster::get_free_port(), PostgreSQL::Test::Cluster::get_free_port());
my $port = $node->port;
my ($haproxy, $stats, $herr) = ph_haproxy_start(<<"EOF2");
listen primary
    bind 127.0.0.1:$lb_primary
    option httpchk OPTIONS /primary
    http-check expect status 200
    server p 127.0.0.1:$port check port $http_port inter 200ms fall 1 rise 1
listen replicas
    bind 127.0.0.1:$lb_replicas
    option httpchk OPTIONS /replica
    server p 127.0.0.1:$port check port $http_port inter 200ms fall 1 rise 1
EOF2

sub status_of
{
	my ($proxy) = @_;
	return ph_hap_stat($stats)->{"$proxy/p"}{status} // '';
}
# wait until both checks ran a few times
ok(ph_wait_for(10, sub { status_of('primary') =~ /^(UP|DOWN)/ && status_of('replicas') =~ /^(UP|DOWN)/ }),
	'HAProxy checks the server') or diag($$herr);
ok(ph_wait_for(5, sub { status_of('primary') =~ /^UP/ }),
	'OPTIONS /primary with expect status 200: the primary is UP') or diag(status_of('primary'));
ok(ph_wait_for(5, sub { status_of('replicas') =~ /^DOWN/ }),
	'OPTIONS /replica: the primary is not a replica') or diag(status_of('replicas'));
my ($out, $err) = ('', '');
IPC::Run::run([ 'psql', '-XAtq', '-d', "host=127.0.0.1 port=$lb_replicas dbname=postgres connect_timeout=3",
	'-c', 'SELECT pg_is_in_recovery()' ], '>', \$out, '2>', \$err);
isnt($out, "f\n", 'no connection through the replicas\' backend reaches the primary');

$haproxy->kill_kill;
done_testing();
