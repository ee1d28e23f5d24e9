/*-------------------------------------------------------------------------
 *
 * audit.c
 *		A termination is never silent.  Every action on a session (taken,
 *		logged, or in a dry run only considered) is written to the server
 *		log, to an in-memory list in shared memory (pool_health.recent_actions;
 *		the only queryable record on a hot standby), to the table
 *		pool_health.terminations when this server can write it, and sent
 *		with NOTIFY on pool_health.notify_channel.
 *
 * The table row is inserted in the caller's transaction, with the table
 * owner's rights (the caller need not be able to write the audit table).
 * If that transaction rolls back, the server log and the in-memory list
 * still hold the record.
 *
 * Shared state: ph_shared->audit, under ph_shared->lock (exclusive to
 * append, shared to read).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "pool_health.h"

Size
ph_audit_shmem_size(void)
{
	return mul_size(sizeof(PhAuditEntry), ph_audit_memory);
}

void
ph_audit_init(PhAuditRing *ring, char *storage)
{
	memset(ring, 0, sizeof(PhAuditRing));
	ring->capacity = ph_audit_memory;
	ring->entries = (PhAuditEntry *) storage;
}

/* The newest entries, oldest first, into out (room for the capacity). */
int
ph_audit_copy(PhAuditEntry *out)
{
	PhAuditRing *ring = &ph_shared->audit;
	int			first;
	int			n;

	LWLockAcquire(ph_shared->lock, LW_SHARED);
	n = ring->count;
	first = (ring->next - ring->count + ring->capacity) % Max(ring->capacity, 1);
	for (int i = 0; i < n; i++)
		out[i] = ring->entries[(first + i) % ring->capacity];
	LWLockRelease(ph_shared->lock);
	return n;
}

static void
append_to_ring(const PhAuditEntry *e)
{
	PhAuditRing *ring = &ph_shared->audit;

	if (ring->capacity == 0)
		return;
	LWLockAcquire(ph_shared->lock, LW_EXCLUSIVE);
	ring->entries[ring->next] = *e;
	ring->next = (ring->next + 1) % ring->capacity;
	ring->count = Min(ring->count + 1, ring->capacity);
	LWLockRelease(ph_shared->lock);
}

static const char *
what_was_done(const PhAuditEntry *e)
{
	if (strcmp(e->action, "log") == 0)
		return e->dry_run ? "would log" : "logged";
	if (e->dry_run)
		return "would terminate (dry run)";
	return e->success == 1 ? "terminated" : "could not terminate";
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s[0] == '\0');
	return *isnull ? (Datum) 0 : CStringGetTextDatum(s);
}

static Datum
name_or_null(const NameData *n, bool *isnull)
{
	*isnull = (NameStr(*n)[0] == '\0');
	return *isnull ? (Datum) 0 : NameGetDatum(n);
}

static Datum
time_or_null(TimestampTz t, bool *isnull)
{
	*isnull = (t == 0);
	return TimestampTzGetDatum(t);
}

/*
 * An entry as the columns of pool_health.terminations (without id), the
 * same as the type pool_health.action: PH_AUDIT_COLS values.
 */
void
ph_audit_datums(const PhAuditEntry *e, Datum *values, bool *isnull)
{
	memset(isnull, false, sizeof(bool) * PH_AUDIT_COLS);
	values[0] = TimestampTzGetDatum(e->at);
	values[1] = Int32GetDatum(e->pid);
	values[2] = name_or_null(&e->role, &isnull[2]);
	values[3] = name_or_null(&e->database, &isnull[3]);
	values[4] = CStringGetTextDatum(e->application_name);
	isnull[5] = (e->client_addr[0] == '\0');
	values[5] = isnull[5] ? (Datum) 0 :
		DirectFunctionCall1(inet_in, CStringGetDatum(e->client_addr));
	values[6] = time_or_null(e->backend_start, &isnull[6]);
	values[7] = time_or_null(e->xact_start, &isnull[7]);
	values[8] = text_or_null(e->state, &isnull[8]);
	values[9] = time_or_null(e->state_change, &isnull[9]);
	values[10] = CStringGetTextDatum(e->query);
	values[11] = text_or_null(NameStr(e->policy), &isnull[11]);
	values[12] = CStringGetTextDatum(e->reason);
	values[13] = CStringGetTextDatum(e->action);
	values[14] = BoolGetDatum(e->dry_run);
	isnull[15] = (e->success < 0);
	values[15] = BoolGetDatum(e->success == 1);
	values[16] = CStringGetTextDatum(e->source);
	values[17] = name_or_null(&e->requested_by, &isnull[17]);
}

