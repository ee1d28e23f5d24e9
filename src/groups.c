/*-------------------------------------------------------------------------
 *
 * groups.c
 *		Groups of the client sessions of one evaluation (usage_by_*,
 *		status(), metrics()): by database, role, application_name, client
 *		address, or all three names, largest first, with each group's
 *		counts and the policy that governs every member (if one does); and
 *		the text of a group's key.
 *
 * No shared state: it reads an evaluation (evaluate.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <netinet/in.h>

#include "utils/builtins.h"

#include "backend_snapshot.h"
#include "evaluate.h"
#include "groups.h"
#include "policy.h"
#include "rules.h"
#include "shared_catalogs.h"

static int
oid_order(Oid a, Oid b)
{
	return (a > b) - (a < b);
}

static int
group_key_cmp(const PhBackend *x, const PhBackend *y, PhGroupBy by)
{
	int			c;

	switch (by)
	{
		case PH_GROUP_DATABASE:
			return oid_order(x->database_id, y->database_id);
		case PH_GROUP_ROLE:
			return oid_order(x->role_id, y->role_id);
		case PH_GROUP_APPLICATION:
			return strcmp(x->application_name, y->application_name);
		case PH_GROUP_CLIENT:
			{
				int			xlen;
				int			ylen;
				const void *xb = ph_address_bytes((const struct sockaddr *) &x->client_addr.addr, &xlen);
				const void *yb = ph_address_bytes((const struct sockaddr *) &y->client_addr.addr, &ylen);

				if (xlen != ylen)
					return xlen - ylen;
				return xlen == 0 ? 0 : memcmp(xb, yb, xlen);
			}
		case PH_GROUP_CONSUMER:
			if ((c = oid_order(x->database_id, y->database_id)) != 0 ||
				(c = oid_order(x->role_id, y->role_id)) != 0)
				return c;
			return strcmp(x->application_name, y->application_name);
	}
	return 0;
}

static PhGroupBy sort_by;		/* for the qsort comparators below */

static int
member_cmp(const void *a, const void *b)
{
	return group_key_cmp(*(PhBackend *const *) a, *(PhBackend *const *) b, sort_by);
}

static int
group_cmp(const void *a, const void *b)
{
	const PhGroup *x = a;
	const PhGroup *y = b;

	if (x->connections != y->connections)
		return x->connections > y->connections ? -1 : 1;
	return group_key_cmp(x->first, y->first, sort_by);
}

/*
 * The groups of client sessions by a key, largest first (ties in key
 * order), into *out (palloc'd); returns how many.
 */
int
ph_evaluation_groups(const PhEvaluation *eval, PhGroupBy by, PhGroup **out)
{
	const PhSnapshot *snap = &eval->snap;
	PhBackend **members = palloc(sizeof(PhBackend *) * Max(snap->nbackends, 1));
	PhGroup    *groups = palloc(sizeof(PhGroup) * Max(snap->nbackends, 1));
	int			nmembers = 0;
	int			ngroups = 0;
	bool		mixed = false;

	for (int i = 0; i < snap->nbackends; i++)
		if (snap->backends[i].is_client)
			members[nmembers++] = &snap->backends[i];
	sort_by = by;
	qsort(members, nmembers, sizeof(PhBackend *), member_cmp);
	for (int i = 0; i < nmembers; i++)
	{
		const PhBackend *be = members[i];
		PhGroup    *g;

		if (i == 0 || group_key_cmp(members[i - 1], be, by) != 0)
		{
			g = &groups[ngroups++];
			memset(g, 0, sizeof(PhGroup));
			g->first = be;
			g->oldest_xact_age = -1;
			g->longest_idle = -1;
			g->policy = be->policy;
			mixed = false;
		}
		g = &groups[ngroups - 1];
		g->connections++;
		switch (ph_rules_state_bucket(be->state))
		{
			case PH_BUCKET_ACTIVE:
				g->active++;
				break;
			case PH_BUCKET_IDLE:
				g->idle++;
				break;
			case PH_BUCKET_IDLE_IN_XACT:
				g->idle_in_transaction++;
				break;
			case PH_BUCKET_OTHER:
				break;
		}
		if (be->waiting)
			g->waiting++;
		if (be->leak != PH_LEAK_NONE)
			g->leaked++;
		g->oldest_xact_age = Max(g->oldest_xact_age, be->xact_age);
		g->longest_idle = Max(g->longest_idle, be->idle_for);
		if (be->policy != g->policy || mixed)
		{
			mixed = true;
			g->policy = NULL;
		}
	}
	qsort(groups, ngroups, sizeof(PhGroup), group_cmp);
	pfree(members);
	*out = groups;
	return ngroups;
}

/* The key of a group as text (palloc'd), or NULL (no database, Unix socket). */
char *
ph_group_key(const PhGroup *group, PhGroupBy by)
{
	const PhBackend *be = group->first;

	switch (by)
	{
		case PH_GROUP_DATABASE:
			return OidIsValid(be->database_id) ? ph_database_name(be->database_id) : NULL;
		case PH_GROUP_ROLE:
			return OidIsValid(be->role_id) ? ph_role_name(be->role_id) : NULL;
		case PH_GROUP_APPLICATION:
			return pstrdup(be->application_name);
		case PH_GROUP_CLIENT:
			{
				char		host[64];

				return ph_client_addr_text(&be->client_addr, host, sizeof(host), NULL) ?
					pstrdup(host) : NULL;
			}
		case PH_GROUP_CONSUMER:
			break;
	}
	return NULL;
}
