/*-------------------------------------------------------------------------
 *
 * ph_model.h
 *		The value types every module shares: health levels, leaks, limits and
 *		exemptions; a compiled policy; one backend as a pass sees it, the
 *		snapshot, the usage and the evaluation (evaluate.c decides them), and
 *		groups of sessions.  Plain values, copied freely: no shared memory and
 *		no lock here.
 *
 * The data flow:
 *
 *	backend_snapshot.c	one pass over backend status (PhSnapshot)
 *	policy_table.c		pool_health.policies found and scanned
 *	policy_row.c		each row validated and compiled (PhPolicies); bad
 *						rows become PhPolicyError
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
 * Each module has its own header (its API and the types it shares); its
 * shared memory and lock rules are stated in its .c file, field by field.
 * Nothing that can raise an ERROR runs while an LWLock is held.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_MODEL_H
#define PH_MODEL_H

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
 * refuse_at, 0 for no reserve or login rate.  A plain struct: copied
 * into and out of shared memory.
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
	int32		reserve_connections;	/* slots kept for it (0: none) */
	double		max_logins_per_second;	/* login rate limit (0: none) */
	int32		login_burst;	/* logins at once beyond the rate (0: none) */
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

#endif							/* PH_MODEL_H */
