/* Configuration loading. One static table of option descriptors drives
 * everything: defaults, the JSON file, VOXGATE_* environment overrides,
 * the effective-config dump and the --help-config listing, so an option
 * added to the table is automatically parsed, overridable and documented.
 * Errors always start with the field path (or the environment variable)
 * so `voxgate --check-config` can point at the exact culprit. */
#include "voxgate/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/keys.h"
#include "voxgate/provider.h"
#include "voxgate/redis.h"
#include "voxgate/util.h"

/* How a value is stored and validated. All string kinds live in a char
 * array of the descriptor's size. */
typedef enum {
    T_STR,     /* free text */
    T_IDENT,   /* vg_ident_valid */
    T_ENVNAME, /* an environment variable name, or empty for none */
    T_LISTEN,  /* host:port */
    T_ENUM,    /* one of the '|'-separated choices */
    T_LEVEL,   /* vg_log_level, named like the log module names it */
    T_BOOL,
    T_U32,
    T_U64,
    T_REDIS_URL, /* empty, or what vg_redis_url_parse accepts; dumped without its password */
    T_RATE,    /* a fraction in (0, 1], stored as double (circuit breakers) */
} opt_type;

typedef struct opt {
    const char *path;    /* dotted, relative to the table's struct */
    opt_type type;
    size_t off;
    size_t size;         /* bytes of storage (string buffer size for strings) */
    uint64_t min, max;   /* integers only */
    const char *def;     /* default, written as an environment value would be */
    const char *choices; /* T_ENUM / T_LEVEL: "a|b|c" */
    const char *desc;
} opt;

#define MEMBER_SIZE(T, m) sizeof(((T *)0)->m)
#define O_STR(p, t, m, d, ch, ds) \
    {p, t, offsetof(vg_config, m), MEMBER_SIZE(vg_config, m), 0, 0, d, ch, ds}
#define O_INT(p, t, m, lo, hi, d, ds) \
    {p, t, offsetof(vg_config, m), MEMBER_SIZE(vg_config, m), lo, hi, d, NULL, ds}

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)
#define TEN_YEARS_S 315360000ull

