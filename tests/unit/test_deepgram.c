/* The deepgram provider: URL and query building, the TTS body, check()
 * refusals, key_extra, every error class of providers.md §3 in both body
 * shapes, a realistic /v1/listen answer turned into each response_format
 * (json, text, verbose_json, srt, vtt), and whole attempts through the
 * engine against the in-test server (headers and raw body upstream). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>

#include "http_stub.h"
#include "voxgate/provider.h"

/* Answers are written positionally, trailing fields left out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static vg_provider_conf conf_with(const char *base)
{
    return stub_conf("dg", "deepgram", base);
}

static vg_provider *provider(const vg_provider_conf *c, vg_engine *e)
{
    vg_provider *p;
    char err[256];
    assert_int_equal(vg_provider_deepgram_new(c, e, &p, err, sizeof err), VG_OK);
    return p;
}

static vg_job tts_job(const char *text, const char *format)
{
    vg_job j = {.kind = VG_KIND_TTS, .request_id = "req-1", .timeout_ms = 5000};
    j.tts = (vg_tts_job){.text = text, .text_len = strlen(text), .voice = "aura-2-thalia-en",
                         .language = "", .model = "", .format = format, .speed = 1.0,
                         .instructions = ""};
    return j;
}

static vg_job stt_job(const char *response_format)
{
    vg_job j = {.kind = VG_KIND_STT, .request_id = "req-2", .timeout_ms = 5000};
    j.stt = (vg_stt_job){.audio = "RIFF\0fakeaudio", .audio_len = 14, .audio_type = "audio/wav",
                         .filename = "audio.wav", .language = "", .model = "nova-3",
                         .prompt = "", .response_format = response_format, .temperature = 0,
                         .granularities = ""};
    return j;
}

static vg_buf url_buf;

static const char *url_of(vg_provider *p, const vg_job *j)
{
    assert_int_equal(vg_deepgram_url(p, j, &url_buf), VG_OK);
    return url_buf.data;
}

/* ---- requests ---- */

static void urls(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = stt_job("json");
    assert_string_equal(url_of(p, &j), "https://api.deepgram.com/v1/listen?model=nova-3"
                                       "&detect_language=true&punctuate=true&smart_format=true");
    j.stt.language = "en-US";
    j.stt.model = "";
    assert_string_equal(url_of(p, &j), "https://api.deepgram.com/v1/listen?model=nova-3"
                                       "&language=en-US&punctuate=true&smart_format=true");
    snprintf(c.stt_model, sizeof c.stt_model, "nova-2 phone");
    snprintf(c.base_url, sizeof c.base_url, "http://h:1/");
    assert_string_equal(url_of(p, &j), "http://h:1/v1/listen?model=nova-2%20phone"
                                       "&language=en-US&punctuate=true&smart_format=true");
    static const struct { const char *fmt, *query; } t[] = {
        {"wav", "encoding=linear16&container=wav&sample_rate=24000"},
        {"pcm", "encoding=linear16&container=none&sample_rate=24000"},
        {"mp3", "encoding=mp3"}, {"opus", "encoding=opus&container=ogg"},
        {"aac", "encoding=aac"}, {"flac", "encoding=flac"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(t); i++) {
        vg_job k = tts_job("x", t[i].fmt);
        char want[200];
        snprintf(want, sizeof want, "http://h:1/v1/speak?model=aura-2-thalia-en&%s", t[i].query);
        assert_string_equal(url_of(p, &k), want);
        vg_buf extra = {0};
        p->ops->key_extra(p, &k, &extra);
        assert_string_equal(extra.data, t[i].query);
        vg_buf_free(&extra);
    }
    vg_buf extra = {0};
    p->ops->key_extra(p, &j, &extra);
    assert_string_equal(extra.data, "punctuate=true&smart_format=true");
    vg_buf_free(&extra);
    vg_buf_free(&url_buf);
    p->ops->destroy(p);
}

static void tts_body(void **state)
{
    vg_buf b = {0};
    vg_job j = tts_job("Say \"hi\"\n\xc3\xa9", "mp3");
    j.tts.instructions = "calm"; /* no Deepgram equivalent: not sent */
    assert_int_equal(vg_deepgram_tts_body(&j, &b), VG_OK);
    assert_string_equal(b.data, "{\"text\":\"Say \\\"hi\\\"\\n\xc3\xa9\"}");
    vg_buf_free(&b);
}

static void check_and_ops(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    char code[64], msg[256];
    static const char *tts_ok[] = {"wav", "pcm", "mp3", "opus", "aac", "flac"};
    for (size_t i = 0; i < 6; i++) {
        vg_job j = tts_job("x", tts_ok[i]);
        assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_OK);
    }
    vg_job j = tts_job("x", "ogg");
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_string_equal(msg, "deepgram supports audio formats wav, pcm, mp3, opus, aac, flac");
    j = tts_job("x", "mp3");
    j.tts.voice = "alloy";
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unknown_voice");
    j.tts.voice = "aura-2-thalia-en&model=x";
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    j.tts.voice = "aura-asteria-en";
    j.tts.speed = 1.5;
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_parameter");
    static const char *stt_ok[] = {"json", "text", "srt", "verbose_json", "vtt"};
    for (size_t i = 0; i < 5; i++) {
        j = stt_job(stt_ok[i]);
        assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_OK);
    }
    j = stt_job("diarized_json");
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_non_null(strstr(msg, "json, text, srt, verbose_json, vtt"));

    assert_string_equal(p->ops->type, "deepgram");
    assert_string_equal(p->ops->default_voice(p, ""), "aura-2-thalia-en");
    assert_string_equal(p->ops->default_voice(p, "es-ES"), "aura-2-celeste-es");
    assert_string_equal(p->ops->default_voice(p, "est"), "aura-2-thalia-en");
    assert_string_equal(p->ops->default_model(p, VG_KIND_STT), "nova-3");
    assert_string_equal(p->ops->default_model(p, VG_KIND_TTS), "");
    snprintf(c.voice, sizeof c.voice, "aura-2-apollo-en");
    assert_string_equal(p->ops->default_voice(p, "es"), "aura-2-apollo-en");
    assert_null(p->ops->voices(p));
    assert_true(p->ops->ready(p));
    p->ops->destroy(p);
}

