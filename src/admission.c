/*-------------------------------------------------------------------------
 *
 * admission.c
 *		Admission control at connection time: a ClientAuthentication_hook
 *		(chained to any previous one) that counts every client backend,
 *		finds the policy governing a new connection among those the worker
 *		published, and refuses it (FATAL, SQLSTATE 53300) when the policy's
 *		max_connections quota is reached, or when the server's capacity
 *		level is at or above the policy's refuse_at.
 *
 * The login path fails open.  Superusers, replication connections and
 * roles listed in pool_health.protected_roles are admitted before any
 * policy is looked at (only the role lookups the server itself makes next
 * run first).  The application_name is settled as the server will settle
 * it (startup packet, "options", ALTER ROLE/DATABASE ... SET as the worker
 * published them from pg_db_role_setting, the server's setting), without
 * reading any catalog but the role lookups.  Matching cannot raise: patterns, networks and
 * names were validated when the worker compiled them, and the matcher
 * (policy_match.c) allocates nothing.  Nothing that can raise runs while
 * a lock is held; a refusal is raised after it is released.
 *
 * The counts are exact by construction, O(1) per connection:
 *	- admission.clients counts client backends from authentication to
 *	  exit; the capacity level for refuse_at is computed from it at login
 *	  (not from the last sample, and not raised by leaks);
 *	- a governed connection is counted in its policy's quota counter at
 *	  login, under the shared lock, and gives its count back at exit;
 *	  counters are keyed by policy name, so republishing the policies
 *	  neither loses nor double-counts anything;
 *	- admission.counted[] records, per PGPROC, the backend's pid and the
 *	  counter it is counted in; a backend that gets a PGPROC whose
 *	  previous backend has not yet given its count back (it does so after
 *	  releasing the PGPROC) gives it back for it, by compare-and-swap.
 *	  The worker moves a session between counters only by
 *	  compare-and-swap on that entry (ph_admission_rehome),
 *	  when two samples in a row show it governed by another policy
 *	  (application_name changed, policies changed, or it connected before
 *	  its policy existed); it increments the new counter before the swap and
 *	  decrements the old one after, so a count can be one too high for an
 *	  instant, never too low, and never below the sessions counted at
 *	  login but not yet visible in backend status.
 * Superusers and protected roles are neither refused nor counted.
 *
 * Shared state: AdmissionShared ("pool_health admission"), field by field
 * below: atomics; the counters' names, under the published policy set's
 * lock (policy_set.c), which the login path holds while it matches and
 * counts.  The application_name a connection will have is settled by
 * login_name.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "compat.h"
#include "admission.h"
#include "app_accounting.h"
#include "evaluate.h"
#include "history.h"
#include "login_name.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/*
 * This backend: counted in admission.clients, exit callback registered,
 * and its PGPROC number (MyProc is gone when the callback runs).
 */
static bool counted_as_client = false;
static bool exit_registered = false;
static int	my_procno = -1;

#define COUNTED(pid, state)	(((uint64) (uint32) (pid) << 32) | (uint32) (state))
#define COUNTED_PID(v)		((int) (uint32) ((v) >> 32))
#define COUNTED_STATE(v)	((uint32) ((v) & 0xFFFFFFFF))

/*
 * A quota counter.  Keyed by policy name, so that a republication keeps
 * what was counted.  policy and in_use are written by the worker under the
 * policy set's lock, exclusive (ph_admission_assign_counters, called back
 * by ph_policy_set_publish), and read under it; the counts are atomics,
 * changed without the lock by connecting and exiting backends and by the
 * worker.
 */
typedef struct QuotaCounter
{
	NameData	policy;
	bool		in_use;
	pg_atomic_uint32 connections;	/* sessions counted in it now */
	pg_atomic_uint64 refused;	/* connections refused since it was made */
} QuotaCounter;

/*
 * counted[] holds, per PGPROC number, the pid of the client backend in it
 * (high 32 bits) and the counter it is counted in (low 32 bits: 0 none,
 * k + 1 counter k, COUNTED_EXITED once it has given its count back).
 * Only the backend itself (at login and exit) and the worker (by
 * compare-and-swap on an entry with that backend's pid) change an entry.
 */
