/* The constructor of each provider type: the configuration names a type
 * per provider (providers.<name>.type, checked against types.c); the
 * gateway builds each through vg_provider_new. A new provider adds its
 * name to types.c, its row here and its file to meson.build. */
#include <stdio.h>
#include <string.h>

#include "voxgate/provider.h"

static int local_new(const vg_provider_conf *c, vg_engine *e, vg_provider **out, char *err,
                     size_t errlen)
{
    (void)e; /* in-process: no HTTP engine */
    return vg_provider_local_new(c, out, err, errlen);
}

static const struct {
    const char *type;
    int (*make)(const vg_provider_conf *c, vg_engine *e, vg_provider **out, char *err,
                size_t errlen);
} types[] = {
    {"openai", vg_provider_openai_new},
    {"yandex", vg_provider_yandex_new},
    {"elevenlabs", vg_provider_elevenlabs_new},
    {"local", local_new},
    {"deepgram", vg_provider_deepgram_new},
};

int vg_provider_new(const vg_provider_conf *c, vg_engine *e, vg_provider **out, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(types); i++)
        if (!strcmp(types[i].type, c->type))
            return types[i].make(c, e, out, err, errlen);
    snprintf(err, errlen, "providers.%s.type: unknown type '%s' (expected %s)", c->name, c->type,
             vg_provider_types());
    return -1;
}
