/*-------------------------------------------------------------------------
 *
 * evaluate.c
 *		The one evaluation of a snapshot of backend status, that every
 *		consumer formats or acts on: per session the governing policy, the
 *		limit that expires first and when, whether it is leaked and why,
 *		and why pool_health may never act on it; per server the usage
 *		figures, the health level and its reasons, the sessions each policy
 *		governs, and the groups of client sessions (by database, role,
 *		application, client address, or all three names).
 *
 * Nothing is decided anywhere else: the views, status(), metrics(), the
 * worker, cleanup(), terminate_*(), reclaim() and the admission counters
 * all start from a PhEvaluation.  The capacity level is computed by one
 * function (ph_capacity_level), which admission control also calls at
 * login with its exact count of client backends.
 *
 * No shared state is touched here but through policy_set.c (the copy of
 * the published policies) and backend_snapshot.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "backend_snapshot.h"
#include "evaluate.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"

/* How far evaluate follows a chain of lock waits to its root blocker. */
#define MAX_BLOCKING_CHAIN 32

/*
 * The limit of policy p that expires first for the session in its current
 * state, and when (0 if none applies).  blocking_timeout counts from the
 * earliest wait on the session's locks, while any session waits on them.
 */
static void
governing_deadline(PhBackend *be, const PhPolicy *p)
{
	be->limit = PH_LIMIT_NONE;
	be->limit_usec = 0;
	be->deadline = 0;

#define CONSIDER(lim, usec) \
	do { \
		TimestampTz since = ph_rules_episode_start((lim), be->state, be->state_change, \
												   be->xact_start, be->blocking_since); \
		if ((usec) > 0 && since != 0 && \
			(be->deadline == 0 || since + (usec) < be->deadline)) \
		{ \
			be->limit = (lim); \
			be->limit_usec = (usec); \
			be->deadline = since + (usec); \
		} \
	} while (0)

	CONSIDER(PH_LIMIT_IDLE_IN_TRANSACTION, p->idle_in_transaction_timeout);
	CONSIDER(PH_LIMIT_IDLE, p->idle_timeout);
	CONSIDER(PH_LIMIT_TRANSACTION, p->transaction_timeout);
	if (be->blocking > 0)
		CONSIDER(PH_LIMIT_BLOCKING, p->blocking_timeout);
#undef CONSIDER
}

