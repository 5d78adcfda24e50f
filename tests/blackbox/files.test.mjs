// Files API (SPEC §5, object storage) against both stores: the real
// SigV4-checking S3 server (@20minutes/s3rver, started here) and the local
// blob directory. Same routes, same answers; what is stored is checked
// independently (s3rver's directory, the blob tree) after bad input.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PutObjectCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startVoxgate, stopVoxgate, cleanup, req, sleep, sha256, tempDir } from './lib.mjs';
import { startS3rver, stopS3rver, startVoxgateS3, s3Client, bucketKeys, BUCKET } from './s3lib.mjs';

const SLOW = 120000;
const USER = 'files-user-key';
const ADMIN = 'files-admin-key';
const KEYS = { VOXGATE_API_KEYS: USER, VOXGATE_ADMIN_KEYS: ADMIN };
const asAdmin = { Authorization: `Bearer ${ADMIN}` };
const asUser = { Authorization: `Bearer ${USER}` };

// Path of a key with each segment percent-encoded once.
const keyPath = (k) => `/v1/files/${k.split('/').map(encodeURIComponent).join('/')}`;

function put(vg, key, body, ctype = 'audio/wav', extra = {}) {
  return req(vg, 'PUT', keyPath(key), { body, headers: { ...asAdmin, 'Content-Type': ctype, ...extra } });
}
const get = (vg, key, h = asUser) => req(vg, 'GET', keyPath(key), { headers: h });

// A request whose path is sent exactly as written: fetch() would resolve
// "a/../b" to "b" before sending it.
function rawReq(vg, method, path, { body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port: vg.port, method, path, headers }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, text, json });
      });
    });
    r.on('error', reject);
    r.end(body);
  });
}

