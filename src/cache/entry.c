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

int vg_parse_rfc3339_ms(const char *s, uint64_t *ms)
{
    unsigned Y, M, D, h, m, sec, milli;
    int n = 0;
    if (strlen(s) != 24 ||
        sscanf(s, "%4u-%2u-%2uT%2u:%2u:%2u.%3uZ%n", &Y, &M, &D, &h, &m, &sec, &milli, &n) != 7 ||
        n != 24)
        return VG_EINVAL;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return VG_EINVAL;
    struct tm tm = {.tm_year = (int)Y - 1900, .tm_mon = (int)M - 1, .tm_mday = (int)D,
                    .tm_hour = (int)h, .tm_min = (int)m, .tm_sec = (int)sec};
    time_t t = timegm(&tm);
    if (t < 0)
        return VG_EINVAL;
    *ms = (uint64_t)t * 1000u + milli;
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
