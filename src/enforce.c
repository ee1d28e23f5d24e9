/*-------------------------------------------------------------------------
 *
 * enforce.c
 *		Acting on one session: the safety exclusions, the privilege rule of
 *		pg_terminate_backend(), the re-check right before signalling (same
 *		session, same state, still past its limit), the signal itself, and
 *		the audit record of what was done (audit.c).  Used by the worker's
 *		continuous enforcement and by the cleanup functions alike.
 *
 * Never touched, whatever the caller asks: anything but client backends
 * (walsenders, autovacuum, background and parallel workers, the worker
 * itself), the calling session, roles in pool_health.protected_roles, and
 * superuser sessions unless the governing policy says allow_superuser.
 *
 * Sessions idle in transaction ignore a cancel, so they are terminated:
 * SIGTERM to the backend's process group, as pg_terminate_backend() does.
 *
 * Shared state: only the atomic counter ph_shared->terminations.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"	/* get_database_name() before PG 19 */
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"	/* get_database_name() from PG 19 */
#include "utils/timestamp.h"

#include "compat.h"
#include "pool_health.h"

/* Why the session may not be touched at all, or NULL. */
const char *
ph_enforce_exclusion(const PhBackend *be, const PhPolicy *policy)
{
	if (!be->is_client)
		return "not a client backend";
	if (be->pid == MyProcPid)
		return "the calling session";
	if (ph_role_is_protected(be->role_id))
		return "role listed in pool_health.protected_roles";
	if (superuser_arg(be->role_id) && !(policy != NULL && policy->allow_superuser))
		return "superuser session";
	return NULL;
}

/*
 * Could the current user end a session of this role with
 * pg_terminate_backend()?  The same rule: a superuser's session only as a
 * superuser; otherwise membership in the role or pg_signal_backend.
 */
bool
ph_enforce_may_signal(Oid role_id)
{
	if (superuser_arg(role_id) && !superuser())
		return false;
	return has_privs_of_role(GetUserId(), role_id) ||
		has_privs_of_role(GetUserId(), ROLE_PG_SIGNAL_BACKEND);
}

/* A duration as interval text, e.g. 00:05:00.123. */
char *
ph_duration_text(int64 usec)
{
	Interval	iv;

	memset(&iv, 0, sizeof(iv));
	iv.time = usec;
	return DatumGetCString(DirectFunctionCall1(interval_out,
											   DirectFunctionCall1(interval_justify_hours,
																   IntervalPGetDatum(&iv))));
}

/* What the session has been doing for "observed", in words. */
static const char *
limit_activity(PhLimit limit, int blocking)
{
	switch (limit)
	{
		case PH_LIMIT_IDLE_IN_TRANSACTION:
			return "idle in transaction";
		case PH_LIMIT_IDLE:
			return "idle";
		case PH_LIMIT_TRANSACTION:
			return "in a transaction";
		case PH_LIMIT_BLOCKING:
			return psprintf("in a transaction blocking %d %s", blocking,
							blocking == 1 ? "session" : "sessions");
		case PH_LIMIT_NONE:
			break;
	}
	return "";
}

/*
 * Signal (or, in a dry run or for action log, only describe) one session
 * past a limit, filling result->entry for the audit; recording it is the
 * caller's (ph_enforce_act does both).  The session is read again first:
 * it must be the same session (pid and backend start), still in the same
 * state or transaction, and still past limit_usec; if not, nothing is
 * done and false is returned.
 * policy is NULL for manual calls, whose source names the function; label
 * starts the audited reason (e.g. "idle_timeout 00:05:00 exceeded").  The
 * caller has checked exclusions and privileges.
 */
bool
ph_enforce_signal(const PhBackend *be, const PhPolicy *policy, PhLimit limit,
				  int64 limit_usec, const char *label, bool terminate,
				  bool dry_run, const char *source, PhActionResult *result)
{
	PhAuditEntry *e = &result->entry;
	PhBackend	now;
	TimestampTz since;
	TimestampTz at;
	const char *str;
	char	   *query;

	result->acted = false;
	if (!ph_snapshot_reread(be, &now) ||
		now.pid != be->pid || now.backend_start != be->backend_start)
		return false;
	switch (limit)
	{
		case PH_LIMIT_IDLE_IN_TRANSACTION:
			if ((now.state != STATE_IDLEINTRANSACTION &&
				 now.state != STATE_IDLEINTRANSACTION_ABORTED) ||
				now.state_change != be->state_change)
				return false;
			since = now.state_change;
			break;
		case PH_LIMIT_IDLE:
			if (now.state != STATE_IDLE || now.state_change != be->state_change)
				return false;
			since = now.state_change;
			break;
		case PH_LIMIT_TRANSACTION:
		case PH_LIMIT_BLOCKING:
			if (now.xact_start == 0 || now.xact_start != be->xact_start)
				return false;
			since = now.xact_start;
			break;
		default:
			return false;
	}
	at = GetCurrentTimestamp();
	if (at - since < limit_usec)
		return false;

	memset(e, 0, sizeof(PhAuditEntry));
	e->at = at;
	e->pid = be->pid;
	if ((str = GetUserNameFromId(be->role_id, true)) != NULL)
		namestrcpy(&e->role, str);
	if (OidIsValid(be->database_id) && (str = get_database_name(be->database_id)) != NULL)
		namestrcpy(&e->database, str);
	strlcpy(e->application_name, now.application_name, sizeof(e->application_name));
	(void) ph_client_addr_text(&now.client_addr, e->client_addr, sizeof(e->client_addr), NULL);
	e->backend_start = now.backend_start;
	e->xact_start = now.xact_start;
	if ((str = ph_backend_state_name(now.state)) != NULL)
		strlcpy(e->state, str, sizeof(e->state));
	e->state_change = now.state_change;
	query = pgstat_clip_activity(now.query);
	memcpy(e->query, query, pg_mbcliplen(query, strlen(query), sizeof(e->query) - 1));
	if (policy != NULL)
		namestrcpy(&e->policy, NameStr(policy->name));
	snprintf(e->reason, sizeof(e->reason), "%s: %s for %s", label,
			 limit_activity(limit, be->blocking), ph_duration_text(at - since));
	strlcpy(e->action, terminate ? "terminate" : "log", sizeof(e->action));
	e->dry_run = dry_run;
	e->success = -1;
	strlcpy(e->source, source, sizeof(e->source));
	if (strcmp(source, "worker") != 0)
		namestrcpy(&e->requested_by, GetUserNameFromId(GetUserId(), false));

	if (terminate && !dry_run)
	{
		e->success = ph_signal_backend(be->pid, SIGTERM) == 0 ? 1 : 0;
		if (e->success == 1 && ph_shared != NULL)
			pg_atomic_fetch_add_u64(&ph_shared->terminations, 1);
	}
	result->acted = true;
	return true;
}

/* ph_enforce_signal, and the audit record of what was done. */
bool
ph_enforce_act(const PhBackend *be, const PhPolicy *policy, PhLimit limit,
			   int64 limit_usec, const char *label, bool terminate,
			   bool dry_run, const char *source, PhActionResult *result)
{
	if (!ph_enforce_signal(be, policy, limit, limit_usec, label, terminate,
						   dry_run, source, result))
		return false;
	ph_audit_record(&result->entry);
	return true;
}
