// A fake Deepgram for the black-box tests (providers.md §3): voxgate is
// configured with a provider of type "deepgram" whose base_url is fake.url.
// It checks requests the way Deepgram does (Token auth, known query
// options and values, the body's Content-Type, a non-empty raw audio body,
// a {"text"} JSON body for /v1/speak), answers in Deepgram's shapes (both
// error body shapes, dg-request-id), records every request, and can be
// switched to misbehave. Answers are deterministic: listenAnswer() and
// speakAudio() give what a test must see come back through voxgate.
//
//   const dg = await startFakeDeepgram({ apiKey: 'dg-key' });
//   dg.behave({ mode: 'fail', status: 503, failFirst: 1 });  // one 503, then ok
//   dg.behave({ mode: 'rate_limit', retryAfter: 2 });        // 429 + Retry-After
//   modes: ok, fail, rate_limit, quota (402), auth (401), input (400), garbage, hang
import { createServer } from 'node:http';
import { createHash, randomUUID } from 'node:crypto';

export const STT_MODELS = ['nova-3', 'nova-2', 'nova-2-phonecall', 'nova', 'enhanced', 'base', 'whisper-large'];
const BOOL_OPTIONS = ['detect_language', 'punctuate', 'smart_format', 'diarize', 'utterances',
  'paragraphs', 'numerals', 'profanity_filter', 'filler_words', 'multichannel'];
const LISTEN_OPTIONS = new Set(['model', 'language', 'version', 'encoding', 'sample_rate', 'channels',
  'keyterm', 'keywords', 'redact', 'search', 'replace', 'callback', 'tag', 'extra', ...BOOL_OPTIONS]);
const SPEAK_OPTIONS = new Set(['model', 'encoding', 'container', 'sample_rate', 'bit_rate', 'callback', 'tag', 'mip_opt_out']);
// encoding -> the containers and sample rates Deepgram's /v1/speak accepts.
const ENCODINGS = {
  linear16: { containers: ['wav', 'none'], rates: [8000, 16000, 24000, 32000, 48000] },
  mulaw: { containers: ['wav', 'none'], rates: [8000, 16000] },
  alaw: { containers: ['wav', 'none'], rates: [8000, 16000] },
  mp3: { containers: ['none'], rates: [] },
  opus: { containers: ['ogg', 'none'], rates: [] },
  flac: { containers: ['none'], rates: [8000, 16000, 22050, 32000, 48000] },
  aac: { containers: ['none'], rates: [] },
};
const WORDS = ['please', 'call', 'me', 'back', 'tomorrow', 'morning', 'the', 'meeting', 'moved',
  'to', 'friday', 'thanks', 'hello', 'world', 'order', 'number', 'seven', 'is', 'ready'];
const MAX_BODY = 64 << 20;

const sha = (b) => createHash('sha256').update(b).digest();

// ---- deterministic answers ----

// The /v1/listen JSON for this audio: 4-9 words from the audio's hash,
// two sentences, smart_format's punctuated words, 0.3 s per word.
export function listenAnswer(audio, query = {}, requestId = 'dg-req') {
  const h = sha(audio);
  const n = 4 + (h[0] % 6);
  const words = [];
  for (let i = 0; i < n; i++) {
    const word = WORDS[h[i + 1] % WORDS.length];
    const start = Math.round((0.1 + i * 0.3 + (i >= n / 2 ? 1.2 : 0)) * 1000) / 1000;
    const last = i === n - 1 || i === Math.floor(n / 2) - 1;
    let shown = i === 0 || i === Math.floor(n / 2) ? word[0].toUpperCase() + word.slice(1) : word;
    if (last) shown += '.';
    words.push({ word, start, end: Math.round((start + 0.28) * 1000) / 1000, confidence: 0.97, punctuated_word: shown });
  }
  const transcript = words.map((w) => w.punctuated_word).join(' ');
  const channel = { alternatives: [{ transcript, confidence: 0.96, words }] };
  if (query.detect_language === 'true') { channel.detected_language = 'en'; channel.language_confidence = 0.97; }
  return {
    metadata: {
      transaction_key: 'deprecated', request_id: requestId, sha256: h.toString('hex'),
      created: '2026-07-23T08:00:00.000Z', duration: Math.round((words.at(-1).end + 0.5) * 1000) / 1000,
      channels: 1, models: ['2187e11a'],
      model_info: { '2187e11a': { name: `general-${query.model || 'base'}`, version: '2025-01-01.0', arch: query.model || 'base' } },
    },
    results: { channels: [channel] },
  };
}

const HEADERS = { mp3: Buffer.from('ID3\x04\x00\x00', 'latin1'), opus: Buffer.from('OggS\x00\x02', 'latin1'),
  flac: Buffer.from('fLaC', 'latin1'), aac: Buffer.from([0xff, 0xf1, 0x50, 0x80]) };

