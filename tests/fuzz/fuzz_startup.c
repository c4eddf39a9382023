/*
 * fuzz_startup.c: the bytes a client sends before it logs in, walked as client.c walks them: a
 * startup-phase packet after another (SSLRequest and GSSENCRequest may come first), each length
 * peeked, then parsed; a CancelRequest is routed as the cancel registry routes it (peering on,
 * one worker of several), a StartupMessage's parameters are read and its "options" parsed as
 * libpq's -c list.
 * Built with libFuzzer (see README) or with replay_main.c to replay the corpus in `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cancel.h"
#include "params.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ERR_LEN 256
#define PEER_ID 3
#define WORKER 2  /* of WORKERS: a cancel may be another worker's */
#define WORKERS 5

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static void route_cancel(const struct startup_packet *sp)
{
    static struct cancel_registry registry;
    static int ready;
    struct cancel_destination to = { .worker = WORKERS, .peer_id = -1 };

    if (!ready) {
        cancel_registry_init(&registry, PEER_ID, WORKER, WORKERS);
        ready = 1;
    }
    switch (cancel_registry_route(&registry, sp->cancel_pid, &to)) {
    case CANCEL_ROUTE_LOCAL:
        CHECK(cancel_registry_find(&registry, sp->cancel_pid, sp->cancel_key) == NULL);
        break;
    case CANCEL_ROUTE_WORKER:
        CHECK(to.worker < WORKERS && to.worker != WORKER);
        break;
    case CANCEL_ROUTE_PEER:
        CHECK(to.peer_id != PEER_ID && to.peer_id >= 0 && to.peer_id <= CANCEL_PEER_ID_MAX);
        CHECK((to.forward_pid & 0x7fffffffu) == (sp->cancel_pid & 0x7fffffffu) &&
              to.forward_pid != sp->cancel_pid);
        break;
    case CANCEL_ROUTE_LOOP:
        CHECK(to.peer_id != PEER_ID && (sp->cancel_pid & 0x80000000u));
        break;
    }
}

static void read_startup_message(const struct startup_packet *sp)
{
    static const char *const names[] = {"user", "database", "options", "replication",
                                        "application_name", "client_encoding"};
    struct param_set options;
    char err[ERR_LEN];

    CHECK(sp->n_params <= PROTO_MAX_STARTUP_PARAMS);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *value = proto_startup_get(sp, names[i]);
        CHECK(value == NULL || strlen(value) < PROTO_MAX_STARTUP_LEN);
    }
    CHECK(proto_startup_get(sp, "user") != NULL);
    for (size_t i = 0; i < sp->n_params; i++)
        (void)params_is_session_setting(sp->params[i].name);
    const char *opts = proto_startup_get(sp, "options");
    if (opts == NULL)
        return;
    param_set_init(&options);
    err[0] = '\0';
    if (params_parse_options(opts, &options, err, sizeof(err)) != 0)
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
    for (size_t i = 0; i < options.n; i++)
        CHECK(param_set_get(&options, options.entries[i].name) != NULL);
    param_set_free(&options);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t pos = 0;

    while (size - pos >= 4) {
        uint32_t packet_len;
        struct startup_packet sp;
        char err[ERR_LEN];

        if (proto_peek_startup_length(data + pos, 4, &packet_len) != PROTO_OK)
            return 0;
        CHECK(packet_len >= 4 && packet_len <= PROTO_MAX_STARTUP_LEN);
        if (size - pos < packet_len)
            return 0;
        /* An exact copy: the sanitizer sees any read past the packet. */
        uint8_t *packet = malloc(packet_len);
        CHECK(packet != NULL);
        memcpy(packet, data + pos, packet_len);
        pos += packet_len;
        err[0] = '\0';
        enum proto_result result = proto_parse_startup(packet, packet_len, &sp, err, sizeof(err));
        if (result != PROTO_OK) {
            CHECK(err[0] != '\0');
            free(packet);
            return 0;
        }
        switch (sp.kind) {
        case STARTUP_SSL:
        case STARTUP_GSSENC:
            free(packet);
            continue; /* answered 'N'; the client goes on */
        case STARTUP_CANCEL:
            route_cancel(&sp);
            free(packet);
            return 0;
        case STARTUP_NORMAL:
            read_startup_message(&sp);
            free(packet);
            return 0;
        }
        free(packet);
    }
    return 0;
}
