/* Cache tier access shared by the cache-aside API and the gateway (see
 * tiers.h). Every read and write is counted here, once. */
#include "tiers.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "voxgate/keys.h"
#include "voxgate/log.h"

#define TTS_BLOB_PREFIX "tts/"

vg_l1_item *vg_tier_l1_get(vg_app *app, const char *key, size_t klen)
{
    uint64_t t0 = vg_mono_ns();
    vg_l1_item *it = vg_l1_get(app->l1, key, klen);
    vg_hist_observe_us(&app->m.l1.get_us, (vg_mono_ns() - t0) / 1000u);
    vg_counter_inc(it ? &app->m.l1.hits : &app->m.l1.misses);
    return it;
}

void vg_tier_l2_count(vg_app *app, const char *rid, int rc, uint64_t us)
{
    vg_hist_observe_us(&app->m.l2.get_us, us);
    if (rc == VG_OK)
        vg_counter_inc(&app->m.l2.hits);
    else if (rc == VG_NOTFOUND)
        vg_counter_inc(&app->m.l2.misses);
    else {
        vg_counter_inc(&app->m.l2.errors);
        vg_log(VG_LOG_WARN, rid, "cache read failed",
               (vg_log_field[]){VG_LS("tier", "l2"), VG_LI("rc", rc)}, 2);
    }
}

int vg_tier_l2_get(vg_app *app, const char *rid, const char *key, size_t klen, vg_buf *val,
                   uint64_t *exp)
{
    uint64_t t0 = vg_mono_ns();
    int rc = vg_kv_get(app->kv, key, klen, val, exp);
    vg_tier_l2_count(app, rid, rc, (vg_mono_ns() - t0) / 1000u);
    return rc;
}

int vg_tier_l2_set(vg_app *app, const char *key, size_t klen, const void *val, size_t vlen,
                   uint64_t ttl_ms)
{
    int rc = vg_kv_set(app->kv, key, klen, val, vlen, ttl_ms);
    vg_counter_inc(rc == VG_OK ? &app->m.l2_writes : &app->m.l2_write_errors);
    return rc;
}

void vg_tier_drop_corrupt(vg_app *app, const char *rid, const char *key, size_t klen,
                          const char *why)
{
    vg_counter_inc(&app->m.corrupt_entries);
    vg_kv_del(app->kv, key, klen);
    vg_l1_del(app->l1, key, klen);
    vg_log(VG_LOG_WARN, rid, "corrupt cache entry removed",
           (vg_log_field[]){VG_LS("reason", why)}, 1);
}

void vg_tier_tts_blob_name(const char *key, size_t klen, const char *audio_sha, char out[256])
{
    char kh[VG_SHA256_HEX + 1];
    vg_sha256_hex(key, klen, kh);
    snprintf(out, 256, TTS_BLOB_PREFIX "%.2s/%s-%.16s", kh, kh, audio_sha);
}

int vg_tier_tts_meta(vg_app *app, const char *rid, const char *key, size_t klen, vg_tts_meta *m,
                     uint64_t *exp)
{
    vg_buf val = {0};
    int rc = vg_tier_l2_get(app, rid, key, klen, &val, exp);
    if (rc == VG_OK && vg_tts_meta_decode(val.data, val.len, m) != VG_OK) {
        vg_tier_drop_corrupt(app, rid, key, klen, "tts metadata does not decode");
        rc = VG_NOTFOUND;
    }
    vg_buf_free(&val);
    return rc;
}

/* Missing or failing audio takes its entry with it; other errors are
 * the store's, and leave both for the next read. */
static int audio_failed(vg_app *app, const char *rid, const char *key, size_t klen,
                        const vg_tts_meta *m, int rc)
{
    if (rc == VG_NOTFOUND || rc == VG_ECORRUPT) {
        vg_tier_drop_corrupt(app, rid, key, klen,
                             rc == VG_NOTFOUND ? "audio is missing" : "audio fails its check");
        vg_blob_del(app->blob, m->blob);
    } else {
        vg_counter_inc(&app->m.blob_errors);
    }
    return rc;
}

