// A fake Yandex SpeechKit v1 REST server for the black-box tests
// (providers.md §5): both paths on one base (voxgate's base_url), the
// request validation Yandex does (Api-Key or Bearer auth, folderId rules,
// query parameters, form fields, the voice/language mismatch 400) and its
// {"error_code","error_message"} bodies. Tests switch behaviours (ok,
// fail with a status, 429, garbage, hang) and read the recorded requests.
//
//   const ya = await startFakeYandex({ apiKey: 'AQVNkey', iamToken: 't1.iam', folderId: 'b1g' });
//   ya.behave({ mode: 'fail', status: 503, failFirst: 1 });
//   ... ya.calls[0].query.lang, ya.calls[0].form.voice, ya.calls[0].headers['x-client-request-id']
//   await ya.close();
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';

export const VOICES = {
  alena: 'ru-RU', filipp: 'ru-RU', ermil: 'ru-RU', jane: 'ru-RU', omazh: 'ru-RU', zahar: 'ru-RU',
  marina: 'ru-RU', madi_ru: 'ru-RU', oksana: 'ru-RU', john: 'en-US', lea: 'de-DE', amira: 'kk-KK',
  madi: 'kk-KK', nigora: 'uz-UZ',
};
const STT_LANGS = ['ru-RU', 'en-US', 'tr-TR', 'de-DE', 'kk-KK', 'uz-UZ'];
const TOPICS = ['general', 'general:rc', 'general:deprecated'];
const RATES = ['48000', '16000', '8000'];
const EMOTIONS = ['neutral', 'good', 'evil', 'friendly', 'whisper'];
const BOOL = ['true', 'false'];
const STT_MAX = 1 << 20;
const FORM_MAX = 15 * 1024;

const sha = (b) => createHash('sha256').update(b).digest();

// ---- deterministic outputs ----

// The audio tts:synthesize returns for these form fields.
export function synthAudio({ text, lang, voice, emotion = '', speed = '1', format = 'oggopus', sampleRateHertz = '48000' }) {
  const seed = sha(JSON.stringify([text, lang, voice, emotion, speed, format, format === 'lpcm' ? sampleRateHertz : '']));
  const body = Buffer.concat([seed, sha(seed), sha(sha(seed))]); // 96 bytes: even, for lpcm
  if (format === 'mp3') return Buffer.concat([Buffer.from('ID3\x04\0\0\0\0\0\0', 'latin1'), body]);
  if (format === 'oggopus') return Buffer.concat([Buffer.from('OggS\0\x02', 'latin1'), body]);
  return body;
}

// The transcript stt:recognize returns for an upload.
export function recognized(body) {
  return `распознано ${sha(body).toString('hex').slice(0, 8)}`;
}

// ---- validation ----

const fail = (status, code, message) => ({ status, code, message });

function checkAuth(req, url, form, o) {
  const auth = req.headers.authorization || '';
  const folder = url.searchParams.get('folderId') ?? form?.get('folderId') ?? null;
  if (auth === `Api-Key ${o.apiKey}`) {
    if (folder !== null) return fail(400, 'BAD_REQUEST', 'folderId must not be given with an API key');
    return null;
  }
  if (o.iamToken && auth === `Bearer ${o.iamToken}`) {
    if (folder !== o.folderId) return fail(400, 'BAD_REQUEST', 'folder_id should be specified');
    return null;
  }
  return fail(401, 'UNAUTHORIZED', `The token is invalid: ${auth.slice(0, 40)}`);
}

function checkStt(q, body) {
  const lang = q.get('lang') ?? 'ru-RU';
  if (!STT_LANGS.some((l) => l.toLowerCase() === lang.toLowerCase())) return fail(400, 'BAD_REQUEST', `unsupported lang: ${lang}`);
  if (!TOPICS.includes(q.get('topic') ?? 'general')) return fail(400, 'BAD_REQUEST', 'unknown topic');
  for (const b of ['profanityFilter', 'rawResults'])
    if (q.has(b) && !BOOL.includes(q.get(b))) return fail(400, 'BAD_REQUEST', `${b} must be a bool`);
  const format = q.get('format') ?? 'oggopus';
  if (format === 'lpcm') {
    const rate = q.get('sampleRateHertz') ?? '48000';
    if (!RATES.includes(rate)) return fail(400, 'BAD_REQUEST', 'bad sampleRateHertz');
    if (body.length % 2) return fail(400, 'BAD_REQUEST', 'lpcm length must be even');
    if (body.length / 2 / Number(rate) > 30) return fail(400, 'BAD_REQUEST', 'audio duration should be less than 30s');
  } else if (format === 'oggopus') {
    if (q.has('sampleRateHertz')) return fail(400, 'BAD_REQUEST', 'sampleRateHertz is for lpcm');
    if (body.toString('latin1', 0, 4) !== 'OggS') return fail(400, 'BAD_REQUEST', 'audio is not OggOpus');
  } else {
    return fail(400, 'BAD_REQUEST', `unknown format ${format}`);
  }
  if (body.length === 0 || body.length > STT_MAX) return fail(400, 'BAD_REQUEST', 'audio size');
  return null;
}

