/*
 * pinning.c: decides from query text which statements leave state in a backend's session.
 * A lexer that splits text into tokens as PostgreSQL's scan.l does (so a quote, comment or dollar
 * quote hides exactly what it hides from the server), and a classifier that reads the head of each
 * statement and watches the rest for the calls and clauses that create session state.
 * Pure: no allocation, no globals, every read bounded by the end of the text.
 */
#include "pinning.h"

#include <stdint.h>
#include <string.h>

#define MAX_NESTED_CONFIG_CALLS 4  /* set_config() inside set_config() arguments, followed exactly */

static const struct pinning_rules default_rules = {
    .is_tracked = NULL,
    .standard_conforming_strings = true,
};

/* Functions whose locks outlive the transaction (the _xact_ ones end with it; unlock frees). */
static const char *const session_lock_functions[] = {
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- characters ---- */

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Bytes >= 0x80 are letters to the server whatever the encoding, as in scan.l. */
static bool is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* '$' continues an identifier: "a$$b" is one name, not a dollar quote. */
static bool is_ident_char(unsigned char c)
{
    return is_ident_start(c) || is_digit(c) || c == '$';
}

static bool is_dollar_tag_char(unsigned char c)
{
    return is_ident_start(c) || is_digit(c);
}

static bool is_operator_char(unsigned char c)
{
    return c != '\0' && strchr("~!@#^&|`?+-*/%<>=", c) != NULL;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* text[0..len) equals word (lower case) ignoring ASCII case. */
static bool equals_nocase(const char *text, size_t len, const char *word)
{
    for (size_t i = 0; i < len; i++) {
        if (word[i] == '\0' || ascii_lower((unsigned char)text[i]) != (unsigned char)word[i])
            return false;
    }
    return word[len] == '\0';
}

/* text[0..len) is a non-empty prefix of word (lower case), ignoring ASCII case. */
static bool is_prefix_nocase(const char *text, size_t len, const char *word)
{
    if (len == 0 || len > strlen(word))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (ascii_lower((unsigned char)text[i]) != (unsigned char)word[i])
            return false;
    }
    return true;
}

/* ---- lexer ---- */

enum token_kind {
    TOKEN_END,           /* end of the text, or (from scan_next) of the statement */
    TOKEN_SEMICOLON,
    TOKEN_IDENT,         /* unquoted identifier or keyword */
    TOKEN_QUOTED_IDENT,  /* "..." */
    TOKEN_STRING,        /* '...', E'...' */
    TOKEN_DOLLAR_STRING, /* $tag$...$tag$ */
    TOKEN_NUMBER,
    TOKEN_PARAM,         /* $1 */
    TOKEN_OPERATOR,      /* a run of operator characters, or :: */
    TOKEN_PUNCT,         /* ( ) , . [ ] : or any other single byte */
};

struct token {
    enum token_kind kind;
    const char *start;  /* the whole token */
    size_t len;
    const char *text;   /* quoted kinds: what lies between the quotes or delimiters */
    size_t text_len;
    bool escapes;       /* TOKEN_STRING read with backslash escapes */
};

struct lexer {
    const char *p;
    const char *end;
    bool standard_strings;
};

static bool starts_with_pair(const struct lexer *lx, const char *p, char first, char second)
{
    return lx->end - p >= 2 && p[0] == first && p[1] == second;
}

/* "--" runs to the end of the line; the server ends it at \n or \r. */
static void skip_line_comment(struct lexer *lx)
{
    const char *p = lx->p + 2;

    while (p < lx->end && *p != '\n' && *p != '\r')
        p++;
    lx->p = p;
}

/* Slash-star comments nest in PostgreSQL, unlike in C. Unterminated: runs to the end. */
static void skip_block_comment(struct lexer *lx)
{
    const char *p = lx->p + 2;
    size_t depth = 1;

    while (p < lx->end && depth > 0) {
        if (starts_with_pair(lx, p, '/', '*')) {
            depth++;
            p += 2;
        } else if (starts_with_pair(lx, p, '*', '/')) {
            depth--;
            p += 2;
        } else {
            p++;
        }
    }
    lx->p = p;
}

static void skip_space_and_comments(struct lexer *lx)
{
    while (lx->p < lx->end) {
        if (is_space((unsigned char)*lx->p))
            lx->p++;
        else if (starts_with_pair(lx, lx->p, '-', '-'))
            skip_line_comment(lx);
        else if (starts_with_pair(lx, lx->p, '/', '*'))
            skip_block_comment(lx);
        else
            return;
    }
}

/*
 * A quoted string or identifier from its opening quote at lx->p: a doubled quote stands for one,
 * and with escapes a backslash takes the next byte whatever it is. Unterminated: runs to the end.
 */
static void lex_quoted(struct lexer *lx, struct token *t, char quote, bool escapes)
{
    const char *p = lx->p + 1;

    t->text = p;
    t->escapes = escapes;
    while (p < lx->end) {
        if (escapes && *p == '\\') {
            p += (lx->end - p >= 2) ? 2 : 1;
        } else if (*p != quote) {
            p++;
        } else if (lx->end - p >= 2 && p[1] == quote) {
            p += 2;
        } else {
            t->text_len = (size_t)(p - t->text);
            lx->p = p + 1;
            return;
        }
    }
    t->text_len = (size_t)(lx->end - t->text);
    lx->p = lx->end;
}

/*
 * At a '$': a parameter ($1) or a dollar quote ($$...$$, $tag$...$tag$, the closing tag exactly as
 * the opening one). false for a lone '$', which the server reads as a character too.
 */
static bool lex_dollar(struct lexer *lx, struct token *t)
{
    const char *p = lx->p + 1, *body, *close;
    size_t delimiter_len;

    if (p < lx->end && is_digit((unsigned char)*p)) {
        while (p < lx->end && is_digit((unsigned char)*p))
            p++;
        t->kind = TOKEN_PARAM;
        lx->p = p;
        return true;
    }
    if (p < lx->end && is_ident_start((unsigned char)*p)) {
        while (p < lx->end && is_dollar_tag_char((unsigned char)*p))
            p++;
    }
    if (p >= lx->end || *p != '$')
        return false;
    delimiter_len = (size_t)(p + 1 - lx->p);
    body = p + 1;
    close = memmem(body, (size_t)(lx->end - body), lx->p, delimiter_len);
    t->kind = TOKEN_DOLLAR_STRING;
    t->text = body;
    if (close == NULL) {
        t->text_len = (size_t)(lx->end - body);
        lx->p = lx->end;
    } else {
        t->text_len = (size_t)(close - body);
        lx->p = close + delimiter_len;
    }
    return true;
}

/*
 * Digits, dots and underscores, then any identifier glued on (the server calls that trailing junk
 * or reads it as a name; either way a '$' after it starts no dollar quote).
 */
static void lex_number(struct lexer *lx)
{
    const char *p = lx->p;

    while (p < lx->end && (is_digit((unsigned char)*p) || *p == '.' || *p == '_'))
        p++;
    if (p < lx->end && is_ident_start((unsigned char)*p)) {
        while (p < lx->end && is_ident_char((unsigned char)*p))
            p++;
    }
    lx->p = p;
}

/* An operator stops where a comment starts: "*--x" is '*' and a comment. */
static void lex_operator(struct lexer *lx)
{
    const char *p = lx->p + 1;

    while (p < lx->end && is_operator_char((unsigned char)*p) &&
           !starts_with_pair(lx, p, '-', '-') && !starts_with_pair(lx, p, '/', '*'))
        p++;
    lx->p = p;
}

static void lex_next(struct lexer *lx, struct token *t)
{
    unsigned char c;

    skip_space_and_comments(lx);
    t->start = lx->p;
    t->text = lx->p;
    t->text_len = 0;
    t->escapes = false;
    if (lx->p >= lx->end) {
        t->kind = TOKEN_END;
        t->len = 0;
        return;
    }
    c = (unsigned char)*lx->p;
    if ((c == 'e' || c == 'E') && starts_with_pair(lx, lx->p, (char)c, '\'')) {
        lx->p++;
        t->kind = TOKEN_STRING;
        lex_quoted(lx, t, '\'', true);
    } else if (is_ident_start(c)) {
        while (lx->p < lx->end && is_ident_char((unsigned char)*lx->p))
            lx->p++;
        t->kind = TOKEN_IDENT;
    } else if (c == '"') {
        t->kind = TOKEN_QUOTED_IDENT;
        lex_quoted(lx, t, '"', false);
    } else if (c == '\'') {
        t->kind = TOKEN_STRING;
        lex_quoted(lx, t, '\'', !lx->standard_strings);
    } else if (c == '$' && lex_dollar(lx, t)) {
        /* kind and text set there */
    } else if (is_digit(c) || (c == '.' && lx->end - lx->p >= 2 && is_digit((unsigned char)lx->p[1]))) {
        t->kind = TOKEN_NUMBER;
        lex_number(lx);
    } else if (c == ';') {
        t->kind = TOKEN_SEMICOLON;
        lx->p++;
    } else if (starts_with_pair(lx, lx->p, ':', ':')) {
        t->kind = TOKEN_OPERATOR;
        lx->p += 2;
    } else if (is_operator_char(c)) {
        t->kind = TOKEN_OPERATOR;
        lex_operator(lx);
    } else {
        t->kind = TOKEN_PUNCT;
        lx->p++;
    }
    t->len = (size_t)(lx->p - t->start);
}

/* ---- tokens ---- */

static bool is_keyword(const struct token *t, const char *word)
{
    return t->kind == TOKEN_IDENT && equals_nocase(t->start, t->len, word);
}

/* A name as the server resolves it: unquoted in any case, quoted exactly. */
static bool is_name(const struct token *t, const char *name)
{
    if (t->kind == TOKEN_QUOTED_IDENT)
        return t->text_len == strlen(name) && memcmp(t->text, name, t->text_len) == 0;
    return is_keyword(t, name);
}

static bool is_name_in(const struct token *t, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (is_name(t, names[i]))
            return true;
    }
    return false;
}

