/*-------------------------------------------------------------------------
 *
 * app_advice.h
 *		pool_advice's model of a group (app_advice_model.c), used by its SQL
 *		function (app_advice.c), and the helpers the accounting's SQL
 *		functions share (app_stats.c).  Private to those files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_APP_ADVICE_H
#define PH_APP_ADVICE_H

#include "app_accounting.h"

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
								 * sessions took on, app_xact.c) */
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

/* app_advice_model.c */
extern int32 ph_advice_p99(int32 *values, int n);
extern void ph_advice_add_minute(Advice *a, TimestampTz start, TimestampTz end,
								 const PhAppMinute *m);
extern void ph_advice_advise(Advice *a);
extern char *ph_advice_text(const Advice *a);

/* app_stats.c */
extern void ph_advice_accounting_required(void);
extern bool ph_advice_group_visible(bool other, Oid role_id);
extern char *ph_advice_role_name(Oid role_id, const char *stored);

#endif							/* PH_APP_ADVICE_H */
