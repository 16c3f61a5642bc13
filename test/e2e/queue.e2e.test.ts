import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import {
  Gate,
  type TestApp,
  bootApp,
  fixturePngs,
  gatedClient,
  metric,
  publishStack,
  scrape,
  tinyStack,
  until,
  waitReady,
} from './serve-fixtures.js';

const EMBED = '/v1/models/tiny/embeddings';

/**
 * The inference client's `load` and `embed` wait at gates the tests open, so warm-up, a running
 * batch and a full queue are states the tests hold, not races they hope to win.
 */
describe('readiness, queue limits, cancellation and timeouts (e2e)', () => {
  let dir = '';
  let png: Buffer;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-queue-e2e-'));
    const stack = tinyStack(1);
    await publishStack(join(dir, 'models'), 'tiny', stack, ['latest']);
    stack.dispose();
    [png] = (await fixturePngs(1)) as [Buffer];
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('with a queue of 2 behind one running batch', () => {
    const load = new Gate();
    const embed = new Gate();
    let t: TestApp;

    before(async () => {
      t = await bootApp(
        {
          MODELS_DIR: join(dir, 'models'),
          PRELOAD: 'tiny',
          MAX_BATCH_SIZE: '2',
          MAX_QUEUE: '2',
          MAX_BATCH_DELAY_MS: '0',
        },
        gatedClient({ load, embed }),
      );
      await t.app.listen(0, '127.0.0.1');
    });

    after(async () => {
      load.release();
      embed.release();
      await t?.app.close();
    });

    const embedOne = () => request(t.server).post(EMBED).set('Content-Type', 'image/png').send(png);

    test('/health/ready is 503 until the PRELOAD stack is loaded and warmed up, then 200', async () => {
      await until('the warm-up load', () => load.arrivals === 1);
      for (const path of ['/health/ready', '/v2/health/ready']) {
        const res = await request(t.server).get(path);
        assert.equal(res.status, 503, path);
        assert.equal(res.body.error_type, 'not_ready');
        assert.match(res.body.error, /warming up tiny/);
      }
      assert.equal((await request(t.server).get('/health/live')).status, 200);
      load.release();
      await waitReady(t.server);
      const res = await request(t.server).get('/health/ready');
      assert.deepEqual(
        [res.body.status, res.body.models, res.body.backend.name],
        ['ready', ['tiny@1'], 'wasm'],
      );
      assert.deepEqual((await request(t.server).get('/v2/health/ready')).body, { ready: true });
    });

    test('a full queue is 429 with Retry-After; a client that leaves is dropped from the queue', async () => {
      const depth = async () =>
        metric(await scrape(t.server), 'gim_queue_depth', { model: 'tiny' });

      const running = embedOne().then((r) => r); // starts the batch that waits at the gate
      await until('the first batch to run', () => embed.arrivals === 1);

      // A raw request whose client goes away while its item is queued.
      const { port } = t.server.address() as AddressInfo;
      const leaving = httpRequest({
        host: '127.0.0.1',
        port,
        path: EMBED,
        method: 'POST',
        headers: { 'Content-Type': 'image/png', 'Content-Length': png.length },
      });
      leaving.on('error', () => undefined);
      leaving.end(png);
      await until('one queued item', async () => (await depth()) === 1);
      const queued = embedOne().then((r) => r);
      await until('two queued items', async () => (await depth()) === 2);

      const full = await embedOne();
      assert.equal(full.status, 429, JSON.stringify(full.body));
      assert.equal(full.body.error_type, 'overloaded');
      assert.match(full.headers['retry-after'] ?? '', /^[1-9][0-9]*$/);
      const multi = await request(t.server)
        .post(EMBED)
        .attach('a', png, 'a.png')
        .attach('b', png, 'b.png');
      assert.equal(multi.status, 429);
      assert.ok(Number(multi.headers['retry-after']) >= 1);

      leaving.destroy();
      await until('the cancelled item to leave the queue', async () => (await depth()) === 1);
      const samples = await scrape(t.server);
      assert.ok(metric(samples, 'gim_rejected_total', { reason: 'cancelled' }) >= 1);
      assert.ok(metric(samples, 'gim_rejected_total', { reason: 'overloaded' }) >= 2);
      assert.equal(
        metric(samples, 'gim_requests_total', {
          route: '/v1/models/{name}/embeddings',
          code: '429',
        }),
        2,
      );

      embed.release();
      const [first, second] = await Promise.all([running, queued]);
      assert.equal(first.status, 200);
      assert.equal(second.status, 200);
      assert.equal(await depth(), 0);
      await until('the 499 to be counted', async () => {
        const s = await scrape(t.server);
        return metric(s, 'gim_requests_total', { code: '499' }) === 1;
      });
    });
  });

  describe('with REQUEST_TIMEOUT_MS=300 and a batch that never finishes', () => {
    const embed = new Gate();
    let t: TestApp;

    before(async () => {
      t = await bootApp(
        { MODELS_DIR: join(dir, 'models'), REQUEST_TIMEOUT_MS: '300' },
        gatedClient({ embed }),
      );
      await waitReady(t.server);
    });

    after(async () => {
      embed.release();
      await t?.app.close();
    });

    test('the request is a 504 timeout, on v1 and on KServe v2', async () => {
      const v1 = await request(t.server).post(EMBED).set('Content-Type', 'image/png').send(png);
      assert.equal(v1.status, 504, JSON.stringify(v1.body));
      assert.equal(v1.body.error_type, 'timeout');
      const v2 = await request(t.server)
        .post('/v2/models/tiny/infer')
        .send({
          inputs: [
            {
              name: 'input',
              shape: [1, 28, 28, 1],
              datatype: 'FP32',
              data: new Array(784).fill(0.5),
            },
          ],
        });
      assert.equal(v2.status, 504, JSON.stringify(v2.body));
      assert.equal(v2.body.error_type, 'timeout');
      const samples = await scrape(t.server);
      assert.ok(metric(samples, 'gim_rejected_total', { reason: 'timeout' }) >= 2);
    });
  });
});
