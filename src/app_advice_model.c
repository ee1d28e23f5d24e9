/*-------------------------------------------------------------------------
 *
 * app_advice_model.c
 *		pool_advice's model of one group: its minutes added up over the
 *		window, its suggested pool size (Erlang's C formula for its demand,
 *		its saturation, its peak concurrency) and the text naming what to
 *		change.  Pure computation on copies: no shared state.
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
 *					 in a transaction (exact, app_groups.c)
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
 * and a text naming what to change (app_advice.c adds the row of the
 * whole server).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "lib/stringinfo.h"
#include "utils/timestamp.h"

#include "app_advice.h"

/* share of transaction time spent idle in them from which advice says so */
#define IDLE_SHARE_ADVICE 20.0

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
int32
ph_advice_p99(int32 *values, int n)
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

/* One minute of a group, from start to end (the current one: to now). */
void
ph_advice_add_minute(Advice *a, TimestampTz start, TimestampTz end, const PhAppMinute *m)
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
void
ph_advice_advise(Advice *a)
{
	double		share = a->span_us > 0 ? (double) a->saturated_us / a->span_us : 0;
	bool		declared = a->declared > 0 && a->connections_max <= a->declared;
	int32		cap = declared ? a->declared : a->connections_max;

	a->in_xact_p99 = ph_advice_p99(a->minute_in_xact, a->nminutes);
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
char *
ph_advice_text(const Advice *a)
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
