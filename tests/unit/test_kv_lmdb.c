/* Unit tests for the LMDB key-value backend: accounting, expiry,
 * eviction order, batches, chunked scans, persistence, kill -9 safety,
 * a full map, corrupt records and concurrent access. Each test runs in
 * a fresh temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "voxgate/kv.h"
#include "voxgate/util.h"

extern uint64_t vg_kv_lmdb_test_map_bytes;

#define T0 1700000000000ull

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }

typedef struct fx {
    char dir[64];
    vg_kv *kv;
} fx;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/vg_kv_lmdb_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    fake_now = T0;
    vg_clock_ms = fake_clock;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    vg_kv_close(f->kv);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    vg_clock_ms = vg_real_clock_ms;
    vg_kv_lmdb_test_map_bytes = 0;
    free(f);
    return 0;
}

static vg_kv *open_kv(const char *dir, uint64_t max_bytes, const char *sync)
{
    vg_kv_lmdb_opts o = {.dir = dir, .max_bytes = max_bytes, .sync = sync};
    vg_kv *kv = NULL;
    char err[256] = "";
    int rc = vg_kv_lmdb_open(&o, &kv, err, sizeof err);
    if (rc != VG_OK)
        fail_msg("open %s: %s", dir, err);
    return kv;
}

static void reopen(fx *f, uint64_t max_bytes, const char *sync)
{
    vg_kv_close(f->kv);
    f->kv = open_kv(f->dir, max_bytes, sync);
}

static int set_s(vg_kv *kv, const char *k, const char *v, uint64_t ttl)
{
    return vg_kv_set(kv, k, strlen(k), v, strlen(v), ttl);
}

/* VG_OK only when the key reads back as exactly v. */
static int get_eq(vg_kv *kv, const char *k, const char *v)
{
    vg_buf b = {0};
    int rc = vg_kv_get(kv, k, strlen(k), &b, NULL);
    if (rc == VG_OK && (b.len != strlen(v) || memcmp(b.data, v, b.len) != 0))
        rc = VG_ECORRUPT;
    vg_buf_free(&b);
    return rc;
}

static int get_rc(vg_kv *kv, const char *k)
{
    vg_buf b = {0};
    int rc = vg_kv_get(kv, k, strlen(k), &b, NULL);
    vg_buf_free(&b);
    return rc;
}

static vg_kv_stats stats(vg_kv *kv)
{
    vg_kv_stats s;
    vg_kv_stats_get(kv, &s);
    return s;
}

typedef struct tally {
    uint64_t entries, bytes;
} tally;

static int tally_cb(void *ud, const char *k, size_t kl, const void *v, size_t vl)
{
    (void)k; (void)v;
    tally *t = ud;
    t->entries++;
    t->bytes += kl + vl;
    return 0;
}

/* Live entries and logical bytes, counted the slow way. */
static tally recount(vg_kv *kv)
{
    tally t = {0, 0};
    assert_int_equal(vg_kv_scan(kv, "", 0, tally_cb, &t), VG_OK);
    return t;
}

/* 2-byte key + 18-byte value: 20 logical bytes. */
static const char V18[] = "abcdefghijklmnopqr";

