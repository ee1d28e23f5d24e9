/*-------------------------------------------------------------------------
 *
 * http_agent.c
 *		The HAProxy agent-check responder (pool_health.agent_listen), in
 *		the HTTP worker's process: plain-TCP listening sockets that the
 *		worker's loop (http_server.c) waits on with MHD's, and answers
 *		each connection with one line (http_probes.c) and closes it.
 *
 * It never waits on a client: what a client sent by then (HAProxy's
 * agent-send text, or garbage) is read without blocking, at most
 * AGENT_DRAIN_BYTES, and ignored; a client that sends nothing gets its
 * line all the same.  At most AGENT_ACCEPTS_PER_ROUND connections per
 * socket and round, so that a flood of connections leaves the loop to
 * answer /health between rounds; the rest wait in the kernel's backlog.
 * The line comes from the facts the probes share, computed at most once
 * per 100 ms.
 *
 * When the address cannot be bound (in use, not local), a WARNING, and
 * the worker tries again every AGENT_RETRY_MS; /health answers meanwhile.
 * The address of pool_health.http_listen itself is refused at the start
 * with a WARNING, and never tried.  When accept() fails other than for
 * want of a connection (EMFILE: out of descriptors), the sockets leave
 * the loop's wait set for AGENT_PAUSE_MS (a listening socket with a
 * connection waiting stays readable: the loop would spin), with a LOG
 * the first time.
 *
 * State: the listening sockets, the retry and pause times, local to the
 * HTTP worker's process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libpq/pqcomm.h"
#include "utils/timestamp.h"

#include "backend_snapshot.h"
#include "http.h"
#include "http_internal.h"

#define AGENT_MAX_SOCKETS		8
#define AGENT_BACKLOG			128
#define AGENT_ACCEPTS_PER_ROUND 64
#define AGENT_DRAIN_BYTES		4096
#define AGENT_RETRY_MS			10000
#define AGENT_LINE_SIZE			128
#define AGENT_PAUSE_MS			100

static pgsocket sockets[AGENT_MAX_SOCKETS];
static int	nsockets = 0;
static bool changed = false;	/* sockets opened since the loop asked */
static TimestampTz next_try = 0;	/* 0: no (more) try to make */
static bool warned = false;		/* the WARNING of a failure was logged */
static TimestampTz paused_until = 0;	/* 0: the sockets are waited on */
static bool accept_logged = false;	/* the LOG of an accept() failure */

/* A listening socket on one address, PGINVALID_SOCKET (errno) if none */
static pgsocket
listen_on(int family, const struct sockaddr *address, socklen_t length, bool dual_stack)
{
	int			one = 1;
	int			zero = 0;
	pgsocket	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == PGINVALID_SOCKET)
		return fd;
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6)
		(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY,
						  dual_stack ? &zero : &one, sizeof(int));
	if (bind(fd, address, length) != 0 || listen(fd, AGENT_BACKLOG) != 0)
	{
		int			save_errno = errno;

		close(fd);
		errno = save_errno;
		return PGINVALID_SOCKET;
	}
	return fd;
}

