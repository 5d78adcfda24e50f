// Black-box tests of the Redis L2 tier (issue 4; SPEC §1, §5, §6): voxgate
// instances pointed at one real redis-server (started by this file on a
// free loopback port) share their cache; batch and invalidation work the
// same as on LMDB; invalidation leaves other providers and non-cache keys
// alone; Redis killed, SIGSTOPped or CLIENT PAUSEd never makes a request
// hang past the command timeout, /ready says so naming redis, and
// everything recovers without a restart. MONITOR shows no KEYS/FLUSH.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startVoxgate, stopVoxgate, cleanup, hex64, qs, req, sleep, waitForLog } from './lib.mjs';
import { startRedis, redisCli, redisRaw, monitor, FORBIDDEN, timed } from './redis-lib.mjs';

const CMD_TIMEOUT_MS = 200;
// A request may take one command timeout per round trip it makes, plus
// scheduling slack under ASan; anything near this bound is a hang.
const HANG_MS = 2000;

const sttPath = (p) => `/v1/cache/stt?${qs(p)}`;
const ttsPath = (p) => `/v1/cache/tts?${qs(p)}`;
const sttKey = (n, extra = {}) => ({ provider: 'openai', language: 'en', audio_hash: hex64(`r-stt-${n}`), ...extra });
const ttsKey = (n, extra = {}) => ({ provider: 'openai', language: 'en', voice: 'alloy', text_hash: hex64(`r-tts-${n}`), ...extra });
const putStt = (vg, p, body) => req(vg, 'PUT', sttPath(p), { body, headers: { 'Content-Type': 'application/json' } });
const putTts = (vg, p, body) => req(vg, 'PUT', ttsPath(p), { body, headers: { 'Content-Type': 'audio/wav' } });
const batch = (vg, doc) => req(vg, 'POST', '/v1/cache/batch', { body: JSON.stringify(doc), headers: { 'Content-Type': 'application/json' } });

function redisEnv(srv, extra = {}) {
  return {
    VOXGATE_REDIS_URL: srv.url,
    VOXGATE_REDIS_COMMAND_TIMEOUT_MS: String(CMD_TIMEOUT_MS),
    VOXGATE_REDIS_CONNECT_TIMEOUT_MS: '300',
    VOXGATE_REDIS_BACKOFF_BASE_MS: '50',
    VOXGATE_REDIS_BACKOFF_MAX_MS: '400',
    ...extra,
  };
}

function assertHit(res, tier, what = '') {
  assert.equal(res.status, 200, `${what}: status (body ${res.text})`);
  assert.equal(res.headers.get('x-cache'), 'HIT', `${what}: X-Cache`);
  assert.equal(res.headers.get('x-cache-tier'), tier, `${what}: X-Cache-Tier`);
}

function assertMiss(res, what = '') {
  assert.equal(res.status, 404, `${what}: status (body ${res.text})`);
  assert.equal(res.headers.get('x-cache'), 'MISS', `${what}: X-Cache`);
}

async function stats(vg) {
  const r = await req(vg, 'GET', '/stats');
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function waitReady(vg, want, limitMs = 8000) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const r = await req(vg, 'GET', '/ready');
    if ((r.status === 200) === want) return r;
    if (Date.now() > deadline) throw new Error(`/ready never became ${want ? 200 : 503}: ${r.text}`);
    await sleep(25);
  }
}

function assertCleanStderr(vg) {
  assert.doesNotMatch(vg.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/, vg.stderr);
}

