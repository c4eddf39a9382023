/*
 * sluice-token: prints an RDS IAM auth token, byte for byte what the AWS SDKs'
 * generate_db_auth_token prints for the same inputs and time, to use as the password when
 * logging in to sluice (or to RDS itself). Keys default to the usual AWS_* environment variables.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sigv4.h"
#include "build-config.h"

#define EXIT_USAGE 2
#define MAX_PORT 65535

struct token_options {
    const char *host;
    const char *port;
    const char *user;
    const char *region;
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;
    const char *date;
    const char *expires;
};

static void print_usage(FILE *out)
{
    fprintf(out,
            "sluice-token: print an RDS IAM auth token to use as a password\n"
            "\n"
            "Usage: sluice-token --host HOST --port PORT --user USER --region REGION\n"
            "                    [--access-key-id ID --secret-access-key SECRET]\n"
            "                    [--session-token TOKEN] [--date YYYYMMDDTHHMMSSZ]\n"
            "                    [--expires SECONDS]\n"
            "\n"
            "  --host HOST               the host name clients connect to (as in "
            "auth_token_endpoints)\n"
            "  --port PORT               the port clients connect to\n"
            "  --user USER               the database user to log in as\n"
            "  --region REGION           the region the token is signed for (auth_token_region)\n"
            "  --access-key-id ID        default: $AWS_ACCESS_KEY_ID\n"
            "  --secret-access-key KEY   default: $AWS_SECRET_ACCESS_KEY (prefer the variable:\n"
            "                            command lines are visible to other local users)\n"
            "  --session-token TOKEN     default: $AWS_SESSION_TOKEN, unless the key is given on\n"
            "                            the command line\n"
            "  --date YYYYMMDDTHHMMSSZ   signing time in UTC (default: now)\n"
            "  --expires SECONDS         validity, default %d; sluice accepts at most its\n"
            "                            configured maximum (900 unless changed)\n"
            "  -h, --help                this text\n"
            "  -V, --version             version\n"
            "\n"
            "The token is printed on one line. It is the same token as\n"
            "  aws rds generate-db-auth-token --hostname HOST --port PORT --username USER\n",
            SIGV4_RDS_DEFAULT_EXPIRES);
}

static bool is_set(const char *s)
{
    return s != NULL && *s != '\0';
}

static const char *from_environment(const char *name)
{
    const char *value = getenv(name);
    return is_set(value) ? value : NULL;
}

/* A whole decimal number in [min, max]; false for anything else. */
static bool parse_number(const char *text, long min, long max, int *out)
{
    char *end = NULL;
    long value;

    if (!is_set(text) || text[0] < '0' || text[0] > '9')
        return false;
    value = strtol(text, &end, 10);
    if (*end != '\0' || value < min || value > max)
        return false;
    *out = (int)value;
    return true;
}

/* Environment defaults: a key given on the command line does not pair with the variables' token. */
static void apply_environment(struct token_options *o)
{
    bool key_on_command_line = is_set(o->access_key_id) || is_set(o->secret_access_key);

    if (!is_set(o->access_key_id))
        o->access_key_id = from_environment("AWS_ACCESS_KEY_ID");
    if (!is_set(o->secret_access_key))
        o->secret_access_key = from_environment("AWS_SECRET_ACCESS_KEY");
    if (o->session_token == NULL && !key_on_command_line)
        o->session_token = from_environment("AWS_SESSION_TOKEN");
}

static int report_missing(const struct token_options *o)
{
    const struct {
        const char *value;
        const char *what;
    } required[] = {
        {o->host, "--host"},
        {o->port, "--port"},
        {o->user, "--user"},
        {o->region, "--region"},
        {o->access_key_id, "--access-key-id (or AWS_ACCESS_KEY_ID)"},
        {o->secret_access_key, "--secret-access-key (or AWS_SECRET_ACCESS_KEY)"},
    };
    int missing = 0;

    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (is_set(required[i].value))
            continue;
        fprintf(stderr, "sluice-token: missing %s\n", required[i].what);
        missing++;
    }
    if (missing > 0)
        fprintf(stderr, "Try 'sluice-token --help'.\n");
    return missing;
}

