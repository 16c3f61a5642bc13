import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import type { Rng } from '../random.js';
import { imagesToPatches } from '../modality/image.js';
import type { EncoderStack } from '../encoders/encoder-stack.js';
import { im2col } from '../encoders/im2col.js';
import { gridPairs, layerNormRows, type PositivePairs } from '../losses/info-nce.js';
import { NO_PATCH_AUGMENT, type ConvRoute, type TrainConfig } from './config.js';
import type { TrainBatch, TrainingData, TrainingModality } from './modality.js';
import { batches, type ImageDataset } from '../data/dataset.js';
import type { ImageAdapterConfig } from '../modality/image.js';

/**
 * GIM on images: patch grids, per-patch encodings, prediction down the same column (and, with
 * `directions`, up and across the row too: CPC v2), optionally with per-patch augmentation and
 * layer-normalised patch vectors in the loss.
 */
export function imageTraining(
  stack: EncoderStack,
  config: Pick<TrainConfig, 'offsets'> &
    Partial<Pick<TrainConfig, 'directions' | 'patchAugment' | 'lossNorm'>> & {
      convRoute: ConvRoute;
    },
): TrainingModality {
  const a = stack.adapter;
  const { rows, cols } = stack.grid;
  // Configs (checkpoints) from before these options train as they did.
  const directions = config.directions ?? ['down'];
  const patchAugment = config.patchAugment ?? NO_PATCH_AUGMENT;
  const layerNorm = (config.lossNorm ?? 'none') === 'layer';
  const vertical = directions.some((d) => d === 'down' || d === 'up');
  const across = directions.some((d) => d === 'left' || d === 'right');
  if (vertical && config.offsets.some((o) => o >= rows))
    throw new GimError('invalid_argument', `offsets must be below the grid's ${rows} rows`);
  if (across && config.offsets.some((o) => o >= cols))
    throw new GimError('invalid_argument', `offsets must be below the grid's ${cols} columns`);
  const pairsCache = new Map<number, PositivePairs>();
  return {
    unitsPerItem: rows * cols,
    unitName: 'patches',
    input(batch: TrainBatch, augment?: Rng): tf.Tensor4D {
      const data = imagesToPatches(batch.data, batch.n, a, augment, patchAugment);
      return tf.tensor4d(data, [batch.n * rows * cols, a.patchSize, a.patchSize, a.channels]);
    },
    encodings(_m, _x, y) {
      const z = tf.mean(y, [1, 2]) as tf.Tensor2D; // [n * rows * cols, C]: one vector per patch
      if (!layerNorm) return { context: z, targets: z };
      const zn = layerNormRows(z);
      return { context: zn, targets: zn };
    },
    pairs(_m, n) {
      let p = pairsCache.get(n);
      if (!p) {
        p = gridPairs(n, rows, cols, config.offsets, directions);
        pairsCache.set(n, p);
      }
      return p;
    },
    predictor(m) {
      const c = stack.layer(m).channels;
      return { context: c, target: c, steps: config.offsets.length * directions.length };
    },
    greedyForward(m, x) {
      if (config.convRoute !== 'im2col') return null;
      const module = stack.layer(m);
      const [N] = x.shape;
      const [s, , C] = module.outputShape;
      const { inputSize, inChannels, kernelSize, stride } = module.config;
      const data = im2col(x.dataSync() as Float32Array, N, {
        size: inputSize,
        channels: inChannels,
        kernel: kernelSize,
        stride,
      });
      const columns = tf.tensor2d(data, [N * s * s, kernelSize * kernelSize * inChannels]);
      return {
        forward: () => tf.reshape(module.applyColumns(columns), [N, s, s, C]),
        dispose: () => columns.dispose(),
      };
    },
  };
}

/** An image dataset as training data for a stack with this adapter (sizes must match). */
export function imageTrainingData(
  dataset: ImageDataset,
  adapter: ImageAdapterConfig,
): TrainingData {
  const { height, width, channels } = dataset.info;
  if (height !== adapter.height || width !== adapter.width || channels !== adapter.channels)
    throw new GimError(
      'invalid_argument',
      `dataset images are ${height}x${width}x${channels}, the stack expects ` +
        `${adapter.height}x${adapter.width}x${adapter.channels}`,
    );
  return {
    count: dataset.info.count,
    async *batches({ batchSize, seed, epoch, skip }) {
      for await (const b of batches(dataset, { batchSize, seed, epoch, skip, dropLast: true }))
        yield { data: b.images, n: b.n };
    },
  };
}
