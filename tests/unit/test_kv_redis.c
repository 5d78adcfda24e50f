/* Unit tests for the Redis kv backend and its client against a real
 * redis-server this file starts on a free loopback port (no mocks): the
 * kv.h semantics the handlers rely on (get/set/del, TTL, batch order,
 * scan by prefix with callbacks that call back in), AUTH + SELECT, unix
 * sockets, per-thread connections, and failure behaviour: Redis killed
 * or SIGSTOPped answers VG_EUNAVAIL within the command timeout, then fast
 * during the backoff pause, and the client recovers by itself. Also the
 * Redis limiter: its Lua must give what the C arithmetic gives, and a
 * flushed script cache (NOSCRIPT) is reloaded transparently. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/kv.h"
#include "voxgate/limiter.h"
#include "voxgate/redis.h"

#include "redis_server.h"

typedef struct fx {
    server srv;
    vg_redis *r;
    vg_kv *kv;
} fx;

static void open_client(fx *f, const char *url)
{
    vg_redis_opts o = {.url = url, .connect_timeout_ms = 300,
                       .command_timeout_ms = CMD_TIMEOUT_MS, .backoff_base_ms = 50,
                       .backoff_max_ms = 200};
    char err[160];
    assert_int_equal(vg_redis_open(&o, &f->r, err, sizeof err), VG_OK);
    assert_int_equal(vg_kv_redis_open(f->r, &f->kv), VG_OK);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->srv.port = free_port();
    server_start(&f->srv, NULL);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->srv.port);
    open_client(f, url);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    vg_kv_close(f->kv);
    vg_redis_close(f->r);
    server_stop(&f->srv);
    if (f->srv.sock[0])
        unlink(f->srv.sock);
    free(f);
    return 0;
}

static void put(vg_kv *kv, const char *k, const char *v, uint64_t ttl)
{
    assert_int_equal(vg_kv_set(kv, k, strlen(k), v, strlen(v), ttl), VG_OK);
}

static void expect(vg_kv *kv, const char *k, const char *v)
{
    vg_buf b = {0};
    uint64_t exp;
    int rc = vg_kv_get(kv, k, strlen(k), &b, &exp);
    if (!v) {
        assert_int_equal(rc, VG_NOTFOUND);
    } else {
        assert_int_equal(rc, VG_OK);
        assert_int_equal(b.len, strlen(v));
        assert_memory_equal(b.data, v, b.len);
    }
    vg_buf_free(&b);
}

static void test_set_get_del(void **state)
{
    fx *f = *state;
    expect(f->kv, "t:a", NULL);
    put(f->kv, "t:a", "one", 0);
    expect(f->kv, "t:a", "one");
    put(f->kv, "t:a", "two", 0);
    expect(f->kv, "t:a", "two");
    /* Binary values survive byte for byte. */
    const char bin[] = {'x', 0, 'y', '\r', '\n'};
    assert_int_equal(vg_kv_set(f->kv, "t:b", 3, bin, sizeof bin, 0), VG_OK);
    vg_buf b = {0};
    assert_int_equal(vg_kv_get(f->kv, "t:b", 3, &b, NULL), VG_OK);
    assert_int_equal(b.len, sizeof bin);
    assert_memory_equal(b.data, bin, sizeof bin);
    vg_buf_free(&b);
    assert_int_equal(vg_kv_del(f->kv, "t:a", 3), VG_OK);
    assert_int_equal(vg_kv_del(f->kv, "t:a", 3), VG_NOTFOUND);
    expect(f->kv, "t:a", NULL);
    assert_int_equal(vg_kv_ping(f->kv), VG_OK);
    assert_string_equal(f->kv->ops->name, "redis");
}

/* Values larger than the reply reader's buffer, several in one pipeline
 * beside every other reply type Redis sends (resp.c reads them all):
 * each arrives whole and in order. */
