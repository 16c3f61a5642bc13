import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { imageTraining } from '../../src/gim/training/image-training.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { GreedyTrainer } from '../../src/gim/training/greedy-trainer.js';
import { resolveTrainConfig, type TrainConfig } from '../../src/gim/training/config.js';
import { trainImageStack } from '../../src/gim/training/train-image-stack.js';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { Rng } from '../../src/gim/random.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const FIXTURE = new URL('../fixtures/fashion-mnist-mini', import.meta.url).pathname;
const adapter = defaultImageAdapter({ mean: [0.29], std: [0.35] });
const CHANNELS = [4, 8, 8];
const N = 4;

function images(seed: number, n = N): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * 28 * 28 }, () => rng.next());
}

function makeTrainer(config: Partial<TrainConfig> = {}, seed = 11, residual?: number[]) {
  const stack = EncoderStack.create(
    adapter,
    visionModuleConfigs(adapter, CHANNELS, undefined, residual),
    seed,
  );
  return Object.assign(new GreedyTrainer(stack, resolveTrainConfig({ seed, ...config })), {
    stack,
  });
}

function snapshot(t: GreedyTrainer, m: number): Float32Array[] {
  return t.moduleVariables(m).map((v) => v.dataSync().slice() as Float32Array);
}

function assertBitIdentical(a: Float32Array[], b: Float32Array[], what: string) {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.deepEqual(x, b[i], `${what}: variable ${i} differs`));
}

/** One step on each conv route from the same start: the same losses and weights after. */
function sameStepBothRoutes(residual: number[] | undefined) {
  const batch = { data: images(12), n: N };
  const viaConv = makeTrainer({ convRoute: 'conv' }, 11, residual);
  const viaCols = makeTrainer({ convRoute: 'im2col' }, 11, residual);
  assert.equal(viaCols.config.convRoute, 'im2col');
  const la = viaConv.step(batch, [1, 2, 3], new Rng(4));
  const lb = viaCols.step(batch, [1, 2, 3], new Rng(4));
  la.forEach((l, i) =>
    assert.ok(Math.abs(l - (lb[i] as number)) < 1e-5, `loss ${i}: ${l} vs ${lb[i]}`),
  );
  for (const m of [1, 2, 3]) {
    const a = snapshot(viaConv, m);
    const b = snapshot(viaCols, m);
    a.forEach((x, i) =>
      x.forEach((v, j) => assert.ok(Math.abs(v - b[i]![j]!) < 1e-5, `module ${m}`)),
    );
  }
  [viaConv, viaCols].forEach((t) => (t.stack.dispose(), t.dispose()));
}

const plan = await testBackends();

