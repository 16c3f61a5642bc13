import { GimError } from '../errors.js';

export interface BatcherOptions {
  /** Items per batch (>= 1); 1 turns batching off. */
  maxBatchSize: number;
  /** How long the oldest queued item may wait for others before its batch starts (>= 0). */
  maxDelayMs: number;
  /** Queued (not yet running) items, >= maxBatchSize; beyond it `submit` rejects 'overloaded'. */
  maxQueue: number;
  /** From submit to result; past it the item rejects 'timeout'. */
  timeoutMs: number;
  /** Batches running at once (default 1: the inference worker is serial). */
  maxInFlight?: number;
}

export interface BatchStats {
  size: number;
  /** Per item, in batch order: submit -> batch start. */
  queueMs: number[];
  /** Batch start -> `run` settled. */
  computeMs: number;
  /** Results `run` produced as values. */
  ok: number;
  /** Results `run` produced as Errors, or the whole batch when `run` failed. */
  failed: number;
}

export type RejectReason = 'overloaded' | 'timeout' | 'cancelled';

export interface BatcherHooks {
  onBatch?(stats: BatchStats): void;
  onReject?(reason: RejectReason): void;
  onQueueDepth?(depth: number): void;
}

/** setTimeout's largest delay; longer ones fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Weight of the newest batch in the moving average behind `retryAfterSeconds`. */
const EMA_WEIGHT = 0.2;

interface Entry<I, O> {
  readonly item: I;
  readonly submittedAt: number;
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
 * - Each item has `timeoutMs` from submit to result. Still queued at its deadline, it leaves the
 *   queue and rejects 'timeout'; running, it rejects 'timeout' and its result is discarded.
 *   Each pending item holds one timeout timer, cleared when it settles: the process stays up while
 *   a caller waits (at most until its timeout) and no longer. The delay timer is unref'd.
 * - An aborted `signal` rejects the item 'cancelled': already aborted, at once; queued, it leaves
 *   the queue and never runs; running, its result is discarded.
 * - A full queue (`maxQueue` items) rejects 'overloaded' with `details.retryAfterSeconds`,
 *   estimated from the queue depth and a moving average of recent batch times.
 * - `dispatch()` starts a batch now; when every slot is busy, it starts as soon as one frees.
 * - `close()` rejects new and queued items 'cancelled' and waits for running batches, whose
 *   callers still get their results.
 * - Hooks report to metrics; one that throws is ignored. `onBatch` counts what `run` produced,
 *   including results discarded because their caller timed out or went away; those callers are
 *   counted by `onReject` when they reject.
 */
export class Batcher<I, O> {
  private readonly options: Required<BatcherOptions>;
  /** Queued entries in arrival order (a Set iterates in insertion order and deletes in O(1)). */
  private readonly queue = new Set<Entry<I, O>>();
  private readonly running = new Set<Promise<void>>();
  /** One listener per signal, however many items share it (e.g. a server's shutdown signal). */
  private readonly watches = new Map<AbortSignal, SignalWatch<I, O>>();
  private delayTimer?: NodeJS.Timeout;
  /** The queued entry the delay timer was armed for. */
  private delayTimerFor?: Entry<I, O>;
  /** dispatch() was called while every slot was busy. */
  private flushPending = false;
  private closed = false;
  private batchMsAverage?: number;

  constructor(
    private readonly run: (items: I[]) => Promise<(O | Error)[]>,
    options: BatcherOptions,
    private readonly hooks: BatcherHooks = {},
  ) {
    this.options = validateOptions(options);
  }

  get queueDepth(): number {
    return this.queue.size;
  }

  get inFlight(): number {
    return this.running.size;
  }

