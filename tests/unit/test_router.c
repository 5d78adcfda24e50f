/* Router: pattern matching, parameters, 405 method sets, query lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "voxgate/http.h"

static void h(vg_req *r) { (void)r; }

static const vg_route routes[] = {
    {VG_M_GET, "/health", h, VG_AUTH_OPEN, 0, NULL, NULL, false},
    {VG_M_GET | VG_M_HEAD | VG_M_DELETE, "/v1/cache/stt", h, VG_AUTH_API, 0, "provider a b", NULL, false},
    {VG_M_PUT, "/v1/cache/stt", h, VG_AUTH_API, 0, "provider", "application/json", false},
    {VG_M_GET, "/v1/breakers/{provider}", h, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_POST, "/v1/breakers/{provider}/acquire", h, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_GET | VG_M_PUT, "/v1/files/{key+}", h, VG_AUTH_API, 0, NULL, NULL, false},
};
#define N (sizeof routes / sizeof routes[0])

static void exact_and_405(void **state)
{
    vg_route_match m;
    vg_router_match(routes, N, VG_M_GET, "/health", &m);
    assert_ptr_equal(m.route, &routes[0]);
    vg_router_match(routes, N, VG_M_POST, "/health", &m);
    assert_null(m.route);
    assert_int_equal(m.allow, VG_M_GET);
    vg_router_match(routes, N, VG_M_PUT, "/v1/cache/stt", &m);
    assert_ptr_equal(m.route, &routes[2]);
    vg_router_match(routes, N, VG_M_POST, "/v1/cache/stt", &m);
    assert_null(m.route);
    assert_int_equal(m.allow, VG_M_GET | VG_M_HEAD | VG_M_DELETE | VG_M_PUT);
    char allow[64];
    vg_methods_format(m.allow, allow, sizeof allow);
    assert_string_equal(allow, "GET, HEAD, PUT, DELETE");
}

static void unknown_paths(void **state)
{
    vg_route_match m;
    const char *bad[] = {"/", "", "/healthz", "/health/", "/v1/cache/stt/x", "/v1/breakers",
                         "/v1/breakers/", "/v1/breakers//acquire", "/v1/files", "/v1/files/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vg_router_match(routes, N, VG_M_GET, bad[i], &m);
        assert_null(m.route);
        assert_int_equal(m.allow, 0);
    }
}

static void params(void **state)
{
    vg_route_match m;
    vg_router_match(routes, N, VG_M_POST, "/v1/breakers/openai/acquire", &m);
    assert_ptr_equal(m.route, &routes[4]);
    assert_int_equal(m.nparams, 1);
    assert_int_equal(m.params[0].n, 6);
    assert_memory_equal(m.params[0].p, "openai", 6);
    vg_router_match(routes, N, VG_M_GET, "/v1/files/a/b/c.wav", &m);
    assert_ptr_equal(m.route, &routes[5]);
    assert_int_equal(m.params[0].n, strlen("a/b/c.wav"));
    assert_memory_equal(m.params[0].p, "a/b/c.wav", m.params[0].n);
}

/* A literal segment outranks a {param} at the same place (as in OpenAPI):
 * POST /v1/breakers/reset owns that path, so GET of it is a 405 with
 * Allow: POST, not a read of a provider named "reset". */
static const vg_route ranked[] = {
    {VG_M_GET, "/v1/breakers/{provider}", h, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_POST, "/v1/breakers/reset", h, VG_AUTH_API, VG_M_POST, NULL, NULL, false},
    {VG_M_POST, "/v1/breakers/{provider}/reset", h, VG_AUTH_API, VG_M_POST, NULL, NULL, false},
};

static void literal_outranks_param(void **state)
{
    vg_route_match m;
    size_t n = sizeof ranked / sizeof ranked[0];
    vg_router_match(ranked, n, VG_M_POST, "/v1/breakers/reset", &m);
    assert_ptr_equal(m.route, &ranked[1]);
    assert_int_equal(m.nparams, 0);
    vg_router_match(ranked, n, VG_M_GET, "/v1/breakers/reset", &m);
    assert_null(m.route);
    assert_int_equal(m.allow, VG_M_POST);
    vg_router_match(ranked, n, VG_M_GET, "/v1/breakers/openai", &m);
    assert_ptr_equal(m.route, &ranked[0]);
    assert_int_equal(m.allow, VG_M_GET);
    vg_router_match(ranked, n, VG_M_POST, "/v1/breakers/openai", &m);
    assert_null(m.route);
    assert_int_equal(m.allow, VG_M_GET);
    vg_router_match(ranked, n, VG_M_POST, "/v1/breakers/reset/reset", &m);
    assert_ptr_equal(m.route, &ranked[2]);
    assert_memory_equal(m.params[0].p, "reset", 5);
}

static void methods(void **state)
{
    assert_int_equal(vg_method_parse("GET"), VG_M_GET);
    assert_int_equal(vg_method_parse("DELETE"), VG_M_DELETE);
    assert_int_equal(vg_method_parse("get"), VG_M_OTHER);
    assert_int_equal(vg_method_parse("BREW"), VG_M_OTHER);
    assert_string_equal(vg_method_name(VG_M_PUT), "PUT");
    char small[8];
    size_t n = vg_methods_format(VG_M_GET | VG_M_DELETE, small, sizeof small);
    assert_int_equal(n, 3); /* "GET, DELETE" does not fit: stops after GET */
}

static void query_lists(void **state)
{
    assert_true(vg_route_query_allowed("provider a b", "provider"));
    assert_true(vg_route_query_allowed("provider a b", "b"));
    assert_false(vg_route_query_allowed("provider a b", "prov"));
    assert_false(vg_route_query_allowed("provider a b", ""));
    assert_false(vg_route_query_allowed(NULL, "a"));
}

/* Files API (issue 8): a rest parameter followed by a literal tail. */
static const vg_route files_routes[] = {
    {VG_M_GET | VG_M_PUT, "/v1/files/{key+}", h, VG_AUTH_API, 0, NULL, NULL, false},
    {VG_M_GET, "/v1/files/{key+}/url", h, VG_AUTH_API, 0, NULL, NULL, false},
};

static void rest_with_tail(void **state)
{
    vg_route_match m;
    vg_router_match(files_routes, 2, VG_M_GET, "/v1/files/a/b.wav/url", &m);
    assert_ptr_equal(m.route, &files_routes[1]);
    assert_int_equal(m.params[0].n, 7);
    assert_memory_equal(m.params[0].p, "a/b.wav", 7);
    /* The tail route owns the path: PUT there is a 405 with Allow: GET. */
    vg_router_match(files_routes, 2, VG_M_PUT, "/v1/files/a/url", &m);
    assert_null(m.route);
    assert_int_equal(m.allow, VG_M_GET);
    /* "url" alone is a key, not an empty key plus the tail. */
    vg_router_match(files_routes, 2, VG_M_GET, "/v1/files/url", &m);
    assert_ptr_equal(m.route, &files_routes[0]);
    assert_int_equal(m.params[0].n, 3);
    vg_router_match(files_routes, 2, VG_M_GET, "/v1/files/x/urlx", &m);
    assert_ptr_equal(m.route, &files_routes[0]);
    vg_router_match(files_routes, 2, VG_M_GET, "/v1/files//url", &m);
    assert_ptr_equal(m.route, &files_routes[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_and_405), cmocka_unit_test(unknown_paths),
        cmocka_unit_test(params), cmocka_unit_test(methods), cmocka_unit_test(query_lists),
        cmocka_unit_test(literal_outranks_param), cmocka_unit_test(rest_with_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
