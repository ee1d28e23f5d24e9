/*-------------------------------------------------------------------------
 *
 * admission.c
 *		Admission control at connection time: a ClientAuthentication_hook
 *		(chained to any previous one) that counts every client backend,
 *		finds the policy governing a new connection among those the worker
 *		published, and refuses it (FATAL, SQLSTATE 53300) when the policy's
 *		login rate (max_logins_per_second, a token bucket) or its
 *		max_connections quota is exceeded, when the server's capacity level
 *		is at or above the policy's refuse_at (unless the policy's reserve
 *		covers the login), or when admitting it would eat into the
 *		reserve_connections other policies keep free.
 *
 * The login path fails open.  Superusers, replication connections and
 * roles listed in pool_health.protected_roles are admitted before any
 * policy is looked at (only the role lookups the server itself makes next
 * run first).  The application_name is settled as the server will settle
 * it (startup packet, "options", ALTER ROLE/DATABASE ... SET as the worker
 * published them from pg_db_role_setting, the server's setting), without
 * reading any catalog but the role lookups.  Matching cannot raise: patterns, networks and
 * names were validated when the worker compiled them, and the matcher
 * (policy_match.c) allocates nothing.  Nothing that can raise runs while
 * a lock is held; a refusal is raised after it is released.
 *
 * The counts are exact by construction, O(1) per connection:
 *	- admission.clients counts client backends from authentication to
 *	  exit; the capacity level for refuse_at is computed from it at login
 *	  (not from the last sample, and not raised by leaks);
 *	- a governed connection is counted in its policy's quota counter at
 *	  login, under the shared lock, and gives its count back at exit;
 *	  counters are keyed by policy name, so republishing the policies
 *	  neither loses nor double-counts anything;
 *	- admission.counted[] records, per PGPROC, the backend's pid and the
 *	  counter it is counted in; a backend that gets a PGPROC whose
 *	  previous backend has not yet given its count back (it does so after
 *	  releasing the PGPROC) gives it back for it, by compare-and-swap.
 *	  The worker moves a session between counters only by
 *	  compare-and-swap on that entry (ph_admission_rehome),
 *	  when two samples in a row show it governed by another policy
 *	  (application_name changed, policies changed, or it connected before
 *	  its policy existed); it increments the new counter before the swap and
 *	  decrements the old one after, so a count can be one too high for an
 *	  instant, never too low, and never below the sessions counted at
 *	  login but not yet visible in backend status.
 * Superusers and protected roles are neither refused nor counted.
 *
 * Reserves are checked against the same counts, read consistently without
 * a lock (unused_reserves()), except that a reserve whose policy's match
 * changed counts as wholly unused until the worker has re-homed the
 * sessions counted in it (match_changed); a login rate limit is a token
 * bucket per policy kept in one word, changed by compare-and-swap
 * (take_login_token()), started full when its rate or burst changes.
 *
 * Shared state: AdmissionShared ("pool_health admission"), field by field
 * below: atomics; the counters' names and the list of reserves, under the
 * published policy set's lock (policy_set.c), which the login path holds
 * while it matches, takes a token, counts and checks the reserves.  The application_name a connection will have is settled by
 * login_name.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "admission.h"
#include "app_accounting.h"
#include "evaluate.h"
#include "history.h"
#include "login_name.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/*
 * This backend: counted in admission.clients, exit callback registered,
 * and its PGPROC number (MyProc is gone when the callback runs).
 */
static bool counted_as_client = false;
static bool exit_registered = false;
static int	my_procno = -1;

#define COUNTED(pid, state)	(((uint64) (uint32) (pid) << 32) | (uint32) (state))
#define COUNTED_PID(v)		((int) (uint32) ((v) >> 32))
#define COUNTED_STATE(v)	((uint32) ((v) & 0xFFFFFFFF))

/*
 * A quota counter.  Keyed by policy name, so that a republication keeps
 * what was counted.  policy and in_use are written by the worker under the
 * policy set's lock, exclusive (ph_admission_assign_counters, called back
 * by ph_policy_set_publish), and read under it; the counts are atomics,
 * changed without the lock by connecting and exiting backends and by the
 * worker.
 */
typedef struct QuotaCounter
{
	NameData	policy;
	bool		in_use;
	pg_atomic_uint32 connections;	/* sessions counted in it now */
	pg_atomic_uint64 refused;	/* connections refused since it was made */
	pg_atomic_uint64 refused_by[PH_REFUSAL_REASONS];	/* of them, by reason */

	/*
	 * The login rate limit's token bucket, as a "theoretical arrival time"
	 * (GCRA): a login at time t takes a token if login_tat - t is at most
	 * (login_burst - 1) emission intervals, and moves login_tat one
	 * interval past max(login_tat, t).  One word, changed by
	 * compare-and-swap: no lock.  0: a full bucket.
	 */
	pg_atomic_uint64 login_tat;
	pg_atomic_uint32 login_delayed; /* refused logins held back now */

	/*
	 * Non-zero while sessions counted in it may be sessions its policy no
	 * longer governs: its policy's match columns or priority changed at a
	 * publication, and the worker has not yet re-homed them.  Meanwhile
	 * its reserve counts as wholly unused (unused_reserves()): the old
	 * sessions cannot make it look used.  Only the worker writes it (set
	 * at publication, cleared by ph_admission_rehome()); an atomic, read
	 * without a lock.
	 */
	pg_atomic_uint32 match_changed;
} QuotaCounter;

