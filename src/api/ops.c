/* Operations endpoints: liveness, readiness (each dependency pinged with
 * its latency), and the metrics registry rendered as /stats JSON and as
 * Prometheus text. Also where the app's metrics are registered. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "voxgate/log.h"

static double uptime_s(void *ud)
{
    vg_app *app = ud;
    return (double)(vg_clock_ms() - app->started_ms) / 1000.0;
}

void vg_api_health(vg_req *r)
{
    char out[160];
    int n = snprintf(out, sizeof out, "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%.0f}",
                     VG_VERSION, uptime_s(vg_req_app(r)));
    vg_reply(r, 200, "application/json", out, (size_t)n, NULL, 0);
}

static bool check(vg_buf *b, const char *name, const char *backend, int rc, uint64_t t0,
                  bool first)
{
    double ms = (double)(vg_mono_ns() - t0) / 1e6;
    vg_buf_printf(b, "%s\"%s\":{\"ok\":%s,\"backend\":\"%s\",\"latency_ms\":%.3f}",
                  first ? "" : ",", name, rc == VG_OK ? "true" : "false", backend, ms);
    return rc == VG_OK;
}

static void ready(vg_req *r, void *ud);

void vg_api_ready(vg_req *r)
{
    vg_api_store_work(r, ready); /* it pings the store */
}

static void ready(vg_req *r, void *ud)
{
    (void)ud;
    vg_app *app = vg_req_app(r);
    vg_buf b = {0};
    vg_buf_puts(&b, "{\"checks\":{");
    uint64_t t0 = vg_mono_ns();
    /* The kv check is named after its backend ("lmdb", "redis"). */
    bool ok = check(&b, app->kv->ops->name, app->kv->ops->name, vg_kv_ping(app->kv), t0, true);
    t0 = vg_mono_ns();
    ok &= check(&b, "storage", app->blob->ops->name, vg_blob_ping(app->blob), t0, false);
    t0 = vg_mono_ns();
    char why[64];
    ok &= check(&b, "providers", "gateway", vg_gateway_ready(why, sizeof why) ? VG_OK : VG_ERR, t0,
                false);
    vg_buf_printf(&b, "},\"status\":\"%s\"}", ok ? "ready" : "unavailable");
    vg_header h = {"Retry-After", "5"};
    vg_reply_buf(r, ok ? 200 : 503, "application/json", &b, ok ? NULL : &h, ok ? 0 : 1);
    vg_buf_free(&b);
}

void vg_api_stats(vg_req *r)
{
    vg_buf b = {0};
    if (vg_metrics_render_json(&b) != VG_OK) {
        vg_buf_free(&b);
        vg_reply_error(r, 503, "out_of_memory", "cannot render stats");
        return;
    }
    vg_reply_buf(r, 200, "application/json", &b, NULL, 0);
    vg_buf_free(&b);
}

void vg_api_metrics(vg_req *r)
{
    vg_buf b = {0};
    if (vg_metrics_render_prom(&b) != VG_OK) {
        vg_buf_free(&b);
        vg_reply_error(r, 503, "out_of_memory", "cannot render metrics");
        return;
    }
    vg_reply_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", &b, NULL, 0);
    vg_buf_free(&b);
}

/* ---- registration ---- */

static double ratio(const vg_counter *num, const vg_counter *a, const vg_counter *b)
{
    double n = (double)vg_counter_get(num);
    double d = (double)vg_counter_get(a) + (double)(b ? vg_counter_get(b) : 0);
    return d > 0 ? n / d : 0.0;
}

static double hit_rate(void *ud)
{
    vg_tier_metrics *t = ud;
    return ratio(&t->hits, &t->hits, &t->misses);
}

static double error_rate(void *ud)
{
    vg_tier_metrics *t = ud;
    double all = (double)vg_counter_get(&t->hits) + (double)vg_counter_get(&t->misses) +
                 (double)vg_counter_get(&t->errors);
    return all > 0 ? (double)vg_counter_get(&t->errors) / all : 0.0;
}

#define L1_STAT(field)                                   \
    static double l1_##field(void *ud)                   \
    {                                                    \
        vg_l1_stats s;                                   \
        vg_l1_stats_get(((vg_app *)ud)->l1, &s);         \
        return (double)s.field;                          \
    }
L1_STAT(entries)
L1_STAT(bytes)
L1_STAT(evictions)
L1_STAT(expired)

#define KV_STAT(field)                                   \
    static double kv_##field(void *ud)                   \
    {                                                    \
        vg_kv_stats s;                                   \
        vg_kv_stats_get(((vg_app *)ud)->kv, &s);         \
        return (double)s.field;                          \
    }
KV_STAT(entries)
KV_STAT(bytes)
KV_STAT(max_bytes)
KV_STAT(evictions)
KV_STAT(expired)

