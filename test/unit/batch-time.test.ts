import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BatchTimeModel } from '../../src/gim/batching/batch-time.js';

const near = (actual: number | undefined, expected: number, tolerance = 1e-6): void => {
  assert.ok(actual !== undefined, 'no estimate');
  assert.ok(Math.abs(actual - expected) <= tolerance, `${actual} is not ${expected}`);
};

describe('BatchTimeModel', () => {
  test('has no estimate before a batch has run', () => {
    const model = new BatchTimeModel();
    assert.equal(model.estimate(4, 2), undefined);
    assert.equal(model.rates(), undefined);
  });

  test('separates the time per item from the time per unit of cost (audio: clips and seconds)', () => {
    const model = new BatchTimeModel();
    // 55 ms per clip (one forward pass each) + 30 ms per second of audio, in mixed batches.
    for (const [clips, seconds] of [
      [1, 3],
      [4, 2],
      [2, 9],
      [8, 8],
    ] as const) {
      model.observe(clips, seconds, 55 * clips + 30 * seconds);
    }
    near(model.estimate(3, 7), 55 * 3 + 30 * 7);
    near(model.rates()?.perItemMs, 55);
    near(model.rates()?.perCostMs, 30);
  });

  test('items of no cost (images) get one rate per item', () => {
    const model = new BatchTimeModel();
    model.observe(32, 0, 320);
    model.observe(16, 0, 160);
    near(model.estimate(8, 0), 80);
    assert.deepEqual(model.rates(), { perItemMs: 10, perCostMs: 0 });
  });

  test('follows a change of pace within a few batches', () => {
    const model = new BatchTimeModel(0.2);
    for (let i = 0; i < 20; i++) model.observe(32, 0, 320);
    for (let i = 0; i < 15; i++) model.observe(32, 0, 640); // the machine got twice as slow
    near(model.estimate(32, 0), 640, 640 * 0.05);
  });

  test('never fits a negative rate', () => {
    const model = new BatchTimeModel();
    // Noise in which more items took less time: the per-item term would come out negative.
    model.observe(1, 10, 400);
    model.observe(10, 10, 300);
    const rates = model.rates();
    assert.ok(rates && rates.perItemMs >= 0 && rates.perCostMs >= 0, JSON.stringify(rates));
    assert.ok((model.estimate(5, 10) ?? 0) > 0);
  });

  test('ignores observations that are not times', () => {
    const model = new BatchTimeModel();
    model.observe(0, 0, 10);
    model.observe(2, Number.NaN, 10);
    model.observe(2, 0, -1);
    assert.equal(model.estimate(1, 0), undefined);
    model.observe(2, 0, 10);
    near(model.estimate(1, 0), 5);
  });
});
