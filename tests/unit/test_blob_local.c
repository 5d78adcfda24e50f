/* Local blob store: round trips, nesting, overwrite, delete, the key rule,
 * head info, ping, stats, and that no temp file survives a put. Each test
 * gets a fresh directory under $TMPDIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "voxgate/blob.h"
#include "voxgate/keys.h"

typedef struct fixture {
    char dir[256];
    vg_blob *b;
} fixture;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static void rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/vgblob-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    char root[300], err[256];
    snprintf(root, sizeof root, "%s/store/nested", f->dir); /* exercises mkdir -p */
    if (vg_blob_local_open(root, &f->b, err, sizeof err) != VG_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    vg_blob_close(f->b);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void put_get(vg_blob *b, const char *key, const void *data, size_t n, const char *ct)
{
    assert_int_equal(vg_blob_put(b, key, data, n, ct), VG_OK);
    vg_buf out = {0};
    vg_blob_info info;
    assert_int_equal(vg_blob_get(b, key, &out, &info), VG_OK);
    assert_int_equal(out.len, n);
    assert_non_null(out.data);
    if (n)
        assert_memory_equal(out.data, data, n);
    assert_int_equal(out.data[n], '\0');
    assert_int_equal(info.size, n);
    char sha[VG_SHA256_HEX + 1];
    vg_sha256_hex(data, n, sha);
    assert_string_equal(info.etag, sha);
    vg_buf_free(&out);
}

static void round_trips(void **state)
{
    fixture *f = *state;
    put_get(f->b, "empty", "", 0, "audio/wav");
    put_get(f->b, "hello.txt", "hello", 5, "text/plain");
    size_t big = 1u << 20;
    unsigned char *m = malloc(big);
    assert_non_null(m);
    for (size_t i = 0; i < big; i++)
        m[i] = (unsigned char)(i * 131 + (i >> 9));
    put_get(f->b, "big.bin", m, big, "application/octet-stream");
    free(m);
    /* NUL bytes in the data are data. */
    put_get(f->b, "nul", "a\0b\0", 4, NULL);
}

static void nested_and_prefix_keys(void **state)
{
    fixture *f = *state;
    put_get(f->b, "tts/ab/abcdef-0123.mp3", "mp3", 3, "audio/mpeg");
    put_get(f->b, "tts/ab/other", "o", 1, "audio/mpeg");
    /* A key may also be a prefix of other keys, as on S3. */
    put_get(f->b, "tts", "t", 1, "text/plain");
    put_get(f->b, "tts/ab", "ab", 2, "text/plain");
    put_get(f->b, "a/b/c/d/e/f/g", "deep", 4, "text/plain");
    vg_buf out = {0};
    assert_int_equal(vg_blob_get(f->b, "tts/ab/abcdef-0123.mp3", &out, NULL), VG_OK);
    assert_memory_equal(out.data, "mp3", 3);
    assert_int_equal(vg_blob_get(f->b, "a/b/c", &out, NULL), VG_NOTFOUND);
    assert_int_equal(out.len, 0);
    assert_int_equal(vg_blob_get(f->b, "tts/ab/abcdef-0123.mp3/x", &out, NULL), VG_NOTFOUND);
    vg_buf_free(&out);
}

static void overwrite(void **state)
{
    fixture *f = *state;
    put_get(f->b, "k", "first version", 13, "text/plain");
    put_get(f->b, "k", "2nd", 3, "audio/ogg");
    vg_blob_info info;
    assert_int_equal(vg_blob_head(f->b, "k", &info), VG_OK);
    assert_string_equal(info.content_type, "audio/ogg");
    assert_int_equal(info.size, 3);
}

static void delete(void **state)
{
    fixture *f = *state;
    put_get(f->b, "d/x", "x", 1, NULL);
    put_get(f->b, "d", "d", 1, NULL);
    assert_int_equal(vg_blob_del(f->b, "d/x"), VG_OK);
    vg_buf out = {0};
    assert_int_equal(vg_blob_get(f->b, "d/x", &out, NULL), VG_NOTFOUND);
    assert_int_equal(vg_blob_head(f->b, "d/x", NULL), VG_NOTFOUND);
    assert_int_equal(vg_blob_del(f->b, "d/x"), VG_NOTFOUND);
    assert_int_equal(vg_blob_del(f->b, "never/was"), VG_NOTFOUND);
    assert_int_equal(vg_blob_del(f->b, "d/x/y"), VG_NOTFOUND);
    /* Deleting "d/x" leaves "d" alone, and the reverse. */
    assert_int_equal(vg_blob_get(f->b, "d", &out, NULL), VG_OK);
    put_get(f->b, "d/x", "x2", 2, NULL);
    assert_int_equal(vg_blob_del(f->b, "d"), VG_OK);
    assert_int_equal(vg_blob_get(f->b, "d/x", &out, NULL), VG_OK);
    assert_memory_equal(out.data, "x2", 2);
    vg_buf_free(&out);
}

static void key_rule(void **state)
{
    assert_true(vg_blob_key_valid("a"));
    assert_true(vg_blob_key_valid("a.b-c_d/E9"));
    assert_true(vg_blob_key_valid("..."));
    assert_true(vg_blob_key_valid(".hidden"));
    assert_true(vg_blob_key_valid("a/..b/c.."));
    assert_true(vg_blob_key_valid("-/_/x"));
    assert_false(vg_blob_key_valid(NULL));
    assert_false(vg_blob_key_valid(""));
    assert_false(vg_blob_key_valid("/a"));
    assert_false(vg_blob_key_valid("a/"));
    assert_false(vg_blob_key_valid("a//b"));
    assert_false(vg_blob_key_valid(".."));
    assert_false(vg_blob_key_valid("a/../b"));
    assert_false(vg_blob_key_valid("a/.."));
    assert_false(vg_blob_key_valid("."));
    assert_false(vg_blob_key_valid("a/./b"));
    assert_false(vg_blob_key_valid("a b"));
    assert_false(vg_blob_key_valid("a@b"));
    assert_false(vg_blob_key_valid("a\\b"));
    assert_false(vg_blob_key_valid("a:b"));
    assert_false(vg_blob_key_valid("a*"));
    assert_false(vg_blob_key_valid("caf\xc3\xa9"));
    assert_false(vg_blob_key_valid("@tmp-0123456789abcdef"));

    char k[1100];
    memset(k, 'a', sizeof k);
    k[1024] = '\0';
    assert_true(vg_blob_key_valid(k));
    k[1024] = 'a';
    k[1025] = '\0';
    assert_false(vg_blob_key_valid(k));
}

static void invalid_keys_rejected(void **state)
{
    fixture *f = *state;
    const char *bad[] = {"/a", "a/../b", "..", "a//b", "a/", "a b", "x@", ""};
    vg_buf out = {0};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        assert_int_equal(vg_blob_put(f->b, bad[i], "x", 1, NULL), VG_EINVAL);
        assert_int_equal(vg_blob_get(f->b, bad[i], &out, NULL), VG_EINVAL);
        assert_int_equal(vg_blob_head(f->b, bad[i], NULL), VG_EINVAL);
        assert_int_equal(vg_blob_del(f->b, bad[i]), VG_EINVAL);
    }
    char k[1100];
    memset(k, 'a', sizeof k);
    for (int i = 100; i < 1025; i += 101)
        k[i] = '/';
    k[1025] = '\0';
    assert_int_equal(vg_blob_put(f->b, k, "x", 1, NULL), VG_EINVAL);
    /* Content types go back out as headers: printable ASCII, <= 127. */
    assert_int_equal(vg_blob_put(f->b, "ct", "x", 1, "text/plain\r\nX: y"), VG_EINVAL);
    char ct[130];
    memset(ct, 'c', sizeof ct);
    ct[128] = '\0';
    assert_int_equal(vg_blob_put(f->b, "ct", "x", 1, ct), VG_EINVAL);
    assert_int_equal(vg_blob_put(f->b, "ct", NULL, 1, NULL), VG_EINVAL);
    vg_blob_stats st;
    vg_blob_stats_get(f->b, &st);
    assert_int_equal(st.errors, 0);
    vg_buf_free(&out);
}

