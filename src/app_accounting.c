/*-------------------------------------------------------------------------
 *
 * app_accounting.c
 *		Exact per-application accounting, kept by each backend at login, at
 *		the start and the end of each transaction and at exit, per group
 *		(database, role, application_name): connections and their exact
 *		peak, sessions in a transaction and their exact peak, finished
 *		transactions, their total time and a log-scale histogram of their
 *		durations, time idle inside transactions, terminations and
 *		refusals.  The worker closes a minute of every group into
 *		application_history; pool_advice turns those minutes into a pool
 *		size (app_advice.c).
 *
 * The backend's side:
 *	- login: the transaction InitPostgres commits (a transaction callback)
 *	  is the first moment the database, the role and the application_name
 *	  the session will have are all settled; the backend attaches to its
 *	  group then (connections + 1) and detaches at exit (on_proc_exit);
 *	- a transaction starts, for accounting, at the first statement the
 *	  per-statement hooks of xact_origin.c see under a new local
 *	  transaction id (ph_accounting_statement), and ends at its commit,
 *	  abort or prepare (the transaction callback), whatever ends it:
 *	  pool_health's own terminations included;
 *	- an application_name changed by SET (pgbouncer, JDBC) moves the
 *	  session to its new group at the start of its next transaction (not
 *	  at the commit of the SET: a SET LOCAL is undone after the commit
 *	  callbacks run); the name is compared as stored (63 bytes); a group
 *	  counts apart the sessions attached to it since their login (logins,
 *	  and their most in a minute), so that pool_advice can tell a pool
 *	  from names a session took on;
 *	- a transaction block is counted from its BEGIN; one chained by
 *	  COMMIT or ROLLBACK AND CHAIN from the end of the one before, in the
 *	  same group; a block that fails is counted until the statement that
 *	  ends it (ROLLBACK, COMMIT, PREPARE) or the session's exit, as
 *	  pg_stat_activity shows it "idle in transaction (aborted)" until
 *	  then: its connection stays held;
 *	- time idle inside a transaction is the server's own measure
 *	  (pgStatTransactionIdleTime, as pg_stat_database.idle_in_transaction_time),
 *	  plus the idle time of a session ended while idle in it.
 * The hot path takes no lock: a few atomic operations on the group, whose
 * slot cannot be reused while a backend is attached to it.
 *
 * Durations go to a histogram of PH_HIST_BUCKETS buckets: exact below
 * 8 microseconds, then 8 buckets per power of two; a percentile reports
 * the middle of its bucket, within 1/16 (6.25 %) of the true value
 * (never above the exact maximum).
 *
 * Saturation: a group is saturated while every connection it holds is in a
 * transaction (a request needing one more would wait, or a lazily filled
 * pool open another).  Each change of a group's connections or sessions
 * in a transaction is also made, by compare-and-swap, to one word holding
 * both counts and when the current saturated period began (in ms, modulo
 * 2^28: 74 hours; the worker moves an open period into saturated_ms at
 * each minute's close), so whichever backend begins or ends a period
 * knows it exactly; the one that ends it adds its length to saturated_ms.
 * A reader adds the open period, if any; it may miss a period that is
 * just ending (never counts one twice), which the next reading has.
 *
 * Server-wide counters (a struct of their own, app_server): client
 * backends accounted and those in a transaction, their exact peaks and
 * per-minute maxima, each session counted once whatever application_name
 * it has or changes to; and sessions that changed application_name
 * between transactions (a pooler such as pgbouncer in transaction mode
 * forwards each client's name to the server connection it lends it), for
 * the warning on policies that match by name at login.
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
 * A closed minute appends at most the ring's budget of rows
 * (PH_APP_ROWS_PER_MINUTE, or max_groups + 1 if fewer), so that the
 * ring always covers the retention: the groups that existed before the
 * minute first, then the busiest (transactions, then connections); the
 * rest are folded into the minute's row of (other).
 *
 * Locking: app_acct->lock (the second LWLock of the "pool_health" tranche)
 *	- exclusive: to claim or evict a slot (keys, generation, since,
 *	  created) and change the index, to reset, and for the worker to
 *	  append to the minute ring;
 *	- shared: to find a group and attach to it (so a slot being attached
 *	  to cannot be evicted), to copy groups and minutes out, and for the
 *	  worker to read the histograms when it closes a minute.
 * One acquisition per login: attach() probes the index without the lock
 * (a hint: a group of its hash exists) to choose the mode, and finds the
 * group under the lock.  Counters are atomics; a backend updates its own
 * group's without the lock.  The minute baselines (base_*) are written by
 * the worker under the exclusive lock and read under the shared one.  A
 * slot's atomics are initialised (pg_atomic_init_*) only under the
 * exclusive lock, with no session attached (or in the postmaster, before
 * any process runs): on platforms that emulate atomics with spinlocks,
 * initialising one in use would break it.
 * app_server's counters are atomics too; its minute ring is under
 * app_acct->lock as the groups' are.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "common/hashfn.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "port/pg_bitutils.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "tcop/cmdtag.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "app_accounting.h"
#include "settings.h"

static PhAccounting *app_acct = NULL;

/*
 * The server-wide counters (see the header comment), after the minute
 * ring in the accounting's shared memory, on cache lines of their own:
 * the first is changed at every transaction's start and end.
 */
typedef struct PhAppServer
{
	/* atomics, changed by every backend without a lock */
	pg_atomic_uint32 connections PH_CACHE_ALIGNED;
	pg_atomic_uint32 in_xact;
	pg_atomic_uint32 connections_peak;
	pg_atomic_uint32 in_xact_peak;
	pg_atomic_uint32 minute_connections_max;
	pg_atomic_uint32 minute_in_xact_max;
	pg_atomic_uint32 renamed;	/* connected sessions that changed their name */
	pg_atomic_uint32 minute_renamed_max;
	pg_atomic_uint64 renames;	/* changes of name between transactions */
	/* under app_acct->lock: exclusive for the worker to write, else shared */
	TimestampTz started PH_CACHE_ALIGNED;	/* the first minute began */
	int			minute_capacity;	/* one row a minute of retention */
	int			minute_count;
	int			minute_next;
	PhAppServerMinute minutes[FLEXIBLE_ARRAY_MEMBER];
} PhAppServer;

static PhAppServer *app_server = NULL;

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

/* This backend's side of the server-wide counters. */
static bool server_counted = false;	/* in app_server->connections */
static bool my_renamed = false;	/* in app_server->renamed */
static bool my_login = false;	/* in my_group->logins (attached at login) */

/* This backend. */
static PhAppGroup *my_group = NULL;		/* attached to (connections + 1) */
static char my_application[NAMEDATALEN];	/* the name it was attached with */
static bool exit_registered = false;
static LocalTransactionId counted_lxid = InvalidLocalTransactionId;
static PhAppGroup *xact_group = NULL;	/* in a counted transaction */
static TimestampTz xact_started;
static TimestampTz last_xact_end = 0;	/* when this backend's last counted
										 * transaction ended */
static PgStat_Counter xact_idle_base;
static bool xact_explicit;		/* ... is a transaction block */
static bool xact_ending;		/* ... saw its COMMIT, ROLLBACK or PREPARE */
static XactEvent xact_chains_on;	/* ... chains (AND CHAIN) at this event */
static bool xact_failed_block;	/* ... failed: open until ROLLBACK */

static void begin_counted_xact(PhAppGroup *g, TimestampTz started, bool explicit);
static void end_counted_xact(void);

/* ---- histogram ---- */

int
ph_hist_bucket(int64 usec)
{
	uint64		v = usec < 0 ? 0 : (uint64) usec;
	int			e;

	if (v < 8)
		return (int) v;
	e = pg_leftmost_one_pos64(v);
	if (e > PH_HIST_MAX_EXPONENT)
		return PH_HIST_BUCKETS - 1;
	return 8 + (e - 3) * 8 + (int) ((v >> (e - 3)) - 8);
}

/* The value a bucket reports: its middle (exact below 8 usec). */
int64
ph_hist_value(int bucket)
{
	int			e;
	int64		lower;

	if (bucket < 8)
		return bucket;
	e = (bucket - 8) / 8 + 3;
	lower = (int64) (8 + (bucket - 8) % 8) << (e - 3);
	return lower + ((int64) 1 << (e - 3)) / 2;
}

