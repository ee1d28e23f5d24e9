/*-------------------------------------------------------------------------
 *
 * actions.c
 *		The functions that end sessions on request (psql, pg_cron):
 *		cleanup() applies every policy now, terminate_idle_in_transaction()
 *		and terminate_idle() end sessions by age, reclaim() ends idle
 *		sessions until usage is below a target; and get_recent_actions(),
 *		the in-memory audit lists, and get_my_recent_actions(), the
 *		caller's own records in them, and name_shown(), a name as the
 *		audit stores it (both for pool_health.my_terminations).
 *
 * Each carries out what one evaluation (evaluate.c) decided: the sessions
 * it exempts are never candidates.  Then each target must be one the
 * caller could end with pg_terminate_backend() (else it is skipped and
 * counted in a NOTICE), is re-checked and signalled by enforce.c, and
 * audited by audit.c.  The rows returned show the session's details only
 * under pg_stat_activity's visibility rule.
 *
 * No shared state but through those files.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "audit.h"
#include "backend_snapshot.h"
#include "enforce.h"
#include "evaluate.h"
#include "policy.h"
#include "shared_catalogs.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(pool_health_cleanup);
PG_FUNCTION_INFO_V1(pool_health_terminate_idle_in_transaction);
PG_FUNCTION_INFO_V1(pool_health_terminate_idle);
PG_FUNCTION_INFO_V1(pool_health_reclaim);
PG_FUNCTION_INFO_V1(pool_health_get_recent_actions);
PG_FUNCTION_INFO_V1(pool_health_get_my_recent_actions);
PG_FUNCTION_INFO_V1(pool_health_name_shown);

/*
 * One row (pool_health.action) of what was done or, in a dry run, would
 * be done, with the details the caller may see.  The type has the
 * attributes of the installed version of the extension: fewer than
 * PH_AUDIT_COLS before its update (its first ones: only those are read),
 * or more than this library knows (NULL).
 */
static void
put_action_row(ReturnSetInfo *rsinfo, const PhAuditEntry *e)
{
	int			natts = Max(rsinfo->setDesc->natts, PH_AUDIT_COLS);
	Datum	   *values = palloc0(sizeof(Datum) * natts);
	bool	   *nulls = palloc(sizeof(bool) * natts);

	memset(nulls, true, sizeof(bool) * natts);
	ph_audit_datums(e, ph_role_visible(e->role_id), values, nulls);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	pfree(values);
	pfree(nulls);
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
	if (!ph_interval_usec(iv, &usec) || usec > PG_INT64_MAX / 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than is out of range: %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errdetail("A month counts 30 days, a day 24 hours; the total must be under 146,000 years.")));
	if (usec <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than must be positive, not %s",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv))))));
	return usec;
}

/*
 * May the caller act on this session?  Exempt sessions never are
 * candidates (silently); then the caller's right to end it by hand,
 * counted in *denied.
 */
static bool
may_act(const PhBackend *be, int *denied)
{
	if (be->exemption != PH_EXEMPT_NONE)
		return false;
	if (!ph_may_signal(GetUserId(), be->role_id))
	{
		(*denied)++;
		return false;
	}
	return true;
}

/*
 * The NOTICE for the sessions skipped because the caller (by_owner false)
 * or the policies' owner could not end them by hand.
 */
static void
report_denied(int denied, bool by_owner)
{
	if (denied > 0)
		ereport(NOTICE,
				(errmsg_plural("%d session was skipped: %s could not end it with pg_terminate_backend()",
							   "%d sessions were skipped: %s could not end them with pg_terminate_backend()",
							   denied, denied,
							   by_owner ? "the owner of pool_health.policies" : "you")));
}

/*
 * A policy acts with its owner's rights too: a session the owner of
 * pool_health.policies could not end by hand is not ended through one of
 * its policies, whoever calls the function (counted in *denied).
 */
static bool
owner_may_act(const PhEvaluation *eval, const PhBackend *be, int *denied)
{
	if (ph_may_signal(eval->policies.owner, be->role_id))
		return true;
	(*denied)++;
	return false;
}

/* Signal, audit and return one session. */
static bool
act(ReturnSetInfo *rsinfo, const PhBackend *be, const PhPolicy *policy,
	PhLimit limit, int64 limit_usec, const char *label, bool terminate,
	bool dry_run, const char *source)
{
	PhAuditEntry entry;

	if (!ph_enforce_signal(be, policy, limit, limit_usec, label, terminate,
						   dry_run, source, &entry))
		return false;
	ph_audit_record(&entry);
	put_action_row(rsinfo, &entry);
	return true;
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
	PhEvaluation eval;
	int			denied = 0;
	int			owner_denied = 0;

	InitMaterializedSRF(fcinfo, 0);
	ph_evaluate(&eval, PH_EVAL_TABLE_POLICIES);
	for (int i = 0; i < eval.snap.nbackends; i++)
	{
		const PhBackend *be = &eval.snap.backends[i];
		const PhPolicy *p = be->policy;

		if (p == NULL || be->deadline == 0 || eval.snap.taken_at < be->deadline ||
			!may_act(be, &denied) || !owner_may_act(&eval, be, &owner_denied))
			continue;
		(void) act(rsinfo, be, p, be->limit, be->limit_usec, NULL, p->terminate,
				   dry_run || p->dry_run, "cleanup");
	}
	report_denied(denied, false);
	report_denied(owner_denied, true);
	return (Datum) 0;
}