static void constructor(void **state)
{
    vg_provider_conf c = conf_with("");
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_DG_KEY");
    setenv("VG_TEST_DG_KEY", "dg-secret-1", 1);
    vg_provider *p = provider(&c, NULL);
    assert_string_equal(p->api_key, "dg-secret-1");
    p->ops->destroy(p);
    unsetenv("VG_TEST_DG_KEY");
    char err[256];
    assert_int_equal(vg_provider_deepgram_new(&c, NULL, &p, err, sizeof err), -1);
    assert_string_equal(err, "providers.dg.api_key_env: VG_TEST_DG_KEY is not set");
    c = conf_with("ws://example.com");
    assert_int_equal(vg_provider_deepgram_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "providers.dg.base_url"));
}

/* ---- answers ---- */

typedef struct answer {
    long status;
    const char *ctype;
    const char *body;
    const char *retry_after;
    const char *upstream_id;
} answer;

static vg_presult parse(vg_provider *p, const vg_job *j, answer a)
{
    vg_http_call c = {.http_status = a.status};
    snprintf(c.content_type, sizeof c.content_type, "%s", a.ctype ? a.ctype : "");
    snprintf(c.retry_after, sizeof c.retry_after, "%s", a.retry_after ? a.retry_after : "");
    snprintf(c.upstream_id, sizeof c.upstream_id, "%s", a.upstream_id ? a.upstream_id : "");
    if (a.body)
        vg_buf_append(&c.resp_body, a.body, strlen(a.body));
    vg_presult res;
    vg_remote_result(p, j, &c, vg_deepgram_parse, &res);
    vg_buf_free(&c.resp_body);
    return res;
}

