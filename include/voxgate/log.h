/* JSON logs: one object per line on stdout. Lines are built into a
 * per-thread buffer and written whole, by size or by a flusher thread
 * every few milliseconds, so the hit path makes no write() per request
 * and lines from many threads never interleave. */
#ifndef VOXGATE_LOG_H
#define VOXGATE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { VG_LOG_DEBUG = 0, VG_LOG_INFO = 1, VG_LOG_WARN = 2, VG_LOG_ERROR = 3 } vg_log_level;

/* VG_LF_MICROS: a count of microseconds written as milliseconds with three
 * decimals (1234 -> 1.234), in integer arithmetic: cheap on the hot path. */
typedef enum { VG_LF_STR, VG_LF_INT, VG_LF_UINT, VG_LF_DBL, VG_LF_BOOL, VG_LF_MICROS } vg_log_ftype;

typedef struct vg_log_field {
    const char *key;       /* a plain identifier, written as is */
    vg_log_ftype type;
    union {
        const char *s;     /* NULL fields are skipped */
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
} vg_log_field;

#define VG_LS(k, x) ((vg_log_field){.key = (k), .type = VG_LF_STR, .v.s = (x)})
#define VG_LI(k, x) ((vg_log_field){.key = (k), .type = VG_LF_INT, .v.i = (int64_t)(x)})
#define VG_LU(k, x) ((vg_log_field){.key = (k), .type = VG_LF_UINT, .v.u = (uint64_t)(x)})
#define VG_LD(k, x) ((vg_log_field){.key = (k), .type = VG_LF_DBL, .v.d = (double)(x)})
#define VG_LMS(k, us) ((vg_log_field){.key = (k), .type = VG_LF_MICROS, .v.u = (uint64_t)(us)})
#define VG_LB(k, x) ((vg_log_field){.key = (k), .type = VG_LF_BOOL, .v.b = (x)})

/* fd: where lines go (1 in production). flush_ms: flusher period; 0 means
 * write each line at once (tests). Safe to call once before threads start. */
void vg_log_init(int fd, vg_log_level level, unsigned flush_ms);
/* Flush every thread's buffer and stop the flusher. */
void vg_log_shutdown(void);
void vg_log_flush(void);
void vg_log_set_level(vg_log_level level);
bool vg_log_enabled(vg_log_level level);
/* "debug" | "info" | "warn" | "error" -> level; -1 when unknown. */
int vg_log_level_parse(const char *s);
const char *vg_log_level_name(vg_log_level level);

/* Emit one line: ts, level, msg, request_id (omitted when NULL), then the
 * fields in order. Strings are JSON-escaped; invalid UTF-8 bytes become
 * U+FFFD so every line is valid JSON. */
void vg_log(vg_log_level level, const char *request_id, const char *msg,
            const vg_log_field *fields, size_t nfields);
void vg_logf(vg_log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Render one line into buf (no newline) - exposed for unit tests. Returns
 * length written, or the length needed if cap is too small. */
size_t vg_log_render(char *buf, size_t cap, uint64_t ts_ms, vg_log_level level,
                     const char *request_id, const char *msg, const vg_log_field *fields,
                     size_t nfields);

#endif
