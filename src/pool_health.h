/*-------------------------------------------------------------------------
 *
 * pool_health.h
 *		Declarations shared by the files of pool_health, grouped by the file
 *		that defines them.  File-private types stay in their files.
 *
 * The data flow:
 *
 *	backend_snapshot.c	one pass over backend status (PhSnapshot)
 *	policy_table.c		the rows of pool_health.policies, validated and
 *						compiled (PhPolicies); bad rows become PhPolicyError
 *	policy_match.c		which policy governs a session (never raises)
 *	policy_set.c		the compiled set the worker publishes in shared
 *						memory, copied out by every reader with its version
 *	evaluate.c			ONE evaluation of a snapshot (PhEvaluation): per
 *						session the policy, limit, deadline, leak and
 *						exemption; per server the usage, level and reasons;
 *						groups and per-policy counts
 *
 * and the consumers of an evaluation, which only format it or act on it:
 * views.c (sessions, usage, usage_by_*, policy usage and errors), health.c
 * (status(), ping(), metrics() with metrics.c), actions.c (cleanup(),
 * terminate_*(), reclaim()), worker.c (sampling into history.c, alerts.c,
 * continuous enforcement through enforce.c and audit.c) and admission.c
 * (counters kept exact at login and exit, re-homed from evaluations).
 *
 * Locking: one LWLock, ph_shared->lock, protects the worker state, the
 * history, the published policy set and the in-memory audit lists; each
 * shared struct below says field by field what it protects and what is
 * read without it.  Admission counters are atomics.  Nothing that can
 * raise an ERROR runs while the lock is held.
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
#include "postmaster/bgworker.h"
#include "storage/lwlock.h"
#include "utils/backend_status.h"
#include "utils/guc.h"

/*
 * The version of this library: the extension version whose SQL objects it
 * expects, default_version in pool_health.control (005_enforcement checks
 * that they agree: the worker warns when the installed extension
 * differs).
 */
#define PH_LIBRARY_VERSION "1.3"

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

/* Why pool_health never acts on a session, whatever a policy says. */
typedef enum PhExemption
{
	PH_EXEMPT_NONE = 0,
	PH_EXEMPT_NOT_CLIENT,		/* walsender, autovacuum, workers, ... */
	PH_EXEMPT_STARTING,			/* still authenticating: no role yet */
	PH_EXEMPT_SELF,				/* the process evaluating */
	PH_EXEMPT_PROTECTED,		/* role in pool_health.protected_roles */
	PH_EXEMPT_SUPERUSER			/* superuser, no policy allows it */
} PhExemption;

/* A network in a policy's client_addr (a cidr). */
typedef struct PhNetwork
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;
	unsigned char addr[16];
} PhNetwork;

/* Longest application_name pattern a policy may have, in bytes. */
#define PH_PATTERN_MAX 255

/*
 * A policy as compiled from a valid row of pool_health.policies
 * (policy_table.c): names resolved to OIDs (InvalidOid with a name:
 * matches nothing), limits in usec (0: no limit), -1 for no quota or
 * refuse_at.  A plain struct: copied into and out of shared memory.
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
	char		application_pattern[PH_PATTERN_MAX + 1];
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
	int32		counter;		/* admission counter (admission.c), or -1 */
} PhPolicy;

/* A row of pool_health.policies that is not in effect, and why. */
typedef struct PhPolicyError
{
	NameData	name;			/* empty: the table itself */
	char		error[256];
	TimestampTz since;			/* first seen with this error */
} PhPolicyError;

/*
 * A set of compiled policies in precedence order (first match governs),
 * and the rows left out.  version is that of the published set it was
 * copied from (0: compiled from the table by this process).
 */
typedef struct PhPolicies
{
	int			count;
	PhPolicy   *items;
	int			nerrors;
	PhPolicyError *errors;
	bool		need_blocking;	/* some policy has a blocking_timeout */
	bool		published;		/* copied from the worker's set */
	bool		locked;			/* not read: the table was locked */
	uint64		version;
	Oid			owner;			/* owner of the table (who acts), or invalid */
	Oid			relid;			/* the table read, or invalid */
} PhPolicies;

/*
 * What a policy matches a session on: OIDs when known (a running backend),
 * else names (a connection being admitted, before its catalog lookups).
 */
typedef struct PhMatchKey
{
	Oid			database_id;
	Oid			role_id;
	const char *database;		/* used when database_id is invalid */
	const char *application_name;
	const SockAddr *client_addr;
} PhMatchKey;

