/* libFuzzer target for the HTTP input voxgate parses itself (the rest is
 * libmicrohttpd's): request paths through the real route table, request
 * ids, cache key fields and numbers. Lines of the input are the fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/api.h"
#include "voxgate/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Split a NUL-terminated copy of the input into up to n lines. */
static size_t split(char *s, char **out, size_t n)
{
    size_t k = 0;
    while (k < n) {
        out[k++] = s;
        char *nl = strchr(s, '\n');
        if (!nl)
            break;
        *nl = '\0';
        s = nl + 1;
    }
    return k;
}

static void route(const char *path)
{
    for (unsigned m = 1; m <= VG_M_OTHER; m <<= 1) {
        vg_route_match rm;
        vg_router_match(vg_routes, vg_nroutes, m, path, &rm);
        if (rm.route && !(rm.route->methods & m))
            abort();
        if (rm.route && !(rm.allow & m))
            abort();
        for (size_t i = 0; rm.route && i < rm.nparams; i++)
            if (rm.params[i].p < path || rm.params[i].p + rm.params[i].n > path + strlen(path) ||
                rm.params[i].n == 0)
                abort();
        char allow[96];
        vg_methods_format(rm.allow, allow, sizeof allow);
    }
}

static void reqid(const char *s)
{
    size_t n = strlen(s);
    if (!vg_reqid_valid(s, n))
        return;
    if (n == 0 || n > VG_REQID_MAX || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                               "0123456789._:-") != n)
        abort();
}

static void key(char **f, size_t nf)
{
    if (nf < 6)
        return;
    vg_key_parts p = {.kind = f[0][0] & 1 ? VG_KIND_TTS : VG_KIND_STT, .provider = f[1],
                      .language = f[2], .voice = f[3], .hash = f[4], .format = f[5],
                      .epoch = (unsigned)strlen(f[0])};
    char out[VG_KEY_MAX];
    int n = vg_key_build("voxgate", &p, out, sizeof out);
    if (n >= 0 && ((size_t)n != strlen(out) || strpbrk(out, " *?[]\r\n") != NULL))
        abort();
    uint64_t v;
    vg_parse_u64(f[0], &v);
    vg_route_query_allowed("provider language audio_hash format ttl_s", f[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char *f[8];
    size_t nf = split(s, f, 8);
    route(f[0]);
    if (nf > 1)
        reqid(f[1]);
    key(f, nf);
    free(s);
    return 0;
}
