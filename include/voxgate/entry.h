/* Cache entry codecs (SPEC §4). An STT entry is JSON with the result
 * kept byte-for-byte as the caller gave it; a TTS entry is JSON metadata
 * pointing at the audio in blob storage. Decoders treat anything not
 * written by the encoders as corrupt, so bad data is a miss, never a
 * wrong answer. */
#ifndef VOXGATE_ENTRY_H
#define VOXGATE_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

/* {"provider":"..","language":"..","created_at":"<rfc3339>","result":<raw>} */
int vg_stt_entry_encode(vg_buf *out, const char *provider, const char *language,
                        uint64_t created_ms, const char *result, size_t rlen);
/* VG_OK with *result pointing into val, or VG_ECORRUPT. */
int vg_stt_entry_decode(const char *val, size_t vlen, const char **result, size_t *rlen,
                        uint64_t *created_ms);

typedef struct vg_tts_meta {
    char content_type[96];
    uint64_t size;
    char sha256[65];
    char blob[256];
    uint64_t created_ms;
} vg_tts_meta;

int vg_tts_meta_encode(vg_buf *out, const vg_tts_meta *m, const char *provider,
                       const char *language, const char *voice);
int vg_tts_meta_decode(const char *val, size_t vlen, vg_tts_meta *m);

/* Parse exactly one JSON value filling all of buf (whitespace around it
 * allowed); NULL when the text is not that. The caller frees with
 * cJSON_Delete. Declared with void to keep cJSON out of this header. */
void *vg_json_parse_exact(const char *buf, size_t len);

/* True when buf is exactly one JSON value (RFC 8259; whitespace around
 * it allowed), without building a tree. Accepts a subset of what
 * vg_json_parse_exact accepts. */
bool vg_json_valid(const char *buf, size_t len);

/* Byte spans of values inside a JSON text that is known to be valid
 * (vg_json_parse_exact accepted it), so that a value can be stored as
 * its sender wrote it rather than as a re-serialisation, which would
 * round numbers past 2^53 and rewrite 1.0e2 as 100. */
typedef struct vg_json_iter {
    const char *p, *e;
} vg_json_iter;
/* Start on the array that buf holds; false when it is not one. */
bool vg_json_array(vg_json_iter *it, const char *buf, size_t len);
/* The array's next element; false at the end. */
bool vg_json_next(vg_json_iter *it, const char **v, size_t *vlen);
/* The value of the object's first member called name. False when it has
 * none, and when any key is written with an escape: cJSON matches
 * decoded names, and a raw match could then pick another member. */
bool vg_json_member(const char *obj, size_t len, const char *name, const char **v,
                    size_t *vlen);

/* Strict "YYYY-MM-DDTHH:MM:SS.mmmZ" -> ms since the epoch. */
int vg_parse_rfc3339_ms(const char *s, uint64_t *ms);

/* A media type we accept for stored audio: type/subtype of token chars,
 * optional parameters, at most 95 bytes. */
bool vg_content_type_valid(const char *ct);

#endif
