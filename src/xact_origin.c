/*-------------------------------------------------------------------------
 *
 * xact_origin.c
 *		Where a transaction came from, and why a session was ended.
 *
 * Each backend records, in its own slot of shared memory, the first
 * statement of its current transaction that is not a liveness ping or
 * pool housekeeping (SELECT of constants without FROM, as SELECT 1;
 * SET, SHOW, RESET, DISCARD; transaction control is never recorded), or
 * the first ping when there is nothing else yet; and the sqlcommenter
 * tags of the first statement of the transaction that carries them.  The
 * statement is the client's, not one that a function it called ran.  An
 * ExecutorStart and a ProcessUtility hook see every statement, of the
 * simple and the extended protocol (a prepared statement executed again is
 * seen too), and tell a ping from its plan (a Result of constants and
 * nothing else) or its utility statement's node, not from its text.  The
 * hooks are hooks.c's, which calls ph_xact_origin_executor_start() and
 * ph_xact_origin_utility() with its nesting level.  A statement is the
 * client's when it is not nested (nesting level 0: hooks.c counts the
 * levels around ExecutorRun, ExecutorFinish and ProcessUtility, as
 * pg_stat_statements does, so that EXPLAIN's query or a DO block's
 * statements are not taken for the client's) and its text is the one the
 * backend is executing for the client (debug_query_string: the same
 * pointer, or for the extended protocol, the same text); the transaction
 * is told by its local id.  Its text and comment are found by sql_comments.c with the
 * server's lexer rules, scanning only the statement (and on PostgreSQL 18
 * the comments right before it).
 *
 * The cost: a comparison per statement once the transaction's statement
 * and tags are recorded; until then a look at the plan's top node and at
 * the statement's two ends; one copy of at most
 * pool_health.first_query_size bytes for the first statement (two when a
 * ping came first) and one of at most PH_XACT_TAGS_SIZE bytes for the
 * tags, per transaction, into the backend's own slot, with the
 * change-count protocol of the backend status array (no lock).  Readers
 * (the views, the audit) copy a slot out with the same protocol and decode
 * the tags.  The note below that pool_health ended the session is passed
 * on to the per-application accounting (ph_accounting_terminated).
 *
 * Before pool_health ends a session, it writes in the session's slot why
 * (a "note"); the session's emit_log_hook (hooks.c, calling
 * ph_xact_origin_emit_log()) adds it as DETAIL and HINT to
 * the "terminating connection due to administrator command" (SQLSTATE
 * 57P01) its client receives.  Sessions ended by anyone else get
 * PostgreSQL's message unchanged.
 *
 * Shared state ("pool_health xact_origin", its own ShmemInitStruct), no
 * lock: origins[] (a slot per PGPROC: written only by
 * its backend, in a critical section between two increments of its change
 * count; read by copying and checking the count) and notes[] (a slot per
 * PGPROC: owned by whoever moved its state to NOTE_WRITING by
 * compare-and-swap; see PhEndNote).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "storage/shmem.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "app_accounting.h"
#include "changecount.h"
#include "settings.h"
#include "sql_comments.h"
#include "xact_origin.h"

/*
 * One backend's first statement and tags; the text follows in shared
 * memory.  Every field is written only by the backend whose PGPROC the
 * slot is of, between PH_BEGIN_WRITE and PH_END_WRITE: changecount is odd
 * while it writes, and the writes are in a critical section, so that an
 * error cannot leave it odd.  Any process reads a slot without a lock:
 * it reads changecount, a read barrier, copies the fields, a read barrier,
 * reads changecount again, and retries unless both reads were equal and
 * even (pgstat_report_activity's protocol, in ph_xact_origin_read).
 */
typedef struct PhOriginSlot
{
	int			changecount;	/* odd while its backend writes */
	int			pid;			/* its backend */
	LocalTransactionId lxid;	/* the transaction it is of */
	bool		in_block;		/* of a transaction block (BEGIN) */
	TimestampTz at;				/* when the statement started */
	int			tags_len;		/* 0: no tags (yet) */
	char		tags[PH_XACT_TAGS_SIZE];	/* the tags' comment body */
	int			len;			/* 0: no statement (yet) */
	char		text[FLEXIBLE_ARRAY_MEMBER];
} PhOriginSlot;

/* Why pool_health ends a session, for its client. */
#define NOTE_EMPTY		0
#define NOTE_WRITING	1
#define NOTE_SET		2
#define NOTE_DETAIL_SIZE 1024

/*
 * state is changed only by compare-and-swap or by its owner: whoever moves
 * it from NOTE_EMPTY or NOTE_SET to NOTE_WRITING owns the other fields
 * until it stores NOTE_SET (the process that ends the session, after a
 * write barrier) or NOTE_EMPTY (the session, once it copied them).  Nobody
 * else reads or writes them meanwhile; the compare-and-swap is a full
 * barrier, so the owner sees what the last owner wrote.
 */
