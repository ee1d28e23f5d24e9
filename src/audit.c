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
 * The worker's actions and the functions' go to two in-memory lists of
 * pool_health.audit_memory entries each, so that no number of calls (dry
 * runs of an ordinary role, say) can push the worker's records out.
 *
 * The table row is inserted in the caller's transaction, with the table
 * owner's rights (the caller need not be able to write the audit table),
 * into the table that is a member of the extension with the expected
 * column types, in a subtransaction of its own.  Each version of the
 * extension appended its columns, so the table of an older version (the
 * library is updated before ALTER EXTENSION UPDATE) gets the columns it
 * has; the worker warns at its start when the installed version is not
 * this library's (ph_audit_check_version).  If the table is not usable,
 * locked by another session, or refuses the row, the row is skipped with
 * a WARNING (the log and the list have the record) and the caller's other
 * actions are stored.
 * If the transaction rolls back, the server log and the in-memory list
 * still hold the record.
 *
 * Whoever reads an action back through a function (the rows the cleanup
 * functions return) sees the session's details (query, client address and
 * port, times, state) only under pg_stat_activity's rule.  Every role reads
 * the in-memory records of its own sessions (pool_health.my_terminations,
 * ph_audit_copy_role): each entry keeps the session's login role OID.
 *
 * Shared state: none here; the in-memory lists are audit_memory.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "audit.h"
#include "extension_tables.h"
#include "json_writer.h"
#include "settings.h"
#include "shmem.h"
#include "sql_comments.h"

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
 * The limit part of a reason ("idle_timeout 00:05:00 exceeded"), without
 * what the session was doing and for how long (which only those who may
 * see the session's state may read).  palloc'd.
 */
static char *
limit_of(const char *reason)
{
	const char *colon = strstr(reason, ": ");

	return colon ? pnstrdup(reason, colon - reason) : pstrdup(reason);
}

/*
 * An entry as the columns of pool_health.terminations (without id), the
 * same as the type pool_health.action: PH_AUDIT_COLS values.  With
 * visible false, the session's details are NULL (query: as in
 * pg_stat_activity).
 */
void
ph_audit_datums(const PhAuditEntry *e, bool visible, Datum *values, bool *isnull)
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
	isnull[18] = (e->client_port == 0);
	values[18] = Int32GetDatum(e->client_port);
	values[19] = text_or_null(e->xact_first_query, &isnull[19]);
	isnull[20] = true;
	if (!isnull[19])
	{
		char	   *tags = ph_sql_tags_json(e->xact_tags);

		if (tags != NULL)
		{
			values[20] = DirectFunctionCall1(jsonb_in, CStringGetDatum(tags));
			isnull[20] = false;
		}
	}
	values[21] = text_or_null(e->limit_name, &isnull[21]);
	isnull[22] = !OidIsValid(e->role_id);
	values[22] = ObjectIdGetDatum(e->role_id);
	if (!visible)
	{
		isnull[5] = isnull[6] = isnull[7] = isnull[8] = isnull[9] = isnull[18] = true;
		isnull[19] = isnull[20] = true;
		values[10] = CStringGetTextDatum("<insufficient privilege>");
		values[12] = CStringGetTextDatum(limit_of(e->reason));
	}
}

/*
 * The columns written, with their types, in the order of the table's
 * columns: each version of the extension appended its own (1.1 the first
 * AUDIT_COLS_1_1, 1.2 client_port, xact_first_query and xact_tags, 1.3
 * limit_name and role_id), so that the columns of an older version's
 * table are a prefix of this list (pool_health_upgrade checks the
 * tables' side).
 */
static const PhColumn audit_columns[PH_AUDIT_COLS] = {
	{"at", TIMESTAMPTZOID}, {"pid", INT4OID}, {"role", NAMEOID},
	{"database", NAMEOID}, {"application_name", TEXTOID},
	{"client_addr", INETOID}, {"backend_start", TIMESTAMPTZOID},
	{"xact_start", TIMESTAMPTZOID}, {"state", TEXTOID},
	{"state_change", TIMESTAMPTZOID}, {"query", TEXTOID},
	{"policy", TEXTOID}, {"reason", TEXTOID}, {"action", TEXTOID},
	{"dry_run", BOOLOID}, {"success", BOOLOID}, {"source", TEXTOID},
	{"requested_by", NAMEOID}, {"client_port", INT4OID},
	{"xact_first_query", TEXTOID}, {"xact_tags", JSONBOID},
	{"limit_name", TEXTOID}, {"role_id", OIDOID},
};

