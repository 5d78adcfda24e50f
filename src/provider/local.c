/* The offline "local" provider: TTS with Flite (English voices slt, awb,
 * rms, kal) and espeak-ng (every other language), STT with pocketsphinx
 * (US English). Nothing here touches the network.
 *
 * Threads. None of the three engines may be entered from two threads at
 * once, so each has its own queue and worker:
 * - Flite: one worker. register_cmu_us_*() hands out one process-wide
 *   voice, and synthesis takes references to values the voice shares
 *   (cst_val reference counts are plain ints), so two threads on one
 *   voice race; one thread is plenty (a sentence takes ~30 ms).
 * - espeak-ng: one worker; its state is global (AUDIO_OUTPUT_SYNCHRONOUS,
 *   one synthesis at a time), guarded by es_mu for every call.
 * - pocketsphinx: one worker owning the decoder, created on the first STT
 *   job (the en-us model takes ~100 MB; idle memory stays small).
 * Queues hold at most max(1, conf->max_concurrency) jobs each (queued or
 * running); past that start() returns VG_ETOOBIG and never calls done,
 * so the gateway moves on to the next provider. done() always runs on a
 * worker; destroy() fails queued jobs with VG_PR_INTERNAL "shutting down"
 * (still on the workers) and joins them.
 *
 * The engines' libraries are dlopen'ed on first use (see "loaded on first
 * use" below); the pocketsphinx model is read from VG_PS_MODELDIR/en-us,
 * found by meson from pocketsphinx.pc (Debian: /usr/share/pocketsphinx/model). */
#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <espeak-ng/speak_lib.h>
#include <flite/flite.h>
#include <pocketsphinx.h>

#include "vg_local_model.h"
#include "voxgate/audio.h"
#include "voxgate/keys.h"
#include "voxgate/provider.h"

#define STT_RATE 16000u
#define STT_MAX_S 600u            /* longer uploads are refused by check() */
#define TTS_MAX_S 1800u           /* bound on synthesised audio */
#define FRAMES_PER_S 100          /* pocketsphinx frame rate */
#define SEG_GAP_FRAMES 50         /* a pause this long starts a new cue */
#define FLITE_SEED 4u

/* Flite voices: each is its own library exporting register_<name>(). */
typedef struct flite_def {
    const char *id;
    const char *name;
    const char *lib;
    const char *reg;
} flite_def;

static const flite_def flite_defs[] = {
    {"slt", "CMU US SLT (female)", "libflite_cmu_us_slt.so.1", "register_cmu_us_slt"},
    {"awb", "CMU US AWB (male, Scottish accent)", "libflite_cmu_us_awb.so.1",
     "register_cmu_us_awb"},
    {"rms", "CMU US RMS (male)", "libflite_cmu_us_rms.so.1", "register_cmu_us_rms"},
    {"kal", "CMU US KAL (male, 8 kHz)", "libflite_cmu_us_kal.so.1", "register_cmu_us_kal"},
};
#define N_FLITE VG_ARRAY_LEN(flite_defs)

/* ---- process-wide engine state ---- */

typedef struct es_voice {
    char id[VG_IDENT_MAX + 1];    /* primary language code: "de", "en-gb" */
    char name[96];
    char ident[128];              /* espeak's file identifier: "gmw/de" */
} es_voice;

static pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;
static cst_voice *fl_voices[N_FLITE];

static pthread_mutex_t es_mu = PTHREAD_MUTEX_INITIALIZER;
static bool es_tried;             /* espeak_Initialize was attempted */
static int es_rate;               /* its sample rate; <= 0 = unavailable */
static es_voice *es_list;
static size_t es_n;
static int es_users;              /* live providers; the last one terminates espeak */
static vg_buf *es_sink;           /* the job's PCM while es_mu is held */
static size_t es_sink_max;

/* ---- the engines' libraries, loaded on first use ----
 *
 * Linked normally, Flite's voices, espeak-ng (with libpcaudio's ALSA and
 * PulseAudio chain) and sphinxbase (with LAPACK and libgfortran) add about
 * 12 MiB to idle RSS: the loader relocates and touches their data pages at
 * start, used or not. Loaded with dlopen when a job first needs them, an
 * idle voxgate stays within SPEC section 7's 10 MiB. They stay loaded. */

typedef struct sym {
    const char *name;
    void **slot;
} sym;

/* The handle is never closed: the voices and tables these libraries hand
 * out live in them, and a load is never retried. */
static bool load_syms(const char *soname, const sym *syms, size_t n)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name)))
            return false;
    return true;
}

#define SYM(tab, fn) {#fn, (void **)&tab.fn}

