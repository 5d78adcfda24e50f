/* JSON logging: one object per line. The hit path renders its line into
 * a per-thread buffer and returns; a flusher thread writes the buffers
 * out every flush_ms, so steady state costs neither a malloc nor a
 * write() per line. A global write lock keeps each buffer's bytes
 * contiguous on the fd, so lines from different threads never mix.
 * Each buffer has two halves: the flusher writes one while its thread
 * goes on appending to the other, so a slow stdout delays the flusher,
 * not the threads that log. A round that finds nothing to write parks
 * the flusher until the next line, so an idle process never wakes. */
#include "voxgate/log.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/util.h"

#define LOG_BUF_SIZE (64 * 1024)
#define LOGF_MSG_MAX 2048

/* One thread's pending lines. Only its owner appends, but the flusher
 * and vg_log_flush drain it too, hence the (normally uncontended) lock.
 * Buffers outlive their threads: an exited thread's lines still get
 * flushed, and the buffer is handed to the next thread that logs. */
typedef struct logbuf {
    pthread_mutex_t mu;
    char *data;               /* the half being appended to */
    size_t len;
    char *out;                /* the other half; a flusher's while `writing` */
    bool writing;
    bool orphan;
    struct logbuf *next;
    char half[2][LOG_BUF_SIZE];
} logbuf;

static _Atomic int log_level = VG_LOG_INFO;
static _Atomic int log_fd = 1;
static _Atomic unsigned log_flush_ms = 0;

static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static logbuf *buf_list;
/* Bumped when shutdown frees the buffers, so threads drop stale pointers. */
static _Atomic unsigned buf_gen = 1;

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

static pthread_mutex_t flusher_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flusher_cv;
static pthread_t flusher_tid;
static bool flusher_running;
static bool flusher_stop;
/* A line was logged since the flusher's last round began. */
static _Atomic bool log_dirty;
/* The flusher waits without a deadline; the first line must wake it. */
static _Atomic bool flusher_parked;

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t buf_key;

static _Thread_local logbuf *my_buf;
static _Thread_local unsigned my_gen;

/* ------------------------------------------------------------------ */
/* Rendering into a fixed buffer. The writer keeps counting past cap so
 * the caller learns the size it would have needed. */

typedef struct {
    char *p;
    size_t cap;
    size_t len;
} lw;

