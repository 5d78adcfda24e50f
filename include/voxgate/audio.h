/* Audio helpers for untrusted uploads: container sniffing, WAV parsing,
 * conversion to 16 kHz mono s16 (what pocketsphinx wants) and WAV
 * writing. Pure functions, no I/O; every length is bounded by the input. */
#ifndef VOXGATE_AUDIO_H
#define VOXGATE_AUDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "voxgate/util.h"

/* A recognised container: short name ("wav", "mp3", "ogg", "opus", "flac",
 * "mp4", "webm", "aac"), its media type and a file extension. */
typedef struct vg_audio_type {
    const char *name;
    const char *media_type;
    const char *ext;
} vg_audio_type;

/* The container of data from its first bytes, NULL when it is not audio
 * voxgate knows (or too short to tell). Static storage. */
const vg_audio_type *vg_audio_sniff(const void *data, size_t len);

/* Bounds on what vg_wav_parse accepts. */
#define VG_WAV_MIN_RATE 1000u
#define VG_WAV_MAX_RATE 384000u
#define VG_WAV_MAX_CHANNELS 8u

/* A parsed WAV file; data points into the caller's buffer. */
typedef struct vg_wav {
    uint32_t rate;
    uint16_t channels;
    uint16_t bits;          /* container bits per sample: 8, 16, 24, 32 or 64 (float) */
    bool is_float;          /* IEEE float (32 or 64 bits) rather than integer PCM */
    uint16_t block_align;   /* bytes per frame */
    const uint8_t *data;    /* first frame */
    size_t frames;          /* whole frames in the data chunk */
} vg_wav;

/* Parses a RIFF/WAVE file: chunks in any order, odd sizes padded, a data
 * size of 0xFFFFFFFF (what streaming writers leave) runs to the end of
 * the buffer; a data chunk longer than the buffer is an error. PCM 8/16/24/32-bit
 * integer, 32/64-bit float, WAVE_FORMAT_EXTENSIBLE of either.
 * VG_OK, or VG_EINVAL with a message (not WAV, truncated, unsupported
 * encoding, ...). */
int vg_wav_parse(const void *buf, size_t len, vg_wav *out, char *err, size_t errlen);

/* Length of w in milliseconds. */
uint64_t vg_wav_duration_ms(const vg_wav *w);

/* Decodes w, downmixes to mono (mean of the channels) and resamples to
 * rate. *out is malloc'd (free it), *n its sample count. VG_ETOOBIG when
 * the result would pass max_samples, VG_ENOMEM, VG_EINVAL on bad args. */
int vg_wav_to_mono_s16(const vg_wav *w, uint32_t rate, size_t max_samples, int16_t **out,
                       size_t *n);

/* Resamples mono float samples from one rate to another with a
 * windowed-sinc (Blackman-windowed, 16 zero crossings each side, cutoff
 * at the lower Nyquist so decimation does not alias). *out is malloc'd;
 * its length is ceil(n * to / from). VG_OK, VG_ENOMEM, VG_EINVAL,
 * VG_ETOOBIG past max_out samples. */
int vg_resample(const float *in, size_t n, uint32_t from, uint32_t to, size_t max_out,
                float **out, size_t *outn);

/* The 44-byte canonical header of a WAV holding `samples` s16 mono
 * samples at rate. */
#define VG_WAV_HEADER_LEN 44
void vg_wav_header_s16(uint8_t hdr[VG_WAV_HEADER_LEN], uint32_t rate, size_t samples);

/* Appends a whole WAV file (header + little-endian samples) to out. */
int vg_wav_append_s16(vg_buf *out, const int16_t *pcm, size_t samples, uint32_t rate);

/* Appends raw s16le samples to out (the "pcm" format). */
int vg_pcm_append_s16(vg_buf *out, const int16_t *pcm, size_t samples);

#endif
