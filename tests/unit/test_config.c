/* Unit tests for the configuration loader: defaults, a full file, every
 * error class with its exact field path, environment overrides, key lists,
 * the JSON round trip and the option listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "voxgate/config.h"

/* ---- a fake environment ------------------------------------------------ */

typedef struct {
    const char *name, *value;
} env_var;

static const env_var *fake_env;
static size_t fake_env_n;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < fake_env_n; i++)
        if (!strcmp(fake_env[i].name, name))
            return fake_env[i].value;
    return NULL;
}

#define SET_ENV(arr) (fake_env = (arr), fake_env_n = sizeof(arr) / sizeof((arr)[0]))

static const char *empty_getenv(const char *name)
{
    (void)name;
    return NULL;
}

/* ---- helpers ------------------------------------------------------------ */

static int apply(vg_config *cfg, const char *json, char *err, size_t errlen)
{
    return vg_config_apply_json(cfg, json, strlen(json), err, errlen);
}

/* Apply json over defaults and expect exactly this error message. */
static void expect_error(const char *json, const char *want)
{
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    int rc = apply(&cfg, json, err, sizeof err);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("json %s\n  want: %s\n  got (rc=%d): %s", json, want, rc, err);
    vg_config_free(&cfg);
}

/* Like expect_error, but only the beginning of the message is fixed. */
static void expect_error_prefix(const char *json, const char *want)
{
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    int rc = apply(&cfg, json, err, sizeof err);
    if (rc != -1 || strncmp(err, want, strlen(want)) != 0)
        fail_msg("json %s\n  want prefix: %s\n  got (rc=%d): %s", json, want, rc, err);
}

static void expect_finish_error(const char *json, const char *want)
{
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, json, err, sizeof err), 0);
    int rc = vg_config_finish(&cfg, empty_getenv, err, sizeof err);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("json %s\n  want: %s\n  got (rc=%d): %s", json, want, rc, err);
    vg_config_free(&cfg);
}

/* Circuit breaker settings (issue 5), field by field. */
static void assert_same_breaker(const vg_breaker_settings *a, const vg_breaker_settings *b)
{
    assert_int_equal(a->failure_threshold, b->failure_threshold);
    assert_true(a->failure_rate_threshold == b->failure_rate_threshold);
    assert_int_equal(a->window_size, b->window_size);
    assert_int_equal(a->min_calls, b->min_calls);
    assert_int_equal(a->recovery_timeout_ms, b->recovery_timeout_ms);
    assert_int_equal(a->half_open_max_calls, b->half_open_max_calls);
    assert_int_equal(a->success_threshold, b->success_threshold);
    assert_int_equal(a->call_timeout_ms, b->call_timeout_ms);
}

/* Field-by-field equality of everything the file and env can set. */
static void assert_same_config(const vg_config *a, const vg_config *b)
{
    assert_string_equal(a->listen, b->listen);
    assert_string_equal(a->data_dir, b->data_dir);
    assert_int_equal(a->log_level, b->log_level);
    assert_int_equal(a->threads, b->threads);
    assert_int_equal(a->shutdown_timeout_ms, b->shutdown_timeout_ms);
    assert_string_equal(a->api_keys_env, b->api_keys_env);
    assert_string_equal(a->admin_keys_env, b->admin_keys_env);
    assert_int_equal(a->metrics_public, b->metrics_public);
    assert_int_equal(a->limits.max_body_bytes, b->limits.max_body_bytes);
    assert_int_equal(a->limits.max_tts_chars, b->limits.max_tts_chars);
    assert_int_equal(a->limits.max_header_bytes, b->limits.max_header_bytes);
    assert_int_equal(a->limits.max_url_bytes, b->limits.max_url_bytes);
    assert_int_equal(a->limits.max_connections, b->limits.max_connections);
    assert_int_equal(a->limits.max_connections_per_ip, b->limits.max_connections_per_ip);
    assert_int_equal(a->limits.idle_timeout_s, b->limits.idle_timeout_s);
    assert_string_equal(a->cache.prefix, b->cache.prefix);
    assert_int_equal(a->cache.stt_ttl_s, b->cache.stt_ttl_s);
    assert_int_equal(a->cache.tts_ttl_s, b->cache.tts_ttl_s);
    assert_int_equal(a->cache.max_ttl_s, b->cache.max_ttl_s);
    assert_int_equal(a->cache.batch_max_items, b->cache.batch_max_items);
    assert_int_equal(a->cache.audio_sweep_interval_s, b->cache.audio_sweep_interval_s);
    assert_int_equal(a->cache.audio_sweep_grace_s, b->cache.audio_sweep_grace_s);
    assert_int_equal(a->cache.l1.max_bytes, b->cache.l1.max_bytes);
    assert_int_equal(a->cache.l1.max_entries, b->cache.l1.max_entries);
    assert_int_equal(a->cache.l1.shards, b->cache.l1.shards);
    assert_int_equal(a->cache.l1.max_item_bytes, b->cache.l1.max_item_bytes);
    assert_int_equal(a->cache.lmdb.max_bytes, b->cache.lmdb.max_bytes);
    assert_int_equal(a->cache.lmdb.sweep_interval_s, b->cache.lmdb.sweep_interval_s);
    assert_string_equal(a->cache.lmdb.sync, b->cache.lmdb.sync);
    assert_string_equal(a->event_loop, b->event_loop);
    assert_string_equal(a->redis_url, b->redis_url);
    assert_int_equal(a->redis.connect_timeout_ms, b->redis.connect_timeout_ms);
    assert_int_equal(a->redis.command_timeout_ms, b->redis.command_timeout_ms);
    assert_int_equal(a->redis.backoff_base_ms, b->redis.backoff_base_ms);
    assert_int_equal(a->redis.backoff_max_ms, b->redis.backoff_max_ms);
    assert_string_equal(a->ratelimit.fail_mode, b->ratelimit.fail_mode);
    assert_int_equal(a->ratelimit.max_keys, b->ratelimit.max_keys);
    assert_string_equal(a->ratelimit.client_policy, b->ratelimit.client_policy);
    assert_int_equal(a->ratelimit.n_policies, b->ratelimit.n_policies);
    assert_same_breaker(&a->breakers.defaults, &b->breakers.defaults);
    assert_int_equal(a->breakers.max_count, b->breakers.max_count);
    assert_int_equal(a->n_providers, b->n_providers);
    for (size_t i = 0; i < a->n_providers; i++) {
        assert_string_equal(a->providers[i].name, b->providers[i].name);
        assert_int_equal(a->providers[i].cache_epoch, b->providers[i].cache_epoch);
        vg_breaker_settings ea, eb; /* effective: inherited fields filled in */
        vg_config_breaker(a, a->providers[i].name, &ea);
        vg_config_breaker(b, b->providers[i].name, &eb);
        assert_same_breaker(&ea, &eb);
    }
}

/* Every option set away from its default. */
static const char *FULL_JSON =
    "{\n"
    "  \"listen\": \"[::1]:9090\",\n"
    "  \"data_dir\": \"/var/lib/voxgate\",\n"
    "  \"log_level\": \"debug\",\n"
    "  \"threads\": 8,\n"
    "  \"shutdown_timeout_ms\": 2500,\n"
    "  \"api_keys_env\": \"MY_API_KEYS\",\n"
    "  \"admin_keys_env\": \"MY_ADMIN_KEYS\",\n"
    "  \"metrics_public\": true,\n"
    "  \"breakers\": {\"failure_threshold\": 9, \"failure_rate_threshold\": 0.25,\n"
    "               \"window_size\": 50, \"min_calls\": 20, \"recovery_timeout_ms\": 1234,\n"
    "               \"half_open_max_calls\": 4, \"success_threshold\": 3,\n"
    "               \"call_timeout_ms\": 777, \"max_count\": 12},\n"
    "  \"limits\": {\"max_body_bytes\": 1048576, \"max_tts_chars\": 300,\n"
    "             \"max_header_bytes\": 4096, \"max_url_bytes\": 1024,\n"
    "             \"max_connections\": 50, \"max_connections_per_ip\": 5,\n"
    "             \"idle_timeout_s\": 10},\n"
    "  \"cache\": {\n"
    "    \"prefix\": \"vg-test.1\", \"stt_ttl_s\": 100, \"tts_ttl_s\": 200,\n"
    "    \"max_ttl_s\": 300, \"batch_max_items\": 7,\n"
    "    \"l1\": {\"max_bytes\": 2097152, \"max_entries\": 99, \"shards\": 4,\n"
    "           \"max_item_bytes\": 65536},\n"
    "    \"lmdb\": {\"max_bytes\": 10485760, \"sweep_interval_s\": 5, \"sync\": \"full\"}\n"
    "  },\n"
    "  \"providers\": {\"openai\": {\"cache_epoch\": 3}, \"eleven-labs.v2\": {},\n"
    "                \"deepgram\": {\"cache_epoch\": 4294967295}}\n"
    "}\n";