/* The order here is the order of the JSON dump and of the docs. */
static const opt main_opts[] = {
    O_STR("listen", T_LISTEN, listen, "127.0.0.1:8080", NULL,
          "Address to listen on, host:port; IPv6 as [::1]:8080."),
    O_STR("data_dir", T_STR, data_dir, "./voxgate-data", NULL,
          "Directory for the LMDB cache (cache/) and the blob store (blobs/); not empty."),
    O_STR("log_level", T_LEVEL, log_level, "info", "debug|info|warn|error",
          "Minimum level of log lines written to stdout."),
    O_INT("threads", T_U32, threads, 0, 256, "0", "Worker threads; 0 = one per CPU core."),
    O_STR("event_loop", T_ENUM, event_loop, "epoll", "epoll|poll",
          "How HTTP threads wait for sockets (see docs/configuration.md)."),
    O_INT("shutdown_timeout_ms", T_U32, shutdown_timeout_ms, 0, 3600000, "10000",
          "How long a graceful shutdown waits for in-flight requests."),
    O_STR("api_keys_env", T_ENVNAME, api_keys_env, "VOXGATE_API_KEYS", NULL,
          "Name of the env var holding comma-separated API keys; empty = none."),
    O_STR("admin_keys_env", T_ENVNAME, admin_keys_env, "VOXGATE_ADMIN_KEYS", NULL,
          "Name of the env var holding comma-separated admin keys; empty = none."),
    {"metrics_public", T_BOOL, offsetof(vg_config, metrics_public),
     MEMBER_SIZE(vg_config, metrics_public), 0, 1, "false", NULL,
     "Serve /stats and /metrics without an admin key."},

    O_INT("limits.max_body_bytes", T_U64, limits.max_body_bytes, 1, TIB, "26214400",
          "Largest request body accepted (25 MiB)."),
    O_INT("limits.max_tts_chars", T_U32, limits.max_tts_chars, 1, 1000000, "5000",
          "Longest text accepted for synthesis, in characters."),
    O_INT("limits.max_header_bytes", T_U32, limits.max_header_bytes, 1024, 16 * MIB, "16384",
          "Largest total size of all request headers."),
    O_INT("limits.max_url_bytes", T_U32, limits.max_url_bytes, 256, 16 * MIB, "8192",
          "Longest request URL."),
    O_INT("limits.max_connections", T_U32, limits.max_connections, 1, 1000000, "1024",
          "Concurrent client connections."),
    O_INT("limits.max_connections_per_ip", T_U32, limits.max_connections_per_ip, 0, 1000000,
          "0", "Concurrent connections from one client IP; 0 = unlimited."),
    O_INT("limits.idle_timeout_s", T_U32, limits.idle_timeout_s, 1, 86400, "30",
          "Close connections idle for this long."),

    O_STR("cache.prefix", T_IDENT, cache.prefix, "voxgate", NULL,
          "First component of every cache key ([A-Za-z0-9_.-]{1,64})."),
    O_INT("cache.stt_ttl_s", T_U64, cache.stt_ttl_s, 1, TEN_YEARS_S, "86400",
          "Default lifetime of transcription entries; <= cache.max_ttl_s."),
    O_INT("cache.tts_ttl_s", T_U64, cache.tts_ttl_s, 1, TEN_YEARS_S, "604800",
          "Default lifetime of synthesis entries; <= cache.max_ttl_s."),
    O_INT("cache.max_ttl_s", T_U64, cache.max_ttl_s, 1, TEN_YEARS_S, "2592000",
          "Largest lifetime a client may request (30 days)."),
    O_INT("cache.batch_max_items", T_U32, cache.batch_max_items, 1, 10000, "100",
          "Most items in one batch request."),
    O_INT("cache.audio_sweep_interval_s", T_U32, cache.audio_sweep_interval_s, 0, 604800, "3600",
          "Period of the sweep that removes TTS audio no entry can use any more "
          "(first run at start); 0 = never."),
    O_INT("cache.audio_sweep_grace_s", T_U32, cache.audio_sweep_grace_s, 0, 604800, "3600",
          "TTS audio is kept this long past cache.max_ttl_s after it was written."),
    O_INT("cache.l1.max_bytes", T_U64, cache.l1.max_bytes, 1, TIB, "67108864",
          "Memory budget of the in-process L1 cache (64 MiB)."),
    O_INT("cache.l1.max_entries", T_U32, cache.l1.max_entries, 1, 100000000, "100000",
          "Most entries held in L1."),
    O_INT("cache.l1.shards", T_U32, cache.l1.shards, 1, 1024, "16",
          "Independently locked L1 shards (rounded up to a power of two)."),
    O_INT("cache.l1.max_item_bytes", T_U64, cache.l1.max_item_bytes, 1, TIB, "1048576",
          "Larger values are not kept in L1; <= cache.l1.max_bytes."),
    O_INT("cache.lmdb.max_bytes", T_U64, cache.lmdb.max_bytes, MIB, 1024 * TIB, "1073741824",
          "Logical bytes (keys + values) kept in LMDB; the soonest-expiring "
          "entries are evicted past it (1 GiB)."),
    O_INT("cache.lmdb.sweep_interval_s", T_U32, cache.lmdb.sweep_interval_s, 1, 86400, "60",
          "Period of the expired-entry sweeper."),
    O_STR("cache.lmdb.sync", T_ENUM, cache.lmdb.sync, "meta", "full|meta|none",
          "LMDB durability: full = fsync every commit, meta = MDB_NOMETASYNC, "
          "none = MDB_NOSYNC (flushed by the sweeper)."),

    /* Gateway (issue 6). */
    O_INT("gateway.timeout_ms", T_U32, gateway.timeout_ms, 1, 3600000, "60000",
          "Budget of a whole gateway request: every attempt, backoff and fallback; then 504."),
    O_INT("gateway.max_inflight", T_U32, gateway.max_inflight, 1, 10000000, "10000",
          "Distinct provider calls (single flights) at once; past it 503."),
    O_STR("gateway.tts_model", T_STR, gateway.tts_model, "", NULL,
          "Model (a models name) of a TTS request that names neither model nor provider; "
          "\"\" = every configured provider in order (local when none is)."),
    O_STR("gateway.stt_model", T_STR, gateway.stt_model, "", NULL,
          "The same for STT."),

    /* Circuit breakers (issue 5): the settings of every provider's breaker
     * unless providers.<name>.breaker overrides them. */
    O_INT("breakers.failure_threshold", T_U32, breakers.defaults.failure_threshold, 1, 1000000,
          "5", "Consecutive failures (5xx, timeouts, connection errors) that open a breaker."),
    O_INT("breakers.failure_rate_threshold", T_RATE, breakers.defaults.failure_rate_threshold,
          0, 1, "0.5",
          "Failure rate over the sliding window that opens a breaker (0 < rate <= 1)."),
    O_INT("breakers.window_size", T_U32, breakers.defaults.window_size, 1,
          VG_BREAKER_MAX_WINDOW, "20",
          "Calls in the sliding window (the last N recorded); >= breakers.min_calls."),
    O_INT("breakers.min_calls", T_U32, breakers.defaults.min_calls, 1, VG_BREAKER_MAX_WINDOW,
          "10", "Calls the window must hold before the failure rate can open a breaker."),
    O_INT("breakers.recovery_timeout_ms", T_U32, breakers.defaults.recovery_timeout_ms, 1,
          86400000, "30000", "How long a breaker stays open before it lets probes through."),
    O_INT("breakers.half_open_max_calls", T_U32, breakers.defaults.half_open_max_calls, 1,
          VG_BREAKER_MAX_PROBES, "1", "Probe calls let through per half-open period."),
    O_INT("breakers.success_threshold", T_U32, breakers.defaults.success_threshold, 1,
          VG_BREAKER_MAX_PROBES, "1",
          "Successful probes that close a half-open breaker; <= breakers.half_open_max_calls."),
    O_INT("breakers.call_timeout_ms", T_U32, breakers.defaults.call_timeout_ms, 1, 86400000,
          "30000", "A probe permit never recorded expires after this long, as a timeout."),
    O_INT("breakers.max_count", T_U32, breakers.max_count, 0, 100000, "1000",
          "Breakers the gating API may create for providers not configured; then 429."),

    /* Object storage and the Files API (issue 8). */
    O_STR("s3.endpoint", T_STR, s3.endpoint, "", NULL,
          "S3 API base URL (http:// or https://); set = audio and files in S3, "
          "empty = the local blob directory."),
    O_STR("s3.public_endpoint", T_STR, s3.public_endpoint, "", NULL,
          "Base URL presigned URLs are signed for (the host clients reach); empty = s3.endpoint."),
    O_STR("s3.bucket", T_STR, s3.bucket, "voxgate", NULL,
          "Bucket name (3-63 of [a-z0-9.-])."),
    O_STR("s3.region", T_STR, s3.region, "us-east-1", NULL, "Region used in signatures."),
    O_STR("s3.access_key_env", T_ENVNAME, s3.access_key_env, "VOXGATE_S3_ACCESS_KEY", NULL,
          "Name of the env var holding the access key id."),
    O_STR("s3.secret_key_env", T_ENVNAME, s3.secret_key_env, "VOXGATE_S3_SECRET_KEY", NULL,
          "Name of the env var holding the secret access key."),
    O_STR("s3.session_token_env", T_ENVNAME, s3.session_token_env, "", NULL,
          "Name of the env var holding a session token; empty = none."),
    {"s3.path_style", T_BOOL, offsetof(vg_config, s3.path_style),
     MEMBER_SIZE(vg_config, s3.path_style), 0, 1, "true", NULL,
     "Address objects as endpoint/bucket/key (MinIO); false = bucket.host/key (AWS)."},
    {"s3.create_bucket", T_BOOL, offsetof(vg_config, s3.create_bucket),
     MEMBER_SIZE(vg_config, s3.create_bucket), 0, 1, "false", NULL,
     "Create the bucket at start when it does not exist."},
    O_INT("s3.connect_timeout_ms", T_U32, s3.connect_timeout_ms, 1, 600000, "2000",
          "Bound on connecting to the S3 endpoint."),
    O_INT("s3.timeout_ms", T_U32, s3.timeout_ms, 1, 3600000, "10000",
          "Bound on one whole S3 operation."),
    O_INT("s3.max_idle_connections", T_U32, s3.max_idle_connections, 1, 1024, "16",
          "Idle S3 connections kept open for reuse."),
    O_STR("files.url_key_env", T_ENVNAME, files.url_key_env, "", NULL,
          "Name of the env var holding the key that signs local-store file URLs; empty = "
          "a key generated at first start in data_dir/url-signing.key."),
    O_STR("files.public_url", T_STR, files.public_url, "", NULL,
          "Base of signed local-store file URLs (https://voxgate.example); "
          "empty = http:// plus the request's Host."),

    /* Redis tier and rate limiting (issue 4). */
    O_STR("redis_url", T_REDIS_URL, redis_url, "", NULL,
          "redis://[user:pass@]host:port[/db] or unix:///path; set = Redis L2 and "
          "rate-limit state instead of LMDB and in-process."),
    O_INT("redis.connect_timeout_ms", T_U32, redis.connect_timeout_ms, 1, 60000, "500",
          "Bound on connecting to Redis (AUTH and SELECT included)."),
    O_INT("redis.command_timeout_ms", T_U32, redis.command_timeout_ms, 1, 60000, "250",
          "Bound on each read and write of a Redis round trip."),
    O_INT("redis.backoff_base_ms", T_U32, redis.backoff_base_ms, 1, 60000, "100",
          "First pause after a Redis failure; doubles per failure, with jitter."),
    O_INT("redis.backoff_max_ms", T_U32, redis.backoff_max_ms, 1, 600000, "5000",
          "Longest pause between Redis reconnection attempts; >= redis.backoff_base_ms."),
    O_STR("ratelimit.fail_mode", T_ENUM, ratelimit.fail_mode, "open", "open|closed",
          "When the limiter's store is down: open = allow (counted as fail_open), "
          "closed = 503."),
    O_INT("ratelimit.max_keys", T_U32, ratelimit.max_keys, 1, 100000000, "100000",
          "Keys the in-process limiter holds (lapsed ones are reclaimed first)."),
    O_STR("ratelimit.client_policy", T_STR, ratelimit.client_policy, "", NULL,
          "Policy (in ratelimit.policies) limiting every /v1 request per API key; \"\" = none."),
};

/* Options of one entry of "ratelimit.policies", relative to vg_policy_conf. */
static const opt policy_opts[] = {
    {"limit", T_U32, offsetof(vg_policy_conf, limit), MEMBER_SIZE(vg_policy_conf, limit), 1,
     1000000, "100", NULL, "Checks (units of cost) allowed per window."},
    {"window_ms", T_U64, offsetof(vg_policy_conf, window_ms),
     MEMBER_SIZE(vg_policy_conf, window_ms), 1, 2678400000ull, "1000", NULL,
     "Length of the window."},
    {"algorithm", T_ENUM, offsetof(vg_policy_conf, algorithm),
     MEMBER_SIZE(vg_policy_conf, algorithm), 0, 0, "sliding_log", "sliding_log|gcra",
     "sliding_log (exact sliding window) or gcra (bursts up to limit)."},
    {"fail_mode", T_ENUM, offsetof(vg_policy_conf, fail_mode),
     MEMBER_SIZE(vg_policy_conf, fail_mode), 0, 0, "open", "open|closed",
     "When the store is down: open = allow (counted), closed = deny (503)."},
};

/* Options of one entry of "providers", relative to vg_provider_conf. */
#define O_PSTR(p, t, m, d, ds) \
    {p, t, offsetof(vg_provider_conf, m), MEMBER_SIZE(vg_provider_conf, m), 0, 0, d, NULL, ds}
#define O_PINT(p, t, m, lo, hi, d, ds) \
    {p, t, offsetof(vg_provider_conf, m), MEMBER_SIZE(vg_provider_conf, m), lo, hi, d, NULL, ds}