static struct {
    __typeof__(flite_init) *flite_init;
    __typeof__(new_utterance) *new_utterance;
    __typeof__(utt_set_input_text) *utt_set_input_text;
    __typeof__(utt_init) *utt_init;
    __typeof__(feat_set_float) *feat_set_float;
    __typeof__(flite_do_synth) *flite_do_synth;
    __typeof__(utt_synth) *utt_synth;
    __typeof__(utt_wave) *utt_wave;
    __typeof__(delete_utterance) *delete_utterance;
} FL;

static const sym fl_syms[] = {
    SYM(FL, flite_init), SYM(FL, new_utterance), SYM(FL, utt_set_input_text),
    SYM(FL, utt_init), SYM(FL, feat_set_float), SYM(FL, flite_do_synth), SYM(FL, utt_synth),
    SYM(FL, utt_wave), SYM(FL, delete_utterance),
};

static struct {
    __typeof__(espeak_Initialize) *espeak_Initialize;
    __typeof__(espeak_SetSynthCallback) *espeak_SetSynthCallback;
    __typeof__(espeak_ListVoices) *espeak_ListVoices;
    __typeof__(espeak_SetVoiceByName) *espeak_SetVoiceByName;
    __typeof__(espeak_SetParameter) *espeak_SetParameter;
    __typeof__(espeak_Synth) *espeak_Synth;
    __typeof__(espeak_Terminate) *espeak_Terminate;
} ES;

static const sym es_syms[] = {
    SYM(ES, espeak_Initialize), SYM(ES, espeak_SetSynthCallback), SYM(ES, espeak_ListVoices),
    SYM(ES, espeak_SetVoiceByName), SYM(ES, espeak_SetParameter), SYM(ES, espeak_Synth),
    SYM(ES, espeak_Terminate),
};

static struct {
    __typeof__(cmd_ln_init) *cmd_ln_init;
    __typeof__(cmd_ln_free_r) *cmd_ln_free_r;
    __typeof__(ps_args) *ps_args;
    __typeof__(ps_init) *ps_init;
    __typeof__(ps_free) *ps_free;
    __typeof__(ps_start_utt) *ps_start_utt;
    __typeof__(ps_process_raw) *ps_process_raw;
    __typeof__(ps_end_utt) *ps_end_utt;
    __typeof__(ps_seg_iter) *ps_seg_iter;
    __typeof__(ps_seg_next) *ps_seg_next;
    __typeof__(ps_seg_frames) *ps_seg_frames;
    __typeof__(ps_seg_word) *ps_seg_word;
    __typeof__(ps_seg_free) *ps_seg_free;
} PS;

/* cmd_ln_* live in libsphinxbase, which libpocketsphinx loads. */
static const sym ps_syms[] = {
    SYM(PS, cmd_ln_init), SYM(PS, cmd_ln_free_r), SYM(PS, ps_args), SYM(PS, ps_init),
    SYM(PS, ps_free), SYM(PS, ps_start_utt), SYM(PS, ps_process_raw), SYM(PS, ps_end_utt),
    SYM(PS, ps_seg_iter), SYM(PS, ps_seg_next), SYM(PS, ps_seg_frames), SYM(PS, ps_seg_word),
    SYM(PS, ps_seg_free),
};

static pthread_mutex_t ps_mu = PTHREAD_MUTEX_INITIALIZER;

static bool ps_load(void)
{
    static int state; /* 0 untried, 1 loaded, -1 failed */
    pthread_mutex_lock(&ps_mu);
    if (!state)
        state = load_syms("libpocketsphinx.so.3", ps_syms, VG_ARRAY_LEN(ps_syms)) ? 1 : -1;
    bool ok = state > 0;
    pthread_mutex_unlock(&ps_mu);
    return ok;
}

/* ---- jobs and queues ---- */

typedef enum { ENG_FLITE, ENG_ESPEAK, ENG_STT } eng_kind;

typedef struct ljob {
    struct ljob *next;
    const vg_job *job;
    vg_provider_done done;
    void *ud;
    int voice;                    /* index in flite_defs or es_list */
    bool pcm;                     /* TTS: raw s16le instead of WAV */
    uint64_t enq_ns;
} ljob;

struct vg_local;
typedef struct lqueue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ljob *head, *tail;
    size_t n, max;                /* queued + running */
    bool stop, started;
    pthread_t th;
    struct vg_local *lp;
    void (*run)(struct vg_local *lp, ljob *j, vg_presult *res);
} lqueue;

typedef struct vg_local {
    vg_provider base;
    lqueue q[3];                  /* by eng_kind */
    ps_decoder_t *ps;             /* the STT worker's only */
    cmd_ln_t *ps_conf;
} vg_local;

/* ---- small helpers ---- */