static void tts_answers(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = tts_job("x", "mp3");
    vg_presult r = parse(p, &j, (answer){200, "audio/mpeg", "ID3audio", NULL, "dg-1"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_memory_equal(r.body.data, "ID3audio", 8);
    assert_string_equal(r.upstream_id, "dg-1");
    vg_presult_free(&r);
    static const char *fmt[] = {"wav", "pcm", "mp3", "opus", "aac", "flac"};
    static const char *ct[] = {"audio/wav", "audio/pcm;rate=24000", "audio/mpeg", "audio/opus",
                               "audio/aac", "audio/flac"};
    for (size_t i = 0; i < 6; i++) {
        j = tts_job("x", fmt[i]);
        r = parse(p, &j, (answer){200, "application/octet-stream", "bytes"});
        assert_int_equal(r.status, VG_PR_OK);
        assert_string_equal(r.content_type, ct[i]);
        vg_presult_free(&r);
    }
    j = tts_job("x", "pcm"); /* headerless: the rate always travels with the type */
    r = parse(p, &j, (answer){200, "audio/l16", "pcm"});
    assert_string_equal(r.content_type, "audio/pcm;rate=24000");
    vg_presult_free(&r);
    r = parse(p, &j, (answer){200, "application/json", "{\"err_code\":\"x\"}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_null(r.body.data);
    r = parse(p, &j, (answer){200, "audio/wav", NULL});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    p->ops->destroy(p);
}

static void error_answers(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = stt_job("json");
    const char *json = "application/json";
    struct {
        long status;
        const char *body;
        vg_pr_status want;
        const char *message;
    } cases[] = {
        {400, "{\"err_code\":\"Bad Request\",\"err_msg\":\"Bad Request: failed to process audio: "
              "corrupt or unsupported data\",\"request_id\":\"r-400\"}",
         VG_PR_INPUT, "dg: 400 BadRequest: Bad Request: failed to process audio: corrupt or "
                      "unsupported data"},
        {400, "{\"category\":\"INVALID_QUERY_PARAMETER\",\"message\":\"No such model/language/"
              "tier combination found.\",\"details\":\"x\",\"request_id\":\"r-q\"}",
         VG_PR_INPUT, "dg: 400 INVALID_QUERY_PARAMETER: No such model/language/tier combination "
                      "found."},
        {401, "{\"err_code\":\"INVALID_AUTH\",\"err_msg\":\"Invalid credentials: key "
              "0123456789abcdef0123456789abcdef\",\"request_id\":\"r-401\"}",
         VG_PR_AUTH, "dg: 401 INVALID_AUTH"},
        {402, "{\"err_code\":\"ASR_PAYMENT_REQUIRED\",\"err_msg\":\"Project does not have enough "
              "credits\",\"request_id\":\"r-402\"}",
         VG_PR_QUOTA, "dg: 402 ASR_PAYMENT_REQUIRED"},
        {403, "{\"category\":\"INSUFFICIENT_PERMISSIONS\",\"message\":\"no access to nova-3\"}",
         VG_PR_AUTH, "dg: 403 INSUFFICIENT_PERMISSIONS"},
        {413, "{\"err_code\":\"PAYLOAD_TOO_LARGE\",\"err_msg\":\"Payload too large\"}",
         VG_PR_INPUT, "dg: 413 PAYLOAD_TOO_LARGE: Payload too large"},
        {415, "{\"err_code\":\"UNSUPPORTED_MEDIA_TYPE\",\"err_msg\":\"bad type\"}", VG_PR_INPUT,
         "dg: 415 UNSUPPORTED_MEDIA_TYPE: bad type"},
        {422, "{\"err_code\":\"Unprocessable\",\"err_msg\":\"audio upload incomplete\"}",
         VG_PR_INPUT, "dg: 422 Unprocessable: audio upload incomplete"},
        {429, "{\"err_code\":\"TOO_MANY_REQUESTS\",\"err_msg\":\"Too many requests\"}",
         VG_PR_RATE_LIMITED, "dg: 429 TOO_MANY_REQUESTS"},
        {500, "{\"err_code\":\"INTERNAL_SERVER_ERROR\",\"err_msg\":\"oops\"}", VG_PR_RETRYABLE,
         "dg: 500 INTERNAL_SERVER_ERROR"},
        {503, "<html>down</html>", VG_PR_RETRYABLE, "dg: 503"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        vg_presult r = parse(p, &j, (answer){cases[i].status, json, cases[i].body});
        assert_int_equal(r.status, cases[i].want);
        assert_string_equal(r.message, cases[i].message);
        assert_int_equal(r.http_status, cases[i].status);
        assert_null(r.body.data);
    }
    /* The header's request id wins; the body's fills in when it is absent. */
    vg_presult r = parse(p, &j, (answer){402, json, cases[3].body, NULL, "hdr-id"});
    assert_string_equal(r.upstream_id, "hdr-id");
    r = parse(p, &j, (answer){402, json, cases[3].body});
    assert_string_equal(r.upstream_id, "r-402");
    r = parse(p, &j, (answer){400, json, "{\"err_msg\":\"x\",\"request_id\":\"a\\r\\nb c\"}"});
    assert_string_equal(r.upstream_id, "abc");
    /* Key-like words in an input error are masked. */
    r = parse(p, &j, (answer){400, json, "{\"err_code\":\"Bad Request\",\"err_msg\":\"bad "
                                         "abcdefghijklmnopqrstuvwxyz0123\"}"});
    assert_string_equal(r.message, "dg: 400 BadRequest: bad ***");
    /* Retry-After on a 429, capped by cooldown_max_ms. */
    r = parse(p, &j, (answer){429, json, "{}", "3"});
    assert_int_equal(r.retry_after_ms, 3000);
    r = parse(p, &j, (answer){429, json, "{}", "100000"});
    assert_int_equal(r.retry_after_ms, 120000);
    p->ops->destroy(p);
}

/* A /v1/listen answer as Deepgram sends it (nova-3, smart_format,
 * detect_language), trimmed to what matters plus some noise. */
static const char *LISTEN =
    "{\"metadata\":{\"transaction_key\":\"deprecated\",\"request_id\":\"5d0a-body-id\","
    "\"sha256\":\"ab12\",\"created\":\"2026-07-23T08:00:00.000Z\",\"duration\":4.2501,"
    "\"channels\":1,\"models\":[\"2187e11a\"],\"model_info\":{\"2187e11a\":{\"name\":"
    "\"general-nova-3\",\"version\":\"2025-01-01.0\",\"arch\":\"nova-3\"}}},"
    "\"results\":{\"channels\":[{\"detected_language\":\"en\",\"language_confidence\":0.98,"
    "\"alternatives\":[{\"transcript\":\"Hello, world. Call me back tomorrow.\","
    "\"confidence\":0.99,\"words\":["
    "{\"word\":\"hello\",\"start\":0.08,\"end\":0.4,\"confidence\":0.99,\"punctuated_word\":\"Hello,\"},"
    "{\"word\":\"world\",\"start\":0.4,\"end\":0.88,\"confidence\":0.98,\"punctuated_word\":\"world.\"},"
    "{\"word\":\"call\",\"start\":2.0,\"end\":2.24,\"confidence\":0.97,\"punctuated_word\":\"Call\"},"
    "{\"word\":\"me\",\"start\":2.24,\"end\":2.4,\"confidence\":0.97,\"punctuated_word\":\"me\"},"
    "{\"word\":\"back\",\"start\":2.4,\"end\":2.72,\"confidence\":0.96,\"punctuated_word\":\"back\"},"
    "{\"word\":\"tomorrow\",\"start\":2.72,\"end\":3.3,\"confidence\":0.95,"
    "\"punctuated_word\":\"tomorrow.\"}]}]}]}}";

static vg_presult stt_ok(vg_provider *p, const char *fmt, const char *gran)
{
    vg_job j = stt_job(fmt);
    j.stt.granularities = gran;
    vg_presult r = parse(p, &j, (answer){200, "application/json", LISTEN});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.duration_ms, 4250);
    assert_string_equal(r.upstream_id, "5d0a-body-id");
    return r;
}

static void stt_answers(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    vg_presult r = stt_ok(p, "json", "");
    assert_string_equal(r.body.data, "{\"text\":\"Hello, world. Call me back tomorrow.\"}");
    vg_presult_free(&r);
    r = stt_ok(p, "text", "");
    assert_string_equal(r.body.data, "{\"text\":\"Hello, world. Call me back tomorrow.\"}");
    vg_presult_free(&r);
    r = stt_ok(p, "srt", "");
    assert_string_equal(r.body.data, "{\"text\":\"1\\n00:00:00,080 --> 00:00:00,880\\n"
                                     "Hello, world.\\n\\n2\\n00:00:02,000 --> 00:00:03,300\\n"
                                     "Call me back tomorrow.\\n\\n\"}");
    vg_presult_free(&r);
    r = stt_ok(p, "vtt", "");
    assert_string_equal(r.body.data, "{\"text\":\"WEBVTT\\n\\n00:00:00.080 --> 00:00:00.880\\n"
                                     "Hello, world.\\n\\n00:00:02.000 --> 00:00:03.300\\n"
                                     "Call me back tomorrow.\\n\\n\"}");
    vg_presult_free(&r);
    r = stt_ok(p, "verbose_json", "");
    assert_string_equal(r.body.data,
                        "{\"task\":\"transcribe\",\"language\":\"en\",\"duration\":4.25,"
                        "\"text\":\"Hello, world. Call me back tomorrow.\",\"segments\":["
                        "{\"id\":0,\"start\":0.08,\"end\":0.88,\"text\":\"Hello, world.\"},"
                        "{\"id\":1,\"start\":2,\"end\":3.3,\"text\":\"Call me back tomorrow.\"}]}");
    vg_presult_free(&r);
    r = stt_ok(p, "verbose_json", "word");
    cJSON *doc = cJSON_Parse(r.body.data);
    assert_null(cJSON_GetObjectItem(doc, "segments"));
    cJSON *words = cJSON_GetObjectItem(doc, "words");
    assert_int_equal(cJSON_GetArraySize(words), 6);
    char *w0 = cJSON_PrintUnformatted(cJSON_GetArrayItem(words, 0));
    assert_string_equal(w0, "{\"word\":\"hello\",\"start\":0.08,\"end\":0.4}");
    free(w0);
    cJSON_Delete(doc);
    vg_presult_free(&r);
    r = stt_ok(p, "verbose_json", "segment,word");
    doc = cJSON_Parse(r.body.data);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "segments")), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "words")), 6);
    cJSON_Delete(doc);
    vg_presult_free(&r);
    p->ops->destroy(p);
}

