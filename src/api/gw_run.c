/* The gateway's miss path (SPEC §5 "Order of a gateway request"): the
 * providers and their admission state, single flights, the chain runner
 * with retries, cool-downs and fallbacks, the store thread, and the
 * members that wait for a flight with their own deadlines.
 *
 * Threads: a flight's steps run one after another, each started by the
 * previous one's completion: on the HTTP worker that led it, on the
 * engine's event thread (HTTP answers, timers), on a local provider's
 * worker, or on the thread that released a concurrency slot. Storage
 * runs on its own thread so neither the engine nor a worker waits on S3
 * or Redis. A member is answered on its own HTTP worker after
 * vg_req_resume. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "api.h"
#include "gateway.h"
#include "tiers.h"
#include "voxgate/entry.h"
#include "voxgate/limiter.h"
#include "voxgate/log.h"

/* Results waiting to be persisted; past it they stay in L1 only. */
#define GW_STORE_QUEUE_MAX 4096

static struct {
    vg_app *app;
    vg_engine *engine;
    vg_flights *flights;
    gw_prov provs[VG_MAX_PROVIDERS];
    size_t n;
    vg_provider_conf local_conf;   /* the implicit local provider when none is configured */
    vg_counter coalesced, deadline_504, store_errors;
    /* the store thread */
    pthread_t store_tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gw_call *store_head, *store_tail;
    size_t store_len;
    bool stopping, started;
    atomic_bool halting;           /* vg_gateway_stop began: flights end, none start */
} gw = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ---- jobs and chains ---- */

gw_job *gw_job_new(gw_api api, const char *rid)
{
    gw_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->api = api;
    j->kind = api == GW_TTS || api == GW_SPEECH ? VG_KIND_TTS : VG_KIND_STT;
    snprintf(j->rid, sizeof j->rid, "%s", rid);
    return j;
}

void gw_job_free(gw_job *j)
{
    if (!j)
        return;
    free(j->text);
    free(j->instructions);
    free(j->prompt);
    vg_buf_free(&j->audio);
    free(j);
}

static gw_prov *prov_by_name(const char *name)
{
    for (size_t i = 0; i < gw.n; i++)
        if (!strcmp(gw.provs[i].conf->name, name))
            return &gw.provs[i];
    return NULL;
}

bool gw_chain(gw_job *j, const char *const *names, size_t n, char *msg, size_t msglen)
{
    j->n = 0;
    if (!n) { /* the default chain: every gateway provider in the file's order */
        for (size_t i = 0; i < gw.n && j->n < VG_MAX_CHAIN; i++)
            j->t[j->n++].gp = &gw.provs[i];
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        gw_prov *gp = prov_by_name(names[i]);
        if (!gp) {
            snprintf(msg, msglen, "no gateway provider '%s' is configured", names[i]);
            return false;
        }
        j->t[j->n++].gp = gp;
    }
    return true;
}

void gw_target_defaults(const gw_job *j, gw_target *t)
{
    const vg_provider_conf *c = t->gp->conf;
    bool tts = j->kind == VG_KIND_TTS;
    const char *voice = j->voice[0] ? vg_provider_voice(c, j->voice) : c->voice[0] ? c->voice
                      : t->gp->p->ops->default_voice(t->gp->p, j->language);
    snprintf(t->voice, sizeof t->voice, "%s", tts ? voice : "");
    /* The request's model is an OpenAI model name: only an openai-type
     * provider gets it as is; the others use their configured or own. */
    const char *cm = tts ? c->tts_model : c->stt_model;
    const vg_provider_ops *ops = t->gp->p->ops;
    const char *dflt = ops->default_model ? ops->default_model(t->gp->p, j->kind) : "";
    const char *model = !strcmp(c->type, "openai") && j->model[0] ? j->model : cm[0] ? cm : dflt;
    snprintf(t->model, sizeof t->model, "%s", model);
}

void gw_answer_provider(gw_answer *a, const gw_prov *gp) { a->provider = gp->conf->name; }

/* ---- results shared by a flight's members ---- */

typedef struct gw_result {
    _Atomic int refs;
    unsigned status;          /* 200, or the error's status */
    const char *code;         /* error code */
    char message[300];
    uint64_t retry_after_s;   /* 0 = no Retry-After */
    const gw_prov *gp;        /* the provider that answered */
    vg_buf body;
    char ctype[96];
    char sha256[VG_SHA256_HEX + 1];
    char key[VG_KEY_MAX];     /* the entry's key */
    char language[65];
    char format[16];
    uint32_t duration_ms;
    /* Persistence to L2 and the blob store happens after the answer (the
     * result is in L1 first). A JSON-mode TTS member needs the stored
     * audio for its audio_url, so it waits on url_wait until then. */
    pthread_mutex_t mu;
    enum { P_NONE, P_PENDING, P_DONE } persist;
    bool from_l1;             /* a hit found by the leader's second look (l1_recheck) */
    bool stored;
    struct gw_wait *url_wait;
} gw_result;

/* Answered when not even an error result can be allocated; never freed. */
static gw_result oom_result = {.status = 503, .code = "out_of_memory",
                               .message = "out of memory", .refs = 1 << 30,
                               .mu = PTHREAD_MUTEX_INITIALIZER};

