import type * as tf from '@tensorflow/tfjs';
import type { Rng } from '../random.js';
import type { GimModule, LayerShape } from '../encoders/gim-module.js';
import type { PositivePairs } from '../losses/info-nce.js';
import type { AdapterConfig, ModuleConfig } from '../store/manifest.js';

/** One training batch: `n` items of modality-specific data (images [n, h, w, c], clips [n, T]). */
export interface TrainBatch {
  data: Float32Array;
  n: number;
}

/** Training data of any modality: `count` items, streamed in batches in a reproducible order. */
export interface TrainingData {
  readonly count: number;
  /**
   * The batches of one epoch, in an order fixed by (seed, epoch); the last partial one dropped.
   * `skip` leaves out the first batches cheaply (no reading), the rest unchanged: a run resumed
   * in the middle of an epoch continues with the batch it would have trained on next.
   */
  batches(opts: {
    batchSize: number;
    seed: number;
    epoch: number;
    skip?: number;
  }): AsyncIterable<TrainBatch>;
}

/** The part of a stack the trainer works on. */
export interface TrainableStack {
  readonly adapter: AdapterConfig;
  readonly moduleConfigs: ModuleConfig[];
  readonly modules: GimModule[];
  readonly depth: number;
  layer(index: number): GimModule;
  artifacts(): Promise<tf.io.ModelArtifacts[]>;
  layerShapes(): LayerShape[];
  dispose(): void;
}

/**
 * What differs between modalities in GIM training; the trainer itself is one code path.
 * - vision: input = the patch grid of every image, encodings = each patch's output averaged,
 *   positives = same column, offset rows ahead;
 * - audio: input = raw windows, encodings = each output frame (the GRU module predicts its input
 *   frames from its context), positives = k frames ahead, in a random window on long layers.
 */
export interface TrainingModality {
  /** Model input of a batch (augmented from `augment` while training): rank 4. */
  input(batch: TrainBatch, augment?: Rng): tf.Tensor4D;
  /**
   * Context encodings c [M, Cc] and target encodings z [M, Cz] of module m (1-based) from its
   * input x and output y. Called inside the gradient computation: only y carries gradient.
   */
  encodings(
    m: number,
    x: tf.Tensor4D,
    y: tf.Tensor4D,
  ): { context: tf.Tensor2D; targets: tf.Tensor2D };
  /** Positive pairs of module m for a batch of n items. */
  pairs(m: number, n: number, rng: Rng): PositivePairs;
  /** Shapes of module m's predictor: context and target channels, prediction steps. */
  predictor(m: number): { context: number; target: number; steps: number };
  /**
   * Optionally, a cheaper forward of module m on a constant input for greedy training (vision:
   * im2col + matMul). Returns null to use `module.apply`.
   */
  greedyForward?(m: number, x: tf.Tensor4D): { forward(): tf.Tensor4D; dispose(): void } | null;
  /** What one item is made of, for throughput: e.g. 36 patches per image. */
  readonly unitsPerItem: number;
  readonly unitName: string;
}
