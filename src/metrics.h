/*-------------------------------------------------------------------------
 *
 * metrics.h
 *		The Prometheus text exposition of an evaluation (metrics.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_METRICS_H
#define PH_METRICS_H

#include "ph_model.h"

extern char *ph_metrics_text(const PhEvaluation *eval);

#endif							/* PH_METRICS_H */
