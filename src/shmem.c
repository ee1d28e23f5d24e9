/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		pool_health's shared memory: the shmem hooks, which ask every
 *		module for its own area and create it, and the error a feature
 *		that needs it raises without the preload.
 *
 * Each module owns its area ("pool_health <module>", ShmemInitStruct), its
 * layout and its lock, stated field by field in its .c file: history.c,
 * worker_state.c, policy_set.c, admission.c, login_name.c, audit_memory.c,
 * app_accounting_shmem.c, xact_origin.c, http.c.  This file holds no
 * shared state of its own.
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
#include "http.h"
#include "login_name.h"
#include "policy.h"
#include "shmem.h"
#include "worker.h"
#include "xact_origin.h"

static bool shmem_ready = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
ph_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	ph_history_shmem_request();
	ph_worker_shmem_request();
	ph_policy_set_shmem_request();
	ph_admission_shmem_request();
	ph_login_settings_shmem_request();
	ph_audit_shmem_request();
	ph_accounting_shmem_request();
	ph_xact_origin_shmem_request();
	ph_http_shmem_request();
}

static void
ph_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ph_history_shmem_startup();
	ph_worker_shmem_startup();
	ph_policy_set_shmem_startup();
	ph_admission_shmem_startup();
	ph_login_settings_shmem_startup();
	ph_audit_shmem_startup();
	ph_accounting_shmem_startup();
	ph_xact_origin_shmem_startup();
	ph_http_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
	ph_history_restore();
	shmem_ready = true;
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

/* Is pool_health's shared memory there (the library preloaded)? */
bool
ph_shmem_ready(void)
{
	return shmem_ready;
}

/*
 * The error a feature (what) raises when it needs the library in
 * shared_preload_libraries and it is not there.
 */
void
ph_require_preload(const char *what)
{
	if (!shmem_ready)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires pool_health to be loaded via shared_preload_libraries",
						what),
				 errhint("Add pool_health to shared_preload_libraries in postgresql.conf and restart the server.")));
}