function checkTts(f, rawLen, ctype) {
  if (!/^application\/x-www-form-urlencoded/.test(ctype || '')) return fail(400, 'BAD_REQUEST', 'form body expected');
  if (rawLen > FORM_MAX) return fail(400, 'BAD_REQUEST', 'request too large');
  const text = f.get('text');
  if (!text && !f.get('ssml')) return fail(400, 'BAD_REQUEST', 'text or ssml is required');
  if ([...(text || '')].length > 5000) return fail(400, 'BAD_REQUEST', 'text too long');
  const lang = f.get('lang') ?? 'ru-RU', voice = f.get('voice') ?? 'marina';
  if (!VOICES[voice]) return fail(400, 'BAD_REQUEST', `unknown voice: ${voice}`);
  if (VOICES[voice].toLowerCase() !== lang.toLowerCase()) {
    const name = { 'ru-RU': 'Ru', 'en-US': 'En', 'de-DE': 'De', 'kk-KK': 'Kk', 'uz-UZ': 'Uz' }[VOICES[voice]];
    return fail(400, 'BAD_REQUEST', `Request voice is applicable for ${name} language only: ${voice}`);
  }
  if (f.has('emotion') && (!EMOTIONS.includes(f.get('emotion')) || lang !== 'ru-RU')) return fail(400, 'BAD_REQUEST', 'bad emotion');
  const speed = Number(f.get('speed') ?? '1');
  if (!(speed >= 0.1 && speed <= 3)) return fail(400, 'BAD_REQUEST', 'speed out of range');
  const format = f.get('format') ?? 'oggopus';
  if (!['oggopus', 'lpcm', 'mp3'].includes(format)) return fail(400, 'BAD_REQUEST', `unknown format ${format}`);
  if (f.has('sampleRateHertz') && (format !== 'lpcm' || !RATES.includes(f.get('sampleRateHertz'))))
    return fail(400, 'BAD_REQUEST', 'bad sampleRateHertz');
  return null;
}

// ---- the server ----

export async function startFakeYandex(opts = {}) {
  const o = { apiKey: 'AQVN-fake-key', iamToken: '', folderId: '', ...opts };
  const fake = {
    calls: [], count: 0, plan: { mode: 'ok' }, served: 0, hanging: new Set(),
    behave(plan) { this.plan = { mode: 'ok', ...plan }; this.served = 0; },
    reset() { this.calls = []; this.count = 0; this.behave({ mode: 'ok' }); },
  };
  const send = (res, status, headers, body) => {
    res.writeHead(status, { 'x-request-id': `ya-req-${fake.count}`, 'x-server-trace-id': `trace-${fake.count}`, ...headers });
    res.end(body);
  };
  const error = (res, e, extra = {}) =>
    send(res, e.status, { 'Content-Type': 'application/json', ...extra }, JSON.stringify({ error_code: e.code, error_message: e.message }));

  function misbehave(res, isTts) {
    const p = fake.plan;
    fake.served++;
    if (p.mode === 'ok' || (p.failFirst && fake.served > p.failFirst)) return false;
    if (p.mode === 'hang') return true; // never answered; closed by close()
    if (p.mode === 'fail') {
      error(res, fail(p.status, p.code || { 401: 'UNAUTHORIZED', 403: 'PERMISSION_DENIED', 501: 'UNIMPLEMENTED' }[p.status] || 'INTERNAL',
        p.message || 'something failed'));
    } else if (p.mode === 'rate_limit') {
      error(res, fail(429, 'RESOURCE_EXHAUSTED', 'too many requests'), p.retryAfter ? { 'Retry-After': String(p.retryAfter) } : {});
    } else if (p.mode === 'garbage') {
      if (isTts) send(res, 200, { 'Content-Type': 'application/json' }, '{"result":"not audio"}');
      else send(res, 200, { 'Content-Type': 'application/json' }, '<html>oops</html>');
    }
    return true;
  }

  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, 'http://x');
      const isTts = url.pathname === '/speech/v1/tts:synthesize';
      const isStt = url.pathname === '/speech/v1/stt:recognize';
      const form = isTts ? new URLSearchParams(body.toString('utf8')) : null;
      fake.count++;
      fake.calls.push({
        method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
        headers: req.headers, body, form: form ? Object.fromEntries(form) : null,
      });
      if (req.method !== 'POST' || (!isTts && !isStt)) return error(res, fail(404, 'NOT_FOUND', 'no such method'));
      if (misbehave(res, isTts)) { if (fake.plan.mode === 'hang') fake.hanging.add(res); return; }
      const bad = checkAuth(req, url, form, o) || (isTts ? checkTts(form, body.length, req.headers['content-type'])
        : checkStt(url.searchParams, body));
      if (bad) return error(res, bad);
      if (isStt) return send(res, 200, { 'Content-Type': 'application/json' }, JSON.stringify({ result: recognized(body) }));
      const fields = Object.fromEntries(form);
      const type = { mp3: 'audio/mpeg', oggopus: 'audio/ogg', lpcm: 'application/octet-stream' }[fields.format || 'oggopus'];
      send(res, 200, { 'Content-Type': type }, synthAudio(fields));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  fake.url = `http://127.0.0.1:${server.address().port}`;
  fake.close = async () => {
    for (const res of fake.hanging) res.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
  return fake;
}
