/*-------------------------------------------------------------------------
 *
 * lock_waits.c
 *		Who blocks whom among the backends of one snapshot
 *		(backend_snapshot.c), as pg_blocking_pids() reports it, from one
 *		look at the lock table per snapshot; the time a wait began is
 *		PGPROC.waitStart, as pg_locks.waitstart shows it.  Also the
 *		snapshot's index by pid, which that look builds, and the re-check of
 *		one blocker before an action.
 *
 * No shared state of pool_health: the lock manager's partition locks are
 * taken (shared) once per snapshot, and released before any work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "backend_snapshot.h"
#include "lock_waits.h"

/* A pid and where to find it, in an array sorted by pid. */
typedef struct PidSlot
{
	int			pid;
	int			index;
} PidSlot;

static int
pid_slot_cmp(const void *a, const void *b)
{
	int			pa = ((const PidSlot *) a)->pid;
	int			pb = ((const PidSlot *) b)->pid;

	return (pa > pb) - (pa < pb);
}

static int
pid_slot_find(const PidSlot *slots, int nslots, int pid)
{
	PidSlot		key;
	PidSlot    *found;

	key.pid = pid;
	found = bsearch(&key, slots, nslots, sizeof(PidSlot), pid_slot_cmp);
	return found ? found->index : -1;
}

/*
 * Who blocks whom, for the waiters of one snapshot, as pg_blocking_pids()
 * (lockfuncs.c) reports it for each of them, from ONE pass over the lock
 * table: every lock partition is taken (shared) once, the locks the
 * waiters wait for are copied (their PROCLOCKs, in list order, and the
 * order of their wait queues), the partitions are released, and the
 * conflicts are worked out from the copy.  pg_blocking_pids() takes every
 * partition once per call, that is once per waiter, and copies the whole
 * lock each time: a pile-up of n sessions on one lock held the partitions
 * n times and copied n^2 PROCLOCKs.
 *
 * A waiter is blocked by a PROCLOCK of the lock it waits for that holds a
 * conflicting mode (a hard block), or that waits for a conflicting mode
 * ahead of it in the wait queue (a soft block); never by itself nor by a
 * member of its own lock group.  A backend in a lock group (a parallel
 * query) is blocked by whatever blocks any waiting member of its group,
 * and blockers are named by their group's leader, as pg_blocking_pids()
 * names them.  The copy's pointers are never followed once the
 * partitions are released.
 *
 * Out of the locks, each lock's PROCLOCKs are indexed by the modes they
 * hold and wait for, so that a waiter looks only at those whose modes
 * conflict with its own: the cost is the number of blocks found, not
 * waiters x PROCLOCKs (200 readers behind one holder: 200 looks, not
 * 40,000).
 */

/* A PROCLOCK of a lock someone waits for. */
typedef struct LockEntry
{
	int			pid;
	int			leader_pid;		/* its lock group's leader, or itself */
	int			queue_pos;		/* its place in the lock's wait queue, or -1 */
	LOCKMASK	hold_mask;		/* the modes it holds */
	LOCKMODE	wait_mode;		/* the mode it waits for here, or NoLock */
} LockEntry;

/*
 * A lock someone waits for: its PROCLOCKs are entries[first ... first +
 * count - 1]; by mode m, those holding m are held[held_at[m] ...
 * held_at[m + 1] - 1] (in list order), those waiting for m are
 * queued[queued_at[m] ... queued_at[m + 1] - 1] (in queue order), as
 * indexes in entries[].
 */
typedef struct WaitedLock
{
	const LOCKMASK *conflicts;	/* the conflict table of its lock method */
	int			first;
	int			count;
	int			held_at[MAX_LOCKMODES + 1];
	int			queued_at[MAX_LOCKMODES + 1];
} WaitedLock;

/* A waiting PGPROC. */
typedef struct LockWaiter
{
	int			lock;			/* index in locks[] */
	int			own;			/* its PROCLOCK, index in entries[] */
	int			queue_pos;		/* its place in that lock's wait queue */
	LOCKMODE	mode;			/* the mode it waits for */
	TimestampTz wait_start;		/* PGPROC.waitStart, read in the pass */
} LockWaiter;

