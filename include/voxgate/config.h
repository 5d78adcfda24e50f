/* Configuration: defaults, one JSON file, then VOXGATE_* environment
 * overrides for every scalar. Unknown fields are errors. Secrets never
 * live in the file: it names the environment variables that hold them. */
#ifndef VOXGATE_CONFIG_H
#define VOXGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/breaker.h"
#include "voxgate/log.h"

#define VG_CONF_STR 256
#define VG_MAX_PROVIDERS 64
#define VG_MAX_VOICE_MAP 16

typedef struct vg_provider_conf {
    char name[65];           /* identifier rule */
    /* Gateway (issue 6). type "" in the file = the name when it is a
     * type ("openai", "local"); else "" stays: the entry then only sets
     * the breaker and cache_epoch of a provider the application calls
     * itself (gating and cache-aside APIs), and no chain may name it. */
    char type[16];                  /* openai | local | elevenlabs | deepgram | yandex */
    char base_url[VG_CONF_STR];     /* "" = the type's ("https://api.openai.com/v1") */
    char api_key_env[VG_CONF_STR];  /* env var holding the key; "" = none */
    char ca_file[VG_CONF_STR];      /* "" = system CAs; TLS is always verified */
    uint32_t timeout_ms;            /* 30000: one attempt at most */
    uint32_t connect_timeout_ms;    /* 3000 */
    uint32_t max_retries;           /* 2: extra attempts on retryable errors */
    uint32_t retry_base_ms;         /* 250: backoff base (full jitter, doubling) */
    uint32_t retry_max_ms;          /* 8000: backoff cap */
    uint32_t cooldown_default_ms;   /* 1000: a 429 without Retry-After */
    uint32_t cooldown_max_ms;       /* 120000: cap on a 429's Retry-After */
    uint32_t max_concurrency;       /* 16 calls in flight */
    uint32_t max_queue;             /* 64 waiting for a slot; full = next provider */
    char rate_limit[65];            /* a ratelimit.policies name; "" = none */
    char tts_model[65];             /* "" = the type's ("tts-1"; local: none) */
    char stt_model[65];             /* "" = the type's ("whisper-1") */
    char voice[65];                 /* "" = the type's ("alloy"; local "slt") */
    /* "voices": {"alloy": "slt"}: a request's voice as this provider's,
     * so a chain can fall back across providers with other voice names. */
    struct { char from[65], to[65]; } voices[VG_MAX_VOICE_MAP];
    size_t n_voices;
    uint64_t max_response_bytes;    /* 67108864 */
    char auth[16];                  /* "" = the type's scheme; yandex: api-key | iam */
    char folder_id[65];             /* yandex: folderId sent with an IAM token; "" = none */
    uint32_t cache_epoch;    /* part of every cache key of this provider */
    /* Circuit breaker (issue 5): fields left 0 / 0.0 in the file inherit
     * breakers.*; vg_config_finish fills them in. */
    vg_breaker_settings breaker;
} vg_provider_conf;

/* A model (issue 6): "models": {"tts-1": ["openai", "local"]}. */
#define VG_MAX_MODELS 64
#define VG_MAX_CHAIN 8
typedef struct vg_model_conf {
    char name[65];                  /* identifier rule */
    char chain[VG_MAX_CHAIN][65];   /* provider names, each configured */
    size_t n_chain;
} vg_model_conf;

/* A named rate limit (issue 4): POST /v1/ratelimit/check {policy, key},
 * and ratelimit.client_policy for every /v1 request. */
#define VG_MAX_POLICIES 32
typedef struct vg_policy_conf {
    char name[65];           /* identifier rule */
    uint32_t limit;          /* 100 */
    uint64_t window_ms;      /* 1000 */
    char algorithm[16];      /* "sliding_log" | "gcra" */
    char fail_mode[8];       /* "open" | "closed" */
} vg_policy_conf;

