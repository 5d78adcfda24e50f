/* Unit tests for the L1 hot cache: replacement, reference lifetimes, LRU
 * order under both bounds, TTL with an injected clock, prefix deletion,
 * counters, and a multi-threaded stress run checked against invariants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "voxgate/keys.h"
#include "voxgate/l1.h"
#include "voxgate/util.h"

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static int reset_clock(void **state)
{
    (void)state;
    vg_clock_ms = vg_real_clock_ms;
    return 0;
}

static size_t charge_of(size_t klen, size_t len)
{
    return sizeof(vg_l1_item) + klen + len;
}

static vg_l1 *new_cache(size_t max_bytes, size_t max_entries, size_t shards, size_t max_item)
{
    vg_l1_opts o = {.max_bytes = max_bytes, .max_entries = max_entries,
                    .shards = shards, .max_item_bytes = max_item};
    vg_l1 *c = vg_l1_new(&o);
    assert_non_null(c);
    return c;
}

static int put_str(vg_l1 *c, const char *key, const char *val)
{
    return vg_l1_put(c, key, strlen(key), val, strlen(val), "text/plain", NULL, 1, 0);
}

/* 1 when key is cached, 0 otherwise; the reference is dropped at once. */
static int present(vg_l1 *c, const char *key)
{
    vg_l1_item *it = vg_l1_get(c, key, strlen(key));
    vg_l1_release(it);
    return it != NULL;
}

static void assert_item(vg_l1_item *it, const char *key, const char *val)
{
    assert_non_null(it);
    assert_int_equal(it->key_len, strlen(key));
    assert_memory_equal(it->key, key, it->key_len);
    assert_int_equal(it->key[it->key_len], '\0');
    assert_int_equal(it->len, strlen(val));
    assert_memory_equal(it->data, val, it->len);
}

static void test_new_rejects_bad_opts(void **state)
{
    (void)state;
    vg_l1_opts o = {.max_bytes = 0, .max_entries = 10, .shards = 1, .max_item_bytes = 10};
    assert_null(vg_l1_new(&o));
    o.max_bytes = 1 << 20;
    o.max_entries = 0;
    assert_null(vg_l1_new(&o));
    assert_null(vg_l1_new(NULL));
    vg_l1_free(NULL);
}

static void test_put_get_replace(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 100, 4, 4096);
    const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    assert_null(vg_l1_get(c, "k1", 2));
    assert_int_equal(vg_l1_put(c, "k1", 2, "hello", 5, "audio/wav", sha, 42, 0), VG_OK);

    vg_l1_item *it = vg_l1_get(c, "k1", 2);
    assert_item(it, "k1", "hello");
    assert_string_equal(it->ctype, "audio/wav");
    assert_string_equal(it->sha256, sha);
    assert_int_equal(it->created_at_ms, 42);
    assert_int_equal(it->expires_at_ms, 0);
    vg_l1_release(it);

    assert_int_equal(vg_l1_put(c, "k1", 2, "bye", 3, NULL, NULL, 43, 0), VG_OK);
    it = vg_l1_get(c, "k1", 2);
    assert_item(it, "k1", "bye");
    assert_string_equal(it->ctype, "");
    assert_string_equal(it->sha256, "");
    assert_int_equal(it->created_at_ms, 43);
    vg_l1_release(it);

    /* Keys are compared by length too, not as C strings. */
    assert_null(vg_l1_get(c, "k1", 1));
    assert_null(vg_l1_get(c, "k1x", 3));

    /* Empty data is a valid value. */
    assert_int_equal(vg_l1_put(c, "empty", 5, NULL, 0, NULL, NULL, 0, 0), VG_OK);
    it = vg_l1_get(c, "empty", 5);
    assert_item(it, "empty", "");
    vg_l1_release(it);

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.bytes, charge_of(2, 3) + charge_of(5, 0));
    vg_l1_free(c);
}

static void test_long_ctype_truncated(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 100, 1, 4096);
    char ct[200];
    memset(ct, 'x', sizeof(ct) - 1);
    ct[sizeof(ct) - 1] = '\0';
    assert_int_equal(vg_l1_put(c, "k", 1, "v", 1, ct, NULL, 0, 0), VG_OK);
    vg_l1_item *it = vg_l1_get(c, "k", 1);
    assert_non_null(it);
    assert_int_equal(strlen(it->ctype), sizeof(it->ctype) - 1);
    vg_l1_release(it);
    vg_l1_free(c);
}

