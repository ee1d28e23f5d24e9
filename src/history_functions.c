/*-------------------------------------------------------------------------
 *
 * history_functions.c
 *		The functions behind pool_health.history and pool_health.forecast:
 *		the worker's samples copied out of the rings (history.c), then
 *		formatted.  They need the preload.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "evaluate.h"
#include "history.h"
#include "settings.h"
#include "shmem.h"
#include "views.h"

PG_FUNCTION_INFO_V1(pool_health_get_history);
PG_FUNCTION_INFO_V1(pool_health_get_forecast);

typedef enum HistoryResolution
{
	HISTORY_RAW,
	HISTORY_MINUTE,
	HISTORY_AUTO
} HistoryResolution;

#define HISTORY_COLS 17

static void
put_history_row(ReturnSetInfo *rsinfo, TimestampTz at, const char *resolution,
				int samples, int usable, int used, int used_min, double used_avg,
				int used_max, int active, int idle, int idle_in_transaction,
				int waiting, int leaked, int terminated, int refused, PhLevel level)
{
	Datum		values[HISTORY_COLS];
	bool		nulls[HISTORY_COLS];

	memset(nulls, false, sizeof(nulls));
	values[0] = TimestampTzGetDatum(at);
	values[1] = CStringGetTextDatum(resolution);
	values[2] = Int32GetDatum(samples);
	values[3] = Int32GetDatum(usable);
	values[4] = Int32GetDatum(used);
	values[5] = Int32GetDatum(used_min);
	values[6] = Float8GetDatum(used_avg);
	values[7] = Int32GetDatum(used_max);
	values[8] = Int32GetDatum(active);
	values[9] = Int32GetDatum(idle);
	values[10] = Int32GetDatum(idle_in_transaction);
	values[11] = Int32GetDatum(waiting);
	values[12] = Int32GetDatum(leaked);
	values[13] = Int32GetDatum(terminated);
	values[14] = Int32GetDatum(refused);
	values[15] = Float8GetDatum(usable > 0 ? 100.0 * used / usable : 100.0);
	values[16] = CStringGetTextDatum(ph_level_name(level));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * get_history(since, until, resolution): the history between two times
 * (NULL: unbounded), as raw samples, minutes, or 'auto' (minutes older
 * than the oldest raw sample, then the raw samples).  Minute rows show
 * the peak of used, the average of the per-state counts, the peak of
 * waiting and leaked, the sums of terminated and refused, and the worst
 * level.
 */
Datum
pool_health_get_history(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz since = PG_ARGISNULL(0) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz until = PG_ARGISNULL(1) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(1);
	char	   *resolution_name = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	HistoryResolution resolution;
	PhSample   *raw;
	PhMinute   *minutes;
	int			nraw;
	int			nminutes;
	TimestampTz oldest_raw;

	if (resolution_name != NULL && strcmp(resolution_name, "raw") == 0)
		resolution = HISTORY_RAW;
	else if (resolution_name != NULL && strcmp(resolution_name, "minute") == 0)
		resolution = HISTORY_MINUTE;
	else if (resolution_name != NULL && strcmp(resolution_name, "auto") == 0)
		resolution = HISTORY_AUTO;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid history resolution: %s",
						resolution_name ? quote_literal_cstr(resolution_name) : "NULL"),
				 errhint("Use raw, minute or auto.")));

	InitMaterializedSRF(fcinfo, 0);

	ph_history_copy("pool_health history", &raw, &nraw, &minutes, &nminutes);

	oldest_raw = nraw > 0 ? raw[0].at : DT_NOEND;
	if (resolution != HISTORY_RAW)
	{
		for (int i = 0; i < nminutes; i++)
		{
			const PhMinute *m = &minutes[i];
			TimestampTz end = m->at + USECS_PER_MINUTE;

			/* no division by zero, whatever is in the rings */
			if (end <= since || m->at > until || m->samples <= 0)
				continue;
			if (resolution == HISTORY_AUTO && end > oldest_raw)
				break;
			put_history_row(rsinfo, m->at, "minute", m->samples, m->usable,
							m->used_max, m->used_min,
							(double) m->used_sum / m->samples, m->used_max,
							(int) (m->active_sum / m->samples),
							(int) (m->idle_sum / m->samples),
							(int) (m->idle_in_transaction_sum / m->samples),
							m->waiting_max, m->leaked_max, m->terminated,
							m->refused, (PhLevel) m->worst_level);
		}
	}
	if (resolution != HISTORY_MINUTE)
	{
		for (int i = 0; i < nraw; i++)
		{
			const PhSample *r = &raw[i];

			if (r->at < since || r->at > until)
				continue;
			put_history_row(rsinfo, r->at, "raw", 1, r->usable, r->used,
							r->used, r->used, r->used, r->active, r->idle,
							r->idle_in_transaction, r->waiting, r->leaked,
							r->terminated, r->refused, (PhLevel) r->level);
		}
	}
	return (Datum) 0;
}

