/* The blob seam: where audio bytes live. The local directory store is
 * the embedded default; S3 slots in behind the same calls. */
#ifndef VOXGATE_BLOB_H
#define VOXGATE_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

typedef struct vg_blob vg_blob;

/* User metadata (S3 x-amz-meta-*, the Files API's X-Meta-*): names are
 * 1-64 chars of [a-z0-9-] (lower-cased on the way in), values 0-256
 * printable ASCII bytes; at most 16 pairs and 2 KiB together; no name
 * may begin another ("take" with "take-2": see vg_blob_meta_valid). */
#define VG_BLOB_META_MAX 16
#define VG_BLOB_META_NAME 64
#define VG_BLOB_META_VALUE 256
#define VG_BLOB_META_TOTAL 2048

typedef struct vg_blob_meta {
    char name[VG_BLOB_META_NAME + 1];
    char value[VG_BLOB_META_VALUE + 1];
} vg_blob_meta;

typedef struct vg_blob_info {
    uint64_t size;
    char content_type[128];
    char etag[80];
    uint64_t modified_ms;
    size_t nmeta;
    vg_blob_meta meta[VG_BLOB_META_MAX];
} vg_blob_info;

typedef struct vg_blob_stats {
    uint64_t puts, gets, deletes, errors, bytes_in, bytes_out;
    uint64_t heads, lists;
} vg_blob_stats;

/* One object of a listing; key is malloc'd. */
typedef struct vg_blob_entry {
    char *key;
    uint64_t size;
    char etag[80];
    uint64_t modified_ms;
} vg_blob_entry;

typedef struct vg_blob_list {
    vg_blob_entry *items;
    size_t n;
    bool truncated; /* more keys follow the last one */
} vg_blob_list;

void vg_blob_list_free(vg_blob_list *l);

/* A sweep removes the objects under prefix last written before
 * cutoff_ms, in one pass, counting them in removed. The local store also
 * removes what crashed writes left anywhere in its tree (temp files over
 * an hour old). It returns early, with VG_OK, once *stop is set. */
typedef struct vg_blob_sweep_job {
    const char *prefix;
    uint64_t cutoff_ms;
    const _Atomic bool *stop;  /* may be NULL */
    size_t page;               /* keys per listing without a sweep op; 0 = 1000 */
    uint64_t removed;
} vg_blob_sweep_job;

typedef struct vg_blob_ops {
    const char *name;
    int (*put)(vg_blob *b, const char *key, const void *data, size_t len, const char *ctype);
    int (*get)(vg_blob *b, const char *key, vg_buf *out, vg_blob_info *info);
    int (*head)(vg_blob *b, const char *key, vg_blob_info *info);
    int (*del)(vg_blob *b, const char *key);
    int (*ping)(vg_blob *b);
    void (*stats)(vg_blob *b, vg_blob_stats *out);
    void (*close)(vg_blob *b);
    /* Added for the Files API (issue 8). */
    int (*put_meta)(vg_blob *b, const char *key, const void *data, size_t len, const char *ctype,
                    const vg_blob_meta *meta, size_t nmeta);
    /* Keys starting with prefix, in byte order, strictly after `after`
     * (NULL or "" = from the start), at most limit (1-1000) of them. */
    int (*list)(vg_blob *b, const char *prefix, const char *after, size_t limit,
                vg_blob_list *out);
    /* A URL anyone can GET for expires_s (1..7 days); NULL when the store
     * cannot presign (the local store: the Files API signs its own URLs). */
    int (*presign)(vg_blob *b, const char *key, unsigned expires_s, vg_buf *url);
    /* A PUT of exactly len bytes pulled from read() as the store sends
     * them, so a large upload never sits whole in memory. read() fills up
     * to max bytes and returns how many (blocking until some arrive), or
     * VG_BLOB_READ_ABORT to give up: nothing is stored then. NULL when the
     * store cannot stream (the local store: callers buffer the body). */
    int (*put_stream)(vg_blob *b, const char *key, uint64_t len, const char *ctype,
                      const vg_blob_meta *meta, size_t nmeta,
                      size_t (*read)(void *ud, char *buf, size_t max), void *ud);
    /* See vg_blob_sweep. NULL: it pages through list + del. */
    int (*sweep)(vg_blob *b, struct vg_blob_sweep_job *job);
    /* The object as an open file, so a large one can be sent with
     * sendfile instead of read into memory: *fd (the caller closes it)
     * holds info->size bytes from *offset. With verify, the bytes are
     * hashed against the sha256 recorded at put (info->etag) the first
     * time each file is opened, and VG_ECORRUPT when they differ; a file
     * that passed is trusted while its inode, size and ctime stay the
     * same (objects are never rewritten in place: a put renames a new
     * file over the name). S3 spools the GET into an unnamed temp file
     * (O_TMPFILE) instead, which it hashes when verify is set (info->etag
     * is then that SHA-256, not S3's ETag). NULL when the store has
     * neither files nor a spool directory. */
    int (*open)(vg_blob *b, const char *key, bool verify, int *fd, uint64_t *offset,
                vg_blob_info *info);
    /* Ends the calls in flight within about a second, and every later
     * one at once, with VG_EUNAVAIL: a shutdown past its time does not
     * wait out the store's timeouts. For good: called only on the way
     * out. NULL when calls cannot be cut short (a local disk's). */
    void (*cancel)(vg_blob *b);
} vg_blob_ops;

