/*-------------------------------------------------------------------------
 *
 * policy.c
 *		Policies: compiling the rows of pool_health.policies (names resolved
 *		to OIDs, limits in microseconds, sorted by precedence), publishing
 *		them in shared memory for the worker, the live views and admission
 *		control, finding the policy that governs a session, and telling the
 *		worker at commit that the table changed.
 *
 * Precedence: highest priority, then the most specific match (most match
 * columns set), then the name.  The first policy in that order whose match
 * columns all match a session governs it.
 *
 * Shared state: ph_shared->policy_set, under ph_shared->lock.  The worker
 * compiles and publishes (exclusive); readers copy the set out (shared).
 * Without the preload every reader compiles the table itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "commands/dbcommands.h"	/* get_database_oid() before PG 19 */
#include "catalog/pg_database.h"	/* get_database_oid() from PG 19 */
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pool_health.h"

PG_FUNCTION_INFO_V1(pool_health_policies_changed);

Size
ph_policy_shmem_size(void)
{
	return add_size(MAXALIGN(mul_size(sizeof(PhPolicy), ph_max_policies)),
					mul_size(sizeof(PhPolicyCounter), ph_max_policies));
}

void
ph_policy_init(PhPolicySet *set, char *storage)
{
	memset(set, 0, sizeof(PhPolicySet));
	set->capacity = ph_max_policies;
	set->policies = (PhPolicy *) storage;
	set->counters = (PhPolicyCounter *)
		(storage + MAXALIGN(sizeof(PhPolicy) * ph_max_policies));
	for (int i = 0; i < set->capacity; i++)
	{
		pg_atomic_init_u32(&set->counters[i].connections, 0);
		pg_atomic_init_u64(&set->counters[i].refused, 0);
	}
}

const char *
ph_limit_name(PhLimit limit)
{
	switch (limit)
	{
		case PH_LIMIT_NONE:
			return NULL;
		case PH_LIMIT_IDLE_IN_TRANSACTION:
			return "idle_in_transaction_timeout";
		case PH_LIMIT_IDLE:
			return "idle_timeout";
		case PH_LIMIT_TRANSACTION:
			return "transaction_timeout";
		case PH_LIMIT_BLOCKING:
			return "blocking_timeout";
	}
	return NULL;
}

/* ---- compiling ---- */

static int64
interval_usec(Datum value, bool isnull)
{
	Interval   *iv;

	if (isnull)
		return 0;
	iv = DatumGetIntervalP(value);
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

static int
precedence_cmp(const void *a, const void *b)
{
	const PhPolicy *x = a;
	const PhPolicy *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	if (x->specificity != y->specificity)
		return x->specificity > y->specificity ? -1 : 1;
	return strcmp(NameStr(x->name), NameStr(y->name));
}

#define POLICY_QUERY \
	"SELECT name, priority, database, role, application_name, client_addr, " \
	"idle_in_transaction_timeout, idle_timeout, transaction_timeout, " \
	"blocking_timeout, max_connections, action, dry_run, allow_superuser, " \
	"refuse_at FROM pool_health.policies WHERE enabled"

static void
compile_row(HeapTuple tuple, TupleDesc desc, PhPolicy *p)
{
	bool		isnull;
	Datum		d;

	memset(p, 0, sizeof(PhPolicy));
	namestrcpy(&p->name, TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull)));
	p->priority = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));

	d = SPI_getbinval(tuple, desc, 3, &isnull);
	if ((p->match_database = !isnull))
	{
		namestrcpy(&p->database, NameStr(*DatumGetName(d)));
		p->database_id = get_database_oid(NameStr(p->database), true);
	}
	d = SPI_getbinval(tuple, desc, 4, &isnull);
	if ((p->match_role = !isnull))
	{
		namestrcpy(&p->role, NameStr(*DatumGetName(d)));
		p->role_id = get_role_oid(NameStr(p->role), true);
	}
	d = SPI_getbinval(tuple, desc, 5, &isnull);
	if ((p->match_application = !isnull))
		strlcpy(p->application_pattern, TextDatumGetCString(d),
				sizeof(p->application_pattern));
	d = SPI_getbinval(tuple, desc, 6, &isnull);
	if ((p->match_client = !isnull))
	{
		inet	   *net = DatumGetInetPP(d);

		p->client.family = ip_family(net) == PGSQL_AF_INET ? AF_INET : AF_INET6;
		p->client.bits = ip_bits(net);
		memcpy(p->client.addr, ip_addr(net),
			   ip_family(net) == PGSQL_AF_INET ? 4 : 16);
	}
	p->specificity = p->match_database + p->match_role +
		p->match_application + p->match_client;

	d = SPI_getbinval(tuple, desc, 7, &isnull);
	p->idle_in_transaction_timeout = interval_usec(d, isnull);
	d = SPI_getbinval(tuple, desc, 8, &isnull);
	p->idle_timeout = interval_usec(d, isnull);
	d = SPI_getbinval(tuple, desc, 9, &isnull);
	p->transaction_timeout = interval_usec(d, isnull);
	d = SPI_getbinval(tuple, desc, 10, &isnull);
	p->blocking_timeout = interval_usec(d, isnull);
	d = SPI_getbinval(tuple, desc, 11, &isnull);
	p->max_connections = isnull ? -1 : DatumGetInt32(d);
	d = SPI_getbinval(tuple, desc, 12, &isnull);
	p->terminate = strcmp(TextDatumGetCString(d), "terminate") == 0;
	p->dry_run = DatumGetBool(SPI_getbinval(tuple, desc, 13, &isnull));
	p->allow_superuser = DatumGetBool(SPI_getbinval(tuple, desc, 14, &isnull));
	d = SPI_getbinval(tuple, desc, 15, &isnull);
	if (isnull)
		p->refuse_at = -1;
	else
		p->refuse_at = strcmp(TextDatumGetCString(d), "critical") == 0 ?
			PH_LEVEL_CRITICAL : PH_LEVEL_DEGRADED;
}

