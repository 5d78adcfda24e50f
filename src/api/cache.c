/* The cache-aside API (SPEC §5, first block): applications that call
 * providers themselves store and fetch results here. Reads go L1 then
 * L2 (kv); writes go L2 then L1, so L1 never holds what L2 refused. TTS
 * audio goes to the blob store before its metadata goes to kv, so no
 * entry ever points at missing audio. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "tiers.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"
#include "voxgate/log.h"
#include "voxgate/sigv4.h"

#define HIT_L1 {"X-Cache", "HIT"}, {"X-Cache-Tier", "l1"}
#define HIT_L2 {"X-Cache", "HIT"}, {"X-Cache-Tier", "l2"}

/* A parsed, validated cache-aside key plus the request's TTL. */
typedef struct cache_key {
    vg_key_parts parts;
    char hash[VG_SHA256_HEX + 1];
    char key[VG_KEY_MAX];
    size_t klen;
    uint64_t ttl_ms;
} cache_key;

/* ---- key parsing, shared by the query API and batch items ---- */

/* Where key fields come from: the query string or a batch item. */
typedef const char *(*field_fn)(void *src, const char *name);
/* Returned by a field_fn for a present field of the wrong JSON type. */
static const char bad_type[] = "";

typedef struct key_err {
    unsigned status;
    const char *code;
    char msg[160];
} key_err;

static bool fail(key_err *e, const char *code, const char *fmt, const char *arg)
{
    e->status = 400;
    e->code = code;
    snprintf(e->msg, sizeof e->msg, fmt, arg);
    return false;
}

static bool ident_field(key_err *e, const char *name, const char *v, bool required)
{
    if (v == bad_type)
        return fail(e, "invalid_parameter", "%s must be a string", name);
    if (!v)
        return required ? fail(e, "missing_parameter", "%s is required", name) : true;
    if (!vg_ident_valid(v))
        return fail(e, "invalid_parameter", "%s must match [A-Za-z0-9_.-]{1,64}", name);
    return true;
}

static bool hash_field(key_err *e, const char *name, const char *v, char out[VG_SHA256_HEX + 1])
{
    if (v == bad_type)
        return fail(e, "invalid_hash", "%s must be a string", name);
    if (!v)
        return fail(e, "missing_parameter", "%s is required", name);
    if (!vg_hash_valid(v))
        return fail(e, "invalid_hash", "%s must be 64 hex digits (SHA-256)", name);
    vg_hash_normalize(v, out);
    return true;
}

/* Count UTF-8 code points; -1 when the text is not valid UTF-8. */
static long utf8_chars(const char *s)
{
    long n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
                   : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0)
            return -1;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                return -1;
        p += len;
        n++;
    }
    return n;
}

static bool text_hash_field(vg_app *app, field_fn get, void *src, key_err *e,
                            char out[VG_SHA256_HEX + 1])
{
    const char *th = get(src, "text_hash"), *text = get(src, "text");
    if (th && text)
        return fail(e, "invalid_parameter", "give text or text_hash, not both%s", "");
    if (!text)
        return hash_field(e, "text_hash", th, out);
    long n = text == bad_type ? -1 : utf8_chars(text);
    if (n <= 0)
        return fail(e, "invalid_parameter", "text must be non-empty UTF-8%s", "");
    if ((uint64_t)n > app->cfg->limits.max_tts_chars) {
        char lim[24];
        snprintf(lim, sizeof lim, "%u", app->cfg->limits.max_tts_chars);
        fail(e, "text_too_long", "text is over %s characters", lim);
        e->status = 413; /* SPEC §3: oversized input is a 413 */
        return false;
    }
    vg_sha256_hex(text, strlen(text), out);
    return true;
}

static bool ttl_field(vg_app *app, const char *v, bool allowed, uint64_t default_s,
                      uint64_t *ttl_ms, key_err *e)
{
    uint64_t s = default_s;
    char max[24];
    snprintf(max, sizeof max, "%llu", (unsigned long long)app->cfg->cache.max_ttl_s);
    if (v && !allowed)
        return fail(e, "invalid_parameter", "ttl_s applies to writes only%s", "");
    if (v && (v == bad_type || !vg_parse_u64(v, &s) || s == 0 || s > app->cfg->cache.max_ttl_s))
        return fail(e, "invalid_ttl", "ttl_s must be an integer from 1 to %s", max);
    *ttl_ms = s * 1000u;
    return true;
}

static bool parse_key(vg_app *app, vg_kind kind, field_fn get, void *src, bool write,
                      cache_key *k, key_err *e)
{
    const vg_config *cfg = app->cfg;
    vg_key_parts *p = &k->parts;
    *p = (vg_key_parts){.kind = kind};
    p->provider = get(src, "provider");
    p->language = get(src, "language");
    p->format = get(src, "format");
    if (!ident_field(e, "provider", p->provider, true) ||
        !ident_field(e, "language", p->language, true) ||
        !ident_field(e, "format", p->format, false))
        return false;
    if (kind == VG_KIND_TTS) {
        p->voice = get(src, "voice");
        if (!ident_field(e, "voice", p->voice, true) ||
            !text_hash_field(app, get, src, e, k->hash))
            return false;
    } else if (!hash_field(e, "audio_hash", get(src, "audio_hash"), k->hash)) {
        return false;
    }
    if (!ttl_field(app, get(src, "ttl_s"), write,
                   kind == VG_KIND_TTS ? cfg->cache.tts_ttl_s : cfg->cache.stt_ttl_s,
                   &k->ttl_ms, e))
        return false;
    p->hash = k->hash;
    p->epoch = vg_config_cache_epoch(cfg, p->provider);
    int n = vg_key_build(cfg->cache.prefix, p, k->key, sizeof k->key);
    if (n < 0)
        return fail(e, "invalid_parameter", "cannot build a cache key from these fields%s", "");
    k->klen = (size_t)n;
    return true;
}

