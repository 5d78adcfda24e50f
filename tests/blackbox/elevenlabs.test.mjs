// The elevenlabs provider type (issue 7; providers.md §4, §9) through
// voxgate's gateway against fake-elevenlabs.mjs: TTS through /v1/tts and
// /v1/audio/speech (output_format, xi-api-key, voice_settings always sent,
// the voice id in the path), STT through /v1/stt and
// /v1/audio/transcriptions (multipart), caching (one upstream call),
// refusals before any call (formats, speed), and every error class mapped
// to voxgate's answer, with an OpenAI-compatible fake as the fallback.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, req, sleep, waitForLog } from './lib.mjs';
import { startFakeOpenAI, wavFile } from './fakeprov.mjs';
import { startFakeElevenLabs, elAudio, elTranscript } from './fake-elevenlabs.mjs';

const KEY = 'xi-Very-Secret-Key-0123456789';
const VOICE = 'EXAVITQu4vr4xnSDxMaL';
const SETTINGS = (speed = 1) => ({ stability: 0.5, similarity_boost: 0.75, style: 0, use_speaker_boost: true, speed });
const json = (o, h = {}) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json', ...h } });
let seq = 0;
const fresh = (s) => `${s} ${Date.now()} ${++seq}`;

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error?.code, code, `${what}: ${res.text}`);
  return res.json.error.message;
}

const retrying = { timeout_ms: 5000, max_retries: 1, retry_base_ms: 10, retry_max_ms: 20,
  breaker: { failure_threshold: 1000, failure_rate_threshold: 1, window_size: 1000, min_calls: 1000 } };