/*
 * How far beyond the most a bucket can be ahead of now (its tolerance
 * plus one interval) a login_tat may be, for concurrent takers that read
 * the clock at slightly different times; further ahead, it is stale (the
 * clock was stepped back) and the bucket counts as full.
 */
#define LOGIN_TAT_SLACK_USEC	(USECS_PER_SEC)

/*
 * A login refused for want of a token is held back until its token is due
 * (at most LOGIN_DELAY_MAX_MS), then refused: a client reconnecting in a
 * loop then tries a few times a second, not a thousand, and costs the
 * server a process only as often.  A held-back login keeps its slot of the
 * server, so at most LOGIN_DELAYED_MAX of a policy are held back at once,
 * and only in a slot no reserve keeps (count_login()); the others are
 * refused at once.
 */
#define LOGIN_DELAY_MAX_MS	200
#define LOGIN_DELAYED_MAX	4

/*
 * A policy with a reserve, as published (written with the set's lock held
 * exclusively, read under it held shared).
 */
typedef struct ReservedCounter
{
	int32		counter;		/* its quota counter, or -1 (none free) */
	int32		reserve;		/* its reserve_connections, > 0 */
	NameData	policy;
} ReservedCounter;

/*
 * counted[] holds, per PGPROC number, the pid of the client backend in it
 * (high 32 bits) and the counter it is counted in (low 32 bits: 0 none,
 * k + 1 counter k, COUNTED_EXITED once it has given its count back).
 * Only the backend itself (at login and exit) and the worker (by
 * compare-and-swap on an entry with that backend's pid) change an entry.
 */
#define COUNTED_EXITED	0xFFFFFFFF

/*
 * clients packs two counts: the client backends past authentication (low
 * 32 bits) and how many times that count has changed (high 32 bits), so
 * that a reader can tell whether it changed while it read the quota
 * counters (unused_reserves()).  One atomic add per login and exit.
 */
#define CLIENTS_COUNT(v)	((uint32) ((v) & 0xFFFFFFFF))
#define CLIENTS_ARRIVE		((UINT64CONST(1) << 32) + 1)
#define CLIENTS_LEAVE		((UINT64CONST(1) << 32) - 1)

typedef struct AdmissionShared
{
	pg_atomic_uint64 clients;	/* see CLIENTS_* above */
	pg_atomic_uint32 moving;	/* odd while the worker moves a session
								 * between counters (only it writes) */
	int			ncounters;		/* fixed: 2 x pool_health.max_policies */
	QuotaCounter *counters;		/* fixed; see QuotaCounter */
	int			nreserved;		/* the set's lock */
	ReservedCounter *reserved;	/* fixed, max_policies entries; entries: the
								 * set's lock */
	int			nprocs;			/* fixed */
	pg_atomic_uint64 *counted;	/* fixed; atomics, see above */
} AdmissionShared;

static AdmissionShared *admission = NULL;

static Size
admission_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(AdmissionShared));

	size = add_size(size, MAXALIGN(mul_size(sizeof(QuotaCounter), 2 * ph_max_policies)));
	size = add_size(size, MAXALIGN(mul_size(sizeof(ReservedCounter), ph_max_policies)));
	return add_size(size, mul_size(sizeof(pg_atomic_uint64), MaxBackends));
}

void
ph_admission_shmem_request(void)
{
	RequestAddinShmemSpace(admission_shmem_size());
}

/* Caller holds AddinShmemInitLock. */
void
ph_admission_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	admission = ShmemInitStruct("pool_health admission", admission_shmem_size(), &found);
	if (found)
		return;
	memset(admission, 0, sizeof(AdmissionShared));
	storage = (char *) admission + MAXALIGN(sizeof(AdmissionShared));
	pg_atomic_init_u64(&admission->clients, 0);
	pg_atomic_init_u32(&admission->moving, 0);
	admission->ncounters = 2 * ph_max_policies;
	admission->counters = (QuotaCounter *) storage;
	storage += MAXALIGN(sizeof(QuotaCounter) * admission->ncounters);
	for (int i = 0; i < admission->ncounters; i++)
	{
		memset(&admission->counters[i].policy, 0, sizeof(NameData));
		admission->counters[i].in_use = false;
		pg_atomic_init_u32(&admission->counters[i].connections, 0);
		pg_atomic_init_u64(&admission->counters[i].refused, 0);
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			pg_atomic_init_u64(&admission->counters[i].refused_by[r], 0);
		pg_atomic_init_u64(&admission->counters[i].login_tat, 0);
		pg_atomic_init_u32(&admission->counters[i].login_delayed, 0);
		pg_atomic_init_u32(&admission->counters[i].match_changed, 0);
	}
	admission->nreserved = 0;
	admission->reserved = (ReservedCounter *) storage;
	storage += MAXALIGN(sizeof(ReservedCounter) * ph_max_policies);
	admission->nprocs = MaxBackends;
	admission->counted = (pg_atomic_uint64 *) storage;
	for (int i = 0; i < admission->nprocs; i++)
		pg_atomic_init_u64(&admission->counted[i], 0);
}

