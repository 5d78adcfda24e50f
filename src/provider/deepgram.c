/* The `deepgram` provider (providers.md §3). STT is POST
 * {base}/v1/listen?model=..&<options> with the raw audio as the body; TTS
 * is POST {base}/v1/speak?model=<voice>&encoding=.. with {"text"}. Both
 * send "Authorization: Token KEY". Deepgram answers STT with its own JSON
 * (results.channels[0].alternatives[0]), which is turned here into what
 * provider.h promises for each response_format, srt and vtt built from the
 * word timings. Errors come in two body shapes, both read; 402 (out of
 * credit) is VG_PR_QUOTA.
 *
 * Decisions:
 * - STT model: job, else providers.<n>.stt_model, else nova-3. Fixed
 *   options punctuate=true&smart_format=true; language=<l> when given,
 *   else detect_language=true. The options go into key_extra.
 * - TTS: the voice is the Deepgram model (aura-2-thalia-en); a voice that
 *   is not an aura model name is refused as unknown_voice. Default voice:
 *   providers.<n>.voice, else aura-2-celeste-es for Spanish, else
 *   aura-2-thalia-en. Speed other than 1 is refused (REST has no speed);
 *   instructions, prompt and temperature have no Deepgram equivalent and
 *   are ignored. */
#include "voxgate/provider.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/entry.h"

#define DEFAULT_BASE "https://api.deepgram.com"
#define DEFAULT_STT_MODEL "nova-3"
#define DEFAULT_VOICE "aura-2-thalia-en"
#define DEFAULT_VOICE_ES "aura-2-celeste-es"
/* Fixed STT options: readable transcripts, the same for every job. */
#define STT_OPTIONS "punctuate=true&smart_format=true"

/* voxgate's TTS formats and the /v1/speak options that produce them.
 * Linear16 is pinned to 24 kHz so pcm matches OpenAI's pcm contract; the
 * compressed encodings keep Deepgram's fixed rates. */
typedef struct tts_format {
    const char *name, *query, *ctype;
    bool force_ctype; /* headerless: the rate must travel with the type */
} tts_format;

static const tts_format tts_formats[] = {
    {"wav", "encoding=linear16&container=wav&sample_rate=24000", "audio/wav", false},
    {"pcm", "encoding=linear16&container=none&sample_rate=24000", "audio/pcm;rate=24000", true},
    {"mp3", "encoding=mp3", "audio/mpeg", false},
    {"opus", "encoding=opus&container=ogg", "audio/opus", false},
    {"aac", "encoding=aac", "audio/aac", false},
    {"flac", "encoding=flac", "audio/flac", false},
};

static const char *const stt_formats[] = {"json", "text", "srt", "verbose_json", "vtt"};

static const tts_format *tts_format_of(const char *name)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(tts_formats); i++)
        if (!strcmp(tts_formats[i].name, name))
            return &tts_formats[i];
    return NULL;
}

static bool stt_format_known(const char *name)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(stt_formats); i++)
        if (!strcmp(stt_formats[i], name))
            return true;
    return false;
}

static const char *pick(const char *a, const char *b, const char *dflt)
{
    return a && *a ? a : b && *b ? b : dflt;
}

static bool is(const char *a, const char *b) { return a && !strcmp(a, b); }

/* ---- requests ---- */

/* Appends "&name=value" (no '&' first), value percent-encoded. */
static int query_param(vg_buf *b, bool first, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = vg_buf_printf(b, "%s%s=", first ? "" : "&", name);
    for (const unsigned char *s = (const unsigned char *)value; rc == VG_OK && *s; s++) {
        if ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
            strchr("-._~", *s))
            rc = vg_buf_append(b, (const char *)s, 1);
        else
            rc = vg_buf_printf(b, "%%%c%c", hex[*s >> 4], hex[*s & 15]);
    }
    return rc;
}

/* The options after model (and language): what key_extra reports too. */
static const char *fixed_options(const vg_job *job)
{
    if (job->kind == VG_KIND_STT)
        return STT_OPTIONS;
    const tts_format *f = tts_format_of(job->tts.format);
    return f ? f->query : "";
}