#define VG_BLOB_READ_ABORT ((size_t)-1)

struct vg_blob {
    const vg_blob_ops *ops;
    const char *bucket;  /* S3 bucket name; NULL for the local store */
    /* When set (by main.c), called with every operation's latency; a
     * callback keeps the stores free of the metrics module. */
    void (*observe_us)(void *ud, uint64_t us);
    void *observe_ud;
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
static inline int vg_blob_put_meta(vg_blob *b, const char *k, const void *d, size_t n,
                                   const char *ct, const vg_blob_meta *m, size_t nm)
{ return b->ops->put_meta(b, k, d, n, ct, m, nm); }
static inline int vg_blob_list_keys(vg_blob *b, const char *prefix, const char *after,
                                    size_t limit, vg_blob_list *out)
{ return b->ops->list(b, prefix, after, limit, out); }
static inline void vg_blob_cancel(vg_blob *b) { if (b && b->ops->cancel) b->ops->cancel(b); }
static inline bool vg_blob_can_presign(vg_blob *b) { return b->ops->presign != NULL; }
static inline int vg_blob_presign(vg_blob *b, const char *k, unsigned expires_s, vg_buf *url)
{ return b->ops->presign ? b->ops->presign(b, k, expires_s, url) : VG_EINVAL; }

/* A store across the network (S3): any call may take up to its timeout,
 * so HTTP handlers make them on vg-io threads (vg_req_offload). */
static inline bool vg_blob_is_remote(const vg_blob *b) { return b->bucket != NULL; }
static inline bool vg_blob_can_stream(vg_blob *b) { return b->ops->put_stream != NULL; }
static inline bool vg_blob_can_open(vg_blob *b) { return b->ops->open != NULL; }
static inline int vg_blob_open(vg_blob *b, const char *k, bool verify, int *fd, uint64_t *offset,
                               vg_blob_info *info)
{ return b->ops->open ? b->ops->open(b, k, verify, fd, offset, info) : VG_EINVAL; }
static inline int vg_blob_put_stream(vg_blob *b, const char *k, uint64_t len, const char *ct,
                                     const vg_blob_meta *m, size_t nm,
                                     size_t (*read)(void *ud, char *buf, size_t max), void *ud)
{ return b->ops->put_stream(b, k, len, ct, m, nm, read, ud); }

/* The sweep op, or list + del page by page where the store has none.
 * An error stops it; what was removed before stays counted. */
int vg_blob_sweep(vg_blob *b, vg_blob_sweep_job *job);

/* A one-line reason for the calling thread's last failed blob operation
 * ("S3 answered 403 SignatureDoesNotMatch: ..."); "" when none. */
const char *vg_blob_last_error(void);
/* The HTTP status the remote store answered with in that failure; 0 when
 * it never answered (unreachable, timed out) or the store is local. */
long vg_blob_last_status(void);
/* Sets the reason and resets the status to 0. */
void vg_blob_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vg_blob_set_status(long status);

/* Metadata rule above. */
bool vg_blob_meta_name_valid(const char *name);
bool vg_blob_meta_value_valid(const char *value);
/* All pairs valid, no repeated name, within the count and total bounds. */
bool vg_blob_meta_valid(const vg_blob_meta *m, size_t n);

/* Files API key rule. */
bool vg_blob_key_valid(const char *key);
/* The looser rule for reading, listing and deleting what other S3 clients
 * wrote (spaces, '+', UTF-8): 1-1024 bytes, no control character, no
 * '%', no leading '/', no "." or ".." segment. Writes use the strict rule. */
bool vg_blob_key_readable(const char *key);

/* Local directory store rooted at dir (created if missing). Writes go to
 * a temp file, fsync, rename, fsync of the directory. */
int vg_blob_local_open(const char *dir, vg_blob **out, char *err, size_t errlen);

/* S3-compatible store (src/store/blob_s3.c). Strings are copied. */
typedef struct vg_blob_s3_opts {
    const char *endpoint;        /* "http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com" */
    const char *public_endpoint; /* host presigned URLs are signed for; NULL/"" = endpoint */
    const char *bucket;
    const char *region;
    const char *access_key;
    const char *secret_key;
    const char *session_token;   /* NULL when none */
    bool path_style;             /* endpoint/bucket/key; else bucket.endpoint/key */
    bool create_bucket;          /* PUT the bucket at open when it is missing */
    unsigned connect_timeout_ms;
    unsigned timeout_ms;         /* whole operation */
    unsigned max_handles;        /* idle curl handles kept for reuse */
    uint64_t max_object_bytes;   /* largest object read or written whole; 0 = 1 GiB */
    const char *spool_dir;       /* where open() spools a GET; NULL/"" or a directory
                                    without O_TMPFILE support: no open op */
} vg_blob_s3_opts;

int vg_blob_s3_open(const vg_blob_s3_opts *o, vg_blob **out, char *err, size_t errlen);

#endif
