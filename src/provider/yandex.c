/* The `yandex` provider: Yandex SpeechKit API v1 REST (providers.md §5).
 * STT is POST {stt host}/speech/v1/stt:recognize?<query> with the raw
 * audio; TTS is POST {tts host}/speech/v1/tts:synthesize with a
 * form-urlencoded body. The two default hosts differ; a configured
 * base_url (a mirror, a test server) serves both paths on that one base.
 *
 * v1 takes only OggOpus or headerless 16-bit PCM ("lpcm"), so WAV input is
 * unwrapped here: mono s16 WAV at 8/16/48 kHz goes out as it is, any other
 * WAV is converted to 16 kHz mono first. TTS "wav" is lpcm plus a header
 * written here. v1 returns a bare transcript, so only the json and text
 * response formats exist. */
#include "voxgate/provider.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/audio.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"
#include "voxgate/sigv4.h"

#define STT_HOST "https://stt.api.cloud.yandex.net"
#define TTS_HOST "https://tts.api.cloud.yandex.net"
#define STT_PATH "/speech/v1/stt:recognize"
#define TTS_PATH "/speech/v1/tts:synthesize"
#define DEFAULT_LANG "ru-RU"     /* what v1 assumes without lang */
#define DEFAULT_VOICE "alena"
#define DEFAULT_TOPIC "general"
#define TTS_RATE 48000u          /* lpcm for pcm and wav: v1's default and best rate */
#define STT_RATE 16000u          /* what converted WAV input is sent at */
#define STT_MAX_MS 30000u        /* v1 limits: 30 s, 1 MB, one channel */
#define STT_MAX_BYTES 1048576u
#define TTS_MAX_CHARS 5000u
#define SPEED_MIN 0.1
#define SPEED_MAX 3.0

/* ---- languages and voices ---- */

static const struct {
    const char *code, *full;
} langs[] = {{"ru", "ru-RU"}, {"en", "en-US"}, {"de", "de-DE"},
             {"kk", "kk-KK"}, {"uz", "uz-UZ"}, {"tr", "tr-TR"}};

/* The v1-capable voices (providers.md §5.2) and the language each speaks. */
static const struct {
    const char *id, *lang;
} voices[] = {{"alena", "ru-RU"}, {"filipp", "ru-RU"}, {"ermil", "ru-RU"}, {"jane", "ru-RU"},
              {"omazh", "ru-RU"}, {"zahar", "ru-RU"}, {"marina", "ru-RU"},
              {"madi_ru", "ru-RU"}, {"oksana", "ru-RU"}, {"john", "en-US"}, {"lea", "de-DE"},
              {"amira", "kk-KK"}, {"madi", "kk-KK"}, {"nigora", "uz-UZ"}};

/* Roles (emotion) voxgate sends when the job's instructions name one. */
static const char *const emotions[] = {"neutral", "good", "evil", "friendly", "whisper"};

static const char *const tts_formats[] = {"mp3", "opus", "pcm", "wav"};
static const char *const stt_formats[] = {"json", "text"};

static int find(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return (int)i;
    return -1;
}

/* "ll-RR" style: 2-3 letters, '-', 2-8 letters or digits. */
static bool full_code(const char *s)
{
    size_t a = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    if (a < 2 || a > 3 || s[a] != '-')
        return false;
    const char *r = s + a + 1;
    size_t b = strspn(r, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
    return b >= 2 && b <= 8 && !r[b];
}

const char *vg_yandex_lang(const char *language)
{
    if (!*language || !strcasecmp(language, "auto"))
        return "";
    for (size_t i = 0; i < VG_ARRAY_LEN(langs); i++)
        if (!strcasecmp(language, langs[i].code) || !strcasecmp(language, langs[i].full))
            return langs[i].full;
    return full_code(language) ? language : NULL; /* full codes pass (Yandex judges them) */
}

static const char *voice_lang(const char *voice)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(voices); i++)
        if (!strcmp(voices[i].id, voice))
            return voices[i].lang;
    return NULL;
}

/* The lang a TTS job is sent with: its own, else its voice's, else v1's. */
static const char *tts_lang(const vg_tts_job *t)
{
    const char *l = vg_yandex_lang(t->language);
    if (l && *l)
        return l;
    l = voice_lang(t->voice);
    return l ? l : DEFAULT_LANG;
}

static const char *stt_lang(const vg_stt_job *s)
{
    const char *l = vg_yandex_lang(s->language);
    return l && *l ? l : DEFAULT_LANG;
}

