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

/*
 * The HTTP worker's counters (http.c writes them, health.c reads them):
 * atomics, no lock.
 */
typedef struct PhShared
{
	pg_atomic_uint32 http_pid;	/* the HTTP worker (http.c), 0 if none */
	pg_atomic_uint64 http_requests; /* requests it answered */
} PhShared;

extern PhShared *ph_shared;
extern void ph_shmem_install_hooks(void);
extern bool ph_shmem_ready(void);
extern void ph_require_preload(const char *what);

#endif							/* PH_SHMEM_H */