static void long_keys(void **state)
{
    fixture *f = *state;
    /* 1024 bytes in segments a filesystem can hold (NAME_MAX is 255). */
    char k[1025];
    memset(k, 'k', 1024);
    k[1024] = '\0';
    for (int i = 200; i < 1024; i += 201)
        k[i] = '/';
    assert_true(vg_blob_key_valid(k));
    put_get(f->b, k, "long", 4, NULL);
    assert_int_equal(vg_blob_del(f->b, k), VG_OK);

    /* A segment of 255 bytes is a valid key the local store cannot hold
     * (the object file name gets one more byte): refused, never found. */
    char s[300];
    memset(s, 's', 255);
    s[255] = '\0';
    assert_true(vg_blob_key_valid(s));
    assert_int_equal(vg_blob_put(f->b, s, "x", 1, NULL), VG_EINVAL);
    assert_int_equal(vg_blob_head(f->b, s, NULL), VG_NOTFOUND);
    s[254] = '\0';
    put_get(f->b, s, "x", 1, NULL);
    memset(s, 'd', 256);
    s[256] = '/';
    s[257] = 'x';
    s[258] = '\0';
    assert_int_equal(vg_blob_put(f->b, s, "x", 1, NULL), VG_EINVAL);
}

static uint64_t fixed_clock(void) { return 1764000000123u; }

