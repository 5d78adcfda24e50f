/* Private seam between the Redis client (redis_client.c) and its event
 * thread (redis_async.c): the client owns one loop, made at open and
 * stopped at close before any connection is freed. */
#ifndef VOXGATE_CACHE_REDIS_LOOP_H
#define VOXGATE_CACHE_REDIS_LOOP_H

#include "voxgate/redis.h"

typedef struct vg_redis_loop vg_redis_loop;

/* Starts nothing: the thread is started by the first vg_redis_submit. */
vg_redis_loop *vg_redis_loop_new(vg_redis *r);
/* Stops and joins the thread; queued commands complete with VG_EUNAVAIL. */
void vg_redis_loop_free(vg_redis_loop *l);
/* The client's loop (redis_client.c). */
vg_redis_loop *vg_redis_loop_of(vg_redis *r);

#endif
