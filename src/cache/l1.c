/* L1: the in-process hot cache in front of the persistent store.
 *
 * Every cache hit of the product goes through vg_l1_get(), so the design
 * is about keeping that path short and contention low:
 *
 * - The key space is split into a power-of-two number of shards by the
 *   high bits of a 64-bit key hash. Each shard has its own mutex, its own
 *   chained hash table (indexed by the low bits) and its own LRU list, so
 *   threads only meet when they touch the same shard.
 * - Items are immutable after insertion and reference counted. The cache
 *   owns one reference while an item is linked; a reader takes another.
 *   Replacing, deleting or evicting only unlinks, and whoever drops the
 *   last reference frees. Frees happen after the shard lock is released.
 * - Bounds (bytes and entries) are enforced per shard at total/shards, so
 *   eviction never needs to look outside the shard being written. */
#include "voxgate/l1.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/keys.h"
#include "voxgate/util.h"

#define L1_MIN_BUCKETS 16
#define L1_MAX_SHARDS 1024

/* Aligned to a cache line so that two shards' locks and counters never
 * share one: otherwise the hit path would bounce lines between cores. */
typedef struct l1_shard {
    _Alignas(64) pthread_mutex_t lock;
    vg_l1_item **buckets;
    size_t nbuckets;            /* power of two */
    vg_l1_item *head, *tail;    /* head = most recently used */
    size_t entries, bytes;
    size_t max_entries, max_bytes;
    uint64_t hits, misses, inserts, evictions, expired;
} l1_shard;

struct vg_l1 {
    l1_shard *shards;
    size_t nshards;
    unsigned shard_shift;       /* shard = hash >> shard_shift */
    size_t max_item_bytes;
};

/* ------------------------------------------------------------------ */
/* Hashing                                                              */
/* ------------------------------------------------------------------ */

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Final avalanche, so both the high bits (shard) and the low bits
 * (bucket) depend on every input byte. */
static inline uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Eight bytes per round rather than FNV's one: keys are ~100 bytes of
 * mostly hex, and this runs on every lookup. Not meant to resist
 * adversarial keys; the keys are derived from SHA-256 digests anyway. */
static uint64_t key_hash(const char *k, size_t n)
{
    const uint64_t m1 = 0x87c37b91114253d5ULL, m2 = 0x4cf5ad432745937fULL;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    uint64_t w;

    for (; n >= 8; k += 8, n -= 8) {
        memcpy(&w, k, 8);
        h ^= rotl64(w * m1, 31) * m2;
        h = rotl64(h, 27) * 5 + 0x52dce729;
    }
    if (n) {
        w = 0;
        memcpy(&w, k, n);
        h ^= rotl64(w * m1, 31) * m2;
    }
    return fmix64(h);
}

/* ------------------------------------------------------------------ */
/* Items                                                                */
/* ------------------------------------------------------------------ */

/* Item, data and key in one allocation: one malloc on insert, one free
 * on release, and the bytes sit next to the header they belong to. */
static vg_l1_item *item_new(const char *key, size_t klen, const void *data, size_t len,
                            const char *ctype, const char *sha256, uint64_t created_at_ms,
                            uint64_t expires_at_ms, uint64_t hash, size_t charge)
{
    vg_l1_item *it = malloc(sizeof(*it) + len + klen + 1);
    if (!it)
        return NULL;
    unsigned char *d = (unsigned char *)(it + 1);
    char *k = (char *)d + len;

    if (len)
        memcpy(d, data, len);
    if (klen)
        memcpy(k, key, klen);
    k[klen] = '\0';

    it->key = k;
    it->key_len = klen;
    it->data = d;
    it->len = len;
    it->ctype[0] = '\0';
    if (ctype)
        strncat(it->ctype, ctype, sizeof(it->ctype) - 1);
    it->sha256[0] = '\0';
    if (sha256)
        strncat(it->sha256, sha256, sizeof(it->sha256) - 1);
    it->created_at_ms = created_at_ms;
    it->expires_at_ms = expires_at_ms;
    atomic_init(&it->refs, 1);
    it->hnext = it->prev = it->next = NULL;
    it->hash = hash;
    it->charge = charge;
    return it;
}

