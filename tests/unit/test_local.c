/* Tests of the offline local provider (src/provider/local.c): Flite TTS
 * -> WAV -> pocketsphinx STT gives back the same words, espeak-ng speaks
 * German, check() refuses what the provider cannot do, queues are
 * bounded and destroy() fails what is still queued. Timings go to stderr
 * (for the record, not asserted). */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "voxgate/audio.h"
#include "voxgate/provider.h"

/* ---- waiting for done() ---- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    vg_presult res;
} waiter;

static void waiter_init(waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_destroy(waiter *w)
{
    vg_buf_free(&w->res.body);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static void on_done(void *ud, vg_presult *res)
{
    waiter *w = ud;
    pthread_mutex_lock(&w->mu);
    if (w->calls++ == 0) {
        w->res = *res;
        memset(&res->body, 0, sizeof res->body); /* take the body */
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(waiter *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 300;
    pthread_mutex_lock(&w->mu);
    while (!w->calls)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts))
            break;
    int calls = w->calls;
    pthread_mutex_unlock(&w->mu);
    assert_int_equal(calls, 1);
}

/* ---- jobs ---- */

static vg_provider *prov;
static vg_provider_conf conf;

static vg_job tts_job(const char *text, const char *voice, const char *format)
{
    vg_job j = {.kind = VG_KIND_TTS, .request_id = "test", .timeout_ms = 0};
    j.tts = (vg_tts_job){.text = text, .text_len = strlen(text), .voice = voice,
                         .language = "", .model = "", .format = format, .speed = 1.0,
                         .instructions = ""};
    return j;
}

static vg_job stt_job(const void *audio, size_t len, const char *fmt)
{
    vg_job j = {.kind = VG_KIND_STT, .request_id = "test"};
    j.stt = (vg_stt_job){.audio = audio, .audio_len = len, .audio_type = "audio/wav",
                         .filename = "audio.wav", .language = "", .model = "", .prompt = "",
                         .response_format = fmt, .granularities = ""};
    return j;
}

static double now_s(void) { return (double)vg_mono_ns() / 1e9; }

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            v = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* Runs a job to its end; the result's body is the caller's. */
static vg_presult run_job(vg_provider *p, const vg_job *job)
{
    waiter w;
    waiter_init(&w);
    char code[64] = "", msg[256] = "";
    int rc = vg_provider_check(p, job, code, sizeof code, msg, sizeof msg);
    if (rc != VG_OK)
        fail_msg("check: %s: %s", code, msg);
    assert_int_equal(vg_provider_start(p, job, on_done, &w), VG_OK);
    waiter_wait(&w);
    vg_presult res = w.res;
    memset(&w.res.body, 0, sizeof w.res.body);
    waiter_destroy(&w);
    if (res.status != VG_PR_OK)
        fail_msg("job failed: %s", res.message);
    return res;
}

static vg_presult tts(const char *text, const char *voice, const char *format)
{
    vg_job j = tts_job(text, voice, format);
    double t0 = now_s();
    vg_presult r = run_job(prov, &j);
    fprintf(stderr, "# tts %s/%s \"%s\": %.3f s, %zu bytes\n", voice, format, text,
            now_s() - t0, r.body.len);
    return r;
}

