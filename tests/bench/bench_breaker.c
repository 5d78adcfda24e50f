/* Micro-benchmark of the circuit breaker's permit decision (SPEC §7:
 * <= 1 us). Not a test: it prints ns per decision for the lock-free
 * closed path (one thread and several racing on one breaker), the
 * lock-free rejection while open, and the locked half-open path. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "voxgate/breaker.h"
#include "voxgate/log.h"
#include "voxgate/util.h"

#define ITERS 20000000ull

static const vg_breaker_settings settings = {
    .failure_threshold = 5, .failure_rate_threshold = 0.5, .window_size = 20, .min_calls = 10,
    .recovery_timeout_ms = 3600000, .half_open_max_calls = 1, .success_threshold = 1,
    .call_timeout_ms = 3600000};

typedef struct run {
    vg_breaker *b;
    uint64_t iters, allowed;
} run;

static void *loop(void *ud)
{
    run *r = ud;
    vg_breaker_permit p;
    for (uint64_t i = 0; i < r->iters; i++)
        r->allowed += vg_breaker_acquire(r->b, &p);
    return NULL;
}

static double bench(vg_breaker *b, unsigned nthreads, uint64_t iters)
{
    pthread_t t[64];
    run runs[64];
    uint64_t t0 = vg_mono_ns();
    for (unsigned i = 0; i < nthreads; i++) {
        runs[i] = (run){.b = b, .iters = iters};
        pthread_create(&t[i], NULL, loop, &runs[i]);
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    /* Wall time per decision made by one thread. */
    return (double)(vg_mono_ns() - t0) / (double)iters;
}

/* A clock two recovery timeouts ahead, to reach half-open at once. */
static uint64_t later_clock(void) { return vg_real_clock_ms() + 2ull * 3600000ull; }

int main(int argc, char **argv)
{
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    if (threads < 1 || threads > 64)
        threads = 4;
    vg_log_init(2, VG_LOG_ERROR, 0); /* transitions log at info/warn: keep quiet */
    vg_breaker *b = vg_breaker_new("bench", &settings);
    printf("closed, 1 thread:        %6.1f ns/decision\n", bench(b, 1, ITERS));
    printf("closed, %2u threads:      %6.1f ns/decision (per thread)\n", threads,
           bench(b, threads, ITERS / threads));
    for (int i = 0; i < 5; i++)
        vg_breaker_record(b, VG_OUTCOME_FAILURE, 0, 0, NULL);
    printf("open (reject), 1 thread: %6.1f ns/decision\n", bench(b, 1, ITERS / 4));
    vg_breaker_free(b);

    /* Half-open: every decision takes the mutex. A long recovery timeout
     * is bypassed by a clock far in the future. */
    vg_breaker *h = vg_breaker_new("bench-half-open", &settings);
    for (int i = 0; i < 5; i++)
        vg_breaker_record(h, VG_OUTCOME_FAILURE, 0, 0, NULL);
    vg_breaker_permit p;
    uint64_t (*real)(void) = vg_clock_ms;
    vg_clock_ms = later_clock;
    vg_breaker_acquire(h, &p); /* takes the one probe; the rest are denied under the lock */
    printf("half-open (locked), 1 thread: %6.1f ns/decision\n", bench(h, 1, ITERS / 10));
    vg_clock_ms = real;
    vg_breaker_free(h);
    vg_log_shutdown();
    return 0;
}

