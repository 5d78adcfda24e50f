/* The curl-multi engine against the in-test HTTP server (http_stub.c):
 * round trips with header capture, timeouts, refused connections, the
 * answer cap, 500 concurrent hanging calls, timers, shutdown with calls
 * in flight, calls submitted from many threads at once, and connection
 * reuse. */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_stub.h"
#include "voxgate/provider.h"

/* ---- waiting for callbacks ---- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned done;
} waiter;

static waiter W = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void bump(void)
{
    pthread_mutex_lock(&W.mu);
    W.done++;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
}

static void wait_for(unsigned n)
{
    pthread_mutex_lock(&W.mu);
    while (W.done < n)
        pthread_cond_wait(&W.cv, &W.mu);
    W.done = 0;
    pthread_mutex_unlock(&W.mu);
}

/* One finished call as the test sees it. */
typedef struct outcome {
    int curl_code;
    long status;
    char body[256];
    char ctype[128], retry_after[64], retry_ms[32], upstream[129];
    uint64_t done_ms;             /* monotonic */
    pthread_t thread;
} outcome;

static uint64_t now_ms(void) { return vg_mono_ns() / 1000000u; }

static void record(vg_http_call *c, void *ud)
{
    outcome *o = ud;
    o->curl_code = c->curl_code;
    o->status = c->http_status;
    snprintf(o->body, sizeof o->body, "%s", c->resp_body.data ? c->resp_body.data : "");
    snprintf(o->ctype, sizeof o->ctype, "%s", c->content_type);
    snprintf(o->retry_after, sizeof o->retry_after, "%s", c->retry_after);
    snprintf(o->retry_ms, sizeof o->retry_ms, "%s", c->retry_after_ms);
    snprintf(o->upstream, sizeof o->upstream, "%s", c->upstream_id);
    o->done_ms = now_ms();
    o->thread = pthread_self();
    vg_http_call_free(c);
    bump();
}

static vg_http_call *call_to(vg_engine *e, uint16_t port, const char *path, uint32_t timeout_ms)
{
    vg_http_call *c = vg_http_call_new(e, timeout_ms, 1000, NULL);
    assert_non_null(c);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    return c;
}

static void run_one(vg_engine *e, vg_http_call *c, outcome *o)
{
    assert_int_equal(vg_engine_submit(e, c, record, o), VG_OK);
    wait_for(1);
}

/* ---- the scripted server ---- */

static int answer(void *ud, const stub_req *r, vg_buf *out)
{
    char h[256];
    if (!strcmp(r->target, "/echo")) {
        vg_buf resp = {0};
        vg_buf_printf(&resp, "%s %s x-test=%s expect=%s body=%s", r->method, r->target,
                      stub_header(r, "x-test", h, sizeof h),
                      stub_header(r, "expect", h + 128, 128), r->body.data ? r->body.data : "");
        stub_reply(out, 200, "Content-Type: text/plain; charset=utf-8\r\nX-Request-ID: up-1\r\n",
                   resp.data, resp.len);
        vg_buf_free(&resp);
    } else if (!strcmp(r->target, "/limited")) {
        stub_reply(out, 429, "Retry-After: 7\r\nretry-after-ms: 6500\r\nrequest-id: rq-9\r\n",
                   "{}", 2);
    } else if (!strcmp(r->target, "/continue")) {
        /* An interim block whose headers must not leak into the answer. */
        vg_buf_puts(out, "HTTP/1.1 100 Continue\r\nx-request-id: interim\r\n"
                         "Retry-After: 99\r\n\r\n");
        stub_reply(out, 200, "dg-request-id: final\r\n", "ok", 2);
    } else if (!strcmp(r->target, "/big")) {
        char big[10000];
        memset(big, 'a', sizeof big);
        stub_reply(out, 200, NULL, big, sizeof big);
    } else if (!strcmp(r->target, "/hang")) {
        return STUB_HANG;
    } else {
        stub_reply(out, 404, NULL, "", 0);
    }
    return STUB_SEND;
}

/* ---- tests ---- */

static void round_trip(void **state)
{
    stub_server *s = stub_start(answer, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome o;

    vg_http_call *c = call_to(e, stub_port(s), "/echo", 5000);
    c->headers = curl_slist_append(c->headers, "X-Test: yes");
    vg_buf_puts(&c->req_body, "hello body");
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->req_body.data);
    run_one(e, c, &o);
    assert_int_equal(o.curl_code, CURLE_OK);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.body, "POST /echo x-test=yes expect= body=hello body");
    assert_string_equal(o.ctype, "text/plain; charset=utf-8");
    assert_string_equal(o.upstream, "up-1");
    assert_string_equal(o.retry_after, "");
    assert_false(pthread_equal(o.thread, pthread_self())); /* on the event thread */

    run_one(e, call_to(e, stub_port(s), "/limited", 5000), &o);
    assert_int_equal(o.status, 429);
    assert_string_equal(o.retry_after, "7");
    assert_string_equal(o.retry_ms, "6500");
    assert_string_equal(o.upstream, "rq-9");

    run_one(e, call_to(e, stub_port(s), "/continue", 5000), &o);
    assert_int_equal(o.status, 200);
    assert_string_equal(o.upstream, "final");
    assert_string_equal(o.retry_after, "");
    assert_string_equal(o.body, "ok");

    assert_int_equal(vg_engine_inflight(e), 0);
    vg_engine_free(e);
    stub_stop(s);
}

