/*-------------------------------------------------------------------------
 *
 * http_internal.h
 *		What the files of the HTTP module (http*.c) share, and nobody else
 *		includes: other modules see http.h only.
 *
 *		http.c				the settings' hooks, the worker's registration,
 *							the module's shared memory (pid, requests)
 *		http_server.c		the HTTP worker: libmicrohttpd opened at run
 *							time, the daemon on the listen address, the
 *							wait loop, the exit
 *		http_connections.c	the table of connections: admission (limits
 *							in all and per client address), deadlines,
 *							slow-reader drains
 *		http_requests.c		a request: target and Host checks, routing,
 *							the cached answers
 *		http_probes.c		what load balancers and orchestrators ask
 *							(/livez, /readyz, /primary, /replica, their
 *							query parameters) and the agent's line, from
 *							one cached set of facts
 *		http_agent.c		the HAProxy agent-check responder
 *							(pool_health.agent_listen): its sockets,
 *							polled by the HTTP worker's loop
 *
 * Everything here but the settings' parsing exists only in a build with
 * libmicrohttpd (PH_HAVE_MICROHTTPD), and only in the HTTP worker's
 * process: the tables are local to it, like everything MHD calls back.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HTTP_INTERNAL_H
#define PH_HTTP_INTERNAL_H

#include <netinet/in.h>
#include <sys/socket.h>

#include "ph_model.h"
#include "http.h"

/* The longest host name a Host header or the allowed list may hold. */
#define HTTP_HOST_MAX			255

/* http.c: the settings, parsed */
extern char ph_http_listen_host[HTTP_HOST_MAX + 1];
extern bool ph_http_canonical_host(const char *text, size_t len, bool ipv6_only,
								   char *out);
extern bool ph_http_host_listed(const char *host);
#ifdef PH_HAVE_MICROHTTPD
extern bool ph_http_split_listen(const char *value, char **host, char **port);
#endif

/* http.c: the shared counters, written by the HTTP worker alone */
extern bool ph_http_shmem_attached(void);
extern void ph_http_set_pid(int pid);
extern void ph_http_count_request(void);
extern void ph_http_count_evaluation(void);

#ifdef PH_HAVE_MICROHTTPD
#include <microhttpd.h>

/*
 * http_server.c: the functions of libmicrohttpd the module calls, through
 * pointers that the worker fills at its start (ph_http_load_microhttpd())
 * from the library it opens (PH_MICROHTTPD_SONAME, from the build: the
 * library the headers came with).  Not linked: backends must not map it.
 */
#define PH_MHD_FUNCTIONS(X) \
	X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_run) X(MHD_get_timeout) \
	X(MHD_get_daemon_info) X(MHD_get_connection_info) \
	X(MHD_get_connection_values_n) X(MHD_lookup_connection_value) \
	X(MHD_create_response_from_buffer) X(MHD_add_response_header) \
	X(MHD_queue_response) X(MHD_destroy_response)
#define PH_MHD_EXTERN(f) extern __typeof__(f) *ph_##f;
PH_MHD_FUNCTIONS(PH_MHD_EXTERN)
#undef PH_MHD_EXTERN

extern void ph_http_load_microhttpd(void);

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
 * http_connections.c: limits of the server (bounded memory, connections
 * and time).
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

/* http_requests.c: the endpoints, from a request target's path */
typedef enum HttpEndpoint
{
	HTTP_HEALTH,
	HTTP_STATUS,
	HTTP_METRICS,
	HTTP_LIVEZ,					/* from here on: http_probes.c */
	HTTP_READYZ,
	HTTP_PRIMARY,
	HTTP_REPLICA,
	HTTP_NOT_FOUND,
	HTTP_ENDPOINTS = HTTP_NOT_FOUND
} HttpEndpoint;

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
 *
 * http_connections.c writes all but the last two fields (a response
 * queued: ph_http_slot_answering()); http_requests.c writes those, from
 * the request target, and reads fd.
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

/* http_connections.c */
extern void ph_http_connections_init(void);
extern void ph_http_connections_exit(void);
extern HttpSlot *ph_http_slot_of(struct MHD_Connection *connection);
extern void ph_http_slot_answering(HttpSlot *slot);
extern long ph_http_close_late_connections(void);
extern void ph_http_notify_connection(void *cls, struct MHD_Connection *connection,
									  void **socket_context,
									  enum MHD_ConnectionNotificationCode toe);
extern void ph_http_request_completed(void *cls, struct MHD_Connection *connection,
									  void **request,
									  enum MHD_RequestTerminationCode toe);

/* http_evaluation.c */
extern const PhEvaluation *ph_http_evaluation(TimestampTz *made_at,
											  const char **error);

/* http_requests.c */
extern void ph_http_requests_init(void);
extern char *ph_http_caught_error(uint32 holdoff, MemoryContext context);
extern void *ph_http_request_target(void *cls, const char *uri,
									struct MHD_Connection *connection);
extern enum MHD_Result ph_http_answer(void *cls, struct MHD_Connection *connection,
									  const char *url, const char *method,
									  const char *version, const char *upload_data,
									  size_t *upload_data_size, void **request);

/* The longest part of a bad parameter's value an error repeats. */
#define PROBE_ECHO_MAX			64

/* The query parameters of a probe, as parsed */
typedef struct ProbeQuery
{
	HttpEndpoint endpoint;
	bool		verbose;
	int			min_free;		/* 1 unless given */
	bool		lag_given;
	bool		lag_is_time;	/* usec, else bytes */
	double		max_lag;
	/* the first bad parameter: its name and what is wrong */
	char		bad_name[PROBE_ECHO_MAX + 1];
	const char *bad_why;
	char		bad_value[PROBE_ECHO_MAX + 1];
	unsigned int seen;			/* bit per parameter: repeated ones */
	char		lag_key[PROBE_ECHO_MAX + 1];	/* lag or max_lag, as given */
} ProbeQuery;

#define PARAM_VERBOSE	0x1
#define PARAM_MIN_FREE	0x2
#define PARAM_MAX_LAG	0x4

/* http_probe_query.c */
extern void ph_http_probe_query(struct MHD_Connection *connection,
								HttpEndpoint endpoint, ProbeQuery *q);

/* http_probes.c: the answer of a probe endpoint (HTTP_LIVEZ and after) */
extern unsigned int ph_http_probe_answer(struct MHD_Connection *connection,
										 HttpEndpoint endpoint, char **body);
extern void ph_http_agent_line(char *line, size_t size, const char *peer);
extern void ph_http_agent_started(void);
extern void ph_http_probe_track(void);

/* http_agent.c, called by the HTTP worker's loop (http_server.c) */
extern void ph_http_agent_start(void);
extern bool ph_http_agent_sockets_changed(void);
extern int	ph_http_agent_sockets(pgsocket *sockets, int max);
extern void ph_http_agent_serve(pgsocket socket);
extern long ph_http_agent_retry_in(void);
extern void ph_http_agent_exit(void);

#endif							/* PH_HAVE_MICROHTTPD */

#endif							/* PH_HTTP_INTERNAL_H */
