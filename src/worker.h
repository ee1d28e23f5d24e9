/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The background worker (worker.c): its state as status() shows it, and
 *		its registration.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_WORKER_H
#define PH_WORKER_H

#include "ph_model.h"

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

extern void ph_worker_register(void);
extern void ph_register_background_worker(const char *name, const char *function, int flags,
										  BgWorkerStartTime start_time, int restart_seconds);
extern const char *ph_worker_mode_name(PhWorkerMode mode);
PGDLLEXPORT extern void pool_health_worker_main(Datum arg);

#endif							/* PH_WORKER_H */