/*
 * The p-quantile (0 < p <= 1) of a histogram (nearest rank), capped by the
 * exact maximum; -1 if it is empty.
 */
int64
ph_hist_quantile(const uint64 *hist, double p, int64 max)
{
	uint64		total = 0;
	uint64		rank;
	uint64		seen = 0;

	for (int i = 0; i < PH_HIST_BUCKETS; i++)
		total += hist[i];
	if (total == 0)
		return -1;
	rank = (uint64) ceil(p * (double) total);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < PH_HIST_BUCKETS; i++)
	{
		seen += hist[i];
		if (seen >= rank)
			return Min(ph_hist_value(i), max);
	}
	return max;
}

/* ---- shared memory ---- */

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

/* Rows a closed minute may append: the ring's budget per minute. */
static int
rows_per_minute(void)
{
	return Min(ph_max_groups + 1, PH_APP_ROWS_PER_MINUTE);
}

static int
minute_capacity(void)
{
	return ph_max_groups > 0 ? ph_app_history_minutes * rows_per_minute() : 0;
}

/* Entries of the index: a power of two, at least twice the groups. */
static uint32
index_entries(void)
{
	return pg_nextpower2_32((uint32) (2 * (ph_max_groups + 1)));
}

Size
ph_accounting_shmem_size(void)
{
	Size		size;

	if (ph_max_groups <= 0)
		return 0;
	/* room to align the groups on a cache line */
	size = add_size(PH_CACHE_LINE + offsetof(PhAccounting, groups),
					mul_size(ph_max_groups + 1, sizeof(PhAppGroup)));
	size = add_size(MAXALIGN(size), mul_size(minute_capacity(), sizeof(PhAppMinute)));
	size = add_size(MAXALIGN(size), mul_size(index_entries(), sizeof(PhAppIndexEntry)));
	/* the server-wide counters, aligned on a cache line, and their minutes */
	size = add_size(size, PH_CACHE_LINE + offsetof(PhAppServer, minutes));
	return add_size(size, mul_size(ph_app_history_minutes, sizeof(PhAppServerMinute)));
}

/*
 * Clear a slot's counters: in the postmaster, or under the exclusive lock
 * with no session attached to the slot (see the header comment).
 */
static void
clear_counters(PhAppGroup *g)
{
	Assert(!IsUnderPostmaster || LWLockHeldByMeInMode(app_acct->lock, LW_EXCLUSIVE));
	pg_atomic_init_u32(&g->connections, 0);
	pg_atomic_init_u32(&g->connections_peak, 0);
	pg_atomic_init_u32(&g->in_xact, 0);
	pg_atomic_init_u32(&g->in_xact_peak, 0);
	pg_atomic_init_u32(&g->minute_connections_max, 0);
	pg_atomic_init_u32(&g->minute_in_xact_max, 0);
	pg_atomic_init_u64(&g->xacts, 0);
	pg_atomic_init_u64(&g->xact_time_us, 0);
	pg_atomic_init_u64(&g->idle_in_xact_us, 0);
	pg_atomic_init_u64(&g->xact_max_us, 0);
	pg_atomic_init_u64(&g->terminated, 0);
	pg_atomic_init_u64(&g->refused, 0);
	pg_atomic_init_u64(&g->last_seen, 0);
	pg_atomic_init_u64(&g->saturation, 0);
	pg_atomic_init_u64(&g->saturated_ms, 0);
	pg_atomic_init_u32(&g->minute_declared, 0);
	pg_atomic_init_u32(&g->logins, 0);
	pg_atomic_init_u32(&g->minute_logins_max, 0);
	for (int i = 0; i < PH_HIST_BUCKETS; i++)
		pg_atomic_init_u64(&g->histogram[i], 0);
	g->base_xacts = 0;
	g->base_xact_time_us = 0;
	g->base_idle_in_xact_us = 0;
	g->base_saturated_ms = 0;
}

/* In the postmaster, or in a process attaching (found): set app_acct. */
char *
ph_accounting_init(char *storage, LWLock *lock, bool found)
{
	if (ph_max_groups <= 0)
		return storage;
	app_acct = (PhAccounting *) TYPEALIGN(PH_CACHE_LINE, storage);
	if (!found)
	{
		TimestampTz now = GetCurrentTimestamp();
		char	   *end;

		memset(app_acct, 0, offsetof(PhAccounting, groups));
		app_acct->lock = lock;
		app_acct->ngroups = ph_max_groups + 1;
		app_acct->minute_capacity = minute_capacity();
		app_acct->minutes = (PhAppMinute *) ((char *) app_acct +
											 MAXALIGN(offsetof(PhAccounting, groups) +
													  sizeof(PhAppGroup) * app_acct->ngroups));
		end = (char *) (app_acct->minutes + app_acct->minute_capacity);
		app_acct->index = (PhAppIndexEntry *) ((char *) app_acct +
											   MAXALIGN(end - (char *) app_acct));
		app_acct->index_mask = index_entries() - 1;
		for (uint32 i = 0; i <= app_acct->index_mask; i++)
		{
			pg_atomic_init_u32(&app_acct->index[i].slot, 0);
			pg_atomic_init_u32(&app_acct->index[i].hash, 0);
		}
		if (!pg_strong_random(&app_acct->hash_seed, sizeof(app_acct->hash_seed)))
			app_acct->hash_seed = (uint64) now ^ ((uint64) MyProcPid << 32);
		for (int i = 0; i < app_acct->ngroups; i++)
		{
			PhAppGroup *g = &app_acct->groups[i];

			memset(g, 0, offsetof(PhAppGroup, connections));
			clear_counters(g);
			g->since = now;
			g->created = now;
		}
		/* slot 0: (other), always in use */
		app_acct->groups[0].in_use = true;
		app_acct->groups[0].generation = ++app_acct->generations;
		app_acct->groups[0].other = true;
		strlcpy(app_acct->groups[0].application_name, "(other)", NAMEDATALEN);
	}
	/* after the groups, their minutes and the index */
	app_server = (PhAppServer *) TYPEALIGN(PH_CACHE_LINE,
										   (char *) (app_acct->index +
													 app_acct->index_mask + 1));
	if (!found)
	{
		memset(app_server, 0, offsetof(PhAppServer, minutes));
		pg_atomic_init_u32(&app_server->connections, 0);
		pg_atomic_init_u32(&app_server->in_xact, 0);
		pg_atomic_init_u32(&app_server->connections_peak, 0);
		pg_atomic_init_u32(&app_server->in_xact_peak, 0);
		pg_atomic_init_u32(&app_server->minute_connections_max, 0);
		pg_atomic_init_u32(&app_server->minute_in_xact_max, 0);
		pg_atomic_init_u32(&app_server->renamed, 0);
		pg_atomic_init_u32(&app_server->minute_renamed_max, 0);
		pg_atomic_init_u64(&app_server->renames, 0);
		app_server->minute_capacity = ph_app_history_minutes;
	}
	return storage + ph_accounting_shmem_size();
}

PhAccounting *
ph_accounting(void)
{
	return app_acct;
}

/* ---- finding a group ---- */

/*
 * The hash of a group's keys: the database name (as the login gave it,
 * < 64 bytes), the role and the application_name (as stored), seeded.
 */
static uint32
key_hash(const char *database, Oid role_id, const char *application)
{
	uint64		h = hash_bytes_extended((const unsigned char *) application,
										strlen(application), app_acct->hash_seed);

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
	uint32		i = hash & app_acct->index_mask;

	for (uint32 probes = 0; probes <= app_acct->index_mask; probes++)
	{
		PhAppIndexEntry *e = &app_acct->index[i];

		if (pg_atomic_read_u32(&e->slot) == 0)
			return false;
		if (pg_atomic_read_u32(&e->hash) == hash)
			return true;
		i = (i + 1) & app_acct->index_mask;
	}
	return false;
}

/*
 * The group of these keys, under app_acct->lock (either mode); NULL if
 * none.  database_id, if valid, is compared instead of the database name.
 */
