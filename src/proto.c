/*
 * proto.c: the PostgreSQL 3.0 wire protocol over byte buffers: message framing, startup packets,
 * the messages sluice reads from clients and servers, and builders for those it writes.
 * Nothing here does I/O or keeps state. Every length that came from the network is checked
 * against the buffer and against a maximum before it is used, and every string must end with a
 * NUL inside its message.
 */
#include "errbuf.h"
#include "proto.h"
#include "reader.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STARTUP_LENGTH_FIELD_LEN 4
#define STARTUP_MIN_LEN 8          /* length + protocol code */
#define STARTUP_FIXED_REQUEST_LEN 8
#define CANCEL_REQUEST_LEN 16
#define PROTOCOL_OPTION_PREFIX "_pq_."
#define MESSAGE_LEN_MAX 0x7fffffffu /* the length field is a signed int32 */
#define MSGBUF_INITIAL_CAP 256
#define ERROR_NAME_SHOWN 64         /* how much of a client-supplied name an error message quotes */

/* ---- reading ---- */

static uint32_t decode_u32(const uint8_t *p)
{
    uint32_t net;

    memcpy(&net, p, sizeof(net));
    return ntohl(net);
}

/* Bodies that are exactly one string: the first NUL must be the last byte. */
static enum proto_result parse_single_string(const uint8_t *body, size_t body_len, const char **out)
{
    struct byte_reader r = { body, body_len, 0 };

    if (body == NULL || !read_cstring(&r, out) || !reader_at_end(&r))
        return PROTO_ERROR;
    return PROTO_OK;
}

/* ---- framing ---- */

enum proto_result proto_peek_header(const uint8_t *buf, size_t len, uint32_t max_len,
                                    uint8_t *type, uint32_t *msg_len)
{
    uint32_t length;

    if (buf == NULL || len < PROTO_HEADER_LEN)
        return PROTO_INCOMPLETE;
    length = decode_u32(buf + 1);
    if (length < sizeof(uint32_t) || length > max_len || length > MESSAGE_LEN_MAX)
        return PROTO_ERROR;
    *type = buf[0];
    *msg_len = length;
    return PROTO_OK;
}

enum proto_result proto_peek_startup_length(const uint8_t *buf, size_t len, uint32_t *pkt_len)
{
    uint32_t length;

    if (buf == NULL || len < STARTUP_LENGTH_FIELD_LEN)
        return PROTO_INCOMPLETE;
    length = decode_u32(buf);
    if (length < STARTUP_MIN_LEN || length > PROTO_MAX_STARTUP_LEN)
        return PROTO_ERROR;
    *pkt_len = length;
    return PROTO_OK;
}

/* ---- startup phase ---- */

static enum proto_result parse_fixed_request(const uint8_t *buf, size_t len,
                                             struct startup_packet *out, enum startup_kind kind,
                                             size_t expected_len, const char *what, char *err,
                                             size_t err_len)
{
    if (len != expected_len) {
        errbuf_set(err, err_len, "invalid %s: %zu bytes instead of %zu", what, len, expected_len);
        return PROTO_ERROR;
    }
    out->kind = kind;
    if (kind == STARTUP_CANCEL) {
        out->cancel_pid = decode_u32(buf + 8);
        out->cancel_key = decode_u32(buf + 12);
    }
    return PROTO_OK;
}

static bool has_protocol_option(const struct startup_packet *pkt, const char *name)
{
    for (size_t i = 0; i < pkt->n_protocol_options; i++) {
        if (strcmp(pkt->protocol_options[i], name) == 0)
            return true;
    }
    return false;
}

