/*-------------------------------------------------------------------------
 *
 * sql_functions.c
 *		The SQL-callable functions: the live views and health endpoints
 *		(get_sessions(), get_usage(), status(), ping(), metrics()), the history
 *		(get_history(), get_forecast()), and the functions that end sessions
 *		on request (cleanup(), terminate_idle_in_transaction(),
 *		terminate_idle(), reclaim()) with their audit (get_recent_actions()).
 *
 * Live functions take one pass over backend status (backend_snapshot.c),
 * classify it (classify.c) and format the result.  Per-session details
 * follow pg_stat_activity's visibility rule; counts are shown to everyone.
 * History functions copy the rings out under ph_shared->lock (shared),
 * then format them without it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netdb.h>

#include "access/htup_details.h"
#include "commands/dbcommands.h"	/* get_database_name() before PG 19 */
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"	/* get_database_name() from PG 19 */
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "pool_health.h"

PG_FUNCTION_INFO_V1(pool_health_get_sessions);
PG_FUNCTION_INFO_V1(pool_health_get_usage);
PG_FUNCTION_INFO_V1(pool_health_status);
PG_FUNCTION_INFO_V1(pool_health_ping);
PG_FUNCTION_INFO_V1(pool_health_get_history);
PG_FUNCTION_INFO_V1(pool_health_get_forecast);
PG_FUNCTION_INFO_V1(pool_health_cleanup);
PG_FUNCTION_INFO_V1(pool_health_terminate_idle_in_transaction);
PG_FUNCTION_INFO_V1(pool_health_terminate_idle);
PG_FUNCTION_INFO_V1(pool_health_reclaim);
PG_FUNCTION_INFO_V1(pool_health_get_recent_actions);
PG_FUNCTION_INFO_V1(pool_health_get_policy_usage);
PG_FUNCTION_INFO_V1(pool_health_metrics);

/* How many groups status() lists under top_consumers. */
#define PH_TOP_CONSUMERS 5

/*
 * One classified pass, the common start of every function here.  Views
 * use the policies for reading; functions that act (fresh_policies) take
 * the snapshot first, with blocking counts, and read the policies after:
 * whatever happens in between is caught by the re-check before each
 * action (see test/isolation/specs/recheck.spec).
 */
static void
take_classified(PhSnapshot *snap, int flags, bool fresh_policies)
{
	PhPolicies *policies = palloc(sizeof(PhPolicies));

	if (fresh_policies)
	{
		ph_snapshot_take(snap, flags | PH_SNAPSHOT_BLOCKING);
		ph_policies_fresh(policies);
	}
	else
	{
		ph_policies_for_reading(policies);
		if (policies->need_blocking)
			flags |= PH_SNAPSHOT_BLOCKING;
		ph_snapshot_take(snap, flags);
	}
	ph_classify(snap, policies);
}

static Datum
interval_between(TimestampTz later, TimestampTz earlier)
{
	return DirectFunctionCall2(timestamp_mi,
							   TimestampTzGetDatum(later),
							   TimestampTzGetDatum(earlier));
}

static Datum
usec_interval(int64 usec)
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

#define SESSIONS_COLS 24

/*
 * get_sessions(): one row per backend, the columns of pool_health.sessions.
 */
