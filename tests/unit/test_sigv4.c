/* SigV4 signer against the reference vectors in ../shared/sigv4/ (the
 * directory comes from meson as VG_SIGV4_DIR): AWS's 2015 suite, the
 * aws-c-auth suite in header and query (presign) form, and the Amazon S3
 * documentation examples; plus RFC 3986 encoding edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <sys/stat.h>
#include <strings.h>
#include <unistd.h>

#include "voxgate/keys.h"
#include "voxgate/sigv4.h"

#define MAX_KV 32

static const char *vec_dir(void)
{
    const char *d = getenv("VG_SIGV4_DIR");
    return d && *d ? d : "../shared/sigv4";
}

/* The whole file, or NULL when it does not exist. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    vg_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        vg_buf_append(&b, chunk, n);
    fclose(f);
    vg_buf_puts(&b, "");
    if (len)
        *len = b.len;
    return b.data;
}

static char *slurp_req(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    char *s = slurp(p, NULL);
    if (!s)
        fail_msg("missing vector file %s", p);
    free(p);
    return s;
}

static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < n + 1 && sscanf(s + i + 1, "%2x", &v) == 1) {
            o[j++] = (char)v;
            i += 2;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

/* A raw request of the suites, parsed. Strings are owned. */
typedef struct raw_req {
    char *method, *path;
    vg_sigv4_kv q[MAX_KV], h[MAX_KV + 4];
    size_t nq, nh;
    char *body;
    size_t body_len;
    char amz_date[32];
} raw_req;

static void raw_free(raw_req *r)
{
    free(r->method);
    free(r->path);
    for (size_t i = 0; i < r->nq; i++) {
        free((char *)r->q[i].name);
        free((char *)r->q[i].value);
    }
    for (size_t i = 0; i < r->nh; i++) {
        free((char *)r->h[i].name);
        free((char *)r->h[i].value);
    }
    free(r->body);
}

static void parse_query(raw_req *r, const char *q)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', n);
        size_t nl = eq ? (size_t)(eq - q) : n;
        assert_true(r->nq < MAX_KV);
        r->q[r->nq].name = pct_decode(q, nl);
        r->q[r->nq].value = eq ? pct_decode(eq + 1, n - nl - 1) : strdup("");
        r->nq++;
        q += n + (amp ? 1 : 0);
    }
}

/* Folded header lines are joined with fold (the two suites differ). */
static void add_header_line(raw_req *r, const char *line, size_t n, const char *fold)
{
    if ((line[0] == ' ' || line[0] == '\t') && r->nh) {
        size_t i = 0;
        while (i < n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        vg_buf v = {0};
        vg_buf_puts(&v, r->h[r->nh - 1].value);
        vg_buf_puts(&v, fold);
        vg_buf_append(&v, line + i, n - i);
        free((char *)r->h[r->nh - 1].value);
        r->h[r->nh - 1].value = v.data;
        return;
    }
    const char *colon = memchr(line, ':', n);
    assert_non_null(colon);
    assert_true(r->nh < MAX_KV);
    r->h[r->nh].name = strndup(line, (size_t)(colon - line));
    r->h[r->nh].value = strndup(colon + 1, n - (size_t)(colon - line) - 1);
    if (strcasecmp(r->h[r->nh].name, "x-amz-date") == 0)
        snprintf(r->amz_date, sizeof r->amz_date, "%s", r->h[r->nh].value);
    r->nh++;
}

static void parse_raw(const char *text, const char *fold, raw_req *r)
{
    memset(r, 0, sizeof *r);
    const char *eol = strchr(text, '\n');
    assert_non_null(eol);
    const char *sp = strchr(text, ' ');
    const char *ver = strstr(text, " HTTP/");
    assert_true(sp && ver && ver < eol);
    r->method = strndup(text, (size_t)(sp - text));
    char *target = strndup(sp + 1, (size_t)(ver - sp - 1));
    char *qm = strchr(target, '?');
    if (qm) {
        *qm = '\0';
        parse_query(r, qm + 1);
    }
    r->path = pct_decode(target, strlen(target));
    free(target);
    const char *p = eol + 1;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0) {
            p = e ? e + 1 : p + strlen(p);
            break;
        }
        add_header_line(r, p, n, fold);
        p = e ? e + 1 : p + n;
    }
    r->body_len = strlen(p);
    r->body = strdup(p);
}

