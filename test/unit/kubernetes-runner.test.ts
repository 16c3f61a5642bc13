/**
 * The Kubernetes job runner against a local server speaking the Kubernetes REST API
 * (test/helpers/fake-kube-api.ts): real HTTP, real JSON, real watches. The test plays the cluster
 * (pods, Job conditions, drains) and checks what the runner created, how it read each ending, and
 * that it called exactly what the RBAC Role grants.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import {
  KUBERNETES_RUNNER_API_CALLS,
  parseRunnerConfig,
} from '../../src/app/jobs/kubernetes-job.js';
import type { JobRecord } from '../../src/jobs/job-record.js';
import { KubeApi, KubeApiError } from '../../src/jobs/kubernetes/kube-api.js';
import { KubernetesRunner, NotLeaderError } from '../../src/jobs/kubernetes/kubernetes-runner.js';
import { LeaderLease } from '../../src/jobs/kubernetes/leader-lease.js';
import type { JobPaths, RunExit, RunHandle, RunRequest } from '../../src/jobs/runner.js';
import { type RecordedCall, FakeKubeApi } from '../helpers/fake-kube-api.js';
import type { PodState } from '../helpers/fake-kube-cluster.js';
import { EXAMPLE_TRAINING_SPEC, checkTrainingJob } from '../helpers/k8s-checks.js';
import { validateStrict } from '../helpers/k8s-schema.js';

const K8S = join(import.meta.dirname, '../../k8s');
const TOKEN = 'runner-token';
const JOB_ID = EXAMPLE_TRAINING_SPEC.jobId;
const readYaml = (path: string): unknown => parseYaml(readFileSync(path, 'utf8'));
const baseRunner = () => parseRunnerConfig(readYaml(join(K8S, 'base/training-runner.yaml')));

/** Every call of every test, for the RBAC check at the end. */
const allCalls: RecordedCall[] = [];

interface Setup {
  fake: FakeKubeApi;
  api: KubeApi;
  runner: KubernetesRunner;
  dir: string;
  warnings: string[];
  /** A runner as a restarted controller has it: a new client, nothing in memory. */
  restart(): KubernetesRunner;
}

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

