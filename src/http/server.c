/* libmicrohttpd glue: one request's life from the first header to the
 * access log line. Everything a handler should not have to think about
 * happens here, in this order: request id, size limits, routing (404/405),
 * auth (401/403), query whitelist, body limits (413) and content type
 * (415), then the handler, then one JSON log line and the metrics. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/app.h"
#include "voxgate/http.h"
#include "voxgate/log.h"

struct vg_req {
    struct MHD_Connection *conn;
    vg_app *app;
    vg_route_match match;
    unsigned method;
    const char *method_name;
    const char *path;
    uint64_t t0_ns;
    uint64_t body_limit;
    vg_buf body;
    bool expect_body;
    bool chunked;           /* Transfer-Encoding other than identity */
    uint64_t declared_len;  /* Content-Length parsed once; 0 when absent or bad */
    bool responded;
    bool raw_sent;          /* a 413 was written to the socket mid-body */
    uint64_t linger_until_ns;
    uint64_t linger_bytes;
    bool admin;
    unsigned status;
    uint64_t resp_bytes;
    const char *cache_tag;
    const char *provider;
    char error_code[48];    /* a copy: codes may live on a handler's stack */
    vg_body_sink *sink;     /* the body is streamed to it, not buffered */
    bool waited;            /* the last sink call parked the connection */
    bool parked;            /* suspended; guarded by srv.park_mu */
    bool on_io;             /* a vg-io thread runs its work: replies are held */
    struct MHD_Response *held;  /* that reply, queued once back on the MHD thread */
    unsigned held_status;
    vg_req *park_prev, *park_next;
    char id[VG_REQID_MAX + 1];
    /* vg_req_add_header's, sent with whatever reply comes */
    struct { const char *name; char value[32]; } extra[VG_REQ_EXTRA_MAX];
    size_t nextra;
};

static struct {
    struct MHD_Daemon *daemon;
    vg_app *app;
    const vg_route *routes;
    size_t nroutes;
    atomic_int inflight;
    uint16_t port;
    /* The listening socket MHD_quiesce_daemon handed back: its threads may
     * still use it until MHD_stop_daemon returns, so it is closed after. */
    MHD_socket quiesced;
    struct { vg_handler handler, start; } hooks[4];
    size_t nhooks;
    /* Parked connections, so that a stop can wake them: MHD_stop_daemon
     * must not run while any connection is suspended. */
    pthread_mutex_t park_mu;
    vg_req *parked;
    bool stopping;
    atomic_int waking;      /* unparked, MHD_resume_connection not yet returned */
} srv = {.park_mu = PTHREAD_MUTEX_INITIALIZER, .quiesced = MHD_INVALID_SOCKET};

/* ---- accessors ---- */

const char *vg_req_id(const vg_req *r) { return r->id; }
unsigned vg_req_method(const vg_req *r) { return r->method; }
const char *vg_req_path(const vg_req *r) { return r->path; }
vg_app *vg_req_app(const vg_req *r) { return r->app; }
bool vg_req_is_admin(const vg_req *r) { return r->admin; }
bool vg_req_has_body(const vg_req *r) { return r->body.len > 0; }
void vg_req_set_cache(vg_req *r, const char *tag) { r->cache_tag = tag; }
void vg_req_set_provider(vg_req *r, const char *p) { r->provider = p; }

