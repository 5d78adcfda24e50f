/* Cache keys (SPEC §4): SHA-256 helpers, the identifier and hash rules
 * that keep user input from injecting separators or glob characters into
 * keys, the canonical key builder, and the canonical parameter hash that
 * gives requests with different output-affecting parameters different
 * keys. */
#include "voxgate/keys.h"

/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of
 * EVP, but EVP looks the algorithm up under a global lock on every
 * digest (SHA256() one-shot included) and allocates a context: measured
 * here, 340 ns a 64-byte digest against 72 ns, and 600-700 ns with two
 * threads hashing at once. The low-level calls run the same assembly,
 * allocate nothing and cannot fail. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "voxgate/util.h"

/* ---- SHA-256 ---- */

void vg_hex_lower(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void vg_sha256_raw(const void *data, size_t len, unsigned char out[32])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, data, len);
    SHA256_Final(out, &c);
}

int vg_sha256_fd(int fd, uint64_t off, uint64_t len, unsigned char out[32])
{
    unsigned char buf[64 * 1024];
    SHA256_CTX c;
    SHA256_Init(&c);
    while (len > 0) {
        ssize_t r = pread(fd, buf, len < sizeof buf ? (size_t)len : sizeof buf, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return VG_ERR; /* errno says why */
        if (r == 0)
            return VG_ECORRUPT;
        SHA256_Update(&c, buf, (size_t)r);
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    SHA256_Final(out, &c);
    return VG_OK;
}

void vg_sha256_hex(const void *data, size_t len, char out[VG_SHA256_HEX + 1])
{
    unsigned char md[32];
    vg_sha256_raw(data, len, md);
    vg_hex_lower(md, sizeof md, out);
}

/* ---- validation ---- */

static bool ident_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool vg_ident_valid(const char *s)
{
    if (!s)
        return false;
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= VG_IDENT_MAX || !ident_char((unsigned char)s[i]))
            return false;
    return i > 0;
}

bool vg_hash_valid(const char *s)
{
    if (!s)
        return false;
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= VG_SHA256_HEX || hex_val((unsigned char)s[i]) < 0)
            return false;
    return i == VG_SHA256_HEX;
}