static const char *query_field(void *src, const char *name) { return vg_req_query(src, name); }

/* Parse the key from the query string; replies and returns false on error. */
static bool query_key(vg_req *r, vg_kind kind, cache_key *k)
{
    key_err e;
    if (parse_key(vg_req_app(r), kind, query_field, r, vg_req_method(r) == VG_M_PUT, k, &e))
        return true;
    vg_reply_error(r, e.status, e.code, "%s", e.msg);
    return false;
}

/* ---- tier access with metrics ---- */

static vg_l1_item *l1_lookup(vg_app *app, const cache_key *k)
{
    return vg_tier_l1_get(app, k->key, k->klen);
}

/* VG_OK, VG_NOTFOUND, or an error (counted, logged, treated as a miss). */
static int l2_lookup(vg_req *r, const cache_key *k, vg_buf *val, uint64_t *exp)
{
    return vg_tier_l2_get(vg_req_app(r), vg_req_id(r), k->key, k->klen, val, exp);
}

static void drop_corrupt(vg_req *r, const cache_key *k, const char *why)
{
    vg_tier_drop_corrupt(vg_req_app(r), vg_req_id(r), k->key, k->klen, why);
}

static void release_item(void *cls) { vg_l1_release(cls); }

static void reply_l1_hit(vg_req *r, vg_l1_item *it)
{
    vg_header h[] = {HIT_L1, {"ETag", NULL}};
    char etag[70];
    if (it->sha256[0]) {
        snprintf(etag, sizeof etag, "\"%s\"", it->sha256);
        h[2].value = etag;
    }
    vg_req_set_cache(r, "hit_l1");
    vg_reply_ref(r, 200, it->ctype, it->data, it->len, release_item, it, h, VG_ARRAY_LEN(h));
}

static void reply_miss(vg_req *r)
{
    vg_header h = {"X-Cache", "MISS"};
    vg_req_set_cache(r, "miss");
    vg_reply_error_h(r, 404, "cache_miss", &h, 1, "no cache entry for this key");
}

static void reply_stored(vg_req *r, const cache_key *k, const char *extra)
{
    vg_buf b = {0};
    char exp[32];
    vg_format_rfc3339_ms(vg_clock_ms() + k->ttl_ms, exp);
    vg_buf_puts(&b, "{\"key\":");
    vg_buf_json_str(&b, k->key, k->klen);
    vg_buf_printf(&b, ",\"ttl_s\":%llu,\"expires_at\":\"%s\"%s}",
                  (unsigned long long)(k->ttl_ms / 1000u), exp, extra ? extra : "");
    vg_reply_buf(r, 201, "application/json", &b, NULL, 0);
}

static bool l2_store_reply(vg_req *r, int rc)
{
    if (rc == VG_OK)
        return true;
    if (rc == VG_ETOOBIG)
        vg_reply_error(r, 413, "entry_too_large", "the entry does not fit in the cache");
    else
        vg_reply_error(r, 503, "cache_unavailable", "the cache store is unavailable");
    return false;
}

static bool l2_store(vg_req *r, const cache_key *k, const vg_buf *val)
{
    return l2_store_reply(r, vg_tier_l2_set(vg_req_app(r), k->key, k->klen, val->data, val->len,
                                            k->ttl_ms));
}

/* ---- the non-blocking L2 read (a kv with vg_kv_get_async: Redis) ----
 *
 * The HTTP thread must not wait on Redis: after an L1 miss the request
 * parks, the kv's event thread fetches the value (pipelined with every
 * other parked read) and resumes it, and the answer is built here on the
 * HTTP thread again. The kv bounds the wait by its command timeout, so a
 * hung Redis is a miss within it, as on the synchronous path. */

/* An L2 value decoded: rc is VG_OK (a hit), VG_ECORRUPT (the entry must
 * be removed), or the read's own VG_NOTFOUND or error. Decoding needs no
 * request, so the async path does it on the kv's thread, off the HTTP one. */
typedef struct l2_hit {
    int rc;
    const char *res;        /* STT: the result inside the value */
    size_t rlen;
    uint64_t created;
    vg_tts_meta m;          /* TTS */
} l2_hit;

static void l2_decode(vg_kind kind, int rc, const vg_buf *val, l2_hit *h)
{
    h->rc = rc;
    if (rc != VG_OK)
        return;
    if (kind == VG_KIND_TTS) {
        if (vg_tts_meta_decode(val->data, val->len, &h->m) != VG_OK)
            h->rc = VG_ECORRUPT;
    } else if (vg_stt_entry_decode(val->data, val->len, &h->res, &h->rlen, &h->created) != VG_OK) {
        h->rc = VG_ECORRUPT;
    }
}

static void stt_l2_answer(vg_req *r, const cache_key *k, const l2_hit *h, uint64_t exp,
                          vg_buf *val);
static void tts_l2_answer(vg_req *r, const cache_key *k, const l2_hit *h, uint64_t exp);

static void l2_answer(vg_req *r, vg_kind kind, const cache_key *k, const l2_hit *h,
                      uint64_t exp, vg_buf *val)
{
    if (kind == VG_KIND_TTS)
        tts_l2_answer(r, k, h, exp);
    else
        stt_l2_answer(r, k, h, exp, val);
}

