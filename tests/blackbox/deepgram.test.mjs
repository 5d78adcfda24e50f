// The deepgram provider through the gateway (issue 7; providers.md §3,
// §9) against fake-deepgram.mjs: STT through /v1/stt and
// /v1/audio/transcriptions in every response format, TTS through /v1/tts
// in every audio format, a repeat served from the cache with one upstream
// call, and each upstream error class answered right: 5xx retried then
// the fallback, 429 cooling the provider down for its Retry-After, 402 a
// 502 provider_quota_exhausted with no retry, a bad key a 502
// provider_auth_failed without the upstream text, refused input a 400,
// garbage a 502, a hang a 504. Jobs deepgram cannot run are refused before
// any call; the key never reaches voxgate's logs.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, req, sleep, waitForLog, multipart } from './lib.mjs';
import { startFakeOpenAI, wavFile } from './fakeprov.mjs';
import { startFakeDeepgram, listenAnswer, speakAudio } from './fake-deepgram.mjs';

const KEY = 'dgkey0123456789abcdef0123456789abcdef01';
const json = (o, h = {}) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json', ...h } });
let seq = 0;
const fresh = (s) => `${s} ${Date.now()} ${++seq}`;
// Distinct audio per call: a short tone whose samples depend on seed.
const audio = (seed) => wavFile(Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * (seed.length + 7) + seq++) & 0xff)), 16000);
const transcript = (wav, query) => listenAnswer(wav, query).results.channels[0].alternatives[0].transcript;

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error?.code, code, `${what}: ${res.text}`);
}

const breaker = { failure_threshold: 1000, failure_rate_threshold: 1, window_size: 1000, min_calls: 1000 };
const retries = { max_retries: 1, retry_base_ms: 10, retry_max_ms: 20, timeout_ms: 5000, breaker };

