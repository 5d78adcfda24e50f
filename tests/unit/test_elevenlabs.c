/* The elevenlabs provider: the TTS URL and body (output_format,
 * voice_settings always sent), the STT fields, check() refusals, the
 * canonical key_extra, every error class of providers.md §4 (quota
 * 401, detail objects, lists and strings), 2xx garbage, STT
 * normalisation, and whole attempts through the engine against the
 * in-test server (xi-api-key, path voice id, multipart). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>

#include "http_stub.h"
#include "voxgate/provider.h"

/* Answers and jobs are written positionally, trailing fields left out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static vg_provider_conf el_conf(const char *base)
{
    return stub_conf("el", "elevenlabs", base);
}

static vg_provider *make(const vg_provider_conf *c, vg_engine *e)
{
    vg_provider *p;
    char err[256];
    assert_int_equal(vg_provider_elevenlabs_new(c, e, &p, err, sizeof err), VG_OK);
    return p;
}

static vg_job speech(const char *text, const char *format)
{
    vg_job j = {.kind = VG_KIND_TTS, .request_id = "rid-1", .timeout_ms = 5000};
    j.tts = (vg_tts_job){.text = text, .text_len = strlen(text), .voice = "VoiceAbc123",
                         .language = "", .model = "", .format = format, .speed = 1.0,
                         .instructions = ""};
    return j;
}

static vg_job transcript(const char *response_format)
{
    vg_job j = {.kind = VG_KIND_STT, .request_id = "rid-2", .timeout_ms = 5000};
    j.stt = (vg_stt_job){.audio = "RIFFsomeaudio", .audio_len = 13, .audio_type = "audio/wav",
                         .filename = "audio.wav", .language = "", .model = "", .prompt = "",
                         .response_format = response_format, .granularities = ""};
    return j;
}

/* ---- builders ---- */

static void tts_url(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    vg_buf u = {0};
    vg_job j = speech("x", "mp3");
    assert_int_equal(vg_elevenlabs_tts_url(p, &j, &u), VG_OK);
    assert_string_equal(u.data, "https://api.elevenlabs.io/v1/text-to-speech/VoiceAbc123"
                                "?output_format=mp3_44100_128");
    static const char *fmt[] = {"opus", "pcm", "wav"};
    static const char *out[] = {"opus_48000_64", "pcm_24000", "wav_24000"};
    for (size_t i = 0; i < 3; i++) {
        j = speech("x", fmt[i]);
        assert_int_equal(vg_elevenlabs_tts_url(p, &j, &u), VG_OK);
        assert_string_equal(strchr(u.data, '=') + 1, out[i]);
    }
    j = speech("x", "flac");
    assert_int_equal(vg_elevenlabs_tts_url(p, &j, &u), VG_EINVAL);
    j = speech("x", "mp3");
    j.tts.voice = "..";
    assert_int_equal(vg_elevenlabs_tts_url(p, &j, &u), VG_EINVAL);
    p->ops->destroy(p);

    c = el_conf("http://127.0.0.1:9/base//");
    p = make(&c, NULL);
    j = speech("x", "pcm");
    assert_int_equal(vg_elevenlabs_tts_url(p, &j, &u), VG_OK);
    assert_string_equal(u.data, "http://127.0.0.1:9/base/v1/text-to-speech/VoiceAbc123"
                                "?output_format=pcm_24000");
    vg_buf_free(&u);
    p->ops->destroy(p);
}

