/* The HTTP layer's seam for handlers: request accessors, replies, errors,
 * the router's route table and request ids. Handlers see vg_req only;
 * libmicrohttpd stays inside src/http/. */
#ifndef VOXGATE_HTTP_H
#define VOXGATE_HTTP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

#define VG_REQID_MAX 128

/* ---- request ids (src/http/reqid.c) ---- */

/* 1-128 chars of [A-Za-z0-9._:-] */
bool vg_reqid_valid(const char *s, size_t len);
/* A fresh id: 32 lowercase hex chars (128 random bits from a per-thread
 * generator seeded by getrandom), NUL-terminated. */
void vg_reqid_generate(char out[33]);

/* ---- methods and routes (src/http/router.c) ---- */

typedef enum {
    VG_M_GET = 1u << 0,
    VG_M_HEAD = 1u << 1,
    VG_M_POST = 1u << 2,
    VG_M_PUT = 1u << 3,
    VG_M_DELETE = 1u << 4,
    VG_M_PATCH = 1u << 5,
    VG_M_OPTIONS = 1u << 6,
    VG_M_OTHER = 1u << 7,
} vg_method;

unsigned vg_method_parse(const char *m);
const char *vg_method_name(unsigned m);
/* "GET, HEAD, PUT" in a fixed order; returns the length written. */
size_t vg_methods_format(unsigned mask, char *out, size_t cap);

typedef enum {
    VG_AUTH_OPEN = 0,    /* /health, /ready */
    VG_AUTH_API = 1,     /* everything under /v1: an api or admin key when keys are set */
    VG_AUTH_METRICS = 2, /* /stats, /metrics: admin unless metrics_public */
    VG_AUTH_SIGNED = 3,  /* like API, but a GET/HEAD carrying sig= skips the key check:
                            the handler verifies the URL signature (Files API) */
} vg_auth;

typedef struct vg_req vg_req;
typedef void (*vg_handler)(vg_req *r);

/* One row of the route table. A path may have several rows with
 * different methods; the router answers 405 with Allow = their union. */
typedef struct vg_route {
    unsigned methods;
    const char *pattern;     /* "/v1/cache/stt", "/v1/breakers/{provider}", "/v1/files/{key+}" */
    vg_handler handler;
    vg_auth auth;
    unsigned admin_methods;  /* methods that need an admin key */
    const char *query;       /* allowed query names, space separated; NULL = none */
    const char *body_ctype;  /* media type a body must have (415 otherwise); NULL = any */
    bool own_gate;           /* the handler applies the client rate limit itself (the
                                gateway: after the cache and single-flight, SPEC §5) */
} vg_route;

#define VG_ROUTE_MAX_PARAMS 4

typedef struct vg_route_match {
    const vg_route *route;   /* NULL when no row has this method */
    unsigned allow;          /* methods of every row whose pattern matches; 0 = unknown path */
    size_t nparams;
    struct {
        const char *p;
        size_t n;
    } params[VG_ROUTE_MAX_PARAMS];
} vg_route_match;

/* Match path (no query string) against the table. {name} matches one
 * non-empty segment, {name+} one or more segments to the end, or up to
 * a literal tail ("/v1/files/{key+}/url"). */
void vg_router_match(const vg_route *routes, size_t n, unsigned method, const char *path,
                     vg_route_match *m);
/* True when name is listed in the space-separated list. */
bool vg_route_query_allowed(const char *list, const char *name);

/* ---- requests and replies (src/http/server.c) ---- */

struct vg_app;

typedef struct vg_header {
    const char *name;
    const char *value;
} vg_header;

const char *vg_req_id(const vg_req *r);
unsigned vg_req_method(const vg_req *r);
const char *vg_req_path(const vg_req *r);
struct vg_app *vg_req_app(const vg_req *r);
const char *vg_req_query(vg_req *r, const char *name);
const char *vg_req_header(vg_req *r, const char *name);
/* A header for whatever reply this request gets, unless the reply gives
 * one of the same name itself. name must outlive the request; value is
 * copied. False when it does not fit (VG_REQ_EXTRA_MAX headers, values
 * under 32 bytes). */
