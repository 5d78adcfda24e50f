// Runs the SigV4-checking S3 server (@20minutes/s3rver) for the
// black-box tests: node --openssl-legacy-provider s3rver-run.mjs DIR BUCKET
// Prints {"port":N} once listening on a free loopback port; SIGTERM stops it.
import S3rver from '@20minutes/s3rver';

const [dir, bucket] = process.argv.slice(2);
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: dir,
  silent: true,
  vhostBuckets: false,
  allowMismatchedSignatures: false,
  configureBuckets: bucket ? [{ name: bucket, configs: [] }] : [],
});
const addr = await server.run();
process.stdout.write(`${JSON.stringify({ port: addr.port })}\n`);
process.on('SIGTERM', () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); });
