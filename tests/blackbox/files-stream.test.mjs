// Streamed Files API uploads to S3 (issue 8, scope 3): a body with a known
// Content-Length over 256 KiB goes to the real SigV4-checking s3rver through
// a bounded buffer, on a thread of its own, while the MHD worker parks the
// connection instead of waiting. Checked here: the bytes stored, voxgate's
// peak memory against the object size, a client that goes away, a hung
// S3, shutdown mid-upload, and many uploads at once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stopVoxgate, cleanup, req, sleep, sha256, waitForLog, memOf } from './lib.mjs';
import { startS3rver, stopS3rver, startVoxgateS3, bucketKeys, BUCKET } from './s3lib.mjs';

const SLOW = 180000;
const MiB = 1024 * 1024;

async function stopChecked(vg) {
  if (!vg) return;
  const ex = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(ex, { code: 0, signal: null }, vg.stderr);
}

// What s3rver stored for key, read from its directory.
const stored = (s3, key) => join(s3.dir, BUCKET, `${key}._S3rver_object`);
// s3rver writes an object's bytes straight to their file and its metadata
// only once the whole body arrived; a PUT cut short leaves a partial bytes
// file (real S3 and MinIO store nothing). Completed = the metadata exists.
const completed = (s3, key) => existsSync(join(s3.dir, BUCKET, `${key}._S3rver_metadata.json`));

// Deterministic bytes, so a mismatch is reproducible.
function bytes(n, seed = 1) {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, Math.min(i, n - 4));
  }
  return b;
}

// A raw HTTP/1.1 PUT: the headers, then `send` bytes of a body announced
// as `len`, in 64 KiB writes; resolves to the socket (still open).
function rawPut(vg, path, len, send, headers = {}) {
  return new Promise((resolve, reject) => {
    const s = connect(vg.port, '127.0.0.1', async () => {
      const h = Object.entries({ 'Content-Type': 'application/octet-stream', ...headers })
        .map(([k, v]) => `${k}: ${v}\r\n`).join('');
      s.write(`PUT ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${len}\r\n${h}\r\n`);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      for (let sent = 0; sent < send;) {
        const n = Math.min(chunk.length, send - sent);
        if (!s.write(chunk.subarray(0, n))) await new Promise((r) => s.once('drain', r));
        sent += n;
      }
      resolve(s);
    });
    s.on('error', () => {});
    s.once('error', reject);
  });
}

