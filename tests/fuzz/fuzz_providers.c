/* libFuzzer target: what a provider answers is untrusted. Every remote
 * provider's parse step gets arbitrary bodies under arbitrary statuses,
 * content types and Retry-After values, for TTS and for each STT
 * response format. It must never crash, and what it calls a success must
 * keep provider.h's contract: audio with a media type, or one JSON object
 * with a string "text". */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "voxgate/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct kind {
    int (*make)(const vg_provider_conf *c, vg_engine *e, vg_provider **out, char *err,
                size_t errlen);
    vg_remote_parse_fn parse;
} kind;

static const kind kinds[] = {
    {vg_provider_openai_new, vg_openai_parse},
    {vg_provider_deepgram_new, vg_deepgram_parse},
    {vg_provider_elevenlabs_new, vg_elevenlabs_parse},
    {vg_provider_yandex_new, vg_yandex_parse},
};
static vg_provider_conf confs[4];
static vg_provider *provs[4];

static void init(void)
{
    setenv("VG_FUZZ_KEY", "fuzz-key", 1);
    for (size_t i = 0; i < 4; i++) {
        vg_provider_conf *c = &confs[i];
        snprintf(c->name, sizeof c->name, "p%zu", i);
        snprintf(c->api_key_env, sizeof c->api_key_env, "VG_FUZZ_KEY");
        c->cooldown_max_ms = 120000;
        c->max_response_bytes = 1u << 20;
        char err[256];
        if (kinds[i].make(c, NULL, &provs[i], err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_providers: %s\n", err);
            abort();
        }
    }
}

static const long statuses[] = {200, 201, 204, 400, 401, 402, 403, 404, 408, 409, 413,
                                415, 422, 429, 500, 501, 502, 503, 504, 599};
static const char *const ctypes[] = {"application/json", "audio/mpeg", "audio/wav", "text/plain",
                                     "text/vtt", "", "application/json; charset=utf-8",
                                     "audio/ogg;codecs=opus"};
static const char *const formats[] = {"json", "text", "srt", "verbose_json", "vtt"};

static void check_contract(const vg_job *job, const vg_presult *res)
{
    if (res->status != VG_PR_OK)
        return;
    if (job->kind == VG_KIND_TTS) {
        if (!res->body.len || !res->content_type[0])
            abort();
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(res->body.data ? res->body.data : "", res->body.len);
    if (!cJSON_IsObject(doc) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "text")))
        abort();
    cJSON_Delete(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size < 4)
        return 0;
    size_t which = data[0] % 4;
    vg_job job = {.request_id = "fuzz", .timeout_ms = 1000};
    static const char wav[] = "RIFF";
    if (data[2] & 1) {
        job.kind = VG_KIND_TTS;
        job.tts = (vg_tts_job){.text = "hello", .text_len = 5, .voice = "alloy", .language = "",
                               .model = "", .format = (data[2] & 2) ? "mp3" : "pcm", .speed = 1.0,
                               .instructions = ""};
    } else {
        job.kind = VG_KIND_STT;
        job.stt = (vg_stt_job){.audio = wav, .audio_len = 4, .audio_type = "audio/wav",
                               .filename = "a.wav", .language = "", .model = "", .prompt = "",
                               .response_format = formats[(data[2] >> 1) % 5],
                               .granularities = (data[2] & 0x40) ? "segment,word" : ""};
    }
    vg_http_call c = {0};
    c.http_status = statuses[data[1] % VG_ARRAY_LEN(statuses)];
    snprintf(c.content_type, sizeof c.content_type, "%s", ctypes[data[3] % VG_ARRAY_LEN(ctypes)]);
    if (data[3] & 0x80)
        snprintf(c.retry_after, sizeof c.retry_after, "%u.%u", data[1], data[2]);
    if (vg_buf_append(&c.resp_body, data + 4, size - 4) != VG_OK)
        return 0;
    vg_presult res;
    vg_remote_result(provs[which], &job, &c, kinds[which].parse, &res);
    check_contract(&job, &res);
    vg_presult_free(&res);
    vg_buf_free(&c.resp_body);
    return 0;
}
