/* multipart/form-data: boundary extraction from Content-Type, bodies as
 * curl and the OpenAI SDKs send them, the tolerated deviations, every
 * error message, and that adversarial bodies are handled in linear time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "voxgate/multipart.h"
#include "voxgate/util.h"

#define MAXP 16

static vg_mp_part parts[MAXP];
static size_t np;
static char err[160];

/* Parse a NUL-free literal body with at most MAXP parts. */
static int parse_n(const char *body, size_t len, const char *b)
{
    return vg_mp_parse(body, len, b, parts, MAXP, &np, err, sizeof err);
}

static int parse(const char *body, const char *b) { return parse_n(body, strlen(body), b); }

static void assert_data(const vg_mp_part *p, const char *want)
{
    assert_non_null(p);
    assert_int_equal(p->len, strlen(want));
    assert_memory_equal(p->data, want, p->len);
}

static void assert_fails(const char *body, const char *b, const char *msg)
{
    assert_int_equal(parse(body, b), VG_EINVAL);
    assert_int_equal(np, 0);
    assert_string_equal(err, msg);
}

/* ---- vg_mp_boundary ---- */

static bool bnd(const char *ct, char *out) { return vg_mp_boundary(ct, out, VG_MP_BOUNDARY_MAX + 1); }

static void boundary_token_and_quoted(void **state)
{
    char b[VG_MP_BOUNDARY_MAX + 1];
    assert_true(bnd("multipart/form-data; boundary=------------------------d74496d66958873e", b));
    assert_string_equal(b, "------------------------d74496d66958873e");
    assert_true(bnd("multipart/form-data; boundary=\"a b:c=d?\"", b));
    assert_string_equal(b, "a b:c=d?");
    assert_true(bnd("multipart/form-data;boundary=x", b));
    assert_string_equal(b, "x");
    assert_true(bnd("  Multipart/Form-Data ; BOUNDARY = \"q\\\"\" ", b) == false);
    assert_true(bnd("Multipart/Form-Data ; BOUNDARY = abc ", b));
    assert_string_equal(b, "abc");
}

static void boundary_other_params(void **state)
{
    char b[VG_MP_BOUNDARY_MAX + 1];
    assert_true(bnd("multipart/form-data; charset=utf-8; boundary=----formdata-undici-0123", b));
    assert_string_equal(b, "----formdata-undici-0123");
    assert_true(bnd("multipart/form-data; boundary=abc; charset=\"utf-8\"", b));
    assert_string_equal(b, "abc");
    assert_true(bnd("multipart/form-data; boundary=abc;", b));
    assert_string_equal(b, "abc");
}

static void boundary_rejects(void **state)
{
    char b[VG_MP_BOUNDARY_MAX + 1];
    assert_false(bnd("multipart/mixed; boundary=abc", b));
    assert_string_equal(b, "");
    assert_false(bnd("multipart/form-datax; boundary=abc", b));
    assert_false(bnd("application/json", b));
    assert_false(bnd("multipart/form-data", b));
    assert_false(bnd("multipart/form-data; boundary=", b));
    assert_false(bnd("multipart/form-data; boundary=\"\"", b));
    assert_false(bnd("multipart/form-data; boundary=\"ends in space \"", b));
    assert_false(bnd("multipart/form-data; boundary=a; boundary=b", b));
    assert_false(bnd("multipart/form-data; boundary=\"unterminated", b));
    assert_false(bnd("multipart/form-data; boundary=ab#c", b));   /* not a bchar */
    assert_false(bnd("multipart/form-data; boundary=abc junk", b));
    assert_false(bnd("multipart/form-data junk; boundary=abc", b));
    assert_false(bnd(NULL, b));
    assert_false(vg_mp_boundary("multipart/form-data; boundary=abc", NULL, 10));
}

static void boundary_length(void **state)
{
    char ct[200], b[100];
    char seventy[71];
    memset(seventy, 'b', 70);
    seventy[70] = '\0';
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", seventy);
    assert_true(vg_mp_boundary(ct, b, sizeof b));
    assert_string_equal(b, seventy);
    assert_false(vg_mp_boundary(ct, b, 70)); /* no room for the NUL */
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%sb", seventy);
    assert_false(vg_mp_boundary(ct, b, sizeof b));
}

/* ---- bodies that real clients send ---- */