describe('streamed uploads to S3', { timeout: SLOW }, () => {
  let s3;
  let vg;
  before(async () => {
    s3 = await startS3rver();
    vg = await startVoxgateS3(s3, {
      env: { VOXGATE_LIMITS_MAX_BODY_BYTES: String(64 * MiB), VOXGATE_THREADS: '2' },
    });
  });
  after(async () => {
    await stopChecked(vg);
    await stopS3rver(s3);
  });

  it('a 24 MiB PUT is stored byte for byte while voxgate holds far less than the object', async () => {
    const body = bytes(24 * MiB, 7);
    const m0 = memOf(vg);
    const r = await req(vg, 'PUT', '/v1/files/stream/big.bin', {
      body, headers: { 'Content-Type': 'audio/wav', 'X-Meta-Take': '3' },
    });
    const m1 = memOf(vg);
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.key, 'stream/big.bin');
    assert.equal(r.json.size, body.length);
    assert.equal(r.json.content_type, 'audio/wav');
    assert.equal(r.json.metadata.take, '3');
    assert.ok(r.json.etag, 'the ETag S3 gave the object');
    assert.equal(r.headers.get('location'), '/v1/files/stream/big.bin');
    assert.equal(sha256(readFileSync(stored(s3, 'stream/big.bin'))), sha256(body));
    const grew = m1.hwm - m0.hwm;
    console.log(`# streamed 24 MiB PUT: VmHWM ${m0.hwm >> 10} -> ${m1.hwm >> 10} kB (+${grew >> 10} kB), VmRSS after ${m1.rss >> 10} kB`);
    assert.ok(grew < body.length / 2, `VmHWM grew ${grew} bytes for a ${body.length}-byte object`);
    const h = await req(vg, 'HEAD', '/v1/files/stream/big.bin');
    assert.equal(h.status, 200);
    assert.equal(h.headers.get('content-length'), String(body.length));
    assert.equal(h.headers.get('x-meta-take'), '3');
  });

  it('a 24 MiB GET is spooled to an unnamed file and sent from it, never held in memory', async () => {
    const body = bytes(24 * MiB, 7); // what the test above stored
    const m0 = memOf(vg);
    const [a, b] = await Promise.all([0, 1].map(() => fetch(`${vg.url}/v1/files/stream/big.bin`)));
    const bodies = await Promise.all([a, b].map(async (r) => Buffer.from(await r.arrayBuffer())));
    const m1 = memOf(vg);
    for (const [i, r] of [a, b].entries()) {
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-type'), 'audio/wav');
      assert.equal(r.headers.get('content-length'), String(body.length));
      assert.equal(r.headers.get('x-meta-take'), '3');
      assert.match(r.headers.get('etag'), /^"[0-9a-f]{32}"$/, 'S3\'s ETag, as a buffered read gives it');
      assert.equal(sha256(bodies[i]), sha256(body));
    }
    const grew = m1.hwm - m0.hwm;
    console.log(`# two 24 MiB GETs at once: VmHWM ${m0.hwm >> 10} -> ${m1.hwm >> 10} kB (+${grew >> 10} kB)`);
    assert.ok(grew < body.length / 2, `VmHWM grew ${grew} bytes for two ${body.length}-byte downloads`);
  });

  it('a chunked body (size unknown) is still buffered whole, bounded by the body limit', async () => {
    const body = bytes(24 * MiB, 8);
    const m0 = memOf(vg);
    const stream = new ReadableStream({
      start(c) { for (let i = 0; i < body.length; i += MiB) c.enqueue(body.subarray(i, i + MiB)); c.close(); },
    });
    const r = await fetch(`${vg.url}/v1/files/stream/chunked.bin`, {
      method: 'PUT', body: stream, duplex: 'half', headers: { 'Content-Type': 'audio/wav' },
    });
    const m1 = memOf(vg);
    assert.equal(r.status, 201, await r.text());
    assert.equal(sha256(readFileSync(stored(s3, 'stream/chunked.bin'))), sha256(body));
    console.log(`# buffered (chunked) 24 MiB PUT: VmHWM ${m0.hwm >> 10} -> ${m1.hwm >> 10} kB (+${(m1.hwm - m0.hwm) >> 10} kB)`);
  });

  it('POST /v1/files streams too, under a generated key', async () => {
    const body = bytes(3 * MiB, 9);
    const r = await req(vg, 'POST', '/v1/files?prefix=up', { body, headers: { 'Content-Type': 'audio/mpeg' } });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.key, /^up\/\d{4}\/\d{2}\/\d{2}\/[0-9a-f-]{36}\.mp3$/);
    assert.equal(r.json.size, body.length);
    assert.equal(sha256(readFileSync(stored(s3, r.json.key))), sha256(body));
  });

  it('bad input gets the same 400s as a small body, nothing stored', async () => {
    const before = bucketKeys(s3);
    const body = bytes(MiB, 10);
    let r = await req(vg, 'PUT', '/v1/files/bad/sp!ce.bin', { body, headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r.status, 400, r.text);
    r = await req(vg, 'PUT', '/v1/files/bad/meta.bin', {
      body, headers: { 'Content-Type': 'audio/wav', 'X-Meta-Bad_Name': 'x' },
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, 'invalid_metadata');
    r = await req(vg, 'PUT', '/v1/files/bad/type.bin', { body, headers: { 'Content-Type': '' } });
    assert.equal(r.status, 400, r.text);
    assert.deepEqual(bucketKeys(s3), before);
  });

  it('many concurrent streamed uploads all land intact', async () => {
    const n = 24;
    const bodies = Array.from({ length: n }, (_, i) => randomBytes(300 * 1024 + i * 37 * 1024));
    const rs = await Promise.all(bodies.map((b, i) =>
      req(vg, 'PUT', `/v1/files/many/${i}.bin`, { body: b, headers: { 'Content-Type': 'audio/wav' } })));
    rs.forEach((r, i) => {
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.size, bodies[i].length);
      assert.equal(sha256(readFileSync(stored(s3, `many/${i}.bin`))), sha256(bodies[i]));
    });
    const g = await req(vg, 'GET', '/v1/files/many/5.bin');
    assert.equal(g.status, 200);
    assert.ok(g.buf.equals(bodies[5]));
  });

  it('a client that disconnects mid-body: the PUT is abandoned, the server keeps serving', async () => {
    const s = await rawPut(vg, '/v1/files/gone/half.bin', 20 * MiB, 3 * MiB);
    await sleep(300);
    s.destroy();
    await sleep(500);
    assert.ok(!completed(s3, 'gone/half.bin'), 'the PUT to S3 was never completed');
    if (existsSync(stored(s3, 'gone/half.bin')))
      assert.ok(readFileSync(stored(s3, 'gone/half.bin')).length < 20 * MiB, 'only a cut-short body reached S3');
    assert.equal((await req(vg, 'GET', '/health')).status, 200);
    const r = await req(vg, 'PUT', '/v1/files/gone/after.bin', { body: bytes(MiB, 11), headers: { 'Content-Type': 'audio/wav' } });
    assert.equal(r.status, 201, r.text);
    const line = await waitForLog(vg, (l) => l.msg === 'request' && l.path === '/v1/files/gone/half.bin');
    assert.equal(line.error, 'client_abort');
    assert.equal(vg.logs().filter((l) => l.msg === 'request' && l.path === '/v1/files/gone/half.bin').length, 1);
  });
});