static void timeout_and_refused(void **state)
{
    stub_server *silent = stub_start(answer, NULL, false);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome o;
    uint64_t t0 = now_ms();
    run_one(e, call_to(e, stub_port(silent), "/", 300), &o);
    uint64_t took = o.done_ms - t0;
    assert_int_equal(o.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_true(took >= 290 && took < 1500);
    vg_presult res = {0};
    assert_true(vg_pr_from_transport(&(vg_http_call){.curl_code = o.curl_code}, &res));
    assert_int_equal(res.status, VG_PR_TIMEOUT);
    stub_stop(silent);

    /* A port nobody listens on: bind one, then close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    run_one(e, call_to(e, ntohs(sa.sin_port), "/", 2000), &o);
    assert_int_equal(o.curl_code, CURLE_COULDNT_CONNECT);
    assert_true(vg_pr_from_transport(&(vg_http_call){.curl_code = o.curl_code}, &res));
    assert_int_equal(res.status, VG_PR_CONNECT);
    vg_engine_free(e);
}

static void answer_cap(void **state)
{
    stub_server *s = stub_start(answer, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome o;
    vg_http_call *c = call_to(e, stub_port(s), "/big", 5000);
    c->max_resp_bytes = 1000;
    run_one(e, c, &o);
    assert_int_equal(o.curl_code, CURLE_WRITE_ERROR);
    vg_presult res = {0};
    assert_true(vg_pr_from_transport(&(vg_http_call){.curl_code = o.curl_code}, &res));
    assert_int_equal(res.status, VG_PR_BAD_RESPONSE);
    assert_string_equal(res.message, "answer too large");

    c = call_to(e, stub_port(s), "/big", 5000);
    c->max_resp_bytes = 10000; /* exactly the size: fits */
    run_one(e, c, &o);
    assert_int_equal(o.curl_code, CURLE_OK);
    vg_engine_free(e);
    stub_stop(s);
}

#define MANY 500

static void many_hanging_calls(void **state)
{
    stub_server *silent = stub_start(answer, NULL, false);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome *o = calloc(MANY, sizeof *o);
    uint32_t tmo[MANY];
    uint64_t t0 = now_ms();
    for (int i = 0; i < MANY; i++) {
        tmo[i] = 500 + (uint32_t)(i % 5) * 250; /* 500..1500 ms */
        assert_int_equal(vg_engine_submit(e, call_to(e, stub_port(silent), "/", tmo[i]), record,
                                          &o[i]), VG_OK);
    }
    assert_true(vg_engine_inflight(e) > 0);
    wait_for(MANY);
    uint64_t late = 0;
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(o[i].curl_code, CURLE_OPERATION_TIMEDOUT);
        uint64_t took = o[i].done_ms - t0;
        assert_true(took + 10 >= tmo[i]);
        if (took > tmo[i] + late)
            late = took - tmo[i];
    }
    printf("# %d hanging calls: all timed out, at most %llu ms past their timeout, %llu ms in all\n",
           MANY, (unsigned long long)late, (unsigned long long)(now_ms() - t0));
    assert_true(late < 500);
    assert_int_equal(vg_engine_inflight(e), 0);
    free(o);
    vg_engine_free(e);
    stub_stop(silent);
}

/* ---- timers ---- */

typedef struct tick {
    int order[8];
    int n;
} tick;

static tick T;
static int tick_ids[8];

static void on_tick(void *ud)
{
    T.order[T.n++] = *(int *)ud;
    bump();
}

