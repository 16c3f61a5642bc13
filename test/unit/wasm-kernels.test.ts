/**
 * The wasm training kernels against the cpu backend's built-in kernels: the same gradients, on
 * identical inputs, on many shapes (odd sizes, strides 1-3, 'same'/'valid'/numeric/explicit pads,
 * 1-D-like audio shapes, batch 1 and >1, channels 1..17), within 1e-4 relative to max|ref|.
 *
 * ci:every-backend: the unforced selection test takes whichever backend is installed.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../../src/gim/random.js';
import { GimError } from '../../src/gim/errors.js';
import {
  BACKEND_NAMES,
  conv2DBackpropInputComposedKernel,
  currentBackend,
  originalWasmKernel,
  registerWasmTrainingKernels,
  selectBackend,
  WASM_TRAINING_KERNELS,
} from '../../src/gim/backend/index.js';

const TOLERANCE = 1e-4;

type Shape4 = [number, number, number, number];
type ConvPad = 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
interface ConvCase {
  x: Shape4;
  filter: Shape4;
  strides: [number, number];
  pad: ConvPad;
}

const explicit = (t: number, b: number, l: number, r: number): tf.backend_util.ExplicitPadding => [
  [0, 0],
  [t, b],
  [l, r],
  [0, 0],
];

const HAND_PICKED: ConvCase[] = [
  // Vision modules (small batch), 1x1 convs.
  { x: [2, 8, 8, 1], filter: [3, 3, 1, 16], strides: [1, 1], pad: 'same' },
  { x: [2, 8, 8, 16], filter: [3, 3, 16, 17], strides: [2, 2], pad: 'same' },
  { x: [3, 4, 4, 5], filter: [3, 3, 5, 7], strides: [2, 2], pad: 'same' },
  { x: [2, 4, 4, 17], filter: [1, 1, 17, 3], strides: [1, 1], pad: 'valid' },
  { x: [1, 5, 3, 4], filter: [1, 1, 4, 4], strides: [2, 2], pad: 'same' },
  // Odd sizes, strides that leave trailing rows unused, even kernels, stride > kernel.
  { x: [1, 7, 9, 3], filter: [3, 3, 3, 4], strides: [2, 2], pad: 'valid' },
  { x: [2, 11, 5, 2], filter: [5, 3, 2, 17], strides: [2, 1], pad: 'same' },
  { x: [2, 9, 9, 4], filter: [2, 2, 4, 5], strides: [2, 2], pad: 'same' },
  { x: [2, 10, 10, 2], filter: [3, 3, 2, 3], strides: [3, 3], pad: 'valid' },
  { x: [1, 9, 9, 2], filter: [2, 2, 2, 3], strides: [3, 3], pad: 'same' },
  // Numeric and explicit pads, including one larger than the filter.
  { x: [2, 7, 7, 3], filter: [3, 3, 3, 2], strides: [2, 2], pad: 1 },
  { x: [1, 6, 6, 2], filter: [3, 3, 2, 2], strides: [1, 1], pad: 2 },
  { x: [1, 6, 7, 1], filter: [4, 4, 1, 1], strides: [1, 2], pad: explicit(1, 2, 0, 3) },
  { x: [1, 5, 5, 2], filter: [2, 2, 2, 2], strides: [1, 1], pad: explicit(3, 0, 2, 3) },
  // Audio, 1-D as height 1: kernel 10 stride 5, 8/4, 4/2 pad 2, 4/2 pad 1; a numeric pad.
  { x: [2, 1, 203, 1], filter: [1, 10, 1, 8], strides: [1, 5], pad: explicit(0, 0, 2, 2) },
  { x: [2, 1, 41, 8], filter: [1, 8, 8, 8], strides: [1, 4], pad: explicit(0, 0, 2, 2) },
  { x: [1, 1, 21, 8], filter: [1, 4, 8, 8], strides: [1, 2], pad: explicit(0, 0, 2, 2) },
  { x: [3, 1, 20, 8], filter: [1, 4, 8, 8], strides: [1, 2], pad: explicit(0, 0, 1, 1) },
  { x: [2, 1, 30, 3], filter: [1, 4, 3, 5], strides: [1, 2], pad: 1 },
];

/** Seeded random shapes on top of the hand-picked ones. */
function randomCases(rng: Rng, count: number): ConvCase[] {
  const cases: ConvCase[] = [];
  const pick = <T>(items: T[]): T => items[rng.int(items.length)] as T;
  for (let i = 0; i < count; i++) {
    const kh = 1 + rng.int(4);
    const kw = 1 + rng.int(4);
    const x: Shape4 = [1 + rng.int(3), kh + rng.int(7), kw + rng.int(7), 1 + rng.int(17)];
    const filter: Shape4 = [kh, kw, x[3], 1 + rng.int(17)];
    const strides: [number, number] = [1 + rng.int(2), 1 + rng.int(2)];
    const pad = pick<ConvPad>([
      'same',
      'valid',
      explicit(rng.int(kh), rng.int(kh), rng.int(kw), rng.int(kw)),
    ]);
    cases.push({ x, filter, strides, pad });
  }
  return cases;
}

