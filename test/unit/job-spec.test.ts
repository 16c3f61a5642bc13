import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { JobRecord } from '../../src/jobs/job-record.js';
import { planJob } from '../../src/jobs/job-spec.js';
import { type JobPaths, trainerArgs } from '../../src/jobs/runner.js';

let root: string;
let dataRoot: string;
const opts = () => ({ dataRoot, defaultTimeoutSeconds: 3600, defaultMaxResumes: 2 });

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'gim-spec-'));
  dataRoot = join(root, 'data');
  await mkdir(join(dataRoot, 'shoes', 'train'), { recursive: true });
  await mkdir(join(root, 'secret'), { recursive: true });
  await writeFile(join(root, 'secret', 'key'), 'x');
  await symlink(join(root, 'secret'), join(dataRoot, 'escape'));
});
after(() => rm(root, { recursive: true, force: true }));

test('an encoder spec becomes the gim train command, paths resolved under the data root', async () => {
  const plan = await planJob(
    {
      kind: 'encoder',
      model: 'shoes',
      spec: {
        data: 'shoes/train',
        epochs: 2,
        channels: [8, 16],
        parent: 'stable',
        from_module: 2,
        labels: ['latest', 'candidate'],
        height: 28,
        width: 28,
        image_channels: '1',
      },
      timeout_seconds: 600,
    },
    opts(),
  );
  assert.equal(plan.kind, 'encoder');
  assert.equal(plan.timeoutSeconds, 600);
  assert.equal(plan.maxResumes, 2);
  assert.deepEqual(plan.args, [
    'train',
    'image',
    '--name=shoes',
    `--data=${join(dataRoot, 'shoes/train')}`,
    '--epochs=2',
    '--parent=shoes@stable',
    '--from-module=2',
    '--channels=8,16',
    '--height=28',
    '--width=28',
    '--image-channels=1',
    '--label',
    'latest',
    'candidate',
  ]);
  assert.equal(plan.spec.modality, 'image');
});

test('an encoder spec takes the vision recipe options of gim train image', async () => {
  const plan = await planJob(
    {
      kind: 'encoder',
      model: 'fashion-gim',
      spec: {
        data: 'fashion-mnist',
        channels: [32, 64, 128],
        strides: [1, 2, 1],
        residual_kernels: [3, 3, 1],
        epochs: 2,
        loss_norm: 'layer',
        lr_schedule: 'cosine',
        negatives_from: 'item',
        directions: ['down', 'up'],
        offsets: [2, 3],
        patch_flip: true,
        patch_jitter: 1,
        patch_stride: 4,
      },
    },
    opts(),
  );
  for (const arg of [
    '--channels=32,64,128',
    '--strides=1,2,1',
    '--residual-kernels=3,3,1',
    '--loss-norm=layer',
    '--lr-schedule=cosine',
    '--negatives-from=item',
    '--directions=down,up',
    '--offsets=2,3',
    '--patch-flip',
    '--patch-jitter=1',
    '--patch-stride=4',
  ])
    assert.ok(plan.args.includes(arg), `${arg} in ${plan.args.join(' ')}`);
  await assert.rejects(
    planJob(
      { kind: 'encoder', model: 'm', spec: { data: 'fashion-mnist', loss_norm: 'batch' } },
      opts(),
    ),
    /loss_norm/,
  );
});

test('an audio encoder spec takes the common recipe options (loss_norm), not the image-only ones', async () => {
  const audio = await planJob(
    {
      kind: 'encoder',
      model: 'voices',
      spec: { modality: 'audio', data: 'shoes/train', loss_norm: 'layer', negatives: 32 },
    },
    opts(),
  );
  assert.deepEqual(audio.args.slice(0, 2), ['train', 'audio']);
  for (const arg of ['--loss-norm=layer', '--negatives=32'])
    assert.ok(audio.args.includes(arg), `${arg} in ${audio.args.join(' ')}`);
  await assert.rejects(
    planJob(
      {
        kind: 'encoder',
        model: 'voices',
        spec: { modality: 'audio', data: 'shoes/train', patch_stride: 3 },
      },
      opts(),
    ),
    /patch_stride/,
  );
});

