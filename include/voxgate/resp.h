/* Reading RESP replies straight off a Redis socket, for the Redis client
 * (src/cache/resp.c says why it does not use hiredis's reader). */
#ifndef VOXGATE_RESP_H
#define VOXGATE_RESP_H

#include <hiredis/hiredis.h>
#include <stddef.h>

enum {
    VG_RESP_OK = 0,
    VG_RESP_EOF,     /* the server closed the socket */
    VG_RESP_IO,      /* read() failed; errno says why (EAGAIN: the socket's timeout) */
    VG_RESP_PROTO,   /* not RESP, or over a bound */
    VG_RESP_NOMEM,
};

typedef struct vg_resp_in {
    int fd;
    char *buf;
    size_t cap, pos, len; /* unread bytes are buf[pos..len) */
} vg_resp_in;

/* Start reading fd afresh (a new connection): buffered bytes are dropped. */
void vg_resp_in_reset(vg_resp_in *in, int fd);
void vg_resp_in_free(vg_resp_in *in);

/* One whole reply as a hiredis redisReply (freeReplyObject frees it). */
int vg_resp_read(vg_resp_in *in, redisReply **out);

#endif