static bool is_punct(const struct token *t, char c)
{
    return t->kind == TOKEN_PUNCT && t->start[0] == c;
}

/* '=' of SET x = y; the server splits "=-1" into '=' and '-1'. */
static bool is_equals(const struct token *t)
{
    return t->kind == TOKEN_OPERATOR && t->start[0] == '=';
}

static bool is_cast(const struct token *t)
{
    return t->kind == TOKEN_OPERATOR && t->len == 2 && t->start[0] == ':' && t->start[1] == ':';
}

static bool is_string(const struct token *t)
{
    return t->kind == TOKEN_STRING || t->kind == TOKEN_DOLLAR_STRING;
}

/* Plain string content: no escapes and no doubled quotes to undo. */
static bool is_plain_string(const struct token *t)
{
    if (t->kind == TOKEN_DOLLAR_STRING)
        return true;
    if (t->kind != TOKEN_STRING || memchr(t->text, '\'', t->text_len) != NULL)
        return false;
    return !t->escapes || memchr(t->text, '\\', t->text_len) == NULL;
}

/* The literal TRUE, or a string the boolean input function reads as true ('t', 'yes', 'on'...). */
static bool reads_true(const struct token *t)
{
    const char *s = t->text;
    size_t n = t->text_len;

    if (is_keyword(t, "true"))
        return true;
    if (t->kind != TOKEN_STRING || !is_plain_string(t))
        return false;
    while (n > 0 && is_space((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space((unsigned char)s[n - 1]))
        n--;
    return is_prefix_nocase(s, n, "true") || is_prefix_nocase(s, n, "yes") ||
           equals_nocase(s, n, "on") || equals_nocase(s, n, "1");
}

/* The literal FALSE, or a plain string the boolean input function reads as false. */
static bool reads_false(const struct token *t)
{
    const char *s = t->text;
    size_t n = t->text_len;

    if (is_keyword(t, "false"))
        return true;
    if (t->kind != TOKEN_STRING || !is_plain_string(t))
        return false;
    return is_prefix_nocase(s, n, "false") || is_prefix_nocase(s, n, "no") ||
           equals_nocase(s, n, "off") || equals_nocase(s, n, "0");
}

/* Block keywords after which a PL/pgSQL body starts a new statement. */
static bool is_block_word(const struct token *t)
{
    return is_keyword(t, "begin") || is_keyword(t, "then") || is_keyword(t, "else") ||
           is_keyword(t, "loop");
}

/* ---- statements ---- */

/* How the is_local argument of a set_config() call reads so far. */
enum local_arg {
    LOCAL_ARG_EMPTY,
    LOCAL_ARG_TRUE,       /* true, 't', 'on'... */
    LOCAL_ARG_TRUE_CAST,  /* true:: */
    LOCAL_ARG_TRUE_BOOL,  /* true::boolean */
    LOCAL_ARG_FALSE,      /* false, 'f', 'off'...: a session setting sluice may follow */
    LOCAL_ARG_OTHER,      /* anything else: $3, an expression: pin */
};

struct config_call {
    size_t depth;         /* parenthesis depth of its arguments */
    size_t commas;        /* commas at that depth so far */
    enum local_arg is_local;
    /* the name and value arguments: how many tokens each has, and its first one */
    size_t arg_tokens[2];
    struct token arg_first[2];
};

/* ON COMMIT DROP matched at depth 0 of a CREATE TEMP TABLE, word by word. */
enum on_commit {
    ON_COMMIT_NONE,
    ON_COMMIT_ON,
    ON_COMMIT_COMMIT,
    ON_COMMIT_DROP,       /* found: the table ends with the transaction */
    ON_COMMIT_STOPPED,    /* past AS: the query that fills the table follows */
};

struct statement_scan {
    struct lexer lx;
    const char *sql;      /* what offsets count from */
    const struct pinning_rules *rules;
    bool body;            /* reading the body of a DO block */
    bool ended;           /* ';' or the end of the text was read */
    const char *first;    /* first token of the statement, NULL while none */
    const char *last_end;
    struct token prev;
    size_t depth;
    struct config_call calls[MAX_NESTED_CONFIG_CALLS];
    size_t n_calls;
    /* what the head of the statement asks the rest to be watched for */
    bool select_into;     /* SELECT/WITH: INTO TEMP creates a temporary table */
    bool creates;         /* CREATE: a pg_temp. name creates a temporary object */
    bool do_block;        /* DO: its string is code that runs now */
    bool temp_table;      /* CREATE TEMP TABLE: pins unless ON COMMIT DROP */
    enum on_commit on_commit;
    /* the parameter or statement name being read */
    char name[PINNING_NAME_LEN];
    size_t name_len;
    bool name_truncated;
    struct pinning_statement *out;
};

static void copy_name(struct pinning_statement *out, const char *name, bool truncated)
{
    size_t n = strlen(name);

    if (n >= sizeof(out->name))
        n = sizeof(out->name) - 1;
    memcpy(out->name, name, n);
    out->name[n] = '\0';
    out->name_truncated = truncated;
}

/* The first reason found in a statement is the one it reports. */
static void pin(struct statement_scan *s, enum pin_reason reason, const char *name, bool truncated)
{
    if (s->out->reason != PIN_NONE)
        return;
    s->out->reason = reason;
    if (name != NULL)
        copy_name(s->out, name, truncated);
}

/* Effects are what the data path acts on; a DO body's are not visible to it, only its pins. */
static void set_effect(struct statement_scan *s, enum pin_effect effect, bool named)
{
    if (s->body || s->out->effect != PIN_EFFECT_NONE)
        return;
    s->out->effect = effect;
    if (named && s->out->reason == PIN_NONE)
        copy_name(s->out, s->name, s->name_truncated);
}

static void name_reset(struct statement_scan *s)
{
    s->name_len = 0;
    s->name[0] = '\0';
    s->name_truncated = false;
}

/* A NUL inside a quoted name cannot be matched by anything: mark the name as cut short there. */
static void name_append_byte(struct statement_scan *s, char c)
{
    if (c == '\0' || s->name_len + 1 >= sizeof(s->name)) {
        s->name_truncated = true;
        return;
    }
    s->name[s->name_len++] = c;
    s->name[s->name_len] = '\0';
}

static void name_append_word(struct statement_scan *s, const char *word)
{
    while (*word != '\0')
        name_append_byte(s, *word++);
}

/* Unquoted names fold to lower case (ASCII only, as for UTF-8); quoted ones lose their "". */
static void name_append_token(struct statement_scan *s, const struct token *t)
{
    if (t->kind == TOKEN_IDENT) {
        for (size_t i = 0; i < t->len; i++)
            name_append_byte(s, (char)ascii_lower((unsigned char)t->start[i]));
        return;
    }
    for (size_t i = 0; i < t->text_len; i++) {
        name_append_byte(s, t->text[i]);
        if (t->text[i] == '"' && i + 1 < t->text_len)
            i++;
    }
}

static bool is_name_token(const struct token *t)
{
    return t->kind == TOKEN_IDENT || t->kind == TOKEN_QUOTED_IDENT;
}

/* -- set_config(name, value, is_local) -- */

static void feed_local_arg(struct config_call *call, const struct token *t, bool at_call_depth)
{
    if (!at_call_depth) {
        call->is_local = LOCAL_ARG_OTHER;
        return;
    }
    switch (call->is_local) {
    case LOCAL_ARG_EMPTY:
        call->is_local = reads_true(t) ? LOCAL_ARG_TRUE
                         : reads_false(t) ? LOCAL_ARG_FALSE
                                          : LOCAL_ARG_OTHER;
        break;
    case LOCAL_ARG_TRUE:
        call->is_local = is_cast(t) ? LOCAL_ARG_TRUE_CAST : LOCAL_ARG_OTHER;
        break;
    case LOCAL_ARG_TRUE_CAST:
        call->is_local = (is_keyword(t, "bool") || is_keyword(t, "boolean")) ? LOCAL_ARG_TRUE_BOOL
                                                                              : LOCAL_ARG_OTHER;
        break;
    case LOCAL_ARG_TRUE_BOOL:
    case LOCAL_ARG_FALSE:
    case LOCAL_ARG_OTHER:
        call->is_local = LOCAL_ARG_OTHER;
        break;
    }
}

/* Every token inside the third argument of an open call shapes what that argument reads as. */
static void feed_open_calls(struct statement_scan *s, const struct token *t)
{
    for (size_t i = 0; i < s->n_calls; i++) {
        struct config_call *call = &s->calls[i];

        if (call->commas == 2 && s->depth >= call->depth)
            feed_local_arg(call, t, s->depth == call->depth);
        else if (call->commas < 2 && s->depth >= call->depth) {
            /* tokens nested in parentheses count too: the argument is then not one literal */
            if (call->arg_tokens[call->commas] == 0)
                call->arg_first[call->commas] = *t;
            call->arg_tokens[call->commas]++;
        }
    }
}

static bool name_is_tracked(const struct statement_scan *s);

/*
 * set_config('name', value, false) with the name written as a plain string: a session setting
 * like SET, reported as PIN_EFFECT_TRACKED_SET when the caller tracks the name. The value is
 * given only when it is one string or number (value_len 0 otherwise: known only from the
 * server, if the server reports it).
 */
static bool follow_config_call(struct statement_scan *s, const struct config_call *call)
{
    const struct token *name = &call->arg_first[0], *value = &call->arg_first[1];

    if (call->arg_tokens[0] != 1 || name->kind != TOKEN_STRING || !is_plain_string(name) ||
        s->body || s->out->effect != PIN_EFFECT_NONE)
        return false;
    name_reset(s);
    for (size_t i = 0; i < name->text_len; i++)
        name_append_byte(s, name->text[i]);
    if (!name_is_tracked(s))
        return false;
    set_effect(s, PIN_EFFECT_TRACKED_SET, true);
    if (call->arg_tokens[1] == 1 && (is_string(value) || value->kind == TOKEN_NUMBER)) {
        s->out->value_start = (size_t)(value->start - s->sql);
        s->out->value_len = value->len;
    }
    return true;
}

/* Only a plainly true is_local keeps the setting inside the transaction. */
static void close_config_call(struct statement_scan *s)
{
    const struct config_call *call = &s->calls[--s->n_calls];

    if (call->commas == 2 &&
        (call->is_local == LOCAL_ARG_TRUE || call->is_local == LOCAL_ARG_TRUE_BOOL))
        return;
    if (call->commas == 2 && call->is_local == LOCAL_ARG_FALSE && follow_config_call(s, call))
        return;
    pin(s, PIN_SET_CONFIG, "set_config", false);
}

static void open_config_call(struct statement_scan *s)
{
    if (s->n_calls == MAX_NESTED_CONFIG_CALLS) {
        pin(s, PIN_SET_CONFIG, "set_config", false);
        return;
    }
    s->calls[s->n_calls].depth = s->depth;
    s->calls[s->n_calls].commas = 0;
    s->calls[s->n_calls].is_local = LOCAL_ARG_EMPTY;
    s->calls[s->n_calls].arg_tokens[0] = 0;
    s->calls[s->n_calls].arg_tokens[1] = 0;
    s->n_calls++;
}

/* Parentheses, function calls that create session state, and set_config()'s arguments. */
static void watch_calls(struct statement_scan *s, const struct token *t)
{
    if (is_punct(t, '(')) {
        feed_open_calls(s, t);
        s->depth++;
        if (is_name_in(&s->prev, session_lock_functions, ARRAY_LEN(session_lock_functions)))
            pin(s, PIN_ADVISORY_LOCK, NULL, false);
        else if (is_name(&s->prev, "pg_advisory_unlock_all"))
            set_effect(s, PIN_EFFECT_ADVISORY_UNLOCK_ALL, false);
        else if (is_name(&s->prev, "set_config"))
            open_config_call(s);
    } else if (is_punct(t, ')')) {
        if (s->depth > 0)
            s->depth--;
        while (s->n_calls > 0 && s->depth < s->calls[s->n_calls - 1].depth)
            close_config_call(s);
    } else if (is_punct(t, ',') && s->n_calls > 0 &&
               s->calls[s->n_calls - 1].depth == s->depth) {
        s->calls[s->n_calls - 1].commas++;
    } else {
        feed_open_calls(s, t);
    }
}

/* SELECT ... INTO TEMP t, and pg_temp.name in a CREATE. */
static void watch_temp_names(struct statement_scan *s, const struct token *t)
{
    if (s->select_into && is_keyword(&s->prev, "into") &&
        (is_keyword(t, "temp") || is_keyword(t, "temporary") || is_keyword(t, "global") ||
         is_keyword(t, "local") || is_name(t, "pg_temp")))
        pin(s, PIN_TEMP_TABLE, NULL, false);
    if (s->creates && is_name(&s->prev, "pg_temp") && is_punct(t, '.'))
        pin(s, PIN_TEMP_TABLE, NULL, false);
}

static void watch_on_commit_drop(struct statement_scan *s, const struct token *t)
{
    if (!s->temp_table || s->depth != 0 || s->on_commit == ON_COMMIT_DROP ||
        s->on_commit == ON_COMMIT_STOPPED)
        return;
    if (is_keyword(t, "as"))
        s->on_commit = ON_COMMIT_STOPPED;
    else if (is_keyword(t, "on"))
        s->on_commit = ON_COMMIT_ON;
    else if (s->on_commit == ON_COMMIT_ON && is_keyword(t, "commit"))
        s->on_commit = ON_COMMIT_COMMIT;
    else if (s->on_commit == ON_COMMIT_COMMIT && is_keyword(t, "drop"))
        s->on_commit = ON_COMMIT_DROP;
    else
        s->on_commit = ON_COMMIT_NONE;
}

static bool scan_statement(const char *sql, size_t len, size_t *offset,
                           const struct pinning_rules *rules, bool body,
                           struct pinning_statement *out);

/*
 * A DO block runs its body now: scan it as code (statements also start after BEGIN, THEN, ELSE
 * and LOOP there) and keep what pins. One level only; a DO inside it is not followed.
 */
static void scan_do_body(struct statement_scan *s, const struct token *t)
{
    struct pinning_statement inner;
    size_t offset = 0;

    while (scan_statement(t->text, t->text_len, &offset, s->rules, true, &inner)) {
        if (inner.reason != PIN_NONE)
            pin(s, inner.reason, inner.name, inner.name_truncated);
    }
}

static void observe(struct statement_scan *s, const struct token *t)
{
    watch_calls(s, t);
    watch_temp_names(s, t);
    watch_on_commit_drop(s, t);
    if (s->do_block && !s->body && is_string(t))
        scan_do_body(s, t);
    s->prev = *t;
}

/* The next token of this statement; TOKEN_END at its ';' and from then on. */
static void scan_next(struct statement_scan *s, struct token *t)
{
    if (s->ended) {
        t->kind = TOKEN_END;
        t->start = s->lx.p;
        t->len = 0;
        t->text = s->lx.p;
        t->text_len = 0;
        t->escapes = false;
        return;
    }
    lex_next(&s->lx, t);
    if (t->kind == TOKEN_END || t->kind == TOKEN_SEMICOLON) {
        s->ended = true;
        t->kind = TOKEN_END;
        return;
    }
    if (s->first == NULL)
        s->first = t->start;
    s->last_end = t->start + t->len;
    observe(s, t);
}

/* -- SET and RESET -- */

struct setting_value {
    const char *start;
    const char *end;
    size_t n_tokens;
    bool resets;        /* DEFAULT (or LOCAL for TIME ZONE, nothing for NAMES), or a RESET */
    bool is_none;       /* NONE or 'none': SET ROLE NONE */
};

/* Reads the value up to the end of the statement; t holds its first token on entry. */
static void read_setting_value(struct statement_scan *s, struct token *t, struct setting_value *v)
{
    memset(v, 0, sizeof(*v));
    v->start = t->start;
    v->end = t->start;
    if (t->kind != TOKEN_END) {
        v->resets = is_keyword(t, "default");
        v->is_none = is_keyword(t, "none") ||
                     (t->kind == TOKEN_STRING && t->text_len == 4 && memcmp(t->text, "none", 4) == 0);
    }
    while (t->kind != TOKEN_END) {
        v->n_tokens++;
        v->end = t->start + t->len;
        scan_next(s, t);
    }
    if (v->n_tokens != 1) {
        v->resets = false;
        v->is_none = false;
    }
}

static bool name_is(const struct statement_scan *s, const char *word)
{
    return equals_nocase(s->name, s->name_len, word);
}

static bool name_is_tracked(const struct statement_scan *s)
{
    if (s->body || s->name_truncated || s->rules->is_tracked == NULL)
        return false;
    return s->rules->is_tracked(s->name);
}

/* Decides what SET s->name TO v (or RESET s->name) does to the session. */
static void decide_setting(struct statement_scan *s, const struct setting_value *v)
{
    struct pinning_statement *out = s->out;
    bool tracked;

    if (name_is(s, "role")) {
        if (v->resets || v->is_none)
            set_effect(s, PIN_EFFECT_RESET, true);
        else
            pin(s, PIN_SET_ROLE, s->name, s->name_truncated);
        return;
    }
    if (name_is(s, "session_authorization")) {
        if (v->resets)
            set_effect(s, PIN_EFFECT_RESET, true);
        else
            pin(s, PIN_SET_SESSION_AUTHORIZATION, s->name, s->name_truncated);
        return;
    }
    tracked = name_is_tracked(s);
    if (v->resets) {
        set_effect(s, tracked ? PIN_EFFECT_TRACKED_RESET : PIN_EFFECT_RESET, true);
        return;
    }
    if (tracked)
        set_effect(s, PIN_EFFECT_TRACKED_SET, true);
    else
        pin(s, PIN_SET, s->name, s->name_truncated);
    if (out->effect == PIN_EFFECT_TRACKED_SET || out->reason == PIN_SET) {
        out->value_start = (size_t)(v->start - s->sql);
        out->value_len = (size_t)(v->end - v->start);
    }
}

/* A parameter named by a keyword form (SET TIME ZONE x): the value follows at once. */
static void keyword_setting(struct statement_scan *s, const char *name, bool empty_resets)
{
    struct setting_value v;
    struct token t;

    name_reset(s);
    name_append_word(s, name);
    scan_next(s, &t);
    read_setting_value(s, &t, &v);
    if (v.n_tokens == 0 && empty_resets)
        v.resets = true;
    decide_setting(s, &v);
}

/* name[.name...]: t holds the first part on entry and the token after the name on return. */
static void read_qualified_name(struct statement_scan *s, struct token *t)
{
    name_reset(s);
    name_append_token(s, t);
    scan_next(s, t);
    while (is_punct(t, '.')) {
        name_append_byte(s, '.');
        scan_next(s, t);
        if (!is_name_token(t))
            return;
        name_append_token(s, t);
        scan_next(s, t);
    }
}

/* var_name TO|= value, var_name FROM CURRENT; t holds the first part of the name. */
static void generic_setting(struct statement_scan *s, struct token *t)
{
    struct setting_value v;

    read_qualified_name(s, t);
    if (is_keyword(t, "from")) {
        /* The value is whatever the session holds now, maybe a SET LOCAL one: not known here. */
        pin(s, PIN_SET_FROM_CURRENT, s->name, s->name_truncated);
        return;
    }
    if (is_keyword(t, "to") || is_equals(t))
        scan_next(s, t);
    read_setting_value(s, t, &v);
    decide_setting(s, &v);
}

/* TIME was read: TIME ZONE, or a parameter that happens to be called "time". */
static void time_setting(struct statement_scan *s, struct token *t)
{
    struct setting_value v;
    bool local;

    scan_next(s, t);
    if (is_keyword(t, "zone")) {
        name_reset(s);
        name_append_word(s, "TimeZone");
        scan_next(s, t);
        local = is_keyword(t, "local");
        read_setting_value(s, t, &v);
        if (v.n_tokens == 1 && local)
            v.resets = true;    /* SET TIME ZONE LOCAL is SET TIME ZONE DEFAULT */
        decide_setting(s, &v);
        return;
    }
    name_reset(s);
    name_append_word(s, "time");
    if (is_keyword(t, "to") || is_equals(t))
        scan_next(s, t);
    read_setting_value(s, t, &v);
    decide_setting(s, &v);
}

/*
 * SET [SESSION | LOCAL] ...: LOCAL, TRANSACTION and CONSTRAINTS end with the transaction; the
 * rest set the session.
 */
static void head_set(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "local"))
        return;
    if (is_keyword(&t, "session")) {
        scan_next(s, &t);
        if (is_keyword(&t, "characteristics")) {
            pin(s, PIN_SESSION_CHARACTERISTICS, NULL, false);
            return;
        }
        if (is_keyword(&t, "authorization")) {
            keyword_setting(s, "session_authorization", false);
            return;
        }
    }
    if (t.kind == TOKEN_END || is_keyword(&t, "transaction") || is_keyword(&t, "constraints"))
        return;
    if (is_keyword(&t, "time"))
        time_setting(s, &t);
    else if (is_keyword(&t, "names"))
        keyword_setting(s, "client_encoding", true);
    else if (is_keyword(&t, "schema"))
        keyword_setting(s, "search_path", false);
    else if (is_keyword(&t, "role"))
        keyword_setting(s, "role", false);
    else if (is_keyword(&t, "xml"))
        keyword_setting(s, "xmloption", false);
    else if (is_name_token(&t))
        generic_setting(s, &t);
    else
        pin(s, PIN_SET, NULL, false);   /* not a form we know: be safe */
}

