/*-------------------------------------------------------------------------
 *
 * app_readers.c
 *		Reading the per-application accounting: the groups copied out with
 *		their totals (the group's own counters plus the slots of the
 *		backends attached to it), the minute rings, the server-wide
 *		counters, the totals per application_name (metrics(), status()),
 *		and the reset.  Copies only: no caller sees shared memory.
 *
 * Locking: acct->lock shared to copy (groups, backends' slots, minutes),
 * exclusive to reset.  A backend's slot (PhAppBackend) is copied with its
 * change-count protocol; a backend folds its slot into its group only
 * under the exclusive lock, so a reader holding the lock counts each
 * transaction once, exactly (app_accounting_int.h).  The server-wide
 * counters are atomics, read without the lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/timestamp.h"

#include "app_accounting_int.h"

/*
 * Add up the backends' slots per group, under the lock (either mode):
 * sums[slot of the group] (ngroups entries, zeroed by the caller) and,
 * for each group whose hist_of entry is set (hist_of NULL: none), its
 * histogram into hist_of[slot].  Never raises.
 */
void
ph_acct_sum_backends(PhAppSums *sums, uint64 **hist_of)
{
	Assert(LWLockHeldByMe(ph_acct->lock));
	for (int i = 0; i < MaxBackends; i++)
	{
		volatile PhAppBackend *b = &ph_acct->backends[i];
		uint64		hist[PH_HIST_BUCKETS];

		/*
		 * Until the slot is read between two equal, even change counts, as
		 * pgstat_read_current_status() does: giving up would count the
		 * slot's transactions nowhere (and a reset would keep them).  The
		 * writer holds no lock and writes a few words in a critical
		 * section; if it was descheduled there, yield now and then.
		 */
		for (int tries = 1;; tries++)
		{
			int			before = b->changecount;
			int			after;
			int			group;
			uint64		xacts;
			uint64		xact_time;
			uint64		idle;
			bool		with_hist;

			pg_read_barrier();
			group = b->group;
			xacts = b->xacts;
			xact_time = b->xact_time_us;
			idle = b->idle_in_xact_us;
			with_hist = group >= 0 && group < ph_acct->ngroups &&
				xacts != 0 && hist_of != NULL && hist_of[group] != NULL;
			if (with_hist)
				memcpy(hist, (const uint64 *) b->histogram, sizeof(hist));
			pg_read_barrier();
			after = b->changecount;
			if (before != after || (before & 1) != 0)
			{
				if (tries % 1000 == 0)
					pg_usleep(100);
				else
					pg_spin_delay();
				continue;
			}
			if (group < 0 || group >= ph_acct->ngroups || xacts == 0)
				break;
			sums[group].xacts += xacts;
			sums[group].xact_time_us += xact_time;
			sums[group].idle_in_xact_us += idle;
			if (with_hist)
				for (int k = 0; k < PH_HIST_BUCKETS; k++)
					hist_of[group][k] += hist[k];
			break;
		}
	}
}

/*
 * Copy the groups in use into a palloc'd array (*count entries), with the
 * current minute's figures, and their histograms if with_histogram (else
 * histogram[] is left unset: status() and metrics() need no percentile).
 */