/* The columns of the oldest table (extension version 1.1). */
#define AUDIT_COLS_1_1 18

/*
 * How many of audit_columns the table relid has, as a prefix of the list:
 * all of them, or fewer while the extension's update has not run (the
 * library is newer than the installed extension).  A column after the
 * prefix with another type makes the table unusable: -1, *why says why.
 */
static int
audit_columns_present(Oid relid, char **why)
{
	int			n = AUDIT_COLS_1_1;

	for (; n < PH_AUDIT_COLS; n++)
	{
		AttrNumber	attnum = get_attnum(relid, audit_columns[n].name);
		Oid			type;

		if (attnum == InvalidAttrNumber)
			break;
		type = get_atttype(relid, attnum);
		if (type != audit_columns[n].type)
		{
			*why = psprintf("column \"%s\" of table pool_health.terminations has type %s, not %s: the table is ignored",
							audit_columns[n].name, format_type_be(type),
							format_type_be(audit_columns[n].type));
			return -1;
		}
	}
	return n;
}

/* INSERT of the first ncolumns of audit_columns, fully qualified. */
static char *
audit_insert(int ncolumns)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "INSERT INTO pool_health.terminations (");
	for (int i = 0; i < ncolumns; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(audit_columns[i].name));
	appendStringInfoString(&buf, ") VALUES (");
	for (int i = 0; i < ncolumns; i++)
		appendStringInfo(&buf, "%s$%d", i > 0 ? ", " : "", i + 1);
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * Insert the row into pool_health.terminations of this database, if the
 * extension is created here, with the table owner's rights: the columns
 * the table has, which are those of an older version while the
 * extension's update has not run.  The statement is fully qualified and
 * resolves nothing through the search_path.
 */
static void
insert_row(const PhAuditEntry *e)
{
	Oid			types[PH_AUDIT_COLS];
	Datum		values[PH_AUDIT_COLS];
	bool		isnull[PH_AUDIT_COLS];
	char		nulls[PH_AUDIT_COLS + 1];
	char	   *why;
	Oid			relid;
	int			ncolumns = -1;
	PhTableOwner saved;

	relid = ph_extension_table("terminations", audit_columns, AUDIT_COLS_1_1, &why);
	if (OidIsValid(relid))
		ncolumns = audit_columns_present(relid, &why);
	if (ncolumns < 0)
	{
		if (why != NULL)
			ereport(WARNING,
					(errmsg("pool_health: action on session %d not written to pool_health.terminations: %s",
							e->pid, why)));
		return;
	}
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
	{
		ereport(WARNING,
				(errmsg("pool_health: action on session %d not written to pool_health.terminations: the table is locked by another session",
						e->pid),
				 errdetail("The server log and pool_health.recent_actions have it.")));
		return;
	}

	ph_audit_datums(e, true, values, isnull);
	for (int i = 0; i < ncolumns; i++)
	{
		types[i] = audit_columns[i].type;
		nulls[i] = isnull[i] ? 'n' : ' ';
	}
	nulls[ncolumns] = '\0';

	ph_table_owner_begin(relid, &saved);
	if (SPI_execute_with_args(audit_insert(ncolumns), ncolumns, types, values,
							  nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into pool_health.terminations");
	ph_table_owner_end(&saved);
}

/*
 * The NOTIFY payload of an action, for anyone who may LISTEN in this
 * database: what pg_stat_activity shows everyone (pid, role, database,
 * application) and the limit; no last query, state or times.  With
 * pool_health.notify_statements (and with_statement), also the first
 * statement of the transaction and its tags.
 */
static char *
notify_payload(const PhAuditEntry *e, bool with_statement)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ph_json_open(&buf, NULL, '{');
	ph_json_str(&buf, "event", "termination");
	ph_json_str(&buf, "action", e->action);
	ph_json_bool(&buf, "dry_run", e->dry_run);
	if (e->success < 0)
		ph_json_str(&buf, "success", NULL);
	else
		ph_json_bool(&buf, "success", e->success == 1);
	ph_json_int(&buf, "pid", e->pid);
	ph_json_str(&buf, "role", NameStr(e->role));
	ph_json_str(&buf, "database", NameStr(e->database));
	ph_json_str(&buf, "application_name", e->application_name);
	ph_json_str(&buf, "policy", NameStr(e->policy)[0] ? NameStr(e->policy) : NULL);
	ph_json_str(&buf, "limit", limit_of(e->reason));
	ph_json_str(&buf, "limit_name", e->limit_name[0] ? e->limit_name : NULL);
	ph_json_str(&buf, "source", e->source);
	if (with_statement && e->xact_first_query[0] != '\0')
	{
		char	   *tags = ph_sql_tags_json(e->xact_tags);

		ph_json_str(&buf, "xact_first_query", e->xact_first_query);
		ph_json_key(&buf, "xact_tags");
		appendStringInfoString(&buf, tags ? tags : "null");
	}
	ph_json_time(&buf, "at", e->at);
	ph_json_close(&buf, '}');
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
			 errdetail("Policy: %s; source: %s%s%s; the transaction began with: %s",
					   NameStr(e->policy)[0] ? NameStr(e->policy) : "none",
					   e->source,
					   NameStr(e->requested_by)[0] ? ", requested by " : "",
					   NameStr(e->requested_by),
					   e->xact_first_query[0] ? e->xact_first_query : "(not recorded)")));
	ph_audit_memory_append(e);
}

