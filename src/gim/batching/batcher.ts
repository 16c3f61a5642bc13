import { GimError } from '../errors.js';
import { BatchTimeModel } from './batch-time.js';

export interface BatcherOptions<I = unknown> {
  /** Items per batch (>= 1); 1 turns batching off. */
  maxBatchSize: number;
  /** How long the oldest queued item may wait for others before its batch starts (>= 0). */
  maxDelayMs: number;
  /** Queued (not yet running) items, >= maxBatchSize; beyond it `submit` rejects 'overloaded'. */
  maxQueue: number;
  /**
   * An item's time to its result, from submit unless `submit` gives a deadline (a request's
   * arrival + this): past it the item rejects 'timeout'. Also the budget `admit` holds a
   * request's own compute against.
   */
  timeoutMs: number;
  /** Batches running at once (default 1: the inference worker is serial). */
  maxInFlight?: number;
  /**
   * Batches observed before `admit` refuses anything on its estimate (default 3): the first ones
   * after a start or a load run cold, and refusing on them turned a start-up burst away.
   */
  minAdmissionSamples?: number;
  /**
   * What an item costs to compute besides being one item (default 0: items cost alike), e.g. an
   * audio clip's seconds: batch times are estimated per item and per unit of cost.
   */
  itemCost?: (item: I) => number;
  /** The clock of deadlines and estimates, in ms (default `performance.now`). */
  now?: () => number;
}

export interface SubmitOptions {
  /** Aborted: the item rejects 'cancelled' (the client went away, a sibling item failed). */
  signal?: AbortSignal;
  /**
   * When the result is due, on the batcher's clock: the request's arrival + `timeoutMs`, shared
   * by the items of one request (default: submit + `timeoutMs`).
   */
  deadline?: number;
}

/** What `run` is told about its batch besides the items. */
export interface BatchContext {
  /**
   * Whether item `index`'s caller still waits for it: false once it timed out or was cancelled.
   * An item whose deadline has passed is rejected 'timeout' here and then. A `run` that computes
   * in steps asks before each, so that no step is spent on items nobody waits for.
   */
  wanted(index: number): boolean;
  /** Item `index`'s deadline, on the batcher's clock. */
  deadline(index: number): number;
}

export interface BatchStats {
  size: number;
  /** Per item, in batch order: submit -> batch start. */
  queueMs: number[];
  /** Batch start -> `run` settled. */
  computeMs: number;
  /** The items' total cost (`itemCost`). */
  cost: number;
  /** Results delivered to their callers. */
  ok: number;
  /** Errors delivered to their callers (or the whole batch's, when `run` failed). */
  failed: number;
  /**
   * Results computed for callers that had already been answered (timed out, cancelled): the
   * compute wasted on nobody.
   */
  discarded: number;
}

/**
 * Why an item was refused or dropped: the queue is full or the work ahead would make it late
 * (`overloaded`), its deadline passed (`timeout`), the batch-time estimate says it cannot be
 * computed before its deadline (`too_late`, left out of a batch), or its caller went away
 * (`cancelled`).
 */
export type RejectReason = 'overloaded' | 'timeout' | 'too_late' | 'cancelled';

export interface BatcherHooks {
  onBatch?(stats: BatchStats): void;
  onReject?(reason: RejectReason): void;
  onQueueDepth?(depth: number): void;
}

/** setTimeout's largest delay; longer ones fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Entry<I, O> {
  readonly item: I;
  readonly cost: number;
  readonly submittedAt: number;
  readonly deadline: number;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
  running: boolean;
  settled: boolean;
  timer?: NodeJS.Timeout;
  signal?: AbortSignal;
}

/** The pending entries of one AbortSignal, behind a single 'abort' listener. */
interface SignalWatch<I, O> {
  readonly entries: Set<Entry<I, O>>;
  readonly onAbort: () => void;
}