static void load_full(vg_config *cfg)
{
    char err[256] = "";
    vg_config_defaults(cfg);
    if (apply(cfg, FULL_JSON, err, sizeof err) != 0)
        fail_msg("full json rejected: %s", err);
}

/* ---- tests -------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    vg_config cfg;
    memset(&cfg, 0xAB, sizeof cfg); /* defaults must not depend on prior contents */
    vg_config_defaults(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.data_dir, "./voxgate-data");
    assert_int_equal(cfg.log_level, VG_LOG_INFO);
    assert_int_equal(cfg.threads, 0);
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_string_equal(cfg.event_loop, "epoll");
    assert_string_equal(cfg.api_keys_env, "VOXGATE_API_KEYS");
    assert_string_equal(cfg.admin_keys_env, "VOXGATE_ADMIN_KEYS");
    assert_false(cfg.metrics_public);
    assert_int_equal(cfg.limits.max_body_bytes, 26214400);
    assert_int_equal(cfg.limits.max_tts_chars, 5000);
    assert_int_equal(cfg.limits.max_header_bytes, 16384);
    assert_int_equal(cfg.limits.max_url_bytes, 8192);
    assert_int_equal(cfg.limits.max_connections, 1024);
    assert_int_equal(cfg.limits.max_connections_per_ip, 0);
    assert_int_equal(cfg.limits.idle_timeout_s, 30);
    assert_string_equal(cfg.cache.prefix, "voxgate");
    assert_int_equal(cfg.cache.stt_ttl_s, 86400);
    assert_int_equal(cfg.cache.tts_ttl_s, 604800);
    assert_int_equal(cfg.cache.max_ttl_s, 2592000);
    assert_int_equal(cfg.cache.batch_max_items, 100);
    assert_int_equal(cfg.cache.audio_sweep_interval_s, 3600);
    assert_int_equal(cfg.cache.audio_sweep_grace_s, 3600);
    assert_int_equal(cfg.cache.l1.max_bytes, 67108864);
    assert_int_equal(cfg.cache.l1.max_entries, 100000);
    assert_int_equal(cfg.cache.l1.shards, 16);
    assert_int_equal(cfg.cache.l1.max_item_bytes, 1048576);
    assert_int_equal(cfg.cache.lmdb.max_bytes, 1073741824);
    assert_int_equal(cfg.cache.lmdb.sweep_interval_s, 60);
    assert_string_equal(cfg.cache.lmdb.sync, "meta");
    assert_int_equal(cfg.n_providers, 0);
    assert_null(cfg.api_keys);
    assert_int_equal(cfg.n_api_keys, 0);
    assert_null(cfg.admin_keys);

    char err[256] = "";
    if (vg_config_finish(&cfg, empty_getenv, err, sizeof err) != 0)
        fail_msg("defaults fail finish: %s", err);
    vg_config_free(&cfg);
}

static void test_empty_object_keeps_defaults(void **state)
{
    (void)state;
    vg_config a, b;
    char err[256] = "";
    vg_config_defaults(&a);
    vg_config_defaults(&b);
    assert_int_equal(apply(&a, "  {}\n", err, sizeof err), 0);
    assert_same_config(&a, &b);
}

static void test_full_file(void **state)
{
    (void)state;
    vg_config cfg;
    load_full(&cfg);
    assert_string_equal(cfg.listen, "[::1]:9090");
    assert_string_equal(cfg.data_dir, "/var/lib/voxgate");
    assert_int_equal(cfg.log_level, VG_LOG_DEBUG);
    assert_int_equal(cfg.threads, 8);
    assert_int_equal(cfg.shutdown_timeout_ms, 2500);
    assert_string_equal(cfg.api_keys_env, "MY_API_KEYS");
    assert_string_equal(cfg.admin_keys_env, "MY_ADMIN_KEYS");
    assert_true(cfg.metrics_public);
    assert_int_equal(cfg.limits.max_body_bytes, 1048576);
    assert_int_equal(cfg.limits.max_tts_chars, 300);
    assert_int_equal(cfg.limits.max_header_bytes, 4096);
    assert_int_equal(cfg.limits.max_url_bytes, 1024);
    assert_int_equal(cfg.limits.max_connections, 50);
    assert_int_equal(cfg.limits.max_connections_per_ip, 5);
    assert_int_equal(cfg.limits.idle_timeout_s, 10);
    assert_string_equal(cfg.cache.prefix, "vg-test.1");
    assert_int_equal(cfg.cache.stt_ttl_s, 100);
    assert_int_equal(cfg.cache.tts_ttl_s, 200);
    assert_int_equal(cfg.cache.max_ttl_s, 300);
    assert_int_equal(cfg.cache.batch_max_items, 7);
    assert_int_equal(cfg.cache.l1.max_bytes, 2097152);
    assert_int_equal(cfg.cache.l1.max_entries, 99);
    assert_int_equal(cfg.cache.l1.shards, 4);
    assert_int_equal(cfg.cache.l1.max_item_bytes, 65536);
    assert_int_equal(cfg.cache.lmdb.max_bytes, 10485760);
    assert_int_equal(cfg.cache.lmdb.sweep_interval_s, 5);
    assert_string_equal(cfg.cache.lmdb.sync, "full");
    assert_int_equal(cfg.n_providers, 3);
    assert_int_equal(vg_config_cache_epoch(&cfg, "openai"), 3);
    assert_int_equal(vg_config_cache_epoch(&cfg, "eleven-labs.v2"), 0);
    assert_int_equal(vg_config_cache_epoch(&cfg, "deepgram"), 4294967295u);
    assert_int_equal(vg_config_cache_epoch(&cfg, "nobody"), 0);
    assert_int_equal(vg_config_cache_epoch(&cfg, NULL), 0);

    char err[256] = "";
    if (vg_config_finish(&cfg, empty_getenv, err, sizeof err) != 0)
        fail_msg("full config fails finish: %s", err);
    vg_config_free(&cfg);
}

static void test_later_documents_merge(void **state)
{
    (void)state;
    vg_config cfg;
    char err[256] = "";
    load_full(&cfg);
    assert_int_equal(apply(&cfg, "{\"threads\": 2, \"providers\": {\"openai\": "
                                 "{\"cache_epoch\": 9}, \"new\": {\"cache_epoch\": 1}}}",
                           err, sizeof err),
                     0);
    assert_int_equal(cfg.threads, 2);
    assert_string_equal(cfg.listen, "[::1]:9090"); /* untouched */
    assert_int_equal(cfg.n_providers, 4);
    assert_int_equal(vg_config_cache_epoch(&cfg, "openai"), 9);
    assert_int_equal(vg_config_cache_epoch(&cfg, "new"), 1);
}

static void test_unknown_fields(void **state)
{
    (void)state;
    expect_error("{\"bogus\": 1}", "bogus: unknown field");
    expect_error("{\"limits\": {\"bogus\": 1}}", "limits.bogus: unknown field");
    expect_error("{\"cache\": {\"l1\": {\"bogus\": true}}}", "cache.l1.bogus: unknown field");
    expect_error("{\"cache\": {\"lmdb\": {\"max_bytes\": 1048576, \"syncc\": \"full\"}}}",
                 "cache.lmdb.syncc: unknown field");
    expect_error("{\"providers\": {\"openai\": {\"epoch\": 1}}}",
                 "providers.openai.epoch: unknown field");
    /* Case matters and dotted keys are not a shortcut for nesting. */
    expect_error("{\"Listen\": \"a:1\"}", "Listen: unknown field");
    expect_error("{\"cache.prefix\": \"x\"}", "cache.prefix: unknown field");
    expect_error("{\"cache\": {\"l1.shards\": 2}}", "cache.l1.shards: unknown field");
    expect_error("{\"\": 1}", "(root): unknown field");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error("{\"listen\": 8080}", "listen: expected string");
    expect_error("{\"data_dir\": null}", "data_dir: expected string");
    expect_error("{\"log_level\": 1}", "log_level: expected string");
    expect_error("{\"metrics_public\": \"true\"}", "metrics_public: expected boolean");
    expect_error("{\"metrics_public\": 1}", "metrics_public: expected boolean");
    expect_error("{\"threads\": \"4\"}", "threads: expected integer");
    expect_error("{\"threads\": true}", "threads: expected integer");
    expect_error("{\"cache\": {\"l1\": {\"max_bytes\": \"64MiB\"}}}",
                 "cache.l1.max_bytes: expected integer");
    expect_error("{\"limits\": 3}", "limits: expected object");
    expect_error("{\"limits\": []}", "limits: expected object");
    expect_error("{\"cache\": {\"l1\": [1]}}", "cache.l1: expected object");
    expect_error("{\"providers\": [\"openai\"]}", "providers: expected object");
    expect_error("{\"providers\": {\"openai\": 2}}", "providers.openai: expected object");
    expect_error("[]", "(root): expected object");
    expect_error("\"x\"", "(root): expected object");
}