static void head_info(void **state)
{
    fixture *f = *state;
    uint64_t (*saved)(void) = vg_clock_ms;
    vg_clock_ms = fixed_clock;
    int rc = vg_blob_put(f->b, "h/info.wav", "RIFF....", 8, "audio/wav");
    vg_clock_ms = saved;
    assert_int_equal(rc, VG_OK);
    vg_blob_info info;
    memset(&info, 0x55, sizeof info);
    assert_int_equal(vg_blob_head(f->b, "h/info.wav", &info), VG_OK);
    assert_int_equal(info.size, 8);
    assert_string_equal(info.content_type, "audio/wav");
    assert_int_equal(info.modified_ms, 1764000000123u);
    char sha[VG_SHA256_HEX + 1];
    vg_sha256_hex("RIFF....", 8, sha);
    assert_string_equal(info.etag, sha);
    assert_int_equal(vg_blob_head(f->b, "h/missing", &info), VG_NOTFOUND);
    assert_int_equal(vg_blob_head(f->b, "h", &info), VG_NOTFOUND);

    assert_int_equal(vg_blob_put(f->b, "h/default", "x", 1, NULL), VG_OK);
    assert_int_equal(vg_blob_head(f->b, "h/default", &info), VG_OK);
    assert_string_equal(info.content_type, "application/octet-stream");
}

static void corrupt_files(void **state)
{
    fixture *f = *state;
    char path[400];
    snprintf(path, sizeof path, "%s/store/nested/junk@", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("not a blob", fp);
    fclose(fp);
    vg_buf out = {0};
    assert_int_equal(vg_blob_get(f->b, "junk", &out, NULL), VG_ECORRUPT);
    assert_int_equal(out.len, 0);
    assert_int_equal(vg_blob_head(f->b, "junk", NULL), VG_ECORRUPT);

    /* A truncated object is corrupt too. */
    assert_int_equal(vg_blob_put(f->b, "trunc", "0123456789", 10, NULL), VG_OK);
    snprintf(path, sizeof path, "%s/store/nested/trunc@", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 1), 0);
    assert_int_equal(vg_blob_get(f->b, "trunc", &out, NULL), VG_ECORRUPT);
    vg_blob_stats s;
    vg_blob_stats_get(f->b, &s);
    assert_int_equal(s.errors, 3);
    vg_buf_free(&out);
}

/* open hands out the file and where the data starts; verify checks the
 * data against the put's digest, and again after the file changes. */
