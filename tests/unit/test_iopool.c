/* The vg-io threads (src/http/iopool.c): jobs run at once and side by
 * side up to the thread cap, the rest wait their turn in order, and a
 * stop runs what is queued before it joins the threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "voxgate/http.h"

/* Jobs that hold their thread until the test lets them go. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned started, finished;
    bool open;
    unsigned permits;        /* jobs that may finish before the gate opens */
    unsigned order[VG_IO_MAX_THREADS + 16];
} gate = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void reset(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.started = gate.finished = gate.permits = 0;
    gate.open = false;
    pthread_mutex_unlock(&gate.mu);
}

static void held_job(void *ud)
{
    pthread_mutex_lock(&gate.mu);
    gate.order[gate.started++] = (unsigned)(uintptr_t)ud;
    pthread_cond_broadcast(&gate.cv);
    while (!gate.open && gate.permits == 0)
        pthread_cond_wait(&gate.cv, &gate.mu);
    if (!gate.open)
        gate.permits--;
    gate.finished++;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

/* Waits up to 5 s for *counter to reach n; the count it saw. */
static unsigned wait_count(unsigned *counter, unsigned n)
{
    struct timespec until = vg_deadline(CLOCK_REALTIME, 5000);
    pthread_mutex_lock(&gate.mu);
    while (*counter < n && pthread_cond_timedwait(&gate.cv, &gate.mu, &until) == 0)
        ;
    unsigned got = *counter;
    pthread_mutex_unlock(&gate.mu);
    return got;
}

static void release_all(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = true;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

/* Hands n held jobs, numbered 0..n-1, to the pool. */
static void submit_held(unsigned n)
{
    for (uintptr_t i = 0; i < n; i++)
        assert_int_equal(vg_io_run(held_job, (void *)i), VG_OK);
}

static void jobs_run_side_by_side(void **state)
{
    (void)state;
    reset();
    /* Eight jobs that each wait for the others: only concurrent threads
     * get all eight started. */
    submit_held(8);
    assert_int_equal(wait_count(&gate.started, 8), 8);
    assert_int_equal(vg_io_threads(NULL), 8);
    release_all();
    assert_int_equal(wait_count(&gate.finished, 8), 8);
    /* Idle threads are reused, not multiplied (once the eight are back
     * waiting: one still on its way out of a job is not idle yet). */
    unsigned idle = 0;
    for (int i = 0; i < 500 && idle < 8; i++) {
        vg_io_threads(&idle);
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    assert_int_equal(idle, 8);
    reset();
    submit_held(4);
    assert_int_equal(wait_count(&gate.started, 4), 4);
    assert_int_equal(vg_io_threads(NULL), 8);
    release_all();
    assert_int_equal(wait_count(&gate.finished, 4), 4);
    vg_io_stop();
    assert_int_equal(vg_io_threads(NULL), 0);
}

/* Lets one held job finish, which frees exactly one thread. */
static void release_one(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.permits++;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static void past_the_cap_jobs_wait_in_order(void **state)
{
    (void)state;
    reset();
    unsigned n = VG_IO_MAX_THREADS + 10;
    submit_held(n);
    assert_int_equal(wait_count(&gate.started, VG_IO_MAX_THREADS), VG_IO_MAX_THREADS);
    assert_int_equal(vg_io_threads(NULL), VG_IO_MAX_THREADS);
    /* The ten over the cap have not started; they do once threads free up. */
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_int_equal(wait_count(&gate.started, 0), VG_IO_MAX_THREADS);
    /* One thread at a time, so the job it takes is the one that starts
     * next: first in, first out. (With all freed at once, two threads can
     * take jobs in order and still start them in either order.) */
    for (unsigned i = VG_IO_MAX_THREADS; i < n; i++) {
        release_one();
        assert_int_equal(wait_count(&gate.started, i + 1), i + 1);
        assert_int_equal(gate.order[i], i);
    }
    release_all();
    assert_int_equal(wait_count(&gate.finished, n), n);
    assert_int_equal(vg_io_threads(NULL), VG_IO_MAX_THREADS);
    vg_io_stop();
}

static void opener(void *ud)
{
    (void)ud;
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    release_all();
}

static void stop_runs_what_is_queued(void **state)
{
    (void)state;
    reset();
    /* One thread's worth is not enough to run all of these before the
     * stop: the stop must wait for every one. */
    submit_held(20);
    assert_int_equal(vg_io_run(opener, NULL), VG_OK);
    vg_io_stop();
    pthread_mutex_lock(&gate.mu);
    unsigned finished = gate.finished;
    pthread_mutex_unlock(&gate.mu);
    assert_int_equal(finished, 20);
    assert_int_equal(vg_io_threads(NULL), 0);
    /* Usable again after a stop. */
    reset();
    release_all();
    assert_int_equal(vg_io_run(held_job, (void *)1), VG_OK);
    assert_int_equal(wait_count(&gate.finished, 1), 1);
    vg_io_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jobs_run_side_by_side),
        cmocka_unit_test(past_the_cap_jobs_wait_in_order),
        cmocka_unit_test(stop_runs_what_is_queued),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
