/*-------------------------------------------------------------------------
 *
 * enforce.h
 *		Acting on one session (enforce.c): privileges, re-check, signal.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_ENFORCE_H
#define PH_ENFORCE_H

#include "ph_model.h"
#include "audit.h"

extern bool ph_may_signal(Oid actor, Oid role_id);
extern bool ph_enforce_signal(const PhBackend *be, const PhPolicy *policy,
							  PhLimit limit, int64 limit_usec, const char *label,
							  bool terminate, bool dry_run, const char *source,
							  PhAuditEntry *entry);

extern TimestampTz ph_enforce_due(const PhEvaluation *eval);

#endif							/* PH_ENFORCE_H */
