import { GimError } from '../errors.js';

/**
 * What makes an epoch better than the best so far when a head trains with a validation split:
 * - `accuracy`: a higher validation accuracy, or the same accuracy with a lower validation loss
 *   (accuracy moves in steps of 1/n on a small split, so ties are common);
 * - `loss`: a lower validation loss. With a large step size the loss turns up within a few epochs
 *   (the head grows overconfident) while the accuracy still climbs, so this rule kept epoch ~2.
 * Training stops after `patience` epochs without a better one and keeps the best epoch's weights.
 * `npm run bench:head-stopping` compares the rules on Fashion-MNIST (README, Benchmarks).
 */
export const EARLY_STOPPING_RULES = ['accuracy', 'loss'] as const;
export type EarlyStoppingRule = (typeof EARLY_STOPPING_RULES)[number];

export interface EpochScores {
  loss: number;
  accuracy: number;
}

/** Tracks the best epoch under a rule, and when patience has run out. */
export class EarlyStopping {
  private best: EpochScores | undefined;
  /** 1-based epoch of the best scores; 0 before the first. */
  bestEpoch = 0;

  constructor(
    readonly rule: EarlyStoppingRule,
    readonly patience: number,
  ) {
    if (!EARLY_STOPPING_RULES.includes(rule))
      throw new GimError(
        'invalid_argument',
        `early stopping must be one of ${EARLY_STOPPING_RULES.join(', ')}, got '${String(rule)}'`,
      );
    if (!(Number.isInteger(patience) && patience >= 1))
      throw new GimError('invalid_argument', `patience must be an integer >= 1, got ${patience}`);
  }

  /** Records an epoch's validation scores; true when it is the best so far (keep its weights). */
  update(epoch: number, scores: EpochScores): boolean {
    if (this.best !== undefined && !this.improves(scores, this.best)) return false;
    this.best = scores;
    this.bestEpoch = epoch;
    return true;
  }

  /** True once `epoch` is `patience` epochs past the best one. */
  exhausted(epoch: number): boolean {
    return epoch - this.bestEpoch >= this.patience;
  }

  private improves(s: EpochScores, best: EpochScores): boolean {
    if (this.rule === 'loss') return s.loss < best.loss;
    return s.accuracy > best.accuracy || (s.accuracy === best.accuracy && s.loss < best.loss);
  }
}
