/*
 * fault.c: the allocation-failure hooks of fault.h, in builds configured with
 * --enable-fault-injection. The choices are read once, before main(), from SLUICE_FAIL_ALLOC and
 * SLUICE_FAULT_UNBALANCED.
 */
#include "fault.h"

#ifdef SLUICE_FAULT_INJECTION

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define FAULT_ENV "SLUICE_FAIL_ALLOC"

static const char *const site_names[] = {
    [FAULT_SITE_OUTPUT] = "output",
    [FAULT_SITE_REPLY_QUEUE] = "reply",
};
#define N_SITES (sizeof(site_names) / sizeof(site_names[0]))

static int chosen_site = -1;              /* -1: nothing fails */
static uint64_t chosen_count;
static atomic_uint_fast64_t counts[N_SITES];
static bool workers_unbalanced;

__attribute__((constructor)) static void fault_read_environment(void)
{
    const char *unbalanced = getenv("SLUICE_FAULT_UNBALANCED");
    workers_unbalanced = unbalanced && strcmp(unbalanced, "1") == 0;
    const char *spec = getenv(FAULT_ENV);
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (!colon)
        return;
    for (size_t i = 0; i < N_SITES; i++) {
        if (strlen(site_names[i]) == (size_t)(colon - spec) &&
            strncmp(spec, site_names[i], (size_t)(colon - spec)) == 0) {
            char *end;
            unsigned long long n = strtoull(colon + 1, &end, 10);
            if (*end == '\0' && n > 0) {
                chosen_site = (int)i;
                chosen_count = n;
            }
        }
    }
}

bool fault_workers_unbalanced(void)
{
    return workers_unbalanced;
}

bool fault_alloc_fails(enum fault_site site)
{
    if ((int)site != chosen_site)
        return false;
    if (atomic_fetch_add(&counts[site], 1) + 1 != chosen_count)
        return false;
    log_warning("fault injection: allocation %llu at site %s fails (" FAULT_ENV ")",
                (unsigned long long)chosen_count, site_names[site]);
    return true;
}

#endif
