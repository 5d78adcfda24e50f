/* The S3 blob store: objects in an S3-compatible bucket (AWS S3, MinIO)
 * through libcurl. Header signing is libcurl's CURLOPT_AWS_SIGV4, with the
 * traps of libcurl 7.88 avoided (../shared/notes/s3-curl-faults.md):
 *   - x-amz-content-sha256 is always sent by us (7.88 never adds it, and
 *     hashes an empty body for uploads): the real body hash for PUT,
 *     the empty-string hash otherwise;
 *   - the path and query are written already canonical (sorted, RFC 3986
 *     encoded), because 7.88 signs them exactly as written;
 *   - no header-removal entries ("Expect:") and no X-Amz-Date of ours.
 * Presigned URLs are built with our own signer (sigv4.c), for the public
 * endpoint when one is configured. Easy handles are pooled so that
 * connections are reused across requests. */
#include "voxgate/blob.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/keys.h"
#include "voxgate/sigv4.h"

#define OBJ_MAX ((uint64_t)1 << 30) /* default bound: objects are read whole into memory */
#define LIST_MAX 1000
#define POOL_MAX 1024

typedef struct s3_blob {
    vg_blob base;
    vg_blob_ops ops;        /* s3_ops, with open when spool_dir is usable */
    char *spool_dir;
    char *endpoint, *public_endpoint, *bucket, *region;
    char *access_key, *secret_key, *token;
    char *userpwd, *sigv4;
    bool path_style;
    long connect_ms, timeout_ms;
    uint64_t max_object;
    pthread_mutex_t mu;
    CURL **idle;
    size_t nidle, max_idle;
    _Atomic uint64_t puts, gets, deletes, errors, bytes_in, bytes_out, heads, lists;
    atomic_bool cancelled;  /* s3_cancel: every call fails from now on */
} s3_blob;

/* One S3 request and what came back. */
typedef struct s3_call {
    const char *method;
    const char *key;              /* NULL: the bucket itself */
    const vg_sigv4_kv *query;
    size_t nquery;
    const void *body;
    size_t blen;
    /* A streamed PUT body: pulled from read, blen bytes in all. */
    size_t (*read)(void *ud, char *buf, size_t max);
    void *read_ud;
    const char *ctype;
    const vg_blob_meta *meta;
    size_t nmeta;
    vg_buf *out;                  /* response body; NULL = discard */
    bool spool;                   /* a 2xx body goes to spool_fd instead */
    int spool_fd;
    int spool_errno;              /* why writing to it failed */
    EVP_MD_CTX *spool_sha;        /* SHA-256 of what was spooled, when set */
    uint64_t spooled;
    uint64_t max_body;            /* bound on the response body */
    vg_blob_info *info;           /* filled from response headers when set */
    size_t sent;
    long status;
    bool too_big;
} s3_call;

static void count(_Atomic uint64_t *c, uint64_t n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }
static uint64_t load(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

/* ---- handle pool ---- */

static CURL *handle_get(s3_blob *s)
{
    CURL *h = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->nidle)
        h = s->idle[--s->nidle];
    pthread_mutex_unlock(&s->mu);
    if (h)
        curl_easy_reset(h); /* keeps the connection cache: that is the point */
    return h ? h : curl_easy_init();
}

