/*
 * userlist.h: the auth_file in PgBouncer's format, one `"user" "secret"` per line, where secret
 * is a plain password, "md5" + 32 hex digits, or a SCRAM-SHA-256 verifier.
 * The list owns a per-user cache of SCRAM keys derived from plain passwords, so the costly
 * PBKDF2 runs once per user, not once per login.
 */
#ifndef SLUICE_USERLIST_H
#define SLUICE_USERLIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include "auth_scram.h"

enum secret_kind {
    SECRET_PLAIN,
    SECRET_MD5,     /* "md5" + hex(md5(password || user)) */
    SECRET_SCRAM,   /* SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64> */
};

struct userlist_entry {
    char *name;
    char *secret;
    enum secret_kind kind;
    /* scram holds keys (parsed, or derived once from plain): set last, after the keys, since
     * workers share the auth_file's list and the first SCRAM login of a user derives them. */
    atomic_bool scram_ready;
    struct scram_verifier scram;
};

struct userlist {
    struct userlist_entry *entries;
    size_t n_entries;
    int mock_iterations;              /* SCRAM iteration count shown to users without a verifier */
};

/* Returns 0, or -1 with "FILE:LINE: what is wrong" in err. Empty lines and ';' / '#' comments skipped. */
int userlist_load(const char *path, struct userlist **out, char *err, size_t err_len);
int userlist_load_string(const char *text, const char *path, struct userlist **out, char *err,
                         size_t err_len);
void userlist_free(struct userlist *list);

/* NULL if absent. */
struct userlist_entry *userlist_find(struct userlist *list, const char *name);

/*
 * The SCRAM verifier for a user: parsed from a SCRAM secret, or derived once from a plain
 * password (random salt, 4096 iterations) and cached. NULL for md5 secrets (SCRAM impossible).
 * The only change a loaded list sees: safe when several workers ask for one entry at once.
 */
const struct scram_verifier *userlist_scram_verifier(struct userlist_entry *entry);

/*
 * Fills entry with copies of name and secret, classified as a line of the file would be (entries
 * from auth_query). Any earlier content is released first. false on a malformed SCRAM secret or
 * out of memory (entry is then empty).
 */
bool userlist_entry_set(struct userlist_entry *entry, const char *name, const char *secret);
/* Fills dst with a deep copy of src (keys derived so far included); false when out of memory. */
bool userlist_entry_copy(struct userlist_entry *dst, const struct userlist_entry *src);
/* Releases what entry owns, wiping the secret. */
void userlist_entry_clear(struct userlist_entry *entry);

/*
 * The iteration count a mock SCRAM challenge shows: one the file's real users have (the majority's
 * when there is one), so that it does not stand out. SCRAM_DEFAULT_ITERATIONS for NULL or no users.
 */
int userlist_mock_iterations(const struct userlist *list);

#endif
