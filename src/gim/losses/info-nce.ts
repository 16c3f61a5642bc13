import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type { Rng } from '../random.js';
import { infoNceSimd } from './info-nce-simd.js';

/**
 * Positive pairs of one batch, per prediction step k: encoding `context[i]` predicts encoding
 * `target[i]` (row indices into the batch's flattened encodings [M, C]).
 */
export interface PositivePairs {
  steps: { context: Int32Array; target: Int32Array }[];
  /** Number of encodings in the batch (M): negatives are drawn from all of them. */
  poolSize: number;
  /** Encodings per item (image or clip), items back to back: what `item` negatives draw from. */
  itemSize?: number;
}

/** Directions a patch predicts in on a grid (see `TrainConfig.directions`). */
export type GridDirection = 'down' | 'up' | 'right' | 'left';

/**
 * Vision pairs (GIM.md): per image a rows x cols grid of patch encodings, rows-major; context
 * (r, c) predicts (r + offset, c) in the same column, one step per offset (offsets 2..5 by
 * default: the adjacent row overlaps the context patch by half). With more `directions` (CPC v2),
 * also (r - offset, c) for `up`, (r, c + offset) for `right`, (r, c - offset) for `left`: steps
 * are direction-major, step d * offsets.length + o for direction d and offset o (one W_k each).
 */
export function gridPairs(
  images: number,
  rows: number,
  cols: number,
  offsets: number[],
  directions: readonly GridDirection[] = ['down'],
): PositivePairs {
  const steps = directions.flatMap((direction) =>
    offsets.map((offset) => {
      const vertical = direction === 'down' || direction === 'up';
      const extent = vertical ? rows : cols;
      if (!(Number.isInteger(offset) && offset > 0 && offset < extent))
        throw new GimError(
          'invalid_argument',
          `prediction offset ${offset} is outside 1..${extent - 1} (${direction})`,
        );
      const dr = direction === 'down' ? offset : direction === 'up' ? -offset : 0;
      const dc = direction === 'right' ? offset : direction === 'left' ? -offset : 0;
      const perImage = (vertical ? rows - offset : rows) * (vertical ? cols : cols - offset);
      const context = new Int32Array(images * perImage);
      const target = new Int32Array(images * perImage);
      let i = 0;
      for (let b = 0; b < images; b++) {
        for (let r = 0; r < rows; r++) {
          if (r + dr < 0 || r + dr >= rows) continue;
          for (let c = 0; c < cols; c++) {
            if (c + dc < 0 || c + dc >= cols) continue;
            context[i] = (b * rows + r) * cols + c;
            target[i] = (b * rows + r + dr) * cols + c + dc;
            i++;
          }
        }
      }
      return { context, target };
    }),
  );
  return { steps, poolSize: images * rows * cols, itemSize: rows * cols };
}

/**
 * Layer normalisation of each row (one patch or frame vector), without a learned scale: what
 * `lossNorm: 'layer'` gives the loss, so the scores compare directions, not magnitudes.
 */
export function layerNormRows(z: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(z, 1, true);
    return tf.div(tf.sub(z, mean), tf.sqrt(tf.add(variance, 1e-5))) as tf.Tensor2D;
  });
}

/**
 * N negatives per positive pair, drawn uniformly with replacement (they may hit the positive, as
 * in the reference code). `from`: `batch` draws from every encoding of the batch (the reference
 * code); `item` only from the encodings of the item (image, clip) the positive's target belongs to
 * (needs `pairs.itemSize`). One [pairs * N] array per step.
 */
export function sampleNegatives(
  pairs: PositivePairs,
  negatives: number,
  rng: Rng,
  from: 'batch' | 'item' = 'batch',
): Int32Array[] {
  const itemSize = pairs.itemSize;
  if (from === 'item' && !(itemSize !== undefined && itemSize > 0))
    throw new GimError('invalid_argument', 'item negatives need pairs with an itemSize');
  return pairs.steps.map(({ context, target }) => {
    const idx = new Int32Array(context.length * negatives);
    if (from === 'item') {
      const size = itemSize as number;
      for (let i = 0; i < context.length; i++) {
        const base = Math.floor((target[i] as number) / size) * size;
        for (let j = 0; j < negatives; j++) idx[i * negatives + j] = base + rng.int(size);
      }
    } else {
      for (let i = 0; i < idx.length; i++) idx[i] = rng.int(pairs.poolSize);
    }
    return idx;
  });
}

/**
 * Fused InfoNCE over all steps, with an analytic gradient.
 *
 * preds   [M, K * C]: row m holds W_k z_m for every step k (block k is columns kC..(k+1)C-1).
 * targets [M, C]:     the encodings z.
 * score(i, j) = preds[context_i, block k] · targets[j]; per pair the logits are
 * [positive, N negatives] and the loss is the cross-entropy with the positive at index 0.
 * Returns mean over k of (mean over pairs of step k).
 *
 * The gradient is dL/ds_0 = w (p_0 - 1), dL/ds_j = w p_j (w = 1 / (K * pairs_k)), scattered back
 * to preds and targets in typed arrays (by a WebAssembly SIMD kernel, info-nce-simd.ts, or by
 * the JavaScript loop below where that cannot load): gathering negatives with tf.gather has no
 * usable gradient on the JS/wasm backends (GIM.md, traps).
 */