typedef struct PhEndNote
{
	pg_atomic_uint32 state;
	int			pid;			/* the session it is for */
	TimestampTz backend_start;	/* likewise */
	char		detail[NOTE_DETAIL_SIZE];
} PhEndNote;

static char *origins = NULL;	/* MaxBackends slots of slot_size bytes */
static Size slot_size = 0;
static PhEndNote *notes = NULL;

/*
 * This backend: the transaction whose origin it records, and what of it
 * is in its slot.
 */
static LocalTransactionId recorded_lxid = InvalidLocalTransactionId;
static bool recorded_any = false;	/* a statement, maybe a ping */
static bool recorded_real = false;	/* a statement that is not a ping */
static bool recorded_tags = false;

/*
 * PostgreSQL 18 starts a statement at its first token: the end of the last
 * client statement seen, in the message being executed (told by its text
 * and its start time), is where the comments before the next one begin.
 */
static const char *seen_source = NULL;
static TimestampTz seen_stamp = 0;
static int	seen_end = 0;

static Size
origin_slot_size(void)
{
	return MAXALIGN(offsetof(PhOriginSlot, text) + ph_first_query_size + 1);
}

/* The notes, then the origins' slots (none if pool_health.first_query_size is 0). */
static Size
shmem_size(void)
{
	Size		size = MAXALIGN(mul_size(sizeof(PhEndNote), MaxBackends));

	if (ph_first_query_size == 0)
		return size;
	return add_size(size, mul_size(origin_slot_size(), MaxBackends));
}

/* From shmem.c's request hook. */
void
ph_xact_origin_shmem_request(void)
{
	RequestAddinShmemSpace(shmem_size());
}

/*
 * From shmem.c's startup hook, under AddinShmemInitLock, in every process:
 * create the slots (the postmaster) or find them.
 */
void
ph_xact_origin_shmem_startup(void)
{
	bool		found;
	char	   *area = ShmemInitStruct("pool_health xact_origin", shmem_size(), &found);

	slot_size = origin_slot_size();
	notes = (PhEndNote *) area;
	if (!found)
		for (int i = 0; i < MaxBackends; i++)
			pg_atomic_init_u32(&notes[i].state, NOTE_EMPTY);
	if (ph_first_query_size > 0)
	{
		origins = area + MAXALIGN(sizeof(PhEndNote) * MaxBackends);
		if (!found)
			memset(origins, 0, slot_size * MaxBackends);
	}
}

static pg_attribute_hot PhOriginSlot *
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
 * Is this statement a liveness ping or pool housekeeping, which is not
 * where a transaction came from?  SET, SHOW, RESET, DISCARD; a SELECT
 * whose plan is a Result of constants and nothing else (SELECT 1, SELECT
 * 'x' AS ping: no FROM, no subquery, nothing to compute).  An empty query
 * never gets here.
 */
static pg_attribute_hot bool
is_ping(const PlannedStmt *ps)
{
	const Plan *plan = ps->planTree;
	ListCell   *lc;

	if (ps->commandType == CMD_UTILITY)
		return ps->utilityStmt != NULL &&
			(IsA(ps->utilityStmt, VariableSetStmt) ||
			 IsA(ps->utilityStmt, VariableShowStmt) ||
			 IsA(ps->utilityStmt, DiscardStmt));
	if (ps->commandType != CMD_SELECT || plan == NULL || !IsA(plan, Result) ||
		plan->lefttree != NULL || plan->righttree != NULL ||
		plan->initPlan != NIL || ((const Result *) plan)->resconstantqual != NULL ||
		ps->subplans != NIL || ps->rowMarks != NIL || ps->hasModifyingCTE)
		return false;
	foreach(lc, plan->targetlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->expr == NULL || !IsA(tle->expr, Const))
			return false;
	}
	return true;
}

/*
 * Where the comments before the client's statement at location (of len
 * bytes) begin: on PostgreSQL 18, which starts a statement at its first
 * token, at the end of the client's statement before it in the same
 * message (told by its text and start time; every client statement,
 * transaction control included, passes here in order), or at 0 for the
 * first; before, at location itself.
 */
static pg_attribute_hot int
comments_from(const char *source, int location, int len)
{
	TimestampTz stamp;
	int			from;

	if (!PH_STMT_STARTS_AT_FIRST_TOKEN || location < 0)
		return location;
	stamp = GetCurrentStatementStartTimestamp();
	if (source != seen_source || stamp != seen_stamp)
	{
		seen_source = source;
		seen_stamp = stamp;
		seen_end = 0;
	}
	from = seen_end <= location ? seen_end : location;
	seen_end = Max(seen_end, len > 0 ? location + len : location);
	return from;
}

