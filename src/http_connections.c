/*-------------------------------------------------------------------------
 *
 * http_connections.c
 *		The HTTP worker's table of connections: which get in, how long
 *		each may take, and what becomes of a socket MHD closes before its
 *		client took the answer.
 *
 * Admission: requests are bounded in size (MHD's per-connection memory)
 * and number (HTTP_MAX_CONNECTIONS, HTTP_PER_ADDRESS_CONNECTIONS from one
 * client address, counted here: http_internal.h says why).  At either
 * limit, the oldest connection without a complete request (of that
 * address, at the limit per address), else the one answering longest,
 * gives way to the new one, so that a health check always gets in, also
 * from the address of a client that holds all it may.
 *
 * Deadlines: each connection must complete a request within
 * pool_health.http_request_timeout of its accept (or of the end of its
 * previous answer), however slowly it trickles bytes, or it is reset
 * (MHD's own timeout only counts time without a byte); its answer must be
 * taken (written into the socket, whose buffers are small:
 * HTTP_SOCKET_BUFFER in http_server.c) within as long, so that a client
 * that pipelines requests and does not read cannot make the kernel hold
 * answers for it.  A connection closed here is reset, which frees what
 * the kernel holds for it at once.
 *
 * Slow-reader drains: a connection that MHD closes after its answer
 * (HTTP/1.0, "Connection: close") is kept (drains[]) until its deadline
 * if its client has not taken the answer yet, then closed or reset.
 *
 * State: slots[] and drains[], local to the HTTP worker's process, like
 * everything MHD calls back (ph_http_notify_connection(),
 * ph_http_request_completed()); no shared memory.  Allocated when the
 * worker starts, not static: 21 kB of .bss would sit between the
 * library's other statics and spread the few that every transaction of
 * every backend reads over more pages (see docs/performance.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/sockios.h>
#endif

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "http_internal.h"
#include "policy.h"

static HttpSlot *slots;			/* HTTP_SLOTS of them */
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

static HttpDrain *drains;		/* HTTP_SLOTS of them */
static int	drains_used = 0;

/* The slot of a connection (NULL if MHD did not tell us of it). */
HttpSlot *
ph_http_slot_of(struct MHD_Connection *connection)
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
	const unsigned char *bytes;
	int			len;

	memset(address, 0, sizeof(*address));
	info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info == NULL || (addr = info->client_addr) == NULL)
		return;
	if ((bytes = ph_address_bytes(addr, &len)) == NULL)
		return;					/* family 0: not an IP address */
	address->family = addr->sa_family;
	memcpy(address->bytes, bytes, len);
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
long
ph_http_close_late_connections(void)
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
void
ph_http_notify_connection(void *cls, struct MHD_Connection *connection,
						  void **socket_context,
						  enum MHD_ConnectionNotificationCode toe)
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
void
ph_http_request_completed(void *cls, struct MHD_Connection *connection,
						  void **request, enum MHD_RequestTerminationCode toe)
{
	HttpSlot   *slot = ph_http_slot_of(connection);

	if (slot != NULL)
	{
		slot->answering = false;
		slot->since = GetCurrentTimestamp();
	}
}

/* At the worker's start: the tables, every slot and drain entry free. */
void
ph_http_connections_init(void)
{
	if (slots == NULL)
	{
		slots = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpSlot) * HTTP_SLOTS);
		drains = MemoryContextAllocZero(TopMemoryContext, sizeof(HttpDrain) * HTTP_SLOTS);
	}
	for (int i = 0; i < HTTP_SLOTS; i++)
		drains[i].fd = -1;
}

/* At the worker's exit: reset and close the drained sockets. */
void
ph_http_connections_exit(void)
{
	for (int i = 0; i < HTTP_SLOTS && drains_used > 0; i++)
		if (drains[i].fd >= 0)
		{
			reset_on_close(drains[i].fd);
			close_drain(&drains[i]);
		}
}

/* A response is queued on a connection: finished, its answer has a deadline. */
void
ph_http_slot_answering(HttpSlot *slot)
{
	slot->answering = true;
	slot->since = GetCurrentTimestamp();
}

#endif							/* PH_HAVE_MICROHTTPD */
