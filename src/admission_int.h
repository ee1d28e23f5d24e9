/*-------------------------------------------------------------------------
 *
 * admission_int.h
 *		Admission control's private shared-memory layout and the functions
 *		its files share (admission.c: the login hook; admission_counters.c:
 *		the area, the worker's side and the readers; login_rate.c: the
 *		login rate limit).  No other module includes it: the others use
 *		admission.h.
 *
 * The area "pool_health admission" (admission_counters.c creates it):
 * AdmissionShared, then its quota counters, its list of reserves and one
 * counted[] entry per PGPROC.  Lock rules at each field below.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_ADMISSION_INT_H
#define PH_ADMISSION_INT_H

#include "port/atomics.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "ph_model.h"

#define COUNTED(pid, state)	(((uint64) (uint32) (pid) << 32) | (uint32) (state))
#define COUNTED_PID(v)		((int) (uint32) ((v) >> 32))
#define COUNTED_STATE(v)	((uint32) ((v) & 0xFFFFFFFF))

/*
 * A quota counter.  Keyed by policy name, so that a republication keeps
 * what was counted.  policy and in_use are written by the worker under the
 * policy set's lock, exclusive (ph_admission_assign_counters, called back
 * by ph_policy_set_publish), and read under it; the counts are atomics,
 * changed without the lock by connecting and exiting backends and by the
 * worker.
 */
typedef struct QuotaCounter
{
	NameData	policy;
	bool		in_use;
	pg_atomic_uint32 connections;	/* sessions counted in it now */
	pg_atomic_uint64 refused;	/* connections refused since it was made */
	pg_atomic_uint64 refused_by[PH_REFUSAL_REASONS];	/* of them, by reason */

	/*
	 * The login rate limit's token bucket, as a "theoretical arrival time"
	 * (GCRA): a login at time t takes a token if login_tat - t is at most
	 * (login_burst - 1) emission intervals, and moves login_tat one
	 * interval past max(login_tat, t).  One word, changed by
	 * compare-and-swap: no lock.  0: a full bucket.
	 */
	pg_atomic_uint64 login_tat;
	pg_atomic_uint32 login_delayed; /* refused logins held back now */

	/*
	 * Non-zero while sessions counted in it may be sessions its policy no
	 * longer governs: its policy's match columns or priority changed at a
	 * publication, and the worker has not yet re-homed them.  Meanwhile
	 * its reserve counts as wholly unused (unused_reserves()): the old
	 * sessions cannot make it look used.  Only the worker writes it (set
	 * at publication, cleared by ph_admission_rehome()); an atomic, read
	 * without a lock.
	 */
	pg_atomic_uint32 match_changed;
} QuotaCounter;

/*
 * A policy with a reserve, as published (written with the set's lock held
 * exclusively, read under it held shared).
 */
typedef struct ReservedCounter
{
	int32		counter;		/* its quota counter, or -1 (none free) */
	int32		reserve;		/* its reserve_connections, > 0 */
	NameData	policy;
} ReservedCounter;

/*
 * counted[] holds, per PGPROC number, the pid of the client backend in it
 * (high 32 bits) and the counter it is counted in (low 32 bits: 0 none,
 * k + 1 counter k, COUNTED_EXITED once it has given its count back).
 * Only the backend itself (at login and exit) and the worker (by
 * compare-and-swap on an entry with that backend's pid) change an entry.
 */
#define COUNTED_EXITED	0xFFFFFFFF

/*
 * clients packs two counts: the client backends past authentication (low
 * 32 bits) and how many times that count has changed (high 32 bits), so
 * that a reader can tell whether it changed while it read the quota
 * counters (unused_reserves()).  One atomic add per login and exit.
 */
#define CLIENTS_COUNT(v)	((uint32) ((v) & 0xFFFFFFFF))
#define CLIENTS_ARRIVE		((UINT64CONST(1) << 32) + 1)
#define CLIENTS_LEAVE		((UINT64CONST(1) << 32) - 1)

typedef struct AdmissionShared
{
	pg_atomic_uint64 clients;	/* see CLIENTS_* above */
	pg_atomic_uint32 moving;	/* odd while the worker moves a session
								 * between counters (only it writes) */
	int			ncounters;		/* fixed: 2 x pool_health.max_policies */
	QuotaCounter *counters;		/* fixed; see QuotaCounter */
	int			nreserved;		/* the set's lock */
	ReservedCounter *reserved;	/* fixed, max_policies entries; entries: the
								 * set's lock */
	int			nprocs;			/* fixed */
	pg_atomic_uint64 *counted;	/* fixed; atomics, see above */
} AdmissionShared;

extern AdmissionShared *ph_adm;

/* admission_counters.c */
extern pg_atomic_uint64 *ph_adm_counted_entry(int procno);
extern void ph_adm_release_count(uint32 state);
extern int	ph_adm_reserve_counted(int c);
extern QuotaCounter *ph_adm_counter_of(const PhPolicy *policy);

/* login_rate.c */
extern int64 ph_adm_take_login_token(QuotaCounter *counter, const PhPolicy *p,
									 TimestampTz now);
extern int64 ph_adm_hold_back_login(QuotaCounter *counter, int64 retry_after);

#endif							/* PH_ADMISSION_INT_H */
