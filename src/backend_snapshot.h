/*-------------------------------------------------------------------------
 *
 * backend_snapshot.h
 *		One pass over backend status (backend_snapshot.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_BACKEND_SNAPSHOT_H
#define PH_BACKEND_SNAPSHOT_H

#include "ph_model.h"

extern void ph_snapshot_take(PhSnapshot *snap, int flags);
extern bool ph_snapshot_reread(const PhBackend *be, PhBackend *now);
extern bool ph_snapshot_still_blocking(const PhBackend *be);
extern const PhBackend *ph_snapshot_find_pid(const PhSnapshot *snap, int pid);
extern bool ph_client_addr_text(const SockAddr *addr, char *buf, size_t size,
								int *port);
extern bool ph_backend_visible(const PhBackend *be);
extern bool ph_role_visible(Oid role_id);
extern const char *ph_backend_type_name(const PhBackend *be);

#endif							/* PH_BACKEND_SNAPSHOT_H */