static void open_file(void **state)
{
    fixture *f = *state;
    char data[5000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 7);
    assert_int_equal(vg_blob_put(f->b, "big/one", data, sizeof data, "audio/wav"), VG_OK);
    for (int verify = 0; verify < 2; verify++) {
        int fd = -1;
        uint64_t off = 0;
        vg_blob_info info;
        assert_int_equal(vg_blob_open(f->b, "big/one", verify, &fd, &off, &info), VG_OK);
        assert_int_equal(info.size, sizeof data);
        assert_string_equal(info.content_type, "audio/wav");
        char etag[65];
        vg_sha256_hex(data, sizeof data, etag);
        assert_string_equal(info.etag, etag);
        char back[sizeof data + 1];
        assert_int_equal(pread(fd, back, sizeof back, (off_t)off), sizeof data);
        assert_memory_equal(back, data, sizeof data);
        close(fd);
    }
    int fd = -1;
    uint64_t off;
    vg_blob_info info;
    assert_int_equal(vg_blob_open(f->b, "big/none", true, &fd, &off, &info), VG_NOTFOUND);
    assert_int_equal(vg_blob_open(f->b, "../x", true, &fd, &off, &info), VG_EINVAL);

    /* One byte changed in place (same inode, same size): verify sees it
     * although the file passed before; without verify it is handed out. */
    char path[400];
    snprintf(path, sizeof path, "%s/store/nested/big/one@", f->dir);
    int w = open(path, O_WRONLY);
    assert_true(w >= 0);
    struct stat st;
    assert_int_equal(fstat(w, &st), 0);
    usleep(20 * 1000); /* a ctime the filesystem can tell apart */
    assert_int_equal(pwrite(w, "\xff", 1, st.st_size - 1), 1);
    close(w);
    assert_int_equal(vg_blob_open(f->b, "big/one", true, &fd, &off, &info), VG_ECORRUPT);
    assert_int_equal(vg_blob_open(f->b, "big/one", false, &fd, &off, &info), VG_OK);
    close(fd);
    /* A torn file is corrupt with or without verify. */
    assert_int_equal(truncate(path, st.st_size - 1), 0);
    assert_int_equal(vg_blob_open(f->b, "big/one", false, &fd, &off, &info), VG_ECORRUPT);
    vg_blob_stats s;
    vg_blob_stats_get(f->b, &s);
    assert_int_equal(s.gets, 4); /* 3 opens that succeeded, 1 that found nothing */
    assert_int_equal(s.errors, 2); /* the two corrupt ones */
}

static void ping(void **state)
{
    fixture *f = *state;
    assert_int_equal(vg_blob_ping(f->b), VG_OK);
    char root[300];
    snprintf(root, sizeof root, "%s/store", f->dir);
    rm_rf(root);
    assert_int_equal(vg_blob_ping(f->b), VG_EUNAVAIL);
    assert_int_not_equal(vg_blob_put(f->b, "x", "x", 1, NULL), VG_OK);
}

/* A root that was moved away and replaced by a new directory is picked
 * up by ping, so the store recovers without a restart. */
static void root_replaced(void **state)
{
    fixture *f = *state;
    char root[300], moved[320];
    snprintf(root, sizeof root, "%s/store/nested", f->dir);
    snprintf(moved, sizeof moved, "%s/store/old", f->dir);
    assert_int_equal(vg_blob_put(f->b, "a", "1", 1, NULL), VG_OK);
    assert_int_equal(rename(root, moved), 0);
    assert_int_equal(vg_blob_ping(f->b), VG_EUNAVAIL); /* nothing at the path */
    FILE *fp = fopen(root, "w"); /* a regular file where the directory was */
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(vg_blob_ping(f->b), VG_EUNAVAIL);
    assert_int_equal(remove(root), 0);
    assert_int_equal(mkdir(root, 0750), 0);
    assert_int_equal(vg_blob_ping(f->b), VG_OK);
    vg_buf out = {0};
    vg_blob_info info;
    assert_int_equal(vg_blob_get(f->b, "a", &out, &info), VG_NOTFOUND); /* old dir's object */
    assert_int_equal(vg_blob_put(f->b, "b", "2", 1, NULL), VG_OK);
    char path[400];
    snprintf(path, sizeof path, "%s/b@", root);
    assert_int_equal(access(path, F_OK), 0); /* written into the new directory */
    vg_buf_free(&out);
}