static enum proto_result add_startup_param(struct startup_packet *out, const char *name,
                                           const char *value, char *err, size_t err_len)
{
    bool is_option = strncmp(name, PROTOCOL_OPTION_PREFIX, strlen(PROTOCOL_OPTION_PREFIX)) == 0;
    bool duplicate = is_option ? has_protocol_option(out, name)
                               : proto_startup_get(out, name) != NULL;
    size_t used = is_option ? out->n_protocol_options : out->n_params;

    if (duplicate) {
        errbuf_set(err, err_len, "duplicate startup parameter \"%.*s\"", ERROR_NAME_SHOWN, name);
        return PROTO_ERROR;
    }
    if (used == PROTO_MAX_STARTUP_PARAMS) {
        errbuf_set(err, err_len, "too many startup parameters (at most %d are accepted)",
                  PROTO_MAX_STARTUP_PARAMS);
        return PROTO_ERROR;
    }
    if (is_option) {
        out->protocol_options[out->n_protocol_options++] = name;
    } else {
        out->params[out->n_params].name = name;
        out->params[out->n_params].value = value;
        out->n_params++;
    }
    return PROTO_OK;
}

static enum proto_result parse_startup_params(const uint8_t *buf, size_t len,
                                              struct startup_packet *out, char *err,
                                              size_t err_len)
{
    struct byte_reader r = { buf, len, STARTUP_MIN_LEN };
    const char *name, *value, *user;
    const char *missing_terminator =
        "invalid startup packet layout: expected terminator as last byte";

    for (;;) {
        if (!read_cstring(&r, &name)) {
            errbuf_set(err, err_len, "%s", missing_terminator);
            return PROTO_ERROR;
        }
        if (name[0] == '\0')
            break;
        if (!read_cstring(&r, &value)) {
            errbuf_set(err, err_len,
                      "invalid startup packet layout: parameter \"%.*s\" has no value",
                      ERROR_NAME_SHOWN, name);
            return PROTO_ERROR;
        }
        if (add_startup_param(out, name, value, err, err_len) != PROTO_OK)
            return PROTO_ERROR;
    }
    if (!reader_at_end(&r)) {
        errbuf_set(err, err_len, "%s", missing_terminator);
        return PROTO_ERROR;
    }
    user = proto_startup_get(out, "user");
    if (user == NULL || user[0] == '\0') {
        errbuf_set(err, err_len, "no PostgreSQL user name specified in startup packet");
        return PROTO_ERROR;
    }
    return PROTO_OK;
}

enum proto_result proto_parse_startup(const uint8_t *buf, size_t len, struct startup_packet *out,
                                      char *err, size_t err_len)
{
    uint32_t code;

    memset(out, 0, sizeof(*out));
    if (buf == NULL || len < STARTUP_MIN_LEN || len > PROTO_MAX_STARTUP_LEN) {
        errbuf_set(err, err_len, "invalid length of startup packet: %zu bytes", len);
        return PROTO_ERROR;
    }
    if (decode_u32(buf) != len) {
        errbuf_set(err, err_len, "startup packet length field %u does not match its %zu bytes",
                  decode_u32(buf), len);
        return PROTO_ERROR;
    }
    code = decode_u32(buf + STARTUP_LENGTH_FIELD_LEN);
    switch (code) {
    case PROTO_SSL_REQUEST:
        return parse_fixed_request(buf, len, out, STARTUP_SSL, STARTUP_FIXED_REQUEST_LEN,
                                   "SSLRequest", err, err_len);
    case PROTO_GSSENC_REQUEST:
        return parse_fixed_request(buf, len, out, STARTUP_GSSENC, STARTUP_FIXED_REQUEST_LEN,
                                   "GSSENCRequest", err, err_len);
    case PROTO_CANCEL_REQUEST:
        return parse_fixed_request(buf, len, out, STARTUP_CANCEL, CANCEL_REQUEST_LEN,
                                   "CancelRequest", err, err_len);
    default:
        break;
    }
    if ((code >> 16) != (PROTO_VERSION_3_0 >> 16)) {
        errbuf_set(err, err_len, "unsupported frontend protocol %u.%u: server supports 3.0",
                  code >> 16, code & 0xffffu);
        return PROTO_ERROR;
    }
    out->kind = STARTUP_NORMAL;
    out->protocol = code;
    return parse_startup_params(buf, len, out, err, err_len);
}