static void lw_put(lw *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->p + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void lw_str(lw *w, const char *s) { lw_put(w, s, strlen(s)); }

static void lw_u64(lw *w, uint64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof(tmp), *o = e;
    do {
        *--o = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    lw_put(w, o, (size_t)(e - o));
}

static void lw_i64(lw *w, int64_t v)
{
    if (v < 0) {
        lw_put(w, "-", 1);
        lw_u64(w, (uint64_t)0 - (uint64_t)v); /* safe for INT64_MIN */
    } else {
        lw_u64(w, (uint64_t)v);
    }
}

/* Shortest of %.15g / %.17g that reads back as the same double, so 0.1
 * prints as 0.1 yet nothing is lost. JSON has no NaN or infinity. */
static void lw_micros_as_ms(lw *w, uint64_t us)
{
    static const char digits[] = "0123456789";
    lw_u64(w, us / 1000);
    char frac[4] = {'.', digits[us / 100 % 10], digits[us / 10 % 10], digits[us % 10]};
    lw_put(w, frac, 4);
}

static void lw_dbl(lw *w, double d)
{
    if (!isfinite(d)) {
        lw_put(w, "null", 4);
        return;
    }
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    lw_put(w, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if the
 * bytes are not one: overlongs, surrogates and > U+10FFFF are refused. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp, min;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static inline bool json_plain(unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

static void lw_escape_ctl(lw *w, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 0, 0, 0, 0, 0};
    switch (c) {
    case '"': e[1] = '"'; break;
    case '\\': e[1] = '\\'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\t': e[1] = 't'; break;
    case '\b': e[1] = 'b'; break;
    case '\f': e[1] = 'f'; break;
    default:
        memcpy(e + 1, "u00", 3);
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        lw_put(w, e, 6);
        return;
    }
    lw_put(w, e, 2);
}

/* Same output as vg_buf_json_str, but into the fixed line buffer. */
static void lw_json_str(lw *w, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    lw_put(w, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && json_plain(s[run]))
            run++;
        lw_put(w, (const char *)s + i, run - i);
        if ((i = run) == n)
            break;
        if (s[i] < 0x80) {
            lw_escape_ctl(w, s[i++]);
            continue;
        }
        size_t l = utf8_len(s + i, n - i);
        if (l) {
            lw_put(w, (const char *)s + i, l);
            i += l;
        } else {
            lw_put(w, "\xEF\xBF\xBD", 3); /* U+FFFD keeps the line valid JSON */
            i++;
        }
    }
    lw_put(w, "\"", 1);
}

static void lw_field(lw *w, const vg_log_field *f)
{
    if (f->type == VG_LF_STR && !f->v.s)
        return;
    lw_put(w, ",\"", 2);
    lw_str(w, f->key);
    lw_put(w, "\":", 2);
    switch (f->type) {
    case VG_LF_STR: lw_json_str(w, f->v.s); break;
    case VG_LF_INT: lw_i64(w, f->v.i); break;
    case VG_LF_UINT: lw_u64(w, f->v.u); break;
    case VG_LF_DBL: lw_dbl(w, f->v.d); break;
    case VG_LF_BOOL: lw_str(w, f->v.b ? "true" : "false"); break;
    case VG_LF_MICROS: lw_micros_as_ms(w, f->v.u); break;
    default: lw_put(w, "null", 4); break;
    }
}

/* gmtime_r takes a process-wide lock in glibc, so each thread keeps the
 * last second it formatted and only patches in the milliseconds. */
static void format_ts(uint64_t ms, char out[32])
{
    static _Thread_local uint64_t last_sec = UINT64_MAX;
    static _Thread_local char last[32];
    if (ms / 1000 != last_sec) {
        vg_format_rfc3339_ms(ms, last);
        last_sec = ms / 1000;
    }
    memcpy(out, last, 32);
    unsigned frac = (unsigned)(ms % 1000);
    out[20] = (char)('0' + frac / 100);
    out[21] = (char)('0' + frac / 10 % 10);
    out[22] = (char)('0' + frac % 10);
}

size_t vg_log_render(char *buf, size_t cap, uint64_t ts_ms, vg_log_level level,
                     const char *request_id, const char *msg, const vg_log_field *fields,
                     size_t nfields)
{
    lw w = {buf, cap, 0};
    char ts[32];
    format_ts(ts_ms, ts);
    lw_put(&w, "{\"ts\":\"", 7);
    lw_str(&w, ts);
    lw_put(&w, "\",\"level\":\"", 11);
    lw_str(&w, vg_log_level_name(level));
    lw_put(&w, "\",\"msg\":", 8);
    lw_json_str(&w, msg ? msg : "");
    if (request_id) {
        lw_put(&w, ",\"request_id\":", 14);
        lw_json_str(&w, request_id);
    }
    for (size_t i = 0; i < nfields; i++)
        lw_field(&w, &fields[i]);
    lw_put(&w, "}", 1);
    if (w.len < cap)
        buf[w.len] = '\0';
    return w.len;
}

/* ------------------------------------------------------------------ */
/* Output. */

/* Whole-buffer write: a short write or EINTR just continues, EAGAIN on a
 * non-blocking fd waits for room. Other errors drop the rest, since
 * there is nowhere left to report them. Caller holds write_mu. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
        } else if (w == 0 || errno != EINTR) {
            return;
        }
    }
}

static void write_locked(const char *p, size_t n)
{
    pthread_mutex_lock(&write_mu);
    write_all(atomic_load_explicit(&log_fd, memory_order_relaxed), p, n);
    pthread_mutex_unlock(&write_mu);
}

/* Writes b's pending lines now, on the calling thread. Caller holds
 * b->mu. A flusher writing the other half holds write_mu until it is
 * done, so these newer lines cannot overtake it. */
static void buf_drain(logbuf *b)
{
    if (b->len) {
        write_locked(b->data, b->len);
        b->len = 0;
    }
}

/* The flusher's drain: takes the pending half and writes it with b->mu
 * released, so b's thread keeps logging into the other half meanwhile.
 * write_mu is taken before b->mu is let go: a drain by the thread itself
 * (its half full) then waits for this write and cannot reorder lines. */
static void buf_flush(logbuf *b)
{
    pthread_mutex_lock(&b->mu);
    if (!b->len || b->writing) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    char *p = b->data;
    size_t n = b->len;
    b->data = b->out;
    b->out = p;
    b->len = 0;
    b->writing = true;
    pthread_mutex_lock(&write_mu);
    pthread_mutex_unlock(&b->mu);
    write_all(atomic_load_explicit(&log_fd, memory_order_relaxed), p, n);
    pthread_mutex_unlock(&write_mu);
    pthread_mutex_lock(&b->mu);
    b->writing = false;
    pthread_mutex_unlock(&b->mu);
}

/* ------------------------------------------------------------------ */
/* Per-thread buffers. */

/* Thread exit: the buffer stays listed so its lines still get written,
 * and becomes free for the next new thread. Matching by address means a
 * buffer freed by shutdown is simply not found. */
static void buf_release(void *p)
{
    pthread_mutex_lock(&list_mu);
    for (logbuf *b = buf_list; b; b = b->next)
        if (b == p)
            b->orphan = true;
    pthread_mutex_unlock(&list_mu);
}

static void key_init(void) { pthread_key_create(&buf_key, buf_release); }

static logbuf *buf_adopt_or_new(void)
{
    logbuf *b;
    pthread_mutex_lock(&list_mu);
    for (b = buf_list; b && !b->orphan; b = b->next)
        ;
    if (!b && (b = malloc(sizeof(*b)))) {
        pthread_mutex_init(&b->mu, NULL);
        b->data = b->half[0];
        b->out = b->half[1];
        b->writing = false;
        b->len = 0;
        b->next = buf_list;
        buf_list = b;
    }
    if (b)
        b->orphan = false;
    pthread_mutex_unlock(&list_mu);
    return b;
}

static logbuf *thread_buf(void)
{
    unsigned gen = atomic_load_explicit(&buf_gen, memory_order_acquire);
    if (my_buf && my_gen == gen)
        return my_buf;
    pthread_once(&key_once, key_init);
    my_buf = buf_adopt_or_new();
    my_gen = gen;
    pthread_setspecific(buf_key, my_buf);
    return my_buf;
}

/* One flush at a time (the flusher, vg_log_flush), so no drain finds a
 * half still being written and returns before its lines are out. The
 * list is walked without list_mu, so a thread logging its first line
 * does not wait for a slow write: buffers are only ever pushed at the
 * head, and freed only by vg_log_shutdown, after the flusher stopped. */
static pthread_mutex_t flush_mu = PTHREAD_MUTEX_INITIALIZER;

static void flush_all(void)
{
    pthread_mutex_lock(&flush_mu);
    pthread_mutex_lock(&list_mu);
    logbuf *b = buf_list;
    pthread_mutex_unlock(&list_mu);
    for (; b; b = b->next)
        buf_flush(b);
    pthread_mutex_unlock(&flush_mu);
}

/* Rare: a line bigger than a whole buffer, or no buffer at all. */
static void emit_direct(uint64_t ts, vg_log_level level, const char *rid, const char *msg,
                        const vg_log_field *fields, size_t nfields, size_t need)
{
    char *p = malloc(need + 2);
    if (!p)
        return;
    size_t n = vg_log_render(p, need + 1, ts, level, rid, msg, fields, nfields);
    p[n] = '\n';
    write_locked(p, n + 1);
    free(p);
}

/* Render at the tail of b; on overflow drain b and retry from empty.
 * Returns the size needed when even an empty buffer is too small. */
static size_t buf_append(logbuf *b, uint64_t ts, vg_log_level level, const char *rid,
                         const char *msg, const vg_log_field *fields, size_t nfields)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = LOG_BUF_SIZE - b->len;
        size_t n = vg_log_render(b->data + b->len, room, ts, level, rid, msg, fields, nfields);
        if (n < room) { /* the NUL slot takes the newline */
            b->data[b->len + n] = '\n';
            b->len += n + 1;
            return 0;
        }
        if (b->len == 0)
            return n;
        buf_drain(b);
    }
    return 0;
}

/* Only the first line after a flusher round pays more than a load (a
 * plain load on x86 even when sequentially consistent), and only a
 * parked flusher is signalled: a waiting one keeps its period, so lines
 * still go out in batches. Every access here and in the flusher is
 * sequentially consistent, so of a writer (set log_dirty, read
 * flusher_parked) and a parking flusher (set flusher_parked, read
 * log_dirty) one always sees the other: no line waits on a parked
 * flusher. */
static void mark_dirty(void)
{
    if (atomic_load(&log_dirty) || atomic_exchange(&log_dirty, true))
        return;
    if (atomic_load(&flusher_parked)) {
        /* Checked again under the lock: a flusher that stopped meanwhile
         * has cleared it, and its condition variable may be gone. */
        pthread_mutex_lock(&flusher_mu);
        if (atomic_load(&flusher_parked))
            pthread_cond_signal(&flusher_cv);
        pthread_mutex_unlock(&flusher_mu);
    }
}

void vg_log(vg_log_level level, const char *request_id, const char *msg,
            const vg_log_field *fields, size_t nfields)
{
    if (!vg_log_enabled(level))
        return;
    uint64_t ts = vg_clock_ms();
    logbuf *b = thread_buf();
    if (!b) {
        size_t need = vg_log_render(NULL, 0, ts, level, request_id, msg, fields, nfields);
        emit_direct(ts, level, request_id, msg, fields, nfields, need);
        return;
    }
    pthread_mutex_lock(&b->mu);
    size_t big = buf_append(b, ts, level, request_id, msg, fields, nfields);
    if (big) {
        buf_drain(b); /* keep this thread's lines in order */
        emit_direct(ts, level, request_id, msg, fields, nfields, big);
    } else if (atomic_load_explicit(&log_flush_ms, memory_order_relaxed) == 0) {
        buf_drain(b);
    }
    pthread_mutex_unlock(&b->mu);
    mark_dirty();
}

/* Step back so the cut does not land inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

void vg_logf(vg_log_level level, const char *request_id, const char *fmt, ...)
{
    if (!vg_log_enabled(level))
        return;
    char msg[LOGF_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg[0] = '\0';
    } else if ((size_t)n >= sizeof(msg)) {
        size_t cut = utf8_cut(msg, sizeof(msg) - 4);
        memcpy(msg + cut, "...", 4);
    }
    vg_log(level, request_id, msg, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Flusher thread and lifecycle. */

static void *flusher_main(void *arg)
{
    VG_UNUSED(arg);
    pthread_setname_np(pthread_self(), "vg-log");
    unsigned ms = atomic_load(&log_flush_ms);
    bool idle = false;
    pthread_mutex_lock(&flusher_mu);
    while (!flusher_stop) {
        if (idle) {
            atomic_store(&flusher_parked, true);
            if (!atomic_load(&log_dirty))
                pthread_cond_wait(&flusher_cv, &flusher_mu);
            atomic_store(&flusher_parked, false);
        }
        /* Woken or not, wait out the period: the line that woke us
         * usually has company within it. */
        struct timespec dl = vg_deadline(CLOCK_MONOTONIC, ms);
        while (!flusher_stop && pthread_cond_timedwait(&flusher_cv, &flusher_mu, &dl) == 0)
            ;
        if (flusher_stop)
            break;
        /* Not under flusher_mu: shutdown must be able to signal us. */
        pthread_mutex_unlock(&flusher_mu);
        idle = !atomic_exchange(&log_dirty, false);
        flush_all();
        pthread_mutex_lock(&flusher_mu);
    }
    pthread_mutex_unlock(&flusher_mu);
    return NULL;
}

static void flusher_start(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&flusher_cv, &ca);
    pthread_condattr_destroy(&ca);
    flusher_stop = false;
    /* Without a flusher, fall back to writing each line at once. */
    if (pthread_create(&flusher_tid, NULL, flusher_main, NULL) == 0)
        flusher_running = true;
    else
        atomic_store(&log_flush_ms, 0);
}