/**
 * Dynamic batching: items submitted by many concurrent callers are grouped into batches run by
 * one function (`run`), e.g. one forward pass of an encoder stack.
 *
 * - A batch starts when the queue reaches `maxBatchSize`, or `maxDelayMs` after the oldest queued
 *   item arrived, whichever is first, and only while fewer than `maxInFlight` batches run. The
 *   delay counts from the oldest item's arrival, not from when a slot freed: when a batch finishes
 *   and the oldest queued item has already waited `maxDelayMs`, the next batch starts at once.
 *   `maxDelayMs` 0 never waits (a free slot takes what is queued). Items keep FIFO order.
 * - `run` returns one result per item, in order. An `Error` rejects only its item. If `run`
 *   throws, rejects, or returns the wrong number of results, every item of that batch rejects
 *   (with that error, or a `backend_unavailable` GimError for a count mismatch).
 * - Every item has a deadline (`submit`'s, else `timeoutMs` after submit). Still queued at its
 *   deadline, it leaves the queue and rejects 'timeout'; running, it rejects 'timeout' and its
 *   result is discarded; a result that comes after the deadline is discarded too (the caller
 *   gets 'timeout', never a late value). Each pending item holds one timer, cleared when it
 *   settles: the process stays up while a caller waits (at most until its deadline) and no
 *   longer. The delay timer is unref'd.
 * - No compute for nobody. The time a batch takes is learnt from the batches run so far, per item
 *   and per unit of `itemCost` (BatchTimeModel). Forming a batch, an item whose deadline has
 *   passed is rejected 'timeout', one that cannot be computed before its deadline even alone
 *   rejects 'too_late' (a timeout, at once), and one that would make the batch late for one of
 *   its items waits for the next batch. `run` can ask, step by step, which items are still
 *   wanted (`BatchContext`).
 * - An aborted `signal` rejects the item 'cancelled': already aborted, at once; queued, it leaves
 *   the queue and never runs; running, its result is discarded.
 * - A full queue (`maxQueue` items) rejects 'overloaded' with `details.retryAfterSeconds`,
 *   estimated from the work queued and the learnt batch times. `admit` refuses, before they
 *   queue, a request's items that the work ahead would make late ('overloaded').
 * - `dispatch()` starts a batch now; when every slot is busy, it starts as soon as one frees.
 * - `close()` rejects new and queued items 'cancelled' and waits for running batches, whose
 *   callers still get their results.
 * - Hooks report to metrics; one that throws is ignored. `onBatch` counts what `run` produced:
 *   results delivered, and results discarded because their caller had timed out or gone away
 *   (those callers are counted by `onReject` when they reject).
 */
export class Batcher<I, O> {
  private readonly options: Required<Omit<BatcherOptions<I>, 'itemCost' | 'now'>>;
  private readonly itemCost: (item: I) => number;
  private readonly now: () => number;
  /** Queued entries in arrival order (a Set iterates in insertion order and deletes in O(1)). */
  private readonly queue = new Set<Entry<I, O>>();
  /** Total `itemCost` of the queued entries. */
  private queuedCost = 0;
  /** Running batches: when each started and how long it was estimated to take. */
  private readonly running = new Map<Promise<void>, { startedAt: number; estimateMs: number }>();
  /** One listener per signal, however many items share it (e.g. a server's shutdown signal). */
  private readonly watches = new Map<AbortSignal, SignalWatch<I, O>>();
  private delayTimer?: NodeJS.Timeout;
  /** The queued entry the delay timer was armed for. */
  private delayTimerFor?: Entry<I, O>;
  /** dispatch() was called while every slot was busy. */
  private flushPending = false;
  private closed = false;
  private readonly batchTime = new BatchTimeModel();
  /** When a batch that computed something last finished. */
  private lastObservedAt?: number;

