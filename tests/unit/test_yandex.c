/* The yandex provider (SpeechKit v1): URLs for both hosts and base_url,
 * query and form encoding, language mapping, client request ids, check()
 * refusals, key_extra, the classification of every answer in
 * providers.md §5.3, and whole attempts through the engine against the
 * in-test server (both auth modes, WAV unwrapping and conversion). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <pthread.h>

#include "http_stub.h"
#include "voxgate/audio.h"
#include "voxgate/provider.h"

#define KEY_ENV "VG_TEST_YANDEX_KEY"

static vg_provider_conf conf_named(const char *base, const char *auth, const char *folder)
{
    vg_provider_conf c = stub_conf("ya", "yandex", base);
    c.max_response_bytes = 1 << 22;
    snprintf(c.auth, sizeof c.auth, "%s", auth);
    snprintf(c.folder_id, sizeof c.folder_id, "%s", folder);
    snprintf(c.api_key_env, sizeof c.api_key_env, KEY_ENV);
    return c;
}

static vg_provider *provider(const vg_provider_conf *c)
{
    vg_provider *p;
    char err[256];
    setenv(KEY_ENV, "AQVN-secret-key", 1);
    assert_int_equal(vg_provider_yandex_new(c, NULL, &p, err, sizeof err), VG_OK);
    return p;
}

static vg_job tts_job(const char *text, const char *format)
{
    vg_job j = {.kind = VG_KIND_TTS, .request_id = "req-1", .timeout_ms = 5000};
    j.tts = (vg_tts_job){.text = text, .text_len = strlen(text), .voice = "alena",
                         .language = "", .model = "", .format = format, .speed = 1.0,
                         .instructions = ""};
    return j;
}

/* A mono s16 WAV of n samples at rate (a ramp), in a static buffer. */
static uint8_t wav_buf[200000];
static size_t make_wav(uint32_t rate, size_t n)
{
    vg_buf b = {0};
    int16_t *pcm = calloc(n ? n : 1, sizeof *pcm);
    for (size_t i = 0; i < n; i++)
        pcm[i] = (int16_t)(i * 37);
    assert_int_equal(vg_wav_append_s16(&b, pcm, n, rate), VG_OK);
    assert_true(b.len <= sizeof wav_buf);
    memcpy(wav_buf, b.data, b.len);
    size_t len = b.len;
    vg_buf_free(&b);
    free(pcm);
    return len;
}

/* "OggS" with an OpusHead: what vg_audio_sniff calls opus. */
static const uint8_t ogg_opus[64] = {'O', 'g', 'g', 'S', 0, 2, [28] = 'O', 'p', 'u', 's',
                                     'H', 'e', 'a', 'd', 1, 1};

static vg_job stt_job(const void *audio, size_t len, const char *response_format)
{
    vg_job j = {.kind = VG_KIND_STT, .request_id = "req-2", .timeout_ms = 5000};
    j.stt = (vg_stt_job){.audio = audio, .audio_len = len, .audio_type = "audio/wav",
                         .filename = "audio.wav", .language = "", .model = "", .prompt = "",
                         .response_format = response_format, .granularities = ""};
    return j;
}

/* ---- builders ---- */

static void languages(void **state)
{
    assert_string_equal(vg_yandex_lang("ru"), "ru-RU");
    assert_string_equal(vg_yandex_lang("EN"), "en-US");
    assert_string_equal(vg_yandex_lang("kk"), "kk-KK");
    assert_string_equal(vg_yandex_lang("en-GB"), "en-GB");
    assert_string_equal(vg_yandex_lang("ru-ru"), "ru-RU");
    assert_string_equal(vg_yandex_lang(""), "");
    assert_string_equal(vg_yandex_lang("auto"), "");
    assert_null(vg_yandex_lang("fr"));
    assert_null(vg_yandex_lang("english"));
    assert_null(vg_yandex_lang("e-US"));
}

