/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		pool_health.metrics(): the health figures in Prometheus text
 *		exposition format (version 0.0.4), every family with # HELP and
 *		# TYPE, label values escaped.  Per-group series are bounded: the
 *		pool_health.metrics_top_groups largest groups, the rest summed
 *		under the label value "(other)".
 *
 * One pass over backend status, classified; the worker's figures,
 * counters and policies come from shared memory (read under
 * ph_shared->lock, shared) when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"	/* get_database_name() before PG 19 */
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/lsyscache.h"	/* get_database_name() from PG 19 */
#include "utils/timestamp.h"

#include "pool_health.h"

/* The label value for the groups beyond the top ones. */
#define OTHER_GROUPS "(other)"

static void
family(StringInfo buf, const char *name, const char *type, const char *help)
{
	appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the exposition format says: \\, \" and \n. */
static void
append_label_value(StringInfo buf, const char *value)
{
	appendStringInfoChar(buf, '"');
	for (const char *c = value; *c; c++)
	{
		if (*c == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*c == '"')
			appendStringInfoString(buf, "\\\"");
		else if (*c == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *c);
	}
	appendStringInfoChar(buf, '"');
}

static void
sample_labelled(StringInfo buf, const char *name, const char *label,
				const char *value, double number)
{
	appendStringInfo(buf, "%s{%s=", name, label);
	append_label_value(buf, value);
	appendStringInfo(buf, "} %.17g\n", number);
}

static void
gauge(StringInfo buf, const char *name, const char *help, double value)
{
	family(buf, name, "gauge", help);
	appendStringInfo(buf, "%s %.17g\n", name, value);
}

static void
counter(StringInfo buf, const char *name, const char *help, double value)
{
	family(buf, name, "counter", help);
	appendStringInfo(buf, "%s %.17g\n", name, value);
}

typedef struct Group
{
	char	   *key;
	int			count;
} Group;

static int
group_key_cmp(const void *a, const void *b)
{
	return strcmp(((const Group *) a)->key, ((const Group *) b)->key);
}

static int
group_count_cmp(const void *a, const void *b)
{
	const Group *x = a;
	const Group *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return strcmp(x->key, y->key);
}

typedef enum GroupBy
{
	BY_DATABASE,
	BY_ROLE,
	BY_APPLICATION
} GroupBy;

static char *
group_key(const PhBackend *be, GroupBy by)
{
	char	   *name = NULL;

	if (by == BY_DATABASE && OidIsValid(be->database_id))
		name = get_database_name(be->database_id);
	else if (by == BY_ROLE && OidIsValid(be->role_id))
		name = GetUserNameFromId(be->role_id, true);
	else if (by == BY_APPLICATION)
		name = pstrdup(be->application_name);
	return name ? name : pstrdup("");
}

/* Client connections per group: the top ones, then "(other)". */
static void
groups(StringInfo buf, const PhSnapshot *snap, GroupBy by, const char *name,
	   const char *label, const char *help)
{
	Group	   *all = palloc(sizeof(Group) * Max(snap->nbackends, 1));
	int			n = 0;
	int			ngroups = 0;
	int			other = 0;

	for (int i = 0; i < snap->nbackends; i++)
		if (snap->backends[i].is_client)
		{
			all[n].key = group_key(&snap->backends[i], by);
			all[n].count = 1;
			n++;
		}
	qsort(all, n, sizeof(Group), group_key_cmp);
	for (int i = 0; i < n; i++)
	{
		if (ngroups > 0 && strcmp(all[ngroups - 1].key, all[i].key) == 0)
			all[ngroups - 1].count++;
		else
			all[ngroups++] = all[i];
	}
	qsort(all, ngroups, sizeof(Group), group_count_cmp);

	family(buf, name, "gauge", help);
	for (int i = 0; i < ngroups; i++)
	{
		if (i < ph_metrics_top_groups)
			sample_labelled(buf, name, label, all[i].key, all[i].count);
		else
			other += all[i].count;
	}
	if (ngroups > ph_metrics_top_groups)
		sample_labelled(buf, name, label, OTHER_GROUPS, other);
}

/* What only the preloaded library knows: worker, counters, policies. */
static void
shared_figures(StringInfo buf, TimestampTz now)
{
	PhWorkerState w;
	PhPolicySet set;
	PhPolicy   *policies;

	LWLockAcquire(ph_shared->lock, LW_SHARED);
	w = ph_shared->worker;
	set = ph_shared->policy_set;
	policies = palloc(sizeof(PhPolicy) * Max(set.count, 1));
	memcpy(policies, set.policies, sizeof(PhPolicy) * set.count);
	LWLockRelease(ph_shared->lock);

	gauge(buf, "pool_health_worker_up", "Whether the pool_health worker is running (1) or not (0).",
		  w.pid != 0);
	counter(buf, "pool_health_worker_samples_total", "Samples taken by the worker.",
			(double) w.samples);
	counter(buf, "pool_health_worker_errors_total", "Worker cycles that failed with an error.",
			(double) w.errors);
	counter(buf, "pool_health_worker_starts_total", "Times the worker was started.",
			(double) w.restarts);
	if (w.last_sample_at != 0)
		gauge(buf, "pool_health_worker_last_sample_age_seconds",
			  "Seconds since the worker's last sample.",
			  (double) (now - w.last_sample_at) / USECS_PER_SEC);
	counter(buf, "pool_health_terminations_total",
			"Sessions ended by pool_health (worker and functions).",
			(double) pg_atomic_read_u64(&ph_shared->terminations));
	counter(buf, "pool_health_refusals_total",
			"Connections refused by pool_health admission control.",
			(double) pg_atomic_read_u64(&ph_shared->refusals));
	gauge(buf, "pool_health_policies", "Enabled policies the worker enforces.", set.count);

	family(buf, "pool_health_policy_connections", "gauge",
		   "Client sessions counted against each policy's quota.");
	for (int i = 0; i < set.count; i++)
		sample_labelled(buf, "pool_health_policy_connections", "policy",
						NameStr(policies[i].name),
						pg_atomic_read_u32(&set.counters[i].connections));
	family(buf, "pool_health_policy_max_connections", "gauge",
		   "Quota (max_connections) of each policy that has one.");
	for (int i = 0; i < set.count; i++)
		if (policies[i].max_connections > 0)
			sample_labelled(buf, "pool_health_policy_max_connections", "policy",
							NameStr(policies[i].name), policies[i].max_connections);
	family(buf, "pool_health_policy_refusals_total", "counter",
		   "Connections refused per policy, since the policies last changed.");
	for (int i = 0; i < set.count; i++)
		sample_labelled(buf, "pool_health_policy_refusals_total", "policy",
						NameStr(policies[i].name),
						(double) pg_atomic_read_u64(&set.counters[i].refused));
}

/* The whole exposition, from one classified snapshot. */
char *
ph_metrics_text(const PhSnapshot *snap)
{
	StringInfoData buf;
	PhUsage		usage;
	PhThrottle	throttle;
	int			new_connections;
	static const PhLevel levels[] = {PH_LEVEL_HEALTHY, PH_LEVEL_DEGRADED,
	PH_LEVEL_CRITICAL, PH_LEVEL_EXHAUSTED};

	ph_usage_compute(snap, &usage);
	throttle = ph_throttle_advice(&usage, &new_connections);
	initStringInfo(&buf);

	gauge(&buf, "pool_health_max_connections", "The server's max_connections.",
		  usage.max_connections);
	gauge(&buf, "pool_health_reserved_connections",
		  "Slots reserved for superusers (and, from PostgreSQL 16, reserved_connections).",
		  usage.reserved_connections);
	gauge(&buf, "pool_health_usable_connections", "Slots ordinary roles can get.",
		  usage.usable);
	gauge(&buf, "pool_health_used_connections", "Client backends (counting against max_connections).",
		  usage.used);
	gauge(&buf, "pool_health_free_connections", "Usable slots not in use.", usage.free);
	gauge(&buf, "pool_health_usage_ratio", "Used over usable connections (1 is exhausted).",
		  usage.usable > 0 ? (double) usage.used / usage.usable : 1.0);

	family(&buf, "pool_health_connections", "gauge", "Client backends by state.");
	sample_labelled(&buf, "pool_health_connections", "state", "active", usage.active);
	sample_labelled(&buf, "pool_health_connections", "state", "idle", usage.idle);
	sample_labelled(&buf, "pool_health_connections", "state", "idle_in_transaction",
					usage.idle_in_transaction);
	sample_labelled(&buf, "pool_health_connections", "state", "waiting", usage.waiting);
	gauge(&buf, "pool_health_leaked_sessions",
		  "Sessions idle in transaction beyond pool_health.leak_after, or past a policy limit.",
		  usage.leaked);
	gauge(&buf, "pool_health_oldest_transaction_seconds",
		  "Age of the oldest client transaction (0 if none).",
		  usage.oldest_xact_age > 0 ? (double) usage.oldest_xact_age / USECS_PER_SEC : 0);
	gauge(&buf, "pool_health_longest_idle_in_transaction_seconds",
		  "Longest time a client session has been idle in transaction (0 if none).",
		  usage.longest_idle_in_transaction > 0 ?
		  (double) usage.longest_idle_in_transaction / USECS_PER_SEC : 0);

	family(&buf, "pool_health_level", "gauge",
		   "Health level: 1 for the current one (healthy, degraded, critical, exhausted), else 0.");
	for (int i = 0; i < lengthof(levels); i++)
		sample_labelled(&buf, "pool_health_level", "level", ph_level_name(levels[i]),
						usage.level == levels[i]);
	family(&buf, "pool_health_throttle", "gauge",
		   "Back-pressure advice for client pools: 1 for the current one, else 0.");
	for (int t = PH_THROTTLE_NONE; t <= PH_THROTTLE_EMERGENCY; t++)
		sample_labelled(&buf, "pool_health_throttle", "advice",
						ph_throttle_name((PhThrottle) t), throttle == t);
	gauge(&buf, "pool_health_suggested_new_connections",
		  "New connections a client pool may open now.", new_connections);

	groups(&buf, snap, BY_DATABASE, "pool_health_database_connections", "database",
		   "Client backends per database (the largest groups, then (other)).");
	groups(&buf, snap, BY_ROLE, "pool_health_role_connections", "role",
		   "Client backends per role (the largest groups, then (other)).");
	groups(&buf, snap, BY_APPLICATION, "pool_health_application_connections", "application_name",
		   "Client backends per application_name (the largest groups, then (other)).");

	if (ph_shared != NULL)
		shared_figures(&buf, snap->taken_at);
	return buf.data;
}
