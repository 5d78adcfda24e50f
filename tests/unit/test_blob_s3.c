/* S3 store without a network: presigned URLs. The store's presign must
 * reproduce the Amazon S3 documentation's presigned URL exactly (virtual-
 * hosted style, from ../shared/sigv4/s3-doc-vectors.json), sign for
 * s3.public_endpoint when set, and keep default ports out of the host.
 * Opening the store without create_bucket contacts nothing. A store that
 * never answers: its calls fail promptly once cancelled. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "voxgate/blob.h"
#include "voxgate/sigv4.h"

static uint64_t doc_clock(void) { return 1369353600000ull; } /* 20130524T000000Z */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    vg_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        vg_buf_append(&b, chunk, n);
    fclose(f);
    vg_buf_puts(&b, "");
    return b.data;
}

static vg_blob *open_store(const char *endpoint, const char *public_ep, bool path_style,
                           const char *ak, const char *sk)
{
    vg_blob_s3_opts o = {.endpoint = endpoint, .public_endpoint = public_ep,
                         .bucket = "examplebucket", .region = "us-east-1", .access_key = ak,
                         .secret_key = sk, .path_style = path_style};
    vg_blob *b = NULL;
    char err[256];
    assert_int_equal(vg_blob_s3_open(&o, &b, err, sizeof err), VG_OK);
    return b;
}

static void doc_presigned_url(void **state)
{
    const char *dir = getenv("VG_SIGV4_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/s3-doc-vectors.json", dir && *dir ? dir : "../shared/sigv4");
    char *text = slurp(path);
    assert_non_null(text);
    cJSON *doc = cJSON_Parse(text);
    cJSON *cr = cJSON_GetObjectItem(doc, "credentials");
    const cJSON *v, *want = NULL;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(doc, "vectors"))
        if (!strcmp(cJSON_GetObjectItem(v, "mode")->valuestring, "presign"))
            want = v;
    assert_non_null(want);
    vg_clock_ms = doc_clock;
    vg_blob *b = open_store("https://s3.amazonaws.com", NULL, false,
                            cJSON_GetObjectItem(cr, "access_key_id")->valuestring,
                            cJSON_GetObjectItem(cr, "secret_access_key")->valuestring);
    vg_buf url = {0};
    const char *key = cJSON_GetObjectItem(want, "path")->valuestring + 1; /* "/test.txt" */
    unsigned exp = (unsigned)cJSON_GetObjectItem(want, "expires")->valueint;
    assert_int_equal(vg_blob_presign(b, key, exp, &url), VG_OK);
    assert_string_equal(url.data, cJSON_GetObjectItem(want, "url")->valuestring);
    vg_buf_free(&url);
    vg_blob_close(b);
    vg_clock_ms = vg_real_clock_ms;
    cJSON_Delete(doc);
    free(text);
}

static void public_endpoint_and_ports(void **state)
{
    vg_clock_ms = doc_clock;
    vg_blob *b = open_store("http://minio:9000", "http://localhost:80", true, "AK", "SK");
    vg_buf url = {0};
    assert_int_equal(vg_blob_presign(b, "dir/a b+c.wav", 60, &url), VG_OK);
    /* Signed for the public host, default port left out as clients leave it out. */
    const char *want = "http://localhost/examplebucket/dir/a%20b%2Bc.wav?X-Amz-Algorithm=";
    assert_memory_equal(url.data, want, strlen(want));
    /* The signature is that of host "localhost" exactly. */
    vg_sigv4_kv h = {"host", "localhost"};
    vg_sigv4_req r = {.method = "GET", .path = "/examplebucket/dir/a b+c.wav", .headers = &h,
                      .nheaders = 1, .payload_hash = VG_SIGV4_UNSIGNED};
    vg_sigv4_cred c = {"AK", "SK", NULL, "us-east-1", "s3"};
    vg_buf q = {0};
    assert_int_equal(vg_sigv4_presign_query(&r, &c, "20130524T000000Z", 60, &q, NULL), VG_OK);
    assert_string_equal(strchr(url.data, '?') + 1, q.data);
    vg_buf_free(&q);
    /* Bounds: 1 s .. 7 days; the key rule for reads. */
    assert_int_equal(vg_blob_presign(b, "k", 0, &url), VG_EINVAL);
    assert_int_equal(vg_blob_presign(b, "k", 604801, &url), VG_EINVAL);
    assert_int_equal(vg_blob_presign(b, "a/../b", 60, &url), VG_EINVAL);
    assert_int_equal(vg_blob_presign(b, "/lead", 60, &url), VG_EINVAL);
    vg_buf_free(&url);
    assert_string_equal(b->bucket, "examplebucket");
    assert_true(vg_blob_can_presign(b));
    vg_blob_close(b);
    vg_clock_ms = vg_real_clock_ms;
}

