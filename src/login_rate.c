/*-------------------------------------------------------------------------
 *
 * login_rate.c
 *		The login rate limit of admission control (max_logins_per_second,
 *		login_burst): a token bucket per policy in GCRA form, kept in one
 *		word of the policy's quota counter and changed by compare-and-swap
 *		(no lock), taken at login (admission.c); a refused login held back
 *		until its token is due; the tokens a bucket holds, for the views.
 *
 * Shared state: QuotaCounter.login_tat and .login_delayed
 * (admission_int.h), atomics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "admission_int.h"

/*
 * How far beyond the most a bucket can be ahead of now (its tolerance
 * plus one interval) a login_tat may be, for concurrent takers that read
 * the clock at slightly different times; further ahead, it is stale (the
 * clock was stepped back) and the bucket counts as full.
 */
#define LOGIN_TAT_SLACK_USEC	(USECS_PER_SEC)

/*
 * A login refused for want of a token is held back until its token is due
 * (at most LOGIN_DELAY_MAX_MS), then refused: a client reconnecting in a
 * loop then tries a few times a second, not a thousand, and costs the
 * server a process only as often.  A held-back login keeps its slot of the
 * server, so at most LOGIN_DELAYED_MAX of a policy are held back at once,
 * and only in a slot no reserve keeps (count_login()); the others are
 * refused at once.
 */
#define LOGIN_DELAY_MAX_MS	200
#define LOGIN_DELAYED_MAX	4

/*
 * The login rate limit of a policy as a token bucket in GCRA form: the
 * emission interval (usec per login) and the tolerance (how far ahead of
 * now the theoretical arrival time may be: login_burst - 1 intervals).
 */
static void
login_rate(const PhPolicy *p, int64 *interval, int64 *tolerance)
{
	double		usec = (double) USECS_PER_SEC / p->max_logins_per_second;

	*interval = Max((int64) rint(usec), 1);
	*tolerance = *interval * (int64) Max(p->login_burst - 1, 0);
}

/*
 * Where a bucket stands at now: login_tat, or now (a full bucket) when
 * login_tat is further ahead than any taker at this rate can have put it
 * (the clock was stepped back, or the bucket is of an older, slower rate).
 */
static int64
login_base(uint64 tat, TimestampTz now, int64 interval, int64 tolerance)
{
	if ((int64) tat - now > tolerance + interval + LOGIN_TAT_SLACK_USEC)
		return now;
	return Max((int64) tat, (int64) now);
}

/*
 * Take a login token from a policy's bucket at now: 0 if one was taken,
 * else how long (usec) until one is there.  Compare-and-swap, no lock.
 */
int64
ph_adm_take_login_token(QuotaCounter *counter, const PhPolicy *p, TimestampTz now)
{
	int64		interval;
	int64		tolerance;
	uint64		tat = pg_atomic_read_u64(&counter->login_tat);

	login_rate(p, &interval, &tolerance);
	for (;;)
	{
		int64		base = login_base(tat, now, interval, tolerance);

		if (base - now > tolerance)
			return base - now - tolerance;
		if (pg_atomic_compare_exchange_u64(&counter->login_tat, &tat,
										   (uint64) (base + interval)))
			return 0;
	}
}

/*
 * Hold a login refused for want of a token back until its token is due,
 * at most LOGIN_DELAY_MAX_MS, if fewer than LOGIN_DELAYED_MAX logins of
 * its policy are held back already (see LOGIN_DELAY_MAX_MS).  Returns how
 * long it waited (usec).  No lock is held; the wait ends early on a
 * signal that sets the latch (shutdown) or the postmaster's death.
 */
int64
ph_adm_hold_back_login(QuotaCounter *counter, int64 retry_after)
{
	int64		waited = 0;

	if (pg_atomic_fetch_add_u32(&counter->login_delayed, 1) < LOGIN_DELAYED_MAX)
	{
		TimestampTz start = GetCurrentTimestamp();
		int64		wait = Min(retry_after, LOGIN_DELAY_MAX_MS * INT64CONST(1000));

		/* the latch may be set already: wait out the time, unless told to die */
		while (waited < wait && !ProcDiePending)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) Max((wait - waited + 999) / 1000, 1),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			waited = GetCurrentTimestamp() - start;
		}
	}
	pg_atomic_fetch_sub_u32(&counter->login_delayed, 1);
	return waited;
}

/*
 * The login tokens a published policy's bucket holds at now (fractional:
 * the next one is on its way), at most login_burst; -1 without a rate
 * limit or a counter.
 */
double
ph_admission_login_tokens(const PhPolicy *policy, TimestampTz now)
{
	QuotaCounter *counter = ph_adm_counter_of(policy);
	int64		interval;
	int64		tolerance;
	int64		ahead;

	if (counter == NULL || policy->max_logins_per_second <= 0)
		return -1;
	login_rate(policy, &interval, &tolerance);
	ahead = login_base(pg_atomic_read_u64(&counter->login_tat), now,
					   interval, tolerance) - now;
	if (ahead <= 0)
		return policy->login_burst;
	return Max((double) (tolerance + interval - ahead) / interval, 0.0);
}
