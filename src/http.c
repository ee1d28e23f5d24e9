/*-------------------------------------------------------------------------
 *
 * http.c
 *		Health over HTTP, without a connection slot.  With
 *		pool_health.http_listen set, a second background worker, connected
 *		to no database, serves
 *			GET /health		200 while healthy or degraded, 503 when critical
 *							or exhausted; JSON: level, reasons, usage
 *			GET /status		the JSON of status() (top_consumers by
 *							application_name only: database and role names
 *							need the catalog)
 *			GET /metrics	the Prometheus text of metrics() (without the
 *							per-database and per-role families)
 *			GET /livez, /readyz, /primary, /replica	for load balancers
 *							and orchestrators (http_probes.c)
 *		and 404 for anything else, 405 for methods other than GET, HEAD and
 *		OPTIONS, 421 when the Host header names a host this server is not;
 *		with pool_health.agent_listen, the HAProxy agent-check responder
 *		(http_agent.c) in the same worker.
 *
 * This file is the module's face to the rest of pool_health: the
 * settings' check and assign hooks (pool_health.http_listen,
 * pool_health.http_allowed_hosts, parsed here for the worker), the
 * worker's registration, and the module's shared memory.  The worker is
 * http_server.c (its process, libmicrohttpd, the wait loop),
 * http_connections.c (the table of connections, their limits and
 * deadlines), http_requests.c (what a request is answered),
 * http_probes.c and http_agent.c (the probes and HAProxy's agent-check)
 * and http_evaluation.c (the one evaluation per period they all answer
 * from); http_internal.h is what they share.
 *
 * State: the parsed allowed hosts (this process's, the setting's "extra")
 * and the listen host (the worker's, set at its start); in shared memory
 * ("pool_health http", PhHttpShared below) the worker's pid and the counts
 * of requests it answered and evaluations it made, atomics written by the worker alone and read
 * without a lock by status().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "compat.h"
#include "http.h"
#include "http_internal.h"
#include "worker.h"

char	   *ph_http_listen = NULL;
int			ph_http_request_timeout_ms = 2000;
char	   *ph_http_allowed_hosts = NULL;
char	   *ph_http_agent_listen = NULL;

/* pool_health.http_listen's host in canonical form, "" for every address */
char		ph_http_listen_host[HTTP_HOST_MAX + 1];

/* The bytes of a host name in pool_health.http_allowed_hosts */
#define HOST_NAME_CHARS \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"

/*
 * pool_health.http_allowed_hosts, parsed (the setting's "extra"): each
 * name in its canonical form (ph_http_canonical_host()), one after the
 * other.
 */
typedef struct AllowedHosts
{
	bool		any;			/* "*" is listed: every Host is answered */
	int			count;
	char		names[FLEXIBLE_ARRAY_MEMBER];	/* count NUL-terminated names */
} AllowedHosts;

static AllowedHosts *allowed_hosts = NULL;

/*
 * The canonical form of a host (len bytes at text, no port, no brackets)
 * into out (HTTP_HOST_MAX + 1 bytes): an IPv4 address as inet_ntop writes
 * it, also when written as an IPv4-mapped IPv6 address; an IPv6 address as
 * inet_ntop writes it; a name in lower case (ASCII), without one trailing
 * dot.  False if it is empty, too long, or must be an IPv6 address
 * (ipv6_only) and is not.
 */
bool
ph_http_canonical_host(const char *text, size_t len, bool ipv6_only, char *out)
{
	char		copy[HTTP_HOST_MAX + 1];
	unsigned char addr[sizeof(struct in6_addr)];

	if (len == 0 || len > HTTP_HOST_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		copy[i] = pg_ascii_tolower((unsigned char) text[i]);
	copy[len] = '\0';
	if (!ipv6_only && inet_pton(AF_INET, copy, addr) == 1)
		return inet_ntop(AF_INET, addr, out, HTTP_HOST_MAX + 1) != NULL;
	if (inet_pton(AF_INET6, copy, addr) == 1)
	{
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *) addr))
			return inet_ntop(AF_INET, addr + 12, out, HTTP_HOST_MAX + 1) != NULL;
		return inet_ntop(AF_INET6, addr, out, HTTP_HOST_MAX + 1) != NULL;
	}
	if (ipv6_only)
		return false;
	if (len > 1 && copy[len - 1] == '.')
		copy[--len] = '\0';
	memcpy(out, copy, len + 1);
	return true;
}

