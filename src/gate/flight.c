/* Single-flight table and bulkheads (see flight.h). Both sit on the miss
 * path only, so one mutex each is plenty; callbacks always run outside
 * the lock, because they take other locks and may re-enter. */
#include "voxgate/flight.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/util.h"

/* ---- single-flight ---- */

typedef struct member {
    vg_flight_cb cb;
    void *ud;
    struct member *next;
} member;

struct vg_flight {
    char *key;
    size_t klen;
    uint64_t hash;
    member *members;   /* newest first; finish reverses to join order */
    size_t n;
    vg_flight *next;   /* hash chain */
};

struct vg_flights {
    pthread_mutex_t mu;
    vg_flight **buckets;
    size_t nbuckets;   /* power of two */
    size_t open, max;
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

vg_flights *vg_flights_new(size_t max_flights)
{
    vg_flights *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nbuckets = 64;
    while (t->nbuckets < max_flights && t->nbuckets < (1u << 20))
        t->nbuckets <<= 1;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    t->max = max_flights;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

static void flight_free(vg_flight *f)
{
    for (member *m = f->members, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    free(f->key);
    free(f);
}

void vg_flights_free(vg_flights *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (vg_flight *f = t->buckets[i], *next; f; f = next) {
            next = f->next;
            flight_free(f);
        }
    pthread_mutex_destroy(&t->mu);
    free(t->buckets);
    free(t);
}

static vg_flight **slot_of(vg_flights *t, uint64_t h, const char *key, size_t klen)
{
    vg_flight **pp = &t->buckets[h & (t->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == klen && !memcmp((*pp)->key, key, klen)))
        pp = &(*pp)->next;
    return pp;
}

static vg_flight *flight_new(const char *key, size_t klen, uint64_t h)
{
    vg_flight *f = calloc(1, sizeof *f);
    if (!f || !(f->key = malloc(klen + 1))) {
        free(f);
        return NULL;
    }
    memcpy(f->key, key, klen);
    f->key[klen] = '\0';
    f->klen = klen;
    f->hash = h;
    return f;
}

int vg_flight_join(vg_flights *t, const char *key, size_t klen, vg_flight_cb cb, void *ud,
                   vg_flight **out, bool *leader)
{
    member *m = malloc(sizeof *m);
    if (!m)
        return VG_ENOMEM;
    *m = (member){.cb = cb, .ud = ud};
    uint64_t h = fnv1a(key, klen);
    int rc = VG_OK;
    pthread_mutex_lock(&t->mu);
    vg_flight **pp = slot_of(t, h, key, klen);
    *leader = *pp == NULL;
    if (*leader) {
        if (t->open >= t->max)
            rc = VG_ETOOBIG;
        else if (!(*pp = flight_new(key, klen, h)))
            rc = VG_ENOMEM;
        else
            t->open++;
    }
    if (rc == VG_OK) {
        m->next = (*pp)->members;
        (*pp)->members = m;
        (*pp)->n++;
        *out = *pp;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != VG_OK)
        free(m);
    return rc;
}

bool vg_flight_exists(vg_flights *t, const char *key, size_t klen)
{
    uint64_t h = fnv1a(key, klen);
    pthread_mutex_lock(&t->mu);
    bool found = *slot_of(t, h, key, klen) != NULL;
    pthread_mutex_unlock(&t->mu);
    return found;
}

size_t vg_flight_members(vg_flights *t, vg_flight *f)
{
    pthread_mutex_lock(&t->mu);
    size_t n = f->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void vg_flight_finish(vg_flights *t, vg_flight *f, void *result)
{
    pthread_mutex_lock(&t->mu);
    vg_flight **pp = slot_of(t, f->hash, f->key, f->klen);
    if (*pp == f) {
        *pp = f->next;
        t->open--;
    }
    member *list = f->members;
    f->members = NULL;
    pthread_mutex_unlock(&t->mu);
    /* No one can join f any more: its member list is ours alone. */
    member *rev = NULL;
    while (list) {
        member *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    for (member *m = rev; m; m = m->next)
        m->cb(m->ud, result);
    f->members = rev;
    flight_free(f);
}

size_t vg_flights_open(vg_flights *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->open;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* ---- bulkheads ---- */

typedef struct waiter {
    uint64_t ticket;
    vg_slot_cb cb;
    void *ud;
    struct waiter *next;
} waiter;

struct vg_bulkhead {
    pthread_mutex_t mu;
    uint32_t max, max_queue, in_use, queued;
    uint64_t next_ticket, rejected;
    waiter *head, *tail;
};

vg_bulkhead *vg_bulkhead_new(uint32_t max_concurrency, uint32_t max_queue)
{
    vg_bulkhead *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    b->max = max_concurrency ? max_concurrency : 1;
    b->max_queue = max_queue;
    return b;
}

void vg_bulkhead_free(vg_bulkhead *b)
{
    if (!b)
        return;
    for (waiter *w = b->head, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int vg_bulkhead_acquire(vg_bulkhead *b, vg_slot_cb cb, void *ud, uint64_t *ticket)
{
    pthread_mutex_lock(&b->mu);
    int rc = VG_OK;
    if (b->in_use < b->max && !b->head) {
        b->in_use++;
    } else if (b->queued >= b->max_queue) {
        b->rejected++;
        rc = VG_ETOOBIG;
    } else {
        waiter *w = malloc(sizeof *w);
        if (!w) {
            rc = VG_ENOMEM;
        } else {
            *w = (waiter){.ticket = ++b->next_ticket, .cb = cb, .ud = ud};
            if (b->tail)
                b->tail->next = w;
            else
                b->head = w;
            b->tail = w;
            b->queued++;
            *ticket = w->ticket;
            rc = VG_NOTFOUND;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void vg_bulkhead_release(vg_bulkhead *b)
{
    pthread_mutex_lock(&b->mu);
    waiter *w = b->head;
    if (w) {
        /* The slot passes straight to the waiter: in_use is unchanged. */
        b->head = w->next;
        if (!b->head)
            b->tail = NULL;
        b->queued--;
    } else if (b->in_use) {
        b->in_use--;
    }
    pthread_mutex_unlock(&b->mu);
    if (w) {
        w->cb(w->ud);
        free(w);
    }
}

bool vg_bulkhead_cancel(vg_bulkhead *b, uint64_t ticket)
{
    pthread_mutex_lock(&b->mu);
    waiter *prev = NULL, *w = b->head;
    while (w && w->ticket != ticket) {
        prev = w;
        w = w->next;
    }
    if (w) {
        if (prev)
            prev->next = w->next;
        else
            b->head = w->next;
        if (b->tail == w)
            b->tail = prev;
        b->queued--;
    }
    pthread_mutex_unlock(&b->mu);
    bool found = w != NULL;
    free(w);
    return found;
}

void vg_bulkhead_stats_get(vg_bulkhead *b, vg_bulkhead_stats *out)
{
    pthread_mutex_lock(&b->mu);
    *out = (vg_bulkhead_stats){b->in_use, b->queued, b->rejected};
    pthread_mutex_unlock(&b->mu);
}