static void test_large_values_and_reply_types(void **state)
{
    fx *f = *state;
    static const size_t sizes[] = {64 * 1024 - 3, 300 * 1024 + 1, 2 * 1024 * 1024 + 5};
    char *v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = malloc(sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            v[i][j] = (char)(j * 7 + (size_t)i);
        char k[8];
        snprintf(k, sizeof k, "t:big%d", i);
        assert_int_equal(vg_kv_set(f->kv, k, strlen(k), v[i], sizes[i], 0), VG_OK);
    }
    const char *lua = "return {1, 'two', {false, 3}, redis.status_reply('OK')}";
    vg_redis_cmd cmds[] = {
        {3, (const char *[]){"MGET", "t:big0", "t:none"}, NULL},
        {2, (const char *[]){"GET", "t:big1"}, NULL},
        {2, (const char *[]){"PTTL", "t:big1"}, NULL},
        {3, (const char *[]){"EVAL", lua, "0"}, NULL},
        {2, (const char *[]){"GET", "t:big2"}, NULL},
        {1, (const char *[]){"NOSUCHCOMMAND"}, NULL},
        {1, (const char *[]){"PING"}, NULL},
    };
    enum { N = sizeof cmds / sizeof *cmds };
    redisReply *rep[N];
    assert_int_equal(vg_redis_pipeline(f->r, cmds, N, rep, true), VG_OK);
    assert_int_equal(rep[0]->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep[0]->elements, 2);
    assert_int_equal(rep[0]->element[0]->len, sizes[0]);
    assert_memory_equal(rep[0]->element[0]->str, v[0], sizes[0]);
    assert_int_equal(rep[0]->element[1]->type, REDIS_REPLY_NIL);
    assert_int_equal(rep[1]->len, sizes[1]);
    assert_memory_equal(rep[1]->str, v[1], sizes[1]);
    assert_int_equal(rep[2]->type, REDIS_REPLY_INTEGER);
    assert_int_equal(rep[2]->integer, -1);
    assert_int_equal(rep[3]->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep[3]->elements, 4);
    assert_int_equal(rep[3]->element[0]->integer, 1);
    assert_string_equal(rep[3]->element[1]->str, "two");
    assert_int_equal(rep[3]->element[2]->element[0]->type, REDIS_REPLY_NIL);
    assert_int_equal(rep[3]->element[2]->element[1]->integer, 3);
    assert_int_equal(rep[3]->element[3]->type, REDIS_REPLY_STATUS);
    assert_string_equal(rep[3]->element[3]->str, "OK");
    assert_int_equal(rep[4]->len, sizes[2]);
    assert_memory_equal(rep[4]->str, v[2], sizes[2]);
    assert_int_equal(rep[5]->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(rep[5]->str, "unknown command"));
    assert_int_equal(rep[6]->type, REDIS_REPLY_STATUS);
    assert_string_equal(rep[6]->str, "PONG");
    vg_redis_free_replies(rep, N);
    /* The connection is still in step: the next round trip reads its own reply. */
    expect(f->kv, "t:none", NULL);
    for (int i = 0; i < 3; i++)
        free(v[i]);
}

static void test_ttl(void **state)
{
    fx *f = *state;
    uint64_t t0 = vg_clock_ms();
    put(f->kv, "t:ttl", "v", 60000);
    put(f->kv, "t:forever", "v", 0);
    vg_buf b = {0};
    uint64_t exp = 1;
    assert_int_equal(vg_kv_get(f->kv, "t:ttl", 5, &b, &exp), VG_OK);
    assert_true(exp >= t0 + 59000 && exp <= vg_clock_ms() + 60000);
    assert_int_equal(vg_kv_get(f->kv, "t:forever", 9, &b, &exp), VG_OK);
    assert_int_equal(exp, 0);
    vg_buf_free(&b);
    put(f->kv, "t:short", "v", 40);
    sleep_ms(120);
    expect(f->kv, "t:short", NULL);
    uint64_t removed = 7;
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(removed, 0);
}

