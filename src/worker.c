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
 * It connects to pool_health.database.  When that database does not exist,
 * or is one it must not hold a connection to (a template: CREATE DATABASE
 * would fail for everyone; one that refuses connections), it runs
 * connected to no database (sampling and history need none), checks every
 * few seconds whether the database has become usable, and then exits to
 * be restarted into it: it waits and logs once, it does not crash-loop.
 * When the extension is not created in its database, it keeps sampling and
 * says so in status().  On a standby it writes no table and sends no
 * NOTIFY (level changes are logged only).
 *
 * Each pass evaluates one snapshot with the published policies (the set
 * the views show, evaluate.c), records a sample, re-homes the admission
 * counters, and carries out what is due (enforce.c).  The policies are
 * the worker's copy of the published set (policy_cache.c).
 *
 * An error in a cycle is logged (a repeated one once, then counted), the
 * cycle's locks and transaction are released, and the next cycles run,
 * backing off up to ERROR_BACKOFF_MAX_MS while the errors go on.
 *
 * Shared state: none here.  The worker's state that status() shows is
 * worker_state.c's; the history is history.c's, the policy set
 * policy_set.c's, the counters admission.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "admission.h"
#include "alerts.h"
#include "app_accounting.h"
#include "audit.h"
#include "enforce.h"
#include "evaluate.h"
#include "history.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"
#include "worker.h"

/* In no-database mode, how often to look for pool_health.database. */
#define DATABASE_CHECK_INTERVAL_MS	5000

/* After errors in a row, the longest wait before the next cycle. */
#define ERROR_BACKOFF_MAX_MS		10000

/* How often a repeated error is summarized in the log. */
#define ERROR_REPEAT_LOG_MS			(5 * 60 * 1000)


/* Process-local state of the worker. */

static bool connected_to_database = false;
static PhWorkerMode last_logged_mode = PH_WORKER_STARTING;
static uint64 seen_terminations = 0;
static uint64 seen_refusals = 0;
static TimestampTz last_database_check = 0;
static bool rehome_due = false;	/* republished: re-home the counters now */

/* Errors in a row, and the last one logged. */
static int	errors_in_a_row = 0;
static char last_error_logged[256] = "";
static int	error_repeats = 0;
static TimestampTz error_repeat_logged_at = 0;



/* The wait event the worker shows between samples (compat.h). */
static uint32 worker_wait_event = 0;

/*
 * At exit, however it happens: say the worker is gone, under the lock as
 * those fields' rule says (a reader copies them together).  The exit may
 * come from an error raised with LWLocks held (a FATAL, proc_exit() in a
 * cycle): they are released first, as ProcKill() would, so that the
 * worker never waits on a lock it holds itself.
 */
static void
worker_exit(int code, Datum arg)
{
	LWLockReleaseAll();
	ph_worker_state_stopped();
}

static void
set_mode(PhWorkerMode mode, bool on_standby)
{
	ph_worker_state_mode(mode, on_standby);

	if (mode == last_logged_mode)
		return;
	last_logged_mode = mode;
	if (mode == PH_WORKER_NO_DATABASE)
		ereport(LOG,
				(errmsg("pool_health: database \"%s\" does not exist; sampling without it and waiting for it to be created",
						ph_database),
				 errhint("Create the database or set pool_health.database, then CREATE EXTENSION pool_health in it.")));
	else if (mode == PH_WORKER_BAD_DATABASE)
		ereport(LOG,
				(errmsg("pool_health: database \"%s\" is a template or does not allow connections; sampling without it",
						ph_database),
				 errdetail("A worker connected to a template database would make CREATE DATABASE fail for everyone."),
				 errhint("Set pool_health.database to an ordinary database and restart the server.")));
	else if (mode == PH_WORKER_NO_EXTENSION)
		ereport(LOG,
				(errmsg("pool_health: extension \"pool_health\" is not created in database \"%s\"; sampling and waiting for it",
						ph_database)));
	else if (mode == PH_WORKER_RUNNING)
	{
		ereport(LOG,
				(errmsg("pool_health: worker running in database \"%s\", sampling every %d ms",
						ph_database, ph_sample_interval_ms)));
		/* in the cycle's transaction: is the extension this library's? */
		ph_audit_check_version();
	}
}

