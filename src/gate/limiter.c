/* Rate-limit arithmetic (sliding log and GCRA, see limiter.h) and the
 * in-process backend, the embedded default. The Redis backend
 * (limiter_redis.c) runs the same arithmetic in Lua; these functions are
 * the reference its black-box tests and the unit tests check against.
 *
 * The in-process store is one hash table under one mutex: a check is a
 * few hundred nanoseconds of work, far below the HTTP cost around it. */
#include "voxgate/limiter.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-6

bool vg_rl_algo_parse(const char *s, vg_rl_algo *out)
{
    if (!strcmp(s, "sliding_log"))
        *out = VG_RL_SLIDING_LOG;
    else if (!strcmp(s, "gcra"))
        *out = VG_RL_GCRA;
    else
        return false;
    return true;
}

const char *vg_rl_algo_name(vg_rl_algo a) { return a == VG_RL_GCRA ? "gcra" : "sliding_log"; }

bool vg_rl_req_valid(const vg_rl_req *rq)
{
    if (!rq->key || rq->klen == 0 || rq->klen > VG_RL_KEY_MAX)
        return false;
    for (size_t i = 0; i < rq->klen; i++)
        if ((unsigned char)rq->key[i] < 0x20 || rq->key[i] == 0x7f)
            return false;
    if (rq->limit < 1 || rq->limit > VG_RL_LIMIT_MAX || rq->window_ms < 1 ||
        rq->window_ms > VG_RL_WINDOW_MAX_MS)
        return false;
    if (rq->cost > rq->limit || (rq->cost == 0 && !rq->peek))
        return false;
    return rq->algo == VG_RL_SLIDING_LOG || rq->algo == VG_RL_GCRA;
}

/* ---- the arithmetic ---- */

void vg_rl_sliding_eval(const vg_rl_entry *e, size_t n, uint64_t now, const vg_rl_req *rq,
                        vg_rl_result *res)
{
    uint64_t cost = rq->cost ? rq->cost : 1, count = 0;
    for (size_t i = 0; i < n; i++)
        count += e[i].n;
    bool allowed = count + cost <= rq->limit;
    uint64_t after = allowed && !rq->peek ? count + cost : count;
    uint64_t newest = allowed && !rq->peek ? now : n ? e[n - 1].t : now;
    *res = (vg_rl_result){.allowed = allowed, .limit = rq->limit};
    res->remaining = after < rq->limit ? rq->limit - after : 0;
    res->reset_ms = after ? newest + rq->window_ms - now : 0;
    if (allowed)
        return;
    /* The entry whose expiry frees enough room for this cost. */
    uint64_t need = count + cost - rq->limit, seen = 0;
    for (size_t i = 0; i < n; i++) {
        seen += e[i].n;
        if (seen >= need) {
            res->retry_after_ms = e[i].t + rq->window_ms - now;
            return;
        }
    }
}

void vg_rl_gcra_eval(double *tat, double now, const vg_rl_req *rq, vg_rl_result *res)
{
    double win = (double)rq->window_ms, T = win / (double)rq->limit;
    double cost = (double)(rq->cost ? rq->cost : 1);
    double cur = *tat > now ? *tat : now;
    double next = cur + cost * T, allow_at = next - win;
    bool allowed = allow_at <= now + EPS;
    if (allowed && !rq->peek) {
        *tat = next;
        cur = next;
    }
    double rem = floor((win - (cur - now)) / T + EPS);
    double reset = ceil(cur - now - EPS);
    *res = (vg_rl_result){.allowed = allowed, .limit = rq->limit};
    res->remaining = rem < 0 ? 0 : rem > (double)rq->limit ? rq->limit : (uint64_t)rem;
    res->reset_ms = reset > 0 ? (uint64_t)reset : 0;
    if (!allowed) {
        double ra = ceil(allow_at - now - EPS);
        res->retry_after_ms = ra > 0 ? (uint64_t)ra : 0;
    }
}

/* ---- in-process backend ---- */

#define NBUCKETS 4096

typedef struct mkey {
    struct mkey *next;
    vg_rl_algo algo;
    uint64_t expires_ms;      /* the state means nothing after this */
    double tat;               /* gcra */
    vg_rl_entry *log;         /* sliding_log, ascending */
    size_t n, cap;
    size_t klen;
    char key[];
} mkey;

typedef struct mem_limiter {
    vg_limiter base;
    pthread_mutex_t mu;
    size_t nkeys, max_keys;
    mkey *buckets[NBUCKETS];
} mem_limiter;