static void test_integers(void **state)
{
    (void)state;
    expect_error("{\"threads\": 1.5}", "threads: expected integer");
    expect_error("{\"cache\": {\"stt_ttl_s\": 0.1}}", "cache.stt_ttl_s: expected integer");
    expect_error("{\"threads\": -1}", "threads: out of range (expected 0..256)");
    expect_error("{\"threads\": 257}", "threads: out of range (expected 0..256)");
    expect_error("{\"limits\": {\"max_body_bytes\": 1e30}}",
                 "limits.max_body_bytes: out of range (expected 1..1099511627776)");
    expect_error("{\"limits\": {\"max_body_bytes\": 9007199254740993}}",
                 "limits.max_body_bytes: out of range (expected 1..1099511627776)");
    expect_error("{\"limits\": {\"max_body_bytes\": 0}}",
                 "limits.max_body_bytes: out of range (expected 1..1099511627776)");
    expect_error("{\"cache\": {\"l1\": {\"shards\": 0}}}",
                 "cache.l1.shards: out of range (expected 1..1024)");
    expect_error("{\"cache\": {\"l1\": {\"shards\": 1025}}}",
                 "cache.l1.shards: out of range (expected 1..1024)");
    expect_error("{\"cache\": {\"max_ttl_s\": 0}}",
                 "cache.max_ttl_s: out of range (expected 1..315360000)");
    expect_error("{\"providers\": {\"p\": {\"cache_epoch\": 4294967296}}}",
                 "providers.p.cache_epoch: out of range (expected 0..4294967295)");
    /* Whole numbers written with an exponent or a fraction part are fine. */
    vg_config cfg;
    char err[256] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, "{\"threads\": 4.0, \"limits\": {\"max_tts_chars\": 1e3}}",
                           err, sizeof err),
                     0);
    assert_int_equal(cfg.threads, 4);
    assert_int_equal(cfg.limits.max_tts_chars, 1000);
    assert_int_equal(apply(&cfg, "{\"threads\": 256, \"cache\": {\"l1\": {\"shards\": 1024}}}",
                           err, sizeof err),
                     0);
    assert_int_equal(cfg.threads, 256);
    assert_int_equal(cfg.cache.l1.shards, 1024);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error("{\"listen\": \"a:1\", \"listen\": \"b:2\"}", "listen: duplicate key");
    expect_error("{\"cache\": {\"l1\": {\"shards\": 2, \"max_bytes\": 9, \"shards\": 4}}}",
                 "cache.l1.shards: duplicate key");
    expect_error("{\"limits\": {}, \"limits\": {}}", "limits: duplicate key");
    expect_error("{\"providers\": {\"a\": {}, \"a\": {}}}", "providers.a: duplicate key");
    expect_error("{\"providers\": {\"a\": {\"cache_epoch\": 1, \"cache_epoch\": 2}}}",
                 "providers.a.cache_epoch: duplicate key");
}

static void test_invalid_json(void **state)
{
    (void)state;
    expect_error_prefix("{\"listen\": }", "(root): invalid JSON near byte 11");
    expect_error_prefix("{\"threads\": 1,\n \"x\" 2}", "(root): invalid JSON near byte ");
    expect_error("{\"a\":1,\n\"b\" 2}", "(root): invalid JSON near byte 12 (line 2, column 5)");
    expect_error("{} x", "(root): invalid JSON near byte 3 (line 1, column 4)");
    expect_error_prefix("", "(root): invalid JSON near byte 0");
    expect_error_prefix("{\"threads\": 1", "(root): invalid JSON near byte ");
    /* Trailing whitespace is fine; a NUL byte inside the buffer is not. */
    vg_config cfg;
    char err[256] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, "{\"threads\": 3}\n\t \r\n", err, sizeof err), 0);
    assert_int_equal(cfg.threads, 3);
    assert_int_equal(vg_config_apply_json(&cfg, "{}\0{}", 5, err, sizeof err), -1);
    assert_string_equal(err, "(root): invalid JSON near byte 2 (line 1, column 3)");
    /* Only the first len bytes count. */
    assert_int_equal(vg_config_apply_json(&cfg, "{\"threads\": 5}garbage", 14, err, sizeof err),
                     0);
    assert_int_equal(cfg.threads, 5);
}

static void test_bad_enums_and_strings(void **state)
{
    (void)state;
    expect_error("{\"log_level\": \"verbose\"}",
                 "log_level: expected one of debug|info|warn|error");
    expect_error("{\"cache\": {\"lmdb\": {\"sync\": \"always\"}}}",
                 "cache.lmdb.sync: expected one of full|meta|none");
    expect_error("{\"cache\": {\"lmdb\": {\"sync\": \"\"}}}",
                 "cache.lmdb.sync: expected one of full|meta|none");
    expect_error("{\"event_loop\": \"select\"}", "event_loop: expected one of epoll|poll");
    expect_error("{\"event_loop\": \"EPOLL\"}", "event_loop: expected one of epoll|poll");
    expect_error("{\"cache\": {\"prefix\": \"has space\"}}",
                 "cache.prefix: expected identifier [A-Za-z0-9_.-]{1,64}");
    expect_error("{\"cache\": {\"prefix\": \"\"}}",
                 "cache.prefix: expected identifier [A-Za-z0-9_.-]{1,64}");
    expect_error("{\"api_keys_env\": \"1BAD\"}",
                 "api_keys_env: expected environment variable name [A-Za-z_][A-Za-z0-9_]*");
    expect_error("{\"admin_keys_env\": \"A-B\"}",
                 "admin_keys_env: expected environment variable name [A-Za-z_][A-Za-z0-9_]*");

    char big[400], json[512];
    memset(big, 'd', 300);
    big[300] = '\0';
    snprintf(json, sizeof json, "{\"data_dir\": \"%s\"}", big);
    expect_error(json, "data_dir: too long (max 255 bytes)");

    /* Control characters from a key are masked in the message. */
    expect_error("{\"a\\nb\": 1}", "a?b: unknown field");
}

static void test_listen(void **state)
{
    (void)state;
    static const char *bad[] = {"localhost", "host:0", "host:65536", "host:", ":8080",
                                "[::1]8080", "::1:8080", "[::1]:", "[]:80", "[1.2.3.4]:80",
                                "host:80x", "host:+80", "ho st:80", "host:123456", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (vg_config_parse_listen(bad[i], NULL, 0, NULL))
            fail_msg("accepted listen \"%s\"", bad[i]);
        char json[128];
        snprintf(json, sizeof json, "{\"listen\": \"%s\"}", bad[i]);
        expect_error(json, "listen: expected host:port with port 1..65535 (IPv6 as [::1]:8080)");
    }
    char host[64];
    uint16_t port = 0;
    assert_true(vg_config_parse_listen("[::1]:8080", host, sizeof host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8080);
    assert_true(vg_config_parse_listen("0.0.0.0:1", host, sizeof host, &port));
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 1);
    assert_true(vg_config_parse_listen("my-host.internal:65535", host, sizeof host, &port));
    assert_string_equal(host, "my-host.internal");
    assert_int_equal(port, 65535);
    assert_true(vg_config_parse_listen("[fe80::1%eth0]:443", host, sizeof host, &port));
    assert_string_equal(host, "fe80::1%eth0");
    /* A host that does not fit is refused rather than cut. */
    assert_false(vg_config_parse_listen("localhost:80", host, 5, &port));
    assert_false(vg_config_parse_listen(NULL, host, sizeof host, &port));
}

static void test_provider_names(void **state)
{
    (void)state;
    expect_error("{\"providers\": {\"bad name\": {}}}",
                 "providers.bad name: invalid provider name (expected [A-Za-z0-9_.-]{1,64})");
    expect_error("{\"providers\": {\"\": {}}}",
                 "providers: invalid provider name (expected [A-Za-z0-9_.-]{1,64})");
    char json[8192], name[70];
    memset(name, 'n', 65);
    name[65] = '\0';
    snprintf(json, sizeof json, "{\"providers\": {\"%s\": {}}}", name);
    char want[256];
    snprintf(want, sizeof want,
             "providers.%s: invalid provider name (expected [A-Za-z0-9_.-]{1,64})", name);
    expect_error(json, want);

    /* VG_MAX_PROVIDERS fit, one more does not. */
    size_t off = (size_t)snprintf(json, sizeof json, "{\"providers\": {");
    for (int i = 0; i <= VG_MAX_PROVIDERS; i++)
        off += (size_t)snprintf(json + off, sizeof json - off, "%s\"p%d\": {}", i ? "," : "", i);
    snprintf(json + off, sizeof json - off, "}}");
    snprintf(want, sizeof want, "providers.p%d: too many providers (max %d)", VG_MAX_PROVIDERS,
             VG_MAX_PROVIDERS);
    expect_error(json, want);
}

