// Black-box tests of POST /v1/cache/batch and the admin invalidation
// DELETE /v1/cache (SPEC §5; README "Cache-aside API").
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startVoxgate, stopVoxgate, cleanup, sha256, hex64, qs, req } from './lib.mjs';

// ---- helpers (local to this file) ----

const JSONH = { 'Content-Type': 'application/json' };
const bearer = (key) => (key ? { Authorization: `Bearer ${key}` } : {});

function batch(vg, doc, key) {
  return req(vg, 'POST', '/v1/cache/batch', {
    body: typeof doc === 'string' ? doc : JSON.stringify(doc),
    headers: { ...JSONH, ...bearer(key) },
  });
}

async function batchOk(vg, doc, key) {
  const r = await batch(vg, doc, key);
  assert.equal(r.status, 200, `batch: ${r.text}`);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  return r.json;
}

const sttItem = (provider, n, extra = {}) => ({
  kind: 'stt', provider, language: 'en', audio_hash: hex64(`${provider}-stt-${n}`), ...extra,
});
const ttsItem = (provider, n, extra = {}) => ({
  kind: 'tts', provider, language: 'en', voice: 'alloy', text_hash: hex64(`${provider}-tts-${n}`), ...extra,
});
const keyParams = ({ kind, result, ttl_s, ...rest }) => rest; // eslint-disable-line no-unused-vars

function putStt(vg, item, body, key) {
  return req(vg, 'PUT', `/v1/cache/stt?${qs(keyParams(item))}`, {
    body, headers: { ...JSONH, ...bearer(key) },
  });
}
function putTts(vg, item, audio, key, ctype = 'audio/wav') {
  return req(vg, 'PUT', `/v1/cache/tts?${qs(keyParams(item))}`, {
    body: audio, headers: { 'Content-Type': ctype, ...bearer(key) },
  });
}
function getEntry(vg, item, key) {
  return req(vg, 'GET', `/v1/cache/${item.kind}?${qs(keyParams(item))}`, { headers: bearer(key) });
}
function invalidate(vg, query, key) {
  return req(vg, 'DELETE', `/v1/cache${query === undefined ? '' : `?${query}`}`, { headers: bearer(key) });
}

function assertError(res, status, code, what = '') {
  assert.equal(res.status, status, `${what}: status (body ${res.text})`);
  assert.match(res.headers.get('content-type') || '', /^application\/json/, `${what}: content-type`);
  assert.ok(res.json && res.json.error, `${what}: error object in ${res.text}`);
  if (code) assert.equal(res.json.error.code, code, `${what}: code`);
  assert.equal(res.json.error.request_id, res.headers.get('x-request-id'), `${what}: request_id`);
}

function assertItemError(o, flag, code, what) {
  assert.equal(typeof o, 'object', what);
  assert.equal(o[flag], false, `${what}: ${flag} false in ${JSON.stringify(o)}`);
  assert.ok(o.error && typeof o.error.message === 'string', `${what}: error object in ${JSON.stringify(o)}`);
  if (code) assert.equal(o.error.code, code, `${what}: code in ${JSON.stringify(o)}`);
  else assert.match(o.error.code, /^[a-z][a-z0-9_]*$/, `${what}: code`);
}

async function stats(vg, key) {
  const r = await req(vg, 'GET', '/stats', { headers: bearer(key) });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

function blobObjectCount(dataDir) {
  let n = 0;
  const walk = (d) => {
    let ents;
    try { ents = readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of ents) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const b = readFileSync(p);
        if (b.length >= 8 && b.subarray(0, 8).toString('latin1') === 'VGBLOB2\n' /* local blob format v2 (issue 8: metadata) */) n++;
      }
    }
  };
  walk(join(dataDir, 'blobs'));
  return n;
}

