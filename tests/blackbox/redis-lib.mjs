// Helpers for the Redis black-box tests: a real redis-server on a free
// loopback port, started and stopped by the tests (kill, SIGSTOP/SIGCONT,
// restart on the same port), redis-cli calls, and a MONITOR recorder that
// lets a file assert which commands voxgate sent.
import { spawn, execFile } from 'node:child_process';
import { connect } from 'node:net';
import { freePort, sleep } from './lib.mjs';

export function redisCli(port, ...args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--no-raw', ...args],
      { timeout: 10000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
  });
}

// Raw redis-cli output (--raw): values come back unquoted, one per line.
export function redisRaw(port, ...args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--raw', ...args],
      { timeout: 10000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.replace(/\n$/, ''))));
  });
}

function pingOnce(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const t = setTimeout(() => { s.destroy(); resolve(false); }, 300);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { clearTimeout(t); s.destroy(); resolve(d.toString().startsWith('+PONG')); });
    s.on('error', () => { clearTimeout(t); resolve(false); });
  });
}

// Start redis-server; resolves to { port, child, stop(), kill(), pause(), resume(), restart() }.
export async function startRedis(port) {
  port = port || (await freePort());
  const srv = { port, child: null, log: '' };
  srv.spawn = async () => {
    srv.child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
    srv.child.stdout.on('data', (d) => { srv.log += d; });
    srv.child.stderr.on('data', (d) => { srv.log += d; });
    srv.exited = new Promise((r) => srv.child.on('exit', r));
    const deadline = Date.now() + 10000;
    while (!(await pingOnce(port))) {
      if (srv.child.exitCode !== null) throw new Error(`redis-server exited: ${srv.log}`);
      if (Date.now() > deadline) throw new Error(`redis-server did not start: ${srv.log}`);
      await sleep(20);
    }
  };
  srv.kill = async () => {
    if (!srv.child || srv.child.exitCode !== null) return;
    srv.child.kill('SIGCONT');
    srv.child.kill('SIGKILL');
    await srv.exited;
  };
  srv.pause = () => srv.child.kill('SIGSTOP');
  srv.resume = () => srv.child.kill('SIGCONT');
  srv.restart = async () => { await srv.kill(); await srv.spawn(); };
  srv.stop = srv.kill;
  srv.url = `redis://127.0.0.1:${port}`;
  await srv.spawn();
  return srv;
}

// Record every command Redis receives until stop() resolves to the lines.
export async function monitor(port) {
  const child = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'monitor'],
    { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const deadline = Date.now() + 5000;
  while (!out.includes('OK') && Date.now() < deadline) await sleep(10);
  return {
    child,
    lines: () => out.split('\n').filter(Boolean),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
      return out.split('\n').filter(Boolean);
    },
  };
}

// Commands voxgate must never send: whole-keyspace operations.
export const FORBIDDEN = /"(keys|flushdb|flushall)"/i;

// Time one async call; resolves to [result, ms].
export async function timed(fn) {
  const t0 = Date.now();
  const r = await fn();
  return [r, Date.now() - t0];
}
