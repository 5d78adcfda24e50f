/* Entry codecs: STT results come back byte for byte; anything we did not
 * write decodes as corrupt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stt_round_trip_exact), cmocka_unit_test(stt_corrupt),
        cmocka_unit_test(tts_round_trip), cmocka_unit_test(rfc3339),
        cmocka_unit_test(content_types), cmocka_unit_test(parse_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