static void set_err(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* Language tags compare case-insensitively with '_' read as '-'. */
static void norm_lang(const char *in, char out[VG_IDENT_MAX + 1])
{
    size_t i = 0;
    for (; in[i] && i < VG_IDENT_MAX; i++)
        out[i] = in[i] == '_' ? '-' : (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

static bool lang_is_english(const char *lang)
{
    char l[VG_IDENT_MAX + 1];
    norm_lang(lang, l);
    return !l[0] || !strcmp(l, "en") || !strncmp(l, "en-", 3);
}

static int flite_find(const char *voice)
{
    for (size_t i = 0; i < N_FLITE; i++)
        if (!strcmp(flite_defs[i].id, voice))
            return (int)i;
    return -1;
}

/* ---- espeak-ng setup (lazy, once per process) ---- */

/* espeak lists each voice's languages as (priority byte, NUL-terminated
 * name) pairs; the first is the voice's own. */
static void es_add_voice(const espeak_VOICE *v)
{
    const char *lang = v->languages ? v->languages + 1 : "";
    char id[VG_IDENT_MAX + 1];
    norm_lang(lang, id);
    if (!vg_ident_valid(id) || flite_find(id) >= 0 || !v->identifier)
        return;
    for (size_t i = 0; i < es_n; i++)
        if (!strcmp(es_list[i].id, id))
            return;
    es_voice *e = &es_list[es_n++];
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->name, sizeof e->name, "%s", v->name ? v->name : id);
    snprintf(e->ident, sizeof e->ident, "%s", v->identifier);
}

static int es_on_audio(short *wav, int n, espeak_EVENT *ev)
{
    VG_UNUSED(ev);
    if (!wav || n <= 0 || !es_sink)
        return 0;
    if ((es_sink->len / 2) + (size_t)n > es_sink_max)
        return 1; /* stop: past the output bound */
    return vg_buf_append(es_sink, wav, (size_t)n * 2) == VG_OK ? 0 : 1;
}

/* Called with es_mu held. */
static bool es_ensure_locked(void)
{
    if (es_tried)
        return es_rate > 0;
    es_tried = true;
    static int loaded; /* 0 untried, 1 loaded, -1 failed */
    if (!loaded)
        loaded = load_syms("libespeak-ng.so.1", es_syms, VG_ARRAY_LEN(es_syms)) ? 1 : -1;
    if (loaded < 0)
        return false;
    es_rate = ES.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, NULL, espeakINITIALIZE_DONT_EXIT);
    if (es_rate <= 0)
        return false;
    ES.espeak_SetSynthCallback(es_on_audio);
    const espeak_VOICE **vs = ES.espeak_ListVoices(NULL);
    size_t n = 0;
    while (vs && vs[n])
        n++;
    es_list = calloc(n ? n : 1, sizeof *es_list);
    if (!es_list) {
        ES.espeak_Terminate();
        es_rate = 0;
        return false;
    }
    for (size_t i = 0; i < n; i++)
        es_add_voice(vs[i]);
    return true;
}

static bool es_ensure(void)
{
    pthread_mutex_lock(&es_mu);
    bool ok = es_ensure_locked();
    pthread_mutex_unlock(&es_mu);
    return ok;
}

/* The list never changes once built, so readers need no lock after
 * es_ensure returned true. */
static int es_find_voice(const char *voice)
{
    for (size_t i = 0; i < es_n; i++)
        if (!strcmp(es_list[i].id, voice))
            return (int)i;
    return -1;
}

/* Exact code, then the primary subtag ("de-at" -> "de"), then the
 * language's home variant ("fr" -> "fr-fr"), then its first voice. */
static int es_find_lang(const char *language)
{
    char l[VG_IDENT_MAX + 1];
    norm_lang(language, l);
    int i = es_find_voice(l);
    if (i >= 0)
        return i;
    char *dash = strchr(l, '-');
    if (dash) {
        *dash = '\0';
        if ((i = es_find_voice(l)) >= 0)
            return i;
    }
    char ll_ll[2 * VG_IDENT_MAX + 2];
    snprintf(ll_ll, sizeof ll_ll, "%s-%s", l, l); /* "fr" -> "fr-fr" before "fr-be" */
    if ((i = es_find_voice(ll_ll)) >= 0)
        return i;
    size_t ll = strlen(l);
    for (size_t k = 0; k < es_n; k++)
        if (!strncmp(es_list[k].id, l, ll) && es_list[k].id[ll] == '-')
            return (int)k;
    return -1;
}

static void es_release(void)
{
    pthread_mutex_lock(&es_mu);
    if (--es_users == 0 && es_tried) {
        if (es_rate > 0)
            ES.espeak_Terminate();
        free(es_list);
        es_list = NULL;
        es_n = 0;
        es_rate = 0;
        es_tried = false;
    }
    pthread_mutex_unlock(&es_mu);
}

/* ---- Flite setup ---- */

/* Called with fl_mu held. */
static bool flite_load_locked(void)
{
    static int state; /* 0 untried, 1 loaded, -1 failed */
    if (!state) {
        state = load_syms("libflite.so.1", fl_syms, VG_ARRAY_LEN(fl_syms)) ? 1 : -1;
        if (state > 0)
            FL.flite_init();
    }
    return state > 0;
}

/* Registered once and kept: Flite hands out one voice per process. */
static cst_voice *flite_voice(int idx)
{
    pthread_mutex_lock(&fl_mu);
    if (!fl_voices[idx] && flite_load_locked()) {
        cst_voice *(*reg)(const char *) = NULL;
        const sym s = {flite_defs[idx].reg, (void **)&reg};
        if (load_syms(flite_defs[idx].lib, &s, 1))
            fl_voices[idx] = reg(NULL);
    }
    cst_voice *v = fl_voices[idx];
    pthread_mutex_unlock(&fl_mu);
    return v;
}

/* ---- resolving a job ---- */

typedef struct resolved {
    eng_kind eng;
    int voice;
    bool pcm;
} resolved;

static int tts_resolve(const vg_tts_job *t, resolved *r, char *code, size_t cl, char *msg,
                       size_t ml)
{
    if (strcmp(t->format, "wav") && strcmp(t->format, "pcm")) {
        set_err(code, cl, "unsupported_format");
        set_err(msg, ml, "the local provider does not produce '%.32s'; formats: wav, pcm",
                t->format);
        return VG_EINVAL;
    }
    r->pcm = !strcmp(t->format, "pcm");
    if (!lang_is_english(t->language) && (!es_ensure() || es_find_lang(t->language) < 0)) {
        set_err(code, cl, "unsupported_language");
        set_err(msg, ml,
                "the local provider has no voice for language '%.64s' (Flite speaks English; "
                "espeak-ng languages are listed by GET /v1/voices)", t->language);
        return VG_EINVAL;
    }
    if ((r->voice = flite_find(t->voice)) >= 0) {
        r->eng = ENG_FLITE;
        return VG_OK;
    }
    if (vg_ident_valid(t->voice) && es_ensure() && (r->voice = es_find_voice(t->voice)) >= 0) {
        r->eng = ENG_ESPEAK;
        return VG_OK;
    }
    set_err(code, cl, "unknown_voice");
    set_err(msg, ml,
            "the local provider has no voice '%.64s'; voices: slt, awb, rms, kal (Flite, "
            "English) and espeak-ng language codes such as de, fr, es, en-gb (GET /v1/voices)",
            t->voice);
    return VG_EINVAL;
}

static bool stt_format_known(const char *f)
{
    static const char *const ok[] = {"json", "text", "srt", "verbose_json", "vtt"};
    for (size_t i = 0; i < VG_ARRAY_LEN(ok); i++)
        if (!strcmp(f, ok[i]))
            return true;
    return false;
}

static int stt_resolve(const vg_stt_job *s, char *code, size_t cl, char *msg, size_t ml)
{
    const vg_audio_type *t = vg_audio_sniff(s->audio, s->audio_len);
    if (!t || strcmp(t->name, "wav")) {
        set_err(code, cl, "unsupported_media_type");
        set_err(msg, ml, "the local provider takes WAV (PCM) audio only; this is %s",
                t ? t->name : "not a recognised audio format");
        return VG_EINVAL;
    }
    vg_wav w;
    char err[128];
    if (vg_wav_parse(s->audio, s->audio_len, &w, err, sizeof err) != VG_OK) {
        set_err(code, cl, "invalid_audio");
        set_err(msg, ml, "%s", err);
        return VG_EINVAL;
    }
    if (vg_wav_duration_ms(&w) > STT_MAX_S * 1000ull) {
        set_err(code, cl, "audio_too_long");
        set_err(msg, ml, "the local provider transcribes at most %u seconds of audio",
                STT_MAX_S);
        return VG_EINVAL;
    }
    char l[VG_IDENT_MAX + 1];
    norm_lang(s->language, l);
    if (l[0] && strcmp(l, "en") && strcmp(l, "en-us")) {
        set_err(code, cl, "unsupported_language");
        set_err(msg, ml, "the local provider transcribes English only (language en or en-us)");
        return VG_EINVAL;
    }
    if (!stt_format_known(s->response_format)) {
        set_err(code, cl, "unsupported_format");
        set_err(msg, ml, "response_format must be one of json, text, srt, verbose_json, vtt");
        return VG_EINVAL;
    }
    return VG_OK;
}

static int resolve(const vg_job *job, resolved *r, char *code, size_t cl, char *msg, size_t ml)
{
    memset(r, 0, sizeof *r);
    if (job->kind == VG_KIND_TTS)
        return tts_resolve(&job->tts, r, code, cl, msg, ml);
    r->eng = ENG_STT;
    return stt_resolve(&job->stt, code, cl, msg, ml);
}

/* ---- TTS ---- */

static int tts_output(vg_presult *res, const int16_t *pcm, size_t n, uint32_t rate, bool raw)
{
    int rc = raw ? vg_pcm_append_s16(&res->body, pcm, n)
                 : vg_wav_append_s16(&res->body, pcm, n, rate);
    if (rc != VG_OK)
        return rc;
    if (raw)
        snprintf(res->content_type, sizeof res->content_type, "audio/pcm;rate=%u", rate);
    else
        snprintf(res->content_type, sizeof res->content_type, "audio/wav");
    return VG_OK;
}

static void fail(vg_presult *res, vg_pr_status st, const char *msg)
{
    vg_buf_free(&res->body);
    res->status = st;
    snprintf(res->message, sizeof res->message, "%s", msg);
}

/* Speed goes on the utterance, not the shared voice: its features fall
 * back to the voice's, so nothing shared is written. */
static void run_flite(vg_local *lp, ljob *j, vg_presult *res)
{
    VG_UNUSED(lp);
    cst_voice *v = flite_voice(j->voice);
    cst_utterance *u = v ? FL.new_utterance() : NULL;
    if (!u) {
        fail(res, VG_PR_INTERNAL, "flite: voice unavailable");
        return;
    }
    double speed = j->job->tts.speed > 0 ? j->job->tts.speed : 1.0;
    /* Flite's clustergen voices excite unvoiced sounds with rand() noise:
     * reseeding per job makes equal jobs give equal bytes (what the cache
     * assumes). Nothing else in voxgate calls rand(). The seed matters for
     * recognisability at the margin: with some seeds pocketsphinx hears
     * "tell" or "mining" in slt's "call me back tomorrow morning"; 4 is one
     * of those (2, 4, 42 checked) with which tests/unit/test_local.c's
     * sentences round-trip. */
    srand(FLITE_SEED);
    FL.utt_set_input_text(u, j->job->tts.text);
    FL.utt_init(u, v);
    FL.feat_set_float(u->features, "duration_stretch", (float)(1.0 / speed));
    cst_wave *w = FL.flite_do_synth(u, v, FL.utt_synth) ? FL.utt_wave(u) : NULL;
    if (!w || w->num_samples < 0 || w->sample_rate <= 0 ||
        (size_t)w->num_samples > (size_t)TTS_MAX_S * (size_t)w->sample_rate)
        fail(res, VG_PR_INTERNAL, "flite: synthesis failed");
    else if (tts_output(res, w->samples, (size_t)w->num_samples, (uint32_t)w->sample_rate,
                        j->pcm) != VG_OK)
        fail(res, VG_PR_INTERNAL, "out of memory");
    FL.delete_utterance(u);
}

/* espeak's rate is words per minute, 175 normal; it clamps at 80..450. */
static int es_wpm(double speed)
{
    double r = espeakRATE_NORMAL * (speed > 0 ? speed : 1.0);
    return r < espeakRATE_MINIMUM ? espeakRATE_MINIMUM
         : r > espeakRATE_MAXIMUM ? espeakRATE_MAXIMUM : (int)(r + 0.5);
}

static void run_espeak(vg_local *lp, ljob *j, vg_presult *res)
{
    VG_UNUSED(lp);
    vg_buf pcm = {0};
    pthread_mutex_lock(&es_mu);
    bool ok = es_ensure_locked() && j->voice < (int)es_n;
    int rate = es_rate;
    if (ok) {
        es_sink = &pcm;
        es_sink_max = (size_t)TTS_MAX_S * (size_t)rate;
        ok = ES.espeak_SetVoiceByName(es_list[j->voice].ident) == EE_OK &&
             ES.espeak_SetParameter(espeakRATE, es_wpm(j->job->tts.speed), 0) == EE_OK &&
             ES.espeak_Synth(j->job->tts.text, j->job->tts.text_len + 1, 0, POS_CHARACTER, 0,
                          espeakCHARS_UTF8, NULL, NULL) == EE_OK;
        es_sink = NULL;
    }
    pthread_mutex_unlock(&es_mu);
    if (!ok || pcm.len == 0)
        fail(res, VG_PR_INTERNAL, "espeak-ng: synthesis failed");
    else if (tts_output(res, (const int16_t *)(void *)pcm.data, pcm.len / 2, (uint32_t)rate,
                        j->pcm) != VG_OK)
        fail(res, VG_PR_INTERNAL, "out of memory");
    vg_buf_free(&pcm);
}

/* ---- STT ---- */

static bool ps_ensure(vg_local *lp)
{
    if (lp->ps)
        return true;
    const char *hmm = VG_PS_MODELDIR "/en-us/en-us";
    const char *lm = VG_PS_MODELDIR "/en-us/en-us.lm.bin";
    const char *dict = VG_PS_MODELDIR "/en-us/cmudict-en-us.dict";
    if (!ps_load() || access(hmm, R_OK) || access(lm, R_OK) || access(dict, R_OK))
        return false;
    if (!lp->ps_conf)
        lp->ps_conf = PS.cmd_ln_init(NULL, PS.ps_args(), TRUE, "-hmm", hmm, "-lm", lm, "-dict",
                                     dict, "-logfn", "/dev/null", NULL);
    if (lp->ps_conf)
        lp->ps = PS.ps_init(lp->ps_conf);
    return lp->ps != NULL;
}

typedef struct seg {
    int sf, ef;
    vg_buf text;
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static void segs_free(segs *s)
{
    for (size_t i = 0; i < s->n; i++)
        vg_buf_free(&s->v[i].text);
    free(s->v);
}

/* Fillers (<s>, </s>, <sil>, [NOISE]...) carry no words; alternate
 * pronunciations come back as "word(2)". */
static int segs_add_word(segs *s, const char *w, int sf, int ef)
{
    if (!w[0] || w[0] == '<' || w[0] == '[')
        return VG_OK;
    size_t wl = strcspn(w, "(");
    seg *cur = s->n ? &s->v[s->n - 1] : NULL;
    if (!cur || sf - cur->ef > SEG_GAP_FRAMES) {
        if (s->n == s->cap) {
            size_t nc = s->cap ? s->cap * 2 : 8;
            seg *nv = realloc(s->v, nc * sizeof *nv);
            if (!nv)
                return VG_ENOMEM;
            s->v = nv;
            s->cap = nc;
        }
        cur = &s->v[s->n++];
        memset(cur, 0, sizeof *cur);
        cur->sf = sf;
    }
    cur->ef = ef;
    if (cur->text.len && vg_buf_puts(&cur->text, " ") != VG_OK)
        return VG_ENOMEM;
    return vg_buf_append(&cur->text, w, wl);
}

static int decode(vg_local *lp, const int16_t *pcm, size_t n, segs *out)
{
    if (PS.ps_start_utt(lp->ps) < 0)
        return VG_ERR;
    PS.ps_process_raw(lp->ps, pcm, n, FALSE, TRUE);
    if (PS.ps_end_utt(lp->ps) < 0)
        return VG_ERR;
    for (ps_seg_t *it = PS.ps_seg_iter(lp->ps); it; it = PS.ps_seg_next(it)) {
        int sf = 0, ef = 0;
        PS.ps_seg_frames(it, &sf, &ef);
        if (segs_add_word(out, PS.ps_seg_word(it), sf, ef) != VG_OK) {
            PS.ps_seg_free(it);
            return VG_ENOMEM;
        }
    }
    return VG_OK;
}

static int joined_text(const segs *s, vg_buf *out)
{
    vg_buf_reset(out);
    int rc = vg_buf_puts(out, "");
    for (size_t i = 0; i < s->n && rc == VG_OK; i++) {
        if (i)
            rc = vg_buf_puts(out, " ");
        if (rc == VG_OK)
            rc = vg_buf_append(out, s->v[i].text.data, s->v[i].text.len);
    }
    return rc;
}

static int cue_time(vg_buf *b, int frames, char sep)
{
    long ms = (long)frames * (1000 / FRAMES_PER_S);
    return vg_buf_printf(b, "%02ld:%02ld:%02ld%c%03ld", ms / 3600000, ms / 60000 % 60,
                         ms / 1000 % 60, sep, ms % 1000);
}

/* SRT and WebVTT: one cue per utterance (words split by pauses). */
static int cues(const segs *s, bool vtt, vg_buf *out)
{
    int rc = vg_buf_puts(out, vtt ? "WEBVTT\n\n" : "");
    for (size_t i = 0; i < s->n && rc == VG_OK; i++) {
        if (!vtt)
            rc = vg_buf_printf(out, "%zu\n", i + 1);
        if (rc == VG_OK)
            rc = cue_time(out, s->v[i].sf, vtt ? '.' : ',');
        if (rc == VG_OK)
            rc = vg_buf_puts(out, " --> ");
        if (rc == VG_OK)
            rc = cue_time(out, s->v[i].ef + 1, vtt ? '.' : ',');
        if (rc == VG_OK)
            rc = vg_buf_printf(out, "\n%s\n\n", s->v[i].text.data ? s->v[i].text.data : "");
    }
    return rc;
}

static cJSON *verbose(const segs *s, const char *text, uint64_t dur_ms)
{
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!o || !arr) {
        cJSON_Delete(o);
        cJSON_Delete(arr);
        return NULL;
    }
    cJSON_AddStringToObject(o, "task", "transcribe");
    cJSON_AddStringToObject(o, "language", "english");
    cJSON_AddNumberToObject(o, "duration", (double)dur_ms / 1000.0);
    cJSON_AddStringToObject(o, "text", text);
    cJSON_AddItemToObject(o, "segments", arr);
    for (size_t i = 0; i < s->n; i++) {
        cJSON *g = cJSON_CreateObject();
        if (!g || !cJSON_AddItemToArray(arr, g)) {
            cJSON_Delete(g);
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddNumberToObject(g, "id", (double)i);
        cJSON_AddNumberToObject(g, "start", (double)s->v[i].sf / FRAMES_PER_S);
        cJSON_AddNumberToObject(g, "end", (double)(s->v[i].ef + 1) / FRAMES_PER_S);
        cJSON_AddStringToObject(g, "text", s->v[i].text.data ? s->v[i].text.data : "");
    }
    return o;
}

/* The result object per response_format (provider.h): json and
 * verbose_json as such, text/srt/vtt wrapped as {"text": document}. */
static int stt_body(const char *fmt, const segs *s, uint64_t dur_ms, vg_buf *body)
{
    vg_buf text = {0}, doc = {0};
    int rc = joined_text(s, &text);
    cJSON *o = NULL;
    if (rc == VG_OK && !strcmp(fmt, "verbose_json")) {
        o = verbose(s, text.data, dur_ms);
    } else if (rc == VG_OK) {
        if (!strcmp(fmt, "srt") || !strcmp(fmt, "vtt"))
            rc = cues(s, !strcmp(fmt, "vtt"), &doc);
        else
            rc = vg_buf_append(&doc, text.data, text.len);
        o = rc == VG_OK ? cJSON_CreateObject() : NULL;
        if (o && !cJSON_AddStringToObject(o, "text", doc.data ? doc.data : "")) {
            cJSON_Delete(o);
            o = NULL;
        }
    }
    char *js = o ? cJSON_PrintUnformatted(o) : NULL;
    rc = js ? vg_buf_puts(body, js) : VG_ENOMEM;
    cJSON_free(js);
    cJSON_Delete(o);
    vg_buf_free(&text);
    vg_buf_free(&doc);
    return rc;
}

static void run_stt(vg_local *lp, ljob *j, vg_presult *res)
{
    const vg_stt_job *s = &j->job->stt;
    vg_wav w;
    int16_t *pcm = NULL;
    size_t n = 0;
    segs sg = {0};
    if (vg_wav_parse(s->audio, s->audio_len, &w, NULL, 0) != VG_OK ||
        vg_wav_to_mono_s16(&w, STT_RATE, (size_t)STT_MAX_S * STT_RATE, &pcm, &n) != VG_OK) {
        fail(res, VG_PR_INPUT, "audio could not be read as WAV");
        return;
    }
    if (!ps_ensure(lp))
        fail(res, VG_PR_INTERNAL, "pocketsphinx: libpocketsphinx.so.3 or the en-us model at "
             VG_PS_MODELDIR "/en-us is not available");
    else if (decode(lp, pcm, n, &sg) != VG_OK)
        fail(res, VG_PR_INTERNAL, "pocketsphinx: decoding failed");
    else if (stt_body(s->response_format, &sg, vg_wav_duration_ms(&w), &res->body) != VG_OK)
        fail(res, VG_PR_INTERNAL, "out of memory");
    else {
        snprintf(res->content_type, sizeof res->content_type, "application/json");
        res->duration_ms = (uint32_t)vg_wav_duration_ms(&w);
    }
    segs_free(&sg);
    free(pcm);
}

/* ---- workers ---- */

static ljob *q_pop(lqueue *q, bool *stopping)
{
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->stop)
        pthread_cond_wait(&q->cv, &q->mu);
    ljob *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    *stopping = q->stop;
    pthread_mutex_unlock(&q->mu);
    return j;
}

static void run_one(lqueue *q, ljob *j, bool stopping)
{
    vg_presult res;
    memset(&res, 0, sizeof res);
    uint64_t waited_ms = (vg_mono_ns() - j->enq_ns) / 1000000u;
    if (stopping)
        fail(&res, VG_PR_INTERNAL, "shutting down");
    else if (j->job->timeout_ms && waited_ms >= j->job->timeout_ms)
        fail(&res, VG_PR_TIMEOUT, "the local engine was busy past the attempt's timeout");
    else
        q->run(q->lp, j, &res);
    j->done(j->ud, &res);
    vg_buf_free(&res.body);
    free(j);
    pthread_mutex_lock(&q->mu);
    q->n--;
    pthread_mutex_unlock(&q->mu);
}

static void *worker_main(void *arg)
{
    lqueue *q = arg;
    pthread_setname_np(pthread_self(), "vg-local");
    for (;;) {
        bool stopping;
        ljob *j = q_pop(q, &stopping);
        if (!j)
            return NULL;
        run_one(q, j, stopping);
    }
}

static int q_init(lqueue *q, vg_local *lp, size_t max,
                  void (*run)(vg_local *, ljob *, vg_presult *))
{
    memset(q, 0, sizeof *q);
    q->lp = lp;
    q->max = max;
    q->run = run;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->th, NULL, worker_main, q) != 0)
        return VG_ERR;
    q->started = true;
    return VG_OK;
}