static int stt_query(const vg_provider *p, const vg_stt_job *s, vg_buf *b)
{
    int rc = query_param(b, true, "model", pick(s->model, p->conf->stt_model, DEFAULT_STT_MODEL));
    if (rc == VG_OK)
        rc = *s->language ? query_param(b, false, "language", s->language)
                          : vg_buf_puts(b, "&detect_language=true");
    return rc;
}

int vg_deepgram_url(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    bool stt = job->kind == VG_KIND_STT;
    int rc = vg_remote_url(p, DEFAULT_BASE, stt ? "/v1/listen?" : "/v1/speak?", out);
    if (rc == VG_OK)
        rc = stt ? stt_query(p, &job->stt, out) : query_param(out, true, "model", job->tts.voice);
    if (rc == VG_OK)
        rc = vg_buf_printf(out, "&%s", fixed_options(job));
    return rc;
}

int vg_deepgram_tts_body(const vg_job *job, vg_buf *out)
{
    vg_buf_reset(out);
    int rc = vg_buf_puts(out, "{\"text\":");
    if (rc == VG_OK)
        rc = vg_buf_json_str(out, job->tts.text, job->tts.text_len);
    if (rc == VG_OK)
        rc = vg_buf_puts(out, "}");
    return rc;
}

/* URL and the key. Deepgram documents "Token KEY" for API keys; a
 * provider without a key (a proxy that adds its own) sends none. */
static int common_request(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    vg_buf url = {0};
    int rc = vg_deepgram_url(p, job, &url);
    if (rc == VG_OK)
        curl_easy_setopt(c->easy, CURLOPT_URL, url.data); /* curl copies it */
    vg_buf_free(&url);
    if (rc == VG_OK && p->api_key)
        rc = vg_remote_header(c, "Authorization: Token %s", p->api_key);
    return rc;
}

/* The body is sent from memory the job owns (valid until done ran);
 * an STT upload is not copied. */
static int build(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    bool stt = job->kind == VG_KIND_STT;
    int rc = common_request(p, job, c);
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Content-Type: %s",
                              stt ? pick(job->stt.audio_type, NULL, "application/octet-stream")
                                  : "application/json");
    if (rc == VG_OK && !stt)
        rc = vg_deepgram_tts_body(job, &c->req_body);
    if (rc != VG_OK)
        return rc;
    const void *body = stt ? job->stt.audio : c->req_body.data;
    size_t len = stt ? job->stt.audio_len : c->req_body.len;
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    return VG_OK;
}

/* ---- errors ---- */

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The body's request_id when the dg-request-id header was missing; only
 * id characters are kept (it is logged). */
static void body_request_id(vg_presult *res, const char *id)
{
    if (res->upstream_id[0] || !id)
        return;
    size_t o = 0;
    for (; *id && o + 1 < sizeof res->upstream_id; id++)
        if (isalnum((unsigned char)*id) || *id == '-' || *id == '_' || *id == '.')
            res->upstream_id[o++] = *id;
    res->upstream_id[o] = '\0';
}

/* {"err_code","err_msg","request_id"} or {"category","message","details",
 * "request_id"}. Only the code reaches the message, plus the text for
 * errors about the input; a 401/403 text may quote the key. */
static void parse_error(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = c->resp_body.len ? vg_json_parse_exact(c->resp_body.data, c->resp_body.len)
                                  : NULL;
    const char *code = pick(str_of(doc, "err_code"), str_of(doc, "category"), NULL);
    vg_remote_http_error(p, c, res, code);
    if (c->http_status == 402)
        res->status = VG_PR_QUOTA;
    if (res->status == VG_PR_INPUT)
        vg_remote_add_detail(res, pick(str_of(doc, "err_msg"), str_of(doc, "message"), NULL));
    body_request_id(res, str_of(doc, "request_id"));
    cJSON_Delete(doc);
}

static void fail(vg_provider *p, vg_http_call *c, vg_presult *res, vg_pr_status st,
                 const char *why)
{
    res->status = st;
    snprintf(res->message, sizeof res->message, "%s: %ld %s", p->conf->name, c->http_status, why);
}

/* ---- transcripts ---- */

/* One recognised word: its timing, and the word as shown to people
 * (smart_format's punctuated_word when there is one). */
typedef struct word {
    double start, end;
    const char *plain, *shown;
} word;

