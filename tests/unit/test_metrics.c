/* Unit tests for the metrics registry: histogram bucketing and
 * quantiles, /stats JSON nesting, exact and promtool-clean Prometheus
 * text, and lock-free concurrent observation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "voxgate/metrics.h"

static int reset(void **state)
{
    (void)state;
    vg_metrics_reset();
    return 0;
}

/* Index of the only non-empty bucket after one observation of v. */
static unsigned bucket_for(uint64_t v)
{
    static vg_hist h;
    memset(&h, 0, sizeof(h));
    vg_hist_observe_us(&h, v);
    unsigned found = VG_HIST_BUCKETS;
    for (unsigned i = 0; i < VG_HIST_BUCKETS; i++) {
        if (atomic_load(&h.buckets[i])) {
            assert_int_equal(found, VG_HIST_BUCKETS);
            found = i;
        }
    }
    assert_int_equal(atomic_load(&h.count), 1);
    return found;
}

static void test_bucket_index(void **state)
{
    (void)state;
    const struct { uint64_t v; unsigned idx; } cases[] = {
        {0, 0}, {1, 1}, {7, 7}, {8, 8}, {9, 9}, {15, 15}, {16, 16}, {17, 16},
        {18, 17}, {31, 23}, {32, 24}, {(1u << 20) - 1, 143}, {1u << 20, 144},
        {(1u << 20) + (1u << 17), 145}, {UINT64_C(1) << 32, 240},
        {(UINT64_C(1) << 32) + 1, 240}, {UINT64_MAX, 240},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++)
        assert_int_equal(bucket_for(cases[i].v), cases[i].idx);

    vg_hist h;
    memset(&h, 0, sizeof(h));
    vg_hist_observe_us(&h, UINT64_MAX); /* clamped, so the sum cannot wrap */
    assert_int_equal(atomic_load(&h.sum_us), UINT64_C(1) << 32);
    assert_int_equal(vg_hist_quantile_us(&h, 0.5), UINT64_C(1) << 32);
}

static void near(uint64_t got, double want)
{
    if (fabs((double)got - want) > want * 0.125)
        fail_msg("%llu not within 12.5%% of %g", (unsigned long long)got, want);
}

static void test_quantiles(void **state)
{
    (void)state;
    vg_hist h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(vg_hist_quantile_us(&h, 0.5), 0);
    for (uint64_t v = 1; v <= 1000; v++)
        vg_hist_observe_us(&h, v);
    near(vg_hist_quantile_us(&h, 0.5), 500);
    near(vg_hist_quantile_us(&h, 0.99), 990);
    assert_int_equal(vg_hist_quantile_us(&h, 0.5), 511);  /* [480, 511] */
    assert_int_equal(vg_hist_quantile_us(&h, 0.99), 1023); /* [960, 1023] */
    assert_int_equal(vg_hist_quantile_us(&h, 0), 1);
    assert_int_equal(vg_hist_quantile_us(&h, 1), 1023);
    assert_int_equal(vg_hist_quantile_us(&h, 0.0005), 1);
    assert_int_equal(vg_hist_quantile_us(&h, 0.0011), 2);

    /* One observation: the answer is an upper bound within 12.5%. */
    for (uint64_t v = 1; v < (UINT64_C(1) << 32); v = v * 3 + 1) {
        memset(&h, 0, sizeof(h));
        vg_hist_observe_us(&h, v);
        uint64_t q = vg_hist_quantile_us(&h, 0.5);
        assert_true(q >= v);
        assert_true((double)q <= (double)v * 1.125);
    }

    /* 90 fast, 10 slow: p50 fast, p99 slow. */
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 90; i++)
        vg_hist_observe_us(&h, 200);
    for (int i = 0; i < 10; i++)
        vg_hist_observe_us(&h, 80000);
    near(vg_hist_quantile_us(&h, 0.5), 200);
    near(vg_hist_quantile_us(&h, 0.9), 200);
    near(vg_hist_quantile_us(&h, 0.91), 80000);
    near(vg_hist_quantile_us(&h, 0.99), 80000);
}