// Stop voxgate and insist on a clean exit: under ASan a leak or an error
// report makes the exit status non-zero.
async function stopChecked(vg) {
  if (!vg) return;
  try {
    const res = await stopVoxgate(vg);
    assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-3000)})`);
  } finally {
    cleanup(vg);
  }
}

// Keys stored by the local blob store: files named KEY@ under data_dir/blobs.
function localKeys(vg) {
  const root = join(vg.dataDir, 'blobs');
  const out = [];
  const walk = (d, rel) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), r);
      else if (e.name.endsWith('@')) out.push(r.slice(0, -1));
    }
  };
  walk(root, '');
  return out.sort();
}

// The tests both stores must pass. ctx: { vg, stored(), bucket }
function commonFilesTests(name, ctx) {
  it(`${name}: PUT stores bytes, type and X-Meta-*; GET and HEAD give them back`, async () => {
    const audio = Buffer.from('RIFF....WAVEfmt common-files-test');
    const r = await put(ctx.vg, 'docs/one.wav', audio, 'audio/wav', { 'X-Meta-Speaker': 'Ann', 'X-Meta-take': '2' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.key, 'docs/one.wav');
    assert.equal(r.json.bucket, ctx.bucket);
    assert.equal(r.json.size, audio.length);
    assert.equal(r.json.content_type, 'audio/wav');
    assert.match(r.json.etag, /^[0-9a-f]{32,64}$/);
    assert.ok(Math.abs(Date.parse(r.json.uploaded_at) - Date.now()) < 120000, r.json.uploaded_at);
    assert.deepEqual(r.json.metadata, { speaker: 'Ann', take: '2' });
    assert.equal(r.headers.get('location'), '/v1/files/docs/one.wav');
    const g = await get(ctx.vg, 'docs/one.wav');
    assert.equal(g.status, 200);
    assert.ok(g.buf.equals(audio));
    assert.equal(g.headers.get('content-type'), 'audio/wav');
    assert.equal(g.headers.get('etag'), `"${r.json.etag}"`);
    assert.equal(g.headers.get('x-meta-speaker'), 'Ann');
    const h = await req(ctx.vg, 'HEAD', keyPath('docs/one.wav'), { headers: asUser });
    assert.equal(h.status, 200);
    assert.equal(h.buf.length, 0);
    assert.equal(h.headers.get('content-length'), String(audio.length));
    assert.equal(h.headers.get('x-meta-take'), '2');
    assert.ok(ctx.stored().includes('docs/one.wav'));
    const miss = await get(ctx.vg, 'docs/none.wav');
    assert.equal(miss.status, 404);
    assert.equal(miss.json.error.code, 'file_not_found');
    assert.equal((await req(ctx.vg, 'HEAD', keyPath('docs/none.wav'), { headers: asUser })).status, 404);
  });

  it(`${name}: POST stores under prefix/YYYY/MM/DD/uuid.ext`, async () => {
    const r = await req(ctx.vg, 'POST', '/v1/files?prefix=uploads/', { body: Buffer.from('mp3 bytes'), headers: { ...asUser, 'Content-Type': 'audio/mpeg' } });
    assert.equal(r.status, 201, r.text);
    const d = new Date();
    const ymd = `${d.getUTCFullYear()}/${String(d.getUTCMonth() + 1).padStart(2, '0')}/${String(d.getUTCDate()).padStart(2, '0')}`;
    assert.match(r.json.key, new RegExp(`^uploads/${ymd}/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\\.mp3$`));
    assert.equal((await get(ctx.vg, r.json.key)).text, 'mp3 bytes');
    const r2 = await req(ctx.vg, 'POST', '/v1/files', { body: Buffer.from('{}'), headers: { ...asUser, 'Content-Type': 'application/json' } });
    assert.equal(r2.status, 201);
    assert.match(r2.json.key, /^\d{4}\/\d{2}\/\d{2}\/[0-9a-f-]{36}\.json$/);
    assert.notEqual(r.json.key, r2.json.key);
  });

  it(`${name}: DELETE needs an admin key, then 204, then 404`, async () => {
    assert.equal((await put(ctx.vg, 'del/me.txt', 'x', 'text/plain')).status, 201);
    const u = await req(ctx.vg, 'DELETE', keyPath('del/me.txt'), { headers: asUser });
    assert.equal(u.status, 403);
    assert.equal((await req(ctx.vg, 'DELETE', keyPath('del/me.txt'), { headers: asAdmin })).status, 204);
    assert.equal((await req(ctx.vg, 'DELETE', keyPath('del/me.txt'), { headers: asAdmin })).status, 404);
    assert.equal((await get(ctx.vg, 'del/me.txt')).status, 404);
    assert.ok(!ctx.stored().includes('del/me.txt'));
  });

  it(`${name}: list pages through every key with the cursor`, async () => {
    const keys = [];
    for (let i = 0; i < 7; i++) keys.push(`page/k${i}-${'x'.repeat(i)}.bin`);
    for (const k of keys) assert.equal((await put(ctx.vg, k, k, 'application/octet-stream')).status, 201);
    const seen = [];
    let cursor;
    let pages = 0;
    do {
      const q = `/v1/files?prefix=page/&limit=3${cursor ? `&cursor=${cursor}` : ''}`;
      const r = await req(ctx.vg, 'GET', q, { headers: asUser });
      assert.equal(r.status, 200, r.text);
      assert.ok(r.json.files.length <= 3);
      for (const f of r.json.files) {
        seen.push(f.key);
        assert.equal(f.size, Buffer.byteLength(f.key));
        assert.match(f.last_modified, /^\d{4}-\d{2}-\d{2}T/);
      }
      cursor = r.json.next_cursor;
      pages++;
    } while (cursor);
    assert.equal(pages, 3);
    assert.deepEqual(seen, [...keys].sort());
    const all = await req(ctx.vg, 'GET', '/v1/files?prefix=page/', { headers: asUser });
    assert.equal(all.json.files.length, 7);
    assert.equal(all.json.next_cursor, null);
  });

  it(`${name}: keys at the edges of the allowed set`, async () => {
    const deep = Array.from({ length: 40 }, (_, i) => `d${i}`).join('/') + '/leaf.wav';
    const base = 'edge/';
    const long = base + 'L'.repeat(200) + '/' + 'M'.repeat(200) + '/' + 'N'.repeat(200) + '/' + 'O'.repeat(200) + '/';
    const exact = long + 'z'.repeat(1024 - long.length);
    assert.equal(Buffer.byteLength(exact), 1024);
    for (const k of ['edge/a.b-c_d.E9', 'edge/.hidden', 'edge/-dash_', 'edge/x..y', `edge/${deep}`, exact]) {
      const body = Buffer.from(`bytes of ${k.length}`);
      const r = await put(ctx.vg, k, body, 'application/octet-stream');
      assert.equal(r.status, 201, `${k}: ${r.text}`);
      const g = await get(ctx.vg, k);
      assert.equal(g.status, 200, k);
      assert.ok(g.buf.equals(body), k);
      assert.ok(ctx.stored().includes(k), k);
    }
    const l = await req(ctx.vg, 'GET', '/v1/files?prefix=edge/&limit=1000', { headers: asUser });
    assert.ok(l.json.files.some((f) => f.key === exact));
  });

  it(`${name}: bad input is a clear 400 and nothing is written`, async () => {
    const before = ctx.stored();
    const bad = [
      ['PUT', '/v1/files/a/../b', 'invalid_key'],
      ['PUT', '/v1/files/..', 'invalid_key'],
      ['PUT', '/v1/files//lead', 'invalid_key'],
      ['PUT', `/v1/files/${'k'.repeat(1025)}`, 'invalid_key'],
      ['PUT', '/v1/files/ctl%01x', 'invalid_key'],
      ['PUT', '/v1/files/nul%00x', 'invalid_key'],
      ['PUT', '/v1/files/sp%20ace', 'invalid_key'],
      ['GET', '/v1/files/a/../b', 'invalid_key'],
      ['GET', '/v1/files/nul%00x', 'invalid_key'],
      ['GET', `/v1/files/${'k'.repeat(1025)}`, 'invalid_key'],
      ['GET', '/v1/files/docs/one.wav/url?expires_s=0', 'invalid_expires'],
      ['GET', '/v1/files/docs/one.wav/url?expires_s=-5', 'invalid_expires'],
      ['GET', '/v1/files/docs/one.wav/url?expires_s=604801', 'invalid_expires'],
      ['GET', '/v1/files/docs/one.wav/url?expires_s=1h', 'invalid_expires'],
      ['GET', '/v1/files?limit=0', 'invalid_limit'],
      ['GET', '/v1/files?limit=1001', 'invalid_limit'],
      ['GET', '/v1/files?cursor=!!', 'invalid_cursor'],
      ['GET', '/v1/files?cursor=Lg', 'invalid_cursor'],
      ['GET', '/v1/files?prefix=a%01b', 'invalid_prefix'],
      ['GET', `/v1/files?prefix=${'p'.repeat(1025)}`, 'invalid_prefix'],
      ['POST', '/v1/files?prefix=../x', 'invalid_prefix'],
    ];
    for (const [m, p, code] of bad) {
      const body = m === 'GET' ? undefined : Buffer.from('data');
      const r = await rawReq(ctx.vg, m, p, { body, headers: { ...asAdmin, 'Content-Type': 'audio/wav' } });
      assert.equal(r.status, 400, `${m} ${p}: ${r.status} ${r.text}`);
      assert.equal(r.json.error.code, code, `${m} ${p}`);
    }
    // No Content-Type (a binary body gets none from fetch).
    let r = await req(ctx.vg, 'PUT', '/v1/files/noct.bin', { body: new Uint8Array([1, 2]), headers: asAdmin });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'missing_content_type');
    r = await req(ctx.vg, 'POST', '/v1/files', { body: new Uint8Array([1]), headers: asAdmin });
    assert.equal(r.json.error.code, 'missing_content_type');
    // Metadata: too many, too large, a bad name.
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`X-Meta-m${i}`, 'v']));
    const bigv = { 'X-Meta-big': 'v'.repeat(257) };
    const total = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`X-Meta-t${i}`, 'w'.repeat(250)]));
    for (const h of [many, bigv, total, { 'X-Meta-a_b': '1' }, { 'X-Meta-take': '1', 'X-Meta-take-2': '2' }]) {
      r = await put(ctx.vg, 'meta/bad.wav', Buffer.from('x'), 'audio/wav', h);
      assert.equal(r.status, 400, JSON.stringify(Object.keys(h)));
      assert.equal(r.json.error.code, 'invalid_metadata');
    }
    assert.deepEqual(ctx.stored(), before, 'nothing was written by bad requests');
  });

  it(`${name}: /url defaults to one hour and refuses missing files`, async () => {
    const r = await req(ctx.vg, 'GET', '/v1/files/docs/one.wav/url', { headers: asUser });
    assert.equal(r.status, 200, r.text);
    const left = Date.parse(r.json.expires_at) - Date.now();
    assert.ok(left > 3500000 && left <= 3600000, `expires_at ${r.json.expires_at}`);
    assert.equal((await req(ctx.vg, 'GET', '/v1/files/docs/nope.wav/url', { headers: asUser })).status, 404);
  });

  it(`${name}: a handed-out URL works with plain HTTP and no key; tampered or expired is 403`, async () => {
    const audio = Buffer.from('signed url bytes \u00e9');
    assert.equal((await put(ctx.vg, 'signed/a.wav', audio)).status, 201);
    const r = await req(ctx.vg, 'GET', '/v1/files/signed/a.wav/url?expires_s=600', { headers: asUser });
    assert.equal(r.status, 200);
    const ok = await fetch(r.json.url);
    assert.equal(ok.status, 200);
    assert.ok(Buffer.from(await ok.arrayBuffer()).equals(audio));
    const u = new URL(r.json.url);
    const sigName = u.searchParams.has('X-Amz-Signature') ? 'X-Amz-Signature' : 'sig';
    const expName = u.searchParams.has('X-Amz-Expires') ? 'X-Amz-Expires' : 'expires';
    const t1 = new URL(u);
    const s = t1.searchParams.get(sigName);
    t1.searchParams.set(sigName, (s[0] === '0' ? '1' : '0') + s.slice(1));
    assert.equal((await fetch(t1)).status, 403, 'tampered signature');
    const t2 = new URL(u);
    t2.searchParams.set(expName, String(Number(t2.searchParams.get(expName)) + 1));
    assert.equal((await fetch(t2)).status, 403, 'changed expiry');
    const t3 = new URL(u.href.replace('signed/a.wav', 'docs/one.wav'));
    assert.equal((await fetch(t3)).status, 403, 'signature of another key');
    const short = await req(ctx.vg, 'GET', '/v1/files/signed/a.wav/url?expires_s=1', { headers: asUser });
    await sleep(2200);
    assert.equal((await fetch(short.json.url)).status, 403, 'expired');
  });
}

describe('Files API on S3 (s3rver, SigV4 checked)', { timeout: SLOW }, () => {
  let s3;
  const ctx = { bucket: BUCKET };
  before(async () => {
    s3 = await startS3rver();
    ctx.vg = await startVoxgateS3(s3, { env: KEYS });
    ctx.stored = () => bucketKeys(s3);
  });
  after(async () => {
    await stopChecked(ctx.vg);
    await stopS3rver(s3);
  });

  commonFilesTests('s3', ctx);

  it('the presigned URL is a SigV4 URL for the bucket; @aws-sdk/s3-request-presigner URLs work too', async () => {
    const audio = Buffer.from('interop bytes');
    assert.equal((await put(ctx.vg, 'interop/x.wav', audio)).status, 201);
    const r = await req(ctx.vg, 'GET', '/v1/files/interop/x.wav/url?expires_s=300', { headers: asUser });
    const u = new URL(r.json.url);
    assert.equal(u.origin, s3.endpoint);
    assert.equal(u.pathname, `/${BUCKET}/interop/x.wav`);
    assert.equal(u.searchParams.get('X-Amz-Expires'), '300');
    assert.equal(u.searchParams.get('X-Amz-SignedHeaders'), 'host');
    const sdkUrl = await getSignedUrl(s3Client(s3), new GetObjectCommand({ Bucket: BUCKET, Key: 'interop/x.wav' }), { expiresIn: 300 });
    const a = await fetch(sdkUrl);
    assert.equal(a.status, 200);
    assert.ok(Buffer.from(await a.arrayBuffer()).equals(audio));
  });

  it('objects put by another client with spaces, + and UTF-8 are listed and readable', async () => {
    const client = s3Client(s3);
    const foreign = ['ext/hello world.wav', 'ext/plus+sign.txt', 'ext/\u00fcml\u00e4ut-\u043a\u043b\u044e\u0447.txt', 'ext/sub dir/a b+c.bin'];
    for (const k of foreign) {
      await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: k, Body: `body of ${k}`, ContentType: 'text/plain' }));
    }
    const l = await req(ctx.vg, 'GET', '/v1/files?prefix=ext/', { headers: asUser });
    assert.equal(l.status, 200, l.text);
    assert.deepEqual(l.json.files.map((f) => f.key), [...foreign].sort());
    for (const k of foreign) {
      const g = await get(ctx.vg, k);
      assert.equal(g.status, 200, `${k}: ${g.text}`);
      assert.equal(g.text, `body of ${k}`);
      assert.equal((await req(ctx.vg, 'HEAD', keyPath(k), { headers: asUser })).status, 200);
      const u = await req(ctx.vg, 'GET', `${keyPath(k)}/url`, { headers: asUser });
      assert.equal(u.status, 200, u.text);
      const f = await fetch(u.json.url);
      assert.equal(f.status, 200, `presigned ${k}`);
      assert.equal(await f.text(), `body of ${k}`);
    }
    // Pages of one: the cursor carries such keys too.
    const seen = [];
    let cursor;
    do {
      const r = await req(ctx.vg, 'GET', `/v1/files?prefix=ext/&limit=1${cursor ? `&cursor=${cursor}` : ''}`, { headers: asUser });
      assert.equal(r.status, 200, r.text);
      seen.push(...r.json.files.map((f) => f.key));
      cursor = r.json.next_cursor;
    } while (cursor);
    assert.deepEqual(seen, [...foreign].sort());
    const sub = await req(ctx.vg, 'GET', `/v1/files?prefix=${encodeURIComponent('ext/sub dir/')}`, { headers: asUser });
    assert.deepEqual(sub.json.files.map((f) => f.key), ['ext/sub dir/a b+c.bin']);
    assert.equal((await req(ctx.vg, 'DELETE', keyPath('ext/hello world.wav'), { headers: asAdmin })).status, 204);
    assert.ok(!bucketKeys(s3).includes('ext/hello world.wav'));
  });

  it('a 5 MB upload (curl sends Expect: 100-continue) round-trips byte for byte', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    const r = await put(ctx.vg, 'big/five.bin', big, 'application/octet-stream');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.size, big.length);
    const g = await get(ctx.vg, 'big/five.bin');
    assert.equal(g.status, 200);
    assert.equal(sha256(g.buf), sha256(big));
  });

  it('an object over limits.max_body_bytes from another client is a 413, not held in memory', async () => {
    await s3Client(s3).send(new PutObjectCommand({ Bucket: BUCKET, Key: 'huge/obj.bin', Body: Buffer.alloc(4096, 7) }));
    const small = await startVoxgateS3(s3, { env: { ...KEYS, VOXGATE_LIMITS_MAX_BODY_BYTES: '1000' } });
    try {
      const g = await get(small, 'huge/obj.bin');
      assert.equal(g.status, 413, g.text);
      assert.equal(g.json.error.code, 'file_too_large');
      assert.equal((await req(small, 'HEAD', keyPath('huge/obj.bin'), { headers: asUser })).status, 200);
    } finally {
      await stopChecked(small);
    }
  });

  it('storage operations are counted in /stats and /metrics', async () => {
    const st = await req(ctx.vg, 'GET', '/stats', { headers: asAdmin });
    const s = st.json.storage;
    assert.ok(s.ops.put >= 5 && s.ops.get >= 5 && s.ops.list >= 1, JSON.stringify(s));
    assert.ok(s.bytes_in > 0 && s.bytes_out > 0);
    const m = await req(ctx.vg, 'GET', '/metrics', { headers: asAdmin });
    assert.match(m.text, /voxgate_storage_operations_total\{op="put"\} [1-9]/);
    assert.match(m.text, /voxgate_storage_operation_duration_seconds_count [1-9]/);
    const ready = await req(ctx.vg, 'GET', '/ready');
    assert.equal(ready.status, 200);
    assert.equal(ready.json.checks.storage.backend, 's3');
  });
});

describe('S3 failures: a wrong secret, a hung server', { timeout: SLOW }, () => {
  let s3;
  let vg;
  before(async () => { s3 = await startS3rver(); });
  after(async () => {
    await stopChecked(vg);
    await stopS3rver(s3);
  });

  it('a wrong secret: S3 answers 403, voxgate a clear 502, /ready 503, nothing stored', async () => {
    const bad = await startVoxgateS3(s3, { secret: 'not-the-secret' });
    try {
      const r = await put(bad, 'wrong/secret.wav', Buffer.from('x'));
      assert.equal(r.status, 502, r.text);
      assert.equal(r.json.error.code, 'storage_error');
      assert.match(r.json.error.message, /403 SignatureDoesNotMatch/);
      const g = await get(bad, 'anything.wav');
      assert.equal(g.status, 502);
      const ready = await req(bad, 'GET', '/ready');
      assert.equal(ready.status, 503);
      assert.equal(ready.json.checks.storage.ok, false);
      assert.deepEqual(bucketKeys(s3), []);
    } finally {
      await stopChecked(bad);
    }
  });

  it('SIGSTOP: requests end within the timeout, L1 TTS hits are still served; SIGCONT recovers', async () => {
    vg = await startVoxgateS3(s3, { s3extra: { timeout_ms: 1500, connect_timeout_ms: 500 } });
    const q = (t) => `/v1/cache/tts?provider=openai&language=en&voice=alloy&text=${encodeURIComponent(t)}`;
    const audio = Buffer.from('ID3 cached speech');
    assert.equal((await req(vg, 'PUT', q('cached'), { body: audio, headers: { 'Content-Type': 'audio/mpeg' } })).status, 201);
    assert.equal((await put(vg, 'hang/a.wav', Buffer.from('a'))).status, 201);
    process.kill(s3.child.pid, 'SIGSTOP');
    try {
      let t0 = Date.now();
      const g = await get(vg, 'hang/a.wav');
      const took = Date.now() - t0;
      assert.equal(g.status, 503, g.text);
      assert.equal(g.json.error.code, 'storage_unavailable');
      assert.ok(took < 6000, `took ${took} ms`);
      t0 = Date.now();
      const hit = await req(vg, 'GET', q('cached'));
      assert.equal(hit.status, 200);
      assert.equal(hit.headers.get('x-cache-tier'), 'l1');
      assert.ok(hit.buf.equals(audio));
      assert.ok(Date.now() - t0 < 1000, 'an L1 hit does not wait for S3');
      const p = await req(vg, 'PUT', q('new while down'), { body: audio, headers: { 'Content-Type': 'audio/mpeg' } });
      assert.equal(p.status, 503);
      assert.equal(p.json.error.code, 'storage_unavailable');
      const miss = await req(vg, 'GET', q('new while down'));
      assert.equal(miss.status, 404, 'nothing half-written');
      const ready = await req(vg, 'GET', '/ready');
      assert.equal(ready.status, 503);
      assert.equal(ready.json.checks.storage.ok, false);
    } finally {
      process.kill(s3.child.pid, 'SIGCONT');
    }
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      ok = (await get(vg, 'hang/a.wav')).status === 200;
      if (!ok) await sleep(100);
    }
    assert.ok(ok, 'reads recover after SIGCONT');
    assert.equal((await req(vg, 'GET', '/ready')).status, 200);
    assert.equal((await put(vg, 'hang/b.wav', Buffer.from('b'))).status, 201);
  });
});

describe('S3 bucket and credentials at start', { timeout: SLOW }, () => {
  let s3;
  before(async () => { s3 = await startS3rver(); });
  after(async () => { await stopS3rver(s3); });

  it('missing key variables stop voxgate with a message naming them', async () => {
    await assert.rejects(
      startVoxgate({ config: { s3: { endpoint: s3.endpoint, bucket: BUCKET, access_key_env: 'NO_SUCH_VAR_AK', secret_key_env: 'NO_SUCH_VAR_SK' } } }),
      /s3\.access_key_env: environment variable NO_SUCH_VAR_AK is not set/);
  });

  it('a missing bucket is a clear 502 NoSuchBucket; create_bucket creates it at start', async () => {
    const missing = await startVoxgateS3(s3, { s3extra: { bucket: 'not-created' } });
    try {
      const r = await put(missing, 'x.txt', 'x', 'text/plain');
      assert.equal(r.status, 502, r.text);
      assert.match(r.json.error.message, /NoSuchBucket/);
      assert.equal((await req(missing, 'GET', '/ready')).status, 503);
    } finally {
      await stopChecked(missing);
    }
    const made = await startVoxgateS3(s3, { s3extra: { bucket: 'made-by-voxgate', create_bucket: true } });
    try {
      assert.equal((await req(made, 'GET', '/ready')).status, 200);
      const r = await put(made, 'in/new.txt', 'new bucket', 'text/plain');
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.bucket, 'made-by-voxgate');
      assert.deepEqual(bucketKeys(s3, 'made-by-voxgate'), ['in/new.txt']);
    } finally {
      await stopChecked(made);
    }
    // A second start finds the bucket there (no error on "already exists").
    const again = await startVoxgateS3(s3, { s3extra: { bucket: 'made-by-voxgate', create_bucket: true } });
    try {
      assert.equal((await get(again, 'in/new.txt')).text, 'new bucket');
    } finally {
      await stopChecked(again);
    }
  });
});

describe('S3 presigned URLs name s3.public_endpoint', { timeout: SLOW }, () => {
  let s3;
  let vg;
  before(async () => { s3 = await startS3rver(); });
  after(async () => {
    await stopChecked(vg);
    await stopS3rver(s3);
  });

  it('voxgate talks to one host name, the URL names the public one and works there', async () => {
    // voxgate reaches the store as "localhost"; clients are told 127.0.0.1.
    vg = await startVoxgateS3(s3, { s3extra: { endpoint: `http://localhost:${s3.port}`, public_endpoint: s3.endpoint } });
    assert.equal((await put(vg, 'pub/a.txt', 'public bytes', 'text/plain')).status, 201);
    const r = await req(vg, 'GET', '/v1/files/pub/a.txt/url', { headers: asUser });
    const u = new URL(r.json.url);
    assert.equal(u.origin, s3.endpoint);
    const f = await fetch(u);
    assert.equal(f.status, 200);
    assert.equal(await f.text(), 'public bytes');
    // The host is part of the signature: the same URL sent to another name fails.
    const other = await new Promise((resolve, reject) => {
      const rq = request({ host: '127.0.0.1', port: s3.port, path: u.pathname + u.search, headers: { Host: `localhost:${s3.port}` } },
        (res) => { res.resume(); resolve(res.statusCode); });
      rq.on('error', reject);
      rq.end();
    });
    assert.equal(other, 403);
  });
});