/* What the answer says, borrowed from its cJSON document. */
typedef struct transcript {
    const char *text;
    const char *language;   /* detected, else the job's, else "" */
    double duration;        /* seconds; < 0 = unknown */
    word *words;
    size_t n;
} transcript;

static double num_of(const cJSON *obj, const char *name, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : dflt;
}

/* The words array; false when one of them is not a timed word. */
static bool read_words(const cJSON *arr, transcript *t)
{
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->words = n ? calloc(n, sizeof *t->words) : NULL;
    if (n && !t->words)
        return false;
    const cJSON *w;
    cJSON_ArrayForEach(w, arr) {
        word *o = &t->words[t->n++];
        o->plain = str_of(w, "word");
        o->shown = pick(str_of(w, "punctuated_word"), o->plain, NULL);
        o->start = num_of(w, "start", -1);
        o->end = num_of(w, "end", -1);
        if (!o->plain || o->start < 0 || o->end < o->start)
            return false;
    }
    return true;
}

/* results.channels[0].alternatives[0] and metadata.duration. */
static bool read_transcript(const cJSON *doc, const vg_stt_job *s, transcript *t)
{
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(doc, "results");
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(res, "channels"), 0);
    const cJSON *alt = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ch, "alternatives"), 0);
    t->text = str_of(alt, "transcript");
    if (!t->text || !vg_utf8_valid(t->text, strlen(t->text)))
        return false;
    t->language = pick(str_of(ch, "detected_language"), s->language, "");
    double d = num_of(cJSON_GetObjectItemCaseSensitive(doc, "metadata"), "duration", -1);
    t->duration = d >= 0 && d <= 4.0e6 ? d : -1;
    const cJSON *words = cJSON_GetObjectItemCaseSensitive(alt, "words");
    return !words || (cJSON_IsArray(words) && read_words(words, t));
}

/* Segments for verbose_json, srt and vtt: a segment ends after a word
 * that ends a sentence, before a pause of a second or more, or at 16
 * words, so cues stay readable. Returns the index after the segment. */
static size_t segment_end(const transcript *t, size_t from)
{
    size_t i = from;
    while (i < t->n) {
        const char *w = t->words[i].shown;
        size_t len = strlen(w);
        i++;
        if ((len && strchr(".?!", w[len - 1])) || i - from >= 16 ||
            (i < t->n && t->words[i].start - t->words[i - 1].end >= 1.0))
            break;
    }
    return i;
}

static int segment_text(const transcript *t, size_t from, size_t to, vg_buf *out)
{
    vg_buf_reset(out);
    int rc = VG_OK;
    for (size_t i = from; i < to && rc == VG_OK; i++)
        rc = vg_buf_printf(out, "%s%s", i > from ? " " : "", t->words[i].shown);
    return rc;
}

/* "HH:MM:SS,mmm" (srt) or "HH:MM:SS.mmm" (vtt). */
static int cue_time(vg_buf *b, double s, char sep)
{
    unsigned long long ms = (unsigned long long)llround(s * 1000.0);
    return vg_buf_printf(b, "%02llu:%02llu:%02llu%c%03llu", ms / 3600000, ms / 60000 % 60,
                         ms / 1000 % 60, sep, ms % 1000);
}

static int cue(vg_buf *out, bool vtt, size_t no, double start, double end, const char *text)
{
    int rc = vtt ? VG_OK : vg_buf_printf(out, "%zu\n", no);
    if (rc == VG_OK)
        rc = cue_time(out, start, vtt ? '.' : ',');
    if (rc == VG_OK)
        rc = vg_buf_puts(out, " --> ");
    if (rc == VG_OK)
        rc = cue_time(out, end, vtt ? '.' : ',');
    if (rc == VG_OK)
        rc = vg_buf_printf(out, "\n%s\n\n", text);
    return rc;
}

/* The srt or vtt document of the transcript. Without word timings a
 * non-empty text is one cue over the audio's duration. */
static int subtitles(const transcript *t, bool vtt, vg_buf *out)
{
    int rc = vg_buf_puts(out, vtt ? "WEBVTT\n\n" : "");
    if (!t->n && *t->text && rc == VG_OK)
        return cue(out, vtt, 1, 0, t->duration > 0 ? t->duration : 0, t->text);
    vg_buf text = {0};
    for (size_t i = 0, no = 1; i < t->n && rc == VG_OK; no++) {
        size_t j = segment_end(t, i);
        rc = segment_text(t, i, j, &text);
        if (rc == VG_OK)
            rc = cue(out, vtt, no, t->words[i].start, t->words[j - 1].end,
                     text.data ? text.data : "");
        i = j;
    }
    vg_buf_free(&text);
    return rc;
}