/*
 * Compile the enabled rows of pool_health.policies in the current database
 * into *out (allocated in the current memory context).  Returns false, with
 * no policies, when the extension is not created here.  The table is read
 * with its owner's rights (the caller may not read it), by a fully
 * qualified query that resolves no operator or function through the
 * caller's search_path.  Needs a transaction and an active snapshot.
 */
bool
ph_policies_load(PhPolicies *out)
{
	MemoryContext caller_context = CurrentMemoryContext;
	PhTableOwner saved;

	out->count = 0;
	out->items = NULL;
	out->need_blocking = false;
	if (!ph_table_owner_begin("policies", &saved))
		return false;
	if (SPI_execute(POLICY_QUERY, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pool_health.policies");

	out->items = MemoryContextAlloc(caller_context,
									sizeof(PhPolicy) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		PhPolicy   *p = &out->items[out->count++];

		compile_row(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, p);
		if (p->blocking_timeout > 0)
			out->need_blocking = true;
	}
	ph_table_owner_end(&saved);

	qsort(out->items, out->count, sizeof(PhPolicy), precedence_cmp);
	return true;
}

/* ---- publishing and reading ---- */

/*
 * Worker: publish a compiled set as of generation (lock taken here).  When
 * the set differs from the published one, the admission counters start
 * again from zero; the worker sets them from its next sample
 * (ph_admission_correct).  Returns whether it differed.
 */
bool
ph_policies_publish(const PhPolicies *policies, uint64 generation)
{
	bool		changed = false;
	PhPolicySet *set = &ph_shared->policy_set;
	int			n = Min(policies->count, set->capacity);

	if (policies->count > set->capacity)
		ereport(WARNING,
				(errmsg("pool_health: %d enabled policies, only the first %d by precedence are used",
						policies->count, set->capacity),
				 errhint("Raise pool_health.max_policies and restart the server.")));
	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	set->compiled_generation = generation;
	/* the same set compiled again (a periodic recompile) changes nothing */
	if (!set->compiled || n != set->count ||
		memcmp(set->policies, policies->items, sizeof(PhPolicy) * n) != 0)
	{
		if (n > 0)
			memcpy(set->policies, policies->items, sizeof(PhPolicy) * n);
		set->count = n;
		set->compiled = true;
		set->version++;
		changed = true;
		for (int i = 0; i < set->capacity; i++)
		{
			pg_atomic_write_u32(&set->counters[i].connections, 0);
			pg_atomic_write_u64(&set->counters[i].refused, 0);
		}
	}
	LWLockRelease(ph_shared->lock);
	return changed;
}

uint64
ph_policies_generation(void)
{
	uint64		generation;

	LWLockAcquire(ph_shared->lock, LW_SHARED);
	generation = ph_shared->policy_set.generation;
	LWLockRelease(ph_shared->lock);
	return generation;
}

/*
 * The policies for the live views: the worker's compiled set when there is
 * one (cheap, and the same everywhere), else the table of this database.
 */
void
ph_policies_for_reading(PhPolicies *out)
{
	if (ph_shared != NULL)
	{
		PhPolicySet *set = &ph_shared->policy_set;

		LWLockAcquire(ph_shared->lock, LW_SHARED);
		if (set->compiled)
		{
			out->count = set->count;
			out->items = palloc(sizeof(PhPolicy) * Max(set->count, 1));
			memcpy(out->items, set->policies, sizeof(PhPolicy) * set->count);
			LWLockRelease(ph_shared->lock);
			out->need_blocking = false;
			for (int i = 0; i < out->count; i++)
				if (out->items[i].blocking_timeout > 0)
					out->need_blocking = true;
			return;
		}
		LWLockRelease(ph_shared->lock);
	}
	(void) ph_policies_load(out);
}

/*
 * The policies for a function that acts: the table itself when this is
 * the database they live in (pool_health.database, or any database without
 * the preload), so that a change just committed applies at once; else the
 * worker's compiled set.
 */
void
ph_policies_fresh(PhPolicies *out)
{
	if (ph_shared == NULL ||
		MyDatabaseId == get_database_oid(ph_database, true))
	{
		if (ph_policies_load(out))
			return;
	}
	ph_policies_for_reading(out);
}

/* ---- matching ---- */

bool
ph_like(const char *str, const char *pattern)
{
	return DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
												CStringGetTextDatum(str),
												CStringGetTextDatum(pattern)));
}

