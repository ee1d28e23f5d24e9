/*-------------------------------------------------------------------------
 *
 * extension_tables.h
 *		The extension's tables (extension_tables.c): finding one and checking
 *		its columns; acting as its owner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_EXTENSION_TABLES_H
#define PH_EXTENSION_TABLES_H

#include "ph_model.h"

typedef struct PhColumn
{
	const char *name;
	Oid			type;
} PhColumn;
extern Oid	ph_extension_table(const char *relname, const PhColumn *columns,
							   int ncolumns, char **why);
typedef struct PhTableOwner
{
	Oid			userid;			/* the caller's, restored at the end */
	int			sec_context;
	int			guc_nestlevel;	/* settings the owner's code made, undone */
} PhTableOwner;
extern void ph_table_owner_begin(Oid relid, PhTableOwner *saved);
extern void ph_table_owner_end(const PhTableOwner *saved);

#endif							/* PH_EXTENSION_TABLES_H */
