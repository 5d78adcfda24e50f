/* Unit tests for the circuit breaker and its registry, on an injected
 * clock: every transition, the sliding-window rate with min_calls, the
 * half-open gate under racing threads, expired probe permits,
 * success_threshold, reset, the transition log line and the metrics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "voxgate/breaker.h"
#include "voxgate/log.h"
#include "voxgate/metrics.h"
#include "voxgate/util.h"

static _Atomic uint64_t now_ms;
static int devnull = -1;
static uint64_t fake_clock(void) { return now_ms; }

static int setup(void **state)
{
    (void)state;
    now_ms = 1700000000000ull;
    vg_clock_ms = fake_clock;
    if (devnull < 0)
        devnull = open("/dev/null", O_WRONLY);
    vg_log_init(devnull, VG_LOG_DEBUG, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vg_clock_ms = vg_real_clock_ms;
    vg_metrics_reset();
    return 0;
}

static vg_breaker_settings base(void)
{
    return (vg_breaker_settings){.failure_threshold = 3, .failure_rate_threshold = 0.5,
                                 .window_size = 10, .min_calls = 5,
                                 .recovery_timeout_ms = 1000, .half_open_max_calls = 1,
                                 .success_threshold = 1, .call_timeout_ms = 500};
}

static void fail_n(vg_breaker *b, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, 0, NULL), VG_OK);
}

static vg_breaker_state state_of(vg_breaker *b)
{
    vg_breaker_snapshot s;
    vg_breaker_snapshot_get(b, &s);
    return s.state;
}

/* Open b, then let the recovery timeout pass so the next acquire probes. */
static void to_half_open(vg_breaker *b)
{
    fail_n(b, (int)vg_breaker_get_settings(b)->failure_threshold);
    assert_int_equal(state_of(b), VG_BREAKER_OPEN);
    now_ms += vg_breaker_get_settings(b)->recovery_timeout_ms;
    assert_int_equal(state_of(b), VG_BREAKER_HALF_OPEN);
}

/* ---- settings ---- */

static void test_settings_invalid(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    assert_null(vg_breaker_settings_invalid(&s));
    s = base(); s.failure_threshold = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "failure_threshold");
    s = base(); s.failure_rate_threshold = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "failure_rate_threshold");
    s = base(); s.failure_rate_threshold = 1.01;
    assert_string_equal(vg_breaker_settings_invalid(&s), "failure_rate_threshold");
    s = base(); s.failure_rate_threshold = 1.0;
    assert_null(vg_breaker_settings_invalid(&s));
    s = base(); s.window_size = 4; /* < min_calls 5 */
    assert_string_equal(vg_breaker_settings_invalid(&s), "window_size");
    s = base(); s.min_calls = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "min_calls");
    s = base(); s.recovery_timeout_ms = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "recovery_timeout_ms");
    s = base(); s.half_open_max_calls = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "half_open_max_calls");
    s = base(); s.success_threshold = 2; /* > half_open_max_calls 1 */
    assert_string_equal(vg_breaker_settings_invalid(&s), "success_threshold");
    s = base(); s.call_timeout_ms = 0;
    assert_string_equal(vg_breaker_settings_invalid(&s), "call_timeout_ms");
    s = base(); s.window_size = 0;
    assert_null(vg_breaker_new("x", &s));
    assert_int_equal(vg_breaker_outcome_parse("success"), VG_OUTCOME_SUCCESS);
    assert_int_equal(vg_breaker_outcome_parse("timeout"), VG_OUTCOME_TIMEOUT);
    assert_int_equal(vg_breaker_outcome_parse("failure"), VG_OUTCOME_FAILURE);
    assert_int_equal(vg_breaker_outcome_parse("Success"), -1);
    assert_int_equal(vg_breaker_outcome_parse(NULL), -1);
    assert_string_equal(vg_breaker_state_name(VG_BREAKER_HALF_OPEN), "half_open");
}

/* ---- closed -> open ---- */

