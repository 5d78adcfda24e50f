// SPEC §7 "gateway overhead on a miss <= 200 us p50 over calling the
// provider directly": the fake OpenAI-compatible provider of the black-box
// suite answers /v1/audio/speech in a process of its own, as a provider
// would. One client sends N pairs of distinct requests, each pair one
// straight to the fake and one miss through voxgate (/v1/audio/speech
// with the fake as the only provider: validate, L1 and L2 lookups,
// single-flight, the call on the engine thread, storing audio and
// metadata, the answer). Pairs interleave so that drift on the box (the
// fake's garbage collector, other load) falls on both series alike. One
// request at a time over keep-alive, so the figures are latencies, not
// throughput. Run by scripts/bench.sh.
// Usage: node scripts/bench-miss.mjs VOXGATE_BIN [N]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';

const bin = process.argv[2];
const N = Number(process.argv[3] || 2000);
const agents = { direct: new http.Agent({ keepAlive: true, maxSockets: 1 }),
  voxgate: new http.Agent({ keepAlive: true, maxSockets: 1 }) };

function post(port, agent, body) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const rq = http.request({ host: '127.0.0.1', port, path: '/v1/audio/speech', method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve({ status: res.statusCode, us: Number(process.hrtime.bigint() - t0) / 1000 }));
    });
    rq.on('error', reject);
    rq.end(body);
  });
}

const pct = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };

// n pairs; returns the two latency series.
async function pairs(n, label) {
  const out = { direct: [], voxgate: [] };
  for (let i = 0; i < n; i++) {
    for (const [name, port] of [['direct', fakePort], ['voxgate', vgPort]]) {
      // The fake's audio grows with the input (about 640 bytes a
      // character): both series send inputs of the same length, so that
      // they move the same bytes.
      const tag = name === 'direct' ? 'P' : 'V';
      const body = JSON.stringify({ model: 'tts-1', voice: 'alloy', input: `${label} ${tag} sentence number ${i} of the miss bench` });
      const r = await post(port, agents[name], body);
      if (r.status !== 200) throw new Error(`${label} ${name}: status ${r.status}`);
      out[name].push(r.us);
    }
  }
  return out;
}

// The fake in its own process: it prints its port once it listens.
const fakeSrc = `import { startFakeOpenAI } from ${JSON.stringify(new URL('../tests/blackbox/fakeprov.mjs', import.meta.url).href)};
const f = await startFakeOpenAI(); console.log(f.port);`;
const fake = spawn(process.execPath, ['--input-type=module', '-e', fakeSrc], { stdio: ['ignore', 'pipe', 'inherit'] });
const [line] = await once(fake.stdout, 'data');
const fakePort = Number(String(line).trim());
const dir = mkdtempSync(join(tmpdir(), 'vg-miss-'));
const vgPort = 18090;
writeFileSync(join(dir, 'cfg.json'), JSON.stringify({
  providers: { fake: { type: 'openai', base_url: `http://127.0.0.1:${fakePort}/v1`, max_retries: 0 } },
}));
const vg = spawn(bin, ['--config', join(dir, 'cfg.json')], {
  env: { ...process.env, VOXGATE_LISTEN: `127.0.0.1:${vgPort}`, VOXGATE_DATA_DIR: join(dir, 'data'),
    VOXGATE_LOG_LEVEL: 'warn', VOXGATE_THREADS: '1' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
for (let i = 0; i < 200; i++) {
  try { if ((await fetch(`http://127.0.0.1:${vgPort}/health`)).ok) break; } catch { /* starting */ }
  await new Promise((r) => setTimeout(r, 25));
}
try {
  await pairs(Math.min(N, 500), 'warm');
  const { direct, voxgate: via } = await pairs(N, 'run');
  const d50 = pct(direct, 0.5), v50 = pct(via, 0.5);
  console.log(`miss p50: provider direct ${d50.toFixed(0)} us, through voxgate ${v50.toFixed(0)} us, ` +
    `p99 ${pct(direct, 0.99).toFixed(0)} / ${pct(via, 0.99).toFixed(0)} us`);
  console.log(`miss overhead p50 = ${(v50 - d50).toFixed(0)} us (target <= 200); ${N} interleaved pairs of distinct requests`);
} finally {
  vg.kill('SIGTERM');
  fake.kill('SIGTERM');
  const exited = (p) => (p.exitCode !== null || p.signalCode !== null ? null : once(p, 'exit'));
  await Promise.all([exited(vg), exited(fake)]);
  for (const a of Object.values(agents)) a.destroy();
  rmSync(dir, { recursive: true, force: true });
}
