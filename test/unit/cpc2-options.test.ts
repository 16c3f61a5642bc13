import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { gridPairs } from '../../src/gim/losses/info-nce.js';
import { Rng } from '../../src/gim/random.js';
import { resolveTrainConfig, type TrainConfig } from '../../src/gim/training/config.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { defaultImageAdapter, imagesToPatches, patchGrid } from '../../src/gim/modality/image.js';
import { GreedyTrainer } from '../../src/gim/training/greedy-trainer.js';

const adapter = defaultImageAdapter({ mean: [0.29], std: [0.35] });

function images(seed: number, n: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * 28 * 28 }, () => rng.next());
}

/** (image, row, col) of a flat index into a batch of rows x cols grids. */
function cell(i: number, rows: number, cols: number): [number, number, number] {
  return [Math.floor(i / (rows * cols)), Math.floor((i % (rows * cols)) / cols), i % cols];
}

test('four-direction grid pairs: direction-major steps, each pair at its offset, every valid cell once', () => {
  const rows = 5;
  const cols = 4;
  const offsets = [2, 3];
  const dirs = ['down', 'up', 'right', 'left'] as const;
  const pairs = gridPairs(2, rows, cols, offsets, dirs);
  assert.equal(pairs.steps.length, 8);
  assert.equal(pairs.poolSize, 2 * rows * cols);
  const delta = { down: [1, 0], up: [-1, 0], right: [0, 1], left: [0, -1] } as const;
  dirs.forEach((d, di) =>
    offsets.forEach((off, oi) => {
      const { context, target } = pairs.steps[di * offsets.length + oi]!;
      const vertical = d === 'down' || d === 'up';
      const expected = 2 * (vertical ? (rows - off) * cols : rows * (cols - off));
      assert.equal(context.length, expected, `${d} ${off}: pair count`);
      assert.equal(new Set(context).size, expected, `${d} ${off}: each context cell once`);
      for (let i = 0; i < context.length; i++) {
        const [b, r, c] = cell(context[i]!, rows, cols);
        const [tb, tr, tc] = cell(target[i]!, rows, cols);
        assert.equal(tb, b, 'same image');
        assert.equal(tr - r, delta[d][0] * off, `${d} ${off}: row step`);
        assert.equal(tc - c, delta[d][1] * off, `${d} ${off}: column step`);
      }
    }),
  );
  // `up` pairs are the `down` pairs reversed.
  const down = pairs.steps[0]!;
  const up = pairs.steps[2]!;
  const key = (a: number, b: number) => `${a}>${b}`;
  const downSet = new Set(Array.from(down.context, (c, i) => key(down.target[i]!, c)));
  assert.deepEqual(new Set(Array.from(up.context, (c, i) => key(c, up.target[i]!))), downSet);
  // The default is GIM's: down only, the same pairs as before the option.
  assert.deepEqual(gridPairs(2, rows, cols, offsets), gridPairs(2, rows, cols, offsets, ['down']));
  assert.throws(() => gridPairs(1, 6, 4, [4], ['right']), /outside 1\.\.3 \(right\)/);
});

const jitterAll = { jitter: 2, flip: true, brightness: 0.5, contrast: 0.5 };