void vg_l1_release(vg_l1_item *it)
{
    if (!it)
        return;
    /* acq_rel: the thread that frees must see every other holder's
     * reads as finished. */
    if (atomic_fetch_sub_explicit(&it->refs, 1, memory_order_acq_rel) == 1)
        free(it);
}

/* Releases a chain of items unlinked under a shard lock. Done after the
 * unlock so free() never runs inside the critical section. The chain
 * reuses hnext, which nobody else reads once an item is unlinked. */
static void release_chain(vg_l1_item *it)
{
    while (it) {
        vg_l1_item *next = it->hnext;
        vg_l1_release(it);
        it = next;
    }
}

static inline bool item_expired(const vg_l1_item *it, uint64_t now)
{
    return it->expires_at_ms != 0 && now >= it->expires_at_ms;
}

/* ------------------------------------------------------------------ */
/* Shard internals (all called with the shard lock held)                */
/* ------------------------------------------------------------------ */

static inline l1_shard *shard_for(vg_l1 *c, uint64_t hash)
{
    /* A shift of 64 would be undefined; one shard means index 0. */
    return c->nshards == 1 ? c->shards : &c->shards[hash >> c->shard_shift];
}

static vg_l1_item **bucket_of(l1_shard *s, uint64_t hash)
{
    return &s->buckets[hash & (s->nbuckets - 1)];
}

/* Returns the link pointing at the item, so the caller can unlink it
 * without a second walk. NULL when absent. */
static vg_l1_item **find_link(l1_shard *s, const char *key, size_t klen, uint64_t hash)
{
    vg_l1_item **link = bucket_of(s, hash);
    for (; *link; link = &(*link)->hnext) {
        vg_l1_item *it = *link;
        if (it->hash == hash && it->key_len == klen &&
            (klen == 0 || memcmp(it->key, key, klen) == 0))
            return link;
    }
    return NULL;
}

static void lru_unlink(l1_shard *s, vg_l1_item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        s->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        s->tail = it->prev;
    it->prev = it->next = NULL;
}

static void lru_push_front(l1_shard *s, vg_l1_item *it)
{
    it->prev = NULL;
    it->next = s->head;
    if (s->head)
        s->head->prev = it;
    else
        s->tail = it;
    s->head = it;
}

/* Takes the item out of the table and the list and pushes it on the
 * caller's release chain. The cache's reference travels with it. */
static void shard_unlink(l1_shard *s, vg_l1_item **link, vg_l1_item **chain)
{
    vg_l1_item *it = *link;
    *link = it->hnext;
    lru_unlink(s, it);
    s->entries--;
    s->bytes -= it->charge;
    it->hnext = *chain;
    *chain = it;
}

/* Unlink by pointer, for callers that reached the item through the LRU
 * list rather than a table lookup. */
static void shard_remove(l1_shard *s, vg_l1_item *it, vg_l1_item **chain)
{
    vg_l1_item **link = bucket_of(s, it->hash);
    while (*link != it)
        link = &(*link)->hnext;
    shard_unlink(s, link, chain);
}

/* Doubling keeps the average chain length under one. A failed
 * allocation is not an error: lookups just walk longer chains. */
