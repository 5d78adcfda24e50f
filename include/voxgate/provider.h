/* The provider seam (SPEC §5 "Gateway API"). A provider takes one
 * canonical STT or TTS job and produces a result or a classified error.
 * Remote providers (openai and OpenAI-compatible servers; later
 * elevenlabs, deepgram, yandex) build one HTTP request per attempt and
 * parse its answer; the shared curl-multi engine runs every request on
 * one event thread. The local provider runs jobs on its own worker
 * threads. Either way the gateway calls vg_provider_start and gets exactly
 * one done() callback; it never knows which kind it talks to.
 *
 * Retries, fallbacks, breakers, rate limits, concurrency slots and
 * caching are the gateway's (src/api/gateway.c): a provider runs one
 * attempt and says how it ended. */
#ifndef VOXGATE_PROVIDER_H
#define VOXGATE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/config.h"
#include "voxgate/keys.h"
#include "voxgate/util.h"

/* ---- jobs ---- */

/* Every string is NUL-terminated and non-NULL ("" = not given). The
 * gateway fills in defaults before the job reaches a provider (voice,
 * model, format), so two jobs with equal fields produce the same output
 * and share a cache entry. */
typedef struct vg_tts_job {
    const char *text;          /* UTF-8, 1..limits.max_tts_chars characters */
    size_t text_len;           /* bytes */
    const char *voice;         /* provider voice id, never "" */
    const char *language;      /* "" = none given */
    const char *model;         /* upstream model; "" = the provider has none */
    const char *format;        /* wav | pcm | mp3 | opus | aac | flac */
    double speed;              /* 0.25..4.0, 1.0 default */
    const char *instructions;  /* style instructions, "" = none */
} vg_tts_job;

typedef struct vg_stt_job {
    const void *audio;
    size_t audio_len;
    const char *audio_type;    /* media type of the audio: "audio/wav", "audio/mpeg", ... */
    const char *filename;      /* a name with the matching extension: "audio.wav" */
    const char *language;      /* "" = detect */
    const char *model;         /* upstream model; "" = the provider has none */
    const char *prompt;        /* "" = none */
    const char *response_format; /* json | text | srt | verbose_json | vtt */
    double temperature;        /* 0..1, 0 default */
    const char *granularities; /* "" | "segment" | "word" | "segment,word" (verbose_json) */
} vg_stt_job;

typedef struct vg_job {
    vg_kind kind;              /* VG_KIND_STT or VG_KIND_TTS: which of tts/stt is set */
    vg_tts_job tts;
    vg_stt_job stt;
    const char *request_id;    /* voxgate's; sent upstream as X-Request-ID */
    uint32_t timeout_ms;       /* this attempt's budget, whole call */
} vg_job;

/* ---- results ---- */

/* How one attempt ended; ../shared/notes/providers.md §9 maps each to
 * what the gateway does next. */
typedef enum {
    VG_PR_OK = 0,
    VG_PR_RATE_LIMITED,   /* 429 (not quota): cool down for retry_after_ms, next provider */
    VG_PR_QUOTA,          /* out of credit (OpenAI 429 insufficient_quota, ...): next provider */
    VG_PR_AUTH,           /* 401/403: bad key or role; next provider */
    VG_PR_INPUT,          /* 400/404/413/415/422: the input or an option was refused */
    VG_PR_RETRYABLE,      /* 5xx, 408, 409: retry; a breaker failure */
    VG_PR_CONNECT,        /* no connection / reset: retry; a breaker failure */
    VG_PR_TIMEOUT,        /* the attempt ran out of time: retry; a breaker timeout */
    VG_PR_BAD_RESPONSE,   /* 2xx whose body is not what the provider documents; a failure */
    VG_PR_INTERNAL,       /* voxgate's own failure (memory, the local engine, shutdown) */
} vg_pr_status;

const char *vg_pr_status_name(vg_pr_status s); /* "ok", "rate_limited", ... */

/* Filled by the provider. body and content_type are set for VG_PR_OK:
 * - TTS: the audio bytes and their media type ("audio/wav", "audio/mpeg",
 *   "audio/pcm;rate=24000" ...).
 * - STT: one JSON object with at least a string "text". For
 *   response_format json and verbose_json it is the provider's JSON as
 *   returned; for text, srt and vtt it is {"text": <the body as returned>}
 *   (so the srt/vtt document is the "text" member). */
typedef struct vg_presult {
    vg_pr_status status;
    unsigned http_status;       /* upstream HTTP status; 0 when there was none */
    uint64_t retry_after_ms;    /* from Retry-After / retry-after-ms; 0 = not given */
    char upstream_id[129];      /* the provider's request id ("" = none), logged */
    char message[256];          /* for the client and the log; never upstream text that
                                   could echo a key, never a request body */
    vg_buf body;
    char content_type[96];
    uint32_t duration_ms;       /* STT: length of the audio when known, else 0 */
} vg_presult;

