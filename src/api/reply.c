/* Answers shared by the endpoint families: a JSON answer built with
 * cJSON (breakers, models, voices), and work that needs the blob store
 * kept off the HTTP threads when the store is across the network. */
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

void vg_api_store_work(vg_req *r, void (*work)(vg_req *r, void *ud))
{
    if (vg_blob_is_remote(vg_req_app(r)->blob))
        vg_req_offload(r, work, NULL, NULL, NULL);
    else
        work(r, NULL);
}
