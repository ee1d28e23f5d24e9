/*-------------------------------------------------------------------------
 *
 * policy_set.c
 *		The policies in effect: the set the worker compiles and publishes
 *		in shared memory, and how every other consumer gets its copy (with
 *		the set's version, in one go under the lock), plus the statement
 *		trigger that tells the worker, at commit, that the table changed.
 *
 * The set in effect is the published one.  It holds at most
 * pool_health.max_policies policies (the first ones in precedence order);
 * the others, and every row that failed validation, are listed as
 * errors (pool_health.policy_errors, status()), with the time each error
 * was first seen, and logged once as a WARNING; so is a reserve a policy
 * before it may shadow (ph_reserve_shadowed_by).  The worker evaluates with
 * the published copy too, so what it enforces is what the views show.
 *
 * Without the preload, each reader compiles the table of its own database.
 *
 * Shared state: PolicySetShared ("pool_health policies"), under its own
 * LWLock (tranche "pool_health policies").  Only the worker writes the
 * set (exclusive); readers copy it out (shared); the login path matches
 * against it in place, under the lock (shared), and counts the session in
 * its policy's quota counter before letting go of it.  The quota
 * counters' names (admission.c) are written under the same lock, held
 * exclusively, when a set is published: a login counts only in a counter
 * of the set it matched.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_database.h"	/* get_database_oid() from PG 19 */
#include "commands/dbcommands.h"	/* get_database_oid() before PG 19 */
#include "commands/trigger.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "admission.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(pool_health_policies_changed);

/* Room for the rows left out, beyond pool_health.max_policies. */
#define ERROR_CAPACITY(max_policies) ((max_policies) + 32)

/*
 * The published set.  policies[] and errors[] follow it in shared memory.
 */
typedef struct PolicySetShared
{
	LWLock	   *lock;			/* fixed at start */
	uint64		generation;		/* bumped at each commit that changes the
								 * table: exclusive lock */
	uint64		compiled_generation;	/* the generation "policies"
										 * reflects: lock */
	uint64		version;		/* bumped at each publication that changed
								 * it: lock */
	bool		compiled;		/* false until the worker has compiled
								 * once: lock */
	int			capacity;		/* pool_health.max_policies, fixed */
	int			count;			/* lock */
	PhPolicy   *policies;		/* fixed; entries: lock */
	int			error_capacity; /* fixed */
	int			nerrors;		/* lock */
	PhPolicyError *errors;		/* fixed; entries: lock */
	Oid			owner;			/* owner of the table the set came from:
								 * lock */
} PolicySetShared;

static PolicySetShared *set = NULL;

static Size
policy_set_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(PolicySetShared));

	size = add_size(size, MAXALIGN(mul_size(sizeof(PhPolicy), ph_max_policies)));
	return add_size(size, mul_size(sizeof(PhPolicyError), ERROR_CAPACITY(ph_max_policies)));
}

void
ph_policy_set_shmem_request(void)
{
	RequestAddinShmemSpace(policy_set_shmem_size());
	RequestNamedLWLockTranche("pool_health policies", 1);
}

/* Caller holds AddinShmemInitLock. */
void
ph_policy_set_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	set = ShmemInitStruct("pool_health policies", policy_set_shmem_size(), &found);
	if (found)
		return;
	memset(set, 0, sizeof(PolicySetShared));
	set->lock = &(GetNamedLWLockTranche("pool_health policies"))->lock;
	storage = (char *) set + MAXALIGN(sizeof(PolicySetShared));
	set->capacity = ph_max_policies;
	set->policies = (PhPolicy *) storage;
	storage += MAXALIGN(sizeof(PhPolicy) * set->capacity);
	set->error_capacity = ERROR_CAPACITY(ph_max_policies);
	set->errors = (PhPolicyError *) storage;
}

/*
 * The reserves must fit in the usable connections together: in precedence
 * order, a policy whose reserve_connections would take the sum of the
 * reserves beyond them is left out (an error), so that a set in effect
 * can always keep every reserve.  max_connections and the reserved slots
 * are fixed until a restart, so the sum is checked against them here,
 * at each compilation, as well as when a row is written.
 */
static void
limit_reserves(PhPolicies *policies)
{
	int			usable = ph_rules_usable(NULL);
	int			sum = 0;
	int			kept = 0;

	for (int i = 0; i < policies->count; i++)
	{
		PhPolicy   *p = &policies->items[i];

		if (p->reserve_connections > usable - sum)
		{
			ph_policy_error(policies, NameStr(p->name),
							"not in effect: reserve_connections %d does not fit: the policies before it reserve %d of the %d usable connections (max_connections minus the reserved slots)",
							p->reserve_connections, sum, usable);
			continue;
		}
		sum += p->reserve_connections;
		policies->items[kept++] = *p;
	}
	policies->count = kept;
}

/*
 * Keep at most pool_health.max_policies policies (in precedence order):
 * the others are errors; then the reserves that fit (limit_reserves).
 */
