/*-------------------------------------------------------------------------
 *
 * app_groups.c
 *		The per-application accounting's shared memory and its group table:
 *		groups of sessions by (database, role, application_name), found
 *		through a hashed index, created and evicted, attached to and
 *		detached from; and each group's saturation word.
 *
 * Groups: at most pool_health.max_groups, plus "(other)" in slot 0.  A new
 * group takes a free slot, or the least recently seen group no session is
 * attached to, whose figures are added to (other); when every slot is
 * attached, the session is counted in (other).  An index in shared memory
 * (open addressing, linear probing, at most half full) finds a group by
 * the hash of its keys, seeded at each start so that names cannot be
 * chosen to collide: a login costs one lock acquisition and a few probes,
 * however many groups there are.  The login of a new group looks for its
 * slot (the least recently seen) before it takes the lock, and checks it
 * under the lock.
 *
 * Saturation: a group is saturated while every connection it holds is in a
 * transaction (a request needing one more would wait, or a lazily filled
 * pool open another).  A group's connections and sessions in a transaction
 * live in one word with when the current saturated period began (in ms,
 * modulo 2^28: 74 hours; the worker moves an open period into
 * saturated_ms at each minute's close), changed by compare-and-swap, so
 * whichever backend begins or ends a period knows it exactly; the one
 * that ends it adds its length to saturated_ms.  A reader adds the open
 * period, if any; it may miss a period that is just ending (never counts
 * one twice), which the next reading has.
 *
 * Locking (acct->lock, the LWLock of the tranche "pool_health accounting"):
 *	- exclusive: to claim or evict a slot (keys, generation, since,
 *	  created) and change the index, to fold a backend's slot into its
 *	  group (app_xact.c), to reset, and for the worker to append to the
 *	  minute ring;
 *	- shared: to find a group and attach to it (so a slot being attached
 *	  to cannot be evicted), and to read groups, backends' slots and
 *	  minutes.
 * One acquisition per login: attach() probes the index without the lock
 * (a hint: a group of its hash exists) to choose the mode, and finds the
 * group under the lock.  app_accounting_int.h says it field by field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "app_accounting_int.h"
#include "settings.h"

/* ---- finding a group ---- */

/*
 * The hash of a group's keys: the database name (as the login gave it,
 * < 64 bytes), the role and the application_name (as stored), seeded.
 */
static uint32
key_hash(const char *database, Oid role_id, const char *application)
{
	uint64		h = hash_bytes_extended((const unsigned char *) application,
										strlen(application), ph_acct->hash_seed);

	h = hash_bytes_extended((const unsigned char *) database, strlen(database), h);
	return (uint32) hash_combine64(h, (uint64) role_id);
}

/*
 * Without the lock: does the index hold a group of this hash?  A hint for
 * the lock mode of attach(), never trusted: bounded by the index size
 * whatever a concurrent change leaves in it.
 */
static bool
index_probe(uint32 hash)
{
	uint32		i = hash & ph_acct->index_mask;

	for (uint32 probes = 0; probes <= ph_acct->index_mask; probes++)
	{
		PhAppIndexEntry *e = &ph_acct->index[i];

		if (pg_atomic_read_u32(&e->slot) == 0)
			return false;
		if (pg_atomic_read_u32(&e->hash) == hash)
			return true;
		i = (i + 1) & ph_acct->index_mask;
	}
	return false;
}

/*
 * The group of these keys, under the lock (either mode); NULL if none.
 * database_id, if valid, is compared instead of the database name.
 */
static PhAppGroup *
find_group(uint32 hash, Oid database_id, const char *database, Oid role_id,
		   const char *application)
{
	uint32		i = hash & ph_acct->index_mask;

	for (uint32 probes = 0; probes <= ph_acct->index_mask; probes++)
	{
		PhAppIndexEntry *e = &ph_acct->index[i];
		uint32		slot = pg_atomic_read_u32(&e->slot);

		if (slot == 0)
			break;
		if (pg_atomic_read_u32(&e->hash) == hash)
		{
			PhAppGroup *g = &ph_acct->groups[slot];

			if (g->role_id == role_id &&
				(OidIsValid(database_id) ? g->database_id == database_id :
				 strcmp(g->database, database) == 0) &&
				strcmp(g->application_name, application) == 0)
				return g;
		}
		i = (i + 1) & ph_acct->index_mask;
	}
	return NULL;
}

