/*-------------------------------------------------------------------------
 *
 * app_xact.c
 *		The per-application accounting in each backend: the session's group
 *		(attached at login, moved when application_name changes, left at
 *		exit), its transactions' state machine, and what it publishes for
 *		the worker and the readers.  Called by hooks.c (statements,
 *		transaction statements, transaction events) and xact_origin.c (a
 *		termination); installs no hook itself.
 *
 *	- login: the transaction InitPostgres commits (a transaction event) is
 *	  the first moment the database, the role and the application_name
 *	  the session will have are all settled; the backend attaches to its
 *	  group then (connections + 1) and leaves it at exit (before_shmem_exit);
 *	- a transaction starts, for accounting, at the first statement the
 *	  per-statement hooks see under a new local transaction id
 *	  (ph_accounting_statement), and ends at its commit, abort or prepare
 *	  (ph_accounting_xact_event), whatever ends it: pool_health's own
 *	  terminations included;
 *	- an application_name changed by SET (pgbouncer, JDBC) moves the
 *	  session to its new group at the start of its next transaction (not
 *	  at the commit of the SET: a SET LOCAL is undone after the commit
 *	  callbacks run); the name is compared as stored (63 bytes); a group
 *	  counts apart the sessions attached to it since their login (logins,
 *	  and their most in a minute), so that pool_advice can tell a pool
 *	  from names a session took on;
 *	- a transaction block is counted from its BEGIN; one chained by
 *	  COMMIT or ROLLBACK AND CHAIN from the end of the one before, in the
 *	  same group; a block that fails is counted until the statement that
 *	  ends it (ROLLBACK, COMMIT, PREPARE) or the session's exit, as
 *	  pg_stat_activity shows it "idle in transaction (aborted)" until
 *	  then: its connection stays held;
 *	- time idle inside a transaction is the server's own measure
 *	  (pgStatTransactionIdleTime, as pg_stat_database.idle_in_transaction_time),
 *	  plus the idle time of a session ended while idle in it.
 *
 * The hot path takes no lock.  Shared per group, at a transaction's start
 * and end: one compare-and-swap of the group's saturation word (its
 * connections and sessions in a transaction, app_groups.c), and reads of
 * the maxima it may raise; per server, sessions in a transaction (an add
 * and a subtract).  Everything else a transaction counts (its count, time,
 * idle time, histogram bucket) goes to this backend's own slot
 * (PhAppBackend: written by this backend only, between two increments of
 * its change count, no lock; see app_accounting_int.h), which readers add
 * to the group's figures and which this backend folds into the group,
 * under the exclusive lock, when it leaves it.
 *
 * Server-wide counters (PhAppServer): client backends accounted and those
 * in a transaction, their exact peaks and per-minute maxima, each session
 * counted once whatever application_name it has or changes to; and
 * sessions that changed application_name between transactions (a pooler
 * such as pgbouncer in transaction mode forwards each client's name to
 * the server connection it lends it), for the worker's warning on
 * policies that match by name at login.  Atomics, no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "tcop/cmdtag.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "app_accounting_int.h"
#include "changecount.h"
#include "settings.h"

/* This backend's side of the server-wide counters. */
static bool server_counted = false; /* in server->connections */
static bool my_renamed = false; /* in server->renamed */
static bool my_login = false;	/* in my_group->logins (attached at login) */

/* This backend. */
static PhAppGroup *my_group = NULL; /* attached to (connections + 1) */
static PhAppBackend *my_slot = NULL;	/* its slot, while attached */
static PhAppServer *my_server = NULL;	/* ph_acct->server, kept here so that
										 * a transaction does not read the
										 * accounting's header (one page) */
static char my_application[NAMEDATALEN];	/* the name it was attached with */
static bool exit_registered = false;
static PhAppGroup *xact_group = NULL;	/* in a counted transaction */
static TimestampTz xact_started;
static TimestampTz last_xact_end = 0;	/* when this backend's last counted
										 * transaction ended */
static PgStat_Counter xact_idle_base;
static int	last_bucket = 0;	/* of this backend's last transaction */
static bool xact_explicit;		/* ... is a transaction block */
static bool xact_ending;		/* ... saw its COMMIT, ROLLBACK or PREPARE */
static XactEvent xact_chains_on;	/* ... chains (AND CHAIN) at this event */
static bool xact_failed_block;	/* ... failed: open until ROLLBACK */

/*
 * The local transaction id of the last transaction counted (this
 * backend's; read by the inline ph_accounting_statement()).
 */
