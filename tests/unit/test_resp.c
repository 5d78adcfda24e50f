/* The RESP reader (resp.c) on a socketpair: every reply type, replies
 * split at every awkward place, a large bulk string read partly into the
 * reply and partly into the buffer, pipelined replies after it, and each
 * way a stream can be wrong (bad bytes, over a bound, cut short, silent
 * past the socket's timeout). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "voxgate/resp.h"

typedef struct feed {
    int fd;
    const char *data;
    size_t len, chunk; /* written chunk bytes at a time, with a pause between */
    bool close_after;
} feed;

static void *writer(void *arg)
{
    feed *f = arg;
    for (size_t off = 0; off < f->len;) {
        size_t n = f->len - off < f->chunk ? f->len - off : f->chunk;
        ssize_t w = write(f->fd, f->data + off, n);
        if (w <= 0)
            break;
        off += (size_t)w;
        if (f->chunk < f->len)
            usleep(200);
    }
    if (f->close_after)
        shutdown(f->fd, SHUT_WR);
    return NULL;
}

typedef struct pair {
    int rd, wr;
    pthread_t tid;
    feed f;
    vg_resp_in in;
} pair;

/* Start writing data (chunk bytes at a time; 0 = at once) to a reader. */
static void start(pair *p, const char *data, size_t len, size_t chunk, bool close_after)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    p->rd = sv[0];
    p->wr = sv[1];
    p->f = (feed){sv[1], data, len, chunk ? chunk : len, close_after};
    p->in = (vg_resp_in){0};
    vg_resp_in_reset(&p->in, p->rd);
    assert_int_equal(pthread_create(&p->tid, NULL, writer, &p->f), 0);
}

static void finish(pair *p)
{
    pthread_join(p->tid, NULL);
    vg_resp_in_free(&p->in);
    close(p->rd);
    close(p->wr);
}

static redisReply *read_ok(pair *p)
{
    redisReply *r = NULL;
    assert_int_equal(vg_resp_read(&p->in, &r), VG_RESP_OK);
    assert_non_null(r);
    return r;
}

/* The next reply is of type; a string reply's text is str (NUL-terminated
 * at its length), an integer reply's value is integer. */
static void expect_flat(pair *p, int type, const char *str, long long integer)
{
    redisReply *r = read_ok(p);
    assert_int_equal(r->type, type);
    if (str) {
        assert_int_equal(r->len, strlen(str));
        assert_memory_equal(r->str, str, r->len + 1);
    }
    if (type == REDIS_REPLY_INTEGER)
        assert_int_equal(r->integer, integer);
    if (type == REDIS_REPLY_ARRAY)
        assert_int_equal(r->elements, 0);
    freeReplyObject(r);
}

/* Every type, read whole and then one byte per write (every split). */
static void every_type(void **state)
{
    (void)state;
    static const char s[] = "+OK\r\n-ERR wrong type\r\n:12345\r\n:-7\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n"
                            "$-1\r\n*-1\r\n*0\r\n*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+\r\n";
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        pair p;
        start(&p, s, sizeof s - 1, chunk, true);
        expect_flat(&p, REDIS_REPLY_STATUS, "OK", 0);
        expect_flat(&p, REDIS_REPLY_ERROR, "ERR wrong type", 0);
        expect_flat(&p, REDIS_REPLY_INTEGER, NULL, 12345);
        expect_flat(&p, REDIS_REPLY_INTEGER, NULL, -7);
        expect_flat(&p, REDIS_REPLY_STRING, "he\r\no", 0); /* CRLF inside a bulk is data */
        expect_flat(&p, REDIS_REPLY_STRING, "", 0);
        expect_flat(&p, REDIS_REPLY_NIL, NULL, 0);
        expect_flat(&p, REDIS_REPLY_NIL, NULL, 0);
        expect_flat(&p, REDIS_REPLY_ARRAY, NULL, 0);
        redisReply *r = read_ok(&p);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 3);
        assert_int_equal(r->element[0]->integer, 1);
        assert_int_equal(r->element[1]->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->element[1]->elements, 2);
        assert_string_equal(r->element[1]->element[0]->str, "x");
        assert_int_equal(r->element[1]->element[1]->type, REDIS_REPLY_NIL);
        assert_int_equal(r->element[2]->type, REDIS_REPLY_STATUS);
        assert_int_equal(r->element[2]->len, 0);
        freeReplyObject(r);
        r = NULL;
        assert_int_equal(vg_resp_read(&p.in, &r), VG_RESP_EOF); /* then the stream ends */
        assert_null(r);
        finish(&p);
    }
}

/* A value far larger than the buffer, with replies after it in the same
 * writes: the reader must split the bytes between the value and what
 * follows, whatever the chunking. */
