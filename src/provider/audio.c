/* Audio for the local provider: sniff a container from its magic bytes,
 * parse RIFF/WAVE uploads, convert them to the 16 kHz mono s16 that
 * pocketsphinx decodes, and write WAV headers for synthesised speech.
 * Everything here reads untrusted bytes: each read is checked against
 * the buffer's length before it happens, and output sizes are bounded
 * by the caller before anything is allocated. */
#include "voxgate/audio.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sniffing ---- */

static const vg_audio_type t_wav = {"wav", "audio/wav", "wav"};
static const vg_audio_type t_mp3 = {"mp3", "audio/mpeg", "mp3"};
static const vg_audio_type t_aac = {"aac", "audio/aac", "aac"};
static const vg_audio_type t_ogg = {"ogg", "audio/ogg", "ogg"};
static const vg_audio_type t_opus = {"opus", "audio/ogg;codecs=opus", "opus"};
static const vg_audio_type t_flac = {"flac", "audio/flac", "flac"};
static const vg_audio_type t_mp4 = {"mp4", "audio/mp4", "m4a"};
static const vg_audio_type t_webm = {"webm", "audio/webm", "webm"};

/* An MPEG audio frame header: sync, then no reserved version, layer,
 * bitrate or rate index, which rejects most random 0xFFEx pairs. ADTS
 * (AAC) shares the sync but has layer 00. */
static const vg_audio_type *sniff_frame_sync(const uint8_t *p, size_t len)
{
    if (len < 4 || p[0] != 0xFF || (p[1] & 0xE0) != 0xE0)
        return NULL;
    unsigned version = (p[1] >> 3) & 3, layer = (p[1] >> 1) & 3;
    if (layer == 0)
        return (p[1] & 0xF6) == 0xF0 ? &t_aac : NULL;
    unsigned bitrate = p[2] >> 4, srate = (p[2] >> 2) & 3;
    if (version == 1 || bitrate == 15 || srate == 3)
        return NULL;
    return &t_mp3;
}

const vg_audio_type *vg_audio_sniff(const void *data, size_t len)
{
    const uint8_t *p = data;
    if (!p || len < 4)
        return NULL;
    if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WAVE", 4))
        return &t_wav;
    if (len >= 10 && !memcmp(p, "ID3", 3))
        return &t_mp3;
    if (!memcmp(p, "OggS", 4))
        return len >= 36 && !memcmp(p + 28, "OpusHead", 8) ? &t_opus : &t_ogg;
    if (!memcmp(p, "fLaC", 4))
        return &t_flac;
    if (len >= 12 && !memcmp(p + 4, "ftyp", 4))
        return &t_mp4;
    if (!memcmp(p, "\x1A\x45\xDF\xA3", 4))
        return &t_webm;
    return sniff_frame_sync(p, len);
}

/* ---- WAV parsing ---- */

#define WAVE_FORMAT_PCM 1
#define WAVE_FORMAT_IEEE_FLOAT 3
#define WAVE_FORMAT_EXTENSIBLE 0xFFFE

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return VG_EINVAL;
}

/* The tail of the KSDATAFORMAT_SUBTYPE GUIDs (PCM and IEEE float differ
 * only in the first two bytes). */
static const uint8_t ks_guid_tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                         0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};

static int parse_fmt(const uint8_t *p, size_t n, vg_wav *w, char *err, size_t errlen)
{
    if (n < 16)
        return fail(err, errlen, "wav: fmt chunk too short");
    unsigned tag = rd16(p);
    w->channels = rd16(p + 2);
    w->rate = rd32(p + 4);
    w->block_align = rd16(p + 12);
    w->bits = rd16(p + 14);
    if (tag == WAVE_FORMAT_EXTENSIBLE) {
        if (n < 40 || rd16(p + 16) < 22)
            return fail(err, errlen, "wav: extensible fmt chunk too short");
        if (memcmp(p + 26, ks_guid_tail, sizeof ks_guid_tail))
            return fail(err, errlen, "wav: unsupported extensible sub-format");
        tag = rd16(p + 24);
    }
    if (tag != WAVE_FORMAT_PCM && tag != WAVE_FORMAT_IEEE_FLOAT)
        return fail(err, errlen, "wav: only PCM and IEEE float encodings are supported");
    w->is_float = tag == WAVE_FORMAT_IEEE_FLOAT;
    bool ok_bits = w->is_float ? (w->bits == 32 || w->bits == 64)
                               : (w->bits == 8 || w->bits == 16 || w->bits == 24 || w->bits == 32);
    if (!ok_bits)
        return fail(err, errlen, "wav: unsupported sample size");
    if (w->channels < 1 || w->channels > VG_WAV_MAX_CHANNELS)
        return fail(err, errlen, "wav: 1 to 8 channels are supported");
    if (w->rate < VG_WAV_MIN_RATE || w->rate > VG_WAV_MAX_RATE)
        return fail(err, errlen, "wav: sample rate out of range (1000..384000)");
    if (w->block_align != w->channels * (w->bits / 8))
        return fail(err, errlen, "wav: block align does not match channels and sample size");
    return VG_OK;
}

