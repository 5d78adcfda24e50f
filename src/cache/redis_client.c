/* The Redis client behind kv_redis and the Redis limiter (see redis.h).
 *
 * Connections: one blocking hiredis context per calling thread, found
 * through a pthread key and created on first use; a registry list lets
 * close() free the ones of threads that are still alive. Each connection
 * has SO_RCVTIMEO/SO_SNDTIMEO set to the command timeout, so a hung Redis
 * (SIGSTOP, CLIENT PAUSE) costs one timeout, never a hang. hiredis
 * connects, formats and sends; replies are read by resp.c, into the
 * connection's own buffer.
 *
 * Failures: the first failed round trip puts the whole client in a pause
 * of vg_redis_backoff_ms() (doubling per consecutive failure, capped,
 * "equal jitter" so instances do not retry in step) and bumps a
 * generation number. During the pause every call fails at once; after it
 * exactly one caller (a CAS on `probing`) tries again while the others
 * keep failing fast. A success ends the pause. Connections of an older
 * generation are dropped before use, so no thread keeps talking on a
 * socket that went bad during an outage. */
#include "voxgate/redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "redis_loop.h"
#include "voxgate/resp.h"

typedef struct conn {
    redisContext *ctx;
    vg_resp_in in;               /* replies are read with resp.c, not hiredis */
    uint64_t gen;
    struct vg_redis *owner;
    struct conn *prev, *next;
} conn;

struct vg_redis {
    vg_redis_url url;
    vg_redis_opts o;
    pthread_key_t key;
    pthread_mutex_t mu;          /* guards the registry list */
    conn *conns;
    _Atomic uint64_t down_until_ms; /* 0 = up */
    _Atomic uint32_t fails;         /* consecutive failed round trips */
    atomic_bool probing;
    _Atomic uint64_t gen;
    _Atomic uint64_t connects, reconnects, failures, fast_fails;
    vg_redis_loop *loop;            /* the event thread of vg_redis_submit */
};

vg_redis_loop *vg_redis_loop_of(vg_redis *r) { return r->loop; }

uint64_t vg_redis_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t n, uint32_t r)
{
    uint64_t d = base_ms ? base_ms : 1;
    for (uint32_t i = 1; i < n && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    /* Equal jitter: at least half the pause, at most all of it. */
    uint64_t half = d / 2;
    return d - half + ((uint64_t)r * (half + 1) >> 32);
}

static uint32_t rand32(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = (uint32_t)vg_mono_ns();
    return r;
}

/* ---- the registry of per-thread connections ---- */

static void conn_drop_ctx(conn *c)
{
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
}

static void conn_unlink(conn *c)
{
    vg_redis *r = c->owner;
    pthread_mutex_lock(&r->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&r->mu);
}

/* Thread exit: the thread's connection goes with it. */
static void conn_destroy(void *p)
{
    conn *c = p;
    conn_unlink(c);
    conn_drop_ctx(c);
    vg_resp_in_free(&c->in);
    free(c);
}

static conn *conn_get(vg_redis *r)
{
    conn *c = pthread_getspecific(r->key);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->owner = r;
    pthread_mutex_lock(&r->mu);
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    pthread_mutex_unlock(&r->mu);
    pthread_setspecific(r->key, c);
    return c;
}

/* ---- connecting ---- */

static struct timeval tv_ms(uint32_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static bool status_ok(redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_STATUS;
}

/* AUTH and SELECT in one round trip. */
static bool handshake(vg_redis *r, redisContext *ctx)
{
    const vg_redis_url *u = &r->url;
    int n = 0;
    if (u->pass[0]) {
        const char *av[3] = {"AUTH", u->user, u->pass};
        if (u->user[0])
            redisAppendCommandArgv(ctx, 3, av, NULL);
        else
            redisAppendCommandArgv(ctx, 2, (const char *[]){"AUTH", u->pass}, NULL);
        n++;
    }
    if (u->db) {
        char db[16];
        snprintf(db, sizeof db, "%u", u->db);
        redisAppendCommandArgv(ctx, 2, (const char *[]){"SELECT", db}, NULL);
        n++;
    }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(ctx, &rep) != REDIS_OK)
            return false;
        ok &= status_ok(rep);
        freeReplyObject(rep);
    }
    return ok;
}

