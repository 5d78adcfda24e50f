/* Internal to the gateway: gateway.c parses requests and answers them;
 * gw_run.c owns the providers and runs misses (single flight, chain,
 * retries, storage, members' deadlines). */
#ifndef VOXGATE_API_GATEWAY_H
#define VOXGATE_API_GATEWAY_H

#include "voxgate/app.h"
#include "voxgate/audio.h"
#include "voxgate/flight.h"
#include "voxgate/http.h"
#include "voxgate/metrics.h"
#include "voxgate/provider.h"

#define GW_MAX_PARTS 64

typedef enum { GW_TTS, GW_STT, GW_SPEECH, GW_TRANSCRIBE } gw_api;

/* One gateway provider with its admission state and figures. */
typedef struct gw_prov {
    vg_provider *p;
    const vg_provider_conf *conf;
    vg_breaker *breaker;
    vg_bulkhead *slots;
    _Atomic uint64_t cool_until_ms;  /* a 429 took it out of use until then */
    vg_counter calls, failures, timeouts, retries, coalesced, cooldowns, skipped;
    vg_hist latency_us;
} gw_prov;

/* The job as one provider of the chain runs it, and its cache key. */
typedef struct gw_target {
    gw_prov *gp;
    char voice[65];
    char model[65];
    vg_job job;
    vg_key_parts parts;
    char hash[VG_SHA256_HEX + 1];
    char key[VG_KEY_MAX];
    size_t klen;
} gw_target;

/* A request's canonical job: owns every string the targets point at, so
 * the flight can outlive the request that started it. */
typedef struct gw_job {
    gw_api api;
    vg_kind kind;
    char rid[VG_REQID_MAX + 1];
    char *text;
    size_t text_len;
    char *instructions;
    char *prompt;
    vg_buf audio;
    const vg_audio_type *audio_type;
    char filename[32];
    char voice[65], language[65], provider[65], model[65];
    char format[16], response_format[16], granularities[16];
    double speed, temperature;
    gw_target t[VG_MAX_CHAIN];
    size_t n;
} gw_job;

gw_job *gw_job_new(gw_api api, const char *rid);
void gw_job_free(gw_job *j);
/* Fill j->t from provider names (none: the default chain); false with a
 * message when a name is not a gateway provider. */
bool gw_chain(gw_job *j, const char *const *names, size_t n, char *msg, size_t msglen);
/* The target's voice and upstream model, defaults filled in. */
void gw_target_defaults(const gw_job *j, gw_target *t);

/* What a member answers with, whichever way it came (hit or flight). */
typedef struct gw_answer {
    const char *cache;      /* hit_l1 | hit_l2 | miss | coalesced */
    const char *data;
    size_t len;
    const char *ctype;
    const char *format;     /* TTS format or STT response_format */
    const char *language;
    const char *provider;   /* app-lifetime string */
    char sha256[VG_SHA256_HEX + 1];
    const char *key;        /* the entry's key, for a TTS audio_url; NULL = none */
    bool stored;            /* the entry is in the cache (an audio_url can be made) */
    uint32_t duration_ms;
    void (*release)(void *cls);  /* when set, gw_answer_send calls it once data is no
                                    longer needed (zero-copy for audio) */
    void *release_cls;
    bool from_file;         /* the audio is len bytes of fd from fd_off (a large L2
                               hit); gw_answer_send closes fd */
    int fd;
    uint64_t fd_off;
} gw_answer;

void gw_answer_provider(gw_answer *a, const gw_prov *gp);
void gw_answer_send(vg_req *r, gw_api api, const gw_answer *a);
/* /v1/tts with Accept: application/json (metadata and audio_url, not audio). */
bool gw_wants_json(vg_req *r);
void gw_reply_error(vg_req *r, gw_api api, unsigned status, const char *code,
                    const vg_header *h, size_t nh, const char *msg);

/* A miss: join or lead the flight of j and park the request; takes j. */
void gw_miss(vg_req *r, gw_api api, gw_job *j);

#endif
