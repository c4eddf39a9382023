/*
 * test_md5.c: PostgreSQL's md5 scheme against known values. Expected strings were computed
 * independently (python3 hashlib) and, for sluice_md5, read back from PostgreSQL 15's pg_authid.
 */
#include "auth_md5.h"

#include "tap.h"

static const uint8_t salt_1234[4] = {0x01, 0x02, 0x03, 0x04};

/* md5 + hex(md5("secret" || "postgres")) */
#define SECRET_POSTGRES_STORED "md553f48b7c4b76a86ce72276c5755f217d"
/* what a client answers with "secret" for user postgres and salt 01 02 03 04 */
#define SECRET_POSTGRES_RESPONSE "md5bb41a296aab6baccb36ff243a562abff"

static void test_stored_secret(void)
{
    char out[MD5_PASSWORD_LEN + 1];

    md5_stored_secret("secret", "postgres", out);
    is_str(out, SECRET_POSTGRES_STORED, "stored secret is md5 + hex(md5(password || user))");

    md5_stored_secret("secret", "sluice_md5", out);
    is_str(out, "md5cd67115d31bbecb227b2ec4192597112",
           "stored secret matches what PostgreSQL 15 stores for the same role and password");

    md5_stored_secret("", "postgres", out);
    is_str(out, "md5e8a48653851e28c69d0506508fb27fc5", "an empty password still hashes the user");
}

static void test_client_response(void)
{
    static const uint8_t salt_high_bytes[4] = {0xff, 0x00, 0x80, 0x7f};
    char out[MD5_PASSWORD_LEN + 1];

    md5_client_response("secret", "postgres", salt_1234, out);
    is_str(out, SECRET_POSTGRES_RESPONSE, "response from a plain password for a fixed salt");

    md5_client_response(SECRET_POSTGRES_STORED, "postgres", salt_1234, out);
    is_str(out, SECRET_POSTGRES_RESPONSE,
           "response from the md5 stored secret equals the one from the plain password");

    md5_client_response("secret", "postgres", salt_high_bytes, out);
    is_str(out, "md5af5825a82e8a131090770b6d3ea127f9",
           "salt bytes are hashed raw, including NUL and high bytes");

    md5_client_response("md5short", "postgres", salt_1234, out);
    is_str(out, "md59ca7b5e091765573c6c4363085c48ee9",
           "a password merely starting with md5 is hashed as a plain password");

    md5_client_response(SECRET_POSTGRES_STORED "!", "postgres", salt_1234, out);
    is_str(out, "md5a2a031bcd16b80e06d0b2aedea5a1f6f",
           "an md5 secret with one more character is hashed as a plain password");

    md5_client_response("md553F48B7C4B76A86CE72276C5755F217D", "postgres", salt_1234, out);
    is_str(out, "md5e5658c48275fb153b8862012fba47b56",
           "uppercase hex is not an md5 secret (PostgreSQL's rule) and is hashed as a password");

    md5_client_response("SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5", "postgres", salt_1234, out);
    is_str(out, "", "a SCRAM verifier yields no md5 response");
}

static void test_check_response(void)
{
    ok(md5_check_response("secret", "postgres", salt_1234, SECRET_POSTGRES_RESPONSE),
       "check accepts the right response against a plain secret");
    ok(md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234, SECRET_POSTGRES_RESPONSE),
       "check accepts the right response against an md5 stored secret");
    ok(!md5_check_response("Secret", "postgres", salt_1234, SECRET_POSTGRES_RESPONSE),
       "check rejects the response for another password");
    ok(!md5_check_response("secret", "postgres2", salt_1234, SECRET_POSTGRES_RESPONSE),
       "check rejects the response for another user");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", (const uint8_t[4]){1, 2, 3, 5},
                           SECRET_POSTGRES_RESPONSE),
       "check rejects a response made for another salt");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234,
                           "md5BB41A296AAB6BACCB36FF243A562ABFF"),
       "check rejects the right digits in uppercase");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234,
                           SECRET_POSTGRES_RESPONSE "0"),
       "check rejects a response with trailing data");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234,
                           "md5bb41a296aab6baccb36ff243a562abf"),
       "check rejects a truncated response");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234, ""),
       "check rejects an empty response");
    ok(!md5_check_response(SECRET_POSTGRES_STORED, "postgres", salt_1234, SECRET_POSTGRES_STORED),
       "check rejects the stored secret sent as the response");
    ok(!md5_check_response("secret", "postgres", salt_1234, "secret"),
       "check rejects the plain password sent as the response");
    ok(!md5_check_response(NULL, "postgres", salt_1234, SECRET_POSTGRES_RESPONSE),
       "check rejects when there is no secret");
}

static void test_scram_secret_refused(void)
{
    const char *verifier = "SCRAM-SHA-256$4096:QhPOPv2uqb1woDYdMouW2g==$N8vHfT44MpLPyWeXxirsN+q7U4"
                           "c64EH7nz1T6Nk9/r4=:PCS48WXh/d7vBvfY7GpC0lYNz5GhfLjh1FAVaJ5VA38=";
    char hashed_as_password[MD5_PASSWORD_LEN + 1];
    char stored[MD5_PASSWORD_LEN + 1];

    /* What a client knowing the verifier text would send if it were treated as a password. */
    md5_stored_secret(verifier, "postgres", stored);
    md5_client_response(stored, "postgres", salt_1234, hashed_as_password);
    ok(!md5_check_response(verifier, "postgres", salt_1234, hashed_as_password),
       "a SCRAM verifier is never accepted as a plain password for md5");
}

int main(void)
{
    test_stored_secret();
    test_client_response();
    test_check_response();
    test_scram_secret_refused();
    return tap_done();
}
