/* The curl-multi engine: one event thread runs every provider HTTP call
 * and every gateway timer, so HTTP worker threads never block on a
 * provider (SPEC §5). The thread sleeps in epoll_wait on curl's sockets
 * (curl_multi_socket_action), an eventfd that other threads write to wake
 * it, and a timerfd that carries curl's own timeout.
 *
 * A call is started on the submitting thread when the multi handle is
 * free (trylock): adding it and letting curl send the request costs
 * microseconds and never blocks (connect, TLS and name resolution are
 * asynchronous in the multi interface), and it saves a wake-up and a
 * context switch per miss. Otherwise the call waits in a queue for the
 * event thread. Either way its answer is read, and on_done runs, on the
 * event thread.
 *
 * Timers live in a binary min-heap of slot numbers. A timer id is
 * (generation << 32 | slot), so cancelling a timer that already ran (its
 * slot reused) is recognised without a search. */
#include "voxgate/provider.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* Answers larger than this fail unless the provider sets its own cap. */
#define DEFAULT_MAX_RESP ((uint64_t)64 << 20)
/* Stall cutoff (1 byte/s over this many seconds), set only when the
 * whole-call timeout is longer. A shorter window would cut off providers
 * that think in silence (STT of a long file sends nothing for a while);
 * below it the call's own timeout bounds a stall anyway. */
#define LOW_SPEED_WINDOW_S 30L
/* Socket events taken per epoll_wait. */
#define MAX_EVENTS 64

typedef struct call_impl {
    vg_http_call pub;              /* first: the public part */
    vg_engine *e;
    void (*on_done)(vg_http_call *c, void *ud);
    void *ud;
    struct call_impl *prev, *next; /* the submit queue, then the running list */
    uint64_t start_ns;
    bool oom;                      /* the body could not be stored */
} call_impl;

typedef struct timer_slot {
    uint64_t due_ms;               /* monotonic */
    uint64_t seq;                  /* equal deadlines run in creation order */
    uint32_t gen;
    uint32_t heap_pos;             /* UINT32_MAX = free */
    void (*fn)(void *ud);
    void *ud;
} timer_slot;

struct vg_engine {
    /* libcurl (and through it OpenSSL) is set up on the first call, not
     * at start: a voxgate with only the local provider never pays its
     * memory. */
    pthread_mutex_t cmu;           /* guards multi, running, nrunning, curl_due */
    CURLM *multi;                  /* NULL until the first call */
    _Atomic bool has_multi;        /* for submitters on other threads */
    call_impl *running;            /* added to the multi, not yet reaped */
    size_t nrunning;
    bool curl_due;                 /* curl asked for socket_action(TIMEOUT) now */
    int curl_running;              /* transfers curl still runs, after its last action */
    int ep;                        /* epoll: curl's sockets, wake_fd, curl_tfd */
    int wake_fd;                   /* eventfd */
    int curl_tfd;                  /* timerfd: curl's next timeout */
    pthread_t thread;
    pthread_mutex_t mu;            /* guards everything below */
    uint64_t sleep_until;          /* when the sleeping thread wakes by itself
                                      (monotonic ms); 0 while it is awake */
    bool stopping;
    call_impl *queue_head, *queue_tail;
    timer_slot *slots;
    uint32_t nslots, cap_slots;
    uint32_t *free_slots;          /* stack of reusable slot numbers */
    uint32_t nfree;
    uint32_t *heap;                /* slot numbers, ordered by (due_ms, seq) */
    uint32_t nheap;
    uint64_t timer_seq;
    _Atomic size_t inflight;
};

static uint64_t mono_ms(void) { return vg_mono_ns() / 1000000u; }

