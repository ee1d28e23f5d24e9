/*-------------------------------------------------------------------------
 *
 * http_probes.c
 *		What load balancers and orchestrators ask the HTTP worker, answered
 *		from one set of facts (ProbeFacts below) computed once per
 *		evaluation of the period (http_evaluation.c: at most one per 100
 *		ms, or sample interval if shorter, which /health, /status and
 *		/metrics share) and from the recovery state:
 *
 *			/livez		200 while the worker answers: never from slots
 *			/readyz		200 when a new ordinary login would be admitted
 *						(the server accepts connections, a usable slot is
 *						free, no catch-all policy refuses it) and the
 *						level is below critical; ?min_free=N: at least N
 *						usable slots free; ?max_lag=bytes or interval: on
 *						a standby, the lag within it (ignored on a
 *						primary)
 *			/primary	200 on a primary, 503 in recovery
 *			/replica	200 on a hot standby that accepts connections,
 *						with ?lag= (Patroni's name, or max_lag=) as above
 *
 *		?verbose adds the reasons.  The body is JSON; a HEAD and an OPTIONS
 *		(http_requests.c) get the same status without it.  A parameter
 *		that is malformed, out of range, repeated or unknown to the
 *		endpoint is a 400 whose JSON names it.  "Accepts connections":
 *		neither in recovery without hot standby nor shutting down (the
 *		status line of postmaster.pid says "stopping": a smart shutdown
 *		refuses new logins while the sessions open finish).
 *
 *		And the line of the HAProxy agent-check (http_agent.c): "up 37%
 *		maxconn:12" (the weight: the free share of the usable slots;
 *		maxconn: what HAProxy may hold, the free usable slots and the
 *		sessions already connected from HAProxy's address), "up drain"
 *		at critical ("up": after a "down", HAProxy keeps a server down
 *		until it hears "up"), "down" when exhausted or not accepting
 *		connections, and "up ready ..." for AGENT_READY_MS after a
 *		drain or down and after the agent started: "ready" cancels a
 *		DRAIN or MAINT state, the agent's own but an operator's too, so
 *		it is said only to undo the agent's.
 *
 * The lag follows Patroni's /replica?lag=: the primary's last WAL position
 * known here (the WAL receiver's latest_end_lsn: what the primary
 * reported sending last) less the position replayed, in bytes.  As an
 * interval, how long replay has been behind what was received: the time
 * since replay was last seen caught up (ph_http_probe_track(), at every
 * round of the worker's loop, at most PH_HTTP_TRACK_MS apart on a standby),
 * at most the time since the last transaction replayed committed (a
 * quiet primary commits nothing, which is no lag); 0 while everything
 * received is replayed.  Without a streaming WAL receiver, or before the
 * primary reported its position, the lag is unknown, and a check with a
 * maximum fails.
 *
 * State: facts (below) and its reasons, the replay tracking and the
 * agent's ready_until, local to the HTTP worker's process
 * (TopMemoryContext).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "replication/walreceiver.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#include "utils/pidfile.h"
#include "utils/timestamp.h"

#include "admission.h"
#include "backend_snapshot.h"
#include "evaluate.h"
#include "http.h"
#include "http_internal.h"
#include "json_writer.h"
#include "settings.h"

/* How long the agent says "ready" after a drain or down, and at its start */
#define AGENT_READY_MS			10000

/* A client address as ph_client_addr_text() writes it */
#define PROBE_ADDR_SIZE			64

/* What every probe and the agent answer from; recomputed at most once per period */
typedef struct ProbeFacts
{
	TimestampTz made_from;		/* when the evaluation they were computed
								 * from was made (0: none yet) */
	bool		evaluated;		/* false: the evaluation failed (error) */
	char	   *error;			/* why, if it failed */
	PhLevel		level;
	int			usable;
	int			used;
	int			free;			/* free usable slots */
	bool		refusing;		/* the postmaster refuses connections */
	const char *refusing_because;	/* why (a constant), if refusing */
	bool		stopping;		/* refusing: the postmaster shuts down */
	NameData	refusing_policy;	/* a catch-all policy that refuses an
									 * ordinary login now; empty: none */
	int			reserved_unused;	/* free slots the reserves of policies
									 * other than the catch-all keep from
									 * an ordinary login */
	bool		in_recovery;
	bool		lag_known;		/* a streaming WAL receiver has reported */
	bool		streaming;		/* a WAL receiver streams (lag_known or not) */
	int64		lag_bytes;
	int64		lag_usec;
	int			nclients;		/* client backends connected over TCP */
	char	  (*client_addrs)[PROBE_ADDR_SIZE];	/* their addresses
												 * (TopMemoryContext) */
	int			nreasons;
	char	   *reasons[PH_MAX_REASONS];	/* TopMemoryContext */
} ProbeFacts;