export function infoNce(
  preds: tf.Tensor2D,
  targets: tf.Tensor2D,
  pairs: PositivePairs,
  negatives: Int32Array[],
): tf.Scalar {
  const K = pairs.steps.length;
  const [M, C] = targets.shape;
  if (preds.shape[0] !== M || preds.shape[1] !== K * C)
    throw new GimError(
      'invalid_argument',
      `infoNce: preds must be [${M}, ${K * C}] for ${K} steps, got [${preds.shape.join(', ')}]`,
    );
  if (M !== pairs.poolSize)
    throw new GimError(
      'invalid_argument',
      `infoNce: ${M} encodings, pairs expect ${pairs.poolSize}`,
    );
  const f = tf.customGrad((p, z) => {
    const P = (p as tf.Tensor).dataSync() as Float32Array;
    const Z = (z as tf.Tensor).dataSync() as Float32Array;
    const dP = new Float32Array(P.length);
    const dZ = new Float32Array(Z.length);
    const loss =
      infoNceSimd(P, Z, C, K, pairs, negatives, dP, dZ) ??
      infoNceArrays(P, Z, C, K, pairs, negatives, dP, dZ);
    return {
      value: tf.scalar(loss),
      gradFunc: (dy: tf.Tensor) => {
        const g = (dy.dataSync() as Float32Array)[0] as number;
        if (g !== 1) {
          for (let i = 0; i < dP.length; i++) dP[i] = (dP[i] as number) * g;
          for (let i = 0; i < dZ.length; i++) dZ[i] = (dZ[i] as number) * g;
        }
        return [tf.tensor2d(dP, [M, K * C]), tf.tensor2d(dZ, [M, C])];
      },
    };
  });
  return f(preds, targets) as tf.Scalar;
}

/** The loss and its gradient (accumulated into dP and dZ) on plain arrays. */
export function infoNceArrays(
  P: Float32Array,
  Z: Float32Array,
  C: number,
  K: number,
  pairs: PositivePairs,
  negatives: Int32Array[],
  dP: Float32Array,
  dZ: Float32Array,
): number {
  const rowP = K * C;
  let total = 0;
  for (let k = 0; k < K; k++) {
    const { context, target } = pairs.steps[k] as PositivePairs['steps'][number];
    const neg = negatives[k] as Int32Array;
    const n = context.length;
    if (n === 0) continue;
    const N = neg.length / n;
    if (!Number.isInteger(N))
      throw new GimError('invalid_argument', `infoNce: ${neg.length} negatives for ${n} pairs`);
    const w = 1 / (K * n);
    const idx = new Int32Array(N + 1);
    const s = new Float64Array(N + 1);
    for (let i = 0; i < n; i++) {
      const pOff = (context[i] as number) * rowP + k * C;
      idx[0] = target[i] as number;
      for (let j = 0; j < N; j++) idx[j + 1] = neg[i * N + j] as number;
      let max = -Infinity;
      for (let j = 0; j <= N; j++) {
        const zOff = (idx[j] as number) * C;
        let dot = 0;
        for (let c = 0; c < C; c++) dot += (P[pOff + c] as number) * (Z[zOff + c] as number);
        s[j] = dot;
        if (dot > max) max = dot;
      }
      const positive = s[0] as number;
      let sum = 0;
      for (let j = 0; j <= N; j++) {
        const e = Math.exp((s[j] as number) - max); // s now holds unnormalised probabilities
        s[j] = e;
        sum += e;
      }
      total += w * (max + Math.log(sum) - positive); // logsumexp(scores) - score of the positive
      for (let j = 0; j <= N; j++) {
        const g = w * ((s[j] as number) / sum - (j === 0 ? 1 : 0));
        const zOff = (idx[j] as number) * C;
        for (let c = 0; c < C; c++) {
          dP[pOff + c] = (dP[pOff + c] as number) + g * (Z[zOff + c] as number);
          dZ[zOff + c] = (dZ[zOff + c] as number) + g * (P[pOff + c] as number);
        }
      }
    }
  }
  return total;
}

/**
 * Audio pairs (GIM.md): per clip a sequence of `frames` encodings; frame t predicts frame t + k for
 * k = 1..steps. With `window` set (long layers), the positives of each clip come from one random
 * window of that many frames (negatives still come from the whole batch).
 */
export function timePairs(
  clips: number,
  frames: number,
  steps: number,
  rng: Rng,
  window?: number,
): PositivePairs {
  const span = window === undefined ? frames : Math.min(window, frames);
  const out = Array.from({ length: steps }, (_, s) => {
    const k = s + 1;
    const perClip = Math.max(span - k, 0);
    return { context: new Int32Array(clips * perClip), target: new Int32Array(clips * perClip) };
  });
  for (let b = 0; b < clips; b++) {
    const start = span < frames ? rng.int(frames - span + 1) : 0;
    out.forEach(({ context, target }, s) => {
      const k = s + 1;
      const perClip = Math.max(span - k, 0);
      for (let i = 0; i < perClip; i++) {
        context[b * perClip + i] = b * frames + start + i;
        target[b * perClip + i] = b * frames + start + i + k;
      }
    });
  }
  return { steps: out, poolSize: clips * frames, itemSize: frames };
}