static void test_consecutive_failures_open(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.min_calls = s.window_size = 10; /* keep the rate rule out of the way */
    vg_breaker *b = vg_breaker_new("p", &s);
    vg_breaker_permit p;
    fail_n(b, 2);
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, NULL), VG_OK);
    fail_n(b, 2); /* the success broke the run: 2 in a row */
    assert_true(vg_breaker_acquire(b, &p));
    assert_int_equal(p.state, VG_BREAKER_CLOSED);
    assert_int_equal(p.id, 0);
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_TIMEOUT, 0, 0, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_OPEN); /* a timeout is a failure */
    assert_false(vg_breaker_acquire(b, &p));
    assert_int_equal(p.state, VG_BREAKER_OPEN);
    assert_int_equal(p.retry_after_ms, 1000);
    now_ms += 400;
    assert_false(vg_breaker_acquire(b, &p));
    assert_int_equal(p.retry_after_ms, 600);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.opened_at_ms, now_ms - 400);
    assert_int_equal(sn.next_probe_at_ms, now_ms + 600);
    assert_false(sn.available);
    assert_int_equal(sn.rejected, 2);
    assert_int_equal(sn.permitted, 1);
    assert_int_equal(sn.failures, 4);
    assert_int_equal(sn.timeouts, 1);
    assert_int_equal(sn.successes, 1);
    assert_int_equal(sn.to_open, 1);
    vg_breaker_free(b);
}

static void test_rate_window_min_calls(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.failure_threshold = 100;
    s.window_size = 4;
    s.min_calls = 4;
    vg_breaker *b = vg_breaker_new("p", &s);
    /* Three failures in three calls is a rate of 1, but under min_calls. */
    fail_n(b, 3);
    assert_int_equal(state_of(b), VG_BREAKER_CLOSED);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.window_calls, 3);
    assert_int_equal(sn.window_failures, 3);
    vg_breaker_reset(b);
    /* S S S F: 1/4 */
    for (int i = 0; i < 3; i++)
        vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, NULL);
    fail_n(b, 1);
    assert_int_equal(state_of(b), VG_BREAKER_CLOSED);
    /* S slides the first S out: [S S F S] 1/4 */
    vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, NULL);
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.window_calls, 4);
    assert_int_equal(sn.window_failures, 1);
    assert_true(sn.failure_rate > 0.249 && sn.failure_rate < 0.251);
    /* F: [S F S F] 2/4 = 0.5 >= 0.5 opens */
    vg_breaker_state st;
    vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, 0, &st);
    assert_int_equal(st, VG_BREAKER_OPEN);
    vg_breaker_free(b);

    /* Failures sliding out of the window no longer count. */
    s.failure_rate_threshold = 0.75;
    b = vg_breaker_new("q", &s);
    fail_n(b, 2);                                        /* F F */
    vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, NULL); /* F F S */
    vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, NULL); /* F F S S: 0.5 */
    fail_n(b, 1);                                        /* F S S F: 0.5 */
    fail_n(b, 1);                                        /* S S F F: 0.5 */
    assert_int_equal(state_of(b), VG_BREAKER_CLOSED);
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.window_failures, 2);
    assert_int_equal(sn.consecutive_failures, 2);
    fail_n(b, 1);                                        /* S F F F: 0.75 */
    assert_int_equal(state_of(b), VG_BREAKER_OPEN);
    vg_breaker_free(b);
}

/* ---- open -> half_open -> closed | open ---- */

static void test_recovery_and_probe_success(void **state)
{
    (void)state;
    vg_breaker *b = vg_breaker_new("p", &(vg_breaker_settings){
        .failure_threshold = 2, .failure_rate_threshold = 1, .window_size = 10, .min_calls = 10,
        .recovery_timeout_ms = 1000, .half_open_max_calls = 1, .success_threshold = 1,
        .call_timeout_ms = 5000});
    vg_breaker_permit p;
    fail_n(b, 2);
    now_ms += 999;
    assert_false(vg_breaker_acquire(b, &p));
    assert_int_equal(p.retry_after_ms, 1);
    now_ms += 1;
    assert_true(vg_breaker_acquire(b, &p));
    assert_int_equal(p.state, VG_BREAKER_HALF_OPEN);
    assert_true(p.id != 0);
    vg_breaker_permit q;
    assert_false(vg_breaker_acquire(b, &q)); /* the one probe is out */
    assert_int_equal(q.state, VG_BREAKER_HALF_OPEN);
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 1500, p.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_CLOSED);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.to_open, 1);
    assert_int_equal(sn.to_half_open, 1);
    assert_int_equal(sn.to_closed, 1);
    assert_int_equal(sn.window_calls, 0); /* closing starts a fresh window */
    assert_int_equal(sn.opened_at_ms, 0);
    assert_int_equal(sn.latency_sum_us, 1500);
    assert_true(vg_breaker_acquire(b, &p));
    assert_int_equal(p.id, 0);
    vg_breaker_free(b);
}

