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
 *		and 404 for anything else (paths compared byte for byte, after
 *		percent-decoding: /health%00x is 404), 405 for methods other than
 *		GET and HEAD, 421 when the Host header names a host this server is
 *		not (DNS rebinding: see host_allowed()).
 *
 * It uses GNU libmicrohttpd in its external mode: no thread of its own;
 * MHD's epoll descriptor is waited on together with the worker's latch,
 * and MHD_run() answers from this process, so the answers are computed
 * here, from shared memory: one evaluation of backend status made
 * without the catalog (evaluate.c), with the published policies and the
 * worker's state, at most once per 100 ms per endpoint (answers[], local
 * to this process).  It keeps answering when every connection slot is
 * taken, without pool_health.database, on a hot standby, and while the
 * main worker restarts; /health is 503 while the postmaster refuses
 * connections for recovery.
 *
 * Hostile clients: requests are bounded in size (MHD's per-connection
 * memory) and number (HTTP_MAX_CONNECTIONS, HTTP_PER_ADDRESS_CONNECTIONS
 * from one client address, counted here), and each connection in time: it
 * must complete a request within pool_health.http_request_timeout of its
 * accept (or of the end of its previous answer), however slowly it
 * trickles bytes, or it is reset (MHD's own timeout only counts time
 * without a byte); its answer must be taken (written into the socket,
 * whose buffers are small: HTTP_SOCKET_BUFFER) within as long, so that a
 * client that pipelines requests and does not read cannot make the kernel
 * hold answers for it.  At either limit, the oldest connection without a
 * complete request (of that address, at the limit per address), else the
 * one answering longest, gives way to the new one, so that a health check
 * always gets in, also from the address of a client that holds all it
 * may.  A connection closed here is reset, which frees what the kernel
 * holds for it at once; one that MHD closes after its answer (HTTP/1.0,
 * "Connection: close") is kept (drains[]) until its deadline if its
 * client has not taken the answer yet, then closed or reset.  The tables
 * (slots[], drains[]) are local to this process, like everything MHD
 * calls back.
 *
 * libmicrohttpd is loaded by this worker only, with dlopen() at its start
 * (load_microhttpd()), not linked into pool_health: linked, it and the
 * libraries it needs (some of them only it) were mapped into every
 * backend at its fork and unmapped at its exit, about 7 % of the server's
 * CPU per connection (tools/bench admission).  Its calls go through the
 * pointers load_microhttpd() fills.
 *
 * Shared state: reads as evaluate.c and health.c do; http_pid and
 * http_requests in PhShared are atomics, written only here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#ifdef PH_HAVE_MICROHTTPD
#include <dlfcn.h>
#include <microhttpd.h>
#endif

#include "compat.h"
#include "evaluate.h"
#include "health.h"
#include "http.h"
#include "json_writer.h"
#include "metrics.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"

char	   *ph_http_listen = NULL;
int			ph_http_request_timeout_ms = 2000;
char	   *ph_http_allowed_hosts = NULL;

/* The longest host name a Host header or the allowed list may hold. */
#define HTTP_HOST_MAX			255
/* The bytes of a host name in pool_health.http_allowed_hosts */
#define HOST_NAME_CHARS \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"

/*
 * pool_health.http_allowed_hosts, parsed (the setting's "extra"): each
 * name in its canonical form (canonical_host()), one after the other.
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
static bool
canonical_host(const char *text, size_t len, bool ipv6_only, char *out)
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
				ok = canonical_host(start + 1, len - 2, true, host);
			else if (memchr(start, ':', len) != NULL)
				ok = canonical_host(start, len, true, host);
			else
				ok = strspn(start, HOST_NAME_CHARS) >= len &&
					canonical_host(start, len, false, host);
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

#ifdef PH_HAVE_MICROHTTPD
/*
 * Split "host:port" ("[v6]:port", ":port" for every address) into *host
 * (palloc'd, NULL for every address) and *port; false if malformed.
 */
static bool
split_listen(const char *value, char **host, char **port)
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

/* Check hook of pool_health.http_listen. */
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

		if (!split_listen(*newval, &host, &port))
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
		return;
	ph_register_background_worker("pool_health http", "pool_health_http_main",
								  BGWORKER_SHMEM_ACCESS, BgWorkerStart_PostmasterStart, 5);
}

#ifdef PH_HAVE_MICROHTTPD

/*
 * The functions of libmicrohttpd this worker calls, through pointers that
 * load_microhttpd() fills from the library it opens (PH_MICROHTTPD_SONAME,
 * from the build: the library the headers came with).
 */
#ifndef PH_MICROHTTPD_SONAME
#define PH_MICROHTTPD_SONAME "libmicrohttpd.so.12"
#endif
#define PH_MHD_FUNCTIONS(X) \
	X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_run) X(MHD_get_timeout) \
	X(MHD_get_daemon_info) X(MHD_get_connection_info) \
	X(MHD_get_connection_values_n) X(MHD_lookup_connection_value) \
	X(MHD_create_response_from_buffer) X(MHD_add_response_header) \
	X(MHD_queue_response) X(MHD_destroy_response)
#define PH_MHD_POINTER(f) static __typeof__(f) *ph_##f = NULL;
PH_MHD_FUNCTIONS(PH_MHD_POINTER)

