/*-------------------------------------------------------------------------
 *
 * http.h
 *		Health over HTTP: its settings, its worker, its shared memory and
 *		what other modules read of it (http.c; the worker in
 *		http_server.c, http_connections.c and http_requests.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HTTP_H
#define PH_HTTP_H

#include "ph_model.h"

extern char *ph_http_listen;
extern int	ph_http_request_timeout_ms;
extern char *ph_http_allowed_hosts;
extern char *ph_http_agent_listen;
extern bool ph_http_listen_check(char **newval, void **extra, GucSource source);
extern bool ph_http_allowed_hosts_check(char **newval, void **extra, GucSource source);
extern void ph_http_allowed_hosts_assign(const char *newval, void *extra);
extern void ph_http_register(void);
PGDLLEXPORT extern void pool_health_http_main(Datum arg);

/* its shared memory (shmem.c's hooks call these) */
extern void ph_http_shmem_request(void);
extern void ph_http_shmem_startup(void);

/* status()'s "http" object: the HTTP worker's pid (0 if none), its requests */
extern int	ph_http_worker_pid(void);
extern uint64 ph_http_requests_answered(void);
extern uint64 ph_http_evaluations_made(void);

#endif							/* PH_HTTP_H */
