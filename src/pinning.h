/*
 * pinning.h: the small SQL lexer that decides when a client must keep its backend in transaction
 * pooling. It reads query text (a simple Query, possibly several statements separated by ';') and
 * tells which statements leave state in the backend's session (SET, temporary tables, session
 * advisory locks, LISTEN, cursors WITH HOLD, SQL-level PREPARE, LOAD...), which change a
 * parameter sluice tracks itself, and which drop the client's prepared statements.
 *
 * It lexes as PostgreSQL does: keywords count only at the head of a statement and outside
 * single-quoted strings (with '' and, in E'...', backslash escapes), double-quoted identifiers,
 * -- and nested slash-star comments, and dollar quotes. Case does not matter. Nothing here
 * allocates or keeps state; every read stays inside [sql, sql + len), which need not end in a NUL.
 * When unsure it errs towards pinning: pinning too often costs a backend, too rarely leaks one
 * client's session to another.
 */
#ifndef SLUICE_PINNING_H
#define SLUICE_PINNING_H

#include <stdbool.h>
#include <stddef.h>

/* Parameter and statement names are copied into buffers of this size (NUL included). */
#define PINNING_NAME_LEN 128

/* Why a statement needs the client to keep its backend. PIN_NONE: it does not. */
enum pin_reason {
    PIN_NONE = 0,
    PIN_SET,                       /* SET / SET SESSION of a parameter the caller does not track */
    PIN_SET_ROLE,                  /* SET ROLE (not NONE) */
    PIN_SET_SESSION_AUTHORIZATION, /* SET SESSION AUTHORIZATION (not DEFAULT) */
    PIN_SESSION_CHARACTERISTICS,   /* SET SESSION CHARACTERISTICS AS TRANSACTION ... */
    PIN_SET_CONFIG,                /* set_config(..., ..., is_local) with is_local not plainly true */
    PIN_TEMP_TABLE,                /* CREATE TEMP TABLE/VIEW/SEQUENCE, SELECT INTO TEMP, pg_temp. */
    PIN_ADVISORY_LOCK,             /* pg_advisory_lock(), pg_try_advisory_lock() and _shared */
    PIN_LISTEN,                    /* LISTEN */
    PIN_CURSOR_WITH_HOLD,          /* DECLARE ... WITH HOLD */
    PIN_PREPARE,                   /* SQL-level PREPARE name AS ... (not PREPARE TRANSACTION) */
    PIN_LOAD,                      /* LOAD 'library' */
    PIN_SET_FROM_CURRENT,          /* SET name FROM CURRENT: the value may be a SET LOCAL one */
    PIN_SET_BEFORE_SAVEPOINT_ROLLBACK, /* (the caller's) settings changed in a transaction that
                                          rolled back to a savepoint: which remain is unknown */
};

/*
 * What else a statement does that the data path must act on. None of these pins: RESET and
 * DISCARD return a session to the state every backend of the pool starts in, the others end a
 * transaction or clear session state that pinned a client.
 */
enum pin_effect {
    PIN_EFFECT_NONE = 0,
    PIN_EFFECT_TRACKED_SET,    /* SET of a tracked parameter: name, and value_start/value_len */
    PIN_EFFECT_TRACKED_RESET,  /* RESET, or SET ... TO DEFAULT, of a tracked parameter: name */
    PIN_EFFECT_RESET,          /* RESET / SET ... TO DEFAULT / SET ROLE NONE of an untracked one */
    PIN_EFFECT_RESET_ALL,      /* RESET ALL */
    PIN_EFFECT_DISCARD_ALL,    /* DISCARD ALL: everything above, and all prepared statements */
    PIN_EFFECT_DEALLOCATE,     /* DEALLOCATE [PREPARE] name: name, as Postgres reads it */
    PIN_EFFECT_DEALLOCATE_ALL, /* DEALLOCATE [PREPARE] ALL */
    PIN_EFFECT_DISCARD_TEMP,   /* DISCARD TEMP | TEMPORARY */
    PIN_EFFECT_COMMIT,         /* COMMIT / END (not COMMIT PREPARED) */
    PIN_EFFECT_ROLLBACK,       /* ROLLBACK / ABORT (not ROLLBACK PREPARED, not TO SAVEPOINT) */
    PIN_EFFECT_ROLLBACK_TO,    /* ROLLBACK TO [SAVEPOINT] name */
    PIN_EFFECT_UNLISTEN_ALL,   /* UNLISTEN * */
    PIN_EFFECT_CLOSE_ALL,      /* CLOSE ALL */
    PIN_EFFECT_ADVISORY_UNLOCK_ALL, /* a call of pg_advisory_unlock_all() */
};

