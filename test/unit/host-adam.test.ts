import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/gim/backend/index.js';
import { HostAdam } from '../../src/gim/training/host-adam.js';
import { Rng } from '../../src/gim/random.js';

before(async () => {
  await selectBackend({ force: 'wasm' });
});

/** Two variables with the same start, one trained by each optimiser on the same gradients. */
function twins(shape: number[], seed: number): [tf.Variable, tf.Variable] {
  const init = tf.randomNormal(shape, 0, 1, 'float32', seed);
  const pair: [tf.Variable, tf.Variable] = [tf.variable(init, true), tf.variable(init, true)];
  init.dispose();
  return pair;
}

function gradients(shapes: number[][], rng: Rng): tf.Tensor[] {
  return shapes.map((s) =>
    tf.tensor(
      Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => (rng.next() - 0.5) * 4),
      s,
    ),
  );
}

function maxRelativeDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = a.dataSync();
  const y = b.dataSync();
  let d = 0;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs((x[i] as number) - (y[i] as number)));
    m = Math.max(m, Math.abs(y[i] as number));
  }
  return d / m;
}

describe('HostAdam', () => {
  const shapes = [[3, 3, 1, 4], [4], [7, 5]];

  test('takes the same steps as tf.train.adam (20 steps, 3 variables)', () => {
    const vars = shapes.map((s, i) => twins(s, 10 + i));
    const reference = tf.train.adam(0.01);
    const host = new HostAdam(0.01);
    const rng = new Rng(3);
    for (let step = 0; step < 20; step++) {
      const grads = gradients(shapes, rng);
      reference.applyGradients(grads.map((g, i) => ({ name: vars[i]![0].name, tensor: g })));
      host.applyGradients(grads.map((g, i) => ({ name: vars[i]![1].name, tensor: g })));
      tf.dispose(grads);
    }
    for (const [a, b] of vars) {
      const moved = maxRelativeDiff(b, a);
      assert.ok(moved < 1e-5, `HostAdam differs from tf.train.adam by ${moved}`);
    }
    // The weights did move: the comparison above is not of two untouched copies.
    const start = tf.randomNormal(shapes[0]!, 0, 1, 'float32', 10);
    assert.ok(maxRelativeDiff(vars[0]![1], start) > 1e-2);
    start.dispose();
    reference.dispose();
    host.dispose();
    vars.flat().forEach((v) => v.dispose());
  });

  test('its state round-trips through tf.train.adam state and back (checkpoints move between them)', async () => {
    const [a, b] = twins([5, 3], 21);
    const [c] = twins([5, 3], 21);
    const rng = new Rng(5);
    const reference = tf.train.adam(0.02);
    for (let step = 0; step < 4; step++) {
      const [g] = gradients([[5, 3]], rng);
      reference.applyGradients([{ name: a.name, tensor: g! }]);
      g!.dispose();
    }
    // b has a's weights and a HostAdam resumed from the reference's state.
    b.assign(a);
    const state = await reference.getWeights();
    assert.deepEqual(
      state.map((w) => w.name),
      ['iter', `${a.name}/m`, `${a.name}/v`],
    );
    const host = new HostAdam(0.02);
    await host.setWeights(
      state.map((w) => ({ name: w.name.replace(a.name, b.name), tensor: w.tensor })),
    );
    assert.equal(host.iterations, 4);
    const [g] = gradients([[5, 3]], rng);
    reference.applyGradients([{ name: a.name, tensor: g! }]);
    host.applyGradients([{ name: b.name, tensor: g! }]);
    g!.dispose();
    assert.ok(maxRelativeDiff(b, a) < 1e-5);
    // And HostAdam's exported state is what tf.train.adam would have (same names, same moments).
    const exported = await host.getWeights();
    const again = await reference.getWeights();
    assert.equal(exported.length, 3);
    assert.equal(exported[0]!.tensor.dataSync()[0], 5);
    for (let i = 1; i < 3; i++)
      assert.ok(maxRelativeDiff(exported[i]!.tensor, again[i]!.tensor) < 1e-5);
    tf.dispose(exported.map((w) => w.tensor));
    again[0]!.tensor.dispose();
    state[0]!.tensor.dispose();
    reference.dispose();
    host.dispose();
    [a, b, c].forEach((v) => v.dispose());
  });

  test('leaks no tensors across steps', () => {
    const [v] = twins([4, 4], 31);
    const host = new HostAdam(0.01);
    const rng = new Rng(9);
    const step = () => {
      const [g] = gradients([[4, 4]], rng);
      host.applyGradients({ [v.name]: g! });
      g!.dispose();
    };
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) step();
    assert.equal(tf.memory().numTensors, before);
    host.dispose();
    v.dispose();
  });
});