typedef struct l2_wait {
    vg_park park;            /* first */
    int rc;
    vg_buf val;              /* h.res points into it */
    l2_hit h;
    uint64_t exp, t0_ns, t1_ns;
    vg_kind kind;
    cache_key k;
} l2_wait;

static void l2w_free(vg_park *p)
{
    l2_wait *w = (l2_wait *)p;
    vg_buf_free(&w->val);
    free(w);
}

/* The kv's callback (its event thread), or the handler when the read
 * could not be queued: keep the result and wake the request. */
static void l2w_done(void *ud, int rc, vg_buf *val, uint64_t exp)
{
    l2_wait *w = ud;
    w->rc = rc;
    if (val) {
        vg_buf t = w->val;
        w->val = *val;
        *val = t;
    }
    w->exp = exp;
    w->t1_ns = vg_mono_ns();
    l2_decode(w->kind, rc, &w->val, &w->h);
    vg_park_wake(&w->park);
}

/* The result is in (MHD thread): count the read and answer. */
static void l2w_ready(vg_park *p, vg_req *r)
{
    l2_wait *w = (l2_wait *)p;
    vg_tier_l2_count(vg_req_app(r), vg_req_id(r), w->rc, (w->t1_ns - w->t0_ns) / 1000u);
    l2_answer(r, w->kind, &w->k, &w->h, w->exp, &w->val);
}

/* True when the read went the non-blocking way (the request is parked
 * and will be answered); false: read synchronously. */
static bool l2_read_async(vg_req *r, const cache_key *k, vg_kind kind)
{
    vg_app *app = vg_req_app(r);
    if (!vg_kv_has_async(app->kv))
        return false;
    l2_wait *w = calloc(1, sizeof *w);
    if (!w)
        return false;
    w->kind = kind;
    w->k = *k;
    w->t0_ns = vg_mono_ns();
    if (!vg_park_defer(&w->park, r, l2w_ready, l2w_free)) { /* stopping: read synchronously */
        free(w);
        return false;
    }
    int rc = vg_kv_get_async(app->kv, k->key, k->klen, l2w_done, w);
    if (rc != VG_OK)
        l2w_done(w, rc, NULL, 0); /* not queued: an error, answered as a miss */
    return true;
}

/* ---- STT ---- */

/* Answer an STT read from its decoded L2 value (h->res points into val):
 * fill L1 and reply on a hit, handing val's bytes to the response rather
 * than copying them; remove a corrupt entry. */
static void stt_l2_answer(vg_req *r, const cache_key *k, const l2_hit *h, uint64_t exp,
                          vg_buf *val)
{
    vg_app *app = vg_req_app(r);
    if (h->rc == VG_OK) {
        vg_l1_put(app->l1, k->key, k->klen, h->res, h->rlen, "application/json", NULL,
                  h->created, exp);
        vg_header hd[] = {HIT_L2};
        vg_req_set_cache(r, "hit_l2");
        char *owned = val->data;
        *val = (vg_buf){0};
        vg_reply_ref(r, 200, "application/json", h->res, h->rlen, free, owned, hd,
                     VG_ARRAY_LEN(hd));
        return;
    }
    if (h->rc == VG_ECORRUPT)
        drop_corrupt(r, k, "stt entry does not decode");
    reply_miss(r);
}

/* The L2 read and answer, here and now. */
static void l2_get(vg_req *r, const cache_key *k, vg_kind kind)
{
    vg_buf val = {0};
    uint64_t exp = 0;
    l2_hit h;
    l2_decode(kind, l2_lookup(r, k, &val, &exp), &val, &h);
    l2_answer(r, kind, k, &h, exp, &val);
    vg_buf_free(&val);
}

/* GET of an STT or TTS entry: L1, then L2 (parked on the Redis event
 * thread when the backend has one, else read here). */
static void entry_get(vg_req *r, const cache_key *k, vg_kind kind)
{
    vg_app *app = vg_req_app(r);
    vg_l1_item *it = l1_lookup(app, k);
    if (it) {
        reply_l1_hit(r, it);
        return;
    }
    if (l2_read_async(r, k, kind))
        return;
    l2_get(r, k, kind);
}

static void stt_put(vg_req *r, const cache_key *k)
{
    vg_app *app = vg_req_app(r);
    size_t n;
    const char *body = vg_req_body(r, &n);
    if (n == 0) {
        vg_reply_error(r, 400, "missing_body", "the body must be the JSON result");
        return;
    }
    if (!vg_json_valid(body, n)) {
        vg_reply_error(r, 400, "invalid_json", "the body is not exactly one JSON value");
        return;
    }
    uint64_t now = vg_clock_ms();
    vg_buf val = {0};
    if (vg_stt_entry_encode(&val, k->parts.provider, k->parts.language, now, body, n) != VG_OK) {
        vg_buf_free(&val);
        vg_reply_error(r, 503, "out_of_memory", "cannot encode the entry");
        return;
    }
    if (l2_store(r, k, &val)) {
        vg_l1_put(app->l1, k->key, k->klen, body, n, "application/json", NULL, now,
                  now + k->ttl_ms);
        reply_stored(r, k, NULL);
    }
    vg_buf_free(&val);
}

/* Remove from both tiers; reply 204 when something was there. */
static void del_reply(vg_req *r, const cache_key *k, int l2rc)
{
    vg_app *app = vg_req_app(r);
    bool l1 = vg_l1_del(app->l1, k->key, k->klen);
    if (l2rc < 0) {
        vg_reply_error(r, 503, "cache_unavailable", "the cache store is unavailable");
        return;
    }
    if (l2rc == VG_OK || l1)
        vg_reply(r, 204, NULL, "", 0, NULL, 0);
    else
        reply_miss(r);
}

