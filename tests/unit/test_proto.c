/*
 * test_proto.c: the wire protocol layer as a specification: what each parser accepts, every way
 * a message can be malformed, truncated or oversized, and the exact bytes each builder writes.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"
#include "tap.h"

#define ERR_LEN 256

/* ---- a hand-rolled startup packet writer, independent of the builders under test ---- */

struct packet {
    uint8_t bytes[PROTO_MAX_STARTUP_LEN + 64];
    size_t len;
};

static void packet_raw(struct packet *p, const void *data, size_t len)
{
    memcpy(p->bytes + p->len, data, len);
    p->len += len;
}

static void packet_u32(struct packet *p, uint32_t value)
{
    uint32_t net = htonl(value);

    packet_raw(p, &net, sizeof(net));
}

static void packet_str(struct packet *p, const char *s)
{
    packet_raw(p, s, strlen(s) + 1);
}

static void packet_start(struct packet *p, uint32_t code)
{
    p->len = 0;
    packet_u32(p, 0);
    packet_u32(p, code);
}

static void packet_param(struct packet *p, const char *name, const char *value)
{
    packet_str(p, name);
    packet_str(p, value);
}

/* Writes the terminator and the length field. */
static void packet_finish(struct packet *p)
{
    uint32_t net;

    p->bytes[p->len++] = 0;
    net = htonl((uint32_t)p->len);
    memcpy(p->bytes, &net, sizeof(net));
}

static void packet_set_length(struct packet *p, uint32_t length)
{
    uint32_t net = htonl(length);

    memcpy(p->bytes, &net, sizeof(net));
}

static enum proto_result parse(const struct packet *p, struct startup_packet *out, char *err)
{
    err[0] = '\0';
    return proto_parse_startup(p->bytes, p->len, out, err, ERR_LEN);
}

static int same_bytes(const struct msgbuf *mb, const uint8_t *want, size_t want_len)
{
    if (mb->failed || mb->len != want_len)
        return 0;
    return memcmp(mb->data, want, want_len) == 0;
}

#define BUILT_AS(mb, want, name)                                                               \
    do {                                                                                       \
        if (!ok(same_bytes((mb), (want), sizeof(want)), "%s", (name)))                         \
            printf("#   built %zu bytes, want %zu\n", (mb)->len, sizeof(want));              \
    } while (0)

/* ---- framing ---- */

static void test_peek_header(void)
{
    const uint8_t query[] = { 'Q', 0, 0, 0, 9, 's', 'e', 'l', 0 };
    const uint8_t empty_body[] = { 'X', 0, 0, 0, 4 };
    const uint8_t short_length[] = { 'Q', 0, 0, 0, 3 };
    const uint8_t huge_length[] = { 'D', 0xff, 0xff, 0xff, 0xff };
    const uint8_t sign_bit_length[] = { 'D', 0x80, 0, 0, 8 };
    uint8_t type = 0;
    uint32_t len = 0;

    is_int(proto_peek_header(query, 0, 1000, &type, &len), PROTO_INCOMPLETE,
           "header: no bytes yet is incomplete");
    is_int(proto_peek_header(query, 4, 1000, &type, &len), PROTO_INCOMPLETE,
           "header: four bytes are not yet a header");
    is_int(proto_peek_header(query, 5, 1000, &type, &len), PROTO_OK,
           "header: five bytes are enough even before the body arrives");
    is_int(type, 'Q', "header: type byte is returned");
    is_int(len, 9, "header: length field is returned as sent (counts itself, not the type)");
    is_int(proto_peek_header(empty_body, 5, 1000, &type, &len), PROTO_OK,
           "header: length 4 (empty body) is accepted");
    is_int(len, 4, "header: empty body has length 4");
    is_int(proto_peek_header(short_length, 5, 1000, &type, &len), PROTO_ERROR,
           "header: length below 4 is a protocol violation");
    is_int(proto_peek_header(query, 5, 9, &type, &len), PROTO_OK,
           "header: length equal to the maximum is accepted");
    is_int(proto_peek_header(query, 5, 8, &type, &len), PROTO_ERROR,
           "header: length one above the maximum is refused");
    is_int(proto_peek_header(huge_length, 5, UINT32_MAX, &type, &len), PROTO_ERROR,
           "header: length 0xffffffff is refused even with no caller maximum");
    is_int(proto_peek_header(sign_bit_length, 5, UINT32_MAX, &type, &len), PROTO_ERROR,
           "header: length with the int32 sign bit set is refused");
    is_int(proto_peek_header(NULL, 0, 1000, &type, &len), PROTO_INCOMPLETE,
           "header: a NULL buffer of length 0 is simply incomplete");
}

static void test_peek_startup_length(void)
{
    const uint8_t seven[] = { 0, 0, 0, 7 };
    const uint8_t eight[] = { 0, 0, 0, 8 };
    const uint8_t at_max[] = { 0, 0, 0x27, 0x10 };    /* 10000 */
    const uint8_t above_max[] = { 0, 0, 0x27, 0x11 }; /* 10001 */
    const uint8_t tls_hello[] = { PROTO_TLS_HANDSHAKE_BYTE, 0x03, 0x01, 0x02 };
    const uint8_t huge[] = { 0x7f, 0xff, 0xff, 0xff };
    uint32_t len = 0;

    is_int(proto_peek_startup_length(eight, 3, &len), PROTO_INCOMPLETE,
           "startup length: three bytes are incomplete");
    is_int(proto_peek_startup_length(seven, 4, &len), PROTO_ERROR,
           "startup length: 7 is too short for any startup packet");
    is_int(proto_peek_startup_length(eight, 4, &len), PROTO_OK,
           "startup length: 8 (SSLRequest size) is accepted");
    is_int(len, 8, "startup length: value is returned");
    is_int(proto_peek_startup_length(at_max, 4, &len), PROTO_OK,
           "startup length: exactly PROTO_MAX_STARTUP_LEN is accepted");
    is_int(len, PROTO_MAX_STARTUP_LEN, "startup length: maximum value is returned");
    is_int(proto_peek_startup_length(above_max, 4, &len), PROTO_ERROR,
           "startup length: PROTO_MAX_STARTUP_LEN + 1 is refused before anything is allocated");
    is_int(proto_peek_startup_length(huge, 4, &len), PROTO_ERROR,
           "startup length: 2 GB is refused");
    is_int(proto_peek_startup_length(tls_hello, 4, &len), PROTO_ERROR,
           "startup length: a direct TLS ClientHello does not pass as a length");
}

/* ---- startup packets ---- */

static void test_startup_normal(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_param(&p, "database", "shop");
    packet_param(&p, "application_name", "");
    packet_finish(&p);

    is_int(parse(&p, &sp, err), PROTO_OK, "startup: user, database and application_name parse");
    is_int(sp.kind, STARTUP_NORMAL, "startup: kind is a normal StartupMessage");
    is_int(sp.protocol, PROTO_VERSION_3_0, "startup: protocol 3.0 is reported");
    is_int(sp.n_params, 3, "startup: three parameters");
    is_str(sp.params[0].name, "user", "startup: parameters keep their order (first)");
    is_str(sp.params[2].name, "application_name", "startup: parameters keep their order (last)");
    is_str(proto_startup_get(&sp, "user"), "alice", "startup: user value");
    is_str(proto_startup_get(&sp, "database"), "shop", "startup: database value");
    is_str(proto_startup_get(&sp, "application_name"), "",
           "startup: an empty value is a value, not a missing one");
    ok(sp.params[0].value > (const char *)p.bytes &&
           sp.params[0].value < (const char *)p.bytes + p.len,
       "startup: returned strings point into the caller's buffer");
    is_int(sp.n_protocol_options, 0, "startup: no protocol options");
}