static bool
oid_in(Oid oid, const Oid *oids, int n)
{
	for (int i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

/*
 * Whether roles are superusers, remembered for one evaluation: sessions
 * are many, their roles few.
 */
#define SUPERUSER_MEMO 32
typedef struct SuperuserMemo
{
	int			n;
	Oid			roles[SUPERUSER_MEMO];
	bool		superuser[SUPERUSER_MEMO];
} SuperuserMemo;

static bool
is_superuser(SuperuserMemo *memo, Oid role)
{
	bool		result;

	for (int i = 0; i < memo->n; i++)
		if (memo->roles[i] == role)
			return memo->superuser[i];
	result = superuser_arg(role);
	if (memo->n < SUPERUSER_MEMO)
	{
		memo->roles[memo->n] = role;
		memo->superuser[memo->n++] = result;
	}
	return result;
}

/*
 * Why the session may never be acted on.  A superuser's session may be
 * only if its policy says allow_superuser and the policies' owner is a
 * superuser (a policy cannot grant what its owner could not do by hand).
 */
static PhExemption
exemption(PhBackend *be, const Oid *protected_roles, int nprotected,
		  SuperuserMemo *memo, bool owner_is_superuser)
{
	bool		known = OidIsValid(be->role_id);
	bool		self = be->pid == MyProcPid;
	bool		protected_role = known && oid_in(be->role_id, protected_roles, nprotected);

	/* looked up only when it can matter */
	if (be->is_client && known && !self && !protected_role)
		be->superuser = is_superuser(memo, be->role_id);
	return ph_rules_exemption(be->is_client, known, self, protected_role, be->superuser,
							  be->policy != NULL && be->policy->allow_superuser &&
							  owner_is_superuser);
}

/* Is used at or above pct percent of usable?  Exact, in integers. */
static bool
at_or_above(int used, int usable, int pct)
{
	return (int64) used * 100 >= (int64) usable * pct;
}

/*
 * The capacity level of used client backends out of usable slots.  Pure
 * arithmetic on the settings: the login path calls it.
 */
PhLevel
ph_capacity_level(int used, int usable)
{
	if (used >= usable)
		return PH_LEVEL_EXHAUSTED;
	if (at_or_above(used, usable, ph_critical_percent))
		return PH_LEVEL_CRITICAL;
	if (at_or_above(used, usable, ph_degraded_percent))
		return PH_LEVEL_DEGRADED;
	return PH_LEVEL_HEALTHY;
}

/*
 * How many connections are in use, in the one wording of every message:
 * "36 of 37 usable connections in use", and, when superusers hold some of
 * the reserved slots beyond them, "37 of 37 usable connections in use, and
 * 1 in the slots reserved for superusers" (used counts them both).
 * palloc'd.
 */
char *
ph_usage_words(int used, int usable)
{
	int			in_usable = Min(used, usable);

	if (used > in_usable)
		return psprintf("%d of %d usable connections in use, and %d in the slots reserved for superusers",
						in_usable, usable, used - in_usable);
	return psprintf("%d of %d usable connections in use", used, usable);
}

static void
add_reason(PhUsage *usage, char *reason)
{
	if (usage->nreasons < PH_MAX_REASONS)
		usage->reasons[usage->nreasons++] = reason;
}

/*
 * The reason for sessions waiting on locks longer than
 * pool_health.lock_wait_after, naming the session at the root of most of
 * their wait chains (the first such root, in the snapshot's order, when
 * several are tied).  Each chain is followed by pid lookups in the
 * snapshot's pid index: O(waiters x log backends), not waiters x
 * backends.
 */
static void
lock_wait_reason(const PhSnapshot *snap, PhUsage *usage, bool catalog)
{
	int64		after = (int64) ph_lock_wait_after_ms * 1000;
	int		   *roots = palloc(sizeof(int) * Max(usage->lock_waits, 1));
	int		   *behind = palloc0(sizeof(int) * Max(snap->nbackends, 1));
	int			nroots = 0;
	int			root = 0;
	int			best = 0;
	const PhBackend *blocker;

	for (int i = 0; i < snap->nbackends; i++)
	{
		const PhBackend *be = &snap->backends[i];
		const PhBackend *at = be;

		if (!be->is_client || !be->waiting || be->wait_start == 0 ||
			snap->taken_at - be->wait_start < after || nroots == usage->lock_waits)
			continue;
		for (int hop = 0; hop < MAX_BLOCKING_CHAIN && at->blocked_by != 0; hop++)
		{
			const PhBackend *next = ph_snapshot_find_pid(snap, at->blocked_by);

			if (next == NULL || next == be)
				break;
			at = next;
		}
		roots[nroots++] = at - snap->backends;
		behind[at - snap->backends]++;
	}
	for (int i = 0; i < nroots; i++)
	{
		if (behind[roots[i]] > best)
		{
			best = behind[roots[i]];
			root = snap->backends[roots[i]].pid;
		}
	}
	blocker = root != 0 ? ph_snapshot_find_pid(snap, root) : NULL;
	if (blocker != NULL && blocker->waiting == false)
		add_reason(usage, psprintf("%d %s waiting on locks for longer than pool_health.lock_wait_after (%s), %d of them behind session %d (role \"%s\", application \"%s\")",
								   usage->lock_waits,
								   usage->lock_waits == 1 ? "session" : "sessions",
								   GetConfigOptionByName("pool_health.lock_wait_after", NULL, false),
								   best, blocker->pid,
								   catalog && OidIsValid(blocker->role_id) ?
								   ph_role_name(blocker->role_id) : "?",
								   blocker->application_name));
	else
		add_reason(usage, psprintf("%d %s waiting on locks for longer than pool_health.lock_wait_after (%s)",
								   usage->lock_waits,
								   usage->lock_waits == 1 ? "session" : "sessions",
								   GetConfigOptionByName("pool_health.lock_wait_after", NULL, false)));
	pfree(roots);
	pfree(behind);
}

/* The server-wide figures, level and reasons of an evaluated snapshot. */
static void
compute_usage(const PhSnapshot *snap, PhUsage *usage, bool catalog)
{
	int			past_limit = 0;
	int64		lock_wait_after = (int64) ph_lock_wait_after_ms * 1000;

	memset(usage, 0, sizeof(PhUsage));
	usage->max_connections = MaxConnections;
	usage->usable = ph_rules_usable(&usage->reserved_connections);
	usage->oldest_xact_age = -1;
	usage->longest_idle_in_transaction = -1;

	for (int i = 0; i < snap->nbackends; i++)
	{
		const PhBackend *be = &snap->backends[i];

		if (!be->is_client)
			continue;
		usage->used++;
		switch (ph_rules_state_bucket(be->state))
		{
			case PH_BUCKET_ACTIVE:
				usage->active++;
				break;
			case PH_BUCKET_IDLE:
				usage->idle++;
				break;
			case PH_BUCKET_IDLE_IN_XACT:
				usage->idle_in_transaction++;
				usage->longest_idle_in_transaction =
					Max(usage->longest_idle_in_transaction, be->idle_for);
				break;
			case PH_BUCKET_OTHER:
				break;
		}
		if (be->waiting)
		{
			usage->waiting++;
			if (be->wait_start != 0 && snap->taken_at - be->wait_start >= lock_wait_after)
				usage->lock_waits++;
		}
		if (be->leak != PH_LEAK_NONE)
		{
			usage->leaked++;
			if (be->deadline != 0 && snap->taken_at >= be->deadline)
				past_limit++;
		}
		usage->oldest_xact_age = Max(usage->oldest_xact_age, be->xact_age);
	}

	usage->reserved_used = Max(usage->used - usage->usable, 0);
	usage->free = Max(usage->usable - usage->used, 0);
	usage->usage_percent = usage->usable > 0 ?
		100.0 * Min(usage->used, usage->usable) / usage->usable : 100.0;

	usage->capacity_level = ph_capacity_level(usage->used, usage->usable);
	switch (usage->capacity_level)
	{
		case PH_LEVEL_EXHAUSTED:
			/* (the reserved slots in use are a reason of their own) */
			add_reason(usage, psprintf("no usable connection slot is free (%s)",
									   ph_usage_words(Min(usage->used, usage->usable),
													  usage->usable)));
			break;
		case PH_LEVEL_CRITICAL:
			add_reason(usage, psprintf("usage %.1f%% is at or above pool_health.critical_percent (%d%%)",
									   usage->usage_percent, ph_critical_percent));
			break;
		case PH_LEVEL_DEGRADED:
			add_reason(usage, psprintf("usage %.1f%% is at or above pool_health.degraded_percent (%d%%)",
									   usage->usage_percent, ph_degraded_percent));
			break;
		case PH_LEVEL_HEALTHY:
			break;
	}
	if (usage->reserved_used > 0)
		add_reason(usage, psprintf("%d %s in slots reserved for superusers",
								   usage->reserved_used,
								   usage->reserved_used == 1 ? "session is" : "sessions are"));
	usage->level = usage->capacity_level;

	if (usage->leaked > past_limit)
		add_reason(usage, psprintf("%d %s idle in transaction for longer than pool_health.leak_after (%s)",
								   usage->leaked - past_limit,
								   usage->leaked - past_limit == 1 ? "session" : "sessions",
								   GetConfigOptionByName("pool_health.leak_after", NULL, false)));
	if (past_limit > 0)
		add_reason(usage, psprintf("%d %s past a policy limit", past_limit,
								   past_limit == 1 ? "session" : "sessions"));
	if (usage->lock_waits > 0)
		lock_wait_reason(snap, usage, catalog);
	if (usage->leaked > 0 || usage->lock_waits > 0)
		usage->level = Max(usage->level, PH_LEVEL_DEGRADED);
}

/*
 * Evaluate eval->snap, already taken, with the given policies.  Without
 * the catalog (a process connected to no database: the HTTP worker), no
 * role is looked up: exemptions are only those of the backend type, and
 * the reasons name no role.
 */
static void
evaluate_snapshot(PhEvaluation *eval, const PhPolicies *policies, bool catalog)
{
	PhSnapshot *snap = &eval->snap;
	int64		leak_after = (int64) ph_leak_after_ms * 1000;
	int			nprotected = 0;
	Oid		   *protected_roles = catalog ? ph_protected_role_oids(&nprotected) : NULL;
	SuperuserMemo memo;
	bool		owner_is_superuser;

	memo.n = 0;
	owner_is_superuser = catalog && OidIsValid(policies->owner) &&
		is_superuser(&memo, policies->owner);
	eval->catalog = catalog;
	eval->policies = *policies;
	eval->governed = palloc0(sizeof(int) * Max(policies->count, 1));

	for (int i = 0; i < snap->nbackends; i++)
	{
		PhBackend  *be = &snap->backends[i];

		be->leak = PH_LEAK_NONE;
		be->policy = NULL;
		be->limit = PH_LIMIT_NONE;
		be->limit_usec = 0;
		be->deadline = 0;
		be->superuser = false;
		if (be->is_client && OidIsValid(be->role_id) && policies->count > 0)
		{
			PhMatchKey	key;

			key.database_id = be->database_id;
			key.role_id = be->role_id;
			key.database = NULL;
			key.application_name = be->application_name;
			key.client_addr = &be->client_addr;
			be->policy = ph_policy_match(policies->items, policies->count, &key);
			if (be->policy != NULL)
			{
				eval->governed[be->policy - policies->items]++;
				governing_deadline(be, be->policy);
			}
		}
		if (catalog)
			be->exemption = exemption(be, protected_roles, nprotected, &memo,
									  owner_is_superuser);
		else
			be->exemption = ph_rules_exemption(be->is_client, OidIsValid(be->role_id),
											   false, false, false, false);
		if (!be->is_client)
			continue;

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
		else if (ph_idle_in_transaction(be->state) && be->idle_for > leak_after)
			be->leak = be->state == STATE_IDLEINTRANSACTION_ABORTED ?
				PH_LEAK_IDLE_IN_XACT_ABORTED : PH_LEAK_IDLE_IN_XACT;
	}
	compute_usage(snap, &eval->usage, catalog);
}

/*
 * Evaluate a fresh snapshot with the given policies (copied into eval).
 * flags: PH_SNAPSHOT_QUERY for the query texts.
 */
void
ph_evaluate_with(PhEvaluation *eval, const PhPolicies *policies, int flags)
{
	ph_snapshot_take(&eval->snap, (flags & PH_SNAPSHOT_QUERY) | PH_SNAPSHOT_BLOCKING);
	evaluate_snapshot(eval, policies, (flags & PH_EVAL_NO_CATALOG) == 0);
}

/*
 * Evaluate a fresh snapshot with the policies in effect: the published
 * set, or with PH_EVAL_TABLE_POLICIES the table where it lives (functions
 * that act, so that a change just committed applies).  Those take the
 * snapshot first and then read the table, which may wait for a lock:
 * whatever happens meanwhile is caught by the re-check before each action
 * (test/isolation/specs/recheck.spec).
 */
void
ph_evaluate(PhEvaluation *eval, int flags)
{
	PhPolicies	policies;

	if (flags & PH_EVAL_TABLE_POLICIES)
	{
		ph_snapshot_take(&eval->snap, (flags & PH_SNAPSHOT_QUERY) | PH_SNAPSHOT_BLOCKING);
		ph_policies_for_acting(&policies);
		evaluate_snapshot(eval, &policies, true);
		return;
	}
	if (flags & PH_EVAL_NO_CATALOG)
	{
		/* the published set, or none: the table cannot be read */
		if (!ph_shmem_ready() || !ph_policy_set_copy(&policies))
			memset(&policies, 0, sizeof(policies));
	}
	else
		ph_policies_for_reading(&policies);
	ph_evaluate_with(eval, &policies, flags);
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

/* A duration as interval text, e.g. 00:05:00.123. */
char *
ph_duration_text(int64 usec)
{
	Interval	iv;

	memset(&iv, 0, sizeof(iv));
	iv.time = usec;
	return DatumGetCString(DirectFunctionCall1(interval_out,
											   DirectFunctionCall1(interval_justify_hours,
																   IntervalPGetDatum(&iv))));
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

const char *
ph_exemption_name(PhExemption exemption)
{
	switch (exemption)
	{
		case PH_EXEMPT_NONE:
			return NULL;
		case PH_EXEMPT_NOT_CLIENT:
			return "not a client backend";
		case PH_EXEMPT_STARTING:
			return "authenticating";
		case PH_EXEMPT_SELF:
			return "the calling session";
		case PH_EXEMPT_PROTECTED:
			return "role listed in pool_health.protected_roles";
		case PH_EXEMPT_SUPERUSER:
			return "superuser session";
	}
	return NULL;
}