/* Open the sockets of pool_health.agent_listen; on failure, plan a retry */
static void
try_listen(void)
{
	char	   *host;
	char	   *port;
	struct addrinfo hints;
	struct addrinfo *addr;
	int			rc;
	int			failure = 0;

	next_try = 0;
	if (!ph_http_split_listen(ph_http_agent_listen, &host, &port))
		return;					/* cannot happen: the check hook refused it */
	if (host == NULL)
	{
		/* ":port": IPv6 and IPv4 on one socket, else IPv4 alone */
		struct sockaddr_in6 any6;
		struct sockaddr_in any4;

		memset(&any6, 0, sizeof(any6));
		any6.sin6_family = AF_INET6;
		any6.sin6_addr = in6addr_any;
		any6.sin6_port = htons((uint16) atoi(port));
		sockets[0] = listen_on(AF_INET6, (struct sockaddr *) &any6, sizeof(any6), true);
		if (sockets[0] == PGINVALID_SOCKET)
		{
			memset(&any4, 0, sizeof(any4));
			any4.sin_family = AF_INET;
			any4.sin_addr.s_addr = htonl(INADDR_ANY);
			any4.sin_port = htons((uint16) atoi(port));
			sockets[0] = listen_on(AF_INET, (struct sockaddr *) &any4, sizeof(any4), false);
		}
		if (sockets[0] != PGINVALID_SOCKET)
			nsockets = 1;
		else
			failure = errno;
	}
	else
	{
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if ((rc = getaddrinfo(host, port, &hints, &addr)) != 0)
		{
			if (!warned)
				ereport(WARNING,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("pool_health agent: could not resolve \"%s\": %s",
								ph_http_agent_listen, gai_strerror(rc)),
						 errdetail("HAProxy's agent-check gets no answer; /health is served all the same."),
						 errhint("Check pool_health.agent_listen; the worker tries again every %d seconds.",
								 AGENT_RETRY_MS / 1000)));
			warned = true;
			next_try = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), AGENT_RETRY_MS);
			return;
		}
		for (struct addrinfo *a = addr; a != NULL && nsockets < AGENT_MAX_SOCKETS; a = a->ai_next)
		{
			pgsocket	fd = listen_on(a->ai_family, a->ai_addr, a->ai_addrlen, false);

			if (fd != PGINVALID_SOCKET)
				sockets[nsockets++] = fd;
			else
				failure = errno;
		}
		freeaddrinfo(addr);
	}
	if (nsockets == 0)
	{
		errno = failure;
		if (!warned)
			ereport(WARNING,
					(errcode_for_socket_access(),
					 errmsg("pool_health agent: could not listen on \"%s\": %m",
							ph_http_agent_listen),
					 errdetail("HAProxy's agent-check gets no answer; /health is served all the same."),
					 errhint("Check pool_health.agent_listen (is another program on that port?); the worker tries again every %d seconds.",
							 AGENT_RETRY_MS / 1000)));
		warned = true;
		next_try = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), AGENT_RETRY_MS);
		return;
	}
	changed = true;
	ereport(LOG,
			(errmsg("pool_health agent: answering HAProxy's agent-check on %s",
					ph_http_agent_listen)));
}

/*
 * Whether pool_health.agent_listen names the address and port of
 * pool_health.http_listen (the same text, or the same host once
 * canonical): the agent cannot listen there, ever.
 */
static bool
same_as_http_listen(void)
{
	char	   *agent_host;
	char	   *agent_port;
	char	   *http_host;
	char	   *http_port;
	char		agent_canon[HTTP_HOST_MAX + 1];
	char		http_canon[HTTP_HOST_MAX + 1];

	if (!ph_http_split_listen(ph_http_agent_listen, &agent_host, &agent_port) ||
		!ph_http_split_listen(ph_http_listen, &http_host, &http_port) ||
		atoi(agent_port) != atoi(http_port))
		return false;
	if (agent_host == NULL || http_host == NULL)
		return agent_host == NULL && http_host == NULL;
	if (strcmp(agent_host, http_host) == 0)
		return true;
	return ph_http_canonical_host(agent_host, strlen(agent_host), false, agent_canon) &&
		ph_http_canonical_host(http_host, strlen(http_host), false, http_canon) &&
		strcmp(agent_canon, http_canon) == 0;
}

/* At the worker's start, once the HTTP daemon listens. */
void
ph_http_agent_start(void)
{
	if (ph_http_agent_listen == NULL || ph_http_agent_listen[0] == '\0')
		return;
	if (same_as_http_listen())
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pool_health agent: pool_health.agent_listen \"%s\" is the address of pool_health.http_listen \"%s\"",
						ph_http_agent_listen, ph_http_listen),
				 errdetail("HAProxy's agent-check gets no answer; /health is served all the same."),
				 errhint("Give pool_health.agent_listen another port, and restart the server.")));
		return;
	}
	ph_http_agent_started();
	try_listen();
}

/*
 * Milliseconds until the next try to listen (the loop waits no longer;
 * a try made when due), -1 when none is planned.
 */
