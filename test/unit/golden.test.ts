import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import {
  compareGolden,
  computeGolden,
  fromBase64,
  GOLDEN_TOLERANCE,
  goldenFromArtifacts,
  goldenInputs,
  goldenUnsupported,
  toBase64,
  type GoldenRecord,
} from '../../src/gim/golden/golden.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import type { StackManifest } from '../../src/gim/store/manifest.js';
import { checkStackManifest } from '../../src/gim/store/manifest-schema.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { describeEachBackend, testBackends, useBackend } from '../helpers/backends.js';
import { gimError, rejectsWith } from '../helpers/gim-error.js';
import { untrainedDraft } from '../helpers/stack-draft.js';

const plan = await testBackends();
const MODELS = new URL('../../models', import.meta.url).pathname;
const adapter = defaultImageAdapter({ mean: [0.3], std: [0.3] });
const audioAdapter = defaultAudioAdapter({ windowSamples: 3200 });

let dir = '';
/** Published on wasm (so their golden embeddings were recorded there): image and audio. */
let store: StackStore;
const published: Record<'image' | 'audio', StackManifest> = {} as never;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gim-golden-'));
  store = new StackStore(dir);
  await useBackend('wasm');
  const image = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 1);
  const audio = AudioEncoderStack.create(audioAdapter, audioModuleConfigs(8, 8), 1);
  published.image = await store.publish('img', await untrainedDraft(image));
  published.audio = await store.publish('aud', await untrainedDraft(audio));
  image.dispose();
  audio.dispose();
});

after(() => rm(dir, { recursive: true, force: true }));

const throwsWith = (fn: () => unknown, code: Parameters<typeof gimError>[0], pattern?: RegExp) =>
  assert.throws(fn, gimError(code, pattern));

/** `record` with one value of one summary scaled so its error is `rel` of the input's scale. */
function perturbed(record: GoldenRecord, rel: number): GoldenRecord {
  const copy = structuredClone(record);
  const layer = copy.layers[1]!;
  const values = layer.values.filter((v) => v.input === layer.values[0]!.input);
  const scale = Math.max(...values.flatMap((v) => [...fromBase64(v.data)].map(Math.abs)));
  const target = values[values.length - 1]!;
  const data = fromBase64(target.data);
  data[0] = data[0]! + rel * scale;
  target.data = toBase64(data);
  return copy;
}

describe('golden inputs', () => {
  test('are deterministic (same bytes twice), distinct, in the adapter range, in embed form', () => {
    for (const manifest of [published.image, published.audio]) {
      const a = goldenInputs(manifest);
      const b = goldenInputs(manifest);
      assert.equal(a.length, 4);
      assert.deepEqual(
        a.map((x) => Buffer.from(x.data.buffer).toString('hex')),
        b.map((x) => Buffer.from(x.data.buffer).toString('hex')),
      );
      assert.equal(new Set(a.map((x) => x.id)).size, 4);
      assert.equal(new Set(a.map((x) => toBase64(x.data))).size, 4, 'four different inputs');
      for (const x of a) {
        assert.equal(
          x.data.length,
          x.shape.reduce((p, d) => p * d, 1),
        );
        assert.ok(x.data.every(Number.isFinite));
      }
    }
    const [image] = goldenInputs(published.image, 1);
    assert.deepEqual(image!.shape, [28, 28, 1]);
    // 8-bit levels in [0, 1], as a decoded PNG gives.
    assert.ok(
      image!.data.every((v) => v >= 0 && v <= 1 && Math.abs(v * 255 - Math.round(v * 255)) < 1e-4),
    );
    // Audio: normalised as the adapter says (rms: unit RMS), one fixed length.
    for (const clip of goldenInputs(published.audio)) {
      assert.deepEqual(clip.shape, [3200]);
      const rms = Math.sqrt(clip.data.reduce((s, v) => s + v * v, 0) / clip.data.length);
      assert.ok(Math.abs(rms - 1) < 1e-3, `${clip.id} rms ${rms}`);
    }
    // More inputs extend the list; the first ones stay the same.
    const six = goldenInputs(published.image, 6);
    assert.deepEqual(
      six.map((x) => x.id),
      ['gradient', 'checker', 'noise', 'silhouette', 'noise-4', 'noise-5'],
    );
    assert.deepEqual(six[2]!.data, goldenInputs(published.image)[2]!.data);
    throwsWith(() => goldenInputs(published.image, 0), 'invalid_argument', /count/);
  });
});

