// Offline checks of docker/Dockerfile, docker/docker-compose.yml and
// .dockerignore. No Docker engine is needed (or used): the image is never
// built here. What is checked:
//  (a) `docker-compose config -q` accepts the compose file (and rejects a
//      broken copy, so the check can fail);
//  (b) the pinned npm linter dockerfile-utils passes on docker/Dockerfile
//      (and fails on a broken one);
//  (c) the voxgate service's environment, as docker-compose resolves it, plus
//      the image's ENV, is accepted by `voxgate --check-config
//      docker/voxgate.json`, takes effect (--print-config), and names only
//      variables voxgate knows. voxgate ignores unknown VOXGATE_* variables
//      (docs/configuration.md, "Typos"), so the names are compared with
//      --help-config here; a misspelt name proves that comparison bites;
//  (d) structure: stages, non-root USER, HEALTHCHECK, runtime packages (no
//      -dev; every library voxgate links or the local provider dlopen()s is
//      shipped), the build context, and the compose services' healthchecks,
//      depends_on conditions, Redis persistence, volumes and bucket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { BIN } from './lib.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOCKERFILE = join(ROOT, 'docker', 'Dockerfile');
const COMPOSE = join(ROOT, 'docker', 'docker-compose.yml');
const SAMPLE = join(ROOT, 'docker', 'voxgate.json');
const DOCKERIGNORE = join(ROOT, '.dockerignore');
const LINTER = fileURLToPath(new URL('./node_modules/.bin/dockerfile-utils', import.meta.url));

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const HAVE_COMPOSE = has('docker-compose');
const COMPOSE_SKIP = HAVE_COMPOSE ? false
  : 'docker-compose is not installed (apt-get install docker-compose; scripts/deps.sh test does)';

// docker-compose with a clean environment, so the file's own ${VAR:-default}
// dev defaults are what is checked, whatever the caller's shell exports.
function compose(args, file = COMPOSE) {
  return spawnSync('docker-compose', ['-f', file, ...args], {
    cwd: ROOT, encoding: 'utf8', timeout: 60000,
    env: { PATH: process.env.PATH, HOME: process.env.HOME || '/tmp', LANG: 'C.UTF-8' },
  });
}

// Without docker-compose, (c) and (d) still run on the file interpolated here
// (${VAR}, ${VAR:-default}, ${VAR-default}, $$ only; every VAR unset).
function interpolate(text) {
  return text.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g,
    (m, _name, def) => (m === '$$' ? '$' : def ?? ''));
}

let resolvedCache;
function resolvedCompose() {
  if (resolvedCache) return resolvedCache;
  if (HAVE_COMPOSE) {
    const r = compose(['config']);
    assert.equal(r.status, 0, `docker-compose config failed:\n${r.stderr}`);
    resolvedCache = parseYaml(r.stdout);
  } else {
    resolvedCache = parseYaml(interpolate(readFileSync(COMPOSE, 'utf8')));
  }
  return resolvedCache;
}

// environment: either a map or a list of KEY=VALUE.
function envOf(service) {
  const e = service.environment || {};
  if (!Array.isArray(e)) {
    return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v == null ? '' : String(v)]));
  }
  return Object.fromEntries(e.map((kv) => {
    const i = kv.indexOf('=');
    return i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)];
  }));
}

// ---- Dockerfile parsing: logical lines (continuations joined), stages ----

