/*
 * fuzz_proto.c: feeds arbitrary bytes through every parser in proto.c and through
 * params_parse_options, and checks what a successful parse promises: returned pointers lie inside
 * the input, strings end inside it, lengths add up, and what parses rebuilds to the same bytes.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OPTIONS_MAX_FUZZ_LEN 4096   /* longer inputs add time, not coverage */
#define ERR_LEN 256

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* s starts inside buf[0..len) and its NUL is inside too. */
static bool string_inside(const char *s, const uint8_t *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;

    if (p < buf || p >= buf + len)
        return false;
    return memchr(p, '\0', (size_t)(buf + len - p)) != NULL;
}

/* Copies bytes into a block of exactly that size, so the sanitizer sees any read past it. */
static uint8_t *exact_copy(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);

    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

static bool built_equals(const struct msgbuf *mb, size_t skip, const uint8_t *want, size_t len)
{
    if (mb->failed || mb->len != skip + len)
        return false;
    return len == 0 || memcmp(mb->data + skip, want, len) == 0;
}

/* ---- framing ---- */

static void fuzz_framing(const uint8_t *data, size_t size)
{
    const uint32_t maxima[] = { 4, 1u << 16, 1u << 30, UINT32_MAX };
    uint8_t type;
    uint32_t len;

    for (size_t i = 0; i < sizeof(maxima) / sizeof(maxima[0]); i++) {
        enum proto_result r = proto_peek_header(data, size, maxima[i], &type, &len);

        CHECK(r == PROTO_OK || r == PROTO_INCOMPLETE || r == PROTO_ERROR);
        CHECK((r == PROTO_INCOMPLETE) == (size < PROTO_HEADER_LEN));
        if (r == PROTO_OK)
            CHECK(len >= 4 && len <= maxima[i] && len <= 0x7fffffffu && type == data[0]);
    }
    if (proto_peek_startup_length(data, size, &len) == PROTO_OK)
        CHECK(len >= 8 && len <= PROTO_MAX_STARTUP_LEN);
}

/* ---- startup ---- */

static void check_options_parse(const char *options)
{
    struct param_set set;
    char err[ERR_LEN];

    param_set_init(&set);
    err[0] = '\0';
    if (params_parse_options(options, &set, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < set.n; i++) {
            CHECK(set.entries[i].name[0] != '\0');
            CHECK(strchr(set.entries[i].name, '-') == NULL);
            CHECK(strchr(set.entries[i].name, '=') == NULL);
        }
    } else {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
    }
    param_set_free(&set);
}

static void check_startup_ok(const struct startup_packet *sp, const uint8_t *buf, size_t len)
{
    struct msgbuf mb;

    switch (sp->kind) {
    case STARTUP_SSL:
    case STARTUP_GSSENC:
        CHECK(len == 8);
        return;
    case STARTUP_CANCEL:
        CHECK(len == 16);
        return;
    case STARTUP_NORMAL:
        break;
    }
    CHECK(sp->protocol >> 16 == 3);
    CHECK(sp->n_params >= 1 && sp->n_params <= PROTO_MAX_STARTUP_PARAMS);
    CHECK(sp->n_protocol_options <= PROTO_MAX_STARTUP_PARAMS);
    CHECK(buf[len - 1] == 0);
    for (size_t i = 0; i < sp->n_params; i++) {
        CHECK(string_inside(sp->params[i].name, buf, len));
        CHECK(string_inside(sp->params[i].value, buf, len));
        CHECK(sp->params[i].name[0] != '\0');
        CHECK(strncmp(sp->params[i].name, "_pq_.", 5) != 0);
        CHECK(proto_startup_get(sp, sp->params[i].name) == sp->params[i].value);
    }
    for (size_t i = 0; i < sp->n_protocol_options; i++) {
        CHECK(string_inside(sp->protocol_options[i], buf, len));
        CHECK(strncmp(sp->protocol_options[i], "_pq_.", 5) == 0);
    }
    CHECK(proto_startup_get(sp, "user") != NULL && proto_startup_get(sp, "user")[0] != '\0');

    /* With nothing the builder cannot express, the packet rebuilds byte for byte. */
    if (sp->protocol == PROTO_VERSION_3_0 && sp->n_protocol_options == 0) {
        msgbuf_init(&mb);
        proto_build_startup(&mb, sp->params, sp->n_params);
        CHECK(built_equals(&mb, 0, buf, len));
        msgbuf_free(&mb);
    }
    if (proto_startup_get(sp, "options") != NULL)
        check_options_parse(proto_startup_get(sp, "options"));
}

