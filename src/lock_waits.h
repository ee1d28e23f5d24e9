/*-------------------------------------------------------------------------
 *
 * lock_waits.h
 *		Blocking counts of a snapshot, from one look at the lock table
 *		(lock_waits.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_LOCK_WAITS_H
#define PH_LOCK_WAITS_H

#include "ph_model.h"

extern void ph_lock_waits_compute(PhSnapshot *snap);

#endif							/* PH_LOCK_WAITS_H */
