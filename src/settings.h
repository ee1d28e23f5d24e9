/*-------------------------------------------------------------------------
 *
 * settings.h
 *		The settings (pool_health.c, _PG_init) and what the modules read of
 *		them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_SETTINGS_H
#define PH_SETTINGS_H

#include "ph_model.h"

extern int	ph_degraded_percent;
extern int	ph_critical_percent;
extern int	ph_leak_after_ms;
extern int	ph_lock_wait_after_ms;
extern char *ph_database;
extern int	ph_sample_interval_ms;
extern char *ph_notify_channel;
extern int	ph_history_raw_samples;
extern int	ph_history_minutes;
extern int	ph_forecast_window_s;
extern int	ph_enforce;
extern char *ph_protected_roles;
extern int	ph_max_policies;
extern int	ph_audit_memory;
extern bool ph_admission;
extern int	ph_metrics_top_groups;
extern int	ph_metrics_min_age_s;
extern char *ph_metrics_application_pattern;
extern int	ph_first_query_size;
extern bool ph_notify_statements;
extern int	ph_max_groups;
extern int	ph_app_history_minutes;
extern int	ph_advice_window_minutes;
extern int	ph_client_pool_size;
extern bool ph_preloaded;
extern bool ph_role_name_protected(const char *name);
extern Oid *ph_protected_role_oids(int *n);

/* pool_health.enforce */
#define PH_ENFORCE_OFF		0
#define PH_ENFORCE_DRY_RUN	1
#define PH_ENFORCE_ON		2

#endif							/* PH_SETTINGS_H */
