import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { Rng } from '../random.js';

export interface ProbeOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** L2 penalty on the weights (mean over the batch of the cross-entropy + l2 * |W|²). */
  l2: number;
  seed: number;
}

export const DEFAULT_PROBE_OPTIONS: ProbeOptions = {
  epochs: 20,
  batchSize: 256,
  learningRate: 3e-3,
  l2: 1e-4,
  seed: 1,
};

/** Rows of features [n, dim] (row-major) and their labels. */
export interface FeatureSet {
  x: Float32Array;
  y: Int32Array;
  n: number;
  dim: number;
}

/**
 * Softmax regression on frozen features, standardised with the training mean and std: the linear
 * probe of GIM's evaluation. Trained by minibatch Adam.
 */
export class LinearProbe {
  private constructor(
    readonly dim: number,
    readonly classes: number,
    private readonly mean: Float32Array,
    private readonly invStd: Float32Array,
    private readonly w: tf.Variable,
    private readonly b: tf.Variable,
  ) {}

  static fit(
    train: FeatureSet,
    classes: number,
    options: Partial<ProbeOptions> = {},
    onEpoch?: (epoch: number, loss: number) => void,
  ): LinearProbe {
    const o = { ...DEFAULT_PROBE_OPTIONS, ...options };
    const { n, dim, x, y } = train;
    if (x.length !== n * dim || y.length !== n)
      throw new GimError('invalid_argument', `features are not [${n}, ${dim}] with ${n} labels`);
    if (n === 0) throw new GimError('invalid_argument', 'no training items');
    const mean = new Float32Array(dim);
    const sq = new Float64Array(dim);
    for (let i = 0; i < n; i++)
      for (let d = 0; d < dim; d++) {
        const v = x[i * dim + d] as number;
        mean[d] = (mean[d] as number) + v / n;
        sq[d] = (sq[d] as number) + (v * v) / n;
      }
    const invStd = Float32Array.from(
      mean,
      (m, d) => 1 / Math.sqrt(Math.max((sq[d] as number) - m * m, 0) + 1e-6),
    );
    const probe = new LinearProbe(
      dim,
      classes,
      mean,
      invStd,
      tf.variable(tf.zeros([dim, classes])),
      tf.variable(tf.zeros([classes])),
    );
    const optimizer = tf.train.adam(o.learningRate);
    const rng = new Rng(o.seed);
    const batch = new Float32Array(o.batchSize * dim);
    const labels = new Int32Array(o.batchSize);
    try {
      for (let epoch = 0; epoch < o.epochs; epoch++) {
        const order = rng.permutation(n);
        let total = 0;
        for (let start = 0; start < n; start += o.batchSize) {
          const m = Math.min(o.batchSize, n - start);
          for (let i = 0; i < m; i++) {
            const row = order[start + i] as number;
            batch.set(x.subarray(row * dim, (row + 1) * dim), i * dim);
            labels[i] = y[row] as number;
          }
          const cost = tf.tidy((): tf.Scalar => {
            const xb = probe.standardize(tf.tensor2d(batch.subarray(0, m * dim), [m, dim]));
            const yb = tf.oneHot(tf.tensor1d(labels.subarray(0, m), 'int32'), classes);
            const c = optimizer.minimize(
              () => {
                const logits = tf.add(tf.matMul(xb, probe.w), probe.b);
                const ce = tf.losses.softmaxCrossEntropy(yb, logits);
                return tf.add(ce, tf.mul(o.l2, tf.sum(tf.square(probe.w)))) as tf.Scalar;
              },
              true,
              [probe.w, probe.b],
            );
            if (!c) throw new GimError('backend_unavailable', 'the optimiser returned no cost');
            return c;
          });
          total += (cost.dataSync()[0] as number) * m;
          cost.dispose();
        }
        onEpoch?.(epoch + 1, total / n);
      }
    } finally {
      optimizer.dispose();
    }
    return probe;
  }

  /** Class probabilities [n, classes] of features [n, dim]. */
  predictProba(x: Float32Array, n: number): Float32Array {
    return tf.tidy(() => {
      const logits = tf.add(
        tf.matMul(this.standardize(tf.tensor2d(x, [n, this.dim])), this.w),
        this.b,
      );
      return tf.softmax(logits).dataSync() as Float32Array;
    });
  }

  /** Fraction of rows whose most probable class is the label. */
  accuracy(set: FeatureSet): number {
    let correct = 0;
    const chunk = 4096;
    for (let start = 0; start < set.n; start += chunk) {
      const m = Math.min(chunk, set.n - start);
      const p = this.predictProba(set.x.subarray(start * this.dim, (start + m) * this.dim), m);
      for (let i = 0; i < m; i++) {
        let best = 0;
        for (let c = 1; c < this.classes; c++)
          if ((p[i * this.classes + c] as number) > (p[i * this.classes + best] as number))
            best = c;
        if (best === set.y[start + i]) correct++;
      }
    }
    return correct / set.n;
  }

  dispose(): void {
    this.w.dispose();
    this.b.dispose();
  }

  private standardize(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => tf.mul(tf.sub(x, tf.tensor1d(this.mean)), tf.tensor1d(this.invStd)));
  }
}
