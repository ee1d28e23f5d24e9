/*-------------------------------------------------------------------------
 *
 * app_accounting.h
 *		The API of the per-application accounting (app_accounting_shmem.c,
 *		app_groups.c, app_xact.c, app_readers.c, app_minutes.c,
 *		app_histogram.c): groups
 *		of sessions by database, role and application_name, their counters,
 *		histograms and minutes, as copies for app_stats.c, app_advice.c,
 *		metrics and status().  Its shared memory is private to those files
 *		(app_accounting_int.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_APP_ACCOUNTING_H
#define PH_APP_ACCOUNTING_H

#include "access/xact.h"
#include "port/pg_bitutils.h"

#include "compat.h"
#include "ph_model.h"

/*
 * Per-application accounting.  Durations are usec.
 * Histogram: exact below 8 usec, then 8 buckets per power of two up to
 * 2^PH_HIST_MAX_EXPONENT usec (about 12 days; longer ones in the last).
 */
#define PH_HIST_MAX_EXPONENT 40
#define PH_HIST_BUCKETS (8 + (PH_HIST_MAX_EXPONENT - 2) * 8)
/* minute rows kept per minute of retention, on average */
#define PH_APP_ROWS_PER_MINUTE 32

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

/* The server-wide counters copied out (app_readers.c). */
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

/* app_accounting_shmem.c: shared memory, from shmem.c's hooks */
extern void ph_accounting_shmem_request(void);
extern void ph_accounting_shmem_startup(void);
extern bool ph_accounting_enabled(void);

/* app_groups.c */
extern void ph_accounting_refused(const char *database, Oid role_id,
								  const char *application);

/* app_xact.c: the backend's side, called by hooks.c and xact_origin.c */
extern LocalTransactionId ph_accounting_counted_lxid;
extern void ph_accounting_statement_slow(void);
extern void ph_accounting_transaction_stmt(int kind, bool chain,
										   const struct QueryCompletion *qc);
extern void ph_accounting_xact_event(XactEvent event);
extern void ph_accounting_terminated(void);

/*
 * From the per-statement hooks, for every statement: the first under a new
 * local transaction id starts a counted transaction.  Inline, the common
 * case (a statement of a transaction already counted) costs one
 * comparison and no call.  ph_accounting_counted_lxid is this backend's
 * own (not shared), written by app_xact.c only.
 */
static inline void
ph_accounting_statement(void)
{
	if (ph_my_lxid() != ph_accounting_counted_lxid)
		ph_accounting_statement_slow();
}

/* app_readers.c: copies for the SQL functions, metrics and status() */
extern PhAppGroupCopy *ph_accounting_copy(bool with_histogram, int *count);
extern void ph_accounting_reset(void);
extern PhAppMinute *ph_accounting_copy_minutes(TimestampTz since, int *count);
extern TimestampTz ph_accounting_minute_start(void);
extern void ph_accounting_state(int *groups, uint64 *evictions, TimestampTz *minute_start);
extern PhAppTotal *ph_accounting_by_application(bool by_excess, int *count);
extern bool ph_accounting_server(PhAppServerCopy *out);
extern PhAppServerMinute *ph_accounting_copy_server_minutes(TimestampTz since,
															int *count);

/* app_minutes.c: the worker */
extern void ph_accounting_sample(TimestampTz now);
extern bool ph_policy_by_login_name(const PhPolicy *policy);
extern void ph_accounting_warn_pooled(const PhPolicies *policies);

/* app_histogram.c */
extern int64 ph_hist_value(int bucket);
extern int64 ph_hist_quantile(const uint64 *hist, double p, int64 max);

/* The bucket of a duration (inline: each transaction's end). */
static inline int
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

#endif							/* PH_APP_ACCOUNTING_H */
