import 'reflect-metadata';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { INestApplication } from '@nestjs/common';
import request from 'supertest';
import { CONFIG_ENV_NAMES, ConfigError, loadConfig } from '../../src/app/config.js';
import { bootApp } from './serve-fixtures.js';

/** Polls /health/ready while the worker starts and warms up; returns the first answer after. */
async function readyAfterSelection(server: Server, timeoutMs = 60_000): Promise<request.Response> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await request(server).get('/health/ready');
    const selecting =
      res.status === 503 && /worker is starting|warming up/.test(res.body.error as string);
    if (!selecting || Date.now() > deadline) return res;
    assert.equal(res.body.error_type, 'not_ready');
    await sleep(50);
  }
}

describe('health (e2e)', () => {
  let modelsDir: string;
  let app: INestApplication;
  let server: Server;

  before(async () => {
    modelsDir = await mkdtemp(join(tmpdir(), 'gim-health-'));
    ({ app, server } = await bootApp({ MODELS_DIR: modelsDir, GIM_BACKEND: 'cpu' }));
  });

  after(async () => {
    await app?.close();
    if (modelsDir) await rm(modelsDir, { recursive: true, force: true });
  });

  test('GET /health/live is 200 ok', async () => {
    const res = await request(server).get('/health/live');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  test('GET /health/ready reports the forced cpu backend of the worker (no stacks to warm up)', async () => {
    const res = await readyAfterSelection(server);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, 'ready');
    assert.deepEqual(res.body.models, []);
    assert.equal(res.body.backend.name, 'cpu');
    assert.equal(res.body.backend.tfjsBackend, 'cpu');
    assert.ok(Array.isArray(res.body.backend.fallbackReasons));
  });

  test('an unknown route is a 404 JSON error', async () => {
    const res = await request(server).get('/no/such/route');
    assert.equal(res.status, 404);
    assert.match(res.headers['content-type'] ?? '', /application\/json/);
    assert.equal(res.body.error_type, 'not_found');
    assert.equal(typeof res.body.error, 'string');
  });

  test('a malformed JSON body is a 400 JSON error', async () => {
    // A route that takes JSON (POST /health/live is a 405: only GET is served there).
    const res = await request(server)
      .post('/v2/models/fashion/infer')
      .set('content-type', 'application/json')
      .send('{"not json');
    assert.equal(res.status, 400);
    assert.equal(res.body.error_type, 'bad_request');
  });
});

describe('health (e2e) with an unavailable forced backend', () => {
  let app: INestApplication;

  before(async () => {
    // tfjs-node-gpu is not installed here (its install script fails), so forcing it fails.
    ({ app } = await bootApp({ GIM_BACKEND: 'tensorflow-gpu' }));
  });

  after(async () => {
    await app?.close();
  });

  test('/health/live stays 200 and /health/ready is 503 not_ready with the reason', async () => {
    const server = app.getHttpServer() as Server;
    assert.equal((await request(server).get('/health/live')).status, 200);
    const res = await readyAfterSelection(server);
    assert.equal(res.status, 503);
    assert.deepEqual(Object.keys(res.body).sort(), ['error', 'error_type']);
    assert.equal(res.body.error_type, 'not_ready');
    assert.match(res.body.error, /tensorflow-gpu/);
  });
});

describe('loadConfig', () => {
  test('defaults', () => {
    const config = loadConfig({});
    assert.equal(config.port, 8080);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.modelsDir, join(process.cwd(), 'models'));
    assert.equal(config.backend, undefined);
    assert.equal(config.logLevel, 'log');
    assert.equal(config.preload, undefined);
    assert.equal(config.maxBatchSize, 32);
    assert.equal(config.maxBatchDelayMs, 0);
    assert.equal(config.refCacheMs, 1000);
    assert.equal(config.maxQueue, 256);
    assert.equal(config.requestTimeoutMs, 10_000);
    assert.equal(config.maxAudioSecondsPerRequest, 60);
    assert.equal(config.maxBodyBytes, 10 * 1024 * 1024);
    assert.equal(config.maxItems, 64);
    assert.equal(config.maxInputPixels, 25_000_000);
    assert.ok(config.audioDecodeThreads >= 1 && config.audioDecodeThreads <= 4);
    assert.equal(config.shutdownDelayMs, 0);
    assert.equal(config.shutdownTimeoutMs, 20_000);
  });

  test('CONFIG_ENV_NAMES is exactly the set of variables loadConfig reads', () => {
    const read = new Set<string>();
    const env = new Proxy({} as NodeJS.ProcessEnv, {
      get: (_target, key) => {
        if (typeof key === 'string') read.add(key);
        return undefined;
      },
    });
    loadConfig(env);
    assert.deepEqual([...read].sort(), [...CONFIG_ENV_NAMES].sort());
  });

  test('PRELOAD and the serving limits', () => {
    const config = loadConfig({
      PRELOAD: 'a, b@2,c@stable,a',
      MAX_BATCH_SIZE: '8',
      MAX_BATCH_DELAY_MS: '0',
      MAX_QUEUE: '8',
      REF_CACHE_MS: '0',
    });
    assert.deepEqual(config.preload, ['a', 'b@2', 'c@stable']);
    assert.equal(config.refCacheMs, 0);
    assert.deepEqual([config.maxBatchSize, config.maxBatchDelayMs, config.maxQueue], [8, 0, 8]);
    assert.deepEqual(loadConfig({ PRELOAD: 'none' }).preload, []);
    assert.throws(
      () =>
        loadConfig({
          PRELOAD: 'Bad Name',
          MAX_BATCH_SIZE: '0',
          REF_CACHE_MS: '-5',
          MAX_BODY_BYTES: '1e6',
          MAX_ITEMS: '-1',
          AUDIO_DECODE_THREADS: '0',
          MAX_INPUT_PIXELS: 'lots',
          REQUEST_TIMEOUT_MS: '0',
          MAX_AUDIO_SECONDS_PER_REQUEST: '1.5',
        }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.deepEqual(
          error.problems.map((p) => p.split(':')[0]),
          [
            'PRELOAD',
            'MAX_BATCH_SIZE',
            'REF_CACHE_MS',
            'REQUEST_TIMEOUT_MS',
            'MAX_AUDIO_SECONDS_PER_REQUEST',
            'MAX_BODY_BYTES',
            'MAX_ITEMS',
            'AUDIO_DECODE_THREADS',
            'MAX_INPUT_PIXELS',
          ],
        );
        return true;
      },
    );
    assert.throws(() => loadConfig({ MAX_BATCH_SIZE: '64', MAX_QUEUE: '16' }), /MAX_QUEUE/);
  });

  test('names every bad variable at once', () => {
    assert.throws(
      () => loadConfig({ PORT: 'abc', GIM_BACKEND: 'tpu' }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.problems.length, 2);
        assert.match(error.message, /PORT: expected an integer from 1 to 65535, got "abc"/);
        assert.match(error.message, /GIM_BACKEND: expected one of tensorflow-gpu, .*got "tpu"/);
        return true;
      },
    );
    assert.throws(() => loadConfig({ PORT: '70000', LOG_LEVEL: 'loud' }), /PORT.*\n.*LOG_LEVEL/);
  });
});
