// A fake OpenAI-compatible speech provider for the black-box tests:
// voxgate is configured with a provider of type "openai" whose base_url is
// fake.url, and the test steers how the fake answers (delays, errors, 429s,
// hangs, garbage) while it records every request voxgate makes. Answers
// are deterministic, so a test can compute what voxgate must return:
// speechAudio() for /audio/speech, transcriptFor() for /audio/transcriptions.
//
//   const fake = await startFakeOpenAI({ apiKey: 'sk-test' });
//   fake.behave({ mode: 'fail', status: 503, failFirst: 2 });   // 2 × 503, then ok
//   fake.script({ mode: 'rate_limit', retryAfter: 2 }, { mode: 'ok' });
//   ... fake.calls[0].headers['x-request-id'], fake.maxInFlight ...
//   await fake.close();
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';

export const TTS_MODELS = ['tts-1', 'tts-1-hd', 'gpt-4o-mini-tts', 'gpt-4o-mini-tts-2025-12-15'];
export const STT_MODELS = ['whisper-1', 'gpt-4o-transcribe', 'gpt-4o-mini-transcribe',
  'gpt-4o-mini-transcribe-2025-12-15', 'gpt-4o-transcribe-diarize', 'gpt-transcribe'];
export const VOICES = ['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage',
  'shimmer', 'verse', 'marin', 'cedar'];
export const SPEECH_TYPES = {
  mp3: 'audio/mpeg', opus: 'audio/opus', aac: 'audio/aac', flac: 'audio/flac', wav: 'audio/wav', pcm: 'audio/pcm',
};
export const STT_FORMATS = ['json', 'text', 'srt', 'verbose_json', 'vtt'];
const AUDIO_EXTS = ['flac', 'mp3', 'mp4', 'mpeg', 'mpga', 'm4a', 'ogg', 'wav', 'webm'];
const SAMPLE_RATE = 24000;
const MAX_BODY = 64 << 20;
const FIELD_KEEP = 4096; // recorded text fields are cut to this many characters

const sha256 = (b) => createHash('sha256').update(b).digest();
const hex = (b) => sha256(b).toString('hex');

// ---- deterministic outputs ----

// Speech length: grows with the text, shrinks with speed, bounded so a
// 4096-character input stays a small response.
export function speechMs(input, speed = 1) {
  return Math.min(8000, Math.round((120 + 40 * [...input].length) / speed));
}

function pcmTone(seed, ms) {
  const n = Math.round((SAMPLE_RATE * ms) / 1000);
  const freq = 200 + (seed.readUInt16BE(0) % 600);
  const pcm = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++)
    pcm.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * freq * i) / SAMPLE_RATE)), i * 2);
  return pcm;
}

export function wavFile(pcm, rate = SAMPLE_RATE) {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + pcm.length, 4);
  h.write('WAVEfmt ', 8, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);          // PCM
  h.writeUInt16LE(1, 22);          // mono
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);   // byte rate
  h.writeUInt16LE(2, 32);          // block align
  h.writeUInt16LE(16, 34);         // bits per sample
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(pcm.length, 40);
  return Buffer.concat([h, pcm]);
}

// Bytes that look like the format (a real header) followed by a
// pseudo-random payload; not decodable audio, which the gateway never decodes.
function framed(seed, ms, header, frameLen, msPerFrame) {
  const frames = Math.max(1, Math.ceil(ms / msPerFrame));
  const out = [];
  let state = seed;
  for (let i = 0; i < frames; i++) {
    state = sha256(state);
    const f = Buffer.alloc(frameLen);
    header.copy(f);
    for (let o = header.length; o < frameLen; o += 32) state.copy(f, o, 0, Math.min(32, frameLen - o));
    out.push(f);
  }
  return Buffer.concat(out);
}

