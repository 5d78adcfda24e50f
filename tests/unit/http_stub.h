/* A tiny HTTP/1.1 server for unit tests that talk to providers: it runs
 * on 127.0.0.1 on a free port, one thread per connection, keep-alive,
 * and lets each test script the raw answer (or no answer at all). */
#ifndef VOXGATE_TEST_HTTP_STUB_H
#define VOXGATE_TEST_HTTP_STUB_H

#include <stdbool.h>
#include <stdint.h>

#include "voxgate/provider.h"
#include "voxgate/util.h"

typedef struct stub_req {
    char method[16];
    char target[1024];
    char headers[16384];   /* the raw header lines after the request line */
    vg_buf body;           /* Content-Length bytes */
    unsigned conn;         /* 1-based number of the connection it came on */
} stub_req;

enum { STUB_SEND, STUB_CLOSE, STUB_HANG };

/* Writes the raw answer into out; returns STUB_SEND (keep the connection),
 * STUB_CLOSE (send, then close) or STUB_HANG (answer nothing, hold the
 * connection until the client goes or the server stops). Runs on the
 * connection's thread. */
typedef int (*stub_handler)(void *ud, const stub_req *req, vg_buf *out);

typedef struct stub_server stub_server;

/* accept_conns false: connections wait in the kernel's backlog forever
 * (a server that never answers, without a thread per connection). */
stub_server *stub_start(stub_handler h, void *ud, bool accept_conns);
uint16_t stub_port(const stub_server *s);
unsigned stub_accepted(stub_server *s);
void stub_stop(stub_server *s);

/* The value of header name in r (case-insensitive), "" when absent. */
const char *stub_header(const stub_req *r, const char *name, char *out, size_t cap);

/* A whole answer: status line, Content-Length, extra header lines
 * ("A: b\r\n..."), body. */
void stub_reply(vg_buf *out, int status, const char *headers, const char *body, size_t len);

/* A provider's settings as the provider unit tests use them: base URL,
 * 5 s call and 1 s connect timeouts, 1 s default cool-down (at most
 * 120 s), answers up to 1 MiB. */
vg_provider_conf stub_conf(const char *name, const char *type, const char *base);

/* One provider attempt, waited for: its result (the body is the caller's
 * to free). Aborts the test when the attempt cannot start. */
vg_presult stub_attempt(vg_provider *p, const vg_job *j);

#endif