static void add_header(raw_req *r, const char *name, const char *value)
{
    r->h[r->nh].name = strdup(name);
    r->h[r->nh].value = strdup(value);
    r->nh++;
}

static void strip_nl(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* ---- AWS 2015 suite (.req/.creq/.sts/.authz) ---- */

static const vg_sigv4_cred suite_cred = {
    .access_key = "AKIDEXAMPLE",
    .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "service",
};

static void check_2015_case(const char *dir, const char *name)
{
    char f[512];
    snprintf(f, sizeof f, "%s.req", name);
    char *text = slurp_req(dir, f);
    raw_req r;
    parse_raw(text, ",", &r);
    char payload[VG_SHA256_HEX + 1];
    vg_sha256_hex(r.body, r.body_len, payload);
    vg_sigv4_req q = {r.method, r.path, r.q, r.nq, r.h, r.nh, payload};
    vg_buf authz = {0};
    vg_sigv4_trace tr = {0};
    assert_int_equal(vg_sigv4_authorization(&q, &suite_cred, r.amz_date, &authz, &tr), VG_OK);
    snprintf(f, sizeof f, "%s.creq", name);
    char *creq = slurp_req(dir, f);
    snprintf(f, sizeof f, "%s.sts", name);
    char *sts = slurp_req(dir, f);
    snprintf(f, sizeof f, "%s.authz", name);
    char *want = slurp_req(dir, f);
    strip_nl(want);
    if (strcmp(tr.creq.data, creq) || strcmp(tr.sts.data, sts) || strcmp(authz.data, want))
        fail_msg("%s/%s:\n--- creq\n%s\n--- want\n%s\n--- authz %s\n--- want  %s", dir, name,
                 tr.creq.data, creq, authz.data, want);
    free(creq);
    free(sts);
    free(want);
    free(text);
    vg_buf_free(&authz);
    vg_buf_free(&tr.creq);
    vg_buf_free(&tr.sts);
    raw_free(&r);
}

static int walk_2015(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (VG_SIGV4_DIR=%s)", dir, vec_dir());
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        /* S3 never normalises paths ("a/./b" and "a//b" are distinct keys),
         * so the path-normalising cases do not apply to this signer. */
        if (strcmp(e->d_name, "normalize-path") == 0)
            continue;
        char *sub = NULL, *req = NULL;
        assert_true(asprintf(&sub, "%s/%s", dir, e->d_name) > 0);
        assert_true(asprintf(&req, "%s/%s.req", sub, e->d_name) > 0);
        struct stat st;
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (access(req, R_OK) == 0) {
                check_2015_case(sub, e->d_name);
                n++;
            } else if (depth < 2) {
                n += walk_2015(sub, depth + 1);
            }
        }
        free(sub);
        free(req);
    }
    closedir(d);
    return n;
}

static void suite_2015(void **state)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/aws-sig-v4-test-suite", vec_dir());
    int n = walk_2015(dir, 0);
    /* 31 cases, 7 of them path normalisation: 24 apply. */
    assert_int_equal(n, 24);
}

/* ---- aws-c-auth suite: header and query forms ---- */

