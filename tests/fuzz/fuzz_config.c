/*
 * fuzz_config.c: the configuration parser. An input is a sluice.ini text, then optionally a NUL
 * byte and a value that the admin console's SET gives to one setting (chosen by the input's
 * length), which config.c parses as a line of the file. Checks what a load promises: a refusal
 * names the file and says why; a loaded config has every [databases], [users] and [peers] entry
 * complete and in range, and each setting formats as SHOW CONFIG prints it.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cancel.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ERR_LEN 1024
#define SHOWN_LEN 4096
#define PATH "fuzz.ini"

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static void check_loaded(const struct config *cfg)
{
    char shown[SHOWN_LEN];

    for (size_t i = 0; i < cfg->n_databases; i++) {
        const struct config_database *db = &cfg->databases[i];
        CHECK(db->name != NULL && db->host != NULL && db->port >= 1 && db->port <= 65535);
        CHECK(config_find_database(cfg, db->name) == db);
    }
    for (size_t i = 0; i < cfg->n_users; i++)
        CHECK(cfg->users[i].name != NULL && config_find_user(cfg, cfg->users[i].name) == &cfg->users[i]);
    CHECK(cfg->peer_id >= 0 && cfg->peer_id <= CANCEL_PEER_ID_MAX);
    CHECK(cfg->n_peers == 0 || cfg->peer_id > 0);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        const struct config_peer *peer = &cfg->peers[i];
        CHECK(peer->id >= 1 && peer->id <= CANCEL_PEER_ID_MAX && peer->host != NULL);
        CHECK(config_find_peer(cfg, peer->id) == peer);
    }
    for (size_t i = 0; i < config_setting_count(); i++) {
        config_format_setting(cfg, i, shown, sizeof(shown));
        CHECK(memchr(shown, '\0', sizeof(shown)) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *split = memchr(data, '\0', size);
    size_t text_len = split ? (size_t)(split - data) : size;
    char *text = malloc(text_len + 1);
    struct config *cfg = NULL;
    char err[ERR_LEN];

    CHECK(text != NULL);
    memcpy(text, data, text_len);
    text[text_len] = '\0';
    err[0] = '\0';
    int result = config_load_string(text, PATH, &cfg, err, sizeof(err));
    free(text);
    if (result != 0) {
        CHECK(cfg == NULL && strncmp(err, PATH, strlen(PATH)) == 0);
        return 0;
    }
    check_loaded(cfg);
    if (split != NULL) {
        size_t value_len = size - text_len - 1;
        char *value = malloc(value_len + 1);
        CHECK(value != NULL);
        memcpy(value, split + 1, value_len);
        value[value_len] = '\0';
        size_t setting = size % config_setting_count();
        err[0] = '\0';
        enum config_set_result set = config_set_setting(cfg, setting, value, err, sizeof(err));
        CHECK(set == CONFIG_SET_DONE || err[0] != '\0');
        free(value);
        check_loaded(cfg);
    }
    config_free(cfg);
    return 0;
}
