/*-------------------------------------------------------------------------
 *
 * app_accounting_shmem.c
 *		The per-application accounting's shared memory ("pool_health
 *		accounting"): sized and requested (with its LWLock, the tranche
 *		"pool_health accounting") and created, from shmem.c's hooks; a
 *		group's counters cleared.  The layout and the lock rule of each
 *		field are in app_accounting_int.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "app_accounting_int.h"
#include "settings.h"

/* set in every process by ph_accounting_shmem_startup() (NULL: off) */
PhAccounting *ph_acct = NULL;

/* Rows a closed minute may append: the ring's budget per minute. */
int
ph_acct_rows_per_minute(void)
{
	return Min(ph_max_groups + 1, PH_APP_ROWS_PER_MINUTE);
}

static int
minute_capacity(void)
{
	return ph_max_groups > 0 ? ph_app_history_minutes * ph_acct_rows_per_minute() : 0;
}

/* Entries of the index: a power of two, at least twice the groups. */
static uint32
index_entries(void)
{
	return pg_nextpower2_32((uint32) (2 * (ph_max_groups + 1)));
}

/* Offsets in the area, from its cache-aligned start. */
typedef struct PhAcctLayout
{
	Size		minutes;
	Size		index;
	Size		server;
	Size		backends;
	Size		size;
} PhAcctLayout;

static void
layout(PhAcctLayout *l)
{
	Size		size;

	size = add_size(offsetof(PhAccounting, groups),
					mul_size(ph_max_groups + 1, sizeof(PhAppGroup)));
	l->minutes = MAXALIGN(size);
	size = add_size(l->minutes, mul_size(minute_capacity(), sizeof(PhAppMinute)));
	l->index = MAXALIGN(size);
	size = add_size(l->index, mul_size(index_entries(), sizeof(PhAppIndexEntry)));
	l->server = TYPEALIGN(PH_CACHE_LINE, size);
	size = add_size(l->server, add_size(offsetof(PhAppServer, minutes),
										mul_size(ph_app_history_minutes,
												 sizeof(PhAppServerMinute))));
	l->backends = TYPEALIGN(PH_CACHE_LINE, size);
	size = add_size(l->backends, mul_size(MaxBackends, sizeof(PhAppBackend)));
	/* room to align the start on a cache line */
	l->size = add_size(size, PH_CACHE_LINE);
}

/* From shmem.c's request hook. */
void
ph_accounting_shmem_request(void)
{
	PhAcctLayout l;

	if (ph_max_groups <= 0)
		return;
	layout(&l);
	RequestAddinShmemSpace(l.size);
	RequestNamedLWLockTranche("pool_health accounting", 1);
}

/*
 * Clear a slot's counters: in the postmaster, or under the exclusive lock
 * with no session attached to the slot (see app_accounting_int.h).
 */
void
ph_acct_clear_counters(PhAppGroup *g)
{
	Assert(!IsUnderPostmaster || LWLockHeldByMeInMode(ph_acct->lock, LW_EXCLUSIVE));
	pg_atomic_init_u64(&g->saturation, 0);
	pg_atomic_init_u32(&g->connections_peak, 0);
	pg_atomic_init_u32(&g->in_xact_peak, 0);
	pg_atomic_init_u32(&g->minute_connections_max, 0);
	pg_atomic_init_u32(&g->minute_in_xact_max, 0);
	pg_atomic_init_u32(&g->minute_declared, 0);
	pg_atomic_init_u64(&g->xact_max_us, 0);
	pg_atomic_init_u64(&g->saturated_ms, 0);
	pg_atomic_init_u64(&g->terminated, 0);
	pg_atomic_init_u64(&g->refused, 0);
	pg_atomic_init_u64(&g->last_seen, 0);
	pg_atomic_init_u32(&g->logins, 0);
	pg_atomic_init_u32(&g->minute_logins_max, 0);
	g->xacts = 0;
	g->xact_time_us = 0;
	g->idle_in_xact_us = 0;
	memset(g->histogram, 0, sizeof(g->histogram));
	g->base_xacts = 0;
	g->base_xact_time_us = 0;
	g->base_idle_in_xact_us = 0;
	g->base_saturated_ms = 0;
}

/*
 * From shmem.c's startup hook, under AddinShmemInitLock, in every process:
 * create the area (the postmaster) or find it, and set ph_acct.
 */
void
ph_accounting_shmem_startup(void)
{
	PhAcctLayout l;
	bool		found;
	char	   *area;
	PhAccounting *acct;

	if (ph_max_groups <= 0)
		return;
	layout(&l);
	area = ShmemInitStruct("pool_health accounting", l.size, &found);
	acct = (PhAccounting *) TYPEALIGN(PH_CACHE_LINE, area);
	if (!found)
	{
		TimestampTz now = GetCurrentTimestamp();
		PhAppServer *server;

		memset(acct, 0, offsetof(PhAccounting, groups));
		acct->lock = &(GetNamedLWLockTranche("pool_health accounting"))->lock;
		acct->ngroups = ph_max_groups + 1;
		acct->minute_capacity = minute_capacity();
		acct->minutes = (PhAppMinute *) ((char *) acct + l.minutes);
		acct->index = (PhAppIndexEntry *) ((char *) acct + l.index);
		acct->index_mask = index_entries() - 1;
		acct->server = (PhAppServer *) ((char *) acct + l.server);
		acct->backends = (PhAppBackend *) ((char *) acct + l.backends);
		for (uint32 i = 0; i <= acct->index_mask; i++)
		{
			pg_atomic_init_u32(&acct->index[i].slot, 0);
			pg_atomic_init_u32(&acct->index[i].hash, 0);
		}
		if (!pg_strong_random(&acct->hash_seed, sizeof(acct->hash_seed)))
			acct->hash_seed = (uint64) now ^ ((uint64) MyProcPid << 32);
		ph_acct = acct;			/* (clear_counters asserts on it) */
		for (int i = 0; i < acct->ngroups; i++)
		{
			PhAppGroup *g = &acct->groups[i];

			memset(g, 0, offsetof(PhAppGroup, saturation));
			ph_acct_clear_counters(g);
			g->since = now;
			g->created = now;
		}
		/* slot 0: (other), always in use */
		acct->groups[0].in_use = true;
		acct->groups[0].generation = ++acct->generations;
		acct->groups[0].other = true;
		strlcpy(acct->groups[0].application_name, "(other)", NAMEDATALEN);

		server = acct->server;
		memset(server, 0, offsetof(PhAppServer, minutes));
		pg_atomic_init_u32(&server->connections, 0);
		pg_atomic_init_u32(&server->in_xact, 0);
		pg_atomic_init_u32(&server->connections_peak, 0);
		pg_atomic_init_u32(&server->in_xact_peak, 0);
		pg_atomic_init_u32(&server->minute_connections_max, 0);
		pg_atomic_init_u32(&server->minute_in_xact_max, 0);
		pg_atomic_init_u32(&server->renamed, 0);
		pg_atomic_init_u32(&server->minute_renamed_max, 0);
		pg_atomic_init_u64(&server->renames, 0);
		server->minute_capacity = ph_app_history_minutes;

		memset(acct->backends, 0, sizeof(PhAppBackend) * MaxBackends);
		for (int i = 0; i < MaxBackends; i++)
			acct->backends[i].group = -1;
	}
	ph_acct = acct;
}

/* Is the accounting on (pool_health.max_groups > 0, preloaded)? */
bool
ph_accounting_enabled(void)
{
	return ph_acct != NULL;
}

