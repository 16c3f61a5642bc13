/**
 * A training job as it is recorded (`MODELS_DIR/.jobs/<id>/job.json`) and the one state machine
 * every runner's job goes through. Pure: no NestJS, no environment, no filesystem.
 *
 * ```
 * queued ─► starting ─► running ─► publishing ─► (evaluating) ─► succeeded
 *   │          │           │            │              │
 *   │          └───────────┴────────────┴──────────────┴─► failed(reason)      (terminal)
 *   │          └───────────┴────────────┴──────────────┴─► interrupted ─► queued (resume)
 *   │          └───────────┴──────────────────────────┴─► cancelling ─► cancelled (terminal)
 *   └──────────────────────────────────────────────────► cancelled
 * failed, cancelled, interrupted ─ retry ─► queued (same job, next attempt, --resume)
 * ```
 *
 * `evaluating`: a promotion (`gim promote`) runs: a `promote` job from its start, an encoder job
 * that asked for one after its version is published (a resumed attempt promotes that version;
 * it does not train again).
 */
import type { StepProgress } from '../gim/training/run-training.js';

export const JOB_STATUSES = [
  'queued',
  'starting',
  'running',
  'publishing',
  'evaluating',
  'succeeded',
  'cancelling',
  'cancelled',
  'failed',
  'interrupted',
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];
/** A runner owns the job in these states (a trainer process or a Kubernetes Job exists). */
export const ACTIVE_STATUSES: readonly JobStatus[] = [
  'starting',
  'running',
  'publishing',
  'evaluating',
  'cancelling',
];

/**
 * Why a job failed. `bad_input`: the CLI refused the spec or the data (exit 2; never retried
 * automatically). `deadline`: over `timeout_seconds`. `out_of_memory`: killed by the kernel (or
 * OOMKilled). `publish_conflict`: the version or label could not be written as asked.
 * `runner_error`: anything else (a crash, the runner could not start the trainer).
 */
export const FAILURE_REASONS = [
  'bad_input',
  'deadline',
  'out_of_memory',
  'publish_conflict',
  'runner_error',
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export const JOB_KINDS = ['encoder', 'head', 'probe', 'promote'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

const TRANSITIONS: Record<JobStatus, readonly JobStatus[]> = {
  queued: ['starting', 'cancelled'],
  starting: ['running', 'evaluating', 'failed', 'cancelling', 'interrupted', 'succeeded'],
  running: ['publishing', 'evaluating', 'succeeded', 'failed', 'cancelling', 'interrupted'],
  publishing: ['evaluating', 'succeeded', 'failed', 'interrupted'],
  evaluating: ['succeeded', 'failed', 'cancelling', 'interrupted'],
  // A trainer that finished before it saw the signal still succeeded.
  cancelling: ['cancelled', 'failed', 'succeeded', 'interrupted'],
  interrupted: ['queued', 'cancelled'],
  failed: ['queued'],
  cancelled: ['queued'],
  succeeded: [],
};

export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export function isTerminal(status: JobStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

export function isActive(status: JobStatus): boolean {
  return ACTIVE_STATUSES.includes(status);
}

/** One run of the trainer for a job (a retry or a resume after an interruption is a new one). */
export interface JobAttempt {
  n: number;
  /** Whether this attempt continued from the checkpoint (`--resume`). */
  resume: boolean;
  startedAt: string;
  endedAt?: string;
  /** Local runner: the trainer's pid; kubernetes: the Job's name. */
  runnerRef?: string;
  exitCode?: number | null;
  signal?: string | null;
  /** How this attempt ended (the job's status it led to), and why. */
  outcome?: JobStatus;
  message?: string;
  /** Byte offset of this attempt's first line in progress.ndjson. */
  progressOffset?: number;
  /** Byte offset up to which its lines were copied into events.ndjson (recorded with the job). */
  progressRead?: number;
}

/**
 * The latest training progress, as the trainer reported it: a training step (encoder), or an
 * epoch of a head or probe fit with its validation loss; `at` is the trainer's time of it.
 */
export type JobProgress = StepProgress & { validationLoss?: number; at: string };

export interface JobRecord {
  id: string;
  kind: JobKind;
  /** The stack trained (encoder), or the stack a head or probe is for. */
  model: string;
  /** The submitted spec, normalised (defaults filled in). */
  spec: Record<string, unknown>;
  /** The `gim` CLI arguments the spec stands for (without the runner's own flags). */
  args: string[];
  /**
   * An encoder job that promotes its version: the `gim promote` arguments without `--model`,
   * run once the version is published (`trainerArgs`).
   */
  promoteArgs?: string[];
  runner: 'local' | 'kubernetes';
  status: JobStatus;
  /** Set with status `failed`. */
  reason?: FailureReason;
  /** A human sentence about the latest transition. */
  message?: string;
  timeoutSeconds: number;
  /** Automatic resumes after an interruption (a runner lost, the API restarted). */
  maxResumes: number;
  resumes: number;
  attempts: JobAttempt[];
  progress?: JobProgress;
  /** What the job produced: a published version (encoder, head), a probe report, metrics. */
  result?: JobResult;
  /** A pending cancel: graceful (SIGTERM, checkpoint) or forced (kill). */
  cancel?: { force: boolean; requestedAt: string; by: string; reason?: string };
  idempotencyKey?: string;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  finishedAt?: string;
}

export interface JobResult {
  published?: { kind: 'stack' | 'head'; name: string; version: number; labels: string[] };
  /** The trainer's `result` event (final losses; head metrics; the probe table). */
  summary?: Record<string, unknown>;
  /** `gim promote`'s verdict: promoted or not, the gate, stranded and retrained heads. */
  promotion?: Record<string, unknown>;
}

/** Event types of a job's stream (events.ndjson, and the SSE `event:` field). */
export type JobEventType =
  'status' | 'progress' | 'epoch' | 'checkpoint' | 'log' | 'published' | 'result' | 'promotion';

/** One line of events.ndjson: `seq` is its line number (1-based), the SSE id. */
export interface JobEvent {
  seq: number;
  t: string;
  type: JobEventType;
  [field: string]: unknown;
}

/** Moves `job` to `to`, or throws when the state machine has no such edge (a bug, not input). */
export function transition(
  job: JobRecord,
  to: JobStatus,
  at: string,
  detail: { message?: string; reason?: FailureReason } = {},
): JobRecord {
  if (job.status !== to && !canTransition(job.status, to))
    throw new Error(`job ${job.id}: no transition from ${job.status} to ${to}`);
  const next: JobRecord = { ...job, status: to, updatedAt: at };
  if (detail.message !== undefined) next.message = detail.message;
  if (to === 'failed') next.reason = detail.reason ?? 'runner_error';
  else delete next.reason;
  if (isTerminal(to)) next.finishedAt = at;
  else delete next.finishedAt;
  if (to === 'starting' && next.startedAt === undefined) next.startedAt = at;
  return next;
}