static PhAppGroup *
find_group(uint32 hash, Oid database_id, const char *database, Oid role_id,
		   const char *application)
{
	uint32		i = hash & app_acct->index_mask;

	for (uint32 probes = 0; probes <= app_acct->index_mask; probes++)
	{
		PhAppIndexEntry *e = &app_acct->index[i];
		uint32		slot = pg_atomic_read_u32(&e->slot);

		if (slot == 0)
			break;
		if (pg_atomic_read_u32(&e->hash) == hash)
		{
			PhAppGroup *g = &app_acct->groups[slot];

			if (g->role_id == role_id &&
				(OidIsValid(database_id) ? g->database_id == database_id :
				 strcmp(g->database, database) == 0) &&
				strcmp(g->application_name, application) == 0)
				return g;
		}
		i = (i + 1) & app_acct->index_mask;
	}
	return NULL;
}

/* Index the group in slot (its hash set), under the exclusive lock. */
static void
index_insert(int slot)
{
	uint32		hash = app_acct->groups[slot].hash;
	uint32		i = hash & app_acct->index_mask;

	Assert(LWLockHeldByMeInMode(app_acct->lock, LW_EXCLUSIVE));
	/* at most half full: there is an empty entry */
	while (pg_atomic_read_u32(&app_acct->index[i].slot) != 0)
		i = (i + 1) & app_acct->index_mask;
	pg_atomic_write_u32(&app_acct->index[i].hash, hash);
	pg_atomic_write_u32(&app_acct->index[i].slot, (uint32) slot);
}

/*
 * Take the group in slot out of the index, under the exclusive lock: the
 * entries after it in its run move back to where a probe finds them
 * (backward-shift deletion: no tombstones).
 */
static void
index_remove(int slot)
{
	uint32		mask = app_acct->index_mask;
	uint32		i = app_acct->groups[slot].hash & mask;
	uint32		j;

	Assert(LWLockHeldByMeInMode(app_acct->lock, LW_EXCLUSIVE));
	while (pg_atomic_read_u32(&app_acct->index[i].slot) != (uint32) slot)
	{
		if (pg_atomic_read_u32(&app_acct->index[i].slot) == 0)
			return;				/* not indexed (never expected) */
		i = (i + 1) & mask;
	}
	for (j = (i + 1) & mask; pg_atomic_read_u32(&app_acct->index[j].slot) != 0; j = (j + 1) & mask)
	{
		uint32		h = pg_atomic_read_u32(&app_acct->index[j].hash);
		uint32		home = h & mask;

		/* an entry whose home is cyclically in (i, j] stays where it is */
		if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		pg_atomic_write_u32(&app_acct->index[i].hash, h);
		pg_atomic_write_u32(&app_acct->index[i].slot,
							pg_atomic_read_u32(&app_acct->index[j].slot));
		i = j;
	}
	pg_atomic_write_u32(&app_acct->index[i].slot, 0);
}

static inline void
atomic_max_u32(pg_atomic_uint32 *p, uint32 v)
{
	uint32		old = pg_atomic_read_u32(p);

	while (old < v && !pg_atomic_compare_exchange_u32(p, &old, v))
		;
}

static inline void
atomic_max_u64(pg_atomic_uint64 *p, uint64 v)
{
	uint64		old = pg_atomic_read_u64(p);

	while (old < v && !pg_atomic_compare_exchange_u64(p, &old, v))
		;
}

/* ---- saturation ---- */

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
 * Change g's connections and sessions in a transaction in its saturation
 * word by dc and dx, at time at; if that ends a saturated period, add its
 * length to saturated_ms.  A few atomic operations, no lock.
 */
static void
saturation_change(PhAppGroup *g, int dc, int dx, TimestampTz at)
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
}

/*
 * g's saturated time up to now, in ms: the periods ended and the open one.
 * Never raises, takes no lock; see the header comment for its error.
 */
static uint64
saturated_ms_now(PhAppGroup *g, TimestampTz now)
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
static void
saturation_rebase(PhAppGroup *g, TimestampTz now)
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

/* ---- the server-wide counters ---- */

/* This session logs in (first attach), or exits (last detach). */
static void
server_connection(bool login)
{
	if (login && !server_counted)
	{
		uint32		n = pg_atomic_add_fetch_u32(&app_server->connections, 1);

		server_counted = true;
		atomic_max_u32(&app_server->connections_peak, n);
		atomic_max_u32(&app_server->minute_connections_max, n);
	}
	else if (!login && server_counted)
	{
		server_counted = false;
		if (my_renamed)
		{
			my_renamed = false;
			pg_atomic_fetch_sub_u32(&app_server->renamed, 1);
		}
		pg_atomic_fetch_sub_u32(&app_server->connections, 1);
	}
}

/* This session changed its application_name between transactions. */
static void
server_renamed(void)
{
	pg_atomic_fetch_add_u64(&app_server->renames, 1);
	if (!my_renamed && server_counted)
	{
		uint32		n = pg_atomic_add_fetch_u32(&app_server->renamed, 1);

		my_renamed = true;
		atomic_max_u32(&app_server->minute_renamed_max, n);
	}
}

