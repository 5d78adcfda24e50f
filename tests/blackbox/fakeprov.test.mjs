// The fake OpenAI provider itself (fakeprov.mjs), driven with fetch: the
// gateway tests rely on it answering like OpenAI, so it is proven here.
import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFakeOpenAI, speechAudio, transcriptFor, wavFile, parseMultipart } from './fakeprov.mjs';

const KEY = 'sk-fake-test';
const sha = (b) => createHash('sha256').update(b).digest('hex');

function speechReq(fake, body, headers = {}) {
  return fetch(`${fake.url}/audio/speech`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, ...headers },
    body: JSON.stringify(body),
  });
}

// A body shaped like curl -F / the SDKs send: fields, then the file.
function form(fields, file, filename = 'audio.wav', type = 'audio/wav') {
  const fd = new FormData();
  for (const [k, v] of Object.entries(fields))
    for (const x of [].concat(v)) fd.append(k, x);
  if (file) fd.append('file', new Blob([file], { type }), filename);
  return fd;
}

function sttReq(fake, fields, file, opts = {}) {
  return fetch(`${fake.url}/audio/transcriptions`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY}`, ...(opts.headers || {}) },
    body: form(fields, file, opts.filename), signal: opts.signal,
  });
}

async function assertOpenAIError(r, status, type, code, param) {
  assert.equal(r.status, status);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  const j = await r.json();
  assert.equal(typeof j.error.message, 'string');
  assert.equal(j.error.type, type);
  assert.equal(j.error.code, code);
  if (param !== undefined) assert.equal(j.error.param, param);
  return j;
}

const tone = wavFile(Buffer.alloc(24000 * 2)); // one second of silence

describe('fake OpenAI provider', () => {
  let fake;
  before(async () => { fake = await startFakeOpenAI({ apiKey: KEY }); });
  after(async () => { await fake.close(); });
  beforeEach(() => fake.reset());

  it('speech: deterministic audio per format with OpenAI content types', async () => {
    const want = { mp3: 'audio/mpeg', wav: 'audio/wav', pcm: 'audio/pcm', opus: 'audio/opus', aac: 'audio/aac', flac: 'audio/flac' };
    for (const [fmt, type] of Object.entries(want)) {
      const body = { model: 'tts-1', input: 'hello world', voice: 'alloy', response_format: fmt };
      const r = await speechReq(fake, body);
      assert.equal(r.status, 200, fmt);
      assert.equal(r.headers.get('content-type'), type);
      const buf = Buffer.from(await r.arrayBuffer());
      assert.deepEqual(buf, speechAudio(body), fmt);
      if (fmt === 'mp3') assert.deepEqual([...buf.subarray(0, 2)], [0xff, 0xfb]);
    }
    assert.equal(fake.count, 6);
    assert.equal(fake.calls[0].headers['x-request-id'], undefined);
  });

  it('speech: a real 24 kHz mono 16-bit WAV whose length follows the text and speed', async () => {
    const get = async (input, speed = 1) => Buffer.from(await (await speechReq(fake, { model: 'tts-1', input, voice: 'nova', response_format: 'wav', speed })).arrayBuffer());
    const a = await get('short');
    const b = await get('a much longer sentence than the first one');
    const c = await get('a much longer sentence than the first one', 2);
    for (const w of [a, b, c]) {
      assert.equal(w.toString('latin1', 0, 4), 'RIFF');
      assert.equal(w.toString('latin1', 8, 16), 'WAVEfmt ');
      assert.equal(w.readUInt16LE(20), 1);
      assert.equal(w.readUInt16LE(22), 1);
      assert.equal(w.readUInt32LE(24), 24000);
      assert.equal(w.readUInt16LE(34), 16);
      assert.equal(w.readUInt32LE(40), w.length - 44);
      assert.equal(w.readUInt32LE(4), w.length - 8);
    }
    assert.ok(b.length > a.length);
    assert.ok(c.length < b.length);
    assert.notDeepEqual(await get('short'), await get('Short'));
  });

  it('speech: voice as an object, defaults, and what is recorded', async () => {
    const r = await speechReq(fake, { model: 'gpt-4o-mini-tts', input: 'hi', voice: { id: 'voice_1234' }, instructions: 'calm' },
      { 'x-request-id': 'vg-abc', 'x-stainless-lang': 'js' });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'audio/mpeg');
    assert.equal(r.headers.get('x-request-id'), 'req_1');
    const c = fake.calls[0];
    assert.equal(c.method, 'POST');
    assert.equal(c.path, '/v1/audio/speech');
    assert.equal(c.headers['x-request-id'], 'vg-abc');
    assert.equal(c.headers.authorization, `Bearer ${KEY}`);
    assert.equal(c.headers['x-stainless-lang'], 'js');
    assert.deepEqual(c.json.voice, { id: 'voice_1234' });
    assert.equal(c.status, 200);
    assert.equal(c.response.sha256, sha(speechAudio({ model: 'gpt-4o-mini-tts', input: 'hi', voice: { id: 'voice_1234' }, instructions: 'calm' })));
  });

  it('speech: 400 for missing or invalid fields, naming the param', async () => {
    const ok = { model: 'tts-1', input: 'x', voice: 'alloy' };
    const cases = [
      [{ ...ok, model: undefined }, 'model'],
      [{ ...ok, input: undefined }, 'input'],
      [{ ...ok, input: '' }, 'input'],
      [{ ...ok, input: 'x'.repeat(4097) }, 'input'],
      [{ ...ok, voice: undefined }, 'voice'],
      [{ ...ok, voice: 'robot' }, 'voice'],
      [{ ...ok, voice: { name: 'x' } }, 'voice'],
      [{ ...ok, response_format: 'ogg' }, 'response_format'],
      [{ ...ok, speed: 5 }, 'speed'],
      [{ ...ok, speed: 0.1 }, 'speed'],
      [{ ...ok, speed: '1' }, 'speed'],
    ];
    for (const [body, param] of cases) {
      const r = await speechReq(fake, body);
      const j = await r.json();
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
      assert.equal(j.error.type, 'invalid_request_error');
      assert.equal(j.error.param, param);
    }
    const bad = await fetch(`${fake.url}/audio/speech`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body: '{' });
    await assertOpenAIError(bad, 400, 'invalid_request_error', null);
  });

  it('401 invalid_api_key when the key is wrong or missing', async () => {
    const body = { model: 'tts-1', input: 'x', voice: 'alloy' };
    await assertOpenAIError(await speechReq(fake, body, { authorization: 'Bearer nope' }), 401, 'invalid_request_error', 'invalid_api_key');
    const r = await fetch(`${fake.url}/audio/speech`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    await assertOpenAIError(r, 401, 'invalid_request_error', 'invalid_api_key');
    fake.setMode('auth');
    await assertOpenAIError(await speechReq(fake, body), 401, 'invalid_request_error', 'invalid_api_key');
  });

  it('transcriptions: every response format with its content type', async () => {
    const text = transcriptFor(tone);
    assert.match(text, /^transcript of [0-9a-f]{8}$/);
    let r = await sttReq(fake, { model: 'whisper-1' }, tone);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/json');
    assert.deepEqual(await r.json(), { text });
    r = await sttReq(fake, { model: 'whisper-1', response_format: 'text' }, tone);
    assert.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await r.text(), `${text}\n`);
    r = await sttReq(fake, { model: 'whisper-1', response_format: 'srt' }, tone);
    assert.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await r.text(), `1\n00:00:00,000 --> 00:00:01,000\n${text}\n\n`);
    r = await sttReq(fake, { model: 'whisper-1', response_format: 'vtt' }, tone);
    assert.equal(r.headers.get('content-type'), 'text/vtt; charset=utf-8');
    assert.equal(await r.text(), `WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n${text}\n\n`);
    r = await sttReq(fake, { model: 'whisper-1', response_format: 'verbose_json', language: 'en', 'timestamp_granularities[]': ['word', 'segment'] }, tone);
    const v = await r.json();
    assert.equal(v.task, 'transcribe');
    assert.equal(v.language, 'english');
    assert.equal(v.duration, 1);
    assert.equal(v.text, text);
    assert.equal(v.segments.length, 1);
    assert.equal(v.words.length, 3);
    const c = fake.calls.at(-1);
    assert.deepEqual(c.fields['timestamp_granularities[]'], ['word', 'segment']);
    assert.equal(c.fields.language, 'en');
    assert.deepEqual(c.file, { name: 'file', filename: 'audio.wav', contentType: 'audio/wav', bytes: tone.length, sha256: sha(tone) });
    assert.equal(c.parts, undefined);
  });

  it('transcriptions: 400 when file or model is missing or a field is invalid', async () => {
    await assertOpenAIError(await sttReq(fake, { model: 'whisper-1' }, null), 400, 'invalid_request_error', 'missing_required_parameter', 'file');
    await assertOpenAIError(await sttReq(fake, {}, tone), 400, 'invalid_request_error', null, 'model');
    await assertOpenAIError(await sttReq(fake, { model: 'whisper-1', response_format: 'xml' }, tone), 400, 'invalid_request_error', 'invalid_value', 'response_format');
    await assertOpenAIError(await sttReq(fake, { model: 'whisper-1', temperature: '2' }, tone), 400, 'invalid_request_error', 'invalid_value', 'temperature');
    await assertOpenAIError(await sttReq(fake, { model: 'whisper-1', 'timestamp_granularities[]': 'word' }, tone), 400, 'invalid_request_error', 'invalid_value');
    await assertOpenAIError(await sttReq(fake, { model: 'whisper-1' }, tone, { filename: 'audio.txt' }), 400, 'invalid_request_error', 'invalid_value', 'file');
    const raw = await fetch(`${fake.url}/audio/transcriptions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'audio/wav' }, body: tone });
    await assertOpenAIError(raw, 400, 'invalid_request_error', null);
  });

  it('429 with Retry-After and retry-after-ms; 429 insufficient_quota', async () => {
    fake.behave({ mode: 'rate_limit', retryAfter: 3, retryAfterMs: 2500 });
    let r = await speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' });
    await assertOpenAIError(r, 429, 'requests', 'rate_limit_exceeded');
    assert.equal(r.headers.get('retry-after'), '3');
    assert.equal(r.headers.get('retry-after-ms'), '2500');
    assert.equal(r.headers.get('x-request-id'), 'req_1');
    fake.behave({ mode: 'quota' });
    r = await sttReq(fake, { model: 'whisper-1' }, tone);
    await assertOpenAIError(r, 429, 'insufficient_quota', 'insufficient_quota');
    assert.equal(r.headers.get('retry-after'), null);
  });

  it('fail with 500/502/503 and an OpenAI error body', async () => {
    for (const status of [500, 502, 503]) {
      fake.behave({ mode: 'fail', status, retryAfter: status === 503 ? 1 : undefined });
      const r = await speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' });
      await assertOpenAIError(r, status, 'server_error', null);
      assert.equal(r.headers.get('retry-after'), status === 503 ? '1' : null);
    }
  });

  it('fail the first N calls, then succeed; a script of one-shot answers', async () => {
    fake.behave({ failFirst: 2, failWith: { status: 503 } });
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push((await sttReq(fake, { model: 'whisper-1' }, tone)).status);
    assert.deepEqual(codes, [503, 503, 200, 200]);
    fake.behave({ mode: 'rate_limit', retryAfter: 1, failFirst: 1 });
    codes.length = 0;
    for (let i = 0; i < 2; i++) codes.push((await sttReq(fake, { model: 'whisper-1' }, tone)).status);
    assert.deepEqual(codes, [429, 200]);
    fake.behave();
    fake.script({ mode: 'fail', status: 502 }, { mode: 'quota' });
    codes.length = 0;
    for (let i = 0; i < 3; i++) codes.push((await sttReq(fake, { model: 'whisper-1' }, tone)).status);
    assert.deepEqual(codes, [502, 429, 200]);
    assert.deepEqual(fake.calls.map((c) => c.n), [...Array(fake.count).keys()].map((i) => i + 1));
  });

  it('only: a behaviour for one endpoint leaves the other alone', async () => {
    fake.behave({ mode: 'fail', status: 500, only: 'speech' });
    assert.equal((await sttReq(fake, { model: 'whisper-1' }, tone)).status, 200);
    assert.equal((await speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' })).status, 500);
  });

  it('delay, and in-flight concurrency is counted', async () => {
    fake.behave({ delayMs: 150 });
    const t0 = Date.now();
    const rs = await Promise.all(Array.from({ length: 5 }, () => speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' })));
    assert.ok(Date.now() - t0 >= 140);
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200]);
    await Promise.all(rs.map((r) => r.arrayBuffer()));
    assert.equal(fake.maxInFlight, 5);
    assert.equal(fake.inFlight, 0);
  });

  it('hang until the client aborts; reset releases hung calls', async () => {
    fake.behave({ mode: 'hang' });
    const ac = new AbortController();
    const p = sttReq(fake, { model: 'whisper-1' }, tone, { signal: ac.signal });
    await fake.waitForCalls(1);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fake.inFlight, 1);
    ac.abort();
    await assert.rejects(p, { name: 'AbortError' });
    for (let i = 0; i < 50 && fake.inFlight; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(fake.inFlight, 0);
    assert.equal(fake.calls[0].aborted, true);
    const q = speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' });
    for (let i = 0; i < 100 && !fake.hung; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(fake.hung, 1);
    fake.reset();
    await assert.rejects(q);
  });

  it('garbage: JSON that is not a transcript, truncated and destroyed answers', async () => {
    fake.behave({ mode: 'garbage', garbage: 'json' });
    let r = await sttReq(fake, { model: 'whisper-1' }, tone);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { nope: 1 });
    r = await speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' });
    assert.equal(r.headers.get('content-type'), 'application/json');
    fake.behave({ mode: 'garbage', garbage: 'truncate' });
    r = await speechReq(fake, { model: 'tts-1', input: 'x', voice: 'alloy' });
    assert.equal(r.status, 200);
    await assert.rejects(r.arrayBuffer());
    fake.behave({ mode: 'garbage', garbage: 'destroy' });
    await assert.rejects(sttReq(fake, { model: 'whisper-1' }, tone));
  });

  it('unknown paths answer 404 like OpenAI; /v1/models lists models', async () => {
    const r = await fetch(`${fake.url}/audio/nothing`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` } });
    await assertOpenAIError(r, 404, 'invalid_request_error', null);
    const m = await (await fetch(`${fake.url}/models`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.ok(m.data.some((x) => x.id === 'whisper-1'));
  });

  it('parseMultipart reads what FormData writes, binary intact', async () => {
    const bin = Buffer.from([0, 13, 10, 45, 45, 13, 10, 255]);
    const req = new Request('http://x/', { method: 'POST', body: form({ a: '1', 'b[]': ['x', 'y'] }, bin, 'a.mp3', 'audio/mpeg') });
    const parts = parseMultipart(Buffer.from(await req.arrayBuffer()), req.headers.get('content-type'));
    assert.deepEqual(parts.map((p) => p.name), ['a', 'b[]', 'b[]', 'file']);
    assert.deepEqual(parts[3].data, bin);
    assert.equal(parts[3].filename, 'a.mp3');
    assert.equal(parts[3].contentType, 'audio/mpeg');
  });
});
