/**
 * The job controller and the local runner with real child processes: a stand-in trainer
 * (test/fixtures/jobs/fake-trainer.mjs) that speaks the trainer contract (NDJSON progress, exit
 * 0 / 2 / 3) in milliseconds, so every path of the state machine runs for real: success,
 * concurrency limits, graceful and forced cancel, retry with resume, bad input, publish conflict,
 * crash, out of memory, deadline, shutdown hand-back and recovery after an API restart.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { JobController } from '../../src/jobs/job-controller.js';
import type { JobRecord, JobStatus } from '../../src/jobs/job-record.js';
import type { JobPlan } from '../../src/jobs/job-spec.js';
import { JobStore } from '../../src/jobs/job-store.js';
import { LocalRunner } from '../../src/jobs/local-runner.js';

const FAKE = new URL('../fixtures/jobs/fake-trainer.mjs', import.meta.url).pathname;
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function setup(opts: { maxRunning?: number; stopGraceMs?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'gim-jobs-'));
  dirs.push(dir);
  const store = new JobStore(dir);
  const controller = makeController(store, opts);
  await controller.start();
  return { dir, store, controller };
}

function makeController(store: JobStore, opts: { maxRunning?: number; stopGraceMs?: number } = {}) {
  const runner = new LocalRunner({
    cli: { nodeArgs: [], entry: FAKE },
    env: { ...process.env },
    niceness: 5,
    stopGraceMs: opts.stopGraceMs ?? 5_000,
  });
  return new JobController({ store, runner, maxRunning: opts.maxRunning ?? 1, pollMs: 20 });
}

function plan(
  model: string,
  scenario: string,
  extra: Partial<JobPlan> & { trainerArgs?: string[] } = {},
): JobPlan {
  const { trainerArgs = [], ...rest } = extra;
  return {
    kind: 'encoder',
    model,
    spec: { scenario },
    args: ['train', 'image', `--name=${model}`, `--scenario=${scenario}`, ...trainerArgs],
    timeoutSeconds: 60,
    maxResumes: 2,
    ...rest,
  };
}

async function waitStatus(
  controller: JobController,
  id: string,
  statuses: JobStatus[],
  ms = 20_000,
): Promise<JobRecord> {
  const until = Date.now() + ms;
  for (;;) {
    const job = await controller.get(id);
    if (statuses.includes(job.status)) return job;
    assert.ok(
      Date.now() < until,
      `job ${id} is ${job.status}, expected ${statuses.join('|')}: ${job.message}`,
    );
    await sleep(20);
  }
}

async function statusTrail(store: JobStore, id: string): Promise<string[]> {
  return (await store.readEvents(id))
    .filter((e) => e.type === 'status')
    .map((e) => String(e.status));
}

test('a job runs to success: every state in order, progress copied, the version recorded', async () => {
  const { controller, store } = await setup();
  const { job, created } = await controller.submit(plan('m1', 'ok'), { by: 'test' });
  assert.equal(created, true);
  assert.equal(job.status, 'queued');
  const done = await controller.waitFor(job.id, 20_000);
  assert.equal(done.status, 'succeeded', done.message);
  assert.deepEqual(await statusTrail(store, job.id), [
    'queued',
    'starting',
    'running',
    'publishing',
    'succeeded',
  ]);
  const events = await store.readEvents(job.id);
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i + 1),
    'seq is the line number',
  );
  const progress = events.filter((e) => e.type === 'progress');
  assert.equal(progress.length, 3);
  assert.deepEqual(progress[0]?.losses, [2.4, 2.5]);
  assert.equal(progress[0]?.unitName, 'patches');
  assert.deepEqual(done.result?.published, {
    kind: 'stack',
    name: 'm1',
    version: 2,
    labels: ['latest'],
  });
  assert.deepEqual((done.result?.summary as { finalLosses: number[] }).finalLosses, [2.2, 2.3]);
  assert.equal(done.progress?.globalStep, 3);
  assert.equal(done.attempts.length, 1);
  assert.equal(done.attempts[0]?.exitCode, 0);
  assert.equal(done.attempts[0]?.resume, false);
  assert.match(await store.readLog(job.id), /fake trainer: ok, from step 0/);
});

test('one job per model and maxRunning in all: the rest wait queued, then run', async () => {
  const { controller } = await setup({ maxRunning: 2 });
  const a = (
    await controller.submit(plan('m1', 'ok', { trainerArgs: ['--steps=20', '--step-ms=20'] }), {
      by: 't',
    })
  ).job;
  const b = (await controller.submit(plan('m1', 'ok'), { by: 't' })).job;
  const c = (
    await controller.submit(plan('m2', 'ok', { trainerArgs: ['--steps=20', '--step-ms=20'] }), {
      by: 't',
    })
  ).job;
  const d = (await controller.submit(plan('m3', 'ok'), { by: 't' })).job;
  await waitStatus(controller, a.id, ['running', 'publishing']);
  await waitStatus(controller, c.id, ['running', 'publishing']);
  // m1 is busy (b waits for a) and two jobs run (d waits for a slot).
  assert.equal((await controller.get(b.id)).status, 'queued');
  assert.equal((await controller.get(d.id)).status, 'queued');
  for (const job of [a, b, c, d])
    assert.equal((await controller.waitFor(job.id, 30_000)).status, 'succeeded');
  const bStarted = Date.parse((await controller.get(b.id)).startedAt ?? '');
  assert.ok(
    bStarted >= Date.parse((await controller.get(a.id)).finishedAt ?? ''),
    'b started after a finished',
  );
});

test('graceful cancel: checkpoint, cancelled; retry resumes from the checkpoint and succeeds', async () => {
  const { controller, store } = await setup();
  const { job } = await controller.submit(
    plan('m1', 'ok', { trainerArgs: ['--steps=400', '--step-ms=10'] }),
    { by: 't' },
  );
  await waitStatus(controller, job.id, ['running']);
  await sleep(100);
  const cancelling = await controller.cancel(job.id, {
    force: false,
    by: 'alice',
    reason: 'wrong data',
  });
  assert.equal(cancelling.status, 'cancelling');
  const cancelled = await controller.waitFor(job.id, 20_000);
  assert.equal(cancelled.status, 'cancelled');
  assert.equal(cancelled.attempts[0]?.exitCode, 3);
  assert.equal(cancelled.cancel?.by, 'alice');
  const checkpoints = (await store.readEvents(job.id)).filter((e) => e.type === 'checkpoint');
  assert.equal(checkpoints.at(-1)?.reason, 'cancel');
  const stoppedAt = Number(checkpoints.at(-1)?.globalStep);
  assert.ok(stoppedAt > 0 && stoppedAt < 400, `stopped mid-run at ${stoppedAt}`);
  assert.equal(cancelled.result?.published, undefined, 'nothing published');
  await assert.rejects(controller.cancel(job.id, { force: false, by: 'a' }), { code: 'conflict' });

  const retried = await controller.retry(job.id, 'bob');
  assert.equal(retried.status, 'queued');
  const done = await controller.waitFor(job.id, 30_000);
  assert.equal(done.status, 'succeeded', done.message);
  assert.equal(done.attempts.length, 2);
  assert.equal(done.attempts[1]?.resume, true);
  const starts = (await store.readLog(job.id)).match(/from step \d+/g);
  assert.deepEqual(starts, ['from step 0', `from step ${stoppedAt}`]);
});

test('forced cancel kills a trainer that ignores SIGTERM', async () => {
  const { controller } = await setup();
  const { job } = await controller.submit(plan('m1', 'hang', { trainerArgs: ['--step-ms=20'] }), {
    by: 't',
  });
  await waitStatus(controller, job.id, ['running']);
  await controller.cancel(job.id, { force: false, by: 't' });
  await sleep(300);
  assert.equal(
    (await controller.get(job.id)).status,
    'cancelling',
    'still checkpointing (it ignores SIGTERM)',
  );
  await controller.cancel(job.id, { force: true, by: 't' });
  const done = await controller.waitFor(job.id, 10_000);
  assert.equal(done.status, 'cancelled');
  assert.equal(done.attempts[0]?.signal, 'SIGKILL');
});

test('how a trainer ends maps to a failure reason; bad input cannot be retried', async () => {
  const { controller } = await setup({ maxRunning: 4 });
  const cases: [string, string][] = [
    ['bad', 'bad_input'],
    ['conflict', 'publish_conflict'],
    ['crash', 'runner_error'],
    ['oom', 'out_of_memory'],
  ];
  const jobs = await Promise.all(
    cases.map(([s], i) => controller.submit(plan(`m${i}`, s), { by: 't' })),
  );
  for (const [i, [scenario, reason]] of cases.entries()) {
    const done = await controller.waitFor(jobs[i]!.job.id, 20_000);
    assert.equal(done.status, 'failed', scenario);
    assert.equal(done.reason, reason, scenario);
  }
  const bad = await controller.get(jobs[0]!.job.id);
  assert.match(bad.message ?? '', /no dataset/);
  await assert.rejects(controller.retry(bad.id, 't'), { code: 'conflict' });
  // A crash can be retried (and fails again the same way).
  await controller.retry(jobs[2]!.job.id, 't');
  assert.equal((await controller.waitFor(jobs[2]!.job.id, 20_000)).attempts.length, 2);
});

test('past timeout_seconds the trainer is killed: failed, deadline', async () => {
  const { controller } = await setup();
  const { job } = await controller.submit(plan('m1', 'hang', { timeoutSeconds: 1 }), { by: 't' });
  const done = await controller.waitFor(job.id, 20_000);
  assert.equal(done.status, 'failed');
  assert.equal(done.reason, 'deadline');
});

test('shutdown hands the trainer back (interrupted); the next controller resumes it', async () => {
  const { controller, store } = await setup();
  const { job } = await controller.submit(
    plan('m1', 'ok', { trainerArgs: ['--steps=400', '--step-ms=10'] }),
    { by: 't' },
  );
  await waitStatus(controller, job.id, ['running']);
  await sleep(100);
  await controller.drain();
  const handedBack = await controller.get(job.id);
  assert.equal(handedBack.status, 'interrupted', handedBack.message);
  await assert.rejects(controller.submit(plan('m2', 'ok'), { by: 't' }), { code: 'shutting_down' });

  const next = makeController(store);
  await next.start();
  const done = await next.waitFor(job.id, 30_000);
  assert.equal(done.status, 'succeeded', done.message);
  assert.equal(done.resumes, 1);
  assert.equal(done.attempts[1]?.resume, true);
  assert.deepEqual(await statusTrail(store, job.id), [
    'queued',
    'starting',
    'running',
    'interrupted',
    'queued',
    'starting',
    'running',
    'publishing',
    'succeeded',
  ]);
});

test('after an API crash the orphaned trainer is stopped at a checkpoint and the job resumes', async () => {
  const { dir, controller: first, store } = await setup();
  // What a crashed API leaves: a running job whose trainer (started by it) still runs.
  const { job } = await first.submit(plan('m9', 'ok', { trainerArgs: ['--steps=1'] }), { by: 't' });
  await first.waitFor(job.id, 20_000);
  const paths = store.paths(job.id);
  await mkdir(paths.checkpoint, { recursive: true });
  const orphan = spawn(
    process.execPath,
    [
      FAKE,
      '--scenario=ok',
      '--steps=400',
      '--step-ms=10',
      `--progress-json=${paths.progress}`,
      `--checkpoint-dir=${paths.checkpoint}`,
    ],
    { stdio: 'ignore', detached: true },
  );
  orphan.unref();
  await sleep(200);
  const running: JobRecord = {
    ...(await store.read(job.id))!,
    status: 'running',
    result: undefined,
    attempts: [
      {
        n: 1,
        resume: false,
        startedAt: new Date().toISOString(),
        runnerRef: String(orphan.pid),
        progressOffset: 0,
      },
    ],
  };
  delete running.finishedAt;
  await store.write(running);

  const restarted = makeController(new JobStore(dir));
  await restarted.start();
  const done = await restarted.waitFor(job.id, 30_000);
  assert.equal(done.status, 'succeeded', done.message);
  assert.equal(done.attempts[0]?.outcome, 'interrupted');
  assert.equal(done.attempts[1]?.resume, true);
  assert.throws(() => process.kill(orphan.pid!, 0), 'the orphan is gone');
});

test('Idempotency-Key: a retried submit returns the same job; another spec with it is a conflict', async () => {
  const { controller } = await setup();
  const first = await controller.submit(plan('m1', 'ok'), { by: 't', idempotencyKey: 'k-1' });
  const again = await controller.submit(plan('m1', 'ok'), { by: 't', idempotencyKey: 'k-1' });
  assert.equal(again.created, false);
  assert.equal(again.job.id, first.job.id);
  await assert.rejects(controller.submit(plan('m1', 'bad'), { by: 't', idempotencyKey: 'k-1' }), {
    code: 'conflict',
  });
  assert.equal((await controller.list({ model: 'm1' })).length, 1);
  await controller.waitFor(first.job.id, 20_000);
  await controller.remove(first.job.id);
  await assert.rejects(controller.get(first.job.id), { code: 'not_found' });
  // The key is free again once its job is deleted.
  assert.equal(
    (await controller.submit(plan('m1', 'ok'), { by: 't', idempotencyKey: 'k-1' })).created,
    true,
  );
});

test('a queued job is cancelled at once; an active job cannot be deleted', async () => {
  const { controller } = await setup();
  const a = (
    await controller.submit(plan('m1', 'ok', { trainerArgs: ['--steps=50', '--step-ms=20'] }), {
      by: 't',
    })
  ).job;
  const b = (await controller.submit(plan('m1', 'ok'), { by: 't' })).job;
  await waitStatus(controller, a.id, ['running']);
  await assert.rejects(controller.remove(a.id), { code: 'conflict' });
  assert.equal((await controller.cancel(b.id, { force: false, by: 't' })).status, 'cancelled');
  assert.equal((await controller.waitFor(a.id, 20_000)).status, 'succeeded');
  assert.equal((await controller.get(b.id)).attempts.length, 0, 'b never ran');
});
