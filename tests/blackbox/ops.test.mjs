// Black-box tests of the operations endpoints: /health, /ready (and a
// storage failure), /stats and /metrics (checked with promtool).
// SPEC §5 "Operations" and README "Operations" are the contract.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, startVoxgate, stopVoxgate, cleanup, hex64, getJson, sleep } from './lib.mjs';

const SLOW = 20000;

async function stopAndCheck(vg) {
  if (!vg) return;
  const res = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

function findPromtool() {
  for (const p of ['/usr/bin/promtool', '/usr/local/bin/promtool']) if (existsSync(p)) return p;
  const w = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return w.status === 0 ? w.stdout.trim() : null;
}

// Prometheus text → Map of 'name{labels}' → number (samples only).
function parseProm(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

function assertTier(t, name) {
  assert.equal(typeof t, 'object', `${name} present`);
  for (const k of ['hits', 'misses', 'hit_rate', 'errors', 'error_rate', 'entries', 'bytes', 'evictions']) {
    assert.ok(isNum(t[k]), `${name}.${k} is a number: ${JSON.stringify(t)}`);
    assert.ok(t[k] >= 0, `${name}.${k} >= 0`);
  }
  assert.ok(t.hit_rate <= 1 && t.error_rate <= 1, `${name} rates within [0,1]`);
  assert.equal(typeof t.latency, 'object', `${name}.latency`);
  for (const k of ['count', 'p50_us', 'p99_us']) assert.ok(isNum(t.latency[k]), `${name}.latency.${k}`);
  assert.ok(t.latency.p50_us <= t.latency.p99_us, `${name} p50 <= p99`);
}

async function pollUntil(fn, what, timeoutMs = SLOW) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() > deadline) assert.fail(`${what}: ${JSON.stringify(last.info ?? last)}`);
    await sleep(50);
  }
}

