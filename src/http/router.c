/* The router: maps (method, path) to a route row, with path parameters.
 * The table is small and fixed at start-up, so a linear scan with
 * segment-wise comparison beats anything cleverer; no allocation. */
#include <string.h>
#include <stdio.h>

#include "voxgate/http.h"

static const struct {
    unsigned bit;
    const char *name;
} method_names[] = {
    {VG_M_GET, "GET"},       {VG_M_HEAD, "HEAD"},   {VG_M_POST, "POST"},
    {VG_M_PUT, "PUT"},       {VG_M_DELETE, "DELETE"}, {VG_M_PATCH, "PATCH"},
    {VG_M_OPTIONS, "OPTIONS"},
};

unsigned vg_method_parse(const char *m)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(method_names); i++)
        if (strcmp(m, method_names[i].name) == 0)
            return method_names[i].bit;
    return VG_M_OTHER;
}

const char *vg_method_name(unsigned m)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(method_names); i++)
        if (m == method_names[i].bit)
            return method_names[i].name;
    return "OTHER";
}

size_t vg_methods_format(unsigned mask, char *out, size_t cap)
{
    size_t len = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < VG_ARRAY_LEN(method_names); i++) {
        if (!(mask & method_names[i].bit))
            continue;
        const char *sep = len ? ", " : "";
        size_t need = strlen(sep) + strlen(method_names[i].name);
        if (len + need + 1 > cap)
            break;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", sep, method_names[i].name);
    }
    return len;
}

/* Match one pattern; fills params on success. */
static bool pattern_match(const char *pat, const char *path, vg_route_match *m)
{
    size_t np = 0;
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            return false;
        pat++;
        path++;
        const char *pend = strchr(pat, '/');
        size_t plen = pend ? (size_t)(pend - pat) : strlen(pat);
        const char *send = strchr(path, '/');
        size_t slen = send ? (size_t)(send - path) : strlen(path);
        if (plen >= 2 && pat[0] == '{' && pat[plen - 1] == '}') {
            bool rest = plen >= 3 && pat[plen - 2] == '+';
            if (np == VG_ROUTE_MAX_PARAMS)
                return false;
            if (rest) {
                /* A literal tail may follow ("/v1/files/{key+}/url"): the
                 * parameter is what comes before it, and is never empty. */
                const char *tail = pat + plen;
                size_t all = strlen(path), tl = strlen(tail);
                if (all <= tl || (tl && memcmp(path + all - tl, tail, tl) != 0) ||
                    (tl && path[all - tl - 1] == '/'))
                    return false;
                m->params[np].p = path;
                m->params[np].n = all - tl;
                m->nparams = np + 1;
                return true;
            }
            if (slen == 0)
                return false;
            m->params[np].p = path;
            m->params[np].n = slen;
            np++;
        } else if (plen != slen || memcmp(pat, path, plen) != 0) {
            return false;
        }
        pat += plen;
        path += slen;
    }
    if (*pat || *path)
        return false;
    m->nparams = np;
    return true;
}

/* Segments of a pattern that are not {params}. */
static unsigned literal_segments(const char *pat)
{
    unsigned n = 0;
    for (const char *p = pat; (p = strchr(p, '/')); p++)
        n += p[1] && p[1] != '{';
    return n;
}

/* When patterns of different specificity match (POST /v1/breakers/reset
 * and GET /v1/breakers/{provider}), the one with more literal segments
 * owns the path, as in OpenAPI: GET /v1/breakers/reset is a 405 with
 * Allow: POST, not a read of a provider named "reset". */
void vg_router_match(const vg_route *routes, size_t n, unsigned method, const char *path,
                     vg_route_match *m)
{
    m->route = NULL;
    m->allow = 0;
    m->nparams = 0;
    vg_route_match tmp;
    unsigned best = 0;
    for (size_t i = 0; i < n; i++) {
        tmp.nparams = 0;
        if (!pattern_match(routes[i].pattern, path, &tmp))
            continue;
        unsigned lit = literal_segments(routes[i].pattern);
        if (m->allow && lit < best)
            continue;
        if (!m->allow || lit > best) {
            best = lit;
            m->route = NULL;
            m->allow = 0;
            m->nparams = 0;
        }
        m->allow |= routes[i].methods;
        if (!m->route && (routes[i].methods & method)) {
            *m = (vg_route_match){.route = &routes[i], .allow = m->allow, .nparams = tmp.nparams};
            memcpy(m->params, tmp.params, sizeof tmp.params);
        }
    }
}

bool vg_route_query_allowed(const char *list, const char *name)
{
    if (!list)
        return false;
    size_t n = strlen(name);
    if (n == 0)
        return false;
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && memcmp(p, name, n) == 0)
            return true;
        p = e;
    }
    return false;
}
