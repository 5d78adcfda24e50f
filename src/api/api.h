/* Handlers of the endpoint families and the one route table that binds
 * them to paths (src/api/routes.c). Internal to voxgate. */
#ifndef VOXGATE_API_H
#define VOXGATE_API_H

#include "voxgate/app.h"
#include "voxgate/http.h"

extern const vg_route vg_routes[];
extern const size_t vg_nroutes;

/* cache.c: the cache-aside API */
void vg_api_cache_stt(vg_req *r);
void vg_api_cache_tts(vg_req *r);
void vg_api_cache_batch(vg_req *r);
void vg_api_cache_invalidate(vg_req *r);

/* ops.c: health, readiness, stats, metrics */
void vg_api_health(vg_req *r);
void vg_api_ready(vg_req *r);
void vg_api_stats(vg_req *r);
void vg_api_metrics(vg_req *r);
/* Register every metric of the app in the registry (once, at start). */
void vg_api_register_metrics(vg_app *app);

#endif
