/*-------------------------------------------------------------------------
 *
 * http_evaluation.c
 *		The HTTP worker's evaluation of backend status (evaluate.c, without
 *		the catalog): made at most once per period (100 ms, or the sample
 *		interval if shorter) and shared by everything the worker answers:
 *		/health, /status and /metrics (http_requests.c), the probes and the
 *		agent (http_probes.c).  However many checks arrive, on however many
 *		endpoints, they cost one evaluation per period.
 *
 * An error while evaluating is caught here (as a worker's error recovery
 * would: no lock outlives it) and kept, with its message, for the period:
 * every answer made from this evaluation reports it.
 *
 * State, local to the HTTP worker's process (no shared state, no lock):
 * the evaluation, its memory (eval_context, emptied when it is made
 * again: a caller uses it before it asks for the next), when it was made,
 * and the message of the error that stopped it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "evaluate.h"
#include "http_internal.h"
#include "settings.h"

/* The evaluation is reused for this long at most (floods of checks). */
#define HTTP_EVALUATION_MS		100

static MemoryContext eval_context = NULL;
static PhEvaluation evaluation;
static TimestampTz evaluated_at = 0;	/* 0: none yet */
static char *eval_error = NULL; /* in eval_context; NULL: none */

static void
evaluate_again(void)
{
	MemoryContext old;
	volatile uint32 holdoff;

	if (eval_context == NULL)
		eval_context = AllocSetContextCreate(TopMemoryContext,
											 "pool_health http evaluation",
											 ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(eval_context);
	eval_error = NULL;
	ph_http_count_evaluation();
	HOLD_INTERRUPTS();
	holdoff = InterruptHoldoffCount;
	old = MemoryContextSwitchTo(eval_context);
	PG_TRY();
	{
		ph_evaluate(&evaluation, PH_EVAL_NO_CATALOG);
	}
	PG_CATCH();
	{
		eval_error = ph_http_caught_error(holdoff, eval_context);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	RESUME_INTERRUPTS();
	evaluated_at = GetCurrentTimestamp();
}

/*
 * The evaluation of the period, made again when older than the period;
 * *made_at is when it was made (an answer made from an earlier one is
 * stale).  NULL when it failed, with the error's message in *error.  Valid
 * until the next call.
 */
const PhEvaluation *
ph_http_evaluation(TimestampTz *made_at, const char **error)
{
	int			reuse_ms = Min(HTTP_EVALUATION_MS, ph_sample_interval_ms);

	if (evaluated_at == 0 ||
		TimestampDifferenceExceeds(evaluated_at, GetCurrentTimestamp(), reuse_ms))
		evaluate_again();
	*made_at = evaluated_at;
	*error = eval_error;
	return eval_error != NULL ? NULL : &evaluation;
}

#endif							/* PH_HAVE_MICROHTTPD */
