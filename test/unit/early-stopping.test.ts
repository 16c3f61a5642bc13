import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { EarlyStopping, type EpochScores } from '../../src/gim/classify/early-stopping.js';
import { LinearProbe, type FeatureSet } from '../../src/gim/classify/linear-probe.js';
import { DEFAULT_HEAD_OPTIONS, fitHead } from '../../src/gim/classify/fit-head.js';
import { Rng } from '../../src/gim/random.js';
import { gimError } from '../helpers/gim-error.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const plan = await testBackends();

/** Feeds scores epoch by epoch; the epoch it stops at (or the last) and the epoch it keeps. */
function run(s: EarlyStopping, scores: EpochScores[]): { stop: number; kept: number } {
  for (const [i, sc] of scores.entries()) {
    s.update(i + 1, sc);
    if (s.exhausted(i + 1)) return { stop: i + 1, kept: s.bestEpoch };
  }
  return { stop: scores.length, kept: s.bestEpoch };
}

// The shape the Fashion-MNIST heads showed: the loss bottoms out at epoch 2, the accuracy climbs to 5.
const OVERCONFIDENT: EpochScores[] = [
  { loss: 0.5, accuracy: 0.8 },
  { loss: 0.45, accuracy: 0.82 },
  { loss: 0.47, accuracy: 0.84 },
  { loss: 0.5, accuracy: 0.85 },
  { loss: 0.55, accuracy: 0.86 },
  { loss: 0.6, accuracy: 0.85 },
  { loss: 0.66, accuracy: 0.86 },
  { loss: 0.7, accuracy: 0.84 },
];

describe('EarlyStopping', () => {
  test('accuracy keeps the epoch of the highest validation accuracy while the loss rises', () => {
    assert.deepEqual(run(new EarlyStopping('accuracy', 3), OVERCONFIDENT), { stop: 8, kept: 5 });
    assert.deepEqual(run(new EarlyStopping('loss', 3), OVERCONFIDENT), { stop: 5, kept: 2 });
  });

  test('an equal accuracy counts as better only with a lower loss', () => {
    const s = new EarlyStopping('accuracy', 2);
    assert.equal(s.update(1, { loss: 0.5, accuracy: 0.9 }), true);
    assert.equal(s.update(2, { loss: 0.6, accuracy: 0.9 }), false);
    assert.equal(s.update(3, { loss: 0.4, accuracy: 0.9 }), true);
    assert.equal(s.bestEpoch, 3);
    assert.equal(s.exhausted(4), false);
    assert.equal(s.exhausted(5), true);
  });

  test('bad rule or patience is invalid_argument', () => {
    assert.throws(
      () => new EarlyStopping('f1' as 'loss', 3),
      gimError('invalid_argument', /accuracy, loss/),
    );
    assert.throws(() => new EarlyStopping('loss', 0), gimError('invalid_argument', /patience/));
  });
});

/** Two overlapping classes in `dim` dimensions: a fast learning rate makes the head overconfident. */
function noisy(n: number, dim: number, seed: number): FeatureSet {
  const rng = new Rng(seed);
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 2;
    for (let d = 0; d < dim; d++)
      x[i * dim + d] = (d === 0 ? (y[i] === 1 ? 0.6 : -0.6) : 0) + 2 * rng.next() - 1;
  }
  return { x, y, n, dim };
}

describeEachBackend(plan, 'early stopping in LinearProbe and fitHead', () => {
  const train = noisy(120, 24, 1);
  const validation = noisy(200, 24, 2);
  const fit = (earlyStopping: 'accuracy' | 'loss' | undefined) =>
    LinearProbe.fit(
      train,
      2,
      {
        epochs: 60,
        batchSize: 8,
        learningRate: 0.05,
        patience: 8,
        seed: 3,
        ...(earlyStopping ? { earlyStopping } : {}),
      },
      undefined,
      validation,
    );

  test('keeps the best validation accuracy (the default), not the lowest loss', () => {
    const tensors = tf.memory().numTensors;
    const byDefault = fit(undefined);
    const byLoss = fit('loss');
    try {
      const h = byDefault.history;
      // The same trajectory up to the earlier stop: only the rule differs.
      const common = Math.min(h.validationLoss.length, byLoss.history.validationLoss.length);
      assert.deepEqual(
        h.validationLoss.slice(0, common),
        byLoss.history.validationLoss.slice(0, common),
      );
      const acc = h.validationAccuracy;
      assert.equal(acc.length, h.trainLoss.length);
      const bestAcc = Math.max(...acc);
      assert.equal(acc[h.bestEpoch - 1], bestAcc, 'the kept epoch has the highest accuracy');
      // The probe holds that epoch's weights.
      assert.equal(byDefault.accuracy(validation), bestAcc);
      const lossBest = byLoss.history.bestEpoch;
      const minLoss = Math.min(...byLoss.history.validationLoss);
      assert.equal(byLoss.history.validationLoss[lossBest - 1], minLoss);
      assert.ok(
        byLoss.accuracy(validation) < bestAcc,
        `the loss rule keeps epoch ${lossBest} at ${byLoss.accuracy(validation)}, below ${bestAcc}`,
      );
      assert.ok(h.stoppedEarly);
      assert.equal(h.trainLoss.length, h.bestEpoch + 8, 'patience 8 after the best epoch');
    } finally {
      byDefault.dispose();
      byLoss.dispose();
    }
    assert.equal(tf.memory().numTensors, tensors);
  });

  test('fitHead records the rule it used and the validation accuracy of every epoch', () => {
    const labels = ['a', 'b'];
    const data = noisy(200, 6, 4);
    const fitted = fitHead(data, labels, { epochs: 15 });
    assert.equal(fitted.training.earlyStopping, DEFAULT_HEAD_OPTIONS.earlyStopping);
    assert.equal(fitted.training.earlyStopping, 'accuracy');
    assert.equal(fitted.report.validationAccuracy.length, fitted.report.epochs);
    assert.equal(
      fitted.report.validationAccuracy[fitted.report.bestEpoch - 1],
      fitted.report.validation?.accuracy,
    );
    const old = fitHead(data, labels, { epochs: 15, earlyStopping: 'loss' });
    assert.equal(old.training.earlyStopping, 'loss');
    assert.throws(
      () => fitHead(data, labels, { earlyStopping: 'f1' as 'loss' }),
      gimError('invalid_argument', /earlyStopping must be one of accuracy, loss/),
    );
  });
});
