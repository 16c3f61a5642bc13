import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { STACK_FORMAT, type StackManifest } from '../../src/gim/store/manifest.js';
import { StackStore, type StackDraft } from '../../src/gim/store/stack-store.js';
import {
  fileSystemHandler,
  loadModelArtifacts,
  saveModelArtifacts,
} from '../../src/gim/store/tfjs-files.js';
import { rejectsWith } from '../helpers/gim-error.js';

let tmp: string;
let models: tf.Sequential[];
let artifacts: tf.io.ModelArtifacts[];
let input: tf.Tensor2D;

before(async () => {
  await tf.setBackend('cpu');
  tmp = await mkdtemp(join(tmpdir(), 'gim-stack-store-'));
  models = [tinyModel(4, 3), tinyModel(3, 2)];
  artifacts = await Promise.all(models.map(artifactsOf));
  input = tf.tensor2d([0.1, -0.2, 0.3, 0.4, 1, 2, -3, 0.5], [2, 4]); // [B, 4]
});

after(async () => {
  models.forEach((m) => m.dispose());
  input.dispose();
  await rm(tmp, { recursive: true, force: true });
});

function tinyModel(inputs: number, units: number): tf.Sequential {
  return tf.sequential({
    layers: [tf.layers.dense({ units, inputShape: [inputs], activation: 'tanh' })],
  });
}

async function artifactsOf(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  assert.ok(saved);
  return saved;
}

function draft(): StackDraft {
  const moduleManifest = (index: number, inChannels: number, channels: number) => ({
    index,
    dir: `module-${index}`,
    config: {
      kind: 'vision-conv' as const,
      inputSize: 1,
      inChannels,
      channels,
      stride: 1,
      kernelSize: 1,
    },
    outputShape: [1, 1, channels],
    gridShape: [1, 1],
    embeddingDim: channels,
    finalLoss: 1.5,
  });
  return {
    manifest: {
      modality: 'image',
      adapter: {
        kind: 'image',
        height: 2,
        width: 2,
        channels: 1,
        mean: [0.5],
        std: [0.25],
        patchSize: 1,
        patchStride: 1,
        cropPad: 0,
        flip: false,
      },
      modules: [moduleManifest(1, 4, 3), moduleManifest(2, 3, 2)],
      training: {
        schedule: 'parallel',
        config: { lr: 0.001 },
        seed: 7,
        epochs: 1,
        steps: 2,
        durationSeconds: 0.1,
      },
      data: { source: 'test', fingerprint: 'abc', items: 2 },
      backend: 'cpu',
      createdAt: new Date(0).toISOString(),
      parent: null,
    },
    modules: artifacts,
  };
}

/** A store in a fresh root. The drafts here are dense models, not GIM stacks: no golden. */
async function freshStore(): Promise<StackStore> {
  const store = new StackStore(await mkdtemp(join(tmp, 'root-')));
  const publish = store.publish.bind(store);
  store.publish = (name, d, opts = {}) => publish(name, d, { golden: false, ...opts });
  return store;
}

/** Predictions of both modules chained, as raw floats. */
async function predict(moduleArtifacts: tf.io.ModelArtifacts[]): Promise<Float32Array[]> {
  const loaded = await Promise.all(
    moduleArtifacts.map((a) => tf.loadLayersModel(tf.io.fromMemory(a))),
  );
  const out = tf.tidy(() => {
    const h1 = loaded[0]!.predict(input) as tf.Tensor; // [B, 3]
    const h2 = loaded[1]!.predict(h1) as tf.Tensor; // [B, 2]
    return [h1.dataSync() as Float32Array, h2.dataSync() as Float32Array];
  });
  loaded.forEach((m) => m.dispose());
  return out;
}