static const char curl_body[] =
    "--------------------------d74496d66958873e\r\n"
    "Content-Disposition: form-data; name=\"file\"; filename=\"audio.wav\"\r\n"
    "Content-Type: audio/wav\r\n"
    "\r\n"
    "RIFF\x01\x02\r\n--\r\n\r\n"
    "\r\n--------------------------d74496d66958873e\r\n"
    "Content-Disposition: form-data; name=\"model\"\r\n"
    "\r\n"
    "whisper-1\r\n"
    "--------------------------d74496d66958873e--\r\n";

static void curl_form(void **state)
{
    assert_int_equal(parse(curl_body, "------------------------d74496d66958873e"), VG_OK);
    assert_int_equal(np, 2);
    assert_string_equal(parts[0].name, "file");
    assert_true(parts[0].has_filename);
    assert_string_equal(parts[0].filename, "audio.wav");
    assert_string_equal(parts[0].ctype, "audio/wav");
    assert_data(&parts[0], "RIFF\x01\x02\r\n--\r\n\r\n");
    assert_string_equal(parts[1].name, "model");
    assert_false(parts[1].has_filename);
    assert_string_equal(parts[1].filename, "");
    assert_string_equal(parts[1].ctype, "");
    assert_data(&parts[1], "whisper-1");
    assert_ptr_equal(vg_mp_find(parts, np, "model"), &parts[1]);
    assert_null(vg_mp_find(parts, np, "language"));
}

/* openai-node over undici: repeated `name[]` parts, a text field after the file. */
static void sdk_form_repeated_fields(void **state)
{
    const char *body =
        "------formdata-undici-032482139158\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"speech.mp3\"\r\n"
        "Content-Type: audio/mpeg\r\n\r\n"
        "\xff\xfb\x90\x64\r\n"
        "------formdata-undici-032482139158\r\n"
        "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
        "whisper-1\r\n"
        "------formdata-undici-032482139158\r\n"
        "Content-Disposition: form-data; name=\"response_format\"\r\n\r\n"
        "verbose_json\r\n"
        "------formdata-undici-032482139158\r\n"
        "Content-Disposition: form-data; name=\"timestamp_granularities[]\"\r\n\r\n"
        "word\r\n"
        "------formdata-undici-032482139158\r\n"
        "Content-Disposition: form-data; name=\"timestamp_granularities[]\"\r\n\r\n"
        "segment\r\n"
        "------formdata-undici-032482139158--";
    assert_int_equal(parse(body, "----formdata-undici-032482139158"), VG_OK);
    assert_int_equal(np, 5);
    const char *k = "timestamp_granularities[]";
    const vg_mp_part *p = vg_mp_next(parts, np, NULL, k);
    assert_ptr_equal(p, &parts[3]);
    assert_data(p, "word");
    p = vg_mp_next(parts, np, p, k);
    assert_data(p, "segment");
    assert_null(vg_mp_next(parts, np, p, k));
    assert_data(vg_mp_find(parts, np, "file"), "\xff\xfb\x90\x64");
}

static void preamble_epilogue(void **state)
{
    const char *body = "This is a preamble.\r\n--xx looks close\r\n"
                       "--xx\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                       "--xx--\r\nepilogue --xx\r\nContent-Disposition: junk\r\n";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_int_equal(np, 1);
    assert_string_equal(parts[0].name, "a");
    assert_data(&parts[0], "1");
}

static void zero_parts(void **state)
{
    assert_int_equal(parse("--xx--", "xx"), VG_OK);
    assert_int_equal(np, 0);
    assert_int_equal(parse("preamble\r\n--xx--\r\n", "xx"), VG_OK);
    assert_int_equal(np, 0);
}

static void empty_parts(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n"
                       "--xx\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n"
                       "--xx\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n\r\n--xx--";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_int_equal(np, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(parts[i].len, 0);
        assert_non_null(parts[i].data);
    }
}

/* Data holding CR, LF, NUL and strings that are nearly the delimiter. */
static void binary_lookalikes(void **state)
{
    static const char data[] = "\r\n--bound\r\n--boundar\r\n--boundaryX\r\n"
                               "-boundary\r\n\n--boundary-x\r\n--boundary \tz\0\r\n\r";
    char body[512];
    size_t n = 0;
    const char *head = "--boundary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n";
    memcpy(body + n, head, strlen(head)), n += strlen(head);
    memcpy(body + n, data, sizeof data - 1), n += sizeof data - 1;
    memcpy(body + n, "\r\n--boundary--\r\n", 16), n += 16;
    assert_int_equal(parse_n(body, n, "boundary"), VG_OK);
    assert_int_equal(np, 1);
    assert_int_equal(parts[0].len, sizeof data - 1);
    assert_memory_equal(parts[0].data, data, sizeof data - 1);
}

