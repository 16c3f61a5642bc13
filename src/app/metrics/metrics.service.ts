import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { JobHooks } from '../../jobs/job-controller.js';
import { isTerminal, JOB_STATUSES, type JobStatus } from '../../jobs/job-record.js';
import type { BatcherHooks } from '../../gim/batching/batcher.js';

/** What the inference worker reports about its tfjs memory. */
export interface TfjsMemory {
  numTensors: number;
  numBytes: number;
}

const SECONDS_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/**
 * The service's Prometheus registry and every metric in it. Other modules report through the
 * methods below, so metric names and labels live in this one file. Batch metrics carry the
 * `model` and `version` of their batcher (bounded by the stacks on disk); request metrics carry the
 * route pattern, never the raw URL.
 */
/**
 * Sampling period of the event-loop histogram behind `nodejs_eventloop_lag_*` (prom-client's
 * default). Each sample is the time between two timer runs, so it includes this period: an idle
 * loop reads ~10 ms, and the delay itself is a sample minus it.
 */
export const EVENT_LOOP_RESOLUTION_MS = 10;

@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  private readonly requests = new Counter({
    name: 'gim_requests_total',
    help: 'HTTP requests by route pattern and status code (499: the client went away)',
    labelNames: ['route', 'code'] as const,
    registers: [this.registry],
  });
  private readonly requestDuration = new Histogram({
    name: 'gim_request_duration_seconds',
    help: 'HTTP request duration, from its first byte to the end of the response',
    labelNames: ['route'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly requestsInFlight = new Gauge({
    name: 'gim_requests_in_flight',
    help: 'HTTP requests received (headers read) and not yet answered, by route pattern',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  private readonly queueDuration = new Histogram({
    name: 'gim_queue_duration_seconds',
    help: 'Time an item waited in the batch queue before its batch started',
    labelNames: ['model', 'version'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly computeDuration = new Histogram({
    name: 'gim_compute_duration_seconds',
    help: 'Time of one batch in the inference worker, messaging included',
    labelNames: ['model', 'version'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly batchSize = new Histogram({
    name: 'gim_batch_size',
    help: 'Items per batch',
    labelNames: ['model', 'version'] as const,
    buckets: BATCH_SIZE_BUCKETS,
    registers: [this.registry],
  });
  private readonly items = new Counter({
    name: 'gim_items_total',
    help:
      'Items computed by the inference worker (one image or clip is one item), by outcome: ok ' +
      '(answered), failed, discarded (computed for a request already answered: wasted)',
    labelNames: ['model', 'version', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly batches = new Counter({
    name: 'gim_batches_total',
    help: 'Batches run by the inference worker',
    labelNames: ['model', 'version'] as const,
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'gim_queue_depth',
    help: 'Items waiting in the batch queue',
    labelNames: ['model', 'version'] as const,
    registers: [this.registry],
  });
  private readonly rejected = new Counter({
    name: 'gim_rejected_total',
    help:
      'Items refused or dropped before compute: overloaded (queue full, or the work ahead would ' +
      'make them late), timeout (deadline passed), too_late (could not finish before their ' +
      'deadline), cancelled (client gone)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly classifications = new Counter({
    name: 'gim_classifications_total',
    help: 'Items classified by a head (one image or clip is one item)',
    labelNames: ['model', 'head'] as const,
    registers: [this.registry],
  });
  private readonly labelMoves = new Counter({
    name: 'gim_label_moves_total',
    help:
      "Label changes asked of this replica's admin API (set, delete, rollback) by outcome: " +
      'moved, or the error_type that refused it (conflict: e.g. stranded heads)',
    labelNames: ['model', 'head', 'label', 'action', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly backendInfo = new Gauge({
    name: 'gim_backend_info',
    help: 'The tfjs backend of the inference worker (always 1)',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  private readonly jobStatuses = new Map<string, JobStatus>();
  private readonly trainingLoss = new Gauge({
    name: 'gim_training_loss',
    help: 'Latest InfoNCE loss of each module of the stack a running encoder job trains',
    labelNames: ['model', 'module'] as const,
    registers: [this.registry],
  });
  private readonly trainingRate = new Gauge({
    name: 'gim_training_units_per_second',
    help: 'Training throughput of the running job of a model, in patches (image) or frames (audio) per second',
    labelNames: ['model', 'unit'] as const,
    registers: [this.registry],
  });
  private readonly jobDuration = new Histogram({
    name: 'gim_training_job_duration_seconds',
    help: 'Training jobs from submit to their final status',
    labelNames: ['kind', 'status'] as const,
    buckets: [10, 30, 60, 300, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400],
    registers: [this.registry],
  });
  private tfjsMemory?: () => Promise<TfjsMemory>;
  /** One scrape asks the worker once for both tfjs gauges. */
  private tfjsSample?: Promise<TfjsMemory | undefined>;

  constructor() {
    collectDefaultMetrics({
      register: this.registry,
      eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS,
    });
    const sample = (): Promise<TfjsMemory | undefined> => {
      this.tfjsSample ??= (this.tfjsMemory?.() ?? Promise.resolve(undefined))
        .catch(() => undefined)
        .finally(() => setImmediate(() => (this.tfjsSample = undefined)));
      return this.tfjsSample;
    };
    new Gauge({
      name: 'gim_tfjs_tensors',
      help: 'Tensors alive in the inference worker (should not grow with traffic)',
      registers: [this.registry],
      async collect() {
        const memory = await sample();
        if (memory) this.set(memory.numTensors);
      },
    });
    new Gauge({
      name: 'gim_tfjs_bytes',
      help: 'Bytes held by tensors in the inference worker',
      registers: [this.registry],
      async collect() {
        const memory = await sample();
        if (memory) this.set(memory.numBytes);
      },
    });
    const jobStatuses = this.jobStatuses;
    new Gauge({
      name: 'gim_training_jobs',
      help: 'Training jobs by status, as this process last saw them',
      labelNames: ['status'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const status of JOB_STATUSES) this.set({ status }, 0);
        for (const status of jobStatuses.values()) this.inc({ status });
      },
    });
    // Zero rows for each reason, so a rate() over them works before the first rejection.
    for (const reason of ['overloaded', 'timeout', 'too_late', 'cancelled']) {
      this.rejected.inc({ reason }, 0);
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** A request reached a route (its headers are read); `observeRequest` ends it. */
  startRequest(route: string): void {
    this.requestsInFlight.inc({ route });
  }

  observeRequest(route: string, code: number, seconds: number): void {
    this.requestsInFlight.dec({ route });
    this.requests.inc({ route, code: String(code) });
    this.requestDuration.observe({ route }, seconds);
  }

  /** Items a head classified; heads are bounded by the heads on disk. */
  /** `head` is '' for a stack's labels. */
  countLabelMove(
    model: string,
    head: string,
    label: string,
    action: 'set' | 'delete' | 'rollback',
    outcome: string,
  ): void {
    this.labelMoves.inc({ model, head, label, action, outcome });
  }

  countClassifications(model: string, head: string, items: number): void {
    this.classifications.inc({ model, head }, items);
  }

  setBackend(name: string): void {
    this.backendInfo.reset();
    this.backendInfo.set({ backend: name }, 1);
  }

  /** Where the tfjs gauges read from on each scrape (the inference worker). */
  watchTfjsMemory(source: () => Promise<TfjsMemory>): void {
    this.tfjsMemory = source;
  }

  /** Hooks that report training jobs' statuses, losses, rates and durations. */
  jobHooks(): JobHooks {
    return {
      onStatus: (job) => {
        this.jobStatuses.set(job.id, job.status);
        if (isTerminal(job.status)) {
          const seconds = (Date.parse(job.updatedAt) - Date.parse(job.createdAt)) / 1000;
          if (Number.isFinite(seconds))
            this.jobDuration.observe({ kind: job.kind, status: job.status }, seconds);
        }
        if (job.status !== 'running' && job.status !== 'publishing')
          this.trainingRate.remove({ model: job.model, unit: job.progress?.unitName ?? 'patches' });
      },
      onProgress: (job, p) => {
        p.losses.forEach((loss, i) => {
          if (loss !== null)
            this.trainingLoss.set({ model: job.model, module: String(i + 1) }, loss);
        });
        this.trainingRate.set({ model: job.model, unit: p.unitName }, p.unitsPerSecond);
      },
    };
  }

  /** Hooks that report one batcher's batches, queue and rejections. */
  batcherHooks(model: string, version: number): BatcherHooks {
    const labels = { model, version: String(version) };
    this.queueDepth.set(labels, 0);
    return {
      onBatch: (stats) => {
        this.batches.inc(labels);
        this.batchSize.observe(labels, stats.size);
        this.items.inc({ ...labels, outcome: 'ok' }, stats.ok);
        if (stats.failed > 0) this.items.inc({ ...labels, outcome: 'failed' }, stats.failed);
        // Present from the first batch, so the wasted fraction is a plain ratio of two series.
        this.items.inc({ ...labels, outcome: 'discarded' }, stats.discarded);
        this.computeDuration.observe(labels, stats.computeMs / 1000);
        for (const ms of stats.queueMs) this.queueDuration.observe(labels, ms / 1000);
      },
      onReject: (reason) => this.rejected.inc({ reason }),
      onQueueDepth: (depth) => this.queueDepth.set(labels, depth),
    };
  }
}
