/*-------------------------------------------------------------------------
 *
 * alerts.c
 *		Telling people: every change of the health level is written to the
 *		server log (WARNING when it gets worse, LOG when it improves) and
 *		sent with NOTIFY on pool_health.notify_channel as a JSON payload.
 *
 * Called by the worker, inside its transaction when it has one (NOTIFY is
 * delivered at commit).  No shared state is touched here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "utils/timestamp.h"

#include "alerts.h"
#include "evaluate.h"
#include "json_writer.h"
#include "settings.h"

/*
 * The NOTIFY payload for a level change: the level, the reasons, the usage
 * figures (nested, as in status(), and the main ones at the top level).
 */
static char *
level_change_payload(PhLevel old_level, const PhUsage *usage)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ph_json_open(&buf, NULL, '{');
	ph_json_str(&buf, "event", "level_change");
	ph_json_str(&buf, "old_level", ph_level_name(old_level));
	ph_json_str(&buf, "level", ph_level_name(usage->level));
	ph_json_open(&buf, "reasons", '[');
	for (int i = 0; i < usage->nreasons; i++)
		ph_json_str(&buf, NULL, usage->reasons[i]);
	ph_json_close(&buf, ']');
	ph_json_int(&buf, "used", usage->used);
	ph_json_int(&buf, "usable", usage->usable);
	ph_json_double(&buf, "usage_percent", usage->usage_percent, 1);
	ph_json_int(&buf, "idle_in_transaction", usage->idle_in_transaction);
	ph_json_int(&buf, "leaked", usage->leaked);
	ph_json_time(&buf, "at", GetCurrentTimestamp());
	ph_json_close(&buf, '}');
	return buf.data;
}

/*
 * Report a change of level from old_level to usage->level.  can_notify says
 * whether this process may NOTIFY (connected to a database, in a
 * transaction, not in recovery).
 */
void
ph_alert_level_change(PhLevel old_level, const PhUsage *usage, bool can_notify)
{
	StringInfoData reasons;

	initStringInfo(&reasons);
	for (int i = 0; i < usage->nreasons; i++)
		appendStringInfo(&reasons, "%s%s", i > 0 ? "; " : "", usage->reasons[i]);

	ereport(usage->level > old_level ? WARNING : LOG,
			(errmsg("pool_health: connection health changed from %s to %s",
					ph_level_name(old_level), ph_level_name(usage->level)),
			 errdetail("%s (%.1f%%)%s%s.",
					   ph_usage_words(usage->used, usage->usable), usage->usage_percent,
					   usage->nreasons > 0 ? ": " : "", reasons.data)));

	if (can_notify && ph_notify_channel[0] != '\0')
		Async_Notify(ph_notify_channel, level_change_payload(old_level, usage));
}
