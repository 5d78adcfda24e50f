/* Unit tests for the JSON logger: exact rendering, escaping, level
 * filtering, and that many threads' lines reach the fd whole and once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <time.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "voxgate/log.h"
#include "voxgate/util.h"

#define TS_MS 1795507262345ull /* 2026-11-24T08:01:02.345Z */

static uint64_t fake_clock(void) { return TS_MS; }

static int tmp_fd(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int fd = dup(fileno(f));
    fclose(f);
    assert_true(fd >= 0);
    return fd;
}

/* Whole file content, NUL-terminated. */
static char *slurp(int fd, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    assert_non_null(p);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    for (;;) {
        if (cap - n < 4096) {
            cap *= 2;
            p = realloc(p, cap);
            assert_non_null(p);
        }
        ssize_t r = read(fd, p + n, cap - n - 1);
        assert_true(r >= 0);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    p[n] = '\0';
    if (len)
        *len = n;
    return p;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static cJSON *parse_line(const char *line, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(line, n);
    assert_non_null(j);
    assert_true(cJSON_IsObject(j));
    return j;
}

static char *render(const char *rid, const char *msg, const vg_log_field *f, size_t nf)
{
    size_t n = vg_log_render(NULL, 0, TS_MS, VG_LOG_INFO, rid, msg, f, nf);
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(vg_log_render(buf, n + 1, TS_MS, VG_LOG_INFO, rid, msg, f, nf), n);
    assert_int_equal(strlen(buf), n);
    return buf;
}

static void test_render_every_type(void **state)
{
    (void)state;
    vg_log_field f[] = {
        VG_LS("route", "/v1/tts"), VG_LS("skipped", NULL), VG_LI("neg", -42),
        VG_LI("min", INT64_MIN), VG_LU("max", UINT64_MAX), VG_LD("ms", 1.5),
        VG_LD("tenth", 0.1), VG_LD("nan", NAN), VG_LD("inf", -INFINITY),
        VG_LB("hit", true), VG_LB("stale", false), VG_LMS("d0", 0), VG_LMS("d1", 42),
        VG_LMS("d2", 1234), VG_LMS("d3", 5000001),
    };
    char *line = render("req-1", "served", f, VG_ARRAY_LEN(f));
    assert_string_equal(line,
        "{\"ts\":\"2026-11-24T08:01:02.345Z\",\"level\":\"info\",\"msg\":\"served\","
        "\"request_id\":\"req-1\",\"route\":\"/v1/tts\",\"neg\":-42,"
        "\"min\":-9223372036854775808,\"max\":18446744073709551615,\"ms\":1.5,"
        "\"tenth\":0.1,\"nan\":null,\"inf\":null,\"hit\":true,\"stale\":false,"
        "\"d0\":0.000,\"d1\":0.042,\"d2\":1.234,\"d3\":5000.001}");
    cJSON *j = parse_line(line, strlen(line));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nan")));
    assert_null(cJSON_GetObjectItem(j, "skipped"));
    cJSON_Delete(j);
    free(line);
}

static void test_render_without_request_id(void **state)
{
    (void)state;
    char *line = render(NULL, "up", NULL, 0);
    assert_string_equal(line,
        "{\"ts\":\"2026-11-24T08:01:02.345Z\",\"level\":\"info\",\"msg\":\"up\"}");
    free(line);
    line = render(NULL, NULL, NULL, 0);
    assert_non_null(strstr(line, "\"msg\":\"\"}"));
    free(line);
}

static void test_render_escaping(void **state)
{
    (void)state;
    const char *msg = "q\"b\\s/n\nr\rt\tc\x01\x1f del\x7f \xc3\xa9 \xe2\x82\xac bad\xff"
                      " trunc\xc3 over\xc0\xaf sur\xed\xa0\x80";
    vg_log_field f[] = {VG_LS("k", "a\nb")};
    char *line = render("id\"1", msg, f, 1);
    assert_null(strchr(line, '\n'));
    assert_non_null(strstr(line,
        "\"msg\":\"q\\\"b\\\\s/n\\nr\\rt\\tc\\u0001\\u001f del\x7f \xc3\xa9 \xe2\x82\xac "
        "bad\xef\xbf\xbd trunc\xef\xbf\xbd over\xef\xbf\xbd\xef\xbf\xbd "
        "sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""));
    assert_non_null(strstr(line, "\"request_id\":\"id\\\"1\",\"k\":\"a\\nb\"}"));

    cJSON *j = parse_line(line, strlen(line));
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(j, "msg"));
    assert_non_null(m);
    assert_memory_equal(m, "q\"b\\s/n\nr\rt\tc\x01\x1f del", 19);
    cJSON_Delete(j);
    free(line);
}

/* snprintf-like: the needed size comes back, and nothing past cap is touched. */
static void test_render_small_cap(void **state)
{
    (void)state;
    size_t need = vg_log_render(NULL, 0, TS_MS, VG_LOG_WARN, "r", "hello", NULL, 0);
    char buf[256];
    for (size_t cap = 0; cap <= need + 1; cap++) {
        memset(buf, 'X', sizeof(buf));
        assert_int_equal(vg_log_render(buf, cap, TS_MS, VG_LOG_WARN, "r", "hello", NULL, 0),
                         need);
        assert_int_equal(buf[cap], 'X');
    }
    assert_int_equal(strlen(buf), need);
    assert_non_null(strstr(buf, "\"level\":\"warn\""));
}

static void test_level_names(void **state)
{
    (void)state;
    const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(vg_log_level_parse(names[i]), i);
        assert_string_equal(vg_log_level_name((vg_log_level)i), names[i]);
    }
    assert_int_equal(vg_log_level_parse("INFO"), -1);
    assert_int_equal(vg_log_level_parse("warning"), -1);
    assert_int_equal(vg_log_level_parse(""), -1);
    assert_int_equal(vg_log_level_parse(NULL), -1);
}

static void test_level_filtering(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_WARN, 0);
    assert_false(vg_log_enabled(VG_LOG_INFO));
    assert_true(vg_log_enabled(VG_LOG_WARN));
    vg_log(VG_LOG_DEBUG, NULL, "d", NULL, 0);
    vg_log(VG_LOG_INFO, NULL, "i", NULL, 0);
    vg_log(VG_LOG_WARN, NULL, "w", NULL, 0);
    vg_logf(VG_LOG_ERROR, "rq", "e%d", 7);
    vg_log_set_level(VG_LOG_DEBUG);
    vg_log(VG_LOG_DEBUG, NULL, "d2", NULL, 0);
    /* flush_ms == 0: already on the fd, no flush needed */
    char *out = slurp(fd, NULL);
    assert_string_equal(out,
        "{\"ts\":\"2026-11-24T08:01:02.345Z\",\"level\":\"warn\",\"msg\":\"w\"}\n"
        "{\"ts\":\"2026-11-24T08:01:02.345Z\",\"level\":\"error\",\"msg\":\"e7\","
        "\"request_id\":\"rq\"}\n"
        "{\"ts\":\"2026-11-24T08:01:02.345Z\",\"level\":\"debug\",\"msg\":\"d2\"}\n");
    free(out);
    vg_log_shutdown();
    close(fd);
}

static void test_logf_truncates(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_INFO, 0);
    char big[5000];
    memset(big, 'a', sizeof(big));
    memcpy(big + 2040, "\xe2\x82\xac\xe2\x82\xac", 6); /* a cut lands mid-sequence */
    big[sizeof(big) - 1] = '\0';
    vg_logf(VG_LOG_INFO, NULL, "%s", big);
    size_t n;
    char *out = slurp(fd, &n);
    assert_int_equal(count_lines(out), 1);
    cJSON *j = parse_line(out, n);
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(j, "msg"));
    assert_non_null(m);
    assert_true(strlen(m) < 2048);
    assert_memory_equal(m + strlen(m) - 3, "...", 3);
    assert_null(strstr(out, "\xef\xbf\xbd")); /* cut on a character boundary */
    cJSON_Delete(j);
    free(out);
    vg_log_shutdown();
    close(fd);
}