static void reset_setting(struct statement_scan *s)
{
    struct setting_value v;

    memset(&v, 0, sizeof(v));
    v.resets = true;
    decide_setting(s, &v);
}

/* RESET name | ALL | TIME ZONE | SESSION AUTHORIZATION | TRANSACTION ISOLATION LEVEL. */
static void head_reset(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "all")) {
        set_effect(s, PIN_EFFECT_RESET_ALL, false);
        return;
    }
    if (t.kind == TOKEN_END || is_keyword(&t, "transaction"))
        return;
    name_reset(s);
    if (is_keyword(&t, "time") || is_keyword(&t, "session")) {
        bool time = is_keyword(&t, "time");

        scan_next(s, &t);
        if (time && is_keyword(&t, "zone"))
            name_append_word(s, "TimeZone");
        else if (!time && is_keyword(&t, "authorization"))
            name_append_word(s, "session_authorization");
        else
            name_append_word(s, time ? "time" : "session");
    } else if (is_name_token(&t)) {
        read_qualified_name(s, &t);
    } else {
        return;
    }
    reset_setting(s);
}

/* -- the other heads -- */

/* CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP | TEMPORARY ... */
static void head_create(struct statement_scan *s)
{
    struct token t;

    s->creates = true;
    scan_next(s, &t);
    if (is_keyword(&t, "or")) {
        scan_next(s, &t);   /* REPLACE */
        scan_next(s, &t);
    }
    if (is_keyword(&t, "global") || is_keyword(&t, "local"))
        scan_next(s, &t);
    if (!is_keyword(&t, "temp") && !is_keyword(&t, "temporary"))
        return;
    scan_next(s, &t);
    if (is_keyword(&t, "table"))
        s->temp_table = true;   /* decided at the end: ON COMMIT DROP ends with the transaction */
    else
        pin(s, PIN_TEMP_TABLE, NULL, false);
}