/* Record one sample of an evaluation, and report a level change. */
static void
record_sample(const PhEvaluation *eval, bool can_notify)
{
	PhUsage		usage = eval->usage;
	PhSample	sample;
	PhLevel		old_level;
	uint64		terminations;
	uint64		refusals;

	ph_history_totals(&terminations, &refusals);
	memset(&sample, 0, sizeof(sample));
	sample.at = eval->snap.taken_at;
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

	ph_history_append(&sample);
	old_level = ph_worker_state_sampled(usage.level, sample.at);

	if (old_level != usage.level)
		ph_alert_level_change(old_level, &usage, can_notify);
}

/*
 * One pass: evaluate a snapshot with the published policies, then record
 * a sample and re-home the admission counters (when a sample is due), and
 * enforce.  Returns the next enforcement deadline (0: none).
 */
static TimestampTz
observe_and_enforce(bool record, bool connected, bool standby)
{
	PhEvaluation eval;
	const PhPolicies *policies = ph_policy_cache();
	bool		enforcing = connected && ph_enforce != PH_ENFORCE_OFF &&
		policies->count > 0;

	ph_evaluate_with(&eval, policies, 0);
	if (record)
	{
		record_sample(&eval, connected && !standby);
		ph_accounting_sample(eval.snap.taken_at);
		ph_accounting_warn_pooled(policies);
	}
	if (record || rehome_due)
	{
		ph_admission_rehome(&eval);
		rehome_due = false;
	}
	return enforcing ? ph_enforce_due(&eval) : 0;
}

/*
 * In no-database mode: is pool_health.database there and usable now?
 * Then exit, to be restarted connected to it.  Sets the mode otherwise.
 */
static void
check_for_database(void)
{
	static bool exists = false;
	TimestampTz now = GetCurrentTimestamp();
	bool		usable;

	if (last_database_check != 0 &&
		!TimestampDifferenceExceeds(last_database_check, now, DATABASE_CHECK_INTERVAL_MS))
	{
		set_mode(exists ? PH_WORKER_BAD_DATABASE : PH_WORKER_NO_DATABASE,
				 RecoveryInProgress());
		return;
	}
	last_database_check = now;

	StartTransactionCommand();
	exists = OidIsValid(ph_database_lookup(ph_database, &usable));
	CommitTransactionCommand();
	if (usable)
	{
		ph_worker_state_connect_next(true);
		ereport(LOG,
				(errmsg("pool_health: database \"%s\" can be used now; restarting the worker to connect to it",
						ph_database)));
		proc_exit(1);
	}
	set_mode(exists ? PH_WORKER_BAD_DATABASE : PH_WORKER_NO_DATABASE,
			 RecoveryInProgress());
}

/*
 * Right after connecting to pool_health.database: if it is a template or
 * closed to connections, disconnect (exit, to be restarted without a
 * database) rather than block CREATE DATABASE.
 */
static void
leave_unusable_database(void)
{
	HeapTuple	tuple;
	bool		usable = true;

	StartTransactionCommand();
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		usable = db->datallowconn && !db->datistemplate;
		ReleaseSysCache(tuple);
	}
	CommitTransactionCommand();
	if (usable)
		return;
	ph_worker_state_connect_next(false);
	set_mode(PH_WORKER_BAD_DATABASE, RecoveryInProgress());
	proc_exit(1);
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
 * After a failed cycle: log the error unless it repeats the last one
 * (then count it, and say so every ERROR_REPEAT_LOG_MS), and record it for
 * status().  Called in PG_CATCH with the error still on the stack, after
 * the cycle's transaction is aborted and its LWLocks released: it takes
 * the worker's lock (worker_state.c), which the error may have interrupted
 * the worker holding (an LWLock is not re-entrant: taking it again would
 * wait for ever on itself).
 */
