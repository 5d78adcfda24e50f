/* Entry codecs: STT results come back byte for byte; anything we did not
 * write decodes as corrupt. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "voxgate/entry.h"

static void stt_round_trip_exact(void **state)
{
    /* Number precision and spacing must survive: no re-serialisation. */
    const char *res = "{\"text\": \"hi\",  \"n\": 12345678901234567890, \"f\": 1.50}";
    vg_buf b = {0};
    assert_int_equal(vg_stt_entry_encode(&b, "openai", "en", 1700000000123ull, res, strlen(res)),
                     VG_OK);
    const char *out;
    size_t n;
    uint64_t created;
    assert_int_equal(vg_stt_entry_decode(b.data, b.len, &out, &n, &created), VG_OK);
    assert_int_equal(n, strlen(res));
    assert_memory_equal(out, res, n);
    assert_int_equal(created, 1700000000123ull);
    vg_buf_free(&b);
}

static void stt_corrupt(void **state)
{
    const char *bad[] = {
        "",
        "{",
        "null",
        "{\"provider\":\"openai\",\"language\":\"en\",\"created_at\":\"2026-01-01T00:00:00.000Z\"}",
        "{\"provider\":\"openai\",\"language\":\"en\",\"created_at\":\"2026-01-01T00:00:00.000Z\",\"result\":1,\"x\":2}",
        "{\"provider\":\"open ai\",\"language\":\"en\",\"created_at\":\"2026-01-01T00:00:00.000Z\",\"result\":1}",
        "{\"provider\":\"openai\",\"language\":\"en\",\"created_at\":\"yesterday\",\"result\":1}",
        "{\"language\":\"en\",\"provider\":\"openai\",\"created_at\":\"2026-01-01T00:00:00.000Z\",\"result\":1}",
        "{\"provider\":\"openai\",\"language\":\"en\",\"created_at\":\"2026-01-01T00:00:00.000Z\",\"result\":{\"a\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *out;
        size_t n;
        uint64_t created;
        assert_int_equal(vg_stt_entry_decode(bad[i], strlen(bad[i]), &out, &n, &created),
                         VG_ECORRUPT);
    }
    const char *good = "{\"provider\":\"openai\",\"language\":\"en\",\"created_at\":\"2026-01-01T00:00:00.000Z\",\"result\":[1]}";
    const char *out;
    size_t n;
    uint64_t created;
    assert_int_equal(vg_stt_entry_decode(good, strlen(good), &out, &n, &created), VG_OK);
    assert_int_equal(n, 3);
}

static void tts_round_trip(void **state)
{
    vg_tts_meta m = {.size = 42, .created_ms = 1700000000000ull};
    strcpy(m.content_type, "audio/wav");
    strcpy(m.sha256, "ab00000000000000000000000000000000000000000000000000000000000000");
    strcpy(m.blob, "tts/ab/abc-0123456789abcdef");
    vg_buf b = {0};
    assert_int_equal(vg_tts_meta_encode(&b, &m, "openai", "en", "alloy"), VG_OK);
    vg_tts_meta d;
    assert_int_equal(vg_tts_meta_decode(b.data, b.len, &d), VG_OK);
    assert_string_equal(d.content_type, m.content_type);
    assert_string_equal(d.sha256, m.sha256);
    assert_string_equal(d.blob, m.blob);
    assert_int_equal(d.size, 42);
    assert_int_equal(d.created_ms, m.created_ms);
    /* Truncation anywhere is corrupt, never a crash. */
    for (size_t cut = 0; cut < b.len; cut++)
        assert_int_equal(vg_tts_meta_decode(b.data, cut, &d), VG_ECORRUPT);
    vg_buf_free(&b);
}

