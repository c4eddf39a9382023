/*
 * fuzz_backend.c: what a PostgreSQL server (or something posing as one) sends while sluice logs
 * in to it, read as server.c reads it: bytes arrive in an evbuffer in pieces, each message's
 * header is peeked (conn_peek_header), the whole message pulled up once it is there, and its body
 * handed to the parser for its type. The first input byte sets the piece size, so messages are
 * split at every place a socket read could split them. Checks that each message handed on lies
 * inside what arrived and that the parsers' answers point into the body.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>

#include "conn.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* s lies in body[0..len) and ends there. */
static void check_string(const char *s, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    if (s == NULL)
        return;
    CHECK(p >= body && p < body + len && memchr(p, '\0', (size_t)(body + len - p)) != NULL);
}

static void read_message(uint8_t type, const uint8_t *body, size_t len)
{
    uint32_t code, pid, key;
    const uint8_t *payload;
    size_t payload_len;
    const char *name, *value;
    struct proto_error error;
    char status;

    switch (type) {
    case 'R':
        if (proto_parse_auth_request(body, len, &code, &payload, &payload_len) != PROTO_OK)
            return;
        CHECK(payload_len <= len && (payload_len == 0 || (payload >= body && payload + payload_len <= body + len)));
        if (code == AUTH_REQ_SASL)
            (void)proto_sasl_offers(payload, payload_len, "SCRAM-SHA-256");
        return;
    case 'E':
    case 'N':
        if (proto_parse_error(body, len, &error) != PROTO_OK)
            return;
        check_string(error.severity, body, len);
        check_string(error.sqlstate, body, len);
        check_string(error.message, body, len);
        check_string(error.detail, body, len);
        check_string(error.hint, body, len);
        return;
    case 'S':
        if (proto_parse_parameter_status(body, len, &name, &value) != PROTO_OK)
            return;
        check_string(name, body, len);
        check_string(value, body, len);
        return;
    case 'K':
        (void)proto_parse_backend_key_data(body, len, &pid, &key);
        return;
    case 'Z':
        if (proto_parse_ready_for_query(body, len, &status) == PROTO_OK)
            CHECK(status == 'I' || status == 'T' || status == 'E');
        return;
    default:
        return;
    }
}

/* Takes every whole message off the front of in; false once the stream is refused. */
static bool read_messages(struct evbuffer *in)
{
    for (;;) {
        uint8_t type;
        uint32_t msg_len;
        enum proto_result r = conn_peek_header(in, CONN_MAX_INSPECTED_MESSAGE, &type, &msg_len);

        if (r == PROTO_INCOMPLETE)
            return true;
        if (r == PROTO_ERROR)
            return false;
        CHECK(msg_len >= 4 && msg_len <= CONN_MAX_INSPECTED_MESSAGE);
        const uint8_t *msg = conn_pullup_message(in, msg_len);
        if (msg == NULL) {
            CHECK(evbuffer_get_length(in) < (size_t)msg_len + 1);
            return true;
        }
        CHECK(msg[0] == type);
        /* An exact copy of the body, so the sanitizer sees a read past it. */
        size_t body_len = msg_len - 4;
        uint8_t *body = malloc(body_len ? body_len : 1);
        CHECK(body != NULL);
        memcpy(body, msg + PROTO_HEADER_LEN, body_len);
        read_message(type, body, body_len);
        free(body);
        CHECK(evbuffer_drain(in, (size_t)msg_len + 1) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = (size_t)data[0] + 1;
    struct evbuffer *in = evbuffer_new();

    CHECK(in != NULL);
    for (size_t pos = 1; pos < size; pos += piece) {
        size_t n = size - pos < piece ? size - pos : piece;
        CHECK(evbuffer_add(in, data + pos, n) == 0);
        if (!read_messages(in))
            break;
    }
    evbuffer_free(in);
    return 0;
}
