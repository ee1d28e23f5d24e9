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
 *		Names from the shared catalogs (roles, databases) are stored as
 *		the bytes of whichever database created them: a role created from
 *		a LATIN1 database can be invalid UTF-8 in a UTF8 one.
 *		ph_name_text() makes any such name safe to show: every formatter
 *		(views, status() and the HTTP JSON, metrics(), the audit, its log
 *		line and NOTIFY) takes role and database names from it, through
 *		ph_role_name() and ph_database_name() or directly.
 *		ph_name_shown() shows a name as a process in another database
 *		(another encoding) would: pool_health.my_terminations matches the
 *		session user's name with the audit's records so.
 *
 * Callers need a transaction (but for ph_name_text()).  No shared state
 * of pool_health.
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
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "commands/dbcommands.h"	/* get_database_name() before PG 19 */
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"	/* get_database_name() from PG 19 */
#include "utils/rel.h"
#include "utils/relcache.h"

#include "admission.h"
#include "shared_catalogs.h"

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

/*
 * The encoding this process shows names in (ph_name_text()): the
 * database's, UTF-8 where that is SQL_ASCII or there is no database (the
 * HTTP worker; JSON and Prometheus text need UTF-8).
 */
int
ph_name_encoding(void)
{
	int			encoding = GetDatabaseEncoding();

	return encoding == PG_SQL_ASCII ? PG_UTF8 : encoding;
}

/* ph_name_text() as a process whose names are shown in encoding. */
static char *
shown_text(const char *name, int encoding)
{
	int			len = strlen(name);
	StringInfoData buf;

	if (strchr(name, '\\') == NULL && pg_verify_mbstr(encoding, name, len, true))
		return pstrdup(name);
	initStringInfo(&buf);
	for (int i = 0; i < len;)
	{
		int			l = IS_HIGHBIT_SET(name[i]) ?
			pg_encoding_verifymbchar(encoding, name + i, len - i) : 1;

		if (name[i] == '\\')
		{
			appendStringInfoString(&buf, "\\\\");
			i++;
		}
		else if (l > 0)
		{
			appendBinaryStringInfo(&buf, name + i, l);
			i += l;
		}
		else
			appendStringInfo(&buf, "\\x%02x", (unsigned char) name[i++]);
	}
	return buf.data;
}

/*
 * A name from a shared catalog, made valid text for this process: as it is
 * when it is valid in ph_name_encoding() and has no backslash; else with
 * each byte that is not part of a valid character written as \xHH and
 * each backslash as \\, so that two names never show alike (a role named
 * "r\xe9" in ASCII shows as "r\\xe9").  palloc'd; never raises but out
 * of memory.
 */
char *
ph_name_text(const char *name)
{
	return shown_text(name, ph_name_encoding());
}

/* ph_name_copy() of text in encoding. */
static void
name_copy(NameData *dst, const char *shown, int encoding)
{
	int			len = pg_encoding_mbcliplen(encoding, shown, strlen(shown),
											NAMEDATALEN - 1);

	memset(dst, 0, sizeof(NameData));
	memcpy(NameStr(*dst), shown, len);
}

/*
 * A name as shown (ph_name_text()) into a NameData, cut at a character
 * boundary (the escapes can make it longer than NAMEDATALEN - 1 bytes).
 */
void
ph_name_copy(NameData *dst, const char *shown)
{
	name_copy(dst, shown, ph_name_encoding());
}

/*
 * A name from a shared catalog as a process whose names are shown in
 * encoding (ph_name_encoding() there) stored it: ph_name_copy() of
 * ph_name_text().  The audit records the role of a session so
 * (pool_health.terminations.role, PhAuditEntry.role), and
 * pool_health.my_terminations shows the session user's name so to match
 * it, in this process or for a record made in another database.
 */
void
ph_name_shown(NameData *dst, const char *name, int encoding)
{
	name_copy(dst, shown_text(name, encoding), encoding);
}

/* The name of a database to show (ph_name_text), or "" if it is gone. */
char *
ph_database_name(Oid database_id)
{
	char	   *name = OidIsValid(database_id) ? get_database_name(database_id) : NULL;

	return name ? ph_name_text(name) : pstrdup("");
}

/* The name of a role to show (ph_name_text), or "" if it is gone. */
char *
ph_role_name(Oid role_id)
{
	char	   *name = OidIsValid(role_id) ? GetUserNameFromId(role_id, true) : NULL;

	return name ? ph_name_text(name) : pstrdup("");
}
