/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		pool_health's shared memory: requested and created through the
 *		shmem hooks when the library is preloaded, and the error every
 *		feature that needs it raises otherwise.
 *
 * Layout: one PhShared, followed by the history rings (history.c), the
 * published policies and their errors (policy_set.c), the quota counters
 * and per-backend admission entries (admission.c) and the in-memory audit
 * lists (audit.c).  The per-application accounting (app_accounting_shmem.c, its
 * own tranche "pool_health accounting") and the per-backend slots of
 * xact_origin.c (no lock: each says its protocol) request and create their
 * own areas, called from the hooks here.  ph_shared->lock (the
 * first LWLock of the named tranche "pool_health") protects worker,
 * history, policy_set and the audit lists;
 * the counters in PhShared and PhAdmission are atomics and need no lock
 * (pool_health.h says it field by field).  At a clean shutdown the
 * postmaster saves the history to a file, and loads it back at the next
 * start (history.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "admission.h"
#include "app_accounting.h"
#include "audit.h"
#include "history.h"
#include "policy.h"
#include "shmem.h"
#include "xact_origin.h"

PhShared   *ph_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shared_size(void)
{
	Size		size = MAXALIGN(sizeof(PhShared));

	size = add_size(size, MAXALIGN(ph_history_shmem_size()));
	size = add_size(size, MAXALIGN(ph_policy_set_shmem_size()));
	size = add_size(size, MAXALIGN(ph_admission_shmem_size()));
	return add_size(size, MAXALIGN(ph_audit_shmem_size()));
}

static void
ph_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("pool_health", 1);
	ph_accounting_shmem_request();
	ph_xact_origin_shmem_request();
}

/* At postmaster exit: keep the history for the next start (not after a crash). */
static void
ph_shmem_shutdown(int code, Datum arg)
{
	if (code == 0 && ph_shared != NULL)
		ph_history_save();
}

static void
ph_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ph_shared = ShmemInitStruct("pool_health", shared_size(), &found);
	if (!found)
	{
		storage = (char *) ph_shared + MAXALIGN(sizeof(PhShared));
		memset(ph_shared, 0, sizeof(PhShared));
		ph_shared->lock = &(GetNamedLWLockTranche("pool_health"))->lock;
		pg_atomic_init_u64(&ph_shared->terminations, 0);
		pg_atomic_init_u64(&ph_shared->refusals, 0);
		pg_atomic_init_u32(&ph_shared->http_pid, 0);
		pg_atomic_init_u64(&ph_shared->http_requests, 0);
		/* optimistic: the first start connects to pool_health.database */
		ph_shared->worker.connect_to_database = true;
		storage = (char *) MAXALIGN(ph_history_init(&ph_shared->history, storage));
		storage = (char *) MAXALIGN(ph_policy_set_init(&ph_shared->policy_set, storage));
		storage = (char *) MAXALIGN(ph_admission_init(&ph_shared->admission, storage));
		(void) ph_audit_init(ph_shared, storage);
	}
	ph_accounting_shmem_startup();
	ph_xact_origin_shmem_startup();
	LWLockRelease(AddinShmemInitLock);

	/* in the postmaster: restore the saved history, save it at exit */
	if (!IsUnderPostmaster)
	{
		if (!found)
			ph_history_load();
		on_shmem_exit(ph_shmem_shutdown, (Datum) 0);
	}
}

/* From _PG_init, when preloaded. */
void
ph_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ph_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ph_shmem_startup;
}

/*
 * The shared state, or an error saying the feature needs the library in
 * shared_preload_libraries.
 */
PhShared *
ph_shared_required(const char *what)
{
	if (ph_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires pool_health to be loaded via shared_preload_libraries",
						what),
				 errhint("Add pool_health to shared_preload_libraries in postgresql.conf and restart the server.")));
	return ph_shared;
}
