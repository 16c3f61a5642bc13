import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import { GreedyTrainer } from '../../src/gim/training/greedy-trainer.js';
import { audioTraining } from '../../src/gim/training/audio-training.js';
import { resolveTrainConfig } from '../../src/gim/training/config.js';
import { Rng } from '../../src/gim/random.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const plan = await testBackends();

const T = 3200; // 0.2 s: 20 frames at the last conv
const adapter = defaultAudioAdapter({ windowSamples: T });

/** Clips of a few harmonics with a per-clip pitch and glide, plus noise: learnable structure. */
function clips(n: number, rng: Rng): Float32Array {
  const out = new Float32Array(n * T);
  for (let i = 0; i < n; i++) {
    const f0 = 90 + rng.next() * 200;
    const glide = (rng.next() - 0.5) * 100;
    for (let t = 0; t < T; t++) {
      const f = f0 + (glide * t) / T;
      const phase = (2 * Math.PI * f * t) / 16000;
      out[i * T + t] =
        Math.sin(phase) +
        0.5 * Math.sin(2 * phase) +
        0.25 * Math.sin(3 * phase) +
        0.05 * (rng.next() - 0.5);
    }
  }
  return out;
}

/** Step-0 loss near ln 11 (10 negatives), 41 steps without a tensor leak, every module's loss lower. */
function assertLearns(trainer: GreedyTrainer, fixed: { data: Float32Array; n: number }): void {
  const before = trainer.evaluate(fixed, new Rng(5));
  before.forEach((l, i) =>
    assert.ok(Math.abs(l - Math.log(11)) < 0.1, `module ${i + 1} step-0 loss ${l}`),
  );
  const rng = new Rng(9);
  trainer.step({ data: clips(4, rng), n: 4 }, [1, 2, 3, 4, 5, 6], rng);
  const tensors = tf.memory().numTensors;
  for (let s = 0; s < 40; s++) trainer.step({ data: clips(4, rng), n: 4 }, [1, 2, 3, 4, 5, 6], rng);
  assert.equal(tf.memory().numTensors, tensors, 'training steps leaked tensors');
  const after = trainer.evaluate(fixed, new Rng(5));
  after.forEach((l, i) =>
    assert.ok(l < (before[i] as number) - 0.02, `module ${i + 1}: ${before[i]} -> ${l}`),
  );
}

describeEachBackend(plan, 'audio training', () => {
  test('audio through the same GreedyTrainer: step-0 near ln 11, a short run lowers every module loss, no tensor leak', () => {
    const stack = AudioEncoderStack.create(adapter, audioModuleConfigs(8, 8), 3);
    const trainer = new GreedyTrainer(
      stack,
      resolveTrainConfig({ negatives: 10, positiveWindow: 16, learningRate: 3e-3, seed: 2 }),
    );
    const fixed = { data: clips(4, new Rng(100)), n: 4 };
    assertLearns(trainer, fixed);
    const grids = stack.embed(fixed.data, 4, [1, 6]);
    assert.deepEqual(grids.get(1)!.shape, [4, stack.frames(T)[0], 8]);
    assert.deepEqual(grids.get(6)!.shape, [4, 20, 8]);
    tf.dispose([...grids.values()]);
    trainer.dispose();
    stack.dispose();
  });

  test("lossNorm layer: every frame vector in the loss (the GRU module's conv5 targets too) is layer-normalised; step-0 near ln 11; it learns; no tensor leak", () => {
    const stack = AudioEncoderStack.create(adapter, audioModuleConfigs(8, 8), 3);
    const config = resolveTrainConfig({
      negatives: 10,
      positiveWindow: 16,
      learningRate: 3e-3,
      seed: 2,
      lossNorm: 'layer',
    });
    const trainer = new GreedyTrainer(stack, config);
    const fixed = { data: clips(4, new Rng(100)), n: 4 };
    // The modality's encodings must be the plain ones with each row centred and divided by
    // sqrt(its variance + 1e-5), computed here by hand.
    const plain = audioTraining(stack, { ...config, lossNorm: 'none' });
    const input = trainer.modality.input(fixed, undefined);
    for (const m of [1, 5, 6]) {
      tf.tidy(() => {
        let x: tf.Tensor4D = input;
        for (let k = 1; k < m; k++) x = stack.layer(k).apply(x) as tf.Tensor4D;
        const y = stack.layer(m).apply(x) as tf.Tensor4D;
        const normed = trainer.modality.encodings(m, x, y);
        const raw = plain.encodings(m, x, y);
        for (const key of ['context', 'targets'] as const) {
          const rows = raw[key].arraySync();
          const expected = rows.map((r) => {
            const mu = r.reduce((a, b) => a + b, 0) / r.length;
            const v = r.reduce((a, b) => a + (b - mu) ** 2, 0) / r.length;
            return r.map((e) => (e - mu) / Math.sqrt(v + 1e-5));
          });
          const got = normed[key].arraySync();
          assert.equal(got.length, expected.length);
          const worst = Math.max(
            ...got.flatMap((r, i) => r.map((e, j) => Math.abs(e - expected[i]![j]!))),
          );
          assert.ok(worst < 1e-3, `module ${m} ${key}: off by ${worst}`);
          const change = Math.max(
            ...got.flatMap((r, i) => r.map((e, j) => Math.abs(e - rows[i]![j]!))),
          );
          assert.ok(change > 0.1, `module ${m} ${key}: normalising changed nothing (${change})`);
        }
      });
    }
    input.dispose();
    assertLearns(trainer, fixed);
    trainer.dispose();
    stack.dispose();
  });
});
