/* Operations view of the Redis client: its connection counters and
 * whether it is up, registered in the metrics registry (/stats "redis",
 * /metrics voxgate_redis_*) when redis_url is set. */
#include "api.h"
#include "voxgate/redis.h"

#define REDIS_STAT(field)                                \
    static double redis_##field(void *ud)                \
    {                                                    \
        vg_redis_stats s;                                \
        vg_redis_stats_get(((vg_app *)ud)->redis, &s);   \
        return (double)s.field;                          \
    }
REDIS_STAT(connects)
REDIS_STAT(reconnects)
REDIS_STAT(failures)
REDIS_STAT(fast_fails)
REDIS_STAT(up)

void vg_api_register_redis_metrics(vg_app *app)
{
    if (!app->redis)
        return;
    vg_metrics_counter_fn("voxgate_redis_connects_total", NULL,
                          "Redis connections established.", "redis.connects", redis_connects,
                          app);
    vg_metrics_counter_fn("voxgate_redis_reconnects_total", NULL,
                          "Redis connections established after a failure.", "redis.reconnects",
                          redis_reconnects, app);
    vg_metrics_counter_fn("voxgate_redis_failures_total", NULL,
                          "Redis round trips that failed (down, timeout, I/O).",
                          "redis.failures", redis_failures, app);
    vg_metrics_counter_fn("voxgate_redis_fast_fails_total", NULL,
                          "Redis calls refused at once during a reconnection backoff.",
                          "redis.fast_fails", redis_fast_fails, app);
    vg_metrics_gauge("voxgate_redis_up", NULL,
                     "1 when the last Redis round trip succeeded, 0 during a backoff.",
                     "redis.up", redis_up, app);
}
