/* The route table: every path voxgate answers, its methods, auth, the
 * query parameters it accepts and the body type it needs. The OpenAPI
 * document is checked against this table (voxgate --list-routes). */
#include "api.h"

#define STT_Q "provider language audio_hash format ttl_s"
#define TTS_Q "provider language voice text_hash text format ttl_s"

const vg_route vg_routes[] = {
    {VG_M_GET | VG_M_HEAD, "/health", vg_api_health, VG_AUTH_OPEN, 0, NULL, NULL},
    {VG_M_GET | VG_M_HEAD, "/ready", vg_api_ready, VG_AUTH_OPEN, 0, NULL, NULL},
    {VG_M_GET, "/stats", vg_api_stats, VG_AUTH_METRICS, 0, NULL, NULL},
    {VG_M_GET, "/metrics", vg_api_metrics, VG_AUTH_METRICS, 0, NULL, NULL},
    {VG_M_GET | VG_M_HEAD | VG_M_DELETE, "/v1/cache/stt", vg_api_cache_stt, VG_AUTH_API, 0,
     STT_Q, NULL},
    {VG_M_PUT, "/v1/cache/stt", vg_api_cache_stt, VG_AUTH_API, 0, STT_Q, "application/json"},
    {VG_M_GET | VG_M_HEAD | VG_M_PUT | VG_M_DELETE, "/v1/cache/tts", vg_api_cache_tts,
     VG_AUTH_API, 0, TTS_Q, NULL},
    {VG_M_POST, "/v1/cache/batch", vg_api_cache_batch, VG_AUTH_API, 0, NULL, "application/json"},
    {VG_M_DELETE, "/v1/cache", vg_api_cache_invalidate, VG_AUTH_API, VG_M_DELETE, "provider kind",
     NULL},
};

const size_t vg_nroutes = VG_ARRAY_LEN(vg_routes);