// The audio /v1/audio/speech returns for these fields (after defaults).
export function speechAudio({ model, input, voice, response_format = 'mp3', speed = 1, instructions = '' }) {
  const voiceId = typeof voice === 'object' && voice ? voice.id : voice;
  const seed = sha256(JSON.stringify([model, input, voiceId, response_format, speed, instructions]));
  const ms = speechMs(input, speed);
  switch (response_format) {
    case 'wav': return wavFile(pcmTone(seed, ms));
    case 'pcm': return pcmTone(seed, ms);
    case 'mp3': return framed(seed, ms, Buffer.from([0xff, 0xfb, 0x90, 0x64]), 417, 26);
    case 'aac': return framed(seed, ms, Buffer.from([0xff, 0xf1, 0x60, 0x40, 0x34, 0x1f, 0xfc]), 416, 43);
    case 'opus': return Buffer.concat([Buffer.from('OggS\0\x02', 'latin1'), framed(seed, ms, Buffer.from('OpusHead'), 160, 20)]);
    case 'flac': return Buffer.concat([Buffer.from('fLaC', 'latin1'), framed(seed, ms, Buffer.from([0xff, 0xf8]), 512, 85)]);
    default: throw new Error(`no such format ${response_format}`);
  }
}

// The transcript text for an audio file.
export function transcriptFor(audio) {
  return `transcript of ${hex(audio).slice(0, 8)}`;
}

// Duration in seconds: exact for a PCM WAV, else as if 16 kB/s.
export function audioSeconds(audio) {
  if (audio.length >= 44 && audio.toString('latin1', 0, 4) === 'RIFF' && audio.toString('latin1', 8, 12) === 'WAVE') {
    const byteRate = audio.readUInt32LE(28);
    if (byteRate > 0) return Math.round(((audio.length - 44) / byteRate) * 1000) / 1000;
  }
  return Math.round((audio.length / 16000) * 1000) / 1000;
}

const LANGS = { en: 'english', fr: 'french', de: 'german', es: 'spanish', ru: 'russian', it: 'italian', ja: 'japanese' };