/* Open libmicrohttpd and find its functions; ERROR if it cannot. */
static void
load_microhttpd(void)
{
	void	   *library = dlopen(PH_MICROHTTPD_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (library == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FILE),
				 errmsg("pool_health http: could not load \"%s\": %s",
						PH_MICROHTTPD_SONAME, dlerror()),
				 errhint("Install libmicrohttpd (Debian: libmicrohttpd12); the worker tries again in 5 seconds.")));
#define PH_MHD_LOAD(f) \
	if ((ph_##f = (__typeof__(ph_##f)) dlsym(library, #f)) == NULL) \
		ereport(ERROR, \
				(errcode(ERRCODE_UNDEFINED_FUNCTION), \
				 errmsg("pool_health http: \"%s\" has no function %s", \
						PH_MICROHTTPD_SONAME, #f)));
	PH_MHD_FUNCTIONS(PH_MHD_LOAD)
#undef PH_MHD_LOAD
}

/* From here on, every call of libmicrohttpd goes through its pointer. */
#define MHD_start_daemon (*ph_MHD_start_daemon)
#define MHD_stop_daemon (*ph_MHD_stop_daemon)
#define MHD_run (*ph_MHD_run)
#define MHD_get_timeout (*ph_MHD_get_timeout)
#define MHD_get_daemon_info (*ph_MHD_get_daemon_info)
#define MHD_get_connection_info (*ph_MHD_get_connection_info)
#define MHD_get_connection_values_n (*ph_MHD_get_connection_values_n)
#define MHD_lookup_connection_value (*ph_MHD_lookup_connection_value)
#define MHD_create_response_from_buffer (*ph_MHD_create_response_from_buffer)
#define MHD_add_response_header (*ph_MHD_add_response_header)
#define MHD_queue_response (*ph_MHD_queue_response)
#define MHD_destroy_response (*ph_MHD_destroy_response)

/*
 * Limits of the server (bounded memory, connections and time).
 *
 * HTTP_MAX_CONNECTIONS: with the deadline, a client that wants to hold
 * every connection must open HTTP_MAX_CONNECTIONS per
 * pool_health.http_request_timeout (128 a second at the defaults), and
 * even then each new connection makes the oldest unfinished one give way:
 * to keep a health check out it would have to open this many between the
 * check's accept and its request (microseconds).  At most 8 MB of MHD
 * memory (HTTP_CONNECTION_MEMORY each) and 544 descriptors (HTTP_SLOTS
 * connections and as many drained sockets), within a process's usual
 * 1024.
 *
 * HTTP_PER_ADDRESS_CONNECTIONS: 16 open connections from one client
 * address, counted here (not by MHD, which would refuse the 17th: a client
 * that holds 16 would then starve the health checks of every checker
 * behind its address, a load balancer checking through localhost, clients
 * behind one NAT).  At 16, the oldest unfinished connection of that
 * address (else the one of it answering longest) gives way to the new
 * one, as at HTTP_MAX_CONNECTIONS; so one
 * address holds at most 16, it takes 16 addresses to reach
 * HTTP_MAX_CONNECTIONS, and one address alone never makes another's
 * connection give way.
 *
 * HTTP_HEADROOM: MHD accepts up to this many over HTTP_MAX_CONNECTIONS
 * (up to 10 in one round), each one making an older one give way; the
 * table of connections has a slot for each.
 */
#define HTTP_MAX_CONNECTIONS	256
#define HTTP_PER_ADDRESS_CONNECTIONS	16
#define HTTP_HEADROOM			16
#define HTTP_SLOTS				(HTTP_MAX_CONNECTIONS + HTTP_HEADROOM)
/* MHD's own timeout: this long without a byte moving closes a connection */
#define HTTP_IDLE_TIMEOUT_S		5
#define HTTP_CONNECTION_MEMORY	(32 * 1024)

/*
 * HTTP_SOCKET_BUFFER: the kernel's send and receive buffers of each
 * connection (SO_SNDBUF, SO_RCVBUF, which the kernel doubles for its
 * bookkeeping), instead of buffers it grows to megabytes: a client that
 * pipelines requests and never reads the answers fills its connection's
 * send buffer, and then MHD answers no more of them (it reads the next
 * request once the previous answer is written); what it sends meanwhile
 * waits in the receive buffer.  The largest answer, /metrics, is 7 kB on
 * a small server and some tens of kB with many applications: it goes out
 * in one or a few round trips.  With the deadlines (an answer must be
 * taken within pool_health.http_request_timeout, and a connection closed
 * or given way is reset, which frees its buffers), at most 2 x 2 x 32 kB
 * per connection for that long.
 */
#define HTTP_SOCKET_BUFFER		(32 * 1024)

/* An answer is reused for this long at most (floods of health checks). */
#define HTTP_CACHE_MS			100

static MemoryContext request_context = NULL;
static struct MHD_Daemon *daemon_handle = NULL;
static bool daemon_started = false;

/* pool_health.http_listen's host in canonical form, "" for every address */
static char listen_host[HTTP_HOST_MAX + 1];

/* The endpoints, and the last answer of each (TopMemoryContext). */
typedef enum HttpEndpoint
{
	HTTP_HEALTH,
	HTTP_STATUS,
	HTTP_METRICS,
	HTTP_NOT_FOUND,
	HTTP_ENDPOINTS = HTTP_NOT_FOUND
} HttpEndpoint;

typedef struct HttpAnswer
{
	TimestampTz computed_at;	/* 0: none yet */
	unsigned int status;
	const char *content_type;
	char	   *body;
} HttpAnswer;

static HttpAnswer answers[HTTP_ENDPOINTS];

/* A client's address (the per-address limit): IPv4 or IPv6 bytes */
typedef struct HttpAddress
{
	sa_family_t family;			/* AF_INET, AF_INET6; 0 if unknown */
	unsigned char bytes[sizeof(struct in6_addr)];	/* zero-padded */
} HttpAddress;

/*
 * A connection MHD has accepted and not yet closed (its socket_context).
 * A connection is "unfinished" while it has no complete request: from its
 * accept, or from the end of its previous answer, until a response is
 * queued; then "answering" until MHD has written the answer into the
 * socket (the client takes it).  Each phase has a deadline,
 * pool_health.http_request_timeout from its start; at a limit, an
 * unfinished connection gives way first, else the one answering longest.
 */
typedef struct HttpSlot
{
	struct MHD_Connection *connection;	/* NULL: the slot is free */
	int			fd;				/* its socket (MHD's, open until CLOSED) */
	HttpAddress address;		/* its client's */
	TimestampTz since;			/* start of its phase: accept, the end of
								 * the last answer, or the answer queued */
	bool		answering;		/* a response is queued: finished */
	bool		closing;		/* reset here, MHD has yet to close it */
	size_t		target_length;	/* bytes of the request target as received */
	HttpEndpoint endpoint;		/* from the target's path, byte for byte */
} HttpSlot;

static HttpSlot slots[HTTP_SLOTS];
static int	slots_used = 0;		/* slots with a connection */

/*
 * Sockets that MHD closed after an answer (HTTP/1.0, "Connection: close",
 * its own errors) while the client had not yet acknowledged all of it:
 * kept open here through a duplicate of the descriptor until their
 * connection's deadline, then closed (reset, if the answer is still not
 * taken), instead of being left to the kernel, which keeps an orphan's
 * unsent data for minutes while the client does not read.
 */
typedef struct HttpDrain
{
	int			fd;				/* our duplicate; -1: the entry is free */
	TimestampTz deadline;
} HttpDrain;

static HttpDrain drains[HTTP_SLOTS];
static int	drains_used = 0;

/* Markers of a request in progress (MHD's *request). */
static int	request_without_body;
static int	request_with_body;

/* The slot of a connection (NULL if MHD did not tell us of it). */
static HttpSlot *
slot_of(struct MHD_Connection *connection)
{
	const union MHD_ConnectionInfo *info;

	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return info == NULL ? NULL : (HttpSlot *) info->socket_context;
}

/* The address of a connection's client, into *address. */
static void
client_address(struct MHD_Connection *connection, HttpAddress *address)
{
	const union MHD_ConnectionInfo *info;
	const struct sockaddr *addr;

	memset(address, 0, sizeof(*address));
	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info == NULL || (addr = info->client_addr) == NULL)
		return;
	address->family = addr->sa_family;
	if (addr->sa_family == AF_INET)
		memcpy(address->bytes, &((const struct sockaddr_in *) addr)->sin_addr,
			   sizeof(struct in_addr));
	else if (addr->sa_family == AF_INET6)
		memcpy(address->bytes, &((const struct sockaddr_in6 *) addr)->sin6_addr,
			   sizeof(struct in6_addr));
	else
		address->family = 0;
}

static bool
same_address(const HttpAddress *a, const HttpAddress *b)
{
	return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

/*
 * Whether a socket's client has taken what was written into it: all of it
 * sent and acknowledged but for the FIN MHD may have queued after it (the
 * kernel counts it as a byte); false if unknown.
 */
static bool
all_taken(int fd)
{
#ifdef SIOCOUTQ
	int			bytes;

	if (ioctl(fd, SIOCOUTQ, &bytes) == 0)
		return bytes <= 1;
#endif
	return false;
}

/*
 * Make the close of a socket reset the connection: the kernel then frees
 * what is queued in it at once, instead of sending it (after a FIN) for
 * minutes to a client that does not read.
 */
static void
reset_on_close(int fd)
{
	struct linger reset = {1, 0};

	(void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
}

/*
 * Close a connection from outside MHD: reset on close, and shut its
 * socket down, so that MHD, reading or writing it in its next round,
 * finds its end and closes it (there is no call to close a connection MHD
 * is reading a request from).
 */
static void
close_slot(HttpSlot *slot, const char *why)
{
	reset_on_close(slot->fd);
	(void) shutdown(slot->fd, SHUT_RDWR);
	slot->closing = true;
	ereport(DEBUG1,
			(errmsg_internal("pool_health http: reset a connection: %s", why)));
}

/* Close a drained socket: reset if its client has not taken everything. */
static void
close_drain(HttpDrain *drain)
{
	if (!all_taken(drain->fd))
		reset_on_close(drain->fd);
	(void) close(drain->fd);
	drain->fd = -1;
	drains_used--;
}

/*
 * Keep a duplicate of the socket of a connection MHD closes, until
 * deadline.  With every entry taken, the one of the earliest deadline is
 * closed first (reset if its client has not taken everything).
 */
static void
drain_socket(int fd, TimestampTz deadline)
{
	HttpDrain  *entry = NULL;
	int			copy;

	if ((copy = dup(fd)) < 0)
	{
		reset_on_close(fd);		/* no descriptor to spare: reset it now */
		return;
	}
	for (int i = 0; i < HTTP_SLOTS; i++)
	{
		if (drains[i].fd < 0)
		{
			entry = &drains[i];
			break;
		}
		if (entry == NULL || drains[i].deadline < entry->deadline)
			entry = &drains[i];
	}
	if (entry->fd >= 0)
		close_drain(entry);
	entry->fd = copy;
	entry->deadline = deadline;
	drains_used++;
}

/* The deadline of a connection's current phase. */
static inline TimestampTz
slot_deadline(const HttpSlot *slot)
{
	return slot->since + (TimestampTz) ph_http_request_timeout_ms * 1000;
}

/*
 * Reset the connections past their deadline, close the drained sockets
 * past theirs; the milliseconds until the next deadline, -1 if none.
 */
static long
close_late_connections(void)
{
	TimestampTz now;
	TimestampTz next = 0;
	int			seen = 0;

	if (slots_used == 0 && drains_used == 0)
		return -1;
	now = GetCurrentTimestamp();
	for (int i = 0; i < HTTP_SLOTS && seen < slots_used; i++)
	{
		HttpSlot   *slot = &slots[i];
		TimestampTz deadline;

		if (slot->connection == NULL)
			continue;
		seen++;
		if (slot->closing)
			continue;
		deadline = slot_deadline(slot);
		if (now >= deadline)
			close_slot(slot, slot->answering ?
					   "its answer not taken within pool_health.http_request_timeout" :
					   "no complete request within pool_health.http_request_timeout");
		else if (next == 0 || deadline < next)
			next = deadline;
	}
	for (int i = 0; i < HTTP_SLOTS && drains_used > 0; i++)
	{
		if (drains[i].fd < 0)
			continue;
		if (now >= drains[i].deadline)
			close_drain(&drains[i]);
		else if (next == 0 || drains[i].deadline < next)
			next = drains[i].deadline;
	}
	return next == 0 ? -1 : (long) ((next - now + 999) / 1000);
}

/*
 * The connection that gives way to a new one (of the client at address,
 * if not NULL): the oldest unfinished connection, else the one answering
 * longest (a client that does not read its answer); NULL if none.
 */
static HttpSlot *
give_way(const HttpAddress *address)
{
	HttpSlot   *oldest = NULL;

	for (int i = 0; i < HTTP_SLOTS; i++)
	{
		HttpSlot   *slot = &slots[i];

		if (slot->connection == NULL || slot->closing ||
			(address != NULL && !same_address(&slot->address, address)))
			continue;
		if (oldest == NULL ||
			(oldest->answering && !slot->answering) ||
			(oldest->answering == slot->answering && slot->since < oldest->since))
			oldest = slot;
	}
	return oldest;
}

/*
 * MHD_OPTION_NOTIFY_CONNECTION: a connection is accepted or closed.
 *
 * Accepted: with HTTP_PER_ADDRESS_CONNECTIONS open from its client's
 * address, one of that address gives way to it (give_way()); with
 * HTTP_MAX_CONNECTIONS open, one of any.
 *
 * Closed by MHD (not reset here), with an answer its client has not taken
 * yet: drained until the deadline of its last phase, or reset if that is
 * past.
 */
static void
notify_connection(void *cls, struct MHD_Connection *connection,
				  void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info;
		HttpSlot   *slot = NULL;
		HttpAddress address;
		int			open = 0;
		int			from_address = 0;

		info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		client_address(connection, &address);
		for (int i = 0; i < HTTP_SLOTS; i++)
		{
			HttpSlot   *other = &slots[i];

			if (other->connection == NULL)
			{
				if (slot == NULL)
					slot = other;
				continue;
			}
			if (other->closing)
				continue;
			open++;
			if (same_address(&other->address, &address))
				from_address++;
		}
		/* MHD accepts at most HTTP_SLOTS: there is a free slot */
		if (slot == NULL || info == NULL)
			return;
		if (from_address >= HTTP_PER_ADDRESS_CONNECTIONS || open >= HTTP_MAX_CONNECTIONS)
		{
			bool		per_address = from_address >= HTTP_PER_ADDRESS_CONNECTIONS;
			HttpSlot   *victim = give_way(per_address ? &address : NULL);

			/* (one exists: those counted above are candidates) */
			if (victim != NULL)
				close_slot(victim, per_address ?
						   "giving way to a new one, at the limit per client address" :
						   "giving way to a new one, at the connection limit");
		}
		slot->connection = connection;
		slot->fd = info->connect_fd;
		slot->address = address;
		slot->since = GetCurrentTimestamp();
		slot->answering = false;
		slot->closing = false;
		slot->target_length = 0;
		slot->endpoint = HTTP_NOT_FOUND;
		*socket_context = slot;
		slots_used++;
	}
	else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context != NULL)
	{
		HttpSlot   *slot = (HttpSlot *) *socket_context;

		/* MHD closes the socket after this */
		if (!slot->closing && !all_taken(slot->fd))
		{
			TimestampTz deadline = slot_deadline(slot);

			if (GetCurrentTimestamp() >= deadline)
				reset_on_close(slot->fd);
			else
				drain_socket(slot->fd, deadline);
		}
		slot->connection = NULL;
		*socket_context = NULL;
		slots_used--;
	}
}

/*
 * MHD_OPTION_NOTIFY_COMPLETED: the answer is written (or the request ended
 * otherwise); the connection waits for its next request, with a new
 * deadline.
 */
static void
request_completed(void *cls, struct MHD_Connection *connection, void **request,
				  enum MHD_RequestTerminationCode toe)
{
	HttpSlot   *slot = slot_of(connection);

	if (slot != NULL)
	{
		slot->answering = false;
		slot->since = GetCurrentTimestamp();
	}
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: the request target as received, before MHD
 * splits off the query and decodes it in place (which would turn
 * /health%00x into a "/health" C string).  Its path is percent-decoded
 * here with its length, and compared byte for byte with each endpoint.
 * Returns NULL: *request starts NULL in answer().
 */
#define HEX_DIGITS "0123456789abcdefABCDEF"

static void *
request_target(void *cls, const char *uri, struct MHD_Connection *connection)
{
	static const char *const paths[HTTP_ENDPOINTS] = {"/health", "/status", "/metrics"};
	HttpSlot   *slot = slot_of(connection);
	char		path[16];
	size_t		len = 0;

	if (slot == NULL)
		return NULL;
	slot->endpoint = HTTP_NOT_FOUND;
	slot->target_length = uri == NULL ? 0 : strlen(uri);
	if (uri == NULL)
		return NULL;
	for (const char *p = uri; *p != '\0' && *p != '?'; p++)
	{
		char		c = *p;

		if (len == sizeof(path))
			return NULL;		/* longer than every endpoint */
		if (c == '%' && p[1] != '\0' && p[2] != '\0' &&
			strchr(HEX_DIGITS, p[1]) != NULL && strchr(HEX_DIGITS, p[2]) != NULL)
		{
			char		hex[3] = {p[1], p[2], '\0'};

			c = (char) strtol(hex, NULL, 16);
			p += 2;
		}
		path[len++] = c;
	}
	for (int i = 0; i < HTTP_ENDPOINTS; i++)
		if (len == strlen(paths[i]) && memcmp(path, paths[i], len) == 0)
			slot->endpoint = (HttpEndpoint) i;
	return NULL;
}

/*
 * Whether the request's target held a NUL byte, which the target MHD
 * passed to request_target() ended at.  Before 1.0 (which refuses such a
 * request itself), MHD ends the target in the request line it read, at
 * the space before the version, where url and version point.
 */
static bool
target_had_nul(const HttpSlot *slot, const char *url, const char *version)
{
#if MHD_VERSION < 0x00097800
	if (version[0] != '\0' && version > url)
		return slot->target_length != (size_t) (version - 1 - url);
#endif
	return false;
}

/*
 * The header lines of a request, as MHD parsed them, walked in order by
 * check_header() (MHD_get_connection_values_n).
 */
typedef struct HeaderWalk
{
	const char *block;			/* the request's header block, as MHD left it */
	const char *end;			/* its end */
	const char *next;			/* where the next name must start; NULL:
								 * no header seen yet */
	bool		well_formed;
} HeaderWalk;

/*
 * MHD_get_connection_values_n: check one header.  A name holds no blank:
 * "Host : x" (a blank before the colon, which RFC 9112 says to refuse)
 * is a header named "Host " to MHD, and " Host: x" (a first header line
 * starting with a blank) one named " Host", so neither is a Host.
 *
 * Before 0.9.78, MHD parses the header block in place (it writes a NUL
 * over each line end and over each colon), and keeps a value up to its
 * first NUL byte: "Host: localhost\0.attacker.example" is "localhost" to
 * it.  And it appends a folded line (one that starts with a blank) to the
 * previous header's name, in memory of its own.  So each header must lie
 * in the block right after the previous one: its name, the colon, blanks,
 * its value, then the end of its line (one or two NULs) and nothing else.
 * A NUL byte in a line (but for one just before a bare LF, which hides
 * nothing) or a folded line breaks that.  Later versions refuse such
 * requests, or unfold the line, themselves.
 */
static enum MHD_Result
check_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
			 const char *value, size_t value_size)
{
	HeaderWalk *walk = (HeaderWalk *) cls;

	if (key_size == 0 || memchr(key, ' ', key_size) != NULL ||
		memchr(key, '\t', key_size) != NULL)
		walk->well_formed = false;
#if MHD_VERSION < 0x00097800
	else if (key <= walk->block || key + key_size >= walk->end ||
			 (walk->next != NULL ? key != walk->next : key[-1] != '\0'))
		walk->well_formed = false;
	else
	{
		const char *p = key + key_size;
		int			nuls = 0;

		if (value < p || value > walk->end || *p++ != '\0')
			walk->well_formed = false;	/* no colon where the name ends */
		while (p < value && (*p == ' ' || *p == '\t'))
			p++;
		if (p != value)
			walk->well_formed = false;	/* the value is elsewhere */
		for (p = value + value_size; p < walk->end && *p == '\0' && nuls < 2; p++)
			nuls++;
		if (nuls == 0)
			walk->well_formed = false;
		walk->next = p;
	}
#endif
	return walk->well_formed ? MHD_YES : MHD_NO;
}

/*
 * Whether every header line of a request is one MHD read as it is
 * (check_header()); method is where MHD passed it to answer(), the
 * beginning of the request's header block before 0.9.78.
 */
static bool
headers_well_formed(struct MHD_Connection *connection, const char *method)
{
	HeaderWalk	walk;

	walk.block = method;
	walk.end = NULL;
	walk.next = NULL;
	walk.well_formed = true;
#if MHD_VERSION < 0x00097800
	{
		const union MHD_ConnectionInfo *info;

		info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
		if (info == NULL)
			return true;		/* cannot happen while answering */
		walk.end = method + info->header_size;
	}
#endif
	(void) MHD_get_connection_values_n(connection, MHD_HEADER_KIND, check_header, &walk);
#if MHD_VERSION < 0x00097800
	/* after the last header, the empty line, and the block ends */
	if (walk.well_formed && walk.next != NULL)
	{
		const char *p = walk.next;

		for (int nuls = 0; p < walk.end && *p == '\0' && nuls < 2; p++)
			nuls++;
		walk.well_formed = p == walk.end;
	}
#endif
	return walk.well_formed;
}

/* MHD_get_connection_values_n: count the Host headers. */
static enum MHD_Result
count_host(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
		   const char *value, size_t value_size)
{
	if (key_size == 4 && pg_strncasecmp(key, "host", 4) == 0)
		(*(int *) cls)++;
	return MHD_YES;
}

/*
 * Whether a request's Host names this server, against DNS rebinding: a
 * web page whose name an attacker has pointed at this address sends its
 * own name as Host.  Answered: no Host (HTTP/1.0 checkers; a browser
 * always sends one), the listen address, the address the connection
 * reached (the listen address when it is every address), localhost or a
 * loopback address (127/8, ::1), or a name in pool_health.http_allowed_hosts; any port.
 * *status is the answer otherwise: 421, or 400 for a malformed Host or
 * more than one.
 */
static bool
host_allowed(struct MHD_Connection *connection, const HttpSlot *slot,
			 unsigned int *status)
{
	const char *value;
	const char *end;
	const char *port;
	char		host[HTTP_HOST_MAX + 1];
	unsigned char addr[sizeof(struct in6_addr)];
	int			hosts = 0;
	bool		bracketed = false;

	*status = MHD_HTTP_BAD_REQUEST;
	(void) MHD_get_connection_values_n(connection, MHD_HEADER_KIND, count_host, &hosts);
	if (hosts > 1)
		return false;
	value = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	if (value == NULL || value[0] == '\0')
		return true;
	/* host [":" port], the host an IPv6 address in brackets */
	if (value[0] == '[')
	{
		value++;
		end = strchr(value, ']');
		if (end == NULL)
			return false;
		port = end + 1;
		bracketed = true;
	}
	else
	{
		end = value + strcspn(value, ":");
		port = end;
	}
	if (*port == ':')
		port++;
	else if (*port != '\0')
		return false;
	if (strspn(port, "0123456789") != strlen(port) ||
		!canonical_host(value, end - value, bracketed, host))
		return false;

	*status = MHD_HTTP_MISDIRECTED_REQUEST;
	if (allowed_hosts != NULL && allowed_hosts->any)
		return true;
	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
		(inet_pton(AF_INET, host, addr) == 1 && addr[0] == 127))
		return true;
	if (listen_host[0] != '\0' && strcmp(host, listen_host) == 0)
		return true;
	if (allowed_hosts != NULL)
	{
		const char *name = allowed_hosts->names;

		for (int i = 0; i < allowed_hosts->count; i++, name += strlen(name) + 1)
			if (strcmp(host, name) == 0)
				return true;
	}
	/* an address: the one the connection reached? */
	if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
	{
		struct sockaddr_storage local;
		socklen_t	local_len = sizeof(local);
		char		text[HTTP_HOST_MAX + 1];
		char		address[HTTP_HOST_MAX + 1];

		if (getsockname(slot->fd, (struct sockaddr *) &local, &local_len) == 0 &&
			((local.ss_family == AF_INET &&
			  inet_ntop(AF_INET, &((struct sockaddr_in *) &local)->sin_addr, text, sizeof(text)) != NULL) ||
			 (local.ss_family == AF_INET6 &&
			  inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &local)->sin6_addr, text, sizeof(text)) != NULL)) &&
			canonical_host(text, strlen(text), false, address) &&
			strcmp(host, address) == 0)
			return true;
	}
	return false;
}

