/*-------------------------------------------------------------------------
 *
 * login_name.c
 *		The application_name a connection will have, settled at login as
 *		the server will settle it: the startup packet's parameter, else its
 *		"options" (-c and --), else ALTER ROLE/DATABASE ... SET (which the
 *		worker publishes here from pg_db_role_setting: the login path cannot
 *		read it before its database is selected), else the server's setting.
 *		Reads no catalog; the login path calls it once superusers are
 *		admitted (what it allocates, it frees).
 *
 * Shared state: LoginSettingsShared ("pool_health login settings"), under
 * its own LWLock (tranche "pool_health login settings"): the worker writes
 * the settings holding it exclusively, logins read them under it, shared.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "compat.h"
#include "login_name.h"
#include "shared_catalogs.h"

typedef struct LoginSettingsShared
{
	LWLock	   *lock;			/* fixed at start */
	int			nsettings;		/* lock */
	PhRoleSetting settings[PH_MAX_ROLE_SETTINGS];	/* lock */
} LoginSettingsShared;

static LoginSettingsShared *settings_shared = NULL;

void
ph_login_settings_shmem_request(void)
{
	RequestAddinShmemSpace(sizeof(LoginSettingsShared));
	RequestNamedLWLockTranche("pool_health login settings", 1);
}

/* Caller holds AddinShmemInitLock. */
void
ph_login_settings_shmem_startup(void)
{
	bool		found;

	settings_shared = ShmemInitStruct("pool_health login settings",
									  sizeof(LoginSettingsShared), &found);
	if (found)
		return;
	memset(settings_shared, 0, sizeof(LoginSettingsShared));
	settings_shared->lock = &(GetNamedLWLockTranche("pool_health login settings"))->lock;
}

/* Letters of the server's command-line switches that take an argument. */
#define SWITCHES_WITH_ARGUMENT "BCcDdfhkNprStvW-"

/*
 * If arg is "application_name=value" (a setting of -c or --), copy the
 * value into out and return true.  The name is read as ParseLongOption()
 * reads it ('-' for '_') and compared as GUC names are, case-insensitively;
 * ParseLongOption() itself is not called: it mallocs on PostgreSQL 15 and
 * pallocs later, so its results could not be freed the same way.
 */
static bool
setting_is_application_name(const char *arg, char *out, size_t size)
{
	static const char name[] = "application_name";
	int			i;

	for (i = 0; name[i] != '\0'; i++)
	{
		char		c = arg[i] == '-' ? '_' : (char) tolower((unsigned char) arg[i]);

		if (c != name[i])
			return false;
	}
	if (arg[i] != '=')
		return false;
	strlcpy(out, arg + i + 1, size);
	return true;
}

/*
 * The last application_name set in a startup packet's "options", read as
 * the server reads them: split by the server's pg_split_opts() (whitespace
 * separates, a backslash escapes the next byte), then the switches as
 * process_postgres_switches() takes them: -c name=value, -cname=value,
 * --name=value, any other switch's argument skipped.  Copies it into out;
 * false if there is none.  Linear in the options' length; what it
 * allocates it frees.
 */
static bool
options_application_name(const char *options, char *out, size_t size)
{
	int			maxac = 2 + (strlen(options) + 1) / 2;
	char	  **av = palloc(sizeof(char *) * maxac);
	int			ac = 0;
	bool		found = false;
	bool		setting_next = false;	/* the next token is -c's argument */
	bool		skip_next = false;	/* the next token is another argument */

	pg_split_opts(av, &ac, options);
	for (int i = 0; i < ac; i++)
	{
		const char *token = av[i];

		if (setting_next || skip_next)
		{
			if (setting_next && setting_is_application_name(token, out, size))
				found = true;
			setting_next = skip_next = false;
			continue;
		}
		if (token[0] != '-')
			continue;
		for (const char *c = token + 1; *c != '\0'; c++)
		{
			if (strchr(SWITCHES_WITH_ARGUMENT, *c) == NULL)
				continue;		/* a switch without argument */
			if (c[1] != '\0')
			{
				if ((*c == 'c' || *c == '-') &&
					setting_is_application_name(c + 1, out, size))
					found = true;
			}
			else if (*c == 'c' || *c == '-')
				setting_next = true;
			else
				skip_next = true;
			break;
		}
	}
	for (int i = 0; i < ac; i++)
		pfree(av[i]);
	pfree(av);
	return found;
}