static pg_atomic_uint64 *
counted_entry(int procno)
{

	if (procno < 0 || procno >= admission->nprocs)
		return NULL;
	return &admission->counted[procno];
}

/* Give back a count (state k + 1: counter k). */
static void
release_count(uint32 state)
{

	if (state != 0 && state != COUNTED_EXITED && state <= (uint32) admission->ncounters)
		pg_atomic_fetch_sub_u32(&admission->counters[state - 1].connections, 1);
}

/*
 * At exit (on_proc_exit: after the shared-memory callbacks, ProcKill
 * included, so MyProc is gone): give back what this backend was counted
 * in.  Never fails.
 */
static void
admission_exit(int code, Datum arg)
{
	pg_atomic_uint64 *entry = counted_entry(my_procno);

	if (entry != NULL)
	{
		uint64		old = pg_atomic_read_u64(entry);

		while (COUNTED_PID(old) == MyProcPid && COUNTED_STATE(old) != COUNTED_EXITED)
		{
			if (pg_atomic_compare_exchange_u64(entry, &old,
											   COUNTED(MyProcPid, COUNTED_EXITED)))
			{
				release_count(COUNTED_STATE(old));
				break;
			}
		}
	}
	/* after the count above: see unused_reserves() */
	if (counted_as_client)
	{
		pg_atomic_fetch_add_u64(&admission->clients, CLIENTS_LEAVE);
		counted_as_client = false;
	}
}

/* ---- the hook ---- */

/*
 * Count a refusal, and give back the count this connection took at once
 * (not at its exit): a refused connection holds no place in the quota.
 */
static void
count_refusal(int counter, PhRefusal reason, pg_atomic_uint64 *entry,
			  const Port *port, Oid role, const char *application)
{
	ph_accounting_refused(port->database_name, role, application);
	if (counter >= 0)
	{
		pg_atomic_fetch_add_u64(&admission->counters[counter].refused, 1);
		pg_atomic_fetch_add_u64(&admission->counters[counter].refused_by[reason], 1);
	}
	ph_history_count_refusal();
	if (entry != NULL)
	{
		uint64		old = pg_atomic_exchange_u64(entry, COUNTED(MyProcPid, 0));

		if (COUNTED_PID(old) == MyProcPid)
			release_count(COUNTED_STATE(old));
	}
}

/*
 * The login rate limit of a policy as a token bucket in GCRA form: the
 * emission interval (usec per login) and the tolerance (how far ahead of
 * now the theoretical arrival time may be: login_burst - 1 intervals).
 */
static void
login_rate(const PhPolicy *p, int64 *interval, int64 *tolerance)
{
	double		usec = (double) USECS_PER_SEC / p->max_logins_per_second;

	*interval = Max((int64) rint(usec), 1);
	*tolerance = *interval * (int64) Max(p->login_burst - 1, 0);
}

/*
 * Where a bucket stands at now: login_tat, or now (a full bucket) when
 * login_tat is further ahead than any taker at this rate can have put it
 * (the clock was stepped back, or the bucket is of an older, slower rate).
 */
static int64
login_base(uint64 tat, TimestampTz now, int64 interval, int64 tolerance)
{
	if ((int64) tat - now > tolerance + interval + LOGIN_TAT_SLACK_USEC)
		return now;
	return Max((int64) tat, (int64) now);
}

/*
 * Take a login token from a policy's bucket at now: 0 if one was taken,
 * else how long (usec) until one is there.  Compare-and-swap, no lock.
 */
static int64
take_login_token(QuotaCounter *counter, const PhPolicy *p, TimestampTz now)
{
	int64		interval;
	int64		tolerance;
	uint64		tat = pg_atomic_read_u64(&counter->login_tat);

	login_rate(p, &interval, &tolerance);
	for (;;)
	{
		int64		base = login_base(tat, now, interval, tolerance);

		if (base - now > tolerance)
			return base - now - tolerance;
		if (pg_atomic_compare_exchange_u64(&counter->login_tat, &tat,
										   (uint64) (base + interval)))
			return 0;
	}
}

/*
 * Hold a login refused for want of a token back until its token is due,
 * at most LOGIN_DELAY_MAX_MS, if fewer than LOGIN_DELAYED_MAX logins of
 * its policy are held back already (see LOGIN_DELAY_MAX_MS).  Returns how
 * long it waited (usec).  No lock is held; the wait ends early on a
 * signal that sets the latch (shutdown) or the postmaster's death.
 */