test('head and probe specs become gim classifier train / gim probe on a stack ref', async () => {
  const head = await planJob(
    {
      kind: 'head',
      model: 'shoes',
      spec: { name: 'kinds', data: 'fashion-mnist', layer: 3, pooling: 'grid2', label: 'stable' },
    },
    opts(),
  );
  assert.deepEqual(head.args, [
    'classifier',
    'train',
    '--model=shoes@stable',
    '--name=kinds',
    '--data=fashion-mnist',
    '--layer=3',
    '--pooling=grid2',
  ]);
  // Training-recipe fields of encoders are not head fields (gim classifier train has no such flag).
  for (const field of ['lr_schedule', 'negatives_from'])
    await assert.rejects(
      planJob(
        {
          kind: 'head',
          model: 'shoes',
          spec: { name: 'kinds', data: 'fashion-mnist', layer: 3, [field]: 'cosine' },
        },
        opts(),
      ),
      new RegExp(field),
    );
  const probe = await planJob(
    { kind: 'probe', model: 'shoes', spec: { data: 'shoes/train', layers: [1, 2], version: 3 } },
    opts(),
  );
  assert.deepEqual(probe.args, [
    'probe',
    '--model=shoes@3',
    `--data=${join(dataRoot, 'shoes/train')}`,
    '--layers=1,2',
  ]);
});

test('dataset paths may not leave the data root, and the refusal tells nothing about the server', async () => {
  const cases: [unknown, RegExp][] = [
    ['/etc', /absolute path/],
    ['../secret', /leaves the data root/],
    ['shoes/../../secret', /leaves the data root/],
    ['escape', /leaves the data root/],
    ['escape/key', /leaves the data root/],
    ['nope', /no dataset "nope" under the data root/],
    ['a\0b', /not a path/],
  ];
  for (const [data, message] of cases) {
    await assert.rejects(
      planJob({ kind: 'probe', model: 'shoes', spec: { data } }, opts()),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'invalid_argument', String(data));
        assert.match(e.message, message, String(data));
        assert.ok(!e.message.includes(root), `the message shows no server path: ${e.message}`);
        assert.ok(!e.message.includes('key'), `the message lists no file: ${e.message}`);
        return true;
      },
    );
  }
});

test('bad bodies are 400s that say what to send', async () => {
  const cases: [unknown, RegExp][] = [
    [null, /JSON object/],
    [{ kind: 'nope', model: 'm' }, /"kind" must be one of encoder, head, probe/],
    [{ kind: 'encoder', model: 'Bad Name', spec: {} }, /"model" must be a stack name/],
    [
      { kind: 'encoder', model: 'm', spec: { data: 'shoes', colour: 1 } },
      /unknown field "spec.colour"/,
    ],
    [{ kind: 'encoder', model: 'm', spec: {} }, /"spec.data" is required/],
    [
      { kind: 'encoder', model: 'm', spec: { data: 'shoes', epochs: '2' } },
      /"spec.epochs" must be a number/,
    ],
    [{ kind: 'encoder', model: 'm', spec: { data: 'shoes', schedule: 'fast' } }, /one of parallel/],
    [
      { kind: 'encoder', model: 'm', spec: { data: 'shoes', parent: '../x' } },
      /version number or a label/,
    ],
    [
      { kind: 'encoder', model: 'm', spec: { data: 'shoes' }, timeout_seconds: 0 },
      /timeout_seconds/,
    ],
    [{ kind: 'encoder', model: 'm', spec: { data: 'shoes', labels: [] } }, /"spec.labels"/],
    [{ kind: 'head', model: 'm', spec: { data: 'shoes', layer: 1 } }, /"spec.name" is required/],
    [{ kind: 'probe', model: 'm', spec: { data: 'shoes', version: 1, label: 'x' } }, /not both/],
    [{ kind: 'probe', model: 'm', extra: 1 }, /unknown field "extra"/],
  ];
  for (const [body, message] of cases)
    await assert.rejects(
      planJob(body, opts()),
      { code: 'invalid_argument', message },
      JSON.stringify(body),
    );
});

