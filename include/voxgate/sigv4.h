/* AWS Signature Version 4 pieces we build ourselves: RFC 3986 encoding,
 * canonical query and request, string to sign, signing key, signature,
 * and presigned (query-auth) URLs. libcurl 7.88 signs headers but signs
 * the path and query exactly as written, so the S3 store uses the
 * encoders here to write them canonically, and presigning is all ours.
 * Pure functions over OpenSSL HMAC/SHA-256; no I/O. */
#ifndef VOXGATE_SIGV4_H
#define VOXGATE_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

#define VG_SIGV4_ALGO "AWS4-HMAC-SHA256"
#define VG_SIGV4_UNSIGNED "UNSIGNED-PAYLOAD"
#define VG_SIGV4_EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define VG_SIGV4_PRESIGN_DEFAULT_S 3600u
#define VG_SIGV4_PRESIGN_MAX_S 604800u /* 7 days: the SigV4 limit */

typedef struct vg_sigv4_kv {
    const char *name;
    const char *value; /* NULL is the same as "" */
} vg_sigv4_kv;

/* A request to sign. Names and values are raw (not encoded); the path
 * is raw too and is encoded here once per segment, '/' kept (S3 style:
 * no normalisation, no double encoding). */
typedef struct vg_sigv4_req {
    const char *method;
    const char *path;
    const vg_sigv4_kv *query;
    size_t nquery;
    const vg_sigv4_kv *headers; /* as sent; names in any case */
    size_t nheaders;
    const char *payload_hash;   /* hex sha256 or UNSIGNED-PAYLOAD */
} vg_sigv4_req;

typedef struct vg_sigv4_cred {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL when none */
    const char *region;
    const char *service;       /* "s3" */
} vg_sigv4_cred;

/* Optional copies of the intermediate strings (tests, debugging). */
typedef struct vg_sigv4_trace {
    vg_buf creq;
    vg_buf sts;
} vg_sigv4_trace;

/* RFC 3986: every byte but A-Z a-z 0-9 - _ . ~ becomes %XX (upper hex);
 * with keep_slash, '/' stays as is (paths). */
int vg_sigv4_encode(vg_buf *out, const char *s, size_t n, bool keep_slash);

/* name=value pairs encoded, sorted by encoded name then value, joined by
 * '&'; a valueless name is written "name=". */
int vg_sigv4_canonical_query(vg_buf *out, const vg_sigv4_kv *q, size_t n);

/* The canonical request, and the signed-header list ("host;x-amz-date").
 * Header names are lower-cased, values trimmed with inner runs of spaces
 * folded to one, repeated names joined with ','. */
int vg_sigv4_canonical_request(const vg_sigv4_req *r, vg_buf *creq, vg_buf *signed_headers);

/* "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex sha256(creq)}" */
int vg_sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                            size_t creq_len, vg_buf *out);

/* HMAC chain "AWS4"+secret -> date(8) -> region -> service -> aws4_request. */
void vg_sigv4_signing_key(const char *secret, const char *date8, const char *region,
                          const char *service, unsigned char out[32]);

/* Header auth: the Authorization header value for r, which must already
 * carry host and x-amz-date (and x-amz-security-token when used). */
int vg_sigv4_authorization(const vg_sigv4_req *r, const vg_sigv4_cred *c, const char *amz_date,
                           vg_buf *out, vg_sigv4_trace *trace);

/* Query auth: the complete query string (no '?') of a presigned URL for
 * r: r's own query plus X-Amz-Algorithm, -Credential, -Date, -Expires,
 * -Security-Token (when set), -SignedHeaders and -Signature. r->headers
 * must include host exactly as clients will send it. */
int vg_sigv4_presign_query(const vg_sigv4_req *r, const vg_sigv4_cred *c, const char *amz_date,
                           unsigned expires_s, vg_buf *out, vg_sigv4_trace *trace);

/* "20130524T000000Z" for a time in ms since the epoch (UTC). */
void vg_sigv4_amz_date(uint64_t ms, char out[17]);

#endif