static void result_unref(gw_result *res)
{
    if (res && atomic_fetch_sub(&res->refs, 1) == 1) {
        vg_buf_free(&res->body);
        pthread_mutex_destroy(&res->mu);
        free(res);
    }
}

static void result_release(void *cls) { result_unref(cls); }

/* ---- members: requests waiting for a flight ---- */

enum { W_WAITING, W_READY, W_TIMED_OUT };

typedef struct gw_wait {
    vg_body_sink sink;        /* first: the server hands it back */
    _Atomic int refs;         /* the request, the flight, the deadline timer */
    pthread_mutex_t mu;
    vg_req *r;                /* NULL once the request is over */
    gw_api api;
    int state;
    bool leader;
    gw_result *res;
    uint64_t timer;
    struct gw_wait *url_next;  /* on res->url_wait */
} gw_wait;

static void wait_unref(gw_wait *w)
{
    if (atomic_fetch_sub(&w->refs, 1) == 1) {
        result_unref(w->res);
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

static void reply_result(vg_req *r, gw_api api, const gw_result *res, bool leader)
{
    if (res->status != 200) {
        char ra[24];
        snprintf(ra, sizeof ra, "%llu", (unsigned long long)res->retry_after_s);
        vg_header h[] = {{"Retry-After", res->retry_after_s ? ra : NULL}, {"X-Cache", "MISS"}};
        gw_reply_error(r, api, res->status, res->code, h, 2, res->message);
        return;
    }
    pthread_mutex_lock(&((gw_result *)res)->mu);
    bool stored = res->stored; /* meaningful once persisted (wait_for_url) */
    pthread_mutex_unlock(&((gw_result *)res)->mu);
    gw_answer a = {.cache = res->from_l1 ? "hit_l1" : leader ? "miss" : "coalesced",
                   .data = res->body.data,
                   .len = res->body.len, .ctype = res->ctype, .format = res->format,
                   .language = res->language, .key = res->key, .stored = stored,
                   .duration_ms = res->duration_ms, .release = result_release,
                   .release_cls = (void *)res};
    atomic_fetch_add(&((gw_result *)res)->refs, 1); /* the reply's, for zero copy */
    gw_answer_provider(&a, res->gp);
    snprintf(a.sha256, sizeof a.sha256, "%s", res->sha256);
    gw_answer_send(r, api, &a);
}

/* A JSON-mode TTS answer carries an audio_url, which needs the audio
 * stored: while that is pending the member parks again on the result,
 * and the store thread wakes it. True when it parked. */
static bool wait_for_url(gw_wait *w, vg_req *r)
{
    gw_result *res = w->res;
    if (w->api != GW_TTS || res->status != 200 || !gw_wants_json(r))
        return false;
    pthread_mutex_lock(&res->mu);
    bool pending = res->persist == P_PENDING;
    if (pending) {
        atomic_fetch_add(&w->refs, 1); /* the list's */
        w->url_next = res->url_wait;
        res->url_wait = w;
    }
    pthread_mutex_unlock(&res->mu);
    /* Stopping: answer now, without the URL (the store thread still
     * drops the list's reference). */
    return pending && vg_req_suspend(r);
}

/* The connection woke: answer, or park again (a spurious wake). */
static void wait_finish(vg_body_sink *s, vg_req *r)
{
    gw_wait *w = (gw_wait *)s;
    pthread_mutex_lock(&w->mu);
    int state = w->state;
    pthread_mutex_unlock(&w->mu);
    if (state == W_READY && wait_for_url(w, r))
        return;
    if (state == W_READY)
        reply_result(r, w->api, w->res, w->leader);
    else if (state == W_TIMED_OUT)
        gw_reply_error(r, w->api, 504, "provider_timeout", NULL, 0,
                       "no answer from the providers within gateway.timeout_ms");
    else if (!vg_req_suspend(r))
        gw_reply_error(r, w->api, 503, "shutting_down", NULL, 0, "voxgate is shutting down");
}

static void wait_release(vg_body_sink *s, bool ok)
{
    gw_wait *w = (gw_wait *)s;
    pthread_mutex_lock(&w->mu);
    w->r = NULL;
    pthread_mutex_unlock(&w->mu);
    wait_unref(w);
}

/* Wake the member with a new state, unless it was already decided. */
static bool wait_settle(gw_wait *w, int state, gw_result *res)
{
    pthread_mutex_lock(&w->mu);
    bool won = w->state == W_WAITING;
    if (won) {
        w->state = state;
        if (res) {
            atomic_fetch_add(&res->refs, 1);
            w->res = res;
        }
    }
    vg_wake wk = won ? vg_req_unpark(w->r) : (vg_wake){NULL};
    pthread_mutex_unlock(&w->mu); /* before the wake: wait_finish takes it */
    vg_req_wake(wk);
    return won;
}

static void wait_deadline(void *ud)
{
    gw_wait *w = ud;
    if (wait_settle(w, W_TIMED_OUT, NULL))
        vg_counter_inc(&gw.deadline_504);
    wait_unref(w);
}

/* The flight's callback for each member. */
static void wait_done(void *ud, void *result)
{
    gw_wait *w = ud;
    /* While halting the engine runs every timer as it stops, which drops
     * the timer's reference; cancelling then would race with that. */
    if (wait_settle(w, W_READY, result) && !atomic_load(&gw.halting) &&
        vg_engine_cancel(gw.engine, w->timer))
        wait_unref(w); /* the timer's reference: it will never run */
    wait_unref(w);
}

static gw_wait *wait_new(gw_api api, vg_req *r)
{
    gw_wait *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->sink = (vg_body_sink){NULL, wait_finish, wait_release};
    pthread_mutex_init(&w->mu, NULL);
    w->r = r;
    w->api = api;
    atomic_store(&w->refs, 1);
    return w;
}

/* ---- a flight's run ---- */

typedef struct gw_call {
    gw_job *job;
    vg_flight *flight;
    size_t idx;               /* the target being tried */
    uint32_t attempt;         /* attempts made on it */
    uint64_t deadline_ms;     /* monotonic */
    uint64_t permit;          /* the breaker permit of the attempt */
    uint64_t t0_ns;
    /* what happened so far, for the final error */
    bool saw_timeout, saw_failure, saw_quota, saw_auth, last_was_timeout, last_was_garbage;
    uint64_t min_wait_ms;     /* earliest time a skipped provider may take calls */
    bool any_wait;
    char last_msg[256];
    gw_result *res;
    struct gw_call *next;     /* the store queue */
} gw_call;

static uint64_t mono_ms(void) { return vg_mono_ns() / 1000000u; }

static gw_result *result_new(unsigned status, const char *code)
{
    gw_result *res = calloc(1, sizeof *res);
    if (res) {
        atomic_store(&res->refs, 1);
        pthread_mutex_init(&res->mu, NULL);
        res->status = status;
        res->code = code;
    }
    return res;
}

static void call_free(gw_call *c)
{
    gw_job_free(c->job);
    free(c);
}

/* The end of a flight: every member gets res. */
static void call_finish(gw_call *c, gw_result *res)
{
    vg_flight_finish(gw.flights, c->flight, res ? res : &oom_result);
    if (res)
        result_unref(res);
    call_free(c);
}

static void call_fail(gw_call *c, unsigned status, const char *code, uint64_t retry_after_s,
                      const char *fmt, const char *arg)
{
    gw_result *res = result_new(status, code);
    if (res) {
        snprintf(res->message, sizeof res->message, fmt, arg);
        res->retry_after_s = retry_after_s;
    }
    call_finish(c, res);
}

/* Every provider was skipped or failed: the answer SPEC §5 and
 * providers.md §9 give for what was seen. */
static void call_exhausted(gw_call *c)
{
    if (c->saw_timeout && c->last_was_timeout)
        call_fail(c, 504, "provider_timeout", 0, "%s", c->last_msg);
    else if (c->saw_failure || c->saw_timeout)
        call_fail(c, 502, c->last_was_garbage ? "bad_provider_response" : "provider_error", 0,
                  "%s", c->last_msg);
    else if (c->saw_quota)
        call_fail(c, 502, "provider_quota_exhausted", 0, "%s", c->last_msg);
    else if (c->saw_auth)
        call_fail(c, 502, "provider_auth_failed", 0, "%s", c->last_msg);
    else {
        uint64_t s = c->any_wait ? (c->min_wait_ms + 999) / 1000 : 1;
        call_fail(c, 503, "providers_unavailable", s ? s : 1, "%s",
                  c->last_msg[0] ? c->last_msg : "no provider can take the call now");
    }
}

static void note_wait(gw_call *c, uint64_t ms, const char *why, const char *name)
{
    if (!c->any_wait || ms < c->min_wait_ms)
        c->min_wait_ms = ms;
    c->any_wait = true;
    snprintf(c->last_msg, sizeof c->last_msg, "%s: %s", name, why);
}

static void call_next(gw_call *c);
static void call_attempt(gw_call *c);

static void next_target(gw_call *c)
{
    c->idx++;
    c->attempt = 0;
    call_next(c);
}

/* Admission of the current target, in SPEC §5's order; false when it is
 * skipped (noted in c). Taking the concurrency slot comes after this. */
static bool admit(gw_call *c, gw_prov *gp)
{
    const char *name = gp->conf->name;
    uint64_t now = vg_clock_ms(), cool = atomic_load(&gp->cool_until_ms);
    if (cool > now) {
        note_wait(c, cool - now, "cooling down after a 429", name);
        return false;
    }
    if (vg_breaker_state_now(gp->breaker) == VG_BREAKER_OPEN) {
        vg_breaker_snapshot s;
        vg_breaker_snapshot_get(gp->breaker, &s);
        note_wait(c, s.next_probe_at_ms > now ? s.next_probe_at_ms - now : 0, "circuit open",
                  name);
        return false;
    }
    if (gp->conf->rate_limit[0]) {
        vg_rl_result rl;
        int rc = vg_api_policy_check(gw.app, c->job->rid, gp->conf->rate_limit, name, &rl);
        if (rc != VG_OK || !rl.allowed) {
            note_wait(c, rc == VG_OK ? rl.retry_after_ms : 1000,
                      rc == VG_OK ? "over its rate limit" : "rate limiter unavailable", name);
            return false;
        }
    }
    return true;
}

static void slot_granted(void *ud) { call_attempt(ud); }

static void call_next(gw_call *c)
{
    if (atomic_load(&gw.halting)) {
        call_fail(c, 503, "shutting_down", 1, "%s", "voxgate is shutting down");
        return;
    }
    for (; c->idx < c->job->n; c->idx++, c->attempt = 0) {
        gw_prov *gp = c->job->t[c->idx].gp;
        if (!admit(c, gp)) {
            vg_counter_inc(&gp->skipped);
            continue;
        }
        uint64_t ticket;
        int rc = vg_bulkhead_acquire(gp->slots, slot_granted, c, &ticket);
        if (rc == VG_OK) {
            call_attempt(c);
            return;
        }
        if (rc == VG_NOTFOUND)
            return; /* queued: slot_granted continues */
        vg_counter_inc(&gp->skipped);
        note_wait(c, 100, "all concurrency slots and its queue are full", gp->conf->name);
    }
    call_exhausted(c);
}

static void on_done(void *ud, vg_presult *pr);

/* The slot is ours: take a breaker permit and start one attempt. */
static void call_attempt(gw_call *c)
{
    gw_target *t = &c->job->t[c->idx];
    gw_prov *gp = t->gp;
    uint64_t now = mono_ms();
    if (now >= c->deadline_ms) {
        vg_bulkhead_release(gp->slots);
        c->saw_timeout = c->last_was_timeout = true;
        snprintf(c->last_msg, sizeof c->last_msg, "the request's time budget ran out");
        call_exhausted(c);
        return;
    }
    vg_breaker_permit bp;
    if (!vg_breaker_acquire(gp->breaker, &bp)) {
        vg_bulkhead_release(gp->slots);
        note_wait(c, bp.retry_after_ms, "circuit open", gp->conf->name);
        next_target(c);
        return;
    }
    c->permit = bp.id;
    uint64_t left = c->deadline_ms - now;
    t->job.timeout_ms = (uint32_t)(left < gp->conf->timeout_ms ? left : gp->conf->timeout_ms);
    c->attempt++;
    c->t0_ns = vg_mono_ns();
    vg_counter_inc(&gp->calls);
    if (vg_provider_start(gp->p, &t->job, on_done, c) != VG_OK) {
        vg_breaker_record(gp->breaker, VG_OUTCOME_SUCCESS, 0, c->permit, NULL);
        vg_bulkhead_release(gp->slots);
        note_wait(c, 100, "cannot start a call (its queue is full)", gp->conf->name);
        next_target(c);
    }
}

/* Backoff before retry n: full jitter over min(max, base * 2^n). */
static uint64_t backoff_ms(const vg_provider_conf *pc, uint32_t n)
{
    uint64_t cap = pc->retry_base_ms;
    for (uint32_t i = 0; i < n && cap < pc->retry_max_ms; i++)
        cap *= 2;
    if (cap > pc->retry_max_ms)
        cap = pc->retry_max_ms;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint32_t)vg_mono_ns();
    return cap ? rnd % cap : 0;
}

static void retry_timer(void *ud)
{
    gw_call *c = ud;
    gw_prov *gp = c->job->t[c->idx].gp;
    if (atomic_load(&gw.halting) || !admit(c, gp)) {
        next_target(c);
        return;
    }
    uint64_t ticket;
    int rc = vg_bulkhead_acquire(gp->slots, slot_granted, c, &ticket);
    if (rc == VG_OK)
        call_attempt(c);
    else if (rc != VG_NOTFOUND)
        next_target(c);
}

static void log_call(gw_call *c, gw_prov *gp, const vg_presult *pr, uint64_t us)
{
    vg_log_field f[] = {
        VG_LS("provider", gp->conf->name), VG_LS("outcome", vg_pr_status_name(pr->status)),
        VG_LU("status", pr->http_status), VG_LU("attempt", c->attempt), VG_LMS("duration_ms", us),
        VG_LS("upstream_id", pr->upstream_id[0] ? pr->upstream_id : NULL),
        VG_LS("error", pr->status != VG_PR_OK ? pr->message : NULL),
    };
    vg_log(pr->status == VG_PR_OK ? VG_LOG_INFO : VG_LOG_WARN, c->job->rid, "provider call", f,
           VG_ARRAY_LEN(f));
}

static void store_enqueue(gw_call *c);

static void on_success(gw_call *c, gw_prov *gp, vg_presult *pr)
{
    gw_target *t = &c->job->t[c->idx];
    gw_result *res = result_new(200, NULL);
    if (!res) {
        call_finish(c, NULL);
        return;
    }
    res->body = pr->body;
    pr->body = (vg_buf){0};
    res->gp = gp;
    res->duration_ms = pr->duration_ms;
    snprintf(res->ctype, sizeof res->ctype, "%s",
             c->job->kind == VG_KIND_TTS ? pr->content_type : "application/json");
    snprintf(res->key, sizeof res->key, "%.*s", (int)t->klen, t->key);
    snprintf(res->language, sizeof res->language, "%s", t->parts.language);
    bool tts = c->job->kind == VG_KIND_TTS;
    snprintf(res->format, sizeof res->format, "%s", tts ? c->job->format : c->job->response_format);
    /* Audio's ETag and blob name; the store thread reuses the digest. A
     * transcript has neither. */
    if (tts)
        vg_sha256_hex(res->body.data ? res->body.data : "", res->body.len, res->sha256);
    /* Into L1 and answered now; L2 and the blob store follow on the
     * store thread (their fsyncs would be most of a miss's overhead).
     * An identical request meanwhile is an L1 hit. */
    vg_app *app = gw.app;
    uint64_t now = vg_clock_ms();
    uint64_t ttl = (tts ? app->cfg->cache.tts_ttl_s : app->cfg->cache.stt_ttl_s) * 1000u;
    vg_l1_put(app->l1, t->key, t->klen, res->body.data, res->body.len, res->ctype,
              tts ? res->sha256 : NULL, now, now + ttl);
    res->persist = P_PENDING;
    atomic_fetch_add(&res->refs, 1); /* the store thread's */
    c->res = res;
    vg_flight_finish(gw.flights, c->flight, res);
    c->flight = NULL;
    result_unref(res);
    store_enqueue(c);
}

/* A failed attempt: retry it, or move on (providers.md §9). */
static void on_failure(gw_call *c, gw_prov *gp, const vg_presult *pr)
{
    const vg_provider_conf *pc = gp->conf;
    snprintf(c->last_msg, sizeof c->last_msg, "%s", pr->message);
    switch (pr->status) {
    case VG_PR_RATE_LIMITED: {
        uint64_t ms = pr->retry_after_ms ? pr->retry_after_ms : pc->cooldown_default_ms;
        if (ms > pc->cooldown_max_ms)
            ms = pc->cooldown_max_ms;
        atomic_store(&gp->cool_until_ms, vg_clock_ms() + ms);
        vg_counter_inc(&gp->cooldowns);
        note_wait(c, ms, "answered 429; cooling down", pc->name);
        next_target(c);
        return;
    }
    case VG_PR_QUOTA:
        c->saw_quota = true;
        next_target(c);
        return;
    case VG_PR_AUTH:
        c->saw_auth = true;
        next_target(c);
        return;
    case VG_PR_INPUT:
        call_fail(c, 400, "provider_rejected_input", 0, "%s", pr->message);
        return;
    default:
        break;
    }
    bool timeout = pr->status == VG_PR_TIMEOUT;
    c->saw_timeout |= timeout;
    c->saw_failure |= !timeout;
    c->last_was_timeout = timeout;
    c->last_was_garbage = pr->status == VG_PR_BAD_RESPONSE;
    bool retryable = pr->status == VG_PR_RETRYABLE || pr->status == VG_PR_CONNECT || timeout;
    uint64_t wait = backoff_ms(pc, c->attempt - 1), now = mono_ms();
    if (retryable && c->attempt <= pc->max_retries && now + wait < c->deadline_ms) {
        vg_counter_inc(&gp->retries);
        if (vg_engine_after(gw.engine, wait, retry_timer, c))
            return;
    }
    next_target(c);
}

/* A provider's answer to one attempt: on the engine's or the provider's thread. */
static void on_done(void *ud, vg_presult *pr)
{
    gw_call *c = ud;
    gw_prov *gp = c->job->t[c->idx].gp;
    uint64_t us = (vg_mono_ns() - c->t0_ns) / 1000u;
    vg_hist_observe_us(&gp->latency_us, us);
    vg_bulkhead_release(gp->slots);
    bool failure = pr->status == VG_PR_RETRYABLE || pr->status == VG_PR_CONNECT ||
                   pr->status == VG_PR_BAD_RESPONSE || pr->status == VG_PR_INTERNAL;
    vg_breaker_outcome o = pr->status == VG_PR_TIMEOUT ? VG_OUTCOME_TIMEOUT
                         : failure ? VG_OUTCOME_FAILURE : VG_OUTCOME_SUCCESS;
    vg_breaker_record(gp->breaker, o, us, c->permit, NULL);
    if (o != VG_OUTCOME_SUCCESS)
        vg_counter_inc(o == VG_OUTCOME_TIMEOUT ? &gp->timeouts : &gp->failures);
    log_call(c, gp, pr, us);
    if (pr->status == VG_PR_OK)
        on_success(c, gp, pr);
    else
        on_failure(c, gp, pr);
}

/* ---- storing results (the store thread) ---- */

/* The answer went out already: the entry goes to L2 (and its audio to
 * the blob store first), then L1 again with its final expiry. */
static bool store_stt(gw_call *c, gw_target *t, gw_result *res)
{
    vg_app *app = gw.app;
    uint64_t now = vg_clock_ms(), ttl = app->cfg->cache.stt_ttl_s * 1000u;
    vg_buf val = {0};
    bool ok = vg_stt_entry_encode(&val, t->parts.provider, t->parts.language, now,
                                  res->body.data, res->body.len) == VG_OK &&
              vg_tier_l2_set(app, t->key, t->klen, val.data, val.len, ttl) == VG_OK;
    vg_buf_free(&val);
    return ok;
}

static bool store_tts(gw_call *c, gw_target *t, gw_result *res)
{
    vg_app *app = gw.app;
    vg_tts_meta m;
    int kv_rc = VG_OK;
    return vg_tier_tts_store(app, c->job->rid, &t->parts, t->key, t->klen, res->body.data,
                             res->body.len, res->ctype, res->sha256,
                             app->cfg->cache.tts_ttl_s * 1000u, &m, &kv_rc) == VG_TTS_STORED;
}

static void store_done(gw_call *c, bool ok);

static void store_one(gw_call *c)
{
    gw_target *t = &c->job->t[c->idx];
    gw_result *res = c->res;
    store_done(c, c->job->kind == VG_KIND_TTS ? store_tts(c, t, res) : store_stt(c, t, res));
}

/* Persisting ended (or was given up): wake the members waiting for it. */
static void store_done(gw_call *c, bool ok)
{
    gw_result *res = c->res;
    if (!ok) {
        /* SPEC §6: the answer went out anyway; the loss is counted and logged. */
        vg_counter_inc(&gw.store_errors);
        vg_log(VG_LOG_WARN, c->job->rid, "gateway result not cached",
               (vg_log_field[]){VG_LS("provider", c->job->t[c->idx].gp->conf->name)}, 1);
    }
    c->res = NULL;
    pthread_mutex_lock(&res->mu);
    res->stored = ok;
    res->persist = P_DONE;
    gw_wait *list = res->url_wait;
    res->url_wait = NULL;
    pthread_mutex_unlock(&res->mu);
    while (list) {
        gw_wait *w = list, *next = w->url_next;
        pthread_mutex_lock(&w->mu);
        vg_wake wk = vg_req_unpark(w->r);
        pthread_mutex_unlock(&w->mu);
        vg_req_wake(wk);
        wait_unref(w);
        list = next;
    }
    result_unref(res);
    call_free(c);
}

static void *store_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "vg-store");
    pthread_mutex_lock(&gw.mu);
    for (;;) {
        while (!gw.store_head && !gw.stopping)
            pthread_cond_wait(&gw.cv, &gw.mu);
        gw_call *c = gw.store_head;
        if (!c)
            break;
        gw.store_head = c->next;
        if (!gw.store_head)
            gw.store_tail = NULL;
        gw.store_len--;
        pthread_mutex_unlock(&gw.mu);
        store_one(c);
        pthread_mutex_lock(&gw.mu);
    }
    pthread_mutex_unlock(&gw.mu);
    return NULL;
}

