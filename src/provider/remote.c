/* What every remote provider shares: running one attempt on the engine,
 * classifying transport failures and HTTP statuses (providers.md §0, §9),
 * Retry-After parsing, and the sanitised messages a client may see.
 * A provider adds only how to build its request and read its answer. */
#include "voxgate/provider.h"

#include <ctype.h>
#include <stdarg.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "voxgate/entry.h"

const char *vg_pr_status_name(vg_pr_status s)
{
    static const char *const names[] = {
        [VG_PR_OK] = "ok", [VG_PR_RATE_LIMITED] = "rate_limited", [VG_PR_QUOTA] = "quota",
        [VG_PR_AUTH] = "auth", [VG_PR_INPUT] = "input", [VG_PR_RETRYABLE] = "retryable",
        [VG_PR_CONNECT] = "connect", [VG_PR_TIMEOUT] = "timeout",
        [VG_PR_BAD_RESPONSE] = "bad_response", [VG_PR_INTERNAL] = "internal",
    };
    return (unsigned)s < VG_ARRAY_LEN(names) && names[s] ? names[s] : "unknown";
}

void vg_presult_free(vg_presult *res)
{
    if (res)
        vg_buf_free(&res->body);
}

/* ---- Retry-After ---- */

/* Non-negative decimal with an optional fraction ("2", "1.5", "0.25"),
 * scaled by `scale`, saturating; false on anything else. */
static bool parse_decimal(const char *s, uint64_t scale, uint64_t *out)
{
    uint64_t whole = 0, frac = 0, div = 1;
    bool digits = false;
    for (; *s >= '0' && *s <= '9'; s++, digits = true)
        whole = whole > UINT64_MAX / 100 ? UINT64_MAX / 100 : whole * 10 + (uint64_t)(*s - '0');
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++, digits = true)
            if (div < 1000000) {
                frac = frac * 10 + (uint64_t)(*s - '0');
                div *= 10;
            }
    if (!digits || *s)
        return false;
    *out = whole > UINT64_MAX / scale / 2 ? UINT64_MAX : whole * scale + frac * scale / div;
    return true;
}

static void trimmed(const char *in, char *out, size_t cap)
{
    while (*in == ' ' || *in == '\t')
        in++;
    snprintf(out, cap, "%s", in);
    size_t n = strlen(out);
    while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
        out[--n] = '\0';
}

uint64_t vg_parse_retry_after(const char *retry_after, const char *retry_after_ms,
                              uint64_t now_ms, uint64_t cap_ms)
{
    char v[128];
    uint64_t ms = 0;
    /* retry-after-ms first, as the OpenAI SDK reads it; 0 is no advice. */
    if (retry_after_ms) {
        trimmed(retry_after_ms, v, sizeof v);
        if (parse_decimal(v, 1, &ms) && ms > 0)
            return ms < cap_ms ? ms : cap_ms;
    }
    if (!retry_after)
        return 0;
    trimmed(retry_after, v, sizeof v);
    if (!v[0])
        return 0;
    if (!parse_decimal(v, 1000, &ms)) {
        if (!isalpha((unsigned char)v[0])) /* HTTP-dates start with a day name */
            return 0;
        time_t t = curl_getdate(v, NULL);
        if (t < 0 || (uint64_t)t > UINT64_MAX / 1000 || (uint64_t)t * 1000 <= now_ms)
            return 0;
        ms = (uint64_t)t * 1000 - now_ms;
    }
    return ms < cap_ms ? ms : cap_ms;
}

/* ---- classification ---- */

vg_pr_status vg_pr_classify_http(long status)
{
    if (status >= 200 && status <= 299)
        return VG_PR_OK;
    if (status == 429)
        return VG_PR_RATE_LIMITED;
    if (status == 401 || status == 403)
        return VG_PR_AUTH;
    if (status == 408 || status == 409 || (status >= 500 && status <= 599))
        return VG_PR_RETRYABLE;
    if (status >= 400 && status <= 499)
        return VG_PR_INPUT;
    return VG_PR_BAD_RESPONSE; /* 1xx/3xx as a final answer: not what we asked for */
}

