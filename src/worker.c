/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The pool_health background worker: one process, backend_type
 *		"pool_health", that samples backend status every
 *		pool_health.sample_interval into the history, reports level changes,
 *		compiles the policies when they change, and enforces them
 *		continuously (pool_health.enforce): it sleeps until the next sample
 *		or the earliest deadline of a governed session, whichever comes
 *		first, so that a session is ended close to the moment its limit
 *		passes.  It runs on primaries and hot standbys.
 *
 * It connects to pool_health.database.  When that database does not exist
 * it runs connected to no database (sampling and history need none),
 * checks every few seconds whether the database has appeared, and then
 * exits to be restarted into it: it waits and logs once, it does not
 * crash-loop.  When the extension is not created in its database, it keeps
 * sampling and says so in status().  An error in one cycle is logged and
 * counted; the next cycle runs.  On a standby it writes no table and sends
 * no NOTIFY (level changes are logged only).
 *
 * Each action is taken once per session and episode (the same idle period
 * or transaction): "acted" remembers them until the session moves on.
 *
 * Shared state: ph_shared->worker, ph_shared->history and (through
 * policy.c) ph_shared->policy_set, under ph_shared->lock, taken exclusively
 * for a few microseconds per sample.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"	/* get_database_oid() from PG 19 */
#include "commands/dbcommands.h"	/* get_database_oid() before PG 19 */
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "pool_health.h"

/* In no-database mode, how often to look for pool_health.database. */
#define DATABASE_CHECK_INTERVAL_MS	5000

/*
 * How often the policies are compiled again even without a change notice:
 * triggers do not fire for replicated changes on a standby, nor with
 * session_replication_role = replica.
 */
#define POLICY_RECOMPILE_MS			10000
#define POLICY_RECOMPILE_STANDBY_MS	1000

/* Process-local state of the worker. */
static bool connected_to_database = false;
static PhWorkerMode last_logged_mode = PH_WORKER_STARTING;
static uint64 seen_terminations = 0;
static uint64 seen_refusals = 0;
static TimestampTz last_database_check = 0;

/* The compiled policies, and what they were compiled from. */
static MemoryContext policy_context = NULL;
static PhPolicies policies;
static uint64 policies_generation = 0;
static bool policies_stale = true;	/* roles or databases changed */
static TimestampTz policies_compiled_at = 0;
static Oid	policies_extension = InvalidOid;	/* the extension they came from */
static bool republished = false;	/* not yet recounted for admission */

/* A session, in one episode, that enforcement has dealt with. */
typedef struct ActedKey
{
	int			pid;
	TimestampTz backend_start;
	TimestampTz episode;		/* state_change or xact_start */
	PhLimit		limit;
} ActedKey;

typedef struct ActedEntry
{
	ActedKey	key;
	bool		seen;
} ActedEntry;

static HTAB *acted = NULL;

void
ph_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_library_name, "pool_health", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "pool_health_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "pool_health", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "pool_health", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

const char *
ph_worker_mode_name(PhWorkerMode mode)
{
	switch (mode)
	{
		case PH_WORKER_STOPPED:
			return "stopped";
		case PH_WORKER_STARTING:
			return "starting";
		case PH_WORKER_NO_DATABASE:
			return "waiting for database";
		case PH_WORKER_NO_EXTENSION:
			return "waiting for extension";
		case PH_WORKER_RUNNING:
			return "running";
	}
	return "unknown";
}

/* At exit, however it happens: say the worker is gone (no lock: one write). */
static void
worker_exit(int code, Datum arg)
{
	ph_shared->worker_proc = NULL;
	ph_shared->worker.pid = 0;
	ph_shared->worker.mode = PH_WORKER_STOPPED;
}

static void
set_mode(PhWorkerMode mode, bool on_standby)
{
	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	ph_shared->worker.mode = mode;
	ph_shared->worker.on_standby = on_standby;
	LWLockRelease(ph_shared->lock);

	if (mode == last_logged_mode)
		return;
	last_logged_mode = mode;
	if (mode == PH_WORKER_NO_DATABASE)
		ereport(LOG,
				(errmsg("pool_health: database \"%s\" does not exist; sampling without it and waiting for it to be created",
						ph_database),
				 errhint("Create the database or set pool_health.database, then CREATE EXTENSION pool_health in it.")));
	else if (mode == PH_WORKER_NO_EXTENSION)
		ereport(LOG,
				(errmsg("pool_health: extension \"pool_health\" is not created in database \"%s\"; sampling and waiting for it",
						ph_database)));
	else if (mode == PH_WORKER_RUNNING)
		ereport(LOG,
				(errmsg("pool_health: worker running in database \"%s\", sampling every %d ms",
						ph_database, ph_sample_interval_ms)));
}