static void transport_padding(void **state)
{
    const char *body = "--xx \t\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xx--  \r\n";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_int_equal(np, 1);
    assert_data(&parts[0], "v");
}

static void bare_lf(void **state)
{
    const char *body = "--xx\nContent-Disposition: form-data; name=a\nContent-Type: text/plain\n\n"
                       "line1\r\nline2\n--xx\ncontent-disposition: form-data; name=b\n\nB\n--xx--";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_int_equal(np, 2);
    assert_data(&parts[0], "line1\r\nline2");
    assert_string_equal(parts[0].ctype, "text/plain");
    assert_data(&parts[1], "B");
}

/* An empty part whose blank line runs straight into the delimiter. */
static void empty_without_crlf(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=a\r\n\r\n--xx--\r\n";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_int_equal(np, 1);
    assert_int_equal(parts[0].len, 0);
}

static void header_names_case_and_others(void **state)
{
    const char *body = "--xx\r\nX-Other: whatever; name=\"no\"\r\n"
                       "CONTENT-TYPE:  application/octet-stream  \r\n"
                       "content-disposition :form-data;NAME=\"f\";FileName=\"a b.wav\"\r\n"
                       "Content-Transfer-Encoding: binary\r\n\r\nD\r\n--xx--\r\n";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_string_equal(parts[0].name, "f");
    assert_string_equal(parts[0].filename, "a b.wav");
    assert_string_equal(parts[0].ctype, "application/octet-stream");
}

static void quoted_escapes(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=\"a\\\"b\\\\c\"; "
                       "filename=\"x;y=\\\"z\\\".wav\"\r\n\r\nD\r\n--xx--";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_string_equal(parts[0].name, "a\"b\\c");
    assert_string_equal(parts[0].filename, "x;y=\"z\".wav");
}

static void utf8_names(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=\"f\"; "
                       "filename=\"r\xc3\xa9sum\xc3\xa9.wav\"\r\n\r\nD\r\n--xx--";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_string_equal(parts[0].filename, "r\xc3\xa9sum\xc3\xa9.wav");
}

static void empty_filename(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=f; filename=\"\"\r\n\r\n--xx--";
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_true(parts[0].has_filename);
    assert_string_equal(parts[0].filename, "");
}

static void filename_star(void **state)
{
    const char *both = "--xx\r\nContent-Disposition: form-data; name=f; "
                       "filename*=UTF-8''other.wav; filename=\"plain.wav\"\r\n\r\n--xx--";
    assert_int_equal(parse(both, "xx"), VG_OK);
    assert_string_equal(parts[0].filename, "plain.wav");
    const char *ext = "--xx\r\nContent-Disposition: form-data; name=f; "
                      "filename*=utf-8'en'r%C3%A9sum%c3%a9%20x.wav\r\n\r\n--xx--";
    assert_int_equal(parse(ext, "xx"), VG_OK);
    assert_true(parts[0].has_filename);
    assert_string_equal(parts[0].filename, "r\xc3\xa9sum\xc3\xa9 x.wav");
    const char *latin = "--xx\r\nContent-Disposition: form-data; name=f; "
                        "filename*=iso-8859-1''a%E9.wav\r\n\r\n--xx--";
    assert_int_equal(parse(latin, "xx"), VG_OK);
    assert_false(parts[0].has_filename);
    const char *bad = "--xx\r\nContent-Disposition: form-data; name=f; "
                      "filename*=UTF-8''a%0a.wav\r\n\r\n--xx--";
    assert_int_equal(parse(bad, "xx"), VG_OK);
    assert_false(parts[0].has_filename);
}

static void name_limits(void **state)
{
    char body[1024], name[200];
    memset(name, 'n', 127);
    name[127] = '\0';
    snprintf(body, sizeof body,
             "--xx\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\nv\r\n--xx--", name);
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_string_equal(parts[0].name, name);
    strcat(name, "n");
    snprintf(body, sizeof body,
             "--xx\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\nv\r\n--xx--", name);
    assert_fails(body, "xx", "multipart: part 1 name is longer than 127 bytes");
}