typedef struct vg_config {
    char listen[VG_CONF_STR];        /* "127.0.0.1:8080"; "[::1]:8080" for IPv6 */
    char data_dir[VG_CONF_STR];      /* "./voxgate-data" */
    vg_log_level log_level;          /* "info" */
    uint32_t threads;                /* 0 = one per core */
    char event_loop[8];              /* "epoll" | "poll": how HTTP threads wait */
    uint32_t shutdown_timeout_ms;    /* 10000 */
    char api_keys_env[VG_CONF_STR];  /* "VOXGATE_API_KEYS" (comma separated keys) */
    char admin_keys_env[VG_CONF_STR];/* "VOXGATE_ADMIN_KEYS" */
    bool metrics_public;             /* false */

    struct {
        uint64_t max_body_bytes;        /* 26214400 (25 MiB) */
        uint32_t max_tts_chars;         /* 5000 */
        uint32_t max_header_bytes;      /* 16384: all request headers together */
        uint32_t max_url_bytes;         /* 8192 */
        uint32_t max_connections;       /* 1024 */
        uint32_t max_connections_per_ip;/* 0 = unlimited */
        uint32_t idle_timeout_s;        /* 30 */
    } limits;

    struct {
        char prefix[65];                /* "voxgate" (identifier rule) */
        uint64_t stt_ttl_s;             /* 86400 */
        uint64_t tts_ttl_s;             /* 604800 */
        uint64_t max_ttl_s;             /* 2592000 (30 days) */
        uint32_t batch_max_items;       /* 100 */
        uint32_t audio_sweep_interval_s;/* 3600; 0 = never */
        uint32_t audio_sweep_grace_s;   /* 3600 */
        struct {
            uint64_t max_bytes;         /* 67108864 (64 MiB) */
            uint32_t max_entries;       /* 100000 */
            uint32_t shards;            /* 16 */
            uint64_t max_item_bytes;    /* 1048576 */
        } l1;
        struct {
            uint64_t max_bytes;         /* 1073741824 (1 GiB) */
            uint32_t sweep_interval_s;  /* 60 */
            char sync[8];               /* "meta": full | meta | none */
        } lmdb;
    } cache;

    /* Redis: the shared L2 tier and rate-limit state when redis_url is
     * set (issue 4). Empty = embedded (LMDB, in-process limiter). */
    char redis_url[VG_CONF_STR];        /* redis://[user:pass@]host:port[/db] | unix:///path */
    struct {
        uint32_t connect_timeout_ms;    /* 500 */
        uint32_t command_timeout_ms;    /* 250: bound on each socket read/write */
        uint32_t backoff_base_ms;       /* 100: first pause after a failure */
        uint32_t backoff_max_ms;        /* 5000: cap of the doubling pause */
    } redis;
    struct {
        char fail_mode[8];              /* "open": allow (counted) when the store is down; "closed": 503 */
        uint32_t max_keys;              /* 100000: keys the in-process limiter holds */
        char client_policy[65];         /* "": none; else the policy limiting /v1 per API key */
        vg_policy_conf policies[VG_MAX_POLICIES];
        size_t n_policies;
    } ratelimit;

    /* Circuit breakers (issue 5): settings of every breaker unless a
     * provider overrides them, and how many the gating API may create
     * for providers that are not configured. */
    struct {
        vg_breaker_settings defaults;   /* 5, 0.5, 20, 10, 30000, 1, 1, 30000 */
        uint32_t max_count;             /* 1000 */
    } breakers;

    /* Object storage (issue 8): an S3-compatible bucket when s3.endpoint
     * is set, else the local blob directory under data_dir. */
    struct {
        char endpoint[VG_CONF_STR];          /* "" = local blobs; "http://127.0.0.1:9000" */
        char public_endpoint[VG_CONF_STR];   /* "" = endpoint: the host presigned URLs name */
        char bucket[64];                     /* 3-63 of [a-z0-9.-] */
        char region[64];                     /* "us-east-1" */
        char access_key_env[VG_CONF_STR];    /* "VOXGATE_S3_ACCESS_KEY" */
        char secret_key_env[VG_CONF_STR];    /* "VOXGATE_S3_SECRET_KEY" */
        char session_token_env[VG_CONF_STR]; /* "" = none */
        bool path_style;                     /* true: endpoint/bucket/key */
        bool create_bucket;                  /* false */
        uint32_t connect_timeout_ms;         /* 2000 */
        uint32_t timeout_ms;                 /* 10000: whole S3 operation */
        uint32_t max_idle_connections;       /* 16 pooled curl handles */
    } s3;
    struct {
        char url_key_env[VG_CONF_STR];       /* "" = a key generated in data_dir */
        char public_url[VG_CONF_STR];        /* "" = http://{Host} of the request */
    } files;

    vg_provider_conf providers[VG_MAX_PROVIDERS];
    size_t n_providers;

    /* Gateway (issue 6): the request budget, and "models": a model name
     * -> the chain of providers tried in order. */
    struct {
        uint32_t timeout_ms;            /* 60000: a whole gateway request */
        uint32_t max_inflight;          /* 10000 distinct calls (single flights) at once */
        char tts_model[65];             /* "" : the model a request without one gets */
        char stt_model[65];
    } gateway;
    vg_model_conf models[VG_MAX_MODELS];
    size_t n_models;

    /* Resolved at load time from the environment variables named above;
     * each is a malloc'd array of malloc'd strings. Never logged. */
    char **api_keys;
    size_t n_api_keys;
    char **admin_keys;
    size_t n_admin_keys;
} vg_config;

