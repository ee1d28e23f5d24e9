/*-------------------------------------------------------------------------
 *
 * pool_health.c
 *		Entry point of the pool_health library: _PG_init and the settings.
 *
 * The library works in two modes.  Loaded on demand (CREATE EXTENSION,
 * first call of one of its functions), it serves the live views and the
 * manual functions.  Loaded through shared_preload_libraries, it also
 * owns shared memory and a background worker; ph_preloaded says which.
 *
 * pool_health.protected_roles is parsed once, when it is set, into a list
 * of names that the login path compares without allocating or looking up
 * anything (ph_role_name_protected).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "compat.h"
#include "admission.h"
#include "hooks.h"
#include "http.h"
#include "policy.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"

PG_MODULE_MAGIC;

/* Settings (see the README for their meaning). */
int			ph_degraded_percent = 70;
int			ph_critical_percent = 90;
int			ph_leak_after_ms = 60 * 1000;
int			ph_lock_wait_after_ms = 10 * 1000;
char	   *ph_database = NULL;
int			ph_sample_interval_ms = 1000;
char	   *ph_notify_channel = NULL;
int			ph_history_raw_samples = 3600;
int			ph_history_minutes = 7 * 24 * 60;
int			ph_forecast_window_s = 15 * 60;
int			ph_enforce = PH_ENFORCE_ON;
char	   *ph_protected_roles = NULL;
int			ph_max_policies = 100;
int			ph_audit_memory = 500;
bool		ph_admission = true;
int			ph_metrics_top_groups = 10;
int			ph_metrics_min_age_s = 5 * 60;
char	   *ph_metrics_application_pattern = NULL;
int			ph_first_query_size = 1024;
bool		ph_notify_statements = false;
int			ph_max_groups = 256;
int			ph_app_history_minutes = 24 * 60;
int			ph_advice_window_minutes = 24 * 60;
int			ph_client_pool_size = 0;
static char *client_pool_size_text = NULL;

static const struct config_enum_entry enforce_options[] = {
	{"on", PH_ENFORCE_ON, false},
	{"dry_run", PH_ENFORCE_DRY_RUN, false},
	{"off", PH_ENFORCE_OFF, false},
	{"true", PH_ENFORCE_ON, true},
	{"false", PH_ENFORCE_OFF, true},
	{NULL, 0, false}
};

/* Was the library loaded by shared_preload_libraries? */
bool		ph_preloaded = false;

void		_PG_init(void);

/* pool_health.protected_roles, parsed (the setting's "extra") */
typedef struct ProtectedRoles
{
	int			count;
	NameData	names[FLEXIBLE_ARRAY_MEMBER];
} ProtectedRoles;

static ProtectedRoles *protected_roles = NULL;

static bool
check_protected_roles(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval);
	List	   *names;
	ListCell   *lc;
	ProtectedRoles *parsed;
	int			i = 0;

	if (!SplitIdentifierString(copy, ',', &names))
	{
		GUC_check_errdetail("List syntax is invalid.");
		list_free(names);
		pfree(copy);
		return false;
	}
	parsed = ph_guc_malloc(offsetof(ProtectedRoles, names) +
						   sizeof(NameData) * Max(list_length(names), 1));
	if (parsed == NULL)
		return false;
	parsed->count = list_length(names);
	foreach(lc, names)
		namestrcpy(&parsed->names[i++], (const char *) lfirst(lc));
	list_free(names);
	pfree(copy);
	*extra = parsed;
	return true;
}

static void
assign_protected_roles(const char *newval, void *extra)
{
	protected_roles = (ProtectedRoles *) extra;
}

/*
 * Is this role name listed in pool_health.protected_roles?  Compares
 * names only: it allocates nothing and cannot fail (the login path).
 */
bool
ph_role_name_protected(const char *name)
{
	if (protected_roles == NULL || name == NULL)
		return false;
	for (int i = 0; i < protected_roles->count; i++)
		if (strncmp(NameStr(protected_roles->names[i]), name, NAMEDATALEN) == 0)
			return true;
	return false;
}

/* The OIDs of the protected roles that exist (palloc'd). */
Oid *
ph_protected_role_oids(int *n)
{
	int			count = protected_roles ? protected_roles->count : 0;
	Oid		   *oids = palloc(sizeof(Oid) * Max(count, 1));

	*n = 0;
	for (int i = 0; i < count; i++)
	{
		Oid			role = get_role_oid(NameStr(protected_roles->names[i]), true);

		if (OidIsValid(role))
			oids[(*n)++] = role;
	}
	return oids;
}

