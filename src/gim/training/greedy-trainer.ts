import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { Rng } from '../random.js';
import { EncoderStack } from '../encoders/encoder-stack.js';
import { Predictor } from '../losses/predictor.js';
import { infoNce, sampleNegatives } from '../losses/info-nce.js';
import {
  resolveConvRoute,
  scheduledLearningRate,
  type ConvRoute,
  type TrainConfig,
} from './config.js';
import { HostAdam } from './host-adam.js';
import { imageTraining } from './image-training.js';
import { audioTraining } from './audio-training.js';
import { AudioEncoderStack } from '../encoders/audio-stack.js';
import type { TrainableStack, TrainBatch, TrainingModality } from './modality.js';

export type { TrainBatch } from './modality.js';

/** The training view of a stack, by its modality. */
export function trainingModality(
  stack: TrainableStack,
  config: TrainConfig & { convRoute: ConvRoute },
): TrainingModality {
  if (stack instanceof EncoderStack) return imageTraining(stack, config);
  if (stack instanceof AudioEncoderStack) return audioTraining(stack, config);
  throw new GimError('invalid_argument', 'no training modality for this kind of stack');
}

/**
 * The numeric side of GIM training: per-module predictors and optimisers, and one step on a batch.
 * No data loading, no loop, no I/O (see `runTraining`); what differs between images and audio
 * lives in the `TrainingModality`.
 *
 * Gradient isolation: module m's input is computed before and outside module m's gradient
 * computation, and only module m's own variables (and its predictor) are differentiated, so no
 * gradient of module m's loss reaches modules < m (tfjs has no stopGradient).
 */
export class GreedyTrainer {
  readonly predictors: Predictor[];
  readonly optimizers: HostAdam[];
  readonly config: TrainConfig & { convRoute: ConvRoute };
  readonly modality: TrainingModality;

  constructor(
    readonly stack: TrainableStack,
    config: TrainConfig,
    modality?: TrainingModality,
  ) {
    this.config = { ...config, convRoute: resolveConvRoute(config.convRoute, tf.getBackend()) };
    if (config.fromModule > stack.depth)
      throw new GimError(
        'invalid_argument',
        `fromModule ${config.fromModule} > depth ${stack.depth}`,
      );
    this.modality = modality ?? trainingModality(stack, this.config);
    const seeds = new Rng(config.seed ^ 0x5eed);
    this.predictors = stack.modules.map((_, i) => {
      const p = this.modality.predictor(i + 1);
      return new Predictor(p.context, p.steps, seeds.seed(), p.target);
    });
    // One optimiser per module: Adam keys its moments by position in the gradient list (GIM.md).
    // end-to-end uses a single optimiser over all variables instead.
    const count = config.schedule === 'end-to-end' ? 1 : stack.depth;
    this.optimizers = Array.from({ length: count }, () => new HostAdam(config.learningRate));
  }

  /**
   * Sets every optimiser's learning rate for a step (0-based) of a run of `totalSteps` steps,
   * following `config.lrSchedule`.
   */
  scheduleLearningRate(step: number, totalSteps: number): void {
    const lr = scheduledLearningRate(
      this.config.learningRate,
      this.config.lrSchedule ?? 'constant', // checkpoints from before the option
      step,
      totalSteps,
    );
    for (const o of this.optimizers) o.learningRate = lr;
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
    const input = this.modality.input(batch, rng);
    try {
      if (this.config.schedule === 'end-to-end') {
        losses[this.stack.depth - 1] = this.endToEndStep(input, batch.n, rng);
        return losses;
      }
      const deepest = Math.max(...active);
      let x: tf.Tensor4D = input;
      for (let m = 1; m <= deepest; m++) {
        const module = this.stack.layer(m);
        const next: tf.Tensor4D = active.includes(m)
          ? this.moduleStep(m, x, batch.n, rng, losses)
          : tf.tidy(() => module.apply(x));
        if (x !== input) x.dispose();
        x = next;
      }
      if (x !== input) x.dispose();
      return losses;
    } finally {
      input.dispose();
    }
  }

