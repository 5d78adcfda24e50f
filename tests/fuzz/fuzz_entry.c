/* libFuzzer target: cache entry decoders must never crash, and a decoded
 * STT result must lie inside the input. */
#include <stdint.h>
#include <stdlib.h>

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
    vg_tts_meta m;
    vg_tts_meta_decode(in, size, &m);
    return 0;
}