PhAppGroupCopy *
ph_accounting_copy(bool with_histogram, int *count)
{
	int			n = 0;
	TimestampTz now = GetCurrentTimestamp();
	PhAppGroupCopy *out;
	PhAppSums  *sums;
	uint64	  **hist_of = NULL;
	uint64	   *other_hist = NULL;

	*count = 0;
	if (ph_acct == NULL)
		return NULL;
	out = palloc0(sizeof(PhAppGroupCopy) * ph_acct->ngroups);
	sums = palloc0(sizeof(PhAppSums) * ph_acct->ngroups);
	if (with_histogram)
	{
		hist_of = palloc0(sizeof(uint64 *) * ph_acct->ngroups);
		other_hist = palloc0(sizeof(uint64) * PH_HIST_BUCKETS);
	}
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	if (with_histogram)
	{
		/* (other) apart: it is left out if never used */
		int			k = 0;

		hist_of[0] = other_hist;
		for (int i = 1; i < ph_acct->ngroups; i++)
			if (ph_acct->groups[i].in_use)
				hist_of[i] = out[k++].histogram;
	}
	ph_acct_sum_backends(sums, hist_of);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];
		PhAppGroupCopy *c = &out[n];
		uint64		w;
		uint64		total;

		if (!g->in_use)
			continue;
		c->xacts = g->xacts + sums[i].xacts;
		if (g->other && c->xacts == 0 &&
			pg_atomic_read_u32(&g->connections_peak) == 0 &&
			pg_atomic_read_u64(&g->refused) == 0)
			continue;			/* (other) has never been used */
		if (g->other && with_histogram)
		{
			/* the groups' histograms are in place from out[0]: make room */
			memmove(&out[n + 1], &out[n], sizeof(PhAppGroupCopy) * (ph_acct->ngroups - 1 - n));
			memset(c, 0, sizeof(*c));
			c->xacts = g->xacts + sums[i].xacts;
			memcpy(c->histogram, other_hist, sizeof(c->histogram));
		}
		c->other = g->other;
		c->database_id = g->database_id;
		c->role_id = g->role_id;
		strlcpy(c->database, g->database, NAMEDATALEN);
		strlcpy(c->role, g->role, NAMEDATALEN);
		strlcpy(c->application_name, g->application_name, NAMEDATALEN);
		c->since = g->since;
		c->created = g->created;
		w = pg_atomic_read_u64(&g->saturation);
		c->connections = SAT_CONNECTIONS(w);
		c->in_xact = SAT_IN_XACT(w);
		c->connections_peak = pg_atomic_read_u32(&g->connections_peak);
		c->in_xact_peak = pg_atomic_read_u32(&g->in_xact_peak);
		c->minute_connections_max = Max(pg_atomic_read_u32(&g->minute_connections_max),
										c->connections);
		c->minute_in_xact_max = Max(pg_atomic_read_u32(&g->minute_in_xact_max), c->in_xact);
		c->xact_time_us = g->xact_time_us + sums[i].xact_time_us;
		c->idle_in_xact_us = g->idle_in_xact_us + sums[i].idle_in_xact_us;
		c->xact_max_us = pg_atomic_read_u64(&g->xact_max_us);
		c->terminated = pg_atomic_read_u64(&g->terminated);
		c->refused = pg_atomic_read_u64(&g->refused);
		if (with_histogram)
			for (int b = 0; b < PH_HIST_BUCKETS; b++)
				c->histogram[b] += g->histogram[b];
		c->minute_xacts = c->xacts - g->base_xacts;
		c->minute_xact_time_us = c->xact_time_us - g->base_xact_time_us;
		c->minute_idle_in_xact_us = c->idle_in_xact_us - g->base_idle_in_xact_us;
		c->last_seen = (TimestampTz) pg_atomic_read_u64(&g->last_seen);
		c->minute_declared = pg_atomic_read_u32(&g->minute_declared);
		c->minute_logins_max = Max(pg_atomic_read_u32(&g->minute_logins_max),
								   pg_atomic_read_u32(&g->logins));
		total = ph_acct_saturated_ms_now(g, now);
		c->minute_saturated_us = total > g->base_saturated_ms ?
			(total - g->base_saturated_ms) * 1000 : 0;
		n++;
	}
	LWLockRelease(ph_acct->lock);
	pfree(sums);
	if (with_histogram)
	{
		pfree(hist_of);
		pfree(other_hist);
	}
	*count = n;
	return out;
}

/*
 * Reset the counters of every group (not what is current: connections,
 * sessions in a transaction, whose peaks restart from them).  What the
 * attached backends' slots hold is subtracted from the group's own
 * counters (modulo 2^64), so that the totals restart from 0.
 */
