/* Unit tests for the rate-limit arithmetic and the in-process backend,
 * with an injected clock: the edges of the sliding window, cost > 1,
 * retry_after and reset, GCRA's emission interval and burst, peeks that
 * consume nothing, clear, input bounds and the key bound. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "voxgate/limiter.h"

#define T0 1700000000000ull

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }

static int setup(void **state)
{
    fake_now = T0;
    vg_clock_ms = fake_clock;
    vg_limiter *l;
    assert_int_equal(vg_limiter_mem_new(1000, &l), VG_OK);
    *state = l;
    return 0;
}

static int teardown(void **state)
{
    vg_limiter_close(*state);
    return 0;
}

static vg_rl_result check(vg_limiter *l, const char *key, uint64_t limit, uint64_t win,
                          uint64_t cost, vg_rl_algo a, bool peek)
{
    vg_rl_req rq = {.key = key, .klen = strlen(key), .limit = limit, .window_ms = win,
                    .cost = cost, .algo = a, .peek = peek};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_int_equal(res.limit, limit);
    return res;
}

#define SL(l, k, lim, w, c) check(l, k, lim, w, c, VG_RL_SLIDING_LOG, false)
#define GC(l, k, lim, w, c) check(l, k, lim, w, c, VG_RL_GCRA, false)

static void test_sliding_window_edges(void **state)
{
    vg_limiter *l = *state;
    /* 3 per 1000 ms: three at t0, t0+100, t0+200. */
    vg_rl_result r = SL(l, "k", 3, 1000, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
    assert_int_equal(r.reset_ms, 1000);
    fake_now += 100;
    assert_true(SL(l, "k", 3, 1000, 1).allowed);
    fake_now += 100;
    r = SL(l, "k", 3, 1000, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ms, 1000); /* the newest leaves at t0+1200 */
    /* Full: the first entry leaves at exactly t0 + 1000. */
    fake_now = T0 + 999;
    r = SL(l, "k", 3, 1000, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 1);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ms, 201);
    fake_now = T0 + 1000;
    r = SL(l, "k", 3, 1000, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* A denied check logged nothing: after t0+1200 two slots are free. */
    fake_now = T0 + 1200;
    r = SL(l, "k", 3, 1000, 2);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
}

static void test_sliding_cost(void **state)
{
    vg_limiter *l = *state;
    assert_true(SL(l, "c", 10, 1000, 4).allowed);  /* 4 at t0 */
    fake_now += 300;
    assert_true(SL(l, "c", 10, 1000, 5).allowed);  /* 9 */
    vg_rl_result r = SL(l, "c", 10, 1000, 2);       /* 11 > 10 */
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 1);
    /* Room for 2 more comes when the 4 from t0 leave, at t0 + 1000. */
    assert_int_equal(r.retry_after_ms, 700);
    r = SL(l, "c", 10, 1000, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* Same-millisecond checks each count. */
    fake_now = T0 + 5000;
    for (int i = 0; i < 10; i++)
        assert_true(SL(l, "same-ms", 10, 1000, 1).allowed);
    assert_false(SL(l, "same-ms", 10, 1000, 1).allowed);
    /* cost == limit is fine; the caller refuses cost > limit. */
    assert_true(SL(l, "whole", 5, 1000, 5).allowed);
    vg_rl_req rq = {.key = "x", .klen = 1, .limit = 5, .window_ms = 1000, .cost = 6};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_EINVAL);
}

static void test_gcra(void **state)
{
    vg_limiter *l = *state;
    /* 10 per second: T = 100 ms, burst 10. */
    for (int i = 0; i < 10; i++) {
        vg_rl_result r = GC(l, "g", 10, 1000, 1);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, (uint64_t)(9 - i));
        assert_int_equal(r.reset_ms, (uint64_t)(100 * (i + 1)));
    }
    vg_rl_result r = GC(l, "g", 10, 1000, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 100);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ms, 1000);
    fake_now += 99;
    assert_false(GC(l, "g", 10, 1000, 1).allowed);
    fake_now += 1;
    r = GC(l, "g", 10, 1000, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* Steady rate: one every T is always allowed. */
    for (int i = 0; i < 50; i++) {
        fake_now += 100;
        assert_true(GC(l, "g", 10, 1000, 1).allowed);
    }
    /* Cost: 3 units need 300 ms of credit. */
    fake_now += 250;
    r = GC(l, "g", 10, 1000, 3);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 50);
    fake_now += 50;
    assert_true(GC(l, "g", 10, 1000, 3).allowed);
    /* Idle for a window: the full burst is back. */
    fake_now += 1000;
    r = GC(l, "g", 10, 1000, 10);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
}

static void test_gcra_fractional_interval(void **state)
{
    vg_limiter *l = *state;
    /* 3 per 1000 ms: T = 333.33 ms. */
    for (int i = 0; i < 3; i++)
        assert_true(GC(l, "f", 3, 1000, 1).allowed);
    vg_rl_result r = GC(l, "f", 3, 1000, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 334);
    fake_now += 333;
    assert_false(GC(l, "f", 3, 1000, 1).allowed);
    fake_now += 1;
    assert_true(GC(l, "f", 3, 1000, 1).allowed);
}