const CONV_CASES = [...HAND_PICKED, ...randomCases(new Rng(7), 48)];

function describeCase(c: ConvCase): string {
  const pad = typeof c.pad === 'object' ? JSON.stringify(c.pad.slice(1, 3)) : String(c.pad);
  return `x ${c.x} filter ${c.filter} strides ${c.strides} pad ${pad}`;
}

function randomData(rng: Rng, shape: number[]): Float32Array {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.next() * 2 - 1;
  return data;
}

/** Runs `f` on a backend and returns its outputs' values; every tensor it made is freed. */
async function onBackend(name: 'cpu' | 'wasm', f: () => tf.Tensor[]): Promise<Float32Array[]> {
  assert.ok(await tf.setBackend(name));
  const outs = tf.tidy(f);
  const values = outs.map((t) => t.dataSync() as Float32Array);
  tf.dispose(outs);
  return values;
}

function assertClose(actual: Float32Array, ref: Float32Array, what: string): void {
  assert.equal(actual.length, ref.length, `${what}: length`);
  let maxRef = 0;
  let maxDiff = 0;
  for (let i = 0; i < ref.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(ref[i] as number));
    maxDiff = Math.max(maxDiff, Math.abs((actual[i] as number) - (ref[i] as number)));
  }
  assert.ok(maxRef > 0, `${what}: reference is all zeros`);
  const rel = maxDiff / maxRef;
  assert.ok(rel <= TOLERANCE, `${what}: max|a-ref|/max|ref| = ${rel.toExponential(2)}`);
}

const conv = (c: ConvCase, x: tf.Tensor, w: tf.Tensor) =>
  tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.strides, c.pad);

/** d/dx and d/dw of sum(conv2d(x, w) * r): Conv2DBackpropInput and Conv2DBackpropFilter. */
function convGrads(c: ConvCase, xs: Float32Array, ws: Float32Array, rs: Float32Array) {
  return (): tf.Tensor[] => {
    const x = tf.tensor4d(xs, c.x);
    const w = tf.tensor4d(ws, c.filter);
    const yShape = conv(c, x, w).shape; // [N, OH, OW, Cout]
    const r = tf.tensor(rs.subarray(0, tf.util.sizeFromShape(yShape)), yShape);
    const loss = (xv: tf.Tensor, wv: tf.Tensor) => tf.sum(tf.mul(conv(c, xv, wv), r));
    return tf.grads(loss)([x, w]);
  };
}

before(async () => {
  const info = await selectBackend({ force: 'wasm' });
  assert.equal(info.name, 'wasm');
});

