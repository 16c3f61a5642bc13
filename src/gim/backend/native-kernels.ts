/**
 * Kernels for the native `tensorflow` backend (tfjs-node, tfjs-node-gpu) where its own kernel
 * costs far more than the math.
 *
 * `Step` (the ReLU gradient: dy * step(x)) is composed in tfjs-node 4.22 of seven ops, two of them
 * `ones(shape)` and `fill(shape, alpha)` tensors built element by element in JavaScript and
 * copied into TensorFlow on every call: about 3 ms per call at a vision module's activation size,
 * a sixth of a training step. Here it is four TensorFlow ops on the device: the same values,
 * NaN passing through as before. Measured: bench/train.bench.ts (backend `tensorflow`).
 */
import * as tf from '@tensorflow/tfjs';

export const NATIVE_TRAINING_KERNELS = ['Step'] as const;

const NATIVE = 'tensorflow';

/** The part of tfjs-node's NodeJSKernelBackend these kernels call. */
interface NodeBackend {
  binding: {
    TF_ATTR_TYPE: number;
    TF_ATTR_BOOL: number;
    TF_FLOAT: number;
    TF_INT32: number;
    TF_BOOL: number;
  };
  executeSingleOutput(name: string, attrs: OpAttr[], inputs: tf.TensorInfo[]): tf.Tensor;
}
interface OpAttr {
  name: string;
  type: number;
  value: number | boolean;
}

const ours = new WeakSet<tf.KernelFunc>();

function dtypeOf(backend: NodeBackend, dtype: tf.DataType): number {
  const { binding } = backend;
  return dtype === 'float32'
    ? binding.TF_FLOAT
    : dtype === 'int32'
      ? binding.TF_INT32
      : binding.TF_BOOL;
}

/**
 * step(x) = x > 0 ? 1 : alpha, NaN stays NaN (tfjs semantics): Select(IsNan(x), x, s) with
 * s = Cast(x > 0) for the ReLU gradient's alpha 0, else Select(x > 0, 1, alpha).
 */
const step: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as unknown as NodeBackend;
  const x = (inputs as tf.StepInputs).x as tf.TensorInfo;
  const alpha = (attrs as unknown as tf.StepAttrs).alpha ?? 0;
  const type = (name: string, dtype: tf.DataType): OpAttr => ({
    name,
    type: b.binding.TF_ATTR_TYPE,
    value: dtypeOf(b, dtype),
  });
  return tf.tidy(() => {
    const positive = b.executeSingleOutput(
      'Greater',
      [type('T', x.dtype)],
      [x, tf.scalar(0, x.dtype)],
    );
    const stepped =
      alpha === 0
        ? b.executeSingleOutput(
            'Cast',
            [
              type('SrcT', 'bool'),
              type('DstT', x.dtype),
              { name: 'Truncate', type: b.binding.TF_ATTR_BOOL, value: false },
            ],
            [positive],
          )
        : b.executeSingleOutput(
            'Select',
            [type('T', x.dtype)],
            [positive, tf.onesLike(x as tf.Tensor), tf.fill(x.shape, alpha, x.dtype)],
          );
    const nan = b.executeSingleOutput('IsNan', [type('T', x.dtype)], [x]);
    return b.executeSingleOutput('Select', [type('T', x.dtype)], [nan, x, stepped]);
  }) as unknown as tf.TensorInfo;
};

/**
 * Registers the kernels above on the `tensorflow` backend (after tfjs-node registered its own).
 * Returns their names. Idempotent.
 */
export function registerNativeTrainingKernels(): string[] {
  const current = tf.getKernel('Step', NATIVE);
  if (current === undefined || !ours.has(current.kernelFunc)) {
    if (current !== undefined) tf.unregisterKernel('Step', NATIVE);
    ours.add(step);
    tf.registerKernel({ kernelName: 'Step', backendName: NATIVE, kernelFunc: step });
  }
  return [...NATIVE_TRAINING_KERNELS];
}
