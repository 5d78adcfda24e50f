// Shared harness for the black-box suite: start the built voxgate binary
// on a free loopback port with a temporary data_dir, wait until it
// answers, collect its JSON log lines, and stop it (SIGTERM or SIGKILL).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';

export const BIN = process.env.VOXGATE_BIN || new URL('../../build/voxgate', import.meta.url).pathname;

export function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tempDir(prefix = 'voxgate-bb-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Start voxgate. opts: { config (object), env (object), dataDir, port, args }
export async function startVoxgate(opts = {}) {
  const dataDir = opts.dataDir || tempDir();
  const port = opts.port || (await freePort());
  const args = [...(opts.args || [])];
  let cfgPath;
  if (opts.config) {
    cfgPath = join(dataDir, '..', `voxgate-${port}-${Date.now()}.json`);
    writeFileSync(cfgPath, JSON.stringify(opts.config));
    args.push('--config', cfgPath);
  }
  const env = {
    ...process.env,
    VOXGATE_LISTEN: `127.0.0.1:${port}`,
    VOXGATE_DATA_DIR: dataDir,
    VOXGATE_LOG_LEVEL: 'debug',
    ...(opts.env || {}),
  };
  const child = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const vg = {
    child, port, dataDir, cfgPath,
    url: `http://127.0.0.1:${port}`,
    lines: [], stderr: '', exited: null,
    logs() { return this.lines.map((l) => { try { return JSON.parse(l); } catch { return { unparsable: l }; } }); },
  };
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { vg.lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
  child.stderr.on('data', (d) => { vg.stderr += d.toString(); });
  vg.exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => {
    vg.exited = { code, signal }; resolve(vg.exited);
  }));
  const deadline = Date.now() + 15000;
  for (;;) {
    if (vg.exited) throw new Error(`voxgate exited early ${JSON.stringify(vg.exited)}: ${vg.stderr}`);
    try {
      const r = await fetch(`${vg.url}/health`);
      if (r.status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`voxgate did not start: ${vg.stderr}`); }
    await sleep(25);
  }
  return vg;
}

// Graceful stop; resolves to {code, signal}. Fails loudly on a timeout.
export async function stopVoxgate(vg, signal = 'SIGTERM', timeoutMs = 20000) {
  if (vg.exited) return vg.exited;
  vg.child.kill(signal);
  const t = setTimeout(() => vg.child.kill('SIGKILL'), timeoutMs);
  const res = await vg.exitPromise;
  clearTimeout(t);
  return res;
}

export function cleanup(vg) {
  if (vg && vg.dataDir) rmSync(vg.dataDir, { recursive: true, force: true });
  if (vg && vg.cfgPath) rmSync(vg.cfgPath, { force: true });
}

// Wait until predicate(logs) is true or fail after timeoutMs.
export async function waitForLog(vg, pred, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = vg.logs().find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error('log line not seen');
    await sleep(10);
  }
}

// Send raw bytes over TCP and collect the whole reply until the server
// closes or timeoutMs passes. Returns { raw, status, headers, body, closed }.
export function rawRequest(port, chunks, { timeoutMs = 3000, gapMs = 0 } = {}) {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const parts = [];
    let closed = false;
    const finish = () => {
      const raw = Buffer.concat(parts).toString('latin1');
      const [head, ...rest] = raw.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const status = Number((lines[0] || '').split(' ')[1]) || 0;
      const headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ raw, status, headers, body: rest.join('\r\n\r\n'), closed });
    };
    const timer = setTimeout(() => { sock.destroy(); finish(); }, timeoutMs);
    sock.on('data', (d) => parts.push(d));
    sock.on('close', () => { closed = true; clearTimeout(timer); finish(); });
    sock.on('error', () => {});
    sock.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (sock.destroyed) break;
        sock.write(c);
        if (gapMs) await sleep(gapMs);
      }
    });
  });
}

export function hex64(seed) {
  return sha256(String(seed));
}

// Query string with %20 for spaces (never '+'); undefined values left out.
export function qs(params) {
  return Object.entries(params)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

// A voxgate's peak and current resident memory (VmHWM, VmRSS of
// /proc/<pid>/status), in bytes.
export function memOf(vg) {
  const st = readFileSync(`/proc/${vg.child.pid}/status`, 'utf8');
  const f = (n) => Number(st.match(new RegExp(`^${n}:\\s+(\\d+) kB`, 'm'))[1]) * 1024;
  return { hwm: f('VmHWM'), rss: f('VmRSS') };
}

// One request to a started voxgate; the body is read whole and parsed as
// JSON when it is JSON. Returns { status, headers, buf, text, json }.
export async function req(vg, method, path, { body, headers = {} } = {}) {
  const r = await fetch(new URL(path, vg.url), { method, body, headers });
  const buf = Buffer.from(await r.arrayBuffer());
  let json;
  try { json = JSON.parse(buf.toString('utf8')); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, buf, text: buf.toString('utf8'), json };
}

// fetch(url) with the body read as text and parsed as JSON when it is.
export async function getJson(url, init) {
  const res = await fetch(url, init);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { res, status: res.status, headers: res.headers, text, json };
}

// A multipart/form-data request body: fields (an array value repeats the
// field) and, when given, the audio as the `file` part.
let formSeq = 0;
export function multipart(fields, file, filename = 'audio.wav', type = 'audio/wav') {
  const boundary = `----vgform${Date.now()}${++formSeq}`;
  const parts = [];
  for (const [k, v] of Object.entries(fields))
    for (const one of [].concat(v))
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${one}\r\n`));
  if (file)
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n`),
      file, Buffer.from('\r\n'));
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` } };
}
