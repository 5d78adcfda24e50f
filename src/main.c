/* voxgate: parse arguments, load the configuration, wire the parts the
 * configuration names (L1, the kv backend, the blob store), serve, and
 * shut down gracefully on SIGTERM/SIGINT. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api.h"
#include "api/tiers.h"
#include "voxgate/app.h"
#include "voxgate/log.h"
#include "voxgate/limiter.h"
#include "voxgate/provider.h"
#include "voxgate/redis.h"

static const char usage[] =
    "usage: voxgate [--config FILE]\n"
    "       voxgate --check-config FILE\n"
    "       voxgate --print-config [--config FILE]\n"
    "       voxgate --list-routes | --help-config | --version | --help\n"
    "\n"
    "  --config FILE        load FILE (JSON); VOXGATE_* environment variables override it\n"
    "  --check-config FILE  validate FILE plus the environment; exit 0 if valid, 2 if not\n"
    "  --print-config       print the effective configuration as JSON and exit\n"
    "  --list-routes        print every METHOD and path the server answers and exit\n"
    "  --help-config        print every option with its environment variable and default\n"
    "  --version            print the version and exit\n"
    "  --help               print this text and exit\n"
    "\n"
    "With no arguments voxgate serves on 127.0.0.1:8080 with embedded defaults\n"
    "(LMDB cache and local blobs under ./voxgate-data). See README.md.\n";

typedef struct args {
    const char *config;
    const char *check;
    bool print_config, list_routes, help_config;
} args;

static int parse_args(int argc, char **argv, args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--config") && i + 1 < argc) {
            a->config = argv[++i];
        } else if (!strcmp(s, "--check-config") && i + 1 < argc) {
            a->check = argv[++i];
        } else if (!strcmp(s, "--print-config")) {
            a->print_config = true;
        } else if (!strcmp(s, "--list-routes")) {
            a->list_routes = true;
        } else if (!strcmp(s, "--help-config")) {
            a->help_config = true;
        } else if (!strcmp(s, "--version")) {
            printf("voxgate %s\n", VG_VERSION);
            exit(0);
        } else if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(usage, stdout);
            exit(0);
        } else {
            fprintf(stderr, "voxgate: unknown or incomplete argument '%s'\n%s", s, usage);
            return -1;
        }
    }
    return 0;
}

/* "{key+}" is printed "{key}", as OpenAPI names the parameter. */
static void print_route(const char *method, const char *pattern)
{
    printf("%s ", method);
    for (const char *p = pattern; *p; p++)
        if (!(p[0] == '+' && p[1] == '}'))
            putchar(*p);
    putchar('\n');
}

static void list_routes(void)
{
    for (size_t i = 0; i < vg_nroutes; i++)
        for (unsigned m = 1; m < VG_M_OTHER; m <<= 1)
            if (vg_routes[i].methods & m)
                print_route(vg_method_name(m), vg_routes[i].pattern);
}