void vg_api_cache_stt(vg_req *r)
{
    cache_key k;
    if (!query_key(r, VG_KIND_STT, &k))
        return;
    switch (vg_req_method(r)) {
    case VG_M_PUT:
        stt_put(r, &k);
        break;
    case VG_M_DELETE:
        del_reply(r, &k, vg_kv_del(vg_req_app(r)->kv, k.key, k.klen));
        break;
    default:
        entry_get(r, &k, VG_KIND_STT);
    }
}

/* ---- TTS ---- */

static void tts_blob_name(const cache_key *k, const char *audio_sha, char out[256])
{
    vg_tier_tts_blob_name(k->key, k->klen, audio_sha, out);
}

static int tts_meta(vg_req *r, const cache_key *k, vg_tts_meta *m, uint64_t *exp)
{
    return vg_tier_tts_meta(vg_req_app(r), vg_req_id(r), k->key, k->klen, m, exp);
}

static int tts_audio(vg_req *r, const cache_key *k, const vg_tts_meta *m, vg_buf *audio)
{
    return vg_tier_tts_audio(vg_req_app(r), vg_req_id(r), k->key, k->klen, m, audio);
}

/* Answer a TTS read from its decoded L2 metadata (corrupt: removed, a
 * miss): fetch and check the audio from the blob store, fill L1, reply. */
static void tts_l2_answer(vg_req *r, const cache_key *k, const l2_hit *h, uint64_t exp)
{
    vg_app *app = vg_req_app(r);
    const vg_tts_meta *m = &h->m; /* decoded only when h->rc is VG_OK */
    if (h->rc == VG_ECORRUPT)
        drop_corrupt(r, k, "tts metadata does not decode");
    if (h->rc != VG_OK) {
        reply_miss(r);
        return;
    }
    char etag[70];
    snprintf(etag, sizeof etag, "\"%s\"", m->sha256);
    vg_header hd[] = {HIT_L2, {"ETag", etag}};
    vg_tts_audio a;
    if (vg_tier_tts_hit_audio(app, vg_req_id(r), k->key, k->klen, m, exp, &a) != VG_OK) {
        reply_miss(r);
        return;
    }
    vg_req_set_cache(r, "hit_l2");
    if (a.from_file)
        vg_reply_fd(r, 200, m->content_type, a.fd, a.offset, m->size, hd, VG_ARRAY_LEN(hd));
    else
        vg_reply_buf(r, 200, m->content_type, &a.buf, hd, VG_ARRAY_LEN(hd));
    vg_buf_free(&a.buf);
}

static bool audio_type_ok(vg_req *r, const char **ct)
{
    *ct = vg_req_header(r, "Content-Type");
    if (!*ct || !vg_content_type_valid(*ct) ||
        (strncasecmp(*ct, "audio/", 6) != 0 && strncasecmp(*ct, "application/octet-stream", 24) != 0)) {
        vg_reply_error(r, 415, "unsupported_media_type",
                       "Content-Type must be audio/* or application/octet-stream");
        return false;
    }
    return true;
}

static void tts_put(vg_req *r, const cache_key *k)
{
    vg_app *app = vg_req_app(r);
    const char *ct;
    if (!audio_type_ok(r, &ct))
        return;
    size_t n;
    const char *body = vg_req_body(r, &n);
    if (n == 0) {
        vg_reply_error(r, 400, "missing_body", "the body must be the audio bytes");
        return;
    }
    vg_tts_meta m;
    int kv_rc = VG_OK;
    switch (vg_tier_tts_store(app, vg_req_id(r), &k->parts, k->key, k->klen, body, n, ct,
                              NULL, k->ttl_ms, &m, &kv_rc)) {
    case VG_TTS_BLOB_FAILED: {
        const char *why = vg_blob_last_error(); /* S3's answer or the transport error */
        vg_reply_error(r, 503, "storage_unavailable", "the audio could not be stored%s%s",
                       *why ? ": " : "", why);
        return;
    }
    case VG_TTS_META_FAILED:
        l2_store_reply(r, kv_rc);
        return;
    default:
        break;
    }
    char extra[160];
    snprintf(extra, sizeof extra, ",\"bytes\":%zu,\"sha256\":\"%s\"", n, m.sha256);
    reply_stored(r, k, extra);
}

static void tts_del(vg_req *r, const cache_key *k)
{
    vg_app *app = vg_req_app(r);
    vg_tts_meta m;
    uint64_t exp;
    int rc = tts_meta(r, k, &m, &exp);
    if (rc == VG_OK) {
        rc = vg_kv_del(app->kv, k->key, k->klen);
        vg_blob_del(app->blob, m.blob);
    }
    del_reply(r, k, rc);
}

/* A TTS request by method; a GET or HEAD reads with get. */
static void tts_method(vg_req *r, const cache_key *k,
                       void (*get)(vg_req *r, const cache_key *k, vg_kind kind))
{
    switch (vg_req_method(r)) {
    case VG_M_PUT:
        tts_put(r, k);
        break;
    case VG_M_DELETE:
        tts_del(r, k);
        break;
    default:
        get(r, k, VG_KIND_TTS);
    }
}

/* A TTS request past L1 on a remote store (S3), where the audio is a
 * network call: the whole of it, metadata included, on a vg-io thread
 * (its L2 read here and now, not parked on Redis's thread). */
static void tts_io(vg_req *r, void *ud) { tts_method(r, ud, l2_get); }

