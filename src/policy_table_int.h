/*-------------------------------------------------------------------------
 *
 * policy_table_int.h
 *		Between policy_table.c (the table: found, scanned) and policy_row.c
 *		(one row: validated, compiled): the columns read, by number.  Not
 *		for other modules (policy.h is their API).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_POLICY_TABLE_INT_H
#define PH_POLICY_TABLE_INT_H

#include "access/attnum.h"
#include "executor/tuptable.h"

#include "ph_model.h"

/* The columns read, with the types the code expects. */
enum
{
	COL_NAME,
	COL_PRIORITY,
	COL_DATABASE,
	COL_ROLE,
	COL_APPLICATION_NAME,
	COL_CLIENT_ADDR,
	COL_IDLE_IN_TRANSACTION_TIMEOUT,
	COL_IDLE_TIMEOUT,
	COL_TRANSACTION_TIMEOUT,
	COL_BLOCKING_TIMEOUT,
	COL_MAX_CONNECTIONS,
	COL_ACTION,
	COL_DRY_RUN,
	COL_ALLOW_SUPERUSER,
	COL_REFUSE_AT,
	COL_ENABLED,
	NUM_POLICY_COLUMNS,
	/* added in 1.3: read as NULL while the table is a 1.2 one */
	COL_RESERVE_CONNECTIONS = NUM_POLICY_COLUMNS,
	COL_MAX_LOGINS_PER_SECOND,
	COL_LOGIN_BURST,
	NUM_ALL_POLICY_COLUMNS
};

extern const char *ph_policy_column_name(int col);
extern bool ph_policy_compile_row(PhPolicies *out, TupleTableSlot *slot,
								  const AttrNumber *attnums, PhPolicy *p);

#endif							/* PH_POLICY_TABLE_INT_H */
