/*-------------------------------------------------------------------------
 *
 * policy_table.c
 *		Reading pool_health.policies: the table is found as a member of
 *		the extension with the column types the code expects
 *		(extension_tables.c), scanned directly (no SQL, no rules, no row
 *		security: nothing of the table owner's runs), and every enabled row
 *		is validated again (policy_row.c), whatever the table's constraints
 *		and triggers said when it was written (they can be dropped,
 *		disabled, or bypassed with session_replication_role = replica or a
 *		restore with --disable-triggers).  A valid row is compiled into a
 *		PhPolicy; an invalid one becomes a PhPolicyError and is left out,
 *		so that no row can make matching fail later (at login, in the
 *		views).  Two enabled rows with one name are both left out.
 *
 * The worker's reads never wait: if another session holds a lock on the
 * table that conflicts with reading it (its owner could hold one forever),
 * the read fails and the worker keeps what it had.  A function called by
 * a user waits, as any query on the table would.
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "extension_tables.h"
#include "policy.h"
#include "policy_table_int.h"

/* The columns read, with the types the code expects. */
static const PhColumn policy_columns[NUM_POLICY_COLUMNS] = {
	{"name", TEXTOID},
	{"priority", INT4OID},
	{"database", NAMEOID},
	{"role", NAMEOID},
	{"application_name", TEXTOID},
	{"client_addr", CIDROID},
	{"idle_in_transaction_timeout", INTERVALOID},
	{"idle_timeout", INTERVALOID},
	{"transaction_timeout", INTERVALOID},
	{"blocking_timeout", INTERVALOID},
	{"max_connections", INT4OID},
	{"action", TEXTOID},
	{"dry_run", BOOLOID},
	{"allow_superuser", BOOLOID},
	{"refuse_at", TEXTOID},
	{"enabled", BOOLOID},
};

/*
 * Columns a table created by an older version of the extension lacks
 * until ALTER EXTENSION pool_health UPDATE has run: NULL then.  When
 * present, they must have these types.
 */
static const PhColumn optional_policy_columns[NUM_ALL_POLICY_COLUMNS - NUM_POLICY_COLUMNS] = {
	{"reserve_connections", INT4OID},
	{"max_logins_per_second", NUMERICOID},
	{"login_burst", INT4OID},
};

/* The name of any column read, by its number (policy_table_int.h). */
const char *
ph_policy_column_name(int col)
{
	return col < NUM_POLICY_COLUMNS ? policy_columns[col].name :
		optional_policy_columns[col - NUM_POLICY_COLUMNS].name;
}

/* Record why a row (or, with name NULL, the table) is not in effect. */
void
ph_policy_error(PhPolicies *out, const char *name, const char *fmt,...)
{
	PhPolicyError *e;
	va_list		args;

	if (out->errors == NULL)
		out->errors = palloc0(sizeof(PhPolicyError) * 8);
	else if ((out->nerrors & (out->nerrors - 1)) == 0 && out->nerrors >= 8)
		out->errors = repalloc(out->errors, sizeof(PhPolicyError) * out->nerrors * 2);
	e = &out->errors[out->nerrors++];
	memset(e, 0, sizeof(PhPolicyError));
	if (name != NULL)
		strlcpy(NameStr(e->name), name, NAMEDATALEN);
	va_start(args, fmt);
	vsnprintf(e->error, sizeof(e->error), fmt, args);
	va_end(args);
	e->since = GetCurrentTimestamp();
}

static int
name_cmp(const void *a, const void *b)
{
	const PhPolicy *x = *(PhPolicy *const *) a;
	const PhPolicy *y = *(PhPolicy *const *) b;

	return strcmp(NameStr(x->name), NameStr(y->name));
}

/*
 * Names identify policies (quota counters, audit): when a table that lost
 * its primary key holds one name twice, both rows are left out.
 */
