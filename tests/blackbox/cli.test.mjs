// Black-box tests of the command line: --version, --help, --check-config,
// --print-config, --list-routes, --help-config, bad arguments, and a
// listen address that is already in use. The binary is spawned directly.
// README "Command line" and docs/configuration.md are the contract.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, freePort, startVoxgate, stopVoxgate, cleanup } from './lib.mjs';

const SAMPLE = fileURLToPath(new URL('../../docker/voxgate.json', import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'voxgate-cli-'));
after(() => rmSync(TMP, { recursive: true, force: true }));

// The environment without any VOXGATE_* variable of the caller.
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VOXGATE_')) env[k] = v;
  return { ...env, ...extra };
}

function run(args, env = {}) {
  const p = spawnSync(BIN, args, { env: cleanEnv(env), encoding: 'utf8', timeout: 30000, cwd: TMP });
  return { code: p.status, signal: p.signal, stdout: p.stdout, stderr: p.stderr };
}

let n = 0;
function cfgFile(content) {
  const f = join(TMP, `cfg-${n++}.json`);
  writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  return f;
}

// Spawn the server; resolve with its exit, or with {timedOut} (killed).
function serveUntilExit(env, timeoutMs = 15000) {
  return new Promise((resolve) => {
    const child = spawn(BIN, [], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'], cwd: TMP });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => { child.kill('SIGKILL'); }, timeoutMs);
    let timedOut = false;
    const t2 = setTimeout(() => { timedOut = true; }, timeoutMs - 50);
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      clearTimeout(t2);
      resolve({ code, signal, stdout, stderr, timedOut: timedOut || signal === 'SIGKILL' });
    });
  });
}