static void rfc3339(void **state)
{
    uint64_t ms;
    assert_int_equal(vg_parse_rfc3339_ms("1970-01-01T00:00:01.002Z", &ms), VG_OK);
    assert_int_equal(ms, 1002);
    assert_int_equal(vg_parse_rfc3339_ms("2026-13-01T00:00:00.000Z", &ms), VG_EINVAL);
    assert_int_equal(vg_parse_rfc3339_ms("2026-01-01T00:00:00Z", &ms), VG_EINVAL);
    assert_int_equal(vg_parse_rfc3339_ms("2026-01-01T00:00:00.000Zx", &ms), VG_EINVAL);
    char out[32];
    vg_format_rfc3339_ms(1764000000123ull, out);
    assert_int_equal(vg_parse_rfc3339_ms(out, &ms), VG_OK);
    assert_int_equal(ms, 1764000000123ull);
    /* Exactly the fixed shape: no sign, no space, no missing day. */
    const char *bad[] = {"2026- 1-01T00:00:00.000Z", "2026-+1-01T00:00:00.000Z",
                         "+026-01-01T00:00:00.000Z", "2026-01-01 00:00:00.000Z",
                         "2026-02-29T00:00:00.000Z", "2100-02-29T00:00:00.000Z",
                         "2026-04-31T00:00:00.000Z", "2026-01-00T00:00:00.000Z",
                         "1969-12-31T23:59:59.999Z", "2026-01-01T24:00:00.000Z",
                         "2026-01-01T00:60:00.000Z", "2026-01-01T00:00:61.000Z",
                         "2026-01-01T00:00:00.-01Z", "2026-01-01T00:00:00.000",  ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(vg_parse_rfc3339_ms(bad[i], &ms), VG_EINVAL);
    assert_int_equal(vg_parse_rfc3339_ms("2000-02-29T00:00:00.000Z", &ms), VG_OK);
    assert_int_equal(vg_parse_rfc3339_ms("2028-02-29T23:59:60.999Z", &ms), VG_OK);
}

/* The date arithmetic agrees with timegm on every day from 1970 to 2400,
 * at a time of day that moves with the day. */
static void rfc3339_every_day(void **state)
{
    for (int64_t day = 0; day < 157000; day++) {
        time_t t = (time_t)(day * 86400 + (day * 7919) % 86400);
        struct tm tm;
        gmtime_r(&t, &tm);
        char s[96];
        snprintf(s, sizeof s, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(day % 1000));
        uint64_t ms;
        assert_int_equal(vg_parse_rfc3339_ms(s, &ms), VG_OK);
        assert_true(ms == (uint64_t)t * 1000u + (uint64_t)(day % 1000));
    }
}

static void content_types(void **state)
{
    assert_true(vg_content_type_valid("audio/wav"));
    assert_true(vg_content_type_valid("audio/pcm; rate=24000"));
    assert_false(vg_content_type_valid(""));
    assert_false(vg_content_type_valid("audio"));
    assert_false(vg_content_type_valid("/wav"));
    assert_false(vg_content_type_valid("audio/"));
    assert_false(vg_content_type_valid("audio/wav\r\nX: y"));
    assert_false(vg_content_type_valid("audio/\"x\""));
}

static void parse_exact(void **state)
{
    const char *good[] = {"1", " {\"a\":1}\n", "[1,2]", "\"x\"", "null\r\n\t "};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        void *d = vg_json_parse_exact(good[i], strlen(good[i]));
        assert_non_null(d);
        cJSON_Delete(d);
    }
    const char *bad[] = {"", " ", "{\"a\":1} {\"b\":2}", "{\"a\":1}x", "[1,2]]", "\"x\" \"y\"", "1 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(vg_json_parse_exact(bad[i], strlen(bad[i])));
    /* An embedded NUL after the value is not whitespace. */
    assert_null(vg_json_parse_exact("1\0", 2));
}

/* Texts both checkers must accept, and texts both must refuse. */
static void json_valid_agrees(void **state)
{
    const char *good[] = {
        "1", "-0", "0.5", "-12.5e+3", "1E-2", "1e5", " {\"a\":1}\n", "[1,2]", "[]", "{}", "[[]]",
        "\"x\"", "null\r\n\t ", "true", "false", "{\"a\":{\"b\":[true,false,null,\"\"]}}",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"", "\"caf\xc3\xa9 long enough to take the fast path\"",
        "{ \"k\" : [ 1 , { } , [ ] ] }",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_true(vg_json_valid(good[i], strlen(good[i])));
        void *d = vg_json_parse_exact(good[i], strlen(good[i]));
        assert_non_null(d);
        cJSON_Delete(d);
    }
    const char *bad[] = {
        "", " ", "{\"a\":1} {\"b\":2}", "{\"a\":1}x", "[1,2]]", "\"x\" \"y\"", "1 2", "[1,]", "{\"a\":1,}",
        "{\"a\"}", "{\"a\" 1}", "{1:2}", "[", "]", "{", "\"abc", "\"\\x\"", "tru", "nul",
        "-", "1e", "[1 2]", "{\"a\":1 \"b\":2}", "\"\\uDE00\"", "\"\\uD83D\"", "\"\\uD83Dx\"",
        "\"\\uD83D\\u0041\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(vg_json_valid(bad[i], strlen(bad[i])));
        assert_null(vg_json_parse_exact(bad[i], strlen(bad[i])));
    }
    assert_false(vg_json_valid("1\0", 2));
    assert_false(vg_json_valid(NULL, 0));
}

/* Where cJSON is lenient the checker is strict: these are not JSON. */
static void json_valid_strict(void **state)
{
    const char *bad[] = {"01", "1.", "-.5", "1.e5", "\"a\tb\"", "\"a\nb is long enough for 8\"",
                         "\xef\xbb\xbf{}", "\"\x01\"",
                         "\"\\u12G4\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(vg_json_valid(bad[i], strlen(bad[i])));
    assert_false(vg_json_valid("\"a\0b\"", 5));
}

/* Nesting up to cJSON's limit (1000) is accepted, one deeper is not. */
static void json_valid_depth(void **state)
{
    char buf[2 * 1001 + 1];
    for (int depth = 1000; depth <= 1001; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        bool ok = vg_json_valid(buf, 2 * (size_t)depth);
        void *d = vg_json_parse_exact(buf, 2 * (size_t)depth);
        assert_int_equal(ok, depth == 1000);
        assert_int_equal(d != NULL, depth == 1000);
        cJSON_Delete(d);
    }
}

/* Every special byte is found wherever it sits in a 16-byte block. */
static void json_valid_every_offset(void **state)
{
    const char specials[] = {'"', '\\', '\n', '\x1f'};
    for (size_t pos = 0; pos < 40; pos++) {
        for (size_t s = 0; s < sizeof specials; s++) {
            char buf[42];
            buf[0] = '"';
            memset(buf + 1, 'a', 40);
            buf[1 + pos] = specials[s];
            buf[41] = '"';
            /* A lone quote ends the string early, a lone backslash escapes
             * 'a', a control byte is refused: never valid. */
            assert_false(vg_json_valid(buf, 42));
        }
    }
}

static void assert_span(const char *v, size_t n, const char *want)
{
    assert_int_equal(n, strlen(want));
    assert_memory_equal(v, want, n);
}

/* Members and elements come back as the bytes their sender wrote:
 * numbers unrounded, strings with brackets, quotes and escapes inside
 * skipped whole, whitespace around them left out. */
static void json_spans(void **state)
{
    const char *doc = " { \"a\" : [1, {\"x\":\"]}\\\"\"}] , \"result\":\t12345678901234567890 ,"
                      "\"n\":1.0e2, \"result\":2 , \"s\" : \"a,b}\" } ";
    const char *v;
    size_t n;
    assert_true(vg_json_member(doc, strlen(doc), "result", &v, &n));
    assert_span(v, n, "12345678901234567890"); /* the first of two, as cJSON picks */
    assert_true(vg_json_member(doc, strlen(doc), "n", &v, &n));
    assert_span(v, n, "1.0e2");
    assert_true(vg_json_member(doc, strlen(doc), "s", &v, &n));
    assert_span(v, n, "\"a,b}\"");
    assert_false(vg_json_member(doc, strlen(doc), "res", &v, &n));
    assert_true(vg_json_member(doc, strlen(doc), "a", &v, &n));
    assert_span(v, n, "[1, {\"x\":\"]}\\\"\"}]");

    vg_json_iter it;
    assert_true(vg_json_array(&it, v, n));
    const char *want[] = {"1", "{\"x\":\"]}\\\"\"}"};
    for (size_t i = 0; i < 2; i++) {
        assert_true(vg_json_next(&it, &v, &n));
        assert_span(v, n, want[i]);
    }
    assert_false(vg_json_next(&it, &v, &n));
    assert_false(vg_json_next(&it, &v, &n));

    assert_true(vg_json_array(&it, " [ ] ", 5));
    assert_false(vg_json_next(&it, &v, &n));
    assert_false(vg_json_array(&it, "{}", 2));
    assert_false(vg_json_member("[]", 2, "a", &v, &n));
    assert_false(vg_json_member("{}", 2, "a", &v, &n));
    /* An escaped key decodes to a name its text does not show: no span. */
    const char *esc = "{\"res\\u0075lt\":1,\"result\":2}";
    assert_false(vg_json_member(esc, strlen(esc), "result", &v, &n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stt_round_trip_exact), cmocka_unit_test(stt_corrupt),
        cmocka_unit_test(tts_round_trip), cmocka_unit_test(rfc3339),
        cmocka_unit_test(content_types), cmocka_unit_test(parse_exact),
        cmocka_unit_test(json_valid_agrees), cmocka_unit_test(json_valid_strict),
        cmocka_unit_test(json_valid_depth), cmocka_unit_test(json_valid_every_offset),
        cmocka_unit_test(json_spans), cmocka_unit_test(rfc3339_every_day),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