async function setup(options: { leader?: { isLeader: boolean } } = {}): Promise<Setup> {
  const fake = await FakeKubeApi.start(TOKEN);
  const dir = await mkdtemp(join(tmpdir(), 'gim-k8s-runner-'));
  const warnings: string[] = [];
  const apis: KubeApi[] = [];
  const runners: KubernetesRunner[] = [];
  const make = () => {
    const api = new KubeApi({ server: fake.url, token: TOKEN });
    const runner = new KubernetesRunner({
      api,
      config: baseRunner(),
      retryDelayMs: 20,
      onWarning: (m) => warnings.push(m),
      ...options,
    });
    apis.push(api);
    runners.push(runner);
    return { api, runner };
  };
  const { api, runner } = make();
  open.push(async () => {
    for (const r of runners) r.detachAll();
    for (const a of apis) a.close();
    allCalls.push(...fake.calls);
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { fake, api, runner, dir, warnings, restart: () => make().runner };
}

function jobRecord(attempts = 1, id = JOB_ID): JobRecord {
  const at = '2026-12-07T00:00:00.000Z';
  return {
    id,
    kind: 'encoder',
    model: EXAMPLE_TRAINING_SPEC.model,
    spec: {},
    // The CLI arguments of the job, without the runner's own flags.
    args: EXAMPLE_TRAINING_SPEC.args.filter(
      (a) =>
        !a.startsWith('--progress-json') && !a.startsWith('--checkpoint-dir') && a !== '--resume',
    ),
    runner: 'kubernetes',
    status: 'starting',
    timeoutSeconds: EXAMPLE_TRAINING_SPEC.timeoutSeconds,
    maxResumes: 1,
    resumes: 0,
    attempts: Array.from({ length: attempts }, (_, i) => ({
      n: i + 1,
      resume: i > 0,
      startedAt: at,
    })),
    createdBy: 'test',
    createdAt: at,
    updatedAt: at,
  };
}

async function request(s: Setup, attempt = 1, id = JOB_ID): Promise<RunRequest> {
  const jobDir = join(s.dir, '.jobs', id);
  await mkdir(jobDir, { recursive: true });
  const paths: JobPaths = {
    dir: jobDir,
    record: join(jobDir, 'job.json'),
    events: join(jobDir, 'events.ndjson'),
    progress: join(jobDir, 'progress.ndjson'),
    log: join(jobDir, 'train.log'),
    checkpoint: join(jobDir, 'checkpoint'),
  };
  return { job: jobRecord(attempt, id), attempt, resume: attempt > 1, paths };
}

/** Resolves once the runner has an open watch on its Job (counting from call `from`). */
const watching = (s: Setup, from = 0) =>
  s.fake.waitForCall((c) => c.verb === 'watch' && c.resource === 'jobs' && c.status === 200, from);

/** Starts attempt 1 and waits until the runner follows its Job. */
async function started(s: Setup): Promise<{ handle: RunHandle; name: string; req: RunRequest }> {
  const req = await request(s);
  const handle = await s.runner.start(req);
  await watching(s);
  return { handle, name: handle.ref, req };
}

describe('KubernetesRunner.start', { timeout: 20_000 }, () => {
  test('creates the golden Job (k8s/base/training-job.example.yaml), schema-valid, and adopts its own AlreadyExists', async () => {
    const s = await setup();
    const req = await request(s);
    const handle = await s.runner.start(req);
    assert.equal(handle.ref, 'gim-train-example-0001-1');
    const created = s.fake.calls.filter((c) => c.verb === 'create' && c.resource === 'jobs');
    assert.equal(created.length, 1);
    assert.equal(created[0]!.status, 201);
    assert.deepEqual(created[0]!.body, readYaml(join(K8S, 'base/training-job.example.yaml')));
    assert.deepEqual(validateStrict(created[0]!.body).problems, []);
    assert.deepEqual(checkTrainingJob(created[0]!.body as never), []);

    // A start retried (its answer lost, or before the controller recorded it) is the same Job.
    const again = await s.runner.start(req);
    assert.equal(again.ref, handle.ref);
    const creates = s.fake.calls.filter((c) => c.verb === 'create');
    assert.deepEqual(
      creates.map((c) => c.status),
      [201, 409],
    );
    assert.ok(s.fake.calls.some((c) => c.verb === 'get' && c.name === handle.ref));
    assert.equal(s.fake.store.list('jobs', 'gim').length, 1);
  });

  test('each attempt is its own Job; a name taken by another job is refused', async () => {
    const s = await setup();
    const first = await s.runner.start(await request(s, 1));
    const second = await s.runner.start(await request(s, 2));
    assert.deepEqual(
      [first.ref, second.ref],
      ['gim-train-example-0001-1', 'gim-train-example-0001-2'],
    );
    // Another object already holds attempt 3's name (not ours: other labels).
    const job = s.fake.cluster.job(first.ref)!;
    job.metadata.name = 'gim-train-example-0001-3';
    job.metadata.labels = { 'gim.dev/job-id': 'someone-else', 'gim.dev/attempt': '1' };
    delete job.metadata.resourceVersion;
    s.fake.store.create('jobs', job);
    await assert.rejects(s.runner.start(await request(s, 3)), (e: unknown) => {
      assert.ok(e instanceof KubeApiError && e.code === 'conflict', String(e));
      assert.match(e.message, /not attempt 3 of job example-0001/);
      return true;
    });
  });

  test('only the Lease holder creates Jobs', async () => {
    const leader = { isLeader: false };
    const s = await setup({ leader });
    await assert.rejects(s.runner.start(await request(s)), NotLeaderError);
    assert.equal(s.fake.calls.filter((c) => c.verb === 'create').length, 0);
    leader.isLeader = true;
    await s.runner.start(await request(s));
    assert.equal(s.fake.calls.filter((c) => c.verb === 'create').length, 1);
  });

  test('the API refuses a Job its schema does not know (the fake validates as the server does)', async () => {
    const s = await setup();
    const job = s.runner.manifest(await request(s));
    (job.spec!.template.spec!.containers[0] as unknown as Record<string, unknown>).gpus = 1;
    await assert.rejects(s.api.createJob('gim', job), (e: unknown) => {
      assert.ok(e instanceof KubeApiError && e.code === 'invalid' && e.status === 422, String(e));
      assert.match(e.message, /containers\/0\/gpus unknown field/);
      return true;
    });
    assert.deepEqual(s.fake.store.list('jobs', 'gim'), []);
  });

  test('a refused token is a runner_error that says so', async () => {
    const s = await setup();
    s.fake.tokens.clear();
    await assert.rejects(s.runner.start(await request(s)), (e: unknown) => {
      assert.ok(
        e instanceof KubeApiError && e.code === 'runner_error' && e.status === 401,
        String(e),
      );
      assert.match(e.message, /did not accept our credentials/);
      return true;
    });
  });
});

describe('KubernetesRunner: how a Job ended', { timeout: 20_000 }, () => {
  /** Plays one ending on a started Job; returns the handle's exit and the job's log. */
  async function ending(
    play: (s: Setup, name: string) => void,
  ): Promise<{ exit: RunExit; log: string }> {
    const s = await setup();
    const { handle, name, req } = await started(s);
    play(s, name);
    const exit = await handle.done;
    const log = await readFile(req.paths.log, 'utf8').catch(() => '');
    return { exit, log };
  }
  const pod = (s: Setup, job: string, state: PodState) => s.fake.cluster.addPod(job, state);

  test('Complete: succeeded, and the pod log is copied to the job log', async () => {
    const { exit, log } = await ending((s, job) => {
      const p = pod(s, job, { phase: 'Running' });
      s.fake.cluster.setPod(p, { phase: 'Succeeded', exitCode: 0, log: 'epoch 1/1 loss 2.1\n' });
      s.fake.cluster.setJobCondition(job, {
        type: 'SuccessCriteriaMet',
        reason: 'CompletionsReached',
      });
      s.fake.cluster.setJobCondition(job, { type: 'Complete', reason: 'CompletionsReached' });
    });
    assert.equal(exit.outcome, 'succeeded');
    assert.equal(exit.exitCode, 0);
    assert.match(
      log,
      /^--- Kubernetes pod gim-train-example-0001-1-\w+ \(Succeeded\) ---\nepoch 1\/1 loss 2.1\n$/,
    );
  });

  test('Failed by the podFailurePolicy (exit 2): failed bad_input', async () => {
    const { exit } = await ending((s, job) => {
      const p = pod(s, job, { phase: 'Failed', exitCode: 2 });
      const message = `Container train for pod gim/${p} failed with exit code 2 matching FailJob rule at index 0`;
      s.fake.cluster.setJobCondition(job, {
        type: 'FailureTarget',
        reason: 'PodFailurePolicy',
        message,
      });
      s.fake.cluster.setJobCondition(job, { type: 'Failed', reason: 'PodFailurePolicy', message });
    });
    assert.deepEqual([exit.outcome, exit.reason, exit.exitCode], ['failed', 'bad_input', 2]);
    assert.match(exit.message, /matching FailJob rule/);
  });

  test('DeadlineExceeded: failed deadline', async () => {
    const { exit } = await ending((s, job) => {
      pod(s, job, { phase: 'Running' });
      s.fake.cluster.setJobCondition(job, {
        type: 'Failed',
        reason: 'DeadlineExceeded',
        message: 'Job was active longer than specified deadline',
      });
    });
    assert.deepEqual([exit.outcome, exit.reason], ['failed', 'deadline']);
  });

  test('BackoffLimitExceeded after OOMKilled pods: failed out_of_memory', async () => {
    const { exit } = await ending((s, job) => {
      // The last pod decides: the first crashed, the retry ran out of memory.
      pod(s, job, { phase: 'Failed', exitCode: 1, reason: 'Error' });
      pod(s, job, { phase: 'Failed', exitCode: 137, reason: 'OOMKilled' });
      s.fake.cluster.setJobCondition(job, {
        type: 'Failed',
        reason: 'BackoffLimitExceeded',
        message: 'Job has reached the specified backoff limit',
      });
    });
    assert.deepEqual([exit.outcome, exit.reason, exit.exitCode], ['failed', 'out_of_memory', 137]);
    assert.match(exit.message, /exit code 137 \(OOMKilled\)/);
  });

  test('BackoffLimitExceeded after a crash: failed runner_error with the exit code', async () => {
    const { exit } = await ending((s, job) => {
      pod(s, job, { phase: 'Failed', exitCode: 137, reason: 'OOMKilled' });
      pod(s, job, { phase: 'Failed', exitCode: 1, reason: 'Error' });
      s.fake.cluster.setJobCondition(job, { type: 'Failed', reason: 'BackoffLimitExceeded' });
    });
    assert.deepEqual([exit.outcome, exit.reason, exit.exitCode], ['failed', 'runner_error', 1]);
    assert.match(exit.message, /exit code 1 \(Error\)/);
  });

  test('a trainer stopped from outside after a checkpoint (exit 3, no cancel): lost, so it resumes', async () => {
    const { exit } = await ending((s, job) => {
      pod(s, job, { phase: 'Failed', exitCode: 3 });
      s.fake.cluster.setJobCondition(job, { type: 'Failed', reason: 'BackoffLimitExceeded' });
    });
    assert.deepEqual([exit.outcome, exit.exitCode], ['lost', 3]);
  });

  test('a preempted pod is not a failure: the Job makes a new one, which completes', async () => {
    const { exit } = await ending((s, job) => {
      const p = pod(s, job, { phase: 'Running' });
      s.fake.cluster.setPod(p, {
        phase: 'Failed',
        exitCode: 143,
        disruption: 'PreemptionByScheduler',
      });
      const next = pod(s, job, { phase: 'Running' });
      s.fake.cluster.setPod(next, { phase: 'Succeeded' });
      s.fake.cluster.setJobCondition(job, { type: 'Complete' });
    });
    assert.equal(exit.outcome, 'succeeded');
  });

  test('a pod disrupted, then its Job gone before it finished (drain, TTL, deleted): lost', async () => {
    const { exit } = await ending((s, job) => {
      const p = pod(s, job, { phase: 'Running' });
      s.fake.cluster.setPod(p, {
        phase: 'Failed',
        exitCode: 143,
        disruption: 'EvictionByEvictionAPI',
      });
      s.fake.cluster.removeJob(job);
    });
    assert.equal(exit.outcome, 'lost');
    assert.match(exit.message, /disappeared before it finished/);
  });
});

describe('KubernetesRunner.stop', { timeout: 20_000 }, () => {
  test('graceful: a foreground delete; done is cancelled once the pod has checkpointed and gone', async () => {
    const s = await setup();
    const { handle, name } = await started(s);
    const p = s.fake.cluster.addPod(name, { phase: 'Running' });
    let settled = false;
    void handle.done.then(() => (settled = true));
    await handle.stop('graceful');
    const del = s.fake.calls.filter((c) => c.verb === 'delete');
    assert.deepEqual(
      del.map((c) => [c.resource, c.name, c.body]),
      [
        [
          'jobs',
          name,
          { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Foreground' },
        ],
      ],
    );
    // The Job stays while its pod terminates (SIGTERM, checkpoint): the trainer has not stopped.
    assert.ok(s.fake.cluster.job(name)?.metadata.deletionTimestamp);
    assert.ok(s.fake.cluster.pods(name)[0]?.metadata.deletionTimestamp);
    assert.equal(settled, false);
    s.fake.cluster.setPod(p, { phase: 'Failed', exitCode: 3 });
    s.fake.cluster.finishPod(p);
    const exit = await handle.done;
    assert.equal(exit.outcome, 'cancelled');
    assert.equal(s.fake.cluster.job(name), undefined);
  });

  test('force: the Job deleted in the background with no grace, and its pods with gracePeriodSeconds 0', async () => {
    const s = await setup();
    const { handle, name } = await started(s);
    const p = s.fake.cluster.addPod(name, { phase: 'Running' });
    await handle.stop('force');
    const del = s.fake.calls.filter((c) => c.verb === 'delete');
    assert.deepEqual(
      del.map((c) => [c.resource, c.name, c.body]),
      [
        [
          'jobs',
          name,
          {
            kind: 'DeleteOptions',
            apiVersion: 'v1',
            propagationPolicy: 'Background',
            gracePeriodSeconds: 0,
          },
        ],
        ['pods', p, { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 0 }],
      ],
    );
    assert.equal((await handle.done).outcome, 'cancelled');
    assert.deepEqual(s.fake.cluster.pods(name), []);
  });

  test('a Job that completes while it is being cancelled still succeeded', async () => {
    const s = await setup();
    const { handle, name } = await started(s);
    const p = s.fake.cluster.addPod(name, { phase: 'Running' });
    await handle.stop('graceful');
    s.fake.cluster.setPod(p, { phase: 'Succeeded' });
    s.fake.cluster.setJobCondition(name, { type: 'Complete' });
    assert.equal((await handle.done).outcome, 'succeeded');
  });
});

describe('KubernetesRunner: watch and re-adoption', { timeout: 20_000 }, () => {
  test('a watch the server ends is resumed from the last version, without a relist', async () => {
    const s = await setup();
    const { handle, name } = await started(s);
    const lists = () =>
      s.fake.calls.filter((c) => c.verb === 'list' && c.resource === 'jobs').length;
    s.fake.cluster.addPod(name, { phase: 'Running' });
    const from = s.fake.calls.length;
    const version = s.fake.store.resourceVersion;
    const listsBefore = lists();
    s.fake.dropWatches();
    const rewatch = await watching(s, from);
    assert.equal(rewatch.query.resourceVersion, version);
    assert.equal(lists(), listsBefore);
    s.fake.cluster.setJobCondition(name, { type: 'Complete' });
    assert.equal((await handle.done).outcome, 'succeeded');
  });

  test('a watch answered 410 Gone relists and continues', async () => {
    const s = await setup();
    const { handle, name } = await started(s);
    const from = s.fake.calls.length;
    // While the runner is disconnected its Job changes and the history it knew is compacted.
    s.fake.dropWatches();
    s.fake.cluster.addPod(name, { phase: 'Running' });
    s.fake.store.compact();
    const gone = await s.fake.waitForCall((c) => c.verb === 'watch' && c.status === 410, from);
    const after = s.fake.calls.indexOf(gone);
    await s.fake.waitForCall((c) => c.verb === 'list' && c.resource === 'jobs', after);
    const resumed = await watching(s, after);
    assert.ok(Number(resumed.query.resourceVersion) >= s.fake.store.compactedBefore);
    s.fake.cluster.setJobCondition(name, { type: 'Complete' });
    assert.equal((await handle.done).outcome, 'succeeded');
  });

  test('a restarted controller re-adopts the running Job by its labels and sees it complete', async () => {
    const s = await setup();
    const { name, req } = await started(s);
    s.fake.cluster.addPod(name, { phase: 'Running' });
    s.runner.detachAll(); // the old controller is gone

    const runner = s.restart();
    const from = s.fake.calls.length;
    const handle = await runner.adopt(req.job, req.paths);
    assert.ok(handle);
    assert.equal(handle.ref, name);
    const listed = s.fake.calls.slice(from).find((c) => c.verb === 'list' && c.resource === 'jobs');
    assert.equal(listed?.query.labelSelector, 'gim.dev/job-id=example-0001');
    await watching(s, from);
    s.fake.cluster.setJobCondition(name, { type: 'Complete' });
    assert.equal((await handle.done).outcome, 'succeeded');
  });

  test('adopt: the newest attempt; an ended Job decided without a watch; none, or an older attempt only: null', async () => {
    const s = await setup();
    const first = await s.runner.start(await request(s, 1));
    const req2 = await request(s, 2);
    const second = await s.runner.start(req2);
    s.runner.detachAll();
    s.fake.cluster.setJobCondition(first.ref, { type: 'Failed', reason: 'BackoffLimitExceeded' });
    s.fake.cluster.setJobCondition(second.ref, { type: 'Failed', reason: 'DeadlineExceeded' });

    const runner = s.restart();
    const from = s.fake.calls.length;
    const adopted = await runner.adopt(req2.job, req2.paths);
    assert.equal(adopted?.ref, second.ref);
    assert.deepEqual(
      [(await adopted!.done).outcome, (await adopted!.done).reason],
      ['failed', 'deadline'],
    );
    assert.equal(s.fake.calls.slice(from).filter((c) => c.verb === 'watch').length, 0);

    // The record is at attempt 3, whose Job was never made: not attempt 2's Job.
    const req3 = await request(s, 3);
    assert.equal(await runner.adopt(req3.job, req3.paths), null);
    const other = await request(s, 1, 'never-started');
    assert.equal(await runner.adopt(other.job, other.paths), null);
  });
});

describe('KubernetesRunner and LeaderLease: API calls', { timeout: 20_000 }, () => {
  test('every call made is granted by KUBERNETES_RUNNER_API_CALLS (k8s/base/rbac.yaml), and every grant was used', async () => {
    // The Lease's calls, as the job controller's election makes them.
    const s = await setup();
    let leading!: () => void;
    const started = new Promise<void>((resolve) => (leading = resolve));
    const lease = new LeaderLease({
      api: s.api,
      namespace: 'gim',
      identity: 'gim-serve-0',
      leaseDurationSeconds: 1,
      renewDeadlineMs: 500,
      retryPeriodMs: 50,
      onStartedLeading: () => leading(),
    });
    lease.start();
    await started;
    const renewals = s.fake.calls.length;
    await s.fake.waitForCall((c) => c.verb === 'update' && c.resource === 'leases', renewals);
    await lease.stop();
    for (const close of open.splice(0)) await close();

    const granted = new Set(
      KUBERNETES_RUNNER_API_CALLS.flatMap((c) =>
        c.verbs.map((v) => `${v} ${c.apiGroup}/${c.resource}`),
      ),
    );
    const called = new Set(allCalls.map((c) => `${c.verb} ${c.apiGroup}/${c.resource}`));
    assert.deepEqual(
      [...called].filter((c) => !granted.has(c)),
      [],
      'called without a grant',
    );
    assert.deepEqual(
      [...granted].filter((g) => !called.has(g)),
      [],
      'granted but never called',
    );
  });
});

after(async () => {
  for (const close of open.splice(0)) await close();
});