static void test_ref_survives_replace(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 100, 1, 4096);
    assert_int_equal(put_str(c, "k", "old value"), VG_OK);
    vg_l1_item *old = vg_l1_get(c, "k", 1);
    assert_non_null(old);

    assert_int_equal(put_str(c, "k", "new value"), VG_OK);
    assert_true(vg_l1_del(c, "k", 1));
    assert_int_equal(put_str(c, "k", "newer value"), VG_OK);

    /* The cache dropped its reference twice over; ours keeps it alive. */
    assert_item(old, "k", "old value");
    vg_l1_release(old);

    vg_l1_item *cur = vg_l1_get(c, "k", 1);
    assert_item(cur, "k", "newer value");
    vg_l1_release(cur);
    vg_l1_free(c);
}

static void test_ref_survives_eviction(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 1, 1, 4096);
    assert_int_equal(put_str(c, "a", "payload of a"), VG_OK);
    vg_l1_item *a = vg_l1_get(c, "a", 1);
    assert_non_null(a);

    assert_int_equal(put_str(c, "b", "payload of b"), VG_OK);
    assert_false(present(c, "a"));
    assert_item(a, "a", "payload of a");
    vg_l1_release(a);

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.entries, 1);
    vg_l1_free(c);
}

/* Items of 1000 bytes, room for exactly three in one shard. */
#define BIG 1000

static void put_big(vg_l1 *c, const char *key)
{
    static char buf[BIG];
    memset(buf, key[0], sizeof(buf));
    assert_int_equal(vg_l1_put(c, key, strlen(key), buf, sizeof(buf), NULL, NULL, 0, 0), VG_OK);
}

static void test_lru_by_bytes(void **state)
{
    (void)state;
    size_t max = 3 * charge_of(1, BIG);
    vg_l1 *c = new_cache(max, 1000, 1, BIG);

    put_big(c, "a");
    put_big(c, "b");
    put_big(c, "c");
    assert_true(present(c, "a")); /* a is now most recent; b is coldest */
    put_big(c, "d");
    assert_false(present(c, "b"));
    assert_true(present(c, "a"));
    assert_true(present(c, "c"));
    assert_true(present(c, "d"));

    put_big(c, "e"); /* coldest now: a (a, c, d were touched in that order) */
    assert_false(present(c, "a"));
    assert_true(present(c, "c"));
    assert_true(present(c, "d"));

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.entries, 3);
    assert_true(st.bytes <= max);

    /* A larger item pushes out as many as needed. */
    char two[2 * BIG];
    memset(two, 'z', sizeof(two));
    vg_l1_free(c);

    c = new_cache(max, 1000, 1, 2 * BIG);
    put_big(c, "a");
    put_big(c, "b");
    put_big(c, "c");
    assert_int_equal(vg_l1_put(c, "z", 1, two, sizeof(two), NULL, NULL, 0, 0), VG_OK);
    assert_false(present(c, "a"));
    assert_false(present(c, "b"));
    assert_true(present(c, "c"));
    assert_true(present(c, "z"));
    vg_l1_free(c);
}

static void test_lru_by_entries(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 3, 1, 4096);
    assert_int_equal(put_str(c, "a", "1"), VG_OK);
    assert_int_equal(put_str(c, "b", "2"), VG_OK);
    assert_int_equal(put_str(c, "c", "3"), VG_OK);
    assert_true(present(c, "a"));
    assert_int_equal(put_str(c, "d", "4"), VG_OK);
    assert_false(present(c, "b"));
    assert_true(present(c, "a"));
    assert_true(present(c, "c"));
    assert_true(present(c, "d"));

    /* Replacing refreshes recency too and does not count as eviction. */
    assert_int_equal(put_str(c, "c", "3'"), VG_OK);
    assert_int_equal(put_str(c, "e", "5"), VG_OK);
    assert_false(present(c, "a"));
    assert_true(present(c, "c"));

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.entries, 3);
    vg_l1_free(c);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    vg_clock_ms = fake_clock;
    fake_now = 1000;
    vg_l1 *c = new_cache(1 << 20, 100, 2, 4096);

    assert_int_equal(vg_l1_put(c, "t", 1, "x", 1, NULL, NULL, 1000, 1500), VG_OK);
    assert_int_equal(vg_l1_put(c, "forever", 7, "y", 1, NULL, NULL, 1000, 0), VG_OK);

    fake_now = 1499;
    assert_true(present(c, "t"));

    fake_now = 1500;
    assert_false(present(c, "t"));
    assert_false(present(c, "t")); /* gone: a plain miss now */

    fake_now = UINT64_MAX;
    assert_true(present(c, "forever"));

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, charge_of(7, 1));

    /* A reader holding an item past its expiry still has valid bytes. */
    fake_now = 2000;
    assert_int_equal(vg_l1_put(c, "t", 1, "z", 1, NULL, NULL, 2000, 2001), VG_OK);
    vg_l1_item *it = vg_l1_get(c, "t", 1);
    assert_non_null(it);
    fake_now = 3000;
    assert_false(present(c, "t"));
    assert_item(it, "t", "z");
    vg_l1_release(it);

    vg_l1_free(c);
}