describe('Redis L2 shared by two instances', { timeout: 180000 }, () => {
  let srv, mon, a, b;
  before(async () => {
    srv = await startRedis();
    mon = await monitor(srv.port);
    a = await startVoxgate({ env: redisEnv(srv) });
    // B shares A's data_dir: with Redis there is no LMDB in it, only the
    // local blob store, which two processes can share (a shared volume).
    b = await startVoxgate({ env: redisEnv(srv), dataDir: a.dataDir });
  });
  after(async () => {
    for (const vg of [a, b]) if (vg) { await stopVoxgate(vg); cleanup(vg); }
    if (mon) await mon.stop();
    if (srv) await srv.stop();
  });

  test('/ready names redis and both instances are ready', async () => {
    for (const vg of [a, b]) {
      const r = await req(vg, 'GET', '/ready');
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.checks.redis.ok, true);
      assert.equal(r.json.checks.redis.backend, 'redis');
      assert.equal(r.json.checks.lmdb, undefined, 'no lmdb check when Redis is the tier');
    }
    const log = await waitForLog(a, (l) => l.msg === 'listening');
    assert.equal(log.kv, 'redis');
  });

  test('STT PUT on A is an L2 hit on B, then an L1 hit on B', async () => {
    const k = sttKey(1);
    const body = '{"text":"shared", "n": 12345678901234567890}';
    const put = await putStt(a, k, body);
    assert.equal(put.status, 201, put.text);
    const key = put.json.key;
    assert.match(key, /^voxgate:stt:openai:en:/);
    // Stored under exactly that key, with a TTL (SET ... PX).
    const ttl = Number(await redisRaw(srv.port, 'PTTL', key));
    assert.ok(ttl > 86000000 && ttl <= 86400000, `PTTL ${ttl}`);
    const h1 = await req(b, 'GET', sttPath(k));
    assertHit(h1, 'l2', 'first read on B');
    assert.equal(h1.text, body, 'byte for byte');
    assertHit(await req(b, 'GET', sttPath(k)), 'l1', 'second read on B');
    const head = await req(b, 'HEAD', sttPath(k));
    assert.equal(head.status, 200);
  });

  test('TTS PUT on A is a hit on B with the same bytes and ETag', async () => {
    const k = ttsKey(1, { ttl_s: 120 });
    const audio = randomBytes(4096);
    const put = await putTts(a, k, audio);
    assert.equal(put.status, 201, put.text);
    const { ttl_s, ...getKey } = k;
    const got = await req(a, 'GET', ttsPath(getKey));
    assertHit(got, 'l1');
    assert.deepEqual(got.buf, audio);
    const ttl = Number(await redisRaw(srv.port, 'PTTL', put.json.key));
    assert.ok(ttl > 110000 && ttl <= 120000, `PTTL ${ttl}`);
    const onB = await req(b, 'GET', ttsPath(getKey));
    assertHit(onB, 'l2', 'B reads the metadata from Redis');
    assert.deepEqual(onB.buf, audio);
    assert.equal(onB.headers.get('etag'), got.headers.get('etag'));
    assert.equal(onB.headers.get('content-type'), 'audio/wav');
  });

  test('DELETE on B removes the entry for A (after A\'s L1 copy is gone)', async () => {
    const k = sttKey(2);
    assert.equal((await putStt(a, k, '{"v":2}')).status, 201);
    assertHit(await req(b, 'GET', sttPath(k)), 'l2');
    const del = await req(b, 'DELETE', sttPath(k));
    assert.equal(del.status, 204);
    assertMiss(await req(b, 'GET', sttPath(k)));
    assert.equal(await redisCli(srv.port, 'EXISTS', `voxgate:stt:openai:en:${k.audio_hash}`), '(integer) 0');
    assert.equal((await req(b, 'DELETE', sttPath(k))).status, 404);
  });

  test('batch: set on A, get on B (L2 hits in order), delete', async () => {
    const keys = [0, 1, 2].map((i) => ({ kind: 'stt', ...sttKey(`b${i}`) }));
    const set = await batch(a, { set: keys.map((k, i) => ({ ...k, result: { i }, ttl_s: 60 })) });
    assert.equal(set.status, 200, set.text);
    assert.deepEqual(set.json.set, [{ ok: true }, { ok: true }, { ok: true }]);
    const miss = { kind: 'stt', ...sttKey('b-none') };
    const got = await batch(b, { get: [keys[2], miss, keys[0], keys[1]] });
    assert.equal(got.status, 200, got.text);
    assert.deepEqual(got.json.get, [
      { hit: true, result: { i: 2 } }, { hit: false }, { hit: true, result: { i: 0 } }, { hit: true, result: { i: 1 } },
    ]);
    const del = await batch(b, { get: [keys[0]], delete: [keys[0], miss] });
    assert.deepEqual(del.json.get, [{ hit: true, result: { i: 0 } }]);
    assert.deepEqual(del.json.delete, [{ deleted: true }, { deleted: false }]);
    const again = await batch(a, { get: [keys[1]] });
    assert.deepEqual(again.json.get, [{ hit: true, result: { i: 1 } }]);
  });

  test('invalidation deletes one provider only, in steps, and leaves other keys alone', async () => {
    const N = 1100; // more than two scan/delete steps of 512
    const items = [];
    for (let i = 0; i < N; i++) items.push({ kind: 'stt', ...sttKey(`inv${i}`, { provider: 'victim' }), result: { i } });
    for (let i = 0; i < N; i += 100) {
      const r = await batch(a, { set: items.slice(i, i + 100) });
      assert.ok(r.json.set.every((s) => s.ok), r.text);
    }
    const epoch = await putStt(a, sttKey('inv-ep', { provider: 'victim' }), '{"e":1}');
    assert.equal(epoch.status, 201);
    const tts = await putTts(a, ttsKey('inv', { provider: 'victim' }), randomBytes(64));
    assert.equal(tts.status, 201);
    // Neighbours: another provider whose name extends the victim's, another
    // provider, and keys that are not cache entries at all.
    const keep1 = sttKey('keep1', { provider: 'victim2' });
    const keep2 = sttKey('keep2', { provider: 'other' });
    assert.equal((await putStt(a, keep1, '{"k":1}')).status, 201);
    assert.equal((await putStt(a, keep2, '{"k":2}')).status, 201);
    await redisCli(srv.port, 'SET', 'app:unrelated', 'x');
    await redisCli(srv.port, 'SET', 'voxgate:rl:victim', 'limiter-state');
    await redisCli(srv.port, 'ZADD', 'voxgate:stt:victimz', '1', 'm');

    const r = await req(b, 'DELETE', '/v1/cache?provider=victim');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { deleted: N + 2 });
    assert.equal(await redisCli(srv.port, 'EVAL', "return #redis.call('SCAN', 0, 'MATCH', 'voxgate:*:victim:*', 'COUNT', 100000)[2]", '0'),
      '(integer) 0');
    assertMiss(await req(b, 'GET', sttPath(sttKey('inv7', { provider: 'victim' }))));
    assertHit(await req(b, 'GET', sttPath(keep1)), 'l2', 'victim2 kept');
    assertHit(await req(b, 'GET', sttPath(keep2)), 'l2', 'other kept');
    assert.equal(await redisRaw(srv.port, 'GET', 'app:unrelated'), 'x');
    assert.equal(await redisRaw(srv.port, 'GET', 'voxgate:rl:victim'), 'limiter-state');
    assert.equal(await redisRaw(srv.port, 'ZCARD', 'voxgate:stt:victimz'), '1');
    // Nothing left: a second run deletes nothing.
    const again = await req(a, 'DELETE', '/v1/cache?provider=victim&kind=stt');
    assert.deepEqual(again.json, { deleted: 0 });
  });

  test('/stats counts L2 hits, misses and writes; Redis metrics are exported', async () => {
    const s = await stats(b);
    assert.ok(s.cache.l2.hits >= 3, JSON.stringify(s.cache.l2));
    assert.ok(s.cache.l2.misses >= 1);
    assert.equal(s.cache.l2.errors, 0);
    assert.ok(s.redis.connects >= 1, JSON.stringify(s.redis));
    assert.equal(s.redis.up, 1);
    const m = await req(b, 'GET', '/metrics');
    assert.match(m.text, /^voxgate_redis_reconnects_total \d+$/m);
    assert.match(m.text, /^voxgate_redis_up 1$/m);
  });

  test('MONITOR saw the traffic and no KEYS, FLUSHDB or FLUSHALL', async () => {
    const lines = mon.lines();
    assert.ok(lines.some((l) => /"SCAN" "0" "MATCH" "voxgate:stt:victim\*" "COUNT"/i.test(l)), 'SCAN MATCH prefix*');
    assert.ok(lines.some((l) => /"UNLINK"/.test(l)), 'UNLINK');
    assert.ok(lines.some((l) => /"SET" "voxgate:stt:openai:en:[0-9a-f]{64}" ".*" "PX" "86400000"/.test(l)), 'SET PX');
    const bad = lines.filter((l) => FORBIDDEN.test(l));
    assert.deepEqual(bad, []);
  });

  test('servers stop cleanly (exit 0)', async () => {
    for (const vg of [a, b]) {
      assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null });
      assertCleanStderr(vg);
    }
  });
});

