/* The production L2 tier: the vg_kv seam on Redis, through the shared
 * client (redis.h). Many voxgate instances pointed at one Redis share
 * this tier; L1 stays per instance, in front.
 *
 * Semantics beyond kv.h, matching what kv_lmdb gives the handlers:
 * - keys are stored as given (the handlers already put cache.prefix
 *   first); values are stored byte for byte with SET ... PX ttl, so Redis
 *   expires them itself and sweep has nothing to do.
 * - get is GET + PTTL pipelined (one round trip): nil is VG_NOTFOUND, and
 *   the remaining TTL gives expires_at_ms.
 * - batch sends every op in one pipeline, in order, and reads every reply
 *   (one round trip); a GET after a SET of the same key sees it.
 * - scan walks SCAN cursor MATCH <escaped prefix>* COUNT 512 and fetches
 *   each step's values with one MGET; the callback runs between round
 *   trips, so it may call back into this kv. Never KEYS. Like SCAN, it is
 *   not a snapshot: a key may be missed if written meanwhile and, rarely,
 *   visited twice (the invalidation handler tolerates both).
 * - del is UNLINK (the memory is freed off Redis's main thread).
 * - Redis down, hung or paused: VG_EUNAVAIL within the command timeout,
 *   then at once during the client's backoff pause.
 * - stats: only errors (failed operations) is reported. entries, bytes,
 *   evictions and expired stay 0: the database may be shared with other
 *   instances and other data, so DBSIZE or INFO would not count this
 *   instance's entries, and Redis evicts by its own maxmemory policy. */
#include "voxgate/kv.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/redis.h"

#define SCAN_COUNT "512"
#define MAX_ARGS 5 /* SET key value PX ttl */

typedef struct redis_kv {
    vg_kv base;
    vg_redis *r;
    _Atomic uint64_t errors;
} redis_kv;

/* Argument storage for the commands of one pipeline. */
typedef struct cmdbuf {
    vg_redis_cmd *cmds;
    const char **argv;
    size_t *argvlen;
    char (*num)[24];
    size_t n, cap;
} cmdbuf;

static int cmdbuf_init(cmdbuf *b, size_t cap)
{
    *b = (cmdbuf){.cap = cap};
    b->cmds = calloc(cap, sizeof *b->cmds);
    b->argv = calloc(cap * MAX_ARGS, sizeof *b->argv);
    b->argvlen = calloc(cap * MAX_ARGS, sizeof *b->argvlen);
    b->num = calloc(cap, sizeof *b->num);
    return b->cmds && b->argv && b->argvlen && b->num ? VG_OK : VG_ENOMEM;
}

static void cmdbuf_free(cmdbuf *b)
{
    free(b->cmds);
    free(b->argv);
    free(b->argvlen);
    free(b->num);
}

/* Append one command of up to MAX_ARGS (pointer, length) pairs. */
static void cmd_add(cmdbuf *b, int argc, const char *const *av, const size_t *al)
{
    size_t i = b->n++;
    const char **argv = b->argv + i * MAX_ARGS;
    size_t *argvlen = b->argvlen + i * MAX_ARGS;
    for (int a = 0; a < argc; a++) {
        argv[a] = av[a];
        argvlen[a] = al[a] == (size_t)-1 ? strlen(av[a]) : al[a];
    }
    b->cmds[i] = (vg_redis_cmd){.argc = argc, .argv = argv, .argvlen = argvlen};
}

#define AUTO ((size_t)-1)

static void add_get(cmdbuf *b, const char *k, size_t kl)
{
    cmd_add(b, 2, (const char *[]){"GET", k}, (size_t[]){3, kl});
    cmd_add(b, 2, (const char *[]){"PTTL", k}, (size_t[]){4, kl});
}

