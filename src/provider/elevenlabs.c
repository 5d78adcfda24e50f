/* The `elevenlabs` provider (providers.md §4). TTS is POST
 * {base}/v1/text-to-speech/{voice_id}?output_format=... with a JSON body;
 * STT is POST {base}/v1/speech-to-text as multipart. The key goes in
 * xi-api-key. Errors are {"detail":{"status","message"}} (422: a FastAPI
 * list); a 401 "quota_exceeded" is out of credit, not a bad key.
 *
 * voice_settings are always sent, from fixed values here: without them
 * the voice's dashboard settings apply, which can change under a cached
 * key (§4.1). They and the output_format are this provider's key_extra. */
#include "voxgate/provider.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/entry.h"

#define DEFAULT_BASE "https://api.elevenlabs.io"
#define DEFAULT_VOICE "21m00Tcm4TlvDq8ikWAM" /* "Rachel", a premade voice every account has */
#define DEFAULT_TTS_MODEL "eleven_multilingual_v2"
#define DEFAULT_STT_MODEL "scribe_v1"
#define SPEED_MIN 0.7 /* voice_settings.speed bounds ElevenLabs accepts */
#define SPEED_MAX 1.2

/* voxgate format -> output_format and the media type we store. The rate
 * is pinned (24 kHz as OpenAI's pcm) so headerless pcm stays usable, and
 * no value needs a paid tier. aac and flac have no ElevenLabs form. */
static const struct el_format {
    const char *format, *output, *ctype;
} formats[] = {
    {"mp3", "mp3_44100_128", "audio/mpeg"},
    {"opus", "opus_48000_64", "audio/opus"},
    {"pcm", "pcm_24000", "audio/pcm;rate=24000"},
    {"wav", "wav_24000", "audio/wav"},
};

/* Only text comes back without timestamps; srt/vtt/verbose_json would
 * need word timings we do not ask for, so check() refuses them. */
static const char *const stt_formats[] = {"json", "text"};

static const struct el_format *format_of(const char *f)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(formats); i++)
        if (!strcmp(formats[i].format, f))
            return &formats[i];
    return NULL;
}

static const char *first_set(const char *a, const char *b, const char *dflt)
{
    if (a && *a)
        return a;
    return b && *b ? b : dflt;
}

/* ElevenLabs ids are [A-Za-z0-9]; the voxgate rule also allows "_.-".
 * A voice of dots only would become a "." or ".." path segment. */
static bool voice_ok(const char *v)
{
    size_t n = strlen(v);
    return n >= 1 && n <= 64 && strspn(v, ".") < n &&
           strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* ---- TTS ---- */

/* The voice_settings object, canonical: fixed order, "%.6g" speed (so
 * 1 and 1.0 are the same bytes). */
static int voice_settings(const vg_tts_job *t, vg_buf *out)
{
    return vg_buf_printf(out, "{\"stability\":0.5,\"similarity_boost\":0.75,\"style\":0,"
                              "\"use_speaker_boost\":true,\"speed\":%.6g}",
                         t->speed > 0 ? t->speed : 1.0);
}

int vg_elevenlabs_tts_url(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    const struct el_format *f = format_of(job->tts.format);
    if (!f || !voice_ok(job->tts.voice))
        return VG_EINVAL;
    vg_buf path = {0};
    int rc = vg_buf_printf(&path, "/v1/text-to-speech/%s?output_format=%s", job->tts.voice,
                           f->output);
    if (rc == VG_OK)
        rc = vg_remote_url(p, DEFAULT_BASE, path.data, out);
    vg_buf_free(&path);
    return rc;
}

int vg_elevenlabs_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    const vg_tts_job *t = &job->tts;
    vg_buf_reset(out);
    int rc = vg_buf_puts(out, "{\"text\":");
    if (rc == VG_OK)
        rc = vg_buf_json_str(out, t->text, t->text_len);
    const char *m = first_set(t->model, p->conf->tts_model, DEFAULT_TTS_MODEL);
    if (rc == VG_OK)
        rc = vg_buf_puts(out, ",\"model_id\":");
    if (rc == VG_OK)
        rc = vg_buf_json_str(out, m, strlen(m));
    /* multilingual_v2 takes no language_code (providers.md §4.1): it
     * detects the language from the text, and would refuse the field. */
    if (rc == VG_OK && *t->language && strcmp(m, "eleven_multilingual_v2") != 0) {
        rc = vg_buf_puts(out, ",\"language_code\":");
        if (rc == VG_OK)
            rc = vg_buf_json_str(out, t->language, strlen(t->language));
    }
    if (rc == VG_OK)
        rc = vg_buf_puts(out, ",\"voice_settings\":");
    if (rc == VG_OK)
        rc = voice_settings(t, out);
    if (rc == VG_OK)
        rc = vg_buf_puts(out, "}");
    return rc;
}

