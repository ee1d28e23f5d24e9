/*-------------------------------------------------------------------------
 *
 * history.c
 *		Multi-resolution history in shared memory: a ring of raw samples
 *		(pool_health.history_raw_samples of them) and a ring of per-minute
 *		aggregates (pool_health.history_retention minutes), and its file,
 *		written by the postmaster at a clean shutdown and read back at the
 *		next start, as pg_stat_statements does with its statistics.
 *
 * Shared state: one HistoryShared ("pool_health history"), its own LWLock
 * (tranche "pool_health history") held exclusively to append a sample
 * (the worker) and shared to copy the rings out; the totals of
 * terminations and refusals are atomics, added to by the processes that
 * end a session or refuse a login.  Saving and loading run in the
 * postmaster when no other process is attached, without the lock.
 *
 * With the defaults (3600 raw samples, 7 days of minutes) the rings take
 * about 0.9 MB.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_crc32c.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "history.h"
#include "settings.h"
#include "shmem.h"

#define HISTORY_FILE		PGSTAT_STAT_PERMANENT_DIRECTORY "/pool_health.history"
#define HISTORY_MAGIC		0x50484831	/* "PHH1" */
#define HISTORY_FORMAT		1

/* The file: this header, the entries oldest first, then a CRC of both. */
typedef struct HistoryFileHeader
{
	uint32		magic;
	uint32		format;
	uint32		sample_size;
	uint32		minute_size;
	int32		raw_count;
	int32		minute_count;
	uint64		terminations;
	uint64		refusals;
	PhMinute	current;
} HistoryFileHeader;

/*
 * The rings: each holds its newest "count" entries, the next one going to
 * [next].  raw[] and minutes[] follow the struct in shared memory.
 */
typedef struct HistoryShared
{
	LWLock	   *lock;			/* fixed at start */
	int			raw_capacity;	/* fixed at start */
	int			raw_count;		/* lock */
	int			raw_next;		/* lock */
	int			minute_capacity;	/* fixed at start */
	int			minute_count;	/* lock */
	int			minute_next;	/* lock */
	PhMinute	current;		/* the minute being aggregated (samples 0:
								 * none); lock */
	PhSample   *raw;			/* fixed at start; entries: lock */
	PhMinute   *minutes;		/* likewise */
	pg_atomic_uint64 terminations;	/* sessions ended since the history
									 * began; atomic */
	pg_atomic_uint64 refusals;	/* connections refused, likewise */
} HistoryShared;

static HistoryShared *history = NULL;

static void history_save(void);
static void history_load(void);

static Size
history_shmem_size(void)
{
	Size		size = MAXALIGN(sizeof(HistoryShared));

	size = add_size(size, MAXALIGN(mul_size(sizeof(PhSample), ph_history_raw_samples)));
	return add_size(size, mul_size(sizeof(PhMinute), ph_history_minutes));
}

void
ph_history_shmem_request(void)
{
	RequestAddinShmemSpace(history_shmem_size());
	RequestNamedLWLockTranche("pool_health history", 1);
}

/* At postmaster exit: keep the history for the next start (not after a crash). */
static void
history_shutdown(int code, Datum arg)
{
	if (code == 0 && history != NULL)
		history_save();
}

static bool history_created = false;	/* by this process, empty */

/* Caller holds AddinShmemInitLock. */
void
ph_history_shmem_startup(void)
{
	bool		found;
	char	   *storage;

	history = ShmemInitStruct("pool_health history", history_shmem_size(), &found);
	history_created = !found;
	if (!found)
	{
		/* the settings' minima (10 and 60) keep the rings' modulos nonzero */
		Assert(ph_history_raw_samples > 0 && ph_history_minutes > 0);
		memset(history, 0, sizeof(HistoryShared));
		history->lock = &(GetNamedLWLockTranche("pool_health history"))->lock;
		history->raw_capacity = ph_history_raw_samples;
		history->minute_capacity = ph_history_minutes;
		storage = (char *) history + MAXALIGN(sizeof(HistoryShared));
		history->raw = (PhSample *) storage;
		history->minutes = (PhMinute *)
			(storage + MAXALIGN(sizeof(PhSample) * ph_history_raw_samples));
		pg_atomic_init_u64(&history->terminations, 0);
		pg_atomic_init_u64(&history->refusals, 0);
	}
}

