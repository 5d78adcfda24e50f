// Circuit breakers over HTTP (issue 5, SPEC §5 "Gating API"): the full
// closed -> open -> half_open -> closed cycle with short timeouts, the
// failure-rate window, exactly half_open_max_calls permits under 50
// concurrent acquires, expired probe permits, bad input (400 JSON),
// admin rules, on-demand creation up to breakers.max_count (then 429),
// --check-config errors, the transition log lines, /stats and /metrics.
// Waits poll the server instead of trusting timers, so slow (ASan) builds
// pass too.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, startVoxgate, stopVoxgate, cleanup, req, waitForLog, sleep, tempDir } from './lib.mjs';

const SLOW = 120000;
const RECOVERY_MS = 400;

async function stopClean(vg) {
  if (!vg) return;
  const res = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

const json = (o) => ({ body: JSON.stringify(o), headers: { 'Content-Type': 'application/json' } });
const acquire = (vg, p, h = {}) => req(vg, 'POST', `/v1/breakers/${p}/acquire`, { headers: h });
const record = (vg, p, o, h = {}) => {
  const r = json(o);
  return req(vg, 'POST', `/v1/breakers/${p}/record`, { body: r.body, headers: { ...r.headers, ...h } });
};
const getBreaker = (vg, p, h = {}) => req(vg, 'GET', `/v1/breakers/${p}`, { headers: h });

function assertError(res, status, code, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
  assert.ok(res.json && res.json.error, `${what}: JSON error body: ${res.text}`);
  assert.equal(res.json.error.code, code, `${what}: ${res.text}`);
  assert.ok(res.json.error.message.length > 0);
  assert.equal(res.json.error.request_id, res.headers.get('x-request-id'));
}

async function waitState(vg, p, state, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await getBreaker(vg, p);
    assert.equal(r.status, 200, r.text);
    if (r.json.state === state) return r.json;
    if (Date.now() > deadline) throw new Error(`${p} never reached ${state}: ${r.text}`);
    await sleep(25);
  }
}

async function failN(vg, p, n) {
  let last;
  for (let i = 0; i < n; i++) {
    last = await record(vg, p, { outcome: 'failure' });
    assert.equal(last.status, 200, last.text);
  }
  return last.json;
}

const transition = (p, from, to, reason) => (l) =>
  l.msg === 'breaker state changed' && l.provider === p && l.from === from && l.to === to && l.reason === reason;

const CONFIG = {
  breakers: {
    failure_threshold: 3, failure_rate_threshold: 0.5, window_size: 4, min_calls: 4,
    recovery_timeout_ms: RECOVERY_MS, half_open_max_calls: 2, success_threshold: 2,
    call_timeout_ms: 60000, max_count: 50,
  },
  providers: {
    alpha: { breaker: { failure_threshold: 2 } },
    beta: {},
    burst: { breaker: { half_open_max_calls: 5, success_threshold: 1 } },
    expiring: { breaker: { half_open_max_calls: 1, success_threshold: 1, call_timeout_ms: 300 } },
  },
};

