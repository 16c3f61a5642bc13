import type { ImageDataset } from '../data/dataset.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import type { Pooling } from '../encoders/pooling.js';
import { extractFeatures, featureKey } from './features.js';
import { LinearProbe, type FeatureSet, type ProbeOptions } from './linear-probe.js';

export interface ProbeRow {
  layer: number;
  pooling: Pooling;
  dim: number;
  trainAccuracy: number;
  testAccuracy: number;
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
  const rows: ProbeRow[] = [];
  const classes = train.info.classNames.length;
  for (const layer of layers)
    for (const pooling of poolings) {
      const key = featureKey(layer, pooling);
      const tr = trainF.get(key) as FeatureSet;
      const row = {
        layer,
        pooling,
        dim: tr.dim,
        ...probeFeatures(tr, testF.get(key) as FeatureSet, classes, opts.probe),
      };
      trainF.delete(key);
      testF.delete(key);
      rows.push(row);
      opts.onRow?.(row);
    }
  return rows;
}
