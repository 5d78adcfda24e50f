/* The embedded L2 tier: the vg_kv seam on top of one LMDB environment
 * under data_dir. Survives restart and kill -9 (LMDB commits are atomic
 * in every sync mode; the modes only trade durability against a power
 * cut), and is bounded by max_bytes of logical data (keys + values).
 *
 * Layout, three named databases in one environment:
 *
 *   data  key -> u64le expires_at_ms (0 = never) | u64le seq | value
 *   exp   u64be expiry (0 stored as UINT64_MAX) | u64be seq -> key
 *   meta  "acct" -> u64le bytes | u64le entries | u64le next seq
 *
 * "exp" orders every entry soonest-expiring first, oldest first among
 * equals, so both the sweeper and eviction just pop its first record:
 * O(log n) each. The data header carries (expiry, seq), which is exactly
 * the exp key, so replacing or deleting a key finds its index record
 * without a scan. Keeping the key in the exp *value* rather than its key
 * leaves the full LMDB key size (511) for cache keys. "meta" is written
 * in the same transaction as every change, so the accounting is exact
 * after a crash.
 *
 * Semantics beyond kv.h:
 * - keys are 1..511 bytes (LMDB's key limit); others get VG_EINVAL.
 *   VG_ETOOBIG when key + value alone exceed max_bytes.
 * - batch runs in order. A batch of only GETs uses one read transaction;
 *   a batch with any SET or DEL runs entirely in one write transaction,
 *   so a GET after a SET of the same key sees it (as a Redis pipeline).
 * - scan reads at most 256 records per read transaction, copies
 *   the live ones out and calls the callback outside any transaction, so
 *   the callback may call vg_kv_del/vg_kv_set on this kv (portable code
 *   should not rely on that). It is not a snapshot: each key is visited
 *   at most once, in key order; keys written meanwhile may be missed.
 * - stats.evictions/expired/errors count since open; entries and bytes
 *   are the persistent totals. An already expired entry removed to make
 *   room counts as expired, not as an eviction.
 * - the map is 4 * max_bytes + 64 MiB (a sparse file). Besides the
 *   logical bound, a write evicts while LMDB's trees would hold more
 *   than 3/4 of the map's pages (many tiny entries), since a map that
 *   fills up completely cannot even delete. Should a commit still hit
 *   MDB_MAP_FULL (a large value in a fragmented map), entries are evicted
 *   in growing rounds and the write retried, so a write that can fit by
 *   evicting does not fail. Both kinds count as evictions. */
#include "voxgate/kv.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HDR_LEN 16          /* expires_at + seq in front of every value */
#define EXPKEY_LEN 16
#define ACCT_LEN 24
#define KEY_MAX 511         /* LMDB's default compile-time key limit */
#define RTXN_POOL 64        /* parked read txns; each keeps a reader slot */
#define MAX_READERS 512
#define SCAN_CHUNK 256      /* records examined per scan read txn */
#define SCAN_CHUNK_BYTES (4u << 20)
#define SWEEP_CHUNK 1024    /* expired entries removed per write txn */
#define EVICT_CHUNK 256     /* entries evicted per txn when the map is full */
#define ROOM_FLOOR (64u << 10)
#define MAP_SLACK ((uint64_t)64 << 20)

/* Test seam: a non-zero value replaces the computed map size, so the
 * MDB_MAP_FULL path can be exercised with a tiny map. */
extern uint64_t vg_kv_lmdb_test_map_bytes;
uint64_t vg_kv_lmdb_test_map_bytes = 0;

typedef struct lmdb_kv {
    vg_kv base;
    MDB_env *env;
    MDB_dbi data, exp, meta;
    uint64_t max_bytes;
    uint64_t psize, page_budget; /* pages the trees may hold: 3/4 of the map */
    bool nosync;
    pthread_mutex_t pool_mu;
    MDB_txn *pool[RTXN_POOL];
    size_t npool;
    _Atomic uint64_t evictions, expired, errors;
} lmdb_kv;

typedef struct acct {
    uint64_t bytes, entries, seq;
} acct;

/* One write transaction with its accounting and pending counters; the
 * counters reach the kv only if the commit succeeds. */
typedef struct wtx {
    lmdb_kv *s;
    MDB_txn *txn;
    acct a;
    bool dirty;
    uint64_t now, evicted, expired;
} wtx;

/* ---- encoding ---------------------------------------------------------- */

