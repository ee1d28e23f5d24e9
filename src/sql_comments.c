/*-------------------------------------------------------------------------
 *
 * sql_comments.c
 *		A statement's text and its sqlcommenter comment, found with the
 *		server's own lexer rules, and the comment's tags decoded.
 *
 * xact_origin.c records the first statement of each transaction and the
 * tags of the first statement that carries them.  A statement's location
 * and length, as the parser gives them, do not say where its comments are,
 * nor whether a comment opener or "--" in its text opens a comment or sits
 * in a literal.  The scanner here follows the rules of the server's lexer
 * (scan.l) in as much as they decide that: whitespace; "--" comments to
 * the end of the line; nested C-style comments; '' strings with doubled
 * quotes, and backslash escapes when standard_conforming_strings is off;
 * E'' strings (backslash escapes), B'' and X'' strings, U&'' strings;
 * strings continued on another line; "" and U&"" identifiers; dollar
 * quotes ($$ and $tag$); words (a string prefix only when it starts a
 * word); numbers (an exponent's "e" is the number's).  Each byte is looked
 * at a bounded number of times: the cost is linear in the text scanned,
 * and nothing is scanned beyond the statement and the comments right
 * before it.
 *
 * A sqlcommenter comment (https://google.github.io/sqlcommenter/) is a
 * C-style comment that ends the statement, or starts it, holding only
 * key='value' pairs separated by commas; keys and values are URL-encoded,
 * a quote in a value is escaped by a backslash.  Decoding works on
 * length-counted buffers: a pair whose key or value is empty, holds a NUL
 * or is not valid in the database encoding once decoded is left out; a
 * comment that holds anything else (prose, a nested comment) is not tags.
 *
 * No shared state; nothing here takes a lock, allocates memory on the
 * recording path (ph_sql_statement, ph_sql_tags_fit) or raises an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "parser/scansup.h"

#include "json_writer.h"
#include "sql_comments.h"

typedef enum SqlToken
{
	TOK_END,					/* the end of the text scanned */
	TOK_SPACE,
	TOK_LINE_COMMENT,
	TOK_BLOCK_COMMENT,
	TOK_SEMICOLON,
	TOK_OTHER,					/* a word, literal, number, operator character */
	TOK_UNTERMINATED			/* a comment, literal or quoted identifier that
								 * the text ends in */
} SqlToken;

/* Is there a byte at i (before end, and before the text's NUL)? */
#define MORE(s, i, end) ((i) < (end) && (s)[(i)] != '\0')

static inline bool
word_start(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
		IS_HIGHBIT_SET(c);
}

static inline bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/*
 * After a literal's closing quote at i - 1: if whitespace holding a newline
 * (and "--" comments) and another quote follow, the literal goes on (scan.l
 * quotecontinue); the position of that quote, or -1.
 */
static int
continuation(const char *s, int i, int end)
{
	bool		newline = false;

	for (;;)
	{
		if (!MORE(s, i, end))
			return -1;
		if (s[i] == '\n' || s[i] == '\r')
		{
			newline = true;
			i++;
		}
		else if (scanner_isspace(s[i]))
			i++;
		else if (s[i] == '-' && MORE(s, i + 1, end) && s[i + 1] == '-')
		{
			/* after the first newline, a comment must end in another */
			while (MORE(s, i, end) && s[i] != '\n' && s[i] != '\r')
				i++;
			if (newline && !MORE(s, i, end))
				return -1;
		}
		else
			return newline && s[i] == '\'' ? i : -1;
	}
}

/*
 * The end of a quoted literal or identifier whose text starts at i (after
 * its opening quote q): backslash escapes the next byte when backslash is
 * set, a doubled quote is a quote when doubled is set, and a string goes on
 * after a continuation; -1 if the text ends first.
 */
static int
quoted_end(const char *s, int i, int end, char q, bool backslash, bool doubled)
{
	for (;;)
	{
		if (!MORE(s, i, end))
			return -1;
		if (backslash && s[i] == '\\')
		{
			if (!MORE(s, i + 1, end))
				return -1;
			i += 2;
		}
		else if (s[i] == q)
		{
			int			next;

			if (doubled && MORE(s, i + 1, end) && s[i + 1] == q)
				i += 2;
			else if (q == '\'' && (next = continuation(s, i + 1, end)) >= 0)
				i = next + 1;
			else
				return i + 1;
		}
		else
			i++;
	}
}

/*
 * A dollar-quote delimiter ($$ or $tag$) at i: its length, or 0.
 */
