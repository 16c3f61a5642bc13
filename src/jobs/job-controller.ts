/**
 * The job controller: the one place that moves training jobs through their state machine
 * (job-record.ts). It queues jobs, starts them on a runner within the concurrency limits (one
 * active job per model, `maxRunning` in all), follows the trainer's progress stream, maps how the
 * trainer ended to a status, resumes interrupted jobs, and recovers every non-terminal job when it
 * starts. Every change is written to the job store before it is announced. No NestJS, no env.
 */
import { GimError } from '../gim/errors.js';
import {
  canTransition,
  isActive,
  isTerminal,
  transition,
  type FailureReason,
  type JobEvent,
  type JobProgress,
  type JobRecord,
  type JobStatus,
} from './job-record.js';
import type { JobPlan } from './job-spec.js';
import { JobStore, readNewLines } from './job-store.js';
import type { JobRunner, RunExit, RunHandle } from './runner.js';

export interface JobControllerOptions {
  store: JobStore;
  runner: JobRunner;
  /** Jobs running at once, over all models. */
  maxRunning: number;
  /** How often the trainer's progress file is read. */
  pollMs?: number;
  now?: () => Date;
  log?: (line: string) => void;
  hooks?: JobHooks;
  /**
   * With several API replicas (kubernetes runner), only the Lease holder starts and follows
   * trainers; the others record jobs and requests (submit, cancel, retry) for it to act on.
   */
  leader?: { readonly isLeader: boolean };
  /** How often the leader rescans the store for what other replicas recorded. */
  reconcileMs?: number;
}

/** Reports for metrics; a hook that throws is ignored. */
export interface JobHooks {
  onStatus?(job: JobRecord, from: JobStatus | null): void;
  onProgress?(job: JobRecord, progress: JobProgress): void;
}

export interface ListFilter {
  model?: string;
  status?: JobStatus;
}

interface Active {
  handle: RunHandle;
  offset: number;
  /** The trainer's `end` event of this attempt. */
  end?: { status?: string; error?: { code?: string; message?: string } };
  poller?: NodeJS.Timeout;
  reading: Promise<void>;
  /** Settles once the job's record shows how the trainer ended. */
  settled?: Promise<void>;
  /** A stop this controller has asked of the trainer. */
  stopRequested?: 'graceful' | 'force';
}

/** Trainer event types copied into the job's own stream. */
const FORWARDED = new Set([
  'start',
  'progress',
  'epoch',
  'checkpoint',
  'log',
  'published',
  'result',
  'promotion',
]);

export class JobController {
  private readonly store: JobStore;
  private readonly runner: JobRunner;
  private readonly pollMs: number;
  private readonly now: () => Date;
  private readonly log: (line: string) => void;
  /** Jobs whose trainer runs, by id. */
  private readonly active = new Map<string, Active>();
  /** Serialises changes to one job's record. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private draining = false;
  private reconciler?: NodeJS.Timeout;
  private pumping: Promise<void> = Promise.resolve();
  private readonly listeners = new Set<(job: JobRecord) => void>();

  constructor(private readonly options: JobControllerOptions) {
    this.store = options.store;
    this.runner = options.runner;
    this.pollMs = options.pollMs ?? 500;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? (() => undefined);
  }

  get runnerKind(): 'local' | 'kubernetes' {
    return this.runner.kind;
  }

  /** Whether this process runs trainers (always, unless a Lease decides). */
  get leading(): boolean {
    return this.options.leader?.isLeader ?? true;
  }

  /** Recovers every non-terminal job, then starts what the limits allow. */
  async start(): Promise<void> {
    if (this.options.reconcileMs !== undefined && this.reconciler === undefined) {
      this.reconciler = setInterval(() => void this.reconcile(), this.options.reconcileMs);
      this.reconciler.unref();
    }
    const jobs = await this.store.list((id, e) =>
      this.log(`job ${id}: unreadable record skipped: ${String(e)}`),
    );
    for (const job of jobs) {
      if (isTerminal(job.status) || job.status === 'queued') continue;
      await this.recover(job);
    }
    this.pump();
  }

