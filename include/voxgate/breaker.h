/* Circuit breakers (SPEC §5 "Gating API"): one per provider, closed ->
 * open on consecutive failures or a failure rate over a count-based
 * sliding window, open -> half_open after recovery_timeout_ms, then
 * exactly half_open_max_calls probes; success_threshold successes close
 * it, any failed probe reopens it with a fresh timeout.
 *
 * The decision in the closed state (and the rejection while open) reads
 * atomics only, no lock; everything else takes the breaker's mutex.
 * Times come from vg_clock_ms, which unit tests replace. */
#ifndef VOXGATE_BREAKER_H
#define VOXGATE_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    VG_BREAKER_CLOSED = 0,
    VG_BREAKER_OPEN = 1,
    VG_BREAKER_HALF_OPEN = 2,
} vg_breaker_state;

typedef enum {
    VG_OUTCOME_SUCCESS = 0,
    VG_OUTCOME_FAILURE = 1,
    VG_OUTCOME_TIMEOUT = 2, /* a failure that is counted apart */
} vg_breaker_outcome;

typedef struct vg_breaker_settings {
    uint32_t failure_threshold;    /* consecutive failures that open a closed breaker */
    double failure_rate_threshold; /* (0,1]: window failure rate that opens it */
    uint32_t window_size;          /* last N recorded calls form the window */
    uint32_t min_calls;            /* the rate applies once the window holds this many */
    uint32_t recovery_timeout_ms;  /* open -> half_open after this long */
    uint32_t half_open_max_calls;  /* probes handed out per half-open period */
    uint32_t success_threshold;    /* successful probes that close it */
    uint32_t call_timeout_ms;      /* an unrecorded probe permit expires as a timeout */
} vg_breaker_settings;

/* Upper bounds that keep one breaker's memory small (the window is a bit
 * set, the permits an array of half_open_max_calls slots). */
#define VG_BREAKER_MAX_WINDOW 100000u
#define VG_BREAKER_MAX_PROBES 10000u

/* The name of the first setting that makes no sense (zero, rate outside
 * (0,1], window_size < min_calls, success_threshold > half_open_max_calls,
 * over a bound), or NULL when they are all fine. */
const char *vg_breaker_settings_invalid(const vg_breaker_settings *s);

const char *vg_breaker_state_name(vg_breaker_state s);
/* "success" | "failure" | "timeout" -> outcome; -1 when unknown. */
int vg_breaker_outcome_parse(const char *s);

typedef struct vg_breaker vg_breaker;

/* NULL when the settings are invalid or memory runs out. name follows the
 * identifier rule (the caller checks). */
vg_breaker *vg_breaker_new(const char *name, const vg_breaker_settings *s);
void vg_breaker_free(vg_breaker *b);
const char *vg_breaker_name(const vg_breaker *b);
const vg_breaker_settings *vg_breaker_get_settings(const vg_breaker *b);

typedef struct vg_breaker_permit {
    bool allowed;
    vg_breaker_state state;  /* the state the decision was made in */
    uint64_t id;             /* a half-open probe's permit; 0 when none is needed */
    uint64_t retry_after_ms; /* denied while open: time until the first probe */
} vg_breaker_permit;

/* May the caller call the provider now? Returns p->allowed. */
bool vg_breaker_acquire(vg_breaker *b, vg_breaker_permit *p);

/* Report a call's outcome. permit_id is the id acquire returned (0 when
 * it returned none). In half_open only a live probe permit counts: any
 * other record returns VG_EINVAL and changes nothing. Records arriving
 * while open (calls begun before it opened) are counted in the totals
 * but change nothing. *state (may be NULL) gets the state afterwards. */
int vg_breaker_record(vg_breaker *b, vg_breaker_outcome o, uint64_t latency_us,
                      uint64_t permit_id, vg_breaker_state *state);

/* Back to closed with an empty window; outstanding permits are dropped. */
void vg_breaker_reset(vg_breaker *b);

typedef struct vg_breaker_snapshot {
    vg_breaker_state state;
    bool available;               /* would acquire allow a call right now? */
    uint64_t opened_at_ms;        /* epoch ms; 0 when closed */
    uint64_t next_probe_at_ms;    /* epoch ms while open; 0 otherwise */
    uint32_t consecutive_failures;
    uint32_t window_calls, window_failures;
    double failure_rate;          /* window_failures / window_calls, 0 when empty */
    uint32_t probes_issued, probes_in_flight, probe_successes;
    uint64_t permitted, rejected;  /* acquire decisions */
    uint64_t successes, failures, timeouts; /* recorded outcomes */
    uint64_t to_open, to_half_open, to_closed; /* transitions by target */
    uint64_t latency_count, latency_sum_us;
} vg_breaker_snapshot;

/* Current figures. Applies due transitions first (open -> half_open once
 * the recovery timeout passed, expired probe permits), so what it shows
 * is what acquire would act on. */
void vg_breaker_snapshot_get(vg_breaker *b, vg_breaker_snapshot *out);
/* The state after due transitions; cheap when closed (no lock). */
vg_breaker_state vg_breaker_state_now(vg_breaker *b);

/* ---- the registry: one breaker per provider name ---- */

typedef struct vg_breakers vg_breakers;

/* defaults: the settings of breakers created on demand; max_created: how
 * many of those may exist (configured ones do not count). */
vg_breakers *vg_breakers_new(const vg_breaker_settings *defaults, uint32_t max_created);
void vg_breakers_free(vg_breakers *reg);

/* A configured provider's breaker, at start-up. VG_EINVAL on bad name or
 * settings, VG_ENOMEM. Adding an existing name replaces nothing (VG_EINVAL). */
int vg_breakers_add(vg_breakers *reg, const char *name, const vg_breaker_settings *s);

/* The breaker for name. With create, an unknown valid name gets one with
 * the default settings. Returns VG_OK, VG_NOTFOUND (no create), VG_EINVAL
 * (bad name), VG_ETOOBIG (max_created reached; nothing created) or
 * VG_ENOMEM. Lookups take no lock; breakers live until vg_breakers_free. */
int vg_breakers_get(vg_breakers *reg, const char *name, bool create, vg_breaker **out);
bool vg_breakers_is_configured(const vg_breakers *reg, const vg_breaker *b);

size_t vg_breakers_count(const vg_breakers *reg);
/* The i-th breaker in creation order (configured first), i < count. */
vg_breaker *vg_breakers_at(const vg_breakers *reg, size_t i);
/* Reset every breaker; returns how many there are. */
size_t vg_breakers_reset_all(vg_breakers *reg);
uint32_t vg_breakers_max_created(const vg_breakers *reg);

/* Register the breakers' series in the metrics registry (/metrics per
 * provider, /stats "breakers"), and those of breakers created later. */
void vg_breakers_register_metrics(vg_breakers *reg);

#endif