static void flusher_join(void)
{
    if (!flusher_running)
        return;
    pthread_mutex_lock(&flusher_mu);
    flusher_stop = true;
    pthread_cond_signal(&flusher_cv);
    pthread_mutex_unlock(&flusher_mu);
    pthread_join(flusher_tid, NULL);
    pthread_cond_destroy(&flusher_cv);
    flusher_running = false;
}

void vg_log_init(int fd, vg_log_level level, unsigned flush_ms)
{
    flusher_join();
    flush_all(); /* pending lines belong to the old fd */
    atomic_store(&log_fd, fd);
    atomic_store(&log_level, (int)level);
    atomic_store(&log_flush_ms, flush_ms);
    if (flush_ms)
        flusher_start();
}

/* Frees the buffers: no thread may be logging concurrently. Later calls
 * still work, writing each line at once. */
void vg_log_shutdown(void)
{
    flusher_join();
    atomic_store(&log_flush_ms, 0);
    pthread_mutex_lock(&list_mu);
    logbuf *b = buf_list;
    buf_list = NULL;
    atomic_fetch_add_explicit(&buf_gen, 1, memory_order_release);
    pthread_mutex_unlock(&list_mu);
    while (b) {
        logbuf *next = b->next;
        buf_drain(b);
        pthread_mutex_destroy(&b->mu);
        free(b);
        b = next;
    }
}

void vg_log_flush(void) { flush_all(); }

void vg_log_set_level(vg_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

bool vg_log_enabled(vg_log_level level)
{
    return (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int vg_log_level_parse(const char *s)
{
    for (size_t i = 0; s && i < VG_ARRAY_LEN(level_names); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *vg_log_level_name(vg_log_level level)
{
    unsigned i = (unsigned)level;
    return i < VG_ARRAY_LEN(level_names) ? level_names[i] : "unknown";
}
