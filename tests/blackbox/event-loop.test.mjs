// event_loop (docs/configuration.md): the HTTP threads wait in epoll or in
// poll. Both must serve parked requests (provider calls on the engine
// thread) interleaved with plain ones. That the setting reaches
// libmicrohttpd is read from /proc: in epoll mode every HTTP thread owns
// an epoll set, in poll mode none does, so with 2 threads the process has
// exactly 2 more eventpoll descriptors under epoll. The whole black-box
// suite also runs with poll on the ASan build (scripts/test).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { BIN, startVoxgate, stopVoxgate, cleanup, req, tempDir, waitForLog } from './lib.mjs';
import { startFakeOpenAI, speechAudio } from './fakeprov.mjs';

function epollSets(pid) {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try { return readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[eventpoll]'; } catch { return false; }
  }).length;
}

describe('event_loop epoll and poll', () => {
  let fake;
  const sets = {};
  before(async () => { fake = await startFakeOpenAI(); });
  after(async () => { await fake.close(); });

  for (const loop of ['epoll', 'poll']) {
    it(`${loop}: parked provider calls and plain requests at once, all answered`, async () => {
      const vg = await startVoxgate({
        env: { VOXGATE_EVENT_LOOP: loop, VOXGATE_THREADS: '2', FAKE_KEY: 'k' },
        config: { providers: { fake: { type: 'openai', base_url: fake.url, api_key_env: 'FAKE_KEY', max_retries: 0 } } },
      });
      try {
        // /health can answer before the main thread logs "listening".
        const started = await waitForLog(vg, (l) => l.msg === 'listening');
        assert.equal(started.event_loop, loop);
        sets[loop] = epollSets(vg.child.pid);
        const before = fake.count;
        const inputs = Array.from({ length: 40 }, (_, i) => `${loop} event loop sentence ${i} ${Date.now()}`);
        const misses = inputs.map((input) => req(vg, 'POST', '/v1/audio/speech', {
          body: JSON.stringify({ model: 'tts-1', voice: 'alloy', input }),
          headers: { 'Content-Type': 'application/json' },
        }));
        const plain = Array.from({ length: 40 }, () => req(vg, 'GET', '/health'));
        const got = await Promise.all(misses);
        for (const [i, r] of got.entries()) {
          assert.equal(r.status, 200, r.text);
          assert.deepEqual(r.buf, speechAudio({ model: 'tts-1', voice: 'alloy', input: inputs[i] }));
        }
        for (const r of await Promise.all(plain)) assert.equal(r.status, 200);
        assert.equal(fake.count - before, 40);
      } finally {
        const res = await stopVoxgate(vg);
        cleanup(vg);
        assert.deepEqual(res, { code: 0, signal: null }, vg.stderr.slice(-2000));
      }
    });
  }

  it('epoll gives each of the 2 HTTP threads an epoll set, poll none', () => {
    assert.ok(sets.epoll !== undefined && sets.poll !== undefined, 'both runs measured');
    assert.equal(sets.epoll - sets.poll, 2, JSON.stringify(sets));
  });

  it('an unknown event_loop is refused by --check-config, naming the option', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'cfg.json'), '{}');
    const p = spawnSync(BIN, ['--check-config', join(dir, 'cfg.json')], {
      env: { PATH: process.env.PATH, VOXGATE_EVENT_LOOP: 'select' }, encoding: 'utf8', cwd: dir,
    });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(p.status, 2, p.stdout + p.stderr);
    assert.match(p.stderr, /VOXGATE_EVENT_LOOP: expected one of epoll\|poll/);
  });
});
