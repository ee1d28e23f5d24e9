/*-------------------------------------------------------------------------
 *
 * xact_origin.c
 *		Where a transaction came from, and why a session was ended.
 *
 * Each backend records, in its own slot of shared memory, the first
 * statement of its current transaction: the statement after BEGIN or
 * START TRANSACTION, or the statement itself in autocommit; a client's
 * statement, not one that a function it called ran.  An ExecutorStart and
 * a ProcessUtility hook see every statement, of the simple and the
 * extended protocol (a prepared statement executed again is seen too);
 * a statement is the client's when its text is the one the backend is
 * executing for the client (debug_query_string: the same pointer, or for
 * the extended protocol, the same text), and the first of its
 * transaction when the transaction's local id differs from the last one
 * recorded.  Transaction control (BEGIN, SAVEPOINT, ...) is not recorded.
 * The cost: a comparison per statement, and one copy of at most
 * pool_health.first_query_size bytes per transaction, into the backend's
 * own slot, with the change-count protocol of the backend status array
 * (no lock).  Readers (the views, the audit) copy a slot out with the
 * same protocol, and parse its sqlcommenter tags (a comment of
 * key='value' pairs) from it.
 *
 * Before pool_health ends a session, it writes in the session's slot why
 * (a "note"); the session's emit_log_hook adds it as DETAIL and HINT to
 * the "terminating connection due to administrator command" (SQLSTATE
 * 57P01) its client receives.  Sessions ended by anyone else get
 * PostgreSQL's message unchanged.
 *
 * Shared state, no lock: origins[] (a slot per PGPROC: written only by
 * its backend, change count odd while it writes) and notes[] (a slot per
 * PGPROC: state changed by compare-and-swap; written by the process that
 * ends the session, read by that session).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "pool_health.h"

/* One backend's first statement; the text follows in shared memory. */
typedef struct PhOriginSlot
{
	int			changecount;	/* odd while its backend writes */
	int			pid;
	TimestampTz at;				/* when the statement started */
	int			len;
	char		text[FLEXIBLE_ARRAY_MEMBER];
} PhOriginSlot;

/* Why pool_health ends a session, for its client. */
#define NOTE_EMPTY		0
#define NOTE_WRITING	1
#define NOTE_SET		2
#define NOTE_DETAIL_SIZE 1024

typedef struct PhEndNote
{
	pg_atomic_uint32 state;
	int			pid;
	TimestampTz backend_start;
	char		detail[NOTE_DETAIL_SIZE];
} PhEndNote;

static char *origins = NULL;	/* MaxBackends slots of slot_size bytes */
static Size slot_size = 0;
static PhEndNote *notes = NULL;

/* This backend: the transaction last recorded, and its slot. */
static LocalTransactionId recorded_lxid = InvalidLocalTransactionId;

static ExecutorStart_hook_type prev_executor_start = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

static Size
origin_slot_size(void)
{
	return MAXALIGN(offsetof(PhOriginSlot, text) + ph_first_query_size + 1);
}

Size
ph_xact_origin_shmem_size(void)
{
	if (ph_first_query_size == 0)
		return mul_size(sizeof(PhEndNote), MaxBackends);
	return add_size(mul_size(origin_slot_size(), MaxBackends),
					mul_size(sizeof(PhEndNote), MaxBackends));
}

char *
ph_xact_origin_init(char *storage, bool found)
{
	slot_size = origin_slot_size();
	if (ph_first_query_size > 0)
	{
		origins = storage;
		if (!found)
			memset(origins, 0, slot_size * MaxBackends);
		storage += slot_size * MaxBackends;
	}
	notes = (PhEndNote *) storage;
	if (!found)
		for (int i = 0; i < MaxBackends; i++)
			pg_atomic_init_u32(&notes[i].state, NOTE_EMPTY);
	return storage + sizeof(PhEndNote) * MaxBackends;
}

