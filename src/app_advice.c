/*-------------------------------------------------------------------------
 *
 * app_advice.c
 *		The SQL side of the per-application accounting (app_accounting.c):
 *		pool_health.application_stats, pool_health.application_history,
 *		pool_health.pool_advice and pool_health.reset_application_stats().
 *
 * The advice, per group, over pool_health.advice_window (at most the
 * history's retention), from the closed minutes and the current one;
 * rates and means over the time the group existed in the window (from its
 * creation, to its last session's departure, within its minutes):
 *	connections_max	 the most connections the group held at once
 *	in_xact_max		 the most of them in a transaction at once (exact)
 *	in_xact_p99		 the 99th percentile of the per-minute maxima
 *	in_xact_mean	 Little's law: total transaction time / that time, the
 *					 connections its transactions keep busy on average
 *	saturated_share	 the share of that time every connection it held was
 *					 in a transaction (exact, app_accounting.c)
 *	declared_pool_size	the most pool_health.client_pool_size its sessions
 *					 declared
 *	demand_p99		 the connections that leave 99 % of its requests one
 *					 free (Erlang's C formula), for requests arriving at
 *					 random with Little's L of its busiest minutes (or,
 *					 saturated, the load its saturation shows if more)
 *	suggested_pool_size	saturated (at its declared size, or at its peak
 *					 connections, every connection in a transaction for
 *					 a sustained share): max(demand_p99, its size + 1);
 *					 else max(1, min(ceil(1.25 * in_xact_max), its size))
 *	excess_connections	connections_max - in_xact_max: held beyond what
 *					 its transactions ever used at once
 * and a text naming what to change.  The row of kind "all" has the
 * server-wide exact maxima (app_accounting.c) and compares the sum of the
 * suggested sizes with the usable connections: the groups that only
 * sessions which had changed application_name held (no connection of
 * theirs logged in with their name) count for at most the most such
 * sessions connected at once, being the same connections renamed.
 *
 * Rows follow pg_stat_activity's visibility rule (pg_read_all_stats, or
 * the privileges of the group's role; "(other)" needs pg_read_all_stats);
 * the "all" row, counts without names, covers every group.
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
#include "app_accounting.h"
#include "backend_snapshot.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"
#include "views.h"

PG_FUNCTION_INFO_V1(pool_health_get_application_stats);
PG_FUNCTION_INFO_V1(pool_health_get_application_history);
PG_FUNCTION_INFO_V1(pool_health_get_pool_advice);
PG_FUNCTION_INFO_V1(pool_health_reset_application_stats);

/* share of transaction time spent idle in them from which advice says so */
#define IDLE_SHARE_ADVICE 20.0

static PhAccounting *
accounting_required(void)
{
	ph_require_preload("per-application accounting");
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

/*
 * A group's saturated share from which it is called saturated.  At its
 * declared size, the share is about that of its requests that found no
 * connection free; a pool sized to its demand_p99 has 1 to 3 % (Erlang's
 * C formula for Poisson arrivals), so it is kept.
 */
#define SATURATED_SHARE_DECLARED	0.05	/* at its declared size */
#define SATURATED_SHARE_UNDECLARED	0.50	/* at its peak connections */

/* The share of requests a suggested pool may leave waiting (demand_p99). */
#define DEMAND_WAIT_SHARE	0.01

/* A minute shorter than this (a group's first or last, the current one) is
 * too short to be one of its "busiest minutes" on its own. */
#define LOAD_MINUTE_MIN_US	(10 * USECS_PER_SEC)

typedef enum AdviceKind
{
	KIND_APPLICATION,
	KIND_OTHER,
	KIND_ALL
} AdviceKind;

static const char *const kind_names[] = {"application", "other", "all"};

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
	/* the group in shared memory now, if any */
	TimestampTz created;		/* 0: none */
	TimestampTz ended;			/* its last session left (0: it has some) */
	/* summed over its minutes in the window */
	int32		connections_max;
	int32		in_xact_max;
	int32		declared;		/* most declared in a minute, or 0 */
	int32		logins_max;		/* most connections at once that had logged
								 * in with its name (0: it is names that
								 * sessions took on, app_accounting.c) */
	int64		xacts;
	int64		xact_time_us;
	int64		idle_in_xact_us;
	int64		saturated_us;
	int64		span_us;		/* the time it existed in the window */
	int			nminutes;
	int			minutes_room;
	int32	   *minute_in_xact; /* per minute: the maximum */
	double	   *minute_load;	/* per long enough minute: transaction time
								 * per unit of time (Little's L) */
	int			nloads;
	/* derived */
	int32		in_xact_p99;
	double		load;			/* Little's L of its busiest minutes, or what
								 * its saturation says if more */
	int32		demand;
	bool		saturated;
	int32		suggested;
	int32		excess;
} Advice;

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

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

