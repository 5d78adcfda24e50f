/* Unit tests for the Redis client's event thread (vg_redis_submit) and
 * the non-blocking kv get and limiter check on it, against a real
 * redis-server this file starts on a free loopback port: many threads
 * submitting at once each get their own replies, in order, pipelined on
 * one connection; a SIGSTOPped Redis completes every queued submission
 * with VG_EUNAVAIL within about one command timeout; NOSCRIPT is reloaded;
 * close completes what is still queued. */
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

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->srv.port = free_port();
    server_start(&f->srv, NULL);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->srv.port);
    vg_redis_opts o = {.url = url, .connect_timeout_ms = 300,
                       .command_timeout_ms = CMD_TIMEOUT_MS, .backoff_base_ms = 50,
                       .backoff_max_ms = 200};
    char err[160];
    assert_int_equal(vg_redis_open(&o, &f->r, err, sizeof err), VG_OK);
    assert_int_equal(vg_kv_redis_open(f->r, &f->kv), VG_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    vg_redis_close(f->r); /* first: drains the loop, whose callbacks use kv */
    vg_kv_close(f->kv);
    server_stop(&f->srv);
    free(f);
    return 0;
}

/* A completion the test waits for. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
} waiter;

static void wait_init(waiter *w, int n)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->pending = n;
}

static void wait_one(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    if (--w->pending == 0)
        pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_all(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

/* ---- many submitters, one pipeline ---- */

#define THREADS 8
#define PER_THREAD 500

typedef struct get_slot {
    waiter *w;
    int rc;
    char want[32];
    bool ok;
    uint64_t done_ms;
} get_slot;

static void on_get(void *ud, int rc, vg_buf *val, uint64_t exp)
{
    get_slot *s = ud;
    s->rc = rc;
    s->ok = rc == VG_OK && val->len == strlen(s->want) && !memcmp(val->data, s->want, val->len) &&
            exp > 0;
    s->done_ms = now_ms();
    wait_one(s->w);
}

typedef struct submitter {
    fx *f;
    int id;
    waiter *w;
    get_slot *slots;
} submitter;

static void *submit_many(void *ud)
{
    submitter *sb = ud;
    for (int i = 0; i < PER_THREAD; i++) {
        get_slot *s = &sb->slots[i];
        char key[32];
        int k = (sb->id * PER_THREAD + i) % 100;
        snprintf(key, sizeof key, "a:%d", k);
        snprintf(s->want, sizeof s->want, "value-%d", k);
        s->w = sb->w;
        s->rc = 99;
        assert_int_equal(vg_kv_get_async(sb->f->kv, key, strlen(key), on_get, s), VG_OK);
    }
    return NULL;
}