static const opt provider_opts[] = {
    /* Gateway (issue 6). */
    O_PSTR("type", T_STR, type, "",
           "openai (OpenAI or any OpenAI-compatible server) | local (Flite, espeak-ng, "
           "pocketsphinx) | elevenlabs | deepgram | yandex; \"\" = the provider's name when "
           "that is a type, else the entry "
           "only configures the breaker and cache_epoch of a provider the application calls itself."),
    O_PSTR("base_url", T_STR, base_url, "",
           "Upstream base URL (http or https); \"\" = the type's (https://api.openai.com/v1, "
           "https://api.elevenlabs.io, https://api.deepgram.com, Yandex's two SpeechKit hosts)."),
    O_PSTR("api_key_env", T_ENVNAME, api_key_env, "",
           "Environment variable holding the provider's API key; \"\" = none is sent."),
    O_PSTR("ca_file", T_STR, ca_file, "",
           "PEM file of CAs to verify the upstream with; \"\" = the system's. "
           "TLS is always verified."),
    O_PINT("timeout_ms", T_U32, timeout_ms, 1, 3600000, "30000",
           "Longest single attempt (also bounded by gateway.timeout_ms)."),
    O_PINT("connect_timeout_ms", T_U32, connect_timeout_ms, 1, 600000, "3000",
           "Longest TCP + TLS connect."),
    O_PINT("max_retries", T_U32, max_retries, 0, 10, "2",
           "Extra attempts after a retryable error (5xx, 408, 409, timeout, connection)."),
    O_PINT("retry_base_ms", T_U32, retry_base_ms, 1, 600000, "250",
           "Backoff before retry n is random in [0, min(retry_max_ms, retry_base_ms * 2^n))."),
    O_PINT("retry_max_ms", T_U32, retry_max_ms, 1, 600000, "8000", "Cap of the backoff."),
    O_PINT("cooldown_default_ms", T_U32, cooldown_default_ms, 1, 3600000, "1000",
           "How long a 429 without Retry-After takes the provider out of use."),
    O_PINT("cooldown_max_ms", T_U32, cooldown_max_ms, 1, 3600000, "120000",
           "Cap on the cool-down a 429's Retry-After asks for."),
    O_PINT("max_concurrency", T_U32, max_concurrency, 1, 100000, "16",
           "Calls to this provider in flight at once."),
    O_PINT("max_queue", T_U32, max_queue, 0, 1000000, "64",
           "Calls waiting for a slot; when full the next provider of the chain is tried."),
    O_PSTR("rate_limit", T_STR, rate_limit, "",
           "A ratelimit.policies name limiting calls to this provider; \"\" = none."),
    O_PSTR("tts_model", T_STR, tts_model, "",
           "Upstream TTS model (openai: when the request's model names none); \"\" = the "
           "type's (tts-1, eleven_multilingual_v2; deepgram: the voice is the model)."),
    O_PSTR("stt_model", T_STR, stt_model, "",
           "Upstream STT model; \"\" = the type's (whisper-1, scribe_v1, nova-3, yandex "
           "topic general)."),
    O_PSTR("voice", T_STR, voice, "",
           "Voice when a TTS request names none; \"\" = the type's (openai alloy, local slt, "
           "elevenlabs 21m00Tcm4TlvDq8ikWAM, deepgram aura-2-thalia-en, yandex alena)."),
    O_PINT("max_response_bytes", T_U64, max_response_bytes, 1024, TIB, "67108864",
           "Largest upstream answer accepted; larger is a 502."),
    O_PSTR("auth", T_STR, auth, "",
           "How the key is sent; \"\" = the type's way. yandex: api-key (Authorization: "
           "Api-Key) or iam (Authorization: Bearer, an IAM token)."),
    O_PSTR("folder_id", T_STR, folder_id, "",
           "yandex: the folderId sent with an IAM token; \"\" = none."),
#undef O_PSTR
#undef O_PINT
    {"cache_epoch", T_U32, offsetof(vg_provider_conf, cache_epoch),
     MEMBER_SIZE(vg_provider_conf, cache_epoch), 0, UINT32_MAX, "0", NULL,
     "Part of every cache key of this provider; bump it to invalidate them all."},
    /* Circuit breaker overrides (issue 5). No default (NULL): an option
     * the provider leaves out inherits breakers.* in vg_config_finish. */
#define O_PBRK(p, t, m, hi)                                                                  \
    {"breaker." p, t, offsetof(vg_provider_conf, breaker.m),                                 \
     MEMBER_SIZE(vg_provider_conf, breaker.m), 1, hi, NULL, NULL,                             \
     "This provider's breakers." p "; unset = breakers." p "."}
    O_PBRK("failure_threshold", T_U32, failure_threshold, 1000000),
    O_PBRK("failure_rate_threshold", T_RATE, failure_rate_threshold, 1),
    O_PBRK("window_size", T_U32, window_size, VG_BREAKER_MAX_WINDOW),
    O_PBRK("min_calls", T_U32, min_calls, VG_BREAKER_MAX_WINDOW),
    O_PBRK("recovery_timeout_ms", T_U32, recovery_timeout_ms, 86400000),
    O_PBRK("half_open_max_calls", T_U32, half_open_max_calls, VG_BREAKER_MAX_PROBES),
    O_PBRK("success_threshold", T_U32, success_threshold, VG_BREAKER_MAX_PROBES),
    O_PBRK("call_timeout_ms", T_U32, call_timeout_ms, 86400000),
#undef O_PBRK
};

#define PATH_CAP 512
#define ENV_PREFIX "VOXGATE_"
#define MAX_FILE_BYTES (1024 * 1024)
/* Integers above this are not exactly representable in a double. */
#define JSON_INT_LIMIT 9007199254740992.0

/* ---- errors ---------------------------------------------------------- */

/* Writes "where: message". Paths can contain bytes from the file's keys,
 * so control characters are masked to keep the message one clean line. */
__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen,
                                                      const char *where, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return -1;
    int n = snprintf(err, errlen, "%s: ", where && *where ? where : "(root)");
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- small helpers --------------------------------------------------- */

static void *field(void *base, const opt *o) { return (char *)base + o->off; }
static const void *cfield(const void *base, const opt *o) { return (const char *)base + o->off; }

static bool choice_valid(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, s, n) == 0)
            return true;
        p += len + (bar ? 1 : 0);
    }
    return false;
}

static bool envname_valid(const char *s)
{
    if (!*s)
        return true; /* empty = no variable, hence no keys */
    if (!isalpha((unsigned char)*s) && *s != '_')
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* Upper-case s into out, every non-alphanumeric byte becoming '_'. */
static void envify(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = isalnum(c) && c < 0x80 ? (char)toupper(c) : '_';
    }
    out[i] = '\0';
}

/* ---- listen ---------------------------------------------------------- */

static bool host_char(unsigned char c, bool v6)
{
    if (isalnum(c) && c < 0x80)
        return true;
    if (c == '.' || c == '-' || c == '_')
        return true;
    return v6 && (c == ':' || c == '%');
}

static bool parse_port(const char *s, uint16_t *port)
{
    uint64_t v;
    if (strlen(s) > 5 || !vg_parse_u64(s, &v) || v < 1 || v > 65535)
        return false;
    if (port)
        *port = (uint16_t)v;
    return true;
}

bool vg_config_parse_listen(const char *listen, char *host, size_t hostlen, uint16_t *port)
{
    if (!listen)
        return false;
    const char *h = listen, *colon;
    size_t hl;
    bool v6 = listen[0] == '[';
    if (v6) {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return false;
        h = listen + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        if (!memchr(h, ':', hl))
            return false;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return false;
        hl = (size_t)(colon - listen);
    }
    if (hl == 0)
        return false;
    for (size_t i = 0; i < hl; i++)
        if (!host_char((unsigned char)h[i], v6))
            return false;
    if (!parse_port(colon + 1, port))
        return false;
    if (host) {
        if (hl >= hostlen)
            return false;
        memcpy(host, h, hl);
        host[hl] = '\0';
    }
    return true;
}

/* ---- setting values -------------------------------------------------- */

static int range_fail(const opt *o, const char *where, char *err, size_t errlen)
{
    return fail(err, errlen, where, "out of range (expected %llu..%llu)",
                (unsigned long long)o->min, (unsigned long long)o->max);
}

static int set_uint(void *base, const opt *o, uint64_t v, const char *where, char *err,
                    size_t errlen)
{
    if (v < o->min || v > o->max)
        return range_fail(o, where, err, errlen);
    if (o->type == T_U32)
        *(uint32_t *)field(base, o) = (uint32_t)v;
    else
        *(uint64_t *)field(base, o) = v;
    return 0;
}

