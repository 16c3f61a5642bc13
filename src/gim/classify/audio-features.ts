import * as tf from '@tensorflow/tfjs';
import type { AudioDataset } from '../data/audio-folder.js';
import { cancellationPoint } from '../cancel.js';
import type { AudioEncoderStack } from '../encoders/audio-stack.js';
import { poolGrid, type Pooling } from '../encoders/pooling.js';
import type { LayerFeatures } from './features.js';
import { featureKey } from './features.js';
import type { FeatureSet } from './linear-probe.js';

/** Poolings that make one vector of a whole utterance (its frames averaged or maxed over time). */
export type TimePooling = Extract<Pooling, 'mean' | 'max'>;

/**
 * Embeds whole utterances (each at its own length, so one at a time) up to the deepest layer
 * asked for, and pools each layer's frames over time into one vector per utterance.
 */
export async function extractAudioFeatures(
  stack: AudioEncoderStack,
  dataset: Pick<AudioDataset, 'readFull' | 'utterance'>,
  indices: ArrayLike<number>,
  layers: number[],
  poolings: TimePooling[],
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<LayerFeatures> {
  const n = indices.length;
  const out: LayerFeatures = new Map();
  for (const l of layers)
    for (const p of poolings) {
      const dim = stack.layer(l).channels;
      out.set(featureKey(l, p), { x: new Float32Array(n * dim), y: new Int32Array(n), n, dim });
    }
  const min = stack.minimumSamples;
  for (let i = 0; i < n; i++) {
    const index = indices[i] as number;
    let clip = await dataset.readFull(index);
    if (clip.length < min) {
      const padded = new Float32Array(min);
      padded.set(clip);
      clip = padded;
    }
    const frames = stack.embed(clip, 1, layers); // layer → [1, frames, C]
    try {
      for (const [layer, seq] of frames) {
        const [, t, c] = seq.shape;
        const values = seq.dataSync() as Float32Array;
        for (const p of poolings) {
          const set = out.get(featureKey(layer, p)) as FeatureSet;
          set.x.set(poolGrid(values, { n: 1, rows: 1, cols: t, channels: c }, p), i * set.dim);
          set.y[i] = dataset.utterance(index).speaker;
        }
      }
    } finally {
      tf.dispose([...frames.values()]);
    }
    onProgress?.(i + 1, n);
    await cancellationPoint(signal);
  }
  return out;
}
