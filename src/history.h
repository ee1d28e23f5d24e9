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

/*
 * The history rings (history.c), under ph_shared->lock: exclusive to
 * append, shared to copy out.  raw[] and minutes[] follow PhShared in
 * shared memory; each ring holds its newest "count" entries, the next one
 * going to [next].
 */
typedef struct PhHistory
{
	int			raw_capacity;	/* fixed at start */
	int			raw_count;
	int			raw_next;
	int			minute_capacity;	/* fixed at start */
	int			minute_count;
	int			minute_next;
	PhMinute	current;		/* the minute being aggregated (samples 0: none) */
	PhSample   *raw;
	PhMinute   *minutes;
} PhHistory;

extern Size ph_history_shmem_size(void);
extern char *ph_history_init(PhHistory *history, char *storage);
extern void ph_history_append(PhHistory *history, const PhSample *sample);
extern int	ph_history_copy_raw(const PhHistory *history, PhSample *out);
extern int	ph_history_copy_minutes(const PhHistory *history, PhMinute *out);
extern void ph_history_save(void);
extern void ph_history_load(void);

#endif							/* PH_HISTORY_H */