static void handle_put(s3_blob *s, CURL *h)
{
    pthread_mutex_lock(&s->mu);
    if (s->nidle < s->max_idle) {
        s->idle[s->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (h)
        curl_easy_cleanup(h);
}

/* ---- URLs ---- */

/* "http://host:port" -> scheme "http", host "host:port" (the Host header:
 * a default port is left out, as clients leave it out). */
static void split_base(const char *base, char *scheme, size_t scap, char *host, size_t hcap)
{
    const char *sep = strstr(base, "://");
    snprintf(scheme, scap, "%.*s", (int)(sep - base), base);
    const char *h = sep + 3;
    size_t n = strcspn(h, "/");
    snprintf(host, hcap, "%.*s", (int)n, h);
    size_t hl = strlen(host);
    if ((!strcmp(scheme, "http") && hl > 3 && !strcmp(host + hl - 3, ":80")) ||
        (!strcmp(scheme, "https") && hl > 4 && !strcmp(host + hl - 4, ":443")))
        host[strrchr(host, ':') - host] = '\0';
}

/* The raw (unencoded) path of a key, or of the bucket when key is NULL. */
static int raw_path(const s3_blob *s, const char *key, vg_buf *out)
{
    if (s->path_style)
        return key ? vg_buf_printf(out, "/%s/%s", s->bucket, key) : vg_buf_printf(out, "/%s", s->bucket);
    return vg_buf_printf(out, "/%s", key ? key : "");
}

/* scheme://host of requests to base: the bucket is a subdomain when not
 * path-style. */
static int origin(const s3_blob *s, const char *base, vg_buf *out, char *host, size_t hcap)
{
    char scheme[16];
    split_base(base, scheme, sizeof scheme, host, hcap);
    if (!s->path_style) {
        size_t bl = strlen(s->bucket), hl = strlen(host);
        if (bl + 1 + hl < hcap) {
            memmove(host + bl + 1, host, hl + 1);
            memcpy(host, s->bucket, bl);
            host[bl] = '.';
        }
    }
    return vg_buf_printf(out, "%s://%s", scheme, host);
}

static int build_url(const s3_blob *s, const s3_call *c, vg_buf *url)
{
    char host[300];
    vg_buf path = {0};
    int rc = origin(s, s->endpoint, url, host, sizeof host);
    if (rc == VG_OK)
        rc = raw_path(s, c->key, &path);
    if (rc == VG_OK)
        rc = vg_sigv4_encode(url, path.data, path.len, true);
    if (rc == VG_OK && c->nquery) {
        rc = vg_buf_puts(url, "?");
        if (rc == VG_OK)
            rc = vg_sigv4_canonical_query(url, c->query, c->nquery);
    }
    vg_buf_free(&path);
    return rc;
}

/* ---- response parsing ---- */

/* A body spooled to a file (and hashed as it goes when asked); a failed
 * write fails the transfer. */
static size_t spool_body(s3_call *c, const char *p, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t w = write(c->spool_fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            c->spool_errno = w < 0 ? errno : ENOSPC;
            return 0;
        }
        done += (size_t)w;
    }
    if (c->spool_sha && !EVP_DigestUpdate(c->spool_sha, p, len))
        return 0;
    c->spooled += len;
    return len;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    s3_call *c = ud;
    size_t len = sz * n;
    bool to_file = c->spool && c->status >= 200 && c->status < 300;
    if (!to_file && !c->out)
        return len;
    if ((to_file ? c->spooled : c->out->len) + len > c->max_body) {
        c->too_big = true;
        return 0;
    }
    if (to_file)
        return spool_body(c, p, len);
    return vg_buf_append(c->out, p, len) == VG_OK ? len : 0;
}

static size_t on_send(char *p, size_t sz, size_t n, void *ud)
{
    s3_call *c = ud;
    size_t len = sz * n, left = c->blen - c->sent;
    if (len > left)
        len = left;
    if (c->read && len) {
        size_t got = c->read(c->read_ud, p, len);
        if (got == VG_BLOB_READ_ABORT || got == 0)
            return CURL_READFUNC_ABORT; /* curl ends the request before its last byte */
        c->sent += got;
        return got;
    }
    if (len)
        memcpy(p, (const char *)c->body + c->sent, len);
    c->sent += len;
    return len;
}

static uint64_t http_date_ms(const char *v)
{
    struct tm tm = {0};
    if (!strptime(v, "%a, %d %b %Y %H:%M:%S", &tm))
        return 0;
    return (uint64_t)timegm(&tm) * 1000u;
}

static void trim_copy(char *dst, size_t cap, const char *v, size_t n)
{
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n && *v == ' ') {
        v++;
        n--;
    }
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    snprintf(dst, cap, "%.*s", (int)n, v);
}

