/* Cache keys: SHA-256 vectors, identifier and hash rules, the SPEC §4 key
 * strings, provider prefixes and the canonical parameter hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "voxgate/keys.h"
#include "voxgate/util.h"

#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define H64U "0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef"

static void sha256_vectors(void **state)
{
    char out[VG_SHA256_HEX + 1];
    vg_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    vg_sha256_hex(NULL, 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    vg_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    unsigned char raw[32];
    vg_sha256_raw("abc", 3, raw);
    assert_int_equal(raw[0], 0xba);
    assert_int_equal(raw[31], 0xad);
    char hex[7];
    vg_hex_lower((const unsigned char *)"\x00\xff\x1a", 3, hex);
    assert_string_equal(hex, "00ff1a");
}

static void idents(void **state)
{
    assert_true(vg_ident_valid("openai"));
    assert_true(vg_ident_valid("en-US"));
    assert_true(vg_ident_valid("a_b.c-D9"));
    assert_true(vg_ident_valid("."));
    assert_true(vg_ident_valid("x"));
    char s[VG_IDENT_MAX + 2];
    memset(s, 'a', VG_IDENT_MAX);
    s[VG_IDENT_MAX] = '\0';
    assert_true(vg_ident_valid(s));
    s[VG_IDENT_MAX] = 'a';
    s[VG_IDENT_MAX + 1] = '\0';
    assert_false(vg_ident_valid(s));
    assert_false(vg_ident_valid(""));
    assert_false(vg_ident_valid(NULL));
    assert_false(vg_ident_valid("a:b"));
    assert_false(vg_ident_valid("*"));
    assert_false(vg_ident_valid("a*"));
    assert_false(vg_ident_valid("a b"));
    assert_false(vg_ident_valid("a@1"));
    assert_false(vg_ident_valid("a/b"));
    assert_false(vg_ident_valid("caf\xc3\xa9"));
    assert_false(vg_ident_valid("\xff"));
    assert_false(vg_ident_valid("a\n"));
}

static void hashes(void **state)
{
    assert_true(vg_hash_valid(H64));
    assert_true(vg_hash_valid(H64U));
    assert_false(vg_hash_valid(H64 "0"));
    assert_false(vg_hash_valid(&H64[1])); /* 63 chars */
    assert_false(vg_hash_valid(""));
    assert_false(vg_hash_valid(NULL));
    char bad[] = H64;
    bad[10] = 'g';
    assert_false(vg_hash_valid(bad));
    bad[10] = ' ';
    assert_false(vg_hash_valid(bad));
    char norm[VG_SHA256_HEX + 1];
    vg_hash_normalize(H64U, norm);
    assert_string_equal(norm, H64);
}

static int build(vg_kind kind, const char *voice, const char *fmt, unsigned epoch, char *out,
                 size_t cap)
{
    vg_key_parts p = {.kind = kind, .provider = "openai", .language = "en", .voice = voice,
                      .hash = H64, .format = fmt, .epoch = epoch};
    return vg_key_build("voxgate", &p, out, cap);
}

static void key_strings(void **state)
{
    char k[VG_KEY_MAX];
    int n = build(VG_KIND_STT, NULL, "wav", 0, k, sizeof k);
    assert_string_equal(k, "voxgate:stt:openai:en:" H64 ":wav");
    assert_int_equal(n, (int)strlen(k));
    build(VG_KIND_STT, NULL, NULL, 0, k, sizeof k);
    assert_string_equal(k, "voxgate:stt:openai:en:" H64);
    build(VG_KIND_STT, NULL, "", 0, k, sizeof k);
    assert_string_equal(k, "voxgate:stt:openai:en:" H64);
    build(VG_KIND_STT, "ignored", NULL, 7, k, sizeof k);
    assert_string_equal(k, "voxgate:stt:openai@7:en:" H64);
    n = build(VG_KIND_TTS, "alloy", NULL, 3, k, sizeof k);
    assert_string_equal(k, "voxgate:tts:openai@3:en:alloy:" H64);
    assert_int_equal(n, (int)strlen(k));
    build(VG_KIND_TTS, "alloy", "mp3", 0, k, sizeof k);
    assert_string_equal(k, "voxgate:tts:openai:en:alloy:" H64 ":mp3");

    /* Uppercase hashes are accepted and written lowercase. */
    vg_key_parts p = {.kind = VG_KIND_STT, .provider = "p", .language = "de", .hash = H64U};
    vg_key_build("vx", &p, k, sizeof k);
    assert_string_equal(k, "vx:stt:p:de:" H64);
}

static void key_invalid(void **state)
{
    char k[VG_KEY_MAX];
    vg_key_parts ok = {.kind = VG_KIND_TTS, .provider = "openai", .language = "en",
                       .voice = "alloy", .hash = H64, .format = "mp3"};
    vg_key_parts p;
    assert_true(vg_key_build("voxgate", &ok, k, sizeof k) > 0);
    p = ok, p.provider = "open:ai";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    assert_string_equal(k, "");
    p = ok, p.provider = NULL;
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.language = "en*";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.language = "";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.voice = NULL;
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.voice = "al loy";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.format = "mp3:x";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.hash = H64 "0";
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.hash = NULL;
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    p = ok, p.kind = (vg_kind)2;
    assert_int_equal(vg_key_build("voxgate", &p, k, sizeof k), -1);
    assert_int_equal(vg_key_build("vox:gate", &ok, k, sizeof k), -1);
    assert_int_equal(vg_key_build("", &ok, k, sizeof k), -1);
    assert_int_equal(vg_key_build(NULL, &ok, k, sizeof k), -1);
}