static void put_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_be(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get_be(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Never-expiring entries sort after every real expiry. */
static void exp_key(unsigned char out[EXPKEY_LEN], uint64_t expires_at, uint64_t seq)
{
    put_be(out, expires_at ? expires_at : UINT64_MAX);
    put_be(out + 8, seq);
}

static bool is_expired(uint64_t expires_at, uint64_t now)
{
    return expires_at != 0 && expires_at <= now;
}

static bool key_ok(const char *key, size_t klen)
{
    return key && klen > 0 && klen <= KEY_MAX;
}

static uint64_t expiry_for(uint64_t now, uint64_t ttl_ms)
{
    if (ttl_ms == 0)
        return 0;
    return ttl_ms > UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + ttl_ms;
}

/* ---- errors ------------------------------------------------------------ */

static int fail(lmdb_kv *s, int mdb_rc)
{
    atomic_fetch_add(&s->errors, 1);
    return mdb_rc == ENOMEM ? VG_ENOMEM : VG_ERR;
}

/* ---- read transactions --------------------------------------------------- */

/* Parked read txns are renewed instead of begun: renew skips the reader
 * slot search and the allocation. MDB_NOTLS lets any thread take any. */
static int rtxn_get(lmdb_kv *s, MDB_txn **out)
{
    MDB_txn *t = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool)
        t = s->pool[--s->npool];
    pthread_mutex_unlock(&s->pool_mu);
    if (t) {
        if (mdb_txn_renew(t) == MDB_SUCCESS) {
            *out = t;
            return MDB_SUCCESS;
        }
        mdb_txn_abort(t);
    }
    return mdb_txn_begin(s->env, NULL, MDB_RDONLY, out);
}

static void rtxn_put(lmdb_kv *s, MDB_txn *t)
{
    mdb_txn_reset(t);
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool < RTXN_POOL) {
        s->pool[s->npool++] = t;
        t = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (t)
        mdb_txn_abort(t);
}

/* Copy a live, well-formed record into out. Short records are corrupt:
 * a miss, never a crash. */
static int copy_live(const MDB_val *v, uint64_t now, vg_buf *out, uint64_t *expires_at)
{
    if (v->mv_size < HDR_LEN)
        return VG_NOTFOUND;
    const unsigned char *p = v->mv_data;
    uint64_t exp = get_le(p);
    if (is_expired(exp, now))
        return VG_NOTFOUND;
    vg_buf_reset(out);
    if (vg_buf_append(out, p + HDR_LEN, v->mv_size - HDR_LEN) != VG_OK)
        return VG_ENOMEM;
    if (expires_at)
        *expires_at = exp;
    return VG_OK;
}

static int get_in(lmdb_kv *s, MDB_txn *txn, const char *key, size_t klen, vg_buf *out,
                  uint64_t *expires_at)
{
    if (!key_ok(key, klen) || !out)
        return VG_EINVAL;
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(txn, s->data, &k, &v);
    if (rc == MDB_NOTFOUND)
        return VG_NOTFOUND;
    if (rc != MDB_SUCCESS)
        return fail(s, rc);
    rc = copy_live(&v, vg_clock_ms(), out, expires_at);
    return rc == VG_ENOMEM ? fail(s, ENOMEM) : rc;
}

/* ---- write transactions -------------------------------------------------- */

/* MDB_NOTFOUND (zeros loaded) when the record is missing. */
static int acct_load(wtx *w)
{
    MDB_val k = {4, "acct"}, v;
    memset(&w->a, 0, sizeof w->a);
    int rc = mdb_get(w->txn, w->s->meta, &k, &v);
    if (rc != MDB_SUCCESS)
        return rc;
    if (v.mv_size != ACCT_LEN)
        return MDB_CORRUPTED;
    const unsigned char *p = v.mv_data;
    w->a.bytes = get_le(p);
    w->a.entries = get_le(p + 8);
    w->a.seq = get_le(p + 16);
    return MDB_SUCCESS;
}

static int acct_save(wtx *w)
{
    unsigned char buf[ACCT_LEN];
    put_le(buf, w->a.bytes);
    put_le(buf + 8, w->a.entries);
    put_le(buf + 16, w->a.seq);
    MDB_val k = {4, "acct"}, v = {ACCT_LEN, buf};
    return mdb_put(w->txn, w->s->meta, &k, &v, 0);
}

static int wtx_begin(lmdb_kv *s, wtx *w)
{
    memset(w, 0, sizeof *w);
    w->s = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc != MDB_SUCCESS)
        return rc;
    w->now = vg_clock_ms();
    rc = acct_load(w);
    if (rc == MDB_NOTFOUND)
        rc = MDB_SUCCESS;
    if (rc != MDB_SUCCESS)
        mdb_txn_abort(w->txn);
    return rc;
}

static int wtx_commit(wtx *w)
{
    int rc = w->dirty ? acct_save(w) : MDB_SUCCESS;
    if (rc != MDB_SUCCESS) {
        mdb_txn_abort(w->txn);
        return rc;
    }
    rc = mdb_txn_commit(w->txn);
    if (rc == MDB_SUCCESS) {
        atomic_fetch_add(&w->s->evictions, w->evicted);
        atomic_fetch_add(&w->s->expired, w->expired);
    }
    return rc;
}

/* Commit when the work succeeded, otherwise abort; the work's error wins. */
static int wtx_finish(wtx *w, int rc)
{
    if (rc == MDB_SUCCESS)
        return wtx_commit(w);
    mdb_txn_abort(w->txn);
    return rc;
}