Datum
pool_health_get_sessions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhSnapshot	snap;

	InitMaterializedSRF(fcinfo, 0);
	take_classified(&snap, PH_SNAPSHOT_QUERY | PH_SNAPSHOT_BLOCKING, false);

	for (int i = 0; i < snap.nbackends; i++)
	{
		PhBackend  *be = &snap.backends[i];
		Datum		values[SESSIONS_COLS];
		bool		nulls[SESSIONS_COLS];
		const char *str;
		int			col = 0;

		memset(nulls, true, sizeof(nulls));

		values[0] = Int32GetDatum(be->pid);
		nulls[0] = false;
		values[1] = CStringGetTextDatum(ph_backend_type_name(be));
		nulls[1] = false;
		if (OidIsValid(be->database_id) &&
			(str = get_database_name(be->database_id)) != NULL)
		{
			values[2] = name_datum(str);
			nulls[2] = false;
		}
		if (OidIsValid(be->role_id) &&
			(str = GetUserNameFromId(be->role_id, true)) != NULL)
		{
			values[3] = name_datum(str);
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
			values[15] = interval_between(snap.taken_at, be->state_change);
			nulls[15] = false;
		}
		if (be->xact_age >= 0)
		{
			values[16] = interval_between(snap.taken_at, be->xact_start);
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

#define USAGE_COLS 15

/* get_usage(): the one row of pool_health.usage. */
Datum
pool_health_get_usage(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	PhSnapshot	snap;
	PhUsage		usage;
	Datum		values[USAGE_COLS];
	bool		nulls[USAGE_COLS];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	take_classified(&snap, 0, false);
	ph_usage_compute(&snap, &usage);

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
		values[13] = usec_interval(usage.oldest_xact_age);
	else
		nulls[13] = true;
	if (usage.longest_idle_in_transaction >= 0)
		values[14] = usec_interval(usage.longest_idle_in_transaction);
	else
		nulls[14] = true;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ---- status() ---- */

static int
consumer_cmp(const void *a, const void *b)
{
	const PhBackend *x = *(PhBackend *const *) a;
	const PhBackend *y = *(PhBackend *const *) b;

	if (x->database_id != y->database_id)
		return x->database_id < y->database_id ? -1 : 1;
	if (x->role_id != y->role_id)
		return x->role_id < y->role_id ? -1 : 1;
	return strcmp(x->application_name, y->application_name);
}

typedef struct Consumer
{
	PhBackend  *first;
	int			connections;
	int			leaked;
} Consumer;

static int
consumer_count_cmp(const void *a, const void *b)
{
	const Consumer *x = a;
	const Consumer *y = b;

	return (y->connections > x->connections) - (y->connections < x->connections);
}

static void
json_key(StringInfo buf, const char *key)
{
	if (buf->data[buf->len - 1] != '{')
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

static void
json_int(StringInfo buf, const char *key, int64 value)
{
	json_key(buf, key);
	appendStringInfo(buf, INT64_FORMAT, value);
}

static void
json_str(StringInfo buf, const char *key, const char *value)
{
	json_key(buf, key);
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/* seconds, with millisecond precision; null when usec < 0 */
static void
json_seconds(StringInfo buf, const char *key, int64 usec)
{
	json_key(buf, key);
	if (usec < 0)
		appendStringInfoString(buf, "null");
	else
		appendStringInfo(buf, "%.3f", usec / 1000000.0);
}

/*
 * The client groups (database, role, application_name) holding the most
 * connections: names and counts only, which any role may see.
 */
static void
append_top_consumers(StringInfo buf, const PhSnapshot *snap)
{
	PhBackend **clients = palloc(sizeof(PhBackend *) * Max(snap->nbackends, 1));
	Consumer   *groups = palloc(sizeof(Consumer) * Max(snap->nbackends, 1));
	int			nclients = 0;
	int			ngroups = 0;

	for (int i = 0; i < snap->nbackends; i++)
		if (snap->backends[i].is_client)
			clients[nclients++] = &snap->backends[i];
	qsort(clients, nclients, sizeof(PhBackend *), consumer_cmp);
	for (int i = 0; i < nclients; i++)
	{
		if (i == 0 || consumer_cmp(&clients[i - 1], &clients[i]) != 0)
		{
			groups[ngroups].first = clients[i];
			groups[ngroups].connections = 0;
			groups[ngroups].leaked = 0;
			ngroups++;
		}
		groups[ngroups - 1].connections++;
		if (clients[i]->leak != PH_LEAK_NONE)
			groups[ngroups - 1].leaked++;
	}
	qsort(groups, ngroups, sizeof(Consumer), consumer_count_cmp);

	json_key(buf, "top_consumers");
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < Min(ngroups, PH_TOP_CONSUMERS); i++)
	{
		const PhBackend *be = groups[i].first;

		if (i > 0)
			appendStringInfoString(buf, ", ");
		appendStringInfoChar(buf, '{');
		json_str(buf, "database", OidIsValid(be->database_id) ?
				 get_database_name(be->database_id) : (char *) NULL);
		json_str(buf, "role", OidIsValid(be->role_id) ?
				 GetUserNameFromId(be->role_id, true) : (char *) NULL);
		json_str(buf, "application_name", be->application_name);
		json_int(buf, "connections", groups[i].connections);
		json_int(buf, "leaked", groups[i].leaked);
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoChar(buf, ']');
}

static void
json_bool(StringInfo buf, const char *key, bool value)
{
	json_key(buf, key);
	appendStringInfoString(buf, value ? "true" : "false");
}

static void
json_time(StringInfo buf, const char *key, TimestampTz value)
{
	json_str(buf, key, value != 0 ? timestamptz_to_str(value) : NULL);
}

/* The worker's state, from shared memory (when preloaded). */
static void
append_worker_state(StringInfo buf)
{
	PhWorkerState w;

	json_key(buf, "worker");
	appendStringInfoChar(buf, '{');
	json_bool(buf, "preloaded", ph_preloaded);
	if (ph_shared != NULL)
	{
		LWLockAcquire(ph_shared->lock, LW_SHARED);
		w = ph_shared->worker;
		LWLockRelease(ph_shared->lock);

		json_bool(buf, "running", w.pid != 0);
		json_int(buf, "pid", w.pid);
		json_str(buf, "mode", ph_worker_mode_name(w.mode));
		json_str(buf, "database", ph_database);
		json_bool(buf, "on_standby", w.on_standby);
		json_time(buf, "started_at", w.started_at);
		json_time(buf, "last_sample_at", w.last_sample_at);
		json_int(buf, "sample_interval_ms", ph_sample_interval_ms);
		json_int(buf, "samples", (int64) w.samples);
		json_int(buf, "errors", (int64) w.errors);
		json_time(buf, "last_error_at", w.last_error_at);
		json_str(buf, "last_error", w.last_error[0] ? w.last_error : NULL);
		json_int(buf, "starts", (int64) w.restarts);
		json_key(buf, "cpu_per_sample_us");
		appendStringInfo(buf, "%.1f", w.samples > 0 ? (double) w.sample_cpu_us / w.samples : 0.0);
		json_int(buf, "terminations", (int64) pg_atomic_read_u64(&ph_shared->terminations));
		json_int(buf, "refusals", (int64) pg_atomic_read_u64(&ph_shared->refusals));
	}
	appendStringInfoChar(buf, '}');
}

/*
 * The policies the worker enforces: how many, and whether the last change
 * committed to pool_health.policies is in effect yet.
 */
static void
append_policy_state(StringInfo buf)
{
	PhPolicySet set;

	if (ph_shared == NULL)
		return;
	LWLockAcquire(ph_shared->lock, LW_SHARED);
	set = ph_shared->policy_set;
	LWLockRelease(ph_shared->lock);

	json_key(buf, "policies");
	appendStringInfoChar(buf, '{');
	json_int(buf, "enabled", set.count);
	json_bool(buf, "in_effect", set.compiled && set.compiled_generation == set.generation);
	json_int(buf, "changes", (int64) set.generation);
	json_str(buf, "enforce", ph_enforce == PH_ENFORCE_ON ? "on" :
			 ph_enforce == PH_ENFORCE_DRY_RUN ? "dry_run" : "off");
	json_bool(buf, "admission", ph_admission);
	json_key(buf, "quotas");
	appendStringInfoChar(buf, '[');
	for (int i = 0, n = 0; i < set.count; i++)
	{
		const PhPolicy *p = &set.policies[i];

		if (p->max_connections < 0 && p->refuse_at < 0)
			continue;
		if (n++ > 0)
			appendStringInfoString(buf, ", ");
		appendStringInfoChar(buf, '{');
		json_str(buf, "policy", NameStr(p->name));
		json_key(buf, "max_connections");
		if (p->max_connections < 0)
			appendStringInfoString(buf, "null");
		else
			appendStringInfo(buf, "%d", p->max_connections);
		json_str(buf, "refuse_at", p->refuse_at < 0 ? NULL : ph_level_name((PhLevel) p->refuse_at));
		json_int(buf, "connections", pg_atomic_read_u32(&set.counters[i].connections));
		json_int(buf, "refused", (int64) pg_atomic_read_u64(&set.counters[i].refused));
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoChar(buf, ']');
	appendStringInfoChar(buf, '}');
}

/*
 * status(): the health endpoint as jsonb.  One pass over backend status,
 * no per-session text: cheap enough to be polled every second.
 */
Datum
pool_health_status(PG_FUNCTION_ARGS)
{
	PhSnapshot	snap;
	PhUsage		usage;
	PhThrottle	throttle;
	int			new_connections;
	StringInfoData buf;

	take_classified(&snap, 0, false);
	ph_usage_compute(&snap, &usage);
	throttle = ph_throttle_advice(&usage, &new_connections);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	json_str(&buf, "level", ph_level_name(usage.level));
	json_key(&buf, "reasons");
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < usage.nreasons; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, usage.reasons[i]);
	}
	appendStringInfoChar(&buf, ']');
	json_str(&buf, "at", timestamptz_to_str(snap.taken_at));

	json_key(&buf, "usage");
	appendStringInfoChar(&buf, '{');
	json_int(&buf, "max_connections", usage.max_connections);
	json_int(&buf, "reserved_connections", usage.reserved_connections);
	json_int(&buf, "usable", usage.usable);
	json_int(&buf, "used", usage.used);
	json_int(&buf, "active", usage.active);
	json_int(&buf, "idle", usage.idle);
	json_int(&buf, "idle_in_transaction", usage.idle_in_transaction);
	json_int(&buf, "waiting", usage.waiting);
	json_int(&buf, "free", usage.free);
	json_key(&buf, "usage_percent");
	appendStringInfo(&buf, "%.1f", usage.usage_percent);
	appendStringInfoChar(&buf, '}');

	json_int(&buf, "leaked", usage.leaked);
	json_seconds(&buf, "oldest_xact_age_seconds", usage.oldest_xact_age);
	json_seconds(&buf, "longest_idle_in_transaction_seconds",
				 usage.longest_idle_in_transaction);
	append_top_consumers(&buf, &snap);

	json_str(&buf, "throttle", ph_throttle_name(throttle));
	json_int(&buf, "suggested_new_connections", new_connections);

	append_worker_state(&buf);
	append_policy_state(&buf);
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* metrics(): Prometheus text exposition format (metrics.c). */
Datum
pool_health_metrics(PG_FUNCTION_ARGS)
{
	PhSnapshot	snap;

	take_classified(&snap, 0, false);
	PG_RETURN_TEXT_P(cstring_to_text(ph_metrics_text(&snap)));
}

/* ping(): true unless the level is critical or worse. */
Datum
pool_health_ping(PG_FUNCTION_ARGS)
{
	PhSnapshot	snap;
	PhUsage		usage;

	take_classified(&snap, 0, false);
	ph_usage_compute(&snap, &usage);
	PG_RETURN_BOOL(usage.level < PH_LEVEL_CRITICAL);
}

/* ---- history ---- */

typedef enum HistoryResolution
{
	HISTORY_RAW,
	HISTORY_MINUTE,
	HISTORY_AUTO
} HistoryResolution;

#define HISTORY_COLS 17

static void
put_history_row(ReturnSetInfo *rsinfo, TimestampTz at, const char *resolution,
				int samples, int usable, int used, int used_min, double used_avg,
				int used_max, int active, int idle, int idle_in_transaction,
				int waiting, int leaked, int terminated, int refused, PhLevel level)
{
	Datum		values[HISTORY_COLS];
	bool		nulls[HISTORY_COLS];

	memset(nulls, false, sizeof(nulls));
	values[0] = TimestampTzGetDatum(at);
	values[1] = CStringGetTextDatum(resolution);
	values[2] = Int32GetDatum(samples);
	values[3] = Int32GetDatum(usable);
	values[4] = Int32GetDatum(used);
	values[5] = Int32GetDatum(used_min);
	values[6] = Float8GetDatum(used_avg);
	values[7] = Int32GetDatum(used_max);
	values[8] = Int32GetDatum(active);
	values[9] = Int32GetDatum(idle);
	values[10] = Int32GetDatum(idle_in_transaction);
	values[11] = Int32GetDatum(waiting);
	values[12] = Int32GetDatum(leaked);
	values[13] = Int32GetDatum(terminated);
	values[14] = Int32GetDatum(refused);
	values[15] = Float8GetDatum(usable > 0 ? 100.0 * used / usable : 100.0);
	values[16] = CStringGetTextDatum(ph_level_name(level));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * get_history(since, until, resolution): the history between two times
 * (NULL: unbounded), as raw samples, minutes, or 'auto' (minutes older
 * than the oldest raw sample, then the raw samples).  Minute rows show
 * the peak of used, the average of the per-state counts, the peak of
 * waiting and leaked, the sums of terminated and refused, and the worst
 * level.
 */
Datum
pool_health_get_history(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhShared   *shared = ph_shared_required("pool_health history");
	TimestampTz since = PG_ARGISNULL(0) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(0);
	TimestampTz until = PG_ARGISNULL(1) ? DT_NOEND : PG_GETARG_TIMESTAMPTZ(1);
	char	   *resolution_name = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	HistoryResolution resolution;
	PhSample   *raw;
	PhMinute   *minutes;
	int			nraw;
	int			nminutes;
	TimestampTz oldest_raw;

	if (resolution_name != NULL && strcmp(resolution_name, "raw") == 0)
		resolution = HISTORY_RAW;
	else if (resolution_name != NULL && strcmp(resolution_name, "minute") == 0)
		resolution = HISTORY_MINUTE;
	else if (resolution_name != NULL && strcmp(resolution_name, "auto") == 0)
		resolution = HISTORY_AUTO;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid history resolution: %s",
						resolution_name ? quote_literal_cstr(resolution_name) : "NULL"),
				 errhint("Use raw, minute or auto.")));

	InitMaterializedSRF(fcinfo, 0);

	LWLockAcquire(shared->lock, LW_SHARED);
	raw = palloc(sizeof(PhSample) * Max(shared->history.raw_capacity, 1));
	minutes = palloc(sizeof(PhMinute) * (shared->history.minute_capacity + 1));
	nraw = ph_history_copy_raw(&shared->history, raw);
	nminutes = ph_history_copy_minutes(&shared->history, minutes);
	LWLockRelease(shared->lock);

	oldest_raw = nraw > 0 ? raw[0].at : DT_NOEND;
	if (resolution != HISTORY_RAW)
	{
		for (int i = 0; i < nminutes; i++)
		{
			const PhMinute *m = &minutes[i];
			TimestampTz end = m->at + USECS_PER_MINUTE;

			if (end <= since || m->at > until)
				continue;
			if (resolution == HISTORY_AUTO && end > oldest_raw)
				break;
			put_history_row(rsinfo, m->at, "minute", m->samples, m->usable,
							m->used_max, m->used_min,
							(double) m->used_sum / m->samples, m->used_max,
							(int) (m->active_sum / m->samples),
							(int) (m->idle_sum / m->samples),
							(int) (m->idle_in_transaction_sum / m->samples),
							m->waiting_max, m->leaked_max, m->terminated,
							m->refused, (PhLevel) m->worst_level);
		}
	}
	if (resolution != HISTORY_MINUTE)
	{
		for (int i = 0; i < nraw; i++)
		{
			const PhSample *r = &raw[i];

			if (r->at < since || r->at > until)
				continue;
			put_history_row(rsinfo, r->at, "raw", 1, r->usable, r->used,
							r->used, r->used, r->used, r->active, r->idle,
							r->idle_in_transaction, r->waiting, r->leaked,
							r->terminated, r->refused, (PhLevel) r->level);
		}
	}
	return (Datum) 0;
}

#define FORECAST_COLS 9

/*
 * get_forecast(): a least-squares line through used over the last
 * pool_health.forecast_window of history (raw samples when they cover it,
 * else minute averages), and when it reaches usable.  The time to
 * exhaustion is NULL when usage is not rising.
 */
Datum
pool_health_get_forecast(PG_FUNCTION_ARGS)
{
	PhShared   *shared = ph_shared_required("pool_health.forecast");
	TupleDesc	tupdesc;
	Datum		values[FORECAST_COLS];
	bool		nulls[FORECAST_COLS];
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz since = now - (int64) ph_forecast_window_s * USECS_PER_SEC;
	PhSample   *raw;
	PhMinute   *minutes;
	int			nraw;
	int			nminutes;
	const char *resolution = "raw";
	int			n = 0;
	double		sum_t = 0, sum_y = 0, sum_tt = 0, sum_ty = 0;
	TimestampTz first = 0, last = 0;
	int			used = 0, usable = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	LWLockAcquire(shared->lock, LW_SHARED);
	raw = palloc(sizeof(PhSample) * Max(shared->history.raw_capacity, 1));
	minutes = palloc(sizeof(PhMinute) * (shared->history.minute_capacity + 1));
	nraw = ph_history_copy_raw(&shared->history, raw);
	nminutes = ph_history_copy_minutes(&shared->history, minutes);
	LWLockRelease(shared->lock);

	/*
	 * Raw samples, unless they do not reach back over the window and the
	 * minutes hold older data than they do.
	 */
	if (nraw == 0 ||
		(raw[0].at > since && nminutes > 0 &&
		 minutes[0].at + USECS_PER_MINUTE <= raw[0].at))
		resolution = "minute";

#define ADD_POINT(at_, y_, used_, usable_) \
	do { \
		double t_ = (double) ((at_) - since) / USECS_PER_SEC; \
		if (n == 0) first = (at_); \
		last = (at_); used = (used_); usable = (usable_); \
		n++; sum_t += t_; sum_y += (y_); sum_tt += t_ * t_; sum_ty += t_ * (y_); \
	} while (0)

	if (strcmp(resolution, "raw") == 0)
	{
		for (int i = 0; i < nraw; i++)
			if (raw[i].at >= since)
				ADD_POINT(raw[i].at, (double) raw[i].used, raw[i].used, raw[i].usable);
	}
	else
	{
		for (int i = 0; i < nminutes; i++)
			if (minutes[i].at + USECS_PER_MINUTE > since)
				ADD_POINT(minutes[i].at + USECS_PER_MINUTE / 2,
						  (double) minutes[i].used_sum / minutes[i].samples,
						  minutes[i].used_max, minutes[i].usable);
	}
#undef ADD_POINT

	memset(nulls, true, sizeof(nulls));
	values[2] = Int32GetDatum(n);
	nulls[2] = false;
	values[3] = CStringGetTextDatum(resolution);
	nulls[3] = false;
	if (n > 0)
	{
		values[0] = TimestampTzGetDatum(first);
		values[1] = TimestampTzGetDatum(last);
		values[4] = Int32GetDatum(used);
		values[5] = Int32GetDatum(usable);
		nulls[0] = nulls[1] = nulls[4] = nulls[5] = false;
	}
	if (n >= 2 && n * sum_tt - sum_t * sum_t > 0)
	{
		double		slope = (n * sum_ty - sum_t * sum_y) / (n * sum_tt - sum_t * sum_t);

		values[6] = Float8GetDatum(slope * 60.0);
		nulls[6] = false;
		if (used >= usable)
		{
			values[7] = usec_interval(0);
			values[8] = TimestampTzGetDatum(now);
			nulls[7] = nulls[8] = false;
		}
		else if (slope > 0)
		{
			int64		usec = (int64) ((usable - used) / slope * USECS_PER_SEC);

			values[7] = usec_interval(usec);
			values[8] = TimestampTzGetDatum(now + usec);
			nulls[7] = nulls[8] = false;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ---- functions that end sessions ---- */

/* One row (pool_health.action) of what a function did or, in a dry run, would do. */
static void
put_action_row(ReturnSetInfo *rsinfo, const PhAuditEntry *e)
{
	Datum		values[PH_AUDIT_COLS];
	bool		nulls[PH_AUDIT_COLS];

	ph_audit_datums(e, values, nulls);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static bool
dry_run_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dry_run must not be NULL")));
	return PG_GETARG_BOOL(argno);
}

static int64
older_than_arg(FunctionCallInfo fcinfo, int argno)
{
	Interval   *iv;
	int64		usec;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than must not be NULL")));
	iv = PG_GETARG_INTERVAL_P(argno);
	/* in double first: a huge interval must not wrap around */
	if ((double) iv->time + (double) iv->day * USECS_PER_DAY +
		(double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY > (double) PG_INT64_MAX / 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than is out of range: %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv))))));
	usec = iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (usec <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than must be positive, not %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv))))));
	return usec;
}