static void test_startup_get_matches_exactly(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    parse(&p, &sp, err);

    is_str(proto_startup_get(&sp, "User"), NULL, "startup_get: names are case-sensitive");
    is_str(proto_startup_get(&sp, "use"), NULL, "startup_get: a prefix does not match");
    is_str(proto_startup_get(&sp, "users"), NULL, "startup_get: a longer name does not match");
    is_str(proto_startup_get(&sp, "database"), NULL, "startup_get: absent parameter is NULL");
    is_str(proto_startup_get(NULL, "user"), NULL, "startup_get: NULL packet is NULL");
}

static void test_startup_protocol_versions(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, (3u << 16) | 2u);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "version: 3.2 is accepted (the caller negotiates)");
    is_int(sp.protocol, (3u << 16) | 2u, "version: 3.2 is reported as requested");

    packet_start(&p, (3u << 16) | 0xffffu);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "version: 3.65535 is accepted");

    packet_start(&p, 2u << 16);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "version: 2.0 is refused");
    is_str(err, "unsupported frontend protocol 2.0: server supports 3.0",
           "version: 2.0 refusal says which version and what is supported");

    packet_start(&p, 4u << 16);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "version: 4.0 is refused");
    is_str(err, "unsupported frontend protocol 4.0: server supports 3.0",
           "version: 4.0 refusal message");

    packet_start(&p, (1234u << 16) | 5681u);
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "version: an unknown 1234.x request code is refused");
    is_str(err, "unsupported frontend protocol 1234.5681: server supports 3.0",
           "version: unknown request code is reported as a version");
}

static void test_startup_special_requests(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, PROTO_SSL_REQUEST);
    packet_set_length(&p, 8);
    is_int(parse(&p, &sp, err), PROTO_OK, "SSLRequest: 8 bytes parse");
    is_int(sp.kind, STARTUP_SSL, "SSLRequest: recognised by its code");

    packet_u32(&p, 0);
    packet_set_length(&p, 12);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "SSLRequest: with trailing bytes is refused");
    ok(strstr(err, "SSLRequest") != NULL, "SSLRequest: the error names the request (%s)", err);

    packet_start(&p, PROTO_GSSENC_REQUEST);
    packet_set_length(&p, 8);
    is_int(parse(&p, &sp, err), PROTO_OK, "GSSENCRequest: 8 bytes parse");
    is_int(sp.kind, STARTUP_GSSENC, "GSSENCRequest: recognised by its code");

    packet_start(&p, PROTO_CANCEL_REQUEST);
    packet_u32(&p, 4242);
    packet_u32(&p, 0xdeadbeef);
    packet_set_length(&p, 16);
    is_int(parse(&p, &sp, err), PROTO_OK, "CancelRequest: 16 bytes parse");
    is_int(sp.kind, STARTUP_CANCEL, "CancelRequest: recognised by its code");
    is_int(sp.cancel_pid, 4242, "CancelRequest: process id is read in network order");
    is_int(sp.cancel_key, 0xdeadbeefu, "CancelRequest: secret key is read in network order");

    p.len = 12;
    packet_set_length(&p, 12);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "CancelRequest: without its key is refused");

    packet_start(&p, PROTO_CANCEL_REQUEST);
    packet_u32(&p, 1);
    packet_u32(&p, 2);
    packet_raw(&p, "x", 1);
    packet_set_length(&p, 17);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "CancelRequest: a longer (protocol 3.2) key is refused as sluice speaks 3.0");
}

static void test_startup_lengths(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];
    size_t fill;
    char *long_value;

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    packet_set_length(&p, (uint32_t)p.len + 1);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "startup length: a length field larger than the bytes given is refused");
    packet_set_length(&p, (uint32_t)p.len - 1);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "startup length: a length field smaller than the bytes given is refused");

    is_int(proto_parse_startup(p.bytes, 7, &sp, err, ERR_LEN), PROTO_ERROR,
           "startup length: fewer than 8 bytes is refused");
    is_int(proto_parse_startup(NULL, 0, &sp, err, ERR_LEN), PROTO_ERROR,
           "startup length: no buffer at all is refused");

    /* Fill one parameter so the whole packet is exactly the maximum. */
    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    fill = PROTO_MAX_STARTUP_LEN - p.len - (strlen("application_name") + 1) - 1 - 1;
    long_value = malloc(fill + 2);
    memset(long_value, 'a', fill + 1);
    long_value[fill] = '\0';
    packet_param(&p, "application_name", long_value);
    packet_finish(&p);
    is_int(p.len, PROTO_MAX_STARTUP_LEN, "startup length: test packet is exactly the maximum");
    is_int(parse(&p, &sp, err), PROTO_OK, "startup length: exactly PROTO_MAX_STARTUP_LEN parses");
    is_int(strlen(proto_startup_get(&sp, "application_name")), fill,
           "startup length: the long value is read whole");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    long_value[fill] = 'a';
    long_value[fill + 1] = '\0';
    packet_param(&p, "application_name", long_value);
    packet_finish(&p);
    is_int(p.len, PROTO_MAX_STARTUP_LEN + 1, "startup length: test packet is one byte over");
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "startup length: PROTO_MAX_STARTUP_LEN + 1 is refused");
    free(long_value);
}

static void test_startup_malformed_layout(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_set_length(&p, (uint32_t)p.len);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "layout: a list without its final NUL is refused");
    is_str(err, "invalid startup packet layout: expected terminator as last byte",
           "layout: missing terminator is explained");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_set_length(&p, 8);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "layout: a version with no parameter list at all is refused");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_raw(&p, "database", 8);
    packet_set_length(&p, (uint32_t)p.len);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "layout: a name running to the end of the packet without NUL is refused");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_str(&p, "database");
    packet_raw(&p, "shop", 4);
    packet_set_length(&p, (uint32_t)p.len);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "layout: a value running to the end of the packet without NUL is refused");
    ok(strstr(err, "database") != NULL, "layout: the error names the parameter (%s)", err);

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_str(&p, "database");
    packet_set_length(&p, (uint32_t)p.len);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "layout: a name with no value is refused");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_finish(&p);
    packet_raw(&p, "junk", 4);
    packet_set_length(&p, (uint32_t)p.len);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "layout: bytes after the terminator are refused");
    is_str(err, "invalid startup packet layout: expected terminator as last byte",
           "layout: trailing bytes are explained like a missing terminator");
}

static void test_startup_user(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "database", "shop");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "user: a packet without user is refused");
    is_str(err, "no PostgreSQL user name specified in startup packet",
           "user: missing user gets PostgreSQL's wording");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "user: an empty user is refused");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "User", "alice");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "user: \"User\" is not \"user\"");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_param(&p, "user", "postgres");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "user: a second user parameter is refused");
    is_str(err, "duplicate startup parameter \"user\"", "user: duplicate user is explained");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_param(&p, "database", "a");
    packet_param(&p, "database", "b");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR,
           "duplicate: any parameter given twice is refused, so no two readers disagree");
}

static void test_startup_protocol_options(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN];

    packet_start(&p, (3u << 16) | 2u);
    packet_param(&p, "user", "alice");
    packet_param(&p, "_pq_.report_parameters", "search_path");
    packet_param(&p, "_pq_.other", "1");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "_pq_: protocol options are accepted");
    is_int(sp.n_params, 1, "_pq_: protocol options are not parameters");
    is_int(sp.n_protocol_options, 2, "_pq_: both options are collected");
    is_str(sp.protocol_options[0], "_pq_.report_parameters", "_pq_: option names keep order");
    is_str(proto_startup_get(&sp, "_pq_.other"), NULL, "_pq_: options are not found by get");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_param(&p, "_pq_.x", "1");
    packet_param(&p, "_pq_.x", "2");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "_pq_: an option given twice is refused");

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    packet_param(&p, "_pq_", "1");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "_pq_: \"_pq_\" without the dot is a plain parameter");
    is_int(sp.n_params, 2, "_pq_: \"_pq_\" counts as a parameter");
}