/* The copy, and for each backend asked about, its waiting group members. */
typedef struct LockWaits
{
	/* per PGPROC number, during the pass */
	int		   *lock_of;		/* index in locks[] of the lock whose queue
								 * it is in, or -1 */
	int		   *queue_pos_of;	/* its place in that queue */
	int		   *entry_of;		/* its PROCLOCK on that lock */
	int		   *waiter_of;		/* index in waiters[], or -1 */
	WaitedLock *locks;
	int			nlocks;
	LockEntry  *entries;
	int			nentries;
	int			maxentries;
	LockWaiter *waiters;
	int			nwaiters;
	int		   *members;		/* indexes in waiters[], by asked backend */
	int			nmembers;
	int			maxmembers;
	int		   *first_member;	/* per asked backend: its members are */
	int		   *nmember;		/* members[first_member ...] */
	/* made after the pass */
	int		   *held;			/* entries by mode held (WaitedLock) */
	int		   *queued;			/* entries by mode waited for (WaitedLock) */
	int		   *seen;			/* per entry: the last search that found it */
	int			searches;
} LockWaits;

/*
 * Copy a lock that a PGPROC waits for: the places in its wait queue, and
 * its PROCLOCKs.  Every lock partition is held.
 */
static void
copy_waited_lock(LockWaits *lw, LOCK *lock)
{
	PGPROC	   *allprocs = ProcGlobal->allProcs;
	int			l = lw->nlocks++;
	WaitedLock *wl = &lw->locks[l];
	int			queued = ph_lock_queue_length(lock);
	PGPROC	   *proc = queued > 0 ? ph_lock_queue_first(lock) : NULL;

	for (int k = 0; k < queued; k++)
	{
		int			procno = (int) (proc - allprocs);

		lw->lock_of[procno] = l;
		lw->queue_pos_of[procno] = k;
		if (k + 1 < queued)
			proc = ph_lock_queue_next(lock, proc);
	}

	wl->conflicts = GetLockTagsMethodTable(&lock->tag)->conflictTab;
	wl->first = lw->nentries;
	for (PROCLOCK *proclock = ph_lock_first_proclock(lock); proclock != NULL;
		 proclock = ph_lock_next_proclock(lock, proclock))
	{
		PGPROC	   *holder = proclock->tag.myProc;
		int			procno = (int) (holder - allprocs);
		LockEntry  *e;

		if (lw->nentries == lw->maxentries)
		{
			/* as GetBlockerStatusData() does, rarely: the guess is large */
			lw->maxentries *= 2;
			lw->entries = repalloc(lw->entries, sizeof(LockEntry) * lw->maxentries);
		}
		e = &lw->entries[lw->nentries];
		e->pid = holder->pid;
		e->leader_pid = proclock->groupLeader->pid;
		e->hold_mask = proclock->holdMask;
		e->wait_mode = NoLock;
		e->queue_pos = -1;
		if (holder->waitLock == lock && lw->lock_of[procno] == l)
		{
			e->wait_mode = holder->waitLockMode;
			e->queue_pos = lw->queue_pos_of[procno];
			lw->entry_of[procno] = lw->nentries;
		}
		lw->nentries++;
	}
	wl->count = lw->nentries - wl->first;
}

/*
 * Note proc, a member of the lock group of asked backend "asked" (or that
 * backend itself), as one of its waiters if it waits.  Every lock
 * partition is held.
 */
static void
add_group_member(LockWaits *lw, int asked, PGPROC *proc)
{
	int			procno = (int) (proc - ProcGlobal->allProcs);
	int			w = lw->waiter_of[procno];

	if (w < 0)
	{
		LockWaiter *waiter;

		if (proc->waitLock == NULL)
			return;
		if (lw->lock_of[procno] < 0)
			copy_waited_lock(lw, proc->waitLock);
		if (lw->lock_of[procno] < 0 || lw->entry_of[procno] < 0)
			return;				/* not in its lock's queue: cannot be */
		w = lw->nwaiters++;
		waiter = &lw->waiters[w];
		waiter->lock = lw->lock_of[procno];
		waiter->own = lw->entry_of[procno];
		waiter->queue_pos = lw->queue_pos_of[procno];
		waiter->mode = proc->waitLockMode;
		waiter->wait_start = (TimestampTz) pg_atomic_read_u64(&proc->waitStart);
		lw->waiter_of[procno] = w;
	}
	if (lw->nmembers == lw->maxmembers)
	{
		lw->maxmembers *= 2;
		lw->members = repalloc(lw->members, sizeof(int) * lw->maxmembers);
	}
	lw->members[lw->nmembers++] = w;
	lw->nmember[asked]++;
}

