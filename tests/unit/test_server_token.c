/*
 * test_server_token.c: the credentials and signing behind server_auth_token: the AWS shared
 * credentials file format, the environment variables, tokens byte for byte as the AWS SDKs print
 * them (vectors from SHARED_DIR/vectors/rds-auth-token.txt), and a rotated credentials file.
 */
#include "server_token.h"
#include "sigv4.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char err[512];

/* err, emptied: a message printed after a call is that call's own. */
static char *fresh_err(void)
{
    err[0] = '\0';
    return err;
}

static time_t at(const char *amz_date)
{
    time_t t = 0;
    if (sigv4_parse_amz_date(amz_date, strlen(amz_date), &t) != 0)
        return (time_t)-1;
    return t;
}

/* ---- signing ---- */

static void test_sign_matches_sdk_vectors(void)
{
    /* botocore tests/unit/test_signers.py test_generate_db_auth_token */
    struct aws_credentials plain = {"akid", "skid", NULL};
    char *token = NULL;
    int rc = server_token_sign(&plain, "prod-instance.us-east-1.rds.amazonaws.com", 3306,
                               "someusername", "us-east-1", at("20161107T173933Z"), &token, fresh_err(),
                               sizeof err);
    is_int(rc, 0, "signs with long-term keys (%s)", err);
    is_str(token,
           "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=someusername"
           "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20161107%2Fus-east-1%2F"
           "rds-db%2Faws4_request&X-Amz-Date=20161107T173933Z&X-Amz-Expires=900"
           "&X-Amz-SignedHeaders=host&X-Amz-Signature="
           "d1138cdbc0ca63eec012ec0fc6c2267e03642168f5884a7795320d4c18374c61",
           "the token is botocore's for the same inputs and time, valid 900 s");
    server_token_free(token);

    /* paws rds_build_auth_token: a session token is signed over and carried along */
    struct aws_credentials session = {"AKIA", "SECRET", "SESSION"};
    rc = server_token_sign(&session, "prod-instance.us-east-1.rds.amazonaws.com", 3306,
                           "mysqlUser", "us-west-2", at("20250101T000001Z"), &token, fresh_err(),
                           sizeof err);
    is_int(rc, 0, "signs with temporary keys (%s)", err);
    is_str(token,
           "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=mysqlUser"
           "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20250101%2Fus-west-2%2F"
           "rds-db%2Faws4_request&X-Amz-Date=20250101T000001Z&X-Amz-Expires=900"
           "&X-Amz-Security-Token=SESSION&X-Amz-SignedHeaders=host&X-Amz-Signature="
           "4e4ce10c7b3710decae757df60ba2519348dcb4db802f15646dce1bf5e17c3ed",
           "the token with a session token is paws's for the same inputs and time");
    server_token_free(token);
}

static void test_sign_refuses_missing_inputs(void)
{
    struct aws_credentials creds = {"akid", "skid", NULL};
    char *token = (char *)"untouched";
    int rc = server_token_sign(&creds, "db.example", 5432, "app", "", at("20240101T000000Z"),
                               &token, fresh_err(), sizeof err);
    ok(rc == -1 && token == NULL, "an empty region is refused, no token (%s)", err);
    ok(strstr(err, "skid") == NULL, "the reason does not hold the secret");
}

/* ---- the credentials file ---- */

static const char credentials_text[] =
    "# written by a credentials helper\n"
    "[default]\n"
    "aws_access_key_id = AKIADEFAULT\n"
    "aws_secret_access_key = default/secret\n"
    "\n"
    "[ sluice ]\n"
    "  ; indented comment\n"
    "region = eu-west-1\n"
    "AWS_Access_Key_Id=ASIASLUICE\n"
    "aws_secret_access_key =  sluice/secret+key  \n"
    "aws_session_token = IQoJb3JpZ2luX2VjE/long+token==\r\n"
    "[other]\n"
    "aws_access_key_id = AKIAOTHER\n";

static void test_credentials_profiles(void)
{
    struct aws_credentials c;

    is_int(aws_credentials_parse(credentials_text, "creds", "default", &c, fresh_err(), sizeof err), 0,
           "the default profile is read (%s)", err);
    is_str(c.access_key_id, "AKIADEFAULT", "its access key id");
    is_str(c.secret_access_key, "default/secret", "its secret");
    is_str(c.session_token, NULL, "no session token in that profile");
    aws_credentials_clear(&c);

    is_int(aws_credentials_parse(credentials_text, "creds", "sluice", &c, fresh_err(), sizeof err), 0,
           "a named profile is read (%s)", err);
    is_str(c.access_key_id, "ASIASLUICE", "its access key id (name in another case, no blanks around '=')");
    is_str(c.secret_access_key, "sluice/secret+key", "its secret, blanks around it trimmed");
    is_str(c.session_token, "IQoJb3JpZ2luX2VjE/long+token==",
           "its session token (CRLF line end dropped)");
    aws_credentials_clear(&c);
    ok(c.access_key_id == NULL && c.secret_access_key == NULL, "clear leaves it empty");
}

