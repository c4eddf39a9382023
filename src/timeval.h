/*
 * timeval.h: durations as the struct timeval libevent's timers and bufferevent timeouts take,
 * and clock_gettime's struct timespec as seconds or microseconds.
 * Settings hold seconds as a double (config.c caps them at MAX_SECONDS, so every one fits).
 */
#ifndef SLUICE_TIMEVAL_H
#define SLUICE_TIMEVAL_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

/* seconds >= 0; the fraction is truncated to whole microseconds. */
static inline struct timeval timeval_from_seconds(double seconds)
{
    time_t whole = (time_t)seconds;
    return (struct timeval){ .tv_sec = whole,
                             .tv_usec = (suseconds_t)((seconds - (double)whole) * 1e6) };
}

static inline struct timeval timeval_from_usec(uint64_t usec)
{
    return (struct timeval){ .tv_sec = (time_t)(usec / 1000000),
                             .tv_usec = (suseconds_t)(usec % 1000000) };
}

static inline double timespec_seconds(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int64_t timespec_usec(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CLOCK_MONOTONIC, for intervals and for what systemd matches (MONOTONIC_USEC). */
static inline int64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return timespec_usec(ts);
}

static inline double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return timespec_seconds(ts);
}

#endif