#define FORECAST_COLS 9

/* The furthest time to exhaustion the forecast reports: 10 years. */
#define FORECAST_HORIZON_USEC (INT64CONST(3650) * USECS_PER_DAY)

/*
 * get_forecast(): a least-squares line through used over the last
 * pool_health.forecast_window of history (raw samples when they cover it,
 * else minute averages), and when it reaches usable.  The time to
 * exhaustion is NULL when usage is not rising, or so slowly that it would
 * take more than 10 years.
 */
Datum
pool_health_get_forecast(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[FORECAST_COLS];
	bool		nulls[FORECAST_COLS];
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz since = now - (int64) ph_forecast_window_s * USECS_PER_SEC;
	PhSample   *raw;
	PhMinute   *minutes;
	int			nraw;
	int			nminutes;
	const char *resolution = "raw";
	int			n = 0;
	double		sum_t = 0, sum_y = 0, sum_tt = 0, sum_ty = 0;
	TimestampTz first = 0, last = 0;
	int			used = 0, usable = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	ph_history_copy("pool_health.forecast", &raw, &nraw, &minutes, &nminutes);

	/*
	 * Raw samples, unless they do not reach back over the window and the
	 * minutes hold older data than they do.
	 */
	if (nraw == 0 ||
		(raw[0].at > since && nminutes > 0 &&
		 minutes[0].at + USECS_PER_MINUTE <= raw[0].at))
		resolution = "minute";

#define ADD_POINT(at_, y_, used_, usable_) \
	do { \
		double t_ = (double) ((at_) - since) / USECS_PER_SEC; \
		if (n == 0) first = (at_); \
		last = (at_); used = (used_); usable = (usable_); \
		n++; sum_t += t_; sum_y += (y_); sum_tt += t_ * t_; sum_ty += t_ * (y_); \
	} while (0)

	if (strcmp(resolution, "raw") == 0)
	{
		for (int i = 0; i < nraw; i++)
			if (raw[i].at >= since)
				ADD_POINT(raw[i].at, (double) raw[i].used, raw[i].used, raw[i].usable);
	}
	else
	{
		for (int i = 0; i < nminutes; i++)
			if (minutes[i].at + USECS_PER_MINUTE > since && minutes[i].samples > 0)
				ADD_POINT(minutes[i].at + USECS_PER_MINUTE / 2,
						  (double) minutes[i].used_sum / minutes[i].samples,
						  minutes[i].used_max, minutes[i].usable);
	}
#undef ADD_POINT

	memset(nulls, true, sizeof(nulls));
	values[2] = Int32GetDatum(n);
	nulls[2] = false;
	values[3] = CStringGetTextDatum(resolution);
	nulls[3] = false;
	if (n > 0)
	{
		values[0] = TimestampTzGetDatum(first);
		values[1] = TimestampTzGetDatum(last);
		values[4] = Int32GetDatum(used);
		values[5] = Int32GetDatum(usable);
		nulls[0] = nulls[1] = nulls[4] = nulls[5] = false;
	}
	if (n >= 2 && n * sum_tt - sum_t * sum_t > 0)
	{
		double		slope = (n * sum_ty - sum_t * sum_y) / (n * sum_tt - sum_t * sum_t);

		values[6] = Float8GetDatum(slope * 60.0);
		nulls[6] = false;
		if (used >= usable)
		{
			values[7] = ph_usec_interval(0);
			values[8] = TimestampTzGetDatum(now);
			nulls[7] = nulls[8] = false;
		}
		else if (slope > 0 &&
				 (usable - used) / slope * USECS_PER_SEC < (double) FORECAST_HORIZON_USEC)
		{
			/* beyond the horizon, usage is not rising in any useful sense */
			int64		usec = (int64) ((usable - used) / slope * USECS_PER_SEC);

			values[7] = ph_usec_interval(usec);
			values[8] = TimestampTzGetDatum(now + usec);
			nulls[7] = nulls[8] = false;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