static void header_into_info(vg_blob_info *info, const char *line, size_t n)
{
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return;
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vl = n - nl - 1;
    char tmp[512];
    if (nl == 12 && !strncasecmp(line, "Content-Type", 12)) {
        trim_copy(info->content_type, sizeof info->content_type, v, vl);
    } else if (nl == 4 && !strncasecmp(line, "ETag", 4)) {
        trim_copy(info->etag, sizeof info->etag, v, vl);
    } else if (nl == 14 && !strncasecmp(line, "Content-Length", 14)) {
        trim_copy(tmp, sizeof tmp, v, vl);
        vg_parse_u64(tmp, &info->size);
    } else if (nl == 13 && !strncasecmp(line, "Last-Modified", 13)) {
        trim_copy(tmp, sizeof tmp, v, vl);
        info->modified_ms = http_date_ms(tmp);
    } else if (nl > 11 && nl - 11 <= VG_BLOB_META_NAME && !strncasecmp(line, "x-amz-meta-", 11) &&
               info->nmeta < VG_BLOB_META_MAX) {
        vg_blob_meta *m = &info->meta[info->nmeta++];
        for (size_t i = 0; i < nl - 11; i++)
            m->name[i] = (char)(line[11 + i] >= 'A' && line[11 + i] <= 'Z' ? line[11 + i] + 32
                                                                            : line[11 + i]);
        m->name[nl - 11] = '\0';
        trim_copy(m->value, sizeof m->value, v, vl);
    }
}

/* curl calls it at least once a second, stalled or not. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(&((s3_blob *)ud)->cancelled) ? 1 : 0;
}

static void s3_cancel(vg_blob *b) { atomic_store(&((s3_blob *)b)->cancelled, true); }

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    s3_call *c = ud;
    size_t len = sz * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
        /* A new response (after 100 Continue): start over. Its status
         * decides where a spooled GET's body goes. */
        const char *sp = memchr(p, ' ', len);
        c->status = sp && sp + 4 <= p + len ? strtol(sp + 1, NULL, 10) : 0;
        if (c->info)
            *c->info = (vg_blob_info){0};
    } else if (c->info) {
        header_into_info(c->info, p, len);
    }
    return len;
}

/* The text of <name>...</name> in xml from `from`, entity-decoded.
 * Elements are matched by local name: s3rver's namespace differs. */
static const char *xml_text(const char *from, const char *end, const char *name, vg_buf *out)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", name);
    snprintf(close, sizeof close, "</%s>", name);
    const char *a = strstr(from, open);
    if (!a || (end && a >= end))
        return NULL;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b || (end && b > end))
        return NULL;
    vg_buf_reset(out);
    for (const char *p = a; p < b; p++) {
        static const struct { const char *ent; char c; } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool done = false;
        for (size_t i = 0; *p == '&' && i < VG_ARRAY_LEN(ents) && !done; i++) {
            size_t el = strlen(ents[i].ent);
            if ((size_t)(b - p) >= el && !strncmp(p, ents[i].ent, el)) {
                vg_buf_append(out, &ents[i].c, 1);
                p += el - 1;
                done = true;
            }
        }
        unsigned cp;
        int used = 0;
        if (!done && *p == '&' && p[1] == '#' && sscanf(p, "&#%u;%n", &cp, &used) == 1 && used &&
            cp < 0x80) {
            char ch = (char)cp;
            vg_buf_append(out, &ch, 1);
            p += used - 1;
            done = true;
        }
        if (!done)
            vg_buf_append(out, p, 1);
    }
    vg_buf_puts(out, "");
    return b + strlen(close);
}

/* S3's error document as one line: "403 SignatureDoesNotMatch: ...". */
static void s3_error(const char *what, long status, const vg_buf *body)
{
    vg_buf code = {0}, msg = {0};
    const char *xml = body && body->data ? body->data : "";
    bool has_code = xml_text(xml, NULL, "Code", &code) != NULL;
    xml_text(xml, NULL, "Message", &msg);
    vg_blob_set_error("S3 %s answered %ld%s%s%s%.200s", what, status, has_code ? " " : "",
                      has_code ? code.data : "", msg.data && *msg.data ? ": " : "",
                      msg.data ? msg.data : "");
    vg_blob_set_status(status);
    vg_buf_free(&code);
    vg_buf_free(&msg);
}

/* ---- one request ---- */

