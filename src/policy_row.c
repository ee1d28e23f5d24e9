/*-------------------------------------------------------------------------
 *
 * policy_row.c
 *		One row of pool_health.policies, validated and compiled into a
 *		PhPolicy (for policy_table.c, which scans the table): every column
 *		checked again as the table's constraints and trigger would (they
 *		can be dropped, disabled or bypassed), and more: names resolved to
 *		OIDs, a reserve on a role never counted at login dropped, values
 *		stored out of line refused (the worker must not wait for the
 *		toast table's locks).  An invalid row is recorded with why
 *		(ph_policy_error) and left out.
 *
 * No shared state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <sys/socket.h>

#include "commands/dbcommands.h"	/* get_database_oid() before PG 19 */
#include "catalog/pg_database.h"	/* get_database_oid() from PG 19 */
#include "common/int.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "policy.h"
#include "policy_table_int.h"
#include "settings.h"

/* Bounds of the headroom columns (SQL: the table's CHECK constraints). */
#define RESERVE_MAX			262143	/* MAX_BACKENDS */
#define LOGIN_RATE_MIN		0.001
#define LOGIN_RATE_MAX		1000000.0
#define LOGIN_BURST_MAX		1000000

/* The bounds of a limit, in usec (SQL: pool_health.limit_is_valid()). */
#define LIMIT_MIN_USEC	INT64CONST(1000)
#define LIMIT_MAX_USEC	(INT64CONST(365) * USECS_PER_DAY)

/*
 * An interval in microseconds, as PostgreSQL compares intervals (a month
 * is 30 days, a day 24 hours): the one meaning a limit has, when it is
 * validated and when it is enforced.  False if it does not fit in int64
 * (or is infinite).
 */
bool
ph_interval_usec(const Interval *iv, int64 *usec)
{
	int64		months;
	int64		days;
	int64		total;

	if (pg_mul_s64_overflow((int64) iv->month, (int64) DAYS_PER_MONTH * USECS_PER_DAY, &months) ||
		pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days) ||
		pg_add_s64_overflow(months, days, &total) ||
		pg_add_s64_overflow(total, iv->time, &total))
		return false;
	*usec = total;
	return true;
}

/*
 * A varlena value stored out of line (toasted) would have to be read from
 * the toast table, whose locks the worker must not wait for; no valid
 * value is that long (names, patterns and networks are small), so such a
 * row is invalid.
 */
static bool
stored_out_of_line(PhPolicies *out, const char *name, Datum d, int col)
{
	if (!VARATT_IS_EXTERNAL(DatumGetPointer(d)))
		return false;
	ph_policy_error(out, name, "%s is too long (stored out of line)",
					ph_policy_column_name(col));
	return true;
}

/* Compile one limit column; false (with the error recorded) if invalid. */
static bool
compile_limit(PhPolicies *out, const char *name, TupleTableSlot *slot,
			  const AttrNumber *attnums, int col, int64 *usec)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnums[col], &isnull);
	Interval   *iv;

	*usec = 0;
	if (isnull)
		return true;
	iv = DatumGetIntervalP(d);
	if (!ph_interval_usec(iv, usec) || *usec < LIMIT_MIN_USEC || *usec > LIMIT_MAX_USEC)
	{
		ph_policy_error(out, name,
						"invalid %s %s: a limit must be between 1 millisecond and 365 days (a month counts 30 days)",
						ph_policy_column_name(col),
						DatumGetCString(DirectFunctionCall1(interval_out, d)));
		return false;
	}
	return true;
}

/* A boolean column that must not be NULL. */
static bool
compile_flag(PhPolicies *out, const char *name, TupleTableSlot *slot,
			 const AttrNumber *attnums, int col, bool *value)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnums[col], &isnull);

	if (isnull)
	{
		ph_policy_error(out, name, "%s is NULL", ph_policy_column_name(col));
		return false;
	}
	*value = DatumGetBool(d);
	return true;
}

/*
 * An optional int4 column: absent from the table or NULL leaves *value
 * alone and *present false; else in [min, max] (true), or false with the
 * error recorded: "invalid COLUMN N: THING must be between MIN and MAX".
 */
static bool
optional_int_column(PhPolicies *out, const char *name, TupleTableSlot *slot,
					const AttrNumber *attnums, int col, const char *column,
					const char *thing, int32 min, int32 max,
					int32 *value, bool *present)
{
	bool		isnull = true;
	Datum		d = (Datum) 0;
	int32		v;

	*present = false;
	if (attnums[col] != InvalidAttrNumber)
		d = slot_getattr(slot, attnums[col], &isnull);
	if (isnull)
		return true;
	v = DatumGetInt32(d);
	if (v < min || v > max)
	{
		ph_policy_error(out, name, "invalid %s %d: %s must be between %d and %d",
						column, v, thing, min, max);
		return false;
	}
	*value = v;
	*present = true;
	return true;
}