const char *vg_req_query(vg_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *vg_req_header(vg_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void vg_req_peer(vg_req *r, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    const void *a = !sa                         ? NULL
                  : sa->sa_family == AF_INET  ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                  : sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                                              : NULL;
    if (!a || !inet_ntop(sa->sa_family, a, out, (socklen_t)cap))
        snprintf(out, cap, "unknown");
}

const char *vg_req_param(const vg_req *r, size_t i, size_t *len)
{
    if (i >= r->match.nparams)
        return NULL;
    if (len)
        *len = r->match.params[i].n;
    return r->match.params[i].p;
}

const char *vg_req_body(const vg_req *r, size_t *len)
{
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

/* ---- replies ---- */

static bool header_given(const vg_header *hdrs, size_t nh, const char *name)
{
    for (size_t i = 0; i < nh; i++)
        if (hdrs[i].value && strcasecmp(hdrs[i].name, name) == 0)
            return true;
    return false;
}

bool vg_req_add_header(vg_req *r, const char *name, const char *value)
{
    size_t n = strlen(value);
    if (r->nextra == VG_REQ_EXTRA_MAX || n >= sizeof r->extra[0].value)
        return false;
    r->extra[r->nextra].name = name;
    memcpy(r->extra[r->nextra].value, value, n + 1);
    r->nextra++;
    return true;
}

/* Hands resp to MHD (on the connection's MHD thread) and drops our reference. */
static void send_now(vg_req *r, unsigned status, struct MHD_Response *resp)
{
    if (MHD_queue_response(r->conn, status, resp) != MHD_YES)
        vg_log(VG_LOG_WARN, r->id, "response could not be queued", NULL, 0);
    MHD_destroy_response(resp);
    r->responded = true;
}

static void queue(vg_req *r, unsigned status, struct MHD_Response *resp, const char *ctype,
                  size_t len, const vg_header *hdrs, size_t nh)
{
    if (!resp) {
        /* Out of memory: nothing better to do than drop the connection
         * (off the MHD thread, io_finish answers instead). */
        if (!r->on_io) {
            r->responded = true;
            r->status = 500;
        }
        return;
    }
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-ID", r->id);
    for (size_t i = 0; i < nh; i++)
        if (hdrs[i].value)
            MHD_add_response_header(resp, hdrs[i].name, hdrs[i].value);
    for (size_t i = 0; i < r->nextra; i++)
        if (!header_given(hdrs, nh, r->extra[i].name))
            MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
    if (r->on_io) { /* off the MHD thread: sent once back on it (io_finish) */
        if (r->held) {
            vg_log(VG_LOG_WARN, r->id, "response could not be queued", NULL, 0);
            MHD_destroy_response(resp);
            return;
        }
        r->held = resp;
        r->held_status = status;
    } else {
        send_now(r, status, resp);
    }
    r->status = status;
    r->resp_bytes = r->method == VG_M_HEAD ? 0 : len;
}

void vg_reply(vg_req *r, unsigned status, const char *ctype, const void *body, size_t len,
              const vg_header *hdrs, size_t nh)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    queue(r, status, resp, ctype, len, hdrs, nh);
}

void vg_reply_buf(vg_req *r, unsigned status, const char *ctype, vg_buf *body,
                  const vg_header *hdrs, size_t nh)
{
    size_t len = body->len;
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
        len, body->data ? body->data : (char *)"", body->data ? free : NULL, body->data);
    if (resp)
        *body = (vg_buf){0};
    queue(r, status, resp, ctype, len, hdrs, nh);
}

void vg_reply_ref(vg_req *r, unsigned status, const char *ctype, const void *data, size_t len,
                  void (*release)(void *cls), void *cls, const vg_header *hdrs, size_t nh)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback_cls(len, (void *)data, release, cls);
    if (!resp)
        release(cls);
    queue(r, status, resp, ctype, len, hdrs, nh);
}

void vg_reply_fd(vg_req *r, unsigned status, const char *ctype, int fd, uint64_t off,
                 uint64_t len, const vg_header *hdrs, size_t nh)
{
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, off);
    if (!resp)
        close(fd);
    queue(r, status, resp, ctype, (size_t)len, hdrs, nh);
}

typedef struct header_iter {
    bool (*fn)(void *ud, const char *name, const char *value);
    void *ud;
} header_iter;

static enum MHD_Result each_header(void *cls, enum MHD_ValueKind kind, const char *k,
                                   const char *v)
{
    header_iter *it = cls;
    return it->fn(it->ud, k, v ? v : "") ? MHD_YES : MHD_NO;
}

void vg_req_each_header(vg_req *r, bool (*fn)(void *ud, const char *name, const char *value),
                        void *ud)
{
    header_iter it = {fn, ud};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, each_header, &it);
}

/* Never called for HEAD; ends the stream should MHD ever ask. */
static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

void vg_reply_head(vg_req *r, unsigned status, const char *ctype, uint64_t len,
                   const vg_header *hdrs, size_t nh)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(len, 4096, no_body, NULL, NULL);
    queue(r, status, resp, ctype, 0, hdrs, nh);
}

