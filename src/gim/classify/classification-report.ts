import { GimError } from '../errors.js';

/** One class's scores; null where a ratio has a zero denominator. */
export interface ClassMetrics {
  label: string;
  /** Items of this class. */
  support: number;
  /** Items predicted as this class. */
  predicted: number;
  /** tp / predicted; null when nothing was predicted as the class. */
  precision: number | null;
  /** tp / support; null when the class has no items. */
  recall: number | null;
  /** 2tp / (2tp + fp + fn); null when the class neither occurs nor is predicted. */
  f1: number | null;
}

export interface ClassificationMetrics {
  items: number;
  accuracy: number;
  /** Mean cross-entropy (natural log) of the true class, unweighted. */
  loss: number;
  /** Mean F1 over the classes that occur in the set. */
  macroF1: number;
  perClass: ClassMetrics[];
  /** confusion[true][predicted] item counts. */
  confusion: number[][];
}

/** The smallest probability the loss takes a log of, so one confident mistake stays finite. */
const MIN_PROBABILITY = 1e-12;

/**
 * Scores probabilities [n, C] (row-major) against labels [n]: the predicted class of a row is its
 * most probable one (the lowest index on a tie).
 */
export function classificationMetrics(
  probs: Float32Array,
  y: Int32Array,
  labels: string[],
): ClassificationMetrics {
  const n = y.length;
  const classes = labels.length;
  if (probs.length !== n * classes)
    throw new GimError(
      'invalid_argument',
      `${probs.length} probabilities for ${n} items of ${classes} classes`,
    );
  const confusion = labels.map(() => new Array<number>(classes).fill(0));
  let correct = 0;
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const truth = y[i] as number;
    const row = confusion[truth];
    if (row === undefined)
      throw new GimError('invalid_argument', `label ${truth} is not in 0..${classes - 1}`);
    const predicted = argmax(probs, i * classes, classes);
    row[predicted] = (row[predicted] as number) + 1;
    if (predicted === truth) correct++;
    loss -= Math.log(Math.max(probs[i * classes + truth] as number, MIN_PROBABILITY));
  }
  const perClass = labels.map((label, c): ClassMetrics => {
    const tp = confusion[c]?.[c] ?? 0;
    const support = (confusion[c] as number[]).reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + (row[c] as number), 0);
    const fp = predicted - tp;
    const fn = support - tp;
    return {
      label,
      support,
      predicted,
      precision: predicted > 0 ? tp / predicted : null,
      recall: support > 0 ? tp / support : null,
      f1: 2 * tp + fp + fn > 0 ? (2 * tp) / (2 * tp + fp + fn) : null,
    };
  });
  const present = perClass.filter((m) => m.support > 0);
  return {
    items: n,
    accuracy: n > 0 ? correct / n : 0,
    loss: n > 0 ? loss / n : 0,
    macroF1: present.length > 0 ? present.reduce((a, m) => a + (m.f1 ?? 0), 0) / present.length : 0,
    perClass,
    confusion,
  };
}

/** Index of the largest of `values[offset .. offset + count)`; the first on a tie. */
export function argmax(values: ArrayLike<number>, offset: number, count: number): number {
  let best = 0;
  for (let c = 1; c < count; c++)
    if ((values[offset + c] as number) > (values[offset + best] as number)) best = c;
  return best;
}
