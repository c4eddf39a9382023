/*
 * proto.h: the PostgreSQL 3.0 wire protocol as pure functions over byte buffers.
 * Parsers take bytes and return a parsed value or a precise error; they never read a socket and
 * never trust a length from the network. Builders append complete messages to a msgbuf.
 *
 * Conventions: a regular message is type byte + int32 length (counting itself) + body.
 * "body" below is what follows the 5-byte header, body_len = length - 4.
 * Pointers returned by parsers point into the caller's buffer.
 */
#ifndef SLUICE_PROTO_H
#define SLUICE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION_3_0 196608u      /* 3 << 16 */
#define PROTO_SSL_REQUEST 80877103u
#define PROTO_GSSENC_REQUEST 80877104u
#define PROTO_CANCEL_REQUEST 80877102u
#define PROTO_HEADER_LEN 5
#define PROTO_MAX_STARTUP_LEN 10000    /* PostgreSQL refuses larger startup packets too */
#define PROTO_MAX_STARTUP_PARAMS 64
#define PROTO_TLS_HANDSHAKE_BYTE 0x16  /* first byte of a direct TLS ClientHello */

/* Authentication request codes ('R' messages). */
#define AUTH_REQ_OK 0
#define AUTH_REQ_PASSWORD 3
#define AUTH_REQ_MD5 5
#define AUTH_REQ_SASL 10
#define AUTH_REQ_SASL_CONTINUE 11
#define AUTH_REQ_SASL_FINAL 12

enum proto_result {
    PROTO_OK = 0,
    PROTO_INCOMPLETE = 1, /* not enough bytes yet */
    PROTO_ERROR = -1,     /* malformed: close the connection with 08P01 */
};

/* ---- message framing ---- */

/*
 * Reads a regular message header. *msg_len is the length field (>= 4, counts itself, not the
 * type byte). ERROR if the length is < 4, > max_len or beyond the int32 range.
 */
enum proto_result proto_peek_header(const uint8_t *buf, size_t len, uint32_t max_len,
                                    uint8_t *type, uint32_t *msg_len);

/*
 * Reads the int32 length that starts a startup-phase packet. ERROR if < 8 or
 * > PROTO_MAX_STARTUP_LEN (a direct TLS ClientHello, first byte 0x16, lands here: check it first).
 */
enum proto_result proto_peek_startup_length(const uint8_t *buf, size_t len, uint32_t *pkt_len);

/* ---- startup phase (client -> sluice) ---- */

enum startup_kind {
    STARTUP_NORMAL,  /* StartupMessage: protocol version + parameters */
    STARTUP_SSL,     /* SSLRequest */
    STARTUP_GSSENC,  /* GSSENCRequest */
    STARTUP_CANCEL,  /* CancelRequest */
};

struct startup_param {
    const char *name;
    const char *value;
};

struct startup_packet {
    enum startup_kind kind;
    uint32_t protocol;       /* STARTUP_NORMAL: requested version (major << 16 | minor) */
    size_t n_params;
    struct startup_param params[PROTO_MAX_STARTUP_PARAMS]; /* excludes _pq_.* options */
    size_t n_protocol_options;                              /* "_pq_." names the client asked for */
    const char *protocol_options[PROTO_MAX_STARTUP_PARAMS];
    uint32_t cancel_pid;     /* STARTUP_CANCEL */
    uint32_t cancel_key;     /* STARTUP_CANCEL */
};

/*
 * Parses one whole startup-phase packet (length field included: buf[0..len) with len equal to
 * the packet's length field). Accepts major version 3 with any minor (the caller answers
 * NegotiateProtocolVersion for minor > 0). Requires a non-empty "user" and refuses a name given
 * twice; parameter names and values must be NUL-terminated inside the packet; the list ends with
 * an empty name, which must be the last byte. Returns PROTO_OK or
 * PROTO_ERROR with a human-readable reason in err.
 */
enum proto_result proto_parse_startup(const uint8_t *buf, size_t len, struct startup_packet *out,
                                      char *err, size_t err_len);

/* Value of a startup parameter, or NULL. */
const char *proto_startup_get(const struct startup_packet *pkt, const char *name);

/* ---- server -> sluice messages (bodies) ---- */

/*
 * 'R': *code is the request code; *data and *data_len what follows it (salt, SASL payload...).
 * ERROR if the payload size does not fit the code: none for OK and cleartext, 4 bytes for MD5.
 */