/* {"error":{"code","message","request_id"}} */
static void error_body(vg_buf *b, const char *code, const char *msg, const char *id)
{
    vg_buf_puts(b, "{\"error\":{\"code\":");
    vg_buf_json_str(b, code, strlen(code));
    vg_buf_puts(b, ",\"message\":");
    vg_buf_json_str(b, msg, strlen(msg));
    vg_buf_puts(b, ",\"request_id\":");
    vg_buf_json_str(b, id, strlen(id));
    vg_buf_puts(b, "}}");
}

static void reply_error_v(vg_req *r, unsigned status, const char *code, const vg_header *hdrs,
                          size_t nh, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    vg_buf b = {0};
    error_body(&b, code, msg, r->id);
    snprintf(r->error_code, sizeof r->error_code, "%s", code);
    vg_reply_buf(r, status, "application/json", &b, hdrs, nh);
    vg_buf_free(&b);
}

void vg_reply_error(vg_req *r, unsigned status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, NULL, 0, fmt, ap);
    va_end(ap);
}

void vg_reply_error_h(vg_req *r, unsigned status, const char *code, const vg_header *hdrs,
                      size_t nh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(r, status, code, hdrs, nh, fmt, ap);
    va_end(ap);
}

/* ---- checks before the handler ---- */

typedef struct {
    size_t bytes;
    size_t count;
} size_acc;

static enum MHD_Result sum_kv(void *cls, enum MHD_ValueKind kind, const char *k, size_t kl,
                              const char *v, size_t vl)
{
    size_acc *a = cls;
    a->bytes += kl + vl + 4; /* ": " and CRLF, or "=" and "&" */
    a->count++;
    return MHD_YES;
}

static bool check_sizes(vg_req *r)
{
    const vg_config *cfg = r->app->cfg;
    size_acc h = {0}, q = {0};
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, sum_kv, &h);
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, sum_kv, &q);
    if (strlen(r->path) + q.bytes > cfg->limits.max_url_bytes) {
        vg_reply_error(r, 414, "uri_too_long", "request target is over %u bytes",
                       cfg->limits.max_url_bytes);
        return false;
    }
    if (h.bytes > cfg->limits.max_header_bytes) {
        vg_reply_error(r, 431, "headers_too_large", "request headers are over %u bytes",
                       cfg->limits.max_header_bytes);
        return false;
    }
    return true;
}

static bool check_route(vg_req *r)
{
    vg_router_match(srv.routes, srv.nroutes, r->method, r->path, &r->match);
    if (r->match.route)
        return true;
    if (!r->match.allow) {
        vg_reply_error(r, 404, "not_found", "no such route: %s", r->path);
        return false;
    }
    char allow[96];
    vg_methods_format(r->match.allow, allow, sizeof allow);
    vg_header h = {"Allow", allow};
    vg_reply_error_h(r, 405, "method_not_allowed", &h, 1, "%s is not allowed here; use %s",
                     r->method_name, allow);
    return false;
}

/* Constant time over every configured key: no early exit on a match. */
static bool key_in(char *const *keys, size_t n, const char *tok, size_t tlen)
{
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= vg_consttime_eq(keys[i], strlen(keys[i]), tok, tlen);
    return found;
}

static bool check_auth(vg_req *r)
{
    const vg_route *rt = r->match.route;
    const vg_config *cfg = r->app->cfg;
    bool keys_set = cfg->n_api_keys + cfg->n_admin_keys > 0;
    if (rt->auth == VG_AUTH_OPEN || !keys_set) {
        r->admin = !keys_set;
        return true;
    }
    /* A signed file URL is its own credential; the handler checks it. */
    if (rt->auth == VG_AUTH_SIGNED && (r->method & (VG_M_GET | VG_M_HEAD)) &&
        vg_req_query(r, "sig"))
        return true;
    const char *hv = vg_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *tok = NULL;
    if (hv && strncasecmp(hv, "Bearer ", 7) == 0)
        tok = hv + 7;
    size_t tlen = tok ? strlen(tok) : 0;
    bool admin = tok && key_in(cfg->admin_keys, cfg->n_admin_keys, tok, tlen);
    bool user = tok && key_in(cfg->api_keys, cfg->n_api_keys, tok, tlen);
    r->admin = admin;
    bool public_metrics = rt->auth == VG_AUTH_METRICS && cfg->metrics_public;
    bool need_admin = (rt->auth == VG_AUTH_METRICS && !public_metrics) ||
                      (rt->admin_methods & r->method);
    if (public_metrics && !need_admin)
        return true;
    if (!admin && !user) {
        vg_header h = {"WWW-Authenticate", "Bearer"};
        vg_reply_error_h(r, 401, "unauthorized", &h, 1,
                         tok ? "invalid API key" : "missing Authorization: Bearer <key>");
        return false;
    }
    if (need_admin && !admin) {
        vg_reply_error(r, 403, "forbidden", "this operation needs an admin key");
        return false;
    }
    return true;
}

