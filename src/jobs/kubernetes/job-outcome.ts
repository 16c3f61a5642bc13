/**
 * How a training Job ended, read from its status conditions and its pods. Pure: the runner
 * fetches, this decides.
 *
 * A Job is finished only when a `Complete` or `Failed` condition is `True` (batch/v1; newer
 * clusters first set `SuccessCriteriaMet` / `FailureTarget` while pods still terminate, and those
 * are not the end). A pod evicted or preempted (`DisruptionTarget`) is not a failure:
 * the podFailurePolicy ignores it and the Job makes a new pod, so it shows here only if the Job
 * then fails for another reason.
 */
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { IContainerStateTerminated } from 'kubernetes-models/v1/ContainerStateTerminated';
import type { IPod } from 'kubernetes-models/v1/Pod';
import { TRAIN_CONTAINER } from '../../app/jobs/kubernetes-job.js';
import { EXIT_BAD_INPUT, EXIT_CANCELLED, type RunExit } from '../runner.js';

/** The exit status of a process killed by SIGKILL, which is how the kernel's OOM killer ends it. */
const EXIT_SIGKILL = 137;

export function isFinished(job: IJob): boolean {
  return condition(job, 'Complete') !== undefined || condition(job, 'Failed') !== undefined;
}

function condition(job: IJob, type: 'Complete' | 'Failed') {
  return job.status?.conditions?.find((c) => c.type === type && c.status === 'True');
}

/** The train container's end in the newest pod that ran it, if any pod has ended. */
export function lastTermination(
  pods: readonly IPod[],
): { pod: string; terminated: IContainerStateTerminated } | undefined {
  const ended = pods
    .map((pod) => {
      const status = pod.status?.containerStatuses?.find((c) => c.name === TRAIN_CONTAINER);
      const terminated = status?.state?.terminated ?? status?.lastState?.terminated;
      return { pod, terminated };
    })
    .filter((p) => p.terminated !== undefined)
    .sort((a, b) => created(a.pod) - created(b.pod));
  const last = ended.at(-1);
  return last?.terminated && { pod: last.pod.metadata?.name ?? '?', terminated: last.terminated };
}

const created = (pod: IPod) => Date.parse(pod.metadata?.creationTimestamp ?? '') || 0;

/**
 * The outcome of a finished Job, or undefined while it runs. `stopping`: we asked it to stop, so
 * a trainer that checkpointed on SIGTERM (exit 3) was cancelled; without a cancel the signal came
 * from outside (a deleted pod), and the job resumes (`lost`).
 */
export function jobOutcome(
  job: IJob,
  pods: readonly IPod[],
  stopping: boolean,
): RunExit | undefined {
  const name = job.metadata?.name ?? '?';
  if (condition(job, 'Complete'))
    return { outcome: 'succeeded', exitCode: 0, message: `Job ${name} completed` };
  const failed = condition(job, 'Failed');
  if (!failed) return undefined;
  const last = lastTermination(pods);
  const exitCode = last?.terminated.exitCode ?? null;
  const said = failed.message ? `: ${failed.message}` : '';
  switch (failed.reason) {
    case 'PodFailurePolicy':
      // The policy's only FailJob rule is the CLI's bad-input exit.
      return {
        outcome: 'failed',
        reason: 'bad_input',
        exitCode: exitCode ?? EXIT_BAD_INPUT,
        message: `Job ${name} failed: the trainer refused its input (exit ${EXIT_BAD_INPUT})${said}`,
      };
    case 'DeadlineExceeded':
      return {
        outcome: 'failed',
        reason: 'deadline',
        exitCode,
        message: `Job ${name} ran past its activeDeadlineSeconds${said}`,
      };
  }
  // BackoffLimitExceeded, or a reason of a newer Kubernetes: what the last pod says.
  const why = `Job ${name} failed (${failed.reason ?? 'no reason'})`;
  if (!last)
    return { outcome: 'failed', reason: 'runner_error', exitCode, message: `${why}${said}` };
  const { pod, terminated } = last;
  const ended = `pod ${pod}: exit code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}`;
  if (terminated.reason === 'OOMKilled' || terminated.exitCode === EXIT_SIGKILL)
    return { outcome: 'failed', reason: 'out_of_memory', exitCode, message: `${why}, ${ended}` };
  if (terminated.exitCode === EXIT_CANCELLED)
    return stopping
      ? { outcome: 'cancelled', exitCode, message: `${why}, ${ended}: cancelled` }
      : {
          outcome: 'lost',
          exitCode,
          message: `${why}, ${ended}: the trainer was stopped from outside after a checkpoint`,
        };
  return { outcome: 'failed', reason: 'runner_error', exitCode, message: `${why}, ${ended}` };
}