static struct curl_slist *build_headers(const s3_blob *s, const s3_call *c)
{
    struct curl_slist *h = NULL;
    char line[600], hash[VG_SHA256_HEX + 1];
    /* A streamed body's hash is unknown when the request is signed: S3,
     * MinIO and s3rver accept UNSIGNED-PAYLOAD over a plain PUT. */
    const char *sha = c->read ? "UNSIGNED-PAYLOAD" : c->body ? hash : VG_SIGV4_EMPTY_SHA;
    if (c->body && !c->read)
        vg_sha256_hex(c->body, c->blen, hash);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", sha);
    h = curl_slist_append(h, line);
    if (c->ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", c->ctype);
        h = curl_slist_append(h, line);
    }
    for (size_t i = 0; i < c->nmeta; i++) {
        snprintf(line, sizeof line, "x-amz-meta-%s: %s", c->meta[i].name, c->meta[i].value);
        h = curl_slist_append(h, line);
    }
    if (s->token) {
        snprintf(line, sizeof line, "x-amz-security-token: %s", s->token);
        h = curl_slist_append(h, line);
    }
    return h;
}

static void set_method(CURL *h, s3_call *c)
{
    if (!strcmp(c->method, "HEAD")) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(c->method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_send);
        curl_easy_setopt(h, CURLOPT_READDATA, c);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->blen);
    } else if (strcmp(c->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
    }
}

/* VG_OK for 2xx; VG_NOTFOUND for a missing key; VG_EUNAVAIL when the
 * store cannot be reached or refuses us; the reason goes to last_error. */
static int perform(s3_blob *s, s3_call *c)
{
    vg_buf url = {0}, errbody = {0};
    vg_buf *caller_out = c->out;
    vg_blob_set_error("%s", ""); /* no stale reason from an earlier call */
    if (build_url(s, c, &url) != VG_OK) {
        vg_buf_free(&url);
        return VG_ENOMEM;
    }
    CURL *h = handle_get(s);
    struct curl_slist *hdrs = build_headers(s, c);
    if (!h || !hdrs) {
        if (h)
            curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);
        vg_buf_free(&url);
        return VG_ENOMEM;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    c->max_body = s->max_object;
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
    if (c->read) {
        /* A stream lasts as long as the client takes to send it: bound
         * stalls instead of the whole transfer. */
        long secs = (s->timeout_ms + 999) / 1000;
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs > 0 ? secs : 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    }
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    set_method(h, c);
    /* Error bodies are read into our own buffer, never into the caller's. */
    c->out = &errbody;
    /* Once cancelled, a call fails as a cancelled transfer does, unsent. */
    CURLcode cc = atomic_load(&s->cancelled) ? CURLE_ABORTED_BY_CALLBACK : curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
    int rc;
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        vg_blob_set_error("S3 %s cancelled: voxgate is shutting down", c->method);
        rc = VG_EUNAVAIL;
    } else if (cc != CURLE_OK && !(c->too_big && cc == CURLE_WRITE_ERROR)) {
        vg_blob_set_error("S3 %s %s: %s", c->method, cc == CURLE_OPERATION_TIMEDOUT ? "timed out"
                                                                                    : "failed",
                          errbuf[0] ? errbuf : curl_easy_strerror(cc));
        rc = VG_EUNAVAIL;
    } else if (c->too_big) {
        vg_blob_set_error("S3 object is over %llu bytes", (unsigned long long)c->max_body);
        rc = VG_ETOOBIG;
    } else if (c->status >= 200 && c->status < 300) {
        rc = VG_OK;
    } else {
        s3_error(c->method, c->status, &errbody);
        bool no_key = c->status == 404 && c->key && !strstr(errbody.data ? errbody.data : "", "NoSuchBucket");
        rc = no_key ? VG_NOTFOUND : c->status == 400 ? VG_EINVAL : VG_EUNAVAIL;
    }
    if (rc == VG_OK && caller_out) {
        vg_buf_free(caller_out);
        *caller_out = errbody; /* it was the success body after all */
        errbody = (vg_buf){0};
    }
    c->out = caller_out;
    curl_slist_free_all(hdrs);
    handle_put(s, h);
    vg_buf_free(&url);
    vg_buf_free(&errbody);
    return rc;
}