static void test_cross_field(void **state)
{
    (void)state;
    expect_finish_error("{\"cache\": {\"stt_ttl_s\": 3000000}}",
                        "cache.stt_ttl_s: must be <= cache.max_ttl_s (2592000), got 3000000");
    expect_finish_error("{\"cache\": {\"max_ttl_s\": 100, \"stt_ttl_s\": 50}}",
                        "cache.tts_ttl_s: must be <= cache.max_ttl_s (100), got 604800");
    expect_finish_error("{\"cache\": {\"l1\": {\"max_bytes\": 1000}}}",
                        "cache.l1.max_item_bytes: must be <= cache.l1.max_bytes (1000), got "
                        "1048576");
    expect_finish_error("{\"data_dir\": \"\"}", "data_dir: must not be empty");
    expect_finish_error("{\"admin_keys_env\": \"VOXGATE_API_KEYS\"}",
                        "admin_keys_env: must differ from api_keys_env");
    /* Equal values are allowed. */
    vg_config cfg;
    char err[256] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg,
                           "{\"cache\": {\"stt_ttl_s\": 9, \"tts_ttl_s\": 9, \"max_ttl_s\": 9,"
                           " \"l1\": {\"max_bytes\": 5, \"max_item_bytes\": 5}}}",
                           err, sizeof err),
                     0);
    assert_int_equal(vg_config_finish(&cfg, empty_getenv, err, sizeof err), 0);
    vg_config_free(&cfg);
}

static void test_failed_apply_leaves_config(void **state)
{
    (void)state;
    vg_config cfg, before;
    char err[256] = "";
    vg_config_defaults(&cfg);
    vg_config_defaults(&before);
    assert_int_equal(apply(&cfg, "{\"threads\": 7, \"providers\": {\"x\": {\"cache_epoch\": 1}},"
                                 " \"bogus\": 1}",
                           err, sizeof err),
                     -1);
    assert_string_equal(err, "bogus: unknown field");
    assert_same_config(&cfg, &before);
    /* A NULL or empty err buffer is tolerated. */
    assert_int_equal(apply(&cfg, "{\"bogus\": 1}", NULL, 0), -1);
    assert_int_equal(apply(&cfg, "{\"bogus\": 1}", err, 0), -1);
    char tiny[6];
    assert_int_equal(apply(&cfg, "{\"bogus\": 1}", tiny, sizeof tiny), -1);
    assert_string_equal(tiny, "bogus");
}

static void test_env_overrides(void **state)
{
    (void)state;
    static const env_var env[] = {
        {"VOXGATE_LISTEN", "0.0.0.0:9000"},
        {"VOXGATE_DATA_DIR", "/data"},
        {"VOXGATE_LOG_LEVEL", "warn"},
        {"VOXGATE_THREADS", "12"},
        {"VOXGATE_METRICS_PUBLIC", "1"},
        {"VOXGATE_API_KEYS_ENV", "OTHER_KEYS"},
        {"VOXGATE_LIMITS_MAX_BODY_BYTES", "1000"},
        {"VOXGATE_LIMITS_IDLE_TIMEOUT_S", ""}, /* empty = unset */
        {"VOXGATE_CACHE_PREFIX", "pfx"},
        {"VOXGATE_CACHE_L1_MAX_BYTES", "123456789"},
        {"VOXGATE_CACHE_LMDB_SYNC", "none"},
        {"VOXGATE_EVENT_LOOP", "poll"},
        {"VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH", "7"},
        {"VOXGATE_PROVIDERS_ELEVEN_LABS_V2_CACHE_EPOCH", "2"},
        {"VOXGATE_PROVIDERS_MISSING_CACHE_EPOCH", "5"}, /* not in the file: ignored */
    };
    SET_ENV(env);
    vg_config cfg;
    char err[256] = "";
    load_full(&cfg);
    if (vg_config_apply_env(&cfg, fake_getenv, err, sizeof err) != 0)
        fail_msg("env rejected: %s", err);
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    assert_string_equal(cfg.data_dir, "/data");
    assert_int_equal(cfg.log_level, VG_LOG_WARN);
    assert_int_equal(cfg.threads, 12);
    assert_true(cfg.metrics_public);
    assert_string_equal(cfg.api_keys_env, "OTHER_KEYS");
    assert_int_equal(cfg.limits.max_body_bytes, 1000);
    assert_int_equal(cfg.limits.idle_timeout_s, 10);
    assert_string_equal(cfg.cache.prefix, "pfx");
    assert_int_equal(cfg.cache.l1.max_bytes, 123456789);
    assert_string_equal(cfg.cache.lmdb.sync, "none");
    assert_string_equal(cfg.event_loop, "poll");
    assert_int_equal(vg_config_cache_epoch(&cfg, "openai"), 7);
    assert_int_equal(vg_config_cache_epoch(&cfg, "eleven-labs.v2"), 2);
    assert_int_equal(vg_config_cache_epoch(&cfg, "deepgram"), 4294967295u);
    assert_int_equal(vg_config_cache_epoch(&cfg, "missing"), 0);
    assert_int_equal(cfg.n_providers, 3);
}

static void expect_env_error(const env_var *env, size_t n, const char *want)
{
    fake_env = env;
    fake_env_n = n;
    vg_config cfg, before;
    char err[256] = "";
    load_full(&cfg);
    load_full(&before);
    int rc = vg_config_apply_env(&cfg, fake_getenv, err, sizeof err);
    if (rc != -1 || strcmp(err, want) != 0)
        fail_msg("env %s=%s\n  want: %s\n  got (rc=%d): %s", env[n - 1].name, env[n - 1].value,
                 want, rc, err);
    assert_same_config(&cfg, &before); /* nothing half-applied */
}

static void test_env_errors(void **state)
{
    (void)state;
    static const env_var e1[] = {{"VOXGATE_THREADS", "3"},
                                 {"VOXGATE_LIMITS_MAX_BODY_BYTES", "25MiB"}};
    expect_env_error(e1, 2, "VOXGATE_LIMITS_MAX_BODY_BYTES: expected integer");
    static const env_var e2[] = {{"VOXGATE_THREADS", "-1"}};
    expect_env_error(e2, 1, "VOXGATE_THREADS: expected integer");
    static const env_var e3[] = {{"VOXGATE_THREADS", "999"}};
    expect_env_error(e3, 1, "VOXGATE_THREADS: out of range (expected 0..256)");
    static const env_var e4[] = {{"VOXGATE_METRICS_PUBLIC", "yes"}};
    expect_env_error(e4, 1, "VOXGATE_METRICS_PUBLIC: expected boolean (true|false|1|0)");
    static const env_var e5[] = {{"VOXGATE_LOG_LEVEL", "loud"}};
    expect_env_error(e5, 1, "VOXGATE_LOG_LEVEL: expected one of debug|info|warn|error");
    static const env_var e6[] = {{"VOXGATE_LISTEN", "nowhere"}};
    expect_env_error(e6, 1,
                     "VOXGATE_LISTEN: expected host:port with port 1..65535 (IPv6 as [::1]:8080)");
    static const env_var e7[] = {{"VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH", "1.5"}};
    expect_env_error(e7, 1, "VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH: expected integer");
    static const env_var e8[] = {{"VOXGATE_CACHE_LMDB_SYNC", "sometimes"}};
    expect_env_error(e8, 1, "VOXGATE_CACHE_LMDB_SYNC: expected one of full|meta|none");
    static const env_var e9[] = {{"VOXGATE_CACHE_L1_SHARDS", "18446744073709551616"}};
    expect_env_error(e9, 1, "VOXGATE_CACHE_L1_SHARDS: expected integer");
}

static void test_env_booleans(void **state)
{
    (void)state;
    static const char *yes[] = {"true", "TRUE", "1"}, *no[] = {"false", "False", "0"};
    vg_config cfg;
    char err[256];
    for (size_t i = 0; i < 3; i++) {
        env_var e[] = {{"VOXGATE_METRICS_PUBLIC", yes[i]}};
        SET_ENV(e);
        vg_config_defaults(&cfg);
        assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
        assert_true(cfg.metrics_public);
        e[0].value = no[i];
        cfg.metrics_public = true;
        assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
        assert_false(cfg.metrics_public);
    }
}

