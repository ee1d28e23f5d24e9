/*-------------------------------------------------------------------------
 *
 * history.h
 *		The connection history (history.c): raw samples and minutes in two
 *		rings in shared memory, saved at a clean shutdown and loaded at start.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HISTORY_H
#define PH_HISTORY_H

#include "ph_model.h"

/* One raw sample of the history. */
typedef struct PhSample
{
	TimestampTz at;
	int32		usable;
	int32		used;
	int32		active;
	int32		idle;
	int32		idle_in_transaction;
	int32		waiting;
	int32		leaked;
	int32		terminated;		/* sessions ended since the previous sample */
	int32		refused;		/* connections refused since then */
	uint8		level;			/* PhLevel */
} PhSample;

/* One minute of the history, aggregated from its raw samples. */
typedef struct PhMinute
{
	TimestampTz at;				/* start of the minute */
	int32		samples;
	int32		usable;
	int32		used_min;
	int32		used_max;
	int64		used_sum;
	int64		active_sum;
	int64		idle_sum;
	int64		idle_in_transaction_sum;
	int32		waiting_max;
	int32		leaked_max;
	int32		terminated;
	int32		refused;
	uint8		worst_level;	/* PhLevel */
} PhMinute;


extern void ph_history_shmem_request(void);
extern void ph_history_shmem_startup(void);
extern void ph_history_restore(void);
extern void ph_history_append(const PhSample *sample);
extern void ph_history_copy(const char *what, PhSample **raw, int *nraw,
							PhMinute **minutes, int *nminutes);
extern void ph_history_count_terminations(uint64 n);
extern void ph_history_count_refusal(void);
extern void ph_history_totals(uint64 *terminations, uint64 *refusals);

#endif							/* PH_HISTORY_H */