/*
 * The application_name ALTER ROLE/DATABASE ... SET gives a session of this
 * role in this database, from what the worker published, as the server
 * applies those settings: for the database and role, else the role, else
 * the database, else all.  Copies it into out; false if none (or not
 * known: the worker has not published them, or there are more than it
 * keeps).  Takes the lock shared; copies only.
 */
static bool
role_setting_application_name(const char *database, Oid role, char *out,
							  size_t size)
{
	int			best = -1;
	int			best_rank = 5;

	LWLockAcquire(settings_shared->lock, LW_SHARED);
	for (int i = 0; i < settings_shared->nsettings; i++)
	{
		const PhRoleSetting *setting = &settings_shared->settings[i];
		bool		any_database = NameStr(setting->database)[0] == '\0';
		bool		any_role = !OidIsValid(setting->role);
		int			rank;

		if ((!any_database && strncmp(NameStr(setting->database), database, NAMEDATALEN) != 0) ||
			(!any_role && setting->role != role))
			continue;
		rank = !any_database && !any_role ? 0 : any_database && !any_role ? 1 :
			!any_database && any_role ? 2 : 3;
		if (rank < best_rank)
		{
			best_rank = rank;
			best = i;
		}
	}
	if (best >= 0)
		strlcpy(out, settings_shared->settings[best].application_name, size);
	LWLockRelease(settings_shared->lock);
	return best >= 0;
}

/*
 * The application_name the session will report (pgstat_report_appname),
 * as the server settles it: the startup packet's parameter (its name read
 * case-insensitively; the last one wins), else "options", else ALTER
 * ROLE/DATABASE ... SET (as the worker published them), else the server's
 * own setting; made clean ASCII as the server makes it; truncated to
 * NAMEDATALEN - 1 bytes.  out has NAMEDATALEN bytes.  Reads no catalog.
 */
void
ph_login_application_name(const Port *port, Oid role, char *out)
{
	char		found[NAMEDATALEN * 4 + 32];
	const char *raw = NULL;
	ListCell   *lc;
	size_t		len = 0;

	/* startup packet parameters: name, value, name, value, ... */
	foreach(lc, port->guc_options)
	{
		const char *name = (const char *) lfirst(lc);

		lc = lnext(port->guc_options, lc);
		if (lc == NULL)
			break;
		if (pg_strcasecmp(name, "application_name") == 0)
			raw = (const char *) lfirst(lc);
	}
	if (raw == NULL && port->cmdline_options != NULL &&
		options_application_name(port->cmdline_options, found, sizeof(found)))
		raw = found;
	if (raw == NULL)
		raw = role_setting_application_name(port->database_name, role, found,
											sizeof(found)) ? found : application_name;
	for (const char *c = raw ? raw : ""; *c != '\0' && len < NAMEDATALEN - 1; c++)
	{
		char		clean[4];
		int			n = ph_clean_ascii_byte((unsigned char) *c, clean);

		for (int i = 0; i < n && len < NAMEDATALEN - 1; i++)
			out[len++] = clean[i];
	}
	out[len] = '\0';
}

/* ---- the worker's side ---- */

static bool settings_overflow_logged = false;	/* worker */

/*
 * Worker: publish the application_name settings of pg_db_role_setting for
 * the login path.  Read first, then copied in under the lock.
 */
void
ph_login_settings_publish(void)
{
	PhRoleSetting *settings = palloc(sizeof(PhRoleSetting) * PH_MAX_ROLE_SETTINGS);
	bool		overflow;
	int			n = ph_role_settings_read(settings, PH_MAX_ROLE_SETTINGS, &overflow);

	LWLockAcquire(settings_shared->lock, LW_EXCLUSIVE);
	memcpy(settings_shared->settings, settings, sizeof(PhRoleSetting) * n);
	settings_shared->nsettings = n;
	LWLockRelease(settings_shared->lock);
	pfree(settings);
	if (overflow && !settings_overflow_logged)
		ereport(WARNING,
				(errmsg("pool_health: more than %d ALTER ROLE/DATABASE ... SET application_name settings; admission control sees the first %d only",
						PH_MAX_ROLE_SETTINGS, PH_MAX_ROLE_SETTINGS),
				 errdetail("Connections named by the others are counted against their quota at the worker's next sample, not at login.")));
	settings_overflow_logged = overflow;
}
