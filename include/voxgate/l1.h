/* L1: the in-process hot cache. Sharded LRU with per-entry TTL, bounded
 * by bytes and entries. Items are immutable and reference counted, so a
 * hit can be handed to the HTTP layer without copying the bytes. */
#ifndef VOXGATE_L1_H
#define VOXGATE_L1_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_l1 vg_l1;

/* Read-only for callers. Valid until vg_l1_release(). */
typedef struct vg_l1_item {
    const char *key;
    size_t key_len;
    const unsigned char *data;
    size_t len;
    char ctype[96];           /* content type, "" when none */
    char sha256[65];          /* of data, "" when not computed */
    uint64_t created_at_ms;
    uint64_t expires_at_ms;   /* 0 = never */
    /* private to l1.c */
    atomic_uint refs;
    struct vg_l1_item *hnext, *prev, *next;
    uint64_t hash;
    size_t charge;
} vg_l1_item;

typedef struct vg_l1_opts {
    size_t max_bytes;       /* total charge (key + data + overhead) */
    size_t max_entries;
    size_t shards;          /* rounded up to a power of two, >= 1 */
    size_t max_item_bytes;  /* larger items are refused (VG_ETOOBIG) */
} vg_l1_opts;

typedef struct vg_l1_stats {
    uint64_t hits, misses, inserts, evictions, expired;
    uint64_t entries, bytes;
} vg_l1_stats;

vg_l1 *vg_l1_new(const vg_l1_opts *opts);
void vg_l1_free(vg_l1 *c);

/* A referenced item, or NULL on miss. An expired item is removed and
 * counted as a miss. Uses vg_clock_ms. */
vg_l1_item *vg_l1_get(vg_l1 *c, const char *key, size_t klen);
void vg_l1_release(vg_l1_item *it);

/* Insert or replace. Copies key and data. sha256 may be NULL.
 * Evicts least recently used items of the shard to make room. */
int vg_l1_put(vg_l1 *c, const char *key, size_t klen, const void *data, size_t len,
              const char *ctype, const char *sha256, uint64_t created_at_ms,
              uint64_t expires_at_ms);

/* Returns true when an item was removed. */
bool vg_l1_del(vg_l1 *c, const char *key, size_t klen);
/* Removes every item whose key starts with prefix and whose next byte
 * (if any) is in `next_chars` (e.g. ":@"); returns the count. */
size_t vg_l1_del_prefix(vg_l1 *c, const char *prefix, size_t plen, const char *next_chars);

void vg_l1_stats_get(vg_l1 *c, vg_l1_stats *out);

#endif
