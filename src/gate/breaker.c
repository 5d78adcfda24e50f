/* One circuit breaker: the state machine of breaker.h. The state and the
 * end of the open period are atomics so that the common decisions (allow
 * while closed, reject while open) take no lock; transitions, the sliding
 * window and half-open probe permits live under the breaker's mutex.
 * Every transition writes one JSON log line (provider, from, to, reason). */
#include "voxgate/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/keys.h"
#include "voxgate/log.h"
#include "voxgate/metrics.h"
#include "voxgate/util.h"

/* A half-open probe permit; id 0 marks a free slot. */
typedef struct probe {
    uint64_t id;
    uint64_t issued_ms;
} probe;

struct vg_breaker {
    char name[VG_IDENT_MAX + 1];
    vg_breaker_settings s;
    _Atomic int state;
    _Atomic uint64_t open_until_ms; /* written before state turns OPEN */

    vg_counter permitted, rejected, successes, failures, timeouts;
    vg_counter to_open, to_half_open, to_closed;
    vg_counter latency_count, latency_sum_us;

    pthread_mutex_t mu;
    /* Everything below is guarded by mu. */
    uint64_t opened_at_ms;
    uint32_t consecutive;
    uint8_t *window;  /* one bit per slot, 1 = failure */
    uint32_t w_pos, w_len, w_fail;
    probe *probes;    /* half_open_max_calls slots */
    uint32_t probes_issued, probe_successes;
    uint64_t last_permit;
};

/* ---- settings and names ---- */

const char *vg_breaker_settings_invalid(const vg_breaker_settings *s)
{
    if (s->failure_threshold == 0)
        return "failure_threshold";
    /* Written so that NaN fails too. */
    if (!(s->failure_rate_threshold > 0.0 && s->failure_rate_threshold <= 1.0))
        return "failure_rate_threshold";
    if (s->window_size == 0 || s->window_size > VG_BREAKER_MAX_WINDOW)
        return "window_size";
    if (s->min_calls == 0)
        return "min_calls";
    if (s->min_calls > s->window_size)
        return "window_size";
    if (s->recovery_timeout_ms == 0)
        return "recovery_timeout_ms";
    if (s->half_open_max_calls == 0 || s->half_open_max_calls > VG_BREAKER_MAX_PROBES)
        return "half_open_max_calls";
    if (s->success_threshold == 0 || s->success_threshold > s->half_open_max_calls)
        return "success_threshold";
    if (s->call_timeout_ms == 0)
        return "call_timeout_ms";
    return NULL;
}

const char *vg_breaker_state_name(vg_breaker_state s)
{
    switch (s) {
    case VG_BREAKER_CLOSED: return "closed";
    case VG_BREAKER_OPEN: return "open";
    case VG_BREAKER_HALF_OPEN: return "half_open";
    }
    return "unknown";
}

int vg_breaker_outcome_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "success"))
        return VG_OUTCOME_SUCCESS;
    if (!strcmp(s, "failure"))
        return VG_OUTCOME_FAILURE;
    if (!strcmp(s, "timeout"))
        return VG_OUTCOME_TIMEOUT;
    return -1;
}

/* ---- life cycle ---- */

vg_breaker *vg_breaker_new(const char *name, const vg_breaker_settings *s)
{
    if (!name || strlen(name) > VG_IDENT_MAX || vg_breaker_settings_invalid(s))
        return NULL;
    vg_breaker *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->window = calloc((s->window_size + 7) / 8, 1);
    b->probes = calloc(s->half_open_max_calls, sizeof *b->probes);
    if (!b->window || !b->probes || pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b->window);
        free(b->probes);
        free(b);
        return NULL;
    }
    strcpy(b->name, name);
    b->s = *s;
    atomic_init(&b->state, VG_BREAKER_CLOSED);
    atomic_init(&b->open_until_ms, 0);
    return b;
}

void vg_breaker_free(vg_breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->window);
    free(b->probes);
    free(b);
}

const char *vg_breaker_name(const vg_breaker *b) { return b->name; }
const vg_breaker_settings *vg_breaker_get_settings(const vg_breaker *b) { return &b->s; }

/* ---- helpers under mu ---- */

static vg_breaker_state load_state(const vg_breaker *b)
{
    return (vg_breaker_state)atomic_load_explicit(&b->state, memory_order_acquire);
}

static void window_clear(vg_breaker *b)
{
    memset(b->window, 0, (b->s.window_size + 7) / 8);
    b->w_pos = b->w_len = b->w_fail = 0;
    b->consecutive = 0;
}

static bool window_bit(const vg_breaker *b, uint32_t i)
{
    return (b->window[i / 8] >> (i % 8)) & 1u;
}

static void window_push(vg_breaker *b, bool failed)
{
    uint32_t i = b->w_pos;
    if (b->w_len == b->s.window_size)
        b->w_fail -= window_bit(b, i); /* the oldest call leaves the window */
    else
        b->w_len++;
    uint8_t mask = (uint8_t)(1u << (i % 8));
    b->window[i / 8] = (uint8_t)(failed ? b->window[i / 8] | mask : b->window[i / 8] & ~mask);
    b->w_fail += failed;
    b->w_pos = (i + 1) % b->s.window_size;
}

