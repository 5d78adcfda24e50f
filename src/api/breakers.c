/* The breaker half of the gating API (SPEC §5): applications that call
 * providers themselves ask voxgate before a call (acquire) and report the
 * outcome after it (record). Unknown provider names get a breaker with
 * the default settings, up to breakers.max_count, then 429 breaker_limit. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "voxgate/breaker.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"

/* ---- shared pieces ---- */

/* The breaker named by the path, created on demand; replies and returns
 * NULL when there is none to be had. */
static vg_breaker *path_breaker(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    size_t len = 0;
    const char *p = vg_req_param(r, 0, &len);
    char name[VG_IDENT_MAX + 1];
    if (!p || len > VG_IDENT_MAX) {
        vg_reply_error(r, 400, "invalid_parameter", "provider must match [A-Za-z0-9_.-]{1,64}");
        return NULL;
    }
    memcpy(name, p, len);
    name[len] = '\0';
    vg_breaker *b = NULL;
    int rc = vg_breakers_get(app->breakers, name, true, &b);
    if (rc == VG_EINVAL)
        vg_reply_error(r, 400, "invalid_parameter", "provider must match [A-Za-z0-9_.-]{1,64}");
    else if (rc == VG_ETOOBIG)
        vg_reply_error(r, 429, "breaker_limit",
                       "no breaker for '%s': %u breakers already exist for unconfigured "
                       "providers (breakers.max_count)",
                       name, vg_breakers_max_created(app->breakers));
    else if (rc != VG_OK)
        vg_reply_error(r, 503, "out_of_memory", "cannot create a breaker");
    if (rc != VG_OK)
        return NULL;
    vg_req_set_provider(r, vg_breaker_name(b));
    return b;
}

static void add_time(cJSON *o, const char *key, uint64_t ms)
{
    char ts[32];
    if (!ms) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    vg_format_rfc3339_ms(ms, ts);
    cJSON_AddStringToObject(o, key, ts);
}

static void add_settings(cJSON *o, const vg_breaker_settings *s)
{
    cJSON *j = cJSON_AddObjectToObject(o, "settings");
    if (!j)
        return;
    cJSON_AddNumberToObject(j, "failure_threshold", s->failure_threshold);
    cJSON_AddNumberToObject(j, "failure_rate_threshold", s->failure_rate_threshold);
    cJSON_AddNumberToObject(j, "window_size", s->window_size);
    cJSON_AddNumberToObject(j, "min_calls", s->min_calls);
    cJSON_AddNumberToObject(j, "recovery_timeout_ms", s->recovery_timeout_ms);
    cJSON_AddNumberToObject(j, "half_open_max_calls", s->half_open_max_calls);
    cJSON_AddNumberToObject(j, "success_threshold", s->success_threshold);
    cJSON_AddNumberToObject(j, "call_timeout_ms", s->call_timeout_ms);
}

static void add_counts(cJSON *o, const vg_breaker_snapshot *s)
{
    cJSON *c = cJSON_AddObjectToObject(o, "counts");
    if (!c)
        return;
    cJSON_AddNumberToObject(c, "permitted", (double)s->permitted);
    cJSON_AddNumberToObject(c, "rejected", (double)s->rejected);
    cJSON_AddNumberToObject(c, "successes", (double)s->successes);
    cJSON_AddNumberToObject(c, "failures", (double)s->failures);
    cJSON_AddNumberToObject(c, "timeouts", (double)s->timeouts);
    cJSON_AddNumberToObject(c, "transitions",
                            (double)(s->to_open + s->to_half_open + s->to_closed));
    cJSON_AddNumberToObject(c, "opened", (double)s->to_open);
}

