/* Shared helpers: the growable buffer, JSON string escaping (including
 * what happens to invalid UTF-8), constant-time comparison, strict u64
 * parsing and RFC 3339 formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voxgate/util.h"

#define FFFD "\xEF\xBF\xBD"

static void buf_basics(void **state)
{
    vg_buf b = {0};
    assert_int_equal(vg_buf_append(&b, "ab", 2), VG_OK);
    assert_int_equal(vg_buf_puts(&b, "cd"), VG_OK);
    assert_int_equal(vg_buf_append(&b, NULL, 0), VG_OK);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "abcd");
    assert_int_equal(vg_buf_printf(&b, "-%d-%s", 42, "x"), VG_OK);
    assert_string_equal(b.data, "abcd-42-x");
    assert_int_equal(b.len, 9);

    size_t cap = b.cap;
    vg_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(b.cap, cap);
    vg_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    vg_buf_free(&b); /* twice is harmless */
    vg_buf_reset(&b);
}

static void buf_growth(void **state)
{
    vg_buf b = {0};
    char chunk[1000];
    memset(chunk, 'z', sizeof chunk);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(vg_buf_append(&b, chunk, sizeof chunk), VG_OK);
    assert_int_equal(b.len, 1000000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(b.data[123456], 'z');
    /* A long printf result is not cut at some internal buffer size. */
    static char big[5001];
    memset(big, 'q', 5000);
    vg_buf_reset(&b);
    assert_int_equal(vg_buf_printf(&b, "%s|", big), VG_OK);
    assert_int_equal(b.len, 5001);
    assert_int_equal(b.data[5000], '|');
    vg_buf_free(&b);
}

static void buf_overflow(void **state)
{
    vg_buf b = {0};
    assert_int_equal(vg_buf_puts(&b, "x"), VG_OK);
    assert_int_equal(vg_buf_reserve(&b, SIZE_MAX), VG_ENOMEM);
    assert_int_equal(vg_buf_reserve(&b, SIZE_MAX - 1), VG_ENOMEM);
    assert_int_equal(vg_buf_append(&b, "y", SIZE_MAX), VG_ENOMEM);
    assert_int_equal(vg_buf_json_str(&b, "y", SIZE_MAX / 2), VG_ENOMEM);
    assert_string_equal(b.data, "x"); /* failures leave the content alone */
    vg_buf_free(&b);
}

/* Escapes n bytes of s and compares the whole result with want. */
static void json_is(const char *s, size_t n, const char *want)
{
    vg_buf b = {0};
    assert_int_equal(vg_buf_json_str(&b, s, n), VG_OK);
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    vg_buf_free(&b);
}

#define JSON_IS(lit, want) json_is(lit, sizeof(lit) - 1, want)

static void json_escapes(void **state)
{
    JSON_IS("", "\"\"");
    JSON_IS("plain text", "\"plain text\"");
    JSON_IS("a\"b\\c/d", "\"a\\\"b\\\\c/d\"");
    JSON_IS("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    JSON_IS("\x01\x1f", "\"\\u0001\\u001f\"");
    JSON_IS("a\0b", "\"a\\u0000b\"");
    JSON_IS("\x7f", "\"\x7f\"");
    JSON_IS(" ~", "\" ~\"");

    /* Appends after existing content. */
    vg_buf b = {0};
    vg_buf_puts(&b, "{\"k\":");
    vg_buf_json_str(&b, "v", 1);
    vg_buf_puts(&b, "}");
    assert_string_equal(b.data, "{\"k\":\"v\"}");
    vg_buf_free(&b);
}

static void json_valid_utf8(void **state)
{
    JSON_IS("caf\xc3\xa9", "\"caf\xc3\xa9\"");                  /* U+00E9 */
    JSON_IS("\xc2\x80", "\"\xc2\x80\"");                        /* U+0080, lowest 2-byte */
    JSON_IS("\xdf\xbf", "\"\xdf\xbf\"");                        /* U+07FF */
    JSON_IS("\xe0\xa0\x80", "\"\xe0\xa0\x80\"");                /* U+0800, lowest 3-byte */
    JSON_IS("\xe2\x82\xac", "\"\xe2\x82\xac\"");                /* euro sign */
    JSON_IS("\xed\x9f\xbf", "\"\xed\x9f\xbf\"");                /* U+D7FF, below surrogates */
    JSON_IS("\xee\x80\x80", "\"\xee\x80\x80\"");                /* U+E000, above them */
    JSON_IS(FFFD, "\"" FFFD "\"");                              /* U+FFFD itself */
    JSON_IS("\xf0\x90\x80\x80", "\"\xf0\x90\x80\x80\"");        /* U+10000 */
    JSON_IS("\xf0\x9f\x8e\xa4", "\"\xf0\x9f\x8e\xa4\"");        /* emoji */
    JSON_IS("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");        /* U+10FFFF */
}

static void json_invalid_utf8(void **state)
{
    /* Each byte that does not start a valid sequence becomes one U+FFFD,
     * and scanning resumes at the next byte. */
    JSON_IS("\x80", "\"" FFFD "\"");                            /* lone continuation */
    JSON_IS("a\xbf" "b", "\"a" FFFD "b\"");
    JSON_IS("\xff", "\"" FFFD "\"");
    JSON_IS("\xfe\xff", "\"" FFFD FFFD "\"");
    JSON_IS("\xc3", "\"" FFFD "\"");                            /* truncated at the end */
    JSON_IS("\xc3(", "\"" FFFD "(\"");                          /* bad continuation */
    JSON_IS("\xe2\x82", "\"" FFFD FFFD "\"");
    JSON_IS("\xe2\x82(", "\"" FFFD FFFD "(\"");
    JSON_IS("\xf0\x9f\x8e", "\"" FFFD FFFD FFFD "\"");
    /* Overlong forms: '/' as 2, 3 and 4 bytes, and NUL as 2 bytes. */
    JSON_IS("\xc0\xaf", "\"" FFFD FFFD "\"");
    JSON_IS("\xc1\xbf", "\"" FFFD FFFD "\"");
    JSON_IS("\xc0\x80", "\"" FFFD FFFD "\"");
    JSON_IS("\xe0\x80\xaf", "\"" FFFD FFFD FFFD "\"");
    JSON_IS("\xe0\x9f\xbf", "\"" FFFD FFFD FFFD "\"");          /* U+07FF as 3 bytes */
    JSON_IS("\xf0\x80\x80\xaf", "\"" FFFD FFFD FFFD FFFD "\"");
    JSON_IS("\xf0\x8f\xbf\xbf", "\"" FFFD FFFD FFFD FFFD "\""); /* U+FFFF as 4 bytes */
    /* UTF-16 surrogates encoded as UTF-8 (CESU-8). */
    JSON_IS("\xed\xa0\x80", "\"" FFFD FFFD FFFD "\"");          /* U+D800 */
    JSON_IS("\xed\xbf\xbf", "\"" FFFD FFFD FFFD "\"");          /* U+DFFF */
    JSON_IS("\xed\xa0\xbd\xed\xb8\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\"");
    /* Beyond U+10FFFF, and lead bytes that cannot occur at all. */
    JSON_IS("\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
    JSON_IS("\xf5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
    JSON_IS("\xf8\x88\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD FFFD "\"");
    /* A quote after a broken lead byte is still escaped. */
    JSON_IS("\xc3\"", "\"" FFFD "\\\"\"");
    /* A valid sequence right after an invalid byte survives. */
    JSON_IS("\xff\xc3\xa9", "\"" FFFD "\xc3\xa9\"");
}

static void json_worst_case_size(void **state)
{
    /* Every byte expanding to six (\u00XX) must fit the reservation. */
    char in[300];
    memset(in, 0x01, sizeof in);
    vg_buf b = {0};
    assert_int_equal(vg_buf_json_str(&b, in, sizeof in), VG_OK);
    assert_int_equal(b.len, 2 + 6 * sizeof in);
    memset(in, 0xff, sizeof in);
    vg_buf_reset(&b);
    assert_int_equal(vg_buf_json_str(&b, in, sizeof in), VG_OK);
    assert_int_equal(b.len, 2 + 3 * sizeof in);
    vg_buf_free(&b);
}

static void consttime(void **state)
{
    assert_true(vg_consttime_eq("secret", 6, "secret", 6));
    assert_false(vg_consttime_eq("secret", 6, "secreT", 6));
    assert_false(vg_consttime_eq("Secret", 6, "secret", 6));
    assert_false(vg_consttime_eq("secret", 6, "secret2", 7));
    assert_false(vg_consttime_eq("secret2", 7, "secret", 6));
    assert_false(vg_consttime_eq("", 0, "a", 1));
    assert_false(vg_consttime_eq("a", 1, "", 0));
    assert_true(vg_consttime_eq("", 0, "", 0));
    assert_true(vg_consttime_eq(NULL, 0, NULL, 0));
    assert_true(vg_consttime_eq("a\0b", 3, "a\0b", 3));
    assert_false(vg_consttime_eq("a\0b", 3, "a\0c", 3));
    /* A shorter a must not match b padded with NULs. */
    assert_false(vg_consttime_eq("ab", 2, "ab\0", 3));
}

static void parse_u64(void **state)
{
    uint64_t v = 0;
    assert_true(vg_parse_u64("0", &v));
    assert_int_equal(v, 0);
    assert_true(vg_parse_u64("42", &v));
    assert_int_equal(v, 42);
    assert_true(vg_parse_u64("007", &v));
    assert_int_equal(v, 7);
    assert_true(vg_parse_u64("18446744073709551615", &v));
    assert_true(v == UINT64_MAX);
    assert_true(vg_parse_u64("18446744073709551610", &v));
    assert_true(v == UINT64_MAX - 5);

    const char *bad[] = {"18446744073709551616", "18446744073709551620",
                         "99999999999999999999", "184467440737095516150", "",
                         "-1", "+1", " 1", "1 ", "1a", "a1", "0x10", "1.0", "1e3",
                         "1,000", "\xd9\xa1"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        v = 12345;
        assert_false(vg_parse_u64(bad[i], &v));
        assert_int_equal(v, 12345); /* untouched on failure */
    }
    assert_false(vg_parse_u64(NULL, &v));
}

static void rfc3339(void **state)
{
    char out[32];
    vg_format_rfc3339_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    vg_format_rfc3339_ms(1764000000123u, out);
    assert_string_equal(out, "2025-11-24T16:00:00.123Z");
    vg_format_rfc3339_ms(1709251199999u, out);
    assert_string_equal(out, "2024-02-29T23:59:59.999Z");
    vg_format_rfc3339_ms(951782400000u, out);
    assert_string_equal(out, "2000-02-29T00:00:00.000Z");
    vg_format_rfc3339_ms(253402300799999u, out);
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    vg_format_rfc3339_ms(1001, out);
    assert_string_equal(out, "1970-01-01T00:00:01.001Z");
    assert_int_equal(strlen(out), 24);
}

static uint64_t fake_clock(void) { return 777; }

static void clocks(void **state)
{
    uint64_t a = vg_mono_ns(), b = vg_mono_ns();
    assert_true(b >= a);
    assert_true(vg_real_clock_ms() > 1600000000000u);
    uint64_t (*saved)(void) = vg_clock_ms;
    vg_clock_ms = fake_clock;
    assert_int_equal(vg_clock_ms(), 777);
    vg_clock_ms = saved;
}

/* ms from now, normalised: between now+ms read before and after. */
static void deadline(void **state)
{
    (void)state;
    const uint64_t cases[] = {0, 1, 999, 1000, 1500, 86400000u + 999};
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        struct timespec d = vg_deadline(CLOCK_MONOTONIC, cases[i]);
        clock_gettime(CLOCK_MONOTONIC, &b);
        assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
        uint64_t dn = (uint64_t)d.tv_sec * 1000000000u + (uint64_t)d.tv_nsec;
        uint64_t an = (uint64_t)a.tv_sec * 1000000000u + (uint64_t)a.tv_nsec;
        uint64_t bn = (uint64_t)b.tv_sec * 1000000000u + (uint64_t)b.tv_nsec;
        assert_true(dn >= an + cases[i] * 1000000u);
        assert_true(dn <= bn + cases[i] * 1000000u);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(buf_basics),        cmocka_unit_test(buf_growth),
        cmocka_unit_test(buf_overflow),      cmocka_unit_test(json_escapes),
        cmocka_unit_test(json_valid_utf8),   cmocka_unit_test(json_invalid_utf8),
        cmocka_unit_test(json_worst_case_size), cmocka_unit_test(consttime),
        cmocka_unit_test(parse_u64),         cmocka_unit_test(deadline),         cmocka_unit_test(rfc3339),
        cmocka_unit_test(clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