enum proto_result proto_parse_auth_request(const uint8_t *body, size_t body_len, uint32_t *code,
                                           const uint8_t **data, size_t *data_len);

/* AuthenticationSASL payload: does the NUL-separated mechanism list contain mech? */
bool proto_sasl_offers(const uint8_t *data, size_t data_len, const char *mech);

/* 'S' ParameterStatus. */
enum proto_result proto_parse_parameter_status(const uint8_t *body, size_t body_len,
                                               const char **name, const char **value);

/* 'K' BackendKeyData (protocol 3.0: 4-byte key). */
enum proto_result proto_parse_backend_key_data(const uint8_t *body, size_t body_len,
                                               uint32_t *pid, uint32_t *key);

/* 'Z' ReadyForQuery: status 'I', 'T' or 'E'. */
enum proto_result proto_parse_ready_for_query(const uint8_t *body, size_t body_len, char *status);

/* 'E' ErrorResponse / 'N' NoticeResponse: the fields sluice cares about (NULL if absent). */
struct proto_error {
    const char *severity;   /* 'V' if present, else 'S' */
    const char *sqlstate;   /* 'C' */
    const char *message;    /* 'M' */
    const char *detail;     /* 'D' */
    const char *hint;       /* 'H' */
};
enum proto_result proto_parse_error(const uint8_t *body, size_t body_len, struct proto_error *out);

/* ---- client -> sluice messages (bodies) ---- */

/* 'p' PasswordMessage holding a cleartext or md5 password: exactly one NUL-terminated string. */
enum proto_result proto_parse_password(const uint8_t *body, size_t body_len, const char **password);

/* 'p' SASLInitialResponse: mechanism name, int32 length (-1 = none), data. */
enum proto_result proto_parse_sasl_initial(const uint8_t *body, size_t body_len, const char **mech,
                                           const uint8_t **data, size_t *data_len);

/* 'Q' Query: exactly one NUL-terminated string. */
enum proto_result proto_parse_query(const uint8_t *body, size_t body_len, const char **sql);

/*
 * Messages a logged-in client sends on to a backend, checked before they reach it. PostgreSQL
 * closes the connection on a frontend message type it does not know or a length over its limit
 * for the type, and fails the transaction on a malformed body: either would cost the backend
 * that other clients share, so sluice refuses such a client itself.
 */
#define PROTO_SMALL_MESSAGE_LIMIT 10000        /* PostgreSQL's limit for Execute, Sync, Close... */
#define PROTO_LARGE_MESSAGE_LIMIT 0x3fffffffu  /* and for Query, Parse, Bind, CopyData, FunctionCall */

/*
 * The header: type must be one a frontend may send after login (Q P B E D C H S F d c f X) and
 * msg_len (the length field, counting itself) possible for it: at least the type's fixed part,
 * exactly 4 for Sync, Flush, CopyDone and Terminate, and within PostgreSQL's limit for the type.
 * ERROR with the reason in err.
 */
enum proto_result proto_check_client_header(uint8_t type, uint32_t msg_len, char *err, size_t err_len);

/* Whether proto_check_client_body has structure to check for this type (CopyData has none). */
bool proto_client_body_has_structure(uint8_t type);

/*
 * The whole body of a message whose header passed proto_check_client_header: every string ends
 * inside it, every count and length adds up to exactly the body (Query, Parse, Bind, Execute,
 * Describe, Close, FunctionCall, CopyFail), Describe and Close name 'S' or 'P', and Bind's and
 * FunctionCall's format-code counts are 0, 1 or the number of values, as PostgreSQL requires.
 * ERROR with the reason in err.
 */
enum proto_result proto_check_client_body(uint8_t type, const uint8_t *body, size_t body_len,
                                          char *err, size_t err_len);

/* ---- building messages ---- */

/*
 * A growable byte buffer for outgoing messages. failed is set (and stays until msgbuf_reset) if
 * memory runs out or a message would exceed the int32 length; the contents are then unusable.
 */
struct msgbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool failed;
};

void msgbuf_init(struct msgbuf *mb);
void msgbuf_reset(struct msgbuf *mb);  /* len = 0 and failed = false, keeps memory */
void msgbuf_free(struct msgbuf *mb);

