/*-------------------------------------------------------------------------
 *
 * admission.c
 *		Admission control at connection time: a ClientAuthentication_hook
 *		(chained to any previous one) that finds the policy governing a new
 *		connection among those the worker published, and refuses it
 *		(FATAL, SQLSTATE 53300) when the policy's max_connections quota is
 *		reached, or when its refuse_at level is reached by the server.
 *
 * The check is O(1) in the number of backends: per-policy counters in
 * shared memory, incremented here when a connection is admitted and
 * decremented when that backend exits, and set right by the worker from
 * its samples (ph_admission_correct) when they drift: after a crash, a
 * change of application_name, or a change of the policies.
 *
 * Never refused: superusers, replication connections, roles listed in
 * pool_health.protected_roles (and background workers, which do not
 * authenticate).  They are counted like any governed session.
 *
 * Shared state: ph_shared->policy_set.policies, read under ph_shared->lock
 * (shared); its counters are atomics, written without the lock; the level
 * is ph_shared->worker.level, read without the lock (one byte).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/varlena.h"

#include "pool_health.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/* The counter this backend was counted in, to give back at exit. */
static int	counted_slot = -1;
static uint64 counted_version = 0;

/* At exit: this backend no longer counts against its policy's quota. */
static void
admission_exit(int code, Datum arg)
{
	PhPolicySet *set = &ph_shared->policy_set;

	/* after a republication the worker recounts: nothing to give back */
	if (counted_slot >= 0 && counted_version == set->version)
		pg_atomic_fetch_sub_u32(&set->counters[counted_slot].connections, 1);
	counted_slot = -1;
}

/* Is the connecting role one pool_health never refuses? */
static bool
never_refused(Port *port)
{
	char	   *list;
	List	   *names;
	ListCell   *lc;
	bool		found = false;
	Oid			role = get_role_oid(port->user_name, true);

	if (OidIsValid(role) && superuser_arg(role))
		return true;
	list = pstrdup(ph_protected_roles);
	if (SplitIdentifierString(list, ',', &names))
	{
		foreach(lc, names)
			if (strcmp((const char *) lfirst(lc), port->user_name) == 0)
				found = true;
	}
	return found;
}

static void
refuse(PhPolicySet *set, int slot)
{
	pg_atomic_fetch_add_u64(&set->counters[slot].refused, 1);
	pg_atomic_fetch_add_u64(&ph_shared->refusals, 1);
}

static void
ph_client_authentication(Port *port, int status)
{
	PhPolicySet *set;
	PhPolicies	view;
	PhMatchKey	key;
	const PhPolicy *p;
	PhPolicy	policy;
	int			slot;
	uint64		version;
	PhLevel		level;
	uint32		connections;

	if (prev_client_auth_hook)
		prev_client_auth_hook(port, status);
	if (status != STATUS_OK || !ph_admission || ph_shared == NULL || am_walsender)
		return;

	set = &ph_shared->policy_set;
	key.database_id = InvalidOid;
	key.role_id = InvalidOid;
	key.database = port->database_name;
	key.role = port->user_name;
	key.application_name = port->application_name;
	key.client_addr = &port->raddr;

	LWLockAcquire(ph_shared->lock, LW_SHARED);
	view.count = set->compiled ? set->count : 0;
	view.items = set->policies;
	p = ph_policy_match(&view, &key);
	if (p != NULL)
	{
		policy = *p;
		slot = (int) (p - set->policies);
		version = set->version;
	}
	LWLockRelease(ph_shared->lock);
	if (p == NULL)
		return;

	/* count first, then check: concurrent connections cannot both slip in */
	connections = pg_atomic_add_fetch_u32(&set->counters[slot].connections, 1);
	counted_slot = slot;
	counted_version = version;
	on_shmem_exit(admission_exit, (Datum) 0);

	level = (PhLevel) ph_shared->worker.level;
	if (policy.max_connections > 0 && connections > (uint32) policy.max_connections &&
		!never_refused(port))
	{
		refuse(set, slot);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("too many connections for pool_health policy \"%s\"",
						NameStr(policy.name)),
				 errdetail("The policy allows %d connections (max_connections) and %u are in use.",
						   policy.max_connections, connections - 1),
				 errhint("Retry when a connection of the policy has closed, or raise max_connections of policy \"%s\" in pool_health.policies.",
						 NameStr(policy.name))));
	}
	if (policy.refuse_at >= 0 && level >= (PhLevel) policy.refuse_at &&
		!never_refused(port))
	{
		refuse(set, slot);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("connection refused by pool_health policy \"%s\": server connection health is %s",
						NameStr(policy.name), ph_level_name(level)),
				 errdetail("The policy refuses new connections while the level is %s or worse (refuse_at), to keep the remaining connections for other applications.",
						   ph_level_name((PhLevel) policy.refuse_at)),
				 errhint("Retry later, or change refuse_at of policy \"%s\" in pool_health.policies.",
						 NameStr(policy.name))));
	}
}

/* From _PG_init, when preloaded. */
void
ph_admission_install_hook(void)
{
	prev_client_auth_hook = ClientAuthentication_hook;
	ClientAuthentication_hook = ph_client_authentication;
}

/*
 * Worker, at each sample: set the counters right from the governed client
 * sessions it sees.  Right after the policies were republished they are
 * set outright; otherwise a counter is corrected only when it disagrees
 * with two samples in a row with the same value, so that connections
 * arriving between a sample and this call are not undone.
 */
void
ph_admission_correct(const PhSnapshot *snap, const PhPolicies *policies,
					 bool republished)
{
	static uint32 *last_seen = NULL;
	static int	last_count = 0;
	PhPolicySet *set = &ph_shared->policy_set;
	uint32	   *observed;

	if (policies->count == 0 || policies->count > set->capacity)
		return;
	observed = palloc0(sizeof(uint32) * policies->count);
	for (int i = 0; i < snap->nbackends; i++)
	{
		const PhBackend *be = &snap->backends[i];

		if (be->is_client && be->policy != NULL)
			observed[be->policy - policies->items]++;
	}
	if (last_seen == NULL || last_count != policies->count)
	{
		if (last_seen)
			pfree(last_seen);
		last_seen = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(uint32) * policies->count);
		last_count = policies->count;
		republished = true;
	}

	for (int i = 0; i < policies->count; i++)
	{
		pg_atomic_uint32 *counter = &set->counters[i].connections;
		uint32		current = pg_atomic_read_u32(counter);

		if (current != observed[i] && (republished || current == last_seen[i]))
		{
			uint32		expected = current;

			(void) pg_atomic_compare_exchange_u32(counter, &expected, observed[i]);
			current = observed[i];
		}
		last_seen[i] = current;
	}
}
