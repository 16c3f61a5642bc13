import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { GimError } from '../../src/gim/errors.js';
import { LinearHead } from '../../src/gim/classify/linear-head.js';
import { LinearProbe, type FeatureSet } from '../../src/gim/classify/linear-probe.js';
import { classWeightsFor, fitHead, validationSplit } from '../../src/gim/classify/fit-head.js';
import { classificationMetrics } from '../../src/gim/classify/classification-report.js';
import { Rng } from '../../src/gim/random.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const plan = await testBackends();

/** n items per class around well separated centres in `dim` dimensions (class c: +3 on axis c). */
function blobs(perClass: number[], dim: number, seed: number, spread = 0.5): FeatureSet {
  const rng = new Rng(seed);
  const n = perClass.reduce((a, b) => a + b, 0);
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  let i = 0;
  perClass.forEach((count, c) => {
    for (let k = 0; k < count; k++, i++) {
      y[i] = c;
      for (let d = 0; d < dim; d++)
        x[i * dim + d] = (d === c % dim ? 3 : 0) + spread * (2 * rng.next() - 1);
    }
  });
  return { x, y, n, dim };
}

const LABELS = ['cat', 'dog', 'eel'];

describeEachBackend(plan, 'fitHead', () => {
  test('reaches 100% on a separable set, with a full report', () => {
    const data = blobs([30, 30, 30], 4, 1);
    const tensors = tf.memory().numTensors;
    const { head, report, training } = fitHead(data, LABELS, { epochs: 60, seed: 3 });
    assert.equal(tf.memory().numTensors, tensors, 'fitting leaves no tensors behind');
    assert.equal(report.train.accuracy, 1);
    assert.ok(report.validation, 'a validation split by default');
    assert.equal(report.validation.accuracy, 1);
    assert.equal(report.validation.items + report.train.items, 90);
    assert.equal(report.validation.items, 9, '10% of each class');
    assert.deepEqual(
      report.validation.perClass.map((c) => [c.label, c.support, c.precision, c.recall, c.f1]),
      LABELS.map((l) => [l, 3, 1, 1, 1]),
    );
    assert.deepEqual(report.validation.confusion, [
      [3, 0, 0],
      [0, 3, 0],
      [0, 0, 3],
    ]);
    assert.equal(report.test, null);
    assert.equal(report.validationLoss.length, report.epochs);
    assert.equal(training.classWeightValues, null);
    assert.equal(head.dim, 4);
    assert.deepEqual(head.labels, LABELS);
  });

  test('scores a test set when given one', () => {
    const { report } = fitHead(
      blobs([20, 20, 20], 3, 2),
      LABELS,
      { epochs: 40 },
      {
        test: blobs([5, 5, 5], 3, 99),
      },
    );
    assert.ok(report.test);
    assert.equal(report.test.items, 15);
    assert.equal(report.test.accuracy, 1);
  });

  test('bad options are invalid_argument, naming each problem', () => {
    assert.throws(
      () => fitHead(blobs([3, 3], 2, 1), ['a', 'b'], { epochs: 0, validationFraction: 1 }),
      (e: unknown) =>
        e instanceof GimError &&
        e.code === 'invalid_argument' &&
        /epochs/.test(e.message) &&
        /validationFraction/.test(e.message),
    );
    assert.throws(() => fitHead(blobs([3], 2, 1), ['a']), /at least 2 classes/);
    assert.throws(
      () => fitHead(blobs([3, 3], 2, 1), ['a', 'b'], { classWeights: [1] }),
      /classWeights/,
    );
  });

  test('class weights move the decision towards the rare class', () => {
    // One feature; 90 items of class 0 around 0 and 10 of class 1 around 1, overlapping.
    const rng = new Rng(5);
    const n = 100;
    const x = Float32Array.from(
      { length: n },
      (_, i) => (i < 90 ? 0 : 1) + 0.8 * (rng.next() - 0.5) * 2,
    );
    const y = Int32Array.from({ length: n }, (_, i) => (i < 90 ? 0 : 1));
    const data = { x, y, n, dim: 1 };
    const opts = { epochs: 150, validationFraction: 0, seed: 1 };
    const plain = fitHead(data, ['common', 'rare'], opts);
    const balanced = fitHead(data, ['common', 'rare'], { ...opts, classWeights: 'balanced' });
    assert.deepEqual(balanced.training.classWeightValues, [100 / 180, 100 / 20]);

    const mid = new Float32Array([0.5]);
    const pRare = (h: LinearHead) => h.predict(mid)[1] as number;
    assert.ok(pRare(plain.head) < 0.5, `unweighted: ${pRare(plain.head)} at the midpoint`);
    assert.ok(pRare(balanced.head) > 0.5, `balanced: ${pRare(balanced.head)} at the midpoint`);
    const recall = (r: typeof plain) => r.report.train.perClass[1]!.recall as number;
    assert.ok(recall(balanced) > recall(plain), `${recall(balanced)} vs ${recall(plain)}`);
  });
});