static void stats(void **state)
{
    fixture *f = *state;
    assert_string_equal(f->b->ops->name, "local");
    vg_buf out = {0};
    assert_int_equal(vg_blob_put(f->b, "s/1", "abc", 3, NULL), VG_OK);
    assert_int_equal(vg_blob_put(f->b, "s/2", "de", 2, NULL), VG_OK);
    assert_int_equal(vg_blob_get(f->b, "s/1", &out, NULL), VG_OK);
    assert_int_equal(vg_blob_get(f->b, "s/3", &out, NULL), VG_NOTFOUND);
    assert_int_equal(vg_blob_del(f->b, "s/2"), VG_OK);
    vg_blob_stats st;
    vg_blob_stats_get(f->b, &st);
    assert_int_equal(st.puts, 2);
    assert_int_equal(st.gets, 2);
    assert_int_equal(st.deletes, 1);
    assert_int_equal(st.bytes_in, 5);
    assert_int_equal(st.bytes_out, 3);
    assert_int_equal(st.errors, 0);
    vg_buf_free(&out);
}

static int saw_temp;

static int find_temp(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    const char *name = p + f->base;
    if (name[0] == '@')
        saw_temp++;
    return 0;
}

static void no_temp_files_left(void **state)
{
    fixture *f = *state;
    char k[64];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "t/%02d/obj-%d", i % 5, i);
        assert_int_equal(vg_blob_put(f->b, k, k, strlen(k), NULL), VG_OK);
    }
    assert_int_equal(vg_blob_put(f->b, "t/00/obj-0", "again", 5, NULL), VG_OK);
    assert_int_equal(vg_blob_ping(f->b), VG_OK);
    saw_temp = 0;
    char root[300];
    snprintf(root, sizeof root, "%s/store/nested", f->dir);
    assert_int_equal(nftw(root, find_temp, 16, FTW_PHYS), 0);
    assert_int_equal(saw_temp, 0);
}