/* Validate and store one of the string-valued kinds (T_LEVEL included). */
static int set_text(void *base, const opt *o, const char *s, const char *where, char *err,
                    size_t errlen)
{
    switch (o->type) {
    case T_LEVEL: {
        int lv = vg_log_level_parse(s);
        if (lv < 0)
            return fail(err, errlen, where, "expected one of %s", o->choices);
        *(vg_log_level *)field(base, o) = (vg_log_level)lv;
        return 0;
    }
    case T_IDENT:
        if (!vg_ident_valid(s))
            return fail(err, errlen, where, "expected identifier [A-Za-z0-9_.-]{1,64}");
        break;
    case T_ENVNAME:
        if (!envname_valid(s))
            return fail(err, errlen, where,
                        "expected environment variable name [A-Za-z_][A-Za-z0-9_]*");
        break;
    case T_LISTEN:
        if (!vg_config_parse_listen(s, NULL, 0, NULL))
            return fail(err, errlen, where,
                        "expected host:port with port 1..65535 (IPv6 as [::1]:8080)");
        break;
    case T_ENUM:
        if (!choice_valid(o->choices, s))
            return fail(err, errlen, where, "expected one of %s", o->choices);
        break;
    case T_REDIS_URL: {
        vg_redis_url u;
        char why[160];
        /* why starts with "redis_url: "; the path says that already. */
        if (*s && vg_redis_url_parse(s, &u, why, sizeof why) != VG_OK)
            return fail(err, errlen, where, "%s", strchr(why, ' ') ? strchr(why, ' ') + 1 : why);
        break;
    }
    default:
        break;
    }
    size_t n = strlen(s);
    if (n >= o->size)
        return fail(err, errlen, where, "too long (max %zu bytes)", o->size - 1);
    char *dst = field(base, o);
    memset(dst, 0, o->size);
    memcpy(dst, s, n);
    return 0;
}

/* ---- T_RATE (circuit breakers, issue 5) ---- */

static int set_rate(void *base, const opt *o, double v, const char *where, char *err,
                    size_t errlen)
{
    if (!(v > 0.0 && v <= 1.0)) /* also refuses NaN */
        return fail(err, errlen, where, "out of range (expected a number > 0 and <= 1)");
    *(double *)field(base, o) = v;
    return 0;
}

static int set_rate_string(void *base, const opt *o, const char *s, const char *where,
                           char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    double v = *s && !isspace((unsigned char)*s) ? strtod(s, &end) : NAN;
    if (!end || *end || errno == ERANGE || !isfinite(v))
        return fail(err, errlen, where, "expected number");
    return set_rate(base, o, v, where, err, errlen);
}

static bool is_text(opt_type t)
{
    return t != T_BOOL && t != T_U32 && t != T_U64 && t != T_RATE;
}

/* Parse a value written as text: defaults and environment variables. */
static int set_from_string(void *base, const opt *o, const char *s, const char *where,
                           char *err, size_t errlen)
{
    if (is_text(o->type))
        return set_text(base, o, s, where, err, errlen);
    if (o->type == T_RATE)
        return set_rate_string(base, o, s, where, err, errlen);
    if (o->type == T_BOOL) {
        bool v;
        if (!strcasecmp(s, "true") || !strcmp(s, "1"))
            v = true;
        else if (!strcasecmp(s, "false") || !strcmp(s, "0"))
            v = false;
        else
            return fail(err, errlen, where, "expected boolean (true|false|1|0)");
        *(bool *)field(base, o) = v;
        return 0;
    }
    uint64_t v;
    if (!vg_parse_u64(s, &v))
        return fail(err, errlen, where, "expected integer");
    return set_uint(base, o, v, where, err, errlen);
}

static int set_from_json(void *base, const opt *o, const cJSON *it, const char *where,
                         char *err, size_t errlen)
{
    if (is_text(o->type)) {
        if (!cJSON_IsString(it) || !it->valuestring)
            return fail(err, errlen, where, "expected string");
        return set_text(base, o, it->valuestring, where, err, errlen);
    }
    if (o->type == T_RATE) {
        if (!cJSON_IsNumber(it))
            return fail(err, errlen, where, "expected number");
        return set_rate(base, o, it->valuedouble, where, err, errlen);
    }
    if (o->type == T_BOOL) {
        if (!cJSON_IsBool(it))
            return fail(err, errlen, where, "expected boolean");
        *(bool *)field(base, o) = cJSON_IsTrue(it);
        return 0;
    }
    /* cJSON keeps numbers as doubles: insist on whole values that a
     * double represents exactly, then apply the option's own range. */
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!isfinite(d) || d != floor(d))
        return fail(err, errlen, where, "expected integer");
    if (d < 0 || d >= JSON_INT_LIMIT)
        return range_fail(o, where, err, errlen);
    return set_uint(base, o, (uint64_t)d, where, err, errlen);
}

static void set_defaults(void *base, const opt *tab, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].def) /* NULL: inherited, filled in by vg_config_finish */
            set_from_string(base, &tab[i], tab[i].def, tab[i].path, NULL, 0);
}

void vg_config_defaults(vg_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    set_defaults(cfg, main_opts, VG_ARRAY_LEN(main_opts));
}

/* ---- JSON walking ---------------------------------------------------- */

typedef struct walk {
    vg_config *cfg;
    char path[PATH_CAP]; /* display path of the current node */
    char *err;
    size_t errlen;
} walk;

/* Append ".key" to the path; false when the key cannot name an option
 * (empty, dotted, or too long), which the caller reports as unknown. */
static bool push(walk *w, const char *key, size_t *saved)
{
    size_t len = strlen(w->path);
    *saved = len;
    if (!*key)
        return false;
    int n = snprintf(w->path + len, PATH_CAP - len, "%s%s", len ? "." : "", key);
    if (n < 0 || (size_t)n >= PATH_CAP - len) {
        w->path[PATH_CAP - 1] = '\0';
        return false;
    }
    return !strchr(key, '.');
}

static void pop(walk *w, size_t saved) { w->path[saved] = '\0'; }

static const opt *find_opt(const opt *tab, size_t n, const char *rel)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i].path, rel))
            return &tab[i];
    return NULL;
}

/* True when rel names an object that contains options (e.g. "cache.l1"). */
static bool is_group(const opt *tab, size_t n, const char *rel)
{
    size_t len = strlen(rel);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(tab[i].path, rel, len) && tab[i].path[len] == '.')
            return true;
    return false;
}

/* cJSON keeps every duplicate; a config where the last one silently wins
 * hides mistakes, so any repeated name in one object is an error. */
static bool seen_before(const cJSON *obj, const cJSON *child)
{
    for (const cJSON *c = obj->child; c && c != child; c = c->next)
        if (c->string && !strcmp(c->string, child->string))
            return true;
    return false;
}

static int walk_object(walk *w, void *base, const opt *tab, size_t n, size_t root_len,
                       const cJSON *obj);
static int walk_providers(walk *w, const cJSON *obj);
static int walk_voices(walk *w, vg_provider_conf *p, const cJSON *obj);
static int walk_policies(walk *w, const cJSON *obj);
static int walk_models(walk *w, const cJSON *obj);

static int walk_member(walk *w, void *base, const opt *tab, size_t n, size_t root_len,
                       const cJSON *obj, const cJSON *c)
{
    size_t saved;
    if (!push(w, c->string ? c->string : "", &saved))
        return fail(w->err, w->errlen, w->path, "unknown field");
    if (seen_before(obj, c))
        return fail(w->err, w->errlen, w->path, "duplicate key");
    const char *rel = w->path + root_len + (root_len ? 1 : 0);
    const opt *o = find_opt(tab, n, rel);
    int rc;
    if (o)
        rc = set_from_json(base, o, c, w->path, w->err, w->errlen);
    else if (tab == main_opts && !strcmp(rel, "providers"))
        rc = walk_providers(w, c);
    else if (tab == main_opts && !strcmp(rel, "ratelimit.policies"))
        rc = walk_policies(w, c);
    else if (tab == main_opts && !strcmp(rel, "models"))
        rc = walk_models(w, c);
    else if (tab == provider_opts && !strcmp(rel, "voices"))
        rc = walk_voices(w, base, c);
    else if (is_group(tab, n, rel))
        rc = walk_object(w, base, tab, n, root_len, c);
    else
        rc = fail(w->err, w->errlen, w->path, "unknown field");
    pop(w, saved);
    return rc;
}