/*
 * A client statement (source at location/len, as the parser gave them;
 * the comments before it from from) runs: record it as the first of the
 * current transaction unless one that is not a ping is recorded already,
 * and its tags unless the transaction's are.  Nothing here raises an
 * error or allocates memory.
 */
static pg_attribute_hot void
record_statement(const char *source, int from, int location, int len,
				 const PlannedStmt *ps)
{
	LocalTransactionId lxid = ph_my_lxid();
	volatile PhOriginSlot *slot;
	bool		ping = false;
	bool		write_text;
	bool		in_block;
	TimestampTz at;
	PhSqlText	st;
	int			n = 0;
	int			tags_len = 0;

	if (lxid == InvalidLocalTransactionId)
		return;
	if (lxid != recorded_lxid)
	{
		recorded_lxid = lxid;
		recorded_any = recorded_real = recorded_tags = false;
	}
	if (recorded_real && recorded_tags)
		return;
	slot = origin_slot(ph_my_procno());
	if (slot == NULL)
		return;

	if (!recorded_real)
		ping = is_ping(ps);
	write_text = !recorded_real && (!ping || !recorded_any);
	if (!write_text && recorded_tags)
		return;
	ph_sql_statement(source, from, location, len,
					 ph_standard_conforming_strings(), !recorded_tags, &st);
	if (st.tags >= 0)
		tags_len = Min(st.tags_len, PH_XACT_TAGS_SIZE - 1);
	if (!write_text && tags_len == 0)
		return;
	if (write_text)
	{
		n = Min(st.end - st.start, ph_first_query_size);
		if (n < st.end - st.start)
			n = pg_mbcliplen(source + st.start, st.end - st.start, n);
	}
	in_block = IsTransactionBlock();
	at = GetCurrentStatementStartTimestamp();

	PH_BEGIN_WRITE(slot);
	if (!recorded_any)
	{
		/* the slot's first write for this transaction */
		slot->pid = MyProcPid;
		slot->lxid = lxid;
		slot->tags_len = 0;
	}
	if (write_text)
	{
		slot->in_block = in_block;
		slot->at = at;
		memcpy((char *) slot->text, source + st.start, n);
		slot->text[n] = '\0';
		slot->len = n;
	}
	if (tags_len > 0)
	{
		memcpy((char *) slot->tags, source + st.tags, tags_len);
		slot->tags[tags_len] = '\0';
		slot->tags_len = tags_len;
	}
	PH_END_WRITE(slot);

	recorded_any = true;
	recorded_real |= write_text && !ping;
	recorded_tags |= tags_len > 0;
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
 * is of this block.  A BEGIN inside a transaction that has recorded
 * something (a block already, or statements before it in the same
 * message) begins nothing: what is recorded stays.
 */
static pg_attribute_hot void
record_block_begins(void)
{
	volatile PhOriginSlot *slot = origin_slot(ph_my_procno());
	LocalTransactionId lxid = ph_my_lxid();

	if (slot == NULL || lxid == InvalidLocalTransactionId)
		return;
	if (lxid == recorded_lxid)
	{
		if (recorded_any && !slot->in_block)
		{
			/* the statements before it are of this block now */
			PH_BEGIN_WRITE(slot);
			slot->in_block = true;
			PH_END_WRITE(slot);
		}
		return;
	}
	recorded_lxid = lxid;
	recorded_any = recorded_real = recorded_tags = false;
	PH_BEGIN_WRITE(slot);
	slot->pid = MyProcPid;
	slot->lxid = lxid;
	slot->in_block = true;
	slot->len = 0;
	slot->text[0] = '\0';
	slot->tags_len = 0;
	PH_END_WRITE(slot);
}

/*
 * From the ExecutorStart hook (hooks.c), before the statement starts, at
 * this nesting level (0: not nested; only then is a statement recorded:
 * a nested statement's location in the text is not the client's).
 */
pg_attribute_hot void
ph_xact_origin_executor_start(QueryDesc *queryDesc, int nesting_level)
{
	if (ph_first_query_size > 0 && nesting_level == 0 &&
		client_statement(queryDesc->sourceText))
	{
		PlannedStmt *ps = queryDesc->plannedstmt;

		record_statement(queryDesc->sourceText,
						 comments_from(queryDesc->sourceText, ps->stmt_location,
									   ps->stmt_len),
						 ps->stmt_location, ps->stmt_len, ps);
	}
}

/*
 * From the ProcessUtility hook (hooks.c), before the utility statement
 * runs, at this nesting level: a client's statement is recorded (a BEGIN
 * marks the block); transaction control is not a first statement.
 */
pg_attribute_hot void
ph_xact_origin_utility(PlannedStmt *pstmt, const char *queryString,
					   bool top_level, int nesting_level)
{
	if (ph_first_query_size > 0 && top_level && nesting_level == 0 &&
		client_statement(queryString))
	{
		int			from = comments_from(queryString, pstmt->stmt_location,
										 pstmt->stmt_len);

		if (!IsA(pstmt->utilityStmt, TransactionStmt))
			record_statement(queryString, from, pstmt->stmt_location,
							 pstmt->stmt_len, pstmt);
		else if (((TransactionStmt *) pstmt->utilityStmt)->kind == TRANS_STMT_BEGIN ||
				 ((TransactionStmt *) pstmt->utilityStmt)->kind == TRANS_STMT_START)
			record_block_begins();
	}
}

/*
 * From emit_log_hook (hooks.c): the FATAL a session ended by pool_health
 * sends its client, with the note pool_health left, as DETAIL and HINT.  Anything else is untouched.
 * The session takes the note (NOTE_SET to NOTE_WRITING) before it reads
 * it, copies it, and empties it; a note left for an earlier backend of
 * its PGPROC is emptied unread.
 */
void
ph_xact_origin_emit_log(ErrorData *edata)
{
	PhEndNote  *note;
	uint32		expected = NOTE_SET;
	bool		mine;
	char		detail[NOTE_DETAIL_SIZE];

	if (edata->elevel != FATAL || edata->sqlerrcode != ERRCODE_ADMIN_SHUTDOWN ||
		MyProc == NULL || (note = end_note(ph_my_procno())) == NULL ||
		pg_atomic_read_u32(&note->state) != NOTE_SET ||
		!pg_atomic_compare_exchange_u32(&note->state, &expected, NOTE_WRITING))
		return;
	/* ours now; the exchange is a full barrier: we see what its writer wrote */
	mine = note->pid == MyProcPid && note->backend_start == MyStartTimestamp;
	if (mine)
		strlcpy(detail, note->detail, sizeof(detail));
	pg_atomic_write_u32(&note->state, NOTE_EMPTY);
	if (!mine)
		return;
	ph_accounting_terminated();
	edata->detail = pstrdup(detail);
	edata->hint = pstrdup("The record of the action is in pool_health.my_terminations, which this session's role can read, and in pool_health.terminations.");
}

/* ---- reading ---- */

/*
 * The first statement of the current transaction of the backend in PGPROC
 * procno with this pid: a palloc'd copy, and when it ran; NULL if it is in
 * no transaction, or none is recorded for the one it is in.  *tags is set
 * to a palloc'd copy of the body of the sqlcommenter comment of its first
 * statement that has one (ph_sql_tags_json decodes it), or NULL.  The
 * transaction is told by its local id, which the backend's PGPROC shows
 * (read without a lock, as pg_locks does), so that an earlier transaction
 * of the same message is not mistaken for it.  An aborted transaction
 * block (aborted true: its session is idle in transaction (aborted)) has
 * no local id any more: the slot is of that block if it was written in a
 * block, since a block begins by writing it (BEGIN).
 */
char *
ph_xact_origin_read(int procno, int pid, bool aborted, TimestampTz *at,
					char **tags)
{
	volatile PhOriginSlot *slot = origin_slot(procno);
	LocalTransactionId current;
	char	   *copy;
	char	   *tags_copy;

	*tags = NULL;
	if (slot == NULL)
		return NULL;
	current = ph_proc_lxid(procno);
	if (current == InvalidLocalTransactionId && !aborted)
		return NULL;
	copy = palloc(ph_first_query_size + 1);
	tags_copy = palloc(PH_XACT_TAGS_SIZE);
	for (int tries = 0; tries < 1000; tries++)
	{
		int			before = slot->changecount;
		int			after;
		int			slot_pid;
		LocalTransactionId lxid;
		bool		in_block;
		int			len;
		int			tags_len;

		pg_read_barrier();
		slot_pid = slot->pid;
		lxid = slot->lxid;
		in_block = slot->in_block;
		*at = slot->at;
		len = Min(Max(slot->len, 0), ph_first_query_size);
		memcpy(copy, (const char *) slot->text, len);
		copy[len] = '\0';
		tags_len = Min(Max(slot->tags_len, 0), PH_XACT_TAGS_SIZE - 1);
		memcpy(tags_copy, (const char *) slot->tags, tags_len);
		tags_copy[tags_len] = '\0';
		pg_read_barrier();
		after = slot->changecount;
		if (before == after && (before & 1) == 0)
		{
			if (slot_pid != pid || len == 0 ||
				(current != InvalidLocalTransactionId ? lxid != current : !in_block))
				break;
			if (tags_len > 0)
				*tags = tags_copy;
			else
				pfree(tags_copy);
			return copy;
		}
		CHECK_FOR_INTERRUPTS();
	}
	pfree(copy);
	pfree(tags_copy);
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