function dockerfileInstructions(text) {
  const out = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!cur && /^\s*(#|$)/.test(line)) continue;
    if (cur && /^\s*#/.test(line)) continue; // comment inside a continuation
    if (/\\\s*$/.test(line)) { cur += line.replace(/\\\s*$/, ' '); continue; }
    cur += line;
    const m = cur.trim().match(/^(\S+)\s*(.*)$/s);
    out.push({ op: m[1].toUpperCase(), args: m[2].trim() });
    cur = '';
  }
  if (cur.trim()) throw new Error('Dockerfile ends inside a line continuation');
  return out;
}

function stages(text) {
  const st = [];
  for (const ins of dockerfileInstructions(text)) {
    if (ins.op === 'FROM') {
      const [image, as, name] = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      st.push({ image, name: as && as.toUpperCase() === 'AS' ? name : undefined, ins: [] });
    } else {
      assert.ok(st.length, `${ins.op} before the first FROM`);
      st.at(-1).ins.push(ins);
    }
  }
  return st;
}

// Package names after `apt-get install` in a stage's RUN lines.
function aptInstalled(stage) {
  const pkgs = [];
  for (const { op, args } of stage.ins) {
    if (op !== 'RUN') continue;
    for (const part of args.split(/&&|;|\|\|/)) {
      const m = part.match(/\bapt(?:-get)?\s+(?:\S+\s+)*?install\b(.*)$/s);
      if (!m) continue;
      for (const w of m[1].trim().split(/\s+/)) if (w && !w.startsWith('-')) pkgs.push(w);
    }
  }
  return pkgs;
}

// The build and test package lists of scripts/deps.sh.
function depsLists() {
  const src = readFileSync(join(ROOT, 'scripts', 'deps.sh'), 'utf8');
  const words = (s) => s.replace(/#[^\n]*/g, '').split(/\s+/).filter(Boolean);
  const build = words(src.match(/want=\(([^)]*)\)/s)[1]);
  const test = [...src.matchAll(/want\+=\(([^)]*)\)/gs)].flatMap((m) => words(m[1]));
  return { build, test };
}

// ---- voxgate's own view of its configuration ----

function runVoxgate(args, env) {
  return spawnSync(BIN, args, { encoding: 'utf8', timeout: 30000, env: { PATH: process.env.PATH, ...env } });
}

// Variables of --help-config: concrete names, and templates with <NAME>.
function helpConfigNames() {
  const r = runVoxgate(['--help-config'], {});
  assert.equal(r.status, 0, r.stderr);
  const names = new Set();
  const templates = [];
  for (const line of r.stdout.split('\n')) {
    const [path, env] = line.trim().split(/\s+/);
    if (!env || !env.startsWith('VOXGATE_')) continue;
    if (env.includes('<NAME>')) templates.push({ path, env });
    else names.add(env);
  }
  assert.ok(names.size >= 50 && names.has('VOXGATE_LISTEN') && names.has('VOXGATE_REDIS_URL'),
    `--help-config format not understood (${names.size} names)`);
  return { names, templates };
}

const envKey = (name) => name.toUpperCase().replace(/[^A-Z0-9]/g, '_');

// Every variable name voxgate reads under `env`: the option variables (the
// <NAME> ones only for providers and policies the configuration has, as
// voxgate applies them only then) and the secret variables the *_env options
// name. Returns { known, secrets, printed }.
function knownVariables(env) {
  const { names, templates } = helpConfigNames();
  const r = runVoxgate(['--print-config', '--config', SAMPLE], env);
  assert.equal(r.status, 0, `--print-config: ${r.stderr}`);
  const printed = JSON.parse(r.stdout);
  const known = new Set(names);
  const groups = {
    providers: Object.keys(printed.providers || {}),
    'ratelimit.policies': Object.keys(printed.ratelimit?.policies || {}),
  };
  for (const { path, env: tpl } of templates) {
    const group = path.slice(0, path.indexOf('.<name>'));
    for (const n of groups[group] || []) known.add(tpl.replace('<NAME>', envKey(n)));
  }
  const secrets = new Set();
  (function walk(o) {
    for (const [k, v] of Object.entries(o)) {
      if (v && typeof v === 'object') walk(v);
      else if (k.endsWith('_env') && typeof v === 'string' && v) secrets.add(v);
    }
  })(printed);
  return { known, secrets, printed };
}

// The VOXGATE_* names in env that voxgate would silently ignore.
function unknownNames(env) {
  const { known, secrets } = knownVariables(env);
  return Object.keys(env).filter((k) => k.startsWith('VOXGATE_') && !known.has(k) && !secrets.has(k));
}

