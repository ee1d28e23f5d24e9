/*-------------------------------------------------------------------------
 *
 * json_writer.h
 *		One JSON writer for status(), the audit and alert payloads
 *		(json_writer.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_JSON_WRITER_H
#define PH_JSON_WRITER_H

#include "ph_model.h"

extern void ph_json_open(StringInfo buf, const char *key, char bracket);
extern void ph_json_close(StringInfo buf, char bracket);
extern void ph_json_key(StringInfo buf, const char *key);
extern void ph_json_str(StringInfo buf, const char *key, const char *value);
extern void ph_json_int(StringInfo buf, const char *key, int64 value);
extern void ph_json_bool(StringInfo buf, const char *key, bool value);
extern void ph_json_double(StringInfo buf, const char *key, double value,
						   int decimals);
extern void ph_json_time(StringInfo buf, const char *key, TimestampTz value);
extern void ph_json_seconds(StringInfo buf, const char *key, int64 usec);
extern void ph_json_usage(StringInfo buf, const PhUsage *usage);

#endif							/* PH_JSON_WRITER_H */
