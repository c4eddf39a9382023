/*
 * tap.h: a minimal TAP producer for unit tests, so the harness counts every case.
 * Usage: ok(cond, "name", ...); is_int(a, b, "name"); is_str(a, b, "name"); return tap_done();
 */
#ifndef SLUICE_TAP_H
#define SLUICE_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_count;
static int tap_failed;

__attribute__((format(printf, 2, 3))) static int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    tap_count++;
    printf("%sok %d - ", cond ? "" : "not ", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond)
        tap_failed++;
    fflush(stdout);
    return cond;
}

#define is_int(got, want, ...)                                                                 \
    do {                                                                                       \
        long long tap_g_ = (long long)(got), tap_w_ = (long long)(want);                       \
        if (!ok(tap_g_ == tap_w_, __VA_ARGS__))                                                \
            printf("#   got %lld, want %lld\n", tap_g_, tap_w_);                               \
    } while (0)

#define is_str(got, want, ...)                                                                 \
    do {                                                                                       \
        const char *tap_g_ = (got), *tap_w_ = (want);                                          \
        int tap_same_ = (tap_g_ == NULL && tap_w_ == NULL) ||                                  \
                        (tap_g_ && tap_w_ && strcmp(tap_g_, tap_w_) == 0);                     \
        if (!ok(tap_same_, __VA_ARGS__))                                                       \
            printf("#   got \"%s\", want \"%s\"\n", tap_g_ ? tap_g_ : "(null)",               \
                   tap_w_ ? tap_w_ : "(null)");                                                \
    } while (0)

static int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

#endif
