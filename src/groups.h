/*-------------------------------------------------------------------------
 *
 * groups.h
 *		Groups of the client sessions of one evaluation (groups.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_GROUPS_H
#define PH_GROUPS_H

#include "ph_model.h"

extern int	ph_evaluation_groups(const PhEvaluation *eval, PhGroupBy by,
								 PhGroup **out);
extern char *ph_group_key(const PhGroup *group, PhGroupBy by);

#endif							/* PH_GROUPS_H */
