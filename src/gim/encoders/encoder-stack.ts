import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { imagesToPatches, patchGrid, type ImageAdapterConfig } from '../modality/image.js';
import { residualKernel, VisionModule, type VisionModuleConfig } from './vision-module.js';
import type { GridShape } from './pooling.js';
import { loadModules, ModuleStack, type LayerShape } from './gim-module.js';
import { imageManifest, type StackManifest } from '../store/manifest.js';

/** GIM.md's strides for a stack of n modules: 1 for the first, 2 for every other. */
export const defaultStrides = (n: number): number[] =>
  Array.from({ length: n }, (_, i) => (i === 0 ? 1 : 2));

/**
 * The scaled-down GIM.md vision encoder: conv3x3 strides 1, 2, 2 with a residual 1x1 each (or,
 * per module, a residual 3x3: `residualKernels`). channels: [16, 32, 64] by default, [8, 16, 32]
 * for a fast run.
 */
export function visionModuleConfigs(
  adapter: ImageAdapterConfig,
  channels: number[] = [16, 32, 64],
  strides: number[] = defaultStrides(channels.length),
  residualKernels: number[] = channels.map(() => 1),
): VisionModuleConfig[] {
  if (channels.length === 0 || channels.length !== strides.length)
    throw new GimError(
      'invalid_argument',
      `need one stride per module: ${channels.length} channel counts, ${strides.length} strides`,
    );
  if (residualKernels.length !== channels.length)
    throw new GimError(
      'invalid_argument',
      `need one residual kernel per module: ${channels.length} channel counts, ${residualKernels.length} residual kernels`,
    );
  const configs: VisionModuleConfig[] = [];
  let size = adapter.patchSize;
  let inChannels: number = adapter.channels;
  channels.forEach((c, i) => {
    const stride = strides[i] as number;
    const residual = residualKernels[i] as number;
    configs.push({
      kind: 'vision-conv',
      inputSize: size,
      inChannels,
      channels: c,
      stride,
      kernelSize: 3,
      // Absent when 1, so configs (and manifests) of stacks made before the option compare equal.
      ...(residual !== 1 ? { residualKernelSize: residual } : {}),
    });
    size = Math.ceil(size / stride);
    inChannels = c;
  });
  return configs;
}

/** "32/64 (strides 1/2)", with ", residual kernels 3/1" when any is not 1. */
function describeModules(configs: VisionModuleConfig[]): string {
  const kernels = configs.map(residualKernel);
  const residual = kernels.some((k) => k !== 1) ? `, residual kernels ${kernels.join('/')}` : '';
  return (
    `${configs.map((c) => c.channels).join('/')} ` +
    `(strides ${configs.map((c) => c.stride).join('/')}${residual})`
  );
}

/** Module i (0-based) of a stack made with `seed`: its initial weights depend on seed and i only. */
const createModule = (c: VisionModuleConfig, i: number, seed: number) =>
  VisionModule.create(c, seed + 7919 * (i + 1), `module${i + 1}`);

/** The GridShape of a [n, rows, cols, C] embedding grid tensor. */
export function gridShape(grid: tf.Tensor4D): GridShape {
  const [n, rows, cols, channels] = grid.shape;
  return { n, rows, cols, channels };
}

/**
 * A stack of K modules applied to each patch of an image's grid. Every module's output, averaged
 * over the patch, is an embedding: `embed` runs only up to the deepest layer asked for.
 */
export class EncoderStack extends ModuleStack<VisionModule, VisionModuleConfig> {
  readonly modality = 'image' as const;

  constructor(
    readonly adapter: ImageAdapterConfig,
    modules: VisionModule[],
  ) {
    super(modules);
    modules.forEach((m, i) => {
      const prev = i === 0 ? null : (modules[i - 1] as VisionModule);
      const size = prev ? prev.outputSize : adapter.patchSize;
      const ch = prev ? prev.config.channels : adapter.channels;
      if (m.config.inputSize !== size || m.config.inChannels !== ch)
        throw new GimError(
          'invalid_argument',
          `module ${i + 1} expects ${m.config.inputSize}x${m.config.inputSize}x${m.config.inChannels} input, ` +
            `the layer below gives ${size}x${size}x${ch}`,
        );
    });
  }