describe('circuit breakers over HTTP', { timeout: SLOW }, () => {
  let vg;
  before(async () => { vg = await startVoxgate({ config: CONFIG }); }, { timeout: SLOW });
  after(async () => { await stopClean(vg); }, { timeout: SLOW });

  it('configured providers have breakers at start, with their overrides over breakers.*', async () => {
    const r = await req(vg, 'GET', '/v1/breakers');
    assert.equal(r.status, 200, r.text);
    const names = r.json.breakers.map((b) => b.provider);
    // With no gateway provider configured, the offline local one is there too.
    assert.deepEqual(names, ['alpha', 'beta', 'burst', 'expiring', 'local']);
    assert.deepEqual(r.json.available, names);
    const alpha = r.json.breakers[0];
    assert.equal(alpha.state, 'closed');
    assert.equal(alpha.configured, true);
    assert.equal(alpha.opened_at, null);
    assert.equal(alpha.next_probe_at, null);
    const { max_count: _unused, ...defaults } = CONFIG.breakers;
    assert.deepEqual(alpha.settings, { ...defaults, failure_threshold: 2 });
    assert.equal(r.json.breakers[1].settings.failure_threshold, 3, 'beta inherits breakers.*');
    assert.equal(r.json.breakers[2].settings.half_open_max_calls, 5);
  });

  it('the full cycle: closed -> open -> half_open -> closed, and a failed probe reopens', { timeout: SLOW }, async () => {
    let a = await acquire(vg, 'alpha');
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.json, { allowed: true, state: 'closed' });
    const first = await record(vg, 'alpha', { outcome: 'failure', latency_ms: 12.5 });
    assert.deepEqual(first.json, { recorded: true, state: 'closed' });
    const second = await record(vg, 'alpha', { outcome: 'timeout' });
    assert.deepEqual(second.json, { recorded: true, state: 'open' });
    await waitForLog(vg, transition('alpha', 'closed', 'open', 'consecutive_failures'));

    a = await acquire(vg, 'alpha');
    assert.equal(a.json.allowed, false);
    assert.equal(a.json.state, 'open');
    assert.ok(a.json.retry_after_ms > 0 && a.json.retry_after_ms <= RECOVERY_MS, a.text);
    assert.equal(a.json.permit_id, undefined);
    let g = (await getBreaker(vg, 'alpha')).json;
    if (g.state === 'open') { // a slow build may already be past the timeout
      assert.equal(g.available, false);
      assert.ok(Date.parse(g.next_probe_at) - Date.parse(g.opened_at) === RECOVERY_MS, JSON.stringify(g));
    }
    assert.ok(g.counts.rejected >= 1);
    assert.equal(g.counts.failures, 1);
    assert.equal(g.counts.timeouts, 1);

    await waitState(vg, 'alpha', 'half_open');
    await waitForLog(vg, transition('alpha', 'open', 'half_open', 'recovery_timeout'));
    const p1 = await acquire(vg, 'alpha');
    const p2 = await acquire(vg, 'alpha');
    const p3 = await acquire(vg, 'alpha');
    assert.equal(p1.json.allowed, true);
    assert.equal(p2.json.allowed, true);
    assert.equal(p1.json.state, 'half_open');
    assert.match(p1.json.permit_id, /^[1-9][0-9]*$/);
    assert.notEqual(p1.json.permit_id, p2.json.permit_id);
    assert.deepEqual(p3.json, { allowed: false, state: 'half_open' });

    // A record without a matching acquire changes nothing.
    assertError(await record(vg, 'alpha', { outcome: 'success' }), 400, 'no_permit', 'record without permit');
    assertError(await record(vg, 'alpha', { outcome: 'failure', permit_id: '999999' }), 400, 'no_permit', 'unknown permit');
    g = (await getBreaker(vg, 'alpha')).json;
    assert.equal(g.state, 'half_open');
    assert.deepEqual(g.probes, { issued: 2, in_flight: 2, successes: 0 });

    let r = await record(vg, 'alpha', { outcome: 'success', permit_id: p1.json.permit_id, latency_ms: 3 });
    assert.deepEqual(r.json, { recorded: true, state: 'half_open' });
    assertError(await record(vg, 'alpha', { outcome: 'success', permit_id: p1.json.permit_id }), 400, 'no_permit', 'a permit is recorded once');
    r = await record(vg, 'alpha', { outcome: 'success', permit_id: p2.json.permit_id });
    assert.deepEqual(r.json, { recorded: true, state: 'closed' });
    await waitForLog(vg, transition('alpha', 'half_open', 'closed', 'probes_succeeded'));
    g = (await getBreaker(vg, 'alpha')).json;
    assert.equal(g.state, 'closed');
    assert.equal(g.window_calls, 0);
    assert.equal(g.opened_at, null);
    assert.deepEqual((await acquire(vg, 'alpha')).json, { allowed: true, state: 'closed' });

    // Open again; a failed probe reopens with a fresh recovery timeout.
    await failN(vg, 'alpha', 2);
    await waitState(vg, 'alpha', 'half_open');
    const p = await acquire(vg, 'alpha');
    assert.equal(p.json.allowed, true);
    const before = Date.now();
    r = await record(vg, 'alpha', { outcome: 'failure', permit_id: p.json.permit_id });
    assert.deepEqual(r.json, { recorded: true, state: 'open' });
    await waitForLog(vg, transition('alpha', 'half_open', 'open', 'probe_failed'));
    g = (await getBreaker(vg, 'alpha')).json;
    if (g.state === 'open') {
      assert.ok(Date.parse(g.opened_at) >= before - 5, `opened_at ${g.opened_at} is fresh`);
      assert.equal(Date.parse(g.next_probe_at) - Date.parse(g.opened_at), RECOVERY_MS);
    }
    assert.equal(g.counts.opened, 3);
    assert.ok(g.mean_latency_ms > 0);
  });

  it('the failure rate over the window opens the breaker once min_calls calls are in it', async () => {
    for (const o of ['failure', 'success', 'failure']) {
      const r = await record(vg, 'rate1', { outcome: o });
      assert.deepEqual(r.json, { recorded: true, state: 'closed' }, `under min_calls: ${r.text}`);
    }
    let g = (await getBreaker(vg, 'rate1')).json;
    assert.equal(g.window_calls, 3);
    assert.equal(g.window_failures, 2);
    assert.equal(g.configured, false);
    const r = await record(vg, 'rate1', { outcome: 'success' }); // 2/4 = 0.5, but a success never opens
    assert.equal(r.json.state, 'closed');
    g = (await getBreaker(vg, 'rate1')).json;
    assert.equal(g.failure_rate, 0.5);
    const f = await record(vg, 'rate1', { outcome: 'failure' }); // window [S F S F] = 0.5
    assert.equal(f.json.state, 'open');
    await waitForLog(vg, transition('rate1', 'closed', 'open', 'failure_rate'));
  });

  it('50 concurrent acquires in half-open: exactly half_open_max_calls are allowed', { timeout: SLOW }, async () => {
    await failN(vg, 'burst', 3);
    await waitState(vg, 'burst', 'half_open');
    const all = await Promise.all(Array.from({ length: 50 }, () => acquire(vg, 'burst')));
    for (const a of all) assert.equal(a.status, 200, a.text);
    const allowed = all.filter((a) => a.json.allowed);
    assert.equal(allowed.length, 5, `allowed: ${allowed.length}`);
    assert.equal(new Set(allowed.map((a) => a.json.permit_id)).size, 5, 'distinct permits');
    for (const a of all.filter((x) => !x.json.allowed)) assert.equal(a.json.state, 'half_open');
    const g = (await getBreaker(vg, 'burst')).json;
    assert.equal(g.probes.issued, 5);
    assert.equal(g.available, false);
    const list = (await req(vg, 'GET', '/v1/breakers')).json;
    assert.ok(!list.available.includes('burst'));
    const r = await record(vg, 'burst', { outcome: 'success', permit_id: allowed[0].json.permit_id });
    assert.equal(r.json.state, 'closed');
  });

  it('a probe permit never recorded expires after call_timeout_ms as a timeout', { timeout: SLOW }, async () => {
    await failN(vg, 'expiring', 3);
    await waitState(vg, 'expiring', 'half_open');
    const p = await acquire(vg, 'expiring');
    assert.equal(p.json.allowed, true);
    assert.equal((await acquire(vg, 'expiring')).json.allowed, false, 'the one probe is out');
    // The expiry is applied when the breaker is next looked at: keep looking.
    const expired = transition('expiring', 'half_open', 'open', 'probe_expired');
    for (const deadline = Date.now() + 15000; !vg.logs().some(expired);) {
      assert.ok(Date.now() < deadline, 'the permit never expired');
      await getBreaker(vg, 'expiring');
      await sleep(25);
    }
    const g = (await getBreaker(vg, 'expiring')).json;
    assert.equal(g.counts.timeouts, 1);
    assert.ok(['open', 'half_open'].includes(g.state));
    // The crashed client's late record changes nothing; the breaker recovers.
    const late = await record(vg, 'expiring', { outcome: 'success', permit_id: p.json.permit_id });
    assert.ok(late.status === 200 ? late.json.state !== 'closed' : late.json.error.code === 'no_permit', late.text);
    await waitState(vg, 'expiring', 'half_open');
    const q = await acquire(vg, 'expiring');
    assert.equal(q.json.allowed, true);
    const r = await record(vg, 'expiring', { outcome: 'success', permit_id: q.json.permit_id });
    assert.equal(r.json.state, 'closed');
  });

  it('bad input is a 400 with a JSON error, and creates nothing', async () => {
    const count = (await req(vg, 'GET', '/v1/breakers')).json.breakers.length;
    const rec = (body, ctype = 'application/json') =>
      req(vg, 'POST', '/v1/breakers/newone/record', { body, headers: { 'Content-Type': ctype } });
    assertError(await rec(JSON.stringify({ outcome: 'meh' })), 400, 'invalid_outcome', 'unknown outcome');
    assertError(await rec(JSON.stringify({ outcome: 42 })), 400, 'invalid_outcome', 'outcome not a string');
    assertError(await rec(JSON.stringify({ outcome: 'success', latency_ms: -1 })), 400, 'invalid_latency', 'negative latency');
    assertError(await rec(JSON.stringify({ outcome: 'success', latency_ms: '5' })), 400, 'invalid_latency', 'latency string');
    assertError(await rec('{"outcome":"success",'), 400, 'invalid_json', 'malformed JSON');
    assertError(await rec('[1]'), 400, 'invalid_json', 'not an object');
    assertError(await rec('{"outcome":"success"} {}'), 400, 'invalid_json', 'two values');
    assertError(await rec(''), 400, 'missing_body', 'empty body');
    assertError(await rec(JSON.stringify({ latency_ms: 3 })), 400, 'missing_parameter', 'no outcome');
    assertError(await rec(JSON.stringify({ outcome: 'success', extra: 1 })), 400, 'unknown_field', 'unknown field');
    assertError(await rec(JSON.stringify({ outcome: 'success', permit_id: 7 })), 400, 'invalid_permit', 'permit_id number');
    assertError(await rec(JSON.stringify({ outcome: 'success', permit_id: 'abc' })), 400, 'invalid_permit', 'permit_id text');
    const plain = await rec('outcome=success', 'text/plain');
    assertError(plain, 415, 'unsupported_media_type', 'wrong Content-Type');
    for (const bad of ['bad%20name', 'a*b', 'x'.repeat(65), '%C3%A9t%C3%A9']) {
      assertError(await acquire(vg, bad), 400, 'invalid_parameter', `acquire ${bad}`);
      assertError(await getBreaker(vg, bad), 400, 'invalid_parameter', `get ${bad}`);
      assertError(await record(vg, bad, { outcome: 'success' }), 400, 'invalid_parameter', `record ${bad}`);
    }
    const withBody = await req(vg, 'POST', '/v1/breakers/newone/acquire', json({ x: 1 }));
    assertError(withBody, 400, 'unknown_field', 'acquire takes no fields');
    assertError(await req(vg, 'POST', '/v1/breakers/newone/acquire', { body: 'nope', headers: { 'Content-Type': 'application/json' } }),
      400, 'invalid_json', 'acquire with a bad body');
    assertError(await req(vg, 'GET', '/v1/breakers?x=1'), 400, 'unknown_parameter', 'query on list');
    const after = (await req(vg, 'GET', '/v1/breakers')).json.breakers;
    assert.equal(after.length, count, 'no breaker was created by bad input');
    assert.ok(!after.some((b) => b.provider === 'newone'));
    // {} is a valid acquire body.
    const ok = await req(vg, 'POST', '/v1/breakers/newone/acquire', json({}));
    assert.deepEqual(ok.json, { allowed: true, state: 'closed' });
  });

  it('GET /v1/breakers/reset is not a provider read: 405 with Allow: POST', async () => {
    const r = await req(vg, 'GET', '/v1/breakers/reset');
    assertError(r, 405, 'method_not_allowed', 'GET reset');
    assert.equal(r.headers.get('allow'), 'POST');
    const p = await req(vg, 'PUT', '/v1/breakers/alpha');
    assert.equal(p.status, 405);
    assert.equal(p.headers.get('allow'), 'GET');
  });

  it('/stats and /metrics show every breaker; promtool accepts the text', async () => {
    await failN(vg, 'beta', 3);
    const s = (await req(vg, 'GET', '/stats')).json;
    assert.equal(s.breakers.beta.state, 'open');
    assert.equal(s.breakers.beta.available, false);
    assert.equal(s.breakers.beta.failures, 3);
    assert.equal(s.breakers.beta.opened, 1);
    assert.ok(s.breakers.rate1, 'on-demand breakers are in /stats too');
    const text = (await req(vg, 'GET', '/metrics')).text;
    assert.match(text, /^voxgate_breaker_state\{provider="beta"\} 1$/m);
    assert.match(text, /^voxgate_breaker_state\{provider="rate1"\} [0-2]$/m);
    assert.match(text, /^voxgate_breaker_transitions_total\{provider="beta",to="open"\} 1$/m);
    assert.match(text, /^voxgate_breaker_outcomes_total\{provider="beta",outcome="failure"\} 3$/m);
    assert.match(text, /^voxgate_breaker_rejected_total\{provider="alpha"\} \d+$/m);
    assert.match(text, /^voxgate_breaker_failure_rate\{provider="beta"\} 1$/m);
    assert.match(text, /^# TYPE voxgate_breaker_state gauge$/m);
    const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));
    assert.ok(promtool, 'promtool is installed (Debian package prometheus)');
    const p = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(p.status, 0, `promtool check metrics: ${p.stdout}${p.stderr}`);
  });

  it('POST /v1/breakers/reset and /v1/breakers/{provider}/reset close breakers (open access without keys)', async () => {
    await failN(vg, 'beta', 3);
    let r = await req(vg, 'POST', '/v1/breakers/beta/reset');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'closed');
    assert.equal(r.json.provider, 'beta');
    await waitForLog(vg, transition('beta', 'open', 'closed', 'reset'));
    await failN(vg, 'beta', 3);
    await failN(vg, 'gamma', 3); // alpha, rate1, ... are open or half-open from earlier tests
    r = await req(vg, 'POST', '/v1/breakers/reset');
    assert.equal(r.status, 200, r.text);
    const list = (await req(vg, 'GET', '/v1/breakers')).json;
    assert.equal(r.json.reset, list.breakers.length);
    for (const b of list.breakers) assert.equal(b.state, 'closed', b.provider);
    assert.deepEqual(list.available, list.breakers.map((b) => b.provider));
  });
});

