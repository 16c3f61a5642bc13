/**
 * Training kernels for the tfjs `wasm` backend, composed from wasm's own XNNPACK-backed kernels.
 *
 * tfjs-backend-wasm 4.22 has no `Conv2DBackpropFilter`, so conv nets cannot train on it; its
 * `Conv2DBackpropInput` is a plain loop; and its `BatchMatMul` with a transposed operand leaves
 * XNNPACK for a loop about 10x slower than the plain path. The kernels here call the original wasm
 * kernelFuncs on `TensorInfo`s, the way the backends compose kernels internally, and free every
 * intermediate with `backend.disposeData` before returning. Numbers: bench/wasm-kernels.bench.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';

const WASM = 'wasm';

type Info = tf.TensorInfo;
type KernelArgs = Parameters<tf.KernelFunc>[0];
type Pads = [[number, number], [number, number], [number, number], [number, number]];

/** Kernel functions this module registered: re-registration is skipped, never stacked. */
const ours = new WeakSet<tf.KernelFunc>();
/** The wasm kernels we replaced, by kernel name, for the wrappers' fallbacks and the bench. */
const originals = new Map<string, tf.KernelFunc>();

/** Runs one wasm kernel on tensor infos; the caller owns (and must free) the result. */
function run(
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  backend: object,
  attrs: tf.NamedAttrMap,
): Info {
  const config = tf.getKernel(kernelName, WASM);
  if (config === undefined) {
    throw new GimError('backend_unavailable', `the wasm backend has no kernel ${kernelName}`);
  }
  return single(kernelName, config.kernelFunc({ inputs, backend, attrs }));
}

function single(kernelName: string, out: Info | Info[]): Info {
  if (Array.isArray(out)) {
    throw new GimError('backend_unavailable', `wasm kernel ${kernelName} returned several outputs`);
  }
  return out;
}

function free(backend: object, ...infos: Info[]): void {
  const b = backend as { disposeData(dataId: object): boolean };
  for (const info of infos) b.disposeData(info.dataId);
}

/** The forward conv's geometry, checked against the gradient dy it produced. */
function conv2dInfo(
  xShape: number[],
  filterShape: number[],
  dy: Info,
  attrs: Pick<tf.Conv2DBackpropFilterAttrs, 'strides' | 'pad' | 'dataFormat' | 'dimRoundingMode'>,
): tf.backend_util.Conv2DInfo {
  if (attrs.dataFormat !== 'NHWC') {
    throw new GimError(
      'invalid_argument',
      `wasm conv gradients need NHWC, got ${attrs.dataFormat}`,
    );
  }
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
  );
  // tfjs's conv2d gradient drops dimRoundingMode, which can make dy disagree with the geometry.
  if (dy.shape.join() !== info.outShape.join()) {
    throw new GimError(
      'invalid_argument',
      `conv gradient: dy has shape [${dy.shape}], the conv's output is [${info.outShape}]`,
    );
  }
  return info;
}

/**
 * dW[kh, kw, ci, co] = sum_{n, oh, ow} xPad[n, oh*sh + kh, ow*sw + kw, ci] * dy[n, oh, ow, co].
 *
 * That is one convolution in which the batch axis N is the contracted channel axis and the forward
 * stride becomes a dilation. Folding Cin into the width axis (width index w*Cin + ci, dilation
 * sw*Cin) makes its output [1, KH, KW*Cin, Cout], already the filter layout:
 *   conv2d(x as [1, H, W*Cin, N], dy as [OH, OW, N, Cout], stride 1, dilation [sh, sw*Cin]).
 * It needs only a 2-D transpose of x and one of dy, and XNNPACK runs it as a single fp32 GEMM.
 * (An im2col of strided slices + matMul measured 5-20x slower: wasm's StridedSlice and Concat
 * are slow for these layouts. A 1x1 stride-1 conv needs no im2col: one matMul, 3x faster.)
 */
function conv2DBackpropFilter({ inputs, backend, attrs }: KernelArgs): Info {
  const { x, dy } = inputs as { x: Info; dy: Info };
  const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  const info = conv2dInfo(x.shape, a.filterShape, dy, a);
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = info;
  if (filterHeight * filterWidth * strideHeight * strideWidth === 1 && outHeight === inHeight) {
    return pointwiseFilterGrad(x, dy, backend, info);
  }

  // Trailing pad that makes the output exactly KH x KW; negative when the last rows/columns of x
  // are reached by no window (e.g. 'valid' with a stride), and those are cropped instead.
  const bottom = (outHeight - 1) * strideHeight + filterHeight - inHeight - padInfo.top;
  const right = (outWidth - 1) * strideWidth + filterWidth - inWidth - padInfo.left;

  const x2 = run('Reshape', { x }, backend, { shape: [batchSize, -1] }); // [N, H*W*Cin]
  let xf = run('Transpose', { x: x2 }, backend, { perm: [1, 0] }); // [H*W*Cin, N]
  free(backend, x2);
  xf.shape = [1, inHeight, inWidth * inChannels, batchSize];
  if (bottom < 0 || right < 0) {
    const size = [1, inHeight + Math.min(0, bottom), (inWidth + Math.min(0, right)) * inChannels];
    const cropped = run('Slice', { x: xf }, backend, {
      begin: [0, 0, 0, 0],
      size: [...size, batchSize],
    });
    free(backend, xf);
    xf = cropped;
  }
  const dyf = run('Transpose', { x: dy }, backend, { perm: [1, 2, 0, 3] }); // [OH, OW, N, Cout]
  const pad: Pads = [
    [0, 0],
    [padInfo.top, Math.max(0, bottom)],
    [padInfo.left * inChannels, Math.max(0, right) * inChannels],
    [0, 0],
  ];
  const dw = run('Conv2D', { x: xf, filter: dyf }, backend, {
    strides: [1, 1],
    pad,
    dataFormat: 'NHWC',
    dilations: [strideHeight, strideWidth * inChannels],
  }); // [1, KH, KW*Cin, Cout]
  free(backend, xf, dyf);
  dw.shape = [filterHeight, filterWidth, inChannels, outChannels];
  return dw;
}