static void test_concurrent_gets_each_get_their_value(void **state)
{
    fx *f = *state;
    assert_true(vg_kv_has_async(f->kv));
    for (int k = 0; k < 100; k++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "a:%d", k);
        snprintf(val, sizeof val, "value-%d", k);
        assert_int_equal(vg_kv_set(f->kv, key, strlen(key), val, strlen(val), 60000), VG_OK);
    }
    vg_redis_stats before;
    vg_redis_stats_get(f->r, &before);
    waiter w;
    wait_init(&w, THREADS * PER_THREAD);
    static get_slot slots[THREADS][PER_THREAD];
    submitter sb[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        sb[i] = (submitter){.f = f, .id = i, .w = &w, .slots = slots[i]};
        assert_int_equal(pthread_create(&t[i], NULL, submit_many, &sb[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    wait_all(&w);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++)
            if (!slots[i][j].ok)
                fail_msg("thread %d get %d: rc %d", i, j, slots[i][j].rc);
    /* One connection for the loop (and this thread's, for the sets). */
    vg_redis_stats after;
    vg_redis_stats_get(f->r, &after);
    assert_true(after.connects - before.connects <= 1);
    /* A missing key is VG_NOTFOUND, not an error. */
    waiter w2;
    wait_init(&w2, 1);
    get_slot miss = {.w = &w2};
    assert_int_equal(vg_kv_get_async(f->kv, "a:none", 6, on_get, &miss), VG_OK);
    wait_all(&w2);
    assert_int_equal(miss.rc, VG_NOTFOUND);
}

/* Raw submissions keep their own commands and replies, in order. */
typedef struct raw_slot {
    waiter *w;
    int rc;
    long long incr[2];
} raw_slot;

static void on_raw(void *ud, int rc, redisReply **rep, size_t n)
{
    raw_slot *s = ud;
    s->rc = rc;
    for (size_t i = 0; rc == VG_OK && i < n && i < 2; i++)
        s->incr[i] = rep[i]->type == REDIS_REPLY_INTEGER ? rep[i]->integer : -1;
    wait_one(s->w);
}

static void test_submissions_in_order(void **state)
{
    fx *f = *state;
    enum { N = 300 };
    static raw_slot s[N];
    waiter w;
    wait_init(&w, N);
    for (int i = 0; i < N; i++) {
        s[i] = (raw_slot){.w = &w, .rc = 99};
        /* Two commands per submission: INCR then INCRBY 1000. */
        vg_redis_cmd cmds[2] = {
            {.argc = 2, .argv = (const char *[]){"INCR", "ord"}, .argvlen = NULL},
            {.argc = 3, .argv = (const char *[]){"INCRBY", "ord", "1000"}, .argvlen = NULL},
        };
        assert_int_equal(vg_redis_submit(f->r, cmds, 2, true, on_raw, &s[i]), VG_OK);
    }
    wait_all(&w);
    for (int i = 0; i < N; i++) {
        assert_int_equal(s[i].rc, VG_OK);
        assert_int_equal(s[i].incr[0], (long long)i * 1001 + 1);
        assert_int_equal(s[i].incr[1], (long long)i * 1001 + 1001);
    }
}

/* A submission completes when its own replies are read, not when the
 * whole pipeline is: a GET that goes out in one round trip with a BLPOP
 * is answered while the BLPOP still blocks. The first BLPOP keeps the
 * loop busy so that the other two are queued together; the test thread
 * releases each BLPOP with an LPUSH on its own connection. */
typedef struct timed_slot {
    waiter *w;
    int rc;
    uint64_t done_ms;
} timed_slot;

static void on_timed(void *ud, int rc, redisReply **rep, size_t n)
{
    timed_slot *s = ud;
    s->rc = rc;
    s->done_ms = now_ms();
    wait_one(s->w);
}

static void lpush(vg_redis *r, const char *list)
{
    vg_redis_cmd c = {.argc = 3, .argv = (const char *[]){"LPUSH", list, "x"}};
    redisReply *rep;
    assert_int_equal(vg_redis_pipeline(r, &c, 1, &rep, false), VG_OK);
    vg_redis_free_replies(&rep, 1);
}

static void test_each_completes_on_its_replies(void **state)
{
    fx *f = *state;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->srv.port);
    /* A command timeout far above the test's pauses. */
    vg_redis_opts o = {.url = url, .connect_timeout_ms = 1000, .command_timeout_ms = 5000,
                       .backoff_base_ms = 50, .backoff_max_ms = 200};
    vg_redis *r;
    char err[160];
    assert_int_equal(vg_redis_open(&o, &r, err, sizeof err), VG_OK);
    timed_slot s[3];
    waiter w;
    wait_init(&w, 3);
    vg_redis_cmd cmds[3] = {
        {.argc = 3, .argv = (const char *[]){"BLPOP", "q0", "5"}},
        {.argc = 2, .argv = (const char *[]){"GET", "nothing"}},
        {.argc = 3, .argv = (const char *[]){"BLPOP", "q2", "5"}},
    };
    for (int i = 0; i < 3; i++) {
        s[i] = (timed_slot){.w = &w, .rc = 99};
        assert_int_equal(vg_redis_submit(r, &cmds[i], 1, true, on_timed, &s[i]), VG_OK);
    }
    sleep_ms(30);
    lpush(r, "q0");
    sleep_ms(200);
    uint64_t released = now_ms();
    lpush(r, "q2");
    wait_all(&w);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i].rc, VG_OK);
    assert_true(s[1].done_ms < released);
    assert_true(s[2].done_ms >= released);
    vg_redis_close(r);
}

/* ---- a hung Redis ---- */

