import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { EmbeddingsService } from '../../src/app/embeddings/embeddings.service.js';
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
  tinyAudioStack,
  tinyStack,
  until,
  waitReady,
} from './serve-fixtures.js';

const IMAGES = '/v1/models/tiny/embeddings';
const VOICE = '/v1/models/voice/embeddings';

/** A 16 kHz mono 16-bit WAV of `seconds` of a chirp. */
function wav(seconds: number): Buffer {
  const n = Math.round(seconds * 16000);
  const out = Buffer.alloc(44 + 2 * n);
  out.write('RIFF', 0, 'ascii');
  out.writeUInt32LE(36 + 2 * n, 4);
  out.write('WAVEfmt ', 8, 'ascii');
  out.writeUInt32LE(16, 16);
  out.writeUInt16LE(1, 20); // PCM
  out.writeUInt16LE(1, 22); // mono
  out.writeUInt32LE(16000, 24);
  out.writeUInt32LE(32000, 28);
  out.writeUInt16LE(2, 32);
  out.writeUInt16LE(16, 34);
  out.write('data', 36, 'ascii');
  out.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) {
    const v = 0.4 * Math.sin((2 * Math.PI * (200 + i / 8) * i) / 16000);
    out.writeInt16LE(Math.round(v * 32767), 44 + 2 * i);
  }
  return out;
}

/** A multipart request of the given WAV clips. */
function clips(t: TestApp, path: string, seconds: number[]) {
  let req = request(t.server).post(path);
  seconds.forEach((s, i) => (req = req.attach(`c${i}`, wav(s), `c${i}.wav`)));
  return req;
}

/**
 * Item 3 of issue 14 (no compute for requests already answered) and item 9 (the limits a user
 * can reach are answered in time, or refused at once), through the real app and worker.
 */
