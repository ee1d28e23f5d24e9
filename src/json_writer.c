/*-------------------------------------------------------------------------
 *
 * json_writer.c
 *		The one JSON writer of pool_health: status(), the NOTIFY payloads of
 *		level changes and of actions, all built by appending to a
 *		StringInfo.  A member is "key": value; inside an array, pass key
 *		NULL.  Separators are written from what precedes: nothing after an
 *		opening bracket, a comma otherwise.  Strings are escaped by
 *		escape_json().
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/json.h"
#include "utils/timestamp.h"

#include "evaluate.h"
#include "json_writer.h"

/* The separator before a new member or element, and its key. */
void
ph_json_key(StringInfo buf, const char *key)
{
	if (buf->len > 0 && buf->data[buf->len - 1] != '{' &&
		buf->data[buf->len - 1] != '[')
		appendStringInfoString(buf, ", ");
	if (key != NULL)
	{
		escape_json(buf, key);
		appendStringInfoString(buf, ": ");
	}
}

/* Open an object ('{') or array ('['), as a member key (or an element). */
void
ph_json_open(StringInfo buf, const char *key, char bracket)
{
	ph_json_key(buf, key);
	appendStringInfoChar(buf, bracket);
}

void
ph_json_close(StringInfo buf, char bracket)
{
	appendStringInfoChar(buf, bracket);
}

void
ph_json_str(StringInfo buf, const char *key, const char *value)
{
	ph_json_key(buf, key);
	if (value != NULL)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

void
ph_json_int(StringInfo buf, const char *key, int64 value)
{
	ph_json_key(buf, key);
	appendStringInfo(buf, INT64_FORMAT, value);
}

void
ph_json_bool(StringInfo buf, const char *key, bool value)
{
	ph_json_key(buf, key);
	appendStringInfoString(buf, value ? "true" : "false");
}

void
ph_json_double(StringInfo buf, const char *key, double value, int decimals)
{
	ph_json_key(buf, key);
	appendStringInfo(buf, "%.*f", decimals, value);
}

/* A timestamp as text; null when 0 (never). */
void
ph_json_time(StringInfo buf, const char *key, TimestampTz value)
{
	ph_json_str(buf, key, value != 0 ? timestamptz_to_str(value) : NULL);
}

/* A duration in seconds, with millisecond precision; null when < 0. */
void
ph_json_seconds(StringInfo buf, const char *key, int64 usec)
{
	ph_json_key(buf, key);
	if (usec < 0)
		appendStringInfoString(buf, "null");
	else
		appendStringInfo(buf, "%.3f", usec / 1000000.0);
}

/* The members level, reasons and usage{...} of a usage (status, alerts). */
void
ph_json_usage(StringInfo buf, const PhUsage *usage)
{
	ph_json_str(buf, "level", ph_level_name(usage->level));
	ph_json_open(buf, "reasons", '[');
	for (int i = 0; i < usage->nreasons; i++)
		ph_json_str(buf, NULL, usage->reasons[i]);
	ph_json_close(buf, ']');
	ph_json_open(buf, "usage", '{');
	ph_json_int(buf, "max_connections", usage->max_connections);
	ph_json_int(buf, "reserved_connections", usage->reserved_connections);
	ph_json_int(buf, "usable", usage->usable);
	ph_json_int(buf, "used", usage->used);
	ph_json_int(buf, "reserved_used", usage->reserved_used);
	ph_json_int(buf, "active", usage->active);
	ph_json_int(buf, "idle", usage->idle);
	ph_json_int(buf, "idle_in_transaction", usage->idle_in_transaction);
	ph_json_int(buf, "waiting", usage->waiting);
	ph_json_int(buf, "free", usage->free);
	ph_json_double(buf, "usage_percent", usage->usage_percent, 1);
	ph_json_close(buf, '}');
}
