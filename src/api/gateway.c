/* The gateway (SPEC §5 "Gateway API"): voxgate calls the provider.
 * /v1/tts, /v1/stt and the OpenAI-compatible /v1/audio/speech and
 * /v1/audio/transcriptions share one path: the request becomes one
 * canonical job per provider of its chain (defaults filled in), each with
 * its cache key; L1 then L2 are asked under every key; on a miss the
 * request joins or leads a single flight; the leader runs the chain
 * (gw_run.c) and stores the result; every member answers its own client
 * in its own API's shape. The HTTP worker never waits for a provider:
 * the connection is parked (vg_req_defer) until the flight ends or the
 * member's own deadline passes. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api.h"
#include "gateway.h"
#include "tiers.h"
#include "voxgate/audio.h"
#include "voxgate/entry.h"
#include "voxgate/log.h"
#include "voxgate/multipart.h"
#include "voxgate/sigv4.h"

/* ---- errors in the caller's API shape ---- */

static bool openai_shape(gw_api api) { return api == GW_SPEECH || api == GW_TRANSCRIBE; }

static const char *openai_type(unsigned status)
{
    return status == 401 ? "authentication_error" : status == 403 ? "permission_error"
         : status == 404 ? "not_found_error" : status == 429 ? "rate_limit_exceeded"
         : status < 500 ? "invalid_request_error" : "server_error";
}

/* OpenAI's {"error":{"message","type","param","code"}} (providers.md
 * §1.3) plus our request_id; the SDKs read message, type and code. */
void gw_reply_error(vg_req *r, gw_api api, unsigned status, const char *code,
                    const vg_header *h, size_t nh, const char *msg)
{
    if (!openai_shape(api)) {
        vg_reply_error_h(r, status, code, h, nh, "%s", msg);
        return;
    }
    vg_buf b = {0};
    vg_buf_puts(&b, "{\"error\":{\"message\":");
    vg_buf_json_str(&b, msg, strlen(msg));
    vg_buf_printf(&b, ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\",\"request_id\":",
                  openai_type(status), code);
    vg_buf_json_str(&b, vg_req_id(r), strlen(vg_req_id(r)));
    vg_buf_puts(&b, "}}");
    vg_header all[4];
    size_t n = 0;
    for (size_t i = 0; i < nh && n < 3; i++)
        all[n++] = h[i];
    /* Our own 4xx would fail again: tell the SDKs not to retry it. */
    all[n++] = (vg_header){"x-should-retry", status < 500 && status != 429 ? "false" : NULL};
    vg_reply_buf(r, status, "application/json", &b, all, n);
    vg_buf_free(&b);
}

/* ---- request parsing into a job ---- */

typedef struct perr {
    unsigned status;
    char code[48];    /* a copy: a provider's check() writes it on the stack */
    char msg[300];
} perr;

static bool bad(perr *e, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool bad(perr *e, unsigned status, const char *code, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

/* Count UTF-8 code points; -1 when not valid UTF-8 (or it holds a NUL). */
static long utf8_count(const char *s, size_t n)
{
    long count = 0;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
                   : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || *p == 0 || (size_t)(end - p) < len)
            return -1;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                return -1;
        p += len;
        count++;
    }
    return count;
}

static bool copy_ident(perr *e, const char *what, const char *v, char *out, size_t cap)
{
    if (!vg_ident_valid(v) || strlen(v) >= cap)
        return bad(e, 400, "invalid_parameter", "%s must match [A-Za-z0-9_.-]{1,64}", what);
    snprintf(out, cap, "%s", v);
    return true;
}

/* A JSON member that must be a string when present; NULL when absent. */
static bool json_str(perr *e, const cJSON *doc, const char *name, const char **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, name);
    *out = NULL;
    if (!it || cJSON_IsNull(it))
        return true;
    if (!cJSON_IsString(it))
        return bad(e, 400, "invalid_parameter", "%s must be a string", name);
    *out = it->valuestring;
    return true;
}

static bool json_num(perr *e, const cJSON *doc, const char *name, double lo, double hi,
                     double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!it || cJSON_IsNull(it))
        return true;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi)
        return bad(e, 400, "invalid_parameter", "%s must be a number from %g to %g", name, lo,
                   hi);
    *out = it->valuedouble;
    return true;
}

