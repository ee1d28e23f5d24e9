/*-------------------------------------------------------------------------
 *
 * shared_catalogs.c
 *		Lookups in the shared catalogs.  ph_database_lookup() works in a
 *		process that has not selected a database (the worker running
 *		without one): pg_database is always open to it, but its indexes may
 *		not be yet, so they are used only when the server says they can be
 *		(criticalSharedRelcachesBuilt), as core's GetDatabaseTuple() does.
 *		ph_role_settings_read() needs a database (pg_db_role_setting is not
 *		one of the catalogs open before): the worker reads the
 *		application_name settings for the login path, which must not read
 *		it (admission.c publishes them).
 *
 * Callers need a transaction.  No shared state of pool_health.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_database.h"
#include "catalog/pg_db_role_setting.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"	/* get_database_name() before PG 19 */
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"	/* get_database_name() from PG 19 */
#include "utils/rel.h"
#include "utils/relcache.h"

#include "pool_health.h"

/*
 * The database of that name: its OID (InvalidOid if there is none), and
 * whether a worker may hold a connection to it (not a template, accepting
 * connections).
 */
Oid
ph_database_lookup(const char *name, bool *usable)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			oid = InvalidOid;

	*usable = false;
	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(name));
	scan = systable_beginscan(rel, DatabaseNameIndexId, criticalSharedRelcachesBuilt,
							  NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		oid = db->oid;
		*usable = db->datallowconn && !db->datistemplate;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return oid;
}

/*
 * Every application_name that ALTER ROLE/DATABASE ... SET gives: the
 * database's name ("" for all), the role (InvalidOid for all) and the
 * value, for admission.c to publish.  Up to max into out; *overflow when
 * there are more.  Needs a database (pg_db_role_setting is read through
 * the relation cache): the worker calls it.
 */
int
ph_role_settings_read(PhRoleSetting *out, int max, bool *overflow)
{
	Relation	rel = table_open(DbRoleSettingRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tuple;
	int			n = 0;

	*overflow = false;
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_db_role_setting row = (Form_pg_db_role_setting) GETSTRUCT(tuple);
		bool		isnull;
		Datum		config = heap_getattr(tuple, Anum_pg_db_role_setting_setconfig,
										  RelationGetDescr(rel), &isnull);
		Datum	   *items;
		int			nitems;
		const char *value = NULL;

		if (isnull)
			continue;
		deconstruct_array(DatumGetArrayTypeP(config), TEXTOID, -1, false,
						  TYPALIGN_INT, &items, NULL, &nitems);
		for (int i = 0; i < nitems; i++)
		{
			char	   *item = TextDatumGetCString(items[i]);

			/* the last assignment wins, as when the server applies them */
			if (pg_strncasecmp(item, "application_name=", 17) == 0)
				value = item + 17;
		}
		if (value == NULL)
			continue;
		if (n == max)
		{
			*overflow = true;
			break;
		}
		memset(&out[n], 0, sizeof(PhRoleSetting));
		if (OidIsValid(row->setdatabase))
		{
			char	   *name = get_database_name(row->setdatabase);

			if (name == NULL)
				continue;		/* dropped meanwhile */
			namestrcpy(&out[n].database, name);
		}
		out[n].role = row->setrole;
		strlcpy(out[n].application_name, value, sizeof(out[n].application_name));
		n++;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return n;
}