/*
 * May this function act on the session?  Exclusions first (silently:
 * those sessions are never candidates), then the caller's right to end it
 * by hand, counted in *denied.
 */
static bool
may_act(const PhBackend *be, const PhPolicy *policy, int *denied)
{
	if (ph_enforce_exclusion(be, policy) != NULL)
		return false;
	if (!ph_enforce_may_signal(be->role_id))
	{
		(*denied)++;
		return false;
	}
	return true;
}

static void
report_denied(int denied)
{
	if (denied > 0)
		ereport(NOTICE,
				(errmsg("%d %s skipped: you could not end %s with pg_terminate_backend()",
						denied, denied == 1 ? "session was" : "sessions were",
						denied == 1 ? "it" : "them")));
}

/*
 * cleanup(dry_run): apply every policy now, as the worker would.  Each
 * action follows its policy (action, dry_run); dry_run => true makes them
 * all dry runs.
 */
Datum
pool_health_cleanup(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		dry_run = dry_run_arg(fcinfo, 0);
	PhSnapshot	snap;
	int			denied = 0;

	InitMaterializedSRF(fcinfo, 0);
	take_classified(&snap, 0, true);
	for (int i = 0; i < snap.nbackends; i++)
	{
		PhBackend  *be = &snap.backends[i];
		const PhPolicy *p = be->policy;
		PhActionResult result;

		if (p == NULL || be->deadline == 0 || snap.taken_at < be->deadline ||
			!may_act(be, p, &denied))
			continue;
		if (ph_enforce_act(be, p, be->limit, be->limit_usec,
						   psprintf("%s %s exceeded", ph_limit_name(be->limit),
									ph_duration_text(be->limit_usec)),
						   p->terminate, dry_run || p->dry_run, "cleanup", &result))
			put_action_row(rsinfo, &result.entry);
	}
	report_denied(denied);
	return (Datum) 0;
}