describeEachBackend(plan, 'early stopping', () => {
  test('stops after `patience` worse epochs and restores the best epoch', () => {
    const train = blobs([40, 40], 2, 7);
    // Validation items with flipped labels: the better the fit, the worse the validation loss.
    const flipped = blobs([10, 10], 2, 8);
    flipped.y = flipped.y.map((c) => 1 - c);
    const validationLosses: number[] = [];
    const probe = LinearProbe.fit(
      train,
      2,
      { epochs: 50, batchSize: 16, patience: 3 },
      (_epoch, _loss, v) => validationLosses.push(v as number),
      flipped,
    );
    try {
      const h = probe.history;
      assert.equal(h.bestEpoch, 1);
      assert.equal(h.trainLoss.length, 4, 'epoch 1 best, then 3 worse ones');
      assert.ok(h.stoppedEarly);
      assert.deepEqual(h.validationLoss, validationLosses);
      assert.ok(validationLosses[3]! > validationLosses[0]!);
      // The probe holds epoch 1's weights: its validation loss is epoch 1's, not epoch 4's.
      assert.ok(Math.abs(probe.loss(flipped) - validationLosses[0]!) < 1e-6);
    } finally {
      probe.dispose();
    }
  });

  test('without a validation set every epoch runs and the last one is kept', () => {
    const probe = LinearProbe.fit(blobs([10, 10], 2, 1), 2, { epochs: 7 });
    assert.deepEqual(
      [probe.history.trainLoss.length, probe.history.bestEpoch, probe.history.stoppedEarly],
      [7, 7, false],
    );
    probe.dispose();
  });
});