static void store_enqueue(gw_call *c)
{
    c->next = NULL;
    pthread_mutex_lock(&gw.mu);
    if (gw.store_len >= GW_STORE_QUEUE_MAX) {
        /* Overload: the result stays in L1 only, so memory stays bounded. */
        pthread_mutex_unlock(&gw.mu);
        store_done(c, false);
        return;
    }
    gw.store_len++;
    if (gw.store_tail)
        gw.store_tail->next = c;
    else
        gw.store_head = c;
    gw.store_tail = c;
    pthread_cond_signal(&gw.cv);
    pthread_mutex_unlock(&gw.mu);
}

/* ---- a miss ---- */

/* The single-flight key: every target's cache key, so that only requests
 * that would get the same answer from the same chain share a call. */
static bool flight_key(const gw_job *j, vg_buf *k)
{
    for (size_t i = 0; i < j->n; i++)
        if (vg_buf_append(k, j->t[i].key, j->t[i].klen) != VG_OK || vg_buf_puts(k, "\n") != VG_OK)
            return false;
    return true;
}

/* A member that cannot wait: it is parked already, so it is answered
 * like any other member, through its own result. */
static void wait_fail(gw_wait *w, unsigned status, const char *code, const char *msg)
{
    gw_result *res = result_new(status, code);
    if (res) {
        snprintf(res->message, sizeof res->message, "%s", msg);
        res->retry_after_s = 1;
    }
    wait_settle(w, W_READY, res ? res : &oom_result);
    result_unref(res);
}

