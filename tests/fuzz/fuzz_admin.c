/*
 * fuzz_admin.c: an admin console command line (the SQL text of a Query to the "sluice" database)
 * through admin_tokenize. Checks that each token fits its buffer, and that writing the tokens back
 * out (a word double-quoted, a string single-quoted, quotes doubled) tokenizes to the same tokens.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static size_t append_token(char *out, size_t n, const struct token *t)
{
    char quote = t->kind == TOKEN_STRING ? '\'' : '"';

    if (t->kind == TOKEN_EQUALS || t->kind == TOKEN_SEMICOLON) {
        out[n++] = t->text[0];
        out[n++] = ' ';
        return n;
    }
    out[n++] = quote;
    for (const char *p = t->text; *p; p++) {
        if (*p == quote)
            out[n++] = quote;
        out[n++] = *p;
    }
    out[n++] = quote;
    out[n++] = ' ';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The Query body's string ends at its first NUL, as proto_parse_query hands it over. */
    char *sql = malloc(size + 1);
    struct command *cmd = malloc(sizeof(*cmd)), *again = malloc(sizeof(*again));
    const char *why = NULL;

    CHECK(sql != NULL && cmd != NULL && again != NULL);
    memcpy(sql, data, size);
    sql[size] = '\0';
    if (!admin_tokenize(sql, cmd, &why)) {
        CHECK(why != NULL && why[0] != '\0');
        goto done;
    }
    CHECK(cmd->n_tokens <= ADMIN_MAX_TOKENS);
    /* Each token written back takes at most twice its length plus three. */
    char *text = malloc(ADMIN_MAX_TOKENS * (2 * ADMIN_MAX_TOKEN_LEN + 3) + 1);
    size_t n = 0;
    CHECK(text != NULL);
    for (size_t i = 0; i < cmd->n_tokens; i++) {
        const struct token *t = &cmd->tokens[i];
        CHECK(memchr(t->text, '\0', sizeof(t->text)) != NULL);
        CHECK(t->kind == TOKEN_WORD || t->kind == TOKEN_STRING || t->kind == TOKEN_EQUALS ||
              t->kind == TOKEN_SEMICOLON);
        n = append_token(text, n, t);
    }
    text[n] = '\0';
    CHECK(admin_tokenize(text, again, &why));
    CHECK(again->n_tokens == cmd->n_tokens);
    for (size_t i = 0; i < cmd->n_tokens; i++)
        CHECK(again->tokens[i].kind == cmd->tokens[i].kind &&
              strcmp(again->tokens[i].text, cmd->tokens[i].text) == 0);
    free(text);
done:
    free(sql);
    free(cmd);
    free(again);
    return 0;
}
