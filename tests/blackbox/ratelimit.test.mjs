// Black-box tests of the Gating API's rate limits (issue 4; SPEC §5, §6):
// POST /v1/ratelimit/check, GET /v1/ratelimit/{key} (peek), admin DELETE
// /v1/ratelimit/{key}; in-process (embedded) and on a real redis-server
// shared by three instances: 3×L concurrent checks → exactly L allowed,
// for sliding_log and GCRA; one EVALSHA per check; bad input → 400 and
// nothing written; fail_mode open/closed while Redis is down; recovery.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startVoxgate, stopVoxgate, cleanup, req } from './lib.mjs';
import { startRedis, redisRaw, monitor, FORBIDDEN } from './redis-lib.mjs';

const json = { 'Content-Type': 'application/json' };
const check = (vg, body, headers = {}) => req(vg, 'POST', '/v1/ratelimit/check', {
  body: typeof body === 'string' ? body : JSON.stringify(body), headers: { ...json, ...headers },
});
const peek = (vg, key, q) => req(vg, 'GET', `/v1/ratelimit/${encodeURIComponent(key)}?${q}`);
const clear = (vg, key, headers = {}) => req(vg, 'DELETE', `/v1/ratelimit/${encodeURIComponent(key)}`, { headers });

function redisEnv(srv, extra = {}) {
  return {
    VOXGATE_REDIS_URL: srv.url,
    VOXGATE_REDIS_COMMAND_TIMEOUT_MS: '200',
    VOXGATE_REDIS_BACKOFF_BASE_MS: '50',
    VOXGATE_REDIS_BACKOFF_MAX_MS: '400',
    ...extra,
  };
}

function assertResult(r, allowed, remaining, what = '') {
  assert.equal(r.status, 200, `${what}: ${r.text}`);
  assert.equal(r.json.allowed, allowed, `${what}: allowed (${r.text})`);
  if (remaining !== undefined) assert.equal(r.json.remaining, remaining, `${what}: remaining`);
  assert.equal(r.headers.get('x-ratelimit-limit'), String(r.json.limit));
  assert.equal(r.headers.get('x-ratelimit-remaining'), String(r.json.remaining));
  assert.equal(r.headers.get('x-ratelimit-reset'), String(Math.ceil(r.json.reset_ms / 1000)));
  if (allowed) {
    assert.equal(r.json.retry_after_ms, 0);
    assert.equal(r.headers.get('retry-after'), null);
  } else {
    assert.ok(r.json.retry_after_ms > 0);
    assert.equal(r.headers.get('retry-after'), String(Math.max(1, Math.ceil(r.json.retry_after_ms / 1000))));
  }
}

// The bad-input list of the issue; each must be 400 and count nothing.
const BAD = [
  [{ key: 'k', limit: 0, window_ms: 1000 }, 'invalid_parameter'],
  [{ key: 'k', limit: -1, window_ms: 1000 }, 'invalid_parameter'],
  [{ key: 'k', limit: 1.5, window_ms: 1000 }, 'invalid_parameter'],
  [{ key: 'k', limit: '5', window_ms: 1000 }, 'invalid_parameter'],
  [{ key: 'k', limit: 1000001, window_ms: 1000 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 0 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: -5 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 2678400001 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 1e300 }, 'invalid_parameter'],
  [{ key: 'k'.repeat(257), limit: 5, window_ms: 1000 }, 'invalid_key'],
  [{ key: 'a\nb', limit: 5, window_ms: 1000 }, 'invalid_key'],
  [{ key: 'a\u0001b', limit: 5, window_ms: 1000 }, 'invalid_key'],
  [{ key: '', limit: 5, window_ms: 1000 }, 'invalid_key'],
  [{ key: 7, limit: 5, window_ms: 1000 }, 'invalid_key'],
  [{ limit: 5, window_ms: 1000 }, 'missing_parameter'],
  [{ key: 'k', window_ms: 1000 }, 'missing_parameter'],
  [{ key: 'k', limit: 5 }, 'missing_parameter'],
  [{ key: 'k', limit: 5, window_ms: 1000, algorithm: 'token_bucket' }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 1000, algorithm: 1 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 1000, cost: 6 }, 'cost_exceeds_limit'],
  [{ key: 'k', limit: 5, window_ms: 1000, cost: 0 }, 'invalid_parameter'],
  [{ key: 'k', limit: 5, window_ms: 1000, extra: 1 }, 'unknown_field'],
  [{ policy: 'nope', key: 'k' }, 'unknown_policy'],
  ['[1,2]', 'invalid_json'],
  ['{"key":"k",', 'invalid_json'],
  ['{"key":"k","limit":5,"window_ms":1000} x', 'invalid_json'],
];

