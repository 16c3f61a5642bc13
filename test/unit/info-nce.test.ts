import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import {
  gridPairs,
  infoNce,
  sampleNegatives,
  type PositivePairs,
} from '../../src/gim/losses/info-nce.js';
import { Rng } from '../../src/gim/random.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const plan = await testBackends();

describeEachBackend(plan, 'InfoNCE', () => {
  // Four encodings of C = 2, one step (K = 1): z0 predicts z2; negatives z1 and z3.
  const Z = [
    [1, 0],
    [0, 1],
    [2, 1],
    [-1, 1],
  ];
  const pairs: PositivePairs = {
    steps: [{ context: Int32Array.from([0]), target: Int32Array.from([2]) }],
    poolSize: 4,
  };
  const negatives = [Int32Array.from([1, 3])];

  test('equals the hand-computed cross-entropy', () => {
    // preds row 0 = W z0 = [0.5, 1]: scores p·z2 = 2, p·z1 = 1, p·z3 = 0.5.
    const preds = tf.tensor2d([
      [0.5, 1],
      [0, 0],
      [0, 0],
      [0, 0],
    ]);
    const z = tf.tensor2d(Z);
    const loss = infoNce(preds, z, pairs, negatives).dataSync()[0] as number;
    const expected = -2 + Math.log(Math.exp(2) + Math.exp(1) + Math.exp(0.5));
    assert.ok(Math.abs(loss - expected) < 1e-6, `${loss} vs ${expected}`);
    tf.dispose([preds, z]);
  });

  test('is lower for a correct prediction than for a wrong one', () => {
    const z = tf.tensor2d(Z);
    const right = tf.tensor2d([
      [2, 1],
      [0, 0],
      [0, 0],
      [0, 0],
    ]); // points at z2
    const wrong = tf.tensor2d([
      [-1, 1],
      [0, 0],
      [0, 0],
      [0, 0],
    ]); // points at z3
    const lr = infoNce(right, z, pairs, negatives).dataSync()[0] as number;
    const lw = infoNce(wrong, z, pairs, negatives).dataSync()[0] as number;
    assert.ok(lr < lw, `right ${lr} should be below wrong ${lw}`);
    tf.dispose([z, right, wrong]);
  });

  test('analytic gradient matches finite differences', () => {
    const rng = new Rng(5);
    const M = 2 * 4 * 3;
    const C = 3;
    const grid = gridPairs(2, 4, 3, [1, 2]);
    const negs = sampleNegatives(grid, 4, rng);
    const P = Array.from({ length: M * 2 * C }, () => rng.next() - 0.5);
    const Zs = Array.from({ length: M * C }, () => rng.next() - 0.5);
    const f = (p: tf.Tensor, z: tf.Tensor) =>
      infoNce(p as tf.Tensor2D, z as tf.Tensor2D, grid, negs);
    const p = tf.tensor2d(P, [M, 2 * C]);
    const z = tf.tensor2d(Zs, [M, C]);
    const [gp, gz] = tf.grads(f)([p, z]);
    const lossAt = (p2: number[], z2: number[]) =>
      tf.tidy(
        () => f(tf.tensor2d(p2, [M, 2 * C]), tf.tensor2d(z2, [M, C])).dataSync()[0] as number,
      );
    const eps = 1e-2;
    const gpData = gp!.dataSync();
    const gzData = gz!.dataSync();
    for (const i of [0, 7, 20, 50, 100]) {
      const up = [...P];
      const down = [...P];
      up[i]! += eps;
      down[i]! -= eps;
      const numeric = (lossAt(up, Zs) - lossAt(down, Zs)) / (2 * eps);
      assert.ok(
        Math.abs(numeric - (gpData[i] as number)) < 1e-3,
        `dP[${i}] ${numeric} vs ${gpData[i]}`,
      );
    }
    for (const i of [0, 5, 33, 60]) {
      const up = [...Zs];
      const down = [...Zs];
      up[i]! += eps;
      down[i]! -= eps;
      const numeric = (lossAt(P, up) - lossAt(P, down)) / (2 * eps);
      assert.ok(
        Math.abs(numeric - (gzData[i] as number)) < 1e-3,
        `dZ[${i}] ${numeric} vs ${gzData[i]}`,
      );
    }
    tf.dispose([p, z, gp!, gz!]);
  });

  test('value and gradient calls leave no tensor behind', () => {
    const z = tf.tensor2d(Z);
    const preds = tf.tensor2d(Z.map(([a, b]) => [b!, -a!]));
    const f = tf.valueAndGrads((p: tf.Tensor, t: tf.Tensor) =>
      infoNce(p as tf.Tensor2D, t as tf.Tensor2D, pairs, negatives),
    );
    const call = () => {
      const { value, grads } = f([preds, z]);
      tf.dispose([value, ...grads]);
    };
    call();
    const start = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) call();
    assert.equal(tf.memory().numTensors, start);
    tf.dispose([z, preds]);
  });
});

describe('positive pairs', () => {
  test('grid pairs predict the same column, offset rows ahead', () => {
    const g = gridPairs(2, 6, 6, [2, 5]);
    assert.equal(g.poolSize, 72);
    const s0 = g.steps[0]!;
    assert.equal(s0.context.length, 2 * 4 * 6);
    for (let i = 0; i < s0.context.length; i++) assert.equal(s0.target[i]! - s0.context[i]!, 12);
    assert.equal(g.steps[1]!.context.length, 2 * 1 * 6);
    assert.throws(() => gridPairs(1, 6, 6, [6]), /outside/);
  });
});