static void parse_startup_bytes(const uint8_t *buf, size_t len)
{
    struct startup_packet sp;
    char err[ERR_LEN];

    err[0] = '\0';
    if (proto_parse_startup(buf, len, &sp, err, sizeof(err)) == PROTO_OK)
        check_startup_ok(&sp, buf, len);
    else
        CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
}

static void fuzz_startup(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    uint32_t net;

    parse_startup_bytes(data, size);
    /* A random length field rarely matches the size: also try with it made to match. */
    if (size < 8 || size > PROTO_MAX_STARTUP_LEN)
        return;
    copy = exact_copy(data, size);
    net = htonl((uint32_t)size);
    memcpy(copy, &net, sizeof(net));
    parse_startup_bytes(copy, size);
    free(copy);
}

/* ---- message bodies ---- */

static void fuzz_auth(const uint8_t *body, size_t len)
{
    uint32_t code;
    const uint8_t *payload;
    size_t payload_len;
    struct msgbuf mb;

    if (proto_parse_auth_request(body, len, &code, &payload, &payload_len) == PROTO_OK) {
        CHECK(len >= 4 && payload == body + 4 && payload_len == len - 4);
        if (code == AUTH_REQ_MD5)
            CHECK(payload_len == 4);
        if (code == AUTH_REQ_OK || code == AUTH_REQ_PASSWORD)
            CHECK(payload_len == 0);
        msgbuf_init(&mb);
        proto_build_auth_request(&mb, code, payload, payload_len);
        CHECK(built_equals(&mb, PROTO_HEADER_LEN, body, len));
        msgbuf_free(&mb);
    }
    if (proto_sasl_offers(body, len, "SCRAM-SHA-256"))
        CHECK(len >= 15 && body[len - 1] == 0 && body[len - 2] == 0);
    proto_sasl_offers(body, len, "SCRAM-SHA-256-PLUS");
    proto_sasl_offers(body, len, "");
}

static void fuzz_parameter_status(const uint8_t *body, size_t len)
{
    const char *name, *value;
    struct msgbuf mb;

    if (proto_parse_parameter_status(body, len, &name, &value) != PROTO_OK)
        return;
    CHECK(string_inside(name, body, len) && string_inside(value, body, len));
    msgbuf_init(&mb);
    proto_build_parameter_status(&mb, name, value);
    CHECK(built_equals(&mb, PROTO_HEADER_LEN, body, len));
    msgbuf_free(&mb);
}

static void fuzz_fixed_bodies(const uint8_t *body, size_t len)
{
    uint32_t pid, key;
    char status;
    struct msgbuf mb;

    if (proto_parse_backend_key_data(body, len, &pid, &key) == PROTO_OK) {
        CHECK(len == 8);
        msgbuf_init(&mb);
        proto_build_backend_key_data(&mb, pid, key);
        CHECK(built_equals(&mb, PROTO_HEADER_LEN, body, len));
        msgbuf_free(&mb);
    }
    if (proto_parse_ready_for_query(body, len, &status) == PROTO_OK)
        CHECK(len == 1 && (status == 'I' || status == 'T' || status == 'E'));
}

static bool same_field(const char *built, const char *parsed)
{
    return strcmp(built, parsed ? parsed : "") == 0;
}

/* Rebuilding from the parsed fields gives a message that parses to the same fields. */
static void check_error_rebuilds(const struct proto_error *e)
{
    struct msgbuf mb;
    struct proto_error back;

    msgbuf_init(&mb);
    proto_build_error(&mb, e->severity ? e->severity : "", e->sqlstate ? e->sqlstate : "",
                      e->message ? e->message : "", e->detail, e->hint);
    CHECK(!mb.failed && mb.len > PROTO_HEADER_LEN && mb.data[0] == 'E');
    CHECK(proto_parse_error(mb.data + PROTO_HEADER_LEN, mb.len - PROTO_HEADER_LEN, &back) ==
          PROTO_OK);
    CHECK(same_field(back.severity, e->severity) && same_field(back.sqlstate, e->sqlstate));
    CHECK(same_field(back.message, e->message));
    CHECK((e->detail == NULL) == (back.detail == NULL));
    CHECK(e->detail == NULL || same_field(back.detail, e->detail));
    CHECK((e->hint == NULL) == (back.hint == NULL));
    CHECK(e->hint == NULL || same_field(back.hint, e->hint));
    msgbuf_free(&mb);
}

