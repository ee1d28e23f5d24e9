/*-------------------------------------------------------------------------
 *
 * extension_tables.c
 *		Finding the extension's own tables (pool_health.policies,
 *		pool_health.terminations) and running SPI on them with their
 *		owner's rights.
 *
 * A table is used only if it is a member of the extension pool_health
 * (pg_depend), a plain table in the extension's schema, and has every
 * column the code reads or writes with the type the code expects; never a
 * table that merely has the right name (someone who can create objects in
 * the schema, or the table's owner, could otherwise make the
 * superuser-run worker read a table of theirs or misread a column).
 *
 * The user id is switched to the table owner with
 * SECURITY_RESTRICTED_OPERATION, as for a maintenance command, and the
 * owner's code (triggers, defaults) runs in a nest level of settings that
 * is undone afterwards, with search_path restricted to pg_catalog: it can
 * leave nothing behind in the caller's session (a setting changed for
 * good, say) nor resolve anything through the caller's search_path.  In
 * the worker it also runs under a statement timeout
 * (PH_OWNER_CODE_TIMEOUT_MS): a trigger that sleeps, or a lock held on the
 * table or its sequence, cannot stall sampling for longer.  The
 * statements run are fully qualified.
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "compat.h"
#include "extension_tables.h"

/* How long the owner's code may run for the worker. */
#define PH_OWNER_CODE_TIMEOUT_MS 2000

/* The schema of an extension, or InvalidOid. */
static Oid
extension_schema(Oid extension)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			schema = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extension));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		schema = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return schema;
}

/*
 * The OID of the extension's table relname in this database, checked as
 * the file header says; InvalidOid if the extension is not created here
 * (*why NULL), or if the table cannot be used (*why says why).
 */
Oid
ph_extension_table(const char *relname, const PhColumn *columns, int ncolumns,
				   char **why)
{
	Oid			extension = get_extension_oid("pool_health", true);
	Oid			schema;
	Oid			relid;

	*why = NULL;
	if (!OidIsValid(extension))
		return InvalidOid;
	schema = extension_schema(extension);
	relid = OidIsValid(schema) ? get_relname_relid(relname, schema) : InvalidOid;
	if (!OidIsValid(relid) ||
		getExtensionOfObject(RelationRelationId, relid) != extension ||
		get_rel_relkind(relid) != RELKIND_RELATION)
	{
		*why = psprintf("table pool_health.%s is not a table of extension pool_health: ignored",
						relname);
		return InvalidOid;
	}
	for (int i = 0; i < ncolumns; i++)
	{
		AttrNumber	attnum = get_attnum(relid, columns[i].name);
		Oid			type;

		if (attnum == InvalidAttrNumber)
		{
			*why = psprintf("column \"%s\" of table pool_health.%s is missing: the table is ignored",
							columns[i].name, relname);
			return InvalidOid;
		}
		type = get_atttype(relid, attnum);
		if (type != columns[i].type)
		{
			*why = psprintf("column \"%s\" of table pool_health.%s has type %s, not %s: the table is ignored",
							columns[i].name, relname, format_type_be(type),
							format_type_be(columns[i].type));
			return InvalidOid;
		}
	}
	return relid;
}

/*
 * Become the owner of relid, in a nest level of settings, and connect to
 * SPI.  Needs a transaction.  ph_table_owner_end() undoes it; an error in
 * between is cleaned up by the transaction's abort (and, in the worker,
 * the timeout is disabled by its error path).
 */
void
ph_table_owner_begin(Oid relid, PhTableOwner *saved)
{
	Oid			owner = InvalidOid;
	HeapTuple	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

	if (!HeapTupleIsValid(classtup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->guc_nestlevel = NewGUCNestLevel();
	ph_restrict_search_path();
	if (MyBackendType == B_BG_WORKER)
		enable_timeout_after(STATEMENT_TIMEOUT, PH_OWNER_CODE_TIMEOUT_MS);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/*
 * Finish SPI and become the caller again.  (On an error in between, the
 * transaction abort restores the user id and cleans up SPI.)
 */
void
ph_table_owner_end(const PhTableOwner *saved)
{
	SPI_finish();
	if (MyBackendType == B_BG_WORKER)
		disable_timeout(STATEMENT_TIMEOUT, false);
	AtEOXact_GUC(false, saved->guc_nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