static void test_startup_parameter_limits(void)
{
    struct packet p;
    struct startup_packet sp;
    char err[ERR_LEN], name[32];

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    for (int i = 1; i < PROTO_MAX_STARTUP_PARAMS; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        packet_param(&p, name, "v");
    }
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "limit: PROTO_MAX_STARTUP_PARAMS parameters parse");
    is_int(sp.n_params, PROTO_MAX_STARTUP_PARAMS, "limit: all of them are kept");

    p.len--;
    packet_param(&p, "one_more", "v");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "limit: one parameter more is refused");
    ok(strstr(err, "too many startup parameters") != NULL, "limit: the error says why (%s)", err);

    packet_start(&p, PROTO_VERSION_3_0);
    packet_param(&p, "user", "alice");
    for (int i = 0; i < PROTO_MAX_STARTUP_PARAMS; i++) {
        snprintf(name, sizeof(name), "_pq_.o%d", i);
        packet_param(&p, name, "v");
    }
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_OK, "limit: PROTO_MAX_STARTUP_PARAMS protocol options parse");
    p.len--;
    packet_param(&p, "_pq_.one_more", "v");
    packet_finish(&p);
    is_int(parse(&p, &sp, err), PROTO_ERROR, "limit: one protocol option more is refused");
}

static void test_startup_error_buffer(void)
{
    struct packet p;
    struct startup_packet sp;
    char small[8];

    packet_start(&p, 2u << 16);
    packet_finish(&p);
    is_int(proto_parse_startup(p.bytes, p.len, &sp, NULL, 0), PROTO_ERROR,
           "err: a NULL error buffer is allowed");
    memset(small, 'x', sizeof(small));
    proto_parse_startup(p.bytes, p.len, &sp, small, sizeof(small));
    is_str(small, "unsuppo", "err: a small error buffer is truncated and NUL-terminated");
}

/* ---- server -> sluice ---- */

static void test_auth_request(void)
{
    const uint8_t ok_body[] = { 0, 0, 0, 0 };
    const uint8_t ok_with_data[] = { 0, 0, 0, 0, 1 };
    const uint8_t md5[] = { 0, 0, 0, 5, 0xa1, 0xb2, 0xc3, 0xd4 };
    const uint8_t md5_short_salt[] = { 0, 0, 0, 5, 0xa1, 0xb2, 0xc3 };
    const uint8_t cleartext_with_data[] = { 0, 0, 0, 3, 'x' };
    const uint8_t sasl_continue[] = { 0, 0, 0, 11, 'r', '=', 'a', 'b' };
    const uint8_t truncated[] = { 0, 0, 0 };
    uint32_t code = 99;
    const uint8_t *data = NULL;
    size_t data_len = 99;

    is_int(proto_parse_auth_request(ok_body, sizeof(ok_body), &code, &data, &data_len), PROTO_OK,
           "auth: AuthenticationOk parses");
    is_int(code, AUTH_REQ_OK, "auth: code 0 is OK");
    is_int(data_len, 0, "auth: OK has no payload");
    is_int(proto_parse_auth_request(ok_with_data, sizeof(ok_with_data), &code, &data, &data_len),
           PROTO_ERROR, "auth: AuthenticationOk with a payload is refused");
    is_int(proto_parse_auth_request(md5, sizeof(md5), &code, &data, &data_len), PROTO_OK,
           "auth: MD5 request with a 4-byte salt parses");
    is_int(code, AUTH_REQ_MD5, "auth: MD5 code");
    ok(data == md5 + 4 && data_len == 4, "auth: MD5 salt follows the code");
    is_int(proto_parse_auth_request(md5_short_salt, sizeof(md5_short_salt), &code, &data,
                                    &data_len),
           PROTO_ERROR, "auth: MD5 request with a 3-byte salt is refused");
    is_int(proto_parse_auth_request(cleartext_with_data, sizeof(cleartext_with_data), &code,
                                    &data, &data_len),
           PROTO_ERROR, "auth: cleartext request with a payload is refused");
    is_int(proto_parse_auth_request(sasl_continue, sizeof(sasl_continue), &code, &data,
                                    &data_len),
           PROTO_OK, "auth: SASLContinue with its payload parses");
    ok(code == AUTH_REQ_SASL_CONTINUE && data_len == 4 && memcmp(data, "r=ab", 4) == 0,
       "auth: SASLContinue payload is returned whole");
    is_int(proto_parse_auth_request(truncated, sizeof(truncated), &code, &data, &data_len),
           PROTO_ERROR, "auth: a body shorter than the code is refused");
    is_int(proto_parse_auth_request(truncated, 0, &code, &data, &data_len), PROTO_ERROR,
           "auth: an empty body is refused");
}