/* Wake the event thread from epoll_wait (or keep it from sleeping). */
static void wake(vg_engine *e)
{
    uint64_t one = 1;
    while (write(e->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

/* ---- timers (mu held) ---- */

static bool timer_before(const vg_engine *e, uint32_t a, uint32_t b)
{
    const timer_slot *x = &e->slots[a], *y = &e->slots[b];
    return x->due_ms < y->due_ms || (x->due_ms == y->due_ms && x->seq < y->seq);
}

static void heap_set(vg_engine *e, uint32_t pos, uint32_t slot)
{
    e->heap[pos] = slot;
    e->slots[slot].heap_pos = pos;
}

static void heap_up(vg_engine *e, uint32_t pos)
{
    uint32_t slot = e->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!timer_before(e, slot, e->heap[parent]))
            break;
        heap_set(e, pos, e->heap[parent]);
        pos = parent;
    }
    heap_set(e, pos, slot);
}

static void heap_down(vg_engine *e, uint32_t pos)
{
    uint32_t slot = e->heap[pos];
    for (;;) {
        uint32_t kid = 2 * pos + 1;
        if (kid >= e->nheap)
            break;
        if (kid + 1 < e->nheap && timer_before(e, e->heap[kid + 1], e->heap[kid]))
            kid++;
        if (!timer_before(e, e->heap[kid], slot))
            break;
        heap_set(e, pos, e->heap[kid]);
        pos = kid;
    }
    heap_set(e, pos, slot);
}

/* Takes the timer out of the heap and frees its slot (the generation
 * moves on, so its id no longer matches). */
static void timer_remove(vg_engine *e, uint32_t slot)
{
    uint32_t pos = e->slots[slot].heap_pos;
    uint32_t last = e->heap[--e->nheap];
    if (pos < e->nheap) {
        heap_set(e, pos, last);
        heap_up(e, pos);
        heap_down(e, e->slots[last].heap_pos);
    }
    e->slots[slot].heap_pos = UINT32_MAX;
    e->slots[slot].gen++;
    e->free_slots[e->nfree++] = slot;
}

static bool timer_grow(vg_engine *e)
{
    if (e->nslots < e->cap_slots)
        return true;
    if (e->cap_slots >= (UINT32_MAX >> 2))
        return false;
    uint32_t cap = e->cap_slots ? e->cap_slots * 2 : 64;
    timer_slot *s = realloc(e->slots, cap * sizeof *s);
    if (!s)
        return false;
    e->slots = s;
    uint32_t *f = realloc(e->free_slots, cap * sizeof *f);
    if (!f)
        return false;
    e->free_slots = f;
    uint32_t *h = realloc(e->heap, cap * sizeof *h);
    if (!h)
        return false;
    e->heap = h;
    e->cap_slots = cap;
    return true;
}

static uint32_t timer_slot_get(vg_engine *e)
{
    if (e->nfree)
        return e->free_slots[--e->nfree];
    if (!timer_grow(e))
        return UINT32_MAX;
    e->slots[e->nslots].gen = 1;
    return e->nslots++;
}

/* ---- header and body capture ---- */

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    if (n >= cap)
        n = cap - 1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) /* printable ASCII only: these values get logged */
        if ((unsigned char)v[i] >= 0x20 && (unsigned char)v[i] < 0x7f)
            dst[o++] = v[i];
    dst[o] = '\0';
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return false;
    *val = line + nl + 1;
    *vlen = len - nl - 1;
    return true;
}

static void reset_answer(vg_http_call *c)
{
    c->content_type[0] = c->retry_after[0] = c->retry_after_ms[0] = c->upstream_id[0] = '\0';
}

static size_t on_header(char *line, size_t sz, size_t n, void *ud)
{
    static const char *const ids[] = {"x-request-id", "request-id", "dg-request-id",
                                      "x-client-request-id"};
    vg_http_call *c = ud;
    size_t len = sz * n;
    const char *v;
    size_t vl;
    /* Each status line starts a new header block (100 Continue, a
     * redirect): nothing of an earlier block may leak into the answer. */
    if (len >= 5 && !strncmp(line, "HTTP/", 5))
        reset_answer(c);
    else if (header_is(line, len, "content-type", &v, &vl))
        copy_value(c->content_type, sizeof c->content_type, v, vl);
    else if (header_is(line, len, "retry-after", &v, &vl))
        copy_value(c->retry_after, sizeof c->retry_after, v, vl);
    else if (header_is(line, len, "retry-after-ms", &v, &vl))
        copy_value(c->retry_after_ms, sizeof c->retry_after_ms, v, vl);
    else if (!c->upstream_id[0])
        for (size_t i = 0; i < VG_ARRAY_LEN(ids); i++)
            if (header_is(line, len, ids[i], &v, &vl)) {
                copy_value(c->upstream_id, sizeof c->upstream_id, v, vl);
                break;
            }
    return len;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    call_impl *ci = ud;
    vg_http_call *c = &ci->pub;
    size_t len = sz * n;
    if (c->max_resp_bytes && c->resp_body.len + len > c->max_resp_bytes)
        return 0; /* -> CURLE_WRITE_ERROR: "answer too large" */
    if (vg_buf_append(&c->resp_body, p, len) != VG_OK) {
        ci->oom = true;
        return 0;
    }
    return len;
}

