/* libFuzzer target: cache entry decoders must never crash, a decoded
 * STT result must lie inside the input, and whatever the tree-less JSON
 * checker accepts cJSON accepts too (the hit path relies on it). */
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "voxgate/entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *res;
    size_t n;
    uint64_t created;
    if (vg_stt_entry_decode(in, size, &res, &n, &created) == VG_OK &&
        (res < in || res + n > in + size))
        abort();
    if (vg_json_valid(in, size)) {
        cJSON *doc = vg_json_parse_exact(in, size);
        if (!doc)
            abort();
        cJSON_Delete(doc);
    }
    vg_tts_meta m;
    vg_tts_meta_decode(in, size, &m);
    return 0;
}