static int64
hold_back_login(QuotaCounter *counter, int64 retry_after)
{
	int64		waited = 0;

	if (pg_atomic_fetch_add_u32(&counter->login_delayed, 1) < LOGIN_DELAYED_MAX)
	{
		TimestampTz start = GetCurrentTimestamp();
		int64		wait = Min(retry_after, LOGIN_DELAY_MAX_MS * INT64CONST(1000));

		/* the latch may be set already: wait out the time, unless told to die */
		while (waited < wait && !ProcDiePending)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) Max((wait - waited + 999) / 1000, 1),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			waited = GetCurrentTimestamp() - start;
		}
	}
	pg_atomic_fetch_sub_u32(&counter->login_delayed, 1);
	return waited;
}

/*
 * The slots the reserves of the published policies other than the
 * counter exclude keep free now: the sum of max(0, reserve - sessions
 * counted), with the client backends counted at the same instant into
 * *clients, and the policy keeping the most into *largest (-1: none).
 * Called under the set's lock (shared).  Raises nothing, takes no lock.
 *
 * Exact under concurrency, and never lower than the truth: a login counts
 * itself in clients before its policy's counter, an exit gives back its
 * policy's count before leaving clients, and the worker makes the
 * "moving" count odd while a session is counted in two counters; the
 * counters are read between two reads of clients (whose high half changes
 * at every login and exit) and of moving, and read again when either
 * changed.  A reading between those writes can only see a session as
 * taking a slot outside any reserve (counted in clients, not yet or no
 * longer in its counter): more slots taken, never fewer.  After 100
 * unstable readings (a storm of logins), each reserve is counted as if
 * it were wholly unused: refusing too much rather than eating a reserve.
 */
/*
 * The sessions of counter c that use its policy's reserve: those counted
 * in it, or none while they may be another policy's (match_changed).
 */
static int
reserve_counted(int c)
{
	if (c < 0 || c >= admission->ncounters ||
		pg_atomic_read_u32(&admission->counters[c].match_changed) != 0)
		return 0;
	return (int) pg_atomic_read_u32(&admission->counters[c].connections);
}

static int
unused_reserves(int exclude, uint32 *clients, int *largest)
{
	for (int attempt = 0;; attempt++)
	{
		uint32		moving1 = pg_atomic_read_u32(&admission->moving);
		uint64		clients1;
		uint64		clients2;
		int			sum = 0;
		int			most = 0;

		pg_read_barrier();
		clients1 = pg_atomic_read_u64(&admission->clients);
		pg_read_barrier();
		*largest = -1;
		for (int i = 0; i < admission->nreserved; i++)
		{
			const ReservedCounter *r = &admission->reserved[i];
			int			counted = 0;
			int			unused;

			if (r->counter == exclude && exclude >= 0)
				continue;
			if (attempt < 100)
				counted = reserve_counted(r->counter);
			unused = Max(r->reserve - counted, 0);
			sum += unused;
			if (unused > most)
			{
				most = unused;
				*largest = i;
			}
		}
		pg_read_barrier();
		clients2 = pg_atomic_read_u64(&admission->clients);
		pg_read_barrier();
		if ((clients1 == clients2 && (moving1 & 1) == 0 &&
			 pg_atomic_read_u32(&admission->moving) == moving1) || attempt >= 100)
		{
			*clients = Max(CLIENTS_COUNT(clients1), CLIENTS_COUNT(clients2));
			return sum;
		}
		pg_spin_delay();
	}
}

/* What a login takes from its governing policy, under the set's lock. */
typedef struct LoginMatch
{
	pg_atomic_uint64 *entry;	/* this backend's counted[] entry, or NULL */
	bool		governed;		/* a policy governs it (below) */
	NameData	policy_name;
	int32		max_connections;
	int8		refuse_at;
	int32		reserve;		/* reserve_connections */
	double		max_logins_per_second;
	int32		login_burst;
	int32		counter;		/* -1: not counted */
	uint32		connections;	/* counted in it, this login included */
	int64		retry_after;	/* > 0: no login token, usec until one */
	bool		hold_back;		/* then: it may wait in a free slot */
	bool		within_reserve; /* its policy's reserve covers it */
	/* the reserve check (reserve_refused: admitting it would eat one) */
	bool		reserve_refused;
	uint32		clients;		/* client backends, this login included */
	int			unused;			/* slots the other reserves keep free */
	NameData	reserve_policy; /* the policy keeping the most of them */
	int32		reserve_of_it;
	int			unused_of_it;
} LoginMatch;

/*
 * Called under the published set's lock (shared), with the policy
 * governing the login or NULL: take a login token when the policy limits
 * the login rate (a login refused for want of one is not counted); count
 * the login in its policy's counter, first, then check the reserves:
 * concurrent logins cannot both slip in.  Raises nothing.
 */