#define NTHREADS 8
#define NLINES 2000

static void *spam(void *arg)
{
    intptr_t t = (intptr_t)arg;
    char pad[200];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1 - (size_t)t * 7] = '\0'; /* lines of different lengths */
    for (int n = 0; n < NLINES; n++) {
        vg_log_field f[] = {VG_LI("t", t), VG_LI("n", n), VG_LS("pad", pad)};
        vg_log(VG_LOG_INFO, "rid", "line", f, 3);
    }
    return NULL;
}

/* Each line parses on its own, every thread's lines arrive once, in order. */
static void check_spam(char *out)
{
    int next[NTHREADS] = {0};
    int total = 0;
    for (char *line = out, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        cJSON *j = parse_line(line, (size_t)(nl - line));
        int t = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "t"));
        int n = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "n"));
        assert_true(t >= 0 && t < NTHREADS);
        assert_int_equal(n, next[t]);
        next[t]++;
        total++;
        cJSON_Delete(j);
    }
    assert_int_equal(total, NTHREADS * NLINES);
}

static void test_threads_no_interleave(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_INFO, 2);
    pthread_t th[NTHREADS];
    for (intptr_t t = 0; t < NTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, spam, (void *)t), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    vg_log_shutdown(); /* exited threads' buffers must still be written */
    char *out = slurp(fd, NULL);
    check_spam(out);
    free(out);
    close(fd);
}