void vg_api_cache_tts(vg_req *r)
{
    vg_app *app = vg_req_app(r);
    cache_key k;
    if (!query_key(r, VG_KIND_TTS, &k))
        return;
    unsigned m = vg_req_method(r);
    if (vg_blob_is_remote(app->blob)) {
        vg_l1_item *it = m == VG_M_PUT || m == VG_M_DELETE ? NULL : l1_lookup(app, &k);
        if (it) {
            reply_l1_hit(r, it);
            return;
        }
        cache_key *own = malloc(sizeof *own);
        if (!own) {
            vg_reply_error(r, 503, "out_of_memory", "out of memory");
            return;
        }
        *own = k;
        own->parts.hash = own->hash;
        vg_req_offload(r, tts_io, NULL, own, free);
        return;
    }
    tts_method(r, &k, entry_get);
}

/* ---- batch ---- */

/* A batch item's fields: strings as given; ttl_s as an integer. */
typedef struct json_src {
    const cJSON *o;
    char num[24];
} json_src;

static const char *json_field(void *src, const char *name)
{
    json_src *js = src;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(js->o, name);
    if (!it)
        return NULL;
    bool ttl = strcmp(name, "ttl_s") == 0;
    if (cJSON_IsString(it) && !ttl)
        return it->valuestring;
    if (ttl && cJSON_IsNumber(it) && it->valuedouble >= 0 &&
        it->valuedouble < 1e15 && it->valuedouble == (double)(uint64_t)it->valuedouble) {
        snprintf(js->num, sizeof js->num, "%llu", (unsigned long long)it->valuedouble);
        return js->num;
    }
    return bad_type;
}

typedef enum { B_GET, B_SET, B_DEL } bkind;

typedef struct bitem {
    bkind what;
    cache_key k;
    key_err err;
    bool failed;
    vg_l1_item *l1;      /* GET served by L1 */
    int op;              /* index into ops, -1 when none */
    int meta_op;         /* TTS delete: the metadata read */
    vg_buf val;          /* SET: the encoded entry */
} bitem;

/* The same fields the query API takes for that kind, and nothing else. */
static const char *const stt_fields = " kind provider language audio_hash format ";
static const char *const tts_fields = " kind provider language voice text_hash text format ";

static bool item_fields_ok(const cJSON *o, vg_kind kind, bkind what, key_err *e)
{
    for (const cJSON *c = o->child; c; c = c->next) {
        bool ok = what == B_SET && (!strcmp(c->string, "result") || !strcmp(c->string, "ttl_s"));
        if (!ok)
            ok = vg_route_query_allowed(kind == VG_KIND_TTS ? tts_fields : stt_fields, c->string);
        if (!ok)
            return fail(e, "unknown_field", "unknown field '%.64s'", c->string);
    }
    return true;
}

/* raw: the set item's result as its sender wrote it, or NULL (then it is
 * re-serialised from the tree). */
static bool item_parse(vg_app *app, const cJSON *o, const char *raw, size_t rawlen, bitem *b)
{
    key_err *e = &b->err;
    if (!cJSON_IsObject(o))
        return fail(e, "invalid_item", "each item must be an object%s", "");
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    const char *ks = cJSON_IsString(kind) ? kind->valuestring : "";
    vg_kind k = strcmp(ks, "tts") == 0 ? VG_KIND_TTS : VG_KIND_STT;
    if (strcmp(ks, "stt") != 0 && strcmp(ks, "tts") != 0)
        return fail(e, "invalid_parameter", "kind must be \"stt\" or \"tts\"%s", "");
    if (!item_fields_ok(o, k, b->what, e))
        return false;
    if (b->what == B_SET && k != VG_KIND_STT)
        return fail(e, "invalid_parameter", "set items are stt only%s", "");
    json_src js = {.o = o};
    if (!parse_key(app, k, json_field, &js, b->what == B_SET, &b->k, e))
        return false;
    if (b->what != B_SET)
        return true;
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(o, "result");
    if (!res)
        return fail(e, "missing_parameter", "result is required%s", "");
    char *printed = raw ? NULL : cJSON_PrintUnformatted(res);
    if (printed) {
        raw = printed;
        rawlen = strlen(printed);
    }
    int rc = raw ? vg_stt_entry_encode(&b->val, b->k.parts.provider, b->k.parts.language,
                                       vg_clock_ms(), raw, rawlen)
                 : VG_ENOMEM;
    free(printed);
    if (rc != VG_OK)
        return fail(e, "internal", "cannot encode the entry%s", "");
    return true;
}

static int add_op(vg_kv_op *ops, size_t *n, vg_kv_op_type t, const cache_key *k,
                  const vg_buf *val)
{
    ops[*n] = (vg_kv_op){.type = t, .key = k->key, .klen = k->klen, .ttl_ms = k->ttl_ms};
    if (val) {
        ops[*n].val = val->data;
        ops[*n].vlen = val->len;
    }
    return (int)(*n)++;
}

static void err_json(cJSON *o, const key_err *e)
{
    cJSON *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "code", e->code);
    cJSON_AddStringToObject(err, "message", e->msg);
}

static void audio_url(vg_buf *u, const cache_key *k)
{
    const vg_key_parts *p = &k->parts;
    vg_buf_printf(u, "/v1/cache/tts?provider=%s&language=%s&voice=%s&text_hash=%s", p->provider,
                  p->language, p->voice, p->hash);
    if (p->format && *p->format)
        vg_buf_printf(u, "&format=%s", p->format);
}

/* audio_url of a TTS hit: a URL anyone can GET for an hour (presigned
 * by S3, or signed by voxgate for local blobs; issue 8), else the
 * cache-aside query URL. */