void vg_hash_normalize(const char *in, char out[VG_SHA256_HEX + 1])
{
    for (size_t i = 0; i < VG_SHA256_HEX; i++) {
        char c = in[i];
        out[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    out[VG_SHA256_HEX] = '\0';
}

/* ---- keys ---- */

static const char *kind_name(vg_kind k)
{
    return k == VG_KIND_STT ? "stt" : k == VG_KIND_TTS ? "tts" : NULL;
}

/* snprintf's result turned into the "length or -1" contract. */
static int fit(int n, char *out, size_t cap)
{
    if (n < 0 || (size_t)n >= cap) {
        if (cap)
            out[0] = '\0';
        return -1;
    }
    return n;
}

static bool parts_valid(const char *prefix, const vg_key_parts *p)
{
    if (!vg_ident_valid(prefix) || !kind_name(p->kind) || !vg_ident_valid(p->provider) ||
        !vg_ident_valid(p->language) || !vg_hash_valid(p->hash))
        return false;
    if (p->kind == VG_KIND_TTS && !vg_ident_valid(p->voice))
        return false;
    return !p->format || !p->format[0] || vg_ident_valid(p->format);
}

int vg_key_build(const char *prefix, const vg_key_parts *p, char *out, size_t cap)
{
    if (!p || !out || !parts_valid(prefix, p)) {
        if (out && cap)
            out[0] = '\0';
        return -1;
    }
    /* Hashes are accepted in either case but keys are canonical, or the
     * same audio would be cached twice. */
    char hash[VG_SHA256_HEX + 1];
    vg_hash_normalize(p->hash, hash);
    char epoch[16] = "";
    if (p->epoch > 0)
        snprintf(epoch, sizeof epoch, "@%u", p->epoch);
    bool fmt = p->format && p->format[0];
    int n;
    if (p->kind == VG_KIND_STT)
        n = snprintf(out, cap, "%s:stt:%s%s:%s:%s%s%s", prefix, p->provider, epoch, p->language,
                     hash, fmt ? ":" : "", fmt ? p->format : "");
    else
        n = snprintf(out, cap, "%s:tts:%s%s:%s:%s:%s%s%s", prefix, p->provider, epoch,
                     p->language, p->voice, hash, fmt ? ":" : "", fmt ? p->format : "");
    return fit(n, out, cap);
}

int vg_key_provider_prefix(const char *prefix, vg_kind kind, const char *provider, char *out,
                           size_t cap)
{
    if (!out)
        return -1;
    if (!vg_ident_valid(prefix) || !kind_name(kind) || !vg_ident_valid(provider))
        return fit(-1, out, cap);
    return fit(snprintf(out, cap, "%s:%s:%s", prefix, kind_name(kind), provider), out, cap);
}

bool vg_key_has_provider_prefix(const char *key, size_t klen, const char *pfx, size_t plen)
{
    /* The byte after the prefix must end the provider name, or "openai"
     * would also claim every key of "openai2". */
    return klen > plen && memcmp(key, pfx, plen) == 0 && (key[plen] == ':' || key[plen] == '@');
}

/* ---- canonical parameter hash ---- */

static int param_cmp(const void *a, const void *b)
{
    const vg_param *x = *(const vg_param *const *)a, *y = *(const vg_param *const *)b;
    return strcmp(x->name, y->name); /* strcmp compares as unsigned char: bytewise */
}

static int hash_u32_str(SHA256_CTX *ctx, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT32_MAX)
        return -1;
    unsigned char be[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                           (unsigned char)(n >> 8), (unsigned char)n};
    SHA256_Update(ctx, be, 4);
    SHA256_Update(ctx, s, n);
    return 0;
}

static void hash_u64(SHA256_CTX *ctx, uint64_t v)
{
    unsigned char be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (unsigned char)(v >> (56 - 8 * i));
    SHA256_Update(ctx, be, 8);
}

/* Feeds the sorted parameters; -1 on a duplicate name. */
static int hash_params(SHA256_CTX *ctx, const vg_param *const *sorted, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            return -1;
        if (!sorted[i]->value)
            continue;
        if (hash_u32_str(ctx, sorted[i]->name) != 0 || hash_u32_str(ctx, sorted[i]->value) != 0)
            return -1;
    }
    return 0;
}

static int canon_digest(const char *domain, const vg_param *const *sorted, size_t n,
                        const void *payload, size_t plen, unsigned char md[32])
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    /* The domain goes in with its NUL so that no domain is a prefix of
     * another domain's input. */
    SHA256_Update(&ctx, domain, strlen(domain) + 1);
    if (hash_params(&ctx, sorted, n) != 0)
        return -1;
    hash_u64(&ctx, plen);
    SHA256_Update(&ctx, payload, plen);
    SHA256_Final(md, &ctx);
    return 0;
}

/* The caller's array is left untouched: we sort an array of pointers to
 * its elements. Small sets (the common case) sort on the stack. */
int vg_canon_hash(const char *domain, vg_param *params, size_t n, const void *payload,
                  size_t plen, char out[VG_SHA256_HEX + 1])
{
    if (!domain || (n && !params) || (plen && !payload) || n > SIZE_MAX / sizeof(void *))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!params[i].name)
            return -1;
    const vg_param *stack[32];
    const vg_param **sorted = n <= VG_ARRAY_LEN(stack) ? stack : malloc(n * sizeof *sorted);
    if (!sorted)
        return -1;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &params[i];
    if (n > 1)
        qsort(sorted, n, sizeof *sorted, param_cmp);
    unsigned char md[32];
    int rc = canon_digest(domain, sorted, n, payload, plen, md);
    if (sorted != stack)
        free(sorted);
    if (rc == 0)
        vg_hex_lower(md, sizeof md, out);
    return rc;
}
