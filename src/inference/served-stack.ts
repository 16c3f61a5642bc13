/**
 * A loaded stack as the inference worker serves it, whatever its modality: the class is picked
 * from the manifest, and both kinds answer one embed call with per-layer grids of the same
 * GridShape contract (an audio layer's frame sequence is a grid of 1 row and `frames` columns).
 */
import * as tf from '@tensorflow/tfjs';
import { AudioEncoderStack } from '../gim/encoders/audio-stack.js';
import { EncoderStack, gridShape } from '../gim/encoders/encoder-stack.js';
import { GimError } from '../gim/errors.js';
import { isAudioManifest, type Modality, type StackManifest } from '../gim/store/manifest.js';
import type { LayerGrid } from './protocol.js';

export interface ServedStack {
  readonly modality: Modality;
  readonly depth: number;
  /** The stack itself (for the golden check at load). */
  readonly encoder: EncoderStack | AudioEncoderStack;
  /**
   * One forward pass for `n` items of equal size (images [n, h, w, c] in [0, 1]; audio [n, T]
   * normalised samples) up to the deepest of `layers`: per layer its grid, read back into a
   * buffer of its own (transferable), with every tensor disposed.
   */
  embed(input: Float32Array, n: number, layers: number[]): LayerGrid[];
  /** An input of one item to run once at load, so the first request pays no warm-up. */
  warmUpInput(): Float32Array;
  dispose(): void;
}

/** Rebuilds a published stack of either modality from its manifest and module artifacts. */
export async function serveStack(
  manifest: StackManifest,
  modules: tf.io.ModelArtifacts[],
): Promise<ServedStack> {
  if (isAudioManifest(manifest)) {
    return servedAudio(await AudioEncoderStack.fromManifest(manifest, modules));
  }
  return servedImage(await EncoderStack.fromManifest(manifest, modules));
}

function servedImage(stack: EncoderStack): ServedStack {
  const { height, width, channels } = stack.adapter;
  const itemLength = height * width * channels;
  return {
    modality: 'image',
    depth: stack.modules.length,
    encoder: stack,
    embed(input, n, layers) {
      checkCount(n);
      if (input.length !== n * itemLength) {
        throw new GimError(
          'invalid_argument',
          `expected ${n} images of ${height}x${width}x${channels} (${n * itemLength} values), got ${input.length} values`,
        );
      }
      const tensors = stack.embed(input, n, layers); // layer -> [n, rows, cols, C]
      return readBack(tensors, layers, gridShape);
    },
    warmUpInput: () => new Float32Array(itemLength),
    dispose: () => stack.dispose(),
  };
}

function servedAudio(stack: AudioEncoderStack): ServedStack {
  const { sampleRate, maxSeconds, windowSamples } = stack.adapter;
  const maxSamples = Math.floor(maxSeconds * sampleRate);
  return {
    modality: 'audio',
    depth: stack.depth,
    encoder: stack,
    embed(input, n, layers) {
      checkCount(n);
      const T = input.length / n;
      if (!Number.isInteger(T) || T > maxSamples) {
        throw new GimError(
          'invalid_argument',
          `expected ${n} clips of equal length up to ${maxSamples} samples, got ${input.length} values`,
        );
      }
      const tensors = stack.embed(input, n, layers); // layer -> [n, frames, C]
      return readBack(tensors, layers, (t) => {
        const [items, frames, channels] = t.shape;
        return { n: items, rows: 1, cols: frames, channels };
      });
    },
    warmUpInput: () => new Float32Array(Math.max(windowSamples, stack.minimumSamples)),
    dispose: () => stack.dispose(),
  };
}

function checkCount(n: number): void {
  if (!Number.isInteger(n) || n < 1) {
    throw new GimError('invalid_argument', `n must be a positive integer, got ${n}`);
  }
}

function readBack<T extends tf.Tensor>(
  tensors: Map<number, T>,
  layers: number[],
  shapeOf: (t: T) => LayerGrid['shape'],
): LayerGrid[] {
  try {
    return [...new Set(layers)].map((layer) => {
      const t = tensors.get(layer) as T;
      // A copy: a backend may hand out its own storage, which must not be detached.
      const data = new Float32Array(t.dataSync() as Float32Array);
      return { layer, data, shape: shapeOf(t) };
    });
  } finally {
    tf.dispose([...tensors.values()]);
  }
}