describe('Redis failures: killed, SIGSTOPped, CLIENT PAUSEd', { timeout: 180000 }, () => {
  let srv, vg;
  before(async () => {
    srv = await startRedis();
    vg = await startVoxgate({ env: redisEnv(srv) });
  });
  after(async () => {
    if (vg) { await stopVoxgate(vg); cleanup(vg); }
    if (srv) await srv.stop();
  });

  // Many concurrent requests of every kind; each must answer in time.
  async function traffic(k, n = 40) {
    const reqs = [];
    for (let i = 0; i < n; i++) {
      const kind = i % 4;
      const p = kind === 0 ? req(vg, 'GET', sttPath(k))
        : kind === 1 ? req(vg, 'GET', sttPath(sttKey(`t-miss-${i}`)))
          : kind === 2 ? putStt(vg, sttKey(`t-put-${i}`), '{"p":1}')
            : batch(vg, { get: [{ kind: 'stt', ...sttKey(`t-b-${i}`) }] });
      reqs.push(timed(() => p));
    }
    const done = await Promise.all(reqs);
    for (const [r, ms] of done) {
      assert.ok(ms < HANG_MS, `a request took ${ms} ms`);
      assert.ok([200, 201, 404, 503].includes(r.status), `status ${r.status}: ${r.text}`);
    }
    return done.map(([r]) => r);
  }

  async function assertDegraded(hot) {
    const ready = await req(vg, 'GET', '/ready');
    assert.equal(ready.status, 503, ready.text);
    assert.equal(ready.json.checks.redis.ok, false);
    assert.equal(ready.headers.get('retry-after'), '5');
    // L1 keeps serving what it holds.
    assertHit(await req(vg, 'GET', sttPath(hot)), 'l1', 'L1 while Redis is away');
    // Reads of anything else are misses; writes are refused and counted.
    const [miss, ms] = await timed(() => req(vg, 'GET', sttPath(sttKey(`deg-${Date.now()}`))));
    assertMiss(miss);
    assert.ok(ms < HANG_MS);
    const before = (await stats(vg)).cache.l2.write_errors;
    const put = await putStt(vg, sttKey(`deg-put-${Date.now()}`), '{"x":1}');
    assert.equal(put.status, 503, put.text);
    assert.equal(put.json.error.code, 'cache_unavailable');
    assert.equal((await stats(vg)).cache.l2.write_errors, before + 1);
  }

  async function assertRecovered() {
    await waitReady(vg, true);
    const k = sttKey(`rec-${Date.now()}`);
    assert.equal((await putStt(vg, k, '{"back":true}')).status, 201);
    assert.equal(await redisRaw(srv.port, 'EXISTS', `voxgate:stt:openai:en:${k.audio_hash}`), '1');
  }

  test('Redis killed mid-traffic: nothing hangs, degraded, recovers after restart', async () => {
    const hot = sttKey('hot');
    assert.equal((await putStt(vg, hot, '{"hot":1}')).status, 201);
    const run = traffic(hot, 60);
    await sleep(5);
    await srv.kill();
    await run;
    await traffic(hot, 20);
    await assertDegraded(hot);
    const s = await stats(vg);
    assert.ok(s.cache.l2.errors >= 1, JSON.stringify(s.cache.l2));
    assert.equal(s.redis.up, 0);
    await srv.spawn();
    await assertRecovered();
    assert.ok((await stats(vg)).redis.reconnects >= 1);
  });

  test('Redis SIGSTOPped mid-traffic: requests end within the timeout; SIGCONT recovers', async () => {
    const hot = sttKey('hot2');
    assert.equal((await putStt(vg, hot, '{"hot":2}')).status, 201);
    const run = traffic(hot, 60);
    srv.pause();
    try {
      await run;
      await traffic(hot, 20);
      await assertDegraded(hot);
    } finally {
      srv.resume();
    }
    await assertRecovered();
  });

  test('CLIENT PAUSE: reads become misses within the timeout, then hits again', async () => {
    // An entry in Redis but not in this instance's L1: written behind its back.
    const k = sttKey('paused');
    const key = `voxgate:stt:openai:en:${k.audio_hash}`;
    const other = await startVoxgate({ env: redisEnv(srv) });
    try {
      assert.equal((await putStt(other, k, '{"p":true}')).status, 201);
    } finally {
      await stopVoxgate(other);
      cleanup(other);
    }
    assert.equal(await redisRaw(srv.port, 'EXISTS', key), '1');
    await redisCli(srv.port, 'CLIENT', 'PAUSE', '1500', 'ALL');
    const t0 = Date.now();
    const [r, ms] = await timed(() => req(vg, 'GET', sttPath(k)));
    assertMiss(r, 'read during CLIENT PAUSE');
    assert.ok(ms < HANG_MS, `took ${ms} ms`);
    const ready = await req(vg, 'GET', '/ready');
    assert.equal(ready.status, 503, ready.text);
    assert.equal(ready.json.checks.redis.ok, false);
    await sleep(Math.max(0, 1600 - (Date.now() - t0)));
    await waitReady(vg, true);
    assertHit(await req(vg, 'GET', sttPath(k)), 'l2', 'after the pause');
  });

  test('server stops cleanly (exit 0)', async () => {
    assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null });
    assertCleanStderr(vg);
  });
});

