import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import type { BackendInfo, BackendName } from '../../gim/backend/index.js';
import { Batcher } from '../../gim/batching/batcher.js';
import { GimError, isGimError } from '../../gim/errors.js';
import type { StackManifest } from '../../gim/store/manifest.js';
import { type StackRef, StackStore } from '../../gim/store/stack-store.js';
import type { InferenceClient } from '../../inference/inference-client.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { type EmbedItem, type ItemGrids, embeddingBatchRun } from './embedding-batch.js';

/** Starts the inference worker; a seam so tests can watch or hold what the worker does. */
export type StartInferenceClient = (opts: {
  modelsDir: string;
  backend?: BackendName;
  log?: (line: string) => void;
}) => Promise<InferenceClient>;

/** Nest injection token of the `StartInferenceClient` (provided by `AppModule.forRoot`). */
export const START_INFERENCE_CLIENT = Symbol('START_INFERENCE_CLIENT');

/** A PRELOAD stack that is not served because its files on disk are damaged. */
export interface UnavailableStack {
  ref: string;
  /** The `model_unavailable` message: which file, relative to the models directory. */
  error: string;
}

export type InferenceState =
  | { phase: 'starting' }
  | {
      phase: 'warming';
      backend: BackendInfo;
      pending: string[];
      loaded: string[];
      unavailable: UnavailableStack[];
    }
  | { phase: 'ready'; backend: BackendInfo; loaded: string[]; unavailable: UnavailableStack[] }
  | { phase: 'failed'; reason: string };

/** A stack version loaded and warmed up in the worker, with its batch queue. */
export interface LoadedModel {
  name: string;
  version: number;
  manifest: StackManifest;
  /** Per layer (index layer - 1): the digest behind its embedding-space ids. */
  spaceDigests: string[];
  /**
   * An input's compute cost besides being one item, as its batcher estimates batch times:
   * seconds for an audio clip (a forward pass is per sample), 0 for an image (all alike).
   */
  itemCost: (input: Float32Array) => number;
  batcher: Batcher<EmbedItem, ItemGrids>;
}

/**
 * Owns the inference worker (which owns tfjs and the loaded stacks) and one Batcher per loaded
 * (model, version). The worker starts when the app does, without holding up the bootstrap: the
 * server answers liveness while the worker starts and the PRELOAD stacks warm up, and `state`
 * tells readiness when all of that is done.
 */