static void
limit_to_capacity(PhPolicies *policies)
{
	for (int i = ph_max_policies; i < policies->count; i++)
		ph_policy_error(policies, NameStr(policies->items[i].name),
						"not in effect: more than pool_health.max_policies (%d) enabled policies; raise it and restart the server",
						ph_max_policies);
	policies->count = Min(policies->count, ph_max_policies);
	limit_reserves(policies);
}

/*
 * Worker, before publishing: for each policy of the new set, the policy
 * shadowing its reserve (ph_reserve_shadowed_by) when the published set
 * did not have the same pair, else -1 (palloc'd): each is logged once.
 */
static int *
reserves_newly_shadowed(const PhPolicies *policies)
{
	int		   *shadowed = palloc(sizeof(int) * Max(policies->count, 1));

	LWLockAcquire(set->lock, LW_SHARED);
	for (int i = 0; i < policies->count; i++)
	{
		int			j = ph_reserve_shadowed_by(policies->items, policies->count, i);

		shadowed[i] = j;
		for (int o = 0; j >= 0 && set->compiled && o < set->count; o++)
		{
			int			was;

			if (strcmp(NameStr(set->policies[o].name), NameStr(policies->items[i].name)) != 0)
				continue;
			was = ph_reserve_shadowed_by(set->policies, set->count, o);
			if (was >= 0 &&
				strcmp(NameStr(set->policies[was].name), NameStr(policies->items[j].name)) == 0)
				shadowed[i] = -1;
			break;
		}
	}
	LWLockRelease(set->lock);
	return shadowed;
}

/*
 * Worker: publish a compiled set as of generation.  Errors already
 * published keep the time they were first seen; new ones are logged as a
 * WARNING.  The quota counters are assigned (by name) under the lock.
 * Returns whether the policies differ from the published ones.  The
 * policies (items, with their counters) are updated in place.
 */
bool
ph_policy_set_publish(PhPolicies *policies, uint64 generation)
{
	bool		changed;
	bool	   *scratch = palloc(sizeof(bool) * ph_admission_ncounters());
	bool	   *is_new;
	int		   *shadowed_new;
	int			nerrors;

	limit_to_capacity(policies);
	nerrors = Min(policies->nerrors, set->error_capacity);
	is_new = palloc0(sizeof(bool) * Max(nerrors, 1));
	for (int i = 0; i < nerrors; i++)
	{
		PhPolicyError *e = &policies->errors[i];

		is_new[i] = true;
		for (int j = 0; j < set->nerrors; j++)
		{
			if (strcmp(NameStr(set->errors[j].name), NameStr(e->name)) == 0 &&
				strcmp(set->errors[j].error, e->error) == 0)
			{
				e->since = set->errors[j].since;
				is_new[i] = false;
				break;
			}
		}
	}

	shadowed_new = reserves_newly_shadowed(policies);

	LWLockAcquire(set->lock, LW_EXCLUSIVE);
	ph_admission_assign_counters(policies->items, policies->count,
								 set->compiled ? set->policies : NULL,
								 set->compiled ? set->count : 0, scratch);
	set->compiled_generation = generation;
	changed = !set->compiled || policies->count != set->count ||
		set->owner != policies->owner ||
		memcmp(set->policies, policies->items, sizeof(PhPolicy) * policies->count) != 0;
	if (changed)
	{
		if (policies->count > 0)
			memcpy(set->policies, policies->items, sizeof(PhPolicy) * policies->count);
		set->count = policies->count;
		set->owner = policies->owner;
		set->compiled = true;
		set->version++;
	}
	if (nerrors > 0)
		memcpy(set->errors, policies->errors, sizeof(PhPolicyError) * nerrors);
	set->nerrors = nerrors;
	policies->version = set->version;
	policies->published = true;
	LWLockRelease(set->lock);

	for (int i = 0; i < nerrors; i++)
		if (is_new[i])
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 !NameStr(policies->errors[i].name)[0] ?
					 errmsg("pool_health: %s", policies->errors[i].error) :
					 strncmp(policies->errors[i].error, "in effect ", 10) == 0 ?
					 errmsg("pool_health: policy \"%s\" is %s",
							NameStr(policies->errors[i].name), policies->errors[i].error) :
					 errmsg("pool_health: policy \"%s\" is not in effect: %s",
							NameStr(policies->errors[i].name), policies->errors[i].error),
					 errhint("See pool_health.policy_errors.")));
	for (int i = 0; i < policies->count; i++)
	{
		int			j = shadowed_new[i];

		if (j >= 0)
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pool_health: the reserve of policy \"%s\" does not cover the logins policy \"%s\" governs",
							NameStr(policies->items[i].name), NameStr(policies->items[j].name)),
					 errdetail("Policy \"%s\" comes first (priority %d, against %d) and may match the sessions \"%s\" matches: a login both match is governed by \"%s\", and the reserve_connections of \"%s\" (%d) covers only the logins it governs.",
							   NameStr(policies->items[j].name), policies->items[j].priority,
							   policies->items[i].priority, NameStr(policies->items[i].name),
							   NameStr(policies->items[j].name), NameStr(policies->items[i].name),
							   policies->items[i].reserve_connections),
					 errhint("Give policy \"%s\" a higher priority, or narrow the match of \"%s\"; see status()->'policies'->'warnings'.",
							 NameStr(policies->items[i].name), NameStr(policies->items[j].name))));
	}
	pfree(shadowed_new);
	pfree(scratch);
	pfree(is_new);
	return changed;
}