static int set_url_and_key(vg_provider *p, vg_http_call *c, const vg_buf *url)
{
    curl_easy_setopt(c->easy, CURLOPT_URL, url->data); /* curl copies it */
    return p->api_key ? vg_remote_header(c, "xi-api-key: %s", p->api_key) : VG_OK;
}

static int build_tts(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    vg_buf url = {0};
    int rc = vg_elevenlabs_tts_url(p, job, &url);
    if (rc == VG_OK)
        rc = set_url_and_key(p, c, &url);
    vg_buf_free(&url);
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Content-Type: application/json");
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Accept: audio/*");
    if (rc == VG_OK)
        rc = vg_elevenlabs_tts_body(p, job, &c->req_body);
    if (rc != VG_OK)
        return rc;
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->req_body.data);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req_body.len);
    return VG_OK;
}

/* ---- STT ---- */

/* tag_audio_events is pinned off: on, "(laughter)" and the like land in
 * the text, and its upstream default could change under a cached key.
 * No word timestamps: only the text is returned. The prompt has no
 * ElevenLabs form and is not sent. */
int vg_elevenlabs_stt_fields(const vg_provider *p, const vg_job *job,
                             int (*emit)(void *ud, const char *name, const char *value), void *ud)
{
    const vg_stt_job *s = &job->stt;
    int rc = emit(ud, "model_id", first_set(s->model, p->conf->stt_model, DEFAULT_STT_MODEL));
    if (rc == VG_OK && *s->language)
        rc = emit(ud, "language_code", s->language);
    if (rc == VG_OK && s->temperature > 0) {
        char num[32];
        snprintf(num, sizeof num, "%.6g", s->temperature);
        rc = emit(ud, "temperature", num);
    }
    if (rc == VG_OK)
        rc = emit(ud, "tag_audio_events", "false");
    if (rc == VG_OK)
        rc = emit(ud, "timestamps_granularity", "none");
    return rc;
}

static int add_text_part(void *mime, const char *name, const char *value)
{
    curl_mimepart *part = curl_mime_addpart(mime);
    bool ok = part && curl_mime_name(part, name) == CURLE_OK &&
              curl_mime_data(part, value, CURL_ZERO_TERMINATED) == CURLE_OK;
    return ok ? VG_OK : VG_ENOMEM;
}

/* The audio is copied into the part: simpler than streaming it, and
 * one copy of a request body at most 25 MB is affordable. */
static int add_file_part(curl_mime *mime, const vg_stt_job *s)
{
    curl_mimepart *part = curl_mime_addpart(mime);
    bool ok = part && curl_mime_name(part, "file") == CURLE_OK &&
              curl_mime_data(part, s->audio, s->audio_len) == CURLE_OK &&
              curl_mime_filename(part, first_set(s->filename, NULL, "audio")) == CURLE_OK &&
              curl_mime_type(part, first_set(s->audio_type, NULL, "application/octet-stream")) ==
                  CURLE_OK;
    return ok ? VG_OK : VG_ENOMEM;
}

static int build_stt(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    vg_buf url = {0};
    int rc = vg_remote_url(p, DEFAULT_BASE, "/v1/speech-to-text", &url);
    if (rc == VG_OK)
        rc = set_url_and_key(p, c, &url);
    vg_buf_free(&url);
    if (rc != VG_OK)
        return rc;
    c->mime = curl_mime_init(c->easy);
    if (!c->mime)
        return VG_ENOMEM;
    rc = add_file_part(c->mime, &job->stt);
    if (rc == VG_OK)
        rc = vg_elevenlabs_stt_fields(p, job, add_text_part, c->mime);
    return rc; /* the engine sets CURLOPT_MIMEPOST at submit */
}

/* ---- answers ---- */

static const char *string_in(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A 422 item {"loc":[...,"field"],"msg","type"} as "field: msg". */
static void validation_text(const cJSON *item, char *out, size_t cap)
{
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(item, "loc");
    const cJSON *last = cJSON_IsArray(loc) ? cJSON_GetArrayItem(loc, cJSON_GetArraySize(loc) - 1)
                                           : NULL;
    const char *msg = string_in(item, "msg");
    if (cJSON_IsString(last))
        snprintf(out, cap, "%s: %s", last->valuestring, msg ? msg : "invalid");
    else
        snprintf(out, cap, "%s", msg ? msg : "");
}

/* detail may be an object, a list or a string (§4.1: parse defensively).
 * Only the status code word reaches every message; the text only errors
 * about the input, as 401/403 texts can echo key fragments. */
static void parse_error(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = c->resp_body.len ? vg_json_parse_exact(c->resp_body.data, c->resp_body.len)
                                  : NULL;
    const cJSON *detail = cJSON_GetObjectItemCaseSensitive(doc, "detail");
    const cJSON *item = cJSON_IsArray(detail) ? cJSON_GetArrayItem(detail, 0) : detail;
    const char *code = cJSON_IsArray(detail) ? string_in(item, "type") : string_in(item, "status");
    char text[200] = "";
    if (cJSON_IsArray(detail))
        validation_text(item, text, sizeof text);
    else if (cJSON_IsString(detail))
        snprintf(text, sizeof text, "%s", detail->valuestring);
    else
        snprintf(text, sizeof text, "%s", string_in(item, "message") ? string_in(item, "message")
                                                                     : "");
    vg_remote_http_error(p, c, res, code);
    if (c->http_status == 401 && code && !strcmp(code, "quota_exceeded"))
        res->status = VG_PR_QUOTA;
    if (res->status == VG_PR_INPUT)
        vg_remote_add_detail(res, text);
    cJSON_Delete(doc);
}

static void bad_answer(vg_provider *p, vg_http_call *c, vg_presult *res, const char *why)
{
    res->status = VG_PR_BAD_RESPONSE;
    snprintf(res->message, sizeof res->message, "%s: %ld %s", p->conf->name, c->http_status, why);
}

/* audio_duration_secs when present and sane, else 0. */
static uint32_t audio_ms(const cJSON *doc)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(doc, "audio_duration_secs");
    if (!cJSON_IsNumber(d) || !isfinite(d->valuedouble) || d->valuedouble < 0 ||
        d->valuedouble > 4.0e6)
        return 0;
    return (uint32_t)llround(d->valuedouble * 1000.0);
}

/* Both response formats become {"text": ...}: the contract for text, and
 * OpenAI's json shape (the words and language fields are not passed on). */
static void parse_stt(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = c->resp_body.len ? vg_json_parse_exact(c->resp_body.data, c->resp_body.len)
                                  : NULL;
    const char *text = string_in(doc, "text");
    if (!cJSON_IsObject(doc) || !text) {
        bad_answer(p, c, res, "answer has no transcript");
    } else {
        vg_buf_reset(&res->body);
        if (vg_buf_puts(&res->body, "{\"text\":") != VG_OK ||
            vg_buf_json_str(&res->body, text, strlen(text)) != VG_OK ||
            vg_buf_puts(&res->body, "}") != VG_OK) {
            res->status = VG_PR_INTERNAL;
            snprintf(res->message, sizeof res->message, "%s: out of memory", p->conf->name);
        } else {
            res->status = VG_PR_OK;
            res->duration_ms = audio_ms(doc);
            snprintf(res->content_type, sizeof res->content_type, "application/json");
        }
    }
    cJSON_Delete(doc);
}

/* The stored type comes from the output_format we asked for, not the
 * upstream header (§4.1: unconfirmed for pcm, opus and wav; pcm needs
 * its rate). */
static void parse_tts(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    const struct el_format *f = format_of(job->tts.format);
    vg_remote_take_audio(p, c, res, f ? f->ctype : "application/octet-stream");
    if (res->status == VG_PR_OK && f)
        snprintf(res->content_type, sizeof res->content_type, "%s", f->ctype);
}

void vg_elevenlabs_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    if (res->status != VG_PR_OK)
        parse_error(p, c, res);
    else if (job->kind == VG_KIND_STT)
        parse_stt(p, c, res);
    else
        parse_tts(p, job, c, res);
}