static void c_auth_header(const char *dir, raw_req *r, const vg_sigv4_cred *c,
                          const char *amz, bool sign_body, const char *payload)
{
    size_t base = r->nh;
    add_header(r, "X-Amz-Date", amz);
    if (c->session_token)
        add_header(r, "X-Amz-Security-Token", c->session_token);
    if (sign_body)
        add_header(r, "X-Amz-Content-Sha256", payload);
    vg_sigv4_req q = {r->method, r->path, r->q, r->nq, r->h, r->nh, payload};
    vg_buf authz = {0};
    vg_sigv4_trace tr = {0};
    assert_int_equal(vg_sigv4_authorization(&q, c, amz, &authz, &tr), VG_OK);
    char *creq = slurp_req(dir, "header-canonical-request.txt");
    char *sts = slurp_req(dir, "header-string-to-sign.txt");
    char *sig = slurp_req(dir, "header-signature.txt");
    strip_nl(sig);
    const char *got = strstr(authz.data, "Signature=") + 10;
    if (strcmp(tr.creq.data, creq) || strcmp(tr.sts.data, sts) || strcmp(got, sig))
        fail_msg("%s header:\n%s\n--- want\n%s\n--- sig %s want %s", dir, tr.creq.data, creq, got,
                 sig);
    free(creq);
    free(sts);
    free(sig);
    vg_buf_free(&authz);
    vg_buf_free(&tr.creq);
    vg_buf_free(&tr.sts);
    while (r->nh > base) {
        r->nh--;
        free((char *)r->h[r->nh].name);
        free((char *)r->h[r->nh].value);
    }
}

static void c_auth_query(const char *dir, raw_req *r, const vg_sigv4_cred *c, const char *amz,
                         unsigned expires, const char *payload)
{
    vg_sigv4_req q = {r->method, r->path, r->q, r->nq, r->h, r->nh, payload};
    vg_buf qs = {0};
    vg_sigv4_trace tr = {0};
    assert_int_equal(vg_sigv4_presign_query(&q, c, amz, expires, &qs, &tr), VG_OK);
    char *creq = slurp_req(dir, "query-canonical-request.txt");
    char *sts = slurp_req(dir, "query-string-to-sign.txt");
    char *sig = slurp_req(dir, "query-signature.txt");
    strip_nl(sig);
    const char *got = strstr(qs.data, "X-Amz-Signature=") + 16;
    if (strcmp(tr.creq.data, creq) || strcmp(tr.sts.data, sts) || strcmp(got, sig))
        fail_msg("%s query:\n%s\n--- want\n%s\n--- sig %s want %s", dir, tr.creq.data, creq, got,
                 sig);
    free(creq);
    free(sts);
    free(sig);
    vg_buf_free(&qs);
    vg_buf_free(&tr.creq);
    vg_buf_free(&tr.sts);
}

static void c_auth_case(const char *dir)
{
    char *ctx_text = slurp_req(dir, "context.json");
    cJSON *ctx = cJSON_Parse(ctx_text);
    assert_non_null(ctx);
    cJSON *cr = cJSON_GetObjectItem(ctx, "credentials");
    cJSON *tok = cJSON_GetObjectItem(cr, "token");
    /* post-sts-header-after: the token is added after signing, unsigned. */
    if (cJSON_IsTrue(cJSON_GetObjectItem(ctx, "omit_session_token")))
        tok = NULL;
    vg_sigv4_cred c = {
        .access_key = cJSON_GetObjectItem(cr, "access_key_id")->valuestring,
        .secret_key = cJSON_GetObjectItem(cr, "secret_access_key")->valuestring,
        .session_token = tok ? tok->valuestring : NULL,
        .region = cJSON_GetObjectItem(ctx, "region")->valuestring,
        .service = cJSON_GetObjectItem(ctx, "service")->valuestring,
    };
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    const char *ts = cJSON_GetObjectItem(ctx, "timestamp")->valuestring;
    char amz[17];
    snprintf(amz, sizeof amz, "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11, ts + 14,
             ts + 17);
    bool sign_body = cJSON_IsTrue(cJSON_GetObjectItem(ctx, "sign_body"));
    unsigned expires = (unsigned)cJSON_GetObjectItem(ctx, "expiration_in_seconds")->valueint;
    char *text = slurp_req(dir, "request.txt");
    raw_req r;
    parse_raw(text, " ", &r);
    char payload[VG_SHA256_HEX + 1];
    vg_sha256_hex(r.body, r.body_len, payload);
    c_auth_header(dir, &r, &c, amz, sign_body, payload);
    c_auth_query(dir, &r, &c, amz, expires, payload);
    raw_free(&r);
    free(text);
    cJSON_Delete(ctx);
    free(ctx_text);
}