static void observe(vg_blob *b, uint64_t t0)
{
    if (b->observe_us)
        b->observe_us(b->observe_ud, (vg_mono_ns() - t0) / 1000u);
}

/* Caller mistakes are not store errors; everything else negative is. */
static int tally(s3_blob *s, int rc, uint64_t t0)
{
    if (rc < 0 && rc != VG_EINVAL && rc != VG_ETOOBIG)
        count(&s->errors, 1);
    observe(&s->base, t0);
    return rc;
}

/* ---- operations ---- */

static bool ctype_ok(const char *ct)
{
    size_t n = strlen(ct);
    if (n == 0 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ct[i] < 0x20 || ct[i] > 0x7e)
            return false;
    return true;
}

static int s3_put_meta(vg_blob *b, const char *key, const void *data, size_t len,
                       const char *ctype, const vg_blob_meta *meta, size_t nmeta)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    if (!ctype || !*ctype)
        ctype = "application/octet-stream";
    if (!vg_blob_key_valid(key) || (len && !data) || !ctype_ok(ctype) ||
        !vg_blob_meta_valid(meta, nmeta))
        return VG_EINVAL;
    if (len > s->max_object)
        return VG_ETOOBIG;
    s3_call c = {.method = "PUT", .key = key, .body = data ? data : "", .blen = len,
                 .ctype = ctype, .meta = meta, .nmeta = nmeta};
    int rc = perform(s, &c);
    if (rc == VG_OK) {
        count(&s->puts, 1);
        count(&s->bytes_in, len);
    }
    return tally(s, rc == VG_NOTFOUND ? VG_EUNAVAIL : rc, t0);
}

static int s3_put(vg_blob *b, const char *key, const void *data, size_t len, const char *ctype)
{
    return s3_put_meta(b, key, data, len, ctype, NULL, 0);
}

/* A read's accounting: a found or missing object is a get, its bytes
 * go out; anything else is an error (tally). */
static int got(s3_blob *s, uint64_t t0, int rc, uint64_t bytes)
{
    if (rc == VG_OK || rc == VG_NOTFOUND)
        count(&s->gets, 1);
    count(&s->bytes_out, bytes);
    return tally(s, rc, t0);
}

static int s3_get(vg_blob *b, const char *key, vg_buf *out, vg_blob_info *info)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    vg_buf_reset(out);
    if (!vg_blob_key_readable(key))
        return VG_EINVAL;
    vg_blob_info tmp;
    s3_call c = {.method = "GET", .key = key, .out = out, .info = info ? info : &tmp};
    memset(c.info, 0, sizeof *c.info);
    int rc = perform(s, &c);
    if (rc == VG_OK) {
        c.info->size = out->len;
        vg_buf_puts(out, ""); /* NUL-terminated even when empty */
    } else {
        vg_buf_free(out);
    }
    return got(s, t0, rc, rc == VG_OK ? out->len : 0);
}

static int s3_head(vg_blob *b, const char *key, vg_blob_info *info)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    if (!vg_blob_key_readable(key))
        return VG_EINVAL;
    vg_blob_info tmp;
    s3_call c = {.method = "HEAD", .key = key, .info = info ? info : &tmp};
    memset(c.info, 0, sizeof *c.info);
    int rc = perform(s, &c);
    count(&s->heads, 1);
    return tally(s, rc, t0);
}

/* S3 answers 204 whether or not the key existed; a HEAD first tells the
 * two apart, which the API's 404 needs. */
static int s3_del(vg_blob *b, const char *key)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    if (!vg_blob_key_readable(key))
        return VG_EINVAL;
    vg_blob_info info;
    s3_call hc = {.method = "HEAD", .key = key, .info = &info};
    int rc = perform(s, &hc);
    if (rc == VG_OK) {
        s3_call c = {.method = "DELETE", .key = key};
        rc = perform(s, &c);
        if (rc == VG_OK)
            count(&s->deletes, 1);
    }
    return tally(s, rc, t0);
}

static uint64_t iso_ms(const char *v)
{
    struct tm tm = {0};
    const char *rest = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    unsigned ms = 0;
    if (*rest == '.')
        sscanf(rest + 1, "%3u", &ms);
    return (uint64_t)timegm(&tm) * 1000u + ms;
}