static void filename_limits(void **state)
{
    char body[1024], fn[300];
    memset(fn, 'f', 255);
    fn[255] = '\0';
    snprintf(body, sizeof body,
             "--xx\r\nContent-Disposition: form-data; name=a; filename=\"%s\"\r\n\r\n--xx--", fn);
    assert_int_equal(parse(body, "xx"), VG_OK);
    assert_string_equal(parts[0].filename, fn);
    strcat(fn, "f");
    snprintf(body, sizeof body,
             "--xx\r\nContent-Disposition: form-data; name=a; filename=\"%s\"\r\n\r\n--xx--", fn);
    assert_fails(body, "xx", "multipart: part 1 filename is longer than 255 bytes");
}

static void ctype_limit(void **state)
{
    char body[1024], ct[200];
    memset(ct, 'c', 128);
    ct[128] = '\0';
    snprintf(body, sizeof body,
             "--xx\r\nContent-Disposition: form-data; name=a\r\nContent-Type: %s\r\n\r\n--xx--", ct);
    assert_fails(body, "xx", "multipart: part 1 Content-Type is longer than 127 bytes");
}

static void header_block_limit(void **state)
{
    size_t filler = VG_MP_HEADER_MAX;
    char *body = malloc(filler + 256);
    assert_non_null(body);
    size_t n = (size_t)sprintf(body, "--xx\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    memset(body + n, 'p', filler), n += filler;
    n += (size_t)sprintf(body + n, "\r\n\r\nv\r\n--xx--");
    assert_int_equal(parse_n(body, n, "xx"), VG_EINVAL);
    assert_string_equal(err, "multipart: part 1 header block is over 8192 bytes");
    /* Just under the limit, counted from the part's first header byte. */
    n = (size_t)sprintf(body, "--xx\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    size_t used = n - 6 + 4; /* header bytes so far + the "\r\n\r\n" */
    memset(body + n, 'p', VG_MP_HEADER_MAX - used), n += VG_MP_HEADER_MAX - used;
    n += (size_t)sprintf(body + n, "\r\n\r\nv\r\n--xx--");
    assert_int_equal(parse_n(body, n, "xx"), VG_OK);
    assert_data(&parts[0], "v");
    free(body);
}

static void too_many_parts(void **state)
{
    const char *body = "--xx\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                       "--xx\r\nContent-Disposition: form-data; name=b\r\n\r\n2\r\n--xx--";
    assert_int_equal(vg_mp_parse(body, strlen(body), "xx", parts, 2, &np, err, sizeof err), VG_OK);
    assert_int_equal(np, 2);
    assert_int_equal(vg_mp_parse(body, strlen(body), "xx", parts, 1, &np, err, sizeof err),
                     VG_EINVAL);
    assert_string_equal(err, "multipart: more than 1 parts");
    assert_int_equal(np, 0);
    assert_int_equal(vg_mp_parse("--xx--", 6, "xx", NULL, 0, &np, NULL, 0), VG_OK);
}

/* ---- errors ---- */

static void no_closing_boundary(void **state)
{
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue", "xx",
                 "multipart: no closing boundary");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xx", "xx",
                 "multipart: no closing boundary");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xxy--", "xx",
                 "multipart: no closing boundary");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--xx-", "xx",
                 "multipart: no closing boundary");
}

static void no_boundary_at_all(void **state)
{
    assert_fails("", "xx", "multipart: no boundary found");
    assert_fails("hello", "xx", "multipart: no boundary found");
    assert_fails("--yy\r\n", "xx", "multipart: no boundary found");
    assert_fails("--xxz\r\n", "xx", "multipart: no boundary found");
}

static void unterminated_headers(void **state)
{
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n", "xx",
                 "multipart: part 1 header block is not terminated");
    assert_fails("--xx\r\n", "xx", "multipart: part 1 header block is not terminated");
}

static void missing_name(void **state)
{
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
                 "--xx\r\nContent-Disposition: form-data; filename=\"f\"\r\n\r\n2\r\n--xx--",
                 "xx", "multipart: part 2 has no Content-Disposition name");
    assert_fails("--xx\r\nContent-Type: text/plain\r\n\r\n2\r\n--xx--", "xx",
                 "multipart: part 1 has no Content-Disposition name");
    assert_fails("--xx\r\n\r\n2\r\n--xx--", "xx",
                 "multipart: part 1 has no Content-Disposition name");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=\"\"\r\n\r\n2\r\n--xx--", "xx",
                 "multipart: part 1 has no Content-Disposition name");
}

