/*-------------------------------------------------------------------------
 *
 * health.c
 *		The health endpoints as SQL: status() (jsonb), ping() (boolean) and
 *		metrics() (Prometheus text, metrics.c); the JSON of status() is
 *		also what http_requests.c serves.  Counts and names only:
 *		callable by every role, cheap enough to be polled every second.
 *
 * Each formats one evaluation (evaluate.c), whose copy of the published
 * policies was taken in one go under the lock with its version; the
 * worker's state is copied under the worker's lock (worker_state.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "app_accounting.h"
#include "evaluate.h"
#include "groups.h"
#include "history.h"
#include "health.h"
#include "http.h"
#include "json_writer.h"
#include "metrics.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(pool_health_status);
PG_FUNCTION_INFO_V1(pool_health_ping);
PG_FUNCTION_INFO_V1(pool_health_metrics);

/* How many groups status() lists under top_consumers. */
#define PH_TOP_CONSUMERS 5

/*
 * The client groups (database, role, application_name) holding the most
 * connections: names and counts only, which any role may see.  Without
 * the catalog (the HTTP worker), by application_name only.
 */
static void
append_top_consumers(StringInfo buf, const PhEvaluation *eval)
{
	PhGroup    *groups;
	int			ngroups = ph_evaluation_groups(eval, eval->catalog ?
											   PH_GROUP_CONSUMER : PH_GROUP_APPLICATION,
											   &groups);

	ph_json_open(buf, "top_consumers", '[');
	for (int i = 0; i < Min(ngroups, PH_TOP_CONSUMERS); i++)
	{
		const PhBackend *be = groups[i].first;

		ph_json_open(buf, NULL, '{');
		if (eval->catalog)
		{
			ph_json_str(buf, "database", OidIsValid(be->database_id) ?
						ph_database_name(be->database_id) : NULL);
			ph_json_str(buf, "role", OidIsValid(be->role_id) ?
						ph_role_name(be->role_id) : NULL);
		}
		ph_json_str(buf, "application_name", be->application_name);
		ph_json_int(buf, "connections", groups[i].connections);
		ph_json_int(buf, "leaked", groups[i].leaked);
		ph_json_close(buf, '}');
	}
	ph_json_close(buf, ']');
}

/* The worker's state, from shared memory (when preloaded). */
static void
append_worker_state(StringInfo buf)
{
	PhWorkerState w;

	ph_json_open(buf, "worker", '{');
	ph_json_bool(buf, "preloaded", ph_preloaded);
	if (ph_worker_state(&w))
	{
		uint64		terminations;
		uint64		refusals;

		ph_history_totals(&terminations, &refusals);
		ph_json_bool(buf, "running", w.pid != 0);
		ph_json_int(buf, "pid", w.pid);
		ph_json_str(buf, "mode", ph_worker_mode_name(w.mode));
		ph_json_str(buf, "database", ph_name_text(ph_database));
		ph_json_bool(buf, "on_standby", w.on_standby);
		ph_json_time(buf, "started_at", w.started_at);
		ph_json_time(buf, "last_sample_at", w.last_sample_at);
		ph_json_int(buf, "sample_interval_ms", ph_sample_interval_ms);
		ph_json_int(buf, "samples", (int64) w.samples);
		ph_json_int(buf, "errors", (int64) w.errors);
		ph_json_time(buf, "last_error_at", w.last_error_at);
		ph_json_str(buf, "last_error", w.last_error[0] ? w.last_error : NULL);
		ph_json_int(buf, "starts", (int64) w.restarts);
		ph_json_double(buf, "cpu_per_sample_us",
					   w.samples > 0 ? (double) w.sample_cpu_us / w.samples : 0.0, 1);
		ph_json_int(buf, "terminations", (int64) terminations);
		ph_json_int(buf, "refusals", (int64) refusals);
	}
	ph_json_close(buf, '}');
	if (ph_shmem_ready())
	{
		ph_json_open(buf, "http", '{');
		ph_json_str(buf, "listen", ph_http_listen[0] ? ph_http_listen : NULL);
		ph_json_int(buf, "pid", ph_http_worker_pid());
		ph_json_int(buf, "requests", (int64) ph_http_requests_answered());
		ph_json_int(buf, "evaluations", (int64) ph_http_evaluations_made());
		ph_json_close(buf, '}');
	}
}

/*
 * The per-application accounting: whether it is on, its groups, the
 * minute being accumulated, the server-wide counters, and the
 * applications holding the most
 * connections beyond what their transactions used at once (peaks since
 * the last reset; pool_health.pool_advice says more).
 */