static void test_api_keys(void **state)
{
    (void)state;
    static const env_var env[] = {
        {"VOXGATE_API_KEYS", "a, b,,c"},
        {"VOXGATE_ADMIN_KEYS", " \tsecret-admin ,  , "},
    };
    SET_ENV(env);
    vg_config cfg;
    char err[256] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(cfg.n_api_keys, 3);
    assert_string_equal(cfg.api_keys[0], "a");
    assert_string_equal(cfg.api_keys[1], "b");
    assert_string_equal(cfg.api_keys[2], "c");
    assert_int_equal(cfg.n_admin_keys, 1);
    assert_string_equal(cfg.admin_keys[0], "secret-admin");

    /* Finishing again replaces the lists (ASan checks nothing leaks). */
    static const env_var env2[] = {{"VOXGATE_API_KEYS", ",,,"}};
    SET_ENV(env2);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(cfg.n_api_keys, 0);
    assert_int_equal(cfg.n_admin_keys, 0);

    /* The secrets never reach the effective config. */
    SET_ENV(env);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    char *json = vg_config_to_json(&cfg);
    assert_non_null(json);
    assert_null(strstr(json, "secret-admin"));
    assert_non_null(strstr(json, "\"VOXGATE_ADMIN_KEYS\""));
    free(json);
    vg_config_free(&cfg);
    assert_null(cfg.api_keys);
    assert_int_equal(cfg.n_api_keys, 0);
    vg_config_free(&cfg); /* twice is harmless */

    /* The variable named by the file is the one read; empty = none. */
    static const env_var env3[] = {{"MY_API_KEYS", "k1,k2"}, {"MY_ADMIN_KEYS", "adm"}};
    SET_ENV(env3);
    load_full(&cfg);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(cfg.n_api_keys, 2);
    assert_string_equal(cfg.api_keys[1], "k2");
    assert_int_equal(cfg.n_admin_keys, 1);
    vg_config_free(&cfg);
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, "{\"api_keys_env\": \"\", \"admin_keys_env\": \"\"}", err,
                           sizeof err),
                     0);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(cfg.n_api_keys, 0);
    assert_int_equal(cfg.n_admin_keys, 0);
    vg_config_free(&cfg);
}

/* A provider's voice map: lookups, a later file replacing it, every bad
 * form named, and --print-config giving it back. */
static void test_provider_voices(void **state)
{
    (void)state;
    vg_config cfg, back;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, "{\"providers\": {\"a\": {\"type\": \"openai\", "
                                 "\"voices\": {\"alloy\": \"nova\", \"echo\": \"onyx\"}}}}",
                           err, sizeof err), 0);
    const vg_provider_conf *p = &cfg.providers[0];
    assert_int_equal(p->n_voices, 2);
    assert_string_equal(vg_provider_voice(p, "alloy"), "nova");
    assert_string_equal(vg_provider_voice(p, "echo"), "onyx");
    assert_string_equal(vg_provider_voice(p, "fable"), "fable");

    char *json = vg_config_to_json(&cfg);
    assert_non_null(strstr(json, "\"voices\":\t{\n\t\t\t\t\"alloy\":\t\"nova\""));
    vg_config_defaults(&back);
    assert_int_equal(apply(&back, json, err, sizeof err), 0);
    assert_int_equal(back.providers[0].n_voices, 2);
    assert_string_equal(vg_provider_voice(&back.providers[0], "echo"), "onyx");
    free(json);
    vg_config_free(&back);

    assert_int_equal(apply(&cfg, "{\"providers\": {\"a\": {\"voices\": {\"x\": \"y\"}}}}", err,
                           sizeof err), 0);
    assert_int_equal(p->n_voices, 1);
    assert_string_equal(vg_provider_voice(p, "alloy"), "alloy");
    vg_config_free(&cfg);

    expect_error("{\"providers\": {\"a\": {\"voices\": [\"x\"]}}}",
                 "providers.a.voices: expected an object of voice names");
    expect_error("{\"providers\": {\"a\": {\"voices\": {\"a b\": \"x\"}}}}",
                 "providers.a.voices.a b: invalid voice name (expected [A-Za-z0-9_.-]{1,64})");
    expect_error("{\"providers\": {\"a\": {\"voices\": {\"alloy\": 7}}}}",
                 "providers.a.voices.alloy: expected a voice name [A-Za-z0-9_.-]{1,64}");
    expect_error("{\"providers\": {\"a\": {\"voices\": {\"alloy\": \"\"}}}}",
                 "providers.a.voices.alloy: expected a voice name [A-Za-z0-9_.-]{1,64}");
    expect_error("{\"providers\": {\"a\": {\"voices\": {\"v\": \"x\", \"v\": \"y\"}}}}",
                 "providers.a.voices.v: duplicate key");
    char many[2048];
    size_t off = (size_t)snprintf(many, sizeof many, "{\"providers\": {\"a\": {\"voices\": {");
    for (int i = 0; i <= VG_MAX_VOICE_MAP; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, "%s\"v%d\": \"x\"", i ? "," : "", i);
    snprintf(many + off, sizeof many - off, "}}}}");
    char want[128];
    snprintf(want, sizeof want, "providers.a.voices.v%d: at most %d voices", VG_MAX_VOICE_MAP,
             VG_MAX_VOICE_MAP);
    expect_error(many, want);
}

static void test_to_json_round_trip(void **state)
{
    (void)state;
    vg_config cfg, back;
    char err[256] = "";
    load_full(&cfg);
    cfg.cache.lmdb.max_bytes = 1125899906842624ull; /* the top of its range, > 2^49 */
    char *json = vg_config_to_json(&cfg);
    assert_non_null(json);
    vg_config_defaults(&back);
    if (apply(&back, json, err, sizeof err) != 0)
        fail_msg("to_json output rejected: %s\n%s", err, json);
    assert_same_config(&cfg, &back);
    char *again = vg_config_to_json(&back);
    assert_string_equal(json, again);
    free(again);
    free(json);

    /* Defaults round-trip too and give an empty providers object. */
    vg_config_defaults(&cfg);
    json = vg_config_to_json(&cfg);
    assert_non_null(strstr(json, "\"providers\":\t{\n\t}"));
    vg_config_defaults(&back);
    back.threads = 99;
    assert_int_equal(apply(&back, json, err, sizeof err), 0);
    assert_same_config(&cfg, &back);
    free(json);
}

