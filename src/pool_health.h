/*-------------------------------------------------------------------------
 *
 * pool_health.h
 *		Declarations shared by the files of pool_health, grouped by the file
 *		that defines them.
 *
 * The data flow is: backend_snapshot.c takes one pass over backend status
 * (PhSnapshot), classify.c decides per backend whether it is leaked and
 * computes the server-wide usage and health level (PhUsage), and the
 * SQL-callable functions in sql_functions.c turn both into rows and JSON.
 * With the preload, shmem.c owns pool_health's shared memory (PhShared),
 * worker.c samples every pool_health.sample_interval into history.c's
 * rings, and alerts.c reports level changes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef POOL_HEALTH_H
#define POOL_HEALTH_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "libpq/pqcomm.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/backend_status.h"

/* Health levels, ordered: a higher value is worse. */
typedef enum PhLevel
{
	PH_LEVEL_HEALTHY = 0,
	PH_LEVEL_DEGRADED,
	PH_LEVEL_CRITICAL,
	PH_LEVEL_EXHAUSTED
} PhLevel;

/* Why a session is considered leaked (SPEC: sessions.leak). */
typedef enum PhLeak
{
	PH_LEAK_NONE = 0,
	PH_LEAK_IDLE_IN_XACT,
	PH_LEAK_IDLE_IN_XACT_ABORTED,
	PH_LEAK_LONG_XACT,
	PH_LEAK_STALE_IDLE
} PhLeak;

/* Back-pressure advice for client pools, in status(). */
typedef enum PhThrottle
{
	PH_THROTTLE_NONE = 0,
	PH_THROTTLE_MODERATE,
	PH_THROTTLE_AGGRESSIVE,
	PH_THROTTLE_EMERGENCY
} PhThrottle;

/* Which limit of a policy a session is past (or will be). */
typedef enum PhLimit
{
	PH_LIMIT_NONE = 0,
	PH_LIMIT_IDLE_IN_TRANSACTION,	/* idle_in_transaction_timeout */
	PH_LIMIT_IDLE,				/* idle_timeout */
	PH_LIMIT_TRANSACTION,		/* transaction_timeout */
	PH_LIMIT_BLOCKING			/* blocking_timeout */
} PhLimit;

/* A network in a policy's client_addr (a cidr). */
typedef struct PhNetwork
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;
	unsigned char addr[16];
} PhNetwork;

/*
 * A policy as compiled from pool_health.policies (policy.c): names resolved
 * to OIDs (InvalidOid with a name: matches nothing), limits in usec (0: no
 * limit), -1 for no quota or refuse_at.
 */
typedef struct PhPolicy
{
	NameData	name;
	int32		priority;
	int			specificity;	/* how many match columns are set */
	bool		match_database;
	bool		match_role;
	bool		match_application;
	bool		match_client;
	NameData	database;
	NameData	role;
	Oid			database_id;
	Oid			role_id;
	char		application_pattern[256];
	PhNetwork	client;
	int64		idle_in_transaction_timeout;
	int64		idle_timeout;
	int64		transaction_timeout;
	int64		blocking_timeout;
	int32		max_connections;
	bool		terminate;		/* action: terminate, else log */
	bool		dry_run;
	bool		allow_superuser;
	int8		refuse_at;		/* PhLevel, or -1 */
} PhPolicy;

/*
 * What a policy matches a session on: OIDs when known (a running backend),
 * else names (a connection being admitted, before its catalog lookups).
 */
typedef struct PhMatchKey
{
	Oid			database_id;
	Oid			role_id;
	const char *database;		/* used when database_id is invalid */
	const char *role;			/* used when role_id is invalid */
	const char *application_name;
	const SockAddr *client_addr;
} PhMatchKey;

/* A set of compiled policies, in precedence order (first match governs). */
typedef struct PhPolicies
{
	int			count;
	PhPolicy   *items;
	bool		need_blocking;	/* some policy has a blocking_timeout */
} PhPolicies;

/*
 * One backend as seen by one pass over backend status: a consistent copy
 * of the fields pool_health uses, and what classify.c derives from them.
 */
