/**
 * The cluster behind the fake API server (fake-kube-api.ts): what the Job controller, the
 * kubelet, the garbage collector and the TTL controller would do, driven by the test. A test
 * makes a Job's pods (with their container's exit and a DisruptionTarget condition), sets the
 * Job's conditions, finishes terminating pods, and removes a Job as a TTL or a node drain would.
 */
import type { FakeKubeStore, Json, KubeObject } from './fake-kube-store.js';

export interface PodState {
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  /** The train container's exit (Succeeded / Failed). */
  exitCode?: number;
  /** The container's termination reason (`OOMKilled`, `Error`, ...). */
  reason?: string;
  /** A DisruptionTarget condition with this reason (`PreemptionByScheduler`, `EvictionByEvictionAPI`). */
  disruption?: string;
  /** What the container wrote (GET .../log). */
  log?: string;
}

export interface JobCondition {
  type: 'Complete' | 'Failed' | 'FailureTarget' | 'SuccessCriteriaMet' | 'Suspended';
  status?: 'True' | 'False';
  reason?: string;
  message?: string;
}

const CONTAINER = 'train';

export class FakeKubeCluster {
  readonly #store: FakeKubeStore;
  readonly #logs = new Map<string, string>();
  #pods = 0;

  constructor(
    store: FakeKubeStore,
    readonly namespace = 'gim',
  ) {
    this.#store = store;
  }

  job(name: string): KubeObject | undefined {
    return this.#store.get('jobs', this.namespace, name);
  }

  /** The Job's pods, oldest first. */
  pods(jobName: string): KubeObject[] {
    return this.#store
      .list('pods', this.namespace, `batch.kubernetes.io/job-name=${jobName}`)
      .sort((a, b) =>
        String(a.metadata.creationTimestamp).localeCompare(String(b.metadata.creationTimestamp)),
      );
  }

  /** The Job controller sets a condition (status True unless said). */
  setJobCondition(jobName: string, condition: JobCondition): void {
    const job = this.#mustJob(jobName);
    const status = (job.status ??= {}) as { conditions?: Json[]; completionTime?: string };
    status.conditions = [
      ...(status.conditions ?? []),
      { status: 'True', ...condition, lastProbeTime: now(), lastTransitionTime: now() },
    ];
    if (condition.type === 'Complete') status.completionTime = now();
    this.#store.update('jobs', job);
  }

  /** The Job controller makes a pod for the Job, in `state`; returns its name. */
  addPod(jobName: string, state: PodState): string {
    const job = this.#mustJob(jobName);
    const template = (
      job.spec as { template: { metadata: { labels: Record<string, string> }; spec: Json } }
    ).template;
    const name = `${jobName}-${(++this.#pods).toString(36).padStart(5, 'x')}`;
    this.#store.create('pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: this.namespace,
        labels: {
          ...template.metadata.labels,
          'batch.kubernetes.io/job-name': jobName,
          'job-name': jobName,
          'batch.kubernetes.io/controller-uid': job.metadata.uid!,
        },
        ownerReferences: [
          {
            apiVersion: 'batch/v1',
            kind: 'Job',
            name: jobName,
            uid: job.metadata.uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: structuredClone(template.spec),
      status: podStatus(state),
    });
    if (state.log !== undefined) this.#logs.set(name, state.log);
    this.#countPods(jobName);
    return name;
  }

  /** The kubelet reports a new state of the pod (it started, its container ended, it was preempted). */
  setPod(podName: string, state: PodState): void {
    const pod = this.#mustPod(podName);
    pod.status = podStatus(state);
    this.#store.update('pods', pod);
    if (state.log !== undefined) this.#logs.set(podName, state.log);
    this.#countPods(ownerOf(pod));
  }

  podLog(podName: string): string {
    return this.#logs.get(podName) ?? '';
  }

  /**
   * A terminating pod is gone (its container exited after SIGTERM, or its grace period ran out);
   * a Job deleted in the foreground goes once its last pod has.
   */
  finishPod(podName: string): void {
    const pod = this.#mustPod(podName);
    if (!pod.metadata.deletionTimestamp) throw new Error(`pod ${podName} is not terminating`);
    this.#store.remove('pods', this.namespace, podName);
    const owner = this.job(ownerOf(pod));
    if (
      owner?.metadata.finalizers?.includes('foregroundDeletion') &&
      this.pods(owner.metadata.name).length === 0
    )
      this.#store.remove('jobs', this.namespace, owner.metadata.name);
  }