#define AUDIT_INSERT \
	"INSERT INTO pool_health.terminations (at, pid, role, database, " \
	"application_name, client_addr, backend_start, xact_start, state, " \
	"state_change, query, policy, reason, action, dry_run, success, source, " \
	"requested_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, " \
	"$12, $13, $14, $15, $16, $17, $18)"

/*
 * Insert the row into pool_health.terminations of this database, if the
 * extension is created here, with the table owner's rights.  The statement
 * is fully qualified and resolves nothing through the search_path.
 */
static void
insert_row(const PhAuditEntry *e)
{
	Oid			types[PH_AUDIT_COLS] = {TIMESTAMPTZOID, INT4OID, NAMEOID, NAMEOID,
		TEXTOID, INETOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TIMESTAMPTZOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, BOOLOID, TEXTOID, NAMEOID};
	Datum		values[PH_AUDIT_COLS];
	bool		isnull[PH_AUDIT_COLS];
	char		nulls[PH_AUDIT_COLS + 1];
	PhTableOwner saved;

	ph_audit_datums(e, values, isnull);
	for (int i = 0; i < PH_AUDIT_COLS; i++)
		nulls[i] = isnull[i] ? 'n' : ' ';
	nulls[PH_AUDIT_COLS] = '\0';

	if (!ph_table_owner_begin("terminations", &saved))
		return;
	if (SPI_execute_with_args(AUDIT_INSERT, PH_AUDIT_COLS, types, values, nulls,
							  false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into pool_health.terminations");
	ph_table_owner_end(&saved);
}

static char *
notify_payload(const PhAuditEntry *e)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"event\": \"termination\", \"action\": ");
	escape_json(&buf, e->action);
	appendStringInfo(&buf, ", \"dry_run\": %s, \"success\": %s, \"pid\": %d, \"role\": ",
					 e->dry_run ? "true" : "false",
					 e->success < 0 ? "null" : e->success ? "true" : "false",
					 e->pid);
	escape_json(&buf, NameStr(e->role));
	appendStringInfoString(&buf, ", \"database\": ");
	escape_json(&buf, NameStr(e->database));
	appendStringInfoString(&buf, ", \"application_name\": ");
	escape_json(&buf, e->application_name);
	appendStringInfoString(&buf, ", \"policy\": ");
	if (NameStr(e->policy)[0])
		escape_json(&buf, NameStr(e->policy));
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoString(&buf, ", \"reason\": ");
	escape_json(&buf, e->reason);
	appendStringInfoString(&buf, ", \"source\": ");
	escape_json(&buf, e->source);
	appendStringInfoString(&buf, ", \"at\": ");
	escape_json(&buf, timestamptz_to_str(e->at));
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * The records that need no transaction: the server log and the in-memory
 * list.
 */
void
ph_audit_log(const PhAuditEntry *e)
{
	ereport(LOG,
			(errmsg("pool_health: %s session %d (role \"%s\", database \"%s\", application \"%s\"): %s",
					what_was_done(e), e->pid, NameStr(e->role), NameStr(e->database),
					e->application_name, e->reason),
			 errdetail("Policy: %s; source: %s%s%s.",
					   NameStr(e->policy)[0] ? NameStr(e->policy) : "none",
					   e->source,
					   NameStr(e->requested_by)[0] ? ", requested by " : "",
					   NameStr(e->requested_by))));
	if (ph_shared != NULL)
		append_to_ring(e);
}

/*
 * The records that need a transaction in a database, on a server not in
 * recovery: the table row and the NOTIFY.  Elsewhere, nothing.
 */
void
ph_audit_store(const PhAuditEntry *e)
{
	if (!IsTransactionState() || !OidIsValid(MyDatabaseId) || RecoveryInProgress())
		return;
	insert_row(e);
	if (ph_notify_channel != NULL && ph_notify_channel[0] != '\0')
		Async_Notify(ph_notify_channel, notify_payload(e));
}

/* Record one action everywhere it can be recorded from here. */
void
ph_audit_record(const PhAuditEntry *e)
{
	ph_audit_log(e);
	ph_audit_store(e);
}