static void
count_login(const PhPolicy *p, void *arg)
{
	LoginMatch *m = (LoginMatch *) arg;
	int			largest;

	m->counter = -1;
	if (p != NULL)
	{
		m->governed = true;
		m->policy_name = p->name;
		m->max_connections = p->max_connections;
		m->refuse_at = p->refuse_at;
		m->reserve = p->reserve_connections;
		m->max_logins_per_second = p->max_logins_per_second;
		m->login_burst = p->login_burst;
		m->counter = p->counter;
		if (m->counter < 0 || m->counter >= admission->ncounters)
			m->counter = -1;	/* no counter: the quota cannot be kept */
		if (m->counter >= 0 && p->max_logins_per_second > 0 &&
			(m->retry_after = take_login_token(&admission->counters[m->counter],
											   p, GetCurrentTimestamp())) > 0)
		{
			/*
			 * Refused.  It may be held back (keeping its slot a while) only
			 * in a slot no reserve keeps.
			 */
			m->hold_back = true;
			if (admission->nreserved > 0)
			{
				int			unused = unused_reserves(m->counter, &m->clients, &largest);

				m->hold_back = ph_rules_usable(NULL) - (int) m->clients >= unused;
			}
			return;
		}
		if (m->counter >= 0)
		{
			m->connections = pg_atomic_add_fetch_u32(&admission->counters[m->counter].connections, 1);
			if (m->entry != NULL)
				pg_atomic_write_u64(m->entry, COUNTED(MyProcPid, m->counter + 1));
			m->within_reserve = m->connections <= (uint32) Max(m->reserve, 0);
		}
	}

	/*
	 * A login its own policy's reserve covers takes a slot kept for it;
	 * any other is admitted only if the free slots left after it still
	 * cover the reserves not in use.
	 */
	if (admission->nreserved == 0 || m->within_reserve)
		return;
	m->unused = unused_reserves(m->counter, &m->clients, &largest);
	if (m->unused > 0 &&
		ph_rules_usable(NULL) - (int) m->clients < m->unused)
	{
		const ReservedCounter *r = &admission->reserved[largest];

		m->reserve_refused = true;
		m->reserve_policy = r->policy;
		m->reserve_of_it = r->reserve;
		m->unused_of_it = Max(r->reserve - reserve_counted(r->counter), 0);
	}
}

/*
 * The admission decision for an authenticated, non-replication connection
 * (admission on).  The order: the login rate, the quota, refuse_at (not
 * for a login its policy's reserve covers), the reserves.
 */
static void
admit(Port *port, pg_atomic_uint64 *entry)
{
	Oid			role;
	char		name[NAMEDATALEN];
	PhMatchKey	key;
	LoginMatch	m;

	/* the lookups InitializeSessionUserId() makes right after this hook */
	role = get_role_oid(port->user_name, true);
	if (ph_rules_exemption(true, OidIsValid(role), false,
						   OidIsValid(role) && ph_role_name_protected(port->user_name),
						   OidIsValid(role) && superuser_arg(role), false) != PH_EXEMPT_NONE)
		return;

	ph_login_application_name(port, role, name);
	key.database_id = InvalidOid;
	key.role_id = role;
	key.database = port->database_name;
	key.application_name = name;
	key.client_addr = &port->raddr;

	memset(&m, 0, sizeof(m));
	m.entry = entry;
	ph_policy_set_match(&key, count_login, &m);

	if (m.retry_after > 0)
	{
		int64		retry_ms;

		count_refusal(m.counter, PH_REFUSAL_RATE, entry, port, role, name);
		if (m.hold_back)
			m.retry_after -= hold_back_login(&admission->counters[m.counter], m.retry_after);
		retry_ms = Max((m.retry_after + 999) / 1000, 1);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("too many logins for pool_health policy \"%s\"",
						NameStr(m.policy_name)),
				 errdetail("The policy admits %.15g logins per second, %d at once (max_logins_per_second, login_burst): retry after " INT64_FORMAT " ms.",
						   m.max_logins_per_second, m.login_burst, retry_ms),
				 errhint("Keep connections open in a pool rather than reconnecting, or raise max_logins_per_second of policy \"%s\" in pool_health.policies.",
						 NameStr(m.policy_name))));
	}
	if (m.max_connections > 0 && m.counter >= 0 &&
		m.connections > (uint32) m.max_connections)
	{
		count_refusal(m.counter, PH_REFUSAL_QUOTA, entry, port, role, name);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 errmsg("too many connections for pool_health policy \"%s\"",
						NameStr(m.policy_name)),
				 errdetail("Connections governed by the policy: %u open, at most %d allowed (max_connections).",
						   m.connections - 1, m.max_connections),
				 errhint("Retry when a connection of the policy has closed, or raise max_connections of policy \"%s\" in pool_health.policies.",
						 NameStr(m.policy_name))));
	}
	if (m.governed && m.refuse_at >= 0 && !m.within_reserve)
	{
		int			usable = ph_rules_usable(NULL);
		int			used = (int) CLIENTS_COUNT(pg_atomic_read_u64(&admission->clients)) - 1;
		PhLevel		level = ph_capacity_level(used, usable);

		if (level >= (PhLevel) m.refuse_at)
		{
			count_refusal(m.counter, PH_REFUSAL_REFUSE_AT, entry, port, role, name);
			ereport(FATAL,
					(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
					 errmsg("connection refused by pool_health policy \"%s\": server connection health is %s",
							NameStr(m.policy_name), ph_level_name(level)),
					 errdetail("%s. The policy refuses new connections while the capacity level is %s or worse (refuse_at), to keep the remaining connections for other applications.",
							   ph_usage_words(used, usable), ph_level_name((PhLevel) m.refuse_at)),
					 errhint("Retry later, or change refuse_at of policy \"%s\" in pool_health.policies.",
							 NameStr(m.policy_name))));
		}
	}
	if (m.reserve_refused)
	{
		int			usable = ph_rules_usable(NULL);
		int			free_after = Max(usable - (int) m.clients, 0);

		count_refusal(m.counter, PH_REFUSAL_RESERVE, entry, port, role, name);
		ereport(FATAL,
				(errcode(ERRCODE_TOO_MANY_CONNECTIONS),
				 m.governed ?
				 errmsg("connection refused by pool_health policy \"%s\": the free connections are reserved",
						NameStr(m.policy_name)) :
				 errmsg("connection refused by pool_health: the free connections are reserved"),
				 errdetail("%d of %d usable connections would be in use, leaving %d free, and reserve_connections keeps %d free for other policies: policy \"%s\" reserves %d and uses %d of them.",
						   (int) m.clients, usable, free_after, m.unused,
						   NameStr(m.reserve_policy), m.reserve_of_it,
						   m.reserve_of_it - m.unused_of_it),
				 errhint("Retry when connections have closed, or lower reserve_connections in pool_health.policies.")));
	}
}

