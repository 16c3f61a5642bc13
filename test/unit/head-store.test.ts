import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { untrainedDraft } from '../helpers/stack-draft.js';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { GimError } from '../../src/gim/errors.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { embeddingSpaceId, layerDigests } from '../../src/gim/store/embedding-space.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { HeadStore } from '../../src/gim/store/head-store.js';
import { bindHead, HEAD_FORMAT, type HeadManifest } from '../../src/gim/store/head-manifest.js';
import type { StackManifest } from '../../src/gim/store/manifest.js';
import { headFeatures, trainHead, type TrainedHead } from '../../src/gim/classify/train-head.js';
import type { ImageDataset } from '../../src/gim/data/dataset.js';
import { readLabelledFiles, unlabelledFiles } from '../../src/gim/data/labelled-files.js';
import { Rng } from '../../src/gim/random.js';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import { openAudioFolder } from '../../src/gim/data/audio-folder.js';
import { rejectsWith } from '../helpers/gim-error.js';

const SPEAKERS = new URL('../fixtures/audio/speakers', import.meta.url).pathname;

const adapter = defaultImageAdapter({ mean: [0.5], std: [0.3] });
const configs = visionModuleConfigs(adapter, [4, 8, 8]);
const SIZE = adapter.height * adapter.width;

let dir = '';
let stacks: StackStore;
let heads: HeadStore;
let stackA: EncoderStack;
let stackB: EncoderStack;
const manifests: StackManifest[] = [];
const digests: string[][] = [];
let trained: TrainedHead;

/** Horizontal (class 0) or vertical (class 1) stripes of random phase and width, plus noise. */
function stripes(orientation: number, rng: Rng): Float32Array {
  const period = 4 + rng.int(3);
  const phase = rng.int(period);
  return Float32Array.from({ length: SIZE }, (_, i) => {
    const at = orientation === 0 ? Math.floor(i / adapter.width) : i % adapter.width;
    return ((at + phase) % period < period / 2 ? 0.85 : 0.15) + 0.1 * (rng.next() - 0.5);
  });
}

function stripesDataset(perClass: number, seed: number): ImageDataset {
  const rng = new Rng(seed);
  const n = 2 * perClass;
  const labels = Int32Array.from({ length: n }, (_, i) => i % 2);
  const pixels = new Float32Array(n * SIZE);
  labels.forEach((c, i) => pixels.set(stripes(c, rng), i * SIZE));
  return {
    info: {
      source: `stripes:${seed}`,
      count: n,
      height: adapter.height,
      width: adapter.width,
      channels: 1,
      classNames: ['horizontal', 'vertical'],
    },
    read: (indices) => {
      const k = indices.length;
      const images = new Float32Array(k * SIZE);
      const y = new Int32Array(k);
      for (let j = 0; j < k; j++) {
        const i = indices[j] as number;
        images.set(pixels.subarray(i * SIZE, (i + 1) * SIZE), j * SIZE);
        y[j] = labels[i] as number;
      }
      return Promise.resolve({ images, labels: y, n: k, indices: Int32Array.from(indices) });
    },
    fingerprint: () => Promise.resolve(`${seed}`.padStart(64, '0')),
  };
}

before(async () => {
  await tf.setBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'gim-heads-'));
  stacks = new StackStore(dir);
  heads = new HeadStore(dir);
  stackA = EncoderStack.create(adapter, configs, 1);
  stackB = EncoderStack.create(adapter, configs, 2);
  const [a, b] = [await stackA.artifacts(), await stackB.artifacts()];
  // v1, v2 (other weights), v3 (modules 1-2 of v1, module 3 of v2: a retrain from module 3).
  for (const modules of [a, b, [a[0]!, a[1]!, b[2]!]]) {
    const m = await stacks.publish(
      'tiny',
      await untrainedDraft(stackA, { modules, backend: 'cpu' }),
    );
    manifests.push(m);
    digests.push(layerDigests(m, modules));
  }
  trained = await trainHead({
    stack: stackA,
    manifest: manifests[0]!,
    spaceDigests: digests[0]!,
    dataset: stripesDataset(20, 1),
    testDataset: stripesDataset(5, 2),
    layer: 2,
    pooling: 'mean',
    options: { epochs: 60, seed: 1 },
  });
});

