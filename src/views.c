/*-------------------------------------------------------------------------
 *
 * views.c
 *		The functions behind the live views: pool_health.sessions,
 *		pool_health.usage, the usage_by_* views, pool_health.usage_by_policy
 *		and pool_health.policy_errors.
 *
 * Each formats one evaluation (evaluate.c); nothing is decided here.
 * Per-session details follow pg_stat_activity's visibility rule; counts
 * are shown to everyone the view is granted to.
 *
 * No shared state but through evaluate.c, policy_set.c and admission.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netdb.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "admission.h"
#include "backend_snapshot.h"
#include "evaluate.h"
#include "groups.h"
#include "policy.h"
#include "shared_catalogs.h"
#include "sql_comments.h"
#include "views.h"

PG_FUNCTION_INFO_V1(pool_health_get_sessions);
PG_FUNCTION_INFO_V1(pool_health_get_usage);
PG_FUNCTION_INFO_V1(pool_health_get_usage_by);
PG_FUNCTION_INFO_V1(pool_health_get_policy_usage);
PG_FUNCTION_INFO_V1(pool_health_get_policy_errors);

static Datum
interval_between(TimestampTz later, TimestampTz earlier)
{
	return DirectFunctionCall2(timestamp_mi,
							   TimestampTzGetDatum(later),
							   TimestampTzGetDatum(earlier));
}

/* A duration in microseconds as an interval (views, history, accounting). */
Datum
ph_usec_interval(int64 usec)
{
	return interval_between(usec, 0);
}

/*
 * The client address and port, as pg_stat_activity shows them: NULL
 * address and port -1 for a Unix socket, both NULL when unknown.
 */
static void
client_addr_datums(const SockAddr *addr, Datum *inet, bool *inet_null,
				   Datum *port, bool *port_null)
{
	char		host[NI_MAXHOST];
	int			portno;

	*inet_null = true;
	*port_null = true;
	if (ph_client_addr_text(addr, host, sizeof(host), &portno))
	{
		*inet = DirectFunctionCall1(inet_in, CStringGetDatum(host));
		*inet_null = false;
		*port = Int32GetDatum(portno);
		*port_null = false;
	}
	else if (addr->addr.ss_family == AF_UNIX)
	{
		*port = Int32GetDatum(-1);
		*port_null = false;
	}
}

static Datum
name_datum(const char *str)
{
	return DirectFunctionCall1(namein, CStringGetDatum(str));
}

#define SESSIONS_COLS 30

/*
 * get_sessions(): one row per backend, the columns of pool_health.sessions.
 */