static void urls(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    vg_buf u = {0};
    assert_int_equal(vg_yandex_tts_url(p, &u), VG_OK);
    assert_string_equal(u.data, "https://tts.api.cloud.yandex.net/speech/v1/tts:synthesize");
    size_t n = make_wav(16000, 1600);
    vg_job j = stt_job(wav_buf, n, "json");
    j.stt.language = "en";
    assert_int_equal(vg_yandex_stt_url(p, &j, &u), VG_OK);
    assert_string_equal(u.data, "https://stt.api.cloud.yandex.net/speech/v1/stt:recognize"
                                "?lang=en-US&topic=general&profanityFilter=false"
                                "&rawResults=false&format=lpcm&sampleRateHertz=16000");
    p->ops->destroy(p);

    /* One base for both; IAM sends folderId; Ogg Opus has no rate. */
    c = conf_named("http://mirror:9/x/", "iam", "b1g folder");
    p = provider(&c);
    assert_int_equal(vg_yandex_tts_url(p, &u), VG_OK);
    assert_string_equal(u.data, "http://mirror:9/x/speech/v1/tts:synthesize");
    j = stt_job(ogg_opus, sizeof ogg_opus, "text");
    j.stt.model = "general:rc";
    assert_int_equal(vg_yandex_stt_url(p, &j, &u), VG_OK);
    assert_string_equal(u.data, "http://mirror:9/x/speech/v1/stt:recognize?lang=ru-RU"
                                "&topic=general%3Arc&profanityFilter=false&rawResults=false"
                                "&format=oggopus&folderId=b1g%20folder");
    /* WAV at a rate v1 lacks (44.1 kHz) is converted: 16 kHz. */
    n = make_wav(44100, 441);
    j = stt_job(wav_buf, n, "json");
    assert_int_equal(vg_yandex_stt_url(p, &j, &u), VG_OK);
    assert_non_null(strstr(u.data, "&format=lpcm&sampleRateHertz=16000&"));
    j = stt_job("ID3junk-mp3-data", 16, "json");
    assert_int_equal(vg_yandex_stt_url(p, &j, &u), VG_EINVAL);
    vg_buf_free(&u);
    p->ops->destroy(p);
}

