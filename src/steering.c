/*
 * steering.c: the program that steers new connections by CPU, and the test of whether it has
 * left the workers unbalanced. See steering.h.
 */
#include "steering.h"

#include <sched.h>
#include <string.h>

static struct sock_filter steering_op(unsigned short code, unsigned char jt, unsigned char jf,
                                      unsigned k)
{
    return (struct sock_filter){ code, jt, jf, k };
}

size_t steering_build_program(const int *cpus, size_t n_cpus, unsigned n_workers,
                              struct sock_filter *out, size_t cap)
{
    /* A = CPU; then a pair per listed CPU (if A == cpu: return its worker); else A % workers */
    size_t len = 1 + 2 * n_cpus + 2;
    if (n_workers < 2 || len > cap || len > STEERING_MAX_PROGRAM)
        return 0;
    size_t at = 0;
    out[at++] = steering_op(BPF_LD | BPF_W | BPF_ABS, 0, 0, (unsigned)(SKF_AD_OFF + SKF_AD_CPU));
    for (size_t i = 0; i < n_cpus; i++) {
        /* jt 0: on to the return right after; jf 1: past it, to the next pair */
        out[at++] = steering_op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, (unsigned)cpus[i]);
        out[at++] = steering_op(BPF_RET | BPF_K, 0, 0, (unsigned)(i % n_workers));
    }
    out[at++] = steering_op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, n_workers);
    out[at++] = steering_op(BPF_RET | BPF_A, 0, 0, 0);
    return at;
}

bool steering_unbalanced(const double *busy, size_t n_workers)
{
    if (n_workers < 2)
        return false;
    size_t busiest = 0;
    double total = 0;
    for (size_t i = 0; i < n_workers; i++) {
        total += busy[i];
        if (busy[i] > busy[busiest])
            busiest = i;
    }
    double rest = (total - busy[busiest]) / (double)(n_workers - 1);
    return busy[busiest] >= STEERING_SATURATED && rest <= STEERING_IDLE_RATIO * busy[busiest];
}

bool steering_wanted(const char *mode, size_t n_cpus, size_t n_workers)
{
    if (n_workers < 2 || n_workers > n_cpus || !mode || strcmp(mode, "off") == 0)
        return false;
    return strcmp(mode, "on") == 0 || n_cpus <= STEERING_AUTO_MAX_CPUS;
}

size_t steering_allowed_cpus(int *cpus, size_t cap)
{
    cpu_set_t set;
    size_t n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < cap; cpu++) {
        if (CPU_ISSET(cpu, &set))
            cpus[n++] = cpu;
    }
    return n;
}
