/*
 * errbuf.h: the one way pure modules report why something failed: a formatted message into the
 * caller's buffer (which may be NULL or empty: then nothing is written).
 */
#ifndef SLUICE_ERRBUF_H
#define SLUICE_ERRBUF_H

#include <stddef.h>

void errbuf_set(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