static void test_credentials_errors(void)
{
    struct aws_credentials c;

    is_int(aws_credentials_parse(credentials_text, "creds", "missing", &c, fresh_err(), sizeof err), -1,
           "an absent profile is refused");
    is_str(err, "creds: no [missing] section", "the message names the profile");
    is_int(aws_credentials_parse(credentials_text, "creds", "other", &c, fresh_err(), sizeof err), -1,
           "a profile without a secret is refused");
    is_str(err, "creds: [other] has no aws_secret_access_key", "the message names what is missing");
    is_int(aws_credentials_parse("[default]\naws_secret_access_key = s3cret\n", "creds",
                                 "default", &c, fresh_err(), sizeof err),
           -1, "a profile without an access key id is refused");
    is_str(err, "creds: [default] has no aws_access_key_id", "the message names what is missing");
    is_int(aws_credentials_parse("[default]\naws_access_key_id = A\nthis is s3cret\n", "creds",
                                 "default", &c, fresh_err(), sizeof err),
           -1, "a line without '=' in the profile is refused");
    is_str(err, "creds:3: expected name = value", "the message gives the line, not its text");
    ok(c.access_key_id == NULL, "nothing is kept from a refused file");
}

/* ---- the environment ---- */

static const char *environment[][2] = {
    {"AWS_ACCESS_KEY_ID", "AKIAENV"},
    {"AWS_SECRET_ACCESS_KEY", "env/secret"},
    {"AWS_SESSION_TOKEN", NULL},
};

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < sizeof environment / sizeof environment[0]; i++)
        if (strcmp(environment[i][0], name) == 0)
            return environment[i][1];
    return NULL;
}

static void test_credentials_from_environment(void)
{
    struct aws_credentials c;

    is_int(aws_credentials_from_environment(fake_getenv, &c, fresh_err(), sizeof err), 0,
           "keys are read from the environment (%s)", err);
    is_str(c.access_key_id, "AKIAENV", "AWS_ACCESS_KEY_ID");
    is_str(c.secret_access_key, "env/secret", "AWS_SECRET_ACCESS_KEY");
    is_str(c.session_token, NULL, "no AWS_SESSION_TOKEN: none");
    aws_credentials_clear(&c);

    environment[2][1] = "env-session";
    is_int(aws_credentials_from_environment(fake_getenv, &c, fresh_err(), sizeof err), 0,
           "with a session token (%s)", err);
    is_str(c.session_token, "env-session", "AWS_SESSION_TOKEN");
    aws_credentials_clear(&c);

    environment[1][1] = "";
    is_int(aws_credentials_from_environment(fake_getenv, &c, fresh_err(), sizeof err), -1,
           "an empty AWS_SECRET_ACCESS_KEY is refused");
    ok(strstr(err, "AWS_SECRET_ACCESS_KEY") != NULL &&
           strstr(err, "server_auth_token_credentials") != NULL,
       "the message says what to set (%s)", err);
}

/* ---- a credentials file that changes ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_signer_reads_a_replaced_file(void)
{
    char dir[] = "/tmp/sluice-server-token-XXXXXX";
    char path[sizeof dir + 32], next[sizeof dir + 32];
    struct server_token_signer *signer = NULL;

    if (mkdtemp(dir) == NULL) {
        ok(0, "a temporary directory for the credentials file");
        return;
    }
    snprintf(path, sizeof path, "%s/credentials", dir);
    snprintf(next, sizeof next, "%s/credentials.new", dir);
    write_file(path, "[default]\naws_access_key_id = AKIAFIRST\naws_secret_access_key = one\n");
    is_int(server_token_signer_load(path, NULL, &signer, fresh_err(), sizeof err), 0,
           "the signer loads the default profile of the file (%s)", err);
    if (signer == NULL)
        return;
    is_int(server_token_signer_refresh(signer, fresh_err(), sizeof err), 0, "an unchanged file is not read again");

    /* As a credentials helper does: write a new file, rename it over the old one. */
    write_file(next, "[default]\naws_access_key_id = ASIASECOND\naws_secret_access_key = two\n"
                     "aws_session_token = t\n");
    rename(next, path);
    is_int(server_token_signer_refresh(signer, fresh_err(), sizeof err), 1, "a replaced file is read (%s)", err);
    is_str(signer->creds.access_key_id, "ASIASECOND", "the new keys are used");
    is_str(signer->creds.session_token, "t", "with the new session token");

    write_file(next, "[default]\naws_access_key_id = AKIABROKEN\n");
    rename(next, path);
    is_int(server_token_signer_refresh(signer, fresh_err(), sizeof err), -1, "a broken replacement is reported");
    is_str(signer->creds.access_key_id, "ASIASECOND", "and the keys read before are kept");
    is_int(server_token_signer_refresh(signer, fresh_err(), sizeof err), 0,
           "the broken file is reported once, not at every login");

    unlink(path);
    is_int(server_token_signer_refresh(signer, fresh_err(), sizeof err), -1, "a removed file is reported");
    is_str(signer->creds.access_key_id, "ASIASECOND", "and the keys read before are kept");
    server_token_signer_free(signer);
    rmdir(dir);

    is_int(server_token_signer_load("/nonexistent/credentials", "default", &signer, fresh_err(), sizeof err),
           -1, "a missing file is refused at load");
    ok(strncmp(err, "/nonexistent/credentials: cannot open", 37) == 0, "naming the file (%s)", err);
}

int main(void)
{
    test_sign_matches_sdk_vectors();
    test_sign_refuses_missing_inputs();
    test_credentials_profiles();
    test_credentials_errors();
    test_credentials_from_environment();
    test_signer_reads_a_replaced_file();
    return tap_done();
}