  /** Called with a job's record after every change (SSE streams wait on it). */
  subscribe(listener: (job: JobRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async submit(
    plan: JobPlan,
    opts: { idempotencyKey?: string; by: string },
  ): Promise<{ job: JobRecord; created: boolean }> {
    if (this.draining)
      throw new GimError('shutting_down', 'the service is shutting down: submit the job again');
    const at = this.now();
    const iso = at.toISOString();
    const job: JobRecord = {
      id: JobStore.newId(at),
      kind: plan.kind,
      model: plan.model,
      spec: plan.spec,
      args: plan.args,
      ...(plan.promoteArgs ? { promoteArgs: plan.promoteArgs } : {}),
      runner: this.runner.kind,
      status: 'queued',
      message: 'waiting for a free runner slot',
      timeoutSeconds: plan.timeoutSeconds,
      maxResumes: plan.maxResumes,
      resumes: 0,
      attempts: [],
      createdBy: opts.by,
      createdAt: iso,
      updatedAt: iso,
      ...(opts.idempotencyKey !== undefined ? { idempotencyKey: opts.idempotencyKey } : {}),
    };
    const { id, created } = await this.store.create(job);
    if (!created) {
      const earlier = await this.get(id);
      if (
        earlier.kind !== plan.kind ||
        earlier.model !== plan.model ||
        JSON.stringify([earlier.args, earlier.promoteArgs]) !==
          JSON.stringify([plan.args, plan.promoteArgs])
      )
        throw new GimError(
          'conflict',
          `the Idempotency-Key was used for job ${id} with another spec: use a new key`,
        );
      return { job: earlier, created: false };
    }
    await this.store.appendEvent(id, 'status', iso, { status: 'queued', message: job.message });
    this.emit(job, null);
    this.pump();
    return { job, created: true };
  }

  async get(id: string): Promise<JobRecord> {
    const job = await this.store.read(id);
    if (!job) throw new GimError('not_found', `no job ${JSON.stringify(id.slice(0, 64))}`);
    return job;
  }

  async list(filter: ListFilter = {}): Promise<JobRecord[]> {
    const jobs = await this.store.list();
    return jobs.filter(
      (j) =>
        (filter.model === undefined || j.model === filter.model) &&
        (filter.status === undefined || j.status === filter.status),
    );
  }

  /**
   * Graceful: the trainer checkpoints and stops (status cancelling, then cancelled); force: it is
   * killed. A queued or interrupted job is cancelled at once. Cancelling a finished job is a 409.
   */
  async cancel(
    id: string,
    opts: { force: boolean; by: string; reason?: string },
  ): Promise<JobRecord> {
    return this.withJob(id, async (job) => {
      if (isTerminal(job.status))
        throw new GimError('conflict', `job ${id} is ${job.status} already`);
      const cancel = {
        force: opts.force,
        requestedAt: this.now().toISOString(),
        by: opts.by,
        ...(opts.reason ? { reason: opts.reason } : {}),
      };
      const running = this.active.get(id);
      if (!running && isActive(job.status) && !this.leading) {
        // The leader's trainer, and the leader's record (one writer per job.json): the request
        // goes beside it, and the leader applies it at its next reconcile.
        await this.store.requestCancel(id, cancel);
        return { ...job, cancel };
      }
      if (!running) {
        return this.move({ ...job, cancel }, 'cancelled', {
          message: `cancelled by ${opts.by}${opts.reason ? `: ${opts.reason}` : ''}`,
        });
      }
      const next =
        job.status === 'cancelling'
          ? { ...job, cancel }
          : await this.move({ ...job, cancel }, 'cancelling', {
              message: opts.force
                ? 'killing the trainer'
                : 'the trainer is checkpointing and stopping',
            });
      if (job.status === 'cancelling') await this.store.write(next);
      await running.handle.stop(opts.force ? 'force' : 'graceful');
      running.stopRequested = opts.force ? 'force' : 'graceful';
      return next;
    });
  }

  /** The same job again, as a new attempt that resumes from its checkpoint. */
  async retry(id: string, by: string): Promise<JobRecord> {
    const job = await this.withJob(id, async (job) => {
      if (!canTransition(job.status, 'queued') || job.status === 'queued')
        throw new GimError(
          'conflict',
          `job ${id} is ${job.status}: only a failed, cancelled or interrupted job can be retried`,
        );
      if (job.reason === 'bad_input')
        throw new GimError(
          'conflict',
          `job ${id} failed on bad input: fix the spec and submit a new job`,
        );
      const { cancel: _cancel, ...rest } = job;
      return this.move(rest, 'queued', {
        message: `retried by ${by}: resumes from its checkpoint`,
      });
    });
    this.pump();
    return job;
  }

  /** Deletes a finished job's record, events, log and checkpoints (never a published version). */
  async remove(id: string): Promise<void> {
    await this.withJob(id, async (job) => {
      if (!isTerminal(job.status))
        throw new GimError(
          'conflict',
          `job ${id} is ${job.status}: cancel it first, or wait until it ends`,
        );
      await this.store.remove(job);
      return job;
    });
  }

  /**
   * Shutdown: no new starts; each running trainer is stopped at a checkpoint and its job marked
   * interrupted, to be resumed by the next process. Resolves when they have stopped.
   */
  async drain(): Promise<void> {
    this.draining = true;
    clearInterval(this.reconciler);
    const running = [...this.active.values()];
    await Promise.all(running.map((a) => a.handle.stop('graceful')));
    await Promise.all(running.map((a) => a.settled));
  }

  /**
   * Resolves once `id` is terminal (or `timeoutMs` passed); returns the latest record. Changes by
   * this controller wake it at once; the store is read every `pollMs` as well, for changes made
   * by another replica's controller.
   */
  async waitFor(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord> {
    const job = await this.get(id);
    if (isTerminal(job.status) || timeoutMs <= 0) return job;
    return new Promise<JobRecord>((resolve) => {
      let latest = job;
      const finish = (): void => {
        off();
        clearTimeout(timer);
        clearInterval(poll);
        signal?.removeEventListener('abort', finish);
        resolve(latest);
      };
      const seen = (j: JobRecord | null): void => {
        if (j === null || j.id !== id) return;
        latest = j;
        if (isTerminal(j.status)) finish();
      };
      const off = this.subscribe(seen);
      const timer = setTimeout(finish, timeoutMs);
      const poll = setInterval(
        () => void this.store.read(id).then(seen, () => undefined),
        Math.max(this.pollMs, 250),
      );
      signal?.addEventListener('abort', finish, { once: true });
    });
  }

  // --- internals -------------------------------------------------------------------------------

  /**
   * The leader's periodic pass: starts jobs other replicas queued, and stops trainers whose jobs
   * another replica asked to cancel.
   */
  private async reconcile(): Promise<void> {
    if (this.draining || !this.leading) return;
    for (const id of [...this.active.keys()]) {
      const request = await this.store.takeCancelRequest(id).catch(() => undefined);
      if (request === undefined) continue;
      await this.cancel(id, {
        force: request.force,
        by: request.by,
        ...(request.reason !== undefined ? { reason: request.reason } : {}),
      }).catch((e: unknown) => this.log(`job ${id}: a recorded cancel failed: ${errorMessage(e)}`));
    }
    this.pump();
  }

  private pump(): void {
    this.pumping = this.pumping
      .then(() => this.startQueued())
      .catch((e: unknown) => this.log(`job controller: ${String(e)}`));
  }

  private async startQueued(): Promise<void> {
    if (this.draining || !this.leading) return;
    const jobs = await this.store.list();
    const busyModels = new Set(jobs.filter((j) => isActive(j.status)).map((j) => j.model));
    let running = this.active.size;
    for (const job of jobs) {
      if (running >= this.options.maxRunning) break;
      if (job.status !== 'queued' || busyModels.has(job.model)) continue;
      busyModels.add(job.model);
      running++;
      await this.launch(job);
    }
  }

  /**
   * Starts the next attempt of a queued job, or (`chained`) the promotion of an encoder job whose
   * version was just published: the job stays `evaluating` and keeps its runner slot.
   */
  private async launch(queued: JobRecord, chained = false): Promise<void> {
    const paths = this.store.paths(queued.id);
    let job = queued;
    const attempt = job.attempts.length + 1;
    const resume = job.attempts.length > 0;
    const offset = await JobStore.sizeOf(paths.progress);
    const from: JobStatus = chained ? 'evaluating' : 'queued';
    const to: JobStatus = chained ? 'evaluating' : 'starting';
    job = await this.withJob(job.id, async (current) => {
      if (current.status !== from) return current;
      const started = {
        ...current,
        attempts: [
          ...current.attempts,
          { n: attempt, resume, startedAt: this.now().toISOString(), progressOffset: offset },
        ],
      };
      if (chained) {
        await this.store.write(started);
        return started;
      }
      return this.move(started, 'starting', {
        message: `attempt ${attempt}${resume ? ', resuming from the checkpoint' : ''}`,
      });
    });
    if (job.status !== to || job.attempts.length !== attempt) return;
    let handle: RunHandle;
    try {
      handle = await this.runner.start({ job, attempt, resume, paths });
    } catch (e) {
      await this.finish(job.id, {
        outcome: 'failed',
        reason: 'runner_error',
        message: `the runner could not start the trainer: ${errorMessage(e)}`,
      });
      return;
    }
    await this.withJob(job.id, async (j) => {
      const attempts = j.attempts.map((a) =>
        a.n === attempt ? { ...a, runnerRef: handle.ref } : a,
      );
      const next = { ...j, attempts };
      await this.store.write(next);
      return next;
    });
    this.follow(job.id, handle, offset);
  }

  /** Reads the trainer's progress until it ends, then settles the job. */
  private follow(id: string, handle: RunHandle, offset: number): void {
    const active: Active = { handle, offset, reading: Promise.resolve() };
    this.active.set(id, active);
    let stopped = false;
    const tick = async (): Promise<void> => {
      await this.readProgress(id, active);
      if (!stopped) active.poller = setTimeout(() => void (active.reading = tick()), this.pollMs);
    };
    active.reading = tick();
    active.settled = handle.done
      .then(async (exit) => {
        stopped = true;
        clearTimeout(active.poller);
        await active.reading;
        await this.readProgress(id, active);
        this.active.delete(id);
        await this.finish(id, exit, active);
        this.pump();
      })
      .catch((e: unknown) =>
        this.log(`job ${id}: recording how its trainer ended failed: ${errorMessage(e)}`),
      );
  }

  private async readProgress(id: string, active: Active): Promise<void> {
    let read: { lines: string[]; offset: number };
    try {
      read = await readNewLines(this.store.paths(id).progress, active.offset);
    } catch (e) {
      this.log(`job ${id}: reading its progress failed: ${errorMessage(e)}`);
      return;
    }
    for (const line of read.lines) {
      // Offsets count bytes: the next line starts after this one and its newline.
      active.offset += Buffer.byteLength(line) + 1;
      let event: Record<string, unknown>;
      try {
        event = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // not an event (the stream is the trainer's; be lenient)
      }
      await this.onTrainerEvent(id, event, active);
    }
    active.offset = read.offset;
  }

  private async onTrainerEvent(
    id: string,
    event: Record<string, unknown>,
    active: Active,
  ): Promise<void> {
    const type = String(event.type);
    const t = typeof event.t === 'string' ? event.t : this.now().toISOString();
    const { v: _v, t: _t, type: _type, ...fields } = event;
    if (type === 'end') {
      active.end = fields as Active['end'];
      return;
    }
    if (FORWARDED.has(type)) await this.store.appendEvent(id, type as JobEvent['type'], t, fields);
    if (
      type === 'start' ||
      type === 'progress' ||
      type === 'published' ||
      type === 'result' ||
      type === 'promotion'
    ) {
      await this.withJob(id, async (job) => {
        let next = withProgressRead(job, active.offset);
        if (job.status === 'starting')
          next =
            fields.command === 'promote'
              ? await this.move(next, 'evaluating', { message: 'evaluating the promotion' })
              : await this.move(next, 'running', { message: 'training' });
        if (type === 'progress') {
          const progress = progressOf(fields, t);
          next = { ...next, progress };
          this.hook(() => this.options.hooks?.onProgress?.(next, progress));
          // The last step is done: what follows is publishing the version.
          if (
            job.kind === 'encoder' &&
            progress.globalStep >= progress.totalSteps &&
            next.status === 'running'
          )
            next = await this.move(next, 'publishing', { message: 'publishing the new version' });
          else await this.store.write(next);
        } else if (type === 'published') {
          const p = fields as { kind?: string; name?: string; version?: number; labels?: string[] };
          next = {
            ...next,
            result: {
              ...next.result,
              published: {
                kind: p.kind === 'head' ? 'head' : 'stack',
                name: String(p.name),
                version: Number(p.version),
                labels: p.labels ?? [],
              },
            },
          };
          await this.store.write(next);
        } else if (type === 'result') {
          next = { ...next, result: { ...next.result, summary: fields } };
          await this.store.write(next);
        } else if (type === 'promotion') {
          next = { ...next, result: { ...next.result, promotion: fields } };
          await this.store.write(next);
        }
        return next;
      });
    }
  }

  /** Maps how the trainer ended to the job's next status. */
  private async finish(id: string, exit: RunExit, active?: Active): Promise<void> {
    const job = await this.withJob(id, async (job) => {
      const attempt = job.attempts.at(-1);
      const endedAt = this.now().toISOString();
      let to: JobStatus;
      let reason: FailureReason | undefined;
      let message = exit.message;
      if (exit.outcome === 'succeeded') {
        to = 'succeeded';
        const published = job.result?.published;
        if (promotionPending(job) && published) {
          // The API is going away: the promotion runs when a controller takes the job again.
          to = this.draining ? 'interrupted' : 'evaluating';
          message = `published ${published.name}@${published.version}; promoting it`;
        } else if (job.result?.promotion) message = promotionMessage(job.result.promotion);
      } else if (exit.outcome === 'cancelled') to = job.cancel ? 'cancelled' : 'interrupted';
      else if (exit.outcome === 'lost') to = 'interrupted';
      else {
        to = 'failed';
        reason = exit.reason ?? 'runner_error';
        const error = active?.end?.error;
        if (error?.code === 'conflict' || error?.code === 'precondition_failed')
          reason = 'publish_conflict';
        if (error?.message) message = `${message}: ${error.message}`;
      }
      if (this.draining && to === 'cancelled' && !job.cancel) to = 'interrupted';
      if (to === 'interrupted' && this.draining) message = `${message} (the API shut down)`;
      const attempts = job.attempts.map((a) =>
        a === attempt
          ? {
              ...a,
              endedAt,
              exitCode: exit.exitCode ?? null,
              signal: exit.signal ?? null,
              outcome: to,
              message,
            }
          : a,
      );
      let next = await this.move({ ...job, attempts }, to, {
        message,
        ...(reason ? { reason } : {}),
      });
      if (to === 'interrupted' && !this.draining && next.resumes < next.maxResumes) {
        next = await this.move({ ...next, resumes: next.resumes + 1 }, 'queued', {
          message: `interrupted (${message}); resuming from the checkpoint (${next.resumes + 1} of ${next.maxResumes})`,
        });
      }
      return next;
    });
    if (job.status === 'evaluating') await this.launch(job, true);
    if (job.status === 'queued') this.pump();
  }

  /** After a restart: a job that was active has lost its runner unless the runner adopts it. */
  private async recover(job: JobRecord): Promise<void> {
    const paths = this.store.paths(job.id);
    if (job.status === 'interrupted') {
      if (job.resumes < job.maxResumes)
        await this.withJob(job.id, (j) =>
          this.move({ ...j, resumes: j.resumes + 1 }, 'queued', {
            message: 'resuming after a restart of the API',
          }),
        );
      return;
    }
    let handle: RunHandle | null = null;
    try {
      handle = await this.runner.adopt(job, paths);
    } catch (e) {
      this.log(`job ${job.id}: adopting its trainer failed: ${errorMessage(e)}`);
    }
    const offset = job.attempts.at(-1)?.progressRead ?? job.attempts.at(-1)?.progressOffset ?? 0;
    if (handle) {
      // Trainer lines up to progressRead were copied into the job's events before the restart.
      this.log(`job ${job.id}: following its trainer (${handle.ref}) again`);
      this.follow(job.id, handle, offset);
      return;
    }
    // The trainer is gone: what it wrote meanwhile (it may have finished, even published) says
    // how it ended.
    const active: Active = { handle: gone, offset, reading: Promise.resolve() };
    await this.readProgress(job.id, active);
    await this.finish(
      job.id,
      endedBy(active.end) ?? {
        outcome: job.status === 'cancelling' ? 'cancelled' : 'lost',
        message: `the API restarted while the job was ${job.status} and its trainer is gone`,
      },
      active,
    );
  }

  private async move(
    job: JobRecord,
    to: JobStatus,
    detail: { message?: string; reason?: FailureReason },
  ): Promise<JobRecord> {
    const from = job.status;
    const at = this.now().toISOString();
    const next = transition(job, to, at, detail);
    await this.store.write(next);
    await this.store.appendEvent(job.id, 'status', at, {
      status: to,
      from,
      ...(next.message !== undefined ? { message: next.message } : {}),
      ...(next.reason !== undefined ? { reason: next.reason } : {}),
    });
    this.emit(next, from);
    return next;
  }

  private emit(job: JobRecord, from: JobStatus | null): void {
    this.hook(() => this.options.hooks?.onStatus?.(job, from));
    for (const listener of this.listeners) this.hook(() => listener(job));
  }

  private hook(f: () => void): void {
    try {
      f();
    } catch {
      // Metrics and listeners never break the controller.
    }
  }

  /** Runs `f` on the job's current record, one change at a time per job. */
  private async withJob(id: string, f: (job: JobRecord) => Promise<JobRecord>): Promise<JobRecord> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const run = previous.then(async () => f(await this.get(id)));
    this.locks.set(
      id,
      run.catch(() => undefined),
    );
    return run;
  }
}

/** The progress fields the job record keeps from a trainer's `progress` event. */
function progressOf(fields: Record<string, unknown>, at: string): JobProgress {
  const num = (key: string): number =>
    typeof fields[key] === 'number' ? (fields[key] as number) : 0;
  const losses = Array.isArray(fields.losses)
    ? fields.losses.map((l) => (typeof l === 'number' ? l : null))
    : [];
  return {
    phase: num('phase'),
    phases: num('phases'),
    module: typeof fields.module === 'number' ? fields.module : null,
    epoch: num('epoch'),
    epochs: num('epochs'),
    step: num('step'),
    stepsPerEpoch: num('stepsPerEpoch'),
    globalStep: num('globalStep'),
    totalSteps: num('totalSteps'),
    losses,
    unitsPerSecond: num('unitsPerSecond'),
    unitName: typeof fields.unitName === 'string' ? fields.unitName : 'items',
    itemsPerSecond: num('itemsPerSecond'),
    etaSeconds: num('etaSeconds'),
    ...(typeof fields.validationLoss === 'number' ? { validationLoss: fields.validationLoss } : {}),
    at,
  };
}

/** A handle for a trainer that is gone (recovery reads what it left). */
const gone: RunHandle = {
  ref: '',
  done: Promise.resolve({ outcome: 'lost', message: 'gone' }),
  stop: async () => undefined,
};

/** How a trainer ended by its own last event, when it wrote one. */
function endedBy(end: Active['end']): RunExit | undefined {
  if (end === undefined) return undefined;
  const message = `the trainer ended ${String(end.status)} while the API was down`;
  if (end.status === 'succeeded') return { outcome: 'succeeded', message };
  if (end.status === 'cancelled') return { outcome: 'cancelled', message };
  const code = end.error?.code;
  return {
    outcome: 'failed',
    reason:
      code === 'invalid_argument' ||
      code === 'not_found' ||
      code === 'invalid_data' ||
      code === 'unsupported_media'
        ? 'bad_input'
        : 'runner_error',
    message,
  };
}

/** Records how far the latest attempt's progress stream has been copied into the job's events. */
function withProgressRead(job: JobRecord, offset: number): JobRecord {
  const last = job.attempts.at(-1);
  if (!last) return job;
  return { ...job, attempts: [...job.attempts.slice(0, -1), { ...last, progressRead: offset }] };
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** An encoder job that asked for a promotion and has published its version but not promoted it. */
function promotionPending(job: JobRecord): boolean {
  return (
    job.kind === 'encoder' &&
    job.promoteArgs !== undefined &&
    job.status !== 'evaluating' &&
    job.result?.promotion === undefined
  );
}

/** The job's closing message from `gim promote`'s verdict. */
function promotionMessage(p: Record<string, unknown>): string {
  const target = `${String(p.model)}@${String(p.label)} -> ${String(p.version)}`;
  if (p.dryRun === true)
    return `dry run: ${target} would ${p.wouldPromote === true ? '' : 'not '}be promoted`;
  if (p.promoted === true) return `promoted: ${target}`;
  const gate = p.gate as { passed?: boolean } | undefined;
  return gate?.passed === false
    ? `not promoted: the gate refused ${target}`
    : `not promoted: ${target}`;
}
