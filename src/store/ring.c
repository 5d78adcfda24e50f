/* The byte ring of voxgate/ring.h. */
#include "voxgate/ring.h"

#include <stdlib.h>
#include <string.h>

#include "voxgate/util.h"

int vg_ring_init(vg_ring *q, size_t cap)
{
    *q = (vg_ring){0};
    q->buf = malloc(cap ? cap : 1);
    if (!q->buf)
        return VG_ENOMEM;
    q->cap = cap ? cap : 1;
    return VG_OK;
}

void vg_ring_free(vg_ring *q)
{
    free(q->buf);
    *q = (vg_ring){0};
}

size_t vg_ring_space(const vg_ring *q) { return q->cap - q->len; }

size_t vg_ring_put(vg_ring *q, const void *p, size_t n)
{
    if (n > vg_ring_space(q))
        n = vg_ring_space(q);
    size_t tail = (q->head + q->len) % q->cap;
    size_t first = n < q->cap - tail ? n : q->cap - tail;
    memcpy(q->buf + tail, p, first);
    memcpy(q->buf, (const char *)p + first, n - first);
    q->len += n;
    return n;
}

size_t vg_ring_get(vg_ring *q, void *out, size_t max)
{
    size_t n = max < q->len ? max : q->len;
    size_t first = n < q->cap - q->head ? n : q->cap - q->head;
    memcpy(out, q->buf + q->head, first);
    memcpy((char *)out + first, q->buf, n - first);
    q->head = (q->head + n) % q->cap;
    q->len -= n;
    return n;
}
