/*-------------------------------------------------------------------------
 *
 * backend_snapshot.c
 *		The one pass over backend status that every pool_health feature
 *		shares: which backends exist, their type and state, their
 *		transaction, and what they wait for.
 *
 * The pass reads the server's shared backend status array directly, with
 * the same change-count protocol pg_stat_activity uses (a reader retries
 * an entry its backend was writing; no lock), copying only the fields
 * pool_health needs.  It does not go through pgstat's backend-local copy:
 * that copy costs a megabyte of string copying per call at 1000 backends,
 * and it is kept until the end of the transaction, which would show a
 * long-lived caller stale data.  Every pass here reads live values.
 *
 * Transaction ids and wait events come from each backend's PGPROC, read
 * without a lock as pg_stat_activity does: a value may be a moment old,
 * never torn.  Blocking counts are computed only on request and only when
 * some backend waits on a heavyweight lock (lock_waits.c).
 *
 * No shared state of pool_health is touched here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netdb.h>

#include "access/transam.h"
#include "common/ip.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "backend_snapshot.h"
#include "lock_waits.h"
#include "rules.h"
#include "xact_origin.h"

/*
 * The PGPROC number of the process in each status slot, from an array of
 * the pid each slot held when it was copied (0: unused); -1 where none
 * matches.  A regular backend's PGPROC says which slot is its own
 * (compat.h); a PGPROC counts only if its pid is the slot's, so stale
 * values of exited processes never match.  The few auxiliary processes of
 * PG 15 and 16, whose PGPROC does not say, are found by pid in their range.
 * O(slots + PGPROCs): no sort, no search per backend.
 */
static int *
map_slots_to_procs(const int *slot_pid, int nslots)
{
	int		   *procno = palloc(sizeof(int) * nslots);
	uint32		nprocs = ProcGlobal->allProcCount;

	for (int i = 0; i < nslots; i++)
		procno[i] = -1;
	for (uint32 i = 0; i < nprocs; i++)
	{
		int			slot = ph_status_slot_of_proc((int) i);

		if (slot >= 0 && slot < nslots && slot_pid[slot] != 0 &&
			ProcGlobal->allProcs[i].pid == slot_pid[slot])
			procno[slot] = (int) i;
	}
	for (int slot = MaxBackends; slot < nslots; slot++)
	{
		if (slot_pid[slot] == 0 || procno[slot] >= 0)
			continue;
		for (uint32 i = MaxBackends; i < nprocs && i < MaxBackends + NUM_AUXILIARY_PROCS; i++)
			if (ProcGlobal->allProcs[i].pid == slot_pid[slot])
				procno[slot] = (int) i;
	}
	return procno;
}

/*
 * The server's shared backend status array, found once per process by its
 * shared-memory name.  The size must match what the server allocated, so
 * a wrong size for this PostgreSQL version is an error, never a misread.
 */
static PgBackendStatus *
backend_status_array(void)
{
	static PgBackendStatus *array = NULL;
	bool		found;

	if (array == NULL)
	{
		array = ShmemInitStruct("Backend Status Array",
								mul_size(sizeof(PgBackendStatus),
										 ph_backend_status_slots()),
								&found);
		if (!found)
			elog(ERROR, "backend status array not found in shared memory");
	}
	return array;
}

/*
 * Copy one backend's status entry into *be, consistently: retry while its
 * backend is writing it.  Returns false for an unused entry.
 */
static bool
copy_status_entry(volatile PgBackendStatus *src, PhBackend *be, char *query_buf)
{
	for (;;)
	{
		int			before;
		int			after;

		pgstat_begin_read_activity(src, before);
		be->pid = src->st_procpid;
		if (be->pid > 0)
		{
			be->backend_type = src->st_backendType;
			be->state = src->st_state;
			be->database_id = src->st_databaseid;
			be->role_id = src->st_userid;
			be->backend_start = src->st_proc_start_timestamp;
			be->xact_start = src->st_xact_start_timestamp;
			be->query_start = src->st_activity_start_timestamp;
			be->state_change = src->st_state_start_timestamp;
			memcpy(&be->client_addr, (SockAddr *) &src->st_clientaddr, sizeof(SockAddr));
			strlcpy(be->application_name, src->st_appname, NAMEDATALEN);
			if (query_buf)
				strlcpy(query_buf, src->st_activity_raw,
						pgstat_track_activity_query_size);
		}
		pgstat_end_read_activity(src, after);
		if (pgstat_read_activity_complete(before, after))
			break;
		CHECK_FOR_INTERRUPTS();
	}
	return be->pid > 0;
}

/*
 * Take one pass over backend status into *snap, allocated in the current
 * memory context.  flags (PH_SNAPSHOT_*) asks for the costlier extras.
 */
