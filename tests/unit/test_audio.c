/* Tests of src/provider/audio.c: sniffing, WAV parsing of generated files
 * in many layouts and of malformed ones, resampling and WAV writing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "voxgate/audio.h"

/* ---- a WAV generator ---- */

typedef struct wavspec {
    uint32_t rate;
    unsigned channels;
    unsigned bits;
    bool is_float;
    bool extensible;
    bool junk_first;       /* a LIST chunk before fmt */
    bool odd_chunk;        /* an odd-sized chunk (padded) between fmt and data */
    uint32_t data_size;    /* 0 = the real size; else written as is */
    double seconds;
    double freq;
} wavspec;

static void put16(vg_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    vg_buf_append(b, p, 2);
}

static void put32(vg_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    vg_buf_append(b, p, 4);
}

static void put_sample(vg_buf *b, const wavspec *s, double x)
{
    if (s->is_float && s->bits == 32) {
        float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, 4);
        put32(b, u);
    } else if (s->is_float) {
        uint64_t u;
        memcpy(&u, &x, 8);
        put32(b, (uint32_t)u);
        put32(b, (uint32_t)(u >> 32));
    } else if (s->bits == 8) {
        uint8_t v = (uint8_t)lrint(128 + x * 127);
        vg_buf_append(b, &v, 1);
    } else if (s->bits == 16) {
        put16(b, (uint16_t)(int16_t)lrint(x * 32767));
    } else if (s->bits == 24) {
        int32_t v = (int32_t)lrint(x * 8388607);
        uint8_t p[3] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16)};
        vg_buf_append(b, p, 3);
    } else {
        put32(b, (uint32_t)(int32_t)lrint(x * 2147483647.0));
    }
}

static void put_fmt(vg_buf *b, const wavspec *s)
{
    unsigned ba = s->channels * s->bits / 8;
    vg_buf_append(b, "fmt ", 4);
    put32(b, s->extensible ? 40 : 16);
    put16(b, s->extensible ? 0xFFFE : s->is_float ? 3 : 1);
    put16(b, (uint16_t)s->channels);
    put32(b, s->rate);
    put32(b, s->rate * ba);
    put16(b, (uint16_t)ba);
    put16(b, (uint16_t)s->bits);
    if (s->extensible) {
        static const uint8_t tail[14] = {0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71};
        put16(b, 22);
        put16(b, (uint16_t)s->bits);
        put32(b, 0);
        put16(b, s->is_float ? 3 : 1);
        vg_buf_append(b, tail, sizeof tail);
    }
}

static vg_buf make_wav(const wavspec *s)
{
    vg_buf b = {0};
    size_t frames = (size_t)(s->seconds * s->rate);
    vg_buf_append(&b, "RIFF\0\0\0\0WAVE", 12);
    if (s->junk_first) {
        vg_buf_append(&b, "LIST", 4);
        put32(&b, 6);
        vg_buf_append(&b, "INFOab", 6);
    }
    put_fmt(&b, s);
    if (s->odd_chunk) {
        vg_buf_append(&b, "junk", 4);
        put32(&b, 3);
        vg_buf_append(&b, "xyz\0", 4); /* 3 bytes + pad */
    }
    vg_buf_append(&b, "data", 4);
    put32(&b, s->data_size ? s->data_size : (uint32_t)(frames * s->channels * s->bits / 8));
    for (size_t i = 0; i < frames; i++)
        for (unsigned c = 0; c < s->channels; c++)
            put_sample(&b, s, 0.5 * sin(2 * M_PI * s->freq * (double)i / s->rate + 0.3));
    uint32_t riff = (uint32_t)(b.len - 8);
    memcpy(b.data + 4, (uint8_t[]){(uint8_t)riff, (uint8_t)(riff >> 8), (uint8_t)(riff >> 16),
                                   (uint8_t)(riff >> 24)}, 4);
    return b;
}

static size_t zero_crossings(const int16_t *s, size_t n)
{
    size_t z = 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i - 1] < 0) != (s[i] < 0))
            z++;
    return z;
}

/* ---- sniffing ---- */

static const char *sniff_name(const void *p, size_t n)
{
    const vg_audio_type *t = vg_audio_sniff(p, n);
    return t ? t->name : NULL;
}

