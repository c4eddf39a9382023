/*
 * test_userlist.c: the auth_file in PgBouncer's format: secret kinds, quoting, comments,
 * malformed lines, long lines, and the SCRAM keys derived once per plain-password user.
 */
#include "userlist.h"
#include "tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[1024];

static struct userlist *load(const char *text)
{
    struct userlist *list = NULL;

    err[0] = '\0';
    if (userlist_load_string(text, "users.txt", &list, err, sizeof err) != 0)
        return NULL;
    return list;
}

static const char *load_error(const char *text)
{
    struct userlist *list = load(text);

    if (list != NULL) {
        userlist_free(list);
        return "(loaded without error)";
    }
    return err;
}

/* A SCRAM secret as PostgreSQL stores it, for password "pencil" and a fixed salt. */
static void make_scram_secret(struct scram_verifier *v, char *secret, size_t cap)
{
    static const uint8_t salt[] = "0123456789abcdef";

    scram_verifier_from_password("pencil", salt, 16, 4096, v);
    scram_format_verifier(v, secret, cap);
}

static void test_secret_kinds(void)
{
    struct scram_verifier expected;
    char scram[256], text[1024];
    struct userlist *list;
    struct userlist_entry *e;

    make_scram_secret(&expected, scram, sizeof scram);
    snprintf(text, sizeof text,
             "\"plainuser\" \"open sesame\"\n"
             "\"md5user\" \"md5b3b41ba9bb14d4b2d1f3e7e4b4b1d3c9\"\n"
             "\"upperhex\" \"md5B3B41BA9BB14D4B2D1F3E7E4B4B1D3C9\"\n"
             "\"shortmd5\" \"md5b3b41ba9bb14d4b2d1f3e7e4b4b1d3c\"\n"
             "\"scramuser\" \"%s\"\n",
             scram);
    list = load(text);
    ok(list != NULL && list->n_entries == 5, "an auth_file with every kind of secret loads (%s)",
       err);
    if (list == NULL)
        return;
    e = userlist_find(list, "plainuser");
    ok(e != NULL && e->kind == SECRET_PLAIN, "a password is a plain secret");
    is_str(e != NULL ? e->secret : NULL, "open sesame", "a plain secret keeps its spaces");
    ok(e != NULL && !e->scram_ready, "a plain secret has no SCRAM keys until asked for");
    e = userlist_find(list, "md5user");
    ok(e != NULL && e->kind == SECRET_MD5, "md5 and 32 lowercase hex digits is an md5 secret");
    e = userlist_find(list, "upperhex");
    ok(e != NULL && e->kind == SECRET_PLAIN,
       "md5 with uppercase hex is a plain password, as PostgreSQL reads it");
    e = userlist_find(list, "shortmd5");
    ok(e != NULL && e->kind == SECRET_PLAIN, "md5 with 31 hex digits is a plain password");
    e = userlist_find(list, "scramuser");
    ok(e != NULL && e->kind == SECRET_SCRAM, "a SCRAM-SHA-256$ secret is a SCRAM secret");
    ok(e != NULL && e->scram_ready, "a SCRAM secret is parsed at load time");
    ok(e != NULL && e->scram.iterations == 4096 && e->scram.salt_len == 16 &&
           memcmp(e->scram.salt, "0123456789abcdef", 16) == 0,
       "a SCRAM secret's iterations and salt are read");
    ok(e != NULL && memcmp(e->scram.stored_key, expected.stored_key, SCRAM_KEY_LEN) == 0 &&
           memcmp(e->scram.server_key, expected.server_key, SCRAM_KEY_LEN) == 0,
       "a SCRAM secret's StoredKey and ServerKey are read");
    ok(e != NULL && userlist_scram_verifier(e) == &e->scram,
       "the verifier of a SCRAM secret is the one parsed at load time");
    e = userlist_find(list, "md5user");
    ok(e != NULL && userlist_scram_verifier(e) == NULL, "an md5 secret has no SCRAM verifier");
    userlist_free(list);
}