#define COUNTED_EXITED	0xFFFFFFFF

typedef struct AdmissionShared
{
	pg_atomic_uint32 clients;	/* client backends past authentication */
	int			ncounters;		/* fixed: 2 x pool_health.max_policies */
	QuotaCounter *counters;		/* fixed; see QuotaCounter */
	int			nprocs;			/* fixed */
	pg_atomic_uint64 *counted;	/* fixed; atomics, see above */
} AdmissionShared;

static AdmissionShared *admission = NULL;

static Size
admission_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(AdmissionShared));

	size = add_size(size, MAXALIGN(mul_size(sizeof(QuotaCounter), 2 * ph_max_policies)));
	return add_size(size, mul_size(sizeof(pg_atomic_uint64), MaxBackends));
}

void
ph_admission_shmem_request(void)
{
	RequestAddinShmemSpace(admission_shmem_size());
}

/* Caller holds AddinShmemInitLock. */
void
ph_admission_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	admission = ShmemInitStruct("pool_health admission", admission_shmem_size(), &found);
	if (found)
		return;
	memset(admission, 0, sizeof(AdmissionShared));
	storage = (char *) admission + MAXALIGN(sizeof(AdmissionShared));
	pg_atomic_init_u32(&admission->clients, 0);
	admission->ncounters = 2 * ph_max_policies;
	admission->counters = (QuotaCounter *) storage;
	storage += MAXALIGN(sizeof(QuotaCounter) * admission->ncounters);
	for (int i = 0; i < admission->ncounters; i++)
	{
		memset(&admission->counters[i].policy, 0, sizeof(NameData));
		admission->counters[i].in_use = false;
		pg_atomic_init_u32(&admission->counters[i].connections, 0);
		pg_atomic_init_u64(&admission->counters[i].refused, 0);
	}
	admission->nprocs = MaxBackends;
	admission->counted = (pg_atomic_uint64 *) storage;
	for (int i = 0; i < admission->nprocs; i++)
		pg_atomic_init_u64(&admission->counted[i], 0);
}

static pg_atomic_uint64 *
counted_entry(int procno)
{

	if (procno < 0 || procno >= admission->nprocs)
		return NULL;
	return &admission->counted[procno];
}

/* Give back a count (state k + 1: counter k). */
static void
release_count(uint32 state)
{

	if (state != 0 && state != COUNTED_EXITED && state <= (uint32) admission->ncounters)
		pg_atomic_fetch_sub_u32(&admission->counters[state - 1].connections, 1);
}

/*
 * At exit (on_proc_exit: after the shared-memory callbacks, ProcKill
 * included, so MyProc is gone): give back what this backend was counted
 * in.  Never fails.
 */
static void
admission_exit(int code, Datum arg)
{
	pg_atomic_uint64 *entry = counted_entry(my_procno);

	if (entry != NULL)
	{
		uint64		old = pg_atomic_read_u64(entry);

		while (COUNTED_PID(old) == MyProcPid && COUNTED_STATE(old) != COUNTED_EXITED)
		{
			if (pg_atomic_compare_exchange_u64(entry, &old,
											   COUNTED(MyProcPid, COUNTED_EXITED)))
			{
				release_count(COUNTED_STATE(old));
				break;
			}
		}
	}
	if (counted_as_client)
	{
		pg_atomic_fetch_sub_u32(&admission->clients, 1);
		counted_as_client = false;
	}
}

/* ---- the hook ---- */

/*
 * Count a refusal, and give back the count this connection took at once
 * (not at its exit): a refused connection holds no place in the quota.
 */