  /** Loss of each module on a batch, without learning (validation). */
  evaluate(batch: TrainBatch, rng: Rng): number[] {
    return tf.tidy(() => {
      let x: tf.Tensor4D = this.modality.input(batch);
      return this.stack.modules.map((module, i) => {
        const y = module.apply(x);
        const loss = this.moduleLoss(i + 1, x, y, batch.n, rng).dataSync()[0] as number;
        x = y;
        return loss;
      });
    });
  }

  dispose(): void {
    this.predictors.forEach((p) => p.dispose());
    this.optimizers.forEach((o) => o.dispose());
  }

  /** InfoNCE of module m from its input x and output y. */
  private moduleLoss(m: number, x: tf.Tensor4D, y: tf.Tensor4D, n: number, rng: Rng): tf.Scalar {
    const { context, targets } = this.modality.encodings(m, x, y);
    const pairs = this.modality.pairs(m, n, rng);
    const from = this.config.negativesFrom ?? 'batch'; // checkpoints from before the option
    const negatives = sampleNegatives(pairs, this.config.negatives, rng, from);
    const preds = (this.predictors[m - 1] as Predictor).predict(context); // [M, K * Cz]
    return infoNce(preds, targets, pairs, negatives);
  }

  /** Trains module m on its constant input x; returns its output (for the next module), kept. */
  private moduleStep(
    m: number,
    x: tf.Tensor4D,
    n: number,
    rng: Rng,
    losses: number[],
  ): tf.Tensor4D {
    const module = this.stack.layer(m);
    const fast = this.modality.greedyForward?.(m, x) ?? null;
    let output: tf.Tensor4D | null = null;
    try {
      const { value, grads } = tf.variableGrads(() => {
        const y = fast ? fast.forward() : module.apply(x);
        output = tf.keep(y);
        return this.moduleLoss(m, x, y, n, rng);
      }, this.moduleVariables(m));
      (this.optimizers[m - 1] as HostAdam).applyGradients(grads);
      losses[m - 1] = value.dataSync()[0] as number;
      value.dispose();
      tf.dispose(grads);
    } finally {
      fast?.dispose();
    }
    if (!output) throw new GimError('backend_unavailable', `module ${m} produced no output`);
    return output;
  }

  /** CPC baseline: one loss on the last module, gradients through every trainable module. */
  private endToEndStep(input: tf.Tensor4D, n: number, rng: Rng): number {
    const K = this.stack.depth;
    const from = this.config.fromModule;
    const vars: tf.Variable[] = [];
    for (let m = from; m <= K; m++) vars.push(...this.stack.layer(m).variables);
    vars.push((this.predictors[K - 1] as Predictor).weight);
    const frozenInput = tf.tidy(() => {
      let x: tf.Tensor4D = input;
      for (let m = 1; m < from; m++) x = this.stack.layer(m).apply(x);
      return x;
    });
    try {
      const { value, grads } = tf.variableGrads(() => {
        let x: tf.Tensor4D = frozenInput;
        let below: tf.Tensor4D = frozenInput;
        for (let m = from; m <= K; m++) {
          below = x;
          x = this.stack.layer(m).apply(x);
        }
        return this.moduleLoss(K, below, x, n, rng);
      }, vars);
      (this.optimizers[0] as HostAdam).applyGradients(grads);
      const loss = value.dataSync()[0] as number;
      value.dispose();
      tf.dispose(grads);
      return loss;
    } finally {
      if (frozenInput !== input) frozenInput.dispose();
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
 * Frees what `exportTrainerState` created: the optimisers' state (HostAdam exports new tensors);
 * the predictors are the trainer's live variables.
 */
export function releaseTrainerState(state: TrainerState): void {
  state.optimizers.flat().forEach((w) => w.tensor.dispose());
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
    // HostAdam copies the moments and keeps no reference to these tensors.
    await (trainer.optimizers[i] as tf.Optimizer).setWeights(weights);
    weights.forEach((w) => w.tensor.dispose());
  }
}