/* Is a backend state one of the two idle-in-transaction states? */
static inline bool
ph_idle_in_transaction(BackendState state)
{
	return state == STATE_IDLEINTRANSACTION ||
		state == STATE_IDLEINTRANSACTION_ABORTED;
}

/*
 * The bytes of a sqlcommenter comment's body kept with the first statement
 * of a transaction (xact_origin.c) and in the audit (whole pairs only).
 */
#define PH_XACT_TAGS_SIZE 512

/*
 * One backend as seen by one pass over backend status: a consistent copy
 * of the fields pool_health uses, and what evaluate.c derives from them.
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
	char	   *xact_first_query;	/* likewise (xact_origin.c), or NULL */
	TimestampTz xact_first_query_at;
	char	   *xact_tags;		/* its first tags' comment body, or NULL */
	/* read from its PGPROC (0 / invalid / -1 if it has none) */
	int			procno;
	TransactionId xid;
	TransactionId xmin;
	uint32		wait_event_info;
	TimestampTz wait_start;		/* when its lock wait began, or 0 */
	/* derived in the pass */
	bool		is_client;		/* client backend: counts against the limit */
	bool		waiting;		/* waiting on a heavyweight lock */
	bool		pins_xmin;		/* holds an xid or snapshot back */
	bool		superuser;		/* its role is a superuser (evaluate.c) */
	int			blocking;		/* sessions waiting on its locks, or -1 */
	TimestampTz blocking_since; /* earliest wait on its locks, or 0 */
	int			blocking_waiter;	/* the pid of that earliest waiter, or 0 */
	int			blocking_waiter_procno; /* and its PGPROC number, or -1 */
	int			blocked_by;		/* pid of the first blocker, if waiting */
	int64		idle_for;		/* usec in its idle state, or -1 */
	int64		xact_age;		/* usec since its transaction began, or -1 */
	/* decided by the evaluation (evaluate.c) */
	PhLeak		leak;
	PhExemption exemption;
	const PhPolicy *policy;		/* the governing policy, or NULL */
	PhLimit		limit;			/* the limit that expires first */
	int64		limit_usec;		/* its value */
	TimestampTz deadline;		/* when it expires (0: no limit applies) */
} PhBackend;

/* What the pass should gather beyond the fixed-size fields. */
#define PH_SNAPSHOT_QUERY		0x01	/* fill PhBackend.query */
#define PH_SNAPSHOT_BLOCKING	0x02	/* fill blocking, blocking_since */

typedef struct PhSnapshot
{
	TimestampTz taken_at;
	int			nbackends;
	PhBackend  *backends;		/* palloc'd in the caller's context */
	struct PidSlot *by_pid;		/* the backends by pid (backend_snapshot.c),
								 * or NULL: with PH_SNAPSHOT_BLOCKING when
								 * some backend waits */
} PhSnapshot;

#define PH_MAX_REASONS 8

/* Server-wide figures of one evaluation (SPEC: pool_health.usage). */
typedef struct PhUsage
{
	int			max_connections;
	int			reserved_connections;
	int			usable;
	int			used;			/* client backends */
	int			reserved_used;	/* of them, beyond usable (superusers) */
	int			active;
	int			idle;
	int			idle_in_transaction;
	int			waiting;
	int			lock_waits;		/* waiting longer than lock_wait_after */
	int			leaked;
	int			free;
	double		usage_percent;	/* of usable, at most 100 */
	int64		oldest_xact_age;	/* usec, -1 if no client transaction */
	int64		longest_idle_in_transaction;	/* usec, -1 if none */
	PhLevel		capacity_level; /* from usage alone */
	PhLevel		level;			/* capacity_level, raised by leaks, waits */
	int			nreasons;
	char	   *reasons[PH_MAX_REASONS];
} PhUsage;

/*
 * One evaluation of one snapshot: the only place where pool_health
 * decides.  Views, status(), metrics(), the worker, the functions and the
 * admission correction read it.
 */
typedef struct PhEvaluation
{
	PhSnapshot	snap;
	PhPolicies	policies;
	int		   *governed;		/* per policy: client sessions it governs */
	PhUsage		usage;
	bool		catalog;		/* roles were looked up (not PH_EVAL_NO_CATALOG) */
} PhEvaluation;