static void test_sniff(void **state)
{
    (void)state;
    assert_string_equal(sniff_name("RIFF\x24\0\0\0WAVEfmt ", 16), "wav");
    assert_string_equal(vg_audio_sniff("RIFF\x24\0\0\0WAVEfmt ", 16)->media_type, "audio/wav");
    assert_string_equal(sniff_name("ID3\x04\0\0\0\0\0\0\0\0", 12), "mp3");
    assert_string_equal(sniff_name("\xFF\xFB\x90\x64\0\0", 6), "mp3");     /* MPEG1 L3 */
    assert_string_equal(sniff_name("\xFF\xF3\x48\xC4\0\0", 6), "mp3");     /* MPEG2 L3 */
    assert_string_equal(sniff_name("\xFF\xF1\x50\x80\0\0", 6), "aac");     /* ADTS */
    assert_null(sniff_name("\xFF\xFB\xF0\x64", 4));                        /* bad bitrate */
    assert_null(sniff_name("\xFF\xEB\x90\x64", 4));                        /* reserved version */
    static const uint8_t ogg[40] = "OggS\0\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x13OpusHead";
    assert_string_equal(sniff_name(ogg, sizeof ogg), "opus");
    assert_string_equal(vg_audio_sniff(ogg, sizeof ogg)->ext, "opus");
    assert_string_equal(sniff_name("OggS\0\x02\0\0\0\0\0\0", 12), "ogg");
    assert_string_equal(sniff_name("fLaC\0\0\0\x22", 8), "flac");
    assert_string_equal(sniff_name("\0\0\0\x20" "ftypM4A \0\0\0\0", 16), "mp4");
    assert_string_equal(vg_audio_sniff("\0\0\0\x20" "ftypM4A ", 12)->ext, "m4a");
    assert_string_equal(sniff_name("\x1A\x45\xDF\xA3\x9F\x42\x86\x81", 8), "webm");
    assert_null(sniff_name("hello world, not audio", 22));
    assert_null(sniff_name("{\"text\":1}", 10));
    assert_null(sniff_name("RIFF\0\0\0\0AVI LIST", 16));
    assert_null(sniff_name("RIF", 3));
    assert_null(sniff_name("", 0));
    assert_null(vg_audio_sniff(NULL, 10));
}

/* ---- parsing every layout ---- */

static void check_layout(const wavspec *s)
{
    vg_buf b = make_wav(s);
    vg_wav w;
    char err[128] = "";
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, err, sizeof err), VG_OK);
    assert_int_equal(w.rate, s->rate);
    assert_int_equal(w.channels, s->channels);
    assert_int_equal(w.bits, s->bits);
    assert_int_equal(w.is_float, s->is_float);
    size_t frames = (size_t)(s->seconds * s->rate);
    assert_int_equal(w.frames, frames);
    int16_t *pcm = NULL;
    size_t n = 0;
    assert_int_equal(vg_wav_to_mono_s16(&w, 16000, 16000 * 10, &pcm, &n), VG_OK);
    size_t want = (frames * 16000 + s->rate - 1) / s->rate;
    assert_int_equal(n, want);
    /* 440 Hz over the whole second: 880 sign changes, give or take the ends. */
    size_t z = zero_crossings(pcm, n);
    assert_in_range(z, 876, 884);
    free(pcm);
    vg_buf_free(&b);
}

static void test_layouts(void **state)
{
    (void)state;
    static const uint32_t rates[] = {8000, 11025, 16000, 22050, 24000, 44100, 48000};
    static const struct { unsigned bits; bool fl; } fmts[] = {
        {8, false}, {16, false}, {24, false}, {32, false}, {32, true}, {64, true}};
    for (size_t r = 0; r < 7; r++)
        for (unsigned ch = 1; ch <= 2; ch++)
            for (size_t f = 0; f < 6; f++)
                for (int ext = 0; ext < 2; ext++) {
                    wavspec s = {.rate = rates[r], .channels = ch, .bits = fmts[f].bits,
                                 .is_float = fmts[f].fl, .extensible = ext, .seconds = 1.0,
                                 .freq = 440, .junk_first = (r + f) % 2, .odd_chunk = ext};
                    check_layout(&s);
                }
    wavspec six = {.rate = 48000, .channels = 6, .bits = 16, .seconds = 1.0, .freq = 440};
    check_layout(&six);
    wavspec eight = {.rate = 32000, .channels = 8, .bits = 24, .seconds = 1.0, .freq = 440};
    check_layout(&eight);
}

static void test_streamed_sizes(void **state)
{
    (void)state;
    wavspec s = {.rate = 16000, .channels = 1, .bits = 16, .seconds = 0.5, .freq = 440,
                 .data_size = 0xFFFFFFFFu};
    vg_buf b = make_wav(&s);
    vg_wav w;
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, NULL, 0), VG_OK);
    assert_int_equal(w.frames, 8000);
    /* A trailing odd byte is not a frame. */
    vg_buf_append(&b, "\x01", 1);
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, NULL, 0), VG_OK);
    assert_int_equal(w.frames, 8000);
    vg_buf_free(&b);
}

/* ---- malformed input ---- */