/* Index the group in slot (its hash set), under the exclusive lock. */
static void
index_insert(int slot)
{
	uint32		hash = ph_acct->groups[slot].hash;
	uint32		i = hash & ph_acct->index_mask;

	Assert(LWLockHeldByMeInMode(ph_acct->lock, LW_EXCLUSIVE));
	/* at most half full: there is an empty entry */
	while (pg_atomic_read_u32(&ph_acct->index[i].slot) != 0)
		i = (i + 1) & ph_acct->index_mask;
	pg_atomic_write_u32(&ph_acct->index[i].hash, hash);
	pg_atomic_write_u32(&ph_acct->index[i].slot, (uint32) slot);
}

/*
 * Take the group in slot out of the index, under the exclusive lock: the
 * entries after it in its run move back to where a probe finds them
 * (backward-shift deletion: no tombstones).
 */
static void
index_remove(int slot)
{
	uint32		mask = ph_acct->index_mask;
	uint32		i = ph_acct->groups[slot].hash & mask;
	uint32		j;

	Assert(LWLockHeldByMeInMode(ph_acct->lock, LW_EXCLUSIVE));
	while (pg_atomic_read_u32(&ph_acct->index[i].slot) != (uint32) slot)
	{
		if (pg_atomic_read_u32(&ph_acct->index[i].slot) == 0)
			return;				/* not indexed (never expected) */
		i = (i + 1) & mask;
	}
	for (j = (i + 1) & mask; pg_atomic_read_u32(&ph_acct->index[j].slot) != 0; j = (j + 1) & mask)
	{
		uint32		h = pg_atomic_read_u32(&ph_acct->index[j].hash);
		uint32		home = h & mask;

		/* an entry whose home is cyclically in (i, j] stays where it is */
		if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		pg_atomic_write_u32(&ph_acct->index[i].hash, h);
		pg_atomic_write_u32(&ph_acct->index[i].slot,
							pg_atomic_read_u32(&ph_acct->index[j].slot));
		i = j;
	}
	pg_atomic_write_u32(&ph_acct->index[i].slot, 0);
}

/* ---- saturation (the word's changes: app_accounting_int.h) ---- */

/*
 * g's saturated time up to now, in ms: the periods ended and the open one.
 * Never raises, takes no lock; see the header comment for its error.
 */
uint64
ph_acct_saturated_ms_now(PhAppGroup *g, TimestampTz now)
{
	uint64		ended = pg_atomic_read_u64(&g->saturated_ms);
	uint64		w;

	pg_memory_barrier();
	w = pg_atomic_read_u64(&g->saturation);
	return ended + (SAT_SATURATED(w) ? sat_period(SAT_SINCE(w), sat_ms(now)) : 0);
}

/*
 * Worker, at a minute's close: an open saturated period restarts now, its
 * length so far moved into saturated_ms, so that no period outlives the
 * word's 74 hours.  (If a backend changes the word meanwhile, the period
 * stays open: the next close moves it.)
 */
void
ph_acct_saturation_rebase(PhAppGroup *g, TimestampTz now)
{
	uint64		w = pg_atomic_read_u64(&g->saturation);
	uint64		moved;

	if (!SAT_SATURATED(w))
		return;
	moved = sat_period(SAT_SINCE(w), sat_ms(now));
	if (pg_atomic_compare_exchange_u64(&g->saturation, &w,
									   (w & ~(SAT_TIME_MASK << SAT_TIME_SHIFT)) |
									   (sat_ms(now) << SAT_TIME_SHIFT)))
		pg_atomic_fetch_add_u64(&g->saturated_ms, moved);
}

/* ---- creating and evicting groups ---- */

