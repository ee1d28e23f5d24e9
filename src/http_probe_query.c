/*-------------------------------------------------------------------------
 *
 * http_probe_query.c
 *		The query parameters of the load balancers' and orchestrators'
 *		endpoints (http_probes.c): ?verbose, ?min_free=N, ?max_lag= or
 *		?lag= (bytes with an optional unit, or an interval), parsed
 *		strictly (digits, at most one '.', a documented unit); the first
 *		malformed, out-of-range, repeated or unknown parameter is kept,
 *		with a copy of what was sent that is safe in JSON, for the 400.
 *
 * No state: the HTTP worker's request at hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef PH_HAVE_MICROHTTPD

#include <math.h>

#include "postmaster/postmaster.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "http.h"
#include "http_internal.h"

/*
 * Copy at most PROBE_ECHO_MAX bytes of a client's text for the JSON of an
 * error, each byte that is not printable ASCII as '?' (the JSON stays
 * valid UTF-8 whatever was sent).
 */
static void
echo_copy(char *out, const char *text, size_t len)
{
	len = text == NULL ? 0 : Min(len, PROBE_ECHO_MAX);
	for (size_t i = 0; i < len; i++)
		out[i] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
	out[len] = '\0';
}

/* Note the first bad parameter. */
static void
bad_parameter(ProbeQuery *q, const char *key, size_t key_size,
			  const char *value, size_t value_size, const char *why)
{
	if (q->bad_why != NULL)
		return;
	q->bad_why = why;
	echo_copy(q->bad_name, key, key_size);
	echo_copy(q->bad_value, value, value_size);
}

/*
 * A lag maximum: bytes (a number, or with B, kB, MB, GB or TB, as in
 * PostgreSQL's settings) or an interval (with us, ms, s, min, h or d);
 * the number in digits and at most one '.', nothing else (no sign, blank,
 * exponent or hexadecimal, which parse_real() would take).
 */
static bool
parse_lag(const char *value, ProbeQuery *q)
{
	static const char *const units[] = {
		"", "B", "kB", "MB", "GB", "TB", "us", "ms", "s", "min", "h", "d"
	};
	double		v;
	const char *hint;
	size_t		number = strspn(value, "0123456789.");
	const char *dot = strchr(value, '.');
	bool		unit_ok = false;

	if (number == 0 || strspn(value, ".") == number ||
		(dot != NULL && dot < value + number && memchr(dot + 1, '.', value + number - dot - 1) != NULL))
		return false;
	for (int i = 0; i < lengthof(units); i++)
		if (strcmp(value + number, units[i]) == 0)
			unit_ok = true;
	if (!unit_ok)
		return false;
	if (parse_real(value, &v, GUC_UNIT_BYTE, &hint))
		q->lag_is_time = false;
	else if (parse_real(value, &v, GUC_UNIT_MS, &hint))
	{
		q->lag_is_time = true;
		v *= 1000.0;			/* usec */
	}
	else
		return false;
	if (isnan(v) || isinf(v) || v < 0 || v > (double) PG_INT64_MAX / 2)
		return false;
	q->max_lag = v;
	return true;
}

/* MHD_get_connection_values_n: one query parameter of a probe. */
static enum MHD_Result
probe_parameter(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
				const char *value, size_t value_size)
{
	ProbeQuery *q = (ProbeQuery *) cls;
	unsigned int param;
	char		text[PROBE_ECHO_MAX + 1];

#define KEY_IS(name) (key_size == strlen(name) && memcmp(key, name, key_size) == 0)
	if (KEY_IS("verbose"))
		param = PARAM_VERBOSE;
	else if (KEY_IS("min_free") && q->endpoint == HTTP_READYZ)
		param = PARAM_MIN_FREE;
	else if ((KEY_IS("max_lag") && (q->endpoint == HTTP_READYZ || q->endpoint == HTTP_REPLICA)) ||
			 (KEY_IS("lag") && q->endpoint == HTTP_REPLICA))
		param = PARAM_MAX_LAG;
	else
	{
		bad_parameter(q, key, key_size, NULL, 0, "unknown parameter for this path");
		return MHD_NO;
	}
#undef KEY_IS
	if (q->seen & param)
	{
		if (param == PARAM_MAX_LAG &&
			(key_size != strlen(q->lag_key) || memcmp(key, q->lag_key, key_size) != 0))
			bad_parameter(q, key, key_size, NULL, 0,
						  psprintf("given more than once (also as \"%s\")", q->lag_key));
		else
			bad_parameter(q, key, key_size, NULL, 0, "given more than once");
		return MHD_NO;
	}
	q->seen |= param;
	if (param == PARAM_MAX_LAG)
		echo_copy(q->lag_key, key, key_size);
	/* a value, without a NUL byte, short enough to be a number */
	if (value == NULL || value_size == 0)
	{
		if (param == PARAM_VERBOSE)
		{
			q->verbose = true;
			return MHD_YES;
		}
		bad_parameter(q, key, key_size, NULL, 0, "a value is required");
		return MHD_NO;
	}
	if (value_size > PROBE_ECHO_MAX || memchr(value, '\0', value_size) != NULL)
	{
		bad_parameter(q, key, key_size, value, value_size, "malformed value");
		return MHD_NO;
	}
	memcpy(text, value, value_size);
	text[value_size] = '\0';
	if (param == PARAM_VERBOSE)
	{
		if (!parse_bool(text, &q->verbose))
			bad_parameter(q, key, key_size, value, value_size,
						  "must be a boolean (true, false, on, off, 1, 0) or absent");
	}
	else if (param == PARAM_MIN_FREE)
	{
		char	   *end;
		long		n;

		/* digits only: no sign or blank (strtol() would take them) */
		errno = 0;
		n = strtol(text, &end, 10);
		if (strspn(text, "0123456789") != value_size ||
			end == text || *end != '\0' || errno != 0 || n < 0 || n > MAX_BACKENDS)
			bad_parameter(q, key, key_size, value, value_size,
						  "must be an integer from 0 to 262143");
		else
			q->min_free = (int) n;
	}
	else
	{
		if (!parse_lag(text, q))
			bad_parameter(q, key, key_size, value, value_size,
						  "must be a number of bytes (optionally with B, kB, MB, GB or TB) or an interval (with us, ms, s, min, h or d), not negative");
		q->lag_given = true;
	}
	return q->bad_why == NULL ? MHD_YES : MHD_NO;
}

/* The parameters of a probe's request into *q (q->bad_why: the first bad one). */
void
ph_http_probe_query(struct MHD_Connection *connection, HttpEndpoint endpoint,
					ProbeQuery *q)
{
	memset(q, 0, sizeof(*q));
	q->endpoint = endpoint;
	q->min_free = 1;
	(void) MHD_get_connection_values_n(connection, MHD_GET_ARGUMENT_KIND,
									   probe_parameter, q);
}

#endif							/* PH_HAVE_MICROHTTPD */
