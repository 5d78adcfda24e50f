/* libFuzzer target: cache entry decoders must never crash, a decoded
 * STT result must lie inside the input, and whatever the tree-less JSON
 * checker accepts cJSON accepts too (the hit path relies on it), and
 * in any text cJSON accepts, the spans the batch API stores lie inside
 * it and, where the whole text is strict JSON, are strict JSON too. */
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "voxgate/entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_span(const char *in, size_t size, bool strict, const char *v, size_t n)
{
    if (v < in || v + n > in + size || (strict && !vg_json_valid(v, n)))
        abort();
}

/* The batch API's walk: members of an object, elements of an array. */
static void check_spans(const char *in, size_t size, bool strict)
{
    static const char *const names[] = {"set", "result", "a", ""};
    const char *v;
    size_t n;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (vg_json_member(in, size, names[i], &v, &n))
            check_span(in, size, strict, v, n);
    vg_json_iter it;
    if (vg_json_array(&it, in, size))
        while (vg_json_next(&it, &v, &n)) {
            check_span(in, size, strict, v, n);
            const char *m;
            size_t mn;
            if (vg_json_member(v, n, "result", &m, &mn))
                check_span(v, n, strict, m, mn);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *res;
    size_t n;
    uint64_t created;
    if (vg_stt_entry_decode(in, size, &res, &n, &created) == VG_OK &&
        (res < in || res + n > in + size))
        abort();
    bool strict = vg_json_valid(in, size);
    cJSON *doc = vg_json_parse_exact(in, size);
    if (strict && !doc)
        abort();
    if (doc)
        check_spans(in, size, strict);
    cJSON_Delete(doc);
    vg_tts_meta m;
    vg_tts_meta_decode(in, size, &m);
    return 0;
}