// The environment voxgate runs with in the compose stack: the image's ENV,
// then the service's environment.
function imageEnv() {
  const st = stages(readFileSync(DOCKERFILE, 'utf8'));
  const env = {};
  for (const { op, args } of st.at(-1).ins) {
    if (op !== 'ENV') continue;
    for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("([^"]*)"|\S*)/g)) env[m[1]] = m[3] ?? m[2];
  }
  return env;
}
const stackEnv = () => ({ ...imageEnv(), ...envOf(resolvedCompose().services.voxgate) });

// ---- .dockerignore (Docker's rules: root-relative globs, `!` re-includes,
// the last match wins, a matching directory covers what is under it) ----

function globRe(p) {
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '*' && p[i + 1] === '*') {
      i++;
      if (p[i + 1] === '/') { i++; re += '(?:.*/)?'; } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}(?:/.*)?$`);
}

function dockerIgnored(relPath) {
  const rules = readFileSync(DOCKERIGNORE, 'utf8').split('\n').map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const neg = l.startsWith('!');
      const pat = (neg ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
      return { neg, re: globRe(pat) };
    });
  let ignored = false;
  for (const { neg, re } of rules) if (re.test(relPath)) ignored = !neg;
  return ignored;
}

// =====================================================================

test('(a) docker-compose config -q accepts docker/docker-compose.yml', { skip: COMPOSE_SKIP }, () => {
  const r = compose(['config', '-q']);
  assert.equal(r.status, 0, `docker-compose config -q: ${r.stdout}${r.stderr}`);
});

test('(a) docker-compose config -q rejects a broken copy (the check can fail)', { skip: COMPOSE_SKIP }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'voxgate-compose-'));
  try {
    const text = readFileSync(COMPOSE, 'utf8').replace(/context: \.\.\s*$/m, `context: ${ROOT}`);
    for (const [what, broken] of [
      ['misspelt key', text.replace(/^(\s+)environment:/m, '$1enviroment:')],
      ['depends_on an undefined service', text.replace(/^(\s+)createbucket:\n(\s+)condition:/m,
        '$1createbukcet:\n$2condition:')],
    ]) {
      assert.notEqual(broken, text, `could not break the file (${what})`);
      const f = join(dir, 'docker-compose.yml');
      writeFileSync(f, broken);
      const r = compose(['config', '-q'], f);
      assert.notEqual(r.status, 0, `docker-compose accepted a file with a ${what}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('(b) dockerfile-utils lint passes on docker/Dockerfile', () => {
  assert.ok(existsSync(LINTER), `${LINTER} missing: run npm ci in tests/blackbox`);
  const r = spawnSync(LINTER, ['lint', DOCKERFILE], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, `dockerfile-utils lint:\n${r.stdout}${r.stderr}`);
  assert.equal(r.stdout.trim(), '', `dockerfile-utils reported problems:\n${r.stdout}`);
});

