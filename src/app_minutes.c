/*-------------------------------------------------------------------------
 *
 * app_minutes.c
 *		The worker's side of the per-application accounting: at each sample,
 *		when a minute has passed, close it into the minute rings
 *		(application_history, pool_advice's minutes, the server's maxima);
 *		and the warning on policies that match application_name at login
 *		while sessions change it between transactions (a pooler).
 *
 * A closed minute appends at most the ring's budget of rows
 * (PH_APP_ROWS_PER_MINUTE, or max_groups + 1 if fewer), so that the
 * ring always covers the retention: the groups that existed before the
 * minute first, then the busiest (transactions, then connections); the
 * rest are folded into the minute's row of (other).
 *
 * Locking (acct->lock): the histograms (the groups' own and the attached
 * backends' slots, app_readers.c) are read, the rows chosen and the
 * percentiles worked out under the shared lock; the minute's baselines
 * (base_* of each group) move and the rows are appended under the
 * exclusive one.  The worker is the only writer of the baselines, the
 * rings and minute_start.  Its own bookkeeping (the histograms at the last
 * close, per slot) is in its local memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "app_accounting_int.h"

/* ---- the worker: closing minutes ---- */

/*
 * The worker's copy of each slot's histogram at the start of the minute,
 * the group (generation) and the resets it was taken from, and the p99 of
 * the minute being closed, worked out from it under the shared lock; and
 * what the close decided for each group: a row of its own, or folded
 * into (other)'s row.
 */
static uint64 (*minute_hist_base)[PH_HIST_BUCKETS] = NULL;
static uint32 *minute_base_generation = NULL;
static uint64 minute_base_resets;
static bool minute_bases_taken = false;	/* by this worker, at a close */
static int64 *minute_p99 = NULL;

/*
 * At a close: the groups' totals (their own counters plus the attached
 * backends' slots) and their histograms, added up under the lock.
 */
static PhAppSums *minute_sums = NULL;
static uint64 (*minute_hist_cur)[PH_HIST_BUCKETS] = NULL;
static uint64 **minute_hist_of = NULL;

/*
 * At a minute's close, under the exclusive lock: g's saturated time in
 * the minute (its open period moved into saturated_ms first; at most the
 * minute's length), its baseline moved on, and the largest pool size its
 * sessions declared in it (taken out: the next minute starts from 0).
 */
static void
minute_saturation(PhAppGroup *g, TimestampTz now, int64 *saturated_us,
				  int32 *declared)
{
	uint64		total;
	uint32		declared_max;

	ph_acct_saturation_rebase(g, now);
	total = ph_acct_saturated_ms_now(g, now);
	*saturated_us = total > g->base_saturated_ms ?
		Min((int64) (total - g->base_saturated_ms) * 1000,
			Max(now - ph_acct->minute_start, 0)) : 0;
	g->base_saturated_ms = Max(g->base_saturated_ms, total);
	declared_max = pg_atomic_exchange_u32(&g->minute_declared, 0);
	*declared = (int32) Min(declared_max, PG_INT32_MAX);	/* Min reads twice */
}

/*
 * At a minute's close, under the exclusive lock: the server-wide maxima
 * of the minute into the server's ring (the next minute's start from what
 * is current); the first call only marks when the accounting began.
 */
static void
server_minute_close(bool first, TimestampTz now)
{
	PhAppServer *server = ph_acct->server;
	uint32		connections_max = pg_atomic_exchange_u32(&server->minute_connections_max, 0);
	uint32		in_xact_max = pg_atomic_exchange_u32(&server->minute_in_xact_max, 0);
	uint32		renamed_max = pg_atomic_exchange_u32(&server->minute_renamed_max, 0);
	uint32		connections = pg_atomic_read_u32(&server->connections);
	uint32		in_xact = pg_atomic_read_u32(&server->in_xact);
	uint32		renamed = pg_atomic_read_u32(&server->renamed);
	PhAppServerMinute *row;

	ph_acct_atomic_max_u32(&server->minute_connections_max, connections);
	ph_acct_atomic_max_u32(&server->minute_in_xact_max, in_xact);
	ph_acct_atomic_max_u32(&server->minute_renamed_max, renamed);
	if (first)
	{
		server->started = now;
		return;
	}
	row = &server->minutes[server->minute_next];
	row->at = ph_acct->minute_start;
	row->connections_max = (int32) Max(connections_max, connections);
	row->in_xact_max = (int32) Max(in_xact_max, in_xact);
	row->renamed_max = (int32) Max(renamed_max, renamed);
	server->minute_next = (server->minute_next + 1) % server->minute_capacity;
	if (server->minute_count < server->minute_capacity)
		server->minute_count++;
}

