/* The Redis rate-limiter backend: the arithmetic of limiter.c written in
 * Lua, so a check is one atomic EVALSHA on one key and every instance on
 * the same Redis shares one limit. Time is Redis's own (TIME), so
 * instances with skewed clocks still agree. The script's SHA-1 is
 * computed here; on NOSCRIPT (a restarted or flushed Redis) the script is
 * loaded and run again in one pipelined round trip.
 *
 * Keys: {prefix}:rl:sl:{key} (a sorted set: one member per unit, score =
 * ms, member = a random 64-bit check id plus the unit index, so members
 * are unique even within one millisecond) and {prefix}:rl:gcra:{key} (a
 * string: the TAT in ms). Both carry a PEXPIRE, so idle keys vanish. */
#include "voxgate/limiter.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "voxgate/redis.h"

static const char sliding_lua[] =
    "local key = KEYS[1]\n"
    "local win, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local peek, id = ARGV[4] == '1', ARGV[5]\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)\n"
    "local count = redis.call('ZCARD', key)\n"
    "local allowed = count + cost <= limit\n"
    "if allowed and not peek then\n"
    "  local args = {}\n"
    "  for i = 1, cost do\n"
    "    args[#args + 1] = now\n"
    "    args[#args + 1] = id .. ':' .. i\n"
    "    if #args >= 2000 or i == cost then\n"
    "      redis.call('ZADD', key, unpack(args))\n"
    "      args = {}\n"
    "    end\n"
    "  end\n"
    "  count = count + cost\n"
    "  redis.call('PEXPIRE', key, win)\n"
    "end\n"
    "local reset, retry = 0, 0\n"
    "if count > 0 then\n"
    "  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')\n"
    "  reset = tonumber(newest[2]) + win - now\n"
    "end\n"
    "if not allowed then\n"
    "  local i = count + cost - limit - 1\n"
    "  local e = redis.call('ZRANGE', key, i, i, 'WITHSCORES')\n"
    "  retry = tonumber(e[2]) + win - now\n"
    "end\n"
    "local remaining = limit - count\n"
    "if remaining < 0 then remaining = 0 end\n"
    "return {allowed and 1 or 0, remaining, reset, retry}\n";

static const char gcra_lua[] =
    "local key = KEYS[1]\n"
    "local win, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local peek = ARGV[4] == '1'\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local T = win / limit\n"
    "local tat = tonumber(redis.call('GET', key) or 0) or 0\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + cost * T\n"
    "local allow_at = nxt - win\n"
    "local allowed = allow_at <= now + 1e-6\n"
    "local cur = tat\n"
    "if allowed and not peek then\n"
    "  redis.call('SET', key, string.format('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - now)))\n"
    "  cur = nxt\n"
    "end\n"
    "local remaining = math.floor((win - (cur - now)) / T + 1e-6)\n"
    "if remaining < 0 then remaining = 0 end\n"
    "if remaining > limit then remaining = limit end\n"
    "local reset = math.max(0, math.ceil(cur - now - 1e-6))\n"
    "local retry = 0\n"
    "if not allowed then retry = math.max(0, math.ceil(allow_at - now - 1e-6)) end\n"
    "return {allowed and 1 or 0, remaining, reset, retry}\n";

typedef struct script {
    const char *src;
    char sha[41];
} script;

typedef struct redis_limiter {
    vg_limiter base;
    vg_redis *r;
    char prefix[72];
    script sl, gcra;
} redis_limiter;

static void script_init(script *s, const char *src)
{
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)src, strlen(src), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", d[i]);
    s->src = src;
}

/* {prefix}:rl:{sl|gcra}:{key}, or {prefix}:rlp:{policy}:{sl|gcra}:{key} */
static size_t rl_key(const redis_limiter *l, const char *ns, vg_rl_algo a, const char *key,
                     size_t klen, char *out, size_t cap)
{
    const char *algo = a == VG_RL_GCRA ? "gcra" : "sl";
    int n = ns ? snprintf(out, cap, "%s:rlp:%s:%s:", l->prefix, ns, algo)
               : snprintf(out, cap, "%s:rl:%s:", l->prefix, algo);
    if (n < 0 || (size_t)n + klen >= cap)
        return 0;
    memcpy(out + n, key, klen);
    return (size_t)n + klen;
}

