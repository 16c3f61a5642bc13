/**
 * One attempt's Kubernetes Job as a `RunHandle`: follows the Job (list, then watch from the
 * list's resourceVersion; a 410 Gone relists) until its conditions say it finished or it is gone,
 * copies its pods' logs to the job's log, and stops it by deleting it.
 */
import { appendFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IJob } from 'kubernetes-models/batch/v1/Job';
import type { IPod } from 'kubernetes-models/v1/Pod';
import { TRAIN_CONTAINER } from '../../app/jobs/kubernetes-job.js';
import type { RunExit, RunHandle } from '../runner.js';
import { isFinished, jobOutcome } from './job-outcome.js';
import { type KubeApi, KubeApiError } from './kube-api.js';

export interface HandleContext {
  api: KubeApi;
  namespace: string;
  /** The Job's name. */
  name: string;
  /** Selects this attempt's Job and its pods (`gim.dev/job-id=<id>,gim.dev/attempt=<n>`). */
  selector: string;
  /** Where the pods' logs are appended when the Job ends (the job's log, as the API sees it). */
  logPath: string;
  watchTimeoutSeconds: number;
  retryDelayMs: number;
  warn: (message: string) => void;
}

export class TrainingJobHandle implements RunHandle {
  readonly ref: string;
  readonly done: Promise<RunExit>;
  readonly #ctx: HandleContext;
  readonly #abort = new AbortController();
  #stopping: 'graceful' | 'force' | undefined;
  #settled = false;

  /** `ended`: the Job as adopted, finished already: its outcome is decided without a watch. */
  constructor(ctx: HandleContext, ended?: IJob) {
    this.#ctx = ctx;
    this.ref = ctx.name;
    const exit = ended ? this.#ended(ended).then((e) => e ?? this.#follow()) : this.#follow();
    this.done = exit.then((exit) => {
      this.#settled = true;
      return exit;
    });
  }

  /**
   * Graceful: delete the Job in the foreground, so it stays (with a deletionTimestamp) until its
   * pods are gone: each gets SIGTERM and its terminationGracePeriodSeconds to checkpoint and exit
   * 3, and `done` resolves `cancelled` when the Job is gone, that is once the trainer has stopped
   * writing to the job dir. Force: the Job in the background with no grace, and its pods deleted
   * with gracePeriodSeconds 0 (the garbage collector would give them their full grace period).
   */
  async stop(mode: 'graceful' | 'force'): Promise<void> {
    if (this.#settled) return;
    this.#stopping = mode === 'force' || this.#stopping === 'force' ? 'force' : 'graceful';
    const { api, namespace, name, selector } = this.#ctx;
    await ignoreNotFound(
      api.deleteJob(
        namespace,
        name,
        mode === 'graceful'
          ? { propagationPolicy: 'Foreground' }
          : { propagationPolicy: 'Background', gracePeriodSeconds: 0 },
      ),
    );
    if (mode === 'force') {
      const pods = await api.listPods(namespace, selector);
      await Promise.all(
        pods.items.map((pod) =>
          ignoreNotFound(
            api.deletePod(namespace, pod.metadata?.name ?? '', { gracePeriodSeconds: 0 }),
          ),
        ),
      );
    }
  }

  /**
   * Stops following the Job without touching it (this replica lost the Lease: the new leader
   * adopts the Job). `done` then never settles.
   */
  detach(): void {
    this.#abort.abort();
  }

  async #follow(): Promise<RunExit> {
    const { api, namespace, name, selector } = this.#ctx;
    // undefined: (re)list before watching, after a 410 Gone or an error.
    let version: string | undefined;
    while (!this.#abort.signal.aborted) {
      try {
        if (version === undefined) {
          const list = await api.listJobs(namespace, selector);
          const job = list.items.find((j) => j.metadata?.name === name);
          const exit = job ? await this.#ended(job) : this.#gone();
          if (exit) return exit;
          version = list.resourceVersion;
        }
        const events = api.watchJobs(namespace, {
          labelSelector: selector,
          resourceVersion: version,
          timeoutSeconds: this.#ctx.watchTimeoutSeconds,
          signal: this.#abort.signal,
        });
        for await (const event of events) {
          version = event.object.metadata?.resourceVersion ?? version;
          if (event.type === 'BOOKMARK' || event.object.metadata?.name !== name) continue;
          const exit = event.type === 'DELETED' ? this.#gone() : await this.#ended(event.object);
          if (exit) return exit;
        }
        // The server ended the watch (its timeoutSeconds): watch again from `version`.
      } catch (error) {
        if (this.#abort.signal.aborted) break;
        if (error instanceof KubeApiError && error.code === 'gone') {
          version = undefined;
          continue;
        }
        this.#ctx.warn(`following Job ${name}: ${(error as Error).message}; retrying`);
        version = undefined;
        await sleep(this.#ctx.retryDelayMs);
      }
    }
    return new Promise<never>(() => undefined);
  }

  /** The Job is no more: our own cancel, or deleted from outside before it finished. */
  #gone(): RunExit {
    return this.#stopping
      ? { outcome: 'cancelled', message: `Job ${this.#ctx.name} deleted on cancel` }
      : {
          outcome: 'lost',
          message: `Job ${this.#ctx.name} disappeared before it finished (deleted, removed by its TTL, or its node drained)`,
        };
  }

  async #ended(job: IJob): Promise<RunExit | undefined> {
    if (!isFinished(job)) return undefined;
    const pods = await this.#pods();
    await this.#copyLogs(pods);
    return jobOutcome(job, pods, this.#stopping !== undefined);
  }

  async #pods(): Promise<IPod[]> {
    try {
      return (await this.#ctx.api.listPods(this.#ctx.namespace, this.#ctx.selector)).items;
    } catch (error) {
      this.#ctx.warn(`pods of Job ${this.#ctx.name}: ${(error as Error).message}`);
      return [];
    }
  }

  /** Appends each pod's output to the job's log, oldest pod first; a pod without one is noted. */
  async #copyLogs(pods: readonly IPod[]): Promise<void> {
    const { api, namespace, logPath } = this.#ctx;
    const ordered = [...pods].sort(
      (a, b) =>
        (Date.parse(a.metadata?.creationTimestamp ?? '') || 0) -
        (Date.parse(b.metadata?.creationTimestamp ?? '') || 0),
    );
    for (const pod of ordered) {
      const podName = pod.metadata?.name ?? '';
      let text: string;
      try {
        text = await api.readPodLog(namespace, podName, TRAIN_CONTAINER);
      } catch (error) {
        text = `(no log: ${(error as Error).message})\n`;
      }
      const header = `--- Kubernetes pod ${podName} (${pod.status?.phase ?? 'unknown'}) ---\n`;
      try {
        await appendFile(logPath, header + text + (text.endsWith('\n') ? '' : '\n'));
      } catch (error) {
        this.#ctx.warn(`copying the log of pod ${podName}: ${(error as Error).message}`);
        return;
      }
    }
  }
}

async function ignoreNotFound(call: Promise<void>): Promise<void> {
  try {
    await call;
  } catch (error) {
    if (!(error instanceof KubeApiError && error.code === 'not_found')) throw error;
  }
}
