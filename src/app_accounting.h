/*-------------------------------------------------------------------------
 *
 * app_accounting.h
 *		Per-application accounting (app_accounting.c): groups of sessions by
 *		database, role and application_name, their counters, histograms and
 *		minutes; the values copied out for app_advice.c, metrics and status().
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_APP_ACCOUNTING_H
#define PH_APP_ACCOUNTING_H

#include "ph_model.h"

/*
 * Per-application accounting (app_accounting.c).  Durations are usec.
 * Histogram: exact below 8 usec, then 8 buckets per power of two up to
 * 2^PH_HIST_MAX_EXPONENT usec (about 12 days; longer ones in the last).
 */
#define PH_HIST_MAX_EXPONENT 40
#define PH_HIST_BUCKETS (8 + (PH_HIST_MAX_EXPONENT - 2) * 8)
/* minute rows kept per minute of retention, on average */
#define PH_APP_ROWS_PER_MINUTE 32

/*
 * A group: keys (written under the accounting lock, exclusive, while no
 * session is attached; read under it, or by an attached session) and
 * counters (atomics; a session updates its own group's without the lock).
 * The counters a transaction updates share one cache line of their own
 * (PH_CACHE_ALIGNED), apart from the keys logins read, so that the
 * backends of a group move as few cache lines between cores as they can.
 */
#define PH_CACHE_LINE 64
#ifdef pg_attribute_aligned
#define PH_CACHE_ALIGNED pg_attribute_aligned(PH_CACHE_LINE)
#else
#define PH_CACHE_ALIGNED
#endif

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
	 * The minute being accumulated began with these (worker, under the
	 * lock; a reset lowers them by what it clears, modulo 2^64, so the
	 * minute keeps its count).
	 */
	uint64		base_xacts;
	uint64		base_xact_time_us;
	uint64		base_idle_in_xact_us;
	uint64		base_saturated_ms;	/* of the saturated time, see below */
	/*
	 * counters: from here on, cleared together (pg_atomic_init_*: in the
	 * postmaster, or under the accounting lock held exclusively with no
	 * session attached, as clear_counters() asserts); the first 64 bytes
	 * hot
	 */
	pg_atomic_uint32 connections PH_CACHE_ALIGNED;
	pg_atomic_uint32 connections_peak;
	pg_atomic_uint32 in_xact;
	pg_atomic_uint32 in_xact_peak;
	pg_atomic_uint32 minute_connections_max;
	pg_atomic_uint32 minute_in_xact_max;
	pg_atomic_uint64 xacts;
	pg_atomic_uint64 xact_time_us;
	pg_atomic_uint64 idle_in_xact_us;
	pg_atomic_uint64 xact_max_us;
	/*
	 * Connections and sessions in a transaction again, with when the
	 * group last became saturated (all its connections in a transaction),
	 * in one word changed by compare-and-swap (app_accounting.c), so that
	 * each change says exactly whether it began or ended a saturated
	 * period; saturated_ms sums the periods that ended.
	 */
	pg_atomic_uint64 saturation;
	pg_atomic_uint64 terminated;
	pg_atomic_uint64 refused;
	pg_atomic_uint64 last_seen;	/* when a session last detached */
	pg_atomic_uint64 saturated_ms;	/* saturated periods ended, in ms */
	pg_atomic_uint32 minute_declared;	/* most pool_health.client_pool_size
										 * declared in the minute */
	pg_atomic_uint32 logins;	/* attached sessions that logged in with its
								 * name (not moved in by a rename) */
	pg_atomic_uint32 minute_logins_max; /* the most of them in the minute */
	pg_atomic_uint64 histogram[PH_HIST_BUCKETS];
} PhAppGroup;

/* One minute of one group (application_history). */
typedef struct PhAppMinute
{
	TimestampTz at;				/* start of the minute */
	bool		other;
	Oid			database_id;
	Oid			role_id;
	char		database[NAMEDATALEN];
	char		application_name[NAMEDATALEN];
	int32		connections_max;
	int32		in_xact_max;
	int64		xacts;
	int64		xact_time_us;
	int64		xact_p99_us;	/* -1: no transaction */
	int64		idle_in_xact_us;
	int64		saturated_us;	/* time all its connections were in a
								 * transaction */
	int32		declared_pool_size; /* most its sessions declared, or 0 */
	int32		logins_max;		/* most of its connections at once that had
								 * logged in with its name (0: all had come
								 * by a change of application_name) */
} PhAppMinute;

