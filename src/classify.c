/*-------------------------------------------------------------------------
 *
 * classify.c
 *		Judgement over one snapshot of backend status: which policy governs
 *		each session and when its first limit expires, which sessions are
 *		leaked and why, the server-wide usage figures, the health level with
 *		the reasons for it, and the back-pressure advice for client pools.
 *
 * Everything here is a function of a PhSnapshot, compiled policies and the
 * current settings; no shared state and no locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "pool_health.h"

/*
 * The limit of policy p that expires first for the session in its current
 * state, and when (0 if none applies).  blocking_timeout is a shorter limit
 * on the transaction's age while other sessions wait on its locks.
 */
static void
governing_deadline(PhBackend *be, const PhPolicy *p)
{
	be->limit = PH_LIMIT_NONE;
	be->limit_usec = 0;
	be->deadline = 0;

#define CONSIDER(lim, usec, since) \
	do { \
		if ((usec) > 0 && (since) != 0 && \
			(be->deadline == 0 || (since) + (usec) < be->deadline)) \
		{ \
			be->limit = (lim); \
			be->limit_usec = (usec); \
			be->deadline = (since) + (usec); \
		} \
	} while (0)

	if (be->state == STATE_IDLEINTRANSACTION ||
		be->state == STATE_IDLEINTRANSACTION_ABORTED)
		CONSIDER(PH_LIMIT_IDLE_IN_TRANSACTION, p->idle_in_transaction_timeout,
				 be->state_change);
	if (be->state == STATE_IDLE)
		CONSIDER(PH_LIMIT_IDLE, p->idle_timeout, be->state_change);
	CONSIDER(PH_LIMIT_TRANSACTION, p->transaction_timeout, be->xact_start);
	if (be->blocking > 0)
		CONSIDER(PH_LIMIT_BLOCKING, p->blocking_timeout, be->xact_start);
#undef CONSIDER
}

/*
 * For every client session: the policy that governs it and the deadline of
 * its first limit, and whether it looks leaked (PhBackend.leak): past a
 * policy limit, or idle in transaction for longer than
 * pool_health.leak_after.
 */
void
ph_classify(PhSnapshot *snap, const PhPolicies *policies)
{
	int64		leak_after = (int64) ph_leak_after_ms * 1000;

	for (int i = 0; i < snap->nbackends; i++)
	{
		PhBackend  *be = &snap->backends[i];
		bool		idle_in_xact = be->state == STATE_IDLEINTRANSACTION ||
			be->state == STATE_IDLEINTRANSACTION_ABORTED;

		be->leak = PH_LEAK_NONE;
		be->policy = NULL;
		be->limit = PH_LIMIT_NONE;
		be->deadline = 0;
		if (!be->is_client)
			continue;

		if (policies != NULL && policies->count > 0)
		{
			PhMatchKey	key;

			ph_match_key_for(be, &key);
			if ((be->policy = ph_policy_match(policies, &key)) != NULL)
				governing_deadline(be, be->policy);
		}

		if (be->deadline != 0 && snap->taken_at >= be->deadline)
		{
			if (be->limit == PH_LIMIT_IDLE)
				be->leak = PH_LEAK_STALE_IDLE;
			else if (be->limit == PH_LIMIT_IDLE_IN_TRANSACTION)
				be->leak = be->state == STATE_IDLEINTRANSACTION_ABORTED ?
					PH_LEAK_IDLE_IN_XACT_ABORTED : PH_LEAK_IDLE_IN_XACT;
			else
				be->leak = PH_LEAK_LONG_XACT;
		}
		else if (idle_in_xact && be->idle_for > leak_after)
			be->leak = be->state == STATE_IDLEINTRANSACTION_ABORTED ?
				PH_LEAK_IDLE_IN_XACT_ABORTED : PH_LEAK_IDLE_IN_XACT;
	}
}

static void
add_reason(PhUsage *usage, char *reason)
{
	if (usage->nreasons < PH_MAX_REASONS)
		usage->reasons[usage->nreasons++] = reason;
}

/* Is used at or above pct percent of usable?  Exact, in integers. */
static bool
at_or_above(int used, int usable, int pct)
{
	return (int64) used * 100 >= (int64) usable * pct;
}

/*
 * Server-wide usage, level and reasons from a classified snapshot.
 * "used" counts client backends only: walsenders, autovacuum and background
 * workers have slots of their own outside max_connections.
 */