describe('compareGolden', () => {
  test('thresholds: within the tolerance passes, past it fails naming layer and input', () => {
    const golden = published.image.golden!;
    const same = compareGolden(golden, structuredClone(golden));
    assert.equal(same.ok, true);
    assert.equal(same.maxRelError, 0);
    assert.equal(same.tolerance, GOLDEN_TOLERANCE);

    const below = compareGolden(golden, perturbed(golden, GOLDEN_TOLERANCE * 0.9));
    assert.equal(below.ok, true, below.message);
    assert.ok(
      Math.abs(below.maxRelError - GOLDEN_TOLERANCE * 0.9) < 1e-5,
      String(below.maxRelError),
    );

    const above = compareGolden(golden, perturbed(golden, GOLDEN_TOLERANCE * 1.1));
    assert.equal(above.ok, false);
    assert.deepEqual(above.worst, { layer: 2, input: 'gradient' });
    assert.match(above.message, /layer 2, input gradient > tolerance 5\.00e-3; recorded on wasm/);
    assert.deepEqual(
      above.layers.map((l) => l.maxRelError <= GOLDEN_TOLERANCE),
      [true, false, true],
    );

    // The record's own tolerance is the one applied.
    const strict = { ...golden, tolerance: { maxRelError: 1e-9 } };
    assert.equal(compareGolden(strict, perturbed(golden, 1e-6)).ok, false);
  });

  test('records that do not line up, and NaN, fail with an infinite error', () => {
    const golden = published.image.golden!;
    const noLayer = { ...structuredClone(golden), layers: golden.layers.slice(0, 2) };
    const fewer = compareGolden(golden, noLayer);
    assert.equal(fewer.ok, false);
    assert.equal(fewer.maxRelError, Infinity);
    assert.match(fewer.message, /no layer 3/);
    const otherCount = { ...golden, inputs: { ...golden.inputs, count: 3 } };
    assert.equal(compareGolden(golden, otherCount).ok, false);

    const nan = structuredClone(golden);
    const values = nan.layers[0]!.values[0]!;
    const data = fromBase64(values.data);
    data[0] = NaN;
    values.data = toBase64(data);
    const withNaN = compareGolden(golden, nan);
    assert.equal(withNaN.ok, false);
    assert.equal(withNaN.maxRelError, Infinity);
  });
});

describe('publish and the manifest field', () => {
  test('publish records golden embeddings of the written weights; the schema checks them', async () => {
    const golden = published.image.golden!;
    assert.equal(golden.format, 'gim-golden/1');
    assert.equal(golden.backend, 'wasm');
    assert.deepEqual(golden.inputs, {
      generator: 'gim-golden-inputs/1',
      count: 4,
      ids: ['gradient', 'checker', 'noise', 'silhouette'],
    });
    assert.deepEqual(
      golden.layers.map((l) => l.values.map((v) => `${v.input}:${v.summary}:${v.shape.join('x')}`)),
      [4, 8, 8].map((c) =>
        ['gradient', 'checker', 'noise', 'silhouette'].flatMap((i) => [
          `${i}:mean:${c}`,
          `${i}:regions:3x3x${c}`,
        ]),
      ),
    );
    assert.deepEqual(
      published.audio.golden!.layers.map((l) => l.values[1]!.shape),
      [8, 8, 8, 8, 8, 8].map((c) => [4, c]),
    );
    // What is on disk is what publish returned, and loads.
    assert.deepEqual((await store.loadManifest('img@1')).golden, golden);

    const m = structuredClone(published.image) as unknown as Record<string, unknown>;
    const bad = (golden: unknown) => checkStackManifest({ ...m, golden }, 'm.json');
    const g = structuredClone(golden);
    assert.doesNotThrow(() => bad(g));
    throwsWith(() => bad('x'), 'invalid_data', /m\.json: golden must be an object/);
    throwsWith(() => bad({ ...g, tolerance: { maxRelError: 0 } }), 'invalid_data', /tolerance/);
    throwsWith(
      () => bad({ ...g, layers: [{ ...g.layers[0], layer: 4 }] }),
      'invalid_data',
      /1\.\.3/,
    );
    const short = structuredClone(g);
    short.layers[0]!.values[0]!.data = toBase64(new Float32Array(3));
    throwsWith(() => bad(short), 'invalid_data', /12 bytes, shape \[4\] needs 16/);
    // A newer writer's format is kept and loads unchecked; no golden at all is an old manifest.
    const future = { format: 'gim-golden/2', anything: [1] };
    assert.deepEqual(bad(future).golden, future);
    assert.match(goldenUnsupported(future)!, /gim-golden\/2/);
    const { golden: _g, ...old } = m;
    assert.equal(checkStackManifest(old, 'old.json').golden, undefined);
  });

  test('publish without golden (golden: false) and a draft that brings its own', async () => {
    const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 3);
    try {
      const draft = await untrainedDraft(stack);
      const bare = await store.publish('bare', draft, { golden: false });
      assert.equal(bare.golden, undefined);
      const own = { ...published.image.golden!, backend: 'elsewhere' };
      const brought = await store.publish('bare', {
        ...draft,
        manifest: { ...draft.manifest, golden: own },
      });
      assert.equal(brought.golden?.backend, 'elsewhere');
    } finally {
      stack.dispose();
    }
    // A draft whose modules are not its stack fails before anything is written.
    const wrong = await untrainedDraft(
      EncoderStack.create(adapter, visionModuleConfigs(adapter, [4, 8, 8]), 4),
    );
    wrong.modules = [wrong.modules[1]!, wrong.modules[0]!, wrong.modules[2]!];
    await rejectsWith(store.publish('wrong', wrong), 'invalid_data', /shapes/);
    assert.deepEqual((await store.list()).map((s) => s.name).includes('wrong'), false);
  });

  test('recordGolden adds them to a version without, atomically, and refuses to replace them unless forced', async () => {
    const file = join(dir, 'bare', '1', 'manifest.json');
    const before = JSON.parse(await readFile(file, 'utf8')) as StackManifest;
    const { manifest, modules } = await store.load('bare@1');
    const golden = await goldenFromArtifacts(manifest, modules);
    const updated = await store.recordGolden('bare@1', golden);
    const after = JSON.parse(await readFile(file, 'utf8')) as StackManifest;
    assert.deepEqual(after, updated);
    const { golden: added, ...rest } = after;
    assert.deepEqual(rest, before, 'only the golden field changed');
    assert.deepEqual(added, golden);
    await rejectsWith(store.recordGolden('bare@1', golden), 'conflict', /already.*--force/);
    const forced = await store.recordGolden(
      'bare@1',
      { ...golden, backend: 'cpu' },
      { force: true },
    );
    assert.equal(forced.golden?.backend, 'cpu');
    await writeFile(file, `${JSON.stringify(before)}\n`); // back to none, for the worker test
  });
});