/* terminate_idle_in_transaction() and terminate_idle(): by age, no policy. */
static Datum
terminate_by_age(FunctionCallInfo fcinfo, PhLimit limit, const char *source)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		older_than = older_than_arg(fcinfo, 0);
	bool		dry_run = dry_run_arg(fcinfo, 1);
	char	   *label = psprintf("older_than %s exceeded", ph_duration_text(older_than));
	PhSnapshot	snap;
	int			denied = 0;

	InitMaterializedSRF(fcinfo, 0);
	take_classified(&snap, 0, false);
	for (int i = 0; i < snap.nbackends; i++)
	{
		PhBackend  *be = &snap.backends[i];
		bool		in_state = limit == PH_LIMIT_IDLE ? be->state == STATE_IDLE :
			(be->state == STATE_IDLEINTRANSACTION ||
			 be->state == STATE_IDLEINTRANSACTION_ABORTED);
		PhActionResult result;

		if (!in_state || be->idle_for < older_than || !may_act(be, NULL, &denied))
			continue;
		if (ph_enforce_act(be, NULL, limit, older_than, label, true, dry_run,
						   source, &result))
			put_action_row(rsinfo, &result.entry);
	}
	report_denied(denied);
	return (Datum) 0;
}

Datum
pool_health_terminate_idle_in_transaction(PG_FUNCTION_ARGS)
{
	return terminate_by_age(fcinfo, PH_LIMIT_IDLE_IN_TRANSACTION,
							"terminate_idle_in_transaction");
}