describe('--version, --help, bad arguments', () => {
  it('--version prints "voxgate X.Y.Z" and exits 0', () => {
    const r = run(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^voxgate \d+\.\d+\.\d+\n$/);
  });

  it('--help exits 0 and mentions --config and --check-config', () => {
    const r = run(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--config\b/);
    assert.match(r.stdout, /--check-config\b/);
    assert.match(r.stdout, /--print-config\b/);
    assert.match(r.stdout, /--version\b/);
  });

  it('an unknown argument → exit 2 with a message naming it', () => {
    const r = run(['--bogus-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--bogus-flag/);
    assert.equal(r.stdout, '', 'nothing on stdout');
  });

  it('a flag missing its value → exit 2', () => {
    assert.equal(run(['--config']).code, 2);
    assert.equal(run(['--check-config']).code, 2);
  });

  it('a positional argument → exit 2', () => {
    assert.equal(run(['serve']).code, 2);
  });
});

describe('--check-config', () => {
  it('accepts docker/voxgate.json (exit 0)', () => {
    const r = run(['--check-config', SAMPLE]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('accepts an empty object and a partial file', () => {
    assert.equal(run(['--check-config', cfgFile({})]).code, 0);
    assert.equal(run(['--check-config', cfgFile({ limits: { max_body_bytes: 1000 } })]).code, 0);
  });

  const bad = [
    ['an unknown nested field', { limits: { bogus: 1 } }, 'limits.bogus: unknown field'],
    ['an unknown top-level field', { bogus: true }, 'bogus: unknown field'],
    ['a dotted key', { 'cache.prefix': 'x' }, 'cache.prefix: unknown field'],
    ['a string for an integer', { cache: { l1: { max_bytes: 'big' } } }, 'cache.l1.max_bytes: expected integer'],
    ['a fraction for an integer', { threads: 1.5 }, 'threads: expected integer'],
    ['a string for a boolean', { metrics_public: 'yes' }, 'metrics_public: expected boolean'],
    ['a number for an object', { limits: 5 }, 'limits: expected object'],
    ['an integer out of range', { cache: { l1: { shards: 0 } } }, 'cache.l1.shards: out of range'],
    ['a bad enum', { log_level: 'loud' }, 'log_level: expected one of'],
    ['a bad listen address', { listen: 'nope' }, 'listen: expected host:port'],
  ];
  for (const [name, doc, msg] of bad) {
    it(`rejects ${name} with exit 2 naming the field ("${msg}")`, () => {
      const r = run(['--check-config', cfgFile(doc)]);
      assert.equal(r.code, 2, `exit code (stdout: ${r.stdout}, stderr: ${r.stderr})`);
      assert.ok(r.stderr.includes(msg), `stderr names the field: ${JSON.stringify(r.stderr)}`);
      // the message starts with the path (after an optional "voxgate: ")
      const path = msg.split(':')[0];
      assert.match(r.stderr, new RegExp(`(^|: )${path.replace(/\./g, '\\.')}:`, 'm'));
    });
  }

  it('rejects invalid JSON with exit 2', () => {
    const r = run(['--check-config', cfgFile('{"limits": {"max_body_bytes": 5,}')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid JSON/);
  });

  it('rejects a file that is not a JSON object, and a missing file', () => {
    assert.equal(run(['--check-config', cfgFile('[1,2]')]).code, 2);
    const r = run(['--check-config', join(TMP, 'does-not-exist.json')]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.length > 0, 'a message on stderr');
  });

  it('rejects a bad environment value with exit 2 naming the variable', () => {
    for (const v of ['abc', '-5', '10MB', '1.5']) {
      const r = run(['--check-config', SAMPLE], { VOXGATE_LIMITS_MAX_BODY_BYTES: v });
      assert.equal(r.code, 2, `${v}: ${r.stderr}`);
      assert.match(r.stderr, /VOXGATE_LIMITS_MAX_BODY_BYTES/, `${v}: ${r.stderr}`);
    }
    const b = run(['--check-config', SAMPLE], { VOXGATE_METRICS_PUBLIC: 'maybe' });
    assert.equal(b.code, 2);
    assert.match(b.stderr, /VOXGATE_METRICS_PUBLIC/);
  });

  it('checks what only a provider type knows, as a start would (exit 2 naming the field)', () => {
    const cases = [
      [{ ya: { type: 'yandex', api_key_env: 'VG_CLI_KEY', auth: 'bogus' } }, /providers\.ya\.auth/],
      [{ ya: { type: 'yandex', api_key_env: 'VG_CLI_KEY', folder_id: 'b1g' } }, /providers\.ya\.folder_id/],
      [{ el: { type: 'elevenlabs', api_key_env: 'VG_CLI_KEY', voice: '...' } }, /providers\.el\.voice/],
      [{ oa: { type: 'openai', api_key_env: 'VG_CLI_UNSET_KEY' } }, /providers\.oa\.api_key_env/],
    ];
    for (const [providers, want] of cases) {
      const f = join(TMP, `prov-${Math.random().toString(16).slice(2)}.json`);
      writeFileSync(f, JSON.stringify({ providers }));
      const r = run(['--check-config', f], { VG_CLI_KEY: 'k' });
      assert.equal(r.code, 2, `${JSON.stringify(providers)}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, want);
    }
    const ok = join(TMP, 'prov-ok.json');
    writeFileSync(ok, JSON.stringify({ providers: { ya: { type: 'yandex', api_key_env: 'VG_CLI_KEY', auth: 'iam', folder_id: 'b1g' } } }));
    assert.equal(run(['--check-config', ok], { VG_CLI_KEY: 'k' }).code, 0);
  });

  it('a bad environment value also stops the server from starting', () => {
    const r = run([], { VOXGATE_LIMITS_MAX_BODY_BYTES: 'abc', VOXGATE_DATA_DIR: join(TMP, 'never') });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /VOXGATE_LIMITS_MAX_BODY_BYTES/);
  });
});

describe('--print-config', () => {
  it('prints the effective configuration as JSON, with env overrides applied', () => {
    const r = run(['--print-config'], { VOXGATE_CACHE_L1_MAX_BYTES: '12345', VOXGATE_CACHE_L1_MAX_ITEM_BYTES: '1000', VOXGATE_LIMITS_IDLE_TIMEOUT_S: '7' });
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(r.stdout);
    assert.equal(cfg.cache.l1.max_bytes, 12345);
    assert.equal(cfg.cache.l1.max_item_bytes, 1000);
    assert.equal(cfg.limits.idle_timeout_s, 7);
  });

  it('env overrides the file', () => {
    const f = cfgFile({ limits: { max_body_bytes: 5000, max_tts_chars: 10 } });
    const r = run(['--print-config', '--config', f], { VOXGATE_LIMITS_MAX_BODY_BYTES: '6000' });
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(r.stdout);
    assert.equal(cfg.limits.max_body_bytes, 6000);
    assert.equal(cfg.limits.max_tts_chars, 10);
  });

  it('without a file matches docker/voxgate.json (every option at its default)', () => {
    const r = run(['--print-config']);
    assert.equal(r.code, 0, r.stderr);
    const sample = JSON.parse(spawnSync('cat', [SAMPLE], { encoding: 'utf8' }).stdout);
    assert.deepEqual(JSON.parse(r.stdout), sample);
  });

  it('never prints secrets', () => {
    const r = run(['--print-config'], { VOXGATE_API_KEYS: 'secretvalue', VOXGATE_ADMIN_KEYS: 'adminsecretvalue' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes('secretvalue'), 'API key absent');
    assert.ok(!r.stdout.includes('adminsecretvalue'), 'admin key absent');
    assert.ok(!r.stderr.includes('secretvalue'));
    const cfg = JSON.parse(r.stdout);
    assert.equal(cfg.api_keys_env, 'VOXGATE_API_KEYS');
  });

  it('its output is itself a valid configuration file', () => {
    const r = run(['--print-config'], { VOXGATE_CACHE_PREFIX: 'roundtrip' });
    assert.equal(r.code, 0, r.stderr);
    const c = run(['--check-config', cfgFile(r.stdout)]);
    assert.equal(c.code, 0, c.stderr);
  });
});

describe('--list-routes and --help-config', () => {
  it('--list-routes lists every METHOD and path', () => {
    const r = run(['--list-routes']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    for (const want of ['GET /health', 'GET /ready', 'GET /stats', 'GET /metrics', 'GET /v1/cache/stt', 'PUT /v1/cache/stt', 'DELETE /v1/cache']) {
      assert.ok(lines.includes(want), `${want} listed: ${r.stdout}`);
    }
    for (const l of lines) assert.match(l, /^(GET|HEAD|PUT|POST|DELETE|PATCH|OPTIONS) \/\S*$/);
  });

  it('--help-config names options and their environment variables', () => {
    const r = run(['--help-config']);
    assert.equal(r.code, 0, r.stderr);
    for (const w of ['limits.max_body_bytes', 'VOXGATE_LIMITS_MAX_BODY_BYTES', 'cache.l1.max_bytes', 'VOXGATE_CACHE_L1_MAX_BYTES', 'VOXGATE_LISTEN']) {
      assert.ok(r.stdout.includes(w), `${w} in --help-config`);
    }
  });
});

describe('listen address already in use', () => {
  it('held by another process → exit non-zero with a clear message', async () => {
    const holder = createServer();
    const port = await new Promise((res) => holder.listen(0, '127.0.0.1', () => res(holder.address().port)));
    const dataDir = join(TMP, `inuse-${port}`);
    try {
      const r = await serveUntilExit({ VOXGATE_LISTEN: `127.0.0.1:${port}`, VOXGATE_DATA_DIR: dataDir });
      assert.equal(r.timedOut, false, 'voxgate exits instead of serving');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /in use|address already|EADDRINUSE|cannot (bind|listen|start)/i);
      assert.ok(r.stderr.includes(String(port)), `the address is named: ${r.stderr}`);
    } finally {
      holder.close();
    }
  });

  it('held by another voxgate → the second one exits non-zero', async () => {
    const port = await freePort();
    const first = await startVoxgate({ port });
    try {
      const r = await serveUntilExit({ VOXGATE_LISTEN: `127.0.0.1:${port}`, VOXGATE_DATA_DIR: join(TMP, `second-${port}`) }, 8000);
      assert.equal(r.timedOut, false, `the second voxgate must not serve on a port in use (stdout: ${r.stdout.slice(0, 400)})`);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /in use|address already|EADDRINUSE|cannot (bind|listen|start)/i);
    } finally {
      const res = await stopVoxgate(first);
      cleanup(first);
      assert.deepEqual(res, { code: 0, signal: null }, first.stderr.slice(-4000));
    }
  });
});
