/*-------------------------------------------------------------------------
 *
 * xact_origin.h
 *		The first statement of each transaction (xact_origin.c), kept per
 *		backend, and the note that explains a termination to its session.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_XACT_ORIGIN_H
#define PH_XACT_ORIGIN_H

#include "ph_model.h"

struct QueryDesc;
struct PlannedStmt;
struct ErrorData;

extern void ph_xact_origin_shmem_request(void);
extern void ph_xact_origin_shmem_startup(void);
/* from hooks.c */
extern void ph_xact_origin_executor_start(struct QueryDesc *queryDesc,
										  int nesting_level);
extern void ph_xact_origin_utility(struct PlannedStmt *pstmt,
								   const char *queryString, bool top_level,
								   int nesting_level);
extern void ph_xact_origin_emit_log(struct ErrorData *edata);
/* readers, and the worker or a function ending a session */
extern char *ph_xact_origin_read(int procno, int pid, bool aborted,
								 TimestampTz *at, char **tags);
extern void ph_xact_origin_note(int procno, int pid, TimestampTz backend_start,
								const char *detail);

#endif							/* PH_XACT_ORIGIN_H */
