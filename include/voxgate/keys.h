/* Cache keys: SHA-256 helpers, identifier and hash validation, the
 * canonical key builder of SPEC §4 and canonical parameter hashing. */
#ifndef VOXGATE_KEYS_H
#define VOXGATE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VG_SHA256_HEX 64
#define VG_IDENT_MAX 64
#define VG_KEY_MAX 512

typedef enum { VG_KIND_STT = 0, VG_KIND_TTS = 1 } vg_kind;

/* Lowercase hex SHA-256 of data; out gets 64 chars + NUL. */
void vg_sha256_hex(const void *data, size_t len, char out[VG_SHA256_HEX + 1]);
void vg_sha256_raw(const void *data, size_t len, unsigned char out[32]);
/* SHA-256 of len bytes of fd from off, read in pieces: VG_OK, VG_ECORRUPT
 * when the file ends first, VG_ERR with errno set when a read fails. */
int vg_sha256_fd(int fd, uint64_t off, uint64_t len, unsigned char out[32]);
void vg_hex_lower(const unsigned char *in, size_t n, char *out /* 2n+1 */);

/* [A-Za-z0-9_.-]{1,64} */
bool vg_ident_valid(const char *s);
/* Exactly 64 hex digits, either case. */
bool vg_hash_valid(const char *s);
/* Copy a valid hash into out, lowercased. */
void vg_hash_normalize(const char *in, char out[VG_SHA256_HEX + 1]);

typedef struct vg_key_parts {
    vg_kind kind;
    const char *provider;
    const char *language;
    const char *voice;    /* TTS only */
    const char *hash;     /* audio_hash (STT) or text_hash (TTS), normalized */
    const char *format;   /* optional, NULL or "" when absent */
    unsigned epoch;       /* provider cache_epoch; 0 = none */
} vg_key_parts;

/* Build "{prefix}:stt:{provider}[@epoch]:{language}:{hash}[:{format}]" or
 * "{prefix}:tts:{provider}[@epoch]:{language}:{voice}:{hash}[:{format}]".
 * The "@epoch" suffix appears only when epoch > 0, so default keys are
 * exactly the SPEC's format; '@' is outside the identifier alphabet, so an
 * epoch can never collide with another provider's name.
 * Returns the key length, or -1 if an identifier is invalid or out is too small. */
int vg_key_build(const char *prefix, const vg_key_parts *p, char *out, size_t cap);

/* Prefix matching every key of one provider (all epochs) for one kind:
 * "{prefix}:{kind}:{provider}". Callers match keys that continue with
 * ':' or '@'. Returns length or -1. */
int vg_key_provider_prefix(const char *prefix, vg_kind kind, const char *provider,
                           char *out, size_t cap);
/* True when key belongs to the provider prefix built above. */
bool vg_key_has_provider_prefix(const char *key, size_t klen, const char *pfx, size_t plen);

/* Canonical hash of named parameters plus a payload: names sorted
 * bytewise, each "name" and "value" length-prefixed, then the payload.
 * Used by the gateway so that requests differing in any output-affecting
 * parameter get different hashes. NULL values are skipped (absent).
 * Hashed bytes: domain and its NUL; then per parameter, in name order,
 * u32 big-endian length + name + u32 big-endian length + value; then u64
 * big-endian payload length + payload. The caller's array is not
 * reordered. Returns 0, or -1 on a NULL name, a duplicate name (even
 * with a NULL value) or a bad argument. */
typedef struct vg_param {
    const char *name;
    const char *value;
} vg_param;
int vg_canon_hash(const char *domain, vg_param *params, size_t n, const void *payload,
                  size_t plen, char out[VG_SHA256_HEX + 1]);

#endif