/* Nothing listens on port 9 of loopback: a clear, prompt unavailability. */
static void unreachable_store(void **state)
{
    vg_blob_s3_opts o = {.endpoint = "http://127.0.0.1:9", .bucket = "b-1", .region = "r",
                         .access_key = "a", .secret_key = "s", .path_style = true,
                         .connect_timeout_ms = 500, .timeout_ms = 1000};
    vg_blob *b = NULL;
    char err[256];
    assert_int_equal(vg_blob_s3_open(&o, &b, err, sizeof err), VG_OK);
    assert_int_equal(vg_blob_ping(b), VG_EUNAVAIL);
    assert_non_null(strstr(vg_blob_last_error(), "S3 HEAD failed"));
    assert_int_equal(vg_blob_last_status(), 0);
    vg_buf out = {0};
    assert_int_equal(vg_blob_get(b, "k", &out, NULL), VG_EUNAVAIL);
    assert_int_equal(vg_blob_put(b, "k", "x", 1, "text/plain"), VG_EUNAVAIL);
    assert_int_equal(vg_blob_put(b, "bad key", "x", 1, "text/plain"), VG_EINVAL);
    vg_blob_stats st;
    vg_blob_stats_get(b, &st);
    assert_int_equal(st.errors, 3);
    assert_int_equal(st.puts, 0);
    vg_buf_free(&out);
    vg_blob_close(b);
}

/* A listener nobody accepts from: the kernel completes the connection
 * and takes the request, and no answer ever comes. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct { vg_blob *b; int rc; char why[256]; uint64_t ms; } hung_get;

static void *do_get(void *arg)
{
    hung_get *g = arg;
    vg_buf out = {0};
    uint64_t t0 = vg_mono_ns();
    g->rc = vg_blob_get(g->b, "k", &out, NULL);
    g->ms = (vg_mono_ns() - t0) / 1000000u;
    snprintf(g->why, sizeof g->why, "%s", vg_blob_last_error());
    vg_buf_free(&out);
    return NULL;
}

static void cancel_ends_hung_calls(void **state)
{
    (void)state;
    int port, lfd = silent_listener(&port);
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    vg_blob_s3_opts o = {.endpoint = ep, .bucket = "b-1", .region = "r", .access_key = "a",
                         .secret_key = "s", .path_style = true, .timeout_ms = 20000};
    vg_blob *b = NULL;
    char err[256];
    assert_int_equal(vg_blob_s3_open(&o, &b, err, sizeof err), VG_OK);
    hung_get g = {.b = b};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, do_get, &g), 0);
    usleep(300 * 1000);
    vg_blob_cancel(b);
    pthread_join(t, NULL);
    assert_int_equal(g.rc, VG_EUNAVAIL);
    assert_non_null(strstr(g.why, "S3 GET cancelled"));
    assert_true(g.ms >= 250 && g.ms < 2500); /* cut short, not at timeout_ms */
    /* Every later call fails at once, without a connection. */
    g = (hung_get){.b = b};
    do_get(&g);
    assert_int_equal(g.rc, VG_EUNAVAIL);
    assert_non_null(strstr(g.why, "cancelled"));
    assert_true(g.ms < 100);
    vg_blob_close(b);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(doc_presigned_url),
        cmocka_unit_test(public_endpoint_and_ports),
        cmocka_unit_test(unreachable_store),
        cmocka_unit_test(cancel_ends_hung_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
