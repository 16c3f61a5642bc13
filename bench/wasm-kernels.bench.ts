/**
 * ms per call of the wasm training kernels (src/gim/backend/wasm-kernels.ts) against wasm's own
 * kernels where it has one and the cpu backend's built-ins, on the shapes GIM trains with.
 * Writes bench/results/wasm-kernels.json.
 *
 *   node --import @swc-node/register/esm-register bench/wasm-kernels.bench.ts [--quick]
 *
 * Takes about 3 minutes, nearly all of it in the cpu backend's Conv2DBackpropFilter (seconds per
 * call); run it on an otherwise idle machine, wasm is single-threaded and timings are per call.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import {
  conv2DBackpropInputComposedKernel,
  originalWasmKernel,
  selectBackend,
} from '../src/gim/backend/index.js';
import { printTable } from './common.js';

const QUICK = process.argv.includes('--quick');
const BUDGET_MS = QUICK ? 150 : 600;

type Shape4 = [number, number, number, number];
interface ConvShape {
  name: string;
  x: Shape4;
  filter: Shape4;
  strides: [number, number];
  pad: 'same' | tf.backend_util.ExplicitPadding;
}
interface MatMulShape {
  name: string;
  a: number[];
  b: number[];
  transposeA: boolean;
  transposeB: boolean;
}
type Impl = 'wasm' | 'wasm original' | 'wasm composed' | 'cpu';
interface Row {
  kernel: string;
  shape: string;
  gflop: number;
  ms: Partial<Record<Impl, number>>;
}

const audioPad = (p: number): tf.backend_util.ExplicitPadding => [
  [0, 0],
  [0, 0],
  [p, p],
  [0, 0],
];
const N = 32 * 36; // 32 images x 36 patches
const CONVS: ConvShape[] = [
  {
    name: 'vision 8x8x1 3x3/1 ->16',
    x: [N, 8, 8, 1],
    filter: [3, 3, 1, 16],
    strides: [1, 1],
    pad: 'same',
  },
  {
    name: 'vision 8x8x16 1x1 ->16',
    x: [N, 8, 8, 16],
    filter: [1, 1, 16, 16],
    strides: [1, 1],
    pad: 'same',
  },
  {
    name: 'vision 8x8x16 3x3/2 ->32',
    x: [N, 8, 8, 16],
    filter: [3, 3, 16, 32],
    strides: [2, 2],
    pad: 'same',
  },
  {
    name: 'vision 4x4x32 1x1 ->32',
    x: [N, 4, 4, 32],
    filter: [1, 1, 32, 32],
    strides: [1, 1],
    pad: 'same',
  },
  {
    name: 'vision 4x4x32 3x3/2 ->64',
    x: [N, 4, 4, 32],
    filter: [3, 3, 32, 64],
    strides: [2, 2],
    pad: 'same',
  },
  {
    name: 'vision 2x2x64 1x1 ->64',
    x: [N, 2, 2, 64],
    filter: [1, 1, 64, 64],
    strides: [1, 1],
    pad: 'same',
  },
  {
    name: 'audio 10240x1 k10/5 ->32',
    x: [8, 1, 10240, 1],
    filter: [1, 10, 1, 32],
    strides: [1, 5],
    pad: audioPad(2),
  },
  {
    name: 'audio 2047x32 k8/4 ->32',
    x: [8, 1, 2047, 32],
    filter: [1, 8, 32, 32],
    strides: [1, 4],
    pad: audioPad(2),
  },
  {
    name: 'audio 511x32 k4/2 p2 ->32',
    x: [8, 1, 511, 32],
    filter: [1, 4, 32, 32],
    strides: [1, 2],
    pad: audioPad(2),
  },
  {
    name: 'audio 256x32 k4/2 p1 ->32',
    x: [8, 1, 256, 32],
    filter: [1, 4, 32, 32],
    strides: [1, 2],
    pad: audioPad(1),
  },
];
// The matMuls of a dense layer's backward pass and of InfoNCE scoring.
const MATMULS: MatMulShape[] = [
  { name: 'dense dW = x^T dy', a: [N, 64], b: [N, 64], transposeA: true, transposeB: false },
  { name: 'dense dx = dy W^T', a: [N, 64], b: [64, 64], transposeA: false, transposeB: true },
  { name: 'scores z c^T', a: [N, 64], b: [N, 64], transposeA: false, transposeB: true },
  { name: 'audio dW = x^T dy', a: [1024, 32], b: [1024, 32], transposeA: true, transposeB: false },
  { name: 'plain 1152x64 . 64x64', a: [N, 64], b: [64, 64], transposeA: false, transposeB: false },
];

/** Mean ms per call: two warm-ups, then calls until the budget is spent (2..50 calls). */
function msPerCall(call: () => tf.Tensor): number {
  call().dispose();
  call().dispose();
  let calls = 0;
  const start = performance.now();
  while (calls < 2 || (calls < 50 && performance.now() - start < BUDGET_MS)) {
    call().dispose();
    calls++;
  }
  return (performance.now() - start) / calls;
}

function runInfo(f: tf.KernelFunc, inputs: tf.NamedTensorInfoMap, attrs: object): tf.Tensor {
  const out = f({ inputs, backend: tf.backend(), attrs: attrs as tf.NamedAttrMap });
  return tf.engine().makeTensorFromTensorInfo(out as tf.TensorInfo);
}