/*
 * Check hook of pool_health.http_allowed_hosts: a comma-separated list of
 * host names and addresses (IPv6 with or without brackets), without a
 * port; "*" alone answers every Host.
 */
bool
ph_http_allowed_hosts_check(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	AllowedHosts *parsed;
	StringInfoData names;		/* the canonical names, NUL after each */
	char		host[HTTP_HOST_MAX + 1];
	int			count = 0;
	bool		any = false;

	/* a canonical form can be longer than the text (an IPv6 address) */
	initStringInfo(&names);
	for (;;)
	{
		const char *start;
		size_t		len;
		bool		ok;

		while (*p == ' ' || *p == '\t')
			p++;
		start = p;
		while (*p != '\0' && *p != ',')
			p++;
		len = p - start;
		while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
			len--;
		if (len == 0 && *p == '\0' && start == *newval + strspn(*newval, " \t"))
			break;				/* an empty or blank list */
		if (len == 1 && start[0] == '*')
			any = true;
		else
		{
			if (len >= 2 && start[0] == '[' && start[len - 1] == ']')
				ok = ph_http_canonical_host(start + 1, len - 2, true, host);
			else if (memchr(start, ':', len) != NULL)
				ok = ph_http_canonical_host(start, len, true, host);
			else
				ok = strspn(start, HOST_NAME_CHARS) >= len &&
					ph_http_canonical_host(start, len, false, host);
			if (!ok)
			{
				GUC_check_errdetail("\"%.*s\" is not a host name or address.",
									(int) Min(len, HTTP_HOST_MAX), start);
				GUC_check_errhint("List host names or addresses, without a port (the port of a Host header is not compared), separated by commas; * alone allows every host.");
				pfree(names.data);
				return false;
			}
			appendBinaryStringInfo(&names, host, strlen(host) + 1);
			count++;
		}
		if (*p == '\0')
			break;
		p++;					/* the comma */
	}
	parsed = ph_guc_malloc(offsetof(AllowedHosts, names) + names.len);
	if (parsed == NULL)
		return false;
	parsed->any = any;
	parsed->count = count;
	memcpy(parsed->names, names.data, names.len);
	pfree(names.data);
	*extra = parsed;
	return true;
}

void
ph_http_allowed_hosts_assign(const char *newval, void *extra)
{
	allowed_hosts = (AllowedHosts *) extra;
}

/*
 * Whether pool_health.http_allowed_hosts lets a Host header name host (in
 * canonical form): "*" is listed, or host is.
 */
bool
ph_http_host_listed(const char *host)
{
	const char *name;

	if (allowed_hosts == NULL)
		return false;
	if (allowed_hosts->any)
		return true;
	name = allowed_hosts->names;
	for (int i = 0; i < allowed_hosts->count; i++, name += strlen(name) + 1)
		if (strcmp(host, name) == 0)
			return true;
	return false;
}

#ifdef PH_HAVE_MICROHTTPD
/*
 * Split "host:port" ("[v6]:port", ":port" for every address) into *host
 * (palloc'd, NULL for every address) and *port; false if malformed.
 */
bool
ph_http_split_listen(const char *value, char **host, char **port)
{
	const char *colon;
	char	   *end;
	long		number;

	if (value[0] == '[')
	{
		const char *close = strchr(value, ']');

		if (close == NULL || close == value + 1 || close[1] != ':')
			return false;
		*host = pnstrdup(value + 1, close - value - 1);
		colon = close + 1;
	}
	else
	{
		colon = strrchr(value, ':');
		if (colon == NULL)
			return false;
		*host = colon == value ? NULL : pnstrdup(value, colon - value);
	}
	*port = pstrdup(colon + 1);
	if (strspn(*port, "0123456789") != strlen(*port) || strlen(*port) > 5)
		return false;
	errno = 0;
	number = strtol(*port, &end, 10);
	if (end == *port || *end != '\0' || errno != 0 || number < 1 || number > 65535)
		return false;
	return true;
}
#endif

