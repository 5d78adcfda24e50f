// Helpers of the object-storage tests: start and stop the real s3rver
// fork (a child process, so it can be SIGSTOPped), an @aws-sdk/client-s3
// client on it, and a voxgate configured for it.
import { spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { tempDir, startVoxgate } from './lib.mjs';

export const S3_KEY = 'S3RVER';
export const S3_SECRET = 'S3RVER';
export const BUCKET = 'voxgate-test';

export async function startS3rver(bucket = BUCKET) {
  const dir = tempDir('voxgate-s3rver-');
  const script = new URL('./s3rver-run.mjs', import.meta.url).pathname;
  const child = spawn(process.execPath, ['--openssl-legacy-provider', script, dir, bucket],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d.toString(); });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`s3rver did not start: ${err}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d.toString();
      const i = out.indexOf('\n');
      if (i >= 0) { clearTimeout(t); resolve(JSON.parse(out.slice(0, i)).port); }
    });
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`s3rver exited ${code}: ${err}`)); });
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return { child, port, dir, endpoint: `http://127.0.0.1:${port}`, exited, stderr: () => err };
}

export async function stopS3rver(s3) {
  if (!s3) return;
  try { process.kill(s3.child.pid, 'SIGCONT'); } catch { /* gone */ }
  s3.child.kill('SIGTERM');
  const t = setTimeout(() => s3.child.kill('SIGKILL'), 5000);
  await s3.exited;
  clearTimeout(t);
  rmSync(s3.dir, { recursive: true, force: true });
}

export function s3Client(s3) {
  return new S3Client({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET },
  });
}

// Every key in the bucket, read from s3rver's own directory (objects are
// files named KEY._S3rver_object): an independent check of what voxgate
// wrote. (The SDK's ListObjectsV2 is refused by this s3rver version.)
export function bucketKeys(s3, bucket = BUCKET) {
  const root = join(s3.dir, bucket);
  const out = [];
  const walk = (d, rel) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), r);
      else if (e.name.endsWith('._S3rver_object')) out.push(r.slice(0, -'._S3rver_object'.length));
    }
  };
  walk(root, '');
  return out.sort();
}

export function s3Config(s3, extra = {}) {
  return {
    s3: {
      endpoint: s3.endpoint,
      bucket: BUCKET,
      region: 'us-east-1',
      access_key_env: 'TEST_S3_KEY',
      secret_key_env: 'TEST_S3_SECRET',
      timeout_ms: 3000,
      connect_timeout_ms: 1000,
      ...extra,
    },
  };
}

export function startVoxgateS3(s3, { secret = S3_SECRET, s3extra = {}, env = {}, ...rest } = {}) {
  return startVoxgate({
    ...rest,
    config: s3Config(s3, s3extra),
    env: { TEST_S3_KEY: S3_KEY, TEST_S3_SECRET: secret, ...env },
  });
}
