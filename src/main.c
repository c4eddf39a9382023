/*
 * main.c: command line, start-up, and the process's life: load the config, run the worker loop,
 * tell systemd where we are.
 */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "client_auth.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"
#include "world.h"
#include "build-config.h"

static void print_usage(FILE *out)
{
    fprintf(out,
            "sluice: a PostgreSQL connection pooler for serverless clients\n"
            "\n"
            "Usage: sluice [-v] -c FILE\n"
            "       sluice [-v] FILE\n"
            "\n"
            "  -c, --config FILE   configuration file (INI; see conf/sluice.ini)\n"
            "  -v, --verbose       more log output (repeat for more)\n"
            "      --check         load the configuration, report problems, and exit\n"
            "  -h, --help          this text\n"
            "  -V, --version       version\n"
            "\n"
            "Runs in the foreground and logs to stderr. SIGHUP reloads the configuration;\n"
            "SIGTERM or SIGINT stop accepting and let running transactions finish.\n");
}

/*
 * Each client and each backend connection takes a descriptor. Raise the soft limit toward the
 * hard one so max_client_conn can be met, and say so when even the hard limit is too low.
 */
static void raise_descriptor_limit(const struct config *cfg)
{
    struct rlimit limit;
    long needed = (long)cfg->max_client_conn + 256 /* refusals being answered */ + 64 /* listeners, logs... */;
    for (size_t i = 0; i < cfg->n_databases; i++)
        needed += config_effective_pool_size(cfg, &cfg->databases[i]);
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return;
    if ((long)limit.rlim_cur < needed) {
        rlim_t wanted = limit.rlim_max == RLIM_INFINITY || (long)limit.rlim_max >= needed
                            ? (rlim_t)needed : limit.rlim_max;
        limit.rlim_cur = wanted;
        (void)setrlimit(RLIMIT_NOFILE, &limit);
        (void)getrlimit(RLIMIT_NOFILE, &limit);
    }
    if ((long)limit.rlim_cur < needed)
        log_warning("file descriptor limit %ld is below the %ld that max_client_conn and the pools "
                    "may need: raise LimitNOFILE (systemd) or ulimit -n",
                    (long)limit.rlim_cur, needed);
}

/* A new sluice started for a restart may have written its own pid there since: leave that. */
static void remove_own_pidfile(const char *path)
{
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (!f)
        return;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid == (int)getpid())
        unlink(path);
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        log_error("could not write pidfile %s", path);
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

/* Frees the workers that were set up, the last (worker 0, which owns the shared objects) last. */
static void destroy_workers(struct world *world, size_t n_started)
{
    for (size_t i = n_started; i-- > 0;) {
        worker_destroy(world->workers[i]);
        free(world->workers[i]);
    }
    world_free(world);
}

/*
 * Sets up world->n_workers workers (worker 0 owns cfg), runs worker 0 on this thread and the others
 * on their own, and returns once every loop has ended (shutdown). 0, or -1 if start-up failed.
 */
static int run_world(struct world *world, struct config *cfg)
{
    size_t n = world_worker_count(cfg), set_up = 0, started = 1;
    int rc = 0;
    if (world_init(world, n) != 0) {
        log_error("out of memory");
        config_free(cfg);
        return -1;
    }
    for (; set_up < n; set_up++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (!w)
            break;
        world->workers[set_up] = w;
        if (worker_init(w, cfg, world, (unsigned)set_up) != 0) {
            set_up++;
            rc = -1;
            break;
        }
    }
    if (rc != 0 || set_up < n) {
        if (set_up == 0)
            config_free(cfg);
        destroy_workers(world, set_up);
        return -1;
    }
    struct worker *first = world->workers[0];
    worker_start_steering(first);
    for (; started < n && worker_start_thread(world->workers[started]) == 0; started++)
        ;
    if (started < n) {
        for (size_t i = started; i < n; i++)
            world_retire_worker(world->workers[i]); /* never runs: never waited for */
        worker_shutdown_all(first, "a worker thread could not start");
    } else {
        log_info("sluice %s started with %zu worker%s", PACKAGE_VERSION, n, n == 1 ? "" : "s");
        notify_ready(first);
    }
    rc = worker_run(first);
    for (size_t i = 1; i < started; i++)
        pthread_join(world->workers[i]->thread, NULL);
    char *pidfile = first->cfg->pidfile ? strdup(first->cfg->pidfile) : NULL;
    destroy_workers(world, n);
    if (pidfile) {
        remove_own_pidfile(pidfile);
        free(pidfile);
    }
    return rc;
}

/*
 * Each read reserves pkt_buf in an evbuffer chunk (8 KiB with its header) that is freed once its
 * messages have passed, so a busy turn of a loop allocates and frees a few hundred KiB. glibc
 * gives the top of the main heap back to the kernel as soon as 128 KiB of it is free: every such
 * turn grew the heap with brk, took the pages in zeroed by page faults and gave them back again
 * (one worker at pgbench -S -c 50: 2,000 brk calls and 4,300 page faults a second). Up to 1 MiB
 * free at the top stays.
 */
static void keep_heap_top(void)
{
#ifdef M_TRIM_THRESHOLD
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
#endif
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' }, { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
        { "check", no_argument, NULL, 'C' },        { NULL, 0, NULL, 0 },
    };
    const char *config_path = NULL;
    int verbose = 0, opt;
    int check_only = 0;

    keep_heap_top();

    while ((opt = getopt_long(argc, argv, "c:vhV", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case 'v': verbose++; break;
        case 'C': check_only = 1; break;
        case 'h': print_usage(stdout); return 0;
        case 'V': printf("sluice %s\n", PACKAGE_VERSION); return 0;
        default: print_usage(stderr); return 2;
        }
    }
    if (!config_path && optind < argc)
        config_path = argv[optind++];
    if (!config_path || optind < argc) {
        print_usage(stderr);
        return 2;
    }

    char err[1024];
    struct config *cfg = NULL;
    if (config_load(config_path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "sluice: invalid configuration: %s\n", err);
        return 1;
    }
    if (check_only) {
        printf("%s: configuration is valid\n", config_path);
        config_free(cfg);
        return 0;
    }
    log_configure(cfg->verbose + verbose, cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);
    if (client_auth_init() != 0) {
        log_error("could not draw the random secret for authentication");
        config_free(cfg);
        return 1;
    }
    if (cfg->pidfile && write_pidfile(cfg->pidfile) != 0) {
        config_free(cfg);
        return 1;
    }

    raise_descriptor_limit(cfg);
    struct world world;
    int rc = run_world(&world, cfg);
    if (rc != 0)
        return 1;
    log_info("sluice stopped");
    return 0;
}