  submit(item: I, opts: { signal?: AbortSignal } = {}): Promise<O> {
    const { signal } = opts;
    if (this.closed) return this.refuse('cancelled', 'the batcher is closed');
    if (signal?.aborted)
      return this.refuse('cancelled', 'the request was cancelled', { cause: signal.reason });
    if (this.queue.size >= this.options.maxQueue) {
      const retryAfterSeconds = this.retryAfterSeconds();
      return this.refuse('overloaded', `the queue is full (${this.options.maxQueue} items)`, {
        details: { retryAfterSeconds, queueDepth: this.queue.size },
      });
    }

    return new Promise<O>((resolve, reject) => {
      const entry: Entry<I, O> = {
        item,
        submittedAt: performance.now(),
        resolve,
        reject,
        running: false,
        settled: false,
      };
      const { timeoutMs } = this.options;
      entry.timer = setTimeout(() => {
        const phase = entry.running ? 'running' : 'queued';
        this.abandon(entry, 'timeout', `timed out after ${timeoutMs} ms (${phase})`, {
          details: { timeoutMs, phase },
        });
      }, timeoutMs);
      if (signal) this.watch(signal, entry);
      this.queue.add(entry);
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
      for (const entry of [...this.queue])
        this.abandon(entry, 'cancelled', 'the batcher was closed before the item ran');
    }
    while (this.running.size > 0) await Promise.all([...this.running]);
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
        performance.now() - oldest.submittedAt >= maxDelayMs;
      if (!due) break;
      this.startBatch();
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
    const wait = oldest.submittedAt + maxDelayMs - performance.now();
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

  private startBatch(): void {
    const batch: Entry<I, O>[] = [];
    for (const entry of this.queue) {
      if (batch.length >= this.options.maxBatchSize) break;
      batch.push(entry);
    }
    for (const entry of batch) {
      this.queue.delete(entry);
      entry.running = true;
    }
    this.flushPending = false;
    if (this.delayTimerFor && batch.includes(this.delayTimerFor)) this.clearDelayTimer();
    this.reportQueueDepth();

    const startedAt = performance.now();
    const queueMs = batch.map((e) => startedAt - e.submittedAt);
    let results: Promise<(O | Error)[]>;
    try {
      results = Promise.resolve(this.run(batch.map((e) => e.item)));
    } catch (e) {
      results = Promise.reject(e);
    }
    const finished = (settle: () => { ok: number; failed: number }): void => {
      const computeMs = performance.now() - startedAt;
      this.batchMsAverage =
        this.batchMsAverage === undefined
          ? computeMs
          : this.batchMsAverage + EMA_WEIGHT * (computeMs - this.batchMsAverage);
      this.running.delete(done);
      const { ok, failed } = settle();
      this.callHook(() =>
        this.hooks.onBatch?.({ size: batch.length, queueMs, computeMs, ok, failed }),
      );
      this.pump();
    };
    const done: Promise<void> = results.then(
      (outputs) => finished(() => this.deliver(batch, outputs)),
      (error: unknown) =>
        finished(() => {
          for (const entry of batch) this.fail(entry, error);
          return { ok: 0, failed: batch.length };
        }),
    );
    this.running.add(done);
  }

  /** Hands each result to its caller; returns what `run` produced, for the stats. */
  private deliver(batch: Entry<I, O>[], outputs: (O | Error)[]): { ok: number; failed: number } {
    if (!Array.isArray(outputs) || outputs.length !== batch.length) {
      const got = Array.isArray(outputs) ? `${outputs.length} results` : typeof outputs;
      const error = new GimError(
        'backend_unavailable',
        `the batch function returned ${got} for a batch of ${batch.length} items`,
        { details: { expected: batch.length } },
      );
      for (const entry of batch) this.fail(entry, error);
      return { ok: 0, failed: batch.length };
    }
    let ok = 0;
    batch.forEach((entry, i) => {
      const output = outputs[i] as O | Error;
      if (output instanceof Error) this.fail(entry, output);
      else {
        ok++;
        this.succeed(entry, output);
      }
    });
    return { ok, failed: batch.length - ok };
  }

  /** Rejects an item that leaves before its result: timed out, cancelled, or closed. */
  private abandon(
    entry: Entry<I, O>,
    reason: 'timeout' | 'cancelled',
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ): void {
    if (entry.settled) return;
    if (this.queue.delete(entry)) {
      this.reportQueueDepth();
      if (this.delayTimerFor === entry) this.clearDelayTimer();
    }
    this.fail(entry, new GimError(reason, message, options));
    this.callHook(() => this.hooks.onReject?.(reason));
    if (!this.closed) this.pump();
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
        for (const e of [...entries])
          this.abandon(e, 'cancelled', 'the request was cancelled', { cause: signal.reason });
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
    reason: RejectReason,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ): Promise<never> {
    this.callHook(() => this.hooks.onReject?.(reason));
    return Promise.reject(new GimError(reason, message, options));
  }

  /**
   * Time to drain the queue: the batches ahead (the queued ones and one running) times the
   * recent batch time, shared by the slots; at least 1 s, and at most the item timeout (items
   * queued longer than that time out anyway). Without a finished batch yet, 1 s.
   */
  private retryAfterSeconds(): number {
    const { maxBatchSize, maxInFlight, timeoutMs } = this.options;
    const ceiling = Math.max(1, Math.ceil(timeoutMs / 1000));
    if (this.batchMsAverage === undefined) return 1;
    const batchesAhead = Math.ceil(this.queue.size / maxBatchSize) + 1;
    const drainMs = (batchesAhead * this.batchMsAverage) / maxInFlight;
    return Math.min(ceiling, Math.max(1, Math.ceil(drainMs / 1000)));
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

function firstOf<T>(set: Set<T>): T | undefined {
  for (const value of set) return value;
  return undefined;
}

/** Checks every option and throws one 'invalid_argument' naming all the bad ones. */
function validateOptions(options: BatcherOptions): Required<BatcherOptions> {
  const resolved = { ...options, maxInFlight: options.maxInFlight ?? 1 };
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
