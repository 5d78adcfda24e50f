/* libFuzzer target for the configuration parser: arbitrary bytes are
 * applied as a JSON document over the defaults. Any outcome is fine as
 * long as nothing crashes, leaks or trips a sanitizer, the error message
 * is a terminated string, and an accepted document still serialises. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vg_config cfg;
    char err[256];
    memset(err, 'x', sizeof err);
    vg_config_defaults(&cfg);
    if (vg_config_apply_json(&cfg, (const char *)data, size, err, sizeof err) == 0) {
        /* The effective config of an accepted document must be accepted too. */
        char *json = vg_config_to_json(&cfg);
        if (json) {
            vg_config again;
            vg_config_defaults(&again);
            if (vg_config_apply_json(&again, json, strlen(json), err, sizeof err) != 0)
                abort();
            vg_config_free(&again);
            free(json);
        }
    } else if (!memchr(err, '\0', sizeof err)) {
        abort();
    }
    vg_config_free(&cfg);
    return 0;
}