describe('breaker admin rules (keys configured)', { timeout: SLOW }, () => {
  const USER = 'user-key-breakers';
  const ADMIN = 'admin-key-breakers';
  let vg;
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: USER, VOXGATE_ADMIN_KEYS: ADMIN } });
  }, { timeout: SLOW });
  after(async () => { await stopClean(vg); }, { timeout: SLOW });

  const auth = (k) => ({ Authorization: `Bearer ${k}` });

  it('reading, acquire and record need an API key; resets need an admin key', async () => {
    assertError(await req(vg, 'GET', '/v1/breakers'), 401, 'unauthorized', 'list without a key');
    assertError(await acquire(vg, 'p1'), 401, 'unauthorized', 'acquire without a key');
    assert.equal((await req(vg, 'GET', '/v1/breakers', { headers: auth(USER) })).status, 200);
    assert.equal((await acquire(vg, 'p1', auth(USER))).json.allowed, true);
    assert.equal((await record(vg, 'p1', { outcome: 'failure' }, auth(USER))).status, 200);
    assert.equal((await getBreaker(vg, 'p1', auth(ADMIN))).status, 200, 'an admin key is also an API key');
    for (const path of ['/v1/breakers/p1/reset', '/v1/breakers/reset']) {
      assertError(await req(vg, 'POST', path), 401, 'unauthorized', `${path} without a key`);
      assertError(await req(vg, 'POST', path, { headers: auth(USER) }), 403, 'forbidden', `${path} with an API key`);
      const ok = await req(vg, 'POST', path, { headers: auth(ADMIN) });
      assert.equal(ok.status, 200, `${path} with an admin key: ${ok.text}`);
    }
    // An API key cannot create breakers through a refused reset.
    await req(vg, 'POST', '/v1/breakers/ghost/reset', { headers: auth(USER) });
    const list = (await req(vg, 'GET', '/v1/breakers', { headers: auth(USER) })).json;
    assert.deepEqual(list.breakers.map((b) => b.provider), ['local', 'p1']);
  });
});