const char *proto_startup_get(const struct startup_packet *pkt, const char *name)
{
    if (pkt == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < pkt->n_params; i++) {
        if (strcmp(pkt->params[i].name, name) == 0)
            return pkt->params[i].value;
    }
    return NULL;
}

/* ---- server -> sluice ---- */

/* Payload sizes fixed by the protocol; other codes carry a payload of any size. */
static bool auth_payload_size_ok(uint32_t code, size_t data_len)
{
    switch (code) {
    case AUTH_REQ_OK:
    case AUTH_REQ_PASSWORD:
        return data_len == 0;
    case AUTH_REQ_MD5:
        return data_len == 4;
    default:
        return true;
    }
}

enum proto_result proto_parse_auth_request(const uint8_t *body, size_t body_len, uint32_t *code,
                                           const uint8_t **data, size_t *data_len)
{
    struct byte_reader r = { body, body_len, 0 };
    uint32_t request;

    if (body == NULL || !read_u32(&r, &request))
        return PROTO_ERROR;
    if (!auth_payload_size_ok(request, body_len - r.pos))
        return PROTO_ERROR;
    *code = request;
    *data = body + r.pos;
    *data_len = body_len - r.pos;
    return PROTO_OK;
}

bool proto_sasl_offers(const uint8_t *data, size_t data_len, const char *mech)
{
    struct byte_reader r = { data, data_len, 0 };
    const char *name;
    bool found = false;

    if (data == NULL || mech == NULL)
        return false;
    /* A malformed list offers nothing, even if the mechanism appears before the damage. */
    for (;;) {
        if (!read_cstring(&r, &name))
            return false;
        if (name[0] == '\0')
            return found && reader_at_end(&r);
        if (strcmp(name, mech) == 0)
            found = true;
    }
}

enum proto_result proto_parse_parameter_status(const uint8_t *body, size_t body_len,
                                               const char **name, const char **value)
{
    struct byte_reader r = { body, body_len, 0 };
    const char *n, *v;

    if (body == NULL || !read_cstring(&r, &n) || !read_cstring(&r, &v) || !reader_at_end(&r))
        return PROTO_ERROR;
    if (n[0] == '\0')
        return PROTO_ERROR;
    *name = n;
    *value = v;
    return PROTO_OK;
}

enum proto_result proto_parse_backend_key_data(const uint8_t *body, size_t body_len,
                                               uint32_t *pid, uint32_t *key)
{
    struct byte_reader r = { body, body_len, 0 };
    uint32_t p, k;

    if (body == NULL || !read_u32(&r, &p) || !read_u32(&r, &k) || !reader_at_end(&r))
        return PROTO_ERROR;
    *pid = p;
    *key = k;
    return PROTO_OK;
}

enum proto_result proto_parse_ready_for_query(const uint8_t *body, size_t body_len, char *status)
{
    if (body == NULL || body_len != 1)
        return PROTO_ERROR;
    if (body[0] != 'I' && body[0] != 'T' && body[0] != 'E')
        return PROTO_ERROR;
    *status = (char)body[0];
    return PROTO_OK;
}

enum proto_result proto_parse_error(const uint8_t *body, size_t body_len, struct proto_error *out)
{
    struct byte_reader r = { body, body_len, 0 };
    const char *severity = NULL, *nonlocalized_severity = NULL;
    uint8_t field;
    const char *value;

    memset(out, 0, sizeof(*out));
    if (body == NULL)
        return PROTO_ERROR;
    for (;;) {
        if (!read_byte(&r, &field))
            return PROTO_ERROR;     /* no terminating zero byte */
        if (field == 0)
            break;
        if (!read_cstring(&r, &value))
            return PROTO_ERROR;
        switch (field) {
        case 'S': severity = value; break;
        case 'V': nonlocalized_severity = value; break;
        case 'C': out->sqlstate = value; break;
        case 'M': out->message = value; break;
        case 'D': out->detail = value; break;
        case 'H': out->hint = value; break;
        default: break;             /* fields sluice does not use, and future ones */
        }
    }
    if (!reader_at_end(&r))
        return PROTO_ERROR;
    out->severity = nonlocalized_severity ? nonlocalized_severity : severity;
    return PROTO_OK;
}