describe('TTS cache entries with audio in S3', { timeout: SLOW }, () => {
  let s3;
  let vg;
  const q = '/v1/cache/tts?provider=openai&language=en&voice=alloy&text=hello%20s3';
  before(async () => { s3 = await startS3rver(); });
  after(async () => {
    await stopChecked(vg);
    await stopS3rver(s3);
  });

  it('the audio lands in the bucket; after a restart it is read back from S3', async () => {
    vg = await startVoxgateS3(s3);
    const audio = Buffer.from('RIFF tts audio in s3');
    const p = await req(vg, 'PUT', q, { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(p.status, 201, p.text);
    const tts = bucketKeys(s3).filter((k) => k.startsWith('tts/'));
    assert.equal(tts.length, 1);
    assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null }, vg.stderr.slice(-3000));
    vg = await startVoxgateS3(s3, { dataDir: vg.dataDir });
    const g = await req(vg, 'GET', q);
    assert.equal(g.status, 200);
    assert.equal(g.headers.get('x-cache-tier'), 'l2');
    assert.ok(g.buf.equals(audio));
    assert.equal(g.headers.get('etag'), `"${sha256(audio)}"`);
  });

  it('a batch hit carries a presigned audio_url that S3 serves', async () => {
    const r = await req(vg, 'POST', '/v1/cache/batch', {
      body: JSON.stringify({ get: [{ kind: 'tts', provider: 'openai', language: 'en', voice: 'alloy', text_hash: sha256('hello s3') }] }),
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(r.status, 200, r.text);
    const g = r.json.get[0];
    assert.equal(g.hit, true);
    const u = new URL(g.audio_url);
    assert.equal(u.origin, s3.endpoint);
    assert.ok(u.searchParams.get('X-Amz-Signature'));
    const a = await fetch(g.audio_url);
    assert.equal(a.status, 200);
    assert.equal(sha256(Buffer.from(await a.arrayBuffer())), g.sha256);
  });

  it('audio corrupted in the bucket is a miss and the entry is removed', async () => {
    const [key] = bucketKeys(s3).filter((k) => k.startsWith('tts/'));
    await s3Client(s3).send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: 'garbage', ContentType: 'audio/wav' }));
    assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null }, vg.stderr.slice(-3000));
    vg = await startVoxgateS3(s3, { dataDir: vg.dataDir }); // empty L1
    const g = await req(vg, 'GET', q);
    assert.equal(g.status, 404);
    assert.equal(g.json.error.code, 'cache_miss');
    assert.equal((await req(vg, 'GET', q)).status, 404);
    assert.ok(!bucketKeys(s3).includes(key), 'the corrupt object is removed');
  });
});