/*
 * The headroom columns of a row (reserve_connections,
 * max_logins_per_second, login_burst), into *p; false (with the error
 * recorded) if invalid.  A column the table lacks (attnum invalid) is
 * NULL.
 */
static bool
compile_headroom(PhPolicies *out, const char *name, TupleTableSlot *slot,
				 const AttrNumber *attnums, PhPolicy *p)
{
	bool		isnull = true;
	Datum		d = (Datum) 0;
	bool		present;

	p->reserve_connections = 0;
	p->max_logins_per_second = 0;
	p->login_burst = 0;

	if (!optional_int_column(out, name, slot, attnums, COL_RESERVE_CONNECTIONS,
							 "reserve_connections", "a reserve", 0, RESERVE_MAX,
							 &p->reserve_connections, &present))
		return false;
	if (p->max_connections > 0 && p->reserve_connections > p->max_connections)
	{
		ph_policy_error(out, name,
						"invalid reserve_connections %d: larger than the policy's max_connections (%d)",
						p->reserve_connections, p->max_connections);
		return false;
	}

	/*
	 * A reserve for a role no login of which is ever counted (a superuser,
	 * or a role in pool_health.protected_roles) would keep its slots free
	 * for no one: the policy is kept without it.
	 */
	if (p->reserve_connections > 0 && p->match_role && OidIsValid(p->role_id) &&
		(superuser_arg(p->role_id) || ph_role_name_protected(NameStr(p->role))))
	{
		ph_policy_error(out, name,
						"in effect without its reserve_connections %d: role \"%s\" is %s, never counted nor refused at login",
						p->reserve_connections, NameStr(p->role),
						superuser_arg(p->role_id) ? "a superuser" : "in pool_health.protected_roles");
		p->reserve_connections = 0;
	}

	isnull = true;
	if (attnums[COL_MAX_LOGINS_PER_SECOND] != InvalidAttrNumber)
		d = slot_getattr(slot, attnums[COL_MAX_LOGINS_PER_SECOND], &isnull);
	if (!isnull)
	{
		double		rate;

		if (stored_out_of_line(out, name, d, COL_MAX_LOGINS_PER_SECOND))
			return false;
		rate = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, d));
		if (isnan(rate) || rate < LOGIN_RATE_MIN || rate > LOGIN_RATE_MAX)
		{
			ph_policy_error(out, name,
							"invalid max_logins_per_second %s: a login rate must be between %g and %g",
							DatumGetCString(DirectFunctionCall1(numeric_out, d)),
							LOGIN_RATE_MIN, LOGIN_RATE_MAX);
			return false;
		}
		p->max_logins_per_second = rate;
	}

	if (!optional_int_column(out, name, slot, attnums, COL_LOGIN_BURST,
							 "login_burst", "a burst", 1, LOGIN_BURST_MAX,
							 &p->login_burst, &present))
		return false;
	if (present && p->max_logins_per_second == 0)
	{
		ph_policy_error(out, name,
						"login_burst %d without max_logins_per_second: a burst needs a rate",
						p->login_burst);
		return false;
	}
	if (!present && p->max_logins_per_second > 0)
		p->login_burst = (int32) Max(1.0, ceil(p->max_logins_per_second));
	return true;
}

/*
 * Validate and compile one enabled row into *p.  Returns false, with the
 * error recorded in out, if the row is not valid.
 */