/*
 * terminate_idle_in_transaction() and terminate_idle(): by age, whatever
 * the policies say; never superusers.
 */
static Datum
terminate_by_age(FunctionCallInfo fcinfo, PhLimit limit, const char *source)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		older_than = older_than_arg(fcinfo, 0);
	bool		dry_run = dry_run_arg(fcinfo, 1);
	char	   *label = psprintf("older_than %s exceeded", ph_duration_text(older_than));
	PhEvaluation eval;
	int			denied = 0;

	InitMaterializedSRF(fcinfo, 0);
	ph_evaluate(&eval, 0);
	for (int i = 0; i < eval.snap.nbackends; i++)
	{
		const PhBackend *be = &eval.snap.backends[i];
		bool		in_state = limit == PH_LIMIT_IDLE ? be->state == STATE_IDLE :
			ph_idle_in_transaction(be->state);

		if (!in_state || be->idle_for < older_than || be->superuser ||
			!may_act(be, &denied))
			continue;
		(void) act(rsinfo, be, NULL, limit, older_than, label, true, dry_run, source);
	}
	report_denied(denied, false);
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
	PhEvaluation eval;
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
	ph_evaluate(&eval, PH_EVAL_TABLE_POLICIES);
	excess = eval.usage.used - (int) ((int64) eval.usage.usable * target / 100);
	if (excess <= 0)
		return (Datum) 0;
	label = psprintf("target_percent %d exceeded (%s)", target,
					 ph_usage_words(eval.usage.used, eval.usage.usable));

	idle = palloc(sizeof(PhBackend *) * Max(eval.snap.nbackends, 1));
	for (int i = 0; i < eval.snap.nbackends; i++)
		if (eval.snap.backends[i].is_client && eval.snap.backends[i].state == STATE_IDLE)
			idle[nidle++] = &eval.snap.backends[i];
	qsort(idle, nidle, sizeof(PhBackend *), reclaim_cmp);
	for (int i = 0; i < nidle && excess > 0; i++)
	{
		if (!may_act(idle[i], &denied))
			continue;
		if (act(rsinfo, idle[i], idle[i]->policy, PH_LIMIT_IDLE, 0, label, true,
				dry_run, "reclaim"))
			excess--;
	}
	report_denied(denied, false);
	return (Datum) 0;
}

/* get_recent_actions(): the in-memory audit lists, oldest first. */
Datum
pool_health_get_recent_actions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			capacity;
	PhAuditEntry *entries;
	int			n;

	ph_require_preload("pool_health.recent_actions");
	capacity = ph_audit_capacity();
	entries = palloc(sizeof(PhAuditEntry) * Max(capacity, 1));
	n = ph_audit_copy(entries, capacity);
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
		put_action_row(rsinfo, &entries[i]);
	return (Datum) 0;
}

/*
 * get_my_recent_actions(): the entries of the in-memory audit lists for
 * sessions of the session user (the role that logged in, whatever SET
 * ROLE says), oldest first; the in-memory part of
 * pool_health.my_terminations, open to every role.  Matched as the view
 * matches table rows: by OID (a role dropped and created again with the
 * same name sees nothing of its namesake's) and by name (an OID in a
 * table restored into another cluster may be another role's there; a
 * renamed role sees the records made since).  The name is compared as
 * the entry stores it: the session user's name shown (escaped, cut) in
 * the encoding the entry was made in, which may be another database's
 * than this one's (the worker's).  Without the preload, nothing (no
 * error: the view also reads the table).
 */
Datum
pool_health_get_my_recent_actions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			me = GetSessionUserId();
	const char *my_name;
	NameData	shown;
	int			encoding = -1;
	PhAuditEntry *entries;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	/* (a session user dropped while connected: nothing) */
	my_name = GetUserNameFromId(me, true);
	if (!ph_shmem_ready() || my_name == NULL)
		return (Datum) 0;
	entries = ph_audit_copy_role(me, &n);
	for (int i = 0; i < n; i++)
	{
		if (entries[i].name_encoding != encoding)
		{
			encoding = entries[i].name_encoding;
			ph_name_shown(&shown, my_name, encoding);
		}
		if (strcmp(NameStr(entries[i].role), NameStr(shown)) == 0)
			put_action_row(rsinfo, &entries[i]);
	}
	return (Datum) 0;
}

/*
 * name_shown(name): a role or database name as pool_health shows and
 * stores it in this database (escaped where it is not valid text here,
 * backslashes doubled, cut as a name: ph_name_shown()).  The role of the
 * rows of pool_health.terminations of this database is so (they are
 * written by a process in this database), and my_terminations compares
 * it with name_shown(SESSION_USER).
 */
Datum
pool_health_name_shown(PG_FUNCTION_ARGS)
{
	Name		name = PG_GETARG_NAME(0);
	Name		shown = (Name) palloc(NAMEDATALEN);

	ph_name_shown(shown, NameStr(*name), ph_name_encoding());
	PG_RETURN_NAME(shown);
}
