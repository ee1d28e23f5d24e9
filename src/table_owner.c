/*-------------------------------------------------------------------------
 *
 * table_owner.c
 *		Running SPI on one of the extension's tables (pool_health.policies,
 *		pool_health.terminations) with the table owner's rights: the worker
 *		and the functions read the policies and write the audit trail for
 *		callers who may do neither themselves.  The user id is switched
 *		with SECURITY_RESTRICTED_OPERATION, as for a maintenance command, so
 *		nothing run meanwhile can change the session's state; the statements
 *		run are fully qualified and resolve nothing through search_path.
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "pool_health.h"

/*
 * If pool_health.<relname> exists in this database, become its owner and
 * connect to SPI, and return true; else change nothing and return false.
 * Needs a transaction.  ph_table_owner_end() undoes it.
 */
bool
ph_table_owner_begin(const char *relname, PhTableOwner *saved)
{
	Oid			nsp = get_namespace_oid("pool_health", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;
	HeapTuple	classtup;
	Oid			owner;

	if (!OidIsValid(relid))
		return false;
	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(classtup))
		return false;
	owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return true;
}

/*
 * Finish SPI and become the caller again.  (On an error in between, the
 * transaction abort restores the user id and cleans up SPI.)
 */
void
ph_table_owner_end(const PhTableOwner *saved)
{
	SPI_finish();
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}
