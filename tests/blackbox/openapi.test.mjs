// Route parity between openapi/openapi.yaml and the server (SPEC §8: "a
// test that every route the server answers is in the OpenAPI document and
// vice versa"). Fails when either side drifts:
//   - the set of "METHOD path" in the document equals `voxgate --list-routes`;
//   - every documented operation answers over HTTP (not 404 not_found, not
//     405), with a status the document lists, the headers it lists, and a
//     JSON body that matches the documented schema;
//   - every method a path does not document is 405 with an Allow header of
//     exactly the documented methods;
//   - documented query parameters are accepted, others refused;
//   - the documented security (open / API key / admin key) holds;
//   - every error body matches the document's Error schema.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { parse } from 'yaml';
import { BIN, startVoxgate, stopVoxgate, cleanup } from './lib.mjs';

// ASan builds are many times slower: every bound here is generous, and
// nothing is timed.
const SLOW = 180000;

const DOC_FILE = new URL('../../openapi/openapi.yaml', import.meta.url);
const doc = parse(readFileSync(DOC_FILE, 'utf8'));

const OAS_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const PROBE_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'];

// ---- the document ----

function deref(node) {
  let n = node;
  for (let i = 0; n && typeof n === 'object' && typeof n.$ref === 'string'; i++) {
    assert.ok(i < 32, `$ref loop at ${n.$ref}`);
    assert.ok(n.$ref.startsWith('#/'), `only local $refs are supported: ${n.$ref}`);
    n = n.$ref.slice(2).split('/')
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((o, k) => (o == null ? undefined : o[k]), doc);
    assert.ok(n !== undefined, `unresolved $ref ${node.$ref}`);
  }
  return n;
}

// Every documented operation: { method: 'GET', path, op, params }.
function operations() {
  const out = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const m of OAS_METHODS) {
      if (!item[m]) continue;
      const op = item[m];
      const params = [...(item.parameters || []), ...(op.parameters || [])].map(deref);
      out.push({ method: m.toUpperCase(), path, op, params });
    }
  }
  return out;
}

function documentedMethods(path) {
  const item = doc.paths[path];
  return OAS_METHODS.filter((m) => item[m]).map((m) => m.toUpperCase());
}

function security(op) {
  return op.security !== undefined ? op.security : doc.security || [];
}
const isOpen = (op) => security(op).length === 0 || security(op).some((r) => Object.keys(r).length === 0);
const needsAdmin = (op) => !isOpen(op) && security(op).every((r) => 'adminKey' in r);

// ---- a small JSON Schema validator (the keywords the document uses) ----

function typeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function validate(schemaIn, value, at = '$', errs = []) {
  const s = deref(schemaIn);
  if (s === true || s === undefined || s === null) return errs;
  if (s === false) { errs.push(`${at}: no value allowed`); return errs; }
  const t = typeOf(value);
  if (s.type !== undefined) {
    const types = [].concat(s.type);
    const ok = types.some((x) => x === t || (x === 'number' && t === 'integer'));
    if (!ok) { errs.push(`${at}: expected ${types.join('|')}, got ${t}`); return errs; }
  }
  if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(value)) {
    errs.push(`${at}: expected ${JSON.stringify(s.const)}, got ${JSON.stringify(value)}`);
  }
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    errs.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(s.enum)}`);
  }
  if (t === 'string') {
    if (s.pattern && !new RegExp(s.pattern, 'u').test(value)) errs.push(`${at}: ${JSON.stringify(value)} does not match ${s.pattern}`);
    const len = [...value].length;
    if (s.minLength !== undefined && len < s.minLength) errs.push(`${at}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && len > s.maxLength) errs.push(`${at}: longer than ${s.maxLength}`);
  }
  if (t === 'integer' || t === 'number') {
    if (s.minimum !== undefined && value < s.minimum) errs.push(`${at}: ${value} < ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) errs.push(`${at}: ${value} > ${s.maximum}`);
  }
  if (t === 'object') {
    for (const k of s.required || []) if (!(k in value)) errs.push(`${at}: missing ${k}`);
    const props = s.properties || {};
    for (const [k, v] of Object.entries(value)) {
      if (s.propertyNames) validate(s.propertyNames, k, `${at}{${k}}`, errs);
      if (k in props) validate(props[k], v, `${at}.${k}`, errs);
      else if (s.additionalProperties === false) errs.push(`${at}: unexpected member ${k}`);
      else if (s.additionalProperties && typeof s.additionalProperties === 'object') {
        validate(s.additionalProperties, v, `${at}.${k}`, errs);
      }
    }
  }
  if (t === 'array' && s.items) value.forEach((v, i) => validate(s.items, v, `${at}[${i}]`, errs));
  for (const sub of s.allOf || []) validate(sub, value, at, errs);
  if (s.anyOf && !s.anyOf.some((sub) => validate(sub, value, at).length === 0)) {
    errs.push(`${at}: matches none of anyOf`);
  }
  if (s.oneOf) {
    const n = s.oneOf.filter((sub) => validate(sub, value, at).length === 0).length;
    if (n !== 1) errs.push(`${at}: matches ${n} of oneOf (expected exactly 1): ${JSON.stringify(value).slice(0, 300)}`);
  }
  return errs;
}

function assertSchema(schema, value, what) {
  const errs = validate(schema, value);
  assert.deepEqual(errs, [], `${what} does not match the document: ${errs.join('; ')}`);
}

// ---- sample requests built from the document ----

function sample(schemaIn) {
  const s = deref(schemaIn) || {};
  if (s.examples && s.examples.length) return s.examples[0];
  if ('example' in s) return s.example;
  if ('const' in s) return s.const;
  if (s.enum) return s.enum[0];
  const t = [].concat(s.type || 'string')[0];
  if (t === 'integer' || t === 'number') return s.minimum ?? 1;
  if (t === 'boolean') return true;
  return 'hello';
}

function paramValue(p) {
  return p.example !== undefined ? p.example : sample(p.schema);
}

// A TTS key needs exactly one of text_hash and text, which OpenAPI cannot
// say of query parameters (both are documented as optional): a minimal
// request sends text_hash.
const ONE_OF_REQUIRED = new Set(['text_hash']);

function queryString(params, { all = false } = {}) {
  const q = new URLSearchParams();
  for (const p of params) {
    if (p.in !== 'query' || !(p.required || all || ONE_OF_REQUIRED.has(p.name))) continue;
    q.append(p.name, String(paramValue(p)));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// Half a second of a quiet tone as a real 16 kHz mono WAV: audio any
// provider takes (the local provider transcribes it, as nothing much).
function toneWav() {
  const n = 8000, pcm = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) pcm.writeInt16LE(Math.round(300 * Math.sin(i / 8)), i * 2);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1'); h.writeUInt32LE(36 + pcm.length, 4); h.write('WAVEfmt ', 8, 'latin1');
  h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22); h.writeUInt32LE(16000, 24);
  h.writeUInt32LE(32000, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34);
  h.write('data', 36, 'latin1'); h.writeUInt32LE(pcm.length, 40);
  return Buffer.concat([h, pcm]);
}

// A form with the schema's required fields (their examples) and the audio as `file`.
function formBody(media) {
  const s = deref(media.schema) || {};
  const boundary = 'openapiparity';
  const parts = [];
  for (const name of s.required || []) {
    if (name === 'file') continue;
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${sample(s.properties[name])}\r\n`));
  }
  parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`),
    toneWav(), Buffer.from(`\r\n--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` } };
}

// A body for the operation: the media type's example, else something minimal.
function requestBody(op) {
  const rb = op.requestBody && deref(op.requestBody);
  if (!rb) return {};
  const [mt, media] = Object.entries(rb.content)[0];
  const ctype = mt.includes('*') ? mt.replace('*', 'wav') : mt;
  if (/json/.test(mt)) {
    const ex = media.example !== undefined ? media.example : {};
    return { body: JSON.stringify(ex), headers: { 'Content-Type': ctype } };
  }
  if (mt === 'multipart/form-data') return formBody(media);
  return { body: toneWav(), headers: { 'Content-Type': ctype } };
}

async function send(vg, method, pathAndQuery, { body, headers = {} } = {}) {
  const r = await fetch(new URL(pathAndQuery, vg.url), { method, body, headers });
  const buf = Buffer.from(await r.arrayBuffer());
  let json;
  try { json = JSON.parse(buf.toString('utf8')); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text: buf.toString('utf8'), json, len: buf.length };
}

// The path with each {name} / {name+} replaced by its documented example.
function fillPath(o) {
  return o.path.replace(/\{(\w+)\+?\}/g, (whole, name) => {
    const p = o.params.find((x) => x.in === 'path' && x.name === name);
    return p ? String(paramValue(p)) : whole;
  });
}

// Send the operation's minimal request (required parameters and a body).
function call(vg, o, { headers = {}, all = false, extraQuery = '' } = {}) {
  let q = queryString(o.params, { all });
  if (extraQuery) q += (q ? '&' : '?') + extraQuery;
  const b = o.op.requestBody ? requestBody(o.op) : {};
  return send(vg, o.method, fillPath(o) + q, { body: b.body, headers: { ...(b.headers || {}), ...headers } });
}

// ---- checks of one answer against the document ----

const errorSchema = () => doc.components.schemas.Error;

function assertErrorBody(res, what) {
  assert.ok(res.json, `${what}: error body is JSON: ${res.text.slice(0, 300)}`);
  assertSchema(errorSchema(), res.json, `${what}: error body`);
  assert.equal(res.json.error.request_id, res.headers.get('x-request-id'),
    `${what}: error.request_id equals X-Request-ID`);
}

function mediaFor(content, ctype) {
  if (!content) return undefined;
  if (content[ctype]) return content[ctype];
  const base = (ctype || '').split(';')[0].trim().toLowerCase();
  if (content[base]) return content[base];
  const range = `${base.split('/')[0]}/*`;
  return content[range] || content['*/*'];
}