Datum
pool_health_get_sessions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhEvaluation eval;
	PhSnapshot *snap = &eval.snap;

	InitMaterializedSRF(fcinfo, 0);
	ph_evaluate(&eval, PH_SNAPSHOT_QUERY);

	for (int i = 0; i < snap->nbackends; i++)
	{
		PhBackend  *be = &snap->backends[i];
		Datum		values[SESSIONS_COLS];
		bool		nulls[SESSIONS_COLS];
		const char *str;
		int			col = 0;

		memset(nulls, true, sizeof(nulls));

		values[0] = Int32GetDatum(be->pid);
		nulls[0] = false;
		values[1] = CStringGetTextDatum(ph_backend_type_name(be));
		nulls[1] = false;
		if (OidIsValid(be->database_id))
		{
			values[2] = name_datum(ph_database_name(be->database_id));
			nulls[2] = false;
		}
		if (OidIsValid(be->role_id))
		{
			values[3] = name_datum(ph_role_name(be->role_id));
			nulls[3] = false;
		}
		values[4] = CStringGetTextDatum(be->application_name);
		nulls[4] = false;

		if (!ph_backend_visible(be))
		{
			values[23] = CStringGetTextDatum("<insufficient privilege>");
			nulls[23] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
								 values, nulls);
			continue;
		}

		client_addr_datums(&be->client_addr, &values[5], &nulls[5],
						   &values[6], &nulls[6]);
		if ((str = ph_backend_state_name(be->state)) != NULL)
		{
			values[7] = CStringGetTextDatum(str);
			nulls[7] = false;
		}

		/* backend_start, xact_start, query_start, state_change */
		col = 8;
		for (int t = 0; t < 4; t++, col++)
		{
			TimestampTz ts = t == 0 ? be->backend_start :
				t == 1 ? be->xact_start :
				t == 2 ? be->query_start :
				be->state_change;

			if (ts != 0)
			{
				values[col] = TimestampTzGetDatum(ts);
				nulls[col] = false;
			}
		}

		if ((str = pgstat_get_wait_event_type(be->wait_event_info)) != NULL)
		{
			values[12] = CStringGetTextDatum(str);
			nulls[12] = false;
		}
		if ((str = pgstat_get_wait_event(be->wait_event_info)) != NULL)
		{
			values[13] = CStringGetTextDatum(str);
			nulls[13] = false;
		}
		values[14] = BoolGetDatum(be->waiting);
		nulls[14] = false;
		if (be->idle_for >= 0)
		{
			values[15] = interval_between(snap->taken_at, be->state_change);
			nulls[15] = false;
		}
		if (be->xact_age >= 0)
		{
			values[16] = interval_between(snap->taken_at, be->xact_start);
			nulls[16] = false;
		}
		if (TransactionIdIsValid(be->xid))
		{
			values[17] = TransactionIdGetDatum(be->xid);
			nulls[17] = false;
		}
		if (TransactionIdIsValid(be->xmin))
		{
			values[18] = TransactionIdGetDatum(be->xmin);
			nulls[18] = false;
		}
		values[19] = BoolGetDatum(be->pins_xmin);
		nulls[19] = false;
		values[20] = Int32GetDatum(be->blocking);
		nulls[20] = false;
		if ((str = ph_leak_name(be->leak)) != NULL)
		{
			values[21] = CStringGetTextDatum(str);
			nulls[21] = false;
		}
		if (be->policy != NULL)
		{
			values[22] = CStringGetTextDatum(NameStr(be->policy->name));
			nulls[22] = false;
		}
		values[23] = CStringGetTextDatum(pgstat_clip_activity(be->query));
		nulls[23] = false;
		if ((str = ph_exemption_name(be->exemption)) != NULL)
		{
			values[24] = CStringGetTextDatum(str);
			nulls[24] = false;
		}
		if (be->blocked_by != 0)
		{
			values[25] = Int32GetDatum(be->blocked_by);
			nulls[25] = false;
		}
		if (be->blocking_since != 0)
		{
			values[26] = TimestampTzGetDatum(be->blocking_since);
			nulls[26] = false;
		}
		if (be->xact_first_query != NULL)
		{
			char	   *tags = ph_sql_tags_json(be->xact_tags);

			values[27] = CStringGetTextDatum(be->xact_first_query);
			values[28] = TimestampTzGetDatum(be->xact_first_query_at);
			nulls[27] = nulls[28] = false;
			if (tags != NULL)
			{
				values[29] = DirectFunctionCall1(jsonb_in, CStringGetDatum(tags));
				nulls[29] = false;
			}
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

static Datum
reasons_datum(const PhUsage *usage)
{
	Datum		elems[PH_MAX_REASONS];

	for (int i = 0; i < usage->nreasons; i++)
		elems[i] = CStringGetTextDatum(usage->reasons[i]);
	return PointerGetDatum(construct_array_builtin(elems, usage->nreasons, TEXTOID));
}

#define USAGE_COLS 17

/* get_usage(): the one row of pool_health.usage. */
Datum
pool_health_get_usage(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	PhEvaluation eval;
	PhUsage		usage;
	Datum		values[USAGE_COLS];
	bool		nulls[USAGE_COLS];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	ph_evaluate(&eval, 0);
	usage = eval.usage;

	memset(nulls, false, sizeof(nulls));
	values[0] = Int32GetDatum(usage.max_connections);
	values[1] = Int32GetDatum(usage.reserved_connections);
	values[2] = Int32GetDatum(usage.usable);
	values[3] = Int32GetDatum(usage.used);
	values[4] = Int32GetDatum(usage.active);
	values[5] = Int32GetDatum(usage.idle);
	values[6] = Int32GetDatum(usage.idle_in_transaction);
	values[7] = Int32GetDatum(usage.waiting);
	values[8] = Int32GetDatum(usage.leaked);
	values[9] = Int32GetDatum(usage.free);
	values[10] = Float8GetDatum(usage.usage_percent);
	values[11] = CStringGetTextDatum(ph_level_name(usage.level));
	values[12] = reasons_datum(&usage);
	if (usage.oldest_xact_age >= 0)
		values[13] = ph_usec_interval(usage.oldest_xact_age);
	else
		nulls[13] = true;
	if (usage.longest_idle_in_transaction >= 0)
		values[14] = ph_usec_interval(usage.longest_idle_in_transaction);
	else
		nulls[14] = true;
	values[15] = Int32GetDatum(usage.reserved_used);
	values[16] = Int32GetDatum(usage.lock_waits);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}


#define USAGE_BY_COLS 12

/*
 * get_usage_by(group_by): client sessions grouped by database, role,
 * application_name or client_addr, with the policy that governs every
 * session of the group, if one does, and its quota; the function behind
 * the usage_by_* views.
 */
Datum
pool_health_get_usage_by(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *group_by = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	PhGroupBy	by;
	PhEvaluation eval;
	PhGroup    *groups;
	int			ngroups;

	if (group_by != NULL && strcmp(group_by, "database") == 0)
		by = PH_GROUP_DATABASE;
	else if (group_by != NULL && strcmp(group_by, "role") == 0)
		by = PH_GROUP_ROLE;
	else if (group_by != NULL && strcmp(group_by, "application_name") == 0)
		by = PH_GROUP_APPLICATION;
	else if (group_by != NULL && strcmp(group_by, "client_addr") == 0)
		by = PH_GROUP_CLIENT;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid group_by: %s",
						group_by ? quote_literal_cstr(group_by) : "NULL"),
				 errhint("Use database, role, application_name or client_addr.")));

	InitMaterializedSRF(fcinfo, 0);
	ph_evaluate(&eval, 0);
	ngroups = ph_evaluation_groups(&eval, by, &groups);
	for (int i = 0; i < ngroups; i++)
	{
		const PhGroup *g = &groups[i];
		Datum		values[USAGE_BY_COLS];
		bool		nulls[USAGE_BY_COLS];
		char	   *key = ph_group_key(g, by);

		memset(nulls, false, sizeof(nulls));
		nulls[0] = key == NULL;
		if (key != NULL)
			values[0] = CStringGetTextDatum(key);
		values[1] = Int32GetDatum(g->connections);
		values[2] = Int32GetDatum(g->active);
		values[3] = Int32GetDatum(g->idle);
		values[4] = Int32GetDatum(g->idle_in_transaction);
		values[5] = Int32GetDatum(g->waiting);
		values[6] = Int32GetDatum(g->leaked);
		nulls[7] = g->oldest_xact_age < 0;
		values[7] = ph_usec_interval(Max(g->oldest_xact_age, 0));
		nulls[8] = g->longest_idle < 0;
		values[8] = ph_usec_interval(Max(g->longest_idle, 0));
		values[9] = Float8GetDatum(100.0 * g->connections / Max(eval.usage.used, 1));
		nulls[10] = nulls[11] = g->policy == NULL;
		if (g->policy != NULL)
		{
			values[10] = CStringGetTextDatum(NameStr(g->policy->name));
			nulls[11] = g->policy->max_connections < 0;
			values[11] = Int32GetDatum(g->policy->max_connections);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

#define POLICY_USAGE_COLS 15

/*
 * get_policy_usage(): per policy in effect, the client sessions it
 * governs now, its quota and refuse_at, its reserve and login rate, and,
 * with the preload, the sessions counted against its quota, the
 * connections it refused (in all, and for its reserve or login rate), the
 * part of its reserve not in use and the login tokens it has left.
 */
Datum
pool_health_get_policy_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhEvaluation eval;
	const PhPolicies *policies = &eval.policies;

	InitMaterializedSRF(fcinfo, 0);
	ph_evaluate(&eval, 0);
	for (int i = 0; i < policies->count; i++)
	{
		const PhPolicy *p = &policies->items[i];
		Datum		values[POLICY_USAGE_COLS];
		bool		nulls[POLICY_USAGE_COLS];

		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetTextDatum(NameStr(p->name));
		values[1] = Int32GetDatum(p->priority);
		values[2] = Int32GetDatum(eval.governed[i]);
		nulls[3] = p->max_connections < 0;
		values[3] = Int32GetDatum(p->max_connections);
		nulls[4] = p->refuse_at < 0;
		if (!nulls[4])
			values[4] = CStringGetTextDatum(ph_level_name((PhLevel) p->refuse_at));
		nulls[5] = nulls[6] = !policies->published;
		values[5] = Int32GetDatum((int32) ph_admission_counted(p));
		values[6] = Int64GetDatum((int64) ph_admission_refused(p));
		nulls[7] = p->max_connections < 0;
		values[7] = Float8GetDatum(p->max_connections > 0 ?
								   100.0 * eval.governed[i] / p->max_connections : 0);
		values[8] = Int32GetDatum(p->reserve_connections);
		nulls[9] = !policies->published;
		values[9] = Int32GetDatum(ph_admission_reserve_unused(p));
		nulls[10] = nulls[11] = p->max_logins_per_second <= 0;
		values[10] = Float8GetDatum(p->max_logins_per_second);
		values[11] = Int32GetDatum(p->login_burst);
		nulls[12] = !policies->published || p->max_logins_per_second <= 0 ||
			ph_admission_login_tokens(p, eval.snap.taken_at) < 0;
		if (!nulls[12])
			values[12] = Float8GetDatum(ph_admission_login_tokens(p, eval.snap.taken_at));
		nulls[13] = nulls[14] = !policies->published;
		values[13] = Int64GetDatum((int64) ph_admission_refused_by(p, PH_REFUSAL_RESERVE));
		values[14] = Int64GetDatum((int64) ph_admission_refused_by(p, PH_REFUSAL_RATE));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * get_policy_errors(): the rows of pool_health.policies not in effect,
 * and why; the function behind pool_health.policy_errors.
 */
Datum
pool_health_get_policy_errors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhPolicies	policies;

	InitMaterializedSRF(fcinfo, 0);
	ph_policies_for_reading(&policies);
	for (int i = 0; i < policies.nerrors; i++)
	{
		const PhPolicyError *e = &policies.errors[i];
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		nulls[0] = NameStr(e->name)[0] == '\0';
		values[0] = CStringGetTextDatum(NameStr(e->name));
		values[1] = CStringGetTextDatum(e->error);
		values[2] = TimestampTzGetDatum(e->since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