static void open_errors(void **state)
{
    fixture *f = *state;
    char path[400], err[256] = "";
    snprintf(path, sizeof path, "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    vg_blob *b = (vg_blob *)1;
    assert_int_not_equal(vg_blob_local_open(path, &b, err, sizeof err), VG_OK);
    assert_null(b);
    assert_non_null(strstr(err, path));
    snprintf(path, sizeof path, "%s/file/sub", f->dir);
    assert_int_not_equal(vg_blob_local_open(path, &b, err, sizeof err), VG_OK);
    assert_int_equal(vg_blob_local_open("", &b, err, sizeof err), VG_EINVAL);
    /* Reopening an existing store sees its objects. */
    snprintf(path, sizeof path, "%s/store/nested", f->dir);
    assert_int_equal(vg_blob_put(f->b, "persist", "p", 1, NULL), VG_OK);
    assert_int_equal(vg_blob_local_open(path, &b, err, sizeof err), VG_OK);
    assert_int_equal(vg_blob_head(b, "persist", NULL), VG_OK);
    vg_blob_close(b);
    vg_blob_close(NULL);
}

/* ---- issue 8: metadata, listing, the readable-key rule ---- */

static void metadata_round_trip(void **state)
{
    fixture *f = *state;
    vg_blob_meta m[2] = {{"speaker", "Ann Lee"}, {"take", ""}};
    assert_int_equal(vg_blob_put_meta(f->b, "m/a.wav", "abc", 3, "audio/wav", m, 2), VG_OK);
    vg_blob_info info;
    assert_int_equal(vg_blob_head(f->b, "m/a.wav", &info), VG_OK);
    assert_int_equal(info.nmeta, 2);
    assert_string_equal(info.meta[0].name, "speaker");
    assert_string_equal(info.meta[0].value, "Ann Lee");
    assert_string_equal(info.meta[1].value, "");
    vg_buf out = {0};
    assert_int_equal(vg_blob_get(f->b, "m/a.wav", &out, &info), VG_OK);
    assert_int_equal(out.len, 3);
    assert_int_equal(info.nmeta, 2);
    vg_buf_free(&out);
    /* Bad metadata is refused and nothing is written. */
    vg_blob_meta bad[2] = {{"Upper", "x"}, {"ok", "v"}};
    assert_int_equal(vg_blob_put_meta(f->b, "m/b.wav", "x", 1, "audio/wav", bad, 2), VG_EINVAL);
    vg_blob_meta dup[2] = {{"a", "1"}, {"a", "2"}};
    assert_int_equal(vg_blob_put_meta(f->b, "m/b.wav", "x", 1, "audio/wav", dup, 2), VG_EINVAL);
    vg_blob_meta pre[2] = {{"take-2", "1"}, {"take", "2"}};
    assert_int_equal(vg_blob_put_meta(f->b, "m/b.wav", "x", 1, "audio/wav", pre, 2), VG_EINVAL);
    vg_blob_meta ctl[1] = {{"a", "x\ny"}};
    assert_int_equal(vg_blob_put_meta(f->b, "m/b.wav", "x", 1, "audio/wav", ctl, 1), VG_EINVAL);
    vg_blob_meta big[VG_BLOB_META_MAX];
    for (size_t i = 0; i < VG_BLOB_META_MAX; i++) {
        snprintf(big[i].name, sizeof big[i].name, "n%zu", i);
        memset(big[i].value, 'v', 200);
        big[i].value[200] = '\0';
    }
    assert_int_equal(vg_blob_put_meta(f->b, "m/b.wav", "x", 1, "audio/wav", big, VG_BLOB_META_MAX),
                     VG_EINVAL); /* over 2 KiB in all */
    assert_int_equal(vg_blob_head(f->b, "m/b.wav", &info), VG_NOTFOUND);
}

static void listing(void **state)
{
    fixture *f = *state;
    const char *keys[] = {"l/b", "l/a/x", "l/a", ".dot", "l/c.wav", "other/z", "l/a/y/z"};
    for (size_t i = 0; i < VG_ARRAY_LEN(keys); i++)
        assert_int_equal(vg_blob_put(f->b, keys[i], "k", 1, "text/plain"), VG_OK);
    vg_blob_list l;
    assert_int_equal(vg_blob_list_keys(f->b, "l/", NULL, 1000, &l), VG_OK);
    const char *want[] = {"l/a", "l/a/x", "l/a/y/z", "l/b", "l/c.wav"};
    assert_int_equal(l.n, 5);
    assert_false(l.truncated);
    for (size_t i = 0; i < l.n; i++) {
        assert_string_equal(l.items[i].key, want[i]);
        assert_int_equal(l.items[i].size, 1);
        assert_int_equal(strlen(l.items[i].etag), 64);
    }
    vg_blob_list_free(&l);
    /* Pages: after the last key returned. */
    assert_int_equal(vg_blob_list_keys(f->b, "l/", NULL, 2, &l), VG_OK);
    assert_int_equal(l.n, 2);
    assert_true(l.truncated);
    vg_blob_list_free(&l);
    assert_int_equal(vg_blob_list_keys(f->b, "l/", "l/a/x", 2, &l), VG_OK);
    assert_string_equal(l.items[0].key, "l/a/y/z");
    assert_string_equal(l.items[1].key, "l/b");
    assert_true(l.truncated);
    vg_blob_list_free(&l);
    assert_int_equal(vg_blob_list_keys(f->b, "l/", "l/b", 2, &l), VG_OK);
    assert_int_equal(l.n, 1);
    assert_false(l.truncated);
    vg_blob_list_free(&l);
    /* Every key, twice in a row (the root's directory offset is not shared). */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(vg_blob_list_keys(f->b, NULL, NULL, 1000, &l), VG_OK);
        assert_int_equal(l.n, VG_ARRAY_LEN(keys));
        assert_string_equal(l.items[0].key, ".dot");
        vg_blob_list_free(&l);
    }
    assert_int_equal(vg_blob_list_keys(f->b, "", NULL, 0, &l), VG_EINVAL);
    assert_int_equal(vg_blob_list_keys(f->b, "", NULL, 1001, &l), VG_EINVAL);
    vg_blob_stats st;
    vg_blob_stats_get(f->b, &st);
    assert_true(st.lists >= 6);
}

