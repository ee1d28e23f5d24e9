/*-------------------------------------------------------------------------
 *
 * alerts.h
 *		Alerts on level changes (alerts.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_ALERTS_H
#define PH_ALERTS_H

#include "ph_model.h"

extern void ph_alert_level_change(PhLevel old_level, const PhUsage *usage,
								  bool can_notify);

#endif							/* PH_ALERTS_H */
