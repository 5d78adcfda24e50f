// A fake ElevenLabs API for the black-box tests (providers.md §4): it
// checks requests the way ElevenLabs does (xi-api-key, the voice id in the
// path, output_format, the JSON fields of text-to-speech, the multipart
// fields of speech-to-text) and answers its error bodies
// ({"detail":{"status","message"}}, 422 {"detail":[{loc,msg,type}]}).
// Tests switch its behaviour and read what it recorded:
//
//   const el = await startFakeElevenLabs({ apiKey: 'xi-secret' });
//   el.behave({ mode: 'fail', status: 503, failFirst: 1 });
//   ... el.calls[0].query.output_format, el.calls[0].json.voice_settings ...
//   await el.close();
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';

export const EL_VOICES = ['21m00Tcm4TlvDq8ikWAM', 'EXAVITQu4vr4xnSDxMaL', 'pNInz6obpgDQGcFmaJgB'];
export const EL_TTS_MODELS = ['eleven_multilingual_v2', 'eleven_flash_v2_5', 'eleven_turbo_v2_5', 'eleven_v3'];
export const EL_STT_MODELS = ['scribe_v1', 'scribe_v2'];
export const OUTPUT_FORMATS = [
  'mp3_22050_32', 'mp3_24000_48', 'mp3_44100_32', 'mp3_44100_64', 'mp3_44100_96', 'mp3_44100_128', 'mp3_44100_192',
  'opus_48000_32', 'opus_48000_64', 'opus_48000_96', 'opus_48000_128', 'opus_48000_192',
  'pcm_8000', 'pcm_16000', 'pcm_22050', 'pcm_24000', 'pcm_32000', 'pcm_44100', 'pcm_48000',
  'wav_8000', 'wav_16000', 'wav_22050', 'wav_24000', 'wav_32000', 'wav_44100', 'wav_48000',
  'ulaw_8000', 'alaw_8000',
];
const TTS_FIELDS = new Set(['text', 'model_id', 'language_code', 'voice_settings', 'seed', 'previous_text',
  'next_text', 'apply_text_normalization', 'pronunciation_dictionary_locators']);
const STT_FIELDS = new Set(['model_id', 'file', 'language_code', 'tag_audio_events', 'num_speakers',
  'timestamps_granularity', 'diarize', 'temperature', 'seed', 'file_format']);
const MAX_CHARS = 10000;

const digest = (...parts) => createHash('sha256').update(JSON.stringify(parts)).digest();

// The bytes text-to-speech answers: a header naming the format, then a
// hash of everything that shapes the output (so a test can recompute it).
export function elAudio({ voice, model_id, text, output_format, voice_settings, language_code = null }) {
  const head = Buffer.from(`EL:${output_format}:`, 'latin1');
  return Buffer.concat([head, digest(voice, model_id, text, output_format, voice_settings, language_code)]);
}

export function elTranscript(audio) {
  return `eleven heard ${createHash('sha256').update(audio).digest('hex').slice(0, 10)}`;
}

function mediaType(format) {
  const kind = format.split('_')[0];
  return { mp3: 'audio/mpeg', opus: 'audio/opus', pcm: 'audio/pcm', wav: 'audio/wav' }[kind] || 'audio/basic';
}

// ---- errors as ElevenLabs writes them ----

class ElError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  body() { return { detail: { status: this.code, message: this.message } }; }
}

class Invalid extends Error {
  constructor(loc, msg, type = 'value_error') { super(msg); this.status = 422; this.loc = loc; this.type = type; }
  body() { return { detail: [{ loc: ['body', ...this.loc], msg: this.message, type: this.type }] }; }
}

// ---- multipart/form-data ----

function boundaryOf(ctype) {
  const m = /^multipart\/form-data;\s*boundary=("?)([^";]+)\1/i.exec(ctype || '');
  if (!m) throw new Invalid(['file'], 'expected multipart/form-data', 'type_error');
  return m[2];
}

// {name: {value: Buffer, filename, type}}; a repeated name is refused.
function multipart(body, ctype) {
  const delim = Buffer.from(`--${boundaryOf(ctype)}`);
  const out = {};
  let at = body.indexOf(delim);
  while (at >= 0) {
    const start = at + delim.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const headEnd = body.indexOf('\r\n\r\n', start);
    const next = body.indexOf(delim, headEnd);
    if (headEnd < 0 || next < 0) throw new Invalid(['file'], 'malformed multipart body', 'type_error');
    const head = body.subarray(start + 2, headEnd).toString('utf8');
    const name = /name="([^"]*)"/i.exec(head)?.[1];
    const filename = /filename="([^"]*)"/i.exec(head)?.[1];
    const type = /content-type:\s*([^\r\n]+)/i.exec(head)?.[1];
    if (!name) throw new Invalid(['file'], 'a part without a name', 'type_error');
    if (out[name]) throw new Invalid([name], 'given twice', 'value_error');
    out[name] = { value: body.subarray(headEnd + 4, next - 2), filename, type };
    at = next;
  }
  return out;
}