/*
 * Add the figures of g (no session attached: nothing in backends' slots)
 * to (other), under the exclusive lock.
 */
static void
fold_into_other(PhAppGroup *g)
{
	PhAppGroup *o = &ph_acct->groups[0];

	ph_acct_atomic_max_u32(&o->connections_peak, pg_atomic_read_u32(&g->connections_peak));
	ph_acct_atomic_max_u32(&o->in_xact_peak, pg_atomic_read_u32(&g->in_xact_peak));
	ph_acct_atomic_max_u32(&o->minute_connections_max, pg_atomic_read_u32(&g->minute_connections_max));
	ph_acct_atomic_max_u32(&o->minute_in_xact_max, pg_atomic_read_u32(&g->minute_in_xact_max));
	ph_acct_atomic_max_u32(&o->minute_logins_max, pg_atomic_read_u32(&g->minute_logins_max));
	o->xacts += g->xacts;
	o->xact_time_us += g->xact_time_us;
	o->idle_in_xact_us += g->idle_in_xact_us;
	ph_acct_atomic_max_u64(&o->xact_max_us, pg_atomic_read_u64(&g->xact_max_us));
	pg_atomic_fetch_add_u64(&o->terminated, pg_atomic_read_u64(&g->terminated));
	pg_atomic_fetch_add_u64(&o->refused, pg_atomic_read_u64(&g->refused));
	for (int i = 0; i < PH_HIST_BUCKETS; i++)
		o->histogram[i] += g->histogram[i];
	/* its histogram is not in the worker's baseline of (other): no p99 */
	o->generation = ++ph_acct->generations;
	/* what the minute being closed counted of g stays in the minute of (other) */
	o->base_xacts += g->base_xacts;
	o->base_xact_time_us += g->base_xact_time_us;
	o->base_idle_in_xact_us += g->base_idle_in_xact_us;
}

/* The slot a new group would take, as find_victim() saw it. */
typedef struct PhVictim
{
	PhAppGroup *slot;			/* NULL: every slot was attached to */
	bool		in_use;			/* else it was free */
	uint64		last_seen;
} PhVictim;

/*
 * The slot a new group would take: the first free one, else the least
 * recently seen group no session is attached to.  Under the exclusive
 * lock, or without the lock for a candidate that claim_slot() checks
 * under it (the scan then reads fields the lock's holders write: a stale
 * view only makes a candidate that fails the check).
 */
static void
find_victim(PhVictim *v)
{
	v->slot = NULL;
	v->in_use = true;
	v->last_seen = PG_UINT64_MAX;
	for (int i = 1; i < ph_acct->ngroups; i++)
	{
		volatile PhAppGroup *g = &ph_acct->groups[i];
		uint64		seen;

		if (!g->in_use)
		{
			v->slot = (PhAppGroup *) g;
			v->in_use = false;
			return;
		}
		if (pg_atomic_read_u64((pg_atomic_uint64 *) &g->saturation) != 0)
			continue;			/* attached to */
		seen = pg_atomic_read_u64((pg_atomic_uint64 *) &g->last_seen);
		if (v->slot == NULL || seen < v->last_seen)
		{
			v->slot = (PhAppGroup *) g;
			v->last_seen = seen;
		}
	}
}

/*
 * A slot for a new group, under the exclusive lock: the one seen (found
 * without the lock) if nothing changed it since, else one found now (seen
 * NULL: none was looked for); a group evicted is folded into (other) and
 * leaves the index.  NULL if every slot is attached to (as seen).
 */
static PhAppGroup *
claim_slot(const PhVictim *seen)
{
	PhVictim	v;
	PhAppGroup *g;

	Assert(LWLockHeldByMeInMode(ph_acct->lock, LW_EXCLUSIVE));
	if (seen != NULL && seen->slot == NULL)
		return NULL;
	g = seen != NULL ? seen->slot : NULL;
	if (g == NULL || g->in_use != seen->in_use ||
		(g->in_use && (pg_atomic_read_u64(&g->saturation) != 0 ||
					   pg_atomic_read_u64(&g->last_seen) != seen->last_seen)))
	{
		find_victim(&v);
		g = v.slot;
	}
	if (g != NULL && g->in_use)
	{
		fold_into_other(g);
		index_remove((int) (g - ph_acct->groups));
		ph_acct->evictions++;
	}
	return g;
}

