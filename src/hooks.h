/*-------------------------------------------------------------------------
 *
 * hooks.h
 *		The per-statement, per-transaction and logging hooks of pool_health
 *		(hooks.c), installed from _PG_init when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_HOOKS_H
#define PH_HOOKS_H

extern void ph_hooks_install(void);

#endif							/* PH_HOOKS_H */