describe('wasm conv2d gradients match the cpu backend', () => {
  const rng = new Rng(11);
  for (const c of CONV_CASES) {
    test(describeCase(c), async () => {
      const xs = randomData(rng, c.x);
      const ws = randomData(rng, c.filter);
      const rs = randomData(rng, [c.x[0], c.x[1] + 8, c.x[2] + 8, c.filter[3]]);
      const [dxRef, dwRef] = await onBackend('cpu', convGrads(c, xs, ws, rs));
      const [dx, dw] = await onBackend('wasm', convGrads(c, xs, ws, rs));
      assertClose(dw as Float32Array, dwRef as Float32Array, 'dW');
      assertClose(dx as Float32Array, dxRef as Float32Array, 'dx');

      // The composed dx on every shape, also where the registered kernel keeps wasm's own.
      const [composed] = await onBackend('wasm', () => {
        const x = tf.tensor4d(xs, c.x);
        const w = tf.tensor4d(ws, c.filter);
        const y = conv(c, x, w);
        const dy = tf.tensor(rs.subarray(0, y.size), y.shape);
        const out = conv2DBackpropInputComposedKernel({
          inputs: { dy, filter: w },
          backend: tf.backend(),
          attrs: {
            strides: c.strides,
            pad: c.pad,
            dataFormat: 'NHWC',
            inputShape: c.x,
          } as unknown as tf.NamedAttrMap,
        });
        return [tf.engine().makeTensorFromTensorInfo(out as tf.TensorInfo)];
      });
      assertClose(composed as Float32Array, dxRef as Float32Array, 'composed dx');
    });
  }
});

describe('conv gradient kernels called directly', () => {
  // tfjs's conv2d gradient drops dimRoundingMode, so this geometry is only reachable directly.
  test("dimRoundingMode 'ceil' matches the cpu kernels", async () => {
    const rng = new Rng(17);
    const xs = randomData(rng, [2, 8, 8, 3]);
    const ws = randomData(rng, [3, 3, 3, 4]);
    const dys = randomData(rng, [2, 4, 4, 4]);
    const common = { strides: [2, 2], pad: 0, dataFormat: 'NHWC', dimRoundingMode: 'ceil' };
    const run = (): tf.Tensor[] => {
      const x = tf.tensor4d(xs, [2, 8, 8, 3]);
      const filter = tf.tensor4d(ws, [3, 3, 3, 4]);
      const dy = tf.tensor4d(dys, [2, 4, 4, 4]);
      const engine = tf.engine();
      return [
        engine.runKernel(
          'Conv2DBackpropFilter',
          { x, dy },
          { ...common, filterShape: [3, 3, 3, 4] },
        ),
        engine.runKernel(
          'Conv2DBackpropInput',
          { dy, filter },
          { ...common, inputShape: [2, 8, 8, 3] },
        ),
      ] as tf.Tensor[];
    };
    const ref = await onBackend('cpu', run);
    const got = await onBackend('wasm', run);
    assertClose(got[0] as Float32Array, ref[0] as Float32Array, 'dW');
    assertClose(got[1] as Float32Array, ref[1] as Float32Array, 'dx');
  });

  test('a dy that disagrees with the conv geometry, or NCHW, is refused', async () => {
    assert.ok(await tf.setBackend('wasm'));
    const x = tf.zeros([1, 8, 8, 2]);
    const dy = tf.zeros([1, 4, 4, 3]); // a 'valid' 3x3 stride-2 conv of x gives [1, 3, 3, 3]
    const attrs = { strides: 2, pad: 'valid', dataFormat: 'NHWC', filterShape: [3, 3, 2, 3] };
    const refused = (e: unknown) => e instanceof GimError && e.code === 'invalid_argument';
    assert.throws(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs), refused);
    const nchw = { ...attrs, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 8, 3] };
    assert.throws(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, nchw), refused);
    tf.dispose([x, dy]);
  });
});

