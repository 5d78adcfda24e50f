/* Unit tests for redis_url parsing: every accepted form, defaults,
 * percent-encoded credentials, and the malformed URLs --check-config must
 * name (without ever echoing the password). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "voxgate/redis.h"

static void test_host_port_db(void **state)
{
    (void)state;
    vg_redis_url u;
    char err[160];
    assert_int_equal(vg_redis_url_parse("redis://127.0.0.1:6380/3", &u, err, sizeof err), VG_OK);
    assert_false(u.is_unix);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "");
}

static void test_defaults(void **state)
{
    (void)state;
    vg_redis_url u;
    assert_int_equal(vg_redis_url_parse("redis://cache.internal", &u, NULL, 0), VG_OK);
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(vg_redis_url_parse("redis://h:1/", &u, NULL, 0), VG_OK);
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 0);
}

static void test_credentials(void **state)
{
    (void)state;
    vg_redis_url u;
    assert_int_equal(vg_redis_url_parse("redis://alice:s3cr%40t@h:7000/1", &u, NULL, 0), VG_OK);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.pass, "s3cr@t");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 1);
    assert_int_equal(vg_redis_url_parse("redis://:only@h:7000", &u, NULL, 0), VG_OK);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "only");
    /* A raw '@' in the password: the last '@' before the path ends it. */
    assert_int_equal(vg_redis_url_parse("redis://:a@b@h:1", &u, NULL, 0), VG_OK);
    assert_string_equal(u.pass, "a@b");
    assert_string_equal(u.host, "h");
}

static void test_ipv6_and_unix(void **state)
{
    (void)state;
    vg_redis_url u;
    assert_int_equal(vg_redis_url_parse("redis://[::1]:6390", &u, NULL, 0), VG_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(vg_redis_url_parse("unix:///run/redis/redis.sock", &u, NULL, 0), VG_OK);
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_int_equal(u.db, 0);
    assert_int_equal(vg_redis_url_parse("unix:///tmp/r.sock?db=5", &u, NULL, 0), VG_OK);
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 5);
}

static void test_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "localhost:6379", "http://h:1", "redis://", "redis://h:0", "redis://h:65536",
        "redis://h:port", "redis://h:1/x", "redis://h:1/-1", "redis://h:1/99999999",
        "redis://user@h:1", "redis://u:@h:1", "redis://:p%4@h:1", "redis://:p%zz@h:1",
        "redis://:p%00@h:1", "redis://h h:1", "redis://[::1:1", "redis://[::1]x",
        "unix://", "unix://relative.sock", "unix:///tmp/s?db=x", "unix:///tmp/s?foo=1",
        "redis://h*:1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vg_redis_url u;
        char err[160] = "";
        if (vg_redis_url_parse(bad[i], &u, err, sizeof err) != VG_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_memory_equal(err, "redis_url: ", 11);
    }
}

static void test_error_never_shows_password(void **state)
{
    (void)state;
    vg_redis_url u;
    char err[160];
    assert_int_equal(vg_redis_url_parse("redis://bob:hunter2@h:99999", &u, err, sizeof err),
                     VG_EINVAL);
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "port"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_port_db),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_ipv6_and_unix),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_error_never_shows_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