/*
 * Whether the postmaster refuses connections because the server is in
 * recovery without hot standby (or before it is consistent).
 */
static bool
refusing_connections(void)
{
	return RecoveryInProgress() && !HotStandbyActive();
}

/* The /health body: level, reasons and usage. */
static char *
health_json(const PhEvaluation *eval, bool refusing)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ph_json_open(&buf, NULL, '{');
	ph_json_usage(&buf, &eval->usage);
	ph_json_time(&buf, "at", eval->snap.taken_at);
	ph_json_bool(&buf, "accepting_connections", !refusing);
	if (refusing)
		ph_json_str(&buf, "refusing_because",
					"the server is in recovery and not accepting connections (hot_standby is off, or the standby is not consistent yet)");
	ph_json_close(&buf, '}');
	return buf.data;
}

/* Queue a response with a body copied from text. */
static enum MHD_Result
respond(struct MHD_Connection *connection, unsigned int status,
		const char *content_type, const char *text)
{
	struct MHD_Response *response;
	enum MHD_Result ret;
	HttpSlot   *slot = slot_of(connection);

	/* finished: the answer has its own deadline */
	if (slot != NULL)
	{
		slot->answering = true;
		slot->since = GetCurrentTimestamp();
	}
	response = MHD_create_response_from_buffer(strlen(text), (void *) text,
											   MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ret;
}

/*
 * Compute the answer of an endpoint into answers[endpoint].  An error is a
 * 500, never a longjmp through MHD; interrupts are held, so that a SIGTERM
 * cannot exit from inside MHD_run() (it is served by the wait loop).
 */
static void
compute_answer(HttpEndpoint endpoint, const char *url)
{
	HttpAnswer *result = &answers[endpoint];
	MemoryContext old;
	volatile uint32 holdoff;
	volatile unsigned int status = MHD_HTTP_OK;
	const char *volatile content_type = "application/json";
	char	   *volatile body = NULL;

	HOLD_INTERRUPTS();
	holdoff = InterruptHoldoffCount;
	old = MemoryContextSwitchTo(request_context);
	PG_TRY();
	{
		PhEvaluation eval;

		ph_evaluate(&eval, PH_EVAL_NO_CATALOG);
		if (endpoint == HTTP_HEALTH)
		{
			bool		refusing = refusing_connections();

			body = health_json(&eval, refusing);
			status = eval.usage.level < PH_LEVEL_CRITICAL && !refusing ?
				MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
		}
		else if (endpoint == HTTP_STATUS)
			body = ph_status_json(&eval);
		else
		{
			body = ph_metrics_text(&eval);
			content_type = "text/plain; version=0.0.4; charset=utf-8";
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* as a worker's error recovery would: no lock outlives the error */
		LWLockReleaseAll();
		ConditionVariableCancelSleep();
		InterruptHoldoffCount = holdoff;
		MemoryContextSwitchTo(request_context);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(LOG,
				(errmsg("pool_health http: could not answer %s: %s", url, edata->message)));
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		content_type = "text/plain";
		body = psprintf("%s\n", edata->message);
	}
	PG_END_TRY();
	if (result->body != NULL)
		pfree(result->body);
	result->body = MemoryContextStrdup(TopMemoryContext, body);
	result->status = status;
	result->content_type = content_type;
	result->computed_at = GetCurrentTimestamp();
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_context);
	RESUME_INTERRUPTS();
}

/*
 * Answer one request (called by MHD_run(), in this process).  The answer
 * of an endpoint is computed at most once per HTTP_CACHE_MS (or sample
 * interval, if shorter), so that a flood of checks costs one evaluation
 * per period.
 */
static enum MHD_Result
answer(void *cls, struct MHD_Connection *connection, const char *url,
	   const char *method, const char *version, const char *upload_data,
	   size_t *upload_data_size, void **request)
{
	HttpSlot   *slot = slot_of(connection);
	HttpEndpoint endpoint;
	HttpAnswer *result;
	int			reuse_ms = Min(HTTP_CACHE_MS, ph_sample_interval_ms);

	if (slot == NULL)
		return MHD_NO;			/* cannot happen: close the connection */
	if (*request == NULL)
	{
		unsigned int status;

		/* the headers: as they were sent? whom and what is it for? */
		if (!headers_well_formed(connection, method))
			return respond(connection, MHD_HTTP_BAD_REQUEST, "text/plain",
						   "bad request: a malformed header line (a NUL byte, a blank before the colon or at the start of the line)\n");
		if (!host_allowed(connection, slot, &status))
			return respond(connection, status, "text/plain",
						   status == MHD_HTTP_MISDIRECTED_REQUEST ?
						   "misdirected request: the Host header names no address of this server (see pool_health.http_allowed_hosts)\n" :
						   "bad request: malformed or repeated Host header\n");
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
			return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
						   "only GET and HEAD\n");
		/* wait for the end of the request */
		*request = &request_without_body;
		return MHD_YES;
	}
	if (*upload_data_size != 0)
	{
		/* a body: read it (bounded by MHD's memory limit), answer 400 */
		*request = &request_with_body;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*request == &request_with_body)
		return respond(connection, MHD_HTTP_BAD_REQUEST, "text/plain",
					   "no request body expected\n");
	endpoint = slot->endpoint;
	if (endpoint == HTTP_NOT_FOUND || target_had_nul(slot, url, version))
		return respond(connection, MHD_HTTP_NOT_FOUND, "text/plain",
					   "not found: /health, /status or /metrics\n");

	pg_atomic_fetch_add_u64(&ph_shared->http_requests, 1);
	result = &answers[endpoint];
	if (result->computed_at == 0 ||
		TimestampDifferenceExceeds(result->computed_at, GetCurrentTimestamp(), reuse_ms))
		compute_answer(endpoint, url);
	return respond(connection, result->status, result->content_type, result->body);
}