/* root_len: length of the path prefix that the table's paths are relative to. */
static int walk_object(walk *w, void *base, const opt *tab, size_t n, size_t root_len,
                       const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return fail(w->err, w->errlen, w->path, "expected object");
    for (const cJSON *c = obj->child; c; c = c->next)
        if (walk_member(w, base, tab, n, root_len, obj, c) != 0)
            return -1;
    return 0;
}

void vg_provider_conf_defaults(vg_provider_conf *p, const char *name, const vg_config *cfg)
{
    memset(p, 0, sizeof *p);
    set_defaults(p, provider_opts, VG_ARRAY_LEN(provider_opts));
    snprintf(p->name, sizeof p->name, "%s", name);
    p->breaker = cfg->breakers.defaults;
}

static vg_provider_conf *provider_slot(vg_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, name))
            return &cfg->providers[i];
    if (cfg->n_providers >= VG_MAX_PROVIDERS)
        return NULL;
    vg_provider_conf *p = &cfg->providers[cfg->n_providers++];
    memset(p, 0, sizeof *p);
    set_defaults(p, provider_opts, VG_ARRAY_LEN(provider_opts));
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

static int walk_provider(walk *w, const cJSON *obj, const cJSON *c)
{
    size_t saved;
    const char *name = c->string ? c->string : "";
    /* Provider names may contain '.', which push() refuses as a field
     * name; the identifier rule is the real check here. */
    (void)push(w, name, &saved);
    int rc;
    vg_provider_conf *p;
    if (!vg_ident_valid(name))
        rc = fail(w->err, w->errlen, w->path,
                  "invalid provider name (expected [A-Za-z0-9_.-]{1,64})");
    else if (seen_before(obj, c))
        rc = fail(w->err, w->errlen, w->path, "duplicate key");
    else if (!(p = provider_slot(w->cfg, name)))
        rc = fail(w->err, w->errlen, w->path, "too many providers (max %d)", VG_MAX_PROVIDERS);
    else
        rc = walk_object(w, p, provider_opts, VG_ARRAY_LEN(provider_opts), strlen(w->path), c);
    pop(w, saved);
    return rc;
}

/* A provider's "voices": request voice -> this provider's voice. Both
 * sides follow the identifier rule, as every provider's voice ids do. */
static int walk_voices(walk *w, vg_provider_conf *p, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return fail(w->err, w->errlen, w->path, "expected an object of voice names");
    p->n_voices = 0; /* a file replaces the whole map */
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t saved;
        const char *from = c->string ? c->string : "";
        (void)push(w, from, &saved);
        int rc = 0;
        if (!vg_ident_valid(from))
            rc = fail(w->err, w->errlen, w->path, "invalid voice name (expected [A-Za-z0-9_.-]{1,64})");
        else if (seen_before(obj, c))
            rc = fail(w->err, w->errlen, w->path, "duplicate key");
        else if (!cJSON_IsString(c) || !vg_ident_valid(c->valuestring))
            rc = fail(w->err, w->errlen, w->path, "expected a voice name [A-Za-z0-9_.-]{1,64}");
        else if (p->n_voices >= VG_MAX_VOICE_MAP)
            rc = fail(w->err, w->errlen, w->path, "at most %d voices", VG_MAX_VOICE_MAP);
        else {
            snprintf(p->voices[p->n_voices].from, sizeof p->voices[0].from, "%s", from);
            snprintf(p->voices[p->n_voices].to, sizeof p->voices[0].to, "%s", c->valuestring);
            p->n_voices++;
        }
        pop(w, saved);
        if (rc != 0)
            return -1;
    }
    return 0;
}

const char *vg_provider_voice(const vg_provider_conf *p, const char *voice)
{
    for (size_t i = 0; i < p->n_voices; i++)
        if (!strcmp(p->voices[i].from, voice))
            return p->voices[i].to;
    return voice;
}

static int walk_providers(walk *w, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return fail(w->err, w->errlen, w->path, "expected object");
    for (const cJSON *c = obj->child; c; c = c->next)
        if (walk_provider(w, obj, c) != 0)
            return -1;
    return 0;
}

/* ---- ratelimit.policies (issue 4): a map of name -> policy_opts ---- */

static vg_policy_conf *policy_slot(vg_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ratelimit.n_policies; i++)
        if (!strcmp(cfg->ratelimit.policies[i].name, name))
            return &cfg->ratelimit.policies[i];
    if (cfg->ratelimit.n_policies >= VG_MAX_POLICIES)
        return NULL;
    vg_policy_conf *p = &cfg->ratelimit.policies[cfg->ratelimit.n_policies++];
    memset(p, 0, sizeof *p);
    set_defaults(p, policy_opts, VG_ARRAY_LEN(policy_opts));
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

static int walk_policies(walk *w, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return fail(w->err, w->errlen, w->path, "expected object");
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t saved;
        const char *name = c->string ? c->string : "";
        (void)push(w, name, &saved);
        int rc;
        vg_policy_conf *p;
        if (!vg_ident_valid(name))
            rc = fail(w->err, w->errlen, w->path,
                      "invalid policy name (expected [A-Za-z0-9_.-]{1,64})");
        else if (seen_before(obj, c))
            rc = fail(w->err, w->errlen, w->path, "duplicate key");
        else if (!(p = policy_slot(w->cfg, name)))
            rc = fail(w->err, w->errlen, w->path, "too many policies (max %d)", VG_MAX_POLICIES);
        else
            rc = walk_object(w, p, policy_opts, VG_ARRAY_LEN(policy_opts), strlen(w->path), c);
        pop(w, saved);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- models (issue 6): a map of name -> [provider, ...] ---- */

static int walk_model(walk *w, const cJSON *obj, const cJSON *c)
{
    const char *name = c->string ? c->string : "";
    if (!vg_ident_valid(name))
        return fail(w->err, w->errlen, w->path, "invalid model name (expected [A-Za-z0-9_.-]{1,64})");
    if (seen_before(obj, c))
        return fail(w->err, w->errlen, w->path, "duplicate key");
    if (!cJSON_IsArray(c) || !cJSON_GetArraySize(c))
        return fail(w->err, w->errlen, w->path, "expected a non-empty array of provider names");
    if (w->cfg->n_models >= VG_MAX_MODELS)
        return fail(w->err, w->errlen, w->path, "too many models (max %d)", VG_MAX_MODELS);
    vg_model_conf *m = &w->cfg->models[w->cfg->n_models];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    for (const cJSON *it = c->child; it; it = it->next) {
        if (!cJSON_IsString(it) || !vg_ident_valid(it->valuestring))
            return fail(w->err, w->errlen, w->path, "expected provider names [A-Za-z0-9_.-]{1,64}");
        if (m->n_chain >= VG_MAX_CHAIN)
            return fail(w->err, w->errlen, w->path, "at most %d providers", VG_MAX_CHAIN);
        for (size_t i = 0; i < m->n_chain; i++)
            if (!strcmp(m->chain[i], it->valuestring))
                return fail(w->err, w->errlen, w->path, "provider '%s' twice", it->valuestring);
        snprintf(m->chain[m->n_chain++], sizeof m->chain[0], "%s", it->valuestring);
    }
    w->cfg->n_models++;
    return 0;
}

static int walk_models(walk *w, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        return fail(w->err, w->errlen, w->path, "expected object");
    /* A file replaces the whole map (it is not a scalar to merge). */
    w->cfg->n_models = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t saved;
        (void)push(w, c->string ? c->string : "", &saved);
        int rc = walk_model(w, obj, c);
        pop(w, saved);
        if (rc != 0)
            return -1;
    }
    return 0;
}

const vg_model_conf *vg_config_model(const vg_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_models; i++)
        if (!strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    return NULL;
}

const vg_provider_conf *vg_config_provider(const vg_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, name))
            return &cfg->providers[i];
    return NULL;
}

const vg_provider_conf *vg_config_gateway_provider(const vg_config *cfg, const char *name)
{
    const vg_provider_conf *p = vg_config_provider(cfg, name);
    return p && p->type[0] ? p : NULL;
}