bool vg_pr_from_transport(const vg_http_call *c, vg_presult *res)
{
    if (c->curl_code == CURLE_OK)
        return false;
    vg_pr_status st;
    const char *what;
    switch (c->curl_code) {
    case CURLE_OPERATION_TIMEDOUT:
        st = VG_PR_TIMEOUT, what = "timed out";
        break;
    case CURLE_WRITE_ERROR:
        st = VG_PR_BAD_RESPONSE, what = "answer too large";
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        st = VG_PR_INTERNAL, what = "shutting down";
        break;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        st = VG_PR_INTERNAL, what = curl_easy_strerror((CURLcode)c->curl_code);
        break;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
        st = VG_PR_BAD_RESPONSE, what = curl_easy_strerror((CURLcode)c->curl_code);
        break;
    default: /* resolve, connect, TLS, send, receive, a cut answer: try again */
        st = VG_PR_CONNECT, what = curl_easy_strerror((CURLcode)c->curl_code);
        break;
    }
    res->status = st;
    res->http_status = c->http_status > 0 ? (unsigned)c->http_status : 0;
    snprintf(res->upstream_id, sizeof res->upstream_id, "%s", c->upstream_id);
    snprintf(res->message, sizeof res->message, "%s", what);
    return true;
}

/* ---- messages ---- */

static void token_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; src && *src && o + 1 < cap && o < 64; src++)
        if (isalnum((unsigned char)*src) || *src == '_' || *src == '.' || *src == '-')
            dst[o++] = *src;
    dst[o] = '\0';
}

void vg_remote_http_error(const vg_provider *p, const vg_http_call *c, vg_presult *res,
                          const char *code)
{
    char tok[65];
    token_copy(tok, sizeof tok, code);
    res->status = vg_pr_classify_http(c->http_status);
    snprintf(res->message, sizeof res->message, "%s: %ld%s%s", p->conf->name, c->http_status,
             tok[0] ? " " : "", tok);
}

/* A word that may be a secret: "sk-..." or a long run of key characters. */
static bool key_like(const char *w, size_t n)
{
    return (n >= 3 && !strncmp(w, "sk-", 3)) || n >= 24;
}

/* Bytes of the character at s when it is printable and valid UTF-8, else 0. */
static size_t printable_len(const char *s)
{
    unsigned char c = (unsigned char)*s;
    if (c < 0x80)
        return c >= 0x20 && c != 0x7f;
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    return strnlen(s, n) == n && vg_utf8_valid(s, n) ? n : 0;
}

void vg_remote_add_detail(vg_presult *res, const char *text)
{
    size_t o = strlen(res->message), cap = sizeof res->message;
    if (!text || !*text || o + 3 >= cap)
        return;
    res->message[o++] = ':';
    res->message[o++] = ' ';
    for (const char *s = text; *s && o + 1 < cap;) {
        size_t w = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
        const char *src = s;
        size_t n = w;
        if (w && key_like(s, w))
            src = "***", n = 3;
        else if (!w)
            n = printable_len(s);
        s += w ? w : n ? n : 1;
        if (o + n >= cap)
            break; /* never half a word or half a character */
        memcpy(res->message + o, src, n);
        o += n;
    }
    res->message[o] = '\0';
}

/* ---- answers ---- */

static bool ct_is(const char *ct, const char *prefix)
{
    return !strncasecmp(ct, prefix, strlen(prefix));
}

void vg_remote_take_audio(const vg_provider *p, vg_http_call *c, vg_presult *res,
                          const char *fallback_ct)
{
    const char *ct = c->content_type;
    if (ct_is(ct, "application/json") || ct_is(ct, "text/") || ct_is(ct, "application/problem")) {
        res->status = VG_PR_BAD_RESPONSE;
        snprintf(res->message, sizeof res->message, "%s: %ld answer is not audio (%.40s)",
                 p->conf->name, c->http_status, ct);
        return;
    }
    if (c->resp_body.len == 0) {
        res->status = VG_PR_BAD_RESPONSE;
        snprintf(res->message, sizeof res->message, "%s: %ld answer has no audio",
                 p->conf->name, c->http_status);
        return;
    }
    bool upstream = ct_is(ct, "audio/") && vg_content_type_valid(ct); /* it gets stored */
    snprintf(res->content_type, sizeof res->content_type, "%.95s", upstream ? ct : fallback_ct);
    res->status = VG_PR_OK;
    res->body = c->resp_body;
    memset(&c->resp_body, 0, sizeof c->resp_body);
}

/* ---- configuration ---- */

int vg_remote_url(const vg_provider *p, const char *dflt, const char *path, vg_buf *out)
{
    const char *base = p->conf->base_url[0] ? p->conf->base_url : dflt;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    vg_buf_reset(out);
    if (vg_buf_append(out, base, n) != VG_OK || vg_buf_puts(out, path) != VG_OK)
        return VG_ENOMEM;
    return VG_OK;
}