async function assertBadInputs(vg) {
  for (const [body, code] of BAD) {
    const r = await check(vg, body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.code, code, `${JSON.stringify(body)}: ${r.text}`);
  }
  for (const q of ['window_ms=1000', 'limit=5', 'limit=0&window_ms=1000', 'limit=5&window_ms=x',
    'limit=5&window_ms=1000&algorithm=leaky', 'limit=5&window_ms=1000&cost=9']) {
    const r = await peek(vg, 'k', q);
    assert.equal(r.status, 400, `peek ${q}: ${r.text}`);
  }
  assert.equal((await peek(vg, 'a\u0002b', 'limit=5&window_ms=1000')).status, 400);
  assert.equal((await peek(vg, 'k'.repeat(257), 'limit=5&window_ms=1000')).status, 400);
}

describe('rate limits, in-process (embedded default)', { timeout: 120000 }, () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: 'user1', VOXGATE_ADMIN_KEYS: 'admin1' } });
  });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });
  const U = { Authorization: 'Bearer user1' };
  const A = { Authorization: 'Bearer admin1' };
  const ck = (body) => check(vg, body, U);

  test('sliding_log: L allowed, then denied with Retry-After; headers match the body', async () => {
    for (let i = 0; i < 3; i++) assertResult(await ck({ key: 'sl', limit: 3, window_ms: 60000 }), true, 2 - i, `#${i}`);
    const denied = await ck({ key: 'sl', limit: 3, window_ms: 60000 });
    assertResult(denied, false, 0, 'fourth');
    assert.ok(denied.json.retry_after_ms > 59000 && denied.json.retry_after_ms <= 60000);
    assert.equal(denied.headers.get('retry-after'), '60');
  });

  test('cost > 1 counts several units; cost == limit is allowed once', async () => {
    assertResult(await ck({ key: 'cost', limit: 10, window_ms: 60000, cost: 4 }), true, 6);
    assertResult(await ck({ key: 'cost', limit: 10, window_ms: 60000, cost: 7 }), false, 6);
    assertResult(await ck({ key: 'cost', limit: 10, window_ms: 60000, cost: 6 }), true, 0);
    assertResult(await ck({ key: 'whole', limit: 5, window_ms: 60000, cost: 5 }), true, 0);
  });

  test('gcra: burst of L, then one per window/limit', async () => {
    for (let i = 0; i < 4; i++) assertResult(await ck({ key: 'g', limit: 4, window_ms: 400, algorithm: 'gcra' }), true, 3 - i);
    const d = await ck({ key: 'g', limit: 4, window_ms: 400, algorithm: 'gcra' });
    assertResult(d, false, 0);
    assert.ok(d.json.retry_after_ms > 0 && d.json.retry_after_ms <= 100, d.text);
    await new Promise((r) => setTimeout(r, d.json.retry_after_ms + 5));
    assertResult(await ck({ key: 'g', limit: 4, window_ms: 400, algorithm: 'gcra' }), true, 0);
  });

  test('peek consumes nothing; clear needs an admin key and resets', async () => {
    const q = 'limit=2&window_ms=60000';
    for (let i = 0; i < 5; i++) assertResult(await req(vg, 'GET', `/v1/ratelimit/pk?${q}`, { headers: U }), true, 2);
    assertResult(await ck({ key: 'pk', limit: 2, window_ms: 60000 }), true, 1);
    assertResult(await req(vg, 'GET', `/v1/ratelimit/pk?${q}`, { headers: U }), true, 1);
    assertResult(await ck({ key: 'pk', limit: 2, window_ms: 60000 }), true, 0);
    assertResult(await req(vg, 'GET', `/v1/ratelimit/pk?${q}`, { headers: U }), false, 0);
    assertResult(await req(vg, 'GET', `/v1/ratelimit/pk?${q}&algorithm=gcra`, { headers: U }), true, 2);
    assert.equal((await clear(vg, 'pk', U)).status, 403);
    assert.equal((await clear(vg, 'pk')).status, 401);
    assert.equal((await check(vg, { key: 'pk', limit: 2, window_ms: 60000 })).status, 401);
    assert.equal((await clear(vg, 'pk', A)).status, 204);
    assertResult(await req(vg, 'GET', `/v1/ratelimit/pk?${q}`, { headers: U }), true, 2);
    assert.equal((await clear(vg, 'never-seen', A)).status, 204);
  });

  test('bad input is 400 and counts nothing', async () => {
    const bad = async () => { for (const [body] of BAD) await check(vg, body, U); };
    await bad();
    const before = await req(vg, 'GET', '/stats', { headers: A });
    await assertBadInputsAuth(vg, U);
    const after = await req(vg, 'GET', '/stats', { headers: A });
    assert.deepEqual(after.json.ratelimit, before.json.ratelimit);
    // The key 'k' every bad body names was never counted.
    assertResult(await req(vg, 'GET', '/v1/ratelimit/k?limit=5&window_ms=1000', { headers: U }), true, 5);
  });

  test('/stats and /metrics count allowed and denied', async () => {
    const s = (await req(vg, 'GET', '/stats', { headers: A })).json;
    assert.ok(s.ratelimit.adhoc.allowed >= 10, JSON.stringify(s.ratelimit));
    assert.ok(s.ratelimit.adhoc.denied >= 3);
    assert.equal(s.ratelimit.adhoc.fail_open, 0);
    const m = await req(vg, 'GET', '/metrics', { headers: A });
    assert.match(m.text, /^voxgate_ratelimit_allowed_total\{policy="adhoc"\} \d+$/m);
    assert.match(m.text, /^voxgate_ratelimit_denied_total\{policy="adhoc"\} \d+$/m);
  });
});