void vg_presult_free(vg_presult *res);

/* ---- providers ---- */

typedef struct vg_provider vg_provider;

/* Runs exactly once per successful start, on the engine's or the
 * provider's own thread, never inside start itself (it may run before
 * start has returned). res is valid only during the call; the callee may
 * take res->body (then zero it). */
typedef void (*vg_provider_done)(void *ud, vg_presult *res);

typedef struct vg_provider_ops {
    const char *type;          /* "openai" | "local" | ... (providers.<name>.type) */
    /* Refuses a job this provider cannot run before anything is called:
     * VG_OK, or VG_EINVAL with a snake_case code ("unsupported_format",
     * "unknown_voice", "unsupported_media_type" -> 415, ...) and a message
     * for the client that lists what is supported. No side effects. */
    int (*check)(vg_provider *p, const vg_job *job, char *code, size_t codelen, char *msg,
                 size_t msglen);
    /* Starts one attempt. The job and everything it points at stay valid
     * until done has run. VG_OK, or an error (then done never runs). */
    int (*start)(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud);
    /* The voice a TTS job gets when the request names none, for a
     * language ("" = none given); never NULL. */
    const char *(*default_voice)(vg_provider *p, const char *language);
    /* The voices it offers as a cJSON array of {"id","name","language",
     * "engine"} objects (GET /v1/voices), or NULL when it has no fixed
     * list. The caller deletes it. */
    void *(*voices)(vg_provider *p);
    /* The upstream model of a job whose request and configuration name
     * none ("" = the provider has no models, e.g. local). NULL hook = "". */
    const char *(*default_model)(vg_provider *p, vg_kind kind);
    /* Output-affecting settings of this provider beyond the job's fields
     * (e.g. fixed voice settings, a topic, a sample rate from its
     * configuration), written canonically (same settings, same bytes)
     * into out; they become part of the cache key. NULL hook = none. */
    void (*key_extra)(vg_provider *p, const vg_job *job, vg_buf *out);
    /* Ready check (/ready "providers"): true when it can take work. */
    bool (*ready)(vg_provider *p);
    void (*destroy)(vg_provider *p);
} vg_provider_ops;

struct vg_provider {
    const vg_provider_ops *ops;
    const vg_provider_conf *conf;  /* name, type, base_url, timeouts ... (config.h) */
    struct vg_engine *engine;      /* remote providers: the shared engine */
    char *api_key;                 /* from conf->api_key_env; NULL = none. Never logged. */
};

static inline int vg_provider_check(vg_provider *p, const vg_job *j, char *code, size_t cl,
                                    char *msg, size_t ml)
{ return p->ops->check ? p->ops->check(p, j, code, cl, msg, ml) : VG_OK; }
static inline int vg_provider_start(vg_provider *p, const vg_job *j, vg_provider_done done,
                                    void *ud)
{ return p->ops->start(p, j, done, ud); }

/* Constructors, one per type (src/provider/<type>.c). conf and engine
 * outlive the provider. On error: -1 with a message naming the field. */
struct vg_engine;
/* The constructor for conf->type (src/provider/registry.c). */
int vg_provider_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                    char *err, size_t errlen);
/* "openai|local|..." : every type the registry knows, for messages. */
const char *vg_provider_types(void);
bool vg_provider_type_known(const char *type);
int vg_provider_openai_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                           char *err, size_t errlen);
int vg_provider_yandex_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                           char *err, size_t errlen);
int vg_provider_elevenlabs_new(const vg_provider_conf *conf, struct vg_engine *e,
                               vg_provider **out, char *err, size_t errlen);
int vg_provider_deepgram_new(const vg_provider_conf *conf, struct vg_engine *e, vg_provider **out,
                             char *err, size_t errlen);
int vg_provider_local_new(const vg_provider_conf *conf, vg_provider **out, char *err,
                          size_t errlen);

/* ---- the curl-multi engine (src/provider/engine.c) ---- */

/* One event thread runs every provider HTTP call and every gateway timer,
 * so a worker thread never blocks on a provider. */
typedef struct vg_engine vg_engine;

int vg_engine_new(vg_engine **out);
/* Fails every call still running (VG_PR_INTERNAL "shutting down"),
 * then runs every pending timer once, early (owners release what they
 * hold; nothing new can be submitted or scheduled), and joins the thread. */
void vg_engine_free(vg_engine *e);
/* Calls in flight now (for /stats and tests). */
size_t vg_engine_inflight(vg_engine *e);

/* One HTTP exchange. The provider creates it, sets the method, URL,
 * headers and body through the CURL handle (the engine already set
 * timeouts, no signals, header and body capture), then submits it. */