static void shard_maybe_grow(l1_shard *s)
{
    if (s->entries <= s->nbuckets || s->nbuckets > SIZE_MAX / 2 / sizeof(*s->buckets))
        return;
    size_t n = s->nbuckets * 2;
    vg_l1_item **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        vg_l1_item *it = s->buckets[i];
        while (it) {
            vg_l1_item *next = it->hnext;
            vg_l1_item **b = &nb[it->hash & (n - 1)];
            it->hnext = *b;
            *b = it;
            it = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

/* Evicts from the cold end until the shard is within bounds. The item
 * just inserted sits at the head and always fits alone (put checked its
 * charge and max_entries >= 1), so the loop stops before reaching it. */
static void shard_evict(l1_shard *s, vg_l1_item **chain)
{
    while (s->tail && (s->bytes > s->max_bytes || s->entries > s->max_entries)) {
        shard_remove(s, s->tail, chain);
        s->evictions++;
    }
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                            */
/* ------------------------------------------------------------------ */

static size_t pow2_ceil(size_t n)
{
    size_t p = 1;
    while (p < n && p < L1_MAX_SHARDS)
        p <<= 1;
    return p;
}

/* The smallest shard byte bound that can take any admissible item.
 * Keys are bounded by the key builder, so VG_KEY_MAX is a safe allowance. */
static size_t item_floor(size_t max_item_bytes)
{
    return sizeof(vg_l1_item) + max_item_bytes + VG_KEY_MAX;
}

/* Fewer shards rather than per-shard floors that add up past the
 * configured totals: the byte bound is what operators size memory by. */
static size_t clamp_shards(size_t n, const vg_l1_opts *o)
{
    size_t floor_bytes = item_floor(o->max_item_bytes);
    while (n > 1 && (o->max_bytes / n < floor_bytes || o->max_entries / n < 1))
        n >>= 1;
    return n;
}

static int shard_init(l1_shard *s, size_t max_bytes, size_t max_entries)
{
    memset(s, 0, sizeof(*s));
    s->buckets = calloc(L1_MIN_BUCKETS, sizeof(*s->buckets));
    if (!s->buckets)
        return VG_ENOMEM;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s->buckets);
        return VG_ERR;
    }
    s->nbuckets = L1_MIN_BUCKETS;
    s->max_bytes = max_bytes;
    s->max_entries = max_entries;
    return VG_OK;
}

static void shard_destroy(l1_shard *s)
{
    /* Dropping the cache's reference instead of freeing outright means a
     * reader that (wrongly) still holds an item keeps valid memory. */
    vg_l1_item *it = s->head;
    while (it) {
        vg_l1_item *next = it->next;
        vg_l1_release(it);
        it = next;
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->lock);
}

vg_l1 *vg_l1_new(const vg_l1_opts *opts)
{
    if (!opts || opts->max_bytes == 0 || opts->max_entries == 0)
        return NULL;
    if (opts->max_item_bytes > SIZE_MAX / 2)
        return NULL;

    vg_l1 *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->max_item_bytes = opts->max_item_bytes;
    c->nshards = clamp_shards(pow2_ceil(opts->shards ? opts->shards : 1), opts);
    c->shard_shift = 64;
    for (size_t n = c->nshards; n > 1; n >>= 1)
        c->shard_shift--;

    c->shards = aligned_alloc(_Alignof(l1_shard), c->nshards * sizeof(l1_shard));
    if (!c->shards) {
        free(c);
        return NULL;
    }
    size_t sb = opts->max_bytes / c->nshards;
    size_t se = opts->max_entries / c->nshards;
    if (sb < item_floor(opts->max_item_bytes))
        sb = item_floor(opts->max_item_bytes);
    if (se < 1)
        se = 1;
    for (size_t i = 0; i < c->nshards; i++) {
        if (shard_init(&c->shards[i], sb, se) != VG_OK) {
            while (i--)
                shard_destroy(&c->shards[i]);
            free(c->shards);
            free(c);
            return NULL;
        }
    }
    return c;
}

void vg_l1_free(vg_l1 *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nshards; i++)
        shard_destroy(&c->shards[i]);
    free(c->shards);
    free(c);
}

/* ------------------------------------------------------------------ */
/* Operations                                                           */
/* ------------------------------------------------------------------ */

vg_l1_item *vg_l1_get(vg_l1 *c, const char *key, size_t klen)
{
    uint64_t hash = key_hash(key, klen);
    l1_shard *s = shard_for(c, hash);
    vg_l1_item *found = NULL, *dead = NULL;

    pthread_mutex_lock(&s->lock);
    vg_l1_item **link = find_link(s, key, klen, hash);
    if (link) {
        vg_l1_item *it = *link;
        /* The clock is read only for items that can expire, which keeps
         * the no-TTL hit path free of a clock call. */
        if (it->expires_at_ms && item_expired(it, vg_clock_ms())) {
            shard_unlink(s, link, &dead);
            s->expired++;
        } else {
            if (s->head != it) {
                lru_unlink(s, it);
                lru_push_front(s, it);
            }
            /* Relaxed is enough: the cache's own reference keeps the
             * count above zero, and it is dropped only after an unlink
             * under this lock. */
            atomic_fetch_add_explicit(&it->refs, 1, memory_order_relaxed);
            found = it;
        }
    }
    if (found)
        s->hits++;
    else
        s->misses++;
    pthread_mutex_unlock(&s->lock);

    release_chain(dead);
    return found;
}