static void test_quoting_and_comments(void)
{
    struct userlist *list = load("; a comment\n"
                                 "# another comment\n"
                                 "\n"
                                 "   \n"
                                 "   ; an indented comment\n"
                                 "\"say \"\"hi\"\"\" \"pa\"\"ss\"\n"
                                 "\"semi\" \"a ;b #c\"\n"
                                 "\t\"tabbed\"\t\"x\"  trailing words are ignored\n"
                                 "\"crlf\" \"y\"\r\n"
                                 "\"empty\" \"\"\n"
                                 "\"last\" \"z\"");
    struct userlist_entry *e;

    ok(list != NULL, "quoted fields, comments and blank lines load (%s)", err);
    if (list == NULL)
        return;
    is_int(list->n_entries, 6, "comment and blank lines make no users");
    e = userlist_find(list, "say \"hi\"");
    ok(e != NULL, "\"\" inside a quoted user name is one '\"'");
    is_str(e != NULL ? e->secret : NULL, "pa\"ss", "\"\" inside a quoted secret is one '\"'");
    e = userlist_find(list, "semi");
    is_str(e != NULL ? e->secret : NULL, "a ;b #c", "';' and '#' inside a secret are kept");
    e = userlist_find(list, "tabbed");
    is_str(e != NULL ? e->secret : NULL, "x", "tabs separate fields and the rest is ignored");
    e = userlist_find(list, "crlf");
    is_str(e != NULL ? e->secret : NULL, "y", "a CRLF line end is not part of the secret");
    e = userlist_find(list, "empty");
    ok(e != NULL && e->kind == SECRET_PLAIN && e->secret[0] == '\0',
       "an empty secret loads (PgBouncer's trust users)");
    ok(e != NULL && userlist_scram_verifier(e) == NULL,
       "an empty secret never yields a SCRAM verifier");
    e = userlist_find(list, "last");
    is_str(e != NULL ? e->secret : NULL, "z", "a last line without a newline is read");
    userlist_free(list);
}

static void test_lookup(void)
{
    struct userlist *list = load("\"alice\" \"1\"\n\"bob\" \"2\"\n\"alice\" \"3\"\n");

    ok(list != NULL && list->n_entries == 2, "a user given twice is one user");
    is_str(list != NULL && userlist_find(list, "alice") ? userlist_find(list, "alice")->secret
                                                          : NULL,
           "3", "a user given twice: the last line wins");
    ok(list != NULL && userlist_find(list, "Alice") == NULL, "user lookup is case-sensitive");
    ok(list != NULL && userlist_find(list, "ali") == NULL, "user lookup wants the whole name");
    ok(userlist_find(NULL, "alice") == NULL, "no list finds no user");
    userlist_free(list);
}

static void test_malformed_lines(void)
{
    const char *message;

    is_str(load_error("\"ok\" \"1\"\nalice \"secret\"\n"),
           "users.txt:2: expected a double-quoted user name at the start of the line",
           "a line without a quoted user names file and line");
    is_str(load_error("\"alice \"secret\"\n"),
           "users.txt:1: user \"alice \": expected a space, then the double-quoted secret",
           "a user name glued to the next quote is refused");
    is_str(load_error("\"alice\n"), "users.txt:1: user name has no closing quote",
           "an unterminated user name is refused");
    is_str(load_error("\"alice\"\n"),
           "users.txt:1: user \"alice\": expected a space, then the double-quoted secret",
           "a user without a secret is refused");
    is_str(load_error("\"alice\" secret\n"),
           "users.txt:1: user \"alice\": expected a double-quoted secret after the user name",
           "an unquoted secret is refused");
    message = load_error("\n\n\"alice\" \"hunter2\n");
    is_str(message, "users.txt:3: user \"alice\": secret has no closing quote",
           "an unterminated secret is refused with its line");
    ok(strstr(message, "hunter2") == NULL, "an unterminated secret is not shown");
    is_str(load_error("\"\" \"x\"\n"), "users.txt:1: empty user name",
           "an empty user name is refused");
    message = load_error("\"alice\" \"SCRAM-SHA-256$4096:c2FsdA==$notbase64!:alsonot\"\n");
    is_str(message, "users.txt:1: user \"alice\": malformed SCRAM-SHA-256 secret",
           "a malformed SCRAM secret names file, line and user");
    ok(strstr(message, "notbase64") == NULL, "a malformed SCRAM secret is not shown");
}

static void test_long_lines(void)
{
    size_t n = 5000;
    char *secret = malloc(n + 1);
    char *text = malloc(2 * n + 64);
    struct userlist *list;
    struct userlist_entry *e;

    memset(secret, 's', n);
    secret[n] = '\0';
    snprintf(text, 2 * n + 64, "\"longpass\" \"%s\"\n\"next\" \"n\"\n", secret);
    list = load(text);
    e = list != NULL ? userlist_find(list, "longpass") : NULL;
    ok(e != NULL && strcmp(e->secret, secret) == 0, "a 5000-character secret is read whole");
    ok(list != NULL && list->n_entries == 2 && userlist_find(list, "next") != NULL,
       "the line after a 5000-character line is read");
    userlist_free(list);

    snprintf(text, 2 * n + 64, "\"a\" \"1\"\n\"b\" \"%s\n", secret);
    is_str(load_error(text), "users.txt:2: user \"b\": secret has no closing quote",
           "an unterminated 5000-character secret is refused with its line, not shown");
    free(text);
    free(secret);
}