static void q_stop(lqueue *q)
{
    if (!q->lp)
        return; /* never initialised */
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        q->stop = true;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->th, NULL);
    }
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

static int q_push(lqueue *q, ljob *j)
{
    pthread_mutex_lock(&q->mu);
    int rc = VG_OK;
    if (q->stop)
        rc = VG_EUNAVAIL;
    else if (q->n >= q->max)
        rc = VG_ETOOBIG;
    else {
        q->n++;
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

/* ---- provider ops ---- */

static int local_check(vg_provider *p, const vg_job *job, char *code, size_t cl, char *msg,
                       size_t ml)
{
    VG_UNUSED(p);
    resolved r;
    return resolve(job, &r, code, cl, msg, ml);
}

static int local_start(vg_provider *p, const vg_job *job, vg_provider_done done, void *ud)
{
    vg_local *lp = (vg_local *)p;
    resolved r;
    if (!job || !done || resolve(job, &r, NULL, 0, NULL, 0) != VG_OK)
        return VG_EINVAL;
    ljob *j = calloc(1, sizeof *j);
    if (!j)
        return VG_ENOMEM;
    j->job = job;
    j->done = done;
    j->ud = ud;
    j->voice = r.voice;
    j->pcm = r.pcm;
    j->enq_ns = vg_mono_ns();
    int rc = q_push(&lp->q[r.eng], j);
    if (rc != VG_OK)
        free(j);
    return rc;
}

static const char *local_default_voice(vg_provider *p, const char *language)
{
    const char *conf_voice = p->conf && p->conf->voice[0] ? p->conf->voice : "slt";
    if (!language || lang_is_english(language) || !es_ensure())
        return conf_voice;
    int i = es_find_lang(language);
    return i >= 0 ? es_list[i].id : conf_voice;
}

static bool add_voice(cJSON *arr, const char *id, const char *name, const char *lang,
                      const char *engine)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        return false;
    }
    return cJSON_AddStringToObject(o, "id", id) && cJSON_AddStringToObject(o, "name", name) &&
           cJSON_AddStringToObject(o, "language", lang) &&
           cJSON_AddStringToObject(o, "engine", engine);
}

