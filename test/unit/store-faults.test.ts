/**
 * Write errors while publishing (a full disk, an I/O error), through the store's FileWriter seam:
 * every single write of a publish is made to fail in turn, and each time the versions and labels
 * on disk must be exactly as before, no temporary entry left, and the error must name the file.
 * (test/e2e/full-disk.e2e.test.ts does the same on a real full filesystem, where it may mount one.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { trainHead, type TrainedHead } from '../../src/gim/classify/train-head.js';
import type { ImageDataset } from '../../src/gim/data/dataset.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { goldenFromArtifacts } from '../../src/gim/golden/golden.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { layerDigests } from '../../src/gim/store/embedding-space.js';
import { HeadStore } from '../../src/gim/store/head-store.js';
import { StackStore, type StackDraft } from '../../src/gim/store/stack-store.js';
import { Rng } from '../../src/gim/random.js';
import { rejectsWith } from '../helpers/gim-error.js';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { FailingWriter, hiddenEntries, snapshot } from '../helpers/store-faults.js';

const adapter = defaultImageAdapter({ mean: [0.5], std: [0.3] });
const SIZE = adapter.height * adapter.width;

let tmp = '';
let stack: EncoderStack;
let draft: StackDraft;
let head: TrainedHead;

/** `n` noise images in two classes: enough for a head to be fitted and published. */
function noiseDataset(n: number): ImageDataset {
  const rng = new Rng(3);
  const pixels = Float32Array.from({ length: n * SIZE }, () => rng.next());
  return {
    info: {
      source: 'noise',
      count: n,
      height: adapter.height,
      width: adapter.width,
      channels: 1,
      classNames: ['a', 'b'],
    },
    read: (indices) => {
      const k = indices.length;
      const images = new Float32Array(k * SIZE);
      for (let j = 0; j < k; j++) {
        const i = indices[j] as number;
        images.set(pixels.subarray(i * SIZE, (i + 1) * SIZE), j * SIZE);
      }
      const labels = Int32Array.from(Array.from(indices), (i) => i % 2);
      return Promise.resolve({ images, labels, n: k, indices: Int32Array.from(indices) });
    },
    fingerprint: () => Promise.resolve('0'.repeat(64)),
  };
}

before(async () => {
  await tf.setBackend('cpu');
  tmp = await mkdtemp(join(tmpdir(), 'gim-store-faults-'));
  stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 1);
  draft = await untrainedDraft(stack, { backend: 'cpu' });
  const manifest = await new StackStore(join(tmp, 'for-head')).publish('tiny', draft, {
    golden: false,
  });
  head = await trainHead({
    stack,
    manifest,
    spaceDigests: layerDigests(manifest, draft.modules),
    dataset: noiseDataset(12),
    layer: 2,
    pooling: 'mean',
    options: { epochs: 2, seed: 1, validationFraction: 0 },
  });
});

after(async () => {
  stack.dispose();
  await rm(tmp, { recursive: true, force: true });
});

/** A models directory with fashion@1 (stable) and fashion@2 (latest). */
async function twoVersions(): Promise<string> {
  const root = await mkdtemp(join(tmp, 'models-'));
  const store = new StackStore(root);
  await store.publish('fashion', draft, { labels: ['latest', 'stable'], golden: false });
  await store.publish('fashion', draft, { golden: false });
  return root;
}

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