@Injectable()
export class InferenceService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(InferenceService.name);
  private current: InferenceState = { phase: 'starting' };
  private started?: Promise<InferenceClient>;
  /** The client once started (for readiness, which must answer without waiting). */
  private client_?: InferenceClient;
  private warmup?: Promise<void>;
  /** By `name@version`; a failed load is removed so the next request retries it. */
  private readonly models = new Map<string, Promise<LoadedModel>>();
  /** `name@version` of the models whose load has finished. */
  private readonly warm = new Set<string>();
  /** By ref text (`fashion`, `fashion@stable`): the version last served for it. */
  private readonly serving = new Map<string, StackRef>();
  private closing = false;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(START_INFERENCE_CLIENT) private readonly startClient: StartInferenceClient,
    private readonly store: StackStore,
    private readonly metrics: MetricsService,
  ) {}

  get state(): InferenceState {
    return this.current;
  }

  /**
   * Why the inference worker serves nothing right now, after it died (restarting, with its
   * stacks), or null while it is up; calls made meanwhile wait for the restart.
   */
  get workerDown(): string | null {
    return this.client_?.down ?? null;
  }

  onApplicationBootstrap(): void {
    if (this.started) return;
    const { modelsDir, backend } = this.config;
    this.logger.log(
      `starting the inference worker${backend ? ` (backend ${backend}, forced)` : ''}`,
    );
    this.started = this.startClient({
      modelsDir,
      backend,
      log: (line) => this.logger.log(line),
    });
    // Rejections are handled here; callers of `model()` see a backend_unavailable instead.
    this.started.catch(() => undefined);
    this.warmup = this.warmUp(this.started);
  }

  async onApplicationShutdown(): Promise<void> {
    this.closing = true;
    await this.warmup;
    const loaded = await Promise.allSettled(this.models.values());
    // Queued items are cancelled; running batches finish and their callers get their results.
    await Promise.all(
      loaded.flatMap((r) => (r.status === 'fulfilled' ? [r.value.batcher.close()] : [])),
    );
    const client = await this.started?.catch(() => undefined);
    await client?.close();
  }

  /** The loaded model of a resolved ref: loads and warms it up in the worker on first use. */
  model(ref: StackRef): Promise<LoadedModel> {
    const key = `${ref.name}@${ref.version}`;
    let loading = this.models.get(key);
    if (loading === undefined) {
      loading = this.load(ref);
      this.models.set(key, loading);
      loading.then(
        () => this.warm.add(key),
        () => {
          if (this.models.get(key) === loading) this.models.delete(key);
        },
      );
    }
    return loading;
  }

  /**
   * The loaded model a ref names (`name`, `name@label`, `name@3`). When a label has moved (here or
   * on another replica) to a version not loaded yet, the version the ref served before keeps
   * serving while the new one loads in the background; the ref switches once it is warm. So a
   * label move never makes a request wait on a cold load, nor fail because of one.
   */
  async modelFor(refText: string): Promise<LoadedModel> {
    const ref = await this.store.resolve(refText);
    const explicit = /@\d+$/.test(refText);
    const previous = this.serving.get(refText);
    if (
      !explicit &&
      previous !== undefined &&
      previous.version !== ref.version &&
      !this.warm.has(keyOf(ref)) &&
      this.warm.has(keyOf(previous))
    ) {
      this.model(ref).then(
        () => {
          if (this.serving.get(refText) === previous) this.serving.set(refText, ref);
        },
        (error: unknown) =>
          this.logger.warn(
            `${refText} moved to ${keyOf(ref)}, which does not load (${describe(error)}); ` +
              `still serving ${keyOf(previous)}`,
          ),
      );
      return this.model(previous);
    }
    const model = await this.model(ref);
    if (!explicit) this.serving.set(refText, ref);
    return model;
  }

  /** The model if it is loaded already, without loading it. */
  async loaded(ref: StackRef): Promise<LoadedModel | undefined> {
    const loading = this.models.get(`${ref.name}@${ref.version}`);
    return loading?.catch(() => undefined);
  }

  private async client(): Promise<InferenceClient> {
    if (this.started === undefined || this.closing) {
      throw new GimError('backend_unavailable', 'the inference worker is not running');
    }
    try {
      return await this.started;
    } catch (error) {
      throw new GimError(
        'backend_unavailable',
        `the inference worker failed to start: ${describe(error)}`,
        { cause: error },
      );
    }
  }

  private async load(ref: StackRef): Promise<LoadedModel> {
    const client = await this.client();
    const { name, version } = ref;
    const started = performance.now();
    let loaded: Awaited<ReturnType<InferenceClient['load']>>;
    try {
      loaded = await client.load(`${name}@${version}`);
    } catch (error) {
      // Loudly: this replica refuses a version (a PRELOAD one keeps it unready).
      if (isGimError(error) && error.code === 'golden_mismatch') this.logger.error(error.message);
      throw error;
    }
    const { manifest, spaceDigests, golden } = loaded;
    this.logger.log(
      `loaded ${name}@${version} (${manifest.modality}, ${manifest.modules.length} layers) in ` +
        `${Math.round(performance.now() - started)} ms`,
    );
    if (golden.status === 'unchecked') {
      this.logger.warn(`serving ${name}@${version} unchecked: ${golden.reason}`);
    }
    const { maxBatchSize, maxBatchDelayMs, maxQueue, requestTimeoutMs } = this.config;
    const { adapter } = manifest;
    const itemCost =
      adapter.kind === 'audio'
        ? (input: Float32Array) => input.length / adapter.sampleRate
        : () => 0;
    const batcher = new Batcher<EmbedItem, ItemGrids>(
      embeddingBatchRun((input, n, layers, deadline) =>
        client.embed(name, version, input, n, layers, { deadline }),
      ),
      {
        maxBatchSize,
        maxDelayMs: maxBatchDelayMs,
        maxQueue,
        timeoutMs: requestTimeoutMs,
        itemCost: (item) => itemCost(item.input),
      },
      this.metrics.batcherHooks(name, version),
    );
    if (this.closing) {
      await batcher.close();
      throw new GimError('backend_unavailable', 'the service is shutting down');
    }
    return { name, version, manifest, spaceDigests, itemCost, batcher };
  }

  /**
   * Worker up, then every PRELOAD stack loaded and warmed up, one at a time: then ready. A stack
   * whose files are damaged (`model_unavailable`) is logged and left out, and the others are
   * served: every replica reads the same models directory, so pulling this one from the load
   * balancer would not bring the stack back, only take the healthy ones away with it. Any other
   * failure (the worker, a golden mismatch: this replica's own trouble) keeps it unready.
   */
  private async warmUp(started: Promise<InferenceClient>): Promise<void> {
    let client: InferenceClient;
    try {
      client = await started;
    } catch (error) {
      this.fail(`the inference worker failed to start: ${describe(error)}`, error);
      return;
    }
    this.client_ = client;
    const backend = client.backend;
    this.metrics.setBackend(backend.name);
    this.metrics.watchTfjsMemory(() => client.stats());
    try {
      const refs = this.config.preload ?? (await this.store.list()).map((summary) => summary.name);
      const loaded: string[] = [];
      const unavailable: UnavailableStack[] = [];
      const pending = [...refs];
      const warming = (): InferenceState => ({
        phase: 'warming',
        backend,
        pending: [...pending],
        loaded: [...loaded],
        unavailable: [...unavailable],
      });
      this.current = warming();
      for (const ref of refs) {
        if (this.closing) return;
        try {
          const model = await this.model(await this.store.resolve(ref));
          loaded.push(`${model.name}@${model.version}`);
        } catch (error) {
          if (!isGimError(error) || error.code !== 'model_unavailable') throw error;
          this.logger.error(`not serving ${ref}: ${error.message}`);
          unavailable.push({ ref, error: error.message });
        }
        pending.shift();
        this.current = warming();
      }
      this.current = { phase: 'ready', backend, loaded, unavailable };
      this.logger.log(
        `ready: tfjs backend ${backend.name}, warmed up ${loaded.join(', ') || 'no stacks'}` +
          (unavailable.length > 0
            ? `; unavailable (damaged on disk): ${unavailable.map((u) => u.ref).join(', ')}`
            : ''),
      );
    } catch (error) {
      this.fail(`warm-up failed: ${describe(error)}`, error);
    }
  }

  private fail(reason: string, error: unknown): void {
    this.current = { phase: 'failed', reason };
    // A GimError's message says it all; anything else is a bug worth its stack.
    const stack = isGimError(error) || !(error instanceof Error) ? undefined : error.stack;
    this.logger.error(`the service stays unready: ${reason}`, stack);
  }
}

function keyOf(ref: StackRef): string {
  return `${ref.name}@${ref.version}`;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
