import { minimumSamples } from '../../gim/encoders/audio-modules.js';
import type { AudioNormalization } from '../../gim/modality/audio.js';
import { audioManifest, type StackManifest } from '../../gim/store/manifest.js';

/** What an audio stack takes, as the API applies it to every input (decoded or given as samples). */
export interface AudioInputSpec {
  /** Every input is decoded, mixed to mono and resampled to this rate (Hz). */
  sampleRate: number;
  /** The training window (samples): inputs may be longer or shorter. */
  windowSamples: number;
  normalize: AudioNormalization;
  /** Longer inputs are refused (too_large). */
  maxSeconds: number;
  /** Shorter inputs are refused (invalid_data): one receptive field of the stack's last frame. */
  minSamples: number;
}

export function audioInputSpec(manifest: StackManifest): AudioInputSpec {
  const m = audioManifest(manifest);
  const { sampleRate, windowSamples, normalize, maxSeconds } = m.adapter;
  return {
    sampleRate,
    windowSamples,
    normalize,
    maxSeconds,
    minSamples: minimumSamples(m.modules.map((x) => x.config)),
  };
}

/**
 * Nominal frames per second of each layer: the sample rate over the product of the strides up to
 * it (3200, 800, 400, 200, 100, 100 Hz for GIM.md). A clip's exact rate, frames / seconds,
 * differs slightly at the edges.
 */
export function nominalFrameRates(manifest: StackManifest): number[] {
  const m = audioManifest(manifest);
  let hop = 1;
  return m.modules.map(({ config }) => {
    if (config.kind === 'audio-conv') hop *= config.stride;
    return m.adapter.sampleRate / hop;
  });
}