static void test_peek_consumes_nothing(void **state)
{
    vg_limiter *l = *state;
    for (int a = 0; a < 2; a++) {
        const char *k = a ? "pg" : "ps";
        vg_rl_result r = check(l, k, 2, 1000, 1, (vg_rl_algo)a, true);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 2);
        assert_int_equal(r.reset_ms, 0);
        for (int i = 0; i < 5; i++)
            assert_int_equal(check(l, k, 2, 1000, 1, (vg_rl_algo)a, true).remaining, 2);
        assert_true(check(l, k, 2, 1000, 1, (vg_rl_algo)a, false).allowed);
        r = check(l, k, 2, 1000, 1, (vg_rl_algo)a, true);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 1);
        assert_true(check(l, k, 2, 1000, 1, (vg_rl_algo)a, false).allowed);
        r = check(l, k, 2, 1000, 1, (vg_rl_algo)a, true);
        assert_false(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_true(r.retry_after_ms > 0);
    }
}

static void test_clear_and_independent_keys(void **state)
{
    vg_limiter *l = *state;
    assert_true(SL(l, "a", 1, 60000, 1).allowed);
    assert_false(SL(l, "a", 1, 60000, 1).allowed);
    assert_true(SL(l, "b", 1, 60000, 1).allowed);     /* another key */
    assert_true(GC(l, "a", 1, 60000, 1).allowed);     /* another algorithm */
    assert_int_equal(vg_limiter_clear(l, NULL, "a", 1), VG_OK);
    assert_int_equal(vg_limiter_clear(l, NULL, "a", 1), VG_NOTFOUND);
    assert_true(SL(l, "a", 1, 60000, 1).allowed);
    assert_true(GC(l, "a", 1, 60000, 1).allowed);
    assert_false(SL(l, "b", 1, 60000, 1).allowed);
}

static void test_bounds(void **state)
{
    vg_limiter *l = *state;
    char longkey[VG_RL_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey);
    struct { const char *key; size_t klen; uint64_t limit, win, cost; } bad[] = {
        {"", 0, 1, 1, 1},
        {longkey, VG_RL_KEY_MAX + 1, 1, 1, 1},
        {"a\nb", 3, 1, 1, 1},
        {"a\x7f", 2, 1, 1, 1},
        {"k", 1, 0, 1000, 1},
        {"k", 1, VG_RL_LIMIT_MAX + 1, 1000, 1},
        {"k", 1, 1, 0, 1},
        {"k", 1, 1, VG_RL_WINDOW_MAX_MS + 1, 1},
        {"k", 1, 2, 1000, 0},
        {"k", 1, 2, 1000, 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vg_rl_req rq = {.key = bad[i].key, .klen = bad[i].klen, .limit = bad[i].limit,
                        .window_ms = bad[i].win, .cost = bad[i].cost};
        vg_rl_result res;
        if (vg_limiter_check(l, &rq, &res) != VG_EINVAL)
            fail_msg("bad request %zu accepted", i);
    }
    vg_rl_req ok = {.key = longkey, .klen = VG_RL_KEY_MAX, .limit = VG_RL_LIMIT_MAX,
                    .window_ms = VG_RL_WINDOW_MAX_MS, .cost = VG_RL_LIMIT_MAX};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(l, &ok, &res), VG_OK);
    assert_true(res.allowed);
    vg_rl_algo a;
    assert_true(vg_rl_algo_parse("gcra", &a) && a == VG_RL_GCRA);
    assert_true(vg_rl_algo_parse("sliding_log", &a) && a == VG_RL_SLIDING_LOG);
    assert_false(vg_rl_algo_parse("token_bucket", &a));
}

static void test_key_bound_reclaims_expired(void **state)
{
    (void)state;
    vg_limiter *l;
    fake_now = T0;
    assert_int_equal(vg_limiter_mem_new(3, &l), VG_OK);
    assert_true(SL(l, "1", 5, 100, 1).allowed);
    assert_true(SL(l, "2", 5, 100, 1).allowed);
    assert_true(GC(l, "3", 5, 100, 1).allowed);
    vg_rl_req rq = {.key = "4", .klen = 1, .limit = 5, .window_ms = 100, .cost = 1};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_ETOOBIG);
    fake_now += 100; /* all three lapse */
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_true(res.allowed);
    vg_limiter_close(l);
}

static void test_policies_have_their_own_state(void **state)
{
    vg_limiter *l = *state;
    vg_rl_req rq = {.key = "u", .klen = 1, .limit = 1, .window_ms = 60000, .cost = 1};
    vg_rl_result res;
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_true(res.allowed);
    rq.ns = "per-second";
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_true(res.allowed); /* not the ad-hoc key's state */
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_false(res.allowed);
    rq.ns = "per-day";
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_true(res.allowed);
    assert_int_equal(vg_limiter_clear(l, "per-second", "u", 1), VG_OK);
    rq.ns = "per-second";
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_true(res.allowed);
    rq.ns = NULL;
    assert_int_equal(vg_limiter_check(l, &rq, &res), VG_OK);
    assert_false(res.allowed); /* the ad-hoc key kept its state */
}

static void test_clock_step_back(void **state)
{
    vg_limiter *l = *state;
    assert_true(SL(l, "s", 2, 1000, 1).allowed);
    fake_now -= 5000; /* wall clock stepped back */
    assert_true(SL(l, "s", 2, 1000, 1).allowed);
    assert_false(SL(l, "s", 2, 1000, 1).allowed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sliding_window_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sliding_cost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_fractional_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peek_consumes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_and_independent_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_bound_reclaims_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_step_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policies_have_their_own_state, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
