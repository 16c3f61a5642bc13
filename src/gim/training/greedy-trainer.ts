import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { Rng } from '../random.js';
import { imagesToPatches } from '../modality/image.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import { im2col } from '../encoders/im2col.js';
import type { VisionModule } from '../encoders/vision-module.js';
import { Predictor } from '../losses/predictor.js';
import { gridPairs, infoNce, sampleNegatives, type PositivePairs } from '../losses/info-nce.js';
import { resolveConvRoute, type ConvRoute, type TrainConfig } from './config.js';

/** One training batch: images [n, h, w, c] with pixels in [0, 1]. */
export interface TrainBatch {
  images: Float32Array;
  n: number;
}

/**
 * The numeric side of GIM training: per-module predictors and optimisers, and one step on a batch.
 * No data loading, no loop, no I/O (see `runTraining`).
 *
 * Gradient isolation: module m's input is computed before and outside module m's gradient
 * computation, and only module m's own variables (and its predictor) are differentiated, so no
 * gradient of module m's loss reaches modules < m (tfjs has no stopGradient).
 */
export class GreedyTrainer {
  readonly predictors: Predictor[];
  readonly optimizers: tf.Optimizer[];
  private readonly pairsCache = new Map<number, PositivePairs>();

  readonly config: TrainConfig & { convRoute: ConvRoute };

  constructor(
    readonly stack: EncoderStack,
    config: TrainConfig,
  ) {
    this.config = { ...config, convRoute: resolveConvRoute(config.convRoute, tf.getBackend()) };
    if (config.fromModule > stack.depth)
      throw new GimError(
        'invalid_argument',
        `fromModule ${config.fromModule} > depth ${stack.depth}`,
      );
    const { rows } = stack.grid;
    if (config.offsets.some((o) => o >= rows))
      throw new GimError('invalid_argument', `offsets must be below the grid's ${rows} rows`);
    const seeds = new Rng(config.seed ^ 0x5eed);
    this.predictors = stack.modules.map(
      (m) => new Predictor(m.config.channels, config.offsets.length, seeds.seed()),
    );
    // One optimiser per module: Adam keys its moments by position in the gradient list (GIM.md).
    // end-to-end uses a single optimiser over all variables instead.
    const count = config.schedule === 'end-to-end' ? 1 : stack.depth;
    this.optimizers = Array.from({ length: count }, () => tf.train.adam(config.learningRate));
  }

  /** The variables module m (1-based) is trained on: its own weights and its predictor. */
  moduleVariables(m: number): tf.Variable[] {
    return [...this.stack.layer(m).variables, (this.predictors[m - 1] as Predictor).weight];
  }

  /**
   * One step. `active` lists the modules (1-based) that learn from this batch; modules below the
   * deepest active one only run forward. Returns the loss per module (NaN for inactive ones).
   * `rng` drives augmentation and negatives, so a step is reproducible from it.
   */
  step(batch: TrainBatch, active: number[], rng: Rng): number[] {
    const losses = new Array<number>(this.stack.depth).fill(NaN);
    const patches = this.patchTensor(batch, rng);
    try {
      if (this.config.schedule === 'end-to-end') {
        losses[this.stack.depth - 1] = this.endToEndStep(patches, batch.n, rng);
        return losses;
      }
      const deepest = Math.max(...active);
      let x: tf.Tensor4D = patches;
      for (let m = 1; m <= deepest; m++) {
        const module = this.stack.layer(m);
        const isActive = active.includes(m);
        const next: tf.Tensor4D = isActive
          ? this.moduleStep(m, module, x, batch.n, rng, losses)
          : tf.tidy(() => module.apply(x));
        if (x !== patches) x.dispose();
        x = next;
      }
      if (x !== patches) x.dispose();
      return losses;
    } finally {
      patches.dispose();
    }
  }

  /** Loss of each module on a batch, without learning (validation). */
  evaluate(batch: TrainBatch, rng: Rng): number[] {
    return tf.tidy(() => {
      let x: tf.Tensor4D = this.patchTensor(batch);
      return this.stack.modules.map((module, i) => {
        x = module.apply(x);
        return this.moduleLoss(i + 1, x, batch.n, rng).dataSync()[0] as number;
      });
    });
  }

  dispose(): void {
    this.predictors.forEach((p) => p.dispose());
    this.optimizers.forEach((o) => o.dispose());
    this.pairsCache.clear();
  }

  private patchTensor(batch: TrainBatch, augment?: Rng): tf.Tensor4D {
    const a = this.stack.adapter;
    const { rows, cols } = this.stack.grid;
    const data = imagesToPatches(batch.images, batch.n, a, augment);
    return tf.tensor4d(data, [batch.n * rows * cols, a.patchSize, a.patchSize, a.channels]);
  }

  private pairs(n: number): PositivePairs {
    let p = this.pairsCache.get(n);
    if (!p) {
      const { rows, cols } = this.stack.grid;
      p = gridPairs(n, rows, cols, this.config.offsets);
      this.pairsCache.set(n, p);
    }
    return p;
  }

  /** InfoNCE of module m's output y [N, s, s, C] (or [N * s * s, C] rows, see `pooled`). */
  private moduleLoss(m: number, y: tf.Tensor4D, n: number, rng: Rng): tf.Scalar {
    const z = tf.mean(y, [1, 2]) as tf.Tensor2D; // [n * rows * cols, C]: one vector per patch
    return this.lossOf(m, z, n, rng);
  }

