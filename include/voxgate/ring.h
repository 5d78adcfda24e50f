/* A fixed-size byte ring: the bounded buffer between a connection that
 * receives an upload and the thread that sends it on. Not thread-safe:
 * the owner locks around every call. */
#ifndef VOXGATE_RING_H
#define VOXGATE_RING_H

#include <stddef.h>

typedef struct vg_ring {
    char *buf;
    size_t cap, head, len; /* bytes buf[head..] (wrapping) are queued */
} vg_ring;

/* VG_OK or VG_ENOMEM. */
int vg_ring_init(vg_ring *q, size_t cap);
void vg_ring_free(vg_ring *q);
size_t vg_ring_space(const vg_ring *q);
/* Copies in as much of p as fits; returns how much. */
size_t vg_ring_put(vg_ring *q, const void *p, size_t n);
/* Moves out up to max bytes; returns how many. */
size_t vg_ring_get(vg_ring *q, void *out, size_t max);

#endif
