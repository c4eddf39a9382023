/*
 * admin_parse.c: the admin console's command-line tokenizer (see admin_parse.h). admin.c decides
 * what the tokens mean.
 */
#include "admin_parse.h"

#include <ctype.h>

/* '...' or "..." with the quote doubled inside; false if unterminated or too long. */
static bool read_quoted(const char **cursor, struct token *t)
{
    const char *p = *cursor;
    char quote = *p++;
    size_t n = 0;

    for (;;) {
        if (*p == '\0')
            return false;
        if (*p == quote) {
            if (p[1] != quote)
                break;
            p++;
        }
        if (n + 1 >= sizeof(t->text))
            return false;
        t->text[n++] = *p++;
    }
    t->text[n] = '\0';
    t->kind = quote == '\'' ? TOKEN_STRING : TOKEN_WORD;
    *cursor = p + 1;
    return true;
}

static bool is_word_char(char ch)
{
    return ch != '\0' && !isspace((unsigned char)ch) && ch != '\'' && ch != '"' && ch != '=' &&
           ch != ';';
}

bool admin_tokenize(const char *sql, struct command *cmd, const char **why)
{
    const char *p = sql;
    cmd->n_tokens = 0;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return true;
        if (cmd->n_tokens == ADMIN_MAX_TOKENS) {
            *why = "too many words";
            return false;
        }
        struct token *t = &cmd->tokens[cmd->n_tokens];
        if (*p == '=' || *p == ';') {
            t->kind = *p == '=' ? TOKEN_EQUALS : TOKEN_SEMICOLON;
            t->text[0] = *p++;
            t->text[1] = '\0';
        } else if (*p == '\'' || *p == '"') {
            if (!read_quoted(&p, t)) {
                *why = "unterminated or overlong quoted string";
                return false;
            }
        } else {
            size_t n = 0;
            while (is_word_char(*p)) {
                if (n + 1 >= sizeof(t->text)) {
                    *why = "word too long";
                    return false;
                }
                t->text[n++] = *p++;
            }
            t->text[n] = '\0';
            t->kind = TOKEN_WORD;
        }
        cmd->n_tokens++;
    }
}