const vg_policy_conf *vg_config_policy(const vg_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->ratelimit.n_policies; i++)
        if (!strcmp(cfg->ratelimit.policies[i].name, name))
            return &cfg->ratelimit.policies[i];
    return NULL;
}

/* 1-based line and column of byte off, for humans reading the message. */
static void line_col(const char *s, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int invalid_json(const char *json, size_t len, size_t off, char *err, size_t errlen)
{
    size_t line, col;
    if (off > len)
        off = len;
    line_col(json, off, &line, &col);
    return fail(err, errlen, NULL, "invalid JSON near byte %zu (line %zu, column %zu)", off,
                line, col);
}

static cJSON *parse_doc(const char *json, size_t len, char *err, size_t errlen)
{
    if (!json || len == 0) {
        invalid_json("", 0, 0, err, errlen);
        return NULL;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(json, len, &end, false);
    size_t off = end ? (size_t)(end - json) : 0;
    if (!doc) {
        invalid_json(json, len, off, err, errlen);
        return NULL;
    }
    /* Parsed without requiring a terminator; only whitespace may follow. */
    while (off < len && json[off] && strchr(" \t\r\n", json[off]))
        off++;
    if (off < len) {
        cJSON_Delete(doc);
        invalid_json(json, len, off, err, errlen);
        return NULL;
    }
    return doc;
}

int vg_config_apply_json(vg_config *cfg, const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *doc = parse_doc(json, len, err, errlen);
    if (!doc)
        return -1;
    /* Work on a copy so a failed document leaves cfg untouched. The key
     * arrays are only shared pointers here and are never modified. */
    walk *w = malloc(sizeof *w + sizeof *cfg);
    if (!w) {
        cJSON_Delete(doc);
        return fail(err, errlen, NULL, "out of memory");
    }
    w->cfg = (vg_config *)(w + 1);
    memcpy(w->cfg, cfg, sizeof *cfg);
    w->path[0] = '\0';
    w->err = err;
    w->errlen = errlen;
    int rc = walk_object(w, w->cfg, main_opts, VG_ARRAY_LEN(main_opts), 0, doc);
    if (rc == 0)
        memcpy(cfg, w->cfg, sizeof *cfg);
    free(w);
    cJSON_Delete(doc);
    return rc;
}

int vg_config_apply_file(vg_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, path, "%s", strerror(errno));
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fail(err, errlen, path, "out of memory");
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    bool bad = ferror(f);
    int saved_errno = errno;
    fclose(f);
    int rc;
    if (bad)
        rc = fail(err, errlen, path, "read failed: %s", strerror(saved_errno));
    else if (n > MAX_FILE_BYTES)
        rc = fail(err, errlen, path, "file too large (max %d bytes)", MAX_FILE_BYTES);
    else
        rc = vg_config_apply_json(cfg, buf, n, err, errlen);
    free(buf);
    return rc;
}

/* ---- environment ----------------------------------------------------- */

static const char *real_getenv(const char *name) { return getenv(name); }

/* An empty variable counts as unset, so `VOXGATE_THREADS=` in a compose
 * file does not turn into a type error. */
static int env_table(void *base, const opt *tab, size_t n, const char *prefix,
                     const char *(*get)(const char *), char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char name[PATH_CAP], up[PATH_CAP / 2];
        envify(tab[i].path, up, sizeof up);
        snprintf(name, sizeof name, "%s%s", prefix, up);
        const char *v = get(name);
        if (v && *v && set_from_string(base, &tab[i], v, name, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static void provider_env_prefix(const char *pname, char *out, size_t cap)
{
    char up[sizeof ((vg_provider_conf *)0)->name];
    envify(pname, up, sizeof up);
    snprintf(out, cap, ENV_PREFIX "PROVIDERS_%s_", up);
}

int vg_config_apply_env(vg_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                        size_t errlen)
{
    const char *(*get)(const char *) = getenv_fn ? getenv_fn : real_getenv;
    vg_config tmp;
    memcpy(&tmp, cfg, sizeof tmp);
    if (env_table(&tmp, main_opts, VG_ARRAY_LEN(main_opts), ENV_PREFIX, get, err, errlen))
        return -1;
    for (size_t i = 0; i < tmp.n_providers; i++) {
        char prefix[128];
        provider_env_prefix(tmp.providers[i].name, prefix, sizeof prefix);
        if (env_table(&tmp.providers[i], provider_opts, VG_ARRAY_LEN(provider_opts), prefix,
                      get, err, errlen))
            return -1;
    }
    for (size_t i = 0; i < tmp.ratelimit.n_policies; i++) { /* issue 4 */
        char prefix[128], up[80];
        envify(tmp.ratelimit.policies[i].name, up, sizeof up);
        snprintf(prefix, sizeof prefix, ENV_PREFIX "RATELIMIT_POLICIES_%s_", up);
        if (env_table(&tmp.ratelimit.policies[i], policy_opts, VG_ARRAY_LEN(policy_opts),
                      prefix, get, err, errlen))
            return -1;
    }
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
}

/* ---- finish: cross-field checks and secrets -------------------------- */

static void free_keys(char ***keys, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*keys)[i]);
    free(*keys);
    *keys = NULL;
    *n = 0;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Split "a, b,,c" into trimmed, non-empty keys. */
static int split_keys(const char *s, char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!s)
        return 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    char **keys = calloc(cap, sizeof *keys);
    if (!keys)
        return -1;
    size_t n = 0;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *a = s, *b = s + len;
        while (a < b && is_space(*a))
            a++;
        while (b > a && is_space(b[-1]))
            b--;
        if (b > a && !(keys[n++] = strndup(a, (size_t)(b - a)))) {
            free_keys(&keys, &n);
            return -1;
        }
        s += len + (e ? 1 : 0);
    }
    *out = keys;
    *nout = n;
    return 0;
}

static int check_le(uint64_t v, const char *what, uint64_t limit, const char *limit_name,
                    char *err, size_t errlen)
{
    if (v <= limit)
        return 0;
    return fail(err, errlen, what, "must be <= %s (%llu), got %llu", limit_name,
                (unsigned long long)limit, (unsigned long long)v);
}

static bool url_base_ok(const char *u)
{
    size_t n = strlen(u);
    size_t scheme = !strncmp(u, "http://", 7) ? 7 : !strncmp(u, "https://", 8) ? 8 : 0;
    return scheme && n > scheme && u[scheme] != '/' && u[n - 1] != '/' &&
           !strpbrk(u, " ?#\t\r\n");
}

/* Object storage (issue 8): checked only where it matters. */
static int s3_checks(const vg_config *cfg, char *err, size_t errlen)
{
    if (cfg->files.public_url[0] && !url_base_ok(cfg->files.public_url))
        return fail(err, errlen, "files.public_url", "expected http(s)://host[:port][/path], "
                                                      "no trailing '/'");
    if (!cfg->s3.endpoint[0])
        return 0;
    if (!url_base_ok(cfg->s3.endpoint))
        return fail(err, errlen, "s3.endpoint", "expected http(s)://host[:port], no trailing '/'");
    if (cfg->s3.public_endpoint[0] && !url_base_ok(cfg->s3.public_endpoint))
        return fail(err, errlen, "s3.public_endpoint",
                    "expected http(s)://host[:port], no trailing '/'");
    size_t n = strlen(cfg->s3.bucket);
    if (n < 3 || n > 63 || strspn(cfg->s3.bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
        return fail(err, errlen, "s3.bucket", "expected 3-63 characters of [a-z0-9.-]");
    if (!cfg->s3.region[0] || !vg_ident_valid(cfg->s3.region))
        return fail(err, errlen, "s3.region", "expected [A-Za-z0-9_.-]{1,64}");
    if (!cfg->s3.access_key_env[0] || !cfg->s3.secret_key_env[0])
        return fail(err, errlen, cfg->s3.access_key_env[0] ? "s3.secret_key_env" : "s3.access_key_env",
                    "must name an environment variable when s3.endpoint is set");
    return 0;
}

/* The S3 keys must be in the environment, as a server start would need
 * them: --check-config says so instead of the start failing later. */
static int s3_keys_set(const vg_config *cfg, const char *(*get)(const char *), char *err,
                       size_t errlen)
{
    if (!cfg->s3.endpoint[0])
        return 0;
    if (!get(cfg->s3.access_key_env))
        return fail(err, errlen, "s3.access_key_env", "environment variable %s is not set",
                    cfg->s3.access_key_env);
    if (!get(cfg->s3.secret_key_env))
        return fail(err, errlen, "s3.secret_key_env", "environment variable %s is not set",
                    cfg->s3.secret_key_env);
    return 0;
}

static int cross_checks(const vg_config *cfg, char *err, size_t errlen)
{
    if (!cfg->data_dir[0])
        return fail(err, errlen, "data_dir", "must not be empty");
    if (!vg_config_parse_listen(cfg->listen, NULL, 0, NULL))
        return fail(err, errlen, "listen",
                    "expected host:port with port 1..65535 (IPv6 as [::1]:8080)");
    if (check_le(cfg->cache.stt_ttl_s, "cache.stt_ttl_s", cfg->cache.max_ttl_s,
                 "cache.max_ttl_s", err, errlen) ||
        check_le(cfg->cache.tts_ttl_s, "cache.tts_ttl_s", cfg->cache.max_ttl_s,
                 "cache.max_ttl_s", err, errlen) ||
        check_le(cfg->cache.l1.max_item_bytes, "cache.l1.max_item_bytes",
                 cfg->cache.l1.max_bytes, "cache.l1.max_bytes", err, errlen))
        return -1;
    if (cfg->ratelimit.client_policy[0] && !vg_config_policy(cfg, cfg->ratelimit.client_policy))
        return fail(err, errlen, "ratelimit.client_policy", "no policy '%.64s' in ratelimit.policies",
                    cfg->ratelimit.client_policy);
    if (cfg->redis.backoff_max_ms < cfg->redis.backoff_base_ms)
        return fail(err, errlen, "redis.backoff_max_ms", "must be >= redis.backoff_base_ms (%u)",
                    cfg->redis.backoff_base_ms);
    if (s3_checks(cfg, err, errlen) != 0)
        return -1;
    /* One variable for both would make every API client an admin. */
    if (cfg->admin_keys_env[0] && !strcmp(cfg->api_keys_env, cfg->admin_keys_env))
        return fail(err, errlen, "admin_keys_env", "must differ from api_keys_env");
    return 0;
}

static int load_keys(const char *var, const char *(*get)(const char *), char ***keys,
                     size_t *n)
{
    free_keys(keys, n);
    return var[0] ? split_keys(get(var), keys, n) : 0;
}

/* ---- circuit breakers (issue 5): inheritance and cross-field checks ---- */

static void breaker_inherit(vg_breaker_settings *s, const vg_breaker_settings *d)
{
#define INHERIT(f) if (!s->f) s->f = d->f
    INHERIT(failure_threshold);
    INHERIT(failure_rate_threshold);
    INHERIT(window_size);
    INHERIT(min_calls);
    INHERIT(recovery_timeout_ms);
    INHERIT(half_open_max_calls);
    INHERIT(success_threshold);
    INHERIT(call_timeout_ms);
#undef INHERIT
}

/* where: "breakers" or "providers.NAME.breaker"; ranges are the table's. */
static int breaker_check(const vg_breaker_settings *s, const char *where, char *err,
                         size_t errlen)
{
    char path[PATH_CAP + 32]; /* where plus the longest field name */
    if (s->window_size < s->min_calls) {
        snprintf(path, sizeof path, "%s.window_size", where);
        return fail(err, errlen, path, "must be >= min_calls (%u), got %u", s->min_calls,
                    s->window_size);
    }
    if (s->success_threshold > s->half_open_max_calls) {
        snprintf(path, sizeof path, "%s.success_threshold", where);
        return fail(err, errlen, path, "must be <= half_open_max_calls (%u), got %u",
                    s->half_open_max_calls, s->success_threshold);
    }
    return 0;
}

static int breakers_finish(vg_config *cfg, char *err, size_t errlen)
{
    if (breaker_check(&cfg->breakers.defaults, "breakers", err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        char where[PATH_CAP];
        snprintf(where, sizeof where, "providers.%s.breaker", cfg->providers[i].name);
        breaker_inherit(&cfg->providers[i].breaker, &cfg->breakers.defaults);
        if (breaker_check(&cfg->providers[i].breaker, where, err, errlen) != 0)
            return -1;
    }
    return 0;
}

void vg_config_breaker(const vg_config *cfg, const char *provider, vg_breaker_settings *out)
{
    *out = cfg->breakers.defaults;
    for (size_t i = 0; provider && i < cfg->n_providers; i++) {
        if (!strcmp(cfg->providers[i].name, provider)) {
            *out = cfg->providers[i].breaker;
            breaker_inherit(out, &cfg->breakers.defaults);
        }
    }
}

/* ---- gateway (issue 6): provider types, chains, policies ---- */

static bool opt_ident(const char *s) { return !*s || vg_ident_valid(s); }

static int provider_finish(vg_config *cfg, vg_provider_conf *p, const char *(*get)(const char *),
                           char *err, size_t errlen)
{
    char path[PATH_CAP];
#define PF(field) (snprintf(path, sizeof path, "providers.%s." field, p->name), path)
    if (!p->type[0] && vg_provider_type_known(p->name))
        snprintf(p->type, sizeof p->type, "%s", p->name);
    if (p->type[0] && !vg_provider_type_known(p->type))
        return fail(err, errlen, PF("type"), "unknown type '%s' (expected %s)", p->type,
                    vg_provider_types());
    if (p->base_url[0] && strncmp(p->base_url, "http://", 7) && strncmp(p->base_url, "https://", 8))
        return fail(err, errlen, PF("base_url"), "expected an http:// or https:// URL");
    if (p->rate_limit[0] && !vg_config_policy(cfg, p->rate_limit))
        return fail(err, errlen, PF("rate_limit"), "no policy '%.64s' in ratelimit.policies",
                    p->rate_limit);
    if (!opt_ident(p->tts_model) || !opt_ident(p->stt_model) || !opt_ident(p->voice))
        return fail(err, errlen, !opt_ident(p->tts_model) ? PF("tts_model")
                    : !opt_ident(p->stt_model) ? PF("stt_model") : PF("voice"),
                    "expected \"\" or an identifier [A-Za-z0-9_.-]{1,64}");
    if (p->retry_max_ms < p->retry_base_ms)
        return fail(err, errlen, PF("retry_max_ms"), "must be >= retry_base_ms (%u)",
                    p->retry_base_ms);
    if (p->api_key_env[0] && !get(p->api_key_env))
        return fail(err, errlen, PF("api_key_env"), "environment variable %s is not set",
                    p->api_key_env);
#undef PF
    return 0;
}

static int gateway_finish(vg_config *cfg, const char *(*get)(const char *), char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (provider_finish(cfg, &cfg->providers[i], get, err, errlen) != 0)
            return -1;
    char path[PATH_CAP];
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_chain; j++)
            if (!vg_config_gateway_provider(cfg, cfg->models[i].chain[j])) {
                snprintf(path, sizeof path, "models.%s", cfg->models[i].name);
                return fail(err, errlen, path, "no provider '%s' with a type in providers",
                            cfg->models[i].chain[j]);
            }
    if (cfg->gateway.tts_model[0] && !vg_config_model(cfg, cfg->gateway.tts_model))
        return fail(err, errlen, "gateway.tts_model", "no model '%.64s' in models",
                    cfg->gateway.tts_model);
    if (cfg->gateway.stt_model[0] && !vg_config_model(cfg, cfg->gateway.stt_model))
        return fail(err, errlen, "gateway.stt_model", "no model '%.64s' in models",
                    cfg->gateway.stt_model);
    return 0;
}

int vg_config_finish(vg_config *cfg, const char *(*getenv_fn)(const char *), char *err,
                     size_t errlen)
{
    const char *(*get)(const char *) = getenv_fn ? getenv_fn : real_getenv;
    if (cross_checks(cfg, err, errlen) != 0 || breakers_finish(cfg, err, errlen) != 0 ||
        gateway_finish(cfg, get, err, errlen) != 0 || s3_keys_set(cfg, get, err, errlen) != 0)
        return -1;
    if (load_keys(cfg->api_keys_env, get, &cfg->api_keys, &cfg->n_api_keys) != 0 ||
        load_keys(cfg->admin_keys_env, get, &cfg->admin_keys, &cfg->n_admin_keys) != 0) {
        free_keys(&cfg->api_keys, &cfg->n_api_keys);
        free_keys(&cfg->admin_keys, &cfg->n_admin_keys);
        return fail(err, errlen, NULL, "out of memory");
    }
    return 0;
}

int vg_config_load(vg_config *cfg, const char *path, char *err, size_t errlen)
{
    vg_config_defaults(cfg);
    if (path && vg_config_apply_file(cfg, path, err, errlen) != 0)
        return -1;
    if (vg_config_apply_env(cfg, NULL, err, errlen) != 0)
        return -1;
    return vg_config_finish(cfg, NULL, err, errlen);
}

void vg_config_free(vg_config *cfg)
{
    if (!cfg)
        return;
    free_keys(&cfg->api_keys, &cfg->n_api_keys);
    free_keys(&cfg->admin_keys, &cfg->n_admin_keys);
}

uint32_t vg_config_cache_epoch(const vg_config *cfg, const char *provider)
{
    if (!cfg || !provider)
        return 0;
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, provider))
            return cfg->providers[i].cache_epoch;
    return 0;
}

/* ---- output ---------------------------------------------------------- */

/* The URL with its password replaced by "***": the dump never shows secrets. */
static cJSON *redis_url_json(const char *url)
{
    const char *at = strrchr(url, '@'), *scheme = strstr(url, "://");
    if (!at || !scheme)
        return cJSON_CreateString(url);
    const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    if (!colon)
        return cJSON_CreateString(url);
    char out[VG_CONF_STR + 8];
    snprintf(out, sizeof out, "%.*s:***%s", (int)(colon - url), url, at);
    return cJSON_CreateString(out);
}

static cJSON *value_json(const void *base, const opt *o)
{
    const void *p = cfield(base, o);
    switch (o->type) {
    case T_LEVEL:
        return cJSON_CreateString(vg_log_level_name(*(const vg_log_level *)p));
    case T_BOOL:
        return cJSON_CreateBool(*(const bool *)p);
    case T_U32:
        return cJSON_CreateNumber((double)*(const uint32_t *)p);
    case T_U64: /* every range ends below 2^53, so the double is exact */
        return cJSON_CreateNumber((double)*(const uint64_t *)p);
    case T_REDIS_URL:
        return redis_url_json((const char *)p);
    case T_RATE:
        return cJSON_CreateNumber(*(const double *)p);
    default:
        return cJSON_CreateString((const char *)p);
    }
}

/* Find or create the object at the dotted prefix of path; *leaf gets
 * the last component. */
static cJSON *object_for(cJSON *root, const char *path, const char **leaf)
{
    cJSON *obj = root;
    const char *dot;
    while (obj && (dot = strchr(path, '.'))) {
        char part[PATH_CAP];
        snprintf(part, sizeof part, "%.*s", (int)(dot - path), path);
        cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, part);
        if (!next)
            next = cJSON_AddObjectToObject(obj, part);
        obj = next;
        path = dot + 1;
    }
    *leaf = path;
    return obj;
}