/* ---- calls ---- */

vg_http_call *vg_http_call_new(vg_engine *e, uint32_t timeout_ms, uint32_t connect_timeout_ms,
                               const char *ca_file)
{
    call_impl *ci = calloc(1, sizeof *ci);
    if (!ci)
        return NULL;
    ci->e = e;
    vg_http_call *c = &ci->pub;
    c->max_resp_bytes = DEFAULT_MAX_RESP;
    CURL *h = c->easy = curl_easy_init();
    c->headers = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (!h || !c->headers) {
        vg_http_call_free(c);
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PRIVATE, ci);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    /* No CURLOPT_PIPEWAIT: calls parked behind a connection that never
     * completes overran their own timeouts by up to a second (7.88). */
    if (timeout_ms)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (connect_timeout_ms)
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms);
    if (!timeout_ms || timeout_ms / 1000 > LOW_SPEED_WINDOW_S) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_WINDOW_S);
    }
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ca_file && *ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, ci);
    return c;
}

void vg_http_call_free(vg_http_call *c)
{
    if (!c)
        return;
    /* The easy handle first: it unbinds itself from the mime and the
     * header list it points at. */
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_mime_free(c->mime);
    curl_slist_free_all(c->headers);
    vg_buf_free(&c->req_body);
    vg_buf_free(&c->resp_body);
    free(c);
}

static void list_push(call_impl **head, call_impl *ci)
{
    ci->prev = NULL;
    ci->next = *head;
    if (*head)
        (*head)->prev = ci;
    *head = ci;
}

static void list_unlink(call_impl **head, call_impl *ci)
{
    if (ci->prev)
        ci->prev->next = ci->next;
    else
        *head = ci->next;
    if (ci->next)
        ci->next->prev = ci->prev;
    ci->prev = ci->next = NULL;
}

/* Hands a finished call to its owner; the engine forgets it. Runs on
 * the event thread without cmu, so on_done may submit again. */
static void finish(vg_engine *e, call_impl *ci, int code)
{
    vg_http_call *c = &ci->pub;
    c->curl_code = ci->oom ? CURLE_OUT_OF_MEMORY : code;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->http_status);
    c->duration_us = (vg_mono_ns() - ci->start_ns) / 1000u;
    atomic_fetch_sub(&e->inflight, 1);
    ci->on_done(c, ci->ud);
}

/* Calls that ended in curl, chained through next in the order curl
 * reported them, out of the multi. cmu held. */
static call_impl *collect_done(vg_engine *e)
{
    call_impl *head = NULL, **tail = &head;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *h = m->easy_handle;
        int code = m->data.result; /* m is invalid after remove_handle */
        call_impl *ci = NULL;
        curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&ci);
        curl_multi_remove_handle(e->multi, h);
        list_unlink(&e->running, ci);
        e->nrunning--;
        ci->pub.curl_code = code;
        *tail = ci;
        tail = &ci->next;
    }
    return head;
}

static void finish_list(vg_engine *e, call_impl *ci)
{
    while (ci) {
        call_impl *next = ci->next;
        finish(e, ci, ci->pub.curl_code);
        ci = next;
    }
}

/* Runs curl's timeouts for as long as it asks for one "now", a bounded
 * number of times; past that the timerfd brings the event thread back
 * in a millisecond, so a pending "now" is never left without a wake-up.
 * cmu held. */
static void run_curl_due(vg_engine *e)
{
    for (int i = 0; i < 16 && e->curl_due; i++) {
        e->curl_due = false;
        curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &e->curl_running);
    }
    if (e->curl_due) {
        struct itimerspec soon = {.it_value = {.tv_nsec = 1000000L}};
        timerfd_settime(e->curl_tfd, 0, &soon, NULL);
    }
}

