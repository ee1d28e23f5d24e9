/*-------------------------------------------------------------------------
 *
 * policy.h
 *		Policies: reading and compiling pool_health.policies (policy_table.c),
 *		matching a session (policy_match.c, never raises) and the set the
 *		worker publishes in shared memory (policy_set.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_POLICY_H
#define PH_POLICY_H

#include "ph_model.h"

/*
 * The policies the worker compiled and published (policy_set.c), under
 * ph_shared->lock: the worker writes them exclusively, readers copy them
 * out (shared) with their version.  generation is bumped by the commit of
 * any change to the table (shared lock is not enough: exclusive).
 * policies[] and errors[] follow PhShared in shared memory.
 */
typedef struct PhPolicySet
{
	uint64		generation;		/* bumped at each commit that changes policies */
	uint64		compiled_generation;	/* the generation "policies" reflects */
	uint64		version;		/* bumped at each publication that changed it */
	bool		compiled;		/* false until the worker has compiled once */
	int			capacity;		/* pool_health.max_policies, fixed */
	int			count;
	PhPolicy   *policies;
	int			error_capacity; /* fixed */
	int			nerrors;
	PhPolicyError *errors;
	Oid			owner;			/* owner of the table the set came from */
} PhPolicySet;

extern bool ph_policies_read(PhPolicies *out, bool wait);
extern bool ph_interval_usec(const Interval *iv, int64 *usec);
extern void ph_policy_error(PhPolicies *out, const char *name, const char *fmt,...) pg_attribute_printf(3, 4);

extern void ph_policies_sort(PhPolicies *policies);
extern const PhPolicy *ph_policy_match(const PhPolicy *items, int count,
									   const PhMatchKey *key);
extern bool ph_like_pattern_valid(const char *pattern);
extern bool ph_network_contains(const PhNetwork *net, const SockAddr *addr);
extern const char *ph_limit_name(PhLimit limit);

extern Size ph_policy_set_shmem_size(void);
extern char *ph_policy_set_init(PhPolicySet *set, char *storage);
extern bool ph_policy_set_publish(PhPolicies *policies, uint64 generation);
extern uint64 ph_policy_set_generation(void);
extern bool ph_policy_set_copy(PhPolicies *out);
extern void ph_policies_for_reading(PhPolicies *out);
extern void ph_policies_for_acting(PhPolicies *out);

#endif							/* PH_POLICY_H */
