// Black-box tests of the cache-aside query API: /v1/cache/stt and
// /v1/cache/tts (SPEC §4, §5; README "Cache-aside API").
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startVoxgate, stopVoxgate, cleanup, rawRequest, sha256, hex64, qs, req, sleep, memOf } from './lib.mjs';

const MAX_TTS_CHARS = 10;
const DEFAULT_MAX_TTL_S = 2592000;

// ---- helpers (local to this file) ----

const sttPath = (p) => `/v1/cache/stt?${typeof p === 'string' ? p : qs(p)}`;
const ttsPath = (p) => `/v1/cache/tts?${typeof p === 'string' ? p : qs(p)}`;
const putStt = (vg, p, body) => req(vg, 'PUT', sttPath(p), {
  body, headers: { 'Content-Type': 'application/json' },
});
const putTts = (vg, p, body, ctype = 'audio/wav') => req(vg, 'PUT', ttsPath(p), {
  body, headers: { 'Content-Type': ctype },
});

function sttKey(n, extra = {}) {
  return { provider: 'openai', language: 'en', audio_hash: hex64(`stt-${n}`), ...extra };
}
function ttsKey(n, extra = {}) {
  return { provider: 'openai', language: 'en', voice: 'alloy', text_hash: hex64(`tts-${n}`), ...extra };
}

// A JSON error with the given status and code, whose request_id is the response's.
function assertError(res, status, code, what = '') {
  assert.equal(res.status, status, `${what}: status (body ${res.text})`);
  assert.match(res.headers.get('content-type') || '', /^application\/json/, `${what}: content-type`);
  assert.ok(res.json && res.json.error, `${what}: error object in ${res.text}`);
  if (code) assert.equal(res.json.error.code, code, `${what}: code`);
  else assert.match(res.json.error.code, /^[a-z][a-z0-9_]*$/, `${what}: snake_case code`);
  assert.equal(typeof res.json.error.message, 'string', `${what}: message`);
  assert.equal(res.json.error.request_id, res.headers.get('x-request-id'), `${what}: request_id`);
}

function assertMiss(res, what = '') {
  assertError(res, 404, 'cache_miss', what);
  assert.equal(res.headers.get('x-cache'), 'MISS', `${what}: X-Cache`);
}

function assertHit(res, tier, what = '') {
  assert.equal(res.status, 200, `${what}: status (body ${res.text})`);
  assert.equal(res.headers.get('x-cache'), 'HIT', `${what}: X-Cache`);
  assert.equal(res.headers.get('x-cache-tier'), tier, `${what}: X-Cache-Tier`);
}

async function stats(vg) {
  const r = await req(vg, 'GET', '/stats');
  assert.equal(r.status, 200, r.text);
  return r.json;
}

function assertCleanStderr(vg) {
  assert.doesNotMatch(vg.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/, vg.stderr);
}

async function stopClean(vg) {
  const st = await stopVoxgate(vg, 'SIGTERM');
  assert.deepEqual(st, { code: 0, signal: null }, `exit status; stderr: ${vg.stderr}`);
  assertCleanStderr(vg);
}

