// Black-box tests of the non-blocking Redis hot paths (issue 4, SPEC §7):
// an L2 read (GET /v1/cache/stt|tts after an L1 miss) and POST
// /v1/ratelimit/check park their request and are answered from the
// Redis event thread, which pipelines the commands of every parked
// request. With one HTTP thread, many concurrent reads and checks must
// each get their own right answer, and a hung Redis (SIGSTOP) must end
// every parked request within the command timeout: reads as misses,
// checks by fail_mode.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startVoxgate, stopVoxgate, cleanup, hex64, qs, req, sleep } from './lib.mjs';
import { startRedis, redisRaw, timed } from './redis-lib.mjs';

const CMD_TIMEOUT_MS = 200;
const HANG_MS = 2000;

const sttPath = (p) => `/v1/cache/stt?${qs(p)}`;
const ttsPath = (p) => `/v1/cache/tts?${qs(p)}`;
const sttKey = (n) => ({ provider: 'openai', language: 'en', audio_hash: hex64(`p-stt-${n}`) });
const ttsKey = (n) => ({ provider: 'openai', language: 'en', voice: 'alloy', text_hash: hex64(`p-tts-${n}`) });
const json = { 'Content-Type': 'application/json' };
const check = (vg, body) => req(vg, 'POST', '/v1/ratelimit/check', { body: JSON.stringify(body), headers: json });

function redisEnv(srv, extra = {}) {
  return {
    VOXGATE_THREADS: '1', // one HTTP thread: only the pipeline can keep up
    VOXGATE_REDIS_URL: srv.url,
    VOXGATE_REDIS_COMMAND_TIMEOUT_MS: String(CMD_TIMEOUT_MS),
    VOXGATE_REDIS_CONNECT_TIMEOUT_MS: '300',
    VOXGATE_REDIS_BACKOFF_BASE_MS: '50',
    VOXGATE_REDIS_BACKOFF_MAX_MS: '400',
    VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '1', // L1 keeps nothing: every read is an L2 read
    ...extra,
  };
}

async function stats(vg) {
  const r = await req(vg, 'GET', '/stats');
  assert.equal(r.status, 200, r.text);
  return r.json;
}

