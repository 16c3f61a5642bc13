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
      child.stack.dispose();
      stack.dispose();
      again.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