static void suite_c_auth(void **state)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/aws-c-auth-v4", vec_dir());
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    int n = 0, skipped = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(e->d_name);
        /* "-normalized" cases expect "/a/./b" to be signed as "/a/b"; S3
         * signs the path as sent, so only the "-unnormalized" twins apply. */
        if (len > 11 && strcmp(e->d_name + len - 11, "-normalized") == 0) {
            skipped++;
            continue;
        }
        char *sub = NULL;
        assert_true(asprintf(&sub, "%s/%s", dir, e->d_name) > 0);
        c_auth_case(sub);
        free(sub);
        n++;
    }
    closedir(d);
    assert_int_equal(skipped, 7);
    assert_true(n >= 25);
}

/* ---- the Amazon S3 documentation examples ---- */

static void s3_doc_vector(cJSON *v, const vg_sigv4_cred *c)
{
    const char *mode = cJSON_GetObjectItem(v, "mode")->valuestring;
    const char *amz = cJSON_GetObjectItem(v, "x_amz_date")->valuestring;
    const char *payload = cJSON_GetObjectItem(v, "payload_hash")->valuestring;
    vg_sigv4_kv h[8], q[8];
    size_t nh = 0, nq = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(v, "headers")) h[nh++] =
        (vg_sigv4_kv){it->string, it->valuestring};
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(v, "query")) q[nq++] =
        (vg_sigv4_kv){cJSON_GetArrayItem(it, 0)->valuestring, cJSON_GetArrayItem(it, 1)->valuestring};
    bool presign = strcmp(mode, "presign") == 0;
    if (!presign) {
        h[nh++] = (vg_sigv4_kv){"x-amz-content-sha256", payload};
        h[nh++] = (vg_sigv4_kv){"x-amz-date", amz};
    }
    vg_sigv4_req r = {cJSON_GetObjectItem(v, "method")->valuestring,
                      cJSON_GetObjectItem(v, "path")->valuestring, q, nq, h, nh, payload};
    vg_buf out = {0};
    vg_sigv4_trace tr = {0};
    if (presign)
        assert_int_equal(vg_sigv4_presign_query(&r, c, amz,
                                                (unsigned)cJSON_GetObjectItem(v, "expires")->valueint,
                                                &out, &tr), VG_OK);
    else
        assert_int_equal(vg_sigv4_authorization(&r, c, amz, &out, &tr), VG_OK);
    assert_string_equal(tr.creq.data, cJSON_GetObjectItem(v, "canonical_request")->valuestring);
    assert_string_equal(tr.sts.data, cJSON_GetObjectItem(v, "string_to_sign")->valuestring);
    char h256[VG_SHA256_HEX + 1];
    vg_sha256_hex(tr.creq.data, tr.creq.len, h256);
    cJSON *want_h = cJSON_GetObjectItem(v, "expected_canonical_request_sha256");
    if (want_h)
        assert_string_equal(h256, want_h->valuestring);
    const char *want_sig = cJSON_GetObjectItem(v, "expected_signature")->valuestring;
    if (presign) {
        /* The whole URL: the query string must be exactly the documented one. */
        const char *url = cJSON_GetObjectItem(v, "url")->valuestring;
        assert_string_equal(out.data, strchr(url, '?') + 1);
        assert_non_null(strstr(out.data, want_sig));
    } else {
        assert_string_equal(out.data, cJSON_GetObjectItem(v, "authorization")->valuestring);
    }
    vg_buf_free(&out);
    vg_buf_free(&tr.creq);
    vg_buf_free(&tr.sts);
}

static void s3_doc_vectors(void **state)
{
    char p[600];
    snprintf(p, sizeof p, "%s/s3-doc-vectors.json", vec_dir());
    char *text = slurp(p, NULL);
    assert_non_null(text);
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    cJSON *cr = cJSON_GetObjectItem(doc, "credentials");
    vg_sigv4_cred c = {.access_key = cJSON_GetObjectItem(cr, "access_key_id")->valuestring,
                       .secret_key = cJSON_GetObjectItem(cr, "secret_access_key")->valuestring,
                       .region = "us-east-1", .service = "s3"};
    int n = 0, presigns = 0;
    cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(doc, "vectors")) {
        c.region = cJSON_GetObjectItem(v, "region")->valuestring;
        s3_doc_vector(v, &c);
        presigns += strcmp(cJSON_GetObjectItem(v, "mode")->valuestring, "presign") == 0;
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(presigns, 1);
    cJSON_Delete(doc);
    free(text);
}