async function stopClean(vg) {
  const st = await stopVoxgate(vg, 'SIGTERM');
  assert.deepEqual(st, { code: 0, signal: null }, `exit status; stderr: ${vg.stderr}`);
  assert.doesNotMatch(vg.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/, vg.stderr);
}

async function restartOn(vg, opts) {
  await stopClean(vg);
  const nvg = await startVoxgate({ ...opts, dataDir: vg.dataDir });
  if (vg.cfgPath) rmSync(vg.cfgPath, { force: true });
  return nvg;
}

// ---- batch operations ----

describe('POST /v1/cache/batch', { timeout: 120000 }, () => {
  let vg;
  before(async () => { vg = await startVoxgate(); });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('set three STT items, get them back in order, delete one', async () => {
    const items = [sttItem('openai', 1), sttItem('openai', 2, { format: 'wav' }), sttItem('deepgram', 3, { language: 'de' })];
    const results = [{ text: 'one' }, { text: 'two', words: [{ w: 'two', s: 0.5 }] }, [1, 'x', null, true]];
    const set = await batchOk(vg, { set: items.map((it, i) => ({ ...it, result: results[i] })) });
    assert.deepEqual(set, { get: [], set: [{ ok: true }, { ok: true }, { ok: true }], delete: [] });

    const missing = sttItem('openai', 'missing');
    const got = await batchOk(vg, { get: [items[2], missing, items[0], items[1]] });
    assert.deepEqual(got.set, []);
    assert.deepEqual(got.delete, []);
    assert.deepEqual(got.get, [
      { hit: true, result: results[2] },
      { hit: false },
      { hit: true, result: results[0] },
      { hit: true, result: results[1] },
    ]);

    // The query API sees the same entries.
    const q = await getEntry(vg, items[1]);
    assert.equal(q.status, 200);
    assert.deepEqual(q.json, results[1]);

    const del = await batchOk(vg, { delete: [items[0], missing] });
    assert.deepEqual(del.delete, [{ deleted: true }, { deleted: false }]);
    const after = await batchOk(vg, { get: [items[0], items[1]] });
    assert.deepEqual(after.get, [{ hit: false }, { hit: true, result: results[1] }]);
    assert.equal((await getEntry(vg, items[0])).status, 404);
  });

  test('a set result is stored as written: numbers unrounded, text untouched', async () => {
    const items = [sttItem('exact', 1), sttItem('exact', 2), sttItem('exact', 3)];
    const raws = [
      '{"text":"hi","id":12345678901234567890,"p":1.0e2,"c":0.30000000000000004000}',
      '[ 1 , "a,]}\\\"" , {"x" : -0.0} ]',
      '"caf\u00e9"',
    ];
    // Written by hand, so the bytes are not those JSON.stringify would make.
    const body = `{"set":[${items.map((it, i) => {
      const key = JSON.stringify(it).slice(1, -1);
      return i === 1 ? `{"result" : ${raws[i]} ,${key}}` : `{${key},"result":${raws[i]}}`;
    }).join(' , ')}]}`;
    assert.deepEqual((await batchOk(vg, body)).set, [{ ok: true }, { ok: true }, { ok: true }]);
    for (let i = 0; i < items.length; i++) {
      const q = await getEntry(vg, items[i]);
      assert.equal(q.status, 200);
      assert.equal(q.text, raws[i], `item ${i} through the query API`);
    }
    // The batch answer carries the stored bytes too (from L1 here).
    const r = await batch(vg, { get: items });
    assert.equal(r.status, 200);
    for (const raw of raws) assert.ok(r.text.includes(`"result":${raw}`), `${raw} in ${r.text}`);
  });

  test('a set result in lenient JSON is stored re-serialised, as strict JSON', async () => {
    const it = sttItem('exact', 'lenient');
    // cJSON takes a leading zero; the strict checker on the L2 read path would not.
    const body = `{"set":[{${JSON.stringify(it).slice(1, -1)},"result":{"n":007}}]}`;
    assert.deepEqual((await batchOk(vg, body)).set, [{ ok: true }]);
    const q = await getEntry(vg, it);
    assert.equal(q.status, 200);
    assert.equal(q.text, '{"n":7}');
  });

  test('gets run before sets, sets before deletes, within one batch', async () => {
    const a = sttItem('order', 'a');
    const b = sttItem('order', 'b');
    assert.deepEqual((await batchOk(vg, { set: [{ ...b, result: { v: 'b' } }] })).set, [{ ok: true }]);
    // Written in the order delete, set, get: executed get, set, delete.
    const r = await batchOk(vg, {
      delete: [b],
      set: [{ ...a, result: { v: 'a' } }],
      get: [a, b],
    });
    assert.deepEqual(r, {
      get: [{ hit: false }, { hit: true, result: { v: 'b' } }],
      set: [{ ok: true }],
      delete: [{ deleted: true }],
    });
    const r2 = await batchOk(vg, { get: [a, b] });
    assert.deepEqual(r2.get, [{ hit: true, result: { v: 'a' } }, { hit: false }]);
  });

  test('set honours ttl_s; the entry is written with the given TTL', async () => {
    const it = sttItem('ttl', 1);
    const r = await batchOk(vg, { set: [{ ...it, result: { t: 1 }, ttl_s: 1 }, { ...sttItem('ttl', 2), result: 1, ttl_s: 0 }] });
    assert.deepEqual(r.set[0], { ok: true });
    assertItemError(r.set[1], 'ok', 'invalid_ttl', 'ttl_s 0');
    await new Promise((res) => setTimeout(res, 2200));
    assert.deepEqual((await batchOk(vg, { get: [it] })).get, [{ hit: false }]);
  });

  test('a TTS entry is returned with content_type, bytes, sha256 and a working audio_url', async () => {
    const it = ttsItem('openai', 'batch-get');
    const audio = randomBytes(3000);
    const put = await putTts(vg, it, audio, undefined, 'audio/mpeg');
    assert.equal(put.status, 201, put.text);

    const r = await batchOk(vg, { get: [it, ttsItem('openai', 'nope')] });
    assert.equal(r.get.length, 2);
    const g = r.get[0];
    assert.equal(g.hit, true);
    assert.equal(g.content_type, 'audio/mpeg');
    assert.equal(g.bytes, audio.length);
    assert.equal(g.sha256, sha256(audio));
    assert.equal(typeof g.audio_url, 'string');
    assert.deepEqual(r.get[1], { hit: false });

    const a = await req(vg, 'GET', g.audio_url);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.headers.get('content-type'), 'audio/mpeg');
    assert.ok(a.buf.equals(audio), 'audio_url returns the audio');

    // text= in an item names the same entry as text_hash=sha256(text).
    const text = 'say hi';
    const byHash = ttsItem('openai', 'by-text', { text_hash: sha256(text) });
    assert.equal((await putTts(vg, byHash, audio)).status, 201);
    const { text_hash, ...noHash } = byHash; // eslint-disable-line no-unused-vars
    const r2 = await batchOk(vg, { get: [{ ...noHash, text }] });
    assert.equal(r2.get[0].hit, true, JSON.stringify(r2));
    assert.equal(r2.get[0].sha256, sha256(audio));

    // A TTS delete removes the entry.
    const d = await batchOk(vg, { delete: [it] });
    assert.deepEqual(d.delete, [{ deleted: true }]);
    assert.equal((await getEntry(vg, it)).status, 404);
    assert.equal((await req(vg, 'GET', g.audio_url)).status, 404);
  });

  test('batch get serves L2 after a restart (STT and TTS)', async () => {
    const s = sttItem('l2', 1);
    const t = ttsItem('l2', 1);
    const audio = randomBytes(1500);
    assert.deepEqual((await batchOk(vg, { set: [{ ...s, result: { persisted: true } }] })).set, [{ ok: true }]);
    assert.equal((await putTts(vg, t, audio)).status, 201);
    vg = await restartOn(vg, {});
    const r = await batchOk(vg, { get: [t, s] });
    assert.equal(r.get[0].hit, true, JSON.stringify(r.get[0]));
    assert.equal(r.get[0].sha256, sha256(audio));
    assert.equal(r.get[0].bytes, audio.length);
    assert.deepEqual(r.get[1], { hit: true, result: { persisted: true } });
    const a = await req(vg, 'GET', r.get[0].audio_url);
    assert.ok(a.buf.equals(audio));
  });

  test('one bad item fails alone; the others succeed', async () => {
    const good1 = sttItem('mixed', 1);
    const good2 = sttItem('mixed', 2);
    assert.deepEqual((await batchOk(vg, { set: [{ ...good1, result: { g: 1 } }] })).set, [{ ok: true }]);

    const r = await batchOk(vg, {
      get: [
        { ...good1, audio_hash: 'abc' },           // bad hash
        good1,
        { ...good1, bogus: 1 },                      // unknown field
        { ...good1, kind: 'x' },                     // bad kind
        { ...good1, provider: 'a:b' },               // bad identifier
        { ...good1, provider: undefined },           // missing provider
        'not an object',
      ],
      set: [
        { ...ttsItem('mixed', 1), result: { t: 1 } }, // sets are STT only
        { ...good2, result: { g: 2 } },
        { ...sttItem('mixed', 3) },                    // no result
        { ...sttItem('mixed', 4), result: 1, ttl_s: 'abc' },
        { ...sttItem('mixed', 5), result: 1, extra: true },
      ],
      delete: [
        { ...good1, language: '*' },
        sttItem('mixed', 'never'),
      ],
    });
    assert.equal(r.get.length, 7);
    assertItemError(r.get[0], 'hit', 'invalid_hash', 'get bad hash');
    assert.deepEqual(r.get[1], { hit: true, result: { g: 1 } });
    assertItemError(r.get[2], 'hit', 'unknown_field', 'get unknown field');
    assertItemError(r.get[3], 'hit', null, 'get kind x');
    assertItemError(r.get[4], 'hit', 'invalid_parameter', 'get a:b');
    assertItemError(r.get[5], 'hit', 'missing_parameter', 'get missing provider');
    assertItemError(r.get[6], 'hit', null, 'get non-object');

    assert.equal(r.set.length, 5);
    assertItemError(r.set[0], 'ok', null, 'set tts');
    assert.deepEqual(r.set[1], { ok: true });
    assertItemError(r.set[2], 'ok', 'missing_parameter', 'set without result');
    assertItemError(r.set[3], 'ok', 'invalid_ttl', 'set ttl_s abc');
    assertItemError(r.set[4], 'ok', 'unknown_field', 'set unknown field');

    assert.equal(r.delete.length, 2);
    assertItemError(r.delete[0], 'deleted', 'invalid_parameter', 'delete bad language');
    assert.deepEqual(r.delete[1], { deleted: false });

    // Only the good set was stored.
    const check = await batchOk(vg, {
      get: [good2, sttItem('mixed', 3), sttItem('mixed', 4), sttItem('mixed', 5), good1],
    });
    assert.deepEqual(check.get, [
      { hit: true, result: { g: 2 } }, { hit: false }, { hit: false }, { hit: false }, { hit: true, result: { g: 1 } },
    ]);
    assert.equal((await getEntry(vg, { ...ttsItem('mixed', 1) })).status, 404);
  });

  test('an item takes exactly its kind\'s query fields; ttl_s must be a JSON integer', async () => {
    const r = await batchOk(vg, {
      get: [
        { ...sttItem('strict', 1), voice: 'v' },               // tts field on stt
        { ...sttItem('strict', 2), text: 'zz' },
        { ...ttsItem('strict', 1), audio_hash: hex64('x') },   // stt field on tts
        sttItem('strict', 3),
      ],
      set: [
        { ...sttItem('strict', 4), result: 1, ttl_s: '60' },   // a string, not an integer
        { ...sttItem('strict', 5), result: 1, ttl_s: 60 },
      ],
    });
    assertItemError(r.get[0], 'hit', 'unknown_field', 'stt with voice');
    assertItemError(r.get[1], 'hit', 'unknown_field', 'stt with text');
    assertItemError(r.get[2], 'hit', 'unknown_field', 'tts with audio_hash');
    assert.deepEqual(r.get[3], { hit: false });
    assertItemError(r.set[0], 'ok', 'invalid_ttl', 'ttl_s as a string');
    assert.deepEqual(r.set[1], { ok: true });
    const check = await batchOk(vg, { get: [sttItem('strict', 4), sttItem('strict', 5)] });
    assert.deepEqual(check.get, [{ hit: false }, { hit: true, result: 1 }]);
  });

  test('an empty batch answers three empty lists', async () => {
    assert.deepEqual(await batchOk(vg, {}), { get: [], set: [], delete: [] });
    assert.deepEqual(await batchOk(vg, { get: [], set: [], delete: [] }), { get: [], set: [], delete: [] });
  });

  test('malformed batches are refused whole', async () => {
    const it = sttItem('malformed', 1);
    const s0 = await stats(vg);
    assertError(await batch(vg, '{"get":['), 400, 'invalid_json', 'truncated JSON');
    assertError(await batch(vg, 'nonsense'), 400, 'invalid_json', 'not JSON');
    assertError(await batch(vg, '[]'), 400, 'invalid_json', 'array document');
    assertError(await batch(vg, ''), 400, null, 'empty body');
    assertError(await batch(vg, { get: {} }), 400, null, 'get not an array');
    assertError(await batch(vg, { set: [{ ...it, result: 1 }], bogus: [] }), 400, 'unknown_field', 'unknown top-level field');
    assertError(await batch(vg, { set: [{ ...it, result: 1 }], Get: [] }), 400, 'unknown_field', 'field names are case-sensitive');
    const wrongCt = await req(vg, 'POST', '/v1/cache/batch', {
      body: JSON.stringify({ set: [{ ...it, result: 1 }] }), headers: { 'Content-Type': 'text/plain' },
    });
    assertError(wrongCt, 415, 'unsupported_media_type', 'text/plain');
    const noCt = await req(vg, 'POST', '/v1/cache/batch', { body: Buffer.from(JSON.stringify({ set: [{ ...it, result: 1 }] })) });
    assertError(noCt, 415, 'unsupported_media_type', 'no Content-Type');
    const s1 = await stats(vg);
    assert.equal(s1.cache.l2.writes, s0.cache.l2.writes, 'nothing written');
    assert.equal((await getEntry(vg, it)).status, 404);
  });

  test('data after the JSON document is invalid_json and nothing is stored', async () => {
    const it = sttItem('trailing', 1);
    const body = `${JSON.stringify({ set: [{ ...it, result: 1 }] })} {"x":1}`;
    assertError(await batch(vg, body), 400, 'invalid_json', 'two documents');
    assert.equal((await getEntry(vg, it)).status, 404);
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});

describe('cache.batch_max_items', { timeout: 60000 }, () => {
  let vg;
  before(async () => { vg = await startVoxgate({ config: { cache: { batch_max_items: 5 } } }); });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('more than batch_max_items items in all is 400 too_many_items and nothing is stored', async () => {
    const items = [1, 2, 3, 4, 5, 6].map((n) => sttItem('max', n));
    assertError(await batch(vg, { set: items.map((it) => ({ ...it, result: { n: 1 } })) }), 400, 'too_many_items', '6 sets');
    // The count is over all three lists.
    assertError(await batch(vg, {
      set: items.slice(0, 3).map((it) => ({ ...it, result: 1 })), get: items.slice(0, 2), delete: [items[5]],
    }), 400, 'too_many_items', '3+2+1');
    for (const it of items) assert.equal((await getEntry(vg, it)).status, 404, 'nothing stored');

    // Exactly the maximum is fine.
    const ok = await batchOk(vg, { set: items.slice(0, 3).map((it) => ({ ...it, result: 7 })), get: items.slice(3, 5) });
    assert.deepEqual(ok.set, [{ ok: true }, { ok: true }, { ok: true }]);
    assert.deepEqual(ok.get, [{ hit: false }, { hit: false }]);
    assert.deepEqual((await batchOk(vg, { get: items.slice(0, 3) })).get, [1, 2, 3].map(() => ({ hit: true, result: 7 })));
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});

// ---- invalidation ----

describe('DELETE /v1/cache (invalidation, admin)', { timeout: 180000 }, () => {
  const USER = 'user1';
  const ADMIN = 'admin1';
  const env = { VOXGATE_API_KEYS: USER, VOXGATE_ADMIN_KEYS: ADMIN };
  let vg;
  before(async () => { vg = await startVoxgate({ env }); });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  async function hits(items, key = USER) {
    const out = [];
    for (const it of items) out.push((await getEntry(vg, it, key)).status === 200);
    return out;
  }

  test('auth: user keys read and write; DELETE /v1/cache needs an admin key', async () => {
    const it = sttItem('authp', 1);
    const p = await putStt(vg, it, '{"a":1}', USER);
    assert.equal(p.status, 201, p.text);
    assert.equal((await getEntry(vg, it, USER)).status, 200);
    assert.equal((await getEntry(vg, it, ADMIN)).status, 200, 'admin keys are API keys too');
    assert.deepEqual((await batchOk(vg, { get: [it] }, USER)).get, [{ hit: true, result: { a: 1 } }]);
    assertError(await putStt(vg, sttItem('authp', 2), '{"a":1}'), 401, 'unauthorized', 'PUT without a key');
    assertError(await batch(vg, { get: [it] }), 401, 'unauthorized', 'batch without a key');

    const none = await invalidate(vg, 'provider=authp');
    assertError(none, 401, 'unauthorized', 'no key');
    assert.match(none.headers.get('www-authenticate') || '', /^Bearer/);
    assertError(await invalidate(vg, 'provider=authp', 'wrong'), 401, 'unauthorized', 'bad key');
    assertError(await invalidate(vg, 'provider=authp', USER), 403, 'forbidden', 'user key');
    assert.equal((await getEntry(vg, it, USER)).status, 200, 'nothing deleted by refused calls');
    const ok = await invalidate(vg, 'provider=authp', ADMIN);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { deleted: 1 });
    assert.equal((await getEntry(vg, it, USER)).status, 404);
  });

  test('provider invalidation deletes exactly that provider, STT and TTS, with audio files', async () => {
    const openaiStt = [sttItem('openai', 1), sttItem('openai', 2, { format: 'wav' }), sttItem('openai', 3, { language: 'fr' })];
    const openaiTts = [ttsItem('openai', 1), ttsItem('openai', 2, { format: 'mp3' })];
    const openai2Stt = [sttItem('openai2', 1), sttItem('openai2', 2)];
    const openai2Tts = [ttsItem('openai2', 1)];
    const deepStt = [sttItem('deepgram', 1), sttItem('deepgram', 2)];
    const deepTts = [ttsItem('deepgram', 1)];
    // openai's hashes reused under other providers must survive too.
    const sameHash = { ...openaiStt[0], provider: 'openai2' };

    const set = await batchOk(vg, {
      set: [...openaiStt, ...openai2Stt, ...deepStt, sameHash].map((it, i) => ({ ...it, result: { i } })),
    }, USER);
    assert.ok(set.set.every((s) => s.ok === true), JSON.stringify(set));
    for (const it of [...openaiTts, ...openai2Tts, ...deepTts])
      assert.equal((await putTts(vg, it, randomBytes(700), USER)).status, 201);
    const blobs0 = blobObjectCount(vg.dataDir);
    assert.ok(blobs0 >= 4, `blob files present (${blobs0})`);

    // kind=stt on deepgram: only its STT entries.
    const k1 = await invalidate(vg, 'provider=deepgram&kind=stt', ADMIN);
    assert.equal(k1.status, 200, k1.text);
    assert.deepEqual(k1.json, { deleted: deepStt.length });
    assert.deepEqual(await hits([...deepStt, ...deepTts]), [false, false, true]);
    assert.equal(blobObjectCount(vg.dataDir), blobs0, 'kind=stt leaves audio files');

    // kind=tts on openai2: only its TTS entries and their audio.
    const k2 = await invalidate(vg, 'provider=openai2&kind=tts', ADMIN);
    assert.deepEqual(k2.json, { deleted: openai2Tts.length });
    assert.deepEqual(await hits([...openai2Stt, ...openai2Tts, sameHash]), [true, true, false, true]);
    assert.equal(blobObjectCount(vg.dataDir), blobs0 - openai2Tts.length, 'openai2 audio removed');

    // Everything of openai (both kinds), nothing of openai2 or deepgram.
    const all = await invalidate(vg, 'provider=openai', ADMIN);
    assert.equal(all.status, 200, all.text);
    assert.deepEqual(all.json, { deleted: openaiStt.length + openaiTts.length });
    assert.ok((await hits([...openaiStt, ...openaiTts])).every((h) => !h), 'openai entries gone');
    assert.deepEqual(await hits([...openai2Stt, sameHash, ...deepTts]), [true, true, true, true]);
    assert.equal(blobObjectCount(vg.dataDir), blobs0 - openai2Tts.length - openaiTts.length, 'openai audio removed');
    // The batch view agrees (L1 was cleared too).
    const b = await batchOk(vg, { get: [openaiStt[0], sameHash] }, USER);
    assert.deepEqual(b.get[0], { hit: false });
    assert.equal(b.get[1].hit, true);

    // Nothing left to delete.
    assert.deepEqual((await invalidate(vg, 'provider=openai', ADMIN)).json, { deleted: 0 });
    assert.deepEqual((await invalidate(vg, 'provider=nobody', ADMIN)).json, { deleted: 0 });
  });

  test('bad invalidation requests are 400', async () => {
    const it = sttItem('badinv', 1);
    assert.equal((await putStt(vg, it, '{"a":1}', USER)).status, 201);
    assertError(await invalidate(vg, undefined, ADMIN), 400, 'missing_parameter', 'no provider');
    assertError(await invalidate(vg, 'kind=stt', ADMIN), 400, 'missing_parameter', 'kind only');
    assertError(await invalidate(vg, 'provider=', ADMIN), 400, 'invalid_parameter', 'empty provider');
    assertError(await invalidate(vg, 'provider=bad*', ADMIN), 400, 'invalid_parameter', 'glob');
    assertError(await invalidate(vg, 'provider=*', ADMIN), 400, 'invalid_parameter', 'glob only');
    assertError(await invalidate(vg, 'provider=bad%3Ainv', ADMIN), 400, 'invalid_parameter', 'colon');
    assertError(await invalidate(vg, `provider=${'p'.repeat(65)}`, ADMIN), 400, 'invalid_parameter', '65 chars');
    assertError(await invalidate(vg, 'provider=badinv&kind=x', ADMIN), 400, null, 'bad kind');
    assertError(await invalidate(vg, 'provider=badinv&foo=1', ADMIN), 400, 'unknown_parameter', 'unknown parameter');
    assertError(await invalidate(vg, 'provider=badinv&provider=x', ADMIN), 400, 'duplicate_parameter', 'duplicate');
    assert.equal((await getEntry(vg, it, USER)).status, 200, 'nothing deleted');
  });

  test('invalidating 1500 entries deletes all 1500 (stepwise scan)', async () => {
    const N = 1500;
    const CHUNK = 100;
    for (let i = 0; i < N; i += CHUNK) {
      const set = [];
      for (let j = i; j < i + CHUNK; j++) set.push({ ...sttItem('bulk', j), result: { j } });
      const r = await batchOk(vg, { set }, USER);
      assert.equal(r.set.filter((s) => s.ok === true).length, CHUNK, `chunk at ${i}`);
    }
    const keep = [0, 1, 2, 3, 4].map((j) => sttItem('bulk2', j));
    await batchOk(vg, { set: keep.map((it) => ({ ...it, result: 1 })) }, USER);
    const keepTts = ttsItem('bulk-x', 1); // a provider name that starts with "bulk"
    assert.equal((await putTts(vg, keepTts, randomBytes(100), USER)).status, 201);
    const s0 = await stats(vg, ADMIN);

    const r = await invalidate(vg, 'provider=bulk', ADMIN);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { deleted: N });

    const s1 = await stats(vg, ADMIN);
    assert.equal(s1.cache.l2.entries, s0.cache.l2.entries - N, 'L2 holds N entries fewer');
    for (const from of [0, 500, 1400]) {
      const g = await batchOk(vg, { get: Array.from({ length: 100 }, (_, k) => sttItem('bulk', from + k)) }, USER);
      assert.ok(g.get.every((x) => x.hit === false), `bulk entries from ${from} gone`);
    }
    const g2 = await batchOk(vg, { get: keep }, USER);
    assert.ok(g2.get.every((x) => x.hit === true), 'bulk2 untouched');
    assert.equal((await getEntry(vg, keepTts, USER)).status, 200, 'bulk-x untouched');
    assert.deepEqual((await invalidate(vg, 'provider=bulk', ADMIN)).json, { deleted: 0 });
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});

describe('invalidation covers every cache_epoch of the provider', { timeout: 60000 }, () => {
  let vg;
  before(async () => { vg = await startVoxgate({ config: { providers: { openai: { cache_epoch: 1 } } } }); });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('entries written under epoch 1 and epoch 0 are all deleted', async () => {
    const e1 = sttItem('openai', 'e1');
    const e1t = ttsItem('openai', 'e1');
    const p = await putStt(vg, e1, '{"epoch":1}');
    assert.ok(p.json.key.includes('openai@1'), p.text);
    assert.equal((await putTts(vg, e1t, randomBytes(200))).status, 201);
    const blobs1 = blobObjectCount(vg.dataDir);

    vg = await restartOn(vg, {}); // epoch 0 now
    const e0 = sttItem('openai', 'e0');
    const other = sttItem('openai2', 'e0');
    assert.equal((await putStt(vg, e0, '{"epoch":0}')).status, 201);
    assert.equal((await putStt(vg, other, '{"other":1}')).status, 201);
    assert.equal((await getEntry(vg, e1)).status, 404, 'epoch 1 entry is not visible under epoch 0');

    const r = await invalidate(vg, 'provider=openai');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { deleted: 3 });
    assert.equal((await getEntry(vg, e0)).status, 404);
    assert.equal((await getEntry(vg, other)).status, 200);
    assert.equal(blobObjectCount(vg.dataDir), blobs1 - 1, 'epoch 1 audio removed');

    vg = await restartOn(vg, { config: { providers: { openai: { cache_epoch: 1 } } } });
    assert.equal((await getEntry(vg, e1)).status, 404, 'epoch 1 entry gone');
    assert.equal((await getEntry(vg, e1t)).status, 404, 'epoch 1 TTS entry gone');
  });

  test('server stops cleanly (exit 0)', async () => {
    await stopClean(vg);
  });
});
