/*-------------------------------------------------------------------------
 *
 * admission_counters.c
 *		Admission control's shared memory ("pool_health admission", laid
 *		out in admission_int.h): its creation; the counted[] entries and
 *		giving a count back; the worker's side (naming the quota counters
 *		after the published policies, re-homing sessions whose policy
 *		changed); and the readers of the counts, refusals and reserves for
 *		the views, status() and metrics().  The login path that fills the
 *		counters is admission.c.
 *
 * Locks: the counters' names (policy, in_use) and the list of reserves are
 * written by the worker under the published policy set's lock held
 * exclusively (ph_admission_assign_counters(), called back by
 * ph_policy_set_publish()) and read under it; every count is an atomic.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/builtins.h"

#include "compat.h"
#include "admission_int.h"
#include "evaluate.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shmem.h"

AdmissionShared *ph_adm = NULL;

static Size
admission_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(AdmissionShared));

	size = add_size(size, MAXALIGN(mul_size(sizeof(QuotaCounter), 2 * ph_max_policies)));
	size = add_size(size, MAXALIGN(mul_size(sizeof(ReservedCounter), ph_max_policies)));
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

	ph_adm = ShmemInitStruct("pool_health admission", admission_shmem_size(), &found);
	if (found)
		return;
	memset(ph_adm, 0, sizeof(AdmissionShared));
	storage = (char *) ph_adm + MAXALIGN(sizeof(AdmissionShared));
	pg_atomic_init_u64(&ph_adm->clients, 0);
	pg_atomic_init_u32(&ph_adm->moving, 0);
	ph_adm->ncounters = 2 * ph_max_policies;
	ph_adm->counters = (QuotaCounter *) storage;
	storage += MAXALIGN(sizeof(QuotaCounter) * ph_adm->ncounters);
	for (int i = 0; i < ph_adm->ncounters; i++)
	{
		memset(&ph_adm->counters[i].policy, 0, sizeof(NameData));
		ph_adm->counters[i].in_use = false;
		pg_atomic_init_u32(&ph_adm->counters[i].connections, 0);
		pg_atomic_init_u64(&ph_adm->counters[i].refused, 0);
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			pg_atomic_init_u64(&ph_adm->counters[i].refused_by[r], 0);
		pg_atomic_init_u64(&ph_adm->counters[i].login_tat, 0);
		pg_atomic_init_u32(&ph_adm->counters[i].login_delayed, 0);
		pg_atomic_init_u32(&ph_adm->counters[i].match_changed, 0);
	}
	ph_adm->nreserved = 0;
	ph_adm->reserved = (ReservedCounter *) storage;
	storage += MAXALIGN(sizeof(ReservedCounter) * ph_max_policies);
	ph_adm->nprocs = MaxBackends;
	ph_adm->counted = (pg_atomic_uint64 *) storage;
	for (int i = 0; i < ph_adm->nprocs; i++)
		pg_atomic_init_u64(&ph_adm->counted[i], 0);
}

pg_atomic_uint64 *
ph_adm_counted_entry(int procno)
{

	if (procno < 0 || procno >= ph_adm->nprocs)
		return NULL;
	return &ph_adm->counted[procno];
}

/* Give back a count (state k + 1: counter k). */
void
ph_adm_release_count(uint32 state)
{

	if (state != 0 && state != COUNTED_EXITED && state <= (uint32) ph_adm->ncounters)
		pg_atomic_fetch_sub_u32(&ph_adm->counters[state - 1].connections, 1);
}

/*
 * The sessions of counter c that use its policy's reserve: those counted
 * in it, or none while they may be another policy's (match_changed).
 */