/*
 * Index each copied lock's PROCLOCKs by the modes they hold and wait for
 * (a counting sort: list order and queue order are kept).  After the pass.
 */
static void
index_waited_locks(LockWaits *lw)
{
	int			nheld = 0;
	int			nqueued = 0;
	/* a queue holds PGPROCs, each once */
	int		   *queue_entry = palloc(sizeof(int) * ProcGlobal->allProcCount);

	lw->held = palloc(sizeof(int) * Max(lw->nentries * (MAX_LOCKMODES - 1), 1));
	lw->queued = palloc(sizeof(int) * Max(lw->nentries, 1));
	lw->seen = palloc(sizeof(int) * Max(lw->nentries, 1));
	memset(lw->seen, -1, sizeof(int) * Max(lw->nentries, 1));
	lw->searches = 0;

	for (int l = 0; l < lw->nlocks; l++)
	{
		WaitedLock *wl = &lw->locks[l];
		const LockEntry *entries = &lw->entries[wl->first];
		int			queued = 0;

		/* held: by mode, in list order (an entry may hold several) */
		for (int m = 1; m < MAX_LOCKMODES; m++)
		{
			wl->held_at[m] = nheld;
			for (int j = 0; j < wl->count; j++)
				if (entries[j].hold_mask & LOCKBIT_ON(m))
					lw->held[nheld++] = wl->first + j;
		}
		wl->held_at[MAX_LOCKMODES] = nheld;

		/* waited for: by mode, in queue order */
		for (int j = 0; j < wl->count; j++)
			if (entries[j].wait_mode != NoLock)
				queued = Max(queued, entries[j].queue_pos + 1);
		for (int k = 0; k < queued; k++)
			queue_entry[k] = -1;
		for (int j = 0; j < wl->count; j++)
			if (entries[j].wait_mode != NoLock)
				queue_entry[entries[j].queue_pos] = wl->first + j;
		for (int m = 1; m < MAX_LOCKMODES; m++)
		{
			wl->queued_at[m] = nqueued;
			for (int k = 0; k < queued; k++)
				if (queue_entry[k] >= 0 && lw->entries[queue_entry[k]].wait_mode == m)
					lw->queued[nqueued++] = queue_entry[k];
		}
		wl->queued_at[MAX_LOCKMODES] = nqueued;
	}
	pfree(queue_entry);
}

/*
 * The pass: for each backend asked about (its PGPROC number and pid, as
 * the snapshot saw them), the waiting members of its lock group (or
 * itself) and the locks they wait for, copied under every lock partition
 * (shared), taken once and in order, as GetLockStatusData() takes them;
 * then the copy is indexed.  Nothing is allocated while the partitions
 * are held unless a guess was too small.
 */
static void
lock_waits_take(LockWaits *lw, const int *procnos, const int *pids, int nasked)
{
	int			nprocs = (int) ProcGlobal->allProcCount;

	memset(lw, 0, sizeof(LockWaits));
	lw->lock_of = palloc(sizeof(int) * nprocs);
	lw->queue_pos_of = palloc(sizeof(int) * nprocs);
	lw->entry_of = palloc(sizeof(int) * nprocs);
	lw->waiter_of = palloc(sizeof(int) * nprocs);
	memset(lw->lock_of, -1, sizeof(int) * nprocs);
	memset(lw->entry_of, -1, sizeof(int) * nprocs);
	memset(lw->waiter_of, -1, sizeof(int) * nprocs);
	/* a PGPROC waits for one lock at most */
	lw->locks = palloc(sizeof(WaitedLock) * nprocs);
	lw->waiters = palloc(sizeof(LockWaiter) * nprocs);
	lw->maxentries = 2 * nprocs;
	lw->entries = palloc(sizeof(LockEntry) * lw->maxentries);
	lw->maxmembers = Max(nasked, 16);
	lw->members = palloc(sizeof(int) * lw->maxmembers);
	lw->first_member = palloc(sizeof(int) * Max(nasked, 1));
	lw->nmember = palloc0(sizeof(int) * Max(nasked, 1));

	for (int i = 0; i < NUM_LOCK_PARTITIONS; i++)
		LWLockAcquire(LockHashPartitionLockByIndex(i), LW_SHARED);
	for (int a = 0; a < nasked; a++)
	{
		PGPROC	   *proc;

		lw->first_member[a] = lw->nmembers;
		if (procnos[a] < 0 || procnos[a] >= nprocs)
			continue;
		proc = &ProcGlobal->allProcs[procnos[a]];
		if (proc->pid != pids[a])
			continue;			/* gone since the snapshot */
		if (proc->lockGroupLeader == NULL)
			add_group_member(lw, a, proc);
		else
		{
			dlist_iter	iter;

			dlist_foreach(iter, &proc->lockGroupLeader->lockGroupMembers)
				add_group_member(lw, a, dlist_container(PGPROC, lockGroupLink, iter.cur));
		}
	}
	for (int i = NUM_LOCK_PARTITIONS; --i >= 0;)
		LWLockRelease(LockHashPartitionLockByIndex(i));

	index_waited_locks(lw);
}

