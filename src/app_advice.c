/*-------------------------------------------------------------------------
 *
 * app_advice.c
 *		The SQL side of the per-application accounting (app_accounting.c):
 *		pool_health.application_stats, pool_health.application_history,
 *		pool_health.pool_advice and pool_health.reset_application_stats().
 *
 * The advice, per group, over pool_health.advice_window (at most the
 * history's retention), from the closed minutes and the current one:
 *	connections_max	 the most connections the group held at once
 *	in_xact_max		 the most of them in a transaction at once (exact)
 *	in_xact_p99		 the 99th percentile of the per-minute maxima
 *	in_xact_mean	 Little's law: total transaction time / elapsed time,
 *					 the connections its transactions keep busy on average
 *	suggested_pool_size	max(1, ceil(1.25 * in_xact_max)): what the
 *					 measured concurrency needs, with 25 % headroom
 *	excess_connections	connections_max - in_xact_max: held beyond what
 *					 its transactions ever used at once
 * and a text naming what to change.  The "(all)" row sums per minute and
 * compares the sum of the suggested sizes with the usable connections.
 *
 * Rows follow pg_stat_activity's visibility rule (pg_read_all_stats, or
 * the privileges of the group's role; "(other)" needs pg_read_all_stats).
 *
 * No shared state but through app_accounting.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "pool_health.h"

PG_FUNCTION_INFO_V1(pool_health_get_application_stats);
PG_FUNCTION_INFO_V1(pool_health_get_application_history);
PG_FUNCTION_INFO_V1(pool_health_get_pool_advice);
PG_FUNCTION_INFO_V1(pool_health_reset_application_stats);

/* share of transaction time spent idle in them from which advice says so */
#define IDLE_SHARE_ADVICE 20.0

static PhAccounting *
accounting_required(void)
{
	(void) ph_shared_required("per-application accounting");
	if (ph_accounting() == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("per-application accounting is disabled"),
				 errhint("Set pool_health.max_groups above 0 and restart the server.")));
	return ph_accounting();
}


/* May the current user see a group of this role? */
static bool
group_visible(bool other, Oid role_id)
{
	if (other)
		return has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	return ph_role_visible(role_id);
}