describe('breakers.max_count bounds on-demand breakers', { timeout: SLOW }, () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ config: { breakers: { max_count: 3 }, providers: { conf1: {}, conf2: {} } } });
  }, { timeout: SLOW });
  after(async () => { await stopClean(vg); }, { timeout: SLOW });

  it('unknown providers get breakers up to max_count, then 429 breaker_limit and nothing is created', async () => {
    for (const p of ['n1', 'n2', 'n3']) {
      const r = await acquire(vg, p);
      assert.deepEqual(r.json, { allowed: true, state: 'closed' }, `${p}: ${r.text}`);
    }
    for (const call of [() => acquire(vg, 'n4'), () => getBreaker(vg, 'n4'), () => record(vg, 'n4', { outcome: 'success' })]) {
      assertError(await call(), 429, 'breaker_limit', 'past max_count');
    }
    const list = (await req(vg, 'GET', '/v1/breakers')).json.breakers.map((b) => b.provider);
    assert.deepEqual(list, ['conf1', 'conf2', 'local', 'n1', 'n2', 'n3']);
    // Known names, configured or not, keep working.
    assert.equal((await acquire(vg, 'n2')).status, 200);
    assert.equal((await acquire(vg, 'conf2')).status, 200);
  });

  it('concurrent creation stops exactly at max_count', async () => {
    // max_count is already reached: a burst of new names creates nothing.
    const all = await Promise.all(Array.from({ length: 20 }, (_, i) => acquire(vg, `burst${i}`)));
    for (const r of all) assertError(r, 429, 'breaker_limit', 'burst');
    assert.equal((await req(vg, 'GET', '/v1/breakers')).json.breakers.length, 6, 'two configured, local, three created');
  });
});