static void bad_disposition(void **state)
{
    assert_fails("--xx\r\nContent-Disposition: attachment; name=a\r\n\r\n--xx--", "xx",
                 "multipart: part 1 Content-Disposition is not form-data");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=\"a\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed Content-Disposition");
    assert_fails("--xx\r\nContent-Disposition: form-data; name\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed Content-Disposition");
    assert_fails("--xx\r\nContent-Disposition: form-data name=a\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed Content-Disposition");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=\"a\\\"\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed Content-Disposition");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=\"a\x01\"\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed Content-Disposition");
}

static void duplicates(void **state)
{
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has two name parameters");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a; filename=x; filename=y\r\n"
                 "\r\n--xx--",
                 "xx", "multipart: part 1 has two filename parameters");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\n"
                 "Content-Disposition: form-data; name=b\r\n\r\n--xx--",
                 "xx", "multipart: part 1 has two Content-Disposition headers");
    assert_fails("--xx\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\n"
                 "Content-Type: c/d\r\n\r\n--xx--",
                 "xx", "multipart: part 1 has two Content-Type headers");
}

static void malformed_header_line(void **state)
{
    assert_fails("--xx\r\nContent-Disposition form-data; name=a\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed header line");
    assert_fails("--xx\r\n: value\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed header line");
    assert_fails("--xx\r\n folded: no\r\n\r\n--xx--", "xx",
                 "multipart: part 1 has a malformed header line");
}

static void nul_in_name(void **state)
{
    static const char body[] = "--xx\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\n--xx--";
    assert_int_equal(parse_n(body, sizeof body - 1, "xx"), VG_EINVAL);
    assert_string_equal(err, "multipart: part 1 has a malformed Content-Disposition");
}