/* Add the figures of g to (other), under the exclusive lock. */
static void
fold_into_other(PhAppGroup *g)
{
	PhAppGroup *o = &app_acct->groups[0];

	atomic_max_u32(&o->connections_peak, pg_atomic_read_u32(&g->connections_peak));
	atomic_max_u32(&o->in_xact_peak, pg_atomic_read_u32(&g->in_xact_peak));
	atomic_max_u32(&o->minute_connections_max, pg_atomic_read_u32(&g->minute_connections_max));
	atomic_max_u32(&o->minute_in_xact_max, pg_atomic_read_u32(&g->minute_in_xact_max));
	atomic_max_u32(&o->minute_logins_max, pg_atomic_read_u32(&g->minute_logins_max));
	pg_atomic_fetch_add_u64(&o->xacts, pg_atomic_read_u64(&g->xacts));
	pg_atomic_fetch_add_u64(&o->xact_time_us, pg_atomic_read_u64(&g->xact_time_us));
	pg_atomic_fetch_add_u64(&o->idle_in_xact_us, pg_atomic_read_u64(&g->idle_in_xact_us));
	atomic_max_u64(&o->xact_max_us, pg_atomic_read_u64(&g->xact_max_us));
	pg_atomic_fetch_add_u64(&o->terminated, pg_atomic_read_u64(&g->terminated));
	pg_atomic_fetch_add_u64(&o->refused, pg_atomic_read_u64(&g->refused));
	for (int i = 0; i < PH_HIST_BUCKETS; i++)
		pg_atomic_fetch_add_u64(&o->histogram[i], pg_atomic_read_u64(&g->histogram[i]));
	/* its histogram is not in the worker's baseline of (other): no p99 */
	o->generation = ++app_acct->generations;
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
	for (int i = 1; i < app_acct->ngroups; i++)
	{
		volatile PhAppGroup *g = &app_acct->groups[i];
		uint64		seen;

		if (!g->in_use)
		{
			v->slot = (PhAppGroup *) g;
			v->in_use = false;
			return;
		}
		if (pg_atomic_read_u32(&g->connections) != 0 ||
			pg_atomic_read_u32(&g->in_xact) != 0)
			continue;
		seen = pg_atomic_read_u64(&g->last_seen);
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

	Assert(LWLockHeldByMeInMode(app_acct->lock, LW_EXCLUSIVE));
	if (seen != NULL && seen->slot == NULL)
		return NULL;
	g = seen != NULL ? seen->slot : NULL;
	if (g == NULL || g->in_use != seen->in_use ||
		(g->in_use && (pg_atomic_read_u32(&g->connections) != 0 ||
					   pg_atomic_read_u32(&g->in_xact) != 0 ||
					   pg_atomic_read_u64(&g->last_seen) != seen->last_seen)))
	{
		find_victim(&v);
		g = v.slot;
	}
	if (g != NULL && g->in_use)
	{
		fold_into_other(g);
		index_remove((int) (g - app_acct->groups));
		app_acct->evictions++;
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
static PhAppGroup *
attach(Oid database_id, const char *database, Oid role_id, const char *role,
	   const char *application)
{
	uint32		hash = key_hash(database, role_id, application);
	bool		exists = index_probe(hash);
	PhVictim	seen;
	PhAppGroup *g;
	uint32		n;

	if (!exists)
		find_victim(&seen);
	LWLockAcquire(app_acct->lock, exists ? LW_SHARED : LW_EXCLUSIVE);
	g = find_group(hash, database_id, database, role_id, application);
	if (g == NULL && exists)
	{
		LWLockRelease(app_acct->lock);
		LWLockAcquire(app_acct->lock, LW_EXCLUSIVE);
		g = find_group(hash, database_id, database, role_id, application);
	}
	if (g == NULL && (g = claim_slot(exists ? NULL : &seen)) != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		memset(g, 0, offsetof(PhAppGroup, connections));
		clear_counters(g);
		g->in_use = true;
		g->generation = ++app_acct->generations;
		g->hash = hash;
		g->database_id = database_id;
		g->role_id = role_id;
		strlcpy(g->database, database, NAMEDATALEN);
		strlcpy(g->role, role, NAMEDATALEN);
		strlcpy(g->application_name, application, NAMEDATALEN);
		g->since = now;
		g->created = now;
		index_insert((int) (g - app_acct->groups));
	}
	if (g == NULL)
		g = &app_acct->groups[0];
	n = pg_atomic_add_fetch_u32(&g->connections, 1);
	LWLockRelease(app_acct->lock);
	atomic_max_u32(&g->connections_peak, n);
	atomic_max_u32(&g->minute_connections_max, n);
	/* (attached: the slot stays the group's) */
	saturation_change(g, 1, 0, GetCurrentTimestamp());
	return g;
}

/* (the saturation word first: once connections is 0, the slot may go) */
static void
detach(PhAppGroup *g)
{
	TimestampTz now = GetCurrentTimestamp();

	saturation_change(g, -1, 0, now);
	pg_atomic_write_u64(&g->last_seen, (uint64) now);
	pg_atomic_fetch_sub_u32(&g->connections, 1);
}

/*
 * The session attaches to its group at login (counted in its logins), or
 * leaves the group it logged in to (exit, or a change of name; before it
 * detaches: once connections is 0, the slot may go).
 */
static void
session_login(bool login)
{
	if (login && !my_login)
	{
		uint32		n = pg_atomic_add_fetch_u32(&my_group->logins, 1);

		my_login = true;
		atomic_max_u32(&my_group->minute_logins_max, n);
	}
	else if (!login && my_login)
	{
		my_login = false;
		pg_atomic_fetch_sub_u32(&my_group->logins, 1);
	}
}

/*
 * At exit, first (before_shmem_exit, registered after the server's own
 * hooks, so run before them): a failed block ends without a transaction
 * callback; end it while its idle time is still there to read (the
 * session's statistics are flushed and its status entry released after).
 */
static void
accounting_exit_failed_block(int code, Datum arg)
{
	if (xact_group != NULL && xact_failed_block)
		end_counted_xact();
}

/* At exit, last (on_proc_exit, after the transaction was aborted): detach. */
static void
accounting_exit(int code, Datum arg)
{
	if (xact_group != NULL)
		end_counted_xact();		/* never expected */
	if (my_group != NULL)
	{
		session_login(false);
		detach(my_group);
		my_group = NULL;
	}
	server_connection(false);
}

static const char *
current_application(void)
{
	return application_name != NULL ? application_name : "";
}

/*
 * Has application_name changed since the session was attached?  (As
 * stored: its first NAMEDATALEN - 1 bytes.  Not by the GUC's pointer: a
 * freed string's address may be reused by the next value.)
 */
static bool
application_changed(void)
{
	return strncmp(current_application(), my_application, NAMEDATALEN - 1) != 0;
}

/*
 * Attach this session to the group of its database, role and
 * application_name (at login, or when its application_name changed).
 */
static void
attach_session(void)
{
	PhAppGroup *old = my_group;
	const char *role;

	if (!exit_registered)
	{
		before_shmem_exit(accounting_exit_failed_block, (Datum) 0);
		on_proc_exit(accounting_exit, (Datum) 0);
		exit_registered = true;
	}
	strlcpy(my_application, current_application(), NAMEDATALEN);
	role = MyProcPort->user_name != NULL ? MyProcPort->user_name : "";
	if (old != NULL)
		session_login(false);
	my_group = attach(MyDatabaseId, MyProcPort->database_name ? MyProcPort->database_name : "",
					  GetAuthenticatedUserId(), role, my_application);
	if (old != NULL)
	{
		detach(old);
		server_renamed();
	}
	else
	{
		session_login(true);
		server_connection(true);
	}
}

/* Is this process a client backend of a database, past its login? */
static bool
accountable(void)
{
	return app_acct != NULL && MyBackendType == B_BACKEND && !am_walsender &&
		MyProcPort != NULL && OidIsValid(MyDatabaseId) &&
		OidIsValid(GetSessionUserId());
}

/* ---- transactions ---- */

/*
 * From the per-statement hooks (xact_origin.c), for every statement: the
 * first under a new local transaction id starts a counted transaction.
 */
void
ph_accounting_statement(void)
{
	LocalTransactionId lxid;

	if (my_group == NULL)
		return;
	lxid = ph_my_lxid();
	if (lxid == counted_lxid || lxid == InvalidLocalTransactionId)
		return;
	if (xact_group != NULL)
	{
		/* a failed block that ended unseen (never expected) */
		if (!xact_failed_block)
			return;
		end_counted_xact();
	}
	counted_lxid = lxid;
	if (application_changed())
		attach_session();
	/*
	 * The transactions of one simple-query message all have its arrival as
	 * their start time: one after the first began when the one before it
	 * ended, not before.
	 */
	begin_counted_xact(my_group, Max(GetCurrentTransactionStartTimestamp(),
									 last_xact_end), false);
}

/* A counted transaction begins (explicit: a block, chained). */
static void
begin_counted_xact(PhAppGroup *g, TimestampTz started, bool explicit)
{
	uint32		n = pg_atomic_add_fetch_u32(&g->in_xact, 1);

	atomic_max_u32(&g->in_xact_peak, n);
	atomic_max_u32(&g->minute_in_xact_max, n);
	saturation_change(g, 0, 1, started);
	if (ph_client_pool_size > 0)
		atomic_max_u32(&g->minute_declared, (uint32) ph_client_pool_size);
	n = pg_atomic_add_fetch_u32(&app_server->in_xact, 1);
	atomic_max_u32(&app_server->in_xact_peak, n);
	atomic_max_u32(&app_server->minute_in_xact_max, n);
	xact_group = g;
	xact_started = started;
	xact_idle_base = pgStatTransactionIdleTime;
	xact_explicit = explicit;
	xact_ending = false;
	xact_chains_on = (XactEvent) -1;
	xact_failed_block = false;
}

/*
 * From the ProcessUtility hook (xact_origin.c), after a transaction
 * statement at top level ran without error (qc: its completion, whose tag
 * says whether a COMMIT rolled back): BEGIN makes the counted transaction
 * a block; COMMIT, ROLLBACK or PREPARE will end it, and AND CHAIN begin
 * the next at the same moment; a block that failed ends now (the server
 * ends an aborted block without a transaction callback).
 */
void
ph_accounting_transaction_stmt(int kind, bool chain, const QueryCompletion *qc)
{
	PhAppGroup *g = xact_group;

	if (g == NULL)
		return;
	switch ((TransactionStmtKind) kind)
	{
		case TRANS_STMT_BEGIN:
		case TRANS_STMT_START:
			xact_explicit = true;
			break;
		case TRANS_STMT_COMMIT:
		case TRANS_STMT_ROLLBACK:
		case TRANS_STMT_PREPARE:
			if (xact_failed_block)
			{
				end_counted_xact();
				if (chain)
					begin_counted_xact(g, GetCurrentTimestamp(), true);
				break;
			}
			xact_ending = true;
			/* a COMMIT AND CHAIN that fails to commit does not chain */
			if (chain)
				xact_chains_on = kind == TRANS_STMT_COMMIT &&
					(qc == NULL || qc->commandTag != CMDTAG_ROLLBACK) ?
					XACT_EVENT_COMMIT : XACT_EVENT_ABORT;
			break;
		default:
			break;
	}
}

/* The counted transaction ends (commit, abort or prepare). */
static void
end_counted_xact(void)
{
	PhAppGroup *g = xact_group;
	TimestampTz now = GetCurrentTimestamp();
	int64		duration = Max(now - xact_started, 0);
	int64		idle = pgStatTransactionIdleTime - xact_idle_base;
	volatile PgBackendStatus *me = MyBEEntry;

	if (idle < 0)
		idle = 0;				/* the counter was flushed meanwhile */
	/* ended while idle in it (a timeout, a termination): that idle time too */
	if (me != NULL && ph_idle_in_transaction(me->st_state) &&
		me->st_state_start_timestamp > 0 && now > me->st_state_start_timestamp)
		idle += now - me->st_state_start_timestamp;
	idle = Min(idle, duration);

	xact_group = NULL;
	last_xact_end = now;
	pg_atomic_fetch_add_u64(&g->xacts, 1);
	pg_atomic_fetch_add_u64(&g->xact_time_us, (uint64) duration);
	if (idle > 0)
		pg_atomic_fetch_add_u64(&g->idle_in_xact_us, (uint64) idle);
	pg_atomic_fetch_add_u64(&g->histogram[ph_hist_bucket(duration)], 1);
	atomic_max_u64(&g->xact_max_us, (uint64) duration);
	saturation_change(g, 0, -1, now);
	pg_atomic_fetch_sub_u32(&g->in_xact, 1);
	pg_atomic_fetch_sub_u32(&app_server->in_xact, 1);
}

static void
accounting_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (xact_group != NULL)
	{
		bool		chains = event == xact_chains_on;
		PhAppGroup *g = xact_group;

		/*
		 * An error inside a block, not its ROLLBACK nor the session's exit:
		 * the block stays open, aborted, until the statement that ends it.
		 */
		if (event == XACT_EVENT_ABORT && xact_explicit && !xact_ending &&
			!proc_exit_inprogress && IsTransactionBlock())
		{
			xact_failed_block = true;
			return;
		}
		end_counted_xact();
		if (chains)
			begin_counted_xact(g, GetCurrentTimestamp(), true);
	}
	if (event != XACT_EVENT_COMMIT)
		return;
	if (my_group == NULL && accountable())
		attach_session();		/* the login's transaction: settled */
}

/* From _PG_init, when preloaded. */
void
ph_accounting_install_hooks(void)
{
	if (ph_max_groups > 0)
		RegisterXactCallback(accounting_xact_callback, NULL);
}

/* This session is being ended by pool_health (xact_origin.c). */
void
ph_accounting_terminated(void)
{
	if (my_group != NULL)
		pg_atomic_fetch_add_u64(&my_group->terminated, 1);
}

/*
 * A connection was refused at login (admission.c): counted in its group
 * if it exists, else in (other).  Never raises.
 */
void
ph_accounting_refused(const char *database, Oid role_id, const char *application)
{
	PhAppGroup *g;

	if (app_acct == NULL)
		return;
	LWLockAcquire(app_acct->lock, LW_SHARED);
	g = find_group(key_hash(database, role_id, application), InvalidOid,
				   database, role_id, application);
	pg_atomic_fetch_add_u64(&(g != NULL ? g : &app_acct->groups[0])->refused, 1);
	LWLockRelease(app_acct->lock);
}

/* ---- reading, resetting ---- */

/*
 * Copy the groups in use into out (app_acct->ngroups entries), with the
 * current minute's figures, and their histograms if with_histogram (else
 * histogram[] is left unset: status() and metrics() need no percentile);
 * returns how many.
 */
int
ph_accounting_copy(PhAppGroupCopy *out, bool with_histogram)
{
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (app_acct == NULL)
		return 0;
	LWLockAcquire(app_acct->lock, LW_SHARED);
	for (int i = 0; i < app_acct->ngroups; i++)
	{
		PhAppGroup *g = &app_acct->groups[i];
		PhAppGroupCopy *c = &out[n];

		if (!g->in_use)
			continue;
		if (g->other && pg_atomic_read_u64(&g->xacts) == 0 &&
			pg_atomic_read_u32(&g->connections_peak) == 0 &&
			pg_atomic_read_u64(&g->refused) == 0)
			continue;			/* (other) has never been used */
		c->other = g->other;
		c->database_id = g->database_id;
		c->role_id = g->role_id;
		strlcpy(c->database, g->database, NAMEDATALEN);
		strlcpy(c->role, g->role, NAMEDATALEN);
		strlcpy(c->application_name, g->application_name, NAMEDATALEN);
		c->since = g->since;
		c->created = g->created;
		c->connections = pg_atomic_read_u32(&g->connections);
		c->connections_peak = pg_atomic_read_u32(&g->connections_peak);
		c->in_xact = pg_atomic_read_u32(&g->in_xact);
		c->in_xact_peak = pg_atomic_read_u32(&g->in_xact_peak);
		c->minute_connections_max = Max(pg_atomic_read_u32(&g->minute_connections_max),
										c->connections);
		c->minute_in_xact_max = Max(pg_atomic_read_u32(&g->minute_in_xact_max), c->in_xact);
		c->xacts = pg_atomic_read_u64(&g->xacts);
		c->xact_time_us = pg_atomic_read_u64(&g->xact_time_us);
		c->idle_in_xact_us = pg_atomic_read_u64(&g->idle_in_xact_us);
		c->xact_max_us = pg_atomic_read_u64(&g->xact_max_us);
		c->terminated = pg_atomic_read_u64(&g->terminated);
		c->refused = pg_atomic_read_u64(&g->refused);
		if (with_histogram)
			for (int b = 0; b < PH_HIST_BUCKETS; b++)
				c->histogram[b] = pg_atomic_read_u64(&g->histogram[b]);
		c->minute_xacts = c->xacts - g->base_xacts;
		c->minute_xact_time_us = c->xact_time_us - g->base_xact_time_us;
		c->minute_idle_in_xact_us = c->idle_in_xact_us - g->base_idle_in_xact_us;
		c->last_seen = (TimestampTz) pg_atomic_read_u64(&g->last_seen);
		c->minute_declared = pg_atomic_read_u32(&g->minute_declared);
		c->minute_logins_max = Max(pg_atomic_read_u32(&g->minute_logins_max),
								   pg_atomic_read_u32(&g->logins));
		{
			uint64		total = saturated_ms_now(g, now);

			c->minute_saturated_us = total > g->base_saturated_ms ?
				(total - g->base_saturated_ms) * 1000 : 0;
		}
		n++;
	}
	LWLockRelease(app_acct->lock);
	return n;
}

/*
 * Reset the counters of every group (not what is current: connections,
 * sessions in a transaction, whose peaks restart from them).
 */
void
ph_accounting_reset(void)
{
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(app_acct->lock, LW_EXCLUSIVE);
	for (int i = 0; i < app_acct->ngroups; i++)
	{
		PhAppGroup *g = &app_acct->groups[i];

		if (!g->in_use)
			continue;
		pg_atomic_write_u32(&g->connections_peak, 0);
		pg_atomic_write_u32(&g->in_xact_peak, 0);
		atomic_max_u32(&g->connections_peak, pg_atomic_read_u32(&g->connections));
		atomic_max_u32(&g->in_xact_peak, pg_atomic_read_u32(&g->in_xact));
		/* the minute being accumulated keeps what it counted (modulo 2^64) */
		g->base_xacts -= pg_atomic_exchange_u64(&g->xacts, 0);
		g->base_xact_time_us -= pg_atomic_exchange_u64(&g->xact_time_us, 0);
		g->base_idle_in_xact_us -= pg_atomic_exchange_u64(&g->idle_in_xact_us, 0);
		pg_atomic_write_u64(&g->xact_max_us, 0);
		pg_atomic_write_u64(&g->terminated, 0);
		pg_atomic_write_u64(&g->refused, 0);
		for (int b = 0; b < PH_HIST_BUCKETS; b++)
			pg_atomic_write_u64(&g->histogram[b], 0);
		g->since = now;
	}
	app_acct->resets++;
	app_acct->reset_at = now;
	LWLockRelease(app_acct->lock);
}

/* ---- the worker: closing minutes ---- */

/*
 * The worker's copy of each slot's histogram at the start of the minute,
 * the group (generation) and the resets it was taken from, and the p99 of
 * the minute being closed, worked out from it under the shared lock; and
 * what the close decided for each group: a row of its own, or folded
 * into (other)'s row.
 */
static uint64 (*minute_hist_base)[PH_HIST_BUCKETS] = NULL;
static uint32 *minute_base_generation = NULL;
static uint64 minute_base_resets;
static bool minute_bases_taken = false;	/* by this worker, at a close */
static int64 *minute_p99 = NULL;

/*
 * At a minute's close, under the exclusive lock: g's saturated time in
 * the minute (its open period moved into saturated_ms first; at most the
 * minute's length), its baseline moved on, and the largest pool size its
 * sessions declared in it (taken out: the next minute starts from 0).
 */
static void
minute_saturation(PhAppGroup *g, TimestampTz now, int64 *saturated_us,
				  int32 *declared)
{
	uint64		total;
	uint32		declared_max;

	saturation_rebase(g, now);
	total = saturated_ms_now(g, now);
	*saturated_us = total > g->base_saturated_ms ?
		Min((int64) (total - g->base_saturated_ms) * 1000,
			Max(now - app_acct->minute_start, 0)) : 0;
	g->base_saturated_ms = Max(g->base_saturated_ms, total);
	declared_max = pg_atomic_exchange_u32(&g->minute_declared, 0);
	*declared = (int32) Min(declared_max, PG_INT32_MAX);	/* Min reads twice */
}

/*
 * At a minute's close, under the exclusive lock: the server-wide maxima
 * of the minute into app_server's ring (the next minute's start from what
 * is current); the first call only marks when the accounting began.
 */
static void
server_minute_close(bool first, TimestampTz now)
{
	uint32		connections_max = pg_atomic_exchange_u32(&app_server->minute_connections_max, 0);
	uint32		in_xact_max = pg_atomic_exchange_u32(&app_server->minute_in_xact_max, 0);
	uint32		renamed_max = pg_atomic_exchange_u32(&app_server->minute_renamed_max, 0);
	uint32		connections = pg_atomic_read_u32(&app_server->connections);
	uint32		in_xact = pg_atomic_read_u32(&app_server->in_xact);
	uint32		renamed = pg_atomic_read_u32(&app_server->renamed);
	PhAppServerMinute *row;

	atomic_max_u32(&app_server->minute_connections_max, connections);
	atomic_max_u32(&app_server->minute_in_xact_max, in_xact);
	atomic_max_u32(&app_server->minute_renamed_max, renamed);
	if (first)
	{
		app_server->started = now;
		return;
	}
	row = &app_server->minutes[app_server->minute_next];
	row->at = app_acct->minute_start;
	row->connections_max = (int32) Max(connections_max, connections);
	row->in_xact_max = (int32) Max(in_xact_max, in_xact);
	row->renamed_max = (int32) Max(renamed_max, renamed);
	app_server->minute_next = (app_server->minute_next + 1) % app_server->minute_capacity;
	if (app_server->minute_count < app_server->minute_capacity)
		app_server->minute_count++;
}

typedef enum PhMinuteFate
{
	FATE_NONE = 0,				/* no row seen (nothing in the minute, yet) */
	FATE_OWN,					/* a row of its own */
	FATE_FOLD					/* folded into (other)'s row */
} PhMinuteFate;

static char *minute_fate = NULL;

/* A group with something in the minute being closed, to rank. */
typedef struct PhMinuteCandidate
{
	int			slot;
	bool		existed;		/* before the minute began */
	uint64		xacts;
	uint32		connections_max;
} PhMinuteCandidate;

static PhMinuteCandidate *minute_candidates = NULL;

/* Older groups first, then the most transactions, then connections. */
static int
cmp_candidates(const void *a, const void *b)
{
	const PhMinuteCandidate *x = a;
	const PhMinuteCandidate *y = b;

	if (x->existed != y->existed)
		return x->existed ? -1 : 1;
	if (x->xacts != y->xacts)
		return x->xacts > y->xacts ? -1 : 1;
	if (x->connections_max != y->connections_max)
		return x->connections_max > y->connections_max ? -1 : 1;
	return x->slot - y->slot;
}

static void
append_minute(const PhAppMinute *row)
{
	app_acct->minutes[app_acct->minute_next] = *row;
	app_acct->minute_next = (app_acct->minute_next + 1) % app_acct->minute_capacity;
	if (app_acct->minute_count < app_acct->minute_capacity)
		app_acct->minute_count++;
}

/*
 * Under the shared lock, at a close: which groups of the closed minute
 * get a row of their own (minute_fate), at most rows_per_minute() - 1,
 * (other)'s row being the last: the groups that existed before the minute
 * began (a slot of the same generation at the last close) first, then
 * the busiest.  Returns how many are folded.
 */
static int
choose_minute_rows(void)
{
	int			own = rows_per_minute() - 1;
	int			n = 0;

	for (int i = 1; i < app_acct->ngroups; i++)
	{
		PhAppGroup *g = &app_acct->groups[i];
		uint32		connections_max;
		uint64		xacts;

		minute_fate[i] = FATE_NONE;
		if (!g->in_use)
			continue;
		connections_max = Max(pg_atomic_read_u32(&g->minute_connections_max),
							  pg_atomic_read_u32(&g->connections));
		xacts = pg_atomic_read_u64(&g->xacts) - g->base_xacts;
		if (connections_max == 0 && xacts == 0)
			continue;
		minute_candidates[n].slot = i;
		minute_candidates[n].existed = minute_bases_taken &&
			minute_base_generation[i] == g->generation;
		minute_candidates[n].xacts = xacts;
		minute_candidates[n].connections_max = connections_max;
		n++;
	}
	if (n > own)
		qsort(minute_candidates, n, sizeof(PhMinuteCandidate), cmp_candidates);
	for (int k = 0; k < n; k++)
		minute_fate[minute_candidates[k].slot] = k < own ? FATE_OWN : FATE_FOLD;
	return Max(n - own, 0);
}

/*
 * Worker, at each sample: when a minute has passed, close it: a row per
 * group that held a connection or ran a transaction in it, at most
 * rows_per_minute() of them (the ring's budget, so that it covers the
 * retention whatever the number of groups): the others are folded into
 * (other)'s row for the minute (maxima as the largest, the rest summed,
 * the p99 of their durations together).  The first
 * call after the server started begins the first minute without closing
 * one (what happened before is not attributed to a minute).  A worker
 * restarted within a minute closes it as usual, except for the
 * percentile of its durations (null: the histogram's baseline was the
 * previous worker's).  A group created during the minute (its counters
 * cleared when its slot was claimed) has all its durations in it.
 *
 * A login cannot attach while the worker holds the exclusive lock, so the
 * histograms, the bulk of the work (PH_HIST_BUCKETS counters a group),
 * are read, the rows chosen and the percentiles worked out first under
 * the shared lock; the exclusive pass only moves the minute's baselines
 * and appends the rows.  A transaction that ends between the two passes
 * counts in the closed minute's xacts and in the next minute's durations;
 * a group that begins its minute between them gets a row of its own if
 * the budget has room left, else it is folded.
 */
void
ph_accounting_sample(TimestampTz now)
{
	TimestampTz minute = now - now % USECS_PER_MINUTE;
	bool		first;
	uint64		resets;
	int			folded = 0;
	uint64		merged[PH_HIST_BUCKETS];
	int64		merged_max = 0;
	bool		merged_valid = true;
	int			own_room;
	bool		other_p99_valid = true;
	PhAppMinute other_row;
	bool		other_has_row = false;

	if (app_acct == NULL)
		return;
	if (minute_hist_base == NULL)
	{
		minute_hist_base = MemoryContextAllocZero(TopMemoryContext,
												  sizeof(*minute_hist_base) * app_acct->ngroups);
		minute_base_generation = MemoryContextAllocZero(TopMemoryContext,
														sizeof(uint32) * app_acct->ngroups);
		minute_p99 = MemoryContextAllocZero(TopMemoryContext,
											sizeof(int64) * app_acct->ngroups);
		minute_fate = MemoryContextAllocZero(TopMemoryContext, app_acct->ngroups);
		minute_candidates = MemoryContextAllocZero(TopMemoryContext,
												   sizeof(PhMinuteCandidate) * app_acct->ngroups);
	}
	first = app_acct->minute_start == 0;
	if (!first && minute <= app_acct->minute_start)
		return;

	/*
	 * The rows of the minute, the histograms' percentiles (the folded
	 * groups' and (other)'s together), and the next minute's baselines.
	 */
	memset(merged, 0, sizeof(merged));
	LWLockAcquire(app_acct->lock, LW_SHARED);
	resets = app_acct->resets;
	if (!first)
		folded = choose_minute_rows();
	else
		memset(minute_fate, FATE_NONE, app_acct->ngroups);
	for (int i = 0; i < app_acct->ngroups; i++)
	{
		PhAppGroup *g = &app_acct->groups[i];
		uint64		hist[PH_HIST_BUCKETS];
		bool		same_group;
		bool		into_other = g->other || minute_fate[i] == FATE_FOLD;

		if (!g->in_use)
			continue;
		for (int b = 0; b < PH_HIST_BUCKETS; b++)
			hist[b] = pg_atomic_read_u64(&g->histogram[b]);
		minute_p99[i] = -1;
		/*
		 * Against the histogram at the last close, unless a reset cleared
		 * it since; a slot claimed since the last close (after any reset)
		 * was cleared: all its durations are this minute's.  Not (other)
		 * after an eviction: what it took in is not.
		 */
		same_group = minute_base_generation[i] == g->generation;
		if (minute_bases_taken &&
			(same_group ? minute_base_resets == resets :
			 !g->other && (minute_base_resets == resets || g->since > app_acct->reset_at)))
		{
			const uint64 *base = same_group ? minute_hist_base[i] : NULL;
			uint64		delta[PH_HIST_BUCKETS];
			int64		max = (int64) pg_atomic_read_u64(&g->xact_max_us);

			for (int b = 0; b < PH_HIST_BUCKETS; b++)
				delta[b] = base == NULL ? hist[b] :
					hist[b] >= base[b] ? hist[b] - base[b] : 0;
			minute_p99[i] = ph_hist_quantile(delta, 0.99, max);
			if (into_other)
			{
				for (int b = 0; b < PH_HIST_BUCKETS; b++)
					merged[b] += delta[b];
				merged_max = Max(merged_max, max);
			}
		}
		else if (into_other)
			merged_valid = false;
		memcpy(minute_hist_base[i], hist, sizeof(hist));
		minute_base_generation[i] = g->generation;
	}
	if (folded > 0)
		minute_p99[0] = merged_valid ? ph_hist_quantile(merged, 0.99, merged_max) : -1;
	minute_base_resets = resets;
	minute_bases_taken = true;
	LWLockRelease(app_acct->lock);

	/* own rows the budget still has room for, beyond those chosen */
	own_room = rows_per_minute() - 1;
	for (int i = 1; i < app_acct->ngroups; i++)
		if (minute_fate[i] == FATE_OWN)
			own_room--;

	LWLockAcquire(app_acct->lock, LW_EXCLUSIVE);
	memset(&other_row, 0, sizeof(other_row));
	for (int i = 0; i < app_acct->ngroups; i++)
	{
		PhAppGroup *g = &app_acct->groups[i];
		uint32		connections;
		uint32		in_xact;
		uint32		connections_max;
		uint32		in_xact_max;
		uint32		logins;
		uint32		logins_max;
		uint64		xacts;
		uint64		xact_time;
		uint64		idle;
		int64		saturated_us;
		int32		declared;
		bool		same_group;

		if (!g->in_use)
			continue;
		minute_saturation(g, now, &saturated_us, &declared);
		/*
		 * The maxima of the next minute start from what is current: taken
		 * out first, so that a session arriving meanwhile raises the new
		 * minute's maximum (and the closed one's, through the current
		 * figure).
		 */
		connections_max = pg_atomic_exchange_u32(&g->minute_connections_max, 0);
		in_xact_max = pg_atomic_exchange_u32(&g->minute_in_xact_max, 0);
		connections = pg_atomic_read_u32(&g->connections);
		in_xact = pg_atomic_read_u32(&g->in_xact);
		atomic_max_u32(&g->minute_connections_max, connections);
		atomic_max_u32(&g->minute_in_xact_max, in_xact);
		connections_max = Max(connections_max, connections);
		in_xact_max = Max(in_xact_max, in_xact);
		/* likewise, the sessions attached since their login */
		logins_max = pg_atomic_exchange_u32(&g->minute_logins_max, 0);
		logins = pg_atomic_read_u32(&g->logins);
		atomic_max_u32(&g->minute_logins_max, logins);
		logins_max = Max(logins_max, logins);
		xacts = pg_atomic_read_u64(&g->xacts);
		xact_time = pg_atomic_read_u64(&g->xact_time_us);
		idle = pg_atomic_read_u64(&g->idle_in_xact_us);
		/* the group the first pass saw in this slot */
		same_group = minute_base_generation[i] == g->generation;

		if (!first && (connections_max > 0 || xacts != g->base_xacts))
		{
			PhAppMinute row;

			memset(&row, 0, sizeof(row));
			row.at = app_acct->minute_start;
			row.other = g->other;
			row.database_id = g->database_id;
			row.role_id = g->role_id;
			strlcpy(row.database, g->database, NAMEDATALEN);
			strlcpy(row.application_name, g->application_name, NAMEDATALEN);
			row.connections_max = (int32) connections_max;
			row.in_xact_max = (int32) in_xact_max;
			row.xacts = (int64) (xacts - g->base_xacts);
			row.xact_time_us = (int64) (xact_time - g->base_xact_time_us);
			row.idle_in_xact_us = (int64) (idle - g->base_idle_in_xact_us);
			row.saturated_us = saturated_us;
			row.declared_pool_size = declared;
			row.logins_max = (int32) logins_max;
			/* not if the slot changed hands, or was reset, meanwhile */
			row.xact_p99_us = same_group && resets == app_acct->resets ?
				minute_p99[i] : -1;

			if (g->other)
			{
				other_row = row;
				other_has_row = true;
			}
			else if (same_group && minute_fate[i] == FATE_OWN)
				append_minute(&row);
			else if (!(same_group && minute_fate[i] == FATE_FOLD) && own_room > 0)
			{
				own_room--;		/* began its minute after the first pass */
				append_minute(&row);
			}
			else
			{
				/* into (other)'s row */
				if (!other_has_row)
				{
					other_row.at = row.at;
					other_row.other = true;
					strlcpy(other_row.application_name,
							app_acct->groups[0].application_name, NAMEDATALEN);
					other_row.xact_p99_us = -1;
					other_has_row = true;
				}
				other_row.connections_max = Max(other_row.connections_max, row.connections_max);
				other_row.in_xact_max = Max(other_row.in_xact_max, row.in_xact_max);
				other_row.logins_max = Max(other_row.logins_max, row.logins_max);
				other_row.xacts += row.xacts;
				other_row.xact_time_us += row.xact_time_us;
				other_row.idle_in_xact_us += row.idle_in_xact_us;
				/* durations the first pass did not merge */
				if (!(same_group && minute_fate[i] == FATE_FOLD) && row.xacts > 0)
					other_p99_valid = false;
			}
		}
		g->base_xacts = xacts;
		g->base_xact_time_us = xact_time;
		g->base_idle_in_xact_us = idle;
	}
	if (other_has_row)
	{
		/* (other)'s p99 is that of the folded groups' durations too */
		PhAppGroup *o = &app_acct->groups[0];

		other_row.xact_p99_us = other_p99_valid &&
			minute_base_generation[0] == o->generation && resets == app_acct->resets ?
			minute_p99[0] : -1;
		append_minute(&other_row);
	}
	server_minute_close(first, now);
	app_acct->minute_start = minute;
	LWLockRelease(app_acct->lock);
}

/*
 * Copy the minute rows at or after since, oldest first, into a palloc'd
 * array; *count says how many.
 */
PhAppMinute *
ph_accounting_copy_minutes(TimestampTz since, int *count)
{
	PhAppMinute *out;
	int			n = 0;
	int			room;

	*count = 0;
	if (app_acct == NULL)
		return NULL;
	/* the count only grows (to the capacity): room for what is there */
	room = app_acct->minute_count;
	out = palloc(sizeof(PhAppMinute) * Max(room, 1));
	LWLockAcquire(app_acct->lock, LW_SHARED);
	for (int k = Max(app_acct->minute_count - room, 0); k < app_acct->minute_count; k++)
	{
		int			i = (app_acct->minute_next - app_acct->minute_count + k + app_acct->minute_capacity) %
			app_acct->minute_capacity;

		if (app_acct->minutes[i].at >= since)
			out[n++] = app_acct->minutes[i];
	}
	LWLockRelease(app_acct->lock);
	*count = n;
	return out;
}

/*
 * For status(): the groups in use (with (other), once used), the groups
 * evicted into (other) since the server started, and when the minute
 * being accumulated began (0: the worker has not started one).
 */
void
ph_accounting_state(int *groups, uint64 *evictions, TimestampTz *minute_start)
{
	*groups = 0;
	*evictions = 0;
	*minute_start = 0;
	if (app_acct == NULL)
		return;
	LWLockAcquire(app_acct->lock, LW_SHARED);
	for (int i = 1; i < app_acct->ngroups; i++)
		if (app_acct->groups[i].in_use)
			(*groups)++;
	*evictions = app_acct->evictions;
	*minute_start = app_acct->minute_start;
	LWLockRelease(app_acct->lock);
}

/*
 * The server-wide counters, with when the worker began the first minute;
 * false if the accounting is off.
 */
bool
ph_accounting_server(PhAppServerCopy *out)
{
	memset(out, 0, sizeof(*out));
	if (app_acct == NULL)
		return false;
	LWLockAcquire(app_acct->lock, LW_SHARED);
	out->started = app_server->started;
	LWLockRelease(app_acct->lock);
	out->connections = pg_atomic_read_u32(&app_server->connections);
	out->connections_peak = pg_atomic_read_u32(&app_server->connections_peak);
	out->in_xact = pg_atomic_read_u32(&app_server->in_xact);
	out->in_xact_peak = pg_atomic_read_u32(&app_server->in_xact_peak);
	out->minute_connections_max = Max(pg_atomic_read_u32(&app_server->minute_connections_max),
									  out->connections);
	out->minute_in_xact_max = Max(pg_atomic_read_u32(&app_server->minute_in_xact_max),
								  out->in_xact);
	out->renamed = pg_atomic_read_u32(&app_server->renamed);
	out->minute_renamed_max = Max(pg_atomic_read_u32(&app_server->minute_renamed_max),
								  out->renamed);
	out->renames = pg_atomic_read_u64(&app_server->renames);
	return true;
}

/*
 * Copy the server-wide minute rows at or after since, oldest first, into a
 * palloc'd array; *count says how many.
 */
PhAppServerMinute *
ph_accounting_copy_server_minutes(TimestampTz since, int *count)
{
	PhAppServerMinute *out;
	int			n = 0;

	*count = 0;
	if (app_acct == NULL)
		return NULL;
	out = palloc(sizeof(PhAppServerMinute) * Max(app_server->minute_capacity, 1));
	LWLockAcquire(app_acct->lock, LW_SHARED);
	for (int k = 0; k < app_server->minute_count; k++)
	{
		int			i = (app_server->minute_next - app_server->minute_count + k +
						 app_server->minute_capacity) % app_server->minute_capacity;

		if (app_server->minutes[i].at >= since)
			out[n++] = app_server->minutes[i];
	}
	LWLockRelease(app_acct->lock);
	*count = n;
	return out;
}

/* ---- behind a connection pooler ---- */

/*
 * Does a policy act at login on the application_name (a quota or
 * refuse_at, matched by name)?  Behind a pooler in transaction mode the
 * name at login is the pooler's, not that of the clients it serves.
 */
bool
ph_policy_by_login_name(const PhPolicy *policy)
{
	return policy->match_application &&
		(policy->max_connections >= 0 || policy->refuse_at >= 0);
}

/*
 * Worker, at each sample: while sessions that changed application_name
 * between transactions are connected, a WARNING once (per worker) for
 * each policy in effect that acts at login by name.  Never raises but as
 * ereport(WARNING) does.
 */
void
ph_accounting_warn_pooled(const PhPolicies *policies)
{
	static char (*warned)[NAMEDATALEN] = NULL;
	static int	nwarned = 0;
	static int	room = 0;
	uint32		renamed;

	if (app_acct == NULL || policies->count == 0)
		return;
	renamed = pg_atomic_read_u32(&app_server->renamed);
	if (renamed == 0)
		return;
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];
		bool		done = false;

		if (!ph_policy_by_login_name(p))
			continue;
		for (int k = 0; k < nwarned && !done; k++)
			done = strcmp(warned[k], NameStr(p->name)) == 0;
		if (done)
			continue;
		if (nwarned == room)
		{
			room = Max(16, room * 2);
			warned = warned == NULL ?
				MemoryContextAlloc(TopMemoryContext, sizeof(*warned) * room) :
				repalloc(warned, sizeof(*warned) * room);
		}
		strlcpy(warned[nwarned++], NameStr(p->name), NAMEDATALEN);
		ereport(WARNING,
				(errmsg("pool_health: policy \"%s\" matches application_name at login, but %u session%s changed application_name between transactions",
						NameStr(p->name), renamed, renamed == 1 ? "" : "s"),
				 errdetail("Behind a connection pooler in transaction mode (pgbouncer) a server connection logs in without its clients' application_name and then serves many clients: a quota or refuse_at by application_name does not apply to their sessions."),
				 errhint("Budget by role (a policy matching the pooler's role) and with the pooler's own limits (pgbouncer: pool_size, max_db_connections, max_user_connections).")));
	}
}