/*
 * After the shared memory is made (AddinShmemInitLock released): in the
 * postmaster, fill new rings from the file, and save them to it at a
 * clean exit.
 */
void
ph_history_restore(void)
{
	if (IsUnderPostmaster || history == NULL)
		return;
	if (history_created)
		history_load();
	on_shmem_exit(history_shutdown, (Datum) 0);
}

/* Count sessions ended, connections refused (any process; no lock). */
void
ph_history_count_terminations(uint64 n)
{
	if (history != NULL)
		pg_atomic_fetch_add_u64(&history->terminations, n);
}

void
ph_history_count_refusal(void)
{
	if (history != NULL)
		pg_atomic_fetch_add_u64(&history->refusals, 1);
}

/* The totals since the history began (0 without the preload). */
void
ph_history_totals(uint64 *terminations, uint64 *refusals)
{
	*terminations = history ? pg_atomic_read_u64(&history->terminations) : 0;
	*refusals = history ? pg_atomic_read_u64(&history->refusals) : 0;
}

static TimestampTz
minute_start(TimestampTz at)
{
	TimestampTz rem = at % USECS_PER_MINUTE;

	return at - (rem < 0 ? rem + USECS_PER_MINUTE : rem);
}

static void
push_minute(const PhMinute *minute)
{
	history->minutes[history->minute_next] = *minute;
	history->minute_next = (history->minute_next + 1) % history->minute_capacity;
	history->minute_count = Min(history->minute_count + 1, history->minute_capacity);
}

/* Worker: add a raw sample, and fold it into its minute. */
void
ph_history_append(const PhSample *sample)
{
	PhMinute   *cur = &history->current;
	TimestampTz minute = minute_start(sample->at);

	LWLockAcquire(history->lock, LW_EXCLUSIVE);
	history->raw[history->raw_next] = *sample;
	history->raw_next = (history->raw_next + 1) % history->raw_capacity;
	history->raw_count = Min(history->raw_count + 1, history->raw_capacity);

	if (cur->samples > 0 && cur->at != minute)
	{
		push_minute(cur);
		cur->samples = 0;
	}
	if (cur->samples == 0)
	{
		memset(cur, 0, sizeof(PhMinute));
		cur->at = minute;
		cur->used_min = sample->used;
		cur->used_max = sample->used;
	}
	cur->samples++;
	cur->usable = sample->usable;
	cur->used_min = Min(cur->used_min, sample->used);
	cur->used_max = Max(cur->used_max, sample->used);
	cur->used_sum += sample->used;
	cur->active_sum += sample->active;
	cur->idle_sum += sample->idle;
	cur->idle_in_transaction_sum += sample->idle_in_transaction;
	cur->waiting_max = Max(cur->waiting_max, sample->waiting);
	cur->leaked_max = Max(cur->leaked_max, sample->leaked);
	cur->terminated += sample->terminated;
	cur->refused += sample->refused;
	cur->worst_level = Max(cur->worst_level, sample->level);
	LWLockRelease(history->lock);
}

/*
 * Copy the raw samples, oldest first, into out (room for raw_capacity).
 * Caller holds the lock, shared at least (or is alone: the postmaster).
 */
static int
copy_raw(PhSample *out)
{
	int			first = (history->raw_next - history->raw_count + history->raw_capacity) %
		history->raw_capacity;

	for (int i = 0; i < history->raw_count; i++)
		out[i] = history->raw[(first + i) % history->raw_capacity];
	return history->raw_count;
}