long
ph_http_agent_retry_in(void)
{
	long		secs;
	int			usecs;

	if (paused_until != 0)
	{
		if (GetCurrentTimestamp() < paused_until)
		{
			TimestampDifference(GetCurrentTimestamp(), paused_until, &secs, &usecs);
			return secs * 1000 + usecs / 1000;
		}
		paused_until = 0;		/* wait on the sockets again */
		changed = true;
	}
	if (next_try == 0)
		return -1;
	if (GetCurrentTimestamp() >= next_try)
	{
		try_listen();
		if (next_try == 0)
			return -1;
	}
	TimestampDifference(GetCurrentTimestamp(), next_try, &secs, &usecs);
	return secs * 1000 + usecs / 1000;
}

/*
 * Whether sockets were opened, or paused or resumed, since the last call
 * (the loop's wait set).
 */
bool
ph_http_agent_sockets_changed(void)
{
	bool		result = changed;

	changed = false;
	return result;
}

/* The listening sockets to wait on, at most max, into sockets_out; their count. */
int
ph_http_agent_sockets(pgsocket *sockets_out, int max)
{
	int			n = paused_until != 0 ? 0 : Min(nsockets, max);

	memcpy(sockets_out, sockets, n * sizeof(pgsocket));
	return n;
}

/*
 * A listening socket is readable: answer the connections waiting on it,
 * at most AGENT_ACCEPTS_PER_ROUND.
 */
void
ph_http_agent_serve(pgsocket listener)
{
	char		line[AGENT_LINE_SIZE];
	char		line_peer[64] = "";
	size_t		len = 0;

	if (paused_until != 0)
		return;
	for (int i = 0; i < AGENT_ACCEPTS_PER_ROUND; i++)
	{
		SockAddr	peer;
		char		peer_text[64];
		pgsocket	fd;
		char		discard[1024];
		size_t		drained = 0;
		ssize_t		n;

		peer.salen = sizeof(peer.addr);
		fd = accept4(listener, (struct sockaddr *) &peer.addr, &peer.salen,
					 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == PGINVALID_SOCKET)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
				errno == ECONNABORTED)
				break;			/* none left, or that one gone */
			/* EMFILE, ENFILE, ENOBUFS...: leave the wait set a while */
			if (!accept_logged)
				ereport(LOG,
						(errcode_for_socket_access(),
						 errmsg("pool_health agent: could not accept a connection: %m"),
						 errdetail("The agent stops accepting for %d ms after each failure; logged once.",
								   AGENT_PAUSE_MS)));
			accept_logged = true;
			paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), AGENT_PAUSE_MS);
			changed = true;
			break;
		}
		/* IPv4 through a dual-stack socket: as a backend's client_addr */
		if (!ph_client_addr_text(&peer, peer_text, sizeof(peer_text), NULL))
			peer_text[0] = '\0';
		else if (strncmp(peer_text, "::ffff:", 7) == 0 && strchr(peer_text + 7, ':') == NULL)
			memmove(peer_text, peer_text + 7, strlen(peer_text + 7) + 1);
		if (len == 0 || strcmp(peer_text, line_peer) != 0)
		{
			ph_http_agent_line(line, sizeof(line), peer_text[0] != '\0' ? peer_text : NULL);
			len = strlen(line);
			strlcpy(line_peer, peer_text, sizeof(line_peer));
		}
		/*
		 * What it sent so far, read first: closing a socket with unread
		 * bytes resets the connection, and the line with it.
		 */
		while (drained < AGENT_DRAIN_BYTES &&
			   (n = recv(fd, discard, sizeof(discard), MSG_DONTWAIT)) > 0)
			drained += n;
		/* a fresh socket's send buffer takes the line at once */
		(void) send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void) shutdown(fd, SHUT_WR);
		close(fd);
	}
}

/* At the worker's exit. */
void
ph_http_agent_exit(void)
{
	for (int i = 0; i < nsockets; i++)
		close(sockets[i]);
	nsockets = 0;
}

#endif							/* PH_HAVE_MICROHTTPD */