static void bad_arguments(void **state)
{
    assert_int_equal(parse("--xx--", ""), VG_EINVAL);
    assert_int_equal(parse("--xx--", "bad#"), VG_EINVAL);
    assert_int_equal(vg_mp_parse("--xx--", 6, NULL, parts, MAXP, &np, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_mp_parse("--xx--", 6, "xx", parts, MAXP, NULL, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_mp_parse(NULL, 5, "xx", parts, MAXP, &np, err, sizeof err), VG_EINVAL);
    assert_string_equal(err, "multipart: invalid boundary or arguments");
    assert_int_equal(vg_mp_parse(NULL, 0, "xx", parts, MAXP, &np, err, sizeof err), VG_EINVAL);
    assert_string_equal(err, "multipart: no boundary found");
}

static void short_err_buffer(void **state)
{
    char small[10];
    assert_int_equal(vg_mp_parse("x", 1, "xx", parts, MAXP, &np, small, sizeof small), VG_EINVAL);
    assert_string_equal(small, "multipart");
}

/* ---- vg_mp_text ---- */

static void text_fields(void **state)
{
    static const char body[] = "--xx\r\nContent-Disposition: form-data; name=t\r\n\r\n0.25\r\n"
                               "--xx\r\nContent-Disposition: form-data; name=z\r\n\r\na\0b\r\n--xx--";
    assert_int_equal(parse_n(body, sizeof body - 1, "xx"), VG_OK);
    char out[8];
    assert_int_equal(vg_mp_text(vg_mp_find(parts, np, "t"), out, sizeof out), VG_OK);
    assert_string_equal(out, "0.25");
    assert_int_equal(vg_mp_text(vg_mp_find(parts, np, "t"), out, 4), VG_ETOOBIG);
    assert_int_equal(vg_mp_text(vg_mp_find(parts, np, "t"), out, 5), VG_OK);
    assert_int_equal(vg_mp_text(vg_mp_find(parts, np, "z"), out, sizeof out), VG_EINVAL);
    assert_int_equal(vg_mp_text(NULL, out, sizeof out), VG_EINVAL);
}

/* ---- linear time on adversarial input ---- */

static char *repeat(const char *head, const char *unit, size_t times, const char *tail, size_t *n)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *b = malloc(hl + ul * times + tl);
    assert_non_null(b);
    memcpy(b, head, hl);
    for (size_t i = 0; i < times; i++)
        memcpy(b + hl + i * ul, unit, ul);
    memcpy(b + hl + ul * times, tail, tl);
    *n = hl + ul * times + tl;
    return b;
}

/* ASan's and TSan's memmem interceptors check the whole remaining
 * haystack on every call, which makes the sanitizer builds (not the
 * parser) quadratic here; TSan's is also slower per byte. */
#if defined(__SANITIZE_THREAD__)
#define ADV_BYTES (256u << 10)
#define ADV_PARTS 4000
#elif defined(__SANITIZE_ADDRESS__)
#define ADV_BYTES (1u << 20)
#else
#define ADV_BYTES (8u << 20)
#endif
#ifndef ADV_PARTS
#define ADV_PARTS 20000
#endif

/* Megabytes of near-delimiters of several shapes; each must parse (or
 * fail) well within a second: quadratic scanning would take minutes. */
static void adversarial_linear(void **state)
{
#define B35 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    /* prefixes of the delimiter, the whole delimiter followed by a byte
     * that makes it data, padding that never ends in a line end */
    const char *units[] = {"\r\n--", "\r\n--b", "\n--bb ", "\r\n--" B35 "x", "\n--" B35 " \t x",
                           "\r\n--" B35 "-", "--", "\n"};
    const char *head = "--" B35 "\r\nContent-Disposition: form-data; name=f\r\n\r\n";
    for (size_t u = 0; u < VG_ARRAY_LEN(units); u++) {
        size_t n, times = ADV_BYTES / strlen(units[u]);
        char *b = repeat(head, units[u], times, "", &n);
        uint64_t t0 = vg_mono_ns();
        assert_int_equal(parse_n(b, n, B35), VG_EINVAL);
        assert_string_equal(err, "multipart: no closing boundary");
        assert_true(vg_mono_ns() - t0 < 2000000000ull);
        free(b);
    }
    /* Many tiny parts: work per part is constant. */
    size_t n;
    enum { MANY = ADV_PARTS };
    char *b = repeat("", "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n", MANY, "--b--",
                     &n);
    vg_mp_part *many = malloc(MANY * sizeof *many);
    assert_non_null(many);
    uint64_t t0 = vg_mono_ns();
    assert_int_equal(vg_mp_parse(b, n, "b", many, MANY, &np, err, sizeof err), VG_OK);
    assert_int_equal(np, MANY);
    assert_true(vg_mono_ns() - t0 < 2000000000ull);
    free(many);
    free(b);
    /* Header blocks made of empty-looking lines never get past the limit. */
    b = repeat("--b\r\n", "x:\r\n", 1u << 20, "", &n);
    assert_int_equal(parse_n(b, n, "b"), VG_EINVAL);
    assert_string_equal(err, "multipart: part 1 header block is over 8192 bytes");
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(boundary_token_and_quoted),
        cmocka_unit_test(boundary_other_params),
        cmocka_unit_test(boundary_rejects),
        cmocka_unit_test(boundary_length),
        cmocka_unit_test(curl_form),
        cmocka_unit_test(sdk_form_repeated_fields),
        cmocka_unit_test(preamble_epilogue),
        cmocka_unit_test(zero_parts),
        cmocka_unit_test(empty_parts),
        cmocka_unit_test(binary_lookalikes),
        cmocka_unit_test(transport_padding),
        cmocka_unit_test(bare_lf),
        cmocka_unit_test(empty_without_crlf),
        cmocka_unit_test(header_names_case_and_others),
        cmocka_unit_test(quoted_escapes),
        cmocka_unit_test(utf8_names),
        cmocka_unit_test(empty_filename),
        cmocka_unit_test(filename_star),
        cmocka_unit_test(name_limits),
        cmocka_unit_test(filename_limits),
        cmocka_unit_test(ctype_limit),
        cmocka_unit_test(header_block_limit),
        cmocka_unit_test(too_many_parts),
        cmocka_unit_test(no_closing_boundary),
        cmocka_unit_test(no_boundary_at_all),
        cmocka_unit_test(unterminated_headers),
        cmocka_unit_test(missing_name),
        cmocka_unit_test(bad_disposition),
        cmocka_unit_test(duplicates),
        cmocka_unit_test(malformed_header_line),
        cmocka_unit_test(nul_in_name),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(short_err_buffer),
        cmocka_unit_test(text_fields),
        cmocka_unit_test(adversarial_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