test('a promote spec becomes gim promote; an encoder spec carries its promotion for later', async () => {
  const gate = { data: 'shoes/train', layers: [2, 3], pooling: 'grid2', epochs: 5, margin: 0.01 };
  const plan = await planJob(
    {
      kind: 'promote',
      model: 'shoes',
      spec: { version: 4, label: 'stable', gate, retrain_heads: true, reason: 'weekly' },
    },
    opts(),
  );
  assert.deepEqual(plan.args, [
    'promote',
    '--model=shoes@4',
    '--label=stable',
    '--retrain-heads',
    '--reason=weekly',
    `--gate-data=${join(dataRoot, 'shoes/train')}`,
    '--gate-layers=2,3',
    '--gate-pooling=grid2',
    '--gate-epochs=5',
    '--margin=0.01',
  ]);
  const encoder = await planJob(
    {
      kind: 'encoder',
      model: 'shoes',
      spec: { data: 'shoes/train', promote: { gate, dry_run: true } },
    },
    opts(),
  );
  assert.deepEqual(encoder.args, [
    'train',
    'image',
    '--name=shoes',
    `--data=${join(dataRoot, 'shoes/train')}`,
  ]);
  assert.deepEqual(encoder.promoteArgs, [
    '--dry-run',
    `--gate-data=${join(dataRoot, 'shoes/train')}`,
    '--gate-layers=2,3',
    '--gate-pooling=grid2',
    '--gate-epochs=5',
    '--margin=0.01',
  ]);
  const refused = async (body: unknown, message: RegExp) =>
    assert.rejects(planJob(body, opts()), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'invalid_argument');
      assert.match(e.message, message);
      return true;
    });
  await refused({ kind: 'promote', model: 'shoes', spec: {} }, /spec\.version" is required/);
  await refused(
    { kind: 'promote', model: 'shoes', spec: { version: 2, gate: { layers: [1] } } },
    /spec\.gate\.data" is required/,
  );
  await refused(
    { kind: 'promote', model: 'shoes', spec: { version: 2, gate: { data: '../secret' } } },
    /spec\.gate\.data" leaves the data root/,
  );
  await refused(
    { kind: 'encoder', model: 'shoes', spec: { data: 'shoes/train', promote: { version: 3 } } },
    /unknown field "spec\.promote\.version"/,
  );
  await refused(
    { kind: 'promote', model: 'shoes', spec: { version: 2, label: 'Stable!' } },
    /spec\.label" must be a label/,
  );
});

test('trainerArgs: an encoder job with a published version and a promotion runs gim promote', () => {
  const job = {
    id: 'j1',
    kind: 'encoder',
    model: 'shoes',
    args: ['train', 'image', '--name=shoes'],
    promoteArgs: ['--label=stable'],
    createdBy: 'token:abc',
  } as unknown as JobRecord;
  const request = (j: JobRecord, resume: boolean) =>
    trainerArgs({ job: j, attempt: 1, resume, paths: {} as JobPaths }, '/jobs/j1');
  assert.deepEqual(request(job, true), [
    'train',
    'image',
    '--name=shoes',
    '--progress-json=/jobs/j1/progress.ndjson',
    '--checkpoint-dir=/jobs/j1/checkpoint',
    '--resume',
  ]);
  const published = {
    ...job,
    result: { published: { kind: 'stack', name: 'shoes', version: 7, labels: ['latest'] } },
  } as JobRecord;
  assert.deepEqual(request(published, true), [
    'promote',
    '--model=shoes@7',
    '--label=stable',
    '--by=token:abc (job j1)',
    '--progress-json=/jobs/j1/progress.ndjson',
  ]);
});

test('a head spec passes early_stopping through; another rule is a 400', async () => {
  const spec = { name: 'h', data: 'shoes/train', layer: 2 };
  const plan = await planJob(
    { kind: 'head', model: 'shoes', spec: { ...spec, early_stopping: 'loss' } },
    opts(),
  );
  assert.ok(plan.args.includes('--early-stopping=loss'), plan.args.join(' '));
  await assert.rejects(
    planJob({ kind: 'head', model: 'shoes', spec: { ...spec, early_stopping: 'f1' } }, opts()),
    /"spec\.early_stopping" must be one of accuracy, loss/,
  );
});