static void fuzz_error(const uint8_t *body, size_t len)
{
    struct proto_error e;
    const char *fields[5];

    if (proto_parse_error(body, len, &e) != PROTO_OK)
        return;
    CHECK(len >= 1 && body[len - 1] == 0);
    fields[0] = e.severity;
    fields[1] = e.sqlstate;
    fields[2] = e.message;
    fields[3] = e.detail;
    fields[4] = e.hint;
    for (size_t i = 0; i < 5; i++)
        CHECK(fields[i] == NULL || string_inside(fields[i], body, len));
    check_error_rebuilds(&e);
}

static void fuzz_client_bodies(const uint8_t *body, size_t len)
{
    const char *s, *mech;
    const uint8_t *payload;
    size_t payload_len;
    struct msgbuf mb;

    if (proto_parse_password(body, len, &s) == PROTO_OK)
        CHECK(string_inside(s, body, len) && strlen(s) == len - 1);
    if (proto_parse_query(body, len, &s) == PROTO_OK) {
        CHECK(strlen(s) == len - 1);
        msgbuf_init(&mb);
        proto_build_query(&mb, s);
        CHECK(built_equals(&mb, PROTO_HEADER_LEN, body, len));
        msgbuf_free(&mb);
    }
    if (proto_parse_sasl_initial(body, len, &mech, &payload, &payload_len) == PROTO_OK) {
        CHECK(string_inside(mech, body, len));
        CHECK(payload == NULL ? payload_len == 0
                              : payload >= body && payload_len == (size_t)(body + len - payload));
        msgbuf_init(&mb);
        proto_build_sasl_initial(&mb, mech, payload, payload_len);
        CHECK(built_equals(&mb, PROTO_HEADER_LEN, body, len));
        msgbuf_free(&mb);
    }
}

/*
 * The checks applied to client messages before they reach a backend: a body that passes fits the
 * header rules for its length, and agrees with the parsers sluice uses on the same message.
 */
static void fuzz_client_checks(const uint8_t *body, size_t len)
{
    static const char types[] = "QPBEDCHSFdcfXpz";
    char err[ERR_LEN];
    const char *s;

    for (const char *t = types; *t; t++) {
        uint8_t type = (uint8_t)*t;
        err[0] = '\0';
        if (proto_check_client_body(type, body, len, err, sizeof(err)) != PROTO_OK) {
            CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
            continue;
        }
        CHECK(len <= UINT32_MAX - 4);
        CHECK(proto_check_client_header(type, (uint32_t)len + 4, err, sizeof(err)) == PROTO_OK ||
              len + 4 > PROTO_SMALL_MESSAGE_LIMIT);
        if (type == 'Q' || type == 'f')
            CHECK(proto_parse_query(body, len, &s) == PROTO_OK);
        if (type == 'E' || type == 'D' || type == 'C')
            CHECK(len >= 2 && memchr(body, '\0', len) != NULL);
        if (!proto_client_body_has_structure(type))
            CHECK(type == 'd' || len == 0);
    }
}

static void fuzz_body(const uint8_t *body, size_t len)
{
    fuzz_client_checks(body, len);
    fuzz_auth(body, len);
    fuzz_parameter_status(body, len);
    fuzz_fixed_bodies(body, len);
    fuzz_error(body, len);
    fuzz_client_bodies(body, len);
}

/* The input as a regular message: when its header frames a whole body, parse that body. */
static void fuzz_messages(const uint8_t *data, size_t size)
{
    uint8_t type;
    uint32_t msg_len;
    uint8_t *body;

    fuzz_body(data, size);
    if (proto_peek_header(data, size, UINT32_MAX, &type, &msg_len) != PROTO_OK)
        return;
    char err[ERR_LEN];
    err[0] = '\0';
    if (proto_check_client_header(type, msg_len, err, sizeof(err)) != PROTO_OK)
        CHECK(err[0] != '\0');
    if ((size_t)msg_len - 4 > size - PROTO_HEADER_LEN)
        return;
    body = exact_copy(data + PROTO_HEADER_LEN, msg_len - 4);
    fuzz_body(body, msg_len - 4);
    free(body);
}