static void *local_voices(vg_provider *p)
{
    VG_UNUSED(p);
    cJSON *arr = cJSON_CreateArray();
    bool ok = arr != NULL;
    for (size_t i = 0; ok && i < N_FLITE; i++)
        ok = add_voice(arr, flite_defs[i].id, flite_defs[i].name, "en-us", "flite");
    if (ok && es_ensure())
        for (size_t i = 0; ok && i < es_n; i++)
            ok = add_voice(arr, es_list[i].id, es_list[i].name, es_list[i].id, "espeak-ng");
    if (!ok) {
        cJSON_Delete(arr);
        return NULL;
    }
    return arr;
}

static bool local_ready(vg_provider *p)
{
    vg_local *lp = (vg_local *)p;
    for (size_t i = 0; i < VG_ARRAY_LEN(lp->q); i++)
        if (!lp->q[i].started)
            return false;
    return true;
}

static void local_destroy(vg_provider *p)
{
    vg_local *lp = (vg_local *)p;
    if (!lp)
        return;
    for (size_t i = 0; i < VG_ARRAY_LEN(lp->q); i++)
        q_stop(&lp->q[i]);
    if (lp->ps)
        PS.ps_free(lp->ps);
    if (lp->ps_conf)
        PS.cmd_ln_free_r(lp->ps_conf);
    es_release();
    free(lp);
}

