/* The embedded blob store: one file per object under a root directory.
 *
 * Layout. Key "tts/ab/x.mp3" is the file ROOT/tts/ab/x.mp3@ : every key
 * segment but the last is a directory, and the object file is the last
 * segment plus '@'. '@' is outside the key alphabet, so an object file
 * never has a directory's name, and keys "a" and "a/b" can both exist as
 * they can on S3. Other names in the tree start with '@' ("@tmp-...",
 * "@probe-...") and end without one, so they are never objects and a
 * crashed write leaves only an invisible temp file behind.
 *
 * File format. The content type and a digest travel inside the object
 * file, in a header before the bytes, so that one rename publishes data
 * and metadata together (a sidecar would need two renames and could be
 * seen half-updated after a crash):
 *
 *   "VGBLOB2\n"  u64be size  u64be modified_ms  sha256[32]  u8 ctlen
 *   u16be metalen  content type (ctlen bytes, 1-127 printable ASCII)
 *   metadata (metalen bytes: per pair u8 nlen, name, u16be vlen, value)
 *   data (size bytes)
 *
 * Version 2 added the user metadata of the Files API (X-Meta-*).
 *
 * The etag is the lowercase hex sha256 of the data, computed once at put.
 * Reads check the header and the file length, not the digest: callers that
 * need integrity (TTS entries) verify their own sha256 already, or open
 * the file with verify, which hashes each unchanged file once.
 *
 * Durability. put writes a temp file in the target directory, fsyncs it,
 * renames it over the object and fsyncs the directory; directories it
 * creates are made durable in their parents too. del does not fsync: a
 * crash may bring a deleted object back, which every caller tolerates,
 * and bulk invalidation would otherwise pay one directory fsync per blob.
 * Empty directories are left in place after deletes; removing them would
 * race with puts creating files in them. */
#include "voxgate/blob.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/keys.h"

#define KEY_MAX 1024
#define OBJ_MAX ((uint64_t)1 << 30) /* objects are read whole into memory */
#define HDR_FIXED 59
#define CTYPE_MAX 127
#define META_ENC_MAX (VG_BLOB_META_MAX * 3 + VG_BLOB_META_TOTAL)
#define HDR_MAX (HDR_FIXED + CTYPE_MAX + META_ENC_MAX)
#define LIST_MAX 1000
#define TMP_NAME 32
#define DIR_MODE 0750
#define FILE_MODE 0640

static const char magic[8] = {'V', 'G', 'B', 'L', 'O', 'B', '2', '\n'};

/* Roots replaced by ping are kept open until close: another thread may
 * still be using one, and closing it could hand its number to a new file. */
#define MAX_RETIRED 16

/* Remembered verified files (see local_open). */
#define VERIFIED_SLOTS 512

typedef struct local_blob {
    vg_blob base;
    _Atomic int root;
    char *path;
    pthread_mutex_t reopen_mu;
    int retired[MAX_RETIRED];
    size_t nretired;
    _Atomic uint64_t tmp_seq;
    _Atomic uint64_t puts, gets, deletes, errors, bytes_in, bytes_out, heads, lists;
    /* Files whose bytes matched their digest (open with verify), one
     * slot per inode hash: a clash only costs a second hashing. */
    pthread_mutex_t verified_mu;
    struct verified_file {
        dev_t dev;
        ino_t ino;              /* 0: empty (no file has inode 0) */
        off_t size;
        struct timespec ctime;
    } verified[VERIFIED_SLOTS];
} local_blob;

typedef struct obj_hdr {
    uint64_t size, modified_ms;
    unsigned char sha[32];
    char ctype[CTYPE_MAX + 1];
    size_t nmeta;
    vg_blob_meta meta[VG_BLOB_META_MAX];
    size_t len; /* encoded header length: where the data starts */
} obj_hdr;

/* ---- keys ---- */

static bool key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '/' || c == '.' || c == '_' || c == '-';
}