static void test_set_get_del(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 1 << 20, NULL);
    assert_string_equal(f->kv->ops->name, "lmdb");
    assert_int_equal(vg_kv_ping(f->kv), VG_OK);

    assert_int_equal(set_s(f->kv, "alpha", "hello", 0), VG_OK);
    vg_buf b = {0};
    uint64_t exp = 99;
    assert_int_equal(vg_kv_get(f->kv, "alpha", 5, &b, &exp), VG_OK);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "hello", 5);
    assert_int_equal(b.data[5], '\0');
    assert_int_equal(exp, 0);
    vg_buf_free(&b);

    assert_int_equal(get_rc(f->kv, "missing"), VG_NOTFOUND);
    assert_int_equal(set_s(f->kv, "empty", "", 0), VG_OK);
    assert_int_equal(get_eq(f->kv, "empty", ""), VG_OK);

    /* Binary keys and values, NULs included. */
    const char bk[] = {'k', 0, 'x'}, bv[] = {0, 1, 0, 2};
    assert_int_equal(vg_kv_set(f->kv, bk, 3, bv, 4, 0), VG_OK);
    assert_int_equal(vg_kv_get(f->kv, bk, 3, &b, NULL), VG_OK);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, bv, 4);
    vg_buf_free(&b);

    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.bytes, 5 + 5 + 5 + 3 + 4);
    assert_int_equal(s.max_bytes, 1 << 20);

    assert_int_equal(vg_kv_del(f->kv, "alpha", 5), VG_OK);
    assert_int_equal(get_rc(f->kv, "alpha"), VG_NOTFOUND);
    assert_int_equal(vg_kv_del(f->kv, "alpha", 5), VG_NOTFOUND);
    s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 5 + 3 + 4);

    /* Key bounds: 1..511 bytes. */
    char longk[600];
    memset(longk, 'k', sizeof longk);
    assert_int_equal(vg_kv_set(f->kv, longk, 511, "v", 1, 0), VG_OK);
    assert_int_equal(vg_kv_get(f->kv, longk, 511, &b, NULL), VG_OK);
    vg_buf_free(&b);
    assert_int_equal(vg_kv_set(f->kv, longk, 512, "v", 1, 0), VG_EINVAL);
    assert_int_equal(vg_kv_get(f->kv, longk, 512, &b, NULL), VG_EINVAL);
    assert_int_equal(vg_kv_set(f->kv, "", 0, "v", 1, 0), VG_EINVAL);
    assert_int_equal(vg_kv_del(f->kv, "", 0), VG_EINVAL);
    assert_int_equal(stats(f->kv).errors, 0);
}

static void test_overwrite_accounting(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 60, NULL);
    assert_int_equal(set_s(f->kv, "k", "0123456789", 0), VG_OK);
    assert_int_equal(stats(f->kv).bytes, 11);
    assert_int_equal(set_s(f->kv, "k", "0123456789012345678901234567", 5000), VG_OK);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 29);
    assert_int_equal(set_s(f->kv, "k", "x", 0), VG_OK);
    assert_int_equal(stats(f->kv).bytes, 2);
    assert_int_equal(vg_kv_del(f->kv, "k", 1), VG_OK);
    s = stats(f->kv);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);

    /* A replaced key takes its new place in the eviction order. */
    assert_int_equal(set_s(f->kv, "k1", V18, 100), VG_OK);
    assert_int_equal(set_s(f->kv, "k2", V18, 100), VG_OK);
    assert_int_equal(set_s(f->kv, "k3", V18, 100), VG_OK);
    assert_int_equal(set_s(f->kv, "k1", V18, 100), VG_OK); /* full, but a replace */
    assert_int_equal(stats(f->kv).evictions, 0);
    assert_int_equal(set_s(f->kv, "k4", V18, 100), VG_OK);
    assert_int_equal(get_rc(f->kv, "k2"), VG_NOTFOUND);
    assert_int_equal(get_eq(f->kv, "k1", V18), VG_OK);
    s = stats(f->kv);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.bytes, 60);
    tally t = recount(f->kv);
    assert_int_equal(t.entries, 3);
    assert_int_equal(t.bytes, 60);
}

static void test_expiry_and_sweep(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 64 << 20, NULL);
    assert_int_equal(set_s(f->kv, "short", "s", 1000), VG_OK);
    assert_int_equal(set_s(f->kv, "never", "n", 0), VG_OK);
    /* More than one sweep transaction's worth. */
    vg_kv_op ops[100];
    char keys[100][16];
    for (int round = 0; round < 25; round++) {
        memset(ops, 0, sizeof ops);
        for (int i = 0; i < 100; i++) {
            snprintf(keys[i], sizeof keys[i], "bulk%05d", round * 100 + i);
            ops[i] = (vg_kv_op){.type = VG_KV_SET, .key = keys[i], .klen = strlen(keys[i]),
                                .val = "v", .vlen = 1, .ttl_ms = 500};
        }
        assert_int_equal(vg_kv_batch(f->kv, ops, 100), VG_OK);
        for (int i = 0; i < 100; i++)
            assert_int_equal(ops[i].rc, VG_OK);
    }

    vg_buf b = {0};
    uint64_t exp = 0;
    assert_int_equal(vg_kv_get(f->kv, "short", 5, &b, &exp), VG_OK);
    assert_int_equal(exp, T0 + 1000);
    vg_buf_free(&b);

    fake_now = T0 + 499;
    assert_int_equal(get_rc(f->kv, "bulk00000"), VG_OK);
    fake_now = T0 + 500;
    assert_int_equal(get_rc(f->kv, "bulk00000"), VG_NOTFOUND);
    assert_int_equal(get_rc(f->kv, "bulk02499"), VG_NOTFOUND);
    assert_int_equal(get_rc(f->kv, "short"), VG_OK);
    assert_int_equal(stats(f->kv).entries, 2502); /* reads never delete */
    assert_int_equal(recount(f->kv).entries, 2);  /* but scans skip them */

    uint64_t removed = 0;
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(removed, 2500);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 6 + 6);
    assert_int_equal(s.expired, 2500);
    assert_int_equal(s.evictions, 0);

    fake_now = T0 + 1000;
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(removed, 0);
    fake_now = UINT64_MAX - 1;
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(get_eq(f->kv, "never", "n"), VG_OK);
    s = stats(f->kv);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.expired, 2501);
}

