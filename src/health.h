/*-------------------------------------------------------------------------
 *
 * health.h
 *		status(), ping() and metrics() (health.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HEALTH_H
#define PH_HEALTH_H

#include "ph_model.h"

extern char *ph_status_json(const PhEvaluation *eval);

#endif							/* PH_HEALTH_H */
