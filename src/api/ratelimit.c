/* The Gating API's rate limits (SPEC §5): POST /v1/ratelimit/check,
 * GET /v1/ratelimit/{key} (peek, consumes nothing) and admin DELETE
 * /v1/ratelimit/{key} (clear), ad hoc or by a configured policy; and the
 * client rate limit (ratelimit.client_policy) every /v1 request passes
 * through, per API key. Input is validated completely before the limiter
 * is called, so a bad request never writes anything. When the store is
 * down the fail_mode decides (the policy's, else ratelimit.fail_mode):
 * open allows (counted as fail_open), closed answers 503. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"
#include "voxgate/limiter.h"
#include "voxgate/log.h"

/* Counters per policy: [0] is ad hoc, [1 + i] the i-th configured policy. */
typedef struct rl_counters {
    vg_counter allowed, denied, fail_open, fail_closed, errors;
} rl_counters;
static rl_counters rl_m[VG_MAX_POLICIES + 1];

static rl_counters *counters_for(const vg_config *cfg, const vg_policy_conf *pol)
{
    return pol ? &rl_m[1 + (size_t)(pol - cfg->ratelimit.policies)] : &rl_m[0];
}

typedef struct rl_err {
    const char *code;
    char msg[160];
} rl_err;

static bool bad(rl_err *e, const char *code, const char *msg)
{
    e->code = code;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    return false;
}

static bool key_ok(const char *k, size_t n, rl_err *e)
{
    vg_rl_req probe = {.key = k, .klen = n, .limit = 1, .window_ms = 1, .cost = 1};
    if (!vg_rl_req_valid(&probe))
        return bad(e, "invalid_key", "key must be 1-256 bytes without control characters");
    return true;
}

/* Range checks shared by the body and the query forms. */
static bool req_ok(const vg_rl_req *rq, rl_err *e)
{
    if (rq->limit < 1 || rq->limit > VG_RL_LIMIT_MAX)
        return bad(e, "invalid_parameter", "limit must be an integer from 1 to 1000000");
    if (rq->window_ms < 1 || rq->window_ms > VG_RL_WINDOW_MAX_MS)
        return bad(e, "invalid_parameter",
                   "window_ms must be an integer from 1 to 2678400000 (31 days)");
    if (rq->cost < 1)
        return bad(e, "invalid_parameter", "cost must be an integer >= 1");
    if (rq->cost > rq->limit)
        return bad(e, "cost_exceeds_limit", "cost is larger than limit: never allowed");
    return true;
}

/* A JSON integer in [0, 2^53); false for anything else (2.5, "3", true). */
static bool json_uint(const cJSON *it, uint64_t *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < 0 || d >= 9007199254740992.0)
        return false;
    *out = (uint64_t)d;
    return true;
}

static bool body_field_known(const char *name)
{
    static const char *const names[] = {"key", "limit", "window_ms", "cost", "algorithm",
                                        "policy"};
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (!strcmp(name, names[i]))
            return true;
    return false;
}

static bool int_field(const cJSON *doc, const char *name, bool required, uint64_t *out,
                      rl_err *e)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, name);
    char msg[96];
    if (!it) {
        snprintf(msg, sizeof msg, "%s is required", name);
        return required ? bad(e, "missing_parameter", msg) : true;
    }
    if (!json_uint(it, out)) {
        snprintf(msg, sizeof msg, "%s must be a non-negative JSON integer", name);
        return bad(e, "invalid_parameter", msg);
    }
    return true;
}

static bool algo_field(const char *s, vg_rl_algo *a, rl_err *e)
{
    if (s && !vg_rl_algo_parse(s, a))
        return bad(e, "invalid_parameter", "algorithm must be sliding_log or gcra");
    return true;
}

/* rq's limit, window and algorithm from a configured policy. */
static bool apply_policy(const vg_config *cfg, const char *name, vg_rl_req *rq,
                         const vg_policy_conf **pol, rl_err *e)
{
    *pol = vg_config_policy(cfg, name);
    if (!*pol)
        return bad(e, "unknown_policy", "no rate-limit policy by that name is configured");
    rq->limit = (*pol)->limit;
    rq->window_ms = (*pol)->window_ms;
    vg_rl_algo_parse((*pol)->algorithm, &rq->algo);
    rq->ns = (*pol)->name;
    return true;
}