/* ---- options, quoting and sync ---- */

/* Reads back a literal written by proto_append_quoted_literal; NULL if it is not well formed. */
static char *unquote(const char *quoted, char quote, bool allow_escape_prefix)
{
    bool escapes = false;
    char *out = malloc(strlen(quoted) + 1), *w = out;
    const char *p = quoted;

    CHECK(out != NULL);
    if (allow_escape_prefix && *p == 'E') {
        escapes = true;
        p++;
    }
    if (*p++ != quote)
        goto bad;
    for (; *p != '\0'; p++) {
        if (*p == quote && p[1] == quote) {
            *w++ = *p++;
        } else if (*p == quote) {
            if (p[1] != '\0')
                goto bad;
            *w = '\0';
            return out;
        } else if (escapes && *p == '\\') {
            if (p[1] != '\\')
                goto bad;
            *w++ = *p++;
        } else {
            *w++ = *p;
        }
    }
bad:
    free(out);
    return NULL;
}

static void check_quoting(const char *text)
{
    struct msgbuf mb;
    char *back;

    msgbuf_init(&mb);
    proto_append_quoted_literal(&mb, text);
    msgbuf_append(&mb, "", 1);
    CHECK(!mb.failed);
    back = unquote((const char *)mb.data, '\'', true);
    CHECK(back != NULL && strcmp(back, text) == 0);
    free(back);

    msgbuf_reset(&mb);
    proto_append_quoted_ident(&mb, text);
    msgbuf_append(&mb, "", 1);
    CHECK(!mb.failed);
    back = unquote((const char *)mb.data, '"', false);
    CHECK(back != NULL && strcmp(back, text) == 0);
    free(back);
    msgbuf_free(&mb);
}

/* A server already where it should be needs no statement. */
static void check_sync_fixed_points(const struct param_set *client, const struct param_set *server)
{
    struct param_set pool;
    struct msgbuf sql;

    param_set_init(&pool);
    msgbuf_init(&sql);
    CHECK(param_set_copy(&pool, server) == 0 && pool.n == server->n);
    CHECK(params_build_sync(client, &pool, client, &sql) == 0 && sql.len == 0);
    CHECK(params_build_sync(NULL, &pool, server, &sql) == 0 && sql.len == 0);
    for (size_t i = 0; i < client->n; i++) {
        params_is_tracked(client->entries[i].name);
        if (param_set_remove(&pool, client->entries[i].name))
            CHECK(param_set_get(&pool, client->entries[i].name) == NULL);
    }
    params_build_sync(NULL, &pool, server, &sql);
    msgbuf_free(&sql);
    param_set_free(&pool);
}

static void fuzz_options_and_sync(const uint8_t *data, size_t size)
{
    size_t len = size < OPTIONS_MAX_FUZZ_LEN ? size : OPTIONS_MAX_FUZZ_LEN;
    char *text = malloc(len + 1);
    struct param_set client, server;
    struct msgbuf sql;
    char err[ERR_LEN];
    size_t n;

    CHECK(text != NULL);
    memcpy(text, data, len);
    text[len] = '\0';
    check_options_parse(text);
    check_quoting(text);

    /* The first half sets the client's values, the second the server's. */
    param_set_init(&client);
    param_set_init(&server);
    text[len / 2] = '\0';
    if (params_parse_options(text, &client, err, sizeof(err)) == 0 &&
        params_parse_options(text + len / 2 + (len > 0), &server, err, sizeof(err)) == 0) {
        msgbuf_init(&sql);
        n = params_build_sync(&client, NULL, &server, &sql);
        CHECK(n <= client.n + server.n);
        CHECK(!sql.failed && (n == 0) == (sql.len == 0));
        CHECK(sql.len == 0 || memchr(sql.data, '\0', sql.len) == NULL);
        msgbuf_free(&sql);
        check_sync_fixed_points(&client, &server);
    }
    param_set_free(&client);
    param_set_free(&server);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = exact_copy(data, size);

    fuzz_framing(copy, size);
    fuzz_startup(copy, size);
    fuzz_messages(copy, size);
    fuzz_options_and_sync(copy, size);
    free(copy);
    return 0;
}