/* ---- the provider ---- */

static int refuse(char *code, size_t codelen, const char *what, char *msg, size_t msglen,
                  const char *fmt, const char *arg)
{
    snprintf(code, codelen, "%s", what);
    snprintf(msg, msglen, fmt, arg);
    return VG_EINVAL;
}

static int check_tts(const vg_tts_job *t, char *code, size_t cl, char *msg, size_t ml)
{
    if (!format_of(t->format))
        return refuse(code, cl, "unsupported_format", msg, ml,
                      "elevenlabs supports audio formats %s", "mp3, opus, pcm, wav");
    if (!voice_ok(t->voice))
        return refuse(code, cl, "unknown_voice", msg, ml,
                      "'%.64s' is not an ElevenLabs voice id (letters and digits)", t->voice);
    if (t->speed < SPEED_MIN || t->speed > SPEED_MAX) {
        snprintf(code, cl, "unsupported_speed");
        snprintf(msg, ml, "elevenlabs supports speed %.1f to %.1f, not %.6g", SPEED_MIN,
                 SPEED_MAX, t->speed);
        return VG_EINVAL;
    }
    if (*t->instructions)
        return refuse(code, cl, "unsupported_parameter", msg, ml,
                      "elevenlabs takes no %s", "instructions");
    return VG_OK;
}

