# Checks: raising a policy's max_logins_per_second and login_burst takes
# effect at the next login (the token bucket of the old rate is dropped:
# it starts full), and login_tokens shows the new bucket.
#
# Attack on issue 23 (login rate limit): raising a policy's
# max_logins_per_second must take effect at the next login.  The token
# bucket (login_tat) is kept across edits, so a bucket that a slow rate
# pushed far ahead keeps refusing under the new, faster rate for as long
# as one interval of the OLD rate: 0.001/s then 1000/s refused logins for
# ~1000 s, with a DETAIL saying "admits 1000 logins per second, 1000 at
# once ... retry after 99xxxx ms".  Under the current rate, the
# theoretical arrival time can never be more than tolerance + interval
# ahead of now; anything further is stale (an older rate, or the clock
# stepped back) and must be treated as a full bucket.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PoolHealthTest;

my $node = ph_node('ratechange',
	conf => "pool_health.sample_interval = '10ms'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	INSERT INTO pool_health.policies (name, application_name, max_logins_per_second, login_burst)
	VALUES ('slow', 'slow%', 0.001, 1);
});

sub in_effect
{
	my ($cond) = @_;
	return $node->poll_query_until('postgres',
		"SELECT (s->'policies'->>'in_effect')::bool AND s->'worker'->>'mode' = 'running' FROM pool_health.status() s")
	  && $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pool_health.usage_by_policy WHERE $cond");
}
ok(in_effect("policy = 'slow' AND max_logins_per_second = 0.001"), 'slow: 1 login per 1000 s');

is(ph_try_connect($node, 'slow-1', 'app'), undef, 'the first login takes the only token');
ph_close_all();
like(ph_try_connect($node, 'slow-1', 'app') // '',
	qr/too many logins for pool_health policy "slow"/, 'the second is refused at 0.001/s');

# the operator raises the rate: 1000 logins per second, 1000 at once
$node->safe_psql('postgres',
	"UPDATE pool_health.policies SET max_logins_per_second = 1000, login_burst = 1000 WHERE name = 'slow'");
ok(in_effect("policy = 'slow' AND max_logins_per_second = 1000 AND login_burst = 1000"),
	'the new rate is published');

my $err = ph_try_connect($node, 'slow-1', 'app');
is($err, undef, 'at 1000 logins per second, 1000 at once, the next login is admitted')
  or diag($err);
ph_close_all();

my $fails = 0;
for my $i (1 .. 10)
{
	$fails++ if defined ph_try_connect($node, 'slow-1', 'app');
	ph_close_all();
}
is($fails, 0, '10 logins in a row at 1000/s with a burst of 1000: none refused');
ok($node->safe_psql('postgres',
	"SELECT login_tokens >= 900 FROM pool_health.usage_by_policy WHERE policy = 'slow'") eq 't',
	'login_tokens shows the bucket of the new rate, nearly full');

# a rate is shown as written: 0.0015, not 0.002 (status(), the DETAIL)
$node->safe_psql('postgres',
	"UPDATE pool_health.policies SET max_logins_per_second = 0.0015, login_burst = 1 WHERE name = 'slow'");
ok($node->poll_query_until('postgres',
	"SELECT q->>'max_logins_per_second' = '0.0015' FROM jsonb_array_elements(pool_health.status()->'policies'->'quotas') q WHERE q->>'policy' = 'slow'"),
	'status() shows the rate 0.0015 as written');
is(ph_try_connect($node, 'slow-1', 'app'), undef,
	'lowered to 0.0015/s: the bucket of the new rate starts full');
ph_close_all();
like(ph_try_connect($node, 'slow-1', 'app') // '',
	qr/DETAIL:  The policy admits 0.0015 logins per second, 1 at once/,
	'the second login is refused, its DETAIL shows the rate as written');

$node->stop;
done_testing();