/* The "text" member of an STT result, lowercased, in out. */
static void stt_text(const void *audio, size_t len, const char *fmt, char *out, size_t outlen)
{
    vg_job j = stt_job(audio, len, fmt);
    double t0 = now_s();
    vg_presult r = run_job(prov, &j);
    fprintf(stderr, "# stt %s: %.3f s, RSS %ld KiB, duration_ms %u\n", fmt, now_s() - t0,
            rss_kib(), r.duration_ms);
    assert_string_equal(r.content_type, "application/json");
    cJSON *o = cJSON_Parse(r.body.data);
    assert_non_null(o);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
    assert_true(cJSON_IsString(t));
    snprintf(out, outlen, "%s", t->valuestring);
    for (char *c = out; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    cJSON_Delete(o);
    vg_buf_free(&r.body);
}

static void roundtrip(const char *sentence, const char *voice)
{
    vg_presult a = tts(sentence, voice, "wav");
    assert_string_equal(a.content_type, "audio/wav");
    char text[512];
    stt_text(a.body.data, a.body.len, "json", text, sizeof text);
    assert_string_equal(text, sentence);
    vg_buf_free(&a.body);
}

/* ---- tests ---- */

static void test_slt_roundtrip(void **state)
{
    (void)state;
    fprintf(stderr, "# RSS before the first STT: %ld KiB\n", rss_kib());
    roundtrip("please call me back tomorrow morning", "slt");
    roundtrip("hello world", "slt");
    roundtrip("the weather is nice today", "slt");
}

static void test_awb_rms_roundtrip(void **state)
{
    (void)state;
    roundtrip("please call me back tomorrow morning", "awb");
    roundtrip("please call me back tomorrow morning", "rms");
}

static void test_wav_vs_pcm(void **state)
{
    (void)state;
    vg_presult w = tts("hello world", "slt", "wav");
    vg_presult p = tts("hello world", "slt", "pcm");
    vg_wav wav;
    assert_int_equal(vg_wav_parse(w.body.data, w.body.len, &wav, NULL, 0), VG_OK);
    assert_int_equal(wav.channels, 1);
    assert_int_equal(wav.bits, 16);
    char ct[64];
    snprintf(ct, sizeof ct, "audio/pcm;rate=%u", wav.rate);
    assert_string_equal(p.content_type, ct);
    assert_int_equal(p.body.len, w.body.len - VG_WAV_HEADER_LEN);
    assert_memory_equal(p.body.data, w.body.data + VG_WAV_HEADER_LEN, p.body.len);
    vg_buf_free(&w.body);
    vg_buf_free(&p.body);
}

static void test_speed(void **state)
{
    (void)state;
    vg_job j1 = tts_job("this sentence is spoken at two speeds", "slt", "pcm"), j2 = j1;
    j2.tts.speed = 2.0;
    vg_presult a = run_job(prov, &j1), b = run_job(prov, &j2);
    /* Twice as fast: about half as long (pauses do not scale exactly). */
    assert_true(b.body.len < a.body.len * 7 / 10);
    assert_true(b.body.len > a.body.len * 3 / 10);
    vg_buf_free(&a.body);
    vg_buf_free(&b.body);
}

static void test_espeak_de(void **state)
{
    (void)state;
    const char *v = prov->ops->default_voice(prov, "de");
    assert_string_equal(v, "de");
    vg_job j = tts_job("Guten Morgen, wie geht es dir?", v, "wav");
    j.tts.language = "de-DE";
    double t0 = now_s();
    vg_presult r = run_job(prov, &j);
    fprintf(stderr, "# tts espeak de: %.3f s, %zu bytes\n", now_s() - t0, r.body.len);
    vg_wav w;
    assert_int_equal(vg_wav_parse(r.body.data, r.body.len, &w, NULL, 0), VG_OK);
    assert_true(w.frames > w.rate / 2); /* at least half a second of speech */
    int peak = 0;
    for (size_t i = 0; i < w.frames; i++) {
        int s = abs((int16_t)(w.data[2 * i] | w.data[2 * i + 1] << 8));
        peak = s > peak ? s : peak;
    }
    assert_true(peak > 2000); /* not silence */
    vg_buf_free(&r.body);
    j.tts.format = "pcm";
    r = run_job(prov, &j);
    assert_true(r.body.len > 1000);
    assert_non_null(strstr(r.content_type, "audio/pcm;rate="));
    vg_buf_free(&r.body);
}

static void test_voices_and_defaults(void **state)
{
    (void)state;
    assert_string_equal(prov->ops->default_voice(prov, ""), "slt");
    assert_string_equal(prov->ops->default_voice(prov, "en-GB"), "slt");
    assert_string_equal(prov->ops->default_voice(prov, "fr"), "fr-fr");
    assert_string_equal(prov->ops->default_voice(prov, "pt_BR"), "pt-br");
    cJSON *arr = prov->ops->voices(prov);
    assert_true(cJSON_IsArray(arr));
    bool slt = false, de = false;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        const char *id = cJSON_GetObjectItem(v, "id")->valuestring;
        const char *eng = cJSON_GetObjectItem(v, "engine")->valuestring;
        assert_non_null(cJSON_GetObjectItem(v, "name"));
        assert_non_null(cJSON_GetObjectItem(v, "language"));
        slt |= !strcmp(id, "slt") && !strcmp(eng, "flite");
        de |= !strcmp(id, "de") && !strcmp(eng, "espeak-ng");
    }
    assert_true(slt && de);
    assert_true(cJSON_GetArraySize(arr) > 50);
    cJSON_Delete(arr);
    assert_true(prov->ops->ready(prov));
}