void
ph_usage_compute(const PhSnapshot *snap, PhUsage *usage)
{
	int			past_limit = 0;

	memset(usage, 0, sizeof(PhUsage));
	usage->max_connections = MaxConnections;
	usage->reserved_connections = ph_reserved_connections();
	usage->usable = Max(MaxConnections - usage->reserved_connections, 0);
	usage->oldest_xact_age = -1;
	usage->longest_idle_in_transaction = -1;

	for (int i = 0; i < snap->nbackends; i++)
	{
		const PhBackend *be = &snap->backends[i];

		if (!be->is_client)
			continue;
		usage->used++;
		switch (be->state)
		{
			case STATE_RUNNING:
			case STATE_FASTPATH:
				usage->active++;
				break;
			case STATE_IDLE:
				usage->idle++;
				break;
			case STATE_IDLEINTRANSACTION:
			case STATE_IDLEINTRANSACTION_ABORTED:
				usage->idle_in_transaction++;
				usage->longest_idle_in_transaction =
					Max(usage->longest_idle_in_transaction, be->idle_for);
				break;
			default:
				break;
		}
		if (be->waiting)
			usage->waiting++;
		if (be->leak != PH_LEAK_NONE)
		{
			usage->leaked++;
			if (be->deadline != 0 && snap->taken_at >= be->deadline)
				past_limit++;
		}
		usage->oldest_xact_age = Max(usage->oldest_xact_age, be->xact_age);
	}

	usage->free = Max(usage->usable - usage->used, 0);
	usage->usage_percent = usage->usable > 0 ?
		100.0 * usage->used / usage->usable : 100.0;

	if (usage->free == 0)
	{
		usage->capacity_level = PH_LEVEL_EXHAUSTED;
		add_reason(usage, psprintf("no usable connection slot is free (%d used of %d usable)",
				   usage->used, usage->usable));
	}
	else if (at_or_above(usage->used, usage->usable, ph_critical_percent))
	{
		usage->capacity_level = PH_LEVEL_CRITICAL;
		add_reason(usage, psprintf("usage %.1f%% is at or above pool_health.critical_percent (%d%%)",
				   usage->usage_percent, ph_critical_percent));
	}
	else if (at_or_above(usage->used, usage->usable, ph_degraded_percent))
	{
		usage->capacity_level = PH_LEVEL_DEGRADED;
		add_reason(usage, psprintf("usage %.1f%% is at or above pool_health.degraded_percent (%d%%)",
				   usage->usage_percent, ph_degraded_percent));
	}
	usage->level = usage->capacity_level;

	if (usage->leaked > past_limit)
		add_reason(usage, psprintf("%d %s idle in transaction for longer than pool_health.leak_after (%s)",
								   usage->leaked - past_limit,
								   usage->leaked - past_limit == 1 ? "session" : "sessions",
								   GetConfigOptionByName("pool_health.leak_after", NULL, false)));
	if (past_limit > 0)
		add_reason(usage, psprintf("%d %s past a policy limit", past_limit,
								   past_limit == 1 ? "session" : "sessions"));
	if (usage->leaked > 0)
		usage->level = Max(usage->level, PH_LEVEL_DEGRADED);
}

/*
 * Advice for client pools, from the capacity level alone (a leak is a bug
 * to fix, not a reason for every client to slow down), and how many new
 * connections a pool may open: the slots left below the critical
 * threshold, halved while degraded, none from critical on.
 */
PhThrottle
ph_throttle_advice(const PhUsage *usage, int *new_connections)
{
	int			below_critical = Max((int) ((int64) usage->usable * ph_critical_percent / 100) - usage->used, 0);

	below_critical = Min(below_critical, usage->free);
	switch (usage->capacity_level)
	{
		case PH_LEVEL_HEALTHY:
			*new_connections = below_critical;
			return PH_THROTTLE_NONE;
		case PH_LEVEL_DEGRADED:
			*new_connections = below_critical / 2;
			return PH_THROTTLE_MODERATE;
		case PH_LEVEL_CRITICAL:
			*new_connections = 0;
			return PH_THROTTLE_AGGRESSIVE;
		case PH_LEVEL_EXHAUSTED:
			break;
	}
	*new_connections = 0;
	return PH_THROTTLE_EMERGENCY;
}

const char *
ph_level_name(PhLevel level)
{
	switch (level)
	{
		case PH_LEVEL_HEALTHY:
			return "healthy";
		case PH_LEVEL_DEGRADED:
			return "degraded";
		case PH_LEVEL_CRITICAL:
			return "critical";
		case PH_LEVEL_EXHAUSTED:
			return "exhausted";
	}
	return "unknown";
}

const char *
ph_leak_name(PhLeak leak)
{
	switch (leak)
	{
		case PH_LEAK_NONE:
			return NULL;
		case PH_LEAK_IDLE_IN_XACT:
			return "idle_in_transaction";
		case PH_LEAK_IDLE_IN_XACT_ABORTED:
			return "idle_in_transaction_aborted";
		case PH_LEAK_LONG_XACT:
			return "long_transaction";
		case PH_LEAK_STALE_IDLE:
			return "stale_idle";
	}
	return NULL;
}

const char *
ph_throttle_name(PhThrottle throttle)
{
	switch (throttle)
	{
		case PH_THROTTLE_NONE:
			return "none";
		case PH_THROTTLE_MODERATE:
			return "moderate";
		case PH_THROTTLE_AGGRESSIVE:
			return "aggressive";
		case PH_THROTTLE_EMERGENCY:
			return "emergency";
	}
	return "unknown";
}