static void test_too_big(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 100, 4, 100);
    char buf[101] = {0};
    assert_int_equal(vg_l1_put(c, "k", 1, buf, 101, NULL, NULL, 0, 0), VG_ETOOBIG);
    assert_int_equal(vg_l1_put(c, "k", 1, buf, 100, NULL, NULL, 0, 0), VG_OK);
    vg_l1_free(c);

    /* Totals too small for one max item per shard: shards are reduced
     * (or the lone shard raised) so a max item still fits. */
    c = new_cache(1000, 100, 16, 100000);
    static char big[100000];
    char key[VG_KEY_MAX + 1];
    memset(key, 'k', sizeof(key));
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        key[strlen(key)] = 'k'; /* full-length keys */
        assert_int_equal(vg_l1_put(c, key, VG_KEY_MAX, big, sizeof(big), NULL, NULL, 0, 0),
                         VG_OK);
        vg_l1_item *it = vg_l1_get(c, key, VG_KEY_MAX);
        assert_non_null(it);
        assert_int_equal(it->len, sizeof(big));
        vg_l1_release(it);
    }
    vg_l1_free(c);

    /* A key so long the charge cannot fit a shard. */
    c = new_cache(4096, 100, 1, 100);
    static char hugekey[8192];
    memset(hugekey, 'h', sizeof(hugekey));
    assert_int_equal(vg_l1_put(c, hugekey, sizeof(hugekey), "v", 1, NULL, NULL, 0, 0),
                     VG_ETOOBIG);
    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.inserts, 0);
    assert_int_equal(st.entries, 0);
    vg_l1_free(c);
}

/* Many shards and small totals: the totals still hold, rather than each
 * shard rounding its share up to one max item or one entry. */
static void test_totals_hold_with_many_shards(void **state)
{
    (void)state;
    size_t max_item = 4096;
    size_t max_bytes = 4 * charge_of(VG_KEY_MAX, max_item);
    vg_l1 *c = new_cache(max_bytes, 1000, 64, max_item);
    static char val[4096];
    char key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        assert_int_equal(vg_l1_put(c, key, strlen(key), val, sizeof(val), NULL, NULL, 0, 0),
                         VG_OK);
    }
    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_true(st.bytes <= max_bytes);
    assert_true(st.entries >= 1);
    vg_l1_free(c);

    c = new_cache(1 << 26, 5, 64, 64);
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "e%d", i);
        assert_int_equal(put_str(c, key, "v"), VG_OK);
    }
    vg_l1_stats_get(c, &st);
    assert_true(st.entries <= 5);
    assert_true(st.entries >= 1);
    vg_l1_free(c);
}

static void test_del(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 100, 8, 4096);
    assert_int_equal(put_str(c, "a", "1"), VG_OK);
    assert_int_equal(put_str(c, "b", "2"), VG_OK);
    assert_true(vg_l1_del(c, "a", 1));
    assert_false(vg_l1_del(c, "a", 1));
    assert_false(vg_l1_del(c, "zz", 2));
    assert_false(present(c, "a"));
    assert_true(present(c, "b"));

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, charge_of(1, 1));
    assert_int_equal(st.evictions, 0);
    vg_l1_free(c);
}

