import * as tf from '@tensorflow/tfjs';
import { GimError } from '../errors.js';
import { Rng } from '../random.js';
import { epochSeed } from '../data/dataset.js';
import type { AudioDataset } from '../data/audio-folder.js';
import type { AudioAdapterConfig } from '../modality/audio.js';
import type { AudioEncoderStack } from '../encoders/audio-stack.js';
import { layerNormRows, timePairs } from '../losses/info-nce.js';
import type { TrainConfig } from './config.js';
import type { TrainBatch, TrainingData, TrainingModality } from './modality.js';

/**
 * GIM on raw audio (GIM.md): each frame of a module's output predicts the frames k = 1..steps
 * ahead in the same clip; on long layers (all but the last conv and the GRU) the positives come
 * from one random window of `positiveWindow` frames per clip; negatives from the whole batch.
 * The GRU module predicts future conv5 outputs (its input) from its context. With
 * `lossNorm: 'layer'` every frame vector (context and target) is layer-normalised in the loss.
 */
export function audioTraining(
  stack: AudioEncoderStack,
  config: Pick<TrainConfig, 'predictionSteps' | 'positiveWindow'> &
    Partial<Pick<TrainConfig, 'lossNorm'>>,
): TrainingModality {
  const T = stack.adapter.windowSamples;
  const frames = stack.frames(T);
  const steps = config.predictionSteps;
  const norm = (config.lossNorm ?? 'none') === 'layer' ? layerNormRows : (z: tf.Tensor2D) => z;
  const lastConv = stack.moduleConfigs.map((c) => c.kind).lastIndexOf('audio-conv') + 1;
  if (frames.some((f) => f <= steps))
    throw new GimError(
      'invalid_argument',
      `a ${T}-sample window leaves ${Math.min(...frames)} frames on some layer: fewer than ${steps} prediction steps + 1`,
    );
  return {
    unitsPerItem: 1,
    unitName: 'clips',
    input(batch: TrainBatch): tf.Tensor4D {
      if (batch.data.length !== batch.n * T)
        throw new GimError('invalid_argument', `expected ${batch.n} windows of ${T} samples`);
      return tf.tensor4d(batch.data, [batch.n, 1, T, 1]); // [B, 1, T, 1]
    },
    encodings(m, x, y) {
      const module = stack.layer(m);
      const [b, , t, c] = y.shape;
      const z = norm(tf.reshape(y, [b * t, c]) as tf.Tensor2D); // [B * frames, C]
      if (module.config.kind === 'audio-gru')
        return { context: z, targets: norm(tf.reshape(x, [b * t, x.shape[3]]) as tf.Tensor2D) };
      return { context: z, targets: z };
    },
    pairs(m, n, rng: Rng) {
      const long = m < lastConv; // the last conv layer is already short (64 frames by default)
      return timePairs(
        n,
        frames[m - 1] as number,
        steps,
        rng,
        long ? config.positiveWindow : undefined,
      );
    },
    predictor(m) {
      const c = stack.layer(m).config;
      return c.kind === 'audio-gru'
        ? { context: c.units, target: c.inChannels, steps }
        : { context: c.channels, target: c.channels, steps };
    },
  };
}

/**
 * An audio dataset as training data: every epoch visits each utterance (of `subset`) once, in an
 * order fixed by (seed, epoch), taking one random window of the adapter's length from it.
 * Reads one batch ahead.
 */
export function audioTrainingData(
  dataset: AudioDataset,
  adapter: AudioAdapterConfig,
  subset?: ArrayLike<number>,
): TrainingData {
  const all = subset
    ? Int32Array.from(subset)
    : Int32Array.from({ length: dataset.info.count }, (_, i) => i);
  return {
    count: all.length,
    async *batches({ batchSize, seed, epoch, skip = 0 }) {
      const rng = new Rng(epochSeed(seed, epoch));
      const order = Int32Array.from(rng.permutation(all.length), (i) => all[i] as number);
      const count = Math.floor(order.length / batchSize);
      const read = (b: number) => {
        const p = dataset.readWindows(
          order.subarray(b * batchSize, (b + 1) * batchSize),
          rng.fork(),
          adapter.windowSamples,
        );
        p.catch(() => undefined); // an abandoned prefetch must not become an unhandled rejection
        return p;
      };
      // Each batch's windows come from the next fork of the epoch's generator: a skipped batch
      // still takes its fork, so that the batches after it draw the same windows.
      for (let b = 0; b < Math.min(skip, count); b++) rng.fork();
      let next = skip < count ? read(skip) : undefined;
      for (let b = skip; b < count && next; b++) {
        const current = await next;
        next = b + 1 < count ? read(b + 1) : undefined;
        yield { data: current.samples, n: current.n };
      }
    },
  };
}