static void key_small_buffer(void **state)
{
    char k[VG_KEY_MAX];
    int n = build(VG_KIND_STT, NULL, "wav", 0, k, sizeof k);
    assert_int_equal(build(VG_KIND_STT, NULL, "wav", 0, k, (size_t)n + 1), n);
    assert_int_equal(build(VG_KIND_STT, NULL, "wav", 0, k, (size_t)n), -1);
    assert_string_equal(k, "");
    assert_int_equal(build(VG_KIND_STT, NULL, "wav", 0, k, 0), -1);
}

static void provider_prefix(void **state)
{
    char pfx[128], k[VG_KEY_MAX];
    int pl = vg_key_provider_prefix("voxgate", VG_KIND_TTS, "openai", pfx, sizeof pfx);
    assert_string_equal(pfx, "voxgate:tts:openai");
    assert_int_equal(pl, (int)strlen(pfx));
    assert_int_equal(vg_key_provider_prefix("voxgate", VG_KIND_TTS, "openai", pfx, 18), -1);
    assert_int_equal(vg_key_provider_prefix("voxgate", VG_KIND_TTS, "open*", pfx, sizeof pfx), -1);
    assert_int_equal(vg_key_provider_prefix("a b", VG_KIND_TTS, "openai", pfx, sizeof pfx), -1);
    pl = vg_key_provider_prefix("voxgate", VG_KIND_TTS, "openai", pfx, sizeof pfx);

    int n = build(VG_KIND_TTS, "alloy", NULL, 0, k, sizeof k);
    assert_true(vg_key_has_provider_prefix(k, (size_t)n, pfx, (size_t)pl));
    n = build(VG_KIND_TTS, "alloy", NULL, 4, k, sizeof k);
    assert_true(vg_key_has_provider_prefix(k, (size_t)n, pfx, (size_t)pl));
    n = build(VG_KIND_STT, NULL, NULL, 0, k, sizeof k);
    assert_false(vg_key_has_provider_prefix(k, (size_t)n, pfx, (size_t)pl));
    const char *o2 = "voxgate:tts:openai2:en:alloy:" H64;
    assert_false(vg_key_has_provider_prefix(o2, strlen(o2), pfx, (size_t)pl));
    assert_false(vg_key_has_provider_prefix(pfx, (size_t)pl, pfx, (size_t)pl));
    assert_false(vg_key_has_provider_prefix("voxgate:tts:open", 16, pfx, (size_t)pl));
}

/* The file digest matches the one-shot one, from any offset, and a
 * file shorter than announced is corrupt. */
static void sha256_of_file(void **state)
{
    (void)state;
    FILE *fp = tmpfile();
    assert_non_null(fp);
    int fd = fileno(fp);
    static char data[200000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 31 + (i >> 9));
    assert_int_equal(write(fd, data, sizeof data), sizeof data);
    unsigned char got[32], want[32];
    const size_t cuts[][2] = {{0, sizeof data}, {17, sizeof data - 17}, {65536, 65536}, {5, 0}};
    for (size_t i = 0; i < VG_ARRAY_LEN(cuts); i++) {
        assert_int_equal(vg_sha256_fd(fd, cuts[i][0], cuts[i][1], got), VG_OK);
        vg_sha256_raw(data + cuts[i][0], cuts[i][1], want);
        assert_memory_equal(got, want, 32);
    }
    assert_int_equal(vg_sha256_fd(fd, 100, sizeof data, got), VG_ECORRUPT);
    fclose(fp);
    assert_int_equal(vg_sha256_fd(-1, 0, 1, got), VG_ERR);
}

static void canon_order_and_nulls(void **state)
{
    char a[VG_SHA256_HEX + 1], b[VG_SHA256_HEX + 1], c[VG_SHA256_HEX + 1];
    vg_param p1[] = {{"model", "tts-1"}, {"speed", "1.0"}, {"voice", "alloy"}};
    vg_param p2[] = {{"voice", "alloy"}, {"model", "tts-1"}, {"speed", "1.0"}};
    vg_param p3[] = {{"voice", "alloy"}, {"instructions", NULL}, {"model", "tts-1"},
                     {"speed", "1.0"}};
    assert_int_equal(vg_canon_hash("tts", p1, 3, "hello", 5, a), 0);
    assert_int_equal(vg_canon_hash("tts", p2, 3, "hello", 5, b), 0);
    assert_int_equal(vg_canon_hash("tts", p3, 4, "hello", 5, c), 0);
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    assert_true(vg_hash_valid(a));
    /* The caller's array keeps its order. */
    assert_string_equal(p2[0].name, "voice");
    assert_string_equal(p3[1].name, "instructions");

    /* Any change in a value, the payload or the domain changes the hash. */
    p2[2].value = "1.25";
    vg_canon_hash("tts", p2, 3, "hello", 5, b);
    assert_string_not_equal(a, b);
    vg_canon_hash("tts", p1, 3, "hellO", 5, b);
    assert_string_not_equal(a, b);
    vg_canon_hash("stt", p1, 3, "hello", 5, b);
    assert_string_not_equal(a, b);
    /* An empty value is present, unlike a NULL one. */
    p3[1].value = "";
    vg_canon_hash("tts", p3, 4, "hello", 5, b);
    assert_string_not_equal(a, b);
}