static uint32_t hash(vg_rl_algo a, const char *k, size_t n)
{
    uint32_t h = 2166136261u ^ (uint32_t)a;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

static void mkey_free(mkey *k)
{
    free(k->log);
    free(k);
}

/* Remove every key whose state has lapsed. */
static void sweep(mem_limiter *m, uint64_t now)
{
    for (size_t b = 0; b < NBUCKETS; b++) {
        for (mkey **pp = &m->buckets[b]; *pp;) {
            mkey *k = *pp;
            if (k->expires_ms <= now) {
                *pp = k->next;
                mkey_free(k);
                m->nkeys--;
            } else {
                pp = &k->next;
            }
        }
    }
}

static mkey *find(mem_limiter *m, vg_rl_algo a, const char *key, size_t klen, bool create,
                  uint64_t now)
{
    mkey **head = &m->buckets[hash(a, key, klen) % NBUCKETS];
    for (mkey *k = *head; k; k = k->next)
        if (k->algo == a && k->klen == klen && !memcmp(k->key, key, klen))
            return k;
    if (!create)
        return NULL;
    if (m->nkeys >= m->max_keys)
        sweep(m, now);
    if (m->nkeys >= m->max_keys)
        return NULL;
    mkey *k = calloc(1, sizeof *k + klen);
    if (!k)
        return NULL;
    k->algo = a;
    k->klen = klen;
    memcpy(k->key, key, klen);
    k->next = *head;
    *head = k;
    m->nkeys++;
    return k;
}

/* Drop log entries that left the window (t <= now - window). */
static void prune(mkey *k, uint64_t now, uint64_t window)
{
    size_t i = 0;
    while (i < k->n && k->log[i].t + window <= now)
        i++;
    if (i == 0)
        return; /* also keeps a NULL log away from memmove */
    memmove(k->log, k->log + i, (k->n - i) * sizeof *k->log);
    k->n -= i;
}

static int log_add(mkey *k, uint64_t now, uint64_t cost)
{
    if (k->n && k->log[k->n - 1].t == now) {
        k->log[k->n - 1].n += cost;
        return VG_OK;
    }
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 4;
        vg_rl_entry *p = realloc(k->log, cap * sizeof *p);
        if (!p)
            return VG_ENOMEM;
        k->log = p;
        k->cap = cap;
    }
    k->log[k->n++] = (vg_rl_entry){.t = now, .n = cost};
    return VG_OK;
}

static int sliding_check(mkey *k, uint64_t now, const vg_rl_req *rq, vg_rl_result *res)
{
    /* The wall clock may step back; a log stays ordered by never going
     * before its newest entry. */
    if (k->n && now < k->log[k->n - 1].t)
        now = k->log[k->n - 1].t;
    prune(k, now, rq->window_ms);
    vg_rl_sliding_eval(k->log, k->n, now, rq, res);
    if (res->allowed && !rq->peek && log_add(k, now, rq->cost) != VG_OK)
        return VG_ENOMEM;
    if (k->n)
        k->expires_ms = k->log[k->n - 1].t + rq->window_ms;
    return VG_OK;
}

/* A policy's keys live apart from ad-hoc ones: "\x01policy\x01key" cannot
 * collide with a key, which has no control characters. */
static size_t ns_key(const char *ns, const char *key, size_t klen, char *out, size_t cap)
{
    if (!ns) {
        memcpy(out, key, klen);
        return klen;
    }
    int n = snprintf(out, cap, "\x01%s\x01", ns);
    if (n < 0 || (size_t)n + klen > cap)
        return 0;
    memcpy(out + n, key, klen);
    return (size_t)n + klen;
}

static int mem_check(vg_limiter *l, const vg_rl_req *rq, vg_rl_result *res)
{
    mem_limiter *m = (mem_limiter *)l;
    char nk[VG_RL_KEY_MAX + 80];
    size_t nkl = vg_rl_req_valid(rq) ? ns_key(rq->ns, rq->key, rq->klen, nk, sizeof nk) : 0;
    if (!nkl)
        return VG_EINVAL;
    uint64_t now = vg_clock_ms();
    pthread_mutex_lock(&m->mu);
    mkey *k = find(m, rq->algo, nk, nkl, !rq->peek, now);
    int rc = VG_OK;
    if (k && k->expires_ms <= now) { /* lapsed: start afresh */
        k->n = 0;
        k->tat = 0;
    }
    if (!k && !rq->peek) {
        rc = VG_ETOOBIG;
    } else if (rq->algo == VG_RL_GCRA) {
        double tat = k ? k->tat : 0;
        vg_rl_gcra_eval(&tat, (double)now, rq, res);
        if (k && !rq->peek) {
            k->tat = tat;
            k->expires_ms = (uint64_t)ceil(tat);
        }
    } else if (k) {
        rc = sliding_check(k, now, rq, res);
    } else {
        vg_rl_sliding_eval(NULL, 0, now, rq, res);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int mem_clear(vg_limiter *l, const char *ns, const char *k0, size_t k0len)
{
    mem_limiter *m = (mem_limiter *)l;
    char key[VG_RL_KEY_MAX + 80];
    size_t klen = k0len <= VG_RL_KEY_MAX ? ns_key(ns, k0, k0len, key, sizeof key) : 0;
    if (!klen)
        return VG_EINVAL;
    int rc = VG_NOTFOUND;
    pthread_mutex_lock(&m->mu);
    for (int a = VG_RL_SLIDING_LOG; a <= VG_RL_GCRA; a++) {
        mkey **pp = &m->buckets[hash((vg_rl_algo)a, key, klen) % NBUCKETS];
        for (; *pp; pp = &(*pp)->next) {
            mkey *k = *pp;
            if (k->algo == (vg_rl_algo)a && k->klen == klen && !memcmp(k->key, key, klen)) {
                *pp = k->next;
                mkey_free(k);
                m->nkeys--;
                rc = VG_OK;
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static void mem_close(vg_limiter *l)
{
    mem_limiter *m = (mem_limiter *)l;
    for (size_t b = 0; b < NBUCKETS; b++)
        for (mkey *k = m->buckets[b], *next; k; k = next) {
            next = k->next;
            mkey_free(k);
        }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static const vg_limiter_ops mem_ops = {
    .name = "memory", .check = mem_check, .clear = mem_clear, .close = mem_close,
};

int vg_limiter_mem_new(size_t max_keys, vg_limiter **out)
{
    mem_limiter *m = calloc(1, sizeof *m);
    if (!m)
        return VG_ENOMEM;
    m->base.ops = &mem_ops;
    m->max_keys = max_keys ? max_keys : 1;
    pthread_mutex_init(&m->mu, NULL);
    *out = &m->base;
    return VG_OK;
}