static void test_probe_failure_reopens_with_fresh_timeout(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    vg_breaker *b = vg_breaker_new("p", &s);
    to_half_open(b);
    now_ms += 250;
    vg_breaker_permit p;
    assert_true(vg_breaker_acquire(b, &p));
    now_ms += 100;
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, p.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_OPEN);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.opened_at_ms, now_ms);
    assert_int_equal(sn.next_probe_at_ms, now_ms + s.recovery_timeout_ms);
    now_ms += s.recovery_timeout_ms - 1;
    assert_false(vg_breaker_acquire(b, &p));
    now_ms += 1;
    assert_true(vg_breaker_acquire(b, &p));
    /* A timeout outcome reopens too. */
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_TIMEOUT, 0, p.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_OPEN);
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.to_open, 3);
    assert_int_equal(sn.timeouts, 1);
    vg_breaker_free(b);
}

static void test_success_threshold(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.half_open_max_calls = 3;
    s.success_threshold = 2;
    vg_breaker *b = vg_breaker_new("p", &s);
    to_half_open(b);
    vg_breaker_permit p[4];
    for (int i = 0; i < 3; i++)
        assert_true(vg_breaker_acquire(b, &p[i]));
    assert_false(vg_breaker_acquire(b, &p[3]));
    assert_true(p[0].id != p[1].id && p[1].id != p[2].id && p[0].id != p[2].id);
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, p[1].id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_HALF_OPEN);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.probes_issued, 3);
    assert_int_equal(sn.probes_in_flight, 2);
    assert_int_equal(sn.probe_successes, 1);
    assert_false(sn.available); /* all three probes handed out */
    /* A recorded probe does not free a new one: 3 per period. */
    assert_false(vg_breaker_acquire(b, &p[3]));
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, p[0].id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_CLOSED);
    /* The last probe reports after closing: an ordinary closed record. */
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, p[2].id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_CLOSED);
    vg_breaker_free(b);
}

static void test_record_needs_permit_in_half_open(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    vg_breaker *b = vg_breaker_new("p", &s);
    to_half_open(b);
    vg_breaker_state st = VG_BREAKER_CLOSED;
    /* No acquire at all. */
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, &st), VG_EINVAL);
    vg_breaker_permit p;
    assert_true(vg_breaker_acquire(b, &p));
    /* A permit that was never issued. */
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, p.id + 1, &st), VG_EINVAL);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.state, VG_BREAKER_HALF_OPEN); /* nothing changed */
    assert_int_equal(sn.failures, 3);
    assert_int_equal(sn.successes, 0);
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, p.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_CLOSED);
    /* Records while open (calls begun before) are counted, change nothing. */
    fail_n(b, 3);
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, 0, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_OPEN);
    /* Bad outcome value. */
    assert_int_equal(vg_breaker_record(b, (vg_breaker_outcome)7, 0, 0, &st), VG_EINVAL);
    vg_breaker_free(b);
}

