/**
 * Parity of each available native backend (tfjs-node: libtensorflow's oneDNN/Eigen kernels, and
 * our `Step` kernel) with wasm (XNNPACK and our registered training kernels): the same inputs and
 * seeds on both, in one process, compared within the tolerances below. wasm is the reference.
 *
 * Why tolerances, and why these: both backends compute in float32, but they sum in different
 * orders (blocked and vectorised dot products, another split of convolutions into GEMMs), so each
 * reduction of n terms differs by a few float32 ulp (6e-8 relative) times up to sqrt(n)..n,
 * relative to the sum of the terms' magnitudes. An entry that is a sum with cancellation can have
 * a large error relative to itself, so every tensor is compared by its max abs difference relative
 * to the reference's max abs value (`relErr`). Each test prints the errors it observed.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { LinearHead } from '../../src/gim/classify/linear-head.js';
import { LinearProbe, type FeatureSet } from '../../src/gim/classify/linear-probe.js';
import { fitHead } from '../../src/gim/classify/fit-head.js';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { AudioModule, audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { EncoderStack, visionModuleConfigs } from '../../src/gim/encoders/encoder-stack.js';
import { gridPairs, infoNce, sampleNegatives } from '../../src/gim/losses/info-nce.js';
import { Predictor } from '../../src/gim/losses/predictor.js';
import { defaultImageAdapter } from '../../src/gim/modality/image.js';
import { Rng } from '../../src/gim/random.js';
import { StackStore } from '../../src/gim/store/stack-store.js';
import { resolveTrainConfig } from '../../src/gim/training/config.js';
import { GreedyTrainer } from '../../src/gim/training/greedy-trainer.js';
import { HostAdam } from '../../src/gim/training/host-adam.js';
import {
  describeSkip,
  testBackends,
  useBackend,
  type NativeBackend,
  type TestBackend,
} from '../helpers/backends.js';

/** GIM losses (~2.8, per module): InfoNCE runs in JS (float64) on each backend's encodings. */
const LOSS_TOL = 1e-5;
/** Forward outputs (module activations, probabilities): a few convolutions/matMuls deep. */
const FORWARD_TOL = 1e-5;
/** Gradients: one more reduction over the batch (and, for weights, over positions). */
const GRAD_TOL = 1e-4;
/** Embeddings of the shipped stack at every layer (issue 12's bound). */
const EMBED_TOL = 1e-4;
/**
 * Weights after one HostAdam step. The first Adam step moves a weight by u(g) = lr·g / (|g| + eps):
 * about ±lr whatever |g|, so a gradient entry whose two values differ by d ≥ |g| may have the
 * other sign on the other backend and legitimately move its weight the other way (by up to 2·lr).
 * Where d < |g| the sign is the same and |u(g_a) - u(g_b)| ≤ lr·eps·d / (|g| - d + eps)² (the
 * slope of u, taken where it is steepest): the two weights must agree within that plus the
 * float32 rounding of the stored weight, FLOAT32_ROUNDING·(|w| + lr). Entries of the first kind
 * must be rare (MAX_UNCERTAIN_SHARE); every variable must have moved by about lr.
 */
const FLOAT32_ROUNDING = 2 ** -23;
const MAX_UNCERTAIN_SHARE = 0.01;
/**
 * A linear head fitted on each backend (fitHead: 30 epochs of minibatch Adam, lr 1e-2, on a convex
 * loss): the per-step differences are forward-sized and the loss pulls both fits to the same
 * optimum; a gradient sign flipped by noise at some step (see the Adam note above) would cost up
 * to 2·lr on one weight and show up here.
 */
const HEAD_FIT_TOL = 1e-4;

const plan = await testBackends();
const FIXTURE = new URL('../fixtures/fashion-mnist-mini', import.meta.url).pathname;
const MODELS = new URL('../../models', import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------
// Comparison helpers

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] as number));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number));
    // A NaN on either side is a failure, not a small difference.
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