/* Walks the chunks after "RIFF....WAVE". The RIFF size is ignored: many
 * writers get it wrong, and the buffer's length is the real bound. */
int vg_wav_parse(const void *buf, size_t len, vg_wav *out, char *err, size_t errlen)
{
    const uint8_t *p = buf;
    vg_wav w = {0};
    bool have_fmt = false;
    if (!p || len < 12 || memcmp(p, "RIFF", 4) || memcmp(p + 8, "WAVE", 4))
        return fail(err, errlen, "not a RIFF/WAVE file");
    size_t off = 12;
    while (len - off >= 8) {
        const uint8_t *id = p + off;
        uint32_t size = rd32(p + off + 4);
        size_t avail = len - off - 8;
        off += 8;
        if (!memcmp(id, "data", 4)) {
            if (!have_fmt)
                return fail(err, errlen, "wav: data chunk before fmt chunk");
            /* Streaming writers leave the size unknown: to the end. */
            size_t dlen = size == 0xFFFFFFFFu ? avail : size;
            if (dlen > avail)
                return fail(err, errlen, "wav: data chunk truncated");
            w.data = p + off;
            w.frames = dlen / w.block_align;
            *out = w;
            return VG_OK;
        }
        if (size > avail)
            return fail(err, errlen, "wav: chunk truncated");
        if (!memcmp(id, "fmt ", 4)) {
            int rc = parse_fmt(p + off, size, &w, err, errlen);
            if (rc != VG_OK)
                return rc;
            have_fmt = true;
        }
        /* Odd-sized chunks are followed by a pad byte (which a file may
         * omit at its very end). */
        off += size;
        if ((size & 1) && off < len)
            off++;
    }
    return fail(err, errlen, have_fmt ? "wav: no data chunk" : "wav: no fmt chunk");
}

uint64_t vg_wav_duration_ms(const vg_wav *w)
{
    return w->rate ? (uint64_t)w->frames * 1000u / w->rate : 0;
}

/* ---- decoding ---- */

static float sample_at(const vg_wav *w, const uint8_t *s)
{
    switch (w->bits) {
    case 8:
        return ((int)s[0] - 128) / 128.0f;
    case 16:
        return (int16_t)rd16(s) / 32768.0f;
    case 24: {
        int32_t v = (int32_t)((uint32_t)s[0] << 8 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 24);
        return (float)(v / 2147483648.0);
    }
    case 32:
        if (w->is_float) {
            float f;
            uint32_t u = rd32(s);
            memcpy(&f, &u, sizeof f);
            return f;
        }
        return (float)((int32_t)rd32(s) / 2147483648.0);
    default: { /* 64-bit float */
        uint64_t u = (uint64_t)rd32(s) | (uint64_t)rd32(s + 4) << 32;
        double d;
        memcpy(&d, &u, sizeof d);
        return (float)d;
    }
    }
}

/* Uploaded floats may hold NaN, infinities or values past full scale:
 * clamp so the resampler and the s16 conversion stay defined. */
static float sane(float f)
{
    if (!(f == f))
        return 0.0f;
    return f > 1.0f ? 1.0f : f < -1.0f ? -1.0f : f;
}

static float *downmix(const vg_wav *w)
{
    float *m = malloc((w->frames ? w->frames : 1) * sizeof *m);
    if (!m)
        return NULL;
    size_t bps = w->bits / 8;
    for (size_t i = 0; i < w->frames; i++) {
        const uint8_t *f = w->data + i * w->block_align;
        float acc = 0.0f;
        for (unsigned c = 0; c < w->channels; c++)
            acc += sane(sample_at(w, f + c * bps));
        m[i] = acc / (float)w->channels;
    }
    return m;
}

static int16_t to_s16(float f)
{
    float v = sane(f) * 32767.0f;
    return (int16_t)lrintf(v);
}

/* ---- resampling ---- */

/* The kernel is tabulated once per call over ZC zero crossings with TAB
 * points per crossing and read with linear interpolation: computing sin
 * for every tap would cost ~90 trig calls per output sample. */
#define ZC 16
#define TAB 512

static float *kernel_table(void)
{
    float *t = malloc((ZC * TAB + 2) * sizeof *t);
    if (!t)
        return NULL;
    for (int i = 0; i <= ZC * TAB; i++) {
        double x = (double)i / TAB; /* in zero crossings */
        double sinc = i == 0 ? 1.0 : sin(M_PI * x) / (M_PI * x);
        double r = x / ZC;          /* 0..1 across the half window */
        double win = 0.42 + 0.5 * cos(M_PI * r) + 0.08 * cos(2 * M_PI * r);
        t[i] = (float)(sinc * win);
    }
    t[ZC * TAB + 1] = 0.0f;
    return t;
}

static float kernel_at(const float *t, double x)
{
    x = fabs(x) * TAB;
    if (x >= ZC * TAB)
        return 0.0f;
    size_t i = (size_t)x;
    float fr = (float)(x - (double)i);
    return t[i] + (t[i + 1] - t[i]) * fr;
}

