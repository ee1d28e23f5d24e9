/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		pool_health.metrics(): the health figures in Prometheus text
 *		exposition format (version 0.0.4), every family with # HELP and
 *		# TYPE, label values escaped.  Per-group series are bounded: the
 *		pool_health.metrics_top_groups largest groups, the rest summed in a
 *		family of its own (<family>_other, the unit last:
 *		..._xact_other_seconds).  An application_name is
 *		labelled only once the accounting has known it for
 *		pool_health.metrics_min_age, or if it matches
 *		pool_health.metrics_application_pattern: any role can choose its
 *		application_name, and a new name would start new series.  The
 *		level is a state set (pool_health_level{level=...}, 1 for the
 *		current one), never a label of other families: a level change
 *		starts no series.  pool_health_info{version} (always 1) gives the
 *		library's version.
 *
 * Formats one evaluation (evaluate.c): its usage, groups and copy of the
 * published policies; the worker's figures are a copy (worker_state.c), the
 * totals of terminations and refusals come from history.c; the
 * per-application figures and ages are copied out of the accounting
 * (app_readers.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "app_accounting.h"
#include "evaluate.h"
#include "groups.h"
#include "history.h"
#include "metrics.h"
#include "policy.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"

static void family(StringInfo buf, const char *name, const char *type, const char *help);
static void sample_labelled(StringInfo buf, const char *name, const char *label,
							const char *value, double number);
static void gauge(StringInfo buf, const char *name, const char *help, double value);

/*
 * Which application_names may be labels: those matching the pattern (a
 * policy of one match column, so that it is matched as the policies'
 * patterns are), and those whose oldest group in the accounting was
 * created at or before old_enough.  Built once per exposition.
 */
typedef struct LabelRule
{
	bool		everyone;		/* pool_health.metrics_min_age = 0 */
	bool		has_pattern;
	PhPolicy	pattern;
	TimestampTz old_enough;
	PhAppTotal *totals;			/* the accounting per application_name */
	int			ntotals;
	PhAppTotal **by_name;		/* the same, sorted by name */
} LabelRule;

static int
cmp_total_name(const void *a, const void *b)
{
	return strcmp((*(PhAppTotal *const *) a)->application_name,
				  (*(PhAppTotal *const *) b)->application_name);
}

static void
label_rule_init(LabelRule *rule, TimestampTz now)
{
	memset(rule, 0, sizeof(*rule));
	rule->everyone = ph_metrics_min_age_s == 0;
	if (ph_metrics_application_pattern != NULL && ph_metrics_application_pattern[0] != '\0')
	{
		/* validated by its check hook: valid, at most PH_PATTERN_MAX bytes */
		rule->has_pattern = true;
		rule->pattern.match_application = true;
		strlcpy(rule->pattern.application_pattern, ph_metrics_application_pattern,
				sizeof(rule->pattern.application_pattern));
	}
	rule->old_enough = now - (TimestampTz) ph_metrics_min_age_s * USECS_PER_SEC;
	rule->totals = ph_accounting_by_application(false, &rule->ntotals);
	rule->by_name = palloc(sizeof(PhAppTotal *) * Max(rule->ntotals, 1));
	for (int i = 0; i < rule->ntotals; i++)
		rule->by_name[i] = &rule->totals[i];
	qsort(rule->by_name, rule->ntotals, sizeof(PhAppTotal *), cmp_total_name);
}

/* May this application_name be a label? */
static bool
application_labelled(const LabelRule *rule, const char *name)
{
	PhMatchKey	key;
	PhAppTotal	probe;
	PhAppTotal *p = &probe;
	PhAppTotal **found;

	if (rule->everyone)
		return true;
	if (rule->has_pattern)
	{
		memset(&key, 0, sizeof(key));
		key.application_name = name;
		if (ph_policy_match(&rule->pattern, 1, &key) != NULL)
			return true;
	}
	strlcpy(probe.application_name, name, NAMEDATALEN);
	found = bsearch(&p, rule->by_name, rule->ntotals, sizeof(PhAppTotal *), cmp_total_name);
	return found != NULL && (*found)->created <= rule->old_enough;
}

/*
 * The per-application accounting (app_readers.c), per application_name:
 * the pool_health.metrics_top_groups applications with the most
 * transactions that may be labels, the others summed in gauges of their
 * own (<family>_other; gauges, since the set they sum changes).  (other),
 * the evicted groups, is not an application and is left out.
 */
static void
application_figures(StringInfo buf, const LabelRule *rule)
{
	static const struct
	{
		const char *name;
		const char *type;
		const char *other;
		const char *help;
	}			families[] = {
		{"pool_health_application_xacts_total", "counter",
			"pool_health_application_xacts_other",
		"Transactions finished, per application_name (since reset_application_stats(); a group evicted into (other) takes its share with it)."},
		{"pool_health_application_xact_seconds_total", "counter",
			"pool_health_application_xact_other_seconds",
		"Time spent in transactions, per application_name."},
		{"pool_health_application_idle_in_xact_seconds_total", "counter",
			"pool_health_application_idle_in_xact_other_seconds",
		"Time spent idle inside transactions, per application_name."},
		{"pool_health_application_in_xact", "gauge",
			"pool_health_application_in_xact_other",
		"Sessions in a transaction now, per application_name."},
		{"pool_health_application_in_xact_peak", "gauge",
			"pool_health_application_in_xact_peak_other",
		"Most sessions in a transaction at once since the last reset, per application_name (each group's exact peak, summed over its databases and roles)."},
		{"pool_health_application_excess_connections", "gauge",
			"pool_health_application_excess_connections_other",
		"Connections held beyond the most in a transaction at once (peaks), per application_name."},
	};
	bool	   *labelled;
	int			nlabelled = 0;

	if (rule->totals == NULL)
		return;
	labelled = palloc0(sizeof(bool) * Max(rule->ntotals, 1));
	for (int i = 0; i < rule->ntotals && nlabelled < ph_metrics_top_groups; i++)
		if (application_labelled(rule, rule->totals[i].application_name))
		{
			labelled[i] = true;
			nlabelled++;
		}
	for (int f = 0; f < lengthof(families); f++)
	{
		double		other = 0;

		family(buf, families[f].name, families[f].type, families[f].help);
		for (int i = 0; i < rule->ntotals; i++)
		{
			PhAppTotal *t = &rule->totals[i];
			double		v = f == 0 ? (double) t->xacts :
				f == 1 ? (double) t->xact_time_us / USECS_PER_SEC :
				f == 2 ? (double) t->idle_in_xact_us / USECS_PER_SEC :
				f == 3 ? (double) t->in_xact :
				f == 4 ? (double) t->in_xact_peak : (double) t->excess;

			if (labelled[i])
				sample_labelled(buf, families[f].name, "application_name", t->application_name, v);
			else
				other += v;
		}
		gauge(buf, families[f].other,
			  psprintf("The sum of %s over the applications not labelled one by one there (a gauge: the set it sums changes).",
					   families[f].name),
			  other);
	}
	pfree(labelled);
}

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

/* A sample of pool_health_policy_refusals_by_reason_total. */
static void
sample_policy_reason(StringInfo buf, const char *policy, const char *reason,
					 double number)
{
	appendStringInfoString(buf, "pool_health_policy_refusals_by_reason_total{policy=");
	append_label_value(buf, policy);
	appendStringInfo(buf, ",reason=\"%s\"} %.17g\n", reason, number);
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

/*
 * Client connections per group: the pool_health.metrics_top_groups
 * largest (that the rule allows, if any), labelled one by one, and the
 * rest summed in a family of its own (name_other), so that no label value
 * can collide with it.
 */
static void
groups(StringInfo buf, const PhEvaluation *eval, PhGroupBy by, const char *name,
	   const char *label, const char *help, const LabelRule *rule)
{
	PhGroup    *all;
	int			ngroups = ph_evaluation_groups(eval, by, &all);
	int			other = 0;
	int			nlabelled = 0;
	char	   *other_name = psprintf("%s_other", name);

	family(buf, name, "gauge", help);
	for (int i = 0; i < ngroups; i++)
	{
		char	   *key = ph_group_key(&all[i], by);

		if (nlabelled < ph_metrics_top_groups &&
			(rule == NULL || application_labelled(rule, key ? key : "")))
		{
			sample_labelled(buf, name, label, key ? key : "", all[i].connections);
			nlabelled++;
		}
		else
			other += all[i].connections;
	}
	gauge(buf, other_name,
		  psprintf("Client backends of the groups not labelled one by one in %s.", name),
		  other);
}

/* What only the preloaded library knows: worker, counters, policies. */
static void
shared_figures(StringInfo buf, const PhEvaluation *eval)
{
	PhWorkerState w;
	const PhPolicies *policies = &eval->policies;
	uint64		terminations;
	uint64		refusals;

	(void) ph_worker_state(&w);
	ph_history_totals(&terminations, &refusals);

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
			  (double) (eval->snap.taken_at - w.last_sample_at) / USECS_PER_SEC);
	counter(buf, "pool_health_terminations_total",
			"Sessions ended by pool_health (worker and functions).",
			(double) terminations);
	counter(buf, "pool_health_refusals_total",
			"Connections refused by pool_health admission control.",
			(double) refusals);
	gauge(buf, "pool_health_policies", "Enabled policies in effect.", policies->count);
	gauge(buf, "pool_health_policy_errors",
		  "Rows of pool_health.policies not in effect (see pool_health.policy_errors).",
		  policies->nerrors);

	family(buf, "pool_health_policy_connections", "gauge",
		   "Client sessions counted against each policy's quota.");
	for (int i = 0; i < policies->count; i++)
		sample_labelled(buf, "pool_health_policy_connections", "policy",
						NameStr(policies->items[i].name),
						ph_admission_counted(&policies->items[i]));
	family(buf, "pool_health_policy_max_connections", "gauge",
		   "Quota (max_connections) of each policy that has one.");
	for (int i = 0; i < policies->count; i++)
		if (policies->items[i].max_connections > 0)
			sample_labelled(buf, "pool_health_policy_max_connections", "policy",
							NameStr(policies->items[i].name),
							policies->items[i].max_connections);
	family(buf, "pool_health_policy_refusals_total", "counter",
		   "Connections refused per policy, since the policy was created or renamed.");
	for (int i = 0; i < policies->count; i++)
		sample_labelled(buf, "pool_health_policy_refusals_total", "policy",
						NameStr(policies->items[i].name),
						(double) ph_admission_refused(&policies->items[i]));
	family(buf, "pool_health_policy_refusals_by_reason_total", "counter",
		   "Connections refused per policy and reason (max_connections, refuse_at, reserve, login_rate), since the policy was created or renamed.");
	for (int i = 0; i < policies->count; i++)
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			sample_policy_reason(buf, NameStr(policies->items[i].name),
								 ph_refusal_name((PhRefusal) r),
								 (double) ph_admission_refused_by(&policies->items[i], (PhRefusal) r));
	family(buf, "pool_health_policy_reserve_connections", "gauge",
		   "Connections kept free for each policy that has a reserve (reserve_connections).");
	for (int i = 0; i < policies->count; i++)
		if (policies->items[i].reserve_connections > 0)
			sample_labelled(buf, "pool_health_policy_reserve_connections", "policy",
							NameStr(policies->items[i].name),
							policies->items[i].reserve_connections);
	family(buf, "pool_health_policy_reserve_unused", "gauge",
		   "The part of each policy's reserve that no session of it uses now: kept free, refused to others.");
	for (int i = 0; i < policies->count; i++)
		if (policies->items[i].reserve_connections > 0)
			sample_labelled(buf, "pool_health_policy_reserve_unused", "policy",
							NameStr(policies->items[i].name),
							ph_admission_reserve_unused(&policies->items[i]));
	family(buf, "pool_health_policy_login_tokens", "gauge",
		   "Login tokens left in each rate-limited policy's bucket (at most login_burst).");
	for (int i = 0; i < policies->count; i++)
	{
		double		tokens = ph_admission_login_tokens(&policies->items[i],
													   eval->snap.taken_at);

		if (tokens >= 0)
			sample_labelled(buf, "pool_health_policy_login_tokens", "policy",
							NameStr(policies->items[i].name), tokens);
	}
}

/* The whole exposition, from one evaluation. */
char *
ph_metrics_text(const PhEvaluation *eval)
{
	StringInfoData buf;
	const PhUsage *u = &eval->usage;
	PhThrottle	throttle;
	int			new_connections;
	LabelRule	rule;
	static const PhLevel levels[] = {PH_LEVEL_HEALTHY, PH_LEVEL_DEGRADED,
	PH_LEVEL_CRITICAL, PH_LEVEL_EXHAUSTED};

	throttle = ph_throttle_advice(u, &new_connections);
	label_rule_init(&rule, eval->snap.taken_at);
	initStringInfo(&buf);

	family(&buf, "pool_health_info", "gauge",
		   "The pool_health library's version (always 1).");
	sample_labelled(&buf, "pool_health_info", "version", PH_LIBRARY_VERSION, 1);
	gauge(&buf, "pool_health_max_connections", "The server's max_connections.",
		  u->max_connections);
	gauge(&buf, "pool_health_reserved_connections",
		  "Slots reserved for superusers (and, from PostgreSQL 16, reserved_connections).",
		  u->reserved_connections);
	gauge(&buf, "pool_health_usable_connections", "Slots ordinary roles can get.",
		  u->usable);
	gauge(&buf, "pool_health_used_connections", "Client backends (counting against max_connections).",
		  u->used);
	gauge(&buf, "pool_health_free_connections", "Usable slots not in use.", u->free);
	gauge(&buf, "pool_health_usage_ratio", "Used over usable connections (1 is exhausted; at most 1).",
		  u->usage_percent / 100.0);
	gauge(&buf, "pool_health_reserved_used_connections",
		  "Client backends beyond the usable slots, in the slots reserved for superusers.",
		  u->reserved_used);

	family(&buf, "pool_health_connections", "gauge", "Client backends by state.");
	sample_labelled(&buf, "pool_health_connections", "state", "active", u->active);
	sample_labelled(&buf, "pool_health_connections", "state", "idle", u->idle);
	sample_labelled(&buf, "pool_health_connections", "state", "idle_in_transaction",
					u->idle_in_transaction);
	sample_labelled(&buf, "pool_health_connections", "state", "waiting", u->waiting);
	gauge(&buf, "pool_health_lock_waits",
		  "Client backends waiting on a lock for longer than pool_health.lock_wait_after.",
		  u->lock_waits);
	gauge(&buf, "pool_health_leaked_sessions",
		  "Sessions idle in transaction beyond pool_health.leak_after, or past a policy limit.",
		  u->leaked);
	gauge(&buf, "pool_health_oldest_transaction_seconds",
		  "Age of the oldest client transaction (0 if none).",
		  u->oldest_xact_age > 0 ? (double) u->oldest_xact_age / USECS_PER_SEC : 0);
	gauge(&buf, "pool_health_longest_idle_in_transaction_seconds",
		  "Longest time a client session has been idle in transaction (0 if none).",
		  u->longest_idle_in_transaction > 0 ?
		  (double) u->longest_idle_in_transaction / USECS_PER_SEC : 0);

	family(&buf, "pool_health_level", "gauge",
		   "Health level: 1 for the current one (healthy, degraded, critical, exhausted), else 0.");
	for (int i = 0; i < lengthof(levels); i++)
		sample_labelled(&buf, "pool_health_level", "level", ph_level_name(levels[i]),
						u->level == levels[i]);
	family(&buf, "pool_health_throttle", "gauge",
		   "Back-pressure advice for client pools: 1 for the current one, else 0.");
	for (int t = PH_THROTTLE_NONE; t <= PH_THROTTLE_EMERGENCY; t++)
		sample_labelled(&buf, "pool_health_throttle", "advice",
						ph_throttle_name((PhThrottle) t), throttle == t);
	gauge(&buf, "pool_health_suggested_new_connections",
		  "New connections a client pool may open now.", new_connections);

	/* database and role names need the catalog (not over HTTP) */
	if (eval->catalog)
	{
		groups(&buf, eval, PH_GROUP_DATABASE, "pool_health_database_connections", "database",
			   "Client backends per database (the largest groups; the rest in pool_health_database_connections_other).",
			   NULL);
		groups(&buf, eval, PH_GROUP_ROLE, "pool_health_role_connections", "role",
			   "Client backends per role (the largest groups; the rest in pool_health_role_connections_other).",
			   NULL);
	}
	groups(&buf, eval, PH_GROUP_APPLICATION, "pool_health_application_connections", "application_name",
		   "Client backends per application_name (the largest groups known for pool_health.metrics_min_age or matching pool_health.metrics_application_pattern; the rest in pool_health_application_connections_other).",
		   &rule);

	if (ph_shmem_ready())
	{
		shared_figures(&buf, eval);
		application_figures(&buf, &rule);
	}
	return buf.data;
}