/* NOTIFY's limit on a payload (commands/async.c, not exported) */
#define NOTIFY_PAYLOAD_LIMIT (BLCKSZ - NAMEDATALEN - 128)

/*
 * The NOTIFY of an action: within NOTIFY's size limit whatever the
 * statement holds (escaped, a byte can take six), else without the
 * statement.
 */
static void
notify_action(const PhAuditEntry *e)
{
	char	   *payload = notify_payload(e, ph_notify_statements);

	if (strlen(payload) >= NOTIFY_PAYLOAD_LIMIT)
		payload = notify_payload(e, false);
	Async_Notify(ph_notify_channel, payload);
}

/*
 * The records that need a transaction in a database, on a server not in
 * recovery: the table row and the NOTIFY.  Elsewhere, nothing.  Each
 * action is stored in a subtransaction: if the table refuses the row (a
 * trigger of its owner, a timeout), the action is reported as a WARNING
 * (the log and the in-memory list have it) and the other actions of the
 * caller are still stored.
 */
void
ph_audit_store(const PhAuditEntry *e)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (!IsTransactionState() || !OidIsValid(MyDatabaseId) || RecoveryInProgress())
		return;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		insert_row(e);
		if (ph_notify_channel != NULL && ph_notify_channel[0] != '\0')
			notify_action(e);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		if (MyBackendType == B_BG_WORKER)
			disable_timeout(STATEMENT_TIMEOUT, false);
		ereport(WARNING,
				(errmsg("pool_health: action on session %d not written to pool_health.terminations: %s",
						e->pid, edata->message),
				 errdetail("The server log and pool_health.recent_actions have it.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* Record one action everywhere it can be recorded from here. */
void
ph_audit_record(const PhAuditEntry *e)
{
	ph_audit_log(e);
	ph_audit_store(e);
}

/*
 * The installed version of the extension in this database, palloc'd, or
 * NULL if it is not created here.  Needs a transaction.
 */
static char *
installed_version(void)
{
	Oid			extension = get_extension_oid("pool_health", true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	if (!OidIsValid(extension))
		return NULL;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extension));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * A WARNING if the extension installed in this database is not the
 * version of this library (PH_LIBRARY_VERSION): between a new library and
 * ALTER EXTENSION UPDATE, the audit rows have only the columns of the
 * installed version's table, and what the new version adds is missing.
 * The worker calls it when it starts running in its database.  Needs a
 * transaction.
 */
void
ph_audit_check_version(void)
{
	char	   *version = installed_version();

	if (version == NULL || strcmp(version, PH_LIBRARY_VERSION) == 0)
		return;
	ereport(WARNING,
			(errmsg("pool_health: extension \"pool_health\" version %s is installed in database \"%s\", but the library is version %s",
					version, get_database_name(MyDatabaseId), PH_LIBRARY_VERSION),
			 errdetail("Until the extension is updated, audit rows in pool_health.terminations have only the columns of version %s, and what version %s adds is missing.",
					   version, PH_LIBRARY_VERSION),
			 errhint("Run ALTER EXTENSION pool_health UPDATE in that database.")));
}