describeEachBackend(plan, 'golden embeddings', (backend) => {
  test('stacks published on wasm pass the check here; computeGolden leaks no tensor', async (t) => {
    for (const name of ['img', 'aud']) {
      const { manifest, modules } = await store.load(name);
      const stack =
        manifest.modality === 'audio'
          ? await AudioEncoderStack.fromManifest(manifest, modules)
          : await EncoderStack.fromManifest(manifest, modules);
      try {
        const tensors = tf.memory().numTensors;
        const actual = await computeGolden(stack, manifest);
        assert.equal(tf.memory().numTensors, tensors, 'no tensor left behind');
        assert.equal(actual.backend, backend);
        const result = compareGolden(manifest.golden!, actual);
        t.diagnostic(`${name} (${manifest.modality}) on ${backend}: ${result.message}`);
        assert.equal(result.ok, true, result.message);
        // float32 backends agree far inside the tolerance (TF32 GPUs need the rest).
        if (backend !== 'tensorflow-gpu') assert.ok(result.maxRelError < 1e-5, result.message);
      } finally {
        stack.dispose();
      }
    }
  });

  test('the shipped demo stack passes on this backend; x1.01 on its largest module-1 weight fails', async (t) => {
    const { manifest, modules } = await new StackStore(MODELS).load('fashion-gim@1');
    assert.ok(manifest.golden, 'models/fashion-gim@1 has golden embeddings (gim golden --record)');
    const tensors = tf.memory().numTensors;
    const ok = compareGolden(manifest.golden, await goldenFromArtifacts(manifest, modules));
    t.diagnostic(`fashion-gim@1 on ${backend}: ${ok.message}`);
    assert.equal(ok.ok, true, ok.message);

    const w = new Float32Array((modules[0]!.weightData as ArrayBuffer).slice(0));
    let big = 0;
    for (let i = 0; i < 3 * 3 * 16; i++) if (Math.abs(w[i]!) > Math.abs(w[big]!)) big = i;
    w[big] = w[big]! * 1.01;
    const tampered = [{ ...modules[0]!, weightData: w.buffer }, ...modules.slice(1)];
    const bad = compareGolden(manifest.golden, await goldenFromArtifacts(manifest, tampered));
    t.diagnostic(`x1.01 on weight ${big}: ${bad.message}`);
    assert.equal(bad.ok, false, bad.message);
    assert.equal(tf.memory().numTensors, tensors);
  });
});

test('on the pure-JS cpu backend too (the last-resort fallback)', async () => {
  await tf.setBackend('cpu');
  try {
    const { manifest, modules } = await store.load('img');
    const result = compareGolden(manifest.golden!, await goldenFromArtifacts(manifest, modules));
    assert.equal(result.ok, true, result.message);
    assert.ok(result.maxRelError < 1e-5, result.message);
  } finally {
    await useBackend(plan.available.includes('wasm') ? 'wasm' : plan.available[0]!);
  }
});