LocalTransactionId ph_accounting_counted_lxid = InvalidLocalTransactionId;

static void begin_counted_xact(PhAppGroup *g, TimestampTz started, bool explicit);
static void end_counted_xact(void);

/* Between two increments of the slot's change count (no lock). */
/*
 * This backend's slot is written once per transaction, at its end: between
 * two of its transactions the other backends' work pushes its lines out of
 * the core's caches.  Fetched at the start (the line with its counters and
 * that of the bucket the last transaction took), they are there at the end
 * of a short one.  A hint: no effect on what is counted.
 */
static inline void
slot_prefetch(void)
{
#ifdef __GNUC__
	__builtin_prefetch(my_slot, 1, 3);
	__builtin_prefetch(&my_slot->histogram[last_bucket], 1, 3);
#endif
}

/* ---- the server-wide counters ---- */

/* This session logs in (first attach), or exits (last detach). */
static void
server_connection(bool login)
{
	PhAppServer *server = ph_acct->server;

	if (login && !server_counted)
	{
		uint32		n = pg_atomic_add_fetch_u32(&server->connections, 1);

		server_counted = true;
		ph_acct_atomic_max_u32(&server->connections_peak, n);
		ph_acct_atomic_max_u32(&server->minute_connections_max, n);
	}
	else if (!login && server_counted)
	{
		server_counted = false;
		if (my_renamed)
		{
			my_renamed = false;
			pg_atomic_fetch_sub_u32(&server->renamed, 1);
		}
		pg_atomic_fetch_sub_u32(&server->connections, 1);
	}
}

/* This session changed its application_name between transactions. */
static void
server_renamed(void)
{
	PhAppServer *server = ph_acct->server;

	pg_atomic_fetch_add_u64(&server->renames, 1);
	if (!my_renamed && server_counted)
	{
		uint32		n = pg_atomic_add_fetch_u32(&server->renamed, 1);

		my_renamed = true;
		ph_acct_atomic_max_u32(&server->minute_renamed_max, n);
	}
}

/* ---- the session's group ---- */

/*
 * The session attaches to its group at login (counted in its logins), or
 * leaves the group it logged in to (exit, or a change of name; before it
 * detaches: once its connections are 0, the slot may go).
 */
static void
session_login(bool login)
{
	if (login && !my_login)
	{
		uint32		n = pg_atomic_add_fetch_u32(&my_group->logins, 1);

		my_login = true;
		ph_acct_atomic_max_u32(&my_group->minute_logins_max, n);
	}
	else if (!login && my_login)
	{
		my_login = false;
		pg_atomic_fetch_sub_u32(&my_group->logins, 1);
	}
}

/*
 * This backend's slot now counts for group g (the slot's counters are
 * zero: no lock needed, a reader adds nothing either way).
 */
static void
slot_set_group(PhAppGroup *g)
{
	PhAppBackend *b = &ph_acct->backends[ph_my_procno()];

	Assert(b->xacts == 0);
	PH_BEGIN_WRITE(b);
	b->group = (int) (g - ph_acct->groups);
	PH_END_WRITE(b);
	my_slot = b;
}

/*
 * Before leaving my_group: what this backend's slot holds goes into the
 * group, under the exclusive lock (so that a reader, holding the lock,
 * counts it once), and the slot counts for no group.  No lock if the slot
 * is empty.  Never raises.
 */
static void
slot_fold(void)
{
	PhAppBackend *b = my_slot;
	PhAppGroup *g = my_group;
	bool		locked = b->xacts != 0;

	if (locked)
	{
		LWLockAcquire(ph_acct->lock, LW_EXCLUSIVE);
		g->xacts += b->xacts;
		g->xact_time_us += b->xact_time_us;
		g->idle_in_xact_us += b->idle_in_xact_us;
		for (int i = 0; i < PH_HIST_BUCKETS; i++)
			g->histogram[i] += b->histogram[i];
	}
	PH_BEGIN_WRITE(b);
	b->group = -1;
	b->xacts = 0;
	b->xact_time_us = 0;
	b->idle_in_xact_us = 0;
	if (locked)
		memset(b->histogram, 0, sizeof(b->histogram));
	PH_END_WRITE(b);
	if (locked)
		LWLockRelease(ph_acct->lock);
	my_slot = NULL;
}

