import assert from 'node:assert/strict';
import { gim } from '../helpers/cli.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import request from 'supertest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/gim/backend/index.js';
import { decodeImage, pngDecodesInline } from '../../src/gim/data/decode-image.js';
import { gridShape, type EncoderStack } from '../../src/gim/encoders/encoder-stack.js';
import { type Pooling, poolGrid } from '../../src/gim/encoders/pooling.js';
import {
  type TestApp,
  bootApp,
  fixturePngs,
  maxAbsDiff,
  metric,
  publishStack,
  scrape,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

const EMBED = '/v1/models/tiny/embeddings';

interface LayerResult {
  layer: number;
  dim: number;
  shape: number[];
  embedding_space_id: string;
  embeddings: number[][];
}

describe('POST /v1/models/{name}/embeddings (e2e)', () => {
  let dir = '';
  let models = '';
  let v1: EncoderStack;
  let v2: EncoderStack;
  let pngs: Buffer[];
  let t: TestApp;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-embed-e2e-'));
    models = join(dir, 'models');
    v1 = tinyStack(1);
    v2 = tinyStack(2);
    await publishStack(models, 'tiny', v1, ['latest', 'stable']);
    await publishStack(models, 'tiny', v2, ['latest']); // tiny@2: latest; stable stays 1
    pngs = await fixturePngs(17);
    t = await bootApp({
      MODELS_DIR: models,
      MAX_BATCH_DELAY_MS: '20',
      MAX_BODY_BYTES: '65536',
      MAX_ITEMS: '16',
      MAX_INPUT_PIXELS: '10000',
    });
    await waitReady(t.server);
  });

  after(async () => {
    await t?.app.close();
    v1?.dispose();
    v2?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The same embedding computed in this process: decode, EncoderStack.embed, poolGrid. */
  async function inProcess(
    stack: EncoderStack,
    png: Buffer,
    layer: number,
    pooling: Pooling,
  ): Promise<Float32Array> {
    const pixels = await decodeImage(png, { height: 28, width: 28, channels: 1 });
    const grids = stack.embed(pixels, 1, [layer]);
    const grid = grids.get(layer)!;
    const pooled = poolGrid(grid.dataSync() as Float32Array, gridShape(grid), pooling);
    tf.dispose([...grids.values()]);
    return pooled;
  }

  const embedOne = (png: Buffer, query = '') =>
    request(t.server).post(`${EMBED}${query}`).set('Content-Type', 'image/png').send(png);

  test('an HTTP embedding equals EncoderStack.embed + poolGrid in process, and `gim embed`', async () => {
    const png = pngs[3]!;
    const res = await embedOne(png, '?layer=2,last&pooling=grid2');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.model, 'tiny');
    assert.equal(res.body.version, 1, 'no version or label: label stable');
    assert.equal(res.body.pooling, 'grid2');
    assert.equal(res.body.normalize, false);
    assert.equal(res.body.items, 1);
    const results = res.body.results as LayerResult[];
    assert.deepEqual(
      results.map((r) => [r.layer, r.dim, r.shape]),
      [
        [2, 72, [72]],
        [3, 72, [72]],
      ],
    );
    for (const r of results) {
      const want = await inProcess(v1, png, r.layer, 'grid2');
      const diff = maxAbsDiff(r.embeddings[0]!, want);
      assert.ok(diff <= 1e-5, `layer ${r.layer}: max abs diff ${diff}`);
      assert.match(r.embedding_space_id, /^[0-9a-f]{32}$/);
    }

    // Defaults: the last layer, mean pooling.
    const plain = await embedOne(png);
    assert.equal(plain.status, 200);
    const [last] = plain.body.results as LayerResult[];
    assert.deepEqual([last!.layer, last!.dim, last!.shape], [3, 8, [8]]);
    assert.ok(maxAbsDiff(last!.embeddings[0]!, await inProcess(v1, png, 3, 'mean')) <= 1e-5);

    // The CLI on the same file and stack.
    const file = join(dir, 'item.png');
    await writeFile(file, png);
    const cli = await gim([
      'embed',
      file,
      '--model',
      'tiny@stable',
      '--models-dir',
      models,
      '--layer',
      '2,last',
      '--pooling',
      'grid2',
    ]);
    const out = JSON.parse(cli.stdout);
    for (const r of results) {
      const diff = maxAbsDiff(r.embeddings[0]!, out.items[0].layers[String(r.layer)]);
      assert.ok(diff <= 1e-5, `layer ${r.layer} vs gim embed: max abs diff ${diff}`);
    }
  });

  test('an item alone, among 16 concurrent requests, and in a 16-item multipart or JSON body gives the same vector', async () => {
    const items = pngs.slice(0, 16);
    const alone: number[][] = [];
    for (const png of items) {
      const res = await embedOne(png, '?layer=1,3');
      assert.equal(res.status, 200);
      alone.push(...(res.body.results as LayerResult[]).map((r) => r.embeddings[0]!));
    }
    const near = (got: number[][], label: string) =>
      got.forEach((v, i) => {
        const diff = maxAbsDiff(v, alone[i]!);
        assert.ok(diff <= 1e-5, `${label} vector ${i}: max abs diff ${diff}`);
      });

    const before = await scrape(t.server);
    const concurrent = await Promise.all(items.map((png) => embedOne(png, '?layer=1,3')));
    near(
      concurrent.flatMap((res) => {
        assert.equal(res.status, 200);
        return (res.body.results as LayerResult[]).map((r) => r.embeddings[0]!);
      }),
      'concurrent',
    );

    let multipart = request(t.server).post(`${EMBED}?layer=1,3`);
    items.forEach((png, i) => (multipart = multipart.attach(`file${i}`, png, `item${i}.png`)));
    const mres = await multipart;
    assert.equal(mres.status, 200, JSON.stringify(mres.body));
    assert.equal(mres.body.items, 16);
    const [m1, m3] = mres.body.results as LayerResult[];
    near(
      items.flatMap((_, i) => [m1!.embeddings[i]!, m3!.embeddings[i]!]),
      'multipart',
    );

    const jres = await request(t.server)
      .post(EMBED)
      .send({ inputs: items.map((png) => ({ b64: png.toString('base64') })), layer: [1, 'last'] });
    assert.equal(jres.status, 200, JSON.stringify(jres.body));
    const [j1, j3] = jres.body.results as LayerResult[];
    near(
      items.flatMap((_, i) => [j1!.embeddings[i]!, j3!.embeddings[i]!]),
      'json',
    );

    // The 16 items of one body went through the worker in batches larger than one.
    const after = await scrape(t.server);
    const batches =
      metric(after, 'gim_batches_total', { model: 'tiny' }) -
      metric(before, 'gim_batches_total', { model: 'tiny' });
    const itemsRun =
      metric(after, 'gim_items_total', { model: 'tiny' }) -
      metric(before, 'gim_items_total', { model: 'tiny' });
    assert.equal(itemsRun, 48);
    assert.ok(batches <= 16 + 2, `48 items took ${batches} batches`);
    const big =
      metric(after, 'gim_batch_size_count', { model: 'tiny' }) -
      metric(after, 'gim_batch_size_bucket', { model: 'tiny', le: '8' });
    assert.ok(big >= 2, 'the multipart and JSON bodies each ran as a batch of more than 8');
  });

  test('versions, labels, layers, poolings and normalize', async () => {
    const png = pngs[5]!;
    const v2res = await embedOne(png, '?version=2');
    const latest = await embedOne(png, '?label=latest');
    const stable = await embedOne(png, '?label=stable');
    assert.deepEqual([v2res.body.version, latest.body.version, stable.body.version], [2, 2, 1]);
    const r2 = (v2res.body.results as LayerResult[])[0]!;
    const r1 = (stable.body.results as LayerResult[])[0]!;
    assert.ok(maxAbsDiff(r2.embeddings[0]!, await inProcess(v2, png, 3, 'mean')) <= 1e-5);
    assert.ok(maxAbsDiff(r1.embeddings[0]!, r2.embeddings[0]!) > 1e-3, 'other weights');
    // An image that needs sharp (RGB, to a grey stack) is served like the inline grey ones.
    const rgb = await sharp(png).toColourspace('srgb').png().toBuffer();
    const grey28 = { height: 28, width: 28, channels: 1 } as const;
    assert.ok(pngDecodesInline(png, grey28) && !pngDecodesInline(rgb, grey28));
    const viaSharp = await embedOne(rgb, '?version=2');
    assert.equal(viaSharp.status, 200);
    const rgbVector = (viaSharp.body.results as LayerResult[])[0]!.embeddings[0]!;
    assert.ok(maxAbsDiff(rgbVector, await inProcess(v2, rgb, 3, 'mean')) <= 1e-5);
    assert.notEqual(r1.embedding_space_id, r2.embedding_space_id);

    const all = await embedOne(png, '?layer=all&pooling=none');
    assert.equal(all.status, 200);
    assert.deepEqual(
      (all.body.results as LayerResult[]).map((r) => [r.layer, r.dim, r.shape]),
      [
        [1, 144, [6, 6, 4]],
        [2, 288, [6, 6, 8]],
        [3, 288, [6, 6, 8]],
      ],
    );
    const repeated = await embedOne(png, '?layer=3&layer=1&pooling=grid3');
    assert.deepEqual(
      (repeated.body.results as LayerResult[]).map((r) => [r.layer, r.dim]),
      [
        [1, 16],
        [3, 32],
      ],
    );

    const normalized = await embedOne(png, '?normalize=true&pooling=max');
    const raw = await embedOne(png, '?normalize=false&pooling=max');
    const n = (normalized.body.results as LayerResult[])[0]!;
    const r = (raw.body.results as LayerResult[])[0]!;
    assert.equal(normalized.body.normalize, true);
    assert.ok(Math.abs(Math.hypot(...n.embeddings[0]!) - 1) < 1e-5, 'unit L2 norm');
    const norm = Math.hypot(...r.embeddings[0]!);
    assert.ok(
      maxAbsDiff(
        n.embeddings[0]!,
        r.embeddings[0]!.map((x) => x / norm),
      ) <= 1e-5,
    );
    assert.equal(n.embedding_space_id, r.embedding_space_id, 'normalize keeps the space id');
    assert.notEqual(r.embedding_space_id, r1.embedding_space_id, 'max and mean are other spaces');

    // Options as multipart text fields and as JSON body fields.
    const form = await request(t.server)
      .post(EMBED)
      .field('layer', '1')
      .field('pooling', 'max')
      .attach('image', png, 'a.png');
    assert.equal(form.status, 200, JSON.stringify(form.body));
    assert.deepEqual([form.body.results[0].layer, form.body.pooling], [1, 'max']);
    const json = await request(t.server)
      .post(EMBED)
      .send({ inputs: [{ b64: `data:image/png;base64,${png.toString('base64')}` }], version: 2 });
    assert.equal(json.status, 200, JSON.stringify(json.body));
    assert.equal(json.body.version, 2);
  });

  test('each class of bad input gets its status and error_type', async () => {
    const png = pngs[0]!;
    const big = await sharp(Buffer.alloc(200 * 200, 128), {
      raw: { width: 200, height: 200, channels: 1 },
    })
      .png()
      .toBuffer();
    const truncated = png.subarray(0, Math.floor(png.length / 2));
    const tooManyFiles = () => {
      let req = request(t.server).post(EMBED);
      pngs.slice(0, 17).forEach((p, i) => (req = req.attach(`f${i}`, p, `f${i}.png`)));
      return req;
    };
    const cases: [string, () => request.Test, number, string, RegExp?][] = [
      ['raw body over MAX_BODY_BYTES', () => embedOne(Buffer.alloc(70_000, 1)), 413, 'too_large'],
      [
        'JSON body over MAX_BODY_BYTES',
        () =>
          request(t.server)
            .post(EMBED)
            .send({ inputs: [{ b64: 'A'.repeat(70_000) }] }),
        413,
        'too_large',
      ],
      [
        'multipart file over MAX_BODY_BYTES',
        () => request(t.server).post(EMBED).attach('f', Buffer.alloc(70_000, 1), 'f.png'),
        413,
        'too_large',
      ],
      [
        'multipart files adding up to over MAX_BODY_BYTES',
        () =>
          request(t.server)
            .post(EMBED)
            .attach('a', Buffer.alloc(40_000, 1), 'a.png')
            .attach('b', Buffer.alloc(40_000, 1), 'b.png'),
        413,
        'too_large',
        /add up/,
      ],
      ['17 multipart files (MAX_ITEMS 16)', tooManyFiles, 413, 'too_large', /MAX_ITEMS/],
      [
        '17 JSON inputs (MAX_ITEMS 16)',
        () =>
          request(t.server)
            .post(EMBED)
            .send({ inputs: pngs.slice(0, 17).map((p) => ({ b64: p.toString('base64') })) }),
        413,
        'too_large',
        /MAX_ITEMS/,
      ],
      ['an image over MAX_INPUT_PIXELS', () => embedOne(big), 413, 'too_large', /item 0/],
      [
        'text/plain',
        () => request(t.server).post(EMBED).set('Content-Type', 'text/plain').send('hello'),
        415,
        'unsupported_media',
      ],
      [
        'image/svg+xml',
        () => request(t.server).post(EMBED).set('Content-Type', 'image/svg+xml').send('<svg/>'),
        415,
        'unsupported_media',
      ],
      [
        'bytes that are no image format',
        () => embedOne(Buffer.from('not an image at all')),
        415,
        'unsupported_media',
      ],
      ['a truncated PNG', () => embedOne(truncated), 422, 'invalid_data', /^item 0: /],
      [
        'a PNG without its IEND chunk',
        () => embedOne(png.subarray(0, png.length - 12)),
        422,
        'invalid_data',
        /^item 0: PNG is truncated: it ends before its IEND chunk$/,
      ],
      [
        'a truncated PNG as item 2 of a multipart body',
        () =>
          request(t.server)
            .post(EMBED)
            .attach('a', png, 'a.png')
            .attach('b', png, 'b.png')
            .attach('c', truncated, 'c.png'),
        422,
        'invalid_data',
        /^item 2: /,
      ],
      [
        'an unknown model',
        () =>
          request(t.server)
            .post('/v1/models/ghost/embeddings')
            .set('Content-Type', 'image/png')
            .send(png),
        404,
        'not_found',
        /ghost/,
      ],
      ['an unknown version', () => embedOne(png, '?version=9'), 404, 'not_found', /version 9/],
      ['an unknown label', () => embedOne(png, '?label=nope'), 404, 'not_found', /nope/],
      ['an unknown layer', () => embedOne(png, '?layer=4'), 404, 'not_found', /layers 1\.\.3/],
      ['pooling=foo', () => embedOne(png, '?pooling=foo'), 400, 'invalid_argument', /foo/],
      ['layer=0', () => embedOne(png, '?layer=0'), 400, 'invalid_argument'],
      ['normalize=maybe', () => embedOne(png, '?normalize=maybe'), 400, 'invalid_argument'],
      ['version=abc', () => embedOne(png, '?version=abc'), 400, 'invalid_argument'],
      [
        'both version and label',
        () => embedOne(png, '?version=1&label=stable'),
        400,
        'invalid_argument',
      ],
      ['an unknown option', () => embedOne(png, '?poolin=max'), 400, 'invalid_argument', /poolin/],
      [
        'empty inputs',
        () => request(t.server).post(EMBED).send({ inputs: [] }),
        400,
        'invalid_argument',
      ],
      [
        'bad base64',
        () =>
          request(t.server)
            .post(EMBED)
            .send({ inputs: [{ b64: 'not base64!' }] }),
        400,
        'invalid_argument',
        /inputs\[0\]/,
      ],
      [
        'an option in both the query and the body',
        () =>
          request(t.server)
            .post(`${EMBED}?layer=1`)
            .send({ inputs: [{ b64: png.toString('base64') }], layer: 2 }),
        400,
        'invalid_argument',
      ],
      [
        'malformed JSON',
        () => request(t.server).post(EMBED).set('Content-Type', 'application/json').send('{"in'),
        400,
        'bad_request',
      ],
      [
        'an empty raw body',
        () => request(t.server).post(EMBED).set('Content-Type', 'image/png'),
        400,
        'invalid_argument',
      ],
    ];
    for (const [name, send, status, type, message] of cases) {
      const res = await send();
      assert.equal(res.status, status, `${name}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.deepEqual(Object.keys(res.body).sort(), ['error', 'error_type'], name);
      assert.equal(res.body.error_type, type, `${name}: ${res.body.error}`);
      if (message) assert.match(res.body.error, message, name);
      assert.ok(!res.body.error.includes(dir), `${name}: the answer names a server path`);
    }
    // Still serving after all of that.
    assert.equal((await embedOne(png)).status, 200);
  });
});
