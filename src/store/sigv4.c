/* AWS SigV4: canonical forms, signing key and signatures, presigned query
 * strings. Written for S3 semantics: paths are encoded once per segment
 * and never normalised (S3 keys may hold "//" or "."). */
#include "voxgate/sigv4.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "voxgate/keys.h"

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

int vg_sigv4_encode(vg_buf *out, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    if (vg_buf_reserve(out, n * 3) != VG_OK)
        return VG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            out->data[out->len++] = (char)c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = hex[c >> 4];
            out->data[out->len++] = hex[c & 15];
        }
    }
    out->data[out->len] = '\0';
    return VG_OK;
}

/* ---- canonical query ---- */

typedef struct enc_pair {
    vg_buf name, value;
} enc_pair;

static int cmp_pair(const void *a, const void *b)
{
    const enc_pair *x = a, *y = b;
    int c = strcmp(x->name.data, y->name.data);
    return c ? c : strcmp(x->value.data, y->value.data);
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

int vg_sigv4_canonical_query(vg_buf *out, const vg_sigv4_kv *q, size_t n)
{
    if (n == 0)
        return vg_buf_puts(out, "");
    enc_pair *p = calloc(n, sizeof *p);
    if (!p)
        return VG_ENOMEM;
    int rc = VG_OK;
    for (size_t i = 0; i < n && rc == VG_OK; i++) {
        const char *v = str_or_empty(q[i].value);
        rc = vg_sigv4_encode(&p[i].name, q[i].name, strlen(q[i].name), false);
        if (rc == VG_OK)
            rc = vg_sigv4_encode(&p[i].value, v, strlen(v), false);
    }
    if (rc == VG_OK) {
        qsort(p, n, sizeof *p, cmp_pair);
        for (size_t i = 0; i < n && rc == VG_OK; i++)
            rc = vg_buf_printf(out, "%s%s=%s", i ? "&" : "", p[i].name.data, p[i].value.data);
    }
    for (size_t i = 0; i < n; i++) {
        vg_buf_free(&p[i].name);
        vg_buf_free(&p[i].value);
    }
    free(p);
    return rc;
}

/* ---- canonical headers ---- */

typedef struct canon_hdr {
    char *name;  /* lower-case */
    vg_buf value;
    size_t order; /* keeps repeated names in the order they were sent */
} canon_hdr;

static int cmp_hdr(const void *a, const void *b)
{
    const canon_hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}

/* Trim and fold runs of whitespace (including folded line breaks) to one space. */
static int trim_value(vg_buf *out, const char *v)
{
    bool space = false, any = false;
    for (const char *p = v; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            space = any;
            continue;
        }
        if (space && vg_buf_append(out, " ", 1) != VG_OK)
            return VG_ENOMEM;
        if (vg_buf_append(out, p, 1) != VG_OK)
            return VG_ENOMEM;
        space = false;
        any = true;
    }
    return vg_buf_puts(out, "");
}

static int headers_block(const vg_sigv4_kv *h, size_t n, vg_buf *creq, vg_buf *signed_headers)
{
    canon_hdr *c = calloc(n ? n : 1, sizeof *c);
    if (!c)
        return VG_ENOMEM;
    int rc = VG_OK;
    for (size_t i = 0; i < n && rc == VG_OK; i++) {
        c[i].order = i;
        c[i].name = strdup(h[i].name);
        if (!c[i].name) {
            rc = VG_ENOMEM;
            break;
        }
        for (char *p = c[i].name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        rc = trim_value(&c[i].value, str_or_empty(h[i].value));
    }
    if (rc == VG_OK)
        qsort(c, n, sizeof *c, cmp_hdr);
    for (size_t i = 0; i < n && rc == VG_OK; i++) {
        bool same_as_prev = i > 0 && strcmp(c[i].name, c[i - 1].name) == 0;
        bool same_as_next = i + 1 < n && strcmp(c[i].name, c[i + 1].name) == 0;
        if (!same_as_prev) {
            rc = vg_buf_printf(creq, "%s:", c[i].name);
            if (rc == VG_OK)
                rc = vg_buf_printf(signed_headers, "%s%s", signed_headers->len ? ";" : "",
                                   c[i].name);
        }
        if (rc == VG_OK)
            rc = vg_buf_printf(creq, "%s%s", c[i].value.data, same_as_next ? "," : "\n");
    }
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        vg_buf_free(&c[i].value);
    }
    free(c);
    return rc;
}

