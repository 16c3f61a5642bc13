import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { gim } from '../helpers/cli.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/gim/backend/index.js';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { decodeImage } from '../../src/gim/data/decode-image.js';
import { poolGrid } from '../../src/gim/encoders/pooling.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { EncoderStack, gridShape } from '../../src/gim/encoders/encoder-stack.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const FIXTURE = join(ROOT, 'test/fixtures/fashion-mnist-mini');

describe('gim CLI', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-cli-'));
    await selectBackend({ force: 'wasm' });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('train publishes a version; models lists it; embed matches the in-process embedding', async () => {
    const models = join(dir, 'models');
    const train = await gim([
      'train',
      'image',
      '--data',
      FIXTURE,
      '--name',
      'tiny',
      '--models-dir',
      models,
      '--channels',
      '4,8,8',
      '--epochs',
      '1',
      '--batch-size',
      '8',
      '--max-steps-per-epoch',
      '3',
      '--checkpoint-dir',
      join(dir, 'ck'),
      '--label',
      'latest',
      'stable',
    ]);
    assert.match(train.stdout, /published tiny@1 \(labels: latest, stable\)/);
    assert.match(train.stderr, /tfjs backend: wasm/);

    const listed = JSON.parse((await gim(['models', '--models-dir', models, '--json'])).stdout);
    assert.equal(listed.length, 1);
    assert.deepEqual(listed[0].labels, ['latest', 'stable']);
    assert.deepEqual(
      listed[0].layers.map((l: { dim: number }) => l.dim),
      [4, 8, 8],
    );

    // A real PNG of a fixture image.
    const ds = await loadFashionMnist(FIXTURE, 'test');
    const item = await ds.read([3]);
    const png = join(dir, 'item.png');
    await sharp(Buffer.from(item.images.map((v) => Math.round(v * 255))), {
      raw: { width: 28, height: 28, channels: 1 },
    })
      .png()
      .toFile(png);
    const out = JSON.parse(
      (
        await gim([
          'embed',
          png,
          '--model',
          'tiny@stable',
          '--models-dir',
          models,
          '--layer',
          '2,last',
          '--pooling',
          'grid2',
        ])
      ).stdout,
    );
    assert.equal(out.model, 'tiny');
    assert.equal(out.version, 1);
    assert.deepEqual(out.layers, [2, 3]);
    assert.deepEqual(out.dims, { '2': 72, '3': 72 });

    const { manifest, modules } = await new StackStore(models).load('tiny@1');
    const stack = await EncoderStack.fromManifest(manifest, modules);
    const pixels = await decodeImage(await sharp(png).toBuffer(), {
      height: 28,
      width: 28,
      channels: 1,
    });
    const grids = stack.embed(pixels, 1, [3]);
    const g3 = grids.get(3)!;
    const want = Array.from(poolGrid(g3.dataSync() as Float32Array, gridShape(g3), 'grid2'));
    const got = out.items[0].layers['3'] as number[];
    assert.equal(got.length, want.length);
    got.forEach((v, i) =>
      assert.ok(Math.abs(v - want[i]!) <= 1e-6, `dim ${i}: ${v} vs ${want[i]}`),
    );
    tf.dispose([...grids.values()]);
    stack.dispose();
  });

  test('bad input exits 2 with a message that says what to fix', async () => {
    await assert.rejects(
      gim(['embed', 'nope.png', '--model', 'ghost', '--models-dir', join(dir, 'models')]),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2);
        assert.match(e.stderr, /ghost/);
        return true;
      },
    );
    await assert.rejects(
      gim(['train', 'image', '--name', 'x']),
      (e: { code: number; stderr: string }) => {
        assert.notEqual(e.code, 0);
        assert.match(e.stderr, /--data/);
        return true;
      },
    );
  });
});