/*
 * Attach to the group of these keys (connections + 1), creating it if
 * needed.  One lock acquisition: shared if the index (probed without the
 * lock) has a group of this hash, else exclusive, to create it, with the
 * slot it will take looked for first, without the lock.  A second only
 * if the group went away between the probe and the lock.  Never raises:
 * an LWLock, a few probes, atomics (and a scan of the slots, without the
 * lock, for a new group).
 */
PhAppGroup *
ph_acct_attach(Oid database_id, const char *database, Oid role_id,
			   const char *role, const char *application)
{
	uint32		hash = key_hash(database, role_id, application);
	bool		exists = index_probe(hash);
	PhVictim	seen;
	PhAppGroup *g;
	uint32		n;

	if (!exists)
		find_victim(&seen);
	LWLockAcquire(ph_acct->lock, exists ? LW_SHARED : LW_EXCLUSIVE);
	g = find_group(hash, database_id, database, role_id, application);
	if (g == NULL && exists)
	{
		LWLockRelease(ph_acct->lock);
		LWLockAcquire(ph_acct->lock, LW_EXCLUSIVE);
		g = find_group(hash, database_id, database, role_id, application);
	}
	if (g == NULL && (g = claim_slot(exists ? NULL : &seen)) != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		memset(g, 0, offsetof(PhAppGroup, saturation));
		ph_acct_clear_counters(g);
		g->in_use = true;
		g->generation = ++ph_acct->generations;
		g->hash = hash;
		g->database_id = database_id;
		g->role_id = role_id;
		strlcpy(g->database, database, NAMEDATALEN);
		strlcpy(g->role, role, NAMEDATALEN);
		strlcpy(g->application_name, application, NAMEDATALEN);
		g->since = now;
		g->created = now;
		index_insert((int) (g - ph_acct->groups));
	}
	if (g == NULL)
		g = &ph_acct->groups[0];
	/* under the lock: an eviction sees the session attached */
	n = SAT_CONNECTIONS(ph_acct_saturation_change(g, 1, 0, GetCurrentTimestamp()));
	LWLockRelease(ph_acct->lock);
	/* (attached: the slot stays the group's) */
	ph_acct_atomic_max_u32(&g->connections_peak, n);
	ph_acct_atomic_max_u32(&g->minute_connections_max, n);
	return g;
}

/* Leave g (its last_seen first: once its word is 0, the slot may go). */
void
ph_acct_detach(PhAppGroup *g)
{
	TimestampTz now = GetCurrentTimestamp();

	pg_atomic_write_u64(&g->last_seen, (uint64) now);
	pg_write_barrier();
	(void) ph_acct_saturation_change(g, -1, 0, now);
}

/*
 * A connection was refused at login (admission.c): counted in its group
 * if it exists, else in (other).  Never raises, and never waits: in a
 * login storm the refused logins must not queue on the lock behind a
 * group being created or the minute being closed, so when the lock is
 * held exclusively the refusal is counted in (other), slot 0, which is
 * never evicted nor moved (an atomic: no lock needed).
 */
void
ph_accounting_refused(const char *database, Oid role_id, const char *application)
{
	PhAppGroup *g = NULL;

	if (ph_acct == NULL)
		return;
	if (LWLockConditionalAcquire(ph_acct->lock, LW_SHARED))
	{
		g = find_group(key_hash(database, role_id, application), InvalidOid,
					   database, role_id, application);
		if (g != NULL)
			pg_atomic_fetch_add_u64(&g->refused, 1);
		LWLockRelease(ph_acct->lock);
	}
	if (g == NULL)
		pg_atomic_fetch_add_u64(&ph_acct->groups[0].refused, 1);
}