/* ErrorResponse (severity "ERROR" or "FATAL") with S, V, C, M and optional D/H fields. */
void proto_build_error(struct msgbuf *mb, const char *severity, const char *sqlstate,
                       const char *message, const char *detail, const char *hint);
/* NoticeResponse, severity "NOTICE"/"WARNING"/"LOG". */
void proto_build_notice(struct msgbuf *mb, const char *severity, const char *sqlstate,
                        const char *message);
/* Authentication request 'R' with a code and its payload (salt, SASL data...). */
void proto_build_auth_request(struct msgbuf *mb, uint32_t code, const void *data, size_t data_len);
/* AuthenticationSASL with one mechanism. */
void proto_build_auth_sasl(struct msgbuf *mb, const char *mech);
void proto_build_parameter_status(struct msgbuf *mb, const char *name, const char *value);
void proto_build_backend_key_data(struct msgbuf *mb, uint32_t pid, uint32_t key);
void proto_build_ready_for_query(struct msgbuf *mb, char status);
/*
 * NegotiateProtocolVersion: newest minor supported and the unrecognized _pq_ options. The version
 * field is written as 3 << 16 | newest_minor, as PostgreSQL sends it and libpq expects it.
 */
void proto_build_negotiate_version(struct msgbuf *mb, uint32_t newest_minor,
                                   const char *const *options, size_t n_options);

/* StartupMessage for protocol 3.0 from name/value pairs (user, database, ...). */
void proto_build_startup(struct msgbuf *mb, const struct startup_param *params, size_t n_params);
/* CancelRequest (16 bytes, no type byte). */
void proto_build_cancel_request(struct msgbuf *mb, uint32_t pid, uint32_t key);
/* 'p' PasswordMessage with a cleartext or md5 password. */
void proto_build_password(struct msgbuf *mb, const char *password);
/* SASLInitialResponse; data NULL writes length -1 (no initial response). */
void proto_build_sasl_initial(struct msgbuf *mb, const char *mech, const void *data, size_t len);
void proto_build_sasl_response(struct msgbuf *mb, const void *data, size_t len);
void proto_build_query(struct msgbuf *mb, const char *sql);
void proto_build_sync(struct msgbuf *mb);
/* CopyFail with the reason the COPY is abandoned. */
void proto_build_copy_fail(struct msgbuf *mb, const char *reason);
void proto_build_terminate(struct msgbuf *mb);

/* ---- query results (sluice -> client: the admin console's answers) ---- */

/* Column types (pg_type OIDs) whose size the result builders know; others go as variable length. */
#define PROTO_TYPE_INT8 20
#define PROTO_TYPE_INT4 23
#define PROTO_TYPE_TEXT 25
#define PROTO_TYPE_NUMERIC 1700

struct proto_column {
    const char *name;
    uint32_t type_oid; /* PROTO_TYPE_* */
};

/*
 * RowDescription: per column its name, table OID 0, column number 0, type OID, type size (4, 8,
 * or -1 for variable length), typmod -1 and text format.
 */
void proto_build_row_description(struct msgbuf *mb, const struct proto_column *columns,
                                 size_t n_columns);
/*
 * DataRow, written in pieces: begin with the number of values, add each one, end to fill in the
 * length (pass what begin returned). The values must add up to n_values.
 */
size_t proto_data_row_begin(struct msgbuf *mb, uint16_t n_values);
/* A text-format value; NULL sends SQL NULL. */
void proto_data_row_add(struct msgbuf *mb, const char *value);
void proto_data_row_end(struct msgbuf *mb, size_t row);
/* CommandComplete with its tag ("SHOW", "SELECT 3", ...). */
void proto_build_command_complete(struct msgbuf *mb, const char *tag);
/* EmptyQueryResponse: the answer to a query string with no command in it. */
void proto_build_empty_query_response(struct msgbuf *mb);

/*
 * SQL literal quoting for SET commands built by sluice: 'va''lue'. A value holding a backslash
 * becomes E'a\\b' (backslashes doubled), which reads the same whatever standard_conforming_strings
 * says.
 */
void proto_append_quoted_literal(struct msgbuf *mb, const char *value);
/* Identifier quoting: "na""me". */
void proto_append_quoted_ident(struct msgbuf *mb, const char *name);
/* Raw append (used by the two above and by SQL builders). */
void msgbuf_append(struct msgbuf *mb, const void *data, size_t len);

#endif
