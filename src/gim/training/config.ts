import { GimError } from '../errors.js';

export const SCHEDULES = ['parallel', 'sequential', 'end-to-end'] as const;
/**
 * parallel: every module steps on every batch, each on its own loss (the paper's default).
 * sequential: module 1 for all epochs, then module 2 on frozen module 1, ...: one module's memory.
 * end-to-end: one InfoNCE loss on the last module, backpropagated through all (CPC baseline).
 */
export type Schedule = (typeof SCHEDULES)[number];

/**
 * How greedy training computes a module's convolution (both give the same numbers):
 * `conv` uses tf.conv2d and its gradient kernels; `im2col` extracts the constant input's patches
 * in typed arrays before the gradient computation so each convolution is one matMul. `auto` picks
 * per backend from `npm run bench:train`: on wasm (with our registered kernels) `conv` is about
 * 1.4x faster; on the pure-JS cpu backend, whose conv gradients are very slow, `im2col` is ~10x.
 */
export type ConvRoute = 'im2col' | 'conv';
export const CONV_ROUTES = ['auto', 'conv', 'im2col'] as const;

/** The route `auto` stands for on a tfjs backend (`tf.getBackend()`). */
export function resolveConvRoute(route: ConvRoute | 'auto', tfjsBackend: string): ConvRoute {
  if (route !== 'auto') return route;
  return tfjsBackend === 'cpu' ? 'im2col' : 'conv';
}

export const LR_SCHEDULES = ['constant', 'cosine'] as const;
/** constant: the paper's; cosine: lr * (1 + cos(pi * step / totalSteps)) / 2 over the whole run. */
export type LrSchedule = (typeof LR_SCHEDULES)[number];

export const NEGATIVE_SOURCES = ['batch', 'item'] as const;
/**
 * Where negatives are drawn from: `batch`, any encoding of any item in the batch (the reference
 * code); `item`, only the encodings of the same image / clip as the positive.
 */
export type NegativeSource = (typeof NEGATIVE_SOURCES)[number];

export const DIRECTIONS = ['down', 'up', 'right', 'left'] as const;
/**
 * Vision: directions a patch predicts in (CPC v2 predicts in all four). `down`: the same column,
 * offset rows below (GIM); `up`: rows above; `right` / `left`: the same row, offset columns across.
 */
export type Direction = (typeof DIRECTIONS)[number];

export const LOSS_NORMS = ['none', 'layer'] as const;
/**
 * Vision: what the loss sees of each patch vector: `none`, the module output averaged over the
 * patch (GIM); `layer`, that vector layer-normalised (zero mean, unit variance over its channels,
 * no learned scale), as CPC v2's layer norm. The embeddings served are unchanged.
 */
export type LossNorm = (typeof LOSS_NORMS)[number];

/**
 * Vision: augmentation of every patch on its own while training (CPC v2), after the whole-image
 * crop and flip, so that low-level cues shared by neighbouring patches stop predicting them:
 * `jitter` shifts the patch's window by up to that many pixels each way (the grid's own content,
 * the image's padding outside it), `flip` mirrors it horizontally with p = 0.5, `brightness` adds
 * a uniform offset in [-b, b] and `contrast` scales by a uniform factor in [1 - c, 1 + c] (both
 * in normalised units, around the patch's mean). All zero / false: no patch augmentation.
 */
export interface PatchAugment {
  jitter: number;
  flip: boolean;
  brightness: number;
  contrast: number;
}

export const NO_PATCH_AUGMENT: PatchAugment = {
  jitter: 0,
  flip: false,
  brightness: 0,
  contrast: 0,
};

