// Black-box tests of durability (SPEC §1: the embedded cache "survives
// restart and kill -9"; §3 graceful shutdown; §4 audio before metadata).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { startVoxgate, stopVoxgate, cleanup, waitForLog, sha256, hex64, qs, req, sleep } from './lib.mjs';


// ---- helpers (local to this file) ----

const sttPath = (k) => `/v1/cache/stt?${qs(k)}`;
const ttsPath = (k) => `/v1/cache/tts?${qs(k)}`;

function assertCleanStderr(vg) {
  assert.doesNotMatch(vg.stderr, /AddressSanitizer|LeakSanitizer|runtime error:/, vg.stderr);
}

// Stop, then start again on the same data_dir; removes the old config file.
async function restart(vg, signal, opts = {}) {
  const st = await stopVoxgate(vg, signal);
  if (signal === 'SIGKILL') assert.equal(st.signal, 'SIGKILL');
  else assert.deepEqual(st, { code: 0, signal: null }, vg.stderr);
  assertCleanStderr(vg);
  const nvg = await startVoxgate({ ...opts, dataDir: vg.dataDir });
  if (vg.cfgPath) rmSync(vg.cfgPath, { force: true });
  return nvg;
}

// Run fn over items with `width` concurrent workers.
async function pool(items, width, fn) {
  let i = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (i < items.length) {
      const it = items[i++];
      await fn(it);
    }
  }));
}

// Check one stored entry: STT byte-exact, TTS audio identical with its sha.
async function readEntry(vg, e) {
  if (e.kind === 'stt') {
    const r = await req(vg, 'GET', sttPath(e.key));
    return { status: r.status, ok: r.status === 200 && r.text === e.body, got: r.text };
  }
  const r = await req(vg, 'GET', ttsPath(e.key));
  const ok = r.status === 200 && sha256(r.buf) === e.sha && r.buf.equals(e.audio) &&
    r.headers.get('content-type') === e.ctype && r.headers.get('etag') === `"${e.sha}"`;
  return { status: r.status, ok, got: `${r.buf.length} bytes sha ${sha256(r.buf)}` };
}

// ---- tests ----