static void
ph_client_authentication(Port *port, int status)
{
	pg_atomic_uint64 *entry;

	if (prev_client_auth_hook)
		prev_client_auth_hook(port, status);
	if (status != STATUS_OK || admission == NULL ||
		!ph_rules_is_client(MyBackendType, am_walsender))
		return;

	/*
	 * From here to exit this backend counts as a client.  It gives its
	 * counts back as the last thing it does, once its PGPROC and its entry
	 * in backend status are released: no one ever sees more sessions of a
	 * policy than its quota (shared memory stays attached until then).
	 */
	if (!exit_registered)
	{
		on_proc_exit(admission_exit, (Datum) 0);
		exit_registered = true;
	}
	my_procno = ph_my_procno();
	entry = counted_entry(my_procno);
	if (entry != NULL)
	{
		uint64		old = pg_atomic_read_u64(entry);

		while (!pg_atomic_compare_exchange_u64(entry, &old, COUNTED(MyProcPid, 0)))
			;

		/*
		 * The previous backend of this PGPROC gives its count back after
		 * ProcKill, so a new backend can get the PGPROC first: give the
		 * count back for it (it is gone from backend status); its exit
		 * callback finds the entry taken and does nothing.
		 */
		if (COUNTED_PID(old) != MyProcPid && COUNTED_STATE(old) != COUNTED_EXITED)
			release_count(COUNTED_STATE(old));
	}
	/* before the policy's count (count_login): see unused_reserves() */
	pg_atomic_fetch_add_u64(&admission->clients, CLIENTS_ARRIVE);
	counted_as_client = true;

	if (ph_admission)
		admit(port, entry);
}

/* From _PG_init, when preloaded. */
void
ph_admission_install_hook(void)
{
	prev_client_auth_hook = ClientAuthentication_hook;
	ClientAuthentication_hook = ph_client_authentication;
}

/* ---- the worker's side ---- */

/* Do two policies match the same sessions (all match columns equal)? */
static bool
same_match(const PhPolicy *a, const PhPolicy *b)
{
	return a->match_database == b->match_database &&
		(!a->match_database || strcmp(NameStr(a->database), NameStr(b->database)) == 0) &&
		a->match_role == b->match_role &&
		(!a->match_role || strcmp(NameStr(a->role), NameStr(b->role)) == 0) &&
		a->match_application == b->match_application &&
		(!a->match_application || strcmp(a->application_pattern, b->application_pattern) == 0) &&
		a->match_client == b->match_client &&
		(!a->match_client || memcmp(&a->client, &b->client, sizeof(PhNetwork)) == 0);
}

/*
 * A counter kept from the published policy was to the new one (same name,
 * or renamed): a bucket of another rate or burst starts full (its
 * login_tat means nothing at the new rate); when the sessions it governs
 * may have changed (match columns or priority), its reserve counts as
 * unused until the worker has re-homed them (match_changed).
 */