static void tts_bodies(void **state)
{
    vg_provider_conf c = conf_named("", "api-key", "");
    vg_provider *p = provider(&c);
    vg_buf b = {0};
    vg_job j = tts_job("Привет, мир & 1+1=2", "mp3");
    assert_int_equal(vg_yandex_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "text=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82%2C%20%D0%BC%D0%B8"
                                "%D1%80%20%26%201%2B1%3D2&lang=ru-RU&voice=alena&speed=1"
                                "&format=mp3");
    j = tts_job("Hi", "wav");
    j.tts.voice = "john";
    j.tts.speed = 1.5;
    assert_int_equal(vg_yandex_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "text=Hi&lang=en-US&voice=john&speed=1.5&format=lpcm"
                                "&sampleRateHertz=48000");
    j = tts_job("Да", "opus");
    j.tts.language = "ru";
    j.tts.instructions = "good";
    assert_int_equal(vg_yandex_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "text=%D0%94%D0%B0&lang=ru-RU&voice=alena&emotion=good"
                                "&speed=1&format=oggopus");
    p->ops->destroy(p);

    c = conf_named("", "iam", "b1gfolder");
    p = provider(&c);
    j = tts_job("x", "pcm");
    assert_int_equal(vg_yandex_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "text=x&lang=ru-RU&voice=alena&speed=1&format=lpcm"
                                "&sampleRateHertz=48000&folderId=b1gfolder");
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static void client_ids(void **state)
{
    char id[37], again[37];
    vg_yandex_client_id("0F8FAD5B-D9CB-469F-A165-70867728950E", id);
    assert_string_equal(id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    vg_yandex_client_id("req-1", id);
    vg_yandex_client_id("req-1", again);
    assert_string_equal(id, again);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '8'); /* version 8 */
    assert_non_null(strchr("89ab", id[19]));
    vg_yandex_client_id("req-2", again);
    assert_string_not_equal(id, again);
}

/* ---- check() and the ops ---- */

static const char *refusal(vg_provider *p, const vg_job *j)
{
    static char code[48];
    char msg[256];
    code[0] = '\0';
    if (vg_provider_check(p, j, code, sizeof code, msg, sizeof msg) == VG_OK)
        return "ok";
    assert_true(msg[0] != '\0');
    return code;
}

static void checks(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    char code[48], msg[256];
    vg_job j = tts_job("hi", "aac");
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_string_equal(msg, "yandex supports audio formats mp3, opus, pcm, wav");
    j = tts_job("hi", "mp3");
    assert_string_equal(refusal(p, &j), "ok");
    j.tts.speed = 3.5;
    assert_string_equal(refusal(p, &j), "unsupported_speed");
    j.tts.speed = 0.25;
    assert_string_equal(refusal(p, &j), "ok");
    j.tts.instructions = "speak like a pirate";
    assert_string_equal(refusal(p, &j), "unsupported_instructions");
    j.tts.instructions = "whisper";
    assert_string_equal(refusal(p, &j), "ok");
    j.tts.voice = "alloy";
    assert_string_equal(refusal(p, &j), "unknown_voice");
    j.tts.voice = "alena";
    j.tts.language = "fr";
    assert_string_equal(refusal(p, &j), "unsupported_language");
    char *big = malloc(5002);
    memset(big, 'a', 5001);
    big[5001] = '\0';
    j = tts_job(big, "mp3");
    assert_string_equal(refusal(p, &j), "text_too_long");
    free(big);

    size_t n = make_wav(16000, 160);
    j = stt_job(wav_buf, n, "json");
    assert_string_equal(refusal(p, &j), "ok");
    j.stt.response_format = "verbose_json";
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_non_null(strstr(msg, "json, text"));
    j = stt_job("ID3\x04\0\0\0\0\0\0mp3", 14, "json");
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_media_type");
    assert_non_null(strstr(msg, "Ogg Opus"));
    j = stt_job(ogg_opus, sizeof ogg_opus, "text");
    assert_string_equal(refusal(p, &j), "ok");
    uint8_t vorbis[64] = {'O', 'g', 'g', 'S', 0, 2, [28] = 1, 'v', 'o', 'r', 'b', 'i', 's'};
    j = stt_job(vorbis, sizeof vorbis, "text");
    assert_string_equal(refusal(p, &j), "unsupported_media_type");
    n = make_wav(1000, 31000); /* 31 s */
    j = stt_job(wav_buf, n, "json");
    assert_string_equal(refusal(p, &j), "audio_too_long");
    memcpy(wav_buf + 20, "\x55\x00", 2); /* an encoding v1 cannot take */
    assert_string_equal(refusal(p, &j), "invalid_audio");
    p->ops->destroy(p);
}

static void ops(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    assert_string_equal(p->ops->type, "yandex");
    assert_string_equal(p->ops->default_voice(p, ""), "alena");
    assert_string_equal(p->ops->default_voice(p, "en"), "john");
    assert_string_equal(p->ops->default_voice(p, "de-DE"), "lea");
    assert_string_equal(p->ops->default_model(p, VG_KIND_STT), "general");
    assert_string_equal(p->ops->default_model(p, VG_KIND_TTS), "");
    cJSON *v = p->ops->voices(p);
    assert_true(cJSON_GetArraySize(v) >= 10);
    cJSON *first = cJSON_GetArrayItem(v, 0);
    assert_string_equal(cJSON_GetObjectItem(first, "id")->valuestring, "alena");
    assert_string_equal(cJSON_GetObjectItem(first, "language")->valuestring, "ru-RU");
    cJSON_Delete(v);
    assert_true(p->ops->ready(p));
    p->ops->destroy(p);
    c = conf_named("", "", "");
    snprintf(c.voice, sizeof c.voice, "newvoice");
    p = provider(&c);
    assert_string_equal(p->ops->default_voice(p, "en"), "newvoice");
    vg_job j = tts_job("hi", "mp3");
    j.tts.voice = "newvoice"; /* configured: trusted */
    assert_string_equal(refusal(p, &j), "ok");
    p->ops->destroy(p);
}

static void key_extras(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    vg_buf b = {0};
    vg_job j = tts_job("hi", "pcm");
    p->ops->key_extra(p, &j, &b);
    assert_string_equal(b.data, "lang=ru-RU;emotion=default;format=lpcm;sampleRateHertz=48000");
    vg_buf_reset(&b);
    j = tts_job("hi", "opus");
    j.tts.instructions = "evil";
    j.tts.voice = "john";
    p->ops->key_extra(p, &j, &b);
    assert_string_equal(b.data, "lang=en-US;emotion=evil;format=oggopus;sampleRateHertz=0");
    vg_buf_reset(&b);
    size_t n = make_wav(8000, 80);
    j = stt_job(wav_buf, n, "json");
    j.stt.language = "ru";
    p->ops->key_extra(p, &j, &b);
    assert_string_equal(b.data, "lang=ru-RU;topic=general;profanityFilter=false;"
                                "rawResults=false;format=lpcm;sampleRateHertz=8000");
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static void constructor(void **state)
{
    vg_provider *p;
    char err[256];
    setenv(KEY_ENV, "k", 1);
    vg_provider_conf c = conf_named("", "oauth", "");
    assert_int_equal(vg_provider_yandex_new(&c, NULL, &p, err, sizeof err), -1);
    assert_string_equal(err, "providers.ya.auth: expected \"\", api-key or iam");
    c = conf_named("", "api-key", "b1g");
    assert_int_equal(vg_provider_yandex_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "providers.ya.folder_id: "));
    c = conf_named("ftp://x", "", "");
    assert_int_equal(vg_provider_yandex_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "providers.ya.base_url"));
    c = conf_named("", "", "");
    c.api_key_env[0] = '\0';
    assert_int_equal(vg_provider_yandex_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "providers.ya.api_key_env"));
    c = conf_named("", "", "");
    unsetenv(KEY_ENV);
    assert_int_equal(vg_provider_yandex_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, KEY_ENV));
    assert_null(p);
}

