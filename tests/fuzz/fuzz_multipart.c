/* libFuzzer target: the multipart parser must never crash or read outside
 * the body, and what it returns must be consistent. Input: when the first
 * line is a Content-Type with a boundary, the rest is the body parsed with
 * that boundary (the seed corpus is written this way); otherwise the whole
 * input is a body with the fixed boundary "b0undary". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/multipart.h"
#include "voxgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_part(const vg_mp_part *p, const char *body, size_t len)
{
    if (!p->name[0] || !memchr(p->name, '\0', sizeof p->name) ||
        !memchr(p->filename, '\0', sizeof p->filename) || !memchr(p->ctype, '\0', sizeof p->ctype))
        abort();
    if (!p->has_filename && p->filename[0])
        abort();
    if (!p->data || p->data < body || p->len > len || p->data - body > (ptrdiff_t)(len - p->len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char ct[256], boundary[VG_MP_BOUNDARY_MAX + 1] = "b0undary";
    const char *nl = memchr(in, '\n', size < sizeof ct ? size : sizeof ct);
    size_t skip = 0;
    if (nl) {
        size_t n = (size_t)(nl - in);
        memcpy(ct, in, n);
        ct[n] = '\0';
        char b[VG_MP_BOUNDARY_MAX + 1];
        if (vg_mp_boundary(ct, b, sizeof b)) {
            if (strlen(b) < 1 || strlen(b) > VG_MP_BOUNDARY_MAX)
                abort();
            memcpy(boundary, b, sizeof b);
            skip = n + 1;
        }
    }
    /* A heap copy of exactly the body, so ASan sees any overread. */
    size_t len = size - skip;
    char *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, in + skip, len);
    vg_mp_part parts[8];
    size_t n = 99;
    char err[128];
    int rc = vg_mp_parse(body, len, boundary, parts, VG_ARRAY_LEN(parts), &n, err, sizeof err);
    if (rc == VG_OK) {
        if (n > VG_ARRAY_LEN(parts))
            abort();
        for (size_t i = 0; i < n; i++)
            check_part(&parts[i], body, len);
        if (n && vg_mp_find(parts, n, parts[n - 1].name) > &parts[n - 1])
            abort();
    } else if (rc != VG_EINVAL || n != 0 || strncmp(err, "multipart: ", 11) != 0) {
        abort();
    }
    free(body);
    return 0;
}