int vg_tier_tts_audio(vg_app *app, const char *rid, const char *key, size_t klen,
                      const vg_tts_meta *m, vg_buf *audio)
{
    vg_blob_info info;
    int rc = vg_blob_get(app->blob, m->blob, audio, &info);
    if (rc == VG_OK) {
        char sha[VG_SHA256_HEX + 1];
        vg_sha256_hex(audio->data ? audio->data : "", audio->len, sha);
        if (audio->len == m->size && strcmp(sha, m->sha256) == 0)
            return VG_OK;
        rc = VG_ECORRUPT;
    }
    vg_buf_free(audio);
    return audio_failed(app, rid, key, klen, m, rc);
}

static int tts_audio_fd(vg_app *app, const char *rid, const char *key, size_t klen,
                        const vg_tts_meta *m, int *fd, uint64_t *offset)
{
    vg_blob_info info;
    int rc = vg_blob_open(app->blob, m->blob, true, fd, offset, &info);
    if (rc == VG_OK) {
        /* The store checked the bytes against its own digest; that must
         * be the entry's. */
        if (info.size == m->size && strcmp(info.etag, m->sha256) == 0)
            return VG_OK;
        close(*fd);
        rc = VG_ECORRUPT;
    }
    return audio_failed(app, rid, key, klen, m, rc);
}

int vg_tier_tts_hit_audio(vg_app *app, const char *rid, const char *key, size_t klen,
                          const vg_tts_meta *m, uint64_t exp, vg_tts_audio *out)
{
    *out = (vg_tts_audio){.fd = -1};
    if (vg_blob_can_open(app->blob) && m->size > app->cfg->cache.l1.max_item_bytes) {
        out->from_file = true;
        return tts_audio_fd(app, rid, key, klen, m, &out->fd, &out->offset);
    }
    int rc = vg_tier_tts_audio(app, rid, key, klen, m, &out->buf);
    if (rc == VG_OK)
        vg_l1_put(app->l1, key, klen, out->buf.data, out->buf.len, m->content_type, m->sha256,
                  m->created_ms, exp);
    return rc;
}

vg_tts_store_rc vg_tier_tts_store(vg_app *app, const char *rid, const vg_key_parts *parts,
                                  const char *key, size_t klen, const void *audio, size_t n,
                                  const char *ctype, const char *sha256, uint64_t ttl_ms,
                                  vg_tts_meta *m, int *kv_rc)
{
    *m = (vg_tts_meta){.size = n, .created_ms = vg_clock_ms()};
    snprintf(m->content_type, sizeof m->content_type, "%s", ctype);
    if (sha256)
        snprintf(m->sha256, sizeof m->sha256, "%s", sha256);
    else
        vg_sha256_hex(audio, n, m->sha256);
    vg_tier_tts_blob_name(key, klen, m->sha256, m->blob);
    vg_tts_meta old;
    uint64_t oexp;
    bool had_old = vg_tier_tts_meta(app, rid, key, klen, &old, &oexp) == VG_OK;
    if (vg_blob_put(app->blob, m->blob, audio, n, ctype) != VG_OK) {
        vg_counter_inc(&app->m.blob_errors);
        return VG_TTS_BLOB_FAILED;
    }
    vg_buf val = {0};
    vg_tts_meta_encode(&val, m, parts->provider, parts->language, parts->voice);
    *kv_rc = vg_tier_l2_set(app, key, klen, val.data, val.len, ttl_ms);
    vg_buf_free(&val);
    if (*kv_rc != VG_OK) {
        if (!had_old || strcmp(old.blob, m->blob) != 0)
            vg_blob_del(app->blob, m->blob);
        return VG_TTS_META_FAILED;
    }
    if (had_old && strcmp(old.blob, m->blob) != 0)
        vg_blob_del(app->blob, old.blob);
    vg_l1_put(app->l1, key, klen, audio, n, m->content_type, m->sha256, m->created_ms,
              m->created_ms + ttl_ms);
    return VG_TTS_STORED;
}

int vg_tier_tts_sweep(vg_app *app, uint64_t now_ms, const _Atomic bool *stop, uint64_t *removed)
{
    const vg_config *cfg = app->cfg;
    uint64_t keep_ms = (cfg->cache.max_ttl_s + cfg->cache.audio_sweep_grace_s) * 1000u;
    vg_blob_sweep_job job = {.prefix = TTS_BLOB_PREFIX, .stop = stop,
                             .cutoff_ms = now_ms > keep_ms ? now_ms - keep_ms : 0};
    int rc = vg_blob_sweep(app->blob, &job);
    *removed = job.removed;
    return rc;
}
