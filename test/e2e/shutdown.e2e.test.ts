import 'reflect-metadata';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { Lifecycle } from '../../src/app/lifecycle/lifecycle.service.js';
import { ROOT, bootApp, fixturePngs, freePort, waitReady } from './serve-fixtures.js';

/**
 * The real process (src/main.ts) under SIGTERM with requests in flight: every request that was
 * sent before the signal is answered 200 with all its items, readiness turns 503 at once, the
 * listener keeps serving through SHUTDOWN_DELAY_MS, then closes, and the process exits 0.
 */

interface Answer {
  status: number;
  body: string;
  at: number;
}

/** One request on its own connection; `sent` resolves when the whole body is written. */
function send(
  port: number,
  method: string,
  path: string,
  body?: { type: string; data: Buffer },
): { sent: Promise<void>; answer: Promise<Answer> } {
  let markSent!: () => void;
  const sent = new Promise<void>((resolve) => (markSent = resolve));
  const answer = new Promise<Answer>((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: body ? { 'content-type': body.type, 'content-length': body.data.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            at: performance.now(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.on('finish', markSent);
    req.end(body?.data);
  });
  return { sent, answer };
}

function multipart(pngs: Buffer[]): { type: string; data: Buffer } {
  const boundary = 'gimshutdowntest';
  const parts = pngs.flatMap((png, i) => [
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file${i}"; filename="i${i}.png"\r\n` +
        'Content-Type: image/png\r\n\r\n',
    ),
    png,
    Buffer.from('\r\n'),
  ]);
  return {
    type: `multipart/form-data; boundary=${boundary}`,
    data: Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]),
  };
}

describe('graceful shutdown of the real process', () => {
  let child: ChildProcess;
  let port: number;
  let output = '';

  before(async () => {
    port = await freePort();
    child = spawn(
      process.execPath,
      ['--import', '@swc-node/register/esm-register', join(ROOT, 'src/main.ts')],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          PORT: String(port),
          HOST: '127.0.0.1',
          MODELS_DIR: join(ROOT, 'models'),
          GIM_BACKEND: 'wasm',
          PRELOAD: 'fashion-gim',
          // One item per forward pass: the queue stays deep for a while after the signal.
          MAX_BATCH_SIZE: '1',
          MAX_QUEUE: '4096',
          MAX_ITEMS: '64',
          REQUEST_TIMEOUT_MS: '60000',
          SHUTDOWN_DELAY_MS: '1500',
          SHUTDOWN_TIMEOUT_MS: '30000',
          LOG_LEVEL: 'log',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 60_000;
    for (;;) {
      assert.equal(child.exitCode, null, `the service exited while starting:\n${output}`);
      const ready = await send(port, 'GET', '/health/ready').answer.catch(() => undefined);
      if (ready?.status === 200) break;
      assert.ok(Date.now() < deadline, `not ready after 60 s:\n${output}`);
      await sleep(200);
    }
  });

  after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });

  test('SIGTERM with requests in flight: all answered 200, readiness 503, exit 0', async () => {
    const pngs = await fixturePngs(8);
    const body = multipart(pngs);
    const path = '/v1/models/fashion-gim/embeddings?layer=last&pooling=mean';
    const inFlight = Array.from({ length: 24 }, () => send(port, 'POST', path, body));
    await Promise.all(inFlight.map((r) => r.sent));
    const signalledAt = performance.now();
    const exited = once(child, 'exit');
    child.kill('SIGTERM');

    // Not ready at once, while still serving new requests during SHUTDOWN_DELAY_MS.
    await sleep(100);
    const ready = await send(port, 'GET', '/health/ready').answer;
    assert.equal(ready.status, 503);
    assert.equal(JSON.parse(ready.body).error_type, 'shutting_down');
    const late = await send(port, 'POST', path, multipart(pngs.slice(0, 2))).answer;
    assert.equal(late.status, 200, late.body);

    const answers = await Promise.all(inFlight.map((r) => r.answer));
    for (const a of answers) {
      assert.equal(a.status, 200, a.body);
      assert.equal(JSON.parse(a.body).items, 8);
    }
    // The test means something only if work was still queued when the signal came.
    const afterSignal = answers.filter((a) => a.at > signalledAt).length;
    assert.ok(afterSignal > 0, 'every request was answered before SIGTERM: nothing was in flight');

    const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
    assert.deepEqual([code, signal], [0, null], output);
    assert.match(output, /SIGTERM: not ready from now/);
    assert.match(output, /drained in \d+ ms: exiting 0/);
    // After the exit, the port is closed.
    await assert.rejects(send(port, 'GET', '/health/live').answer, /ECONNREFUSED/);
  });
});

describe('shutdown states (in process)', () => {
  test('draining: readiness 503 shutting_down, routes still served; closing: served with Connection: close', async () => {
    const modelsDir = await mkdtemp(join(tmpdir(), 'gim-shutdown-'));
    const { app, server } = await bootApp({ MODELS_DIR: modelsDir, PRELOAD: 'none' });
    try {
      await waitReady(server);
      const lifecycle = app.get(Lifecycle);
      lifecycle.beginDrain();
      const ready = await request(server).get('/health/ready');
      assert.deepEqual([ready.status, ready.body.error_type], [503, 'shutting_down']);
      assert.equal((await request(server).get('/health/live')).status, 200);
      assert.equal((await request(server).get('/v1/models')).status, 200);

      lifecycle.beginClose();
      for (const path of ['/v1/models', '/health/live', '/metrics']) {
        const res = await request(server).get(path);
        assert.equal(res.status, 200, path);
        assert.equal(res.headers.connection, 'close', path);
      }
    } finally {
      await app.close();
      await rm(modelsDir, { recursive: true, force: true });
    }
  });
});
