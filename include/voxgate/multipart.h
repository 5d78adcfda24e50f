/* multipart/form-data (RFC 7578 over RFC 2046) for bodies that are already
 * fully buffered: the OpenAI-compatible POST /v1/audio/transcriptions and
 * POST /v1/stt with a `file` part. Zero-copy for data: a part's data points
 * into the body, which must outlive the parts. Names, filenames and part
 * content types are copied into fixed arrays; a value that does not fit is
 * an error, never a truncation, so two different names cannot collapse.
 *
 * Accepted beyond the letter of the RFCs, because real clients send it:
 * bare LF instead of CRLF at the end of delimiter and part header lines
 * (data before a delimiter then loses its "\n" or "\r\n"), a missing CRLF
 * between the blank line and a delimiter (an empty part), whitespace
 * ("transport padding") after a delimiter, and no line end after the
 * closing delimiter. Header folding is not supported. Every step is linear
 * in the body size (delimiters are found with memmem). */
#ifndef VOXGATE_MULTIPART_H
#define VOXGATE_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#define VG_MP_BOUNDARY_MAX 70     /* RFC 2046 */
#define VG_MP_HEADER_MAX 8192     /* bytes of one part's header block */

typedef struct vg_mp_part {
    char name[128];       /* Content-Disposition: form-data; name="..." (never "") */
    char filename[256];   /* "" when the part has no filename */
    bool has_filename;    /* filename="" is present but empty: true with "" */
    char ctype[128];      /* the part's Content-Type, trimmed; "" when none */
    const char *data;     /* into the body; never NULL after a successful parse */
    size_t len;
} vg_mp_part;

/* The boundary from a Content-Type value such as
 * `multipart/form-data; charset=utf-8; boundary="abc"`: type and parameter
 * names case-insensitive, the value a token or a quoted-string, other
 * parameters allowed. The boundary must be 1-70 RFC 2046 bchars, not end
 * in a space, and appear once. false (out = "") when the type is not
 * multipart/form-data, the boundary is missing or invalid, or it does not
 * fit in cap bytes with its NUL. */
bool vg_mp_boundary(const char *content_type, char *out, size_t cap);

/* Parse a whole body delimited by boundary (without the leading "--").
 * VG_OK with *nparts parts (zero is possible: "--b--"), or VG_EINVAL with
 * a message in err such as "multipart: no closing boundary" or
 * "multipart: part 2 has no Content-Disposition name". Preamble and
 * epilogue are ignored; headers other than Content-Disposition and
 * Content-Type are ignored; `filename*=UTF-8''...` is decoded only when
 * there is no plain filename. err may be NULL. */
int vg_mp_parse(const char *body, size_t len, const char *boundary, vg_mp_part *parts,
                size_t max_parts, size_t *nparts, char *err, size_t errlen);

/* The first part named name after prev (prev NULL: from the start), or
 * NULL. Repeated fields such as `timestamp_granularities[]`:
 *   for (p = vg_mp_next(ps, n, NULL, k); p; p = vg_mp_next(ps, n, p, k)) */
const vg_mp_part *vg_mp_next(const vg_mp_part *parts, size_t n, const vg_mp_part *prev,
                             const char *name);

/* The first part named name, or NULL. */
const vg_mp_part *vg_mp_find(const vg_mp_part *parts, size_t n, const char *name);

/* A text field's data as a C string in out: VG_OK, VG_ETOOBIG when it
 * needs more than cap bytes with its NUL, VG_EINVAL when it holds a NUL. */
int vg_mp_text(const vg_mp_part *p, char *out, size_t cap);

#endif
