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

/* Why admission refused a connection (per-policy counts). */
typedef enum PhRefusal
{
	PH_REFUSAL_QUOTA = 0,		/* max_connections */
	PH_REFUSAL_REFUSE_AT,		/* refuse_at */
	PH_REFUSAL_RESERVE,			/* another policy's reserve_connections */
	PH_REFUSAL_RATE,			/* max_logins_per_second, login_burst */
	PH_REFUSAL_REASONS
} PhRefusal;

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
extern uint64 ph_admission_refused_by(const PhPolicy *policy, PhRefusal reason);
extern int	ph_admission_reserve_unused(const PhPolicy *policy);
extern double ph_admission_login_tokens(const PhPolicy *policy, TimestampTz now);
extern const char *ph_refusal_name(PhRefusal reason);

#endif							/* PH_ADMISSION_H */