static void
count_refusal(int counter, pg_atomic_uint64 *entry, const Port *port, Oid role,
			  const char *application)
{
	ph_accounting_refused(port->database_name, role, application);
	if (counter >= 0)
		pg_atomic_fetch_add_u64(&admission->counters[counter].refused, 1);
	ph_history_count_refusal();
	if (entry != NULL)
	{
		uint64		old = pg_atomic_exchange_u64(entry, COUNTED(MyProcPid, 0));

		if (COUNTED_PID(old) == MyProcPid)
			release_count(COUNTED_STATE(old));
	}
}

/* What a login takes from its governing policy, under the set's lock. */
typedef struct LoginMatch
{
	pg_atomic_uint64 *entry;	/* this backend's counted[] entry, or NULL */
	NameData	policy_name;
	int32		max_connections;
	int8		refuse_at;
	int32		counter;		/* -1: not counted */
	uint32		connections;	/* counted in it, this login included */
} LoginMatch;

/*
 * Called under the published set's lock (shared): count the login in its
 * policy's counter, first, then check: concurrent logins cannot both slip
 * in.  Raises nothing.
 */
static void
count_login(const PhPolicy *p, void *arg)
{
	LoginMatch *m = (LoginMatch *) arg;

	m->policy_name = p->name;
	m->max_connections = p->max_connections;
	m->refuse_at = p->refuse_at;
	m->counter = p->counter;
	if (m->counter >= 0 && m->counter < admission->ncounters)
	{
		m->connections = pg_atomic_add_fetch_u32(&admission->counters[m->counter].connections, 1);
		if (m->entry != NULL)
			pg_atomic_write_u64(m->entry, COUNTED(MyProcPid, m->counter + 1));
	}
	else
		m->counter = -1;		/* no counter: the quota cannot be kept */
}

/*
 * The admission decision for an authenticated, non-replication connection
 * (admission on).
 */
static void
admit(Port *port, pg_atomic_uint64 *entry)
{
	Oid			role;
	char		name[NAMEDATALEN];
	PhMatchKey	key;
	LoginMatch	m;
	NameData	policy_name;
	int32		max_connections;
	int8		refuse_at;
	int32		counter;
	uint32		connections;

	/* the lookups InitializeSessionUserId() makes right after this hook */
	role = get_role_oid(port->user_name, true);
	if (ph_rules_exemption(true, OidIsValid(role), false,
						   OidIsValid(role) && ph_role_name_protected(port->user_name),
						   OidIsValid(role) && superuser_arg(role), false) != PH_EXEMPT_NONE)
		return;

	ph_login_application_name(port, role, name);
	key.database_id = InvalidOid;
	key.role_id = role;
	key.database = port->database_name;
	key.application_name = name;
	key.client_addr = &port->raddr;

	memset(&m, 0, sizeof(m));
	m.entry = entry;
	if (!ph_policy_set_match(&key, count_login, &m))
		return;
	policy_name = m.policy_name;
	max_connections = m.max_connections;
	refuse_at = m.refuse_at;
	counter = m.counter;
	connections = m.connections;

	if (max_connections > 0 && counter >= 0 && connections > (uint32) max_connections)
	{
		count_refusal(counter, entry, port, role, name);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("too many connections for pool_health policy \"%s\"",
						NameStr(policy_name)),
				 errdetail("Connections governed by the policy: %u open, at most %d allowed (max_connections).",
						   connections - 1, max_connections),
				 errhint("Retry when a connection of the policy has closed, or raise max_connections of policy \"%s\" in pool_health.policies.",
						 NameStr(policy_name))));
	}
	if (refuse_at >= 0)
	{
		int			usable = ph_rules_usable(NULL);
		int			used = (int) pg_atomic_read_u32(&admission->clients) - 1;
		PhLevel		level = ph_capacity_level(used, usable);

		if (level >= (PhLevel) refuse_at)
		{
			count_refusal(counter, entry, port, role, name);
			ereport(FATAL,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("connection refused by pool_health policy \"%s\": server connection health is %s",
							NameStr(policy_name), ph_level_name(level)),
					 errdetail("%s. The policy refuses new connections while the capacity level is %s or worse (refuse_at), to keep the remaining connections for other applications.",
							   ph_usage_words(used, usable), ph_level_name((PhLevel) refuse_at)),
					 errhint("Retry later, or change refuse_at of policy \"%s\" in pool_health.policies.",
							 NameStr(policy_name))));
		}
	}
}