/*
 * MHD's own messages, into the server log: at LOG while the server starts
 * (why it cannot listen), at DEBUG1 after (a client's bad request must not
 * flood the log).
 */
static void log_mhd(void *cls, const char *format, va_list args) pg_attribute_printf(2, 0);

static void
log_mhd(void *cls, const char *format, va_list args)
{
	char		message[512];
	size_t		len;

	vsnprintf(message, sizeof(message), format, args);
	len = strlen(message);
	while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == '\r'))
		message[--len] = '\0';
	ereport(daemon_started ? DEBUG1 : LOG,
			(errmsg("pool_health http: %s", message)));
}

static void
http_exit(int code, Datum arg)
{
	for (int i = 0; i < HTTP_SLOTS && drains_used > 0; i++)
		if (drains[i].fd >= 0)
		{
			reset_on_close(drains[i].fd);
			close_drain(&drains[i]);
		}
	if (daemon_handle != NULL)
		MHD_stop_daemon(daemon_handle);
	daemon_handle = NULL;
	pg_atomic_write_u32(&ph_shared->http_pid, 0);
}

/*
 * The daemon on one address (flags: MHD_USE_IPv6 or MHD_USE_DUAL_STACK for
 * an IPv6 address), NULL when it cannot listen there.
 */
static struct MHD_Daemon *
start_daemon(unsigned int family_flags, uint16 port, const struct sockaddr *address)
{
	return MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | family_flags,
							port, NULL, NULL, &answer, NULL,
							MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
							MHD_OPTION_SOCK_ADDR, address,
							MHD_OPTION_NOTIFY_CONNECTION, notify_connection, NULL,
							MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							MHD_OPTION_URI_LOG_CALLBACK, request_target, NULL,
							MHD_OPTION_CONNECTION_LIMIT, (unsigned int) HTTP_SLOTS,
							MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) HTTP_IDLE_TIMEOUT_S,
							MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_CONNECTION_MEMORY,
							MHD_OPTION_END);
}