/* Remove a record whose data value v was just read for key k. Both are
 * copied first: deleting moves bytes within the pages they point into. */
static int rec_remove(wtx *w, const char *key, size_t klen, const MDB_val *v)
{
    uint64_t size = klen;
    unsigned char ek[EXPKEY_LEN];
    bool indexed = v->mv_size >= HDR_LEN;
    if (indexed) {
        const unsigned char *p = v->mv_data;
        exp_key(ek, get_le(p), get_le(p + 8));
        size += v->mv_size - HDR_LEN;
    }
    MDB_val k = {klen, (void *)key};
    int rc = mdb_del(w->txn, w->s->data, &k, NULL);
    if (rc == MDB_SUCCESS && indexed) {
        MDB_val ik = {EXPKEY_LEN, ek};
        rc = mdb_del(w->txn, w->s->exp, &ik, NULL);
        if (rc == MDB_NOTFOUND)
            rc = MDB_SUCCESS;
    }
    if (rc != MDB_SUCCESS)
        return rc;
    w->a.bytes = w->a.bytes > size ? w->a.bytes - size : 0;
    w->a.entries -= w->a.entries > 0;
    w->dirty = true;
    return MDB_SUCCESS;
}

/* MDB_NOTFOUND when the key is absent. */
static int entry_del(wtx *w, const char *key, size_t klen)
{
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(w->txn, w->s->data, &k, &v);
    return rc == MDB_SUCCESS ? rec_remove(w, key, klen, &v) : rc;
}

/* The first exp record, copied out because deletes move page bytes. */
typedef struct exp_rec {
    unsigned char ek[EXPKEY_LEN];
    char key[KEY_MAX];
    size_t klen;
    uint64_t expires_at;
} exp_rec;

/* MDB_NOTFOUND when the index is empty. */
static int exp_first(wtx *w, exp_rec *r)
{
    MDB_cursor *c;
    MDB_val ik, iv;
    int rc = mdb_cursor_open(w->txn, w->s->exp, &c);
    if (rc != MDB_SUCCESS)
        return rc;
    while ((rc = mdb_cursor_get(c, &ik, &iv, MDB_FIRST)) == MDB_SUCCESS) {
        if (ik.mv_size == EXPKEY_LEN && iv.mv_size > 0 && iv.mv_size <= KEY_MAX)
            break;
        if ((rc = mdb_cursor_del(c, 0)) != MDB_SUCCESS) /* not ours: drop it */
            break;
    }
    if (rc == MDB_SUCCESS) {
        memcpy(r->ek, ik.mv_data, EXPKEY_LEN);
        memcpy(r->key, iv.mv_data, iv.mv_size);
        r->klen = iv.mv_size;
        r->expires_at = get_be(r->ek);
        r->expires_at = r->expires_at == UINT64_MAX ? 0 : r->expires_at;
    }
    mdb_cursor_close(c);
    return rc;
}

/* Whether data value v is the version the index record ek points at. */
static bool rec_matches(const MDB_val *v, const unsigned char ek[EXPKEY_LEN])
{
    unsigned char want[EXPKEY_LEN];
    if (v->mv_size < HDR_LEN)
        return false;
    const unsigned char *p = v->mv_data;
    exp_key(want, get_le(p), get_le(p + 8));
    return memcmp(want, ek, EXPKEY_LEN) == 0;
}

/* Remove the entry expiring soonest (oldest among equals). With
 * only_expired, leave a live one alone. *popped is 0 when nothing was
 * removed. */
static int pop_first(wtx *w, bool only_expired, int *popped)
{
    exp_rec r;
    *popped = 0;
    int rc = exp_first(w, &r);
    if (rc != MDB_SUCCESS)
        return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
    bool dead = is_expired(r.expires_at, w->now);
    if (only_expired && !dead)
        return MDB_SUCCESS;

    MDB_val k = {r.klen, r.key}, v;
    rc = mdb_get(w->txn, w->s->data, &k, &v);
    if (rc == MDB_SUCCESS && rec_matches(&v, r.ek)) {
        rc = rec_remove(w, r.key, r.klen, &v);
        if (rc == MDB_SUCCESS && dead)
            w->expired++;
        else if (rc == MDB_SUCCESS)
            w->evicted++;
    } else if (rc == MDB_SUCCESS || rc == MDB_NOTFOUND) {
        /* A stale index record (no data, or a newer version's): drop it. */
        MDB_val ik = {EXPKEY_LEN, r.ek};
        rc = mdb_del(w->txn, w->s->exp, &ik, NULL);
    }
    *popped = rc == MDB_SUCCESS;
    return rc;
}

