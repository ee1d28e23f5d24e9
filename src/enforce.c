/*-------------------------------------------------------------------------
 *
 * enforce.c
 *		Acting on one session: the privilege rule of pg_terminate_backend(),
 *		the re-check right before signalling (same session, same state,
 *		still past its limit), the signal itself, and the audit entry of
 *		what was done, with the limit's name (recorded by audit.c).  Used
 *		by the worker's continuous enforcement (ph_enforce_due(), here, with
 *		the sessions it has dealt with in each episode) and by the
 *		functions of actions.c alike.
 *
 * Which sessions may never be touched is decided by the evaluation
 * (evaluate.c, PhBackend.exemption): anything but client backends, the
 * calling session, roles in pool_health.protected_roles, and superuser
 * sessions unless the governing policy says allow_superuser.
 *
 * Sessions idle in transaction ignore a cancel, so they are terminated:
 * SIGTERM to the backend's process group, as pg_terminate_backend() does.
 *
 * Shared state: none of its own (it counts terminations in history.c);
 * "acted" is the worker's own memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/socket.h>

#include "catalog/pg_authid.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "audit.h"
#include "backend_snapshot.h"
#include "enforce.h"
#include "evaluate.h"
#include "history.h"
#include "policy.h"
#include "rules.h"
#include "settings.h"
#include "shared_catalogs.h"
#include "shmem.h"
#include "xact_origin.h"

/*
 * Could actor end a session of this role with pg_terminate_backend()?
 * The same rule: a superuser's session only as a superuser; otherwise the
 * privileges of the role or of pg_signal_backend.
 */
bool
ph_may_signal(Oid actor, Oid role_id)
{
	if (superuser_arg(role_id) && !superuser_arg(actor))
		return false;
	return has_privs_of_role(actor, role_id) ||
		has_privs_of_role(actor, ROLE_PG_SIGNAL_BACKEND);
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
			return psprintf("blocking %d %s", blocking,
							blocking == 1 ? "session" : "sessions");
		case PH_LIMIT_NONE:
			break;
	}
	return "";
}

/*
 * Copy a session's text into an audit field of size bytes, clipped at a
 * character boundary, and valid in this database's encoding: a session of
 * a database with another encoding may have sent bytes that are not, and
 * they would make the audit row unreadable (and undumpable); such bytes
 * become "?".
 */
static void
copy_text(char *dst, const char *src, size_t size)
{
	int			len = strlen(src);

	if (!pg_verifymbstr(src, len, true))
	{
		for (int i = 0; i < len && i < (int) size - 1; i++)
			dst[i] = IS_HIGHBIT_SET(src[i]) ? '?' : src[i];
		dst[Min(len, (int) size - 1)] = '\0';
		return;
	}
	len = pg_mbcliplen(src, len, size - 1);
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/*
 * Why the session is ended, for its client (xact_origin.c): pool_health,
 * the policy (or the function and who called it), the limit and the
 * observed age, and the start of the first statement of its transaction.
 */
static char *
explanation(const PhAuditEntry *e, const PhPolicy *policy)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (policy != NULL)
		appendStringInfo(&buf, "pool_health ended this session (policy \"%s\", %s): %s.",
						 NameStr(policy->name), e->source, e->reason);
	else
		appendStringInfo(&buf, "pool_health ended this session (%s() called by role \"%s\"): %s.",
						 e->source, NameStr(e->requested_by), e->reason);
	if (e->xact_first_query[0] != '\0')
	{
		int			len = pg_mbcliplen(e->xact_first_query, strlen(e->xact_first_query), 300);

		appendStringInfo(&buf, " The transaction began with: %.*s%s", len,
						 e->xact_first_query,
						 e->xact_first_query[len] != '\0' ? "..." : "");
	}
	return buf.data;
}

