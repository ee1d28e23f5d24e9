/*-------------------------------------------------------------------------
 *
 * http_requests.c
 *		What the HTTP worker answers a request: its target routed to an
 *		endpoint (paths compared byte for byte, after percent-decoding:
 *		/health%00x is 404), its header lines and Host checked, and the
 *		answer computed or reused.
 *
 *			GET /health		200 while healthy or degraded, 503 when critical
 *							or exhausted, or while the postmaster refuses
 *							connections for recovery
 *			GET /status		the JSON of status() (health.c)
 *			GET /metrics	the Prometheus text of metrics() (metrics.c)
 *			GET /livez, /readyz, /primary, /replica: http_probes.c
 *		OPTIONS: on /health and the probes, the status GET would answer
 *		(as Patroni does: HAProxy's "option httpchk OPTIONS /primary"),
 *		on /status and /metrics 204; with Allow and no body.
 *		404 for anything else, 405 for methods other than GET, HEAD and
 *		OPTIONS, 400
 *		for a body, a malformed header line or Host header, 421 when the
 *		Host header names a host this server is not (DNS rebinding: see
 *		host_allowed()).
 *
 * The answers are computed in this process, from the evaluation of the
 * period that every endpoint and probe shares (http_evaluation.c: backend
 * status and the published policies, without the catalog, at most once
 * per 100 ms), once per endpoint and evaluation.  An error while computing
 * one is a 500, never a longjmp through libmicrohttpd.
 *
 * State: answers[] (the last answer of each endpoint, in
 * TopMemoryContext) and request_context, local to the HTTP worker's
 * process; the per-connection fields of HttpSlot it writes
 * (http_internal.h).  In shared memory, the count of requests answered
 * (http.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "health.h"
#include "http.h"
#include "http_internal.h"
#include "json_writer.h"
#include "metrics.h"
#include "rules.h"

/* Where an answer is computed, reset after each */
static MemoryContext request_context = NULL;

/* The last answer of each endpoint (TopMemoryContext). */
typedef struct HttpAnswer
{
	TimestampTz made_from;		/* when the evaluation it was made from was
								 * made (0: none yet) */
	unsigned int status;
	const char *content_type;
	char	   *body;
} HttpAnswer;

static HttpAnswer answers[HTTP_ENDPOINTS];

/* Markers of a request in progress (MHD's *request). */
static int	request_without_body;
static int	request_with_body;

/*
 * MHD_OPTION_URI_LOG_CALLBACK: the request target as received, before MHD
 * splits off the query and decodes it in place (which would turn
 * /health%00x into a "/health" C string).  Its path is percent-decoded
 * here with its length, and compared byte for byte with each endpoint.
 * Returns NULL: *request starts NULL in ph_http_answer().
 */
#define HEX_DIGITS "0123456789abcdefABCDEF"

void *
ph_http_request_target(void *cls, const char *uri, struct MHD_Connection *connection)
{
	static const char *const paths[HTTP_ENDPOINTS] = {
		"/health", "/status", "/metrics", "/livez", "/readyz", "/primary", "/replica"
	};
	HttpSlot   *slot = ph_http_slot_of(connection);
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
 * passed to ph_http_request_target() ended at.  Before 1.0 (which refuses
 * such a request itself), MHD ends the target in the request line it
 * read, at the space before the version, where url and version point.
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
 * (check_header()); method is where MHD passed it to ph_http_answer(),
 * the beginning of the request's header block before 0.9.78.
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
 * loopback address (127/8, ::1), or a name in
 * pool_health.http_allowed_hosts; any port.
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
		!ph_http_canonical_host(value, end - value, bracketed, host))
		return false;

	*status = MHD_HTTP_MISDIRECTED_REQUEST;
	if (ph_http_host_listed(host))
		return true;
	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
		(inet_pton(AF_INET, host, addr) == 1 && addr[0] == 127))
		return true;
	if (ph_http_listen_host[0] != '\0' && strcmp(host, ph_http_listen_host) == 0)
		return true;
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
			ph_http_canonical_host(text, strlen(text), false, address) &&
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

/*
 * Queue a response with a body copied from text; with allow (or for a
 * 405 or 204), an Allow header.
 */