/* ---- client -> sluice ---- */

enum proto_result proto_parse_password(const uint8_t *body, size_t body_len, const char **password)
{
    return parse_single_string(body, body_len, password);
}

enum proto_result proto_parse_sasl_initial(const uint8_t *body, size_t body_len, const char **mech,
                                           const uint8_t **data, size_t *data_len)
{
    struct byte_reader r = { body, body_len, 0 };
    const char *name;
    uint32_t raw_len;
    int32_t response_len;

    if (body == NULL || !read_cstring(&r, &name) || !read_u32(&r, &raw_len))
        return PROTO_ERROR;
    memcpy(&response_len, &raw_len, sizeof(response_len));
    if (response_len == -1) {
        if (!reader_at_end(&r))
            return PROTO_ERROR;
        *data = NULL;
        *data_len = 0;
    } else {
        if (response_len < 0 || (size_t)response_len != r.len - r.pos)
            return PROTO_ERROR;
        *data = body + r.pos;
        *data_len = (size_t)response_len;
    }
    *mech = name;
    return PROTO_OK;
}

enum proto_result proto_parse_query(const uint8_t *body, size_t body_len, const char **sql)
{
    return parse_single_string(body, body_len, sql);
}

/* ---- client -> backend messages ---- */

/* What PostgreSQL itself allows for each frontend message type after login. */
struct client_message_rule {
    uint8_t type;
    const char *name;
    uint32_t min_body;   /* the fixed part: empty strings, zero counts */
    uint32_t max_len;    /* the length field's largest value */
    bool exact;          /* the body is always empty */
};

static const struct client_message_rule client_message_rules[] = {
    { 'Q', "Query", 1, PROTO_LARGE_MESSAGE_LIMIT, false },
    { 'P', "Parse", 4, PROTO_LARGE_MESSAGE_LIMIT, false },   /* name, query, int16 count */
    { 'B', "Bind", 8, PROTO_LARGE_MESSAGE_LIMIT, false },    /* portal, statement, 3 int16 counts */
    { 'E', "Execute", 5, PROTO_SMALL_MESSAGE_LIMIT, false }, /* portal, int32 row limit */
    { 'D', "Describe", 2, PROTO_SMALL_MESSAGE_LIMIT, false },/* 'S' or 'P', name */
    { 'C', "Close", 2, PROTO_SMALL_MESSAGE_LIMIT, false },
    { 'H', "Flush", 0, 4, true },
    { 'S', "Sync", 0, 4, true },
    { 'F', "FunctionCall", 10, PROTO_LARGE_MESSAGE_LIMIT, false }, /* oid, 3 int16 counts */
    { 'd', "CopyData", 0, PROTO_LARGE_MESSAGE_LIMIT, false },
    { 'c', "CopyDone", 0, 4, true },
    { 'f', "CopyFail", 1, PROTO_SMALL_MESSAGE_LIMIT, false },
    { 'X', "Terminate", 0, 4, true },
};

static const struct client_message_rule *client_message_rule(uint8_t type)
{
    for (size_t i = 0; i < sizeof(client_message_rules) / sizeof(client_message_rules[0]); i++)
        if (client_message_rules[i].type == type)
            return &client_message_rules[i];
    return NULL;
}

enum proto_result proto_check_client_header(uint8_t type, uint32_t msg_len, char *err, size_t err_len)
{
    const struct client_message_rule *rule = client_message_rule(type);

    if (rule == NULL) {
        errbuf_set(err, err_len, "invalid frontend message type %d", type);
        return PROTO_ERROR;
    }
    if (rule->exact && msg_len != 4) {
        errbuf_set(err, err_len, "invalid %s message: length %u, it must be 4", rule->name, msg_len);
        return PROTO_ERROR;
    }
    if (msg_len < 4 + rule->min_body || msg_len > rule->max_len) {
        errbuf_set(err, err_len, "invalid %s message: length %u is outside %u..%u", rule->name,
                   msg_len, 4 + rule->min_body, rule->max_len);
        return PROTO_ERROR;
    }
    return PROTO_OK;
}

