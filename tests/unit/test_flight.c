/* Single-flight and bulkheads (src/gate/flight.c). */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "voxgate/flight.h"
#include "voxgate/util.h"

typedef struct rec {
    int calls;
    void *got;
    int order;
} rec;

static int seq;

static void on_result(void *ud, void *result)
{
    rec *r = ud;
    r->calls++;
    r->got = result;
    r->order = ++seq;
}

static void first_leads_others_join(void **state)
{
    (void)state;
    vg_flights *t = vg_flights_new(8);
    rec a = {0}, b = {0}, c = {0};
    vg_flight *fa, *fb, *fc;
    bool la, lb, lc;
    assert_int_equal(vg_flight_join(t, "k1", 2, on_result, &a, &fa, &la), VG_OK);
    assert_true(la);
    assert_true(vg_flight_exists(t, "k1", 2));
    assert_false(vg_flight_exists(t, "k2", 2));
    assert_int_equal(vg_flight_join(t, "k1", 2, on_result, &b, &fb, &lb), VG_OK);
    assert_false(lb);
    assert_ptr_equal(fa, fb);
    /* A different key is its own flight. */
    assert_int_equal(vg_flight_join(t, "k2", 2, on_result, &c, &fc, &lc), VG_OK);
    assert_true(lc);
    assert_ptr_not_equal(fa, fc);
    assert_int_equal(vg_flight_members(t, fa), 2);
    assert_int_equal(vg_flights_open(t), 2);
    int result = 42;
    seq = 0;
    vg_flight_finish(t, fa, &result);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_ptr_equal(a.got, &result);
    assert_ptr_equal(b.got, &result);
    assert_int_equal(a.order, 1); /* members hear in join order */
    assert_int_equal(b.order, 2);
    assert_int_equal(c.calls, 0);
    assert_false(vg_flight_exists(t, "k1", 2));
    /* After the finish, the same key leads a new flight. */
    rec d = {0};
    vg_flight *fd;
    bool ld;
    assert_int_equal(vg_flight_join(t, "k1", 2, on_result, &d, &fd, &ld), VG_OK);
    assert_true(ld);
    vg_flight_finish(t, fd, NULL);
    vg_flight_finish(t, fc, NULL);
    assert_int_equal(d.calls, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(vg_flights_open(t), 0);
    vg_flights_free(t);
}

static void keys_compare_whole_bytes(void **state)
{
    (void)state;
    vg_flights *t = vg_flights_new(8);
    rec a = {0}, b = {0};
    vg_flight *fa, *fb;
    bool la, lb;
    /* Same prefix, different length; embedded NUL. */
    assert_int_equal(vg_flight_join(t, "ab\0c", 4, on_result, &a, &fa, &la), VG_OK);
    assert_int_equal(vg_flight_join(t, "ab", 2, on_result, &b, &fb, &lb), VG_OK);
    assert_true(la && lb);
    vg_flight_finish(t, fa, NULL);
    vg_flight_finish(t, fb, NULL);
    vg_flights_free(t);
}

static void max_flights_refuses_new_ones_only(void **state)
{
    (void)state;
    vg_flights *t = vg_flights_new(2);
    rec r[4] = {{0}};
    vg_flight *f[4];
    bool l[4];
    assert_int_equal(vg_flight_join(t, "a", 1, on_result, &r[0], &f[0], &l[0]), VG_OK);
    assert_int_equal(vg_flight_join(t, "b", 1, on_result, &r[1], &f[1], &l[1]), VG_OK);
    assert_int_equal(vg_flight_join(t, "c", 1, on_result, &r[2], &f[2], &l[2]), VG_ETOOBIG);
    /* Joining an open flight is still fine at the limit. */
    assert_int_equal(vg_flight_join(t, "a", 1, on_result, &r[3], &f[3], &l[3]), VG_OK);
    assert_false(l[3]);
    vg_flight_finish(t, f[0], NULL);
    assert_int_equal(r[3].calls, 1);
    assert_int_equal(vg_flight_join(t, "c", 1, on_result, &r[2], &f[2], &l[2]), VG_OK);
    vg_flight_finish(t, f[1], NULL);
    vg_flight_finish(t, f[2], NULL);
    assert_int_equal(r[2].calls, 1);
    vg_flights_free(t);
}

/* Many threads joining the same key at once: exactly one leads, and
 * every one of them hears the result exactly once. */
#define RACERS 16
#define ROUNDS 200
static vg_flights *race_t;
static _Atomic int leaders, heard;

static void race_cb(void *ud, void *result)
{
    (void)ud;
    (void)result;
    atomic_fetch_add(&heard, 1);
}

static void *racer(void *arg)
{
    (void)arg;
    vg_flight *f;
    bool lead;
    if (vg_flight_join(race_t, "same", 4, race_cb, NULL, &f, &lead) == VG_OK && lead) {
        atomic_fetch_add(&leaders, 1);
        /* Let the others pile in before finishing. */
        while (vg_flight_members(race_t, f) < RACERS)
            ;
        vg_flight_finish(race_t, f, NULL);
    }
    return NULL;
}

static void concurrent_joins_have_one_leader(void **state)
{
    (void)state;
    race_t = vg_flights_new(4);
    for (int round = 0; round < ROUNDS; round++) {
        atomic_store(&leaders, 0);
        atomic_store(&heard, 0);
        pthread_t th[RACERS];
        for (int i = 0; i < RACERS; i++)
            pthread_create(&th[i], NULL, racer, NULL);
        for (int i = 0; i < RACERS; i++)
            pthread_join(th[i], NULL);
        /* The leader finishes only once all RACERS joined, so a second
         * leader would show up here (or the round would hang). */
        assert_int_equal(atomic_load(&leaders), 1);
        assert_int_equal(atomic_load(&heard), RACERS);
    }
    vg_flights_free(race_t);
}

/* ---- bulkheads ---- */

static int granted;
static void on_slot(void *ud) { ((rec *)ud)->calls++, granted++; }

static void bulkhead_limits_queues_and_refuses(void **state)
{
    (void)state;
    vg_bulkhead *b = vg_bulkhead_new(2, 2);
    rec q1 = {0}, q2 = {0}, q3 = {0};
    uint64_t t1, t2, t3;
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t1), VG_OK);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t1), VG_OK);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, &q1, &t1), VG_NOTFOUND);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, &q2, &t2), VG_NOTFOUND);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, &q3, &t3), VG_ETOOBIG);
    vg_bulkhead_stats s;
    vg_bulkhead_stats_get(b, &s);
    assert_int_equal(s.in_use, 2);
    assert_int_equal(s.queued, 2);
    assert_int_equal(s.rejected, 1);
    /* A release hands the slot to the oldest waiter; in_use stays. */
    vg_bulkhead_release(b);
    assert_int_equal(q1.calls, 1);
    assert_int_equal(q2.calls, 0);
    vg_bulkhead_stats_get(b, &s);
    assert_int_equal(s.in_use, 2);
    assert_int_equal(s.queued, 1);
    /* A cancelled wait never gets its slot. */
    assert_true(vg_bulkhead_cancel(b, t2));
    assert_false(vg_bulkhead_cancel(b, t2));
    assert_false(vg_bulkhead_cancel(b, t1)); /* already granted */
    vg_bulkhead_release(b);
    assert_int_equal(q2.calls, 0);
    vg_bulkhead_release(b);
    vg_bulkhead_stats_get(b, &s);
    assert_int_equal(s.in_use, 0);
    assert_int_equal(s.queued, 0);
    /* Releasing more than was taken does not underflow. */
    vg_bulkhead_release(b);
    vg_bulkhead_stats_get(b, &s);
    assert_int_equal(s.in_use, 0);
    vg_bulkhead_free(b);
}

