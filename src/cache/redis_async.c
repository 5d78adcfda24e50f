/* The Redis client's event thread (see vg_redis_submit in redis.h): the
 * HTTP hot paths (an L2 read, a rate-limit check) park their request,
 * queue their commands here and are resumed from this thread with the
 * reply, so no HTTP thread ever waits on Redis.
 *
 * Why one thread with batched round trips: Redis answers a pipeline of N
 * commands for little more than the cost of one, so while one round trip
 * is in flight every request that arrives queues up and goes out in the
 * next one. Under load a round trip carries dozens of commands; when idle
 * it carries one and costs what a synchronous call costs. A request is
 * resumed as soon as its own replies are read, not when the whole batch
 * is: otherwise every parked request would wait for the slowest of its
 * batch, and the HTTP thread would idle while this one reads. Each
 * batch is a plain vg_redis_pipeline_each call on this thread's own
 * connection, so the command timeout, the shared backoff pause,
 * reconnects and the stats are exactly those of the synchronous path. */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "redis_loop.h"

/* Bounds one round trip, so one burst cannot make a pipeline whose
 * replies take longer than the command timeout to read. */
#define MAX_BATCH_CMDS 1024

typedef struct job {
    struct job *next;
    vg_redis_done done;
    void *ud;
    bool retry_safe;
    size_t n;                /* commands */
    vg_redis_cmd *cmds;      /* into the same allocation, then argv, lengths, bytes */
} job;

struct vg_redis_loop {
    vg_redis *r;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    bool started, stopping;
    pthread_t tid;
};

/* One allocation per submission: the job, its commands, their argument
 * vectors and a copy of every argument (the caller's buffers are gone
 * once it returns). */
static job *job_new(const vg_redis_cmd *cmds, size_t n)
{
    size_t nargs = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        nargs += (size_t)cmds[i].argc;
        for (int a = 0; a < cmds[i].argc; a++)
            bytes += cmds[i].argvlen ? cmds[i].argvlen[a] : strlen(cmds[i].argv[a]);
    }
    size_t size = sizeof(job) + n * sizeof(vg_redis_cmd) + nargs * (sizeof(char *) + sizeof(size_t)) +
                  bytes;
    job *j = malloc(size);
    if (!j)
        return NULL;
    j->cmds = (vg_redis_cmd *)(j + 1);
    const char **argv = (const char **)(j->cmds + n);
    size_t *argvlen = (size_t *)(argv + nargs);
    char *p = (char *)(argvlen + nargs);
    for (size_t i = 0; i < n; i++) {
        j->cmds[i] = (vg_redis_cmd){.argc = cmds[i].argc, .argv = argv, .argvlen = argvlen};
        for (int a = 0; a < cmds[i].argc; a++) {
            size_t len = cmds[i].argvlen ? cmds[i].argvlen[a] : strlen(cmds[i].argv[a]);
            memcpy(p, cmds[i].argv[a], len);
            *argv++ = p;
            *argvlen++ = len;
            p += len;
        }
    }
    j->n = n;
    j->next = NULL;
    return j;
}

/* Take queued jobs up to MAX_BATCH_CMDS commands (at least one job). */
static job *take_batch(vg_redis_loop *l, size_t *ncmds)
{
    job *first = l->head, *last = first;
    size_t n = first->n;
    while (last->next && n + last->next->n <= MAX_BATCH_CMDS) {
        last = last->next;
        n += last->n;
    }
    l->head = last->next;
    if (!l->head)
        l->tail = NULL;
    last->next = NULL;
    *ncmds = n;
    return first;
}

/* Where a batch's replies go while they are read: into the current
 * job's slots; a job is done the moment its last reply is in, so its
 * request is resumed while the rest of the pipeline is still arriving. */
typedef struct reply_sink {
    job *cur;                /* the job the next reply belongs to */
    size_t got;              /* its replies so far */
    redisReply **rep;        /* slots for the largest job, reused per job */
} reply_sink;

