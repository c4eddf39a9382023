/*
 * main.c: command line, start-up, and the process's life: load the config, run the worker loop,
 * tell systemd where we are.
 */
#include <getopt.h>
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
    struct worker worker;
    if (worker_init(&worker, cfg) != 0) {
        worker_destroy(&worker);
        return 1;
    }
    log_info("sluice %s started", PACKAGE_VERSION);
    notify_ready(&worker);
    int rc = worker_run(&worker);
    const char *pidfile = worker.cfg->pidfile ? strdup(worker.cfg->pidfile) : NULL;
    worker_destroy(&worker);
    if (pidfile) {
        remove_own_pidfile(pidfile);
        free((void *)pidfile);
    }
    log_info("sluice stopped");
    return rc == 0 ? 0 : 1;
}