static enum MHD_Result
respond_allow(struct MHD_Connection *connection, unsigned int status,
			  const char *content_type, const char *text, bool allow)
{
	struct MHD_Response *response;
	enum MHD_Result ret;
	HttpSlot   *slot = ph_http_slot_of(connection);

	/* finished: the answer has its own deadline */
	if (slot != NULL)
		ph_http_slot_answering(slot);
	response = MHD_create_response_from_buffer(strlen(text), (void *) text,
											   MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (allow || status == MHD_HTTP_METHOD_NOT_ALLOWED || status == MHD_HTTP_NO_CONTENT)
		MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, OPTIONS");
	ret = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ret;
}

/* Queue a response with a body copied from text. */
static enum MHD_Result
respond(struct MHD_Connection *connection, unsigned int status,
		const char *content_type, const char *text)
{
	return respond_allow(connection, status, content_type, text, false);
}

/*
 * In a PG_CATCH() around an evaluation in this process: recover as a
 * worker's error recovery would (no lock outlives the error), the
 * interrupt holdoff as it was at the PG_TRY() (holdoff), and return the
 * error's message, palloc'd in context, which becomes the current one.
 */
char *
ph_http_caught_error(uint32 holdoff, MemoryContext context)
{
	ErrorData  *edata;

	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	InterruptHoldoffCount = holdoff;
	MemoryContextSwitchTo(context);
	edata = CopyErrorData();
	FlushErrorState();
	return edata->message;
}

/*
 * Compute the answer of an endpoint into answers[endpoint], from eval
 * (made at made_at; NULL: it failed with error).  An error is a 500, never
 * a longjmp through MHD; interrupts are held, so that a SIGTERM cannot
 * exit from inside MHD_run() (it is served by the wait loop).
 */
static void
compute_answer(HttpEndpoint endpoint, const char *url,
			   const PhEvaluation *eval, const char *error, TimestampTz made_at)
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
		if (eval == NULL)
			ereport(ERROR, (errmsg_internal("%s", error)));
		if (endpoint == HTTP_HEALTH)
		{
			bool		refusing = refusing_connections();

			body = health_json(eval, refusing);
			status = ph_rules_healthy(eval->usage.level, refusing) ?
				MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
		}
		else if (endpoint == HTTP_STATUS)
			body = ph_status_json(eval);
		else
		{
			body = ph_metrics_text(eval);
			content_type = "text/plain; version=0.0.4; charset=utf-8";
		}
	}
	PG_CATCH();
	{
		char	   *message = ph_http_caught_error(holdoff, request_context);

		ereport(LOG,
				(errmsg("pool_health http: could not answer %s: %s", url, message)));
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		content_type = "text/plain";
		body = psprintf("%s\n", message);
	}
	PG_END_TRY();
	if (result->body != NULL)
		pfree(result->body);
	result->body = MemoryContextStrdup(TopMemoryContext, body);
	result->status = status;
	result->content_type = content_type;
	result->made_from = made_at;
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_context);
	RESUME_INTERRUPTS();
}

/*
 * Answer one request (called by MHD_run(), in this process).  The answer
 * of an endpoint is computed once per evaluation (http_evaluation.c: one
 * per period for all endpoints and probes), so that a flood of checks
 * costs one evaluation per period.
 */
enum MHD_Result
ph_http_answer(void *cls, struct MHD_Connection *connection, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **request)
{
	HttpSlot   *slot = ph_http_slot_of(connection);
	HttpEndpoint endpoint;
	HttpAnswer *result;
	const PhEvaluation *eval;
	const char *error;
	TimestampTz made_at;
	bool		options;

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
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0 &&
			strcmp(method, MHD_HTTP_METHOD_OPTIONS) != 0)
			return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
						   "only GET, HEAD and OPTIONS\n");
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
					   "not found: /health, /status, /metrics, /livez, /readyz, /primary or /replica\n");

	ph_http_count_request();
	options = strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0;
	if (options && endpoint != HTTP_HEALTH && endpoint < HTTP_LIVEZ)
		return respond(connection, MHD_HTTP_NO_CONTENT, "text/plain", "");
	if (endpoint >= HTTP_LIVEZ)
	{
		char	   *body;
		unsigned int status;
		enum MHD_Result ret;
		MemoryContext old = MemoryContextSwitchTo(request_context);

		/* cheap (the facts are cached): answered from its own parameters */
		status = ph_http_probe_answer(connection, endpoint, &body);
		ret = respond_allow(connection, status, "application/json",
							options ? "" : body, options);
		MemoryContextSwitchTo(old);
		MemoryContextReset(request_context);
		return ret;
	}
	result = &answers[endpoint];
	eval = ph_http_evaluation(&made_at, &error);
	if (result->made_from != made_at)
		compute_answer(endpoint, url, eval, error, made_at);
	return respond_allow(connection, result->status, result->content_type,
						 options ? "" : result->body, options);
}

/* At the worker's start, before the daemon: the memory of one answer. */
void
ph_http_requests_init(void)
{
	request_context = AllocSetContextCreate(TopMemoryContext, "pool_health http request",
											ALLOCSET_DEFAULT_SIZES);
}

#endif							/* PH_HAVE_MICROHTTPD */