/*
 * pool_health.client_pool_size: an integer kept as a string, so that
 * parsing it is ours.  The startup packet's options (and the settings
 * applied at login: ALTER ROLE/DATABASE SET) are applied while the session
 * logs in, where a value the server rejects is FATAL: there any value is
 * taken, one that is not a size meaning "not declared" (0) with a WARNING
 * the client sees (it has authenticated).  Elsewhere (SET, ALTER ROLE SET,
 * ALTER SYSTEM, the configuration file) a bad value is rejected.  The
 * value is rewritten as the size understood ("1.5" 2, "abc" 0 at login),
 * which SHOW and pg_settings show and parallel workers receive.
 */
static bool
parse_pool_size(const char *value, int *size, const char **hint)
{
	*hint = NULL;
	if (!parse_int(value, size, 0, hint))
		return false;
	if (*size < 0)
	{
		*hint = NULL;
		return false;
	}
	return true;
}

/*
 * A value as a WARNING shows it: its first 64 bytes, ASCII, each other
 * byte (and a backslash) as \xHH, so that the message converts to any
 * client encoding (a conversion that fails would be an ERROR).
 */
static char *
shown_value(const char *value)
{
	StringInfoData buf;
	const char *p;

	initStringInfo(&buf);
	for (p = value; *p != '\0' && p - value < 64; p++)
	{
		if (IS_HIGHBIT_SET(*p) || *p == '\\' || (unsigned char) *p < 0x20)
			appendStringInfo(&buf, "\\x%02x", (unsigned char) *p);
		else
			appendStringInfoChar(&buf, *p);
	}
	if (*p != '\0')
		appendStringInfoString(&buf, "...");
	return buf.data;
}

static bool
check_client_pool_size(char **newval, void **extra, GucSource source)
{
	int			size;
	const char *hint;
	char		canonical[16];
	char	   *copy;

	if (!parse_pool_size(*newval, &size, &hint))
	{
		switch (source)
		{
			case PGC_S_GLOBAL:
			case PGC_S_DATABASE:
			case PGC_S_USER:
			case PGC_S_DATABASE_USER:
			case PGC_S_CLIENT:
				/* at login: taken, as "not declared" */
				ereport(WARNING,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for parameter \"%s\": \"%s\"",
								"pool_health.client_pool_size", shown_value(*newval)),
						 errdetail("The session's pool size is taken as not declared (0): a pool size is an integer from 0 to %d.",
								   INT_MAX)));
				size = 0;
				break;
			default:
				GUC_check_errdetail("A pool size is an integer from 0 (not declared) to %d.",
									INT_MAX);
				if (hint != NULL)
					GUC_check_errhint("%s", hint);
				return false;
		}
	}
	snprintf(canonical, sizeof(canonical), "%d", size);
	if (strcmp(*newval, canonical) == 0)
		return true;
	/* out of memory: kept as it is, which assign_client_pool_size reads alike */
	copy = ph_guc_malloc(strlen(canonical) + 1);
	if (copy != NULL)
	{
		strcpy(copy, canonical);
		ph_guc_free(*newval);
		*newval = copy;
	}
	return true;
}

static void
assign_client_pool_size(const char *newval, void *extra)
{
	int			size;
	const char *hint;

	ph_client_pool_size = parse_pool_size(newval, &size, &hint) ? size : 0;
}

static bool
check_notify_channel(char **newval, void **extra, GucSource source)
{
	if (strlen(*newval) >= NAMEDATALEN)
	{
		GUC_check_errdetail("A channel name must be shorter than %d bytes.", NAMEDATALEN);
		return false;
	}
	return true;
}

static bool
check_metrics_application_pattern(char **newval, void **extra, GucSource source)
{
	if (strlen(*newval) > PH_PATTERN_MAX)
	{
		GUC_check_errdetail("A pattern must be at most %d bytes long.", PH_PATTERN_MAX);
		return false;
	}
	if (!ph_like_pattern_valid(*newval))
	{
		GUC_check_errdetail("A LIKE pattern must not end with the escape character \\.");
		return false;
	}
	return true;
}

