/* The openai provider and the remote helpers: request builders, the
 * classification of every answer in providers.md §1.3 (plus 2xx JSON or
 * garbage, invalid UTF-8, empty bodies, verbose_json durations),
 * Retry-After parsing, and whole attempts through the engine against
 * the in-test server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <pthread.h>

#include "http_stub.h"
#include "voxgate/provider.h"

static vg_provider_conf conf_named(const char *base)
{
    return stub_conf("openai", "openai", base);
}

static vg_provider *provider(const vg_provider_conf *c, vg_engine *e)
{
    vg_provider *p;
    char err[256];
    assert_int_equal(vg_provider_openai_new(c, e, &p, err, sizeof err), VG_OK);
    return p;
}

static vg_job tts_job(const char *text, const char *format)
{
    vg_job j = {.kind = VG_KIND_TTS, .request_id = "req-1", .timeout_ms = 5000};
    j.tts = (vg_tts_job){.text = text, .text_len = strlen(text), .voice = "nova",
                         .language = "", .model = "", .format = format, .speed = 1.0,
                         .instructions = ""};
    return j;
}

static vg_job stt_job(const char *response_format)
{
    vg_job j = {.kind = VG_KIND_STT, .request_id = "req-2", .timeout_ms = 5000};
    j.stt = (vg_stt_job){.audio = "RIFFfakeaudio", .audio_len = 13, .audio_type = "audio/wav",
                         .filename = "audio.wav", .language = "", .model = "", .prompt = "",
                         .response_format = response_format, .temperature = 0,
                         .granularities = ""};
    return j;
}

/* ---- builders ---- */