static void canon_encoding(void **state)
{
    char got[VG_SHA256_HEX + 1], want[VG_SHA256_HEX + 1];
    vg_param p[] = {{"b", "xy"}, {"a", "1"}};
    assert_int_equal(vg_canon_hash("d", p, 2, "PL", 2, got), 0);
    static const unsigned char enc[] = {
        'd', 0,
        0, 0, 0, 1, 'a', 0, 0, 0, 1, '1',
        0, 0, 0, 1, 'b', 0, 0, 0, 2, 'x', 'y',
        0, 0, 0, 0, 0, 0, 0, 2, 'P', 'L'};
    vg_sha256_hex(enc, sizeof enc, want);
    assert_string_equal(got, want);
    /* No params and no payload still hash the domain and a zero length. */
    assert_int_equal(vg_canon_hash("d", NULL, 0, NULL, 0, got), 0);
    vg_sha256_hex("d\0\0\0\0\0\0\0\0\0", 10, want);
    assert_string_equal(got, want);
}

static void canon_unambiguous(void **state)
{
    char a[VG_SHA256_HEX + 1], b[VG_SHA256_HEX + 1];
    /* "ab"="c" vs "a"="bc": same concatenation, different parameters. */
    vg_param x[] = {{"ab", "c"}};
    vg_param y[] = {{"a", "bc"}};
    vg_canon_hash("d", x, 1, "", 0, a);
    vg_canon_hash("d", y, 1, "", 0, b);
    assert_string_not_equal(a, b);
    /* Bytes moved from the last value into the payload. */
    vg_param z[] = {{"a", "b"}};
    vg_param w[] = {{"a", "bp"}};
    vg_canon_hash("d", z, 1, "p", 1, a);
    vg_canon_hash("d", w, 1, "", 0, b);
    assert_string_not_equal(a, b);
    /* "a=b&c=d" packed into one value vs two parameters. */
    vg_param u[] = {{"a", "b&c=d"}};
    vg_param v[] = {{"a", "b"}, {"c", "d"}};
    vg_canon_hash("d", u, 1, "", 0, a);
    vg_canon_hash("d", v, 2, "", 0, b);
    assert_string_not_equal(a, b);
}

static void canon_rejects(void **state)
{
    char out[VG_SHA256_HEX + 1];
    vg_param dup[] = {{"model", "a"}, {"voice", "x"}, {"model", "b"}};
    assert_int_equal(vg_canon_hash("d", dup, 3, "", 0, out), -1);
    vg_param dupnull[] = {{"model", "a"}, {"model", NULL}};
    assert_int_equal(vg_canon_hash("d", dupnull, 2, "", 0, out), -1);
    vg_param noname[] = {{NULL, "a"}};
    assert_int_equal(vg_canon_hash("d", noname, 1, "", 0, out), -1);
    assert_int_equal(vg_canon_hash(NULL, NULL, 0, "", 0, out), -1);
    assert_int_equal(vg_canon_hash("d", NULL, 0, NULL, 3, out), -1);
    assert_int_equal(vg_canon_hash("d", NULL, 1, "", 0, out), -1);
}

static void canon_many_params(void **state)
{
    /* More than fit the on-stack sort buffer. */
    enum { N = 100 };
    static char names[N][8];
    vg_param fwd[N], rev[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "p%03d", i);
        fwd[i] = (vg_param){names[i], names[i]};
        rev[N - 1 - i] = fwd[i];
    }
    char a[VG_SHA256_HEX + 1], b[VG_SHA256_HEX + 1];
    assert_int_equal(vg_canon_hash("d", fwd, N, "x", 1, a), 0);
    assert_int_equal(vg_canon_hash("d", rev, N, "x", 1, b), 0);
    assert_string_equal(a, b);
    rev[10] = rev[11];
    assert_int_equal(vg_canon_hash("d", rev, N, "x", 1, b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sha256_vectors),      cmocka_unit_test(idents),
        cmocka_unit_test(hashes),              cmocka_unit_test(key_strings),
        cmocka_unit_test(key_invalid),         cmocka_unit_test(key_small_buffer),
        cmocka_unit_test(provider_prefix),     cmocka_unit_test(sha256_of_file),
        cmocka_unit_test(canon_order_and_nulls),
        cmocka_unit_test(canon_encoding),      cmocka_unit_test(canon_unambiguous),
        cmocka_unit_test(canon_rejects),       cmocka_unit_test(canon_many_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
