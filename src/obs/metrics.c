/* The metrics registry and its two renderings: Prometheus text for
 * /metrics and nested JSON for /stats. Registration happens at start-up
 * under a lock; updates are relaxed atomics in the caller's structs, so
 * rendering only reads and never stops the hit path. */
#include "voxgate/metrics.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Histogram. Values 0..7 get a bucket each; from 8 on, each power of
 * two [2^e, 2^(e+1)) is split into 8 equal buckets keyed by the three
 * bits after the leading one. 2^32 lands in bucket 240; the rest of the
 * array is headroom the header reserves. */

#define HIST_MAX (UINT64_C(1) << 32)

static inline unsigned bucket_of(uint64_t v)
{
    if (v < VG_HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* e >= 3 */
    return (e - 2) * VG_HIST_SUB + (unsigned)((v >> (e - 3)) & (VG_HIST_SUB - 1));
}

static uint64_t bucket_lower(unsigned i)
{
    if (i < VG_HIST_SUB)
        return i;
    unsigned g = i / VG_HIST_SUB, s = i % VG_HIST_SUB;
    return (uint64_t)(VG_HIST_SUB + s) << (g - 1);
}

/* Largest value the bucket can hold; clamping caps the last one. */
static uint64_t bucket_upper(unsigned i)
{
    uint64_t u = bucket_lower(i + 1) - 1;
    return u < HIST_MAX ? u : HIST_MAX;
}

void vg_hist_observe_us(vg_hist *h, uint64_t us)
{
    if (us > HIST_MAX)
        us = HIST_MAX;
    atomic_fetch_add_explicit(&h->buckets[bucket_of(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

/* Counts are read once into snap so every figure derived from one
 * rendering agrees, even while other threads keep observing. */
static uint64_t hist_snapshot(const vg_hist *h, uint64_t snap[VG_HIST_BUCKETS])
{
    uint64_t total = 0;
    for (unsigned i = 0; i < VG_HIST_BUCKETS; i++) {
        snap[i] = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        total += snap[i];
    }
    return total;
}

static uint64_t snap_quantile(const uint64_t snap[VG_HIST_BUCKETS], uint64_t total, double q)
{
    if (total == 0)
        return 0;
    if (!(q > 0))
        q = 0;
    if (q > 1)
        q = 1;
    double r = ceil(q * (double)total);
    uint64_t rank = r < 1 ? 1 : r >= (double)total ? total : (uint64_t)r;
    uint64_t seen = 0;
    for (unsigned i = 0; i < VG_HIST_BUCKETS; i++) {
        seen += snap[i];
        if (seen >= rank)
            return bucket_upper(i);
    }
    return HIST_MAX;
}

uint64_t vg_hist_quantile_us(const vg_hist *h, double q)
{
    uint64_t snap[VG_HIST_BUCKETS];
    uint64_t total = hist_snapshot(h, snap);
    return snap_quantile(snap, total, q);
}

/* Buckets wholly <= le are those before the one holding le+1. */
static uint64_t snap_count_le(const uint64_t snap[VG_HIST_BUCKETS], uint64_t le)
{
    unsigned end = le >= HIST_MAX ? VG_HIST_BUCKETS : bucket_of(le + 1);
    uint64_t n = 0;
    for (unsigned i = 0; i < end; i++)
        n += snap[i];
    return n;
}

uint64_t vg_hist_count_le(const vg_hist *h, uint64_t le_us)
{
    uint64_t snap[VG_HIST_BUCKETS];
    hist_snapshot(h, snap);
    return snap_count_le(snap, le_us);
}

/* ------------------------------------------------------------------ */
/* Registry. */

/* M_COUNTER_FN: a monotonic count kept elsewhere (e.g. inside L1),
 * read through a callback but typed as a counter for Prometheus. */
typedef enum { M_COUNTER, M_COUNTER_FN, M_GAUGE, M_HIST, M_RATIO, M_JSON } metric_kind;

typedef struct {
    metric_kind kind;
    char *prom, *labels, *help, *stats; /* owned copies; any may be NULL */
    union {
        vg_counter *c;
        struct { vg_gauge_fn fn; void *ud; } g;
        vg_hist *h;
        struct { vg_counter *num, *other; } r;
        struct { vg_json_fn fn; void *ud; } j;
    } u;
} metric;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static metric *reg;
static size_t reg_len, reg_cap;

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

static void metric_free(metric *m)
{
    free(m->prom);
    free(m->labels);
    free(m->help);
    free(m->stats);
}

/* Registration has no way to report failure; on OOM the metric is
 * simply absent, which beats aborting the gateway. */
static void reg_add(metric_kind kind, const char *prom, const char *labels, const char *help,
                    const char *stats, metric m)
{
    m.kind = kind;
    m.prom = dup_or_null(prom);
    m.labels = dup_or_null(labels);
    m.help = dup_or_null(help);
    m.stats = dup_or_null(stats);
    pthread_mutex_lock(&reg_mu);
    if (reg_len == reg_cap) {
        size_t cap = reg_cap ? reg_cap * 2 : 32;
        metric *p = realloc(reg, cap * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&reg_mu);
            metric_free(&m);
            return;
        }
        reg = p;
        reg_cap = cap;
    }
    reg[reg_len++] = m;
    pthread_mutex_unlock(&reg_mu);
}

void vg_metrics_counter(const char *prom, const char *labels, const char *help,
                        const char *stats, vg_counter *c)
{
    reg_add(M_COUNTER, prom, labels, help, stats, (metric){.u.c = c});
}

void vg_metrics_gauge(const char *prom, const char *labels, const char *help,
                      const char *stats, vg_gauge_fn fn, void *ud)
{
    reg_add(M_GAUGE, prom, labels, help, stats, (metric){.u.g = {fn, ud}});
}

void vg_metrics_counter_fn(const char *prom, const char *labels, const char *help,
                           const char *stats, vg_gauge_fn fn, void *ud)
{
    reg_add(M_COUNTER_FN, prom, labels, help, stats, (metric){.u.g = {fn, ud}});
}

void vg_metrics_hist(const char *prom, const char *labels, const char *help,
                     const char *stats, vg_hist *h)
{
    reg_add(M_HIST, prom, labels, help, stats, (metric){.u.h = h});
}

void vg_metrics_ratio(const char *stats, vg_counter *num, vg_counter *other)
{
    reg_add(M_RATIO, NULL, NULL, NULL, stats, (metric){.u.r = {num, other}});
}

void vg_metrics_json(const char *stats, vg_json_fn fn, void *ud)
{
    reg_add(M_JSON, NULL, NULL, NULL, stats, (metric){.u.j = {fn, ud}});
}

void vg_metrics_reset(void)
{
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < reg_len; i++)
        metric_free(&reg[i]);
    free(reg);
    reg = NULL;
    reg_len = reg_cap = 0;
    pthread_mutex_unlock(&reg_mu);
}

static double ratio_value(const metric *m)
{
    uint64_t a = vg_counter_get(m->u.r.num), b = vg_counter_get(m->u.r.other);
    return a + b ? (double)a / ((double)a + (double)b) : 0.0;
}

/* ------------------------------------------------------------------ */
/* Prometheus text format 0.0.4. */

/* Prometheus power-of-4 bucket edges, 4 us .. ~67 s. */
#define PROM_EDGES 13

static const char *prom_type(metric_kind k)
{
    return k == M_COUNTER || k == M_COUNTER_FN ? "counter" : k == M_GAUGE ? "gauge" : "histogram";
}

/* HELP text escapes only backslash and newline. */
static int put_help(vg_buf *out, const char *s)
{
    int rc = VG_OK;
    for (; s && *s && rc == VG_OK; s++) {
        if (*s == '\\')
            rc = vg_buf_puts(out, "\\\\");
        else if (*s == '\n')
            rc = vg_buf_puts(out, "\\n");
        else
            rc = vg_buf_append(out, s, 1);
    }
    return rc;
}

/* Whole microseconds as exact decimal seconds. */
static int put_seconds(vg_buf *out, uint64_t us)
{
    return vg_buf_printf(out, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
}

/* Shortest of %.15g / %.17g that reads back as the same double. */
static int put_double(vg_buf *out, double d)
{
    if (isnan(d))
        return vg_buf_puts(out, "NaN");
    if (isinf(d))
        return vg_buf_puts(out, d > 0 ? "+Inf" : "-Inf");
    char tmp[32];
    snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    return vg_buf_puts(out, tmp);
}

/* "name_suffix{labels,le="..."} " - the value is appended by the caller.
 * le_us == 0 means no le label, UINT64_MAX means +Inf. */
static int put_series(vg_buf *out, const metric *m, const char *suffix, uint64_t le_us)
{
    int rc = vg_buf_printf(out, "%s%s", m->prom, suffix);
    if (!m->labels && !le_us)
        return rc ? rc : vg_buf_puts(out, " ");
    rc = rc ? rc : vg_buf_printf(out, "{%s%s", m->labels ? m->labels : "",
                                 m->labels && le_us ? "," : "");
    if (le_us == UINT64_MAX)
        rc = rc ? rc : vg_buf_puts(out, "le=\"+Inf\"");
    else if (le_us) {
        rc = rc ? rc : vg_buf_puts(out, "le=\"");
        rc = rc ? rc : put_seconds(out, le_us);
        rc = rc ? rc : vg_buf_puts(out, "\"");
    }
    return rc ? rc : vg_buf_puts(out, "} ");
}

/* Bucket le=2^k us holds observations < 2^k whole microseconds: callers
 * truncate durations to whole us, so a stored v stands for [v, v+1) and
 * only v < 2^k is certainly <= 2^k us. That is also where the buckets
 * are exact. */
static int prom_hist(vg_buf *out, const metric *m)
{
    uint64_t snap[VG_HIST_BUCKETS];
    uint64_t total = hist_snapshot(m->u.h, snap);
    uint64_t sum = atomic_load_explicit(&m->u.h->sum_us, memory_order_relaxed);
    int rc = VG_OK;
    for (unsigned k = 1; k <= PROM_EDGES && rc == VG_OK; k++) {
        uint64_t edge = UINT64_C(1) << (2 * k);
        rc = put_series(out, m, "_bucket", edge);
        rc = rc ? rc : vg_buf_printf(out, "%" PRIu64 "\n", snap_count_le(snap, edge - 1));
    }
    rc = rc ? rc : put_series(out, m, "_bucket", UINT64_MAX);
    rc = rc ? rc : vg_buf_printf(out, "%" PRIu64 "\n", total);
    rc = rc ? rc : put_series(out, m, "_sum", 0);
    rc = rc ? rc : put_seconds(out, sum);
    rc = rc ? rc : vg_buf_puts(out, "\n");
    rc = rc ? rc : put_series(out, m, "_count", 0);
    return rc ? rc : vg_buf_printf(out, "%" PRIu64 "\n", total);
}

static int prom_sample(vg_buf *out, const metric *m)
{
    if (m->kind == M_HIST)
        return prom_hist(out, m);
    int rc = put_series(out, m, "", 0);
    if (m->kind == M_COUNTER)
        rc = rc ? rc : vg_buf_printf(out, "%" PRIu64, vg_counter_get(m->u.c));
    else
        rc = rc ? rc : put_double(out, m->u.g.fn(m->u.g.ud));
    return rc ? rc : vg_buf_puts(out, "\n");
}

static bool same_family(const metric *a, const metric *b)
{
    return b->prom && strcmp(a->prom, b->prom) == 0;
}

/* One family: HELP and TYPE once, then every registration of that name
 * and kind (a kind clash is a caller bug; the stray series is dropped
 * rather than emitting text Prometheus would reject). */
static int prom_family(vg_buf *out, size_t first)
{
    const metric *f = &reg[first];
    const char *help = NULL;
    for (size_t i = first; i < reg_len && !help; i++)
        if (same_family(f, &reg[i]))
            help = reg[i].help;
    int rc = vg_buf_printf(out, "# HELP %s ", f->prom);
    rc = rc ? rc : put_help(out, help);
    rc = rc ? rc : vg_buf_printf(out, "\n# TYPE %s %s\n", f->prom, prom_type(f->kind));
    for (size_t i = first; i < reg_len && rc == VG_OK; i++)
        if (same_family(f, &reg[i]) && reg[i].kind == f->kind)
            rc = prom_sample(out, &reg[i]);
    return rc;
}

static bool family_seen(size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (same_family(&reg[i], &reg[j]))
            return true;
    return false;
}

int vg_metrics_render_prom(vg_buf *out)
{
    int rc = VG_OK;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < reg_len && rc == VG_OK; i++)
        if (reg[i].prom && reg[i].kind != M_RATIO && !family_seen(i))
            rc = prom_family(out, i);
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

/* ------------------------------------------------------------------ */
/* /stats JSON. */

static cJSON *json_hist(const vg_hist *h)
{
    uint64_t snap[VG_HIST_BUCKETS];
    uint64_t total = hist_snapshot(h, snap);
    uint64_t sum = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    if (!cJSON_AddNumberToObject(o, "count", (double)total) ||
        !cJSON_AddNumberToObject(o, "mean_us", total ? (double)sum / (double)total : 0.0) ||
        !cJSON_AddNumberToObject(o, "p50_us", (double)snap_quantile(snap, total, 0.5)) ||
        !cJSON_AddNumberToObject(o, "p99_us", (double)snap_quantile(snap, total, 0.99))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *json_value(const metric *m)
{
    switch (m->kind) {
    case M_COUNTER: return cJSON_CreateNumber((double)vg_counter_get(m->u.c));
    case M_COUNTER_FN:
    case M_GAUGE: return cJSON_CreateNumber(m->u.g.fn(m->u.g.ud));
    case M_HIST: return json_hist(m->u.h);
    case M_RATIO: return cJSON_CreateNumber(ratio_value(m));
    case M_JSON: return m->u.j.fn(m->u.j.ud);
    }
    return NULL;
}

static bool path_valid(const char *p)
{
    return *p && *p != '.' && p[strlen(p) - 1] != '.' && !strstr(p, "..");
}

/* Walk "a.b.c" from root, creating objects a and b, and hang v at c.
 * A path that collides with an existing leaf or repeats a path is
 * dropped: first registration wins. */
static int json_place(cJSON *root, char *path, cJSON *v)
{
    cJSON *node = root;
    char *seg = path, *dot;
    if (!path_valid(path))
        goto drop;
    while ((dot = strchr(seg, '.'))) {
        *dot = '\0';
        cJSON *child = cJSON_GetObjectItemCaseSensitive(node, seg);
        if (child && !cJSON_IsObject(child))
            goto drop;
        if (!child && !(child = cJSON_AddObjectToObject(node, seg)))
            goto nomem;
        node = child;
        seg = dot + 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(node, seg))
        goto drop;
    if (!cJSON_AddItemToObject(node, seg, v))
        goto nomem;
    return VG_OK;
drop:
    cJSON_Delete(v);
    return VG_OK;
nomem:
    cJSON_Delete(v);
    return VG_ENOMEM;
}

static int json_add(cJSON *root, const metric *m)
{
    cJSON *v = json_value(m);
    char *path = strdup(m->stats);
    if (!v || !path) {
        cJSON_Delete(v);
        free(path);
        return VG_ENOMEM;
    }
    int rc = json_place(root, path, v); /* cJSON copies the keys */
    free(path);
    return rc;
}

int vg_metrics_render_json(vg_buf *out)
{
    cJSON *root = cJSON_CreateObject();
    int rc = root ? VG_OK : VG_ENOMEM;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < reg_len && rc == VG_OK; i++)
        if (reg[i].stats)
            rc = json_add(root, &reg[i]);
    pthread_mutex_unlock(&reg_mu);
    char *s = rc == VG_OK ? cJSON_PrintUnformatted(root) : NULL;
    if (rc == VG_OK)
        rc = s ? vg_buf_puts(out, s) : VG_ENOMEM;
    cJSON_free(s);
    cJSON_Delete(root);
    return rc;
}