static const char *const tts_formats[] = {"wav", "pcm", "mp3", "opus", "aac", "flac"};
static const char *const stt_formats[] = {"json", "text", "srt", "verbose_json", "vtt"};

static bool one_of(const char *v, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v, set[i]))
            return true;
    return false;
}

static bool text_field(vg_app *app, perr *e, const char *name, const char *v, gw_job *j)
{
    if (!v)
        return bad(e, 400, "missing_parameter", "%s is required", name);
    size_t n = strlen(v);
    long chars = utf8_count(v, n);
    if (chars <= 0)
        return bad(e, 400, "invalid_parameter", "%s must be non-empty UTF-8 text", name);
    if ((uint64_t)chars > app->cfg->limits.max_tts_chars)
        return bad(e, 413, "text_too_long", "%s is over %u characters", name,
                   app->cfg->limits.max_tts_chars);
    j->text = strdup(v);
    j->text_len = n;
    return j->text != NULL || bad(e, 503, "out_of_memory", "cannot hold the text");
}

static bool opt_text(perr *e, const char *name, const char *v, char **out)
{
    if (v && utf8_count(v, strlen(v)) < 0)
        return bad(e, 400, "invalid_parameter", "%s must be UTF-8 text", name);
    *out = strdup(v ? v : "");
    return *out != NULL || bad(e, 503, "out_of_memory", "out of memory");
}

/* /v1/tts {text, voice?, language?, format?, provider?, model?, speed?, instructions?} */
static bool parse_tts(vg_app *app, const cJSON *doc, gw_job *j, perr *e)
{
    static const char *const known[] = {"text", "voice", "language", "format", "provider",
                                        "model", "speed", "instructions"};
    for (const cJSON *c = doc->child; c; c = c->next)
        if (!one_of(c->string, known, VG_ARRAY_LEN(known)))
            return bad(e, 400, "unknown_field", "unknown field '%.64s' (known: text, voice, "
                       "language, format, provider, model, speed, instructions)", c->string);
    const char *text, *voice, *lang, *fmt, *prov, *model, *instr;
    if (!json_str(e, doc, "text", &text) || !json_str(e, doc, "voice", &voice) ||
        !json_str(e, doc, "language", &lang) || !json_str(e, doc, "format", &fmt) ||
        !json_str(e, doc, "provider", &prov) || !json_str(e, doc, "model", &model) ||
        !json_str(e, doc, "instructions", &instr) ||
        !json_num(e, doc, "speed", 0.25, 4.0, &j->speed) ||
        !text_field(app, e, "text", text, j) || !opt_text(e, "instructions", instr, &j->instructions))
        return false;
    return (!voice || copy_ident(e, "voice", voice, j->voice, sizeof j->voice)) &&
           (!lang || copy_ident(e, "language", lang, j->language, sizeof j->language)) &&
           (!prov || copy_ident(e, "provider", prov, j->provider, sizeof j->provider)) &&
           (!model || copy_ident(e, "model", model, j->model, sizeof j->model)) &&
           (!fmt || copy_ident(e, "format", fmt, j->format, sizeof j->format));
}

/* /v1/audio/speech as OpenAI: {model, input, voice (string or {id}),
 * instructions?, response_format? (mp3), speed?, stream_format?}. Other
 * fields are ignored (newer SDKs add some); they are not sent upstream
 * either, so they cannot change the output. */
static bool parse_speech(vg_app *app, const cJSON *doc, gw_job *j, perr *e)
{
    const char *input, *model, *fmt, *instr, *sf;
    if (!json_str(e, doc, "input", &input) || !json_str(e, doc, "model", &model) ||
        !json_str(e, doc, "response_format", &fmt) || !json_str(e, doc, "instructions", &instr) ||
        !json_str(e, doc, "stream_format", &sf) ||
        !json_num(e, doc, "speed", 0.25, 4.0, &j->speed))
        return false;
    if (!model)
        return bad(e, 400, "missing_parameter", "model is required");
    if (sf && strcmp(sf, "audio"))
        return bad(e, 400, "unsupported_stream_format", "stream_format must be \"audio\"");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "voice");
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "id");
    if (!cJSON_IsString(v))
        return bad(e, 400, "missing_parameter", "voice is required (a name or {\"id\": ...})");
    return text_field(app, e, "input", input, j) &&
           opt_text(e, "instructions", instr, &j->instructions) &&
           copy_ident(e, "voice", v->valuestring, j->voice, sizeof j->voice) &&
           copy_ident(e, "model", model, j->model, sizeof j->model) &&
           (!fmt || copy_ident(e, "response_format", fmt, j->format, sizeof j->format));
}

