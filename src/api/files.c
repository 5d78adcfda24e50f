/* The Files API (SPEC §5, object storage): PUT/GET/HEAD/DELETE one file,
 * POST under a generated key, list with a cursor, and URLs anyone can
 * GET for a while: presigned by S3, or signed by voxgate for the local
 * store (/v1/files/{key}?expires=&sig=, HMAC-SHA256 with a key from the
 * environment or generated once into data_dir). Also where the blob store
 * is chosen and its metrics registered. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"
#include "voxgate/log.h"
#include "voxgate/ring.h"
#include "voxgate/sigv4.h"

#define KEY_MAX 1024
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define URL_KEY_FILE "url-signing.key"

static struct {
    unsigned char url_key[32];
    vg_hist op_us;
    atomic_int uploaders; /* streamed-upload threads still running */
} files;

/* ---- errors ---- */

/* A store failure as an answer: 502 when S3 answered with an error (a
 * wrong secret, a missing bucket), 503 when it could not be reached. */
static void reply_store_error(vg_req *r, int rc, const char *what)
{
    vg_app *app = vg_req_app(r);
    const char *why = vg_blob_last_error();
    if (rc == VG_NOTFOUND) {
        vg_reply_error(r, 404, "file_not_found", "no file with this key");
        return;
    }
    if (rc == VG_ETOOBIG) {
        vg_reply_error(r, 413, "file_too_large",
                       "the file is over limits.max_body_bytes (files are held whole in memory)");
        return;
    }
    if (rc == VG_EINVAL) {
        vg_reply_error(r, 400, "invalid_request", "the store refused the request%s%s",
                       *why ? ": " : "", why);
        return;
    }
    vg_counter_inc(&app->m.blob_errors);
    vg_log(VG_LOG_WARN, vg_req_id(r), "storage operation failed",
           (vg_log_field[]){VG_LS("op", what), VG_LS("error", *why ? why : "unknown")}, 2);
    vg_header h = {"Retry-After", "5"};
    if (vg_blob_last_status() >= 400)
        vg_reply_error(r, 502, "storage_error", "the object store refused %s: %s", what, why);
    else
        vg_reply_error_h(r, 503, "storage_unavailable", &h, 1, "the object store is unavailable%s%s",
                         *why ? ": " : "", why);
}

/* ---- small helpers ---- */

static void hmac_hex(const void *msg, size_t n, char out[VG_SHA256_HEX + 1])
{
    unsigned char mac[32];
    unsigned int len = 32;
    HMAC(EVP_sha256(), files.url_key, sizeof files.url_key, msg, n, mac, &len);
    vg_hex_lower(mac, 32, out);
}

static void url_sig(const char *key, uint64_t expires, char out[VG_SHA256_HEX + 1])
{
    vg_buf m = {0};
    vg_buf_printf(&m, "GET\n%s\n%llu", key, (unsigned long long)expires);
    hmac_hex(m.data ? m.data : "", m.len, out);
    vg_buf_free(&m);
}

static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url_encode(const char *s, size_t n, vg_buf *out)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        char q[4] = {b64u[v >> 18], b64u[(v >> 12) & 63], b64u[(v >> 6) & 63], b64u[v & 63]};
        vg_buf_append(out, q, i + 2 < n ? 4 : i + 1 < n ? 3 : 2);
    }
    vg_buf_puts(out, "");
}

/* false on any character outside the alphabet or an impossible length. */
static bool b64url_decode(const char *s, vg_buf *out)
{
    size_t n = strlen(s);
    if (n % 4 == 1)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(b64u, s[i]);
        if (!p || !s[i])
            return false;
        acc = (acc << 6) | (uint32_t)(p - b64u);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            vg_buf_append(out, &c, 1);
        }
    }
    vg_buf_puts(out, "");
    return true;
}

/* The path parameter as a string; false (answered) when it is not a key. */
static bool key_param(vg_req *r, char key[KEY_MAX + 1], bool strict)
{
    size_t n = 0;
    const char *p = vg_req_param(r, 0, &n);
    if (!p || n == 0 || n > KEY_MAX) {
        vg_reply_error(r, 400, "invalid_key", "a key is 1-1024 bytes");
        return false;
    }
    memcpy(key, p, n);
    key[n] = '\0';
    if (strict ? !vg_blob_key_valid(key) : !vg_blob_key_readable(key)) {
        vg_reply_error(r, 400, "invalid_key",
                       "a key is 1-1024 bytes of [A-Za-z0-9/._-], with no '..' segment and no "
                       "leading '/'");
        return false;
    }
    return true;
}

