/**
 * The Kubernetes job runner: each attempt of a training job is a `batch/v1` Job
 * (`gim-train-<id>-<attempt>`, rendered by `renderTrainingJob`) running the same `gim` command as
 * the local runner, on the models volume. How it ended is read back from the Job's conditions
 * (job-outcome.ts); after an API restart the Job is found again by its labels.
 */
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import {
  ATTEMPT_LABEL,
  JOB_ID_LABEL,
  MODELS_MOUNT,
  type RunnerConfig,
  renderTrainingJob,
  trainingJobName,
} from '../../app/jobs/kubernetes-job.js';
import type { JobRecord } from '../job-record.js';
import {
  type JobPaths,
  type JobRunner,
  type RunHandle,
  type RunRequest,
  trainerArgs,
} from '../runner.js';
import { isFinished } from './job-outcome.js';
import { type KubeApi, KubeApiError } from './kube-api.js';
import { type HandleContext, TrainingJobHandle } from './training-job-handle.js';

export interface KubernetesRunnerOptions {
  api: KubeApi;
  /** `parseRunnerConfig` of the runner's YAML (k8s/base/training-runner.yaml). */
  config: RunnerConfig;
  /**
   * Only the holder of the Lease creates Jobs (a `LeaderLease`); without one, this runner
   * always may (a single replica).
   */
  leader?: { readonly isLeader: boolean };
  /** Job directories as the training pod sees them. Default `/models/.jobs`. */
  podJobsDir?: string;
  /** How long one watch lasts before the runner watches again from where it was. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** Wait after a failed list or watch (the API unreachable) before trying again. Default 2 s. */
  retryDelayMs?: number;
  /** Problems the runner works around (an API call to retry, a log it could not copy). */
  onWarning?: (message: string) => void;
}

/** A runner that may not create Jobs now: this replica does not hold the Lease. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
}

export class KubernetesRunner implements JobRunner {
  readonly kind = 'kubernetes' as const;
  readonly #options: KubernetesRunnerOptions;
  /** Handles still following their Job. */
  readonly #following = new Set<TrainingJobHandle>();

  constructor(options: KubernetesRunnerOptions) {
    this.#options = options;
  }

  /**
   * The Job of one attempt, as `start` creates it. Always `--resume`: Kubernetes itself may run
   * the attempt's pod again with the same arguments (a preempted pod, which the podFailurePolicy
   * ignores, or a retry within backoffLimit), and the new pod must continue from the checkpoint;
   * the CLI starts afresh when there is none.
   */
  manifest(request: RunRequest): IJob {
    const { job, attempt } = request;
    const jobDir = `${this.#options.podJobsDir ?? `${MODELS_MOUNT}/.jobs`}/${job.id}`;
    return renderTrainingJob(
      {
        jobId: job.id,
        attempt,
        model: job.model,
        kind: job.kind,
        args: trainerArgs({ ...request, resume: true }, jobDir),
        timeoutSeconds: job.timeoutSeconds,
      },
      this.#options.config,
    );
  }

  /**
   * Creates the attempt's Job. An AlreadyExists for the same job and attempt (a start retried
   * after a lost answer, or before the controller recorded it) is that Job, adopted.
   */
  async start(request: RunRequest): Promise<RunHandle> {
    if (this.#options.leader && !this.#options.leader.isLeader)
      throw new NotLeaderError(
        `job ${request.job.id}: this replica does not hold the jobs Lease and creates no Jobs`,
      );
    const manifest = this.manifest(request);
    const { api, config } = this.#options;
    const name = trainingJobName(request.job.id, request.attempt);
    try {
      await api.createJob(config.namespace, manifest);
    } catch (error) {
      if (!(error instanceof KubeApiError && error.reason === 'AlreadyExists')) throw error;
      const existing = await api.getJob(config.namespace, name);
      const labels = existing.metadata?.labels ?? {};
      if (
        labels[JOB_ID_LABEL] !== request.job.id ||
        labels[ATTEMPT_LABEL] !== String(request.attempt)
      )
        throw new KubeApiError(
          'conflict',
          409,
          'AlreadyExists',
          `Job ${name} exists but is not attempt ${request.attempt} of job ${request.job.id}`,
        );
    }
    return this.#follow(
      new TrainingJobHandle(this.#context(request.job.id, request.attempt, request.paths)),
    );
  }

  /**
   * Stops following every Job without touching them: this replica lost the Lease, and the new
   * leader adopts them. The handles' `done` never settles.
   */
  detachAll(): void {
    for (const handle of this.#following) handle.detach();
    this.#following.clear();
  }

  #follow(handle: TrainingJobHandle): TrainingJobHandle {
    this.#following.add(handle);
    void handle.done.then(() => this.#following.delete(handle));
    return handle;
  }

  /**
   * The Job of `job`'s latest attempt, found by its labels: following it if it runs, already
   * ended if it finished; null if there is none (never created, or removed by its TTL) or the
   * newest Job is of an older attempt than the record's latest.
   */
  async adopt(job: JobRecord, paths: JobPaths): Promise<RunHandle | null> {
    const { api, config } = this.#options;
    const { items } = await api.listJobs(config.namespace, `${JOB_ID_LABEL}=${job.id}`);
    const attemptOf = (j: IJob) => Number(j.metadata?.labels?.[ATTEMPT_LABEL] ?? 0);
    const newest = items.sort((a, b) => attemptOf(a) - attemptOf(b)).at(-1);
    if (!newest) return null;
    const attempt = attemptOf(newest);
    const recorded = job.attempts.at(-1)?.n;
    if (recorded !== undefined && attempt !== recorded) return null;
    // A Job that ended while no controller watched is decided from what it is now.
    return this.#follow(
      new TrainingJobHandle(
        this.#context(job.id, attempt, paths),
        isFinished(newest) ? newest : undefined,
      ),
    );
  }

  #context(jobId: string, attempt: number, paths: JobPaths): HandleContext {
    const warn = this.#options.onWarning ?? (() => undefined);
    return {
      api: this.#options.api,
      namespace: this.#options.config.namespace,
      name: trainingJobName(jobId, attempt),
      selector: `${JOB_ID_LABEL}=${jobId},${ATTEMPT_LABEL}=${attempt}`,
      logPath: paths.log,
      watchTimeoutSeconds: this.#options.watchTimeoutSeconds ?? 300,
      retryDelayMs: this.#options.retryDelayMs ?? 2000,
      warn,
    };
  }
}