void
ph_snapshot_take(PhSnapshot *snap, int flags)
{
	PgBackendStatus *array = backend_status_array();
	int			nslots = ph_backend_status_slots();
	char	   *query_buf = NULL;
	int		   *slot_pid = palloc0(sizeof(int) * nslots);
	int		   *procnos;

	if (flags & PH_SNAPSHOT_QUERY)
		query_buf = palloc(pgstat_track_activity_query_size);
	snap->taken_at = GetCurrentTimestamp();
	snap->nbackends = 0;
	snap->by_pid = NULL;
	snap->backends = palloc(sizeof(PhBackend) * nslots);

	/* the status entries, then their PGPROCs */
	for (int i = 0; i < nslots; i++)
	{
		PhBackend  *be = &snap->backends[snap->nbackends];

		if (!copy_status_entry(&array[i], be, query_buf))
			continue;
		snap->nbackends++;
		be->slot = i;
		be->query = query_buf ? pstrdup(query_buf) : NULL;
		slot_pid[i] = be->pid;
	}
	procnos = map_slots_to_procs(slot_pid, nslots);

	for (int b = 0; b < snap->nbackends; b++)
	{
		PhBackend  *be = &snap->backends[b];
		int			procno = procnos[be->slot];

		if (procno >= 0)
		{
			PGPROC	   *proc = &ProcGlobal->allProcs[procno];

			be->procno = procno;
			be->xid = ((volatile PGPROC *) proc)->xid;
			be->xmin = ((volatile PGPROC *) proc)->xmin;
			be->wait_event_info = ((volatile PGPROC *) proc)->wait_event_info;
			be->wait_start = (TimestampTz) pg_atomic_read_u64(&proc->waitStart);
		}
		else
		{
			be->procno = -1;
			be->xid = InvalidTransactionId;
			be->xmin = InvalidTransactionId;
			be->wait_event_info = 0;
			be->wait_start = 0;
		}

		be->xact_first_query = NULL;
		be->xact_first_query_at = 0;
		be->xact_tags = NULL;
		if (query_buf != NULL && be->backend_type == B_BACKEND)
			be->xact_first_query = ph_xact_origin_read(be->procno, be->pid,
													   be->state == STATE_IDLEINTRANSACTION_ABORTED,
													   &be->xact_first_query_at,
													   &be->xact_tags);

		be->is_client = ph_rules_is_client(be->backend_type, false);
		be->waiting = (be->wait_event_info & 0xFF000000) == PG_WAIT_LOCK;
		be->pins_xmin = TransactionIdIsValid(be->xid) ||
			TransactionIdIsValid(be->xmin);
		be->blocking = -1;
		be->blocking_since = 0;
		be->blocking_waiter = 0;
		be->blocking_waiter_procno = -1;
		be->blocked_by = 0;
		if (!be->waiting)
			be->wait_start = 0;
		be->leak = PH_LEAK_NONE;
		be->xact_age = be->xact_start != 0 ?
			Max(snap->taken_at - be->xact_start, 0) : -1;
		if (be->state == STATE_IDLE || ph_idle_in_transaction(be->state))
			be->idle_for = Max(snap->taken_at - be->state_change, 0);
		else
			be->idle_for = -1;
	}
	pfree(slot_pid);
	pfree(procnos);

	if (flags & PH_SNAPSHOT_BLOCKING)
		ph_lock_waits_compute(snap);
}

/*
 * Read the backend status entry of be again, for the re-check before a
 * session is signalled.  Returns false when the entry is unused now;
 * otherwise *now holds its current fields, query text and first statement
 * of its transaction included.
 */
bool
ph_snapshot_reread(const PhBackend *be, PhBackend *now)
{
	char	   *query_buf = palloc(pgstat_track_activity_query_size);

	if (!copy_status_entry(&backend_status_array()[be->slot], now, query_buf))
		return false;
	now->query = query_buf;
	now->procno = be->procno;
	now->xact_first_query = ph_xact_origin_read(be->procno, now->pid,
												now->state == STATE_IDLEINTRANSACTION_ABORTED,
												&now->xact_first_query_at,
												&now->xact_tags);
	return true;
}

/*
 * The client address as text (numeric host), into buf; false for a Unix
 * socket or an unknown address.
 */
bool
ph_client_addr_text(const SockAddr *addr, char *buf, size_t size, int *port)
{
	char		service[NI_MAXSERV];

	if (addr->addr.ss_family != AF_INET && addr->addr.ss_family != AF_INET6)
		return false;
	if (pg_getnameinfo_all(&addr->addr, addr->salen, buf, size,
						   service, sizeof(service),
						   NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return false;
	clean_ipv6_addr(addr->addr.ss_family, buf);
	if (port)
		*port = atoi(service);
	return true;
}

/*
 * May the current user see the details of this backend?  The rule of
 * pg_stat_activity: pg_read_all_stats, or the privileges of its role.
 */
bool
ph_backend_visible(const PhBackend *be)
{
	return ph_role_visible(be->role_id);
}

/* The same rule for a session of this role. */
bool
ph_role_visible(Oid role_id)
{
	Oid			me = GetUserId();

	return has_privs_of_role(me, ROLE_PG_READ_ALL_STATS) ||
		has_privs_of_role(me, role_id);
}

/* backend_type as pg_stat_activity shows it (a worker shows its bgw_type). */
const char *
ph_backend_type_name(const PhBackend *be)
{
	if (be->backend_type == B_BG_WORKER)
	{
		const char *bgw_type = GetBackgroundWorkerTypeByPid(be->pid);

		if (bgw_type != NULL)
			return pstrdup(bgw_type);
	}
	return GetBackendTypeDesc(be->backend_type);
}
