// The yandex provider (issue 7, providers.md §5) through the whole
// gateway against fake-yandex.mjs: TTS on /v1/tts and /v1/audio/speech
// (every format, the form fields, Api-Key and IAM auth, the client request
// id), STT on /v1/stt and /v1/audio/transcriptions (WAV as lpcm, Ogg Opus),
// each upstream error class mapped to voxgate's status and code, fallback
// to a second provider, one upstream call per distinct request, refusals
// before any call, and the keys never reaching voxgate's logs.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, req, sleep, waitForLog } from './lib.mjs';
import { startFakeYandex, synthAudio, recognized } from './fake-yandex.mjs';
import { startFakeOpenAI, speechAudio, wavFile } from './fakeprov.mjs';

const SLOW = 120000;
const KEY = 'AQVN1yandexApiKeyForTests0123456789';
const IAM = 't1.9euelZqIAMtokenForTests0123456789';
const WRONG = 'AQVNwrongKeyWrongKeyWrongKey012345';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const json = (o, h = {}) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json', ...h } });
let seq = 0;
const fresh = (s = 'текст') => `${s} ${Date.now()} ${++seq}`;

function ya(fake, extra = {}) {
  return {
    type: 'yandex', base_url: fake.url, api_key_env: 'YA_KEY', timeout_ms: 1500, max_retries: 1,
    retry_base_ms: 10, retry_max_ms: 20, ...extra,
    breaker: { failure_threshold: 1000, failure_rate_threshold: 1, window_size: 1000, min_calls: 1000 },
  };
}

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error?.code, code, `${what}: ${res.text}`);
}

// A 16-bit mono PCM tone at rate, as a WAV file.
function wav(rate, ms, seed = 1) {
  const n = Math.round((rate * ms) / 1000);
  const pcm = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) pcm.writeInt16LE(Math.round(5000 * Math.sin((i * seed) / 7)), i * 2);
  return wavFile(pcm, rate);
}

// An Ogg page with an OpusHead: what voxgate sniffs as Ogg Opus.
function oggOpus(seed) {
  const b = Buffer.alloc(256, seed);
  b.write('OggS', 0, 'latin1');
  b[4] = 0; b[5] = 2;
  b.write('OpusHead', 28, 'latin1');
  b[36] = 1; b[37] = 1;
  return b;
}

