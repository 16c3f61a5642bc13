/**
 * The main-thread side of the inference worker: starts it, correlates requests and responses by
 * id, and restarts it when it dies, so that a crashed backend costs the calls in flight, not the
 * service. Imports no tfjs: the main thread never computes.
 */
import { Worker, type TransferListItem } from 'node:worker_threads';
import type { BackendInfo, BackendName } from '../gim/backend/index.js';
import type { GridShape } from '../gim/encoders/pooling.js';
import { GimError } from '../gim/errors.js';
import type { StackManifest } from '../gim/store/manifest.js';
import type {
  GoldenCheck,
  RequestOf,
  RequestType,
  ResultOf,
  SuccessResponse,
  WorkerMessage,
} from './protocol.js';
import { OWN_EXTENSION, workerExecArgv } from './worker-argv.js';

export interface InferenceClientOptions {
  modelsDir: string;
  /** Use exactly this backend (default: the best available). */
  backend?: BackendName;
  log?: (line: string) => void;
  /** Calls in flight or waiting for a restart at once; more are refused with `overloaded`. */
  maxPending?: number;
  /** A call without an answer after this long rejects with `timeout`. */
  callTimeoutMs?: number;
  /** The worker's entry module (default: inference-worker beside this file); tests wrap it. */
  workerUrl?: URL;
}

export interface EmbedResult {
  /** Layer → grid [n, rows, cols, C], row-major (audio: rows 1, cols = frames). */
  grids: Map<number, { data: Float32Array; shape: GridShape }>;
  /** Time in the worker: forward pass and read-back. */
  computeMs: number;
}

const DEFAULT_MAX_PENDING = 1024;
const DEFAULT_CALL_TIMEOUT_MS = 120_000;
/** Deaths within this window count toward the restart backoff (a crash loop slows down). */
const RESTART_WINDOW_MS = 60_000;
const MAX_RESTART_DELAY_MS = 5_000;

/** Compiled, the worker is `inference-worker.js` beside this file; run by swc-node, `.ts`. */
const WORKER_URL = new URL(`./inference-worker${OWN_EXTENSION}`, import.meta.url);