describe('/health, /ready, /stats, /metrics', () => {
  let vg;
  before(async () => {
    // Values over 100 bytes are not kept in L1, so they are L2 hits.
    vg = await startVoxgate({ env: { VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '100' } });
  });
  after(async () => { await stopAndCheck(vg); });

  it('/health → {status:"ok", version (= voxgate --version), uptime_s}', async () => {
    const r = await getJson(`${vg.url}/health`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    assert.equal(r.json.status, 'ok');
    const v = execFileSync(BIN, ['--version'], { encoding: 'utf8' }).trim();
    assert.equal(`voxgate ${r.json.version}`, v);
    assert.ok(isNum(r.json.uptime_s) && r.json.uptime_s >= 0, r.text);
  });

  it('/health uptime_s grows', async () => {
    const a = (await getJson(`${vg.url}/health`)).json.uptime_s;
    await sleep(1600);
    const b = (await getJson(`${vg.url}/health`)).json.uptime_s;
    assert.ok(b > a, `${a} → ${b}`);
  });

  it('/ready → 200 {status:"ready", checks:{lmdb, storage, providers}} with ok and latency_ms; HEAD too', async () => {
    const r = await getJson(`${vg.url}/ready`);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    assert.equal(r.json.status, 'ready');
    assert.deepEqual(Object.keys(r.json.checks).sort(), ['lmdb', 'providers', 'storage']);
    assert.equal(r.json.checks.lmdb.backend, 'lmdb'); // the kv check is named after its backend
    for (const c of ['lmdb', 'storage', 'providers']) {
      const ch = r.json.checks[c];
      assert.equal(ch.ok, true, `${c}: ${r.text}`);
      assert.ok(isNum(ch.latency_ms) && ch.latency_ms >= 0, `${c}.latency_ms`);
      assert.equal(typeof ch.backend, 'string');
    }
    assert.equal(r.headers.get('retry-after'), null);
    const h = await fetch(`${vg.url}/ready`, { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal((await h.arrayBuffer()).byteLength, 0);
  });

  it('/stats has the documented shape', async () => {
    const r = await getJson(`${vg.url}/stats`);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    const s = r.json;
    assertTier(s.cache.l1, 'cache.l1');
    assertTier(s.cache.l2, 'cache.l2');
    assert.equal(typeof s.requests.by_status, 'object');
    for (const [k, v] of Object.entries(s.requests.by_status)) {
      assert.match(k, /^(\d{3}|other)$/);
      assert.ok(isNum(v) && v >= 0);
    }
    assert.ok(isNum(s.uptime_s) && s.uptime_s >= 0);
  });

  it('/stats numbers move after traffic', async () => {
    const before = (await getJson(`${vg.url}/stats`)).json;
    const small = `/v1/cache/stt?provider=ops&language=en&audio_hash=${hex64('ops-small')}`;
    const large = `/v1/cache/stt?provider=ops&language=en&audio_hash=${hex64('ops-large')}`;
    const missing = `/v1/cache/stt?provider=ops&language=en&audio_hash=${hex64('ops-missing')}`;
    const put = (q, body) => getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body });
    assert.equal((await put(small, '{"text":"s"}')).status, 201);
    assert.equal((await put(large, JSON.stringify({ text: 'L'.repeat(300) }))).status, 201);
    const h1 = await getJson(`${vg.url}${small}`);
    assert.equal(h1.status, 200);
    assert.equal(h1.headers.get('x-cache-tier'), 'l1');
    const h2 = await getJson(`${vg.url}${large}`);
    assert.equal(h2.status, 200);
    assert.equal(h2.headers.get('x-cache-tier'), 'l2');
    assert.equal((await getJson(`${vg.url}${missing}`)).status, 404);

    // Request counters are bumped when the request is logged, just after
    // the reply; poll instead of racing.
    const after = await pollUntil(async () => {
      const s = (await getJson(`${vg.url}/stats`)).json;
      const b = s.requests.by_status;
      const ok = b['201'] >= before.requests.by_status['201'] + 2 &&
        b['404'] >= before.requests.by_status['404'] + 1 &&
        b['200'] >= before.requests.by_status['200'] + 3;
      return { ok, info: s, s };
    }, 'requests.by_status moved');
    const s = after.s;
    assert.ok(s.cache.l1.hits >= before.cache.l1.hits + 1, 'l1 hits');
    assert.ok(s.cache.l1.misses >= before.cache.l1.misses + 2, 'l1 misses (large + missing)');
    assert.ok(s.cache.l2.hits >= before.cache.l2.hits + 1, 'l2 hits');
    assert.ok(s.cache.l2.misses >= before.cache.l2.misses + 1, 'l2 misses');
    assert.ok(s.cache.l1.latency.count > before.cache.l1.latency.count, 'l1 latency count');
    assert.ok(s.cache.l2.latency.count > before.cache.l2.latency.count, 'l2 latency count');
    assert.ok(s.cache.l1.entries >= 1 && s.cache.l1.bytes > 0, 'l1 holds the small entry');
    assert.ok(s.cache.l2.entries >= 2 && s.cache.l2.bytes > 0, 'l2 holds both entries');
    assert.ok(s.cache.l1.hit_rate > 0 && s.cache.l1.hit_rate < 1, `l1 hit_rate ${s.cache.l1.hit_rate}`);
    assert.ok(Math.abs(s.cache.l1.hit_rate - s.cache.l1.hits / (s.cache.l1.hits + s.cache.l1.misses)) < 1e-6, 'hit_rate = hits/(hits+misses)');
    assert.ok(s.uptime_s >= before.uptime_s);
  });

  it('/metrics is Prometheus text that promtool accepts', async () => {
    const r = await fetch(`${vg.url}/metrics`);
    const body = await r.text();
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain;\s*version=0\.0\.4\b/);
    const promtool = findPromtool();
    assert.ok(promtool, 'promtool is installed (Debian package prometheus)');
    const p = spawnSync(promtool, ['check', 'metrics'], { input: body, encoding: 'utf8' });
    assert.equal(p.status, 0, `promtool check metrics: ${p.stdout}${p.stderr}`);
    assert.match(body, /^voxgate_http_requests_total\{status="200"\} \d+/m);
    assert.match(body, /^voxgate_cache_hits_total\{tier="l1"\} \d+/m);
    assert.match(body, /^# TYPE voxgate_http_requests_total counter$/m);
  });

  it('/metrics agrees with /stats', async () => {
    const s = (await getJson(`${vg.url}/stats`)).json;
    const m = parseProm(await (await fetch(`${vg.url}/metrics`)).text());
    // no traffic to cache routes between the two reads
    assert.equal(m.get('voxgate_cache_hits_total{tier="l1"}'), s.cache.l1.hits);
    assert.equal(m.get('voxgate_cache_hits_total{tier="l2"}'), s.cache.l2.hits);
    assert.equal(m.get('voxgate_cache_misses_total{tier="l1"}'), s.cache.l1.misses);
    assert.ok(m.get('voxgate_cache_hits_total{tier="l1"}') >= 1);
    assert.ok(m.get('voxgate_http_requests_total{status="201"}') >= 2);
  });
});

describe('/ready when storage fails', () => {
  let vg;
  let blobs;
  before(async () => {
    vg = await startVoxgate();
    blobs = join(vg.dataDir, 'blobs');
  });
  after(async () => { await stopAndCheck(vg); });

  it('storage gone → 503 with checks.storage.ok false and Retry-After', async () => {
    assert.equal((await getJson(`${vg.url}/ready`)).status, 200);
    rmSync(blobs, { recursive: true, force: true });
    writeFileSync(blobs, 'not a directory');
    const r = await getJson(`${vg.url}/ready`);
    assert.equal(r.status, 503, r.text);
    assert.match(r.headers.get('content-type'), /^application\/json/);
    assert.notEqual(r.json.status, 'ready');
    assert.equal(r.json.checks.storage.ok, false);
    assert.ok(isNum(r.json.checks.storage.latency_ms));
    assert.equal(r.json.checks.lmdb.ok, true);
    assert.match(r.headers.get('retry-after') || '', /^\d+$/);
    // liveness is unaffected
    assert.equal((await getJson(`${vg.url}/health`)).status, 200);
  });

  it('a TTS write while storage is gone → 503 JSON error, not a crash', async () => {
    const r = await getJson(`${vg.url}/v1/cache/tts?provider=ops&language=en&voice=v&text=down`, {
      method: 'PUT', headers: { 'content-type': 'audio/wav' }, body: 'RIFFdown',
    });
    assert.equal(r.status, 503, r.text);
    assert.equal(typeof r.json.error.code, 'string');
    assert.equal(r.json.error.request_id, r.headers.get('x-request-id'));
  });

  it('storage restored → /ready is 200 again and audio can be stored', async () => {
    rmSync(blobs, { force: true });
    mkdirSync(blobs);
    await pollUntil(async () => {
      const r = await getJson(`${vg.url}/ready`);
      return { ok: r.status === 200, info: `${r.status} ${r.text}` };
    }, '/ready after restoring the blobs directory', 15000);
    const q = '/v1/cache/tts?provider=ops&language=en&voice=v&text=back';
    const put = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'audio/wav' }, body: 'RIFFback' });
    assert.equal(put.status, 201, put.text);
    const g = await fetch(`${vg.url}${q}`);
    assert.equal(g.status, 200);
    assert.equal(await g.text(), 'RIFFback');
  });
});