/*
 * Erlang's C formula: the probability that a request finds all n
 * connections busy, for requests arriving at random (Poisson) that keep
 * "load" connections busy on average (Little's law: rate x mean
 * duration); 1 when n cannot serve that load.  O(n).
 */
static double
erlang_c(int32 n, double load)
{
	double		b = 1;			/* Erlang's B formula, by recurrence */

	if (load <= 0)
		return 0;
	if (load >= n)
		return 1;
	for (int32 k = 1; k <= n; k++)
		b = load * b / (k + load * b);
	return Min(1.0, n * b / (n - load * (1 - b)));
}

/*
 * The connections a load needs so that 99 % of its requests find one
 * free (Erlang's C formula at most 1 %): the smallest such n.  O(n).
 */
static int32
demand_for(double load)
{
	double		b = 1;
	int32		n = 0;

	if (load <= 0)
		return 0;
	while (n < 0x3FFFF)
	{
		n++;
		b = load * b / (n + load * b);
		if (n > load && n * b / (n - load * (1 - b)) <= DEMAND_WAIT_SHARE)
			break;
	}
	return n;
}

/*
 * The load that makes n connections all busy this share of the time
 * (Erlang's C formula, inverted by bisection): what a pool of n that was
 * saturated that often served, when its arrivals come in bursts that its
 * mean busy time does not show.  At most n.
 */
static double
load_from_saturation(int32 n, double share)
{
	double		lo = 0;
	double		hi = n;

	if (n <= 0 || share <= 0)
		return 0;
	for (int i = 0; i < 40; i++)
	{
		double		mid = (lo + hi) / 2;

		if (erlang_c(n, mid) < share)
			lo = mid;
		else
			hi = mid;
	}
	return (lo + hi) / 2;
}

/*
 * How long, within [start, end), group a existed: from its creation if that
 * is within, to its last session's departure if that is within.
 */
static int64
existed(const Advice *a, TimestampTz start, TimestampTz end)
{
	if (a->created > start && a->created < end)
		start = a->created;
	if (a->ended > start && a->ended < end)
		end = a->ended;
	return Max(end - start, 0);
}

static Advice *
advice_entry(HTAB *groups, bool other, Oid database_id, Oid role_id,
			 const char *database, const char *application)
{
	AdviceKey	key;
	Advice	   *a;
	bool		found;

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
		a->minute_load = palloc(sizeof(double) * a->minutes_room);
	}
	return a;
}

/* One minute of a group, from start to end (the current one: to now). */
static void
add_minute(Advice *a, TimestampTz start, TimestampTz end, const PhAppMinute *m)
{
	int64		span = existed(a, start, end);

	a->connections_max = Max(a->connections_max, m->connections_max);
	a->in_xact_max = Max(a->in_xact_max, m->in_xact_max);
	a->declared = Max(a->declared, m->declared_pool_size);
	a->logins_max = Max(a->logins_max, m->logins_max);
	a->xacts += m->xacts;
	a->xact_time_us += m->xact_time_us;
	a->idle_in_xact_us += m->idle_in_xact_us;
	a->saturated_us += Min(m->saturated_us, span);
	a->span_us += span;
	if (a->nminutes == a->minutes_room)
	{
		a->minutes_room *= 2;
		a->minute_in_xact = repalloc(a->minute_in_xact, sizeof(int32) * a->minutes_room);
		a->minute_load = repalloc(a->minute_load, sizeof(double) * a->minutes_room);
	}
	a->minute_in_xact[a->nminutes++] = m->in_xact_max;
	/*
	 * Little's L of the minute; a transaction counts in the minute it ended
	 * in, so it is bounded by what was in a transaction at once.
	 */
	if (span >= LOAD_MINUTE_MIN_US)
		a->minute_load[a->nloads++] = Min((double) m->xact_time_us / span,
										  (double) m->in_xact_max);
}