bool
ph_policy_compile_row(PhPolicies *out, TupleTableSlot *slot,
					  const AttrNumber *attnums, PhPolicy *p)
{
	bool		isnull;
	Datum		d;
	char	   *name;
	char	   *str;

	memset(p, 0, sizeof(PhPolicy));
	p->counter = -1;

	d = slot_getattr(slot, attnums[COL_NAME], &isnull);
	if (isnull)
	{
		ph_policy_error(out, NULL, "a policy has no name (name is NULL)");
		return false;
	}
	if (stored_out_of_line(out, NULL, d, COL_NAME))
		return false;
	name = TextDatumGetCString(d);
	if (name[0] == '\0' || strlen(name) >= NAMEDATALEN)
	{
		ph_policy_error(out, name, "invalid policy name: a name must be 1 to %d bytes long",
						NAMEDATALEN - 1);
		return false;
	}
	namestrcpy(&p->name, name);

	d = slot_getattr(slot, attnums[COL_PRIORITY], &isnull);
	if (isnull)
	{
		ph_policy_error(out, name, "priority is NULL");
		return false;
	}
	p->priority = DatumGetInt32(d);

	d = slot_getattr(slot, attnums[COL_DATABASE], &isnull);
	if ((p->match_database = !isnull))
	{
		namestrcpy(&p->database, NameStr(*DatumGetName(d)));
		p->database_id = get_database_oid(NameStr(p->database), true);
	}
	d = slot_getattr(slot, attnums[COL_ROLE], &isnull);
	if ((p->match_role = !isnull))
	{
		namestrcpy(&p->role, NameStr(*DatumGetName(d)));
		p->role_id = get_role_oid(NameStr(p->role), true);
	}
	d = slot_getattr(slot, attnums[COL_APPLICATION_NAME], &isnull);
	if ((p->match_application = !isnull))
	{
		if (stored_out_of_line(out, name, d, COL_APPLICATION_NAME))
			return false;
		str = TextDatumGetCString(d);
		if (strlen(str) > PH_PATTERN_MAX)
		{
			ph_policy_error(out, name,
							"invalid application_name pattern: a pattern may be at most %d bytes long",
							PH_PATTERN_MAX);
			return false;
		}
		if (!ph_like_pattern_valid(str))
		{
			ph_policy_error(out, name,
							"invalid application_name pattern %s: LIKE pattern must not end with escape character",
							quote_literal_cstr(str));
			return false;
		}
		strlcpy(p->application_pattern, str, sizeof(p->application_pattern));
	}
	d = slot_getattr(slot, attnums[COL_CLIENT_ADDR], &isnull);
	if ((p->match_client = !isnull))
	{
		inet	   *net;
		int			family;
		int			maxbits;

		if (stored_out_of_line(out, name, d, COL_CLIENT_ADDR))
			return false;
		net = DatumGetInetPP(d);
		family = ip_family(net);
		maxbits = family == PGSQL_AF_INET ? 32 : 128;

		if ((family != PGSQL_AF_INET && family != PGSQL_AF_INET6) ||
			ip_bits(net) < 0 || ip_bits(net) > maxbits)
		{
			ph_policy_error(out, name, "invalid client_addr");
			return false;
		}
		p->client.family = family == PGSQL_AF_INET ? AF_INET : AF_INET6;
		p->client.bits = ip_bits(net);
		memcpy(p->client.addr, ip_addr(net), maxbits / 8);
	}
	p->specificity = p->match_database + p->match_role +
		p->match_application + p->match_client;

	if (!compile_limit(out, name, slot, attnums, COL_IDLE_IN_TRANSACTION_TIMEOUT,
					   &p->idle_in_transaction_timeout) ||
		!compile_limit(out, name, slot, attnums, COL_IDLE_TIMEOUT, &p->idle_timeout) ||
		!compile_limit(out, name, slot, attnums, COL_TRANSACTION_TIMEOUT,
					   &p->transaction_timeout) ||
		!compile_limit(out, name, slot, attnums, COL_BLOCKING_TIMEOUT,
					   &p->blocking_timeout))
		return false;

	d = slot_getattr(slot, attnums[COL_MAX_CONNECTIONS], &isnull);
	p->max_connections = isnull ? -1 : DatumGetInt32(d);
	if (!isnull && p->max_connections < 1)
	{
		ph_policy_error(out, name,
						"invalid max_connections %d: a connection quota must be at least 1",
						p->max_connections);
		return false;
	}

	d = slot_getattr(slot, attnums[COL_ACTION], &isnull);
	if (!isnull && stored_out_of_line(out, name, d, COL_ACTION))
		return false;
	str = isnull ? NULL : TextDatumGetCString(d);
	if (str == NULL || (strcmp(str, "terminate") != 0 && strcmp(str, "log") != 0))
	{
		ph_policy_error(out, name, "invalid action %s: use terminate or log",
						str ? quote_literal_cstr(str) : "NULL");
		return false;
	}
	p->terminate = strcmp(str, "terminate") == 0;

	if (!compile_flag(out, name, slot, attnums, COL_DRY_RUN, &p->dry_run) ||
		!compile_flag(out, name, slot, attnums, COL_ALLOW_SUPERUSER, &p->allow_superuser))
		return false;

	d = slot_getattr(slot, attnums[COL_REFUSE_AT], &isnull);
	p->refuse_at = -1;
	if (!isnull)
	{
		if (stored_out_of_line(out, name, d, COL_REFUSE_AT))
			return false;
		str = TextDatumGetCString(d);
		if (strcmp(str, "degraded") == 0)
			p->refuse_at = PH_LEVEL_DEGRADED;
		else if (strcmp(str, "critical") == 0)
			p->refuse_at = PH_LEVEL_CRITICAL;
		else
		{
			ph_policy_error(out, name, "invalid refuse_at %s: use degraded, critical or NULL",
							quote_literal_cstr(str));
			return false;
		}
	}
	return compile_headroom(out, name, slot, attnums, p);
}