static void probes_clear(vg_breaker *b)
{
    memset(b->probes, 0, b->s.half_open_max_calls * sizeof *b->probes);
    b->probes_issued = b->probe_successes = 0;
}

static void transition(vg_breaker *b, vg_breaker_state to, const char *reason, uint64_t now)
{
    vg_breaker_state from = load_state(b);
    probes_clear(b);
    if (to == VG_BREAKER_OPEN) {
        b->opened_at_ms = now;
        atomic_store_explicit(&b->open_until_ms, now + b->s.recovery_timeout_ms,
                              memory_order_relaxed);
        vg_counter_inc(&b->to_open);
    } else if (to == VG_BREAKER_HALF_OPEN) {
        vg_counter_inc(&b->to_half_open);
    } else {
        b->opened_at_ms = 0;
        window_clear(b);
        vg_counter_inc(&b->to_closed);
    }
    /* Release: a reader that sees OPEN also sees its open_until_ms. */
    atomic_store_explicit(&b->state, (int)to, memory_order_release);
    vg_log(to == VG_BREAKER_OPEN ? VG_LOG_WARN : VG_LOG_INFO, NULL, "breaker state changed",
           (vg_log_field[]){VG_LS("provider", b->name), VG_LS("from", vg_breaker_state_name(from)),
                            VG_LS("to", vg_breaker_state_name(to)), VG_LS("reason", reason)},
           4);
}

/* A probe whose caller never reported back counts as a timeout and
 * reopens the breaker, so a crashed client cannot hold it half-open. */
static void expire_probes(vg_breaker *b, uint64_t now)
{
    uint32_t expired = 0;
    for (uint32_t i = 0; i < b->s.half_open_max_calls; i++) {
        const probe *p = &b->probes[i];
        if (p->id && now >= p->issued_ms && now - p->issued_ms >= b->s.call_timeout_ms)
            expired++;
    }
    if (expired) {
        vg_counter_add(&b->timeouts, expired);
        transition(b, VG_BREAKER_OPEN, "probe_expired", now);
    }
}

/* Apply the transitions that time alone causes. */
static void tick(vg_breaker *b, uint64_t now)
{
    if (load_state(b) == VG_BREAKER_OPEN &&
        now >= atomic_load_explicit(&b->open_until_ms, memory_order_relaxed))
        transition(b, VG_BREAKER_HALF_OPEN, "recovery_timeout", now);
    if (load_state(b) == VG_BREAKER_HALF_OPEN)
        expire_probes(b, now);
}

static uint64_t until_probe(const vg_breaker *b, uint64_t now)
{
    uint64_t until = atomic_load_explicit(&b->open_until_ms, memory_order_relaxed);
    return until > now ? until - now : 0;
}

/* ---- decisions ---- */

static bool decide(vg_breaker_permit *p, bool allowed, vg_breaker_state st, uint64_t id,
                   uint64_t retry)
{
    *p = (vg_breaker_permit){.allowed = allowed, .state = st, .id = id, .retry_after_ms = retry};
    return allowed;
}

static bool acquire_locked(vg_breaker *b, vg_breaker_permit *p, uint64_t now)
{
    tick(b, now);
    vg_breaker_state st = load_state(b);
    if (st == VG_BREAKER_CLOSED)
        return decide(p, true, st, 0, 0);
    if (st == VG_BREAKER_OPEN)
        return decide(p, false, st, 0, until_probe(b, now));
    if (b->probes_issued >= b->s.half_open_max_calls)
        return decide(p, false, st, 0, 0);
    /* Slots are never short: at most half_open_max_calls are issued per period. */
    for (uint32_t i = 0; i < b->s.half_open_max_calls; i++) {
        if (b->probes[i].id)
            continue;
        b->probes[i] = (probe){.id = ++b->last_permit, .issued_ms = now};
        b->probes_issued++;
        return decide(p, true, st, b->probes[i].id, 0);
    }
    return decide(p, false, st, 0, 0);
}

bool vg_breaker_acquire(vg_breaker *b, vg_breaker_permit *p)
{
    vg_breaker_state st = load_state(b);
    if (st == VG_BREAKER_CLOSED) {
        vg_counter_inc(&b->permitted);
        return decide(p, true, st, 0, 0);
    }
    uint64_t now = vg_clock_ms();
    if (st == VG_BREAKER_OPEN) {
        uint64_t left = until_probe(b, now);
        if (left) {
            vg_counter_inc(&b->rejected);
            return decide(p, false, st, 0, left);
        }
    }
    pthread_mutex_lock(&b->mu);
    bool ok = acquire_locked(b, p, now);
    pthread_mutex_unlock(&b->mu);
    vg_counter_inc(ok ? &b->permitted : &b->rejected);
    return ok;
}