/*
 * The suggestion for a group.  A pool is saturated when it was at its cap
 * (its declared size, else its peak connections, at least 2) with every
 * connection in a transaction for a sustained share of the time its group
 * existed: then it needs what its demand needs, at least one more: the
 * connections that leave 99 % of its requests one free, for requests
 * arriving at random with the load of its busiest minutes (Little's law:
 * transaction time per unit of time), or the load that made it saturated
 * as often as it was, if that is more (its arrivals came in bursts).
 * Otherwise it never waited: it needs its peak concurrency with 25 %
 * headroom, and no more than it had.
 */
static void
advise(Advice *a)
{
	double		share = a->span_us > 0 ? (double) a->saturated_us / a->span_us : 0;
	bool		declared = a->declared > 0 && a->connections_max <= a->declared;
	int32		cap = declared ? a->declared : a->connections_max;

	a->in_xact_p99 = p99(a->minute_in_xact, a->nminutes);
	if (a->nloads > 0)
	{
		int			rank = (int) ceil(0.99 * a->nloads);

		qsort(a->minute_load, a->nloads, sizeof(double), cmp_double);
		a->load = a->minute_load[Max(rank, 1) - 1];
	}
	else
		a->load = a->span_us > 0 ? (double) a->xact_time_us / a->span_us : 0;
	a->load = Min(a->load, (double) a->in_xact_max);
	a->excess = Max(a->connections_max - a->in_xact_max, 0);
	a->saturated = !a->key.other &&
		(declared ? a->in_xact_max >= a->declared :
		 a->connections_max >= 2 && a->in_xact_max >= a->connections_max) &&
		share >= (declared ? SATURATED_SHARE_DECLARED : SATURATED_SHARE_UNDECLARED);
	if (a->saturated)
		a->load = Max(a->load, load_from_saturation(cap, share));
	a->demand = demand_for(a->load);
	if (a->xacts == 0 && a->in_xact_max == 0)
		a->suggested = 1;
	else if (a->saturated)
		a->suggested = Max(a->demand, cap + 1);
	else
		a->suggested = Max(1, Min((int32) ceil(1.25 * a->in_xact_max),
								  Max(cap, a->in_xact_max)));
}