/* Is the client address of a session inside the network? */
bool
ph_network_contains(const PhNetwork *net, const SockAddr *addr)
{
	const unsigned char *bytes;
	int			full;
	int			rest;

	if (addr->addr.ss_family != net->family)
		return false;
	if (net->family == AF_INET)
		bytes = (const unsigned char *) &((const struct sockaddr_in *) &addr->addr)->sin_addr;
	else
		bytes = (const unsigned char *) &((const struct sockaddr_in6 *) &addr->addr)->sin6_addr;
	full = net->bits / 8;
	rest = net->bits % 8;
	if (memcmp(bytes, net->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((bytes[full] ^ net->addr[full]) & (0xFF << (8 - rest))) == 0;
}

/* The match key of a running backend. */
void
ph_match_key_for(const PhBackend *be, PhMatchKey *key)
{
	key->database_id = be->database_id;
	key->role_id = be->role_id;
	key->database = NULL;
	key->role = NULL;
	key->application_name = be->application_name;
	key->client_addr = &be->client_addr;
}

/*
 * Does a policy's database or role (by OID, else by name) match the
 * session's?  A session that has neither yet (a backend still
 * authenticating, which PostgreSQL 18 shows) matches no such policy.
 */
static bool
same_object(Oid key_id, const char *key_name, Oid policy_id, const NameData *policy_name)
{
	if (OidIsValid(key_id))
		return key_id == policy_id;
	return key_name != NULL && strcmp(key_name, NameStr(*policy_name)) == 0;
}

/* The policy governing a session, or NULL. */
const PhPolicy *
ph_policy_match(const PhPolicies *policies, const PhMatchKey *key)
{
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];

		if (p->match_database &&
			!same_object(key->database_id, key->database, p->database_id, &p->database))
			continue;
		if (p->match_role &&
			!same_object(key->role_id, key->role, p->role_id, &p->role))
			continue;
		if (p->match_client && !ph_network_contains(&p->client, key->client_addr))
			continue;
		if (p->match_application &&
			!ph_like(key->application_name ? key->application_name : "",
					 p->application_pattern))
			continue;
		return p;
	}
	return NULL;
}

/* Is the role listed in pool_health.protected_roles? */
bool
ph_role_is_protected(Oid role_id)
{
	char	   *list = pstrdup(ph_protected_roles);
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	if (!SplitIdentifierString(list, ',', &names))
		return false;			/* rejected by the setting's check */
	foreach(lc, names)
	{
		if (get_role_oid((const char *) lfirst(lc), true) == role_id)
		{
			found = true;
			break;
		}
	}
	list_free(names);
	pfree(list);
	return found;
}

/* ---- change notification ---- */

static bool change_pending = false;

/* At commit: a new generation, and a nudge to the worker. */
static void
policies_changed_callback(XactEvent event, void *arg)
{
	if (!change_pending)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		PGPROC	   *worker;

		LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
		ph_shared->policy_set.generation++;
		worker = ph_shared->worker_proc;
		LWLockRelease(ph_shared->lock);
		if (worker != NULL)
			SetLatch(&worker->procLatch);
		change_pending = false;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		change_pending = false;
}

/* Statement trigger on pool_health.policies. */
Datum
pool_health_policies_changed(PG_FUNCTION_ARGS)
{
	static bool registered = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pool_health_policies_changed() was not called as a trigger")));
	if (ph_shared != NULL)
	{
		if (!registered)
		{
			RegisterXactCallback(policies_changed_callback, NULL);
			registered = true;
		}
		change_pending = true;
	}
	return PointerGetDatum(NULL);
}