static void add_set(cmdbuf *b, const char *k, size_t kl, const void *v, size_t vl, uint64_t ttl)
{
    if (!ttl) {
        cmd_add(b, 3, (const char *[]){"SET", k, v ? v : ""}, (size_t[]){3, kl, vl});
        return;
    }
    char *num = b->num[b->n];
    snprintf(num, sizeof b->num[0], "%llu", (unsigned long long)ttl);
    cmd_add(b, 5, (const char *[]){"SET", k, v ? v : "", "PX", num},
            (size_t[]){3, kl, vl, 2, AUTO});
}

static void add_del(cmdbuf *b, const char *k, size_t kl)
{
    cmd_add(b, 2, (const char *[]){"UNLINK", k}, (size_t[]){6, kl});
}

/* ---- reply mapping ---- */

static int get_result(redisReply *val, redisReply *ttl, vg_buf *out, uint64_t *exp)
{
    if (!val || !ttl || val->type == REDIS_REPLY_ERROR || ttl->type != REDIS_REPLY_INTEGER)
        return VG_ERR;
    if (val->type == REDIS_REPLY_NIL || ttl->integer == -2)
        return VG_NOTFOUND; /* missing, or expired between GET and PTTL */
    if (val->type != REDIS_REPLY_STRING)
        return VG_ERR; /* a key of another type under our prefix */
    /* The reply's string becomes the caller's buffer (hiredis allocates
     * it with malloc): a large entry is not copied once more per hit. */
    vg_buf_free(out);
    *out = (vg_buf){.data = val->str, .len = val->len, .cap = val->len + 1};
    val->str = NULL;
    val->len = 0;
    if (exp)
        *exp = ttl->integer > 0 ? vg_clock_ms() + (uint64_t)ttl->integer : 0;
    return VG_OK;
}

static int set_result(redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_STATUS ? VG_OK : VG_ERR;
}

static int del_result(redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_INTEGER)
        return VG_ERR;
    return rep->integer > 0 ? VG_OK : VG_NOTFOUND;
}

static int count(redis_kv *s, int rc)
{
    if (rc < 0)
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    return rc;
}

/* ---- the vtable ---- */

static int rkv_get(vg_kv *kv, const char *key, size_t klen, vg_buf *out, uint64_t *exp)
{
    redis_kv *s = (redis_kv *)kv;
    if (klen == 0)
        return VG_EINVAL;
    cmdbuf b = {0};
    redisReply *rep[2] = {NULL, NULL};
    int rc = cmdbuf_init(&b, 2);
    if (rc == VG_OK) {
        add_get(&b, key, klen);
        rc = vg_redis_pipeline(s->r, b.cmds, 2, rep, true);
    }
    if (rc == VG_OK)
        rc = get_result(rep[0], rep[1], out, exp);
    vg_redis_free_replies(rep, 2);
    cmdbuf_free(&b);
    return count(s, rc);
}

/* ---- the non-blocking get (vg_kv_get_async) ---- */

typedef struct aget {
    redis_kv *s;
    vg_kv_get_cb cb;
    void *ud;
} aget;

/* On the client's event thread: map GET + PTTL as rkv_get does. */
static void aget_done(void *ud, int rc, redisReply **rep, size_t n)
{
    aget *a = ud;
    vg_buf val = {0};
    uint64_t exp = 0;
    if (rc == VG_OK)
        rc = n == 2 ? get_result(rep[0], rep[1], &val, &exp) : VG_ERR;
    a->cb(a->ud, count(a->s, rc), &val, exp);
    vg_buf_free(&val);
    free(a);
}

static int rkv_get_async(vg_kv *kv, const char *key, size_t klen, vg_kv_get_cb cb, void *ud)
{
    redis_kv *s = (redis_kv *)kv;
    if (klen == 0)
        return VG_EINVAL;
    aget *a = malloc(sizeof *a);
    if (!a)
        return VG_ENOMEM;
    *a = (aget){.s = s, .cb = cb, .ud = ud};
    vg_redis_cmd cmds[2] = {
        {.argc = 2, .argv = (const char *[]){"GET", key}, .argvlen = (size_t[]){3, klen}},
        {.argc = 2, .argv = (const char *[]){"PTTL", key}, .argvlen = (size_t[]){4, klen}},
    };
    int rc = vg_redis_submit(s->r, cmds, 2, true, aget_done, a);
    if (rc != VG_OK)
        free(a);
    return rc;
}