static int op_check(vg_provider *p, const vg_job *job, char *code, size_t codelen, char *msg,
                    size_t msglen)
{
    if (job->kind == VG_KIND_TTS)
        return check_tts(&job->tts, code, codelen, msg, msglen);
    const char *f = job->stt.response_format;
    if (!strcmp(f, stt_formats[0]) || !strcmp(f, stt_formats[1]))
        return VG_OK;
    return refuse(code, codelen, "unsupported_format", msg, msglen,
                  "elevenlabs supports response formats %s", "json, text");
}

/* Canonical, fixed order: output_format then voice_settings (TTS), the
 * pinned tag_audio_events (STT). */
static void op_key_extra(vg_provider *p, const vg_job *job, vg_buf *out)
{
    if (job->kind == VG_KIND_STT) {
        vg_buf_puts(out, "tag_audio_events=false;timestamps_granularity=none");
        return;
    }
    const struct el_format *f = format_of(job->tts.format);
    if (vg_buf_printf(out, "output_format=%s;voice_settings=", f ? f->output : "") == VG_OK)
        voice_settings(&job->tts, out);
}

static int op_start(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud)
{
    vg_remote_build_fn build = job->kind == VG_KIND_TTS ? build_tts : build_stt;
    return vg_remote_start(p, job, build, vg_elevenlabs_parse, done, ud);
}

static const char *op_default_voice(vg_provider *p, const char *language)
{
    return first_set(p->conf->voice, NULL, DEFAULT_VOICE); /* multilingual: any language */
}

static const char *op_default_model(vg_provider *p, vg_kind kind)
{
    return kind == VG_KIND_TTS ? DEFAULT_TTS_MODEL : DEFAULT_STT_MODEL;
}

static void *op_voices(vg_provider *p) { return NULL; } /* per account: no fixed list */
static bool op_ready(vg_provider *p) { return true; }

static void op_destroy(vg_provider *p)
{
    if (!p)
        return;
    if (p->api_key) /* wiped: freed memory can end up in a core dump */
        memset(p->api_key, 0, strlen(p->api_key));
    free(p->api_key);
    free(p);
}

static const vg_provider_ops elevenlabs_ops = {
    .type = "elevenlabs", .check = op_check, .start = op_start,
    .default_voice = op_default_voice, .default_model = op_default_model,
    .key_extra = op_key_extra, .voices = op_voices, .ready = op_ready, .destroy = op_destroy,
};

int vg_provider_elevenlabs_new(const vg_provider_conf *conf, struct vg_engine *e,
                               vg_provider **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *b = conf->base_url;
    if (*b && strncmp(b, "https://", 8) && strncmp(b, "http://", 7)) {
        snprintf(err, errlen, "providers.%s.base_url: expected an http:// or https:// URL",
                 conf->name);
        return -1;
    }
    if (conf->voice[0] && !voice_ok(conf->voice)) {
        snprintf(err, errlen, "providers.%s.voice: not an ElevenLabs voice id", conf->name);
        return -1;
    }
    char *key = NULL;
    if (vg_remote_key(conf, &key, err, errlen) != VG_OK)
        return -1;
    vg_provider *p = calloc(1, sizeof *p);
    if (!p) {
        free(key);
        snprintf(err, errlen, "providers.%s: out of memory", conf->name);
        return -1;
    }
    *p = (vg_provider){.ops = &elevenlabs_ops, .conf = conf, .engine = e, .api_key = key};
    *out = p;
    return VG_OK;
}