describe('breaker settings in --check-config', () => {
  const dir = tempDir('voxgate-brk-cfg-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const check = (cfg) => {
    const f = join(dir, `c${n++}.json`);
    writeFileSync(f, JSON.stringify(cfg));
    return spawnSync(BIN, ['--check-config', f], { encoding: 'utf8', env: { PATH: process.env.PATH } });
  };

  for (const [cfg, want] of [
    [{ breakers: { failure_threshold: 0 } }, 'breakers.failure_threshold: out of range'],
    [{ breakers: { failure_rate_threshold: 1.5 } }, 'breakers.failure_rate_threshold: out of range'],
    [{ breakers: { failure_rate_threshold: 0 } }, 'breakers.failure_rate_threshold: out of range'],
    [{ breakers: { window_size: 5, min_calls: 6 } }, 'breakers.window_size: must be >= min_calls (6), got 5'],
    [{ breakers: { half_open_max_calls: 1, success_threshold: 2 } }, 'breakers.success_threshold: must be <= half_open_max_calls'],
    [{ breakers: { recovery_timeout_ms: 'soon' } }, 'breakers.recovery_timeout_ms: expected integer'],
    [{ providers: { openai: { breaker: { min_calls: 50 } } } }, 'providers.openai.breaker.window_size: must be >= min_calls (50), got 20'],
    [{ providers: { openai: { breaker: { failure_threshold: 0 } } } }, 'providers.openai.breaker.failure_threshold: out of range'],
    [{ providers: { openai: { breaker: { nope: 1 } } } }, 'providers.openai.breaker.nope: unknown field'],
  ]) {
    it(`refuses ${JSON.stringify(cfg)} naming the field`, () => {
      const r = check(cfg);
      assert.equal(r.status, 2, r.stderr);
      assert.ok(r.stderr.includes(want), `${want} in: ${r.stderr}`);
    });
  }

  it('accepts sensible settings, and env overrides apply', () => {
    const r = check({ breakers: { failure_rate_threshold: 1, window_size: 5, min_calls: 5 }, providers: { a: { breaker: { half_open_max_calls: 3, success_threshold: 3 } } } });
    assert.equal(r.status, 0, r.stderr);
    const p = spawnSync(BIN, ['--print-config'], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD: '0.3', VOXGATE_BREAKERS_MAX_COUNT: '7' },
    });
    assert.equal(p.status, 0, p.stderr);
    const cfg = JSON.parse(p.stdout);
    assert.equal(cfg.breakers.failure_rate_threshold, 0.3);
    assert.equal(cfg.breakers.max_count, 7);
    const bad = spawnSync(BIN, ['--print-config'], { encoding: 'utf8', env: { PATH: process.env.PATH, VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD: '2' } });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /VOXGATE_BREAKERS_FAILURE_RATE_THRESHOLD: out of range/);
  });
});