/* ---- what is sent ---- */

/* How a TTS format goes out: the v1 format, its sample rate (lpcm only)
 * and the media type voxgate answers with (v1's own is unconfirmed). */
typedef struct tts_out {
    const char *format;
    unsigned rate;
    const char *ctype;
    bool wav;
} tts_out;

static bool tts_out_of(const char *format, tts_out *o)
{
    if (!strcmp(format, "mp3"))
        *o = (tts_out){"mp3", 0, "audio/mpeg", false};
    else if (!strcmp(format, "opus"))
        *o = (tts_out){"oggopus", 0, "audio/ogg;codecs=opus", false};
    else if (!strcmp(format, "pcm"))
        *o = (tts_out){"lpcm", TTS_RATE, "audio/pcm;rate=48000", false};
    else if (!strcmp(format, "wav"))
        *o = (tts_out){"lpcm", TTS_RATE, "audio/wav", true};
    else
        return false;
    return true;
}

/* How an STT upload goes out: oggopus as it is, or lpcm at rate, either
 * the WAV's own samples (data/len point into the job) or converted. */
typedef struct stt_plan {
    const char *format;
    unsigned rate;
    const void *data;
    size_t len;
    bool convert;
    vg_wav wav;
    uint32_t duration_ms;
} stt_plan;

static bool sendable_as_is(const vg_wav *w)
{
    return !w->is_float && w->bits == 16 && w->channels == 1 &&
           (w->rate == 8000 || w->rate == 16000 || w->rate == 48000);
}

static int refuse(char *code, size_t cl, char *msg, size_t ml, const char *c, const char *m)
{
    snprintf(code, cl, "%s", c);
    snprintf(msg, ml, "%s", m);
    return VG_EINVAL;
}

static int plan_wav(const vg_stt_job *s, stt_plan *pl, char *code, size_t cl, char *msg,
                    size_t ml)
{
    char why[128];
    if (vg_wav_parse(s->audio, s->audio_len, &pl->wav, why, sizeof why) != VG_OK) {
        snprintf(code, cl, "invalid_audio");
        snprintf(msg, ml, "yandex cannot use this WAV: %s", why);
        return VG_EINVAL;
    }
    uint64_t ms = vg_wav_duration_ms(&pl->wav);
    if (ms > STT_MAX_MS)
        return refuse(code, cl, msg, ml, "audio_too_long",
                      "yandex (SpeechKit v1) recognises at most 30 s of audio");
    pl->duration_ms = (uint32_t)ms;
    pl->format = "lpcm";
    if (sendable_as_is(&pl->wav)) {
        pl->rate = pl->wav.rate;
        pl->data = pl->wav.data;
        pl->len = pl->wav.frames * 2;
    } else {
        pl->rate = STT_RATE;
        pl->convert = true;
    }
    return VG_OK;
}

static int stt_plan_of(const vg_stt_job *s, stt_plan *pl, char *code, size_t cl, char *msg,
                       size_t ml)
{
    *pl = (stt_plan){0};
    const vg_audio_type *t = vg_audio_sniff(s->audio, s->audio_len);
    if (t && !strcmp(t->name, "wav"))
        return plan_wav(s, pl, code, cl, msg, ml);
    if (!t || strcmp(t->name, "opus"))
        return refuse(code, cl, msg, ml, "unsupported_media_type",
                      "yandex (SpeechKit v1) accepts WAV (sent as 16-bit PCM) and Ogg Opus "
                      "(audio/ogg;codecs=opus)");
    if (s->audio_len > STT_MAX_BYTES)
        return refuse(code, cl, msg, ml, "audio_too_large",
                      "yandex (SpeechKit v1) recognises at most 1 MB of Ogg Opus");
    *pl = (stt_plan){.format = "oggopus", .data = s->audio, .len = s->audio_len};
    return VG_OK;
}

/* ---- requests ---- */

static bool iam(const vg_provider *p) { return !strcmp(p->conf->auth, "iam"); }

static int url_of(const vg_provider *p, const char *host, const char *path, vg_buf *out)
{
    return vg_remote_url(p, host, path, out);
}

/* "&name=value" (no '&' first), the value percent-encoded. */
static int param(vg_buf *b, const char *name, const char *value)
{
    if (vg_buf_printf(b, "%s%s=", b->len && b->data[b->len - 1] != '?' ? "&" : "", name) !=
        VG_OK)
        return VG_ENOMEM;
    return vg_sigv4_encode(b, value, strlen(value), false);
}

