/*-------------------------------------------------------------------------
 *
 * http_server.c
 *		The HTTP worker's process (pool_health_http_main): it opens
 *		libmicrohttpd, starts its daemon on pool_health.http_listen and
 *		waits; at its exit, it stops the daemon and closes what it drains.
 *
 * It uses GNU libmicrohttpd in its external mode: no thread of its own;
 * MHD's epoll descriptor is waited on together with the worker's latch,
 * and MHD_run() answers from this process (http_requests.c), so that
 * /health keeps answering when every connection slot is taken, without
 * pool_health.database, on a hot standby, and while the main worker
 * restarts.  Between rounds, the loop resets the connections past their
 * deadline (http_connections.c) and wakes for the next one.
 *
 * libmicrohttpd is loaded by this worker only, with dlopen() at its start
 * (ph_http_load_microhttpd()), not linked into pool_health: linked, it
 * and the libraries it needs (some of them only it) were mapped into
 * every backend at its fork and unmapped at its exit, about 7 % of the
 * server's CPU per connection (tools/bench admission).  Its calls go
 * through the pointers ph_http_load_microhttpd() fills (http_internal.h).
 *
 * The same loop serves the HAProxy agent-check (http_agent.c): its
 * listening sockets are in the wait set with MHD's descriptor.  On a
 * standby the loop wakes at least every PH_HTTP_TRACK_MS to note whether
 * replay is caught up (http_probes.c: the lag as an interval).
 *
 * State: the daemon (daemon_handle), local to this process; in shared
 * memory, the worker's pid (http.c), set once it listens and cleared at
 * its exit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "http.h"

#ifdef PH_HAVE_MICROHTTPD

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "compat.h"
#include "http_internal.h"

#ifndef PH_MICROHTTPD_SONAME
#define PH_MICROHTTPD_SONAME "libmicrohttpd.so.12"
#endif

/* The functions of libmicrohttpd (http_internal.h), NULL until loaded. */
#define PH_MHD_POINTER(f) __typeof__(ph_##f) ph_##f = NULL;
PH_MHD_FUNCTIONS(PH_MHD_POINTER)
#undef PH_MHD_POINTER

/* Open libmicrohttpd and find its functions; ERROR if it cannot. */
void
ph_http_load_microhttpd(void)
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

static struct MHD_Daemon *daemon_handle = NULL;
static bool daemon_started = false;

/* The user_data of the agent's sockets in the loop's wait set */
static int	agent_marker;

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
	ph_http_agent_exit();
	ph_http_connections_exit();
	if (daemon_handle != NULL)
		MHD_stop_daemon(daemon_handle);
	daemon_handle = NULL;
	ph_http_set_pid(0);
}

/*
 * The daemon on one address (flags: MHD_USE_IPv6 or MHD_USE_DUAL_STACK for
 * an IPv6 address), NULL when it cannot listen there.
 */
static struct MHD_Daemon *
start_daemon(unsigned int family_flags, uint16 port, const struct sockaddr *address)
{
	return MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | family_flags,
							port, NULL, NULL, &ph_http_answer, NULL,
							MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
							MHD_OPTION_SOCK_ADDR, address,
							MHD_OPTION_NOTIFY_CONNECTION, ph_http_notify_connection, NULL,
							MHD_OPTION_NOTIFY_COMPLETED, ph_http_request_completed, NULL,
							MHD_OPTION_URI_LOG_CALLBACK, ph_http_request_target, NULL,
							MHD_OPTION_CONNECTION_LIMIT, (unsigned int) HTTP_SLOTS,
							MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) HTTP_IDLE_TIMEOUT_S,
							MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_CONNECTION_MEMORY,
							MHD_OPTION_END);
}

/*
 * What the loop waits on: the latch, the postmaster's death, MHD's epoll
 * descriptor and the agent's listening sockets (user_data non-NULL).
 */
#define HTTP_WAIT_EVENTS		16

