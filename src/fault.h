/*
 * fault.h: allocation failures on demand, for tests of what sluice does when memory runs out.
 *
 * A hook stands before the allocation of each site below; the caller treats a true answer as that
 * allocation failing. Only a build configured with --enable-fault-injection (the default of
 * --enable-sanitizers and --enable-tsan, the builds scripts/check tests) has the hooks: in any other
 * build each one is the constant false, so the data path pays nothing and the environment cannot
 * change what a production sluice does.
 *
 * In such a build, SLUICE_FAIL_ALLOC=<site>:<n> in sluice's environment makes the n-th allocation
 * at that site fail, once (n counts from 1, from the start of the process). Sites: "output"
 * (conn_write's buffer, which every message built by sluice passes through) and "reply" (the queue
 * of replies a backend owes, when it grows).
 */
#ifndef SLUICE_FAULT_H
#define SLUICE_FAULT_H

#include <stdbool.h>

#include "build-config.h"

enum fault_site {
    FAULT_SITE_OUTPUT,
    FAULT_SITE_REPLY_QUEUE,
};

#ifdef SLUICE_FAULT_INJECTION
/* Counts an allocation at site; true if it is the one SLUICE_FAIL_ALLOC chose to fail. */
bool fault_alloc_fails(enum fault_site site);
/* SLUICE_FAULT_UNBALANCED=1: the steering watch sees every worker but one idle and that one
 * saturated (steering.h), so a test can see sluice go back to the kernel's hash. */
bool fault_workers_unbalanced(void);
#else
static inline bool fault_alloc_fails(enum fault_site site)
{
    (void)site;
    return false;
}
static inline bool fault_workers_unbalanced(void)
{
    return false;
}
#endif

#endif