function wavHeader(len, rate) {
  const b = Buffer.alloc(44);
  b.write('RIFF', 0, 'latin1'); b.writeUInt32LE(36 + len, 4); b.write('WAVEfmt ', 8, 'latin1');
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34);
  b.write('data', 36, 'latin1'); b.writeUInt32LE(len, 40);
  return b;
}

// The audio /v1/speak answers for model, text and the output options;
// not decodable, but with the format's header.
export function speakAudio(model, text, q = {}) {
  const enc = q.encoding || 'mp3';
  const seed = sha(JSON.stringify([model, text, enc, q.container || '', q.sample_rate || '']));
  const body = Buffer.concat(Array.from({ length: 1 + (text.length % 8) }, (_, i) => sha(Buffer.concat([seed, Buffer.from([i])]))));
  if (enc === 'linear16' && (q.container || 'wav') === 'wav') return Buffer.concat([wavHeader(body.length, Number(q.sample_rate || 24000)), body]);
  return HEADERS[enc] ? Buffer.concat([HEADERS[enc], body]) : body;
}

export function speakType(q = {}) {
  const enc = q.encoding || 'mp3';
  if (enc === 'linear16') return (q.container || 'wav') === 'wav' ? 'audio/wav' : `audio/l16;rate=${q.sample_rate || 24000}`;
  return { mp3: 'audio/mpeg', opus: 'audio/ogg', flac: 'audio/flac', aac: 'audio/aac' }[enc] || 'application/octet-stream';
}

// ---- request checks ----

class DgError extends Error {
  constructor(status, body) { super(body.err_msg || body.message); this.status = status; this.body = body; }
}
const badRequest = (msg) => new DgError(400, { err_code: 'Bad Request', err_msg: msg });
const badQuery = (msg) => new DgError(400, { category: 'INVALID_QUERY_PARAMETER', message: msg, details: msg });

function checkQuery(q, allowed) {
  for (const k of Object.keys(q))
    if (!allowed.has(k)) throw badQuery(`Unknown query parameter: ${k}`);
  for (const k of BOOL_OPTIONS)
    if (k in q && q[k] !== 'true' && q[k] !== 'false') throw badQuery(`Invalid value for ${k}: expected true or false`);
}

