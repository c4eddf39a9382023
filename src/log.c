/*
 * log.c: writes log lines to stderr or syslog. The settings below are the process's only log
 * state; they are set once at start and on reload, from the main thread.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

struct log_settings {
    int verbose;
    bool use_syslog;
    char ident[64];
    int pid; /* the process's, for each line: getpid() is a system call, and a login logs twice */
};

static struct log_settings log_settings = { .verbose = 0, .use_syslog = false, .ident = "sluice" };

/* Each thread's last time stamp, formatted once a second rather than once a line. */
struct log_stamp {
    time_t second;
    char text[32];
};
static _Thread_local struct log_stamp log_stamp = { .second = -1 };

static int syslog_facility_from_name(const char *name)
{
    static const struct { const char *name; int value; } facilities[] = {
        { "auth", LOG_AUTH },     { "authpriv", LOG_AUTHPRIV },
        { "daemon", LOG_DAEMON }, { "user", LOG_USER },     { "local0", LOG_LOCAL0 },
        { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
        { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },
        { "local7", LOG_LOCAL7 },
    };
    for (size_t i = 0; name && i < sizeof(facilities) / sizeof(facilities[0]); i++)
        if (strcasecmp(name, facilities[i].name) == 0)
            return facilities[i].value;
    return LOG_DAEMON;
}

void log_configure(int verbose, bool use_syslog, const char *ident, const char *facility)
{
    log_settings.verbose = verbose;
    log_settings.pid = (int)getpid();
    if (log_settings.use_syslog)
        closelog();
    log_settings.use_syslog = use_syslog;
    snprintf(log_settings.ident, sizeof(log_settings.ident), "%s", ident ? ident : "sluice");
    if (use_syslog)
        openlog(log_settings.ident, LOG_PID, syslog_facility_from_name(facility));
}

bool log_enabled(enum log_level level)
{
    return (int)level <= LOG_LEVEL_INFO + log_settings.verbose;
}

static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR: return "ERROR";
    case LOG_LEVEL_WARNING: return "WARNING";
    case LOG_LEVEL_INFO: return "LOG";
    case LOG_LEVEL_DEBUG: return "DEBUG";
    case LOG_LEVEL_TRACE: return "TRACE";
    }
    return "LOG";
}

static int syslog_priority(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR: return LOG_ERR;
    case LOG_LEVEL_WARNING: return LOG_WARNING;
    case LOG_LEVEL_INFO: return LOG_INFO;
    default: return LOG_DEBUG;
    }
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    if (log_settings.use_syslog) {
        syslog(syslog_priority(level), "%s", line);
        return;
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    if (now.tv_sec != log_stamp.second) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        strftime(log_stamp.text, sizeof(log_stamp.text), "%Y-%m-%d %H:%M:%S", &tm);
        log_stamp.second = now.tv_sec;
    }
    /* One write per line, without stdio's lock on stderr: workers log at once, and a line never
     * mixes with another (a write to a pipe of under PIPE_BUF bytes is atomic). */
    char out[sizeof(line) + 128];
    int n = snprintf(out, sizeof(out), "%s.%03d UTC [%d] %s %s\n", log_stamp.text, (int)(now.tv_usec / 1000),
                     log_settings.pid ? log_settings.pid : (int)getpid(), level_name(level), line);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(out) ? (size_t)n : sizeof(out) - 1;
    if (len == sizeof(out) - 1)
        out[len - 1] = '\n'; /* cut: still one line */
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, out, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to say it */
        memmove(out, out + w, len - (size_t)w);
        len -= (size_t)w;
    }
}

bool log_rate_allow(struct log_rate *rate, double now, double interval, unsigned long *held_back)
{
    if (rate->last_logged > 0 && now - rate->last_logged < interval) {
        rate->held_back++;
        return false;
    }
    *held_back = rate->held_back;
    rate->held_back = 0;
    rate->last_logged = now;
    return true;
}

bool log_rate_summary_due(struct log_rate *rate, double now, double interval, unsigned long *held_back)
{
    if (rate->held_back == 0 || now - rate->last_logged < interval)
        return false;
    *held_back = rate->held_back;
    rate->held_back = 0;
    rate->last_logged = now;
    return true;
}
