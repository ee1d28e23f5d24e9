/*-------------------------------------------------------------------------
 *
 * compat.h
 *		Every difference between the PostgreSQL majors pool_health supports
 *		(15 and newer), as small inline wrappers and macros.  Logic files
 *		never test PG_VERSION_NUM themselves.
 *
 *-------------------------------------------------------------------------
 */
#ifndef POOL_HEALTH_COMPAT_H
#define POOL_HEALTH_COMPAT_H

#include "postgres.h"

#include <signal.h>

#include "access/tableam.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/guc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/backend_status.h"
#include "utils/wait_event.h"
#if PG_VERSION_NUM < 170000
#include "utils/memutils.h"		/* TopMemoryContext */
#endif
#if PG_VERSION_NUM < 190000
#include "parser/parser.h"		/* standard_conforming_strings */
#endif
#if PG_VERSION_NUM >= 160000
#include "varatt.h"				/* VARATT_IS_EXTERNAL, moved out of postgres.h */
#endif

/*
 * Number of entries of the shared backend status array ("Backend Status
 * Array", NumBackendStatSlots in backend_status.c): one per backend plus
 * one per auxiliary process.  PG 17 counts auxiliary processes by slot
 * rather than by type.
 */
static inline int
ph_backend_status_slots(void)
{
#if PG_VERSION_NUM >= 170000
	return MaxBackends + NUM_AUXILIARY_PROCS;
#else
	return MaxBackends + NUM_AUXPROCTYPES;
#endif
}

/*
 * The backend status slot of the process whose PGPROC is allProcs[procno],
 * or -1 when its PGPROC does not say.  PG 17 numbers both alike; before,
 * a regular backend's slot follows its backend id, and an auxiliary
 * process's its type (not in its PGPROC: -1).
 */
static inline int
ph_status_slot_of_proc(int procno)
{
#if PG_VERSION_NUM >= 170000
	return procno;
#else
	BackendId	id = ((volatile PGPROC *) &ProcGlobal->allProcs[procno])->backendId;

	return id != InvalidBackendId ? id - 1 : -1;
#endif
}

/*
 * Slots of max_connections that ordinary roles cannot get:
 * superuser_reserved_connections, plus reserved_connections from PG 16.
 */
static inline int
ph_reserved_connections(void)
{
#if PG_VERSION_NUM >= 160000
	return SuperuserReservedConnections + ReservedConnections;
#else
	return ReservedBackends;
#endif
}

/*
 * The state column of pg_stat_activity, as text.  PG 18 added "starting"
 * for backends still authenticating.
 */
static inline const char *
ph_backend_state_name(BackendState state)
{
	switch (state)
	{
		case STATE_IDLE:
			return "idle";
		case STATE_RUNNING:
			return "active";
		case STATE_IDLEINTRANSACTION:
			return "idle in transaction";
		case STATE_FASTPATH:
			return "fastpath function call";
		case STATE_IDLEINTRANSACTION_ABORTED:
			return "idle in transaction (aborted)";
		case STATE_DISABLED:
			return "disabled";
#if PG_VERSION_NUM >= 180000
		case STATE_STARTING:
			return "starting";
#endif
		case STATE_UNDEFINED:
			break;
	}
	return NULL;
}

/*
 * Send a signal to a backend the way pg_terminate_backend() does: to its
 * whole process group (a backend leads its own, so that a program it runs,
 * e.g. for COPY ... PROGRAM, gets the signal too).  PG 17 dropped
 * HAVE_SETSID: every Unix has setsid().
 */
static inline int
ph_signal_backend(int pid, int sig)
{
#if (PG_VERSION_NUM >= 170000 && !defined(WIN32)) || defined(HAVE_SETSID)
	return kill(-pid, sig);
#else
	return kill(pid, sig);
#endif
}

/*
 * The wait event a worker shows while it sleeps: a named custom event from
 * PG 17 (created once, kept in *cached), the generic "Extension" before.
 */
