/*-------------------------------------------------------------------------
 *
 * app_histogram.c
 *		The log-scale histogram of transaction durations of the
 *		per-application accounting: a duration's bucket, a bucket's value,
 *		and a quantile.  Pure functions: no shared state.
 *
 * (ph_hist_bucket(), a duration's bucket, is inline in app_accounting.h:
 * the hot path.)  PH_HIST_BUCKETS buckets: exact below 8 microseconds, then 8 buckets per
 * power of two up to 2^PH_HIST_MAX_EXPONENT usec (longer ones in the
 * last); a percentile reports the middle of its bucket, within 1/16
 * (6.25 %) of the true value (never above the exact maximum).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "app_accounting.h"

/* The value a bucket reports: its middle (exact below 8 usec). */
int64
ph_hist_value(int bucket)
{
	int			e;
	int64		lower;

	if (bucket < 8)
		return bucket;
	e = (bucket - 8) / 8 + 3;
	lower = (int64) (8 + (bucket - 8) % 8) << (e - 3);
	return lower + ((int64) 1 << (e - 3)) / 2;
}

/*
 * The p-quantile (0 < p <= 1) of a histogram (nearest rank), capped by the
 * exact maximum; -1 if it is empty.
 */
int64
ph_hist_quantile(const uint64 *hist, double p, int64 max)
{
	uint64		total = 0;
	uint64		rank;
	uint64		seen = 0;

	for (int i = 0; i < PH_HIST_BUCKETS; i++)
		total += hist[i];
	if (total == 0)
		return -1;
	rank = (uint64) ceil(p * (double) total);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < PH_HIST_BUCKETS; i++)
	{
		seen += hist[i];
		if (seen >= rank)
			return Min(ph_hist_value(i), max);
	}
	return max;
}
