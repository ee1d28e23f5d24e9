/*-------------------------------------------------------------------------
 *
 * policy_match.c
 *		Which policy governs a session: the precedence order of a compiled
 *		set, and matching a session (or a connection being admitted) against
 *		it.  Used on the login path, so nothing here allocates, takes a lock
 *		or can raise an ERROR: application_name patterns are matched by a
 *		LIKE matcher of our own over patterns that policy_table.c validated
 *		(ph_like_pattern_valid), networks by comparing bytes.
 *
 * Precedence: highest priority, then the most specific match (most match
 * columns set), then the name.  The first policy in that order whose match
 * columns all match a session governs it.
 *
 * LIKE semantics: those of PostgreSQL's LIKE with the default escape (%
 * any string, _ any one character, \ escapes), case-sensitive.  They are
 * compared byte by byte: application_name is always ASCII (the server
 * replaces other bytes, see compat.h), so a byte is a character.
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "policy.h"

static int
precedence_cmp(const void *a, const void *b)
{
	const PhPolicy *x = a;
	const PhPolicy *y = b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	if (x->specificity != y->specificity)
		return x->specificity > y->specificity ? -1 : 1;
	return strcmp(NameStr(x->name), NameStr(y->name));
}

/* Put a compiled set in precedence order. */
void
ph_policies_sort(PhPolicies *policies)
{
	if (policies->count > 1)
		qsort(policies->items, policies->count, sizeof(PhPolicy), precedence_cmp);
}

/*
 * Is pattern a valid LIKE pattern?  Its one possible syntax error is a
 * trailing escape character with nothing to escape.
 */
bool
ph_like_pattern_valid(const char *pattern)
{
	for (const char *p = pattern; *p != '\0'; p++)
	{
		if (*p == '\\')
		{
			if (p[1] == '\0')
				return false;
			p++;
		}
	}
	return true;
}

typedef enum LikeResult
{
	LIKE_FALSE,
	LIKE_TRUE,
	LIKE_ABORT					/* no match possible for any later start */
} LikeResult;

/*
 * The matcher of PostgreSQL's like_match.c (MatchText), byte by byte and
 * without its stack check: patterns are at most PH_PATTERN_MAX bytes, so
 * the recursion (one level per %) is bounded.
 */
static LikeResult
like_match(const char *t, int tlen, const char *p, int plen)
{
	while (tlen > 0 && plen > 0)
	{
		if (*p == '\\')
		{
			p++;
			plen--;
			if (plen <= 0 || *p != *t)
				return LIKE_FALSE;
		}
		else if (*p == '%')
		{
			/* a run of % and _: % matches anything, each _ one byte */
			while (plen > 0 && (*p == '%' || *p == '_'))
			{
				if (*p == '_')
				{
					if (tlen <= 0)
						return LIKE_ABORT;
					t++;
					tlen--;
				}
				p++;
				plen--;
			}
			if (plen <= 0)
				return LIKE_TRUE;

			/* try the rest of the pattern at every place it can start */
			{
				char		first = (*p == '\\' && plen > 1) ? p[1] : *p;

				while (tlen > 0)
				{
					if (*t == first)
					{
						LikeResult r = like_match(t, tlen, p, plen);

						if (r != LIKE_FALSE)
							return r;
					}
					t++;
					tlen--;
				}
			}
			return LIKE_ABORT;
		}
		else if (*p != '_' && *p != *t)
			return LIKE_FALSE;
		t++;
		tlen--;
		p++;
		plen--;
	}
	if (tlen > 0)
		return LIKE_FALSE;
	while (plen > 0 && *p == '%')
	{
		p++;
		plen--;
	}
	return plen <= 0 ? LIKE_TRUE : LIKE_ABORT;
}

static bool
like(const char *str, const char *pattern)
{
	return like_match(str, (int) strlen(str), pattern, (int) strlen(pattern)) == LIKE_TRUE;
}

/*
 * The bytes of an IPv4 or IPv6 address (4 or 16 into *len), NULL with 0
 * for a Unix socket or another family.
 */
const unsigned char *
ph_address_bytes(const struct sockaddr *addr, int *len)
{
	if (addr->sa_family == AF_INET)
	{
		*len = sizeof(struct in_addr);
		return (const unsigned char *) &((const struct sockaddr_in *) addr)->sin_addr;
	}
	if (addr->sa_family == AF_INET6)
	{
		*len = sizeof(struct in6_addr);
		return (const unsigned char *) &((const struct sockaddr_in6 *) addr)->sin6_addr;
	}
	*len = 0;
	return NULL;
}