interface Pending {
  worker: Worker;
  resolve: (result: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class InferenceClient {
  /** The initialised worker; null while (re)starting. */
  private worker: Worker | null = null;
  private booting: Promise<Worker> | null = null;
  /** Every worker not yet exited (the current one, one booting, ones terminating). */
  private readonly workers = new Set<Worker>();
  private readonly pending = new Map<number, Pending>();
  /** `name@version` of the loaded stacks: a restarted worker loads them again. */
  private readonly loaded = new Set<string>();
  /** Loaded stacks a restarted worker could not load again: loaded at their next embed. */
  private readonly lost = new Set<string>();
  /** Why no worker serves, after one died (null while one is up, or before the first start). */
  private downReason: string | null = null;
  /** Times of recent worker deaths and failed starts, for the restart backoff. */
  private failures: number[] = [];
  private restartWait: { timer: NodeJS.Timeout; wake: () => void } | null = null;
  /** Public calls in flight or waiting for a worker. */
  private calls = 0;
  private nextId = 1;
  private closed = false;
  private info: BackendInfo | null = null;
  private readonly log: (line: string) => void;
  private readonly maxPending: number;
  private readonly callTimeoutMs: number;

  private constructor(private readonly opts: InferenceClientOptions) {
    this.log = opts.log ?? (() => undefined);
    this.maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** Starts the worker and selects its backend; rejects (with the worker gone) if that fails. */
  static async start(opts: InferenceClientOptions): Promise<InferenceClient> {
    const client = new InferenceClient(opts);
    try {
      await client.readyWorker();
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  /**
   * Why no worker serves calls right now (it died and is being restarted, with its stacks, or its
   * restart failed and is retried), or null while one is up. Readiness reports it.
   */
  get down(): string | null {
    if (this.closed) return 'the inference client is closed';
    return this.worker === null ? this.downReason : null;
  }

  /** The backend the worker selected. */
  get backend(): BackendInfo {
    if (this.info === null) throw new GimError('backend_unavailable', 'the worker never started');
    return this.info;
  }

  /**
   * Loads a stack version into the worker (once: loading it again reuses it). The worker checks
   * the version's golden embeddings first: a mismatch rejects with `golden_mismatch`.
   */
  async load(
    ref: string,
  ): Promise<{ manifest: StackManifest; spaceDigests: string[]; golden: GoldenCheck }> {
    const { manifest, spaceDigests, golden } = await this.call({ type: 'load', ref });
    const key = `${manifest.name}@${manifest.version}`;
    this.loaded.add(key);
    this.lost.delete(key);
    return { manifest, spaceDigests, golden };
  }

  /**
   * Embedding grids of `n` items of equal size, one forward pass for all `layers`: images
   * [n, h, w, c] in [0, 1] give patch grids [n, rows, cols, C]; audio clips [n, T] (normalised)
   * give frames [n, 1, frames, C]. `input`'s buffer is transferred to the worker (detached here)
   * when the view spans all of it; otherwise the view is copied first. Past `deadline` (ms since
   * the epoch) the call rejects with `timeout`, here or in the worker, rather than compute.
   */
  async embed(
    name: string,
    version: number,
    input: Float32Array,
    n: number,
    layers: number[],
    opts: { deadline?: number } = {},
  ): Promise<EmbedResult> {
    const { deadline } = opts;
    if (deadline !== undefined && epochNow() >= deadline) throw lateError();
    // Not reloaded by a restart (its files changed meanwhile?): load it now, or say why not.
    if (this.lost.has(`${name}@${version}`)) await this.load(`${name}@${version}`);
    const sent =
      input.buffer instanceof ArrayBuffer &&
      input.byteOffset === 0 &&
      input.byteLength === input.buffer.byteLength
        ? input
        : input.slice();
    const transfer = sent.byteLength > 0 ? [sent.buffer as ArrayBuffer] : [];
    const { grids, computeMs } = await this.call(
      { type: 'embed', name, version, input: sent, n, layers, deadline },
      transfer,
      // A restarting worker can hold the call: checked again just before it is posted.
      () => deadline !== undefined && epochNow() >= deadline,
    );
    return {
      grids: new Map(grids.map((g) => [g.layer, { data: g.data, shape: g.shape }])),
      computeMs,
    };
  }

  /** Frees a loaded version in the worker; false if it was not loaded. */
  async unload(name: string, version: number): Promise<boolean> {
    this.loaded.delete(`${name}@${version}`);
    return (await this.call({ type: 'unload', name, version })).unloaded;
  }

  /** tfjs memory in the worker. */
  stats(): Promise<{ numTensors: number; numBytes: number }> {
    return this.call({ type: 'stats' });
  }

  /** Terminates the worker; pending and later calls reject with `backend_unavailable`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.restartWait !== null) {
      clearTimeout(this.restartWait.timer);
      this.restartWait.wake();
    }
    this.rejectPending(() => true, closedError());
    await Promise.all([...this.workers].map((w) => w.terminate()));
  }

  /** Kills the worker as a crash would (tests only); the client restarts it. */
  async terminateWorkerForTest(): Promise<void> {
    if (this.worker === null) throw new GimError('backend_unavailable', 'no running worker');
    await this.worker.terminate();
  }

  private async call<T extends RequestType>(
    body: RequestOf<T>,
    transfer: TransferListItem[] = [],
    late: () => boolean = () => false,
  ): Promise<ResultOf[T]> {
    if (this.closed) throw closedError();
    if (this.calls >= this.maxPending) {
      throw new GimError(
        'overloaded',
        `${this.calls} calls are waiting for the inference worker (limit ${this.maxPending})`,
        { details: { retryAfterSeconds: 1 } },
      );
    }
    this.calls++;
    try {
      // Sent in this tick when the worker is up: no await in between.
      const worker = this.worker ?? (await this.readyWorker());
      if (late()) throw lateError();
      return await this.send(worker, body, transfer);
    } finally {
      this.calls--;
    }
  }

  /** The running worker, or the one being (re)started: one start at a time. */
  private readyWorker(): Promise<Worker> {
    if (this.closed) return Promise.reject(closedError());
    if (this.worker !== null) return Promise.resolve(this.worker);
    this.booting ??= this.boot().finally(() => {
      this.booting = null;
    });
    return this.booting;
  }

  private async boot(): Promise<Worker> {
    await this.backoff();
    if (this.closed) throw closedError();
    const worker = this.spawn();
    try {
      const { backend } = await this.send(worker, {
        type: 'init',
        modelsDir: this.opts.modelsDir,
        backend: this.opts.backend,
      });
      for (const ref of [...this.loaded]) {
        try {
          await this.send(worker, { type: 'load', ref });
        } catch (e) {
          if (!this.workers.has(worker)) throw e;
          // One version that cannot be read again must not keep the others down.
          this.loaded.delete(ref);
          this.lost.add(ref);
          this.log(`inference worker: could not load ${ref} again: ${describe(e)}`);
        }
      }
      if (this.closed) throw closedError();
      this.info = backend;
      this.worker = worker;
      return worker;
    } catch (e) {
      this.failures.push(Date.now());
      void worker.terminate();
      if (e instanceof GimError) throw e;
      throw new GimError('backend_unavailable', `inference worker: ${describe(e)}`, { cause: e });
    }
  }

  private spawn(): Worker {
    const { execArgv, dropped } = workerExecArgv();
    if (dropped.length > 0) {
      this.log(`inference worker: started without ${dropped.join(' ')} (not for workers)`);
    }
    const worker = new Worker(this.opts.workerUrl ?? WORKER_URL, {
      execArgv,
      name: 'gim-inference',
    });
    this.workers.add(worker);
    let failure: string | null = null;
    worker.on('message', (m: WorkerMessage) => this.onMessage(m));
    worker.on('error', (e) => (failure = describe(e)));
    worker.on('messageerror', (e) => this.log(`inference worker: undecodable message: ${e}`));
    worker.on('exit', (code) => this.onExit(worker, failure ?? `exit code ${code}`));
    return worker;
  }

  private send<T extends RequestType>(
    worker: Worker,
    body: RequestOf<T>,
    transfer: TransferListItem[] = [],
  ): Promise<ResultOf[T]> {
    const id = this.nextId++;
    return new Promise<ResultOf[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new GimError(
            'timeout',
            `inference worker: no answer to '${body.type}' in ${this.callTimeoutMs} ms`,
          ),
        );
      }, this.callTimeoutMs);
      this.pending.set(id, { worker, resolve: resolve as (r: unknown) => void, reject, timer });
      try {
        worker.postMessage({ ...body, id }, transfer);
      } catch (e) {
        this.settle(id);
        reject(new GimError('invalid_argument', `cannot send '${body.type}': ${describe(e)}`));
      }
    });
  }

  private onMessage(m: WorkerMessage): void {
    if ('type' in m) {
      this.log(`inference worker: ${m.line}`);
      return;
    }
    const p = this.settle(m.id);
    if (p === undefined) return; // timed out: the late answer is dropped
    if (m.ok) {
      const { id: _id, ok: _ok, ...result } = m as SuccessResponse;
      p.resolve(result);
    } else {
      p.reject(new GimError(m.error.code, m.error.message));
    }
  }

  private onExit(worker: Worker, reason: string): void {
    this.workers.delete(worker);
    const error = new GimError('backend_unavailable', `the inference worker died (${reason})`);
    this.rejectPending((p) => p.worker === worker, error);
    if (this.closed || worker !== this.worker) return;
    this.worker = null;
    this.failures.push(Date.now());
    this.downReason =
      `the inference worker died (${reason}); restarting it and loading its ` +
      `${this.loaded.size} stacks again`;
    this.log(`inference worker died (${reason}); restarting it`);
    this.restart();
  }

  /**
   * Restarts the worker until one is up (or the client closes), with the backoff: no call may be
   * needed to bring it back, since a replica that is not ready gets no calls.
   */
  private restart(): void {
    this.readyWorker().then(
      () => {
        this.downReason = null;
        this.log(`inference worker restarted; ${this.loaded.size} stacks loaded again`);
      },
      (e: unknown) => {
        if (this.closed) return;
        this.downReason = `restarting the inference worker failed (${describe(e)}); trying again`;
        this.log(`inference worker: restart failed: ${describe(e)}; trying again`);
        this.restart();
      },
    );
  }

  /** The first restart is immediate; repeated failures within a minute wait 0.1, 0.2, ... 5 s. */
  private async backoff(): Promise<void> {
    const now = Date.now();
    this.failures = this.failures.filter((t) => now - t < RESTART_WINDOW_MS);
    const n = this.failures.length;
    if (n <= 1) return;
    const ms = Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** (n - 2));
    this.log(`inference worker: ${n} failures in the last minute; restarting in ${ms} ms`);
    await new Promise<void>((wake) => {
      this.restartWait = { timer: setTimeout(wake, ms), wake };
    });
    this.restartWait = null;
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (p === undefined) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  private rejectPending(which: (p: Pending) => boolean, error: GimError): void {
    for (const [id, p] of this.pending) {
      if (which(p)) {
        this.settle(id);
        p.reject(error);
      }
    }
  }
}

/** Wall-clock ms as every thread of the process reads it (deadlines cross threads). */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

function lateError(): GimError {
  return new GimError('timeout', 'the request was past its deadline before the worker got to it');
}

function closedError(): GimError {
  return new GimError('backend_unavailable', 'the inference client is closed');
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
