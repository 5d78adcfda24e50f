/* The byte ring: fill, drain, wrap-around, partial puts when full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voxgate/ring.h"
#include "voxgate/util.h"

static void fill_and_drain(void **state)
{
    vg_ring q;
    assert_int_equal(vg_ring_init(&q, 8), VG_OK);
    assert_int_equal(vg_ring_space(&q), 8);
    assert_int_equal(vg_ring_put(&q, "abcdefghij", 10), 8); /* only what fits */
    assert_int_equal(vg_ring_space(&q), 0);
    assert_int_equal(vg_ring_put(&q, "z", 1), 0);
    char out[16] = {0};
    assert_int_equal(vg_ring_get(&q, out, 3), 3);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(vg_ring_space(&q), 3);
    assert_int_equal(vg_ring_get(&q, out, 16), 5);
    assert_memory_equal(out, "defgh", 5);
    assert_int_equal(vg_ring_get(&q, out, 16), 0);
    vg_ring_free(&q);
    assert_null(q.buf);
}

static void wraps_around(void **state)
{
    vg_ring q;
    assert_int_equal(vg_ring_init(&q, 5), VG_OK);
    char out[8];
    assert_int_equal(vg_ring_put(&q, "1234", 4), 4);
    assert_int_equal(vg_ring_get(&q, out, 3), 3); /* head at 3 */
    assert_int_equal(vg_ring_put(&q, "5678", 4), 4); /* wraps */
    assert_int_equal(q.len, 5);
    assert_int_equal(vg_ring_get(&q, out, 8), 5);
    assert_memory_equal(out, "45678", 5);
    vg_ring_free(&q);
}

/* A long stream through a small ring in odd-sized pieces comes out intact. */
static void stream_intact(void **state)
{
    enum { N = 100000 };
    static unsigned char src[N], dst[N];
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)(i * 131u + (i >> 7));
    vg_ring q;
    assert_int_equal(vg_ring_init(&q, 4099), VG_OK);
    size_t in = 0, out = 0, step = 1;
    while (out < N) {
        size_t want = (step * 977u) % 6000u + 1u;
        if (in < N)
            in += vg_ring_put(&q, src + in, want < N - in ? want : N - in);
        out += vg_ring_get(&q, dst + out, (step * 613u) % 5000u + 1u);
        step++;
    }
    assert_int_equal(in, N);
    assert_memory_equal(src, dst, N);
    vg_ring_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fill_and_drain),
        cmocka_unit_test(wraps_around),
        cmocka_unit_test(stream_intact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