function headerValue(schemaIn, raw) {
  const s = deref(schemaIn) || {};
  const t = [].concat(s.type || 'string')[0];
  return t === 'integer' || t === 'number' ? Number(raw) : raw;
}

// The status is documented; the documented headers are present and valid;
// a JSON body matches the documented schema; an error body is an Error.
function assertDocumented(o, res, what = `${o.method} ${o.path}`) {
  assert.ok(res.headers.get('x-request-id'), `${what}: X-Request-ID on every response`);
  const entry = o.op.responses[String(res.status)] || o.op.responses.default;
  assert.ok(entry, `${what}: status ${res.status} is not documented (documented: ${Object.keys(o.op.responses).join(', ')}); body ${res.text.slice(0, 300)}`);
  const resp = deref(entry);
  for (const [name, hIn] of Object.entries(resp.headers || {})) {
    const h = deref(hIn);
    const raw = res.headers.get(name);
    assert.ok(raw !== null, `${what} ${res.status}: documented header ${name} is missing`);
    assertSchema(h.schema, headerValue(h.schema, raw), `${what} ${res.status}: header ${name}: ${raw}`);
  }
  const ctype = res.headers.get('content-type');
  if (o.method === 'HEAD') {
    assert.equal(res.len, 0, `${what}: HEAD has no body`);
  } else if (res.status !== 204) {
    const media = mediaFor(resp.content, ctype);
    assert.ok(media, `${what} ${res.status}: Content-Type ${ctype} is not documented (${Object.keys(resp.content || {}).join(', ')})`);
    if (/^application\/json/i.test(ctype || '')) {
      assert.ok(res.json !== undefined, `${what} ${res.status}: body is JSON: ${res.text.slice(0, 300)}`);
      assertSchema(media.schema, res.json, `${what} ${res.status}: body`);
    }
  }
  if (res.status >= 400 && o.method !== 'HEAD') assertErrorBody(res, `${what} ${res.status}`);
}

async function stopAndClean(vg) {
  if (!vg) return;
  try {
    const res = await stopVoxgate(vg);
    assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
  } finally {
    cleanup(vg);
  }
}

// ---- the tests ----

describe('openapi.yaml: the document itself', () => {
  it('is OpenAPI 3.1 with paths, an Error schema and the two security schemes', () => {
    assert.match(String(doc.openapi), /^3\.1\./);
    assert.ok(Object.keys(doc.paths || {}).length > 0, 'paths');
    const err = doc.components.schemas.Error;
    assert.deepEqual(err.required, ['error']);
    assert.deepEqual([...err.properties.error.required].sort(), ['code', 'message', 'request_id']);
    for (const s of ['apiKey', 'adminKey']) {
      const sch = doc.components.securitySchemes[s];
      assert.equal(sch.type, 'http');
      assert.equal(sch.scheme, 'bearer');
    }
  });

  it('every operation has a summary, a description, an operationId and a 4xx answer', () => {
    const ids = new Set();
    for (const o of operations()) {
      const w = `${o.method} ${o.path}`;
      assert.ok(o.op.summary && o.op.description, `${w}: summary and description`);
      assert.ok(o.op.operationId && !ids.has(o.op.operationId), `${w}: unique operationId`);
      ids.add(o.op.operationId);
      assert.ok(Object.keys(o.op.responses).some((s) => /^4/.test(s)), `${w}: a 4xx response`);
    }
  });
});

