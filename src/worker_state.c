/*-------------------------------------------------------------------------
 *
 * worker_state.c
 *		The background worker's shared state, as status() and metrics()
 *		show it (pid, mode, samples, errors, CPU, level), and how to wake
 *		it; its registration; the words for its modes.  worker.c (the loop)
 *		changes the state through the functions here only.
 *
 * Shared state: WorkerShared ("pool_health worker"), under its own LWLock
 * (tranche "pool_health worker").  Every field is written holding it
 * exclusively: by the worker, at its start and exit too, and
 * connect_to_database by the postmaster before any worker runs.  Readers
 * copy the whole state under it, shared, so that pid and mode are seen
 * together.  Nothing reads them without the lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "worker.h"

typedef struct WorkerShared
{
	LWLock	   *lock;			/* fixed at start */
	PhWorkerState state;		/* lock */
	PGPROC	   *worker_proc;	/* to wake the worker; NULL when not
								 * running; lock */
} WorkerShared;

static WorkerShared *worker_shared = NULL;

void
ph_worker_shmem_request(void)
{
	RequestAddinShmemSpace(sizeof(WorkerShared));
	RequestNamedLWLockTranche("pool_health worker", 1);
}

/* Caller holds AddinShmemInitLock. */
void
ph_worker_shmem_startup(void)
{
	bool		found;

	worker_shared = ShmemInitStruct("pool_health worker", sizeof(WorkerShared), &found);
	if (!found)
	{
		memset(worker_shared, 0, sizeof(WorkerShared));
		worker_shared->lock = &(GetNamedLWLockTranche("pool_health worker"))->lock;
		/* optimistic: the first start connects to pool_health.database */
		worker_shared->state.connect_to_database = true;
	}
}

/* The worker's state, copied under its lock; false without the preload. */
bool
ph_worker_state(PhWorkerState *out)
{
	if (worker_shared == NULL)
		return false;
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	*out = worker_shared->state;
	LWLockRelease(worker_shared->lock);
	return true;
}

/* Wake the worker, if it runs (a change of the policies was committed). */
void
ph_worker_wake(void)
{
	PGPROC	   *worker;

	if (worker_shared == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	worker = worker_shared->worker_proc;
	if (worker != NULL)
		SetLatch(&worker->procLatch);
	LWLockRelease(worker_shared->lock);
}

/*
 * Register one of pool_health's background workers (from _PG_init): its
 * name is also its type; it runs function of this library.
 */
void
ph_register_background_worker(const char *name, const char *function, int flags,
							  BgWorkerStartTime start_time, int restart_seconds)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = flags;
	worker.bgw_start_time = start_time;
	worker.bgw_restart_time = restart_seconds;
	strlcpy(worker.bgw_library_name, "pool_health", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker.bgw_name, name, BGW_MAXLEN);
	strlcpy(worker.bgw_type, name, BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

void
ph_worker_register(void)
{
	ph_register_background_worker("pool_health", "pool_health_worker_main",
								  BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION,
								  BgWorkerStart_ConsistentState, 1);
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
		case PH_WORKER_BAD_DATABASE:
			return "database not usable";
		case PH_WORKER_NO_EXTENSION:
			return "waiting for extension";
		case PH_WORKER_RUNNING:
			return "running";
	}
	return "unknown";
}

/* ---- the worker's changes (worker.c) ---- */

/*
 * The worker starts: returns whether to connect to pool_health.database.
 * If connecting fails (the database is gone), the next start waits
 * without it, unless ph_worker_state_connect_next(true) says otherwise.
 */
bool
ph_worker_state_started(void)
{
	bool		connect;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->worker_proc = MyProc;
	worker_shared->state.pid = MyProcPid;
	worker_shared->state.mode = PH_WORKER_STARTING;
	worker_shared->state.started_at = GetCurrentTimestamp();
	worker_shared->state.restarts++;
	connect = worker_shared->state.connect_to_database;
	worker_shared->state.connect_to_database = false;
	LWLockRelease(worker_shared->lock);
	return connect;
}

/* At the worker's exit (no LWLock held). */
void
ph_worker_state_stopped(void)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->worker_proc = NULL;
	worker_shared->state.pid = 0;
	worker_shared->state.mode = PH_WORKER_STOPPED;
	LWLockRelease(worker_shared->lock);
}

/* Whether the worker's next start connects to pool_health.database. */
void
ph_worker_state_connect_next(bool connect)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->state.connect_to_database = connect;
	LWLockRelease(worker_shared->lock);
}

void
ph_worker_state_mode(PhWorkerMode mode, bool on_standby)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->state.mode = mode;
	worker_shared->state.on_standby = on_standby;
	LWLockRelease(worker_shared->lock);
}

/* A sample was taken: returns the level of the previous one. */
PhLevel
ph_worker_state_sampled(PhLevel level, TimestampTz at)
{
	PhLevel		old_level;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	old_level = (PhLevel) worker_shared->state.level;
	worker_shared->state.level = (uint8) level;
	worker_shared->state.last_sample_at = at;
	worker_shared->state.samples++;
	LWLockRelease(worker_shared->lock);
	return old_level;
}

/* A cycle failed (the caller holds no LWLock: asserted). */
void
ph_worker_state_error(TimestampTz at, const char *message)
{
	Assert(!LWLockHeldByMe(worker_shared->lock));
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->state.errors++;
	worker_shared->state.last_error_at = at;
	strlcpy(worker_shared->state.last_error, message, sizeof(worker_shared->state.last_error));
	LWLockRelease(worker_shared->lock);
}

/* CPU time spent in a sample, in microseconds. */
void
ph_worker_state_cpu(int64 usec)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->state.sample_cpu_us += usec;
	LWLockRelease(worker_shared->lock);
}