/* ---- encoding and bounds ---- */

static void enc(const char *in, bool slash, const char *want)
{
    vg_buf b = {0};
    assert_int_equal(vg_sigv4_encode(&b, in, strlen(in), slash), VG_OK);
    assert_string_equal(b.data, want);
    vg_buf_free(&b);
}

static void uri_encoding(void **state)
{
    enc("hello world+\xc3\xa9.wav", true, "hello%20world%2B%C3%A9.wav");
    enc("a~b_c-d.e", false, "a~b_c-d.e");
    enc("dir/sub/file name", true, "dir/sub/file%20name");
    enc("dir/sub", false, "dir%2Fsub");
    enc("p(1)*!'", false, "p%281%29%2A%21%27");
    enc("=&?#%", false, "%3D%26%3F%23%25");
    enc("\xe1\x88\xb4", false, "%E1%88%B4");
    enc("", false, "");
}

static void canonical_query(void **state)
{
    vg_sigv4_kv q[] = {{"prefix", "probe/a b+c"}, {"list-type", "2"}, {"max-keys", "10"},
                       {"delete", NULL}, {"continuation-token", "x~y"}};
    vg_buf b = {0};
    assert_int_equal(vg_sigv4_canonical_query(&b, q, 5), VG_OK);
    assert_string_equal(b.data, "continuation-token=x~y&delete=&list-type=2&max-keys=10"
                                "&prefix=probe%2Fa%20b%2Bc");
    vg_buf_free(&b);
    /* Same name: ordered by value. */
    vg_sigv4_kv d[] = {{"a", "b"}, {"a", "B"}, {"A", "z"}};
    assert_int_equal(vg_sigv4_canonical_query(&b, d, 3), VG_OK);
    assert_string_equal(b.data, "A=z&a=B&a=b");
    vg_buf_free(&b);
}

static void presign_bounds(void **state)
{
    vg_sigv4_kv h[] = {{"host", "127.0.0.1:9000"}};
    vg_sigv4_req r = {"GET", "/bucket/k", NULL, 0, h, 1, VG_SIGV4_UNSIGNED};
    vg_sigv4_cred c = {"AK", "SK", NULL, "us-east-1", "s3"};
    vg_buf b = {0};
    assert_int_equal(vg_sigv4_presign_query(&r, &c, "20260101T000000Z", 0, &b, NULL), VG_EINVAL);
    assert_int_equal(vg_sigv4_presign_query(&r, &c, "20260101T000000Z", 604801, &b, NULL),
                     VG_EINVAL);
    assert_int_equal(vg_sigv4_presign_query(&r, &c, "20260101T000000Z", 604800, &b, NULL), VG_OK);
    assert_non_null(strstr(b.data, "X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Signature="));
    assert_non_null(strstr(b.data, "X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"));
    /* Another host gives another signature: the host is signed. */
    vg_buf b2 = {0};
    vg_sigv4_kv h2[] = {{"host", "127.0.0.1:9001"}};
    r.headers = h2;
    assert_int_equal(vg_sigv4_presign_query(&r, &c, "20260101T000000Z", 604800, &b2, NULL), VG_OK);
    assert_string_not_equal(b.data, b2.data);
    vg_buf_free(&b);
    vg_buf_free(&b2);
}

static void amz_date(void **state)
{
    char d[17];
    vg_sigv4_amz_date(1369353600000ull, d); /* 2013-05-24 00:00:00 UTC */
    assert_string_equal(d, "20130524T000000Z");
    vg_sigv4_amz_date(1440938160000ull, d);
    assert_string_equal(d, "20150830T123600Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uri_encoding),
        cmocka_unit_test(canonical_query),
        cmocka_unit_test(presign_bounds),
        cmocka_unit_test(amz_date),
        cmocka_unit_test(suite_2015),
        cmocka_unit_test(suite_c_auth),
        cmocka_unit_test(s3_doc_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