static void
append_application_state(StringInfo buf)
{
	int			n;
	PhAppTotal *totals = ph_accounting_by_application(true, &n);
	int			groups;
	uint64		evictions;
	TimestampTz minute_start;

	PhAppServerCopy server;

	ph_accounting_state(&groups, &evictions, &minute_start);
	ph_json_open(buf, "applications", '{');
	ph_json_bool(buf, "accounting", totals != NULL);
	if (totals != NULL)
	{
		ph_json_int(buf, "groups", groups);
		ph_json_int(buf, "max_groups", ph_max_groups);
		ph_json_int(buf, "evictions", (int64) evictions);
		ph_json_time(buf, "minute_start", minute_start);
	}
	/* the server-wide counters: each session once, whatever its name */
	if (ph_accounting_server(&server))
	{
		ph_json_int(buf, "connections", server.connections);
		ph_json_int(buf, "in_xact", server.in_xact);
		ph_json_int(buf, "connections_peak", server.connections_peak);
		ph_json_int(buf, "in_xact_peak", server.in_xact_peak);
		ph_json_int(buf, "renames", (int64) server.renames);
	}
	ph_json_open(buf, "most_excess_connections", '[');
	for (int i = 0; i < Min(n, 3) && totals[i].excess > 0; i++)
	{
		ph_json_open(buf, NULL, '{');
		ph_json_str(buf, "application_name", totals[i].application_name);
		ph_json_int(buf, "connections_peak", (int64) totals[i].connections_peak);
		ph_json_int(buf, "in_xact_peak", (int64) totals[i].in_xact_peak);
		ph_json_int(buf, "excess_connections", (int64) totals[i].excess);
		ph_json_close(buf, '}');
	}
	ph_json_close(buf, ']');
	ph_json_close(buf, '}');
}

/*
 * Behind a pooler: while sessions that changed application_name between
 * transactions are connected, the policies that act at login by name
 * (their quota or refuse_at cannot apply to those sessions).  And the
 * reserves a policy before them may shadow (ph_reserve_shadowed_by).
 */
static void
append_pooler_warnings(StringInfo buf, const PhPolicies *policies)
{
	PhAppServerCopy server;
	bool		accounting = ph_accounting_server(&server);

	ph_json_int(buf, "renamed_sessions", accounting ? (int64) server.renamed : 0);
	ph_json_open(buf, "warnings", '[');
	for (int i = 0; i < policies->count && server.renamed > 0; i++)
	{
		const PhPolicy *p = &policies->items[i];

		if (!ph_policy_by_login_name(p))
			continue;
		ph_json_open(buf, NULL, '{');
		ph_json_str(buf, "policy", NameStr(p->name));
		ph_json_str(buf, "warning",
					psprintf("matches application_name at login, but %u session%s changed application_name between transactions (a connection pooler in transaction mode): its %s cannot apply to them; budget by role and with the pooler's own limits",
							 server.renamed, server.renamed == 1 ? "" : "s",
							 p->max_connections >= 0 && p->refuse_at >= 0 ? "quota and refuse_at" :
							 p->max_connections >= 0 ? "quota" : "refuse_at"));
		ph_json_close(buf, '}');
	}
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];
		int			j = ph_reserve_shadowed_by(policies->items, policies->count, i);

		if (j < 0)
			continue;
		ph_json_open(buf, NULL, '{');
		ph_json_str(buf, "policy", NameStr(p->name));
		ph_json_str(buf, "shadowed_by", NameStr(policies->items[j].name));
		ph_json_str(buf, "warning",
					psprintf("its reserve_connections (%d) covers only the logins it governs: policy \"%s\" comes first and may govern sessions it matches, which the reserve does not cover",
							 p->reserve_connections, NameStr(policies->items[j].name)));
		ph_json_close(buf, '}');
	}
	ph_json_close(buf, ']');
}

/*
 * The policies in effect (the evaluation's copy): how many, whether the
 * last change committed to pool_health.policies is in effect yet, the
 * rows left out, and the quotas with their counters.
 */
