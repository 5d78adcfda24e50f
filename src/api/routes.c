/* The route table: every path voxgate answers, its methods, auth, the
 * query parameters it accepts and the body type it needs. The OpenAPI
 * document is checked against this table (voxgate --list-routes). */
#include "api.h"

#define STT_Q "provider language audio_hash format ttl_s"
#define TTS_Q "provider language voice text_hash text format ttl_s"

const vg_route vg_routes[] = {
    {VG_M_GET | VG_M_HEAD, "/health", vg_api_health, VG_AUTH_OPEN, 0, NULL, NULL, false},
    {VG_M_GET | VG_M_HEAD, "/ready", vg_api_ready, VG_AUTH_OPEN, 0, NULL, NULL, false},
    {VG_M_GET, "/stats", vg_api_stats, VG_AUTH_METRICS, 0, NULL, NULL, false},
    {VG_M_GET, "/metrics", vg_api_metrics, VG_AUTH_METRICS, 0, NULL, NULL, false},
    {VG_M_GET | VG_M_HEAD | VG_M_DELETE, "/v1/cache/stt", vg_api_cache_stt, VG_AUTH_API, 0,
     STT_Q, NULL, false},
    {VG_M_PUT, "/v1/cache/stt", vg_api_cache_stt, VG_AUTH_API, 0, STT_Q, "application/json", false},
    {VG_M_GET | VG_M_HEAD | VG_M_PUT | VG_M_DELETE, "/v1/cache/tts", vg_api_cache_tts,
     VG_AUTH_API, 0, TTS_Q, NULL, false},
    {VG_M_POST, "/v1/cache/batch", vg_api_cache_batch, VG_AUTH_API, 0, NULL, "application/json", false},
    {VG_M_DELETE, "/v1/cache", vg_api_cache_invalidate, VG_AUTH_API, VG_M_DELETE, "provider kind",
     NULL, false},
    /* Rate limits (issue 4). /v1/ratelimit/check outranks {key}. */
    {VG_M_POST, "/v1/ratelimit/check", vg_api_ratelimit_check, VG_AUTH_API, 0, NULL,
     "application/json", false},
    {VG_M_GET, "/v1/ratelimit/{key}", vg_api_ratelimit_key, VG_AUTH_API, 0,
     "limit window_ms cost algorithm policy", NULL, false},
    {VG_M_DELETE, "/v1/ratelimit/{key}", vg_api_ratelimit_key, VG_AUTH_API, VG_M_DELETE,
     "policy", NULL, false},
    /* Circuit breakers (issue 5). /v1/breakers/reset outranks {provider}. */
    {VG_M_GET, "/v1/breakers", vg_api_breakers_list, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_POST, "/v1/breakers/reset", vg_api_breakers_reset, VG_AUTH_API, VG_M_POST, NULL, NULL, false},
    {VG_M_GET, "/v1/breakers/{provider}", vg_api_breaker_get, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_POST, "/v1/breakers/{provider}/acquire", vg_api_breaker_acquire, VG_AUTH_API, 0, NULL,
     "application/json", false},
    {VG_M_POST, "/v1/breakers/{provider}/record", vg_api_breaker_record, VG_AUTH_API, 0, NULL,
     "application/json", false},
    {VG_M_POST, "/v1/breakers/{provider}/reset", vg_api_breaker_reset, VG_AUTH_API, VG_M_POST,
     NULL, NULL, false},
    /* Files API (issue 8). {key+}/url has more literal segments, so it owns
     * paths ending in /url; signed GET/HEAD URLs carry expires and sig. */
    {VG_M_GET, "/v1/files", vg_api_files_root, VG_AUTH_API, 0, "prefix limit cursor", NULL, false},
    {VG_M_POST, "/v1/files", vg_api_files_root, VG_AUTH_API, 0, "prefix", NULL, false},
    {VG_M_GET, "/v1/files/{key+}/url", vg_api_files_url, VG_AUTH_API, 0, "expires_s", NULL, false},
    {VG_M_GET | VG_M_HEAD, "/v1/files/{key+}", vg_api_files_key, VG_AUTH_SIGNED, 0,
     "expires sig", NULL, false},
    {VG_M_PUT | VG_M_DELETE, "/v1/files/{key+}", vg_api_files_key, VG_AUTH_API, VG_M_DELETE, NULL,
     NULL, false},
    /* Gateway (issue 6): voxgate calls the providers. own_gate: the client
     * rate limit applies after the cache and single-flight (SPEC §5). */
    {VG_M_POST, "/v1/tts", vg_api_gw_tts, VG_AUTH_API, 0, NULL, "application/json", true},
    {VG_M_POST, "/v1/stt", vg_api_gw_stt, VG_AUTH_API, 0, "language provider model format", NULL,
     true},
    {VG_M_POST, "/v1/audio/speech", vg_api_gw_speech, VG_AUTH_API, 0, NULL, "application/json",
     true},
    {VG_M_POST, "/v1/audio/transcriptions", vg_api_gw_transcribe, VG_AUTH_API, 0, NULL, NULL, true},
    {VG_M_GET, "/v1/models", vg_api_gw_models, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_GET, "/v1/voices", vg_api_gw_voices, VG_AUTH_API, 0, NULL, NULL, false},
};

const size_t vg_nroutes = VG_ARRAY_LEN(vg_routes);