function form(audio, fields) {
  const b = 'elboundary42';
  const parts = Object.entries(fields).map(([k, v]) => `--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`);
  return {
    body: Buffer.concat([Buffer.from(parts.join('')),
      Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`),
      audio, Buffer.from(`\r\n--${b}--\r\n`)]),
    headers: { 'Content-Type': `multipart/form-data; boundary=${b}` },
  };
}

describe('elevenlabs provider', { timeout: 120000 }, () => {
  let el, b, vg;
  const tts = (o) => req(vg, 'POST', '/v1/tts', json(o));
  before(async () => {
    el = await startFakeElevenLabs({ apiKey: KEY });
    b = await startFakeOpenAI({ apiKey: 'sk-fallback' });
    vg = await startVoxgate({
      config: {
        providers: {
          el: { type: 'elevenlabs', base_url: el.url, api_key_env: 'EL_KEY', ...retrying },
          // A model that takes language_code (multilingual_v2 refuses it).
          elf: { type: 'elevenlabs', base_url: el.url, api_key_env: 'EL_KEY', tts_model: 'eleven_flash_v2_5', ...retrying },
          b: { type: 'openai', base_url: b.url, api_key_env: 'B_KEY', ...retrying },
        },
        models: { 'tts-1': ['el', 'b'], 'whisper-1': ['el', 'b'], scribe: ['el'] },
        gateway: { timeout_ms: 2500 },
        limits: { max_tts_chars: 20000 },
      },
      env: { EL_KEY: KEY, B_KEY: 'sk-fallback' },
    });
  });
  after(async () => {
    const res = await stopVoxgate(vg);
    cleanup(vg);
    await el.close();
    await b.close();
    assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
  });
  beforeEach(() => { el.reset(); b.reset(); });

  it('/v1/tts: the request ElevenLabs documents, its audio, then a cache hit', async () => {
    const text = fresh('hello');
    const r = await tts({ text, provider: 'el', voice: VOICE, format: 'mp3' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('content-type'), 'audio/mpeg');
    assert.equal(r.headers.get('x-provider'), 'el');
    assert.equal(r.headers.get('x-cache'), 'MISS');
    const call = el.calls[0];
    assert.equal(call.path, `/v1/text-to-speech/${VOICE}`);
    assert.deepEqual(call.query, { output_format: 'mp3_44100_128' });
    assert.equal(call.headers['xi-api-key'], KEY);
    assert.equal(call.headers.authorization, undefined);
    assert.deepEqual(call.json, { text, model_id: 'eleven_multilingual_v2', voice_settings: SETTINGS() });
    const want = elAudio({ voice: VOICE, model_id: 'eleven_multilingual_v2', text, output_format: 'mp3_44100_128', voice_settings: SETTINGS() });
    assert.ok(r.buf.equals(want), 'the upstream bytes');
    const again = await tts({ text, provider: 'el', voice: VOICE, format: 'mp3', speed: 1.0 });
    assert.equal(again.headers.get('x-cache'), 'HIT');
    assert.ok(again.buf.equals(want));
    assert.equal(el.count, 1, 'one upstream call');
  });

  it('pcm, wav and opus map to fixed output formats; speed and language go upstream', async () => {
    const text = fresh('formats');
    const p = await tts({ text, provider: 'elf', voice: VOICE, format: 'pcm', speed: 1.1, language: 'de' });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.headers.get('content-type'), 'audio/pcm;rate=24000');
    assert.equal(el.calls[0].query.output_format, 'pcm_24000');
    assert.deepEqual(el.calls[0].json.voice_settings, SETTINGS(1.1));
    assert.equal(el.calls[0].json.model_id, 'eleven_flash_v2_5');
    assert.equal(el.calls[0].json.language_code, 'de');
    const w = await tts({ text, provider: 'el', voice: VOICE, format: 'wav' });
    assert.equal(w.headers.get('content-type'), 'audio/wav');
    assert.equal(el.calls[1].query.output_format, 'wav_24000');
    const o = await tts({ text, provider: 'el', voice: VOICE, format: 'opus' });
    assert.equal(o.headers.get('content-type'), 'audio/opus');
    assert.equal(el.calls[2].query.output_format, 'opus_48000_64');
    const slower = await tts({ text, provider: 'elf', voice: VOICE, format: 'pcm', speed: 0.9, language: 'de' });
    assert.equal(slower.headers.get('x-cache'), 'MISS', 'another speed is another entry');
    // multilingual_v2 detects the language itself: language_code is not sent to it.
    const multi = await tts({ text, provider: 'el', voice: VOICE, format: 'pcm', language: 'de' });
    assert.equal(multi.status, 200, multi.text);
    assert.equal(el.calls[4].json.model_id, 'eleven_multilingual_v2');
    assert.equal(el.calls[4].json.language_code, undefined);
    assert.equal(el.count, 5);
  });

  it('no voice: the default ElevenLabs voice', async () => {
    const r = await tts({ text: fresh('default'), provider: 'el', format: 'mp3' });
    assert.equal(r.status, 200, r.text);
    assert.equal(el.calls[0].path, '/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM');
  });

  it('/v1/audio/speech with an ElevenLabs voice id', async () => {
    const input = fresh('openai client');
    const r = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input, voice: VOICE }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'el');
    assert.equal(r.headers.get('content-type'), 'audio/mpeg');
    assert.equal(el.calls[0].path, `/v1/text-to-speech/${VOICE}`);
    assert.equal(el.calls[0].json.model_id, 'eleven_multilingual_v2', 'the OpenAI model name is not sent');
    assert.equal(b.count, 0);
  });

  it('formats and speeds ElevenLabs cannot do are refused before any call', async () => {
    const f = await tts({ text: fresh('flac'), provider: 'el', voice: VOICE, format: 'flac' });
    const msg = assertError(f, 400, 'unsupported_format', 'flac');
    assert.match(msg, /mp3, opus, pcm, wav/);
    const s = await tts({ text: fresh('fast'), provider: 'el', voice: VOICE, format: 'mp3', speed: 2 });
    assert.match(assertError(s, 400, 'unsupported_speed', 'speed 2'), /0\.7 to 1\.2/);
    const audio = wavFile(Buffer.alloc(3200, 3));
    const srt = await req(vg, 'POST', '/v1/audio/transcriptions', form(audio, { model: 'scribe', response_format: 'srt' }));
    assert.match(assertError(srt, 400, 'unsupported_format', 'srt'), /json, text/);
    assert.equal(el.count, 0);
    const vtt = await req(vg, 'POST', '/v1/audio/transcriptions', form(audio, { model: 'whisper-1', response_format: 'vtt' }));
    assert.equal(vtt.status, 200, vtt.text);
    assert.equal(vtt.headers.get('x-provider'), 'b', 'the chain skips elevenlabs for vtt');
    // In a chain the refusing provider is skipped.
    const a = await req(vg, 'POST', '/v1/tts', json({ text: fresh('aac'), model: 'tts-1', format: 'aac' }));
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers.get('x-provider'), 'b');
    assert.equal(el.count, 0);
  });

  it('/v1/stt and /v1/audio/transcriptions: multipart upstream, {"text"} back, then hits', async () => {
    const audio = wavFile(Buffer.alloc(6400, seq++ % 200));
    const r = await req(vg, 'POST', '/v1/stt?provider=el&language=en', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.text, elTranscript(audio));
    const call = el.calls[0];
    assert.equal(call.path, '/v1/speech-to-text');
    assert.equal(call.headers['xi-api-key'], KEY);
    assert.deepEqual(call.fields, { model_id: 'scribe_v1', language_code: 'en', tag_audio_events: 'false', timestamps_granularity: 'none' });
    assert.ok(call.file.equals(audio));
    assert.equal(call.fileType, 'audio/wav');
    const again = await req(vg, 'POST', '/v1/stt?provider=el&language=en', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(again.headers.get('x-cache'), 'HIT');
    assert.equal(el.count, 1);

    const t = await req(vg, 'POST', '/v1/audio/transcriptions', form(audio, { model: 'whisper-1', response_format: 'text' }));
    assert.equal(t.status, 200, t.text);
    assert.equal(t.headers.get('x-provider'), 'el');
    assert.equal(t.text.trim(), elTranscript(audio));
    assert.equal(el.calls[1].fields.language_code, undefined, 'no language: detect');
    const j = await req(vg, 'POST', '/v1/audio/transcriptions', form(audio, { model: 'whisper-1' }));
    assert.deepEqual(j.json, { text: elTranscript(audio) });
    assert.equal(b.count, 0);
  });

  it('5xx is retried, then the chain falls back', async () => {
    el.behave({ mode: 'fail', status: 500 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('5xx'), model: 'tts-1', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(el.count, 2, 'one attempt plus max_retries = 1');
    el.behave({ mode: 'fail', status: 503, code: 'server_overloaded', failFirst: 1 });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('503'), model: 'tts-1', format: 'mp3' }));
    assert.equal(r2.headers.get('x-provider'), 'el');
    assert.equal(el.count, 4);
  });

  it('429 cools ElevenLabs down for its Retry-After; the fallback answers meanwhile', async () => {
    el.behave({ mode: 'rate_limit', retryAfter: 2 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('429'), model: 'tts-1', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(el.count, 1, 'a 429 is not retried');
    el.behave({ mode: 'ok' });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('429'), model: 'tts-1', format: 'mp3' }));
    assert.equal(r2.headers.get('x-provider'), 'b', 'still cooling down');
    assert.equal(el.count, 1);
    await sleep(2200);
    const r3 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('429'), model: 'tts-1', format: 'mp3' }));
    assert.equal(r3.headers.get('x-provider'), 'el', 'back after Retry-After');
  });

  it('401 quota_exceeded: provider_quota_exhausted, never retried, the fallback answers in a chain', async () => {
    el.behave({ mode: 'quota' });
    const r = await tts({ text: fresh('quota'), provider: 'el', voice: VOICE, format: 'mp3' });
    const msg = assertError(r, 502, 'provider_quota_exhausted', 'quota');
    assert.equal(el.count, 1, 'not retried');
    assert.ok(!r.text.includes(KEY) && !r.text.includes('credits'), 'upstream text is not echoed');
    assert.ok(msg.length > 0);
    const c = await req(vg, 'POST', '/v1/tts', json({ text: fresh('quota'), model: 'tts-1', format: 'mp3' }));
    assert.equal(c.status, 200, c.text);
    assert.equal(c.headers.get('x-provider'), 'b');
    assert.equal(el.count, 2);
  });

  it('a bad key: provider_auth_failed without the upstream text', async () => {
    el.behave({ mode: 'auth' });
    const r = await tts({ text: fresh('auth'), provider: 'el', voice: VOICE, format: 'mp3' });
    assertError(r, 502, 'provider_auth_failed', 'auth');
    assert.ok(!r.text.includes('Invalid API key') && !r.text.includes(KEY));
    assert.equal(el.count, 1);
  });

  it('input ElevenLabs refuses is a 400 with its reason; the fallback is not tried', async () => {
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('voice'), model: 'tts-1', voice: 'NoSuchVoice1', format: 'mp3' }));
    assert.match(assertError(r, 400, 'provider_rejected_input', 'unknown voice'), /voice_not_found/);
    assert.equal(el.count, 1);
    assert.equal(b.count, 0);
    const long = await tts({ text: 'x'.repeat(10001), provider: 'el', voice: VOICE, format: 'mp3' });
    assert.match(assertError(long, 400, 'provider_rejected_input', 'too long'), /max_character_limit_exceeded/);
    const lang = await tts({ text: fresh('lang'), provider: 'elf', voice: VOICE, format: 'mp3', language: 'en-US' });
    assert.match(assertError(lang, 400, 'provider_rejected_input', '422'), /422 .*language_code/);
  });

  it('2xx garbage is a 502 bad_provider_response and is not cached', async () => {
    const text = fresh('garbage');
    for (const garbage of ['json', 'empty', 'text']) {
      el.behave({ mode: 'garbage', garbage });
      assertError(await tts({ text, provider: 'el', voice: VOICE, format: 'mp3' }), 502, 'bad_provider_response', garbage);
    }
    el.behave({ mode: 'ok' });
    const ok = await tts({ text, provider: 'el', voice: VOICE, format: 'mp3' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.headers.get('x-cache'), 'MISS');
    el.behave({ mode: 'garbage', garbage: 'json' });
    const audio = wavFile(Buffer.alloc(3200, 9));
    const s = await req(vg, 'POST', '/v1/stt?provider=el', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assertError(s, 502, 'bad_provider_response', 'STT without text');
  });

  it('a hanging ElevenLabs is a 504 within the budget', async () => {
    el.behave({ mode: 'hang' });
    const t0 = Date.now();
    const r = await tts({ text: fresh('hang'), provider: 'el', voice: VOICE, format: 'mp3' });
    assertError(r, 504, 'provider_timeout', 'hang');
    assert.ok(Date.now() - t0 < 4500);
    el.releaseHung();
  });

  it('the key never reaches voxgate\'s logs', async () => {
    el.behave({ mode: 'quota' });
    await tts({ text: fresh('log'), provider: 'el', voice: VOICE, format: 'mp3' });
    el.behave({ mode: 'auth' });
    await tts({ text: fresh('log'), provider: 'el', voice: VOICE, format: 'mp3' });
    await waitForLog(vg, (l) => l.msg === 'provider call' && l.status === 401);
    assert.ok(!vg.lines.join('\n').includes(KEY) && !vg.stderr.includes(KEY), 'key in the log');
    assert.ok(!vg.lines.join('\n').includes('0123456789'), 'no fragment of it either');
  });
});
