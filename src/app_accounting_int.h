/*-------------------------------------------------------------------------
 *
 * app_accounting_int.h
 *		The per-application accounting's private shared-memory layout and
 *		internal functions, included by its files only
 *		(app_accounting_shmem.c, app_groups.c, app_xact.c, app_minutes.c,
 *		app_readers.c): no other module sees a group, the index, the
 *		backends' slots or the lock.
 *
 * The accounting's shared memory ("pool_health accounting", sized and
 * created by app_accounting_shmem.c) holds, in this order: PhAccounting with the
 * groups, the minute ring, the index of the groups, the server-wide
 * counters (PhAppServer) with their minutes, and one PhAppBackend per
 * backend (MaxBackends).  Its lock is the only LWLock of the named tranche
 * "pool_health accounting" (acct->lock); "exclusive" and "shared" below
 * are its modes.
 *
 * What each backend publishes and who reads it (the hot path):
 *	- per group, shared by its backends: the saturation word (connections
 *	  and sessions in a transaction, changed by compare-and-swap) and the
 *	  maxima a change may raise (read-mostly, on a line of their own);
 *	- per backend (PhAppBackend), written by its backend only, without a
 *	  lock, between two increments of its change count: the transactions
 *	  it ended in its group, their time, their idle time and their
 *	  histogram since it attached to it.  Readers (under the shared or the
 *	  exclusive lock) copy a slot with the change-count protocol and add
 *	  it to its group's figures; the backend folds its slot into its group
 *	  (adds it to the group's counters and clears it) under the exclusive
 *	  lock when it leaves the group (exit, change of application_name),
 *	  so that a reader, holding the lock, counts each transaction once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_APP_ACCOUNTING_INT_H
#define PH_APP_ACCOUNTING_INT_H

#include "storage/lwlock.h"

#include "app_accounting.h"

/* groups' hot counters on cache lines of their own */
#define PH_CACHE_LINE 64
#ifdef pg_attribute_aligned
#define PH_CACHE_ALIGNED pg_attribute_aligned(PH_CACHE_LINE)
#else
#define PH_CACHE_ALIGNED
#endif

/*
 * The saturation word of a group (PhAppGroup.saturation): connections
 * (18 bits, MAX_BACKENDS fits), sessions in a transaction (18 bits), and
 * the start of the open saturated period in ms modulo 2^28 (meaningful
 * only while saturated: in_xact == connections > 0).
 */
#define SAT_COUNT_BITS	18
#define SAT_COUNT_MASK	((UINT64CONST(1) << SAT_COUNT_BITS) - 1)
#define SAT_TIME_SHIFT	(2 * SAT_COUNT_BITS)
#define SAT_TIME_MASK	((UINT64CONST(1) << (64 - SAT_TIME_SHIFT)) - 1)
#define SAT_CONNECTIONS(w)	((uint32) ((w) & SAT_COUNT_MASK))
#define SAT_IN_XACT(w)	((uint32) (((w) >> SAT_COUNT_BITS) & SAT_COUNT_MASK))
#define SAT_SINCE(w)	((w) >> SAT_TIME_SHIFT)
#define SAT_SATURATED(w) (SAT_CONNECTIONS(w) > 0 && SAT_IN_XACT(w) >= SAT_CONNECTIONS(w))

/*
 * A group.  Keys (in_use to created): written under the exclusive lock
 * while no session is attached; read under the lock, or by an attached
 * session.  Counters: atomics, cleared together (pg_atomic_init_*: in the
 * postmaster, or under the exclusive lock with no session attached, as
 * clear_counters() asserts: on platforms that emulate atomics with
 * spinlocks, initialising one in use would break it).
 */