typedef struct {
    vg_req *r;
    const char *bad;
    const char *dup;
    const char *seen[32];
    size_t nseen;
} query_check;

static enum MHD_Result check_one_arg(void *cls, enum MHD_ValueKind kind, const char *k,
                                     const char *v)
{
    query_check *qc = cls;
    if (!vg_route_query_allowed(qc->r->match.route->query, k)) {
        qc->bad = k;
        return MHD_NO;
    }
    for (size_t i = 0; i < qc->nseen; i++)
        if (strcmp(qc->seen[i], k) == 0) {
            qc->dup = k;
            return MHD_NO;
        }
    if (qc->nseen < VG_ARRAY_LEN(qc->seen))
        qc->seen[qc->nseen++] = k;
    return MHD_YES;
}

static bool check_query(vg_req *r)
{
    query_check qc = {.r = r};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_one_arg, &qc);
    if (qc.bad) {
        vg_reply_error(r, 400, "unknown_parameter", "unknown query parameter '%.64s'", qc.bad);
        return false;
    }
    if (qc.dup) {
        vg_reply_error(r, 400, "duplicate_parameter", "query parameter '%.64s' given twice",
                       qc.dup);
        return false;
    }
    return true;
}

/* Media type without parameters, compared case-insensitively. */
static bool media_type_is(const char *ct, const char *want)
{
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return strlen(want) == n && strncasecmp(ct, want, n) == 0;
}

static bool check_body(vg_req *r)
{
    uint64_t n = r->declared_len;
    if (n > r->body_limit) {
        vg_reply_error(r, 413, "body_too_large", "request body is over %llu bytes",
                       (unsigned long long)r->body_limit);
        return false;
    }
    if (!r->expect_body)
        return true;
    if (n && n <= 64 * 1024 * 1024 && vg_buf_reserve(&r->body, (size_t)n) != VG_OK) {
        vg_reply_error(r, 503, "out_of_memory", "cannot buffer the request body");
        return false;
    }
    const char *want = r->match.route->body_ctype;
    if (want) {
        const char *ct = vg_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!ct || !media_type_is(ct, want)) {
            vg_reply_error(r, 415, "unsupported_media_type", "Content-Type must be %s", want);
            return false;
        }
    }
    return true;
}

/* MHD 0.9.75 refuses MHD_queue_response while a body is arriving, so a
 * chunked body that passes the limit gets its 413 written straight to the
 * socket. We then linger - discard at most LINGER_BYTES more for at most
 * LINGER_NS - so the client reads the reply before the close, instead of
 * losing it to a reset; then MHD closes the connection. */
#define LINGER_BYTES (256u * 1024u)
#define LINGER_NS (1000u * 1000u * 1000u)