static void finish_job(job *j, int rc, redisReply **rep)
{
    j->done(j->ud, rc, rep, j->n);
    vg_redis_free_replies(rep, j->n);
    free(j);
}

static void batch_sink(void *ud, size_t i, redisReply *reply)
{
    (void)i;
    reply_sink *b = ud;
    b->rep[b->got++] = reply;
    if (b->got < b->cur->n)
        return;
    job *next = b->cur->next;
    finish_job(b->cur, VG_OK, b->rep);
    b->cur = next;
    b->got = 0;
}

static void run_batch(vg_redis_loop *l, job *jobs, size_t ncmds)
{
    size_t most = 0;
    for (job *j = jobs; j; j = j->next)
        most = j->n > most ? j->n : most;
    vg_redis_cmd *cmds = malloc(ncmds * sizeof *cmds);
    redisReply **slots = calloc(most, sizeof *slots);
    reply_sink b = {.cur = jobs, .rep = slots};
    int rc = cmds && slots ? VG_OK : VG_ENOMEM;
    bool retry_safe = true;
    size_t k = 0;
    for (job *j = jobs; rc == VG_OK && j; j = j->next) {
        memcpy(cmds + k, j->cmds, j->n * sizeof *cmds);
        k += j->n;
        retry_safe &= j->retry_safe; /* one check that must not run twice decides */
    }
    size_t delivered = 0;
    if (rc == VG_OK)
        rc = vg_redis_pipeline_each(l->r, cmds, ncmds, retry_safe, batch_sink, &b, &delivered);
    /* What did not come: the job cut short gets none of its replies. */
    if (slots)
        vg_redis_free_replies(slots, b.got);
    redisReply *none[1] = {NULL};
    for (job *j = b.cur, *next; j; j = next) {
        next = j->next;
        j->done(j->ud, rc == VG_OK ? VG_EUNAVAIL : rc, slots ? slots : none, slots ? j->n : 0);
        free(j);
    }
    free(slots);
    free(cmds);
}

static void *loop_main(void *arg)
{
    vg_redis_loop *l = arg;
    pthread_setname_np(pthread_self(), "vg-redis"); /* not the HTTP thread's name it was made by */
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stopping)
            pthread_cond_wait(&l->cv, &l->mu);
        if (!l->head)
            break;
        size_t n;
        job *batch = take_batch(l, &n);
        pthread_mutex_unlock(&l->mu);
        run_batch(l, batch, n);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int vg_redis_submit(vg_redis *r, const vg_redis_cmd *cmds, size_t n, bool retry_safe,
                    vg_redis_done done, void *ud)
{
    vg_redis_loop *l = vg_redis_loop_of(r);
    if (!l || n == 0)
        return VG_EINVAL;
    job *j = job_new(cmds, n);
    if (!j)
        return VG_ENOMEM;
    j->done = done;
    j->ud = ud;
    j->retry_safe = retry_safe;
    pthread_mutex_lock(&l->mu);
    int rc = VG_OK;
    if (l->stopping)
        rc = VG_EUNAVAIL;
    else if (!l->started) {
        if (pthread_create(&l->tid, NULL, loop_main, l) == 0)
            l->started = true;
        else
            rc = VG_ENOMEM;
    }
    if (rc == VG_OK) {
        if (l->tail)
            l->tail->next = j;
        else
            l->head = j;
        l->tail = j;
        pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    if (rc != VG_OK)
        free(j);
    return rc;
}

vg_redis_loop *vg_redis_loop_new(vg_redis *r)
{
    vg_redis_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->r = r;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
}

void vg_redis_loop_free(vg_redis_loop *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    bool started = l->started;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    /* The thread drains what is queued (a round trip each, or a fast
     * failure during a pause) before it exits. */
    if (started)
        pthread_join(l->tid, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