static void test_batch_in_order(void **state)
{
    fx *f = *state;
    put(f->kv, "b:old", "old", 0);
    vg_kv_op ops[] = {
        {.type = VG_KV_GET, .key = "b:old", .klen = 5},
        {.type = VG_KV_SET, .key = "b:new", .klen = 5, .val = "fresh", .vlen = 5, .ttl_ms = 5000},
        {.type = VG_KV_GET, .key = "b:new", .klen = 5},
        {.type = VG_KV_DEL, .key = "b:old", .klen = 5},
        {.type = VG_KV_GET, .key = "b:old", .klen = 5},
        {.type = VG_KV_DEL, .key = "b:none", .klen = 6},
        {.type = VG_KV_GET, .key = "", .klen = 0},
    };
    assert_int_equal(vg_kv_batch(f->kv, ops, 7), VG_OK);
    assert_int_equal(ops[0].rc, VG_OK);
    assert_memory_equal(ops[0].out.data, "old", 3);
    assert_int_equal(ops[1].rc, VG_OK);
    assert_int_equal(ops[2].rc, VG_OK);
    assert_memory_equal(ops[2].out.data, "fresh", 5);
    assert_true(ops[2].expires_at_ms > vg_clock_ms());
    assert_int_equal(ops[3].rc, VG_OK);
    assert_int_equal(ops[4].rc, VG_NOTFOUND);
    assert_int_equal(ops[5].rc, VG_NOTFOUND);
    assert_int_equal(ops[6].rc, VG_EINVAL);
    for (size_t i = 0; i < 7; i++)
        vg_buf_free(&ops[i].out);
}

typedef struct visit {
    vg_kv *kv;
    size_t n, stop_after;
    bool del;
    char seen[2000];
} visit;

static int on_key(void *ud, const char *k, size_t kl, const void *v, size_t vl)
{
    visit *vs = ud;
    assert_true(kl > 4 && memcmp(k, "s:a:", 4) == 0);
    int i = atoi(k + 4);
    assert_true(i >= 0 && i < 2000);
    char want[16];
    snprintf(want, sizeof want, "v%d", i);
    assert_int_equal(vl, strlen(want));
    assert_memory_equal(v, want, vl);
    vs->seen[i]++;
    if (vs->del) /* calling back into the same kv from the callback */
        assert_int_equal(vg_kv_del(vs->kv, k, kl), VG_OK);
    return ++vs->n == vs->stop_after;
}

static int count_key(void *ud, const char *k, size_t kl, const void *v, size_t vl)
{
    assert_int_equal(kl, 4);
    assert_memory_equal(k, "s:a*", 4);
    (*(size_t *)ud)++;
    return 0;
}

static void test_scan_prefix(void **state)
{
    fx *f = *state;
    enum { N = 1300 };
    vg_kv_op *ops = calloc(N + 3, sizeof *ops);
    char (*keys)[16] = calloc(N, 16), (*vals)[16] = calloc(N, 16);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], 16, "s:a:%d", i);
        snprintf(vals[i], 16, "v%d", i);
        ops[i] = (vg_kv_op){.type = VG_KV_SET, .key = keys[i], .klen = strlen(keys[i]),
                            .val = vals[i], .vlen = strlen(vals[i])};
    }
    assert_int_equal(vg_kv_batch(f->kv, ops, N), VG_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(ops[i].rc, VG_OK);
    /* Neighbours that must not be visited: another prefix, a glob-looking one. */
    put(f->kv, "s:ab:1", "x", 0);
    put(f->kv, "s:b:1", "x", 0);
    put(f->kv, "s*a:1", "x", 0);

    visit vs = {.kv = f->kv, .stop_after = 10};
    assert_int_equal(vg_kv_scan(f->kv, "s:a:", 4, on_key, &vs), VG_OK);
    assert_int_equal(vs.n, 10); /* stopped when asked */

    memset(&vs, 0, sizeof vs);
    vs.kv = f->kv;
    assert_int_equal(vg_kv_scan(f->kv, "s:a:", 4, on_key, &vs), VG_OK);
    for (int i = 0; i < N; i++)
        assert_true(vs.seen[i] >= 1);
    assert_true(vs.n >= N);

    memset(&vs, 0, sizeof vs);
    vs.kv = f->kv;
    vs.del = true;
    assert_int_equal(vg_kv_scan(f->kv, "s:a:", 4, on_key, &vs), VG_OK);
    memset(&vs, 0, sizeof vs);
    assert_int_equal(vg_kv_scan(f->kv, "s:a:", 4, on_key, &vs), VG_OK);
    assert_int_equal(vs.n, 0);
    expect(f->kv, "s:ab:1", "x");
    expect(f->kv, "s:b:1", "x");
    expect(f->kv, "s*a:1", "x");
    /* A '*' in the prefix is literal, not a glob. */
    put(f->kv, "s:a*", "v1", 0);
    put(f->kv, "s:a:x", "v1", 0);
    size_t n = 0;
    assert_int_equal(vg_kv_scan(f->kv, "s:a*", 4, count_key, &n), VG_OK);
    assert_int_equal(n, 1);
    free(ops);
    free(keys);
    free(vals);
}

