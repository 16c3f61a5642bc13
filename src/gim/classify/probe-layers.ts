import type { ImageDataset } from '../data/dataset.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import type { Pooling } from '../encoders/pooling.js';
import { extractFeatures, featureKey, type LayerFeatures } from './features.js';
import { LinearProbe, type FeatureSet, type ProbeOptions } from './linear-probe.js';

/** Each epoch of each probe fitted (`fit`: which (layer, pooling), 1-based, of how many). */
export type ProbeEpochCallback = (
  epoch: number,
  loss: number,
  fit: { index: number; count: number; layer: number; pooling: Pooling },
) => void;

export interface ProbeRow {
  layer: number;
  pooling: Pooling;
  dim: number;
  trainAccuracy: number;
  testAccuracy: number;
}

/** Fits and scores one linear probe per (layer, pooling) of already extracted features. */
export function probeFeatureSets(
  train: LayerFeatures,
  test: LayerFeatures,
  layers: number[],
  poolings: Pooling[],
  classes: number,
  opts: {
    probe?: Partial<ProbeOptions>;
    onRow?: (row: ProbeRow) => void;
    onEpoch?: ProbeEpochCallback;
  } = {},
): ProbeRow[] {
  const rows: ProbeRow[] = [];
  const count = layers.length * poolings.length;
  for (const layer of layers)
    for (const pooling of poolings) {
      const key = featureKey(layer, pooling);
      const tr = train.get(key) as FeatureSet;
      const at = { index: rows.length + 1, count, layer, pooling };
      const row = {
        layer,
        pooling,
        dim: tr.dim,
        ...probeFeatures(tr, test.get(key) as FeatureSet, classes, opts.probe, (epoch, loss) =>
          opts.onEpoch?.(epoch, loss, at),
        ),
      };
      train.delete(key);
      test.delete(key);
      rows.push(row);
      opts.onRow?.(row);
    }
  return rows;
}

/** Fits and scores one linear probe. */
export function probeFeatures(
  train: FeatureSet,
  test: FeatureSet,
  classes: number,
  options: Partial<ProbeOptions> = {},
  onEpoch?: (epoch: number, loss: number) => void,
): { trainAccuracy: number; testAccuracy: number } {
  const probe = LinearProbe.fit(train, classes, options, onEpoch);
  try {
    return { trainAccuracy: probe.accuracy(train), testAccuracy: probe.accuracy(test) };
  } finally {
    probe.dispose();
  }
}

/**
 * The layer sweep: one linear probe per (layer, pooling) on frozen embeddings, fitted on `train`
 * and scored on `test`.
 */
export async function probeLayers(
  stack: EncoderStack,
  train: ImageDataset,
  test: ImageDataset,
  layers: number[],
  poolings: Pooling[],
  opts: {
    probe?: Partial<ProbeOptions>;
    trainSubset?: ArrayLike<number>;
    testSubset?: ArrayLike<number>;
    onProgress?: (what: string, done: number, total: number) => void;
    onRow?: (row: ProbeRow) => void;
    onEpoch?: ProbeEpochCallback;
    /** Aborting it stops the embedding passes with `cancelled` (a probe fit runs to its end). */
    signal?: AbortSignal;
  } = {},
): Promise<ProbeRow[]> {
  const trainF = await extractFeatures(stack, train, layers, poolings, {
    subset: opts.trainSubset,
    onProgress: (d, t) => opts.onProgress?.('embed train', d, t),
    signal: opts.signal,
  });
  const testF = await extractFeatures(stack, test, layers, poolings, {
    subset: opts.testSubset,
    onProgress: (d, t) => opts.onProgress?.('embed test', d, t),
    signal: opts.signal,
  });
  return probeFeatureSets(trainF, testF, layers, poolings, train.info.classNames.length, opts);
}