uint64
ph_policy_set_generation(void)
{
	uint64		generation;

	LWLockAcquire(set->lock, LW_SHARED);
	generation = set->generation;
	LWLockRelease(set->lock);
	return generation;
}

/*
 * The set's generations (status()): false without the preload.
 */
bool
ph_policy_set_state(uint64 *generation, uint64 *compiled_generation, bool *compiled)
{
	if (set == NULL)
		return false;
	LWLockAcquire(set->lock, LW_SHARED);
	*generation = set->generation;
	*compiled_generation = set->compiled_generation;
	*compiled = set->compiled;
	LWLockRelease(set->lock);
	return true;
}

/* Has the worker published a set yet? */
bool
ph_policy_set_compiled(void)
{
	uint64		generation;
	uint64		compiled_generation;
	bool		compiled;

	return ph_policy_set_state(&generation, &compiled_generation, &compiled) && compiled;
}

/*
 * Login path: the published policy governing key, if the worker has
 * published a set and one matches; once a set is published,
 * under_lock(policy or NULL, arg) runs with the set's lock held (shared),
 * so that what it does with the policies' counters cannot cross a
 * publication.  Raises nothing; under_lock must not either.  False when
 * no policy governs (or none is known).
 */
bool
ph_policy_set_match(const PhMatchKey *key, PhPolicyMatchFn under_lock, void *arg)
{
	const PhPolicy *p = NULL;

	if (set == NULL)
		return false;
	LWLockAcquire(set->lock, LW_SHARED);
	if (set->compiled)
	{
		p = ph_policy_match(set->policies, set->count, key);
		under_lock(p, arg);
	}
	LWLockRelease(set->lock);
	return p != NULL;
}

/*
 * Copy the published set (policies, errors, version) into *out, in one go
 * under the lock.  False, with nothing copied, until the worker has
 * published once.
 */
bool
ph_policy_set_copy(PhPolicies *out)
{
	int			room_policies = 0;
	int			room_errors = 0;

	memset(out, 0, sizeof(PhPolicies));
	for (;;)
	{
		LWLockAcquire(set->lock, LW_SHARED);
		if (!set->compiled)
		{
			LWLockRelease(set->lock);
			return false;
		}
		if (set->count <= room_policies && set->nerrors <= room_errors)
			break;
		room_policies = set->count;
		room_errors = set->nerrors;
		LWLockRelease(set->lock);
		out->items = palloc(sizeof(PhPolicy) * Max(room_policies, 1));
		out->errors = palloc(sizeof(PhPolicyError) * Max(room_errors, 1));
	}
	out->count = set->count;
	if (set->count > 0)
		memcpy(out->items, set->policies, sizeof(PhPolicy) * set->count);
	out->nerrors = set->nerrors;
	if (set->nerrors > 0)
		memcpy(out->errors, set->errors, sizeof(PhPolicyError) * set->nerrors);
	out->version = set->version;
	out->owner = set->owner;
	out->published = true;
	LWLockRelease(set->lock);
	return true;
}

/*
 * The policies for the views and health endpoints: the published set when
 * there is one (cheap, and the same everywhere), else the table of this
 * database.
 */
void
ph_policies_for_reading(PhPolicies *out)
{
	if (set != NULL && ph_policy_set_copy(out))
		return;
	(void) ph_policies_read(out, true);
	if (set != NULL)
		limit_to_capacity(out);
}

/*
 * The policies for a function that acts: the table itself when this is
 * the database they live in (pool_health.database, or any database without
 * the preload), so that a change just committed applies at once; else the
 * published set.
 */
void
ph_policies_for_acting(PhPolicies *out)
{
	if (set == NULL ||
		MyDatabaseId == get_database_oid(ph_database, true))
	{
		if (ph_policies_read(out, true))
		{
			if (set != NULL)
				limit_to_capacity(out);
			return;
		}
	}
	ph_policies_for_reading(out);
}

/* ---- change notification ---- */

static bool change_pending = false;

/* At commit: a new generation, and a nudge to the worker. */
static void
policies_changed_callback(XactEvent event, void *arg)
{
	if (!change_pending)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		LWLockAcquire(set->lock, LW_EXCLUSIVE);
		set->generation++;
		LWLockRelease(set->lock);
		ph_worker_wake();
		change_pending = false;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		change_pending = false;
}

/* Statement trigger on pool_health.policies. */
Datum
pool_health_policies_changed(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pool_health_policies_changed() was not called as a trigger")));
	if (set != NULL)
	{
		if (!registered)
		{
			RegisterXactCallback(policies_changed_callback, NULL);
			registered = true;
		}
		change_pending = true;
	}
	return PointerGetDatum(NULL);
}