function checkListen(q, ctype, body) {
  checkQuery(q, LISTEN_OPTIONS);
  if (q.model !== undefined && !STT_MODELS.includes(q.model))
    throw badQuery('No such model/language/tier combination found. Use the /v1/models endpoint to list available models.');
  if (q.language !== undefined && !/^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(q.language))
    throw badQuery('No such model/language/tier combination found.');
  if (/^application\/json/i.test(ctype)) throw badRequest('Bad Request: failed to process audio: corrupt or unsupported data');
  if (!/^(audio|video)\//i.test(ctype) && !/^application\/octet-stream/i.test(ctype))
    throw new DgError(415, { err_code: 'UNSUPPORTED_MEDIA_TYPE', err_msg: `Unsupported Content-Type: ${ctype}` });
  if (body.length === 0) throw badRequest('Bad Request: failed to process audio: corrupt or unsupported data');
}

function checkSpeak(q, ctype, body) {
  checkQuery(q, SPEAK_OPTIONS);
  if (q.model !== undefined && !/^aura-(2-)?[a-z]+-[a-z]{2}$/.test(q.model))
    throw badQuery(`No such model: ${q.model}`);
  const enc = q.encoding || 'mp3';
  const spec = ENCODINGS[enc];
  if (!spec) throw badQuery(`Unsupported encoding: ${enc}`);
  if (q.container !== undefined && !spec.containers.includes(q.container))
    throw badQuery(`Container ${q.container} is not supported with encoding ${enc}`);
  if (q.sample_rate !== undefined && !spec.rates.includes(Number(q.sample_rate)))
    throw badQuery(`Sample rate ${q.sample_rate} is not supported with encoding ${enc}`);
  if (!/^application\/json/i.test(ctype)) throw new DgError(415, { err_code: 'UNSUPPORTED_MEDIA_TYPE', err_msg: 'Content-Type must be application/json' });
  let j;
  try { j = JSON.parse(body.toString('utf8')); } catch { throw new DgError(400, { category: 'INVALID_JSON', message: 'Invalid JSON body', details: 'parse error' }); }
  if (!j || typeof j !== 'object' || typeof j.text !== 'string' || j.text.length === 0)
    throw badRequest('Bad Request: the text field is required');
  const extra = Object.keys(j).filter((k) => k !== 'text');
  if (extra.length) throw badRequest(`Bad Request: unknown field ${extra[0]}`);
  if (j.text.length > 2000) throw new DgError(413, { err_code: 'PAYLOAD_TOO_LARGE', err_msg: 'Text is longer than 2000 characters' });
  return j;
}

// ---- the server ----

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => { n += c.length; if (n <= MAX_BODY) chunks.push(c); });
    req.on('end', () => (n > MAX_BODY ? reject(new DgError(413, { err_code: 'PAYLOAD_TOO_LARGE', err_msg: 'Payload too large' })) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

export async function startFakeDeepgram(opts = {}) {
  let apiKey = opts.apiKey ?? null;
  let behaviour = { mode: 'ok' };
  let failed = 0;
  const held = new Set();

  const fake = {
    calls: [], url: '',
    get count() { return this.calls.length; },
    behave(b = {}) { behaviour = { mode: 'ok', ...b }; failed = 0; return fake; },
    setKey(k) { apiKey = k; return fake; },
    releaseHung() { for (const r of held) r.destroy(); held.clear(); },
    reset() { fake.releaseHung(); fake.calls.length = 0; apiKey = opts.apiKey ?? null; return fake.behave(); },
    close() { fake.releaseHung(); return new Promise((r) => { server.close(() => r()); server.closeAllConnections(); }); },
  };

  function current() {
    if (!behaviour.failFirst) return behaviour;
    if (failed >= behaviour.failFirst) return { mode: 'ok' };
    failed++;
    return behaviour;
  }

  function send(res, status, type, body, headers = {}) {
    if (res.destroyed || res.writableEnded) return;
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  function error(res, status, body, rid, headers = {}) {
    send(res, status, 'application/json', JSON.stringify({ ...body, request_id: rid }), headers);
  }

  function misbehave(res, b, rid, path) {
    switch (b.mode) {
    case 'fail':
      return error(res, b.status || 500, { err_code: 'INTERNAL_SERVER_ERROR', err_msg: 'An internal server error occurred.' }, rid);
    case 'rate_limit':
      return error(res, 429, { err_code: 'TOO_MANY_REQUESTS', err_msg: 'Too many requests. Please try again later.' }, rid,
        b.retryAfter !== undefined ? { 'retry-after': String(b.retryAfter) } : {});
    case 'quota':
      return error(res, 402, { err_code: 'ASR_PAYMENT_REQUIRED', err_msg: 'Project does not have enough credits for this request.' }, rid);
    case 'auth':
      return error(res, 401, { err_code: 'INVALID_AUTH', err_msg: `Invalid credentials. Key ${b.echo || ''} rejected.` }, rid);
    case 'input':
      return error(res, 400, { err_code: 'Bad Request', err_msg: b.message || 'Bad Request: failed to process audio: corrupt or unsupported data' }, rid);
    case 'garbage':
      return path === '/v1/speak'
        ? send(res, 200, 'application/json', JSON.stringify({ note: 'not audio' }))
        : send(res, 200, 'text/html', '<html>maintenance</html>');
    case 'hang':
      held.add(res);
      return undefined;
    default:
      throw new Error(`fake deepgram: unknown mode ${b.mode}`);
    }
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://fake');
    const rid = randomUUID();
    const call = { n: fake.calls.length + 1, method: req.method, path: url.pathname,
      query: Object.fromEntries(url.searchParams), rawQuery: url.search, headers: { ...req.headers }, status: null };
    fake.calls.push(call);
    res.on('close', () => held.delete(res));
    res.setHeader('dg-request-id', rid);
    const body = await readBody(req);
    call.bodyBytes = body.length;
    call.bodySha256 = sha(body).toString('hex');
    if (/^application\/json/i.test(req.headers['content-type'] || '')) {
      try { call.json = JSON.parse(body.toString('utf8')); } catch { /* recorded as is */ }
    }
    const b = current();
    call.behaviour = b.mode;
    if (b.mode !== 'ok') return misbehave(res, b, rid, url.pathname);
    if (apiKey !== null && req.headers.authorization !== `Token ${apiKey}`)
      return error(res, 401, { err_code: 'INVALID_AUTH', err_msg: 'Invalid credentials.' }, rid);
    const ctype = req.headers['content-type'] || '';
    try {
      if (req.method === 'POST' && url.pathname === '/v1/listen') {
        checkListen(call.query, ctype, body);
        return send(res, 200, 'application/json', JSON.stringify(listenAnswer(body, call.query, rid)));
      }
      if (req.method === 'POST' && url.pathname === '/v1/speak') {
        const j = checkSpeak(call.query, ctype, body);
        const q = call.query;
        return send(res, 200, speakType(q), speakAudio(q.model || 'aura-asteria-en', j.text, q),
          { 'dg-model-name': q.model || 'aura-asteria-en', 'dg-char-count': String(j.text.length) });
      }
      return error(res, 404, { err_code: 'NOT_FOUND', err_msg: `No route for ${req.method} ${url.pathname}` }, rid);
    } catch (e) {
      if (!(e instanceof DgError)) throw e;
      return error(res, e.status, e.body, rid);
    }
  }

  const server = createServer((req, res) => handle(req, res).catch((e) => {
    if (!res.headersSent) send(res, 500, 'application/json', JSON.stringify({ err_code: 'INTERNAL_SERVER_ERROR', err_msg: String(e.message) }));
  }));
  await new Promise((r) => server.listen(opts.port || 0, '127.0.0.1', r));
  fake.url = `http://127.0.0.1:${server.address().port}`;
  return fake;
}
