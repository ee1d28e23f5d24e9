/*-------------------------------------------------------------------------
 *
 * policy_cache.c
 *		The worker's copy of the policies: compiled from the table again
 *		when it changed (a new generation, policy_set.c), when a role or
 *		database did (syscache callbacks), when the extension was dropped or
 *		created, or a while has passed; published for every reader, and kept
 *		in the worker's memory for its own evaluations.
 *
 * State: the worker's own (static, in the worker process only); nothing
 * shared here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "login_name.h"
#include "policy.h"

/*
 * How often the policies are compiled again even without a change notice:
 * triggers do not fire for replicated changes on a standby, nor with
 * session_replication_role = replica.
 */
#define POLICY_RECOMPILE_MS			10000
#define POLICY_RECOMPILE_STANDBY_MS	1000

/* The compiled policies, and what they were compiled from. */
static MemoryContext policy_context = NULL;
static PhPolicies policies;
static uint64 policies_generation = 0;
static bool policies_stale = true;	/* roles or databases changed */
static TimestampTz policies_compiled_at = 0;
static Oid	policies_extension = InvalidOid;	/* the extension they came from */

/* A role or database was created, renamed or dropped: recompile. */
static void
catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	policies_stale = true;
}

/*
 * A relation changed: if it may be the policies table (altered, renamed,
 * replaced, owner changed), recompile.
 */
static void
relation_changed(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == policies.relid || !OidIsValid(policies.relid))
		policies_stale = true;
}

/*
 * Compile the policies again if the table changed (a new generation), a
 * role or database did, the extension was dropped or created (no trigger
 * fires then), or a while has passed, and publish them.  Without the
 * extension the set is empty: nothing is enforced or refused.  If the
 * table is locked by another session, the published set stays as it is
 * and the worker tries again next cycle.  Inside the cycle's transaction.
 * Returns whether the published set changed (the quota counters must be
 * re-homed).
 */
bool
ph_policy_cache_refresh(Oid extension, bool standby)
{
	uint64		generation = ph_policy_set_generation();
	TimestampTz now = GetCurrentTimestamp();
	PhPolicies	fresh;
	MemoryContext old;
	bool		changed;

	if (!policies_stale && generation == policies_generation &&
		extension == policies_extension &&
		ph_policy_set_compiled() &&
		!TimestampDifferenceExceeds(policies_compiled_at, now,
									standby ? POLICY_RECOMPILE_STANDBY_MS : POLICY_RECOMPILE_MS))
		return false;

	/*
	 * Read into the cycle's context, publish, keep a copy.  The table is
	 * read with a snapshot taken after the generation was: a commit bumps
	 * the generation once it is visible, so the rows read are at least
	 * those of that generation (the cycle's snapshot can be older: a
	 * change committed in between was marked compiled but not read).
	 */
	memset(&fresh, 0, sizeof(fresh));
	if (OidIsValid(extension))
	{
		bool		read;

		PushActiveSnapshot(GetLatestSnapshot());
		read = ph_policies_read(&fresh, false);
		PopActiveSnapshot();
		if (!read && fresh.locked)
		{
			policies_stale = true;	/* keep what is published; look again */
			return false;
		}
	}
	policies_compiled_at = now;
	policies_generation = generation;
	policies_extension = extension;
	policies_stale = false;
	changed = ph_policy_set_publish(&fresh, generation);
	ph_login_settings_publish();

	MemoryContextReset(policy_context);
	old = MemoryContextSwitchTo(policy_context);
	policies = fresh;
	policies.items = palloc(sizeof(PhPolicy) * Max(fresh.count, 1));
	memcpy(policies.items, fresh.items, sizeof(PhPolicy) * fresh.count);
	policies.errors = palloc(sizeof(PhPolicyError) * Max(fresh.nerrors, 1));
	memcpy(policies.errors, fresh.errors, sizeof(PhPolicyError) * fresh.nerrors);
	MemoryContextSwitchTo(old);
	return changed;
}


/* Worker, at start: its memory, and the callbacks when connected. */
void
ph_policy_cache_init(bool connected)
{
	policy_context = AllocSetContextCreate(TopMemoryContext,
										   "pool_health policies",
										   ALLOCSET_SMALL_SIZES);
	if (connected)
	{
		CacheRegisterSyscacheCallback(AUTHOID, catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(DATABASEOID, catalog_changed, (Datum) 0);
		CacheRegisterRelcacheCallback(relation_changed, (Datum) 0);
	}
}

/* The worker's copy of the published set (empty until the first refresh). */
const PhPolicies *
ph_policy_cache(void)
{
	return &policies;
}