describeEachBackend(plan, 'GreedyTrainer', () => {
  test('step-0 loss is close to ln(1 + N) for every module', () => {
    const t = makeTrainer();
    const losses = t.evaluate({ data: images(1), n: N }, new Rng(2));
    for (const l of losses) assert.ok(Math.abs(l - Math.log(17)) < 0.05, `step-0 loss ${l}`);
    t.stack.dispose();
    t.dispose();
  });

  for (const residual of [
    [1, 1, 1],
    [3, 3, 1],
  ])
    test(`im2col columns give the same module output as conv2d (residual kernels ${residual.join(',')})`, () => {
      const stack = EncoderStack.create(
        adapter,
        visionModuleConfigs(adapter, CHANNELS, undefined, residual),
        3,
      );
      tf.tidy(() => {
        let x = stack.patches(images(4), N);
        // The columns route exactly as greedy training takes it.
        const training = imageTraining(stack, { offsets: [2], convRoute: 'im2col' });
        for (const [i, m] of stack.modules.entries()) {
          const route = training.greedyForward?.(i + 1, x);
          assert.ok(route, 'the im2col route gives a forward pass');
          const viaCols = route.forward();
          const viaConv = m.apply(x);
          const diff = tf.max(tf.abs(tf.sub(viaCols, viaConv))).dataSync()[0] as number;
          route.dispose();
          assert.ok(diff < 1e-5, `module ${m.config.channels}: max diff ${diff}`);
          // The model.json topology computes the same function as the hand-written forward.
          const viaModel = m.model.predict(x) as tf.Tensor;
          const d2 = tf.max(tf.abs(tf.sub(viaModel, viaConv))).dataSync()[0] as number;
          assert.ok(d2 < 1e-5, `LayersModel differs by ${d2}`);
          x = viaConv;
        }
      });
      stack.dispose();
    });

  test('conv and im2col routes take the same training step (modules of two 3x3 convs too)', () => {
    for (const residual of [undefined, [3, 3, 3]]) sameStepBothRoutes(residual);
  });

  test('parallel step: module j changes only through its own loss', () => {
    // Module m draws its randomness before any deeper module, so a step in which modules 1..m
    // learn must leave module m exactly as a step in which all three learn.
    const batch = { data: images(5), n: N };
    const all = makeTrainer();
    all.step(batch, [1, 2, 3], new Rng(9));
    for (const m of [1, 2]) {
      const upTo = makeTrainer();
      upTo.step(
        batch,
        Array.from({ length: m }, (_, i) => i + 1),
        new Rng(9),
      );
      assertBitIdentical(snapshot(all, m), snapshot(upTo, m), `module ${m}`);
      upTo.stack.dispose();
      upTo.dispose();
    }
    // ... and module 3 did learn.
    const untouched = makeTrainer();
    assert.notDeepEqual(snapshot(all, 3)[0], snapshot(untouched, 3)[0]);
    [all, untouched].forEach((t) => (t.stack.dispose(), t.dispose()));
  });

  test('sequential: frozen modules stay bit-identical', () => {
    const t = makeTrainer({ schedule: 'sequential' });
    const before1 = snapshot(t, 1);
    const before3 = snapshot(t, 3);
    const before2 = snapshot(t, 2);
    for (let i = 0; i < 3; i++) t.step({ data: images(6 + i), n: N }, [2], new Rng(i));
    assertBitIdentical(snapshot(t, 1), before1, 'module 1');
    assertBitIdentical(snapshot(t, 3), before3, 'module 3');
    assert.notDeepEqual(snapshot(t, 2)[0], before2[0], 'module 2 should have learnt');
    t.stack.dispose();
    t.dispose();
  });

  for (const schedule of ['parallel', 'sequential', 'end-to-end'] as const) {
    test(`${schedule}: tensor count does not grow across steps and embeds`, () => {
      const t = makeTrainer({ schedule });
      const active = schedule === 'sequential' ? [2] : [1, 2, 3];
      const batch = { data: images(7), n: N };
      const rng = new Rng(1);
      t.step(batch, active, rng); // the optimiser creates its moments on the first step
      const start = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) t.step(batch, active, rng);
      assert.equal(tf.memory().numTensors, start, 'training steps leaked tensors');
      for (let i = 0; i < 3; i++) tf.dispose([...t.stack.embed(batch.data, N, [1, 3]).values()]);
      assert.equal(tf.memory().numTensors, start, 'embed calls leaked tensors');
      t.stack.dispose();
      t.dispose();
    });
  }

  test('a trainer and its stack, stepped and disposed, leave no tensor behind', () => {
    const start = tf.memory();
    const t = makeTrainer();
    t.step({ data: images(9), n: N }, [1, 2, 3], new Rng(1));
    t.stack.dispose();
    t.dispose();
    assert.equal(tf.memory().numTensors, start.numTensors);
    assert.equal(tf.memory().numBytes, start.numBytes);
  });

  test('end-to-end trains every module from the one last loss', () => {
    const t = makeTrainer({ schedule: 'end-to-end' });
    const before1 = snapshot(t, 1)[0];
    t.step({ data: images(8), n: N }, [3], new Rng(3));
    assert.notDeepEqual(snapshot(t, 1)[0], before1);
    t.stack.dispose();
    t.dispose();
  });
});

describeEachBackend(plan, 'training on the Fashion-MNIST fixture', (backend) => {
  test('a short run lowers every module loss; resume continues from the checkpoint', async () => {
    const dataset = await loadFashionMnist(FIXTURE, 'train');
    const dir = await mkdtemp(join(tmpdir(), 'gim-train-'));
    try {
      const firstEpochs: (number | null)[][] = [];
      const job = {
        dataset,
        channels: [8, 16, 16],
        train: { epochs: 2, batchSize: 16, seed: 3, maxStepsPerEpoch: 12, learningRate: 3e-3 },
        backend,
        checkpointDir: dir,
      };
      const abort = new AbortController();
      // Stop after the first epoch's checkpoint, as a crash would.
      const part = await trainImageStack({
        ...job,
        signal: abort.signal,
        callbacks: {
          onEpochEnd: (e) => firstEpochs.push(e.losses),
          onCheckpoint: () => abort.abort(),
        },
      });
      part.stack.dispose();
      const resumed = await trainImageStack({ ...job, resume: true });
      assert.equal(resumed.result.steps, 24, 'resume should run only the second epoch');
      const first = firstEpochs[0] as number[];
      const last = resumed.result.finalLosses as number[];
      for (let m = 0; m < 3; m++)
        assert.ok(last[m]! < first[m]! - 0.02, `module ${m + 1}: ${first[m]} -> ${last[m]}`);
      assert.ok(first.every((l) => l > 0 && l < Math.log(17) + 0.1));
      // The interrupted-and-resumed run ends where an uninterrupted one does.
      const straight = await trainImageStack({ ...job, checkpointDir: join(dir, 'straight') });
      for (let m = 1; m <= 3; m++) {
        const a = resumed.stack.layer(m).variables.map((v) => v.dataSync());
        const b = straight.stack.layer(m).variables.map((v) => v.dataSync());
        a.forEach((x, i) =>
          x.forEach((v, j) =>
            assert.ok(
              Math.abs(v - b[i]![j]!) <= 1e-5 * (1 + Math.abs(v)),
              `module ${m} var ${i}[${j}]`,
            ),
          ),
        );
      }
      assert.deepEqual(
        resumed.result.finalLosses.map((l) => l!.toFixed(4)),
        straight.result.finalLosses.map((l) => l!.toFixed(4)),
      );
      straight.stack.dispose();
      resumed.stack.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