static void test_count_le(void **state)
{
    (void)state;
    static vg_hist h;
    memset(&h, 0, sizeof(h));
    for (uint64_t v = 0; v < 8192; v++)
        vg_hist_observe_us(&h, v);
    for (unsigned k = 0; k <= 13; k++)
        assert_int_equal(vg_hist_count_le(&h, (UINT64_C(1) << k) - 1), UINT64_C(1) << k);
    assert_int_equal(vg_hist_count_le(&h, 17), 18); /* 18 is a bucket edge too */
    /* Mid-bucket: never more than the true count. */
    assert_int_equal(vg_hist_count_le(&h, 16), 16);
    assert_int_equal(vg_hist_count_le(&h, 1000), 960);
    assert_int_equal(vg_hist_count_le(&h, UINT64_MAX), 8192);
    vg_hist_observe_us(&h, UINT64_C(1) << 40);
    assert_int_equal(vg_hist_count_le(&h, (UINT64_C(1) << 32) - 1), 8192);
    assert_int_equal(vg_hist_count_le(&h, UINT64_C(1) << 32), 8193);
}

#define OBS_THREADS 4
#define OBS_EACH 100000

static void *observe_many(void *arg)
{
    vg_hist *h = arg;
    for (uint64_t i = 0; i < OBS_EACH; i++)
        vg_hist_observe_us(h, i % 5000);
    return NULL;
}

static void test_concurrent_observe(void **state)
{
    (void)state;
    static vg_hist h;
    memset(&h, 0, sizeof(h));
    pthread_t th[OBS_THREADS];
    for (int i = 0; i < OBS_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, observe_many, &h), 0);
    for (int i = 0; i < OBS_THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t n = OBS_THREADS * (uint64_t)OBS_EACH;
    assert_int_equal(atomic_load(&h.count), n);
    assert_int_equal(vg_hist_count_le(&h, UINT64_MAX), n);
    assert_int_equal(atomic_load(&h.sum_us), OBS_THREADS * 20 * (uint64_t)(4999 * 5000 / 2));
    assert_int_equal(vg_hist_count_le(&h, 4095), OBS_THREADS * 20 * 4096);
}

static double fixed_gauge(void *ud) { return *(double *)ud; }

static char *render_json(void)
{
    vg_buf b = {0};
    assert_int_equal(vg_metrics_render_json(&b), VG_OK);
    return b.data;
}

static char *render_prom(void)
{
    vg_buf b = {0};
    assert_int_equal(vg_metrics_render_prom(&b), VG_OK);
    if (!b.data)
        return strdup("");
    return b.data;
}

static void test_json_nesting(void **state)
{
    (void)state;
    vg_counter l1h = {7}, l1m = {3}, l2h = {1}, l2m = {0}, hidden = {9}, clash = {4};
    static vg_hist lat;
    memset(&lat, 0, sizeof(lat));
    vg_hist_observe_us(&lat, 100);
    vg_hist_observe_us(&lat, 200);
    vg_hist_observe_us(&lat, 300);
    double bytes = 2.5;

    vg_metrics_counter("vg_l1_hits_total", NULL, "h", "cache.l1.hits", &l1h);
    vg_metrics_counter("vg_l1_misses_total", NULL, "h", "cache.l1.misses", &l1m);
    vg_metrics_counter("vg_l2_hits_total", NULL, "h", "cache.l2.hits", &l2h);
    vg_metrics_counter("vg_hidden_total", NULL, "h", NULL, &hidden);
    vg_metrics_gauge("vg_l1_bytes", NULL, "h", "cache.l1.bytes", fixed_gauge, &bytes);
    vg_metrics_hist("vg_hit_seconds", NULL, "h", "latency.hit", &lat);
    vg_metrics_ratio("cache.l1.hit_ratio", &l1h, &l1m);
    vg_metrics_ratio("cache.l2.hit_ratio", &l2m, &l2m); /* 0/0 */
    vg_metrics_counter(NULL, NULL, NULL, "cache", &clash);        /* leaf over a subtree */
    vg_metrics_counter(NULL, NULL, NULL, "cache.l1.hits", &clash); /* duplicate */
    vg_metrics_counter(NULL, NULL, NULL, "cache.l1.hits.x", &clash); /* under a leaf */
    vg_metrics_counter(NULL, NULL, NULL, "bad..path", &clash);
    vg_metrics_counter(NULL, NULL, NULL, ".lead", &clash);
    vg_metrics_counter(NULL, NULL, NULL, "trail.", &clash);

    char *s = render_json();
    assert_string_equal(s,
        "{\"cache\":{\"l1\":{\"hits\":7,\"misses\":3,\"bytes\":2.5,\"hit_ratio\":0.7},"
        "\"l2\":{\"hits\":1,\"hit_ratio\":0}},"
        "\"latency\":{\"hit\":{\"count\":3,\"mean_us\":200,\"p50_us\":207,\"p99_us\":319}}}");
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    cJSON_Delete(j);
    free(s);

    /* Fractional gauges, huge counters, and a ratio at 1. */
    vg_metrics_reset();
    vg_counter big = {UINT64_C(1) << 40}, none = {0};
    double g = -0.125;
    vg_metrics_counter(NULL, NULL, NULL, "big", &big);
    vg_metrics_gauge(NULL, NULL, NULL, "g", fixed_gauge, &g);
    vg_metrics_ratio("r", &big, &none);
    s = render_json();
    assert_string_equal(s, "{\"big\":1099511627776,\"g\":-0.125,\"r\":1}");
    free(s);
}