static void
lock_waits_free(LockWaits *lw)
{
	pfree(lw->lock_of);
	pfree(lw->queue_pos_of);
	pfree(lw->entry_of);
	pfree(lw->waiter_of);
	pfree(lw->locks);
	pfree(lw->waiters);
	pfree(lw->entries);
	pfree(lw->members);
	pfree(lw->first_member);
	pfree(lw->nmember);
	pfree(lw->held);
	pfree(lw->queued);
	pfree(lw->seen);
}

/*
 * The PROCLOCKs (indexes in entries[]) whose backends block waiter w:
 * those pg_blocking_pids() lists for it, each once (it may list one
 * twice: its callers count it once), in no particular order.  Into out
 * (room for the lock's PROCLOCKs); returns how many.
 */
static int
waiter_blockers(LockWaits *lw, const LockWaiter *w, int *out)
{
	const WaitedLock *lock = &lw->locks[w->lock];
	const LockEntry *own = &lw->entries[w->own];
	LOCKMASK	conflicts = lock->conflicts[w->mode];
	int			search = lw->searches++;
	int			n = 0;

	for (int m = 1; m < MAX_LOCKMODES; m++)
	{
		if ((conflicts & LOCKBIT_ON(m)) == 0)
			continue;
		/* hard blocks: a conflicting mode held */
		for (int k = lock->held_at[m]; k < lock->held_at[m + 1]; k++)
		{
			int			idx = lw->held[k];
			const LockEntry *e = &lw->entries[idx];

			if (e == own || e->leader_pid == own->leader_pid || lw->seen[idx] == search)
				continue;
			lw->seen[idx] = search;
			out[n++] = idx;
		}
		/* soft blocks: a conflicting mode waited for, ahead in the queue */
		for (int k = lock->queued_at[m]; k < lock->queued_at[m + 1]; k++)
		{
			int			idx = lw->queued[k];
			const LockEntry *e = &lw->entries[idx];

			if (e->queue_pos >= w->queue_pos)
				break;
			if (e == own || e->leader_pid == own->leader_pid || lw->seen[idx] == search)
				continue;
			lw->seen[idx] = search;
			out[n++] = idx;
		}
	}
	return n;
}

/*
 * For every backend: how many backends wait on a lock it holds (or is
 * ahead of them in the queue for), since when the earliest of those waits
 * began, and which waiter that is; for every waiter, the first backend it
 * waits for (the first pg_blocking_pids() lists that is in the snapshot).
 * Costs nothing when nobody waits.
 */