typedef struct vg_http_call vg_http_call;
struct vg_http_call {
    void *easy;                    /* CURL *: set CURLOPT_URL, CURLOPT_POSTFIELDS... on it */
    struct curl_slist *headers;    /* appended by the provider; freed with the call */
    void *mime;                    /* curl_mime *, freed with the call */
    vg_buf req_body;               /* a body the provider owns for CURLOPT_POSTFIELDS */
    uint64_t max_resp_bytes;       /* larger answers fail as VG_PR_BAD_RESPONSE */

    /* Filled by the engine before on_done runs. */
    int curl_code;                 /* CURLcode; 0 = an HTTP answer arrived */
    long http_status;
    vg_buf resp_body;
    char content_type[128];
    char retry_after[64];          /* raw Retry-After header value, "" = none */
    char retry_after_ms[32];       /* raw retry-after-ms header value */
    char upstream_id[129];         /* x-request-id | request-id | dg-request-id | ... */
    uint64_t duration_us;          /* submit to answer */
};

/* A call with the engine's defaults: timeout_ms for the whole exchange,
 * connect_timeout_ms, a low-speed cutoff, TLS verification on (ca_file
 * when not NULL/""), "Expect:" cleared. NULL on out of memory. */
vg_http_call *vg_http_call_new(vg_engine *e, uint32_t timeout_ms, uint32_t connect_timeout_ms,
                               const char *ca_file);
void vg_http_call_free(vg_http_call *c);
/* Runs c on the event thread; on_done(c, ud) runs there once it ended
 * (curl_code says how). The callee then owns c and frees it. */
int vg_engine_submit(vg_engine *e, vg_http_call *c, void (*on_done)(vg_http_call *c, void *ud),
                     void *ud);

/* Timers on the event thread: fn(ud) runs once after delay_ms unless
 * cancelled first. Returns an id > 0 (0 on out of memory). Cancel returns
 * true when it removed the timer before it ran. */
uint64_t vg_engine_after(vg_engine *e, uint64_t delay_ms, void (*fn)(void *ud), void *ud);
bool vg_engine_cancel(vg_engine *e, uint64_t id);

/* ---- helpers shared by remote providers (src/provider/remote.c) ---- */

/* Retry-After (delta seconds, fractions allowed, or an HTTP-date) and
 * retry-after-ms, the latter first; now_ms is the wall clock. Returns ms,
 * 0 when neither is usable. Capped at cap_ms. */
uint64_t vg_parse_retry_after(const char *retry_after, const char *retry_after_ms,
                              uint64_t now_ms, uint64_t cap_ms);

/* The default classification of an answer by HTTP status (providers.md
 * §0/§9): 2xx OK, 429 RATE_LIMITED, 401/403 AUTH, 408/409/5xx RETRYABLE,
 * other 4xx INPUT. Providers refine it from their error bodies (quota). */
vg_pr_status vg_pr_classify_http(long status);

/* Fills res for a call that got no HTTP answer (timeout, connect error,
 * answer too large) from curl_code; false when c has an HTTP answer. */
bool vg_pr_from_transport(const vg_http_call *c, vg_presult *res);

/* ---- one remote attempt (src/provider/remote.c; added for issue 6) ---- */

/* build sets the URL, method, headers and body of c (VG_OK, or an error:
 * then nothing is sent and vg_remote_start returns it). parse turns an
 * HTTP answer into res; it runs on the event thread and may take
 * c->resp_body. res arrives with status, http_status, upstream_id and
 * retry_after_ms (capped at conf->cooldown_max_ms) already filled. */
typedef int (*vg_remote_build_fn)(vg_provider *p, const vg_job *job, vg_http_call *c);
typedef void (*vg_remote_parse_fn)(vg_provider *p, const vg_job *job, vg_http_call *c,
                                   vg_presult *res);

/* One attempt: a call with the job's timeout and the provider's connect
 * timeout, CA file and answer cap, plus "X-Request-ID: job->request_id";
 * then build, submit, and on completion a vg_presult (transport errors
 * classified here, HTTP answers by parse) handed to done on the event
 * thread. VG_OK, or an error (done never runs). */
int vg_remote_start(vg_provider *p, const vg_job *job, vg_remote_build_fn build,
                    vg_remote_parse_fn parse, vg_provider_done done, void *ud);

/* What an attempt hands to done: res zeroed, then filled from c (a
 * transport failure, or parse for an HTTP answer). The caller frees res. */
void vg_remote_result(vg_provider *p, const vg_job *job, vg_http_call *c,
                      vg_remote_parse_fn parse, vg_presult *res);

