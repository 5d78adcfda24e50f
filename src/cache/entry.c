/* Cache entry codecs: encode what we store in the kv tier and decode it
 * back defensively. The STT encoder puts the raw result last behind a
 * fixed prefix, so the decoder can return the caller's exact bytes (no
 * re-serialisation, no lost number precision) after checking that the
 * whole value is the JSON we would have written. */
#include "voxgate/entry.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "voxgate/keys.h"

/* n digits at s exactly (no sign, no space), or -1. */
static int fixed_digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian, y >= 1970). */
static uint64_t days_since_epoch(int y, int m, int d)
{
    static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    /* Leap days in the years before y, counted from year 0, minus 1970's. */
    int p = y - 1;
    uint64_t leaps = (uint64_t)(p / 4 - p / 100 + p / 400) - 477;
    uint64_t days = (uint64_t)(y - 1970) * 365u + leaps + (uint64_t)before[m - 1] + (uint64_t)d - 1;
    return days + (m > 2 && leap_year(y));
}

/* On every L2 hit (entries carry their creation time), so by hand: the
 * format is fixed, and sscanf's %u would also take " 1" or "+1". */
int vg_parse_rfc3339_ms(const char *s, uint64_t *ms)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < sizeof shape - 1; i++)
        if (!s[i] || (shape[i] != 'd' && s[i] != shape[i]))
            return VG_EINVAL;
    if (s[sizeof shape - 1])
        return VG_EINVAL;
    int Y = fixed_digits(s, 4), M = fixed_digits(s + 5, 2), D = fixed_digits(s + 8, 2),
        h = fixed_digits(s + 11, 2), m = fixed_digits(s + 14, 2), sec = fixed_digits(s + 17, 2),
        milli = fixed_digits(s + 20, 3);
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || h < 0 || h > 23 || m < 0 || m > 59 ||
        sec < 0 || sec > 60 || milli < 0 || D > mdays[M - 1] + (M == 2 && leap_year(Y)))
        return VG_EINVAL;
    uint64_t secs = days_since_epoch(Y, M, D) * 86400u + (uint64_t)h * 3600u + (uint64_t)m * 60u +
                    (uint64_t)sec;
    *ms = secs * 1000u + (uint64_t)milli;
    return VG_OK;
}

void *vg_json_parse_exact(const char *buf, size_t len)
{
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!doc)
        return NULL;
    for (; end && end < buf + len; end++) {
        if (!strchr(" \t\r\n", *end) || *end == '\0') {
            cJSON_Delete(doc);
            return NULL;
        }
    }
    return doc;
}

static int stt_prefix(vg_buf *out, const char *provider, const char *language, const char *ts)
{
    return vg_buf_printf(out, "{\"provider\":\"%s\",\"language\":\"%s\",\"created_at\":\"%s\","
                              "\"result\":",
                         provider, language, ts);
}

int vg_stt_entry_encode(vg_buf *out, const char *provider, const char *language,
                        uint64_t created_ms, const char *result, size_t rlen)
{
    if (!vg_ident_valid(provider) || !vg_ident_valid(language) || rlen == 0)
        return VG_EINVAL;
    char ts[32];
    vg_format_rfc3339_ms(created_ms, ts);
    if (stt_prefix(out, provider, language, ts) != VG_OK || vg_buf_append(out, result, rlen) ||
        vg_buf_append(out, "}", 1))
        return VG_ENOMEM;
    return VG_OK;
}