/*
 * Signal (or, in a dry run or for action log, only describe) one session
 * past a limit, filling *e for the audit; recording it is the caller's.
 * The session is read again first: it must be the same session (pid and
 * backend start), still in the same state or transaction (for
 * blocking_timeout: still blocking the waiter whose wait its
 * blocking_since is, in that same wait: a look at one lock, not a new
 * snapshot), and still past limit_usec; if not, nothing is done and false
 * is returned (the next evaluation looks again).
 * policy is NULL for manual calls, whose source names the function; label
 * starts the audited reason (NULL: "<limit> <value> exceeded"), with the
 * name of the limit it applies (the function's argument, as in
 * "older_than 00:05:00 exceeded") as its first word: the entry's
 * limit_name.  The caller has checked exemptions and privileges.
 */
bool
ph_enforce_signal(const PhBackend *be, const PhPolicy *policy, PhLimit limit,
				  int64 limit_usec, const char *label, bool terminate,
				  bool dry_run, const char *source, PhAuditEntry *e)
{
	PhBackend	now;
	TimestampTz since;
	TimestampTz at;
	const char *str;
	char	   *query;

	if (!ph_snapshot_reread(be, &now) ||
		now.pid != be->pid || now.backend_start != be->backend_start)
		return false;
	/* the same episode (idle period, transaction, blocking spell) */
	since = ph_rules_episode_start(limit, now.state, now.state_change, now.xact_start,
								   be->blocking_since);
	if (since == 0 ||
		since != ph_rules_episode_start(limit, be->state, be->state_change,
										be->xact_start, be->blocking_since))
		return false;
	/* blocking: still in the transaction, blocking the earliest waiter (one look at its lock) */
	if (limit == PH_LIMIT_BLOCKING &&
		(now.xact_start == 0 || now.xact_start != be->xact_start ||
		 !ph_snapshot_still_blocking(be)))
		return false;
	at = GetCurrentTimestamp();
	if (at - since < limit_usec)
		return false;

	memset(e, 0, sizeof(PhAuditEntry));
	e->at = at;
	e->pid = be->pid;
	e->role_id = be->role_id;
	e->name_encoding = ph_name_encoding();
	ph_name_copy(&e->role, ph_role_name(be->role_id));
	ph_name_copy(&e->database, ph_database_name(be->database_id));
	strlcpy(e->application_name, now.application_name, sizeof(e->application_name));
	if (!ph_client_addr_text(&now.client_addr, e->client_addr, sizeof(e->client_addr),
							 &e->client_port))
		e->client_port = now.client_addr.addr.ss_family == AF_UNIX ? -1 : 0;
	e->backend_start = now.backend_start;
	e->xact_start = now.xact_start;
	if ((str = ph_backend_state_name(now.state)) != NULL)
		strlcpy(e->state, str, sizeof(e->state));
	e->state_change = now.state_change;
	query = pgstat_clip_activity(now.query);
	copy_text(e->query, query, sizeof(e->query));
	if (now.xact_first_query != NULL)
		copy_text(e->xact_first_query, now.xact_first_query, sizeof(e->xact_first_query));
	if (now.xact_tags != NULL)
		copy_text(e->xact_tags, now.xact_tags, sizeof(e->xact_tags));
	if (policy != NULL)
		namestrcpy(&e->policy, NameStr(policy->name));
	if (label == NULL)
	{
		strlcpy(e->limit_name, ph_limit_name(limit), sizeof(e->limit_name));
		label = psprintf("%s %s exceeded", e->limit_name,
						 ph_duration_text(limit_usec));
	}
	else
		strlcpy(e->limit_name, label,
				Min(strcspn(label, " ") + 1, sizeof(e->limit_name)));
	snprintf(e->reason, sizeof(e->reason), "%s: %s for %s", label,
			 limit_activity(limit, be->blocking), ph_duration_text(at - since));
	strlcpy(e->action, terminate ? "terminate" : "log", sizeof(e->action));
	e->dry_run = dry_run;
	e->success = -1;
	strlcpy(e->source, source, sizeof(e->source));
	if (strcmp(source, "worker") != 0)
		ph_name_copy(&e->requested_by, ph_name_text(GetUserNameFromId(GetUserId(), false)));

	if (terminate && !dry_run)
	{
		/* what its client will read in the DETAIL of its FATAL */
		ph_xact_origin_note(be->procno, be->pid, be->backend_start,
							explanation(e, policy));
		e->success = ph_signal_backend(be->pid, SIGTERM) == 0 ? 1 : 0;
		if (e->success == 1)
			ph_history_count_terminations(1);
	}
	return true;
}