// Audio over L1's item limit is not read into memory: S3 spools it to an
// unnamed temp file, hashes it there against the entry's sha256 and sends
// it from the file.
describe('TTS audio over the L1 item limit, spooled from S3', { timeout: SLOW }, () => {
  let s3;
  let vg;
  const q = '/v1/cache/tts?provider=openai&language=en&voice=alloy&text=spooled';
  const env = { VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '1024' };
  const audio = Buffer.concat([Buffer.from('RIFF'), randomBytes(200 * 1024)]);
  before(async () => {
    s3 = await startS3rver();
    vg = await startVoxgateS3(s3, { env });
  });
  after(async () => {
    await stopChecked(vg);
    await stopS3rver(s3);
  });

  it('a hit is the stored bytes, checked on every read', async () => {
    const p = await req(vg, 'PUT', q, { body: audio, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(p.status, 201, p.text);
    for (let i = 0; i < 2; i++) {
      const g = await req(vg, 'GET', q);
      assert.equal(g.status, 200, g.text);
      assert.equal(g.headers.get('x-cache-tier'), 'l2', 'never in L1: over its item limit');
      assert.equal(g.headers.get('content-length'), String(audio.length));
      assert.equal(g.headers.get('etag'), `"${sha256(audio)}"`);
      assert.ok(g.buf.equals(audio));
    }
  });

  it('audio of the same length but other bytes is a miss, and the entry is removed', async () => {
    const [key] = bucketKeys(s3).filter((k) => k.startsWith('tts/'));
    const bad = Buffer.from(audio);
    bad[bad.length - 1] ^= 0xff;
    await s3Client(s3).send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bad, ContentType: 'audio/wav' }));
    const g = await req(vg, 'GET', q);
    assert.equal(g.status, 404, g.text);
    assert.equal(g.json.error.code, 'cache_miss');
    assert.ok(!bucketKeys(s3).includes(key), 'the corrupt object is removed');
  });
});