typedef struct PhBackend
{
	/* copied from its entry in the shared backend status array */
	int			slot;			/* index of that entry */
	int			pid;
	BackendType backend_type;
	BackendState state;
	Oid			database_id;
	Oid			role_id;
	TimestampTz backend_start;
	TimestampTz xact_start;
	TimestampTz query_start;
	TimestampTz state_change;
	SockAddr	client_addr;
	char		application_name[NAMEDATALEN];
	char	   *query;			/* NULL unless PH_SNAPSHOT_QUERY */
	/* read from its PGPROC (0 / invalid if it has none) */
	TransactionId xid;
	TransactionId xmin;
	uint32		wait_event_info;
	/* derived */
	bool		is_client;		/* client backend: counts against the limit */
	bool		waiting;		/* waiting on a heavyweight lock */
	bool		pins_xmin;		/* holds an xid or snapshot back */
	int			blocking;		/* sessions waiting on its locks, or -1 */
	int64		idle_for;		/* usec in its idle state, or -1 */
	int64		xact_age;		/* usec since its transaction began, or -1 */
	PhLeak		leak;
	/* from the governing policy, if any (classify.c) */
	const PhPolicy *policy;
	PhLimit		limit;			/* the limit that expires first */
	int64		limit_usec;		/* its value */
	TimestampTz deadline;		/* when it expires (0: no limit applies) */
} PhBackend;

/* What the pass should gather beyond the fixed-size fields. */
#define PH_SNAPSHOT_QUERY		0x01	/* fill PhBackend.query */
#define PH_SNAPSHOT_BLOCKING	0x02	/* fill PhBackend.blocking */

typedef struct PhSnapshot
{
	TimestampTz taken_at;
	int			nbackends;
	PhBackend  *backends;		/* palloc'd in the caller's context */
} PhSnapshot;

#define PH_MAX_REASONS 8

/* Server-wide figures derived from one snapshot (SPEC: pool_health.usage). */
typedef struct PhUsage
{
	int			max_connections;
	int			reserved_connections;
	int			usable;
	int			used;
	int			active;
	int			idle;
	int			idle_in_transaction;
	int			waiting;
	int			leaked;
	int			free;
	double		usage_percent;
	int64		oldest_xact_age;	/* usec, -1 if no client transaction */
	int64		longest_idle_in_transaction;	/* usec, -1 if none */
	PhLevel		capacity_level; /* from usage alone */
	PhLevel		level;			/* capacity_level, raised by leaks */
	int			nreasons;
	char	   *reasons[PH_MAX_REASONS];
} PhUsage;

/* One raw sample of the history. */
typedef struct PhSample
{
	TimestampTz at;
	int32		usable;
	int32		used;
	int32		active;
	int32		idle;
	int32		idle_in_transaction;
	int32		waiting;
	int32		leaked;
	int32		terminated;		/* sessions ended since the previous sample */
	int32		refused;		/* connections refused since then */
	uint8		level;			/* PhLevel */
} PhSample;

/* One minute of the history, aggregated from its raw samples. */
typedef struct PhMinute
{
	TimestampTz at;				/* start of the minute */
	int32		samples;
	int32		usable;
	int32		used_min;
	int32		used_max;
	int64		used_sum;
	int64		active_sum;
	int64		idle_sum;
	int64		idle_in_transaction_sum;
	int32		waiting_max;
	int32		leaked_max;
	int32		terminated;
	int32		refused;
	uint8		worst_level;	/* PhLevel */
} PhMinute;

/*
 * The history rings (history.c).  raw[] and minutes[] follow this struct
 * in shared memory; each ring holds its newest "count" entries, the next
 * one going to [next].
 */
typedef struct PhHistory
{
	int			raw_capacity;
	int			raw_count;
	int			raw_next;
	int			minute_capacity;
	int			minute_count;
	int			minute_next;
	PhMinute	current;		/* the minute being aggregated (samples 0: none) */
	PhSample   *raw;
	PhMinute   *minutes;
} PhHistory;

/* What the worker is doing (worker.c), as status() reports it. */
typedef enum PhWorkerMode
{
	PH_WORKER_STOPPED = 0,
	PH_WORKER_STARTING,
	PH_WORKER_NO_DATABASE,		/* sampling; pool_health.database missing */
	PH_WORKER_NO_EXTENSION,		/* sampling; extension not created there */
	PH_WORKER_RUNNING
} PhWorkerMode;