static void test_auth_select(void **state)
{
    (void)state;
    fx f = {0};
    f.srv.port = free_port();
    server_start(&f.srv, "pa:ss@word");
    char url[128];
    snprintf(url, sizeof url, "redis://default:pa%%3Ass%%40word@127.0.0.1:%d/3", f.srv.port);
    open_client(&f, url);
    put(f.kv, "auth:k", "in-db-3", 0);
    expect(f.kv, "auth:k", "in-db-3");
    /* Check from outside that it went to db 3. */
    redisContext *c = redisConnect("127.0.0.1", f.srv.port);
    redisReply *rep = redisCommand(c, "AUTH pa:ss@word");
    freeReplyObject(rep);
    rep = redisCommand(c, "EXISTS auth:k");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET auth:k");
    assert_string_equal(rep->str, "in-db-3");
    freeReplyObject(rep);
    redisFree(c);
    vg_kv_close(f.kv);
    vg_redis_close(f.r);
    /* A wrong password makes the store unavailable, not half-working. */
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", f.srv.port);
    open_client(&f, url);
    assert_int_equal(vg_kv_ping(f.kv), VG_EUNAVAIL);
    vg_kv_close(f.kv);
    vg_redis_close(f.r);
    server_stop(&f.srv);
}

static void test_unix_socket(void **state)
{
    (void)state;
    fx f = {0};
    f.srv.port = free_port();
    snprintf(f.srv.sock, sizeof f.srv.sock, "/tmp/vg-redis-%d.sock", (int)getpid());
    server_start(&f.srv, NULL);
    char url[128];
    snprintf(url, sizeof url, "unix://%s?db=2", f.srv.sock);
    open_client(&f, url);
    put(f.kv, "u:k", "via-unix", 0);
    expect(f.kv, "u:k", "via-unix");
    vg_kv_close(f.kv);
    vg_redis_close(f.r);
    server_stop(&f.srv);
    unlink(f.srv.sock);
}

static void *worker(void *ud)
{
    vg_kv *kv = ud;
    char k[32], v[32];
    snprintf(k, sizeof k, "thr:%lx", (unsigned long)pthread_self());
    for (int i = 0; i < 200; i++) {
        snprintf(v, sizeof v, "%d", i);
        if (vg_kv_set(kv, k, strlen(k), v, strlen(v), 0) != VG_OK)
            return (void *)1;
        vg_buf b = {0};
        int rc = vg_kv_get(kv, k, strlen(k), &b, NULL);
        bool ok = rc == VG_OK && b.len == strlen(v) && !memcmp(b.data, v, b.len);
        vg_buf_free(&b);
        if (!ok)
            return (void *)1;
    }
    return NULL;
}

static void test_threads_own_connections(void **state)
{
    fx *f = *state;
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, worker, f->kv);
    for (int i = 0; i < 8; i++) {
        void *res;
        pthread_join(t[i], &res);
        assert_null(res);
    }
    vg_redis_stats st;
    vg_redis_stats_get(f->r, &st);
    assert_true(st.connects >= 8);
    assert_int_equal(st.failures, 0);
    assert_true(st.up);
}

