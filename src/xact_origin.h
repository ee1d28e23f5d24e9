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

extern Size ph_xact_origin_shmem_size(void);
extern char *ph_xact_origin_init(char *storage, bool found);
extern void ph_xact_origin_install_hooks(void);
extern char *ph_xact_origin_read(int procno, int pid, bool aborted,
								 TimestampTz *at, char **tags);
extern void ph_xact_origin_note(int procno, int pid, TimestampTz backend_start,
								const char *detail);

#endif							/* PH_XACT_ORIGIN_H */
