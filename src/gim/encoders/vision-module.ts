import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { samePadding } from './im2col.js';
import { modelArtifacts, modelVariables, type GimModule } from './gim-module.js';

/**
 * One vision module: conv3x3 (stride s, same padding) -> residual conv (1x1 by default, or 3x3:
 * two 3x3 convs, a ResNet basic block's depth) -> ReLU, per patch.
 */
export interface VisionModuleConfig {
  kind: 'vision-conv';
  /** Spatial size of one input patch (square) and its channels. */
  inputSize: number;
  inChannels: number;
  channels: number;
  stride: number;
  kernelSize: number;
  /** Kernel of the residual conv: 1 (absent: every stack before this option) or 3. */
  residualKernelSize?: number;
}

/** The residual conv's kernel of a module config (1 when the config predates the option). */
export const residualKernel = (c: VisionModuleConfig): number => c.residualKernelSize ?? 1;

/**
 * h = conv_kxk(x, stride) + b1;  y = relu(h + conv_rxr(relu(h)) + b2), r = 1 or 3.
 *
 * No batch norm (GIM.md). The weights live in a standard tfjs LayersModel (so `model.json` is
 * loadable by any tfjs runtime); the forward passes below use the same variables directly, in two
 * equivalent forms: `apply` (conv2d, used for inference and end-to-end training) and
 * `applyColumns` (im2col + matMul, used by greedy training on a constant input).
 */
export class VisionModule implements GimModule {
  private constructor(
    readonly config: VisionModuleConfig,
    readonly model: tf.LayersModel,
  ) {}

  static create(config: VisionModuleConfig, seed: number, name = 'module'): VisionModule {
    validateVisionModule(config);
    const { inputSize, inChannels, channels, stride, kernelSize } = config;
    const input = tf.input({ shape: [inputSize, inputSize, inChannels], name: `${name}_input` });
    const h = tf.layers
      .conv2d({
        filters: channels,
        kernelSize,
        strides: stride,
        padding: 'same',
        kernelInitializer: tf.initializers.heNormal({ seed }),
        name: `${name}_conv`,
      })
      .apply(input) as tf.SymbolicTensor;
    const a = tf.layers.reLU({ name: `${name}_relu1` }).apply(h) as tf.SymbolicTensor;
    const r = tf.layers
      .conv2d({
        filters: channels,
        kernelSize: residualKernel(config),
        padding: 'same',
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
        name: `${name}_res`,
      })
      .apply(a) as tf.SymbolicTensor;
    const sum = tf.layers.add({ name: `${name}_add` }).apply([h, r]) as tf.SymbolicTensor;
    const y = tf.layers.reLU({ name: `${name}_relu2` }).apply(sum) as tf.SymbolicTensor;
    return new VisionModule(config, tf.model({ inputs: input, outputs: y, name }));
  }

  static async fromArtifacts(
    config: VisionModuleConfig,
    artifacts: tf.io.ModelArtifacts,
  ): Promise<VisionModule> {
    validateVisionModule(config);
    const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    const m = new VisionModule(config, model);
    const shapes = m.variables.map((v) => v.shape.join('x')).join(', ');
    const k = config.kernelSize;
    const r = residualKernel(config);
    const expected = [
      [k, k, config.inChannels, config.channels],
      [config.channels],
      [r, r, config.channels, config.channels],
      [config.channels],
    ]
      .map((s) => s.join('x'))
      .join(', ');
    if (shapes !== expected) {
      model.dispose();
      throw new GimError(
        'invalid_data',
        `module weights have shapes [${shapes}], the config needs [${expected}]`,
      );
    }
    return m;
  }

  /** Output size (square) of one patch. */
  get outputSize(): number {
    return samePadding(this.config.inputSize, this.config.kernelSize, this.config.stride).out;
  }

  /** [outputSize, outputSize, channels] per patch. */
  get outputShape(): [number, number, number] {
    return [this.outputSize, this.outputSize, this.config.channels];
  }

  /** The trainable variables in a fixed order: conv kernel, conv bias, residual kernel, its bias. */
  get variables(): tf.Variable[] {
    return modelVariables(this.model);
  }

  get channels(): number {
    return this.config.channels;
  }

  /** x [N, S, S, Cin] → [N, S', S', C]. */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    const { k1, b1, k2, b2 } = this.weights();
    return tf.tidy((): tf.Tensor4D => {
      const h: tf.Tensor4D = tf.add(tf.conv2d(x, k1, this.config.stride, 'same'), b1); // [N, S', S', C]
      const r: tf.Tensor4D = tf.add(tf.conv2d(tf.relu(h), k2, 1, 'same'), b2);
      return tf.relu(tf.add(h, r) as typeof h);
    });
  }

  /** cols [N * S' * S', k * k * Cin] (from `im2col`) → [N * S' * S', C]. */
  applyColumns(cols: tf.Tensor2D): tf.Tensor2D {
    const { k1, b1, k2, b2 } = this.weights();
    const { kernelSize: k, inChannels, channels } = this.config;
    return tf.tidy((): tf.Tensor2D => {
      const h: tf.Tensor2D = tf.add(
        tf.matMul(cols, tf.reshape(k1, [k * k * inChannels, channels])),
        b1,
      );
      const r: tf.Tensor2D =
        residualKernel(this.config) === 1
          ? tf.add(tf.matMul(tf.relu(h), tf.reshape(k2, [channels, channels])), b2)
          : this.residualConv(h, k2, b2);
      return tf.relu(tf.add(h, r) as typeof h);
    });
  }

  /** The residual branch on rows [N * S' * S', C] of patch outputs, as a spatial conv. */
  private residualConv(h: tf.Tensor2D, k2: tf.Tensor4D, b2: tf.Tensor1D): tf.Tensor2D {
    const s = this.outputSize;
    const c = this.config.channels;
    const grid = tf.reshape(tf.relu(h), [-1, s, s, c]) as tf.Tensor4D;
    return tf.reshape(tf.add(tf.conv2d(grid, k2, 1, 'same'), b2), [-1, c]);
  }

  /** The module as standard tfjs model artifacts (model.json topology + weights). */
  artifacts(): Promise<tf.io.ModelArtifacts> {
    return modelArtifacts(this.model);
  }

  dispose(): void {
    this.model.dispose();
  }

  private weights(): { k1: tf.Tensor4D; b1: tf.Tensor1D; k2: tf.Tensor4D; b2: tf.Tensor1D } {
    const [k1, b1, k2, b2] = this.variables;
    if (!k1 || !b1 || !k2 || !b2)
      throw new GimError('invalid_data', 'a vision module needs 4 weights');
    return {
      k1: k1 as tf.Tensor as tf.Tensor4D,
      b1: b1 as tf.Tensor as tf.Tensor1D,
      k2: k2 as tf.Tensor as tf.Tensor4D,
      b2: b2 as tf.Tensor as tf.Tensor1D,
    };
  }
}

export function validateVisionModule(c: VisionModuleConfig): void {
  const ints: [string, number][] = [
    ['inputSize', c.inputSize],
    ['inChannels', c.inChannels],
    ['channels', c.channels],
    ['stride', c.stride],
    ['kernelSize', c.kernelSize],
  ];
  const bad = ints.filter(([, v]) => !(Number.isInteger(v) && v > 0)).map(([k]) => k);
  if (c.kind !== 'vision-conv') bad.push('kind');
  if (c.residualKernelSize !== undefined && ![1, 3].includes(c.residualKernelSize))
    bad.push('residualKernelSize (1 or 3)');
  if (bad.length > 0)
    throw new GimError('invalid_argument', `bad vision module config: ${bad.join(', ')}`);
}
