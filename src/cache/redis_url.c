/* redis_url parsing, kept apart from the client so the configuration
 * loader can validate the option without linking hiredis. Accepted:
 *   redis://[[user]:pass@]host[:port][/db]     host may be [v6]
 *   unix:///path/to/socket[?db=N]
 * Messages never quote the credentials. */
#include "voxgate/redis.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define DB_MAX 1000000u

static int bad(char *err, size_t errlen, const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", what);
    return VG_EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into out; false on a bad escape, a NUL byte or
 * overflow. */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

static bool parse_uint(const char *s, size_t n, uint32_t max, uint32_t *out)
{
    if (n == 0 || n > 7)
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool host_ok(const char *h, size_t n, bool v6)
{
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == '_' || (v6 && (c == ':' || c == '%'))))
            return false;
    }
    return true;
}

static int parse_userinfo(const char *s, size_t n, vg_redis_url *u, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return bad(err, errlen, "redis_url: credentials must be user:password or :password");
    size_t ul = (size_t)(colon - s);
    if (!pct_decode(s, ul, u->user, sizeof u->user) ||
        !pct_decode(colon + 1, n - ul - 1, u->pass, sizeof u->pass))
        return bad(err, errlen, "redis_url: bad percent-encoding or length in credentials");
    if (!u->pass[0])
        return bad(err, errlen, "redis_url: empty password");
    return VG_OK;
}

static int parse_hostport(const char *s, size_t n, vg_redis_url *u, char *err, size_t errlen)
{
    const char *h = s, *port = NULL;
    size_t hl;
    bool v6 = n && s[0] == '[';
    if (v6) {
        const char *close = memchr(s, ']', n);
        if (!close)
            return bad(err, errlen, "redis_url: unterminated [IPv6] host");
        h = s + 1;
        hl = (size_t)(close - h);
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return bad(err, errlen, "redis_url: expected :port after ]");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hl = colon ? (size_t)(colon - s) : n;
        port = colon ? colon + 1 : NULL;
    }
    if (!host_ok(h, hl, v6))
        return bad(err, errlen, "redis_url: bad host");
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    u->port = 6379;
    if (port) {
        uint32_t p;
        if (!parse_uint(port, (size_t)(s + n - port), 65535, &p) || p == 0)
            return bad(err, errlen, "redis_url: port must be 1..65535");
        u->port = (uint16_t)p;
    }
    return VG_OK;
}

static int parse_tcp(const char *s, vg_redis_url *u, char *err, size_t errlen)
{
    size_t n = strlen(s);
    const char *slash = memchr(s, '/', n);
    size_t auth_end = slash ? (size_t)(slash - s) : n;
    const char *at = NULL;
    for (size_t i = 0; i < auth_end; i++)
        if (s[i] == '@')
            at = s + i; /* the last '@' ends the credentials */
    if (at && parse_userinfo(s, (size_t)(at - s), u, err, errlen) != VG_OK)
        return VG_EINVAL;
    const char *hp = at ? at + 1 : s;
    if (parse_hostport(hp, (size_t)(s + auth_end - hp), u, err, errlen) != VG_OK)
        return VG_EINVAL;
    if (slash && slash[1] && !parse_uint(slash + 1, strlen(slash + 1), DB_MAX, &u->db))
        return bad(err, errlen, "redis_url: /db must be a number 0..1000000");
    return VG_OK;
}

static int parse_unix(const char *s, vg_redis_url *u, char *err, size_t errlen)
{
    const char *q = strchr(s, '?');
    size_t n = q ? (size_t)(q - s) : strlen(s);
    if (n < 2 || s[0] != '/')
        return bad(err, errlen, "redis_url: unix:// needs an absolute path (unix:///path)");
    if (n >= sizeof u->path)
        return bad(err, errlen, "redis_url: unix socket path too long");
    memcpy(u->path, s, n);
    u->path[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return bad(err, errlen, "redis_url: control character in the path");
    if (q && (strncmp(q, "?db=", 4) != 0 || !parse_uint(q + 4, strlen(q + 4), DB_MAX, &u->db)))
        return bad(err, errlen, "redis_url: the only query is ?db=N");
    u->is_unix = true;
    return VG_OK;
}

int vg_redis_url_parse(const char *url, vg_redis_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!url || !*url)
        return bad(err, errlen, "redis_url: empty");
    if (strncmp(url, "redis://", 8) == 0)
        return parse_tcp(url + 8, out, err, errlen);
    if (strncmp(url, "unix://", 7) == 0)
        return parse_unix(url + 7, out, err, errlen);
    return bad(err, errlen, "redis_url: expected redis://host:port[/db] or unix:///path");
}