static void *log_one(void *arg)
{
    vg_log(VG_LOG_INFO, NULL, arg, NULL, 0);
    return NULL;
}

/* A thread that exits before the flusher runs still gets its line out,
 * and its buffer is reused by the next thread. */
static void test_exited_thread_flushed(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_INFO, 60000);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, log_one, "first"), 0);
    pthread_join(th, NULL);
    assert_int_equal(pthread_create(&th, NULL, log_one, "second"), 0);
    pthread_join(th, NULL);
    char *out = slurp(fd, NULL);
    assert_string_equal(out, ""); /* still buffered */
    free(out);
    vg_log_flush();
    out = slurp(fd, NULL);
    assert_int_equal(count_lines(out), 2);
    char *a = strstr(out, "\"first\""), *b = strstr(out, "\"second\"");
    assert_true(a && b && a < b);
    free(out);
    vg_log_shutdown();
    close(fd);
}

/* Polls fd until it holds `want`; up to ~2 s on a loaded machine. */
static void wait_for_text(int fd, const char *want)
{
    char *out = NULL;
    for (int i = 0; i < 2000; i++) {
        free(out);
        out = slurp(fd, NULL);
        if (strstr(out, want))
            break;
        usleep(1000);
    }
    assert_non_null(strstr(out, want));
    free(out);
}

/* Voluntary context switches of this process's thread named `name`. */
static long thread_switches(const char *name)
{
    long found = -1;
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    for (struct dirent *e; found < 0 && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[128];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        bool match = f && fgets(line, sizeof line, f) && !strncmp(line, name, strlen(name)) &&
                     line[strlen(name)] == '\n';
        if (f)
            fclose(f);
        if (!match)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        f = fopen(path, "r");
        assert_non_null(f);
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %ld", &found) == 1)
                break;
        fclose(f);
    }
    closedir(d);
    assert_true(found >= 0);
    return found;
}

/* With no explicit flush, the flusher gets a buffered line out on time. */
static void test_flusher_timer(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_INFO, 5);
    vg_log(VG_LOG_INFO, NULL, "tick", NULL, 0);
    wait_for_text(fd, "\"msg\":\"tick\"}\n");
    vg_log_shutdown();
    close(fd);
}

/* An idle flusher sleeps until the next line instead of waking every
 * period, and that line still goes out promptly. */
static void test_idle_flusher_parks(void **state)
{
    (void)state;
    int fd = tmp_fd();
    vg_log_init(fd, VG_LOG_INFO, 2);
    vg_log(VG_LOG_INFO, NULL, "before", NULL, 0);
    wait_for_text(fd, "\"msg\":\"before\"}\n");
    usleep(50 * 1000); /* a round that finds nothing parks it */
    long a = thread_switches("vg-log");
    usleep(300 * 1000); /* 150 periods */
    long b = thread_switches("vg-log");
    assert_true(b - a <= 2);
    vg_log(VG_LOG_INFO, NULL, "after", NULL, 0);
    wait_for_text(fd, "\"msg\":\"after\"}\n");
    vg_log_shutdown();
    close(fd);
}

typedef struct {
    int fd;
    char *data;
    size_t len;
} drain_arg;

static void *drain(void *arg)
{
    drain_arg *d = arg;
    size_t cap = 1 << 20;
    d->data = malloc(cap);
    for (;;) {
        if (cap - d->len < 65536) {
            cap *= 2;
            d->data = realloc(d->data, cap);
        }
        ssize_t r = read(d->fd, d->data + d->len, cap - d->len - 1);
        if (r <= 0)
            break;
        d->len += (size_t)r;
    }
    d->data[d->len] = '\0';
    return NULL;
}

/* A line longer than the thread buffer (and the pipe) goes out whole,
 * after the lines logged before it. */