describe('Files API on the local blob store', { timeout: SLOW }, () => {
  const ctx = { bucket: 'local' };
  before(async () => {
    ctx.vg = await startVoxgate({ env: KEYS });
    ctx.stored = () => localKeys(ctx.vg);
  });
  after(async () => {
    await stopChecked(ctx.vg);
  });

  commonFilesTests('local', ctx);

  it('signed URLs point at voxgate and use a key kept in data_dir across restarts', async () => {
    const r = await req(ctx.vg, 'GET', '/v1/files/docs/one.wav/url?expires_s=3600', { headers: asUser });
    const u = new URL(r.json.url);
    assert.equal(u.origin, ctx.vg.url);
    assert.equal(u.pathname, '/v1/files/docs/one.wav');
    assert.match(u.searchParams.get('sig'), /^[0-9a-f]{64}$/);
    const noKey = await fetch(u);
    assert.equal(noKey.status, 200);
    // Without a signature the same path still needs a key.
    assert.equal((await fetch(`${ctx.vg.url}/v1/files/docs/one.wav`)).status, 401);
    // A signature does not open PUT or DELETE.
    const del = await fetch(u, { method: 'DELETE' });
    assert.equal(del.status, 401);
    assert.deepEqual(await stopVoxgate(ctx.vg), { code: 0, signal: null }, ctx.vg.stderr.slice(-3000));
    ctx.vg = await startVoxgate({ env: KEYS, dataDir: ctx.vg.dataDir, port: ctx.vg.port });
    assert.equal((await fetch(u)).status, 200, 'the URL survives a restart');
  });
});

