/*
 * test_backend_token.c: the credentials sluice signs backend IAM tokens with (AWS shared-credentials
 * format or the environment), the token it signs (the one sluice-token prints), and the config
 * checks on auth_token = on.
 */
#include "backend_token.h"

#include <stdlib.h>

#include "config.h"
#include "sigv4.h"
#include "tap.h"

#define KEY_ID "AKIAIOSFODNN7EXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define REGION "us-east-1"
#define SIGNING_TIME 1733313600 /* 2024-12-04 12:00:00 UTC */

static char err[1024];

static void test_credentials_file(void)
{
    struct backend_credentials *creds = NULL;
    char *token = NULL, *expected = NULL;
    char amz_date[SIGV4_AMZ_DATE_LEN + 1];
    const char *text = "# rotated by the deploy job\n"
                       "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = nope\n"
                       "[default]\n"
                       "aws_access_key_id = " KEY_ID "\n"
                       "aws_secret_access_key = " SECRET "\n"
                       "region = eu-west-1\n";

    is_int(backend_credentials_load_string(text, "creds", &creds, err, sizeof err), 0,
           "a shared-credentials file with a [default] profile loads (%s)", err);
    is_int(backend_token_sign(creds, REGION, "db.example.com", 5432, "app", SIGNING_TIME, &token, err,
                              sizeof err),
           0, "a token is signed (%s)", err);
    sigv4_format_amz_date(SIGNING_TIME, amz_date);
    struct sigv4_rds_token_request req = {
        .host = "db.example.com", .port = 5432, .user = "app", .region = REGION,
        .access_key_id = KEY_ID, .secret_access_key = SECRET, .amz_date = amz_date,
        .expires = SIGV4_RDS_DEFAULT_EXPIRES,
    };
    sigv4_presign_rds_token(&req, &expected, NULL, err, sizeof err);
    is_str(token, expected, "it is the token sluice-token prints for the [default] key, not [other]'s");
    ok(token && strstr(token, "X-Amz-Credential=" KEY_ID "%2F20241204%2F" REGION "%2Frds-db") != NULL,
       "signed with the profile's key for the configured region");
    free(token);
    free(expected);
    backend_credentials_free(creds);
}

static void test_expired_credentials(void)
{
    struct backend_credentials *creds = NULL;
    char *token = NULL;
    const char *text = "[default]\naws_access_key_id = " KEY_ID "\naws_secret_access_key = " SECRET
                       "\naws_session_token = FwoGZXIvYXdzEXAMPLE\nexpiration = 2024-12-04T11:59:59Z\n";

    is_int(backend_credentials_load_string(text, "creds", &creds, err, sizeof err), 0,
           "credentials with an expiration load (%s)", err);
    is_int(backend_token_sign(creds, REGION, "db", 5432, "app", SIGNING_TIME, &token, err, sizeof err),
           -1, "past their expiration nothing is signed");
    ok(strstr(err, "expired at 2024-12-04 11:59:59 UTC") != NULL && strstr(err, SECRET) == NULL,
       "the reason says when they expired, without the secret (%s)", err);
    is_int(backend_token_sign(creds, REGION, "db", 5432, "app", SIGNING_TIME - 3600, &token, err,
                              sizeof err),
           0, "before it, they sign");
    ok(token && strstr(token, "X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE") != NULL,
       "with the session token");
    free(token);
    backend_credentials_free(creds);
}

static void test_bad_credentials(void)
{
    struct backend_credentials *creds = NULL;

    is_int(backend_credentials_load_string("[default]\naws_access_key_id = X\n", "creds", &creds, err,
                                           sizeof err),
           -1, "a profile without a secret is refused");
    ok(strstr(err, "aws_secret_access_key") != NULL, "naming what is missing (%s)", err);
    is_int(backend_credentials_load_string("[prod]\naws_access_key_id = X\naws_secret_access_key = Y\n",
                                           "creds", &creds, err, sizeof err),
           -1, "a file without [default] is refused");
    is_int(backend_credentials_load_string("[default]\naws_access_key_id = X\n"
                                           "aws_secret_access_key = Y\nexpiration = tomorrow\n",
                                           "creds", &creds, err, sizeof err),
           -1, "an unreadable expiration is refused");
    ok(strstr(err, "creds:4:") != NULL, "with its line (%s)", err);
    unsetenv("AWS_ACCESS_KEY_ID");
    is_int(backend_credentials_load(NULL, &creds, err, sizeof err), -1,
           "without a file, the environment must hold a key");
    setenv("AWS_ACCESS_KEY_ID", KEY_ID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
    is_int(backend_credentials_load(NULL, &creds, err, sizeof err), 0,
           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used (%s)", err);
    backend_credentials_free(creds);
}

static int load_config(const char *text)
{
    struct config *cfg = NULL;
    int rc = config_load_string(text, "test.ini", &cfg, err, sizeof err);
    config_free(cfg);
    return rc;
}

static void test_config_checks(void)
{
    is_int(load_config("[sluice]\nserver_tls_sslmode = require\nserver_auth_token_region = " REGION
                       "\n[databases]\napp = host=db port=5432 user=app auth_token=on\n"),
           0, "auth_token=on with TLS required and a region loads (%s)", err);
    is_int(load_config("[sluice]\nserver_auth_token_region = " REGION
                       "\n[databases]\napp = host=db user=app auth_token=on\n"),
           -1, "auth_token=on without server TLS is refused");
    ok(strstr(err, "server_tls_sslmode = require") != NULL, "saying TLS is needed (%s)", err);
    is_int(load_config("[sluice]\nserver_tls_sslmode = verify-full\n"
                       "[databases]\napp = host=db user=app auth_token=on\n"),
           -1, "auth_token=on without a region is refused");
    is_int(load_config("[sluice]\nserver_tls_sslmode = require\nserver_auth_token_region = " REGION
                       "\n[databases]\napp = host=db user=app password=x auth_token=on\n"),
           -1, "auth_token=on with a password is refused");
    is_int(load_config("[sluice]\nserver_tls_sslmode = require\nserver_auth_token_region = " REGION
                       "\n[databases]\napp = host=/tmp user=app auth_token=on\n"),
           -1, "auth_token=on over a unix socket is refused");
    is_int(load_config("[databases]\napp = host=db auth_token=maybe\n"), -1,
           "auth_token takes on or off");
}

int main(void)
{
    test_credentials_file();
    test_expired_credentials();
    test_bad_credentials();
    test_config_checks();
    return tap_done();
}
