/* The blob seam: where audio bytes live. The local directory store is
 * the embedded default; S3 slots in behind the same calls. */
#ifndef VOXGATE_BLOB_H
#define VOXGATE_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

typedef struct vg_blob vg_blob;

typedef struct vg_blob_info {
    uint64_t size;
    char content_type[128];
    char etag[80];
    uint64_t modified_ms;
} vg_blob_info;

typedef struct vg_blob_stats {
    uint64_t puts, gets, deletes, errors, bytes_in, bytes_out;
} vg_blob_stats;

typedef struct vg_blob_ops {
    const char *name;
    int (*put)(vg_blob *b, const char *key, const void *data, size_t len, const char *ctype);
    int (*get)(vg_blob *b, const char *key, vg_buf *out, vg_blob_info *info);
    int (*head)(vg_blob *b, const char *key, vg_blob_info *info);
    int (*del)(vg_blob *b, const char *key);
    int (*ping)(vg_blob *b);
    void (*stats)(vg_blob *b, vg_blob_stats *out);
    void (*close)(vg_blob *b);
} vg_blob_ops;

struct vg_blob {
    const vg_blob_ops *ops;
};

/* put: VG_OK once the bytes are durable; get/head: VG_OK or VG_NOTFOUND;
 * del: VG_OK (removed) or VG_NOTFOUND. Errors are negative.
 * Keys follow the Files API rule (1-1024 bytes of [A-Za-z0-9/._-], no
 * ".." segment, no leading '/'); others get VG_EINVAL. */
static inline int vg_blob_put(vg_blob *b, const char *k, const void *d, size_t n, const char *ct)
{ return b->ops->put(b, k, d, n, ct); }
static inline int vg_blob_get(vg_blob *b, const char *k, vg_buf *out, vg_blob_info *info)
{ return b->ops->get(b, k, out, info); }
static inline int vg_blob_head(vg_blob *b, const char *k, vg_blob_info *info)
{ return b->ops->head(b, k, info); }
static inline int vg_blob_del(vg_blob *b, const char *k) { return b->ops->del(b, k); }
static inline int vg_blob_ping(vg_blob *b) { return b->ops->ping(b); }
static inline void vg_blob_stats_get(vg_blob *b, vg_blob_stats *o) { b->ops->stats(b, o); }
static inline void vg_blob_close(vg_blob *b) { if (b) b->ops->close(b); }

/* Files API key rule. */
bool vg_blob_key_valid(const char *key);

/* Local directory store rooted at dir (created if missing). Writes go to
 * a temp file, fsync, rename, fsync of the directory. */
int vg_blob_local_open(const char *dir, vg_blob **out, char *err, size_t errlen);

#endif
