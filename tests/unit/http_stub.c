/* The unit tests' HTTP/1.1 server (see http_stub.h). It parses just
 * enough: a request line, headers, a Content-Length body. */
#include "http_stub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct stub_server {
    stub_handler handler;
    void *ud;
    int lfd;
    int stop_pipe[2];          /* readable once the server stops */
    uint16_t port;
    bool accepting;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_t *conns;
    size_t nconns, cap;
};

typedef struct conn_arg {
    stub_server *s;
    int fd;
    unsigned no;
} conn_arg;

/* Waits for fd to be readable; false when the server stops first. */
static bool wait_readable(stub_server *s, int fd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
    while (poll(p, 2, -1) < 0)
        ;
    return !(p[1].revents & POLLIN);
}

/* Appends what fd has to buf; false on EOF or when the server stops. */
static bool read_more(stub_server *s, int fd, vg_buf *buf)
{
    char chunk[65536];
    if (!wait_readable(s, fd))
        return false;
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0)
        return false;
    vg_buf_append(buf, chunk, (size_t)n);
    return true;
}

/* Reads one request into r (buf keeps bytes past it); false on EOF. */
static bool read_request(stub_server *s, int fd, vg_buf *buf, stub_req *r)
{
    char *end;
    while (!(end = buf->data ? strstr(buf->data, "\r\n\r\n") : NULL))
        if (!read_more(s, fd, buf))
            return false;
    size_t head = (size_t)(end - buf->data) + 4;
    char *line_end = strstr(buf->data, "\r\n");
    sscanf(buf->data, "%15s %1023s", r->method, r->target);
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)(end + 2 - line_end - 2), line_end + 2);
    char cl[32];
    size_t want = (size_t)strtoull(stub_header(r, "content-length", cl, sizeof cl), NULL, 10);
    while (buf->len < head + want)
        if (!read_more(s, fd, buf))
            return false;
    vg_buf_reset(&r->body);
    vg_buf_append(&r->body, buf->data + head, want);
    size_t rest = buf->len - head - want;
    memmove(buf->data, buf->data + head + want, rest);
    buf->len = rest;
    buf->data[rest] = '\0';
    return true;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *conn_main(void *arg)
{
    conn_arg a = *(conn_arg *)arg;
    free(arg);
    vg_buf in = {0}, out = {0};
    stub_req *r = calloc(1, sizeof *r);
    r->conn = a.no;
    while (read_request(a.s, a.fd, &in, r)) {
        vg_buf_reset(&out);
        int what = a.s->handler(a.s->ud, r, &out);
        if (what == STUB_HANG) {
            /* Drain until the client gives up or the server stops. */
            char sink[4096];
            while (wait_readable(a.s, a.fd) && recv(a.fd, sink, sizeof sink, 0) > 0)
                ;
            break;
        }
        send_all(a.fd, out.data ? out.data : "", out.len);
        if (what == STUB_CLOSE)
            break;
    }
    close(a.fd);
    vg_buf_free(&r->body);
    free(r);
    vg_buf_free(&in);
    vg_buf_free(&out);
    return NULL;
}

static void *accept_main(void *arg)
{
    stub_server *s = arg;
    while (wait_readable(s, s->lfd)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_arg *a = malloc(sizeof *a);
        pthread_mutex_lock(&s->mu);
        if (s->nconns == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->conns = realloc(s->conns, s->cap * sizeof *s->conns);
        }
        *a = (conn_arg){.s = s, .fd = fd, .no = (unsigned)s->nconns + 1};
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 512 * 1024);
        pthread_create(&s->conns[s->nconns++], &at, conn_main, a);
        pthread_attr_destroy(&at);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

stub_server *stub_start(stub_handler h, void *ud, bool accept_conns)
{
    stub_server *s = calloc(1, sizeof *s);
    s->handler = h;
    s->ud = ud;
    s->accepting = accept_conns;
    pthread_mutex_init(&s->mu, NULL);
    if (pipe(s->stop_pipe) != 0)
        abort();
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s->lfd, 4096) != 0 ||
        getsockname(s->lfd, (struct sockaddr *)&sa, &sl) != 0)
        abort();
    s->port = ntohs(sa.sin_port);
    if (accept_conns)
        pthread_create(&s->acceptor, NULL, accept_main, s);
    return s;
}

uint16_t stub_port(const stub_server *s) { return s->port; }

unsigned stub_accepted(stub_server *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = (unsigned)s->nconns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void stub_stop(stub_server *s)
{
    if (write(s->stop_pipe[1], "x", 1) != 1)
        abort();
    if (s->accepting)
        pthread_join(s->acceptor, NULL);
    for (size_t i = 0; i < s->nconns; i++)
        pthread_join(s->conns[i], NULL);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    pthread_mutex_destroy(&s->mu);
    free(s->conns);
    free(s);
}

const char *stub_header(const stub_req *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *l = r->headers; *l;) {
        const char *e = strstr(l, "\r\n");
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len > nl && l[nl] == ':' && !strncasecmp(l, name, nl)) {
            const char *v = l + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(l + len - v), v);
            return out;
        }
        l += len + (e ? 2 : 0);
    }
    return out;
}

void stub_reply(vg_buf *out, int status, const char *headers, const char *body, size_t len)
{
    vg_buf_printf(out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, len,
                  headers ? headers : "");
    vg_buf_append(out, body, len);
}

/* ---- one provider attempt, waited for ---- */

typedef struct got {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    vg_presult res;
} got;

static void on_result(void *ud, vg_presult *res)
{
    got *g = ud;
    pthread_mutex_lock(&g->mu);
    g->res = *res;
    memset(&res->body, 0, sizeof res->body); /* taken */
    g->done = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

vg_presult stub_attempt(vg_provider *p, const vg_job *j)
{
    got g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, {0}};
    if (vg_provider_start(p, j, on_result, &g) != VG_OK) {
        fprintf(stderr, "stub_attempt: the attempt did not start\n");
        abort();
    }
    pthread_mutex_lock(&g.mu);
    while (!g.done)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    return g.res;
}

vg_provider_conf stub_conf(const char *name, const char *type, const char *base)
{
    vg_provider_conf c = {.timeout_ms = 5000, .connect_timeout_ms = 1000,
                          .cooldown_default_ms = 1000, .cooldown_max_ms = 120000,
                          .max_response_bytes = 1 << 20};
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.type, sizeof c.type, "%s", type);
    snprintf(c.base_url, sizeof c.base_url, "%s", base);
    return c;
}