typedef enum PhMinuteFate
{
	FATE_NONE = 0,				/* no row seen (nothing in the minute, yet) */
	FATE_OWN,					/* a row of its own */
	FATE_FOLD					/* folded into (other)'s row */
} PhMinuteFate;

static char *minute_fate = NULL;

/* A group with something in the minute being closed, to rank. */
typedef struct PhMinuteCandidate
{
	int			slot;
	bool		existed;		/* before the minute began */
	uint64		xacts;
	uint32		connections_max;
} PhMinuteCandidate;

static PhMinuteCandidate *minute_candidates = NULL;

/* Older groups first, then the most transactions, then connections. */
static int
cmp_candidates(const void *a, const void *b)
{
	const PhMinuteCandidate *x = a;
	const PhMinuteCandidate *y = b;

	if (x->existed != y->existed)
		return x->existed ? -1 : 1;
	if (x->xacts != y->xacts)
		return x->xacts > y->xacts ? -1 : 1;
	if (x->connections_max != y->connections_max)
		return x->connections_max > y->connections_max ? -1 : 1;
	return x->slot - y->slot;
}

static void
append_minute(const PhAppMinute *row)
{
	ph_acct->minutes[ph_acct->minute_next] = *row;
	ph_acct->minute_next = (ph_acct->minute_next + 1) % ph_acct->minute_capacity;
	if (ph_acct->minute_count < ph_acct->minute_capacity)
		ph_acct->minute_count++;
}

/*
 * Under the shared lock, at a close: which groups of the closed minute
 * get a row of their own (minute_fate), at most ph_acct_rows_per_minute() - 1,
 * (other)'s row being the last: the groups that existed before the minute
 * began (a slot of the same generation at the last close) first, then
 * the busiest.  Returns how many are folded.
 */
static int
choose_minute_rows(void)
{
	int			own = ph_acct_rows_per_minute() - 1;
	int			n = 0;

	for (int i = 1; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];
		uint32		connections_max;
		uint64		xacts;

		minute_fate[i] = FATE_NONE;
		if (!g->in_use)
			continue;
		connections_max = Max(pg_atomic_read_u32(&g->minute_connections_max),
							  ph_acct_connections(g));
		xacts = g->xacts + minute_sums[i].xacts - g->base_xacts;
		if (connections_max == 0 && xacts == 0)
			continue;
		minute_candidates[n].slot = i;
		minute_candidates[n].existed = minute_bases_taken &&
			minute_base_generation[i] == g->generation;
		minute_candidates[n].xacts = xacts;
		minute_candidates[n].connections_max = connections_max;
		n++;
	}
	if (n > own)
		qsort(minute_candidates, n, sizeof(PhMinuteCandidate), cmp_candidates);
	for (int k = 0; k < n; k++)
		minute_fate[minute_candidates[k].slot] = k < own ? FATE_OWN : FATE_FOLD;
	return Max(n - own, 0);
}

/*
 * Worker, at each sample: when a minute has passed, close it: a row per
 * group that held a connection or ran a transaction in it, at most
 * ph_acct_rows_per_minute() of them (the ring's budget, so that it covers the
 * retention whatever the number of groups): the others are folded into
 * (other)'s row for the minute (maxima as the largest, the rest summed,
 * the p99 of their durations together).  The first
 * call after the server started begins the first minute without closing
 * one (what happened before is not attributed to a minute).  A worker
 * restarted within a minute closes it as usual, except for the
 * percentile of its durations (null: the histogram's baseline was the
 * previous worker's).  A group created during the minute (its counters
 * cleared when its slot was claimed) has all its durations in it.
 *
 * A login cannot attach while the worker holds the exclusive lock, so the
 * histograms, the bulk of the work (PH_HIST_BUCKETS counters a group),
 * are read, the rows chosen and the percentiles worked out first under
 * the shared lock; the exclusive pass only moves the minute's baselines
 * and appends the rows.  A transaction that ends between the two passes
 * counts in the closed minute's xacts and in the next minute's durations;
 * a group that begins its minute between them gets a row of its own if
 * the budget has room left, else it is folded.
 */