static void stt_edge_answers(void **state)
{
    vg_provider_conf c = conf_with("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = stt_job("srt");
    /* No words (silence, or a model without timings). */
    const char *silent = "{\"metadata\":{\"duration\":1.5},\"results\":{\"channels\":"
                         "[{\"alternatives\":[{\"transcript\":\"\",\"words\":[]}]}]}}";
    vg_presult r = parse(p, &j, (answer){200, "application/json", silent});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"\"}");
    assert_int_equal(r.duration_ms, 1500);
    vg_presult_free(&r);
    const char *nowords = "{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":"
                          "\"hi there\"}]}]},\"metadata\":{\"duration\":2}}";
    j = stt_job("vtt");
    r = parse(p, &j, (answer){200, "application/json", nowords});
    assert_string_equal(r.body.data, "{\"text\":\"WEBVTT\\n\\n00:00:00.000 --> 00:00:02.000\\n"
                                     "hi there\\n\\n\"}");
    vg_presult_free(&r);
    j = stt_job("verbose_json");
    j.stt.language = "de";
    r = parse(p, &j, (answer){200, "application/json", nowords});
    assert_string_equal(r.body.data, "{\"task\":\"transcribe\",\"language\":\"de\",\"duration\":2,"
                                     "\"text\":\"hi there\",\"segments\":[]}");
    vg_presult_free(&r);
    /* A long run of words without punctuation is cut at 16 words. */
    vg_buf many = {0};
    vg_buf_puts(&many, "{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":\"w\","
                       "\"words\":[");
    for (int i = 0; i < 20; i++)
        vg_buf_printf(&many, "%s{\"word\":\"w%d\",\"start\":%d.0,\"end\":%d.5}", i ? "," : "", i,
                      i, i);
    vg_buf_puts(&many, "]}]}]}}");
    j = stt_job("verbose_json");
    r = parse(p, &j, (answer){200, "application/json", many.data});
    assert_int_equal(r.status, VG_PR_OK);
    assert_int_equal(r.duration_ms, 0);
    {
        cJSON *doc = cJSON_Parse(r.body.data);
        cJSON *segs = cJSON_GetObjectItem(doc, "segments");
        assert_int_equal(cJSON_GetArraySize(segs), 2);
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(segs, 1), "text")->valuestring,
                            "w16 w17 w18 w19");
        cJSON_Delete(doc);
    }
    vg_presult_free(&r);
    vg_buf_free(&many);
    /* Garbage under 200 is never a transcript. */
    static const char *bad[] = {
        "not json", "", "[]", "{\"results\":{}}", "{\"results\":{\"channels\":[]}}",
        "{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":5}]}]}}",
        ("{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":\"a\",\"words\":"
         "[{\"word\":\"a\"}]}]}]}}"),
        "{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":\"a\",\"words\":7}]}]}}",
        "{\"results\":{\"channels\":[{\"alternatives\":[{\"transcript\":\"\\udc00\"}]}]}}",
    };
    j = stt_job("json");
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        r = parse(p, &j, (answer){200, "application/json", bad[i]});
        assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
        assert_string_equal(r.message, "dg: 200 answer has no transcript");
        assert_null(r.body.data);
    }
    p->ops->destroy(p);
}

