/*-------------------------------------------------------------------------
 *
 * audit_memory.c
 *		The audit's in-memory lists: every action on a session, kept in
 *		shared memory (pool_health.audit_memory entries per list) so that
 *		it survives a rolled-back transaction, a standby's read-only state
 *		and a missing table; read back by recent_actions and, for its own
 *		sessions, by every role (my_terminations).
 *
 * Shared state: AuditShared ("pool_health audit"): the two lists, under
 * the module's own LWLock (tranche "pool_health audit"): exclusive to
 * append, shared to copy out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "audit.h"
#include "settings.h"

/*
 * An in-memory audit list: its newest "count" entries, the next one going
 * to [next].  The worker's actions and the functions' have a list each, so
 * calls cannot push the worker's records out.
 */
typedef struct AuditRing
{
	int			capacity;		/* fixed */
	int			count;			/* lock */
	int			next;			/* lock */
	PhAuditEntry *entries;		/* fixed; entries: lock */
} AuditRing;

typedef struct AuditShared
{
	LWLock	   *lock;			/* fixed at start */
	AuditRing	worker_actions;
	AuditRing	call_actions;
} AuditShared;

static AuditShared *audit = NULL;

static Size
audit_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(AuditShared)),
					mul_size(mul_size(sizeof(PhAuditEntry), ph_audit_memory), 2));
}

void
ph_audit_shmem_request(void)
{
	RequestAddinShmemSpace(audit_shmem_size());
	RequestNamedLWLockTranche("pool_health audit", 1);
}

static char *
ring_init(AuditRing *ring, char *storage)
{
	memset(ring, 0, sizeof(AuditRing));
	ring->capacity = ph_audit_memory;
	ring->entries = (PhAuditEntry *) storage;
	return storage + sizeof(PhAuditEntry) * ring->capacity;
}

/* Caller holds AddinShmemInitLock. */
void
ph_audit_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	audit = ShmemInitStruct("pool_health audit", audit_shmem_size(), &found);
	if (found)
		return;
	audit->lock = &(GetNamedLWLockTranche("pool_health audit"))->lock;
	storage = (char *) audit + MAXALIGN(sizeof(AuditShared));
	storage = ring_init(&audit->worker_actions, storage);
	(void) ring_init(&audit->call_actions, storage);
}

/* Room ph_audit_copy() needs: both lists full. */
int
ph_audit_capacity(void)
{
	return audit->worker_actions.capacity + audit->call_actions.capacity;
}

static const PhAuditEntry *
ring_entry(const AuditRing *ring, int i)
{
	int			first = (ring->next - ring->count + ring->capacity) % ring->capacity;

	return &ring->entries[(first + i) % ring->capacity];
}

/*
 * The entries of both lists, oldest first, into out (room for max, at
 * least ph_audit_capacity()).
 */
int
ph_audit_copy(PhAuditEntry *out, int max)
{
	const AuditRing *w = &audit->worker_actions;
	const AuditRing *c = &audit->call_actions;
	int			n = 0;
	int			i = 0;
	int			j = 0;

	LWLockAcquire(audit->lock, LW_SHARED);
	while ((i < w->count || j < c->count) && n < max)
	{
		if (j >= c->count ||
			(i < w->count && ring_entry(w, i)->at <= ring_entry(c, j)->at))
			out[n++] = *ring_entry(w, i++);
		else
			out[n++] = *ring_entry(c, j++);
	}
	LWLockRelease(audit->lock);
	return n;
}

/*
 * Copy, oldest first, the entries of both lists for sessions of one login
 * role into out (room for max); returns how many there are, which may be
 * more than max.  Caller holds audit->lock (shared at least).
 */
static int
copy_role_locked(Oid role_id, PhAuditEntry *out, int max)
{
	const AuditRing *w = &audit->worker_actions;
	const AuditRing *c = &audit->call_actions;
	int			n = 0;
	int			i = 0;
	int			j = 0;

	while (i < w->count || j < c->count)
	{
		const PhAuditEntry *e;

		if (j >= c->count ||
			(i < w->count && ring_entry(w, i)->at <= ring_entry(c, j)->at))
			e = ring_entry(w, i++);
		else
			e = ring_entry(c, j++);
		if (e->role_id != role_id)
			continue;
		if (n < max)
			out[n] = *e;
		n++;
	}
	return n;
}

/*
 * The entries of both lists for sessions of one login role, oldest first,
 * palloc'd, their number in *count.  Only those are copied (the lists may
 * hold a thousand entries of a few kB): counted first, then copied, again
 * if more came in between.  Nothing that can fail runs under the lock.
 */
PhAuditEntry *
ph_audit_copy_role(Oid role_id, int *count)
{
	PhAuditEntry *out = NULL;
	int			room = 0;

	for (;;)
	{
		int			n;

		LWLockAcquire(audit->lock, LW_SHARED);
		n = copy_role_locked(role_id, out, room);
		LWLockRelease(audit->lock);
		if (n <= room)
		{
			*count = n;
			return out;
		}
		if (out != NULL)
			pfree(out);
		room = n;
		out = palloc(sizeof(PhAuditEntry) * room);
	}
}

/* Append to its list: the functions' when a role requested it, else the worker's. */
void
ph_audit_memory_append(const PhAuditEntry *e)
{
	AuditRing  *ring;

	if (audit == NULL)
		return;
	ring = e->requested_by.data[0] ? &audit->call_actions : &audit->worker_actions;
	if (ring->capacity == 0)
		return;
	LWLockAcquire(audit->lock, LW_EXCLUSIVE);
	ring->entries[ring->next] = *e;
	ring->next = (ring->next + 1) % ring->capacity;
	ring->count = Min(ring->count + 1, ring->capacity);
	LWLockRelease(audit->lock);
}