static int parse_listing(const char *xml, vg_blob_list *out, size_t limit)
{
    vg_buf t = {0};
    const char *p = xml;
    out->items = calloc(limit, sizeof *out->items);
    if (!out->items)
        return VG_ENOMEM;
    for (;;) {
        const char *c = strstr(p, "<Contents>");
        const char *end = c ? strstr(c, "</Contents>") : NULL;
        if (!c || !end || out->n == limit)
            break;
        vg_blob_entry *e = &out->items[out->n];
        if (!xml_text(c, end, "Key", &t))
            break;
        e->key = strdup(t.data);
        if (!e->key)
            break;
        out->n++;
        if (xml_text(c, end, "Size", &t))
            vg_parse_u64(t.data, &e->size);
        if (xml_text(c, end, "ETag", &t))
            trim_copy(e->etag, sizeof e->etag, t.data, t.len);
        if (xml_text(c, end, "LastModified", &t))
            e->modified_ms = iso_ms(t.data);
        p = end + 11;
    }
    out->truncated = xml_text(xml, NULL, "IsTruncated", &t) && !strcmp(t.data, "true");
    vg_buf_free(&t);
    return VG_OK;
}

/* ListObjectsV2 with start-after: the cursor is the last key returned,
 * the same for every store, and needs no server-side token. */
static int s3_list(vg_blob *b, const char *prefix, const char *after, size_t limit,
                   vg_blob_list *out)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    *out = (vg_blob_list){0};
    if (limit == 0 || limit > LIST_MAX)
        return VG_EINVAL;
    char max[16];
    snprintf(max, sizeof max, "%zu", limit);
    vg_sigv4_kv q[4] = {{"list-type", "2"}, {"max-keys", max}};
    size_t nq = 2;
    if (prefix && *prefix)
        q[nq++] = (vg_sigv4_kv){"prefix", prefix};
    if (after && *after)
        q[nq++] = (vg_sigv4_kv){"start-after", after};
    vg_buf body = {0};
    s3_call c = {.method = "GET", .query = q, .nquery = nq, .out = &body};
    int rc = perform(s, &c);
    if (rc == VG_OK)
        rc = parse_listing(body.data ? body.data : "", out, limit);
    if (rc != VG_OK)
        vg_blob_list_free(out);
    else
        count(&s->lists, 1);
    vg_buf_free(&body);
    return tally(s, rc == VG_NOTFOUND ? VG_EUNAVAIL : rc, t0);
}

static int s3_presign(vg_blob *b, const char *key, unsigned expires_s, vg_buf *url)
{
    s3_blob *s = (s3_blob *)b;
    if (!vg_blob_key_readable(key) || expires_s == 0 || expires_s > VG_SIGV4_PRESIGN_MAX_S)
        return VG_EINVAL;
    const char *base = s->public_endpoint ? s->public_endpoint : s->endpoint;
    char host[300], amz[17];
    vg_buf path = {0}, q = {0};
    vg_buf_reset(url);
    int rc = origin(s, base, url, host, sizeof host);
    if (rc == VG_OK)
        rc = raw_path(s, key, &path);
    vg_sigv4_kv hdr = {"host", host};
    vg_sigv4_req r = {.method = "GET", .path = path.data, .headers = &hdr, .nheaders = 1,
                      .payload_hash = VG_SIGV4_UNSIGNED};
    vg_sigv4_cred cred = {s->access_key, s->secret_key, s->token, s->region, "s3"};
    vg_sigv4_amz_date(vg_clock_ms(), amz);
    if (rc == VG_OK)
        rc = vg_sigv4_presign_query(&r, &cred, amz, expires_s, &q, NULL);
    if (rc == VG_OK)
        rc = vg_sigv4_encode(url, path.data, path.len, true);
    if (rc == VG_OK)
        rc = vg_buf_printf(url, "?%s", q.data);
    vg_buf_free(&path);
    vg_buf_free(&q);
    return rc;
}

/* HeadBucket: the bucket exists and our credentials are good. */
static int s3_ping(vg_blob *b)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    s3_call c = {.method = "HEAD"};
    int rc = perform(s, &c);
    if (rc == VG_NOTFOUND || rc == VG_EINVAL)
        rc = VG_EUNAVAIL;
    return tally(s, rc, t0);
}