static void timers(void **state)
{
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    static const uint64_t delay[] = {60, 10, 30, 30, 20, 40};
    uint64_t id[6];
    memset(&T, 0, sizeof T);
    for (int i = 0; i < 6; i++) {
        tick_ids[i] = i;
        id[i] = vg_engine_after(e, delay[i], on_tick, &tick_ids[i]);
        assert_true(id[i] > 0);
    }
    assert_true(vg_engine_cancel(e, id[5]));
    assert_false(vg_engine_cancel(e, id[5]));
    wait_for(5);
    int want[] = {1, 4, 2, 3, 0}; /* by deadline, equal deadlines in creation order */
    assert_int_equal(T.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(T.order[i], want[i]);
    assert_false(vg_engine_cancel(e, id[0])); /* already ran */
    assert_false(vg_engine_cancel(e, 12345));
    /* A slot reused by a new timer does not answer to the old id. */
    uint64_t again = vg_engine_after(e, 10000, on_tick, &tick_ids[0]);
    assert_false(vg_engine_cancel(e, id[1]));
    assert_true(vg_engine_cancel(e, again));
    vg_engine_free(e);
}

/* ---- shutdown ---- */

/* At shutdown pending timers run once, early, and cannot schedule more. */
static vg_engine *stopping_engine;
static _Atomic int early_runs;
static void run_early(void *ud)
{
    atomic_fetch_add(&early_runs, 1);
    assert_int_equal(vg_engine_after(stopping_engine, 10, run_early, NULL), 0);
}

static void free_with_calls_in_flight(void **state)
{
    stub_server *silent = stub_start(answer, NULL, false);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome o[20];
    for (int i = 0; i < 20; i++)
        assert_int_equal(vg_engine_submit(e, call_to(e, stub_port(silent), "/", 30000), record,
                                          &o[i]), VG_OK);
    stopping_engine = e;
    assert_true(vg_engine_after(e, 60000, run_early, NULL) > 0);
    assert_true(vg_engine_after(e, 90000, run_early, NULL) > 0);
    usleep(20 * 1000);
    uint64_t t0 = now_ms();
    vg_engine_free(e);
    uint64_t took = now_ms() - t0;
    wait_for(20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(o[i].curl_code, CURLE_ABORTED_BY_CALLBACK);
    vg_presult res = {0};
    assert_true(vg_pr_from_transport(&(vg_http_call){.curl_code = o[0].curl_code}, &res));
    assert_int_equal(res.status, VG_PR_INTERNAL);
    assert_string_equal(res.message, "shutting down");
    assert_int_equal(atomic_load(&early_runs), 2);
    printf("# vg_engine_free with 20 calls in flight: %llu ms\n", (unsigned long long)took);
    assert_true(took < 1000);
    stub_stop(silent);
}

/* ---- submitting from many threads ---- */

/* Calls are started on the submitting thread when the multi handle is
 * free and queued for the event thread when it is not; with eight
 * threads submitting at once both happen. Every call must end exactly
 * once, with its own answer, and on_done must run on the event thread. */
#define SUBMITTERS 8
#define PER_SUBMITTER 40

typedef struct submitter {
    vg_engine *e;
    uint16_t port;
    pthread_t self;
    outcome o[PER_SUBMITTER];
} submitter;

static void *submit_many(void *arg)
{
    submitter *sb = arg;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        vg_http_call *c = call_to(sb->e, sb->port, "/echo", 5000);
        char hdr[64];
        snprintf(hdr, sizeof hdr, "X-Test: %p-%d", (void *)sb, i);
        c->headers = curl_slist_append(c->headers, hdr);
        if (vg_engine_submit(sb->e, c, record, &sb->o[i]) != VG_OK)
            return "submit failed";
    }
    return NULL;
}

static void submits_from_many_threads(void **state)
{
    stub_server *s = stub_start(answer, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome first;
    run_one(e, call_to(e, stub_port(s), "/echo", 5000), &first); /* libcurl is set up */
    submitter *sb = calloc(SUBMITTERS, sizeof *sb);
    for (int t = 0; t < SUBMITTERS; t++) {
        sb[t].e = e;
        sb[t].port = stub_port(s);
        assert_int_equal(pthread_create(&sb[t].self, NULL, submit_many, &sb[t]), 0);
    }
    for (int t = 0; t < SUBMITTERS; t++) {
        void *err;
        pthread_join(sb[t].self, &err);
        assert_null(err);
    }
    wait_for(SUBMITTERS * PER_SUBMITTER);
    for (int t = 0; t < SUBMITTERS; t++)
        for (int i = 0; i < PER_SUBMITTER; i++) {
            outcome *o = &sb[t].o[i];
            char want[128];
            snprintf(want, sizeof want, "GET /echo x-test=%p-%d expect= body=", (void *)&sb[t], i);
            assert_int_equal(o->curl_code, CURLE_OK);
            assert_string_equal(o->body, want);
            assert_true(pthread_equal(o->thread, first.thread));
        }
    assert_int_equal(vg_engine_inflight(e), 0);
    free(sb);
    vg_engine_free(e);
    stub_stop(s);
}

/* ---- connection reuse ---- */

static void reuses_connections(void **state)
{
    stub_server *s = stub_start(answer, NULL, true);
    vg_engine *e;
    assert_int_equal(vg_engine_new(&e), VG_OK);
    outcome o;
    for (int i = 0; i < 50; i++) {
        run_one(e, call_to(e, stub_port(s), "/echo", 5000), &o);
        assert_int_equal(o.status, 200);
    }
    printf("# 50 sequential calls: %u connections accepted\n", stub_accepted(s));
    assert_int_equal(stub_accepted(s), 1);
    vg_engine_free(e);
    stub_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(timeout_and_refused),
        cmocka_unit_test(answer_cap),
        cmocka_unit_test(many_hanging_calls),
        cmocka_unit_test(timers),
        cmocka_unit_test(free_with_calls_in_flight),
        cmocka_unit_test(submits_from_many_threads),
        cmocka_unit_test(reuses_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