/** dW [1, 1, Cin, Cout] = x^T [Cin, N*H*W] . dy [N*H*W, Cout] for a 1x1 stride-1 unpadded conv. */
function pointwiseFilterGrad(
  x: Info,
  dy: Info,
  backend: object,
  info: tf.backend_util.Conv2DInfo,
): Info {
  const x2 = run('Reshape', { x }, backend, { shape: [-1, info.inChannels] }); // [M, Cin]
  const xt = run('Transpose', { x: x2 }, backend, { perm: [1, 0] }); // [Cin, M]
  free(backend, x2);
  const dy2 = run('Reshape', { x: dy }, backend, { shape: [-1, info.outChannels] }); // [M, Cout]
  const dw = run('BatchMatMul', { a: xt, b: dy2 }, backend, {
    transposeA: false,
    transposeB: false,
  }); // [1, Cin, Cout]
  free(backend, xt, dy2);
  dw.shape = [1, 1, info.inChannels, info.outChannels];
  return dw;
}

/**
 * dx = conv2d(dy zero-dilated by the stride, filter flipped in space with in/out swapped, padded
 * KH-1-top). Exact, but it multiplies sh*sw times more (zeros) than needed, and a single output
 * channel wastes XNNPACK's vector width, so outside `composedInputPays` wasm's loop is kept.
 */
function conv2DBackpropInputComposed(
  { inputs, backend }: KernelArgs,
  info: tf.backend_util.Conv2DInfo,
): Info {
  const { dy, filter } = inputs as { dy: Info; filter: Info };
  const { batchSize, inHeight, inWidth, outHeight, outWidth, outChannels } = info;
  const { filterHeight, filterWidth, strideHeight, strideWidth, padInfo } = info;

  let dyd = dy; // [N, OH*sh, OW*sw, Cout]
  if (strideHeight * strideWidth > 1) {
    const dy6 = run('Reshape', { x: dy }, backend, {
      shape: [batchSize, outHeight, 1, outWidth, 1, outChannels],
    });
    dyd = run('PadV2', { x: dy6 }, backend, {
      paddings: [
        [0, 0],
        [0, 0],
        [0, strideHeight - 1],
        [0, 0],
        [0, strideWidth - 1],
        [0, 0],
      ],
      constantValue: 0,
    });
    free(backend, dy6);
    dyd.shape = [batchSize, outHeight * strideHeight, outWidth * strideWidth, outChannels];
  }
  // Pads of the full correlation; negative where dyd has rows/columns (stride zeros, or beyond
  // an explicit pad larger than the filter) that no dx element reads: those are cropped.
  const top = filterHeight - 1 - padInfo.top;
  const left = filterWidth - 1 - padInfo.left;
  const bottom = inHeight + filterHeight - 1 - top - outHeight * strideHeight;
  const right = inWidth + filterWidth - 1 - left - outWidth * strideWidth;
  if (Math.min(top, left, bottom, right) < 0) {
    const begin = [0, Math.max(0, -top), Math.max(0, -left), 0];
    const cropped = run('Slice', { x: dyd }, backend, {
      begin,
      size: [
        batchSize,
        outHeight * strideHeight + Math.min(0, bottom) - (begin[1] ?? 0),
        outWidth * strideWidth + Math.min(0, right) - (begin[2] ?? 0),
        outChannels,
      ],
    });
    if (dyd !== dy) free(backend, dyd);
    dyd = cropped;
  }
  const ft = run('Transpose', { x: filter }, backend, { perm: [0, 1, 3, 2] }); // [KH, KW, Cout, Cin]
  const flipped = run('Reverse', { x: ft }, backend, { dims: [0, 1] });
  free(backend, ft);
  const dx = run('Conv2D', { x: dyd, filter: flipped }, backend, {
    strides: [1, 1],
    pad: [
      [0, 0],
      [Math.max(0, top), Math.max(0, bottom)],
      [Math.max(0, left), Math.max(0, right)],
      [0, 0],
    ],
    dataFormat: 'NHWC',
    dilations: [1, 1],
  }); // [N, H, W, Cin]
  if (dyd !== dy) free(backend, dyd);
  free(backend, flipped);
  return dx;
}