static int rkv_set(vg_kv *kv, const char *key, size_t klen, const void *val, size_t vlen,
                   uint64_t ttl_ms)
{
    vg_kv_op op = {.type = VG_KV_SET, .key = key, .klen = klen, .val = val, .vlen = vlen,
                   .ttl_ms = ttl_ms};
    int rc = kv->ops->batch(kv, &op, 1);
    return rc == VG_OK ? op.rc : rc;
}

static int rkv_del(vg_kv *kv, const char *key, size_t klen)
{
    vg_kv_op op = {.type = VG_KV_DEL, .key = key, .klen = klen};
    int rc = kv->ops->batch(kv, &op, 1);
    return rc == VG_OK ? op.rc : rc;
}

static void batch_results(redis_kv *s, vg_kv_op *ops, size_t n, redisReply **rep)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        vg_kv_op *op = &ops[i];
        if (op->klen == 0) {
            op->rc = VG_EINVAL;
            continue;
        }
        if (op->type == VG_KV_GET) {
            op->rc = get_result(rep[j], rep[j + 1], &op->out, &op->expires_at_ms);
            j += 2;
        } else {
            op->rc = op->type == VG_KV_SET ? set_result(rep[j]) : del_result(rep[j]);
            j++;
        }
        count(s, op->rc);
    }
}

static int rkv_batch(vg_kv *kv, vg_kv_op *ops, size_t n)
{
    redis_kv *s = (redis_kv *)kv;
    cmdbuf b = {0};
    redisReply **rep = calloc(2 * n + 1, sizeof *rep);
    int rc = rep ? cmdbuf_init(&b, 2 * n + 1) : VG_ENOMEM;
    for (size_t i = 0; rc == VG_OK && i < n; i++) {
        vg_kv_op *op = &ops[i];
        if (op->klen == 0)
            continue;
        if (op->type == VG_KV_GET)
            add_get(&b, op->key, op->klen);
        else if (op->type == VG_KV_SET)
            add_set(&b, op->key, op->klen, op->val, op->vlen, op->ttl_ms);
        else
            add_del(&b, op->key, op->klen);
    }
    if (rc == VG_OK)
        rc = vg_redis_pipeline(s->r, b.cmds, b.n, rep, true);
    if (rc == VG_OK)
        batch_results(s, ops, n, rep);
    else
        count(s, rc);
    if (rep) {
        vg_redis_free_replies(rep, b.n);
        cmdbuf_free(&b);
    }
    free(rep);
    return rc;
}

/* "prefix*" with the glob characters of prefix escaped. */
static char *scan_pattern(const char *p, size_t n)
{
    char *pat = malloc(2 * n + 2);
    if (!pat)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]\\", p[i]) && p[i])
            pat[o++] = '\\';
        pat[o++] = p[i];
    }
    pat[o++] = '*';
    pat[o] = '\0';
    return pat;
}

/* MGET the keys of one SCAN step and hand each live one to cb. Returns
 * VG_OK, 1 when cb asked to stop, or an error. */
static int scan_step(redis_kv *s, redisReply *keys, vg_kv_scan_cb cb, void *ud)
{
    size_t n = keys->elements;
    const char **argv = calloc(n + 1, sizeof *argv);
    size_t *argvlen = calloc(n + 1, sizeof *argvlen);
    int rc = argv && argvlen ? VG_OK : VG_ENOMEM;
    redisReply *vals = NULL;
    if (rc == VG_OK) {
        argv[0] = "MGET";
        argvlen[0] = 4;
        for (size_t i = 0; i < n; i++) {
            argv[i + 1] = keys->element[i]->str;
            argvlen[i + 1] = keys->element[i]->len;
        }
        vg_redis_cmd cmd = {.argc = (int)n + 1, .argv = argv, .argvlen = argvlen};
        rc = vg_redis_pipeline(s->r, &cmd, 1, &vals, true);
    }
    if (rc == VG_OK && (vals->type != REDIS_REPLY_ARRAY || vals->elements != n))
        rc = VG_ERR;
    for (size_t i = 0; rc == VG_OK && i < n; i++) {
        redisReply *v = vals->element[i];
        if (v->type == REDIS_REPLY_STRING &&
            cb(ud, keys->element[i]->str, keys->element[i]->len, v->str, v->len))
            rc = 1;
    }
    if (vals)
        freeReplyObject(vals);
    free(argv);
    free(argvlen);
    return rc;
}