/* On a standby, the loop looks at replay at least this often */
#define PH_HTTP_TRACK_MS		100

static WaitEventSet *
wait_set(int epoll_fd)
{
	pgsocket	agent[HTTP_WAIT_EVENTS - 3];
	int			nagent = ph_http_agent_sockets(agent, lengthof(agent));
	WaitEventSet *set = ph_create_wait_event_set(3 + nagent);

	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, epoll_fd, NULL, NULL);
	for (int i = 0; i < nagent; i++)
		AddWaitEventToSet(set, WL_SOCKET_READABLE, agent[i], NULL, &agent_marker);
	return set;
}

/*
 * The HTTP worker (registered by ph_http_register()): libmicrohttpd, the
 * daemon on pool_health.http_listen, then the loop, which waits on MHD's
 * epoll descriptor and the latch until the next deadline and lets MHD
 * answer what came.  An error before it listens ends the worker, which
 * the postmaster starts again 5 seconds later.
 */
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
	WaitEventSet *set;
	uint32		wait_event_cache = 0;
	uint32		wait_event = ph_named_wait_event("PoolHealthHttp", &wait_event_cache);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (!ph_http_shmem_attached())
		elog(ERROR, "pool_health shared memory is not initialized");
	ph_http_load_microhttpd();

	if (!ph_http_split_listen(ph_http_listen, &host, &port))
		elog(ERROR, "invalid pool_health.http_listen \"%s\"", ph_http_listen);
	if (host == NULL ||
		!ph_http_canonical_host(host, strlen(host), false, ph_http_listen_host))
		ph_http_listen_host[0] = '\0';
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((rc = getaddrinfo(host, port, &hints, &addr)) != 0)
		ereport(ERROR,
				(errmsg("pool_health http: could not resolve \"%s\": %s",
						ph_http_listen, gai_strerror(rc))));

	ph_http_requests_init();
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
	ph_http_connections_init();
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
	ph_http_set_pid(MyProcPid);
	ereport(LOG,
			(errmsg("pool_health http: serving /health, /status, /metrics, /livez, /readyz, /primary and /replica on %s",
					ph_http_listen)));
	ph_http_agent_start();
	(void) ph_http_agent_sockets_changed();
	set = wait_set(epoll_fd);

	for (;;)
	{
		MHD_UNSIGNED_LONG_LONG mhd_timeout;
		long		timeout = 1000;
		long		deadline;
		long		retry;
		WaitEvent	events[HTTP_WAIT_EVENTS];
		int			nevents;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		deadline = ph_http_close_late_connections();
		if (MHD_get_timeout(daemon_handle, &mhd_timeout) == MHD_YES)
			timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) 1000);
		if (deadline >= 0)
			timeout = Min(timeout, deadline);
		retry = ph_http_agent_retry_in();
		if (retry >= 0)
			timeout = Min(timeout, retry);
		/* a standby: how long replay has been behind (http_probes.c) */
		ph_http_probe_track();
		if (RecoveryInProgress())
			timeout = Min(timeout, PH_HTTP_TRACK_MS);
		if (ph_http_agent_sockets_changed())
		{
			FreeWaitEventSet(set);
			set = wait_set(epoll_fd);
		}
		nevents = WaitEventSetWait(set, Max(timeout, 1), events, lengthof(events),
								   wait_event);
		ResetLatch(MyLatch);
		for (int i = 0; i < nevents; i++)
			if (events[i].user_data == &agent_marker &&
				(events[i].events & WL_SOCKET_READABLE))
				ph_http_agent_serve(events[i].fd);
		MHD_run(daemon_handle);
	}
}

#else							/* !PH_HAVE_MICROHTTPD */

/* Not registered (the setting refuses a value), but the symbol exists. */
void
pool_health_http_main(Datum arg)
{
	elog(ERROR, "pool_health was built without libmicrohttpd");
}

#endif							/* PH_HAVE_MICROHTTPD */