static const char *topic_of(const vg_stt_job *s)
{
    return *s->model ? s->model : DEFAULT_TOPIC;
}

int vg_yandex_stt_url(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    stt_plan pl;
    char code[48], msg[256], rate[16];
    if (stt_plan_of(&job->stt, &pl, code, sizeof code, msg, sizeof msg) != VG_OK)
        return VG_EINVAL;
    int rc = url_of(p, STT_HOST, STT_PATH "?", out);
    if (rc == VG_OK)
        rc = param(out, "lang", stt_lang(&job->stt));
    if (rc == VG_OK)
        rc = param(out, "topic", topic_of(&job->stt));
    /* The v1 defaults, spelled out so the request says what is cached. */
    if (rc == VG_OK)
        rc = param(out, "profanityFilter", "false");
    if (rc == VG_OK)
        rc = param(out, "rawResults", "false");
    if (rc == VG_OK)
        rc = param(out, "format", pl.format);
    snprintf(rate, sizeof rate, "%u", pl.rate);
    if (rc == VG_OK && pl.rate)
        rc = param(out, "sampleRateHertz", rate);
    if (rc == VG_OK && iam(p) && p->conf->folder_id[0])
        rc = param(out, "folderId", p->conf->folder_id);
    return rc;
}

int vg_yandex_tts_url(const vg_provider *p, vg_buf *out)
{
    return url_of(p, TTS_HOST, TTS_PATH, out);
}

int vg_yandex_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out)
{
    const vg_tts_job *t = &job->tts;
    tts_out o;
    char num[32];
    if (!tts_out_of(t->format, &o))
        return VG_EINVAL;
    vg_buf_reset(out);
    int rc = vg_buf_puts(out, "text=");
    if (rc == VG_OK)
        rc = vg_sigv4_encode(out, t->text, t->text_len, false);
    if (rc == VG_OK)
        rc = param(out, "lang", tts_lang(t));
    if (rc == VG_OK)
        rc = param(out, "voice", t->voice);
    if (rc == VG_OK && *t->instructions)
        rc = param(out, "emotion", t->instructions);
    snprintf(num, sizeof num, "%.6g", t->speed > 0 ? t->speed : 1.0);
    if (rc == VG_OK)
        rc = param(out, "speed", num);
    if (rc == VG_OK)
        rc = param(out, "format", o.format);
    snprintf(num, sizeof num, "%u", o.rate);
    if (rc == VG_OK && o.rate)
        rc = param(out, "sampleRateHertz", num);
    if (rc == VG_OK && iam(p) && p->conf->folder_id[0])
        rc = param(out, "folderId", p->conf->folder_id);
    return rc;
}

static bool is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    }
    return true;
}

/* Yandex asks for a UUID. voxgate's id is used when it is one; otherwise
 * a version-8 UUID from SHA-256("voxgate:" id), so support can still map
 * it back to the logged request id. */
void vg_yandex_client_id(const char *request_id, char out[37])
{
    if (is_uuid(request_id)) {
        for (int i = 0; i < 37; i++)
            out[i] = (char)(request_id[i] >= 'A' && request_id[i] <= 'F' ? request_id[i] + 32
                                                                          : request_id[i]);
        return;
    }
    vg_buf in = {0};
    unsigned char h[32];
    vg_buf_printf(&in, "voxgate:%s", request_id);
    vg_sha256_raw(in.data ? in.data : "", in.len, h);
    vg_buf_free(&in);
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x80);
    h[8] = (unsigned char)((h[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12],
             h[13], h[14], h[15]);
}

static int common_headers(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    char id[37];
    int rc = VG_OK;
    if (p->api_key)
        rc = vg_remote_header(c, "Authorization: %s %s", iam(p) ? "Bearer" : "Api-Key",
                              p->api_key);
    if (rc == VG_OK && job->request_id && *job->request_id) {
        vg_yandex_client_id(job->request_id, id);
        rc = vg_remote_header(c, "x-client-request-id: %s", id);
    }
    return rc;
}

static int post(vg_http_call *c, const vg_buf *url, const void *body, size_t len)
{
    curl_easy_setopt(c->easy, CURLOPT_URL, url->data); /* curl copies it */
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    return VG_OK;
}