/* ---- whole attempts through the engine ---- */

typedef struct seen {
    char target[512], auth[128], reqid[64], ctype[128];
    vg_buf body;
} seen;

static seen S;
static pthread_mutex_t S_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_deepgram(void *ud, const stub_req *r, vg_buf *out)
{
    pthread_mutex_lock(&S_mu);
    snprintf(S.target, sizeof S.target, "%s %.400s", r->method, r->target);
    stub_header(r, "authorization", S.auth, sizeof S.auth);
    stub_header(r, "x-request-id", S.reqid, sizeof S.reqid);
    stub_header(r, "content-type", S.ctype, sizeof S.ctype);
    vg_buf_reset(&S.body);
    vg_buf_append(&S.body, r->body.data ? r->body.data : "", r->body.len);
    pthread_mutex_unlock(&S_mu);
    if (!strncmp(r->target, "/v1/speak?", 10)) {
        stub_reply(out, 200, "Content-Type: audio/mpeg\r\ndg-request-id: dg-tts-1\r\n", "MP3!", 4);
    } else if (!strncmp(r->target, "/v1/listen?", 11)) {
        stub_reply(out, 200, "Content-Type: application/json\r\ndg-request-id: dg-stt-1\r\n",
                   LISTEN, strlen(LISTEN));
    } else {
        const char *b = "{\"err_code\":\"ASR_PAYMENT_REQUIRED\",\"err_msg\":\"no credit\"}";
        stub_reply(out, 402, "Content-Type: application/json\r\n", b, strlen(b));
    }
    return STUB_SEND;
}

