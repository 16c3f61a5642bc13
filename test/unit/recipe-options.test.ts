import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { gridPairs, sampleNegatives, timePairs } from '../../src/gim/losses/info-nce.js';
import { Rng } from '../../src/gim/random.js';
import { resolveTrainConfig, scheduledLearningRate } from '../../src/gim/training/config.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { GreedyTrainer } from '../../src/gim/training/greedy-trainer.js';
import { HostAdam } from '../../src/gim/training/host-adam.js';

test('item negatives stay inside the image of the positive target (vision grid)', () => {
  const pairs = gridPairs(5, 6, 6, [2, 3]);
  const negs = sampleNegatives(pairs, 16, new Rng(3), 'item');
  const seen = new Set<number>();
  pairs.steps.forEach(({ target }, k) => {
    const idx = negs[k] as Int32Array;
    assert.equal(idx.length, target.length * 16);
    for (let i = 0; i < target.length; i++)
      for (let j = 0; j < 16; j++) {
        const n = idx[i * 16 + j] as number;
        assert.equal(Math.floor(n / 36), Math.floor((target[i] as number) / 36));
        seen.add(n % 36);
      }
  });
  // Drawn over the whole grid of that image, not one cell.
  assert.equal(seen.size, 36);
});

test('item negatives stay inside the clip of the positive target (audio frames)', () => {
  const pairs = timePairs(3, 40, 4, new Rng(1), 16);
  const negs = sampleNegatives(pairs, 10, new Rng(2), 'item');
  pairs.steps.forEach(({ target }, k) => {
    const idx = negs[k] as Int32Array;
    for (let i = 0; i < target.length; i++)
      for (let j = 0; j < 10; j++)
        assert.equal(
          Math.floor((idx[i * 10 + j] as number) / 40),
          Math.floor((target[i] as number) / 40),
        );
  });
});

test('batch negatives still reach other images', () => {
  const pairs = gridPairs(5, 6, 6, [2]);
  const negs = sampleNegatives(pairs, 16, new Rng(3), 'batch')[0] as Int32Array;
  const target = pairs.steps[0]?.target as Int32Array;
  let other = 0;
  for (let i = 0; i < negs.length; i++)
    if (Math.floor((negs[i] as number) / 36) !== Math.floor((target[i >> 4] as number) / 36))
      other++;
  assert.ok(other > negs.length / 2, `${other} of ${negs.length} from other images`);
});

test('cosine schedule: base at step 0, half way at the middle, near 0 at the end', () => {
  assert.equal(scheduledLearningRate(1e-3, 'cosine', 0, 100), 1e-3);
  assert.ok(Math.abs(scheduledLearningRate(1e-3, 'cosine', 50, 100) - 5e-4) < 1e-12);
  assert.ok(scheduledLearningRate(1e-3, 'cosine', 99, 100) < 1e-6);
  assert.equal(scheduledLearningRate(1e-3, 'constant', 99, 100), 1e-3);
});

test('the trainer applies the schedule to every optimiser', () => {
  const before = tf.memory().numTensors;
  const adapter = defaultImageAdapter({ mean: [0.29], std: [0.35] });
  const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 1);
  const t = new GreedyTrainer(stack, resolveTrainConfig({ lrSchedule: 'cosine' }));
  t.scheduleLearningRate(50, 100);
  for (const o of t.optimizers) assert.ok(Math.abs((o as HostAdam).learningRate - 5e-4) < 1e-12);
  t.dispose();
  stack.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('unknown negative sources and schedules are refused', () => {
  assert.throws(
    () => resolveTrainConfig({ negativesFrom: 'elsewhere' as 'batch' }),
    /negativesFrom must be one of batch, item/,
  );
  assert.throws(
    () => resolveTrainConfig({ lrSchedule: 'step' as 'cosine' }),
    /lrSchedule must be one of constant, cosine/,
  );
});
