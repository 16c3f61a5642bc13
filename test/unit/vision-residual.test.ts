import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { VisionModule, type VisionModuleConfig } from '../../src/gim/encoders/vision-module.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { Rng } from '../../src/gim/random.js';

// A module of two 3x3 convs (`--residual-kernels 3`): its config, weights and load checks. The
// forward passes are compared with conv2d and the LayersModel in greedy-trainer.test.ts.
const adapter = defaultImageAdapter({ mean: [0.29], std: [0.35] });

function patches(seed: number, n: number): tf.Tensor4D {
  const rng = new Rng(seed);
  return tf.tensor4d(
    Float32Array.from({ length: n * 8 * 8 }, () => rng.next()),
    [n, 8, 8, 1],
  );
}

test('configs record a residual kernel only when it is not 1, so older stacks compare equal', () => {
  const plain = visionModuleConfigs(adapter, [4, 8, 8]);
  assert.ok(plain.every((c) => !('residualKernelSize' in c)));
  assert.deepEqual(visionModuleConfigs(adapter, [4, 8, 8], undefined, [1, 1, 1]), plain);
  const mixed = visionModuleConfigs(adapter, [4, 8, 8], undefined, [3, 3, 1]);
  assert.deepEqual(
    mixed.map((c) => c.residualKernelSize),
    [3, 3, undefined],
  );
  assert.throws(
    () => visionModuleConfigs(adapter, [4, 8, 8], undefined, [3, 3]),
    /one residual kernel per module: 3 channel counts, 2 residual kernels/,
  );
  assert.throws(
    () => EncoderStack.create(adapter, visionModuleConfigs(adapter, [4], undefined, [2]), 1),
    (e: Error & { code?: string }) =>
      e.code === 'invalid_argument' && /residualKernelSize \(1 or 3\)/.test(e.message),
  );
});

test('a residual-3 module has a 3x3 second conv, mixes neighbours, and survives a save and load', async () => {
  const before = tf.memory().numTensors;
  const [config] = visionModuleConfigs(adapter, [4], undefined, [3]) as [VisionModuleConfig];
  const m = VisionModule.create(config, 5);
  assert.deepEqual(
    m.variables.map((v) => v.shape),
    [[3, 3, 1, 4], [4], [3, 3, 4, 4], [4]],
  );
  const [plainConfig] = visionModuleConfigs(adapter, [4]) as [VisionModuleConfig];
  const plain = VisionModule.create(plainConfig, 5);
  // Same first conv (same seed), different second: the outputs differ.
  const x = patches(1, 3);
  const y = m.apply(x);
  const yPlain = plain.apply(x);
  assert.deepEqual(y.shape, [3, 8, 8, 4]);
  assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(y, yPlain))).dataSync()[0]!) > 1e-3);
  // Receptive field: a pixel reaches outputs two pixels away through two 3x3 convs, one through
  // a 3x3 and a 1x1.
  const reach = (mod: VisionModule) =>
    tf.tidy(() => {
      const bumped = tf.add(x, tf.scatterND([[0, 4, 4, 0]], [5], x.shape)) as tf.Tensor4D;
      const d = tf.abs(tf.sub(mod.apply(bumped), mod.apply(x))).arraySync() as number[][][][];
      const at = (r: number, c: number) => Math.max(...(d[0]![r]![c] as number[]));
      return { near: at(4, 5), far: at(4, 6) };
    });
  const r3 = reach(m);
  const r1 = reach(plain);
  assert.ok(r3.near > 0 && r3.far > 0, `residual 3: ${JSON.stringify(r3)}`);
  assert.ok(r1.near > 0 && r1.far === 0, `residual 1: ${JSON.stringify(r1)}`);

  const artifacts = await m.artifacts();
  const again = await VisionModule.fromArtifacts(config, artifacts);
  const y2 = again.apply(x);
  assert.deepEqual(y2.dataSync(), y.dataSync());
  // Weights of one kind refused under a config of the other, with the shapes that differ.
  await assert.rejects(
    VisionModule.fromArtifacts(plainConfig, artifacts),
    (e: Error & { code?: string }) =>
      e.code === 'invalid_data' &&
      e.message.includes('3x3x4x4') &&
      e.message.includes('the config needs [3x3x1x4, 4, 1x1x4x4, 4]'),
  );
  await assert.rejects(VisionModule.fromArtifacts(config, await plain.artifacts()), /3x3x4x4/);

  // Repeated forward passes leave no tensor behind.
  tf.dispose([y, yPlain, y2]);
  const settled = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) tf.dispose([again.apply(x), m.apply(x)]);
  assert.equal(tf.memory().numTensors, settled);
  [m, plain, again].forEach((v) => v.dispose());
  x.dispose();
  assert.equal(tf.memory().numTensors, before);
});
