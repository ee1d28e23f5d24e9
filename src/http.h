/*-------------------------------------------------------------------------
 *
 * http.h
 *		Health over HTTP: its settings and its worker (http.c; the worker
 *		in http_server.c, http_connections.c and http_requests.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HTTP_H
#define PH_HTTP_H

#include "ph_model.h"

extern char *ph_http_listen;
extern int	ph_http_request_timeout_ms;
extern char *ph_http_allowed_hosts;
extern bool ph_http_listen_check(char **newval, void **extra, GucSource source);
extern bool ph_http_allowed_hosts_check(char **newval, void **extra, GucSource source);
extern void ph_http_allowed_hosts_assign(const char *newval, void *extra);
extern void ph_http_register(void);
PGDLLEXPORT extern void pool_health_http_main(Datum arg);

#endif							/* PH_HTTP_H */
