/* The breaker registry: one breaker per provider name. Configured
 * providers get theirs at start-up; the gating API creates the others on
 * demand with the default settings, up to max_created. Breakers are never
 * removed, so a lookup is a lock-free probe of an open-addressing table
 * whose slots are only ever filled (under the creation mutex). Also
 * registers the breakers' Prometheus series and their /stats object. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/breaker.h"
#include "voxgate/keys.h"
#include "voxgate/metrics.h"
#include "voxgate/util.h"

/* Configured providers beyond max_created; config.h allows 64. */
#define MAX_CONFIGURED 256

typedef struct entry {
    vg_breaker *b;
    bool configured;
} entry;

struct vg_breakers {
    vg_breaker_settings defaults;
    uint32_t max_created, created;
    pthread_mutex_t mu;          /* serialises creation and metrics registration */
    bool metrics;                /* register series of breakers created from now on */
    size_t nslots;               /* power of two, at least twice the capacity */
    _Atomic(entry *) *slots;
    entry *list;                 /* creation order */
    size_t cap;
    _Atomic size_t n;
};

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

vg_breakers *vg_breakers_new(const vg_breaker_settings *defaults, uint32_t max_created)
{
    if (vg_breaker_settings_invalid(defaults))
        return NULL;
    vg_breakers *reg = calloc(1, sizeof *reg);
    if (!reg)
        return NULL;
    reg->defaults = *defaults;
    reg->max_created = max_created;
    reg->cap = (size_t)max_created + MAX_CONFIGURED;
    reg->nslots = 16;
    while (reg->nslots < 2 * reg->cap)
        reg->nslots *= 2;
    reg->slots = calloc(reg->nslots, sizeof *reg->slots);
    reg->list = calloc(reg->cap, sizeof *reg->list);
    if (!reg->slots || !reg->list || pthread_mutex_init(&reg->mu, NULL) != 0) {
        free(reg->slots);
        free(reg->list);
        free(reg);
        return NULL;
    }
    return reg;
}

void vg_breakers_free(vg_breakers *reg)
{
    if (!reg)
        return;
    size_t n = atomic_load(&reg->n);
    for (size_t i = 0; i < n; i++)
        vg_breaker_free(reg->list[i].b);
    pthread_mutex_destroy(&reg->mu);
    free(reg->slots);
    free(reg->list);
    free(reg);
}

static entry *find(const vg_breakers *reg, const char *name)
{
    size_t mask = reg->nslots - 1;
    for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
        entry *e = atomic_load_explicit(&reg->slots[i], memory_order_acquire);
        if (!e || !strcmp(vg_breaker_name(e->b), name))
            return e;
    }
}

static void register_one(vg_breaker *b);

/* Under mu: create and publish. The table never fills: nslots >= 2 cap. */
static int insert(vg_breakers *reg, const char *name, const vg_breaker_settings *s,
                  bool configured, entry **out)
{
    size_t n = atomic_load_explicit(&reg->n, memory_order_relaxed);
    if (n == reg->cap)
        return VG_ETOOBIG;
    vg_breaker *b = vg_breaker_new(name, s);
    if (!b)
        return vg_breaker_settings_invalid(s) ? VG_EINVAL : VG_ENOMEM;
    entry *e = &reg->list[n];
    *e = (entry){.b = b, .configured = configured};
    size_t mask = reg->nslots - 1, i = name_hash(name) & mask;
    while (atomic_load_explicit(&reg->slots[i], memory_order_relaxed))
        i = (i + 1) & mask;
    atomic_store_explicit(&reg->slots[i], e, memory_order_release);
    atomic_store_explicit(&reg->n, n + 1, memory_order_release);
    if (reg->metrics)
        register_one(b);
    *out = e;
    return VG_OK;
}