int
ph_adm_reserve_counted(int c)
{
	if (c < 0 || c >= ph_adm->ncounters ||
		pg_atomic_read_u32(&ph_adm->counters[c].match_changed) != 0)
		return 0;
	return (int) pg_atomic_read_u32(&ph_adm->counters[c].connections);
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
 * A counter kept from the published policy was to the new one (same name,
 * or renamed): a bucket of another rate or burst starts full (its
 * login_tat means nothing at the new rate); when the sessions it governs
 * may have changed (match columns or priority), its reserve counts as
 * unused until the worker has re-homed them (match_changed).
 */
static void
kept_counter(QuotaCounter *counter, const PhPolicy *was, const PhPolicy *now)
{
	if (was->max_logins_per_second != now->max_logins_per_second ||
		was->login_burst != now->login_burst)
		pg_atomic_write_u64(&counter->login_tat, 0);
	if (!same_match(was, now) || was->priority != now->priority)
		pg_atomic_write_u32(&counter->match_changed, 1);
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

	memset(named, 0, sizeof(bool) * ph_adm->ncounters);
	for (int i = 0; i < count; i++)
	{
		items[i].counter = -1;
		for (int c = 0; c < ph_adm->ncounters; c++)
		{
			QuotaCounter *counter = &ph_adm->counters[c];

			if (counter->in_use &&
				strcmp(NameStr(counter->policy), NameStr(items[i].name)) == 0)
			{
				items[i].counter = c;
				named[c] = true;
				for (int j = 0; j < nold; j++)
					if (old[j].counter == c)
						kept_counter(counter, &old[j], &items[i]);
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

			if (c >= 0 && c < ph_adm->ncounters && !named[c] &&
				ph_adm->counters[c].in_use && same_match(&items[i], &old[j]))
			{
				ph_adm->counters[c].policy = items[i].name;
				items[i].counter = c;
				named[c] = true;
				kept_counter(&ph_adm->counters[c], &old[j], &items[i]);
				break;
			}
		}
	}
	for (int c = 0; c < ph_adm->ncounters; c++)
	{
		QuotaCounter *counter = &ph_adm->counters[c];

		if (counter->in_use && !named[c] &&
			pg_atomic_read_u32(&counter->connections) == 0)
			counter->in_use = false;
	}
	for (int i = 0, c = 0; i < count; i++)
	{
		if (items[i].counter >= 0)
			continue;
		while (c < ph_adm->ncounters && ph_adm->counters[c].in_use)
			c++;
		if (c == ph_adm->ncounters)
			break;
		ph_adm->counters[c].policy = items[i].name;
		ph_adm->counters[c].in_use = true;
		pg_atomic_write_u64(&ph_adm->counters[c].refused, 0);
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			pg_atomic_write_u64(&ph_adm->counters[c].refused_by[r], 0);
		pg_atomic_write_u64(&ph_adm->counters[c].login_tat, 0);
		pg_atomic_write_u32(&ph_adm->counters[c].match_changed, 0);
		items[i].counter = c;
	}

	/* the reserves the login path checks (their sum fits: policy_set.c) */
	ph_adm->nreserved = 0;
	for (int i = 0; i < count && ph_adm->nreserved < ph_max_policies; i++)
	{
		ReservedCounter *r;

		if (items[i].reserve_connections <= 0)
			continue;
		r = &ph_adm->reserved[ph_adm->nreserved++];
		r->counter = items[i].counter;
		r->reserve = items[i].reserve_connections;
		r->policy = items[i].name;
	}
}

/* How many quota counters there are (fixed at server start). */
int
ph_admission_ncounters(void)
{
	return ph_adm->ncounters;
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
	static bool *pending = NULL;	/* per counter: holds another's session */

	if (!eval->policies.published)
		return;
	if (last_seen == NULL)
	{
		last_seen = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(uint64) * ph_adm->nprocs);
		pending = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(bool) * ph_adm->ncounters);
	}
	memset(pending, 0, sizeof(bool) * ph_adm->ncounters);
	for (int i = 0; i < eval->snap.nbackends; i++)
	{
		const PhBackend *be = &eval->snap.backends[i];
		pg_atomic_uint64 *entry;
		uint64		old;
		uint32		current;
		uint32		want = 0;

		if (!be->is_client || (entry = ph_adm_counted_entry(be->procno)) == NULL)
			continue;
		old = pg_atomic_read_u64(entry);
		current = COUNTED_STATE(old);
		if (COUNTED_PID(old) != be->pid || current == COUNTED_EXITED)
		{
			last_seen[be->procno] = 0;
			continue;
		}
		if (be->exemption == PH_EXEMPT_STARTING)
		{
			/* not known yet: it may be counted where it does not belong */
			if (current != 0 && current <= (uint32) ph_adm->ncounters)
				pending[current - 1] = true;
			continue;
		}
		if (ph_rules_counted_in_quota(be))
			want = (uint32) be->policy->counter + 1;
		if (current == want)
		{
			last_seen[be->procno] = 0;
			continue;
		}
		if (current != 0 && current <= (uint32) ph_adm->ncounters)
			pending[current - 1] = true;

		/*
		 * Move it only when two samples in a row say so: a session in its
		 * first moments may show its role before its application_name.
		 */
		if (last_seen[be->procno] != COUNTED(be->pid, want))
		{
			last_seen[be->procno] = COUNTED(be->pid, want);
			continue;
		}
		/* odd while it may be counted twice: see unused_reserves() */
		pg_atomic_fetch_add_u32(&ph_adm->moving, 1);
		if (want != 0)
			pg_atomic_fetch_add_u32(&ph_adm->counters[want - 1].connections, 1);
		if (pg_atomic_compare_exchange_u64(entry, &old, COUNTED(be->pid, want)))
			ph_adm_release_count(current);
		else if (want != 0)
			pg_atomic_fetch_sub_u32(&ph_adm->counters[want - 1].connections, 1);
		pg_atomic_fetch_add_u32(&ph_adm->moving, 1);
	}

	/*
	 * A counter whose policy's match changed counts its reserve again once
	 * a pass finds none of its sessions governed elsewhere (those found
	 * are moved at the next pass, and checked again at the one after).
	 */
	for (int c = 0; c < ph_adm->ncounters; c++)
		if (!pending[c] && pg_atomic_read_u32(&ph_adm->counters[c].match_changed) != 0)
			pg_atomic_write_u32(&ph_adm->counters[c].match_changed, 0);
}