describe('pipelined L2 reads and rate-limit checks', { timeout: 180000 }, () => {
  let srv, vg;
  before(async () => {
    srv = await startRedis();
    vg = await startVoxgate({ env: redisEnv(srv) });
  });
  after(async () => {
    if (vg) { await stopVoxgate(vg); cleanup(vg); }
    if (srv) await srv.stop();
  });

  test('300 concurrent L2 reads of 50 keys: each gets its own entry (STT and TTS)', async () => {
    const N = 50;
    for (let i = 0; i < N; i++) {
      const put = await req(vg, 'PUT', sttPath(sttKey(i)), { body: JSON.stringify({ i, pad: 'x'.repeat(i * 97) }), headers: json });
      assert.equal(put.status, 201, put.text);
    }
    for (let i = 0; i < 10; i++) {
      const put = await req(vg, 'PUT', ttsPath(ttsKey(i)), { body: Buffer.alloc(1000 + i, i), headers: { 'Content-Type': 'audio/wav' } });
      assert.equal(put.status, 201, put.text);
    }
    const before = (await stats(vg)).cache.l2;
    const all = [];
    for (let j = 0; j < 300; j++) {
      const i = (j * 7) % N;
      all.push(req(vg, 'GET', sttPath(sttKey(i))).then((r) => ({ r, i, kind: 'stt' })));
      if (j % 10 === 0) all.push(req(vg, 'GET', ttsPath(ttsKey(j % 10))).then((r) => ({ r, i: j % 10, kind: 'tts' })));
      if (j % 15 === 0) all.push(req(vg, 'GET', sttPath(sttKey(`absent-${j}`))).then((r) => ({ r, i: -1, kind: 'miss' })));
    }
    const res = await Promise.all(all);
    let hits = 0, misses = 0;
    for (const { r, i, kind } of res) {
      if (kind === 'miss') {
        assert.equal(r.status, 404, r.text);
        assert.equal(r.headers.get('x-cache'), 'MISS');
        misses++;
        continue;
      }
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-cache-tier'), 'l2');
      if (kind === 'stt') assert.deepEqual(r.json, { i, pad: 'x'.repeat(i * 97) });
      else assert.equal(r.headers.get('content-length'), String(1000 + i));
      hits++;
    }
    const after = (await stats(vg)).cache.l2;
    assert.equal(after.hits - before.hits, hits, JSON.stringify(after));
    assert.equal(after.misses - before.misses, misses, JSON.stringify(after));
    assert.equal(after.errors, before.errors);
  });

  test('a corrupt entry read through the pipeline is removed and is a miss', async () => {
    const k = sttKey('corrupt');
    const key = `voxgate:stt:openai:en:${k.audio_hash}`;
    await redisRaw(srv.port, 'SET', key, 'not an entry', 'PX', '60000');
    const r = await req(vg, 'GET', sttPath(k));
    assert.equal(r.status, 404, r.text);
    assert.equal(await redisRaw(srv.port, 'EXISTS', key), '0');
  });

  test('300 concurrent checks on 3 keys: exactly the limit allowed per key', async () => {
    const L = 40;
    const all = [];
    for (let i = 0; i < 300; i++) {
      const key = `pipe-${i % 3}`;
      all.push(check(vg, { key, limit: L, window_ms: 60000, algorithm: i % 2 ? 'gcra' : 'sliding_log' })
        .then((r) => ({ r, key, algo: i % 2 ? 'gcra' : 'sliding_log' })));
    }
    const res = await Promise.all(all);
    const allowed = {};
    for (const { r, key, algo } of res) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.limit, L);
      assert.equal(r.headers.get('x-ratelimit-limit'), String(L));
      const id = `${algo}:${key}`;
      if (r.json.allowed) allowed[id] = (allowed[id] || 0) + 1;
    }
    assert.deepEqual(Object.values(allowed), Array(6).fill(L), JSON.stringify(allowed));
  });

  test('Redis SIGSTOPped: parked reads become misses and checks follow fail_mode, within the timeout', async () => {
    const k = sttKey(3);
    assert.equal((await req(vg, 'GET', sttPath(k))).status, 200);
    srv.pause();
    try {
      const all = [];
      for (let i = 0; i < 60; i++) {
        all.push(timed(() => req(vg, 'GET', sttPath(k))));
        all.push(timed(() => check(vg, { key: `stop-${i % 5}`, limit: 10, window_ms: 60000 })));
      }
      const res = await Promise.all(all);
      for (const [r, ms] of res) {
        assert.ok(ms < HANG_MS, `a request took ${ms} ms`);
        if (r.json && 'allowed' in r.json) {
          assert.equal(r.status, 200, r.text);
          assert.equal(r.json.allowed, true); // fail_mode open (the default)
          assert.equal(r.json.fail_open, true);
        } else {
          assert.equal(r.status, 404, r.text);
          assert.equal(r.headers.get('x-cache'), 'MISS');
        }
      }
      const s = await stats(vg);
      assert.ok(s.cache.l2.errors >= 1, JSON.stringify(s.cache.l2));
    } finally {
      srv.resume();
    }
    // Back after the backoff pause, without a restart.
    const deadline = Date.now() + 8000;
    for (;;) {
      const r = await req(vg, 'GET', sttPath(k));
      if (r.status === 200) break;
      assert.ok(Date.now() < deadline, `no L2 hit after SIGCONT: ${r.text}`);
      await sleep(50);
    }
    const c = await check(vg, { key: 'after-stop', limit: 10, window_ms: 60000 });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.fail_open, undefined);
    assert.equal(c.json.remaining, 9);
  });

  test('fail_mode closed: a hung Redis answers 503 within the timeout', async () => {
    const closed = await startVoxgate({ env: redisEnv(srv, { VOXGATE_RATELIMIT_FAIL_MODE: 'closed' }) });
    try {
      assert.equal((await check(closed, { key: 'c', limit: 5, window_ms: 60000 })).status, 200);
      srv.pause();
      try {
        const res = await Promise.all(Array.from({ length: 20 }, () =>
          timed(() => check(closed, { key: 'c', limit: 5, window_ms: 60000 }))));
        for (const [r, ms] of res) {
          assert.ok(ms < HANG_MS, `a check took ${ms} ms`);
          assert.equal(r.status, 503, r.text);
          assert.equal(r.json.error.code, 'limiter_unavailable');
        }
      } finally {
        srv.resume();
      }
    } finally {
      await stopVoxgate(closed);
      cleanup(closed);
    }
  });

  test('server stops cleanly (exit 0)', async () => {
    assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null });
    assert.doesNotMatch(vg.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/, vg.stderr);
    cleanup(vg);
    vg = null;
  });
});