/* Evict until `need` more logical bytes fit under max_bytes. */
static int evict_for(wtx *w, uint64_t need)
{
    while (w->a.bytes + need > w->s->max_bytes) {
        int popped, rc = pop_first(w, false, &popped);
        if (rc != MDB_SUCCESS)
            return rc;
        if (!popped)
            break; /* nothing indexed is left; the bound cannot be tighter */
    }
    return MDB_SUCCESS;
}

/* Pages held by every tree, LMDB's own two included, as of this txn. */
static int pages_used(wtx *w, uint64_t *out)
{
    MDB_dbi dbis[] = {0, 1, w->s->data, w->s->exp, w->s->meta};
    uint64_t n = 0;
    for (size_t i = 0; i < VG_ARRAY_LEN(dbis); i++) {
        MDB_stat st;
        int rc = mdb_stat(w->txn, dbis[i], &st);
        if (rc != MDB_SUCCESS)
            return rc;
        n += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    *out = n;
    return MDB_SUCCESS;
}

/* Keep a quarter of the map free for copy-on-write and the free list.
 * A map that fills up completely cannot even delete, so this evicts
 * ahead of MDB_MAP_FULL when many tiny entries outgrow the map before
 * max_bytes is reached. Popping oldest first empties whole exp pages. */
static int evict_for_pages(wtx *w, uint64_t need_bytes)
{
    uint64_t need = 1 + need_bytes / w->s->psize;
    for (;;) {
        uint64_t used;
        int popped, rc = pages_used(w, &used);
        if (rc != MDB_SUCCESS || used + need <= w->s->page_budget)
            return rc;
        rc = pop_first(w, false, &popped);
        if (rc != MDB_SUCCESS || !popped)
            return rc;
    }
}

static int set_in(wtx *w, const char *key, size_t klen, const void *val, size_t vlen,
                  uint64_t ttl_ms)
{
    int rc = entry_del(w, key, klen);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return rc;
    rc = evict_for(w, (uint64_t)klen + vlen);
    if (rc == MDB_SUCCESS)
        rc = evict_for_pages(w, (uint64_t)klen + vlen + HDR_LEN + EXPKEY_LEN);
    if (rc != MDB_SUCCESS)
        return rc;

    uint64_t seq = ++w->a.seq, exp = expiry_for(w->now, ttl_ms);
    MDB_val k = {klen, (void *)key}, v = {HDR_LEN + vlen, NULL};
    rc = mdb_put(w->txn, w->s->data, &k, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS)
        return rc;
    unsigned char *p = v.mv_data;
    put_le(p, exp);
    put_le(p + 8, seq);
    if (vlen)
        memcpy(p + HDR_LEN, val, vlen);

    unsigned char ek[EXPKEY_LEN];
    exp_key(ek, exp, seq);
    MDB_val ik = {EXPKEY_LEN, ek}, iv = {klen, (void *)key};
    rc = mdb_put(w->txn, w->s->exp, &ik, &iv, 0);
    if (rc != MDB_SUCCESS)
        return rc;
    w->a.bytes += (uint64_t)klen + vlen;
    w->a.entries++;
    w->dirty = true;
    return MDB_SUCCESS;
}

/* Checks that need no transaction; VG_OK when the set may proceed. */
static int set_check(const lmdb_kv *s, const char *key, size_t klen, const void *val,
                     size_t vlen)
{
    if (!key_ok(key, klen) || (vlen && !val))
        return VG_EINVAL;
    if (vlen > UINT32_MAX - HDR_LEN || (uint64_t)klen + vlen > s->max_bytes)
        return VG_ETOOBIG;
    return VG_OK;
}

/* The map is full although the logical bound holds: free at least
 * `want` logical bytes in small transactions, smaller still if even
 * those do not fit. MDB_NOTFOUND when there is nothing left to evict. */
static int make_room(lmdb_kv *s, uint64_t want)
{
    uint64_t freed = 0;
    size_t chunk = EVICT_CHUNK;
    bool any = false;
    while (freed < want) {
        wtx w;
        int rc = wtx_begin(s, &w), popped = 1;
        if (rc != MDB_SUCCESS)
            return rc;
        uint64_t before = w.a.bytes;
        for (size_t i = 0; i < chunk && popped && rc == MDB_SUCCESS; i++)
            rc = pop_first(&w, false, &popped);
        uint64_t got = before - w.a.bytes;
        bool empty = !popped;
        rc = wtx_finish(&w, rc);
        if (rc == MDB_MAP_FULL && chunk > 1) {
            chunk = 1;
            continue;
        }
        if (rc != MDB_SUCCESS)
            return rc;
        freed += got;
        any = any || got > 0;
        if (empty)
            break;
    }
    return any ? MDB_SUCCESS : MDB_NOTFOUND;
}

/* An otherwise empty commit. LMDB reuses a page only once a later
 * commit has moved past the txn that freed it. */
static int touch(lmdb_kv *s)
{
    wtx w;
    int rc = wtx_begin(s, &w);
    if (rc != MDB_SUCCESS)
        return rc;
    w.dirty = true;
    return wtx_commit(&w);
}

/* Run fn in a write transaction; on MDB_MAP_FULL evict a growing amount
 * and run it again from scratch (fn must be idempotent per attempt).
 * Once nothing is left to evict, a couple of commits release the pages
 * the last evictions freed before giving up. */
typedef int (*wtx_fn)(wtx *w, void *arg);

static int write_with_room(lmdb_kv *s, wtx_fn fn, void *arg)
{
    uint64_t want = ROOM_FLOOR;
    int idle = 0;
    for (;;) {
        wtx w;
        int rc = wtx_begin(s, &w);
        if (rc != MDB_SUCCESS)
            return rc;
        rc = fn(&w, arg);
        rc = wtx_finish(&w, rc);
        if (rc != MDB_MAP_FULL)
            return rc;
        rc = make_room(s, want);
        if (rc == MDB_NOTFOUND)
            rc = idle++ < 2 ? touch(s) : MDB_MAP_FULL;
        if (rc != MDB_SUCCESS)
            return rc;
        want = want > UINT64_MAX / 2 ? want : want * 2;
    }
}

/* ---- ops ----------------------------------------------------------------- */

static int lk_get(vg_kv *kv, const char *key, size_t klen, vg_buf *out, uint64_t *expires_at)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    MDB_txn *t;
    int rc = rtxn_get(s, &t);
    if (rc != MDB_SUCCESS)
        return fail(s, rc);
    int r = get_in(s, t, key, klen, out, expires_at);
    rtxn_put(s, t);
    return r;
}

