/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		pool_health's shared memory (shmem.c): its layout, the hooks that make
 *		it, and the error a feature raises without the preload.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_SHMEM_H
#define PH_SHMEM_H

#include "ph_model.h"
#include "admission.h"
#include "audit.h"
#include "history.h"
#include "policy.h"
#include "worker.h"

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
	PhHistory	history;
	PhPolicySet policy_set;
	PhAdmission admission;
	PhAuditRing worker_actions;
	PhAuditRing call_actions;
} PhShared;

extern PhShared *ph_shared;
extern void ph_shmem_install_hooks(void);
extern PhShared *ph_shared_required(const char *what);

#endif							/* PH_SHMEM_H */