  private lossOf(m: number, z: tf.Tensor2D, n: number, rng: Rng): tf.Scalar {
    const pairs = this.pairs(n);
    const negatives = sampleNegatives(pairs, this.config.negatives, rng);
    const preds = (this.predictors[m - 1] as Predictor).predict(z); // [n * rows * cols, K * C]
    return infoNce(preds, z, pairs, negatives);
  }

  /** Trains module m on its constant input x; returns its output (for the next module), kept. */
  private moduleStep(
    m: number,
    module: VisionModule,
    x: tf.Tensor4D,
    n: number,
    rng: Rng,
    losses: number[],
  ): tf.Tensor4D {
    const [N] = x.shape;
    const [s, , C] = module.outputShape;
    let cols: tf.Tensor2D | null = null;
    if (this.config.convRoute === 'im2col') {
      const { inputSize, inChannels, kernelSize, stride } = module.config;
      const data = im2col(x.dataSync() as Float32Array, N, {
        size: inputSize,
        channels: inChannels,
        kernel: kernelSize,
        stride,
      });
      cols = tf.tensor2d(data, [N * s * s, kernelSize * kernelSize * inChannels]);
    }
    let output: tf.Tensor4D | null = null;
    try {
      const { value, grads } = tf.variableGrads(() => {
        const y = cols ? tf.reshape(module.applyColumns(cols), [N, s, s, C]) : module.apply(x);
        output = tf.keep(y) as tf.Tensor4D;
        return this.moduleLoss(m, y as tf.Tensor4D, n, rng);
      }, this.moduleVariables(m));
      (this.optimizers[m - 1] as tf.Optimizer).applyGradients(grads);
      losses[m - 1] = value.dataSync()[0] as number;
      value.dispose();
      tf.dispose(grads);
    } finally {
      cols?.dispose();
    }
    if (!output) throw new GimError('backend_unavailable', `module ${m} produced no output`);
    return output;
  }

  /** CPC baseline: one loss on the last module, gradients through every trainable module. */
  private endToEndStep(patches: tf.Tensor4D, n: number, rng: Rng): number {
    const K = this.stack.depth;
    const from = this.config.fromModule;
    const vars: tf.Variable[] = [];
    for (let m = from; m <= K; m++) vars.push(...this.stack.layer(m).variables);
    vars.push((this.predictors[K - 1] as Predictor).weight);
    const frozenInput = tf.tidy(() => {
      let x: tf.Tensor4D = patches;
      for (let m = 1; m < from; m++) x = this.stack.layer(m).apply(x);
      return x;
    });
    try {
      const { value, grads } = tf.variableGrads(() => {
        let x: tf.Tensor4D = frozenInput;
        for (let m = from; m <= K; m++) x = this.stack.layer(m).apply(x);
        return this.moduleLoss(K, x, n, rng);
      }, vars);
      (this.optimizers[0] as tf.Optimizer).applyGradients(grads);
      const loss = value.dataSync()[0] as number;
      value.dispose();
      tf.dispose(grads);
      return loss;
    } finally {
      if (frozenInput !== patches) frozenInput.dispose();
    }
  }
}

/** A named tensor as tfjs optimisers export their state. */
export type NamedTensor = Awaited<ReturnType<tf.Optimizer['getWeights']>>[number];

/** Trainer state beyond the modules' weights: predictors and optimiser moments, by position. */
export interface TrainerState {
  predictors: tf.Tensor[];
  optimizers: NamedTensor[][];
}

export async function exportTrainerState(trainer: GreedyTrainer): Promise<TrainerState> {
  return {
    predictors: trainer.predictors.map((p) => p.weight),
    optimizers: await Promise.all(trainer.optimizers.map((o) => o.getWeights())),
  };
}

/**
 * Frees what `exportTrainerState` created: tfjs optimisers export their step count as a new
 * scalar named `iter`; every other tensor in the state is a live variable of the trainer.
 */
export function releaseTrainerState(state: TrainerState): void {
  state.optimizers.flat().forEach((w) => {
    if (w.name === 'iter') w.tensor.dispose();
  });
}

/** Restores predictors and optimiser moments saved by `exportTrainerState` (takes ownership). */
export async function importTrainerState(
  trainer: GreedyTrainer,
  state: TrainerState,
): Promise<void> {
  if (
    state.predictors.length !== trainer.predictors.length ||
    state.optimizers.length !== trainer.optimizers.length
  )
    throw new GimError(
      'invalid_data',
      'checkpoint does not match the trainer (module count or schedule)',
    );
  state.predictors.forEach((t, i) => {
    const p = trainer.predictors[i] as Predictor;
    if (t.shape.join() !== p.weight.shape.join())
      throw new GimError('invalid_data', `checkpoint predictor ${i + 1} has shape [${t.shape}]`);
    p.weight.assign(t);
    t.dispose();
  });
  for (let i = 0; i < state.optimizers.length; i++) {
    const weights = state.optimizers[i] as NamedTensor[];
    // Adam copies the moments into new variables and keeps no reference to these tensors.
    await (trainer.optimizers[i] as tf.Optimizer).setWeights(weights);
    weights.forEach((w) => w.tensor.dispose());
  }
}