static void send_raw_413(vg_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    char text[96];
    snprintf(text, sizeof text, "request body is over %llu bytes",
             (unsigned long long)r->body_limit);
    vg_buf body = {0}, msg = {0};
    error_body(&body, "body_too_large", text, r->id);
    vg_buf_printf(&msg, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                        "Content-Type: application/json\r\nX-Request-ID: %s\r\n"
                        "Content-Length: %zu\r\n\r\n",
                  r->id, body.len);
    vg_buf_append(&msg, body.data, body.len);
    size_t off = 0;
    uint64_t deadline = vg_mono_ns() + 100u * 1000u * 1000u;
    while (ci && msg.data && off < msg.len && vg_mono_ns() < deadline) {
        ssize_t w = send(ci->connect_fd, msg.data + off, msg.len - off, MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            break;
        else if (w < 0 && errno == EAGAIN)
            poll(&(struct pollfd){.fd = ci->connect_fd, .events = POLLOUT}, 1, 10);
    }
    r->responded = r->raw_sent = true;
    r->status = 413;
    r->resp_bytes = body.len;
    snprintf(r->error_code, sizeof r->error_code, "%s", "body_too_large");
    r->linger_until_ns = vg_mono_ns() + LINGER_NS;
    vg_buf_free(&body);
    vg_buf_free(&msg);
}

/* The client rate limit (issue 4) on /v1, once the caller is known. */
static bool check_gate(vg_req *r)
{
    return !r->app->v1_gate || r->match.route->own_gate || strncmp(r->path, "/v1/", 4) != 0 ||
           r->app->v1_gate(r);
}

static bool check_all(vg_req *r)
{
    return check_sizes(r) && check_route(r) && check_auth(r) && check_query(r) && check_body(r) &&
           check_gate(r);
}

static void dispatch(vg_req *r)
{
    r->match.route->handler(r);
    if (!r->responded && !r->sink)
        vg_reply_error(r, 500, "internal", "the handler produced no response");
}

/* ---- streamed bodies ---- */

void vg_http_stream_hook(vg_handler handler, vg_handler start)
{
    if (srv.nhooks < VG_ARRAY_LEN(srv.hooks))
    {
        srv.hooks[srv.nhooks].handler = handler;
        srv.hooks[srv.nhooks++].start = start;
    }
}

void vg_req_stream(vg_req *r, vg_body_sink *s) { r->sink = s; }

bool vg_req_defer(vg_req *r, vg_body_sink *s)
{
    if (!vg_req_suspend(r))
        return false;
    r->sink = s;
    return true;
}

uint64_t vg_req_content_length(vg_req *r) { return r->chunked ? 0 : r->declared_len; }

bool vg_req_suspend(vg_req *r)
{
    pthread_mutex_lock(&srv.park_mu);
    bool ok = !srv.stopping;
    if (ok) {
        MHD_suspend_connection(r->conn);
        r->parked = true;
        r->park_prev = NULL;
        r->park_next = srv.parked;
        if (srv.parked)
            srv.parked->park_prev = r;
        srv.parked = r;
        r->waited = true;
    }
    pthread_mutex_unlock(&srv.park_mu);
    return ok;
}

/* ---- vg_park: a request waiting for another thread's answer ---- */

static void park_unref(vg_park *p)
{
    pthread_mutex_lock(&p->mu);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) {
        pthread_mutex_destroy(&p->mu);
        p->free_fn(p);
    }
}

static void park_finish(vg_body_sink *s, vg_req *r)
{
    vg_park *p = (vg_park *)s;
    pthread_mutex_lock(&p->mu);
    bool done = p->done;
    pthread_mutex_unlock(&p->mu);
    if (done)
        p->ready(p, r); /* the result was stored before done was set */
    else if (!vg_req_suspend(r)) /* a spurious wake parks again, unless stopping */
        vg_reply_error(r, 503, "shutting_down", "voxgate is shutting down");
}

static void park_release(vg_body_sink *s, bool ok)
{
    (void)ok;
    vg_park *p = (vg_park *)s;
    pthread_mutex_lock(&p->mu);
    p->r = NULL;
    pthread_mutex_unlock(&p->mu);
    park_unref(p);
}

bool vg_park_defer(vg_park *p, vg_req *r, void (*ready)(vg_park *p, vg_req *r),
                   void (*free_fn)(vg_park *p))
{
    p->sink = (vg_body_sink){NULL, park_finish, park_release};
    pthread_mutex_init(&p->mu, NULL);
    p->r = r;
    p->refs = 2;
    p->done = false;
    p->ready = ready;
    p->free_fn = free_fn;
    if (vg_req_defer(r, &p->sink))
        return true;
    pthread_mutex_destroy(&p->mu);
    return false;
}

void vg_park_wake(vg_park *p)
{
    pthread_mutex_lock(&p->mu);
    p->done = true;
    vg_wake w = vg_req_unpark(p->r);
    pthread_mutex_unlock(&p->mu); /* before the wake: park_finish takes it */
    vg_req_wake(w);
    park_unref(p);
}

