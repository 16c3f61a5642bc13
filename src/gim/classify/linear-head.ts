import { GimError } from '../errors.js';
import { argmax } from './classification-report.js';
import type { SoftmaxParams } from './linear-probe.js';

/** A head's numbers as plain arrays (JSON): logits = ((x - mean) / std) · weights + bias. */
export interface HeadParams {
  mean: number[]; // [D]
  std: number[]; // [D]
  weights: number[][]; // [D][C]
  bias: number[]; // [C]
}

export interface LabelScore {
  label: string;
  /** The class's softmax probability (a row's scores over all classes sum to 1). */
  score: number;
}

/**
 * A softmax-regression head on frozen embeddings of one (stack version, layer, pooling): class
 * names and the fitted standardisation and weights (see `fitHead`). Applied in plain JavaScript,
 * in float64, row by row: an item gets the same probabilities alone or in any batch, and a head
 * needs no tfjs backend (the HTTP thread can apply it to pooled embeddings).
 */
export class LinearHead {
  readonly classes: number;

  private constructor(
    readonly labels: readonly string[],
    readonly dim: number,
    private readonly mean: Float64Array, // [D]
    private readonly std: Float64Array, // [D]
    private readonly w: Float64Array, // [D, C]
    private readonly b: Float64Array, // [C]
  ) {
    this.classes = labels.length;
  }

  /** The head of a fitted probe's numbers. */
  static fromSoftmax(labels: readonly string[], p: SoftmaxParams): LinearHead {
    checkLabels(labels, p.classes);
    return new LinearHead(
      [...labels],
      p.dim,
      Float64Array.from(p.mean),
      Float64Array.from(p.std),
      Float64Array.from(p.w),
      Float64Array.from(p.b),
    );
  }

  /** A stored head (see `toParams`); invalid_data when the arrays do not fit together. */
  static fromParams(labels: readonly string[], params: HeadParams): LinearHead {
    const classes = labels.length;
    const dim = Array.isArray(params.mean) ? params.mean.length : -1;
    const bad = (what: string): never => {
      throw new GimError('invalid_data', `head parameters: ${what}`);
    };
    const numbers = (v: unknown, n: number, what: string): number[] => {
      if (!Array.isArray(v) || v.length !== n || !v.every((x) => Number.isFinite(x)))
        return bad(`${what} must be ${n} finite numbers`);
      return v as number[];
    };
    if (dim < 1) bad('mean must be a non-empty array');
    checkLabels(labels, classes, 'invalid_data');
    const std = numbers(params.std, dim, 'std');
    if (std.some((s) => s <= 0)) bad('std values must be > 0');
    if (!Array.isArray(params.weights) || params.weights.length !== dim)
      bad(`weights must have ${dim} rows`);
    const w = new Float64Array(dim * classes);
    params.weights.forEach((row, d) => w.set(numbers(row, classes, `weights[${d}]`), d * classes));
    return new LinearHead(
      [...labels],
      dim,
      Float64Array.from(numbers(params.mean, dim, 'mean')),
      Float64Array.from(std),
      w,
      Float64Array.from(numbers(params.bias, classes, 'bias')),
    );
  }

  /** The numbers as plain arrays, for storage; `fromParams` of them predicts identically. */
  toParams(): HeadParams {
    const C = this.classes;
    return {
      mean: Array.from(this.mean),
      std: Array.from(this.std),
      weights: Array.from({ length: this.dim }, (_, d) =>
        Array.from(this.w.subarray(d * C, (d + 1) * C)),
      ),
      bias: Array.from(this.b),
    };
  }

  /** Class probabilities [n, C] of features [n, D] (row-major; n defaults to rows of x). */
  predict(x: ArrayLike<number>, n = x.length / this.dim): Float32Array {
    if (!Number.isInteger(n) || x.length !== n * this.dim)
      throw new GimError(
        'invalid_argument',
        `this head takes ${this.dim}-dimensional features; got ${x.length} values for ${n} items`,
      );
    const C = this.classes;
    const D = this.dim;
    const out = new Float32Array(n * C);
    const logits = new Float64Array(C);
    for (let i = 0; i < n; i++) {
      logits.set(this.b);
      for (let d = 0; d < D; d++) {
        const z = ((x[i * D + d] as number) - (this.mean[d] as number)) / (this.std[d] as number);
        if (z === 0) continue;
        for (let c = 0; c < C; c++)
          logits[c] = (logits[c] as number) + z * (this.w[d * C + c] as number);
      }
      const max = logits[argmax(logits, 0, C)] as number;
      let sum = 0;
      for (let c = 0; c < C; c++) sum += logits[c] = Math.exp((logits[c] as number) - max);
      for (let c = 0; c < C; c++) out[i * C + c] = (logits[c] as number) / sum;
    }
    return out;
  }

  /** Per row of probabilities [n, C]: the k most probable classes, most probable first. */
  topK(probs: ArrayLike<number>, k: number): LabelScore[][] {
    if (!Number.isInteger(k) || k < 1)
      throw new GimError('invalid_argument', `k must be a positive integer, got ${k}`);
    const C = this.classes;
    const n = probs.length / C;
    if (!Number.isInteger(n))
      throw new GimError('invalid_argument', `${probs.length} probabilities are not rows of ${C}`);
    return Array.from({ length: n }, (_, i) =>
      this.labels
        .map((label, c) => ({ label, c, score: probs[i * C + c] as number }))
        // Ties keep class order, so the ranking is deterministic.
        .sort((a, b) => b.score - a.score || a.c - b.c)
        .slice(0, Math.min(k, C))
        .map(({ label, score }) => ({ label, score })),
    );
  }
}

function checkLabels(
  labels: readonly string[],
  classes: number,
  code: 'invalid_argument' | 'invalid_data' = 'invalid_argument',
): void {
  if (labels.length !== classes || classes < 2)
    throw new GimError(code, `a head needs one name per class (at least 2), got ${labels.length}`);
  if (new Set(labels).size !== labels.length || labels.some((l) => typeof l !== 'string' || !l))
    throw new GimError(code, `class names must be distinct non-empty strings`);
}