static void test_eviction_order(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 100, NULL);
    assert_int_equal(set_s(f->kv, "aa", V18, 1000), VG_OK);
    assert_int_equal(set_s(f->kv, "bb", V18, 0), VG_OK);
    assert_int_equal(set_s(f->kv, "cc", V18, 500), VG_OK);
    assert_int_equal(set_s(f->kv, "dd", V18, 500), VG_OK);
    assert_int_equal(set_s(f->kv, "ee", V18, 2000), VG_OK);
    assert_int_equal(stats(f->kv).bytes, 100);

    /* Soonest expiry first, the older of equal expiries first, and the
     * never-expiring last (oldest first). */
    const char *adds[] = {"ff", "gg", "hh", "ii", "jj"};
    const char *gone[] = {"cc", "dd", "aa", "ee", "bb"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(set_s(f->kv, adds[i], V18, 0), VG_OK);
        assert_int_equal(get_rc(f->kv, gone[i]), VG_NOTFOUND);
        for (int j = i + 1; j < 5; j++)
            assert_int_equal(get_eq(f->kv, gone[j], V18), VG_OK);
        assert_int_equal(stats(f->kv).evictions, (uint64_t)i + 1);
    }
    /* 40 bytes need two victims. */
    assert_int_equal(set_s(f->kv, "zz", &"0123456789012345678901234567890123456789"[2], 0),
                     VG_OK);
    assert_int_equal(get_rc(f->kv, "ff"), VG_NOTFOUND);
    assert_int_equal(get_rc(f->kv, "gg"), VG_NOTFOUND);
    assert_int_equal(get_eq(f->kv, "hh", V18), VG_OK);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.evictions, 7);
    assert_int_equal(s.entries, 4);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.expired, 0);

    /* An expired victim counts as expired, not as an eviction. */
    assert_int_equal(vg_kv_del(f->kv, "zz", 2), VG_OK);
    assert_int_equal(set_s(f->kv, "tt", V18, 10), VG_OK);
    assert_int_equal(set_s(f->kv, "t2", V18, 10), VG_OK);
    fake_now += 10;
    assert_int_equal(set_s(f->kv, "uu", V18, 0), VG_OK);
    s = stats(f->kv);
    assert_int_equal(s.evictions, 7);
    assert_int_equal(s.expired, 1);
    assert_int_equal(get_eq(f->kv, "hh", V18), VG_OK);
}

static void test_too_big(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 100, NULL);
    char big[200];
    memset(big, 'b', sizeof big);
    assert_int_equal(set_s(f->kv, "k", "v", 0), VG_OK);
    assert_int_equal(vg_kv_set(f->kv, "k", 1, big, 100, 0), VG_ETOOBIG);
    assert_int_equal(get_eq(f->kv, "k", "v"), VG_OK); /* nothing written */
    assert_int_equal(vg_kv_set(f->kv, "xx", 2, big, 99, 0), VG_ETOOBIG);
    assert_int_equal(get_rc(f->kv, "xx"), VG_NOTFOUND);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 2);
    assert_int_equal(s.evictions, 0);
    assert_int_equal(s.errors, 0);

    /* Exactly max_bytes fits, by evicting everything else. */
    assert_int_equal(vg_kv_set(f->kv, "xx", 2, big, 98, 0), VG_OK);
    assert_int_equal(get_rc(f->kv, "k"), VG_NOTFOUND);
    s = stats(f->kv);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.evictions, 1);
}