/* A flight that finished between this request's L1 lookup and its join
 * put its result in L1 before finishing: look again before calling. */
static gw_result *l1_recheck(vg_app *app, gw_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        gw_target *t = &j->t[i];
        vg_l1_item *it = vg_l1_get(app->l1, t->key, t->klen);
        if (!it)
            continue;
        gw_result *res = result_new(200, NULL);
        if (res && vg_buf_append(&res->body, it->data, it->len) != VG_OK) {
            result_unref(res);
            res = NULL;
        }
        if (res) {
            res->gp = t->gp;
            res->from_l1 = true;
            res->stored = true;
            snprintf(res->ctype, sizeof res->ctype, "%s", it->ctype);
            snprintf(res->sha256, sizeof res->sha256, "%s", it->sha256);
            snprintf(res->key, sizeof res->key, "%.*s", (int)t->klen, t->key);
            snprintf(res->language, sizeof res->language, "%s", t->parts.language);
            snprintf(res->format, sizeof res->format, "%s",
                     j->kind == VG_KIND_TTS ? j->format : j->response_format);
        }
        vg_l1_release(it);
        return res ? res : &oom_result;
    }
    return NULL;
}

static void lead(vg_app *app, vg_flight *f, gw_job *j)
{
    gw_result *hit = l1_recheck(app, j);
    if (hit) {
        vg_flight_finish(gw.flights, f, hit);
        result_unref(hit);
        gw_job_free(j);
        return;
    }
    gw_call *c = calloc(1, sizeof *c);
    if (!c) {
        vg_flight_finish(gw.flights, f, &oom_result);
        gw_job_free(j);
        return;
    }
    c->job = j;
    c->flight = f;
    c->deadline_ms = mono_ms() + app->cfg->gateway.timeout_ms;
    call_next(c);
}