static const char expected_prom[] =
    "# HELP vg_requests_total Requests served.\n"
    "# TYPE vg_requests_total counter\n"
    "vg_requests_total{route=\"tts\"} 5\n"
    "vg_requests_total{route=\"stt\"} 0\n"
    "# HELP vg_l1_bytes Bytes held\\\\in L1.\\nSecond line.\n"
    "# TYPE vg_l1_bytes gauge\n"
    "vg_l1_bytes 1536.5\n"
    "# HELP vg_hit_seconds Hit latency.\n"
    "# TYPE vg_hit_seconds histogram\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.000004\"} 1\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.000016\"} 1\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.000064\"} 1\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.000256\"} 2\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.001024\"} 2\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.004096\"} 2\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.016384\"} 3\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.065536\"} 3\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"0.262144\"} 3\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"1.048576\"} 3\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"4.194304\"} 4\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"16.777216\"} 4\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"67.108864\"} 4\n"
    "vg_hit_seconds_bucket{tier=\"l1\",le=\"+Inf\"} 5\n"
    "vg_hit_seconds_sum{tier=\"l1\"} 102.005103\n"
    "vg_hit_seconds_count{tier=\"l1\"} 5\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.000004\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.000016\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.000064\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.000256\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.001024\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.004096\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.016384\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.065536\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"0.262144\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"1.048576\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"4.194304\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"16.777216\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"67.108864\"} 0\n"
    "vg_hit_seconds_bucket{tier=\"l2\",le=\"+Inf\"} 0\n"
    "vg_hit_seconds_sum{tier=\"l2\"} 0.000000\n"
    "vg_hit_seconds_count{tier=\"l2\"} 0\n"
    "# HELP vg_fetch_seconds Provider fetch time.\n"
    "# TYPE vg_fetch_seconds histogram\n"
    "vg_fetch_seconds_bucket{le=\"0.000004\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.000016\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.000064\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.000256\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.001024\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.004096\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.016384\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.065536\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"0.262144\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"1.048576\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"4.194304\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"16.777216\"} 0\n"
    "vg_fetch_seconds_bucket{le=\"67.108864\"} 1\n"
    "vg_fetch_seconds_bucket{le=\"+Inf\"} 1\n"
    "vg_fetch_seconds_sum 67.108863\n"
    "vg_fetch_seconds_count 1\n";

/* Pipe text through promtool when it is installed. */
static void promtool_check(const char *text)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        print_message("promtool not found: skipping the promtool check\n");
        return;
    }
    FILE *p = popen("promtool check metrics", "w");
    assert_non_null(p);
    fputs(text, p);
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("promtool check metrics rejected:\n%s", text);
}

static void test_prom_exact(void **state)
{
    (void)state;
    vg_counter tts = {5}, stt = {0};
    static vg_hist l1, l2, fetch;
    memset(&l1, 0, sizeof(l1));
    memset(&l2, 0, sizeof(l2));
    memset(&fetch, 0, sizeof(fetch));
    vg_hist_observe_us(&l1, 3);
    vg_hist_observe_us(&l1, 100);
    vg_hist_observe_us(&l1, 5000);
    vg_hist_observe_us(&l1, 2000000);
    vg_hist_observe_us(&l1, 100000000); /* 100 s: only in +Inf */
    vg_hist_observe_us(&fetch, 67108863);
    double bytes = 1536.5;

    /* Interleaved on purpose: families come out grouped. */
    vg_metrics_counter("vg_requests_total", "route=\"tts\"", "Requests served.", "req.tts", &tts);
    vg_metrics_gauge("vg_l1_bytes", NULL, "Bytes held\\in L1.\nSecond line.", NULL,
                     fixed_gauge, &bytes);
    vg_metrics_hist("vg_hit_seconds", "tier=\"l1\"", "Hit latency.", "lat.l1", &l1);
    vg_metrics_counter("vg_requests_total", "route=\"stt\"", NULL, "req.stt", &stt);
    vg_metrics_ratio("req.ratio", &tts, &stt);
    vg_metrics_hist("vg_hit_seconds", "tier=\"l2\"", NULL, NULL, &l2);
    vg_metrics_hist("vg_fetch_seconds", "", "Provider fetch time.", NULL, &fetch);

    char *s = render_prom();
    assert_string_equal(s, expected_prom);
    promtool_check(s);
    free(s);
}