bool proto_client_body_has_structure(uint8_t type)
{
    const struct client_message_rule *rule = client_message_rule(type);
    return rule != NULL && !rule->exact && type != 'd';
}

/* n format codes (int16 each) after their count; the count must be 0, 1 or n_values. */
static bool skip_format_codes(struct byte_reader *r, uint16_t *count)
{
    return read_u16(r, count) && skip_bytes(r, (size_t)*count * 2);
}

/* A count of values, each an int32 length (-1: NULL) and that many bytes. */
static bool skip_values(struct byte_reader *r, uint16_t *count)
{
    if (!read_u16(r, count))
        return false;
    for (uint16_t i = 0; i < *count; i++) {
        int32_t len;
        if (!read_i32(r, &len) || len < -1 || (len > 0 && !skip_bytes(r, (size_t)len)))
            return false;
    }
    return true;
}

static bool formats_fit(uint16_t n_formats, uint16_t n_values)
{
    return n_formats <= 1 || n_formats == n_values;
}

/* Bind: portal, statement, parameter formats, parameter values, result formats. */
static bool check_bind(struct byte_reader *r, char *err, size_t err_len)
{
    const char *portal, *statement;
    uint16_t n_formats, n_values, n_results;

    if (!read_cstring(r, &portal) || !read_cstring(r, &statement) || !skip_format_codes(r, &n_formats) ||
        !skip_values(r, &n_values) || !skip_format_codes(r, &n_results))
        return false;
    if (!formats_fit(n_formats, n_values)) {
        errbuf_set(err, err_len, "invalid Bind message: %u parameter formats for %u parameters",
                   n_formats, n_values);
        return false;
    }
    return true;
}

/* FunctionCall: function oid, argument formats, arguments, result format. */
static bool check_function_call(struct byte_reader *r, char *err, size_t err_len)
{
    uint32_t oid;
    uint16_t n_formats, n_values, result_format;

    if (!read_u32(r, &oid) || !skip_format_codes(r, &n_formats) || !skip_values(r, &n_values) ||
        !read_u16(r, &result_format))
        return false;
    if (!formats_fit(n_formats, n_values)) {
        errbuf_set(err, err_len, "invalid FunctionCall message: %u argument formats for %u arguments",
                   n_formats, n_values);
        return false;
    }
    return true;
}

static bool check_client_body_fields(uint8_t type, struct byte_reader *r, char *err, size_t err_len)
{
    const char *text;
    uint16_t n_types;
    uint32_t max_rows;
    uint8_t kind;

    switch (type) {
    case 'Q':
    case 'f':
        return read_cstring(r, &text);
    case 'P':
        return read_cstring(r, &text) && read_cstring(r, &text) && read_u16(r, &n_types) &&
               skip_bytes(r, (size_t)n_types * 4);
    case 'B':
        return check_bind(r, err, err_len);
    case 'E':
        return read_cstring(r, &text) && read_u32(r, &max_rows);
    case 'D':
    case 'C':
        return read_byte(r, &kind) && (kind == 'S' || kind == 'P') && read_cstring(r, &text);
    case 'F':
        return check_function_call(r, err, err_len);
    default:
        return true;
    }
}

enum proto_result proto_check_client_body(uint8_t type, const uint8_t *body, size_t body_len,
                                          char *err, size_t err_len)
{
    const struct client_message_rule *rule = client_message_rule(type);
    struct byte_reader r = { body, body_len, 0 };

    if (rule == NULL) {
        errbuf_set(err, err_len, "invalid frontend message type %d", type);
        return PROTO_ERROR;
    }
    if (!proto_client_body_has_structure(type)) {
        if (!rule->exact || body_len == 0)
            return PROTO_OK;
        errbuf_set(err, err_len, "invalid %s message: it has a body", rule->name);
        return PROTO_ERROR;
    }
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (body != NULL && check_client_body_fields(type, &r, err, err_len) && reader_at_end(&r))
        return PROTO_OK;
    if (err != NULL && err_len > 0 && err[0] == '\0')
        errbuf_set(err, err_len, "malformed %s message: its fields do not fill its %zu-byte body exactly",
                   rule->name, body_len);
    return PROTO_ERROR;
}