// ---- validation ----

function unitRange(obj, name, lo, hi) {
  const v = obj[name];
  if (v === undefined) return;
  if (typeof v !== 'number' || v < lo || v > hi)
    throw new Invalid(['voice_settings', name], `ensure this value is between ${lo} and ${hi}`, 'value_error.number');
}

function checkSettings(s) {
  if (s === undefined) return;
  if (typeof s !== 'object' || s === null || Array.isArray(s))
    throw new Invalid(['voice_settings'], 'value is not a valid dict', 'type_error.dict');
  for (const k of Object.keys(s))
    if (!['stability', 'similarity_boost', 'style', 'use_speaker_boost', 'speed'].includes(k))
      throw new Invalid(['voice_settings', k], 'extra fields not permitted', 'value_error.extra');
  unitRange(s, 'stability', 0, 1);
  unitRange(s, 'similarity_boost', 0, 1);
  unitRange(s, 'style', 0, 1);
  unitRange(s, 'speed', 0.7, 1.2);
  if (s.use_speaker_boost !== undefined && typeof s.use_speaker_boost !== 'boolean')
    throw new Invalid(['voice_settings', 'use_speaker_boost'], 'value could not be parsed to a boolean', 'type_error.bool');
}

function checkTts(voice, query, body) {
  if (!OUTPUT_FORMATS.includes(query.output_format ?? 'mp3_44100_128'))
    throw new Invalid(['output_format'], `unexpected value; permitted: ${OUTPUT_FORMATS.join(', ')}`, 'value_error.const');
  let j;
  try { j = JSON.parse(body.toString('utf8')); } catch { throw new Invalid([], 'JSON decode error', 'value_error.jsondecode'); }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Invalid([], 'value is not a valid dict', 'type_error.dict');
  for (const k of Object.keys(j)) if (!TTS_FIELDS.has(k)) throw new Invalid([k], 'extra fields not permitted', 'value_error.extra');
  if (typeof j.text !== 'string' || j.text.length === 0) throw new Invalid(['text'], 'field required', 'value_error.missing');
  const model = j.model_id ?? 'eleven_multilingual_v2';
  if (!EL_TTS_MODELS.includes(model)) throw new ElError(400, 'model_not_found', `A model with model ID ${model} does not exist`);
  if (j.language_code !== undefined && (typeof j.language_code !== 'string' || !/^[a-z]{2,3}$/.test(j.language_code)))
    throw new Invalid(['language_code'], 'not an ISO 639 language code', 'value_error');
  checkSettings(j.voice_settings);
  if ([...j.text].length > MAX_CHARS)
    throw new ElError(400, 'max_character_limit_exceeded', `Text is too long (${[...j.text].length} > ${MAX_CHARS})`);
  if (!EL_VOICES.includes(voice)) throw new ElError(404, 'voice_not_found', `A voice with voice_id ${voice} was not found.`);
  return j;
}

function checkStt(parts) {
  for (const k of Object.keys(parts)) if (!STT_FIELDS.has(k)) throw new Invalid([k], 'extra fields not permitted', 'value_error.extra');
  const text = (k) => parts[k]?.value.toString('utf8');
  if (!parts.model_id) throw new Invalid(['model_id'], 'field required', 'value_error.missing');
  if (!EL_STT_MODELS.includes(text('model_id'))) throw new ElError(400, 'invalid_model', 'model_id must be scribe_v1 or scribe_v2');
  if (!parts.file || parts.file.filename === undefined) throw new Invalid(['file'], 'field required', 'value_error.missing');
  if (parts.file.value.length === 0) throw new ElError(400, 'invalid_audio', 'The audio file is empty');
  for (const b of ['tag_audio_events', 'diarize'])
    if (parts[b] && !['true', 'false'].includes(text(b))) throw new Invalid([b], 'value could not be parsed to a boolean', 'type_error.bool');
  if (parts.timestamps_granularity && !['none', 'word', 'character'].includes(text('timestamps_granularity')))
    throw new Invalid(['timestamps_granularity'], 'unexpected value', 'value_error.const');
  return Object.fromEntries(Object.entries(parts).filter(([k]) => k !== 'file').map(([k, v]) => [k, v.value.toString('utf8')]));
}

