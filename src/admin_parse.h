/*
 * admin_parse.h: splits an admin console command line into tokens (words, quoted strings, '=' and
 * ';'). Pure: no I/O, no state, so the console's parser can be unit-tested and fuzzed on its own.
 */
#ifndef SLUICE_ADMIN_PARSE_H
#define SLUICE_ADMIN_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define ADMIN_MAX_TOKENS 8
#define ADMIN_MAX_TOKEN_LEN 1024

enum token_kind { TOKEN_WORD, TOKEN_STRING, TOKEN_EQUALS, TOKEN_SEMICOLON };

struct token {
    enum token_kind kind;
    char text[ADMIN_MAX_TOKEN_LEN];
};

struct command {
    struct token tokens[ADMIN_MAX_TOKENS];
    size_t n_tokens;
};

/*
 * Splits sql into cmd's tokens: a word is a run of characters other than space, quotes, '=' and
 * ';', or a "double-quoted" name; a 'single-quoted' string is a TOKEN_STRING (a quote inside
 * either is doubled). Returns false with a short reason in *why on a syntax error.
 */
bool admin_tokenize(const char *sql, struct command *cmd, const char **why);

#endif
