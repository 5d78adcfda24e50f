/* Shared helpers: clocks, RFC 3339 timestamps, the growable buffer,
 * constant-time comparison and strict number parsing. */
#include "voxgate/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t vg_real_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t (*vg_clock_ms)(void) = vg_real_clock_ms;

uint64_t vg_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec vg_deadline(clockid_t clk, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + ms % 1000u * 1000000u;
    ts.tv_sec += (time_t)(ms / 1000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

static char *put_digits(char *o, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

void vg_format_rfc3339_ms(uint64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char *o = out;
    o = put_digits(o, (unsigned)(tm.tm_year + 1900) % 10000u, 4);
    *o++ = '-';
    o = put_digits(o, (unsigned)tm.tm_mon + 1, 2);
    *o++ = '-';
    o = put_digits(o, (unsigned)tm.tm_mday, 2);
    *o++ = 'T';
    o = put_digits(o, (unsigned)tm.tm_hour, 2);
    *o++ = ':';
    o = put_digits(o, (unsigned)tm.tm_min, 2);
    *o++ = ':';
    o = put_digits(o, (unsigned)tm.tm_sec, 2);
    *o++ = '.';
    o = put_digits(o, (unsigned)(ms % 1000u), 3);
    *o++ = 'Z';
    *o = '\0';
}

int vg_buf_reserve(vg_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return VG_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return VG_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return VG_ENOMEM;
    b->data = p;
    b->cap = cap;
    return VG_OK;
}

int vg_buf_append(vg_buf *b, const void *p, size_t n)
{
    if (vg_buf_reserve(b, n) != VG_OK)
        return VG_ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return VG_OK;
}

int vg_buf_puts(vg_buf *b, const char *s) { return vg_buf_append(b, s, strlen(s)); }

int vg_buf_vprintf(vg_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || vg_buf_reserve(b, (size_t)n) != VG_OK)
        return VG_ENOMEM;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return VG_OK;
}

int vg_buf_printf(vg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vg_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* Length of a valid UTF-8 sequence starting at s (at most n bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; }
    else return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x3Fu >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

bool vg_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq_len(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

int vg_buf_json_str(vg_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX or U+FFFD (3 bytes). */
    if (n > (SIZE_MAX - 2) / 6 || vg_buf_reserve(b, n * 6 + 2) != VG_OK)
        return VG_ENOMEM;
    char *o = b->data + b->len;
    const unsigned char *p = (const unsigned char *)s;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
        } else if (c < 0x20) {
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = hex[c >> 4]; *o++ = hex[c & 15];
            }
            i++;
        } else if (c < 0x80) {
            *o++ = (char)c;
            i++;
        } else {
            size_t l = utf8_seq_len(p + i, n - i);
            if (l == 0) {
                memcpy(o, "\xEF\xBF\xBD", 3); /* U+FFFD keeps the line valid JSON */
                o += 3;
                i++;
            } else {
                memcpy(o, p + i, l);
                o += l;
                i += l;
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return VG_OK;
}

void vg_buf_reset(vg_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void vg_buf_free(vg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

bool vg_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned)(y[i] ^ (i < alen ? x[i] : 0u));
    return diff == 0;
}

bool vg_parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