test('(b) dockerfile-utils lint fails on a broken Dockerfile (the check can fail)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'voxgate-dockerfile-'));
  try {
    const f = join(dir, 'Dockerfile');
    writeFileSync(f, readFileSync(DOCKERFILE, 'utf8').replace(/^HEALTHCHECK\b/m, 'HEALTHCHEK'));
    const r = spawnSync(LINTER, ['lint', f], { encoding: 'utf8', timeout: 60000 });
    assert.notEqual(r.status, 0, 'the linter accepted an unknown instruction');
    assert.match(r.stdout, /HEALTHCHEK/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('(c) the compose environment passes voxgate --check-config and takes effect', () => {
  const env = stackEnv();
  const r = runVoxgate(['--check-config', SAMPLE], env);
  assert.equal(r.status, 0, `--check-config with the compose environment: ${r.stdout}${r.stderr}`);

  const { printed, secrets } = knownVariables(env);
  assert.equal(printed.listen, '0.0.0.0:8080');
  assert.equal(printed.data_dir, '/data');
  assert.match(printed.redis_url, /^redis:\/\/(:\*\*\*@)?redis:6379(\/\d+)?$/);
  assert.equal(printed.s3.endpoint, 'http://minio:9000');
  assert.equal(printed.s3.path_style, true);
  assert.equal(printed.s3.bucket, env.VOXGATE_S3_BUCKET);
  // --check-config above already insists on the S3 keys; this names the
  // culprit directly when the compose file loses one.
  for (const v of [printed.s3.access_key_env, printed.s3.secret_key_env]) {
    assert.ok(secrets.has(v));
    assert.ok(env[v], `the compose file does not set ${v}, which s3 needs`);
  }
  // Listening on 0.0.0.0 with no key would leave everything open.
  assert.ok(env[printed.api_keys_env], `${printed.api_keys_env} is not set`);
  assert.ok(env[printed.admin_keys_env], `${printed.admin_keys_env} is not set`);
});

test('(c) every VOXGATE_* variable of the compose file is one voxgate knows', () => {
  const env = stackEnv();
  const vox = Object.keys(env).filter((k) => k.startsWith('VOXGATE_'));
  assert.ok(vox.length >= 8, `only ${vox.length} VOXGATE_* variables found`);
  assert.deepEqual(unknownNames(env), []);
});

test('(c) a misspelt variable is caught (VOXGATE_REDIS_ULR)', () => {
  const env = stackEnv();
  const bad = { ...env, VOXGATE_REDIS_ULR: env.VOXGATE_REDIS_URL };
  delete bad.VOXGATE_REDIS_URL;
  // voxgate itself ignores unknown names (documented); whichever way it
  // goes, the name comparison must flag the typo.
  const r = runVoxgate(['--check-config', SAMPLE], bad);
  assert.ok([0, 2].includes(r.status), `unexpected exit ${r.status}: ${r.stderr}`);
  assert.deepEqual(unknownNames(bad), ['VOXGATE_REDIS_ULR']);
  // ... and the redis_url really is lost: the check is not vacuous.
  const printed = JSON.parse(runVoxgate(['--print-config', '--config', SAMPLE], bad).stdout);
  assert.equal(printed.redis_url, '');
});

test('(c) a bad value in the compose environment would be refused (--check-config is real)', () => {
  const r = runVoxgate(['--check-config', SAMPLE], { ...stackEnv(), VOXGATE_S3_PATH_STYLE: 'yes' });
  assert.equal(r.status, 2);
  assert.match(r.stderr + r.stdout, /VOXGATE_S3_PATH_STYLE/);
});

test('(d) Dockerfile: build stage, runtime stage, user, healthcheck, entrypoint', () => {
  const st = stages(readFileSync(DOCKERFILE, 'utf8'));
  assert.ok(st.length >= 2, 'multi-stage build expected');
  const [build, run] = [st[0], st.at(-1)];
  assert.equal(build.image, 'debian:bookworm-slim');
  assert.equal(run.image, 'debian:bookworm-slim', 'the final stage must be FROM debian:bookworm-slim');

  // Build stage: deps.sh's build list (run, or each package named), meson + ninja.
  const buildRuns = build.ins.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  const { build: buildPkgs } = depsLists();
  if (!/scripts\/deps\.sh\s+build\b/.test(buildRuns)) {
    const named = new Set(aptInstalled(build));
    assert.deepEqual(buildPkgs.filter((p) => !named.has(p)), [], 'build packages missing');
  }
  assert.match(buildRuns, /meson setup build\b[^\n&]*--buildtype=release/);
  assert.match(buildRuns, /ninja -C build\b[^\n&]*\bvoxgate\b/);

  // Runtime: the binary from the build stage, a non-root user, /data, 8080.
  const ops = (op) => run.ins.filter((i) => i.op === op);
  assert.ok(ops('COPY').some((i) => new RegExp(`--from=(${build.name}|0)\\b`).test(i.args)
    && /build\/voxgate\b/.test(i.args)), 'COPY --from=<build stage> of build/voxgate');
  const users = ops('USER');
  assert.ok(users.length, 'no USER in the final stage');
  const user = users.at(-1).args.trim();
  assert.ok(!/^(root|0)(:.*)?$/.test(user), `the final USER is root (${user})`);
  assert.ok(ops('EXPOSE').some((i) => /\b8080\b/.test(i.args)), 'EXPOSE 8080');
  const env = imageEnv();
  assert.equal(env.VOXGATE_LISTEN, '0.0.0.0:8080');
  assert.equal(env.VOXGATE_DATA_DIR, '/data');
  assert.ok(ops('VOLUME').some((i) => /\/data\b/.test(i.args)), 'VOLUME /data');
  assert.ok(ops('WORKDIR').some((i) => i.args === '/data'), 'WORKDIR /data');
  const hc = ops('HEALTHCHECK');
  assert.equal(hc.length, 1, 'exactly one HEALTHCHECK in the final stage');
  assert.doesNotMatch(hc[0].args, /^NONE\b/i);
  assert.match(hc[0].args, /\bCMD\b.*(curl|wget).*\/health\b/);
  const ep = ops('ENTRYPOINT');
  assert.ok(ep.length, 'ENTRYPOINT');
  assert.match(ep.at(-1).args, /^\[\s*"[^"]*\/voxgate"/, 'ENTRYPOINT (exec form) runs voxgate');
});

test('(d) Dockerfile: the runtime stage installs only runtime packages, and all of them', () => {
  const st = stages(readFileSync(DOCKERFILE, 'utf8'));
  const pkgs = aptInstalled(st.at(-1));
  assert.ok(pkgs.length, 'no apt-get install in the runtime stage');
  const { build: buildPkgs, test: testPkgs } = depsLists();
  // deps.sh's build list minus its -dev packages is the toolchain (and the
  // pocketsphinx model, which is data the runtime needs too).
  const toolchain = buildPkgs.filter((p) => !/-dev$/.test(p) && p !== 'pocketsphinx-en-us');
  assert.ok(toolchain.includes('meson'), `toolchain from deps.sh: ${toolchain}`);
  const devish = pkgs.filter((p) => /-dev$|-dbg$/.test(p) || toolchain.includes(p)
    || ['gcc', 'clang', 'make', 'cmake'].includes(p) || (testPkgs.includes(p) && p !== 'curl'));
  assert.deepEqual(devish, [], 'build/test packages in the runtime stage');
  const need = ['libmicrohttpd12', 'libcjson1', 'libcurl4', 'libssl3', 'liblmdb0', 'libhiredis0.14',
    'libflite1', 'libespeak-ng1', 'libpocketsphinx3', 'libsphinxbase3', 'pocketsphinx-en-us',
    'ca-certificates'];
  assert.deepEqual(need.filter((p) => !pkgs.includes(p)), [], 'runtime packages missing');
  assert.ok(pkgs.includes('curl') || pkgs.includes('wget'), 'curl or wget for the healthcheck');
  assert.match(st.at(-1).ins.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n'),
    /--no-install-recommends/);
});

// Every shared object the local provider dlopen()s (by soname, in
// src/provider/local.c) and every library voxgate links (DT_NEEDED of the
// binary) belongs to a package the runtime stage installs. Needs dpkg (the
// host's packages tell which package ships a soname); sanitizer runtimes of
// an ASan build are not the image's concern.
test('(d) Dockerfile: the runtime packages ship every linked and dlopen()ed library',
  { skip: has('dpkg') ? false : 'no dpkg on this machine' }, () => {
    const pkgs = new Set(aptInstalled(stages(readFileSync(DOCKERFILE, 'utf8')).at(-1)));
    const base = new Set(['libc6', 'libgcc-s1', 'libstdc++6']); // in debian:bookworm-slim
    const local = readFileSync(join(ROOT, 'src', 'provider', 'local.c'), 'utf8');
    const dlopened = [...new Set([...local.matchAll(/"(lib[A-Za-z0-9_.+-]+\.so(?:\.\d+)+)"/g)].map((m) => m[1]))];
    assert.ok(dlopened.includes('libflite.so.1') && dlopened.includes('libpocketsphinx.so.3')
      && dlopened.includes('libespeak-ng.so.1'), `sonames in local.c: ${dlopened}`);
    let linked = [];
    if (has('readelf')) {
      const r = spawnSync('readelf', ['-d', BIN], { encoding: 'utf8' });
      linked = [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])
        .filter((s) => !/^lib(asan|ubsan|tsan|lsan|hwasan)\.so/.test(s) && !s.startsWith('ld-linux'));
      assert.ok(linked.includes('libmicrohttpd.so.12'), `NEEDED of ${BIN}: ${linked}`);
    }
    const missing = [];
    for (const so of [...dlopened, ...linked]) {
      const r = spawnSync('dpkg', ['-S', `*/${so}`], { encoding: 'utf8' });
      const owners = [...new Set(r.stdout.split('\n')
        .map((l) => l.match(/^([^\s:,]+)(?::[a-z0-9]+)?(?:,[^:]*)?: /)?.[1]).filter(Boolean))];
      if (!owners.length) { missing.push(`${so} (no installed package ships it)`); continue; }
      if (!owners.some((p) => pkgs.has(p) || base.has(p))) missing.push(`${so} (${owners.join(', ')})`);
    }
    assert.deepEqual(missing, [], 'libraries whose package the runtime stage does not install');
  });

test('(d) build context: .dockerignore keeps the tree out, COPY sources stay in', () => {
  for (const p of ['.git', 'build', 'build-asan', 'build-fuzz', 'tests/blackbox/node_modules',
    'tests/blackbox', 'tests/unit', 'voxgate-data', 'docs']) {
    assert.ok(dockerIgnored(p), `${p} is not excluded by .dockerignore`);
  }
  const st = stages(readFileSync(DOCKERFILE, 'utf8'));
  let n = 0;
  for (const s of st) {
    for (const { op, args } of s.ins) {
      if (!['COPY', 'ADD'].includes(op) || /--from=/.test(args)) continue;
      const words = args.split(/\s+/).filter((w) => !w.startsWith('--'));
      for (const src of words.slice(0, -1)) {
        const rel = src.replace(/^\.\/?/, '').replace(/\/+$/, '');
        assert.ok(existsSync(join(ROOT, rel)), `COPY source ${src} does not exist`);
        assert.ok(!dockerIgnored(rel), `COPY source ${src} is excluded by .dockerignore`);
        n++;
      }
    }
  }
  assert.ok(n > 0, 'no COPY from the context');
  // meson.build names tests/bench/bench_breaker.c outside any option: meson
  // setup fails without it, so it has to be in the context.
  if (/tests\/bench\/bench_breaker\.c/.test(readFileSync(join(ROOT, 'meson.build'), 'utf8'))) {
    assert.ok(!dockerIgnored('tests/bench/bench_breaker.c'), 'tests/bench is excluded');
  }
});

test('(d) compose: services, healthchecks, depends_on conditions, persistence, volumes', () => {
  const c = resolvedCompose();
  const raw = parseYaml(readFileSync(COMPOSE, 'utf8'));
  const { voxgate, redis, minio, createbucket } = c.services;
  assert.ok(voxgate && redis && minio && createbucket, 'services voxgate, redis, minio, createbucket');

  // voxgate: built from the repository root with docker/Dockerfile.
  assert.equal(resolve(ROOT, 'docker', raw.services.voxgate.build.context), resolve(ROOT));
  assert.equal(raw.services.voxgate.build.dockerfile, 'docker/Dockerfile');
  const ports = (voxgate.ports || []).map((p) => (typeof p === 'object' ? String(p.target) : String(p)));
  assert.ok(ports.some((p) => /(^|:)8080(\/tcp)?$/.test(p)), `voxgate publishes 8080 (${ports})`);
  assert.ok(voxgate.healthcheck?.test, 'voxgate healthcheck');
  assert.match([].concat(voxgate.healthcheck.test).join(' '), /\/health\b/);
  const env = envOf(voxgate);
  for (const k of ['VOXGATE_REDIS_URL', 'VOXGATE_S3_ENDPOINT', 'VOXGATE_S3_BUCKET', 'VOXGATE_S3_PATH_STYLE']) {
    assert.ok(env[k], `voxgate sets ${k}`);
  }
  assert.match(env.VOXGATE_REDIS_URL, /@redis:6379|\/\/redis:6379/);
  assert.match(env.VOXGATE_S3_ENDPOINT, /^http:\/\/minio:9000$/);
  assert.deepEqual(voxgate.depends_on, {
    redis: { condition: 'service_healthy' },
    minio: { condition: 'service_healthy' },
    createbucket: { condition: 'service_completed_successfully' },
  });
  assert.ok((voxgate.volumes || []).some((v) => /:\/data(:|$)/.test(typeof v === 'string' ? v : `${v.source}:${v.target}`)));

  // redis: 7, AOF persistence, volume, redis-cli ping healthcheck.
  assert.match(redis.image, /^redis:7(\.|$|-)/);
  const cmd = [].concat(redis.command || []).join(' ');
  assert.match(cmd, /--appendonly\s+"?yes"?/, 'redis persistence (appendonly yes)');
  assert.match([].concat(redis.healthcheck?.test || []).join(' '), /redis-cli.*\bping\b/);
  assert.ok((redis.volumes || []).length, 'redis volume');

  // minio: server /data with a console port, volume, healthcheck.
  assert.match(minio.image, /^(quay\.io\/)?minio\/minio:RELEASE\./, 'minio image pinned to a release');
  const mcmd = [].concat(minio.command || []).join(' ');
  assert.match(mcmd, /\bserver \/data\b/);
  assert.match(mcmd, /--console-address/);
  assert.ok(minio.healthcheck?.test, 'minio healthcheck');
  assert.ok((minio.volumes || []).length, 'minio volume');

  // createbucket: one shot (no restart), after a healthy minio, makes
  // voxgate's bucket with voxgate's credentials.
  assert.match(createbucket.image, /^(quay\.io\/)?minio\/mc:RELEASE\./, 'mc image pinned to a release');
  assert.ok([undefined, 'no'].includes(createbucket.restart), 'createbucket must not restart');
  assert.deepEqual(createbucket.depends_on, { minio: { condition: 'service_healthy' } });
  const cb = envOf(createbucket);
  const script = [].concat(createbucket.entrypoint || [], createbucket.command || []).join(' ');
  assert.match(script, /mc mb\b/);
  assert.equal(cb.BUCKET, env.VOXGATE_S3_BUCKET, 'createbucket makes voxgate\'s bucket');
  const mEnv = envOf(minio);
  assert.equal(env.VOXGATE_S3_ACCESS_KEY, mEnv.MINIO_ROOT_USER);
  assert.equal(env.VOXGATE_S3_SECRET_KEY, mEnv.MINIO_ROOT_PASSWORD);
  assert.ok(mEnv.MINIO_ROOT_PASSWORD.length >= 8, 'MinIO needs a password of 8 characters or more');

  // Named volumes, all declared at the top level.
  const declared = Object.keys(raw.volumes || {});
  for (const [name, svc] of Object.entries(raw.services)) {
    for (const v of svc.volumes || []) {
      const src = String(typeof v === 'string' ? v.split(':')[0] : v.source);
      assert.ok(declared.includes(src), `${name}: volume ${src} is not a declared named volume`);
    }
  }
  // No unpinned images.
  for (const [name, svc] of Object.entries(c.services)) {
    if (svc.image && name !== 'voxgate') assert.match(svc.image, /:(?!latest$)[^/]+$/, `${name}: pin a tag`);
  }
});