/* How to evaluate (ph_evaluate flags, with the PH_SNAPSHOT_* ones). */
#define PH_EVAL_TABLE_POLICIES	0x10	/* read the table where it lives */
#define PH_EVAL_NO_CATALOG		0x20	/* look nothing up (no database) */

/* Groups of client sessions (usage_by_*, status(), metrics()). */
typedef enum PhGroupBy
{
	PH_GROUP_DATABASE,
	PH_GROUP_ROLE,
	PH_GROUP_APPLICATION,
	PH_GROUP_CLIENT,
	PH_GROUP_CONSUMER			/* database, role and application_name */
} PhGroupBy;

typedef struct PhGroup
{
	const PhBackend *first;		/* a member: where the key is read */
	int			connections;
	int			active;
	int			idle;
	int			idle_in_transaction;
	int			waiting;
	int			leaked;
	int64		oldest_xact_age;	/* usec, -1 if none */
	int64		longest_idle;	/* usec, -1 if none */
	const PhPolicy *policy;		/* governs every member, or NULL */
} PhGroup;

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
 * The history rings (history.c), under ph_shared->lock: exclusive to
 * append, shared to copy out.  raw[] and minutes[] follow PhShared in
 * shared memory; each ring holds its newest "count" entries, the next one
 * going to [next].
 */
typedef struct PhHistory
{
	int			raw_capacity;	/* fixed at start */
	int			raw_count;
	int			raw_next;
	int			minute_capacity;	/* fixed at start */
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
	PH_WORKER_BAD_DATABASE,		/* sampling; it is a template or closed */
	PH_WORKER_NO_EXTENSION,		/* sampling; extension not created there */
	PH_WORKER_RUNNING
} PhWorkerMode;

/*
 * The worker's state (worker.c), under ph_shared->lock: every field is
 * written by the worker holding it exclusively (also at its exit, in
 * worker_exit(), and connect_to_database by the postmaster before any
 * worker runs), and read under it, shared at least: status() and
 * metrics() copy the whole struct, so that pid and mode are seen
 * together.  Nothing reads them without the lock.
 */
typedef struct PhWorkerState
{
	int			pid;			/* 0 when not running; lock */
	PhWorkerMode mode;			/* lock */
	bool		connect_to_database;	/* next start connects to it; lock */
	bool		on_standby;		/* lock */
	TimestampTz started_at;		/* lock */
	TimestampTz last_sample_at; /* lock */
	uint64		samples;		/* lock */
	uint64		errors;			/* lock */
	uint64		restarts;		/* lock */
	uint64		sample_cpu_us;	/* CPU time spent in samples; lock */
	uint8		level;			/* PhLevel of the last sample; lock */
	TimestampTz last_error_at;	/* lock */
	char		last_error[256];	/* lock */
} PhWorkerState;

/*
 * The policies the worker compiled and published (policy_set.c), under
 * ph_shared->lock: the worker writes them exclusively, readers copy them
 * out (shared) with their version.  generation is bumped by the commit of
 * any change to the table (shared lock is not enough: exclusive).
 * policies[] and errors[] follow PhShared in shared memory.
 */
typedef struct PhPolicySet
{
	uint64		generation;		/* bumped at each commit that changes policies */
	uint64		compiled_generation;	/* the generation "policies" reflects */
	uint64		version;		/* bumped at each publication that changed it */
	bool		compiled;		/* false until the worker has compiled once */
	int			capacity;		/* pool_health.max_policies, fixed */
	int			count;
	PhPolicy   *policies;
	int			error_capacity; /* fixed */
	int			nerrors;
	PhPolicyError *errors;
	Oid			owner;			/* owner of the table the set came from */
} PhPolicySet;

/*
 * A quota counter (admission.c).  Keyed by policy name, so that a
 * republication keeps what was counted.  policy and in_use are written by
 * the worker under ph_shared->lock (exclusive) and read under it; the
 * counts are atomics, changed without the lock by connecting and exiting
 * backends and by the worker.
 */
typedef struct PhQuotaCounter
{
	NameData	policy;
	bool		in_use;
	pg_atomic_uint32 connections;	/* sessions counted in it now */
	pg_atomic_uint64 refused;	/* connections refused since it was made */
} PhQuotaCounter;

/*
 * An application_name given by ALTER ROLE/DATABASE ... SET, as the worker
 * publishes it for the login path (which cannot read pg_db_role_setting
 * before its database is selected).
 */
