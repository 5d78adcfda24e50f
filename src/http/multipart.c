/* multipart/form-data parsing for fully buffered request bodies (see
 * include/voxgate/multipart.h for what is accepted). One pass over the
 * body: find a delimiter with memmem, read the part's header block (at
 * most VG_MP_HEADER_MAX bytes), find the next delimiter, repeat until the
 * closing one. A delimiter candidate that is not followed by "--" or a line
 * end is data that merely looks like a boundary, and the search resumes
 * one byte later, so no byte is examined more than a constant number of
 * times whatever the input. */
#include "voxgate/multipart.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "voxgate/util.h"

/* Parameter values are decoded into a buffer this large: a header line
 * never exceeds the header block, so no value in a valid block is cut. */
#define PARAM_VALUE_MAX VG_MP_HEADER_MAX

typedef struct mp {
    const char *body;
    size_t len;
    char delim[VG_MP_BOUNDARY_MAX + 4]; /* "\n--" boundary */
    size_t dlen;
    char *err;
    size_t errlen;
} mp;

/* A parsed `; name=value` parameter: the name points into the header,
 * the value is decoded (quotes and escapes removed). */
typedef struct param {
    const char *name;
    size_t nlen;
    char value[PARAM_VALUE_MAX + 1];
    size_t vlen;
} param;

__attribute__((format(printf, 2, 3))) static int fail(mp *p, const char *fmt, ...)
{
    if (p->err && p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errlen, fmt, ap);
        va_end(ap);
    }
    return VG_EINVAL;
}

/* ---- lexical pieces shared by Content-Type and Content-Disposition ---- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static void skip_ows(const char *s, size_t n, size_t *i)
{
    while (*i < n && is_ows(s[*i]))
        (*i)++;
}

/* Control characters cannot round-trip through a C string or a log line,
 * so a value holding one is refused rather than passed on. */