void
ph_accounting_reset(void)
{
	TimestampTz now = GetCurrentTimestamp();
	PhAppSums  *sums = palloc0(sizeof(PhAppSums) * ph_acct->ngroups);
	uint64	  **hist_of = palloc0(sizeof(uint64 *) * ph_acct->ngroups);

	LWLockAcquire(ph_acct->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];

		if (!g->in_use)
			continue;
		/* the minute being accumulated keeps what it counted (modulo 2^64) */
		g->base_xacts -= g->xacts;
		g->base_xact_time_us -= g->xact_time_us;
		g->base_idle_in_xact_us -= g->idle_in_xact_us;
		g->xacts = 0;
		g->xact_time_us = 0;
		g->idle_in_xact_us = 0;
		memset(g->histogram, 0, sizeof(g->histogram));
		hist_of[i] = g->histogram;
	}
	/* the slots' histograms into the groups', negated below */
	ph_acct_sum_backends(sums, hist_of);
	for (int i = 0; i < ph_acct->ngroups; i++)
	{
		PhAppGroup *g = &ph_acct->groups[i];
		uint64		w;

		if (!g->in_use)
			continue;
		g->base_xacts -= sums[i].xacts;
		g->base_xact_time_us -= sums[i].xact_time_us;
		g->base_idle_in_xact_us -= sums[i].idle_in_xact_us;
		g->xacts = -sums[i].xacts;
		g->xact_time_us = -sums[i].xact_time_us;
		g->idle_in_xact_us = -sums[i].idle_in_xact_us;
		for (int b = 0; b < PH_HIST_BUCKETS; b++)
			g->histogram[b] = -g->histogram[b];
		w = pg_atomic_read_u64(&g->saturation);
		pg_atomic_write_u32(&g->connections_peak, 0);
		pg_atomic_write_u32(&g->in_xact_peak, 0);
		ph_acct_atomic_max_u32(&g->connections_peak, SAT_CONNECTIONS(w));
		ph_acct_atomic_max_u32(&g->in_xact_peak, SAT_IN_XACT(w));
		pg_atomic_write_u64(&g->xact_max_us, 0);
		pg_atomic_write_u64(&g->terminated, 0);
		pg_atomic_write_u64(&g->refused, 0);
		g->since = now;
	}
	ph_acct->resets++;
	ph_acct->reset_at = now;
	LWLockRelease(ph_acct->lock);
	pfree(sums);
	pfree(hist_of);
}

/*
 * Copy the minute rows at or after since, oldest first, into a palloc'd
 * array; *count says how many.
 */
PhAppMinute *
ph_accounting_copy_minutes(TimestampTz since, int *count)
{
	PhAppMinute *out;
	int			n = 0;
	int			room;

	*count = 0;
	if (ph_acct == NULL)
		return NULL;
	/* the count only grows (to the capacity): room for what is there */
	room = ph_acct->minute_count;
	out = palloc(sizeof(PhAppMinute) * Max(room, 1));
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	for (int k = Max(ph_acct->minute_count - room, 0); k < ph_acct->minute_count; k++)
	{
		int			i = (ph_acct->minute_next - ph_acct->minute_count + k + ph_acct->minute_capacity) %
			ph_acct->minute_capacity;

		if (ph_acct->minutes[i].at >= since)
			out[n++] = ph_acct->minutes[i];
	}
	LWLockRelease(ph_acct->lock);
	*count = n;
	return out;
}

/*
 * For status(): the groups in use (with (other), once used), the groups
 * evicted into (other) since the server started, and when the minute
 * being accumulated began (0: the worker has not started one).
 */
void
ph_accounting_state(int *groups, uint64 *evictions, TimestampTz *minute_start)
{
	*groups = 0;
	*evictions = 0;
	*minute_start = 0;
	if (ph_acct == NULL)
		return;
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	for (int i = 1; i < ph_acct->ngroups; i++)
		if (ph_acct->groups[i].in_use)
			(*groups)++;
	*evictions = ph_acct->evictions;
	*minute_start = ph_acct->minute_start;
	LWLockRelease(ph_acct->lock);
}

/* When the minute being accumulated began (0: the worker has not started it). */
TimestampTz
ph_accounting_minute_start(void)
{
	TimestampTz start;

	if (ph_acct == NULL)
		return 0;
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	start = ph_acct->minute_start;
	LWLockRelease(ph_acct->lock);
	return start;
}

/*
 * The server-wide counters, with when the worker began the first minute;
 * false if the accounting is off.
 */
bool
ph_accounting_server(PhAppServerCopy *out)
{
	PhAppServer *server;

	memset(out, 0, sizeof(*out));
	if (ph_acct == NULL)
		return false;
	server = ph_acct->server;
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	out->started = server->started;
	LWLockRelease(ph_acct->lock);
	out->connections = pg_atomic_read_u32(&server->connections);
	out->connections_peak = pg_atomic_read_u32(&server->connections_peak);
	out->in_xact = pg_atomic_read_u32(&server->in_xact);
	out->in_xact_peak = pg_atomic_read_u32(&server->in_xact_peak);
	out->minute_connections_max = Max(pg_atomic_read_u32(&server->minute_connections_max),
									  out->connections);
	out->minute_in_xact_max = Max(pg_atomic_read_u32(&server->minute_in_xact_max),
								  out->in_xact);
	out->renamed = pg_atomic_read_u32(&server->renamed);
	out->minute_renamed_max = Max(pg_atomic_read_u32(&server->minute_renamed_max),
								  out->renamed);
	out->renames = pg_atomic_read_u64(&server->renames);
	return true;
}