typedef struct set_args {
    const char *key;
    size_t klen;
    const void *val;
    size_t vlen;
    uint64_t ttl_ms;
} set_args;

static int set_fn(wtx *w, void *arg)
{
    set_args *a = arg;
    return set_in(w, a->key, a->klen, a->val, a->vlen, a->ttl_ms);
}

static int lk_set(vg_kv *kv, const char *key, size_t klen, const void *val, size_t vlen,
                  uint64_t ttl_ms)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    int rc = set_check(s, key, klen, val, vlen);
    if (rc != VG_OK)
        return rc;
    set_args a = {key, klen, val, vlen, ttl_ms};
    rc = write_with_room(s, set_fn, &a);
    return rc == MDB_SUCCESS ? VG_OK : fail(s, rc);
}

typedef struct del_args {
    const char *key;
    size_t klen;
    bool found;
} del_args;

static int del_fn(wtx *w, void *arg)
{
    del_args *a = arg;
    int rc = entry_del(w, a->key, a->klen);
    a->found = rc == MDB_SUCCESS;
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

static int lk_del(vg_kv *kv, const char *key, size_t klen)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    if (!key_ok(key, klen))
        return VG_EINVAL;
    del_args a = {key, klen, false};
    int rc = write_with_room(s, del_fn, &a);
    if (rc != MDB_SUCCESS)
        return fail(s, rc);
    return a.found ? VG_OK : VG_NOTFOUND;
}

typedef struct batch_args {
    vg_kv_op *ops;
    size_t n;
} batch_args;

static int batch_op(wtx *w, vg_kv_op *op)
{
    int rc;
    switch (op->type) {
    case VG_KV_GET:
        op->rc = get_in(w->s, w->txn, op->key, op->klen, &op->out, &op->expires_at_ms);
        return MDB_SUCCESS;
    case VG_KV_SET:
        op->rc = set_check(w->s, op->key, op->klen, op->val, op->vlen);
        if (op->rc != VG_OK)
            return MDB_SUCCESS;
        return set_in(w, op->key, op->klen, op->val, op->vlen, op->ttl_ms);
    case VG_KV_DEL:
        if (!key_ok(op->key, op->klen)) {
            op->rc = VG_EINVAL;
            return MDB_SUCCESS;
        }
        rc = entry_del(w, op->key, op->klen);
        op->rc = rc == MDB_SUCCESS ? VG_OK : VG_NOTFOUND;
        return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
    }
    op->rc = VG_EINVAL;
    return MDB_SUCCESS;
}

static void batch_reset(vg_kv_op *ops, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++) {
        ops[i].rc = rc;
        if (ops[i].type == VG_KV_GET)
            vg_buf_reset(&ops[i].out);
    }
}

static int batch_fn(wtx *w, void *arg)
{
    batch_args *a = arg;
    batch_reset(a->ops, a->n, VG_ERR);
    for (size_t i = 0; i < a->n; i++) {
        int rc = batch_op(w, &a->ops[i]);
        if (rc != MDB_SUCCESS)
            return rc;
    }
    return MDB_SUCCESS;
}

static int batch_reads(lmdb_kv *s, vg_kv_op *ops, size_t n)
{
    MDB_txn *t;
    int rc = rtxn_get(s, &t);
    if (rc != MDB_SUCCESS) {
        batch_reset(ops, n, VG_ERR);
        return fail(s, rc);
    }
    for (size_t i = 0; i < n; i++)
        ops[i].rc = get_in(s, t, ops[i].key, ops[i].klen, &ops[i].out, &ops[i].expires_at_ms);
    rtxn_put(s, t);
    return VG_OK;
}

