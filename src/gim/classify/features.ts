import * as tf from '@tensorflow/tfjs';
import { batches, type ImageDataset } from '../data/dataset.js';
import { cancellationPoint } from '../cancel.js';
import { gridShape, type EncoderStack } from '../encoders/encoder-stack.js';
import { poolGrid, pooledDim, type Pooling } from '../encoders/pooling.js';
import type { FeatureSet } from './linear-probe.js';

/** Feature sets keyed `${layer}/${pooling}`. */
export type LayerFeatures = Map<string, FeatureSet>;

export const featureKey = (layer: number, pooling: Pooling) => `${layer}/${pooling}`;

/**
 * Embeds a dataset (or a subset) once, up to the deepest layer asked for, and keeps every
 * (layer, pooling) combination as a feature set.
 */
export async function extractFeatures(
  stack: EncoderStack,
  dataset: ImageDataset,
  layers: number[],
  poolings: Pooling[],
  opts: {
    subset?: ArrayLike<number>;
    batchSize?: number;
    onProgress?: (done: number, total: number) => void;
    /** Aborting it stops the pass between batches with a `cancelled` error. */
    signal?: AbortSignal;
  } = {},
): Promise<LayerFeatures> {
  const total = opts.subset?.length ?? dataset.info.count;
  const { rows, cols } = stack.grid;
  const out: LayerFeatures = new Map();
  for (const l of layers)
    for (const p of poolings) {
      const dim = pooledDim(p, rows, cols, stack.layer(l).config.channels);
      out.set(featureKey(l, p), {
        x: new Float32Array(total * dim),
        y: new Int32Array(total),
        n: total,
        dim,
      });
    }
  let done = 0;
  const stream = batches(dataset, {
    batchSize: opts.batchSize ?? 256,
    seed: 0,
    epoch: 0,
    shuffle: false,
    subset: opts.subset,
  });
  for await (const batch of stream) {
    const grids = stack.embed(batch.images, batch.n, layers);
    const values = new Map([...grids].map(([l, g]) => [l, g.dataSync() as Float32Array]));
    try {
      for (const [layer, grid] of grids)
        for (const p of poolings) {
          const set = out.get(featureKey(layer, p)) as FeatureSet;
          set.x.set(
            poolGrid(values.get(layer) as Float32Array, gridShape(grid), p),
            done * set.dim,
          );
          set.y.set(batch.labels, done);
        }
    } finally {
      tf.dispose([...grids.values()]);
    }
    done += batch.n;
    opts.onProgress?.(done, total);
    await cancellationPoint(opts.signal);
  }
  return out;
}

/** Raw pixels as features (the baseline every probe is compared with). */
export async function pixelFeatures(
  dataset: ImageDataset,
  subset?: ArrayLike<number>,
): Promise<FeatureSet> {
  const { height, width, channels } = dataset.info;
  const dim = height * width * channels;
  const total = subset?.length ?? dataset.info.count;
  const set: FeatureSet = {
    x: new Float32Array(total * dim),
    y: new Int32Array(total),
    n: total,
    dim,
  };
  let done = 0;
  for await (const b of batches(dataset, {
    batchSize: 1024,
    seed: 0,
    epoch: 0,
    shuffle: false,
    subset,
  })) {
    set.x.set(b.images, done * dim);
    set.y.set(b.labels, done);
    done += b.n;
  }
  return set;
}
