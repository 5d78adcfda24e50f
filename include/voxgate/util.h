/* Small shared helpers: result codes, a growable byte buffer, clocks.
 * Every module includes this; keep it free of heavy dependencies. */
#ifndef VOXGATE_UTIL_H
#define VOXGATE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Result codes shared by every seam (kv, blob, l1, config...).
 * VG_OK and VG_NOTFOUND are not errors; negative values are. */
enum {
    VG_OK = 0,
    VG_NOTFOUND = 1,
    VG_ERR = -1,        /* unexpected internal failure */
    VG_ENOMEM = -2,
    VG_EINVAL = -3,     /* bad argument from the caller */
    VG_EUNAVAIL = -4,   /* a dependency is down or timed out */
    VG_ETOOBIG = -5,    /* over a configured bound */
    VG_ECORRUPT = -6,   /* stored data failed validation */
};

#define VG_UNUSED(x) ((void)(x))
#define VG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Wall-clock milliseconds since the epoch. A function pointer so unit
 * tests can inject a clock; production never reassigns it. */
extern uint64_t (*vg_clock_ms)(void);
uint64_t vg_real_clock_ms(void);

/* Monotonic nanoseconds, for durations only. */
uint64_t vg_mono_ns(void);

/* The time ms from now on clock clk, as pthread_cond_timedwait takes it
 * (CLOCK_REALTIME for a default condition variable). */
struct timespec vg_deadline(clockid_t clk, uint64_t ms);

/* Format ms-since-epoch as RFC 3339 UTC with milliseconds:
 * "2026-11-24T08:01:02.345Z" (24 chars + NUL). */
void vg_format_rfc3339_ms(uint64_t ms, char out[32]);

/* A growable byte buffer. Zero-initialise to use; data is always
 * NUL-terminated when non-NULL (the NUL is not counted in len). */
typedef struct vg_buf {
    char *data;
    size_t len;
    size_t cap;
} vg_buf;

int vg_buf_reserve(vg_buf *b, size_t extra);
int vg_buf_append(vg_buf *b, const void *p, size_t n);
int vg_buf_puts(vg_buf *b, const char *s);
int vg_buf_printf(vg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int vg_buf_vprintf(vg_buf *b, const char *fmt, va_list ap);
/* Append s as a JSON string literal, quotes included, escaping per RFC 8259. */
int vg_buf_json_str(vg_buf *b, const char *s, size_t n);
/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
bool vg_utf8_valid(const char *s, size_t n);
void vg_buf_reset(vg_buf *b);
void vg_buf_free(vg_buf *b);

/* Constant-time comparison of two byte strings; lengths may differ
 * (the time then depends only on the length of b). */
bool vg_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/* Parse a whole decimal string into uint64 with no sign, no spaces,
 * no trailing garbage. Returns false on any deviation or overflow. */
bool vg_parse_u64(const char *s, uint64_t *out);

#endif