/** The composed dx for every shape, bypassing `composedInputPays` (bench and tests). */
export const conv2DBackpropInputComposedKernel: tf.KernelFunc = (args) => {
  const a = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  const { dy, filter } = args.inputs as { dy: Info; filter: Info };
  return conv2DBackpropInputComposed(args, conv2dInfo(a.inputShape, filter.shape, dy, a));
};

/** wasm's own kernel that `registerWasmTrainingKernels` replaced, if it replaced one. */
export function originalWasmKernel(kernelName: string): tf.KernelFunc | undefined {
  return originals.get(kernelName);
}

/** Where the composed dx beat wasm's own kernel on our shapes (see the bench). */
function composedInputPays(info: tf.backend_util.Conv2DInfo): boolean {
  const zeros = info.strideHeight * info.strideWidth;
  return zeros === 1 || (zeros <= 4 && info.inChannels >= 4);
}

function conv2DBackpropInputWith(original: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { dy, filter } = args.inputs as { dy: Info; filter: Info };
    const a = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
    const info = conv2dInfo(a.inputShape, filter.shape, dy, a);
    if (dy.dtype !== 'float32' || !composedInputPays(info)) return original(args);
    return conv2DBackpropInputComposed(args, info);
  };
}

/**
 * Transposes the operands XNNPACK cannot take transposed, then runs the plain wasm matMul. wasm
 * uses XNNPACK only for untransposed operands with a batch of 1; batched matMuls run its loop
 * whatever the flags (transposing first measured no faster there), so they go straight through.
 */
function batchMatMulWith(original: tf.KernelFunc): tf.KernelFunc {
  const batch = (t: Info) => t.shape.slice(0, -2).reduce((p, d) => p * d, 1);
  return (args) => {
    const { a, b } = args.inputs as { a: Info; b: Info };
    const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
    if (!(transposeA || transposeB) || batch(a) !== 1 || batch(b) !== 1) return original(args);
    const { backend } = args;
    const swapLast = (t: Info): Info => {
      const perm = t.shape.map((_, i) => i);
      const r = perm.length;
      [perm[r - 2], perm[r - 1]] = [r - 1, r - 2];
      return run('Transpose', { x: t }, backend, { perm });
    };
    const at = transposeA ? swapLast(a) : a;
    const bt = transposeB ? swapLast(b) : b;
    const out = original({
      inputs: { a: at, b: bt },
      backend,
      attrs: { transposeA: false, transposeB: false },
    });
    if (at !== a) free(backend, at);
    if (bt !== b) free(backend, bt);
    return out;
  };
}

/**
 * Identity that shares the input's buffer (reference-counted), as the cpu backend's does, instead
 * of copying it. The tape clones every tensor it saves for the backward pass through Identity, so
 * wasm's copying Identity cost a full copy of every saved activation: sharing measured 15% (greedy)
 * to 35% (end-to-end) more patches/s. tfjs tensors are immutable, so sharing is safe; the backend
 * frees the buffer when its last tensor is disposed.
 */
function identityWith(original: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { x } = args.inputs as { x: Info };
    if (x.dtype === 'string') return original(args);
    (args.backend as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
}

/** Replaces (or adds) a wasm kernel, keeping the original's setup/dispose hooks. Idempotent. */
function install(kernelName: string, make: (original: tf.KernelFunc | null) => tf.KernelFunc) {
  const current = tf.getKernel(kernelName, WASM);
  if (current !== undefined && ours.has(current.kernelFunc)) return;
  if (current !== undefined) originals.set(kernelName, current.kernelFunc);
  const kernelFunc = make(current?.kernelFunc ?? null);
  ours.add(kernelFunc);
  if (current !== undefined) tf.unregisterKernel(kernelName, WASM);
  tf.registerKernel({ ...current, kernelName, backendName: WASM, kernelFunc });
}

/** The kernels `registerWasmTrainingKernels` installs on the wasm backend. */
export const WASM_TRAINING_KERNELS = [
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'BatchMatMul',
  'Identity',
] as const;

/**
 * Registers the training kernels for the `wasm` backend (process-wide, like every tfjs kernel).
 * Safe to call repeatedly. Returns the names of the kernels now provided by this module.
 */
export function registerWasmTrainingKernels(): string[] {
  const needOriginal = (name: string, original: tf.KernelFunc | null): tf.KernelFunc => {
    if (original === null) {
      throw new GimError('backend_unavailable', `the wasm backend has no ${name} to wrap`);
    }
    return original;
  };
  install('Conv2DBackpropFilter', () => conv2DBackpropFilter as tf.KernelFunc);
  install('Conv2DBackpropInput', (o) =>
    conv2DBackpropInputWith(needOriginal('Conv2DBackpropInput', o)),
  );
  install('BatchMatMul', (o) => batchMatMulWith(needOriginal('BatchMatMul', o)));
  install('Identity', (o) => identityWith(needOriginal('Identity', o)));
  return [...WASM_TRAINING_KERNELS];
}