/* What the caller knows about the client's session. NULL rules mean the defaults below. */
struct pinning_rules {
    /*
     * Parameters sluice tracks and replays itself (params_is_tracked): a SET of one is reported as
     * PIN_EFFECT_TRACKED_SET instead of pinning. Names arrive as Postgres reads them: unquoted
     * identifiers in lower case, and "TimeZone", "client_encoding", "search_path" or "xmloption"
     * for SET TIME ZONE, SET NAMES, SET SCHEMA and SET XML OPTION. NULL: nothing is tracked.
     * role and session_authorization always pin, whatever this says. set_config('name', value,
     * false) with a literal name is followed like a SET when the name is tracked.
     */
    bool (*is_tracked)(const char *name);
    /*
     * The client's standard_conforming_strings. false (off) makes a backslash escape the next
     * character in '...' too, as the server will read it; getting this wrong lets a quote hide a
     * statement. Default (NULL rules): true, Postgres' default since 9.1.
     */
    bool standard_conforming_strings;
};

/* One statement of a query string. */
struct pinning_statement {
    size_t start;               /* offset of its first token in sql */
    size_t len;                 /* up to the end of its last token (no ';', no trailing comment) */
    enum pin_reason reason;     /* the first reason found in it */
    enum pin_effect effect;
    /*
     * PIN_SET, PIN_SET_ROLE, PIN_SET_SESSION_AUTHORIZATION and the SET/RESET effects: the parameter;
     * PIN_EFFECT_DEALLOCATE: the statement. Unquoted identifiers in lower case, quoted ones as
     * written; parts of a qualified name joined by '.'. "" otherwise.
     */
    char name[PINNING_NAME_LEN];
    bool name_truncated;        /* longer than PINNING_NAME_LEN - 1, or held a NUL: never
                                   treated as tracked */
    /*
     * PIN_SET and PIN_EFFECT_TRACKED_SET: the value as written (after TO, = or the keyword), or
     * set_config()'s value argument when it is one literal; value_len 0 for set_config(name,
     * expression, false), whose value only the server knows.
     */
    size_t value_start;
    size_t value_len;
    bool chains;                /* PIN_EFFECT_COMMIT and PIN_EFFECT_ROLLBACK: AND CHAIN, which
                                   opens a new transaction block at once */
};

/*
 * Reads the next non-empty statement of sql[*offset..len) into out and moves *offset past it (and
 * past its ';'). Returns false, leaving out untouched, when only whitespace, comments and ';'
 * remain. Start with *offset = 0.
 */
bool pinning_next_statement(const char *sql, size_t len, size_t *offset,
                            const struct pinning_rules *rules, struct pinning_statement *out);

/* What a whole query string does, statement by statement, summed up. */
struct pinning_summary {
    enum pin_reason reason;         /* the first statement that pins; PIN_NONE if none */
    char param[PINNING_NAME_LEN];   /* that statement's name (the SET parameter...), or "" */
    size_t n_statements;            /* non-empty statements */
    bool changes_tracked;           /* a tracked SET/RESET, RESET ALL or DISCARD ALL */
    bool resets_untracked;          /* RESET of an untracked parameter, RESET ALL or DISCARD ALL:
                                       values sluice applied with SET may be gone */
    bool forgets_statements;        /* DEALLOCATE ALL or DISCARD ALL */
    bool deallocates;               /* a DEALLOCATE of one name (pinning_next_statement has it) */
    bool has_effect;                /* some statement has an effect other than ending a
                                       transaction (pinning_next_statement tells which) */
    bool ends_transaction;          /* COMMIT, ROLLBACK or ROLLBACK TO SAVEPOINT */
    bool closes_transaction;        /* COMMIT or ROLLBACK, not AND CHAIN: no transaction is
                                       open after it */
};

/* Scans the whole query string; out may be NULL. Returns out->reason. */
enum pin_reason pinning_scan(const char *sql, size_t len, const struct pinning_rules *rules,
                             struct pinning_summary *out);

/* "SET", "temporary table", "session advisory lock"...: for logs, errors and SHOW PINNED. */
const char *pin_reason_name(enum pin_reason reason);

#endif