static void
append_policy_state(StringInfo buf, const PhPolicies *policies)
{
	uint64		generation;
	uint64		compiled_generation;
	bool		compiled;

	ph_json_open(buf, "policies", '{');
	ph_json_int(buf, "enabled", policies->count);
	if (ph_policy_set_state(&generation, &compiled_generation, &compiled))
	{
		ph_json_bool(buf, "in_effect", compiled && compiled_generation == generation);
		ph_json_int(buf, "changes", (int64) generation);
		ph_json_int(buf, "version", (int64) policies->version);
	}
	ph_json_str(buf, "enforce", ph_enforce == PH_ENFORCE_ON ? "on" :
				ph_enforce == PH_ENFORCE_DRY_RUN ? "dry_run" : "off");
	ph_json_bool(buf, "admission", ph_admission);
	ph_json_open(buf, "errors", '[');
	for (int i = 0; i < policies->nerrors; i++)
	{
		const PhPolicyError *e = &policies->errors[i];

		ph_json_open(buf, NULL, '{');
		ph_json_str(buf, "name", NameStr(e->name)[0] ? NameStr(e->name) : NULL);
		ph_json_str(buf, "error", e->error);
		ph_json_time(buf, "since", e->since);
		ph_json_close(buf, '}');
	}
	ph_json_close(buf, ']');
	ph_json_open(buf, "quotas", '[');
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];

		if (p->max_connections < 0 && p->refuse_at < 0 &&
			p->reserve_connections <= 0 && p->max_logins_per_second <= 0)
			continue;
		ph_json_open(buf, NULL, '{');
		ph_json_str(buf, "policy", NameStr(p->name));
		if (p->max_connections < 0)
			ph_json_str(buf, "max_connections", NULL);
		else
			ph_json_int(buf, "max_connections", p->max_connections);
		ph_json_str(buf, "refuse_at", p->refuse_at < 0 ? NULL :
					ph_level_name((PhLevel) p->refuse_at));
		ph_json_int(buf, "connections", ph_admission_counted(p));
		ph_json_int(buf, "refused", (int64) ph_admission_refused(p));
		ph_json_int(buf, "reserve_connections", p->reserve_connections);
		ph_json_int(buf, "reserve_unused", ph_admission_reserve_unused(p));
		if (p->max_logins_per_second > 0)
		{
			double		tokens = ph_admission_login_tokens(p, GetCurrentTimestamp());

			/* as written (at most 15 significant digits: numeric to float8) */
			ph_json_key(buf, "max_logins_per_second");
			appendStringInfo(buf, "%.15g", p->max_logins_per_second);
			ph_json_int(buf, "login_burst", p->login_burst);
			if (tokens >= 0)
				ph_json_double(buf, "login_tokens", floor(tokens * 100) / 100, 2);
			else
				ph_json_str(buf, "login_tokens", NULL);
		}
		else
		{
			ph_json_str(buf, "max_logins_per_second", NULL);
			ph_json_str(buf, "login_burst", NULL);
			ph_json_str(buf, "login_tokens", NULL);
		}
		ph_json_open(buf, "refused_by", '{');
		for (int r = 0; r < PH_REFUSAL_REASONS; r++)
			ph_json_int(buf, ph_refusal_name((PhRefusal) r),
						(int64) ph_admission_refused_by(p, (PhRefusal) r));
		ph_json_close(buf, '}');
		ph_json_close(buf, '}');
	}
	ph_json_close(buf, ']');
	append_pooler_warnings(buf, policies);
	ph_json_close(buf, '}');
}

/*
 * The JSON of status() for an evaluation (also served over HTTP, where
 * the evaluation was made without the catalog).
 */
char *
ph_status_json(const PhEvaluation *eval)
{
	PhThrottle	throttle;
	int			new_connections;
	StringInfoData buf;

	throttle = ph_throttle_advice(&eval->usage, &new_connections);
	initStringInfo(&buf);
	ph_json_open(&buf, NULL, '{');
	ph_json_usage(&buf, &eval->usage);
	ph_json_time(&buf, "at", eval->snap.taken_at);
	ph_json_int(&buf, "leaked", eval->usage.leaked);
	ph_json_int(&buf, "lock_waits", eval->usage.lock_waits);
	ph_json_seconds(&buf, "oldest_xact_age_seconds", eval->usage.oldest_xact_age);
	ph_json_seconds(&buf, "longest_idle_in_transaction_seconds",
					eval->usage.longest_idle_in_transaction);
	append_top_consumers(&buf, eval);
	ph_json_str(&buf, "throttle", ph_throttle_name(throttle));
	ph_json_int(&buf, "suggested_new_connections", new_connections);
	append_worker_state(&buf);
	append_policy_state(&buf, &eval->policies);
	append_application_state(&buf);
	ph_json_close(&buf, '}');
	return buf.data;
}

/*
 * status(): the health endpoint as jsonb.  One pass over backend status,
 * no per-session text: cheap enough to be polled every second.
 */
Datum
pool_health_status(PG_FUNCTION_ARGS)
{
	PhEvaluation eval;

	ph_evaluate(&eval, 0);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(ph_status_json(&eval))));
}

/* metrics(): Prometheus text exposition format (metrics.c). */
Datum
pool_health_metrics(PG_FUNCTION_ARGS)
{
	PhEvaluation eval;

	ph_evaluate(&eval, 0);
	PG_RETURN_TEXT_P(cstring_to_text(ph_metrics_text(&eval)));
}

/* ping(): true unless the level is critical or worse. */
Datum
pool_health_ping(PG_FUNCTION_ARGS)
{
	PhEvaluation eval;

	ph_evaluate(&eval, 0);
	PG_RETURN_BOOL(ph_rules_healthy(eval.usage.level, false));
}