describe('Redis down at start', { timeout: 60000 }, () => {
  test('voxgate starts, is not ready, and joins Redis when it comes up', async () => {
    const srv = await startRedis();
    await srv.kill();
    const vg = await startVoxgate({ env: redisEnv(srv) });
    try {
      const r = await req(vg, 'GET', '/ready');
      assert.equal(r.status, 503);
      assert.equal(r.json.checks.redis.ok, false);
      assertMiss(await req(vg, 'GET', sttPath(sttKey('down'))));
      await srv.spawn();
      await waitReady(vg, true);
      assert.equal((await putStt(vg, sttKey('down'), '{"d":1}')).status, 201);
      assert.deepEqual(await stopVoxgate(vg), { code: 0, signal: null });
      assertCleanStderr(vg);
    } finally {
      await stopVoxgate(vg);
      cleanup(vg);
      await srv.stop();
    }
  });

  test('a bad redis_url is named by --check-config', async () => {
    const { execFile } = await import('node:child_process');
    const { BIN } = await import('./lib.mjs');
    const run = (env, file) => new Promise((resolve) => {
      execFile(BIN, ['--check-config', file], { env: { ...process.env, ...env } },
        (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    });
    const { writeFileSync, rmSync } = await import('node:fs');
    const { tempDir } = await import('./lib.mjs');
    const dir = tempDir();
    writeFileSync(`${dir}/c.json`, '{}');
    const bad = await run({ VOXGATE_REDIS_URL: 'redis://user:topsecret@host:99999' }, `${dir}/c.json`);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /VOXGATE_REDIS_URL: port must be 1\.\.65535/);
    assert.doesNotMatch(bad.stderr, /topsecret/);
  });
});