describe('route parity: openapi.yaml and voxgate --list-routes', () => {
  it('the two sets of "METHOD path" are equal', { timeout: SLOW }, () => {
    const out = execFileSync(BIN, ['--list-routes'], { encoding: 'utf8', timeout: SLOW });
    const server = new Set(out.split('\n').map((l) => l.trim().replace(/\s+/g, ' ')).filter(Boolean));
    const documented = new Set(operations().map((o) => `${o.method} ${o.path}`));
    assert.ok(server.size > 0, `--list-routes printed nothing: ${JSON.stringify(out)}`);
    const onlyServer = [...server].filter((r) => !documented.has(r)).sort();
    const onlyDoc = [...documented].filter((r) => !server.has(r)).sort();
    assert.deepEqual({ onlyServer, onlyDoc }, { onlyServer: [], onlyDoc: [] },
      'routes differ:\n' +
      `  served but not in openapi.yaml: ${onlyServer.join(', ') || '-'}\n` +
      `  in openapi.yaml but not served: ${onlyDoc.join(', ') || '-'}`);
  });
});

describe('route parity over HTTP (no keys configured)', () => {
  let vg;
  before(async () => { vg = await startVoxgate(); }, { timeout: SLOW });
  after(async () => { await stopAndClean(vg); }, { timeout: SLOW });

  it('every documented operation exists and answers as documented', { timeout: SLOW }, async () => {
    for (const o of operations()) {
      const res = await call(vg, o);
      const w = `${o.method} ${o.path}`;
      assert.notEqual(res.status, 405, `${w}: 405 (Allow: ${res.headers.get('allow')})`);
      assert.ok(!(res.status === 404 && res.json?.error?.code === 'not_found'), `${w}: 404 not_found: no such route`);
      assertDocumented(o, res);
    }
  });

  it('a write, then reads, then deletes: every operation succeeds as documented', { timeout: SLOW }, async () => {
    // PUT first, so that GET and HEAD hit (and their hit headers are
    // checked), then the batch, then the deletes.
    const order = { PUT: 0, GET: 1, HEAD: 1, POST: 2, DELETE: 3 };
    const ops = operations().filter((o) => o.path.startsWith('/v1/'))
      .sort((a, b) => order[a.method] - order[b.method]);
    for (const o of ops) {
      const res = await call(vg, o);
      assert.ok(res.status >= 200 && res.status < 300, `${o.method} ${o.path}: ${res.status} ${res.text.slice(0, 300)}`);
      assertDocumented(o, res);
    }
  });

  it('every method a path does not document is 405 with Allow = the documented methods', { timeout: SLOW }, async () => {
    const x405 = doc['x-method-not-allowed'];
    assert.ok(x405, 'the document describes the 405 answer (x-method-not-allowed)');
    for (const path of Object.keys(doc.paths)) {
      const documented = documentedMethods(path);
      for (const m of PROBE_METHODS.filter((x) => !documented.includes(x))) {
        const res = await send(vg, m, path);
        const w = `${m} ${path}`;
        assert.equal(res.status, 405, `${w}: expected 405, got ${res.status} ${res.text.slice(0, 200)}`);
        const allow = (res.headers.get('allow') || '').split(',').map((s) => s.trim()).filter(Boolean);
        assert.deepEqual([...allow].sort(), [...documented].sort(), `${w}: Allow ${res.headers.get('allow')}`);
        assert.equal(new Set(allow).size, allow.length, `${w}: Allow lists each method once`);
        assert.ok(res.headers.get('x-request-id'), `${w}: X-Request-ID`);
        if (m !== 'HEAD') {
          assertErrorBody(res, w);
          assertSchema(deref(x405.content['application/json'].schema), res.json, `${w}: body`);
          assert.equal(res.json.error.code, 'method_not_allowed');
        }
      }
    }
  });

  it('documented query parameters are accepted and undocumented ones refused', { timeout: SLOW }, async () => {
    // Every query name used anywhere in the document, plus one used nowhere.
    const names = new Map([['zz_undocumented', '1']]);
    for (const o of operations()) {
      for (const p of o.params) if (p.in === 'query' && !names.has(p.name)) names.set(p.name, String(paramValue(p)));
    }
    for (const o of operations()) {
      const w = `${o.method} ${o.path}`;
      const withAll = await call(vg, o, { all: true });
      assert.notEqual(withAll.json?.error?.code, 'unknown_parameter', `${w}: a documented parameter is refused: ${withAll.text}`);
      assertDocumented(o, withAll);
      const own = new Set(o.params.filter((p) => p.in === 'query').map((p) => p.name));
      for (const [name, value] of names) {
        if (own.has(name)) continue;
        const extra = await call(vg, o, { extraQuery: `${name}=${encodeURIComponent(value)}` });
        assert.equal(extra.status, 400, `${w}: the undocumented parameter ${name} is accepted (${extra.status})`);
        assertDocumented(o, extra, `${w} with ${name}`);
        if (name === 'zz_undocumented' && o.method !== 'HEAD') assert.equal(extra.json.error.code, 'unknown_parameter');
      }
    }
  });

  it('required query parameters are required', { timeout: SLOW }, async () => {
    for (const o of operations()) {
      for (const p of o.params.filter((x) => x.in === 'query' && x.required)) {
        const rest = o.params.filter((x) => x !== p);
        const b = o.op.requestBody ? requestBody(o.op) : {};
        const res = await send(vg, o.method, o.path + queryString(rest), b);
        const w = `${o.method} ${o.path} without ${p.name}`;
        assert.equal(res.status, 400, `${w}: ${res.status} ${res.text.slice(0, 200)}`);
        assertDocumented(o, res, w);
      }
    }
  });

  it('unknown paths are 404 not_found with an Error body', { timeout: SLOW }, async () => {
    for (const p of ['/nope', '/v1/cache/nope', '/v1', '/health/x']) {
      const res = await send(vg, 'GET', p);
      assert.equal(res.status, 404, p);
      assertErrorBody(res, `GET ${p}`);
      assert.equal(res.json.error.code, 'not_found');
    }
  });
});