/* Record one sample of a classified snapshot, and report a level change. */
static void
record_sample(PhSnapshot *snap, bool can_notify)
{
	PhUsage		usage;
	PhSample	sample;
	PhLevel		old_level;
	uint64		terminations = pg_atomic_read_u64(&ph_shared->terminations);
	uint64		refusals = pg_atomic_read_u64(&ph_shared->refusals);

	ph_usage_compute(snap, &usage);

	memset(&sample, 0, sizeof(sample));
	sample.at = snap->taken_at;
	sample.usable = usage.usable;
	sample.used = usage.used;
	sample.active = usage.active;
	sample.idle = usage.idle;
	sample.idle_in_transaction = usage.idle_in_transaction;
	sample.waiting = usage.waiting;
	sample.leaked = usage.leaked;
	sample.terminated = (int32) (terminations - seen_terminations);
	sample.refused = (int32) (refusals - seen_refusals);
	sample.level = (uint8) usage.level;
	seen_terminations = terminations;
	seen_refusals = refusals;

	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	ph_history_append(&ph_shared->history, &sample);
	old_level = (PhLevel) ph_shared->worker.level;
	ph_shared->worker.level = (uint8) usage.level;
	ph_shared->worker.last_sample_at = sample.at;
	ph_shared->worker.samples++;
	LWLockRelease(ph_shared->lock);

	if (old_level != usage.level)
		ph_alert_level_change(old_level, &usage, can_notify);
}

/* A role or database was created, renamed or dropped: recompile. */
static void
catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	policies_stale = true;
}

/*
 * Compile the policies again if the table changed (a new generation), a
 * role or database did, the extension was dropped or created (no trigger
 * fires then), or a while has passed, and publish them.  Without the
 * extension the set is empty: nothing is enforced or refused.  Inside the
 * cycle's transaction.  Returns whether the published set changed.
 */
static bool
refresh_policies(Oid extension, bool standby)
{
	uint64		generation = ph_policies_generation();
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext old;

	if (!policies_stale && generation == policies_generation &&
		extension == policies_extension &&
		ph_shared->policy_set.compiled &&
		!TimestampDifferenceExceeds(policies_compiled_at, now,
									standby ? POLICY_RECOMPILE_STANDBY_MS : POLICY_RECOMPILE_MS))
		return false;
	policies_compiled_at = now;
	MemoryContextReset(policy_context);
	policies.count = 0;
	policies.need_blocking = false;
	old = MemoryContextSwitchTo(policy_context);
	if (OidIsValid(extension))
		(void) ph_policies_load(&policies);
	MemoryContextSwitchTo(old);
	policies_generation = generation;
	policies_extension = extension;
	policies_stale = false;
	return ph_policies_publish(&policies, generation);
}

/*
 * Enforce the policies on a classified snapshot: act on every governed
 * session past its deadline (once per episode), and return the earliest
 * deadline still to come (0: none).
 *
 * Every due session is re-checked and signalled first, and only then are
 * the actions recorded: writing the log line and the audit row of one
 * session can take milliseconds while many others are exiting, and the
 * sessions due later in the same pass should not wait for that.  The log
 * and the in-memory list are written for all of them before any table
 * row, so an error while inserting (say, a concurrent DROP EXTENSION)
 * leaves no signalled session unrecorded.
 */