static inline uint32
ph_named_wait_event(const char *name, uint32 *cached)
{
#if PG_VERSION_NUM >= 170000
	if (*cached == 0)
		*cached = WaitEventExtensionNew(name);
	return *cached;
#else
	return PG_WAIT_EXTENSION;
#endif
}

/*
 * Memory for a setting's parsed value ("extra"): malloc before PG 16,
 * guc_malloc (freed by guc_free) from PG 16.  NULL when out of memory.
 */
static inline void *
ph_guc_malloc(size_t size)
{
#if PG_VERSION_NUM >= 160000
	return guc_malloc(LOG, size);
#else
	return malloc(size);
#endif
}

/* Free what ph_guc_malloc returned, or a setting's value (a check hook's *newval). */
static inline void
ph_guc_free(void *p)
{
#if PG_VERSION_NUM >= 160000
	guc_free(p);
#else
	free(p);
#endif
}

/* The local id of this backend's current top-level transaction. */
static inline LocalTransactionId
ph_my_lxid(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProc->vxid.lxid;
#else
	return MyProc->lxid;
#endif
}

/*
 * The local id of the top-level transaction of the process in
 * allProcs[procno] (InvalidLocalTransactionId outside one), read without a
 * lock as pg_locks reads it.
 */
static inline LocalTransactionId
ph_proc_lxid(int procno)
{
	volatile PGPROC *proc = &ProcGlobal->allProcs[procno];

#if PG_VERSION_NUM >= 170000
	return proc->vxid.lxid;
#else
	return proc->lxid;
#endif
}

/* This backend's PGPROC number (its index in ProcGlobal->allProcs). */
static inline int
ph_my_procno(void)
{
#if PG_VERSION_NUM >= 170000
	return MyProcNumber;
#else
	return MyProc->pgprocno;
#endif
}

/*
 * One byte of an application_name as the server keeps it
 * (check_application_name, pg_clean_ascii): printable ASCII as is, any
 * other byte as '?' before PG 16 and as "\xNN" from PG 16.  Writes into
 * out (room for 4) and returns how many bytes it wrote.
 */
static inline int
ph_clean_ascii_byte(unsigned char c, char *out)
{
	static const char hex[] = "0123456789abcdef";

	if (c >= 32 && c <= 126)
	{
		out[0] = (char) c;
		return 1;
	}
#if PG_VERSION_NUM >= 160000
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[c >> 4];
	out[3] = hex[c & 0xF];
	return 4;
#else
	(void) hex;
	out[0] = '?';
	return 1;
#endif
}

/*
 * Restrict search_path to pg_catalog, pg_temp for the rest of the current
 * nest level of settings, as maintenance commands do (RestrictSearchPath
 * from PG 17).
 */
static inline void
ph_restrict_search_path(void)
{
#if PG_VERSION_NUM >= 170000
	RestrictSearchPath();
#else
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
#endif
}

/*
 * A sequential scan of a table with a snapshot.  PG 19 added the scan's
 * option flags as an argument.
 */
static inline TableScanDesc
ph_table_beginscan(Relation rel, Snapshot snapshot)
{
#if PG_VERSION_NUM >= 190000
	return table_beginscan(rel, snapshot, 0, NULL, 0);
#else
	return table_beginscan(rel, snapshot, 0, NULL);
#endif
}

/*
 * The lock manager's lists of one LOCK, walked with every lock partition
 * held (backend_snapshot.c), in the order pg_blocking_pids() walks them:
 * its PROCLOCKs (the holders and waiters) and its wait queue (PGPROCs,
 * first come first).  PG 16 made them dlists (a SHM_QUEUE and a
 * PROC_QUEUE before); PG 19 links a waiting PGPROC by waitLink rather
 * than links.  The walkers return NULL after the last.
 */
