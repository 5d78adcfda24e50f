// A hung object store holds up no HTTP thread (SPEC §6; README, "Object
// storage and the Files API"): on S3, the requests that need the store
// (Files API, TTS cache-aside past L1, the gateway's TTS L2 read, batches
// getting or deleting TTS entries, /ready) run on vg-io threads with their
// connection parked. With one HTTP thread and the s3rver process
// SIGSTOPped, L1 hits, a batch of STT gets and /health still answer at
// once, and every request waiting on S3 ends within s3.timeout_ms; after
// SIGCONT the same requests are served from S3 again, including a gateway
// TTS L2 hit whose audio comes from the bucket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { stopVoxgate, cleanup, req, sleep, sha256 } from './lib.mjs';
import { startS3rver, stopS3rver, startVoxgateS3, bucketKeys } from './s3lib.mjs';

const SLOW = 120000;
const TIMEOUT_MS = 1500;
const json = (o) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json' } });
const ttsQ = (t) => `/v1/cache/tts?provider=openai&language=en&voice=alloy&text=${encodeURIComponent(t)}`;
const sttQ = `/v1/cache/stt?provider=openai&language=en&audio_hash=${sha256('hung s3')}`;
const SPEECH = { text: 'the store is not answering' };
const ttsItem = (t) => ({ kind: 'tts', provider: 'openai', language: 'en', voice: 'alloy', text_hash: sha256(t) });
const sttItem = { kind: 'stt', provider: 'openai', language: 'en', audio_hash: sha256('hung s3') };

async function timed(p) {
  const t0 = Date.now();
  const r = await p;
  return { ...r, ms: Date.now() - t0 };
}

