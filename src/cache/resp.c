/* A RESP reader for pipelined replies, in place of hiredis's: hiredis
 * appends every read to its own buffer and then copies each bulk string
 * into the reply, so a 32 KiB value crossed memory three times (the
 * copies were 60% of the Redis thread's time on 32 KiB L2 hits). Here
 * short replies are parsed out of one buffer filled by large reads, and
 * a bulk string that does not fit is read by the kernel straight into
 * its reply's storage. Replies are hiredis redisReply objects allocated
 * with malloc, as hiredis 0.14's freeReplyObject expects. The socket is
 * blocking with SO_RCVTIMEO, so a hung server ends a read with EAGAIN. */
#include "voxgate/resp.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define BUF_CAP (64u * 1024)
#define MAX_LINE (BUF_CAP - 2)        /* a status, error or length line */
#define MAX_BULK (512ll * 1024 * 1024) /* Redis's own proto-max-bulk-len */
#define MAX_ELEMENTS (1ll << 20)
#define MAX_DEPTH 7

void vg_resp_in_reset(vg_resp_in *in, int fd)
{
    in->fd = fd;
    in->pos = in->len = 0;
}

void vg_resp_in_free(vg_resp_in *in)
{
    free(in->buf);
    *in = (vg_resp_in){.fd = -1};
}

/* Reads into iov, retrying on EINTR: > 0 bytes, or an error code. */
static int read_some(int fd, struct iovec *iov, int n, size_t *got)
{
    for (;;) {
        ssize_t r = readv(fd, iov, n);
        if (r > 0) {
            *got = (size_t)r;
            return VG_RESP_OK;
        }
        if (r == 0)
            return VG_RESP_EOF;
        if (errno != EINTR)
            return VG_RESP_IO;
    }
}

/* At least one more byte into the buffer, moving the unread part to the
 * front when the free tail is short. */
static int fill(vg_resp_in *in)
{
    if (!in->buf && !(in->buf = malloc(BUF_CAP)))
        return VG_RESP_NOMEM;
    in->cap = BUF_CAP;
    if (in->pos == in->len)
        in->pos = in->len = 0;
    else if (in->cap - in->len < in->cap / 4) {
        memmove(in->buf, in->buf + in->pos, in->len - in->pos);
        in->len -= in->pos;
        in->pos = 0;
    }
    struct iovec iov = {in->buf + in->len, in->cap - in->len};
    size_t got;
    int rc = read_some(in->fd, &iov, 1, &got);
    if (rc == VG_RESP_OK)
        in->len += got;
    return rc;
}

/* The next line, without its CRLF; *n is its length. */
static int line(vg_resp_in *in, const char **out, size_t *n)
{
    size_t scanned = 0;
    for (;;) {
        const char *p = in->buf ? in->buf + in->pos : NULL;
        size_t avail = in->len - in->pos;
        const char *cr = avail > scanned ? memchr(p + scanned, '\r', avail - scanned) : NULL;
        if (cr && (size_t)(cr - p) + 1 < avail) {
            if (cr[1] != '\n')
                return VG_RESP_PROTO;
            *out = p;
            *n = (size_t)(cr - p);
            in->pos += *n + 2;
            return VG_RESP_OK;
        }
        if (avail >= MAX_LINE)
            return VG_RESP_PROTO;
        scanned = cr ? (size_t)(cr - p) : avail; /* a lone CR at the end is looked at again */
        int rc = fill(in);
        if (rc != VG_RESP_OK)
            return rc;
    }
}