static void
ph_client_authentication(Port *port, int status)
{
	pg_atomic_uint64 *entry;

	if (prev_client_auth_hook)
		prev_client_auth_hook(port, status);
	if (status != STATUS_OK || admission == NULL ||
		!ph_rules_is_client(MyBackendType, am_walsender))
		return;

	/*
	 * From here to exit this backend counts as a client.  It gives its
	 * counts back as the last thing it does, once its PGPROC and its entry
	 * in backend status are released: no one ever sees more sessions of a
	 * policy than its quota (shared memory stays attached until then).
	 */
	if (!exit_registered)
	{
		on_proc_exit(admission_exit, (Datum) 0);
		exit_registered = true;
	}
	my_procno = ph_my_procno();
	entry = counted_entry(my_procno);
	if (entry != NULL)
	{
		uint64		old = pg_atomic_read_u64(entry);

		while (!pg_atomic_compare_exchange_u64(entry, &old, COUNTED(MyProcPid, 0)))
			;

		/*
		 * The previous backend of this PGPROC gives its count back after
		 * ProcKill, so a new backend can get the PGPROC first: give the
		 * count back for it (it is gone from backend status); its exit
		 * callback finds the entry taken and does nothing.
		 */
		if (COUNTED_PID(old) != MyProcPid && COUNTED_STATE(old) != COUNTED_EXITED)
			release_count(COUNTED_STATE(old));
	}
	pg_atomic_fetch_add_u32(&admission->clients, 1);
	counted_as_client = true;

	if (ph_admission)
		admit(port, entry);
}

/* From _PG_init, when preloaded. */
void
ph_admission_install_hook(void)
{
	prev_client_auth_hook = ClientAuthentication_hook;
	ClientAuthentication_hook = ph_client_authentication;
}

/* ---- the worker's side ---- */

/* Do two policies match the same sessions (all match columns equal)? */
static bool
same_match(const PhPolicy *a, const PhPolicy *b)
{
	return a->match_database == b->match_database &&
		(!a->match_database || strcmp(NameStr(a->database), NameStr(b->database)) == 0) &&
		a->match_role == b->match_role &&
		(!a->match_role || strcmp(NameStr(a->role), NameStr(b->role)) == 0) &&
		a->match_application == b->match_application &&
		(!a->match_application || strcmp(a->application_pattern, b->application_pattern) == 0) &&
		a->match_client == b->match_client &&
		(!a->match_client || memcmp(&a->client, &b->client, sizeof(PhNetwork)) == 0);
}

/*
 * Give each policy of a set about to be published its quota counter: the
 * one already named after it; else, for a policy renamed (a published
 * policy with the same match columns is gone), that policy's counter,
 * renamed; else a free one.  A counter is free when no published policy
 * names it and nothing is counted in it (no login can count in it then:
 * logins count only in the published set's counters).  A policy left
 * without a counter (more policies than counters) is not counted and its
 * quota not enforced until one frees up.
 * Called by the worker with the policy set's lock held exclusively, with the
 * set still published (old, nold): raises nothing.  named is the caller's
 * scratch space, ph_admission_ncounters() booleans, allocated before the
 * lock was taken.
 */
