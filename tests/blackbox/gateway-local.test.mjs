// The gateway on its embedded defaults (issue 6, SPEC §1 and §5): with no
// provider configured, /v1/tts speaks with the offline local provider
// (Flite), the same request again is a cache hit (and still is after a
// restart), and /v1/stt of that speech (pocketsphinx) gives back the
// words. Also the OpenAI-compatible routes on the local provider, JSON
// mode with a fetchable audio_url, /v1/voices and /v1/models, and bad
// input: a clear 4xx, nothing cached, no provider called.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, req, getJson, sha256, multipart } from './lib.mjs';

const SLOW = 240000;
const json = (o, h = {}) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json', ...h } });
const words = (s) => s.toLowerCase().replace(/[^a-z' ]/g, ' ').split(/\s+/).filter(Boolean).join(' ');

async function stopClean(vg, keep = false) {
  const res = await stopVoxgate(vg);
  if (!keep) cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

async function stats(vg) {
  return (await req(vg, 'GET', '/stats')).json;
}

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.ok(res.json && res.json.error, `${what}: JSON error body: ${res.text}`);
  assert.equal(res.json.error.code, code, `${what}: ${res.text}`);
  assert.ok(res.json.error.message.length > 0);
}

describe('gateway: the offline local provider', { timeout: SLOW }, () => {
  let vg;
  const wavs = {};
  before(async () => { vg = await startVoxgate(); });
  after(async () => { if (vg) await stopClean(vg); });

  it('POST /v1/tts speaks with Flite slt, then the same request is an L1 hit', async () => {
    const body = json({ text: 'please call me back tomorrow morning' });
    const a = await req(vg, 'POST', '/v1/tts', body);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers.get('content-type'), 'audio/wav');
    assert.equal(a.headers.get('x-cache'), 'MISS');
    assert.equal(a.headers.get('x-provider'), 'local');
    assert.equal(a.buf.subarray(0, 4).toString(), 'RIFF');
    assert.equal(a.buf.subarray(8, 12).toString(), 'WAVE');
    assert.ok(a.buf.length > 16000, `a second or so of speech: ${a.buf.length} bytes`);
    const b = await req(vg, 'POST', '/v1/tts', body);
    assert.equal(b.status, 200);
    assert.equal(b.headers.get('x-cache'), 'HIT');
    assert.equal(b.headers.get('x-cache-tier'), 'l1');
    assert.ok(a.buf.equals(b.buf), 'a hit returns the same bytes');
    wavs.callme = a.buf;
    const s = await stats(vg);
    assert.equal(s.providers.local.calls, 1, JSON.stringify(s.providers));
  });

  it('every option that changes the output gets its own entry', async () => {
    const base = { text: 'please call me back tomorrow morning' };
    for (const extra of [{ voice: 'awb' }, { speed: 1.5 }, { format: 'pcm' }]) {
      const r = await req(vg, 'POST', '/v1/tts', json({ ...base, ...extra }));
      assert.equal(r.status, 200, `${JSON.stringify(extra)}: ${r.text}`);
      assert.equal(r.headers.get('x-cache'), 'MISS', JSON.stringify(extra));
      assert.ok(!r.buf.equals(wavs.callme), JSON.stringify(extra));
    }
    const pcm = await req(vg, 'POST', '/v1/tts', json({ ...base, format: 'pcm' }));
    assert.match(pcm.headers.get('content-type'), /^audio\/pcm/);
    // Defaults filled in: naming slt, wav and speed 1 explicitly is the same entry.
    const same = await req(vg, 'POST', '/v1/tts', json({ ...base, voice: 'slt', format: 'wav', speed: 1 }));
    assert.equal(same.headers.get('x-cache'), 'HIT');
    assert.ok(same.buf.equals(wavs.callme));
  });

  it('POST /v1/stt of that speech gives the words back, then hits', async () => {
    const r = await req(vg, 'POST', '/v1/stt', { body: wavs.callme, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(words(r.json.text), 'please call me back tomorrow morning');
    assert.equal(r.json.provider, 'local');
    assert.equal(r.json.cache, 'miss');
    assert.ok(r.json.duration_ms > 500, JSON.stringify(r.json));
    const again = await req(vg, 'POST', '/v1/stt', { body: wavs.callme, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(again.json.cache, 'hit_l1');
    assert.equal(again.json.text, r.json.text);
  });

  it('three sentences round-trip word for word (slt)', async () => {
    for (const text of ['hello world', 'the quick brown fox jumps over the lazy dog', 'please call me back tomorrow morning']) {
      const t = await req(vg, 'POST', '/v1/tts', json({ text }));
      assert.equal(t.status, 200, t.text);
      const s = await req(vg, 'POST', '/v1/stt', { body: t.buf, headers: { 'Content-Type': 'audio/wav' } });
      assert.equal(s.status, 200, s.text);
      assert.equal(words(s.json.text), text, `round trip of "${text}"`);
    }
  });

  it('Accept: application/json answers metadata with a fetchable audio_url', async () => {
    const r = await req(vg, 'POST', '/v1/tts', json({ text: 'please call me back tomorrow morning' }, { Accept: 'application/json' }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.provider, 'local');
    assert.equal(r.json.cache, 'hit_l1');
    assert.equal(r.json.content_type, 'audio/wav');
    assert.equal(r.json.bytes, wavs.callme.length);
    assert.equal(r.json.sha256, sha256(wavs.callme));
    const url = new URL(r.json.audio_url, vg.url);
    const audio = await fetch(url);
    assert.equal(audio.status, 200);
    assert.ok(Buffer.from(await audio.arrayBuffer()).equals(wavs.callme));
  });

  it('the OpenAI-compatible routes work on the local provider', async () => {
    const sp = await req(vg, 'POST', '/v1/audio/speech',
      json({ model: 'tts-1', input: 'hello world', voice: 'slt', response_format: 'wav' }));
    assert.equal(sp.status, 200, sp.text);
    assert.equal(sp.headers.get('content-type'), 'audio/wav');
    const want = { json: 'application/json', text: 'text/plain', srt: 'text/plain', vtt: 'text/vtt', verbose_json: 'application/json' };
    for (const [fmt, ct] of Object.entries(want)) {
      const form = multipart({ model: 'whisper-1', response_format: fmt }, sp.buf);
      const r = await req(vg, 'POST', '/v1/audio/transcriptions', form);
      assert.equal(r.status, 200, `${fmt}: ${r.text}`);
      assert.ok(r.headers.get('content-type').startsWith(ct), `${fmt}: ${r.headers.get('content-type')}`);
      if (fmt === 'json') assert.equal(words(r.json.text), 'hello world');
      if (fmt === 'text') assert.equal(words(r.text), 'hello world');
      if (fmt === 'srt') assert.match(r.text, /^1\r?\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}/);
      if (fmt === 'vtt') assert.match(r.text, /^WEBVTT/);
      if (fmt === 'verbose_json') {
        assert.equal(words(r.json.text), 'hello world');
        assert.equal(typeof r.json.duration, 'number');
      }
    }
    // An OpenAI voice the local provider does not have: OpenAI's error shape.
    const bad = await req(vg, 'POST', '/v1/audio/speech', json({ model: 'tts-1', input: 'hi', voice: 'alloy' }));
    assert.equal(bad.status, 400, bad.text);
    assert.equal(typeof bad.json.error.message, 'string');
    assert.equal(bad.json.error.type, 'invalid_request_error');
    assert.ok(bad.json.error.code);
  });

  it('GET /v1/voices and GET /v1/models list what there is', async () => {
    const v = await req(vg, 'GET', '/v1/voices');
    assert.equal(v.status, 200);
    const ids = v.json.voices.map((x) => x.id);
    for (const id of ['slt', 'awb', 'rms', 'kal']) assert.ok(ids.includes(id), `voice ${id}`);
    assert.ok(v.json.voices.some((x) => x.engine === 'espeak-ng'), 'espeak-ng voices are listed');
    assert.ok(v.json.voices.every((x) => x.provider === 'local'));
    const m = await req(vg, 'GET', '/v1/models');
    assert.equal(m.status, 200);
    assert.equal(m.json.object, 'list');
    const def = m.json.data.find((x) => x.id === 'default');
    assert.deepEqual(def.providers, ['local']);
  });

  it('bad input: a clear 4xx, nothing cached, no provider called', async () => {
    const before_ = await stats(vg);
    const writes = before_.cache.l2.writes;
    const calls = before_.providers.local.calls;
    const big = 'a'.repeat(5001);
    const cases = [
      [json({}), 400, 'missing_parameter'],
      [json({ text: '' }), 400, 'invalid_parameter'],
      [json({ text: big }), 413, 'text_too_long'],
      [json({ text: 'hi', voice: 'nobody' }), 400, 'unknown_voice'],
      [json({ text: 'hi', format: 'mp3' }), 400, 'unsupported_format'],
      [json({ text: 'hi', format: 'ogg' }), 400, 'unsupported_format'],
      [json({ text: 'hi', speed: 5 }), 400, 'invalid_parameter'],
      [json({ text: 'hi', provider: 'nope' }), 400, 'unknown_provider'],
      [json({ text: 'hi', colour: 'red' }), 400, 'unknown_field'],
      [{ body: '{"text":', headers: { 'Content-Type': 'application/json' } }, 400, 'invalid_json'],
    ];
    for (const [body, status, code] of cases)
      assertError(await req(vg, 'POST', '/v1/tts', body), status, code, body.body.slice(0, 60));
    assertError(await req(vg, 'POST', '/v1/stt', { body: Buffer.from('this is not audio at all'), headers: { 'Content-Type': 'audio/wav' } }),
      415, 'unsupported_media_type', 'text as audio');
    assertError(await req(vg, 'POST', '/v1/stt', { body: '', headers: { 'Content-Type': 'audio/wav' } }), 400, 'missing_body', 'empty');
    const mp3ish = Buffer.concat([Buffer.from('ID3\x04\x00\x00\x00\x00\x00\x00'), Buffer.alloc(64)]);
    assertError(await req(vg, 'POST', '/v1/stt', { body: mp3ish, headers: { 'Content-Type': 'audio/mpeg' } }),
      415, 'unsupported_media_type', 'mp3 to the local provider');
    const noFile = multipart({ model: 'whisper-1' }, null);
    assertError(await req(vg, 'POST', '/v1/audio/transcriptions', noFile), 400, 'missing_parameter', 'no file');
    const broken = { body: Buffer.from('--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'),
      headers: { 'Content-Type': 'multipart/form-data; boundary=x' } };
    assertError(await req(vg, 'POST', '/v1/audio/transcriptions', broken), 400, 'invalid_multipart', 'broken');
    const noBoundary = { body: 'x', headers: { 'Content-Type': 'multipart/form-data' } };
    assertError(await req(vg, 'POST', '/v1/audio/transcriptions', noBoundary), 400, 'invalid_multipart', 'no boundary');
    const badFmt = multipart({ model: 'whisper-1', response_format: 'xml' }, wavs.callme);
    assertError(await req(vg, 'POST', '/v1/audio/transcriptions', badFmt), 400, 'unsupported_format', 'xml');
    const after_ = await stats(vg);
    assert.equal(after_.cache.l2.writes, writes, 'nothing was cached');
    assert.equal(after_.providers.local.calls, calls, 'no provider was called');
  });

  it('after a restart the entry is an L2 hit', async () => {
    await stopClean(vg, true);
    vg = await startVoxgate({ dataDir: vg.dataDir });
    const r = await req(vg, 'POST', '/v1/tts', json({ text: 'please call me back tomorrow morning' }));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-cache'), 'HIT');
    assert.equal(r.headers.get('x-cache-tier'), 'l2');
    assert.ok(r.buf.equals(wavs.callme));
    const s = await getJson(`${vg.url}/stats`);
    assert.equal(s.json.providers.local.calls, 0);
  });
});