static void readable_keys(void **state)
{
    assert_true(vg_blob_key_readable("hello world+\xc3\xa9.wav"));
    assert_true(vg_blob_key_readable("a//b"));
    assert_true(vg_blob_key_readable("dir/"));
    assert_false(vg_blob_key_readable(""));
    assert_false(vg_blob_key_readable("/lead"));
    assert_false(vg_blob_key_readable("a/../b"));
    assert_false(vg_blob_key_readable("a/./b"));
    assert_false(vg_blob_key_readable(".."));
    assert_false(vg_blob_key_readable("ctl\x01"));
    assert_false(vg_blob_key_readable("nul%00"));
    char k[1026];
    memset(k, 'k', 1025);
    k[1025] = '\0';
    assert_false(vg_blob_key_readable(k));
    k[1024] = '\0';
    assert_true(vg_blob_key_readable(k));
    assert_false(vg_blob_key_valid("hello world"));
}


/* ---- sweep ---- */

static uint64_t clock_at;
static uint64_t settable_clock(void) { return clock_at; }

static void put_at(vg_blob *b, const char *key, uint64_t ms)
{
    uint64_t (*saved)(void) = vg_clock_ms;
    clock_at = ms;
    vg_clock_ms = settable_clock;
    int rc = vg_blob_put(b, key, key, strlen(key), "audio/wav");
    vg_clock_ms = saved;
    assert_int_equal(rc, VG_OK);
}

static bool exists(vg_blob *b, const char *key)
{
    vg_blob_info info;
    return vg_blob_head(b, key, &info) == VG_OK;
}