test('patch augmentation keeps the shape and is reproducible from the seed', () => {
  const x = images(1, 3);
  const { rows, cols } = patchGrid(adapter);
  const a = imagesToPatches(x, 3, adapter, new Rng(5), jitterAll);
  const b = imagesToPatches(x, 3, adapter, new Rng(5), jitterAll);
  const c = imagesToPatches(x, 3, adapter, new Rng(6), jitterAll);
  const plain = imagesToPatches(x, 3, adapter, new Rng(5));
  assert.equal(a.length, 3 * rows * cols * 8 * 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.notDeepEqual(a, plain);
  assert.ok(a.every(Number.isFinite));
  // Inactive options leave the patches and the random stream as they were.
  const none = { jitter: 0, flip: false, brightness: 0, contrast: 0 };
  assert.deepEqual(imagesToPatches(x, 3, adapter, new Rng(5), none), plain);
  // No augmentation without a random source (inference).
  assert.deepEqual(
    imagesToPatches(x, 3, adapter, undefined, jitterAll),
    imagesToPatches(x, 3, adapter),
  );
});

test('patch augmentation draws for each patch on its own', () => {
  const x = images(2, 1);
  const P = 64;
  // No whole-image crop or flip: only the patches' own augmentation differs from `plain`.
  const still = { ...adapter, cropPad: 0, flip: false };
  const plain = imagesToPatches(x, 1, still);
  // Brightness only: every patch is shifted by one constant, and the constants differ.
  const bright = imagesToPatches(x, 1, still, new Rng(3), {
    jitter: 0,
    flip: false,
    brightness: 0.5,
    contrast: 0,
  });
  const shifts: number[] = [];
  for (let p = 0; p < 36; p++) {
    const d0 = bright[p * P]! - plain[p * P]!;
    for (let i = 1; i < P; i++)
      assert.ok(Math.abs(bright[p * P + i]! - plain[p * P + i]! - d0) < 1e-5, `patch ${p}`);
    assert.ok(Math.abs(d0) <= 0.5 + 1e-6);
    shifts.push(d0);
  }
  assert.ok(new Set(shifts.map((s) => s.toFixed(4))).size > 30, 'per-patch offsets');
  // Contrast only keeps each patch's mean.
  const contrast = imagesToPatches(x, 1, still, new Rng(3), {
    jitter: 0,
    flip: false,
    brightness: 0,
    contrast: 0.5,
  });
  for (let p = 0; p < 36; p++) {
    let m0 = 0;
    let m1 = 0;
    for (let i = 0; i < P; i++) {
      m0 += plain[p * P + i]!;
      m1 += contrast[p * P + i]!;
    }
    assert.ok(Math.abs(m0 - m1) / P < 1e-4, `patch ${p} mean`);
  }
  // Flip only: each patch is either itself or its mirror, and both happen.
  const flipped = imagesToPatches(x, 1, still, new Rng(3), {
    jitter: 0,
    flip: true,
    brightness: 0,
    contrast: 0,
  });
  let mirrored = 0;
  for (let p = 0; p < 36; p++) {
    const same = Array.from({ length: P }, (_, i) => flipped[p * P + i] === plain[p * P + i]);
    const mirror = Array.from(
      { length: P },
      (_, i) => flipped[p * P + i] === plain[p * P + Math.floor(i / 8) * 8 + 7 - (i % 8)],
    );
    assert.ok(same.every(Boolean) || mirror.every(Boolean), `patch ${p}`);
    if (!same.every(Boolean)) mirrored++;
  }
  assert.ok(mirrored > 5 && mirrored < 31, `${mirrored} of 36 mirrored`);
});

function trainer(config: Partial<TrainConfig>) {
  const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 11);
  return { stack, t: new GreedyTrainer(stack, resolveTrainConfig({ seed: 11, ...config })) };
}

test('four directions, layer-normalised loss and patch augmentation: step-0 loss ~ ln(1 + N), one W_k per direction and offset', () => {
  const before = tf.memory().numTensors;
  const { stack, t } = trainer({
    directions: ['down', 'up', 'right', 'left'],
    lossNorm: 'layer',
    patchAugment: jitterAll,
    learningRate: 1e-2,
  });
  assert.deepEqual(
    t.predictors.map((p) => p.weight.shape),
    [
      [4, 16 * 4],
      [8, 16 * 8],
      [8, 16 * 8],
    ],
  );
  const batch = { data: images(1, 4), n: 4 };
  for (const l of t.evaluate(batch, new Rng(2)))
    assert.ok(Math.abs(l - Math.log(17)) < 0.05, `step-0 loss ${l}`);
  // The training step (augmented) reports the loss before its update.
  const first = t.step(batch, [1, 2, 3], new Rng(3));
  for (const l of first) assert.ok(Math.abs(l - Math.log(17)) < 0.05, `step-0 train loss ${l}`);
  // And it learns: a few steps on the same batch lower every module's loss.
  let last = first;
  for (let i = 0; i < 30; i++) last = t.step(batch, [1, 2, 3], new Rng(3));
  last.forEach((l, i) => assert.ok(l < first[i]! - 0.05, `module ${i + 1}: ${first[i]} -> ${l}`));
  t.dispose();
  stack.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('the options are checked', () => {
  assert.throws(
    () => resolveTrainConfig({ directions: ['down', 'down'] }),
    /directions must be distinct values/,
  );
  assert.throws(
    () => resolveTrainConfig({ directions: ['diagonal' as 'up'] }),
    /directions must be distinct values/,
  );
  assert.throws(() => resolveTrainConfig({ directions: [] }), /directions/);
  assert.throws(
    () => resolveTrainConfig({ patchAugment: { ...jitterAll, contrast: 1 } }),
    /patchAugment/,
  );
  assert.throws(
    () => resolveTrainConfig({ patchAugment: { ...jitterAll, jitter: 0.5 } }),
    /patchAugment/,
  );
  assert.throws(() => resolveTrainConfig({ lossNorm: 'batch' as 'layer' }), /lossNorm/);
  // Offsets must fit the grid in every direction used.
  const wide = defaultImageAdapter({ mean: [0.29], std: [0.35], height: 16, width: 28 });
  const stack = EncoderStack.create(wide, visionModuleConfigs(wide, [4], [1]), 1);
  assert.throws(
    () => new GreedyTrainer(stack, resolveTrainConfig({ offsets: [3] })),
    /below the grid's 3 rows/,
  );
  new GreedyTrainer(stack, resolveTrainConfig({ offsets: [3], directions: ['right'] })).dispose();
  stack.dispose();
});