/** max |actual - reference| / max |reference| (the reference must not be all zero). */
function relErr(actual: ArrayLike<number>, reference: ArrayLike<number>): number {
  const scale = maxAbs(reference);
  assert.ok(scale > 0, 'the reference is all zeros: nothing to compare');
  return maxAbsDiff(actual, reference) / scale;
}

/** Asserts relErr ≤ tol and returns it (for the printed summary). */
function assertClose(
  actual: ArrayLike<number>,
  reference: ArrayLike<number>,
  tol: number,
  what: string,
): number {
  const e = relErr(actual, reference);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol}`);
  return e;
}

const copy = (t: tf.Tensor): Float32Array => Float32Array.from(t.dataSync());
const fmt = (e: number): string => e.toExponential(1);

/** Runs f on `native`, then on wasm (so the file ends on wasm); f must return plain arrays. */
async function onBoth<T>(native: NativeBackend, f: () => T | Promise<T>) {
  const run = async (b: TestBackend) => {
    await useBackend(b);
    const tensors = tf.memory().numTensors;
    const out = await f();
    assert.equal(tf.memory().numTensors, tensors, `the computation on ${b} leaked tensors`);
    return out;
  };
  const n = await run(native);
  const w = await run('wasm');
  return { native: n, wasm: w };
}

function uniform(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.next());
}

// ---------------------------------------------------------------------------------------------
// The computations compared

const adapter = defaultImageAdapter({ mean: [0.29], std: [0.35] });
const CHANNELS = [4, 8, 8];
const LR = 1e-3;

interface GimStep {
  /** Per module: its variables (conv kernel, bias, 1x1 kernel, bias, predictor). */
  initial: Float32Array[][];
  losses: number[];
  grads: Float32Array[][];
  after: Float32Array[][];
  /** HostAdam's learning rate and epsilon. */
  lr: number;
  epsilon: number;
}

/** One parallel-schedule step of a 3-module stack on 4 images, recording what the optimisers get. */
async function gimStep(): Promise<GimStep> {
  const dataset = await loadFashionMnist(FIXTURE, 'train');
  const batch = await dataset.read([0, 1, 2, 3]);
  const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, CHANNELS), 21);
  const trainer = new GreedyTrainer(
    stack,
    resolveTrainConfig({ seed: 21, schedule: 'parallel', learningRate: LR }),
  );
  try {
    const modules = stack.modules.map((_, i) => i + 1);
    const read = (m: number) => trainer.moduleVariables(m).map(copy);
    const initial = modules.map(read);
    const grads: Float32Array[][] = [];
    trainer.optimizers.forEach((optimizer, i) => {
      const apply = optimizer.applyGradients.bind(optimizer);
      optimizer.applyGradients = (g) => {
        const named = Array.isArray(g) ? Object.fromEntries(g.map((x) => [x.name, x.tensor])) : g;
        grads[i] = trainer.moduleVariables(i + 1).map((v) => {
          const gradient = named[v.name];
          assert.ok(gradient, `module ${i + 1}: no gradient for ${v.name}`);
          return copy(gradient);
        });
        apply(g);
      };
    });
    const losses = trainer.step({ data: batch.images, n: batch.n }, modules, new Rng(4));
    const adam = trainer.optimizers[0];
    assert.ok(adam instanceof HostAdam);
    const { learningRate: lr, epsilon } = adam;
    return { initial, losses, grads, after: modules.map(read), lr, epsilon };
  } finally {
    trainer.dispose();
    stack.dispose();
  }
}

/** InfoNCE on [M, K*C] predictions and [M, C] encodings, and through a small encoder. */
function infoNceCase() {
  const rng = new Rng(5);
  const [images, rows, cols, C, D] = [2, 6, 6, 8, 16];
  const M = images * rows * cols;
  const grid = gridPairs(images, rows, cols, [2, 3]);
  const K = grid.steps.length;
  const negatives = sampleNegatives(grid, 8, rng);
  const P = uniform(rng, M * K * C, -0.5, 0.5);
  const Z = uniform(rng, M * C, -0.5, 0.5);
  const X = uniform(rng, M * D);
  const A0 = uniform(rng, D * C, -0.5, 0.5);
  const loss = (p: tf.Tensor, z: tf.Tensor) =>
    infoNce(p as tf.Tensor2D, z as tf.Tensor2D, grid, negatives);
  const direct = tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads(loss)([
      tf.tensor2d(P, [M, K * C]),
      tf.tensor2d(Z, [M, C]),
    ]);
    return { value: value.dataSync()[0] as number, grads: grads.map(copy) };
  });
  // z = relu(x A), predictions z W: the backend's matMul and ReLU gradients feed the loss's.
  const A = tf.tidy(() => tf.variable(tf.tensor2d(A0, [D, C])));
  const predictor = new Predictor(C, K, 9);
  try {
    const encoded = tf.tidy(() => {
      const x = tf.tensor2d(X, [M, D]);
      const { value, grads } = tf.variableGrads(() => {
        const z = tf.relu(tf.matMul(x, A)) as tf.Tensor2D;
        return infoNce(predictor.predict(z), z, grid, negatives);
      }, [A, predictor.weight]);
      return {
        value: value.dataSync()[0] as number,
        grads: [A, predictor.weight].map((v) => copy(grads[v.name]!)),
      };
    });
    return { direct, encoded };
  } finally {
    A.dispose();
    predictor.dispose();
  }
}

/** Forward output and weight gradients of loss = sum(y * R) for an audio module. */
function audioCase(which: 'conv1' | 'conv2' | 'gru') {
  const configs = audioModuleConfigs(8, 8);
  const config = configs[which === 'conv1' ? 0 : which === 'conv2' ? 1 : 5]!;
  const module = AudioModule.create(config, 31);
  const rng = new Rng(17);
  const shape: [number, number, number, number] =
    which === 'conv1' ? [2, 1, 800, 1] : which === 'conv2' ? [2, 1, 160, 8] : [2, 1, 24, 8];
  const X = uniform(rng, shape[0] * shape[2] * shape[3]);
  try {
    return tf.tidy(() => {
      const x = tf.tensor4d(X, shape);
      const y = module.apply(x);
      const r = tf.tensor(uniform(rng, y.size), y.shape);
      const vars = module.variables;
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(module.apply(x), r)), vars);
      return {
        initial: vars.map(copy),
        output: copy(y),
        loss: value.dataSync()[0] as number,
        grads: vars.map((v) => copy(grads[v.name]!)),
      };
    });
  } finally {
    module.dispose();
  }
}

/** Per layer, the shipped stack's patch-grid embeddings of 8 fixture images. */
async function shippedEmbeddings(): Promise<Float32Array[]> {
  const loaded = await new StackStore(MODELS).load('fashion-gim@1');
  assert.equal(loaded.manifest.version, 1);
  const dataset = await loadFashionMnist(FIXTURE, 'test');
  const batch = await dataset.read([0, 1, 2, 3, 4, 5, 6, 7]);
  const stack = await EncoderStack.fromManifest(loaded.manifest, loaded.modules);
  try {
    const layers = stack.modules.map((_, i) => i + 1);
    const grids = stack.embed(batch.images, batch.n, layers);
    const out = layers.map((l) => copy(grids.get(l)!));
    tf.dispose([...grids.values()]);
    return out;
  } finally {
    stack.dispose();
  }
}

/** Three overlapping Gaussian-ish blobs in 6 dimensions. */
function blobs(perClass: number, seed: number): FeatureSet {
  const rng = new Rng(seed);
  const dim = 6;
  const n = 3 * perClass;
  const y = Int32Array.from({ length: n }, (_, i) => i % 3);
  const x = new Float32Array(n * dim);
  y.forEach((c, i) => {
    for (let d = 0; d < dim; d++) x[i * dim + d] = (d === c ? 1.5 : 0) + 2 * rng.next() - 1;
  });
  return { x, y, n, dim };
}

// ---------------------------------------------------------------------------------------------

describe('test backends', () => {
  test('every available backend is selectable and reports itself; wasm is one unless excluded', async (t) => {
    for (const name of plan.available) {
      const info = await useBackend(name);
      assert.equal(info.name, name);
      assert.equal(info.tfjsBackend, name === 'wasm' ? 'wasm' : 'tensorflow');
      assert.equal(plan.info.get(name)?.tfjsBackend, info.tfjsBackend);
    }
    const wasmSkip = plan.skipped.find((s) => s.name === 'wasm');
    assert.ok(plan.available.includes('wasm') || wasmSkip?.probed === false, 'wasm must load');
    for (const s of plan.skipped) assert.ok(s.reason.length > 0, `${s.name} has no reason`);
    t.diagnostic(`ran on: ${plan.available.join(', ')}`);
    for (const s of plan.skipped) t.diagnostic(`skipped ${describeSkip(s)}`);
    await useBackend(plan.available.includes('wasm') ? 'wasm' : plan.available[0]!);
  });
});

for (const native of ['tensorflow-gpu', 'tensorflow'] as const) {
  const title = `${native} matches wasm`;
  const nativeSkip = plan.skipped.find((s) => s.name === native);
  const wasmSkip = plan.skipped.find((s) => s.name === 'wasm');
  const skip =
    nativeSkip?.reason ?? (wasmSkip ? `wasm (the reference): ${wasmSkip.reason}` : undefined);
  if (skip !== undefined) {
    test(title, { skip });
    continue;
  }
  describe(title, () => {
    test('GIM image training step (parallel, 3 modules): same init, losses, gradients, updated weights', async (t: TestContext) => {
      const { native: a, wasm: b } = await onBoth(native, gimStep);
      a.initial.forEach((vars, m) =>
        vars.forEach((v, i) =>
          assert.deepEqual(v, b.initial[m]![i], `module ${m + 1} variable ${i}: initial weights`),
        ),
      );
      const lossErr = a.losses.map((l, m) => {
        const e = Math.abs(l - b.losses[m]!) / Math.abs(b.losses[m]!);
        assert.ok(e <= LOSS_TOL, `module ${m + 1} loss ${l} vs ${b.losses[m]}`);
        return e;
      });
      let gradErr = 0;
      let weightErr = 0; // max |Δw| / its allowed bound, over the sign-certain entries
      let weightAbs = 0;
      let uncertain = 0;
      let total = 0;
      const { lr, epsilon } = b;
      a.grads.forEach((vars, m) =>
        vars.forEach((ga, i) => {
          const what = `module ${m + 1} variable ${i}`;
          const gb = b.grads[m]![i]!;
          gradErr = Math.max(gradErr, assertClose(ga, gb, GRAD_TOL, `${what} gradient`));
          const [w0, wa, wb] = [b.initial[m]![i]!, a.after[m]![i]!, b.after[m]![i]!];
          for (const w of [wa, wb]) {
            const moved = maxAbsDiff(w, w0);
            assert.ok(moved > 0.5 * lr && moved < 1.5 * lr, `${what} moved by ${moved}`);
          }
          for (let j = 0; j < wa.length; j++) {
            total++;
            const g = Math.abs(gb[j]!);
            const d = Math.abs(ga[j]! - gb[j]!);
            const dw = Math.abs(wa[j]! - wb[j]!);
            const rounding = FLOAT32_ROUNDING * (Math.abs(wb[j]!) + lr);
            if (d > 0 && d >= g) {
              uncertain++;
              assert.ok(dw <= 2 * lr + rounding, `${what}[${j}] moved by more than an Adam step`);
              continue;
            }
            const bound = (lr * epsilon * d) / (g - d + epsilon) ** 2 + rounding;
            assert.ok(dw <= bound, `${what}[${j}]: ${wa[j]} vs ${wb[j]} (g ${gb[j]} ± ${d})`);
            weightErr = Math.max(weightErr, dw / bound);
            weightAbs = Math.max(weightAbs, dw);
          }
        }),
      );
      assert.ok(uncertain <= MAX_UNCERTAIN_SHARE * total, `${uncertain} of ${total} weights`);
      t.diagnostic(
        `loss ${fmt(Math.max(...lossErr))}, gradients ${fmt(gradErr)}, weights ${fmt(weightAbs)} ` +
          `abs (${weightErr.toFixed(2)} of the bound); ${uncertain}/${total} of uncertain sign`,
      );
    });

    test('InfoNCE value and gradients, direct (tf.valueAndGrads) and through an encoder (tf.variableGrads)', async (t) => {
      const { native: a, wasm: b } = await onBoth(native, infoNceCase);
      const errs: number[] = [];
      for (const k of ['direct', 'encoded'] as const) {
        errs.push(assertClose([a[k].value], [b[k].value], LOSS_TOL, `${k} loss`));
        a[k].grads.forEach((g, i) =>
          errs.push(assertClose(g, b[k].grads[i]!, GRAD_TOL, `${k} gradient ${i}`)),
        );
      }
      t.diagnostic(
        `loss / grads direct ${errs.slice(0, 3).map(fmt)}, encoded ${errs.slice(3).map(fmt)}`,
      );
    });

    for (const which of ['conv1', 'conv2', 'gru'] as const) {
      test(`audio module ${which}: forward output and weight gradients`, async (t) => {
        const { native: a, wasm: b } = await onBoth(native, () => audioCase(which));
        // Absolute: the biases start at zero. (The GRU's orthogonal init runs a QR on the backend.)
        const init = a.initial.map((v, i) => maxAbsDiff(v, b.initial[i]!));
        init.forEach((e, i) => assert.ok(e <= FORWARD_TOL, `initial weight ${i}: ${e}`));
        const out = assertClose(a.output, b.output, FORWARD_TOL, 'output');
        const grads = a.grads.map((g, i) => assertClose(g, b.grads[i]!, GRAD_TOL, `gradient ${i}`));
        t.diagnostic(
          `init ${fmt(Math.max(...init))}, output ${fmt(out)}, gradients ${grads.map(fmt).join(' ')}`,
        );
      });
    }

    test('shipped stack fashion-gim@1: embeddings at every layer within 1e-4', async (t) => {
      const { native: a, wasm: b } = await onBoth(native, shippedEmbeddings);
      const errs = a.map((grid, l) => assertClose(grid, b[l]!, EMBED_TOL, `layer ${l + 1}`));
      t.diagnostic(`layers ${errs.map(fmt).join(' ')}`);
    });

    test('linear head: the probe forward of the same weights, and a fit from the same seed', async (t) => {
      const train = blobs(30, 1);
      const heldOut = blobs(10, 2);
      const labels = ['a', 'b', 'c'];
      // One probe fitted on wasm, applied on each backend (its weights move to the backend).
      await useBackend('wasm');
      const probe = LinearProbe.fit(train, 3, { epochs: 10, seed: 3 });
      try {
        const reference = LinearHead.fromSoftmax(labels, probe.params()).predict(
          heldOut.x,
          heldOut.n,
        );
        const { native: pa, wasm: pb } = await onBoth(native, () =>
          probe.predictProba(heldOut.x, heldOut.n),
        );
        const forward = assertClose(pa, pb, FORWARD_TOL, 'probabilities');
        const vsJs = assertClose(pa, reference, FORWARD_TOL, `${native} vs the float64 head`);
        // The same fit on each backend: close weights, the same report.
        const { native: fa, wasm: fb } = await onBoth(native, () => {
          const { head, report } = fitHead(train, labels, {
            epochs: 30,
            seed: 4,
            learningRate: 1e-2,
          });
          const p = head.toParams();
          return { params: [...p.weights.flat(), ...p.bias], report };
        });
        const fit = assertClose(fa.params, fb.params, HEAD_FIT_TOL, 'fitted weights');
        assert.equal(fa.report.bestEpoch, fb.report.bestEpoch);
        assert.deepEqual(fa.report.train.confusion, fb.report.train.confusion);
        t.diagnostic(
          `forward ${fmt(forward)} (vs float64 JS head ${fmt(vsJs)}), fitted weights ${fmt(fit)}`,
        );
      } finally {
        probe.dispose();
      }
    });
  });
}