static void large_bulk_then_more(void **state)
{
    (void)state;
    size_t big = 300 * 1024 + 7;
    size_t cap = big + 256;
    char *s = malloc(cap);
    assert_non_null(s);
    int n = snprintf(s, cap, "$%zu\r\n", big);
    for (size_t i = 0; i < big; i++)
        s[n + i] = (char)('a' + i % 26);
    size_t len = (size_t)n + big;
    len += (size_t)snprintf(s + len, cap - len, "\r\n:42\r\n$3\r\nend\r\n");
    static const size_t chunks[] = {0, 1000, 65536 + 3, 4096};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        pair p;
        start(&p, s, len, chunks[c], false);
        redisReply *r = read_ok(&p);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_int_equal(r->len, big);
        assert_memory_equal(r->str, s + n, big);
        assert_int_equal(r->str[big], '\0');
        freeReplyObject(r);
        r = read_ok(&p);
        assert_int_equal(r->integer, 42);
        freeReplyObject(r);
        r = read_ok(&p);
        assert_string_equal(r->str, "end");
        freeReplyObject(r);
        finish(&p);
    }
    free(s);
}

/* Many short replies in one write: all come out, in order, from one
 * buffer that is refilled and compacted on the way. */
static void pipelined_short_replies(void **state)
{
    (void)state;
    size_t count = 20000, cap = count * 32;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t len = 0;
    for (size_t i = 0; i < count; i++)
        len += i % 2 ? (size_t)snprintf(s + len, cap - len, ":%zu\r\n", i)
                     : (size_t)snprintf(s + len, cap - len, "$6\r\nv%05zu\r\n", i);
    pair p;
    start(&p, s, len, 0, true);
    for (size_t i = 0; i < count; i++) {
        redisReply *r = read_ok(&p);
        if (i % 2) {
            assert_int_equal(r->integer, (long long)i);
        } else {
            char want[8];
            snprintf(want, sizeof want, "v%05zu", i);
            assert_string_equal(r->str, want);
        }
        freeReplyObject(r);
    }
    finish(&p);
    free(s);
}

static int read_rc(const char *s, size_t len)
{
    pair p;
    start(&p, s, len, 0, true);
    redisReply *r = (redisReply *)1;
    int rc = vg_resp_read(&p.in, &r);
    if (rc != VG_RESP_OK)
        assert_null(r);
    else
        freeReplyObject(r);
    finish(&p);
    return rc;
}

#define RC(lit) read_rc(lit, sizeof lit - 1)

static void bad_streams(void **state)
{
    (void)state;
    assert_int_equal(RC("!nope\r\n"), VG_RESP_PROTO);           /* unknown type */
    assert_int_equal(RC("\r\n"), VG_RESP_PROTO);                /* empty line */
    assert_int_equal(RC(":12a\r\n"), VG_RESP_PROTO);            /* not a number */
    assert_int_equal(RC(":\r\n"), VG_RESP_PROTO);
    assert_int_equal(RC(":+5\r\n"), VG_RESP_PROTO);             /* only a digit or '-' first */
    assert_int_equal(RC(": 5\r\n"), VG_RESP_PROTO);
    assert_int_equal(RC(":99999999999999999999\r\n"), VG_RESP_PROTO); /* out of range */
    assert_int_equal(RC("$-2\r\n"), VG_RESP_PROTO);
    assert_int_equal(RC("$536870913\r\n"), VG_RESP_PROTO);     /* over 512 MiB */
    assert_int_equal(RC("*1048577\r\n"), VG_RESP_PROTO);       /* over 1M elements */
    assert_int_equal(RC("*-2\r\n"), VG_RESP_PROTO);
    assert_int_equal(RC("$3\r\nabcX\r\n"), VG_RESP_PROTO);     /* no CRLF after the value */
    assert_int_equal(RC("+OK\rX\r\n"), VG_RESP_PROTO);         /* CR without LF */
    assert_int_equal(RC("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), VG_RESP_PROTO); /* too deep */
    assert_int_equal(RC("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), VG_RESP_OK);         /* deep enough */
    /* Cut short: each is the end of the stream. */
    assert_int_equal(RC(""), VG_RESP_EOF);
    assert_int_equal(RC("+OK"), VG_RESP_EOF);
    assert_int_equal(RC("+OK\r"), VG_RESP_EOF);
    assert_int_equal(RC("$5\r\nabc"), VG_RESP_EOF);
    assert_int_equal(RC("$5\r\nabcde"), VG_RESP_EOF);
    assert_int_equal(RC("$5\r\nabcde\r"), VG_RESP_EOF);
    assert_int_equal(RC("*2\r\n:1\r\n"), VG_RESP_EOF);           /* the array's partial reply is freed */
    /* A line longer than the buffer can hold. */
    size_t big = 70 * 1024;
    char *s = malloc(big);
    assert_non_null(s);
    s[0] = '+';
    memset(s + 1, 'x', big - 1);
    assert_int_equal(read_rc(s, big), VG_RESP_PROTO);
    free(s);
}

/* A silent server: the socket's timeout ends the read. */
static void timeout_is_io(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timeval tv = {.tv_usec = 50000};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(write(sv[1], "$10\r\nabc", 8), 8);
    vg_resp_in in = {0};
    vg_resp_in_reset(&in, sv[0]);
    redisReply *r = NULL;
    errno = 0;
    assert_int_equal(vg_resp_read(&in, &r), VG_RESP_IO);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    assert_null(r);
    vg_resp_in_free(&in);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_type),
        cmocka_unit_test(large_bulk_then_more),
        cmocka_unit_test(pipelined_short_replies),
        cmocka_unit_test(bad_streams),
        cmocka_unit_test(timeout_is_io),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