static TimestampTz
enforce_policies(PhSnapshot *snap)
{
	TimestampTz next_deadline = 0;
	HASH_SEQ_STATUS scan;
	ActedEntry *entry;
	PhActionResult *done = NULL;	/* the sessions acted on, to record */
	int			ndone = 0;
	int			done_size = 0;

	hash_seq_init(&scan, acted);
	while ((entry = hash_seq_search(&scan)) != NULL)
		entry->seen = false;

	for (int i = 0; i < snap->nbackends; i++)
	{
		PhBackend  *be = &snap->backends[i];
		ActedKey	key;
		bool		found;
		const PhPolicy *p = be->policy;

		if (p == NULL || be->deadline == 0)
			continue;
		memset(&key, 0, sizeof(key));
		key.pid = be->pid;
		key.backend_start = be->backend_start;
		key.limit = be->limit;
		key.episode = (be->limit == PH_LIMIT_IDLE ||
					   be->limit == PH_LIMIT_IDLE_IN_TRANSACTION) ?
			be->state_change : be->xact_start;
		entry = hash_search(acted, &key, HASH_FIND, NULL);
		if (entry != NULL)
		{
			entry->seen = true;
			continue;
		}
		if (be->deadline > snap->taken_at)
		{
			if (next_deadline == 0 || be->deadline < next_deadline)
				next_deadline = be->deadline;
			continue;
		}
		if (ph_enforce_exclusion(be, p) == NULL)
		{
			if (ndone == done_size)
			{
				done_size = Max(16, done_size * 2);
				done = done ? repalloc(done, sizeof(PhActionResult) * done_size) :
					palloc(sizeof(PhActionResult) * done_size);
			}
			if (!ph_enforce_signal(be, p, be->limit, be->limit_usec,
								   psprintf("%s %s exceeded", ph_limit_name(be->limit),
											ph_duration_text(be->limit_usec)),
								   p->terminate, p->dry_run || ph_enforce == PH_ENFORCE_DRY_RUN,
								   "worker", &done[ndone]))
				continue;		/* it moved on: look again next time */
			ndone++;
		}
		entry = hash_search(acted, &key, HASH_ENTER, &found);
		entry->seen = true;
	}

	for (int i = 0; i < ndone; i++)
		ph_audit_log(&done[i].entry);
	for (int i = 0; i < ndone; i++)
		ph_audit_store(&done[i].entry);

	hash_seq_init(&scan, acted);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (!entry->seen)
			hash_search(acted, &entry->key, HASH_REMOVE, NULL);
	return next_deadline;
}

/*
 * One pass: snapshot, classify, then record a sample and correct the
 * admission counters (when a sample is due), and enforce.  Returns the
 * next enforcement deadline (0: none).
 */
static TimestampTz
observe_and_enforce(bool record, bool connected, bool standby, bool republished)
{
	PhSnapshot	snap;
	bool		enforcing = connected && ph_enforce != PH_ENFORCE_OFF &&
		policies.count > 0;

	ph_snapshot_take(&snap, enforcing && policies.need_blocking ? PH_SNAPSHOT_BLOCKING : 0);
	ph_classify(&snap, &policies);
	if (record)
	{
		record_sample(&snap, connected && !standby);
		ph_admission_correct(&snap, &policies, republished);
	}
	return enforcing ? enforce_policies(&snap) : 0;
}

/*
 * In no-database mode: has pool_health.database appeared?  Then exit, to
 * be restarted connected to it.
 */
static void
check_for_database(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		exists;

	if (!TimestampDifferenceExceeds(last_database_check, now, DATABASE_CHECK_INTERVAL_MS))
		return;
	last_database_check = now;

	StartTransactionCommand();
	exists = OidIsValid(get_database_oid(ph_database, true));
	CommitTransactionCommand();
	if (exists)
	{
		LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
		ph_shared->worker.connect_to_database = true;
		LWLockRelease(ph_shared->lock);
		ereport(LOG,
				(errmsg("pool_health: database \"%s\" exists now; restarting the worker to connect to it",
						ph_database)));
		proc_exit(1);
	}
}