static void test_describe(void **state)
{
    (void)state;
    static const char *const opts[][2] = {
        {"listen", "VOXGATE_LISTEN"},
        {"data_dir", "VOXGATE_DATA_DIR"},
        {"log_level", "VOXGATE_LOG_LEVEL"},
        {"threads", "VOXGATE_THREADS"},
        {"event_loop", "VOXGATE_EVENT_LOOP"},
        {"shutdown_timeout_ms", "VOXGATE_SHUTDOWN_TIMEOUT_MS"},
        {"api_keys_env", "VOXGATE_API_KEYS_ENV"},
        {"admin_keys_env", "VOXGATE_ADMIN_KEYS_ENV"},
        {"metrics_public", "VOXGATE_METRICS_PUBLIC"},
        {"limits.max_body_bytes", "VOXGATE_LIMITS_MAX_BODY_BYTES"},
        {"limits.max_tts_chars", "VOXGATE_LIMITS_MAX_TTS_CHARS"},
        {"limits.max_header_bytes", "VOXGATE_LIMITS_MAX_HEADER_BYTES"},
        {"limits.max_url_bytes", "VOXGATE_LIMITS_MAX_URL_BYTES"},
        {"limits.max_connections", "VOXGATE_LIMITS_MAX_CONNECTIONS"},
        {"limits.max_connections_per_ip", "VOXGATE_LIMITS_MAX_CONNECTIONS_PER_IP"},
        {"limits.idle_timeout_s", "VOXGATE_LIMITS_IDLE_TIMEOUT_S"},
        {"cache.prefix", "VOXGATE_CACHE_PREFIX"},
        {"cache.stt_ttl_s", "VOXGATE_CACHE_STT_TTL_S"},
        {"cache.tts_ttl_s", "VOXGATE_CACHE_TTS_TTL_S"},
        {"cache.max_ttl_s", "VOXGATE_CACHE_MAX_TTL_S"},
        {"cache.batch_max_items", "VOXGATE_CACHE_BATCH_MAX_ITEMS"},
        {"cache.audio_sweep_interval_s", "VOXGATE_CACHE_AUDIO_SWEEP_INTERVAL_S"},
        {"cache.audio_sweep_grace_s", "VOXGATE_CACHE_AUDIO_SWEEP_GRACE_S"},
        {"cache.l1.max_bytes", "VOXGATE_CACHE_L1_MAX_BYTES"},
        {"cache.l1.max_entries", "VOXGATE_CACHE_L1_MAX_ENTRIES"},
        {"cache.l1.shards", "VOXGATE_CACHE_L1_SHARDS"},
        {"cache.l1.max_item_bytes", "VOXGATE_CACHE_L1_MAX_ITEM_BYTES"},
        {"cache.lmdb.max_bytes", "VOXGATE_CACHE_LMDB_MAX_BYTES"},
        {"cache.lmdb.sweep_interval_s", "VOXGATE_CACHE_LMDB_SWEEP_INTERVAL_S"},
        {"cache.lmdb.sync", "VOXGATE_CACHE_LMDB_SYNC"},
        {"redis_url", "VOXGATE_REDIS_URL"},
        {"redis.connect_timeout_ms", "VOXGATE_REDIS_CONNECT_TIMEOUT_MS"},
        {"redis.command_timeout_ms", "VOXGATE_REDIS_COMMAND_TIMEOUT_MS"},
        {"redis.backoff_base_ms", "VOXGATE_REDIS_BACKOFF_BASE_MS"},
        {"redis.backoff_max_ms", "VOXGATE_REDIS_BACKOFF_MAX_MS"},
        {"ratelimit.fail_mode", "VOXGATE_RATELIMIT_FAIL_MODE"},
        {"ratelimit.max_keys", "VOXGATE_RATELIMIT_MAX_KEYS"},
        {"ratelimit.client_policy", "VOXGATE_RATELIMIT_CLIENT_POLICY"},
        {"ratelimit.policies.<name>.limit", "VOXGATE_RATELIMIT_POLICIES_<NAME>_LIMIT"},
        {"ratelimit.policies.<name>.window_ms", "VOXGATE_RATELIMIT_POLICIES_<NAME>_WINDOW_MS"},
        {"ratelimit.policies.<name>.algorithm", "VOXGATE_RATELIMIT_POLICIES_<NAME>_ALGORITHM"},
        {"ratelimit.policies.<name>.fail_mode", "VOXGATE_RATELIMIT_POLICIES_<NAME>_FAIL_MODE"},
        {"s3.endpoint", "VOXGATE_S3_ENDPOINT"},
        {"s3.public_endpoint", "VOXGATE_S3_PUBLIC_ENDPOINT"},
        {"s3.bucket", "VOXGATE_S3_BUCKET"},
        {"s3.region", "VOXGATE_S3_REGION"},
        {"s3.access_key_env", "VOXGATE_S3_ACCESS_KEY_ENV"},
        {"s3.secret_key_env", "VOXGATE_S3_SECRET_KEY_ENV"},
        {"s3.session_token_env", "VOXGATE_S3_SESSION_TOKEN_ENV"},
        {"s3.path_style", "VOXGATE_S3_PATH_STYLE"},
        {"s3.create_bucket", "VOXGATE_S3_CREATE_BUCKET"},
        {"s3.connect_timeout_ms", "VOXGATE_S3_CONNECT_TIMEOUT_MS"},
        {"s3.timeout_ms", "VOXGATE_S3_TIMEOUT_MS"},
        {"s3.max_idle_connections", "VOXGATE_S3_MAX_IDLE_CONNECTIONS"},
        {"files.url_key_env", "VOXGATE_FILES_URL_KEY_ENV"},
        {"files.public_url", "VOXGATE_FILES_PUBLIC_URL"},
        {"providers.<name>.type", "VOXGATE_PROVIDERS_<NAME>_TYPE"},
        {"providers.<name>.base_url", "VOXGATE_PROVIDERS_<NAME>_BASE_URL"},
        {"providers.<name>.api_key_env", "VOXGATE_PROVIDERS_<NAME>_API_KEY_ENV"},
        {"providers.<name>.ca_file", "VOXGATE_PROVIDERS_<NAME>_CA_FILE"},
        {"providers.<name>.timeout_ms", "VOXGATE_PROVIDERS_<NAME>_TIMEOUT_MS"},
        {"providers.<name>.connect_timeout_ms", "VOXGATE_PROVIDERS_<NAME>_CONNECT_TIMEOUT_MS"},
        {"providers.<name>.max_retries", "VOXGATE_PROVIDERS_<NAME>_MAX_RETRIES"},
        {"providers.<name>.retry_base_ms", "VOXGATE_PROVIDERS_<NAME>_RETRY_BASE_MS"},
        {"providers.<name>.retry_max_ms", "VOXGATE_PROVIDERS_<NAME>_RETRY_MAX_MS"},
        {"providers.<name>.cooldown_default_ms", "VOXGATE_PROVIDERS_<NAME>_COOLDOWN_DEFAULT_MS"},
        {"providers.<name>.cooldown_max_ms", "VOXGATE_PROVIDERS_<NAME>_COOLDOWN_MAX_MS"},
        {"providers.<name>.max_concurrency", "VOXGATE_PROVIDERS_<NAME>_MAX_CONCURRENCY"},
        {"providers.<name>.max_queue", "VOXGATE_PROVIDERS_<NAME>_MAX_QUEUE"},
        {"providers.<name>.rate_limit", "VOXGATE_PROVIDERS_<NAME>_RATE_LIMIT"},
        {"providers.<name>.tts_model", "VOXGATE_PROVIDERS_<NAME>_TTS_MODEL"},
        {"providers.<name>.stt_model", "VOXGATE_PROVIDERS_<NAME>_STT_MODEL"},
        {"providers.<name>.voice", "VOXGATE_PROVIDERS_<NAME>_VOICE"},
        {"providers.<name>.max_response_bytes", "VOXGATE_PROVIDERS_<NAME>_MAX_RESPONSE_BYTES"},
        {"providers.<name>.auth", "VOXGATE_PROVIDERS_<NAME>_AUTH"},
        {"providers.<name>.folder_id", "VOXGATE_PROVIDERS_<NAME>_FOLDER_ID"},
        {"providers.<name>.cache_epoch", "VOXGATE_PROVIDERS_<NAME>_CACHE_EPOCH"},
        {"breakers.failure_threshold", "VOXGATE_BREAKERS_FAILURE_THRESHOLD"},
        {"breakers.failure_rate_threshold", "VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD"},
        {"breakers.window_size", "VOXGATE_BREAKERS_WINDOW_SIZE"},
        {"breakers.min_calls", "VOXGATE_BREAKERS_MIN_CALLS"},
        {"breakers.recovery_timeout_ms", "VOXGATE_BREAKERS_RECOVERY_TIMEOUT_MS"},
        {"breakers.half_open_max_calls", "VOXGATE_BREAKERS_HALF_OPEN_MAX_CALLS"},
        {"breakers.success_threshold", "VOXGATE_BREAKERS_SUCCESS_THRESHOLD"},
        {"breakers.call_timeout_ms", "VOXGATE_BREAKERS_CALL_TIMEOUT_MS"},
        {"breakers.max_count", "VOXGATE_BREAKERS_MAX_COUNT"},
        {"gateway.timeout_ms", "VOXGATE_GATEWAY_TIMEOUT_MS"},
        {"gateway.max_inflight", "VOXGATE_GATEWAY_MAX_INFLIGHT"},
        {"gateway.tts_model", "VOXGATE_GATEWAY_TTS_MODEL"},
        {"gateway.stt_model", "VOXGATE_GATEWAY_STT_MODEL"},
        {"providers.<name>.breaker.failure_threshold",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_FAILURE_THRESHOLD"},
        {"providers.<name>.breaker.failure_rate_threshold",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_FAILURE_RATE_THRESHOLD"},
        {"providers.<name>.breaker.window_size", "VOXGATE_PROVIDERS_<NAME>_BREAKER_WINDOW_SIZE"},
        {"providers.<name>.breaker.min_calls", "VOXGATE_PROVIDERS_<NAME>_BREAKER_MIN_CALLS"},
        {"providers.<name>.breaker.recovery_timeout_ms",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_RECOVERY_TIMEOUT_MS"},
        {"providers.<name>.breaker.half_open_max_calls",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_HALF_OPEN_MAX_CALLS"},
        {"providers.<name>.breaker.success_threshold",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_SUCCESS_THRESHOLD"},
        {"providers.<name>.breaker.call_timeout_ms",
         "VOXGATE_PROVIDERS_<NAME>_BREAKER_CALL_TIMEOUT_MS"},
    };
    char *d = vg_config_describe();
    assert_non_null(d);
    size_t lines = 0;
    for (const char *p = d; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, sizeof opts / sizeof opts[0]);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char want[160];
        /* Each option starts its own line, followed by its env name. */
        snprintf(want, sizeof want, "%s ", opts[i][0]);
        const char *line = strstr(d, want);
        if (!line || (line != d && line[-1] != '\n'))
            fail_msg("describe lacks %s:\n%s", opts[i][0], d);
        const char *eol = strchr(line, '\n');
        const char *env = strstr(line, opts[i][1]);
        if (!env || env > eol)
            fail_msg("describe line of %s lacks %s", opts[i][0], opts[i][1]);
    }
    assert_non_null(strstr(d, "integer 1..1024"));
    assert_non_null(strstr(d, "default 127.0.0.1:8080"));
    free(d);
}

static void test_apply_file_and_load(void **state)
{
    (void)state;
    char path[] = "/tmp/voxgate-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"threads\": 6, \"providers\": {\"openai\": {\"cache_epoch\": 2}}}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);

    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(vg_config_apply_file(&cfg, path, err, sizeof err), 0);
    assert_int_equal(cfg.threads, 6);

    /* vg_config_load reads the real environment last. */
    setenv("VOXGATE_THREADS", "9", 1);
    setenv("VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH", "5", 1);
    setenv("VOXGATE_API_KEYS", "x,y", 1);
    unsetenv("VOXGATE_ADMIN_KEYS");
    if (vg_config_load(&cfg, path, err, sizeof err) != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(cfg.threads, 9);
    assert_int_equal(vg_config_cache_epoch(&cfg, "openai"), 5);
    assert_int_equal(cfg.n_api_keys, 2);
    vg_config_free(&cfg);

    setenv("VOXGATE_THREADS", "many", 1);
    assert_int_equal(vg_config_load(&cfg, path, err, sizeof err), -1);
    assert_string_equal(err, "VOXGATE_THREADS: expected integer");
    unsetenv("VOXGATE_THREADS");
    unsetenv("VOXGATE_PROVIDERS_OPENAI_CACHE_EPOCH");
    unsetenv("VOXGATE_API_KEYS");
    vg_config_free(&cfg);
    unlink(path);

    assert_int_equal(vg_config_apply_file(&cfg, path, err, sizeof err), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);
}

/* Circuit breakers (issue 5): defaults, per-provider overrides inheriting
 * breakers.*, env overrides, and the nonsense --check-config refuses. */
static void test_breakers(void **state)
{
    (void)state;
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    vg_breaker_settings d = cfg.breakers.defaults;
    assert_int_equal(d.failure_threshold, 5);
    assert_true(d.failure_rate_threshold == 0.5);
    assert_int_equal(d.window_size, 20);
    assert_int_equal(d.min_calls, 10);
    assert_int_equal(d.recovery_timeout_ms, 30000);
    assert_int_equal(d.half_open_max_calls, 1);
    assert_int_equal(d.success_threshold, 1);
    assert_int_equal(d.call_timeout_ms, 30000);
    assert_int_equal(cfg.breakers.max_count, 1000);

    /* A provider listed before breakers.* still inherits the later values. */
    const char *json = "{\"providers\": {\"a\": {\"breaker\": {\"failure_threshold\": 2,"
                       " \"failure_rate_threshold\": 1}}, \"b\": {}},"
                       " \"breakers\": {\"failure_threshold\": 8, \"window_size\": 30}}";
    assert_int_equal(apply(&cfg, json, err, sizeof err), 0);
    static const env_var env[] = {{"VOXGATE_BREAKERS_RECOVERY_TIMEOUT_MS", "777"},
                                  {"VOXGATE_PROVIDERS_B_BREAKER_FAILURE_RATE_THRESHOLD", "0.125"}};
    SET_ENV(env);
    if (vg_config_apply_env(&cfg, fake_getenv, err, sizeof err) != 0 ||
        vg_config_finish(&cfg, empty_getenv, err, sizeof err) != 0)
        fail_msg("%s", err);
    vg_breaker_settings s;
    vg_config_breaker(&cfg, "a", &s);
    assert_int_equal(s.failure_threshold, 2);
    assert_true(s.failure_rate_threshold == 1.0);
    assert_int_equal(s.window_size, 30);
    assert_int_equal(s.recovery_timeout_ms, 777);
    vg_config_breaker(&cfg, "b", &s);
    assert_int_equal(s.failure_threshold, 8);
    assert_true(s.failure_rate_threshold == 0.125);
    vg_config_breaker(&cfg, "unconfigured", &s);
    assert_int_equal(s.failure_threshold, 8);
    assert_true(s.failure_rate_threshold == 0.5);
    char *out = vg_config_to_json(&cfg);
    assert_non_null(strstr(out, "\"failure_rate_threshold\":\t0.125"));
    free(out);
    vg_config_free(&cfg);

    expect_error("{\"breakers\": {\"failure_threshold\": 0}}",
                 "breakers.failure_threshold: out of range (expected 1..1000000)");
    expect_error("{\"breakers\": {\"failure_rate_threshold\": 1.5}}",
                 "breakers.failure_rate_threshold: out of range (expected a number > 0 and <= 1)");
    expect_error("{\"breakers\": {\"failure_rate_threshold\": 0}}",
                 "breakers.failure_rate_threshold: out of range (expected a number > 0 and <= 1)");
    expect_error("{\"breakers\": {\"failure_rate_threshold\": \"0.5\"}}",
                 "breakers.failure_rate_threshold: expected number");
    expect_error("{\"breakers\": {\"max_count\": -1}}",
                 "breakers.max_count: out of range (expected 0..100000)");
    expect_error("{\"breakers\": {\"bogus\": 1}}", "breakers.bogus: unknown field");
    expect_error("{\"providers\": {\"x\": {\"breaker\": {\"success_threshold\": 0}}}}",
                 "providers.x.breaker.success_threshold: out of range (expected 1..10000)");
    expect_error("{\"providers\": {\"x\": {\"breaker\": {\"max_count\": 3}}}}",
                 "providers.x.breaker.max_count: unknown field");
    expect_finish_error("{\"breakers\": {\"window_size\": 5}}",
                        "breakers.window_size: must be >= min_calls (10), got 5");
    expect_finish_error("{\"breakers\": {\"success_threshold\": 2}}",
                        "breakers.success_threshold: must be <= half_open_max_calls (1), got 2");
    expect_finish_error("{\"providers\": {\"x\": {\"breaker\": {\"min_calls\": 25}}}}",
                        "providers.x.breaker.window_size: must be >= min_calls (25), got 20");

    static const env_var bad[] = {{"VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD", "2"}};
    SET_ENV(bad);
    vg_config_defaults(&cfg);
    assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -1);
    assert_string_equal(err, "VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD: out of range "
                             "(expected a number > 0 and <= 1)");
    static const env_var junk[] = {{"VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD", "0.5x"}};
    SET_ENV(junk);
    assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -1);
    assert_string_equal(err, "VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD: expected number");
    fake_env_n = 0;
}

/* docker/voxgate.json must name every option at its default: applied over
 * a config where everything differs, it must give back the defaults. */
static void test_sample_file(void **state)
{
    (void)state;
    char path[1024];
    const char *slash = strrchr(__FILE__, '/');
    int dirlen = slash ? (int)(slash - __FILE__) : 1;
    snprintf(path, sizeof path, "%.*s/../../docker/voxgate.json", dirlen,
             slash ? __FILE__ : ".");
    if (access(path, R_OK) != 0)
        skip(); /* not built from a source tree */
    vg_config cfg, defaults;
    char err[512] = "";
    load_full(&cfg);
    cfg.n_providers = 0;
    vg_config_defaults(&defaults);
    if (vg_config_apply_file(&cfg, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_same_config(&cfg, &defaults);
    assert_int_equal(vg_config_finish(&cfg, empty_getenv, err, sizeof err), 0);
    vg_config_free(&cfg);
}

/* ---- Redis options (issue 4) ---- */

static const char REDIS_JSON[] =
    "{\"redis_url\":\"redis://app:pw%40x@10.0.0.5:6380/2\",\"redis\":{"
    "\"connect_timeout_ms\":900,\"command_timeout_ms\":120,"
    "\"backoff_base_ms\":20,\"backoff_max_ms\":800},"
    "\"ratelimit\":{\"fail_mode\":\"closed\",\"max_keys\":7,\"client_policy\":\"per-key\","
    "\"policies\":{\"per-key\":{\"limit\":5,\"window_ms\":2000,\"algorithm\":\"gcra\"},"
    "\"burst\":{\"fail_mode\":\"closed\"}}}}";

static void test_redis_options(void **state)
{
    (void)state;
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_string_equal(cfg.redis_url, "");
    assert_int_equal(cfg.redis.connect_timeout_ms, 500);
    assert_int_equal(cfg.redis.command_timeout_ms, 250);
    assert_int_equal(cfg.redis.backoff_base_ms, 100);
    assert_int_equal(cfg.redis.backoff_max_ms, 5000);
    assert_int_equal(apply(&cfg, REDIS_JSON, err, sizeof err), 0);
    assert_string_equal(cfg.redis_url, "redis://app:pw%40x@10.0.0.5:6380/2");
    assert_int_equal(cfg.redis.command_timeout_ms, 120);
    assert_int_equal(cfg.redis.backoff_max_ms, 800);
    assert_string_equal(cfg.ratelimit.fail_mode, "closed");
    assert_int_equal(cfg.ratelimit.max_keys, 7);
    assert_int_equal(cfg.ratelimit.n_policies, 2);
    const vg_policy_conf *p = vg_config_policy(&cfg, "per-key");
    assert_non_null(p);
    assert_int_equal(p->limit, 5);
    assert_int_equal(p->window_ms, 2000);
    assert_string_equal(p->algorithm, "gcra");
    assert_string_equal(p->fail_mode, "open");
    p = vg_config_policy(&cfg, "burst");
    assert_int_equal(p->limit, 100);
    assert_int_equal(p->window_ms, 1000);
    assert_string_equal(p->algorithm, "sliding_log");
    assert_string_equal(p->fail_mode, "closed");
    assert_null(vg_config_policy(&cfg, "nope"));
    assert_int_equal(vg_config_finish(&cfg, empty_getenv, err, sizeof err), 0);
    static const env_var penv[] = {{"VOXGATE_RATELIMIT_POLICIES_PER_KEY_LIMIT", "9"}};
    SET_ENV(penv);
    assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_int_equal(vg_config_policy(&cfg, "per-key")->limit, 9);
    char *pj = vg_config_to_json(&cfg);
    assert_non_null(strstr(pj, "\"per-key\""));
    assert_non_null(strstr(pj, "\"client_policy\":\t\"per-key\""));
    free(pj);
    cfg.ratelimit.n_policies = 0;
    cfg.ratelimit.client_policy[0] = '\0';
    /* The dump never shows the password. */
    char *j = vg_config_to_json(&cfg);
    assert_null(strstr(j, "pw%40x"));
    assert_non_null(strstr(j, "redis://app:***@10.0.0.5:6380/2"));
    free(j);
    /* docker/voxgate.json puts them back to their defaults. */
    char path[1024];
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof path, "%.*s/../../docker/voxgate.json",
             slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    vg_config defaults;
    vg_config_defaults(&defaults);
    if (vg_config_apply_file(&cfg, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_same_config(&cfg, &defaults);
    vg_config_free(&cfg);
}

/* Object storage (issue 8): checked when s3.endpoint is set. */
static void test_s3_options(void **state)
{
    (void)state;
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(apply(&cfg, "{\"s3\":{\"endpoint\":\"http://127.0.0.1:9000\","
                                 "\"bucket\":\"audio.v1\",\"path_style\":false,"
                                 "\"timeout_ms\":1500}}", err, sizeof err), 0);
    /* The keys must be in the environment, as the server would need them. */
    assert_int_equal(vg_config_finish(&cfg, empty_getenv, err, sizeof err), -1);
    assert_string_equal(err, "s3.access_key_env: environment variable VOXGATE_S3_ACCESS_KEY is "
                             "not set");
    static const env_var half[] = {{"VOXGATE_S3_ACCESS_KEY", "AK"}};
    SET_ENV(half);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), -1);
    assert_string_equal(err, "s3.secret_key_env: environment variable VOXGATE_S3_SECRET_KEY is "
                             "not set");
    static const env_var keys[] = {{"VOXGATE_S3_ACCESS_KEY", "AK"}, {"VOXGATE_S3_SECRET_KEY", "SK"}};
    SET_ENV(keys);
    assert_int_equal(vg_config_finish(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.s3.endpoint, "http://127.0.0.1:9000");
    assert_string_equal(cfg.s3.access_key_env, "VOXGATE_S3_ACCESS_KEY");
    assert_false(cfg.s3.path_style);
    assert_int_equal(cfg.s3.timeout_ms, 1500);
    vg_config_free(&cfg);
    expect_finish_error("{\"s3\":{\"endpoint\":\"minio:9000\"}}",
                        "s3.endpoint: expected http(s)://host[:port], no trailing '/'");
    expect_finish_error("{\"s3\":{\"endpoint\":\"http://h:9000/\"}}",
                        "s3.endpoint: expected http(s)://host[:port], no trailing '/'");
    expect_finish_error("{\"s3\":{\"endpoint\":\"http://h\",\"bucket\":\"Bad_Bucket\"}}",
                        "s3.bucket: expected 3-63 characters of [a-z0-9.-]");
    expect_finish_error("{\"s3\":{\"endpoint\":\"http://h\",\"region\":\"\"}}",
                        "s3.region: expected [A-Za-z0-9_.-]{1,64}");
    expect_finish_error("{\"s3\":{\"endpoint\":\"http://h\",\"secret_key_env\":\"\"}}",
                        "s3.secret_key_env: must name an environment variable when s3.endpoint "
                        "is set");
    expect_finish_error("{\"files\":{\"public_url\":\"ftp://x\"}}",
                        "files.public_url: expected http(s)://host[:port][/path], no trailing '/'");
    expect_error("{\"s3\":{\"timeout_ms\":0}}", "s3.timeout_ms: out of range (expected 1..3600000)");
    expect_error("{\"s3\":{\"access_key_env\":\"1BAD\"}}",
                 "s3.access_key_env: expected environment variable name [A-Za-z_][A-Za-z0-9_]*");
    expect_error("{\"s3\":{\"bogus\":1}}", "s3.bogus: unknown field");
}

static void test_redis_bad_values(void **state)
{
    (void)state;
    expect_error("{\"redis_url\":\"localhost:6379\"}",
                 "redis_url: expected redis://host:port[/db] or unix:///path");
    expect_error("{\"redis_url\":\"redis://u:secret@h:70000\"}",
                 "redis_url: port must be 1..65535");
    expect_error("{\"redis\":{\"command_timeout_ms\":0}}",
                 "redis.command_timeout_ms: out of range (expected 1..60000)");
    expect_error("{\"redis\":{\"bogus\":1}}", "redis.bogus: unknown field");
    expect_error("{\"ratelimit\":{\"fail_mode\":\"maybe\"}}",
                 "ratelimit.fail_mode: expected one of open|closed");
    expect_error("{\"ratelimit\":{\"policies\":{\"a b\":{}}}}",
                 "ratelimit.policies.a b: invalid policy name (expected [A-Za-z0-9_.-]{1,64})");
    expect_error("{\"ratelimit\":{\"policies\":{\"p\":{\"limit\":0}}}}",
                 "ratelimit.policies.p.limit: out of range (expected 1..1000000)");
    expect_error("{\"ratelimit\":{\"policies\":{\"p\":{\"algorithm\":\"leaky\"}}}}",
                 "ratelimit.policies.p.algorithm: expected one of sliding_log|gcra");
    expect_error("{\"ratelimit\":{\"policies\":{\"p\":{\"rate\":1}}}}",
                 "ratelimit.policies.p.rate: unknown field");
    expect_finish_error("{\"ratelimit\":{\"client_policy\":\"ghost\"}}",
                        "ratelimit.client_policy: no policy 'ghost' in ratelimit.policies");
    expect_finish_error("{\"redis\":{\"backoff_base_ms\":500,\"backoff_max_ms\":100}}",
                        "redis.backoff_max_ms: must be >= redis.backoff_base_ms (500)");
    static const env_var env[] = {{"VOXGATE_REDIS_URL", "unix://relative"}};
    SET_ENV(env);
    vg_config cfg;
    char err[512] = "";
    vg_config_defaults(&cfg);
    assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), -1);
    assert_string_equal(err,
                        "VOXGATE_REDIS_URL: unix:// needs an absolute path (unix:///path)");
    static const env_var good[] = {{"VOXGATE_REDIS_URL", "redis://127.0.0.1:6390"},
                                   {"VOXGATE_REDIS_COMMAND_TIMEOUT_MS", "75"}};
    SET_ENV(good);
    assert_int_equal(vg_config_apply_env(&cfg, fake_getenv, err, sizeof err), 0);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6390");
    assert_int_equal(cfg.redis.command_timeout_ms, 75);
    vg_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_object_keeps_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_later_documents_merge),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_bad_enums_and_strings),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_provider_names),
        cmocka_unit_test(test_cross_field),
        cmocka_unit_test(test_failed_apply_leaves_config),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_booleans),
        cmocka_unit_test(test_api_keys),
        cmocka_unit_test(test_provider_voices), cmocka_unit_test(test_to_json_round_trip),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_apply_file_and_load),
        cmocka_unit_test(test_sample_file),
        cmocka_unit_test(test_breakers),
        cmocka_unit_test(test_redis_options),
        cmocka_unit_test(test_redis_bad_values),
        cmocka_unit_test(test_s3_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