static int
dollar_delimiter(const char *s, int i, int end)
{
	int			k = i + 1;

	if (MORE(s, k, end) && word_start(s[k]))
		while (MORE(s, k, end) && (word_start(s[k]) || is_digit(s[k])))
			k++;
	return MORE(s, k, end) && s[k] == '$' ? k - i + 1 : 0;
}

/*
 * The end of a dollar-quoted literal opened by the delimiter at open (len
 * bytes), or -1.  As scan.l does, a delimiter inside that is not the
 * closing one is stepped over but for its last "$", which may open the
 * closing one; each byte is looked at a bounded number of times.
 */
static int
dollar_end(const char *s, int open, int len, int end)
{
	int			p = open + len;

	for (;;)
	{
		int			d;

		if (!MORE(s, p, end))
			return -1;
		if (s[p] != '$')
		{
			p++;
			continue;
		}
		d = dollar_delimiter(s, p, end);
		if (d == len && memcmp(s + p, s + open, len) == 0)
			return p + len;
		if (d > 0)
			p += d - 1;
		else
		{
			/* "$word" without a closing "$", or a lone "$" */
			p++;
			while (MORE(s, p, end) && (word_start(s[p]) || is_digit(s[p])))
				p++;
		}
	}
}

/*
 * The token of s that starts at *pos (the text ends at end or at its NUL);
 * *pos is moved past it (to the end of the text for an unterminated one).
 */
static SqlToken
next_token(const char *s, int *pos, int end, bool std_strings)
{
	int			i = *pos;
	unsigned char c;
	SqlToken	token = TOK_OTHER;

	if (!MORE(s, i, end))
		return TOK_END;
	c = s[i];
	if (scanner_isspace(c))
	{
		while (MORE(s, i, end) && scanner_isspace(s[i]))
			i++;
		token = TOK_SPACE;
	}
	else if (c == '-' && MORE(s, i + 1, end) && s[i + 1] == '-')
	{
		while (MORE(s, i, end) && s[i] != '\n' && s[i] != '\r')
			i++;
		token = TOK_LINE_COMMENT;
	}
	else if (c == '/' && MORE(s, i + 1, end) && s[i + 1] == '*')
	{
		int			depth = 1;

		i += 2;
		while (depth > 0)
		{
			if (!MORE(s, i, end))
			{
				i = -1;
				break;
			}
			if (s[i] == '/' && MORE(s, i + 1, end) && s[i + 1] == '*')
			{
				depth++;
				i += 2;
			}
			else if (s[i] == '*' && MORE(s, i + 1, end) && s[i + 1] == '/')
			{
				depth--;
				i += 2;
			}
			else
				i++;
		}
		token = TOK_BLOCK_COMMENT;
	}
	else if (c == ';')
	{
		i++;
		token = TOK_SEMICOLON;
	}
	else if (c == '\'')
		i = quoted_end(s, i + 1, end, '\'', !std_strings, true);
	else if (c == '"')
		i = quoted_end(s, i + 1, end, '"', false, true);
	else if (c == '$')
	{
		int			d = dollar_delimiter(s, i, end);

		if (d > 0)
			i = dollar_end(s, i, d, end);
		else
		{
			/* a parameter ($1) or a lone "$" */
			i++;
			while (MORE(s, i, end) && is_digit(s[i]))
				i++;
		}
	}
	else if (word_start(c))
	{
		bool		quote_next = MORE(s, i + 1, end) && s[i + 1] == '\'';

		if (quote_next && (c == 'E' || c == 'e'))
			i = quoted_end(s, i + 2, end, '\'', true, true);
		else if (quote_next && (c == 'B' || c == 'b' || c == 'X' || c == 'x'))
			i = quoted_end(s, i + 2, end, '\'', false, false);
		else if ((c == 'U' || c == 'u') && MORE(s, i + 1, end) && s[i + 1] == '&' &&
				 MORE(s, i + 2, end) && (s[i + 2] == '\'' || s[i + 2] == '"'))
			i = quoted_end(s, i + 3, end, s[i + 2], false, true);
		else
		{
			/* a word; N'' is the word N and a string, as for the server */
			while (MORE(s, i, end) && (word_start(s[i]) || is_digit(s[i]) || s[i] == '$'))
				i++;
		}
	}
	else if (is_digit(c) || (c == '.' && MORE(s, i + 1, end) && is_digit(s[i + 1])))
	{
		/* a number: digits, a fraction, an exponent ("1e" included) */
		while (MORE(s, i, end) && is_digit(s[i]))
			i++;
		if (MORE(s, i, end) && s[i] == '.')
			i++;
		while (MORE(s, i, end) && is_digit(s[i]))
			i++;
		if (MORE(s, i, end) && (s[i] == 'e' || s[i] == 'E'))
		{
			i++;
			if (MORE(s, i, end) && (s[i] == '+' || s[i] == '-'))
				i++;
			while (MORE(s, i, end) && is_digit(s[i]))
				i++;
		}
	}
	else
		i++;

	if (i < 0)
	{
		/* the text ends inside it */
		while (MORE(s, *pos, end))
			(*pos)++;
		return TOK_UNTERMINATED;
	}
	*pos = i;
	return token;
}

