/* Cache tier access shared by the cache-aside API (cache.c) and the
 * gateway (gateway.c): counted L1/L2 reads, removal of corrupt entries,
 * TTS blob naming, the audio check of a TTS hit, and the ordered TTS
 * write (audio before metadata). None of it needs a request: the gateway
 * stores results on other threads. rid (a request id) may be NULL. */
#ifndef VOXGATE_API_TIERS_H
#define VOXGATE_API_TIERS_H

#include "voxgate/app.h"
#include "voxgate/entry.h"
#include "voxgate/keys.h"

vg_l1_item *vg_tier_l1_get(vg_app *app, const char *key, size_t klen);
/* VG_OK, VG_NOTFOUND, or an error (counted, logged; callers treat it as a miss). */
int vg_tier_l2_get(vg_app *app, const char *rid, const char *key, size_t klen, vg_buf *val,
                   uint64_t *exp);
/* The counting of one L2 read that took us (for reads made elsewhere,
 * such as the non-blocking one of cache.c). */
void vg_tier_l2_count(vg_app *app, const char *rid, int rc, uint64_t us);
/* VG_OK, or the kv error (counted as a dropped write). */
int vg_tier_l2_set(vg_app *app, const char *key, size_t klen, const void *val, size_t vlen,
                   uint64_t ttl_ms);
void vg_tier_drop_corrupt(vg_app *app, const char *rid, const char *key, size_t klen,
                          const char *why);

/* Blob names are per key and per audio, so overwriting an entry never
 * changes the bytes behind a name another reader may hold. */
void vg_tier_tts_blob_name(const char *key, size_t klen, const char *audio_sha, char out[256]);
/* The metadata of a TTS entry: VG_OK, VG_NOTFOUND (also for a corrupt
 * entry, which is removed), or an L2 error. */
int vg_tier_tts_meta(vg_app *app, const char *rid, const char *key, size_t klen, vg_tts_meta *m,
                     uint64_t *exp);
/* The audio of an entry, checked against its size and sha256. Missing or
 * corrupt audio removes the entry and its blob: a miss, never a wrong
 * answer. A store error is counted and is a miss too. */
int vg_tier_tts_audio(vg_app *app, const char *rid, const char *key, size_t klen,
                      const vg_tts_meta *m, vg_buf *audio);
/* The audio of a TTS L2 hit, checked as vg_tier_tts_audio checks it.
 * Audio too big for L1 is better sent from a file than read into memory
 * on every hit, when the store can open one (the local store's own file,
 * checked once per file; S3's spool file, checked on every read): then
 * from_file, and the audio is m->size bytes of fd from offset (the
 * caller closes fd). Otherwise it is read into buf (the caller frees it)
 * and put in L1 until exp. */
typedef struct vg_tts_audio {
    bool from_file;
    int fd;
    uint64_t offset;
    vg_buf buf;
} vg_tts_audio;
int vg_tier_tts_hit_audio(vg_app *app, const char *rid, const char *key, size_t klen,
                          const vg_tts_meta *m, uint64_t exp, vg_tts_audio *out);

typedef enum { VG_TTS_STORED = 0, VG_TTS_BLOB_FAILED, VG_TTS_META_FAILED } vg_tts_store_rc;
/* Audio to the blob store, then its metadata to L2 (an older blob of the
 * key is removed once the new metadata is in), then L1. sha256 is the
 * audio's hex digest when the caller has it already (NULL: computed
 * here). m gets the metadata written; *kv_rc the L2 error when the
 * metadata failed. */
vg_tts_store_rc vg_tier_tts_store(vg_app *app, const char *rid, const vg_key_parts *parts,
                                  const char *key, size_t klen, const void *audio, size_t n,
                                  const char *ctype, const char *sha256, uint64_t ttl_ms,
                                  vg_tts_meta *m, int *kv_rc);

/* Removes the TTS audio no entry can use any more. An entry lives at
 * most cache.max_ttl_s from its write, and its audio is written just
 * before it, so audio written longer ago than that (plus
 * cache.audio_sweep_grace_s for clocks that disagree and audio_urls
 * handed out) belongs to none: expired, replaced by a concurrent PUT, or
 * left by a crash between the audio and its metadata. Returns early once
 * *stop is set (may be NULL). */
int vg_tier_tts_sweep(vg_app *app, uint64_t now_ms, const _Atomic bool *stop, uint64_t *removed);

#endif