describe('the cache survives kill -9', { timeout: 180000 }, () => {
  let vg;
  after(async () => { if (vg) { await stopVoxgate(vg, 'SIGKILL'); cleanup(vg); } });

  test('entries written before kill -9 are all readable, byte-identical, after a restart', async () => {
    vg = await startVoxgate();
    const entries = [];
    for (let i = 0; i < 20; i++) {
      const key = { provider: 'openai', language: 'en', audio_hash: hex64(`p1-stt-${i}`) };
      const body = `{"i":${i},"big":1234567890123456789${i},  "text":"entry ${i} ✓"}`;
      const r = await req(vg, 'PUT', sttPath(key), { body, headers: { 'Content-Type': 'application/json' } });
      assert.equal(r.status, 201, r.text);
      entries.push({ kind: 'stt', key, body });
    }
    for (let i = 0; i < 10; i++) {
      const key = { provider: 'openai', language: 'en', voice: 'alloy', text_hash: hex64(`p1-tts-${i}`), format: 'wav' };
      const audio = randomBytes(1000 + i * 517);
      const r = await req(vg, 'PUT', ttsPath(key), { body: audio, headers: { 'Content-Type': 'audio/wav' } });
      assert.equal(r.status, 201, r.text);
      entries.push({ kind: 'tts', key, audio, sha: sha256(audio), ctype: 'audio/wav' });
    }
    // A deleted entry stays deleted.
    const gone = entries.pop();
    assert.equal((await req(vg, 'DELETE', ttsPath(gone.key))).status, 204);

    vg = await restart(vg, 'SIGKILL');
    for (const e of entries) {
      const r = await readEntry(vg, e);
      assert.ok(r.ok, `${e.kind} ${JSON.stringify(e.key)}: status ${r.status}, got ${r.got}`);
    }
    assert.equal((await req(vg, 'GET', ttsPath(gone.key))).status, 404, 'deleted entry stays deleted');
    const ready = await req(vg, 'GET', '/ready');
    assert.equal(ready.status, 200, ready.text);

    // And once more, after a second kill, with the first reads having filled L1.
    vg = await restart(vg, 'SIGKILL');
    for (const e of entries) assert.ok((await readEntry(vg, e)).ok, JSON.stringify(e.key));
  });

  test('kill -9 during a stream of writes loses no acknowledged entry', async (t) => {
    const WRITERS = 8;
    const attempted = new Map(); // id -> entry
    const acked = new Set();
    let killed = false;
    let errorsBeforeKill = 0;

    const writer = async (w) => {
      for (let n = 0; !killed; n++) {
        const id = `w${w}-${n}`;
        let e;
        if (n % 3 === 2) {
          const audio = randomBytes(512 + ((w * 7919 + n * 104729) % 8192));
          const key = { provider: 'crash', language: 'en', voice: `v${w}`, text_hash: hex64(`crash-tts-${id}`) };
          e = { kind: 'tts', key, audio, sha: sha256(audio), ctype: n % 2 ? 'audio/wav' : 'audio/mpeg' };
        } else {
          const key = { provider: 'crash', language: 'en', audio_hash: hex64(`crash-stt-${id}`) };
          const body = `{"id":"${id}","n":${n}${'0'.repeat(n % 20)},"pad":"${'x'.repeat((n * 37) % 900)}"}`;
          e = { kind: 'stt', key, body };
        }
        attempted.set(id, e);
        try {
          const r = e.kind === 'stt'
            ? await req(vg, 'PUT', sttPath(e.key), { body: e.body, headers: { 'Content-Type': 'application/json' } })
            : await req(vg, 'PUT', ttsPath(e.key), { body: e.audio, headers: { 'Content-Type': e.ctype } });
          if (r.status === 201) acked.add(id);
          else if (!killed) errorsBeforeKill++;
        } catch {
          if (!killed) errorsBeforeKill++;
          if (killed) return;
        }
      }
    };

    const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
    await sleep(1500);
    killed = true;
    vg.child.kill('SIGKILL'); // mid-stream: writers still have requests in flight
    const st = await vg.exitPromise;
    assert.equal(st.signal, 'SIGKILL');
    await Promise.all(writers);
    assert.equal(errorsBeforeKill, 0, 'no write failed before the kill');
    assert.ok(acked.size > 0, 'some writes were acknowledged');
    const ackedList = [...acked].map((id) => attempted.get(id));
    assert.ok(ackedList.some((e) => e.kind === 'stt') && ackedList.some((e) => e.kind === 'tts'), 'both kinds acknowledged');

    const old = vg;
    vg = await startVoxgate({ dataDir: old.dataDir });
    assertCleanStderr(old);
    const ready = await req(vg, 'GET', '/ready');
    assert.equal(ready.status, 200, ready.text);

    t.diagnostic(`acknowledged ${acked.size} of ${attempted.size} attempted writes`);
    const lost = [];
    const broken = [];
    await pool([...attempted.entries()], 8, async ([id, e]) => {
      const r = await readEntry(vg, e);
      if (acked.has(id)) {
        if (!r.ok) lost.push(`${id} (${e.kind}): status ${r.status}, got ${r.got}`);
      } else if (r.status !== 404 && !r.ok) {
        broken.push(`${id} (${e.kind}, unacknowledged): status ${r.status}, got ${r.got}`);
      }
    });
    assert.deepEqual(lost, [], `acknowledged entries lost or damaged (of ${acked.size})`);
    assert.deepEqual(broken, [], 'unacknowledged entries that exist are intact');

    // The store is still writable and consistent after recovery.
    const key = { provider: 'crash', language: 'en', audio_hash: hex64('after-crash') };
    assert.equal((await req(vg, 'PUT', sttPath(key), { body: '{"after":true}', headers: { 'Content-Type': 'application/json' } })).status, 201);
    assert.equal((await req(vg, 'GET', sttPath(key))).text, '{"after":true}');
    const inv = await req(vg, 'DELETE', '/v1/cache?provider=crash');
    assert.equal(inv.status, 200, inv.text);
    const deleted = JSON.parse(inv.text).deleted;
    assert.ok(deleted >= acked.size + 1 && deleted <= attempted.size + 1, `deleted ${deleted}, acked ${acked.size}, attempted ${attempted.size}`);
  });
});

