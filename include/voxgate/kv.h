/* The key-value seam behind the L2 cache tier. Handlers call vg_kv_*
 * and never know whether LMDB (embedded) or Redis (production) answers.
 * Every value carries an absolute expiry; expired values are misses. */
#ifndef VOXGATE_KV_H
#define VOXGATE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

typedef struct vg_kv vg_kv;

typedef enum { VG_KV_GET = 0, VG_KV_SET = 1, VG_KV_DEL = 2 } vg_kv_op_type;

/* One operation of a batch. Inputs first, results after. */
typedef struct vg_kv_op {
    vg_kv_op_type type;
    const char *key;
    size_t klen;
    const void *val;      /* SET */
    size_t vlen;          /* SET */
    uint64_t ttl_ms;      /* SET; 0 = no expiry */
    int rc;               /* VG_OK, VG_NOTFOUND or an error */
    vg_buf out;           /* GET result; caller frees with vg_buf_free */
    uint64_t expires_at_ms; /* GET result; 0 = never */
} vg_kv_op;

/* Called for each live key under a prefix. Return non-zero to stop. */
typedef int (*vg_kv_scan_cb)(void *ud, const char *key, size_t klen, const void *val,
                             size_t vlen);

typedef struct vg_kv_stats {
    uint64_t entries;      /* live + not yet swept */
    uint64_t bytes;        /* logical bytes: keys + values */
    uint64_t max_bytes;
    uint64_t evictions;    /* removed to make room */
    uint64_t expired;      /* removed because their TTL passed */
    uint64_t errors;
} vg_kv_stats;

/* The result of vg_kv_get_async: rc as for get; on VG_OK val holds the
 * value (the callee keeps ownership: copy or take it with a swap before
 * returning) and exp its expiry. Runs on the backend's own thread. */
typedef void (*vg_kv_get_cb)(void *ud, int rc, vg_buf *val, uint64_t expires_at_ms);

typedef struct vg_kv_ops {
    const char *name;
    int (*get)(vg_kv *kv, const char *key, size_t klen, vg_buf *out, uint64_t *expires_at_ms);
    int (*set)(vg_kv *kv, const char *key, size_t klen, const void *val, size_t vlen,
               uint64_t ttl_ms);
    int (*del)(vg_kv *kv, const char *key, size_t klen);
    int (*batch)(vg_kv *kv, vg_kv_op *ops, size_t n);
    int (*scan)(vg_kv *kv, const char *prefix, size_t plen, vg_kv_scan_cb cb, void *ud);
    int (*ping)(vg_kv *kv);
    int (*sweep)(vg_kv *kv, uint64_t *removed);
    void (*stats)(vg_kv *kv, vg_kv_stats *out);
    void (*close)(vg_kv *kv);
    /* Optional (NULL: the backend has only the blocking get). */
    int (*get_async)(vg_kv *kv, const char *key, size_t klen, vg_kv_get_cb cb, void *ud);
} vg_kv_ops;

struct vg_kv {
    const vg_kv_ops *ops;
};

/* get: VG_OK (out filled), VG_NOTFOUND (missing or expired), or error.
 * set: VG_OK or error (VG_ETOOBIG when one value cannot fit at all).
 * del: VG_OK (removed), VG_NOTFOUND, or error.
 * batch: VG_OK when every op was attempted; see each op's rc.
 * scan: visits live keys with the prefix in bounded steps; the callback
 *       may not call back into the same kv. */
static inline int vg_kv_get(vg_kv *kv, const char *k, size_t kl, vg_buf *out, uint64_t *exp)
{ return kv->ops->get(kv, k, kl, out, exp); }
static inline int vg_kv_set(vg_kv *kv, const char *k, size_t kl, const void *v, size_t vl,
                            uint64_t ttl_ms)
{ return kv->ops->set(kv, k, kl, v, vl, ttl_ms); }
static inline int vg_kv_del(vg_kv *kv, const char *k, size_t kl)
{ return kv->ops->del(kv, k, kl); }
static inline int vg_kv_batch(vg_kv *kv, vg_kv_op *ops, size_t n)
{ return kv->ops->batch(kv, ops, n); }
static inline int vg_kv_scan(vg_kv *kv, const char *p, size_t pl, vg_kv_scan_cb cb, void *ud)
{ return kv->ops->scan(kv, p, pl, cb, ud); }
static inline int vg_kv_ping(vg_kv *kv) { return kv->ops->ping(kv); }
static inline int vg_kv_sweep(vg_kv *kv, uint64_t *removed) { return kv->ops->sweep(kv, removed); }
static inline void vg_kv_stats_get(vg_kv *kv, vg_kv_stats *o) { kv->ops->stats(kv, o); }
static inline void vg_kv_close(vg_kv *kv) { if (kv) kv->ops->close(kv); }
/* A get that does not block the caller (the HTTP hot path), when
 * vg_kv_has_async. VG_OK: cb runs exactly once, later, on another
 * thread; an error: cb never runs (the caller falls back to vg_kv_get). */
static inline bool vg_kv_has_async(const vg_kv *kv) { return kv->ops->get_async != NULL; }
static inline int vg_kv_get_async(vg_kv *kv, const char *k, size_t kl, vg_kv_get_cb cb, void *ud)
{ return kv->ops->get_async ? kv->ops->get_async(kv, k, kl, cb, ud) : VG_EINVAL; }

/* Embedded backend: LMDB environment in `dir` (created if missing).
 * max_bytes bounds the logical bytes stored; when a write would pass it,
 * the entries expiring soonest (oldest first among equals) are evicted.
 * sync: "full" (fsync every commit), "meta" (MDB_NOMETASYNC, default),
 * "none" (MDB_NOSYNC; flushed by sweep). */
typedef struct vg_kv_lmdb_opts {
    const char *dir;
    uint64_t max_bytes;
    const char *sync;
} vg_kv_lmdb_opts;
int vg_kv_lmdb_open(const vg_kv_lmdb_opts *opts, vg_kv **out, char *err, size_t errlen);

/* Production backend: Redis through a client opened with vg_redis_open
 * (redis.h), which the caller keeps open until after vg_kv_close. See
 * src/cache/kv_redis.c for what stats mean there. */
struct vg_redis;
int vg_kv_redis_open(struct vg_redis *r, vg_kv **out);

#endif