static void bulkhead_queue_zero_refuses_at_once(void **state)
{
    (void)state;
    vg_bulkhead *b = vg_bulkhead_new(1, 0);
    uint64_t t;
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t), VG_OK);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t), VG_ETOOBIG);
    vg_bulkhead_release(b);
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t), VG_OK);
    vg_bulkhead_free(b); /* with a slot still taken: nothing leaks */
}

static void bulkhead_fifo_order(void **state)
{
    (void)state;
    vg_bulkhead *b = vg_bulkhead_new(1, 8);
    rec w[5] = {{0}};
    uint64_t t;
    assert_int_equal(vg_bulkhead_acquire(b, on_slot, NULL, &t), VG_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(vg_bulkhead_acquire(b, on_slot, &w[i], &t), VG_NOTFOUND);
    for (int i = 0; i < 5; i++) {
        vg_bulkhead_release(b);
        for (int k = 0; k < 5; k++)
            assert_int_equal(w[k].calls, k <= i ? 1 : 0);
    }
    vg_bulkhead_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_leads_others_join),
        cmocka_unit_test(keys_compare_whole_bytes),
        cmocka_unit_test(max_flights_refuses_new_ones_only),
        cmocka_unit_test(concurrent_joins_have_one_leader),
        cmocka_unit_test(bulkhead_limits_queues_and_refuses),
        cmocka_unit_test(bulkhead_queue_zero_refuses_at_once),
        cmocka_unit_test(bulkhead_fifo_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
