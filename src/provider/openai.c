/* The `openai` provider: OpenAI's audio API and any server that speaks it
 * (speaches, whisper.cpp's server, LocalAI...), see providers.md §1-§2.
 * TTS is POST {base}/audio/speech with a JSON body; STT is POST
 * {base}/audio/transcriptions as multipart. Errors are classified by
 * status, then refined from {"error":{"type","code"}} (429
 * insufficient_quota is out of credit, not a rate limit). */
#include "voxgate/provider.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/entry.h"

#define DEFAULT_BASE "https://api.openai.com/v1"

static const char *const tts_formats[] = {"wav", "pcm", "mp3", "opus", "aac", "flac"};
static const char *const tts_types[] = {"audio/wav", "audio/pcm", "audio/mpeg", "audio/opus",
                                        "audio/aac", "audio/flac"};
static const char *const stt_formats[] = {"json", "text", "srt", "verbose_json", "vtt"};

static int find(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return (int)i;
    return -1;
}

static const char *pick(const char *a, const char *b, const char *dflt)
{
    return a && *a ? a : b && *b ? b : dflt;
}

/* ---- TTS ---- */

static int json_field(vg_buf *b, const char *name, const char *value)
{
    if (vg_buf_printf(b, "%s\"%s\":", b->len > 1 ? "," : "", name) != VG_OK)
        return VG_ENOMEM;
    return vg_buf_json_str(b, value, strlen(value));
}

/* speed goes out only when it is not OpenAI's default 1.0: the two mean
 * the same there, and compatible servers that refuse unknown fields
 * then still accept a plain request. */
int vg_openai_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    const vg_tts_job *t = &job->tts;
    vg_buf_reset(out);
    int rc = vg_buf_puts(out, "{");
    if (rc == VG_OK)
        rc = json_field(out, "model", pick(t->model, p->conf->tts_model, "tts-1"));
    if (rc == VG_OK) {
        rc = vg_buf_puts(out, ",\"input\":");
        if (rc == VG_OK)
            rc = vg_buf_json_str(out, t->text, t->text_len);
    }
    if (rc == VG_OK)
        rc = json_field(out, "voice", pick(t->voice, p->conf->voice, "alloy"));
    if (rc == VG_OK)
        rc = json_field(out, "response_format", t->format);
    if (rc == VG_OK && t->speed > 0 && t->speed != 1.0)
        rc = vg_buf_printf(out, ",\"speed\":%.6g", t->speed);
    if (rc == VG_OK && t->instructions && *t->instructions)
        rc = json_field(out, "instructions", t->instructions);
    if (rc == VG_OK)
        rc = vg_buf_puts(out, "}");
    return rc;
}

static int common_request(vg_provider *p, vg_http_call *c, const char *path)
{
    vg_buf url = {0};
    int rc = vg_remote_url(p, DEFAULT_BASE, path, &url);
    if (rc == VG_OK)
        curl_easy_setopt(c->easy, CURLOPT_URL, url.data); /* curl copies it */
    vg_buf_free(&url);
    /* A compatible server without keys gets no Authorization at all. */
    if (rc == VG_OK && p->api_key)
        rc = vg_remote_header(c, "Authorization: Bearer %s", p->api_key);
    return rc;
}

static int build_tts(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    int rc = common_request(p, c, "/audio/speech");
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Content-Type: application/json");
    if (rc == VG_OK)
        rc = vg_openai_tts_body(p, job, &c->req_body);
    if (rc != VG_OK)
        return rc;
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->req_body.data);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->req_body.len);
    return VG_OK;
}

/* ---- STT ---- */

int vg_openai_stt_fields(const vg_provider *p, const vg_job *job,
                         int (*emit)(void *ud, const char *name, const char *value), void *ud)
{
    const vg_stt_job *s = &job->stt;
    char num[32];
    int rc = emit(ud, "model", pick(s->model, p->conf->stt_model, "whisper-1"));
    if (rc == VG_OK && *s->language)
        rc = emit(ud, "language", s->language);
    if (rc == VG_OK && *s->prompt)
        rc = emit(ud, "prompt", s->prompt);
    if (rc == VG_OK)
        rc = emit(ud, "response_format", s->response_format);
    if (rc == VG_OK && s->temperature != 0) {
        snprintf(num, sizeof num, "%.6g", s->temperature);
        rc = emit(ud, "temperature", num);
    }
    /* The SDK's bracket form, once per value (providers.md §1.1). */
    for (const char *g = s->granularities; rc == VG_OK && *g;) {
        size_t n = strcspn(g, ",");
        char one[32];
        snprintf(one, sizeof one, "%.*s", (int)(n < sizeof one ? n : sizeof one - 1), g);
        if (one[0])
            rc = emit(ud, "timestamp_granularities[]", one);
        g += n + (g[n] == ',');
    }
    return rc;
}