/* DECLARE name [options] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query. */
static void head_declare(struct statement_scan *s)
{
    struct token t;
    bool after_with = false;

    for (;;) {
        scan_next(s, &t);
        if (t.kind == TOKEN_END || is_keyword(&t, "for"))
            return;
        if (after_with && is_keyword(&t, "hold")) {
            pin(s, PIN_CURSOR_WITH_HOLD, NULL, false);
            return;
        }
        after_with = is_keyword(&t, "with");
    }
}

/* PREPARE name AS ..., but not PREPARE TRANSACTION 'gid' (two-phase commit). */
static void head_prepare(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "transaction")) {
        scan_next(s, &t);
        if (t.kind == TOKEN_STRING)
            return;
    }
    pin(s, PIN_PREPARE, NULL, false);
}

/* DEALLOCATE [PREPARE] name | ALL. */
static void head_deallocate(struct statement_scan *s)
{
    struct token t, after;

    scan_next(s, &t);
    if (is_keyword(&t, "prepare")) {
        scan_next(s, &after);
        if (after.kind != TOKEN_END)
            t = after;          /* else the statement is called "prepare" */
    }
    if (is_keyword(&t, "all")) {
        set_effect(s, PIN_EFFECT_DEALLOCATE_ALL, false);
    } else if (is_name_token(&t)) {
        name_reset(s);
        name_append_token(s, &t);
        set_effect(s, PIN_EFFECT_DEALLOCATE, true);
    }
}

