/* stats.c: latency histograms with fixed bucket bounds (100 µs to 10 s). */
#include "stats.h"

const double histogram_bounds[HISTOGRAM_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0,
};

void histogram_observe(struct histogram *h, double seconds)
{
    int i = 0;
    if (seconds < 0)
        seconds = 0;
    while (i < HISTOGRAM_BUCKETS && seconds > histogram_bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += seconds;
}