static inline PROCLOCK *
ph_lock_first_proclock(LOCK *lock)
{
#if PG_VERSION_NUM >= 160000
	return dlist_is_empty(&lock->procLocks) ? NULL :
		dlist_head_element(PROCLOCK, lockLink, &lock->procLocks);
#else
	return (PROCLOCK *) SHMQueueNext(&lock->procLocks, &lock->procLocks,
									 offsetof(PROCLOCK, lockLink));
#endif
}

static inline PROCLOCK *
ph_lock_next_proclock(LOCK *lock, PROCLOCK *proclock)
{
#if PG_VERSION_NUM >= 160000
	return dlist_has_next(&lock->procLocks, &proclock->lockLink) ?
		dlist_container(PROCLOCK, lockLink,
						dlist_next_node(&lock->procLocks, &proclock->lockLink)) :
		NULL;
#else
	return (PROCLOCK *) SHMQueueNext(&lock->procLocks, &proclock->lockLink,
									 offsetof(PROCLOCK, lockLink));
#endif
}

#if PG_VERSION_NUM >= 190000
#define PH_WAIT_QUEUE_LINK waitLink
#else
#define PH_WAIT_QUEUE_LINK links
#endif

/* How many PGPROCs wait in the queue of a LOCK. */
static inline int
ph_lock_queue_length(LOCK *lock)
{
#if PG_VERSION_NUM >= 160000
	return (int) dclist_count(&lock->waitProcs);
#else
	return lock->waitProcs.size;
#endif
}

/* The first PGPROC in the queue of a LOCK (its length is not 0). */
static inline PGPROC *
ph_lock_queue_first(LOCK *lock)
{
#if PG_VERSION_NUM >= 160000
	return dlist_container(PGPROC, PH_WAIT_QUEUE_LINK,
						   dclist_head_node(&lock->waitProcs));
#else
	return (PGPROC *) lock->waitProcs.links.next;
#endif
}

/* The PGPROC after proc in the queue of a LOCK (proc is not the last). */
static inline PGPROC *
ph_lock_queue_next(LOCK *lock, PGPROC *proc)
{
#if PG_VERSION_NUM >= 160000
	return dlist_container(PGPROC, PH_WAIT_QUEUE_LINK,
						   dclist_next_node(&lock->waitProcs,
											&proc->PH_WAIT_QUEUE_LINK));
#else
	return (PGPROC *) proc->links.next;
#endif
}

/*
 * Does the parser start a top-level statement at its first token, so that
 * the comments before it (after the semicolon before it) are outside its
 * location?  PostgreSQL 18 does; before, a statement starts right after
 * the semicolon before it.  Either way it ends at the semicolon after it.
 */
#if PG_VERSION_NUM >= 180000
#define PH_STMT_STARTS_AT_FIRST_TOKEN true
#else
#define PH_STMT_STARTS_AT_FIRST_TOKEN false
#endif

/* standard_conforming_strings (always on from PostgreSQL 19) */
static inline bool
ph_standard_conforming_strings(void)
{
#if PG_VERSION_NUM >= 190000
	return true;
#else
	return standard_conforming_strings;
#endif
}

/*
 * The arguments of an ExecutorRun hook: PostgreSQL 18 dropped
 * execute_once.
 */
#if PG_VERSION_NUM >= 180000
#define PH_EXECUTOR_RUN_ARGS \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count
#define PH_EXECUTOR_RUN_PASS queryDesc, direction, count
#else
#define PH_EXECUTOR_RUN_ARGS \
	QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once
#define PH_EXECUTOR_RUN_PASS queryDesc, direction, count, execute_once
#endif

/*
 * A wait event set that lives as long as the process (freed by hand):
 * PostgreSQL 17 takes a resource owner (none here) instead of a memory
 * context.
 */
static inline WaitEventSet *
ph_create_wait_event_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

#endif							/* POOL_HEALTH_COMPAT_H */