static bool table_json(cJSON *root, const void *base, const opt *tab, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *leaf;
        cJSON *obj = object_for(root, tab[i].path, &leaf);
        cJSON *v = value_json(base, &tab[i]);
        if (!obj || !v || !cJSON_AddItemToObject(obj, leaf, v)) {
            cJSON_Delete(v);
            return false;
        }
    }
    return true;
}

char *vg_config_to_json(const vg_config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root && table_json(root, cfg, main_opts, VG_ARRAY_LEN(main_opts));
    cJSON *provs = ok ? cJSON_AddObjectToObject(root, "providers") : NULL;
    ok = provs != NULL;
    for (size_t i = 0; ok && i < cfg->n_providers; i++) {
        cJSON *p = cJSON_AddObjectToObject(provs, cfg->providers[i].name);
        vg_provider_conf pc = cfg->providers[i];
        vg_config_breaker(cfg, pc.name, &pc.breaker); /* inherited breaker settings, filled in */
        ok = p && table_json(p, &pc, provider_opts, VG_ARRAY_LEN(provider_opts));
        cJSON *v = ok ? cJSON_AddObjectToObject(p, "voices") : NULL;
        for (size_t j = 0; v && j < pc.n_voices; j++)
            ok = cJSON_AddStringToObject(v, pc.voices[j].from, pc.voices[j].to) != NULL;
        ok = ok && v;
    }
    cJSON *rl = ok ? cJSON_GetObjectItemCaseSensitive(root, "ratelimit") : NULL;
    cJSON *pols = rl ? cJSON_AddObjectToObject(rl, "policies") : NULL;
    ok = pols != NULL;
    for (size_t i = 0; ok && i < cfg->ratelimit.n_policies; i++) {
        cJSON *p = cJSON_AddObjectToObject(pols, cfg->ratelimit.policies[i].name);
        ok = p && table_json(p, &cfg->ratelimit.policies[i], policy_opts,
                             VG_ARRAY_LEN(policy_opts));
    }
    cJSON *models = ok ? cJSON_AddObjectToObject(root, "models") : NULL;
    ok = models != NULL;
    for (size_t i = 0; ok && i < cfg->n_models; i++) {
        cJSON *a = cJSON_AddArrayToObject(models, cfg->models[i].name);
        for (size_t j = 0; a && j < cfg->models[i].n_chain; j++)
            cJSON_AddItemToArray(a, cJSON_CreateString(cfg->models[i].chain[j]));
        ok = a != NULL;
    }
    char *out = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return out;
}