static void tts_body(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    vg_buf b = {0};
    vg_job j = speech("Say \"hi\"\n", "mp3");
    assert_int_equal(vg_elevenlabs_tts_body(p, &j, &b), VG_OK);
    assert_string_equal(b.data, "{\"text\":\"Say \\\"hi\\\"\\n\",\"model_id\":"
                                "\"eleven_multilingual_v2\",\"voice_settings\":{\"stability\":0.5,"
                                "\"similarity_boost\":0.75,\"style\":0,\"use_speaker_boost\":true,"
                                "\"speed\":1}}");
    j.tts.model = "eleven_flash_v2_5";
    j.tts.language = "de";
    j.tts.speed = 1.15;
    assert_int_equal(vg_elevenlabs_tts_body(p, &j, &b), VG_OK);
    assert_non_null(strstr(b.data, "\"model_id\":\"eleven_flash_v2_5\",\"language_code\":\"de\","
                                   "\"voice_settings\":{"));
    assert_non_null(strstr(b.data, "\"speed\":1.15}}"));
    snprintf(c.tts_model, sizeof c.tts_model, "eleven_turbo_v2_5");
    j = speech("x", "wav");
    assert_int_equal(vg_elevenlabs_tts_body(p, &j, &b), VG_OK);
    assert_non_null(strstr(b.data, "\"model_id\":\"eleven_turbo_v2_5\""));
    assert_null(strstr(b.data, "language_code"));
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static int collect(void *ud, const char *name, const char *value)
{
    return vg_buf_printf(ud, "%s=%s;", name, value);
}

static void stt_fields(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    vg_buf b = {0};
    vg_job j = transcript("json");
    j.stt.prompt = "ignored";
    assert_int_equal(vg_elevenlabs_stt_fields(p, &j, collect, &b), VG_OK);
    assert_string_equal(b.data, "model_id=scribe_v1;tag_audio_events=false;"
                                "timestamps_granularity=none;");
    vg_buf_reset(&b);
    j.stt.language = "en";
    j.stt.temperature = 0.4;
    j.stt.model = "scribe_v2";
    assert_int_equal(vg_elevenlabs_stt_fields(p, &j, collect, &b), VG_OK);
    assert_string_equal(b.data, "model_id=scribe_v2;language_code=en;temperature=0.4;"
                                "tag_audio_events=false;timestamps_granularity=none;");
    vg_buf_free(&b);
    p->ops->destroy(p);
}

/* ---- check, defaults, key_extra, constructor ---- */

static int run_check(vg_provider *p, const vg_job *j, char *code, char *msg)
{
    return vg_provider_check(p, j, code, 48, msg, 256);
}

static void checks(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    char code[48], msg[256];
    vg_job j = speech("x", "mp3");
    assert_int_equal(run_check(p, &j, code, msg), VG_OK);
    j.tts.format = "aac";
    assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_format");
    assert_string_equal(msg, "elevenlabs supports audio formats mp3, opus, pcm, wav");
    j = speech("x", "wav");
    j.tts.speed = 1.5;
    assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_speed");
    assert_string_equal(msg, "elevenlabs supports speed 0.7 to 1.2, not 1.5");
    j.tts.speed = 0.7;
    assert_int_equal(run_check(p, &j, code, msg), VG_OK);
    j.tts.speed = 0.5;
    assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
    j = speech("x", "pcm");
    j.tts.voice = "...";
    assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
    assert_string_equal(code, "unknown_voice");
    j = speech("x", "pcm");
    j.tts.instructions = "whisper";
    assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
    assert_string_equal(code, "unsupported_parameter");

    static const char *ok[] = {"json", "text"}, *no[] = {"srt", "vtt", "verbose_json"};
    for (size_t i = 0; i < 2; i++) {
        j = transcript(ok[i]);
        assert_int_equal(run_check(p, &j, code, msg), VG_OK);
    }
    for (size_t i = 0; i < 3; i++) {
        j = transcript(no[i]);
        assert_int_equal(run_check(p, &j, code, msg), VG_EINVAL);
        assert_string_equal(code, "unsupported_format");
        assert_string_equal(msg, "elevenlabs supports response formats json, text");
    }
    assert_string_equal(p->ops->type, "elevenlabs");
    assert_string_equal(p->ops->default_voice(p, "de"), "21m00Tcm4TlvDq8ikWAM");
    assert_string_equal(p->ops->default_model(p, VG_KIND_TTS), "eleven_multilingual_v2");
    assert_string_equal(p->ops->default_model(p, VG_KIND_STT), "scribe_v1");
    assert_null(p->ops->voices(p));
    assert_true(p->ops->ready(p));
    snprintf(c.voice, sizeof c.voice, "MyVoice42");
    assert_string_equal(p->ops->default_voice(p, ""), "MyVoice42");
    p->ops->destroy(p);
}

static void key_extra(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    vg_buf a = {0}, b = {0};
    vg_job j = speech("x", "pcm");
    p->ops->key_extra(p, &j, &a);
    assert_string_equal(a.data, "output_format=pcm_24000;voice_settings={\"stability\":0.5,"
                                "\"similarity_boost\":0.75,\"style\":0,\"use_speaker_boost\":true,"
                                "\"speed\":1}");
    j.tts.speed = 1.00;
    p->ops->key_extra(p, &j, &b); /* same settings, same bytes */
    assert_string_equal(a.data, b.data);
    vg_buf_reset(&b);
    j.tts.speed = 1.1;
    p->ops->key_extra(p, &j, &b);
    assert_string_not_equal(a.data, b.data);
    vg_buf_reset(&b);
    j = speech("x", "mp3");
    p->ops->key_extra(p, &j, &b);
    assert_non_null(strstr(b.data, "output_format=mp3_44100_128;"));
    vg_buf_reset(&b);
    j = transcript("text");
    p->ops->key_extra(p, &j, &b);
    assert_string_equal(b.data, "tag_audio_events=false;timestamps_granularity=none");
    vg_buf_free(&a);
    vg_buf_free(&b);
    p->ops->destroy(p);
}

static void constructor(void **state)
{
    vg_provider *p = (vg_provider *)1;
    char err[256];
    vg_provider_conf c = el_conf("ftp://x");
    assert_int_equal(vg_provider_elevenlabs_new(&c, NULL, &p, err, sizeof err), -1);
    assert_null(p);
    assert_string_equal(err, "providers.el.base_url: expected an http:// or https:// URL");
    c = el_conf("");
    snprintf(c.voice, sizeof c.voice, "bad voice");
    assert_int_equal(vg_provider_elevenlabs_new(&c, NULL, &p, err, sizeof err), -1);
    assert_string_equal(err, "providers.el.voice: not an ElevenLabs voice id");
    c = el_conf("");
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_EL_UNSET");
    unsetenv("VG_TEST_EL_UNSET");
    assert_int_equal(vg_provider_elevenlabs_new(&c, NULL, &p, err, sizeof err), -1);
    assert_string_equal(err, "providers.el.api_key_env: VG_TEST_EL_UNSET is not set");
    setenv("VG_TEST_EL_UNSET", "xi-key", 1);
    p = make(&c, NULL);
    assert_string_equal(p->api_key, "xi-key");
    p->ops->destroy(p);
    unsetenv("VG_TEST_EL_UNSET");
    assert_true(vg_provider_type_known("elevenlabs"));
    assert_non_null(strstr(vg_provider_types(), "elevenlabs"));
}

/* ---- answers ---- */

typedef struct answer {
    long status;
    const char *ctype;
    const char *body;
    const char *retry_after;
} answer;

static vg_presult parse(vg_provider *p, const vg_job *j, answer a)
{
    vg_http_call c = {.http_status = a.status};
    snprintf(c.content_type, sizeof c.content_type, "%s", a.ctype ? a.ctype : "");
    snprintf(c.retry_after, sizeof c.retry_after, "%s", a.retry_after ? a.retry_after : "");
    snprintf(c.upstream_id, sizeof c.upstream_id, "el-req-9");
    if (a.body)
        vg_buf_append(&c.resp_body, a.body, strlen(a.body));
    vg_presult res;
    vg_remote_result(p, j, &c, vg_elevenlabs_parse, &res);
    vg_buf_free(&c.resp_body);
    return res;
}

static void tts_answers(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    static const char *fmt[] = {"mp3", "opus", "pcm", "wav"};
    static const char *ct[] = {"audio/mpeg", "audio/opus", "audio/pcm;rate=24000", "audio/wav"};
    for (size_t i = 0; i < 4; i++) { /* whatever upstream says: the requested format's type */
        vg_job j = speech("x", fmt[i]);
        vg_presult r = parse(p, &j, (answer){200, i % 2 ? "audio/mpeg" : "", "bytes"});
        assert_int_equal(r.status, VG_PR_OK);
        assert_string_equal(r.content_type, ct[i]);
        assert_int_equal(r.body.len, 5);
        assert_string_equal(r.upstream_id, "el-req-9");
        vg_presult_free(&r);
    }
    vg_job j = speech("x", "mp3");
    vg_presult r = parse(p, &j, (answer){200, "application/json", "{\"detail\":{}}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_null(r.body.data);
    r = parse(p, &j, (answer){200, "text/plain", "hello"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "audio/mpeg", NULL});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_string_equal(r.message, "el: 200 answer has no audio");
    p->ops->destroy(p);
}

static const char *detail(const char *status, const char *message)
{
    static char b[512];
    snprintf(b, sizeof b, "{\"detail\":{\"status\":\"%s\",\"message\":\"%s\"}}", status, message);
    return b;
}

static void error_answers(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    vg_job j = speech("x", "mp3");
    const char *js = "application/json";

    vg_presult r = parse(p, &j, (answer){401, js, detail("quota_exceeded", "You have 3 credits")});
    assert_int_equal(r.status, VG_PR_QUOTA);
    assert_string_equal(r.message, "el: 401 quota_exceeded");

    r = parse(p, &j, (answer){401, js, detail("invalid_api_key", "Invalid key sk_0123456789abcd")});
    assert_int_equal(r.status, VG_PR_AUTH);
    assert_string_equal(r.message, "el: 401 invalid_api_key"); /* no upstream text */
    r = parse(p, &j, (answer){403, js, detail("missing_permissions", "key abcdef lacks tts")});
    assert_int_equal(r.status, VG_PR_AUTH);
    assert_null(strstr(r.message, "abcdef"));

    r = parse(p, &j, (answer){429, js, detail("too_many_concurrent_requests", "max 2"), "3"});
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    assert_int_equal(r.retry_after_ms, 3000);
    assert_string_equal(r.message, "el: 429 too_many_concurrent_requests");
    r = parse(p, &j, (answer){429, js, detail("system_busy", "busy")});
    assert_int_equal(r.status, VG_PR_RATE_LIMITED);
    assert_int_equal(r.retry_after_ms, 0);

    r = parse(p, &j, (answer){503, js, detail("server_overloaded", "later")});
    assert_int_equal(r.status, VG_PR_RETRYABLE);
    r = parse(p, &j, (answer){500, "text/html", "<html>oops</html>"});
    assert_int_equal(r.status, VG_PR_RETRYABLE);
    assert_string_equal(r.message, "el: 500");

    r = parse(p, &j, (answer){400, js, detail("max_character_limit_exceeded",
                                              "Text is too long\\u0007 (10001 > 10000)")});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message,
                        "el: 400 max_character_limit_exceeded: Text is too long (10001 > 10000)");
    r = parse(p, &j, (answer){404, js, detail("voice_not_found", "A voice with id AAAAAAAAAAAAAAAAAAAAAAAAAAAA was not found")});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "el: 404 voice_not_found: A voice with id *** was not found");

    r = parse(p, &j, (answer){422, js, "{\"detail\":[{\"loc\":[\"body\",\"text\"],"
                                       "\"msg\":\"field required\",\"type\":\"value_error.missing\"}]}"});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "el: 422 value_error.missing: text: field required");
    r = parse(p, &j, (answer){422, js, "{\"detail\":\"Unprocessable\"}"});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "el: 422: Unprocessable");
    r = parse(p, &j, (answer){400, "text/plain", "not json"});
    assert_int_equal(r.status, VG_PR_INPUT);
    assert_string_equal(r.message, "el: 400");
    assert_string_equal(r.upstream_id, "el-req-9");
    p->ops->destroy(p);
}