static const char *str_member(const cJSON *o, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* Consume the literal lit at *p. */
static bool take(const char **p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(e - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Consume an identifier up to the next quote into out (VG_IDENT_MAX + 1). */
static bool take_ident(const char **p, const char *e, char *out)
{
    const char *q = memchr(*p, '"', (size_t)(e - *p));
    size_t n = q ? (size_t)(q - *p) : 0;
    if (!q || n > VG_IDENT_MAX)
        return false;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p = q;
    return vg_ident_valid(out);
}

/* The value must be exactly what vg_stt_entry_encode writes: the fixed
 * prefix (identifiers need no escaping, so it is compared as bytes), a
 * valid JSON result, then '}'. Checked without building a tree: this
 * runs on every L2 hit. */
int vg_stt_entry_decode(const char *val, size_t vlen, const char **result, size_t *rlen,
                        uint64_t *created_ms)
{
    if (!val)
        return VG_ECORRUPT;
    const char *p = val, *e = val + vlen;
    char prov[VG_IDENT_MAX + 1], lang[VG_IDENT_MAX + 1], ts[25];
    if (!take(&p, e, "{\"provider\":\"") || !take_ident(&p, e, prov) ||
        !take(&p, e, "\",\"language\":\"") || !take_ident(&p, e, lang) ||
        !take(&p, e, "\",\"created_at\":\"") || e - p < 24)
        return VG_ECORRUPT;
    memcpy(ts, p, 24);
    ts[24] = '\0';
    p += 24;
    if (!take(&p, e, "\",\"result\":") || vg_parse_rfc3339_ms(ts, created_ms) != VG_OK ||
        e - p < 2 || e[-1] != '}' || !vg_json_valid(p, (size_t)(e - p) - 1))
        return VG_ECORRUPT;
    *result = p;
    *rlen = (size_t)(e - p) - 1;
    return VG_OK;
}

bool vg_content_type_valid(const char *ct)
{
    size_t n = strlen(ct);
    if (n == 0 || n > 95)
        return false;
    const char *slash = strchr(ct, '/');
    if (!slash || slash == ct)
        return false;
    size_t sub = strcspn(slash + 1, ";");
    if (sub == 0)
        return false;
    for (const char *p = ct; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e || *p == '"' || *p == '\\')
            return false;
    return true;
}

int vg_tts_meta_encode(vg_buf *out, const vg_tts_meta *m, const char *provider,
                       const char *language, const char *voice)
{
    char ts[32];
    vg_format_rfc3339_ms(m->created_ms, ts);
    vg_buf_puts(out, "{\"provider\":\"");
    vg_buf_puts(out, provider);
    vg_buf_puts(out, "\",\"language\":\"");
    vg_buf_puts(out, language);
    vg_buf_puts(out, "\",\"voice\":\"");
    vg_buf_puts(out, voice);
    vg_buf_puts(out, "\",\"content_type\":");
    vg_buf_json_str(out, m->content_type, strlen(m->content_type));
    return vg_buf_printf(out, ",\"size\":%llu,\"sha256\":\"%s\",\"blob\":\"%s\",\"created_at\":\"%s\"}",
                         (unsigned long long)m->size, m->sha256, m->blob, ts);
}

int vg_tts_meta_decode(const char *val, size_t vlen, vg_tts_meta *m)
{
    cJSON *doc = vg_json_parse_exact(val, vlen);
    int rc = VG_ECORRUPT;
    if (!doc || !cJSON_IsObject(doc))
        goto out;
    const char *ct = str_member(doc, "content_type"), *sha = str_member(doc, "sha256"),
               *blob = str_member(doc, "blob"), *ts = str_member(doc, "created_at");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(doc, "size");
    if (!ct || !sha || !blob || !ts || !cJSON_IsNumber(size) || size->valuedouble < 0 ||
        size->valuedouble > 9007199254740992.0 || !vg_content_type_valid(ct) ||
        !vg_hash_valid(sha) || strlen(blob) >= sizeof m->blob ||
        vg_parse_rfc3339_ms(ts, &m->created_ms) != VG_OK)
        goto out;
    snprintf(m->content_type, sizeof m->content_type, "%s", ct);
    vg_hash_normalize(sha, m->sha256);
    snprintf(m->blob, sizeof m->blob, "%s", blob);
    m->size = (uint64_t)size->valuedouble;
    rc = VG_OK;
out:
    cJSON_Delete(doc);
    return rc;
}