void gw_miss(vg_req *r, gw_api api, gw_job *j)
{
    vg_app *app = vg_req_app(r);
    vg_buf key = {0};
    gw_wait *w = NULL;
    if (!flight_key(j, &key) || !(w = wait_new(api, r))) {
        gw_reply_error(r, api, 503, "out_of_memory", NULL, 0, "out of memory");
        goto out;
    }
    /* SPEC §5: the client limit applies to calls voxgate makes, not to
     * hits nor to joining a call already in flight. */
    if (!vg_flight_exists(gw.flights, key.data, key.len) && app->v1_gate && !app->v1_gate(r))
        goto out;
    /* Park before joining: from the join on, the result may come at any time. */
    if (!vg_req_defer(r, &w->sink)) {
        gw_reply_error(r, api, 503, "shutting_down", NULL, 0, "voxgate is shutting down");
        goto out;
    }
    atomic_fetch_add(&w->refs, 2); /* the request's (the sink's release) and the timer's */
    w->timer = vg_engine_after(gw.engine, app->cfg->gateway.timeout_ms, wait_deadline, w);
    if (!w->timer)
        atomic_fetch_sub(&w->refs, 1);
    vg_flight *f;
    bool leader;
    atomic_fetch_add(&w->refs, 1); /* the flight's */
    int rc = vg_flight_join(gw.flights, key.data, key.len, wait_done, w, &f, &leader);
    if (rc != VG_OK) {
        atomic_fetch_sub(&w->refs, 1);
        wait_fail(w, 503, rc == VG_ETOOBIG ? "too_many_calls" : "out_of_memory",
                  "too many provider calls in flight (gateway.max_inflight)");
        goto out;
    }
    w->leader = leader;
    if (!leader) {
        vg_counter_inc(&gw.coalesced);
        vg_counter_inc(&j->t[0].gp->coalesced);
    } else {
        lead(app, f, j);
        j = NULL;
    }
out:
    vg_buf_free(&key);
    gw_job_free(j);
    if (w)
        wait_unref(w);
}

