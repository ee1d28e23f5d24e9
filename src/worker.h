/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The background worker: its loop (worker.c); its shared state as
 *		status() shows it, its registration and waking it (worker_state.c).
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
 * The worker's state (worker_state.c), as status() and metrics() show it: a
 * copy, taken under the worker's lock by ph_worker_state().
 */
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

extern void ph_worker_shmem_request(void);
extern void ph_worker_shmem_startup(void);
extern bool ph_worker_state(PhWorkerState *out);
extern void ph_worker_wake(void);
extern bool ph_worker_state_started(void);
extern void ph_worker_state_stopped(void);
extern void ph_worker_state_connect_next(bool connect);
extern void ph_worker_state_mode(PhWorkerMode mode, bool on_standby);
extern PhLevel ph_worker_state_sampled(PhLevel level, TimestampTz at);
extern void ph_worker_state_error(TimestampTz at, const char *message);
extern void ph_worker_state_cpu(int64 usec);
extern void ph_worker_register(void);
extern void ph_register_background_worker(const char *name, const char *function, int flags,
										  BgWorkerStartTime start_time, int restart_seconds);
extern const char *ph_worker_mode_name(PhWorkerMode mode);
PGDLLEXPORT extern void pool_health_worker_main(Datum arg);

#endif							/* PH_WORKER_H */