/* Adds a call to the multi and lets curl start it (connect, or write the
 * request on a kept-alive connection). False when curl refused it. cmu held. */
static bool start_one(vg_engine *e, call_impl *ci)
{
    vg_http_call *c = &ci->pub;
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    if (c->mime)
        curl_easy_setopt(c->easy, CURLOPT_MIMEPOST, c->mime);
    if (curl_multi_add_handle(e->multi, c->easy) != CURLM_OK)
        return false;
    list_push(&e->running, ci);
    e->nrunning++;
    e->curl_due = true; /* curl asks for it through the timer callback; be sure */
    run_curl_due(e);
    return true;
}

int vg_engine_submit(vg_engine *e, vg_http_call *c, void (*on_done)(vg_http_call *c, void *ud),
                     void *ud)
{
    call_impl *ci = (call_impl *)c;
    ci->on_done = on_done;
    ci->ud = ud;
    ci->start_ns = vg_mono_ns();
    ci->next = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        return VG_EUNAVAIL;
    }
    atomic_fetch_add(&e->inflight, 1);
    /* Taken under mu, so a shutdown that sets stopping after this finds
     * the call in the running list when it aborts them all. */
    if (atomic_load(&e->has_multi) && pthread_mutex_trylock(&e->cmu) == 0) {
        pthread_mutex_unlock(&e->mu);
        bool started = start_one(e, ci);
        /* A call that ended at once (this one or another) is reaped on
         * the event thread: wake it. */
        bool ended = started && (size_t)e->curl_running < e->nrunning;
        pthread_mutex_unlock(&e->cmu);
        if (started) {
            if (ended)
                wake(e);
            return VG_OK;
        }
        pthread_mutex_lock(&e->mu); /* refused: the event thread fails it */
        if (e->stopping) {
            atomic_fetch_sub(&e->inflight, 1);
            pthread_mutex_unlock(&e->mu);
            return VG_EUNAVAIL;
        }
    }
    if (e->queue_tail)
        e->queue_tail->next = ci;
    else
        e->queue_head = ci;
    e->queue_tail = ci;
    pthread_mutex_unlock(&e->mu);
    wake(e);
    return VG_OK;
}

size_t vg_engine_inflight(vg_engine *e) { return atomic_load(&e->inflight); }

/* ---- timers API ---- */

uint64_t vg_engine_after(vg_engine *e, uint64_t delay_ms, void (*fn)(void *ud), void *ud)
{
    uint64_t id = 0;
    bool first = false;
    pthread_mutex_lock(&e->mu);
    uint32_t slot = e->stopping ? UINT32_MAX : timer_slot_get(e);
    if (slot != UINT32_MAX) {
        timer_slot *t = &e->slots[slot];
        uint64_t now = mono_ms();
        t->due_ms = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
        t->seq = ++e->timer_seq;
        t->fn = fn;
        t->ud = ud;
        e->heap[e->nheap++] = slot;
        heap_up(e, e->nheap - 1);
        /* Only a new earliest deadline, before the thread would wake
         * anyway, needs a wake (a miss's 60 s deadline usually does not);
         * an awake thread (0) is told, as it may be about to sleep. */
        first = e->heap[0] == slot && (!e->sleep_until || t->due_ms < e->sleep_until);
        id = (uint64_t)t->gen << 32 | slot;
    }
    pthread_mutex_unlock(&e->mu);
    if (first && !pthread_equal(pthread_self(), e->thread))
        wake(e);
    return id;
}

bool vg_engine_cancel(vg_engine *e, uint64_t id)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    bool removed = false;
    pthread_mutex_lock(&e->mu);
    if (slot < e->nslots && e->slots[slot].gen == gen && e->slots[slot].heap_pos != UINT32_MAX) {
        timer_remove(e, slot);
        removed = true;
    }
    pthread_mutex_unlock(&e->mu);
    return removed;
}

/* Runs the timers that are due, one at a time so that a callback can add
 * or cancel timers. Returns ms until the next one (-1 = none). */
