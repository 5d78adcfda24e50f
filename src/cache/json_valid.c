/* A JSON text checker (RFC 8259) that allocates nothing and builds no
 * tree. It exists for the L2 hit path: an STT entry read from a shared
 * Redis is checked before its bytes are sent, and building a cJSON tree
 * of a 32 KiB transcript per hit cost more than the rest of the hit.
 * Whatever it accepts cJSON accepts too (the entry fuzz target checks
 * that): it is stricter where cJSON is lenient (leading zeros, "1.",
 * bad hex digits in \u escapes, raw control characters in strings, a
 * byte-order mark), and it keeps cJSON's nesting limit and its refusal
 * of unpaired UTF-16 surrogates. */
#include <stdint.h>
#include <string.h>

#include "voxgate/entry.h"

#define MAX_DEPTH 1000 /* cJSON's CJSON_NESTING_LIMIT */

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* True when one of the 16 bytes at p is '"', '\\' or below 0x20: the
 * bytes a string scan must stop at. Written with the compilers' vector
 * extension, so it is a few SIMD instructions wherever there are some. */
typedef unsigned char v16 __attribute__((vector_size(16)));

static bool special16(const char *p)
{
    v16 v, quote, bslash, space;
    memcpy(&v, p, sizeof v);
    for (size_t i = 0; i < sizeof v; i++) {
        quote[i] = '"';
        bslash[i] = '\\';
        space[i] = 0x20;
    }
    v16 hit = (v16)((v == quote) | (v == bslash) | (v < space));
    uint64_t w[2];
    memcpy(w, &hit, sizeof w);
    return (w[0] | w[1]) != 0;
}