describe('configured policies and the client rate limit (in-process)', { timeout: 120000 }, () => {
  let vg, gated;
  const policies = {
    login: { limit: 2, window_ms: 60000, algorithm: 'gcra' },
    daily: { limit: 5, window_ms: 86400000 },
    clients: { limit: 3, window_ms: 60000 },
  };
  before(async () => {
    vg = await startVoxgate({ config: { ratelimit: { policies } } });
    gated = await startVoxgate({
      config: { ratelimit: { policies, client_policy: 'clients' } },
      env: { VOXGATE_API_KEYS: 'user1,user2', VOXGATE_ADMIN_KEYS: 'admin1' },
    });
  });
  after(async () => {
    for (const v of [vg, gated]) if (v) { await stopVoxgate(v); cleanup(v); }
  });

  test('{policy, key}: the policy sets limit, window and algorithm; state is per policy', async () => {
    assertResult(await check(vg, { policy: 'login', key: 'bob' }), true, 1);
    assertResult(await check(vg, { policy: 'login', key: 'bob' }), true, 0);
    const d = await check(vg, { policy: 'login', key: 'bob' });
    assertResult(d, false, 0);
    assert.equal(d.json.limit, 2);
    assert.ok(d.json.retry_after_ms > 29000 && d.json.retry_after_ms <= 30000, d.text); // gcra: T = 30 s
    assertResult(await check(vg, { policy: 'daily', key: 'bob', cost: 2 }), true, 3);
    assertResult(await check(vg, { key: 'bob', limit: 2, window_ms: 60000, algorithm: 'gcra' }), true, 1, 'ad hoc is apart');
    assertResult(await peek(vg, 'bob', 'policy=daily'), true, 3);
    assertResult(await peek(vg, 'bob', 'policy=login'), false, 0);
    assert.equal((await clear(vg, 'bob') ).status, 204); // ad hoc only
    assertResult(await peek(vg, 'bob', 'policy=login'), false, 0);
    assert.equal((await req(vg, 'DELETE', '/v1/ratelimit/bob?policy=login')).status, 204);
    assertResult(await peek(vg, 'bob', 'policy=login'), true, 2);
    assertResult(await peek(vg, 'bob', 'policy=daily'), true, 3);
  });

  test('policy errors are 400 and count nothing', async () => {
    for (const [body, code] of [
      [{ policy: 'nope', key: 'k' }, 'unknown_policy'],
      [{ policy: 'login', key: 'k', limit: 9 }, 'invalid_parameter'],
      [{ policy: 'login', key: 'k', algorithm: 'gcra' }, 'invalid_parameter'],
      [{ policy: 'login', key: 'k', cost: 3 }, 'cost_exceeds_limit'],
      [{ policy: 7, key: 'k' }, 'invalid_parameter'],
      [{ policy: 'login' }, 'missing_parameter'],
    ]) {
      const r = await check(vg, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.error.code, code, `${JSON.stringify(body)}: ${r.text}`);
    }
    assert.equal((await peek(vg, 'k', 'policy=nope')).status, 400);
    assert.equal((await peek(vg, 'k', 'policy=login&limit=3')).status, 400);
    assertResult(await peek(vg, 'k', 'policy=login'), true, 2);
    const s = (await req(vg, 'GET', '/stats')).json;
    assert.equal(s.ratelimit.login.allowed, 2);
    assert.equal(s.ratelimit.login.denied, 1);
    assert.equal(s.ratelimit.daily.allowed, 1);
    const m = await req(vg, 'GET', '/metrics');
    assert.match(m.text, /^voxgate_ratelimit_denied_total\{policy="login"\} 1$/m);
  });

  test('client_policy: each API key gets L requests on /v1, then 429 with Retry-After', async () => {
    const get = (key) => req(gated, 'GET', `/v1/ratelimit/x?limit=1&window_ms=1000`, { headers: { Authorization: `Bearer ${key}` } });
    // An allowed answer shows the client's budget too; a check's own
    // X-RateLimit-* (the key it checked) wins over the client's.
    const v1 = await req(gated, 'GET', '/v1/models', { headers: { Authorization: 'Bearer user1' } });
    assert.equal(v1.status, 200, v1.text);
    assert.equal(v1.headers.get('x-ratelimit-limit'), '3');
    assert.equal(v1.headers.get('x-ratelimit-remaining'), '2');
    assert.ok(Number(v1.headers.get('x-ratelimit-reset')) >= 1);
    const own = await get('user1');
    assert.equal(own.status, 200);
    assert.equal(own.headers.get('x-ratelimit-limit'), '1', 'the peeked key\'s, not the client\'s');
    assert.equal((await get('user1')).status, 200); // the third of 3
    const r = await get('user1');
    assert.equal(r.status, 429, r.text);
    assert.equal(r.json.error.code, 'rate_limited');
    assert.equal(r.json.error.request_id, r.headers.get('x-request-id'));
    assert.equal(r.headers.get('x-ratelimit-limit'), '3');
    assert.equal(r.headers.get('x-ratelimit-remaining'), '0');
    const ra = Number(r.headers.get('retry-after'));
    assert.ok(ra >= 59 && ra <= 60, `Retry-After ${ra}`);
    // Another key has its own budget; /health and /ready are not limited;
    // a request refused at auth is not counted against anyone.
    assert.equal((await get('user2')).status, 200);
    assert.equal((await req(gated, 'GET', '/health')).status, 200);
    assert.equal((await req(gated, 'GET', '/v1/ratelimit/x?limit=1&window_ms=1000')).status, 401);
    const body = await req(gated, 'POST', '/v1/cache/batch', { body: '{}', headers: { ...json, Authorization: 'Bearer user1' } });
    assert.equal(body.status, 429, 'POSTs too, before the body is used');
    const s = (await req(gated, 'GET', '/stats', { headers: { Authorization: 'Bearer admin1' } })).json;
    assert.ok(s.ratelimit.clients.denied >= 2, JSON.stringify(s.ratelimit));
    assert.ok(s.ratelimit.clients.allowed >= 4);
  });
});