static void type_name(const opt *o, char *out, size_t cap)
{
    switch (o->type) {
    case T_STR: snprintf(out, cap, "string"); break;
    case T_IDENT: snprintf(out, cap, "identifier"); break;
    case T_ENVNAME: snprintf(out, cap, "env-var-name"); break;
    case T_LISTEN: snprintf(out, cap, "host:port"); break;
    case T_REDIS_URL: snprintf(out, cap, "redis-url"); break;
    case T_ENUM:
    case T_LEVEL: snprintf(out, cap, "%s", o->choices); break;
    case T_BOOL: snprintf(out, cap, "boolean"); break;
    case T_RATE: snprintf(out, cap, "number 0<x<=1"); break;
    default:
        snprintf(out, cap, "integer %llu..%llu", (unsigned long long)o->min,
                 (unsigned long long)o->max);
    }
}

static int describe_one(vg_buf *b, const char *path, const char *env, const opt *o)
{
    char type[64];
    type_name(o, type, sizeof type);
    return vg_buf_printf(b, "%-30s %-38s %-34s default %-19s %s\n", path, env, type,
                         !o->def ? "(inherited)" : *o->def ? o->def : "\"\"", o->desc);
}

char *vg_config_describe(void)
{
    vg_buf b = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < VG_ARRAY_LEN(main_opts); i++) {
        char env[PATH_CAP], up[PATH_CAP / 2];
        envify(main_opts[i].path, up, sizeof up);
        snprintf(env, sizeof env, ENV_PREFIX "%s", up);
        rc = describe_one(&b, main_opts[i].path, env, &main_opts[i]);
    }
    for (size_t i = 0; rc == 0 && i < VG_ARRAY_LEN(provider_opts); i++) {
        char path[PATH_CAP], env[PATH_CAP], up[PATH_CAP / 2];
        envify(provider_opts[i].path, up, sizeof up);
        snprintf(path, sizeof path, "providers.<name>.%s", provider_opts[i].path);
        snprintf(env, sizeof env, ENV_PREFIX "PROVIDERS_<NAME>_%s", up);
        rc = describe_one(&b, path, env, &provider_opts[i]);
    }
    for (size_t i = 0; rc == 0 && i < VG_ARRAY_LEN(policy_opts); i++) {
        char path[PATH_CAP], env[PATH_CAP], up[PATH_CAP / 2];
        envify(policy_opts[i].path, up, sizeof up);
        snprintf(path, sizeof path, "ratelimit.policies.<name>.%s", policy_opts[i].path);
        snprintf(env, sizeof env, ENV_PREFIX "RATELIMIT_POLICIES_<NAME>_%s", up);
        rc = describe_one(&b, path, env, &policy_opts[i]);
    }
    if (rc != 0) {
        vg_buf_free(&b);
        return NULL;
    }
    return b.data;
}
