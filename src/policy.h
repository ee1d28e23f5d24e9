/*-------------------------------------------------------------------------
 *
 * policy.h
 *		Policies: reading and compiling pool_health.policies (policy_table.c,
 *		policy_row.c),
 *		matching a session (policy_match.c, never raises) and the set the
 *		worker publishes in shared memory (policy_set.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_POLICY_H
#define PH_POLICY_H

#include "ph_model.h"

/*
 * Called under the published set's lock (ph_policy_set_match), with the
 * policy that governs, or NULL when none does.
 */
typedef void (*PhPolicyMatchFn) (const PhPolicy *policy, void *arg);

extern bool ph_policies_read(PhPolicies *out, bool wait);
extern bool ph_interval_usec(const Interval *iv, int64 *usec);
extern void ph_policy_error(PhPolicies *out, const char *name, const char *fmt,...) pg_attribute_printf(3, 4);

extern void ph_policies_sort(PhPolicies *policies);
extern const PhPolicy *ph_policy_match(const PhPolicy *items, int count,
									   const PhMatchKey *key);
extern bool ph_like_pattern_valid(const char *pattern);
extern const unsigned char *ph_address_bytes(const struct sockaddr *addr, int *len);
extern bool ph_network_contains(const PhNetwork *net, const SockAddr *addr);
extern const char *ph_limit_name(PhLimit limit);
extern int	ph_reserve_shadowed_by(const PhPolicy *items, int count, int i);

extern void ph_policy_set_shmem_request(void);
extern void ph_policy_set_shmem_startup(void);
extern bool ph_policy_set_compiled(void);
extern bool ph_policy_set_state(uint64 *generation, uint64 *compiled_generation,
								bool *compiled);
extern bool ph_policy_set_match(const PhMatchKey *key, PhPolicyMatchFn under_lock,
								void *arg);
extern bool ph_policy_set_publish(PhPolicies *policies, uint64 generation);
extern uint64 ph_policy_set_generation(void);
extern bool ph_policy_set_copy(PhPolicies *out);
extern void ph_policies_for_reading(PhPolicies *out);
extern void ph_policies_for_acting(PhPolicies *out);

/* policy_cache.c (the worker) */
extern void ph_policy_cache_init(bool connected);
extern bool ph_policy_cache_refresh(Oid extension, bool standby);
extern const PhPolicies *ph_policy_cache(void);

#endif							/* PH_POLICY_H */