void
ph_admission_assign_counters(PhPolicy *items, int count, const PhPolicy *old,
							 int nold, bool *named)
{

	memset(named, 0, sizeof(bool) * admission->ncounters);
	for (int i = 0; i < count; i++)
	{
		items[i].counter = -1;
		for (int c = 0; c < admission->ncounters; c++)
		{
			QuotaCounter *counter = &admission->counters[c];

			if (counter->in_use &&
				strcmp(NameStr(counter->policy), NameStr(items[i].name)) == 0)
			{
				items[i].counter = c;
				named[c] = true;
				break;
			}
		}
	}
	/* renamed policies keep their counts */
	for (int i = 0; i < count; i++)
	{
		if (items[i].counter >= 0)
			continue;
		for (int j = 0; j < nold; j++)
		{
			int			c = old[j].counter;

			if (c >= 0 && c < admission->ncounters && !named[c] &&
				admission->counters[c].in_use && same_match(&items[i], &old[j]))
			{
				admission->counters[c].policy = items[i].name;
				items[i].counter = c;
				named[c] = true;
				break;
			}
		}
	}
	for (int c = 0; c < admission->ncounters; c++)
	{
		QuotaCounter *counter = &admission->counters[c];

		if (counter->in_use && !named[c] &&
			pg_atomic_read_u32(&counter->connections) == 0)
			counter->in_use = false;
	}
	for (int i = 0, c = 0; i < count; i++)
	{
		if (items[i].counter >= 0)
			continue;
		while (c < admission->ncounters && admission->counters[c].in_use)
			c++;
		if (c == admission->ncounters)
			break;
		admission->counters[c].policy = items[i].name;
		admission->counters[c].in_use = true;
		pg_atomic_write_u64(&admission->counters[c].refused, 0);
		items[i].counter = c;
	}
}

/* How many quota counters there are (fixed at server start). */
int
ph_admission_ncounters(void)
{
	return admission->ncounters;
}

/*
 * Worker, at each sample: count every visible client session where its
 * evaluation says it belongs (its governing policy's counter, or none for
 * superusers, protected roles and ungoverned sessions).  Sessions already
 * counted right are not touched; see the file header for the protocol.
 * eval must use the published set (the counters it names).
 */
void
ph_admission_rehome(const PhEvaluation *eval)
{
	static uint64 *last_seen = NULL;	/* per PGPROC: pid, wanted counter */

	if (!eval->policies.published)
		return;
	if (last_seen == NULL)
		last_seen = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(uint64) * admission->nprocs);
	for (int i = 0; i < eval->snap.nbackends; i++)
	{
		const PhBackend *be = &eval->snap.backends[i];
		pg_atomic_uint64 *entry;
		uint64		old;
		uint32		current;
		uint32		want = 0;

		if (!be->is_client || be->exemption == PH_EXEMPT_STARTING ||
			(entry = counted_entry(be->procno)) == NULL)
			continue;
		if (ph_rules_counted_in_quota(be))
			want = (uint32) be->policy->counter + 1;

		old = pg_atomic_read_u64(entry);
		current = COUNTED_STATE(old);
		if (COUNTED_PID(old) != be->pid || current == COUNTED_EXITED ||
			current == want)
		{
			last_seen[be->procno] = 0;
			continue;
		}

		/*
		 * Move it only when two samples in a row say so: a session in its
		 * first moments may show its role before its application_name.
		 */
		if (last_seen[be->procno] != COUNTED(be->pid, want))
		{
			last_seen[be->procno] = COUNTED(be->pid, want);
			continue;
		}
		if (want != 0)
			pg_atomic_fetch_add_u32(&admission->counters[want - 1].connections, 1);
		if (pg_atomic_compare_exchange_u64(entry, &old, COUNTED(be->pid, want)))
			release_count(current);
		else if (want != 0)
			pg_atomic_fetch_sub_u32(&admission->counters[want - 1].connections, 1);
	}
}

/* The counter of a published policy, or NULL. */
static QuotaCounter *
counter_of(const PhPolicy *policy)
{
	if (admission == NULL || policy->counter < 0 ||
		policy->counter >= admission->ncounters)
		return NULL;
	return &admission->counters[policy->counter];
}

/* Sessions counted against a published policy's quota now. */
uint32
ph_admission_counted(const PhPolicy *policy)
{
	QuotaCounter *counter = counter_of(policy);

	return counter ? pg_atomic_read_u32(&counter->connections) : 0;
}

/* Connections refused by a published policy since its counter was made. */
uint64
ph_admission_refused(const PhPolicy *policy)
{
	QuotaCounter *counter = counter_of(policy);

	return counter ? pg_atomic_read_u64(&counter->refused) : 0;
}
