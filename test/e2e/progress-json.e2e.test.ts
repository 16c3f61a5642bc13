import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gim, spawnGim } from '../helpers/cli.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const FIXTURE = join(ROOT, 'test/fixtures/fashion-mnist-mini');

type Event = Record<string, unknown> & { type: string; v: number; t: string };

/** Every line of an events file, each checked to be a complete JSON event. */
async function readEvents(path: string): Promise<Event[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), 'the last line is complete');
  return text
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      const e = JSON.parse(line) as Event;
      assert.equal(e.v, 1, line);
      assert.ok(!Number.isNaN(Date.parse(e.t)), `t of ${line}`);
      assert.equal(typeof e.type, 'string', line);
      return e;
    });
}

/** Asserts `types` occur in `events` in this order (other events may come between). */
function assertInOrder(events: Event[], types: string[]): void {
  let at = 0;
  for (const e of events) if (e.type === types[at]) at++;
  assert.equal(at, types.length, `expected ${types.join(' < ')} in ${events.map((e) => e.type)}`);
}

/** Waits (polling the file) until an event of this type is in it. */
async function waitForEvent(path: string, type: string, exited: () => boolean): Promise<void> {
  while (!(await readEvents(path)).some((e) => e.type === type)) {
    assert.ok(!exited(), `the process exited before a ${type} event`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const trainArgs = (dir: string, name: string, events: string, extra: string[] = []) => [
  'train',
  'image',
  '--data',
  FIXTURE,
  '--name',
  name,
  '--models-dir',
  join(dir, 'models'),
  '--channels',
  '4,8,8',
  '--batch-size',
  '8',
  '--checkpoint-dir',
  join(dir, `ck-${name}`),
  '--progress-json',
  events,
  ...extra,
];

describe('gim --progress-json, signals and exit codes', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gim-progress-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('train: start, progress, epoch, checkpoint, published, result, end(succeeded) in order', async () => {
    const events = join(dir, 'a.ndjson');
    await gim(
      trainArgs(dir, 'tiny', events, ['--epochs', '2', '--max-steps-per-epoch', '3', '--resume']),
    );
    const got = await readEvents(events);
    assert.equal(got[0]?.type, 'start');
    assert.equal(got.at(-1)?.type, 'end');
    assertInOrder(got, ['start', 'progress', 'epoch', 'checkpoint', 'published', 'result', 'end']);
    assert.deepEqual(
      { ...got[0], t: undefined },
      {
        v: 1,
        t: undefined,
        type: 'start',
        command: 'train',
        modality: 'image',
        name: 'tiny',
        pid: got[0]?.pid,
        resumed: false,
      },
    );
    assert.ok(Number.isInteger(got[0]?.pid));
    const progress = got.filter((e) => e.type === 'progress');
    // Throttled to one a second, but the first step and each epoch's last step always go.
    assert.ok(progress.some((p) => p.globalStep === 3 && p.step === 3 && p.epoch === 1));
    assert.ok(progress.some((p) => p.globalStep === 6 && p.epoch === 2));
    for (const p of progress) {
      assert.equal(p.module, null);
      assert.equal(p.totalSteps, 6);
      assert.equal((p.losses as unknown[]).length, 3);
      assert.ok((p.losses as unknown[]).every((l) => typeof l === 'number'));
    }
    assert.deepEqual(
      got.filter((e) => e.type === 'checkpoint').map((e) => [e.globalStep, e.reason]),
      [
        [3, 'epoch'],
        [6, 'epoch'],
      ],
    );
    assert.ok(
      got.some((e) => e.type === 'log' && /no checkpoint in .*starting fresh/.test(String(e.line))),
    );
    const published = got.find((e) => e.type === 'published');
    assert.deepEqual(
      { ...published, t: undefined },
      {
        v: 1,
        t: undefined,
        type: 'published',
        kind: 'stack',
        name: 'tiny',
        version: 1,
        labels: ['latest'],
      },
    );
    const result = got.find((e) => e.type === 'result');
    assert.equal(result?.steps, 6);
    assert.equal((result?.finalLosses as unknown[]).length, 3);
    assert.deepEqual(
      { ...got.at(-1), t: undefined },
      { v: 1, t: undefined, type: 'end', status: 'succeeded', exitCode: 0 },
    );
  });

  test('SIGTERM: checkpoint at that step, end cancelled, exit 3, nothing published; --resume continues and publishes', async () => {
    const events = join(dir, 'b.ndjson');
    const args = trainArgs(dir, 'stopped', events, [
      '--epochs',
      '3',
      '--max-steps-per-epoch',
      '30',
      '--resume',
    ]);
    const run = spawnGim(args);
    let exited = false;
    void run.exit.then(() => (exited = true));
    await waitForEvent(events, 'progress', () => exited);
    run.child.kill('SIGTERM');
    assert.equal(await run.exit, 3);

    const first = await readEvents(events);
    assert.equal(first.at(-1)?.type, 'end');
    assert.deepEqual(
      { ...first.at(-1), t: undefined },
      { v: 1, t: undefined, type: 'end', status: 'cancelled', exitCode: 3 },
    );
    const stop = first.at(-2);
    assert.equal(stop?.type, 'checkpoint');
    assert.equal(stop?.reason, 'cancel');
    const at = stop?.globalStep as number;
    assert.ok(at >= 1 && at < 90, `stopped at step ${at}`);
    assert.ok(!first.some((e) => e.type === 'published' || e.type === 'result'));
    assert.ok(first.some((e) => e.type === 'log' && /SIGTERM/.test(String(e.line))));
    const latest = JSON.parse(await readFile(join(dir, 'ck-stopped', 'latest.json'), 'utf8'));
    assert.equal(latest.step, at, 'the checkpoint on disk is the one announced');
    const models = await readdir(join(dir, 'models')).catch((): string[] => []);
    assert.ok(!models.includes('stopped'), `no version of the stopped stack: ${models}`);

    await gim(args);
    const all = await readEvents(events);
    assert.deepEqual(all.slice(0, first.length), first, 'the second attempt appends');
    const second = all.slice(first.length);
    assert.equal(second[0]?.type, 'start');
    assert.equal(second[0]?.resumed, true);
    assert.equal(second[0]?.resumeStep, at);
    const steps = second.filter((e) => e.type === 'progress').map((e) => e.globalStep as number);
    assert.ok(
      steps.length > 0 && Math.min(...steps) === at + 1,
      `resumed at ${Math.min(...steps)}`,
    );
    assertInOrder(second, ['start', 'published', 'result', 'end']);
    assert.equal(second.find((e) => e.type === 'published')?.version, 1);
    assert.equal(second.find((e) => e.type === 'result')?.steps, 90);
    assert.equal(second.at(-1)?.status, 'succeeded');
    // Published: the checkpoint is gone, so a later --resume starts fresh, not republishes.
    assert.deepEqual(await readdir(join(dir, 'ck-stopped')), []);
  });

  test('bad input: exit 2 and end failed with invalid_argument, before and after the command starts', async () => {
    const events = join(dir, 'c.ndjson');
    await assert.rejects(
      gim(trainArgs(dir, 'bad', events, ['--batch-size', '100000'])),
      (e: { code: number }) => e.code === 2,
    );
    const got = await readEvents(events);
    assert.equal(got[0]?.type, 'start');
    const end = got.at(-1);
    assert.equal(end?.status, 'failed');
    assert.equal(end?.exitCode, 2);
    assert.equal((end?.error as { code: string }).code, 'invalid_argument');
    assert.match((end?.error as { message: string }).message, /fewer than one batch/);

    // Rejected by the option parser (a batch needs 2 items): the stream still gets its end.
    const usage = join(dir, 'c-usage.ndjson');
    await assert.rejects(
      gim(trainArgs(dir, 'bad', usage, ['--batch-size', '1'])),
      (e: { code: number }) => e.code === 2,
    );
    const ended = await readEvents(usage);
    assert.deepEqual(
      ended.map((e) => [e.type, e.status, e.exitCode, (e.error as { code: string }).code]),
      [['end', 'failed', 2, 'invalid_argument']],
    );
  });

  test('classifier train and probe: start, progress, result, end', async () => {
    const models = join(dir, 'models');
    const head = join(dir, 'd-head.ndjson');
    await gim([
      'classifier',
      'train',
      '--model',
      'tiny',
      '--layer',
      '3',
      '--data',
      FIXTURE,
      '--name',
      'clothes',
      '--epochs',
      '2',
      '--models-dir',
      models,
      '--progress-json',
      head,
    ]);
    const h = await readEvents(head);
    assert.deepEqual(
      [h[0]?.type, h[0]?.command, h[0]?.name],
      ['start', 'classifier-train', 'clothes'],
    );
    assertInOrder(h, ['start', 'progress', 'published', 'result', 'end']);
    const fits = h.filter((e) => e.type === 'progress');
    assert.deepEqual(
      fits.map((e) => [e.epoch, e.module]),
      [
        [1, 3],
        [2, 3],
      ],
    );
    assert.deepEqual(
      { ...h.find((e) => e.type === 'published'), t: undefined },
      {
        v: 1,
        t: undefined,
        type: 'published',
        kind: 'head',
        name: 'clothes',
        model: 'tiny',
        version: 1,
        labels: ['latest'],
      },
    );
    const metrics = h.find((e) => e.type === 'result')?.metrics as Record<
      string,
      { accuracy: number } | null
    >;
    assert.ok(metrics.train!.accuracy >= 0 && metrics.train!.accuracy <= 1);
    assert.equal(typeof metrics.validation?.accuracy, 'number');
    assert.equal(h.at(-1)?.status, 'succeeded');

    // `-`: the events on stdout, the human rows on stderr.
    const { stdout, stderr } = await gim([
      'probe',
      '--model',
      'tiny',
      '--data',
      FIXTURE,
      '--layers',
      '2,3',
      '--pooling',
      'mean',
      '--epochs',
      '2',
      '--limit',
      '100',
      '--models-dir',
      models,
      '--progress-json',
      '-',
    ]);
    assert.match(stderr, /best: layer/);
    const p = stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Event);
    assert.deepEqual([p[0]?.type, p[0]?.command], ['start', 'probe']);
    assertInOrder(p, ['start', 'progress', 'result', 'end']);
    const result = p.find((e) => e.type === 'result');
    assert.deepEqual(
      (result?.rows as { layer: number }[]).map((r) => r.layer),
      [2, 3],
    );
    assert.equal(typeof (result?.best as { testAccuracy: number }).testAccuracy, 'number');
    assert.equal(p.at(-1)?.status, 'succeeded');
  });
});
