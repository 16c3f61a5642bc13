import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gim, TINY_AUDIO_STACK } from '../helpers/cli.js';
import { StackStore } from '../../src/gim/store/stack-store.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const FIXTURE = join(ROOT, 'test/fixtures/fashion-mnist-mini');

/** `gim train image` on the fixture, two steps of 8 images. */
const tinyImageRun = (models: string, checkpoints: string) => [
  ...['train', 'image', '--data', FIXTURE, '--models-dir', models],
  ...['--batch-size', '8', '--max-steps-per-epoch', '2', '--checkpoint-dir', checkpoints],
];

describe('gim train: recipe flags', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-recipe-flags-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('directions, patch augmentation, loss norm, offsets, patch stride, lr schedule and negative source reach the manifest', async () => {
    const models = join(dir, 'models');
    const common = [...tinyImageRun(models, join(dir, 'ck')), '--channels', '4,8'];
    await gim([
      ...common,
      '--name',
      'cpc2',
      '--directions',
      'down,up,right,left',
      '--offsets',
      '2,3',
      '--patch-jitter',
      '1',
      '--patch-flip',
      '--patch-brightness',
      '0.3',
      '--patch-contrast',
      '0.2',
      '--loss-norm',
      'layer',
      '--patch-stride',
      '5',
      '--lr-schedule',
      'cosine',
      '--negatives-from',
      'item',
    ]);
    const { manifest } = await new StackStore(models).load('cpc2@1');
    const config = manifest.training.config as Record<string, unknown>;
    assert.deepEqual(config.directions, ['down', 'up', 'right', 'left']);
    assert.deepEqual(config.offsets, [2, 3]);
    assert.deepEqual(config.patchAugment, {
      jitter: 1,
      flip: true,
      brightness: 0.3,
      contrast: 0.2,
    });
    assert.equal(config.lossNorm, 'layer');
    assert.equal(config.lrSchedule, 'cosine');
    assert.equal(config.negativesFrom, 'item');
    assert.equal((manifest.adapter as { patchStride: number }).patchStride, 5);
    assert.deepEqual(manifest.modules[0]?.gridShape, [5, 5]);

    // Without the flags: GIM's recipe, recorded as such.
    await gim([...common, '--name', 'plain']);
    const plain = (await new StackStore(models).load('plain@1')).manifest.training.config as Record<
      string,
      unknown
    >;
    assert.deepEqual(plain.directions, ['down']);
    assert.deepEqual(plain.offsets, [2, 3, 4, 5]);
    assert.deepEqual(plain.patchAugment, { jitter: 0, flip: false, brightness: 0, contrast: 0 });
    assert.equal(plain.lossNorm, 'none');
    assert.equal(plain.lrSchedule, 'constant');
    assert.equal(plain.negativesFrom, 'batch');

    await assert.rejects(
      gim([...common, '--name', 'bad', '--directions', 'down,diagonal']),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2);
        assert.match(e.stderr, /down, up, right, left/);
        return true;
      },
    );
  });

  test('--residual-kernels: modules of two 3x3 convs, recorded per module and kept when the stack grows', async () => {
    const models = join(dir, 'residual-models');
    const common = [...tinyImageRun(models, join(dir, 'ck-rk')), '--name', 'rk'];
    await gim([...common, '--channels', '4,8', '--residual-kernels', '3,1']);
    const store = new StackStore(models);
    const kernels = async (ref: string) =>
      (await store.load(ref)).manifest.modules.map(
        (m) => (m.config as { residualKernelSize?: number }).residualKernelSize,
      );
    assert.deepEqual(await kernels('rk@1'), [3, undefined]);
    // Grown without the flag: the parent's modules keep theirs, the new one takes 1.
    await gim([...common, '--parent', 'rk@1', '--channels', '4,8,8']);
    assert.deepEqual(await kernels('rk@2'), [3, undefined, undefined]);
    // A retrain cannot swap a parent module's kernel: refused, naming both.
    await assert.rejects(
      gim([...common, '--parent', 'rk@1', '--channels', '4,8,8', '--residual-kernels', '1,1,1']),
      (e: { code: number; stderr: string }) => {
        assert.equal(e.code, 2);
        assert.match(
          e.stderr,
          /channels 4\/8\/8 \(strides 1\/2\/2\) do not extend the stack's 4\/8 \(strides 1\/2, residual kernels 3\/1\)/,
        );
        return true;
      },
    );
    await assert.rejects(
      gim([...common, '--channels', '4,8', '--residual-kernels', '3,2']),
      (e: { code: number; stderr: string }) => {
        assert.notEqual(e.code, 0);
        assert.match(e.stderr, /residualKernelSize \(1 or 3\)/);
        return true;
      },
    );
  });

  test('gim train audio --loss-norm layer: recorded in the manifest (the flag is common to both modalities)', async () => {
    const models = join(dir, 'audio-models');
    await gim([
      'train',
      'audio',
      '--data',
      join(ROOT, 'test/fixtures/audio/speakers'),
      '--name',
      'voice',
      '--models-dir',
      models,
      ...TINY_AUDIO_STACK,
      '--max-steps-per-epoch',
      '2',
      '--loss-norm',
      'layer',
      '--checkpoint-dir',
      join(dir, 'ck-audio'),
    ]);
    const { manifest } = await new StackStore(models).load('voice@1');
    assert.equal(manifest.modality, 'audio');
    assert.equal((manifest.training.config as Record<string, unknown>).lossNorm, 'layer');
  });
});