static void test_truncated_everywhere(void **state)
{
    (void)state;
    wavspec s = {.rate = 22050, .channels = 2, .bits = 24, .extensible = true, .junk_first = true,
                 .odd_chunk = true, .seconds = 0.01, .freq = 440};
    vg_buf b = make_wav(&s);
    /* Every prefix: an error (or, past the data header, still bounded);
     * copies so ASan sees reads past the prefix. */
    for (size_t n = 0; n < b.len; n++) {
        char *p = malloc(n ? n : 1);
        memcpy(p, b.data, n);
        vg_wav w;
        char err[128];
        int rc = vg_wav_parse(p, n, &w, err, sizeof err);
        assert_int_equal(rc, VG_EINVAL);
        free(p);
    }
    vg_buf_free(&b);
}

static void expect_bad(vg_buf *b, const char *needle)
{
    vg_wav w;
    char err[128] = "";
    assert_int_equal(vg_wav_parse(b->data, b->len, &w, err, sizeof err), VG_EINVAL);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

/* Offsets in the plain 16-byte fmt layout: fmt chunk at 12, its body at 20. */
static void test_bad_fmt(void **state)
{
    (void)state;
    wavspec s = {.rate = 16000, .channels = 1, .bits = 16, .seconds = 0.01, .freq = 440};
    struct { size_t off; uint8_t v[4]; size_t n; const char *err; } cases[] = {
        {22, {0, 0}, 2, "channels"},           /* 0 channels */
        {22, {9, 0}, 2, "channels"},           /* 9 channels */
        {24, {0, 0, 0, 0}, 4, "rate"},         /* rate 0 */
        {24, {0xFF, 0xFF, 0xFF, 0xFF}, 4, "rate"},
        {34, {12, 0}, 2, "sample size"},       /* 12-bit */
        {32, {3, 0}, 2, "block align"},
        {20, {2, 0}, 2, "PCM"},                /* ADPCM */
        {16, {8, 0, 0, 0}, 4, "too short"},     /* fmt of 8 bytes */
        {16, {0xF0, 0xFF, 0xFF, 0x7F}, 4, "truncated"},
        {40, {0xF0, 0xFF, 0xFF, 0x7F}, 4, "truncated"}, /* data size past the end */
        {0, {'R', 'I', 'F', 'X'}, 4, "RIFF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vg_buf b = make_wav(&s);
        memcpy(b.data + cases[i].off, cases[i].v, cases[i].n);
        expect_bad(&b, cases[i].err);
        vg_buf_free(&b);
    }
    /* Extensible with an unknown sub-format GUID. */
    wavspec e = s;
    e.extensible = true;
    vg_buf b = make_wav(&e);
    b.data[12 + 8 + 24 + 5] ^= 0x55;
    expect_bad(&b, "sub-format");
    vg_buf_free(&b);
    /* data before fmt, and no data at all. */
    vg_buf d = {0};
    vg_buf_append(&d, "RIFF\0\0\0\0WAVEdata\x02\0\0\0\0\0", 22);
    expect_bad(&d, "before fmt");
    vg_buf_reset(&d);
    vg_buf_append(&d, "RIFF\0\0\0\0WAVE", 12);
    put_fmt(&d, &s);
    expect_bad(&d, "no data");
    vg_buf_free(&d);
}

static void test_float_garbage(void **state)
{
    (void)state;
    /* NaN and infinities in float data become silence or full scale, never UB. */
    wavspec s = {.rate = 8000, .channels = 1, .bits = 32, .is_float = true, .seconds = 0.01};
    vg_buf b = make_wav(&s);
    float bad[3] = {NAN, INFINITY, -INFINITY};
    size_t data_off = b.len - 80 * 4;
    for (size_t i = 0; i < 80; i++)
        memcpy(b.data + data_off + 4 * i, &bad[i % 3], 4);
    vg_wav w;
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, NULL, 0), VG_OK);
    int16_t *pcm;
    size_t n;
    assert_int_equal(vg_wav_to_mono_s16(&w, 16000, 1000, &pcm, &n), VG_OK);
    assert_int_equal(n, 160);
    free(pcm);
    /* The output bound is enforced before allocating. */
    assert_int_equal(vg_wav_to_mono_s16(&w, 16000, 100, &pcm, &n), VG_ETOOBIG);
    vg_buf_free(&b);
}

/* Random byte flips in the headers of valid files: every outcome is an
 * error or a bounded, readable result (ASan watches the reads). */