static bool is_ctl(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

static size_t token_len(const char *s, size_t n, size_t i)
{
    size_t j = i;
    while (j < n && is_tchar((unsigned char)s[j]))
        j++;
    return j - i;
}

/* A token or a quoted-string (with backslash escapes) at s[*i]. */
static bool read_value(const char *s, size_t n, size_t *i, param *pm)
{
    pm->vlen = 0;
    if (*i < n && s[*i] != '"') {
        size_t t = token_len(s, n, *i);
        if (t == 0 || t > PARAM_VALUE_MAX)
            return false;
        memcpy(pm->value, s + *i, t);
        pm->vlen = t;
        *i += t;
        pm->value[t] = '\0';
        return true;
    }
    for ((*i)++; *i < n; (*i)++) {
        unsigned char c = (unsigned char)s[*i];
        if (c == '"') {
            (*i)++;
            pm->value[pm->vlen] = '\0';
            return true;
        }
        if (c == '\\') {
            if (*i + 1 == n)
                return false;
            c = (unsigned char)s[++(*i)];
        }
        if (is_ctl(c) || pm->vlen == PARAM_VALUE_MAX)
            return false;
        pm->value[pm->vlen++] = (char)c;
    }
    return false; /* no closing quote */
}

/* The next `; name=value` at s[*i]: 1 with pm filled, 0 at the end,
 * -1 on a syntax error. A trailing ';' is tolerated. */
static int next_param(const char *s, size_t n, size_t *i, param *pm)
{
    skip_ows(s, n, i);
    if (*i == n)
        return 0;
    if (s[*i] != ';')
        return -1;
    (*i)++;
    skip_ows(s, n, i);
    if (*i == n)
        return 0;
    pm->name = s + *i;
    pm->nlen = token_len(s, n, *i);
    if (pm->nlen == 0)
        return -1;
    *i += pm->nlen;
    skip_ows(s, n, i);
    if (*i == n || s[*i] != '=')
        return -1;
    (*i)++;
    skip_ows(s, n, i);
    return read_value(s, n, i, pm) ? 1 : -1;
}

static bool param_is(const param *pm, const char *name)
{
    return pm->nlen == strlen(name) && strncasecmp(pm->name, name, pm->nlen) == 0;
}

/* s[*i] starts with the token want (case-insensitive) and the token ends there. */
static bool eat_token(const char *s, size_t n, size_t *i, const char *want)
{
    size_t t = token_len(s, n, *i);
    if (t != strlen(want) || strncasecmp(s + *i, want, t) != 0)
        return false;
    *i += t;
    return true;
}

/* ---- the boundary ---- */

/* RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=?" and space (not last). */
static bool boundary_valid(const char *b, size_t n)
{
    if (n < 1 || n > VG_MP_BOUNDARY_MAX || b[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr("'()+_,-./:=? ", c));
        if (!ok)
            return false;
    }
    return true;
}

bool vg_mp_boundary(const char *content_type, char *out, size_t cap)
{
    if (out && cap)
        out[0] = '\0';
    if (!content_type || !out)
        return false;
    const char *s = content_type;
    size_t n = strlen(s), i = 0;
    skip_ows(s, n, &i);
    if (!eat_token(s, n, &i, "multipart") || i == n || s[i++] != '/' ||
        !eat_token(s, n, &i, "form-data"))
        return false;
    param pm;
    bool found = false;
    int r;
    while ((r = next_param(s, n, &i, &pm)) == 1) {
        if (!param_is(&pm, "boundary"))
            continue;
        if (found || !boundary_valid(pm.value, pm.vlen) || pm.vlen >= cap)
            break;
        memcpy(out, pm.value, pm.vlen + 1);
        found = true;
    }
    if (r != 0 || !found) {
        out[0] = '\0';
        return false;
    }
    return true;
}

/* ---- delimiters ---- */

/* "--boundary" starts at `at`. true when it is a real delimiter: *closed
 * for "--boundary--", else *next is the first byte after its line. */
static bool delim_at(const mp *p, size_t at, size_t *next, bool *closed)
{
    size_t i = at + p->dlen - 1;
    if (i + 2 <= p->len && p->body[i] == '-' && p->body[i + 1] == '-') {
        *closed = true;
        *next = i + 2;
        return true;
    }
    while (i < p->len && is_ows(p->body[i]))
        i++;
    if (i < p->len && p->body[i] == '\r')
        i++;
    if (i >= p->len || p->body[i] != '\n')
        return false;
    *closed = false;
    *next = i + 1;
    return true;
}

/* The first delimiter whose "\n" is at or after from; *nl is that "\n". */
static bool find_delim(const mp *p, size_t from, size_t *nl, size_t *next, bool *closed)
{
    while (from < p->len) {
        const char *h = memmem(p->body + from, p->len - from, p->delim, p->dlen);
        if (!h)
            return false;
        size_t at = (size_t)(h - p->body);
        if (delim_at(p, at + 1, next, closed)) {
            *nl = at;
            return true;
        }
        from = at + 1;
    }
    return false;
}

/* The delimiter that opens the first part: at the very start of the
 * body, or after the preamble. */
static bool first_delim(const mp *p, size_t *next, bool *closed)
{
    size_t nl;
    if (p->len >= p->dlen - 1 && memcmp(p->body, p->delim + 1, p->dlen - 1) == 0 &&
        delim_at(p, 0, next, closed))
        return true;
    return find_delim(p, 0, &nl, next, closed);
}

/* ---- part headers ---- */

static int copy_field(mp *p, size_t partno, const param *pm, char *dst, size_t cap,
                      const char *what)
{
    if (pm->vlen >= cap)
        return fail(p, "multipart: part %zu %s is longer than %zu bytes", partno, what, cap - 1);
    memcpy(dst, pm->value, pm->vlen + 1);
    return VG_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 8187 ext-value "UTF-8'lang'pct-encoded" decoded in place; false
 * for another charset or a bad escape (the caller then ignores it). */
static bool decode_ext_value(param *pm)
{
    const char *q1 = memchr(pm->value, '\'', pm->vlen);
    const char *q2 = q1 ? memchr(q1 + 1, '\'', pm->vlen - (size_t)(q1 + 1 - pm->value)) : NULL;
    if (!q2 || q1 - pm->value != 5 || strncasecmp(pm->value, "utf-8", 5) != 0)
        return false;
    size_t o = 0;
    for (const char *c = q2 + 1; c < pm->value + pm->vlen; c++) {
        if (*c != '%') {
            pm->value[o++] = *c;
            continue;
        }
        if (c + 2 >= pm->value + pm->vlen || hexval(c[1]) < 0 || hexval(c[2]) < 0)
            return false;
        char ch = (char)(hexval(c[1]) << 4 | hexval(c[2]));
        if (is_ctl((unsigned char)ch))
            return false;
        pm->value[o++] = ch;
        c += 2;
    }
    pm->vlen = o;
    pm->value[o] = '\0';
    return true;
}

/* Content-Disposition: form-data; name="..."; filename="..." */
static int parse_disposition(mp *p, size_t partno, vg_mp_part *part, const char *s, size_t n)
{
    size_t i = 0;
    if (!eat_token(s, n, &i, "form-data"))
        return fail(p, "multipart: part %zu Content-Disposition is not form-data", partno);
    param pm, ext;
    bool has_name = false, has_ext = false;
    int r, rc;
    while ((r = next_param(s, n, &i, &pm)) == 1) {
        if (param_is(&pm, "name")) {
            if (has_name)
                return fail(p, "multipart: part %zu has two name parameters", partno);
            if ((rc = copy_field(p, partno, &pm, part->name, sizeof part->name, "name")))
                return rc;
            has_name = true;
        } else if (param_is(&pm, "filename")) {
            if (part->has_filename)
                return fail(p, "multipart: part %zu has two filename parameters", partno);
            if ((rc = copy_field(p, partno, &pm, part->filename, sizeof part->filename,
                                 "filename")))
                return rc;
            part->has_filename = true;
        } else if (param_is(&pm, "filename*") && !has_ext) {
            /* copy only the value: the buffers are large */
            ext.vlen = pm.vlen;
            memcpy(ext.value, pm.value, pm.vlen + 1);
            has_ext = decode_ext_value(&ext);
        }
    }
    if (r < 0)
        return fail(p, "multipart: part %zu has a malformed Content-Disposition", partno);
    if (has_ext && !part->has_filename) {
        if ((rc = copy_field(p, partno, &ext, part->filename, sizeof part->filename, "filename")))
            return rc;
        part->has_filename = true;
    }
    return VG_OK;
}

static int parse_ctype(mp *p, size_t partno, vg_mp_part *part, const char *s, size_t n)
{
    if (part->ctype[0])
        return fail(p, "multipart: part %zu has two Content-Type headers", partno);
    if (n >= sizeof part->ctype)
        return fail(p, "multipart: part %zu Content-Type is longer than %zu bytes", partno,
                    sizeof part->ctype - 1);
    for (size_t i = 0; i < n; i++)
        if (is_ctl((unsigned char)s[i]))
            return fail(p, "multipart: part %zu Content-Type has a control character", partno);
    memcpy(part->ctype, s, n);
    part->ctype[n] = '\0';
    return VG_OK;
}

/* One "Name: value" line (line end removed). Unknown headers are skipped. */
static int header_line(mp *p, size_t partno, vg_mp_part *part, bool *seen_cd, const char *s,
                       size_t n)
{
    const char *colon = memchr(s, ':', n);
    size_t nl = colon ? (size_t)(colon - s) : 0;
    while (nl > 0 && is_ows(s[nl - 1]))
        nl--;
    if (!colon || nl == 0 || token_len(s, nl, 0) != nl)
        return fail(p, "multipart: part %zu has a malformed header line", partno);
    size_t v = (size_t)(colon - s) + 1, end = n;
    skip_ows(s, n, &v);
    while (end > v && is_ows(s[end - 1]))
        end--;
    if (nl == 19 && strncasecmp(s, "Content-Disposition", nl) == 0) {
        if (*seen_cd)
            return fail(p, "multipart: part %zu has two Content-Disposition headers", partno);
        *seen_cd = true;
        return parse_disposition(p, partno, part, s + v, end - v);
    }
    if (nl == 12 && strncasecmp(s, "Content-Type", nl) == 0)
        return parse_ctype(p, partno, part, s + v, end - v);
    return VG_OK;
}

/* The header block starting at *pos; on VG_OK *pos is the "\n" that ends
 * the blank line. */
static int read_headers(mp *p, size_t partno, vg_mp_part *part, size_t *pos)
{
    size_t start = *pos, i = *pos;
    size_t limit = p->len - start < VG_MP_HEADER_MAX ? p->len : start + VG_MP_HEADER_MAX;
    bool seen_cd = false;
    for (;;) {
        const char *nl = memchr(p->body + i, '\n', limit - i);
        if (!nl) {
            if (limit < p->len)
                return fail(p, "multipart: part %zu header block is over %d bytes", partno,
                            VG_MP_HEADER_MAX);
            return fail(p, "multipart: part %zu header block is not terminated", partno);
        }
        size_t e = (size_t)(nl - p->body), n = e - i;
        if (n > 0 && p->body[e - 1] == '\r')
            n--;
        if (n == 0) {
            *pos = e;
            break;
        }
        int rc = header_line(p, partno, part, &seen_cd, p->body + i, n);
        if (rc)
            return rc;
        i = e + 1;
    }
    if (!part->name[0])
        return fail(p, "multipart: part %zu has no Content-Disposition name", partno);
    return VG_OK;
}

/* ---- the body ---- */

/* One part from its header block to the next delimiter. */
static int read_part(mp *p, size_t partno, vg_mp_part *part, size_t *pos, bool *closed)
{
    memset(part, 0, sizeof *part);
    size_t blank_nl = *pos, dnl, next;
    int rc = read_headers(p, partno, part, &blank_nl);
    if (rc)
        return rc;
    /* Searching from the blank line's own "\n" lets an empty part that
     * lacks the CRLF before its delimiter still end there. */
    if (!find_delim(p, blank_nl, &dnl, &next, closed))
        return fail(p, "multipart: no closing boundary");
    size_t start = blank_nl + 1, end = dnl;
    if (end < start)
        end = start;
    else if (end > start && p->body[end - 1] == '\r')
        end--;
    part->data = p->body + start;
    part->len = end - start;
    *pos = next;
    return VG_OK;
}

int vg_mp_parse(const char *body, size_t len, const char *boundary, vg_mp_part *parts,
                size_t max_parts, size_t *nparts, char *err, size_t errlen)
{
    mp p = {.body = body, .len = len, .err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = '\0';
    if (nparts)
        *nparts = 0;
    size_t blen = boundary ? strlen(boundary) : 0;
    if (!boundary_valid(boundary, blen) || !nparts || (!body && len) || (!parts && max_parts))
        return fail(&p, "multipart: invalid boundary or arguments");
    memcpy(p.delim, "\n--", 3);
    memcpy(p.delim + 3, boundary, blen);
    p.dlen = blen + 3;

    size_t pos, n = 0;
    bool closed;
    if (!first_delim(&p, &pos, &closed))
        return fail(&p, "multipart: no boundary found");
    while (!closed) {
        if (n == max_parts)
            return fail(&p, "multipart: more than %zu parts", max_parts);
        int rc = read_part(&p, n + 1, &parts[n], &pos, &closed);
        if (rc)
            return rc;
        n++;
    }
    *nparts = n;
    return VG_OK;
}

const vg_mp_part *vg_mp_next(const vg_mp_part *parts, size_t n, const vg_mp_part *prev,
                             const char *name)
{
    size_t i = prev ? (size_t)(prev - parts) + 1 : 0;
    for (; parts && name && i < n; i++)
        if (strcmp(parts[i].name, name) == 0)
            return &parts[i];
    return NULL;
}

const vg_mp_part *vg_mp_find(const vg_mp_part *parts, size_t n, const char *name)
{
    return vg_mp_next(parts, n, NULL, name);
}

int vg_mp_text(const vg_mp_part *p, char *out, size_t cap)
{
    if (!p || !out || cap == 0)
        return VG_EINVAL;
    out[0] = '\0';
    if (p->len >= cap)
        return VG_ETOOBIG;
    if (p->len && memchr(p->data, '\0', p->len))
        return VG_EINVAL;
    if (p->len)
        memcpy(out, p->data, p->len);
    out[p->len] = '\0';
    return VG_OK;
}