/* {policy, key, cost?}: the policy gives everything else. */
static bool parse_policy_body(const vg_config *cfg, const cJSON *doc, vg_rl_req *rq,
                              const vg_policy_conf **pol, rl_err *e)
{
    const cJSON *policy = cJSON_GetObjectItemCaseSensitive(doc, "policy");
    if (!cJSON_IsString(policy))
        return bad(e, "invalid_parameter", "policy must be a string");
    for (const cJSON *c = doc->child; c; c = c->next)
        if (strcmp(c->string, "policy") && strcmp(c->string, "key") && strcmp(c->string, "cost"))
            return bad(e, "invalid_parameter",
                       "with policy, only key and cost may be given (the policy sets the rest)");
    return apply_policy(cfg, policy->valuestring, rq, pol, e);
}

static bool parse_body(const vg_config *cfg, const cJSON *doc, vg_rl_req *rq,
                       const vg_policy_conf **pol, rl_err *e)
{
    if (!cJSON_IsObject(doc))
        return bad(e, "invalid_json", "the body must be a JSON object");
    for (const cJSON *c = doc->child; c; c = c->next)
        if (!body_field_known(c->string)) {
            char msg[96];
            snprintf(msg, sizeof msg, "unknown field '%.64s'", c->string);
            return bad(e, "unknown_field", msg);
        }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(doc, "key");
    if (!key)
        return bad(e, "missing_parameter", "key is required");
    if (!cJSON_IsString(key))
        return bad(e, "invalid_key", "key must be a string");
    if (!key_ok(key->valuestring, strlen(key->valuestring), e))
        return false;
    rq->key = key->valuestring;
    rq->klen = strlen(key->valuestring);
    rq->cost = 1;
    if (cJSON_GetObjectItemCaseSensitive(doc, "policy"))
        return parse_policy_body(cfg, doc, rq, pol, e) &&
               int_field(doc, "cost", false, &rq->cost, e) && req_ok(rq, e);
    if (!int_field(doc, "limit", true, &rq->limit, e) ||
        !int_field(doc, "window_ms", true, &rq->window_ms, e) ||
        !int_field(doc, "cost", false, &rq->cost, e))
        return false;
    const cJSON *algo = cJSON_GetObjectItemCaseSensitive(doc, "algorithm");
    if (algo && !cJSON_IsString(algo))
        return bad(e, "invalid_parameter", "algorithm must be sliding_log or gcra");
    return algo_field(algo ? algo->valuestring : NULL, &rq->algo, e) && req_ok(rq, e);
}

/* ---- replies ---- */

static void reply_result(vg_req *r, const vg_rl_result *res, bool fail_open)
{
    char lim[24], rem[24], reset[24], retry[24];
    snprintf(lim, sizeof lim, "%llu", (unsigned long long)res->limit);
    snprintf(rem, sizeof rem, "%llu", (unsigned long long)res->remaining);
    snprintf(reset, sizeof reset, "%llu", (unsigned long long)((res->reset_ms + 999) / 1000));
    uint64_t ra = (res->retry_after_ms + 999) / 1000;
    snprintf(retry, sizeof retry, "%llu", (unsigned long long)(ra ? ra : 1));
    vg_header h[] = {{"X-RateLimit-Limit", lim}, {"X-RateLimit-Remaining", rem},
                     {"X-RateLimit-Reset", reset},
                     {"Retry-After", res->allowed ? NULL : retry}};
    char out[256];
    int n = snprintf(out, sizeof out,
                     "{\"allowed\":%s,\"limit\":%llu,\"remaining\":%llu,\"reset_ms\":%llu,"
                     "\"retry_after_ms\":%llu%s}",
                     res->allowed ? "true" : "false", (unsigned long long)res->limit,
                     (unsigned long long)res->remaining, (unsigned long long)res->reset_ms,
                     (unsigned long long)res->retry_after_ms, fail_open ? ",\"fail_open\":true" : "");
    vg_reply(r, 200, "application/json", out, (size_t)n, h, VG_ARRAY_LEN(h));
}