describe('deadlines and audio limits (e2e)', () => {
  let dir = '';
  let models = '';
  let png: Buffer;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-overload-e2e-'));
    models = join(dir, 'models');
    const image = tinyStack(1);
    await publishStack(models, 'tiny', image, ['latest']);
    image.dispose();
    const audio = tinyAudioStack(3);
    await publishStack(models, 'voice', audio, ['latest']);
    audio.dispose();
    [png] = (await fixturePngs(1)) as [Buffer];
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describe('with REQUEST_TIMEOUT_MS=300 and a batch held in the worker', () => {
    const embed = new Gate();
    let t: TestApp;

    before(async () => {
      t = await bootApp(
        { MODELS_DIR: models, PRELOAD: 'tiny', MAX_BATCH_SIZE: '1', REQUEST_TIMEOUT_MS: '300' },
        gatedClient({ embed }),
      );
      await waitReady(t.server);
      await t.app.listen(0, '127.0.0.1');
    });

    after(async () => {
      embed.release();
      await t?.app.close();
    });

    test('items whose deadline passes while queued never reach the worker, nor does a held batch once answered', async () => {
      const held = request(t.server).post(IMAGES).set('Content-Type', 'image/png').send(png);
      const running = held.then((r) => r);
      await until('the first batch to reach the worker', () => embed.arrivals === 1);
      const queued = await request(t.server)
        .post(IMAGES)
        .attach('a', png, 'a.png')
        .attach('b', png, 'b.png')
        .attach('c', png, 'c.png');
      assert.equal(queued.status, 504, JSON.stringify(queued.body));
      assert.equal(queued.body.error_type, 'timeout');
      assert.equal((await running).status, 504);

      // The held call goes on now, past its deadline: the client refuses it before posting.
      embed.release();
      await until('the held batch to finish', async () => {
        return metric(await scrape(t.server), 'gim_batches_total', { model: 'tiny' }) === 1;
      });
      await sleep(100);
      assert.equal(embed.arrivals, 1, 'the queued items were never sent to the worker');
      const s = await scrape(t.server);
      for (const outcome of ['ok', 'discarded']) {
        assert.equal(metric(s, 'gim_items_total', { model: 'tiny', outcome }), 0, outcome);
      }
      // The first item to time out answers its request; its siblings are cancelled with it.
      const timedOut = metric(s, 'gim_rejected_total', { reason: 'timeout' });
      assert.ok(timedOut >= 2, String(timedOut));
      assert.equal(timedOut + metric(s, 'gim_rejected_total', { reason: 'cancelled' }), 4);
    });

    test('a body that takes longer than REQUEST_TIMEOUT_MS to arrive is answered 504, not computed', async () => {
      const before = embed.arrivals;
      const { port } = t.server.address() as AddressInfo;
      const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port,
            path: IMAGES,
            method: 'POST',
            headers: { 'Content-Type': 'image/png', 'Content-Length': png.length },
          },
          (res) => {
            let body = '';
            res.on('data', (chunk: Buffer) => (body += chunk.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on('error', reject);
        req.write(png.subarray(0, 10));
        setTimeout(() => req.end(png.subarray(10)), 400); // the rest comes after the deadline
      });
      const { status, body } = await answer;
      assert.equal(status, 504, body);
      assert.equal(JSON.parse(body).error_type, 'timeout');
      assert.equal(embed.arrivals, before, 'nothing was computed for it');
      // The same request sent at once is computed (the gate is open).
      const fast = await request(t.server).post(IMAGES).set('Content-Type', 'image/png').send(png);
      assert.equal(fast.status, 200, JSON.stringify(fast.body));
    });
  });

  describe('with MAX_AUDIO_SECONDS_PER_REQUEST=2', () => {
    let t: TestApp;

    before(async () => {
      t = await bootApp({
        MODELS_DIR: models,
        PRELOAD: 'voice',
        MAX_AUDIO_SECONDS_PER_REQUEST: '2',
        REQUEST_TIMEOUT_MS: '60000', // the decode pool's first thread may start slowly here
      });
      await waitReady(t.server);
    });

    after(async () => {
      await t?.app.close();
    });

    test('a request holding more audio is refused with 413 before decoding, naming the setting', async () => {
      const decoding = t.app.get(EmbeddingsService).audioDecoding;
      const decodedBefore = decoding.completed;
      const batches = async () => metric(await scrape(t.server), 'gim_batches_total');
      const batchesBefore = await batches();

      const over = await clips(t, VOICE, [1, 1, 0.5]);
      assert.equal(over.status, 413, JSON.stringify(over.body));
      assert.equal(over.body.error_type, 'too_large');
      assert.match(
        over.body.error,
        /2\.5 s of audio \(declared by the WAV and FLAC headers\): at most 2 s per request \(MAX_AUDIO_SECONDS_PER_REQUEST\)/,
      );
      assert.equal(decoding.completed, decodedBefore, 'no clip was decoded');

      // KServe v2 takes samples: counted as they come, before computing.
      const infer = await request(t.server)
        .post('/v2/models/voice/infer')
        .send({
          inputs: [
            {
              name: 'input',
              shape: [3, 16000],
              datatype: 'FP32',
              data: new Array(48000).fill(0.1),
            },
          ],
        });
      assert.equal(infer.status, 413, JSON.stringify(infer.body));
      assert.match(infer.body.error, /3\.0 s of audio \(decoded\).*MAX_AUDIO_SECONDS_PER_REQUEST/);
      assert.equal(await batches(), batchesBefore, 'nothing was computed');

      const within = await clips(t, VOICE, [1, 1]);
      assert.equal(within.status, 200, JSON.stringify(within.body));
      assert.equal(within.body.items, 2);
    });
  });

  describe('with the default settings', () => {
    let t: TestApp;

    before(async () => {
      t = await bootApp({ MODELS_DIR: models, PRELOAD: 'voice' });
      await waitReady(t.server);
      // The decode pool's first thread starts on the first clip: not part of the measurement.
      const warm = await clips(t, VOICE, [0.5]);
      assert.equal(warm.status, 200, JSON.stringify(warm.body));
    });

    after(async () => {
      await t?.app.close();
    });

    test('a request at the default limit (60 s of audio in 32 clips) is answered 200 within REQUEST_TIMEOUT_MS', async () => {
      assert.equal(t.config.maxAudioSecondsPerRequest, 60);
      assert.equal(t.config.requestTimeoutMs, 10_000);
      // 32 lengths (one forward pass each), 59.7 s together.
      const seconds = Array.from(
        { length: 32 },
        (_, i) => 1.865 + (i % 2 ? 0.02 : -0.02) * (i >> 1),
      );
      assert.ok(Math.abs(seconds.reduce((a, b) => a + b, 0) - 59.68) < 0.01);
      const res = await clips(t, VOICE, seconds);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.items, 32);
    });
  });
});
