/*-------------------------------------------------------------------------
 *
 * shared_catalogs.h
 *		Reading the shared catalogs without a database (shared_catalogs.c),
 *		and the one way every role and database name is shown.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_SHARED_CATALOGS_H
#define PH_SHARED_CATALOGS_H

#include "ph_model.h"
#include "login_name.h"

extern Oid	ph_database_lookup(const char *name, bool *usable);
extern int	ph_role_settings_read(PhRoleSetting *out, int max, bool *overflow);
extern char *ph_name_text(const char *name);
extern void ph_name_copy(NameData *dst, const char *shown);
extern int	ph_name_encoding(void);
extern void ph_name_shown(NameData *dst, const char *name, int encoding);
extern char *ph_database_name(Oid database_id);
extern char *ph_role_name(Oid role_id);

#endif							/* PH_SHARED_CATALOGS_H */
