import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { GimError } from '../../src/gim/errors.js';
import {
  Batcher,
  type BatchContext,
  type BatcherOptions,
  type BatchStats,
  type RejectReason,
} from '../../src/gim/batching/batcher.js';
import { gimError } from '../helpers/gim-error.js';

/** Batching driven by hand: no batch starts by time within a test. */
const MANUAL: BatcherOptions = { maxBatchSize: 4, maxDelayMs: 1e9, maxQueue: 100, timeoutMs: 1e6 };

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A batch function whose batches the test finishes by hand. */
function heldRun<I, O>() {
  const calls: {
    items: I[];
    resolve(results: (O | Error)[]): void;
    reject(error: unknown): void;
  }[] = [];
  const run = (items: I[]): Promise<(O | Error)[]> =>
    new Promise((resolve, reject) => calls.push({ items, resolve, reject }));
  const call = (i: number) => {
    const c = calls[i];
    assert.ok(c, `batch ${i} has not started`);
    return c;
  };
  return { run, calls, call };
}

/** An immediate batch function that records its batches. */
function echoRun() {
  const batches: number[][] = [];
  const run = async (items: number[]): Promise<number[]> => {
    batches.push([...items]);
    return items.map((x) => x * 10);
  };
  return { run, batches };
}

describe('Batcher', () => {
  test('groups items into FIFO batches of up to maxBatchSize', async () => {
    const { run, batches } = echoRun();
    const b = new Batcher(run, { ...MANUAL, maxBatchSize: 3 });
    const results = [1, 2, 3, 4, 5, 6, 7].map((x) => b.submit(x));
    assert.deepEqual(await Promise.all(results.slice(0, 6)), [10, 20, 30, 40, 50, 60]);
    assert.deepEqual(batches, [
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.equal(b.queueDepth, 1, 'a lone item waits for its delay');
    b.dispatch();
    assert.equal(await results[6], 70);
    assert.deepEqual(batches[2], [7]);
    await b.close();
  });

  test('starts a partial batch after maxDelayMs', async () => {
    const { run, batches } = echoRun();
    const stats: BatchStats[] = [];
    const b = new Batcher(
      run,
      { maxBatchSize: 10, maxDelayMs: 30, maxQueue: 100, timeoutMs: 5000 },
      { onBatch: (s) => stats.push(s) },
    );
    const start = performance.now();
    const results = await Promise.all([b.submit(1), b.submit(2), b.submit(3)]);
    const elapsed = performance.now() - start;
    assert.deepEqual(results, [10, 20, 30]);
    assert.deepEqual(batches, [[1, 2, 3]], 'one batch for the three items');
    assert.ok(elapsed >= 25, `waited for the delay (${elapsed} ms)`);
    assert.ok(elapsed < 1000, `but not much longer (${elapsed} ms)`);
    assert.ok(stats[0]?.queueMs.every((ms) => ms >= 25 && ms < 1000));
    await b.close();
  });

  test('the next batch starts at once when its items have already waited', async () => {
    const { run, calls, call } = heldRun<number, number>();
    const b = new Batcher(run, {
      maxBatchSize: 10,
      maxDelayMs: 20,
      maxQueue: 100,
      timeoutMs: 5000,
    });
    const first = b.submit(1);
    b.dispatch();
    const second = b.submit(2);
    await sleep(40); // item 2's delay runs out while batch 1 holds the only slot
    assert.equal(calls.length, 1);
    call(0).resolve([1]);
    await first;
    await tick();
    assert.equal(calls.length, 2, 'no second delay');
    call(1).resolve([2]);
    assert.equal(await second, 2);
    await b.close();
  });

  test('maxBatchSize 1 runs one item per batch', async () => {
    const { run, batches } = echoRun();
    const b = new Batcher(run, { ...MANUAL, maxBatchSize: 1, maxQueue: 10 });
    assert.deepEqual(await Promise.all([1, 2, 3, 4].map((x) => b.submit(x))), [10, 20, 30, 40]);
    assert.deepEqual(batches, [[1], [2], [3], [4]]);
    await b.close();
  });

  test('an Error result rejects only its item', async () => {
    const bad = new Error('item 2 is undecodable');
    const b = new Batcher(async (items: number[]) => items.map((x) => (x === 2 ? bad : x)), {
      ...MANUAL,
      maxBatchSize: 3,
    });
    const [r1, r2, r3] = await Promise.allSettled([b.submit(1), b.submit(2), b.submit(3)]);
    assert.deepEqual(r1, { status: 'fulfilled', value: 1 });
    assert.deepEqual(r2, { status: 'rejected', reason: bad });
    assert.deepEqual(r3, { status: 'fulfilled', value: 3 });
    await b.close();
  });

  test('a failing run rejects its whole batch and the next batch still runs', async () => {
    const syncError = new Error('thrown');
    const asyncError = new Error('rejected');
    let call = 0;
    const b = new Batcher(
      (items: number[]) => {
        call++;
        if (call === 1) throw syncError;
        if (call === 2) return Promise.reject(asyncError);
        return Promise.resolve(items);
      },
      { ...MANUAL, maxBatchSize: 2 },
    );
    const settled = await Promise.allSettled([1, 2, 3, 4, 5, 6].map((x) => b.submit(x)));
    assert.deepEqual(settled, [
      { status: 'rejected', reason: syncError },
      { status: 'rejected', reason: syncError },
      { status: 'rejected', reason: asyncError },
      { status: 'rejected', reason: asyncError },
      { status: 'fulfilled', value: 5 },
      { status: 'fulfilled', value: 6 },
    ]);
    await b.close();
  });

  test('a wrong number of results rejects every item of the batch', async () => {
    const b = new Batcher(async (items: number[]) => items.slice(1), {
      ...MANUAL,
      maxBatchSize: 2,
    });
    const both = [b.submit(1), b.submit(2)];
    for (const p of both)
      await assert.rejects(p, gimError('backend_unavailable', /1 results for a batch of 2/));
    await b.close();
  });

  test('a full queue rejects with overloaded and a retry estimate', async () => {
    const { run, call } = heldRun<number, number>();
    const reasons: RejectReason[] = [];
    const b = new Batcher(
      run,
      { ...MANUAL, maxBatchSize: 2, maxQueue: 2 },
      { onReject: (r) => reasons.push(r) },
    );
    const running = [b.submit(1), b.submit(2)];
    const queued = [b.submit(3), b.submit(4)];
    assert.equal(b.inFlight, 1);
    assert.equal(b.queueDepth, 2);
    await assert.rejects(b.submit(5), (e: unknown) => {
      gimError('overloaded', /queue is full/)(e);
      const retry = (e as GimError).details.retryAfterSeconds;
      assert.ok(typeof retry === 'number' && Number.isInteger(retry) && retry >= 1, String(retry));
      return true;
    });
    assert.deepEqual(reasons, ['overloaded']);
    call(0).resolve([1, 2]);
    assert.deepEqual(await Promise.all(running), [1, 2]);
    await tick();
    call(1).resolve([3, 4]);
    assert.deepEqual(await Promise.all(queued), [3, 4]);
    await b.close();
  });

  test('the retry estimate grows with the queue and the recent batch time', async () => {
    let hold = false;
    const { run: held, call } = heldRun<number, number>();
    const b = new Batcher(
      async (items: number[]) => {
        if (hold) return held(items);
        await sleep(12);
        return items;
      },
      { ...MANUAL, maxBatchSize: 1, maxQueue: 200, timeoutMs: 10_000 },
    );
    await b.submit(0); // one batch of ~12 ms sets the average
    hold = true;
    const pending = Array.from({ length: 201 }, (_, i) => b.submit(i + 1));
    assert.equal(b.queueDepth, 200);
    await assert.rejects(b.submit(999), (e: unknown) => {
      gimError('overloaded')(e);
      const retry = (e as GimError).details.retryAfterSeconds as number;
      // ~201 batches of ~12 ms ahead; capped by the 10 s timeout
      assert.ok(retry >= 2 && retry <= 10, `retryAfterSeconds ${retry}`);
      return true;
    });
    const closing = assert.rejects(Promise.all(pending.slice(1)), gimError('cancelled'));
    const closed = b.close();
    call(0).resolve([1]);
    await closed;
    await closing;
  });

  test('an item times out while queued (never runs) and while running', async () => {
    const { run, calls, call } = heldRun<number, number>();
    const reasons: RejectReason[] = [];
    const b = new Batcher(
      run,
      { ...MANUAL, maxBatchSize: 1, timeoutMs: 40 },
      { onReject: (r) => reasons.push(r) },
    );
    const running = b.submit(1);
    const queued = b.submit(2);
    assert.equal(calls.length, 1);
    await assert.rejects(running, (e: unknown) => {
      gimError('timeout', /40 ms \(running\)/)(e);
      return true;
    });
    await assert.rejects(queued, (e: unknown) => {
      gimError('timeout', /40 ms \(queued\)/)(e);
      assert.equal((e as GimError).details.phase, 'queued');
      return true;
    });
    assert.equal(b.queueDepth, 0);
    call(0).resolve([1]); // the late result is discarded
    await tick();
    assert.equal(calls.length, 1, 'the timed-out queued item never ran');
    assert.deepEqual(reasons, ['timeout', 'timeout']);
    await b.close();
  });

  test('an abort while queued removes the item; the batch runs without it', async () => {
    const { run, calls, call } = heldRun<string, string>();
    const b = new Batcher(run, MANUAL);
    const controller = new AbortController();
    const a = b.submit('a');
    const cancelled = b.submit('b', { signal: controller.signal });
    const c = b.submit('c');
    assert.equal(b.queueDepth, 3);
    controller.abort(new Error('client went away'));
    await assert.rejects(cancelled, gimError('cancelled'));
    assert.equal(b.queueDepth, 2);
    b.dispatch();
    assert.deepEqual(call(0).items, ['a', 'c']);
    call(0).resolve(['A', 'C']);
    assert.deepEqual(await Promise.all([a, c]), ['A', 'C']);
    assert.equal(calls.length, 1);
    await b.close();
  });

  test('an abort while running rejects at once and discards the result', async () => {
    const { run, call } = heldRun<string, string>();
    const b = new Batcher(run, MANUAL);
    const controller = new AbortController();
    const a = b.submit('a', { signal: controller.signal });
    const other = b.submit('b');
    b.dispatch();
    assert.equal(b.inFlight, 1);
    controller.abort();
    await assert.rejects(a, gimError('cancelled'));
    call(0).resolve(['A', 'B']);
    assert.equal(await other, 'B', 'its neighbour still gets its result');
    await b.close();
  });

  test('a signal shared by several items cancels them all, queued and running', async () => {
    const { run, calls, call } = heldRun<string, string>();
    const b = new Batcher(run, { ...MANUAL, maxBatchSize: 2 });
    const controller = new AbortController();
    const { signal } = controller;
    const a = b.submit('a', { signal });
    const bee = b.submit('b');
    const c = b.submit('c', { signal });
    const d = b.submit('d', { signal });
    const e = b.submit('e');
    assert.equal(getEventListeners(signal, 'abort').length, 1);
    controller.abort();
    const outcome = (p: Promise<string>) => p.then(String, (err: GimError) => err.code);
    assert.deepEqual(await Promise.all([a, c, d].map(outcome)), [
      'cancelled',
      'cancelled',
      'cancelled',
    ]);
    assert.equal(getEventListeners(signal, 'abort').length, 0);
    call(0).resolve(['A', 'B']);
    assert.equal(await bee, 'B');
    await tick();
    b.dispatch();
    assert.deepEqual(call(1).items, ['e']);
    call(1).resolve(['E']);
    assert.equal(await e, 'E');
    assert.equal(calls.length, 2);
    await b.close();
  });

  test('an already-aborted signal rejects at once and never queues', async () => {
    const { run, calls } = heldRun<number, number>();
    const b = new Batcher(run, MANUAL);
    await assert.rejects(b.submit(1, { signal: AbortSignal.abort() }), gimError('cancelled'));
    assert.equal(b.queueDepth, 0);
    b.dispatch();
    assert.equal(calls.length, 0);
    await b.close();
  });

  test('no more than maxInFlight batches run at once', async () => {
    let running = 0;
    let peak = 0;
    const b = new Batcher(
      async (items: number[]) => {
        running++;
        peak = Math.max(peak, running);
        await sleep(2);
        running--;
        return items;
      },
      { ...MANUAL, maxBatchSize: 1, maxInFlight: 2 },
    );
    const results = Array.from({ length: 8 }, (_, i) => b.submit(i));
    assert.equal(b.inFlight, 2);
    assert.equal(b.queueDepth, 6);
    assert.deepEqual(await Promise.all(results), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.equal(peak, 2);
    await b.close();
  });

  test('dispatch while every slot is busy starts the batch when one frees', async () => {
    const { run, calls, call } = heldRun<number, number>();
    const b = new Batcher(run, MANUAL);
    const first = b.submit(1);
    b.dispatch();
    const second = b.submit(2);
    b.dispatch();
    assert.equal(calls.length, 1, 'maxInFlight 1 holds the second batch');
    call(0).resolve([1]);
    await first;
    await tick();
    call(1).resolve([2]);
    assert.equal(await second, 2);
    await b.close();
  });

  test('close rejects queued items, waits for running batches and refuses new items', async () => {
    const { run, call } = heldRun<number, number>();
    const b = new Batcher(run, { ...MANUAL, maxBatchSize: 2 });
    const running = [b.submit(1), b.submit(2)];
    const queued = b.submit(3);
    let closed = false;
    const closing = b.close().then(() => (closed = true));
    await assert.rejects(queued, gimError('cancelled', /closed/));
    await assert.rejects(b.submit(4), gimError('cancelled', /closed/));
    await tick();
    assert.equal(closed, false, 'close waits for the running batch');
    call(0).resolve([1, 2]);
    await closing;
    assert.deepEqual(await Promise.all(running), [1, 2]);
    assert.equal(b.inFlight, 0);
  });

  test('hooks see batch sizes, results and queue depths; a throwing hook breaks nothing', async () => {
    const stats: BatchStats[] = [];
    const depths: number[] = [];
    const b = new Batcher(
      async (items: number[]) => items.map((x) => (x % 2 ? x : new Error(`even ${x}`))),
      { ...MANUAL, maxBatchSize: 3 },
      {
        onBatch: (s) => {
          stats.push(s);
          throw new Error('metrics are down');
        },
        onQueueDepth: (d) => {
          depths.push(d);
          throw new Error('metrics are down');
        },
        onReject: () => {
          throw new Error('metrics are down');
        },
      },
    );
    const settled = [1, 2, 3, 4, 5].map((x) =>
      b.submit(x).then(String, (err: Error) => err.message),
    );
    assert.deepEqual(await Promise.all(settled.slice(0, 3)), ['1', 'even 2', '3']);
    b.dispatch();
    assert.deepEqual(await Promise.all(settled.slice(3)), ['even 4', '5']);
    assert.deepEqual(
      stats.map(({ size, ok, failed, queueMs }) => ({ size, ok, failed, timed: queueMs.length })),
      [
        { size: 3, ok: 2, failed: 1, timed: 3 },
        { size: 2, ok: 1, failed: 1, timed: 2 },
      ],
    );
    assert.ok(stats.every((s) => s.computeMs >= 0 && s.queueMs.every((ms) => ms >= 0)));
    assert.deepEqual(depths, [1, 2, 3, 0, 1, 2, 0]);
    await assert.rejects(b.submit(7, { signal: AbortSignal.abort() }), gimError('cancelled'));
    await b.close();
  });

  test('many submits with one long-lived signal leave no abort listeners behind', async () => {
    const { run } = echoRun();
    const b = new Batcher(run, { ...MANUAL, maxBatchSize: 100, maxQueue: 1000 });
    const { signal } = new AbortController();
    const results = Array.from({ length: 1000 }, (_, i) => b.submit(i, { signal }));
    assert.equal(getEventListeners(signal, 'abort').length, 1, 'one listener for all its items');
    await Promise.all(results);
    assert.equal(getEventListeners(signal, 'abort').length, 0);

    // ...nor do items that time out or are cancelled by close
    const timing = new Batcher(run, { ...MANUAL, timeoutMs: 5 });
    await assert.rejects(timing.submit(1, { signal }), gimError('timeout'));
    const closing = assert.rejects(timing.submit(2, { signal }), gimError('cancelled'));
    await timing.close();
    await closing;
    assert.equal(getEventListeners(signal, 'abort').length, 0);
    await b.close();
  });

  test('invalid options are all reported at once', () => {
    const run = async (items: number[]) => items;
    assert.throws(
      () =>
        new Batcher(run, {
          maxBatchSize: 0,
          maxDelayMs: -1,
          maxQueue: 1.5,
          timeoutMs: 0,
          maxInFlight: 0,
        }),
      (e: unknown) => {
        gimError('invalid_argument')(e);
        const { message } = e as GimError;
        for (const name of ['maxBatchSize', 'maxDelayMs', 'maxQueue', 'timeoutMs', 'maxInFlight'])
          assert.match(message, new RegExp(name));
        return true;
      },
    );
    assert.throws(
      () => new Batcher(run, { ...MANUAL, maxBatchSize: 8, maxQueue: 4 }),
      gimError('invalid_argument', /maxQueue \(4\) must be >= maxBatchSize \(8\)/),
    );
    assert.throws(
      () => new Batcher(run, { ...MANUAL, maxDelayMs: Infinity }),
      gimError('invalid_argument', /maxDelayMs/),
    );
  });
});

/**
 * Deadlines and batch-time estimates on a clock the test moves: a batch's compute time is the
 * clock's advance between its start and the test resolving it, so the learnt pace is exact.
 */
describe('Batcher: no compute for callers already answered', () => {
  const clock = { t: 0 };
  const now = () => clock.t;
  /** Far in real time: no deadline timer fires during a test. */
  const LONG = 1e6;

  /** A batcher on the test clock whose batches the test finishes, with every hook recorded. */
  function setup(options: Partial<BatcherOptions<number>> = {}) {
    clock.t = 0;
    const held = heldRun<number, number>();
    const reasons: RejectReason[] = [];
    const stats: BatchStats[] = [];
    const b = new Batcher(
      held.run,
      { ...MANUAL, timeoutMs: LONG, now, ...options },
      { onReject: (r) => reasons.push(r), onBatch: (s) => stats.push(s) },
    );
    return { b, ...held, reasons, stats };
  }

  /** Runs one batch of `items` that takes `ms` on the test clock, so the batcher learns it. */
  async function learn(
    b: Batcher<number, number>,
    call: (i: number) => { resolve(r: (number | Error)[]): void },
    index: number,
    items: number[],
    ms: number,
  ): Promise<void> {
    const results = items.map((x) => b.submit(x));
    b.dispatch();
    clock.t += ms;
    call(index).resolve(items);
    await Promise.all(results);
    await tick();
  }

  test('an item whose deadline has passed is dropped when a batch forms, and never runs', async () => {
    const { b, call, reasons } = setup();
    const late = b.submit(1, { deadline: 1000 });
    const onTime = b.submit(2, { deadline: 5000 });
    clock.t = 1000; // the event loop was busy: the deadline timer has not fired yet
    b.dispatch();
    assert.deepEqual(call(0).items, [2]);
    await assert.rejects(late, gimError('timeout', /\(queued\)/));
    assert.deepEqual(reasons, ['timeout']);
    call(0).resolve([20]);
    assert.equal(await onTime, 20);
    await b.close();
  });

  test('a submit past its deadline is refused at once', async () => {
    const { b, calls, reasons } = setup();
    clock.t = 500;
    await assert.rejects(
      b.submit(1, { deadline: 500 }),
      gimError('timeout', /before it was queued/),
    );
    assert.equal(b.queueDepth, 0);
    b.dispatch();
    assert.equal(calls.length, 0);
    assert.deepEqual(reasons, ['timeout']);
    await b.close();
  });

  test('items that cannot be computed before their deadline are refused at once, not run', async () => {
    const { b, call, calls, reasons } = setup();
    await learn(b, call, 0, [0], 100); // 100 ms per item
    const t = clock.t;
    const hopeless = b.submit(1, { deadline: t + 50 }); // even alone it needs ~100 ms
    const soon = b.submit(2, { deadline: t + 150 }); // fits alone, not with a second item
    const later = b.submit(3, { deadline: t + 1000 });
    b.dispatch();
    await assert.rejects(hopeless, (e: unknown) => {
      gimError('timeout', /50 ms were left, and computing it takes about 100 ms/)(e);
      return true;
    });
    assert.deepEqual(call(1).items, [2], 'item 3 would make the batch late for item 2');
    assert.deepEqual(reasons, ['too_late']);
    assert.equal(b.queueDepth, 1);
    clock.t += 100;
    call(1).resolve([20]);
    assert.equal(await soon, 20);
    b.dispatch();
    assert.deepEqual(call(2).items, [3], 'it runs in the next batch');
    clock.t += 100;
    call(2).resolve([30]);
    assert.equal(await later, 30);
    assert.equal(calls.length, 3);
    await b.close();
  });

  test('the estimate counts item costs: a costly item leaves a batch another one fits', async () => {
    const { b, call, reasons } = setup({ itemCost: (x) => x });
    // Two batches that separate the rates: 10 ms per item + 20 ms per unit of cost.
    await learn(b, call, 0, [1], 30);
    await learn(b, call, 1, [4, 1], 2 * 10 + 5 * 20);
    const rates = b.batchRates;
    assert.ok(rates);
    assert.ok(Math.abs(rates.perItemMs - 10) < 1e-6 && Math.abs(rates.perCostMs - 20) < 1e-6);
    const t = clock.t;
    const cheap = b.submit(1, { deadline: t + 100 }); // ~30 ms
    const costly = b.submit(10, { deadline: t + 150 }); // ~210 ms: cannot make it
    const cheap2 = b.submit(2, { deadline: t + 100 }); // ~50 ms, with the first ~80 ms
    b.dispatch();
    await assert.rejects(costly, gimError('timeout', /takes about 210 ms/));
    assert.deepEqual(call(2).items, [1, 2]);
    assert.deepEqual(reasons, ['too_late']);
    clock.t += 80;
    call(2).resolve([1, 2]);
    assert.deepEqual(await Promise.all([cheap, cheap2]), [1, 2]);
    await b.close();
  });

  test('a result that comes after its deadline is discarded: the caller gets timeout, not a late value', async () => {
    const { b, call, reasons, stats } = setup();
    const late = b.submit(1, { deadline: 1000 });
    const fine = b.submit(2, { deadline: 3000 });
    b.dispatch();
    clock.t = 2000;
    call(0).resolve([10, 20]);
    await assert.rejects(late, gimError('timeout', /\(running\)/));
    assert.equal(await fine, 20);
    assert.deepEqual(reasons, ['timeout']);
    assert.deepEqual(
      stats.map(({ ok, failed, discarded }) => ({ ok, failed, discarded })),
      [{ ok: 1, failed: 0, discarded: 1 }],
    );
    await b.close();
  });

  test('results of cancelled items are counted as discarded compute', async () => {
    const { b, call, stats } = setup();
    const controller = new AbortController();
    const gone = b.submit(1, { signal: controller.signal });
    const stays = b.submit(2);
    b.dispatch();
    controller.abort();
    await assert.rejects(gone, gimError('cancelled'));
    call(0).resolve([10, 20]);
    assert.equal(await stays, 20);
    assert.deepEqual(
      stats.map(({ ok, discarded }) => ({ ok, discarded })),
      [{ ok: 1, discarded: 1 }],
    );
    await b.close();
  });

  test('run asks which items are still wanted; a skipped item is not counted as computed', async () => {
    const contexts: BatchContext[] = [];
    const held = heldRun<number, number>();
    clock.t = 0;
    const stats: BatchStats[] = [];
    const reasons: RejectReason[] = [];
    const b = new Batcher(
      (items: number[], batch: BatchContext) => {
        contexts.push(batch);
        return held.run(items);
      },
      { ...MANUAL, timeoutMs: LONG, now },
      { onBatch: (s) => stats.push(s), onReject: (r) => reasons.push(r) },
    );
    const controller = new AbortController();
    const cancelled = b.submit(1, { signal: controller.signal, deadline: 5000 });
    const expiring = b.submit(2, { deadline: 1000 });
    const wanted = b.submit(3, { deadline: 5000 });
    b.dispatch();
    const [ctx] = contexts;
    assert.ok(ctx);
    assert.deepEqual(
      [0, 1, 2].map((i) => ctx.deadline(i)),
      [5000, 1000, 5000],
    );
    assert.deepEqual(
      [0, 1, 2].map((i) => ctx.wanted(i)),
      [true, true, true],
    );
    controller.abort();
    await assert.rejects(cancelled, gimError('cancelled'));
    clock.t = 1000;
    assert.deepEqual(
      [0, 1, 2].map((i) => ctx.wanted(i)),
      [false, false, true],
    );
    await assert.rejects(expiring, gimError('timeout', /\(running\)/), 'rejected when asked');
    assert.deepEqual(reasons, ['cancelled', 'timeout']);
    // The run skipped items 0 and 1: it returns errors for them.
    const skipped = new GimError('cancelled', 'not computed');
    held.call(0).resolve([skipped, skipped, 30]);
    assert.equal(await wanted, 30);
    assert.deepEqual(
      stats.map(({ ok, failed, discarded }) => ({ ok, failed, discarded })),
      [{ ok: 1, failed: 0, discarded: 0 }],
    );
    await b.close();
  });

  test('admit refuses what the work ahead would make late, with when to retry', async () => {
    const { b, call, calls, reasons } = setup({
      timeoutMs: 1000,
      maxBatchSize: 8,
      minAdmissionSamples: 1,
    });
    b.admit(new Array<number>(30).fill(0)); // nothing to estimate from yet: admitted
    await learn(b, call, 0, [0], 100); // 100 ms per item
    b.admit(new Array<number>(11).fill(0)); // late even alone: not for the estimate to refuse

    const deadline = LONG; // theirs do not matter here
    const running = [1, 2, 3].map((x) => b.submit(x, { deadline })); // a batch of ~300 ms
    b.dispatch();
    const queued = [4, 5, 6, 7].map((x) => b.submit(x, { deadline })); // ~400 ms more
    clock.t += 100; // 200 ms of the running batch left: 600 ms ahead
    b.admit([0, 0, 0, 0]); // 600 + 400 = 1000 ms: in time
    assert.throws(
      () => b.admit([0, 0, 0, 0, 0]),
      (e: unknown) => {
        gimError('overloaded', /queued ahead needs about 0\.6 s/)(e);
        const { retryAfterSeconds, aheadMs } = (e as GimError).details;
        assert.equal(aheadMs, 600);
        assert.equal(retryAfterSeconds, 1);
        return true;
      },
    );
    // A request that arrived 200 ms ago has 800 ms left.
    assert.throws(() => b.admit([0, 0, 0], clock.t + 800), gimError('overloaded'));
    b.admit([0, 0], clock.t + 800);
    assert.deepEqual(reasons, new Array<RejectReason>(8).fill('overloaded'));
    assert.equal(calls.length, 2, 'admit runs nothing');
    clock.t += 200;
    call(1).resolve([1, 2, 3]);
    await Promise.all(running);
    b.dispatch();
    call(2).resolve([4, 5, 6, 7]);
    await Promise.all(queued);
    await b.close();
  });

  test('a batch that computed nothing teaches nothing; an estimate goes stale when no batch runs', async () => {
    const { b, call, reasons } = setup({
      timeoutMs: 1000,
      maxBatchSize: 16,
      minAdmissionSamples: 1,
    });
    // The worker refused the whole batch after a long wait (restarting, say): not its pace.
    const refused = b.submit(1, { deadline: LONG });
    b.dispatch();
    clock.t += 5000;
    call(0).resolve([new GimError('timeout', 'too late for the worker')]);
    await assert.rejects(refused, gimError('timeout'));
    assert.equal(b.batchRates, undefined);
    b.admit(new Array<number>(100).fill(0));

    await learn(b, call, 1, [0], 100); // 100 ms per item
    const queued = [1, 2, 3, 4, 5, 6, 7, 8].map((x) => b.submit(x, { deadline: LONG }));
    assert.throws(() => b.admit([0, 0, 0]), gimError('overloaded')); // 800 + 300 ms > 1 s
    clock.t += 1001; // nothing ran for longer than the timeout: the next batch measures again
    b.admit([0, 0, 0]);
    assert.deepEqual(reasons, new Array<RejectReason>(3).fill('overloaded'));
    b.dispatch();
    call(2).resolve([1, 2, 3, 4, 5, 6, 7, 8]);
    await Promise.all(queued);
    await b.close();
  });
});
