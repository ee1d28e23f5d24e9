/*-------------------------------------------------------------------------
 *
 * app_stats.c
 *		The SQL functions behind pool_health.application_stats and
 *		pool_health.application_history, and
 *		pool_health.reset_application_stats(): copies of the per-application
 *		accounting (app_readers.c), formatted; and the helpers the advice
 *		shares (app_advice.h): the error when the accounting is off, the
 *		visibility rule, a role's name.
 *
 * Rows follow pg_stat_activity's visibility rule (pg_read_all_stats, or
 * the privileges of the group's role; "(other)" needs pg_read_all_stats).
 *
 * No shared state: only copies, through app_accounting.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "app_accounting.h"
#include "app_advice.h"
#include "backend_snapshot.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"
#include "views.h"

PG_FUNCTION_INFO_V1(pool_health_get_application_stats);
PG_FUNCTION_INFO_V1(pool_health_get_application_history);
PG_FUNCTION_INFO_V1(pool_health_reset_application_stats);

/*
 * An error unless the library is preloaded with the accounting on
 * (pool_health.max_groups > 0).
 */
void
ph_advice_accounting_required(void)
{
	ph_require_preload("per-application accounting");
	if (!ph_accounting_enabled())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("per-application accounting is disabled"),
				 errhint("Set pool_health.max_groups above 0 and restart the server.")));
}

/* May the current user see a group of this role? */
bool
ph_advice_group_visible(bool other, Oid role_id)
{
	if (other)
		return has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	return ph_role_visible(role_id);
}

/* The role's current name, or the one it logged in with (to show). */
char *
ph_advice_role_name(Oid role_id, const char *stored)
{
	char	   *name = GetUserNameFromId(role_id, true);

	return ph_name_text(name != NULL ? name : stored);
}

/* ---- application_stats ---- */

#define STATS_COLS 19

Datum
pool_health_get_application_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhAppGroupCopy *groups;
	int			n;

	ph_advice_accounting_required();
	groups = ph_accounting_copy(true, &n);

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		PhAppGroupCopy *g = &groups[i];
		Datum		values[STATS_COLS];
		bool		nulls[STATS_COLS];
		static const double quantiles[] = {0.5, 0.95, 0.99};

		if (!ph_advice_group_visible(g->other, g->role_id))
			continue;
		memset(nulls, 0, sizeof(nulls));
		if (g->other)
			nulls[0] = nulls[1] = true;
		else
		{
			values[0] = CStringGetTextDatum(ph_name_text(g->database));
			values[1] = CStringGetTextDatum(ph_advice_role_name(g->role_id, g->role));
		}
		values[2] = CStringGetTextDatum(g->application_name);
		values[3] = Int32GetDatum((int32) g->connections);
		values[4] = Int32GetDatum((int32) g->connections_peak);
		values[5] = Int32GetDatum((int32) g->in_xact);
		values[6] = Int32GetDatum((int32) g->in_xact_peak);
		values[7] = Int64GetDatum((int64) g->xacts);
		values[8] = ph_usec_interval((int64) g->xact_time_us);
		for (int q = 0; q < 3; q++)
		{
			int64		v = ph_hist_quantile(g->histogram, quantiles[q], (int64) g->xact_max_us);

			if (v < 0)
				nulls[9 + q] = true;
			else
				values[9 + q] = ph_usec_interval(v);
		}
		if (g->xacts == 0)
			nulls[12] = true;
		else
			values[12] = ph_usec_interval((int64) g->xact_max_us);
		values[13] = ph_usec_interval((int64) g->idle_in_xact_us);
		if (g->xact_time_us == 0)
			nulls[14] = true;
		else
			values[14] = Float8GetDatum(100.0 * (double) g->idle_in_xact_us /
										(double) g->xact_time_us);
		values[15] = Int64GetDatum((int64) g->terminated);
		values[16] = Int64GetDatum((int64) g->refused);
		values[17] = TimestampTzGetDatum(g->since);
		values[18] = BoolGetDatum(g->other);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---- application_history ---- */

#define HISTORY_COLS 11

Datum
pool_health_get_application_history(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	PhAppMinute *rows;

	ph_advice_accounting_required();
	/* the retention, even while the ring has room for more */
	rows = ph_accounting_copy_minutes(GetCurrentTimestamp() -
									  (int64) ph_app_history_minutes * USECS_PER_MINUTE, &n);
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		PhAppMinute *r = &rows[i];
		Datum		values[HISTORY_COLS];
		bool		nulls[HISTORY_COLS];

		if (!ph_advice_group_visible(r->other, r->role_id))
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = TimestampTzGetDatum(r->at);
		if (r->other)
			nulls[1] = nulls[2] = true;
		else
		{
			values[1] = CStringGetTextDatum(ph_name_text(r->database));
			values[2] = CStringGetTextDatum(ph_advice_role_name(r->role_id, ""));
		}
		values[3] = CStringGetTextDatum(r->application_name);
		values[4] = Int32GetDatum(r->connections_max);
		values[5] = Int32GetDatum(r->in_xact_max);
		values[6] = Int64GetDatum(r->xacts);
		values[7] = ph_usec_interval(r->xact_time_us);
		if (r->xact_p99_us < 0)
			nulls[8] = true;
		else
			values[8] = ph_usec_interval(r->xact_p99_us);
		values[9] = ph_usec_interval(r->idle_in_xact_us);
		values[10] = BoolGetDatum(r->other);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ---- reset ---- */

Datum
pool_health_reset_application_stats(PG_FUNCTION_ARGS)
{
	ph_advice_accounting_required();
	ph_accounting_reset();
	PG_RETURN_VOID();
}