function stamp(sec, sep) {
  const ms = Math.round(sec * 1000);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(Math.floor(ms / 3600000))}:${p(Math.floor(ms / 60000) % 60)}:${p(Math.floor(ms / 1000) % 60)}${sep}${p(ms % 1000, 3)}`;
}

// {type, body} of a transcription answer in response_format.
export function transcriptionBody(audio, { response_format = 'json', language = '', temperature = 0, granularities = [] } = {}) {
  const text = transcriptFor(audio);
  const duration = audioSeconds(audio);
  switch (response_format) {
    case 'text': return { type: 'text/plain; charset=utf-8', body: `${text}\n` };
    case 'srt': return { type: 'text/plain; charset=utf-8', body: `1\n${stamp(0, ',')} --> ${stamp(duration, ',')}\n${text}\n\n` };
    case 'vtt': return { type: 'text/vtt; charset=utf-8', body: `WEBVTT\n\n${stamp(0, '.')} --> ${stamp(duration, '.')}\n${text}\n\n` };
    case 'verbose_json': {
      const out = { task: 'transcribe', language: LANGS[language] || language || 'english', duration, text };
      if (granularities.length === 0 || granularities.includes('segment')) {
        out.segments = [{ id: 0, seek: 0, start: 0, end: duration, text: ` ${text}`, tokens: [50364, 50365],
          temperature, avg_logprob: -0.25, compression_ratio: 1, no_speech_prob: 0.01 }];
      }
      if (granularities.includes('word')) {
        const ws = text.split(' ');
        out.words = ws.map((word, i) => ({ word, start: (duration * i) / ws.length, end: (duration * (i + 1)) / ws.length }));
      }
      return { type: 'application/json', body: JSON.stringify(out) };
    }
    default: return { type: 'application/json', body: JSON.stringify({ text }) };
  }
}

// ---- request parsing ----

class BadRequest extends Error {
  constructor(message, param = null, code = null, status = 400) {
    super(message);
    Object.assign(this, { param, code, status });
  }
}

// `; a=b; c="d"` parameters of a header value, names lower-cased.
function headerParams(value) {
  const out = {};
  const re = /;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;\s]*)/g;
  let m;
  while ((m = re.exec(value))) out[m[1].toLowerCase()] = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2];
  return out;
}

// A strict multipart/form-data parser (CRLF only): what voxgate sends must
// be well formed, so anything else is a 400 the test will see.
export function parseMultipart(body, contentType) {
  if (!/^multipart\/form-data\s*(;|$)/i.test(contentType || ''))
    throw new BadRequest('Invalid Content-Type header; expected multipart/form-data.');
  const boundary = headerParams(contentType).boundary;
  if (!boundary) throw new BadRequest('Could not parse multipart form: no boundary.');
  const delim = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  let pos = body.indexOf(delim);
  if (pos !== 0 && (pos < 0 || (pos = body.indexOf(next)) < 0))
    throw new BadRequest('Could not parse multipart form: no boundary.');
  pos = pos === 0 ? delim.length : pos + next.length;
  const parts = [];
  for (;;) {
    const after = body.toString('latin1', pos, pos + 2);
    if (after === '--') return parts;
    if (after !== '\r\n') throw new BadRequest('Could not parse multipart form: bad delimiter line.');
    const hEnd = body.indexOf('\r\n\r\n', pos);
    if (hEnd < 0) throw new BadRequest('Could not parse multipart form: unterminated headers.');
    const headers = {};
    for (const line of body.toString('utf8', pos + 2, hEnd).split('\r\n')) {
      const i = line.indexOf(':');
      if (i <= 0) throw new BadRequest('Could not parse multipart form: bad header line.');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const dEnd = body.indexOf(next, hEnd + 4);
    if (dEnd < 0) throw new BadRequest('Could not parse multipart form: no closing boundary.');
    const cd = headers['content-disposition'] || '';
    const p = headerParams(cd);
    if (!/^form-data\s*(;|$)/i.test(cd) || !p.name)
      throw new BadRequest('Could not parse multipart form: part without a form-data name.');
    parts.push({ name: p.name, filename: p.filename, contentType: headers['content-type'], headers,
      data: body.subarray(hEnd + 4, dEnd) });
    pos = dEnd + next.length;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > MAX_BODY) { reject(new BadRequest('Request body too large.', null, null, 413)); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// ---- validation, as OpenAI does it ----

function checkModel(model, allowed) {
  if (model === undefined || model === null || model === '')
    throw new BadRequest('you must provide a model parameter', 'model');
  if (typeof model !== 'string') throw new BadRequest(`Invalid type for 'model': expected a string.`, 'model', 'invalid_type');
  if (allowed && !allowed.includes(model))
    throw new BadRequest(`The model \`${model}\` does not exist or you do not have access to it.`, null, 'model_not_found', 404);
}