#define VG_REQ_EXTRA_MAX 4
bool vg_req_add_header(vg_req *r, const char *name, const char *value);
/* The peer's address as text ("127.0.0.1", "::1"); "unknown" when the
 * socket has none to give. The peer is the last hop: behind a proxy,
 * the proxy. */
void vg_req_peer(vg_req *r, char *out, size_t cap);
/* Path parameter i (of the route pattern); NULL when absent. */
const char *vg_req_param(const vg_req *r, size_t i, size_t *len);
/* The whole body; never NULL (empty string when there is none). */
const char *vg_req_body(const vg_req *r, size_t *len);
bool vg_req_has_body(const vg_req *r);
bool vg_req_is_admin(const vg_req *r);
/* Log fields for the access line. Values must outlive the request
 * (string literals or app-lifetime strings). */
void vg_req_set_cache(vg_req *r, const char *tag);
void vg_req_set_provider(vg_req *r, const char *provider);

/* Calls fn for every request header until it returns false. */
void vg_req_each_header(vg_req *r, bool (*fn)(void *ud, const char *name, const char *value),
                        void *ud);

/* Exactly one reply per request. The body is copied unless noted. */
void vg_reply(vg_req *r, unsigned status, const char *ctype, const void *body, size_t len,
              const vg_header *hdrs, size_t nh);
/* Takes ownership of the buffer's memory (no copy). */
void vg_reply_buf(vg_req *r, unsigned status, const char *ctype, vg_buf *body,
                  const vg_header *hdrs, size_t nh);
/* Zero copy: data stays owned by the caller until release(cls) runs. */
void vg_reply_ref(vg_req *r, unsigned status, const char *ctype, const void *data, size_t len,
                  void (*release)(void *cls), void *cls, const vg_header *hdrs, size_t nh);
/* The body is len bytes of the file fd from off, sent by the kernel
 * (sendfile) and never held in memory; fd is closed when the answer is
 * done, or at once if it cannot be made. */
void vg_reply_fd(vg_req *r, unsigned status, const char *ctype, int fd, uint64_t off,
                 uint64_t len, const vg_header *hdrs, size_t nh);
/* A HEAD answer announcing a body of len bytes that is never sent. */
void vg_reply_head(vg_req *r, unsigned status, const char *ctype, uint64_t len,
                   const vg_header *hdrs, size_t nh);