/* The fail-mode half of decide_app, for a check whose rc is known. */
static int decide_rc(vg_app *app, const char *rid, const vg_rl_req *rq,
                     const vg_policy_conf *pol, int rc, vg_rl_result *res, bool *fail_open)
{
    rl_counters *m = counters_for(app->cfg, pol);
    *fail_open = false;
    if (rc == VG_OK) {
        if (!rq->peek)
            vg_counter_inc(res->allowed ? &m->allowed : &m->denied);
        return VG_OK;
    }
    vg_counter_inc(&m->errors);
    vg_log(VG_LOG_WARN, rid, "rate limiter store failed",
           (vg_log_field[]){VG_LS("backend", app->limiter->ops->name), VG_LI("rc", rc),
                            VG_LS("policy", pol ? pol->name : "adhoc")}, 3);
    const char *mode = pol ? pol->fail_mode : app->cfg->ratelimit.fail_mode;
    if (strcmp(mode, "open") == 0) {
        vg_counter_inc(&m->fail_open);
        *res = (vg_rl_result){.allowed = true, .limit = rq->limit, .remaining = rq->limit};
        *fail_open = true;
        return VG_OK;
    }
    vg_counter_inc(&m->fail_closed);
    return VG_EUNAVAIL;
}

/* Check rq; on a store failure apply the fail mode (the policy's, else
 * ratelimit.fail_mode). Returns VG_OK with res filled (*fail_open set when
 * allowed only because the store is down), or VG_EUNAVAIL: deny (closed). */
static int decide_app(vg_app *app, const char *rid, const vg_rl_req *rq,
                      const vg_policy_conf *pol, vg_rl_result *res, bool *fail_open)
{
    int rc = vg_limiter_check(app->limiter, rq, res);
    return decide_rc(app, rid, rq, pol, rc, res, fail_open);
}

static int decide(vg_req *r, const vg_rl_req *rq, const vg_policy_conf *pol, vg_rl_result *res,
                  bool *fail_open)
{
    return decide_app(vg_req_app(r), vg_req_id(r), rq, pol, res, fail_open);
}

int vg_api_policy_check(vg_app *app, const char *rid, const char *policy, const char *key,
                        vg_rl_result *res)
{
    const vg_policy_conf *pol;
    vg_rl_req rq = {.key = key, .klen = strlen(key), .cost = 1};
    rl_err e;
    if (!apply_policy(app->cfg, policy, &rq, &pol, &e))
        return VG_EINVAL;
    bool fail_open;
    return decide_app(app, rid, &rq, pol, res, &fail_open);
}

static void reply_closed(vg_req *r)
{
    vg_header h = {"Retry-After", "1"};
    vg_reply_error_h(r, 503, "limiter_unavailable", &h, 1,
                     "the rate limiter's store is unavailable (fail_mode closed)");
}

static void run_check(vg_req *r, const vg_rl_req *rq, const vg_policy_conf *pol)
{
    vg_rl_result res;
    bool fail_open;
    if (decide(r, rq, pol, &res, &fail_open) == VG_OK)
        reply_result(r, &res, fail_open);
    else
        reply_closed(r);
}

/* ---- the non-blocking check (a limiter with check_async: Redis) ----
 *
 * POST /v1/ratelimit/check is a hot path: the request parks, the
 * limiter's event thread runs the EVALSHA (pipelined with every other
 * parked check) and resumes it, and the answer is built here on the HTTP
 * thread again. The limiter bounds the wait by its command timeout, so a
 * hung Redis leads to the fail mode within it, as on the synchronous path. */

typedef struct rl_wait {
    vg_park park;            /* first */
    int rc;
    vg_rl_result res;
    vg_rl_req rq;            /* key not kept: the body is gone */
    const vg_policy_conf *pol;
} rl_wait;

static void rlw_free(vg_park *p) { free(p); }

/* The limiter's callback (its event thread), or the handler when the
 * check could not be queued: keep the result and wake the request. */
static void rlw_done(void *ud, int rc, const vg_rl_result *res)
{
    rl_wait *w = ud;
    w->rc = rc;
    if (res)
        w->res = *res;
    vg_park_wake(&w->park);
}

/* The result is in (MHD thread): apply the fail mode and answer. */
static void rlw_ready(vg_park *p, vg_req *r)
{
    rl_wait *w = (rl_wait *)p;
    bool fail_open;
    if (decide_rc(vg_req_app(r), vg_req_id(r), &w->rq, w->pol, w->rc, &w->res, &fail_open) ==
        VG_OK)
        reply_result(r, &w->res, fail_open);
    else
        reply_closed(r);
}

/* True when the check went the non-blocking way (the request is parked
 * and will be answered); false: check synchronously. */