typedef struct PhWorkerState
{
	int			pid;			/* 0 when not running */
	PhWorkerMode mode;
	bool		connect_to_database;	/* next start connects to it */
	bool		on_standby;
	TimestampTz started_at;
	TimestampTz last_sample_at;
	uint64		samples;
	uint64		errors;
	uint64		restarts;
	uint64		sample_cpu_us;	/* CPU time spent in samples */
	uint8		level;			/* PhLevel of the last sample */
	TimestampTz last_error_at;
	char		last_error[256];
} PhWorkerState;

/*
 * The policies compiled by the worker (policy.c), for the worker, the
 * live views and admission control.  policies[] follows in shared memory.
 */
/*
 * Admission counters of one published policy (admission.c): atomics,
 * updated without the lock by connecting and exiting backends.
 */
typedef struct PhPolicyCounter
{
	pg_atomic_uint32 connections;	/* governed client sessions */
	pg_atomic_uint64 refused;	/* connections refused since published */
} PhPolicyCounter;

typedef struct PhPolicySet
{
	uint64		generation;		/* bumped at each commit that changes policies */
	uint64		compiled_generation;	/* the generation "policies" reflects */
	uint64		version;		/* bumped at each publication */
	bool		compiled;		/* false until the worker has compiled once */
	int			capacity;
	int			count;
	PhPolicy   *policies;
	PhPolicyCounter *counters;	/* one per policies[] entry */
} PhPolicySet;

/* One action on a session, as audit.c records it. */
typedef struct PhAuditEntry
{
	TimestampTz at;
	int			pid;
	NameData	role;
	NameData	database;
	char		application_name[NAMEDATALEN];
	char		client_addr[64];	/* empty: local */
	TimestampTz backend_start;
	TimestampTz xact_start;
	char		state[32];
	TimestampTz state_change;
	char		query[1024];
	NameData	policy;			/* empty: a manual call */
	char		reason[256];
	char		action[16];		/* terminate, log */
	bool		dry_run;
	int8		success;		/* 1, 0, or -1 when nothing was sent */
	char		source[32];
	NameData	requested_by;	/* empty: the worker */
} PhAuditEntry;

/* The in-memory audit list (audit.c): the newest "count" entries. */
typedef struct PhAuditRing
{
	int			capacity;
	int			count;
	int			next;
	PhAuditEntry *entries;
} PhAuditRing;

/*
 * pool_health's shared memory (shmem.c).  "lock" protects worker,
 * history, policies and audit; the counters are atomics, written without
 * it.
 */
typedef struct PhShared
{
	LWLock	   *lock;
	PhWorkerState worker;
	struct PGPROC *worker_proc; /* to wake the worker; NULL when not running */
	pg_atomic_uint64 terminations;	/* sessions ended, since the history began */
	pg_atomic_uint64 refusals;
	PhHistory	history;
	PhPolicySet policy_set;
	PhAuditRing audit;
} PhShared;

/* pool_health.c: settings and module state */
extern int	ph_degraded_percent;
extern int	ph_critical_percent;
extern int	ph_leak_after_ms;
extern char *ph_database;
extern int	ph_sample_interval_ms;
extern char *ph_notify_channel;
extern int	ph_history_raw_samples;
extern int	ph_history_minutes;
extern int	ph_forecast_window_s;
extern int	ph_enforce;
extern char *ph_protected_roles;
extern int	ph_max_policies;
extern int	ph_audit_memory;
extern bool ph_admission;
extern int	ph_metrics_top_groups;
extern bool ph_preloaded;

/* pool_health.enforce */
#define PH_ENFORCE_OFF		0
#define PH_ENFORCE_DRY_RUN	1
#define PH_ENFORCE_ON		2

/* shmem.c */
extern PhShared *ph_shared;
extern void ph_shmem_install_hooks(void);
extern PhShared *ph_shared_required(const char *what);

/* backend_snapshot.c */
extern void ph_snapshot_take(PhSnapshot *snap, int flags);
extern bool ph_snapshot_reread(const PhBackend *be, PhBackend *now);
extern bool ph_client_addr_text(const SockAddr *addr, char *buf, size_t size,
								int *port);