static void tts_audio_url(vg_req *r, vg_buf *u, const cache_key *k, const char *sha)
{
    char blob[256];
    uint64_t at;
    tts_blob_name(k, sha, blob);
    if (vg_api_files_signed_url(r, blob, VG_SIGV4_PRESIGN_DEFAULT_S, u, &at) != VG_OK) {
        vg_buf_reset(u);
        audio_url(u, k);
    }
}

static void tts_hit_json(vg_req *r, cJSON *o, const cache_key *k, const char *ct, uint64_t len,
                         const char *sha)
{
    vg_buf u = {0};
    tts_audio_url(r, &u, k, sha);
    cJSON_AddBoolToObject(o, "hit", 1);
    cJSON_AddStringToObject(o, "content_type", ct);
    cJSON_AddNumberToObject(o, "bytes", (double)len);
    cJSON_AddStringToObject(o, "sha256", sha);
    cJSON_AddStringToObject(o, "audio_url", u.data);
    vg_buf_free(&u);
}

static void get_result(vg_req *r, bitem *b, vg_kv_op *ops, cJSON *o)
{
    vg_app *app = vg_req_app(r);
    if (b->l1) {
        if (b->k.parts.kind == VG_KIND_TTS) {
            tts_hit_json(r, o, &b->k, b->l1->ctype, b->l1->len, b->l1->sha256);
            return;
        }
        char *raw = strndup((const char *)b->l1->data, b->l1->len);
        cJSON_AddTrueToObject(o, "hit");
        cJSON_AddRawToObject(o, "result", raw ? raw : "null");
        free(raw);
        return;
    }
    vg_kv_op *op = &ops[b->op];
    if (op->rc == VG_OK) {
        vg_counter_inc(&app->m.l2.hits);
        const char *res;
        size_t rlen;
        uint64_t created;
        vg_tts_meta m;
        if (b->k.parts.kind == VG_KIND_STT &&
            vg_stt_entry_decode(op->out.data, op->out.len, &res, &rlen, &created) == VG_OK) {
            char *raw = strndup(res, rlen);
            cJSON_AddTrueToObject(o, "hit");
            cJSON_AddRawToObject(o, "result", raw ? raw : "null");
            free(raw);
            vg_l1_put(app->l1, b->k.key, b->k.klen, res, rlen, "application/json", NULL,
                      created, op->expires_at_ms);
            return;
        }
        vg_buf audio = {0};
        if (b->k.parts.kind == VG_KIND_TTS &&
            vg_tts_meta_decode(op->out.data, op->out.len, &m) == VG_OK) {
            if (tts_audio(r, &b->k, &m, &audio) == VG_OK) {
                vg_l1_put(app->l1, b->k.key, b->k.klen, audio.data, audio.len, m.content_type,
                          m.sha256, m.created_ms, op->expires_at_ms);
                tts_hit_json(r, o, &b->k, m.content_type, m.size, m.sha256);
                vg_buf_free(&audio);
            } else {
                cJSON_AddFalseToObject(o, "hit");
            }
            return;
        }
        drop_corrupt(r, &b->k, "entry does not decode");
    } else if (op->rc == VG_NOTFOUND) {
        vg_counter_inc(&app->m.l2.misses);
    } else {
        vg_counter_inc(&app->m.l2.errors);
    }
    cJSON_AddFalseToObject(o, "hit");
}

static cJSON *batch_list(const cJSON *doc, const char *name, key_err *e, bool *ok)
{
    cJSON *l = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (l && !cJSON_IsArray(l))
        *ok = fail(e, "invalid_json", "%s must be an array", name);
    return l;
}

/* A set item's result as written in the body: the item's span comes
 * from sets, walked in step with the tree. NULL when there is no such
 * span, or when the text is not strict JSON (cJSON is more lenient than
 * the L2 read path's check): the tree's re-serialisation is stored then. */
static const char *raw_result(vg_json_iter *sets, bool walk, size_t *len)
{
    const char *item, *v;
    size_t ilen;
    if (!walk || !vg_json_next(sets, &item, &ilen) ||
        !vg_json_member(item, ilen, "result", &v, len) || !vg_json_valid(v, *len))
        return NULL;
    return v;
}

/* Parse every item, serve GETs from L1 where possible, and queue the rest
 * as kv ops in the order get, set, delete (one kv round trip). */
static size_t batch_plan(vg_app *app, const char *body, size_t blen, cJSON *lists[3],
                         bitem *items, vg_kv_op *ops)
{
    size_t n = 0, nops = 0;
    const char *sv;
    size_t sl;
    vg_json_iter sets;
    bool walk = vg_json_member(body, blen, "set", &sv, &sl) && vg_json_array(&sets, sv, sl);
    for (int w = 0; w < 3; w++) {
        for (cJSON *o = lists[w] ? lists[w]->child : NULL; o; o = o->next, n++) {
            bitem *b = &items[n];
            *b = (bitem){.what = (bkind)w, .op = -1, .meta_op = -1};
            size_t rl = 0;
            const char *raw = w == B_SET ? raw_result(&sets, walk, &rl) : NULL;
            b->failed = !item_parse(app, o, raw, rl, b);
            if (b->failed)
                continue;
            if (b->what == B_GET) {
                b->l1 = l1_lookup(app, &b->k);
                if (!b->l1)
                    b->op = add_op(ops, &nops, VG_KV_GET, &b->k, NULL);
            } else if (b->what == B_SET) {
                b->op = add_op(ops, &nops, VG_KV_SET, &b->k, &b->val);
            } else if (b->k.parts.kind == VG_KIND_TTS) {
                b->meta_op = add_op(ops, &nops, VG_KV_GET, &b->k, NULL);
            }
        }
    }
    /* Deletes last, after every read of the same batch. */
    for (size_t i = 0; i < n; i++)
        if (items[i].what == B_DEL && !items[i].failed)
            items[i].op = add_op(ops, &nops, VG_KV_DEL, &items[i].k, NULL);
    return nops;
}