static void test_expired_permit(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.half_open_max_calls = 2;
    vg_breaker *b = vg_breaker_new("p", &s);
    to_half_open(b);
    vg_breaker_permit p, q;
    assert_true(vg_breaker_acquire(b, &p));
    now_ms += s.call_timeout_ms - 1;
    assert_int_equal(state_of(b), VG_BREAKER_HALF_OPEN);
    assert_true(vg_breaker_acquire(b, &q));
    now_ms += 1; /* p's call_timeout_ms is up: it counts as a timeout */
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.state, VG_BREAKER_OPEN);
    assert_int_equal(sn.timeouts, 1);
    assert_int_equal(sn.opened_at_ms, now_ms);
    assert_false(vg_breaker_acquire(b, &p));
    /* The late record of the expired permit changes nothing. */
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, q.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_OPEN);
    /* Next period: permits from the last one are gone. */
    now_ms += s.recovery_timeout_ms;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, q.id, &st), VG_EINVAL);
    assert_true(vg_breaker_acquire(b, &p));
    assert_true(p.id > q.id);
    /* Expiry is noticed by acquire too, without any snapshot. */
    now_ms += s.call_timeout_ms;
    assert_false(vg_breaker_acquire(b, &q));
    assert_int_equal(q.state, VG_BREAKER_OPEN);
    vg_breaker_free(b);
}

static void test_reset(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    vg_breaker *b = vg_breaker_new("p", &s);
    fail_n(b, 3);
    vg_breaker_reset(b);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.state, VG_BREAKER_CLOSED);
    assert_true(sn.available);
    assert_int_equal(sn.window_calls, 0);
    assert_int_equal(sn.consecutive_failures, 0);
    assert_int_equal(sn.to_closed, 1);
    /* Reset in half-open drops the permits. */
    to_half_open(b);
    vg_breaker_permit p;
    assert_true(vg_breaker_acquire(b, &p));
    vg_breaker_reset(b);
    vg_breaker_state st;
    assert_int_equal(vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, p.id, &st), VG_OK);
    assert_int_equal(st, VG_BREAKER_CLOSED); /* one failure, not three */
    /* Reset while closed clears the run of failures. */
    fail_n(b, 1);
    vg_breaker_reset(b);
    fail_n(b, 2);
    assert_int_equal(state_of(b), VG_BREAKER_CLOSED);
    vg_breaker_free(b);
}

/* ---- concurrency ---- */

#define RACERS 16

typedef struct race {
    vg_breaker *b;
    pthread_barrier_t *go;
    int allowed;
    uint64_t ids[4];
} race;

static void *racer(void *ud)
{
    race *r = ud;
    pthread_barrier_wait(r->go);
    for (int i = 0; i < 4; i++) {
        vg_breaker_permit p;
        if (vg_breaker_acquire(r->b, &p))
            r->ids[r->allowed++] = p.id;
    }
    return NULL;
}

static void test_half_open_race(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.half_open_max_calls = 5;
    vg_breaker *b = vg_breaker_new("p", &s);
    for (int round = 0; round < 20; round++) {
        to_half_open(b);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, RACERS);
        pthread_t t[RACERS];
        race rs[RACERS];
        for (int i = 0; i < RACERS; i++) {
            rs[i] = (race){.b = b, .go = &go};
            pthread_create(&t[i], NULL, racer, &rs[i]);
        }
        int total = 0;
        uint64_t ids[RACERS * 4];
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            for (int j = 0; j < rs[i].allowed; j++)
                ids[total++] = rs[i].ids[j];
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(total, 5);
        for (int i = 0; i < total; i++)
            for (int j = i + 1; j < total; j++)
                assert_true(ids[i] != ids[j]);
        vg_breaker_reset(b);
    }
    vg_breaker_free(b);
}

typedef struct closed_race {
    vg_breaker *b;
    int n;
} closed_race;

static void *closed_racer(void *ud)
{
    closed_race *r = ud;
    for (int i = 0; i < r->n; i++) {
        vg_breaker_permit p;
        vg_breaker_acquire(r->b, &p);
        vg_breaker_record(r->b, i % 2 ? VG_OUTCOME_SUCCESS : VG_OUTCOME_FAILURE, 10, p.id, NULL);
    }
    return NULL;
}

