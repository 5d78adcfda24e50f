/* The provider type names the configuration accepts
 * (providers.<name>.type). Kept apart from the constructors
 * (registry.c) so that the configuration code links without the
 * providers; each type listed here has its row there. */
#include <stdio.h>
#include <string.h>

#include "voxgate/provider.h"

static const char *const names[] = {"openai", "local", "deepgram", "elevenlabs", "yandex"};

bool vg_provider_type_known(const char *type)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (!strcmp(names[i], type))
            return true;
    return false;
}

const char *vg_provider_types(void)
{
    static char list[256];
    if (!list[0]) {
        size_t n = 0;
        for (size_t i = 0; i < VG_ARRAY_LEN(names) && n < sizeof list; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? "|" : "", names[i]);
    }
    return list;
}