describe('deepgram provider with an OpenAI-compatible fallback', { timeout: 120000 }, () => {
  let dg, b, vg;
  before(async () => {
    dg = await startFakeDeepgram({ apiKey: KEY });
    b = await startFakeOpenAI({ apiKey: 'sk-b' });
    vg = await startVoxgate({
      config: {
        providers: {
          dg: { type: 'deepgram', base_url: dg.url, api_key_env: 'DG_TEST_KEY', ...retries },
          b: { type: 'openai', base_url: b.url, api_key_env: 'B_KEY', ...retries },
        },
        gateway: { timeout_ms: 2500 },
      },
      env: { DG_TEST_KEY: KEY, B_KEY: 'sk-b' },
    });
  });
  after(async () => {
    const res = await stopVoxgate(vg);
    const logs = vg.lines.join('\n') + vg.stderr;
    cleanup(vg);
    await dg.close();
    await b.close();
    assert.deepEqual(res, { code: 0, signal: null }, vg.stderr.slice(-3000));
    assert.ok(!logs.includes(KEY), 'the key never reaches the logs');
    assert.ok(!logs.includes(KEY.slice(6, 30)), 'nor a part of it');
  });
  beforeEach(() => { dg.reset(); b.reset(); });

  it('STT through /v1/stt: raw audio upstream with Token auth, then a cache hit', async () => {
    const wav = audio('stt');
    const r = await req(vg, 'POST', '/v1/stt', { body: wav, headers: { 'Content-Type': 'audio/wav', 'X-Request-ID': 'dg-trace-1' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.provider, 'dg');
    assert.equal(r.json.cache, 'miss');
    assert.equal(r.json.text, transcript(wav, { model: 'nova-3' }));
    assert.ok(r.json.duration_ms > 0);
    assert.equal(dg.count, 1);
    const call = dg.calls[0];
    assert.equal(call.path, '/v1/listen');
    assert.equal(call.rawQuery, '?model=nova-3&detect_language=true&punctuate=true&smart_format=true');
    assert.equal(call.headers.authorization, `Token ${KEY}`);
    assert.equal(call.headers['content-type'], 'audio/wav');
    assert.equal(call.headers['x-request-id'], 'dg-trace-1');
    assert.equal(call.bodyBytes, wav.length);
    const log = await waitForLog(vg, (l) => l.msg === 'provider call' && l.request_id === 'dg-trace-1');
    assert.equal(log.provider, 'dg');
    assert.match(log.upstream_id, /^[0-9a-f-]{36}$/, 'dg-request-id logged');

    const r2 = await req(vg, 'POST', '/v1/stt', { body: wav, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r2.json.cache, 'hit_l1');
    assert.equal(r2.json.text, r.json.text);
    assert.equal(dg.count, 1, 'a hit calls nobody');
    // A language is sent as given, and is another cache entry.
    const r3 = await req(vg, 'POST', '/v1/stt?language=en-US', { body: wav, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r3.status, 200, r3.text);
    assert.equal(r3.json.cache, 'miss');
    assert.equal(dg.calls[1].rawQuery, '?model=nova-3&language=en-US&punctuate=true&smart_format=true');
    assert.equal(b.count, 0);
  });

  it('STT through /v1/audio/transcriptions in json, text, verbose_json, srt and vtt', async () => {
    const wav = audio('formats');
    const text = transcript(wav, { model: 'nova-3' });
    const j = await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1' }, wav));
    assert.equal(j.status, 200, j.text);
    assert.deepEqual(j.json, { text });
    const t = await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1', response_format: 'text' }, wav));
    assert.equal(t.text, text);
    assert.match(t.headers.get('content-type'), /^text\/plain/);
    const v = await req(vg, 'POST', '/v1/audio/transcriptions',
      multipart({ model: 'whisper-1', response_format: 'verbose_json', 'timestamp_granularities[]': ['segment', 'word'] }, wav));
    assert.equal(v.status, 200, v.text);
    assert.equal(v.json.task, 'transcribe');
    assert.equal(v.json.language, 'en', 'the detected language');
    assert.equal(v.json.text, text);
    assert.ok(v.json.duration > 0);
    assert.equal(v.json.segments.length, 2, 'one segment per sentence');
    assert.equal(v.json.segments.map((s) => s.text).join(' '), text);
    assert.equal(v.json.words.length, text.split(' ').length);
    assert.ok(v.json.words.every((w) => typeof w.word === 'string' && w.end > w.start));
    const s = await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1', response_format: 'srt' }, wav));
    assert.match(s.text, /^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+\n\n2\n/);
    const vt = await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1', response_format: 'vtt' }, wav));
    assert.match(vt.text, /^WEBVTT\n\n\d\d:\d\d:\d\d\.\d{3} --> /);
    assert.match(vt.headers.get('content-type'), /^text\/vtt/);
    assert.equal(dg.count, 5, 'each format is its own entry');
    const again = await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1', response_format: 'srt' }, wav));
    assert.equal(again.text, s.text);
    assert.equal(again.headers.get('x-cache'), 'HIT');
    assert.equal(dg.count, 5);
  });

  it('TTS through /v1/tts in every audio format, then a cache hit', async () => {
    const want = {
      wav: [{ encoding: 'linear16', container: 'wav', sample_rate: '24000' }, 'audio/wav'],
      pcm: [{ encoding: 'linear16', container: 'none', sample_rate: '24000' }, 'audio/pcm;rate=24000'],
      mp3: [{ encoding: 'mp3' }, 'audio/mpeg'],
      opus: [{ encoding: 'opus', container: 'ogg' }, 'audio/ogg'],
      aac: [{ encoding: 'aac' }, 'audio/aac'],
      flac: [{ encoding: 'flac' }, 'audio/flac'],
    };
    const text = fresh('please call me back');
    for (const [format, [query, ctype]] of Object.entries(want)) {
      dg.reset();
      const r = await req(vg, 'POST', '/v1/tts', json({ text, format }));
      assert.equal(r.status, 200, `${format}: ${r.text}`);
      assert.equal(r.headers.get('x-provider'), 'dg');
      assert.equal(r.headers.get('content-type'), ctype, format);
      assert.deepEqual(dg.calls[0].query, { model: 'aura-2-thalia-en', ...query }, format);
      assert.deepEqual(dg.calls[0].json, { text });
      assert.ok(r.buf.equals(speakAudio('aura-2-thalia-en', text, query)), `${format}: the upstream bytes`);
    }
    const voiced = await req(vg, 'POST', '/v1/tts', json({ text, format: 'mp3', voice: 'aura-2-apollo-en' }));
    assert.equal(voiced.status, 200, voiced.text);
    assert.equal(dg.calls.at(-1).query.model, 'aura-2-apollo-en', 'the voice is the model');
    const n = dg.count;
    const hit = await req(vg, 'POST', '/v1/tts', json({ text, format: 'mp3', voice: 'aura-2-apollo-en' }));
    assert.equal(hit.headers.get('x-cache'), 'HIT');
    assert.ok(hit.buf.equals(voiced.buf));
    assert.equal(dg.count, n);
  });

  it('jobs deepgram cannot run are refused before any call', async () => {
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: fresh('x'), provider: 'dg', voice: 'alloy' })),
      400, 'unknown_voice', 'an OpenAI voice');
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: fresh('x'), provider: 'dg', speed: 1.5 })),
      400, 'unsupported_parameter', 'speed');
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: fresh('x'), provider: 'dg', format: 'ogg' })),
      400, 'unsupported_format', 'ogg');
    assertError(await req(vg, 'POST', '/v1/audio/transcriptions', multipart({ model: 'whisper-1', response_format: 'diarized_json' }, audio('d'))),
      400, 'unsupported_format', 'diarized_json');
    assert.equal(dg.count, 0);
    // In a chain the provider that can is used instead.
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('x'), voice: 'alloy', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(dg.count, 0);
  });

  it('a 5xx is retried, then the fallback answers', async () => {
    dg.behave({ mode: 'fail', status: 503, failFirst: 1 });
    const r = await req(vg, 'POST', '/v1/stt', { body: audio('retry'), headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.provider, 'dg');
    assert.equal(dg.count, 2);
    dg.behave({ mode: 'fail', status: 500 });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('fallback'), format: 'mp3' }));
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.headers.get('x-provider'), 'b');
    assert.equal(dg.count, 4, 'one attempt plus max_retries = 1');
  });

  it('a 429 cools deepgram down for its Retry-After; the fallback answers meanwhile', async () => {
    dg.behave({ mode: 'rate_limit', retryAfter: 2 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), format: 'mp3' }));
    assert.equal(r.headers.get('x-provider'), 'b', r.text);
    assert.equal(dg.count, 1, 'a 429 is not retried');
    dg.behave({ mode: 'ok' });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), format: 'mp3' }));
    assert.equal(r2.headers.get('x-provider'), 'b', 'still cooling down');
    assert.equal(dg.count, 1);
    await sleep(2200);
    const r3 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), format: 'mp3' }));
    assert.equal(r3.headers.get('x-provider'), 'dg', 'back after Retry-After');
  });

  it('402 is out of credit: no retry, the fallback, else 502 provider_quota_exhausted', async () => {
    dg.behave({ mode: 'quota' });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('quota'), format: 'mp3' }));
    assert.equal(r.headers.get('x-provider'), 'b', r.text);
    assert.equal(dg.count, 1);
    const only = await req(vg, 'POST', '/v1/tts', json({ text: fresh('quota'), format: 'mp3', provider: 'dg' }));
    assertError(only, 502, 'provider_quota_exhausted', '402');
    assert.equal(dg.count, 2, 'never retried');
  });

  it('a refused key is a 502 provider_auth_failed without the upstream text', async () => {
    dg.setKey('another-key');
    const r = await req(vg, 'POST', '/v1/stt?provider=dg', { body: audio('auth'), headers: { 'Content-Type': 'audio/wav' } });
    assertError(r, 502, 'provider_auth_failed', '401');
    assert.ok(!r.text.includes('Invalid credentials'), r.text);
    assert.equal(dg.count, 1);
    dg.behave({ mode: 'auth', echo: KEY });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('auth'), format: 'mp3', provider: 'dg' }));
    assertError(r2, 502, 'provider_auth_failed', '401 echoing the key');
    assert.ok(!r2.text.includes(KEY.slice(0, 12)));
  });

  it('input deepgram refuses is a 400 provider_rejected_input; the fallback is not tried', async () => {
    dg.behave({ mode: 'input' });
    const r = await req(vg, 'POST', '/v1/stt', { body: audio('bad'), headers: { 'Content-Type': 'audio/wav' } });
    assertError(r, 400, 'provider_rejected_input', '400');
    assert.match(r.json.error.message, /corrupt or unsupported data/);
    assert.equal(dg.count, 1);
    assert.equal(b.count, 0);
  });

  it('garbage under 200 is a 502 bad_provider_response and is not cached', async () => {
    dg.behave({ mode: 'garbage' });
    const wav = audio('garbage');
    const r = await req(vg, 'POST', '/v1/stt?provider=dg', { body: wav, headers: { 'Content-Type': 'audio/wav' } });
    assertError(r, 502, 'bad_provider_response', 'html');
    const text = fresh('garbage');
    assertError(await req(vg, 'POST', '/v1/tts', json({ text, format: 'mp3', provider: 'dg' })),
      502, 'bad_provider_response', 'JSON instead of audio');
    dg.behave({ mode: 'ok' });
    const r2 = await req(vg, 'POST', '/v1/stt?provider=dg', { body: wav, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.cache, 'miss');
  });

  it('a hanging deepgram is a 504 within the request budget', async () => {
    dg.behave({ mode: 'hang' });
    const t0 = Date.now();
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('hang'), format: 'mp3', provider: 'dg' }));
    const took = Date.now() - t0;
    assertError(r, 504, 'provider_timeout', 'hang');
    assert.ok(took >= 2400 && took < 4500, `answered after ${took} ms`);
  });
});