/*
 * At exit, before the server's own before_shmem_exit callbacks (registered
 * after them, so run first: the session's statistics are flushed, its
 * status entry and its PGPROC released after): a counted transaction ends
 * (a failed block ends without a transaction callback; any other would at
 * the abort that follows, a moment later) while its idle time is still
 * there to read, and the session leaves its group while it may still take
 * the lock.
 */
static void
accounting_exit(int code, Datum arg)
{
	if (xact_group != NULL)
		end_counted_xact();
	if (my_group != NULL)
	{
		slot_fold();
		session_login(false);
		ph_acct_detach(my_group);
		my_group = NULL;
	}
	server_connection(false);
}

static const char *
current_application(void)
{
	return application_name != NULL ? application_name : "";
}

/*
 * Has application_name changed since the session was attached?  (As
 * stored: its first NAMEDATALEN - 1 bytes.  Not by the GUC's pointer: a
 * freed string's address may be reused by the next value.)
 */
static bool
application_changed(void)
{
	return strncmp(current_application(), my_application, NAMEDATALEN - 1) != 0;
}

/*
 * Attach this session to the group of its database, role and
 * application_name (at login, or when its application_name changed).
 */
static void
attach_session(void)
{
	PhAppGroup *old = my_group;
	const char *role;

	if (!exit_registered)
	{
		before_shmem_exit(accounting_exit, (Datum) 0);
		exit_registered = true;
	}
	my_server = ph_acct->server;
	strlcpy(my_application, current_application(), NAMEDATALEN);
	role = MyProcPort->user_name != NULL ? MyProcPort->user_name : "";
	if (old != NULL)
	{
		slot_fold();
		session_login(false);
	}
	my_group = ph_acct_attach(MyDatabaseId,
							  MyProcPort->database_name ? MyProcPort->database_name : "",
							  GetAuthenticatedUserId(), role, my_application);
	slot_set_group(my_group);
	if (old != NULL)
	{
		ph_acct_detach(old);
		server_renamed();
	}
	else
	{
		session_login(true);
		server_connection(true);
	}
}

/* Is this process a client backend of a database, past its login? */
static bool
accountable(void)
{
	return ph_acct != NULL && MyBackendType == B_BACKEND && !am_walsender &&
		MyProcPort != NULL && OidIsValid(MyDatabaseId) &&
		OidIsValid(GetSessionUserId()) && !proc_exit_inprogress &&
		MyProc != NULL && ph_my_procno() < MaxBackends;	/* it has a slot */
}

/* ---- transactions ---- */

/*
 * ph_accounting_statement() (app_accounting.h, inline), for a statement
 * under another local transaction id than the last counted: the first of
 * a new transaction starts a counted transaction.
 */
pg_attribute_hot void
ph_accounting_statement_slow(void)
{
	LocalTransactionId lxid;

	if (my_group == NULL)
		return;
	lxid = ph_my_lxid();
	if (lxid == ph_accounting_counted_lxid || lxid == InvalidLocalTransactionId)
		return;
	if (xact_group != NULL)
	{
		/* a failed block that ended unseen (never expected) */
		if (!xact_failed_block)
			return;
		end_counted_xact();
	}
	ph_accounting_counted_lxid = lxid;
	if (application_changed())
		attach_session();
	/*
	 * The transactions of one simple-query message all have its arrival as
	 * their start time: one after the first began when the one before it
	 * ended, not before.
	 */
	begin_counted_xact(my_group, Max(GetCurrentTransactionStartTimestamp(),
									 last_xact_end), false);
}

/* A counted transaction begins (explicit: a block, chained). */
static pg_attribute_hot void
begin_counted_xact(PhAppGroup *g, TimestampTz started, bool explicit)
{
	PhAppServer *server = my_server;
	uint32		n;

	n = SAT_IN_XACT(ph_acct_saturation_change(g, 0, 1, started));
	ph_acct_atomic_max_u32(&g->in_xact_peak, n);
	ph_acct_atomic_max_u32(&g->minute_in_xact_max, n);
	if (ph_client_pool_size > 0)
		ph_acct_atomic_max_u32(&g->minute_declared, (uint32) ph_client_pool_size);
	n = pg_atomic_add_fetch_u32(&server->in_xact, 1);
	ph_acct_atomic_max_u32(&server->in_xact_peak, n);
	ph_acct_atomic_max_u32(&server->minute_in_xact_max, n);
	xact_group = g;
	xact_started = started;
	xact_idle_base = pgStatTransactionIdleTime;
	slot_prefetch();
	xact_explicit = explicit;
	xact_ending = false;
	xact_chains_on = (XactEvent) -1;
	xact_failed_block = false;
}