static bool parse_tts_body(vg_req *r, gw_api api, gw_job *j, perr *e)
{
    size_t n;
    const char *body = vg_req_body(r, &n);
    cJSON *doc = n ? vg_json_parse_exact(body, n) : NULL;
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return bad(e, 400, "invalid_json", "the body must be one JSON object");
    }
    j->speed = 1.0;
    bool ok = api == GW_TTS ? parse_tts(vg_req_app(r), doc, j, e)
                            : parse_speech(vg_req_app(r), doc, j, e);
    cJSON_Delete(doc);
    if (ok && !j->format[0])
        snprintf(j->format, sizeof j->format, "%s", api == GW_TTS ? "wav" : "mp3");
    if (ok && !one_of(j->format, tts_formats, VG_ARRAY_LEN(tts_formats)))
        return bad(e, 400, "unsupported_format",
                   "format '%s' is not one of wav, pcm, mp3, opus, aac, flac", j->format);
    return ok;
}

/* The audio of an STT request: its container is sniffed from the bytes
 * (a declared type is only a hint), so what is not audio never reaches
 * a provider. */
static bool set_audio(gw_job *j, const char *p, size_t n, perr *e)
{
    if (!n)
        return bad(e, 400, "missing_body", "no audio: send the audio bytes as the body");
    const vg_audio_type *t = vg_audio_sniff(p, n);
    if (!t)
        return bad(e, 415, "unsupported_media_type",
                   "the body is not audio voxgate recognises (wav, mp3, ogg/opus, flac, "
                   "m4a/mp4, webm)");
    j->audio_type = t;
    if (vg_buf_append(&j->audio, p, n) != VG_OK)
        return bad(e, 503, "out_of_memory", "cannot hold the audio");
    return true;
}

static bool mp_field(const vg_mp_part *parts, size_t n, const char *name, char *out, size_t cap,
                     perr *e)
{
    const vg_mp_part *p = vg_mp_find(parts, n, name);
    out[0] = '\0';
    if (!p)
        return true;
    if (p->len >= cap || memchr(p->data, '\0', p->len) || utf8_count(p->data, p->len) < 0)
        return bad(e, 400, "invalid_parameter", "%s is too long or not text", name);
    memcpy(out, p->data, p->len);
    out[p->len] = '\0';
    return true;
}

static bool parse_float_field(const char *v, double lo, double hi, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end || !isfinite(d) || d < lo || d > hi)
        return false;
    *out = d;
    return true;
}

/* timestamp_granularities[] values, deduplicated and sorted. */
static bool granularities(const vg_mp_part *parts, size_t n, gw_job *j, perr *e)
{
    bool seg = false, word = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(parts[i].name, "timestamp_granularities[]") &&
            strcmp(parts[i].name, "timestamp_granularities"))
            continue;
        if (parts[i].len == 7 && !memcmp(parts[i].data, "segment", 7))
            seg = true;
        else if (parts[i].len == 4 && !memcmp(parts[i].data, "word", 4))
            word = true;
        else
            return bad(e, 400, "invalid_parameter",
                       "timestamp_granularities[] values are segment and word");
    }
    snprintf(j->granularities, sizeof j->granularities, "%s%s%s", seg ? "segment" : "",
             seg && word ? "," : "", word ? "word" : "");
    if (j->granularities[0] && strcmp(j->response_format, "verbose_json"))
        return bad(e, 400, "invalid_parameter",
                   "timestamp_granularities[] needs response_format verbose_json");
    return true;
}