/* ---- msgbuf ---- */

void msgbuf_init(struct msgbuf *mb)
{
    mb->data = NULL;
    mb->len = 0;
    mb->cap = 0;
    mb->failed = false;
}

void msgbuf_reset(struct msgbuf *mb)
{
    mb->len = 0;
    mb->failed = false;
}

void msgbuf_free(struct msgbuf *mb)
{
    free(mb->data);
    msgbuf_init(mb);
}

static bool msgbuf_reserve(struct msgbuf *mb, size_t extra)
{
    size_t need, cap;
    uint8_t *grown;

    if (extra > SIZE_MAX - mb->len)
        return false;
    need = mb->len + extra;
    if (need <= mb->cap)
        return true;
    cap = mb->cap ? mb->cap : MSGBUF_INITIAL_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    grown = realloc(mb->data, cap);
    if (grown == NULL)
        return false;
    mb->data = grown;
    mb->cap = cap;
    return true;
}

void msgbuf_append(struct msgbuf *mb, const void *data, size_t len)
{
    if (mb->failed || len == 0)
        return;
    if (data == NULL || !msgbuf_reserve(mb, len)) {
        mb->failed = true;
        return;
    }
    memcpy(mb->data + mb->len, data, len);
    mb->len += len;
}

/* ---- building messages ---- */

static void append_u32(struct msgbuf *mb, uint32_t value)
{
    uint32_t net = htonl(value);

    msgbuf_append(mb, &net, sizeof(net));
}

static void append_byte(struct msgbuf *mb, uint8_t value)
{
    msgbuf_append(mb, &value, 1);
}

/* A string with its NUL; NULL is written as the empty string. */
static void append_cstring(struct msgbuf *mb, const char *s)
{
    if (s == NULL)
        s = "";
    msgbuf_append(mb, s, strlen(s) + 1);
}

/* Writes the length field at length_offset: it counts itself and everything after it. */
static void patch_length(struct msgbuf *mb, size_t length_offset)
{
    size_t length;
    uint32_t net;

    if (mb->failed)
        return;
    length = mb->len - length_offset;
    if (length > MESSAGE_LEN_MAX) {
        mb->failed = true;
        return;
    }
    net = htonl((uint32_t)length);
    memcpy(mb->data + length_offset, &net, sizeof(net));
}

/* Starts a regular message; returns where its length field is, for message_end(). */
static size_t message_begin(struct msgbuf *mb, char type)
{
    size_t length_offset = mb->len + 1;

    append_byte(mb, (uint8_t)type);
    append_u32(mb, 0);
    return length_offset;
}

static void message_end(struct msgbuf *mb, size_t length_offset)
{
    patch_length(mb, length_offset);
}

/* A message whose body is one string (Query, PasswordMessage, CommandComplete). */
static void build_string_message(struct msgbuf *mb, char type, const char *text)
{
    size_t start = message_begin(mb, type);

    append_cstring(mb, text);
    message_end(mb, start);
}

/* A message with no body (Terminate, EmptyQueryResponse). */
static void build_bare_message(struct msgbuf *mb, char type)
{
    size_t start = message_begin(mb, type);

    message_end(mb, start);
}

static void build_error_fields(struct msgbuf *mb, char type, const char *severity,
                               const char *sqlstate, const char *message, const char *detail,
                               const char *hint)
{
    size_t start = message_begin(mb, type);

    append_byte(mb, 'S');
    append_cstring(mb, severity);
    append_byte(mb, 'V');
    append_cstring(mb, severity);
    append_byte(mb, 'C');
    append_cstring(mb, sqlstate);
    append_byte(mb, 'M');
    append_cstring(mb, message);
    if (detail != NULL) {
        append_byte(mb, 'D');
        append_cstring(mb, detail);
    }
    if (hint != NULL) {
        append_byte(mb, 'H');
        append_cstring(mb, hint);
    }
    append_byte(mb, 0);
    message_end(mb, start);
}

