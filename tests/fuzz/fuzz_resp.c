/* libFuzzer target: the RESP reader (resp.c) on any byte stream, sent
 * through a socketpair and then closed. It must never crash or leak,
 * every reply it returns must be well formed (strings NUL-terminated at
 * their length, arrays with their elements), and it must end with EOF or
 * a protocol error, never a hang. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "voxgate/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const redisReply *r, size_t room)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (!r->str || r->str[r->len] != '\0' || r->len > room)
            abort();
        break;
    case REDIS_REPLY_ARRAY:
        if (r->elements > room || (r->elements && !r->element))
            abort();
        for (size_t i = 0; i < r->elements; i++)
            check(r->element[i], room);
        break;
    case REDIS_REPLY_INTEGER:
    case REDIS_REPLY_NIL: break;
    default: abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 60000) /* fits the socket buffer: written whole before reading */
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 0;
    int sz = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(sv[1], data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR);
    vg_resp_in in = {0};
    vg_resp_in_reset(&in, sv[0]);
    for (;;) {
        redisReply *r = NULL;
        int rc = vg_resp_read(&in, &r);
        if (rc != VG_RESP_OK) {
            if (r || (rc != VG_RESP_EOF && rc != VG_RESP_PROTO))
                abort();
            break;
        }
        check(r, size);
        freeReplyObject(r);
    }
    vg_resp_in_free(&in);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
