// The gateway against fake OpenAI-compatible providers (issue 6, SPEC §5,
// §6, §7; providers.md §9): a miss calls the provider once and then hits;
// 1000 concurrent identical misses make exactly one upstream call;
// retries, fallback on 500, cool-down after a 429, quota and auth errors,
// garbage answers, a hanging provider answered 504 within the budget,
// every provider unavailable answered 503 with Retry-After, a full
// bulkhead passing to the next provider, hits served at full speed while
// 500 calls hang, X-Request-ID reaching the provider, JSON mode with a
// fetchable audio_url, and the provider metrics.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, req, sleep, sha256, waitForLog } from './lib.mjs';
import { startFakeOpenAI, speechAudio, transcriptFor, wavFile } from './fakeprov.mjs';

const SLOW = 180000;
const json = (o, h = {}) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json', ...h } });
let seq = 0;
const fresh = (s = 'text') => `${s} ${Date.now()} ${++seq}`;

async function stopClean(vg) {
  const res = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

function provider(fake, extra = {}) {
  return {
    type: 'openai', base_url: fake.url, api_key_env: 'FAKE_KEY', timeout_ms: 5000,
    max_retries: 1, retry_base_ms: 10, retry_max_ms: 20, ...extra,
    breaker: { failure_threshold: 1000, failure_rate_threshold: 1, window_size: 1000, min_calls: 1000, ...(extra.breaker || {}) },
  };
}

async function stats(vg) { return (await req(vg, 'GET', '/stats')).json; }

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error?.code, code, `${what}: ${res.text}`);
  assert.ok(res.json.error.message.length > 0);
}

// Two fakes that want the key sk-fake, and voxgate configured by
// config(a, b) with that key in FAKE_KEY.
async function startPair(config) {
  const a = await startFakeOpenAI({ apiKey: 'sk-fake' });
  const b = await startFakeOpenAI({ apiKey: 'sk-fake' });
  const vg = await startVoxgate({ config: config(a, b), env: { FAKE_KEY: 'sk-fake' } });
  return { a, b, vg };
}