static void test_batch_mixed(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 1000, NULL);
    assert_int_equal(set_s(f->kv, "old", "o", 0), VG_OK);
    assert_int_equal(set_s(f->kv, "gone", "g", 0), VG_OK);
    char big[2000];
    memset(big, 'x', sizeof big);
    vg_kv_op ops[] = {
        {.type = VG_KV_SET, .key = "a", .klen = 1, .val = "A1", .vlen = 2, .ttl_ms = 0},
        {.type = VG_KV_GET, .key = "a", .klen = 1},
        {.type = VG_KV_SET, .key = "a", .klen = 1, .val = "A22", .vlen = 3, .ttl_ms = 700},
        {.type = VG_KV_GET, .key = "a", .klen = 1},
        {.type = VG_KV_GET, .key = "old", .klen = 3},
        {.type = VG_KV_DEL, .key = "gone", .klen = 4},
        {.type = VG_KV_GET, .key = "gone", .klen = 4},
        {.type = VG_KV_DEL, .key = "never-was", .klen = 9},
        {.type = VG_KV_SET, .key = "big", .klen = 3, .val = big, .vlen = sizeof big},
        {.type = VG_KV_SET, .key = "", .klen = 0, .val = "v", .vlen = 1},
        {.type = VG_KV_GET, .key = "missing", .klen = 7},
        {.type = (vg_kv_op_type)42, .key = "odd", .klen = 3},
    };
    size_t n = VG_ARRAY_LEN(ops);
    assert_int_equal(vg_kv_batch(f->kv, ops, n), VG_OK);
    int want[] = {VG_OK, VG_OK, VG_OK, VG_OK, VG_OK, VG_OK, VG_NOTFOUND, VG_NOTFOUND,
                  VG_ETOOBIG, VG_EINVAL, VG_NOTFOUND, VG_EINVAL};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ops[i].rc, want[i]);
    assert_int_equal(ops[1].out.len, 2);
    assert_memory_equal(ops[1].out.data, "A1", 2);
    assert_int_equal(ops[1].expires_at_ms, 0);
    assert_int_equal(ops[3].out.len, 3);
    assert_memory_equal(ops[3].out.data, "A22", 3);
    assert_int_equal(ops[3].expires_at_ms, T0 + 700);
    assert_memory_equal(ops[4].out.data, "o", 1);
    for (size_t i = 0; i < n; i++)
        vg_buf_free(&ops[i].out);

    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 4 + 4);

    /* Reads only: one read txn. */
    vg_kv_op reads[] = {
        {.type = VG_KV_GET, .key = "a", .klen = 1},
        {.type = VG_KV_GET, .key = "gone", .klen = 4},
        {.type = VG_KV_GET, .key = "", .klen = 0},
    };
    assert_int_equal(vg_kv_batch(f->kv, reads, 3), VG_OK);
    assert_int_equal(reads[0].rc, VG_OK);
    assert_memory_equal(reads[0].out.data, "A22", 3);
    assert_int_equal(reads[1].rc, VG_NOTFOUND);
    assert_int_equal(reads[2].rc, VG_EINVAL);
    for (size_t i = 0; i < 3; i++)
        vg_buf_free(&reads[i].out);
    assert_int_equal(vg_kv_batch(f->kv, NULL, 0), VG_OK);
}

typedef struct scan_seen {
    size_t n, stop_at;
    char last[32];
    bool ordered, values_ok;
    vg_kv *del_from;
} scan_seen;

static int scan_cb(void *ud, const char *k, size_t kl, const void *v, size_t vl)
{
    scan_seen *s = ud;
    char key[32], want[40];
    assert_true(kl < sizeof key);
    memcpy(key, k, kl);
    key[kl] = '\0';
    if (s->n && strcmp(s->last, key) >= 0)
        s->ordered = false;
    snprintf(want, sizeof want, "%s=v", key);
    if (vl != strlen(want) || memcmp(v, want, vl) != 0)
        s->values_ok = false;
    snprintf(s->last, sizeof s->last, "%s", key);
    s->n++;
    if (s->del_from)
        assert_int_equal(vg_kv_del(s->del_from, k, kl), VG_OK);
    return s->stop_at && s->n == s->stop_at;
}