/* ---- parsing ---- */

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct answer {
    long status;
    const char *ctype;
    const char *body;
    size_t len;
    const char *retry_after;
} answer;

static vg_presult parse(vg_provider *p, const vg_job *j, answer a)
{
    vg_http_call c = {.http_status = a.status};
    snprintf(c.content_type, sizeof c.content_type, "%s", a.ctype ? a.ctype : "");
    snprintf(c.retry_after, sizeof c.retry_after, "%s", a.retry_after ? a.retry_after : "");
    snprintf(c.upstream_id, sizeof c.upstream_id, "ya-7");
    if (a.body)
        vg_buf_append(&c.resp_body, a.body, a.len ? a.len : strlen(a.body));
    vg_presult res;
    vg_remote_result(p, j, &c, vg_yandex_parse, &res);
    vg_buf_free(&c.resp_body);
    return res;
}

static const char *err_body(const char *code, const char *msg)
{
    static char b[512];
    snprintf(b, sizeof b, "{\"error_code\":\"%s\",\"error_message\":\"%s\"}", code, msg);
    return b;
}

static void error_answers(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    vg_job j = tts_job("hi", "mp3");
    const char *json = "application/json";
    vg_presult r = parse(p, &j, (answer){400, json, err_body("BAD_REQUEST",
                                         "Request voice is applicable for Ru language only: filipp")});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "ya: 400 BAD_REQUEST: Request voice is applicable for Ru "
                                   "language only: filipp");
    assert_string_equal(r.upstream_id, "ya-7");
    r = parse(p, &j, (answer){401, json, err_body("UNAUTHORIZED", "key AQVNabcdefgh bad")});
    assert_int_equal(r.status, VG_PR_AUTH);
    assert_string_equal(r.message, "ya: 401 UNAUTHORIZED");
    r = parse(p, &j, (answer){403, json, err_body("PERMISSION_DENIED", "no role")});
    assert_int_equal(r.status, VG_PR_AUTH);
    assert_null(strstr(r.message, "role"));
    r = parse(p, &j, (answer){429, json, err_body("RESOURCE_EXHAUSTED", "quota"), 0, "3"});
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    assert_int_equal(r.retry_after_ms, 3000);
    r = parse(p, &j, (answer){429, json, "{}"});
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    assert_int_equal(r.retry_after_ms, 0);
    long retry[] = {500, 503, 504};
    for (size_t i = 0; i < 3; i++) {
        r = parse(p, &j, (answer){retry[i], json, err_body("INTERNAL", "oops")});
        assert_int_equal(r.status, VG_PR_RETRYABLE);
        assert_null(strstr(r.message, "oops"));
    }
    r = parse(p, &j, (answer){501, json, err_body("UNIMPLEMENTED", "no such thing")});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "ya: 501 UNIMPLEMENTED: no such thing");
    r = parse(p, &j, (answer){400, "text/html", "<html>bad"});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "ya: 400");
    /* Key-like words in a 400 text are masked. */
    r = parse(p, &j, (answer){400, json, err_body("BAD_REQUEST",
                                         "bad AQVN0123456789abcdefghijklmnop here")});
    assert_string_equal(r.message, "ya: 400 BAD_REQUEST: bad *** here");
    p->ops->destroy(p);
}