void proto_build_error(struct msgbuf *mb, const char *severity, const char *sqlstate,
                       const char *message, const char *detail, const char *hint)
{
    build_error_fields(mb, 'E', severity, sqlstate, message, detail, hint);
}

void proto_build_notice(struct msgbuf *mb, const char *severity, const char *sqlstate,
                        const char *message)
{
    build_error_fields(mb, 'N', severity, sqlstate, message, NULL, NULL);
}

void proto_build_auth_request(struct msgbuf *mb, uint32_t code, const void *data, size_t data_len)
{
    size_t start = message_begin(mb, 'R');

    append_u32(mb, code);
    msgbuf_append(mb, data, data_len);
    message_end(mb, start);
}

void proto_build_auth_sasl(struct msgbuf *mb, const char *mech)
{
    size_t start = message_begin(mb, 'R');

    append_u32(mb, AUTH_REQ_SASL);
    append_cstring(mb, mech);
    append_byte(mb, 0);             /* end of the mechanism list */
    message_end(mb, start);
}

void proto_build_parameter_status(struct msgbuf *mb, const char *name, const char *value)
{
    size_t start = message_begin(mb, 'S');

    append_cstring(mb, name);
    append_cstring(mb, value);
    message_end(mb, start);
}

void proto_build_backend_key_data(struct msgbuf *mb, uint32_t pid, uint32_t key)
{
    size_t start = message_begin(mb, 'K');

    append_u32(mb, pid);
    append_u32(mb, key);
    message_end(mb, start);
}

void proto_build_ready_for_query(struct msgbuf *mb, char status)
{
    size_t start = message_begin(mb, 'Z');

    append_byte(mb, (uint8_t)status);
    message_end(mb, start);
}

void proto_build_negotiate_version(struct msgbuf *mb, uint32_t newest_minor,
                                   const char *const *options, size_t n_options)
{
    size_t start = message_begin(mb, 'v');

    /*
     * The documentation names this field the newest minor version, but servers send the whole
     * version number (3 << 16 | minor) and libpq 18 rejects anything below 3.0.
     */
    append_u32(mb, (PROTO_VERSION_3_0 & 0xffff0000u) | (newest_minor & 0xffffu));
    if (n_options > MESSAGE_LEN_MAX) {
        mb->failed = true;
        return;
    }
    append_u32(mb, (uint32_t)n_options);
    for (size_t i = 0; i < n_options; i++)
        append_cstring(mb, options[i]);
    message_end(mb, start);
}

void proto_build_startup(struct msgbuf *mb, const struct startup_param *params, size_t n_params)
{
    size_t start = mb->len;

    append_u32(mb, 0);
    append_u32(mb, PROTO_VERSION_3_0);
    for (size_t i = 0; i < n_params; i++) {
        append_cstring(mb, params[i].name);
        append_cstring(mb, params[i].value);
    }
    append_byte(mb, 0);
    patch_length(mb, start);
}

void proto_build_cancel_request(struct msgbuf *mb, uint32_t pid, uint32_t key)
{
    append_u32(mb, CANCEL_REQUEST_LEN);
    append_u32(mb, PROTO_CANCEL_REQUEST);
    append_u32(mb, pid);
    append_u32(mb, key);
}

void proto_build_password(struct msgbuf *mb, const char *password)
{
    build_string_message(mb, 'p', password);
}

void proto_build_sasl_initial(struct msgbuf *mb, const char *mech, const void *data, size_t len)
{
    size_t start = message_begin(mb, 'p');

    append_cstring(mb, mech);
    if (data == NULL) {
        append_u32(mb, UINT32_MAX);  /* -1: no initial response */
    } else if (len > MESSAGE_LEN_MAX) {
        mb->failed = true;
        return;
    } else {
        append_u32(mb, (uint32_t)len);
        msgbuf_append(mb, data, len);
    }
    message_end(mb, start);
}