static bool parse_result(redisReply *rep, const vg_rl_req *rq, vg_rl_result *res)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4)
        return false;
    long long v[4];
    for (int i = 0; i < 4; i++) {
        if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
            return false;
        v[i] = rep->element[i]->integer;
    }
    *res = (vg_rl_result){.allowed = v[0] == 1, .limit = rq->limit,
                          .remaining = (uint64_t)v[1], .reset_ms = (uint64_t)v[2],
                          .retry_after_ms = (uint64_t)v[3]};
    return true;
}

static bool is_noscript(redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8);
}

/* One check's EVALSHA with its arguments, kept together so the async
 * path can send it again after NOSCRIPT. */
typedef struct evcmd {
    const script *s;
    char key[VG_RL_KEY_MAX + 192], win[24], limit[24], cost[24], id[17];
    size_t klen;
    int nargs;
    const char *av[12];
    size_t al[12];
} evcmd;

/* VG_OK, or VG_EINVAL when rq is out of bounds. */
static int evcmd_build(redis_limiter *l, const vg_rl_req *rq, evcmd *e)
{
    if (!vg_rl_req_valid(rq))
        return VG_EINVAL;
    e->klen = rl_key(l, rq->ns, rq->algo, rq->key, rq->klen, e->key, sizeof e->key);
    if (!e->klen)
        return VG_EINVAL;
    snprintf(e->win, sizeof e->win, "%llu", (unsigned long long)rq->window_ms);
    snprintf(e->limit, sizeof e->limit, "%llu", (unsigned long long)rq->limit);
    snprintf(e->cost, sizeof e->cost, "%llu", (unsigned long long)(rq->cost ? rq->cost : 1));
    bool gcra = rq->algo == VG_RL_GCRA;
    uint64_t rnd = 0; /* the sliding log's member id; GCRA has none */
    if (!gcra && getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = vg_mono_ns() ^ (uint64_t)(uintptr_t)&rnd;
    snprintf(e->id, sizeof e->id, "%016llx", (unsigned long long)rnd);
    e->s = gcra ? &l->gcra : &l->sl;
    const char *args[] = {e->win, e->limit, e->cost, rq->peek ? "1" : "0", e->id};
    e->nargs = gcra ? 4 : 5;
    e->av[0] = "EVALSHA";
    e->av[1] = e->s->sha;
    e->av[2] = "1";
    e->av[3] = e->key;
    e->al[0] = 7;
    e->al[1] = 40;
    e->al[2] = 1;
    e->al[3] = e->klen;
    for (int i = 0; i < e->nargs; i++) {
        e->av[4 + i] = args[i];
        e->al[4 + i] = strlen(args[i]);
    }
    return VG_OK;
}

/* cmds[0] = SCRIPT LOAD, cmds[1] = the EVALSHA. */
static void evcmd_cmds(evcmd *e, vg_redis_cmd cmds[2], const char *load_av[3],
                       size_t load_al[3])
{
    load_av[0] = "SCRIPT";
    load_av[1] = "LOAD";
    load_av[2] = e->s->src;
    load_al[0] = 6;
    load_al[1] = 4;
    load_al[2] = strlen(e->s->src);
    cmds[0] = (vg_redis_cmd){.argc = 3, .argv = load_av, .argvlen = load_al};
    cmds[1] = (vg_redis_cmd){.argc = 4 + e->nargs, .argv = e->av, .argvlen = e->al};
}

/* One EVALSHA; on NOSCRIPT, SCRIPT LOAD + EVALSHA in one round trip. */
static int eval(redis_limiter *l, evcmd *e, redisReply **out)
{
    vg_redis_cmd cmds[2];
    const char *lav[3];
    size_t lal[3];
    evcmd_cmds(e, cmds, lav, lal);
    redisReply *rep[2] = {NULL, NULL};
    /* Not retry_safe: a check that ran must never run twice. */
    int rc = vg_redis_pipeline(l->r, &cmds[1], 1, &rep[1], false);
    if (rc == VG_OK && is_noscript(rep[1])) {
        vg_redis_free_replies(&rep[1], 1);
        rc = vg_redis_pipeline(l->r, cmds, 2, rep, false);
        vg_redis_free_replies(rep, 1);
    }
    *out = rep[1];
    return rc;
}

static int rl_check(vg_limiter *lim, const vg_rl_req *rq, vg_rl_result *res)
{
    redis_limiter *l = (redis_limiter *)lim;
    evcmd e;
    int rc = evcmd_build(l, rq, &e);
    if (rc != VG_OK)
        return rc;
    redisReply *rep = NULL;
    rc = eval(l, &e, &rep);
    if (rc == VG_OK && !parse_result(rep, rq, res))
        rc = VG_EUNAVAIL; /* an error reply (OOM, BUSY, ...): the store cannot answer */
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* ---- the non-blocking check (vg_limiter_check_async) ---- */

typedef struct acheck {
    redis_limiter *l;
    vg_rl_cb cb;
    void *ud;
    uint64_t limit;
    bool reloaded;  /* the SCRIPT LOAD + EVALSHA retry was sent */
    evcmd e;
} acheck;

static void acheck_done(void *ud, int rc, redisReply **rep, size_t n);

static int acheck_send(acheck *a)
{
    vg_redis_cmd cmds[2];
    const char *lav[3];
    size_t lal[3];
    evcmd_cmds(&a->e, cmds, lav, lal);
    /* Not retry_safe: a check that ran must never run twice. */
    return a->reloaded ? vg_redis_submit(a->l->r, cmds, 2, false, acheck_done, a)
                       : vg_redis_submit(a->l->r, &cmds[1], 1, false, acheck_done, a);
}

/* On the client's event thread. */
static void acheck_done(void *ud, int rc, redisReply **rep, size_t n)
{
    acheck *a = ud;
    redisReply *last = rc == VG_OK && n ? rep[n - 1] : NULL;
    if (rc == VG_OK && !a->reloaded && is_noscript(last)) {
        /* A restarted or flushed Redis: load the script and run again. */
        a->reloaded = true;
        if (acheck_send(a) == VG_OK)
            return;
        rc = VG_EUNAVAIL;
    }
    vg_rl_result res = {0};
    vg_rl_req rq = {.limit = a->limit};
    if (rc == VG_OK && !parse_result(last, &rq, &res))
        rc = VG_EUNAVAIL; /* an error reply (OOM, BUSY, ...): the store cannot answer */
    a->cb(a->ud, rc, &res);
    free(a);
}

static int rl_check_async(vg_limiter *lim, const vg_rl_req *rq, vg_rl_cb cb, void *ud)
{
    redis_limiter *l = (redis_limiter *)lim;
    acheck *a = malloc(sizeof *a);
    if (!a)
        return VG_ENOMEM;
    *a = (acheck){.l = l, .cb = cb, .ud = ud, .limit = rq->limit};
    int rc = evcmd_build(l, rq, &a->e);
    /* Built in place: its argument vector points into a->e. */
    if (rc == VG_OK)
        rc = acheck_send(a);
    if (rc != VG_OK)
        free(a);
    return rc;
}

static int rl_clear(vg_limiter *lim, const char *ns, const char *k, size_t kl)
{
    redis_limiter *l = (redis_limiter *)lim;
    char a[VG_RL_KEY_MAX + 192], b[VG_RL_KEY_MAX + 192];
    size_t al = rl_key(l, ns, VG_RL_SLIDING_LOG, k, kl, a, sizeof a);
    size_t bl = rl_key(l, ns, VG_RL_GCRA, k, kl, b, sizeof b);
    if (!al || !bl)
        return VG_EINVAL;
    /* Two commands, one key each: fine on Redis Cluster too. */
    vg_redis_cmd cmds[2] = {
        {.argc = 2, .argv = (const char *[]){"UNLINK", a}, .argvlen = (size_t[]){6, al}},
        {.argc = 2, .argv = (const char *[]){"UNLINK", b}, .argvlen = (size_t[]){6, bl}},
    };
    redisReply *rep[2] = {NULL, NULL};
    int rc = vg_redis_pipeline(l->r, cmds, 2, rep, true);
    if (rc == VG_OK) {
        long long n = 0;
        for (int i = 0; i < 2; i++)
            n += rep[i]->type == REDIS_REPLY_INTEGER ? rep[i]->integer : 0;
        rc = n > 0 ? VG_OK : VG_NOTFOUND;
    }
    vg_redis_free_replies(rep, 2);
    return rc;
}

static void rl_close(vg_limiter *lim) { free(lim); }

static const vg_limiter_ops redis_ops = {
    .name = "redis", .check = rl_check, .clear = rl_clear, .close = rl_close,
    .check_async = rl_check_async,
};

int vg_limiter_redis_new(vg_redis *r, const char *prefix, vg_limiter **out)
{
    redis_limiter *l = calloc(1, sizeof *l);
    if (!l)
        return VG_ENOMEM;
    l->base.ops = &redis_ops;
    l->r = r;
    snprintf(l->prefix, sizeof l->prefix, "%s", prefix);
    script_init(&l->sl, sliding_lua);
    script_init(&l->gcra, gcra_lua);
    *out = &l->base;
    return VG_OK;
}