// Every local blob object file (magic header) under dataDir/blobs.
function blobFiles(dataDir) {
  const out = [];
  const walk = (d) => {
    let ents;
    try { ents = readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of ents) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(join(dataDir, 'blobs'));
  return out.filter((p) => {
    const b = readFileSync(p);
    return b.length >= 8 && b.subarray(0, 8).toString('latin1') === 'VGBLOB2\n' /* local blob format v2 (issue 8: metadata) */;
  });
}

// The one blob file whose data part is exactly `audio`.
function blobFileOf(dataDir, audio) {
  const hits = blobFiles(dataDir).filter((p) => {
    const b = readFileSync(p);
    return b.length > audio.length && b.subarray(b.length - audio.length).equals(audio);
  });
  assert.equal(hits.length, 1, `exactly one blob file holds the audio (found ${hits.length})`);
  return hits[0];
}

// ---- the tests ----

describe('cache-aside query API', { timeout: 120000 }, () => {
  let vg;
  const config = { limits: { max_tts_chars: MAX_TTS_CHARS } };

  async function restart() {
    await stopClean(vg);
    const old = vg;
    vg = await startVoxgate({ config, dataDir: old.dataDir });
    if (old.cfgPath) rmSync(old.cfgPath, { force: true });
  }

  before(async () => { vg = await startVoxgate({ config }); });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  // ---- STT ----

  test('STT PUT returns 201 with key, ttl_s and expires_at', async () => {
    const k = sttKey('put-shape');
    const t0 = Date.now();
    const r = await putStt(vg, k, '{"text":"hello"}');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.key, `voxgate:stt:openai:en:${k.audio_hash}`);
    assert.equal(r.json.ttl_s, 86400);
    assert.match(r.json.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    const exp = Date.parse(r.json.expires_at);
    // Correctness of the date, not a timing check: an hour of slack.
    assert.ok(Math.abs(exp - (t0 + 86400 * 1000)) < 3600 * 1000, `expires_at ${r.json.expires_at}`);
  });

  test('STT GET returns the PUT bytes exactly, from L1; HEAD has no body; DELETE removes it', async () => {
    const k = sttKey('roundtrip');
    const body = '{"text":"héllo  wörld" ,"big":12345678901234567890,   "f":1.50000,"e":1E+2,"a":[ 1 ,2 ]}';
    const put = await putStt(vg, k, body);
    assert.equal(put.status, 201, put.text);

    const get = await req(vg, 'GET', sttPath(k));
    assertHit(get, 'l1', 'GET after PUT');
    assert.match(get.headers.get('content-type'), /^application\/json/);
    assert.ok(get.buf.equals(Buffer.from(body, 'utf8')), `byte-exact: got ${get.text}`);

    // HEAD over a raw socket: status and headers, and really no body bytes.
    const head = await rawRequest(vg.port, [
      `HEAD ${sttPath(k)} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    ], { timeoutMs: 5000 });
    assert.equal(head.status, 200, head.raw);
    assert.equal(head.headers['x-cache'], 'HIT');
    assert.equal(head.body, '', 'HEAD sends no body');
    if (head.headers['content-length'] !== undefined)
      assert.equal(Number(head.headers['content-length']), get.buf.length);

    const del = await req(vg, 'DELETE', sttPath(k));
    assert.equal(del.status, 204, del.text);
    assert.equal(del.buf.length, 0);

    assertMiss(await req(vg, 'GET', sttPath(k)), 'GET after DELETE');
    const head2 = await req(vg, 'HEAD', sttPath(k));
    assert.equal(head2.status, 404);
    assert.equal(head2.headers.get('x-cache'), 'MISS');
    assertMiss(await req(vg, 'DELETE', sttPath(k)), 'second DELETE');
  });

  test('PUT overwrites: the newest result is returned', async () => {
    const k = sttKey('overwrite');
    assert.equal((await putStt(vg, k, '{"v":1}')).status, 201);
    assert.equal((await putStt(vg, k, '{"v":2}')).status, 201);
    const g = await req(vg, 'GET', sttPath(k));
    assertHit(g, 'l1');
    assert.equal(g.text, '{"v":2}');
  });

  test('format is part of the key', async () => {
    const plain = sttKey('fmt');
    const wav = sttKey('fmt', { format: 'wav' });
    assertMiss(await req(vg, 'GET', sttPath(wav)), 'nothing yet');
    const p1 = await putStt(vg, plain, '{"which":"plain"}');
    assert.equal(p1.status, 201);
    assert.equal(p1.json.key, `voxgate:stt:openai:en:${plain.audio_hash}`);
    assertMiss(await req(vg, 'GET', sttPath(wav)), 'with format, after PUT without');
    const p2 = await putStt(vg, wav, '{"which":"wav"}');
    assert.equal(p2.status, 201);
    assert.equal(p2.json.key, `voxgate:stt:openai:en:${plain.audio_hash}:wav`);
    assert.equal((await req(vg, 'GET', sttPath(plain))).text, '{"which":"plain"}');
    assert.equal((await req(vg, 'GET', sttPath(wav))).text, '{"which":"wav"}');
    assertMiss(await req(vg, 'GET', sttPath(sttKey('fmt', { format: 'mp3' }))), 'another format');
    // Deleting one leaves the other.
    assert.equal((await req(vg, 'DELETE', sttPath(wav))).status, 204);
    assert.equal((await req(vg, 'GET', sttPath(plain))).status, 200);
  });

  test('identifiers: 64 characters of [A-Za-z0-9_.-] are accepted', async () => {
    const id = 'A-z_0.9'.padEnd(64, 'x');
    const k = { provider: id, language: id, audio_hash: hex64('ident64'), format: id };
    const p = await putStt(vg, k, '{"ok":true}');
    assert.equal(p.status, 201, p.text);
    assert.equal((await req(vg, 'GET', sttPath(k))).text, '{"ok":true}');
  });

  test('/stats counts an L1 miss and an L1 hit', async () => {
    const k = sttKey('stats');
    const s0 = await stats(vg);
    assertMiss(await req(vg, 'GET', sttPath(k)));
    const s1 = await stats(vg);
    assert.equal(s1.cache.l1.misses, s0.cache.l1.misses + 1, 'l1 misses after a miss');
    assert.equal(s1.cache.l1.hits, s0.cache.l1.hits, 'l1 hits after a miss');
    assert.equal(s1.cache.l2.misses, s0.cache.l2.misses + 1, 'l2 misses after a miss');
    assert.equal((await putStt(vg, k, '{"s":1}')).status, 201);
    assertHit(await req(vg, 'GET', sttPath(k)), 'l1');
    const s2 = await stats(vg);
    assert.equal(s2.cache.l1.hits, s1.cache.l1.hits + 1, 'l1 hits after a hit');
    assert.equal(s2.cache.l1.misses, s1.cache.l1.misses, 'l1 misses after a hit');
    assert.ok(s2.cache.l1.hit_rate > 0 && s2.cache.l1.hit_rate <= 1);
    assert.ok(s2.cache.l2.entries >= 1);
  });

  // ---- TTS ----

  test('TTS PUT audio, GET returns the same bytes, type and ETag', async () => {
    const k = ttsKey('audio');
    const audio = randomBytes(4096 + 123);
    const put = await putTts(vg, k, audio, 'audio/wav');
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json.key, `voxgate:tts:openai:en:alloy:${k.text_hash}`);
    assert.equal(put.json.bytes, audio.length);
    assert.equal(put.json.sha256, sha256(audio));
    assert.equal(put.json.ttl_s, 604800);
    assert.ok(!Number.isNaN(Date.parse(put.json.expires_at)));

    const g = await req(vg, 'GET', ttsPath(k));
    assertHit(g, 'l1');
    assert.equal(g.headers.get('content-type'), 'audio/wav');
    assert.equal(g.headers.get('etag'), `"${sha256(audio)}"`);
    assert.ok(g.buf.equals(audio), 'identical audio');

    const h = await req(vg, 'HEAD', ttsPath(k));
    assert.equal(h.status, 200);
    assert.equal(h.buf.length, 0);
    assert.equal(h.headers.get('etag'), `"${sha256(audio)}"`);
  });

  test('TTS application/octet-stream and audio/mpeg are kept as given', async () => {
    for (const [n, ct] of [['oct', 'application/octet-stream'], ['mp3', 'audio/mpeg']]) {
      const k = ttsKey(`ct-${n}`, { format: n });
      const audio = randomBytes(300);
      assert.equal((await putTts(vg, k, audio, ct)).status, 201);
      const g = await req(vg, 'GET', ttsPath(k));
      assert.equal(g.status, 200);
      assert.equal(g.headers.get('content-type'), ct);
      assert.ok(g.buf.equals(audio));
    }
  });

  test('TTS text= names the same entry as text_hash=sha256(text)', async () => {
    const text = 'héllo wö'; // 8 characters, under the configured 10
    const audio = randomBytes(1000);
    const byText = { provider: 'openai', language: 'fr', voice: 'v1', text };
    const byHash = { provider: 'openai', language: 'fr', voice: 'v1', text_hash: sha256(Buffer.from(text, 'utf8')) };
    const put = await putTts(vg, byText, audio);
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json.key, `voxgate:tts:openai:fr:v1:${byHash.text_hash}`);
    const g = await req(vg, 'GET', ttsPath(byHash));
    assert.equal(g.status, 200, g.text);
    assert.ok(g.buf.equals(audio));

    // And the other way round.
    const text2 = 'other text';
    const audio2 = randomBytes(500);
    assert.equal((await putTts(vg, { ...byHash, text_hash: sha256(text2) }, audio2)).status, 201);
    const g2 = await req(vg, 'GET', ttsPath({ ...byText, text: text2 }));
    assert.equal(g2.status, 200);
    assert.ok(g2.buf.equals(audio2));
  });

  test('TTS text and text_hash together is 400; text over limits.max_tts_chars is 413 text_too_long (SPEC §3: oversized input)', async () => {
    const s0 = await stats(vg);
    const both = { provider: 'openai', language: 'en', voice: 'v', text: 'abc', text_hash: sha256('abc') };
    assertError(await putTts(vg, both, randomBytes(10)), 400, null, 'PUT text+text_hash');
    assertError(await req(vg, 'GET', ttsPath(both)), 400, null, 'GET text+text_hash');

    const long = 'a'.repeat(MAX_TTS_CHARS + 1);
    const k = { provider: 'openai', language: 'en', voice: 'v', text: long };
    assertError(await putTts(vg, k, randomBytes(10)), 413, 'text_too_long', 'PUT long text');
    assertError(await req(vg, 'GET', ttsPath(k)), 413, 'text_too_long', 'GET long text');
    const s1 = await stats(vg);
    assert.equal(s1.cache.l2.writes, s0.cache.l2.writes, 'nothing written');
    assertMiss(await req(vg, 'GET', ttsPath({ ...k, text: undefined, text_hash: sha256(long) })));

    // The limit counts characters, not bytes: 10 two-byte characters fit.
    const atLimit = { provider: 'openai', language: 'en', voice: 'v', text: 'é'.repeat(MAX_TTS_CHARS) };
    const ok = await putTts(vg, atLimit, randomBytes(10));
    assert.equal(ok.status, 201, ok.text);
  });

  test('TTS DELETE removes the entry and its audio file', async () => {
    const k = ttsKey('delete');
    const audio = randomBytes(777);
    assert.equal((await putTts(vg, k, audio)).status, 201);
    const file = blobFileOf(vg.dataDir, audio);
    assert.equal((await req(vg, 'DELETE', ttsPath(k))).status, 204);
    assertMiss(await req(vg, 'GET', ttsPath(k)));
    assert.throws(() => statSync(file), /ENOENT/, 'blob file removed');
    assertMiss(await req(vg, 'DELETE', ttsPath(k)), 'second DELETE');
  });

  // ---- TTL ----

  test('ttl_s=1 expires; ttl_s on GET or DELETE is 400', async () => {
    const k = sttKey('ttl1');
    const p = await putStt(vg, { ...k, ttl_s: 1 }, '{"short":true}');
    assert.equal(p.status, 201, p.text);
    assert.equal(p.json.ttl_s, 1);
    const kt = ttsKey('ttl1');
    assert.equal((await putTts(vg, { ...kt, ttl_s: '1' }, randomBytes(50))).status, 201);
    await sleep(2200);
    assertMiss(await req(vg, 'GET', sttPath(k)), 'STT after its TTL');
    assertMiss(await req(vg, 'GET', ttsPath(kt)), 'TTS after its TTL');

    const live = sttKey('ttl-get');
    assert.equal((await putStt(vg, live, '{"x":1}')).status, 201);
    assertError(await req(vg, 'GET', sttPath({ ...live, ttl_s: 60 })), 400, null, 'GET with ttl_s');
    assertError(await req(vg, 'DELETE', sttPath({ ...live, ttl_s: 60 })), 400, null, 'DELETE with ttl_s');
    assert.equal((await req(vg, 'GET', sttPath(live))).status, 200, 'entry still there');
  });

  test('ttl_s up to cache.max_ttl_s is accepted', async () => {
    const p = await putStt(vg, { ...sttKey('ttlmax'), ttl_s: DEFAULT_MAX_TTL_S }, '{"x":1}');
    assert.equal(p.status, 201, p.text);
    assert.equal(p.json.ttl_s, DEFAULT_MAX_TTL_S);
  });

  // ---- bad input ----

  test('bad input is refused with the documented error and nothing is stored', async () => {
    const H = hex64('bad-input');
    const good = { provider: 'openai', language: 'en', audio_hash: H };
    const goodT = { provider: 'openai', language: 'en', voice: 'alloy', text_hash: H };
    const J = '{"text":"x"}';
    const audio = randomBytes(64);
    const s0 = await stats(vg);

    const sttCases = [
      ['hash of 63 chars', { ...good, audio_hash: H.slice(0, 63) }, 400, 'invalid_hash'],
      ['hash of 65 chars', { ...good, audio_hash: `${H}a` }, 400, 'invalid_hash'],
      ['non-hex hash', { ...good, audio_hash: `${H.slice(0, 63)}g` }, 400, 'invalid_hash'],
      ['empty hash', { ...good, audio_hash: '' }, 400, 'invalid_hash'],
      ['provider a:b', { ...good, provider: 'a:b' }, 400, 'invalid_parameter'],
      ['provider *', { ...good, provider: '*' }, 400, 'invalid_parameter'],
      ['provider with a space', { ...good, provider: 'open ai' }, 400, 'invalid_parameter'],
      ['provider of 65 chars', { ...good, provider: 'p'.repeat(65) }, 400, 'invalid_parameter'],
      ['empty provider', { ...good, provider: '' }, 400, 'invalid_parameter'],
      ['provider with @', { ...good, provider: 'openai@2' }, 400, 'invalid_parameter'],
      ['language a:b', { ...good, language: 'a:b' }, 400, 'invalid_parameter'],
      ['language *', { ...good, language: 'e*' }, 400, 'invalid_parameter'],
      ['format a:b', { ...good, format: 'a:b' }, 400, 'invalid_parameter'],
      ['format of 65 chars', { ...good, format: 'f'.repeat(65) }, 400, 'invalid_parameter'],
      ['missing provider', { ...good, provider: undefined }, 400, 'missing_parameter'],
      ['missing language', { ...good, language: undefined }, 400, 'missing_parameter'],
      ['missing audio_hash', { ...good, audio_hash: undefined }, 400, 'missing_parameter'],
      ['ttl_s -1', { ...good, ttl_s: '-1' }, 400, 'invalid_ttl'],
      ['ttl_s abc', { ...good, ttl_s: 'abc' }, 400, 'invalid_ttl'],
      ['ttl_s 0', { ...good, ttl_s: '0' }, 400, 'invalid_ttl'],
      ['ttl_s 1.5', { ...good, ttl_s: '1.5' }, 400, 'invalid_ttl'],
      ['ttl_s empty', { ...good, ttl_s: '' }, 400, 'invalid_ttl'],
      ['ttl_s over max', { ...good, ttl_s: String(DEFAULT_MAX_TTL_S + 1) }, 400, 'invalid_ttl'],
      ['ttl_s huge', { ...good, ttl_s: '99999999999999999999999' }, 400, 'invalid_ttl'],
      ['unknown parameter', { ...good, foo: '1' }, 400, 'unknown_parameter'],
      ['text on stt', { ...good, text: 'x' }, 400, 'unknown_parameter'],
    ];
    for (const [what, params, status, code] of sttCases) {
      assertError(await putStt(vg, params, J), status, code, `STT PUT ${what}`);
    }
    // A few of the same on GET, HEAD and DELETE.
    for (const m of ['GET', 'DELETE']) {
      assertError(await req(vg, m, sttPath({ ...good, audio_hash: H.slice(0, 63) })), 400, 'invalid_hash', `${m} short hash`);
      assertError(await req(vg, m, sttPath({ ...good, provider: 'a:b' })), 400, 'invalid_parameter', `${m} a:b`);
      assertError(await req(vg, m, sttPath({ ...good, bogus: 'x' })), 400, 'unknown_parameter', `${m} unknown`);
    }
    const headBad = await req(vg, 'HEAD', sttPath({ ...good, provider: '*' }));
    assert.equal(headBad.status, 400);

    // Duplicate parameters, raw query strings.
    const dupQ = `provider=openai&language=en&audio_hash=${H}&provider=openai`;
    assertError(await putStt(vg, dupQ, J), 400, 'duplicate_parameter', 'STT PUT duplicate provider');
    assertError(await req(vg, 'GET', sttPath(`provider=openai&language=en&audio_hash=${H}&audio_hash=${H}`)),
      400, 'duplicate_parameter', 'GET duplicate audio_hash');
    assertError(await putStt(vg, `provider=openai&language=en&audio_hash=${H}&ttl_s=5&ttl_s=5`, J),
      400, 'duplicate_parameter', 'PUT duplicate ttl_s');
    // Raw (unencoded) glob characters and an encoded space.
    assertError(await putStt(vg, `provider=*&language=en&audio_hash=${H}`, J), 400, 'invalid_parameter', 'raw *');
    assertError(await putStt(vg, `provider=a%20b&language=en&audio_hash=${H}`, J), 400, 'invalid_parameter', '%20');
    assertError(await putStt(vg, `provider=open%3Aai&language=en&audio_hash=${H}`, J), 400, 'invalid_parameter', '%3A');

    // Bodies.
    assertError(await putStt(vg, good, '{"text":'), 400, 'invalid_json', 'truncated JSON');
    assertError(await putStt(vg, good, 'not json'), 400, 'invalid_json', 'not JSON');
    assertError(await putStt(vg, good, ''), 400, null, 'empty body');
    assertError(await putStt(vg, good, '  \n '), 400, null, 'whitespace body');
    assertError(await req(vg, 'PUT', sttPath(good), { body: Buffer.from(J) }), 415, 'unsupported_media_type', 'no Content-Type');
    assertError(await req(vg, 'PUT', sttPath(good), { body: J, headers: { 'Content-Type': 'text/plain' } }),
      415, 'unsupported_media_type', 'text/plain STT');
    // A parameter on the media type is fine.
    // (Checked last, below, since it stores.)

    // TTS.
    const ttsCases = [
      ['missing voice', { ...goodT, voice: undefined }, 400, 'missing_parameter'],
      ['missing text_hash and text', { ...goodT, text_hash: undefined }, 400, 'missing_parameter'],
      ['voice a:b', { ...goodT, voice: 'a:b' }, 400, 'invalid_parameter'],
      ['voice of 65 chars', { ...goodT, voice: 'v'.repeat(65) }, 400, 'invalid_parameter'],
      ['text_hash of 63', { ...goodT, text_hash: H.slice(1) }, 400, 'invalid_hash'],
      ['text_hash non-hex', { ...goodT, text_hash: 'z'.repeat(64) }, 400, 'invalid_hash'],
      ['ttl_s 0', { ...goodT, ttl_s: '0' }, 400, 'invalid_ttl'],
      ['unknown parameter', { ...goodT, speed: '1' }, 400, 'unknown_parameter'],
      ['audio_hash on tts', { ...goodT, audio_hash: H }, 400, 'unknown_parameter'],
    ];
    for (const [what, params, status, code] of ttsCases) {
      assertError(await putTts(vg, params, audio), status, code, `TTS PUT ${what}`);
    }
    assertError(await putTts(vg, goodT, audio, 'text/plain'), 415, 'unsupported_media_type', 'TTS text/plain');
    assertError(await putTts(vg, goodT, audio, 'application/json'), 415, 'unsupported_media_type', 'TTS json');
    assertError(await req(vg, 'PUT', ttsPath(goodT), { body: audio }), 415, 'unsupported_media_type', 'TTS no type');
    assertError(await putTts(vg, goodT, Buffer.alloc(0)), 400, null, 'TTS empty body');

    // Nothing was stored by any of it.
    const s1 = await stats(vg);
    assert.equal(s1.cache.l2.writes, s0.cache.l2.writes, 'no L2 writes');
    assert.equal(s1.cache.l2.entries, s0.cache.l2.entries, 'no new L2 entries');
    assertMiss(await req(vg, 'GET', sttPath(good)), 'valid neighbour STT key');
    assertMiss(await req(vg, 'GET', ttsPath(goodT)), 'valid neighbour TTS key');
    assert.equal(blobFiles(vg.dataDir).filter((p) => readFileSync(p).subarray(-audio.length).equals(audio)).length, 0,
      'no blob file for refused audio');

    // The valid neighbour itself works, with a media type parameter.
    const ok = await req(vg, 'PUT', sttPath(good), { body: J, headers: { 'Content-Type': 'application/json; charset=utf-8' } });
    assert.equal(ok.status, 201, ok.text);
  });

  test('STT PUT body with data after the JSON value is 400 invalid_json, nothing stored', async () => {
    const k = sttKey('trailing');
    for (const body of ['{"a":1} {"b":2}', '{"a":1}garbage', '[1,2]]', '"x" "y"']) {
      assertError(await putStt(vg, k, body), 400, 'invalid_json', `body ${body}`);
      assertMiss(await req(vg, 'GET', sttPath(k)), `nothing stored for ${body}`);
    }
  });

  test('STT PUT body that is not strict JSON is 400 invalid_json; strict JSON of any shape is stored exactly', async () => {
    const k = sttKey('strict');
    for (const body of ['{"n":01}', '{"n":1.}', '{"t":"a\tb"}', '{"t":"\\uD800"}', '{"t":"\\u12G4"}', '\ufeff{}']) {
      assertError(await putStt(vg, k, body), 400, 'invalid_json', `body ${JSON.stringify(body)}`);
      assertMiss(await req(vg, 'GET', sttPath(k)), `nothing stored for ${JSON.stringify(body)}`);
    }
    const exact = '{"t":"caf\u00e9 \\uD83D\\uDE00 \\" \\n","n":-0.5e-3,"x":[true,false,null,{}]}';
    assert.equal((await putStt(vg, k, exact)).status, 201);
    const r = await req(vg, 'GET', sttPath(k));
    assert.equal(r.status, 200);
    assert.equal(r.text, exact);
  });

  test('wrong methods are 405 with Allow', async () => {
    const r = await req(vg, 'POST', sttPath(sttKey('m')), { body: '{}', headers: { 'Content-Type': 'application/json' } });
    assertError(r, 405, 'method_not_allowed', 'POST stt');
    assert.match(r.headers.get('allow') || '', /GET/);
    assert.match(r.headers.get('allow') || '', /PUT/);
  });

  // ---- L2 (restart) ----

  test('after a graceful restart entries come from L2, then L1', async () => {
    const ks = sttKey('l2');
    const body = '{"n":98765432109876543210,  "t":"persist"}';
    assert.equal((await putStt(vg, ks, body)).status, 201);
    const kt = ttsKey('l2');
    const audio = randomBytes(5000);
    assert.equal((await putTts(vg, kt, audio, 'audio/ogg')).status, 201);

    await restart();

    const g1 = await req(vg, 'GET', sttPath(ks));
    assertHit(g1, 'l2', 'STT first GET after restart');
    assert.ok(g1.buf.equals(Buffer.from(body)), g1.text);
    const g2 = await req(vg, 'GET', sttPath(ks));
    assertHit(g2, 'l1', 'STT second GET');
    assert.ok(g2.buf.equals(Buffer.from(body)));

    const t1 = await req(vg, 'GET', ttsPath(kt));
    assertHit(t1, 'l2', 'TTS first GET after restart');
    assert.equal(t1.headers.get('content-type'), 'audio/ogg');
    assert.equal(t1.headers.get('etag'), `"${sha256(audio)}"`);
    assert.ok(t1.buf.equals(audio));
    const t2 = await req(vg, 'GET', ttsPath(kt));
    assertHit(t2, 'l1', 'TTS second GET');
    assert.equal(t2.headers.get('etag'), `"${sha256(audio)}"`);
    assert.ok(t2.buf.equals(audio));

    // Deleting after a restart (L1 empty) also works.
    await restart();
    assert.equal((await req(vg, 'DELETE', sttPath(ks))).status, 204);
    assertMiss(await req(vg, 'GET', sttPath(ks)));
  });

  // Checks that the key misses on GET, GET again and HEAD, and that its
  // L2 entry is gone afterwards.
  async function assertRemovedMiss(k, what) {
    const before = (await stats(vg)).cache.l2.entries;
    assertMiss(await req(vg, 'GET', ttsPath(k)), `${what}: first GET`);
    assertMiss(await req(vg, 'GET', ttsPath(k)), `${what}: second GET`);
    const h = await req(vg, 'HEAD', ttsPath(k));
    assert.equal(h.status, 404, `${what}: HEAD`);
    assert.equal(h.headers.get('x-cache'), 'MISS', `${what}: HEAD X-Cache`);
    assert.equal((await stats(vg)).cache.l2.entries, before - 1, `${what}: the entry is removed from L2`);
  }

  test('audio failing its sha256 or missing is a miss and the entry is removed', async () => {
    const kFlip = ttsKey('corrupt-flip');
    const kDel = ttsKey('corrupt-del');
    const kGood = ttsKey('corrupt-neighbour');
    const aFlip = randomBytes(2048);
    const aDel = randomBytes(2048);
    const aGood = randomBytes(2048);
    for (const [k, a] of [[kFlip, aFlip], [kDel, aDel], [kGood, aGood]])
      assert.equal((await putTts(vg, k, a)).status, 201);

    await restart(); // L1 is empty now

    const fFlip = blobFileOf(vg.dataDir, aFlip);
    const b = readFileSync(fFlip);
    b[b.length - 1] ^= 0xff; // last data byte: the header stays valid
    writeFileSync(fFlip, b);
    rmSync(blobFileOf(vg.dataDir, aDel));

    const s0 = await stats(vg);
    await assertRemovedMiss(kFlip, 'flipped last byte');
    await assertRemovedMiss(kDel, 'deleted file');
    const s1 = await stats(vg);
    assert.equal(s1.cache.corrupt, s0.cache.corrupt + 2, 'corrupt entries counted');

    // The neighbour is untouched, and the keys can be written again.
    const g = await req(vg, 'GET', ttsPath(kGood));
    assertHit(g, 'l2');
    assert.ok(g.buf.equals(aGood));
    const fresh = randomBytes(900);
    assert.equal((await putTts(vg, kFlip, fresh)).status, 201);
    await restart();
    const g2 = await req(vg, 'GET', ttsPath(kFlip));
    assertHit(g2, 'l2', 'rewritten entry after restart');
    assert.ok(g2.buf.equals(fresh));
  });

  test('truncated audio is a miss and the entry is removed', async () => {
    const k = ttsKey('corrupt-trunc');
    const audio = randomBytes(2048);
    assert.equal((await putTts(vg, k, audio)).status, 201);
    await restart();
    const f = blobFileOf(vg.dataDir, audio);
    const b = readFileSync(f);
    writeFileSync(f, b.subarray(0, b.length - 1000));
    await assertRemovedMiss(k, 'truncated file');
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});

describe('cache_epoch is part of the key', { timeout: 60000 }, () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ config: { providers: { openai: { cache_epoch: 2 } } } });
  });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('epoch 2 keys contain openai@2; raising the epoch to 3 retires them', async () => {
    const k = sttKey('epoch');
    const other = { ...sttKey('epoch'), provider: 'deepgram' };
    const p = await putStt(vg, k, '{"epoch":2}');
    assert.equal(p.status, 201, p.text);
    assert.ok(p.json.key.includes('openai@2'), p.json.key);
    assert.equal(p.json.key, `voxgate:stt:openai@2:en:${k.audio_hash}`);
    const pt = await putTts(vg, ttsKey('epoch'), randomBytes(100));
    assert.equal(pt.status, 201);
    assert.ok(pt.json.key.startsWith('voxgate:tts:openai@2:'), pt.json.key);
    const po = await putStt(vg, other, '{"other":true}');
    assert.equal(po.json.key, `voxgate:stt:deepgram:en:${k.audio_hash}`);
    const g = await req(vg, 'GET', sttPath(k));
    assertHit(g, 'l1');
    assert.equal(g.text, '{"epoch":2}');

    await stopClean(vg);
    const old = vg;
    vg = await startVoxgate({ config: { providers: { openai: { cache_epoch: 3 } } }, dataDir: old.dataDir });
    rmSync(old.cfgPath, { force: true });

    assertMiss(await req(vg, 'GET', sttPath(k)), 'old epoch STT entry');
    assertMiss(await req(vg, 'GET', ttsPath(ttsKey('epoch'))), 'old epoch TTS entry');
    const go = await req(vg, 'GET', sttPath(other));
    assertHit(go, 'l2', 'other provider untouched');
    const p3 = await putStt(vg, k, '{"epoch":3}');
    assert.equal(p3.json.key, `voxgate:stt:openai@3:en:${k.audio_hash}`);
    assert.equal((await req(vg, 'GET', sttPath(k))).text, '{"epoch":3}');
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});

// Audio over cache.l1.max_item_bytes never goes into L1; each hit used to
// read the whole file and hash it. Now it is sent from its file
// (sendfile) and hashed once per unchanged file.
describe('TTS audio too big for L1 is sent from its file', { timeout: 120000 }, () => {
  let vg;
  const MAX_ITEM = 4096;

  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_CACHE_L1_MAX_ITEM_BYTES: String(MAX_ITEM) } });
  });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('every hit is an L2 hit with the exact bytes; HEAD gives the length', async () => {
    const k = ttsKey('big-file');
    const audio = randomBytes(300 * 1024);
    assert.equal((await putTts(vg, k, audio)).status, 201);
    for (let i = 0; i < 3; i++) {
      const g = await req(vg, 'GET', ttsPath(k));
      assertHit(g, 'l2', `GET ${i}`);
      assert.equal(g.headers.get('content-length'), String(audio.length));
      assert.equal(g.headers.get('etag'), `"${sha256(audio)}"`);
      assert.equal(g.headers.get('content-type'), 'audio/wav');
      assert.ok(g.buf.equals(audio), `GET ${i}: the bytes`);
    }
    const h = await req(vg, 'HEAD', ttsPath(k));
    assertHit(h, 'l2', 'HEAD');
    assert.equal(h.headers.get('content-length'), String(audio.length));
    assert.equal(h.buf.length, 0);
  });

  test('audio changed after it was checked is checked again: a miss, and the entry is removed', async () => {
    const k = ttsKey('big-tamper');
    const audio = randomBytes(64 * 1024);
    assert.equal((await putTts(vg, k, audio)).status, 201);
    assertHit(await req(vg, 'GET', ttsPath(k)), 'l2', 'before'); // checked and remembered
    const f = blobFileOf(vg.dataDir, audio);
    const b = readFileSync(f);
    b[b.length - 1] ^= 0xff; // same size, same inode: only ctime tells
    writeFileSync(f, b);
    const s0 = await stats(vg);
    assertMiss(await req(vg, 'GET', ttsPath(k)), 'after the change');
    assertMiss(await req(vg, 'GET', ttsPath(k)), 'again');
    const s1 = await stats(vg);
    assert.equal(s1.cache.corrupt, s0.cache.corrupt + 1);
    assert.equal(s1.cache.l2.entries, s0.cache.l2.entries - 1, 'the entry is removed');
  });

  test('a corrupt file is a miss on its first read too', async () => {
    const k = ttsKey('big-corrupt');
    const audio = randomBytes(64 * 1024);
    assert.equal((await putTts(vg, k, audio)).status, 201);
    const f = blobFileOf(vg.dataDir, audio);
    const b = readFileSync(f);
    b[b.length - 5000] ^= 0x01;
    writeFileSync(f, b);
    assertMiss(await req(vg, 'GET', ttsPath(k)));
  });

  test('the gateway answers an L2 hit of large audio from the file, in both answer modes', async () => {
    const body = JSON.stringify({ text: 'please call me back tomorrow morning' });
    const post = (headers = {}) => req(vg, 'POST', '/v1/tts', {
      body, headers: { 'Content-Type': 'application/json', ...headers } });
    const first = await post();
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-cache'), 'MISS');
    assert.ok(first.buf.length > MAX_ITEM, `speech of ${first.buf.length} bytes`);
    // The store thread persists after the answer.
    let again;
    for (let i = 0; i < 100; i++) {
      again = await post();
      if (again.headers.get('x-cache-tier') === 'l2') break;
      await sleep(20);
    }
    assertHit(again, 'l2', 'second /v1/tts');
    assert.ok(again.buf.equals(first.buf), 'the same speech');
    const j = await post({ Accept: 'application/json' });
    assert.equal(j.status, 200, j.text);
    assert.equal(j.json.cache, 'hit_l2');
    assert.equal(j.json.bytes, first.buf.length);
    const a = await fetch(new URL(j.json.audio_url, vg.url));
    assert.equal(a.status, 200);
    assert.ok(Buffer.from(await a.arrayBuffer()).equals(first.buf), 'audio_url serves the speech');
  });

  test('Files API downloads are sent from the file: 4 at once of 16 MiB hold no copy in memory', async () => {
    const big = randomBytes(16 * 1024 * 1024);
    const p = await req(vg, 'PUT', '/v1/files/dl/big.bin', {
      body: big, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(p.status, 201, p.text);
    const m0 = memOf(vg);
    const gets = await Promise.all([0, 1, 2, 3].map(() => req(vg, 'GET', '/v1/files/dl/big.bin')));
    const m1 = memOf(vg);
    for (const g of gets) {
      assert.equal(g.status, 200);
      assert.equal(g.headers.get('content-length'), String(big.length));
      assert.ok(g.buf.equals(big));
    }
    const grew = m1.hwm - m0.hwm;
    console.log(`# 4 x 16 MiB downloads: VmHWM +${grew >> 10} kB`);
    assert.ok(grew < big.length / 2, `VmHWM grew ${grew} bytes for 4 downloads of ${big.length}`);
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});
