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


extern void ph_admission_shmem_request(void);
extern void ph_admission_shmem_startup(void);
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