/* The form fields of /v1/audio/transcriptions (OpenAI's names). */
static bool transcribe_fields(const vg_mp_part *parts, size_t n, gw_job *j, perr *e)
{
    char model[65], lang[65], fmt[16], temp[32], stream[8];
    char *prompt = malloc(4096);
    if (!prompt)
        return bad(e, 503, "out_of_memory", "out of memory");
    bool ok = mp_field(parts, n, "model", model, sizeof model, e) &&
              mp_field(parts, n, "language", lang, sizeof lang, e) &&
              mp_field(parts, n, "response_format", fmt, sizeof fmt, e) &&
              mp_field(parts, n, "temperature", temp, sizeof temp, e) &&
              mp_field(parts, n, "stream", stream, sizeof stream, e) &&
              mp_field(parts, n, "prompt", prompt, 4096, e);
    if (ok) {
        j->prompt = prompt;
        prompt = NULL;
    }
    free(prompt);
    if (!ok)
        return false;
    if (!model[0])
        return bad(e, 400, "missing_parameter", "model is required");
    if (stream[0] && strcmp(stream, "false"))
        return bad(e, 400, "unsupported_parameter", "stream is not supported; omit it");
    if (temp[0] && !parse_float_field(temp, 0, 1, &j->temperature))
        return bad(e, 400, "invalid_parameter", "temperature must be a number from 0 to 1");
    if (fmt[0])
        snprintf(j->response_format, sizeof j->response_format, "%s", fmt);
    return copy_ident(e, "model", model, j->model, sizeof j->model) &&
           (!lang[0] || copy_ident(e, "language", lang, j->language, sizeof j->language)) &&
           granularities(parts, n, j, e);
}

static bool parse_multipart(vg_req *r, gw_api api, gw_job *j, perr *e)
{
    char boundary[80], err[160];
    size_t n, np = 0;
    const char *body = vg_req_body(r, &n);
    if (!vg_mp_boundary(vg_req_header(r, "Content-Type"), boundary, sizeof boundary))
        return bad(e, 400, "invalid_multipart", "multipart/form-data needs a valid boundary");
    vg_mp_part parts[GW_MAX_PARTS];
    if (vg_mp_parse(body, n, boundary, parts, GW_MAX_PARTS, &np, err, sizeof err) != VG_OK)
        return bad(e, 400, "invalid_multipart", "%s", err);
    const vg_mp_part *file = vg_mp_find(parts, np, "file");
    if (!file)
        return bad(e, 400, "missing_parameter", "the form has no 'file' part");
    if (api == GW_TRANSCRIBE && !transcribe_fields(parts, np, j, e))
        return false;
    return set_audio(j, file->data, file->len, e);
}