static bool check_async(vg_req *r, const vg_rl_req *rq, const vg_policy_conf *pol)
{
    vg_app *app = vg_req_app(r);
    if (!vg_limiter_has_async(app->limiter))
        return false;
    rl_wait *w = calloc(1, sizeof *w);
    if (!w)
        return false;
    w->rq = *rq;
    w->rq.key = NULL;
    w->pol = pol;
    if (!vg_park_defer(&w->park, r, rlw_ready, rlw_free)) { /* stopping: check synchronously */
        free(w);
        return false;
    }
    int rc = vg_limiter_check_async(app->limiter, rq, rlw_done, w);
    if (rc != VG_OK)
        rlw_done(w, rc, NULL); /* not queued: the fail mode decides */
    return true;
}

void vg_api_ratelimit_check(vg_req *r)
{
    size_t len;
    const char *body = vg_req_body(r, &len);
    cJSON *doc = vg_json_parse_exact(body, len);
    if (!doc) {
        vg_reply_error(r, 400, "invalid_json", "the body is not exactly one JSON value");
        return;
    }
    vg_rl_req rq = {0};
    rl_err e;
    const vg_policy_conf *pol = NULL;
    if (parse_body(vg_req_app(r)->cfg, doc, &rq, &pol, &e)) {
        if (!check_async(r, &rq, pol))
            run_check(r, &rq, pol);
    } else {
        vg_reply_error(r, 400, e.code, "%s", e.msg);
    }
    cJSON_Delete(doc);
}

static bool query_uint(vg_req *r, const char *name, bool required, uint64_t *out, rl_err *e)
{
    const char *v = vg_req_query(r, name);
    char msg[96];
    if (!v) {
        snprintf(msg, sizeof msg, "%s is required", name);
        return required ? bad(e, "missing_parameter", msg) : true;
    }
    if (!vg_parse_u64(v, out)) {
        snprintf(msg, sizeof msg, "%s must be a non-negative integer", name);
        return bad(e, "invalid_parameter", msg);
    }
    return true;
}

/* GET: peek; DELETE (admin): clear. */
void vg_api_ratelimit_key(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    size_t klen;
    const char *key = vg_req_param(r, 0, &klen);
    char k[VG_RL_KEY_MAX + 1];
    rl_err e;
    if (!key || klen > VG_RL_KEY_MAX || !key_ok(key, klen, &e)) {
        vg_reply_error(r, 400, "invalid_key", "key must be 1-256 bytes without control characters");
        return;
    }
    memcpy(k, key, klen);
    k[klen] = '\0';
    const char *pname = vg_req_query(r, "policy");
    const vg_policy_conf *pol = NULL;
    vg_rl_req rq = {.key = k, .klen = klen, .cost = 1, .peek = true};
    if (pname && !apply_policy(app->cfg, pname, &rq, &pol, &e)) {
        vg_reply_error(r, 400, e.code, "%s", e.msg);
        return;
    }
    if (vg_req_method(r) == VG_M_DELETE) {
        int rc = vg_limiter_clear(app->limiter, rq.ns, k, klen);
        if (rc < 0)
            vg_reply_error(r, 503, "limiter_unavailable", "the rate limiter's store is unavailable");
        else
            vg_reply(r, 204, NULL, "", 0, NULL, 0);
        return;
    }
    bool own = !pol; /* without a policy, the query gives limit, window and algorithm */
    bool mixed = pol && (vg_req_query(r, "limit") || vg_req_query(r, "window_ms") ||
                         vg_req_query(r, "algorithm"));
    if ((mixed && !bad(&e, "invalid_parameter", "with policy, only cost may be given")) ||
        (own && (!query_uint(r, "limit", true, &rq.limit, &e) ||
                 !query_uint(r, "window_ms", true, &rq.window_ms, &e) ||
                 !algo_field(vg_req_query(r, "algorithm"), &rq.algo, &e))) ||
        !query_uint(r, "cost", false, &rq.cost, &e) || !req_ok(&rq, &e)) {
        vg_reply_error(r, 400, e.code, "%s", e.msg);
        return;
    }
    run_check(r, &rq, pol);
}

/* ---- the client rate limit on /v1 (ratelimit.client_policy) ---- */

#define CLIENT_ID_MAX 64

/* Who is calling. With keys configured, auth has checked the bearer
 * token: a digest of it (never the key itself). Without, a token is
 * unchecked and anyone could take a fresh budget with a made-up one, so
 * the peer address is the client ("ip:..."; behind a proxy, the proxy). */