static ProbeFacts facts;

/*
 * When replay was last seen caught up with what was received, 0 before it
 * was seen behind or caught up (ph_http_probe_track())
 */
static TimestampTz replay_caught_up_at = 0;

/* The agent says "ready" until then (AGENT_READY_MS); 0: not started */
static TimestampTz agent_ready_until = 0;

/*
 * The policy that governs an ordinary login (one that no policy matching
 * a database, role, application or client address governs): the first
 * catch-all policy in precedence order.  Its name into facts if it would
 * refuse one now (admission on): refuse_at reached (unless its own
 * reserve covers the login), or its quota full.  And the slots the other
 * policies' reserves keep from such a login (admission's exact counts,
 * as the login path reads them).
 */
static void
find_refusing_policy(const PhEvaluation *eval)
{
	const PhPolicy *catch_all = NULL;

	NameStr(facts.refusing_policy)[0] = '\0';
	facts.reserved_unused = 0;
	if (!ph_admission)
		return;
	for (int i = 0; i < eval->policies.count; i++)
	{
		const PhPolicy *p = &eval->policies.items[i];

		if (p->specificity != 0)
			continue;
		catch_all = p;
		if ((p->refuse_at >= 0 && eval->usage.capacity_level >= (PhLevel) p->refuse_at &&
			 ph_admission_reserve_unused(p) == 0) ||
			(p->max_connections > 0 && eval->governed != NULL &&
			 eval->governed[i] >= p->max_connections))
			namestrcpy(&facts.refusing_policy, NameStr(p->name));
		break;
	}
	if (catch_all != NULL && ph_admission_reserve_unused(catch_all) > 0)
		return;					/* its own reserve covers the login */
	for (int i = 0; i < eval->policies.count; i++)
	{
		const PhPolicy *p = &eval->policies.items[i];

		if (p != catch_all)
			facts.reserved_unused += ph_admission_reserve_unused(p);
	}
}

/*
 * Note whether replay is caught up with what was received (a standby's
 * replay_caught_up_at); called at every round of the worker's loop, and
 * before the lag is measured.  Cheap: two spinlocks.
 */
void
ph_http_probe_track(void)
{
	TimestampTz now;

	if (!RecoveryInProgress())
	{
		replay_caught_up_at = 0;
		return;
	}
	now = GetCurrentTimestamp();
	if (GetXLogReplayRecPtr(NULL) >= GetWalRcvFlushRecPtr(NULL, NULL) ||
		replay_caught_up_at == 0)
		replay_caught_up_at = now;	/* caught up, or first seen behind */
}

/* The standby's lag (see the header comment), into facts. */
static void
measure_lag(void)
{
	XLogRecPtr	replayed;
	XLogRecPtr	primary_end;
	WalRcvState state;
	TimestampTz last_commit;
	TimestampTz now = GetCurrentTimestamp();

	ph_http_probe_track();
	replayed = GetXLogReplayRecPtr(NULL);
	SpinLockAcquire(&WalRcv->mutex);
	primary_end = WalRcv->latestWalEnd;
	state = WalRcv->walRcvState;
	SpinLockRelease(&WalRcv->mutex);

	facts.streaming = state == WALRCV_STREAMING;
	facts.lag_known = facts.streaming && !XLogRecPtrIsInvalid(primary_end);
	facts.lag_bytes = 0;
	facts.lag_usec = 0;
	if (!facts.lag_known)
		return;
	if (primary_end > replayed)
		facts.lag_bytes = (int64) (primary_end - replayed);
	/* behind since replay_caught_up_at (now while caught up) */
	facts.lag_usec = Max(now - replay_caught_up_at, 0);
	last_commit = GetLatestXTime();
	if (last_commit != 0)
		facts.lag_usec = Min(facts.lag_usec, Max(now - last_commit, 0));
}