extern bool ph_backend_visible(const PhBackend *be);
extern const char *ph_backend_type_name(const PhBackend *be);

/* classify.c */
extern void ph_classify(PhSnapshot *snap, const PhPolicies *policies);
extern void ph_usage_compute(const PhSnapshot *snap, PhUsage *usage);
extern PhThrottle ph_throttle_advice(const PhUsage *usage, int *new_connections);
extern const char *ph_level_name(PhLevel level);
extern const char *ph_leak_name(PhLeak leak);
extern const char *ph_throttle_name(PhThrottle throttle);

/* history.c (callers hold ph_shared->lock as each function says) */
extern Size ph_history_shmem_size(void);
extern void ph_history_init(PhHistory *history, char *storage);
extern void ph_history_append(PhHistory *history, const PhSample *sample);
extern int	ph_history_copy_raw(const PhHistory *history, PhSample *out);
extern int	ph_history_copy_minutes(const PhHistory *history, PhMinute *out);
extern void ph_history_save(void);
extern void ph_history_load(void);

/* policy.c */
extern Size ph_policy_shmem_size(void);
extern void ph_policy_init(PhPolicySet *set, char *storage);
extern bool ph_policies_load(PhPolicies *out);
extern bool ph_policies_publish(const PhPolicies *policies, uint64 generation);
extern uint64 ph_policies_generation(void);
extern void ph_policies_for_reading(PhPolicies *out);
extern void ph_policies_fresh(PhPolicies *out);
extern const PhPolicy *ph_policy_match(const PhPolicies *policies, const PhMatchKey *key);
extern void ph_match_key_for(const PhBackend *be, PhMatchKey *key);
extern bool ph_network_contains(const PhNetwork *net, const SockAddr *addr);
extern bool ph_like(const char *str, const char *pattern);
extern bool ph_role_is_protected(Oid role_id);
extern const char *ph_limit_name(PhLimit limit);

/* enforce.c */
typedef struct PhActionResult
{
	PhAuditEntry entry;
	bool		acted;			/* false: skipped (re-check failed, no privilege) */
} PhActionResult;
extern const char *ph_enforce_exclusion(const PhBackend *be, const PhPolicy *policy);
extern bool ph_enforce_may_signal(Oid role_id);
extern bool ph_enforce_signal(const PhBackend *be, const PhPolicy *policy,
							  PhLimit limit, int64 limit_usec, const char *label,
							  bool terminate, bool dry_run, const char *source,
							  PhActionResult *result);
extern bool ph_enforce_act(const PhBackend *be, const PhPolicy *policy,
						   PhLimit limit, int64 limit_usec, const char *label,
						   bool terminate, bool dry_run, const char *source,
						   PhActionResult *result);
extern char *ph_duration_text(int64 usec);

/* table_owner.c */
typedef struct PhTableOwner
{
	Oid			userid;			/* the caller's, restored at the end */
	int			sec_context;
} PhTableOwner;
extern bool ph_table_owner_begin(const char *relname, PhTableOwner *saved);
extern void ph_table_owner_end(const PhTableOwner *saved);

/* audit.c */
extern Size ph_audit_shmem_size(void);
extern void ph_audit_init(PhAuditRing *ring, char *storage);
extern void ph_audit_record(const PhAuditEntry *entry);
extern void ph_audit_log(const PhAuditEntry *entry);
extern void ph_audit_store(const PhAuditEntry *entry);
#define PH_AUDIT_COLS 18
extern void ph_audit_datums(const PhAuditEntry *entry, Datum *values, bool *isnull);
extern int	ph_audit_copy(PhAuditEntry *out);

/* admission.c */
extern void ph_admission_install_hook(void);
extern void ph_admission_correct(const PhSnapshot *snap, const PhPolicies *policies,
								 bool republished);

/* metrics.c */
extern char *ph_metrics_text(const PhSnapshot *snap);

/* worker.c */
extern void ph_worker_register(void);
extern const char *ph_worker_mode_name(PhWorkerMode mode);
PGDLLEXPORT extern void pool_health_worker_main(Datum arg);

/* alerts.c */
extern void ph_alert_level_change(PhLevel old_level, const PhUsage *usage,
								  bool can_notify);

#endif							/* POOL_HEALTH_H */
