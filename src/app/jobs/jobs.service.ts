import { dirname, extname, join } from 'node:path';
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
import type { JobRunner } from '../../jobs/runner.js';
import { APP_CONFIG, type AppConfig } from '../config.js';
import { Lifecycle } from '../lifecycle/lifecycle.service.js';
import { type Actor, AuditLog } from '../admin/audit-log.js';
import { MetricsService } from '../metrics/metrics.service.js';

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

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    metrics: MetricsService,
    private readonly lifecycle: Lifecycle,
    private readonly audit: AuditLog,
  ) {
    this.store = new JobStore(config.modelsDir);
    this.controller = new JobController({
      store: this.store,
      runner: this.createRunner(),
      maxRunning: config.jobs.maxRunning,
      log: (line) => this.logger.log(line),
      hooks: metrics.jobHooks(),
    });
  }

  async onApplicationBootstrap(): Promise<void> {
    // Admin routes are off without a token: so are jobs (nothing could submit or see them).
    if (this.config.adminToken === undefined) return;
    await this.controller.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
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
      async () => this.controller.submit(await this.plan(body), { by: actor.id, idempotencyKey }),
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

  private createRunner(): JobRunner {
    const { jobs } = this.config;
    if (jobs.runner === 'kubernetes')
      throw new Error('JOB_RUNNER=kubernetes is not wired into the service yet');
    const env: NodeJS.ProcessEnv = { ...process.env, MODELS_DIR: this.config.modelsDir };
    if (this.config.backend) env.GIM_BACKEND = this.config.backend;
    return new LocalRunner({
      cli: cliEntry(),
      env,
      niceness: jobs.niceness,
      stopGraceMs: jobs.stopGraceMs,
      log: (line) => this.logger.log(line),
    });
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