static int build_tts(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    vg_buf url = {0};
    int rc = vg_yandex_tts_url(p, &url);
    if (rc == VG_OK)
        rc = common_headers(p, job, c);
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Content-Type: application/x-www-form-urlencoded");
    if (rc == VG_OK)
        rc = vg_yandex_tts_body(p, job, &c->req_body);
    if (rc == VG_OK)
        rc = post(c, &url, c->req_body.data, c->req_body.len);
    vg_buf_free(&url);
    return rc;
}

/* WAV that is not already mono s16 at a v1 rate becomes 16 kHz mono. */
static int convert_into(const stt_plan *pl, vg_buf *out)
{
    int16_t *pcm = NULL;
    size_t n = 0;
    int rc = vg_wav_to_mono_s16(&pl->wav, STT_RATE, STT_MAX_BYTES / 2, &pcm, &n);
    if (rc == VG_OK)
        rc = vg_pcm_append_s16(out, pcm, n);
    free(pcm);
    return rc;
}

static int build_stt(vg_provider *p, const vg_job *job, vg_http_call *c)
{
    stt_plan pl;
    char code[48], msg[256];
    vg_buf url = {0};
    int rc = stt_plan_of(&job->stt, &pl, code, sizeof code, msg, sizeof msg);
    if (rc == VG_OK)
        rc = vg_yandex_stt_url(p, job, &url);
    if (rc == VG_OK)
        rc = common_headers(p, job, c);
    if (rc == VG_OK)
        rc = vg_remote_header(c, "Content-Type: %s", pl.rate ? "audio/L16" : "audio/ogg;codecs=opus");
    if (rc == VG_OK && pl.convert) {
        rc = convert_into(&pl, &c->req_body);
        pl.data = c->req_body.data;
        pl.len = c->req_body.len;
    }
    if (rc == VG_OK)
        rc = post(c, &url, pl.data, pl.len); /* the job's audio outlives the call */
    vg_buf_free(&url);
    return rc;
}

/* ---- answers ---- */

static const char *str_of(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* {"error_code","error_message"}: the code always reaches the message,
 * the text only for input errors (never for 401/403). 501 UNIMPLEMENTED
 * means an option v1 does not have: the same request fails again, so it
 * is an input error, not a retryable one. v1 documents no quota error
 * code, so 429 stays a rate limit. */
static void parse_error(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = c->resp_body.len ? vg_json_parse_exact(c->resp_body.data, c->resp_body.len)
                                  : NULL;
    vg_remote_http_error(p, c, res, str_of(doc, "error_code"));
    if (c->http_status == 501)
        res->status = VG_PR_INPUT;
    if (res->status == VG_PR_INPUT)
        vg_remote_add_detail(res, str_of(doc, "error_message"));
    cJSON_Delete(doc);
}

static void bad(vg_provider *p, vg_http_call *c, vg_presult *res, const char *why)
{
    res->status = VG_PR_BAD_RESPONSE;
    snprintf(res->message, sizeof res->message, "%s: %ld %s", p->conf->name, c->http_status, why);
}

static void parse_stt(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    cJSON *doc = vg_json_parse_exact(c->resp_body.data ? c->resp_body.data : "",
                                     c->resp_body.len);
    const char *text = str_of(doc, "result");
    if (!text || !vg_utf8_valid(text, strlen(text))) {
        bad(p, c, res, "answer has no transcript");
    } else if (vg_buf_puts(&res->body, "{\"text\":") != VG_OK ||
               vg_buf_json_str(&res->body, text, strlen(text)) != VG_OK ||
               vg_buf_puts(&res->body, "}") != VG_OK) {
        res->status = VG_PR_INTERNAL;
        snprintf(res->message, sizeof res->message, "%s: out of memory", p->conf->name);
    } else {
        stt_plan pl;
        char code[48], msg[256];
        if (stt_plan_of(&job->stt, &pl, code, sizeof code, msg, sizeof msg) == VG_OK)
            res->duration_ms = pl.duration_ms;
        res->status = VG_PR_OK;
        snprintf(res->content_type, sizeof res->content_type, "application/json");
    }
    cJSON_Delete(doc);
}

/* lpcm for "wav" gets the header voxgate promised. */
static void wrap_wav(vg_provider *p, vg_http_call *c, vg_presult *res)
{
    if (res->body.len % 2) {
        vg_buf_free(&res->body);
        bad(p, c, res, "PCM answer has an odd length");
        return;
    }
    vg_buf wav = {0};
    uint8_t hdr[VG_WAV_HEADER_LEN];
    vg_wav_header_s16(hdr, TTS_RATE, res->body.len / 2);
    if (vg_buf_append(&wav, hdr, sizeof hdr) != VG_OK ||
        vg_buf_append(&wav, res->body.data, res->body.len) != VG_OK) {
        vg_buf_free(&wav);
        vg_buf_free(&res->body);
        res->status = VG_PR_INTERNAL;
        snprintf(res->message, sizeof res->message, "%s: out of memory", p->conf->name);
        return;
    }
    vg_buf_free(&res->body);
    res->body = wav;
}

static void parse_tts(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    tts_out o;
    if (!tts_out_of(job->tts.format, &o)) {
        bad(p, c, res, "format not requested");
        return;
    }
    vg_remote_take_audio(p, c, res, o.ctype);
    if (res->status != VG_PR_OK)
        return;
    snprintf(res->content_type, sizeof res->content_type, "%s", o.ctype);
    if (o.rate && res->body.len % 2) {
        vg_buf_free(&res->body);
        bad(p, c, res, "PCM answer has an odd length");
    } else if (o.wav) {
        wrap_wav(p, c, res);
    }
}

void vg_yandex_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res)
{
    if (res->status != VG_PR_OK)
        parse_error(p, c, res);
    else if (job->kind == VG_KIND_STT)
        parse_stt(p, job, c, res);
    else
        parse_tts(p, job, c, res);
}