/* ---- /v1/models and /v1/voices ---- */

static void add_model(cJSON *data, const char *id, const char *const *chain, size_t n)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "voxgate");
    cJSON *a = cJSON_AddArrayToObject(m, "providers");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(chain[i]));
    cJSON_AddItemToArray(data, m);
}

/* OpenAI's list shape; each configured model with its chain, and
 * "default", the chain of a request that names no model. */
void vg_api_gw_models(vg_req *r)
{
    const vg_config *cfg = vg_req_app(r)->cfg;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(doc, "data");
    for (size_t i = 0; i < cfg->n_models; i++) {
        const char *chain[VG_MAX_CHAIN];
        for (size_t k = 0; k < cfg->models[i].n_chain; k++)
            chain[k] = cfg->models[i].chain[k];
        add_model(data, cfg->models[i].name, chain, cfg->models[i].n_chain);
    }
    const char *all[VG_MAX_PROVIDERS];
    for (size_t i = 0; i < gw.n; i++)
        all[i] = gw.provs[i].conf->name;
    if (!vg_config_model(cfg, "default"))
        add_model(data, "default", all, gw.n < VG_MAX_CHAIN ? gw.n : VG_MAX_CHAIN);
    vg_api_reply_json(r, doc);
}

/* Every voice a provider lists, tagged with the provider. */
void vg_api_gw_voices(vg_req *r)
{
    cJSON *doc = cJSON_CreateObject(), *all = cJSON_AddArrayToObject(doc, "voices");
    for (size_t i = 0; i < gw.n; i++) {
        vg_provider *p = gw.provs[i].p;
        cJSON *list = p->ops->voices ? p->ops->voices(p) : NULL, *v;
        while (list && (v = cJSON_DetachItemFromArray(list, 0))) {
            cJSON_AddStringToObject(v, "provider", gw.provs[i].conf->name);
            cJSON_AddItemToArray(all, v);
        }
        cJSON_Delete(list);
    }
    vg_api_reply_json(r, doc);
}

