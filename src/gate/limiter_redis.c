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

/* One EVALSHA; on NOSCRIPT, SCRIPT LOAD + EVALSHA in one round trip. */
static int eval(redis_limiter *l, const script *s, const char *key, size_t klen,
                const char *const *args, int nargs, redisReply **out)
{
    const char *av[12] = {"EVALSHA", s->sha, "1", key};
    size_t al[12] = {7, 40, 1, klen};
    for (int i = 0; i < nargs; i++) {
        av[4 + i] = args[i];
        al[4 + i] = strlen(args[i]);
    }
    vg_redis_cmd cmds[2] = {
        {.argc = 3, .argv = (const char *[]){"SCRIPT", "LOAD", s->src},
         .argvlen = (size_t[]){6, 4, strlen(s->src)}},
        {.argc = 4 + nargs, .argv = av, .argvlen = al},
    };
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
    if (!vg_rl_req_valid(rq))
        return VG_EINVAL;
    char key[VG_RL_KEY_MAX + 192], win[24], limit[24], cost[24], id[17];
    size_t klen = rl_key(l, rq->ns, rq->algo, rq->key, rq->klen, key, sizeof key);
    if (!klen)
        return VG_EINVAL;
    snprintf(win, sizeof win, "%llu", (unsigned long long)rq->window_ms);
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)rq->limit);
    snprintf(cost, sizeof cost, "%llu", (unsigned long long)(rq->cost ? rq->cost : 1));
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = vg_mono_ns() ^ (uint64_t)(uintptr_t)&rnd;
    snprintf(id, sizeof id, "%016llx", (unsigned long long)rnd);
    const char *args[] = {win, limit, cost, rq->peek ? "1" : "0", id};
    bool gcra = rq->algo == VG_RL_GCRA;
    redisReply *rep = NULL;
    int rc = eval(l, gcra ? &l->gcra : &l->sl, key, klen, args, gcra ? 4 : 5, &rep);
    if (rc == VG_OK && !parse_result(rep, rq, res))
        rc = VG_EUNAVAIL; /* an error reply (OOM, BUSY, ...): the store cannot answer */
    if (rep)
        freeReplyObject(rep);
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