static void test_del_prefix(void **state)
{
    (void)state;
    static const char *gone[] = {
        "vg:stt:openai",
        "vg:stt:openai:en:abc",
        "vg:stt:openai:fr:def",
        "vg:stt:openai@2:en:abc",
    };
    static const char *kept[] = {
        "vg:stt:openai2:en:abc",
        "vg:stt:opena",
        "vg:tts:openai:en:abc",
        "vg:stt:deepgram:en:abc",
        "xvg:stt:openai:en:abc",
    };
    vg_l1 *c = new_cache(1 << 20, 1000, 16, 4096);
    for (size_t i = 0; i < VG_ARRAY_LEN(gone); i++)
        assert_int_equal(put_str(c, gone[i], "v"), VG_OK);
    for (size_t i = 0; i < VG_ARRAY_LEN(kept); i++)
        assert_int_equal(put_str(c, kept[i], "v"), VG_OK);
    /* Plenty of other keys so every shard has something to walk. */
    char key[64];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "vg:tts:eleven:%d", i);
        assert_int_equal(put_str(c, key, "v"), VG_OK);
    }

    const char *p = "vg:stt:openai";
    assert_int_equal(vg_l1_del_prefix(c, p, strlen(p), ":@"), VG_ARRAY_LEN(gone));
    for (size_t i = 0; i < VG_ARRAY_LEN(gone); i++)
        assert_false(present(c, gone[i]));
    for (size_t i = 0; i < VG_ARRAY_LEN(kept); i++)
        assert_true(present(c, kept[i]));
    assert_int_equal(vg_l1_del_prefix(c, p, strlen(p), ":@"), 0);

    /* Empty next_chars: exact match only. */
    assert_int_equal(vg_l1_del_prefix(c, "vg:stt:opena", 12, ""), 1);
    assert_true(present(c, "vg:stt:openai2:en:abc"));

    /* NULL next_chars: plain prefix. */
    assert_int_equal(vg_l1_del_prefix(c, "vg:tts:", 7, NULL), 201);

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evictions, 0);
    vg_l1_free(c);
}

static void test_stats(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 20, 2, 1, 4096);
    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.hits + st.misses + st.inserts + st.evictions + st.expired, 0);
    assert_int_equal(st.entries + st.bytes, 0);

    assert_int_equal(put_str(c, "a", "1"), VG_OK);
    assert_int_equal(put_str(c, "a", "11"), VG_OK);
    assert_int_equal(put_str(c, "b", "2"), VG_OK);
    assert_int_equal(put_str(c, "c", "3"), VG_OK);
    assert_true(present(c, "b"));
    assert_true(present(c, "c"));
    assert_true(present(c, "c"));
    assert_false(present(c, "a"));
    assert_false(present(c, "nope"));

    vg_l1_stats_get(c, &st);
    assert_int_equal(st.inserts, 4);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.expired, 0);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.bytes, 2 * charge_of(1, 1));
    vg_l1_free(c);
}

/* With 16 shards each bounded at 1/16 of the entries, a half-full cache
 * evicts nothing unless the hash piles keys into a few shards. */
static void test_shard_spread(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 26, 1600, 16, 64);
    char key[128];
    for (int i = 0; i < 800; i++) {
        snprintf(key, sizeof(key), "vg:stt:openai:en:%064x", i);
        assert_int_equal(put_str(c, key, "v"), VG_OK);
    }
    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.entries, 800);
    vg_l1_free(c);
}

/* Many entries in one shard exercise table growth; all stay reachable. */
static void test_table_growth(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(1 << 26, 20000, 1, 64);
    char key[32], val[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        assert_int_equal(put_str(c, key, val), VG_OK);
    }
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        vg_l1_item *it = vg_l1_get(c, key, strlen(key));
        assert_item(it, key, val);
        vg_l1_release(it);
    }
    for (int i = 0; i < 10000; i += 2) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_true(vg_l1_del(c, key, strlen(key)));
    }
    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.entries, 5000);
    vg_l1_free(c);
}

/* ------------------------------------------------------------------ */
/* Stress                                                               */
/* ------------------------------------------------------------------ */

#define ST_THREADS 4
#define ST_OPS 200000
#define ST_KEYS 512
#define ST_MAX_BYTES (64 * 1024)
#define ST_MAX_ENTRIES 200

typedef struct {
    vg_l1 *c;
    unsigned seed;
    uint64_t gets, puts, bad;
} stress_arg;