static void tts_answers(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    vg_job j = tts_job("hi", "mp3");
    vg_presult r = parse(p, &j, (answer){200, "audio/mpeg", "ID3mp3", 6});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_memory_equal(r.body.data, "ID3mp3", 6);
    vg_presult_free(&r);
    j = tts_job("hi", "opus");
    r = parse(p, &j, (answer){200, "application/octet-stream", "OggS..", 6});
    assert_string_equal(r.content_type, "audio/ogg;codecs=opus");
    vg_presult_free(&r);
    j = tts_job("hi", "pcm");
    r = parse(p, &j, (answer){200, "audio/x-pcm", "\1\0\2\0", 4});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "audio/pcm;rate=48000");
    assert_int_equal(r.body.len, 4);
    vg_presult_free(&r);
    r = parse(p, &j, (answer){200, "audio/x-pcm", "\1\0\2", 3});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    vg_presult_free(&r);
    j = tts_job("hi", "wav");
    r = parse(p, &j, (answer){200, "audio/x-pcm", "\1\0\2\0", 4});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "audio/wav");
    assert_int_equal(r.body.len, 48);
    vg_wav w;
    char err[64];
    assert_int_equal(vg_wav_parse(r.body.data, r.body.len, &w, err, sizeof err), VG_OK);
    assert_int_equal(w.rate, 48000);
    assert_int_equal(w.frames, 2);
    vg_presult_free(&r);
    /* 2xx garbage: JSON, text, empty. */
    r = parse(p, &j, (answer){200, "application/json", "{\"result\":\"x\"}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "audio/mpeg", ""});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    p->ops->destroy(p);
}

static void stt_answers(void **state)
{
    vg_provider_conf c = conf_named("", "", "");
    vg_provider *p = provider(&c);
    size_t n = make_wav(16000, 8000); /* 0.5 s */
    vg_job j = stt_job(wav_buf, n, "json");
    vg_presult r = parse(p, &j, (answer){200, "application/json",
                                         "{\"result\":\"твой номер \\\"212\\\"\"}"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"твой номер \\\"212\\\"\"}");
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.duration_ms, 500);
    vg_presult_free(&r);
    j.stt.response_format = "text";
    r = parse(p, &j, (answer){200, "", "{\"result\":\"\"}"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"\"}");
    vg_presult_free(&r);
    const char *garbage[] = {"not json", "{\"text\":\"x\"}", "{\"result\":5}", "[]", ""};
    for (size_t i = 0; i < VG_ARRAY_LEN(garbage); i++) {
        r = parse(p, &j, (answer){200, "application/json", garbage[i]});
        assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
        assert_non_null(strstr(r.message, "ya: 200 "));
        vg_presult_free(&r);
    }
    p->ops->destroy(p);
}

/* ---- whole attempts through the engine ---- */

typedef struct seen {
    char target[512], auth[128], reqid[64], client_id[64], ctype[128];
    vg_buf body;
} seen;

static seen S;
static pthread_mutex_t S_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_yandex(void *ud, const stub_req *r, vg_buf *out)
{
    pthread_mutex_lock(&S_mu);
    snprintf(S.target, sizeof S.target, "%s %.400s", r->method, r->target);
    stub_header(r, "authorization", S.auth, sizeof S.auth);
    stub_header(r, "x-request-id", S.reqid, sizeof S.reqid);
    stub_header(r, "x-client-request-id", S.client_id, sizeof S.client_id);
    stub_header(r, "content-type", S.ctype, sizeof S.ctype);
    vg_buf_reset(&S.body);
    vg_buf_append(&S.body, r->body.data ? r->body.data : "", r->body.len);
    pthread_mutex_unlock(&S_mu);
    if (!strncmp(r->target, "/speech/v1/tts:synthesize", 25)) {
        stub_reply(out, 200, "Content-Type: audio/mpeg\r\nx-request-id: ya-tts\r\n", "MP3!", 4);
    } else if (!strncmp(r->target, "/speech/v1/stt:recognize", 24)) {
        const char *b = "{\"result\":\"привет\"}";
        stub_reply(out, 200, "Content-Type: application/json\r\nx-request-id: ya-stt\r\n", b,
                   strlen(b));
    } else {
        const char *b = "{\"error_code\":\"UNAUTHORIZED\",\"error_message\":\"no\"}";
        stub_reply(out, 401, "Content-Type: application/json\r\n", b, strlen(b));
    }
    return STUB_SEND;
}

static vg_provider *provider_on(const vg_provider_conf *c, vg_engine *e)
{
    vg_provider *p;
    char err[256];
    assert_int_equal(vg_provider_yandex_new(c, e, &p, err, sizeof err), VG_OK);
    return p;
}

static void end_to_end(void **state)
{
    stub_server *s = stub_start(fake_yandex, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    char base[64], id[37];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", stub_port(s));
    setenv(KEY_ENV, "AQVN-e2e", 1);
    vg_provider_conf c = conf_named(base, "", "");
    vg_provider *p = provider_on(&c, e);

    vg_job j = tts_job("Hello", "mp3");
    vg_presult r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_memory_equal(r.body.data, "MP3!", 4);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_string_equal(r.upstream_id, "ya-tts");
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /speech/v1/tts:synthesize");
    assert_string_equal(S.auth, "Api-Key AQVN-e2e");
    assert_string_equal(S.reqid, "req-1");
    vg_yandex_client_id("req-1", id);
    assert_string_equal(S.client_id, id);
    assert_string_equal(S.ctype, "application/x-www-form-urlencoded");
    assert_string_equal(S.body.data, "text=Hello&lang=ru-RU&voice=alena&speed=1&format=mp3");

    /* 16 kHz mono s16 WAV: its samples go out as they are. */
    size_t n = make_wav(16000, 100);
    j = stt_job(wav_buf, n, "json");
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"привет\"}");
    assert_string_equal(r.upstream_id, "ya-stt");
    vg_presult_free(&r);
    assert_string_equal(S.ctype, "audio/L16");
    assert_non_null(strstr(S.target, "&format=lpcm&sampleRateHertz=16000"));
    assert_int_equal(S.body.len, 200);
    assert_memory_equal(S.body.data, wav_buf + 44, 200);
    p->ops->destroy(p);

    /* IAM: Bearer and folderId; a 32 kHz WAV is converted to 16 kHz. */
    c = conf_named(base, "iam", "b1gf");
    p = provider_on(&c, e);
    n = make_wav(32000, 3200); /* 0.1 s */
    j = stt_job(wav_buf, n, "text");
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    vg_presult_free(&r);
    assert_string_equal(S.auth, "Bearer AQVN-e2e");
    assert_non_null(strstr(S.target, "&sampleRateHertz=16000&folderId=b1gf"));
    assert_true(S.body.len >= 3190 && S.body.len <= 3210); /* 1600 samples at 16 kHz */
    j = stt_job(ogg_opus, sizeof ogg_opus, "json");
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    vg_presult_free(&r);
    assert_string_equal(S.ctype, "audio/ogg;codecs=opus");
    assert_non_null(strstr(S.target, "&format=oggopus&folderId=b1gf"));
    assert_int_equal(S.body.len, sizeof ogg_opus);
    j = tts_job("x", "mp3");
    r = stub_attempt(p, &j);
    vg_presult_free(&r);
    assert_non_null(strstr(S.body.data, "&folderId=b1gf"));
    p->ops->destroy(p);

    /* A base with a path the fake does not serve: 401, no upstream text. */
    snprintf(base, sizeof base, "http://127.0.0.1:%u/other", stub_port(s));
    c = conf_named(base, "", "");
    p = provider_on(&c, e);
    j = tts_job("x", "mp3");
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_AUTH);
    assert_string_equal(r.message, "ya: 401 UNAUTHORIZED");
    p->ops->destroy(p);

    stub_stop(s);
    p = provider_on(&c, e);
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_CONNECT);
    p->ops->destroy(p);
    vg_engine_free(e);
    vg_buf_free(&S.body);
    unsetenv(KEY_ENV);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(languages),   cmocka_unit_test(urls),
        cmocka_unit_test(tts_bodies),  cmocka_unit_test(client_ids),
        cmocka_unit_test(checks),      cmocka_unit_test(ops),
        cmocka_unit_test(key_extras),  cmocka_unit_test(constructor),
        cmocka_unit_test(error_answers), cmocka_unit_test(tts_answers),
        cmocka_unit_test(stt_answers), cmocka_unit_test(end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