function checkSpeech(j, opts) {
  if (!j || typeof j !== 'object' || Array.isArray(j))
    throw new BadRequest('We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly.)');
  checkModel(j.model, opts.ttsModels);
  if (j.input === undefined) throw new BadRequest("Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
  if (typeof j.input !== 'string') throw new BadRequest("Invalid type for 'input': expected a string.", 'input', 'invalid_type');
  if (j.input.length === 0) throw new BadRequest("Invalid 'input': empty string.", 'input', 'empty_string');
  if (j.input.length > 4096) throw new BadRequest("Invalid 'input': string too long. Expected a string with maximum length 4096.", 'input', 'string_above_max_length');
  if (j.voice === undefined) throw new BadRequest("Missing required parameter: 'voice'.", 'voice', 'missing_required_parameter');
  const v = j.voice;
  const ok = (typeof v === 'string' && opts.voices.includes(v)) ||
    (v && typeof v === 'object' && typeof v.id === 'string' && v.id.length > 0);
  if (!ok) throw new BadRequest(`Invalid value for 'voice': ${JSON.stringify(v)}.`, 'voice', 'invalid_value');
  if (j.response_format !== undefined && !(j.response_format in SPEECH_TYPES))
    throw new BadRequest(`Invalid value: '${j.response_format}'. Supported values are: ${Object.keys(SPEECH_TYPES).map((f) => `'${f}'`).join(', ')}.`, 'response_format', 'invalid_value');
  if (j.speed !== undefined && (typeof j.speed !== 'number' || !(j.speed >= 0.25 && j.speed <= 4)))
    throw new BadRequest(`Invalid 'speed': expected a number between 0.25 and 4.0, got ${JSON.stringify(j.speed)}.`, 'speed', 'invalid_value');
  if (j.instructions !== undefined && typeof j.instructions !== 'string')
    throw new BadRequest("Invalid type for 'instructions': expected a string.", 'instructions', 'invalid_type');
}

function formFields(parts) {
  const fields = {};
  for (const p of parts) {
    if (p.filename !== undefined) continue;
    const v = p.data.toString('utf8').slice(0, FIELD_KEEP);
    if (p.name in fields) fields[p.name] = [].concat(fields[p.name], v);
    else fields[p.name] = p.name.endsWith('[]') ? [v] : v;
  }
  return fields;
}

function checkTranscription(parts, fields, opts) {
  const file = parts.find((p) => p.name === 'file');
  if (!file || file.filename === undefined)
    throw new BadRequest("Missing required parameter: 'file'.", 'file', 'missing_required_parameter');
  checkModel(fields.model, opts.sttModels);
  const ext = (file.filename.match(/\.([A-Za-z0-9]+)$/) || [])[1];
  if (opts.checkFileFormat && !AUDIO_EXTS.includes((ext || '').toLowerCase()))
    throw new BadRequest(`Invalid file format. Supported formats: ${JSON.stringify(AUDIO_EXTS)}`, 'file', 'invalid_value');
  if (file.data.length === 0) throw new BadRequest('Audio file is empty.', 'file', 'invalid_value');
  const fmt = fields.response_format ?? 'json';
  if (!STT_FORMATS.includes(fmt))
    throw new BadRequest(`Invalid value: '${fmt}'. Supported values are: ${STT_FORMATS.map((f) => `'${f}'`).join(', ')}.`, 'response_format', 'invalid_value');
  const temperature = fields.temperature === undefined ? 0 : Number(fields.temperature);
  if (!(temperature >= 0 && temperature <= 1))
    throw new BadRequest(`Invalid 'temperature': expected a number between 0 and 1.`, 'temperature', 'invalid_value');
  const granularities = [].concat(fields['timestamp_granularities[]'] ?? fields.timestamp_granularities ?? []);
  for (const g of granularities)
    if (g !== 'word' && g !== 'segment')
      throw new BadRequest(`Invalid value: '${g}'. Supported values are: 'word' and 'segment'.`, 'timestamp_granularities', 'invalid_value');
  if (granularities.length && fmt !== 'verbose_json')
    throw new BadRequest('timestamp_granularities requires response_format=verbose_json', 'timestamp_granularities', 'invalid_value');
  return { file, fmt, temperature, granularities, language: fields.language || '' };
}

// ---- error bodies ----

const errBody = (message, type, param = null, code = null) => JSON.stringify({ error: { message, type, param, code } });

const FAIL_MESSAGES = {
  500: 'The server had an error while processing your request. Sorry about that!',
  502: 'Bad gateway.',
  503: 'The engine is currently overloaded, please try again later.',
};

// ---- the server ----

// A behaviour (fake.behave(b), fake.setMode(mode, extra), or one item of
// fake.script(...)) says how a call is answered:
//   mode: 'ok'          validate like OpenAI (400/404/401) and answer
//         'fail'        status (500 default; 502, 503...), OpenAI error body, retryAfter (s) optional
//         'rate_limit'  429 rate_limit_exceeded; retryAfter (s) -> Retry-After, retryAfterMs -> retry-after-ms
//         'quota'       429 insufficient_quota
//         'auth'        401 invalid_api_key
//         'hang'        never answer (until the client goes, reset(), releaseHung() or close())
//         'garbage'     garbage: 'json' (200 {"nope":1}) | 'html' | 'empty' | 'badjson'
//                       | 'truncate' (half the promised body, then a reset) | 'destroy' (reset, no answer)
//   delayMs    wait this long first (any mode)
//   failFirst  N: the first N calls after behave() fail (with this mode when it is not 'ok',
//              else failWith, default {mode:'fail', status:500}); later calls succeed
//   only       'speech' | 'transcriptions': other endpoints answer normally
//   headers    extra response headers
// The API key (opts.apiKey) is checked only in mode 'ok'.
const DEFAULT_BEHAVIOUR = { mode: 'ok' };

export async function startFakeOpenAI(opts = {}) {
  const o = {
    host: '127.0.0.1', port: 0, apiKey: null, voices: VOICES, ttsModels: null, sttModels: null,
    checkFileFormat: true, ...opts,
  };
  let behaviour = { ...DEFAULT_BEHAVIOUR, ...(o.behave || {}) };
  let failedSoFar = 0;
  let queue = [];
  const held = new Set(); // responses of hung calls
  const waiters = [];

  const fake = {
    calls: [], inFlight: 0, maxInFlight: 0, port: 0, url: '', origin: '',
    get count() { return this.calls.length; },
    get hung() { return held.size; }, // calls held by mode 'hang' right now
    // The standing behaviour for every call not taken by script().
    behave(b = {}) { behaviour = { ...DEFAULT_BEHAVIOUR, ...b }; failedSoFar = 0; return fake; },
    setMode(mode, extra = {}) { return fake.behave({ ...extra, mode }); },
    // One-shot behaviours, each taken by the next call in order.
    script(...items) { queue.push(...items.flat()); return fake; },
    callsTo(path) { return fake.calls.filter((c) => c.path === path || c.path === `/v1${path}`); },
    // Resolves once at least n calls have arrived.
    waitForCalls(n, timeoutMs = 5000) {
      if (fake.calls.length >= n) return Promise.resolve(fake.calls);
      return new Promise((resolve, reject) => {
        const w = { n, resolve, timer: setTimeout(() => reject(new Error(`fake provider: ${fake.calls.length} of ${n} calls after ${timeoutMs} ms`)), timeoutMs) };
        waiters.push(w);
      });
    },
    // Cut every hung call (the client sees a reset connection).
    releaseHung() { for (const res of held) res.destroy(); held.clear(); },
    reset() {
      fake.releaseHung();
      fake.calls.length = 0;
      fake.inFlight = 0;
      fake.maxInFlight = 0;
      queue = [];
      behaviour = { ...DEFAULT_BEHAVIOUR, ...(o.behave || {}) };
      failedSoFar = 0;
      return fake;
    },
    close() {
      fake.releaseHung();
      return new Promise((resolve) => { server.close(() => resolve()); server.closeAllConnections(); });
    },
  };

  function notifyWaiters() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (fake.calls.length >= waiters[i].n) {
        clearTimeout(waiters[i].timer);
        waiters[i].resolve(fake.calls);
        waiters.splice(i, 1);
      }
    }
  }

  // What this call does: a scripted item first, else the standing
  // behaviour, whose failFirst turns its first N calls into failures.
  function pick(endpoint) {
    const applies = (b) => !b.only || b.only === endpoint;
    if (queue.length && applies(queue[0])) return { ...DEFAULT_BEHAVIOUR, ...queue.shift() };
    if (!applies(behaviour)) return DEFAULT_BEHAVIOUR;
    if (!behaviour.failFirst) return behaviour;
    if (failedSoFar >= behaviour.failFirst) return { ...behaviour, mode: 'ok' };
    failedSoFar++;
    // The failure is the behaviour's own mode, else failWith, else a 500.
    return behaviour.mode !== 'ok' ? behaviour : { ...behaviour, mode: 'fail', status: 500, ...(behaviour.failWith || {}) };
  }

  const server = createServer((req, res) => handle(req, res).catch((e) => {
    if (!res.headersSent && !res.destroyed) send(res, 500, 'application/json', errBody(String(e && e.message), 'server_error'));
  }));

  function send(res, status, type, body, headers = {}) {
    if (res.destroyed || res.writableEnded) return;
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  async function handle(req, res) {
    const n = fake.calls.length + 1;
    const url = new URL(req.url, 'http://fake');
    const call = {
      n, method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
      headers: { ...req.headers }, startedAt: Date.now(), endedAt: null, status: null, aborted: false,
    };
    fake.calls.push(call);
    fake.inFlight++;
    fake.maxInFlight = Math.max(fake.maxInFlight, fake.inFlight);
    res.on('close', () => {
      fake.inFlight = Math.max(0, fake.inFlight - 1);
      call.endedAt = Date.now();
      call.aborted = !res.writableFinished;
      held.delete(res);
    });
    res.setHeader('x-request-id', `req_${n}`);
    res.setHeader('openai-version', '2020-10-01');
    res.setHeader('openai-processing-ms', '1');
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = (status, ...rest) => { call.status = status; return origWriteHead(status, ...rest); };
    notifyWaiters();

    let body;
    try {
      body = await readBody(req);
    } catch (e) {
      return send(res, e.status || 400, 'application/json', errBody(e.message, 'invalid_request_error'));
    }
    call.bodyBytes = body.length;
    call.bodySha256 = hex(body);
    const endpoint = url.pathname === '/v1/audio/speech' ? 'speech'
      : url.pathname === '/v1/audio/transcriptions' ? 'transcriptions' : 'other';
    const { parts, json } = recordBody(call, body, req.headers['content-type']);

    const b = pick(endpoint);
    call.behaviour = b.mode;
    if (b.delayMs) await new Promise((r) => setTimeout(r, b.delayMs));
    if (res.destroyed) return;
    if (b.mode !== 'ok') return misbehave(res, b, endpoint);
    if (o.apiKey !== null && req.headers.authorization !== `Bearer ${o.apiKey}`)
      return misbehave(res, { mode: 'auth' }, endpoint);
    if (req.method === 'GET' && url.pathname === '/v1/models') return models(res);
    if (req.method !== 'POST' || endpoint === 'other')
      return send(res, 404, 'application/json', errBody(`Invalid URL (${req.method} ${url.pathname})`, 'invalid_request_error'), b.headers);
    try {
      if (endpoint === 'speech') return speech(res, call, json, b);
      return transcription(res, call, parts, b);
    } catch (e) {
      if (!(e instanceof BadRequest)) throw e;
      return send(res, e.status, 'application/json', errBody(e.message, 'invalid_request_error', e.param, e.code), b.headers);
    }
  }

  // Record what a test checks, never a whole large body; the parsed JSON
  // and the multipart parts (views of the body) are returned whole.
  function recordBody(call, body, ctype) {
    if (/^application\/json/i.test(ctype || '')) {
      let json;
      try { json = JSON.parse(body.toString('utf8')); } catch { json = undefined; }
      call.json = json;
      if (json && typeof json.input === 'string' && json.input.length > FIELD_KEEP)
        call.json = { ...json, input: json.input.slice(0, FIELD_KEEP) };
      return { json };
    }
    if (/^multipart\//i.test(ctype || '')) {
      try {
        const parts = parseMultipart(body, ctype);
        call.fields = formFields(parts);
        call.files = parts.filter((p) => p.filename !== undefined).map((p) => ({
          name: p.name, filename: p.filename, contentType: p.contentType, bytes: p.data.length, sha256: hex(p.data),
        }));
        call.file = call.files.find((f) => f.name === 'file');
        return { parts };
      } catch (e) {
        call.multipartError = e.message;
        return {};
      }
    }
    if (body.length) call.bodyText = body.toString('utf8', 0, Math.min(body.length, FIELD_KEEP));
    return {};
  }

  function speech(res, call, json, b) {
    checkSpeech(json, o);
    const j = { response_format: 'mp3', speed: 1, instructions: '', ...json };
    const audio = speechAudio(j);
    call.response = { bytes: audio.length, sha256: hex(audio) };
    return send(res, 200, SPEECH_TYPES[j.response_format], audio, b.headers);
  }

  function transcription(res, call, parts, b) {
    if (call.multipartError) throw new BadRequest(call.multipartError);
    if (!parts) throw new BadRequest('Invalid Content-Type header; expected multipart/form-data.');
    const t = checkTranscription(parts, call.fields, o);
    const audio = t.file.data;
    const out = transcriptionBody(audio, { response_format: t.fmt, language: t.language, temperature: t.temperature, granularities: t.granularities });
    call.response = { text: transcriptFor(audio), format: t.fmt };
    return send(res, 200, out.type, out.body, b.headers);
  }

  function models(res) {
    const data = [...TTS_MODELS, ...STT_MODELS].map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'system' }));
    return send(res, 200, 'application/json', JSON.stringify({ object: 'list', data }));
  }

  function misbehave(res, b, endpoint) {
    const h = b.headers || {};
    switch (b.mode) {
      case 'fail': {
        const status = b.status || 500;
        const extra = b.retryAfter !== undefined ? { 'retry-after': String(b.retryAfter) } : {};
        return send(res, status, 'application/json', errBody(b.message || FAIL_MESSAGES[status] || `Error ${status}.`, status >= 500 ? 'server_error' : 'invalid_request_error'), { ...extra, ...h });
      }
      case 'rate_limit': {
        const extra = {};
        if (b.retryAfter !== undefined) extra['retry-after'] = String(b.retryAfter);
        if (b.retryAfterMs !== undefined) extra['retry-after-ms'] = String(b.retryAfterMs);
        return send(res, 429, 'application/json', errBody(b.message || 'Rate limit reached for requests. Please try again later.', 'requests', null, 'rate_limit_exceeded'), { ...extra, ...h });
      }
      case 'quota':
        return send(res, 429, 'application/json', errBody('You exceeded your current quota, please check your plan and billing details.', 'insufficient_quota', null, 'insufficient_quota'), h);
      case 'auth':
        return send(res, 401, 'application/json', errBody('Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.', 'invalid_request_error', null, 'invalid_api_key'), h);
      case 'hang':
        held.add(res);
        return undefined;
      case 'garbage':
        return garbage(res, b.garbage || 'json', endpoint);
      default:
        throw new Error(`fake provider: unknown mode ${b.mode}`);
    }
  }

  // 200 answers that are not what OpenAI documents.
  function garbage(res, kind, endpoint) {
    switch (kind) {
      case 'json': return send(res, 200, 'application/json', '{"nope":1}');
      case 'html': return send(res, 200, 'text/html', '<html><body>oops</body></html>');
      case 'empty': return send(res, 200, endpoint === 'speech' ? 'audio/mpeg' : 'application/json', '');
      case 'badjson': return send(res, 200, 'application/json', '{"text": "unterminated');
      case 'destroy': res.destroy(); return undefined;
      case 'truncate': {
        const full = endpoint === 'speech' ? speechAudio({ model: 'tts-1', input: 'truncated', voice: 'alloy' })
          : Buffer.from(JSON.stringify({ text: 'this answer is cut short' }));
        res.writeHead(200, { 'content-type': endpoint === 'speech' ? 'audio/mpeg' : 'application/json', 'content-length': full.length });
        res.write(full.subarray(0, full.length >> 1), () => setTimeout(() => res.destroy(), 20));
        return undefined;
      }
      default: throw new Error(`fake provider: unknown garbage ${kind}`);
    }
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, resolve);
  });
  fake.port = server.address().port;
  fake.origin = `http://${o.host}:${fake.port}`;
  fake.url = `${fake.origin}/v1`;
  return fake;
}