typedef struct PhRoleSetting
{
	NameData	database;		/* empty: every database */
	Oid			role;			/* InvalidOid: every role */
	char		application_name[NAMEDATALEN * 4];	/* as set, not cleaned */
} PhRoleSetting;

#define PH_MAX_ROLE_SETTINGS 256

/*
 * Admission state (admission.c): atomics only, no lock.  counted[] holds,
 * per PGPROC number, the pid of the client backend in it (high 32 bits)
 * and the counter it is counted in (low 32 bits: 0 none, k + 1 counter k,
 * PH_COUNTED_EXITED once it has given its count back).  Only the backend
 * itself (at login and exit) and the worker (by compare-and-swap on an
 * entry with that backend's pid) change an entry.
 */
#define PH_COUNTED_EXITED	0xFFFFFFFF
typedef struct PhAdmission
{
	pg_atomic_uint32 clients;	/* client backends past authentication */
	int			ncounters;		/* fixed: 2 x pool_health.max_policies */
	PhQuotaCounter *counters;
	int			nprocs;			/* fixed */
	pg_atomic_uint64 *counted;
	/* written by the worker under ph_shared->lock, read under it */
	int			nsettings;
	PhRoleSetting settings[PH_MAX_ROLE_SETTINGS];
} PhAdmission;

/* One action on a session, as audit.c records it. */
typedef struct PhAuditEntry
{
	TimestampTz at;
	int			pid;
	NameData	role;
	NameData	database;
	char		application_name[NAMEDATALEN];
	char		client_addr[64];	/* empty: local */
	int32		client_port;	/* -1 Unix socket, 0 unknown */
	TimestampTz backend_start;
	TimestampTz xact_start;
	char		state[32];
	TimestampTz state_change;
	char		query[1024];
	char		xact_first_query[1024]; /* empty: not recorded */
	char		xact_tags[PH_XACT_TAGS_SIZE];	/* comment body; empty: none */
	NameData	policy;			/* empty: a manual call */
	char		reason[256];
	char		action[16];		/* terminate, log */
	bool		dry_run;
	int8		success;		/* 1, 0, or -1 when nothing was sent */
	char		source[32];
	NameData	requested_by;	/* empty: the worker */
	char		limit_name[32]; /* the policy's limit, or the function's
								 * argument (older_than, target_percent) */
	Oid			role_id;		/* the session's login role: visibility
								 * rule, and my_terminations' match */
	int			name_encoding;	/* the encoding role and database are
								 * shown in (ph_name_encoding() of the
								 * process that made the entry) */
} PhAuditEntry;

/*
 * An in-memory audit list (audit.c), under ph_shared->lock: exclusive to
 * append, shared to copy out.  The worker's actions and the functions'
 * have a list each, so calls cannot push the worker's records out.
 */
typedef struct PhAuditRing
{
	int			capacity;		/* fixed */
	int			count;
	int			next;
	PhAuditEntry *entries;
} PhAuditRing;

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

/* pool_health's shared memory (shmem.c). */
typedef struct PhShared
{
	LWLock	   *lock;			/* protects what each member says */
	PhWorkerState worker;
	struct PGPROC *worker_proc; /* to wake the worker; NULL when not
								 * running; written by the worker under
								 * the lock (exclusive: at start and in
								 * worker_exit()), read under it */
	pg_atomic_uint64 terminations;	/* sessions ended since the history began */
	pg_atomic_uint64 refusals;	/* connections refused, likewise */
	pg_atomic_uint32 http_pid;	/* the HTTP worker (http.c), 0 if none */
	pg_atomic_uint64 http_requests; /* requests it answered */
	PhHistory	history;
	PhPolicySet policy_set;
	PhAdmission admission;
	PhAuditRing worker_actions;
	PhAuditRing call_actions;
} PhShared;

/* pool_health.c: settings and module state */
extern int	ph_degraded_percent;
extern int	ph_critical_percent;
extern int	ph_leak_after_ms;
extern int	ph_lock_wait_after_ms;
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
extern int	ph_metrics_min_age_s;
extern char *ph_metrics_application_pattern;
extern int	ph_first_query_size;
extern bool ph_notify_statements;
extern int	ph_max_groups;
extern int	ph_app_history_minutes;
extern int	ph_advice_window_minutes;
extern int	ph_client_pool_size;
extern bool ph_preloaded;
extern bool ph_role_name_protected(const char *name);
extern Oid *ph_protected_role_oids(int *n);

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
extern bool ph_snapshot_still_blocking(const PhBackend *be);
extern const PhBackend *ph_snapshot_find_pid(const PhSnapshot *snap, int pid);
extern bool ph_client_addr_text(const SockAddr *addr, char *buf, size_t size,
								int *port);
