/*-------------------------------------------------------------------------
 *
 * hooks.c
 *		Every per-statement, per-transaction and logging hook of pool_health,
 *		in one place, with one nesting counter: ExecutorStart, ExecutorRun,
 *		ExecutorFinish, ProcessUtility, the transaction callback and
 *		emit_log_hook.  They dispatch to the modules, which install none:
 *		xact_origin.c (the first statement of each transaction, the note of
 *		a termination) and the per-application accounting (app_xact.c: a
 *		transaction's start, its transaction statements, its end).  The
 *		login hook (ClientAuthentication_hook) stays with admission.c.
 *
 * nesting_level, as pg_stat_statements' exec_nested_level: 0 for the
 * client's own statements, 1 and more for those that a utility statement
 * (EXPLAIN, CREATE TABLE AS, DO, ...) or a statement's functions run;
 * incremented around ExecutorRun, ExecutorFinish and ProcessUtility,
 * restored by PG_FINALLY on error.
 *
 * Each hook does the least possible, takes no lock and raises nothing of
 * its own (see the functions it calls).  The functions every statement or
 * transaction runs, here and in the modules they call, are marked
 * pg_attribute_hot: the compiler puts them together (.text.hot), so that
 * entering the library from the server's code touches a page or two of
 * code, not one per file.  No shared state here: this
 * backend's nesting level is a static.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "tcop/utility.h"
#include "utils/elog.h"

#include "compat.h"
#include "app_accounting.h"
#include "hooks.h"
#include "settings.h"
#include "xact_origin.h"

static ExecutorStart_hook_type prev_executor_start = NULL;
static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* How deep the statement starting is nested (see the header comment). */
static int	nesting_level = 0;

static pg_attribute_hot void
ph_executor_start(QueryDesc *queryDesc, int eflags)
{
	ph_accounting_statement();
	ph_xact_origin_executor_start(queryDesc, nesting_level);
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* The statements a statement's functions run are nested in it. */
static pg_attribute_hot void
ph_executor_run(PH_EXECUTOR_RUN_ARGS)
{
	nesting_level++;
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(PH_EXECUTOR_RUN_PASS);
		else
			standard_ExecutorRun(PH_EXECUTOR_RUN_PASS);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
}

static pg_attribute_hot void
ph_executor_finish(QueryDesc *queryDesc)
{
	nesting_level++;
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
}

static pg_attribute_hot void
ph_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	/* what is needed of it after it ran, copied: a COMMIT may free the tree */
	bool		transaction_stmt = IsA(pstmt->utilityStmt, TransactionStmt);
	TransactionStmtKind kind = transaction_stmt ?
		((TransactionStmt *) pstmt->utilityStmt)->kind : TRANS_STMT_BEGIN;
	bool		chain = transaction_stmt && ((TransactionStmt *) pstmt->utilityStmt)->chain;

	ph_accounting_statement();
	ph_xact_origin_utility(pstmt, queryString,
						   context == PROCESS_UTILITY_TOPLEVEL, nesting_level);
	/* what it runs (EXPLAIN's query, a DO block's) is nested in it */
	nesting_level++;
	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		nesting_level--;
	}
	PG_END_TRY();
	if (transaction_stmt && context == PROCESS_UTILITY_TOPLEVEL)
		ph_accounting_transaction_stmt(kind, chain, qc);
}

static pg_attribute_hot void
ph_xact_callback(XactEvent event, void *arg)
{
	ph_accounting_xact_event(event);
}

static void
ph_emit_log(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	ph_xact_origin_emit_log(edata);
}

/* From _PG_init, when preloaded. */
void
ph_hooks_install(void)
{
	if (ph_first_query_size > 0 || ph_max_groups > 0)
	{
		prev_executor_start = ExecutorStart_hook;
		ExecutorStart_hook = ph_executor_start;
		prev_executor_run = ExecutorRun_hook;
		ExecutorRun_hook = ph_executor_run;
		prev_executor_finish = ExecutorFinish_hook;
		ExecutorFinish_hook = ph_executor_finish;
		prev_process_utility = ProcessUtility_hook;
		ProcessUtility_hook = ph_process_utility;
	}
	if (ph_max_groups > 0)
		RegisterXactCallback(ph_xact_callback, NULL);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = ph_emit_log;
}
