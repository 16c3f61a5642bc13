import * as tf from '@tensorflow/tfjs';

/**
 * The bias-free linear predictors W_k of one module, all steps in one matrix:
 * W [C, K * C], so that z W holds W_k z for every step k (block k = columns kC..(k+1)C-1).
 *
 * Initialised small (std 0.1 / sqrt(C * C_target)) so that the step-0 scores are near zero and the step-0 loss is
 * close to ln(1 + N) (GIM.md: a start far above that means the scores start too large).
 */
export class Predictor {
  readonly weight: tf.Variable;

  /**
   * `channels` of the context c; `targetChannels` of the predicted encodings z (default the same:
   * vision and the conv modules predict their own output; the audio GRU predicts its input).
   */
  constructor(
    readonly channels: number,
    readonly steps: number,
    seed: number,
    readonly targetChannels = channels,
  ) {
    const scale = 0.1 / Math.sqrt(channels * targetChannels);
    // Inside tidy, so that the random tensor the variable was made from is disposed.
    this.weight = tf.tidy(() =>
      tf.variable(
        tf.randomNormal([channels, steps * targetChannels], 0, scale, 'float32', seed),
        true,
      ),
    );
  }

  /** c [M, C] → [M, K * C_target]. */
  predict(z: tf.Tensor2D): tf.Tensor2D {
    return tf.matMul(z, this.weight);
  }

  dispose(): void {
    this.weight.dispose();
  }
}