static void stt_answers(void **state)
{
    vg_provider_conf c = el_conf("");
    vg_provider *p = make(&c, NULL);
    const char *up = "{\"language_code\":\"en\",\"language_probability\":0.98,"
                     "\"text\":\"Hello \\\"world\\\"\",\"words\":[],\"audio_duration_secs\":2.25}";
    static const char *fmts[] = {"json", "text"};
    for (size_t i = 0; i < 2; i++) {
        vg_job j = transcript(fmts[i]);
        vg_presult r = parse(p, &j, (answer){200, "application/json", up});
        assert_int_equal(r.status, VG_PR_OK);
        assert_string_equal(r.body.data, "{\"text\":\"Hello \\\"world\\\"\"}");
        assert_string_equal(r.content_type, "application/json");
        assert_int_equal(r.duration_ms, 2250);
        vg_presult_free(&r);
    }
    vg_job j = transcript("json");
    vg_presult r = parse(p, &j, (answer){200, "application/json", "{\"words\":[]}"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    assert_string_equal(r.message, "el: 200 answer has no transcript");
    r = parse(p, &j, (answer){200, "text/plain", "just text"});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "application/json", NULL});
    assert_int_equal(r.status, VG_PR_BAD_RESPONSE);
    r = parse(p, &j, (answer){200, "application/json", "{\"text\":\"ok\"}"});
    assert_int_equal(r.status, VG_PR_OK);
    assert_int_equal(r.duration_ms, 0);
    vg_presult_free(&r);
    p->ops->destroy(p);
}