/* Many threads acquiring and recording at once: counts add up exactly. */
static void test_concurrent_counts(void **state)
{
    (void)state;
    vg_breaker_settings s = base();
    s.failure_threshold = 1000000;
    s.failure_rate_threshold = 1;
    vg_breaker *b = vg_breaker_new("p", &s);
    pthread_t t[8];
    closed_race r = {.b = b, .n = 5000};
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, closed_racer, &r);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    vg_breaker_snapshot sn;
    vg_breaker_snapshot_get(b, &sn);
    assert_int_equal(sn.state, VG_BREAKER_CLOSED);
    assert_int_equal(sn.permitted, 40000);
    assert_int_equal(sn.successes, 20000);
    assert_int_equal(sn.failures, 20000);
    assert_int_equal(sn.latency_count, 40000);
    assert_int_equal(sn.window_calls, 10);
    vg_breaker_free(b);
}

/* ---- the registry ---- */

static void test_registry(void **state)
{
    (void)state;
    vg_breaker_settings d = base(), custom = base();
    custom.failure_threshold = 7;
    vg_breakers *reg = vg_breakers_new(&d, 2);
    assert_non_null(reg);
    assert_int_equal(vg_breakers_add(reg, "openai", &custom), VG_OK);
    assert_int_equal(vg_breakers_add(reg, "openai", &custom), VG_EINVAL);
    assert_int_equal(vg_breakers_add(reg, "bad name", &custom), VG_EINVAL);
    vg_breaker_settings bad = base();
    bad.success_threshold = 9;
    assert_int_equal(vg_breakers_add(reg, "other", &bad), VG_EINVAL);
    vg_breaker *b = NULL, *c = NULL;
    assert_int_equal(vg_breakers_get(reg, "openai", false, &b), VG_OK);
    assert_int_equal(vg_breaker_get_settings(b)->failure_threshold, 7);
    assert_true(vg_breakers_is_configured(reg, b));
    assert_int_equal(vg_breakers_get(reg, "x", false, &c), VG_NOTFOUND);
    assert_int_equal(vg_breakers_get(reg, "x", true, &c), VG_OK);
    assert_int_equal(vg_breaker_get_settings(c)->failure_threshold, 3);
    assert_false(vg_breakers_is_configured(reg, c));
    vg_breaker *again = NULL;
    assert_int_equal(vg_breakers_get(reg, "x", true, &again), VG_OK);
    assert_ptr_equal(again, c);
    assert_int_equal(vg_breakers_get(reg, "y.z-1", true, &c), VG_OK);
    assert_int_equal(vg_breakers_get(reg, "w", true, &c), VG_ETOOBIG);
    assert_int_equal(vg_breakers_get(reg, "w", false, &c), VG_NOTFOUND); /* nothing created */
    assert_int_equal(vg_breakers_get(reg, "", true, &c), VG_EINVAL);
    assert_int_equal(vg_breakers_get(reg, "a/b", true, &c), VG_EINVAL);
    char longname[80];
    memset(longname, 'a', 65);
    longname[65] = '\0';
    assert_int_equal(vg_breakers_get(reg, longname, true, &c), VG_EINVAL);
    assert_int_equal(vg_breakers_count(reg), 3);
    assert_string_equal(vg_breaker_name(vg_breakers_at(reg, 0)), "openai");
    assert_string_equal(vg_breaker_name(vg_breakers_at(reg, 2)), "y.z-1");
    /* Configured breakers do not count against max_count. */
    assert_int_equal(vg_breakers_add(reg, "late", &custom), VG_OK);
    assert_int_equal(vg_breakers_max_created(reg), 2);
    fail_n(b, 7);
    assert_int_equal(state_of(b), VG_BREAKER_OPEN);
    assert_int_equal(vg_breakers_reset_all(reg), 4);
    assert_int_equal(state_of(b), VG_BREAKER_CLOSED);
    vg_breakers_free(reg);
    bad = base();
    bad.failure_threshold = 0;
    assert_null(vg_breakers_new(&bad, 10));
}

typedef struct creator {
    vg_breakers *reg;
    int created;
    vg_breaker *seen[64];
} creator;

static void *create_many(void *ud)
{
    creator *c = ud;
    for (int i = 0; i < 64; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        if (vg_breakers_get(c->reg, name, true, &c->seen[i]) == VG_OK)
            c->created++;
        else
            c->seen[i] = NULL;
    }
    return NULL;
}

/* Threads asking for the same unknown names share one breaker each, and
 * max_count holds exactly under the race. */