static size_t scan_count(vg_kv *kv, const char *prefix, size_t stop_at, vg_kv *del_from)
{
    scan_seen s = {.ordered = true, .values_ok = true, .stop_at = stop_at,
                   .del_from = del_from};
    assert_int_equal(vg_kv_scan(kv, prefix, strlen(prefix), scan_cb, &s), VG_OK);
    assert_true(s.ordered);
    assert_true(s.values_ok);
    return s.n;
}

static void put_kv(vg_kv *kv, const char *fmt, int i, uint64_t ttl)
{
    char k[32], v[40];
    snprintf(k, sizeof k, fmt, i);
    snprintf(v, sizeof v, "%s=v", k);
    assert_int_equal(set_s(kv, k, v, ttl), VG_OK);
}

static void test_scan_prefix(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 64 << 20, "none");
    for (int i = 0; i < 1500; i++)
        put_kv(f->kv, "p:%05d", i, 0);
    for (int i = 0; i < 300; i++)
        put_kv(f->kv, "q:%05d", i, 0);
    for (int i = 0; i < 20; i++)
        put_kv(f->kv, "o:%02d", i, 0);
    /* A run of expired keys longer than one scan step, mid-prefix. */
    for (int i = 0; i < 600; i++)
        put_kv(f->kv, "p:00500x%04d", i, 10);
    fake_now += 10;

    assert_int_equal(scan_count(f->kv, "p:", 0, NULL), 1500);
    assert_int_equal(scan_count(f->kv, "q:", 0, NULL), 300);
    assert_int_equal(scan_count(f->kv, "", 0, NULL), 1820);
    assert_int_equal(scan_count(f->kv, "p:0149", 0, NULL), 10);
    assert_int_equal(scan_count(f->kv, "zzz", 0, NULL), 0);
    assert_int_equal(scan_count(f->kv, "p:", 10, NULL), 10);   /* stops early */
    assert_int_equal(scan_count(f->kv, "p:", 700, NULL), 700); /* across steps */

    /* The callback runs outside any transaction, so it may delete. */
    assert_int_equal(scan_count(f->kv, "q:", 0, f->kv), 300);
    assert_int_equal(scan_count(f->kv, "q:", 0, NULL), 0);
    assert_int_equal(scan_count(f->kv, "p:", 0, NULL), 1500);
    assert_int_equal(stats(f->kv).entries, 1500 + 20 + 600);
    assert_int_equal(vg_kv_scan(f->kv, "x", 1, NULL, NULL), VG_EINVAL);
}

static void test_persistence(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 100, NULL);
    assert_int_equal(set_s(f->kv, "aa", V18, 0), VG_OK);
    assert_int_equal(set_s(f->kv, "bb", V18, 0), VG_OK);
    assert_int_equal(set_s(f->kv, "cc", V18, 5000), VG_OK);
    reopen(f, 100, NULL);

    assert_int_equal(get_eq(f->kv, "aa", V18), VG_OK);
    vg_buf b = {0};
    uint64_t exp = 0;
    assert_int_equal(vg_kv_get(f->kv, "cc", 2, &b, &exp), VG_OK);
    assert_int_equal(exp, T0 + 5000);
    vg_buf_free(&b);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.bytes, 60);

    /* The sequence survives too: new entries are younger than old ones. */
    assert_int_equal(set_s(f->kv, "dd", V18, 0), VG_OK);
    assert_int_equal(set_s(f->kv, "ee", V18, 0), VG_OK);
    assert_int_equal(set_s(f->kv, "ff", V18, 0), VG_OK); /* evicts cc (expiring) */
    assert_int_equal(set_s(f->kv, "gg", V18, 0), VG_OK); /* then aa, the oldest */
    assert_int_equal(get_rc(f->kv, "cc"), VG_NOTFOUND);
    assert_int_equal(get_rc(f->kv, "aa"), VG_NOTFOUND);
    assert_int_equal(get_eq(f->kv, "bb", V18), VG_OK);
    assert_int_equal(get_eq(f->kv, "dd", V18), VG_OK);

    /* A smaller bound applies at open. */
    reopen(f, 40, "full");
    s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 40);
    assert_int_equal(get_rc(f->kv, "bb"), VG_NOTFOUND);
    assert_int_equal(get_eq(f->kv, "ff", V18), VG_OK);
    assert_int_equal(get_eq(f->kv, "gg", V18), VG_OK);
}

