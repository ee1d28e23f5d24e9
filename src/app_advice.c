/*-------------------------------------------------------------------------
 *
 * app_advice.c
 *		pool_health.pool_advice's SQL function: the closed minutes and the
 *		current one of every group (copies from the per-application
 *		accounting), each group advised (app_advice_model.c), and the row
 *		of the whole server.
 *
 * The row of kind "all" has the
 * server-wide exact maxima (app_readers.c) and compares the sum of the
 * suggested sizes with the usable connections: the groups that only
 * sessions which had changed application_name held (no connection of
 * theirs logged in with their name) count for at most the most such
 * sessions connected at once, being the same connections renamed.
 *
 * Rows follow pg_stat_activity's visibility rule (pg_read_all_stats, or
 * the privileges of the group's role; "(other)" needs pg_read_all_stats);
 * the "all" row, counts without names, covers every group.
 *
 * No shared state: only copies, through app_accounting.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "compat.h"
#include "app_accounting.h"
#include "app_advice.h"
#include "backend_snapshot.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "views.h"

PG_FUNCTION_INFO_V1(pool_health_get_pool_advice);

typedef enum AdviceKind
{
	KIND_APPLICATION,
	KIND_OTHER,
	KIND_ALL
} AdviceKind;

static const char *const kind_names[] = {"application", "other", "all"};

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
		values[2] = CStringGetTextDatum(ph_advice_role_name(a->key.role_id, ""));
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
	TimestampTz now = GetCurrentTimestamp();
	int			window = Min(ph_advice_window_minutes, ph_app_history_minutes);
	TimestampTz window_start = now - (int64) window * USECS_PER_MINUTE;
	TimestampTz since = window_start - USECS_PER_MINUTE + 1;
	TimestampTz minute_start;
	TimestampTz current_start;
	PhAppGroupCopy *live = NULL;
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

	ph_advice_accounting_required();

	/*
	 * The closed minutes and the one being accumulated, from the same
	 * minute: copied again if the worker closed one meanwhile.
	 */
	for (int attempt = 0;; attempt++)
	{
		minute_start = ph_accounting_minute_start();
		live = ph_accounting_copy(false, &nlive);
		(void) ph_accounting_server(&server);
		rows = ph_accounting_copy_minutes(since, &nrows);
		server_rows = ph_accounting_copy_server_minutes(since, &nserver_rows);
		if (ph_accounting_minute_start() == minute_start || attempt == 3)
			break;
		if (live != NULL)
			pfree(live);
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
		ph_advice_add_minute(a, r->at, Min(r->at + USECS_PER_MINUTE, now), r);
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
		ph_advice_add_minute(a, current_start, now, &m);
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
		ph_advice_advise(a);
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
		if (ph_advice_group_visible(a->key.other, a->key.role_id))
			sorted[ngroups++] = a;
	}
	qsort(sorted, ngroups, sizeof(Advice *), cmp_advice);
	for (int i = 0; i < ngroups; i++)
		put_advice(rsinfo, sorted[i]->key.other ? KIND_OTHER : KIND_APPLICATION, sorted[i],
				   sorted[i]->span_us > 0 ?
				   (double) sorted[i]->xact_time_us / sorted[i]->span_us : 0.0,
				   ph_advice_text(sorted[i]));
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
	all.in_xact_p99 = ph_advice_p99(all_in_xact, nserver_rows + 1);
	all.suggested = all_budget(&budget);
	put_advice(rsinfo, KIND_ALL, &all,
			   all.span_us > 0 ? (double) all.xact_time_us / all.span_us : 0.0,
			   all_text(&all, usable, &budget));
	return (Datum) 0;
}