static PhOriginSlot *
origin_slot(int procno)
{
	if (origins == NULL || procno < 0 || procno >= MaxBackends)
		return NULL;
	return (PhOriginSlot *) (origins + slot_size * procno);
}

static PhEndNote *
end_note(int procno)
{
	if (notes == NULL || procno < 0 || procno >= MaxBackends)
		return NULL;
	return &notes[procno];
}

/* ---- recording, in each backend ---- */

/*
 * Record the statement at location/len of source as the first of the
 * current transaction, unless one is recorded already.
 */
static void
record_statement(const char *source, int location, int len)
{
	LocalTransactionId lxid = ph_my_lxid();
	volatile PhOriginSlot *slot;
	const char *text;
	int			n;

	if (lxid == recorded_lxid || lxid == InvalidLocalTransactionId)
		return;
	slot = origin_slot(ph_my_procno());
	if (slot == NULL)
		return;
	recorded_lxid = lxid;
	text = CleanQuerytext(source, &location, &len);
	n = Min(len, ph_first_query_size);
	if (n < len)
		n = pg_mbcliplen(text, len, n);

	slot->changecount++;
	pg_write_barrier();
	slot->pid = MyProcPid;
	slot->at = GetCurrentStatementStartTimestamp();
	memcpy((char *) slot->text, text, n);
	slot->text[n] = '\0';
	slot->len = n;
	pg_write_barrier();
	slot->changecount++;
}

/*
 * Is this statement text the one the backend executes for its client (not
 * one a function runs)?  The same pointer for the simple protocol; the
 * extended protocol's Execute works on a copy of it.
 */
static inline bool
client_statement(const char *source)
{
	return source != NULL && debug_query_string != NULL &&
		(source == debug_query_string || strcmp(source, debug_query_string) == 0);
}

static void
ph_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (client_statement(queryDesc->sourceText))
		record_statement(queryDesc->sourceText,
						 queryDesc->plannedstmt->stmt_location,
						 queryDesc->plannedstmt->stmt_len);
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
ph_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	if (context == PROCESS_UTILITY_TOPLEVEL && client_statement(queryString) &&
		!IsA(pstmt->utilityStmt, TransactionStmt))
		record_statement(queryString, pstmt->stmt_location, pstmt->stmt_len);
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * The FATAL a session ended by pool_health sends its client: with the
 * note pool_health left, as DETAIL and HINT.  Anything else is untouched.
 */
static void
ph_emit_log(ErrorData *edata)
{
	PhEndNote  *note;

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (edata->elevel != FATAL || edata->sqlerrcode != ERRCODE_ADMIN_SHUTDOWN ||
		MyProc == NULL || (note = end_note(ph_my_procno())) == NULL ||
		pg_atomic_read_u32(&note->state) != NOTE_SET ||
		note->pid != MyProcPid || note->backend_start != MyStartTimestamp)
		return;
	pg_read_barrier();
	edata->detail = pstrdup(note->detail);
	edata->hint = pstrdup("The record of the action is in pool_health.terminations (or pool_health.recent_actions).");
	pg_atomic_write_u32(&note->state, NOTE_EMPTY);
}

/* From _PG_init, when preloaded. */
void
ph_xact_origin_install_hooks(void)
{
	if (ph_first_query_size > 0)
	{
		prev_executor_start = ExecutorStart_hook;
		ExecutorStart_hook = ph_executor_start;
		prev_process_utility = ProcessUtility_hook;
		ProcessUtility_hook = ph_process_utility;
	}
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = ph_emit_log;
}

/* ---- reading ---- */

/*
 * The first statement of the current transaction of the backend in PGPROC
 * procno with this pid, if it began at or after xact_start: a palloc'd
 * copy, and when it ran; NULL if none (or not recorded).
 */