  constructor(
    private readonly run: (items: I[], batch: BatchContext) => Promise<(O | Error)[]>,
    options: BatcherOptions<I>,
    private readonly hooks: BatcherHooks = {},
  ) {
    this.options = validateOptions(options);
    this.itemCost = options.itemCost ?? (() => 0);
    this.now = options.now ?? (() => performance.now());
  }

  get queueDepth(): number {
    return this.queue.size;
  }

  get inFlight(): number {
    return this.running.size;
  }

  /** Learnt batch time rates (per item, per unit of cost), undefined before a batch has run. */
  get batchRates(): { perItemMs: number; perCostMs: number } | undefined {
    return this.batchTime.rates();
  }

  /**
   * Refuses, before they queue, items that the work queued ahead (and the rest of the running
   * batches) would make late for `deadline` (default now + `timeoutMs`) at the pace of recent
   * batches: 'overloaded' with `retryAfterSeconds`, each item counted as a rejection. Items that
   * would be late even on an idle batcher are admitted (the estimate is too rough to refuse a
   * request for its size: limits in the caller's units do that), as is everything before the
   * pace is known.
   */
  admit(costs: readonly number[], deadline?: number): void {
    const now = this.now();
    const costSum = costs.reduce((a, b) => a + b, 0);
    const { maxInFlight, timeoutMs } = this.options;
    if (this.batchTime.samples < this.options.minAdmissionSamples) return;
    const ownMs = this.estimateMs(costs.length, costSum, now);
    if (ownMs === undefined || costs.length === 0) return;
    const own = ownMs / maxInFlight;
    const details = { items: costs.length, cost: costSum, ownMs: Math.round(own), timeoutMs };
    const aheadMs = this.drainMs(now);
    const leftMs = (deadline ?? now + timeoutMs) - now;
    if (own <= leftMs && aheadMs + own > leftMs) {
      this.countRejects('overloaded', costs.length);
      throw new GimError(
        'overloaded',
        `the work queued ahead needs about ${seconds(aheadMs)} of compute; with this request's ` +
          `${seconds(own)} it would not be answered within its ${seconds(timeoutMs)} timeout`,
        {
          details: {
            ...details,
            aheadMs: Math.round(aheadMs),
            leftMs: Math.round(leftMs),
            retryAfterSeconds: this.retryAfterSeconds(now),
            queueDepth: this.queue.size,
          },
        },
      );
    }
  }

  submit(item: I, opts: SubmitOptions = {}): Promise<O> {
    const { signal } = opts;
    if (this.closed) return this.refuse('cancelled', 'the batcher is closed');
    if (signal?.aborted)
      return this.refuse('cancelled', 'the request was cancelled', { cause: signal.reason });
    const now = this.now();
    const { timeoutMs, maxQueue } = this.options;
    const deadline = opts.deadline ?? now + timeoutMs;
    if (deadline <= now) {
      return this.refuse('timeout', `timed out after ${timeoutMs} ms (before it was queued)`, {
        details: { timeoutMs, phase: 'arriving' },
      });
    }
    if (this.queue.size >= maxQueue) {
      return this.refuse('overloaded', `the queue is full (${maxQueue} items)`, {
        details: { retryAfterSeconds: this.retryAfterSeconds(now), queueDepth: this.queue.size },
      });
    }

    return new Promise<O>((resolve, reject) => {
      const entry: Entry<I, O> = {
        item,
        cost: this.itemCost(item),
        submittedAt: now,
        deadline,
        resolve,
        reject,
        running: false,
        settled: false,
      };
      entry.timer = setTimeout(
        () => this.expire(entry),
        Math.min(MAX_TIMER_MS, Math.max(0, deadline - now)),
      );
      if (signal) this.watch(signal, entry);
      this.queue.add(entry);
      this.queuedCost += entry.cost;
      this.reportQueueDepth();
      this.pump();
    });
  }