describe('a hung S3 holds up no HTTP thread', { timeout: SLOW }, () => {
  let s3;
  let vg;
  const audio = Buffer.alloc(4096, 7); // over the L1 item limit below: every read is an S3 read
  let speech;

  before(async () => {
    s3 = await startS3rver();
    vg = await startVoxgateS3(s3, {
      s3extra: { timeout_ms: TIMEOUT_MS, connect_timeout_ms: 500 },
      env: { VOXGATE_THREADS: '1', VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '1024' },
    });
    assert.equal((await req(vg, 'PUT', '/v1/files/hung/a.wav', { body: audio, headers: { 'Content-Type': 'audio/wav' } })).status, 201);
    for (const t of ['one', 'two', 'four'])
      assert.equal((await req(vg, 'PUT', ttsQ(t), { body: audio, headers: { 'Content-Type': 'audio/wav' } })).status, 201);
    assert.equal((await req(vg, 'PUT', sttQ, json({ text: 'in L1' }))).status, 201);
    const first = await req(vg, 'POST', '/v1/tts', json(SPEECH));
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-cache'), 'MISS');
    speech = first.buf;
    // The gateway stores its result after answering: wait for the audio in the bucket.
    for (let i = 0; i < 100 && bucketKeys(s3).filter((k) => k.startsWith('tts/')).length < 4; i++) await sleep(50);
    assert.equal(bucketKeys(s3).filter((k) => k.startsWith('tts/')).length, 4, JSON.stringify(bucketKeys(s3)));
  });

  after(async () => {
    try { process.kill(s3.child.pid, 'SIGCONT'); } catch { /* gone */ }
    if (vg) {
      const res = await stopVoxgate(vg);
      cleanup(vg);
      assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-3000)})`);
    }
    await stopS3rver(s3);
  });

  it('while S3 is stopped: hits and /health at once, every S3 request within the timeout', async () => {
    process.kill(s3.child.pid, 'SIGSTOP');
    try {
      const hung = {
        get1: timed(req(vg, 'GET', '/v1/files/hung/a.wav')),
        get2: timed(req(vg, 'GET', '/v1/files/hung/a.wav')),
        get3: timed(req(vg, 'GET', '/v1/files/hung/a.wav')),
        head: timed(req(vg, 'HEAD', '/v1/files/hung/a.wav')),
        list: timed(req(vg, 'GET', '/v1/files?prefix=hung/')),
        del: timed(req(vg, 'DELETE', '/v1/files/hung/a.wav')),
        tts1: timed(req(vg, 'GET', ttsQ('one'))),
        tts2: timed(req(vg, 'GET', ttsQ('two'))),
        ttsPut: timed(req(vg, 'PUT', ttsQ('three'), { body: audio, headers: { 'Content-Type': 'audio/wav' } })),
        gateway: timed(req(vg, 'POST', '/v1/tts', json(SPEECH))),
        batchDel: timed(req(vg, 'POST', '/v1/cache/batch', json({ delete: [ttsItem('four')] }))),
        batchGet: timed(req(vg, 'POST', '/v1/cache/batch', json({ get: [ttsItem('one')] }))),
        ready: timed(req(vg, 'GET', '/ready')),
      };
      await sleep(200); // all of them are waiting on S3 now
      for (let i = 0; i < 3; i++) {
        const hit = await timed(req(vg, 'GET', sttQ));
        assert.equal(hit.status, 200, hit.text);
        assert.equal(hit.headers.get('x-cache-tier'), 'l1');
        assert.ok(hit.ms < 500, `an L1 hit took ${hit.ms} ms while S3 hangs`);
        const b = await timed(req(vg, 'POST', '/v1/cache/batch', json({ get: [sttItem] })));
        assert.equal(b.status, 200, b.text);
        assert.equal(b.json.get[0].hit, true);
        assert.ok(b.ms < 500, `a batch of STT gets took ${b.ms} ms while S3 hangs`);
        const health = await timed(req(vg, 'GET', '/health'));
        assert.equal(health.status, 200);
        assert.ok(health.ms < 500, `/health took ${health.ms} ms while S3 hangs`);
      }
      const got = {};
      for (const [name, p] of Object.entries(hung)) got[name] = await p;
      for (const [name, r] of Object.entries(got))
        assert.ok(r.ms < TIMEOUT_MS + 1200, `${name} took ${r.ms} ms (s3.timeout_ms ${TIMEOUT_MS})`);
      for (const name of ['get1', 'get2', 'get3', 'list', 'del']) {
        assert.equal(got[name].status, 503, `${name}: ${got[name].text}`);
        assert.equal(got[name].json.error.code, 'storage_unavailable');
      }
      assert.equal(got.head.status, 503);
      for (const name of ['tts1', 'tts2']) {
        assert.equal(got[name].status, 404, `${name}: ${got[name].text}`);
        assert.equal(got[name].json.error.code, 'cache_miss');
      }
      assert.equal(got.ttsPut.status, 503, got.ttsPut.text);
      assert.equal(got.ttsPut.json.error.code, 'storage_unavailable');
      // The stored audio cannot be read: the provider answers (SPEC §6).
      assert.equal(got.gateway.status, 200, got.gateway.text);
      assert.equal(got.gateway.headers.get('x-cache'), 'MISS');
      assert.equal(got.gateway.headers.get('x-provider'), 'local');
      // The entry is gone; its audio stays for the sweep.
      assert.equal(got.batchDel.status, 200, got.batchDel.text);
      assert.equal(got.batchDel.json.delete[0].deleted, true, got.batchDel.text);
      // A batch TTS get checks the audio: unreadable, it is no hit.
      assert.equal(got.batchGet.status, 200, got.batchGet.text);
      assert.equal(got.batchGet.json.get[0].hit, false, got.batchGet.text);
      assert.equal(got.ready.status, 503);
      assert.equal(got.ready.json.checks.storage.ok, false);
    } finally {
      process.kill(s3.child.pid, 'SIGCONT');
    }
  });

  it('after SIGCONT the same requests are served from S3 again', async () => {
    let f;
    for (let i = 0; i < 50; i++) {
      f = await req(vg, 'GET', '/v1/files/hung/a.wav');
      if (f.status === 200) break;
      await sleep(100);
    }
    assert.equal(f.status, 200, f.text);
    assert.ok(f.buf.equals(audio));
    const t = await req(vg, 'GET', ttsQ('one'));
    assert.equal(t.status, 200, t.text);
    assert.equal(t.headers.get('x-cache-tier'), 'l2');
    assert.ok(t.buf.equals(audio), 'entries survive a store that was down');
    assert.equal((await req(vg, 'GET', ttsQ('three'))).status, 404, 'the refused PUT stored nothing');
    assert.equal((await req(vg, 'GET', ttsQ('four'))).status, 404, 'the batch delete went through');
    const g = await req(vg, 'POST', '/v1/tts', json(SPEECH));
    assert.equal(g.status, 200, g.text);
    assert.equal(g.headers.get('x-cache'), 'HIT');
    assert.equal(g.headers.get('x-cache-tier'), 'l2');
    assert.ok(g.buf.equals(speech), 'the gateway hit is the audio from the bucket');
    assert.equal((await req(vg, 'GET', '/ready')).status, 200);
  });
});

// SIGTERM while S3 hangs: the shutdown keeps to shutdown_timeout_ms. Past
// it the object store's calls are cancelled (README, "Shutdown"), so
// neither a request parked on a vg-io thread nor the gateway's store
// queue waits out s3.timeout_ms (30 s here, over stopVoxgate's 20 s
// before SIGKILL).
describe('a shutdown while S3 hangs', { timeout: SLOW }, () => {
  it('ends soon after shutdown_timeout_ms, not after s3.timeout_ms', async () => {
    const s3 = await startS3rver();
    let vg;
    try {
      vg = await startVoxgateS3(s3, {
        s3extra: { timeout_ms: 30000, connect_timeout_ms: 500 },
        env: { VOXGATE_SHUTDOWN_TIMEOUT_MS: '500', VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '1024' },
      });
      const audio = Buffer.alloc(4096, 3);
      assert.equal((await req(vg, 'PUT', '/v1/files/bye/a.wav', { body: audio, headers: { 'Content-Type': 'audio/wav' } })).status, 201);
      process.kill(s3.child.pid, 'SIGSTOP');
      const get = timed(req(vg, 'GET', '/v1/files/bye/a.wav').catch((e) => ({ error: e })));
      // Answered at once; storing its audio then waits on S3.
      const miss = await req(vg, 'POST', '/v1/tts', json({ text: 'stored after the answer' }));
      assert.equal(miss.status, 200, miss.text);
      assert.equal(miss.headers.get('x-cache'), 'MISS');
      await sleep(300);
      const t0 = Date.now();
      const res = await stopVoxgate(vg);
      const ms = Date.now() - t0;
      assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-2000)})`);
      assert.ok(ms < 500 + 2500, `the shutdown took ${ms} ms (shutdown_timeout_ms 500)`);
      // The parked GET got its 503, or its connection closed with the daemon.
      const g = await get;
      if (!g.error) {
        assert.equal(g.status, 503, g.text);
        assert.equal(g.json.error.code, 'storage_unavailable');
      }
      const logs = vg.logs();
      assert.ok(logs.some((l) => l.level === 'warn' && /object store calls cancelled/.test(l.msg)), 'the cancel is logged');
      const stopped = logs.find((l) => l.msg === 'stopped');
      assert.equal(stopped.drained, false);
    } finally {
      try { process.kill(s3.child.pid, 'SIGCONT'); } catch { /* gone */ }
      cleanup(vg);
      await stopS3rver(s3);
    }
  });
});
