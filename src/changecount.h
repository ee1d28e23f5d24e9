/*-------------------------------------------------------------------------
 *
 * changecount.h
 *		The one protocol of pool_health's per-backend slots in shared memory
 *		(xact_origin.c's first statements, the accounting's published
 *		counters), as the server's backend status array has it
 *		(PGSTAT_BEGIN_WRITE_ACTIVITY): the slot's own backend writes between
 *		two increments of changecount, in a critical section, without a
 *		lock; a reader reads changecount, a read barrier, the fields, a read
 *		barrier, changecount again, and retries unless both were equal and
 *		even.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_CHANGECOUNT_H
#define PH_CHANGECOUNT_H

#include "miscadmin.h"
#include "port/atomics.h"

#define PH_BEGIN_WRITE(slot) \
	do { \
		START_CRIT_SECTION(); \
		(slot)->changecount++; \
		pg_write_barrier(); \
	} while (0)

#define PH_END_WRITE(slot) \
	do { \
		pg_write_barrier(); \
		(slot)->changecount++; \
		Assert(((slot)->changecount & 1) == 0); \
		END_CRIT_SECTION(); \
	} while (0)

#endif							/* PH_CHANGECOUNT_H */