void
ph_accounting_sample(TimestampTz now)
{
	TimestampTz minute = now - now % USECS_PER_MINUTE;
	bool		first;
	uint64		resets;
	int			folded = 0;
	uint64		merged[PH_HIST_BUCKETS];
	int64		merged_max = 0;
	bool		merged_valid = true;
	int			own_room;
	bool		other_p99_valid = true;
	PhAppMinute other_row;
	bool		other_has_row = false;

	if (ph_acct == NULL)
		return;
	if (minute_hist_base == NULL)
	{
		minute_sums = MemoryContextAllocZero(TopMemoryContext,
											 sizeof(PhAppSums) * ph_acct->ngroups);
		minute_hist_cur = MemoryContextAllocZero(TopMemoryContext,
												 sizeof(*minute_hist_cur) * ph_acct->ngroups);
		minute_hist_of = MemoryContextAllocZero(TopMemoryContext,
												sizeof(uint64 *) * ph_acct->ngroups);
		minute_hist_base = MemoryContextAllocZero(TopMemoryContext,
												  sizeof(*minute_hist_base) * ph_acct->ngroups);
		minute_base_generation = MemoryContextAllocZero(TopMemoryContext,
														sizeof(uint32) * ph_acct->ngroups);
		minute_p99 = MemoryContextAllocZero(TopMemoryContext,
											sizeof(int64) * ph_acct->ngroups);
		minute_fate = MemoryContextAllocZero(TopMemoryContext, ph_acct->ngroups);
		minute_candidates = MemoryContextAllocZero(TopMemoryContext,
												   sizeof(PhMinuteCandidate) * ph_acct->ngroups);
	}
	first = ph_acct->minute_start == 0;
	if (!first && minute <= ph_acct->minute_start)
		return;

	/*
	 * The rows of the minute, the histograms' percentiles (the folded
	 * groups' and (other)'s together), and the next minute's baselines.
	 */
	memset(merged, 0, sizeof(merged));
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	resets = ph_acct->resets;
	memset(minute_sums, 0, sizeof(PhAppSums) * ph_acct->ngroups);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];

		minute_hist_of[i] = g->in_use ? minute_hist_cur[i] : NULL;
		if (g->in_use)
			memcpy(minute_hist_cur[i], g->histogram, sizeof(g->histogram));
	}
	ph_acct_sum_backends(minute_sums, minute_hist_of);
	if (!first)
		folded = choose_minute_rows();
	else
		memset(minute_fate, FATE_NONE, ph_acct->ngroups);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];
		uint64		hist[PH_HIST_BUCKETS];
		bool		same_group;
		bool		into_other = g->other || minute_fate[i] == FATE_FOLD;

		if (!g->in_use)
			continue;
		memcpy(hist, minute_hist_cur[i], sizeof(hist));
		minute_p99[i] = -1;
		/*
		 * Against the histogram at the last close, unless a reset cleared
		 * it since; a slot claimed since the last close (after any reset)
		 * was cleared: all its durations are this minute's.  Not (other)
		 * after an eviction: what it took in is not.
		 */
		same_group = minute_base_generation[i] == g->generation;
		if (minute_bases_taken &&
			(same_group ? minute_base_resets == resets :
			 !g->other && (minute_base_resets == resets || g->since > ph_acct->reset_at)))
		{
			const uint64 *base = same_group ? minute_hist_base[i] : NULL;
			uint64		delta[PH_HIST_BUCKETS];
			int64		max = (int64) pg_atomic_read_u64(&g->xact_max_us);

			for (int b = 0; b < PH_HIST_BUCKETS; b++)
				delta[b] = base == NULL ? hist[b] :
					hist[b] >= base[b] ? hist[b] - base[b] : 0;
			minute_p99[i] = ph_hist_quantile(delta, 0.99, max);
			if (into_other)
			{
				for (int b = 0; b < PH_HIST_BUCKETS; b++)
					merged[b] += delta[b];
				merged_max = Max(merged_max, max);
			}
		}
		else if (into_other)
			merged_valid = false;
		memcpy(minute_hist_base[i], hist, sizeof(hist));
		minute_base_generation[i] = g->generation;
	}
	if (folded > 0)
		minute_p99[0] = merged_valid ? ph_hist_quantile(merged, 0.99, merged_max) : -1;
	minute_base_resets = resets;
	minute_bases_taken = true;
	LWLockRelease(ph_acct->lock);

	/* own rows the budget still has room for, beyond those chosen */
	own_room = ph_acct_rows_per_minute() - 1;
	for (int i = 1; i < ph_acct->ngroups; i++)
		if (minute_fate[i] == FATE_OWN)
			own_room--;

	LWLockAcquire(ph_acct->lock, LW_EXCLUSIVE);
	memset(&other_row, 0, sizeof(other_row));
	/* the totals again: transactions ended between the passes */
	memset(minute_sums, 0, sizeof(PhAppSums) * ph_acct->ngroups);
	ph_acct_sum_backends(minute_sums, NULL);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];
		uint64		word;
		uint32		connections;
		uint32		in_xact;
		uint32		connections_max;
		uint32		in_xact_max;
		uint32		logins;
		uint32		logins_max;
		uint64		xacts;
		uint64		xact_time;
		uint64		idle;
		int64		saturated_us;
		int32		declared;
		bool		same_group;

		if (!g->in_use)
			continue;
		minute_saturation(g, now, &saturated_us, &declared);
		/*
		 * The maxima of the next minute start from what is current: taken
		 * out first, so that a session arriving meanwhile raises the new
		 * minute's maximum (and the closed one's, through the current
		 * figure).
		 */
		connections_max = pg_atomic_exchange_u32(&g->minute_connections_max, 0);
		in_xact_max = pg_atomic_exchange_u32(&g->minute_in_xact_max, 0);
		word = pg_atomic_read_u64(&g->saturation);
		connections = SAT_CONNECTIONS(word);
		in_xact = SAT_IN_XACT(word);
		ph_acct_atomic_max_u32(&g->minute_connections_max, connections);
		ph_acct_atomic_max_u32(&g->minute_in_xact_max, in_xact);
		connections_max = Max(connections_max, connections);
		in_xact_max = Max(in_xact_max, in_xact);
		/* likewise, the sessions attached since their login */
		logins_max = pg_atomic_exchange_u32(&g->minute_logins_max, 0);
		logins = pg_atomic_read_u32(&g->logins);
		ph_acct_atomic_max_u32(&g->minute_logins_max, logins);
		logins_max = Max(logins_max, logins);
		xacts = g->xacts + minute_sums[i].xacts;
		xact_time = g->xact_time_us + minute_sums[i].xact_time_us;
		idle = g->idle_in_xact_us + minute_sums[i].idle_in_xact_us;
		/* the group the first pass saw in this slot */
		same_group = minute_base_generation[i] == g->generation;

		if (!first && (connections_max > 0 || xacts != g->base_xacts))
		{
			PhAppMinute row;

			memset(&row, 0, sizeof(row));
			row.at = ph_acct->minute_start;
			row.other = g->other;
			row.database_id = g->database_id;
			row.role_id = g->role_id;
			strlcpy(row.database, g->database, NAMEDATALEN);
			strlcpy(row.application_name, g->application_name, NAMEDATALEN);
			row.connections_max = (int32) connections_max;
			row.in_xact_max = (int32) in_xact_max;
			row.xacts = (int64) (xacts - g->base_xacts);
			row.xact_time_us = (int64) (xact_time - g->base_xact_time_us);
			row.idle_in_xact_us = (int64) (idle - g->base_idle_in_xact_us);
			row.saturated_us = saturated_us;
			row.declared_pool_size = declared;
			row.logins_max = (int32) logins_max;
			/* not if the slot changed hands, or was reset, meanwhile */
			row.xact_p99_us = same_group && resets == ph_acct->resets ?
				minute_p99[i] : -1;

			if (g->other)
			{
				other_row = row;
				other_has_row = true;
			}
			else if (same_group && minute_fate[i] == FATE_OWN)
				append_minute(&row);
			else if (!(same_group && minute_fate[i] == FATE_FOLD) && own_room > 0)
			{
				own_room--;		/* began its minute after the first pass */
				append_minute(&row);
			}
			else
			{
				/* into (other)'s row */
				if (!other_has_row)
				{
					other_row.at = row.at;
					other_row.other = true;
					strlcpy(other_row.application_name,
							ph_acct->groups[0].application_name, NAMEDATALEN);
					other_row.xact_p99_us = -1;
					other_has_row = true;
				}
				other_row.connections_max = Max(other_row.connections_max, row.connections_max);
				other_row.in_xact_max = Max(other_row.in_xact_max, row.in_xact_max);
				other_row.logins_max = Max(other_row.logins_max, row.logins_max);
				other_row.xacts += row.xacts;
				other_row.xact_time_us += row.xact_time_us;
				other_row.idle_in_xact_us += row.idle_in_xact_us;
				/* durations the first pass did not merge */
				if (!(same_group && minute_fate[i] == FATE_FOLD) && row.xacts > 0)
					other_p99_valid = false;
			}
		}
		g->base_xacts = xacts;
		g->base_xact_time_us = xact_time;
		g->base_idle_in_xact_us = idle;
	}
	if (other_has_row)
	{
		/* (other)'s p99 is that of the folded groups' durations too */
		PhAppGroup *o = &ph_acct->groups[0];

		other_row.xact_p99_us = other_p99_valid &&
			minute_base_generation[0] == o->generation && resets == ph_acct->resets ?
			minute_p99[0] : -1;
		append_minute(&other_row);
	}
	server_minute_close(first, now);
	ph_acct->minute_start = minute;
	LWLockRelease(ph_acct->lock);
}