static int mime_field(void *ud, const char *name, const char *value)
{
    curl_mimepart *part = curl_mime_addpart(ud);
    if (!part || curl_mime_name(part, name) != CURLE_OK ||
        curl_mime_data(part, value, CURL_ZERO_TERMINATED) != CURLE_OK)
        return VG_ENOMEM;
    return VG_OK;
}

/* The audio is streamed from the job (valid until done has run), not
 * copied into the mime: it can be 25 MB. */
typedef struct audio_reader {
    const char *data;
    size_t len, pos;
} audio_reader;

static size_t audio_read(char *buf, size_t size, size_t nitems, void *arg)
{
    audio_reader *r = arg;
    size_t n = size * nitems, left = r->len - r->pos;
    if (n > left)
        n = left;
    memcpy(buf, r->data + r->pos, n);
    r->pos += n;
    return n;
}

static int audio_seek(void *arg, curl_off_t offset, int origin)
{
    audio_reader *r = arg;
    curl_off_t base = origin == SEEK_CUR ? (curl_off_t)r->pos
                      : origin == SEEK_END ? (curl_off_t)r->len : 0;
    if (base + offset < 0 || base + offset > (curl_off_t)r->len)
        return CURL_SEEKFUNC_FAIL;
    r->pos = (size_t)(base + offset);
    return CURL_SEEKFUNC_OK;
}

static int file_part(curl_mime *mime, const vg_stt_job *s)
{
    curl_mimepart *part = curl_mime_addpart(mime);
    audio_reader *r = calloc(1, sizeof *r);
    if (!part || !r) {
        free(r);
        return VG_ENOMEM;
    }
    *r = (audio_reader){.data = s->audio, .len = s->audio_len};
    if (curl_mime_data_cb(part, (curl_off_t)s->audio_len, audio_read, audio_seek, free, r) !=
        CURLE_OK) {
        free(r);
        return VG_ENOMEM;
    }
    if (curl_mime_name(part, "file") != CURLE_OK ||
        curl_mime_filename(part, pick(s->filename, NULL, "audio")) != CURLE_OK ||
        curl_mime_type(part, pick(s->audio_type, NULL, "application/octet-stream")) != CURLE_OK)
        return VG_ENOMEM;
    return VG_OK;
}

static int build_stt(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    int rc = common_request(p, c, "/audio/transcriptions");
    if (rc != VG_OK)
        return rc;
    c->mime = curl_mime_init(c->easy);
    if (!c->mime)
        return VG_ENOMEM;
    rc = file_part(c->mime, &job->stt);
    if (rc == VG_OK)
        rc = vg_openai_stt_fields(p, job, mime_field, c->mime);
    return rc; /* the engine sets CURLOPT_MIMEPOST at submit */
}

/* ---- answers ---- */

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool is(const char *a, const char *b) { return a && !strcmp(a, b); }

/* Only the error's code or type reaches the message; its text only for
 * errors about the input (401/403 texts can echo key fragments). */
static void parse_error(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = c->resp_body.len ? vg_json_parse_exact(c->resp_body.data, c->resp_body.len)
                                  : NULL;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(doc, "error");
    const char *code = str_of(err, "code"), *type = str_of(err, "type");
    vg_remote_http_error(p, c, res, code ? code : type);
    if (c->http_status == 429 && (is(code, "insufficient_quota") || is(type, "insufficient_quota")))
        res->status = VG_PR_QUOTA;
    if (res->status == VG_PR_INPUT) /* FastAPI servers answer {"detail": "..."} */
        vg_remote_add_detail(res, err ? str_of(err, "message") : str_of(doc, "detail"));
    cJSON_Delete(doc);
}

static void bad(vg_provider *p, vg_http_call *c, vg_presult *res, const char *why)
{
    res->status = VG_PR_BAD_RESPONSE;
    snprintf(res->message, sizeof res->message, "%s: %ld %s", p->conf->name, c->http_status, why);
}

/* Audio length in ms from verbose_json's duration or a gpt-4o
 * usage {"type":"duration","seconds"}; 0 when absent or absurd. */
static uint32_t duration_ms(const cJSON *doc)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(doc, "duration");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(doc, "usage");
    if (!cJSON_IsNumber(d) && is(str_of(u, "type"), "duration"))
        d = cJSON_GetObjectItemCaseSensitive(u, "seconds");
    if (!cJSON_IsNumber(d) || !isfinite(d->valuedouble) || d->valuedouble < 0 ||
        d->valuedouble > 4.0e6)
        return 0;
    return (uint32_t)llround(d->valuedouble * 1000.0);
}