int vg_remote_key(const vg_provider_conf *conf, char **key, char *err, size_t errlen)
{
    *key = NULL;
    if (!conf->api_key_env[0])
        return VG_OK;
    const char *v = getenv(conf->api_key_env);
    if (!v || !*v) {
        snprintf(err, errlen, "providers.%s.api_key_env: %s is not set", conf->name,
                 conf->api_key_env);
        return -1;
    }
    if (strpbrk(v, "\r\n")) {
        snprintf(err, errlen, "providers.%s.api_key_env: %s holds a line break", conf->name,
                 conf->api_key_env);
        return -1;
    }
    *key = strdup(v);
    if (!*key) {
        snprintf(err, errlen, "providers.%s: out of memory", conf->name);
        return -1;
    }
    return VG_OK;
}

/* ---- one attempt ---- */

typedef struct attempt {
    vg_provider *p;
    const vg_job *job;
    vg_remote_parse_fn parse;
    vg_provider_done done;
    void *ud;
} attempt;

void vg_remote_result(vg_provider *p, const vg_job *job, vg_http_call *c,
                      vg_remote_parse_fn parse, vg_presult *res)
{
    memset(res, 0, sizeof *res);
    if (vg_pr_from_transport(c, res)) {
        char what[sizeof res->message];
        snprintf(what, sizeof what, "%s", res->message);
        snprintf(res->message, sizeof res->message, "%s: %.160s", p->conf->name, what);
        return;
    }
    res->http_status = (unsigned)c->http_status;
    snprintf(res->upstream_id, sizeof res->upstream_id, "%s", c->upstream_id);
    res->retry_after_ms = vg_parse_retry_after(c->retry_after, c->retry_after_ms, vg_clock_ms(),
                                               p->conf->cooldown_max_ms);
    res->status = vg_pr_classify_http(c->http_status);
    parse(p, job, c, res);
}

static void attempt_done(vg_http_call *c, void *arg)
{
    attempt *a = arg;
    vg_presult res;
    vg_remote_result(a->p, a->job, c, a->parse, &res);
    vg_http_call_free(c);
    a->done(a->ud, &res);
    vg_presult_free(&res);
    free(a);
}

int vg_remote_header(vg_http_call *c, const char *fmt, ...)
{
    vg_buf line = {0};
    va_list ap;
    va_start(ap, fmt);
    int rc = vg_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    struct curl_slist *h = rc == VG_OK ? curl_slist_append(c->headers, line.data) : NULL;
    if (line.data) /* it may hold a key: leave no copy behind */
        memset(line.data, 0, line.len);
    vg_buf_free(&line);
    if (!h)
        return VG_ENOMEM;
    c->headers = h;
    return VG_OK;
}

static int add_request_id(vg_http_call *c, const char *id)
{
    if (!id || !*id || strlen(id) > 128 || strpbrk(id, "\r\n"))
        return VG_OK;
    return vg_remote_header(c, "X-Request-ID: %s", id);
}

int vg_remote_start(vg_provider *p, const vg_job *job, vg_remote_build_fn build,
                    vg_remote_parse_fn parse, vg_provider_done done, void *ud)
{
    const vg_provider_conf *cf = p->conf;
    attempt *a = calloc(1, sizeof *a);
    vg_http_call *c = a ? vg_http_call_new(p->engine, job->timeout_ms, cf->connect_timeout_ms,
                                           cf->ca_file)
                        : NULL;
    if (!c) {
        free(a);
        return VG_ENOMEM;
    }
    c->max_resp_bytes = cf->max_response_bytes;
    *a = (attempt){.p = p, .job = job, .parse = parse, .done = done, .ud = ud};
    int rc = add_request_id(c, job->request_id);
    if (rc == VG_OK)
        rc = build(p, job, c);
    if (rc == VG_OK)
        rc = vg_engine_submit(p->engine, c, attempt_done, a);
    if (rc != VG_OK) {
        vg_http_call_free(c);
        free(a);
    }
    return rc;
}

/* ---- constructing a remote provider ---- */

int vg_remote_provider_new(const vg_provider_conf *conf, struct vg_engine *e,
                           const vg_provider_ops *ops, vg_provider **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    const char *base = conf->base_url;
    if (*base && strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
        snprintf(err, errlen, "providers.%s.base_url: expected an http:// or https:// URL",
                 conf->name);
        return -1;
    }
    vg_provider *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "providers.%s: out of memory", conf->name);
        return -1;
    }
    *p = (vg_provider){.ops = ops, .conf = conf, .engine = e};
    if (vg_remote_key(conf, &p->api_key, err, errlen) != VG_OK) {
        free(p);
        return -1;
    }
    *out = p;
    return VG_OK;
}

void vg_remote_provider_free(vg_provider *p)
{
    if (!p)
        return;
    if (p->api_key) {
        /* The key leaves no copy in freed memory. */
        memset(p->api_key, 0, strlen(p->api_key));
        free(p->api_key);
    }
    free(p);
}