static long run_timers(vg_engine *e)
{
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!e->nheap || e->stopping) {
            pthread_mutex_unlock(&e->mu);
            return -1;
        }
        uint32_t slot = e->heap[0];
        uint64_t now = mono_ms(), due = e->slots[slot].due_ms;
        if (due > now) {
            pthread_mutex_unlock(&e->mu);
            uint64_t wait = due - now;
            return wait > 60000 ? 60000 : (long)wait;
        }
        void (*fn)(void *) = e->slots[slot].fn;
        void *ud = e->slots[slot].ud;
        timer_remove(e, slot);
        pthread_mutex_unlock(&e->mu);
        fn(ud);
    }
}

/* ---- the event thread ---- */

/* Empties the submit queue; returns what it held, oldest first. */
static call_impl *take_queue(vg_engine *e)
{
    pthread_mutex_lock(&e->mu);
    call_impl *ci = e->queue_head;
    e->queue_head = e->queue_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    return ci;
}

/* Starts what waited in the queue; returns the calls curl refused,
 * chained, with their code set. cmu held. */
static call_impl *start_queued(vg_engine *e)
{
    call_impl *refused = NULL, **tail = &refused;
    for (call_impl *ci = take_queue(e), *next; ci; ci = next) {
        next = ci->next;
        ci->next = NULL;
        if (!start_one(e, ci)) {
            ci->pub.curl_code = CURLE_FAILED_INIT;
            *tail = ci;
            tail = &ci->next;
        }
    }
    return refused;
}

/* Shutdown: every call still queued or running ends as aborted; then
 * every pending timer runs once, early, so that its owner can release
 * what it holds (the gateway's deadlines and retries end there).
 * Callbacks may not submit or add timers again (stopping is set). */
static void abort_all(vg_engine *e)
{
    call_impl *q = take_queue(e);
    while (q) {
        call_impl *next = q->next;
        finish(e, q, CURLE_ABORTED_BY_CALLBACK);
        q = next;
    }
    pthread_mutex_lock(&e->cmu);
    call_impl *run = e->running;
    for (call_impl *ci = run; ci; ci = ci->next)
        curl_multi_remove_handle(e->multi, ci->pub.easy);
    e->running = NULL;
    e->nrunning = 0;
    pthread_mutex_unlock(&e->cmu);
    while (run) {
        call_impl *next = run->next;
        finish(e, run, CURLE_ABORTED_BY_CALLBACK);
        run = next;
    }
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!e->nheap) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        uint32_t slot = e->heap[0];
        void (*fn)(void *) = e->slots[slot].fn;
        void *ud = e->slots[slot].ud;
        timer_remove(e, slot);
        pthread_mutex_unlock(&e->mu);
        fn(ud);
    }
}

/* curl's socket callback: mirror what it wants to hear about in epoll.
 * socketp is non-NULL once the socket is in the set. cmu held. */
static int on_socket(CURL *h, curl_socket_t s, int what, void *ud, void *socketp)
{
    (void)h;
    vg_engine *e = ud;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(e->ep, EPOLL_CTL_DEL, s, NULL); /* curl forgets socketp itself */
        return 0;
    }
    struct epoll_event ev = {.data.fd = s};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(e->ep, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
        epoll_ctl(e->ep, EPOLL_CTL_MOD, s, &ev);
    if (!socketp)
        curl_multi_assign(e->multi, s, e);
    return 0;
}

/* curl's timer callback: "now" is run by whoever drives curl before it
 * lets go of cmu (run_curl_due); a later deadline arms the timerfd the
 * event thread sleeps on, so a submitter never has to wake it for that. */
static int on_timer(CURLM *m, long ms, void *ud)
{
    (void)m;
    vg_engine *e = ud;
    struct itimerspec its = {0};
    if (ms == 0)
        e->curl_due = true;
    else if (ms > 0) {
        its.it_value.tv_sec = ms / 1000;
        its.it_value.tv_nsec = (ms % 1000) * 1000000L;
    }
    timerfd_settime(e->curl_tfd, 0, &its, NULL);
    return 0;
}