describe('gateway with an OpenAI-compatible provider and a fallback', { timeout: SLOW }, () => {
  let a, b, vg;
  before(async () => {
    ({ a, b, vg } = await startPair((fa, fb) => ({
      limits: { max_connections: 4096 },
      providers: { a: provider(fa), b: provider(fb) },
      models: { 'tts-1': ['a', 'b'], 'whisper-1': ['a', 'b'] },
      gateway: { timeout_ms: 2500 },
    })));
  });
  after(async () => { await stopClean(vg); await a.close(); await b.close(); });
  beforeEach(() => { a.reset(); b.reset(); });

  it('a miss calls the provider once, the same request then hits; the request id goes upstream', async () => {
    const input = fresh('hello');
    const body = json({ model: 'tts-1', input, voice: 'alloy' }, { 'X-Request-ID': 'trace-me-1' });
    const r1 = await req(vg, 'POST', '/v1/audio/speech', body);
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.headers.get('content-type'), 'audio/mpeg');
    assert.equal(r1.headers.get('x-cache'), 'MISS');
    assert.equal(r1.headers.get('x-provider'), 'a');
    assert.ok(r1.buf.equals(speechAudio({ model: 'tts-1', input, voice: 'alloy' })), 'the provider\'s bytes');
    assert.equal(a.count, 1);
    const call = a.calls[0];
    assert.equal(call.headers['x-request-id'], 'trace-me-1');
    assert.equal(call.headers.authorization, 'Bearer sk-fake');
    assert.equal(call.json.response_format, 'mp3');
    const r2 = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input, voice: 'alloy' }));
    assert.equal(r2.headers.get('x-cache'), 'HIT');
    assert.ok(r2.buf.equals(r1.buf));
    assert.equal(a.count, 1, 'a hit calls nobody');
    assert.equal(b.count, 0);
    // Log lines are flushed by the logger every few ms, not per request.
    const log = await waitForLog(vg, (l) => l.msg === 'provider call' && l.request_id === 'trace-me-1');
    assert.equal(log.provider, 'a');
    assert.equal(log.upstream_id, 'req_1');
    assert.equal(log.attempt, 1);
  });

  it('1000 concurrent identical misses make exactly one upstream call', async () => {
    a.behave({ delayMs: 400 });
    const input = fresh('together');
    const before_ = (await stats(vg)).gateway.coalesced;
    const all = await Promise.all(Array.from({ length: 1000 }, () =>
      req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input, voice: 'alloy' }))));
    assert.equal(a.count, 1, 'one call for all of them');
    const want = speechAudio({ model: 'tts-1', input, voice: 'alloy' });
    for (const r of all) {
      assert.equal(r.status, 200, r.text);
      assert.ok(r.buf.equals(want));
    }
    const s = await stats(vg);
    assert.ok(s.gateway.coalesced - before_ >= 900, `coalesced ${s.gateway.coalesced - before_}`);
    assert.ok(s.providers.a.coalesced >= 900);
  });

  it('retries a 5xx, then falls back to the next provider', async () => {
    a.behave({ mode: 'fail', status: 500 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('fallback'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(a.count, 2, 'one attempt plus max_retries = 1');
    assert.equal(b.count, 1);
    // A 503 once, then fine: the retry on the same provider answers.
    a.behave({ mode: 'fail', status: 503, failFirst: 1 });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('retry'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r2.headers.get('x-provider'), 'a');
    assert.equal(a.count, 4);
    const s = await stats(vg);
    assert.ok(s.providers.a.retries >= 2);
    assert.ok(s.providers.a.failures >= 3);
  });

  it('a 429 cools the provider down for its Retry-After; the next one answers', async () => {
    a.behave({ mode: 'rate_limit', retryAfter: 2 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(a.count, 1, 'a 429 is not retried on the same provider');
    a.behave({ mode: 'ok' });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r2.headers.get('x-provider'), 'b', 'still cooling down');
    assert.equal(a.count, 1, 'a is not called while it cools down');
    await sleep(2200);
    const r3 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('cool'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r3.headers.get('x-provider'), 'a', 'back after Retry-After');
    assert.ok((await stats(vg)).providers.a.cooldowns >= 1);
  });

  it('every provider rate-limited: 503 with Retry-After until the first may take calls', async () => {
    a.behave({ mode: 'rate_limit', retryAfter: 3 });
    b.behave({ mode: 'rate_limit', retryAfterMs: 1500 });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('down'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assertError(r, 503, 'providers_unavailable', 'all 429');
    assert.equal(r.headers.get('retry-after'), '2', 'the earliest: b after 1.5 s');
    assert.equal(r.headers.get('x-cache'), 'MISS');
    // While both cool down nobody is called at all.
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text: fresh('down'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assertError(r2, 503, 'providers_unavailable', 'cooling');
    assert.equal(a.count + b.count, 2);
    await sleep(3100);
  });

  it('quota and auth errors move on without retries; when all fail, a clear 502', async () => {
    a.behave({ mode: 'quota' });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('quota'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(a.count, 1);
    b.behave({ mode: 'quota' });
    assertError(await req(vg, 'POST', '/v1/tts', json({ text: fresh('quota'), model: 'tts-1', voice: 'alloy', format: 'mp3' })),
      502, 'provider_quota_exhausted', 'both out of quota');
    a.behave({ mode: 'auth' });
    b.behave({ mode: 'auth' });
    const au = await req(vg, 'POST', '/v1/tts', json({ text: fresh('auth'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assertError(au, 502, 'provider_auth_failed', 'both refuse the key');
    assert.ok(!au.text.includes('platform.openai.com'), 'upstream auth text is not echoed');
  });

  it('input the provider refuses is a 400; the fallback is not tried', async () => {
    a.behave({ mode: 'fail', status: 400, message: 'Input text is not acceptable.' });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('bad'), model: 'tts-1', voice: 'alloy', format: 'mp3' }));
    assertError(r, 400, 'provider_rejected_input', 'a 400 upstream');
    assert.equal(b.count, 0);
  });

  it('garbage from the only provider is a 502 bad_provider_response, never cached', async () => {
    a.behave({ mode: 'garbage', garbage: 'json' });
    const text = fresh('garbage');
    const r = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'a', voice: 'alloy', format: 'mp3' }));
    assertError(r, 502, 'bad_provider_response', 'JSON instead of audio');
    a.behave({ mode: 'ok' });
    const r2 = await req(vg, 'POST', '/v1/tts', json({ text, provider: 'a', voice: 'alloy', format: 'mp3' }));
    assert.equal(r2.status, 200);
    assert.equal(r2.headers.get('x-cache'), 'MISS');
  });

  it('a hanging provider gets a 504 within the request budget', async () => {
    a.behave({ mode: 'hang' });
    const t0 = Date.now();
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('hang'), provider: 'a', voice: 'alloy', format: 'mp3' }));
    const took = Date.now() - t0;
    assertError(r, 504, 'provider_timeout', 'hang');
    assert.ok(took >= 2400 && took < 4500, `answered after ${took} ms (budget 2500)`);
    a.releaseHung();
  });

  it('Accept: application/json answers metadata with a fetchable audio_url', async () => {
    const text = fresh('json mode');
    const r = await req(vg, 'POST', '/v1/tts', json({ text, model: 'tts-1', voice: 'alloy', format: 'wav' }, { Accept: 'application/json' }));
    assert.equal(r.status, 200, r.text);
    const want = speechAudio({ model: 'tts-1', input: text, voice: 'alloy', response_format: 'wav' });
    assert.equal(r.json.provider, 'a');
    assert.equal(r.json.cache, 'miss');
    assert.equal(r.json.content_type, 'audio/wav');
    assert.equal(r.json.bytes, want.length);
    assert.equal(r.json.sha256, sha256(want));
    const audio = await fetch(new URL(r.json.audio_url, vg.url));
    assert.equal(audio.status, 200);
    assert.ok(Buffer.from(await audio.arrayBuffer()).equals(want));
  });

  it('transcriptions: formats, one call per distinct request, then hits', async () => {
    const audio = wavFile(Buffer.alloc(48000, 1));
    const boundary = 'vgtestboundary';
    const form = (fields) => {
      const parts = Object.entries(fields).map(([k, v]) => `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`);
      return {
        body: Buffer.concat([Buffer.from(parts.join('')),
          Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`),
          audio, Buffer.from(`\r\n--${boundary}--\r\n`)]),
        headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}`, 'X-Stainless-Lang': 'js', 'OpenAI-Organization': 'org-x' },
      };
    };
    const j = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'whisper-1', language: 'en' }));
    assert.equal(j.status, 200, j.text);
    assert.equal(j.json.text, transcriptFor(audio));
    assert.equal(a.count, 1);
    const fields = a.calls[0].fields;
    assert.equal(fields.model, 'whisper-1');
    assert.equal(fields.language, 'en');
    assert.equal(a.calls[0].headers['x-stainless-lang'], undefined, 'SDK headers are not forwarded');
    assert.equal(a.calls[0].headers['openai-organization'], undefined);
    const t = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'whisper-1', language: 'en', response_format: 'text' }));
    assert.equal(t.status, 200);
    assert.match(t.headers.get('content-type'), /^text\/plain/);
    assert.equal(t.text.trim(), transcriptFor(audio));
    assert.equal(a.count, 2, 'another response_format is another entry');
    const again = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'whisper-1', language: 'en', response_format: 'text' }));
    assert.equal(again.headers.get('x-cache'), 'HIT');
    assert.equal(a.count, 2);
    const v = await req(vg, 'POST', '/v1/audio/transcriptions', form({ model: 'whisper-1', response_format: 'verbose_json', 'timestamp_granularities[]': 'word' }));
    assert.equal(v.status, 200, v.text);
    assert.equal(typeof v.json.duration, 'number');
    assert.deepEqual(a.calls[2].fields['timestamp_granularities[]'], ['word']);
    const st = await req(vg, 'POST', '/v1/stt?language=en&provider=b', { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(st.status, 200, st.text);
    assert.equal(st.json.text, transcriptFor(audio));
    assert.equal(st.json.provider, 'b');
    assert.equal(st.json.language, 'en');
  });

  it('/v1/models lists the configured models and their chains', async () => {
    const m = await req(vg, 'GET', '/v1/models');
    assert.equal(m.status, 200);
    const tts = m.json.data.find((x) => x.id === 'tts-1');
    assert.deepEqual(tts.providers, ['a', 'b']);
    assertError(await req(vg, 'POST', '/v1/audio/speech', json({ model: 'nope-1', input: 'hi', voice: 'alloy' })),
      400, 'unknown_model', 'an unconfigured model');
  });

  it('/stats and /metrics carry the provider figures', async () => {
    const s = await stats(vg);
    for (const k of ['calls', 'failures', 'timeouts', 'retries', 'coalesced', 'cooldowns', 'skipped'])
      assert.equal(typeof s.providers.a[k], 'number', k);
    assert.equal(typeof s.providers.a.latency.p50_us, 'number');
    const m = await req(vg, 'GET', '/metrics');
    assert.match(m.text, /voxgate_provider_calls_total\{provider="a"\} \d+/);
    assert.match(m.text, /voxgate_provider_latency_seconds_bucket\{provider="a",le=/);
  });
});