/* ---- the provider ---- */

static void list_of(char *msg, size_t len, const char *what, const char *const *l, size_t n)
{
    size_t o = (size_t)snprintf(msg, len, "yandex supports %s ", what);
    for (size_t i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(msg + o, len - o, "%s%s", i ? ", " : "", l[i]);
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static int voice_refusal(vg_provider *p, const vg_tts_job *t, char *code, size_t cl, char *msg,
                         size_t ml)
{
    /* A voice the operator configured is trusted: Yandex adds voices. */
    if (voice_lang(t->voice) || !strcmp(t->voice, p->conf->voice))
        return VG_OK;
    snprintf(code, cl, "unknown_voice");
    size_t o = (size_t)snprintf(msg, ml, "yandex voices: ");
    for (size_t i = 0; i < VG_ARRAY_LEN(voices) && o < ml; i++)
        o += (size_t)snprintf(msg + o, ml - o, "%s%s (%s)", i ? ", " : "", voices[i].id,
                              voices[i].lang);
    return VG_EINVAL;
}

static int check_tts(vg_provider *p, const vg_tts_job *t, char *code, size_t cl, char *msg,
                     size_t ml)
{
    tts_out o;
    if (!tts_out_of(t->format, &o)) {
        snprintf(code, cl, "unsupported_format");
        list_of(msg, ml, "audio formats", tts_formats, VG_ARRAY_LEN(tts_formats));
        return VG_EINVAL;
    }
    if (t->speed < SPEED_MIN || t->speed > SPEED_MAX)
        return refuse(code, cl, msg, ml, "unsupported_speed",
                      "yandex supports speed 0.1 to 3.0");
    if (*t->instructions && find(emotions, VG_ARRAY_LEN(emotions), t->instructions) < 0) {
        snprintf(code, cl, "unsupported_instructions");
        list_of(msg, ml, "instructions naming an emotion:", emotions, VG_ARRAY_LEN(emotions));
        return VG_EINVAL;
    }
    if (utf8_chars(t->text, t->text_len) > TTS_MAX_CHARS)
        return refuse(code, cl, msg, ml, "text_too_long",
                      "yandex (SpeechKit v1) synthesises at most 5000 characters");
    return voice_refusal(p, t, code, cl, msg, ml);
}

static int check_language(const char *language, char *code, size_t cl, char *msg, size_t ml)
{
    if (vg_yandex_lang(language))
        return VG_OK;
    snprintf(code, cl, "unsupported_language");
    size_t o = (size_t)snprintf(msg, ml, "yandex takes a full code (ll-RR) or one of ");
    for (size_t i = 0; i < VG_ARRAY_LEN(langs) && o < ml; i++)
        o += (size_t)snprintf(msg + o, ml - o, "%s%s", i ? ", " : "", langs[i].code);
    return VG_EINVAL;
}

static int op_check(vg_provider *p, const vg_job *job, char *code, size_t cl, char *msg,
                    size_t ml)
{
    bool tts = job->kind == VG_KIND_TTS;
    if (check_language(tts ? job->tts.language : job->stt.language, code, cl, msg, ml) != VG_OK)
        return VG_EINVAL;
    if (tts)
        return check_tts(p, &job->tts, code, cl, msg, ml);
    if (find(stt_formats, VG_ARRAY_LEN(stt_formats), job->stt.response_format) < 0) {
        snprintf(code, cl, "unsupported_format");
        list_of(msg, ml, "response formats (v1 has no timings)", stt_formats,
                VG_ARRAY_LEN(stt_formats));
        return VG_EINVAL;
    }
    stt_plan pl;
    return stt_plan_of(&job->stt, &pl, code, cl, msg, ml);
}

/* What changes the output beyond the job's own fields: the mapped lang,
 * the fixed recognition flags, the v1 format and its rate, the emotion. */
static void op_key_extra(vg_provider *p, const vg_job *job, vg_buf *out)
{
    if (job->kind == VG_KIND_TTS) {
        tts_out o = {"", 0, "", false};
        tts_out_of(job->tts.format, &o);
        const char *emo = *job->tts.instructions ? job->tts.instructions : "default";
        vg_buf_printf(out, "lang=%s;emotion=%s;format=%s;sampleRateHertz=%u",
                      tts_lang(&job->tts), emo, o.format, o.rate);
        return;
    }
    stt_plan pl;
    char code[48], msg[256];
    if (stt_plan_of(&job->stt, &pl, code, sizeof code, msg, sizeof msg) != VG_OK)
        pl = (stt_plan){.format = "none"};
    vg_buf_printf(out,
                  "lang=%s;topic=%s;profanityFilter=false;rawResults=false;format=%s;"
                  "sampleRateHertz=%u",
                  stt_lang(&job->stt), topic_of(&job->stt), pl.format, pl.rate);
}

static int op_start(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud)
{
    return vg_remote_start(p, job, job->kind == VG_KIND_TTS ? build_tts : build_stt,
                           vg_yandex_parse, done, ud);
}

static const char *op_default_voice(vg_provider *p, const char *language)
{
    if (p->conf->voice[0])
        return p->conf->voice;
    const char *l = vg_yandex_lang(language);
    for (size_t i = 0; l && *l && i < VG_ARRAY_LEN(voices); i++)
        if (!strcasecmp(voices[i].lang, l) && strcmp(voices[i].lang, "ru-RU"))
            return voices[i].id;
    return DEFAULT_VOICE;
}

/* The STT "model" is v1's topic; TTS v1 has no models. */
static const char *op_default_model(vg_provider *p, vg_kind kind)
{
    return kind == VG_KIND_STT ? DEFAULT_TOPIC : "";
}

static void *op_voices(vg_provider *p)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < VG_ARRAY_LEN(voices); i++) {
        cJSON *v = cJSON_CreateObject();
        if (!v || !cJSON_AddItemToArray(arr, v) || !cJSON_AddStringToObject(v, "id", voices[i].id) ||
            !cJSON_AddStringToObject(v, "name", voices[i].id) ||
            !cJSON_AddStringToObject(v, "language", voices[i].lang) ||
            !cJSON_AddStringToObject(v, "engine", "speechkit-v1")) {
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static bool op_ready(vg_provider *p) { return true; }

static const vg_provider_ops yandex_ops = {
    .type = "yandex", .check = op_check, .start = op_start,
    .default_voice = op_default_voice, .default_model = op_default_model, .voices = op_voices,
    .key_extra = op_key_extra, .ready = op_ready, .destroy = vg_remote_provider_free,
};

/* Settings that cannot work are refused at startup, not per request. */
static int conf_error(const vg_provider_conf *conf, char *err, size_t errlen)
{
    const char *auth = conf->auth;
    if (*auth && strcmp(auth, "api-key") && strcmp(auth, "iam"))
        snprintf(err, errlen, "providers.%s.auth: expected \"\", api-key or iam", conf->name);
    else if (conf->folder_id[0] && strcmp(auth, "iam"))
        snprintf(err, errlen, "providers.%s.folder_id: only sent with auth iam (an API key "
                 "uses its service account's folder)", conf->name);
    else if (!conf->api_key_env[0])
        snprintf(err, errlen, "providers.%s.api_key_env: yandex needs an API key or, with "
                 "auth iam, an IAM token", conf->name);
    else
        return VG_OK;
    return -1;
}

int vg_provider_yandex_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (conf_error(conf, err, errlen) != VG_OK)
        return -1;
    return vg_remote_provider_new(conf, e, &yandex_ops, out, err, errlen);
}