/*
 * Copy the minutes, oldest first, then the minute in progress, into out
 * (room for minute_capacity + 1).  Caller holds the lock, shared at least
 * (or is alone).
 */
static int
copy_minutes(PhMinute *out)
{
	int			first = (history->minute_next - history->minute_count +
						 history->minute_capacity) % history->minute_capacity;
	int			n = history->minute_count;

	for (int i = 0; i < n; i++)
		out[i] = history->minutes[(first + i) % history->minute_capacity];
	if (history->current.samples > 0)
		out[n++] = history->current;
	return n;
}

/*
 * The rings, copied out under the lock (shared) into memory allocated
 * before it is taken: raw samples oldest first, then the minutes oldest
 * first with the minute in progress last.  Without the preload, the error
 * of the feature (what) that needs it.
 */
void
ph_history_copy(const char *what, PhSample **raw, int *nraw, PhMinute **minutes,
				int *nminutes)
{
	ph_require_preload(what);
	/* the capacities are fixed at server start */
	*raw = palloc(sizeof(PhSample) * Max(history->raw_capacity, 1));
	*minutes = palloc(sizeof(PhMinute) * (history->minute_capacity + 1));
	LWLockAcquire(history->lock, LW_SHARED);
	*nraw = copy_raw(*raw);
	*nminutes = copy_minutes(*minutes);
	LWLockRelease(history->lock);
}

/*
 * Write the history to its file (postmaster, at a clean shutdown).  A
 * failure is logged and costs only the history.
 */
static void
history_save(void)
{
	HistoryFileHeader header;
	PhSample   *raw = palloc(sizeof(PhSample) * Max(history->raw_capacity, 1));
	PhMinute   *minutes = palloc(sizeof(PhMinute) * (history->minute_capacity + 1));
	pg_crc32c	crc;
	FILE	   *file;
	bool		written;
	const char *tmp = HISTORY_FILE ".tmp";

	memset(&header, 0, sizeof(header));
	header.magic = HISTORY_MAGIC;
	header.format = HISTORY_FORMAT;
	header.sample_size = sizeof(PhSample);
	header.minute_size = sizeof(PhMinute);
	header.raw_count = copy_raw(raw);
	header.minute_count = history->minute_count;
	(void) copy_minutes(minutes);
	header.current = history->current;
	header.terminations = pg_atomic_read_u64(&history->terminations);
	header.refusals = pg_atomic_read_u64(&history->refusals);

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, &header, sizeof(header));
	COMP_CRC32C(crc, raw, sizeof(PhSample) * header.raw_count);
	COMP_CRC32C(crc, minutes, sizeof(PhMinute) * header.minute_count);
	FIN_CRC32C(crc);

	/*
	 * Write, then close exactly once whatever happened (a failed write,
	 * say a full disk, must not close the file a second time).
	 */
	file = AllocateFile(tmp, PG_BINARY_W);
	if (file == NULL)
		written = false;
	else
	{
		written = fwrite(&header, sizeof(header), 1, file) == 1 &&
			fwrite(raw, sizeof(PhSample), header.raw_count, file) == (size_t) header.raw_count &&
			fwrite(minutes, sizeof(PhMinute), header.minute_count, file) == (size_t) header.minute_count &&
			fwrite(&crc, sizeof(crc), 1, file) == 1;
		if (FreeFile(file) != 0)
			written = false;
	}
	if (!written)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write pool_health history file \"%s\": %m", tmp)));
		unlink(tmp);
		return;
	}
	(void) durable_rename(tmp, HISTORY_FILE, LOG);
}

/*
 * The bounds of a restored entry.  No count of sessions can exceed
 * MAX_BACKENDS (2^18 - 1, the server's own limit); a minute holds at most
 * one sample per millisecond (pool_health.sample_interval is at least
 * 10 ms).  Within them, no sum of a minute overflows.
 */
