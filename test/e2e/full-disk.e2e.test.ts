/**
 * A real full disk: a small tmpfs (needs root, as CI runs the suite; skipped with the reason
 * otherwise; test/unit/store-faults.test.ts covers the same through the store's write seam and
 * always runs). The store publishes onto it with every amount of free space from none up to what
 * a version needs, and `gim train` publishes onto a full one: every failure must leave the
 * versions and labels as they were and say what filled up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { GimError } from '../../src/gim/errors.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { StackStore, type StackDraft } from '../../src/gim/store/stack-store.js';
import { gim } from '../helpers/cli.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { hiddenEntries, snapshot } from '../helpers/store-faults.js';

const run = promisify(execFile);
const FIXTURE = new URL('../fixtures/fashion-mnist-mini', import.meta.url).pathname;
const STACK_FILES = [
  'module-1/weights.bin',
  'module-1/model.json',
  'module-2/weights.bin',
  'module-2/model.json',
  'module-3/weights.bin',
  'module-3/model.json',
  'manifest.json',
  'labels.json',
];

let mountPoint = '';
/** Why the tests cannot run here, or '' when the tmpfs is mounted. */
let cannotMount = '';

before(async () => {
  mountPoint = await mkdtemp(join(tmpdir(), 'gim-full-disk-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]);
  } catch (e) {
    cannotMount = `cannot mount a tmpfs here (${(e as Error).message.split('\n')[0]})`;
  }
});

after(async () => {
  if (cannotMount === '') await run('umount', [mountPoint]);
  await rmdir(mountPoint);
});

/** Fills the tmpfs with a file outside `models/` until `pages` pages are left free. */
async function leaveFree(pages: number): Promise<void> {
  const filler = join(mountPoint, 'filler');
  await rm(filler, { force: true });
  const { bavail, bsize } = await statfs(mountPoint);
  await writeFile(filler, Buffer.alloc(Math.max(0, bavail - pages) * bsize));
  assert.equal((await statfs(mountPoint)).bavail, Math.min(pages, bavail));
}

describe('a full disk (tmpfs)', () => {
  let stack: EncoderStack;
  let draft: StackDraft;
  let models: string;

  before(async () => {
    await tf.setBackend('cpu');
    const adapter = defaultImageAdapter({ mean: [0.5], std: [0.3] });
    stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 1);
    draft = await untrainedDraft(stack, { backend: 'cpu' });
    models = join(mountPoint, 'models');
  });

  after(() => stack.dispose());

  test('a publish with 0, 1, 2, ... pages free fails at each file in turn, leaving versions and labels as they were', async (t) => {
    if (cannotMount) return t.skip(cannotMount);
    const store = new StackStore(models);
    await store.publish('fashion', draft, { labels: ['latest', 'stable'] });
    await store.publish('fashion', draft);
    const before = await snapshot(models);
    const failedAt: string[] = [];
    for (let pages = 0; ; pages++) {
      assert.ok(pages < 64, 'a version of the tiny stack needs far fewer pages');
      await leaveFree(pages);
      const outcome = await store.publish('fashion', draft).catch((e: unknown) => e);
      if (!(outcome instanceof GimError)) {
        assert.equal((outcome as { version: number }).version, 3);
        break;
      }
      assert.equal(outcome.code, 'io_error', outcome.message);
      const m =
        /^no space left on device \(ENOSPC\) while writing (\S+) of fashion@3; nothing was published( \(fashion@3 was withdrawn\))?: the versions and labels of stack 'fashion' are as they were$/.exec(
          outcome.message,
        );
      assert.ok(m, outcome.message);
      failedAt.push(m[1] as string);
      const after = await snapshot(models);
      assert.deepEqual(after, before, `with ${pages} pages free`);
      assert.deepEqual(hiddenEntries(after), []);
    }
    // Every failure came later in the publish than the one before, the last one at the labels.
    const order = failedAt.map((file) => STACK_FILES.indexOf(file));
    assert.ok(
      order.every((i, k) => i >= 0 && i >= (order[k - 1] ?? 0)),
      failedAt.join(', '),
    );
    assert.equal(failedAt[0], 'module-1/weights.bin');
    assert.equal(failedAt.at(-1), 'labels.json');
    assert.deepEqual((await store.list())[0]?.labels, { latest: 3, stable: 1 });
    await rm(models, { recursive: true });
  });

  test('gim train on a full disk exits 1 saying what filled up; the versions are as they were', async (t) => {
    if (cannotMount) return t.skip(cannotMount);
    await rm(join(mountPoint, 'filler'), { force: true });
    await rm(models, { recursive: true, force: true });
    await new StackStore(models).publish('tiny', draft, { labels: ['latest', 'stable'] });
    const before = await snapshot(models);
    const checkpoints = await mkdtemp(join(tmpdir(), 'gim-full-disk-ck-'));
    await leaveFree(2);
    try {
      await gim([
        'train',
        'image',
        '--data',
        FIXTURE,
        '--name',
        'tiny',
        '--models-dir',
        models,
        '--channels',
        '4,8,8',
        '--epochs',
        '1',
        '--batch-size',
        '8',
        '--max-steps-per-epoch',
        '2',
        '--checkpoint-dir',
        checkpoints,
      ]);
      assert.fail('gim train published on a full disk');
    } catch (e) {
      const { code, stderr } = e as { code: number; stderr: string };
      assert.equal(code, 1, stderr);
      assert.match(
        stderr,
        /^gim: no space left on device \(ENOSPC\) while writing module-\d\/(weights\.bin|model\.json) of tiny@2; nothing was published: the versions and labels of stack 'tiny' are as they were \(io_error\)$/m,
      );
    } finally {
      await rm(checkpoints, { recursive: true, force: true });
    }
    assert.deepEqual(await snapshot(models), before);
  });
});