static int mkdir_p(const char *dir)
{
    char tmp[VG_CONF_STR + 16];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

/* redis_url set: Redis is the L2 tier (and the limiter's store). Nothing
 * connects yet: a Redis that is down at start is reported by /ready and
 * joined when it comes up, like one that goes away later. */
static int wire_redis(vg_app *app, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    vg_redis_opts ro = {.url = cfg->redis_url,
                        .connect_timeout_ms = cfg->redis.connect_timeout_ms,
                        .command_timeout_ms = cfg->redis.command_timeout_ms,
                        .backoff_base_ms = cfg->redis.backoff_base_ms,
                        .backoff_max_ms = cfg->redis.backoff_max_ms};
    if (vg_redis_open(&ro, &app->redis, err, errlen) != VG_OK)
        return -1;
    if (vg_kv_redis_open(app->redis, &app->kv) != VG_OK) {
        snprintf(err, errlen, "redis: out of memory");
        return -1;
    }
    return 0;
}

/* Rate-limit state: in Redis when redis_url is set (keys under
 * {cache.prefix}:rl:), else in this process. */
static int wire_limiter(vg_app *app, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    int rc = app->redis ? vg_limiter_redis_new(app->redis, cfg->cache.prefix, &app->limiter)
                        : vg_limiter_mem_new(cfg->ratelimit.max_keys, &app->limiter);
    if (rc != VG_OK)
        snprintf(err, errlen, "ratelimit: cannot allocate the limiter");
    return rc == VG_OK ? 0 : -1;
}

/* Open the backends the configuration names. */
static int wire(vg_app *app, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    if (mkdir_p(cfg->data_dir) != 0) {
        snprintf(err, errlen, "data_dir: cannot create '%s': %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    char path[VG_CONF_STR + 16];
    snprintf(path, sizeof path, "%s/cache", cfg->data_dir);
    vg_kv_lmdb_opts lo = {.dir = path, .max_bytes = cfg->cache.lmdb.max_bytes,
                          .sync = cfg->cache.lmdb.sync};
    if (cfg->redis_url[0] ? wire_redis(app, err, errlen) != 0
                          : vg_kv_lmdb_open(&lo, &app->kv, err, errlen) != VG_OK)
        return -1;
    if (wire_limiter(app, err, errlen) != 0)
        return -1;
    if (cfg->ratelimit.client_policy[0])
        app->v1_gate = vg_api_client_limit;
    /* S3 when s3.endpoint is set, else blobs under data_dir (issue 8). */
    if (vg_api_files_wire(app, err, errlen) != 0)
        return -1;
    vg_l1_opts l1o = {.max_bytes = cfg->cache.l1.max_bytes,
                      .max_entries = cfg->cache.l1.max_entries,
                      .shards = cfg->cache.l1.shards,
                      .max_item_bytes = cfg->cache.l1.max_item_bytes};
    app->l1 = vg_l1_new(&l1o);
    if (!app->l1) {
        snprintf(err, errlen, "cache.l1: cannot allocate");
        return -1;
    }
    return 0;
}

/* Circuit breakers (issue 5): one per configured provider, its settings
 * over breakers.*; the gating API adds others on demand. */
static int wire_breakers(vg_app *app, char *err, size_t errlen)
{
    const vg_config *cfg = app->cfg;
    app->breakers = vg_breakers_new(&cfg->breakers.defaults, cfg->breakers.max_count);
    if (!app->breakers) {
        snprintf(err, errlen, "breakers: cannot allocate");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_providers; i++) {
        vg_breaker_settings s;
        vg_config_breaker(cfg, cfg->providers[i].name, &s);
        if (vg_breakers_add(app->breakers, cfg->providers[i].name, &s) != VG_OK) {
            snprintf(err, errlen, "providers.%s.breaker: cannot create the breaker",
                     cfg->providers[i].name);
            return -1;
        }
    }
    return 0;
}

/* ---- the sweeper: expired kv entries, and TTS audio no entry can use ---- */

static struct {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic bool stop;  /* also read by a sweep in progress */
    bool running;
} sweeper = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static uint64_t mono_ms(void) { return vg_mono_ns() / 1000000u; }

static void sweep_kv(vg_app *app)
{
    uint64_t removed = 0;
    int rc = vg_kv_sweep(app->kv, &removed);
    if (rc != VG_OK || removed)
        vg_log(rc == VG_OK ? VG_LOG_DEBUG : VG_LOG_WARN, NULL, "expired entries swept",
               (vg_log_field[]){VG_LU("removed", removed), VG_LI("rc", rc)}, 2);
}

static void sweep_audio(vg_app *app)
{
    uint64_t removed = 0;
    int rc = vg_tier_tts_sweep(app, vg_clock_ms(), &sweeper.stop, &removed);
    vg_counter_add(&app->m.audio_swept, removed);
    if (rc != VG_OK)
        vg_counter_inc(&app->m.blob_errors);
    if (rc != VG_OK || removed)
        vg_log(rc == VG_OK ? VG_LOG_INFO : VG_LOG_WARN, NULL, "old tts audio swept",
               (vg_log_field[]){VG_LU("removed", removed), VG_LI("rc", rc),
                                VG_LS("error", rc != VG_OK ? vg_blob_last_error() : NULL)}, 3);
}

/* Sleeps until the sooner of the two sweeps is due, or until stopped. The
 * audio sweep runs once at start too: an instance restarted more often
 * than its interval would otherwise never run it. */
static void *sweep_loop(void *ud)
{
    vg_app *app = ud;
    pthread_setname_np(pthread_self(), "vg-sweep");
    uint64_t kv_every = app->cfg->cache.lmdb.sweep_interval_s * 1000ull;
    uint64_t audio_every = app->cfg->cache.audio_sweep_interval_s * 1000ull;
    uint64_t next_kv = mono_ms() + kv_every, next_audio = audio_every ? mono_ms() : UINT64_MAX;
    pthread_mutex_lock(&sweeper.mu);
    while (!sweeper.stop) {
        uint64_t now = mono_ms(), next = next_kv < next_audio ? next_kv : next_audio;
        if (now < next) {
            struct timespec dl = vg_deadline(CLOCK_REALTIME, next - now);
            pthread_cond_timedwait(&sweeper.cv, &sweeper.mu, &dl);
            continue;
        }
        pthread_mutex_unlock(&sweeper.mu);
        if (now >= next_kv) {
            sweep_kv(app);
            next_kv = mono_ms() + kv_every;
        }
        if (now >= next_audio) {
            sweep_audio(app);
            next_audio = mono_ms() + audio_every;
        }
        pthread_mutex_lock(&sweeper.mu);
    }
    pthread_mutex_unlock(&sweeper.mu);
    return NULL;
}

static void sweeper_stop(void)
{
    if (!sweeper.running)
        return;
    pthread_mutex_lock(&sweeper.mu);
    sweeper.stop = true;
    pthread_cond_signal(&sweeper.cv);
    pthread_mutex_unlock(&sweeper.mu);
    pthread_join(sweeper.tid, NULL);
}

/* ---- the shutdown's deadline ---- */

/* Past shutdown_timeout_ms the object store's calls still running (vg-io
 * jobs, the gateway's store queue, uploads) are cancelled: each could
 * otherwise take up to s3.timeout_ms, the store queue's one after
 * another, before the process may exit. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, done, fired;
    pthread_t tid;
    vg_blob *blob;
    uint64_t due_ms;
} cutoff = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *cutoff_main(void *ud)
{
    (void)ud;
    pthread_setname_np(pthread_self(), "vg-cutoff");
    pthread_mutex_lock(&cutoff.mu);
    for (uint64_t now; !cutoff.done && (now = mono_ms()) < cutoff.due_ms;) {
        struct timespec dl = vg_deadline(CLOCK_REALTIME, cutoff.due_ms - now);
        pthread_cond_timedwait(&cutoff.cv, &cutoff.mu, &dl);
    }
    bool fired = cutoff.fired = !cutoff.done;
    pthread_mutex_unlock(&cutoff.mu);
    if (fired) {
        vg_log(VG_LOG_WARN, NULL, "shutdown_timeout_ms passed: object store calls cancelled", NULL, 0);
        vg_blob_cancel(cutoff.blob);
    }
    return NULL;
}

static void cutoff_start(vg_blob *blob, unsigned ms)
{
    if (!blob || !blob->ops->cancel)
        return;
    cutoff.blob = blob;
    cutoff.due_ms = mono_ms() + ms;
    cutoff.running = pthread_create(&cutoff.tid, NULL, cutoff_main, NULL) == 0;
}

/* True when the deadline passed (and calls were cancelled). */
static bool cutoff_stop(void)
{
    if (!cutoff.running)
        return false;
    pthread_mutex_lock(&cutoff.mu);
    cutoff.done = true;
    pthread_cond_signal(&cutoff.cv);
    pthread_mutex_unlock(&cutoff.mu);
    pthread_join(cutoff.tid, NULL);
    return cutoff.fired;
}

static int serve(vg_app *app)
{
    char err[512];
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Block before any thread starts so only sigwait below sees them. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    vg_log_init(1, app->cfg->log_level, 5);
    bool wired = wire(app, err, sizeof err) == 0 && wire_breakers(app, err, sizeof err) == 0 &&
                 vg_gateway_wire(app, err, sizeof err) == 0;
    if (wired) {
        /* Before the first request: /stats and /metrics are whole from it on. */
        vg_api_register_metrics(app);
        vg_breakers_register_metrics(app->breakers);
    }
    if (!wired || vg_http_start(app, vg_routes, vg_nroutes, err, sizeof err) != 0) {
        vg_log(VG_LOG_ERROR, NULL, err, NULL, 0);
        vg_log_shutdown();
        fprintf(stderr, "voxgate: %s\n", err);
        return 1;
    }
    sweeper.running = pthread_create(&sweeper.tid, NULL, sweep_loop, app) == 0;
    vg_log(VG_LOG_INFO, NULL, "listening",
           (vg_log_field[]){VG_LS("listen", app->cfg->listen), VG_LU("port", vg_http_port()),
                            VG_LS("version", VG_VERSION), VG_LS("kv", app->kv->ops->name),
                            VG_LS("blob", app->blob->ops->name),
                            VG_LS("data_dir", app->cfg->data_dir),
                            VG_LS("event_loop", app->cfg->event_loop)},
           7);
    vg_log_flush();
    int sig = 0;
    sigwait(&set, &sig);
    vg_log(VG_LOG_INFO, NULL, "shutting down",
           (vg_log_field[]){VG_LS("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")}, 1);
    vg_http_quiesce();
    cutoff_start(app->blob, app->cfg->shutdown_timeout_ms);
    bool idle = vg_http_wait_idle(app->cfg->shutdown_timeout_ms);
    vg_http_stop();
    vg_gateway_stop(); /* before the stores its flights write to close */
    if (!vg_api_files_drain(app->cfg->shutdown_timeout_ms + 30000u))
        idle = false;
    if (cutoff_stop())
        idle = false;
    sweeper_stop();
    vg_log(idle ? VG_LOG_INFO : VG_LOG_WARN, NULL, "stopped",
           (vg_log_field[]){VG_LB("drained", idle)}, 1);
    vg_log_shutdown();
    vg_redis_close(app->redis); /* first: its event thread's callbacks use kv and limiter */
    vg_kv_close(app->kv);
    vg_limiter_close(app->limiter);
    vg_blob_close(app->blob);
    vg_l1_free(app->l1);
    vg_metrics_reset();
    vg_breakers_free(app->breakers); /* after the metrics that point into it */
    return 0;
}

/* --check-config: each gateway provider is built once, so the settings
 * only its type knows (yandex auth, an elevenlabs voice...) are checked
 * as a start would check them. 0, or 2 with the message on stderr. */
static int check_providers(const vg_config *cfg)
{
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const vg_provider_conf *pc = &cfg->providers[i];
        vg_provider *p;
        char err[512];
        if (!pc->type[0])
            continue;
        if (vg_provider_new(pc, NULL, &p, err, sizeof err) != 0) {
            fprintf(stderr, "voxgate: %s\n", err);
            return 2;
        }
        p->ops->destroy(p);
    }
    return 0;
}

int main(int argc, char **argv)
{
    args a = {0};
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    if (a.list_routes) {
        list_routes();
        return 0;
    }
    if (a.help_config) {
        char *d = vg_config_describe();
        fputs(d ? d : "", stdout);
        free(d);
        return 0;
    }
    static vg_config cfg;
    char err[512];
    if (vg_config_load(&cfg, a.check ? a.check : a.config, err, sizeof err) != 0) {
        fprintf(stderr, "voxgate: %s\n", err);
        vg_config_free(&cfg);
        return 2;
    }
    if (a.check) {
        int rc = check_providers(&cfg);
        if (rc == 0)
            printf("%s: ok\n", a.check);
        vg_config_free(&cfg);
        return rc;
    }
    if (a.print_config) {
        char *j = vg_config_to_json(&cfg);
        puts(j ? j : "{}");
        free(j);
        vg_config_free(&cfg);
        return 0;
    }
    /* A Redis hit's body is allocated on the Redis thread and freed on an
     * HTTP one. With glibc's default trim threshold those frees keep
     * handing the top of the heap back (madvise, a TLB flush on every
     * core) and the next hits fault it in again; a fixed 4 MiB keeps it. */
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    static vg_app app;
    app.cfg = &cfg;
    app.started_ms = vg_clock_ms();
    int rc = serve(&app);
    vg_config_free(&cfg);
    return rc;
}