typedef struct PhAppGroup
{
	bool		in_use;
	bool		other;			/* the (other) group, slot 0 */
	uint32		generation;		/* changes when the slot is reused */
	uint32		hash;
	Oid			database_id;
	Oid			role_id;
	char		database[NAMEDATALEN];
	char		role[NAMEDATALEN];
	char		application_name[NAMEDATALEN];
	TimestampTz since;			/* created or last reset */
	TimestampTz created;		/* when its slot was claimed for it */
	/*
	 * The minute being accumulated began with these totals (worker, under
	 * the exclusive lock; a reset lowers them by what it clears, modulo
	 * 2^64, so the minute keeps its count).
	 */
	uint64		base_xacts;
	uint64		base_xact_time_us;
	uint64		base_idle_in_xact_us;
	uint64		base_saturated_ms;	/* of the saturated time */

	/*
	 * The hot line: changed by compare-and-swap by its sessions at attach,
	 * detach and each transaction's start and end, no lock; see
	 * saturation_change().  Connections and sessions in a transaction are
	 * read from it (an attach changes it under the shared lock, so that an
	 * eviction, under the exclusive one, sees every session attached).
	 */
	pg_atomic_uint64 saturation PH_CACHE_ALIGNED;
	/*
	 * Read-mostly maxima, no lock (atomic_max: read, and compare-and-swap
	 * only to raise); the minute's are taken out by the worker at a close.
	 */
	pg_atomic_uint32 connections_peak PH_CACHE_ALIGNED;
	pg_atomic_uint32 in_xact_peak;
	pg_atomic_uint32 minute_connections_max;
	pg_atomic_uint32 minute_in_xact_max;
	pg_atomic_uint32 minute_declared;	/* most pool_health.client_pool_size
										 * declared in the minute */
	pg_atomic_uint64 xact_max_us;	/* longest transaction ended */
	/*
	 * Cold: changed at login, exit, termination, refusal, or by the worker.
	 */
	pg_atomic_uint64 saturated_ms PH_CACHE_ALIGNED;	/* saturated periods
													 * ended, in ms */
	pg_atomic_uint64 terminated;
	pg_atomic_uint64 refused;
	pg_atomic_uint64 last_seen; /* when a session last detached */
	pg_atomic_uint32 logins;	/* attached sessions that logged in with its
								 * name (not moved in by a rename) */
	pg_atomic_uint32 minute_logins_max; /* the most of them in the minute */
	/*
	 * What backends folded in (PhAppBackend): changed only under the
	 * exclusive lock (a backend leaving the group, an eviction, a reset,
	 * which stores minus what the attached backends hold, modulo 2^64);
	 * read under the lock.  The group's totals are these plus the slots of
	 * the backends attached to it.
	 */
	uint64		xacts;
	uint64		xact_time_us;
	uint64		idle_in_xact_us;
	uint64		histogram[PH_HIST_BUCKETS];
} PhAppGroup;

/*
 * An entry of the group index: the slot of a group (0: empty; (other) is
 * never indexed) and its hash.  Written under the exclusive lock; read
 * under the lock, and without it by index_probe(), whose answer is only a
 * hint (a torn or stale entry costs a second lock acquisition at worst).
 */
typedef struct PhAppIndexEntry
{
	pg_atomic_uint32 slot;
	pg_atomic_uint32 hash;
} PhAppIndexEntry;

/*
 * The accounting's shared state.  Fixed at start: lock, ngroups,
 * minute_capacity, minutes, index, index_mask, hash_seed, server,
 * backends.
 */
typedef struct PhAccounting
{
	LWLock	   *lock;
	int			ngroups;		/* pool_health.max_groups + 1 */
	uint32		generations;	/* exclusive to change, shared to read */
	uint64		evictions;		/* likewise */
	uint64		resets;			/* likewise */
	TimestampTz reset_at;		/* the last reset (as each group's since);
								 * likewise */
	uint64		hash_seed;		/* of the groups' hashes: random, per start */
	uint32		index_mask;		/* index entries - 1 (a power of two - 1) */
	PhAppIndexEntry *index;		/* the groups by hash */
	struct PhAppServer *server; /* the server-wide counters */
	struct PhAppBackend *backends;	/* MaxBackends slots */
	/*
	 * The minute being accumulated (0: none yet): written by the worker
	 * only, under the exclusive lock; read under the lock, and without it
	 * by the worker itself (its only writer).
	 */
	TimestampTz minute_start;
	int			minute_capacity;
	/*
	 * The minute ring: written by the worker under the exclusive lock, read
	 * under the shared one.  minute_count only grows, up to the capacity:
	 * a reader may read it without the lock to size a buffer, then bound
	 * its copy by that size under the lock.
	 */
	int			minute_count;
	int			minute_next;
	PhAppMinute *minutes;
	PhAppGroup	groups[FLEXIBLE_ARRAY_MEMBER];
} PhAccounting;

/*
 * The server-wide counters (see app_xact.c), on cache lines of their own:
 * the first is changed at every transaction's start and end.
 */
typedef struct PhAppServer
{
	/* atomics, changed by every backend without a lock */
	pg_atomic_uint32 connections PH_CACHE_ALIGNED;
	pg_atomic_uint32 in_xact;
	/* read-mostly maxima (atomic_max), taken out by the worker at a close */
	pg_atomic_uint32 connections_peak PH_CACHE_ALIGNED;
	pg_atomic_uint32 in_xact_peak;
	pg_atomic_uint32 minute_connections_max;
	pg_atomic_uint32 minute_in_xact_max;
	pg_atomic_uint32 renamed;	/* connected sessions that changed their name */
	pg_atomic_uint32 minute_renamed_max;
	pg_atomic_uint64 renames;	/* changes of name between transactions */
	/* under acct->lock: exclusive for the worker to write, else shared */
	TimestampTz started PH_CACHE_ALIGNED;	/* the first minute began */
	int			minute_capacity;	/* one row a minute of retention */
	int			minute_count;
	int			minute_next;
	PhAppServerMinute minutes[FLEXIBLE_ARRAY_MEMBER];
} PhAppServer;