/* Check hook of pool_health.http_listen and pool_health.agent_listen. */
bool
ph_http_listen_check(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
#ifndef PH_HAVE_MICROHTTPD
	GUC_check_errdetail("pool_health was built without libmicrohttpd.");
	GUC_check_errhint("Install libmicrohttpd-dev, build and install pool_health again.");
	return false;
#else
	{
		char	   *host;
		char	   *port;

		if (!ph_http_split_listen(*newval, &host, &port))
		{
			GUC_check_errdetail("The value must be host:port, [IPv6 address]:port or :port, with a port from 1 to 65535.");
			return false;
		}
	}
	return true;
#endif
}

/* From _PG_init, when preloaded and pool_health.http_listen is set. */
void
ph_http_register(void)
{
	if (ph_http_listen == NULL || ph_http_listen[0] == '\0')
	{
		if (ph_http_agent_listen != NULL && ph_http_agent_listen[0] != '\0')
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pool_health.agent_listen is ignored: pool_health.http_listen is empty"),
					 errhint("The HTTP worker serves the agent: set pool_health.http_listen too.")));
		return;
	}
	ph_register_background_worker("pool_health http", "pool_health_http_main",
								  BGWORKER_SHMEM_ACCESS, BgWorkerStart_PostmasterStart, 5);
}

/*
 * The module's shared memory: what status() shows of the HTTP worker.
 * Every field is an atomic written by that worker alone and read without a
 * lock (each is one value: nothing is read together with the other).
 */
typedef struct PhHttpShared
{
	pg_atomic_uint32 pid;		/* the HTTP worker's, 0 if none: written at
								 * its start and at its exit */
	pg_atomic_uint64 requests;	/* requests it answered (routed to an
								 * endpoint) since the server started */
	pg_atomic_uint64 evaluations;	/* evaluations it made to answer them
									 * (http_evaluation.c) */
} PhHttpShared;

static PhHttpShared *http_shared = NULL;

/* From shmem.c's shmem_request_hook. */
void
ph_http_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PhHttpShared)));
}

/* From shmem.c's shmem_startup_hook, under AddinShmemInitLock. */
void
ph_http_shmem_startup(void)
{
	bool		found;

	http_shared = ShmemInitStruct("pool_health http", sizeof(PhHttpShared), &found);
	if (!found)
	{
		pg_atomic_init_u32(&http_shared->pid, 0);
		pg_atomic_init_u64(&http_shared->requests, 0);
		pg_atomic_init_u64(&http_shared->evaluations, 0);
	}
}

/* Whether this process has the module's shared memory (preloaded). */
bool
ph_http_shmem_attached(void)
{
	return http_shared != NULL;
}

/* The HTTP worker's pid, 0 if none (or without the preload). */
int
ph_http_worker_pid(void)
{
	return http_shared == NULL ? 0 : (int) pg_atomic_read_u32(&http_shared->pid);
}

/* The requests the HTTP worker answered (0 without the preload). */
uint64
ph_http_requests_answered(void)
{
	return http_shared == NULL ? 0 : pg_atomic_read_u64(&http_shared->requests);
}

/* The evaluations the HTTP worker made (0 without the preload). */
uint64
ph_http_evaluations_made(void)
{
	return http_shared == NULL ? 0 : pg_atomic_read_u64(&http_shared->evaluations);
}

/* The HTTP worker, at its start (its pid) and its exit (0). */
void
ph_http_set_pid(int pid)
{
	pg_atomic_write_u32(&http_shared->pid, (uint32) pid);
}

/* The HTTP worker, for each request routed to an endpoint. */
void
ph_http_count_request(void)
{
	pg_atomic_fetch_add_u64(&http_shared->requests, 1);
}

/* The HTTP worker, for each evaluation it makes. */
void
ph_http_count_evaluation(void)
{
	pg_atomic_fetch_add_u64(&http_shared->evaluations, 1);
}