/*
 * From the ProcessUtility hook (hooks.c), after a transaction statement at
 * top level ran without error (qc: its completion, whose tag says whether
 * a COMMIT rolled back): BEGIN makes the counted transaction a block;
 * COMMIT, ROLLBACK or PREPARE will end it, and AND CHAIN begin the next
 * at the same moment; a block that failed ends now (the server ends an
 * aborted block without a transaction callback).
 */
pg_attribute_hot void
ph_accounting_transaction_stmt(int kind, bool chain, const QueryCompletion *qc)
{
	PhAppGroup *g = xact_group;

	if (g == NULL)
		return;
	switch ((TransactionStmtKind) kind)
	{
		case TRANS_STMT_BEGIN:
		case TRANS_STMT_START:
			xact_explicit = true;
			break;
		case TRANS_STMT_COMMIT:
		case TRANS_STMT_ROLLBACK:
		case TRANS_STMT_PREPARE:
			if (xact_failed_block)
			{
				end_counted_xact();
				if (chain)
					begin_counted_xact(g, GetCurrentTimestamp(), true);
				break;
			}
			xact_ending = true;
			/* a COMMIT AND CHAIN that fails to commit does not chain */
			if (chain)
				xact_chains_on = kind == TRANS_STMT_COMMIT &&
					(qc == NULL || qc->commandTag != CMDTAG_ROLLBACK) ?
					XACT_EVENT_COMMIT : XACT_EVENT_ABORT;
			break;
		default:
			break;
	}
}

/*
 * The counted transaction ends (commit, abort or prepare): its figures
 * into this backend's slot, the group's word and the server's count.
 */
static pg_attribute_hot void
end_counted_xact(void)
{
	PhAppGroup *g = xact_group;
	PhAppBackend *b = my_slot;
	TimestampTz now = GetCurrentTimestamp();
	int64		duration = Max(now - xact_started, 0);
	int64		idle = pgStatTransactionIdleTime - xact_idle_base;
	volatile PgBackendStatus *me = MyBEEntry;

	if (idle < 0)
		idle = 0;				/* the counter was flushed meanwhile */
	/* ended while idle in it (a timeout, a termination): that idle time too */
	if (me != NULL && ph_idle_in_transaction(me->st_state) &&
		me->st_state_start_timestamp > 0 && now > me->st_state_start_timestamp)
		idle += now - me->st_state_start_timestamp;
	idle = Min(idle, duration);

	xact_group = NULL;
	last_xact_end = now;
	/* the slot counts for g: a transaction ends in the group it began in */
	Assert(b != NULL && b->group == (int) (g - ph_acct->groups));
	PH_BEGIN_WRITE(b);
	b->xacts++;
	b->xact_time_us += (uint64) duration;
	b->idle_in_xact_us += (uint64) idle;
	last_bucket = ph_hist_bucket(duration);
	b->histogram[last_bucket]++;
	PH_END_WRITE(b);
	ph_acct_atomic_max_u64(&g->xact_max_us, (uint64) duration);
	(void) ph_acct_saturation_change(g, 0, -1, now);
	pg_atomic_fetch_sub_u32(&my_server->in_xact, 1);
}

/*
 * From the transaction callback (hooks.c): a commit, abort or prepare ends
 * the counted transaction; the commit of the login's transaction attaches
 * the session.
 */
pg_attribute_hot void
ph_accounting_xact_event(XactEvent event)
{
	if (ph_acct == NULL)
		return;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (xact_group != NULL)
	{
		bool		chains = event == xact_chains_on;
		PhAppGroup *g = xact_group;

		/*
		 * An error inside a block, not its ROLLBACK nor the session's exit:
		 * the block stays open, aborted, until the statement that ends it.
		 */
		if (event == XACT_EVENT_ABORT && xact_explicit && !xact_ending &&
			!proc_exit_inprogress && IsTransactionBlock())
		{
			xact_failed_block = true;
			return;
		}
		end_counted_xact();
		if (chains)
			begin_counted_xact(g, GetCurrentTimestamp(), true);
	}
	if (event != XACT_EVENT_COMMIT)
		return;
	if (my_group == NULL && accountable())
		attach_session();		/* the login's transaction: settled */
}

/* This session is being ended by pool_health (xact_origin.c). */
void
ph_accounting_terminated(void)
{
	if (my_group != NULL)
		pg_atomic_fetch_add_u64(&my_group->terminated, 1);
}
