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



extern void ph_admission_shmem_request(void);
extern void ph_admission_shmem_startup(void);
extern void ph_admission_install_hook(void);
extern void ph_admission_assign_counters(PhPolicy *items, int count,
										 const PhPolicy *old, int nold,
										 bool *named);
extern int	ph_admission_ncounters(void);
extern void ph_admission_rehome(const PhEvaluation *eval);
extern uint32 ph_admission_counted(const PhPolicy *policy);
extern uint64 ph_admission_refused(const PhPolicy *policy);

#endif							/* PH_ADMISSION_H */
