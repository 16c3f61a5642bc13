import { readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { fileURLToPath } from 'node:url';
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { GimError } from '../../gim/errors.js';
import { JobController, type ListFilter } from '../../jobs/job-controller.js';
import type { JobRecord } from '../../jobs/job-record.js';
import { type JobPlan, planJob } from '../../jobs/job-spec.js';
import { JobStore } from '../../jobs/job-store.js';
import { LocalRunner } from '../../jobs/local-runner.js';
import { KubeApi } from '../../jobs/kubernetes/kube-api.js';
import {
  inClusterConnection,
  kubeconfigConnection,
} from '../../jobs/kubernetes/kube-connection.js';
import { KubernetesRunner } from '../../jobs/kubernetes/kubernetes-runner.js';
import { LeaderLease } from '../../jobs/kubernetes/leader-lease.js';
import { parseRunnerConfig } from './kubernetes-job.js';
import type { JobRunner } from '../../jobs/runner.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { Lifecycle } from '../lifecycle/lifecycle.service.js';
import { type Actor, AuditLog } from '../admin/audit-log.js';
import { MetricsService } from '../metrics/metrics.service.js';
import { PromotionCheck } from './promotion-check.js';

/**
 * Training jobs for the HTTP layer: plans specs, owns the job controller and its runner, starts
 * it (recovering every non-terminal job) when the app starts and hands running trainers back at
 * shutdown (they checkpoint; the next process resumes them). Every admin action is one audit line.
 */
@Injectable()
export class JobsService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('Jobs');
  readonly store: JobStore;
  readonly controller: JobController;
  /** The kubernetes runner's Lease (one replica runs trainers) and API client. */
  private readonly cluster?: { lease: LeaderLease; api: KubeApi; runner: KubernetesRunner };
  private shuttingDown = false;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    metrics: MetricsService,
    private readonly lifecycle: Lifecycle,
    private readonly audit: AuditLog,
    private readonly promotions: PromotionCheck,
  ) {
    this.store = new JobStore(config.modelsDir);
    let runner: JobRunner;
    if (config.jobs.runner === 'kubernetes' && config.adminToken !== undefined) {
      this.cluster = this.kubernetes();
      runner = this.cluster.runner;
    } else runner = this.localRunner();
    this.controller = new JobController({
      store: this.store,
      runner,
      maxRunning: config.jobs.maxRunning,
      log: (line) => this.logger.log(line),
      hooks: metrics.jobHooks(),
      ...(this.cluster ? { leader: this.cluster.lease, reconcileMs: 2000 } : {}),
    });
  }

  async onApplicationBootstrap(): Promise<void> {
    // Admin routes are off without a token: so are jobs (nothing could submit or see them).
    if (this.config.adminToken === undefined) return;
    // Kubernetes: the controller starts on the replica that holds the Lease (onStartedLeading).
    if (this.cluster) this.cluster.lease.start();
    else await this.controller.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.shuttingDown = true;
    if (this.cluster) {
      // Trainers are Kubernetes Jobs: they go on without this replica; another one adopts them.
      this.cluster.runner.detachAll();
      await this.cluster.lease.stop();
      this.cluster.api.close();
      return;
    }
    await this.controller.drain();
  }

  plan(body: unknown): Promise<JobPlan> {
    return planJob(body, {
      dataRoot: this.config.jobs.dataRoot,
      defaultTimeoutSeconds: this.config.jobs.timeoutSeconds,
      defaultMaxResumes: this.config.jobs.maxResumes,
    });
  }

  async submit(
    body: unknown,
    actor: Actor,
    idempotencyKey?: string,
  ): Promise<{ job: JobRecord; created: boolean }> {
    if (this.lifecycle.draining)
      throw new GimError('shutting_down', 'the service is shutting down: submit the job again');
    return this.audit.record(
      actor,
      'job.submit',
      '-',
      async () => {
        const plan = await this.plan(body);
        await this.promotions.check(plan);
        return this.controller.submit(plan, { by: actor.id, idempotencyKey });
      },
      (out) => out.job.id,
    );
  }

  get(id: string): Promise<JobRecord> {
    return this.controller.get(id);
  }

  list(filter: ListFilter): Promise<JobRecord[]> {
    return this.controller.list(filter);
  }

  cancel(id: string, actor: Actor, force: boolean, reason?: string): Promise<JobRecord> {
    return this.audit.record(actor, force ? 'job.kill' : 'job.cancel', id, () =>
      this.controller.cancel(id, { force, by: actor.id, ...(reason ? { reason } : {}) }),
    );
  }

  retry(id: string, actor: Actor): Promise<JobRecord> {
    return this.audit.record(actor, 'job.retry', id, () => this.controller.retry(id, actor.id));
  }

  remove(id: string, actor: Actor): Promise<void> {
    return this.audit.record(actor, 'job.delete', id, () => this.controller.remove(id));
  }

  private localRunner(): JobRunner {
    const { jobs } = this.config;
    return new LocalRunner({
      cli: cliEntry(),
      env: { ...jobs.trainerEnv },
      niceness: jobs.niceness,
      stopGraceMs: jobs.stopGraceMs,
      log: (line) => this.logger.log(line),
    });
  }

  /**
   * The kubernetes runner: its config file, the API (in-cluster service account, else a
   * kubeconfig), and the Lease. Losing the Lease ends this process's part: it shuts down
   * gracefully (the orchestrator restarts it as a follower), as Kubernetes controllers do.
   */
  private kubernetes(): { lease: LeaderLease; api: KubeApi; runner: KubernetesRunner } {
    const k = this.config.jobs.kubernetes;
    const runnerConfig = parseRunnerConfig(parseYaml(readFileSync(k.runnerConfigPath, 'utf8')));
    const connection =
      k.serviceHost !== undefined
        ? inClusterConnection({ host: k.serviceHost, port: k.servicePort ?? '443' })
        : kubeconfigConnection(k.kubeconfig as string, k.context);
    const api = new KubeApi(connection);
    const warn = (line: string): void => this.logger.warn(line);
    const lease = new LeaderLease({
      api,
      namespace: runnerConfig.namespace,
      identity: k.podName as string,
      onStartedLeading: () => {
        this.logger.log(`${k.podName} leads the training jobs: recovering and starting them`);
        this.controller
          .start()
          .catch((e: unknown) => this.logger.error(`job recovery failed: ${String(e)}`));
      },
      onStoppedLeading: () => {
        this.logger.error(
          `${k.podName} lost the jobs Lease: shutting down (restarted as a follower)`,
        );
        runner.detachAll();
        // Not when the Lease was given up by this process's own shutdown.
        if (!this.shuttingDown && !this.lifecycle.draining) process.kill(process.pid, 'SIGTERM');
      },
      onWarning: warn,
    });
    const runner = new KubernetesRunner({
      api,
      config: runnerConfig,
      leader: lease,
      onWarning: warn,
    });
    return { lease, api, runner };
  }
}

/** The CLI beside this file: `main.ts` through swc when running from source, else `main.js`. */
export function cliEntry(): { nodeArgs: string[]; entry: string } {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  return {
    entry: join(dirname(self), '..', '..', 'cli', `main${ext}`),
    nodeArgs: ext === '.ts' ? ['--import', '@swc-node/register/esm-register'] : [],
  };
}
