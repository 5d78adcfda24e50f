// Black-box tests of the HTTP core: request ids, JSON errors, routing
// (404/405), auth, size and body limits, slow clients, connection limits,
// keep-alive, graceful shutdown and the JSON access log.
// SPEC §3 and README "HTTP behaviour" are the contract.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startVoxgate, stopVoxgate, cleanup, rawRequest, waitForLog, hex64, getJson, sleep } from './lib.mjs';

const HEX32 = /^[0-9a-f]{32}$/;
const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
// ASan builds are several times slower: every bound here is generous.
const SLOW = 20000;

// ---- helpers (local to this file) ----

function sttQuery(seed, extra = '') {
  return `/v1/cache/stt?provider=bb&language=en&audio_hash=${hex64(seed)}${extra}`;
}

// Parse as many complete HTTP/1.1 responses as `buf` holds (responses
// carry Content-Length; `head` says which ones answer HEAD).
function parseResponses(buf) {
  const out = [];
  let off = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', off, 'latin1');
    if (end < 0) break;
    const head = buf.subarray(off, end).toString('latin1');
    const lines = head.split('\r\n');
    const status = Number((lines[0] || '').split(' ')[1]) || 0;
    const headers = {};
    const headerList = [];
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) {
        const k = l.slice(0, i).toLowerCase();
        const v = l.slice(i + 1).trim();
        headers[k] = v;
        headerList.push([k, v]);
      }
    }
    const len = Number(headers['content-length'] || 0);
    if (buf.length < end + 4 + len) break;
    const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
    out.push({ status, statusLine: lines[0], headers, headerList, body });
    off = end + 4 + len;
  }
  return out;
}

// Raw TCP exchange. Resolves when `expect` complete responses arrived
// (unless waitClose), when the server closes, or after timeoutMs.
// Returns { responses, closed, timedOut, ms, error }.
function exchange(port, chunks, opts = {}) {
  const { expect = 1, timeoutMs = SLOW, gapMs = 0, waitClose = false, localAddress } = opts;
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    let buf = Buffer.alloc(0);
    let closed = false;
    let done = false;
    let error = null;
    const finish = (timedOut = false) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const responses = parseResponses(buf);
      sock.destroy();
      resolve({ responses, closed, timedOut, ms: Date.now() - t0, error, raw: buf.toString('latin1') });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!waitClose && parseResponses(buf).length >= expect) finish();
    });
    sock.on('close', () => { closed = true; finish(); });
    sock.on('error', (e) => { error = e.code || String(e); });
    sock.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (sock.destroyed || done) break;
        sock.write(c);
        if (gapMs) await sleep(gapMs);
      }
    });
  });
}