static bool is_multipart(vg_req *r)
{
    const char *ct = vg_req_header(r, "Content-Type");
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

/* /v1/stt?language=&provider=&model=&format= with the raw audio, or a
 * multipart form with a 'file' part. The container is sniffed from the
 * bytes; format, when given for a raw body, names the container the
 * caller sends and must agree with them. */
static bool parse_stt(vg_req *r, gw_job *j, perr *e)
{
    const char *lang = vg_req_query(r, "language"), *prov = vg_req_query(r, "provider");
    const char *model = vg_req_query(r, "model");
    snprintf(j->response_format, sizeof j->response_format, "json");
    if ((lang && !copy_ident(e, "language", lang, j->language, sizeof j->language)) ||
        (prov && !copy_ident(e, "provider", prov, j->provider, sizeof j->provider)) ||
        (model && !copy_ident(e, "model", model, j->model, sizeof j->model)))
        return false;
    if (!opt_text(e, "prompt", NULL, &j->prompt))
        return false;
    if (is_multipart(r))
        return parse_multipart(r, GW_STT, j, e);
    size_t n;
    const char *body = vg_req_body(r, &n);
    if (!set_audio(j, body, n, e))
        return false;
    const char *fmt = vg_req_query(r, "format");
    if (fmt && strcmp(fmt, j->audio_type->name) && strcmp(fmt, j->audio_type->ext))
        return bad(e, 415, "unsupported_media_type", "format=%.32s but the body is %s", fmt,
                   j->audio_type->name);
    return true;
}

static bool parse_transcribe(vg_req *r, gw_job *j, perr *e)
{
    snprintf(j->response_format, sizeof j->response_format, "json");
    if (!is_multipart(r))
        return bad(e, 415, "unsupported_media_type",
                   "send multipart/form-data with a 'file' part, as OpenAI's API takes it");
    if (!parse_multipart(r, GW_TRANSCRIBE, j, e))
        return false;
    if (!one_of(j->response_format, stt_formats, VG_ARRAY_LEN(stt_formats)))
        return bad(e, 400, "unsupported_format",
                   "response_format must be json, text, srt, verbose_json or vtt");
    return true;
}

/* ---- chains and per-provider jobs ---- */

static bool resolve_chain(vg_app *app, gw_job *j, perr *e)
{
    /* "auto" is how keys spell "detect"; providers get "" for it. */
    if (!strcmp(j->language, "auto"))
        j->language[0] = '\0';
    const char *names[VG_MAX_CHAIN];
    size_t n = 0;
    bool tts = j->kind == VG_KIND_TTS;
    const char *model = j->model[0] ? j->model : tts ? app->cfg->gateway.tts_model
                                                     : app->cfg->gateway.stt_model;
    const vg_model_conf *m = vg_config_model(app->cfg, model);
    if (j->provider[0]) {
        names[n++] = j->provider;
    } else if (m) {
        for (size_t i = 0; i < m->n_chain; i++)
            names[n++] = m->chain[i];
    } else if (j->model[0] && app->cfg->n_models) {
        return bad(e, 400, "unknown_model", "no model '%s' is configured (GET /v1/models)",
                   j->model);
    }
    char why[160];
    return gw_chain(j, names, n, why, sizeof why) || bad(e, 400, "unknown_provider", "%s", why);
}

/* Canonical hash and cache key of the job as target t would run it. */
static void target_key(vg_app *app, gw_job *j, gw_target *t)
{
    char speed[32], temp[32];
    snprintf(speed, sizeof speed, "%.6g", j->speed);
    snprintf(temp, sizeof temp, "%.6g", j->temperature);
    vg_key_parts *p = &t->parts;
    *p = (vg_key_parts){.kind = j->kind, .provider = t->gp->conf->name,
                        .epoch = t->gp->conf->cache_epoch, .hash = t->hash};
    vg_buf extra = {0};
    vg_provider *pv = t->gp->p;
    if (pv->ops->key_extra)
        pv->ops->key_extra(pv, &t->job, &extra);
    const char *x = extra.data ? extra.data : NULL; /* absent unless the provider has some */
    if (j->kind == VG_KIND_TTS) {
        vg_param ps[] = {{"model", t->model}, {"voice", t->voice}, {"format", j->format},
                         {"speed", speed}, {"instructions", j->instructions},
                         {"language", j->language}, {"provider_options", x}};
        vg_canon_hash("voxgate.tts.v1", ps, VG_ARRAY_LEN(ps), j->text, j->text_len, t->hash);
        p->language = j->language[0] ? j->language : "und";
        p->voice = t->voice;
        p->format = j->format;
    } else {
        vg_param ps[] = {{"model", t->model}, {"language", j->language}, {"prompt", j->prompt},
                         {"response_format", j->response_format}, {"temperature", temp},
                         {"granularities", j->granularities}, {"provider_options", x}};
        vg_canon_hash("voxgate.stt.v1", ps, VG_ARRAY_LEN(ps), j->audio.data, j->audio.len,
                      t->hash);
        p->language = j->language[0] ? j->language : "auto";
        p->format = j->response_format;
    }
    vg_buf_free(&extra);
    int n = vg_key_build(app->cfg->cache.prefix, p, t->key, sizeof t->key);
    t->klen = n > 0 ? (size_t)n : 0;
}

static void fill_job(gw_job *j, gw_target *t)
{
    vg_job *pj = &t->job;
    *pj = (vg_job){.kind = j->kind, .request_id = j->rid};
    if (j->kind == VG_KIND_TTS)
        pj->tts = (vg_tts_job){.text = j->text, .text_len = j->text_len, .voice = t->voice,
                               .language = j->language, .model = t->model, .format = j->format,
                               .speed = j->speed, .instructions = j->instructions};
    else
        pj->stt = (vg_stt_job){.audio = j->audio.data, .audio_len = j->audio.len,
                               .audio_type = j->audio_type->media_type, .filename = j->filename,
                               .language = j->language, .model = t->model, .prompt = j->prompt,
                               .response_format = j->response_format,
                               .temperature = j->temperature,
                               .granularities = j->granularities};
}

/* Providers of the chain that refuse the job are dropped; when none is
 * left the first refusal is the answer, and no provider is called. */
static bool prepare_targets(vg_app *app, gw_job *j, perr *e)
{
    size_t kept = 0;
    char code[48] = "", msg[330] = "";
    if (j->kind == VG_KIND_STT)
        snprintf(j->filename, sizeof j->filename, "audio.%s", j->audio_type->ext);
    for (size_t i = 0; i < j->n; i++) {
        gw_target *t = &j->t[i];
        gw_target_defaults(j, t);
        fill_job(j, t);
        char c[48], m[256];
        if (vg_provider_check(t->gp->p, &t->job, c, sizeof c, m, sizeof m) != VG_OK) {
            if (!code[0]) {
                snprintf(code, sizeof code, "%s", c);
                snprintf(msg, sizeof msg, "%s: %s", t->gp->conf->name, m);
            }
            continue;
        }
        target_key(app, j, t);
        j->t[kept++] = *t;
    }
    j->n = kept;
    for (size_t i = 0; i < kept; i++)
        fill_job(j, &j->t[i]); /* pointers into the moved targets */
    if (kept)
        return true;
    return bad(e, !strcmp(code, "unsupported_media_type") ? 415 : 400, code[0] ? code : "invalid",
               "%s", msg);
}

/* ---- answers ---- */

static const char *stt_text(const char *json, size_t n, cJSON **doc)
{
    *doc = vg_json_parse_exact(json, n);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(*doc, "text");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static const char *cache_header(const char *tag)
{
    return !strcmp(tag, "hit_l1") || !strcmp(tag, "hit_l2") ? "HIT" : "MISS";
}

static const char *tier_header(const char *tag)
{
    return !strcmp(tag, "hit_l1") ? "l1" : !strcmp(tag, "hit_l2") ? "l2" : NULL;
}

static void json_mode_tts(vg_req *r, const gw_answer *a, vg_header *h, size_t nh)
{
    vg_buf u = {0}, b = {0};
    uint64_t at;
    char blob[256];
    bool url = false;
    if (a->key[0]) {
        vg_tier_tts_blob_name(a->key, strlen(a->key), a->sha256, blob);
        url = a->stored && vg_api_files_signed_url(r, blob, VG_SIGV4_PRESIGN_DEFAULT_S, &u,
                                                   &at) == VG_OK;
    }
    vg_buf_puts(&b, "{\"provider\":");
    vg_buf_json_str(&b, a->provider, strlen(a->provider));
    vg_buf_printf(&b, ",\"cache\":\"%s\",\"content_type\":", a->cache);
    vg_buf_json_str(&b, a->ctype, strlen(a->ctype));
    vg_buf_printf(&b, ",\"bytes\":%zu,\"sha256\":\"%s\",\"audio_url\":", a->len, a->sha256);
    if (url)
        vg_buf_json_str(&b, u.data, u.len);
    else
        vg_buf_puts(&b, "null");
    vg_buf_puts(&b, "}");
    vg_reply_buf(r, 200, "application/json", &b, h, nh);
    vg_buf_free(&b);
    vg_buf_free(&u);
}

bool gw_wants_json(vg_req *r)
{
    const char *acc = vg_req_header(r, "Accept");
    return acc && strstr(acc, "application/json") && !strstr(acc, "audio/");
}

static void answer_stt(vg_req *r, gw_api api, const gw_answer *a, vg_header *h, size_t nh)
{
    cJSON *doc;
    const char *text = stt_text(a->data, a->len, &doc);
    if (!text) {
        cJSON_Delete(doc);
        gw_reply_error(r, api, 502, "bad_provider_response", h, nh,
                       "the transcription result has no text");
        return;
    }
    vg_buf b = {0};
    if (api == GW_STT) {
        vg_buf_puts(&b, "{\"text\":");
        vg_buf_json_str(&b, text, strlen(text));
        vg_buf_puts(&b, ",\"language\":");
        vg_buf_json_str(&b, a->language, strlen(a->language));
        vg_buf_puts(&b, ",\"provider\":");
        vg_buf_json_str(&b, a->provider, strlen(a->provider));
        vg_buf_printf(&b, ",\"cache\":\"%s\"", a->cache);
        if (a->duration_ms)
            vg_buf_printf(&b, ",\"duration_ms\":%u", a->duration_ms);
        vg_buf_puts(&b, "}");
        vg_reply_buf(r, 200, "application/json", &b, h, nh);
    } else if (!strcmp(a->format, "json") || !strcmp(a->format, "verbose_json")) {
        vg_reply(r, 200, "application/json", a->data, a->len, h, nh);
    } else {
        const char *ct = !strcmp(a->format, "vtt") ? "text/vtt; charset=utf-8"
                                                   : "text/plain; charset=utf-8";
        vg_reply(r, 200, ct, text, strlen(text), h, nh);
    }
    vg_buf_free(&b);
    cJSON_Delete(doc);
}

void gw_answer_send(vg_req *r, gw_api api, const gw_answer *a)
{
    char etag[70];
    vg_header h[4] = {{"X-Cache", cache_header(a->cache)}, {"X-Cache-Tier", tier_header(a->cache)},
                      {"X-Provider", a->provider}, {"ETag", NULL}};
    vg_req_set_cache(r, a->cache);
    vg_req_set_provider(r, a->provider);
    if (api == GW_STT || api == GW_TRANSCRIBE || (api == GW_TTS && gw_wants_json(r))) {
        if (api == GW_TTS)
            json_mode_tts(r, a, h, 3);
        else
            answer_stt(r, api, a, h, 3);
        if (a->release)
            a->release(a->release_cls);
        if (a->from_file)
            close(a->fd);
        return;
    }
    snprintf(etag, sizeof etag, "\"%s\"", a->sha256);
    h[3].value = a->sha256[0] ? etag : NULL;
    if (a->from_file)
        vg_reply_fd(r, 200, a->ctype, a->fd, a->fd_off, a->len, h, 4);
    else if (a->release)
        vg_reply_ref(r, 200, a->ctype, a->data, a->len, a->release, a->release_cls, h, 4);
    else
        vg_reply(r, 200, a->ctype, a->data, a->len, h, 4);
}

/* ---- cache lookups (every target's key: L1 first, then L2) ---- */

static void release_item(void *cls) { vg_l1_release(cls); }

static bool l1_hit(vg_req *r, gw_api api, gw_job *j)
{
    vg_app *app = vg_req_app(r);
    for (size_t i = 0; i < j->n; i++) {
        gw_target *t = &j->t[i];
        vg_l1_item *it = vg_tier_l1_get(app, t->key, t->klen);
        if (!it)
            continue;
        gw_answer a = {.cache = "hit_l1", .data = (const char *)it->data, .len = it->len,
                       .ctype = it->ctype, .format = j->kind == VG_KIND_TTS ? j->format
                                                                           : j->response_format,
                       .language = t->parts.language, .key = t->key, .stored = true};
        gw_answer_provider(&a, t->gp);
        snprintf(a.sha256, sizeof a.sha256, "%s", it->sha256);
        a.release = release_item;
        a.release_cls = it;
        gw_answer_send(r, api, &a);
        return true;
    }
    return false;
}

static bool l2_hit_stt(vg_req *r, gw_api api, gw_job *j, gw_target *t)
{
    vg_app *app = vg_req_app(r);
    vg_buf val = {0};
    uint64_t exp = 0, created = 0;
    const char *res;
    size_t rlen;
    bool hit = false;
    if (vg_tier_l2_get(app, vg_req_id(r), t->key, t->klen, &val, &exp) == VG_OK) {
        if (vg_stt_entry_decode(val.data, val.len, &res, &rlen, &created) == VG_OK) {
            vg_l1_put(app->l1, t->key, t->klen, res, rlen, "application/json", NULL, created, exp);
            gw_answer a = {.cache = "hit_l2", .data = res, .len = rlen, .ctype = "application/json",
                           .format = j->response_format, .language = t->parts.language};
            gw_answer_provider(&a, t->gp);
            gw_answer_send(r, api, &a);
            hit = true;
        } else {
            vg_tier_drop_corrupt(app, vg_req_id(r), t->key, t->klen, "stt entry does not decode");
        }
    }
    vg_buf_free(&val);
    return hit;
}

static bool l2_hit_tts(vg_req *r, gw_api api, gw_job *j, gw_target *t)
{
    vg_app *app = vg_req_app(r);
    vg_tts_meta m;
    uint64_t exp = 0;
    vg_tts_audio audio;
    if (vg_tier_tts_meta(app, vg_req_id(r), t->key, t->klen, &m, &exp) != VG_OK ||
        vg_tier_tts_hit_audio(app, vg_req_id(r), t->key, t->klen, &m, exp, &audio) != VG_OK)
        return false;
    gw_answer a = {.cache = "hit_l2", .ctype = m.content_type, .format = j->format,
                   .language = t->parts.language, .key = t->key, .stored = true,
                   .from_file = audio.from_file, .fd = audio.fd, .fd_off = audio.offset,
                   .data = audio.buf.data, .len = audio.from_file ? m.size : audio.buf.len};
    gw_answer_provider(&a, t->gp);
    snprintf(a.sha256, sizeof a.sha256, "%s", m.sha256);
    gw_answer_send(r, api, &a);
    vg_buf_free(&audio.buf);
    return true;
}

static bool l2_hit(vg_req *r, gw_api api, gw_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (j->kind == VG_KIND_TTS ? l2_hit_tts(r, api, j, &j->t[i])
                                   : l2_hit_stt(r, api, j, &j->t[i]))
            return true;
    return false;
}

/* A TTS L2 read on a remote store (S3) fetches the audio over the
 * network: it runs on a vg-io thread, and a miss comes back to the MHD
 * thread to start the provider call. */
typedef struct l2_io {
    gw_api api;
    gw_job *j;               /* NULL once the miss took it */
} l2_io;

static void l2_io_read(vg_req *r, void *ud)
{
    l2_io *io = ud;
    l2_hit(r, io->api, io->j);
}

static void l2_io_miss(vg_req *r, void *ud)
{
    l2_io *io = ud;
    gw_job *j = io->j;
    io->j = NULL;
    gw_miss(r, io->api, j); /* takes j */
}

static void l2_io_free(void *ud)
{
    l2_io *io = ud;
    if (io->j)
        gw_job_free(io->j);
    free(io);
}

/* ---- handlers ---- */

static void handle(vg_req *r, gw_api api)
{
    vg_app *app = vg_req_app(r);
    perr e = {0};
    gw_job *j = gw_job_new(api, vg_req_id(r));
    if (!j) {
        gw_reply_error(r, api, 503, "out_of_memory", NULL, 0, "out of memory");
        return;
    }
    bool ok = api == GW_TTS || api == GW_SPEECH ? parse_tts_body(r, api, j, &e)
            : api == GW_STT ? parse_stt(r, j, &e) : parse_transcribe(r, j, &e);
    ok = ok && resolve_chain(app, j, &e) && prepare_targets(app, j, &e);
    if (!ok) {
        gw_reply_error(r, api, e.status, e.code, NULL, 0, e.msg);
        gw_job_free(j);
        return;
    }
    if (l1_hit(r, api, j)) {
        gw_job_free(j);
        return;
    }
    l2_io *io = j->kind == VG_KIND_TTS && vg_blob_is_remote(app->blob) ? malloc(sizeof *io) : NULL;
    if (io) {
        *io = (l2_io){.api = api, .j = j};
        vg_req_offload(r, l2_io_read, l2_io_miss, io, l2_io_free);
        return;
    }
    if (l2_hit(r, api, j)) {
        gw_job_free(j);
        return;
    }
    gw_miss(r, api, j); /* takes j */
}

void vg_api_gw_tts(vg_req *r) { handle(r, GW_TTS); }
void vg_api_gw_stt(vg_req *r) { handle(r, GW_STT); }
void vg_api_gw_speech(vg_req *r) { handle(r, GW_SPEECH); }
void vg_api_gw_transcribe(vg_req *r) { handle(r, GW_TRANSCRIBE); }