/* The crash child's records: deterministic from the number alone. */
static size_t crash_val(uint32_t i, unsigned char *v)
{
    size_t n = 16 + (i * 37u) % 700u;
    for (size_t j = 0; j < n; j++)
        v[j] = (unsigned char)(i * 31u + j * 7u);
    return n;
}

static void crash_child(const char *dir, const char *sync, int fd)
{
    vg_kv_lmdb_opts o = {.dir = dir, .max_bytes = 64 << 20, .sync = sync};
    vg_kv *kv;
    char err[256];
    if (vg_kv_lmdb_open(&o, &kv, err, sizeof err) != VG_OK)
        _exit(2);
    unsigned char v[800];
    for (uint32_t i = 0;; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "c%07u", (unsigned)i);
        if (vg_kv_set(kv, k, (size_t)kl, v, crash_val(i, v), 0) != VG_OK)
            _exit(3);
        if (write(fd, &i, sizeof i) != sizeof i)
            _exit(4);
    }
}

/* Count acknowledgements (4 bytes each, in order) until `want` or the
 * deadline, or with to_eof until the pipe closes. */
static void read_acks(int fd, size_t *bytes, uint32_t want, int ms, bool to_eof)
{
    char buf[1024];
    uint64_t end = vg_mono_ns() + (uint64_t)ms * 1000000u;
    while (to_eof || (*bytes / 4 < want && vg_mono_ns() < end)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (!to_eof && poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            break;
        *bytes += (size_t)r;
    }
}

static void crash_run(fx *f, const char *sync)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        crash_child(f->dir, sync, p[1]);
    }
    close(p[1]);
    size_t bytes = 0;
    read_acks(p[0], &bytes, 3000, 2500, false);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    read_acks(p[0], &bytes, 0, 0, true); /* written before it died */
    close(p[0]);
    uint32_t acked = (uint32_t)(bytes / 4);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_true(acked >= 50);

    f->kv = open_kv(f->dir, 64 << 20, sync);
    unsigned char v[800];
    vg_buf b = {0};
    for (uint32_t i = 0; i < acked; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "c%07u", (unsigned)i);
        size_t n = crash_val(i, v);
        assert_int_equal(vg_kv_get(f->kv, k, (size_t)kl, &b, NULL), VG_OK);
        assert_int_equal(b.len, n);
        assert_memory_equal(b.data, v, n);
    }
    vg_buf_free(&b);
    vg_kv_stats s = stats(f->kv);
    tally t = recount(f->kv);
    assert_int_equal(s.entries, t.entries);
    assert_int_equal(s.bytes, t.bytes);
    /* At most the one record committed but not yet acknowledged. */
    assert_true(t.entries == acked || t.entries == acked + 1);
    /* And the store still takes writes. */
    assert_int_equal(set_s(f->kv, "after", "crash", 0), VG_OK);
}

static void test_crash_meta(void **state) { crash_run(*state, "meta"); }
static void test_crash_none(void **state) { crash_run(*state, "none"); }

/* Values that prove their own integrity: version, then a pattern. */
static size_t conc_val(uint32_t key, uint32_t ver, unsigned char *v)
{
    size_t n = 8 + (ver * 13u) % 300u;
    memcpy(v, &key, 4);
    memcpy(v + 4, &ver, 4);
    for (size_t j = 8; j < n; j++)
        v[j] = (unsigned char)(key ^ ver ^ j);
    return n;
}

static bool conc_ok(uint32_t key, const vg_buf *b)
{
    unsigned char v[320];
    uint32_t k, ver;
    if (b->len < 8)
        return false;
    memcpy(&k, b->data, 4);
    memcpy(&ver, b->data + 4, 4);
    return k == key && conc_val(key, ver, v) == b->len && memcmp(v, b->data, b->len) == 0;
}

#define CONC_KEYS 200

typedef struct conc {
    vg_kv *kv;
    atomic_bool stop;
    atomic_uint bad, reads;
} conc;

static int conc_scan_cb(void *ud, const char *k, size_t kl, const void *v, size_t vl)
{
    conc *c = ud;
    unsigned key;
    vg_buf b = {(char *)v, vl, vl};
    if (kl != 5 || sscanf(k, "r%4u", &key) != 1 || !conc_ok(key, &b))
        atomic_fetch_add(&c->bad, 1);
    return 0;
}

