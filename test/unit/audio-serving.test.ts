import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { audioInputSpec, nominalFrameRates } from '../../src/app/embeddings/audio-geometry.js';
import { selectBackend } from '../../src/gim/backend/index.js';
import {
  audioFrameCounts,
  audioModuleConfigs,
  receptiveField,
} from '../../src/gim/encoders/audio-modules.js';
import type { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { layerDigests } from '../../src/gim/store/embedding-space.js';
import { audioManifest } from '../../src/gim/store/manifest.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { InferenceClient } from '../../src/inference/inference-client.js';
import { publishStack, tinyAudioStack, tinyStack } from '../e2e/serve-fixtures.js';
import { rejectsWith } from '../helpers/gim-error.js';

let dir = '';
let stack: AudioEncoderStack;
let client: InferenceClient;

before(async () => {
  await selectBackend({ force: 'wasm' });
  dir = await mkdtemp(join(tmpdir(), 'gim-audio-serving-'));
  stack = tinyAudioStack(3);
  await publishStack(dir, 'voice', stack, ['stable']);
  const image = tinyStack(3);
  await publishStack(dir, 'tiny', image, ['stable']);
  image.dispose();
  client = await InferenceClient.start({ modelsDir: dir, backend: 'wasm' });
});

after(async () => {
  await client?.close();
  stack?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** n deterministic clips of T samples in [-1, 1]. */
function clips(n: number, T: number, seed = 1): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n * T }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (2 * s) / 2147483648 - 1;
  });
}

describe('the inference worker serves audio stacks', () => {
  test('loads an audio stack next to an image stack; per-layer digests as for images', async () => {
    const voice = await client.load('voice');
    assert.equal(voice.manifest.modality, 'audio');
    assert.equal(voice.spaceDigests.length, 6);
    assert.equal(new Set(voice.spaceDigests).size, 6, 'each layer is its own space');
    const stored = await new StackStore(dir).load('voice@1');
    assert.deepEqual(layerDigests(stored.manifest, stored.modules), voice.spaceDigests);
    assert.equal((await client.load('tiny')).manifest.modality, 'image');
  });

  test('[n, T] clips give [n, 1, frames, C] grids equal to the in-process frames', async () => {
    const n = 3;
    const T = 2000;
    const input = clips(n, T);
    const local = stack.embed(input, n, [1, 6]);
    const { grids } = await client.embed('voice', 1, input.slice(), n, [6, 1]);
    for (const layer of [1, 6]) {
      const want = local.get(layer)!;
      const got = grids.get(layer)!;
      const frames = audioFrameCounts(T, stack.moduleConfigs)[layer - 1]!;
      assert.deepEqual(got.shape, { n, rows: 1, cols: frames, channels: 8 }, `layer ${layer}`);
      assert.deepEqual(want.shape, [n, frames, 8]);
      assert.deepEqual(got.data, want.dataSync(), `layer ${layer}`);
    }
    tf.dispose([...local.values()]);
  });

  test('bad audio inputs come back with their codes, and tensors do not grow', async () => {
    await client.embed('voice', 1, clips(1, 1000), 1, [6]);
    const before = await client.stats();
    await rejectsWith(client.embed('voice', 1, clips(1, 1001), 2, [1]), 'invalid_argument');
    await rejectsWith(client.embed('voice', 1, clips(1, 20), 1, [6]), 'invalid_data', /at least/);
    await rejectsWith(
      client.embed('voice', 1, new Float32Array(61 * 16000), 1, [1]),
      'invalid_argument',
      /up to 960000 samples/,
    );
    await rejectsWith(client.embed('voice', 1, clips(1, 1000), 1, [7]), 'not_found', /layer 7/);
    for (const T of [600, 1234, 4321]) await client.embed('voice', 1, clips(2, T), 2, [1, 6]);
    const after = await client.stats();
    assert.equal(after.numTensors, before.numTensors);
  });
});

describe('audio geometry of the API', () => {
  test('GIM.md geometry: receptive field 465 samples, 3200..100 frames/s', () => {
    const manifest = audioManifest({
      format: 'gim-stack/1',
      name: 'x',
      version: 1,
      modality: 'audio',
      adapter: stack.adapter,
      modules: audioModuleConfigs(8, 8).map((config, i) => ({
        index: i + 1,
        dir: `module-${i + 1}`,
        config,
        outputShape: [],
        gridShape: [],
        embeddingDim: 8,
        finalLoss: null,
      })),
      training: {
        schedule: 'parallel',
        config: {},
        seed: 1,
        epochs: 0,
        steps: 0,
        durationSeconds: 0,
      },
      data: { source: 'test', fingerprint: '', items: 0 },
      backend: 'wasm',
      createdAt: '',
      parent: null,
    });
    assert.equal(receptiveField(manifest.modules.map((m) => m.config)), 465);
    assert.deepEqual(nominalFrameRates(manifest), [3200, 800, 400, 200, 100, 100]);
    assert.deepEqual(audioInputSpec(manifest), {
      sampleRate: 16000,
      windowSamples: 3200,
      normalize: 'rms',
      maxSeconds: 60,
      minSamples: 465,
    });
  });
});