/*
 * One backend's transactions in its group since it attached to it (or
 * since it last folded them in).  Every field is written only by the
 * backend whose PGPROC number the slot has, between two increments of
 * changecount (odd while it writes, in a critical section), without a
 * lock.  group changes (-1: none) only while the counters are zero: set
 * without the lock when the backend attaches (a reader adds nothing
 * either way), and emptied under the exclusive lock in the same write as
 * the counters are folded into the group.  A reader holds the lock (either
 * mode): it reads changecount, a read barrier, the fields, a read barrier,
 * changecount again, and retries until both were equal and even
 * (pgstat_report_activity's protocol; ph_acct_sum_backends()).
 */
typedef struct PhAppBackend
{
	int			changecount PH_CACHE_ALIGNED;	/* a slot per cache line
												 * run: no false sharing */
	int			group;			/* the group's slot, or -1 */
	uint64		xacts;
	uint64		xact_time_us;
	uint64		idle_in_xact_us;
	uint64		histogram[PH_HIST_BUCKETS];
} PhAppBackend;

/* A group's totals, as readers add them up (app_readers.c). */
typedef struct PhAppSums
{
	uint64		xacts;
	uint64		xact_time_us;
	uint64		idle_in_xact_us;
} PhAppSums;

/* set in every process by ph_accounting_shmem_startup() (NULL: off) */
extern PhAccounting *ph_acct;

/* app_accounting_shmem.c */
extern void ph_acct_clear_counters(PhAppGroup *g);
extern int	ph_acct_rows_per_minute(void);

/* app_groups.c */
extern PhAppGroup *ph_acct_attach(Oid database_id, const char *database,
								  Oid role_id, const char *role,
								  const char *application);
extern void ph_acct_detach(PhAppGroup *g);
extern uint64 ph_acct_saturated_ms_now(PhAppGroup *g, TimestampTz now);
extern void ph_acct_saturation_rebase(PhAppGroup *g, TimestampTz now);

/* app_readers.c */
extern void ph_acct_sum_backends(PhAppSums *sums, uint64 **hist_of);

/* raise *p to v (read, and compare-and-swap only to raise) */
static inline void
ph_acct_atomic_max_u32(pg_atomic_uint32 *p, uint32 v)
{
	uint32		old = pg_atomic_read_u32(p);

	while (old < v && !pg_atomic_compare_exchange_u32(p, &old, v))
		;
}

static inline void
ph_acct_atomic_max_u64(pg_atomic_uint64 *p, uint64 v)
{
	uint64		old = pg_atomic_read_u64(p);

	while (old < v && !pg_atomic_compare_exchange_u64(p, &old, v))
		;
}

/* A time in ms, as the saturation word keeps it (modulo 2^28). */
static inline uint64
sat_ms(TimestampTz at)
{
	return (uint64) (at / 1000) & SAT_TIME_MASK;
}

/*
 * The length of a period from since to now (both sat_ms); 0 if now seems
 * to come before since (two backends' clocks read a few microseconds
 * apart, in the other order than their changes).
 */
static inline uint64
sat_period(uint64 since, uint64 now)
{
	uint64		d = (now - since) & SAT_TIME_MASK;

	return d > SAT_TIME_MASK / 2 ? 0 : d;
}

/*
 * Change g's connections and sessions in a transaction by dc and dx, at
 * time at; if that ends a saturated period, add its length to
 * saturated_ms.  Returns the new word.  A compare-and-swap (two if it ends
 * a period), no lock.  (Inline: the hot path of app_xact.c.)
 */
static inline uint64
ph_acct_saturation_change(PhAppGroup *g, int dc, int dx, TimestampTz at)
{
	uint64		old = pg_atomic_read_u64(&g->saturation);
	uint64		now = sat_ms(at);
	uint64		new;

	for (;;)
	{
		int64		c = (int64) SAT_CONNECTIONS(old) + dc;
		int64		x = (int64) SAT_IN_XACT(old) + dx;
		uint64		since;

		/*
		 * Each session's changes come in order (attach, begin, end,
		 * detach): never below 0, never more in a transaction than held.
		 * (Clamped all the same: a count out of step must not spill over.)
		 */
		Assert(c >= 0 && x >= 0 && x <= c);
		c = Max(c, 0);
		x = Max(x, 0);
		new = (uint64) c | ((uint64) x << SAT_COUNT_BITS);
		if (SAT_SATURATED(new))
		{
			since = SAT_SATURATED(old) ? SAT_SINCE(old) : now;
			new |= since << SAT_TIME_SHIFT;
		}
		if (pg_atomic_compare_exchange_u64(&g->saturation, &old, new))
			break;
	}
	if (SAT_SATURATED(old) && !SAT_SATURATED(new))
		pg_atomic_fetch_add_u64(&g->saturated_ms, sat_period(SAT_SINCE(old), now));
	return new;
}

static inline uint32
ph_acct_connections(PhAppGroup *g)
{
	return SAT_CONNECTIONS(pg_atomic_read_u64(&g->saturation));
}

static inline uint32
ph_acct_in_xact(PhAppGroup *g)
{
	return SAT_IN_XACT(pg_atomic_read_u64(&g->saturation));
}

#endif							/* PH_APP_ACCOUNTING_INT_H */
