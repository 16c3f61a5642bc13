import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { Rng } from '../random.js';
import { EarlyStopping, type EarlyStoppingRule } from './early-stopping.js';

export interface ProbeOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** L2 penalty on the weights (mean over the batch of the cross-entropy + l2 * |W|²). */
  l2: number;
  seed: number;
  /**
   * Per-class loss weights (each item's cross-entropy is scaled by its class's weight before the
   * batch mean); null weighs every item alike.
   */
  classWeights: number[] | null;
  /** With a validation set: what makes an epoch better (see `EarlyStopping`). */
  earlyStopping: EarlyStoppingRule;
  /** With a validation set: stop after this many epochs without a better one. */
  patience: number;
}

export const DEFAULT_PROBE_OPTIONS: ProbeOptions = {
  epochs: 20,
  batchSize: 256,
  learningRate: 3e-3,
  l2: 1e-4,
  seed: 1,
  classWeights: null,
  earlyStopping: 'accuracy',
  patience: 5,
};

/** Rows of features [n, dim] (row-major) and their labels. */
export interface FeatureSet {
  x: Float32Array;
  y: Int32Array;
  n: number;
  dim: number;
}

/** The numbers of a fitted probe: logits = ((x - mean) / std) · w + b. */
export interface SoftmaxParams {
  dim: number;
  classes: number;
  mean: Float32Array; // [D]
  std: Float32Array; // [D]
  w: Float32Array; // [D, C] row-major
  b: Float32Array; // [C]
}

/** What `fit` did: per-epoch mean losses and, with a validation set, the epoch it kept. */
export interface FitHistory {
  /** Weighted cross-entropy + L2 of each epoch's minibatches. */
  trainLoss: number[];
  /** Weighted cross-entropy (no L2) on the validation set after each epoch; empty without one. */
  validationLoss: number[];
  /** Accuracy on the validation set after each epoch; empty without one. */
  validationAccuracy: number[];
  /** 1-based epoch whose weights the probe holds: the best under the rule, else the last. */
  bestEpoch: number;
  stoppedEarly: boolean;
}

/**
 * Softmax regression on frozen features, standardised with the training mean and std: the linear
 * probe of GIM's evaluation. Trained by minibatch Adam; given a validation set, it stops early
 * when the validation score (`earlyStopping`) stops improving and keeps its best epoch's weights.
 */
export class LinearProbe {
  private readonly invStd: Float32Array;
  private fitted: FitHistory = {
    trainLoss: [],
    validationLoss: [],
    validationAccuracy: [],
    bestEpoch: 0,
    stoppedEarly: false,
  };

  private constructor(
    readonly dim: number,
    readonly classes: number,
    private readonly mean: Float32Array,
    private readonly std: Float32Array,
    private readonly w: tf.Variable,
    private readonly b: tf.Variable,
  ) {
    this.invStd = Float32Array.from(std, (s) => 1 / s);
  }