/* ---- sqlcommenter tags ---- */

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * URL-decode (%XX escapes) the n bytes at in into out (at least n bytes);
 * the decoded length.
 */
static int
url_decode(const char *in, int n, char *out)
{
	int			len = 0;

	for (int i = 0; i < n; i++)
	{
		int			hi;
		int			lo;

		if (in[i] == '%' && i + 2 < n &&
			(hi = hex_value(in[i + 1])) >= 0 && (lo = hex_value(in[i + 2])) >= 0)
		{
			out[len++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else
			out[len++] = in[i];
	}
	return len;
}

/* Is this decoded key or value kept: not empty, no NUL, valid text? */
static bool
decoded_ok(const char *s, int len)
{
	return len > 0 && memchr(s, '\0', len) == NULL &&
		pg_verifymbstr(s, len, true);
}

/*
 * Parse the pairs of a comment's body (len bytes).  With json, append each
 * pair kept to it (as "key": "value"), decoded into key_buf and value_buf
 * (len bytes each).  Parsing stops at the first pair that does not end
 * within limit bytes.  Returns the number of pairs kept, or -1 if the body
 * (up to where parsing stopped) is not a list of pairs; *fit is set to the
 * end of the last pair parsed.
 */
static int
parse_pairs(const char *body, int len, int limit, char *key_buf,
			char *value_buf, StringInfo json, int *fit)
{
	int			p = 0;
	int			kept = 0;

	*fit = 0;
	for (;;)
	{
		int			key_start;
		int			key_end;
		int			raw;
		int			klen;
		int			vlen;

		while (p < len && (scanner_isspace(body[p]) || body[p] == ','))
			p++;
		if (p >= len)
			return kept;
		/* key: up to whitespace or "=" */
		key_start = p;
		while (p < len && !scanner_isspace(body[p]) && body[p] != '=' &&
			   body[p] != ',' && body[p] != '\'')
			p++;
		key_end = p;
		while (p < len && scanner_isspace(body[p]))
			p++;
		if (key_end == key_start || p >= len || body[p] != '=')
			return -1;
		p++;
		while (p < len && scanner_isspace(body[p]))
			p++;
		if (p >= len || body[p] != '\'')
			return -1;
		p++;
		/* value: to the closing quote, a backslash escaping the next byte */
		raw = 0;
		while (p < len && body[p] != '\'')
		{
			if (body[p] == '\\' && p + 1 < len)
				p++;
			if (value_buf != NULL)
				value_buf[raw] = body[p];
			raw++;
			p++;
		}
		if (p >= len)
			return -1;
		p++;					/* the closing quote */
		if (p > limit)
			return kept;
		*fit = p;
		if (value_buf == NULL)
			continue;
		klen = url_decode(body + key_start, key_end - key_start, key_buf);
		vlen = url_decode(value_buf, raw, value_buf);
		if (!decoded_ok(key_buf, klen) || !decoded_ok(value_buf, vlen))
			continue;
		kept++;
		if (json != NULL)
		{
			key_buf[klen] = '\0';
			value_buf[vlen] = '\0';
			ph_json_str(json, key_buf, value_buf);
		}
	}
}

/*
 * Of a comment's body of len bytes: how many of its first bytes to keep so
 * that at most limit bytes hold only whole pairs, at least one of them
 * kept; 0 if the body is not a list of pairs (up to limit) or none is kept.
 * No allocation: decodes into buffers on the stack, limit being at most
 * PH_XACT_TAGS_SIZE - 1.
 */
int
ph_sql_tags_fit(const char *body, int len, int limit)
{
	char		key_buf[PH_XACT_TAGS_SIZE];
	char		value_buf[PH_XACT_TAGS_SIZE];
	int			fit;
	int			kept;

	Assert(limit < PH_XACT_TAGS_SIZE);
	/* no pair may be longer than limit: decoding stops before it */
	kept = parse_pairs(body, len, limit, NULL, NULL, NULL, &fit);
	if (kept < 0 || fit == 0)
		return 0;
	kept = parse_pairs(body, fit, fit, key_buf, value_buf, NULL, &fit);
	return kept > 0 ? fit : 0;
}

/*
 * The tags of a sqlcommenter comment's body (as ph_sql_tags_fit kept it),
 * as the text of a JSON object, or NULL when it has none.
 */
char *
ph_sql_tags_json(const char *body)
{
	StringInfoData buf;
	int			len;
	int			fit;
	char	   *key_buf;
	char	   *value_buf;

	if (body == NULL || body[0] == '\0')
		return NULL;
	len = strlen(body);
	key_buf = palloc(len + 1);
	value_buf = palloc(len + 1);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	if (parse_pairs(body, len, len, key_buf, value_buf, &buf, &fit) <= 0)
		return NULL;
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* ---- a statement's text ---- */

/*
 * A block comment of s from start to end: is it a sqlcommenter comment?
 * If so, record its body in out.
 */
static bool
tags_comment(const char *s, int start, int end, PhSqlText *out)
{
	int			len = end - start - 4;
	int			fit;

	if (len <= 0)
		return false;
	fit = ph_sql_tags_fit(s + start + 2, len, Min(len, PH_XACT_TAGS_SIZE - 1));
	if (fit == 0)
		return false;
	out->tags = start + 2;
	out->tags_len = fit;
	return true;
}

/*
 * The text of the statement of source at location, of len bytes (0 or
 * less: to the end of source), as the parser gave them:
 *
 * - widened back to from (<= location) over the comments and whitespace
 *   between them, when only those and semicolons are there: PostgreSQL 18
 *   starts a statement at its first token, and a comment before it is the
 *   statement's (the caller passes the end of the statement before it in
 *   the same message, or 0);
 * - trimmed of whitespace (as CleanQuerytext does);
 * - with want_tags, its sqlcommenter comment: the comment that ends it,
 *   else the first that starts it (after "--" comments).
 *
 * Scans only the statement (and from..location): the text is lexed only
 * when it starts or ends as a comment.
 */
pg_attribute_hot void
ph_sql_statement(const char *source, int from, int location, int len,
				 bool std_strings, bool want_tags, PhSqlText *out)
{
	int			start;
	int			end;

	out->tags = -1;				/* tags_len below: set together, they were
								 * one 8-byte constant read from .rodata */
	if (location < 0)
	{
		location = 0;
		len = 0;
	}
	end = len > 0 ? location + len : location + (int) strlen(source + location);

	start = location;
	if (from >= 0 && from < location)
	{
		int			pos = from;
		int			candidate = from;
		SqlToken	t;

		while ((t = next_token(source, &pos, location, std_strings)) != TOK_END)
		{
			if (t == TOK_SEMICOLON)
				candidate = pos;
			else if (t != TOK_SPACE && t != TOK_LINE_COMMENT && t != TOK_BLOCK_COMMENT)
			{
				candidate = location;
				break;
			}
		}
		start = candidate;
	}

	while (start < end && scanner_isspace(source[start]))
		start++;
	while (end > start && scanner_isspace(source[end - 1]))
		end--;
	out->start = start;
	out->end = end;
	out->tags_len = 0;

	if (want_tags && end - start >= 4 &&
		((source[start] == '/' && source[start + 1] == '*') ||
		 (source[start] == '-' && source[start + 1] == '-') ||
		 (source[end - 2] == '*' && source[end - 1] == '/')))
	{
		int			pos = start;
		int			first = -1;
		int			first_end = -1;
		int			last = -1;
		int			last_end = -1;
		bool		seen_token = false;
		SqlToken	t;

		for (;;)
		{
			int			token_start = pos;

			t = next_token(source, &pos, end, std_strings);
			if (t == TOK_END || t == TOK_UNTERMINATED)
				break;
			if (t == TOK_BLOCK_COMMENT)
			{
				if (!seen_token && first < 0)
				{
					first = token_start;
					first_end = pos;
				}
				last = token_start;
				last_end = pos;
			}
			else if (t == TOK_SEMICOLON || t == TOK_OTHER)
			{
				seen_token = true;
				last = -1;
			}
			else if (t == TOK_LINE_COMMENT)
				last = -1;
		}
		/* an unterminated literal: the text is not what the server read */
		if (t == TOK_UNTERMINATED)
			return;
		if (last >= 0 && last_end == end && tags_comment(source, last, last_end, out))
			return;
		if (first >= 0)
			(void) tags_comment(source, first, first_end, out);
	}
}