  dispatch(): void {
    if (this.queue.size === 0) return;
    if (this.running.size < this.options.maxInFlight) this.startBatch();
    else this.flushPending = true;
    this.pump();
  }

  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.clearDelayTimer();
      for (const entry of [...this.queue]) {
        const error = new GimError('cancelled', 'the batcher was closed before the item ran');
        this.abandon(entry, 'cancelled', error);
      }
    }
    while (this.running.size > 0) await Promise.all([...this.running.keys()]);
  }

  /** Starts every batch that is due and free to run, then arms the delay timer for the rest. */
  private pump(): void {
    const { maxBatchSize, maxDelayMs, maxInFlight } = this.options;
    while (this.running.size < maxInFlight) {
      const oldest = firstOf(this.queue);
      if (!oldest) break;
      const due =
        this.flushPending ||
        this.queue.size >= maxBatchSize ||
        this.now() - oldest.submittedAt >= maxDelayMs;
      if (!due || !this.startBatch()) break;
    }
    if (this.queue.size === 0) this.flushPending = false;

    const oldest = firstOf(this.queue);
    if (!oldest || this.running.size >= maxInFlight) {
      // A finishing batch pumps again, so a full house needs no timer.
      this.clearDelayTimer();
      return;
    }
    if (this.delayTimerFor === oldest) return;
    this.clearDelayTimer();
    const wait = oldest.submittedAt + maxDelayMs - this.now();
    this.delayTimerFor = oldest;
    // Armed only for the current oldest item (and re-armed when it leaves), so on firing its
    // delay is up even if the clock says a fraction of a millisecond is left.
    this.delayTimer = setTimeout(
      () => {
        this.delayTimer = undefined;
        this.delayTimerFor = undefined;
        if (this.queue.size > 0 && this.running.size < maxInFlight) this.startBatch();
        this.pump();
      },
      Math.max(0, wait),
    );
    // Every queued item's own timeout timer keeps the process alive while it waits.
    this.delayTimer.unref();
  }

  /**
   * Takes from the queue, in order, up to `maxBatchSize` items that the batch can answer in time:
   * an item past its deadline rejects 'timeout', one that cannot finish in time even alone
   * rejects 'too_late', one that would make the batch late for an earlier-due item stays queued.
   */
  private takeBatch(now: number): { batch: Entry<I, O>[]; cost: number; estimateMs: number } {
    const batch: Entry<I, O>[] = [];
    let cost = 0;
    let estimateMs = 0;
    let due = Infinity; // the earliest deadline in the batch
    for (const entry of this.queue) {
      if (batch.length >= this.options.maxBatchSize) break;
      if (entry.deadline <= now) {
        this.drop(entry, 'timeout', this.timeoutError('queued'));
        continue;
      }
      const alone = this.estimateMs(1, entry.cost, now);
      if (alone !== undefined && now + alone > entry.deadline) {
        this.drop(entry, 'too_late', this.tooLateError(entry, now, alone));
        continue;
      }
      const together = this.estimateMs(batch.length + 1, cost + entry.cost, now);
      if (together !== undefined && now + together > Math.min(due, entry.deadline)) continue;
      batch.push(entry);
      cost += entry.cost;
      estimateMs = together ?? 0;
      due = Math.min(due, entry.deadline);
    }
    return { batch, cost, estimateMs };
  }

  /** Starts a batch of what `takeBatch` gives; false if that was nothing. */
  private startBatch(): boolean {
    const startedAt = this.now();
    const { batch, cost, estimateMs } = this.takeBatch(startedAt);
    for (const entry of batch) {
      this.queue.delete(entry);
      this.queuedCost -= entry.cost;
      entry.running = true;
    }
    this.flushPending = false;
    if (this.delayTimerFor && batch.includes(this.delayTimerFor)) this.clearDelayTimer();
    this.reportQueueDepth();
    if (batch.length === 0) return false;

    const queueMs = batch.map((e) => startedAt - e.submittedAt);
    const context: BatchContext = {
      wanted: (index) => {
        const entry = batch[index];
        if (entry === undefined || entry.settled) return false;
        if (this.now() < entry.deadline) return true;
        this.drop(entry, 'timeout', this.timeoutError('running'));
        return false;
      },
      deadline: (index) => batch[index]?.deadline ?? -Infinity,
    };
    let results: Promise<(O | Error)[]>;
    try {
      results = Promise.resolve(
        this.run(
          batch.map((e) => e.item),
          context,
        ),
      );
    } catch (e) {
      results = Promise.reject(e);
    }
    const finished = (
      outputs: unknown,
      settle: () => Omit<BatchStats, 'size' | 'queueMs' | 'computeMs' | 'cost'>,
    ) => {
      const computeMs = this.now() - startedAt;
      this.learn(batch, outputs, computeMs);
      this.running.delete(done);
      const counts = settle();
      this.callHook(() =>
        this.hooks.onBatch?.({ size: batch.length, queueMs, computeMs, cost, ...counts }),
      );
      this.pump();
    };
    const done: Promise<void> = results.then(
      (outputs) => finished(outputs, () => this.deliver(batch, outputs)),
      (error: unknown) => finished(undefined, () => this.failAll(batch, error)),
    );
    this.running.set(done, { startedAt, estimateMs });
    return true;
  }

  /**
   * Learns the pace from a finished batch: the items `run` computed (its non-Error results) and
   * the time it took. A batch that computed nothing (it failed, or every item was skipped or
   * refused past its deadline) says nothing about compute time.
   */
  private learn(batch: Entry<I, O>[], outputs: unknown, ms: number): void {
    if (!Array.isArray(outputs) || outputs.length !== batch.length) return;
    let items = 0;
    let cost = 0;
    batch.forEach((entry, i) => {
      if (outputs[i] instanceof Error) return;
      items++;
      cost += entry.cost;
    });
    if (items === 0) return;
    this.batchTime.observe(items, cost, ms);
    this.lastObservedAt = this.now();
  }

  /**
   * Estimated ms to compute `items` items of total `cost`, undefined before a batch has been
   * learnt from, or when the estimate is stale: no batch finished within `timeoutMs` and none is
   * running. A stall or a slow outlier must not refuse work for ever: the next batch measures
   * again.
   */
  private estimateMs(items: number, cost: number, now: number): number | undefined {
    if (this.lastObservedAt === undefined) return undefined;
    if (this.running.size === 0 && now - this.lastObservedAt > this.options.timeoutMs) {
      return undefined;
    }
    return this.batchTime.estimate(items, cost);
  }

  /** Hands each result to its caller, if it still waits; counts what was delivered and wasted. */
  private deliver(
    batch: Entry<I, O>[],
    outputs: (O | Error)[],
  ): { ok: number; failed: number; discarded: number } {
    if (!Array.isArray(outputs) || outputs.length !== batch.length) {
      const got = Array.isArray(outputs) ? `${outputs.length} results` : typeof outputs;
      const error = new GimError(
        'backend_unavailable',
        `the batch function returned ${got} for a batch of ${batch.length} items`,
        { details: { expected: batch.length } },
      );
      return this.failAll(batch, error);
    }
    const now = this.now();
    let ok = 0;
    let failed = 0;
    let discarded = 0;
    batch.forEach((entry, i) => {
      const output = outputs[i] as O | Error;
      const computed = !(output instanceof Error);
      if (!entry.settled && now >= entry.deadline) {
        this.drop(entry, 'timeout', this.timeoutError('running'));
      }
      if (entry.settled) {
        // An Error for an item already answered is most often one `run` skipped (not wanted).
        if (computed) discarded++;
      } else if (computed) {
        ok++;
        this.succeed(entry, output);
      } else {
        failed++;
        this.fail(entry, output);
      }
    });
    return { ok, failed, discarded };
  }

  private failAll(
    batch: Entry<I, O>[],
    error: unknown,
  ): { ok: number; failed: number; discarded: number } {
    let failed = 0;
    for (const entry of batch) {
      if (entry.settled) continue;
      failed++;
      this.fail(entry, error);
    }
    return { ok: 0, failed, discarded: 0 };
  }

  /** The deadline timer of an entry fired. */
  private expire(entry: Entry<I, O>): void {
    this.abandon(entry, 'timeout', this.timeoutError(entry.running ? 'running' : 'queued'));
  }

  /** Rejects an item that leaves before its result: timed out, cancelled, or closed. */
  private abandon(entry: Entry<I, O>, reason: RejectReason, error: GimError): void {
    if (entry.settled) return;
    const wasQueued = this.queue.has(entry);
    this.drop(entry, reason, error);
    // A queued item leaving may let the next one start or need the delay timer re-armed.
    if (wasQueued && !this.closed) this.pump();
  }

  /** Settles an entry with `error` and counts it, without starting anything. */
  private drop(entry: Entry<I, O>, reason: RejectReason, error: GimError): void {
    if (entry.settled) return;
    if (this.queue.delete(entry)) {
      this.queuedCost -= entry.cost;
      this.reportQueueDepth();
      if (this.delayTimerFor === entry) this.clearDelayTimer();
    }
    this.fail(entry, error);
    this.callHook(() => this.hooks.onReject?.(reason));
  }

  private timeoutError(phase: 'queued' | 'running'): GimError {
    const { timeoutMs } = this.options;
    return new GimError('timeout', `timed out after ${timeoutMs} ms (${phase})`, {
      details: { timeoutMs, phase },
    });
  }

  private tooLateError(entry: Entry<I, O>, now: number, estimateMs: number): GimError {
    const { timeoutMs } = this.options;
    const leftMs = Math.max(0, entry.deadline - now);
    return new GimError(
      'timeout',
      `timed out after ${timeoutMs} ms (queued): ${Math.round(leftMs)} ms were left, and ` +
        `computing it takes about ${Math.round(estimateMs)} ms`,
      { details: { timeoutMs, phase: 'queued', leftMs, estimateMs } },
    );
  }

  private fail(entry: Entry<I, O>, error: unknown): void {
    if (this.finish(entry)) entry.reject(error);
  }

  private succeed(entry: Entry<I, O>, value: O): void {
    if (this.finish(entry)) entry.resolve(value);
  }

  /** Marks an entry settled and frees its timer and listener; false if it already was. */
  private finish(entry: Entry<I, O>): boolean {
    if (entry.settled) return false;
    entry.settled = true;
    clearTimeout(entry.timer);
    if (entry.signal) this.unwatch(entry.signal, entry);
    return true;
  }

  private watch(signal: AbortSignal, entry: Entry<I, O>): void {
    entry.signal = signal;
    let watch = this.watches.get(signal);
    if (!watch) {
      const entries = new Set<Entry<I, O>>();
      const onAbort = (): void => {
        for (const e of [...entries]) {
          const error = new GimError('cancelled', 'the request was cancelled', {
            cause: signal.reason,
          });
          this.abandon(e, 'cancelled', error);
        }
      };
      watch = { entries, onAbort };
      this.watches.set(signal, watch);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    watch.entries.add(entry);
  }

  private unwatch(signal: AbortSignal, entry: Entry<I, O>): void {
    entry.signal = undefined;
    const watch = this.watches.get(signal);
    if (!watch) return;
    watch.entries.delete(entry);
    if (watch.entries.size > 0) return;
    signal.removeEventListener('abort', watch.onAbort);
    this.watches.delete(signal);
  }

  private refuse(
    reason: 'cancelled' | 'timeout' | 'overloaded',
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ): Promise<never> {
    this.countRejects(reason, 1);
    return Promise.reject(new GimError(reason, message, options));
  }

  private countRejects(reason: RejectReason, n: number): void {
    for (let i = 0; i < n; i++) this.callHook(() => this.hooks.onReject?.(reason));
  }

  /**
   * Estimated ms until the running batches and the queued items are computed, at the learnt
   * pace, shared by the slots; 0 before any batch has run.
   */
  private drainMs(now: number): number {
    let runningMs = 0;
    for (const { startedAt, estimateMs } of this.running.values())
      runningMs += Math.max(0, startedAt + estimateMs - now);
    const queuedMs = this.estimateMs(this.queue.size, this.queuedCost, now) ?? 0;
    return (runningMs + queuedMs) / this.options.maxInFlight;
  }

  /**
   * When to retry: the time to drain the running and queued work, at least 1 s, and at most the
   * item timeout (items queued longer than that time out anyway). Before any batch has run, 1 s.
   */
  private retryAfterSeconds(now: number): number {
    const ceiling = Math.max(1, Math.ceil(this.options.timeoutMs / 1000));
    if (this.estimateMs(1, 0, now) === undefined) return 1;
    return Math.min(ceiling, Math.max(1, Math.ceil(this.drainMs(now) / 1000)));
  }

  private clearDelayTimer(): void {
    clearTimeout(this.delayTimer);
    this.delayTimer = undefined;
    this.delayTimerFor = undefined;
  }

  private reportQueueDepth(): void {
    this.callHook(() => this.hooks.onQueueDepth?.(this.queue.size));
  }

  private callHook(call: () => void): void {
    try {
      call();
    } catch {
      // Metrics must never break batching.
    }
  }
}