static const vg_provider_ops local_ops = {
    .type = "local",
    .check = local_check,
    .start = local_start,
    .default_voice = local_default_voice,
    .voices = local_voices,
    .ready = local_ready,
    .destroy = local_destroy,
};

int vg_provider_local_new(const vg_provider_conf *conf, vg_provider **out, char *err,
                          size_t errlen)
{
    if (conf && conf->voice[0] && flite_find(conf->voice) < 0 && !vg_ident_valid(conf->voice)) {
        set_err(err, errlen, "providers.%s.voice: not a voice id", conf->name);
        return -1;
    }
    vg_local *lp = calloc(1, sizeof *lp);
    if (!lp) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    lp->base.ops = &local_ops;
    lp->base.conf = conf;
    pthread_mutex_lock(&es_mu);
    es_users++;
    pthread_mutex_unlock(&es_mu);
    size_t max = conf && conf->max_concurrency ? conf->max_concurrency : 16;
    void (*runs[3])(vg_local *, ljob *, vg_presult *) = {run_flite, run_espeak, run_stt};
    for (size_t i = 0; i < 3; i++) {
        if (q_init(&lp->q[i], lp, max, runs[i]) != VG_OK) {
            local_destroy(&lp->base);
            set_err(err, errlen, "local provider: cannot start worker threads");
            return -1;
        }
    }
    *out = &lp->base;
    return 0;
}