char *
ph_xact_origin_read(int procno, int pid, TimestampTz xact_start, TimestampTz *at)
{
	volatile PhOriginSlot *slot = origin_slot(procno);
	char	   *copy;

	if (slot == NULL || xact_start == 0)
		return NULL;
	copy = palloc(ph_first_query_size + 1);
	for (int tries = 0;; tries++)
	{
		int			before = slot->changecount;
		int			after;
		int			slot_pid;
		int			len;

		pg_read_barrier();
		slot_pid = slot->pid;
		*at = slot->at;
		len = Min(Max(slot->len, 0), ph_first_query_size);
		memcpy(copy, (const char *) slot->text, len);
		copy[len] = '\0';
		pg_read_barrier();
		after = slot->changecount;
		if (before == after && (before & 1) == 0)
		{
			if (slot_pid != pid || *at < xact_start || len == 0)
				break;
			return copy;
		}
		if (tries > 1000)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	pfree(copy);
	return NULL;
}

/*
 * Leave the note a session ended by pool_health shows its client (before
 * it is signalled).  If another note is being left, this one is not.
 */
void
ph_xact_origin_note(int procno, int pid, TimestampTz backend_start,
					const char *detail)
{
	PhEndNote  *note = end_note(procno);
	uint32		expected;

	if (note == NULL)
		return;
	expected = pg_atomic_read_u32(&note->state);
	if (expected == NOTE_WRITING ||
		!pg_atomic_compare_exchange_u32(&note->state, &expected, NOTE_WRITING))
		return;
	note->pid = pid;
	note->backend_start = backend_start;
	strlcpy(note->detail, detail, sizeof(note->detail));
	pg_write_barrier();
	pg_atomic_write_u32(&note->state, NOTE_SET);
}

/* ---- sqlcommenter tags ---- */

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* URL-decode (sqlcommenter: %XX escapes) in place. */
static void
url_decode(char *s)
{
	char	   *out = s;

	for (char *in = s; *in; in++)
	{
		int			hi;
		int			lo;

		if (*in == '%' && (hi = hex_value(in[1])) >= 0 && (lo = hex_value(in[2])) >= 0)
		{
			*out++ = (char) (hi * 16 + lo);
			in += 2;
		}
		else
			*out++ = *in;
	}
	*out = '\0';
}

/*
 * The key='value' pairs of the last sqlcommenter comment of a statement
 * (a C-style comment holding key='value',key2='value2'; keys and values
 * URL-encoded, a quote in a value escaped with a backslash), as a JSON
 * object text, or NULL when it has none.  A pair whose key or value is not
 * valid in the database encoding once decoded is left out.
 */
char *
ph_xact_tags_json(const char *query)
{
	const char *open = NULL;
	const char *close;
	const char *p;
	StringInfoData buf;
	int			pairs = 0;

	if (query == NULL)
		return NULL;
	for (p = strstr(query, "/*"); p != NULL; p = strstr(p + 2, "/*"))
		open = p;
	if (open == NULL || (close = strstr(open + 2, "*/")) == NULL)
		return NULL;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	p = open + 2;
	while (p < close)
	{
		const char *key_start;
		char	   *key;
		StringInfoData value;

		while (p < close && (*p == ' ' || *p == ','))
			p++;
		key_start = p;
		while (p < close && *p != '=')
			p++;
		if (p >= close || p + 1 >= close || p[1] != '\'')
			break;
		key = pnstrdup(key_start, p - key_start);
		p += 2;
		initStringInfo(&value);
		while (p < close && *p != '\'')
		{
			if (*p == '\\' && p + 1 < close)
				p++;
			appendStringInfoChar(&value, *p++);
		}
		if (p >= close)
			break;
		p++;					/* the closing quote */
		url_decode(key);
		url_decode(value.data);
		if (key[0] != '\0' &&
			pg_verifymbstr(key, strlen(key), true) &&
			pg_verifymbstr(value.data, strlen(value.data), true))
		{
			ph_json_str(&buf, key, value.data);
			pairs++;
		}
	}
	appendStringInfoChar(&buf, '}');
	return pairs > 0 ? buf.data : NULL;
}