void
ph_lock_waits_compute(PhSnapshot *snap)
{
	PidSlot    *by_pid;
	int		   *asked;
	int		   *procnos;
	int		   *pids;
	int		   *counted_for;
	int		   *blockers;
	int			nasked = 0;
	LockWaits	lw;

	for (int i = 0; i < snap->nbackends; i++)
	{
		snap->backends[i].blocking = 0;
		snap->backends[i].blocking_since = 0;
		snap->backends[i].blocking_waiter = 0;
		snap->backends[i].blocking_waiter_procno = -1;
		snap->backends[i].blocked_by = 0;
		nasked += snap->backends[i].waiting;
	}
	if (nasked == 0)
		return;

	asked = palloc(sizeof(int) * nasked);
	procnos = palloc(sizeof(int) * nasked);
	pids = palloc(sizeof(int) * nasked);
	nasked = 0;
	for (int i = 0; i < snap->nbackends; i++)
	{
		if (!snap->backends[i].waiting)
			continue;
		asked[nasked] = i;
		procnos[nasked] = snap->backends[i].procno;
		pids[nasked++] = snap->backends[i].pid;
	}
	lock_waits_take(&lw, procnos, pids, nasked);

	by_pid = palloc(sizeof(PidSlot) * snap->nbackends);
	for (int i = 0; i < snap->nbackends; i++)
	{
		by_pid[i].pid = snap->backends[i].pid;
		by_pid[i].index = i;
	}
	qsort(by_pid, snap->nbackends, sizeof(PidSlot), pid_slot_cmp);
	/* which waiter a holder was last counted for: each counts it once */
	counted_for = palloc(sizeof(int) * snap->nbackends);
	memset(counted_for, -1, sizeof(int) * snap->nbackends);
	blockers = palloc(sizeof(int) * Max(lw.nentries, 1));

	for (int a = 0; a < nasked; a++)
	{
		PhBackend  *waiter = &snap->backends[asked[a]];
		/* the wait start is set a moment after the wait begins */
		TimestampTz since = waiter->wait_start != 0 ? waiter->wait_start : snap->taken_at;

		for (int m = 0; m < lw.nmember[a]; m++)
		{
			const LockWaiter *w = &lw.waiters[lw.members[lw.first_member[a] + m]];
			int			n = waiter_blockers(&lw, w, blockers);
			int			first = -1;

			for (int j = 0; j < n; j++)
			{
				int			pid = lw.entries[blockers[j]].leader_pid;
				int			holder = pid_slot_find(by_pid, snap->nbackends, pid);
				PhBackend  *h;

				if (holder < 0)
					continue;
				/* listed first: the earliest PROCLOCK of the lock's list */
				if (first < 0 || blockers[j] < first)
					first = blockers[j];
				if (counted_for[holder] == a)
					continue;
				counted_for[holder] = a;
				h = &snap->backends[holder];
				h->blocking++;
				if (h->blocking_since == 0 || since < h->blocking_since)
				{
					h->blocking_since = since;
					h->blocking_waiter = waiter->pid;
					h->blocking_waiter_procno = waiter->procno;
				}
			}
			if (waiter->blocked_by == 0 && first >= 0)
				waiter->blocked_by = lw.entries[first].leader_pid;
		}
	}
	lock_waits_free(&lw);
	pfree(asked);
	pfree(procnos);
	pfree(pids);
	pfree(counted_for);
	pfree(blockers);
	snap->by_pid = by_pid;		/* kept for ph_snapshot_find_pid() */
}

/*
 * The backend of a snapshot with this pid, or NULL: by the snapshot's pid
 * index when it has one (O(log n)), else by a scan.
 */
const PhBackend *
ph_snapshot_find_pid(const PhSnapshot *snap, int pid)
{
	int			index;

	if (snap->by_pid == NULL)
	{
		for (int i = 0; i < snap->nbackends; i++)
			if (snap->backends[i].pid == pid)
				return &snap->backends[i];
		return NULL;
	}
	index = pid_slot_find(snap->by_pid, snap->nbackends, pid);
	return index >= 0 ? &snap->backends[index] : NULL;
}

/*
 * The re-check before acting on blocking_timeout (enforce.c): does be
 * still block the waiter its blocking_since came from, in the same wait
 * (begun no later than that)?  One pass over that waiter's lock, not a
 * new snapshot.  When that waiter has moved on, false: the next
 * evaluation counts from the waits that remain.
 */
bool
ph_snapshot_still_blocking(const PhBackend *be)
{
	LockWaits	lw;
	int			procno = be->blocking_waiter_procno;
	int			pid = be->blocking_waiter;
	bool		blocks = false;
	int		   *blockers;
	int			w;

	if (pid == 0 || procno < 0)
		return false;
	lock_waits_take(&lw, &procno, &pid, 1);
	blockers = palloc(sizeof(int) * Max(lw.nentries, 1));
	w = lw.waiter_of[procno];
	/* the same wait: still waiting, stamped, and no later than it was */
	if (w >= 0 && lw.waiters[w].wait_start != 0 &&
		lw.waiters[w].wait_start <= be->blocking_since)
	{
		for (int m = 0; m < lw.nmember[0] && !blocks; m++)
		{
			int			n = waiter_blockers(&lw, &lw.waiters[lw.members[m]], blockers);

			for (int j = 0; j < n && !blocks; j++)
				blocks = lw.entries[blockers[j]].leader_pid == be->pid;
		}
	}
	lock_waits_free(&lw);
	pfree(blockers);
	return blocks;
}