#define COUNT_MAX			0x3FFFF
#define MINUTE_SAMPLES_MAX	((int32) (USECS_PER_MINUTE / 1000))

static bool
count_ok(int64 value)
{
	return value >= 0 && value <= COUNT_MAX;
}

/*
 * Is a raw sample from the file one the worker could have taken, no later
 * than now and not before the one kept before it (prev_at)?
 */
static bool
sample_valid(const PhSample *s, TimestampTz prev_at, TimestampTz now)
{
	return s->at > 0 && s->at <= now && s->at >= prev_at &&
		count_ok(s->usable) && count_ok(s->used) &&
		count_ok(s->active) && count_ok(s->idle) &&
		count_ok(s->idle_in_transaction) &&
		(int64) s->active + s->idle + s->idle_in_transaction <= s->used &&
		count_ok(s->waiting) && s->waiting <= s->used &&
		count_ok(s->leaked) && s->leaked <= s->used &&
		s->terminated >= 0 && s->refused >= 0 &&
		s->level <= PH_LEVEL_EXHAUSTED;
}

/*
 * Is a minute from the file one the worker could have aggregated: the
 * start of a minute, after the one kept before it (prev_at) and not in
 * the future, at least one sample, min <= avg <= max (as sums: no
 * division), sums and maxima within what its samples allow?
 */
static bool
minute_valid(const PhMinute *m, TimestampTz prev_at, TimestampTz now)
{
	return m->at > 0 && m->at % USECS_PER_MINUTE == 0 &&
		m->at > prev_at && m->at <= now &&
		m->samples >= 1 && m->samples <= MINUTE_SAMPLES_MAX &&
		count_ok(m->usable) &&
		count_ok(m->used_min) && count_ok(m->used_max) &&
		m->used_min <= m->used_max &&
		m->used_sum >= (int64) m->used_min * m->samples &&
		m->used_sum <= (int64) m->used_max * m->samples &&
		m->active_sum >= 0 && m->active_sum <= m->used_sum &&
		m->idle_sum >= 0 && m->idle_sum <= m->used_sum &&
		m->idle_in_transaction_sum >= 0 &&
		m->idle_in_transaction_sum <= m->used_sum &&
		/* each at most used_sum: the sum cannot overflow */
		m->active_sum + m->idle_sum + m->idle_in_transaction_sum <= m->used_sum &&
		count_ok(m->waiting_max) && m->waiting_max <= m->used_max &&
		count_ok(m->leaked_max) && m->leaked_max <= m->used_max &&
		m->terminated >= 0 && m->refused >= 0 &&
		m->worst_level <= PH_LEVEL_EXHAUSTED;
}

/* Ignore a history file that cannot be ours, or is damaged. */
static void
reject_file(const char *why)
{
	ereport(WARNING,
			(errmsg("ignoring pool_health history file \"%s\": %s",
					HISTORY_FILE, why),
			 errdetail("The history starts empty.")));
}

/*
 * Read the history back (postmaster, at start, into fresh rings).  The
 * file is removed afterwards, so that a crash never restores old data.
 * When the rings are now smaller, the newest entries are kept.
 */