// A GET from a chosen loopback source address (all of 127/8 is local).
function getFrom(vg, from, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(path, vg.url);
    http.get({ host: u.hostname, port: u.port, path: u.pathname + u.search, localAddress: from, headers, agent: false }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    }).on('error', reject);
  });
}

describe('the client rate limit with no keys configured', { timeout: 60000 }, () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ config: { ratelimit: { policies: { clients: { limit: 3, window_ms: 60000 } }, client_policy: 'clients' } } });
  });
  after(async () => { if (vg) { await stopVoxgate(vg); cleanup(vg); } });

  test('each client address has its own budget, and a made-up token does not buy a new one', async () => {
    const path = '/v1/ratelimit/x?limit=1&window_ms=1000';
    for (let i = 0; i < 3; i++) assert.equal((await getFrom(vg, '127.0.0.1', path)).status, 200);
    const r = await getFrom(vg, '127.0.0.1', path);
    assert.equal(r.status, 429, r.text);
    assert.equal(r.headers['x-ratelimit-limit'], '3');
    for (const token of ['a', 'b']) // unchecked without keys: not an identity
      assert.equal((await getFrom(vg, '127.0.0.1', path, { Authorization: `Bearer ${token}` })).status, 429);
    assert.equal((await getFrom(vg, '127.0.0.2', path)).status, 200, 'another address');
    const s = (await req(vg, 'GET', '/stats')).json;
    assert.equal(s.ratelimit.clients.allowed, 4);
    assert.equal(s.ratelimit.clients.denied, 3);
  });
});

