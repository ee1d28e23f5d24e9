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
 *		and 404 for anything else, 405 for methods other than GET and HEAD.
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
 * connections for recovery.  Requests are bounded in size (MHD's
 * per-connection memory), number (128, 16 per client address) and time
 * (5 s without progress).
 *
 * Shared state: reads as evaluate.c and health.c do; http_pid and
 * http_requests in PhShared are atomics, written only here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>

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
#include <microhttpd.h>
#endif

#include "compat.h"
#include "pool_health.h"

char	   *ph_http_listen = NULL;

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

/* Limits of the server (bounded memory, connections and time). */
#define HTTP_MAX_CONNECTIONS	128
#define HTTP_TIMEOUT_S			5
#define HTTP_CONNECTION_MEMORY	(32 * 1024)

/* A client address may hold this many of them (slow clients). */
#define HTTP_PER_IP_CONNECTIONS	16
/* An answer is reused for this long at most (floods of health checks). */
#define HTTP_CACHE_MS			100

static MemoryContext request_context = NULL;
static struct MHD_Daemon *daemon_handle = NULL;
static bool daemon_started = false;

/* The endpoints, and the last answer of each (TopMemoryContext). */
typedef enum HttpEndpoint
{
	HTTP_HEALTH,
	HTTP_STATUS,
	HTTP_METRICS,
	HTTP_ENDPOINTS
} HttpEndpoint;

typedef struct HttpAnswer
{
	TimestampTz computed_at;	/* 0: none yet */
	unsigned int status;
	const char *content_type;
	char	   *body;
} HttpAnswer;

static HttpAnswer answers[HTTP_ENDPOINTS];

/* Markers of a request in progress (MHD's *request). */
static int	request_without_body;
static int	request_with_body;

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
	HttpEndpoint endpoint;
	HttpAnswer *result;
	int			reuse_ms = Min(HTTP_CACHE_MS, ph_sample_interval_ms);

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
					   "only GET and HEAD\n");
	if (*request == NULL)
	{
		/* the headers: wait for the end of the request */
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
	if (strcmp(url, "/health") == 0)
		endpoint = HTTP_HEALTH;
	else if (strcmp(url, "/status") == 0)
		endpoint = HTTP_STATUS;
	else if (strcmp(url, "/metrics") == 0)
		endpoint = HTTP_METRICS;
	else
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
	if (daemon_handle != NULL)
		MHD_stop_daemon(daemon_handle);
	daemon_handle = NULL;
	pg_atomic_write_u32(&ph_shared->http_pid, 0);
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

	if (!split_listen(ph_http_listen, &host, &port))
		elog(ERROR, "invalid pool_health.http_listen \"%s\"", ph_http_listen);
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
	daemon_handle = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
									 (addr->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
									 (uint16) atoi(port), NULL, NULL, &answer, NULL,
									 MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
									 MHD_OPTION_SOCK_ADDR, addr->ai_addr,
									 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) HTTP_MAX_CONNECTIONS,
									 MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) HTTP_PER_IP_CONNECTIONS,
									 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) HTTP_TIMEOUT_S,
									 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_CONNECTION_MEMORY,
									 MHD_OPTION_END);
	freeaddrinfo(addr);
	if (daemon_handle == NULL)
		ereport(ERROR,
				(errmsg("pool_health http: could not listen on \"%s\"", ph_http_listen),
				 errhint("Check pool_health.http_listen; the worker tries again in 5 seconds.")));
	on_proc_exit(http_exit, (Datum) 0);
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

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (MHD_get_timeout(daemon_handle, &mhd_timeout) == MHD_YES)
			timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) 1000);
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