describe('yandex provider through the gateway', { timeout: SLOW }, () => {
  let fake, other, vg;
  before(async () => {
    fake = await startFakeYandex({ apiKey: KEY, iamToken: IAM, folderId: 'b1gfolder' });
    other = await startFakeOpenAI({ apiKey: 'sk-other' });
    vg = await startVoxgate({
      config: {
        providers: {
          ya: ya(fake),
          yi: ya(fake, { api_key_env: 'YA_IAM', auth: 'iam', folder_id: 'b1gfolder' }),
          ybad: ya(fake, { api_key_env: 'YA_WRONG' }),
          yslow: ya(fake, { max_retries: 0 }),
          b: {
            type: 'openai', base_url: other.url, api_key_env: 'OTHER_KEY', timeout_ms: 2000,
            breaker: { failure_threshold: 1000, failure_rate_threshold: 1, window_size: 1000, min_calls: 1000 },
          },
        },
        models: {
          'tts-1': ['ya', 'b'], 'whisper-1': ['ya', 'b'],
          'ya-tts': ['ya'], 'ya-stt': ['ya'],
        },
        gateway: { timeout_ms: 4000, tts_model: 'tts-1', stt_model: 'whisper-1' },
      },
      env: { YA_KEY: KEY, YA_IAM: IAM, YA_WRONG: WRONG, OTHER_KEY: 'sk-other' },
    });
  });
  after(async () => {
    const res = await stopVoxgate(vg);
    cleanup(vg);
    await fake.close();
    await other.close();
    assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
  });
  beforeEach(() => { fake.reset(); other.reset(); });

  it('/v1/tts: the form Yandex wants, Api-Key auth, a UUID client id; a repeat is a hit', async () => {
    const text = fresh('Привет, мир & 1+1=2');
    const body = json({ text, provider: 'ya', format: 'mp3', voice: 'filipp' }, { 'X-Request-ID': 'ya-trace-1' });
    const r = await req(vg, 'POST', '/v1/tts', body);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('content-type'), 'audio/mpeg');
    assert.equal(r.headers.get('x-provider'), 'ya');
    assert.equal(r.headers.get('x-cache'), 'MISS');
    const call = fake.calls[0];
    assert.equal(call.path, '/speech/v1/tts:synthesize');
    assert.deepEqual(call.form, { text, lang: 'ru-RU', voice: 'filipp', speed: '1', format: 'mp3' });
    assert.ok(r.buf.equals(synthAudio(call.form)), 'the upstream bytes');
    assert.equal(call.headers.authorization, `Api-Key ${KEY}`);
    assert.equal(call.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.equal(call.headers['x-request-id'], 'ya-trace-1');
    assert.match(call.headers['x-client-request-id'], UUID);
    const again = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', format: 'mp3', voice: 'filipp' }));
    assert.equal(again.headers.get('x-cache'), 'HIT');
    assert.ok(again.buf.equals(r.buf));
    assert.equal(fake.count, 1, 'one upstream call');
    const log = await waitForLog(vg, (l) => l.msg === 'provider call' && l.request_id === 'ya-trace-1');
    assert.equal(log.upstream_id, 'ya-req-1');
  });

  it('/v1/tts formats: wav gets a header over lpcm 48 kHz, pcm says its rate, opus is Ogg', async () => {
    const text = fresh('formats');
    const w = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', voice: 'alena' }));
    assert.equal(w.status, 200, w.text);
    assert.equal(w.headers.get('content-type'), 'audio/wav');
    assert.equal(fake.calls[0].form.format, 'lpcm');
    assert.equal(fake.calls[0].form.sampleRateHertz, '48000');
    const pcm = synthAudio(fake.calls[0].form);
    assert.equal(w.buf.toString('latin1', 0, 4), 'RIFF');
    assert.equal(w.buf.readUInt32LE(24), 48000);
    assert.equal(w.buf.readUInt16LE(22), 1, 'mono');
    assert.ok(w.buf.subarray(44).equals(pcm), 'the samples after the header');
    const p = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', voice: 'alena', format: 'pcm' }));
    assert.equal(p.headers.get('content-type'), 'audio/pcm;rate=48000');
    assert.ok(p.buf.equals(pcm));
    const o = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', voice: 'jane', format: 'opus', speed: 1.5, instructions: 'good' }));
    assert.equal(o.status, 200, o.text);
    assert.equal(o.headers.get('content-type'), 'audio/ogg;codecs=opus');
    assert.deepEqual(fake.calls[2].form, { text, lang: 'ru-RU', voice: 'jane', emotion: 'good', speed: '1.5', format: 'oggopus' });
    assert.equal(fake.count, 3, 'three formats, three entries');
  });

  it('/v1/audio/speech: default mp3, the voice\'s language when none is given', async () => {
    const input = fresh('hello');
    const r = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'ya-tts', input, voice: 'john' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('content-type'), 'audio/mpeg');
    assert.deepEqual(fake.calls[0].form, { text: input, lang: 'en-US', voice: 'john', speed: '1', format: 'mp3' });
    const shared = await req(vg, 'POST', '/v1/tts', json({ text: input, provider: 'ya', voice: 'john', format: 'mp3' }));
    assert.equal(shared.headers.get('x-cache'), 'HIT', '/v1/tts and /v1/audio/speech share the entry');
    assert.equal(fake.count, 1);
  });

  it('IAM mode: Bearer token and folderId in the form and the query', async () => {
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('iam'), provider: 'yi', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(fake.calls[0].headers.authorization, `Bearer ${IAM}`);
    assert.equal(fake.calls[0].form.folderId, 'b1gfolder');
    assert.equal(fake.calls[0].form.voice, 'alena', 'the default voice');
    const audio = wav(16000, 200, 3);
    const s = await req(vg, 'POST', '/v1/stt?provider=yi', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(s.status, 200, s.text);
    assert.equal(fake.calls[1].query.folderId, 'b1gfolder');
    assert.equal(fake.calls[1].headers.authorization, `Bearer ${IAM}`);
  });

  it('/v1/stt: WAV goes out as lpcm at its rate, or converted to 16 kHz; a repeat is a hit', async () => {
    const audio = wav(16000, 500, 5);
    const r = await req(vg, 'POST', '/v1/stt?provider=ya&language=ru', { body: audio, headers: { 'Content-Type': 'audio/wav', 'X-Request-ID': 'ya-stt-1' } });
    assert.equal(r.status, 200, r.text);
    const call = fake.calls[0];
    assert.equal(call.path, '/speech/v1/stt:recognize');
    assert.deepEqual(call.query, { lang: 'ru-RU', topic: 'general', profanityFilter: 'false', rawResults: 'false', format: 'lpcm', sampleRateHertz: '16000' });
    assert.ok(call.body.equals(audio.subarray(44)), 'the samples, without the header');
    assert.match(call.headers['x-client-request-id'], UUID);
    assert.equal(r.json.text, recognized(call.body));
    assert.equal(r.json.provider, 'ya');
    assert.equal(r.json.language, 'ru');
    assert.equal(r.json.duration_ms, 500);
    const again = await req(vg, 'POST', '/v1/stt?provider=ya&language=ru', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(again.status, 200);
    assert.match(again.json.cache, /^hit/);
    assert.equal(fake.count, 1);
    const cd = wav(44100, 300, 6);
    const c = await req(vg, 'POST', '/v1/stt?provider=ya&language=en-US', { body: cd, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(c.status, 200, c.text);
    assert.equal(fake.calls[1].query.sampleRateHertz, '16000');
    assert.equal(fake.calls[1].query.lang, 'en-US');
    assert.ok(Math.abs(fake.calls[1].body.length - 16000 * 0.3 * 2) <= 8, `converted length ${fake.calls[1].body.length}`);
  });

  it('/v1/stt with Ogg Opus; /v1/audio/transcriptions json and text', async () => {
    const ogg = oggOpus(seq + 7);
    const r = await req(vg, 'POST', '/v1/stt?provider=ya', { body: ogg, headers: { 'Content-Type': 'audio/ogg' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(fake.calls[0].query.format, 'oggopus');
    assert.equal(fake.calls[0].query.sampleRateHertz, undefined);
    assert.equal(fake.calls[0].headers['content-type'], 'audio/ogg;codecs=opus');
    assert.ok(fake.calls[0].body.equals(ogg));
    const audio = wav(8000, 250, 9);
    const boundary = 'yaboundary';
    const form = (fields) => ({
      body: Buffer.concat([
        Buffer.from(Object.entries(fields).map(([k, v]) => `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`).join('')),
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`),
        audio, Buffer.from(`\r\n--${boundary}--\r\n`)]),
      headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` },
    });
    const j = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'ya-stt', language: 'ru' }));
    assert.equal(j.status, 200, j.text);
    assert.equal(j.json.text, recognized(audio.subarray(44)));
    assert.equal(fake.calls[1].query.sampleRateHertz, '8000');
    const t = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'ya-stt', language: 'ru', response_format: 'text' }));
    assert.equal(t.status, 200, t.text);
    assert.match(t.headers.get('content-type'), /^text\/plain/);
    assert.equal(t.text.trim(), recognized(audio.subarray(44)));
    const v = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'ya-stt', response_format: 'verbose_json' }));
    assertError(v, 400, 'unsupported_format', 'verbose_json');
    assert.match(v.json.error.message, /json, text/);
    assert.equal(fake.count, 3, 'the refused format made no call');
  });

  it('refusals before any call: format, media type, speed, voice, language', async () => {
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: 'x', provider: 'ya', format: 'flac' })), 400, 'unsupported_format', 'flac');
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: 'x', provider: 'ya', format: 'mp3', speed: 3.5 })), 400, 'unsupported_speed', 'speed');
    const v = await req(vg, 'POST', '/v1/tts', json({ text: 'x', provider: 'ya', format: 'mp3', voice: 'alloy' }));
    assertError(v, 400, 'unknown_voice', 'alloy');
    assert.match(v.json.error.message, /alena/);
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: 'x', provider: 'ya', language: 'fr' })), 400, 'unsupported_language', 'fr');
    const mp3 = Buffer.concat([Buffer.from('ID3\x04\0\0\0\0\0\0', 'latin1'), Buffer.alloc(2000, 0x55)]);
    const m = await req(vg, 'POST', '/v1/stt?provider=ya', { body: mp3, headers: { 'Content-Type': 'audio/mpeg' } });
    assertError(m, 415, 'unsupported_media_type', 'mp3 upload');
    assert.match(m.json.error.message, /Ogg Opus/);
    const long = wav(8000, 31000);
    assertError(await req(vg, 'POST', '/v1/stt?provider=ya', { body: long, headers: { 'Content-Type': 'audio/wav' } }), 400, 'audio_too_long', '31 s');
    assert.equal(fake.count, 0, 'nothing reached Yandex');
  });

  it('a voice/language mismatch is Yandex\'s 400: provider_rejected_input with its message', async () => {
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('mismatch'), provider: 'ya', voice: 'filipp', language: 'en', format: 'mp3' }));
    assertError(r, 400, 'provider_rejected_input', 'mismatch');
    assert.match(r.json.error.message, /applicable for Ru language only: filipp/);
    assert.equal(fake.count, 1, 'not retried');
  });

  it('bad key (401) and missing role (403): provider_auth_failed, upstream text not echoed', async () => {
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('badkey'), provider: 'ybad', format: 'mp3' }));
    assertError(r, 502, 'provider_auth_failed', 'wrong key');
    assert.equal(fake.count, 1, 'not retried');
    assert.doesNotMatch(r.text, /token is invalid|AQVN/);
    fake.behave({ mode: 'fail', status: 403, message: 'no role ai.speechkit-tts.user' });
    const f = await req(vg, 'POST', '/v1/tts', json({ text: fresh('role'), provider: 'ya', format: 'mp3' }));
    assertError(f, 502, 'provider_auth_failed', '403');
    assert.doesNotMatch(f.text, /speechkit-tts/);
  });

  it('5xx: 500/503/504 are retried; 501 is not; a chain falls back', async () => {
    for (const status of [500, 503, 504]) {
      fake.reset();
      fake.behave({ mode: 'fail', status });
      const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh(`s${status}`), provider: 'ya', format: 'mp3' }));
      assertError(r, 502, 'provider_error', `${status}`);
      assert.equal(fake.count, 2, `${status}: one attempt plus max_retries = 1`);
    }
    fake.reset();
    fake.behave({ mode: 'fail', status: 503, failFirst: 1 });
    const ok = await req(vg, 'POST', '/v1/tts', json({ text: fresh('once'), provider: 'ya', format: 'mp3' }));
    assert.equal(ok.status, 200, ok.text);
    assert.equal(fake.count, 2);
    fake.reset();
    fake.behave({ mode: 'fail', status: 501, message: 'method not implemented' });
    const u = await req(vg, 'POST', '/v1/tts', json({ text: fresh('501'), provider: 'ya', format: 'mp3' }));
    assertError(u, 400, 'provider_rejected_input', '501');
    assert.equal(fake.count, 1, '501 is not retried');
    fake.reset();
    fake.behave({ mode: 'fail', status: 500 });
    const text = fresh('chain');
    const fb = await req(vg, 'POST', '/v1/tts', json({ text, format: 'mp3' }));
    assert.equal(fb.status, 200, fb.text);
    assert.equal(fb.headers.get('x-provider'), 'b');
    assert.equal(fake.count, 2);
    assert.equal(other.count, 1);
    assert.ok(fb.buf.equals(speechAudio({ model: 'tts-1', input: text, voice: 'alloy', response_format: 'mp3' })));
  });

  it('2xx garbage is bad_provider_response and is not cached', async () => {
    fake.behave({ mode: 'garbage' });
    const text = fresh('garbage');
    assertError(await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', format: 'mp3' })), 502, 'bad_provider_response', 'tts');
    const audio = wav(16000, 100, 11);
    assertError(await req(vg, 'POST', '/v1/stt?provider=ya', { body: audio, headers: { 'Content-Type': 'audio/wav' } }), 502, 'bad_provider_response', 'stt');
    fake.behave({ mode: 'ok' });
    const r = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'ya', format: 'mp3' }));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-cache'), 'MISS');
  });

  it('a hanging Yandex is a 504 within the budget', async () => {
    fake.behave({ mode: 'hang' });
    const t0 = Date.now();
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('hang'), provider: 'yslow', format: 'mp3' }));
    assertError(r, 504, 'provider_timeout', 'hang');
    assert.ok(Date.now() - t0 < 4500, `took ${Date.now() - t0} ms`);
  });

  it('429 with Retry-After cools the provider down: 503 with Retry-After, then it answers again', async () => {
    fake.behave({ mode: 'rate_limit', retryAfter: 1 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('429'), provider: 'yslow', format: 'mp3' }));
    assertError(r, 503, 'providers_unavailable', '429');
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
    assert.equal(fake.count, 1, 'a 429 is not retried on the same provider');
    fake.behave({ mode: 'ok' });
    const cool = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cooling'), provider: 'yslow', format: 'mp3' }));
    assertError(cool, 503, 'providers_unavailable', 'cooling');
    assert.equal(fake.count, 1, 'no call while cooling');
    await sleep(1100);
    const ok = await req(vg, 'POST', '/v1/tts', json({ text: fresh('after'), provider: 'yslow', format: 'mp3' }));
    assert.equal(ok.status, 200, ok.text);
  });

  it('the keys never reach voxgate\'s logs', async () => {
    await req(vg, 'POST', '/v1/tts', json({ text: fresh('log'), provider: 'ybad', format: 'mp3' }));
    const all = vg.lines.join('\n') + vg.stderr;
    assert.ok(vg.lines.length > 10, 'there are logs to look at');
    for (const k of [KEY, IAM, WRONG]) assert.ok(!all.includes(k) && !all.includes(k.slice(4, 20)), 'a key in the logs');
  });
});