static int lk_batch(vg_kv *kv, vg_kv_op *ops, size_t n)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    if (n && !ops)
        return VG_EINVAL;
    bool writes = false;
    for (size_t i = 0; i < n; i++)
        writes = writes || ops[i].type != VG_KV_GET;
    if (!writes)
        return batch_reads(s, ops, n);
    batch_args a = {ops, n};
    int rc = write_with_room(s, batch_fn, &a);
    if (rc == MDB_SUCCESS)
        return VG_OK;
    batch_reset(ops, n, VG_ERR); /* nothing was committed */
    return fail(s, rc);
}

/* One scan step: live records copied out of a read txn. Offsets into
 * `bytes`, since appending may move it. */
typedef struct scan_item {
    size_t koff, klen, voff, vlen;
} scan_item;

typedef struct scan_chunk {
    scan_item items[SCAN_CHUNK];
    size_t n;
    vg_buf bytes;
    char last[KEY_MAX]; /* resume after this key */
    size_t lastlen;
    bool done;
} scan_chunk;

static bool has_prefix(const MDB_val *k, const char *prefix, size_t plen)
{
    return k->mv_size >= plen && (plen == 0 || memcmp(k->mv_data, prefix, plen) == 0);
}

static int scan_keep(scan_chunk *ch, const MDB_val *k, const MDB_val *v, uint64_t now)
{
    if (v->mv_size < HDR_LEN || is_expired(get_le(v->mv_data), now))
        return VG_OK;
    scan_item *it = &ch->items[ch->n];
    it->koff = ch->bytes.len;
    it->klen = k->mv_size;
    if (vg_buf_append(&ch->bytes, k->mv_data, k->mv_size) != VG_OK)
        return VG_ENOMEM;
    it->voff = ch->bytes.len;
    it->vlen = v->mv_size - HDR_LEN;
    if (vg_buf_append(&ch->bytes, (unsigned char *)v->mv_data + HDR_LEN, it->vlen) != VG_OK)
        return VG_ENOMEM;
    ch->n++;
    return VG_OK;
}

static int scan_position(MDB_cursor *c, scan_chunk *ch, const char *prefix, size_t plen,
                         MDB_val *k, MDB_val *v)
{
    if (ch->lastlen) {
        *k = (MDB_val){ch->lastlen, ch->last};
        int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && k->mv_size == ch->lastlen &&
            memcmp(k->mv_data, ch->last, ch->lastlen) == 0)
            rc = mdb_cursor_get(c, k, v, MDB_NEXT);
        return rc;
    }
    if (plen == 0)
        return mdb_cursor_get(c, k, v, MDB_FIRST);
    *k = (MDB_val){plen, (void *)prefix};
    return mdb_cursor_get(c, k, v, MDB_SET_RANGE);
}

/* Fill ch with the next step; examining at most SCAN_CHUNK records
 * bounds the read txn even across long runs of expired keys. */
static int scan_fill(lmdb_kv *s, scan_chunk *ch, const char *prefix, size_t plen)
{
    MDB_txn *t;
    MDB_cursor *c;
    MDB_val k, v;
    ch->n = 0;
    vg_buf_reset(&ch->bytes);
    int rc = rtxn_get(s, &t);
    if (rc != MDB_SUCCESS)
        return fail(s, rc);
    rc = mdb_cursor_open(t, s->data, &c);
    if (rc != MDB_SUCCESS) {
        rtxn_put(s, t);
        return fail(s, rc);
    }
    uint64_t now = vg_clock_ms();
    int r = VG_OK;
    rc = scan_position(c, ch, prefix, plen, &k, &v);
    for (size_t seen = 0; r == VG_OK; seen++) {
        if (rc != MDB_SUCCESS || !has_prefix(&k, prefix, plen)) {
            ch->done = true;
            if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
                r = fail(s, rc);
            break;
        }
        if (seen == SCAN_CHUNK || ch->bytes.len >= SCAN_CHUNK_BYTES)
            break;
        r = scan_keep(ch, &k, &v, now);
        memcpy(ch->last, k.mv_data, k.mv_size);
        ch->lastlen = k.mv_size;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    rtxn_put(s, t);
    return r == VG_ENOMEM ? fail(s, ENOMEM) : r;
}

static int lk_scan(vg_kv *kv, const char *prefix, size_t plen, vg_kv_scan_cb cb, void *ud)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    if (!cb || (plen && !prefix))
        return VG_EINVAL;
    if (plen > KEY_MAX)
        return VG_OK; /* no key can carry it */
    scan_chunk *ch = calloc(1, sizeof *ch);
    if (!ch)
        return VG_ENOMEM;
    int rc = VG_OK;
    bool stop = false;
    while (!stop && rc == VG_OK) {
        rc = scan_fill(s, ch, prefix, plen);
        for (size_t i = 0; rc == VG_OK && !stop && i < ch->n; i++) {
            const scan_item *it = &ch->items[i];
            stop = cb(ud, ch->bytes.data + it->koff, it->klen, ch->bytes.data + it->voff,
                      it->vlen) != 0;
        }
        stop = stop || ch->done;
    }
    vg_buf_free(&ch->bytes);
    free(ch);
    return rc;
}