int vg_breakers_add(vg_breakers *reg, const char *name, const vg_breaker_settings *s)
{
    if (!name || !vg_ident_valid(name))
        return VG_EINVAL;
    pthread_mutex_lock(&reg->mu);
    entry *e = find(reg, name);
    int rc = e ? VG_EINVAL : insert(reg, name, s, true, &e);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int vg_breakers_get(vg_breakers *reg, const char *name, bool create, vg_breaker **out)
{
    if (!name || !vg_ident_valid(name))
        return VG_EINVAL;
    entry *e = find(reg, name);
    if (e) {
        *out = e->b;
        return VG_OK;
    }
    if (!create)
        return VG_NOTFOUND;
    int rc = VG_OK;
    pthread_mutex_lock(&reg->mu);
    e = find(reg, name); /* another thread may have created it meanwhile */
    if (!e && reg->created >= reg->max_created)
        rc = VG_ETOOBIG;
    else if (!e && (rc = insert(reg, name, &reg->defaults, false, &e)) == VG_OK)
        reg->created++;
    pthread_mutex_unlock(&reg->mu);
    if (rc == VG_OK)
        *out = e->b;
    return rc;
}

bool vg_breakers_is_configured(const vg_breakers *reg, const vg_breaker *b)
{
    entry *e = find(reg, vg_breaker_name(b));
    return e && e->configured;
}

size_t vg_breakers_count(const vg_breakers *reg)
{
    return atomic_load_explicit(&reg->n, memory_order_acquire);
}

vg_breaker *vg_breakers_at(const vg_breakers *reg, size_t i) { return reg->list[i].b; }

uint32_t vg_breakers_max_created(const vg_breakers *reg) { return reg->max_created; }

size_t vg_breakers_reset_all(vg_breakers *reg)
{
    size_t n = vg_breakers_count(reg);
    for (size_t i = 0; i < n; i++)
        vg_breaker_reset(reg->list[i].b);
    return n;
}

/* ---- metrics ---- */

static double state_value(void *ud) { return (double)vg_breaker_state_now(ud); }

#define SNAP_FN(fname, field)                      \
    static double fname(void *ud)                  \
    {                                              \
        vg_breaker_snapshot s;                     \
        vg_breaker_snapshot_get(ud, &s);           \
        return (double)s.field;                    \
    }
SNAP_FN(m_to_open, to_open)
SNAP_FN(m_to_half_open, to_half_open)
SNAP_FN(m_to_closed, to_closed)
SNAP_FN(m_permitted, permitted)
SNAP_FN(m_rejected, rejected)
SNAP_FN(m_successes, successes)
SNAP_FN(m_failures, failures)
SNAP_FN(m_timeouts, timeouts)
SNAP_FN(m_failure_rate, failure_rate)

/* Prometheus only: /stats gets the richer "breakers" object below. */
static void register_one(vg_breaker *b)
{
    char lab[160];
    const char *name = vg_breaker_name(b); /* identifier chars need no escaping */
#define LAB(extra) (snprintf(lab, sizeof lab, "provider=\"%s\"%s", name, extra), lab)
    vg_metrics_gauge("voxgate_breaker_state", LAB(""),
                     "Breaker state: 0 closed, 1 open, 2 half_open.", NULL, state_value, b);
    vg_metrics_counter_fn("voxgate_breaker_transitions_total", LAB(",to=\"open\""),
                          "Breaker state changes by target state.", NULL, m_to_open, b);
    vg_metrics_counter_fn("voxgate_breaker_transitions_total", LAB(",to=\"half_open\""),
                          "Breaker state changes by target state.", NULL, m_to_half_open, b);
    vg_metrics_counter_fn("voxgate_breaker_transitions_total", LAB(",to=\"closed\""),
                          "Breaker state changes by target state.", NULL, m_to_closed, b);
    vg_metrics_counter_fn("voxgate_breaker_permitted_total", LAB(""),
                          "Calls the breaker allowed.", NULL, m_permitted, b);
    vg_metrics_counter_fn("voxgate_breaker_rejected_total", LAB(""),
                          "Calls the breaker refused.", NULL, m_rejected, b);
    vg_metrics_counter_fn("voxgate_breaker_outcomes_total", LAB(",outcome=\"success\""),
                          "Recorded call outcomes.", NULL, m_successes, b);
    vg_metrics_counter_fn("voxgate_breaker_outcomes_total", LAB(",outcome=\"failure\""),
                          "Recorded call outcomes.", NULL, m_failures, b);
    vg_metrics_counter_fn("voxgate_breaker_outcomes_total", LAB(",outcome=\"timeout\""),
                          "Recorded call outcomes.", NULL, m_timeouts, b);
    vg_metrics_gauge("voxgate_breaker_failure_rate", LAB(""),
                     "Failures over calls in the sliding window.", NULL, m_failure_rate, b);
#undef LAB
}

static void *stats_json(void *ud)
{
    vg_breakers *reg = ud;
    cJSON *o = cJSON_CreateObject();
    size_t n = vg_breakers_count(reg);
    for (size_t i = 0; o && i < n; i++) {
        vg_breaker_snapshot s;
        vg_breaker_snapshot_get(reg->list[i].b, &s);
        cJSON *b = cJSON_AddObjectToObject(o, vg_breaker_name(reg->list[i].b));
        if (!b)
            break;
        cJSON_AddStringToObject(b, "state", vg_breaker_state_name(s.state));
        cJSON_AddBoolToObject(b, "available", s.available);
        cJSON_AddNumberToObject(b, "failure_rate", s.failure_rate);
        cJSON_AddNumberToObject(b, "permitted", (double)s.permitted);
        cJSON_AddNumberToObject(b, "rejected", (double)s.rejected);
        cJSON_AddNumberToObject(b, "successes", (double)s.successes);
        cJSON_AddNumberToObject(b, "failures", (double)s.failures);
        cJSON_AddNumberToObject(b, "timeouts", (double)s.timeouts);
        cJSON_AddNumberToObject(b, "transitions",
                                (double)(s.to_open + s.to_half_open + s.to_closed));
        cJSON_AddNumberToObject(b, "opened", (double)s.to_open);
    }
    return o;
}

void vg_breakers_register_metrics(vg_breakers *reg)
{
    pthread_mutex_lock(&reg->mu);
    if (!reg->metrics) {
        reg->metrics = true;
        size_t n = vg_breakers_count(reg);
        for (size_t i = 0; i < n; i++)
            register_one(reg->list[i].b);
        vg_metrics_json("breakers", stats_json, reg);
    }
    pthread_mutex_unlock(&reg->mu);
}