/* The role's current name, or the one it logged in with (to show). */
static char *
role_name(Oid role_id, const char *stored)
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
	PhAccounting *acct = accounting_required();
	PhAppGroupCopy *groups = palloc(sizeof(PhAppGroupCopy) * acct->ngroups);
	int			n = ph_accounting_copy(groups, true);

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		PhAppGroupCopy *g = &groups[i];
		Datum		values[STATS_COLS];
		bool		nulls[STATS_COLS];
		static const double quantiles[] = {0.5, 0.95, 0.99};

		if (!group_visible(g->other, g->role_id))
			continue;
		memset(nulls, 0, sizeof(nulls));
		if (g->other)
			nulls[0] = nulls[1] = true;
		else
		{
			values[0] = CStringGetTextDatum(ph_name_text(g->database));
			values[1] = CStringGetTextDatum(role_name(g->role_id, g->role));
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

	(void) accounting_required();
	/* the retention, even while the ring has room for more */
	rows = ph_accounting_copy_minutes(GetCurrentTimestamp() -
									  (int64) ph_app_history_minutes * USECS_PER_MINUTE, &n);
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		PhAppMinute *r = &rows[i];
		Datum		values[HISTORY_COLS];
		bool		nulls[HISTORY_COLS];

		if (!group_visible(r->other, r->role_id))
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = TimestampTzGetDatum(r->at);
		if (r->other)
			nulls[1] = nulls[2] = true;
		else
		{
			values[1] = CStringGetTextDatum(ph_name_text(r->database));
			values[2] = CStringGetTextDatum(role_name(r->role_id, ""));
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

/* ---- pool_advice ---- */

typedef struct AdviceKey
{
	bool		other;
	Oid			database_id;
	Oid			role_id;
	char		application_name[NAMEDATALEN];
} AdviceKey;

typedef struct Advice
{
	AdviceKey	key;			/* hash key: first */
	char		database[NAMEDATALEN];
	int32		connections_max;
	int32		in_xact_max;
	int64		xacts;
	int64		xact_time_us;
	int64		idle_in_xact_us;
	int			nminutes;
	int			minutes_room;
	int32	   *minute_in_xact;	/* per minute: the maximum */
	/* derived */
	int32		in_xact_p99;
	int32		suggested;
	int32		excess;
} Advice;

typedef struct MinuteTotal
{
	TimestampTz at;				/* hash key */
	int32		connections;
	int32		in_xact;
} MinuteTotal;

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Nearest-rank p99 of n values (sorted in place). */
static int32
p99(int32 *values, int n)
{
	int			rank;

	if (n == 0)
		return 0;
	qsort(values, n, sizeof(int32), cmp_int32);
	rank = (int) ceil(0.99 * n);
	return values[Max(rank, 1) - 1];
}

static void
add_minute(HTAB *groups, HTAB *totals, bool other, Oid database_id, Oid role_id,
		   const char *database, const char *application, TimestampTz at,
		   int32 connections_max, int32 in_xact_max, int64 xacts,
		   int64 xact_time_us, int64 idle_in_xact_us)
{
	AdviceKey	key;
	Advice	   *a;
	MinuteTotal *t;
	bool		found;

	if (!group_visible(other, role_id))
		return;
	memset(&key, 0, sizeof(key));
	key.other = other;
	key.database_id = database_id;
	key.role_id = role_id;
	strlcpy(key.application_name, application, NAMEDATALEN);
	a = hash_search(groups, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset((char *) a + sizeof(AdviceKey), 0, sizeof(Advice) - sizeof(AdviceKey));
		strlcpy(a->database, database, NAMEDATALEN);
		a->minutes_room = 16;
		a->minute_in_xact = palloc(sizeof(int32) * a->minutes_room);
	}
	a->connections_max = Max(a->connections_max, connections_max);
	a->in_xact_max = Max(a->in_xact_max, in_xact_max);
	a->xacts += xacts;
	a->xact_time_us += xact_time_us;
	a->idle_in_xact_us += idle_in_xact_us;
	if (a->nminutes == a->minutes_room)
	{
		a->minutes_room *= 2;
		a->minute_in_xact = repalloc(a->minute_in_xact, sizeof(int32) * a->minutes_room);
	}
	a->minute_in_xact[a->nminutes++] = in_xact_max;

	t = hash_search(totals, &at, HASH_ENTER, &found);
	if (!found)
		t->connections = t->in_xact = 0;
	t->connections += connections_max;
	t->in_xact += in_xact_max;
}

/* What to change, for a group. */
static char *
advice_text(const Advice *a)
{
	StringInfoData buf;
	double		idle_share = a->xact_time_us > 0 ?
		100.0 * (double) a->idle_in_xact_us / (double) a->xact_time_us : 0;

	initStringInfo(&buf);
	if (a->xacts == 0 && a->in_xact_max == 0)
	{
		appendStringInfo(&buf, "held up to %d connection%s and ran no transaction: close %s, or lower the pool's minimum size",
						 a->connections_max, a->connections_max == 1 ? "" : "s",
						 a->connections_max == 1 ? "it" : "them");
		return buf.data;
	}
	if (a->in_xact_max >= a->connections_max && a->connections_max >= 2)
		appendStringInfo(&buf, "pool saturated: all %d connections it held were in a transaction at once, so its requests may have waited for a connection: raise the pool to %d, or shorten its transactions",
						 a->connections_max, a->suggested);
	else if (a->connections_max > a->suggested)
		appendStringInfo(&buf, "pool larger than needed: at most %d of its %d connections were in a transaction at once; a pool of %d is enough (%d held beyond what its transactions used)",
						 a->in_xact_max, a->connections_max, a->suggested, a->excess);
	if (idle_share >= IDLE_SHARE_ADVICE && a->idle_in_xact_us >= USECS_PER_SEC)
	{
		if (buf.len > 0)
			appendStringInfoString(&buf, "; ");
		appendStringInfo(&buf, "transactions idle too long: %.0f%% of their time was spent idle inside them (the application holding a transaction open while it works or waits): commit sooner, or keep slow work out of transactions",
						 idle_share);
	}
	if (buf.len == 0)
		appendStringInfo(&buf, "fits: up to %d of its %d connection%s in a transaction at once",
						 a->in_xact_max, a->connections_max,
						 a->connections_max == 1 ? " was" : "s were");
	return buf.data;
}

#define ADVICE_COLS 12

static void
put_advice(ReturnSetInfo *rsinfo, bool all, const Advice *a, double mean,
		   const char *advice)
{
	Datum		values[ADVICE_COLS];
	bool		nulls[ADVICE_COLS];

	memset(nulls, 0, sizeof(nulls));
	if (all || a->key.other)
		nulls[0] = nulls[1] = true;
	else
	{
		values[0] = CStringGetTextDatum(ph_name_text(a->database));
		values[1] = CStringGetTextDatum(role_name(a->key.role_id, ""));
	}
	values[2] = CStringGetTextDatum(all ? "(all)" : a->key.application_name);
	values[3] = Int32GetDatum(a->connections_max);
	values[4] = Int32GetDatum(a->in_xact_max);
	values[5] = Int32GetDatum(a->in_xact_p99);
	values[6] = Float8GetDatum(mean);
	values[7] = Int64GetDatum(a->xacts);
	if (a->xact_time_us == 0)
		nulls[8] = true;
	else
		values[8] = Float8GetDatum(100.0 * (double) a->idle_in_xact_us / (double) a->xact_time_us);
	values[9] = Int32GetDatum(a->suggested);
	values[10] = Int32GetDatum(a->excess);
	values[11] = CStringGetTextDatum(advice);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static int
cmp_advice(const void *a, const void *b)
{
	const Advice *x = *(Advice *const *) a;
	const Advice *y = *(Advice *const *) b;

	if (x->key.other != y->key.other)
		return x->key.other ? 1 : -1;
	if (x->connections_max != y->connections_max)
		return x->connections_max > y->connections_max ? -1 : 1;
	return strcmp(x->key.application_name, y->key.application_name);
}

Datum
pool_health_get_pool_advice(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhAccounting *acct = accounting_required();
	TimestampTz now = GetCurrentTimestamp();
	int			window = Min(ph_advice_window_minutes, ph_app_history_minutes);
	TimestampTz window_start = now - (int64) window * USECS_PER_MINUTE;
	TimestampTz minute_start;
	TimestampTz first_at;
	PhAppGroupCopy *live = palloc(sizeof(PhAppGroupCopy) * acct->ngroups);
	int			nlive;
	int			nrows;
	PhAppMinute *rows;
	HASHCTL		ctl;
	HTAB	   *groups;
	HTAB	   *totals;
	HASH_SEQ_STATUS seq;
	Advice	   *a;
	Advice	  **sorted;
	int			ngroups = 0;
	Advice		all;
	int32	   *total_in_xact;
	int			ntotals = 0;
	MinuteTotal *t;
	double		span;
	int			usable = Max(MaxConnections - ph_reserved_connections(), 0);
	StringInfoData text;

	/*
	 * The closed minutes and the one being accumulated, from the same
	 * minute: copied again if the worker closed one meanwhile.
	 */
	for (int attempt = 0;; attempt++)
	{
		minute_start = ph_accounting_minute_start();
		nlive = ph_accounting_copy(live, false);
		rows = ph_accounting_copy_minutes(window_start - USECS_PER_MINUTE + 1, &nrows);
		if (ph_accounting_minute_start() == minute_start || attempt == 3)
			break;
		if (rows != NULL)
			pfree(rows);
	}
	/* before the worker's first minute, the live figures are since the start */
	first_at = minute_start > 0 ? minute_start : PgStartTime;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(AdviceKey);
	ctl.entrysize = sizeof(Advice);
	ctl.hcxt = CurrentMemoryContext;
	groups = hash_create("pool_health advice", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(TimestampTz);
	ctl.entrysize = sizeof(MinuteTotal);
	totals = hash_create("pool_health advice minutes", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	for (int i = 0; i < nrows; i++)
	{
		PhAppMinute *r = &rows[i];

		first_at = Min(first_at, r->at);
		add_minute(groups, totals, r->other, r->database_id, r->role_id, r->database,
				   r->application_name, r->at, r->connections_max, r->in_xact_max,
				   r->xacts, r->xact_time_us, r->idle_in_xact_us);
	}
	/* the minute being accumulated */
	for (int i = 0; i < nlive; i++)
	{
		PhAppGroupCopy *g = &live[i];

		if (g->minute_connections_max == 0 && g->minute_xacts == 0)
			continue;
		add_minute(groups, totals, g->other, g->database_id, g->role_id, g->database,
				   g->application_name, minute_start, (int32) g->minute_connections_max,
				   (int32) g->minute_in_xact_max, (int64) g->minute_xacts,
				   (int64) g->minute_xact_time_us, (int64) g->minute_idle_in_xact_us);
	}

	/* elapsed time the figures cover, for Little's law */
	span = (double) (now - Max(first_at, window_start)) / USECS_PER_SEC;
	if (span < 1)
		span = 1;

	InitMaterializedSRF(fcinfo, 0);
	sorted = palloc(sizeof(Advice *) * Max(hash_get_num_entries(groups), 1));
	memset(&all, 0, sizeof(all));
	hash_seq_init(&seq, groups);
	while ((a = hash_seq_search(&seq)) != NULL)
	{
		a->in_xact_p99 = p99(a->minute_in_xact, a->nminutes);
		a->suggested = Max(1, (int32) ceil(1.25 * a->in_xact_max));
		a->excess = Max(a->connections_max - a->in_xact_max, 0);
		sorted[ngroups++] = a;
		all.xacts += a->xacts;
		all.xact_time_us += a->xact_time_us;
		all.idle_in_xact_us += a->idle_in_xact_us;
		all.suggested += a->suggested;
		all.excess += a->excess;
	}
	qsort(sorted, ngroups, sizeof(Advice *), cmp_advice);
	for (int i = 0; i < ngroups; i++)
		put_advice(rsinfo, false, sorted[i], (double) sorted[i]->xact_time_us / USECS_PER_SEC / span,
				   advice_text(sorted[i]));
	if (ngroups == 0)
		return (Datum) 0;

	/* (all): per-minute sums */
	total_in_xact = palloc(sizeof(int32) * Max(hash_get_num_entries(totals), 1));
	hash_seq_init(&seq, totals);
	while ((t = hash_seq_search(&seq)) != NULL)
	{
		all.connections_max = Max(all.connections_max, t->connections);
		all.in_xact_max = Max(all.in_xact_max, t->in_xact);
		total_in_xact[ntotals++] = t->in_xact;
	}
	all.in_xact_p99 = p99(total_in_xact, ntotals);
	initStringInfo(&text);
	appendStringInfo(&text, "the suggested pools sum to %d connection%s, %.0f%% of the %d usable (max_connections less the reserved ones)",
					 all.suggested, all.suggested == 1 ? "" : "s",
					 usable > 0 ? 100.0 * all.suggested / usable : 0.0, usable);
	if (all.suggested > usable)
		appendStringInfoString(&text, ": more than the server has; put a pooler such as pgbouncer in front, shrink the pools, or raise max_connections");
	else
		appendStringInfo(&text, "; %d to spare", usable - all.suggested);
	if (all.excess > 0)
		appendStringInfo(&text, "; %d connection%s held beyond what transactions used",
						 all.excess, all.excess == 1 ? "" : "s");
	put_advice(rsinfo, true, &all, (double) all.xact_time_us / USECS_PER_SEC / span, text.data);
	return (Datum) 0;
}

/* ---- reset ---- */

Datum
pool_health_reset_application_stats(PG_FUNCTION_ARGS)
{
	(void) accounting_required();
	ph_accounting_reset();
	PG_RETURN_VOID();
}
