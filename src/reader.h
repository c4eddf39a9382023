/*
 * reader.h: a cursor over a message body from the network. Every read checks that the bytes it
 * needs are inside the body; nothing here trusts a length it did not check.
 */
#ifndef SLUICE_READER_H
#define SLUICE_READER_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct byte_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
};

static inline bool read_byte(struct byte_reader *r, uint8_t *out)
{
    if (r->pos >= r->len)
        return false;
    *out = r->buf[r->pos++];
    return true;
}

static inline bool read_u16(struct byte_reader *r, uint16_t *out)
{
    uint16_t net;
    if (r->len - r->pos < sizeof(net))
        return false;
    memcpy(&net, r->buf + r->pos, sizeof(net));
    *out = ntohs(net);
    r->pos += sizeof(net);
    return true;
}

static inline bool read_u32(struct byte_reader *r, uint32_t *out)
{
    uint32_t net;
    if (r->len - r->pos < sizeof(net))
        return false;
    memcpy(&net, r->buf + r->pos, sizeof(net));
    *out = ntohl(net);
    r->pos += sizeof(net);
    return true;
}

static inline bool read_i32(struct byte_reader *r, int32_t *out)
{
    uint32_t value;
    if (!read_u32(r, &value))
        return false;
    *out = (int32_t)value;
    return true;
}

/* A NUL-terminated string whose NUL lies inside the body. */
static inline bool read_cstring(struct byte_reader *r, const char **out)
{
    const uint8_t *start, *nul;
    if (r->pos >= r->len)
        return false;
    start = r->buf + r->pos;
    nul = memchr(start, '\0', r->len - r->pos);
    if (nul == NULL)
        return false;
    *out = (const char *)start;
    r->pos += (size_t)(nul - start) + 1;
    return true;
}

static inline bool skip_bytes(struct byte_reader *r, size_t n)
{
    if (r->len - r->pos < n)
        return false;
    r->pos += n;
    return true;
}

static inline bool reader_at_end(const struct byte_reader *r)
{
    return r->pos == r->len;
}

#endif