static void *conc_reader(void *arg)
{
    conc *c = arg;
    vg_buf b = {0};
    unsigned seed = (unsigned)(uintptr_t)&b;
    for (unsigned it = 0; !atomic_load(&c->stop); it++) {
        uint32_t key = (uint32_t)rand_r(&seed) % CONC_KEYS;
        char k[8];
        snprintf(k, sizeof k, "r%04u", (unsigned)key);
        int rc = vg_kv_get(c->kv, k, 5, &b, NULL);
        if ((rc == VG_OK && !conc_ok(key, &b)) || (rc != VG_OK && rc != VG_NOTFOUND))
            atomic_fetch_add(&c->bad, 1);
        if (it % 500 == 0 && vg_kv_scan(c->kv, "r", 1, conc_scan_cb, c) != VG_OK)
            atomic_fetch_add(&c->bad, 1);
        atomic_fetch_add(&c->reads, 1);
    }
    vg_buf_free(&b);
    return NULL;
}

static void test_concurrent(void **state)
{
    fx *f = *state;
    vg_clock_ms = vg_real_clock_ms; /* the fake clock is not thread-safe to move */
    f->kv = open_kv(f->dir, 40000, "none");
    conc c = {.kv = f->kv};
    unsigned char v[320];
    for (uint32_t i = 0; i < CONC_KEYS; i++) {
        char k[8];
        snprintf(k, sizeof k, "r%04u", (unsigned)i);
        assert_int_equal(vg_kv_set(f->kv, k, 5, v, conc_val(i, 0, v), 0), VG_OK);
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, conc_reader, &c), 0);
    unsigned seed = 7;
    for (uint32_t ver = 1; ver <= 4000; ver++) {
        uint32_t key = (uint32_t)rand_r(&seed) % CONC_KEYS;
        char k[8];
        snprintf(k, sizeof k, "r%04u", (unsigned)key);
        int rc = ver % 10 == 0 ? vg_kv_del(f->kv, k, 5)
                               : vg_kv_set(f->kv, k, 5, v, conc_val(key, ver, v), 60000);
        assert_true(rc == VG_OK || rc == VG_NOTFOUND);
        if (ver % 1000 == 0)
            assert_int_equal(vg_kv_sweep(f->kv, NULL), VG_OK);
    }
    atomic_store(&c.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&c.bad), 0);
    assert_true(atomic_load(&c.reads) > 0);
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.errors, 0);
    assert_true(s.bytes <= 40000);
    tally t = recount(f->kv);
    assert_int_equal(s.entries, t.entries);
    assert_int_equal(s.bytes, t.bytes);
}

/* A map far too small for the logical bound: commits hit MDB_MAP_FULL
 * and must evict and retry instead of failing. */
static void test_map_full(void **state)
{
    fx *f = *state;
    vg_kv_lmdb_test_map_bytes = 1 << 20;
    f->kv = open_kv(f->dir, 16 << 20, "none");
    char k[16], v[64];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 40000; i++) {
        snprintf(k, sizeof k, "m%07d", i);
        int rc = vg_kv_set(f->kv, k, 8, v, 40, 0);
        if (rc != VG_OK)
            fail_msg("set %d: %d", i, rc);
    }
    vg_kv_stats s = stats(f->kv);
    assert_true(s.evictions > 0);
    assert_int_equal(s.errors, 0);
    assert_int_equal(get_rc(f->kv, "m0039999"), VG_OK);
    assert_int_equal(get_rc(f->kv, "m0000000"), VG_NOTFOUND); /* oldest went first */
    tally t = recount(f->kv);
    assert_int_equal(s.entries, t.entries);
    assert_int_equal(s.bytes, t.bytes);

    /* A large value in a full map, and a batch. */
    static char big[256 << 10];
    assert_int_equal(vg_kv_set(f->kv, "big", 3, big, sizeof big, 0), VG_OK);
    vg_buf b = {0};
    assert_int_equal(vg_kv_get(f->kv, "big", 3, &b, NULL), VG_OK);
    assert_int_equal(b.len, sizeof big);
    vg_buf_free(&b);
    vg_kv_op ops[50];
    char keys[50][16];
    for (int i = 0; i < 50; i++) {
        snprintf(keys[i], sizeof keys[i], "n%07d", i);
        ops[i] = (vg_kv_op){.type = VG_KV_SET, .key = keys[i], .klen = 8, .val = big,
                            .vlen = 4096};
    }
    assert_int_equal(vg_kv_batch(f->kv, ops, 50), VG_OK);
    for (int i = 0; i < 50; i++)
        assert_int_equal(ops[i].rc, VG_OK);
    assert_int_equal(get_rc(f->kv, "n0000049"), VG_OK);
    assert_int_equal(stats(f->kv).errors, 0);
}

