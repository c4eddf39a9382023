/*
 * fuzz_pinning.c: feeds arbitrary bytes to the pinning lexer as query text and checks what it
 * promises: every read stays inside the text (the input is copied to a block of exactly its size),
 * statements come in order and inside the text, names end with a NUL inside their buffer, the
 * summary agrees with the statements, and text hidden in a dollar quote, a string, a line comment
 * or a block comment never pins. Built with libFuzzer or with replay_main.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "params.h"
#include "pinning.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FUZZ_LEN 65536   /* longer inputs add time, not coverage */

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* What the pooler uses: every SET and literal set_config() is followed. */
static bool track_everything(const char *name)
{
    (void)name;
    return true;
}

static const struct pinning_rules rule_sets[] = {
    { .is_tracked = track_everything, .standard_conforming_strings = true },
    { .is_tracked = params_is_tracked, .standard_conforming_strings = true },
    { .is_tracked = params_is_tracked, .standard_conforming_strings = false },
    { .is_tracked = NULL, .standard_conforming_strings = true },
};

static char *exact_copy(const void *data, size_t size)
{
    char *copy = calloc(size ? size : 1, 1);

    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

static bool name_ok(const char *name, size_t cap)
{
    return memchr(name, '\0', cap) != NULL;
}

/* Statement by statement: order, bounds, names; then the summary must say the same. */
static void check_statements(const char *sql, size_t len, const struct pinning_rules *rules)
{
    struct pinning_statement st;
    struct pinning_summary sum;
    enum pin_reason first = PIN_NONE;
    size_t offset = 0, previous_end = 0, n = 0;

    while (pinning_next_statement(sql, len, &offset, rules, &st)) {
        CHECK(st.start >= previous_end && st.len > 0);
        CHECK(st.start + st.len <= offset && offset <= len);
        CHECK(name_ok(st.name, sizeof(st.name)));
        if (st.value_len > 0)
            CHECK(st.value_start >= st.start && st.value_start + st.value_len <= st.start + st.len);
        CHECK(pin_reason_name(st.reason) != NULL);
        if (first == PIN_NONE)
            first = st.reason;
        previous_end = st.start + st.len;
        n++;
    }
    CHECK(offset == len || len == 0);
    CHECK(pinning_scan(sql, len, rules, &sum) == sum.reason);
    CHECK(sum.reason == first && sum.n_statements == n);
    CHECK(name_ok(sum.param, sizeof(sum.param)));
}

/* prefix + input + suffix must read as one statement that pins nothing. */
static void check_hidden(const char *prefix, const uint8_t *data, size_t size, const char *suffix)
{
    size_t prefix_len = strlen(prefix), suffix_len = strlen(suffix);
    size_t len = prefix_len + size + suffix_len;
    char *sql = malloc(len);
    struct pinning_summary sum;

    CHECK(sql != NULL);
    memcpy(sql, prefix, prefix_len);
    if (size)
        memcpy(sql + prefix_len, data, size);
    memcpy(sql + prefix_len + size, suffix, suffix_len);
    CHECK(pinning_scan(sql, len, &rule_sets[0], &sum) == PIN_NONE);
    CHECK(sum.n_statements == 1 && !sum.changes_tracked && !sum.forgets_statements);
    free(sql);
}

/* The input inside '...', each quote doubled: with standard strings nothing else escapes. */
static void check_hidden_in_string(const uint8_t *data, size_t size)
{
    size_t quotes = 0, n = 0;
    uint8_t *doubled;

    for (size_t i = 0; i < size; i++)
        quotes += data[i] == '\'';
    doubled = malloc(size + quotes + 1);
    CHECK(doubled != NULL);
    for (size_t i = 0; i < size; i++) {
        doubled[n++] = data[i];
        if (data[i] == '\'')
            doubled[n++] = '\'';
    }
    check_hidden("SELECT '", doubled, n, "'");
    free(doubled);
}

static bool contains(const uint8_t *data, size_t size, const char *needle)
{
    return memmem(data, size, needle, strlen(needle)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql;

    if (size > MAX_FUZZ_LEN)
        size = MAX_FUZZ_LEN;
    sql = exact_copy(data, size);
    for (size_t i = 0; i < sizeof(rule_sets) / sizeof(rule_sets[0]); i++)
        check_statements(sql, size, &rule_sets[i]);
    free(sql);

    if (!contains(data, size, "$fz$"))
        check_hidden("SELECT $fz$", data, size, "$fz$");
    if (memchr(data, '\n', size) == NULL && memchr(data, '\r', size) == NULL)
        check_hidden("SELECT 1 -- ", data, size, "");
    if (!contains(data, size, "*/") && !contains(data, size, "/*"))
        check_hidden("/* ", data, size, " */ SELECT 1");
    check_hidden_in_string(data, size);
    return 0;
}