static void head_discard(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "all"))
        set_effect(s, PIN_EFFECT_DISCARD_ALL, false);
    else if (is_keyword(&t, "temp") || is_keyword(&t, "temporary"))
        set_effect(s, PIN_EFFECT_DISCARD_TEMP, false);
}

/*
 * After COMMIT or ROLLBACK, t its next token: [WORK | TRANSACTION] AND CHAIN follows (a new
 * transaction block opens at once), not AND NO CHAIN.
 */
static bool scan_and_chain(struct statement_scan *s, struct token *t)
{
    if (is_keyword(t, "work") || is_keyword(t, "transaction"))
        scan_next(s, t);
    if (!is_keyword(t, "and"))
        return false;
    scan_next(s, t);
    return is_keyword(t, "chain");
}

static void set_transaction_end(struct statement_scan *s, enum pin_effect effect, bool chains)
{
    set_effect(s, effect, false);
    if (s->out->effect == effect)
        s->out->chains = chains;
}

/* COMMIT | END [WORK | TRANSACTION] [AND [NO] CHAIN], but not COMMIT PREPARED 'gid'. */
static void head_commit(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (!is_keyword(&t, "prepared"))
        set_transaction_end(s, PIN_EFFECT_COMMIT, scan_and_chain(s, &t));
}