void
pool_health_http_main(Datum arg)
{
	char	   *host;
	char	   *port;
	struct addrinfo hints;
	struct addrinfo *addr;
	int			rc;
	const union MHD_DaemonInfo *info;
	int			epoll_fd;
	uint32		wait_event_cache = 0;
	uint32		wait_event = ph_named_wait_event("PoolHealthHttp", &wait_event_cache);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (ph_shared == NULL)
		elog(ERROR, "pool_health shared memory is not initialized");
	load_microhttpd();

	if (!split_listen(ph_http_listen, &host, &port))
		elog(ERROR, "invalid pool_health.http_listen \"%s\"", ph_http_listen);
	if (host == NULL || !canonical_host(host, strlen(host), false, listen_host))
		listen_host[0] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, port, &hints, &addr)) != 0)
		ereport(ERROR,
				(errmsg("pool_health http: could not resolve \"%s\": %s",
						ph_http_listen, gai_strerror(rc))));

	request_context = AllocSetContextCreate(TopMemoryContext, "pool_health http request",
											ALLOCSET_DEFAULT_SIZES);
	if (host == NULL)
	{
		/*
		 * ":port", every address: IPv6 and IPv4 on one dual-stack socket,
		 * or IPv4 alone where the machine has no IPv6.
		 */
		struct sockaddr_in6 any6;

		memset(&any6, 0, sizeof(any6));
		any6.sin6_family = AF_INET6;
		any6.sin6_addr = in6addr_any;
		any6.sin6_port = htons((uint16) atoi(port));
		daemon_handle = start_daemon(MHD_USE_DUAL_STACK, (uint16) atoi(port), (struct sockaddr *) &any6);
	}
	for (struct addrinfo *a = addr; daemon_handle == NULL && a != NULL; a = a->ai_next)
		daemon_handle = start_daemon(a->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0,
									 (uint16) atoi(port), a->ai_addr);
	freeaddrinfo(addr);
	if (daemon_handle == NULL)
		ereport(ERROR,
				(errmsg("pool_health http: could not listen on \"%s\"", ph_http_listen),
				 errhint("Check pool_health.http_listen; the worker tries again in 5 seconds.")));
	on_proc_exit(http_exit, (Datum) 0);
	for (int i = 0; i < HTTP_SLOTS; i++)
		drains[i].fd = -1;
	/* the buffers of every connection, which inherit them */
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_LISTEN_FD);
	if (info != NULL)
	{
		int			size = HTTP_SOCKET_BUFFER;

		(void) setsockopt(info->listen_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
		(void) setsockopt(info->listen_fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
	info = MHD_get_daemon_info(daemon_handle, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL)
		elog(ERROR, "libmicrohttpd has no epoll descriptor");
	epoll_fd = info->epoll_fd;
	daemon_started = true;
	pg_atomic_write_u32(&ph_shared->http_pid, (uint32) MyProcPid);
	ereport(LOG,
			(errmsg("pool_health http: serving /health, /status and /metrics on %s",
					ph_http_listen)));

	for (;;)
	{
		MHD_UNSIGNED_LONG_LONG mhd_timeout;
		long		timeout = 1000;
		long		deadline;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		deadline = close_late_connections();
		if (MHD_get_timeout(daemon_handle, &mhd_timeout) == MHD_YES)
			timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) 1000);
		if (deadline >= 0)
			timeout = Min(timeout, deadline);
		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								 WL_EXIT_ON_PM_DEATH,
								 epoll_fd, Max(timeout, 1), wait_event);
		ResetLatch(MyLatch);
		MHD_run(daemon_handle);
	}
}

#else							/* !PH_HAVE_MICROHTTPD */

void
pool_health_http_main(Datum arg)
{
	elog(ERROR, "pool_health was built without libmicrohttpd");
}

#endif