/* One output sample at input position pos (in input samples). fc is the
 * cutoff as a fraction of the input Nyquist; the kernel widens by 1/fc. */
static float interp(const float *in, size_t n, const float *tab, double pos, double fc)
{
    double half = ZC / fc;
    long lo = (long)ceil(pos - half), hi = (long)floor(pos + half);
    if (lo < 0)
        lo = 0;
    if (hi > (long)n - 1)
        hi = (long)n - 1;
    double acc = 0.0;
    for (long k = lo; k <= hi; k++)
        acc += in[k] * kernel_at(tab, (pos - (double)k) * fc);
    return (float)(acc * fc);
}

int vg_resample(const float *in, size_t n, uint32_t from, uint32_t to, size_t max_out,
                float **out, size_t *outn)
{
    if (!out || !outn || (!in && n) || !from || !to)
        return VG_EINVAL;
    uint64_t m = ((uint64_t)n * to + from - 1) / from;
    if (m > max_out || m > SIZE_MAX / sizeof(float))
        return VG_ETOOBIG;
    float *o = malloc((m ? m : 1) * sizeof *o);
    if (!o)
        return VG_ENOMEM;
    if (from == to) {
        if (n)
            memcpy(o, in, n * sizeof *o);
    } else {
        float *tab = kernel_table();
        if (!tab) {
            free(o);
            return VG_ENOMEM;
        }
        /* Cut off a little below the lower Nyquist so the transition band
         * of the finite kernel stays out of the aliasing region. */
        double fc = (to < from ? (double)to / from : 1.0) * 0.95;
        for (uint64_t i = 0; i < m; i++) {
            /* Exact rational position: no drift over hours of audio. */
            uint64_t num = i * from;
            double pos = (double)(num / to) + (double)(num % to) / to;
            o[i] = interp(in, n, tab, pos, fc);
        }
        free(tab);
    }
    *out = o;
    *outn = (size_t)m;
    return VG_OK;
}

int vg_wav_to_mono_s16(const vg_wav *w, uint32_t rate, size_t max_samples, int16_t **out,
                       size_t *n)
{
    if (!w || !out || !n || !rate || !w->rate || !w->channels || !w->block_align)
        return VG_EINVAL;
    uint64_t m = ((uint64_t)w->frames * rate + w->rate - 1) / w->rate;
    if (m > max_samples)
        return VG_ETOOBIG;
    float *mono = downmix(w);
    if (!mono)
        return VG_ENOMEM;
    float *rs = NULL;
    size_t rn = 0;
    int rc = vg_resample(mono, w->frames, w->rate, rate, max_samples, &rs, &rn);
    free(mono);
    if (rc != VG_OK)
        return rc;
    int16_t *s = malloc((rn ? rn : 1) * sizeof *s);
    if (!s) {
        free(rs);
        return VG_ENOMEM;
    }
    for (size_t i = 0; i < rn; i++)
        s[i] = to_s16(rs[i]);
    free(rs);
    *out = s;
    *n = rn;
    return VG_OK;
}

/* ---- writing ---- */

static void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void vg_wav_header_s16(uint8_t h[VG_WAV_HEADER_LEN], uint32_t rate, size_t samples)
{
    /* Sizes saturate rather than wrap for data past 4 GiB (never made
     * here: TTS output is bounded far below). */
    uint64_t bytes = (uint64_t)samples * 2;
    uint32_t data = bytes > 0xFFFFFFFFu - 36 ? 0xFFFFFFFFu - 36 : (uint32_t)bytes;
    memcpy(h, "RIFF", 4);
    wr32(h + 4, 36 + data);
    memcpy(h + 8, "WAVEfmt ", 8);
    wr32(h + 16, 16);
    wr16(h + 20, WAVE_FORMAT_PCM);
    wr16(h + 22, 1);
    wr32(h + 24, rate);
    wr32(h + 28, rate * 2);
    wr16(h + 32, 2);
    wr16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    wr32(h + 40, data);
}

int vg_pcm_append_s16(vg_buf *out, const int16_t *pcm, size_t samples)
{
    if (samples > SIZE_MAX / 2 || vg_buf_reserve(out, samples * 2) != VG_OK)
        return VG_ENOMEM;
    uint8_t *d = (uint8_t *)out->data + out->len;
    for (size_t i = 0; i < samples; i++)
        wr16(d + 2 * i, (uint16_t)pcm[i]);
    out->len += samples * 2;
    out->data[out->len] = '\0';
    return VG_OK;
}

int vg_wav_append_s16(vg_buf *out, const int16_t *pcm, size_t samples, uint32_t rate)
{
    uint8_t h[VG_WAV_HEADER_LEN];
    vg_wav_header_s16(h, rate, samples);
    if (vg_buf_append(out, h, sizeof h) != VG_OK)
        return VG_ENOMEM;
    return vg_pcm_append_s16(out, pcm, samples);
}