static redisContext *dial(vg_redis *r)
{
    struct timeval ct = tv_ms(r->o.connect_timeout_ms);
    redisContext *ctx = r->url.is_unix ? redisConnectUnixWithTimeout(r->url.path, ct)
                                       : redisConnectWithTimeout(r->url.host, r->url.port, ct);
    if (!ctx)
        return NULL;
    if (ctx->err || redisSetTimeout(ctx, tv_ms(r->o.command_timeout_ms)) != REDIS_OK ||
        (!r->url.is_unix && redisEnableKeepAlive(ctx) != REDIS_OK) || !handshake(r, ctx)) {
        redisFree(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- the shared pause ---- */

static void mark_down(vg_redis *r)
{
    uint32_t n = atomic_fetch_add(&r->fails, 1) + 1;
    uint64_t pause = vg_redis_backoff_ms(r->o.backoff_base_ms, r->o.backoff_max_ms, n, rand32());
    atomic_store(&r->down_until_ms, vg_clock_ms() + pause);
    atomic_fetch_add(&r->gen, 1);
    atomic_fetch_add(&r->failures, 1);
    atomic_store(&r->probing, false);
}

static void mark_up(vg_redis *r)
{
    if (atomic_load_explicit(&r->down_until_ms, memory_order_relaxed) == 0 &&
        atomic_load_explicit(&r->fails, memory_order_relaxed) == 0)
        return;
    atomic_store(&r->fails, 0);
    atomic_store(&r->down_until_ms, 0);
    atomic_store(&r->probing, false);
}

/* May this thread talk to Redis now? During a pause: no, except for the
 * one caller that wins the probe once the pause is over. */
static bool may_try(vg_redis *r)
{
    uint64_t du = atomic_load_explicit(&r->down_until_ms, memory_order_acquire);
    if (du == 0)
        return true;
    bool expect = false;
    if (vg_clock_ms() >= du && atomic_compare_exchange_strong(&r->probing, &expect, true))
        return true;
    atomic_fetch_add(&r->fast_fails, 1);
    return false;
}

/* This thread's live connection, (re)connecting when needed. */
static redisContext *ready_ctx(vg_redis *r, conn *c, bool *fresh)
{
    uint64_t gen = atomic_load(&r->gen);
    if (c->ctx && c->gen != gen)
        conn_drop_ctx(c);
    *fresh = c->ctx == NULL;
    if (c->ctx)
        return c->ctx;
    c->ctx = dial(r);
    c->gen = gen;
    if (c->ctx) {
        vg_resp_in_reset(&c->in, c->ctx->fd);
        atomic_fetch_add(&r->connects, 1);
        if (atomic_load(&r->failures) > 0)
            atomic_fetch_add(&r->reconnects, 1);
    }
    return c->ctx;
}

static bool reset_by_peer(int e) { return e == ECONNRESET || e == EPIPE; }

/* Write every command (hiredis formats and sends them), then read the
 * replies with resp.c, handing each to the sink as it is parsed. On
 * failure *peer_closed says whether the server closed the socket (as
 * opposed to a timeout). */
static bool round_trip(conn *c, const vg_redis_cmd *cmds, size_t n, vg_redis_sink sink, void *ud,
                       size_t *delivered, bool *peer_closed)
{
    redisContext *ctx = c->ctx;
    for (size_t i = 0; i < n; i++)
        if (redisAppendCommandArgv(ctx, cmds[i].argc, cmds[i].argv, cmds[i].argvlen) != REDIS_OK)
            return false;
    int done = 0;
    while (!done) {
        errno = 0;
        if (redisBufferWrite(ctx, &done) != REDIS_OK) {
            *peer_closed = reset_by_peer(errno);
            return false;
        }
    }
    for (; *delivered < n; (*delivered)++) {
        redisReply *rep = NULL;
        errno = 0;
        int rc = vg_resp_read(&c->in, &rep);
        if (rc != VG_RESP_OK) {
            *peer_closed = rc == VG_RESP_EOF || (rc == VG_RESP_IO && reset_by_peer(errno));
            return false;
        }
        sink(ud, *delivered, rep);
    }
    return true;
}

int vg_redis_pipeline_each(vg_redis *r, const vg_redis_cmd *cmds, size_t n, bool retry_safe,
                           vg_redis_sink sink, void *ud, size_t *delivered)
{
    *delivered = 0;
    if (n == 0)
        return VG_OK;
    conn *c = conn_get(r);
    if (!c)
        return VG_ENOMEM;
    if (!may_try(r))
        return VG_EUNAVAIL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh, peer_closed = false;
        redisContext *ctx = ready_ctx(r, c, &fresh);
        if (ctx && round_trip(c, cmds, n, sink, ud, delivered, &peer_closed)) {
            mark_up(r);
            return VG_OK;
        }
        conn_drop_ctx(c);
        /* A socket the server closed while we were idle (a restart) is
         * worth one more try on a fresh one; a timeout is not, nor a
         * connection that had already answered part of the pipeline. */
        if (!(ctx && !fresh && peer_closed && retry_safe && *delivered == 0))
            break;
    }
    mark_down(r);
    return VG_EUNAVAIL;
}

static void keep_reply(void *ud, size_t i, redisReply *rep)
{
    ((redisReply **)ud)[i] = rep;
}

int vg_redis_pipeline(vg_redis *r, const vg_redis_cmd *cmds, size_t n, redisReply **replies,
                      bool retry_safe)
{
    memset(replies, 0, n * sizeof *replies);
    size_t got;
    int rc = vg_redis_pipeline_each(r, cmds, n, retry_safe, keep_reply, replies, &got);
    if (rc != VG_OK)
        vg_redis_free_replies(replies, got);
    return rc;
}

void vg_redis_free_replies(redisReply **replies, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (replies[i])
            freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}

void vg_redis_stats_get(vg_redis *r, vg_redis_stats *out)
{
    out->connects = atomic_load(&r->connects);
    out->reconnects = atomic_load(&r->reconnects);
    out->failures = atomic_load(&r->failures);
    out->fast_fails = atomic_load(&r->fast_fails);
    out->up = atomic_load(&r->down_until_ms) == 0;
}

int vg_redis_open(const vg_redis_opts *o, vg_redis **out, char *err, size_t errlen)
{
    *out = NULL;
    vg_redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "redis: out of memory");
        return VG_ENOMEM;
    }
    if (vg_redis_url_parse(o->url, &r->url, err, errlen) != VG_OK) {
        free(r);
        return VG_EINVAL;
    }
    r->o = *o;
    r->o.url = NULL; /* not kept: the caller owns the string */
    if (r->o.backoff_max_ms < r->o.backoff_base_ms)
        r->o.backoff_max_ms = r->o.backoff_base_ms;
    if (pthread_key_create(&r->key, conn_destroy) != 0) {
        free(r);
        snprintf(err, errlen, "redis: no thread-local key left");
        return VG_ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    if (!(r->loop = vg_redis_loop_new(r))) {
        pthread_key_delete(r->key);
        pthread_mutex_destroy(&r->mu);
        free(r);
        snprintf(err, errlen, "redis: out of memory");
        return VG_ENOMEM;
    }
    *out = r;
    return VG_OK;
}

void vg_redis_close(vg_redis *r)
{
    if (!r)
        return;
    /* First: its thread's connection goes with it (the key's destructor). */
    vg_redis_loop_free(r->loop);
    /* The calling thread's destructor would not run for a deleted key. */
    pthread_key_delete(r->key);
    for (conn *c = r->conns, *next; c; c = next) {
        next = c->next;
        conn_drop_ctx(c);
        vg_resp_in_free(&c->in);
        free(c);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}
