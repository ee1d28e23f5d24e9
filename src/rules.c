/*-------------------------------------------------------------------------
 *
 * rules.c
 *		The rules of pool_health that more than one module applies, each
 *		stated once: how many connections are usable, which backends are
 *		clients, which sessions are exempt from any action, which are
 *		counted in a quota, the state a session is counted in, what
 *		"healthy" means to a load balancer, and when the episode a limit
 *		measures began.  Pure functions: no shared state, no lock, no
 *		allocation, no error (the login path calls them).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "compat.h"
#include "rules.h"

/*
 * The connections applications can use: max_connections minus the slots
 * reserved for superusers (and, from PostgreSQL 16, reserved_connections),
 * the number reserved into *reserved when asked.
 */
int
ph_rules_usable(int *reserved)
{
	int			r = ph_reserved_connections();

	if (reserved != NULL)
		*reserved = r;
	return Max(MaxConnections - r, 0);
}

/*
 * Is a backend a client, counted against the limit?  Regular backends
 * only: walsenders (also those that run SQL), autovacuum and background
 * workers have slots of their own.
 */
bool
ph_rules_is_client(BackendType type, bool walsender)
{
	return type == B_BACKEND && !walsender;
}

/*
 * Why pool_health may never act on a session, whatever a policy says.  A
 * superuser's session may be acted on only if its policy allows it and
 * the policies' owner is a superuser (superuser_allowed: a policy cannot
 * grant what its owner could not do by hand).  At login there is no
 * policy yet: superusers and protected roles are admitted, never refused.
 */
PhExemption
ph_rules_exemption(bool is_client, bool role_known, bool self,
				   bool protected_role, bool superuser, bool superuser_allowed)
{
	if (!is_client)
		return PH_EXEMPT_NOT_CLIENT;
	if (!role_known)
		return PH_EXEMPT_STARTING;
	if (self)
		return PH_EXEMPT_SELF;
	if (protected_role)
		return PH_EXEMPT_PROTECTED;
	if (superuser && !superuser_allowed)
		return PH_EXEMPT_SUPERUSER;
	return PH_EXEMPT_NONE;
}

/*
 * Is an evaluated session counted in its governing policy's quota?
 * Superusers and protected roles never are (as at login); a policy left
 * without a counter cannot count.
 */
bool
ph_rules_counted_in_quota(const PhBackend *be)
{
	return be->policy != NULL && be->policy->counter >= 0 &&
		!be->superuser && be->exemption != PH_EXEMPT_PROTECTED;
}

PhStateBucket
ph_rules_state_bucket(BackendState state)
{
	switch (state)
	{
		case STATE_RUNNING:
		case STATE_FASTPATH:
			return PH_BUCKET_ACTIVE;
		case STATE_IDLE:
			return PH_BUCKET_IDLE;
		case STATE_IDLEINTRANSACTION:
		case STATE_IDLEINTRANSACTION_ABORTED:
			return PH_BUCKET_IDLE_IN_XACT;
		default:
			return PH_BUCKET_OTHER;
	}
}

/*
 * Healthy, to a load balancer (ping(), GET /health): below critical, and
 * the server takes connections.
 */
bool
ph_rules_healthy(PhLevel level, bool refusing_connections)
{
	return level < PH_LEVEL_CRITICAL && !refusing_connections;
}

/*
 * When the episode a limit measures began (0: none): the idle period for
 * the idle limits, the blocking spell for blocking_timeout, else the
 * transaction.  A deadline is this plus the limit; an action is taken
 * once per episode.
 */
TimestampTz
ph_rules_episode_start(PhLimit limit, BackendState state, TimestampTz state_change,
					   TimestampTz xact_start, TimestampTz blocking_since)
{
	switch (limit)
	{
		case PH_LIMIT_IDLE_IN_TRANSACTION:
			return ph_idle_in_transaction(state) ? state_change : 0;
		case PH_LIMIT_IDLE:
			return state == STATE_IDLE ? state_change : 0;
		case PH_LIMIT_BLOCKING:
			return blocking_since;
		case PH_LIMIT_TRANSACTION:
			return xact_start;
		default:
			return 0;
	}
}
