/* The Redis client shared by the Redis kv backend and the Redis rate
 * limiter: redis_url parsing, one blocking hiredis connection per calling
 * thread (created lazily), connect and command timeouts, and one shared
 * backoff state so an outage costs each caller at most one timeout and
 * then fails fast until the next probe (capped exponential backoff with
 * jitter; one probe at a time, never a reconnect storm). */
#ifndef VOXGATE_REDIS_H
#define VOXGATE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

struct redisReply;

/* redis://[user:pass@]host[:port][/db] or unix:///path[?db=N]. user and
 * pass may be percent-encoded. IPv6 hosts in brackets: redis://[::1]:6379. */
typedef struct vg_redis_url {
    bool is_unix;
    char host[256];
    uint16_t port;          /* 6379 when omitted */
    char path[108];         /* unix socket path */
    char user[128];         /* empty: AUTH with the password only */
    char pass[256];         /* empty: no AUTH */
    uint32_t db;            /* SELECT when non-zero */
} vg_redis_url;

/* VG_OK, or VG_EINVAL with a message naming what is wrong (never the
 * password). */
int vg_redis_url_parse(const char *url, vg_redis_url *out, char *err, size_t errlen);

typedef struct vg_redis_opts {
    const char *url;
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;  /* bound on each socket read and write */
    uint32_t backoff_base_ms;     /* first pause after a failure */
    uint32_t backoff_max_ms;      /* cap of the doubling pause */
} vg_redis_opts;

typedef struct vg_redis vg_redis;

/* One command: argc arguments with their lengths (binary safe). */
typedef struct vg_redis_cmd {
    int argc;
    const char **argv;
    const size_t *argvlen;
} vg_redis_cmd;

typedef struct vg_redis_stats {
    uint64_t connects;        /* connections established (the first ones included) */
    uint64_t reconnects;      /* connections established after a failure */
    uint64_t failures;        /* round trips that failed: down, timeout, I/O */
    uint64_t fast_fails;      /* calls refused at once during a backoff pause */
    bool up;                  /* false during a backoff pause */
} vg_redis_stats;

/* Parses the URL; connects nothing (connections are made on first use). */
int vg_redis_open(const vg_redis_opts *o, vg_redis **out, char *err, size_t errlen);
/* Frees every connection; threads that used the client must be done. */
void vg_redis_close(vg_redis *r);

/* Send n commands in one write and read their n replies (one round
 * trip) on the calling thread's connection. replies[i] are hiredis
 * replies (REDIS_REPLY_ERROR included) the caller frees with
 * vg_redis_free_replies. retry_safe: when a reused connection turns out
 * to have been closed by the server (a Redis restart), reconnect and send
 * again once; pass false for commands that must not run twice.
 * Returns VG_OK, or VG_EUNAVAIL (down, timed out, or in a backoff pause)
 * with every reply NULL. */
int vg_redis_pipeline(vg_redis *r, const vg_redis_cmd *cmds, size_t n,
                      struct redisReply **replies, bool retry_safe);
void vg_redis_free_replies(struct redisReply **replies, size_t n);

/* As vg_redis_pipeline, but each reply goes to sink (which owns it) as
 * soon as it is read, so the callers whose replies come first need not
 * wait for the rest of the pipeline. *delivered counts the replies
 * handed over; on failure the others never come. */
typedef void (*vg_redis_sink)(void *ud, size_t i, struct redisReply *reply);
int vg_redis_pipeline_each(vg_redis *r, const vg_redis_cmd *cmds, size_t n, bool retry_safe,
                           vg_redis_sink sink, void *ud, size_t *delivered);

void vg_redis_stats_get(vg_redis *r, vg_redis_stats *out);

/* ---- asynchronous round trips (src/cache/redis_async.c) ----
 * For the HTTP hot paths, which must not block an HTTP thread on Redis:
 * the commands are copied and queued to the client's one event thread,
 * which sends everything queued since its last round trip as one pipeline
 * on its own connection (the same timeouts, backoff and reconnects as
 * vg_redis_pipeline) and calls done for each submission, in order, on
 * that thread, as soon as that submission's replies are read.
 * replies[0..n) are owned by the loop and freed after done returns; with
 * rc != VG_OK they are all NULL. done may submit again
 * (e.g. SCRIPT LOAD after NOSCRIPT). A request waits at most about one
 * command timeout: a hung Redis fails the whole pipeline, and the
 * backoff pause then fails what is queued at once. */
typedef void (*vg_redis_done)(void *ud, int rc, struct redisReply **replies, size_t n);
/* VG_OK (done will be called exactly once), or VG_ENOMEM / VG_EUNAVAIL
 * (closing): done is never called and the caller answers itself. */
int vg_redis_submit(vg_redis *r, const vg_redis_cmd *cmds, size_t n, bool retry_safe,
                    vg_redis_done done, void *ud);

/* Test seam: the jittered pause for the n-th consecutive failure (n >= 1)
 * given a random value r in [0, 2^32). */
uint64_t vg_redis_backoff_ms(uint32_t base_ms, uint32_t max_ms, uint32_t n, uint32_t r);

#endif