static void s3_stats(vg_blob *b, vg_blob_stats *out)
{
    s3_blob *s = (s3_blob *)b;
    *out = (vg_blob_stats){.puts = load(&s->puts), .gets = load(&s->gets),
                           .deletes = load(&s->deletes), .errors = load(&s->errors),
                           .bytes_in = load(&s->bytes_in), .bytes_out = load(&s->bytes_out),
                           .heads = load(&s->heads), .lists = load(&s->lists)};
}

static void s3_close(vg_blob *b)
{
    s3_blob *s = (s3_blob *)b;
    for (size_t i = 0; i < s->nidle; i++)
        curl_easy_cleanup(s->idle[i]);
    free(s->idle);
    pthread_mutex_destroy(&s->mu);
    char *strs[] = {s->endpoint, s->public_endpoint, s->bucket, s->region, s->access_key,
                    s->secret_key, s->token, s->userpwd, s->sigv4, s->spool_dir};
    for (size_t i = 0; i < VG_ARRAY_LEN(strs); i++)
        free(strs[i]);
    free(s);
}

static int s3_put_stream(vg_blob *b, const char *key, uint64_t len, const char *ctype,
                         const vg_blob_meta *meta, size_t nmeta,
                         size_t (*read)(void *ud, char *buf, size_t max), void *ud)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    if (!ctype || !*ctype)
        ctype = "application/octet-stream";
    if (!vg_blob_key_valid(key) || !read || !ctype_ok(ctype) || !vg_blob_meta_valid(meta, nmeta))
        return VG_EINVAL;
    if (len > s->max_object)
        return VG_ETOOBIG;
    s3_call c = {.method = "PUT", .key = key, .body = "", .blen = (size_t)len, .read = read,
                 .read_ud = ud, .ctype = ctype, .meta = meta, .nmeta = nmeta};
    int rc = perform(s, &c);
    if (rc == VG_OK) {
        count(&s->puts, 1);
        count(&s->bytes_in, len);
    }
    return tally(s, rc == VG_NOTFOUND ? VG_EUNAVAIL : rc, t0);
}

/* An unnamed file in the spool directory: nothing to clean up after a
 * crash, and its pages are the kernel's cache, not our memory. */
