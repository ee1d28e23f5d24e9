/*-------------------------------------------------------------------------
 *
 * pileup_timing.c
 *		Compiled into both libraries that tools/bench pileup compares, and
 *		into nothing else: how long a backend held the lock manager's
 *		partition locks for the blocking counts of its evaluations.
 *
 * The bench copies this file into each build's src/ and compiles the
 * library with one of:
 *
 *	-Dpg_blocking_pids=ph_bench_pg_blocking_pids	(the baseline, which
 *		calls pg_blocking_pids() once per waiting backend): each call
 *		goes through the copy below of core's pg_blocking_pids()
 *		(lockfuncs.c), which times its GetBlockerStatusData(), the part
 *		that takes every partition, less what its allocations before
 *		taking them cost (the same allocations, timed apart);
 *
 *	-DLWLockAcquire=ph_bench_LWLockAcquire -DLWLockRelease=ph_bench_LWLockRelease
 *		(this tree, whose one pass takes the partitions itself, in order,
 *		and releases them in reverse): the time from taking partition 0
 *		to releasing it.
 *
 * pool_health_bench_lock_time() returns the time (us) and the number of
 * times the partitions were taken in this backend since its last call.
 *
 *-------------------------------------------------------------------------
 */
#undef pg_blocking_pids
#undef LWLockAcquire
#undef LWLockRelease

#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "utils/array.h"

static double held_us = 0;
static int64 holds = 0;
static int64 blocker_calls = 0;	/* of them, by GetBlockerStatusData() */
static instr_time held_since;

extern bool ph_bench_LWLockAcquire(LWLock *lock, LWLockMode mode);
extern void ph_bench_LWLockRelease(LWLock *lock);
extern Datum ph_bench_pg_blocking_pids(PG_FUNCTION_ARGS);

bool
ph_bench_LWLockAcquire(LWLock *lock, LWLockMode mode)
{
	if (lock == LockHashPartitionLockByIndex(0))
		INSTR_TIME_SET_CURRENT(held_since);
	return LWLockAcquire(lock, mode);
}

void
ph_bench_LWLockRelease(LWLock *lock)
{
	LWLockRelease(lock);
	if (lock == LockHashPartitionLockByIndex(0))
	{
		instr_time	now;

		INSTR_TIME_SET_CURRENT(now);
		INSTR_TIME_SUBTRACT(now, held_since);
		held_us += INSTR_TIME_GET_MICROSEC(now);
		holds++;
	}
}

/* core's pg_blocking_pids() (PostgreSQL 15 lockfuncs.c), timed */
Datum
ph_bench_pg_blocking_pids(PG_FUNCTION_ARGS)
{
	int			blocked_pid = PG_GETARG_INT32(0);
	Datum	   *arrayelems;
	int			narrayelems;
	BlockedProcsData *lockData;
	instr_time	start;
	instr_time	end;

	INSTR_TIME_SET_CURRENT(start);
	lockData = GetBlockerStatusData(blocked_pid);
	INSTR_TIME_SET_CURRENT(end);
	INSTR_TIME_SUBTRACT(end, start);
	held_us += INSTR_TIME_GET_MICROSEC(end);
	holds++;
	blocker_calls++;

	arrayelems = (Datum *) palloc(lockData->nlocks * sizeof(Datum));
	narrayelems = 0;
	for (int i = 0; i < lockData->nprocs; i++)
	{
		BlockedProcData *bproc = &lockData->procs[i];
		LockInstanceData *instances = &lockData->locks[bproc->first_lock];
		int		   *preceding_waiters = &lockData->waiter_pids[bproc->first_waiter];
		LockInstanceData *blocked_instance = NULL;
		int			conflictMask;

		for (int j = 0; j < bproc->num_locks; j++)
			if (instances[j].pid == bproc->pid)
				blocked_instance = &instances[j];
		if (blocked_instance == NULL)
			continue;
		conflictMask = GetLockTagsMethodTable(&blocked_instance->locktag)->
			conflictTab[blocked_instance->waitLockMode];
		for (int j = 0; j < bproc->num_locks; j++)
		{
			LockInstanceData *instance = &instances[j];

			if (instance == blocked_instance ||
				instance->leaderPid == blocked_instance->leaderPid)
				continue;
			if (conflictMask & instance->holdMask)
				 /* hard block */ ;
			else if (instance->waitLockMode != NoLock &&
					 (conflictMask & LOCKBIT_ON(instance->waitLockMode)))
			{
				bool		ahead = false;

				for (int k = 0; k < bproc->num_waiters && !ahead; k++)
					ahead = preceding_waiters[k] == instance->pid;
				if (!ahead)
					continue;
			}
			else
				continue;
			arrayelems[narrayelems++] = Int32GetDatum(instance->leaderPid);
		}
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(arrayelems, narrayelems, INT4OID,
										  sizeof(int32), true, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(pool_health_bench_lock_time);

/*
 * What GetBlockerStatusData() allocates before it takes the partitions,
 * in usec per call: the same allocations, 100 times.
 */
static double
blocker_allocation_us(void)
{
	instr_time	start;
	instr_time	end;

	INSTR_TIME_SET_CURRENT(start);
	for (int i = 0; i < 100; i++)
	{
		BlockedProcsData *data = palloc(sizeof(BlockedProcsData));

		data->procs = palloc(sizeof(BlockedProcData) * MaxBackends);
		data->locks = palloc(sizeof(LockInstanceData) * MaxBackends);
		data->waiter_pids = palloc(sizeof(int) * MaxBackends);
		pfree(data->procs);
		pfree(data->locks);
		pfree(data->waiter_pids);
		pfree(data);
	}
	INSTR_TIME_SET_CURRENT(end);
	INSTR_TIME_SUBTRACT(end, start);
	return INSTR_TIME_GET_MICROSEC(end) / 100;
}

/*
 * (held_us float8, holds bigint) since the last call, in this backend:
 * how long the partitions were held, and how many times they were taken.
 */
Datum
pool_health_bench_lock_time(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (blocker_calls > 0)
		held_us -= blocker_calls * blocker_allocation_us();
	values[0] = Float8GetDatum(held_us);
	values[1] = Int64GetDatum(holds);
	held_us = 0;
	holds = 0;
	blocker_calls = 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
