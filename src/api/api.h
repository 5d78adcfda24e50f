/* Handlers of the endpoint families and the one route table that binds
 * them to paths (src/api/routes.c). Internal to voxgate. */
#ifndef VOXGATE_API_H
#define VOXGATE_API_H

#include "voxgate/app.h"
#include "voxgate/http.h"

extern const vg_route vg_routes[];
extern const size_t vg_nroutes;

/* reply.c: answer 200 with doc as JSON and delete it; NULL (or a document
 * that cannot be printed) answers 503 out_of_memory. */
struct cJSON;
void vg_api_reply_json(vg_req *r, struct cJSON *doc);

/* reply.c: run work(r, NULL) here on the local store; on a remote one
 * (S3), whose calls may take up to s3.timeout_ms, on a vg-io thread with
 * the connection parked (vg_req_offload). */
void vg_api_store_work(vg_req *r, void (*work)(vg_req *r, void *ud));

/* cache.c: the cache-aside API */
void vg_api_cache_stt(vg_req *r);
void vg_api_cache_tts(vg_req *r);
void vg_api_cache_batch(vg_req *r);
void vg_api_cache_invalidate(vg_req *r);

/* ops.c: health, readiness, stats, metrics */
void vg_api_health(vg_req *r);
void vg_api_ready(vg_req *r);
void vg_api_stats(vg_req *r);
void vg_api_metrics(vg_req *r);
/* Register every metric of the app in the registry (once, at start). */
void vg_api_register_metrics(vg_app *app);

/* redis_ops.c: the Redis client's counters (no-op without redis_url) */
void vg_api_register_redis_metrics(vg_app *app);

/* ratelimit.c: the Gating API's rate limits */
void vg_api_ratelimit_check(vg_req *r);
void vg_api_ratelimit_key(vg_req *r);
void vg_api_register_ratelimit_metrics(vg_app *app);
/* The client rate limit (ratelimit.client_policy) for one /v1 request:
 * true to go on; false when it replied (429, or 503 with fail_mode closed). */
bool vg_api_client_limit(vg_req *r);
/* One unit of a configured policy for key, off any request (the gateway's
 * provider rate limits): VG_OK with res (fail_mode open counts as
 * allowed), VG_EUNAVAIL (the store is down and fail_mode is closed), or
 * VG_EINVAL (no such policy). */
struct vg_rl_result;
int vg_api_policy_check(vg_app *app, const char *rid, const char *policy, const char *key,
                        struct vg_rl_result *res);

/* breakers.c: circuit breakers of the gating API (issue 5) */
void vg_api_breakers_list(vg_req *r);
void vg_api_breaker_get(vg_req *r);
void vg_api_breaker_acquire(vg_req *r);
void vg_api_breaker_record(vg_req *r);
void vg_api_breaker_reset(vg_req *r);
void vg_api_breakers_reset(vg_req *r);

/* files.c: the Files API (issue 8) and the blob store's wiring */
void vg_api_files_root(vg_req *r);   /* GET list, POST generated key */
void vg_api_files_key(vg_req *r);    /* GET, HEAD, PUT, DELETE one file */
void vg_api_files_url(vg_req *r);    /* GET a presigned / signed URL */
/* Open the blob store the configuration names (S3 or local) and load the
 * URL-signing key; 0 or -1 with err set. */
int vg_api_files_wire(vg_app *app, char *err, size_t errlen);
void vg_api_files_register_metrics(vg_app *app);
/* Wait for streamed-upload threads to end (after vg_http_stop, which
 * abandons their requests, and before the blob store closes). */
bool vg_api_files_drain(unsigned timeout_ms);
/* A URL anyone can GET for expires_s: presigned by S3, or signed by us
 * (/v1/files/{key}?expires=&sig=). VG_OK or an error. */
int vg_api_files_signed_url(vg_req *r, const char *key, unsigned expires_s, vg_buf *out,
                            uint64_t *expires_at_ms);

/* gateway.c, gw_run.c: the Gateway API (issue 6) */
void vg_api_gw_tts(vg_req *r);
void vg_api_gw_stt(vg_req *r);
void vg_api_gw_speech(vg_req *r);
void vg_api_gw_transcribe(vg_req *r);
void vg_api_gw_models(vg_req *r);
void vg_api_gw_voices(vg_req *r);
/* Create the providers the configuration names (the local one when it
 * names none), the engine, and the store thread; 0 or -1 with err. */
int vg_gateway_wire(vg_app *app, char *err, size_t errlen);
/* After vg_http_stop: stop the engine, the providers and the store thread. */
void vg_gateway_stop(void);
/* /ready "providers": true when one can take work (detail says why not). */
bool vg_gateway_ready(char *detail, size_t cap);

#endif
