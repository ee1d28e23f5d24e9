/*-------------------------------------------------------------------------
 *
 * audit.h
 *		The audit (audit.c): every action on a session, in the server log, in
 *		pool_health.terminations and in two in-memory lists.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PH_AUDIT_H
#define PH_AUDIT_H

#include "ph_model.h"

/* One action on a session, as audit.c records it. */
typedef struct PhAuditEntry
{
	TimestampTz at;
	int			pid;
	NameData	role;
	NameData	database;
	char		application_name[NAMEDATALEN];
	char		client_addr[64];	/* empty: local */
	int32		client_port;	/* -1 Unix socket, 0 unknown */
	TimestampTz backend_start;
	TimestampTz xact_start;
	char		state[32];
	TimestampTz state_change;
	char		query[1024];
	char		xact_first_query[1024]; /* empty: not recorded */
	char		xact_tags[PH_XACT_TAGS_SIZE];	/* comment body; empty: none */
	NameData	policy;			/* empty: a manual call */
	char		reason[256];
	char		action[16];		/* terminate, log */
	bool		dry_run;
	int8		success;		/* 1, 0, or -1 when nothing was sent */
	char		source[32];
	NameData	requested_by;	/* empty: the worker */
	char		limit_name[32]; /* the policy's limit, or the function's
								 * argument (older_than, target_percent) */
	Oid			role_id;		/* the session's login role: visibility
								 * rule, and my_terminations' match */
	int			name_encoding;	/* the encoding role and database are
								 * shown in (ph_name_encoding() of the
								 * process that made the entry) */
} PhAuditEntry;


/* audit.c: the log line, the table row, NOTIFY */
extern void ph_audit_log(const PhAuditEntry *entry);
extern void ph_audit_store(const PhAuditEntry *entry);
extern void ph_audit_record(const PhAuditEntry *entry);
#define PH_AUDIT_COLS 23
extern void ph_audit_datums(const PhAuditEntry *entry, bool visible,
							Datum *values, bool *isnull);
extern void ph_audit_check_version(void);

/* audit_memory.c: the in-memory lists */
extern void ph_audit_shmem_request(void);
extern void ph_audit_shmem_startup(void);
extern void ph_audit_memory_append(const PhAuditEntry *entry);
extern int	ph_audit_capacity(void);
extern int	ph_audit_copy(PhAuditEntry *out, int max);
extern PhAuditEntry *ph_audit_copy_role(Oid role_id, int *count);

#endif							/* PH_AUDIT_H */