static void set_result(vg_app *app, bitem *b, vg_kv_op *ops, cJSON *o)
{
    int rc = ops[b->op].rc;
    if (rc == VG_OK) {
        const char *res;
        size_t rlen;
        uint64_t created;
        vg_counter_inc(&app->m.l2_writes);
        if (vg_stt_entry_decode(b->val.data, b->val.len, &res, &rlen, &created) == VG_OK)
            vg_l1_put(app->l1, b->k.key, b->k.klen, res, rlen, "application/json", NULL,
                      created, created + b->k.ttl_ms);
        cJSON_AddTrueToObject(o, "ok");
        return;
    }
    vg_counter_inc(&app->m.l2_write_errors);
    key_err e = {.code = rc == VG_ETOOBIG ? "entry_too_large" : "cache_unavailable"};
    snprintf(e.msg, sizeof e.msg, "%s", rc == VG_ETOOBIG ? "the entry does not fit in the cache"
                                                         : "the cache store is unavailable");
    cJSON_AddFalseToObject(o, "ok");
    err_json(o, &e);
}

static void del_result(vg_app *app, bitem *b, vg_kv_op *ops, cJSON *o)
{
    bool l1 = vg_l1_del(app->l1, b->k.key, b->k.klen);
    vg_tts_meta m;
    if (b->meta_op >= 0 && ops[b->meta_op].rc == VG_OK &&
        vg_tts_meta_decode(ops[b->meta_op].out.data, ops[b->meta_op].out.len, &m) == VG_OK)
        vg_blob_del(app->blob, m.blob);
    int rc = ops[b->op].rc;
    cJSON_AddBoolToObject(o, "deleted", rc == VG_OK || l1);
    if (rc < 0) {
        key_err e = {.code = "cache_unavailable"};
        snprintf(e.msg, sizeof e.msg, "the cache store is unavailable");
        err_json(o, &e);
    }
}

static cJSON *batch_answer(vg_req *r, bitem *items, size_t n, vg_kv_op *ops)
{
    vg_app *app = vg_req_app(r);
    static const char *const names[] = {"get", "set", "delete"};
    cJSON *ans = cJSON_CreateObject();
    cJSON *arr[3];
    for (int w = 0; w < 3; w++)
        arr[w] = cJSON_AddArrayToObject(ans, names[w]);
    for (size_t i = 0; i < n; i++) {
        bitem *b = &items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr[b->what], o);
        if (b->failed) {
            cJSON_AddFalseToObject(o, b->what == B_GET ? "hit" : b->what == B_SET ? "ok" : "deleted");
            err_json(o, &b->err);
        } else if (b->what == B_GET) {
            get_result(r, b, ops, o);
        } else if (b->what == B_SET) {
            set_result(app, b, ops, o);
        } else {
            del_result(app, b, ops, o);
        }
    }
    return ans;
}

static void batch(vg_req *r, void *ud);
static void free_doc(void *doc) { cJSON_Delete(doc); }

/* Does the batch get or delete a TTS entry? Its audio is then read (to
 * check it) or deleted: an S3 call on a remote store. */
static bool touches_audio(const cJSON *doc)
{
    bool tts = false;
    for (int w = 0; w < 2 && !tts; w++) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(doc, w ? "delete" : "get"), *it;
        if (!cJSON_IsArray(l))
            continue;
        cJSON_ArrayForEach(it, l) {
            const cJSON *kind = cJSON_GetObjectItemCaseSensitive(it, "kind");
            tts |= cJSON_IsString(kind) && strcmp(kind->valuestring, "tts") == 0;
        }
    }
    return tts;
}

void vg_api_cache_batch(vg_req *r)
{
    size_t len;
    const char *body = vg_req_body(r, &len);
    cJSON *doc = vg_json_parse_exact(body, len);
    if (!doc || !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        vg_reply_error(r, 400, "invalid_json", "the body must be a JSON object");
        return;
    }
    if (vg_blob_is_remote(vg_req_app(r)->blob) && touches_audio(doc)) {
        vg_req_offload(r, batch, NULL, doc, free_doc);
        return;
    }
    batch(r, doc);
    cJSON_Delete(doc);
}