static void test_sigstop_fails_within_timeout(void **state)
{
    fx *f = *state;
    assert_int_equal(vg_kv_set(f->kv, "h", 1, "v", 1, 0), VG_OK);
    kill(f->srv.pid, SIGSTOP);
    enum { N = 200 };
    static get_slot s[N];
    waiter w;
    wait_init(&w, N);
    uint64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        s[i] = (get_slot){.w = &w, .rc = 99};
        snprintf(s[i].want, sizeof s[i].want, "v");
        assert_int_equal(vg_kv_get_async(f->kv, "h", 1, on_get, &s[i]), VG_OK);
        if (i % 50 == 49)
            sleep_ms(CMD_TIMEOUT_MS / 3); /* some arrive while a round trip hangs */
    }
    wait_all(&w);
    for (int i = 0; i < N; i++) {
        assert_int_equal(s[i].rc, VG_EUNAVAIL);
        /* Each waited at most about one command timeout after it was queued. */
        assert_true(s[i].done_ms - t0 < (uint64_t)(i / 50) * (CMD_TIMEOUT_MS / 3) +
                                              CMD_TIMEOUT_MS * 2 + 100);
    }
    kill(f->srv.pid, SIGCONT);
    /* Recovers by itself after the backoff pause. */
    uint64_t deadline = now_ms() + 3000;
    for (;;) {
        waiter w2;
        wait_init(&w2, 1);
        get_slot g = {.w = &w2};
        snprintf(g.want, sizeof g.want, "v");
        assert_int_equal(vg_kv_get_async(f->kv, "h", 1, on_get, &g), VG_OK);
        wait_all(&w2);
        /* Both ways again: the event thread's and this thread's own
         * connection (redialled, as the outage made it stale). */
        vg_buf b = {0};
        bool sync_ok = g.rc == VG_OK && vg_kv_get(f->kv, "h", 1, &b, NULL) == VG_OK;
        vg_buf_free(&b);
        if (sync_ok)
            break;
        assert_true(now_ms() < deadline);
        sleep_ms(20);
    }
}

/* ---- the limiter ---- */

typedef struct rl_slot {
    waiter *w;
    int rc;
    vg_rl_result res;
} rl_slot;

static void on_check(void *ud, int rc, const vg_rl_result *res)
{
    rl_slot *s = ud;
    s->rc = rc;
    s->res = *res;
    wait_one(s->w);
}

static void test_async_checks_and_noscript(void **state)
{
    fx *f = *state;
    vg_limiter *rl;
    assert_int_equal(vg_limiter_redis_new(f->r, "t", &rl), VG_OK);
    assert_true(vg_limiter_has_async(rl));
    enum { N = 120, L = 50 };
    static rl_slot s[N];
    for (int round = 0; round < 2; round++) {
        /* Round 1 runs on an empty script cache: every check meets NOSCRIPT. */
        redisContext *c = redisConnect("127.0.0.1", f->srv.port);
        freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
        redisFree(c);
        waiter w;
        wait_init(&w, N);
        char key[16];
        snprintf(key, sizeof key, "k%d", round);
        for (int i = 0; i < N; i++) {
            s[i] = (rl_slot){.w = &w, .rc = 99};
            vg_rl_req rq = {.key = key, .klen = strlen(key), .limit = L, .window_ms = 60000,
                            .cost = 1, .algo = round ? VG_RL_GCRA : VG_RL_SLIDING_LOG};
            assert_int_equal(vg_limiter_check_async(rl, &rq, on_check, &s[i]), VG_OK);
        }
        wait_all(&w);
        int allowed = 0;
        for (int i = 0; i < N; i++) {
            assert_int_equal(s[i].rc, VG_OK);
            assert_int_equal(s[i].res.limit, L);
            allowed += s[i].res.allowed;
        }
        assert_int_equal(allowed, L);
    }
    /* Out of bounds: refused at once, the callback never runs. */
    vg_rl_req bad = {.key = "k", .klen = 1, .limit = 0, .window_ms = 1, .cost = 1};
    assert_int_equal(vg_limiter_check_async(rl, &bad, on_check, NULL), VG_EINVAL);
    vg_limiter_close(rl);
}

/* Close with submissions still queued: each completes (no leak, no hang). */
static void test_close_completes_queued(void **state)
{
    fx *f = *state;
    kill(f->srv.pid, SIGSTOP);
    enum { N = 50 };
    static get_slot s[N];
    waiter w;
    wait_init(&w, N);
    for (int i = 0; i < N; i++) {
        s[i] = (get_slot){.w = &w, .rc = 99};
        assert_int_equal(vg_kv_get_async(f->kv, "x", 1, on_get, &s[i]), VG_OK);
    }
    uint64_t t0 = now_ms();
    vg_redis_close(f->r);
    f->r = NULL;
    assert_true(now_ms() - t0 < CMD_TIMEOUT_MS * 3 + 200);
    wait_all(&w);
    for (int i = 0; i < N; i++)
        assert_int_equal(s[i].rc, VG_EUNAVAIL);
    kill(f->srv.pid, SIGCONT);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_concurrent_gets_each_get_their_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submissions_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_completes_on_its_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigstop_fails_within_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_checks_and_noscript, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_queued, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
