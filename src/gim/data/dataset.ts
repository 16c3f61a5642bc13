/**
 * The common shape of every image dataset (IDX files, image folders), plus the two things a
 * trainer does with one: stream it in shuffled batches and split it by class.
 */
import { GimError } from '../errors.js';
import { Rng } from '../random.js';

export interface ImageDatasetInfo {
  /** Where the data came from, for logs and manifests (e.g. `fashion-mnist:train`, `folder:/x`). */
  source: string;
  count: number;
  height: number;
  width: number;
  channels: 1 | 3;
  /** Label `i` is `classNames[i]`. */
  classNames: string[];
}

export interface ImageBatch {
  /** [n, h, w, c] pixels scaled to [0, 1]. */
  images: Float32Array;
  /** [n] class indices into `info.classNames`. */
  labels: Int32Array;
  n: number;
  /** [n] dataset indices of the items, in batch order. */
  indices: Int32Array;
}

export interface ImageDataset {
  readonly info: ImageDatasetInfo;
  /** Pixels (scaled to [0,1], HWC) and labels for the given item indices, in that order. */
  read(indices: ArrayLike<number>): Promise<ImageBatch>;
  /**
   * sha256 hex fingerprint of the underlying data (file bytes for IDX; sorted relative paths +
   * sizes + mtimes for folders, or hashed bytes). Cached.
   */
  fingerprint(): Promise<string>;
}

export interface BatchOptions {
  batchSize: number;
  seed: number;
  /** Each epoch gets its own order, reproducible from (seed, epoch). */
  epoch: number;
  /** Default true. When false, items come in `subset` (or index) order. */
  shuffle?: boolean;
  /** Drop the last batch when it is smaller than `batchSize`. Default false (keep it). */
  dropLast?: boolean;
  /** Dataset indices to draw from (e.g. the train side of a split). Default: every item. */
  subset?: ArrayLike<number>;
  /**
   * Leave out the first `skip` batches of the epoch without reading them (a run resumed in the
   * middle of an epoch): the rest are exactly the batches an unskipped stream would yield.
   */
  skip?: number;
}

/**
 * Streams batches in a deterministic order (seed + epoch), reading one batch ahead of the
 * consumer, so at most two batches are in memory at a time.
 */
export async function* batches(
  ds: ImageDataset,
  opts: BatchOptions,
): AsyncGenerator<ImageBatch, void, undefined> {
  const { batchSize, seed, epoch } = opts;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new GimError(
      'invalid_argument',
      `batchSize must be a positive integer, got ${batchSize}`,
    );
  }
  if (!Number.isInteger(epoch) || epoch < 0) {
    throw new GimError('invalid_argument', `epoch must be a non-negative integer, got ${epoch}`);
  }
  const order = itemOrder(ds.info.count, opts.subset);
  if (opts.shuffle ?? true) shuffleInPlace(order, new Rng(epochSeed(seed, epoch)));

  const full = Math.floor(order.length / batchSize);
  const count = opts.dropLast || order.length % batchSize === 0 ? full : full + 1;
  const readBatch = (b: number): Promise<ImageBatch> => {
    const p = ds.read(order.subarray(b * batchSize, Math.min((b + 1) * batchSize, order.length)));
    // The prefetch may be abandoned when the consumer stops early; awaiting it still rethrows.
    p.catch(() => undefined);
    return p;
  };

  const first = opts.skip ?? 0;
  if (!Number.isInteger(first) || first < 0)
    throw new GimError('invalid_argument', `skip must be a non-negative integer, got ${first}`);
  let pending = first < count ? readBatch(first) : undefined;
  for (let b = first; pending; b++) {
    const batch = await pending;
    pending = b + 1 < count ? readBatch(b + 1) : undefined;
    yield batch;
  }
}

/**
 * Splits item indices so that each class keeps its proportion on both sides: `fraction` of every
 * class (rounded) goes to `test`, the rest to `train`. Both sides are returned in ascending order.
 */
export function stratifiedSplit(
  labels: ArrayLike<number>,
  fraction: number,
  seed: number,
): { train: Int32Array; test: Int32Array } {
  if (!(fraction >= 0 && fraction <= 1)) {
    throw new GimError('invalid_argument', `split fraction must be in [0, 1], got ${fraction}`);
  }
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i] as number;
    const members = byClass.get(label);
    if (members) members.push(i);
    else byClass.set(label, [i]);
  }

  const rng = new Rng(seed);
  const train: number[] = [];
  const test: number[] = [];
  for (const label of [...byClass.keys()].sort((a, b) => a - b)) {
    const members = rng.shuffle(byClass.get(label) as number[]);
    const nTest = Math.round(members.length * fraction);
    test.push(...members.slice(0, nTest));
    train.push(...members.slice(nTest));
  }
  const sorted = (xs: number[]): Int32Array => Int32Array.from(xs).sort();
  return { train: sorted(train), test: sorted(test) };
}

/** Throws unless every index is an integer in [0, count). */
export function checkIndices(indices: ArrayLike<number>, count: number, source: string): void {
  for (let i = 0; i < indices.length; i++) {
    const idx = indices[i] as number;
    if (!Number.isInteger(idx) || idx < 0 || idx >= count) {
      throw new GimError(
        'invalid_argument',
        `index ${idx} is out of range for ${source} (${count} items)`,
      );
    }
  }
}

function itemOrder(count: number, subset: ArrayLike<number> | undefined): Int32Array {
  if (subset === undefined) {
    const all = new Int32Array(count);
    for (let i = 0; i < count; i++) all[i] = i;
    return all;
  }
  checkIndices(subset, count, 'the dataset');
  return Int32Array.from(subset);
}

function shuffleInPlace(xs: Int32Array, rng: Rng): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = xs[i] as number;
    xs[i] = xs[j] as number;
    xs[j] = tmp;
  }
}

/** Mixes (seed, epoch) into one 32-bit seed; mulberry32 decorrelates nearby seeds. */
export function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
}