/* ROLLBACK | ABORT [WORK | TRANSACTION] [TO [SAVEPOINT] name | AND [NO] CHAIN]; not PREPARED. */
static void head_rollback(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "prepared"))
        return;
    if (is_keyword(&t, "work") || is_keyword(&t, "transaction"))
        scan_next(s, &t);
    if (is_keyword(&t, "to"))
        set_effect(s, PIN_EFFECT_ROLLBACK_TO, false);
    else
        set_transaction_end(s, PIN_EFFECT_ROLLBACK, scan_and_chain(s, &t));
}

/* UNLISTEN *: the session listens to nothing any more. */
static void head_unlisten(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (t.kind == TOKEN_OPERATOR && t.len == 1 && t.start[0] == '*')
        set_effect(s, PIN_EFFECT_UNLISTEN_ALL, false);
}

/* CLOSE ALL: every cursor, WITH HOLD ones included, is gone. */
static void head_close(struct statement_scan *s)
{
    struct token t;

    scan_next(s, &t);
    if (is_keyword(&t, "all"))
        set_effect(s, PIN_EFFECT_CLOSE_ALL, false);
}

/* EXPLAIN [(options)] [ANALYZE] [VERBOSE] statement: t ends on the explained statement's head. */
static void skip_explain(struct statement_scan *s, struct token *t)
{
    scan_next(s, t);
    if (is_punct(t, '(')) {
        size_t outer = s->depth - 1;

        do
            scan_next(s, t);
        while (t->kind != TOKEN_END && !(is_punct(t, ')') && s->depth == outer));
        scan_next(s, t);
    }
    while (is_keyword(t, "analyze") || is_keyword(t, "analyse") || is_keyword(t, "verbose"))
        scan_next(s, t);
}