static int parse_arguments(int argc, char **argv, struct token_options *o)
{
    enum { OPT_HOST = 256, OPT_PORT, OPT_USER, OPT_REGION, OPT_ACCESS_KEY_ID,
           OPT_SECRET_ACCESS_KEY, OPT_SESSION_TOKEN, OPT_DATE, OPT_EXPIRES };
    static const struct option options[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"user", required_argument, NULL, OPT_USER},
        {"region", required_argument, NULL, OPT_REGION},
        {"access-key-id", required_argument, NULL, OPT_ACCESS_KEY_ID},
        {"secret-access-key", required_argument, NULL, OPT_SECRET_ACCESS_KEY},
        {"session-token", required_argument, NULL, OPT_SESSION_TOKEN},
        {"date", required_argument, NULL, OPT_DATE},
        {"expires", required_argument, NULL, OPT_EXPIRES},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "hV", options, NULL)) != -1) {
        switch (opt) {
        case OPT_HOST: o->host = optarg; break;
        case OPT_PORT: o->port = optarg; break;
        case OPT_USER: o->user = optarg; break;
        case OPT_REGION: o->region = optarg; break;
        case OPT_ACCESS_KEY_ID: o->access_key_id = optarg; break;
        case OPT_SECRET_ACCESS_KEY: o->secret_access_key = optarg; break;
        case OPT_SESSION_TOKEN: o->session_token = optarg; break;
        case OPT_DATE: o->date = optarg; break;
        case OPT_EXPIRES: o->expires = optarg; break;
        case 'h': print_usage(stdout); exit(EXIT_SUCCESS);
        case 'V': printf("sluice-token %s\n", PACKAGE_VERSION); exit(EXIT_SUCCESS);
        default: fprintf(stderr, "Try 'sluice-token --help'.\n"); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluice-token: unexpected argument '%s'\nTry 'sluice-token --help'.\n",
                argv[optind]);
        return -1;
    }
    return 0;
}

/* Turns the checked options into a request; amz_date holds the formatted time if none given. */
static int build_request(const struct token_options *o, char *amz_date,
                         struct sigv4_rds_token_request *req)
{
    memset(req, 0, sizeof *req);
    if (!parse_number(o->port, 1, MAX_PORT, &req->port)) {
        fprintf(stderr, "sluice-token: --port '%s' is not a port number (1-%d)\n", o->port,
                MAX_PORT);
        return -1;
    }
    req->expires = SIGV4_RDS_DEFAULT_EXPIRES;
    if (o->expires != NULL && !parse_number(o->expires, 1, SIGV4_MAX_EXPIRES, &req->expires)) {
        fprintf(stderr, "sluice-token: --expires '%s' is not a number of seconds (1-%d)\n",
                o->expires, SIGV4_MAX_EXPIRES);
        return -1;
    }
    if (o->date == NULL && sigv4_format_amz_date(time(NULL), amz_date) != 0) {
        fprintf(stderr, "sluice-token: the system clock is out of range\n");
        return -1;
    }
    req->host = o->host;
    req->user = o->user;
    req->region = o->region;
    req->access_key_id = o->access_key_id;
    req->secret_access_key = o->secret_access_key;
    req->session_token = o->session_token;
    req->amz_date = o->date != NULL ? o->date : amz_date;
    return 0;
}

int main(int argc, char **argv)
{
    struct token_options options = {0};
    struct sigv4_rds_token_request req;
    char amz_date[SIGV4_AMZ_DATE_LEN + 1];
    char err[256];
    char *token = NULL;

    if (parse_arguments(argc, argv, &options) != 0)
        return EXIT_USAGE;
    apply_environment(&options);
    if (report_missing(&options) > 0)
        return EXIT_USAGE;
    if (build_request(&options, amz_date, &req) != 0)
        return EXIT_USAGE;
    if (sigv4_presign_rds_token(&req, &token, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "sluice-token: %s\n", err);
        return EXIT_USAGE;
    }
    printf("%s\n", token);
    free(token);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("sluice-token: writing the token");
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