static bool scan_reply_ok(redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i < r->element[1]->elements; i++)
        if (r->element[1]->element[i]->type != REDIS_REPLY_STRING)
            return false;
    return true;
}

static int rkv_scan(vg_kv *kv, const char *prefix, size_t plen, vg_kv_scan_cb cb, void *ud)
{
    redis_kv *s = (redis_kv *)kv;
    char *pat = scan_pattern(prefix, plen);
    if (!pat)
        return VG_ENOMEM;
    char cursor[32] = "0";
    int rc = VG_OK;
    do {
        const char *av[] = {"SCAN", cursor, "MATCH", pat, "COUNT", SCAN_COUNT};
        size_t al[] = {4, strlen(cursor), 5, strlen(pat), 5, strlen(SCAN_COUNT)};
        vg_redis_cmd cmd = {.argc = 6, .argv = av, .argvlen = al};
        redisReply *rep = NULL;
        rc = vg_redis_pipeline(s->r, &cmd, 1, &rep, true);
        if (rc == VG_OK && !scan_reply_ok(rep))
            rc = VG_ERR;
        if (rc == VG_OK) {
            snprintf(cursor, sizeof cursor, "%.*s", (int)rep->element[0]->len,
                     rep->element[0]->str);
            if (rep->element[1]->elements)
                rc = scan_step(s, rep->element[1], cb, ud);
        }
        if (rep)
            freeReplyObject(rep);
    } while (rc == VG_OK && strcmp(cursor, "0") != 0);
    free(pat);
    return count(s, rc == 1 ? VG_OK : rc);
}

static int rkv_ping(vg_kv *kv)
{
    redis_kv *s = (redis_kv *)kv;
    vg_redis_cmd cmd = {.argc = 1, .argv = (const char *[]){"PING"}, .argvlen = (size_t[]){4}};
    redisReply *rep = NULL;
    int rc = vg_redis_pipeline(s->r, &cmd, 1, &rep, true);
    if (rc == VG_OK && rep->type != REDIS_REPLY_STATUS)
        rc = VG_EUNAVAIL; /* e.g. LOADING or an AUTH error: not usable */
    if (rep)
        freeReplyObject(rep);
    return rc;
}

static int rkv_sweep(vg_kv *kv, uint64_t *removed)
{
    *removed = 0; /* Redis expires keys itself */
    return VG_OK;
}

static void rkv_stats(vg_kv *kv, vg_kv_stats *out)
{
    redis_kv *s = (redis_kv *)kv;
    *out = (vg_kv_stats){.errors = atomic_load(&s->errors)};
}

static void rkv_close(vg_kv *kv) { free(kv); }

static const vg_kv_ops redis_ops = {
    .name = "redis",
    .get = rkv_get,
    .set = rkv_set,
    .del = rkv_del,
    .batch = rkv_batch,
    .scan = rkv_scan,
    .ping = rkv_ping,
    .sweep = rkv_sweep,
    .stats = rkv_stats,
    .close = rkv_close,
    .get_async = rkv_get_async,
};

int vg_kv_redis_open(vg_redis *r, vg_kv **out)
{
    redis_kv *s = calloc(1, sizeof *s);
    if (!s)
        return VG_ENOMEM;
    s->base.ops = &redis_ops;
    s->r = r;
    *out = &s->base;
    return VG_OK;
}