static void tts_body(void **state)
{
    vg_provider_conf c = conf_named("");
    vg_provider *p = provider(&c, NULL);
    vg_buf b = {0};
    vg_job j = tts_job("Say \"hi\"\n", "mp3");
    assert_int_equal(vg_openai_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "{\"model\":\"tts-1\",\"input\":\"Say \\\"hi\\\"\\n\","
                                "\"voice\":\"nova\",\"response_format\":\"mp3\"}");
    j.tts.model = "gpt-4o-mini-tts";
    j.tts.speed = 1.25;
    j.tts.instructions = "calm";
    j.tts.format = "wav";
    assert_int_equal(vg_openai_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "{\"model\":\"gpt-4o-mini-tts\",\"input\":\"Say \\\"hi\\\"\\n\","
                                "\"voice\":\"nova\",\"response_format\":\"wav\",\"speed\":1.25,"
                                "\"instructions\":\"calm\"}");
    snprintf(c.tts_model, sizeof c.tts_model, "tts-1-hd");
    j = tts_job("x", "pcm");
    assert_int_equal(vg_openai_tts_body(p, &j, &b), VG_OK);
    assert_non_null(strstr(b.data, "\"model\":\"tts-1-hd\""));
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static int collect(void *ud, const char *name, const char *value)
{
    vg_buf_printf(ud, "%s=%s\n", name, value);
    return VG_OK;
}

static void stt_fields(void **state)
{
    vg_provider_conf c = conf_named("");
    vg_provider *p = provider(&c, NULL);
    vg_buf b = {0};
    vg_job j = stt_job("json");
    assert_int_equal(vg_openai_stt_fields(p, &j, collect, &b), VG_OK);
    assert_string_equal(b.data, "model=whisper-1\nresponse_format=json\n");
    vg_buf_reset(&b);
    j = stt_job("verbose_json");
    j.stt.model = "gpt-4o-transcribe";
    j.stt.language = "en";
    j.stt.prompt = "names: Ann";
    j.stt.temperature = 0.2;
    j.stt.granularities = "segment,word";
    assert_int_equal(vg_openai_stt_fields(p, &j, collect, &b), VG_OK);
    assert_string_equal(b.data, "model=gpt-4o-transcribe\nlanguage=en\nprompt=names: Ann\n"
                                "response_format=verbose_json\ntemperature=0.2\n"
                                "timestamp_granularities[]=segment\n"
                                "timestamp_granularities[]=word\n");
    vg_buf_reset(&b);
    snprintf(c.stt_model, sizeof c.stt_model, "large-v3");
    j = stt_job("text");
    j.stt.granularities = "word";
    assert_int_equal(vg_openai_stt_fields(p, &j, collect, &b), VG_OK);
    assert_string_equal(b.data, "model=large-v3\nresponse_format=text\n"
                                "timestamp_granularities[]=word\n");
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static void check_and_ops(void **state)
{
    vg_provider_conf c = conf_named("");
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
    assert_string_equal(msg, "openai supports audio formats wav, pcm, mp3, opus, aac, flac");
    static const char *stt_ok[] = {"json", "text", "srt", "verbose_json", "vtt"};
    for (size_t i = 0; i < 5; i++) {
        j = stt_job(stt_ok[i]);
        assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_OK);
    }
    j = stt_job("diarized_json");
    assert_int_equal(vg_provider_check(p, &j, code, sizeof code, msg, sizeof msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_non_null(strstr(msg, "json, text, srt, verbose_json, vtt"));

    assert_string_equal(p->ops->type, "openai");
    assert_string_equal(p->ops->default_voice(p, "en"), "alloy");
    snprintf(c.voice, sizeof c.voice, "coral");
    assert_string_equal(p->ops->default_voice(p, ""), "coral");
    assert_null(p->ops->voices(p));
    assert_true(p->ops->ready(p));
    assert_null(p->api_key);
    p->ops->destroy(p);
}

static void constructor(void **state)
{
    vg_provider_conf c = conf_named("");
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_OPENAI_KEY");
    setenv("VG_TEST_OPENAI_KEY", "sk-test-123", 1);
    vg_provider *p = provider(&c, NULL);
    assert_string_equal(p->api_key, "sk-test-123");
    p->ops->destroy(p);
    unsetenv("VG_TEST_OPENAI_KEY");
    char err[256];
    assert_int_equal(vg_provider_openai_new(&c, NULL, &p, err, sizeof err), -1);
    assert_string_equal(err, "providers.openai.api_key_env: VG_TEST_OPENAI_KEY is not set");
    c = conf_named("ftp://example.com");
    assert_int_equal(vg_provider_openai_new(&c, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "providers.openai.base_url"));
    vg_buf url = {0};
    c = conf_named("http://h:1/v1//");
    p = provider(&c, NULL);
    assert_int_equal(vg_remote_url(p, "https://x", "/audio/speech", &url), VG_OK);
    assert_string_equal(url.data, "http://h:1/v1/audio/speech");
    c.base_url[0] = '\0';
    assert_int_equal(vg_remote_url(p, "https://api.openai.com/v1", "/a", &url), VG_OK);
    assert_string_equal(url.data, "https://api.openai.com/v1/a");
    vg_buf_free(&url);
    p->ops->destroy(p);
}

/* ---- parsing ---- */

/* Answers are written positionally, trailing fields left out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct answer {
    long status;
    const char *ctype;
    const char *body;
    size_t len;                   /* 0 = strlen(body) */
    const char *retry_after;
} answer;

static vg_presult parse(vg_provider *p, const vg_job *j, answer a)
{
    vg_http_call c = {.http_status = a.status};
    snprintf(c.content_type, sizeof c.content_type, "%s", a.ctype ? a.ctype : "");
    snprintf(c.retry_after, sizeof c.retry_after, "%s", a.retry_after ? a.retry_after : "");
    snprintf(c.upstream_id, sizeof c.upstream_id, "up-7");
    if (a.body)
        vg_buf_append(&c.resp_body, a.body, a.len ? a.len : strlen(a.body));
    vg_presult res;
    vg_remote_result(p, j, &c, vg_openai_parse, &res);
    vg_buf_free(&c.resp_body);
    return res;
}

static void tts_answers(void **state)
{
    vg_provider_conf c = conf_named("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = tts_job("x", "mp3");
    vg_presult r = parse(p, &j, (answer){200, "audio/mpeg", "ID3audio"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_int_equal(r.body.len, 8);
    assert_memory_equal(r.body.data, "ID3audio", 8);
    assert_string_equal(r.upstream_id, "up-7");
    assert_int_equal(r.http_status, 200);
    vg_presult_free(&r);

    static const char *fmt[] = {"mp3", "opus", "aac", "flac", "wav", "pcm"};
    static const char *ct[] = {"audio/mpeg", "audio/opus", "audio/aac", "audio/flac",
                               "audio/wav", "audio/pcm"};
    for (size_t i = 0; i < 6; i++) { /* octet-stream or nothing: the format's type */
        j = tts_job("x", fmt[i]);
        r = parse(p, &j, (answer){200, i % 2 ? "" : "application/octet-stream", "bytes"});
        assert_int_equal(r.status, VG_PR_OK);
        assert_string_equal(r.content_type, ct[i]);
        vg_presult_free(&r);
    }
    j = tts_job("x", "pcm");
    r = parse(p, &j, (answer){200, "audio/pcm;rate=22050", "pcm"});
    assert_string_equal(r.content_type, "audio/pcm;rate=22050");
    vg_presult_free(&r);

    r = parse(p, &j, (answer){200, "application/json", "{\"error\":{\"code\":\"x\"}}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_null(r.body.data);
    r = parse(p, &j, (answer){200, "text/html", "<html>"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "audio/mpeg", NULL});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_string_equal(r.message, "openai: 200 answer has no audio");
    p->ops->destroy(p);
}

static const char *err_body(const char *type, const char *code, const char *msg)
{
    static char b[512];
    snprintf(b, sizeof b, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,"
                          "\"code\":%s%s%s}}", msg, type, code ? "\"" : "", code ? code : "null",
             code ? "\"" : "");
    return b;
}

static void error_answers(void **state)
{
    vg_provider_conf c = conf_named("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = tts_job("x", "mp3");
    const char *json = "application/json";
    struct {
        long status;
        const char *type, *code, *msg;
        vg_pr_status want;
        const char *message;
    } cases[] = {
        {400, "invalid_request_error", NULL, "Invalid value for 'voice'.", VG_PR_INPUT,
         "openai: 400 invalid_request_error: Invalid value for 'voice'."},
        {401, "invalid_request_error", "invalid_api_key",
         "Incorrect API key provided: sk-abc123456789. You can find your key at...",
         VG_PR_AUTH, "openai: 401 invalid_api_key"},
        {403, "invalid_request_error", "unsupported_country_region_territory", "Country...",
         VG_PR_AUTH, "openai: 403 unsupported_country_region_territory"},
        {404, "invalid_request_error", "model_not_found", "The model `x` does not exist",
         VG_PR_INPUT, "openai: 404 model_not_found: The model `x` does not exist"},
        {408, "timeout", NULL, "Request timed out", VG_PR_RETRYABLE, "openai: 408 timeout"},
        {409, "conflict", NULL, "lock", VG_PR_RETRYABLE, "openai: 409 conflict"},
        {413, "invalid_request_error", NULL, "Maximum content size limit exceeded",
         VG_PR_INPUT, "openai: 413 invalid_request_error: Maximum content size limit exceeded"},
        {429, "requests", "rate_limit_exceeded", "Rate limit reached", VG_PR_RATE_LIMITED,
         "openai: 429 rate_limit_exceeded"},
        {429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota",
         VG_PR_QUOTA, "openai: 429 insufficient_quota"},
        {429, "insufficient_quota", NULL, "You exceeded your current quota", VG_PR_QUOTA,
         "openai: 429 insufficient_quota"},
        {500, "server_error", NULL, "The server had an error", VG_PR_RETRYABLE,
         "openai: 500 server_error"},
        {503, "server_error", "overloaded", "slow down", VG_PR_RETRYABLE,
         "openai: 503 overloaded"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        vg_presult r = parse(p, &j, (answer){cases[i].status, json,
                                             err_body(cases[i].type, cases[i].code, cases[i].msg)});
        assert_int_equal(r.status, cases[i].want);
        assert_string_equal(r.message, cases[i].message);
        assert_int_equal(r.http_status, cases[i].status);
        assert_null(r.body.data);
    }
    /* Not JSON at all (a proxy's page), and FastAPI's shape. */
    vg_presult r = parse(p, &j, (answer){502, "text/html", "<html>Bad gateway</html>"});
    assert_int_equal(r.status, VG_PR_RETRYABLE);
    assert_string_equal(r.message, "openai: 502");
    r = parse(p, &j, (answer){504, NULL, NULL});
    assert_int_equal(r.status, VG_PR_RETRYABLE);
    r = parse(p, &j, (answer){422, json, "{\"detail\":\"speed must be <= 4\"}"});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "openai: 422: speed must be <= 4");
    /* Key-like words in an input error are masked; control bytes dropped. */
    r = parse(p, &j, (answer){400, json, err_body("invalid_request_error", NULL,
                                                  "bad sk-live-key and "
                                                  "abcdefghijklmnopqrstuvwxyz0123\\n!")});
    assert_string_equal(r.message, "openai: 400 invalid_request_error: bad *** and ***!");
    /* Retry-After, capped by cooldown_max_ms. */
    r = parse(p, &j, (answer){429, json, err_body("requests", "rate_limit_exceeded", "x"), 0,
                              "2"});
    assert_int_equal(r.retry_after_ms, 2000);
    r = parse(p, &j, (answer){429, json, "{}", 0, "100000"});
    assert_int_equal(r.retry_after_ms, 120000);
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    p->ops->destroy(p);
}

static void stt_answers(void **state)
{
    vg_provider_conf c = conf_named("");
    vg_provider *p = provider(&c, NULL);
    vg_job j = stt_job("json");
    const char *json = "application/json";
    vg_presult r = parse(p, &j, (answer){200, json, "{\"text\":\"hi\",\"usage\":{}}"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"hi\",\"usage\":{}}");
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.duration_ms, 0);
    vg_presult_free(&r);
    static const char *bad_json[] = {"{\"txt\":\"hi\"}", "{\"text\":5}", "[\"hi\"]", "not json",
                                     "{\"text\":\"a\"} trailing", ""};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad_json); i++) {
        r = parse(p, &j, (answer){200, json, bad_json[i]});
        assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
        assert_string_equal(r.message, "openai: 200 answer has no transcript");
        assert_null(r.body.data);
    }
    j = stt_job("verbose_json");
    r = parse(p, &j, (answer){200, json, "{\"task\":\"transcribe\",\"language\":\"english\","
                                         "\"duration\":3.25,\"text\":\"hi\",\"segments\":[]}"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_int_equal(r.duration_ms, 3250);
    vg_presult_free(&r);
    r = parse(p, &j, (answer){200, json, "{\"text\":\"hi\",\"duration\":-1}"});
    assert_int_equal(r.duration_ms, 0);
    vg_presult_free(&r);
    j = stt_job("json");
    r = parse(p, &j, (answer){200, json, "{\"text\":\"hi\",\"usage\":{\"type\":\"duration\","
                                         "\"seconds\":2}}"});
    assert_int_equal(r.duration_ms, 2000);
    vg_presult_free(&r);

    static const char *fmts[] = {"text", "srt", "vtt"};
    for (size_t i = 0; i < 3; i++) {
        j = stt_job(fmts[i]);
        r = parse(p, &j, (answer){200, "text/plain; charset=utf-8", "1\n00:00 --> \"h\xc3\xa9\"\n"});
        assert_int_equal(r.status, VG_PR_OK);
        assert_string_equal(r.body.data, "{\"text\":\"1\\n00:00 --> \\\"h\xc3\xa9\\\"\\n\"}");
        assert_string_equal(r.content_type, "application/json");
        vg_presult_free(&r);
    }
    j = stt_job("text");
    r = parse(p, &j, (answer){200, "text/plain", "bad \xff byte"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_string_equal(r.message, "openai: 200 transcript is not UTF-8");
    r = parse(p, &j, (answer){200, "text/plain", "\xed\xa0\x80"}); /* a surrogate */
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "text/plain", NULL}); /* silence: an empty transcript */
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"\"}");
    vg_presult_free(&r);
    r = parse(p, &j, (answer){200, json, "\"json-encoded text\""});
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"json-encoded text\"}");
    vg_presult_free(&r);
    r = parse(p, &j, (answer){200, json, "{\"error\":{\"message\":\"x\"}}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){400, json, err_body("invalid_request_error", NULL, "bad audio")});
    assert_int_equal(r.status, VG_PR_INPUT);

    /* A transport failure never reaches parse. */
    vg_http_call t = {.curl_code = CURLE_OPERATION_TIMEDOUT};
    vg_remote_result(p, &j, &t, vg_openai_parse, &r);
    assert_int_equal(r.status, VG_PR_TIMEOUT);
    assert_string_equal(r.message, "openai: timed out");
    assert_int_equal(r.http_status, 0);
    p->ops->destroy(p);
}

/* ---- remote helpers ---- */

static void retry_after(void **state)
{
    const uint64_t now = 1784793600000ull; /* Thu, 23 Jul 2026 08:00:00 GMT */
    const uint64_t cap = 120000;
    assert_int_equal(vg_parse_retry_after("7", NULL, now, cap), 7000);
    assert_int_equal(vg_parse_retry_after(" 2 ", "", now, cap), 2000);
    assert_int_equal(vg_parse_retry_after("1.5", NULL, now, cap), 1500);
    assert_int_equal(vg_parse_retry_after("0.001", NULL, now, cap), 1);
    assert_int_equal(vg_parse_retry_after("7", "250", now, cap), 250);
    assert_int_equal(vg_parse_retry_after("7", "12.7", now, cap), 12);
    assert_int_equal(vg_parse_retry_after("7", "soon", now, cap), 7000);
    assert_int_equal(vg_parse_retry_after("7", "0", now, cap), 7000);
    assert_int_equal(vg_parse_retry_after("Thu, 23 Jul 2026 08:00:30 GMT", NULL, now, cap), 30000);
    assert_int_equal(vg_parse_retry_after("Thu, 23 Jul 2026 07:59:00 GMT", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("Fri, 24 Jul 2026 08:00:00 GMT", NULL, now, cap), cap);
    assert_int_equal(vg_parse_retry_after("garbage", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("-5", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("5s", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("1e3", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after(".", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("0", NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after(NULL, NULL, now, cap), 0);
    assert_int_equal(vg_parse_retry_after("121", NULL, now, cap), cap);
    assert_int_equal(vg_parse_retry_after("99999999999999999999999999", NULL, now, cap), cap);
    assert_int_equal(vg_parse_retry_after(NULL, "99999999999999999999999", now, cap), cap);
    assert_int_equal(vg_parse_retry_after(NULL, "-1", now, cap), 0);
}

static void classification(void **state)
{
    struct { long st; vg_pr_status want; } t[] = {
        {200, VG_PR_OK}, {204, VG_PR_OK}, {400, VG_PR_INPUT}, {401, VG_PR_AUTH},
        {402, VG_PR_INPUT}, {403, VG_PR_AUTH}, {404, VG_PR_INPUT}, {408, VG_PR_RETRYABLE},
        {409, VG_PR_RETRYABLE}, {413, VG_PR_INPUT}, {415, VG_PR_INPUT}, {422, VG_PR_INPUT},
        {429, VG_PR_RATE_LIMITED}, {500, VG_PR_RETRYABLE}, {502, VG_PR_RETRYABLE},
        {503, VG_PR_RETRYABLE}, {504, VG_PR_RETRYABLE}, {302, VG_PR_BAD_RESPONSE},
        {0, VG_PR_BAD_RESPONSE},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(t); i++)
        assert_int_equal(vg_pr_classify_http(t[i].st), t[i].want);
    struct { int code; vg_pr_status want; } tr[] = {
        {CURLE_OPERATION_TIMEDOUT, VG_PR_TIMEOUT}, {CURLE_COULDNT_CONNECT, VG_PR_CONNECT},
        {CURLE_COULDNT_RESOLVE_HOST, VG_PR_CONNECT}, {CURLE_SEND_ERROR, VG_PR_CONNECT},
        {CURLE_RECV_ERROR, VG_PR_CONNECT}, {CURLE_SSL_CONNECT_ERROR, VG_PR_CONNECT},
        {CURLE_PEER_FAILED_VERIFICATION, VG_PR_CONNECT}, {CURLE_GOT_NOTHING, VG_PR_CONNECT},
        {CURLE_WRITE_ERROR, VG_PR_BAD_RESPONSE}, {CURLE_ABORTED_BY_CALLBACK, VG_PR_INTERNAL},
        {CURLE_OUT_OF_MEMORY, VG_PR_INTERNAL},
    };
    vg_presult r;
    for (size_t i = 0; i < VG_ARRAY_LEN(tr); i++) {
        memset(&r, 0, sizeof r);
        assert_true(vg_pr_from_transport(&(vg_http_call){.curl_code = tr[i].code}, &r));
        assert_int_equal(r.status, tr[i].want);
    }
    assert_false(vg_pr_from_transport(&(vg_http_call){.curl_code = 0, .http_status = 500}, &r));
    assert_string_equal(vg_pr_status_name(VG_PR_OK), "ok");
    assert_string_equal(vg_pr_status_name(VG_PR_RATE_LIMITED), "rate_limited");
    assert_string_equal(vg_pr_status_name(VG_PR_BAD_RESPONSE), "bad_response");
    assert_string_equal(vg_pr_status_name(VG_PR_INTERNAL), "internal");
    assert_string_equal(vg_pr_status_name((vg_pr_status)99), "unknown");
}

/* ---- whole attempts through the engine ---- */

typedef struct seen {
    char target[256], auth[128], reqid[64], ctype[256];
    vg_buf body;
} seen;

static seen S;
static pthread_mutex_t S_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_openai(void *ud, const stub_req *r, vg_buf *out)
{
    pthread_mutex_lock(&S_mu);
    snprintf(S.target, sizeof S.target, "%s %.200s", r->method, r->target);
    stub_header(r, "authorization", S.auth, sizeof S.auth);
    stub_header(r, "x-request-id", S.reqid, sizeof S.reqid);
    stub_header(r, "content-type", S.ctype, sizeof S.ctype);
    vg_buf_reset(&S.body);
    vg_buf_append(&S.body, r->body.data ? r->body.data : "", r->body.len);
    pthread_mutex_unlock(&S_mu);
    if (!strcmp(r->target, "/v1/audio/speech")) {
        stub_reply(out, 200, "Content-Type: audio/mpeg\r\nx-request-id: req_abc\r\n", "MP3!", 4);
    } else if (!strcmp(r->target, "/v1/audio/transcriptions")) {
        const char *b = "{\"text\":\"hello\",\"duration\":1.5}";
        stub_reply(out, 200, "Content-Type: application/json\r\n", b, strlen(b));
    } else {
        const char *b = "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\","
                        "\"code\":\"rate_limit_exceeded\"}}";
        stub_reply(out, 429, "Content-Type: application/json\r\nretry-after-ms: 1500\r\n", b,
                   strlen(b));
    }
    return STUB_SEND;
}

static void end_to_end(void **state)
{
    stub_server *s = stub_start(fake_openai, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u/v1/", stub_port(s));
    vg_provider_conf c = conf_named(base);
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_OPENAI_KEY");
    setenv("VG_TEST_OPENAI_KEY", "sk-e2e", 1);
    vg_provider *p = provider(&c, e);

    vg_job j = tts_job("Hello", "mp3");
    vg_presult r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_int_equal(r.body.len, 4);
    assert_memory_equal(r.body.data, "MP3!", 4);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_string_equal(r.upstream_id, "req_abc");
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/audio/speech");
    assert_string_equal(S.auth, "Bearer sk-e2e");
    assert_string_equal(S.reqid, "req-1");
    assert_string_equal(S.ctype, "application/json");
    assert_string_equal(S.body.data, "{\"model\":\"tts-1\",\"input\":\"Hello\",\"voice\":\"nova\","
                                     "\"response_format\":\"mp3\"}");

    j = stt_job("verbose_json");
    j.stt.granularities = "segment,word";
    j.stt.language = "en";
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"hello\",\"duration\":1.5}");
    assert_int_equal(r.duration_ms, 1500);
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/audio/transcriptions");
    assert_non_null(strstr(S.ctype, "multipart/form-data; boundary="));
    assert_non_null(strstr(S.body.data, "name=\"file\"; filename=\"audio.wav\"\r\n"
                                        "Content-Type: audio/wav\r\n\r\nRIFFfakeaudio\r\n"));
    assert_non_null(strstr(S.body.data, "name=\"language\"\r\n\r\nen\r\n"));
    const char *g1 = strstr(S.body.data, "name=\"timestamp_granularities[]\"\r\n\r\nsegment\r\n");
    assert_non_null(g1);
    assert_non_null(strstr(g1, "name=\"timestamp_granularities[]\"\r\n\r\nword\r\n"));
    assert_null(strstr(S.body.data, "name=\"prompt\""));
    p->ops->destroy(p);

    /* No key: no Authorization; a 429 with retry-after-ms. */
    c.api_key_env[0] = '\0';
    snprintf(c.base_url, sizeof c.base_url, "http://127.0.0.1:%u/other", stub_port(s));
    p = provider(&c, e);
    j = tts_job("Hello", "wav");
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    assert_int_equal(r.http_status, 429);
    assert_int_equal(r.retry_after_ms, 1500);
    assert_string_equal(r.message, "openai: 429 rate_limit_exceeded");
    assert_string_equal(S.auth, "");
    p->ops->destroy(p);

    /* Nobody listening: a connect failure with the provider's name. */
    stub_stop(s);
    p = provider(&c, e);
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_CONNECT);
    assert_non_null(strstr(r.message, "openai: "));
    p->ops->destroy(p);
    vg_engine_free(e);
    vg_buf_free(&S.body);
    unsetenv("VG_TEST_OPENAI_KEY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tts_body),
        cmocka_unit_test(stt_fields),
        cmocka_unit_test(check_and_ops),
        cmocka_unit_test(constructor),
        cmocka_unit_test(tts_answers),
        cmocka_unit_test(error_answers),
        cmocka_unit_test(stt_answers),
        cmocka_unit_test(retry_after),
        cmocka_unit_test(classification),
        cmocka_unit_test(end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