int vg_sigv4_canonical_request(const vg_sigv4_req *r, vg_buf *creq, vg_buf *signed_headers)
{
    vg_buf_reset(creq);
    vg_buf_reset(signed_headers);
    const char *path = r->path && *r->path ? r->path : "/";
    int rc = vg_buf_printf(creq, "%s\n", r->method);
    if (rc == VG_OK)
        rc = vg_sigv4_encode(creq, path, strlen(path), true);
    if (rc == VG_OK)
        rc = vg_buf_puts(creq, "\n");
    if (rc == VG_OK)
        rc = vg_sigv4_canonical_query(creq, r->query, r->nquery);
    if (rc == VG_OK)
        rc = vg_buf_puts(creq, "\n");
    if (rc == VG_OK)
        rc = headers_block(r->headers, r->nheaders, creq, signed_headers);
    if (rc == VG_OK)
        rc = vg_buf_printf(creq, "\n%s\n%s", signed_headers->data ? signed_headers->data : "",
                           str_or_empty(r->payload_hash));
    return rc;
}

/* ---- string to sign, key, signature ---- */

int vg_sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                            size_t creq_len, vg_buf *out)
{
    char h[VG_SHA256_HEX + 1];
    vg_sha256_hex(creq, creq_len, h);
    vg_buf_reset(out);
    return vg_buf_printf(out, "%s\n%s\n%s\n%s", VG_SIGV4_ALGO, amz_date, scope, h);
}

static void hmac(const void *key, size_t klen, const char *msg, size_t mlen, unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &n);
}

void vg_sigv4_signing_key(const char *secret, const char *date8, const char *region,
                          const char *service, unsigned char out[32])
{
    size_t slen = strlen(secret);
    char *k0 = malloc(slen + 5);
    unsigned char k[32];
    if (!k0) {
        memset(out, 0, 32);
        return;
    }
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, slen + 1);
    hmac(k0, slen + 4, date8, strlen(date8), k);
    free(k0);
    hmac(k, 32, region, strlen(region), k);
    hmac(k, 32, service, strlen(service), k);
    hmac(k, 32, "aws4_request", 12, out);
}

/* scope "date/region/service/aws4_request" and the hex signature of sts. */
static void scope_of(const vg_sigv4_cred *c, const char *amz_date, char *scope, size_t cap)
{
    snprintf(scope, cap, "%.8s/%s/%s/aws4_request", amz_date, c->region, c->service);
}

static int sign_creq(const vg_sigv4_cred *c, const char *amz_date, const vg_buf *creq,
                     char sig[VG_SHA256_HEX + 1], vg_sigv4_trace *trace)
{
    char scope[256], date8[9];
    scope_of(c, amz_date, scope, sizeof scope);
    snprintf(date8, sizeof date8, "%.8s", amz_date);
    vg_buf sts = {0};
    int rc = vg_sigv4_string_to_sign(amz_date, scope, creq->data, creq->len, &sts);
    if (rc == VG_OK) {
        unsigned char key[32], mac[32];
        vg_sigv4_signing_key(c->secret_key, date8, c->region, c->service, key);
        hmac(key, 32, sts.data, sts.len, mac);
        vg_hex_lower(mac, 32, sig);
        if (trace) {
            vg_buf_reset(&trace->creq);
            vg_buf_reset(&trace->sts);
            vg_buf_append(&trace->creq, creq->data, creq->len);
            vg_buf_append(&trace->sts, sts.data, sts.len);
        }
    }
    vg_buf_free(&sts);
    return rc;
}