  static fit(
    train: FeatureSet,
    classes: number,
    options: Partial<ProbeOptions> = {},
    onEpoch?: (epoch: number, loss: number, validationLoss?: number) => void,
    validation?: FeatureSet,
    /** After each epoch, with the probe holding that epoch's weights (benchmarks score them). */
    inspect?: (epoch: number, probe: LinearProbe) => void,
  ): LinearProbe {
    const o = { ...DEFAULT_PROBE_OPTIONS, ...options };
    const { n, dim, x, y } = train;
    checkSet(train, classes, 'training');
    if (n === 0) throw new GimError('invalid_argument', 'no training items');
    if (validation) checkSet(validation, classes, 'validation', dim);
    if (validation?.n === 0) validation = undefined;
    const weights = classWeightsOf(o.classWeights, classes);
    const { mean, std } = standardisation(train);
    const probe = new LinearProbe(
      dim,
      classes,
      mean,
      std,
      // Inside tidy, so that the zeros the variables were made from are disposed.
      tf.tidy(() => tf.variable(tf.zeros([dim, classes]))),
      tf.tidy(() => tf.variable(tf.zeros([classes]))),
    );
    const optimizer = tf.train.adam(o.learningRate);
    const rng = new Rng(o.seed);
    const batch = new Float32Array(o.batchSize * dim);
    const labels = new Int32Array(o.batchSize);
    const history = probe.fitted;
    const stopping = validation ? new EarlyStopping(o.earlyStopping, o.patience) : undefined;
    let best: { w: tf.Tensor; b: tf.Tensor } | undefined;
    try {
      for (let epoch = 1; epoch <= o.epochs; epoch++) {
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
            const xb = tf.tensor2d(batch.subarray(0, m * dim), [m, dim]);
            const yb = labels.subarray(0, m);
            const c = optimizer.minimize(
              () =>
                tf.add(
                  probe.crossEntropy(xb, yb, weights),
                  tf.mul(o.l2, tf.sum(tf.square(probe.w))),
                ) as tf.Scalar,
              true,
              [probe.w, probe.b],
            );
            if (!c) throw new GimError('backend_unavailable', 'the optimiser returned no cost');
            return c;
          });
          total += (cost.dataSync()[0] as number) * m;
          cost.dispose();
        }
        history.trainLoss.push(total / n);
        inspect?.(epoch, probe);
        if (!validation || !stopping) {
          history.bestEpoch = epoch;
          onEpoch?.(epoch, total / n);
          continue;
        }
        const loss = probe.loss(validation, weights);
        const accuracy = probe.accuracy(validation);
        history.validationLoss.push(loss);
        history.validationAccuracy.push(accuracy);
        onEpoch?.(epoch, total / n, loss);
        if (stopping.update(epoch, { loss, accuracy })) {
          tf.dispose([best?.w, best?.b]);
          best = { w: tf.clone(probe.w), b: tf.clone(probe.b) };
          history.bestEpoch = epoch;
        } else if (stopping.exhausted(epoch) && epoch < o.epochs) {
          history.stoppedEarly = true;
          break;
        }
      }
      if (best) {
        probe.w.assign(best.w);
        probe.b.assign(best.b);
      }
    } catch (e) {
      probe.dispose();
      throw e;
    } finally {
      optimizer.dispose();
      tf.dispose([best?.w, best?.b]);
    }
    return probe;
  }

  /** How the fit went (empty for a probe that was not fitted). */
  get history(): FitHistory {
    return this.fitted;
  }

  /** Class probabilities [n, classes] of features [n, dim]. */
  predictProba(x: Float32Array, n: number): Float32Array {
    return tf.tidy(
      () => tf.softmax(this.logits(tf.tensor2d(x, [n, this.dim]))).dataSync() as Float32Array,
    );
  }

  /** Mean cross-entropy of a set (each item scaled by its class weight, if given); no L2. */
  loss(set: FeatureSet, classWeights?: Float32Array): number {
    checkSet(set, this.classes, 'evaluation', this.dim);
    let total = 0;
    const chunk = 4096;
    for (let start = 0; start < set.n; start += chunk) {
      const m = Math.min(chunk, set.n - start);
      const xs = set.x.subarray(start * this.dim, (start + m) * this.dim);
      const ys = set.y.subarray(start, start + m);
      total += tf.tidy(
        () =>
          (this.crossEntropy(
            tf.tensor2d(xs, [m, this.dim]),
            ys,
            classWeights,
          ).dataSync()[0] as number) * m,
      );
    }
    return set.n === 0 ? NaN : total / set.n;
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

  /** Copies of the fitted numbers, for a head that stores and applies them without tfjs. */
  params(): SoftmaxParams {
    return {
      dim: this.dim,
      classes: this.classes,
      mean: this.mean.slice(),
      std: this.std.slice(),
      w: (this.w.dataSync() as Float32Array).slice(),
      b: (this.b.dataSync() as Float32Array).slice(),
    };
  }

  dispose(): void {
    this.w.dispose();
    this.b.dispose();
  }

  /** Standardised features [m, D] → logits [m, C]. */
  private logits(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const z = tf.mul(tf.sub(x, tf.tensor1d(this.mean)), tf.tensor1d(this.invStd)); // [m, D]
      return tf.add(tf.matMul(z, this.w), this.b) as tf.Tensor2D; // [m, C]
    });
  }

  /** Mean over the rows of (class weight ×) cross-entropy: a scalar. */
  private crossEntropy(x: tf.Tensor2D, y: Int32Array, classWeights?: Float32Array): tf.Scalar {
    return tf.tidy(() => {
      const onehot = tf.oneHot(tf.tensor1d(y, 'int32'), this.classes); // [m, C]
      const ce = tf.losses.softmaxCrossEntropy(
        onehot,
        this.logits(x),
        undefined,
        0,
        tf.Reduction.NONE,
      ); // [m]
      if (!classWeights) return tf.mean(ce);
      const w = Float32Array.from(y, (label) => classWeights[label] as number); // [m]
      return tf.mean(tf.mul(ce, tf.tensor1d(w)));
    });
  }
}

function checkSet(set: FeatureSet, classes: number, what: string, dim = set.dim): void {
  const { n, x, y } = set;
  if (set.dim !== dim || x.length !== n * dim || y.length !== n)
    throw new GimError(
      'invalid_argument',
      `${what} features are not [${n}, ${dim}] with ${n} labels`,
    );
  for (let i = 0; i < n; i++) {
    const label = y[i] as number;
    if (!(label >= 0 && label < classes))
      throw new GimError('invalid_argument', `${what} label ${label} is not in 0..${classes - 1}`);
  }
}

function classWeightsOf(weights: number[] | null, classes: number): Float32Array | undefined {
  if (weights === null) return undefined;
  if (weights.length !== classes || !weights.every((w) => Number.isFinite(w) && w >= 0))
    throw new GimError(
      'invalid_argument',
      `classWeights needs ${classes} finite non-negative numbers, got [${weights.join(', ')}]`,
    );
  return Float32Array.from(weights);
}

/** Per-dimension mean and std (floored, so constant features stay finite) of a set. */
function standardisation(set: FeatureSet): { mean: Float32Array; std: Float32Array } {
  const { n, dim, x } = set;
  const mean = new Float32Array(dim);
  const sq = new Float64Array(dim);
  for (let i = 0; i < n; i++)
    for (let d = 0; d < dim; d++) {
      const v = x[i * dim + d] as number;
      mean[d] = (mean[d] as number) + v / n;
      sq[d] = (sq[d] as number) + (v * v) / n;
    }
  const std = Float32Array.from(mean, (m, d) =>
    Math.sqrt(Math.max((sq[d] as number) - m * m, 0) + 1e-6),
  );
  return { mean, std };
}
