/*-------------------------------------------------------------------------
 *
 * evaluate.h
 *		One evaluation of a snapshot (evaluate.c), and the words and names of
 *		its values.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_EVALUATE_H
#define PH_EVALUATE_H

#include "ph_model.h"

extern void ph_evaluate(PhEvaluation *eval, int flags);
extern void ph_evaluate_with(PhEvaluation *eval, const PhPolicies *policies,
							 int flags);
extern PhLevel ph_capacity_level(int used, int usable);
extern char *ph_usage_words(int used, int usable);
extern PhThrottle ph_throttle_advice(const PhUsage *usage, int *new_connections);
extern const char *ph_level_name(PhLevel level);
extern const char *ph_leak_name(PhLeak leak);
extern const char *ph_throttle_name(PhThrottle throttle);
extern const char *ph_exemption_name(PhExemption exemption);
extern char *ph_duration_text(int64 usec);

#endif							/* PH_EVALUATE_H */
