/* The rate-limiter seam behind the Gating API (SPEC §5 "rate limits"):
 * handlers call vg_limiter_check and never know whether the state lives
 * in this process (embedded default) or in Redis (redis_url set), where
 * every instance pointed at one Redis shares one limit.
 *
 * Algorithms:
 * - sliding_log: exact sliding window. A check of cost c at time t is
 *   allowed when the costs logged in (t - window, t] plus c are at most
 *   limit; an allowed check logs c entries at t.
 * - gcra: generic cell rate algorithm, one timestamp per key (the
 *   theoretical arrival time, TAT), emission interval T = window / limit,
 *   burst = limit. Allowed when max(TAT, t) + c*T - window <= t.
 *
 * Results, both algorithms: remaining = unit-cost checks that would be
 * allowed right after this one; reset_ms = until the key is back to its
 * full limit; retry_after_ms = 0 when allowed, else until a check of the
 * same cost would be. A peek computes the same without consuming. */
#ifndef VOXGATE_LIMITER_H
#define VOXGATE_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

typedef enum { VG_RL_SLIDING_LOG = 0, VG_RL_GCRA = 1 } vg_rl_algo;

/* Bounds the handlers validate before calling (400 beyond them). */
#define VG_RL_KEY_MAX 256
#define VG_RL_LIMIT_MAX 1000000u
#define VG_RL_WINDOW_MAX_MS (31ull * 24 * 3600 * 1000) /* 31 days */

typedef struct vg_rl_req {
    const char *key;        /* 1..VG_RL_KEY_MAX bytes, no control characters */
    size_t klen;
    uint64_t limit;         /* 1..VG_RL_LIMIT_MAX */
    uint64_t window_ms;     /* 1..VG_RL_WINDOW_MAX_MS */
    uint64_t cost;          /* 1..limit (0 only with peek) */
    vg_rl_algo algo;
    bool peek;
    const char *ns;         /* a policy name (own state per policy), or NULL: ad hoc */
} vg_rl_req;

typedef struct vg_rl_result {
    bool allowed;
    uint64_t limit, remaining, reset_ms, retry_after_ms;
} vg_rl_result;

typedef struct vg_limiter vg_limiter;

/* The result of vg_limiter_check_async: rc and res as for check. Runs
 * on the backend's own thread. */
typedef void (*vg_rl_cb)(void *ud, int rc, const vg_rl_result *res);

typedef struct vg_limiter_ops {
    const char *name;       /* "memory" | "redis" */
    int (*check)(vg_limiter *l, const vg_rl_req *rq, vg_rl_result *res);
    int (*clear)(vg_limiter *l, const char *ns, const char *key, size_t klen);
    void (*close)(vg_limiter *l);
    /* Optional (NULL: only the blocking check). */
    int (*check_async)(vg_limiter *l, const vg_rl_req *rq, vg_rl_cb cb, void *ud);
} vg_limiter_ops;

struct vg_limiter {
    const vg_limiter_ops *ops;
};

/* check: VG_OK (res filled), VG_EINVAL (outside the bounds above),
 *        VG_EUNAVAIL (the store is down: the caller applies fail_mode).
 * clear: VG_OK (state removed), VG_NOTFOUND, or an error. */
static inline int vg_limiter_check(vg_limiter *l, const vg_rl_req *rq, vg_rl_result *res)
{ return l->ops->check(l, rq, res); }
static inline int vg_limiter_clear(vg_limiter *l, const char *ns, const char *k, size_t kl)
{ return l->ops->clear(l, ns, k, kl); }
static inline void vg_limiter_close(vg_limiter *l) { if (l) l->ops->close(l); }
/* A check that does not block the caller (the HTTP hot path), when
 * vg_limiter_has_async. VG_OK: cb runs exactly once, later, on another
 * thread (rq need not outlive the call); an error (VG_EINVAL, or the
 * loop cannot take it): cb never runs. */
static inline bool vg_limiter_has_async(const vg_limiter *l) { return l->ops->check_async != NULL; }
static inline int vg_limiter_check_async(vg_limiter *l, const vg_rl_req *rq, vg_rl_cb cb, void *ud)
{ return l->ops->check_async ? l->ops->check_async(l, rq, cb, ud) : VG_EINVAL; }

/* True when rq is inside the bounds above. */
bool vg_rl_req_valid(const vg_rl_req *rq);
/* "sliding_log" | "gcra" -> algo; false when unknown. */
bool vg_rl_algo_parse(const char *s, vg_rl_algo *out);
const char *vg_rl_algo_name(vg_rl_algo a);

/* ---- the arithmetic, shared by the in-process backend and its tests ---- */

/* One sliding-log record: n units logged at t (same-ms checks merge). */
typedef struct vg_rl_entry {
    uint64_t t;
    uint64_t n;
} vg_rl_entry;

/* Sliding log: e[0..n) in ascending t, all inside the window ending at
 * now (older ones already dropped). Only computes; the caller logs. */
void vg_rl_sliding_eval(const vg_rl_entry *e, size_t n, uint64_t now_ms, const vg_rl_req *rq,
                        vg_rl_result *res);
/* GCRA: *tat_ms is the stored TAT (0 = none), updated when a non-peek
 * check is allowed. Times are in ms as doubles (T may be fractional). */
void vg_rl_gcra_eval(double *tat_ms, double now_ms, const vg_rl_req *rq, vg_rl_result *res);

/* In-process backend: at most max_keys keys (expired ones are reclaimed
 * first; past it a new key is refused with VG_ETOOBIG). Uses vg_clock_ms. */
int vg_limiter_mem_new(size_t max_keys, vg_limiter **out);

/* Redis backend: each check is one EVALSHA (the script is loaded again on
 * NOSCRIPT) on one key, {prefix}:rl:{sl|gcra}:{key} (ad hoc) or
 * {prefix}:rlp:{policy}:{sl|gcra}:{key}, so it works on Redis Cluster too. Time comes from Redis (TIME), so instances agree. */
struct vg_redis;
int vg_limiter_redis_new(struct vg_redis *r, const char *prefix, vg_limiter **out);

#endif