static void
kept_counter(QuotaCounter *counter, const PhPolicy *was, const PhPolicy *now)
{
	if (was->max_logins_per_second != now->max_logins_per_second ||
		was->login_burst != now->login_burst)
		pg_atomic_write_u64(&counter->login_tat, 0);
	if (!same_match(was, now) || was->priority != now->priority)
		pg_atomic_write_u32(&counter->match_changed, 1);
}

/*
 * Give each policy of a set about to be published its quota counter: the
 * one already named after it; else, for a policy renamed (a published
 * policy with the same match columns is gone), that policy's counter,
 * renamed; else a free one.  A counter is free when no published policy
 * names it and nothing is counted in it (no login can count in it then:
 * logins count only in the published set's counters).  A policy left
 * without a counter (more policies than counters) is not counted and its
 * quota not enforced until one frees up.
 * Called by the worker with the policy set's lock held exclusively, with the
 * set still published (old, nold): raises nothing.  named is the caller's
 * scratch space, ph_admission_ncounters() booleans, allocated before the
 * lock was taken.
 */
void
ph_admission_assign_counters(PhPolicy *items, int count, const PhPolicy *old,
							 int nold, bool *named)
{

	memset(named, 0, sizeof(bool) * admission->ncounters);
	for (int i = 0; i < count; i++)
	{
		items[i].counter = -1;
		for (int c = 0; c < admission->ncounters; c++)
		{
			QuotaCounter *counter = &admission->counters[c];

			if (counter->in_use &&
				strcmp(NameStr(counter->policy), NameStr(items[i].name)) == 0)
			{
				items[i].counter = c;
				named[c] = true;
				for (int j = 0; j < nold; j++)
					if (old[j].counter == c)
						kept_counter(counter, &old[j], &items[i]);
				break;
			}
		}
	}
	/* renamed policies keep their counts */
	for (int i = 0; i < count; i++)
	{
		if (items[i].counter >= 0)
			continue;
		for (int j = 0; j < nold; j++)
		{
			int			c = old[j].counter;

			if (c >= 0 && c < admission->ncounters && !named[c] &&
				admission->counters[c].in_use && same_match(&items[i], &old[j]))
			{
				admission->counters[c].policy = items[i].name;
				items[i].counter = c;
				named[c] = true;
				kept_counter(&admission->counters[c], &old[j], &items[i]);
				break;
			}
		}
	}
	for (int c = 0; c < admission->ncounters; c++)
	{
		QuotaCounter *counter = &admission->counters[c];

		if (counter->in_use && !named[c] &&
			pg_atomic_read_u32(&counter->connections) == 0)
			counter->in_use = false;
	}
	for (int i = 0, c = 0; i < count; i++)
	{
		if (items[i].counter >= 0)
			continue;
		while (c < admission->ncounters && admission->counters[c].in_use)
			c++;
		if (c == admission->ncounters)
			break;
		admission->counters[c].policy = items[i].name;
		admission->counters[c].in_use = true;
		pg_atomic_write_u64(&admission->counters[c].refused, 0);
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			pg_atomic_write_u64(&admission->counters[c].refused_by[r], 0);
		pg_atomic_write_u64(&admission->counters[c].login_tat, 0);
		pg_atomic_write_u32(&admission->counters[c].match_changed, 0);
		items[i].counter = c;
	}

	/* the reserves the login path checks (their sum fits: policy_set.c) */
	admission->nreserved = 0;
	for (int i = 0; i < count && admission->nreserved < ph_max_policies; i++)
	{
		ReservedCounter *r;

		if (items[i].reserve_connections <= 0)
			continue;
		r = &admission->reserved[admission->nreserved++];
		r->counter = items[i].counter;
		r->reserve = items[i].reserve_connections;
		r->policy = items[i].name;
	}
}

/* How many quota counters there are (fixed at server start). */
int
ph_admission_ncounters(void)
{
	return admission->ncounters;
}

/*
 * Worker, at each sample: count every visible client session where its
 * evaluation says it belongs (its governing policy's counter, or none for
 * superusers, protected roles and ungoverned sessions).  Sessions already
 * counted right are not touched; see the file header for the protocol.
 * eval must use the published set (the counters it names).
 */