/* When the minute being accumulated began (0: the worker has not started it). */
TimestampTz
ph_accounting_minute_start(void)
{
	TimestampTz start;

	if (app_acct == NULL)
		return 0;
	LWLockAcquire(app_acct->lock, LW_SHARED);
	start = app_acct->minute_start;
	LWLockRelease(app_acct->lock);
	return start;
}

/* ---- per application_name (metrics(), status()) ---- */

static int
cmp_app_total(const void *a, const void *b)
{
	const PhAppTotal *x = a;
	const PhAppTotal *y = b;

	if (x->order != y->order)
		return x->order > y->order ? -1 : 1;
	return strcmp(x->application_name, y->application_name);
}

static int
cmp_group_application(const void *a, const void *b)
{
	const PhAppGroupCopy *x = *(PhAppGroupCopy *const *) a;
	const PhAppGroupCopy *y = *(PhAppGroupCopy *const *) b;

	return strcmp(x->application_name, y->application_name);
}

/*
 * The groups summed per application_name ("(other)" apart), largest first
 * by transactions (by_excess: by excess connections), each with the
 * creation of its oldest group; a palloc'd array, *count entries.  The
 * groups are sorted by name first: O(n log n) in the groups.
 */
PhAppTotal *
ph_accounting_by_application(bool by_excess, int *count)
{
	PhAppGroupCopy *groups;
	PhAppGroupCopy **sorted;
	PhAppTotal *totals;
	int			n;
	int			nsorted = 0;
	int			ntotals = 0;

	*count = 0;
	if (app_acct == NULL)
		return NULL;
	groups = palloc(sizeof(PhAppGroupCopy) * app_acct->ngroups);
	n = ph_accounting_copy(groups, false);
	sorted = palloc(sizeof(PhAppGroupCopy *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (!groups[i].other)	/* not an application */
			sorted[nsorted++] = &groups[i];
	qsort(sorted, nsorted, sizeof(PhAppGroupCopy *), cmp_group_application);
	totals = palloc0(sizeof(PhAppTotal) * Max(nsorted, 1));
	for (int i = 0; i < nsorted; i++)
	{
		PhAppGroupCopy *g = sorted[i];
		PhAppTotal *t = ntotals > 0 ? &totals[ntotals - 1] : NULL;

		if (t == NULL || strcmp(t->application_name, g->application_name) != 0)
		{
			t = &totals[ntotals++];
			strlcpy(t->application_name, g->application_name, NAMEDATALEN);
			t->created = g->created;
		}
		t->created = Min(t->created, g->created);
		t->connections += g->connections;
		t->connections_peak += g->connections_peak;
		t->in_xact += g->in_xact;
		t->in_xact_peak += g->in_xact_peak;
		t->xacts += g->xacts;
		t->xact_time_us += g->xact_time_us;
		t->idle_in_xact_us += g->idle_in_xact_us;
		t->excess += g->connections_peak > g->in_xact_peak ?
			g->connections_peak - g->in_xact_peak : 0;
	}
	for (int k = 0; k < ntotals; k++)
		totals[k].order = by_excess ? totals[k].excess : totals[k].xacts;
	qsort(totals, ntotals, sizeof(PhAppTotal), cmp_app_total);
	pfree(sorted);
	pfree(groups);
	*count = ntotals;
	return totals;
}