int vg_l1_put(vg_l1 *c, const char *key, size_t klen, const void *data, size_t len,
              const char *ctype, const char *sha256, uint64_t created_at_ms,
              uint64_t expires_at_ms)
{
    if (len > c->max_item_bytes || klen > SIZE_MAX / 4)
        return VG_ETOOBIG;
    uint64_t hash = key_hash(key, klen);
    l1_shard *s = shard_for(c, hash);
    /* max_item_bytes is at most SIZE_MAX / 2, so this cannot overflow. */
    size_t charge = sizeof(vg_l1_item) + klen + len;
    if (charge > s->max_bytes)
        return VG_ETOOBIG;

    /* Copy outside the lock: the critical section is pointer work only. */
    vg_l1_item *it = item_new(key, klen, data, len, ctype, sha256, created_at_ms,
                              expires_at_ms, hash, charge);
    if (!it)
        return VG_ENOMEM;

    vg_l1_item *dead = NULL;
    pthread_mutex_lock(&s->lock);
    vg_l1_item **link = find_link(s, key, klen, hash);
    if (link)
        shard_unlink(s, link, &dead);
    vg_l1_item **b = bucket_of(s, hash);
    it->hnext = *b;
    *b = it;
    lru_push_front(s, it);
    s->entries++;
    s->bytes += charge;
    s->inserts++;
    shard_evict(s, &dead);
    shard_maybe_grow(s);
    pthread_mutex_unlock(&s->lock);

    release_chain(dead);
    return VG_OK;
}

bool vg_l1_del(vg_l1 *c, const char *key, size_t klen)
{
    uint64_t hash = key_hash(key, klen);
    l1_shard *s = shard_for(c, hash);
    vg_l1_item *dead = NULL;

    pthread_mutex_lock(&s->lock);
    vg_l1_item **link = find_link(s, key, klen, hash);
    if (link)
        shard_unlink(s, link, &dead);
    pthread_mutex_unlock(&s->lock);

    release_chain(dead);
    return dead != NULL;
}

/* "vg:stt:openai" must match "vg:stt:openai:..." and "vg:stt:openai@2:..."
 * but not "vg:stt:openai2:...", hence the check on the byte after the
 * prefix. A NULL next_chars means a plain prefix match. */
static bool prefix_match(const vg_l1_item *it, const char *prefix, size_t plen,
                         const char *next_chars)
{
    if (it->key_len < plen || (plen && memcmp(it->key, prefix, plen) != 0))
        return false;
    if (it->key_len == plen || !next_chars)
        return true;
    char nc = it->key[plen];
    return nc != '\0' && strchr(next_chars, nc) != NULL;
}

size_t vg_l1_del_prefix(vg_l1 *c, const char *prefix, size_t plen, const char *next_chars)
{
    size_t removed = 0;
    for (size_t i = 0; i < c->nshards; i++) {
        l1_shard *s = &c->shards[i];
        vg_l1_item *dead = NULL;

        pthread_mutex_lock(&s->lock);
        vg_l1_item *it = s->head;
        while (it) {
            vg_l1_item *next = it->next;
            if (prefix_match(it, prefix, plen, next_chars)) {
                shard_remove(s, it, &dead);
                removed++;
            }
            it = next;
        }
        pthread_mutex_unlock(&s->lock);
        release_chain(dead);
    }
    return removed;
}

void vg_l1_stats_get(vg_l1 *c, vg_l1_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < c->nshards; i++) {
        l1_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        out->hits += s->hits;
        out->misses += s->misses;
        out->inserts += s->inserts;
        out->evictions += s->evictions;
        out->expired += s->expired;
        out->entries += s->entries;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
    }
}