async function assertBadInputsAuth(vg, headers) {
  for (const [body, code] of BAD) {
    const r = await check(vg, body, headers);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.json.error.code, code, `${JSON.stringify(body)}: ${r.text}`);
  }
}

describe('rate limits on Redis, three instances as one', { timeout: 180000 }, () => {
  let srv, vgs = [];
  before(async () => {
    srv = await startRedis();
    for (let i = 0; i < 3; i++) vgs.push(await startVoxgate({ env: redisEnv(srv) }));
  });
  after(async () => {
    for (const vg of vgs) { await stopVoxgate(vg); cleanup(vg); }
    if (srv) await srv.stop();
  });

  async function storm(L, algorithm, key) {
    const all = [];
    for (let i = 0; i < 3 * L; i++) {
      all.push(check(vgs[i % 3], { key, limit: L, window_ms: 60000, algorithm }));
    }
    const res = await Promise.all(all);
    for (const r of res) assert.equal(r.status, 200, r.text);
    return res.filter((r) => r.json.allowed).length;
  }

  test('sliding_log: 3×L concurrent checks over three instances → exactly L allowed', async () => {
    assert.equal(await storm(50, 'sliding_log', 'storm-sl'), 50);
    // Members are unique per unit even within one millisecond.
    assert.equal(await redisRaw(srv.port, 'ZCARD', 'voxgate:rl:sl:storm-sl'), '50');
    const p = await peek(vgs[1], 'storm-sl', 'limit=50&window_ms=60000');
    assertResult(p, false, 0);
  });

  test('gcra: 3×L concurrent checks → exactly L allowed (burst bound)', async () => {
    assert.equal(await storm(30, 'gcra', 'storm-gcra'), 30);
    const ttl = Number(await redisRaw(srv.port, 'PTTL', 'voxgate:rl:gcra:storm-gcra'));
    assert.ok(ttl > 50000 && ttl <= 60000, `PTTL ${ttl}`);
  });

  test('cost on one instance is seen by the others; peek consumes nothing; clear on another resets', async () => {
    assertResult(await check(vgs[0], { key: 'shared', limit: 10, window_ms: 60000, cost: 7 }), true, 3);
    for (let i = 0; i < 3; i++) assertResult(await peek(vgs[1], 'shared', 'limit=10&window_ms=60000'), true, 3);
    assertResult(await peek(vgs[1], 'shared', 'limit=10&window_ms=60000&cost=4'), false, 3);
    assertResult(await check(vgs[2], { key: 'shared', limit: 10, window_ms: 60000, cost: 4 }), false, 3);
    assertResult(await check(vgs[2], { key: 'shared', limit: 10, window_ms: 60000, cost: 3 }), true, 0);
    assert.equal((await clear(vgs[1], 'shared')).status, 204);
    assert.equal(await redisRaw(srv.port, 'EXISTS', 'voxgate:rl:sl:shared'), '0');
    assertResult(await check(vgs[0], { key: 'shared', limit: 10, window_ms: 60000 }), true, 9);
  });

  test('each check is one EVALSHA on one key; NOSCRIPT reloads the script', async () => {
    const mon = await monitor(srv.port);
    for (let i = 0; i < 5; i++) await check(vgs[i % 3], { key: 'mon', limit: 100, window_ms: 60000 });
    await check(vgs[0], { key: 'mon', limit: 100, window_ms: 60000, algorithm: 'gcra' });
    await new Promise((r) => setTimeout(r, 100));
    const all = await mon.stop();
    assert.deepEqual(all.filter((l) => FORBIDDEN.test(l)), [], 'no KEYS/FLUSH, not even inside the scripts');
    const lines = all.filter((l) => l !== 'OK' && !/ lua\]/.test(l));
    assert.equal(lines.length, 6, lines.join('\n'));
    for (const l of lines) assert.match(l, /"EVALSHA" "[0-9a-f]{40}" "1" "voxgate:rl:(sl|gcra):mon"/i);
    await redisRaw(srv.port, 'SCRIPT', 'FLUSH');
    assertResult(await check(vgs[1], { key: 'mon', limit: 100, window_ms: 60000 }), true, 94);
    assertResult(await check(vgs[1], { key: 'mon', limit: 100, window_ms: 60000, algorithm: 'gcra' }), true, 98);
  });

  test('bad input is 400 and writes nothing to Redis', async () => {
    const before = await redisRaw(srv.port, 'DBSIZE');
    await assertBadInputs(vgs[0]);
    assert.equal(await redisRaw(srv.port, 'EXISTS', 'voxgate:rl:sl:k', 'voxgate:rl:gcra:k'), '0');
    assert.equal(await redisRaw(srv.port, 'DBSIZE'), before);
  });

  test('Redis down: fail_mode open allows (counted), closed answers 503; both recover', async () => {
    const closed = await startVoxgate({
      env: redisEnv(srv, { VOXGATE_RATELIMIT_FAIL_MODE: 'closed' }),
      config: { ratelimit: { policies: { lax: { limit: 1, window_ms: 60000 }, strict: { limit: 1, window_ms: 60000, fail_mode: 'closed' } } } },
    });
    try {
      await srv.kill();
      const body = { key: 'down', limit: 1, window_ms: 60000 };
      for (let i = 0; i < 3; i++) {
        const t0 = Date.now();
        const r = await check(vgs[0], body);
        assert.ok(Date.now() - t0 < 2000);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.allowed, true);
        assert.equal(r.json.fail_open, true);
      }
      const c = await check(closed, body);
      assert.equal(c.status, 503, c.text);
      assert.equal(c.json.error.code, 'limiter_unavailable');
      assert.equal(c.headers.get('retry-after'), '1');
      // Per policy: lax (open) allows, strict (closed) refuses.
      const lax = await check(closed, { policy: 'lax', key: 'down' });
      assert.equal(lax.status, 200, lax.text);
      assert.equal(lax.json.fail_open, true);
      assert.equal((await check(closed, { policy: 'strict', key: 'down' })).status, 503);
      const cs = (await req(closed, 'GET', '/stats')).json;
      assert.equal(cs.ratelimit.lax.fail_open, 1);
      assert.equal(cs.ratelimit.strict.fail_closed, 1);
      assert.equal(cs.ratelimit.adhoc.fail_closed, 1);
      const s = (await req(vgs[0], 'GET', '/stats')).json;
      assert.ok(s.ratelimit.adhoc.fail_open >= 3, JSON.stringify(s.ratelimit));
      await srv.spawn();
      const deadline = Date.now() + 8000;
      for (;;) {
        const r = await check(closed, body);
        if (r.status === 200) { assertResult(r, true, 0); break; }
        assert.ok(Date.now() < deadline, `no recovery: ${r.text}`);
        await new Promise((res) => setTimeout(res, 50));
      }
      for (;;) {
        const r = await check(vgs[0], body);
        if (!r.json.fail_open) { assertResult(r, false, 0, 'limit shared again'); break; }
        assert.ok(Date.now() < deadline, `no recovery: ${r.text}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    } finally {
      await stopVoxgate(closed);
      cleanup(closed);
    }
  });
});