static void take_json(vg_http_call *c, vg_presult *res, const cJSON *doc)
{
    res->duration_ms = duration_ms(doc);
    res->status = VG_PR_OK;
    res->body = c->resp_body;
    memset(&c->resp_body, 0, sizeof c->resp_body);
    snprintf(res->content_type, sizeof res->content_type, "application/json");
}

static void wrap_text(vg_provider *p, vg_http_call *c, vg_presult *res, const char *s, size_t n)
{
    if (!vg_utf8_valid(s, n)) {
        bad(p, c, res, "transcript is not UTF-8");
        return;
    }
    vg_buf_reset(&res->body);
    if (vg_buf_puts(&res->body, "{\"text\":") != VG_OK ||
        vg_buf_json_str(&res->body, s, n) != VG_OK || vg_buf_puts(&res->body, "}") != VG_OK) {
        res->status = VG_PR_INTERNAL;
        snprintf(res->message, sizeof res->message, "%s: out of memory", p->conf->name);
        return;
    }
    res->status = VG_PR_OK;
    snprintf(res->content_type, sizeof res->content_type, "application/json");
}

static void parse_stt(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    const char *fmt = job->stt.response_format;
    bool want_json = is(fmt, "json") || is(fmt, "verbose_json");
    bool got_json = !strncasecmp(c->content_type, "application/json", 16);
    cJSON *doc = want_json || got_json
                     ? vg_json_parse_exact(c->resp_body.data ? c->resp_body.data : "",
                                           c->resp_body.len)
                     : NULL;
    if (cJSON_IsObject(doc) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "text")))
        take_json(c, res, doc);
    else if (got_json && cJSON_IsString(doc)) /* a text format, JSON-encoded by the server */
        wrap_text(p, c, res, doc->valuestring, strlen(doc->valuestring));
    else if (want_json || got_json)
        bad(p, c, res, "answer has no transcript");
    else
        wrap_text(p, c, res, c->resp_body.data ? c->resp_body.data : "", c->resp_body.len);
    cJSON_Delete(doc);
}

void vg_openai_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    if (res->status != VG_PR_OK) {
        parse_error(p, c, res);
        return;
    }
    if (job->kind == VG_KIND_STT) {
        parse_stt(p, job, c, res);
        return;
    }
    int i = find(tts_formats, VG_ARRAY_LEN(tts_formats), job->tts.format);
    vg_remote_take_audio(p, c, res, i < 0 ? "application/octet-stream" : tts_types[i]);
}

/* ---- the provider ---- */

static void list_of(char *msg, size_t len, const char *what, const char *const *l, size_t n)
{
    size_t o = (size_t)snprintf(msg, len, "openai supports %s ", what);
    for (size_t i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(msg + o, len - o, "%s%s", i ? ", " : "", l[i]);
}

static int op_check(vg_provider *p, const vg_job *job, char *code, size_t codelen, char *msg,
                    size_t msglen)
{
    bool tts = job->kind == VG_KIND_TTS;
    const char *f = tts ? job->tts.format : job->stt.response_format;
    if (tts ? find(tts_formats, VG_ARRAY_LEN(tts_formats), f) >= 0
            : find(stt_formats, VG_ARRAY_LEN(stt_formats), f) >= 0)
        return VG_OK;
    snprintf(code, codelen, "unsupported_format");
    if (tts)
        list_of(msg, msglen, "audio formats", tts_formats, VG_ARRAY_LEN(tts_formats));
    else
        list_of(msg, msglen, "response formats", stt_formats, VG_ARRAY_LEN(stt_formats));
    return VG_EINVAL;
}

static int op_start(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud)
{
    return vg_remote_start(p, job, job->kind == VG_KIND_TTS ? build_tts : build_stt,
                           vg_openai_parse, done, ud);
}

static const char *op_default_voice(vg_provider *p, const char *language)
{
    return p->conf->voice[0] ? p->conf->voice : "alloy";
}

static const char *op_default_model(vg_provider *p, vg_kind kind)
{
    return kind == VG_KIND_TTS ? "tts-1" : "whisper-1";
}

static void *op_voices(vg_provider *p) { return NULL; }
static bool op_ready(vg_provider *p) { return true; }

static const vg_provider_ops openai_ops = {
    .type = "openai", .check = op_check, .start = op_start,
    .default_voice = op_default_voice, .default_model = op_default_model, .voices = op_voices,
    .ready = op_ready, .destroy = vg_remote_provider_free,
};

int vg_provider_openai_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                           char *err, size_t errlen)
{
    return vg_remote_provider_new(conf, e, &openai_ops, out, err, errlen);
}