describeEachBackend(plan, 'LinearHead', () => {
  // One minibatch per epoch: a fast rate, so that 30 steps give confident predictions.
  const fitted = () =>
    fitHead(blobs([15, 15, 15], 5, 11), LABELS, { epochs: 30, learningRate: 1e-2 }).head;

  test('an item gets the same probabilities alone as in a batch', () => {
    const head = fitted();
    const data = blobs([4, 4, 4], 5, 12);
    const batch = head.predict(data.x, data.n);
    for (let i = 0; i < data.n; i++) {
      const one = head.predict(data.x.subarray(i * 5, (i + 1) * 5), 1);
      assert.deepEqual(Array.from(one), Array.from(batch.subarray(i * 3, (i + 1) * 3)));
    }
  });

  test('topK is sorted, its scores are the probabilities and sum to 1 over all classes', () => {
    const head = fitted();
    const data = blobs([2, 2, 2], 5, 13);
    const probs = head.predict(data.x);
    const all = head.topK(probs, 10);
    const top2 = head.topK(probs, 2);
    assert.equal(all.length, 6);
    all.forEach((row, i) => {
      assert.equal(row.length, 3, 'k is capped at the number of classes');
      assert.ok(row[0]!.score >= row[1]!.score && row[1]!.score >= row[2]!.score);
      assert.ok(Math.abs(row.reduce((a, r) => a + r.score, 0) - 1) < 1e-6);
      assert.equal(row[0]!.label, LABELS[data.y[i]!], 'the top class is the true one');
      for (const r of row) assert.equal(r.score, probs[i * 3 + LABELS.indexOf(r.label)]);
      assert.deepEqual(top2[i], row.slice(0, 2));
    });
    assert.throws(() => head.topK(probs, 0), /positive integer/);
    assert.throws(() => head.predict(new Float32Array(7)), /5-dimensional/);
  });

  test('ties rank in class order', () => {
    const head = LinearHead.fromParams(['a', 'b', 'c'], {
      mean: [0],
      std: [1],
      weights: [[0, 0, 0]],
      bias: [0, 1, 1],
    });
    assert.deepEqual(
      head.topK(head.predict([5]), 3).map((row) => row.map((r) => r.label)),
      [['b', 'c', 'a']],
    );
  });

  test('parameters survive a JSON round trip: identical predictions', () => {
    const head = fitted();
    const restored = LinearHead.fromParams(
      head.labels,
      JSON.parse(JSON.stringify(head.toParams())),
    );
    const data = blobs([5, 5, 5], 5, 14);
    assert.deepEqual(restored.predict(data.x), head.predict(data.x));
    assert.deepEqual(restored.toParams(), head.toParams());
  });

  test('malformed parameters are invalid_data', () => {
    const params = fitted().toParams();
    for (const bad of [
      { ...params, std: params.std.map(() => 0) },
      { ...params, weights: params.weights.slice(1) },
      { ...params, bias: [1, 2] },
      { ...params, mean: params.mean.map(() => Number.NaN) },
    ])
      assert.throws(
        () => LinearHead.fromParams(LABELS, bad),
        (e: unknown) => e instanceof GimError && e.code === 'invalid_data',
      );
    assert.throws(() => LinearHead.fromParams(['a', 'a', 'b'], params), /distinct/);
  });
});

describe('validation split', () => {
  test('the validation split is stratified and leaves every class a training item', () => {
    const labels = Int32Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2]);
    const { train, validation } = validationSplit(labels, 0.5, 1);
    const classesOf = (idx: Int32Array) => new Set(Array.from(idx, (i) => labels[i]));
    assert.deepEqual(classesOf(train), new Set([0, 1, 2]));
    assert.equal(validation.filter((i) => labels[i] === 0).length, 5);
    assert.equal(train.length + validation.length, labels.length);
    assert.deepEqual(classWeightsFor('balanced', Int32Array.from([0, 0, 0, 1]), 3), [4 / 6, 2, 1]);
  });
});

test('classificationMetrics: precision, recall and F1 from the confusion matrix', () => {
  // Rows: true classes 0, 0, 1, 1, 2; predictions 0, 1, 1, 1, 1.
  const probs = Float32Array.from(
    [
      [0.9, 0.1, 0],
      [0.2, 0.7, 0.1],
      [0.1, 0.8, 0.1],
      [0, 1, 0],
      [0.3, 0.4, 0.3],
    ].flat(),
  );
  const m = classificationMetrics(probs, Int32Array.from([0, 0, 1, 1, 2]), ['a', 'b', 'c']);
  assert.equal(m.accuracy, 3 / 5);
  assert.deepEqual(m.confusion, [
    [1, 1, 0],
    [0, 2, 0],
    [0, 1, 0],
  ]);
  assert.deepEqual(
    m.perClass.map((c) => [c.precision, c.recall, c.f1]),
    [
      [1, 0.5, 2 / 3],
      [0.5, 1, 2 / 3],
      [null, 0, 0],
    ],
  );
  assert.ok(Math.abs(m.macroF1 - 4 / 9) < 1e-12);
  const expectedLoss =
    -(Math.log(0.9) + Math.log(0.2) + Math.log(0.8) + Math.log(1) + Math.log(0.3)) / 5;
  assert.ok(Math.abs(m.loss - expectedLoss) < 1e-6);
});