static int64
cpu_usec(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (int64) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
		ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

/*
 * One cycle; an error is logged and counted, and does not end the worker.
 * record says whether a sample is due (else only enforcement is).  Returns
 * the next enforcement deadline (0: none).
 */
static TimestampTz
run_cycle(MemoryContext cycle_context, bool record)
{
	MemoryContext old = MemoryContextSwitchTo(cycle_context);
	int64		cpu_start = cpu_usec();
	volatile TimestampTz next_deadline = 0;

	PG_TRY();
	{
		if (connected_to_database)
		{
			bool		standby = RecoveryInProgress();
			Oid			extension;

			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			extension = get_extension_oid("pool_health", true);
			set_mode(OidIsValid(extension) ? PH_WORKER_RUNNING : PH_WORKER_NO_EXTENSION,
					 standby);
			republished = refresh_policies(extension, standby) || republished;
			next_deadline = observe_and_enforce(record, true, standby, republished);
			if (record)
				republished = false;
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		else
		{
			set_mode(PH_WORKER_NO_DATABASE, RecoveryInProgress());
			(void) observe_and_enforce(record, false, false, false);
			check_for_database();
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cycle_context);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();

		LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
		ph_shared->worker.errors++;
		ph_shared->worker.last_error_at = GetCurrentTimestamp();
		strlcpy(ph_shared->worker.last_error, edata->message ? edata->message : "",
				sizeof(ph_shared->worker.last_error));
		LWLockRelease(ph_shared->lock);
	}
	PG_END_TRY();

	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	ph_shared->worker.sample_cpu_us += cpu_usec() - cpu_start;
	LWLockRelease(ph_shared->lock);

	MemoryContextSwitchTo(old);
	MemoryContextReset(cycle_context);
	return next_deadline;
}

void
pool_health_worker_main(Datum arg)
{
	MemoryContext cycle_context;
	TimestampTz next_sample;
	TimestampTz next_deadline = 0;
	bool		woken = false;
	bool		connect;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (ph_shared == NULL)
		elog(ERROR, "pool_health shared memory is not initialized");
	on_shmem_exit(worker_exit, (Datum) 0);

	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	ph_shared->worker_proc = MyProc;
	ph_shared->worker.pid = MyProcPid;
	ph_shared->worker.mode = PH_WORKER_STARTING;
	ph_shared->worker.started_at = GetCurrentTimestamp();
	ph_shared->worker.restarts++;
	connect = ph_shared->worker.connect_to_database;
	/* if connecting fails (the database is gone), the next start waits */
	ph_shared->worker.connect_to_database = false;
	LWLockRelease(ph_shared->lock);

	if (connect)
	{
		BackgroundWorkerInitializeConnection(ph_database, NULL, 0);
		connected_to_database = true;
		LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
		ph_shared->worker.connect_to_database = true;
		LWLockRelease(ph_shared->lock);
	}
	else
		BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SetConfigOption("application_name", "pool_health", PGC_USERSET, PGC_S_SESSION);
	seen_terminations = pg_atomic_read_u64(&ph_shared->terminations);
	seen_refusals = pg_atomic_read_u64(&ph_shared->refusals);

	cycle_context = AllocSetContextCreate(TopMemoryContext,
										  "pool_health cycle",
										  ALLOCSET_DEFAULT_SIZES);
	policy_context = AllocSetContextCreate(TopMemoryContext,
										   "pool_health policies",
										   ALLOCSET_SMALL_SIZES);
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(ActedKey);
		ctl.entrysize = sizeof(ActedEntry);
		acted = hash_create("pool_health acted", 256, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	if (connected_to_database)
	{
		CacheRegisterSyscacheCallback(AUTHOID, catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(DATABASEOID, catalog_changed, (Datum) 0);
	}
	next_sample = GetCurrentTimestamp();

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake;
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a shorter interval takes effect now, not after the old one */
			next_sample = Min(next_sample,
							  TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  ph_sample_interval_ms));
		}

		/*
		 * A cycle when a sample is due, when an enforcement deadline has
		 * come, or when woken (the policies changed).
		 */
		now = GetCurrentTimestamp();
		if (now >= next_sample || (next_deadline != 0 && now >= next_deadline) ||
			woken)
		{
			bool		record = now >= next_sample;

			next_deadline = run_cycle(cycle_context, record);
			if (record)
			{
				/* keep the schedule: one interval after the last due time */
				next_sample = TimestampTzPlusMilliseconds(next_sample, ph_sample_interval_ms);
				now = GetCurrentTimestamp();
				if (next_sample <= now)
					next_sample = TimestampTzPlusMilliseconds(now, ph_sample_interval_ms);
			}
			now = GetCurrentTimestamp();
		}

		wake = next_sample;
		if (next_deadline != 0 && next_deadline < wake)
			wake = next_deadline;
		sleep_ms = (long) ((wake - now + 999) / 1000);
		woken = (WaitLatch(MyLatch,
						   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   Max(sleep_ms, 1),
						   ph_worker_wait_event()) & WL_LATCH_SET) != 0;
		ResetLatch(MyLatch);
	}
}