static void unlink_parked(vg_req *r)
{
    r->parked = false;
    if (r->park_prev)
        r->park_prev->park_next = r->park_next;
    else
        srv.parked = r->park_next;
    if (r->park_next)
        r->park_next->park_prev = r->park_prev;
}

/* Off the parked list, so no one else resumes it and it cannot end
 * before vg_req_wake: a suspended connection is only closed by
 * MHD_stop_daemon, which waits for srv.waking to drop to 0. */
static vg_wake unpark_locked(vg_req *r)
{
    if (!r->parked)
        return (vg_wake){NULL};
    unlink_parked(r);
    atomic_fetch_add(&srv.waking, 1);
    return (vg_wake){r->conn};
}

vg_wake vg_req_unpark(vg_req *r)
{
    if (!r)
        return (vg_wake){NULL};
    pthread_mutex_lock(&srv.park_mu);
    vg_wake w = unpark_locked(r);
    pthread_mutex_unlock(&srv.park_mu);
    return w;
}

/* No lock held: the MHD thread this wakes may run at once (on this CPU,
 * preempting the waker) and would otherwise sleep again on park_mu. */
void vg_req_wake(vg_wake w)
{
    if (!w.conn)
        return;
    MHD_resume_connection(w.conn);
    atomic_fetch_sub(&srv.waking, 1);
}

void vg_req_resume(vg_req *r) { vg_req_wake(vg_req_unpark(r)); }

/* ---- vg_req_offload: work on a vg-io thread ---- */

/* A vg_park whose waker is the work itself, run with the request. */
typedef struct io_call {
    vg_park park;            /* first */
    void (*work)(vg_req *r, void *ud);
    void (*then)(vg_req *r, void *ud);
    void *ud;
    void (*free_ud)(void *ud);
} io_call;

static void io_work(void *arg)
{
    io_call *c = arg;
    /* Alive until woken: vg_http_stop lets vg-io work end before it
     * wakes parked requests, and a parked one cannot end otherwise. */
    vg_req *r = c->park.r;
    r->on_io = true;
    c->work(r, c->ud);
    r->on_io = false;
    vg_park_wake(&c->park);
}

/* Back on the MHD thread: send the held reply, or go on with then. */
static void io_ready(vg_park *p, vg_req *r)
{
    io_call *c = (io_call *)p;
    if (r->held) {
        struct MHD_Response *resp = r->held;
        r->held = NULL;
        send_now(r, r->held_status, resp);
    } else if (c->then) {
        c->then(r, c->ud);
    } else {
        vg_reply_error(r, 500, "internal", "the handler produced no response");
    }
}

static void io_free(vg_park *p)
{
    io_call *c = (io_call *)p;
    if (c->free_ud)
        c->free_ud(c->ud);
    free(c);
}

void vg_req_offload(vg_req *r, void (*work)(vg_req *r, void *ud),
                    void (*then)(vg_req *r, void *ud), void *ud, void (*free_ud)(void *ud))
{
    io_call *c = malloc(sizeof *c);
    if (c) {
        *c = (io_call){.work = work, .then = then, .ud = ud, .free_ud = free_ud};
        if (vg_park_defer(&c->park, r, io_ready, io_free)) {
            if (vg_io_run(io_work, c) != VG_OK)
                io_work(c); /* no thread: here, still answered through the park */
            return;
        }
        free(c);
    }
    work(r, ud); /* stopping (or out of memory): at once */
    if (!r->responded && !r->sink && then)
        then(r, ud);
    if (free_ud)
        free_ud(ud);
}

/* After the checks: may the route's stream hook take this body? */
static void maybe_stream(vg_req *r)
{
    if (r->responded || !vg_req_content_length(r))
        return;
    for (size_t i = 0; i < srv.nhooks; i++)
        if (srv.hooks[i].handler == r->match.route->handler) {
            srv.hooks[i].start(r);
            if (r->sink)
                vg_buf_free(&r->body); /* check_body's reservation for the whole body */
            return;
        }
}