/* Short values and a damaged accounting record, written behind the
 * backend's back. */
static void test_corrupt(void **state)
{
    fx *f = *state;
    f->kv = open_kv(f->dir, 1 << 20, NULL);
    assert_int_equal(set_s(f->kv, "good", "value", 0), VG_OK);
    vg_kv_close(f->kv);
    f->kv = NULL;

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi data, meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 3), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "data", 0, &data), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_val k = {3, "bad"}, v = {2, "xy"};
    assert_int_equal(mdb_put(txn, data, &k, &v, 0), 0);
    MDB_val mk = {4, "acct"}, mv = {5, "junk!"};
    assert_int_equal(mdb_put(txn, meta, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    f->kv = open_kv(f->dir, 1 << 20, NULL);
    assert_int_equal(get_rc(f->kv, "bad"), VG_NOTFOUND);
    assert_int_equal(get_eq(f->kv, "good", "value"), VG_OK);
    vg_kv_op op = {.type = VG_KV_GET, .key = "bad", .klen = 3};
    assert_int_equal(vg_kv_batch(f->kv, &op, 1), VG_OK);
    assert_int_equal(op.rc, VG_NOTFOUND);
    vg_buf_free(&op.out);
    assert_int_equal(recount(f->kv).entries, 1);
    /* Accounting was rebuilt from the records, the short one included. */
    vg_kv_stats s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 4 + 5 + 3);
    uint64_t removed;
    assert_int_equal(vg_kv_sweep(f->kv, &removed), VG_OK);
    assert_int_equal(set_s(f->kv, "bad", "fixed", 0), VG_OK);
    assert_int_equal(get_eq(f->kv, "bad", "fixed"), VG_OK);
    s = stats(f->kv);
    assert_int_equal(s.entries, 2);
    assert_int_equal(s.bytes, 4 + 5 + 3 + 5);
    assert_int_equal(vg_kv_del(f->kv, "bad", 3), VG_OK);
    assert_int_equal(stats(f->kv).bytes, 9);
}

static void test_open_options(void **state)
{
    fx *f = *state;
    char err[256] = "", sub[128];
    vg_kv *kv = NULL;
    vg_kv_lmdb_opts o = {.dir = f->dir, .max_bytes = 1000, .sync = "sometimes"};
    assert_int_equal(vg_kv_lmdb_open(&o, &kv, err, sizeof err), VG_EINVAL);
    assert_non_null(strstr(err, "sync"));
    assert_null(kv);
    o.sync = NULL;
    o.max_bytes = 0;
    assert_int_equal(vg_kv_lmdb_open(&o, &kv, err, sizeof err), VG_EINVAL);
    o.max_bytes = 1000;
    o.dir = "";
    assert_int_equal(vg_kv_lmdb_open(&o, &kv, err, sizeof err), VG_EINVAL);

    /* A regular file where the directory should be. */
    snprintf(sub, sizeof sub, "%s/file", f->dir);
    FILE *fp = fopen(sub, "w");
    assert_non_null(fp);
    fclose(fp);
    o.dir = sub;
    assert_int_equal(vg_kv_lmdb_open(&o, &kv, err, sizeof err), VG_ERR);
    assert_non_null(strstr(err, sub));

    /* Every sync mode works, nested directories are created. */
    const char *modes[] = {"full", "meta", "none", NULL};
    for (size_t i = 0; i < VG_ARRAY_LEN(modes); i++) {
        snprintf(sub, sizeof sub, "%s/m%zu/nested", f->dir, i);
        vg_kv *m = open_kv(sub, 1000, modes[i]);
        assert_int_equal(set_s(m, "k", "v", 0), VG_OK);
        assert_int_equal(vg_kv_sweep(m, NULL), VG_OK);
        vg_kv_close(m);
        m = open_kv(sub, 1000, modes[i]);
        assert_int_equal(get_eq(m, "k", "v"), VG_OK);
        vg_kv_close(m);
    }
}

int main(void)
{
    const char *only = getenv("VG_TEST_ONLY"); /* e.g. "test_scan*" */
    if (only)
        cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite_accounting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_meta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