/* Poll until the kv answers again; returns the ms it took. */
static uint64_t wait_recovered(vg_kv *kv, uint64_t limit_ms)
{
    uint64_t t0 = now_ms();
    while (vg_kv_ping(kv) != VG_OK) {
        if (now_ms() - t0 > limit_ms)
            fail_msg("no recovery within %llu ms", (unsigned long long)limit_ms);
        sleep_ms(10);
    }
    return now_ms() - t0;
}

static void test_killed_then_restarted(void **state)
{
    fx *f = *state;
    put(f->kv, "k:1", "v", 0);
    server_stop(&f->srv);
    uint64_t t0 = now_ms();
    vg_buf b = {0};
    assert_int_equal(vg_kv_get(f->kv, "k:1", 3, &b, NULL), VG_EUNAVAIL);
    assert_int_equal(vg_kv_set(f->kv, "k:2", 3, "v", 1, 0), VG_EUNAVAIL);
    assert_int_equal(vg_kv_ping(f->kv), VG_EUNAVAIL);
    assert_true(now_ms() - t0 < 2 * CMD_TIMEOUT_MS);
    vg_redis_stats st;
    vg_redis_stats_get(f->r, &st);
    assert_false(st.up);
    assert_true(st.failures >= 1);
    vg_kv_stats ks;
    vg_kv_stats_get(f->kv, &ks);
    assert_true(ks.errors >= 2);
    server_start(&f->srv, NULL);
    wait_recovered(f->kv, 2000);
    put(f->kv, "k:3", "back", 0);
    expect(f->kv, "k:3", "back");
    vg_redis_stats_get(f->r, &st);
    assert_true(st.up);
    assert_true(st.reconnects >= 1);
    vg_buf_free(&b);
}

static void test_restart_between_calls_is_transparent(void **state)
{
    fx *f = *state;
    put(f->kv, "r:1", "v", 0);
    server_stop(&f->srv);
    server_start(&f->srv, NULL);
    /* The old socket was closed by the server; a read retries once on a
     * fresh connection instead of failing. */
    expect(f->kv, "r:1", NULL);
}

static void test_hung_server_times_out(void **state)
{
    fx *f = *state;
    put(f->kv, "h:1", "v", 0);
    kill(f->srv.pid, SIGSTOP);
    uint64_t t0 = now_ms();
    vg_buf b = {0};
    assert_int_equal(vg_kv_get(f->kv, "h:1", 3, &b, NULL), VG_EUNAVAIL);
    uint64_t took = now_ms() - t0;
    assert_true(took >= CMD_TIMEOUT_MS / 2 && took < CMD_TIMEOUT_MS * 3);
    /* During the pause every call fails at once. */
    t0 = now_ms();
    for (int i = 0; i < 20; i++)
        assert_int_equal(vg_kv_get(f->kv, "h:1", 3, &b, NULL), VG_EUNAVAIL);
    assert_true(now_ms() - t0 < 50 + CMD_TIMEOUT_MS * 2);
    kill(f->srv.pid, SIGCONT);
    wait_recovered(f->kv, 2000);
    expect(f->kv, "h:1", "v");
    vg_buf_free(&b);
}

/* The same checks, back to back, on the in-process and the Redis
 * limiter: every decision and remaining count agree, and the times agree
 * within the few ms the two clocks (ours, Redis's TIME) may differ. */