// The audio sweep (cache.audio_sweep_*): TTS audio written longer ago than
// cache.max_ttl_s (+ the grace, 0 here) can belong to no entry, and goes;
// fresh audio and everything outside tts/ stays. Both stores: the local
// one walks its tree, S3 is paged through ListObjects + DELETE.
const SWEEP_ENV = {
  ...KEYS, VOXGATE_CACHE_MAX_TTL_S: '4', VOXGATE_CACHE_TTS_TTL_S: '1', VOXGATE_CACHE_STT_TTL_S: '1',
  VOXGATE_CACHE_AUDIO_SWEEP_GRACE_S: '0', VOXGATE_CACHE_AUDIO_SWEEP_INTERVAL_S: '1',
};

function audioSweepTests(name, ctx) {
  it(`${name}: audio older than cache.max_ttl_s is swept; fresh audio and other files stay`, async () => {
    const { vg } = ctx;
    const tts = () => ctx.stored().filter((k) => k.startsWith('tts/'));
    assert.equal((await put(vg, 'docs/keep.wav', Buffer.from('RIFF keep'))).status, 201);
    const q1 = '/v1/cache/tts?provider=p&language=en&voice=v&text=swept';
    const p1 = await req(vg, 'PUT', q1, { body: Buffer.from('RIFF one'), headers: { ...asUser, 'Content-Type': 'audio/wav' } });
    assert.equal(p1.status, 201, p1.text);
    const t0 = Date.now();
    assert.equal(tts().length, 1);
    while (tts().length && Date.now() - t0 < 12000) await sleep(100);
    assert.equal(tts().length, 0, 'the old audio is gone');
    assert.ok(Date.now() - t0 >= 2000, `not before it is max_ttl_s old (${Date.now() - t0} ms)`);
    assert.equal((await req(vg, 'GET', q1, { headers: asUser })).status, 404);
    // Fresh audio survives sweeps (one a second), and its entry hits.
    const q2 = '/v1/cache/tts?provider=p&language=en&voice=v&text=fresh';
    const p2 = await req(vg, 'PUT', `${q2}&ttl_s=4`, { body: Buffer.from('RIFF two'), headers: { ...asUser, 'Content-Type': 'audio/wav' } });
    assert.equal(p2.status, 201, p2.text);
    await sleep(1500);
    assert.equal(tts().length, 1);
    const g = await req(vg, 'GET', q2, { headers: asUser });
    assert.equal(g.status, 200);
    assert.equal(g.buf.toString(), 'RIFF two');
    // Outside tts/, age does not matter.
    const k = await get(vg, 'docs/keep.wav');
    assert.equal(k.status, 200);
    assert.ok(ctx.stored().includes('docs/keep.wav'));
    const st = await req(vg, 'GET', '/stats', { headers: asAdmin });
    assert.ok(st.json.storage.swept >= 1, JSON.stringify(st.json.storage));
    const line = vg.logs().find((l) => l.msg === 'old tts audio swept');
    assert.ok(line && line.removed >= 1, 'the sweep is logged');
    const m = await req(vg, 'GET', '/metrics', { headers: asAdmin });
    assert.match(m.text, /^voxgate_storage_swept_total [1-9]/m);
  });
}