/* What to change, for a group. */
static char *
advice_text(const Advice *a)
{
	StringInfoData buf;
	double		idle_share = a->xact_time_us > 0 ?
		100.0 * (double) a->idle_in_xact_us / (double) a->xact_time_us : 0;
	double		share = a->span_us > 0 ? 100.0 * (double) a->saturated_us / a->span_us : 0;
	bool		declared = a->declared > 0 && a->connections_max <= a->declared;
	int32		cap = declared ? a->declared : a->connections_max;

	initStringInfo(&buf);
	if (a->xacts == 0 && a->in_xact_max == 0)
	{
		appendStringInfo(&buf, "held up to %d connection%s and ran no transaction: close %s, or lower the pool's minimum size",
						 a->connections_max, a->connections_max == 1 ? "" : "s",
						 a->connections_max == 1 ? "it" : "them");
		return buf.data;
	}
	if (a->saturated)
		appendStringInfo(&buf, "pool saturated: all %d connections %s were in a transaction %.0f%% of the time, so about as many of its requests waited for one: raise the pool to %d (its load, from its busiest minutes and how often it was saturated, keeps %.1f connections busy on average; for requests arriving at random, %d leave 99%% of them one free), or shorten its transactions",
						 cap, declared ? "of its declared pool" : "it held",
						 share, a->suggested, a->load, a->demand);
	else if (cap > a->suggested)
	{
		if (declared && a->connections_max < a->declared)
			appendStringInfo(&buf, "pool larger than needed: of the %d connections declared, it opened at most %d and at most %d were in a transaction at once; a pool of %d is enough",
							 a->declared, a->connections_max, a->in_xact_max, a->suggested);
		else
			appendStringInfo(&buf, "pool larger than needed: at most %d of its %d connections were in a transaction at once; a pool of %d is enough (%d held beyond what its transactions used)",
							 a->in_xact_max, a->connections_max, a->suggested, a->excess);
	}
	else if (!a->key.other && !declared && a->connections_max >= 2 &&
			 a->in_xact_max >= a->connections_max && share >= 100 * SATURATED_SHARE_DECLARED)
		appendStringInfo(&buf, "all %d connections it held were in a transaction %.0f%% of the time: if %d is its pool's cap, about as many of its requests waited (a pool of %d would serve them); if its pool opens connections only as it needs them, none did: declare the pool's size (pool_health.client_pool_size) so that pool_health can tell",
						 a->connections_max, share, a->connections_max,
						 Max(a->demand, a->connections_max + 1));
	if (a->declared > 0 && !declared)
	{
		if (buf.len > 0)
			appendStringInfoString(&buf, "; ");
		appendStringInfo(&buf, "held %d connections, more than the %d its sessions declared (pool_health.client_pool_size): several pools share this application_name (give each its own) or the declared size is not the pool's",
						 a->connections_max, a->declared);
	}
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

#define ADVICE_COLS 16

/*
 * A row of pool_advice: a group (kind application or other), or the
 * server's (all) (saturated_share, declared_pool_size and demand_p99 then
 * null).
 */
static void
put_advice(ReturnSetInfo *rsinfo, AdviceKind kind, const Advice *a, double mean,
		   const char *advice)
{
	Datum		values[ADVICE_COLS];
	bool		nulls[ADVICE_COLS];

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(kind_names[kind]);
	if (kind != KIND_APPLICATION)
		nulls[1] = nulls[2] = nulls[3] = true;
	else
	{
		values[1] = CStringGetTextDatum(ph_name_text(a->database));
		values[2] = CStringGetTextDatum(role_name(a->key.role_id, ""));
		values[3] = CStringGetTextDatum(a->key.application_name);
	}
	if (kind == KIND_APPLICATION && a->declared > 0)
		values[4] = Int32GetDatum(a->declared);
	else
		nulls[4] = true;
	values[5] = Int32GetDatum(a->connections_max);
	values[6] = Int32GetDatum(a->in_xact_max);
	values[7] = Int32GetDatum(a->in_xact_p99);
	values[8] = Float8GetDatum(mean);
	if (kind == KIND_APPLICATION && a->span_us > 0)
		values[9] = Float8GetDatum(Min(100.0 * (double) a->saturated_us / a->span_us, 100.0));
	else
		nulls[9] = true;
	values[10] = Int64GetDatum(a->xacts);
	if (a->xact_time_us == 0)
		nulls[11] = true;
	else
		values[11] = Float8GetDatum(100.0 * (double) a->idle_in_xact_us / (double) a->xact_time_us);
	if (kind == KIND_ALL)
		nulls[12] = true;
	else
		values[12] = Int32GetDatum(a->demand);
	values[13] = Int32GetDatum(a->suggested);
	values[14] = Int32GetDatum(a->excess);
	values[15] = CStringGetTextDatum(advice);
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

/*
 * What the (all) row sums: the suggested pools of the groups some of whose
 * connections logged in with their name; the groups only sessions that had
 * changed application_name held (renamed: how many, their suggested pools'
 * sum) count for at most the most such sessions connected at once
 * (renamed_max): they are the same connections under other names.
 */
typedef struct AllBudget
{
	int32		pools;			/* the groups with logins: their sum */
	int			renamed_groups;
	int64		renamed_sum;
	int32		renamed_max;
} AllBudget;

static int32
all_budget(const AllBudget *b)
{
	return (int32) Min((int64) b->pools + Min(b->renamed_sum, (int64) b->renamed_max),
					   PG_INT32_MAX);
}

/* The (all) row's text: the budget, against what the server really held. */
static char *
all_text(const Advice *all, int usable, const AllBudget *b)
{
	StringInfoData text;

	initStringInfo(&text);
	appendStringInfo(&text, "the suggested pools sum to %d connection%s, %.0f%% of the %d usable (max_connections less the reserved ones)",
					 all->suggested, all->suggested == 1 ? "" : "s",
					 usable > 0 ? 100.0 * all->suggested / usable : 0.0, usable);
	if (all->suggested > usable)
		appendStringInfoString(&text, ": more than the server has; put a pooler such as pgbouncer in front, shrink the pools, or raise max_connections");
	else
		appendStringInfo(&text, "; %d to spare", usable - all->suggested);
	if (b->renamed_sum > b->renamed_max)
		appendStringInfo(&text, "; of them, the %d group%s that only sessions which had changed application_name held count for %d, the most such sessions connected at once, not for the " INT64_FORMAT " %s suggested pools sum to: %s the same connections under other names",
						 b->renamed_groups, b->renamed_groups == 1 ? "" : "s",
						 b->renamed_max, b->renamed_sum,
						 b->renamed_groups == 1 ? "its" : "their",
						 b->renamed_groups == 1 ? "it is" : "they are");
	appendStringInfo(&text, "; the server held at most %d connection%s at once (%.0f%% of the usable), %d in a transaction at once",
					 all->connections_max, all->connections_max == 1 ? "" : "s",
					 usable > 0 ? 100.0 * all->connections_max / usable : 0.0,
					 all->in_xact_max);
	if (all->excess > 0)
		appendStringInfo(&text, "; %d connection%s held beyond what transactions used",
						 all->excess, all->excess == 1 ? "" : "s");
	if (b->renamed_max > 0)
		appendStringInfo(&text, "; %d session%s changed application_name between transactions (a connection pooler in transaction mode lends one server connection to many clients): their groups share connections, so their suggested pools overlap; size the pooler's pool to this row's in_xact_max with headroom",
						 b->renamed_max, b->renamed_max == 1 ? "" : "s");
	return text.data;
}

Datum
pool_health_get_pool_advice(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhAccounting *acct = accounting_required();
	TimestampTz now = GetCurrentTimestamp();
	int			window = Min(ph_advice_window_minutes, ph_app_history_minutes);
	TimestampTz window_start = now - (int64) window * USECS_PER_MINUTE;
	TimestampTz since = window_start - USECS_PER_MINUTE + 1;
	TimestampTz minute_start;
	TimestampTz current_start;
	PhAppGroupCopy *live = palloc(sizeof(PhAppGroupCopy) * acct->ngroups);
	int			nlive;
	int			nrows;
	PhAppMinute *rows;
	PhAppServerCopy server;
	PhAppServerMinute *server_rows;
	int			nserver_rows;
	HASHCTL		ctl;
	HTAB	   *groups;
	HASH_SEQ_STATUS seq;
	Advice	   *a;
	Advice	  **sorted;
	int			ngroups = 0;
	Advice		all;
	AllBudget	budget;
	int32	   *all_in_xact;
	int			usable = Max(MaxConnections - ph_reserved_connections(), 0);

	/*
	 * The closed minutes and the one being accumulated, from the same
	 * minute: copied again if the worker closed one meanwhile.
	 */
	for (int attempt = 0;; attempt++)
	{
		minute_start = ph_accounting_minute_start();
		nlive = ph_accounting_copy(live, false);
		(void) ph_accounting_server(&server);
		rows = ph_accounting_copy_minutes(since, &nrows);
		server_rows = ph_accounting_copy_server_minutes(since, &nserver_rows);
		if (ph_accounting_minute_start() == minute_start || attempt == 3)
			break;
		if (rows != NULL)
			pfree(rows);
		if (server_rows != NULL)
			pfree(server_rows);
	}
	/* before the worker's first minute, the live figures are since the start */
	current_start = minute_start > 0 ? minute_start : PgStartTime;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(AdviceKey);
	ctl.entrysize = sizeof(Advice);
	ctl.hcxt = CurrentMemoryContext;
	groups = hash_create("pool_health advice", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* the groups there now: when they appeared, and left if they did */
	for (int i = 0; i < nlive; i++)
	{
		PhAppGroupCopy *g = &live[i];

		a = advice_entry(groups, g->other, g->database_id, g->role_id, g->database,
						 g->application_name);
		a->created = g->created;
		a->ended = g->connections == 0 ? g->last_seen : 0;
	}
	for (int i = 0; i < nrows; i++)
	{
		PhAppMinute *r = &rows[i];

		a = advice_entry(groups, r->other, r->database_id, r->role_id, r->database,
						 r->application_name);
		add_minute(a, r->at, Min(r->at + USECS_PER_MINUTE, now), r);
	}
	/* the minute being accumulated */
	for (int i = 0; i < nlive; i++)
	{
		PhAppGroupCopy *g = &live[i];
		PhAppMinute m;

		if (g->minute_connections_max == 0 && g->minute_xacts == 0)
			continue;
		memset(&m, 0, sizeof(m));
		m.connections_max = (int32) g->minute_connections_max;
		m.in_xact_max = (int32) g->minute_in_xact_max;
		m.xacts = (int64) g->minute_xacts;
		m.xact_time_us = (int64) g->minute_xact_time_us;
		m.idle_in_xact_us = (int64) g->minute_idle_in_xact_us;
		m.saturated_us = (int64) Min(g->minute_saturated_us, PG_INT64_MAX);
		m.declared_pool_size = (int32) Min(g->minute_declared, PG_INT32_MAX);
		m.logins_max = (int32) Min(g->minute_logins_max, PG_INT32_MAX);
		a = advice_entry(groups, g->other, g->database_id, g->role_id, g->database,
						 g->application_name);
		add_minute(a, current_start, now, &m);
	}

	/*
	 * Every group, seen or not, is advised (the (all) row sums them all);
	 * the rows shown follow the visibility rule.
	 */
	InitMaterializedSRF(fcinfo, 0);
	sorted = palloc(sizeof(Advice *) * Max(hash_get_num_entries(groups), 1));
	memset(&all, 0, sizeof(all));
	memset(&budget, 0, sizeof(budget));
	hash_seq_init(&seq, groups);
	while ((a = hash_seq_search(&seq)) != NULL)
	{
		if (a->nminutes == 0)
			continue;			/* there now, but not active in the window */
		advise(a);
		all.xacts += a->xacts;
		all.xact_time_us += a->xact_time_us;
		all.idle_in_xact_us += a->idle_in_xact_us;
		if (a->logins_max > 0)
			budget.pools = (int32) Min((int64) budget.pools + a->suggested, PG_INT32_MAX);
		else
		{
			budget.renamed_groups++;
			budget.renamed_sum += a->suggested;
		}
		all.excess += a->excess;
		if (group_visible(a->key.other, a->key.role_id))
			sorted[ngroups++] = a;
	}
	qsort(sorted, ngroups, sizeof(Advice *), cmp_advice);
	for (int i = 0; i < ngroups; i++)
		put_advice(rsinfo, sorted[i]->key.other ? KIND_OTHER : KIND_APPLICATION, sorted[i],
				   sorted[i]->span_us > 0 ?
				   (double) sorted[i]->xact_time_us / sorted[i]->span_us : 0.0,
				   advice_text(sorted[i]));
	if (hash_get_num_entries(groups) == 0 && nserver_rows == 0)
		return (Datum) 0;

	/*
	 * (all): the server-wide maxima, exact (a session is counted once
	 * whatever its application_name), over the minutes since the
	 * accounting began in the window.
	 */
	all_in_xact = palloc(sizeof(int32) * (nserver_rows + 1));
	for (int i = 0; i <= nserver_rows; i++)
	{
		PhAppServerMinute cur;
		const PhAppServerMinute *m = &cur;
		TimestampTz start;
		TimestampTz end;

		if (i < nserver_rows)
		{
			m = &server_rows[i];
			start = m->at;
			end = Min(m->at + USECS_PER_MINUTE, now);
		}
		else
		{
			cur.connections_max = (int32) server.minute_connections_max;
			cur.in_xact_max = (int32) server.minute_in_xact_max;
			cur.renamed_max = (int32) server.minute_renamed_max;
			start = current_start;
			end = now;
		}
		if (server.started > start && server.started < end)
			start = server.started;
		all.span_us += Max(end - start, 0);
		all.connections_max = Max(all.connections_max, m->connections_max);
		all.in_xact_max = Max(all.in_xact_max, m->in_xact_max);
		budget.renamed_max = Max(budget.renamed_max, m->renamed_max);
		all_in_xact[i] = m->in_xact_max;
	}
	all.in_xact_p99 = p99(all_in_xact, nserver_rows + 1);
	all.suggested = all_budget(&budget);
	put_advice(rsinfo, KIND_ALL, &all,
			   all.span_us > 0 ? (double) all.xact_time_us / all.span_us : 0.0,
			   all_text(&all, usable, &budget));
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