/* A file at root/rel (raw bytes, not an object) with the given mtime. */
static void raw_file(fixture *f, const char *rel, const char *bytes, time_t mtime)
{
    char path[600];
    snprintf(path, sizeof path, "%s/store/nested/%s", f->dir, rel);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(bytes, fp);
    fclose(fp);
    struct timespec ts[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static bool raw_exists(fixture *f, const char *rel)
{
    char path[600];
    snprintf(path, sizeof path, "%s/store/nested/%s", f->dir, rel);
    return access(path, F_OK) == 0;
}

#define T_OLD 1700000000000u
#define T_NEW 1700000500000u

static void old_objects_of(fixture *f)
{
    put_at(f->b, "tts/aa/old-1", T_OLD);
    put_at(f->b, "tts/bb/c/old-2", T_OLD);
    put_at(f->b, "tts/aa/new-1", T_NEW);
    put_at(f->b, "docs/old-3", T_OLD);       /* outside the prefix */
    put_at(f->b, "ttsx/old-4", T_OLD);       /* shares the prefix's letters only */
}

static void check_swept(fixture *f, uint64_t removed, uint64_t want)
{
    assert_int_equal(removed, want);
    assert_false(exists(f->b, "tts/aa/old-1"));
    assert_false(exists(f->b, "tts/bb/c/old-2"));
    assert_true(exists(f->b, "tts/aa/new-1"));
    assert_true(exists(f->b, "docs/old-3"));
    assert_true(exists(f->b, "ttsx/old-4"));
}

static void sweep_old_objects(void **state)
{
    fixture *f = *state;
    old_objects_of(f);
    /* A torn object under the prefix goes by its file time; a foreign
     * one outside stays. */
    raw_file(f, "tts/aa/torn@", "not an object", T_OLD / 1000 - 10);
    raw_file(f, "docs/torn@", "not an object", T_OLD / 1000 - 10);
    vg_blob_stats before, after;
    vg_blob_stats_get(f->b, &before);
    vg_blob_sweep_job job = {.prefix = "tts/", .cutoff_ms = T_OLD + 1};
    assert_int_equal(vg_blob_sweep(f->b, &job), VG_OK);
    check_swept(f, job.removed, 3);
    assert_false(raw_exists(f, "tts/aa/torn@"));
    assert_true(raw_exists(f, "docs/torn@"));
    vg_blob_stats_get(f->b, &after);
    assert_int_equal(after.deletes - before.deletes, 3);
    /* Again: nothing left to remove. */
    job.removed = 0;
    assert_int_equal(vg_blob_sweep(f->b, &job), VG_OK);
    assert_int_equal(job.removed, 0);
}

/* Temp and probe files of crashed writes go once an hour old, anywhere
 * in the tree; fresh ones (a put in progress) and other names stay. */
static void sweep_litter(void **state)
{
    fixture *f = *state;
    put_at(f->b, "docs/a", T_NEW);
    raw_file(f, "@tmp-00000000000000aa", "x", time(NULL) - 7200);
    raw_file(f, "docs/@tmp-00000000000000bb", "x", time(NULL) - 7200);
    raw_file(f, "docs/@probe-00000000000000cc", "x", time(NULL) - 7200);
    raw_file(f, "docs/@tmp-00000000000000dd", "x", time(NULL) - 60);
    raw_file(f, "docs/@other", "x", time(NULL) - 7200);
    vg_blob_sweep_job job = {.prefix = "tts/", .cutoff_ms = T_NEW + 1};
    assert_int_equal(vg_blob_sweep(f->b, &job), VG_OK);
    assert_int_equal(job.removed, 0);
    assert_false(raw_exists(f, "@tmp-00000000000000aa"));
    assert_false(raw_exists(f, "docs/@tmp-00000000000000bb"));
    assert_false(raw_exists(f, "docs/@probe-00000000000000cc"));
    assert_true(raw_exists(f, "docs/@tmp-00000000000000dd"));
    assert_true(raw_exists(f, "docs/@other"));
    assert_true(exists(f->b, "docs/a"));
}

static void sweep_stops(void **state)
{
    fixture *f = *state;
    old_objects_of(f);
    _Atomic bool stop = true;
    vg_blob_sweep_job job = {.prefix = "tts/", .cutoff_ms = T_OLD + 1, .stop = &stop};
    assert_int_equal(vg_blob_sweep(f->b, &job), VG_OK);
    assert_int_equal(job.removed, 0);
    assert_true(exists(f->b, "tts/aa/old-1"));
}

/* Stores without a sweep op (S3) page through list + del: the same
 * result, with pages of one and two keys. */
static void sweep_by_listing(void **state)
{
    fixture *f = *state;
    old_objects_of(f);
    put_at(f->b, "tts/zz/old-5", T_OLD);
    vg_blob_ops ops = *f->b->ops;
    ops.sweep = NULL;
    const vg_blob_ops *saved = f->b->ops;
    f->b->ops = &ops;
    vg_blob_sweep_job job = {.prefix = "tts/", .cutoff_ms = T_OLD + 1, .page = 1};
    int rc = vg_blob_sweep(f->b, &job);
    f->b->ops = saved;
    assert_int_equal(rc, VG_OK);
    check_swept(f, job.removed, 3);
    assert_false(exists(f->b, "tts/zz/old-5"));
    put_at(f->b, "tts/aa/old-1", T_OLD);
    put_at(f->b, "tts/zz/old-5", T_OLD);
    f->b->ops = &ops;
    job = (vg_blob_sweep_job){.prefix = "tts/", .cutoff_ms = T_OLD + 1, .page = 2};
    rc = vg_blob_sweep(f->b, &job);
    f->b->ops = saved;
    assert_int_equal(rc, VG_OK);
    assert_int_equal(job.removed, 2);
    assert_true(exists(f->b, "tts/aa/new-1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(nested_and_prefix_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(delete, setup, teardown),
        cmocka_unit_test(key_rule),
        cmocka_unit_test_setup_teardown(invalid_keys_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(long_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(head_info, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_files, setup, teardown),
        cmocka_unit_test_setup_teardown(open_file, setup, teardown),
        cmocka_unit_test_setup_teardown(ping, setup, teardown),
        cmocka_unit_test_setup_teardown(root_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(stats, setup, teardown),
        cmocka_unit_test_setup_teardown(no_temp_files_left, setup, teardown),
        cmocka_unit_test_setup_teardown(open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(metadata_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(listing, setup, teardown),
        cmocka_unit_test(readable_keys),
        cmocka_unit_test_setup_teardown(sweep_old_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(sweep_litter, setup, teardown),
        cmocka_unit_test_setup_teardown(sweep_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(sweep_by_listing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