/*
 * Whether the postmaster is shutting down (the status line of
 * postmaster.pid, in the data directory, says "stopping"): a smart
 * shutdown refuses new logins while background workers run on.
 */
static bool
postmaster_stopping(void)
{
	char		text[1024];
	size_t		len;
	FILE	   *file = AllocateFile("postmaster.pid", "r");
	const char *line = text;

	if (file == NULL)
		return false;			/* gone: the postmaster exits */
	len = fread(text, 1, sizeof(text) - 1, file);
	FreeFile(file);
	text[len] = '\0';
	for (int i = 1; i < LOCK_FILE_LINE_PM_STATUS && line != NULL; i++)
	{
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	return line != NULL &&
		strncmp(line, PM_STATUS_STOPPING, strlen(PM_STATUS_STOPPING)) == 0;
}

/* The addresses of the client backends connected over TCP, into facts. */
static void
note_client_addresses(const PhEvaluation *eval)
{
	if (facts.client_addrs != NULL)
		pfree(facts.client_addrs);
	facts.client_addrs = NULL;
	facts.nclients = 0;
	if (eval->snap.nbackends == 0)
		return;
	facts.client_addrs = MemoryContextAlloc(TopMemoryContext,
											eval->snap.nbackends * PROBE_ADDR_SIZE);
	for (int i = 0; i < eval->snap.nbackends; i++)
	{
		const PhBackend *be = &eval->snap.backends[i];

		if (be->is_client &&
			ph_client_addr_text(&be->client_addr, facts.client_addrs[facts.nclients],
								PROBE_ADDR_SIZE, NULL))
			facts.nclients++;
	}
}

/*
 * The facts, computed again from each new evaluation (one per period,
 * http_evaluation.c).  An error, of the evaluation or here, is kept as
 * the facts' error (every probe but /livez then fails), never a longjmp
 * through libmicrohttpd.
 */
static const ProbeFacts *
current_facts(void)
{
	MemoryContext old;
	volatile uint32 holdoff;
	MemoryContext context;
	const PhEvaluation *eval;
	const char *error;
	TimestampTz made_at;

	eval = ph_http_evaluation(&made_at, &error);
	if (facts.made_from == made_at)
		return &facts;

	for (int i = 0; i < facts.nreasons; i++)
		pfree(facts.reasons[i]);
	facts.nreasons = 0;
	if (facts.error != NULL)
		pfree(facts.error);
	facts.error = NULL;
	facts.made_from = made_at;
	if (eval == NULL)
	{
		facts.evaluated = false;
		facts.error = MemoryContextStrdup(TopMemoryContext, error);
		return &facts;
	}

	context = AllocSetContextCreate(CurrentMemoryContext, "pool_health http probe",
									ALLOCSET_SMALL_SIZES);
	HOLD_INTERRUPTS();
	holdoff = InterruptHoldoffCount;
	old = MemoryContextSwitchTo(context);
	PG_TRY();
	{
		facts.level = eval->usage.level;
		facts.usable = eval->usage.usable;
		facts.used = eval->usage.used;
		facts.free = eval->usage.free;
		find_refusing_policy(eval);
		note_client_addresses(eval);
		for (int i = 0; i < eval->usage.nreasons; i++)
			facts.reasons[facts.nreasons++] =
				MemoryContextStrdup(TopMemoryContext, eval->usage.reasons[i]);
		facts.in_recovery = RecoveryInProgress();
		facts.refusing = true;
		facts.stopping = postmaster_stopping();
		if (facts.stopping)
			facts.refusing_because = "the server is shutting down";
		else if (facts.in_recovery && !HotStandbyActive())
			facts.refusing_because = "the server is in recovery and not accepting connections";
		else
			facts.refusing = false;
		if (facts.in_recovery)
			measure_lag();
		facts.evaluated = true;
	}
	PG_CATCH();
	{
		facts.evaluated = false;
		facts.error = MemoryContextStrdup(TopMemoryContext,
										  ph_http_caught_error(holdoff, context));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(context);
	RESUME_INTERRUPTS();
	return &facts;
}

/* Whether the standby's lag exceeds the maximum asked (unknown: it does) */
static bool
lag_exceeds(const ProbeFacts *f, const ProbeQuery *q)
{
	if (!f->lag_known)
		return true;
	if (q->lag_is_time)
		return (double) f->lag_usec > q->max_lag;
	return (double) f->lag_bytes > q->max_lag;
}

/* Add a reason to a probe's answer. */
static void
add_reason(char **why, int *nwhy, char *reason)
{
	if (*nwhy < PH_MAX_REASONS * 2)
		why[(*nwhy)++] = reason;
}

/*
 * The answer of a probe endpoint (HTTP_LIVEZ and after): its status, and
 * its JSON body into *body (palloc'd in the caller's context).
 */
unsigned int
ph_http_probe_answer(struct MHD_Connection *connection, HttpEndpoint endpoint,
					 char **body)
{
	ProbeQuery	q;
	const ProbeFacts *f;
	StringInfoData buf;
	bool		ok;
	char	   *why[PH_MAX_REASONS * 2];
	int			nwhy = 0;

	ph_http_probe_query(connection, endpoint, &q);
	initStringInfo(&buf);
	ph_json_open(&buf, NULL, '{');
	if (q.bad_why != NULL)
	{
		ph_json_str(&buf, "error",
					psprintf("invalid query parameter \"%s\": %s", q.bad_name, q.bad_why));
		ph_json_str(&buf, "parameter", q.bad_name);
		if (q.bad_value[0] != '\0')
			ph_json_str(&buf, "value", q.bad_value);
		ph_json_close(&buf, '}');
		*body = buf.data;
		return MHD_HTTP_BAD_REQUEST;
	}

	if (endpoint == HTTP_LIVEZ)
	{
		/* no evaluation: alive is this process answering */
		ph_json_str(&buf, "status", "alive");
		ph_json_close(&buf, '}');
		*body = buf.data;
		return MHD_HTTP_OK;
	}

	f = current_facts();
	if (!f->evaluated)
	{
		ok = false;
		add_reason(why, &nwhy, psprintf("could not evaluate: %s", f->error));
	}
	else
	{
		for (int i = 0; i < f->nreasons; i++)
			add_reason(why, &nwhy, f->reasons[i]);
		switch (endpoint)
		{
			case HTTP_READYZ:
				ok = true;
				if (f->refusing)
				{
					ok = false;
					add_reason(why, &nwhy, (char *) f->refusing_because);
				}
				if (f->level >= PH_LEVEL_CRITICAL)
				{
					ok = false;
					add_reason(why, &nwhy, psprintf("the level is %s", ph_level_name(f->level)));
				}
				if (f->free - f->reserved_unused < q.min_free)
				{
					ok = false;
					if (f->reserved_unused > 0)
						add_reason(why, &nwhy, psprintf("%d usable slots free, %d of them kept by policies' reserves: fewer than min_free (%d) for an ordinary login",
														f->free, Min(f->reserved_unused, f->free), q.min_free));
					else
						add_reason(why, &nwhy, psprintf("%d usable slots free, fewer than min_free (%d)",
														f->free, q.min_free));
				}
				if (NameStr(f->refusing_policy)[0] != '\0')
				{
					ok = false;
					add_reason(why, &nwhy, psprintf("policy \"%s\" refuses ordinary logins now",
													NameStr(f->refusing_policy)));
				}
				break;
			case HTTP_PRIMARY:
				ok = !f->in_recovery;
				if (!ok)
					add_reason(why, &nwhy, "the server is in recovery");
				break;
			case HTTP_REPLICA:
			default:
				ok = f->in_recovery && !f->refusing;
				if (!f->in_recovery)
					add_reason(why, &nwhy, "the server is not in recovery");
				else if (f->refusing)
					add_reason(why, &nwhy, (char *) f->refusing_because);
				break;
		}
		if (f->in_recovery && q.lag_given && lag_exceeds(f, &q))
		{
			ok = false;
			add_reason(why, &nwhy, f->lag_known ?
					   psprintf("the lag exceeds max_lag (%s)", q.lag_is_time ? "interval" : "bytes") :
					   f->streaming ?
					   "the lag is unknown: the primary has reported no WAL position yet" :
					   "the lag is unknown: no WAL receiver is streaming");
		}
	}

	ph_json_str(&buf, "status", ok ? "ready" : "not ready");
	if (f->evaluated)
	{
		ph_json_str(&buf, "state", "running");
		ph_json_str(&buf, "role", f->in_recovery ? "replica" : "primary");
		ph_json_str(&buf, "level", ph_level_name(f->level));
		ph_json_bool(&buf, "accepting_connections", !f->refusing);
		ph_json_int(&buf, "usable", f->usable);
		ph_json_int(&buf, "used", f->used);
		ph_json_int(&buf, "free", f->free);
		ph_json_int(&buf, "reserved_unused", f->reserved_unused);
		if (f->in_recovery)
		{
			if (f->lag_known)
			{
				ph_json_int(&buf, "lag_bytes", f->lag_bytes);
				ph_json_seconds(&buf, "lag_seconds", f->lag_usec);
			}
			else
				ph_json_str(&buf, "lag_bytes", NULL);
		}
	}
	if (q.verbose)
	{
		ph_json_open(&buf, "reasons", '[');
		for (int i = 0; i < nwhy; i++)
			ph_json_str(&buf, NULL, why[i]);
		ph_json_close(&buf, ']');
	}
	ph_json_close(&buf, '}');
	*body = buf.data;
	return ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

/* The agent starts: it says "ready" for AGENT_READY_MS (see below). */
void
ph_http_agent_started(void)
{
	agent_ready_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), AGENT_READY_MS);
}

/*
 * The agent-check line for HAProxy, with its "\n" (size: at least 128
 * bytes), for a client connected from peer (its address as
 * ph_client_addr_text() writes it, NULL if unknown).  The weight is the
 * free share of the usable slots (at least 1 % while up: 0 % would
 * drain); maxconn what HAProxy may hold to this server: the free usable
 * slots and the client backends connected from peer (HAProxy's own
 * sessions, assuming its checks and its traffic come from one address);
 * "up drain" at critical; "down" with the reason after '#' when exhausted,
 * when the server refuses connections, when a catch-all policy refuses
 * ordinary logins, or when the evaluation failed.
 *
 * "ready" cancels any DRAIN or MAINT state in HAProxy, an operator's
 * too: it is said only for AGENT_READY_MS after the agent last said
 * drain or down, and after the agent started (a restart may leave a
 * DRAIN this agent set), so that an operator's MAINT or DRAIN stays.
 */
void
ph_http_agent_line(char *line, size_t size, const char *peer)
{
	const ProbeFacts *f = current_facts();
	TimestampTz now = GetCurrentTimestamp();
	const char *down = NULL;

	if (!f->evaluated)
		down = "pool_health could not evaluate";
	else if (f->refusing)
		down = f->stopping ?
			"not accepting connections (shutting down)" :
			"not accepting connections (recovery)";
	else if (f->level >= PH_LEVEL_EXHAUSTED || f->free <= 0)
		down = "exhausted: no usable connection slot is free";
	else if (NameStr(f->refusing_policy)[0] != '\0')
		down = "a catch-all policy refuses ordinary logins";

	if (down != NULL || f->level >= PH_LEVEL_CRITICAL)
	{
		agent_ready_until = TimestampTzPlusMilliseconds(now, AGENT_READY_MS);
		if (down != NULL)
			snprintf(line, size, "down #%s\n", down);
		else
			snprintf(line, size, "up drain\n");
	}
	else
	{
		int			weight = (int) ((100L * f->free + f->usable / 2) / Max(f->usable, 1));
		int			maxconn = f->free;

		if (peer != NULL)
			for (int i = 0; i < f->nclients; i++)
				if (strcmp(f->client_addrs[i], peer) == 0)
					maxconn++;
		snprintf(line, size, "up %s%d%% maxconn:%d\n",
				 now < agent_ready_until ? "ready " : "", Max(weight, 1), maxconn);
	}
}

#endif							/* PH_HAVE_MICROHTTPD */