static void
report_cycle_error(MemoryContext cycle_context)
{
	ErrorData  *edata;
	TimestampTz now = GetCurrentTimestamp();
	const char *message;

	MemoryContextSwitchTo(cycle_context);
	edata = CopyErrorData();
	message = edata->message ? edata->message : "";
	if (strcmp(message, last_error_logged) == 0)
	{
		error_repeats++;
		if (TimestampDifferenceExceeds(error_repeat_logged_at, now, ERROR_REPEAT_LOG_MS))
		{
			ereport(LOG,
					(errmsg("pool_health: the worker's last error repeated %d times: %s",
							error_repeats, message)));
			error_repeat_logged_at = now;
		}
	}
	else
	{
		EmitErrorReport();
		strlcpy(last_error_logged, message, sizeof(last_error_logged));
		error_repeats = 0;
		error_repeat_logged_at = now;
	}
	FlushErrorState();
	errors_in_a_row++;

	ph_worker_state_error(now, message);
}

/* How long to wait after errors in a row before the next cycle. */
static long
error_backoff_ms(void)
{
	long		ms = ph_sample_interval_ms;

	for (int i = 1; i < errors_in_a_row && ms < ERROR_BACKOFF_MAX_MS; i++)
		ms *= 2;
	return Min(ms, Max(ERROR_BACKOFF_MAX_MS, ph_sample_interval_ms));
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

	pgstat_report_activity(STATE_RUNNING, record ? "sampling" : "enforcing");
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
			if (ph_policy_cache_refresh(extension, standby))
				rehome_due = true;	/* count sessions where they now belong */
			next_deadline = observe_and_enforce(record, true, standby);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		else
		{
			check_for_database();
			/* a transaction for the role lookups (pg_authid is shared) */
			StartTransactionCommand();
			(void) observe_and_enforce(record, false, false);
			CommitTransactionCommand();
		}
		if (errors_in_a_row > 0 && error_repeats > 0)
			ereport(LOG,
					(errmsg("pool_health: the worker's cycles succeed again, after the last error repeated %d times",
							error_repeats)));
		errors_in_a_row = 0;
		error_repeats = 0;
		last_error_logged[0] = '\0';
	}
	PG_CATCH();
	{
		/*
		 * The standard error path of a background worker: release what
		 * the cycle held (its transaction, every LWLock) before anything
		 * takes a lock again, then report.
		 */
		HOLD_INTERRUPTS();
		disable_timeout(STATEMENT_TIMEOUT, false);
		AbortCurrentTransaction();
		LWLockReleaseAll();
		report_cycle_error(cycle_context);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);

	ph_worker_state_cpu(cpu_usec() - cpu_start);

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
	TimestampTz backoff_until = 0;
	bool		woken = false;
	bool		connect;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!ph_shmem_ready())
		elog(ERROR, "pool_health shared memory is not initialized");
	on_shmem_exit(worker_exit, (Datum) 0);
	connect = ph_worker_state_started();

	if (connect)
	{
		BackgroundWorkerInitializeConnection(ph_database, NULL, 0);
		connected_to_database = true;
		ph_worker_state_connect_next(true);
		leave_unusable_database();
	}
	else
		BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SetConfigOption("application_name", "pool_health", PGC_USERSET, PGC_S_SESSION);
	ph_history_totals(&seen_terminations, &seen_refusals);

	cycle_context = AllocSetContextCreate(TopMemoryContext,
										  "pool_health cycle",
										  ALLOCSET_DEFAULT_SIZES);
	ph_policy_cache_init(connected_to_database);
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
		 * come, or when woken (the policies changed); after errors in a
		 * row, not before the back-off has passed.
		 */
		now = GetCurrentTimestamp();
		if ((now >= next_sample || (next_deadline != 0 && now >= next_deadline) ||
			 woken) && now >= backoff_until)
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
			backoff_until = errors_in_a_row > 0 ?
				TimestampTzPlusMilliseconds(now, error_backoff_ms()) : 0;
			if (backoff_until > next_sample)
				next_sample = backoff_until;
		}

		wake = next_sample;
		if (next_deadline != 0 && next_deadline < wake)
			wake = Max(next_deadline, backoff_until);
		sleep_ms = (long) ((wake - now + 999) / 1000);
		woken = (WaitLatch(MyLatch,
						   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   Max(sleep_ms, 1),
						   ph_named_wait_event("PoolHealthMain", &worker_wait_event)) & WL_LATCH_SET) != 0;
		ResetLatch(MyLatch);
	}
}