static cJSON *breaker_json(vg_app *app, vg_breaker *b)
{
    vg_breaker_snapshot s;
    vg_breaker_snapshot_get(b, &s);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "provider", vg_breaker_name(b));
    cJSON_AddStringToObject(o, "state", vg_breaker_state_name(s.state));
    cJSON_AddBoolToObject(o, "available", s.available);
    cJSON_AddBoolToObject(o, "configured", vg_breakers_is_configured(app->breakers, b));
    cJSON_AddNumberToObject(o, "failure_rate", s.failure_rate);
    cJSON_AddNumberToObject(o, "consecutive_failures", s.consecutive_failures);
    cJSON_AddNumberToObject(o, "window_calls", s.window_calls);
    cJSON_AddNumberToObject(o, "window_failures", s.window_failures);
    add_time(o, "opened_at", s.opened_at_ms);
    add_time(o, "next_probe_at", s.next_probe_at_ms);
    cJSON *p = cJSON_AddObjectToObject(o, "probes");
    if (p) {
        cJSON_AddNumberToObject(p, "issued", s.probes_issued);
        cJSON_AddNumberToObject(p, "in_flight", s.probes_in_flight);
        cJSON_AddNumberToObject(p, "successes", s.probe_successes);
    }
    add_counts(o, &s);
    cJSON_AddNumberToObject(o, "mean_latency_ms",
                            s.latency_count ? (double)s.latency_sum_us / 1000.0 /
                                                  (double)s.latency_count
                                            : 0.0);
    add_settings(o, vg_breaker_get_settings(b));
    return o;
}

/* A body that must be a JSON object; replies and returns NULL otherwise.
 * An empty body counts as {} when empty_ok. */
static cJSON *body_object(vg_req *r, bool empty_ok)
{
    size_t len;
    const char *body = vg_req_body(r, &len);
    if (len == 0 && empty_ok)
        return cJSON_CreateObject();
    if (len == 0) {
        vg_reply_error(r, 400, "missing_body", "the body must be a JSON object");
        return NULL;
    }
    cJSON *doc = vg_json_parse_exact(body, len);
    if (!doc || !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        vg_reply_error(r, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return doc;
}

/* First member of o not listed in the space-separated names, or NULL. */
static const char *unknown_member(const cJSON *o, const char *names)
{
    for (const cJSON *c = o->child; c; c = c->next)
        if (!vg_route_query_allowed(names, c->string))
            return c->string;
    return NULL;
}

/* ---- handlers ---- */

static int by_name(const void *a, const void *b)
{
    return strcmp(vg_breaker_name(*(vg_breaker *const *)a),
                  vg_breaker_name(*(vg_breaker *const *)b));
}

void vg_api_breakers_list(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    size_t n = vg_breakers_count(app->breakers);
    vg_breaker **v = malloc((n ? n : 1) * sizeof *v);
    cJSON *o = v ? cJSON_CreateObject() : NULL;
    cJSON *all = o ? cJSON_AddArrayToObject(o, "breakers") : NULL;
    cJSON *avail = o ? cJSON_AddArrayToObject(o, "available") : NULL;
    if (!all || !avail) {
        free(v);
        vg_api_reply_json(r, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = vg_breakers_at(app->breakers, i);
    qsort(v, n, sizeof *v, by_name);
    for (size_t i = 0; i < n; i++) {
        cJSON *b = breaker_json(app, v[i]);
        cJSON_AddItemToArray(all, b);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "available")))
            cJSON_AddItemToArray(avail, cJSON_CreateString(vg_breaker_name(v[i])));
    }
    free(v);
    vg_api_reply_json(r, o);
}

void vg_api_breaker_get(vg_req *r)
{
    vg_breaker *b = path_breaker(r);
    if (b)
        vg_api_reply_json(r, breaker_json(vg_req_app(r), b));
}

void vg_api_breaker_acquire(vg_req *r)
{
    cJSON *doc = body_object(r, true);
    if (!doc)
        return;
    if (doc->child) {
        const char *bad = doc->child->string; /* owned by doc: reply before freeing it */
        vg_reply_error(r, 400, "unknown_field", "unknown field '%.64s' (acquire takes none)",
                       bad ? bad : "");
        cJSON_Delete(doc);
        return;
    }
    cJSON_Delete(doc);
    vg_breaker *b = path_breaker(r);
    if (!b)
        return;
    vg_breaker_permit p;
    vg_breaker_acquire(b, &p);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddBoolToObject(o, "allowed", p.allowed);
        cJSON_AddStringToObject(o, "state", vg_breaker_state_name(p.state));
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)p.id);
        if (p.id)
            cJSON_AddStringToObject(o, "permit_id", id);
        if (!p.allowed && p.retry_after_ms)
            cJSON_AddNumberToObject(o, "retry_after_ms", (double)p.retry_after_ms);
    }
    vg_api_reply_json(r, o);
}

