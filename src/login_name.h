/*-------------------------------------------------------------------------
 *
 * login_name.h
 *		The application_name a connection will have, settled at login
 *		(login_name.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_LOGIN_NAME_H
#define PH_LOGIN_NAME_H

#include "ph_model.h"

/*
 * An application_name given by ALTER ROLE/DATABASE ... SET, as the worker
 * publishes it for the login path (which cannot read pg_db_role_setting
 * before its database is selected).
 */
typedef struct PhRoleSetting
{
	NameData	database;		/* empty: every database */
	Oid			role;			/* InvalidOid: every role */
	char		application_name[NAMEDATALEN * 4];	/* as set, not cleaned */
} PhRoleSetting;

#define PH_MAX_ROLE_SETTINGS 256

struct Port;

extern void ph_login_settings_shmem_request(void);
extern void ph_login_settings_shmem_startup(void);
extern void ph_login_settings_publish(void);
extern void ph_login_application_name(const struct Port *port, Oid role, char *out);

#endif							/* PH_LOGIN_NAME_H */