/* {"error":{"code","message","request_id"}} with the given status. */
void vg_reply_error(vg_req *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void vg_reply_error_h(vg_req *r, unsigned status, const char *code, const vg_header *hdrs,
                      size_t nh, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- streamed request bodies ---- */

/* A handler that takes the body as it arrives instead of whole (large
 * Files API uploads to S3). Every call runs on the connection's MHD
 * thread; a sink that must wait (its buffer is full, the upload has not
 * finished) calls vg_req_suspend and is called again after vg_req_resume.
 * Spurious calls are allowed: each call re-checks its state. */
typedef struct vg_body_sink vg_body_sink;
struct vg_body_sink {
    /* Takes up to n bytes and returns how many; fewer than n only after a
     * successful vg_req_suspend (0 without one drops the connection). */
    size_t (*write)(vg_body_sink *s, vg_req *r, const char *p, size_t n);
    /* The whole body was given: reply, or vg_req_suspend and wait. */
    void (*finish)(vg_body_sink *s, vg_req *r);
    /* The request is over (ok: the reply went out); r is gone after this. */
    void (*release)(vg_body_sink *s, bool ok);
};

/* Registers start for the route rows whose handler is handler. start runs
 * once the request passed every check, when it has a Content-Length body:
 * it replies (an error), calls vg_req_stream, or does neither to get the
 * body buffered whole as usual. Call before vg_http_start. */
void vg_http_stream_hook(vg_handler handler, vg_handler start);
void vg_req_stream(vg_req *r, vg_body_sink *s);
/* The body's announced length (0 when none or chunked). */
uint64_t vg_req_content_length(vg_req *r);
/* Park the connection (MHD thread only, from a sink call). False when the
 * server is stopping: the sink must then give up. */
bool vg_req_suspend(vg_req *r);
/* Reply later (a handler whose answer comes from another thread: provider
 * calls, the Redis event loop). Parks the connection; after vg_req_resume,
 * s->finish runs on the MHD thread and replies or parks again with
 * vg_req_suspend; s->release runs when the request is over, and s->write
 * is never called. False when the server is stopping: nothing was parked
 * and the handler must reply itself. Call from the handler only. */
bool vg_req_defer(vg_req *r, vg_body_sink *s);
/* A request parked until another thread has its answer (a Redis reply,
 * say): the refcounting and waking every such handler needs. Embed it
 * first in the handler's own struct. The other thread stores its result
 * in that struct, then calls vg_park_wake; ready(p, r) then runs on the
 * MHD thread and must reply; free_fn frees the struct once both the
 * request and the waker let go (the request may end first). */
typedef struct vg_park vg_park;
struct vg_park {
    vg_body_sink sink;
    pthread_mutex_t mu;
    vg_req *r;               /* NULL once the request is over */
    int refs;                /* the request's and the waker's */
    bool done;
    void (*ready)(vg_park *p, vg_req *r);
    void (*free_fn)(vg_park *p);
};
/* Parks r (from its handler); false when the server is stopping (then
 * nothing was parked and p may be freed at once). */
bool vg_park_defer(vg_park *p, vg_req *r, void (*ready)(vg_park *p, vg_req *r),
                   void (*free_fn)(vg_park *p));
/* The result is in place: wake the request (if it is still there) and
 * drop the waker's reference. Any thread, once. */
void vg_park_wake(vg_park *p);

/* Wake a parked connection; any thread, while r is alive (before the
 * sink's release returned). A no-op when it is not parked. */
void vg_req_resume(vg_req *r);
/* vg_req_resume in two steps, for a waker that holds a lock the woken
 * request takes first (its sink's): vg_req_unpark under that lock, then
 * vg_req_wake with what it returned once the lock is dropped, so that
 * the MHD thread does not wake only to sleep again on the lock. After
 * vg_req_unpark r cannot end before vg_req_wake, which must follow.
 * A NULL r (no request waiting) gives a wake that does nothing. */
typedef struct vg_wake { struct MHD_Connection *conn; } vg_wake;
vg_wake vg_req_unpark(vg_req *r);
void vg_req_wake(vg_wake w);

/* ---- work that may block on a remote store ---- */

/* A handler's work that may block on the network (an S3 call can take
 * up to s3.timeout_ms): the connection is parked and work(r, ud) runs on
 * a vg-io thread, so the MHD thread goes on serving other connections.
 * work may read the request and answer with any vg_reply_* (the answer
 * is held and sent once the connection is back on its MHD thread); it
 * must not park (vg_req_defer, vg_park_defer). When work did not answer,
 * then(r, ud) runs on the MHD thread and answers or parks again (NULL:
 * a 500). free_ud(ud), when not NULL, runs once the request is over.
 * While the server is stopping, work and then run at once, here. */
void vg_req_offload(vg_req *r, void (*work)(vg_req *r, void *ud),
                    void (*then)(vg_req *r, void *ud), void *ud, void (*free_ud)(void *ud));

/* The vg-io threads themselves (src/http/iopool.c): made on demand, at
 * most VG_IO_MAX_THREADS; more jobs wait their turn in order. */
#define VG_IO_MAX_THREADS 64
/* Runs fn(ud) on a vg-io thread. VG_EUNAVAIL while stopping, VG_ENOMEM
 * when no thread can be made: then nothing runs. */
int vg_io_run(void (*fn)(void *ud), void *ud);
/* Threads made so far, and how many of them wait for work (for tests). */
unsigned vg_io_threads(unsigned *idle);
/* Runs what is queued, waits for every job to end, joins the threads. */
void vg_io_stop(void);

/* ---- server lifecycle ---- */

int vg_http_start(struct vg_app *app, const vg_route *routes, size_t nroutes, char *err,
                  size_t errlen);
/* Stop accepting new connections; in-flight requests continue. */
void vg_http_quiesce(void);
/* Wait until no request is in flight or timeout_ms passes; true when idle. */
bool vg_http_wait_idle(unsigned timeout_ms);
void vg_http_stop(void);
/* The port actually bound (useful with port 0). */
uint16_t vg_http_port(void);

#endif