/* One MHD call of a streamed request; false drops the connection. */
static bool stream_call(vg_req *r, const char *upload, size_t *upload_size)
{
    r->waited = false;
    if (r->responded) {
        *upload_size = 0; /* the reply waits for MHD to finish reading */
        return true;
    }
    if (*upload_size) {
        size_t took = r->sink->write(r->sink, r, upload, *upload_size);
        *upload_size -= took;
        return took > 0 || r->waited;
    }
    vg_body_sink *s = r->sink;
    s->finish(s, r);
    if (r->sink != s) /* it parked again with another sink: this one is done */
        s->release(s, true);
    return r->responded || r->waited;
}

/* ---- MHD callbacks ---- */

static vg_req *req_new(struct MHD_Connection *c, const char *url, const char *method)
{
    vg_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_fetch_add(&srv.inflight, 1);
    r->t0_ns = vg_mono_ns();
    r->conn = c;
    r->app = srv.app;
    r->path = url;
    r->method = vg_method_parse(method);
    r->method_name = method;
    r->body_limit = srv.app->cfg->limits.max_body_bytes;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    r->chunked = te && strcasecmp(te, "identity") != 0;
    if (cl && !vg_parse_u64(cl, &r->declared_len))
        r->declared_len = 0;
    r->expect_body = (cl && strcmp(cl, "0") != 0) || r->chunked;
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-ID");
    if (id && vg_reqid_valid(id, strlen(id)))
        memcpy(r->id, id, strlen(id) + 1);
    else
        vg_reqid_generate(r->id);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    vg_req *r = *con_cls;
    if (!r) {
        r = req_new(c, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        /* A request with a body is checked now, so a refused body is never
         * read. One without waits for the next call: a reply queued this
         * early would make MHD close the connection, losing keep-alive. */
        if (r->expect_body && check_all(r))
            maybe_stream(r);
        return MHD_YES;
    }
    if (r->sink)
        return stream_call(r, upload, upload_size) ? MHD_YES : MHD_NO;
    if (r->raw_sent) {
        /* Lingering after a mid-body 413: discard, within bounds. */
        r->linger_bytes += *upload_size;
        bool more = *upload_size && r->linger_bytes <= LINGER_BYTES &&
                    vg_mono_ns() < r->linger_until_ns;
        *upload_size = 0;
        return more ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->responded)
            return MHD_YES;
        if (r->body.len + n > r->body_limit) {
            send_raw_413(r);
            return MHD_YES;
        }
        if (vg_buf_append(&r->body, upload, n) != VG_OK) {
            vg_reply_error(r, 503, "out_of_memory", "cannot buffer the request body");
            return MHD_YES;
        }
        return MHD_YES;
    }
    if (!r->responded && (r->expect_body || check_all(r)))
        dispatch(r);
    return MHD_YES;
}

static void log_access(vg_req *r, enum MHD_RequestTerminationCode toe)
{
    uint64_t us = (vg_mono_ns() - r->t0_ns) / 1000u;
    vg_hist_observe_us(&r->app->m.http_us, us);
    vg_counter_inc(&r->app->m.http_status[vg_app_status_index(r->status)]);
    if (!vg_log_enabled(VG_LOG_INFO))
        return;
    const char *err = r->error_code[0] ? r->error_code : NULL;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        err = "client_timeout";
    else if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT)
        err = err ? err : "client_abort";
    else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !err)
        err = "connection_error";
    vg_log_field f[] = {
        VG_LS("method", r->method_name),
        VG_LS("path", r->path),
        VG_LU("status", r->status),
        VG_LMS("duration_ms", us),
        VG_LU("bytes", r->resp_bytes),
        VG_LS("cache", r->cache_tag),
        VG_LS("provider", r->provider),
        VG_LS("error", err),
    };
    vg_log(VG_LOG_INFO, r->id, "request", f, VG_ARRAY_LEN(f));
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    vg_req *r = *con_cls;
    if (!r)
        return;
    log_access(r, toe);
    if (r->sink) {
        pthread_mutex_lock(&srv.park_mu);
        if (r->parked) /* MHD closed it while parked: never resume it again */
            unlink_parked(r);
        pthread_mutex_unlock(&srv.park_mu);
        r->sink->release(r->sink, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    }
    if (r->held)
        MHD_destroy_response(r->held);
    vg_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&srv.inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    vg_log(VG_LOG_WARN, NULL, msg, (vg_log_field[]){VG_LS("component", "http")}, 1);
}