static void count_outcome(vg_breaker *b, vg_breaker_outcome o, uint64_t latency_us)
{
    vg_counter_inc(o == VG_OUTCOME_SUCCESS   ? &b->successes
                   : o == VG_OUTCOME_TIMEOUT ? &b->timeouts
                                             : &b->failures);
    vg_counter_inc(&b->latency_count);
    vg_counter_add(&b->latency_sum_us, latency_us);
}

static void record_closed(vg_breaker *b, bool failed, uint64_t now)
{
    window_push(b, failed);
    if (!failed) {
        b->consecutive = 0;
        return;
    }
    b->consecutive++;
    if (b->consecutive >= b->s.failure_threshold)
        transition(b, VG_BREAKER_OPEN, "consecutive_failures", now);
    else if (b->w_len >= b->s.min_calls &&
             (double)b->w_fail >= b->s.failure_rate_threshold * (double)b->w_len)
        transition(b, VG_BREAKER_OPEN, "failure_rate", now);
}

static int record_half_open(vg_breaker *b, vg_breaker_outcome o, uint64_t permit_id,
                            uint64_t now)
{
    probe *p = NULL;
    for (uint32_t i = 0; permit_id && !p && i < b->s.half_open_max_calls; i++)
        if (b->probes[i].id == permit_id)
            p = &b->probes[i];
    if (!p)
        return VG_EINVAL;
    p->id = 0;
    if (o != VG_OUTCOME_SUCCESS)
        transition(b, VG_BREAKER_OPEN, o == VG_OUTCOME_TIMEOUT ? "probe_timeout" : "probe_failed",
                   now);
    else if (++b->probe_successes >= b->s.success_threshold)
        transition(b, VG_BREAKER_CLOSED, "probes_succeeded", now);
    return VG_OK;
}

int vg_breaker_record(vg_breaker *b, vg_breaker_outcome o, uint64_t latency_us,
                      uint64_t permit_id, vg_breaker_state *state)
{
    if (o != VG_OUTCOME_SUCCESS && o != VG_OUTCOME_FAILURE && o != VG_OUTCOME_TIMEOUT)
        return VG_EINVAL;
    uint64_t now = vg_clock_ms();
    int rc = VG_OK;
    pthread_mutex_lock(&b->mu);
    tick(b, now);
    vg_breaker_state st = load_state(b);
    if (st == VG_BREAKER_HALF_OPEN)
        rc = record_half_open(b, o, permit_id, now);
    else if (st == VG_BREAKER_CLOSED)
        record_closed(b, o != VG_OUTCOME_SUCCESS, now);
    if (rc == VG_OK)
        count_outcome(b, o, latency_us);
    if (state)
        *state = load_state(b);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void vg_breaker_reset(vg_breaker *b)
{
    uint64_t now = vg_clock_ms();
    pthread_mutex_lock(&b->mu);
    if (load_state(b) != VG_BREAKER_CLOSED)
        transition(b, VG_BREAKER_CLOSED, "reset", now);
    else
        window_clear(b);
    pthread_mutex_unlock(&b->mu);
}

/* ---- observation ---- */

vg_breaker_state vg_breaker_state_now(vg_breaker *b)
{
    vg_breaker_state st = load_state(b);
    if (st == VG_BREAKER_CLOSED)
        return st;
    pthread_mutex_lock(&b->mu);
    tick(b, vg_clock_ms());
    st = load_state(b);
    pthread_mutex_unlock(&b->mu);
    return st;
}

void vg_breaker_snapshot_get(vg_breaker *b, vg_breaker_snapshot *out)
{
    uint64_t now = vg_clock_ms();
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&b->mu);
    tick(b, now);
    out->state = load_state(b);
    out->available = out->state == VG_BREAKER_CLOSED ||
                     (out->state == VG_BREAKER_HALF_OPEN &&
                      b->probes_issued < b->s.half_open_max_calls);
    out->opened_at_ms = b->opened_at_ms;
    if (out->state == VG_BREAKER_OPEN)
        out->next_probe_at_ms = atomic_load_explicit(&b->open_until_ms, memory_order_relaxed);
    out->consecutive_failures = b->consecutive;
    out->window_calls = b->w_len;
    out->window_failures = b->w_fail;
    out->failure_rate = b->w_len ? (double)b->w_fail / (double)b->w_len : 0.0;
    out->probes_issued = b->probes_issued;
    for (uint32_t i = 0; i < b->s.half_open_max_calls; i++)
        out->probes_in_flight += b->probes[i].id != 0;
    out->probe_successes = b->probe_successes;
    pthread_mutex_unlock(&b->mu);
    out->permitted = vg_counter_get(&b->permitted);
    out->rejected = vg_counter_get(&b->rejected);
    out->successes = vg_counter_get(&b->successes);
    out->failures = vg_counter_get(&b->failures);
    out->timeouts = vg_counter_get(&b->timeouts);
    out->to_open = vg_counter_get(&b->to_open);
    out->to_half_open = vg_counter_get(&b->to_half_open);
    out->to_closed = vg_counter_get(&b->to_closed);
    out->latency_count = vg_counter_get(&b->latency_count);
    out->latency_sum_us = vg_counter_get(&b->latency_sum_us);
}
