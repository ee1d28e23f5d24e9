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
 * (ph_adm_take_login_token()), started full when its rate or burst changes.
 *
 * Shared state: AdmissionShared ("pool_health admission"), laid out in
 * admission_int.h with the lock rule at each field, created by
 * admission_counters.c (which also has the worker's side: the counters'
 * names, re-homing, and the readers): atomics; the counters' names and
 * the list of reserves, under the published policy set's lock
 * (policy_set.c), which the login path holds while it matches, takes a
 * token (login_rate.c), counts and checks the reserves.  The
 * application_name a connection will have is settled by login_name.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/guc.h"

#include "compat.h"
#include "admission_int.h"
#include "app_accounting.h"
#include "evaluate.h"
#include "history.h"
#include "login_name.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/*
 * This backend: counted in admission.clients, exit callback registered,
 * and its PGPROC number (MyProc is gone when the callback runs).
 */
static bool counted_as_client = false;
static bool exit_registered = false;
static int	my_procno = -1;

/*
 * At exit (on_proc_exit: after the shared-memory callbacks, ProcKill
 * included, so MyProc is gone): give back what this backend was counted
 * in.  Never fails.
 */
static void
admission_exit(int code, Datum arg)
{
	pg_atomic_uint64 *entry = ph_adm_counted_entry(my_procno);

	if (entry != NULL)
	{
		uint64		old = pg_atomic_read_u64(entry);

		while (COUNTED_PID(old) == MyProcPid && COUNTED_STATE(old) != COUNTED_EXITED)
		{
			if (pg_atomic_compare_exchange_u64(entry, &old,
											   COUNTED(MyProcPid, COUNTED_EXITED)))
			{
				ph_adm_release_count(COUNTED_STATE(old));
				break;
			}
		}
	}
	/* after the count above: see unused_reserves() */
	if (counted_as_client)
	{
		pg_atomic_fetch_add_u64(&ph_adm->clients, CLIENTS_LEAVE);
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
		pg_atomic_fetch_add_u64(&ph_adm->counters[counter].refused, 1);
		pg_atomic_fetch_add_u64(&ph_adm->counters[counter].refused_by[reason], 1);
	}
	ph_history_count_refusal();
	if (entry != NULL)
	{
		uint64		old = pg_atomic_exchange_u64(entry, COUNTED(MyProcPid, 0));

		if (COUNTED_PID(old) == MyProcPid)
			ph_adm_release_count(COUNTED_STATE(old));
	}
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
static int
unused_reserves(int exclude, uint32 *clients, int *largest)
{
	for (int attempt = 0;; attempt++)
	{
		uint32		moving1 = pg_atomic_read_u32(&ph_adm->moving);
		uint64		clients1;
		uint64		clients2;
		int			sum = 0;
		int			most = 0;

		pg_read_barrier();
		clients1 = pg_atomic_read_u64(&ph_adm->clients);
		pg_read_barrier();
		*largest = -1;
		for (int i = 0; i < ph_adm->nreserved; i++)
		{
			const ReservedCounter *r = &ph_adm->reserved[i];
			int			counted = 0;
			int			unused;

			if (r->counter == exclude && exclude >= 0)
				continue;
			if (attempt < 100)
				counted = ph_adm_reserve_counted(r->counter);
			unused = Max(r->reserve - counted, 0);
			sum += unused;
			if (unused > most)
			{
				most = unused;
				*largest = i;
			}
		}
		pg_read_barrier();
		clients2 = pg_atomic_read_u64(&ph_adm->clients);
		pg_read_barrier();
		if ((clients1 == clients2 && (moving1 & 1) == 0 &&
			 pg_atomic_read_u32(&ph_adm->moving) == moving1) || attempt >= 100)
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
		if (m->counter < 0 || m->counter >= ph_adm->ncounters)
			m->counter = -1;	/* no counter: the quota cannot be kept */
		if (m->counter >= 0 && p->max_logins_per_second > 0 &&
			(m->retry_after = ph_adm_take_login_token(&ph_adm->counters[m->counter],
											   p, GetCurrentTimestamp())) > 0)
		{
			/*
			 * Refused.  It may be held back (keeping its slot a while) only
			 * in a slot no reserve keeps.
			 */
			m->hold_back = true;
			if (ph_adm->nreserved > 0)
			{
				int			unused = unused_reserves(m->counter, &m->clients, &largest);

				m->hold_back = ph_rules_usable(NULL) - (int) m->clients >= unused;
			}
			return;
		}
		if (m->counter >= 0)
		{
			m->connections = pg_atomic_add_fetch_u32(&ph_adm->counters[m->counter].connections, 1);
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
	if (ph_adm->nreserved == 0 || m->within_reserve)
		return;
	m->unused = unused_reserves(m->counter, &m->clients, &largest);
	if (m->unused > 0 &&
		ph_rules_usable(NULL) - (int) m->clients < m->unused)
	{
		const ReservedCounter *r = &ph_adm->reserved[largest];

		m->reserve_refused = true;
		m->reserve_policy = r->policy;
		m->reserve_of_it = r->reserve;
		m->unused_of_it = Max(r->reserve - ph_adm_reserve_counted(r->counter), 0);
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
			m.retry_after -= ph_adm_hold_back_login(&ph_adm->counters[m.counter], m.retry_after);
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
		int			used = (int) CLIENTS_COUNT(pg_atomic_read_u64(&ph_adm->clients)) - 1;
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
	if (status != STATUS_OK || ph_adm == NULL ||
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
	entry = ph_adm_counted_entry(my_procno);
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
			ph_adm_release_count(COUNTED_STATE(old));
	}
	/* before the policy's count (count_login): see unused_reserves() */
	pg_atomic_fetch_add_u64(&ph_adm->clients, CLIENTS_ARRIVE);
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