static void http_date(uint64_t ms, char out[40])
{
    time_t t = (time_t)(ms / 1000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* {key, bucket, size, content_type, etag, uploaded_at, metadata} */
static void info_json(vg_buf *b, vg_blob *blob, const char *key, const vg_blob_info *in)
{
    char ts[32];
    vg_format_rfc3339_ms(in->modified_ms, ts);
    const char *bucket = blob->bucket ? blob->bucket : "local";
    vg_buf_puts(b, "{\"key\":");
    vg_buf_json_str(b, key, strlen(key));
    vg_buf_puts(b, ",\"bucket\":");
    vg_buf_json_str(b, bucket, strlen(bucket));
    vg_buf_printf(b, ",\"size\":%llu,\"content_type\":", (unsigned long long)in->size);
    vg_buf_json_str(b, in->content_type, strlen(in->content_type));
    vg_buf_puts(b, ",\"etag\":");
    vg_buf_json_str(b, in->etag, strlen(in->etag));
    vg_buf_printf(b, ",\"uploaded_at\":\"%s\",\"metadata\":{", ts);
    for (size_t i = 0; i < in->nmeta; i++) {
        vg_buf_puts(b, i ? "," : "");
        vg_buf_json_str(b, in->meta[i].name, strlen(in->meta[i].name));
        vg_buf_puts(b, ":");
        vg_buf_json_str(b, in->meta[i].value, strlen(in->meta[i].value));
    }
    vg_buf_puts(b, "}}");
}

/* ---- signed URLs ---- */

/* Local store: base (files.public_url or http://Host) + path + signature. */
static int local_signed_url(vg_req *r, const char *key, uint64_t expires, vg_buf *out)
{
    const vg_config *cfg = vg_req_app(r)->cfg;
    const char *host = vg_req_header(r, "Host");
    char sig[VG_SHA256_HEX + 1];
    url_sig(key, expires, sig);
    vg_buf_reset(out);
    if (cfg->files.public_url[0])
        vg_buf_puts(out, cfg->files.public_url);
    else
        vg_buf_printf(out, "http://%s", host && *host ? host : cfg->listen);
    vg_buf_puts(out, "/v1/files/");
    vg_sigv4_encode(out, key, strlen(key), true);
    return vg_buf_printf(out, "?expires=%llu&sig=%s", (unsigned long long)expires, sig);
}

int vg_api_files_signed_url(vg_req *r, const char *key, unsigned expires_s, vg_buf *out,
                            uint64_t *expires_at_ms)
{
    vg_app *app = vg_req_app(r);
    uint64_t now = vg_clock_ms();
    *expires_at_ms = now + (uint64_t)expires_s * 1000u;
    if (vg_blob_can_presign(app->blob))
        return vg_blob_presign(app->blob, key, expires_s, out);
    return local_signed_url(r, key, now / 1000u + expires_s, out);
}

/* GET/HEAD with expires= and sig=: both present, not expired, matching. */
static bool signature_ok(vg_req *r, const char *key)
{
    const char *e = vg_req_query(r, "expires"), *sig = vg_req_query(r, "sig");
    if (!e && !sig)
        return true;
    uint64_t exp;
    if (!e || !sig || !vg_parse_u64(e, &exp)) {
        vg_reply_error(r, 400, "invalid_signature", "a signed URL carries expires (unix seconds) "
                                                    "and sig");
        return false;
    }
    char want[VG_SHA256_HEX + 1];
    url_sig(key, exp, want);
    if (!vg_consttime_eq(want, strlen(want), sig, strlen(sig))) {
        vg_reply_error(r, 403, "invalid_signature", "the URL signature does not match");
        return false;
    }
    if (exp < vg_clock_ms() / 1000u) {
        vg_reply_error(r, 403, "url_expired", "the signed URL has expired");
        return false;
    }
    return true;
}

/* ---- one file ---- */

typedef struct meta_collect {
    vg_blob_meta meta[VG_BLOB_META_MAX];
    size_t n;
    const char *bad;
} meta_collect;

static bool collect_meta(void *ud, const char *name, const char *value)
{
    meta_collect *mc = ud;
    if (strncasecmp(name, "X-Meta-", 7) != 0)
        return true;
    const char *nm = name + 7;
    size_t nl = strlen(nm);
    if (mc->n == VG_BLOB_META_MAX) {
        mc->bad = "at most 16 X-Meta-* headers";
        return false;
    }
    if (nl == 0 || nl > VG_BLOB_META_NAME || strlen(value) > VG_BLOB_META_VALUE) {
        mc->bad = "an X-Meta-* name is 1-64 characters and a value at most 256 bytes";
        return false;
    }
    vg_blob_meta *m = &mc->meta[mc->n++];
    for (size_t i = 0; i <= nl; i++)
        m->name[i] = (char)(nm[i] >= 'A' && nm[i] <= 'Z' ? nm[i] + 32 : nm[i]);
    snprintf(m->value, sizeof m->value, "%s", value);
    return true;
}

static bool request_meta(vg_req *r, meta_collect *mc)
{
    vg_req_each_header(r, collect_meta, mc);
    if (!mc->bad && !vg_blob_meta_valid(mc->meta, mc->n))
        mc->bad = "X-Meta-* names are [a-z0-9-], values printable ASCII, 2 KiB in all, "
                  "no name repeated or the start of another";
    if (mc->bad)
        vg_reply_error(r, 400, "invalid_metadata", "%s", mc->bad);
    return !mc->bad;
}

static bool content_type(vg_req *r, const char **ct)
{
    *ct = vg_req_header(r, "Content-Type");
    if (!*ct || !**ct) {
        vg_reply_error(r, 400, "missing_content_type", "a Content-Type header is required");
        return false;
    }
    if (!vg_content_type_valid(*ct)) {
        vg_reply_error(r, 400, "invalid_content_type", "Content-Type is not a valid media type");
        return false;
    }
    return true;
}

/* What the store says about a file just written; when it cannot be read
 * back right now, what was sent. */
static void stored_info(vg_blob *blob, const char *key, const char *ct, const meta_collect *mc,
                        uint64_t n, const char *sha, vg_blob_info *info)
{
    if (vg_blob_head(blob, key, info) == VG_OK)
        return;
    memset(info, 0, sizeof *info);
    info->size = n;
    info->modified_ms = vg_clock_ms();
    snprintf(info->content_type, sizeof info->content_type, "%.127s", ct);
    snprintf(info->etag, sizeof info->etag, "%s", sha);
    info->nmeta = mc->n;
    memcpy(info->meta, mc->meta, mc->n * sizeof mc->meta[0]);
}

static void reply_stored(vg_req *r, const char *key, const vg_blob_info *info);

/* Store the body under key and answer 201 with the file's info. */
static void store(vg_req *r, const char *key, const char *ct, const meta_collect *mc)
{
    vg_app *app = vg_req_app(r);
    size_t n;
    const char *body = vg_req_body(r, &n);
    int rc = vg_blob_put_meta(app->blob, key, body, n, ct, mc->meta, mc->n);
    if (rc != VG_OK) {
        reply_store_error(r, rc == VG_NOTFOUND ? VG_EUNAVAIL : rc, "the upload");
        return;
    }
    char sha[VG_SHA256_HEX + 1];
    vg_sha256_hex(body, n, sha);
    vg_blob_info info;
    stored_info(app->blob, key, ct, mc, n, sha, &info);
    reply_stored(r, key, &info);
}

/* 201 with the file's info and its Location. */
static void reply_stored(vg_req *r, const char *key, const vg_blob_info *info)
{
    vg_app *app = vg_req_app(r);
    vg_buf b = {0}, loc = {0};
    info_json(&b, app->blob, key, info);
    vg_buf_puts(&loc, "/v1/files/");
    vg_sigv4_encode(&loc, key, strlen(key), true);
    vg_header h = {"Location", loc.data};
    vg_reply_buf(r, 201, "application/json", &b, &h, 1);
    vg_buf_free(&b);
    vg_buf_free(&loc);
}

static void file_put(vg_req *r, const char *key)
{
    const char *ct;
    meta_collect mc = {0};
    if (content_type(r, &ct) && request_meta(r, &mc))
        store(r, key, ct, &mc);
}

/* ETag, Last-Modified and X-Meta-* of a file. */
typedef struct file_headers {
    vg_header h[3 + VG_BLOB_META_MAX];
    size_t n;
    char etag[84], date[40];
    char names[VG_BLOB_META_MAX][VG_BLOB_META_NAME + 8];
} file_headers;

static void headers_of(const vg_blob_info *in, file_headers *fh)
{
    snprintf(fh->etag, sizeof fh->etag, "\"%s\"", in->etag);
    fh->h[fh->n++] = (vg_header){"ETag", fh->etag};
    if (in->modified_ms) {
        http_date(in->modified_ms, fh->date);
        fh->h[fh->n++] = (vg_header){"Last-Modified", fh->date};
    }
    for (size_t i = 0; i < in->nmeta; i++) {
        snprintf(fh->names[i], sizeof fh->names[i], "X-Meta-%s", in->meta[i].name);
        fh->h[fh->n++] = (vg_header){fh->names[i], in->meta[i].value};
    }
}

static void file_get(vg_req *r, const char *key)
{
    vg_app *app = vg_req_app(r);
    vg_blob_info info;
    file_headers fh = {0};
    if (vg_req_method(r) == VG_M_HEAD) {
        int rc = vg_blob_head(app->blob, key, &info);
        if (rc != VG_OK) {
            reply_store_error(r, rc, "the read");
            return;
        }
        headers_of(&info, &fh);
        vg_reply_head(r, 200, info.content_type, info.size, fh.h, fh.n);
        return;
    }
    if (vg_blob_can_open(app->blob)) { /* sent from the file, never held in memory */
        int fd;
        uint64_t off;
        int rc = vg_blob_open(app->blob, key, false, &fd, &off, &info);
        if (rc != VG_OK) {
            reply_store_error(r, rc, "the read");
            return;
        }
        headers_of(&info, &fh);
        vg_reply_fd(r, 200, info.content_type[0] ? info.content_type : "application/octet-stream",
                    fd, off, info.size, fh.h, fh.n);
        return;
    }
    vg_buf data = {0};
    int rc = vg_blob_get(app->blob, key, &data, &info);
    if (rc != VG_OK) {
        vg_buf_free(&data);
        reply_store_error(r, rc, "the read");
        return;
    }
    headers_of(&info, &fh);
    vg_reply_buf(r, 200, info.content_type[0] ? info.content_type : "application/octet-stream",
                 &data, fh.h, fh.n);
    vg_buf_free(&data);
}

static void file_del(vg_req *r, const char *key)
{
    int rc = vg_blob_del(vg_req_app(r)->blob, key);
    if (rc == VG_OK)
        vg_reply(r, 204, NULL, "", 0, NULL, 0);
    else
        reply_store_error(r, rc, "the delete");
}

/* Every Files API handler is store work: on S3 it runs on a vg-io
 * thread (vg_api_store_work). */
static void files_key(vg_req *r, void *ud);

void vg_api_files_key(vg_req *r) { vg_api_store_work(r, files_key); }

static void files_key(vg_req *r, void *ud)
{
    (void)ud;
    char key[KEY_MAX + 1];
    unsigned m = vg_req_method(r);
    if (!key_param(r, key, m == VG_M_PUT))
        return;
    if ((m == VG_M_GET || m == VG_M_HEAD) && !signature_ok(r, key))
        return;
    /* The local store holds strict keys only: anything looser is absent. */
    if (m != VG_M_PUT && !vg_blob_key_valid(key) && !vg_req_app(r)->blob->bucket) {
        vg_reply_error(r, 404, "file_not_found", "no file with this key");
        return;
    }
    if (m == VG_M_PUT)
        file_put(r, key);
    else if (m == VG_M_DELETE)
        file_del(r, key);
    else
        file_get(r, key);
}

/* ---- generated keys ---- */

static const char *ext_for(const char *ct)
{
    static const struct { const char *type, *ext; } map[] = {
        {"audio/wav", "wav"},   {"audio/x-wav", "wav"},   {"audio/wave", "wav"},
        {"audio/mpeg", "mp3"},  {"audio/mp3", "mp3"},     {"audio/ogg", "ogg"},
        {"audio/opus", "opus"}, {"audio/flac", "flac"},   {"audio/x-flac", "flac"},
        {"audio/webm", "webm"}, {"audio/aac", "aac"},     {"audio/mp4", "m4a"},
        {"audio/l16", "pcm"},   {"audio/pcm", "pcm"},     {"application/json", "json"},
        {"text/plain", "txt"},  {"image/png", "png"},     {"image/jpeg", "jpg"},
        {"application/pdf", "pdf"},
    };
    size_t n = strcspn(ct, ";");
    while (n && ct[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < VG_ARRAY_LEN(map); i++)
        if (strlen(map[i].type) == n && !strncasecmp(ct, map[i].type, n))
            return map[i].ext;
    return "bin";
}

static void uuid4(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        uint64_t a = vg_mono_ns() ^ vg_clock_ms() << 20, c = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
        memcpy(b, &a, 8);
        memcpy(b + 8, &c, 8);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char hex[33];
    vg_hex_lower(b, 16, hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* The generated key, Content-Type and metadata of a POST; false once an
 * error was answered. */
static bool quiet_ct_meta(vg_req *r, const char **ct, meta_collect *mc);

/* quiet: check only, answer nothing (the stream hook's look ahead). */
static bool post_key(vg_req *r, char key[KEY_MAX + 1], const char **ct, meta_collect *mc,
                     bool quiet)
{
    const char *prefix = vg_req_query(r, "prefix");
    char pfx[KEY_MAX + 1] = "";
    if (prefix && *prefix) {
        snprintf(pfx, sizeof pfx, "%s", prefix);
        size_t n = strlen(pfx);
        if (n && pfx[n - 1] == '/')
            pfx[n - 1] = '\0'; /* "uploads/" and "uploads" mean the same */
        if (strlen(prefix) > KEY_MAX - 64 || !vg_blob_key_valid(pfx)) {
            if (quiet)
                return false;
            vg_reply_error(r, 400, "invalid_prefix",
                           "prefix is up to 960 bytes of [A-Za-z0-9/._-], with no '..' segment "
                           "and no leading '/'");
            return false;
        }
    }
    if (quiet ? !quiet_ct_meta(r, ct, mc) : !content_type(r, ct) || !request_meta(r, mc))
        return false;
    char id[37], date[16];
    time_t t = (time_t)(vg_clock_ms() / 1000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%Y/%m/%d", &tm);
    uuid4(id);
    snprintf(key, KEY_MAX + 1, "%s%s%s/%s.%s", pfx, *pfx ? "/" : "", date, id, ext_for(*ct));
    return true;
}

static void file_post(vg_req *r)
{
    char key[KEY_MAX + 1];
    const char *ct;
    meta_collect mc = {0};
    if (post_key(r, key, &ct, &mc, false))
        store(r, key, ct, &mc);
}

/* ---- streamed uploads (S3, known Content-Length) ---- */

/* A body over one ring's worth goes to S3 as it arrives: the connection
 * fills a bounded ring, a thread of its own runs the PUT and drains it.
 * The MHD thread never waits on S3: a full ring or an unfinished PUT
 * parks (suspends) the connection, and the uploader wakes it. */
#define STREAM_RING (256u * 1024u)

typedef struct up_stream {
    vg_body_sink sink;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    vg_ring ring;
    vg_req *r;             /* NULL once the request is over */
    vg_blob *blob;
    char key[KEY_MAX + 1];
    char ct[256];
    meta_collect mc;
    uint64_t len;
    EVP_MD_CTX *sha;       /* of the bytes sent: the ETag if HEAD fails after */
    bool abort, done;
    int rc;
    long status;
    char why[512];
    vg_blob_info info;
    atomic_int refs;
} up_stream;

static void up_unref(up_stream *u)
{
    if (atomic_fetch_sub(&u->refs, 1) != 1)
        return;
    vg_ring_free(&u->ring);
    EVP_MD_CTX_free(u->sha);
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

/* curl's read side: wait for bytes from the connection. */
static size_t up_read(void *ud, char *buf, size_t max)
{
    up_stream *u = ud;
    pthread_mutex_lock(&u->mu);
    while (!u->ring.len && !u->abort)
        pthread_cond_wait(&u->cv, &u->mu);
    size_t n = u->abort ? VG_BLOB_READ_ABORT : vg_ring_get(&u->ring, buf, max);
    vg_wake wk = {NULL};
    if (!u->abort) {
        EVP_DigestUpdate(u->sha, buf, n);
        wk = vg_req_unpark(u->r); /* room again, if it was waiting for some */
    }
    pthread_mutex_unlock(&u->mu);
    vg_req_wake(wk);
    return n;
}

static void *up_thread(void *arg)
{
    up_stream *u = arg;
    pthread_setname_np(pthread_self(), "vg-upload"); /* not the HTTP thread's name */
    int rc = vg_blob_put_stream(u->blob, u->key, u->len, u->ct, u->mc.meta, u->mc.n, up_read, u);
    vg_blob_info info = {0};
    if (rc == VG_OK) {
        unsigned char md[32];
        char sha[VG_SHA256_HEX + 1];
        EVP_DigestFinal_ex(u->sha, md, NULL);
        vg_hex_lower(md, 32, sha);
        stored_info(u->blob, u->key, u->ct, &u->mc, u->len, sha, &info);
    }
    pthread_mutex_lock(&u->mu);
    u->done = true;
    u->rc = rc;
    u->info = info;
    u->status = vg_blob_last_status();
    snprintf(u->why, sizeof u->why, "%s", vg_blob_last_error());
    vg_wake wk = vg_req_unpark(u->r);
    pthread_mutex_unlock(&u->mu);
    vg_req_wake(wk);
    up_unref(u);
    atomic_fetch_sub(&files.uploaders, 1);
    return NULL;
}

static size_t up_write(vg_body_sink *s, vg_req *r, const char *p, size_t n)
{
    up_stream *u = (up_stream *)s;
    pthread_mutex_lock(&u->mu);
    size_t took = n; /* once the PUT is over (failed), the rest is discarded */
    if (!u->done) {
        took = vg_ring_put(&u->ring, p, n);
        if (took)
            pthread_cond_signal(&u->cv);
        if (took < n)
            vg_req_suspend(r);
    }
    pthread_mutex_unlock(&u->mu);
    return took;
}

static void up_finish(vg_body_sink *s, vg_req *r)
{
    up_stream *u = (up_stream *)s;
    pthread_mutex_lock(&u->mu);
    bool done = u->done;
    if (!done)
        vg_req_suspend(r);
    pthread_mutex_unlock(&u->mu);
    if (!done)
        return;
    if (u->rc != VG_OK) {
        /* The reason was recorded on the uploader's thread. */
        vg_blob_set_error("%s", u->why);
        vg_blob_set_status(u->status);
        reply_store_error(r, u->rc == VG_NOTFOUND ? VG_EUNAVAIL : u->rc, "the upload");
        return;
    }
    reply_stored(r, u->key, &u->info);
}

/* The request is over: an upload still running is abandoned (S3 stores
 * nothing of a PUT that never completed). */
static void up_release(vg_body_sink *s, bool ok)
{
    up_stream *u = (up_stream *)s;
    pthread_mutex_lock(&u->mu);
    u->r = NULL;
    if (!u->done)
        u->abort = true;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    up_unref(u);
}

static up_stream *up_new(vg_req *r, const char *key, const char *ct, const meta_collect *mc,
                         uint64_t len)
{
    up_stream *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    if (vg_ring_init(&u->ring, STREAM_RING) != VG_OK || !(u->sha = EVP_MD_CTX_new()) ||
        !EVP_DigestInit_ex(u->sha, EVP_sha256(), NULL)) {
        vg_ring_free(&u->ring);
        EVP_MD_CTX_free(u->sha);
        free(u);
        return NULL;
    }
    u->sink = (vg_body_sink){up_write, up_finish, up_release};
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    u->r = r;
    u->blob = vg_req_app(r)->blob;
    snprintf(u->key, sizeof u->key, "%s", key);
    snprintf(u->ct, sizeof u->ct, "%s", ct);
    u->mc = *mc;
    u->len = len;
    atomic_init(&u->refs, 2); /* the request and the uploader */
    return u;
}

/* Streams the body when the thread starts; else the body is buffered. */
static void stream_upload(vg_req *r, const char *key, const char *ct, const meta_collect *mc)
{
    up_stream *u = up_new(r, key, ct, mc, vg_req_content_length(r));
    if (!u)
        return;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    atomic_fetch_add(&files.uploaders, 1);
    if (pthread_create(&t, &at, up_thread, u) != 0) {
        atomic_fetch_sub(&files.uploaders, 1);
        atomic_store(&u->refs, 1);
        up_unref(u);
    } else {
        vg_req_stream(r, &u->sink);
    }
    pthread_attr_destroy(&at);
}

static bool streamable(vg_req *r)
{
    return vg_blob_can_stream(vg_req_app(r)->blob) && vg_req_content_length(r) > STREAM_RING;
}

/* The checks of content_type and request_meta, answering nothing: a
 * request that fails one is left to the buffered path, so its error is
 * answered after the body was read, exactly as for a small body. */
static bool quiet_ct_meta(vg_req *r, const char **ct, meta_collect *mc)
{
    *ct = vg_req_header(r, "Content-Type");
    if (!*ct || !**ct || !vg_content_type_valid(*ct))
        return false;
    vg_req_each_header(r, collect_meta, mc);
    return !mc->bad && vg_blob_meta_valid(mc->meta, mc->n);
}

/* Stream hook of PUT /v1/files/{key}: the checks of file_put, quietly. */
static void stream_put(vg_req *r)
{
    char key[KEY_MAX + 1];
    size_t n = 0;
    const char *p = vg_req_param(r, 0, &n);
    const char *ct;
    meta_collect mc = {0};
    if (vg_req_method(r) != VG_M_PUT || !streamable(r) || !p || n == 0 || n > KEY_MAX)
        return;
    memcpy(key, p, n);
    key[n] = '\0';
    if (vg_blob_key_valid(key) && quiet_ct_meta(r, &ct, &mc))
        stream_upload(r, key, ct, &mc);
}

/* Stream hook of POST /v1/files. */
static void stream_post(vg_req *r)
{
    char key[KEY_MAX + 1];
    const char *ct;
    meta_collect mc = {0};
    if (vg_req_method(r) == VG_M_POST && streamable(r) && post_key(r, key, &ct, &mc, true))
        stream_upload(r, key, ct, &mc);
}

bool vg_api_files_drain(unsigned timeout_ms)
{
    uint64_t deadline = vg_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (atomic_load(&files.uploaders) > 0) {
        if (vg_mono_ns() >= deadline)
            return false;
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    return true;
}

/* ---- listing ---- */

static bool list_params(vg_req *r, const char **prefix, size_t *limit, vg_buf *after)
{
    const char *l = vg_req_query(r, "limit"), *c = vg_req_query(r, "cursor");
    uint64_t v = LIST_DEFAULT;
    *prefix = vg_req_query(r, "prefix");
    if (l && (!vg_parse_u64(l, &v) || v == 0 || v > LIST_MAX)) {
        vg_reply_error(r, 400, "invalid_limit", "limit is an integer from 1 to 1000");
        return false;
    }
    *limit = (size_t)v;
    /* Any printable prefix: other S3 clients' keys may hold spaces or UTF-8. */
    size_t pl = *prefix ? strlen(*prefix) : 0;
    bool ctl = false;
    for (size_t i = 0; i < pl; i++)
        ctl |= (unsigned char)(*prefix)[i] < 0x20 || (*prefix)[i] == 0x7f;
    if (pl > KEY_MAX || ctl) {
        vg_reply_error(r, 400, "invalid_prefix",
                       "prefix is up to 1024 bytes with no control characters");
        return false;
    }
    if (c && (!*c || !b64url_decode(c, after) || after->len == 0 || after->len > KEY_MAX ||
              strlen(after->data) != after->len || !vg_blob_key_readable(after->data))) {
        vg_reply_error(r, 400, "invalid_cursor", "cursor is not one this server handed out");
        return false;
    }
    return true;
}

static void file_list(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    const char *prefix;
    size_t limit;
    vg_buf after = {0};
    if (!list_params(r, &prefix, &limit, &after)) {
        vg_buf_free(&after);
        return;
    }
    vg_blob_list l;
    int rc = vg_blob_list_keys(app->blob, prefix, after.data, limit, &l);
    vg_buf_free(&after);
    if (rc != VG_OK) {
        reply_store_error(r, rc == VG_NOTFOUND ? VG_EUNAVAIL : rc, "the listing");
        return;
    }
    vg_buf b = {0};
    vg_buf_puts(&b, "{\"files\":[");
    for (size_t i = 0; i < l.n; i++) {
        char ts[32];
        vg_format_rfc3339_ms(l.items[i].modified_ms, ts);
        vg_buf_puts(&b, i ? ",{\"key\":" : "{\"key\":");
        vg_buf_json_str(&b, l.items[i].key, strlen(l.items[i].key));
        vg_buf_printf(&b, ",\"size\":%llu,\"etag\":", (unsigned long long)l.items[i].size);
        vg_buf_json_str(&b, l.items[i].etag, strlen(l.items[i].etag));
        vg_buf_printf(&b, ",\"last_modified\":\"%s\"}", ts);
    }
    vg_buf_puts(&b, "],\"next_cursor\":");
    if (l.truncated && l.n) {
        vg_buf cur = {0};
        const char *last = l.items[l.n - 1].key;
        b64url_encode(last, strlen(last), &cur);
        vg_buf_json_str(&b, cur.data, cur.len);
        vg_buf_free(&cur);
    } else {
        vg_buf_puts(&b, "null");
    }
    vg_buf_puts(&b, "}");
    vg_blob_list_free(&l);
    vg_reply_buf(r, 200, "application/json", &b, NULL, 0);
    vg_buf_free(&b);
}

static void files_root(vg_req *r, void *ud)
{
    (void)ud;
    if (vg_req_method(r) == VG_M_POST)
        file_post(r);
    else
        file_list(r);
}

void vg_api_files_root(vg_req *r) { vg_api_store_work(r, files_root); }

/* ---- /url ---- */

static void files_url(vg_req *r, void *ud);

void vg_api_files_url(vg_req *r) { vg_api_store_work(r, files_url); }

static void files_url(vg_req *r, void *ud)
{
    (void)ud;
    vg_app *app = vg_req_app(r);
    char key[KEY_MAX + 1];
    if (!key_param(r, key, false))
        return;
    const char *e = vg_req_query(r, "expires_s");
    uint64_t s = VG_SIGV4_PRESIGN_DEFAULT_S;
    if (e && (!vg_parse_u64(e, &s) || s == 0 || s > VG_SIGV4_PRESIGN_MAX_S)) {
        vg_reply_error(r, 400, "invalid_expires", "expires_s is an integer from 1 to 604800 "
                                                  "(7 days)");
        return;
    }
    if (!vg_blob_key_valid(key) && !app->blob->bucket) {
        vg_reply_error(r, 404, "file_not_found", "no file with this key");
        return;
    }
    vg_blob_info info;
    int rc = vg_blob_head(app->blob, key, &info);
    if (rc != VG_OK) {
        reply_store_error(r, rc, "the lookup");
        return;
    }
    vg_buf url = {0};
    uint64_t at;
    if (vg_api_files_signed_url(r, key, (unsigned)s, &url, &at) != VG_OK) {
        vg_buf_free(&url);
        vg_reply_error(r, 503, "out_of_memory", "cannot build the URL");
        return;
    }
    char ts[32];
    vg_format_rfc3339_ms(at, ts);
    vg_buf b = {0};
    vg_buf_puts(&b, "{\"url\":");
    vg_buf_json_str(&b, url.data, url.len);
    vg_buf_printf(&b, ",\"expires_at\":\"%s\"}", ts);
    vg_reply_buf(r, 200, "application/json", &b, NULL, 0);
    vg_buf_free(&b);
    vg_buf_free(&url);
}

/* ---- wiring ---- */

/* The URL-signing key: from the named variable (hashed to 32 bytes), or
 * 32 random bytes kept in data_dir so signed URLs survive restarts. */
static int load_url_key(const vg_config *cfg, char *err, size_t errlen)
{
    if (cfg->files.url_key_env[0]) {
        const char *v = getenv(cfg->files.url_key_env);
        if (!v || strlen(v) < 16) {
            snprintf(err, errlen, "files.url_key_env: %s must hold at least 16 characters",
                     cfg->files.url_key_env);
            return -1;
        }
        vg_sha256_raw(v, strlen(v), files.url_key);
        return 0;
    }
    char path[VG_CONF_STR + 32];
    snprintf(path, sizeof path, "%s/%s", cfg->data_dir, URL_KEY_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, files.url_key, sizeof files.url_key);
        close(fd);
        if (n == (ssize_t)sizeof files.url_key)
            return 0;
        snprintf(err, errlen, "%s: expected %zu bytes; remove it to generate a new key", path,
                 sizeof files.url_key);
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && getrandom(files.url_key, sizeof files.url_key, 0) ==
                             (ssize_t)sizeof files.url_key &&
              write(fd, files.url_key, sizeof files.url_key) == (ssize_t)sizeof files.url_key &&
              fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0)
            unlink(path);
        return -1;
    }
    return 0;
}

static void observe_op(void *ud, uint64_t us) { vg_hist_observe_us(ud, us); }

static int open_s3(const vg_config *cfg, vg_blob **out, char *err, size_t errlen)
{
    const char *ak = getenv(cfg->s3.access_key_env), *sk = getenv(cfg->s3.secret_key_env);
    const char *tok = cfg->s3.session_token_env[0] ? getenv(cfg->s3.session_token_env) : NULL;
    if (!ak || !*ak || !sk || !*sk) {
        snprintf(err, errlen, "%s: environment variable %s is not set",
                 ak && *ak ? "s3.secret_key_env" : "s3.access_key_env",
                 ak && *ak ? cfg->s3.secret_key_env : cfg->s3.access_key_env);
        return -1;
    }
    vg_blob_s3_opts o = {
        .endpoint = cfg->s3.endpoint,
        .public_endpoint = cfg->s3.public_endpoint,
        .bucket = cfg->s3.bucket,
        .region = cfg->s3.region,
        .access_key = ak,
        .secret_key = sk,
        .session_token = tok,
        .path_style = cfg->s3.path_style,
        .create_bucket = cfg->s3.create_bucket,
        .connect_timeout_ms = cfg->s3.connect_timeout_ms,
        .timeout_ms = cfg->s3.timeout_ms,
        .max_handles = cfg->s3.max_idle_connections,
        /* No bigger than an upload may be: objects read with get are
         * held whole in memory. */
        .max_object_bytes = cfg->limits.max_body_bytes,
        /* Files API downloads and large TTS hits are spooled here and
         * sent from the file (an unusable directory: read into memory). */
        .spool_dir = cfg->data_dir,
    };
    mkdir(cfg->data_dir, 0750);
    return vg_blob_s3_open(&o, out, err, errlen) == VG_OK ? 0 : -1;
}

int vg_api_files_wire(vg_app *app, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    if (load_url_key(cfg, err, errlen) != 0)
        return -1;
    if (cfg->s3.endpoint[0]) {
        if (open_s3(cfg, &app->blob, err, errlen) != 0)
            return -1;
    } else {
        char path[VG_CONF_STR + 16];
        snprintf(path, sizeof path, "%s/blobs", cfg->data_dir);
        if (vg_blob_local_open(path, &app->blob, err, errlen) != VG_OK)
            return -1;
    }
    app->blob->observe_us = observe_op;
    app->blob->observe_ud = &files.op_us;
    vg_http_stream_hook(vg_api_files_key, stream_put);
    vg_http_stream_hook(vg_api_files_root, stream_post);
    return 0;
}

/* ---- metrics ---- */

#define BLOB_STAT(field)                                 \
    static double blob_##field(void *ud)                 \
    {                                                    \
        vg_blob_stats s;                                 \
        vg_blob_stats_get(((vg_app *)ud)->blob, &s);     \
        return (double)s.field;                          \
    }
BLOB_STAT(puts)
BLOB_STAT(gets)
BLOB_STAT(heads)
BLOB_STAT(deletes)
BLOB_STAT(lists)
BLOB_STAT(errors)
BLOB_STAT(bytes_in)
BLOB_STAT(bytes_out)

void vg_api_files_register_metrics(vg_app *app)
{
    static const struct {
        const char *op;
        vg_gauge_fn fn;
    } ops[] = {{"put", blob_puts}, {"get", blob_gets}, {"head", blob_heads},
               {"delete", blob_deletes}, {"list", blob_lists}};
    char labels[32], path[48];
    for (size_t i = 0; i < VG_ARRAY_LEN(ops); i++) {
        snprintf(labels, sizeof labels, "op=\"%s\"", ops[i].op);
        snprintf(path, sizeof path, "storage.ops.%s", ops[i].op);
        vg_metrics_counter_fn("voxgate_storage_operations_total", labels,
                              "Blob store operations that completed.", path, ops[i].fn, app);
    }
    vg_metrics_counter_fn("voxgate_storage_backend_errors_total", NULL,
                          "Blob store operations the backend failed (unreachable, refused).",
                          "storage.backend_errors", blob_errors, app);
    vg_metrics_counter_fn("voxgate_storage_bytes_total", "direction=\"in\"",
                          "Bytes written to the blob store.", "storage.bytes_in", blob_bytes_in,
                          app);
    vg_metrics_counter_fn("voxgate_storage_bytes_total", "direction=\"out\"",
                          "Bytes read from the blob store.", "storage.bytes_out", blob_bytes_out,
                          app);
    vg_metrics_hist("voxgate_storage_operation_duration_seconds", NULL,
                    "Latency of blob store operations.", "storage.latency", &files.op_us);
}