/* Is the client address of a session inside the network? */
bool
ph_network_contains(const PhNetwork *net, const SockAddr *addr)
{
	const unsigned char *bytes;
	int			len;
	int			full;
	int			rest;

	if (addr->addr.ss_family != net->family ||
		(bytes = ph_address_bytes((const struct sockaddr *) &addr->addr, &len)) == NULL)
		return false;
	full = net->bits / 8;
	rest = net->bits % 8;
	if (memcmp(bytes, net->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((bytes[full] ^ net->addr[full]) & (0xFF << (8 - rest))) == 0;
}

/*
 * The policy governing a session, or NULL, among count policies in
 * precedence order.  A session with no role or database yet (a backend
 * still authenticating, which PostgreSQL 18 lists) matches no policy
 * naming one.
 */
const PhPolicy *
ph_policy_match(const PhPolicy *items, int count, const PhMatchKey *key)
{
	for (int i = 0; i < count; i++)
	{
		const PhPolicy *p = &items[i];

		if (p->match_database)
		{
			if (OidIsValid(key->database_id) ? key->database_id != p->database_id :
				(key->database == NULL ||
				 strncmp(key->database, NameStr(p->database), NAMEDATALEN) != 0))
				continue;
		}
		if (p->match_role &&
			(!OidIsValid(key->role_id) || key->role_id != p->role_id))
			continue;
		if (p->match_client && !ph_network_contains(&p->client, key->client_addr))
			continue;
		if (p->match_application &&
			!like(key->application_name ? key->application_name : "",
				  p->application_pattern))
			continue;
		return p;
	}
	return NULL;
}

/*
 * Can no string match both LIKE patterns?  When their literal prefixes
 * (up to the first wildcard, escapes undone) differ within the shorter,
 * or both are literals that differ.
 */
static bool
patterns_disjoint(const char *a, const char *b)
{
	for (;;)
	{
		bool		a_wild = *a == '%' || *a == '_';
		bool		b_wild = *b == '%' || *b == '_';

		if (a_wild || b_wild)
			return false;
		if (*a == '\\')
			a++;
		if (*b == '\\')
			b++;
		if (*a != *b)
			return true;		/* one ended, or a literal byte differs */
		if (*a == '\0')
			return false;		/* the same literal */
		a++;
		b++;
	}
}

/* Do two networks share no address (same family, differing prefixes)? */
static bool
networks_disjoint(const PhNetwork *a, const PhNetwork *b)
{
	int			bits = Min(a->bits, b->bits);
	int			full = bits / 8;
	int			rest = bits % 8;

	if (a->family != b->family)
		return false;			/* not proven: IPv4-mapped addresses */
	if (memcmp(a->addr, b->addr, full) != 0)
		return true;
	return rest != 0 &&
		((a->addr[full] ^ b->addr[full]) & (0xFF << (8 - rest))) != 0;
}

/*
 * Can no session match both policies?  Only when some criterion is set on
 * both with literal values that differ (a database, a role, application_name
 * patterns whose literal prefixes differ, networks without a common
 * address).
 */
static bool
provably_disjoint(const PhPolicy *a, const PhPolicy *b)
{
	return (a->match_database && b->match_database &&
			strcmp(NameStr(a->database), NameStr(b->database)) != 0) ||
		(a->match_role && b->match_role &&
		 strcmp(NameStr(a->role), NameStr(b->role)) != 0) ||
		(a->match_application && b->match_application &&
		 patterns_disjoint(a->application_pattern, b->application_pattern)) ||
		(a->match_client && b->match_client &&
		 networks_disjoint(&a->client, &b->client));
}

/*
 * A reserve covers the logins its policy governs, not every login it
 * matches: the first policy before items[i] (in precedence order) that
 * may govern sessions items[i] matches, or -1 (none, or no reserve).
 */
int
ph_reserve_shadowed_by(const PhPolicy *items, int count, int i)
{
	if (i < 0 || i >= count || items[i].reserve_connections <= 0)
		return -1;
	for (int j = 0; j < i; j++)
		if (!provably_disjoint(&items[j], &items[i]))
			return j;
	return -1;
}

const char *
ph_limit_name(PhLimit limit)
{
	switch (limit)
	{
		case PH_LIMIT_NONE:
			return NULL;
		case PH_LIMIT_IDLE_IN_TRANSACTION:
			return "idle_in_transaction_timeout";
		case PH_LIMIT_IDLE:
			return "idle_timeout";
		case PH_LIMIT_TRANSACTION:
			return "transaction_timeout";
		case PH_LIMIT_BLOCKING:
			return "blocking_timeout";
	}
	return NULL;
}
