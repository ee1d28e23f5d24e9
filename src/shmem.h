/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		pool_health's shared memory (shmem.c): the hooks that have each
 *		module make its own area, and the error a feature raises without
 *		the preload.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_SHMEM_H
#define PH_SHMEM_H

#include "ph_model.h"

extern void ph_shmem_install_hooks(void);
extern bool ph_shmem_ready(void);
extern void ph_require_preload(const char *what);

#endif							/* PH_SHMEM_H */