static void head_listen(struct statement_scan *s)
{
    pin(s, PIN_LISTEN, NULL, false);
}

static void head_load(struct statement_scan *s)
{
    pin(s, PIN_LOAD, NULL, false);
}

/* DO: the string that follows is code that runs now. */
static void head_do(struct statement_scan *s)
{
    s->do_block = true;
}

/* SELECT and WITH: INTO TEMP creates a temporary table. */
static void head_select(struct statement_scan *s)
{
    s->select_into = true;
}

/* Statement heads that can leave session state or change what sluice tracks. */
static const struct {
    const char *keyword;
    void (*read)(struct statement_scan *s);
} heads[] = {
    { "set", head_set },         { "reset", head_reset },
    { "create", head_create },   { "declare", head_declare },
    { "prepare", head_prepare }, { "deallocate", head_deallocate },
    { "discard", head_discard }, { "listen", head_listen },
    { "load", head_load },       { "do", head_do },
    { "select", head_select },   { "with", head_select },
    { "commit", head_commit },   { "end", head_commit },
    { "rollback", head_rollback }, { "abort", head_rollback },
    { "unlisten", head_unlisten }, { "close", head_close },
};

/* Reads the head of a statement (t is its first token) and what it needs to decide. */
static void classify_head(struct statement_scan *s, struct token *t)
{
    for (;;) {
        if (s->body && is_block_word(t))
            scan_next(s, t);
        else if (is_keyword(t, "explain"))
            skip_explain(s, t);
        else
            break;
    }
    for (size_t i = 0; i < ARRAY_LEN(heads); i++) {
        if (is_keyword(t, heads[i].keyword)) {
            heads[i].read(s);
            return;
        }
    }
}