describe('StackStore', () => {
  test('publish then load rebuilds bit-identical modules', async () => {
    const store = await freshStore();
    const tensorsBefore = tf.memory().numTensors;
    const manifest = await store.publish('mnist-gim', draft());
    assert.equal(manifest.format, STACK_FORMAT);
    assert.equal(manifest.name, 'mnist-gim');
    assert.equal(manifest.version, 1);

    const loaded = await store.load('mnist-gim');
    assert.deepEqual(loaded.manifest, manifest);
    assert.deepEqual(await predict(loaded.modules), await predict(artifacts));
    assert.equal(tf.memory().numTensors, tensorsBefore);

    const modelJson = JSON.parse(
      await readFile(join(await store.moduleDir('mnist-gim', 2), 'model.json'), 'utf8'),
    ) as tf.io.ModelJSON;
    assert.deepEqual(modelJson.weightsManifest[0]?.paths, ['weights.bin']);
    assert.equal(modelJson.format, 'layers-model');
    assert.ok(modelJson.modelTopology);
    assert.deepEqual(
      JSON.parse(await readFile(join(store.root, 'mnist-gim/labels.json'), 'utf8')),
      {
        latest: 1,
      },
    );
  });

  test('versions increment and labels resolve', async () => {
    const store = await freshStore();
    for (const v of [1, 2, 3]) assert.equal((await store.publish('enc', draft())).version, v);
    assert.deepEqual(await store.listVersions('enc'), [1, 2, 3]);

    assert.deepEqual(await store.resolve('enc'), { name: 'enc', version: 3 });
    await store.setLabel('enc', 'stable', 2);
    assert.deepEqual(await store.resolve('enc'), { name: 'enc', version: 2 });
    assert.deepEqual(await store.resolve('enc@stable'), { name: 'enc', version: 2 });
    assert.deepEqual(await store.resolve('enc@latest'), { name: 'enc', version: 3 });
    assert.deepEqual(await store.resolve('enc@1'), { name: 'enc', version: 1 });
    assert.equal((await store.loadManifest('enc@2')).version, 2);

    const fourth = await store.publish('enc', draft(), { labels: ['latest', 'canary'] });
    assert.deepEqual(await store.list(), [
      { name: 'enc', versions: [1, 2, 3, 4], labels: { canary: 4, latest: 4, stable: 2 } },
    ]);
    assert.equal(fourth.version, 4);

    await store.removeLabel('enc', 'stable');
    assert.deepEqual(await store.resolve('enc'), { name: 'enc', version: 4 });
  });

  test('a resolve cache reuses resolutions for its time, and forgets them on its own writes', async () => {
    const writer = await freshStore(); // another process: a deploy, `gim train --label`
    await writer.publish('enc', draft());
    await writer.publish('enc', draft());
    const server = new StackStore(writer.root, { resolveCacheMs: 60_000 });
    assert.deepEqual(await server.resolve('enc'), { name: 'enc', version: 2 });

    await writer.setLabel('enc', 'stable', 1);
    assert.deepEqual(await server.resolve('enc'), { name: 'enc', version: 2 }, 'cached');
    assert.deepEqual(await server.resolve('enc@stable'), { name: 'enc', version: 1 }, 'new ref');
    await server.setLabel('enc', 'stable', 1); // a write through the server's store
    assert.deepEqual(await server.resolve('enc'), { name: 'enc', version: 1 });

    // Failures are not cached: a stack published after a not_found resolves at once.
    await rejectsWith(server.resolve('later'), 'not_found');
    await writer.publish('later', draft());
    assert.deepEqual(await server.resolve('later'), { name: 'later', version: 1 });

    // Expiry: with a short cache, a label moved elsewhere is seen once the time has passed.
    const short = new StackStore(writer.root, { resolveCacheMs: 20 });
    assert.deepEqual(await short.resolve('enc@stable'), { name: 'enc', version: 1 });
    await writer.setLabel('enc', 'stable', 2);
    await new Promise((r) => setTimeout(r, 40));
    assert.deepEqual(await short.resolve('enc@stable'), { name: 'enc', version: 2 });
  });

  test('a plain name without labels means the highest version', async () => {
    const store = await freshStore();
    await store.publish('bare', draft(), { labels: [] });
    await store.publish('bare', draft(), { labels: [] });
    assert.deepEqual(await store.resolve('bare'), { name: 'bare', version: 2 });
    assert.deepEqual((await store.list())[0]?.labels, {});
  });

  test('unknown names, versions and labels are not_found, listing what exists', async () => {
    const store = await freshStore();
    await store.publish('known', draft());
    await rejectsWith(store.resolve('nope'), 'not_found', /stacks: known/);
    await rejectsWith(store.resolve('known@9'), 'not_found', /versions: 1/);
    await rejectsWith(store.resolve('known@stable'), 'not_found', /labels: latest=1/);
    await rejectsWith(store.load('known@9'), 'not_found');
    await rejectsWith(store.listVersions('nope'), 'not_found');
    await rejectsWith(store.setLabel('known', 'stable', 5), 'not_found', /versions: 1/);
    await rejectsWith(store.removeLabel('known', 'stable'), 'not_found');
    await rejectsWith(store.moduleDir('known', 3), 'not_found');
  });

  test('bad names, labels, references and drafts are invalid_argument', async () => {
    const store = await freshStore();
    await rejectsWith(store.publish('Bad Name', draft()), 'invalid_argument');
    await rejectsWith(store.publish('../escape', draft()), 'invalid_argument');
    await rejectsWith(store.resolve('.hidden'), 'invalid_argument');
    await rejectsWith(store.resolve('ok@'), 'invalid_argument');
    await rejectsWith(store.publish('ok', draft(), { labels: ['Stable'] }), 'invalid_argument');

    const short = draft();
    short.modules = short.modules.slice(0, 1);
    await rejectsWith(store.publish('ok', short), 'invalid_argument', /1 module models for 2/);
    const badDir = draft();
    badDir.manifest.modules[1]!.dir = 'module-7';
    await rejectsWith(store.publish('ok', badDir), 'invalid_argument', /module-2/);

    assert.deepEqual(await store.list(), []);
  });

  test('leftover .tmp-* directories are ignored and cleaned up', async () => {
    const store = await freshStore();
    await store.publish('crashy', draft());
    const leftover = join(store.root, 'crashy', '.tmp-x');
    await mkdir(join(leftover, 'module-1'), { recursive: true });
    await writeFile(join(leftover, 'manifest.json'), '{"half": ');
    await mkdir(join(store.root, 'ghost', '.tmp-y'), { recursive: true });
    await mkdir(join(store.root, 'crashy', 'not-a-version'));

    assert.deepEqual(await store.list(), [
      { name: 'crashy', versions: [1], labels: { latest: 1 } },
    ]);
    assert.deepEqual(await store.resolve('crashy'), { name: 'crashy', version: 1 });
    assert.equal((await store.publish('crashy', draft())).version, 2);
    await rejectsWith(store.resolve('ghost'), 'not_found');

    assert.deepEqual(await store.cleanupTemp('crashy'), []); // too young by default
    assert.deepEqual(await store.cleanupTemp(undefined, { olderThanMs: 0 }), [
      leftover,
      join(store.root, 'ghost', '.tmp-y'),
    ]);
    assert.deepEqual(await readdir(join(store.root, 'crashy')), [
      '1',
      '2',
      'labels.history.ndjson',
      'labels.json',
      'not-a-version',
    ]);
  });

  test('a truncated weights.bin or a malformed manifest makes the version model_unavailable, naming the file in the store', async () => {
    const store = await freshStore();
    await store.publish('broken', draft());
    await store.publish('broken', draft());
    const weights = join(await store.moduleDir('broken@1', 2), 'weights.bin');
    await truncate(weights, 5);
    await rejectsWith(
      store.load('broken@1'),
      'model_unavailable',
      /^broken@1 is unavailable: broken\/1\/module-2\/model\.json: the weight files hold 5 bytes/,
    );

    const manifestFile = join(store.root, 'broken', '2', 'manifest.json');
    const manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as StackManifest;
    await writeFile(manifestFile, JSON.stringify({ ...manifest, format: 'gim-stack/0' }));
    await rejectsWith(
      store.loadManifest('broken@2'),
      'model_unavailable',
      /^broken@2 is unavailable: broken\/2\/manifest\.json: format/,
    );
    await writeFile(manifestFile, JSON.stringify({ ...manifest, modules: 'none' }));
    await rejectsWith(store.load('broken@2'), 'model_unavailable', /modules/);
    await writeFile(manifestFile, '{');
    await rejectsWith(
      store.load('broken@2'),
      'model_unavailable',
      /^broken@2 is unavailable: broken\/2\/manifest\.json is not valid JSON$/,
    );
  });

  test('concurrent publishes get distinct versions and latest ends on the newest', async () => {
    const store = await freshStore();
    const published = await Promise.all([1, 2, 3].map(() => store.publish('race', draft())));
    assert.deepEqual(published.map((m) => m.version).sort(), [1, 2, 3]);
    for (const m of published) {
      assert.equal((await store.loadManifest(`race@${m.version}`)).version, m.version);
    }
    assert.deepEqual(await store.list(), [
      { name: 'race', versions: [1, 2, 3], labels: { latest: 3 } },
    ]);
    assert.deepEqual(await readdir(join(store.root, 'race')), [
      '1',
      '2',
      '3',
      'labels.history.ndjson',
      'labels.json',
    ]);
  });
});