static double ms3(double s) { return round(s * 1000.0) / 1000.0; }

static bool add_segments(const transcript *t, cJSON *doc)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, "segments");
    vg_buf text = {0};
    bool ok = arr != NULL;
    for (size_t i = 0, id = 0; ok && i < t->n; id++) {
        size_t j = segment_end(t, i);
        cJSON *seg = cJSON_CreateObject();
        ok = seg && cJSON_AddItemToArray(arr, seg) && segment_text(t, i, j, &text) == VG_OK &&
             cJSON_AddNumberToObject(seg, "id", (double)id) &&
             cJSON_AddNumberToObject(seg, "start", ms3(t->words[i].start)) &&
             cJSON_AddNumberToObject(seg, "end", ms3(t->words[j - 1].end)) &&
             cJSON_AddStringToObject(seg, "text", text.data ? text.data : "");
        i = j;
    }
    vg_buf_free(&text);
    return ok;
}

static bool add_words(const transcript *t, cJSON *doc)
{
    cJSON *arr = cJSON_AddArrayToObject(doc, "words");
    bool ok = arr != NULL;
    for (size_t i = 0; ok && i < t->n; i++) {
        cJSON *w = cJSON_CreateObject();
        ok = w && cJSON_AddItemToArray(arr, w) &&
             cJSON_AddStringToObject(w, "word", t->words[i].plain) &&
             cJSON_AddNumberToObject(w, "start", ms3(t->words[i].start)) &&
             cJSON_AddNumberToObject(w, "end", ms3(t->words[i].end));
    }
    return ok;
}

/* OpenAI's verbose_json shape: segments unless only words were asked
 * for, words when asked for. */
static int verbose_json(const transcript *t, const char *granularities, vg_buf *out)
{
    bool want_words = strstr(granularities, "word") != NULL;
    bool want_segments = !*granularities || strstr(granularities, "segment") != NULL;
    cJSON *doc = cJSON_CreateObject();
    bool ok = doc && cJSON_AddStringToObject(doc, "task", "transcribe") &&
              cJSON_AddStringToObject(doc, "language", t->language) &&
              cJSON_AddNumberToObject(doc, "duration", t->duration > 0 ? ms3(t->duration) : 0) &&
              cJSON_AddStringToObject(doc, "text", t->text) &&
              (!want_segments || add_segments(t, doc)) && (!want_words || add_words(t, doc));
    char *s = ok ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    int rc = s ? vg_buf_puts(out, s) : VG_ENOMEM;
    free(s);
    return rc;
}

/* {"text": s} */
static int text_object(vg_buf *out, const char *s, size_t n)
{
    int rc = vg_buf_puts(out, "{\"text\":");
    if (rc == VG_OK)
        rc = vg_buf_json_str(out, s, n);
    if (rc == VG_OK)
        rc = vg_buf_puts(out, "}");
    return rc;
}

/* The body provider.h promises for the job's response_format. */
static int stt_body(const transcript *t, const vg_stt_job *s, vg_buf *out)
{
    const char *f = s->response_format;
    if (is(f, "verbose_json"))
        return verbose_json(t, s->granularities, out);
    if (!is(f, "srt") && !is(f, "vtt"))
        return text_object(out, t->text, strlen(t->text));
    vg_buf doc = {0};
    int rc = subtitles(t, is(f, "vtt"), &doc);
    if (rc == VG_OK)
        rc = text_object(out, doc.data, doc.len);
    vg_buf_free(&doc);
    return rc;
}