static unsigned xorshift(unsigned *s)
{
    unsigned x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Values are self-describing: the key index, then a fill byte repeated,
 * so a reader can tell a torn or mismatched item from a good one. */
static size_t make_value(unsigned k, unsigned r, unsigned char *buf)
{
    size_t len = 8 + r % 400;
    memcpy(buf, &k, sizeof(k));
    memset(buf + sizeof(k), (int)(r & 0xff), len - sizeof(k));
    return len;
}

static int value_ok(const vg_l1_item *it, unsigned k)
{
    unsigned got;
    if (it->len < 8)
        return 0;
    memcpy(&got, it->data, sizeof(got));
    if (got != k)
        return 0;
    for (size_t i = sizeof(got) + 1; i < it->len; i++)
        if (it->data[i] != it->data[sizeof(got)])
            return 0;
    return 1;
}

static void *stress_thread(void *p)
{
    stress_arg *a = p;
    unsigned char buf[512];
    char key[32];
    vg_l1_item *held[4] = {0};
    unsigned held_k[4] = {0};

    for (int i = 0; i < ST_OPS; i++) {
        unsigned r = xorshift(&a->seed);
        unsigned k = r % ST_KEYS;
        int klen = snprintf(key, sizeof(key), "vg:stress:%u", k);
        unsigned op = (r >> 16) % 100;

        if (op < 55) {
            vg_l1_item *it = vg_l1_get(a->c, key, (size_t)klen);
            a->gets++;
            if (it && (!value_ok(it, k) || it->key_len != (size_t)klen ||
                       memcmp(it->key, key, (size_t)klen) != 0))
                a->bad++;
            /* Hold some references across later operations so replace
             * and evict race with live readers. */
            unsigned slot = (r >> 8) % 4;
            vg_l1_release(held[slot]);
            held[slot] = it;
            held_k[slot] = k;
        } else if (op < 90) {
            size_t len = make_value(k, xorshift(&a->seed), buf);
            uint64_t exp = (r & 1) ? 0 : vg_clock_ms() + (r >> 20) % 3;
            if (vg_l1_put(a->c, key, (size_t)klen, buf, len, "x", NULL, 0, exp) == VG_OK)
                a->puts++;
        } else if (op < 99) {
            vg_l1_del(a->c, key, (size_t)klen);
        } else {
            vg_l1_del_prefix(a->c, "vg:stress:1", 11, "0123456789");
        }
    }
    for (int i = 0; i < 4; i++) {
        if (held[i] && !value_ok(held[i], held_k[i]))
            a->bad++;
        vg_l1_release(held[i]);
    }
    return NULL;
}

static void test_stress(void **state)
{
    (void)state;
    vg_l1 *c = new_cache(ST_MAX_BYTES, ST_MAX_ENTRIES, 4, 1024);
    pthread_t th[ST_THREADS];
    stress_arg args[ST_THREADS];

    for (int i = 0; i < ST_THREADS; i++) {
        args[i] = (stress_arg){.c = c, .seed = 0x9e3779b9u * (unsigned)(i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, stress_thread, &args[i]), 0);
    }
    uint64_t gets = 0, puts = 0;
    for (int i = 0; i < ST_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].bad, 0);
        gets += args[i].gets;
        puts += args[i].puts;
    }

    vg_l1_stats st;
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.inserts, puts);
    assert_int_equal(st.hits + st.misses, gets);
    assert_true(st.entries <= ST_MAX_ENTRIES);
    assert_true(st.bytes <= ST_MAX_BYTES);
    assert_true(st.evictions > 0);

    /* The counters agree with what is actually reachable. Expiry is
     * switched off first so reading cannot change the answer. */
    vg_clock_ms = fake_clock;
    fake_now = 0;
    uint64_t reachable = 0, bytes = 0;
    char key[32];
    for (unsigned k = 0; k < ST_KEYS; k++) {
        int klen = snprintf(key, sizeof(key), "vg:stress:%u", k);
        vg_l1_item *it = vg_l1_get(c, key, (size_t)klen);
        if (it) {
            reachable++;
            bytes += charge_of((size_t)klen, it->len);
            assert_true(value_ok(it, k));
            vg_l1_release(it);
        }
    }
    vg_l1_stats_get(c, &st);
    assert_int_equal(st.entries, reachable);
    assert_int_equal(st.bytes, bytes);
    vg_l1_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_opts),
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_long_ctype_truncated),
        cmocka_unit_test(test_ref_survives_replace),
        cmocka_unit_test(test_ref_survives_eviction),
        cmocka_unit_test(test_lru_by_bytes),
        cmocka_unit_test(test_lru_by_entries),
        cmocka_unit_test_teardown(test_ttl_expiry, reset_clock),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_totals_hold_with_many_shards),
        cmocka_unit_test(test_del),
        cmocka_unit_test(test_del_prefix),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_shard_spread),
        cmocka_unit_test(test_table_growth),
        cmocka_unit_test_teardown(test_stress, reset_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