static int lk_ping(vg_kv *kv)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    MDB_txn *t;
    int rc = rtxn_get(s, &t);
    if (rc != MDB_SUCCESS)
        return fail(s, rc);
    rtxn_put(s, t);
    return VG_OK;
}

/* Remove up to `chunk` expired entries in one write txn. */
static int sweep_step(lmdb_kv *s, size_t chunk, uint64_t *removed, bool *more)
{
    wtx w;
    int rc = wtx_begin(s, &w), popped = 1;
    if (rc != MDB_SUCCESS)
        return rc;
    size_t n = 0;
    while (n < chunk && popped && rc == MDB_SUCCESS) {
        rc = pop_first(&w, true, &popped);
        n += (size_t)popped;
    }
    uint64_t gone = w.expired;
    rc = wtx_finish(&w, rc);
    if (rc == MDB_SUCCESS) {
        *removed += gone;
        *more = popped != 0;
    }
    return rc;
}

static int lk_sweep(vg_kv *kv, uint64_t *removed)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    uint64_t total = 0;
    size_t chunk = SWEEP_CHUNK;
    bool more = true;
    int rc = MDB_SUCCESS;
    while (more) {
        rc = sweep_step(s, chunk, &total, &more);
        if (rc == MDB_MAP_FULL && chunk > 1) {
            chunk = 1; /* even deletes need fresh pages; take them one by one */
            continue;
        }
        if (rc != MDB_SUCCESS)
            break;
    }
    if (rc == MDB_SUCCESS && s->nosync)
        rc = mdb_env_sync(s->env, 1);
    if (removed)
        *removed = total;
    return rc == MDB_SUCCESS ? VG_OK : fail(s, rc);
}

static void lk_stats(vg_kv *kv, vg_kv_stats *out)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    memset(out, 0, sizeof *out);
    out->max_bytes = s->max_bytes;
    out->evictions = atomic_load(&s->evictions);
    out->expired = atomic_load(&s->expired);
    MDB_txn *t;
    if (rtxn_get(s, &t) == MDB_SUCCESS) {
        MDB_val k = {4, "acct"}, v;
        if (mdb_get(t, s->meta, &k, &v) == MDB_SUCCESS && v.mv_size == ACCT_LEN) {
            out->bytes = get_le(v.mv_data);
            out->entries = get_le((unsigned char *)v.mv_data + 8);
        }
        rtxn_put(s, t);
    } else {
        atomic_fetch_add(&s->errors, 1);
    }
    out->errors = atomic_load(&s->errors);
}

static void env_free(lmdb_kv *s)
{
    for (size_t i = 0; i < s->npool; i++)
        mdb_txn_abort(s->pool[i]);
    s->npool = 0;
    if (s->env)
        mdb_env_close(s->env);
    pthread_mutex_destroy(&s->pool_mu);
    free(s);
}

static void lk_close(vg_kv *kv)
{
    lmdb_kv *s = (lmdb_kv *)kv;
    if (s->nosync)
        mdb_env_sync(s->env, 1);
    env_free(s);
}

static const vg_kv_ops lmdb_ops = {
    .name = "lmdb",
    .get = lk_get,
    .set = lk_set,
    .del = lk_del,
    .batch = lk_batch,
    .scan = lk_scan,
    .ping = lk_ping,
    .sweep = lk_sweep,
    .stats = lk_stats,
    .close = lk_close,
};

/* ---- open ---------------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int mkdir_p(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return ENAMETOOLONG;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return errno;
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno;
    return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

static int sync_flags(const char *sync, unsigned *flags)
{
    if (!sync || !*sync || strcmp(sync, "meta") == 0)
        *flags = MDB_NOMETASYNC;
    else if (strcmp(sync, "full") == 0)
        *flags = 0;
    else if (strcmp(sync, "none") == 0)
        *flags = MDB_NOSYNC;
    else
        return -1;
    return 0;
}

/* Room for max_bytes of logical data plus per-record and page overhead.
 * The file is sparse and the mapping only address space. */