/* The counter of a published policy, or NULL. */
QuotaCounter *
ph_adm_counter_of(const PhPolicy *policy)
{
	if (ph_adm == NULL || policy->counter < 0 ||
		policy->counter >= ph_adm->ncounters)
		return NULL;
	return &ph_adm->counters[policy->counter];
}

/* Sessions counted against a published policy's quota now. */
uint32
ph_admission_counted(const PhPolicy *policy)
{
	QuotaCounter *counter = ph_adm_counter_of(policy);

	return counter ? pg_atomic_read_u32(&counter->connections) : 0;
}

/* Connections refused by a published policy since its counter was made. */
uint64
ph_admission_refused(const PhPolicy *policy)
{
	QuotaCounter *counter = ph_adm_counter_of(policy);

	return counter ? pg_atomic_read_u64(&counter->refused) : 0;
}

/* Connections a published policy refused for one reason. */
uint64
ph_admission_refused_by(const PhPolicy *policy, PhRefusal reason)
{
	QuotaCounter *counter = ph_adm_counter_of(policy);

	return counter ? pg_atomic_read_u64(&counter->refused_by[reason]) : 0;
}

/*
 * The part of a published policy's reserve no session of it uses now:
 * the slots kept free for it (0 without a reserve; the whole reserve
 * when it has no counter).
 */
int
ph_admission_reserve_unused(const PhPolicy *policy)
{
	QuotaCounter *counter = ph_adm_counter_of(policy);
	int			counted;

	if (policy->reserve_connections <= 0)
		return 0;
	counted = counter ? ph_adm_reserve_counted(policy->counter) : 0;
	return Max(policy->reserve_connections - counted, 0);
}

/* The name of a refusal reason (views, metrics). */
const char *
ph_refusal_name(PhRefusal reason)
{
	switch (reason)
	{
		case PH_REFUSAL_QUOTA:
			return "max_connections";
		case PH_REFUSAL_REFUSE_AT:
			return "refuse_at";
		case PH_REFUSAL_RESERVE:
			return "reserve";
		case PH_REFUSAL_RATE:
			return "login_rate";
		default:
			return "unknown";
	}
}