void
ph_admission_rehome(const PhEvaluation *eval)
{
	static uint64 *last_seen = NULL;	/* per PGPROC: pid, wanted counter */
	static bool *pending = NULL;	/* per counter: holds another's session */

	if (!eval->policies.published)
		return;
	if (last_seen == NULL)
	{
		last_seen = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(uint64) * admission->nprocs);
		pending = MemoryContextAllocZero(TopMemoryContext,
										 sizeof(bool) * admission->ncounters);
	}
	memset(pending, 0, sizeof(bool) * admission->ncounters);
	for (int i = 0; i < eval->snap.nbackends; i++)
	{
		const PhBackend *be = &eval->snap.backends[i];
		pg_atomic_uint64 *entry;
		uint64		old;
		uint32		current;
		uint32		want = 0;

		if (!be->is_client || (entry = counted_entry(be->procno)) == NULL)
			continue;
		old = pg_atomic_read_u64(entry);
		current = COUNTED_STATE(old);
		if (COUNTED_PID(old) != be->pid || current == COUNTED_EXITED)
		{
			last_seen[be->procno] = 0;
			continue;
		}
		if (be->exemption == PH_EXEMPT_STARTING)
		{
			/* not known yet: it may be counted where it does not belong */
			if (current != 0 && current <= (uint32) admission->ncounters)
				pending[current - 1] = true;
			continue;
		}
		if (ph_rules_counted_in_quota(be))
			want = (uint32) be->policy->counter + 1;
		if (current == want)
		{
			last_seen[be->procno] = 0;
			continue;
		}
		if (current != 0 && current <= (uint32) admission->ncounters)
			pending[current - 1] = true;

		/*
		 * Move it only when two samples in a row say so: a session in its
		 * first moments may show its role before its application_name.
		 */
		if (last_seen[be->procno] != COUNTED(be->pid, want))
		{
			last_seen[be->procno] = COUNTED(be->pid, want);
			continue;
		}
		/* odd while it may be counted twice: see unused_reserves() */
		pg_atomic_fetch_add_u32(&admission->moving, 1);
		if (want != 0)
			pg_atomic_fetch_add_u32(&admission->counters[want - 1].connections, 1);
		if (pg_atomic_compare_exchange_u64(entry, &old, COUNTED(be->pid, want)))
			release_count(current);
		else if (want != 0)
			pg_atomic_fetch_sub_u32(&admission->counters[want - 1].connections, 1);
		pg_atomic_fetch_add_u32(&admission->moving, 1);
	}

	/*
	 * A counter whose policy's match changed counts its reserve again once
	 * a pass finds none of its sessions governed elsewhere (those found
	 * are moved at the next pass, and checked again at the one after).
	 */
	for (int c = 0; c < admission->ncounters; c++)
		if (!pending[c] && pg_atomic_read_u32(&admission->counters[c].match_changed) != 0)
			pg_atomic_write_u32(&admission->counters[c].match_changed, 0);
}

/* The counter of a published policy, or NULL. */
static QuotaCounter *
counter_of(const PhPolicy *policy)
{
	if (admission == NULL || policy->counter < 0 ||
		policy->counter >= admission->ncounters)
		return NULL;
	return &admission->counters[policy->counter];
}

/* Sessions counted against a published policy's quota now. */
uint32
ph_admission_counted(const PhPolicy *policy)
{
	QuotaCounter *counter = counter_of(policy);

	return counter ? pg_atomic_read_u32(&counter->connections) : 0;
}

/* Connections refused by a published policy since its counter was made. */
uint64
ph_admission_refused(const PhPolicy *policy)
{
	QuotaCounter *counter = counter_of(policy);

	return counter ? pg_atomic_read_u64(&counter->refused) : 0;
}

/* Connections a published policy refused for one reason. */
uint64
ph_admission_refused_by(const PhPolicy *policy, PhRefusal reason)
{
	QuotaCounter *counter = counter_of(policy);

	return counter ? pg_atomic_read_u64(&counter->refused_by[reason]) : 0;
}

/*
 * The part of a published policy's reserve no session of it uses now:
 * the slots kept free for it (0 without a reserve; the whole reserve
 * when it has no counter).
 */
int
ph_admission_reserve_unused(const PhPolicy *policy)
{
	QuotaCounter *counter = counter_of(policy);
	int			counted;

	if (policy->reserve_connections <= 0)
		return 0;
	counted = counter ? reserve_counted(policy->counter) : 0;
	return Max(policy->reserve_connections - counted, 0);
}

/*
 * The login tokens a published policy's bucket holds at now (fractional:
 * the next one is on its way), at most login_burst; -1 without a rate
 * limit or a counter.
 */
double
ph_admission_login_tokens(const PhPolicy *policy, TimestampTz now)
{
	QuotaCounter *counter = counter_of(policy);
	int64		interval;
	int64		tolerance;
	int64		ahead;

	if (counter == NULL || policy->max_logins_per_second <= 0)
		return -1;
	login_rate(policy, &interval, &tolerance);
	ahead = login_base(pg_atomic_read_u64(&counter->login_tat), now,
					   interval, tolerance) - now;
	if (ahead <= 0)
		return policy->login_burst;
	return Max((double) (tolerance + interval - ahead) / interval, 0.0);
}

/* The name of a refusal reason (views, metrics). */
const char *
ph_refusal_name(PhRefusal reason)
{
	switch (reason)
	{
		case PH_REFUSAL_QUOTA:
			return "max_connections";
		case PH_REFUSAL_REFUSE_AT:
			return "refuse_at";
		case PH_REFUSAL_RESERVE:
			return "reserve";
		case PH_REFUSAL_RATE:
			return "login_rate";
		default:
			return "unknown";
	}
}
