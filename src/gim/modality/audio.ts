import { GimError } from '../errors.js';
import type { Rng } from '../random.js';

export const AUDIO_NORMALIZATIONS = ['none', 'rms'] as const;
export type AudioNormalization = (typeof AUDIO_NORMALIZATIONS)[number];

/** How raw audio becomes model input. Saved in every manifest. */
export interface AudioAdapterConfig {
  kind: 'audio';
  /** Every input is decoded, mixed to mono and resampled to this rate. */
  sampleRate: 16000;
  /** Training window in samples (GIM.md scaled-down: 10240 = 0.64 s; the paper: 20480). */
  windowSamples: number;
  /**
   * `rms`: each clip scaled to unit RMS, so recordings made at different levels look alike;
   * `none`: samples as decoded, in [-1, 1].
   */
  normalize: AudioNormalization;
  /** Longer inputs are refused (too_large) when decoding. */
  maxSeconds: number;
}

/**
 * Below this RMS (-60 dBFS) a clip counts as silence: `rms` normalisation scales it by at most
 * 1 / SILENCE_RMS, so digital silence stays silent and near-silence is not blown up into noise.
 */
export const SILENCE_RMS = 1e-3;

/** The scaled-down speech default of GIM.md: 16 kHz, 10240-sample windows, RMS-normalised. */
export function defaultAudioAdapter(
  overrides: Partial<AudioAdapterConfig> = {},
): AudioAdapterConfig {
  const cfg: AudioAdapterConfig = {
    kind: 'audio',
    sampleRate: 16000,
    windowSamples: 10240,
    normalize: 'rms',
    maxSeconds: 60,
    ...overrides,
  };
  validateAudioAdapter(cfg);
  return cfg;
}

export function validateAudioAdapter(cfg: AudioAdapterConfig): void {
  const problems: string[] = [];
  if (cfg.kind !== 'audio') problems.push(`kind must be 'audio'`);
  if (cfg.sampleRate !== 16000) problems.push('sampleRate must be 16000');
  if (!(Number.isInteger(cfg.windowSamples) && cfg.windowSamples > 0))
    problems.push('windowSamples must be a positive integer');
  if (!AUDIO_NORMALIZATIONS.includes(cfg.normalize))
    problems.push(`normalize must be one of ${AUDIO_NORMALIZATIONS.join(', ')}`);
  if (!(cfg.maxSeconds > 0 && Number.isFinite(cfg.maxSeconds)))
    problems.push('maxSeconds must be a positive number');
  else if (cfg.windowSamples > cfg.maxSeconds * cfg.sampleRate)
    problems.push('windowSamples must fit in maxSeconds');
  if (problems.length > 0)
    throw new GimError('invalid_argument', `bad audio adapter: ${problems.join('; ')}`);
}

/**
 * Returns a normalised copy of `samples` (one clip or one window, treated as a unit). `rms` scales
 * to unit RMS; a clip quieter than SILENCE_RMS gets the gain 1 / SILENCE_RMS instead.
 */
export function normalizeAudio(
  samples: Float32Array,
  cfg: Pick<AudioAdapterConfig, 'normalize'>,
): Float32Array {
  if (cfg.normalize === 'none') return samples.slice();
  if (cfg.normalize !== 'rms') {
    throw new GimError(
      'invalid_argument',
      `unknown audio normalisation '${String(cfg.normalize)}'`,
    );
  }
  let sumSquares = 0;
  for (let i = 0; i < samples.length; i++) sumSquares += (samples[i] as number) ** 2;
  const rms = samples.length > 0 ? Math.sqrt(sumSquares / samples.length) : 0;
  const gain = 1 / Math.max(rms, SILENCE_RMS);
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = (samples[i] as number) * gain;
  return out;
}

/**
 * A training window: `windowSamples` consecutive samples from a uniformly random start, as in
 * GIM. A clip shorter than the window is zero-padded at the end (start 0) rather than rejected, so
 * one short utterance cannot fail an epoch. The padding is silence, which InfoNCE predicts all
 * too easily, so datasets should hold few clips shorter than a window. Exactly one `rng` draw per
 * call either way, so the random stream stays aligned whatever the clip lengths.
 */
export function randomWindow(samples: Float32Array, windowSamples: number, rng: Rng): Float32Array {
  if (!(Number.isInteger(windowSamples) && windowSamples > 0)) {
    throw new GimError(
      'invalid_argument',
      `windowSamples must be a positive integer, got ${windowSamples}`,
    );
  }
  const start = rng.int(Math.max(1, samples.length - windowSamples + 1));
  const window = new Float32Array(windowSamples);
  window.set(samples.subarray(start, start + windowSamples));
  return window;
}
