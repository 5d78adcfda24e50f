/* Request ids: the accepted alphabet and length, and that generated ids
 * are well formed and do not repeat across calls, threads or a fork. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "voxgate/http.h"

static bool valid(const char *s) { return vg_reqid_valid(s, strlen(s)); }

static void accepts(void **state)
{
    assert_true(valid("a"));
    assert_true(valid("0123456789abcdef0123456789abcdef"));
    assert_true(valid("Req-1"));
    assert_true(valid("a.b"));
    assert_true(valid("a_b"));
    assert_true(valid("a:b"));
    assert_true(valid("a-b"));
    assert_true(valid("..--__::"));
    char s[VG_REQID_MAX + 2];
    memset(s, 'x', sizeof s);
    assert_true(vg_reqid_valid(s, VG_REQID_MAX));
    assert_false(vg_reqid_valid(s, VG_REQID_MAX + 1));
}

static void rejects(void **state)
{
    assert_false(valid(""));
    assert_false(vg_reqid_valid(NULL, 0));
    assert_false(vg_reqid_valid(NULL, 3));
    assert_false(valid("a b"));
    assert_false(valid("a/b"));
    assert_false(valid("a\tb"));
    assert_false(valid("a\r\nX-Evil: 1"));
    assert_false(valid("a\"b"));
    assert_false(valid("a,b"));
    assert_false(valid("a=b"));
    assert_false(valid("caf\xc3\xa9"));
    assert_false(valid("\x80"));
    /* The length is authoritative: an embedded NUL is not allowed. */
    assert_false(vg_reqid_valid("ab\0cd", 5));
    assert_true(vg_reqid_valid("ab\0cd", 2));
}

static void check_generated(const char *id)
{
    assert_int_equal(strlen(id), 32);
    for (int i = 0; i < 32; i++)
        assert_true((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'));
    assert_true(vg_reqid_valid(id, 32));
}

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, 32); }

static void generated_distinct(void **state)
{
    enum { N = 100000 };
    char (*ids)[33] = malloc(sizeof(*ids) * N);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        vg_reqid_generate(ids[i]);
        check_generated(ids[i]);
    }
    qsort(ids, N, sizeof *ids, cmp_id);
    for (int i = 1; i < N; i++)
        assert_true(memcmp(ids[i - 1], ids[i], 32) != 0);
    free(ids);
}

enum { PER_THREAD = 1000 };

static void *gen_many(void *arg)
{
    char (*ids)[33] = arg;
    for (int i = 0; i < PER_THREAD; i++)
        vg_reqid_generate(ids[i]);
    return NULL;
}

static void threads_differ(void **state)
{
    static char a[PER_THREAD][33], b[PER_THREAD][33];
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, gen_many, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, gen_many, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    for (int i = 0; i < PER_THREAD; i++) {
        check_generated(a[i]);
        check_generated(b[i]);
        assert_string_not_equal(a[i], b[i]);
    }
    assert_string_not_equal(a[0], b[PER_THREAD - 1]);
}

static void fork_reseeds(void **state)
{
    char parent[33], child[33] = "";
    vg_reqid_generate(parent); /* make sure this thread is seeded before forking */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[33];
        vg_reqid_generate(id);
        _exit(write(fds[1], id, 32) == 32 ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], child, 32), 32);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    vg_reqid_generate(parent);
    assert_int_not_equal(memcmp(parent, child, 32), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts),        cmocka_unit_test(rejects),
        cmocka_unit_test(generated_distinct), cmocka_unit_test(threads_differ),
        cmocka_unit_test(fork_reseeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