static int spool_file(const s3_blob *s)
{
    return open(s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

/* The object spooled to a temp file, so a large one is sent with
 * sendfile and never held in memory. */
static int s3_open(vg_blob *b, const char *key, bool verify, int *fd, uint64_t *offset,
                   vg_blob_info *info)
{
    s3_blob *s = (s3_blob *)b;
    uint64_t t0 = vg_mono_ns();
    *fd = -1;
    *offset = 0;
    if (!vg_blob_key_readable(key))
        return VG_EINVAL;
    int tfd = spool_file(s);
    if (tfd < 0) {
        vg_blob_set_error("S3 spool file in %s: %s", s->spool_dir, strerror(errno));
        return tally(s, VG_EUNAVAIL, t0);
    }
    *info = (vg_blob_info){0};
    s3_call c = {.method = "GET", .key = key, .info = info, .spool = true, .spool_fd = tfd};
    int rc = VG_OK;
    if (verify && (!(c.spool_sha = EVP_MD_CTX_new()) ||
                   !EVP_DigestInit_ex(c.spool_sha, EVP_sha256(), NULL)))
        rc = VG_ENOMEM;
    if (rc == VG_OK)
        rc = perform(s, &c);
    if (c.spool_errno) /* our disk, not S3 */
        vg_blob_set_error("S3 spool file in %s: %s", s->spool_dir, strerror(c.spool_errno));
    unsigned char sha[EVP_MAX_MD_SIZE];
    unsigned shalen = 0;
    if (rc == VG_OK && verify) {
        if (EVP_DigestFinal_ex(c.spool_sha, sha, &shalen))
            vg_hex_lower(sha, shalen, info->etag);
        else
            rc = VG_ENOMEM;
    }
    EVP_MD_CTX_free(c.spool_sha);
    if (rc == VG_OK) {
        info->size = c.spooled;
        *fd = tfd;
    } else {
        close(tfd);
    }
    return got(s, t0, rc, rc == VG_OK ? c.spooled : 0);
}

static const vg_blob_ops s3_ops = {
    .name = "s3",
    .put = s3_put,
    .get = s3_get,
    .head = s3_head,
    .del = s3_del,
    .ping = s3_ping,
    .stats = s3_stats,
    .close = s3_close,
    .put_meta = s3_put_meta,
    .list = s3_list,
    .presign = s3_presign,
    .put_stream = s3_put_stream,
    .cancel = s3_cancel,
};

/* ---- open ---- */

static char *dup_or_null(const char *v) { return v && *v ? strdup(v) : NULL; }

/* CreateBucket when HeadBucket says it is missing. An unreachable store
 * is not fatal: voxgate starts unready and /ready says why. */
static int ensure_bucket(s3_blob *s, char *err, size_t errlen)
{
    s3_call head = {.method = "HEAD"};
    int rc = perform(s, &head);
    if (rc == VG_OK || head.status != 404)
        return VG_OK;
    char body[256] = "";
    if (strcmp(s->region, "us-east-1") != 0)
        snprintf(body, sizeof body,
                 "<CreateBucketConfiguration><LocationConstraint>%s</LocationConstraint>"
                 "</CreateBucketConfiguration>", s->region);
    s3_call put = {.method = "PUT", .body = body, .blen = strlen(body)};
    rc = perform(s, &put);
    if (rc != VG_OK && put.status != 409) {
        snprintf(err, errlen, "s3.create_bucket: %s", vg_blob_last_error());
        return VG_EUNAVAIL;
    }
    return VG_OK;
}

int vg_blob_s3_open(const vg_blob_s3_opts *o, vg_blob **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o->endpoint || !*o->endpoint || !o->bucket || !*o->bucket || !o->access_key ||
        !o->secret_key || !o->region) {
        snprintf(err, errlen, "s3: endpoint, bucket, region and both keys are required");
        return VG_EINVAL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s3_blob *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "s3: out of memory");
        return VG_ENOMEM;
    }
    s->ops = s3_ops;
    s->base.ops = &s->ops;
    s->spool_dir = dup_or_null(o->spool_dir);
    if (s->spool_dir) {
        int probe = spool_file(s);
        if (probe >= 0) {
            close(probe);
            s->ops.open = s3_open;
        }
    }
    s->endpoint = strdup(o->endpoint);
    s->public_endpoint = dup_or_null(o->public_endpoint);
    s->bucket = strdup(o->bucket);
    s->base.bucket = s->bucket;
    s->region = strdup(o->region);
    s->access_key = strdup(o->access_key);
    s->secret_key = strdup(o->secret_key);
    s->token = dup_or_null(o->session_token);
    s->path_style = o->path_style;
    s->connect_ms = o->connect_timeout_ms ? (long)o->connect_timeout_ms : 2000;
    s->timeout_ms = o->timeout_ms ? (long)o->timeout_ms : 10000;
    s->max_object = o->max_object_bytes ? o->max_object_bytes : OBJ_MAX;
    s->max_idle = o->max_handles ? (o->max_handles > POOL_MAX ? POOL_MAX : o->max_handles) : 16;
    s->idle = calloc(s->max_idle, sizeof *s->idle);
    pthread_mutex_init(&s->mu, NULL);
    vg_buf up = {0}, sv = {0};
    vg_buf_printf(&up, "%s:%s", o->access_key, o->secret_key);
    vg_buf_printf(&sv, "aws:amz:%s:s3", o->region);
    s->userpwd = up.data;
    s->sigv4 = sv.data;
    if (!s->endpoint || !s->bucket || !s->region || !s->access_key || !s->secret_key ||
        !s->idle || !s->userpwd || !s->sigv4) {
        s3_close(&s->base);
        snprintf(err, errlen, "s3: out of memory");
        return VG_ENOMEM;
    }
    if (o->create_bucket && ensure_bucket(s, err, errlen) != VG_OK) {
        s3_close(&s->base);
        return VG_EUNAVAIL;
    }
    *out = &s->base;
    return VG_OK;
}