bool vg_gateway_ready(char *detail, size_t cap)
{
    for (size_t i = 0; i < gw.n; i++) {
        vg_provider *p = gw.provs[i].p;
        if (!p->ops->ready || p->ops->ready(p))
            return true;
    }
    snprintf(detail, cap, "no provider is ready");
    return gw.n == 0;
}

/* ---- wiring ---- */

static void register_prov(gw_prov *gp)
{
    char l[96], path[128];
    const char *name = gp->conf->name;
    snprintf(l, sizeof l, "provider=\"%s\"", name);
#define P(leaf) (snprintf(path, sizeof path, "providers.%s.%s", name, leaf), path)
    vg_metrics_counter("voxgate_provider_calls_total", l, "Provider attempts started.",
                       P("calls"), &gp->calls);
    vg_metrics_counter("voxgate_provider_failures_total", l,
                       "Attempts that failed (5xx, connection, bad answer).", P("failures"),
                       &gp->failures);
    vg_metrics_counter("voxgate_provider_timeouts_total", l, "Attempts that timed out.",
                       P("timeouts"), &gp->timeouts);
    vg_metrics_counter("voxgate_provider_retries_total", l, "Retries after retryable errors.",
                       P("retries"), &gp->retries);
    vg_metrics_counter("voxgate_provider_coalesced_total", l,
                       "Requests that joined a call already in flight.", P("coalesced"),
                       &gp->coalesced);
    vg_metrics_counter("voxgate_provider_cooldowns_total", l, "429 answers that cooled it down.",
                       P("cooldowns"), &gp->cooldowns);
    vg_metrics_counter("voxgate_provider_skipped_total", l,
                       "Times it was passed over (open, cooling down, rate limit, slots full).",
                       P("skipped"), &gp->skipped);
    vg_metrics_hist("voxgate_provider_latency_seconds", l, "Attempt latency.", P("latency"),
                    &gp->latency_us);
#undef P
}