describe('wasm matMul (transposed operands) matches the cpu backend', () => {
  const rng = new Rng(13);
  // [batch..., m, k] x [batch..., k, n]; the last has a broadcast batch, checked forward only
  // because tfjs's matMul gradient does not reduce broadcast batch axes (on any backend).
  const shapes = [
    { a: [5, 7], b: [7, 3], grads: true },
    { a: [33, 65], b: [65, 17], grads: true },
    { a: [1, 9, 5], b: [1, 5, 7], grads: true },
    { a: [2, 1, 17], b: [2, 17, 9], grads: true },
    { a: [3, 11, 6], b: [3, 6, 4], grads: true },
    { a: [3, 11, 6], b: [6, 4], grads: false },
  ];
  const swap = (shape: number[], t: boolean) =>
    t ? [...shape.slice(0, -2), shape.at(-1) as number, shape.at(-2) as number] : shape;
  for (const { a: aShape, b: bShape, grads } of shapes) {
    for (const [ta, tb] of [
      [false, false],
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      const a = swap(aShape, ta);
      const b = swap(bShape, tb);
      test(`a ${a} b ${b} transposeA ${ta} transposeB ${tb}`, async () => {
        const as = randomData(rng, a);
        const bs = randomData(rng, b);
        const rs = randomData(rng, [4096]);
        const run = (): tf.Tensor[] => {
          const at = tf.tensor(as, a);
          const bt = tf.tensor(bs, b);
          const y = tf.matMul(at, bt, ta, tb);
          if (!grads) return [y];
          const r = tf.tensor(rs.subarray(0, y.size), y.shape);
          const loss = (av: tf.Tensor, bv: tf.Tensor) =>
            tf.sum(tf.mul(tf.matMul(av, bv, ta, tb), r));
          return [y, ...tf.grads(loss)([at, bt])];
        };
        const ref = await onBackend('cpu', run);
        const got = await onBackend('wasm', run);
        assert.equal(got.length, ref.length);
        for (const [i, what] of ['y', 'da', 'db'].slice(0, ref.length).entries()) {
          assertClose(got[i] as Float32Array, ref[i] as Float32Array, what);
        }
      });
    }
  }
});

describe('wasm training kernels free their intermediates', () => {
  test('numTensors, backend data ids and the wasm heap do not grow', async () => {
    assert.ok(await tf.setBackend('wasm'));
    const rng = new Rng(5);
    const x = tf.tensor4d(randomData(rng, [4, 8, 8, 3]), [4, 8, 8, 3]);
    const filter = (shape: Shape4) => tf.variable(tf.tensor4d(randomData(rng, shape), shape));
    // Every path: dW by conv (strided, pointwise matMul), dx composed (stride 1 and 2), matMul^T.
    const w1 = filter([3, 3, 3, 8]);
    const w2 = filter([1, 1, 8, 8]);
    const w3 = filter([3, 3, 8, 8]);
    const w4 = tf.variable(tf.tensor2d(randomData(rng, [8 * 4, 5]), [8 * 4, 5]));
    const step = () =>
      tf.tidy(() => {
        const { grads, value } = tf.variableGrads(() => {
          const h1 = tf.relu(tf.conv2d(x, w1, 2, 'same')); // [4, 4, 4, 8]
          const h2 = tf.relu(tf.conv2d(h1, w2, 1, 'valid')); // [4, 4, 4, 8]
          const h3 = tf.conv2d(h2, w3, 2, 'same'); // [4, 2, 2, 8]
          const z = tf.matMul(tf.reshape(h3, [4, -1]), w4); // [4, 5]
          return tf.sum(tf.square(tf.matMul(z, z, false, true)));
        });
        return [value, ...Object.values(grads)].map((t) => t.dataSync()[0]);
      });
    const backend = tf.backend() as unknown as {
      numDataIds(): number;
      wasm: { HEAPU8: Uint8Array };
    };
    step();
    const tensors = tf.memory().numTensors;
    const dataIds = backend.numDataIds();
    const heap = backend.wasm.HEAPU8.byteLength;
    for (let i = 0; i < 20; i++) {
      step();
      assert.equal(tf.memory().numTensors, tensors, `numTensors after step ${i}`);
      assert.equal(backend.numDataIds(), dataIds, `backend data ids after step ${i}`);
    }
    assert.equal(backend.wasm.HEAPU8.byteLength, heap, 'wasm heap size');
    tf.dispose([x, w1, w2, w3, w4]);
  });

  test('Identity shares the buffer and frees it with the last tensor', async () => {
    assert.ok(await tf.setBackend('wasm'));
    const backend = tf.backend() as unknown as { numDataIds(): number };
    const before = backend.numDataIds();
    const a = tf.tensor1d([1, 2, 3]);
    const b = tf.clone(a); // runs the Identity kernel
    assert.equal(backend.numDataIds(), before + 1, 'a clone must not allocate a new buffer');
    a.dispose();
    assert.deepEqual(Array.from(b.dataSync()), [1, 2, 3], 'the clone outlives the original');
    b.dispose();
    assert.equal(backend.numDataIds(), before, 'the buffer is freed with the last tensor');
  });
});

describe('registration and backend selection', () => {
  test('registering again changes nothing and keeps the originals', () => {
    const before = WASM_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    assert.deepEqual(registerWasmTrainingKernels(), [...WASM_TRAINING_KERNELS]);
    const after = WASM_TRAINING_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    assert.deepEqual(after, before);
    assert.equal(originalWasmKernel('Conv2DBackpropFilter'), undefined); // wasm has none
    for (const k of ['Conv2DBackpropInput', 'BatchMatMul']) {
      const original = originalWasmKernel(k);
      assert.equal(typeof original, 'function');
      assert.notEqual(original, tf.getKernel(k, 'wasm')?.kernelFunc);
    }
  });

  test('wasm reports its devices and kernels; currentBackend follows tf.setBackend', async () => {
    const lines: string[] = [];
    const info = await selectBackend({ force: 'wasm', log: (l) => lines.push(l) });
    assert.equal(info.tfjsBackend, 'wasm');
    assert.match(info.devices[0] ?? '', /^wasm \(simd: (yes|no), threads: \d+\)$/);
    assert.deepEqual(info.kernels, [...WASM_TRAINING_KERNELS]);
    assert.deepEqual(lines, [
      `tfjs backend: wasm (${info.devices[0]?.includes('yes') ? 'wasm simd' : 'wasm'})`,
    ]);
    assert.equal(currentBackend(), info);
    assert.ok(await tf.setBackend('cpu'));
    assert.equal(currentBackend(), null);
    const cpu = await selectBackend({ force: 'cpu' });
    assert.deepEqual(cpu.devices, ['cpu (pure JS)']);
    assert.equal(currentBackend(), cpu);
  });

  test('unforced selection takes the best available and says why it skipped the others', async () => {
    const lines: string[] = [];
    const info = await selectBackend({ log: (l) => lines.push(l) });
    const skipped = BACKEND_NAMES.slice(0, BACKEND_NAMES.indexOf(info.name));
    assert.deepEqual(
      info.fallbackReasons.map((r) => r.split(':')[0]),
      skipped,
    );
    assert.equal(lines.length, 1);
    assert.ok(lines[0]?.startsWith(`tfjs backend: ${info.name} (`), lines[0]);
    for (const reason of info.fallbackReasons) assert.ok(lines[0]?.includes(reason));
    assert.equal(tf.getBackend(), info.tfjsBackend);
  });

  test('a forced backend that is unavailable throws backend_unavailable naming it', async () => {
    const outcome = await selectBackend({ force: 'tensorflow-gpu' }).then(
      (info) => info,
      (e: unknown) => e,
    );
    if (outcome instanceof GimError) {
      assert.equal(outcome.code, 'backend_unavailable');
      assert.match(outcome.message, /tensorflow-gpu/);
    } else {
      assert.equal((outcome as { name?: string }).name, 'tensorflow-gpu'); // installed here
    }
    await assert.rejects(
      selectBackend({ force: 'tpu' as never }),
      (e: unknown) => e instanceof GimError && e.code === 'invalid_argument',
    );
  });
});