static void test_scram_cache(void)
{
    struct userlist *list = load("\"alice\" \"pencil\"\n\"bob\" \"pencil\"\n");
    struct userlist_entry *alice = list != NULL ? userlist_find(list, "alice") : NULL;
    struct userlist_entry *bob = list != NULL ? userlist_find(list, "bob") : NULL;
    const struct scram_verifier *first, *second, *other;
    struct scram_verifier rederived, copy;

    ok(alice != NULL && bob != NULL, "the SCRAM cache fixture loads (%s)", err);
    if (alice == NULL || bob == NULL) {
        userlist_free(list);
        return;
    }
    first = userlist_scram_verifier(alice);
    ok(first != NULL, "a plain password yields a SCRAM verifier");
    if (first == NULL) {
        userlist_free(list);
        return;
    }
    ok(alice->scram_ready, "the derived verifier is cached in the entry");
    is_int(first->iterations, 4096, "a derived verifier uses 4096 iterations");
    is_int(first->salt_len, 16, "a derived verifier has a 16-byte salt");
    ok(scram_verifier_from_password("pencil", first->salt, first->salt_len, 4096, &rederived) &&
           memcmp(rederived.stored_key, first->stored_key, SCRAM_KEY_LEN) == 0 &&
           memcmp(rederived.server_key, first->server_key, SCRAM_KEY_LEN) == 0,
       "the derived verifier's keys belong to the password and its salt");
    copy = *first;
    second = userlist_scram_verifier(alice);
    ok(second == first, "a second call returns the same cached verifier");
    ok(memcmp(&copy, second, sizeof copy) == 0,
       "a second call does not derive again (same salt and keys)");
    other = userlist_scram_verifier(bob);
    ok(other != NULL && memcmp(other->salt, first->salt, 16) != 0,
       "two users with the same password get different random salts");
    ok(userlist_scram_verifier(NULL) == NULL, "no entry has no verifier");
    userlist_free(list);
}

/* A file's own count: a mock challenge must not show 4096 where every real user shows 10000. */
static void test_mock_iterations(void)
{
    static const uint8_t salt[] = "0123456789abcdef";
    struct scram_verifier v;
    char secret[256], text[1024];
    struct userlist *list;

    scram_verifier_from_password("pencil", salt, 16, 10000, &v);
    scram_format_verifier(&v, secret, sizeof secret);
    snprintf(text, sizeof text, "\"a\" \"%s\"\n\"b\" \"pencil\"\n\"c\" \"%s\"\n\"d\" \"\"\n", secret,
             secret);
    list = load(text);
    is_int(userlist_mock_iterations(list), 10000, "the count most users' verifiers have (%s)", err);
    userlist_free(list);
    list = load("\"a\" \"pencil\"\n\"b\" \"md5d8578edf8458ce06fbc5bb76a58c5ca4\"\n");
    is_int(userlist_mock_iterations(list), 4096,
           "plain passwords count as the 4096 their derived verifiers have");
    userlist_free(list);
    is_int(userlist_mock_iterations(NULL), 4096, "no auth_file: PostgreSQL's default count");
}

static void test_files(void)
{
    char path[] = "/tmp/sluice-test-userlist-XXXXXX";
    int fd = mkstemp(path);
    static const char text[] = "\"alice\" \"secret\"\n";
    struct userlist *list = NULL;

    ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1),
       "an auth_file can be written for the test");
    close(fd);
    ok(userlist_load(path, &list, err, sizeof err) == 0 && list != NULL &&
           userlist_find(list, "alice") != NULL,
       "userlist_load reads a file (%s)", err);
    userlist_free(list);
    unlink(path);
    list = NULL;
    ok(userlist_load("/nonexistent/users.txt", &list, err, sizeof err) != 0 && list == NULL,
       "a missing auth_file is an error");
    ok(strstr(err, "/nonexistent/users.txt: cannot open: ") == err,
       "a missing auth_file is named (%s)", err);
}

int main(void)
{
    test_secret_kinds();
    test_quoting_and_comments();
    test_lookup();
    test_malformed_lines();
    test_long_lines();
    test_scram_cache();
    test_mock_iterations();
    test_files();
    return tap_done();
}