extern bool ph_backend_visible(const PhBackend *be);
extern bool ph_role_visible(Oid role_id);
extern const char *ph_backend_type_name(const PhBackend *be);

/* shared_catalogs.c */
extern Oid	ph_database_lookup(const char *name, bool *usable);
extern int	ph_role_settings_read(PhRoleSetting *out, int max, bool *overflow);
extern char *ph_name_text(const char *name);
extern void ph_name_copy(NameData *dst, const char *shown);
extern int	ph_name_encoding(void);
extern void ph_name_shown(NameData *dst, const char *name, int encoding);
extern char *ph_database_name(Oid database_id);
extern char *ph_role_name(Oid role_id);

/* extension_tables.c */
typedef struct PhColumn
{
	const char *name;
	Oid			type;
} PhColumn;
extern Oid	ph_extension_table(const char *relname, const PhColumn *columns,
							   int ncolumns, char **why);
typedef struct PhTableOwner
{
	Oid			userid;			/* the caller's, restored at the end */
	int			sec_context;
	int			guc_nestlevel;	/* settings the owner's code made, undone */
} PhTableOwner;
extern void ph_table_owner_begin(Oid relid, PhTableOwner *saved);
extern void ph_table_owner_end(const PhTableOwner *saved);

/* policy_table.c */
extern bool ph_policies_read(PhPolicies *out, bool wait);
extern bool ph_interval_usec(const Interval *iv, int64 *usec);
extern void ph_policy_error(PhPolicies *out, const char *name, const char *fmt,...) pg_attribute_printf(3, 4);

/* policy_match.c */
extern void ph_policies_sort(PhPolicies *policies);
extern const PhPolicy *ph_policy_match(const PhPolicy *items, int count,
									   const PhMatchKey *key);
extern bool ph_like_pattern_valid(const char *pattern);
extern bool ph_network_contains(const PhNetwork *net, const SockAddr *addr);
extern const char *ph_limit_name(PhLimit limit);

/* policy_set.c */
extern Size ph_policy_set_shmem_size(void);
extern char *ph_policy_set_init(PhPolicySet *set, char *storage);
extern bool ph_policy_set_publish(PhPolicies *policies, uint64 generation);
extern uint64 ph_policy_set_generation(void);
extern bool ph_policy_set_copy(PhPolicies *out);
extern void ph_policies_for_reading(PhPolicies *out);
extern void ph_policies_for_acting(PhPolicies *out);

/* evaluate.c */
extern void ph_evaluate(PhEvaluation *eval, int flags);
extern void ph_evaluate_with(PhEvaluation *eval, const PhPolicies *policies,
							 int flags);
extern PhLevel ph_capacity_level(int used, int usable);
extern char *ph_usage_words(int used, int usable);
extern int	ph_evaluation_groups(const PhEvaluation *eval, PhGroupBy by,
								 PhGroup **out);
extern char *ph_group_key(const PhGroup *group, PhGroupBy by);
extern PhThrottle ph_throttle_advice(const PhUsage *usage, int *new_connections);
extern const char *ph_level_name(PhLevel level);
extern const char *ph_leak_name(PhLeak leak);
extern const char *ph_throttle_name(PhThrottle throttle);
extern const char *ph_exemption_name(PhExemption exemption);
extern char *ph_duration_text(int64 usec);

/* enforce.c */
extern bool ph_may_signal(Oid actor, Oid role_id);
extern bool ph_enforce_signal(const PhBackend *be, const PhPolicy *policy,
							  PhLimit limit, int64 limit_usec, const char *label,
							  bool terminate, bool dry_run, const char *source,
							  PhAuditEntry *entry);

/* audit.c */
extern Size ph_audit_shmem_size(void);
extern char *ph_audit_init(PhShared *shared, char *storage);
extern void ph_audit_log(const PhAuditEntry *entry);
extern void ph_audit_store(const PhAuditEntry *entry);
extern void ph_audit_record(const PhAuditEntry *entry);
#define PH_AUDIT_COLS 23
extern void ph_audit_datums(const PhAuditEntry *entry, bool visible,
							Datum *values, bool *isnull);