static void test_registry_race(void **state)
{
    (void)state;
    vg_breaker_settings d = base();
    vg_breakers *reg = vg_breakers_new(&d, 40);
    pthread_t t[8];
    creator cs[8];
    for (int i = 0; i < 8; i++) {
        cs[i] = (creator){.reg = reg};
        pthread_create(&t[i], NULL, create_many, &cs[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(vg_breakers_count(reg), 40);
    for (int n = 0; n < 64; n++) {
        vg_breaker *first = NULL;
        for (int i = 0; i < 8; i++) {
            if (!cs[i].seen[n])
                continue;
            if (!first)
                first = cs[i].seen[n];
            assert_ptr_equal(cs[i].seen[n], first);
        }
    }
    vg_breakers_free(reg);
}

/* ---- observability ---- */

static void test_transition_log_lines(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    vg_log_init(fds[1], VG_LOG_INFO, 0);
    vg_breaker_settings s = base();
    vg_breaker *b = vg_breaker_new("prov.1", &s);
    to_half_open(b);
    vg_breaker_permit p;
    vg_breaker_acquire(b, &p);
    vg_breaker_record(b, VG_OUTCOME_SUCCESS, 0, p.id, NULL);
    vg_log_init(devnull, VG_LOG_DEBUG, 0);
    close(fds[1]);
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    const char *want[] = {
        ("\"level\":\"warn\",\"msg\":\"breaker state changed\",\"provider\":\"prov.1\","
         "\"from\":\"closed\",\"to\":\"open\",\"reason\":\"consecutive_failures\"}"),
        "\"provider\":\"prov.1\",\"from\":\"open\",\"to\":\"half_open\",\"reason\":\"recovery_timeout\"}",
        "\"provider\":\"prov.1\",\"from\":\"half_open\",\"to\":\"closed\",\"reason\":\"probes_succeeded\"}",
    };
    for (size_t i = 0; i < 3; i++)
        if (!strstr(buf, want[i]))
            fail_msg("no line with %s in:\n%s", want[i], buf);
    vg_breaker_free(b);
}

static void test_metrics(void **state)
{
    (void)state;
    vg_metrics_reset();
    vg_breaker_settings d = base();
    vg_breakers *reg = vg_breakers_new(&d, 5);
    assert_int_equal(vg_breakers_add(reg, "a", &d), VG_OK);
    vg_breakers_register_metrics(reg);
    vg_breaker *b, *c;
    assert_int_equal(vg_breakers_get(reg, "a", false, &b), VG_OK);
    assert_int_equal(vg_breakers_get(reg, "late", true, &c), VG_OK); /* after registration */
    fail_n(b, 3);
    vg_breaker_permit p;
    vg_breaker_acquire(b, &p);
    vg_buf prom = {0}, js = {0};
    assert_int_equal(vg_metrics_render_prom(&prom), VG_OK);
    const char *want[] = {
        "voxgate_breaker_state{provider=\"a\"} 1\n",
        "voxgate_breaker_state{provider=\"late\"} 0\n",
        "voxgate_breaker_transitions_total{provider=\"a\",to=\"open\"} 1\n",
        "voxgate_breaker_rejected_total{provider=\"a\"} 1\n",
        "voxgate_breaker_outcomes_total{provider=\"a\",outcome=\"failure\"} 3\n",
        "voxgate_breaker_failure_rate{provider=\"a\"} 1\n",
        "# TYPE voxgate_breaker_state gauge\n",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(want); i++)
        if (!strstr(prom.data, want[i]))
            fail_msg("no %s in:\n%s", want[i], prom.data);
    assert_int_equal(vg_metrics_render_json(&js), VG_OK);
    assert_non_null(strstr(js.data, "\"breakers\":{\"a\":{\"state\":\"open\",\"available\":false"));
    assert_non_null(strstr(js.data, "\"late\":{\"state\":\"closed\""));
    vg_buf_free(&prom);
    vg_buf_free(&js);
    vg_metrics_reset();
    vg_breakers_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settings_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consecutive_failures_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_window_min_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_and_probe_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_failure_reopens_with_fresh_timeout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_success_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_needs_permit_in_half_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_permit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_open_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transition_log_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
