/**
 * Where a training job's trainer runs. One interface, one class per runner (a local child process,
 * a Kubernetes Job); the job controller holds the state machine and knows no runner's details.
 *
 * The trainer is always the `gim` CLI with `--progress-json <job dir>/progress.ndjson` and
 * `--checkpoint-dir <job dir>/checkpoint` on the models volume: the controller follows a job's
 * progress by reading that file, whichever runner started it (a Kubernetes pod writes it on the
 * shared volume), so runners report only how the trainer ended.
 */
import type { FailureReason, JobRecord } from './job-record.js';

/** Files of one job, as the API process sees them. */
export interface JobPaths {
  dir: string;
  record: string;
  events: string;
  /** The trainer's NDJSON stream (`gim ... --progress-json`). */
  progress: string;
  /** The trainer's stdout and stderr. */
  log: string;
  checkpoint: string;
}

export interface RunRequest {
  job: JobRecord;
  /** 1-based attempt number (a new one for each resume or retry). */
  attempt: number;
  /** Continue from the checkpoint (`--resume`). */
  resume: boolean;
  paths: JobPaths;
}

/**
 * How a trainer ended, as the runner saw it. `succeeded` exited 0; `cancelled`: it stopped on a
 * signal after writing a checkpoint (CLI exit 3); `lost`: it did not end by itself (the node was
 * drained, the pod preempted, the process killed from outside): the job is `interrupted` and
 * resumes; `failed` with a reason.
 */
export interface RunExit {
  outcome: 'succeeded' | 'failed' | 'cancelled' | 'lost';
  reason?: FailureReason;
  exitCode?: number | null;
  signal?: string | null;
  message: string;
}

export interface RunHandle {
  /** The trainer's pid (local) or Job name (kubernetes), recorded in the attempt. */
  readonly ref: string;
  /** Settles once the trainer has ended; never rejects. */
  readonly done: Promise<RunExit>;
  /**
   * Graceful: the trainer gets SIGTERM, finishes its step, checkpoints and exits (escalated to a
   * kill after the runner's grace period); force: killed at once.
   */
  stop(mode: 'graceful' | 'force'): Promise<void>;
}

export interface JobRunner {
  readonly kind: 'local' | 'kubernetes';
  start(request: RunRequest): Promise<RunHandle>;
  /**
   * After an API restart: the trainer of `job`'s latest attempt if it still runs (local: its pid,
   * checked to be this job's trainer; kubernetes: the Job found by its `gim.dev/job-id` label),
   * else null.
   */
  adopt(job: JobRecord, paths: JobPaths): Promise<RunHandle | null>;
}

/** The CLI's exit statuses (src/cli/main.ts). */
export const EXIT_OK = 0;
export const EXIT_BAD_INPUT = 2;
export const EXIT_CANCELLED = 3;

/**
 * The `gim` arguments of one attempt: the job's own, then where to report and checkpoint, with
 * the job directory as the trainer sees it (`/models/.jobs/<id>` in a Kubernetes pod).
 */
export function trainerArgs(request: RunRequest, jobDir: string): string[] {
  const { job, resume } = request;
  const progress = `--progress-json=${jobDir}/progress.ndjson`;
  const by = `--by=${job.createdBy} (job ${job.id})`;
  // An encoder job whose version is published promotes it (it never trains again).
  const published = job.result?.published;
  if (job.kind === 'encoder' && job.promoteArgs !== undefined && published?.kind === 'stack')
    return [
      'promote',
      `--model=${job.model}@${published.version}`,
      ...job.promoteArgs,
      by,
      progress,
    ];
  if (job.kind === 'promote') return [...job.args, by, progress];
  const args = [...job.args, progress];
  if (job.kind === 'encoder') {
    args.push(`--checkpoint-dir=${jobDir}/checkpoint`);
    if (resume) args.push('--resume');
  }
  return args;
}