/* libcurl, the first time a call needs it (see struct vg_engine). */
static bool ensure_multi(vg_engine *e)
{
    if (e->multi)
        return true;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return false;
    CURLM *m = curl_multi_init();
    if (!m) {
        curl_global_cleanup();
        return false;
    }
    /* Thousands of calls to one host: unbounded connections, and a
     * connection cache large enough to keep them for reuse. */
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, 1024L);
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, e);
    pthread_mutex_lock(&e->cmu);
    e->multi = m;
    pthread_mutex_unlock(&e->cmu);
    atomic_store(&e->has_multi, true);
    return true;
}

/* Sleeps until an event or wait ms (-1: a minute), then hands each
 * socket event to curl. */
static void wait_and_dispatch(vg_engine *e, long wait)
{
    if (wait < 0)
        wait = 60000;
    pthread_mutex_lock(&e->mu);
    e->sleep_until = mono_ms() + (uint64_t)wait;
    pthread_mutex_unlock(&e->mu);
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(e->ep, evs, MAX_EVENTS, (int)wait);
    pthread_mutex_lock(&e->mu);
    e->sleep_until = 0;
    pthread_mutex_unlock(&e->mu);
    uint64_t junk;
    bool locked = false; /* cmu, taken at the first event that is curl's */
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == e->wake_fd) {
            (void)!read(fd, &junk, sizeof junk);
            continue;
        }
        if (!locked) {
            pthread_mutex_lock(&e->cmu);
            locked = true;
        }
        if (fd == e->curl_tfd) {
            (void)!read(fd, &junk, sizeof junk);
            e->curl_due = true;
            continue;
        }
        int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(e->multi, fd, flags, &e->curl_running);
    }
    if (locked) {
        run_curl_due(e);
        pthread_mutex_unlock(&e->cmu);
    }
}

static void *event_loop(void *arg)
{
    vg_engine *e = arg;
    pthread_setname_np(pthread_self(), "vg-engine");
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool stop = e->stopping, queued = e->queue_head != NULL;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        if (queued && !ensure_multi(e))
            for (call_impl *ci = take_queue(e), *next; ci; ci = next) {
                next = ci->next;
                finish(e, ci, CURLE_FAILED_INIT);
            }
        if (e->multi) {
            pthread_mutex_lock(&e->cmu);
            call_impl *refused = start_queued(e);
            run_curl_due(e);
            call_impl *done = collect_done(e);
            pthread_mutex_unlock(&e->cmu);
            finish_list(e, refused);
            finish_list(e, done);
        }
        wait_and_dispatch(e, run_timers(e));
    }
    abort_all(e);
    return NULL;
}

static void close_fds(vg_engine *e)
{
    if (e->ep >= 0)
        close(e->ep);
    if (e->wake_fd >= 0)
        close(e->wake_fd);
    if (e->curl_tfd >= 0)
        close(e->curl_tfd);
}

static bool open_fds(vg_engine *e)
{
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->curl_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->ep < 0 || e->wake_fd < 0 || e->curl_tfd < 0)
        return false;
    struct epoll_event w = {.events = EPOLLIN, .data.fd = e->wake_fd};
    struct epoll_event t = {.events = EPOLLIN, .data.fd = e->curl_tfd};
    return epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake_fd, &w) == 0 &&
           epoll_ctl(e->ep, EPOLL_CTL_ADD, e->curl_tfd, &t) == 0;
}

int vg_engine_new(vg_engine **out)
{
    *out = NULL;
    vg_engine *e = calloc(1, sizeof *e);
    if (!e)
        return VG_ENOMEM;
    e->ep = e->wake_fd = e->curl_tfd = -1;
    if (!open_fds(e)) {
        close_fds(e);
        free(e);
        return VG_ERR;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->cmu, NULL);
    if (pthread_create(&e->thread, NULL, event_loop, e) != 0) {
        pthread_mutex_destroy(&e->cmu);
        pthread_mutex_destroy(&e->mu);
        close_fds(e);
        free(e);
        return VG_ERR;
    }
    *out = e;
    return VG_OK;
}

void vg_engine_free(vg_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_mutex_unlock(&e->mu);
    wake(e);
    pthread_join(e->thread, NULL);
    if (e->multi) {
        curl_multi_cleanup(e->multi); /* its socket callbacks still use ep */
        curl_global_cleanup();
    }
    close_fds(e);
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->mu);
    free(e->slots);
    free(e->free_slots);
    free(e->heap);
    free(e);
}