extern int	ph_audit_copy(PhAuditEntry *out, int max);
extern PhAuditEntry *ph_audit_copy_role(Oid role_id, int *count);
extern void ph_audit_check_version(void);
extern int	ph_audit_capacity(void);

/* admission.c */
extern Size ph_admission_shmem_size(void);
extern char *ph_admission_init(PhAdmission *admission, char *storage);
extern void ph_admission_install_hook(void);
extern void ph_admission_assign_counters(PhPolicy *items, int count,
										 const PhPolicy *old, int nold,
										 bool *named);
extern int	ph_admission_ncounters(void);
extern void ph_admission_rehome(const PhEvaluation *eval);
extern void ph_admission_publish_settings(void);
extern uint32 ph_admission_counted(const PhPolicy *policy);
extern uint64 ph_admission_refused(const PhPolicy *policy);

/* xact_origin.c */
extern Size ph_xact_origin_shmem_size(void);
extern char *ph_xact_origin_init(char *storage, bool found);
extern void ph_xact_origin_install_hooks(void);
extern char *ph_xact_origin_read(int procno, int pid, bool aborted,
								 TimestampTz *at, char **tags);
extern void ph_xact_origin_note(int procno, int pid, TimestampTz backend_start,
								const char *detail);

/* sql_comments.c */
typedef struct PhSqlText
{
	int			start;			/* the statement's text: [start, end) */
	int			end;
	int			tags;			/* its sqlcommenter comment's body, or -1 */
	int			tags_len;		/* the bytes of it that hold whole pairs */
} PhSqlText;
extern void ph_sql_statement(const char *source, int from, int location,
							 int len, bool std_strings, bool want_tags,
							 PhSqlText *out);
extern int	ph_sql_tags_fit(const char *body, int len, int limit);
extern char *ph_sql_tags_json(const char *body);

/* app_accounting.c */
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

/* json_writer.c: one writer for status(), audit and alert payloads */
extern void ph_json_open(StringInfo buf, const char *key, char bracket);
extern void ph_json_close(StringInfo buf, char bracket);
extern void ph_json_key(StringInfo buf, const char *key);
extern void ph_json_str(StringInfo buf, const char *key, const char *value);
extern void ph_json_int(StringInfo buf, const char *key, int64 value);
extern void ph_json_bool(StringInfo buf, const char *key, bool value);
extern void ph_json_double(StringInfo buf, const char *key, double value,
						   int decimals);
extern void ph_json_time(StringInfo buf, const char *key, TimestampTz value);
extern void ph_json_seconds(StringInfo buf, const char *key, int64 usec);
extern void ph_json_usage(StringInfo buf, const PhUsage *usage);

/* views.c */
extern Datum ph_usec_interval(int64 usec);

/* health.c */
extern char *ph_status_json(const PhEvaluation *eval);

/* metrics.c */
extern char *ph_metrics_text(const PhEvaluation *eval);

/* history.c (callers hold ph_shared->lock as each function says) */
extern Size ph_history_shmem_size(void);
extern char *ph_history_init(PhHistory *history, char *storage);
extern void ph_history_append(PhHistory *history, const PhSample *sample);
extern int	ph_history_copy_raw(const PhHistory *history, PhSample *out);
extern int	ph_history_copy_minutes(const PhHistory *history, PhMinute *out);
extern void ph_history_save(void);
extern void ph_history_load(void);

/* http.c */
extern char *ph_http_listen;
extern int	ph_http_request_timeout_ms;
extern char *ph_http_allowed_hosts;
extern bool ph_http_listen_check(char **newval, void **extra, GucSource source);
extern bool ph_http_allowed_hosts_check(char **newval, void **extra, GucSource source);
extern void ph_http_allowed_hosts_assign(const char *newval, void *extra);
extern void ph_http_register(void);
PGDLLEXPORT extern void pool_health_http_main(Datum arg);

/* worker.c */
extern void ph_worker_register(void);
extern void ph_register_background_worker(const char *name, const char *function, int flags,
										  BgWorkerStartTime start_time, int restart_seconds);
extern const char *ph_worker_mode_name(PhWorkerMode mode);
PGDLLEXPORT extern void pool_health_worker_main(Datum arg);

/* alerts.c */
extern void ph_alert_level_change(PhLevel old_level, const PhUsage *usage,
								  bool can_notify);

#endif							/* POOL_HEALTH_H */