static void client_id(vg_req *r, char out[CLIENT_ID_MAX])
{
    const vg_config *cfg = vg_req_app(r)->cfg;
    const char *hv = vg_req_header(r, "Authorization");
    if (cfg->n_api_keys + cfg->n_admin_keys == 0 || !hv || strncasecmp(hv, "Bearer ", 7) != 0) {
        char ip[48];
        vg_req_peer(r, ip, sizeof ip);
        snprintf(out, CLIENT_ID_MAX, "ip:%s", ip);
        return;
    }
    char hex[VG_SHA256_HEX + 1];
    vg_sha256_hex(hv + 7, strlen(hv + 7), hex);
    snprintf(out, CLIENT_ID_MAX, "%.32s", hex);
}

bool vg_api_client_limit(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    const vg_policy_conf *pol = vg_config_policy(app->cfg, app->cfg->ratelimit.client_policy);
    if (!pol)
        return true;
    char id[CLIENT_ID_MAX];
    client_id(r, id);
    vg_rl_req rq = {.key = id, .klen = strlen(id), .cost = 1};
    rl_err e;
    apply_policy(app->cfg, pol->name, &rq, &pol, &e);
    vg_rl_result res;
    bool fail_open;
    if (decide(r, &rq, pol, &res, &fail_open) != VG_OK) {
        reply_closed(r);
        return false;
    }
    char lim[24], rem[24], reset[24], retry[24];
    snprintf(lim, sizeof lim, "%llu", (unsigned long long)res.limit);
    snprintf(rem, sizeof rem, "%llu", (unsigned long long)res.remaining);
    snprintf(reset, sizeof reset, "%llu", (unsigned long long)((res.reset_ms + 999) / 1000));
    if (res.allowed) {
        /* The client sees its budget on every answer, not only at 429 (a
         * reply that carries its own X-RateLimit-*, a check's, wins). Not
         * when the store is down: the budget is unknown then. */
        if (fail_open)
            return true;
        vg_req_add_header(r, "X-RateLimit-Limit", lim);
        vg_req_add_header(r, "X-RateLimit-Remaining", rem);
        vg_req_add_header(r, "X-RateLimit-Reset", reset);
        return true;
    }
    uint64_t ra = (res.retry_after_ms + 999) / 1000;
    snprintf(retry, sizeof retry, "%llu", (unsigned long long)(ra ? ra : 1));
    vg_header h[] = {{"X-RateLimit-Limit", lim}, {"X-RateLimit-Remaining", rem},
                     {"X-RateLimit-Reset", reset}, {"Retry-After", retry}};
    vg_reply_error_h(r, 429, "rate_limited", h, VG_ARRAY_LEN(h),
                     "over the client rate limit '%s'; retry in %llu ms", pol->name,
                     (unsigned long long)res.retry_after_ms);
    return false;
}

static void register_policy(const char *name, rl_counters *m)
{
    char l[96], path[128];
    snprintf(l, sizeof l, "policy=\"%s\"", name);
#define P(leaf) (snprintf(path, sizeof path, "ratelimit.%s.%s", name, leaf), path)
    vg_metrics_counter("voxgate_ratelimit_allowed_total", l, "Rate-limit checks allowed.",
                       P("allowed"), &m->allowed);
    vg_metrics_counter("voxgate_ratelimit_denied_total", l, "Rate-limit checks denied.",
                       P("denied"), &m->denied);
    vg_metrics_counter("voxgate_ratelimit_fail_open_total", l,
                       "Checks allowed because the store was down (fail_mode open).",
                       P("fail_open"), &m->fail_open);
    vg_metrics_counter("voxgate_ratelimit_fail_closed_total", l,
                       "Checks refused with 503 because the store was down (fail_mode closed).",
                       P("fail_closed"), &m->fail_closed);
    vg_metrics_counter("voxgate_ratelimit_errors_total", l, "Checks the store could not answer.",
                       P("errors"), &m->errors);
#undef P
}

/* Policy names are identifiers, so they are safe in labels and paths;
 * "adhoc" is the checks that name no policy. */
void vg_api_register_ratelimit_metrics(vg_app *app)
{
    register_policy("adhoc", &rl_m[0]);
    for (size_t i = 0; i < app->cfg->ratelimit.n_policies; i++)
        register_policy(app->cfg->ratelimit.policies[i].name, &rl_m[1 + i]);
}
