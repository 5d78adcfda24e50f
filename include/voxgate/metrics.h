/* One registry of counters, gauges and histograms, rendered two ways:
 * /stats (nested JSON by stats path) and /metrics (Prometheus text).
 * Updates are relaxed atomics, cheap enough for the hit path. */
#ifndef VOXGATE_METRICS_H
#define VOXGATE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

typedef struct vg_counter {
    _Atomic uint64_t v;
} vg_counter;

static inline void vg_counter_add(vg_counter *c, uint64_t n)
{ atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed); }
static inline void vg_counter_inc(vg_counter *c) { vg_counter_add(c, 1); }
static inline uint64_t vg_counter_get(const vg_counter *c)
{ return atomic_load_explicit(&c->v, memory_order_relaxed); }

/* Log-linear histogram of microsecond values: 8 linear sub-buckets per
 * power of two (error <= 12.5%), from 0 up to 2^32 us. */
#define VG_HIST_SUB 8
#define VG_HIST_BUCKETS (VG_HIST_SUB * 33)
typedef struct vg_hist {
    _Atomic uint64_t buckets[VG_HIST_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} vg_hist;

void vg_hist_observe_us(vg_hist *h, uint64_t us);
/* q in [0,1]; returns the upper edge of the bucket holding the q-th
 * observation (0 when empty). */
uint64_t vg_hist_quantile_us(const vg_hist *h, double q);
/* Number of observations <= le_us, exact when le_us+1 is a bucket edge
 * (every power of two is). */
uint64_t vg_hist_count_le(const vg_hist *h, uint64_t le_us);

typedef double (*vg_gauge_fn)(void *ud);

/* Registration (at start-up, before threads serve). Names are copied.
 * prom: Prometheus metric name; labels: 'tier="l1"' or NULL;
 * stats: dotted path in /stats JSON, e.g. "cache.l1.hits", or NULL to
 * leave it out of /stats. */
void vg_metrics_counter(const char *prom, const char *labels, const char *help,
                        const char *stats, vg_counter *c);
void vg_metrics_gauge(const char *prom, const char *labels, const char *help,
                      const char *stats, vg_gauge_fn fn, void *ud);
/* A counter whose value another module keeps (read via fn). */
void vg_metrics_counter_fn(const char *prom, const char *labels, const char *help,
                           const char *stats, vg_gauge_fn fn, void *ud);
/* Rendered in Prometheus as a histogram in seconds; in /stats as
 * {count, p50_us, p99_us, mean_us} under the stats path. */
void vg_metrics_hist(const char *prom, const char *labels, const char *help,
                     const char *stats, vg_hist *h);
/* /stats only: num / (num + other), 0 when both are 0. */
void vg_metrics_ratio(const char *stats, vg_counter *num, vg_counter *other);
/* /stats only: fn returns a cJSON node (void * keeps cJSON out of this
 * header) that is hung at the stats path; for figures whose set changes
 * at run time, such as one object per circuit breaker. */
typedef void *(*vg_json_fn)(void *ud);
void vg_metrics_json(const char *stats, vg_json_fn fn, void *ud);

int vg_metrics_render_prom(vg_buf *out);
int vg_metrics_render_json(vg_buf *out);
/* Drop every registration (tests, shutdown). */
void vg_metrics_reset(void);

#endif