/* What is still open when the statement ends decides too. */
static void finish_statement(struct statement_scan *s)
{
    if (s->n_calls > 0)
        pin(s, PIN_SET_CONFIG, "set_config", false);   /* unterminated call: be safe */
    if (s->temp_table && s->on_commit != ON_COMMIT_DROP)
        pin(s, PIN_TEMP_TABLE, NULL, false);
}

/*
 * Scans one statement from sql + *offset and moves *offset past its ';'. false (out untouched)
 * if it was empty.
 */
static bool scan_statement(const char *sql, size_t len, size_t *offset,
                           const struct pinning_rules *rules, bool body,
                           struct pinning_statement *out)
{
    struct statement_scan s;
    struct pinning_statement found;
    struct token t;

    memset(&s, 0, sizeof(s));
    memset(&found, 0, sizeof(found));
    s.lx.p = sql + *offset;
    s.lx.end = sql + len;
    s.lx.standard_strings = rules->standard_conforming_strings;
    s.sql = sql;
    s.rules = rules;
    s.body = body;
    s.prev.kind = TOKEN_END;
    s.prev.start = s.lx.p;
    s.prev.text = s.lx.p;
    s.out = &found;

    scan_next(&s, &t);
    while (is_punct(&t, '('))
        scan_next(&s, &t);
    if (t.kind != TOKEN_END)
        classify_head(&s, &t);
    while (!s.ended) {
        scan_next(&s, &t);
        if (s.body && is_block_word(&t)) {
            scan_next(&s, &t);
            if (t.kind != TOKEN_END)
                classify_head(&s, &t);
        }
    }
    finish_statement(&s);
    *offset = (size_t)(s.lx.p - sql);
    if (s.first == NULL)
        return false;
    found.start = (size_t)(s.first - sql);
    found.len = (size_t)(s.last_end - s.first);
    *out = found;
    return true;
}

/* ---- API ---- */

bool pinning_next_statement(const char *sql, size_t len, size_t *offset,
                            const struct pinning_rules *rules, struct pinning_statement *out)
{
    if (sql == NULL || offset == NULL || out == NULL)
        return false;
    if (rules == NULL)
        rules = &default_rules;
    while (*offset < len) {
        if (scan_statement(sql, len, offset, rules, false, out))
            return true;
    }
    return false;
}

static void sum_effect(struct pinning_summary *sum, enum pin_effect effect)
{
    if (effect == PIN_EFFECT_COMMIT || effect == PIN_EFFECT_ROLLBACK ||
        effect == PIN_EFFECT_ROLLBACK_TO)
        sum->ends_transaction = true;
    else if (effect != PIN_EFFECT_NONE)
        sum->has_effect = true;
    switch (effect) {
    case PIN_EFFECT_NONE:
        break;
    case PIN_EFFECT_TRACKED_SET:
    case PIN_EFFECT_TRACKED_RESET:
        sum->changes_tracked = true;
        break;
    case PIN_EFFECT_RESET:
        sum->resets_untracked = true;
        break;
    case PIN_EFFECT_RESET_ALL:
        sum->changes_tracked = true;
        sum->resets_untracked = true;
        break;
    case PIN_EFFECT_DISCARD_ALL:
        sum->changes_tracked = true;
        sum->resets_untracked = true;
        sum->forgets_statements = true;
        break;
    case PIN_EFFECT_DEALLOCATE:
        sum->deallocates = true;
        break;
    case PIN_EFFECT_DEALLOCATE_ALL:
        sum->forgets_statements = true;
        break;
    case PIN_EFFECT_DISCARD_TEMP:
    case PIN_EFFECT_COMMIT:
    case PIN_EFFECT_ROLLBACK:
    case PIN_EFFECT_ROLLBACK_TO:
    case PIN_EFFECT_UNLISTEN_ALL:
    case PIN_EFFECT_CLOSE_ALL:
    case PIN_EFFECT_ADVISORY_UNLOCK_ALL:
        break;
    }
}

enum pin_reason pinning_scan(const char *sql, size_t len, const struct pinning_rules *rules,
                             struct pinning_summary *out)
{
    struct pinning_summary sum;
    struct pinning_statement st;
    size_t offset = 0;

    memset(&sum, 0, sizeof(sum));
    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        sum.n_statements++;
        if (sum.reason == PIN_NONE && st.reason != PIN_NONE) {
            sum.reason = st.reason;
            memcpy(sum.param, st.name, sizeof(sum.param));
        }
        sum_effect(&sum, st.effect);
        if ((st.effect == PIN_EFFECT_COMMIT || st.effect == PIN_EFFECT_ROLLBACK) && !st.chains)
            sum.closes_transaction = true;
    }
    if (out != NULL)
        *out = sum;
    return sum.reason;
}

const char *pin_reason_name(enum pin_reason reason)
{
    switch (reason) {
    case PIN_NONE:
        return "none";
    case PIN_SET:
        return "SET";
    case PIN_SET_ROLE:
        return "SET ROLE";
    case PIN_SET_SESSION_AUTHORIZATION:
        return "SET SESSION AUTHORIZATION";
    case PIN_SESSION_CHARACTERISTICS:
        return "SET SESSION CHARACTERISTICS";
    case PIN_SET_CONFIG:
        return "set_config(..., false)";
    case PIN_TEMP_TABLE:
        return "temporary table";
    case PIN_ADVISORY_LOCK:
        return "session advisory lock";
    case PIN_LISTEN:
        return "LISTEN";
    case PIN_CURSOR_WITH_HOLD:
        return "cursor WITH HOLD";
    case PIN_PREPARE:
        return "PREPARE";
    case PIN_LOAD:
        return "LOAD";
    case PIN_SET_FROM_CURRENT:
        return "SET ... FROM CURRENT";
    case PIN_SET_BEFORE_SAVEPOINT_ROLLBACK:
        return "SET undone in part by ROLLBACK TO SAVEPOINT";
    }
    return "unknown";
}