  /** The TTL controller, or a drain that left the Job no pods, removes the Job (and its pods). */
  removeJob(jobName: string): void {
    if (!this.#store.remove('jobs', this.namespace, jobName)) throw new Error(`no Job ${jobName}`);
    for (const pod of this.pods(jobName))
      this.#store.remove('pods', this.namespace, pod.metadata.name);
  }

  /**
   * DELETE of a Job, as the API server and garbage collector do it: Foreground keeps the Job
   * (deletionTimestamp, finalizer foregroundDeletion) until its pods are gone, its pods now
   * terminating; Background removes the Job now and its pods terminate; Orphan leaves the pods.
   * The response body, or undefined when there is no such Job.
   */
  deleteJob(namespace: string, name: string, policy: string): object | undefined {
    const job = this.#store.get('jobs', namespace, name);
    if (!job) return undefined;
    const pods = this.pods(name);
    if (policy === 'Foreground' && pods.length > 0) {
      job.metadata.deletionTimestamp = now();
      job.metadata.finalizers = [...(job.metadata.finalizers ?? []), 'foregroundDeletion'];
      const kept = this.#store.update('jobs', job);
      for (const pod of pods) this.#terminate(pod);
      return kept;
    }
    this.#store.remove('jobs', namespace, name);
    if (policy !== 'Orphan') for (const pod of pods) this.#terminate(pod);
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name, group: 'batch', kind: 'jobs', uid: job.metadata.uid },
    };
  }

  /** DELETE of a pod: with a grace period it terminates (finishPod ends it); with 0 it is gone now. */
  deletePod(
    namespace: string,
    name: string,
    gracePeriodSeconds: number | undefined,
  ): object | undefined {
    const pod = this.#store.get('pods', namespace, name);
    if (!pod) return undefined;
    if (gracePeriodSeconds !== 0) return this.#terminate(pod);
    this.#store.remove('pods', namespace, name);
    const owner = this.job(ownerOf(pod));
    if (
      owner?.metadata.finalizers?.includes('foregroundDeletion') &&
      this.pods(owner.metadata.name).length === 0
    )
      this.#store.remove('jobs', namespace, owner.metadata.name);
    return pod;
  }

  #terminate(pod: KubeObject): KubeObject {
    if (pod.metadata.deletionTimestamp) return pod;
    pod.metadata.deletionTimestamp = now();
    return this.#store.update('pods', pod);
  }

  /** The Job controller's counts of its pods. */
  #countPods(jobName: string): void {
    const job = this.job(jobName);
    if (!job) return;
    const phases = this.pods(jobName).map((p) => (p.status as { phase: string }).phase);
    const count = (...of: string[]) => phases.filter((p) => of.includes(p)).length;
    job.status = {
      ...job.status,
      active: count('Pending', 'Running'),
      succeeded: count('Succeeded'),
      failed: count('Failed'),
    };
    this.#store.update('jobs', job);
  }

  #mustJob(name: string): KubeObject {
    const job = this.job(name);
    if (!job) throw new Error(`no Job ${name}`);
    return job;
  }

  #mustPod(name: string): KubeObject {
    const pod = this.#store.get('pods', this.namespace, name);
    if (!pod) throw new Error(`no pod ${name}`);
    return pod;
  }
}

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

function ownerOf(pod: KubeObject): string {
  return (pod.metadata.ownerReferences as { name: string }[] | undefined)?.[0]?.name ?? '';
}

function podStatus(state: PodState): Json {
  const ended = state.phase === 'Succeeded' || state.phase === 'Failed';
  const exitCode = state.exitCode ?? (state.phase === 'Succeeded' ? 0 : 1);
  const containerState = ended
    ? {
        terminated: {
          exitCode,
          reason: state.reason ?? (exitCode === 0 ? 'Completed' : 'Error'),
          startedAt: now(),
          finishedAt: now(),
        },
      }
    : state.phase === 'Running'
      ? { running: { startedAt: now() } }
      : { waiting: { reason: 'ContainerCreating' } };
  return {
    phase: state.phase,
    conditions: state.disruption
      ? [
          {
            type: 'DisruptionTarget',
            status: 'True',
            reason: state.disruption,
            message: 'the pod was disrupted',
            lastTransitionTime: now(),
          },
        ]
      : [],
    containerStatuses: [
      {
        name: CONTAINER,
        ready: state.phase === 'Running',
        restartCount: 0,
        image: 'gim-serve:gpu',
        imageID: '',
        state: containerState,
      },
    ],
  };
}