/*
 * One minute of the whole server (pool_advice's (all) row): exact maxima
 * of the client backends accounted and of those in a transaction, each
 * counted once whatever application_name it has or changes to.
 */
typedef struct PhAppServerMinute
{
	TimestampTz at;				/* start of the minute */
	int32		connections_max;
	int32		in_xact_max;
	int32		renamed_max;	/* sessions that had changed application_name */
} PhAppServerMinute;

/* The server-wide counters copied out (app_accounting.c). */
typedef struct PhAppServerCopy
{
	TimestampTz started;		/* the first minute began (0: not yet) */
	uint32		connections;
	uint32		connections_peak;
	uint32		in_xact;
	uint32		in_xact_peak;
	uint32		minute_connections_max;
	uint32		minute_in_xact_max;
	uint32		renamed;		/* connected sessions that changed
								 * application_name between transactions */
	uint32		minute_renamed_max; /* the most of them in the minute */
	uint64		renames;		/* such changes since the server started */
} PhAppServerCopy;

/* The groups of one application_name summed (metrics(), status()). */
typedef struct PhAppTotal
{
	char		application_name[NAMEDATALEN];
	uint64		connections;
	uint64		connections_peak;
	uint64		in_xact;
	uint64		in_xact_peak;
	uint64		xacts;
	uint64		xact_time_us;
	uint64		idle_in_xact_us;
	uint64		excess;			/* connections_peak - in_xact_peak, per group */
	uint64		order;			/* what they are sorted by */
	TimestampTz created;		/* when its oldest group was created */
} PhAppTotal;

/*
 * The accounting's shared memory; see app_accounting.c for its lock
 * (app_acct->lock: "exclusive" and "shared" below are its modes).  Fixed
 * at start: lock, ngroups, minute_capacity, minutes, index, index_mask,
 * hash_seed.
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
	struct PhAppIndexEntry *index;	/* the groups by hash (app_accounting.c) */
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

/* A group copied out, with its current minute. */
typedef struct PhAppGroupCopy
{
	bool		other;
	Oid			database_id;
	Oid			role_id;
	char		database[NAMEDATALEN];
	char		role[NAMEDATALEN];
	char		application_name[NAMEDATALEN];
	TimestampTz since;
	TimestampTz created;
	uint32		connections;
	uint32		connections_peak;
	uint32		in_xact;
	uint32		in_xact_peak;
	uint32		minute_connections_max;
	uint32		minute_in_xact_max;
	uint64		xacts;
	uint64		xact_time_us;
	uint64		idle_in_xact_us;
	uint64		xact_max_us;
	uint64		terminated;
	uint64		refused;
	uint64		minute_xacts;
	uint64		minute_xact_time_us;
	uint64		minute_idle_in_xact_us;
	TimestampTz last_seen;
	uint32		minute_declared;
	uint32		minute_logins_max;
	uint64		minute_saturated_us;
	uint64		histogram[PH_HIST_BUCKETS];
} PhAppGroupCopy;

extern Size ph_accounting_shmem_size(void);
extern char *ph_accounting_init(char *storage, LWLock *lock, bool found);
extern PhAccounting *ph_accounting(void);
extern void ph_accounting_install_hooks(void);
extern void ph_accounting_statement(void);
extern void ph_accounting_transaction_stmt(int kind, bool chain,
										   const struct QueryCompletion *qc);
extern void ph_accounting_terminated(void);
extern void ph_accounting_refused(const char *database, Oid role_id,
								  const char *application);
extern int	ph_accounting_copy(PhAppGroupCopy *out, bool with_histogram);
extern void ph_accounting_reset(void);
extern void ph_accounting_sample(TimestampTz now);
extern PhAppMinute *ph_accounting_copy_minutes(TimestampTz since, int *count);
extern TimestampTz ph_accounting_minute_start(void);
extern void ph_accounting_state(int *groups, uint64 *evictions, TimestampTz *minute_start);
extern PhAppTotal *ph_accounting_by_application(bool by_excess, int *count);
extern int	ph_hist_bucket(int64 usec);
extern int64 ph_hist_value(int bucket);
extern int64 ph_hist_quantile(const uint64 *hist, double p, int64 max);
extern bool ph_accounting_server(PhAppServerCopy *out);
extern PhAppServerMinute *ph_accounting_copy_server_minutes(TimestampTz since,
															int *count);
extern bool ph_policy_by_login_name(const PhPolicy *policy);
extern void ph_accounting_warn_pooled(const PhPolicies *policies);

#endif							/* PH_APP_ACCOUNTING_H */
