// SPEC §7 "gateway overhead on a miss <= 200 us p50 over calling the
// provider directly": the fake OpenAI-compatible provider of the black-box
// suite answers /v1/audio/speech; the same client sends N distinct
// requests to it directly, then N distinct misses through voxgate
// (/v1/audio/speech with the fake as the only provider: validate, L1 and
// L2 lookups, single-flight, the call on the engine thread, storing audio
// and metadata, the answer). One request at a time over keep-alive, so the
// figures are latencies, not throughput. Run by scripts/bench.sh.
// Usage: node scripts/bench-miss.mjs VOXGATE_BIN [N]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeOpenAI } from '../tests/blackbox/fakeprov.mjs';

const bin = process.argv[2];
const N = Number(process.argv[3] || 2000);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function post(port, path, body) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const rq = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve({ status: res.statusCode, us: Number(process.hrtime.bigint() - t0) / 1000 }));
    });
    rq.on('error', reject);
    rq.end(body);
  });
}

const pct = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };

async function series(port, label) {
  const out = [];
  for (let i = 0; i < N; i++) {
    const body = JSON.stringify({ model: 'tts-1', voice: 'alloy', input: `${label} sentence number ${i} of the miss bench` });
    const r = await post(port, '/v1/audio/speech', body);
    if (r.status !== 200) throw new Error(`${label}: status ${r.status}`);
    out.push(r.us);
  }
  return out;
}

const fake = await startFakeOpenAI();
const dir = mkdtempSync(join(tmpdir(), 'vg-miss-'));
const port = 18090;
writeFileSync(join(dir, 'cfg.json'), JSON.stringify({
  providers: { fake: { type: 'openai', base_url: fake.url, max_retries: 0 } },
}));
const vg = spawn(bin, ['--config', join(dir, 'cfg.json')], {
  env: { ...process.env, VOXGATE_LISTEN: `127.0.0.1:${port}`, VOXGATE_DATA_DIR: join(dir, 'data'),
    VOXGATE_LOG_LEVEL: 'warn', VOXGATE_THREADS: '1' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
for (let i = 0; i < 200; i++) {
  try { if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break; } catch { /* starting */ }
  await new Promise((r) => setTimeout(r, 25));
}
try {
  await series(fake.port, 'warm-direct');
  await series(port, 'warm-voxgate');
  const direct = await series(fake.port, 'direct');
  const via = await series(port, 'voxgate');
  const d50 = pct(direct, 0.5), v50 = pct(via, 0.5);
  console.log(`miss p50: provider direct ${d50.toFixed(0)} us, through voxgate ${v50.toFixed(0)} us, ` +
    `p99 ${pct(direct, 0.99).toFixed(0)} / ${pct(via, 0.99).toFixed(0)} us`);
  console.log(`miss overhead p50 = ${(v50 - d50).toFixed(0)} us (target <= 200); ${N} sequential distinct requests each`);
} finally {
  vg.kill('SIGTERM');
  await new Promise((r) => vg.on('exit', r));
  await fake.close();
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
}