describe('a write error while publishing a stack', () => {
  test('each of its 8 writes, failing, leaves versions, labels and files as they were, naming the file', async () => {
    const root = await twoVersions();
    const before = await snapshot(root);
    const counted = new FailingWriter();
    // A publish writes exactly these files, each through the writer (none past it).
    await new StackStore(await twoVersions(), { writer: counted }).publish('fashion', draft, {
      golden: false,
    });
    assert.equal(counted.writes, STACK_FILES.length, counted.paths.join('\n'));

    for (const [i, file] of STACK_FILES.entries()) {
      const writer = new FailingWriter(i + 1);
      const store = new StackStore(root, { writer });
      const withdrawn = file === 'labels.json' ? ' (fashion@3 was withdrawn)' : '';
      await rejectsWith(
        store.publish('fashion', draft, { labels: ['latest', 'stable'], golden: false }),
        'io_error',
        new RegExp(
          `^no space left on device \\(ENOSPC\\) while writing ${file} of fashion@3; nothing ` +
            `was published${withdrawn.replace(/[()]/g, '\\$&')}: the versions and labels of ` +
            `stack 'fashion' are as they were$`,
        ),
      );
      assert.equal(writer.writes, i + 1, `write ${i + 1} (${file}) was the last one`);
      const after = await snapshot(root);
      assert.deepEqual(after, before, `after a failed write of ${file}`);
      assert.deepEqual(hiddenEntries(after), []);
      assert.deepEqual(await store.resolve('fashion'), { name: 'fashion', version: 1 });
      assert.deepEqual(await store.resolve('fashion@latest'), { name: 'fashion', version: 2 });
    }

    // Once the disk has room again, the next publish takes the next number.
    const store = new StackStore(root);
    assert.equal((await store.publish('fashion', draft, { golden: false })).version, 3);
    assert.deepEqual((await store.list())[0]?.labels, { latest: 3, stable: 1 });
  });

  test('an I/O error is reported with its own cause', async () => {
    const root = await twoVersions();
    const before = await snapshot(root);
    const store = new StackStore(root, { writer: new FailingWriter(3, 'EIO') });
    await rejectsWith(
      store.publish('fashion', draft, { golden: false }),
      'io_error',
      /^i\/o error \(EIO\) while writing module-2\/weights\.bin of fashion@3; nothing was published/,
    );
    assert.deepEqual(await snapshot(root), before);
  });

  test('moving a label: a failed labels.json write keeps the labels, releases the lock', async () => {
    const root = await twoVersions();
    const before = await snapshot(root);
    const failing = new StackStore(root, { writer: new FailingWriter(1) });
    await rejectsWith(
      failing.setLabel('fashion', 'stable', 2),
      'io_error',
      /^no space left on device \(ENOSPC\) while writing fashion\/labels\.json; the labels of stack 'fashion' are as they were$/,
    );
    await rejectsWith(
      new StackStore(root, { writer: new FailingWriter(1) }).removeLabel('fashion', 'latest'),
      'io_error',
      /while writing fashion\/labels\.json/,
    );
    const after = await snapshot(root);
    assert.deepEqual(after, before);
    assert.deepEqual(hiddenEntries(after), []); // no lock file, no temp file
    // The lock was released: a writer with room moves the label at once.
    await new StackStore(root).setLabel('fashion', 'stable', 2);
    assert.deepEqual((await new StackStore(root).list())[0]?.labels, { latest: 2, stable: 2 });
  });

  test('recording golden embeddings: a failed manifest write keeps the old manifest', async () => {
    const root = await twoVersions();
    const before = await snapshot(root);
    const store = new StackStore(root, { writer: new FailingWriter(1) });
    const manifest = await store.loadManifest('fashion@1');
    const golden = await goldenFromArtifacts(manifest, draft.modules);
    await rejectsWith(
      store.recordGolden('fashion@1', golden),
      'io_error',
      /^no space left on device \(ENOSPC\) while writing \S+fashion\/1\/manifest\.json$/,
    );
    assert.deepEqual(await snapshot(root), before);
  });
});

describe('a write error while publishing a head', () => {
  test('each of its 3 writes, failing, leaves the heads as they were, naming the file', async () => {
    const root = await twoVersions();
    await new HeadStore(root).publish('fashion', 'clothes', headDraft(), {
      labels: ['latest', 'stable'],
    });
    const before = await snapshot(root);
    const files = ['weights.json', 'manifest.json', 'labels.json'];
    for (const [i, file] of files.entries()) {
      const heads = new HeadStore(root, { writer: new FailingWriter(i + 1) });
      const withdrawn =
        file === 'labels.json' ? ' \\(fashion/classifiers/clothes@2 was withdrawn\\)' : '';
      await rejectsWith(
        heads.publish('fashion', 'clothes', headDraft()),
        'io_error',
        new RegExp(
          `^no space left on device \\(ENOSPC\\) while writing ${file} of ` +
            `fashion/classifiers/clothes@2; nothing was published${withdrawn}: the versions and ` +
            `labels of head 'clothes' of stack 'fashion' are as they were$`,
        ),
      );
      const after = await snapshot(root);
      assert.deepEqual(after, before, `after a failed write of ${file}`);
      assert.deepEqual(hiddenEntries(after), []);
    }
    const heads = new HeadStore(root);
    assert.equal((await heads.publish('fashion', 'clothes', headDraft())).version, 2);
    assert.deepEqual((await readdir(join(root, 'fashion', 'classifiers', 'clothes'))).sort(), [
      '1',
      '2',
      'labels.history.ndjson',
      'labels.json',
    ]);
  });
});

/** The trained head, re-bound to `fashion@1` (its stack there has the same weights). */
function headDraft(): TrainedHead['draft'] {
  const { manifest, params } = head.draft;
  return { manifest: { ...manifest, encoder: { ...manifest.encoder, name: 'fashion' } }, params };
}