static double open_flights(void *ud)
{
    (void)ud;
    return gw.flights ? (double)vg_flights_open(gw.flights) : 0;
}

static void register_gateway(void)
{
    vg_metrics_counter("voxgate_gateway_coalesced_total", NULL,
                       "Requests that joined an identical call in flight.", "gateway.coalesced",
                       &gw.coalesced);
    vg_metrics_counter("voxgate_gateway_deadline_total", NULL,
                       "Requests answered 504 at their own deadline.", "gateway.deadline_504",
                       &gw.deadline_504);
    vg_metrics_counter("voxgate_gateway_store_errors_total", NULL,
                       "Provider results that could not be cached.", "gateway.store_errors",
                       &gw.store_errors);
    vg_metrics_gauge("voxgate_gateway_inflight_calls", NULL, "Distinct provider calls in flight.",
                     "gateway.inflight_calls", open_flights, NULL);
}

static int add_prov(vg_app *app, const vg_provider_conf *pc, char *err, size_t errlen)
{
    gw_prov *gp = &gw.provs[gw.n];
    memset(gp, 0, sizeof *gp);
    gp->conf = pc;
    if (vg_provider_new(pc, gw.engine, &gp->p, err, errlen) != 0)
        return -1;
    /* The implicit local provider's breaker counts as configured, not
     * against breakers.max_count. */
    if (pc == &gw.local_conf)
        vg_breakers_add(app->breakers, pc->name, &pc->breaker);
    if (vg_breakers_get(app->breakers, pc->name, true, &gp->breaker) != VG_OK ||
        !(gp->slots = vg_bulkhead_new(pc->max_concurrency, pc->max_queue))) {
        snprintf(err, errlen, "providers.%s: cannot create its breaker or slots", pc->name);
        gp->p->ops->destroy(gp->p);
        return -1;
    }
    register_prov(gp);
    gw.n++;
    return 0;
}

int vg_gateway_wire(vg_app *app, char *err, size_t errlen)
{
    gw.app = app;
    if (vg_engine_new(&gw.engine) != VG_OK ||
        !(gw.flights = vg_flights_new(app->cfg->gateway.max_inflight))) {
        snprintf(err, errlen, "gateway: cannot start the provider engine");
        return -1;
    }
    for (size_t i = 0; i < app->cfg->n_providers; i++)
        if (app->cfg->providers[i].type[0] && add_prov(app, &app->cfg->providers[i], err, errlen))
            return -1;
    if (gw.n == 0) { /* SPEC §1: the offline local provider is the default */
        vg_provider_conf_defaults(&gw.local_conf, "local", app->cfg);
        snprintf(gw.local_conf.type, sizeof gw.local_conf.type, "local");
        if (add_prov(app, &gw.local_conf, err, errlen) != 0)
            return -1;
    }
    register_gateway();
    if (pthread_create(&gw.store_tid, NULL, store_main, NULL) != 0) {
        snprintf(err, errlen, "gateway: cannot start the store thread");
        return -1;
    }
    gw.started = true;
    return 0;
}

/* After vg_http_stop: no request waits any more. The engine fails the
 * calls still running, which finishes their flights; then the store
 * thread drains what they queued. */
void vg_gateway_stop(void)
{
    atomic_store(&gw.halting, true);
    vg_engine_free(gw.engine);
    gw.engine = NULL;
    for (size_t i = 0; i < gw.n; i++)
        gw.provs[i].p->ops->destroy(gw.provs[i].p);
    if (gw.started) {
        pthread_mutex_lock(&gw.mu);
        gw.stopping = true;
        pthread_cond_signal(&gw.cv);
        pthread_mutex_unlock(&gw.mu);
        pthread_join(gw.store_tid, NULL);
    }
    for (size_t i = 0; i < gw.n; i++)
        vg_bulkhead_free(gw.provs[i].slots);
    gw.n = 0;
    vg_flights_free(gw.flights);
    gw.flights = NULL;
}
