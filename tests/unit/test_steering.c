/*
 * test_steering.c: the program that steers new connections by CPU (run here by a small
 * interpreter of the classic BPF instructions it may hold, as the kernel would run it on each
 * connection), and the test of whether it left the workers unbalanced.
 */
#include "../../src/steering.h"
#include "tap.h"

#include <stdint.h>

/* Runs prog for a connection arriving on cpu; the index it returns. -1 for an instruction it does
 * not know (so a program using others fails the test) or for falling off the end. */
static long run(const struct sock_filter *prog, size_t len, uint32_t cpu)
{
    uint32_t a = 0;
    for (size_t pc = 0; pc < len; pc++) {
        const struct sock_filter *op = &prog[pc];
        switch (op->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            if (op->k != (uint32_t)(SKF_AD_OFF + SKF_AD_CPU))
                return -1;
            a = cpu;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += a == op->k ? op->jt : op->jf;
            break;
        case BPF_ALU | BPF_MOD | BPF_K:
            if (op->k == 0)
                return -1;
            a %= op->k;
            break;
        case BPF_RET | BPF_K:
            return op->k;
        case BPF_RET | BPF_A:
            return a;
        default:
            return -1;
        }
    }
    return -1;
}

static void test_each_cpu_goes_to_its_place_modulo_workers(void)
{
    static struct sock_filter prog[STEERING_MAX_PROGRAM];
    const int all[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    size_t len = steering_build_program(all, 8, 4, prog, STEERING_MAX_PROGRAM);
    ok(len > 0, "a program for 8 CPUs and 4 workers");
    for (uint32_t cpu = 0; cpu < 8; cpu++)
        is_int(run(prog, len, cpu), (long)(cpu % 4), "CPU %u goes to worker %u", cpu, cpu % 4);

    /* CPUs 2, 5, 9, 12 only (a cpuset): by their place, so both workers get two of them */
    const int some[] = { 2, 5, 9, 12 };
    len = steering_build_program(some, 4, 2, prog, STEERING_MAX_PROGRAM);
    long got[4];
    for (size_t i = 0; i < 4; i++)
        got[i] = run(prog, len, (uint32_t)some[i]);
    ok(got[0] == 0 && got[1] == 1 && got[2] == 0 && got[3] == 1,
       "CPUs 2, 5, 9, 12 go to workers 0, 1, 0, 1 (got %ld %ld %ld %ld)", got[0], got[1], got[2],
       got[3]);
    /* a CPU outside the set (a NIC's interrupt elsewhere): its number modulo the workers */
    is_int(run(prog, len, 7), 1L, "CPU 7, not in the set, goes to worker 7 %% 2");
    is_int(run(prog, len, 0), 0L, "CPU 0, not in the set, goes to worker 0");

    /* more workers than CPUs: each CPU its own worker, the rest reached by no CPU */
    len = steering_build_program(all, 2, 3, prog, STEERING_MAX_PROGRAM);
    ok(run(prog, len, 0) == 0 && run(prog, len, 1) == 1, "2 CPUs, 3 workers: CPUs 0 and 1");
}

static void test_nothing_to_steer_or_no_room(void)
{
    static struct sock_filter prog[STEERING_MAX_PROGRAM];
    static int many[3000];
    const int two[] = { 0, 1 };
    for (int i = 0; i < 3000; i++)
        many[i] = i;
    is_int(steering_build_program(two, 2, 1, prog, STEERING_MAX_PROGRAM), (size_t)0,
           "one worker: nothing to steer");
    is_int(steering_build_program(two, 2, 2, prog, 4), (size_t)0,
           "a program longer than the room given is not built");
    is_int(steering_build_program(many, 3000, 16, prog, STEERING_MAX_PROGRAM), (size_t)0,
           "3000 CPUs: longer than the kernel takes, not built (the hash stays)");
    size_t len = steering_build_program(many, 2000, 16, prog, STEERING_MAX_PROGRAM);
    ok(len > 0 && len <= STEERING_MAX_PROGRAM && run(prog, len, 1999) == 1999 % 16,
       "2000 CPUs fit, and the last one is found");
}

static void test_unbalanced_is_one_saturated_while_the_rest_idle(void)
{
    const double saturated[] = { 0.97, 0.10, 0.05, 0.20 };
    const double all_busy[] = { 0.95, 0.90, 0.70, 0.88 };
    const double light[] = { 0.40, 0.01, 0.00, 0.02 };
    const double two_of_four[] = { 0.95, 0.93, 0.00, 0.00 };
    const double pair[] = { 0.90, 0.40 };
    const double even_pair[] = { 0.90, 0.60 };
    ok(steering_unbalanced(saturated, 4), "one worker at 97%% of a core, the rest at 12%%: "
                                          "unbalanced");
    ok(!steering_unbalanced(all_busy, 4), "every worker busy: balanced (the load, not steering)");
    ok(!steering_unbalanced(light, 4), "one worker busier but far from saturated: left alone");
    ok(steering_unbalanced(two_of_four, 4),
       "two saturated, two idle: the rest average a third of the busiest, unbalanced");
    ok(steering_unbalanced(pair, 2), "two workers, 90%% and 40%%: unbalanced");
    ok(!steering_unbalanced(even_pair, 2), "two workers, 90%% and 60%%: balanced enough");
    ok(!steering_unbalanced(saturated, 1), "one worker: nothing to balance");
}

static void test_when_steering_is_wanted(void)
{
    ok(steering_wanted("auto", 2, 2), "auto, 2 CPUs, 2 workers: steered");
    ok(steering_wanted("auto", 4, 3), "auto, 4 CPUs, 3 workers: steered");
    ok(!steering_wanted("auto", 16, 16), "auto, 16 CPUs: the hash");
    ok(steering_wanted("on", 16, 16), "on, 16 CPUs: steered");
    ok(!steering_wanted("off", 2, 2), "off: the hash");
    ok(!steering_wanted("on", 2, 4), "4 workers on 2 CPUs: the hash (no CPU reaches two of them)");
    ok(!steering_wanted("on", 2, 1), "one worker: nothing to steer");
}

int main(void)
{
    test_when_steering_is_wanted();
    test_each_cpu_goes_to_its_place_modulo_workers();
    test_nothing_to_steer_or_no_room();
    test_unbalanced_is_one_saturated_while_the_rest_idle();
    return tap_done();
}