static void
history_load(void)
{
	HistoryFileHeader header;
	struct stat st;
	char	   *data = NULL;
	FILE	   *file;
	Size		expected;
	pg_crc32c	crc;
	pg_crc32c	stored;
	PhSample   *raw;
	PhMinute   *minutes;
	TimestampTz now;
	TimestampTz prev_at;
	int			bad_samples = 0;
	int			bad_minutes = 0;

	if (stat(HISTORY_FILE, &st) != 0)
		return;					/* no file: nothing to restore */

	file = AllocateFile(HISTORY_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not read pool_health history file \"%s\": %m", HISTORY_FILE)));
		return;
	}

	if (st.st_size < (off_t) (sizeof(header) + sizeof(crc)) ||
		st.st_size > (off_t) MaxAllocSize)
	{
		reject_file("its size is not that of a history file");
		goto done;
	}
	data = palloc(st.st_size);
	if (fread(data, 1, st.st_size, file) != (size_t) st.st_size)
	{
		reject_file("it could not be read whole");
		goto done;
	}
	memcpy(&header, data, sizeof(header));
	if (header.magic != HISTORY_MAGIC || header.format != HISTORY_FORMAT ||
		header.sample_size != sizeof(PhSample) ||
		header.minute_size != sizeof(PhMinute))
	{
		reject_file("it was not written by this version of pool_health");
		goto done;
	}
	if (header.raw_count < 0 || header.minute_count < 0 ||
		header.raw_count > 16 * 1024 * 1024 || header.minute_count > 16 * 1024 * 1024)
	{
		reject_file("its header is damaged");
		goto done;
	}
	expected = sizeof(header) + sizeof(PhSample) * (Size) header.raw_count +
		sizeof(PhMinute) * (Size) header.minute_count + sizeof(crc);
	if ((Size) st.st_size != expected)
	{
		reject_file("it is truncated or has trailing data");
		goto done;
	}
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, data, expected - sizeof(crc));
	FIN_CRC32C(crc);
	memcpy(&stored, data + expected - sizeof(crc), sizeof(crc));
	if (!EQ_CRC32C(crc, stored))
	{
		reject_file("its checksum does not match");
		goto done;
	}

	/*
	 * A file with a valid checksum can still hold entries no worker
	 * wrote (edited, or written by a build with a bug): each entry is
	 * checked before it is kept, and the rest of the history is restored
	 * without the bad ones.  The minutes are kept in order, the minute in
	 * progress after them.
	 */
	raw = (PhSample *) (data + sizeof(header));
	minutes = (PhMinute *) (data + sizeof(header) + sizeof(PhSample) * header.raw_count);
	now = GetCurrentTimestamp();
	prev_at = 0;
	for (int i = Max(header.raw_count - history->raw_capacity, 0); i < header.raw_count; i++)
	{
		if (!sample_valid(&raw[i], prev_at, now))
		{
			bad_samples++;
			continue;
		}
		prev_at = raw[i].at;
		history->raw[history->raw_next] = raw[i];
		history->raw_next = (history->raw_next + 1) % history->raw_capacity;
		history->raw_count = Min(history->raw_count + 1, history->raw_capacity);
	}
	prev_at = 0;
	for (int i = Max(header.minute_count - history->minute_capacity, 0); i < header.minute_count; i++)
	{
		if (!minute_valid(&minutes[i], prev_at, now))
		{
			bad_minutes++;
			continue;
		}
		prev_at = minutes[i].at;
		push_minute(&minutes[i]);
	}
	memset(&history->current, 0, sizeof(PhMinute));
	if (header.current.samples != 0)
	{
		if (minute_valid(&header.current, prev_at, now))
			history->current = header.current;
		else
			bad_minutes++;
	}
	pg_atomic_write_u64(&history->terminations, header.terminations);
	pg_atomic_write_u64(&history->refusals, header.refusals);
	if (bad_samples > 0 || bad_minutes > 0)
		ereport(WARNING,
				(errmsg("pool_health history file \"%s\" holds %d samples and %d minutes that are not valid",
						HISTORY_FILE, bad_samples, bad_minutes),
				 errdetail("They were dropped; the rest of the history is restored."),
				 errhint("A sample or minute is valid when its counts are within the server's limits, its minimum is at most its average and its average at most its maximum, and its time follows the one before and is not in the future.")));
	ereport(LOG,
			(errmsg("pool_health restored %d samples and %d minutes of history",
					history->raw_count, history->minute_count)));

done:
	FreeFile(file);
	if (data)
		pfree(data);
	unlink(HISTORY_FILE);
}