describe('TTS audio sweep on the local blob store', { timeout: SLOW }, () => {
  const ctx = {};
  before(async () => {
    // Litter of crashed writes: an old temp file goes at the first sweep
    // (at start); a fresh one, a write in progress, stays.
    const dataDir = tempDir();
    mkdirSync(join(dataDir, 'blobs', 'tts', 'ab'), { recursive: true });
    for (const [n, age] of [['@tmp-00000000000000aa', 7200], ['@tmp-00000000000000bb', 10]]) {
      const f = join(dataDir, 'blobs', 'tts', 'ab', n);
      writeFileSync(f, 'partial');
      const t = (Date.now() / 1000) - age;
      utimesSync(f, t, t);
    }
    ctx.dataDir = dataDir;
    ctx.vg = await startVoxgate({ env: SWEEP_ENV, dataDir });
    ctx.stored = () => localKeys(ctx.vg);
  });
  after(async () => { await stopChecked(ctx.vg); });

  it('temp files of crashed writes go once an hour old', async () => {
    const dir = join(ctx.dataDir, 'blobs', 'tts', 'ab');
    for (let i = 0; i < 50 && existsSync(join(dir, '@tmp-00000000000000aa')); i++) await sleep(100);
    assert.ok(!existsSync(join(dir, '@tmp-00000000000000aa')));
    assert.ok(existsSync(join(dir, '@tmp-00000000000000bb')));
  });

  audioSweepTests('local', ctx);
});

describe('TTS audio sweep on S3', { timeout: SLOW }, () => {
  const ctx = {};
  before(async () => {
    ctx.s3 = await startS3rver();
    ctx.vg = await startVoxgateS3(ctx.s3, { env: SWEEP_ENV });
    ctx.stored = () => bucketKeys(ctx.s3);
  });
  after(async () => {
    await stopChecked(ctx.vg);
    await stopS3rver(ctx.s3);
  });

  audioSweepTests('s3', ctx);
});
