/*-------------------------------------------------------------------------
 *
 * sql_comments.h
 *		SQL text (sql_comments.c): a statement's extent in a message and its
 *		sqlcommenter tags, found with the server's lexer rules.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_SQL_COMMENTS_H
#define PH_SQL_COMMENTS_H

#include "ph_model.h"

typedef struct PhSqlText
{
	int			start;			/* the statement's text: [start, end) */
	int			end;
	int			tags;			/* its sqlcommenter comment's body, or -1 */
	int			tags_len;		/* the bytes of it that hold whole pairs */
} PhSqlText;
extern void ph_sql_statement(const char *source, int from, int location,
							 int len, bool std_strings, bool want_tags,
							 PhSqlText *out);
extern int	ph_sql_tags_fit(const char *body, int len, int limit);
extern char *ph_sql_tags_json(const char *body);

#endif							/* PH_SQL_COMMENTS_H */