static void test_mutations(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    for (int it = 0; it < 3000; it++) {
        wavspec s = {.rate = it % 2 ? 8000 : 44100, .channels = 1 + it % 3, .bits = 16,
                     .extensible = it % 4 == 0, .junk_first = it % 5 == 0, .odd_chunk = it % 3 == 0,
                     .seconds = 0.005, .freq = 440};
        vg_buf b = make_wav(&s);
        size_t hdr = b.len < 120 ? b.len : 120;
        for (int k = 0; k < 1 + it % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            b.data[(seed >> 8) % hdr] = (char)(seed >> 24);
        }
        seed = seed * 1103515245u + 12345u;
        size_t len = it % 7 == 0 ? (seed >> 8) % (b.len + 1) : b.len;
        char *copy = malloc(len ? len : 1);
        memcpy(copy, b.data, len);
        vg_wav w;
        if (vg_wav_parse(copy, len, &w, NULL, 0) == VG_OK) {
            assert_true(w.data >= (const uint8_t *)copy);
            assert_true(w.data + w.frames * w.block_align <= (const uint8_t *)copy + len);
            int16_t *pcm = NULL;
            size_t n = 0;
            int rc = vg_wav_to_mono_s16(&w, 16000, 16000, &pcm, &n);
            assert_true(rc == VG_OK || rc == VG_ETOOBIG);
            free(pcm);
        }
        free(copy);
        vg_buf_free(&b);
    }
}

/* ---- resampling ---- */

static float *tone(double freq, uint32_t rate, size_t n)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(0.5 * sin(2 * M_PI * freq * (double)i / rate + 0.3));
    return x;
}

static double rms(const float *x, size_t from, size_t to)
{
    double acc = 0;
    for (size_t i = from; i < to; i++)
        acc += (double)x[i] * x[i];
    return sqrt(acc / (double)(to - from));
}

static void test_resample_keeps_pitch_and_level(void **state)
{
    (void)state;
    static const uint32_t pairs[][2] = {{48000, 16000}, {44100, 16000}, {8000, 16000},
                                        {11025, 16000}, {16000, 44100}};
    for (size_t k = 0; k < 5; k++) {
        uint32_t from = pairs[k][0], to = pairs[k][1];
        float *x = tone(440, from, from * 2), *y;
        size_t n;
        assert_int_equal(vg_resample(x, from * 2, from, to, to * 3, &y, &n), VG_OK);
        assert_int_equal(n, to * 2);
        size_t z = 0;
        for (size_t i = 1; i < n; i++)
            z += (y[i - 1] < 0) != (y[i] < 0);
        assert_in_range(z, 1756, 1764);
        /* Level kept in the middle (0.5 amplitude -> 0.354 RMS). */
        double r = rms(y, n / 4, n * 3 / 4);
        assert_true(fabs(r - 0.3536) < 0.01);
        free(x);
        free(y);
    }
}

static void test_resample_filters_aliases(void **state)
{
    (void)state;
    /* 12 kHz at 48 kHz would fold to 4 kHz at 16 kHz without the low-pass. */
    float *x = tone(12000, 48000, 48000), *y;
    size_t n;
    assert_int_equal(vg_resample(x, 48000, 48000, 16000, 16000, &y, &n), VG_OK);
    assert_true(rms(y, n / 4, n * 3 / 4) < 0.005);
    free(x);
    free(y);
    assert_int_equal(vg_resample(NULL, 0, 48000, 16000, 10, &y, &n), VG_OK);
    assert_int_equal(n, 0);
    free(y);
    assert_int_equal(vg_resample(NULL, 0, 0, 16000, 10, &y, &n), VG_EINVAL);
}

/* ---- writing ---- */

static void test_write_roundtrip(void **state)
{
    (void)state;
    int16_t pcm[5] = {0, 1000, -1000, 32767, -32768};
    vg_buf b = {0};
    assert_int_equal(vg_wav_append_s16(&b, pcm, 5, 22050), VG_OK);
    assert_int_equal(b.len, VG_WAV_HEADER_LEN + 10);
    assert_string_equal(vg_audio_sniff(b.data, b.len)->name, "wav");
    vg_wav w;
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, NULL, 0), VG_OK);
    assert_int_equal(w.rate, 22050);
    assert_int_equal(w.channels, 1);
    assert_int_equal(w.bits, 16);
    assert_int_equal(w.frames, 5);
    assert_memory_equal(w.data + 6, "\xFF\x7F\x00\x80", 4);
    vg_buf_reset(&b);
    assert_int_equal(vg_pcm_append_s16(&b, pcm, 2), VG_OK);
    assert_memory_equal(b.data, "\x00\x00\xE8\x03", 4);
    vg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_streamed_sizes),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_fmt),
        cmocka_unit_test(test_float_garbage),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_resample_keeps_pitch_and_level),
        cmocka_unit_test(test_resample_filters_aliases),
        cmocka_unit_test(test_write_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
