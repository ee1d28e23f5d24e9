/*-------------------------------------------------------------------------
 *
 * admission.h
 *		Admission (admission.c): quota counters kept exact at login and exit,
 *		re-homed by the worker from evaluations; the login hook.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_ADMISSION_H
#define PH_ADMISSION_H

#include "ph_model.h"

/*
 * A quota counter (admission.c).  Keyed by policy name, so that a
 * republication keeps what was counted.  policy and in_use are written by
 * the worker under ph_shared->lock (exclusive) and read under it; the
 * counts are atomics, changed without the lock by connecting and exiting
 * backends and by the worker.
 */
typedef struct PhQuotaCounter
{
	NameData	policy;
	bool		in_use;
	pg_atomic_uint32 connections;	/* sessions counted in it now */
	pg_atomic_uint64 refused;	/* connections refused since it was made */
} PhQuotaCounter;

/*
 * An application_name given by ALTER ROLE/DATABASE ... SET, as the worker
 * publishes it for the login path (which cannot read pg_db_role_setting
 * before its database is selected).
 */
typedef struct PhRoleSetting
{
	NameData	database;		/* empty: every database */
	Oid			role;			/* InvalidOid: every role */
	char		application_name[NAMEDATALEN * 4];	/* as set, not cleaned */
} PhRoleSetting;

#define PH_MAX_ROLE_SETTINGS 256

/*
 * Admission state (admission.c): atomics only, no lock.  counted[] holds,
 * per PGPROC number, the pid of the client backend in it (high 32 bits)
 * and the counter it is counted in (low 32 bits: 0 none, k + 1 counter k,
 * PH_COUNTED_EXITED once it has given its count back).  Only the backend
 * itself (at login and exit) and the worker (by compare-and-swap on an
 * entry with that backend's pid) change an entry.
 */
#define PH_COUNTED_EXITED	0xFFFFFFFF
typedef struct PhAdmission
{
	pg_atomic_uint32 clients;	/* client backends past authentication */
	int			ncounters;		/* fixed: 2 x pool_health.max_policies */
	PhQuotaCounter *counters;
	int			nprocs;			/* fixed */
	pg_atomic_uint64 *counted;
	/* written by the worker under ph_shared->lock, read under it */
	int			nsettings;
	PhRoleSetting settings[PH_MAX_ROLE_SETTINGS];
} PhAdmission;

extern Size ph_admission_shmem_size(void);
extern char *ph_admission_init(PhAdmission *admission, char *storage);
extern void ph_admission_install_hook(void);
extern void ph_admission_assign_counters(PhPolicy *items, int count,
										 const PhPolicy *old, int nold,
										 bool *named);
extern int	ph_admission_ncounters(void);
extern void ph_admission_rehome(const PhEvaluation *eval);
extern void ph_admission_publish_settings(void);
extern uint32 ph_admission_counted(const PhPolicy *policy);
extern uint64 ph_admission_refused(const PhPolicy *policy);

#endif							/* PH_ADMISSION_H */