/** `1.2 s` */
function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function firstOf<T>(set: Set<T>): T | undefined {
  for (const value of set) return value;
  return undefined;
}

/** Checks every option and throws one 'invalid_argument' naming all the bad ones. */
function validateOptions<I>(
  options: BatcherOptions<I>,
): Required<Omit<BatcherOptions<I>, 'itemCost' | 'now'>> {
  const { maxBatchSize, maxDelayMs, maxQueue, timeoutMs } = options;
  const resolved = {
    maxBatchSize,
    maxDelayMs,
    maxQueue,
    timeoutMs,
    maxInFlight: options.maxInFlight ?? 1,
    minAdmissionSamples: options.minAdmissionSamples ?? 3,
  };
  const problems: string[] = [];
  const isInt = (v: unknown, min: number): boolean =>
    typeof v === 'number' && Number.isInteger(v) && v >= min;
  const isMs = (v: unknown, min: number): boolean =>
    typeof v === 'number' && Number.isFinite(v) && v >= min && v <= MAX_TIMER_MS;

  if (!isInt(resolved.maxBatchSize, 1))
    problems.push(`maxBatchSize must be an integer >= 1 (got ${String(resolved.maxBatchSize)})`);
  if (!isMs(resolved.maxDelayMs, 0))
    problems.push(
      `maxDelayMs must be a number of ms in [0, ${MAX_TIMER_MS}] (got ${String(resolved.maxDelayMs)})`,
    );
  if (!isInt(resolved.maxQueue, 1))
    problems.push(`maxQueue must be an integer >= 1 (got ${String(resolved.maxQueue)})`);
  else if (isInt(resolved.maxBatchSize, 1) && resolved.maxQueue < resolved.maxBatchSize)
    problems.push(
      `maxQueue (${resolved.maxQueue}) must be >= maxBatchSize (${resolved.maxBatchSize}) so a full batch can queue`,
    );
  if (!isMs(resolved.timeoutMs, 1))
    problems.push(
      `timeoutMs must be a number of ms in [1, ${MAX_TIMER_MS}] (got ${String(resolved.timeoutMs)})`,
    );
  if (!isInt(resolved.maxInFlight, 1))
    problems.push(`maxInFlight must be an integer >= 1 (got ${String(resolved.maxInFlight)})`);

  if (problems.length > 0)
    throw new GimError('invalid_argument', `invalid batcher options: ${problems.join('; ')}`, {
      details: { problems },
    });
  return resolved;
}