describe('gateway concurrency slots and hanging calls', { timeout: SLOW }, () => {
  let a, b, vg;
  before(async () => {
    a = await startFakeOpenAI();
    b = await startFakeOpenAI();
    vg = await startVoxgate({
      config: {
        threads: 2,
        limits: { max_connections: 4096 },
        providers: {
          a: provider(a, { max_concurrency: 1000, max_queue: 0, timeout_ms: 20000 }),
          b: provider(b, { max_concurrency: 1, max_queue: 0 }),
          c: provider(a, { max_concurrency: 1, max_queue: 0, timeout_ms: 20000 }),
        },
        models: { pair: ['c', 'b'] },
        gateway: { timeout_ms: 30000 },
      },
      env: { FAKE_KEY: 'sk-fake' },
    });
  });
  after(async () => { a.releaseHung(); b.releaseHung(); await stopClean(vg); await a.close(); await b.close(); });

  it('a full bulkhead passes the call to the next provider', async () => {
    a.behave({ mode: 'hang' });
    const first = req(vg, 'POST', '/v1/tts', json({ text: fresh('slot'), model: 'pair', voice: 'alloy', format: 'mp3' }));
    await a.waitForCalls(1);
    const r = await req(vg, 'POST', '/v1/tts', json({ text: fresh('slot'), model: 'pair', voice: 'alloy', format: 'mp3' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b', 'c has one slot and no queue');
    assert.ok((await stats(vg)).providers.c.skipped >= 1);
    a.behave({ mode: 'ok' });
    a.releaseHung();
    const f = await first;
    assert.equal(f.status, 200, `the cut call falls back: ${f.text}`);
  });

  it('hits are answered at full speed while 500 provider calls hang', async () => {
    a.reset();
    const cached = await req(vg, 'POST', '/v1/tts', json({ text: 'cached line', provider: 'a', voice: 'alloy', format: 'mp3' }));
    assert.equal(cached.status, 200, cached.text);
    a.behave({ mode: 'hang' });
    const pending = Array.from({ length: 500 }, (_, i) =>
      req(vg, 'POST', '/v1/tts', json({ text: `hanging ${i} ${Date.now()}`, provider: 'a', voice: 'alloy', format: 'mp3' })));
    await a.waitForCalls(501, 30000);
    for (let i = 0; i < 300 && a.hung < 500; i++) await sleep(20);
    assert.equal(a.hung, 500);
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) {
      const h = await req(vg, 'POST', '/v1/tts', json({ text: 'cached line', provider: 'a', voice: 'alloy', format: 'mp3' }));
      assert.equal(h.headers.get('x-cache'), 'HIT');
    }
    const took = Date.now() - t0;
    assert.ok(took < 5000, `200 sequential hits took ${took} ms while 500 calls hang`);
    a.behave({ mode: 'ok' });
    a.releaseHung();
    const done = await Promise.all(pending);
    // Each cut call is retried once on a (now fine) and answers.
    assert.ok(done.every((r) => r.status === 200), done.map((r) => r.status).join(','));
  });
});

describe('gateway: a provider\'s voice map', { timeout: SLOW }, () => {
  let a, b, vg;
  before(async () => {
    ({ a, b, vg } = await startPair((fa, fb) => ({
      providers: { a: provider(fa, { max_retries: 0 }), b: provider(fb, { voices: { alloy: 'nova', echo: 'onyx' } }) },
      models: { 'tts-1': ['a', 'b'] },
    })));
  });
  after(async () => { await stopClean(vg); await a.close(); await b.close(); });

  it('a fallback sends the voice as the next provider names it; unmapped voices go as they are', async () => {
    a.behave({ mode: 'fail', status: 500 });
    const input = fresh('mapped');
    const r = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input, voice: 'alloy' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-provider'), 'b');
    assert.equal(a.calls[0].json.voice, 'alloy', 'the first provider has no map');
    assert.equal(b.calls[0].json.voice, 'nova');
    assert.ok(r.buf.equals(speechAudio({ model: 'tts-1', input, voice: 'nova' })));
    const r2 = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input: fresh('unmapped'), voice: 'shimmer' }));
    assert.equal(r2.status, 200, r2.text);
    assert.equal(b.calls[1].json.voice, 'shimmer');
    // The entry is keyed by the voice b was sent: asking b for nova is a hit.
    const r3 = await req(vg, 'POST', '/v1/tts', json({ text: input, provider: 'b', voice: 'nova', format: 'mp3' }));
    assert.equal(r3.status, 200, r3.text);
    assert.equal(r3.headers.get('x-cache'), 'HIT');
    assert.equal(b.count, 2);
  });
});