after(async () => {
  stackA.dispose();
  stackB.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('trainHead', () => {
  test('a head on frozen embeddings of two kinds of stripes reaches 100%', () => {
    const { report, draft } = trained;
    assert.equal(report.train.accuracy, 1);
    assert.equal(report.test?.accuracy, 1);
    assert.equal(report.test?.items, 10);
    const m = draft.manifest;
    assert.deepEqual(m.classes, ['horizontal', 'vertical']);
    assert.equal(m.featureDim, 8);
    assert.deepEqual(
      { ...m.encoder, embeddingSpaceId: m.encoder.embeddingSpaceId.length },
      {
        name: 'tiny',
        version: 1,
        modality: 'image',
        layer: 2,
        pooling: 'mean',
        normalize: false,
        embeddingSpaceId: 32,
      },
    );
    assert.equal(m.data.source, 'stripes:1');
    assert.equal(m.data.items, 40);
    assert.equal(m.data.test?.items, 10);
    assert.equal(m.training.epochs, 60);
    assert.equal(m.training.validationFraction, 0.1);
  });
});

describe('choosing the layer', () => {
  test('several layers and poolings: the best on validation is kept, every candidate recorded', async () => {
    const seen: string[] = [];
    const out = await trainHead({
      stack: stackA,
      manifest: manifests[0]!,
      spaceDigests: digests[0]!,
      dataset: stripesDataset(20, 3),
      testDataset: stripesDataset(5, 4),
      layer: [3, 1, 2],
      pooling: ['mean', 'max'],
      options: { epochs: 30, validationFraction: 0.25 },
      onCandidate: (c) => seen.push(`${c.layer}/${c.pooling}`),
    });
    assert.deepEqual(seen, ['1/mean', '1/max', '2/mean', '2/max', '3/mean', '3/max']);
    assert.deepEqual(out.draft.manifest.layerSearch, out.layerSearch);
    const rows = out.layerSearch!;
    const top = Math.max(...rows.map((r) => r.validationAccuracy));
    const best = rows.filter((r) => r.validationAccuracy === top);
    const lowest = Math.min(...best.map((r) => r.validationLoss));
    const { encoder } = out.draft.manifest;
    const kept = rows.find((r) => r.layer === encoder.layer && r.pooling === encoder.pooling)!;
    assert.equal(kept.validationAccuracy, top);
    assert.equal(kept.validationLoss, lowest);
    assert.equal(out.report.validation?.accuracy, top);
    assert.equal(out.report.test?.items, 10);
    assert.equal(
      encoder.embeddingSpaceId,
      embeddingSpaceId(digests[0]![encoder.layer - 1]!, encoder.pooling),
    );
    await rejectsWith(
      trainHead({
        stack: stackA,
        manifest: manifests[0]!,
        spaceDigests: digests[0]!,
        dataset: stripesDataset(5, 3),
        layer: [1, 2],
        pooling: 'mean',
        options: { validationFraction: 0 },
      }),
      'invalid_argument',
      /validation split/,
    );
  });
});

describe('bindHead', () => {
  test('accepts every version with the same embedding space, refuses others with conflict', () => {
    const head: HeadManifest = {
      ...trained.draft.manifest,
      format: HEAD_FORMAT,
      name: 'stripes',
      version: 1,
    };
    assert.deepEqual(bindHead(head, manifests[0]!, digests[0]!), {
      layer: 2,
      pooling: 'mean',
      normalize: false,
    });
    // v3 kept modules 1-2 of v1: layer 2 is the same function, so the head fits.
    assert.equal(bindHead(head, manifests[2]!, digests[2]!).layer, 2);
    assert.throws(
      () => bindHead(head, manifests[1]!, digests[1]!),
      (e: unknown) => {
        assert.ok(e instanceof GimError);
        assert.equal(e.code, 'conflict');
        assert.match(e.message, /head 'stripes@1' needs embedding space [0-9a-f]{32}/);
        assert.match(e.message, /tiny@1 layer 2, pooling mean/);
        assert.match(e.message, /tiny@2 gives embedding space [0-9a-f]{32} at layer 2/);
        assert.notEqual(e.details.requiredEmbeddingSpaceId, e.details.givenEmbeddingSpaceId);
        return true;
      },
    );
    assert.throws(
      () =>
        bindHead({ ...head, encoder: { ...head.encoder, layer: 4 } }, manifests[0]!, digests[0]!),
      /no layer 4/,
    );
  });
});

describe('HeadStore', () => {
  test('publish, load, resolve, labels and list', async () => {
    const v1 = await heads.publish('tiny', 'stripes', trained.draft, {
      labels: ['latest', 'stable'],
    });
    assert.equal(v1.format, HEAD_FORMAT);
    assert.deepEqual([v1.name, v1.version], ['stripes', 1]);
    const v2 = await heads.publish('tiny', 'stripes', trained.draft);
    assert.equal(v2.version, 2);

    const base = join(dir, 'tiny', 'classifiers', 'stripes');
    assert.deepEqual((await readdir(base)).sort(), [
      '1',
      '2',
      'labels.history.ndjson',
      'labels.json',
    ]);
    assert.deepEqual((await readdir(join(base, '1'))).sort(), ['manifest.json', 'weights.json']);
    assert.deepEqual(JSON.parse(await readFile(join(base, 'labels.json'), 'utf8')), {
      latest: 2,
      stable: 1,
    });

    assert.deepEqual(await heads.resolve('tiny', 'stripes'), {
      model: 'tiny',
      name: 'stripes',
      version: 1,
    });
    assert.equal((await heads.resolve('tiny', 'stripes@latest')).version, 2);
    assert.equal((await heads.resolve('tiny', 'stripes@2')).version, 2);
    await heads.setLabel('tiny', 'stripes', 'stable', 2);
    assert.equal((await heads.resolve('tiny', 'stripes@stable')).version, 2);

    const loaded = await heads.load('tiny', 'stripes@1');
    assert.deepEqual(loaded.manifest, v1);
    const x = new Float32Array(8).map((_, i) => i / 8);
    assert.deepEqual(loaded.head.predict(x), trained.head.predict(x));

    assert.deepEqual(await heads.list('tiny'), [
      { name: 'stripes', versions: [1, 2], labels: { latest: 2, stable: 2 } },
    ]);
    // Stacks do not see the classifiers folder as a version.
    assert.deepEqual(
      (await stacks.list()).map((s) => s.versions),
      [[1, 2, 3]],
    );
  });

  test('unknown heads, versions and labels are not_found; bad drafts invalid_argument', async () => {
    await rejectsWith(
      heads.resolve('tiny', 'ghost'),
      'not_found',
      /no head 'ghost'; heads: stripes/,
    );
    await rejectsWith(heads.resolve('tiny', 'stripes@9'), 'not_found', /versions: 1, 2/);
    await rejectsWith(heads.resolve('tiny', 'stripes@beta'), 'not_found', /labels: latest=2/);
    await rejectsWith(heads.resolve('tiny', 'Bad'), 'invalid_argument');
    await rejectsWith(heads.publish('other', 'x', trained.draft), 'invalid_argument', /tiny@1/);
    const orphan = {
      ...trained.draft,
      manifest: {
        ...trained.draft.manifest,
        encoder: { ...trained.draft.manifest.encoder, version: 7 },
      },
    };
    await rejectsWith(heads.publish('tiny', 'x', orphan), 'not_found', /no version 7/);
    const short = { ...trained.draft, params: { ...trained.draft.params, bias: [0] } };
    await rejectsWith(heads.publish('tiny', 'x', short), 'invalid_argument', /bias/);
    assert.deepEqual(
      (await heads.list('tiny')).map((h) => h.name),
      ['stripes'],
    );
  });

  test('publishes are atomic: leftovers are ignored, concurrent publishes get distinct versions', async () => {
    const base = join(dir, 'tiny', 'classifiers', 'race');
    await mkdir(join(base, '.tmp-crashed'), { recursive: true });
    await writeFile(join(base, '.tmp-crashed', 'weights.json'), '{"half":');
    const published = await Promise.all(
      [1, 2, 3].map(() => heads.publish('tiny', 'race', trained.draft)),
    );
    assert.deepEqual(published.map((m) => m.version).sort(), [1, 2, 3]);
    assert.deepEqual(await heads.resolve('tiny', 'race@latest'), {
      model: 'tiny',
      name: 'race',
      version: 3,
    });
    assert.deepEqual(await heads.cleanupTemp('tiny', 'race', { olderThanMs: 0 }), [
      join(base, '.tmp-crashed'),
    ]);
    assert.deepEqual((await readdir(base)).sort(), [
      '1',
      '2',
      '3',
      'labels.history.ndjson',
      'labels.json',
    ]);
  });

  test('a corrupt weights file makes the head version model_unavailable, naming the file in the store', async () => {
    const file = join(dir, 'tiny', 'classifiers', 'race', '1', 'weights.json');
    const params = JSON.parse(await readFile(file, 'utf8'));
    await writeFile(file, JSON.stringify({ ...params, std: [1] }));
    await rejectsWith(
      heads.load('tiny', 'race@1'),
      'model_unavailable',
      /^head race@1 of stack 'tiny' is unavailable: tiny\/classifiers\/race\/1\/weights\.json: .*std/,
    );
  });
});

describe('file lists', () => {
  test('CSV and JSON lists resolve paths next to themselves; headFeatures embeds them', async () => {
    const data = join(dir, 'files');
    await mkdir(join(data, 'img'), { recursive: true });
    const rng = new Rng(3);
    const rows: string[] = [];
    for (let i = 0; i < 4; i++) {
      const c = i % 2;
      const pixels = stripes(c, rng);
      await sharp(Buffer.from(pixels.map((v) => Math.round(v * 255))), {
        raw: { width: 28, height: 28, channels: 1 },
      })
        .png()
        .toFile(join(data, 'img', `${i}.png`));
      rows.push(c === 0 ? `img/${i}.png,horizontal` : `"img/${i}.png","vert, ""v"""`);
    }
    await writeFile(join(data, 'list.csv'), `path,label\r\n${rows.join('\r\n')}\r\n\r\n`);
    await writeFile(
      join(data, 'list.json'),
      JSON.stringify([
        { path: 'img/1.png', label: 7 },
        { path: join(data, 'img/0.png'), label: 'h' },
      ]),
    );
    const csv = await readLabelledFiles(join(data, 'list.csv'));
    assert.deepEqual(csv.classNames, ['horizontal', 'vert, "v"']);
    assert.deepEqual(Array.from(csv.labels), [0, 1, 0, 1]);
    assert.equal(csv.paths[1], join(data, 'img', '1.png'));
    assert.match(csv.fingerprint, /^[0-9a-f]{64}$/);
    const json = await readLabelledFiles(join(data, 'list.json'));
    assert.deepEqual(json.classNames, ['7', 'h']);
    assert.deepEqual(json.paths, [join(data, 'img/1.png'), join(data, 'img/0.png')]);

    const opts = { layer: 2, pooling: 'mean' as const, normalize: true };
    const fromCsv = await headFeatures(stackA, csv, opts);
    const fromFiles = await headFeatures(stackA, unlabelledFiles(csv.paths), opts);
    assert.deepEqual(fromFiles.features.x, fromCsv.features.x);
    const norm = Math.hypot(...fromCsv.features.x.subarray(0, 8));
    assert.ok(Math.abs(norm - 1) < 1e-5, 'normalize gives unit vectors');

    await writeFile(join(data, 'bad.csv'), 'img/0.png,a\nimg/missing.png,b\n');
    await rejectsWith(readLabelledFiles(join(data, 'bad.csv')), 'not_found', /row 2: no such file/);
    await writeFile(join(data, 'bad2.csv'), 'img/0.png,a,extra\n');
    await rejectsWith(readLabelledFiles(join(data, 'bad2.csv')), 'invalid_data', /line 1/);
    await writeFile(join(data, 'bad.json'), '[{"path": "img/0.png"}]');
    await rejectsWith(readLabelledFiles(join(data, 'bad.json')), 'invalid_data', /item 0/);
  });
});

describe('audio', () => {
  test('a speaker folder and a JSON list of its files give the same time-pooled features', async () => {
    const adapter = defaultAudioAdapter();
    const stack = AudioEncoderStack.create(adapter, audioModuleConfigs(8, 8), 3);
    try {
      const folder = await openAudioFolder(SPEAKERS, { adapter });
      const list = join(dir, 'speakers.json');
      await writeFile(
        list,
        JSON.stringify(
          Array.from({ length: folder.info.count }, (_, i) => ({
            path: folder.utterance(i).path,
            label: folder.info.classNames[folder.utterance(i).speaker],
          })),
        ),
      );
      const opts = { layer: 2, pooling: 'max' as const, normalize: false };
      const a = await headFeatures(stack, folder, opts);
      const b = await headFeatures(stack, await readLabelledFiles(list), opts);
      assert.deepEqual(a.classNames, ['101', '202']);
      assert.deepEqual(b.classNames, a.classNames);
      assert.deepEqual(b.features.y, a.features.y);
      assert.deepEqual(b.features.x, a.features.x);
      assert.equal(a.features.dim, 8);
      await rejectsWith(
        headFeatures(stack, folder, { ...opts, pooling: 'grid2' }),
        'invalid_argument',
        /pool over time with mean, max, meanstd, not grid2/,
      );
      await rejectsWith(
        headFeatures(stackA, folder, { ...opts, pooling: 'mean' }),
        'invalid_argument',
        /audio/,
      );
    } finally {
      stack.dispose();
    }
  });
});

describe('head labels as a resource', () => {
  test('compare-and-set moves, history, rollback; a stale ETag moves nothing', async () => {
    await heads.publish('tiny', 'lab', trained.draft, { labels: ['latest', 'stable'] });
    await heads.publish('tiny', 'lab', trained.draft);
    const state = await heads.labelState('tiny', 'lab');
    assert.deepEqual(state.labels, { latest: 2, stable: 1 });
    const moved = await heads.moveLabel(
      'tiny',
      'lab',
      'stable',
      2,
      { by: 'ann', reason: 'r' },
      state.etag,
    );
    assert.equal(moved.labels.stable, 2);
    assert.deepEqual(moved.history.at(-1), {
      at: moved.history.at(-1)!.at,
      by: 'ann',
      label: 'stable',
      from: 1,
      to: 2,
      reason: 'r',
    });
    await rejectsWith(
      heads.moveLabel('tiny', 'lab', 'stable', 1, { by: 'bob' }, state.etag),
      'precondition_failed',
      /changed since you read them/,
    );
    assert.equal(
      (await heads.labelState('tiny', 'lab')).labels.stable,
      2,
      'the stale move did nothing',
    );
    const back = await heads.rollbackLabel('tiny', 'lab', 'stable', { by: 'ann' }, moved.etag);
    assert.equal(back.labels.stable, 1);
    const gone = await heads.moveLabel('tiny', 'lab', 'stable', null, { by: 'ann' }, '*');
    assert.equal(gone.labels.stable, undefined);
    await rejectsWith(
      heads.rollbackLabel('tiny', 'lab', 'nolabel', { by: 'ann' }),
      'conflict',
      /no earlier target/,
    );
  });
});