void proto_build_sasl_response(struct msgbuf *mb, const void *data, size_t len)
{
    size_t start = message_begin(mb, 'p');

    msgbuf_append(mb, data, len);
    message_end(mb, start);
}

void proto_build_query(struct msgbuf *mb, const char *sql)
{
    build_string_message(mb, 'Q', sql);
}

void proto_build_sync(struct msgbuf *mb)
{
    build_bare_message(mb, 'S');
}

void proto_build_copy_fail(struct msgbuf *mb, const char *reason)
{
    build_string_message(mb, 'f', reason);
}

void proto_build_terminate(struct msgbuf *mb)
{
    build_bare_message(mb, 'X');
}

/* ---- query results ---- */

#define TYPMOD_NONE UINT32_MAX       /* -1 as an int32 */
#define NULL_VALUE_LENGTH UINT32_MAX /* -1: SQL NULL */
#define FORMAT_TEXT 0

static void append_u16(struct msgbuf *mb, uint16_t value)
{
    uint16_t net = htons(value);

    msgbuf_append(mb, &net, sizeof(net));
}

/* pg_type.typlen of the types the builders know; -1 (variable length) for any other. */
static int16_t type_size(uint32_t type_oid)
{
    switch (type_oid) {
    case PROTO_TYPE_INT4:
        return 4;
    case PROTO_TYPE_INT8:
        return 8;
    default:
        return -1;
    }
}

void proto_build_row_description(struct msgbuf *mb, const struct proto_column *columns,
                                 size_t n_columns)
{
    size_t start = message_begin(mb, 'T');

    append_u16(mb, (uint16_t)n_columns);
    for (size_t i = 0; i < n_columns; i++) {
        append_cstring(mb, columns[i].name);
        append_u32(mb, 0);           /* table OID: not a table column */
        append_u16(mb, 0);           /* column number */
        append_u32(mb, columns[i].type_oid);
        append_u16(mb, (uint16_t)type_size(columns[i].type_oid));
        append_u32(mb, TYPMOD_NONE);
        append_u16(mb, FORMAT_TEXT);
    }
    message_end(mb, start);
}

size_t proto_data_row_begin(struct msgbuf *mb, uint16_t n_values)
{
    size_t start = message_begin(mb, 'D');

    append_u16(mb, n_values);
    return start;
}

void proto_data_row_add(struct msgbuf *mb, const char *value)
{
    size_t len;

    if (value == NULL) {
        append_u32(mb, NULL_VALUE_LENGTH);
        return;
    }
    len = strlen(value);
    if (len > MESSAGE_LEN_MAX) {
        mb->failed = true;
        return;
    }
    append_u32(mb, (uint32_t)len);
    msgbuf_append(mb, value, len);
}

void proto_data_row_end(struct msgbuf *mb, size_t row)
{
    message_end(mb, row);
}

void proto_build_command_complete(struct msgbuf *mb, const char *tag)
{
    build_string_message(mb, 'C', tag);
}

void proto_build_empty_query_response(struct msgbuf *mb)
{
    build_bare_message(mb, 'I');
}

/* ---- SQL quoting ---- */

/* Writes text between quote characters, doubling the quote (and the backslash if asked). */
static void append_quoted(struct msgbuf *mb, const char *text, char quote, bool double_backslash)
{
    append_byte(mb, (uint8_t)quote);
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == quote || (double_backslash && *p == '\\'))
            append_byte(mb, (uint8_t)*p);
        append_byte(mb, (uint8_t)*p);
    }
    append_byte(mb, (uint8_t)quote);
}

void proto_append_quoted_literal(struct msgbuf *mb, const char *value)
{
    /* E'' reads the same whatever standard_conforming_strings says, as quote_literal() does. */
    bool has_backslash;

    if (value == NULL)
        value = "";
    has_backslash = strchr(value, '\\') != NULL;
    if (has_backslash)
        append_byte(mb, 'E');
    append_quoted(mb, value, '\'', has_backslash);
}

void proto_append_quoted_ident(struct msgbuf *mb, const char *name)
{
    append_quoted(mb, name ? name : "", '"', false);
}