static void test_long_line(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    drain_arg d = {.fd = p[0]};
    pthread_t rd;
    assert_int_equal(pthread_create(&rd, NULL, drain, &d), 0);
    vg_log_init(p[1], VG_LOG_INFO, 2);

    size_t big_len = 200 * 1024;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    big[big_len] = '\0';
    vg_log(VG_LOG_INFO, NULL, "before", NULL, 0);
    vg_log_field f[] = {VG_LS("blob", big)};
    vg_log(VG_LOG_INFO, NULL, "big", f, 1);
    vg_log(VG_LOG_INFO, NULL, "after", NULL, 0);
    vg_log_shutdown();
    close(p[1]);
    pthread_join(rd, NULL);
    close(p[0]);

    assert_int_equal(count_lines(d.data), 3);
    char *l2 = strchr(d.data, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    assert_non_null(strstr(d.data, "\"msg\":\"before\"}\n"));
    cJSON *j = parse_line(l2, (size_t)(l3 - 1 - l2));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "blob")), big);
    cJSON_Delete(j);
    assert_non_null(strstr(l3, "\"msg\":\"after\"}\n"));
    free(d.data);
    free(big);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int step;              /* 1: "one" logged; 2: go on; 3: "two" logged */
} stepper;

static void step_to(stepper *s, int step)
{
    pthread_mutex_lock(&s->mu);
    s->step = step;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits up to ms for s->step >= step; true when it got there. */
static bool step_wait(stepper *s, int step, int ms)
{
    struct timespec dl = vg_deadline(CLOCK_REALTIME, (uint64_t)ms);
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (s->step < step && rc == 0)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    bool ok = s->step >= step;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void *log_twice(void *arg)
{
    stepper *s = arg;
    vg_log(VG_LOG_INFO, NULL, "one", NULL, 0);
    step_to(s, 1);
    step_wait(s, 2, 60000);
    vg_log(VG_LOG_INFO, NULL, "two", NULL, 0);
    step_to(s, 3);
    return NULL;
}

static void *flush_now(void *arg)
{
    (void)arg;
    vg_log_flush();
    return NULL;
}

/* A flush stuck on a full pipe does not hold up the thread that logs: it
 * keeps appending to its other half, and its lines come out in order
 * once the pipe drains. */
static void test_slow_stdout_does_not_stall(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    /* Fill the pipe, so the next write blocks until someone reads. */
    int fl = fcntl(p[1], F_GETFL);
    assert_int_equal(fcntl(p[1], F_SETFL, fl | O_NONBLOCK), 0);
    char fill[4096];
    memset(fill, 'x', sizeof fill);
    size_t filled = 0;
    for (ssize_t w; (w = write(p[1], fill, sizeof fill)) > 0;)
        filled += (size_t)w;
    assert_int_equal(fcntl(p[1], F_SETFL, fl), 0);
    vg_log_init(p[1], VG_LOG_INFO, 60000);

    stepper s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t lg, fl_th, rd;
    assert_int_equal(pthread_create(&lg, NULL, log_twice, &s), 0);
    assert_true(step_wait(&s, 1, 5000));
    assert_int_equal(pthread_create(&fl_th, NULL, flush_now, NULL), 0);
    usleep(200 * 1000); /* the flush took "one" and is blocked writing it */
    step_to(&s, 2);
    assert_true(step_wait(&s, 3, 2000)); /* logging "two" did not wait for the pipe */

    drain_arg d = {.fd = p[0]};
    assert_int_equal(pthread_create(&rd, NULL, drain, &d), 0);
    pthread_join(fl_th, NULL);
    pthread_join(lg, NULL);
    vg_log_shutdown();
    close(p[1]);
    pthread_join(rd, NULL);
    close(p[0]);
    assert_true(d.len > filled);
    const char *lines = d.data + filled;
    assert_int_equal(count_lines(lines), 2);
    const char *one = strstr(lines, "\"msg\":\"one\"}\n"), *two = strstr(lines, "\"msg\":\"two\"}\n");
    assert_true(one && two && one < two);
    free(d.data);
}

int main(void)
{
    vg_clock_ms = fake_clock;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_every_type),
        cmocka_unit_test(test_render_without_request_id),
        cmocka_unit_test(test_render_escaping),
        cmocka_unit_test(test_render_small_cap),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_level_filtering),
        cmocka_unit_test(test_logf_truncates),
        cmocka_unit_test(test_threads_no_interleave),
        cmocka_unit_test(test_exited_thread_flushed),
        cmocka_unit_test(test_flusher_timer),
        cmocka_unit_test(test_idle_flusher_parks),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_slow_stdout_does_not_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