  static create(
    adapter: ImageAdapterConfig,
    configs: VisionModuleConfig[],
    seed: number,
  ): EncoderStack {
    return new EncoderStack(
      adapter,
      configs.map((c, i) => createModule(c, i, seed)),
    );
  }

  /**
   * This stack with new modules on top: `configs` lists every module, the first `depth` of them
   * this stack's own (kept, weights and all); each new one starts from the initial weights a fresh
   * stack of `configs` with this seed would give it. The result owns this stack's modules; with no
   * new module it is this stack.
   */
  grow(configs: VisionModuleConfig[], seed: number): EncoderStack {
    const own = this.moduleConfigs;
    const same = (a: VisionModuleConfig, b: VisionModuleConfig | undefined) =>
      b !== undefined &&
      (Object.keys(a) as (keyof VisionModuleConfig)[]).every((k) => a[k] === b[k]);
    if (configs.length < own.length || !own.every((c, i) => same(c, configs[i])))
      throw new GimError(
        'invalid_argument',
        `channels ${describeModules(configs)} do not extend the stack's ${describeModules(own)}: ` +
          'a retrain keeps its modules; to grow it, list them unchanged and then the new ones',
      );
    if (configs.length === own.length) return this;
    const added = configs.slice(own.length).map((c, j) => createModule(c, own.length + j, seed));
    return new EncoderStack(this.adapter, [...this.modules, ...added]);
  }

  /** Rebuilds a published image stack (invalid_argument if the manifest is another modality's). */
  static fromManifest(
    manifest: StackManifest,
    artifacts: tf.io.ModelArtifacts[],
  ): Promise<EncoderStack> {
    const m = imageManifest(manifest);
    return EncoderStack.fromArtifacts(
      m.adapter,
      m.modules.map((x) => x.config),
      artifacts,
    );
  }

  /** Rebuilds a stack from saved module artifacts (a published version or a checkpoint). */
  static async fromArtifacts(
    adapter: ImageAdapterConfig,
    configs: VisionModuleConfig[],
    artifacts: tf.io.ModelArtifacts[],
  ): Promise<EncoderStack> {
    const modules = await loadModules(configs, artifacts, (c, a) =>
      VisionModule.fromArtifacts(c, a),
    );
    return new EncoderStack(adapter, modules);
  }

  get grid(): { rows: number; cols: number } {
    return patchGrid(this.adapter);
  }

  /** One patch's output [s, s, C] on the rows x cols grid; the embedding is C per patch. */
  layerShapes(): LayerShape[] {
    const { rows, cols } = this.grid;
    return this.modules.map((m) => ({
      outputShape: m.outputShape,
      gridShape: [rows, cols],
      embeddingDim: m.channels,
    }));
  }

  /** Normalised patches [n * rows * cols, p, p, c] of images [n, h, w, c] in [0, 1]. */
  patches(pixels: Float32Array, n: number): tf.Tensor4D {
    const p = this.adapter.patchSize;
    const { rows, cols } = this.grid;
    const data = imagesToPatches(pixels, n, this.adapter);
    return tf.tensor4d(data, [n * rows * cols, p, p, this.adapter.channels]);
  }

  /**
   * Per-patch embeddings of the requested layers: layer → grid [n, rows, cols, C_layer], each
   * patch's module output averaged over its pixels. One forward pass up to the deepest layer.
   */
  embed(pixels: Float32Array, n: number, layers: number[]): Map<number, tf.Tensor4D> {
    if (layers.length === 0) throw new GimError('invalid_argument', 'ask for at least one layer');
    layers.forEach((l) => this.layer(l));
    const deepest = Math.max(...layers);
    const { rows, cols } = this.grid;
    const out = new Map<number, tf.Tensor4D>();
    tf.tidy(() => {
      let x: tf.Tensor4D = this.patches(pixels, n);
      for (let l = 1; l <= deepest; l++) {
        x = this.layer(l).apply(x);
        if (layers.includes(l)) {
          const c = x.shape[3];
          out.set(l, tf.keep(tf.reshape(tf.mean(x, [1, 2]), [n, rows, cols, c])));
        }
      }
    });
    return out;
  }
}
