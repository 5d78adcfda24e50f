/* A JSON answer built with cJSON, shared by the endpoint families that
 * assemble their documents as trees (breakers, models, voices). */
#include <cjson/cJSON.h>
#include <string.h>

#include "api.h"

void vg_api_reply_json(vg_req *r, cJSON *doc)
{
    char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
    if (s)
        vg_reply(r, 200, "application/json", s, strlen(s), NULL, 0);
    else
        vg_reply_error(r, 503, "out_of_memory", "cannot build the answer");
    cJSON_free(s);
    cJSON_Delete(doc);
}