describe('tfjs files', () => {
  test('fileSystemHandler saves and loads a LayersModel', async () => {
    const dir = join(tmp, 'handler');
    await models[0]!.save(fileSystemHandler(dir));
    const loaded = await tf.loadLayersModel(fileSystemHandler(dir));
    const [a, b] = tf.tidy(() => [
      (models[0]!.predict(input) as tf.Tensor).dataSync(),
      (loaded.predict(input) as tf.Tensor).dataSync(),
    ]);
    assert.deepEqual(b, a);
    loaded.dispose();
  });

  test('weights split over several files load as one buffer', async () => {
    const dir = join(tmp, 'sharded');
    await saveModelArtifacts(dir, artifacts[0]!);
    const modelJson = JSON.parse(
      await readFile(join(dir, 'model.json'), 'utf8'),
    ) as tf.io.ModelJSON;
    const bytes = await readFile(join(dir, 'weights.bin'));
    await mkdir(join(dir, 'shards'));
    await writeFile(join(dir, 'shards', 'a.bin'), bytes.subarray(0, 10));
    await writeFile(join(dir, 'shards', 'b.bin'), bytes.subarray(10));
    modelJson.weightsManifest = [
      { paths: ['shards/a.bin', 'shards/b.bin'], weights: modelJson.weightsManifest[0]!.weights },
    ];
    await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
    const loaded = await loadModelArtifacts(join(dir, 'model.json'));
    assert.deepEqual((await predict([loaded, artifacts[1]!]))[0], (await predict(artifacts))[0]);

    modelJson.weightsManifest[0]!.paths = ['../outside.bin'];
    await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
    await rejectsWith(loadModelArtifacts(dir), 'invalid_data', /leaves/);
    await rejectsWith(loadModelArtifacts(join(tmp, 'missing')), 'not_found');
  });

  test('saving weights that do not match their specs is invalid_argument', async () => {
    const bad = { ...artifacts[0]!, weightData: new ArrayBuffer(3) };
    await rejectsWith(saveModelArtifacts(join(tmp, 'bad'), bad), 'invalid_argument');
  });
});