/* Fill cfg with defaults. */
void vg_config_defaults(vg_config *cfg);

/* Apply a JSON document over cfg. On error returns -1 and writes a
 * message that starts with the field path: "cache.l1.max_bytes: expected
 * integer", "limits.bogus: unknown field", "(root): invalid JSON at line 3". */
int vg_config_apply_json(vg_config *cfg, const char *json, size_t len, char *err, size_t errlen);
int vg_config_apply_file(vg_config *cfg, const char *path, char *err, size_t errlen);

/* Apply VOXGATE_<PATH> overrides (path upper-cased, '.' -> '_'), e.g.
 * VOXGATE_LISTEN, VOXGATE_CACHE_L1_MAX_BYTES,
 * VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH (providers already in the file).
 * getenv_fn lets tests supply an environment; NULL means getenv. Errors
 * name the variable. */
int vg_config_apply_env(vg_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                        size_t errlen);

/* Cross-field checks (ttl <= max_ttl, listen parses, ...), then read the
 * key lists from the environment. */
int vg_config_finish(vg_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                     size_t errlen);

/* defaults -> file (when path != NULL) -> env -> finish. */
int vg_config_load(vg_config *cfg, const char *path, char *err, size_t errlen);

/* The effective configuration as JSON (secrets never included). */
char *vg_config_to_json(const vg_config *cfg);

/* The documented list of every option: path, env name, type, default,
 * description; one line each (for --help-config and the README). */
char *vg_config_describe(void);

void vg_config_free(vg_config *cfg);

/* A configured rate-limit policy, NULL when there is none by that name. */
const vg_policy_conf *vg_config_policy(const vg_config *cfg, const char *name);
/* voice as provider p names it: its "voices" entry, else voice itself. */
const char *vg_provider_voice(const vg_provider_conf *p, const char *voice);

/* A configured provider / model by name, NULL when there is none. */
const vg_provider_conf *vg_config_provider(const vg_config *cfg, const char *name);
const vg_model_conf *vg_config_model(const vg_config *cfg, const char *name);
/* A provider entry with every default (breaker from cfg's breakers.*),
 * as if the file had named it with an empty object. */
void vg_provider_conf_defaults(vg_provider_conf *p, const char *name, const vg_config *cfg);
/* A provider the gateway can call (one with a type), NULL otherwise. */
const vg_provider_conf *vg_config_gateway_provider(const vg_config *cfg, const char *name);

/* cache_epoch of a provider, 0 when it is not configured. */
uint32_t vg_config_cache_epoch(const vg_config *cfg, const char *provider);

/* The breaker settings of a provider: its overrides over breakers.*
 * (the defaults alone when it is not configured). */
void vg_config_breaker(const vg_config *cfg, const char *provider, vg_breaker_settings *out);

/* Split "host:port" / "[v6]:port" into parts; false when malformed. */
bool vg_config_parse_listen(const char *listen, char *host, size_t hostlen, uint16_t *port);

#endif