static void parse_stt(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = vg_json_parse_exact(c->resp_body.data ? c->resp_body.data : "", c->resp_body.len);
    transcript t = {0};
    if (!cJSON_IsObject(doc) || !read_transcript(doc, &job->stt, &t)) {
        fail(p, c, res, VG_PR_BAD_RESPONSE, "answer has no transcript");
    } else if (stt_body(&t, &job->stt, &res->body) != VG_OK) {
        fail(p, c, res, VG_PR_INTERNAL, "out of memory");
    } else {
        res->status = VG_PR_OK;
        res->duration_ms = t.duration >= 0 ? (uint32_t)llround(t.duration * 1000.0) : 0;
        snprintf(res->content_type, sizeof res->content_type, "application/json");
        body_request_id(res, str_of(cJSON_GetObjectItemCaseSensitive(doc, "metadata"),
                                    "request_id"));
    }
    if (res->status != VG_PR_OK)
        vg_buf_free(&res->body);
    free(t.words);
    cJSON_Delete(doc);
}

static void parse_tts(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    const tts_format *f = tts_format_of(job->tts.format);
    vg_remote_take_audio(p, c, res, f ? f->ctype : "application/octet-stream");
    if (res->status == VG_PR_OK && f && f->force_ctype)
        snprintf(res->content_type, sizeof res->content_type, "%s", f->ctype);
}

void vg_deepgram_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    if (res->status != VG_PR_OK)
        parse_error(p, c, res);
    else if (job->kind == VG_KIND_STT)
        parse_stt(p, job, c, res);
    else
        parse_tts(p, job, c, res);
}

/* ---- the provider ---- */

/* A Deepgram TTS model name: aura-..., id characters only. */
static bool voice_ok(const char *v)
{
    size_t n = strlen(v);
    return n > 5 && n <= 64 && !strncmp(v, "aura-", 5) &&
           strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

static int refuse(char *code, size_t codelen, const char *c, char *msg, size_t msglen,
                  const char *m)
{
    snprintf(code, codelen, "%s", c);
    snprintf(msg, msglen, "%s", m);
    return VG_EINVAL;
}

static int check_tts(const vg_tts_job *t, char *code, size_t cl, char *msg, size_t ml)
{
    if (!tts_format_of(t->format))
        return refuse(code, cl, "unsupported_format", msg, ml,
                      "deepgram supports audio formats wav, pcm, mp3, opus, aac, flac");
    if (!voice_ok(t->voice))
        return refuse(code, cl, "unknown_voice", msg, ml,
                      "deepgram voices are Aura model names such as aura-2-thalia-en");
    if (t->speed > 0 && t->speed != 1.0)
        return refuse(code, cl, "unsupported_parameter", msg, ml,
                      "deepgram supports speed 1.0 only");
    return VG_OK;
}

static int op_check(vg_provider *p, const vg_job *job, char *code, size_t codelen, char *msg,
                    size_t msglen)
{
    if (job->kind == VG_KIND_TTS)
        return check_tts(&job->tts, code, codelen, msg, msglen);
    if (!stt_format_known(job->stt.response_format))
        return refuse(code, codelen, "unsupported_format", msg, msglen,
                      "deepgram supports response formats json, text, srt, verbose_json, vtt");
    return VG_OK;
}

static int op_start(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud)
{
    return vg_remote_start(p, job, build, vg_deepgram_parse, done, ud);
}

static const char *op_default_voice(vg_provider *p, const char *language)
{
    if (p->conf->voice[0])
        return p->conf->voice;
    return !strncasecmp(language, "es", 2) && (!language[2] || language[2] == '-')
               ? DEFAULT_VOICE_ES
               : DEFAULT_VOICE;
}

/* TTS has none apart from the voice, which is the model. */
static const char *op_default_model(vg_provider *p, vg_kind kind)
{
    return kind == VG_KIND_STT ? DEFAULT_STT_MODEL : "";
}

/* Everything sent besides model and language: the fixed STT options, or
 * the encoding, container and rate of a TTS format. */
static void op_key_extra(vg_provider *p, const vg_job *job, vg_buf *out)
{
    vg_buf_puts(out, fixed_options(job));
}

static void *op_voices(vg_provider *p) { return NULL; }
static bool op_ready(vg_provider *p) { return true; }

static const vg_provider_ops deepgram_ops = {
    .type = "deepgram", .check = op_check, .start = op_start,
    .default_voice = op_default_voice, .default_model = op_default_model,
    .key_extra = op_key_extra, .voices = op_voices, .ready = op_ready, .destroy = vg_remote_provider_free,
};

int vg_provider_deepgram_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                             char *err, size_t errlen)
{
    return vg_remote_provider_new(conf, e, &deepgram_ops, out, err, errlen);
}
