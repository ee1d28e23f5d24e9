/*-------------------------------------------------------------------------
 *
 * views.h
 *		The live views (views.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_VIEWS_H
#define PH_VIEWS_H

#include "ph_model.h"

extern Datum ph_usec_interval(int64 usec);

#endif							/* PH_VIEWS_H */