/* ---- whole attempts through the engine ---- */

typedef struct seen {
    char target[256], key[128], reqid[64], ctype[256];
    vg_buf body;
} seen;

static seen S;
static pthread_mutex_t S_mu = PTHREAD_MUTEX_INITIALIZER;

static int fake_el(void *ud, const stub_req *r, vg_buf *out)
{
    pthread_mutex_lock(&S_mu);
    snprintf(S.target, sizeof S.target, "%s %.200s", r->method, r->target);
    stub_header(r, "xi-api-key", S.key, sizeof S.key);
    stub_header(r, "x-request-id", S.reqid, sizeof S.reqid);
    stub_header(r, "content-type", S.ctype, sizeof S.ctype);
    vg_buf_reset(&S.body);
    vg_buf_append(&S.body, r->body.data ? r->body.data : "", r->body.len);
    pthread_mutex_unlock(&S_mu);
    if (!strncmp(r->target, "/v1/text-to-speech/VoiceAbc123?", 31)) {
        stub_reply(out, 200, "Content-Type: audio/mpeg\r\nrequest-id: el_abc\r\n", "MP3!", 4);
    } else if (!strcmp(r->target, "/v1/speech-to-text")) {
        const char *b = "{\"text\":\"hello\",\"language_code\":\"en\",\"audio_duration_secs\":1.5}";
        stub_reply(out, 200, "Content-Type: application/json\r\n", b, strlen(b));
    } else {
        const char *b = "{\"detail\":{\"status\":\"quota_exceeded\",\"message\":\"no credits\"}}";
        stub_reply(out, 401, "Content-Type: application/json\r\n", b, strlen(b));
    }
    return STUB_SEND;
}