/*
 * Settings that size shared memory or pick the worker's database, and those
 * of the HTTP worker: they can only exist when the library is preloaded.
 */
static void
define_postmaster_settings(void)
{
	DefineCustomStringVariable("pool_health.database",
							   "Database the pool_health worker connects to.",
							   "The extension is created there; NOTIFY alerts are sent there.",
							   &ph_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pool_health.http_listen",
							   "Address (host:port, [v6]:port, or :port for every IPv4 and IPv6 address) on which a worker serves /health, /status and /metrics over HTTP; empty disables.",
							   "It needs no connection slot. Bind it to localhost or a private interface: the endpoints show counts to anyone, without authentication.",
							   &ph_http_listen,
							   "",
							   PGC_POSTMASTER,
							   0,
							   ph_http_listen_check, NULL, NULL);

	DefineCustomIntVariable("pool_health.http_request_timeout",
							"How long an HTTP connection has, from its accept or its previous answer, to send a complete request, and to take each answer.",
							"It is reset then, however slowly it sends or reads bytes, so that slow clients cannot hold the connections /health needs, nor the kernel's memory.",
							&ph_http_request_timeout_ms,
							2000, 100, 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pool_health.http_allowed_hosts",
							   "Host names and addresses, besides the listen address and loopback ones, that HTTP requests may name in their Host header (comma-separated; * for any).",
							   "Other Host headers are answered 421, so that a web page whose name an attacker points at this server (DNS rebinding) reads nothing.",
							   &ph_http_allowed_hosts,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   ph_http_allowed_hosts_check, ph_http_allowed_hosts_assign, NULL);

	DefineCustomStringVariable("pool_health.agent_listen",
							   "Address (as pool_health.http_listen) on which the HTTP worker answers HAProxy's agent-check: one line per connection (weight, maxconn, drain, down); empty disables.",
							   "Needs pool_health.http_listen. If the address cannot be bound, a WARNING is logged, /health keeps answering and the worker tries again every 10 seconds.",
							   &ph_http_agent_listen,
							   "",
							   PGC_POSTMASTER,
							   0,
							   ph_http_listen_check, NULL, NULL);

	DefineCustomIntVariable("pool_health.max_policies",
							"How many enabled policies the worker can publish to shared memory.",
							NULL,
							&ph_max_policies,
							100, 1, 10000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.audit_memory",
							"How many recent actions the in-memory audit list (pool_health.recent_actions) keeps.",
							"On a hot standby it is the only queryable audit record.",
							&ph_audit_memory,
							500, 0, 100000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.first_query_size",
							"Bytes of the first statement of each transaction that each backend records; 0 disables.",
							"Shown as xact_first_query in pool_health.sessions, leaks and terminations.",
							&ph_first_query_size,
							1024, 0, 1024 * 1024,
							PGC_POSTMASTER,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.max_groups",
							"How many (database, role, application_name) groups the per-application accounting keeps; 0 disables it.",
							"The least recently seen group no session is attached to is folded into (other) to make room.",
							&ph_max_groups,
							256, 0, 10000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.application_history_retention",
							"How long pool_health.application_history keeps its per-minute rows.",
							"Shared memory holds up to 32 rows (208 bytes each) per minute of retention; with more groups active per minute, the history covers less time.",
							&ph_app_history_minutes,
							24 * 60, 10, 31 * 24 * 60,
							PGC_POSTMASTER,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.history_raw_samples",
							"Number of raw samples the history keeps in shared memory.",
							"At the default sample_interval of 1s, 3600 samples are one hour.",
							&ph_history_raw_samples,
							3600, 10, 1000 * 1000,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.history_retention",
							"How long the history keeps per-minute aggregates.",
							NULL,
							&ph_history_minutes,
							7 * 24 * 60, 60, 366 * 24 * 60,
							PGC_POSTMASTER,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
}

static void
define_settings(void)
{
	DefineCustomIntVariable("pool_health.degraded_percent",
							"Connection usage, in percent of the usable slots, at which the level becomes degraded.",
							"Usable slots are max_connections minus the slots reserved for superusers and, from PostgreSQL 16, for pg_use_reserved_connections.",
							&ph_degraded_percent,
							70, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.critical_percent",
							"Connection usage, in percent of the usable slots, at which the level becomes critical.",
							NULL,
							&ph_critical_percent,
							90, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.leak_after",
							"How long a session may stay idle in transaction before it counts as leaked.",
							"A leaked session raises the level to at least degraded.",
							&ph_leak_after_ms,
							60 * 1000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.lock_wait_after",
							"How long a session may wait on a lock before the wait counts in the health level.",
							"Sessions waiting longer are a reason in pool_health.usage, naming the session that blocks them, and raise the level to at least degraded.",
							&ph_lock_wait_after_ms,
							10 * 1000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.sample_interval",
							"How often the pool_health worker samples backend status.",
							NULL,
							&ph_sample_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pool_health.notify_channel",
							   "Channel on which the worker sends NOTIFY for level changes and actions on sessions; empty disables.",
							   NULL,
							   &ph_notify_channel,
							   "pool_health",
							   PGC_SIGHUP,
							   0,
							   check_notify_channel, NULL, NULL);

	DefineCustomEnumVariable("pool_health.enforce",
							 "Whether the worker enforces the policies continuously: on, dry_run (audit only) or off.",
							 "The cleanup functions act whenever they are called, whatever this says.",
							 &ph_enforce,
							 PH_ENFORCE_ON,
							 enforce_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("pool_health.notify_statements",
							 "Whether the NOTIFY sent for each action carries the first statement of the session's transaction and its tags.",
							 "Off by default: any role that can connect to pool_health.database can LISTEN, and would read other roles' statements.",
							 &ph_notify_statements,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("pool_health.protected_roles",
							   "Roles whose sessions pool_health never ends, whatever a policy says (comma-separated).",
							   NULL,
							   &ph_protected_roles,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   check_protected_roles, assign_protected_roles, NULL);

	DefineCustomBoolVariable("pool_health.admission",
							 "Whether new connections are checked against the policies' max_connections and refuse_at.",
							 "Needs the library in shared_preload_libraries.",
							 &ph_admission,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.metrics_top_groups",
							"How many databases, roles and applications pool_health.metrics() labels one by one; the rest are summed in the _other families.",
							"Bounds the number of series a Prometheus scrape creates.",
							&ph_metrics_top_groups,
							10, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.metrics_min_age",
							"How long an application_name must have been accounted for before pool_health.metrics() labels it one by one; 0 labels every one at once.",
							"Younger ones are summed in the _other families, so that a client changing its application_name cannot create series. Its age is that of its oldest group in the per-application accounting (needs the preload).",
							&ph_metrics_min_age_s,
							5 * 60, 0, 7 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pool_health.metrics_application_pattern",
							   "A LIKE pattern of the application_names pool_health.metrics() labels at once, whatever their age; empty: none.",
							   "As the application_name patterns of pool_health.policies: % any string, _ any one character, \\ escapes; case-sensitive.",
							   &ph_metrics_application_pattern,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_metrics_application_pattern, NULL, NULL);

	DefineCustomIntVariable("pool_health.advice_window",
							"How much of the application history pool_health.pool_advice sizes pools from.",
							"At most pool_health.application_history_retention.",
							&ph_advice_window_minutes,
							24 * 60, 1, 31 * 24 * 60,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pool_health.forecast_window",
							"How much recent history pool_health.forecast fits its trend to.",
							NULL,
							&ph_forecast_window_s,
							15 * 60, 10, 7 * 24 * 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* a string: see check_client_pool_size */
	DefineCustomStringVariable("pool_health.client_pool_size",
							   "The most connections the client pool of this session may hold, as its application declares it; 0: not declared.",
							   "Set it in the startup options (options=-c pool_health.client_pool_size=20) or with SET; pool_health.pool_advice shows it as declared_pool_size, and calls a pool saturated only when it was at that size with every connection in a transaction. At login, a value that is not an integer from 0 to 2147483647 is taken as 0, with a WARNING; SET rejects it.",
							   &client_pool_size_text,
							   "0",
							   PGC_USERSET,
							   0,
							   check_client_pool_size, assign_client_pool_size, NULL);
}

void
_PG_init(void)
{
	ph_preloaded = process_shared_preload_libraries_in_progress;
	define_settings();
	if (ph_preloaded)
		define_postmaster_settings();
	MarkGUCPrefixReserved("pool_health");

	if (ph_preloaded)
	{
		ph_shmem_install_hooks();
		ph_admission_install_hook();
		ph_hooks_install();
		ph_worker_register();
		ph_http_register();
	}
}
