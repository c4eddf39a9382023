/*
 * log.h: one way to log. Lines go to stderr (systemd-friendly) or syslog, with a level and,
 * where there is one, the connection they concern. Secrets are never passed to these functions.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG, LOG_LEVEL_TRACE };

/* Process-wide logging settings: the only owner of log state. */
void log_configure(int verbose, bool use_syslog, const char *ident, const char *facility);
bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * At most one line per interval for an event that can come in floods (refused clients, running
 * out of descriptors): log_rate_allow says whether this occurrence may be logged, and
 * *held_back how many were not since the last one that was.
 */
struct log_rate {
    double last_logged;
    unsigned long held_back;
};
bool log_rate_allow(struct log_rate *rate, double now, double interval, unsigned long *held_back);
/* Occurrences held back and an interval since the last line: time for a line that counts them. */
bool log_rate_summary_due(struct log_rate *rate, double now, double interval, unsigned long *held_back);

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_write(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                         \
    do {                                                                                       \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                      \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                           \
    } while (0)

#endif