/* ---- behind a connection pooler ---- */

/*
 * Does a policy act at login on the application_name (a quota or
 * refuse_at, matched by name)?  Behind a pooler in transaction mode the
 * name at login is the pooler's, not that of the clients it serves.
 */
bool
ph_policy_by_login_name(const PhPolicy *policy)
{
	return policy->match_application &&
		(policy->max_connections >= 0 || policy->refuse_at >= 0);
}

/*
 * Worker, at each sample: while sessions that changed application_name
 * between transactions are connected, a WARNING once (per worker) for
 * each policy in effect that acts at login by name.  Never raises but as
 * ereport(WARNING) does.
 */
void
ph_accounting_warn_pooled(const PhPolicies *policies)
{
	static char (*warned)[NAMEDATALEN] = NULL;
	static int	nwarned = 0;
	static int	room = 0;
	uint32		renamed;

	if (ph_acct == NULL || policies->count == 0)
		return;
	renamed = pg_atomic_read_u32(&ph_acct->server->renamed);
	if (renamed == 0)
		return;
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];
		bool		done = false;

		if (!ph_policy_by_login_name(p))
			continue;
		for (int k = 0; k < nwarned && !done; k++)
			done = strcmp(warned[k], NameStr(p->name)) == 0;
		if (done)
			continue;
		if (nwarned == room)
		{
			room = Max(16, room * 2);
			warned = warned == NULL ?
				MemoryContextAlloc(TopMemoryContext, sizeof(*warned) * room) :
				repalloc(warned, sizeof(*warned) * room);
		}
		strlcpy(warned[nwarned++], NameStr(p->name), NAMEDATALEN);
		ereport(WARNING,
				(errmsg("pool_health: policy \"%s\" matches application_name at login, but %u session%s changed application_name between transactions",
						NameStr(p->name), renamed, renamed == 1 ? "" : "s"),
				 errdetail("Behind a connection pooler in transaction mode (pgbouncer) a server connection logs in without its clients' application_name and then serves many clients: a quota or refuse_at by application_name does not apply to their sessions."),
				 errhint("Budget by role (a policy matching the pooler's role) and with the pooler's own limits (pgbouncer: pool_size, max_db_connections, max_user_connections).")));
	}
}