function kernelFunc(f: tf.KernelFunc | undefined, name: string): tf.KernelFunc {
  if (f === undefined) throw new Error(`no original wasm ${name}`);
  return f;
}

async function benchConv(c: ConvShape): Promise<Row[]> {
  const info = tf.backend_util.computeConv2DInfo(c.x, c.filter, c.strides, 1, c.pad);
  const gflop =
    (2 * info.outShape.reduce((a, b) => a * b, 1) * c.filter[0] * c.filter[1] * c.filter[2]) / 1e9;
  const shape = `${c.name}: x [${c.x}] w [${c.filter}]`;
  const rows: Row[] = ['Conv2D (forward)', 'Conv2DBackpropFilter', 'Conv2DBackpropInput'].map(
    (kernel) => ({
      kernel,
      shape,
      gflop,
      ms: {},
    }),
  );
  const [fwd, filterGrad, inputGrad] = rows as [Row, Row, Row];
  const common = { strides: c.strides, pad: c.pad, dataFormat: 'NHWC' };
  for (const backend of ['wasm', 'cpu'] as const) {
    await tf.setBackend(backend);
    const x = tf.randomNormal(c.x);
    const w = tf.randomNormal(c.filter);
    const dy = tf.randomNormal(info.outShape);
    const engine = tf.engine();
    const run = (name: string, inputs: tf.NamedTensorMap, attrs: object) => () =>
      engine.runKernel(name, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
    fwd.ms[backend] = msPerCall(run('Conv2D', { x, filter: w }, { ...common, dilations: 1 }));
    filterGrad.ms[backend] = msPerCall(
      run('Conv2DBackpropFilter', { x, dy }, { ...common, filterShape: c.filter }),
    );
    const inputAttrs = { ...common, inputShape: c.x };
    inputGrad.ms[backend] = msPerCall(run('Conv2DBackpropInput', { dy, filter: w }, inputAttrs));
    if (backend === 'wasm') {
      const original = kernelFunc(originalWasmKernel('Conv2DBackpropInput'), 'Conv2DBackpropInput');
      inputGrad.ms['wasm original'] = msPerCall(() =>
        runInfo(original, { dy, filter: w }, inputAttrs),
      );
      inputGrad.ms['wasm composed'] = msPerCall(() =>
        runInfo(conv2DBackpropInputComposedKernel, { dy, filter: w }, inputAttrs),
      );
    }
    tf.dispose([x, w, dy]);
  }
  return rows;
}

async function benchMatMul(m: MatMulShape): Promise<Row> {
  const rows = m.transposeA ? m.a.at(-1) : m.a.at(-2);
  const inner = m.transposeA ? m.a.at(-2) : m.a.at(-1);
  const cols = m.transposeB ? m.b.at(-2) : m.b.at(-1);
  const gflop = (2 * (rows ?? 0) * (inner ?? 0) * (cols ?? 0)) / 1e9;
  const shape = `${m.name}: a [${m.a}]${m.transposeA ? '^T' : ''} b [${m.b}]${m.transposeB ? '^T' : ''}`;
  const row: Row = { kernel: 'BatchMatMul', shape, gflop, ms: {} };
  const attrs = { transposeA: m.transposeA, transposeB: m.transposeB };
  for (const backend of ['wasm', 'cpu'] as const) {
    await tf.setBackend(backend);
    const a = tf.randomNormal(m.a);
    const b = tf.randomNormal(m.b);
    row.ms[backend] = msPerCall(() => tf.matMul(a, b, m.transposeA, m.transposeB));
    if (backend === 'wasm') {
      const original = kernelFunc(originalWasmKernel('BatchMatMul'), 'BatchMatMul');
      row.ms['wasm original'] = msPerCall(() => runInfo(original, { a, b }, attrs));
    }
    tf.dispose([a, b]);
  }
  return row;
}

function printRows(rows: Row[]): void {
  const impls: Impl[] = ['wasm', 'wasm original', 'wasm composed', 'cpu'];
  const fmt = (v: number | undefined) =>
    v === undefined ? '-' : v < 10 ? v.toFixed(2) : v.toFixed(1);
  printTable(
    ['kernel', 'shape', 'GFLOP', ...impls.map((i) => `${i} ms`), 'wasm GFLOP/s', 'cpu/wasm'],
    rows.map((r) => [
      r.kernel,
      r.shape,
      r.gflop.toFixed(3),
      ...impls.map((i) => fmt(r.ms[i])),
      r.ms.wasm === undefined ? '-' : (r.gflop / (r.ms.wasm / 1e3)).toFixed(1),
      r.ms.wasm === undefined || r.ms.cpu === undefined
        ? '-'
        : `${(r.ms.cpu / r.ms.wasm).toFixed(1)}x`,
    ]),
  );
}

const backend = await selectBackend({ force: 'wasm', log: (line) => console.log(line) });
const rows: Row[] = [];
for (const c of CONVS) rows.push(...(await benchConv(c)));
for (const m of MATMULS) rows.push(await benchMatMul(m));
printRows(rows);

mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const out = new URL('./results/wasm-kernels.json', import.meta.url);
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  tfjs: tf.version.tfjs,
  backend,
  budgetMsPerMeasurement: BUDGET_MS,
  rows,
};
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
console.log(`wrote ${out.pathname}`);