/* A decimal integer that is the whole of s[0..n). */
static int parse_ll(const char *s, size_t n, long long *v)
{
    if (n == 0 || n > 20)
        return VG_RESP_PROTO;
    char tmp[24];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    *v = strtoll(tmp, &end, 10);
    return errno || end != tmp + n || !(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'))
               ? VG_RESP_PROTO
               : VG_RESP_OK;
}

static redisReply *new_reply(int type)
{
    redisReply *r = calloc(1, sizeof *r);
    if (r)
        r->type = type;
    return r;
}

/* A bulk string of blen bytes and its CRLF: what the buffer holds is
 * copied, the rest is read into the string itself (and whatever follows
 * it into the buffer, in the same call). */
static int bulk(vg_resp_in *in, long long blen, redisReply *r)
{
    size_t want = (size_t)blen;
    if (!(r->str = malloc(want + 1)))
        return VG_RESP_NOMEM;
    r->len = want;
    size_t have = in->len - in->pos;
    size_t take = have < want ? have : want;
    if (take)
        memcpy(r->str, in->buf + in->pos, take);
    in->pos += take;
    if (in->pos == in->len)
        in->pos = in->len = 0;
    while (take < want) {
        struct iovec iov[2] = {{r->str + take, want - take}, {in->buf + in->len, in->cap - in->len}};
        size_t got;
        int rc = read_some(in->fd, iov, 2, &got);
        if (rc != VG_RESP_OK)
            return rc;
        size_t mine = got < want - take ? got : want - take;
        take += mine;
        in->len += got - mine;
    }
    r->str[want] = '\0';
    while (in->len - in->pos < 2) {
        int rc = fill(in);
        if (rc != VG_RESP_OK)
            return rc;
    }
    if (in->buf[in->pos] != '\r' || in->buf[in->pos + 1] != '\n')
        return VG_RESP_PROTO;
    in->pos += 2;
    return VG_RESP_OK;
}

static int reply(vg_resp_in *in, int depth, redisReply **out);

static int array(vg_resp_in *in, int depth, long long n, redisReply *r)
{
    if (n == 0)
        return VG_RESP_OK;
    if (!(r->element = calloc((size_t)n, sizeof *r->element)))
        return VG_RESP_NOMEM;
    r->elements = (size_t)n; /* slots not reached stay NULL, which frees as nothing */
    for (long long i = 0; i < n; i++) {
        int rc = reply(in, depth + 1, &r->element[i]);
        if (rc != VG_RESP_OK)
            return rc;
    }
    return VG_RESP_OK;
}

static int reply(vg_resp_in *in, int depth, redisReply **out)
{
    *out = NULL;
    if (depth > MAX_DEPTH)
        return VG_RESP_PROTO;
    const char *s;
    size_t n;
    int rc = line(in, &s, &n);
    if (rc != VG_RESP_OK)
        return rc;
    if (n == 0)
        return VG_RESP_PROTO;
    char t = s[0];
    long long v = 0;
    if ((t == ':' || t == '$' || t == '*') && parse_ll(s + 1, n - 1, &v) != VG_RESP_OK)
        return VG_RESP_PROTO;
    int type;
    switch (t) {
    case '+': type = REDIS_REPLY_STATUS; break;
    case '-': type = REDIS_REPLY_ERROR; break;
    case ':': type = REDIS_REPLY_INTEGER; break;
    case '$':
        if (v < -1 || v > MAX_BULK)
            return VG_RESP_PROTO;
        type = v == -1 ? REDIS_REPLY_NIL : REDIS_REPLY_STRING;
        break;
    case '*':
        if (v < -1 || v > MAX_ELEMENTS)
            return VG_RESP_PROTO;
        type = v == -1 ? REDIS_REPLY_NIL : REDIS_REPLY_ARRAY;
        break;
    default: return VG_RESP_PROTO;
    }
    redisReply *r = new_reply(type);
    if (!r)
        return VG_RESP_NOMEM;
    *out = r;
    switch (type) {
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (!(r->str = malloc(n)))
            return VG_RESP_NOMEM;
        memcpy(r->str, s + 1, n - 1);
        r->str[n - 1] = '\0';
        r->len = n - 1;
        return VG_RESP_OK;
    case REDIS_REPLY_INTEGER: r->integer = v; return VG_RESP_OK;
    case REDIS_REPLY_STRING: return bulk(in, v, r);
    case REDIS_REPLY_ARRAY: return array(in, depth, v, r);
    default: return VG_RESP_OK;
    }
}

int vg_resp_read(vg_resp_in *in, redisReply **out)
{
    int rc = reply(in, 0, out);
    if (rc != VG_RESP_OK && *out) {
        freeReplyObject(*out);
        *out = NULL;
    }
    return rc;
}