Datum
pool_health_terminate_idle(PG_FUNCTION_ARGS)
{
	return terminate_by_age(fcinfo, PH_LIMIT_IDLE, "terminate_idle");
}

/* reclaim's order: lowest policy priority first, then longest idle. */
static int
reclaim_cmp(const void *a, const void *b)
{
	const PhBackend *x = *(PhBackend *const *) a;
	const PhBackend *y = *(PhBackend *const *) b;
	int32		px = x->policy ? x->policy->priority : 0;
	int32		py = y->policy ? y->policy->priority : 0;

	if (px != py)
		return px < py ? -1 : 1;
	return (y->idle_for > x->idle_for) - (y->idle_for < x->idle_for);
}

/*
 * reclaim(target_percent, dry_run): while usage is above the target, end
 * idle sessions, lowest priority and longest idle first, until it is at
 * most the target.
 */
Datum
pool_health_reclaim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			target;
	bool		dry_run = dry_run_arg(fcinfo, 1);
	PhSnapshot	snap;
	PhUsage		usage;
	PhBackend **idle;
	int			nidle = 0;
	int			excess;
	int			denied = 0;
	char	   *label;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("target_percent must not be NULL")));
	target = PG_GETARG_INT32(0);
	if (target < 0 || target > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("target_percent must be between 0 and 100, not %d", target)));

	InitMaterializedSRF(fcinfo, 0);
	take_classified(&snap, 0, true);
	ph_usage_compute(&snap, &usage);
	excess = usage.used - (int) ((int64) usage.usable * target / 100);
	if (excess <= 0)
		return (Datum) 0;
	label = psprintf("reclaim to %d%% (%d used of %d usable)", target,
					 usage.used, usage.usable);

	idle = palloc(sizeof(PhBackend *) * Max(snap.nbackends, 1));
	for (int i = 0; i < snap.nbackends; i++)
		if (snap.backends[i].is_client && snap.backends[i].state == STATE_IDLE)
			idle[nidle++] = &snap.backends[i];
	qsort(idle, nidle, sizeof(PhBackend *), reclaim_cmp);
	for (int i = 0; i < nidle && excess > 0; i++)
	{
		PhActionResult result;

		if (!may_act(idle[i], idle[i]->policy, &denied))
			continue;
		if (ph_enforce_act(idle[i], idle[i]->policy, PH_LIMIT_IDLE, 0, label,
						   true, dry_run, "reclaim", &result))
		{
			put_action_row(rsinfo, &result.entry);
			excess--;
		}
	}
	report_denied(denied);
	return (Datum) 0;
}

