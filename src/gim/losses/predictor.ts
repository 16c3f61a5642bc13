import * as tf from '@tensorflow/tfjs';

/**
 * The bias-free linear predictors W_k of one module, all steps in one matrix:
 * W [C, K * C], so that z W holds W_k z for every step k (block k = columns kC..(k+1)C-1).
 *
 * Initialised small (std 0.1 / C) so that the step-0 scores are near zero and the step-0 loss is
 * close to ln(1 + N) (GIM.md: a start far above that means the scores start too large).
 */
export class Predictor {
  readonly weight: tf.Variable;

  constructor(
    readonly channels: number,
    readonly steps: number,
    seed: number,
  ) {
    this.weight = tf.variable(
      tf.randomNormal([channels, steps * channels], 0, 0.1 / channels, 'float32', seed),
      true,
    );
  }

  /** z [M, C] → [M, K * C]. */
  predict(z: tf.Tensor2D): tf.Tensor2D {
    return tf.matMul(z, this.weight);
  }

  dispose(): void {
    this.weight.dispose();
  }
}