/* Appends one "Name: value" line (printf format) to c->headers. */
int vg_remote_header(vg_http_call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A provider of ops for conf: base_url checked (http or https), the key
 * read from conf->api_key_env. -1 with a message naming the field. */
int vg_remote_provider_new(const vg_provider_conf *conf, struct vg_engine *e,
                           const vg_provider_ops *ops, vg_provider **out, char *err,
                           size_t errlen);
/* Its destroy: the key is wiped, then freed. */
void vg_remote_provider_free(vg_provider *p);

/* conf->base_url, else dflt, without a trailing '/', then path. */
int vg_remote_url(const vg_provider *p, const char *dflt, const char *path, vg_buf *out);

/* The key from getenv(conf->api_key_env): *key NULL when no variable is
 * configured; -1 with a message naming the field when it is unset. */
int vg_remote_key(const vg_provider_conf *conf, char **key, char *err, size_t errlen);

/* A non-2xx answer: status by vg_pr_classify_http, message
 * "<name>: <http status>[ <code>]" with code cut to [A-Za-z0-9_.-]. */
void vg_remote_http_error(const vg_provider *p, const vg_http_call *c, vg_presult *res,
                          const char *code);

/* Appends ": <text>" to res->message, control characters dropped and
 * key-like words ("sk-...", long runs of letters and digits) masked.
 * For errors about the input only: never for 401/403. */
void vg_remote_add_detail(vg_presult *res, const char *text);

/* A 2xx TTS answer: OK with the body and the upstream audio type (else
 * fallback_ct); BAD_RESPONSE when the body is empty or the answer is
 * JSON or text (an error body under 200, or garbage). */
void vg_remote_take_audio(const vg_provider *p, vg_http_call *c, vg_presult *res,
                          const char *fallback_ct);

/* ---- openai internals, exposed for tests (src/provider/openai.c) ---- */

/* The JSON body of POST {base}/audio/speech. */
int vg_openai_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out);
/* The multipart text fields of POST {base}/audio/transcriptions in the
 * order sent (the file part is not included); stops at emit's error. */
int vg_openai_stt_fields(const vg_provider *p, const vg_job *job,
                         int (*emit)(void *ud, const char *name, const char *value), void *ud);
/* The parse step of an openai attempt (an HTTP answer into res). */
void vg_openai_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res);

/* ---- deepgram internals, exposed for tests (src/provider/deepgram.c) ---- */

/* The URL of an attempt: {base}/v1/listen?... (STT) or {base}/v1/speak?... (TTS). */
int vg_deepgram_url(const vg_provider *p, const vg_job *job, vg_buf *out);
/* The JSON body of POST /v1/speak: {"text": ...}. */
int vg_deepgram_tts_body(const vg_job *job, vg_buf *out);
/* The parse step of a deepgram attempt (an HTTP answer into res). */
void vg_deepgram_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res);

/* ---- elevenlabs internals, exposed for tests (src/provider/elevenlabs.c) ---- */

/* {base}/v1/text-to-speech/{voice}?output_format=...; VG_EINVAL for a
 * format or voice check() refuses. */
int vg_elevenlabs_tts_url(const vg_provider *p, const vg_job *job, vg_buf *out);
/* The JSON body of a TTS call, voice_settings always included. */
int vg_elevenlabs_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out);
/* The multipart text fields of POST {base}/v1/speech-to-text in the
 * order sent (not the file part); stops at emit's error. */
int vg_elevenlabs_stt_fields(const vg_provider *p, const vg_job *job,
                             int (*emit)(void *ud, const char *name, const char *value), void *ud);
/* The parse step of an elevenlabs attempt (an HTTP answer into res). */
void vg_elevenlabs_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res);

/* ---- yandex internals, exposed for tests (src/provider/yandex.c) ---- */

/* The SpeechKit v1 lang of a voxgate language: "ru" -> "ru-RU" (ru, en,
 * de, kk, uz, tr), a full "ll-RR" code as given, "" for ""/"auto" (the
 * caller then uses v1's or the voice's), NULL when it is neither. */
const char *vg_yandex_lang(const char *language);
/* POST URL of an STT job, query included; VG_EINVAL when check() refuses it. */
int vg_yandex_stt_url(const vg_provider *p, const vg_job *job, vg_buf *out);
int vg_yandex_tts_url(const vg_provider *p, vg_buf *out);
/* The form-urlencoded body of a TTS job. */
int vg_yandex_tts_body(const vg_provider *p, const vg_job *job, vg_buf *out);
/* x-client-request-id: the request id when it is a UUID, else a UUIDv8
 * from SHA-256("voxgate:" id). */
void vg_yandex_client_id(const char *request_id, char out[37]);
void vg_yandex_parse(vg_provider *p, const vg_job *job, vg_http_call *c, vg_presult *res);

#endif
