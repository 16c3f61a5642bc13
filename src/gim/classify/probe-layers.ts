import type { ImageDataset } from '../data/dataset.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import type { Pooling } from '../encoders/pooling.js';
import { extractFeatures, featureKey, type LayerFeatures } from './features.js';
import { LinearProbe, type FeatureSet, type ProbeOptions } from './linear-probe.js';

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
  opts: { probe?: Partial<ProbeOptions>; onRow?: (row: ProbeRow) => void } = {},
): ProbeRow[] {
  const rows: ProbeRow[] = [];
  for (const layer of layers)
    for (const pooling of poolings) {
      const key = featureKey(layer, pooling);
      const tr = train.get(key) as FeatureSet;
      const row = {
        layer,
        pooling,
        dim: tr.dim,
        ...probeFeatures(tr, test.get(key) as FeatureSet, classes, opts.probe),
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
): { trainAccuracy: number; testAccuracy: number } {
  const probe = LinearProbe.fit(train, classes, options);
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
  } = {},
): Promise<ProbeRow[]> {
  const trainF = await extractFeatures(stack, train, layers, poolings, {
    subset: opts.trainSubset,
    onProgress: (d, t) => opts.onProgress?.('embed train', d, t),
  });
  const testF = await extractFeatures(stack, test, layers, poolings, {
    subset: opts.testSubset,
    onProgress: (d, t) => opts.onProgress?.('embed test', d, t),
  });
  return probeFeatureSets(trainF, testF, layers, poolings, train.info.classNames.length, opts);
}