describe('graceful shutdown', { timeout: 120000 }, () => {
  const vgs = [];
  after(async () => { for (const v of vgs) { await stopVoxgate(v, 'SIGKILL'); cleanup(v); } });

  test('SIGTERM after traffic exits 0 with a "stopped" log line, and data stays', async () => {
    const vg = await startVoxgate();
    vgs.push(vg);
    const sk = { provider: 'openai', language: 'en', audio_hash: hex64('term') };
    const tk = { provider: 'openai', language: 'en', voice: 'alloy', text_hash: hex64('term') };
    const audio = randomBytes(4000);
    const J = { 'Content-Type': 'application/json' };
    assert.equal((await req(vg, 'PUT', sttPath(sk), { body: '{"t":1}', headers: J })).status, 201);
    assert.equal((await req(vg, 'PUT', ttsPath(tk), { body: audio, headers: { 'Content-Type': 'audio/wav' } })).status, 201);
    assert.equal((await req(vg, 'GET', sttPath(sk))).status, 200);
    assert.equal((await req(vg, 'GET', ttsPath(tk))).status, 200);
    assert.equal((await req(vg, 'GET', sttPath({ ...sk, audio_hash: hex64('none') }))).status, 404);
    assert.equal((await req(vg, 'PUT', sttPath(sk), { body: '{bad', headers: J })).status, 400);
    assert.equal((await req(vg, 'POST', '/v1/cache/batch', {
      body: JSON.stringify({ get: [{ kind: 'stt', ...sk }], set: [{ kind: 'stt', ...sk, audio_hash: hex64('b'), result: { x: [1, 2] } }] }),
      headers: J,
    })).status, 200);
    assert.equal((await req(vg, 'GET', '/stats')).status, 200);
    assert.equal((await req(vg, 'GET', '/metrics')).status, 200);
    assert.equal((await req(vg, 'DELETE', '/v1/cache?provider=nobody')).status, 200);

    const st = await stopVoxgate(vg, 'SIGTERM');
    assert.deepEqual(st, { code: 0, signal: null }, `exit status; stderr: ${vg.stderr}`);
    assertCleanStderr(vg);
    const logs = vg.logs();
    assert.ok(logs.some((l) => l.msg === 'stopped'), 'a "stopped" log line');
    assert.ok(logs.every((l) => !l.unparsable), 'every stdout line is JSON');

    const vg2 = await startVoxgate({ dataDir: vg.dataDir });
    vgs.push(vg2);
    assert.equal((await req(vg2, 'GET', sttPath(sk))).text, '{"t":1}');
    assert.ok((await req(vg2, 'GET', ttsPath(tk))).buf.equals(audio));
    const st2 = await stopVoxgate(vg2, 'SIGINT');
    assert.deepEqual(st2, { code: 0, signal: null }, `SIGINT exit status; stderr: ${vg2.stderr}`);
    assertCleanStderr(vg2);
  });

  test('SIGTERM lets an in-flight request finish', async () => {
    const vg = await startVoxgate();
    vgs.push(vg);
    const key = { provider: 'openai', language: 'en', audio_hash: hex64('inflight') };
    const body = '{"inflight":true,"pad":"' + 'y'.repeat(200) + '"}';
    // Expect: 100-continue tells us when the server holds the request.
    const head = `PUT ${sttPath(key)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
    const sock = connect(vg.port, '127.0.0.1');
    const chunks = [];
    let onData = () => {};
    const done = new Promise((resolve) => {
      sock.on('data', (d) => { chunks.push(d); onData(); });
      sock.on('close', resolve);
      sock.on('error', resolve);
    });
    await new Promise((r) => sock.on('connect', r));
    const continued = new Promise((r) => { onData = () => { if (Buffer.concat(chunks).includes('100 Continue')) r(); }; });
    sock.write(head);
    await continued;
    sock.write(body.slice(0, 50));
    vg.child.kill('SIGTERM');
    await waitForLog(vg, (l) => l.msg === 'shutting down', 10000);
    sock.write(body.slice(50));
    await done;
    const raw = Buffer.concat(chunks).toString('latin1');
    assert.match(raw, /HTTP\/1\.1 201 /, `in-flight PUT answered: ${raw}`);
    const st = await vg.exitPromise;
    assert.deepEqual(st, { code: 0, signal: null }, vg.stderr);
    assertCleanStderr(vg);
    assert.ok(vg.logs().some((l) => l.msg === 'stopped' && l.drained === true), 'stopped after draining');

    const vg2 = await startVoxgate({ dataDir: vg.dataDir });
    vgs.push(vg2);
    const g = await req(vg2, 'GET', sttPath(key));
    assert.equal(g.status, 200);
    assert.equal(g.text, body);
  });
});