static void end_to_end(void **state)
{
    stub_server *s = stub_start(fake_el, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", stub_port(s));
    vg_provider_conf c = el_conf(base);
    snprintf(c.api_key_env, sizeof c.api_key_env, "VG_TEST_EL_KEY");
    setenv("VG_TEST_EL_KEY", "xi-e2e-key", 1);
    vg_provider *p = make(&c, e);

    vg_job j = speech("Hello", "mp3");
    vg_presult r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_int_equal(r.body.len, 4);
    assert_memory_equal(r.body.data, "MP3!", 4);
    assert_string_equal(r.content_type, "audio/mpeg");
    assert_string_equal(r.upstream_id, "el_abc");
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/text-to-speech/VoiceAbc123?output_format=mp3_44100_128");
    assert_string_equal(S.key, "xi-e2e-key");
    assert_string_equal(S.reqid, "rid-1");
    assert_string_equal(S.ctype, "application/json");
    assert_non_null(strstr(S.body.data, "\"voice_settings\":{\"stability\":0.5,"));

    j = transcript("text");
    j.stt.language = "en";
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_OK);
    assert_string_equal(r.body.data, "{\"text\":\"hello\"}");
    assert_int_equal(r.duration_ms, 1500);
    vg_presult_free(&r);
    assert_string_equal(S.target, "POST /v1/speech-to-text");
    assert_non_null(strstr(S.ctype, "multipart/form-data; boundary="));
    assert_non_null(strstr(S.body.data, "name=\"file\"; filename=\"audio.wav\"\r\n"
                                        "Content-Type: audio/wav\r\n\r\nRIFFsomeaudio\r\n"));
    assert_non_null(strstr(S.body.data, "name=\"model_id\"\r\n\r\nscribe_v1\r\n"));
    assert_non_null(strstr(S.body.data, "name=\"language_code\"\r\n\r\nen\r\n"));
    p->ops->destroy(p);

    /* No key configured: no xi-api-key; another voice gets the quota 401. */
    c.api_key_env[0] = '\0';
    p = make(&c, e);
    j = speech("Hello", "wav");
    j.tts.voice = "Other";
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_QUOTA);
    assert_int_equal(r.http_status, 401);
    assert_string_equal(S.key, "");
    p->ops->destroy(p);

    stub_stop(s);
    p = make(&c, e);
    r = stub_attempt(p, &j);
    assert_int_equal(r.status, VG_PR_CONNECT);
    assert_non_null(strstr(r.message, "el: "));
    p->ops->destroy(p);
    vg_engine_free(e);
    vg_buf_free(&S.body);
    unsetenv("VG_TEST_EL_KEY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tts_url),      cmocka_unit_test(tts_body),
        cmocka_unit_test(stt_fields),   cmocka_unit_test(checks),
        cmocka_unit_test(key_extra),    cmocka_unit_test(constructor),
        cmocka_unit_test(tts_answers),  cmocka_unit_test(error_answers),
        cmocka_unit_test(stt_answers),  cmocka_unit_test(end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