/* ---- the worker's continuous enforcement ---- */

/* A session, in one episode, that enforcement has dealt with. */
typedef struct ActedKey
{
	int			pid;
	TimestampTz backend_start;
	TimestampTz episode;		/* state_change or xact_start */
	PhLimit		limit;
} ActedKey;

typedef struct ActedEntry
{
	ActedKey	key;
	bool		seen;
} ActedEntry;

static HTAB *acted = NULL;

/*
 * Worker: carry out the policies on an evaluation: act on every governed
 * session past its deadline, once per session and episode (the same idle
 * period, transaction or blocking spell: "acted" remembers them, in the
 * worker's memory, until the session moves on), and return the earliest
 * deadline still to come (0: none).  It acts with the rights of the owner
 * of pool_health.policies: a session that owner could not end with
 * pg_terminate_backend() is not ended (logged).
 *
 * Every due session is re-checked and signalled first, and only then are
 * the actions recorded: writing the log line and the audit row of one
 * session can take milliseconds while many others are exiting, and the
 * sessions due later in the same pass should not wait for that.  The log
 * and the in-memory list are written for all of them before any table
 * row, so an error while inserting (say, a concurrent DROP EXTENSION)
 * leaves no signalled session unrecorded.
 */
TimestampTz
ph_enforce_due(const PhEvaluation *eval)
{
	const PhSnapshot *snap = &eval->snap;
	TimestampTz next_deadline = 0;
	HASH_SEQ_STATUS scan;
	ActedEntry *entry;
	PhAuditEntry *done = NULL;	/* the actions taken, to record */
	int			ndone = 0;
	int			done_size = 0;

	if (acted == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(ActedKey);
		ctl.entrysize = sizeof(ActedEntry);
		acted = hash_create("pool_health acted", 256, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	hash_seq_init(&scan, acted);
	while ((entry = hash_seq_search(&scan)) != NULL)
		entry->seen = false;

	for (int i = 0; i < snap->nbackends; i++)
	{
		const PhBackend *be = &snap->backends[i];
		ActedKey	key;
		bool		found;
		const PhPolicy *p = be->policy;

		if (p == NULL || be->deadline == 0 || be->exemption != PH_EXEMPT_NONE)
			continue;
		memset(&key, 0, sizeof(key));
		key.pid = be->pid;
		key.backend_start = be->backend_start;
		key.limit = be->limit;
		key.episode = ph_rules_episode_start(be->limit, be->state, be->state_change,
											 be->xact_start, be->blocking_since);
		entry = hash_search(acted, &key, HASH_FIND, NULL);
		if (entry != NULL)
		{
			entry->seen = true;
			continue;
		}
		if (be->deadline > snap->taken_at)
		{
			if (next_deadline == 0 || be->deadline < next_deadline)
				next_deadline = be->deadline;
			continue;
		}
		if (!ph_may_signal(eval->policies.owner, be->role_id))
			ereport(LOG,
					(errmsg("pool_health: policy \"%s\" does not end session %d: the owner of pool_health.policies could not end it with pg_terminate_backend()",
							NameStr(p->name), be->pid)));
		else
		{
			if (ndone == done_size)
			{
				done_size = Max(16, done_size * 2);
				done = done ? repalloc(done, sizeof(PhAuditEntry) * done_size) :
					palloc(sizeof(PhAuditEntry) * done_size);
			}
			if (!ph_enforce_signal(be, p, be->limit, be->limit_usec, NULL,
								   p->terminate, p->dry_run || ph_enforce == PH_ENFORCE_DRY_RUN,
								   "worker", &done[ndone]))
				continue;		/* it moved on: look again next time */
			ndone++;
		}
		entry = hash_search(acted, &key, HASH_ENTER, &found);
		entry->seen = true;
	}

	for (int i = 0; i < ndone; i++)
		ph_audit_log(&done[i]);
	for (int i = 0; i < ndone; i++)
		ph_audit_store(&done[i]);

	hash_seq_init(&scan, acted);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (!entry->seen)
			hash_search(acted, &entry->key, HASH_REMOVE, NULL);
	return next_deadline;
}
