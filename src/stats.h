/*
 * stats.h: counters and latency histograms kept per pool, read by the admin console, the
 * periodic stats line and the metrics endpoint. Updating one is a few additions on the hot path.
 */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stdint.h>

/* Upper bounds in seconds (Prometheus "le"); one more bucket holds everything larger. */
#define HISTOGRAM_BUCKETS 16
extern const double histogram_bounds[HISTOGRAM_BUCKETS];

struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    uint64_t count;
    double sum;
};

void histogram_observe(struct histogram *h, double seconds);

#endif