static void
drop_duplicate_names(PhPolicies *out)
{
	PhPolicy  **by_name;
	bool	   *drop;
	int			kept = 0;

	if (out->count < 2)
		return;
	by_name = palloc(sizeof(PhPolicy *) * out->count);
	drop = palloc0(sizeof(bool) * out->count);
	for (int i = 0; i < out->count; i++)
		by_name[i] = &out->items[i];
	qsort(by_name, out->count, sizeof(PhPolicy *), name_cmp);
	for (int i = 1; i < out->count; i++)
	{
		if (strcmp(NameStr(by_name[i - 1]->name), NameStr(by_name[i]->name)) != 0)
			continue;
		if (!drop[by_name[i - 1] - out->items])
			ph_policy_error(out, NameStr(by_name[i]->name),
							"more than one enabled policy has this name");
		drop[by_name[i - 1] - out->items] = true;
		drop[by_name[i] - out->items] = true;
	}
	for (int i = 0; i < out->count; i++)
		if (!drop[i])
			out->items[kept++] = out->items[i];
	out->count = kept;
	pfree(by_name);
	pfree(drop);
}

/*
 * Compile the enabled, valid rows of pool_health.policies in the current
 * database into *out (allocated in the current memory context), in
 * precedence order, with the rows left out in out->errors.  Returns false,
 * with no policies, when the extension is not created here, or its table
 * cannot be used (with the reason in out->errors), or (wait false) another
 * session holds a lock that conflicts with reading it (out->locked).
 * Needs a transaction.
 */
bool
ph_policies_read(PhPolicies *out, bool wait)
{
	Oid			relid;
	char	   *why = NULL;
	AttrNumber	attnums[NUM_ALL_POLICY_COLUMNS];
	Relation	rel;
	TupleDesc	desc;
	TupleTableSlot *slot;
	TableScanDesc scan;
	Snapshot	snapshot;
	int			capacity = 16;

	memset(out, 0, sizeof(PhPolicies));
	relid = ph_extension_table("policies", policy_columns, NUM_POLICY_COLUMNS, &why);
	if (!OidIsValid(relid))
	{
		if (why != NULL)
			ph_policy_error(out, NULL, "%s", why);
		return false;
	}
	if (wait)
		LockRelationOid(relid, AccessShareLock);
	else if (!ConditionalLockRelationOid(relid, AccessShareLock))
	{
		out->locked = true;
		ph_policy_error(out, NULL,
						"pool_health.policies is locked by another session: the policies were not read again");
		return false;
	}
	rel = table_open(relid, NoLock);
	desc = RelationGetDescr(rel);
	out->owner = rel->rd_rel->relowner;
	out->relid = relid;
	for (int c = 0; c < NUM_POLICY_COLUMNS; c++)
	{
		attnums[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped &&
				strcmp(NameStr(att->attname), policy_columns[c].name) == 0)
				attnums[c] = att->attnum;
		}
		Assert(attnums[c] != InvalidAttrNumber);	/* checked by ph_extension_table */
	}
	for (int c = NUM_POLICY_COLUMNS; c < NUM_ALL_POLICY_COLUMNS; c++)
	{
		const PhColumn *col = &optional_policy_columns[c - NUM_POLICY_COLUMNS];

		attnums[c] = InvalidAttrNumber;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), col->name) == 0)
			{
				if (att->atttypid != col->type)
				{
					ph_policy_error(out, NULL,
									"column \"%s\" of table pool_health.policies has type %s, not %s: the table is ignored",
									col->name, format_type_be(att->atttypid),
									format_type_be(col->type));
					table_close(rel, AccessShareLock);
					out->owner = InvalidOid;
					out->relid = InvalidOid;
					return false;
				}
				attnums[c] = att->attnum;
			}
		}
	}

	out->items = palloc(sizeof(PhPolicy) * capacity);
	snapshot = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() :
								GetTransactionSnapshot());
	slot = table_slot_create(rel, NULL);
	scan = ph_table_beginscan(rel, snapshot);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		enabled = slot_getattr(slot, attnums[COL_ENABLED], &isnull);

		if (!isnull && !DatumGetBool(enabled))
			continue;
		if (isnull)
		{
			Datum		name = slot_getattr(slot, attnums[COL_NAME], &isnull);

			ph_policy_error(out,
							isnull || VARATT_IS_EXTERNAL(DatumGetPointer(name)) ?
							NULL : TextDatumGetCString(name),
							"enabled is NULL");
			continue;
		}
		if (out->count == capacity)
		{
			capacity *= 2;
			out->items = repalloc(out->items, sizeof(PhPolicy) * capacity);
		}
		if (ph_policy_compile_row(out, slot, attnums, &out->items[out->count]))
			out->count++;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);

	drop_duplicate_names(out);
	ph_policies_sort(out);
	return true;
}