static int map_size(uint64_t max_bytes, size_t *out)
{
    if (vg_kv_lmdb_test_map_bytes) {
        *out = (size_t)vg_kv_lmdb_test_map_bytes;
        return 0;
    }
    if (max_bytes > (SIZE_MAX - MAP_SLACK) / 4)
        return -1;
    uint64_t m = 4 * max_bytes + MAP_SLACK;
    m = (m + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
    *out = (size_t)m;
    return 0;
}

/* Rebuild the accounting from the records themselves when "meta" is
 * missing or damaged. */
static int recount(wtx *w)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(w->txn, w->s->data, &c);
    if (rc != MDB_SUCCESS)
        return rc;
    memset(&w->a, 0, sizeof w->a);
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == MDB_SUCCESS) {
        w->a.entries++;
        w->a.bytes += k.mv_size + (v.mv_size >= HDR_LEN ? v.mv_size - HDR_LEN : 0);
        if (v.mv_size >= HDR_LEN) {
            uint64_t seq = get_le((unsigned char *)v.mv_data + 8);
            w->a.seq = seq > w->a.seq ? seq : w->a.seq;
        }
    }
    mdb_cursor_close(c);
    w->dirty = true;
    return rc == MDB_NOTFOUND ? MDB_SUCCESS : rc;
}

static int open_dbs(lmdb_kv *s)
{
    wtx w;
    memset(&w, 0, sizeof w);
    w.s = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w.txn);
    if (rc != MDB_SUCCESS)
        return rc;
    w.now = vg_clock_ms();
    rc = mdb_dbi_open(w.txn, "data", MDB_CREATE, &s->data);
    if (rc == MDB_SUCCESS)
        rc = mdb_dbi_open(w.txn, "exp", MDB_CREATE, &s->exp);
    if (rc == MDB_SUCCESS)
        rc = mdb_dbi_open(w.txn, "meta", MDB_CREATE, &s->meta);
    if (rc == MDB_SUCCESS) {
        rc = acct_load(&w);
        if (rc == MDB_NOTFOUND || rc == MDB_CORRUPTED)
            rc = recount(&w);
    }
    /* A smaller max_bytes than last run: shrink now, not on first write. */
    if (rc == MDB_SUCCESS)
        rc = evict_for(&w, 0);
    return wtx_finish(&w, rc);
}

static int open_env(lmdb_kv *s, const char *dir, unsigned flags, size_t map)
{
    int rc = mdb_env_create(&s->env);
    if (rc != MDB_SUCCESS) {
        s->env = NULL;
        return rc;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, 3)) != MDB_SUCCESS ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) != MDB_SUCCESS ||
        (rc = mdb_env_set_mapsize(s->env, map)) != MDB_SUCCESS ||
        (rc = mdb_env_open(s->env, dir, MDB_NOTLS | flags, 0600)) != MDB_SUCCESS)
        return rc;
    int dead;
    mdb_reader_check(s->env, &dead); /* slots left by a killed process */
    MDB_stat st;
    MDB_envinfo info;
    if ((rc = mdb_env_stat(s->env, &st)) != MDB_SUCCESS ||
        (rc = mdb_env_info(s->env, &info)) != MDB_SUCCESS)
        return rc;
    s->psize = st.ms_psize;
    s->page_budget = info.me_mapsize / st.ms_psize / 4 * 3;
    return mdb_env_get_maxkeysize(s->env) < KEY_MAX ? MDB_BAD_VALSIZE : MDB_SUCCESS;
}

int vg_kv_lmdb_open(const vg_kv_lmdb_opts *opts, vg_kv **out, char *err, size_t errlen)
{
    unsigned flags;
    size_t map;
    if (!opts || !out || !opts->dir || !*opts->dir || opts->max_bytes == 0) {
        seterr(err, errlen, "lmdb: dir and max_bytes are required");
        return VG_EINVAL;
    }
    if (sync_flags(opts->sync, &flags) != 0) {
        seterr(err, errlen, "lmdb: sync must be full, meta or none, not \"%s\"", opts->sync);
        return VG_EINVAL;
    }
    if (map_size(opts->max_bytes, &map) != 0) {
        seterr(err, errlen, "lmdb: max_bytes %llu is too large",
                 (unsigned long long)opts->max_bytes);
        return VG_EINVAL;
    }
    int rc = mkdir_p(opts->dir);
    if (rc != 0) {
        seterr(err, errlen, "lmdb: %s: %s", opts->dir, strerror(rc));
        return VG_ERR;
    }
    lmdb_kv *s = calloc(1, sizeof *s);
    if (!s) {
        seterr(err, errlen, "lmdb: out of memory");
        return VG_ENOMEM;
    }
    s->base.ops = &lmdb_ops;
    s->max_bytes = opts->max_bytes;
    s->nosync = flags == MDB_NOSYNC;
    pthread_mutex_init(&s->pool_mu, NULL);
    rc = open_env(s, opts->dir, flags, map);
    if (rc == MDB_SUCCESS)
        rc = open_dbs(s);
    if (rc != MDB_SUCCESS) {
        seterr(err, errlen, "lmdb: %s: %s", opts->dir, mdb_strerror(rc));
        env_free(s);
        return VG_ERR;
    }
    *out = &s->base;
    return VG_OK;
}
