import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import type * as tf from '@tensorflow/tfjs';
import { gim, TINY_AUDIO_STACK } from '../helpers/cli.js';
import { bootApp, FIXTURE, fixturePngs, waitReady, type TestApp } from './serve-fixtures.js';
import { selectBackend } from '../../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { audioManifest, imageManifest } from '../../src/gim/store/manifest.js';
import { StackStore } from '../../src/gim/store/stack-store.js';

/** The bytes of every module's weights, module by module. */
function weightBytes(modules: tf.io.ModelArtifacts[]): Buffer[] {
  return modules.map((m) => {
    const data = m.weightData;
    assert.ok(data instanceof ArrayBuffer, 'one weight buffer per module');
    return Buffer.from(data);
  });
}

describe('gim train --epochs 0: the untrained (random-init) twin', () => {
  let dir = '';
  let models = '';
  let app: TestApp | undefined;
  const common = ['--data', FIXTURE, '--channels', '4,8', '--seed', '7', '--batch-size', '8'];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-untrained-'));
    models = join(dir, 'models');
    await selectBackend({ force: 'wasm' });
  });
  after(async () => {
    await app?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('publishes the initial weights of the seed, marked untrained, with golden embeddings', async () => {
    // Another run's checkpoint in the checkpoint directory: not this run's to read or remove.
    const ck = join(dir, 'ck');
    await mkdir(join(ck, 'ckpt-00000005'), { recursive: true });
    await writeFile(join(ck, 'latest.json'), '{"step": 5, "checkpoint": "ckpt-00000005"}');
    const out = await gim([
      'train',
      'image',
      ...common,
      '--name',
      'twin',
      '--epochs',
      '0',
      '--models-dir',
      models,
      '--checkpoint-dir',
      ck,
      '--resume',
    ]);
    assert.match(out.stdout, /published twin@1 .*untrained: the initial weights of seed 7/);
    assert.match(out.stderr, /epochs 0 trains nothing: no checkpoint is read/);
    assert.deepEqual((await readdir(ck)).sort(), ['ckpt-00000005', 'latest.json']);

    const { manifest, modules } = await new StackStore(models).load('twin@1');
    assert.equal(manifest.training.untrained, true);
    assert.deepEqual(
      [manifest.training.epochs, manifest.training.steps, manifest.training.seed, manifest.parent],
      [0, 0, 7, null],
    );
    assert.deepEqual(
      manifest.modules.map((m) => m.finalLoss),
      [null, null],
    );
    assert.ok(manifest.golden, 'golden embeddings recorded at publish, as for any version');
    assert.equal(manifest.golden.layers.length, 2);

    // Bit for bit the stack EncoderStack.create makes from the same adapter, modules and seed.
    const { adapter } = imageManifest(manifest);
    const fresh = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8], [1, 2]), 7);
    const want = await fresh.artifacts();
    fresh.dispose();
    assert.deepEqual(
      modules.map((m) => m.weightSpecs),
      want.map((m) => m.weightSpecs),
    );
    const [got, expected] = [weightBytes(modules), weightBytes(want)];
    got.forEach((bytes, i) => assert.ok(bytes.equals(expected[i]!), `module ${i + 1} weights`));
  });

  test('is the fair twin of a trained run: same normalisation from the data, same modules', async () => {
    const out = await gim([
      'train',
      'image',
      ...common,
      '--name',
      'trained',
      '--epochs',
      '1',
      '--max-steps-per-epoch',
      '1',
      '--models-dir',
      models,
      '--checkpoint-dir',
      join(dir, 'ck-trained'),
    ]);
    assert.match(out.stdout, /published trained@1 .*final losses/);
    const store = new StackStore(models);
    const twin = await store.load('twin@1');
    const trained = await store.load('trained@1');
    assert.equal(trained.manifest.training.untrained, undefined);
    assert.deepEqual(twin.manifest.adapter, trained.manifest.adapter);
    assert.deepEqual(
      twin.manifest.modules.map((m) => m.config),
      trained.manifest.modules.map((m) => m.config),
    );
    assert.equal(twin.manifest.data.fingerprint, trained.manifest.data.fingerprint);
    // One step moved the weights away from the shared start.
    assert.ok(!weightBytes(twin.modules)[0]!.equals(weightBytes(trained.modules)[0]!));
  });

  test('models lists it as untrained; the service describes it so and serves it', async () => {
    const listed = JSON.parse((await gim(['models', '--models-dir', models, '--json'])).stdout);
    const byName = new Map(listed.map((r: { name: string; untrained: boolean }) => [r.name, r]));
    assert.deepEqual(
      ['twin', 'trained'].map((n) => (byName.get(n) as { untrained: boolean }).untrained),
      [true, false],
    );
    const text = (await gim(['models', '--models-dir', models])).stdout;
    assert.match(text, /^twin@1 \[latest\] .* UNTRAINED \(initial weights, seed 7\)/m);
    assert.doesNotMatch(text, /^trained@1 .*UNTRAINED/m);

    app = await bootApp({ MODELS_DIR: models });
    await waitReady(app.server);
    const described = await request(app.server).get('/v1/models/twin/versions/1');
    assert.equal(described.status, 200, JSON.stringify(described.body));
    assert.equal(described.body.untrained, true);
    const other = await request(app.server).get('/v1/models/trained/versions/1');
    assert.equal(other.body.untrained, false);

    const [png] = await fixturePngs(1);
    const res = await request(app.server)
      .post('/v1/models/twin/embeddings?layer=2&pooling=mean')
      .set('Content-Type', 'image/png')
      .send(png);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.version, 1);
    assert.deepEqual(
      res.body.results.map((r: { layer: number; dim: number }) => [r.layer, r.dim]),
      [[2, 8]],
    );
  });

  test('train audio --epochs 0: the same, for an audio stack', async () => {
    const speakers = new URL('../fixtures/audio/speakers', import.meta.url).pathname;
    const out = await gim([
      'train',
      'audio',
      '--data',
      speakers,
      '--name',
      'voice',
      '--epochs',
      '0',
      ...TINY_AUDIO_STACK,
      '--seed',
      '5',
      '--models-dir',
      models,
    ]);
    assert.match(out.stdout, /published voice@1 .*untrained: the initial weights of seed 5/);
    const { manifest, modules } = await new StackStore(models).load('voice@1');
    assert.equal(manifest.training.untrained, true);
    assert.ok(manifest.golden);
    const fresh = AudioEncoderStack.create(
      audioManifest(manifest).adapter,
      audioModuleConfigs(8, 8),
      5,
    );
    const want = weightBytes(await fresh.artifacts());
    fresh.dispose();
    weightBytes(modules).forEach((bytes, i) =>
      assert.ok(bytes.equals(want[i]!), `module ${i + 1} weights`),
    );
  });

  test('--epochs 0 with --parent is refused as bad usage (exit 2)', async () => {
    await assert.rejects(
      gim([
        'train',
        'image',
        ...common,
        '--name',
        'trained',
        '--epochs',
        '0',
        '--parent',
        'trained@1',
        '--from-module',
        '2',
        '--models-dir',
        models,
      ]),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2, e.stderr);
        assert.match(e.stderr, /epochs 0 publishes a new stack with its initial weights/);
        return true;
      },
    );
  });

  test('a retrain from a parent keeps its modules (not the --channels default); more --channels grow it', async () => {
    const out = await gim([
      'train',
      'image',
      ...['--data', FIXTURE, '--seed', '7', '--batch-size', '8', '--max-steps-per-epoch', '1'],
      ...['--name', 'trained', '--parent', 'trained@1', '--from-module', '2'],
      ...['--models-dir', models],
    ]);
    assert.match(out.stderr, /channels 4\/8 \(from trained@1\), 1 epoch/);
    assert.doesNotMatch(out.stderr, /channels 16\/32\/64/);

    // More --channels than the parent has grow it: only the new module trains, at its --strides.
    const grown = await gim([
      'train',
      'image',
      ...['--data', FIXTURE, '--seed', '7', '--batch-size', '8', '--max-steps-per-epoch', '1'],
      ...[
        '--name',
        'trained',
        '--parent',
        'trained@1',
        '--channels',
        '4,8,8',
        '--strides',
        '1,2,1',
      ],
      ...['--models-dir', models],
    ]);
    assert.match(grown.stderr, /growing trained@1 by 1 module\(s\); training from module 3/);
    const { manifest } = await new StackStore(models).load('trained@latest');
    assert.deepEqual(manifest.parent, { version: 1, fromModule: 3 });
    assert.deepEqual(
      manifest.modules.map((m) => m.outputShape),
      [
        [8, 8, 4],
        [4, 4, 8],
        [4, 4, 8],
      ],
    );
    // Growing that again without --strides keeps its stride-1 module; the new one takes 2.
    await gim([
      'train',
      'image',
      ...['--data', FIXTURE, '--seed', '7', '--batch-size', '8', '--max-steps-per-epoch', '1'],
      ...['--name', 'trained', '--parent', `trained@${manifest.version}`, '--channels', '4,8,8,8'],
      ...['--models-dir', models],
    ]);
    const again = (await new StackStore(models).load('trained@latest')).manifest;
    assert.deepEqual(
      again.modules.map((m) => m.outputShape),
      [
        [8, 8, 4],
        [4, 4, 8],
        [4, 4, 8],
        [2, 2, 8],
      ],
    );
    await assert.rejects(
      gim([
        'train',
        'image',
        ...['--data', FIXTURE, '--max-steps-per-epoch', '1', '--name', 'trained'],
        ...['--parent', 'trained@1', '--channels', '4,8,8', '--strides', '1,2'],
        ...['--models-dir', models],
      ]),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2, e.stderr);
        assert.match(e.stderr, /need one stride per module: 3 channel counts, 2 strides/);
        return true;
      },
    );
  });
});