// Open a TCP connection; resolves to the socket once connected (or
// rejects). The socket records whether the server closed it.
function openSocket(port, localAddress) {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    s.closedByPeer = false;
    s.received = '';
    s.on('data', (d) => { s.received += d.toString('latin1'); });
    s.on('close', () => { s.closedByPeer = true; });
    s.once('error', reject);
    s.once('connect', () => { s.on('error', () => {}); resolve(s); });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

// Every error: JSON {"error":{"code","message","request_id"}} with the
// request id equal to the X-Request-ID header.
function assertError(r, status, code) {
  const headerId = r.headers instanceof Headers ? r.headers.get('x-request-id') : r.headers['x-request-id'];
  const ctype = r.headers instanceof Headers ? r.headers.get('content-type') : r.headers['content-type'];
  const bodyText = r.text !== undefined ? r.text : r.body;
  assert.equal(r.status, status, `status (body: ${bodyText})`);
  assert.match(ctype || '', /^application\/json/, 'error Content-Type');
  const j = JSON.parse(bodyText);
  assert.deepEqual(Object.keys(j), ['error'], `only "error" at top level: ${bodyText}`);
  assert.equal(typeof j.error.code, 'string');
  assert.match(j.error.code, /^[a-z][a-z0-9_]*$/, 'code is snake_case');
  if (code) assert.equal(j.error.code, code);
  assert.equal(typeof j.error.message, 'string');
  assert.ok(j.error.message.length > 0, 'message not empty');
  assert.equal(typeof j.error.request_id, 'string');
  assert.ok(headerId, 'X-Request-ID header present');
  assert.equal(j.error.request_id, headerId, 'request_id equals X-Request-ID');
  return j.error;
}

async function stopAndCheck(vg) {
  if (!vg) return;
  const res = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

function requestLines(vg) {
  return vg.logs().filter((l) => l.msg === 'request');
}

// ---------------------------------------------------------------------

describe('request ids and JSON errors (no keys configured)', () => {
  let vg;
  before(async () => { vg = await startVoxgate(); });
  after(async () => { await stopAndCheck(vg); });

  it('echoes a valid caller id on success, and logs it', async () => {
    const id = 'abc-123.x:y_Z';
    const r = await fetch(`${vg.url}/health`, { headers: { 'X-Request-ID': id } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-request-id'), id);
    await r.text();
    const line = await waitForLog(vg, (l) => l.msg === 'request' && l.request_id === id, 5000);
    assert.equal(line.method, 'GET');
    assert.equal(line.path, '/health');
    assert.equal(line.status, 200);
  });

  it('echoes a valid caller id on errors, in header, body and log', async () => {
    const id = 'err-ID_42:a.b';
    const r = await getJson(`${vg.url}/no/such/route`, { headers: { 'X-Request-ID': id } });
    assert.equal(r.headers.get('x-request-id'), id);
    const e = assertError(r, 404, 'not_found');
    assert.equal(e.request_id, id);
    const line = await waitForLog(vg, (l) => l.msg === 'request' && l.request_id === id, 5000);
    assert.equal(line.status, 404);
    assert.equal(line.path, '/no/such/route');
  });

  it('accepts a 128-character id (the upper bound)', async () => {
    const id = 'a'.repeat(64) + 'Z9._:-'.repeat(10) + 'b'.repeat(4);
    assert.equal(id.length, 128);
    const r = await fetch(`${vg.url}/health`, { headers: { 'X-Request-ID': id } });
    await r.text();
    assert.equal(r.headers.get('x-request-id'), id);
  });

  for (const [name, bad] of [
    ['129 characters', 'a'.repeat(129)],
    ['a space', 'abc def'],
    ['a slash', 'abc/def'],
    ['non-ASCII', 'abc\u00e9'],
  ]) {
    it(`replaces an invalid id (${name}) with a fresh 32-hex id`, async () => {
      const r = await exchange(vg.port, [
        Buffer.from(`GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: ${bad}\r\nConnection: close\r\n\r\n`, 'latin1'),
      ]);
      assert.equal(r.responses.length, 1, r.raw);
      const got = r.responses[0].headers['x-request-id'];
      assert.match(got, HEX32);
      assert.notEqual(got, bad);
      await waitForLog(vg, (l) => l.msg === 'request' && l.request_id === got, 5000);
    });
  }

  it('replaces an empty id with a fresh 32-hex id', async () => {
    const r = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: \r\nConnection: close\r\n\r\n']);
    assert.equal(r.responses.length, 1, r.raw);
    assert.match(r.responses[0].headers['x-request-id'], HEX32);
  });

  it('replaces an invalid id on error responses too', async () => {
    const r = await getJson(`${vg.url}/nope`, { headers: { 'X-Request-ID': 'bad id/with stuff' } });
    const e = assertError(r, 404, 'not_found');
    assert.match(e.request_id, HEX32);
  });

  it('generates unique ids when none is given', async () => {
    const ids = new Set();
    for (let i = 0; i < 40; i++) {
      const r = await fetch(`${vg.url}/health`);
      await r.text();
      const id = r.headers.get('x-request-id');
      assert.match(id, HEX32);
      ids.add(id);
    }
    const par = await Promise.all(Array.from({ length: 20 }, () => fetch(`${vg.url}/health`).then(async (r) => {
      await r.text();
      return r.headers.get('x-request-id');
    })));
    for (const id of par) { assert.match(id, HEX32); ids.add(id); }
    assert.equal(ids.size, 60, 'all generated ids are distinct');
  });

  it('404 for an unknown route', async () => {
    for (const p of ['/nope', '/v1', '/v1/cache/xyz', '/healthz', '/v2/cache/stt']) {
      const r = await getJson(`${vg.url}${p}`);
      assertError(r, 404, 'not_found');
    }
  });

  it('405 with Allow: GET, HEAD for POST /health', async () => {
    const r = await getJson(`${vg.url}/health`, { method: 'POST' });
    assertError(r, 405);
    assert.equal(r.headers.get('allow'), 'GET, HEAD');
  });

  it('405 with Allow listing GET, HEAD, PUT, DELETE for PATCH /v1/cache/stt', async () => {
    const r = await getJson(`${vg.url}${sttQuery('p405')}`, { method: 'PATCH', body: '{}', headers: { 'content-type': 'application/json' } });
    assertError(r, 405);
    const allow = (r.headers.get('allow') || '').split(',').map((s) => s.trim()).sort();
    assert.deepEqual(allow, ['DELETE', 'GET', 'HEAD', 'PUT']);
  });

  it('400 for an unknown or repeated query parameter', async () => {
    assertError(await getJson(`${vg.url}${sttQuery('q1', '&bogus=1')}`), 400);
    assertError(await getJson(`${vg.url}${sttQuery('q2', '&provider=again')}`), 400);
  });

  it('404 cache_miss with X-Cache: MISS for a missing entry', async () => {
    const r = await getJson(`${vg.url}${sttQuery('never-stored')}`);
    assertError(r, 404, 'cache_miss');
    assert.equal(r.headers.get('x-cache'), 'MISS');
  });

  it('415 for an STT PUT with text/plain, and nothing is stored', async () => {
    const q = sttQuery('p415');
    const r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: '{"text":"hi"}' });
    assertError(r, 415);
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
  });

  it('with no keys configured everything is open', async () => {
    const q = sttQuery('open');
    let r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"text":"open"}' });
    assert.equal(r.status, 201, r.text);
    r = await getJson(`${vg.url}${q}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { text: 'open' });
    assert.equal((await getJson(`${vg.url}/stats`)).status, 200);
    assert.equal((await getJson(`${vg.url}/metrics`)).status, 200);
    r = await getJson(`${vg.url}/v1/cache?provider=nobody`, { method: 'DELETE' });
    assert.equal(r.status, 200, r.text);
    assert.equal(typeof r.json.deleted, 'number');
  });
});

describe('auth with API and admin keys', () => {
  let vg;
  const auth = (k) => ({ Authorization: `Bearer ${k}` });
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: 'k1,k2', VOXGATE_ADMIN_KEYS: 'adm', VOXGATE_METRICS_PUBLIC: 'false' } });
  });
  after(async () => { await stopAndCheck(vg); });

  it('/v1/* without a key → 401 with WWW-Authenticate: Bearer', async () => {
    for (const [method, path] of [['GET', sttQuery('a1')], ['PUT', sttQuery('a1')], ['POST', '/v1/cache/batch'], ['DELETE', '/v1/cache?provider=x']]) {
      const init = { method };
      if (method === 'PUT' || method === 'POST') { init.body = '{}'; init.headers = { 'content-type': 'application/json' }; }
      const r = await getJson(`${vg.url}${path}`, init);
      assertError(r, 401);
      assert.match(r.headers.get('www-authenticate') || '', /^Bearer\b/);
    }
  });

  it('a wrong key, or a non-Bearer scheme → 401', async () => {
    for (const h of [auth('k3'), auth('k1x'), auth('k'), auth(''), { Authorization: 'Basic azE6' }, { Authorization: 'k1' }, auth('adm2')]) {
      const r = await getJson(`${vg.url}${sttQuery('a2')}`, { headers: h });
      assertError(r, 401);
      assert.match(r.headers.get('www-authenticate') || '', /^Bearer\b/);
    }
  });

  it('an API key opens /v1/* (miss is a 404, not a 401)', async () => {
    for (const k of ['k1', 'k2']) {
      const r = await getJson(`${vg.url}${sttQuery('a3')}`, { headers: auth(k) });
      assertError(r, 404, 'cache_miss');
    }
    const q = sttQuery('a3put');
    let r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { ...auth('k2'), 'content-type': 'application/json' }, body: '{"text":"x"}' });
    assert.equal(r.status, 201, r.text);
    r = await getJson(`${vg.url}${q}`, { headers: auth('k1') });
    assert.equal(r.status, 200);
  });

  it('an admin key also opens /v1/*', async () => {
    const r = await getJson(`${vg.url}${sttQuery('a3put')}`, { headers: auth('adm') });
    assert.equal(r.status, 200, r.text);
  });

  it('the "Bearer" scheme is case-insensitive', async () => {
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const r = await getJson(`${vg.url}${sttQuery('a3put')}`, { headers: { Authorization: `${scheme} k1` } });
      assert.equal(r.status, 200, `${scheme}: ${r.text}`);
    }
  });

  it('/health and /ready are open', async () => {
    assert.equal((await getJson(`${vg.url}/health`)).status, 200);
    assert.equal((await getJson(`${vg.url}/ready`)).status, 200);
    assert.equal((await getJson(`${vg.url}/health`, { headers: auth('wrong') })).status, 200);
  });

  it('/stats and /metrics: 401 without a key, 403 with an API key, 200 with the admin key', async () => {
    for (const p of ['/stats', '/metrics']) {
      let r = await getJson(`${vg.url}${p}`);
      assertError(r, 401);
      assert.match(r.headers.get('www-authenticate') || '', /^Bearer\b/);
      r = await getJson(`${vg.url}${p}`, { headers: auth('nope') });
      assertError(r, 401);
      r = await getJson(`${vg.url}${p}`, { headers: auth('k1') });
      assertError(r, 403);
      r = await getJson(`${vg.url}${p}`, { headers: auth('adm') });
      assert.equal(r.status, 200, `${p}: ${r.text}`);
    }
  });

  it('DELETE /v1/cache (admin) → 403 with an API key, 200 with the admin key', async () => {
    let r = await getJson(`${vg.url}/v1/cache?provider=x`, { method: 'DELETE', headers: auth('k1') });
    assertError(r, 403);
    r = await getJson(`${vg.url}/v1/cache?provider=x`, { method: 'DELETE', headers: auth('adm') });
    assert.equal(r.status, 200, r.text);
    assert.equal(typeof r.json.deleted, 'number');
  });

  it('a 403 does not delete anything', async () => {
    const q = '/v1/cache/stt?provider=keepme&language=en&audio_hash=' + hex64('keep');
    let r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { ...auth('k1'), 'content-type': 'application/json' }, body: '{"text":"keep"}' });
    assert.equal(r.status, 201);
    r = await getJson(`${vg.url}/v1/cache?provider=keepme`, { method: 'DELETE', headers: auth('k2') });
    assertError(r, 403);
    r = await getJson(`${vg.url}${q}`, { headers: auth('k1') });
    assert.equal(r.status, 200);
  });
});

describe('auth with metrics_public', () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: 'k1', VOXGATE_ADMIN_KEYS: 'adm', VOXGATE_METRICS_PUBLIC: 'true' } });
  });
  after(async () => { await stopAndCheck(vg); });

  it('/stats and /metrics are open without a key', async () => {
    for (const p of ['/stats', '/metrics']) {
      assert.equal((await getJson(`${vg.url}${p}`)).status, 200, p);
      assert.equal((await getJson(`${vg.url}${p}`, { headers: { Authorization: 'Bearer k1' } })).status, 200, p);
    }
  });

  it('/v1/* still needs a key and admin operations still need the admin key', async () => {
    assertError(await getJson(`${vg.url}${sttQuery('mp')}`), 401);
    assertError(await getJson(`${vg.url}/v1/cache?provider=x`, { method: 'DELETE', headers: { Authorization: 'Bearer k1' } }), 403);
  });
});

describe('body, URL and header limits', () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({
      env: {
        VOXGATE_LIMITS_MAX_BODY_BYTES: '1000',
        VOXGATE_LIMITS_MAX_URL_BYTES: '512',
        VOXGATE_LIMITS_MAX_HEADER_BYTES: '2048',
      },
    });
  });
  after(async () => { await stopAndCheck(vg); });

  const putHead = (q, extra) =>
    `PUT ${q} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${extra}\r\n`;
  const jsonOf = (n) => {
    // a JSON document of exactly n bytes
    const s = '{"text":"' + 'x'.repeat(n - 11) + '"}';
    assert.equal(Buffer.byteLength(s), n);
    return s;
  };
  const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;

  it('a body of exactly max_body_bytes is accepted', async () => {
    const q = sttQuery('exact');
    const r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: jsonOf(1000) });
    assert.equal(r.status, 201, r.text);
    assert.equal((await getJson(`${vg.url}${q}`)).status, 200);
  });

  it('Content-Length over the limit → 413 before the body is sent; nothing stored', async () => {
    const q = sttQuery('cl2000');
    const id = 'cl-413-test';
    // Only the headers go out; the body never does.
    const r = await exchange(vg.port, [putHead(q, `Content-Length: 2000\r\nX-Request-ID: ${id}\r\n`)], { timeoutMs: 10000 });
    assert.equal(r.timedOut, false, 'the 413 arrives without the body being sent');
    assert.equal(r.responses.length, 1, r.raw);
    const e = assertError(r.responses[0], 413, 'body_too_large');
    assert.equal(e.request_id, id);
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
  });

  it('Content-Length of max_body_bytes + 1 → 413', async () => {
    const q = sttQuery('cl1001');
    const r = await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: jsonOf(1001) }).catch((e) => ({ fetchError: e }));
    if (r.fetchError) {
      // fetch may see the connection close while it is still sending; fall back to raw
      const rr = await exchange(vg.port, [putHead(q, 'Content-Length: 1001\r\n')]);
      assertError(rr.responses[0], 413, 'body_too_large');
    } else {
      assertError(r, 413, 'body_too_large');
    }
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
  });

  it('a chunked body under the limit is accepted', async () => {
    const q = sttQuery('chunked-ok');
    const doc = '{"text":"chunked"}';
    const r = await exchange(vg.port, [putHead(q, 'Transfer-Encoding: chunked\r\n'), chunk(doc.slice(0, 5)), chunk(doc.slice(5)), '0\r\n\r\n'], { gapMs: 20 });
    assert.equal(r.responses.length, 1, r.raw);
    assert.equal(r.responses[0].status, 201, r.raw);
    const g = await getJson(`${vg.url}${q}`);
    assert.equal(g.status, 200);
    assert.deepEqual(g.json, { text: 'chunked' });
  });

  it('a chunked body passing the limit → 413 JSON, then the connection closes; nothing stored', async () => {
    const q = sttQuery('chunked-big');
    const id = 'chunked-413';
    const piece = '"' + 'a'.repeat(398) + '",';
    const chunks = [putHead(q, `Transfer-Encoding: chunked\r\nX-Request-ID: ${id}\r\n`), chunk('{"text":[')];
    for (let i = 0; i < 6; i++) chunks.push(chunk(piece)); // 2400 bytes > 1000
    chunks.push(chunk('"z"]}'), '0\r\n\r\n');
    const r = await exchange(vg.port, chunks, { gapMs: 30, waitClose: true, timeoutMs: SLOW });
    assert.equal(r.closed, true, 'the server closes the connection');
    assert.equal(r.timedOut, false);
    assert.equal(r.responses.length, 1, `exactly one response: ${r.raw}`);
    const e = assertError(r.responses[0], 413, 'body_too_large');
    assert.equal(e.request_id, id);
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
    const line = await waitForLog(vg, (l) => l.msg === 'request' && l.request_id === id, 5000);
    assert.equal(line.status, 413);
  });

  it('a chunked body with one huge chunk → 413, connection closes', async () => {
    const q = sttQuery('chunked-huge');
    const r = await exchange(vg.port, [putHead(q, 'Transfer-Encoding: chunked\r\n'), chunk('{"text":"' + 'b'.repeat(5000) + '"}'), '0\r\n\r\n'], { waitClose: true });
    assert.equal(r.closed, true);
    assert.equal(r.responses.length, 1, r.raw);
    assertError(r.responses[0], 413, 'body_too_large');
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
  });

  it('a malformed Content-Length is refused (4xx, connection closed) without harm', async () => {
    for (const cl of ['-1', '0x10', '1e5', '99999999999999999999999']) {
      const q = sttQuery(`badcl-${cl}`);
      const r = await exchange(vg.port, [putHead(q, `Content-Length: ${cl}\r\n`)], { waitClose: true, timeoutMs: 10000 });
      assert.equal(r.closed, true, `${cl}: connection closed`);
      assert.equal(r.responses.length, 1, `${cl}: ${r.raw}`);
      assert.ok([400, 413].includes(r.responses[0].status), `${cl}: ${r.raw}`);
      assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
    }
  });

  it('the server keeps serving after the 413s', async () => {
    assert.equal((await getJson(`${vg.url}/health`)).status, 200);
  });

  it('414 with a JSON body for a URL over limits.max_url_bytes', async () => {
    const q = `/health?x=${'a'.repeat(600)}`;
    const r = await exchange(vg.port, [`GET ${q} HTTP/1.1\r\nHost: x\r\n\r\n`]);
    assert.equal(r.responses.length, 1, r.raw);
    assertError(r.responses[0], 414);
    const r2 = await getJson(`${vg.url}${sttQuery('long', '&format=' + 'f'.repeat(600))}`);
    assertError(r2, 414);
  });

  it('431 with a JSON body for headers over limits.max_header_bytes', async () => {
    const big = 'X-Filler-A: ' + 'a'.repeat(1500) + '\r\nX-Filler-B: ' + 'b'.repeat(1500) + '\r\n';
    const r = await exchange(vg.port, [`GET /health HTTP/1.1\r\nHost: x\r\n${big}\r\n`]);
    assert.equal(r.responses.length, 1, r.raw);
    assertError(r.responses[0], 431);
    // also on a body-carrying route: nothing stored
    const q = sttQuery('h431');
    const r2 = await exchange(vg.port, [putHead(q, `${big}Content-Length: 13\r\n`), '{"text":"hi"}']);
    assert.equal(r2.responses.length, 1, r2.raw);
    assertError(r2.responses[0], 431);
    assertError(await getJson(`${vg.url}${q}`), 404, 'cache_miss');
  });

  it('URL and headers just under the limits are served', async () => {
    const r = await exchange(vg.port, [`GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: ${'c'.repeat(1000)}\r\n\r\n`]);
    assert.equal(r.responses[0]?.status, 200, r.raw);
  });
});

describe('slow client (idle_timeout_s = 1)', () => {
  let vg;
  before(async () => { vg = await startVoxgate({ env: { VOXGATE_LIMITS_IDLE_TIMEOUT_S: '1' } }); });
  after(async () => { await stopAndCheck(vg); });

  it('a client that stops mid-body is cut off, nothing is stored, and it is logged', async () => {
    const q = sttQuery('slow');
    const id = 'slow-client-1';
    const r = await exchange(vg.port, [
      `PUT ${q} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nX-Request-ID: ${id}\r\n\r\n`,
      '{"text":"a',
    ], { waitClose: true, timeoutMs: 15000 });
    assert.equal(r.closed, true, 'the server closed the connection');
    assert.ok(r.ms < 15000, `closed after ${r.ms} ms`);
    assert.ok(!r.responses.some((x) => x.status >= 200 && x.status < 300), `no success response: ${r.raw}`);
    // Fresh connections from here on: with a 1 s idle timeout a pooled
    // fetch connection could be closed by the server just as it is reused.
    const g = await exchange(vg.port, [`GET ${q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
    assert.equal(g.responses.length, 1, g.raw);
    assertError(g.responses[0], 404, 'cache_miss');
    const line = await waitForLog(vg, (l) => l.msg === 'request' && l.request_id === id, 5000);
    assert.equal(line.error, 'client_timeout');
    assert.equal(line.path, '/v1/cache/stt');
  });

  it('the server keeps serving other requests', async () => {
    const r = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
    assert.equal(r.responses[0]?.status, 200, r.raw);
  });

  it('an idle keep-alive connection is closed after idle_timeout_s', async () => {
    const s = await openSocket(vg.port);
    s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const deadline = Date.now() + 15000;
    while (!s.closedByPeer) {
      assert.ok(Date.now() < deadline, 'idle connection closed within 15 s');
      await sleep(20);
    }
    assert.equal(parseResponses(Buffer.from(s.received, 'latin1'))[0]?.status, 200);
    s.destroy();
  });
});

describe('connection limits (max_connections_per_ip = 2)', () => {
  let vg;
  // A separate loopback source address, so the harness's own pooled
  // fetch connections from 127.0.0.1 do not count against the limit.
  const SRC = '127.0.0.2';
  before(async () => { vg = await startVoxgate({ env: { VOXGATE_LIMITS_MAX_CONNECTIONS_PER_IP: '2' } }); });
  after(async () => { await stopAndCheck(vg); });

  it('a third connection from one IP gets no successful response; after closing, it works again', async () => {
    const a = await openSocket(vg.port, SRC);
    const b = await openSocket(vg.port, SRC);
    // prove both are accepted: each serves a keep-alive request
    for (const s of [a, b]) {
      s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    }
    const deadline = Date.now() + SLOW;
    while (!(parseResponses(Buffer.from(a.received, 'latin1')).length && parseResponses(Buffer.from(b.received, 'latin1')).length)) {
      assert.ok(Date.now() < deadline, `both sockets answered (a=${a.received} b=${b.received})`);
      await sleep(10);
    }
    assert.equal(parseResponses(Buffer.from(a.received, 'latin1'))[0].status, 200);
    assert.equal(parseResponses(Buffer.from(b.received, 'latin1'))[0].status, 200);

    const third = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\n\r\n'], { localAddress: SRC, waitClose: true, timeoutMs: 10000 });
    assert.ok(!third.responses.some((x) => x.status === 200), `third connection was served: ${third.raw}`);
    assert.ok(third.closed || third.error, 'third connection closed or refused');

    // another IP is not affected
    assert.equal((await getJson(`${vg.url}/health`)).status, 200);

    a.destroy();
    b.destroy();
    let ok = false;
    const until = Date.now() + SLOW;
    while (!ok && Date.now() < until) {
      const r = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], { localAddress: SRC, timeoutMs: 3000 });
      ok = r.responses[0]?.status === 200;
      if (!ok) await sleep(100);
    }
    assert.ok(ok, 'requests from that IP work again after closing the sockets');
  });
});

describe('connection limits (max_connections = 3)', () => {
  let vg;
  before(async () => { vg = await startVoxgate({ env: { VOXGATE_LIMITS_MAX_CONNECTIONS: '3' } }); });
  after(async () => { await stopAndCheck(vg); });

  // Send one keep-alive request: 'served' on a 200, 'refused' when the
  // server closes (or refuses) without one, 'pending' when nothing
  // happened within waitMs (the connection waits in the listen backlog).
  async function probe(src, waitMs) {
    let s;
    try { s = await openSocket(vg.port, src); } catch { return { state: 'refused' }; }
    s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const deadline = Date.now() + waitMs;
    for (;;) {
      const rs = parseResponses(Buffer.from(s.received, 'latin1'));
      if (rs.length) return { state: rs[0].status === 200 ? 'served' : `status ${rs[0].status}`, s };
      if (s.closedByPeer) return { state: 'refused', s };
      if (Date.now() > deadline) return { state: 'pending', s };
      await sleep(10);
    }
  }

  it('never more than max_connections served at once; a waiting or new client is served once slots free', async () => {
    // The harness may hold one pooled keep-alive connection of its own,
    // so 2 or 3 of ours fit; a 4th of ours must never be served while
    // the others are held open.
    const probes = [];
    for (let i = 0; i < 4; i++) {
      const p = await probe('127.0.0.3', 1500);
      probes.push(p);
      if (p.state !== 'served') break;
    }
    const states = probes.map((p) => p.state);
    const served = states.filter((x) => x === 'served').length;
    assert.ok(served <= 3, `at most 3 served at once: ${states}`);
    assert.ok(served >= 2, `the first connections are served: ${states}`);
    const blocked = probes[probes.length - 1];
    assert.ok(['refused', 'pending'].includes(blocked.state), `${states}`);
    for (const p of probes.slice(0, -1)) p.s.destroy();
    if (blocked.state === 'pending') {
      // a queued connection gets its turn (or is closed), it never hangs forever
      const deadline = Date.now() + SLOW;
      while (!parseResponses(Buffer.from(blocked.s.received, 'latin1')).length && !blocked.s.closedByPeer) {
        assert.ok(Date.now() < deadline, 'the queued connection was neither served nor closed');
        await sleep(10);
      }
    }
    blocked.s?.destroy();
    let ok = false;
    const until = Date.now() + SLOW;
    while (!ok && Date.now() < until) {
      const r = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'], { localAddress: '127.0.0.3', timeoutMs: 3000 });
      ok = r.responses[0]?.status === 200;
      if (!ok) await sleep(100);
    }
    assert.ok(ok, 'requests work again after the connections are closed');
  });
});

describe('keep-alive', () => {
  let vg;
  before(async () => { vg = await startVoxgate(); });
  after(async () => { await stopAndCheck(vg); });

  it('two requests on one HTTP/1.1 socket are both answered on it', async () => {
    const s = await openSocket(vg.port);
    s.write('GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: ka-1\r\n\r\n');
    let deadline = Date.now() + SLOW;
    while (parseResponses(Buffer.from(s.received, 'latin1')).length < 1) {
      assert.ok(Date.now() < deadline && !s.closedByPeer, `first answer (${s.received})`);
      await sleep(10);
    }
    const first = parseResponses(Buffer.from(s.received, 'latin1'))[0];
    assert.equal(first.status, 200);
    assert.ok(!/close/i.test(first.headers.connection || ''), 'no Connection: close on a 200 GET');
    assert.equal(first.headers['x-request-id'], 'ka-1');
    await sleep(50);
    assert.equal(s.closedByPeer, false, 'socket still open after the first response');
    s.write('GET /ready HTTP/1.1\r\nHost: x\r\nX-Request-ID: ka-2\r\n\r\n');
    deadline = Date.now() + SLOW;
    while (parseResponses(Buffer.from(s.received, 'latin1')).length < 2) {
      assert.ok(Date.now() < deadline && !s.closedByPeer, `second answer (${s.received})`);
      await sleep(10);
    }
    const second = parseResponses(Buffer.from(s.received, 'latin1'))[1];
    assert.equal(second.status, 200);
    assert.equal(second.headers['x-request-id'], 'ka-2');
    s.destroy();
  });

  it('pipelined requests and a miss (404) keep the connection too', async () => {
    const q = sttQuery('ka-miss');
    const r = await exchange(vg.port, [
      `GET ${q} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n`,
    ], { expect: 2 });
    assert.equal(r.responses.length, 2, r.raw);
    assert.equal(r.responses[0].status, 404);
    assert.equal(r.responses[1].status, 200);
    assert.equal(r.closed, false);
  });
});

describe('graceful shutdown', () => {
  let vg;
  after(() => { if (vg && !vg.exited) vg.child.kill('SIGKILL'); if (vg) cleanup(vg); });

  for (const sig of ['SIGTERM', 'SIGINT']) {
    it(`${sig} with an idle keep-alive connection → exit 0 in time, port closed`, async () => {
      vg = await startVoxgate({ env: { VOXGATE_SHUTDOWN_TIMEOUT_MS: '2000' } });
      const s = await openSocket(vg.port);
      s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      const deadline = Date.now() + SLOW;
      while (parseResponses(Buffer.from(s.received, 'latin1')).length < 1) {
        assert.ok(Date.now() < deadline);
        await sleep(10);
      }
      const t0 = Date.now();
      const res = await stopVoxgate(vg, sig, 2000 + SLOW);
      const ms = Date.now() - t0;
      s.destroy();
      assert.deepEqual(res, { code: 0, signal: null }, `exit (stderr: ${vg.stderr.slice(-4000)})`);
      assert.ok(ms < 2000 + 15000, `exited after ${ms} ms`);
      assert.equal(await canConnect(vg.port), false, 'port closed after exit');
      // logs were flushed: the final lines made it to stdout
      const logs = vg.logs();
      assert.ok(logs.some((l) => l.msg === 'shutting down'), 'a shutdown line was logged');
      assert.ok(logs.some((l) => l.msg === 'stopped'), 'a stopped line was logged');
      cleanup(vg);
      vg = null;
    });
  }

  it('an in-flight request finishes; new connections are refused meanwhile', async () => {
    vg = await startVoxgate({ env: { VOXGATE_SHUTDOWN_TIMEOUT_MS: '10000' } });
    const q = sttQuery('inflight');
    const body = '{"text":"in flight"}';
    const s = await openSocket(vg.port);
    s.write(`PUT ${q} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 8)}`);
    await sleep(300);
    vg.child.kill('SIGTERM');
    await waitForLog(vg, (l) => l.msg === 'shutting down', 10000);
    await sleep(100);
    assert.equal(vg.exited, null, 'still running while a request is in flight');
    const fresh = await exchange(vg.port, ['GET /health HTTP/1.1\r\nHost: x\r\n\r\n'], { waitClose: true, timeoutMs: 3000 });
    assert.ok(!fresh.responses.some((x) => x.status === 200), 'no new requests are accepted after SIGTERM');
    assert.equal(await canConnect(vg.port), false, 'a new connection is refused, not left in the backlog');
    s.write(body.slice(8));
    const deadline = Date.now() + SLOW;
    while (parseResponses(Buffer.from(s.received, 'latin1')).length < 1) {
      assert.ok(Date.now() < deadline, `in-flight answer (${s.received})`);
      await sleep(10);
    }
    assert.equal(parseResponses(Buffer.from(s.received, 'latin1'))[0].status, 201);
    const res = await stopVoxgate(vg, 'SIGTERM', SLOW);
    s.destroy();
    assert.deepEqual(res, { code: 0, signal: null }, vg.stderr.slice(-4000));
    cleanup(vg);
    vg = null;
  });

  it('a request that never completes does not hold shutdown past shutdown_timeout_ms', async () => {
    vg = await startVoxgate({ env: { VOXGATE_SHUTDOWN_TIMEOUT_MS: '1000' } });
    const s = await openSocket(vg.port);
    s.write(`PUT ${sttQuery('stuck')} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"te`);
    await sleep(300);
    const t0 = Date.now();
    const res = await stopVoxgate(vg, 'SIGTERM', 1000 + SLOW);
    const ms = Date.now() - t0;
    s.destroy();
    assert.deepEqual(res, { code: 0, signal: null }, vg.stderr.slice(-4000));
    assert.ok(ms < 1000 + 15000, `exited after ${ms} ms`);
    cleanup(vg);
    vg = null;
  });
});

describe('JSON logs', () => {
  let vg;
  const KEY = 'sekret-key-123';
  const ADMIN = 'adm-sekret-456';
  const MARKER = 'BODYMARKER-7f3c9e';
  const QMARKER = 'QUERYMARKER-19ab';
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: KEY, VOXGATE_ADMIN_KEYS: ADMIN, VOXGATE_LOG_LEVEL: 'info' } });
    const h = { Authorization: `Bearer ${KEY}` };
    const q = sttQuery('logs');
    await getJson(`${vg.url}${q}`, { headers: h, }); // miss
    await getJson(`${vg.url}${q}`, { method: 'PUT', headers: { ...h, 'content-type': 'application/json' }, body: JSON.stringify({ text: MARKER }) });
    await getJson(`${vg.url}${q}`, { headers: h }); // hit
    await getJson(`${vg.url}${q}`, { headers: { Authorization: `Bearer ${KEY}-wrong` } }); // 401
    await getJson(`${vg.url}/v1/cache/tts?provider=bb&language=en&voice=v&text=${QMARKER}`, { method: 'PUT', headers: { ...h, 'content-type': 'audio/wav' }, body: `RIFF${MARKER}` });
    await getJson(`${vg.url}/stats`, { headers: { Authorization: `Bearer ${ADMIN}` } });
    await getJson(`${vg.url}/nope`);
    await sleep(200);
  });
  after(async () => { await stopAndCheck(vg); });

  it('every stdout line is a JSON object with ts, level and msg', () => {
    assert.ok(vg.lines.length >= 8, `lines: ${vg.lines.length}`);
    for (const line of vg.lines) {
      let j;
      assert.doesNotThrow(() => { j = JSON.parse(line); }, `not JSON: ${line}`);
      assert.equal(typeof j, 'object');
      assert.match(j.ts, TS, line);
      assert.ok(['debug', 'info', 'warn', 'error'].includes(j.level), line);
      assert.equal(typeof j.msg, 'string', line);
    }
  });

  it('request lines carry method, path, status, duration_ms, bytes, request_id', async () => {
    const reqs = requestLines(vg);
    assert.ok(reqs.length >= 7, `request lines: ${reqs.length}`);
    for (const l of reqs) {
      assert.equal(typeof l.method, 'string');
      assert.equal(typeof l.path, 'string');
      assert.ok(!l.path.includes('?'), `no query string in path: ${l.path}`);
      assert.equal(typeof l.status, 'number');
      assert.equal(typeof l.duration_ms, 'number');
      assert.ok(l.duration_ms >= 0);
      assert.equal(typeof l.bytes, 'number');
      assert.equal(typeof l.request_id, 'string');
      assert.ok(l.request_id.length > 0);
    }
    const stt = reqs.filter((l) => l.path === '/v1/cache/stt' && l.method === 'GET');
    const statuses = stt.map((l) => l.status);
    assert.ok(statuses.includes(404) && statuses.includes(200) && statuses.includes(401), JSON.stringify(stt));
    const miss = stt.find((l) => l.status === 404);
    const hit = stt.find((l) => l.status === 200);
    assert.equal(miss.cache, 'miss');
    assert.equal(miss.error, 'cache_miss');
    assert.equal(hit.cache, 'hit_l1');
    assert.ok(hit.bytes > 0);
    const nf = reqs.find((l) => l.path === '/nope');
    assert.equal(nf.status, 404);
    assert.equal(nf.error, 'not_found');
  });

  it('the request id of a request appears in its log line', async () => {
    const r = await fetch(`${vg.url}/health`, { headers: { 'X-Request-ID': 'log-id-check' } });
    await r.text();
    const l = await waitForLog(vg, (x) => x.msg === 'request' && x.request_id === 'log-id-check', 5000);
    assert.equal(l.path, '/health');
    const r2 = await fetch(`${vg.url}/health`);
    await r2.text();
    const gen = r2.headers.get('x-request-id');
    await waitForLog(vg, (x) => x.msg === 'request' && x.request_id === gen, 5000);
  });

  it('keys, bodies and query strings are never logged', () => {
    const all = vg.lines.join('\n') + '\n' + vg.stderr;
    assert.ok(!all.includes(KEY), 'API key absent from logs');
    assert.ok(!all.includes(ADMIN), 'admin key absent from logs');
    assert.ok(!all.includes(MARKER), 'request body absent from logs');
    assert.ok(!all.includes(QMARKER), 'query string absent from logs');
    assert.ok(!all.includes(hex64('logs')), 'query values absent from logs');
  });
});

describe('log_level = warn', () => {
  let vg;
  before(async () => { vg = await startVoxgate({ env: { VOXGATE_LOG_LEVEL: 'warn' } }); });
  after(async () => { await stopAndCheck(vg); });

  it('suppresses request lines', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${vg.url}/health`);
      await r.text();
    }
    await (await fetch(`${vg.url}/nope`)).text();
    await sleep(300);
    const logs = vg.logs();
    assert.equal(logs.filter((l) => l.msg === 'request').length, 0, JSON.stringify(logs));
    for (const l of logs) {
      assert.ok(['warn', 'error'].includes(l.level), `only warn/error lines: ${JSON.stringify(l)}`);
    }
  });
});