static void end_to_end(void **state)
{
    stub_server *s = stub_start(fake_deepgram, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/", stub_port(s));
    vg_provider_conf c = conf_with(base);
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_DG_KEY");
    setenv("VG_TEST_DG_KEY", "dgkey-e2e", 1);
    vg_provider *p = provider(&c, e);

    vg_job j = tts_job("Hello", "mp3");
    vg_presult r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_memory_equal(r.body.data, "MP3!", 4);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_string_equal(r.upstream_id, "dg-tts-1");
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/speak?model=aura-2-thalia-en&encoding=mp3");
    assert_string_equal(S.auth, "Token dgkey-e2e");
    assert_string_equal(S.reqid, "req-1");
    assert_string_equal(S.ctype, "application/json");
    assert_string_equal(S.body.data, "{\"text\":\"Hello\"}");

    j = stt_job("srt");
    j.stt.language = "en";
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_non_null(strstr(r.body.data, "00:00:02,000 --> 00:00:03,300"));
    assert_int_equal(r.duration_ms, 4250);
    assert_string_equal(r.upstream_id, "dg-stt-1");
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/listen?model=nova-3&language=en&punctuate=true"
                                  "&smart_format=true");
    assert_string_equal(S.ctype, "audio/wav");
    assert_int_equal(S.body.len, 14); /* raw and binary-safe: a NUL inside */
    assert_memory_equal(S.body.data, "RIFF\0fakeaudio", 14);
    p->ops->destroy(p);

    /* Elsewhere: a 402, and no key configured means no Authorization. */
    c.api_key_env[0] = '\0';
    snprintf(c.base_url, sizeof c.base_url, "http://127.0.0.1:%u/other", stub_port(s));
    p = provider(&c, e);
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_QUOTA);
    assert_int_equal(r.http_status, 402);
    assert_string_equal(S.auth, "");
    p->ops->destroy(p);

    stub_stop(s);
    p = provider(&c, e);
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_CONNECT);
    assert_non_null(strstr(r.message, "dg: "));
    p->ops->destroy(p);
    vg_engine_free(e);
    vg_buf_free(&S.body);
    unsetenv("VG_TEST_DG_KEY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(urls),
        cmocka_unit_test(tts_body),
        cmocka_unit_test(check_and_ops),
        cmocka_unit_test(constructor),
        cmocka_unit_test(tts_answers),
        cmocka_unit_test(error_answers),
        cmocka_unit_test(stt_answers),
        cmocka_unit_test(stt_edge_answers),
        cmocka_unit_test(end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