describe('documented security holds (keys configured)', () => {
  const USER = 'user-key-openapi';
  const ADMIN = 'admin-key-openapi';
  let vg;
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: USER, VOXGATE_ADMIN_KEYS: ADMIN, VOXGATE_METRICS_PUBLIC: 'false' } });
  }, { timeout: SLOW });
  after(async () => { await stopAndClean(vg); }, { timeout: SLOW });

  it('open operations need no key; others answer 401 with WWW-Authenticate: Bearer', { timeout: SLOW }, async () => {
    for (const o of operations()) {
      const w = `${o.method} ${o.path} without a key`;
      const res = await call(vg, o);
      if (isOpen(o.op)) {
        assert.ok(![401, 403].includes(res.status), `${w}: documented as open, got ${res.status}`);
      } else {
        assert.equal(res.status, 401, `${w}: documented as needing a key, got ${res.status}`);
        assert.equal(res.headers.get('www-authenticate'), 'Bearer', `${w}: WWW-Authenticate`);
      }
      assertDocumented(o, res, w);
      const bad = await call(vg, o, { headers: { Authorization: 'Bearer not-a-key' } });
      if (!isOpen(o.op)) assert.equal(bad.status, 401, `${o.method} ${o.path} with a wrong key`);
      assertDocumented(o, bad, `${o.method} ${o.path} with a wrong key`);
    }
  });

  it('admin operations answer 403 to an API key; the others accept it', { timeout: SLOW }, async () => {
    for (const o of operations()) {
      const w = `${o.method} ${o.path} with an API key`;
      const res = await call(vg, o, { headers: { Authorization: `Bearer ${USER}` } });
      if (needsAdmin(o.op)) assert.equal(res.status, 403, `${w}: documented as admin, got ${res.status}`);
      else assert.ok(![401, 403].includes(res.status), `${w}: got ${res.status} ${res.text.slice(0, 200)}`);
      assertDocumented(o, res, w);
    }
  });

  it('an admin key passes every operation', { timeout: SLOW }, async () => {
    for (const o of operations()) {
      const w = `${o.method} ${o.path} with an admin key`;
      const res = await call(vg, o, { headers: { Authorization: `Bearer ${ADMIN}` } });
      assert.ok(![401, 403].includes(res.status), `${w}: got ${res.status}`);
      assertDocumented(o, res, w);
    }
  });
});

describe('metrics_public opens /stats and /metrics, as documented', () => {
  let vg;
  before(async () => {
    vg = await startVoxgate({ env: { VOXGATE_API_KEYS: 'u', VOXGATE_ADMIN_KEYS: 'a', VOXGATE_METRICS_PUBLIC: 'true' } });
  }, { timeout: SLOW });
  after(async () => { await stopAndClean(vg); }, { timeout: SLOW });

  it('operations whose description names metrics_public need no key', { timeout: SLOW }, async () => {
    const ops = operations().filter((o) => /metrics_public/.test(o.op.description));
    assert.deepEqual(ops.map((o) => `${o.method} ${o.path}`).sort(), ['GET /metrics', 'GET /stats']);
    for (const o of ops) {
      const res = await call(vg, o);
      assert.equal(res.status, 200, `${o.method} ${o.path}: ${res.status}`);
      assertDocumented(o, res);
    }
  });
});