static void expect_refusal(const vg_job *j, const char *want_code, const char *in_msg)
{
    char code[64] = "", msg[256] = "";
    assert_int_equal(vg_provider_check(prov, j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, want_code);
    if (!strstr(msg, in_msg))
        fail_msg("message '%s' lacks '%s'", msg, in_msg);
    /* start refuses it too, without calling done. */
    assert_int_equal(vg_provider_start(prov, j, on_done, NULL), VG_EINVAL);
}

static void test_check_refusals(void **state)
{
    (void)state;
    vg_job j = tts_job("hi", "slt", "mp3");
    expect_refusal(&j, "unsupported_format", "wav, pcm");
    j = tts_job("hi", "nosuchvoice", "wav");
    expect_refusal(&j, "unknown_voice", "slt");
    j = tts_job("hi", "slt", "wav");
    j.tts.language = "qq-zz";
    expect_refusal(&j, "unsupported_language", "qq-zz");
    static const char mp3[] = "ID3\x04\0\0\0\0\0\0rest of an mp3 file";
    j = stt_job(mp3, sizeof mp3, "json");
    expect_refusal(&j, "unsupported_media_type", "WAV (PCM)");
    j = stt_job("just some text", 14, "json");
    expect_refusal(&j, "unsupported_media_type", "WAV");
    static const char hdr_only[] = "RIFF\x04\0\0\0WAVE";
    j = stt_job(hdr_only, sizeof hdr_only - 1, "json");
    expect_refusal(&j, "invalid_audio", "fmt");
    vg_buf wav = {0};
    int16_t pcm[160] = {0};
    vg_wav_append_s16(&wav, pcm, 160, 16000);
    j = stt_job(wav.data, wav.len, "json");
    j.stt.language = "de";
    expect_refusal(&j, "unsupported_language", "English");
    j.stt.language = "EN-us";
    char code[64], msg[256];
    assert_int_equal(vg_provider_check(prov, &j, code, sizeof code, msg, sizeof msg), VG_OK);
    j.stt.response_format = "xml";
    expect_refusal(&j, "unsupported_format", "verbose_json");
    vg_buf_free(&wav);
}

/* 16 kHz mono -> 44.1 kHz stereo s16 (left = right), through the resampler. */
static vg_buf to_44k_stereo(const vg_buf *wav16)
{
    vg_wav w;
    assert_int_equal(vg_wav_parse(wav16->data, wav16->len, &w, NULL, 0), VG_OK);
    float *in = malloc(w.frames * sizeof *in), *out;
    for (size_t i = 0; i < w.frames; i++)
        in[i] = (int16_t)(w.data[2 * i] | w.data[2 * i + 1] << 8) / 32768.0f;
    size_t n;
    assert_int_equal(vg_resample(in, w.frames, w.rate, 44100, SIZE_MAX, &out, &n), VG_OK);
    int16_t *st = malloc(2 * n * sizeof *st);
    for (size_t i = 0; i < n; i++)
        st[2 * i] = st[2 * i + 1] = (int16_t)lrintf(out[i] * 32767.0f);
    vg_buf b = {0};
    /* A mono header of 2n samples is a stereo one of n frames once the
     * channel count, byte rate and block align are patched. */
    vg_wav_append_s16(&b, st, 2 * n, 44100);
    uint8_t *h = (uint8_t *)b.data;
    h[22] = 2;
    uint32_t br = 44100 * 4;
    h[28] = (uint8_t)br, h[29] = (uint8_t)(br >> 8), h[30] = (uint8_t)(br >> 16), h[31] = 0;
    h[32] = 4;
    free(in);
    free(out);
    free(st);
    return b;
}

static void test_stt_44k_stereo(void **state)
{
    (void)state;
    const char *s = "please call me back tomorrow morning";
    vg_presult a = tts(s, "slt", "wav");
    vg_buf b = to_44k_stereo(&a.body);
    vg_wav w;
    assert_int_equal(vg_wav_parse(b.data, b.len, &w, NULL, 0), VG_OK);
    assert_int_equal(w.channels, 2);
    assert_int_equal(w.rate, 44100);
    char text[512];
    stt_text(b.data, b.len, "json", text, sizeof text);
    assert_string_equal(text, s);
    vg_buf_free(&a.body);
    vg_buf_free(&b);
}

static void test_stt_formats(void **state)
{
    (void)state;
    vg_presult a = tts("hello world", "slt", "wav");
    char text[1024];
    stt_text(a.body.data, a.body.len, "text", text, sizeof text);
    assert_string_equal(text, "hello world");
    stt_text(a.body.data, a.body.len, "srt", text, sizeof text);
    assert_non_null(strstr(text, "1\n00:00:0"));
    assert_non_null(strstr(text, " --> 00:00:0"));
    assert_non_null(strstr(text, "\nhello world\n"));
    stt_text(a.body.data, a.body.len, "vtt", text, sizeof text);
    assert_memory_equal(text, "webvtt\n\n00:00:0", 15);
    assert_non_null(strstr(text, "\nhello world\n"));

    vg_job j = stt_job(a.body.data, a.body.len, "verbose_json");
    vg_presult r = run_job(prov, &j);
    cJSON *o = cJSON_Parse(r.body.data);
    assert_string_equal(cJSON_GetObjectItem(o, "task")->valuestring, "transcribe");
    assert_string_equal(cJSON_GetObjectItem(o, "language")->valuestring, "english");
    assert_string_equal(cJSON_GetObjectItem(o, "text")->valuestring, "hello world");
    double dur = cJSON_GetObjectItem(o, "duration")->valuedouble;
    assert_true(dur > 0.3 && dur < 5);
    assert_true(r.duration_ms > 300 && (double)r.duration_ms <= dur * 1000 + 1);
    const cJSON *segs = cJSON_GetObjectItem(o, "segments");
    assert_int_equal(cJSON_GetArraySize(segs), 1);
    const cJSON *s0 = cJSON_GetArrayItem(segs, 0);
    assert_int_equal(cJSON_GetObjectItem(s0, "id")->valueint, 0);
    assert_true(cJSON_GetObjectItem(s0, "end")->valuedouble >
                cJSON_GetObjectItem(s0, "start")->valuedouble);
    cJSON_Delete(o);
    vg_buf_free(&r.body);
    vg_buf_free(&a.body);
}

/* A provider with a queue of one: a second job while the first runs is
 * refused with VG_ETOOBIG (done never runs for it). */
static void test_queue_full_and_shutdown(void **state)
{
    (void)state;
    vg_provider_conf c = conf;
    c.max_concurrency = 2;
    vg_provider *p;
    char err[128];
    assert_int_equal(vg_provider_local_new(&c, &p, err, sizeof err), 0);
    static char longtext[3000];
    for (size_t i = 0; i + 12 < sizeof longtext; i += 12)
        memcpy(longtext + i, "one two six ", 12);
    vg_job j = tts_job(longtext, "slt", "pcm");
    waiter w[3];
    for (int i = 0; i < 3; i++)
        waiter_init(&w[i]);
    assert_int_equal(vg_provider_start(p, &j, on_done, &w[0]), VG_OK);
    assert_int_equal(vg_provider_start(p, &j, on_done, &w[1]), VG_OK);
    assert_int_equal(vg_provider_start(p, &j, on_done, &w[2]), VG_ETOOBIG);
    /* destroy: the job still queued is failed (the first one finishes,
     * or is failed too when the worker had not picked it up yet). */
    p->ops->destroy(p);
    assert_int_equal(w[0].calls, 1);
    assert_int_equal(w[1].calls, 1);
    assert_int_equal(w[2].calls, 0);
    assert_true(w[0].res.status == VG_PR_OK || w[0].res.status == VG_PR_INTERNAL);
    assert_int_equal(w[1].res.status, VG_PR_INTERNAL);
    assert_string_equal(w[1].res.message, "shutting down");
    for (int i = 0; i < 3; i++)
        waiter_destroy(&w[i]);
}

static int setup(void **state)
{
    (void)state;
    snprintf(conf.name, sizeof conf.name, "local");
    snprintf(conf.type, sizeof conf.type, "local");
    conf.timeout_ms = 30000;
    conf.max_concurrency = 16;
    char err[128];
    return vg_provider_local_new(&conf, &prov, err, sizeof err);
}

static int teardown(void **state)
{
    (void)state;
    prov->ops->destroy(prov);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_refusals),
        cmocka_unit_test(test_voices_and_defaults),
        cmocka_unit_test(test_slt_roundtrip),
        cmocka_unit_test(test_awb_rms_roundtrip),
        cmocka_unit_test(test_wav_vs_pcm),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_espeak_de),
        cmocka_unit_test(test_stt_44k_stereo),
        cmocka_unit_test(test_stt_formats),
        cmocka_unit_test(test_queue_full_and_shutdown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