// ---- the server ----

export async function startFakeElevenLabs({ apiKey = 'xi-test-key' } = {}) {
  const fake = {
    calls: [], hung: [], behaviour: { mode: 'ok' }, served: 0,
    get count() { return this.calls.length; },
    behave(b) { this.behaviour = { ...b }; this.served = 0; },
    reset() { this.calls.length = 0; this.behave({ mode: 'ok' }); this.releaseHung(); },
    releaseHung() { for (const res of this.hung.splice(0)) res.destroy(); },
  };

  const send = (res, status, body, headers = {}) => {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const type = Buffer.isBuffer(body) ? {} : { 'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json' };
    res.writeHead(status, { 'request-id': `el-${fake.calls.length}`, ...type, ...headers, 'Content-Length': buf.length });
    res.end(buf);
  };

  // Answers as the switched behaviour says; false = answer normally.
  const misbehave = (res) => {
    const b = fake.behaviour;
    fake.served++;
    switch (b.mode) {
      case 'fail':
        if (b.failFirst && fake.served > b.failFirst) return false;
        send(res, b.status || 500, { detail: { status: b.code || 'internal_error', message: b.message || 'Something went wrong' } });
        return true;
      case 'rate_limit':
        send(res, 429, { detail: { status: 'too_many_concurrent_requests', message: 'Your current subscription is associated with a maximum of 2 concurrent requests' } },
          b.retryAfter !== undefined ? { 'Retry-After': String(b.retryAfter) } : {});
        return true;
      case 'quota':
        send(res, 401, { detail: { status: 'quota_exceeded', message: `This request exceeds your quota. Key ${apiKey} has 0 credits remaining` } });
        return true;
      case 'hang':
        fake.hung.push(res);
        return true;
      default:
        return false;
    }
  };

  const garbage = (res, kind) => {
    if (kind === 'empty') send(res, 200, Buffer.alloc(0), { 'Content-Type': 'audio/mpeg' });
    else if (kind === 'text') send(res, 200, 'hello, this is not audio');
    else send(res, 200, { detail: 'this is JSON, not audio' });
  };

  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, 'http://fake');
    const call = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body };
    fake.calls.push(call);
    try {
      if (req.headers['xi-api-key'] !== apiKey || fake.behaviour.mode === 'auth')
        throw new ElError(401, 'invalid_api_key', `Invalid API key: ${req.headers['xi-api-key'] || 'none'}`);
      if (misbehave(res)) return;
      const tts = /^\/v1\/text-to-speech\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'POST' && tts) {
        const j = checkTts(tts[1], call.query, body);
        call.json = j;
        if (fake.behaviour.mode === 'garbage') return garbage(res, fake.behaviour.garbage);
        const output_format = call.query.output_format ?? 'mp3_44100_128';
        const audio = elAudio({ voice: tts[1], model_id: j.model_id ?? 'eleven_multilingual_v2', text: j.text, output_format,
          voice_settings: j.voice_settings ?? null, language_code: j.language_code ?? null });
        return send(res, 200, audio, { 'Content-Type': mediaType(output_format), 'x-character-count': String([...j.text].length) });
      }
      if (req.method === 'POST' && url.pathname === '/v1/speech-to-text') {
        const parts = multipart(body, req.headers['content-type']);
        call.fields = checkStt(parts);
        call.file = parts.file.value;
        call.fileType = parts.file.type;
        if (fake.behaviour.mode === 'garbage') return send(res, 200, fake.behaviour.garbage === 'text' ? 'plain words' : { words: [] });
        return send(res, 200, { language_code: call.fields.language_code || 'eng', language_probability: 0.99,
          text: elTranscript(call.file), words: [], audio_duration_secs: call.file.length / 32000 });
      }
      throw new ElError(404, 'not_found', 'Not Found');
    } catch (e) {
      if (e instanceof ElError || e instanceof Invalid) return send(res, e.status, e.body());
      return send(res, 500, { detail: { status: 'internal_error', message: String(e) } });
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  fake.url = `http://127.0.0.1:${server.address().port}`;
  fake.close = async () => {
    fake.releaseHung();
    server.closeAllConnections?.();
    await new Promise((r) => server.close(r));
  };
  return fake;
}
