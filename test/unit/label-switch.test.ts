/**
 * The label-move analysis of `bench:jobs` (bench/label-switch.ts): what it reports as the switch
 * time, failures, stale answers, flip-backs and the latency windows, on hand-made answer traces.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { analyseMove, median, percentile, type Answer } from '../../bench/label-switch.js';

/** A closed-loop trace: one client's back-to-back requests, `[start, end, status, version]`. */
function trace(client: number, rows: [number, number, number, number | null][]): Answer[] {
  return rows.map(([start, end, status, version]) => ({ client, start, end, status, version }));
}

const MOVE = { from: 1, to: 2, putStart: 1000, putEnd: 1100 };
const OPTS = { beforeMs: 500, settleMs: 100 };

describe('label move analysis (bench:jobs)', () => {
  test('the switch ends when the slowest client has its first answer from the new version', () => {
    const answers = [
      ...trace(0, [
        [600, 700, 200, 1],
        [700, 1010, 200, 1],
        [1010, 1060, 200, 1], // sent while the PUT ran: the old version, not stale
        [1060, 1120, 200, 2], // first from 2: 20 ms after the PUT's answer
        [1120, 1200, 200, 2],
      ]),
      ...trace(1, [
        [800, 900, 200, 1],
        [900, 1140, 200, 1], // sent before the PUT: the old version, not stale
        [1140, 1180, 200, 1], // sent after: stale
        [1180, 1250, 200, 2], // first from 2: 150 ms after the PUT's answer
        [1250, 1300, 200, 2],
      ]),
    ];
    const a = analyseMove(answers, 2, MOVE, OPTS);
    assert.equal(a.putMs, 100);
    assert.equal(a.switchMs, 150);
    assert.equal(a.staleAfterPut, 1);
    assert.equal(a.flipBacks, 0);
    assert.equal(a.failed, 0);
    // Before: requests sent in [500, 1000): 600-700, 700-1010, 800-900, 900-1140.
    assert.equal(a.before.requests, 4);
    assert.equal(a.before.p99Ms, 310);
    // During: sent in [1000, 1250]: 1010-1060, 1060-1120, 1120-1200, 1140-1180, 1180-1250, 1250-1300.
    assert.equal(a.during.requests, 6);
    assert.equal(a.during.p99Ms, 80);
  });

  test('a client that never gets the new version leaves the switch unfinished', () => {
    const answers = [...trace(0, [[1000, 1150, 200, 2]]), ...trace(1, [[1000, 1300, 200, 1]])];
    assert.equal(analyseMove(answers, 2, MOVE, OPTS).switchMs, null);
    // So does a client that got no answer at all.
    assert.equal(analyseMove(trace(0, [[1000, 1150, 200, 2]]), 2, MOVE, OPTS).switchMs, null);
  });

  test('failures in the switch window and flip-backs are counted, those long after are not', () => {
    const answers = trace(0, [
      [900, 1050, 503, null], // in flight at the PUT: counts
      [1050, 1150, 200, 2],
      [1150, 1180, 200, 1], // back to the old version: a flip-back
      [1180, 1200, 0, null], // connection error within the settle time: counts
      [1400, 1450, 500, null], // after switch + settle: not the switch's doing
    ]);
    const a = analyseMove(answers, 1, MOVE, OPTS);
    assert.equal(a.switchMs, 50);
    assert.equal(a.flipBacks, 1);
    assert.equal(a.failed, 2);
  });

  test('percentiles are nearest-rank; the median of an even count is the mean of the middle two', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    assert.equal(percentile(values, 99), 99);
    assert.equal(percentile(values, 100), 100);
    assert.equal(percentile([5], 99), 5);
    assert.equal(percentile([], 50), null);
    assert.equal(median([4, 1, 3]), 3);
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });
});