static void test_limiter_lua_matches_c(void **state)
{
    fx *f = *state;
    vg_limiter *mem, *rl;
    assert_int_equal(vg_limiter_mem_new(100, &mem), VG_OK);
    assert_int_equal(vg_limiter_redis_new(f->r, "t", &rl), VG_OK);
    static const struct { vg_rl_algo a; uint64_t limit, win, cost; bool peek; } seq[] = {
        {VG_RL_SLIDING_LOG, 5, 60000, 1, false}, {VG_RL_SLIDING_LOG, 5, 60000, 3, false},
        {VG_RL_SLIDING_LOG, 5, 60000, 1, true},  {VG_RL_SLIDING_LOG, 5, 60000, 2, false},
        {VG_RL_SLIDING_LOG, 5, 60000, 1, false}, {VG_RL_SLIDING_LOG, 5, 60000, 1, true},
        {VG_RL_GCRA, 4, 60000, 1, false},        {VG_RL_GCRA, 4, 60000, 2, false},
        {VG_RL_GCRA, 4, 60000, 1, true},         {VG_RL_GCRA, 4, 60000, 2, false},
        {VG_RL_GCRA, 4, 60000, 1, false},        {VG_RL_GCRA, 4, 60000, 1, false},
        {VG_RL_GCRA, 3, 1000, 3, false},
    };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        const char *key = seq[i].limit == 3 ? "other" : "k";
        vg_rl_req rq = {.key = key, .klen = strlen(key), .limit = seq[i].limit,
                        .window_ms = seq[i].win, .cost = seq[i].cost, .algo = seq[i].a,
                        .peek = seq[i].peek};
        vg_rl_result m, r;
        assert_int_equal(vg_limiter_check(mem, &rq, &m), VG_OK);
        assert_int_equal(vg_limiter_check(rl, &rq, &r), VG_OK);
        if (m.allowed != r.allowed || m.remaining != r.remaining || m.limit != r.limit)
            fail_msg("step %zu: C allowed=%d remaining=%llu, Lua allowed=%d remaining=%llu", i,
                     m.allowed, (unsigned long long)m.remaining, r.allowed,
                     (unsigned long long)r.remaining);
        assert_true(llabs((long long)m.reset_ms - (long long)r.reset_ms) <= 50);
        assert_true(llabs((long long)m.retry_after_ms - (long long)r.retry_after_ms) <= 50);
    }
    /* A policy's state is apart from the ad-hoc one, in Redis too. */
    vg_rl_req pq = {.key = "k", .klen = 1, .limit = 5, .window_ms = 60000, .cost = 5,
                    .ns = "pol"};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(rl, &pq, &res), VG_OK);
    assert_true(res.allowed);
    assert_int_equal(vg_limiter_clear(rl, "pol", "k", 1), VG_OK);
    assert_int_equal(vg_limiter_clear(rl, "pol", "k", 1), VG_NOTFOUND);
    /* NOSCRIPT: the script cache is gone; the next check loads it again. */
    redisContext *c = redisConnect("127.0.0.1", f->srv.port);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    redisFree(c);
    pq.cost = 1;
    assert_int_equal(vg_limiter_check(rl, &pq, &res), VG_OK);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 4);
    /* Redis down: the caller gets VG_EUNAVAIL and applies its fail mode. */
    server_stop(&f->srv);
    assert_int_equal(vg_limiter_check(rl, &pq, &res), VG_EUNAVAIL);
    vg_limiter_close(rl);
    vg_limiter_close(mem);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    for (uint32_t n = 1; n < 40; n++) {
        uint64_t d = 100;
        for (uint32_t i = 1; i < n && d < 5000; i++)
            d *= 2;
        if (d > 5000)
            d = 5000;
        uint64_t lo = vg_redis_backoff_ms(100, 5000, n, 0);
        uint64_t hi = vg_redis_backoff_ms(100, 5000, n, UINT32_MAX);
        assert_int_equal(lo, d - d / 2);
        assert_true(hi <= d && hi >= d - 1);
    }
    assert_int_equal(vg_redis_backoff_ms(100, 5000, 1000000, UINT32_MAX) <= 5000, 1);
}

int main(void)
{
    /* As voxgate's main does: a write to a socket Redis closed must be an
     * error (EPIPE), not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_values_and_reply_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_prefix, setup, teardown),
        cmocka_unit_test(test_auth_select),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test_setup_teardown(test_threads_own_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_then_restarted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_between_calls_is_transparent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hung_server_times_out, setup, teardown),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test_setup_teardown(test_limiter_lua_matches_c, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