static int hex4(const char *p, const char *e)
{
    if (e - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* p is just past "\u"; returns the end of the escape (a surrogate pair
 * as one) or NULL. */
static const char *unicode_escape(const char *p, const char *e)
{
    int u = hex4(p, e);
    if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
        return NULL;
    p += 4;
    if (u < 0xD800 || u > 0xDBFF)
        return p;
    if (e - p < 2 || p[0] != '\\' || p[1] != 'u')
        return NULL;
    int lo = hex4(p + 2, e);
    return lo >= 0xDC00 && lo <= 0xDFFF ? p + 6 : NULL;
}

/* p is just past the opening quote; returns just past the closing one. */
static const char *scan_string(const char *p, const char *e)
{
    for (;;) {
        while (e - p >= 16 && !special16(p))
            p += 16;
        if (p >= e)
            return NULL;
        unsigned char c = (unsigned char)*p++;
        if (c == '"')
            return p;
        if (c < 0x20)
            return NULL;
        if (c != '\\')
            continue;
        if (p >= e)
            return NULL;
        c = (unsigned char)*p++;
        if (c == 'u')
            p = unicode_escape(p, e);
        else if (!memchr("\"\\/bfnrt", c, 8))
            return NULL;
        if (!p)
            return NULL;
    }
}

static const char *digits(const char *p, const char *e)
{
    const char *s = p;
    while (p < e && *p >= '0' && *p <= '9')
        p++;
    return p > s ? p : NULL;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *scan_number(const char *p, const char *e)
{
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (!(p = digits(p, e)))
        return NULL;
    if (p < e && *p == '.' && !(p = digits(p + 1, e)))
        return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        p = digits(p, e);
    }
    return p;
}

static const char *scan_word(const char *p, const char *e, const char *w, size_t n)
{
    return (size_t)(e - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

/* A scalar, or NULL when p starts none. */
static const char *scan_scalar(const char *p, const char *e)
{
    switch (*p) {
    case '"': return scan_string(p + 1, e);
    case 't': return scan_word(p, e, "true", 4);
    case 'f': return scan_word(p, e, "false", 5);
    case 'n': return scan_word(p, e, "null", 4);
    default: return *p == '-' || (*p >= '0' && *p <= '9') ? scan_number(p, e) : NULL;
    }
}

bool vg_json_valid(const char *buf, size_t len)
{
    if (!buf)
        return false;
    char open[MAX_DEPTH]; /* '{' or '[' per level */
    int depth = 0;
    const char *p = buf, *e = buf + len;
value:
    p = skip_ws(p, e);
    if (p >= e)
        return false;
    if (*p == '{' || *p == '[') {
        if (depth == MAX_DEPTH)
            return false;
        open[depth++] = *p;
        p = skip_ws(p + 1, e);
        if (p < e && *p == (open[depth - 1] == '{' ? '}' : ']')) {
            depth--;
            p++;
            goto after;
        }
        if (open[depth - 1] == '[')
            goto value;
        goto key;
    }
    if (!(p = scan_scalar(p, e)))
        return false;
after:
    p = skip_ws(p, e);
    if (depth == 0)
        return p == e;
    if (p >= e)
        return false;
    if (*p == ',') {
        p++;
        if (open[depth - 1] == '[')
            goto value;
        p = skip_ws(p, e);
        goto key;
    }
    if (*p != (open[depth - 1] == '{' ? '}' : ']'))
        return false;
    depth--;
    p++;
    goto after;
key:
    if (p >= e || *p != '"' || !(p = scan_string(p + 1, e)))
        return false;
    p = skip_ws(p, e);
    if (p >= e || *p != ':')
        return false;
    p++;
    goto value;
}

/* ---- spans in text already known to be valid JSON ---- */

/* Just past the value that starts at p (no whitespace before it). */
static const char *skip_value(const char *p, const char *e)
{
    if (*p == '"')
        return scan_string(p + 1, e);
    if (*p != '{' && *p != '[') {
        while (p < e && !memchr(",]} \t\n\r", *p, 8))
            p++;
        return p;
    }
    size_t depth = 0;
    while (p < e) {
        char c = *p++;
        if (c == '"')
            p = scan_string(p, e);
        else if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return p;
        if (!p)
            return NULL;
    }
    return NULL;
}

bool vg_json_array(vg_json_iter *it, const char *buf, size_t len)
{
    const char *p = skip_ws(buf, buf + len);
    it->p = p < buf + len && *p == '[' ? p + 1 : NULL;
    it->e = buf + len;
    return it->p != NULL;
}

/* Past the separator after a value; e at the closing bracket. */
static const char *after_item(const char *p, const char *e)
{
    p = skip_ws(p, e);
    return p < e && *p == ',' ? p + 1 : e;
}

bool vg_json_next(vg_json_iter *it, const char **v, size_t *vlen)
{
    if (!it->p)
        return false;
    const char *p = skip_ws(it->p, it->e);
    const char *end = p < it->e && *p != ']' ? skip_value(p, it->e) : NULL;
    if (!end) {
        it->p = NULL;
        return false;
    }
    *v = p;
    *vlen = (size_t)(end - p);
    it->p = after_item(end, it->e);
    return true;
}

bool vg_json_member(const char *obj, size_t len, const char *name, const char **v,
                    size_t *vlen)
{
    const char *e = obj + len, *p = skip_ws(obj, e);
    if (p >= e || *p != '{')
        return false;
    size_t nl = strlen(name);
    bool found = false;
    for (p++;;) {
        p = skip_ws(p, e);
        if (p >= e || *p != '"')
            return found; /* the closing brace */
        const char *k = p, *kend = scan_string(p + 1, e);
        if (!kend || memchr(k, '\\', (size_t)(kend - k)))
            return false; /* an escaped key: its decoded name is not its text */
        p = skip_ws(kend, e);
        const char *val = p < e && *p == ':' ? skip_ws(p + 1, e) : e;
        const char *end = val < e ? skip_value(val, e) : NULL;
        if (!end)
            return false;
        if (!found && (size_t)(kend - k) == nl + 2 && memcmp(k + 1, name, nl) == 0) {
            *v = val;
            *vlen = (size_t)(end - val);
            found = true;
        }
        p = after_item(end, e);
    }
}