/* get_recent_actions(): the in-memory audit list, oldest first. */
Datum
pool_health_get_recent_actions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhShared   *shared = ph_shared_required("pool_health.recent_actions");
	PhAuditEntry *entries = palloc(sizeof(PhAuditEntry) * Max(shared->audit.capacity, 1));
	int			n = ph_audit_copy(entries);

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
		put_action_row(rsinfo, &entries[i]);
	return (Datum) 0;
}

#define POLICY_USAGE_COLS 8

/*
 * get_policy_usage(): per enabled policy, the client sessions it governs
 * now (from one pass over backend status), its quota and refuse_at, and,
 * with the preload, the admission counter and the refusals since the
 * policies last changed.
 */
Datum
pool_health_get_policy_usage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhPolicies	policies;
	PhSnapshot	snap;
	int		   *governed;
	bool		published = false;

	InitMaterializedSRF(fcinfo, 0);
	ph_policies_for_reading(&policies);
	ph_snapshot_take(&snap, policies.need_blocking ? PH_SNAPSHOT_BLOCKING : 0);
	ph_classify(&snap, &policies);
	governed = palloc0(sizeof(int) * Max(policies.count, 1));
	for (int i = 0; i < snap.nbackends; i++)
		if (snap.backends[i].is_client && snap.backends[i].policy != NULL)
			governed[snap.backends[i].policy - policies.items]++;

	if (ph_shared != NULL)
	{
		LWLockAcquire(ph_shared->lock, LW_SHARED);
		published = ph_shared->policy_set.compiled &&
			ph_shared->policy_set.count == policies.count;
		LWLockRelease(ph_shared->lock);
	}
	for (int i = 0; i < policies.count; i++)
	{
		const PhPolicy *p = &policies.items[i];
		Datum		values[POLICY_USAGE_COLS];
		bool		nulls[POLICY_USAGE_COLS];

		memset(nulls, false, sizeof(nulls));
		values[0] = CStringGetTextDatum(NameStr(p->name));
		values[1] = Int32GetDatum(p->priority);
		values[2] = Int32GetDatum(governed[i]);
		nulls[3] = p->max_connections < 0;
		values[3] = Int32GetDatum(p->max_connections);
		nulls[4] = p->refuse_at < 0;
		if (!nulls[4])
			values[4] = CStringGetTextDatum(ph_level_name((PhLevel) p->refuse_at));
		nulls[5] = nulls[6] = !published;
		if (published)
		{
			values[5] = Int32GetDatum(pg_atomic_read_u32(&ph_shared->policy_set.counters[i].connections));
			values[6] = Int64GetDatum(pg_atomic_read_u64(&ph_shared->policy_set.counters[i].refused));
		}
		values[7] = Float8GetDatum(p->max_connections > 0 ?
								   100.0 * governed[i] / p->max_connections : 0);
		nulls[7] = p->max_connections < 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