static bool segment_ok(const char *s, size_t n)
{
    return n > 0 && !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* The Files API rule (1-1024 bytes of [A-Za-z0-9/._-], no ".." segment,
 * no leading '/'), plus three rules of our own: no empty segment ("a//b",
 * trailing '/') and no "." segment. On a filesystem those would alias
 * "a/b" and "a", and S3 would keep them apart; refusing them keeps every
 * backend answering the same keys the same way. */
bool vg_blob_key_valid(const char *key)
{
    if (!key)
        return false;
    size_t seg = 0, i = 0;
    for (; key[i]; i++) {
        if (i >= KEY_MAX || !key_char((unsigned char)key[i]))
            return false;
        if (key[i] == '/') {
            if (!segment_ok(key + seg, i - seg))
                return false;
            seg = i + 1;
        }
    }
    return segment_ok(key + seg, i - seg);
}

static bool dot_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

bool vg_blob_key_readable(const char *key)
{
    if (!key || !*key || *key == '/')
        return false;
    size_t seg = 0, i = 0;
    for (; key[i]; i++) {
        unsigned char c = (unsigned char)key[i];
        if (i >= KEY_MAX || c < 0x20 || c == 0x7f || c == '%')
            return false;
        if (c == '/') {
            if (dot_segment(key + seg, i - seg))
                return false;
            seg = i + 1;
        }
    }
    return !dot_segment(key + seg, i - seg);
}

/* Whether the filesystem can hold the key: NAME_MAX per directory and
 * one byte less for the last segment, which gets the '@'. */
static bool key_fits_fs(const char *key)
{
    const char *slash = strrchr(key, '/');
    const char *leaf = slash ? slash + 1 : key;
    if (strlen(leaf) + 1 > NAME_MAX)
        return false;
    for (const char *p = key; p < leaf;) {
        const char *e = strchr(p, '/');
        if ((size_t)(e - p) > NAME_MAX)
            return false;
        p = e + 1;
    }
    return true;
}

static void obj_path(const char *key, char *out)
{
    size_t n = strlen(key);
    memcpy(out, key, n);
    out[n] = '@';
    out[n + 1] = '\0';
}

/* ---- small I/O helpers ---- */

static int errno_rc(int e)
{
    switch (e) {
    case ENOMEM: return VG_ENOMEM;
    case ENAMETOOLONG: return VG_EINVAL;
    case ENOSPC: case EDQUOT: case EROFS: case EIO: return VG_EUNAVAIL;
    default: return VG_ERR;
    }
}

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads up to n bytes at off; fewer only at end of file. -1 on error. */
static ssize_t pread_all(int fd, void *p, size_t n, off_t off)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, c + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* fsync the directory holding path (relative to root). */
static int fsync_parent(int root, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return fsync(root) == 0 ? VG_OK : errno_rc(errno);
    char dir[KEY_MAX + 2];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = openat(root, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno_rc(errno);
    int rc = fsync(fd) == 0 ? VG_OK : errno_rc(errno);
    close(fd);
    return rc;
}

/* mkdir -p of a relative path under root. A directory we create is
 * fsynced into its parent, or a crash could lose the objects inside. */
static int make_dirs(int root, char *path)
{
    for (char *p = path;; p++) {
        if (*p && *p != '/')
            continue;
        char saved = *p;
        *p = '\0';
        int rc = VG_OK;
        if (mkdirat(root, path, DIR_MODE) == 0)
            rc = fsync_parent(root, path);
        else if (errno != EEXIST)
            rc = errno_rc(errno);
        *p = saved;
        if (rc != VG_OK || !saved)
            return rc;
    }
}

/* ---- header codec ---- */

static void put_be64(unsigned char *o, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        o[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Printable ASCII only: the value goes back out as a Content-Type. */
static bool ctype_valid(const char *ct)
{
    size_t n = strlen(ct);
    if (n == 0 || n > CTYPE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ct[i] < 0x20 || ct[i] > 0x7e)
            return false;
    return true;
}

static void put_be16(unsigned char *o, size_t v)
{
    o[0] = (unsigned char)(v >> 8);
    o[1] = (unsigned char)v;
}

static size_t get_be16(const unsigned char *p) { return ((size_t)p[0] << 8) | p[1]; }

/* The metadata block; the caller has checked vg_blob_meta_valid. */
static size_t meta_encode(const obj_hdr *h, unsigned char *o)
{
    size_t n = 0;
    for (size_t i = 0; i < h->nmeta; i++) {
        size_t nl = strlen(h->meta[i].name), vl = strlen(h->meta[i].value);
        o[n++] = (unsigned char)nl;
        memcpy(o + n, h->meta[i].name, nl);
        n += nl;
        put_be16(o + n, vl);
        memcpy(o + n + 2, h->meta[i].value, vl);
        n += 2 + vl;
    }
    return n;
}

static bool meta_decode(const unsigned char *p, size_t n, obj_hdr *h)
{
    h->nmeta = 0;
    for (size_t at = 0; at < n;) {
        if (h->nmeta == VG_BLOB_META_MAX)
            return false;
        vg_blob_meta *m = &h->meta[h->nmeta++];
        size_t nl = p[at++];
        if (nl == 0 || nl > VG_BLOB_META_NAME || at + nl + 2 > n)
            return false;
        memcpy(m->name, p + at, nl);
        m->name[nl] = '\0';
        size_t vl = get_be16(p + at + nl);
        at += nl + 2;
        if (vl > VG_BLOB_META_VALUE || at + vl > n)
            return false;
        memcpy(m->value, p + at, vl);
        m->value[vl] = '\0';
        at += vl;
    }
    return vg_blob_meta_valid(h->meta, h->nmeta);
}

static size_t hdr_encode(const obj_hdr *h, unsigned char out[HDR_MAX])
{
    size_t ctlen = strlen(h->ctype);
    memcpy(out, magic, 8);
    put_be64(out + 8, h->size);
    put_be64(out + 16, h->modified_ms);
    memcpy(out + 24, h->sha, 32);
    out[56] = (unsigned char)ctlen;
    memcpy(out + HDR_FIXED, h->ctype, ctlen);
    size_t ml = meta_encode(h, out + HDR_FIXED + ctlen);
    put_be16(out + 57, ml);
    return HDR_FIXED + ctlen + ml;
}

static bool hdr_decode(const unsigned char *p, size_t n, obj_hdr *h)
{
    if (n < HDR_FIXED || memcmp(p, magic, 8) != 0)
        return false;
    size_t ctlen = p[56], ml = get_be16(p + 57);
    if (ctlen == 0 || ctlen > CTYPE_MAX || ml > META_ENC_MAX || n < HDR_FIXED + ctlen + ml)
        return false;
    h->size = get_be64(p + 8);
    h->modified_ms = get_be64(p + 16);
    memcpy(h->sha, p + 24, 32);
    memcpy(h->ctype, p + HDR_FIXED, ctlen);
    h->ctype[ctlen] = '\0';
    h->len = HDR_FIXED + ctlen + ml;
    return ctype_valid(h->ctype) && meta_decode(p + HDR_FIXED + ctlen, ml, h);
}

static void hdr_info(const obj_hdr *h, vg_blob_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    info->size = h->size;
    info->modified_ms = h->modified_ms;
    snprintf(info->content_type, sizeof info->content_type, "%s", h->ctype);
    vg_hex_lower(h->sha, sizeof h->sha, info->etag);
    info->nmeta = h->nmeta;
    memcpy(info->meta, h->meta, h->nmeta * sizeof h->meta[0]);
}

/* ---- stats ---- */

static void count(_Atomic uint64_t *c, uint64_t n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }

static void observe(vg_blob *b, uint64_t t0)
{
    if (b->observe_us)
        b->observe_us(b->observe_ud, (vg_mono_ns() - t0) / 1000u);
}

/* Caller mistakes are not store errors; everything else negative is. */
static int tally(local_blob *lb, int rc)
{
    if (rc < 0 && rc != VG_EINVAL && rc != VG_ETOOBIG)
        count(&lb->errors, 1);
    return rc;
}

/* ---- put ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* A fresh temp file in dir; the name starts with '@' so it is never an
 * object. The sequence starts at a random point per process, and
 * O_EXCL settles the rare clash with another process sharing the tree. */
static int create_tmp(local_blob *lb, int dir, char name[TMP_NAME])
{
    for (int tries = 0; tries < 16; tries++) {
        uint64_t v = mix64(atomic_fetch_add(&lb->tmp_seq, 0x9e3779b97f4a7c15u));
        snprintf(name, TMP_NAME, "@tmp-%016llx", (unsigned long long)v);
        int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                        FILE_MODE);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

static int write_tmp(local_blob *lb, int dir, char name[TMP_NAME], const unsigned char *hdr,
                     size_t hlen, const void *data, size_t len)
{
    int fd = create_tmp(lb, dir, name);
    if (fd < 0)
        return errno_rc(errno);
    int err = 0;
    if (!write_all(fd, hdr, hlen) || !write_all(fd, data, len) || fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (err)
        unlinkat(dir, name, 0);
    return err ? errno_rc(err) : VG_OK;
}

/* The directory an object lives in, created on demand for puts. The
 * common case (it exists) costs a single openat. */
static int root_of(local_blob *lb) { return atomic_load(&lb->root); }

static int open_parent(int root, const char *key, bool create, int *out)
{
    const char *slash = strrchr(key, '/');
    if (!slash) {
        *out = root;
        return VG_OK;
    }
    char dir[KEY_MAX + 1];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - key), key);
    int fd = openat(root, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        int rc = make_dirs(root, dir);
        if (rc != VG_OK)
            return rc;
        fd = openat(root, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? VG_NOTFOUND : errno_rc(errno);
    *out = fd;
    return VG_OK;
}

static int put_checked(local_blob *lb, const char *key, const void *data, size_t len,
                       const obj_hdr *h)
{
    unsigned char hdr[HDR_MAX];
    size_t hlen = hdr_encode(h, hdr);
    int dir, root = root_of(lb);
    int rc = open_parent(root, key, true, &dir);
    if (rc != VG_OK)
        return rc == VG_NOTFOUND ? VG_ERR : rc;
    const char *slash = strrchr(key, '/');
    char leaf[NAME_MAX + 1], tmp[TMP_NAME];
    obj_path(slash ? slash + 1 : key, leaf);
    rc = write_tmp(lb, dir, tmp, hdr, hlen, data, len);
    if (rc == VG_OK && renameat(dir, tmp, dir, leaf) != 0) {
        rc = errno_rc(errno);
        unlinkat(dir, tmp, 0);
    }
    if (rc == VG_OK && fsync(dir) != 0)
        rc = errno_rc(errno);
    if (dir != root)
        close(dir);
    return rc;
}

static int local_put_meta(vg_blob *b, const char *key, const void *data, size_t len,
                          const char *ctype, const vg_blob_meta *meta, size_t nmeta)
{
    local_blob *lb = (local_blob *)b;
    uint64_t t0 = vg_mono_ns();
    if (!ctype || !*ctype)
        ctype = "application/octet-stream";
    if (!vg_blob_key_valid(key) || !key_fits_fs(key) || (len && !data) || !ctype_valid(ctype) ||
        !vg_blob_meta_valid(meta, nmeta))
        return VG_EINVAL;
    if (len > OBJ_MAX)
        return VG_ETOOBIG;
    obj_hdr h = {.size = len, .modified_ms = vg_clock_ms(), .nmeta = nmeta};
    snprintf(h.ctype, sizeof h.ctype, "%s", ctype);
    if (nmeta)
        memcpy(h.meta, meta, nmeta * sizeof *meta);
    vg_sha256_raw(data, len, h.sha);
    int rc = put_checked(lb, key, data, len, &h);
    if (rc == VG_OK) {
        count(&lb->puts, 1);
        count(&lb->bytes_in, len);
    }
    observe(b, t0);
    return tally(lb, rc);
}

static int local_put(vg_blob *b, const char *key, const void *data, size_t len,
                     const char *ctype)
{
    return local_put_meta(b, key, data, len, ctype, NULL, 0);
}

/* ---- get / head / del ---- */

static int open_obj(local_blob *lb, const char *key, int *fd)
{
    if (!vg_blob_key_valid(key))
        return VG_EINVAL;
    if (!key_fits_fs(key))
        return VG_NOTFOUND; /* put refuses such keys, so it cannot exist */
    char path[KEY_MAX + 2];
    obj_path(key, path);
    *fd = openat(root_of(lb), path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (*fd >= 0)
        return VG_OK;
    return errno == ENOENT || errno == ENOTDIR ? VG_NOTFOUND : errno_rc(errno);
}

/* Reads and checks the header, and that the file holds exactly the data
 * it announces (a torn or foreign file is corrupt, not an object). */
static int load_hdr(int fd, obj_hdr *h)
{
    unsigned char raw[HDR_MAX];
    ssize_t n = pread_all(fd, raw, sizeof raw, 0);
    if (n < 0)
        return errno_rc(errno);
    if (!hdr_decode(raw, (size_t)n, h))
        return VG_ECORRUPT;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno_rc(errno);
    if ((uint64_t)st.st_size < h->len || (uint64_t)st.st_size - h->len != h->size)
        return VG_ECORRUPT;
    return VG_OK;
}

static int read_data(int fd, const obj_hdr *h, vg_buf *out)
{
    if (h->size > OBJ_MAX)
        return VG_ETOOBIG;
    vg_buf_reset(out);
    if (vg_buf_reserve(out, (size_t)h->size) != VG_OK)
        return VG_ENOMEM;
    ssize_t n = pread_all(fd, out->data, (size_t)h->size, (off_t)h->len);
    if (n < 0)
        return errno_rc(errno);
    if ((uint64_t)n != h->size)
        return VG_ECORRUPT; /* shrank under us: not something we ever do */
    out->len = (size_t)n;
    out->data[out->len] = '\0';
    return VG_OK;
}

/* Header (and, when out is given, the data) of one object. */
static int load_obj(local_blob *lb, const char *key, vg_buf *out, vg_blob_info *info)
{
    int fd;
    int rc = open_obj(lb, key, &fd);
    if (rc != VG_OK)
        return rc;
    obj_hdr h;
    rc = load_hdr(fd, &h);
    if (rc == VG_OK && out)
        rc = read_data(fd, &h, out);
    if (rc == VG_OK)
        hdr_info(&h, info);
    close(fd);
    return rc;
}

/* A read's accounting: a found or missing object is a get, its bytes
 * go out; anything else is an error (or the caller's mistake). */
static int got(local_blob *lb, uint64_t t0, int rc, uint64_t bytes)
{
    if (rc == VG_OK || rc == VG_NOTFOUND)
        count(&lb->gets, 1);
    count(&lb->bytes_out, bytes);
    observe(&lb->base, t0);
    return tally(lb, rc);
}

static struct verified_file *verified_slot(local_blob *lb, const struct stat *st)
{
    uint64_t h = mix64((uint64_t)st->st_dev * 0x9e3779b97f4a7c15u ^ (uint64_t)st->st_ino);
    return &lb->verified[h % VERIFIED_SLOTS];
}

/* The data of h's file hashes to h->sha, checked once per unchanged
 * file: a ctime, size or inode change (a put renames a new file over the
 * name; a tamperer's write moves ctime) means hashing again. */
static int verify_data(local_blob *lb, int fd, const obj_hdr *h)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno_rc(errno);
    struct verified_file now = {st.st_dev, st.st_ino, st.st_size, st.st_ctim};
    pthread_mutex_lock(&lb->verified_mu);
    struct verified_file *v = verified_slot(lb, &st);
    bool known = v->ino == now.ino && v->dev == now.dev && v->size == now.size &&
                 v->ctime.tv_sec == now.ctime.tv_sec && v->ctime.tv_nsec == now.ctime.tv_nsec;
    pthread_mutex_unlock(&lb->verified_mu);
    if (known)
        return VG_OK;
    unsigned char md[32];
    int rc = vg_sha256_fd(fd, h->len, h->size, md);
    if (rc == VG_ERR)
        return errno_rc(errno);
    if (rc != VG_OK || memcmp(md, h->sha, sizeof md) != 0)
        return VG_ECORRUPT;
    pthread_mutex_lock(&lb->verified_mu);
    *v = now;
    pthread_mutex_unlock(&lb->verified_mu);
    return VG_OK;
}

static int local_open(vg_blob *b, const char *key, bool verify, int *fd_out, uint64_t *offset,
                      vg_blob_info *info)
{
    local_blob *lb = (local_blob *)b;
    uint64_t t0 = vg_mono_ns();
    int fd;
    int rc = open_obj(lb, key, &fd);
    if (rc == VG_OK) {
        obj_hdr h;
        rc = load_hdr(fd, &h);
        if (rc == VG_OK && verify)
            rc = verify_data(lb, fd, &h);
        if (rc == VG_OK) {
            hdr_info(&h, info);
            *offset = h.len;
            *fd_out = fd;
        } else {
            close(fd);
        }
    }
    return got(lb, t0, rc, rc == VG_OK ? info->size : 0);
}

/* out is replaced, not appended to; on failure it is left empty. */
static int local_get(vg_blob *b, const char *key, vg_buf *out, vg_blob_info *info)
{
    local_blob *lb = (local_blob *)b;
    uint64_t t0 = vg_mono_ns();
    int rc = load_obj(lb, key, out, info);
    if (rc != VG_OK)
        vg_buf_reset(out);
    return got(lb, t0, rc, rc == VG_OK ? out->len : 0);
}

static int local_head(vg_blob *b, const char *key, vg_blob_info *info)
{
    local_blob *lb = (local_blob *)b;
    uint64_t t0 = vg_mono_ns();
    int rc = load_obj(lb, key, NULL, info);
    count(&lb->heads, 1);
    observe(b, t0);
    return tally(lb, rc);
}

static int local_del(vg_blob *b, const char *key)
{
    local_blob *lb = (local_blob *)b;
    if (!vg_blob_key_valid(key))
        return VG_EINVAL;
    if (!key_fits_fs(key))
        return VG_NOTFOUND;
    char path[KEY_MAX + 2];
    obj_path(key, path);
    int rc = VG_OK;
    if (unlinkat(root_of(lb), path, 0) != 0)
        rc = errno == ENOENT || errno == ENOTDIR ? VG_NOTFOUND : errno_rc(errno);
    if (rc == VG_OK)
        count(&lb->deletes, 1);
    return tally(lb, rc);
}

/* ---- list ---- */

typedef struct key_vec {
    char **v;
    size_t n, cap;
} key_vec;

static int vec_push(key_vec *kv, const char *s, size_t n)
{
    if (kv->n == kv->cap) {
        size_t cap = kv->cap ? kv->cap * 2 : 64;
        char **v = realloc(kv->v, cap * sizeof *v);
        if (!v)
            return VG_ENOMEM;
        kv->v = v;
        kv->cap = cap;
    }
    kv->v[kv->n] = strndup(s, n);
    return kv->v[kv->n++] ? VG_OK : VG_ENOMEM;
}

/* A directory is worth entering when its path and the prefix agree on
 * their common length. */
static bool prefix_compatible(const char *path, size_t plen, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, plen < n ? plen : n) == 0;
}

/* The tree walk shared by list and sweep. Names that begin or end with
 * '@' (objects, temp and probe files) go to visit, whose error stops the
 * walk; any other name is a directory, entered when enter agrees, with
 * path holding its key prefix ("a/b/"). */
typedef struct walker {
    int (*visit)(struct walker *w, int dir, const char *nm, size_t nl, vg_buf *path);
    bool (*enter)(struct walker *w, const vg_buf *path);
    const _Atomic bool *stop;  /* ends the walk early, without an error; may be NULL */
} walker;

static int walk_tree(walker *w, int dfd, vg_buf *path, int depth)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return errno_rc(errno);
    }
    int rc = VG_OK;
    struct dirent *e;
    size_t base = path->len;
    while (rc == VG_OK && !(w->stop && atomic_load(w->stop)) && (e = readdir(d))) {
        const char *nm = e->d_name;
        size_t nl = strlen(nm);
        if (nl == 0 || !strcmp(nm, ".") || !strcmp(nm, ".."))
            continue;
        path->len = base;
        if (nm[0] == '@' || nm[nl - 1] == '@') {
            rc = w->visit(w, dirfd(d), nm, nl, path);
            continue;
        }
        if (depth >= KEY_MAX / 2)
            continue;
        if (vg_buf_append(path, nm, nl) != VG_OK || vg_buf_puts(path, "/") != VG_OK) {
            rc = VG_ENOMEM;
            break;
        }
        if (!w->enter(w, path))
            continue;
        int sub = openat(dirfd(d), nm, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (sub >= 0)
            rc = walk_tree(w, sub, path, depth + 1);
    }
    path->len = base;
    if (path->data)
        path->data[base] = '\0';
    closedir(d);
    return rc;
}

typedef struct list_walk {
    walker w;
    const char *prefix, *after;
    key_vec out;
} list_walk;

static int list_visit(walker *w, int dir, const char *nm, size_t nl, vg_buf *path)
{
    (void)dir;
    list_walk *l = (list_walk *)w;
    if (nm[0] == '@')
        return VG_OK; /* temp and probe files; keys may start with '.' */
    if (vg_buf_append(path, nm, nl - 1) != VG_OK)
        return VG_ENOMEM;
    if (strncmp(path->data, l->prefix, strlen(l->prefix)) == 0 &&
        (!l->after || strcmp(path->data, l->after) > 0))
        return vec_push(&l->out, path->data, path->len);
    return VG_OK;
}

static bool list_enter(walker *w, const vg_buf *path)
{
    return prefix_compatible(path->data, path->len, ((list_walk *)w)->prefix);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int fill_entry(local_blob *lb, char *key, vg_blob_entry *e)
{
    int fd;
    obj_hdr h;
    e->key = key;
    int rc = open_obj(lb, key, &fd);
    if (rc != VG_OK)
        return rc;
    rc = load_hdr(fd, &h);
    close(fd);
    if (rc == VG_OK) {
        e->size = h.size;
        e->modified_ms = h.modified_ms;
        vg_hex_lower(h.sha, sizeof h.sha, e->etag);
    }
    return rc;
}

/* Walks the tree under the prefix's directory, then sorts: fine for the
 * embedded store's sizes, and pages stay consistent under concurrent
 * puts because the cursor is the last key returned. */
static int local_list(vg_blob *b, const char *prefix, const char *after, size_t limit,
                      vg_blob_list *out)
{
    local_blob *lb = (local_blob *)b;
    uint64_t t0 = vg_mono_ns();
    *out = (vg_blob_list){0};
    if (!prefix)
        prefix = "";
    if (limit == 0 || limit > LIST_MAX || strlen(prefix) > KEY_MAX)
        return VG_EINVAL;
    list_walk lw = {.w = {.visit = list_visit, .enter = list_enter}, .prefix = prefix,
                    .after = after && *after ? after : NULL};
    vg_buf path = {0};
    vg_buf_puts(&path, "");
    /* A fresh open, not dup(): a dup shares the directory offset, and
     * readdir would leave the root's at the end for the next listing. */
    int fd = openat(root_of(lb), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? errno_rc(errno) : walk_tree(&lw.w, fd, &path, 0);
    vg_buf_free(&path);
    key_vec kv = lw.out;
    if (rc == VG_OK && kv.n)
        qsort(kv.v, kv.n, sizeof *kv.v, cmp_str);
    size_t take = kv.n < limit ? kv.n : limit;
    if (rc == VG_OK && take) {
        out->items = calloc(take, sizeof *out->items);
        rc = out->items ? VG_OK : VG_ENOMEM;
    }
    size_t used = 0;
    for (size_t i = 0; rc == VG_OK && i < kv.n && used < take; i++) {
        int frc = fill_entry(lb, kv.v[i], &out->items[used]);
        kv.v[i] = NULL;
        if (frc == VG_OK)
            used++;
        else
            free(out->items[used].key); /* vanished or foreign file: not an object */
    }
    out->n = used;
    out->truncated = rc == VG_OK && kv.n > take;
    for (size_t i = 0; i < kv.n; i++)
        free(kv.v[i]);
    free(kv.v);
    if (rc != VG_OK)
        vg_blob_list_free(out);
    else
        count(&lb->lists, 1);
    observe(b, t0);
    return tally(lb, rc);
}

/* ---- sweep ---- */

/* Crashed writes leave "@tmp-" and "@probe-" files; a live put renames
 * its temp file within seconds, so one an hour old is litter. */
#define LITTER_AGE_MS (3600u * 1000u)

typedef struct sweep_walk {
    walker w;
    local_blob *lb;
    vg_blob_sweep_job *job;
    size_t plen;
    uint64_t litter_before_ms;
} sweep_walk;

static uint64_t mtime_ms(const struct stat *st)
{
    return (uint64_t)st->st_mtim.tv_sec * 1000u + (uint64_t)st->st_mtim.tv_nsec / 1000000u;
}

/* When the object was last written: its header's time, or the file's for
 * a torn or foreign file (which is no object, and goes too once old). */
static bool obj_written_ms(int dir, const char *nm, uint64_t *ms, struct stat *st)
{
    int fd = openat(dir, nm, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    obj_hdr h;
    bool ok = fstat(fd, st) == 0 && S_ISREG(st->st_mode);
    if (ok)
        *ms = load_hdr(fd, &h) == VG_OK ? h.modified_ms : mtime_ms(st);
    close(fd);
    return ok;
}

/* Removes dir/nm if it is still the file that was judged old. A put may
 * rename a fresh object over the name between the look and the unlink:
 * the name is moved aside first, and when what moved is not the file
 * looked at, it goes back (a link: it fails when yet another put has
 * landed since, and then what moved is the older one, and goes). */
static bool remove_if_same(sweep_walk *c, int dir, const char *nm, const struct stat *seen)
{
    char aside[TMP_NAME];
    snprintf(aside, sizeof aside, "@tmp-%016llx",
             (unsigned long long)mix64(atomic_fetch_add(&c->lb->tmp_seq, 0x9e3779b97f4a7c15u)));
    if (renameat(dir, nm, dir, aside) != 0)
        return false;
    struct stat now;
    bool same = fstatat(dir, aside, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
                now.st_ino == seen->st_ino && now.st_dev == seen->st_dev;
    if (!same && linkat(dir, aside, dir, nm, 0) != 0 && errno != EEXIST) {
        renameat(dir, aside, dir, nm); /* a file system without hard links */
        return false;
    }
    unlinkat(dir, aside, 0);
    return same;
}

static int sweep_visit(walker *w, int dir, const char *nm, size_t nl, vg_buf *path)
{
    sweep_walk *c = (sweep_walk *)w;
    struct stat st;
    if (nm[0] == '@') {
        if (nm[nl - 1] != '@' && (!strncmp(nm, "@tmp-", 5) || !strncmp(nm, "@probe-", 7)) &&
            fstatat(dir, nm, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            mtime_ms(&st) < c->litter_before_ms)
            unlinkat(dir, nm, 0);
        return VG_OK;
    }
    uint64_t ms;
    if (vg_buf_append(path, nm, nl - 1) != VG_OK)
        return VG_ENOMEM;
    if (strncmp(path->data, c->job->prefix, c->plen) == 0 && obj_written_ms(dir, nm, &ms, &st) &&
        ms < c->job->cutoff_ms && remove_if_same(c, dir, nm, &st)) {
        count(&c->lb->deletes, 1);
        c->job->removed++;
    }
    return VG_OK;
}

/* Every directory is entered: litter can be anywhere. */
static bool sweep_enter(walker *w, const vg_buf *path)
{
    (void)w;
    (void)path;
    return true;
}

static int local_sweep(vg_blob *b, vg_blob_sweep_job *job)
{
    local_blob *lb = (local_blob *)b;
    uint64_t now = vg_clock_ms();
    sweep_walk c = {.w = {.visit = sweep_visit, .enter = sweep_enter, .stop = job->stop},
                    .lb = lb, .job = job, .plen = strlen(job->prefix),
                    .litter_before_ms = now > LITTER_AGE_MS ? now - LITTER_AGE_MS : 0};
    vg_buf path = {0};
    vg_buf_puts(&path, "");
    int fd = openat(root_of(lb), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? errno_rc(errno) : walk_tree(&c.w, fd, &path, 0);
    vg_buf_free(&path);
    return tally(lb, rc);
}

static bool stopping(const vg_blob_sweep_job *job) { return job->stop && atomic_load(job->stop); }

/* The fallback for stores without a sweep op: list pages, delete the old. */
int vg_blob_sweep(vg_blob *b, vg_blob_sweep_job *job)
{
    if (b->ops->sweep)
        return b->ops->sweep(b, job);
    char *after = NULL;
    for (;;) {
        vg_blob_list l;
        int rc = vg_blob_list_keys(b, job->prefix, after, job->page ? job->page : LIST_MAX, &l);
        if (rc != VG_OK) {
            free(after);
            return rc;
        }
        for (size_t i = 0; i < l.n && !stopping(job); i++)
            if (l.items[i].modified_ms < job->cutoff_ms && vg_blob_del(b, l.items[i].key) == VG_OK)
                job->removed++;
        bool more = l.truncated && l.n && !stopping(job);
        free(after);
        after = more ? l.items[l.n - 1].key : NULL;
        if (more)
            l.items[l.n - 1].key = NULL;
        vg_blob_list_free(&l);
        if (!more)
            return VG_OK;
    }
}

void vg_blob_list_free(vg_blob_list *l)
{
    for (size_t i = 0; l->items && i < l->n; i++)
        free(l->items[i].key);
    free(l->items);
    *l = (vg_blob_list){0};
}

/* ---- last error (shared by every store) ---- */

static _Thread_local char last_error[320];
static _Thread_local long last_status;

const char *vg_blob_last_error(void) { return last_error; }
long vg_blob_last_status(void) { return last_status; }
void vg_blob_set_status(long status) { last_status = status; }

void vg_blob_set_error(const char *fmt, ...)
{
    last_status = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

/* ---- metadata rules ---- */

bool vg_blob_meta_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > VG_BLOB_META_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* Printable ASCII: it travels as an HTTP header to S3 and back. */
bool vg_blob_meta_value_valid(const char *value)
{
    size_t n = strlen(value);
    if (n > VG_BLOB_META_VALUE)
        return false;
    for (size_t i = 0; i < n; i++)
        if (value[i] < 0x20 || value[i] > 0x7e)
            return false;
    return true;
}

bool vg_blob_meta_valid(const vg_blob_meta *m, size_t n)
{
    if (n > VG_BLOB_META_MAX || (n && !m))
        return false;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!vg_blob_meta_name_valid(m[i].name) || !vg_blob_meta_value_valid(m[i].value))
            return false;
        /* A name that begins another ("take", "take-2") is refused too:
         * libcurl 7.88 orders signed headers by whole "name:value" lines,
         * which puts such a pair in the wrong order and S3 then refuses
         * the signature. Refused on every store, so they all agree. */
        for (size_t j = 0; j < i; j++) {
            size_t a = strlen(m[i].name), b = strlen(m[j].name);
            if (strncmp(m[i].name, m[j].name, a < b ? a : b) == 0)
                return false;
        }
        total += strlen(m[i].name) + strlen(m[i].value);
    }
    return total <= VG_BLOB_META_TOTAL;
}

/* ---- ping, stats, close, open ---- */

/* The root directory was removed or replaced since we opened it (an
 * operator restored it, say): open the path again so the store recovers
 * without a restart. Entries whose audio went with the old directory
 * become misses on their own. False when no directory is at the path. */
static bool reopen_root(local_blob *lb)
{
    struct stat held, now;
    int root = root_of(lb);
    /* A missing root is not recreated: if data_dir was a mount that went
     * away, writing into a fresh directory would put audio on the wrong
     * disk. It stays unready until an operator restores it. */
    bool same = stat(lb->path, &now) == 0 && fstat(root, &held) == 0 &&
                held.st_dev == now.st_dev && held.st_ino == now.st_ino;
    if (same)
        return true;
    pthread_mutex_lock(&lb->reopen_mu);
    int fd = lb->nretired < MAX_RETIRED ? open(lb->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0 && atomic_compare_exchange_strong(&lb->root, &root, fd))
        lb->retired[lb->nretired++] = root;
    else if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&lb->reopen_mu);
    return fd >= 0;
}

/* Creating and removing a file proves the directory is still there and
 * writable (a removed root refuses new files). */
static int local_ping(vg_blob *b)
{
    local_blob *lb = (local_blob *)b;
    if (!reopen_root(lb))
        return tally(lb, VG_EUNAVAIL); /* nothing usable at the configured path */
    int root = root_of(lb);
    char name[TMP_NAME];
    snprintf(name, sizeof name, "@probe-%016llx",
             (unsigned long long)mix64(atomic_fetch_add(&lb->tmp_seq, 0x9e3779b97f4a7c15u)));
    int fd = openat(root, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
    if (fd < 0)
        return tally(lb, VG_EUNAVAIL);
    close(fd);
    return tally(lb, unlinkat(root, name, 0) == 0 ? VG_OK : VG_EUNAVAIL);
}

static uint64_t load(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

static void local_stats(vg_blob *b, vg_blob_stats *out)
{
    local_blob *lb = (local_blob *)b;
    *out = (vg_blob_stats){.puts = load(&lb->puts), .gets = load(&lb->gets),
                           .deletes = load(&lb->deletes), .errors = load(&lb->errors),
                           .bytes_in = load(&lb->bytes_in), .bytes_out = load(&lb->bytes_out),
                           .heads = load(&lb->heads), .lists = load(&lb->lists)};
}

static void local_close(vg_blob *b)
{
    local_blob *lb = (local_blob *)b;
    close(root_of(lb));
    for (size_t i = 0; i < lb->nretired; i++)
        close(lb->retired[i]);
    pthread_mutex_destroy(&lb->reopen_mu);
    pthread_mutex_destroy(&lb->verified_mu);
    free(lb->path);
    free(lb);
}

static const vg_blob_ops local_ops = {
    .name = "local",
    .put = local_put,
    .get = local_get,
    .head = local_head,
    .del = local_del,
    .ping = local_ping,
    .stats = local_stats,
    .close = local_close,
    .put_meta = local_put_meta,
    .list = local_list,
    .sweep = local_sweep,
    .open = local_open,
};

/* mkdir -p for the root, which may be absolute or relative to the cwd. */
static int mkdir_p(const char *dir)
{
    char *path = strdup(dir);
    if (!path)
        return ENOMEM;
    int err = 0;
    for (char *p = path + 1; !err; p++) {
        if (*p && *p != '/')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, DIR_MODE) != 0 && errno != EEXIST)
            err = errno;
        *p = saved;
        if (!saved)
            break;
    }
    free(path);
    return err;
}

static uint64_t random_seed(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 16);
}

int vg_blob_local_open(const char *dir, vg_blob **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!dir || !*dir) {
        snprintf(err, errlen, "blob store: empty directory name");
        return VG_EINVAL;
    }
    int e = mkdir_p(dir);
    int root = e ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        snprintf(err, errlen, "blob store: cannot create or open %s: %s", dir,
                 strerror(e ? e : errno));
        return VG_EUNAVAIL;
    }
    local_blob *lb = calloc(1, sizeof *lb);
    if (!lb) {
        close(root);
        snprintf(err, errlen, "blob store: out of memory");
        return VG_ENOMEM;
    }
    lb->base.ops = &local_ops;
    lb->path = strdup(dir);
    if (!lb->path) {
        close(root);
        free(lb);
        snprintf(err, errlen, "blob store: out of memory");
        return VG_ENOMEM;
    }
    pthread_mutex_init(&lb->reopen_mu, NULL);
    pthread_mutex_init(&lb->verified_mu, NULL);
    atomic_init(&lb->root, root);
    atomic_init(&lb->tmp_seq, random_seed());
    *out = &lb->base;
    return VG_OK;
}