export interface TrainConfig {
  schedule: Schedule;
  /** Epochs (per module under `sequential`); 0 publishes the initial weights (random init). */
  epochs: number;
  batchSize: number;
  learningRate: number;
  seed: number;
  /** Negatives per positive pair (GIM.md: 16 for vision). */
  negatives: number;
  /** Where negatives come from (default `batch`). */
  negativesFrom: NegativeSource;
  /** Learning-rate schedule over the whole run (default `constant`). */
  lrSchedule: LrSchedule;
  /** Prediction offsets in grid rows (GIM.md: k + 1 for k = 1..4 → 2..5). */
  offsets: number[];
  /** Vision: directions of prediction (default `down` only: GIM); one W_k per direction and offset. */
  directions: Direction[];
  /** Vision: per-patch augmentation while training (default none). */
  patchAugment: PatchAugment;
  /** Normalisation of the patch (vision) or frame (audio) vectors in the loss (default `none`). */
  lossNorm: LossNorm;
  /** `auto` is resolved when the trainer is built (the manifest records the route used). */
  convRoute: ConvRoute | 'auto';
  /** Audio: predict k = 1..predictionSteps frames ahead (GIM.md: 12). */
  predictionSteps: number;
  /** Audio: positives from a random window of this many frames on long layers (GIM.md: 64 here). */
  positiveWindow: number;
  /** 1-based: modules below it are frozen (retraining from module k). */
  fromModule: number;
  /** Optional cap on batches per epoch (short runs, benchmarks). */
  maxStepsPerEpoch?: number;
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  schedule: 'parallel',
  epochs: 1,
  batchSize: 32,
  learningRate: 1e-3,
  seed: 1,
  negatives: 16,
  negativesFrom: 'batch',
  lrSchedule: 'constant',
  offsets: [2, 3, 4, 5],
  directions: ['down'],
  patchAugment: NO_PATCH_AUGMENT,
  lossNorm: 'none',
  convRoute: 'auto',
  predictionSteps: 12,
  positiveWindow: 64,
  fromModule: 1,
};

export function resolveTrainConfig(partial: Partial<TrainConfig>): TrainConfig {
  const cfg: TrainConfig = { ...DEFAULT_TRAIN_CONFIG, ...partial };
  const bad: string[] = [];
  if (!SCHEDULES.includes(cfg.schedule))
    bad.push(`schedule must be one of ${SCHEDULES.join(', ')}`);
  const positiveInt = (name: keyof TrainConfig, v: unknown) => {
    if (!(typeof v === 'number' && Number.isInteger(v) && v > 0))
      bad.push(`${name} must be a positive integer`);
  };
  if (!(Number.isInteger(cfg.epochs) && cfg.epochs >= 0))
    bad.push('epochs must be a non-negative integer');
  positiveInt('batchSize', cfg.batchSize);
  positiveInt('negatives', cfg.negatives);
  positiveInt('fromModule', cfg.fromModule);
  positiveInt('predictionSteps', cfg.predictionSteps);
  positiveInt('positiveWindow', cfg.positiveWindow);
  if (cfg.maxStepsPerEpoch !== undefined) positiveInt('maxStepsPerEpoch', cfg.maxStepsPerEpoch);
  if (!(cfg.learningRate > 0 && Number.isFinite(cfg.learningRate)))
    bad.push('learningRate must be > 0');
  if (!Number.isInteger(cfg.seed)) bad.push('seed must be an integer');
  if (cfg.offsets.length === 0 || cfg.offsets.some((o) => !(Number.isInteger(o) && o > 0)))
    bad.push('offsets must be positive integers');
  if (!NEGATIVE_SOURCES.includes(cfg.negativesFrom))
    bad.push(`negativesFrom must be one of ${NEGATIVE_SOURCES.join(', ')}`);
  if (!LR_SCHEDULES.includes(cfg.lrSchedule))
    bad.push(`lrSchedule must be one of ${LR_SCHEDULES.join(', ')}`);
  if (
    cfg.directions.length === 0 ||
    cfg.directions.some((d) => !DIRECTIONS.includes(d)) ||
    new Set(cfg.directions).size !== cfg.directions.length
  )
    bad.push(`directions must be distinct values of ${DIRECTIONS.join(', ')}`);
  const pa = cfg.patchAugment;
  if (
    !(Number.isInteger(pa.jitter) && pa.jitter >= 0) ||
    typeof pa.flip !== 'boolean' ||
    !(pa.brightness >= 0 && Number.isFinite(pa.brightness)) ||
    !(pa.contrast >= 0 && pa.contrast < 1)
  )
    bad.push(
      'patchAugment needs jitter a non-negative integer, flip a boolean, brightness >= 0, contrast in [0, 1)',
    );
  if (!LOSS_NORMS.includes(cfg.lossNorm))
    bad.push(`lossNorm must be one of ${LOSS_NORMS.join(', ')}`);
  if (!CONV_ROUTES.includes(cfg.convRoute))
    bad.push(`convRoute must be one of ${CONV_ROUTES.join(', ')}`);
  if (bad.length > 0)
    throw new GimError('invalid_argument', `bad training config: ${bad.join('; ')}`);
  return cfg;
}

/** The learning rate of a step (0-based) of a run of `totalSteps` under a schedule. */
export function scheduledLearningRate(
  base: number,
  schedule: LrSchedule,
  step: number,
  totalSteps: number,
): number {
  if (schedule === 'constant' || totalSteps <= 1) return base;
  const t = Math.min(Math.max(step / totalSteps, 0), 1);
  return (base * (1 + Math.cos(Math.PI * t))) / 2;
}