int vg_sigv4_authorization(const vg_sigv4_req *r, const vg_sigv4_cred *c, const char *amz_date,
                           vg_buf *out, vg_sigv4_trace *trace)
{
    vg_buf creq = {0}, sh = {0};
    char sig[VG_SHA256_HEX + 1], scope[256];
    int rc = vg_sigv4_canonical_request(r, &creq, &sh);
    if (rc == VG_OK)
        rc = sign_creq(c, amz_date, &creq, sig, trace);
    if (rc == VG_OK) {
        scope_of(c, amz_date, scope, sizeof scope);
        vg_buf_reset(out);
        rc = vg_buf_printf(out, "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                           VG_SIGV4_ALGO, c->access_key, scope, sh.data, sig);
    }
    vg_buf_free(&creq);
    vg_buf_free(&sh);
    return rc;
}

/* The signed-header list of r, computed alone (it is part of the query). */
static int signed_header_list(const vg_sigv4_req *r, vg_buf *sh)
{
    vg_buf creq = {0};
    vg_sigv4_req bare = *r;
    bare.nquery = 0;
    int rc = vg_sigv4_canonical_request(&bare, &creq, sh);
    vg_buf_free(&creq);
    return rc;
}

int vg_sigv4_presign_query(const vg_sigv4_req *r, const vg_sigv4_cred *c, const char *amz_date,
                           unsigned expires_s, vg_buf *out, vg_sigv4_trace *trace)
{
    if (expires_s == 0 || expires_s > VG_SIGV4_PRESIGN_MAX_S)
        return VG_EINVAL;
    size_t n = r->nquery + 6;
    vg_sigv4_kv *q = calloc(n, sizeof *q);
    if (!q)
        return VG_ENOMEM;
    vg_buf sh = {0}, cred = {0}, creq = {0}, shdr = {0};
    char scope[256], exp[16], sig[VG_SHA256_HEX + 1];
    scope_of(c, amz_date, scope, sizeof scope);
    snprintf(exp, sizeof exp, "%u", expires_s);
    int rc = signed_header_list(r, &sh);
    if (rc == VG_OK)
        rc = vg_buf_printf(&cred, "%s/%s", c->access_key, scope);
    size_t k = 0;
    for (; k < r->nquery; k++)
        q[k] = r->query[k];
    q[k++] = (vg_sigv4_kv){"X-Amz-Algorithm", VG_SIGV4_ALGO};
    q[k++] = (vg_sigv4_kv){"X-Amz-Credential", cred.data};
    q[k++] = (vg_sigv4_kv){"X-Amz-Date", amz_date};
    q[k++] = (vg_sigv4_kv){"X-Amz-Expires", exp};
    q[k++] = (vg_sigv4_kv){"X-Amz-SignedHeaders", sh.data};
    if (c->session_token && *c->session_token)
        q[k++] = (vg_sigv4_kv){"X-Amz-Security-Token", c->session_token};
    vg_sigv4_req full = *r;
    full.query = q;
    full.nquery = k;
    if (rc == VG_OK)
        rc = vg_sigv4_canonical_request(&full, &creq, &shdr);
    if (rc == VG_OK)
        rc = sign_creq(c, amz_date, &creq, sig, trace);
    if (rc == VG_OK) {
        vg_buf_reset(out);
        rc = vg_sigv4_canonical_query(out, q, k);
    }
    if (rc == VG_OK)
        rc = vg_buf_printf(out, "&X-Amz-Signature=%s", sig);
    vg_buf_free(&sh);
    vg_buf_free(&cred);
    vg_buf_free(&creq);
    vg_buf_free(&shdr);
    free(q);
    return rc;
}

void vg_sigv4_amz_date(uint64_t ms, char out[17])
{
    time_t t = (time_t)(ms / 1000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}