static void register_tier(vg_app *app, vg_tier_metrics *t, const char *tier)
{
    char labels[32], path[64];
    snprintf(labels, sizeof labels, "tier=\"%s\"", tier);
#define P(leaf) (snprintf(path, sizeof path, "cache.%s.%s", tier, leaf), path)
    vg_metrics_counter("voxgate_cache_hits_total", labels, "Cache lookups that hit.", P("hits"),
                       &t->hits);
    vg_metrics_counter("voxgate_cache_misses_total", labels, "Cache lookups that missed.",
                       P("misses"), &t->misses);
    vg_metrics_counter("voxgate_cache_errors_total", labels, "Cache lookups that failed.",
                       P("errors"), &t->errors);
    vg_metrics_gauge("voxgate_cache_hit_ratio", labels, "Hits over hits plus misses.",
                     P("hit_rate"), hit_rate, t);
    vg_metrics_gauge("voxgate_cache_error_ratio", labels, "Errors over all lookups.",
                     P("error_rate"), error_rate, t);
    vg_metrics_hist("voxgate_cache_get_duration_seconds", labels, "Cache lookup latency.",
                    P("latency"), &t->get_us);
#undef P
}

static void register_status(vg_app *app)
{
    static const unsigned codes[] = {
#define X(s) s,
        VG_STATUS_LIST(X)
#undef X
    };
    char labels[32], path[48];
    for (size_t i = 0; i <= VG_ARRAY_LEN(codes); i++) {
        bool other = i == VG_ARRAY_LEN(codes);
        snprintf(labels, sizeof labels, other ? "status=\"other\"" : "status=\"%u\"",
                 other ? 0 : codes[i]);
        snprintf(path, sizeof path, other ? "requests.by_status.other" : "requests.by_status.%u",
                 other ? 0 : codes[i]);
        vg_metrics_counter("voxgate_http_requests_total", labels, "HTTP requests by status.",
                           path, &app->m.http_status[i]);
    }
    vg_metrics_hist("voxgate_http_request_duration_seconds", NULL,
                    "Time from the request headers to the logged reply.", "requests.latency",
                    &app->m.http_us);
}

void vg_api_register_metrics(vg_app *app)
{
    vg_metrics_gauge("voxgate_uptime_seconds", NULL, "Seconds since start.", "uptime_s",
                     uptime_s, app);
    register_tier(app, &app->m.l1, "l1");
    register_tier(app, &app->m.l2, "l2");
    vg_metrics_gauge("voxgate_cache_entries", "tier=\"l1\"", "Entries held.", "cache.l1.entries",
                     l1_entries, app);
    vg_metrics_gauge("voxgate_cache_entries", "tier=\"l2\"", "Entries held.", "cache.l2.entries",
                     kv_entries, app);
    vg_metrics_gauge("voxgate_cache_bytes", "tier=\"l1\"", "Bytes held.", "cache.l1.bytes",
                     l1_bytes, app);
    vg_metrics_gauge("voxgate_cache_bytes", "tier=\"l2\"", "Bytes held.", "cache.l2.bytes",
                     kv_bytes, app);
    vg_metrics_gauge("voxgate_cache_max_bytes", "tier=\"l2\"", "Configured bound.",
                     "cache.l2.max_bytes", kv_max_bytes, app);
    vg_metrics_counter_fn("voxgate_cache_evictions_total", "tier=\"l1\"",
                          "Entries evicted to make room.",
                          "cache.l1.evictions", l1_evictions, app);
    vg_metrics_counter_fn("voxgate_cache_evictions_total", "tier=\"l2\"",
                          "Entries evicted to make room.",
                          "cache.l2.evictions", kv_evictions, app);
    vg_metrics_counter_fn("voxgate_cache_expired_total", "tier=\"l1\"",
                          "Entries removed after their TTL.",
                          "cache.l1.expired", l1_expired, app);
    vg_metrics_counter_fn("voxgate_cache_expired_total", "tier=\"l2\"",
                          "Entries removed after their TTL.",
                          "cache.l2.expired", kv_expired, app);
    vg_metrics_counter("voxgate_cache_writes_total", "tier=\"l2\"", "Entries written.",
                       "cache.l2.writes", &app->m.l2_writes);
    vg_metrics_counter("voxgate_cache_write_errors_total", "tier=\"l2\"",
                       "Writes dropped because the store failed.", "cache.l2.write_errors",
                       &app->m.l2_write_errors);
    vg_metrics_counter("voxgate_cache_corrupt_total", NULL,
                       "Entries that failed validation and were removed.", "cache.corrupt",
                       &app->m.corrupt_entries);
    vg_metrics_counter("voxgate_storage_errors_total", NULL, "Blob store operations that failed.",
                       "storage.errors", &app->m.blob_errors);
    vg_metrics_counter("voxgate_storage_swept_total", NULL,
                       "TTS audio removed by the sweep: written longer ago than any entry can live.",
                       "storage.swept", &app->m.audio_swept);
    vg_api_files_register_metrics(app);
    register_status(app);
    vg_api_register_redis_metrics(app);
    vg_api_register_ratelimit_metrics(app);
}

size_t vg_app_status_index(unsigned status)
{
    static const unsigned codes[] = {
#define X(s) s,
        VG_STATUS_LIST(X)
#undef X
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(codes); i++)
        if (codes[i] == status)
            return i;
    return VG_ARRAY_LEN(codes);
}