/*
 * Copy the server-wide minute rows at or after since, oldest first, into a
 * palloc'd array; *count says how many.
 */
PhAppServerMinute *
ph_accounting_copy_server_minutes(TimestampTz since, int *count)
{
	PhAppServer *server;
	PhAppServerMinute *out;
	int			n = 0;

	*count = 0;
	if (ph_acct == NULL)
		return NULL;
	server = ph_acct->server;
	out = palloc(sizeof(PhAppServerMinute) * Max(server->minute_capacity, 1));
	LWLockAcquire(ph_acct->lock, LW_SHARED);
	for (int k = 0; k < server->minute_count; k++)
	{
		int			i = (server->minute_next - server->minute_count + k +
						 server->minute_capacity) % server->minute_capacity;

		if (server->minutes[i].at >= since)
			out[n++] = server->minutes[i];
	}
	LWLockRelease(ph_acct->lock);
	*count = n;
	return out;
}

/* ---- per application_name (metrics(), status()) ---- */

static int
cmp_app_total(const void *a, const void *b)
{
	const PhAppTotal *x = a;
	const PhAppTotal *y = b;

	if (x->order != y->order)
		return x->order > y->order ? -1 : 1;
	return strcmp(x->application_name, y->application_name);
}

static int
cmp_group_application(const void *a, const void *b)
{
	const PhAppGroupCopy *x = *(PhAppGroupCopy *const *) a;
	const PhAppGroupCopy *y = *(PhAppGroupCopy *const *) b;

	return strcmp(x->application_name, y->application_name);
}

/*
 * The groups summed per application_name ("(other)" apart), largest first
 * by transactions (by_excess: by excess connections), each with the
 * creation of its oldest group; a palloc'd array, *count entries.  The
 * groups are sorted by name first: O(n log n) in the groups.
 */
PhAppTotal *
ph_accounting_by_application(bool by_excess, int *count)
{
	PhAppGroupCopy *groups;
	PhAppGroupCopy **sorted;
	PhAppTotal *totals;
	int			n;
	int			nsorted = 0;
	int			ntotals = 0;

	*count = 0;
	if (ph_acct == NULL)
		return NULL;
	groups = ph_accounting_copy(false, &n);
	sorted = palloc(sizeof(PhAppGroupCopy *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (!groups[i].other)	/* not an application */
			sorted[nsorted++] = &groups[i];
	qsort(sorted, nsorted, sizeof(PhAppGroupCopy *), cmp_group_application);
	totals = palloc0(sizeof(PhAppTotal) * Max(nsorted, 1));
	for (int i = 0; i < nsorted; i++)
	{
		PhAppGroupCopy *g = sorted[i];
		PhAppTotal *t = ntotals > 0 ? &totals[ntotals - 1] : NULL;

		if (t == NULL || strcmp(t->application_name, g->application_name) != 0)
		{
			t = &totals[ntotals++];
			strlcpy(t->application_name, g->application_name, NAMEDATALEN);
			t->created = g->created;
		}
		t->created = Min(t->created, g->created);
		t->connections += g->connections;
		t->connections_peak += g->connections_peak;
		t->in_xact += g->in_xact;
		t->in_xact_peak += g->in_xact_peak;
		t->xacts += g->xacts;
		t->xact_time_us += g->xact_time_us;
		t->idle_in_xact_us += g->idle_in_xact_us;
		t->excess += g->connections_peak > g->in_xact_peak ?
			g->connections_peak - g->in_xact_peak : 0;
	}
	for (int k = 0; k < ntotals; k++)
		totals[k].order = by_excess ? totals[k].excess : totals[k].xacts;
	qsort(totals, ntotals, sizeof(PhAppTotal), cmp_app_total);
	pfree(sorted);
	pfree(groups);
	*count = ntotals;
	return totals;
}
