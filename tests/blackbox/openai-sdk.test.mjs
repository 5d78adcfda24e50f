// The official openai npm SDK (pinned, 6.x: node 20) with its baseURL
// pointed at voxgate (issue 6, SPEC §5 "OpenAI-compatible"): speech in wav
// and mp3 (passed through from a fake OpenAI-compatible provider),
// transcription in json and text, cached on repeat, and an error surfacing
// as the SDK's APIError with the right status. Also speech and
// transcription with the offline local provider behind voxgate.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError, toFile } from 'openai';
import { startVoxgate, stopVoxgate, cleanup } from './lib.mjs';
import { startFakeOpenAI, speechAudio, transcriptFor, wavFile } from './fakeprov.mjs';

const SLOW = 120000;

async function stopClean(vg) {
  const res = await stopVoxgate(vg);
  cleanup(vg);
  assert.deepEqual(res, { code: 0, signal: null }, `voxgate exit (stderr: ${vg.stderr.slice(-4000)})`);
}

const bytes = async (resp) => Buffer.from(await resp.arrayBuffer());

describe('the openai SDK against voxgate with an OpenAI-compatible provider', { timeout: SLOW }, () => {
  let fake, vg, client;
  before(async () => {
    fake = await startFakeOpenAI({ apiKey: 'sk-upstream' });
    vg = await startVoxgate({
      config: {
        providers: { up: { type: 'openai', base_url: fake.url, api_key_env: 'UP_KEY', max_retries: 0 } },
        models: { 'tts-1': ['up'], 'whisper-1': ['up'] },
      },
      env: { UP_KEY: 'sk-upstream', VOXGATE_API_KEYS: 'vg-client-key' },
    });
    client = new OpenAI({ apiKey: 'vg-client-key', baseURL: `${vg.url}/v1`, maxRetries: 0 });
  });
  after(async () => { await stopClean(vg); await fake.close(); });

  it('audio.speech.create: mp3 and wav pass through, and repeat as cache hits', async () => {
    for (const fmt of ['mp3', 'wav']) {
      const args = { model: 'tts-1', voice: 'alloy', input: `hello from the sdk (${fmt})`, response_format: fmt };
      const r1 = await client.audio.speech.create(args);
      const b1 = await bytes(r1);
      assert.ok(b1.equals(speechAudio(args)), `${fmt}: the provider's bytes`);
      assert.equal(r1.headers.get('content-type'), fmt === 'mp3' ? 'audio/mpeg' : 'audio/wav');
      assert.equal(r1.headers.get('x-cache'), 'MISS');
      const r2 = await client.audio.speech.create(args);
      assert.equal(r2.headers.get('x-cache'), 'HIT');
      assert.ok((await bytes(r2)).equals(b1));
    }
    assert.equal(fake.callsTo('/audio/speech').length, 2, 'one upstream call per distinct request');
    // The SDK's own headers stay with voxgate; voxgate's key goes upstream.
    const up = fake.calls[0].headers;
    assert.equal(up.authorization, 'Bearer sk-upstream');
    assert.equal(up['x-stainless-lang'], undefined);
  });

  it('audio.transcriptions.create: json and text', async () => {
    const audio = wavFile(Buffer.alloc(32000, 3));
    const file = await toFile(audio, 'speech.wav', { type: 'audio/wav' });
    const j = await client.audio.transcriptions.create({ model: 'whisper-1', file, language: 'en' });
    assert.equal(j.text, transcriptFor(audio));
    const t = await client.audio.transcriptions.create({
      model: 'whisper-1', file: await toFile(audio, 'speech.wav', { type: 'audio/wav' }), response_format: 'text',
    });
    assert.equal(typeof t, 'string');
    assert.equal(t.trim(), transcriptFor(audio));
    const again = await client.audio.transcriptions.create({
      model: 'whisper-1', file: await toFile(audio, 'speech.wav', { type: 'audio/wav' }), response_format: 'text',
    });
    assert.equal(again, t);
    assert.equal(fake.callsTo('/audio/transcriptions').length, 2, 'the repeat was a hit');
  });

  it('errors surface as APIError with the right status and code', async () => {
    await assert.rejects(
      client.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: '' }),
      (e) => e instanceof APIError && e.status === 400 && e.code === 'invalid_parameter' &&
        e.type === 'invalid_request_error' && /input/.test(e.message));
    await assert.rejects(
      client.audio.speech.create({ model: 'no-such-model', voice: 'alloy', input: 'hi' }),
      (e) => e instanceof APIError && e.status === 400 && e.code === 'unknown_model');
    fake.behave({ mode: 'fail', status: 503 });
    await assert.rejects(
      client.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'upstream is down' }),
      (e) => e instanceof APIError && e.status === 502 && e.code === 'provider_error');
    fake.behave({ mode: 'ok' });
    const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${vg.url}/v1`, maxRetries: 0 });
    await assert.rejects(bad.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'hi' }),
      (e) => e instanceof APIError && e.status === 401);
  });
});

describe('the openai SDK against voxgate on the local provider', { timeout: SLOW }, () => {
  let vg, client;
  before(async () => {
    vg = await startVoxgate();
    client = new OpenAI({ apiKey: 'unused', baseURL: `${vg.url}/v1`, maxRetries: 0 });
  });
  after(async () => { await stopClean(vg); });

  it('speech from Flite, transcribed back by pocketsphinx', async () => {
    const speech = await client.audio.speech.create({ model: 'tts-1', voice: 'slt', input: 'hello world', response_format: 'wav' });
    const wav = await bytes(speech);
    assert.equal(wav.subarray(0, 4).toString(), 'RIFF');
    const t = await client.audio.transcriptions.create({ model: 'whisper-1', file: await toFile(wav, 'hello.wav', { type: 'audio/wav' }) });
    assert.equal(t.text.toLowerCase().replace(/[^a-z ]/g, '').trim(), 'hello world');
  });
});
