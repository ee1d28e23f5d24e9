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
 * key='value' pairs) from it.  The same hooks tell the per-application
 * accounting (app_accounting.c) that a transaction started
 * (ph_accounting_statement), and the note below that pool_health ended
 * the session (ph_accounting_terminated).
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
#include "parser/scansup.h"
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
	LocalTransactionId lxid;	/* the transaction it is the first of */
	bool		in_block;		/* of a transaction block (BEGIN) */
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
 * Widen the statement at *location (length *len) of source over the C-style
 * comments right before and after it (up to the previous and next
 * semicolon): PostgreSQL 18 starts and ends a statement at its first and
 * last token, and a sqlcommenter comment is outside them.
 */
static void
widen_over_comments(const char *source, int *location, int *len)
{
	int			start = *location;
	int			end;
	int			total = strlen(source);

	if (start < 0 || start > total)
		return;
	end = *len > 0 ? Min(start + *len, total) : total;
	for (;;)
	{
		int			p = start;

		while (p > 0 && scanner_isspace(source[p - 1]))
			p--;
		if (p < 4 || source[p - 1] != '/' || source[p - 2] != '*')
			break;
		p -= 2;
		while (p > 1 && !(source[p - 2] == '/' && source[p - 1] == '*'))
			p--;
		if (p <= 1)
			break;
		start = p - 2;
	}
	for (;;)
	{
		int			p = end;
		const char *close;

		while (p < total && scanner_isspace(source[p]))
			p++;
		if (p + 1 >= total || source[p] != '/' || source[p + 1] != '*' ||
			(close = strstr(source + p + 2, "*/")) == NULL)
			break;
		end = (close - source) + 2;
	}
	*location = start;
	*len = *len > 0 || end < total ? end - start : 0;
}

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
	widen_over_comments(source, &location, &len);
	text = CleanQuerytext(source, &location, &len);
	n = Min(len, ph_first_query_size);
	if (n < len)
		n = pg_mbcliplen(text, len, n);

	slot->changecount++;
	pg_write_barrier();
	slot->pid = MyProcPid;
	slot->lxid = lxid;
	slot->in_block = IsTransactionBlock();
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

/*
 * A transaction block begins (BEGIN, START TRANSACTION): no first
 * statement yet.  Marking it lets a reader tell, once the block has
 * aborted (its local id is gone from the PGPROC), that what the slot holds
 * is of this block.
 */
static void
record_block_begins(void)
{
	volatile PhOriginSlot *slot = origin_slot(ph_my_procno());

	if (slot == NULL)
		return;
	slot->changecount++;
	pg_write_barrier();
	slot->pid = MyProcPid;
	slot->lxid = ph_my_lxid();
	slot->in_block = true;
	slot->len = 0;
	slot->text[0] = '\0';
	pg_write_barrier();
	slot->changecount++;
}

