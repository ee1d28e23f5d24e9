/*-------------------------------------------------------------------------
 *
 * rules.h
 *		The decisions pool_health makes in more than one place, made in one
 *		(rules.c): pure functions of their arguments and the settings, that
 *		allocate nothing and raise nothing, so that the login path and the
 *		evaluation can both call them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_RULES_H
#define PH_RULES_H

#include "ph_model.h"

/* Which of a session's states it is counted in (usage, groups). */
typedef enum PhStateBucket
{
	PH_BUCKET_ACTIVE,			/* running a statement (or fast-path call) */
	PH_BUCKET_IDLE,
	PH_BUCKET_IDLE_IN_XACT,		/* both idle-in-transaction states */
	PH_BUCKET_OTHER				/* starting, disabled, unknown */
} PhStateBucket;

extern int	ph_rules_usable(int *reserved);
extern bool ph_rules_is_client(BackendType type, bool walsender);
extern PhExemption ph_rules_exemption(bool is_client, bool role_known, bool self,
									  bool protected_role, bool superuser,
									  bool superuser_allowed);
extern bool ph_rules_counted_in_quota(const PhBackend *be);
extern PhStateBucket ph_rules_state_bucket(BackendState state);
extern bool ph_rules_healthy(PhLevel level, bool refusing_connections);
extern TimestampTz ph_rules_episode_start(PhLimit limit, BackendState state,
										  TimestampTz state_change,
										  TimestampTz xact_start,
										  TimestampTz blocking_since);

#endif							/* PH_RULES_H */
