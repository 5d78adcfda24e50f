/* The vg-io threads: where request work that may block on a remote store
 * (S3 calls, which can take up to s3.timeout_ms) runs while its
 * connection is parked, so an MHD thread never waits on the network and
 * hits keep flowing while the store is slow or hung.
 *
 * Threads are made on demand, when a job arrives and none is idle, up to
 * VG_IO_MAX_THREADS; past that, jobs wait in FIFO order. An idle thread
 * sleeps on a condition variable without a deadline (no wake-ups), and
 * lives until vg_io_stop, so a burst is paid for in threads only once. */
#include <pthread.h>
#include <stdlib.h>

#include "voxgate/http.h"

typedef struct io_job {
    struct io_job *next;
    void (*fn)(void *ud);
    void *ud;
} io_job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, quiet;  /* a job is queued; nothing queued or running */
    io_job *head, *tail;
    pthread_t tids[VG_IO_MAX_THREADS];
    unsigned threads, idle, running, queued;
    bool stopping;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER,
          .quiet = PTHREAD_COND_INITIALIZER};

static void *io_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "vg-io");
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.head && !pool.stopping) {
            pool.idle++;
            pthread_cond_wait(&pool.work, &pool.mu);
            pool.idle--;
        }
        io_job *j = pool.head;
        if (!j)
            break; /* stopping, and the queue is empty */
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pool.queued--;
        pool.running++;
        pthread_mutex_unlock(&pool.mu);
        j->fn(j->ud);
        free(j);
        pthread_mutex_lock(&pool.mu);
        if (--pool.running == 0 && !pool.head)
            pthread_cond_broadcast(&pool.quiet);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

int vg_io_run(void (*fn)(void *ud), void *ud)
{
    io_job *j = malloc(sizeof *j);
    if (!j)
        return VG_ENOMEM;
    *j = (io_job){.fn = fn, .ud = ud};
    pthread_mutex_lock(&pool.mu);
    if (pool.stopping) {
        pthread_mutex_unlock(&pool.mu);
        free(j);
        return VG_EUNAVAIL;
    }
    /* A thread per job until the cap: queued jobs are counted against
     * the idle threads that will take them. */
    if (pool.idle <= pool.queued && pool.threads < VG_IO_MAX_THREADS &&
        pthread_create(&pool.tids[pool.threads], NULL, io_main, NULL) == 0)
        pool.threads++;
    if (pool.threads == 0) { /* not even one thread: the caller runs it */
        pthread_mutex_unlock(&pool.mu);
        free(j);
        return VG_ENOMEM;
    }
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pool.queued++;
    pthread_cond_signal(&pool.work);
    pthread_mutex_unlock(&pool.mu);
    return VG_OK;
}

unsigned vg_io_threads(unsigned *idle)
{
    pthread_mutex_lock(&pool.mu);
    unsigned n = pool.threads;
    if (idle)
        *idle = pool.idle;
    pthread_mutex_unlock(&pool.mu);
    return n;
}

void vg_io_stop(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stopping = true;
    /* What was queued still runs: each job ends a parked request. */
    while (pool.head || pool.running)
        pthread_cond_wait(&pool.quiet, &pool.mu);
    pthread_cond_broadcast(&pool.work);
    unsigned n = pool.threads;
    pthread_mutex_unlock(&pool.mu);
    for (unsigned i = 0; i < n; i++)
        pthread_join(pool.tids[i], NULL);
    pthread_mutex_lock(&pool.mu);
    pool.threads = 0;
    pool.stopping = false; /* usable again (tests start and stop servers) */
    pthread_mutex_unlock(&pool.mu);
}