static void
ph_executor_start(QueryDesc *queryDesc, int eflags)
{
	ph_accounting_statement();
	if (ph_first_query_size > 0 && client_statement(queryDesc->sourceText))
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
	/* what is needed of it after it ran, copied: a COMMIT may free the tree */
	bool		transaction_stmt = IsA(pstmt->utilityStmt, TransactionStmt);
	TransactionStmtKind kind = transaction_stmt ?
		((TransactionStmt *) pstmt->utilityStmt)->kind : TRANS_STMT_BEGIN;
	bool		chain = transaction_stmt && ((TransactionStmt *) pstmt->utilityStmt)->chain;

	ph_accounting_statement();
	if (ph_first_query_size > 0 && context == PROCESS_UTILITY_TOPLEVEL &&
		client_statement(queryString))
	{
		if (!transaction_stmt)
			record_statement(queryString, pstmt->stmt_location, pstmt->stmt_len);
		else if (kind == TRANS_STMT_BEGIN || kind == TRANS_STMT_START)
			record_block_begins();
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (transaction_stmt && context == PROCESS_UTILITY_TOPLEVEL)
		ph_accounting_transaction_stmt(kind, chain, qc);
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
	ph_accounting_terminated();
	edata->detail = pstrdup(note->detail);
	edata->hint = pstrdup("The record of the action is in pool_health.my_terminations, which this session's role can read, and in pool_health.terminations.");
	pg_atomic_write_u32(&note->state, NOTE_EMPTY);
}

/* From _PG_init, when preloaded. */
void
ph_xact_origin_install_hooks(void)
{
	if (ph_first_query_size > 0 || ph_max_groups > 0)
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
 * procno with this pid: a palloc'd copy, and when it ran; NULL if it is in
 * no transaction, or none is recorded for the one it is in.  The
 * transaction is told by its local id, which the backend's PGPROC shows
 * (read without a lock, as pg_locks does), so that an earlier transaction
 * of the same message is not mistaken for it.  An aborted transaction
 * block (aborted true: its session is idle in transaction (aborted)) has
 * no local id any more: the slot is of that block if it was written in a
 * block, since a block begins by writing it (BEGIN).
 */
char *
ph_xact_origin_read(int procno, int pid, bool aborted, TimestampTz *at)
{
	volatile PhOriginSlot *slot = origin_slot(procno);
	LocalTransactionId current;

	if (slot == NULL)
		return NULL;
	current = ph_proc_lxid(procno);
	if (current == InvalidLocalTransactionId && !aborted)
		return NULL;
	for (int tries = 0; tries < 1000; tries++)
	{
		int			before = slot->changecount;
		int			after;
		int			slot_pid;
		LocalTransactionId lxid;
		bool		in_block;
		int			len;
		char	   *copy;

		pg_read_barrier();
		slot_pid = slot->pid;
		lxid = slot->lxid;
		in_block = slot->in_block;
		*at = slot->at;
		len = Min(Max(slot->len, 0), ph_first_query_size);
		copy = palloc(len + 1);
		memcpy(copy, (const char *) slot->text, len);
		copy[len] = '\0';
		pg_read_barrier();
		after = slot->changecount;
		if (before == after && (before & 1) == 0)
		{
			if (slot_pid != pid || len == 0 ||
				(current != InvalidLocalTransactionId ? lxid != current : !in_block))
			{
				pfree(copy);
				return NULL;
			}
			return copy;
		}
		pfree(copy);
		CHECK_FOR_INTERRUPTS();
	}
	return NULL;
}

/*
 * Leave the note a session ended by pool_health shows its client (before
 * it is signalled), in ASCII ("?" for other bytes).  If another note is
 * being left, this one is not.
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
	/*
	 * ASCII only: the message must convert to any client encoding, or the
	 * client would get a conversion error instead of its 57P01.
	 */
	{
		int			i;

		for (i = 0; detail[i] != '\0' && i < NOTE_DETAIL_SIZE - 1; i++)
			note->detail[i] = IS_HIGHBIT_SET(detail[i]) || detail[i] < 0x20 ? '?' : detail[i];
		note->detail[i] = '\0';
	}
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
 * The key='value' pairs of a sqlcommenter comment of a statement, as a
 * JSON object text, or NULL when it has none.  sqlcommenter appends its
 * comment to the statement (some frameworks prepend it): only a C-style
 * comment at the very end or the very start of the statement counts, so
 * that nothing in a string literal or a line comment is taken for tags.
 * Pairs are separated by commas; keys and values are URL-encoded, values
 * single-quoted with a backslash escaping a quote; spaces around keys are
 * ignored.  A pair whose key or value is empty, holds a NUL, or is not
 * valid in the database encoding once decoded is left out.
 */
char *
ph_xact_tags_json(const char *query)
{
	const char *start;
	const char *end;
	const char *open;
	const char *close;
	const char *p;
	StringInfoData buf;
	int			pairs = 0;

	if (query == NULL)
		return NULL;
	start = query;
	while (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r')
		start++;
	end = query + strlen(query);
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
						   end[-1] == '\r' || end[-1] == ';'))
		end--;
	if (end - start >= 4 && strncmp(end - 2, "*/", 2) == 0)
	{
		/* the comment that ends the statement, unless a line comment hides it */
		const char *line;

		close = end - 2;
		open = NULL;
		for (p = start; p + 1 < close; p++)
			if (p[0] == '/' && p[1] == '*')
				open = p;
		if (open == NULL)
			return NULL;
		for (line = open; line > start && line[-1] != '\n'; line--)
			;
		for (p = line; p + 1 < open; p++)
			if (p[0] == '-' && p[1] == '-')
				return NULL;
	}
	else if (end - start >= 4 && strncmp(start, "/*", 2) == 0)
	{
		/* the comment that starts it */
		open = start;
		close = strstr(start + 2, "*/");
	}
	else
		return NULL;
	if (open == NULL || close == NULL || close <= open + 2)
		return NULL;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	p = open + 2;
	while (p < close)
	{
		const char *key_start;
		const char *key_end;
		char	   *key;
		StringInfoData value;

		while (p < close && (*p == ' ' || *p == ','))
			p++;
		key_start = p;
		while (p < close && *p != '=')
			p++;
		if (p >= close)
			break;
		key_end = p;
		while (key_end > key_start && key_end[-1] == ' ')
			key_end--;
		p++;					/* = */
		while (p < close && *p == ' ')
			p++;
		if (p >= close || *p != '\'')
			break;
		p++;
		key = pnstrdup(key_start, key_end - key_start);
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
		value.len = strlen(value.data);
		if (key[0] != '\0' && value.len > 0 &&
			pg_verifymbstr(key, strlen(key), true) &&
			pg_verifymbstr(value.data, value.len, true))
		{
			ph_json_str(&buf, key, value.data);
			pairs++;
		}
	}
	appendStringInfoChar(&buf, '}');
	return pairs > 0 ? buf.data : NULL;
}