static void test_sasl_offers(void)
{
    const uint8_t both[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";  /* + implicit final NUL */
    const uint8_t plain_only[] = "SCRAM-SHA-256\0";
    const uint8_t unterminated_list[] = "SCRAM-SHA-256";        /* one NUL: no list end */
    const uint8_t unterminated_name[] = { 'S', 'C', 'R', 'A', 'M' };
    const uint8_t trailing[] = "SCRAM-SHA-256\0\0x";

    ok(proto_sasl_offers(both, sizeof(both), "SCRAM-SHA-256"),
       "sasl list: SCRAM-SHA-256 is found after -PLUS");
    ok(proto_sasl_offers(both, sizeof(both), "SCRAM-SHA-256-PLUS"),
       "sasl list: SCRAM-SHA-256-PLUS is found");
    ok(!proto_sasl_offers(plain_only, sizeof(plain_only), "SCRAM-SHA-256-PLUS"),
       "sasl list: -PLUS is not offered when absent");
    ok(!proto_sasl_offers(plain_only, sizeof(plain_only), "SCRAM-SHA"),
       "sasl list: a prefix of an offered name is not offered");
    ok(!proto_sasl_offers((const uint8_t *)"", 1, "SCRAM-SHA-256"),
       "sasl list: an empty list offers nothing");
    ok(!proto_sasl_offers(unterminated_list, sizeof(unterminated_list), "SCRAM-SHA-256"),
       "sasl list: a list without its final empty name offers nothing");
    ok(!proto_sasl_offers(unterminated_name, sizeof(unterminated_name), "SCRAM"),
       "sasl list: a name without NUL is not read past the buffer");
    ok(!proto_sasl_offers(trailing, sizeof(trailing) - 1, "SCRAM-SHA-256"),
       "sasl list: bytes after the list end make it malformed");
    ok(!proto_sasl_offers(both, 0, "SCRAM-SHA-256"), "sasl list: zero bytes offer nothing");
}

static void test_parameter_status(void)
{
    const uint8_t good[] = "TimeZone\0UTC";                   /* + final NUL */
    const uint8_t name_only[] = "application_name";
    const uint8_t no_value_nul[] = { 'a', 0, 'b' };
    const uint8_t no_name_nul[] = { 'a', 'b' };
    const uint8_t trailing[] = "a\0b\0c";
    const uint8_t empty_name[] = "\0x";
    const char *name = NULL, *value = NULL;

    is_int(proto_parse_parameter_status(good, sizeof(good), &name, &value), PROTO_OK,
           "ParameterStatus: name and value parse");
    is_str(name, "TimeZone", "ParameterStatus: name");
    is_str(value, "UTC", "ParameterStatus: value");
    is_int(proto_parse_parameter_status(name_only, sizeof(name_only), &name, &value),
           PROTO_ERROR, "ParameterStatus: a name with no value string is refused");
    is_int(proto_parse_parameter_status((const uint8_t *)"a\0", 3, &name, &value), PROTO_OK,
           "ParameterStatus: an empty value is accepted");
    is_str(value, "", "ParameterStatus: empty value is returned as empty");
    is_int(proto_parse_parameter_status(no_value_nul, sizeof(no_value_nul), &name, &value),
           PROTO_ERROR, "ParameterStatus: a value without NUL is refused");
    is_int(proto_parse_parameter_status(no_name_nul, sizeof(no_name_nul), &name, &value),
           PROTO_ERROR, "ParameterStatus: a name without NUL is refused");
    is_int(proto_parse_parameter_status(trailing, sizeof(trailing), &name, &value), PROTO_ERROR,
           "ParameterStatus: bytes after the value are refused");
    is_int(proto_parse_parameter_status(empty_name, sizeof(empty_name), &name, &value),
           PROTO_ERROR, "ParameterStatus: an empty name is refused");
    is_int(proto_parse_parameter_status(good, 0, &name, &value), PROTO_ERROR,
           "ParameterStatus: an empty body is refused");
}

static void test_backend_key_data(void)
{
    const uint8_t good[] = { 0, 0, 0x30, 0x39, 0x01, 0x02, 0x03, 0x04 };
    const uint8_t long_key[40] = { 0 };
    uint32_t pid = 0, key = 0;

    is_int(proto_parse_backend_key_data(good, sizeof(good), &pid, &key), PROTO_OK,
           "BackendKeyData: 8 bytes parse");
    is_int(pid, 12345, "BackendKeyData: pid in network order");
    is_int(key, 0x01020304, "BackendKeyData: key in network order");
    is_int(proto_parse_backend_key_data(good, 7, &pid, &key), PROTO_ERROR,
           "BackendKeyData: 7 bytes are refused");
    is_int(proto_parse_backend_key_data(good, 0, &pid, &key), PROTO_ERROR,
           "BackendKeyData: an empty body is refused");
    is_int(proto_parse_backend_key_data(long_key, sizeof(long_key), &pid, &key), PROTO_ERROR,
           "BackendKeyData: a protocol 3.2 long key is refused");
}

static void test_ready_for_query(void)
{
    char status = 0;

    is_int(proto_parse_ready_for_query((const uint8_t *)"I", 1, &status), PROTO_OK,
           "ReadyForQuery: idle parses");
    is_int(status, 'I', "ReadyForQuery: status I");
    is_int(proto_parse_ready_for_query((const uint8_t *)"T", 1, &status), PROTO_OK,
           "ReadyForQuery: in transaction parses");
    is_int(status, 'T', "ReadyForQuery: status T");
    is_int(proto_parse_ready_for_query((const uint8_t *)"E", 1, &status), PROTO_OK,
           "ReadyForQuery: failed transaction parses");
    is_int(status, 'E', "ReadyForQuery: status E");
    is_int(proto_parse_ready_for_query((const uint8_t *)"X", 1, &status), PROTO_ERROR,
           "ReadyForQuery: an unknown status is refused");
    is_int(proto_parse_ready_for_query((const uint8_t *)"II", 2, &status), PROTO_ERROR,
           "ReadyForQuery: two bytes are refused");
    is_int(proto_parse_ready_for_query((const uint8_t *)"I", 0, &status), PROTO_ERROR,
           "ReadyForQuery: an empty body is refused");
}

static void test_parse_error(void)
{
    const uint8_t full[] = "SFEHLER\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0"
                           "Ddetail\0Hhint\0P15\0Rparserfunc\0";  /* + final NUL */
    const uint8_t severity_only[] = "SFATAL\0C57P01\0Mterminating\0";
    const uint8_t no_terminator[] = { 'S', 'E', 'R', 'R', 'O', 'R', 0 };
    const uint8_t value_without_nul[] = { 'S', 'E', 'R', 'R' };
    const uint8_t trailing[] = "SERROR\0\0junk";
    struct proto_error e;

    is_int(proto_parse_error(full, sizeof(full), &e), PROTO_OK, "ErrorResponse: all fields parse");
    is_str(e.severity, "ERROR", "ErrorResponse: V (non-localized) wins over a localized S");
    is_str(e.sqlstate, "42P01", "ErrorResponse: SQLSTATE");
    is_str(e.message, "relation \"x\" does not exist", "ErrorResponse: message");
    is_str(e.detail, "detail", "ErrorResponse: detail");
    is_str(e.hint, "hint", "ErrorResponse: hint");

    is_int(proto_parse_error(severity_only, sizeof(severity_only), &e), PROTO_OK,
           "ErrorResponse: S without V parses (pre-9.6 servers)");
    is_str(e.severity, "FATAL", "ErrorResponse: S is used when V is absent");
    is_str(e.detail, NULL, "ErrorResponse: absent detail is NULL");
    is_str(e.hint, NULL, "ErrorResponse: absent hint is NULL");

    is_int(proto_parse_error((const uint8_t *)"", 1, &e), PROTO_OK,
           "ErrorResponse: just the terminator parses");
    is_str(e.message, NULL, "ErrorResponse: no fields means NULL message");
    is_int(proto_parse_error(no_terminator, sizeof(no_terminator), &e), PROTO_ERROR,
           "ErrorResponse: a missing terminating zero byte is refused");
    is_int(proto_parse_error(value_without_nul, sizeof(value_without_nul), &e), PROTO_ERROR,
           "ErrorResponse: a field value without NUL is refused");
    is_int(proto_parse_error(trailing, sizeof(trailing), &e), PROTO_ERROR,
           "ErrorResponse: bytes after the terminator are refused");
    is_int(proto_parse_error(full, 0, &e), PROTO_ERROR, "ErrorResponse: an empty body is refused");
}

/* ---- client -> sluice ---- */

static void test_password_and_query(void)
{
    const char *s = NULL;

    is_int(proto_parse_password((const uint8_t *)"secret", 7, &s), PROTO_OK,
           "PasswordMessage: one string parses");
    is_str(s, "secret", "PasswordMessage: password value");
    is_int(proto_parse_password((const uint8_t *)"", 1, &s), PROTO_OK,
           "PasswordMessage: an empty password is a valid message");
    is_int(proto_parse_password((const uint8_t *)"secret", 6, &s), PROTO_ERROR,
           "PasswordMessage: no NUL is refused");
    is_int(proto_parse_password((const uint8_t *)"a\0b", 4, &s), PROTO_ERROR,
           "PasswordMessage: bytes after the string are refused");
    is_int(proto_parse_password((const uint8_t *)"", 0, &s), PROTO_ERROR,
           "PasswordMessage: an empty body is refused");

    is_int(proto_parse_query((const uint8_t *)"SELECT 1", 9, &s), PROTO_OK,
           "Query: one string parses");
    is_str(s, "SELECT 1", "Query: SQL text");
    is_int(proto_parse_query((const uint8_t *)"SELECT 1", 8, &s), PROTO_ERROR,
           "Query: no NUL is refused");
    is_int(proto_parse_query((const uint8_t *)"SELECT 1\0;", 10, &s), PROTO_ERROR,
           "Query: bytes after the string are refused");
    is_int(proto_parse_query((const uint8_t *)"", 0, &s), PROTO_ERROR,
           "Query: an empty body is refused");
}

static void test_sasl_initial(void)
{
    const uint8_t good[] = "SCRAM-SHA-256\0\0\0\0\x05n,,ab";   /* mech, int32 5, data */
    const uint8_t no_data[] = "SCRAM-SHA-256\0\xff\xff\xff\xff";
    const uint8_t no_data_trailing[] = "SCRAM-SHA-256\0\xff\xff\xff\xffx";
    const uint8_t too_long[] = "SCRAM-SHA-256\0\0\0\0\x06n,,ab";
    const uint8_t too_short[] = "SCRAM-SHA-256\0\0\0\0\x04n,,ab";
    const uint8_t minus_two[] = "SCRAM-SHA-256\0\xff\xff\xff\xfe";
    const uint8_t huge[] = "SCRAM-SHA-256\0\x7f\xff\xff\xffn,,ab";
    const uint8_t no_length[] = "SCRAM-SHA-256\0\0\0";
    const uint8_t no_mech_nul[] = { 'S', 'C', 'R', 'A', 'M' };
    const char *mech = NULL;
    const uint8_t *data = NULL;
    size_t data_len = 0;

    /* sizeof - 1: the arrays' own string terminator is not part of the message */
    is_int(proto_parse_sasl_initial(good, sizeof(good) - 1, &mech, &data, &data_len), PROTO_OK,
           "SASLInitialResponse: mechanism and data parse");
    is_str(mech, "SCRAM-SHA-256", "SASLInitialResponse: mechanism");
    ok(data_len == 5 && memcmp(data, "n,,ab", 5) == 0, "SASLInitialResponse: data is returned");
    is_int(proto_parse_sasl_initial(no_data, sizeof(no_data) - 1, &mech, &data, &data_len),
           PROTO_OK, "SASLInitialResponse: length -1 means no data");
    ok(data == NULL && data_len == 0, "SASLInitialResponse: -1 gives NULL data");
    is_int(proto_parse_sasl_initial(no_data_trailing, sizeof(no_data_trailing) - 1, &mech, &data,
                                    &data_len),
           PROTO_ERROR, "SASLInitialResponse: bytes after length -1 are refused");
    is_int(proto_parse_sasl_initial(too_long, sizeof(too_long) - 1, &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a length beyond the body is refused");
    is_int(proto_parse_sasl_initial(too_short, sizeof(too_short) - 1, &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a length short of the body is refused");
    is_int(proto_parse_sasl_initial(minus_two, sizeof(minus_two) - 1, &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a negative length other than -1 is refused");
    is_int(proto_parse_sasl_initial(huge, sizeof(huge) - 1, &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a 2 GB length is refused");
    is_int(proto_parse_sasl_initial(no_length, sizeof(no_length) - 1, &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a truncated length field is refused");
    is_int(proto_parse_sasl_initial(no_mech_nul, sizeof(no_mech_nul), &mech, &data, &data_len),
           PROTO_ERROR, "SASLInitialResponse: a mechanism without NUL is refused");
}

/* ---- builders ---- */

static void test_build_error_and_notice(void)
{
    const uint8_t want_error[] = {
        'E', 0, 0, 0, 37,
        'S', 'F', 'A', 'T', 'A', 'L', 0,
        'V', 'F', 'A', 'T', 'A', 'L', 0,
        'C', '2', '8', 'P', '0', '1', 0,
        'M', 'b', 'a', 'd', 0,
        'D', 'd', 0,
        'H', 'h', 0,
        0,
    };
    const uint8_t want_plain_error[] = {
        'E', 0, 0, 0, 29,
        'S', 'E', 'R', 'R', 'O', 'R', 0,
        'V', 'E', 'R', 'R', 'O', 'R', 0,
        'C', '0', '8', 'P', '0', '1', 0,
        'M', 'x', 0,
        0,
    };
    const uint8_t want_notice[] = {
        'N', 0, 0, 0, 32,
        'S', 'N', 'O', 'T', 'I', 'C', 'E', 0,
        'V', 'N', 'O', 'T', 'I', 'C', 'E', 0,
        'C', '0', '0', '0', '0', '0', 0,
        'M', 'h', 'i', 0,
        0,
    };
    const uint8_t want_hint_only[] = {
        'E', 0, 0, 0, 32,
        'S', 'E', 'R', 'R', 'O', 'R', 0,
        'V', 'E', 'R', 'R', 'O', 'R', 0,
        'C', '0', '8', 'P', '0', '1', 0,
        'M', 'x', 0,
        'H', 'h', 0,
        0,
    };
    struct msgbuf mb;
    struct proto_error e;

    msgbuf_init(&mb);
    proto_build_error(&mb, "FATAL", "28P01", "bad", "d", "h");
    BUILT_AS(&mb, want_error, "build: ErrorResponse with S, V, C, M, D, H and terminator");
    is_int(proto_parse_error(mb.data + 5, mb.len - 5, &e), PROTO_OK,
           "build: the ErrorResponse parses back");
    is_str(e.hint, "h", "build: the parsed-back hint matches");

    msgbuf_reset(&mb);
    proto_build_error(&mb, "ERROR", "08P01", "x", NULL, NULL);
    BUILT_AS(&mb, want_plain_error, "build: ErrorResponse without detail and hint omits D and H");

    msgbuf_reset(&mb);
    proto_build_error(&mb, "ERROR", "08P01", "x", NULL, "h");
    BUILT_AS(&mb, want_hint_only, "build: ErrorResponse with a hint but no detail");

    msgbuf_reset(&mb);
    proto_build_notice(&mb, "NOTICE", "00000", "hi");
    BUILT_AS(&mb, want_notice, "build: NoticeResponse with S, V, C, M");
    msgbuf_free(&mb);
}

static void test_build_auth(void)
{
    const uint8_t want_ok[] = { 'R', 0, 0, 0, 8, 0, 0, 0, 0 };
    const uint8_t want_md5[] = { 'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4 };
    const uint8_t want_sasl[] = {
        'R', 0, 0, 0, 23, 0, 0, 0, 10,
        'S', 'C', 'R', 'A', 'M', '-', 'S', 'H', 'A', '-', '2', '5', '6', 0,
        0,
    };
    const uint8_t salt[] = { 1, 2, 3, 4 };
    struct msgbuf mb;

    msgbuf_init(&mb);
    proto_build_auth_request(&mb, AUTH_REQ_OK, NULL, 0);
    BUILT_AS(&mb, want_ok, "build: AuthenticationOk");
    msgbuf_reset(&mb);
    proto_build_auth_request(&mb, AUTH_REQ_MD5, salt, sizeof(salt));
    BUILT_AS(&mb, want_md5, "build: AuthenticationMD5Password with its salt");
    msgbuf_reset(&mb);
    proto_build_auth_sasl(&mb, "SCRAM-SHA-256");
    BUILT_AS(&mb, want_sasl, "build: AuthenticationSASL with one mechanism and the list end");
    ok(proto_sasl_offers(mb.data + 9, mb.len - 9, "SCRAM-SHA-256"),
       "build: the SASL mechanism list reads back");
    msgbuf_free(&mb);
}

static void test_build_session_messages(void)
{
    const uint8_t want_status[] = { 'S', 0, 0, 0, 11, 'T', 'Z', 0, 'U', 'T', 'C', 0 };
    const uint8_t want_key[] = { 'K', 0, 0, 0, 12, 0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef };
    const uint8_t want_ready[] = { 'Z', 0, 0, 0, 5, 'T' };
    const uint8_t want_empty_query[] = { 'I', 0, 0, 0, 4 };
    const uint8_t want_negotiate[] = {
        'v', 0, 0, 0, 26, 0, 3, 0, 0, 0, 0, 0, 2,
        '_', 'p', 'q', '_', '.', 'a', 0,
        '_', 'p', 'q', '_', '.', 'b', 0,
    };
    const uint8_t want_negotiate_none[] = { 'v', 0, 0, 0, 12, 0, 3, 0, 0, 0, 0, 0, 0 };
    const char *const options[] = { "_pq_.a", "_pq_.b" };
    struct msgbuf mb;

    msgbuf_init(&mb);
    proto_build_parameter_status(&mb, "TZ", "UTC");
    BUILT_AS(&mb, want_status, "build: ParameterStatus");
    msgbuf_reset(&mb);
    proto_build_backend_key_data(&mb, 12345, 0xdeadbeef);
    BUILT_AS(&mb, want_key, "build: BackendKeyData in network order");
    msgbuf_reset(&mb);
    proto_build_ready_for_query(&mb, 'T');
    BUILT_AS(&mb, want_ready, "build: ReadyForQuery");
    msgbuf_reset(&mb);
    proto_build_empty_query_response(&mb);
    BUILT_AS(&mb, want_empty_query, "build: EmptyQueryResponse is a bare header");
    msgbuf_reset(&mb);
    proto_build_negotiate_version(&mb, 0, options, 2);
    BUILT_AS(&mb, want_negotiate,
             "build: NegotiateProtocolVersion writes version 3.0 (not a bare minor) and options");
    msgbuf_reset(&mb);
    proto_build_negotiate_version(&mb, 0, NULL, 0);
    BUILT_AS(&mb, want_negotiate_none, "build: NegotiateProtocolVersion with no options");
    msgbuf_free(&mb);
}

static void test_build_frontend_messages(void)
{
    const uint8_t want_startup[] = {
        0, 0, 0, 28, 0, 3, 0, 0,
        'u', 's', 'e', 'r', 0, 'b', 'o', 'b', 0,
        'd', 'a', 't', 'a', 'b', 'a', 's', 'e', 0, 0,
        0,
    };
    const uint8_t want_cancel[] = { 0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9 };
    const uint8_t want_password[] = { 'p', 0, 0, 0, 7, 'p', 'w', 0 };
    const uint8_t want_sasl_initial[] = {
        'p', 0, 0, 0, 16, 'M', 'E', 'C', 'H', 0, 0, 0, 0, 3, 'a', 'b', 'c',
    };
    const uint8_t want_sasl_initial_none[] = {
        'p', 0, 0, 0, 13, 'M', 'E', 'C', 'H', 0, 0xff, 0xff, 0xff, 0xff,
    };
    const uint8_t want_sasl_response[] = { 'p', 0, 0, 0, 6, 'x', 'y' };
    const uint8_t want_query[] = { 'Q', 0, 0, 0, 6, ';', 0 };
    const uint8_t want_terminate[] = { 'X', 0, 0, 0, 4 };
    const struct startup_param params[] = { { "user", "bob" }, { "database", "" } };
    struct msgbuf mb;
    struct startup_packet sp;
    char err[ERR_LEN];

    msgbuf_init(&mb);
    proto_build_startup(&mb, params, 2);
    BUILT_AS(&mb, want_startup, "build: StartupMessage 3.0 with pairs and the list end");
    is_int(proto_parse_startup(mb.data, mb.len, &sp, err, sizeof(err)), PROTO_OK,
           "build: the StartupMessage parses back");
    is_str(proto_startup_get(&sp, "user"), "bob", "build: parsed-back user");

    msgbuf_reset(&mb);
    proto_build_cancel_request(&mb, 7, 9);
    BUILT_AS(&mb, want_cancel, "build: CancelRequest is 16 bytes with code 80877102");
    msgbuf_reset(&mb);
    proto_build_password(&mb, "pw");
    BUILT_AS(&mb, want_password, "build: PasswordMessage");
    msgbuf_reset(&mb);
    proto_build_sasl_initial(&mb, "MECH", "abc", 3);
    BUILT_AS(&mb, want_sasl_initial, "build: SASLInitialResponse with data");
    msgbuf_reset(&mb);
    proto_build_sasl_initial(&mb, "MECH", NULL, 0);
    BUILT_AS(&mb, want_sasl_initial_none, "build: SASLInitialResponse without data writes -1");
    msgbuf_reset(&mb);
    proto_build_sasl_response(&mb, "xy", 2);
    BUILT_AS(&mb, want_sasl_response, "build: SASLResponse");
    msgbuf_reset(&mb);
    proto_build_query(&mb, ";");
    BUILT_AS(&mb, want_query, "build: Query");
    msgbuf_reset(&mb);
    proto_build_terminate(&mb);
    BUILT_AS(&mb, want_terminate, "build: Terminate");
    msgbuf_free(&mb);
}

static void test_build_appends(void)
{
    const uint8_t want[] = {
        'S', 0, 0, 0, 8, 'a', 0, 'b', 0,
        'Z', 0, 0, 0, 5, 'I',
    };
    struct msgbuf mb;

    msgbuf_init(&mb);
    proto_build_parameter_status(&mb, "a", "b");
    proto_build_ready_for_query(&mb, 'I');
    BUILT_AS(&mb, want, "build: messages append one after another, each with its own length");
    msgbuf_free(&mb);
}

/* ---- query results ---- */

static void test_build_row_description(void)
{
    const uint8_t want[] = {
        'T', 0, 0, 0, 86, 0, 4,
        'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        'b', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0,
        'c', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x06, 0xa4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
    };
    const uint8_t want_none[] = { 'T', 0, 0, 0, 6, 0, 0 };
    const struct proto_column columns[] = {
        { "a", PROTO_TYPE_INT4 }, { "b", PROTO_TYPE_INT8 },
        { "c", PROTO_TYPE_TEXT }, { "d", PROTO_TYPE_NUMERIC },
    };
    struct msgbuf mb;

    msgbuf_init(&mb);
    proto_build_row_description(&mb, columns, 4);
    BUILT_AS(&mb, want,
             "build: RowDescription gives each column table 0, number 0, its type OID and size, "
             "typmod -1 and text format");
    msgbuf_reset(&mb);
    proto_build_row_description(&mb, NULL, 0);
    BUILT_AS(&mb, want_none, "build: RowDescription with no columns");
    msgbuf_free(&mb);
}

static void test_build_data_row(void)
{
    const uint8_t want[] = {
        'D', 0, 0, 0, 20, 0, 3,
        0, 0, 0, 2, '1', '2',
        0, 0, 0, 0,
        0xff, 0xff, 0xff, 0xff,
    };
    struct msgbuf mb;
    size_t row;

    msgbuf_init(&mb);
    row = proto_data_row_begin(&mb, 3);
    proto_data_row_add(&mb, "12");
    proto_data_row_add(&mb, "");
    proto_data_row_add(&mb, NULL);
    proto_data_row_end(&mb, row);
    BUILT_AS(&mb, want, "build: DataRow with a value, an empty string and a NULL (length -1)");
    msgbuf_free(&mb);
}

static void test_build_result_set(void)
{
    const uint8_t want[] = {
        'T', 0, 0, 0, 26, 0, 1,
        'n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, '7',
        'C', 0, 0, 0, 9, 'S', 'H', 'O', 'W', 0,
    };
    const struct proto_column column = { "n", PROTO_TYPE_INT4 };
    struct msgbuf mb;
    size_t row;

    msgbuf_init(&mb);
    proto_build_row_description(&mb, &column, 1);
    row = proto_data_row_begin(&mb, 1);
    proto_data_row_add(&mb, "7");
    proto_data_row_end(&mb, row);
    proto_build_command_complete(&mb, "SHOW");
    BUILT_AS(&mb, want, "build: a result set is RowDescription, DataRows, then CommandComplete, "
                        "each message with its own length");
    msgbuf_free(&mb);
}

/* ---- msgbuf ---- */

static void test_msgbuf(void)
{
    struct msgbuf mb;
    uint8_t chunk[1000];
    int intact = 1;
    uint8_t *data_before;
    size_t cap_before;

    msgbuf_init(&mb);
    ok(mb.data == NULL && mb.len == 0 && !mb.failed, "msgbuf: starts empty without memory");
    for (int i = 0; i < 100; i++) {
        memset(chunk, i, sizeof(chunk));
        msgbuf_append(&mb, chunk, sizeof(chunk));
    }
    is_int(mb.len, 100000, "msgbuf: grows to hold 100 kB");
    for (size_t i = 0; i < mb.len; i++) {
        if (mb.data[i] != (uint8_t)(i / 1000))
            intact = 0;
    }
    ok(intact, "msgbuf: content survives growth");

    data_before = mb.data;
    cap_before = mb.cap;
    msgbuf_reset(&mb);
    ok(mb.len == 0 && mb.data == data_before && mb.cap == cap_before,
       "msgbuf: reset empties but keeps the memory");

    msgbuf_append(&mb, "x", 1);
    msgbuf_append(&mb, chunk, SIZE_MAX);
    ok(mb.failed, "msgbuf: an append that cannot fit sets failed instead of crashing");
    is_int(mb.len, 1, "msgbuf: a failed append leaves the length alone");
    proto_build_terminate(&mb);
    msgbuf_append(&mb, "y", 1);
    ok(mb.failed && mb.len == 1, "msgbuf: once failed, further appends and builders do nothing");
    msgbuf_reset(&mb);
    ok(!mb.failed, "msgbuf: reset clears failed so the buffer can be reused");
    proto_build_terminate(&mb);
    is_int(mb.len, 5, "msgbuf: after reset builders work again");

    msgbuf_free(&mb);
    ok(mb.data == NULL && mb.len == 0 && mb.cap == 0, "msgbuf: free releases and zeroes");
}

/* ---- quoting ---- */

static void check_quoted(void (*quote)(struct msgbuf *, const char *), const char *input,
                         const char *want, const char *name)
{
    struct msgbuf mb;

    msgbuf_init(&mb);
    quote(&mb, input);
    msgbuf_append(&mb, "", 1);
    is_str(mb.failed ? NULL : (const char *)mb.data, want, "%s", name);
    msgbuf_free(&mb);
}

static void test_quoting(void)
{
    struct msgbuf mb;

    check_quoted(proto_append_quoted_literal, "UTC", "'UTC'", "literal: plain text is quoted");
    check_quoted(proto_append_quoted_literal, "it's", "'it''s'", "literal: a quote is doubled");
    check_quoted(proto_append_quoted_literal, "", "''", "literal: empty value is ''");
    check_quoted(proto_append_quoted_literal, "''", "''''''", "literal: only quotes");
    check_quoted(proto_append_quoted_literal, "a\\b", "E'a\\\\b'",
                 "literal: a backslash switches to E'' and is doubled");
    check_quoted(proto_append_quoted_literal, "it's \\", "E'it''s \\\\'",
                 "literal: quote and trailing backslash together");
    check_quoted(proto_append_quoted_literal, "\\'", "E'\\\\'''",
                 "literal: a backslash before a quote cannot escape it");
    check_quoted(proto_append_quoted_literal, "\"x\"", "'\"x\"'",
                 "literal: double quotes are left alone");
    check_quoted(proto_append_quoted_literal, "h\xc3\xa9", "'h\xc3\xa9'",
                 "literal: UTF-8 bytes pass through");

    check_quoted(proto_append_quoted_ident, "search_path", "\"search_path\"",
                 "ident: plain name is quoted");
    check_quoted(proto_append_quoted_ident, "TimeZone", "\"TimeZone\"",
                 "ident: case is preserved");
    check_quoted(proto_append_quoted_ident, "na\"me", "\"na\"\"me\"",
                 "ident: a double quote is doubled");
    check_quoted(proto_append_quoted_ident, "a\\b", "\"a\\b\"",
                 "ident: a backslash is not special in identifiers");
    check_quoted(proto_append_quoted_ident, "it's", "\"it's\"",
                 "ident: a single quote is not special in identifiers");

    msgbuf_init(&mb);
    msgbuf_append(&mb, "SET x = ", 8);
    proto_append_quoted_literal(&mb, "1");
    msgbuf_append(&mb, "", 1);
    is_str((const char *)mb.data, "SET x = '1'", "literal: quoting appends after existing text");
    msgbuf_free(&mb);
}

/* ---- client messages checked before they reach a backend ---- */

#define BODY_OK(type, bytes, name)                                                             \
    is_int(proto_check_client_body((type), (bytes), sizeof(bytes), err, sizeof(err)), PROTO_OK, \
           name)
#define BODY_BAD(type, bytes, name)                                                            \
    is_int(proto_check_client_body((type), (bytes), sizeof(bytes), err, sizeof(err)),          \
           PROTO_ERROR, name)

static void test_client_header(void)
{
    char err[ERR_LEN];
    const char known[] = "QPBEDCHSFdcfX";

    for (const char *t = known; *t; t++) {
        uint32_t len = strchr("HScX", *t) ? 4 : *t == 'E' ? 9 : 14;
        is_int(proto_check_client_header((uint8_t)*t, len, err, sizeof(err)), PROTO_OK,
               "client header: type '%c' is one a logged-in frontend may send", *t);
    }
    is_int(proto_check_client_header('p', 8, err, sizeof(err)), PROTO_ERROR,
           "client header: a password message after login is refused");
    is_str(err, "invalid frontend message type 112", "client header: the unknown type is named");
    is_int(proto_check_client_header('z', 4, err, sizeof(err)), PROTO_ERROR,
           "client header: an unknown type is refused");
    is_int(proto_check_client_header(0, 4, err, sizeof(err)), PROTO_ERROR,
           "client header: a zero type byte is refused");

    is_int(proto_check_client_header('S', 4, err, sizeof(err)), PROTO_OK, "client header: Sync of length 4");
    is_int(proto_check_client_header('S', 5, err, sizeof(err)), PROTO_ERROR,
           "client header: Sync with a body is refused");
    is_int(proto_check_client_header('H', 100, err, sizeof(err)), PROTO_ERROR,
           "client header: Flush with a body is refused");
    is_int(proto_check_client_header('c', 8, err, sizeof(err)), PROTO_ERROR,
           "client header: CopyDone with a body is refused");

    is_int(proto_check_client_header('Q', 4, err, sizeof(err)), PROTO_ERROR,
           "client header: an empty Query (no NUL) is refused");
    is_int(proto_check_client_header('Q', 5, err, sizeof(err)), PROTO_OK,
           "client header: Query of just the NUL");
    is_int(proto_check_client_header('Q', PROTO_LARGE_MESSAGE_LIMIT, err, sizeof(err)), PROTO_OK,
           "client header: Query at PostgreSQL's large-message limit");
    is_int(proto_check_client_header('Q', PROTO_LARGE_MESSAGE_LIMIT + 1, err, sizeof(err)), PROTO_ERROR,
           "client header: Query over PostgreSQL's large-message limit is refused");
    is_int(proto_check_client_header('P', 7, err, sizeof(err)), PROTO_ERROR,
           "client header: Parse shorter than two NULs and a count is refused");
    is_int(proto_check_client_header('P', 8, err, sizeof(err)), PROTO_OK, "client header: smallest Parse");
    is_int(proto_check_client_header('B', 11, err, sizeof(err)), PROTO_ERROR,
           "client header: Bind shorter than its fixed part is refused");
    is_int(proto_check_client_header('B', 12, err, sizeof(err)), PROTO_OK, "client header: smallest Bind");
    is_int(proto_check_client_header('E', 8, err, sizeof(err)), PROTO_ERROR,
           "client header: Execute without its row limit is refused");
    is_int(proto_check_client_header('E', PROTO_SMALL_MESSAGE_LIMIT, err, sizeof(err)), PROTO_OK,
           "client header: Execute at the small-message limit");
    is_int(proto_check_client_header('E', PROTO_SMALL_MESSAGE_LIMIT + 1, err, sizeof(err)), PROTO_ERROR,
           "client header: Execute over the small-message limit is refused (PostgreSQL would close)");
    is_int(proto_check_client_header('D', 5, err, sizeof(err)), PROTO_ERROR,
           "client header: Describe without a name is refused");
    is_int(proto_check_client_header('C', 20000, err, sizeof(err)), PROTO_ERROR,
           "client header: Close over the small-message limit is refused");
    is_int(proto_check_client_header('F', 13, err, sizeof(err)), PROTO_ERROR,
           "client header: FunctionCall shorter than its fixed part is refused");
    is_int(proto_check_client_header('d', 4, err, sizeof(err)), PROTO_OK, "client header: empty CopyData");
    is_int(proto_check_client_header('f', 4, err, sizeof(err)), PROTO_ERROR,
           "client header: CopyFail without its message is refused");
    ok(strstr(err, "CopyFail") != NULL, "client header: the error names the message (%s)", err);
}

static void test_client_body(void)
{
    char err[ERR_LEN];
    const uint8_t query[] = { 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0 };
    const uint8_t query_two_nuls[] = { 'x', 0, 'y', 0 };
    const uint8_t query_no_nul[] = { 'x', 'y' };
    const uint8_t parse[] = { 's', '1', 0, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '$', '1', 0, 0, 1, 0, 0, 0, 23 };
    const uint8_t parse_missing_type[] = { 0, 'x', 0, 0, 2, 0, 0, 0, 23 };
    const uint8_t parse_extra[] = { 0, 'x', 0, 0, 0, 9 };
    const uint8_t bind[] = {
        0, 's', '1', 0, 0, 1, 0, 1,          /* portal "", statement "s1", one format: binary */
        0, 2, 0, 0, 0, 2, 'h', 'i', 0xff, 0xff, 0xff, 0xff, /* two values: "hi" and NULL */
        0, 1, 0, 0,                          /* one result format */
    };
    const uint8_t bind_value_too_long[] = { 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 'h', 'i', 0, 0 };
    const uint8_t bind_negative_length[] = { 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 0, 0 };
    const uint8_t bind_formats_mismatch[] = {
        0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0, 0,
    };
    const uint8_t bind_trailing[] = { 0, 0, 0, 0, 0, 0, 0, 0, 7 };
    const uint8_t execute[] = { 'p', 0, 0, 0, 0, 0 };
    const uint8_t execute_unterminated[] = { 'p', 'p', 'p', 'p', 'p' };
    const uint8_t execute_extra[] = { 0, 0, 0, 0, 0, 1 };
    const uint8_t describe[] = { 'S', 's', '1', 0 };
    const uint8_t describe_bad_kind[] = { 'X', 's', '1', 0 };
    const uint8_t close_portal[] = { 'P', 0 };
    const uint8_t function_call[] = { 0, 0, 0, 42, 0, 0, 0, 1, 0, 0, 0, 1, '7', 0, 0 };
    const uint8_t function_call_short[] = { 0, 0, 0, 42, 0, 0, 0, 1, 0, 0, 0, 1 };
    const uint8_t copy_fail[] = { 'n', 'o', 0 };
    const uint8_t copy_data[] = { 0xde, 0xad, 0xbe, 0xef };

    BODY_OK('Q', query, "client body: Query with one string");
    BODY_BAD('Q', query_two_nuls, "client body: Query with bytes after its string is refused");
    BODY_BAD('Q', query_no_nul, "client body: Query without its NUL is refused");
    BODY_OK('P', parse, "client body: Parse with one parameter type");
    BODY_BAD('P', parse_missing_type, "client body: Parse counting more types than it has is refused");
    BODY_BAD('P', parse_extra, "client body: Parse with bytes after its types is refused");
    BODY_OK('B', bind, "client body: Bind with formats, a value, a NULL and result formats");
    BODY_BAD('B', bind_value_too_long, "client body: Bind whose value runs past the end is refused");
    BODY_BAD('B', bind_negative_length, "client body: Bind with a value length below -1 is refused");
    BODY_BAD('B', bind_formats_mismatch, "client body: Bind with 2 formats for 3 values is refused");
    ok(strstr(err, "2 parameter formats for 3 parameters") != NULL, "client body: the mismatch is named (%s)", err);
    BODY_BAD('B', bind_trailing, "client body: Bind with bytes after its result formats is refused");
    BODY_OK('E', execute, "client body: Execute");
    BODY_BAD('E', execute_unterminated, "client body: Execute whose portal name has no NUL is refused");
    BODY_BAD('E', execute_extra, "client body: Execute with a byte after its row limit is refused");
    BODY_OK('D', describe, "client body: Describe of a statement");
    BODY_BAD('D', describe_bad_kind, "client body: Describe of neither 'S' nor 'P' is refused");
    BODY_OK('C', close_portal, "client body: Close of the unnamed portal");
    BODY_BAD('C', describe_bad_kind, "client body: Close of neither 'S' nor 'P' is refused");
    BODY_OK('F', function_call, "client body: FunctionCall with one argument");
    BODY_BAD('F', function_call_short, "client body: FunctionCall without its result format is refused");
    BODY_OK('f', copy_fail, "client body: CopyFail");
    BODY_OK('d', copy_data, "client body: CopyData is any bytes");
    ok(!proto_client_body_has_structure('d') && !proto_client_body_has_structure('S') &&
           proto_client_body_has_structure('B'),
       "client body: only messages with fields have structure to check");
    is_int(proto_check_client_body('S', NULL, 0, err, sizeof(err)), PROTO_OK, "client body: empty Sync");
    BODY_BAD('S', copy_fail, "client body: Sync with a body is refused");
    BODY_BAD('z', copy_fail, "client body: an unknown type is refused");
    is_int(proto_check_client_body('Q', NULL, 0, err, sizeof(err)), PROTO_ERROR,
           "client body: an empty Query body is refused");
    ok(strstr(err, "Query") != NULL, "client body: the error names the message (%s)", err);
}

int main(void)
{
    test_peek_header();
    test_peek_startup_length();
    test_startup_normal();
    test_startup_get_matches_exactly();
    test_startup_protocol_versions();
    test_startup_special_requests();
    test_startup_lengths();
    test_startup_malformed_layout();
    test_startup_user();
    test_startup_protocol_options();
    test_startup_parameter_limits();
    test_startup_error_buffer();
    test_auth_request();
    test_sasl_offers();
    test_parameter_status();
    test_backend_key_data();
    test_ready_for_query();
    test_parse_error();
    test_password_and_query();
    test_sasl_initial();
    test_build_error_and_notice();
    test_build_auth();
    test_build_session_messages();
    test_build_frontend_messages();
    test_build_appends();
    test_build_row_description();
    test_build_data_row();
    test_build_result_set();
    test_msgbuf();
    test_quoting();
    test_client_header();
    test_client_body();
    return tap_done();
}
