import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { EncoderStack, gridShape } from '../../src/gim/encoders/encoder-stack.js';
import { POOLINGS, poolGrid, pooledDim } from '../../src/gim/encoders/pooling.js';
import { trainImageStack } from '../../src/gim/training/train-image-stack.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const FIXTURE = new URL('../fixtures/fashion-mnist-mini', import.meta.url).pathname;
const plan = await testBackends();

describeEachBackend(plan, 'stack round trip', (backend) => {
  test('a trained stack saved and loaded gives bit-identical embeddings; manifest says how it was made', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gim-store-'));
    try {
      const dataset = await loadFashionMnist(FIXTURE, 'test');
      const { stack, draft } = await trainImageStack({
        dataset,
        channels: [4, 8, 8],
        train: { epochs: 1, batchSize: 8, maxStepsPerEpoch: 3, seed: 5 },
        backend,
      });
      const store = new StackStore(dir);
      const manifest = await store.publish('tiny', draft, { labels: ['latest', 'stable'] });
      assert.equal(manifest.version, 1);
      assert.equal(manifest.backend, backend);
      assert.equal(manifest.training.steps, 3);
      assert.equal(manifest.data.items, 200);
      assert.match(manifest.data.fingerprint, /^[0-9a-f]{64}$/);
      assert.deepEqual(
        manifest.modules.map((m) => m.outputShape),
        [
          [8, 8, 4],
          [4, 4, 8],
          [2, 2, 8],
        ],
      );
      assert.ok(manifest.modules.every((m) => m.finalLoss !== null && m.finalLoss > 0));

      const loaded = await store.load('tiny@stable');
      const again = await EncoderStack.fromManifest(loaded.manifest, loaded.modules);
      const batch = await dataset.read([0, 1, 2, 3, 4]);
      const a = stack.embed(batch.images, batch.n, [1, 2, 3]);
      const b = again.embed(batch.images, batch.n, [1, 2, 3]);
      for (const layer of [1, 2, 3]) {
        assert.deepEqual(a.get(layer)!.dataSync(), b.get(layer)!.dataSync(), `layer ${layer}`);
        for (const p of POOLINGS) {
          const g = a.get(layer)!;
          const pooled = poolGrid(g.dataSync() as Float32Array, gridShape(g), p);
          const c = stack.layer(layer).config.channels;
          assert.equal(pooled.length, 5 * pooledDim(p, 6, 6, c));
          // The same pooling computed by tfjs ops.
          const ref = tf.tidy(() => {
            if (p === 'mean') return tf.mean(g, [1, 2]);
            if (p === 'max') return tf.max(g, [1, 2]);
            if (p === 'meanstd') {
              const { mean, variance } = tf.moments(g, [1, 2]);
              return tf.concat([mean, tf.sqrt(variance)], 1);
            }
            if (p === 'none') return tf.reshape(g, [5, -1]);
            const b = p === 'grid2' ? 2 : 3;
            return tf.reshape(tf.avgPool(g, b, b, 'valid'), [5, -1]);
          });
          const r = ref.dataSync();
          pooled.forEach((v, i) => assert.ok(Math.abs(v - r[i]!) < 1e-6, `${p}[${i}]`));
          ref.dispose();
        }
      }
      tf.dispose([...a.values(), ...b.values()]);

      // Retraining from module 3 keeps modules 1-2 of the parent bit for bit.
      const child = await trainImageStack({
        dataset,
        parent: loaded,
        train: { epochs: 1, batchSize: 8, maxStepsPerEpoch: 2, seed: 6, fromModule: 3 },
        backend,
      });
      const v2 = await store.publish('tiny', child.draft);
      assert.equal(v2.version, 2);
      assert.deepEqual(v2.parent, { version: 1, fromModule: 3 });
      assert.deepEqual(
        v2.modules.slice(0, 2).map((m) => m.finalLoss),
        manifest.modules.slice(0, 2).map((m) => m.finalLoss),
      );
      for (const m of [1, 2, 3]) {
        const same = child.stack
          .layer(m)
          .variables.every((v, i) =>
            tf.util.arraysEqual(v.dataSync(), again.layer(m).variables[i]!.dataSync()),
          );
        assert.equal(same, m < 3, `module ${m} should ${m < 3 ? 'stay frozen' : 'change'}`);
      }
      assert.equal((await store.resolve('tiny')).version, 1, 'plain name follows the stable label');
      assert.equal((await store.resolve('tiny@latest')).version, 2);

      // Growing: more channels than the parent has add modules on top; the parent's stay frozen
      // and only the new one trains, from the initial weights a fresh 4-module stack would have.
      const grown = await trainImageStack({
        dataset,
        parent: loaded,
        channels: [4, 8, 8, 16],
        train: { epochs: 1, batchSize: 8, maxStepsPerEpoch: 2, seed: 5 },
        backend,
      });
      const v3 = await store.publish('tiny', grown.draft);
      assert.deepEqual(v3.parent, { version: 1, fromModule: 4 });
      assert.deepEqual(
        v3.modules.map((m) => m.outputShape),
        [
          [8, 8, 4],
          [4, 4, 8],
          [2, 2, 8],
          [1, 1, 16],
        ],
      );
      assert.deepEqual(
        v3.modules.slice(0, 3).map((m) => m.finalLoss),
        manifest.modules.map((m) => m.finalLoss),
      );
      assert.ok(v3.modules[3]!.finalLoss! > 0);
      for (const m of [1, 2, 3])
        assert.ok(
          grown.stack
            .layer(m)
            .variables.every((v, i) =>
              tf.util.arraysEqual(v.dataSync(), again.layer(m).variables[i]!.dataSync()),
            ),
          `module ${m} stays frozen`,
        );
      const fresh = EncoderStack.create(grown.stack.adapter, grown.stack.moduleConfigs, 5);
      assert.ok(
        !grown.stack
          .layer(4)
          .variables.every((v, i) =>
            tf.util.arraysEqual(v.dataSync(), fresh.layer(4).variables[i]!.dataSync()),
          ),
        'module 4 trained',
      );
      const reloaded = await store.load('tiny@3');
      const deep = await EncoderStack.fromManifest(reloaded.manifest, reloaded.modules);
      const g4 = deep.embed(batch.images, batch.n, [4]).get(4)!;
      assert.deepEqual(g4.shape, [5, 6, 6, 16]);
      tf.dispose(g4);
      // A list that does not start with the parent's modules is refused before training.
      await assert.rejects(
        trainImageStack({
          dataset,
          parent: loaded,
          channels: [4, 16, 8, 16],
          train: { epochs: 1, batchSize: 8, maxStepsPerEpoch: 1, seed: 5 },
          backend,
        }),
        /channels 4\/16\/8\/16 \(strides 1\/2\/2\/2\) do not extend the stack's 4\/8\/8/,
      );
      await assert.rejects(
        trainImageStack({
          dataset,
          parent: loaded,
          channels: [4, 8],
          train: { epochs: 1, batchSize: 8, maxStepsPerEpoch: 1, seed: 5 },
          backend,
        }),
        /channels 4\/8 \(strides 1\/2\) do not extend the stack's 4\/8\/8 \(strides 1\/2\/2\)/,
      );
      const base = EncoderStack.create(fresh.adapter, fresh.moduleConfigs.slice(0, 3), 5);
      const sprouted = base.grow(fresh.moduleConfigs, 5); // owns base's modules now
      assert.ok(
        sprouted
          .layer(4)
          .variables.every((v, i) =>
            tf.util.arraysEqual(v.dataSync(), fresh.layer(4).variables[i]!.dataSync()),
          ),
        "a new module starts at a fresh stack's initial weights for that seed",
      );
      for (const s of [sprouted, fresh, deep, grown.stack, child.stack, stack, again]) s.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