typedef struct record_req {
    int outcome;
    uint64_t latency_us;
    uint64_t permit_id;
} record_req;

/* Validate the record body; replies and returns false on bad input. */
static bool parse_record(vg_req *r, const cJSON *doc, record_req *q)
{
    const char *bad = unknown_member(doc, "outcome latency_ms permit_id");
    if (bad) {
        vg_reply_error(r, 400, "unknown_field", "unknown field '%.64s'", bad);
        return false;
    }
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(doc, "outcome");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(doc, "latency_ms");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(doc, "permit_id");
    q->outcome = cJSON_IsString(o) ? vg_breaker_outcome_parse(o->valuestring) : -1;
    if (!o) {
        vg_reply_error(r, 400, "missing_parameter", "outcome is required");
        return false;
    }
    if (q->outcome < 0) {
        vg_reply_error(r, 400, "invalid_outcome", "outcome must be success, failure or timeout");
        return false;
    }
    /* Up to a day in milliseconds; fractions are kept to the microsecond. */
    if (l && (!cJSON_IsNumber(l) || !isfinite(l->valuedouble) || l->valuedouble < 0 ||
              l->valuedouble > 86400000.0)) {
        vg_reply_error(r, 400, "invalid_latency",
                       "latency_ms must be a number from 0 to 86400000");
        return false;
    }
    q->latency_us = l ? (uint64_t)llround(l->valuedouble * 1000.0) : 0;
    q->permit_id = 0;
    if (p && (!cJSON_IsString(p) || !vg_parse_u64(p->valuestring, &q->permit_id) ||
              q->permit_id == 0)) {
        vg_reply_error(r, 400, "invalid_permit",
                       "permit_id must be the string an acquire of this breaker returned");
        return false;
    }
    return true;
}

void vg_api_breaker_record(vg_req *r)
{
    cJSON *doc = body_object(r, false);
    if (!doc)
        return;
    record_req q;
    bool ok = parse_record(r, doc, &q);
    cJSON_Delete(doc);
    vg_breaker *b = ok ? path_breaker(r) : NULL;
    if (!b)
        return;
    vg_breaker_state st;
    if (vg_breaker_record(b, (vg_breaker_outcome)q.outcome, q.latency_us, q.permit_id, &st) !=
        VG_OK) {
        vg_reply_error(r, 400, "no_permit",
                       "the breaker is half_open: only a call that acquire let through "
                       "may be recorded, with the permit_id it returned");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddBoolToObject(o, "recorded", true);
        cJSON_AddStringToObject(o, "state", vg_breaker_state_name(st));
    }
    vg_api_reply_json(r, o);
}

void vg_api_breaker_reset(vg_req *r)
{
    vg_breaker *b = path_breaker(r);
    if (!b)
        return;
    vg_breaker_reset(b);
    vg_log(VG_LOG_INFO, vg_req_id(r), "breaker reset",
           (vg_log_field[]){VG_LS("provider", vg_breaker_name(b))}, 1);
    vg_api_reply_json(r, breaker_json(vg_req_app(r), b));
}

void vg_api_breakers_reset(vg_req *r)
{
    size_t n = vg_breakers_reset_all(vg_req_app(r)->breakers);
    vg_log(VG_LOG_INFO, vg_req_id(r), "every breaker reset",
           (vg_log_field[]){VG_LU("count", n)}, 1);
    char out[48];
    int len = snprintf(out, sizeof out, "{\"reset\":%zu}", n);
    vg_reply(r, 200, "application/json", out, (size_t)len, NULL, 0);
}