/* The batch of doc (the parsed body, which the caller frees). */
static void batch(vg_req *r, void *ud)
{
    cJSON *doc = ud;
    vg_app *app = vg_req_app(r);
    size_t len;
    const char *body = vg_req_body(r, &len);
    key_err e = {0};
    bool ok = true;
    cJSON *lists[3] = {batch_list(doc, "get", &e, &ok), batch_list(doc, "set", &e, &ok),
                       batch_list(doc, "delete", &e, &ok)};
    for (cJSON *c = doc->child; ok && c; c = c->next)
        if (strcmp(c->string, "get") && strcmp(c->string, "set") && strcmp(c->string, "delete"))
            ok = fail(&e, "unknown_field", "unknown field '%.64s'", c->string);
    size_t n = 0;
    for (int w = 0; w < 3; w++)
        n += lists[w] ? (size_t)cJSON_GetArraySize(lists[w]) : 0;
    if (ok && n > app->cfg->cache.batch_max_items) {
        char lim[16];
        snprintf(lim, sizeof lim, "%u", app->cfg->cache.batch_max_items);
        ok = fail(&e, "too_many_items", "a batch holds at most %s items", lim);
    }
    if (!ok) {
        vg_reply_error(r, 400, e.code, "%s", e.msg);
        return;
    }
    bitem *items = calloc(n ? n : 1, sizeof *items);
    vg_kv_op *ops = calloc(n ? 2 * n : 1, sizeof *ops);
    size_t nops = items && ops ? batch_plan(app, body, len, lists, items, ops) : 0;
    int rc = nops ? vg_kv_batch(app->kv, ops, nops) : VG_OK;
    for (size_t i = 0; rc != VG_OK && i < nops; i++)
        ops[i].rc = rc < 0 ? rc : VG_ERR;
    cJSON *ans = items && ops ? batch_answer(r, items, n, ops) : NULL;
    char *out = ans ? cJSON_PrintUnformatted(ans) : NULL;
    if (out)
        vg_reply(r, 200, "application/json", out, strlen(out), NULL, 0);
    else
        vg_reply_error(r, 503, "out_of_memory", "cannot build the batch answer");
    free(out);
    cJSON_Delete(ans);
    for (size_t i = 0; items && i < n; i++) {
        if (items[i].l1)
            vg_l1_release(items[i].l1);
        vg_buf_free(&items[i].val);
    }
    for (size_t i = 0; ops && i < nops; i++)
        vg_buf_free(&ops[i].out);
    free(items);
    free(ops);
}

/* ---- invalidation ---- */

#define INVALIDATE_STEP 512

typedef struct inval {
    const char *pfx;
    size_t plen;
    bool tts;
    size_t n;
    char *keys[INVALIDATE_STEP];
    char *blobs[INVALIDATE_STEP];
} inval;

static int collect(void *ud, const char *key, size_t klen, const void *val, size_t vlen)
{
    inval *iv = ud;
    if (!vg_key_has_provider_prefix(key, klen, iv->pfx, iv->plen))
        return 0;
    vg_tts_meta m;
    iv->blobs[iv->n] = iv->tts && vg_tts_meta_decode(val, vlen, &m) == VG_OK ? strdup(m.blob) : NULL;
    iv->keys[iv->n++] = strndup(key, klen);
    return iv->n == INVALIDATE_STEP;
}

/* Delete one kind's entries of a provider in bounded steps: collect up to
 * INVALIDATE_STEP keys, delete them in one batch, scan again. */
static int invalidate_kind(vg_app *app, vg_kind kind, const char *provider, uint64_t *deleted)
{
    char pfx[VG_KEY_MAX];
    int plen = vg_key_provider_prefix(app->cfg->cache.prefix, kind, provider, pfx, sizeof pfx);
    if (plen < 0)
        return VG_EINVAL;
    vg_l1_del_prefix(app->l1, pfx, (size_t)plen, ":@");
    for (;;) {
        inval iv = {.pfx = pfx, .plen = (size_t)plen, .tts = kind == VG_KIND_TTS};
        int rc = vg_kv_scan(app->kv, pfx, (size_t)plen, collect, &iv);
        vg_kv_op ops[INVALIDATE_STEP];
        for (size_t i = 0; i < iv.n; i++)
            ops[i] = (vg_kv_op){.type = VG_KV_DEL, .key = iv.keys[i], .klen = strlen(iv.keys[i])};
        if (rc >= 0 && iv.n)
            rc = vg_kv_batch(app->kv, ops, iv.n);
        for (size_t i = 0; i < iv.n; i++) {
            if (rc >= 0 && ops[i].rc == VG_OK) {
                (*deleted)++;
                if (iv.blobs[i])
                    vg_blob_del(app->blob, iv.blobs[i]);
            }
            free(iv.keys[i]);
            free(iv.blobs[i]);
        }
        if (rc < 0)
            return rc;
        if (iv.n < INVALIDATE_STEP)
            return VG_OK;
    }
}

static void invalidate(vg_req *r, void *ud);

void vg_api_cache_invalidate(vg_req *r)
{
    vg_api_store_work(r, invalidate); /* it deletes TTS audio */
}

static void invalidate(vg_req *r, void *ud)
{
    (void)ud;
    vg_app *app = vg_req_app(r);
    const char *provider = vg_req_query(r, "provider"), *kind = vg_req_query(r, "kind");
    key_err e;
    if (!ident_field(&e, "provider", provider, true)) {
        vg_reply_error(r, e.status, e.code, "%s", e.msg);
        return;
    }
    if (kind && strcmp(kind, "stt") != 0 && strcmp(kind, "tts") != 0) {
        vg_reply_error(r, 400, "invalid_parameter", "kind must be stt or tts");
        return;
    }
    uint64_t deleted = 0;
    int rc = VG_OK;
    if (!kind || strcmp(kind, "stt") == 0)
        rc = invalidate_kind(app, VG_KIND_STT, provider, &deleted);
    if (rc >= 0 && (!kind || strcmp(kind, "tts") == 0))
        rc = invalidate_kind(app, VG_KIND_TTS, provider, &deleted);
    if (rc < 0) {
        vg_reply_error(r, 503, "cache_unavailable", "the cache store failed after %llu deletions",
                       (unsigned long long)deleted);
        return;
    }
    vg_log(VG_LOG_INFO, vg_req_id(r), "cache invalidated",
           (vg_log_field[]){VG_LS("provider", provider), VG_LS("kind", kind ? kind : "all"),
                            VG_LU("deleted", deleted)}, 3);
    char out[64];
    int n = snprintf(out, sizeof out, "{\"deleted\":%llu}", (unsigned long long)deleted);
    vg_reply(r, 200, "application/json", out, (size_t)n, NULL, 0);
}