describe('streamed uploads when S3 fails', { timeout: SLOW }, () => {
  let s3;
  before(async () => { s3 = await startS3rver(); });
  after(async () => { await stopS3rver(s3); });

  it('a wrong secret: 502 storage_error for a streamed body, nothing stored', async () => {
    const bad = await startVoxgateS3(s3, { secret: 'not-the-secret', env: { VOXGATE_LIMITS_MAX_BODY_BYTES: String(64 * MiB) } });
    try {
      const r = await req(bad, 'PUT', '/v1/files/wrong/big.bin', { body: bytes(4 * MiB, 12), headers: { 'Content-Type': 'audio/wav' } });
      assert.equal(r.status, 502, r.text);
      assert.equal(r.json.error.code, 'storage_error');
      assert.match(r.json.error.message, /403 SignatureDoesNotMatch/);
      assert.deepEqual(bucketKeys(s3), []);
    } finally {
      await stopChecked(bad);
    }
  });

  it('S3 SIGSTOPped mid-stream: 503 within the timeout, other requests served meanwhile', async () => {
    const vg = await startVoxgateS3(s3, {
      s3extra: { timeout_ms: 1500, connect_timeout_ms: 500 },
      env: { VOXGATE_LIMITS_MAX_BODY_BYTES: String(64 * MiB), VOXGATE_THREADS: '1' },
    });
    try {
      assert.equal((await req(vg, 'PUT', '/v1/files/hang/ok.bin', { body: bytes(MiB, 13), headers: { 'Content-Type': 'audio/wav' } })).status, 201);
      process.kill(s3.child.pid, 'SIGSTOP');
      let pending;
      try {
        const t0 = Date.now();
        pending = req(vg, 'PUT', '/v1/files/hang/big.bin', { body: bytes(32 * MiB, 14), headers: { 'Content-Type': 'audio/wav' } });
        // One MHD thread: these are answered only if it is not stuck in the upload.
        for (let i = 0; i < 5; i++) {
          await sleep(200);
          const t1 = Date.now();
          assert.equal((await req(vg, 'GET', '/health')).status, 200);
          assert.ok(Date.now() - t1 < 500, 'health answered while the upload hangs');
        }
        const r = await pending;
        const took = Date.now() - t0;
        assert.equal(r.status, 503, r.text);
        assert.equal(r.json.error.code, 'storage_unavailable');
        // A streamed PUT is bounded by s3.timeout_ms without progress, not by a
        // whole-transfer deadline; the kernel's socket buffers count as progress
        // for a while after S3 stops, so this ends in about 9 s. The point is
        // that it ends (and the worker stayed free above), not a sharp figure.
        assert.ok(took < 20000, `took ${took} ms`);
      } finally {
        process.kill(s3.child.pid, 'SIGCONT');
      }
      await sleep(300);
      assert.ok(!completed(s3, 'hang/big.bin'), 'nothing half-written');
      const r = await req(vg, 'PUT', '/v1/files/hang/after.bin', { body: bytes(2 * MiB, 15), headers: { 'Content-Type': 'audio/wav' } });
      assert.equal(r.status, 201, r.text);
    } finally {
      await stopChecked(vg);
    }
  });

  it('SIGTERM with a streamed upload half-sent: exits 0 promptly, nothing stored', async () => {
    const vg = await startVoxgateS3(s3, {
      env: { VOXGATE_LIMITS_MAX_BODY_BYTES: String(64 * MiB), VOXGATE_SHUTDOWN_TIMEOUT_MS: '500' },
    });
    const s = await rawPut(vg, '/v1/files/term/half.bin', 20 * MiB, 2 * MiB);
    await sleep(300);
    const t0 = Date.now();
    try {
      await stopChecked(vg);
      assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    } finally {
      s.destroy();
    }
    assert.ok(!completed(s3, 'term/half.bin'));
  });

  it('SIGTERM while a connection is parked on a hung S3: exits 0, nothing stored', async () => {
    const vg = await startVoxgateS3(s3, {
      s3extra: { timeout_ms: 1500, connect_timeout_ms: 500 },
      env: { VOXGATE_LIMITS_MAX_BODY_BYTES: String(64 * MiB), VOXGATE_SHUTDOWN_TIMEOUT_MS: '300' },
    });
    process.kill(s3.child.pid, 'SIGSTOP');
    let s;
    try {
      // More than the socket buffers and the ring hold: the connection parks.
      // The server resets it at the stop: that is expected, not checked.
      s = rawPut(vg, '/v1/files/term/parked.bin', 40 * MiB, 30 * MiB);
      s.catch(() => {});
      await sleep(500);
      assert.equal(vg.exited, null);
      assert.ok(vg.logs().every((l) => l.path !== '/v1/files/term/parked.bin'), 'still in flight');
      const t0 = Date.now();
      await stopChecked(vg);
      assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    } finally {
      process.kill(s3.child.pid, 'SIGCONT');
      s.then((sock) => sock.destroy(), () => {});
    }
    await sleep(200);
    assert.ok(!completed(s3, 'term/parked.bin'));
  });
});
