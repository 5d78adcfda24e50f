/* The wired application: configuration plus the parts main.c chose
 * (L1, the kv backend, the blob store) and the counters handlers update.
 * Handlers reach it through vg_req_app(); they never know which backend
 * implementation sits behind kv or blob. */
#ifndef VOXGATE_APP_H
#define VOXGATE_APP_H

#include "voxgate/blob.h"
#include "voxgate/breaker.h"
#include "voxgate/config.h"
#include "voxgate/kv.h"
#include "voxgate/l1.h"
#include "voxgate/metrics.h"

/* Statuses with their own counter; anything else counts as "other". */
#define VG_STATUS_LIST(X) \
    X(200) X(201) X(204) X(304) X(400) X(401) X(403) X(404) X(405) X(408) \
    X(413) X(414) X(415) X(429) X(431) X(500) X(502) X(503) X(504)

#define VG_STATUS_ONE(s) +1
#define VG_STATUS_COUNT (0 VG_STATUS_LIST(VG_STATUS_ONE))

typedef struct vg_tier_metrics {
    vg_counter hits, misses, errors;
    vg_hist get_us;
} vg_tier_metrics;

typedef struct vg_app_metrics {
    vg_tier_metrics l1, l2;
    vg_counter l2_writes, l2_write_errors;
    vg_counter blob_errors, corrupt_entries;
    vg_counter audio_swept;        /* TTS audio removed by the sweep */
    vg_counter http_status[VG_STATUS_COUNT + 1];
    vg_hist http_us;
} vg_app_metrics;

struct vg_req;

typedef struct vg_app {
    vg_config *cfg;
    vg_l1 *l1;
    vg_kv *kv;
    struct vg_redis *redis;  /* set when redis_url is: kv and limiter state live there */
    struct vg_limiter *limiter; /* in-process, or Redis when redis_url is set */
    /* Run for every /v1 request after auth (the client rate limit); true
     * to go on, false when it replied. NULL: nothing to run. */
    bool (*v1_gate)(struct vg_req *r);
    vg_blob *blob;
    vg_breakers *breakers;   /* one circuit breaker per provider (issue 5) */
    uint64_t started_ms;
    vg_app_metrics m;
} vg_app;

/* Index into m.http_status for a status code. */
size_t vg_app_status_index(unsigned status);

#endif