/* Percent-decoding of the path and query, as MHD's own, except that
 * "%00" stays as those three characters: decoded, it would cut the
 * string short and "a%00b" would silently become "a". Left as is, it is
 * refused by whatever validates the value (keys, identifiers). */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        unsigned v;
        if (p[0] == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]) &&
            sscanf(p + 1, "%2x", &v) == 1 && v != 0) {
            *w++ = (char)v;
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* ---- lifecycle ---- */

static int resolve_listen(const char *listen, struct sockaddr_storage *ss, char *err,
                          size_t errlen)
{
    char host[256];
    uint16_t port;
    if (!vg_config_parse_listen(listen, host, sizeof host, &port)) {
        snprintf(err, errlen, "listen: cannot parse '%s'", listen);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    int rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "listen: cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int vg_http_start(vg_app *app, const vg_route *routes, size_t nroutes, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    struct sockaddr_storage ss = {0};
    if (resolve_listen(cfg->listen, &ss, err, errlen) != 0)
        return -1;
    srv.app = app;
    srv.routes = routes;
    srv.nroutes = nroutes;
    unsigned threads = cfg->threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    /* MHD's per-connection pool must hold the request line and headers,
     * sized just above our limits so ours answer first, with JSON. No
     * bigger: MHD zeroes the whole pool for every request. */
    size_t mem = (size_t)cfg->limits.max_header_bytes + cfg->limits.max_url_bytes + 8192;
    if (mem < 16 * 1024)
        mem = 16 * 1024;
    /* epoll costs each parked request two epoll_ctl calls (MHD takes a
     * suspended socket out of the set and puts it back on resume); poll
     * costs every wait a pass over the thread's connections. See
     * docs/configuration.md, event_loop, for the figures. */
    unsigned loop = strcmp(cfg->event_loop, "poll") == 0 ? MHD_USE_POLL_INTERNAL_THREAD
                                                         : MHD_USE_EPOLL_INTERNAL_THREAD;
    unsigned flags = loop | MHD_USE_TURBO | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv.daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->limits.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->limits.max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->limits.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_END);
    if (!srv.daemon) {
        snprintf(err, errlen, "listen: cannot start the HTTP server on %s (in use?)",
                 cfg->listen);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv.port = info ? info->port : 0;
    return 0;
}

uint16_t vg_http_port(void) { return srv.port; }

void vg_http_quiesce(void)
{
    if (!srv.daemon || srv.quiesced != MHD_INVALID_SOCKET)
        return;
    srv.quiesced = MHD_quiesce_daemon(srv.daemon);
    /* Linux takes a listening socket out of LISTEN on shutdown(): new
     * connections are refused at once instead of waiting in the backlog
     * until the close, and the descriptor stays valid for MHD's threads. */
    if (srv.quiesced != MHD_INVALID_SOCKET)
        shutdown(srv.quiesced, SHUT_RDWR);
}

bool vg_http_wait_idle(unsigned timeout_ms)
{
    uint64_t deadline = vg_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (atomic_load(&srv.inflight) > 0) {
        if (vg_mono_ns() >= deadline)
            return false;
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    return true;
}

void vg_http_stop(void)
{
    /* Every parked connection is woken before the daemon stops; a woken
     * sink cannot park again and gives up. Work on vg-io threads uses its
     * request until it resumes it, so it ends first (each job is bounded
     * by its store's timeout). */
    pthread_mutex_lock(&srv.park_mu);
    srv.stopping = true;
    pthread_mutex_unlock(&srv.park_mu);
    vg_io_stop();
    pthread_mutex_lock(&srv.park_mu);
    while (srv.parked)
        vg_req_wake(unpark_locked(srv.parked));
    pthread_mutex_unlock(&srv.park_mu);
    while (atomic_load(&srv.waking) > 0) /* a waker between its two steps */
        sched_yield();
    if (srv.daemon)
        MHD_stop_daemon(srv.daemon);
    srv.daemon = NULL;
    if (srv.quiesced != MHD_INVALID_SOCKET)
        close(srv.quiesced);
    srv.quiesced = MHD_INVALID_SOCKET;
}