static double gauge_nan(void *ud) { (void)ud; return NAN; }
static double gauge_inf(void *ud) { (void)ud; return -INFINITY; }

/* Odd values must still make valid exposition text and valid JSON. */
static void test_odd_values(void **state)
{
    (void)state;
    vg_counter c = {UINT64_MAX};
    double tiny = 1e-300, third = 1.0 / 3;
    vg_metrics_counter("vg_max_total", "a=\"1\",b=\"2\"", "Max.", "odd.max", &c);
    vg_metrics_gauge("vg_nan", NULL, "NaN.", "odd.nan", gauge_nan, NULL);
    vg_metrics_gauge("vg_inf", NULL, "Inf.", "odd.inf", gauge_inf, NULL);
    vg_metrics_gauge("vg_tiny", NULL, "Tiny.", "odd.tiny", fixed_gauge, &tiny);
    vg_metrics_gauge("vg_third", NULL, "Third.", "odd.third", fixed_gauge, &third);
    vg_metrics_gauge("vg_max_total", NULL, "Kind clash.", NULL, fixed_gauge, &third);
    char *s = render_prom();
    assert_non_null(strstr(s, "vg_max_total{a=\"1\",b=\"2\"} 18446744073709551615\n"));
    assert_non_null(strstr(s, "vg_nan NaN\n"));
    assert_non_null(strstr(s, "vg_inf -Inf\n"));
    assert_non_null(strstr(s, "vg_tiny 1e-300\n"));
    assert_non_null(strstr(s, "vg_third 0.33333333333333331\n"));
    assert_null(strstr(s, "Kind clash"));
    promtool_check(s);
    free(s);

    s = render_json();
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    cJSON *odd = cJSON_GetObjectItem(j, "odd");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(odd, "nan")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(odd, "inf")));
    cJSON_Delete(j);
    free(s);
}

static double forty_two(void *ud) { return *(double *)ud; }

/* A callback counter renders with TYPE counter and its current value. */
static void test_counter_fn(void **state)
{
    double v = 42;
    vg_metrics_counter_fn("x_evictions_total", "tier=\"l1\"", "Evicted.", "c.l1.evictions",
                          forty_two, &v);
    vg_buf b = {0};
    assert_int_equal(vg_metrics_render_prom(&b), VG_OK);
    assert_non_null(strstr(b.data, "# TYPE x_evictions_total counter\n"));
    assert_non_null(strstr(b.data, "x_evictions_total{tier=\"l1\"} 42\n"));
    promtool_check(b.data);
    vg_buf_reset(&b);
    v = 43;
    assert_int_equal(vg_metrics_render_json(&b), VG_OK);
    assert_string_equal(b.data, "{\"c\":{\"l1\":{\"evictions\":43}}}");
    vg_buf_free(&b);
}

static void test_reset(void **state)
{
    (void)state;
    vg_counter c = {1};
    vg_metrics_counter("vg_x_total", NULL, "X.", "x", &c);
    vg_metrics_reset();
    char *s = render_prom();
    assert_string_equal(s, "");
    free(s);
    s = render_json();
    assert_string_equal(s, "{}");
    free(s);
    /* Usable again after a reset. */
    vg_metrics_counter("vg_x_total", NULL, "X.", "x", &c);
    s = render_json();
    assert_string_equal(s, "{\"x\":1}");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_index),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_count_le),
        cmocka_unit_test(test_concurrent_observe),
        cmocka_unit_test_setup_teardown(test_json_nesting, reset, reset),
        cmocka_unit_test_setup_teardown(test_prom_exact, reset, reset),
        cmocka_unit_test_setup_teardown(test_odd_values, reset, reset),
        cmocka_unit_test_setup_teardown(test_counter_fn, reset, reset),
        cmocka_unit_test_setup_teardown(test_reset, reset, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
