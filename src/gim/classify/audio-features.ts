import FFT from 'fft.js';
import * as tf from '@tensorflow/tfjs';
import type { AudioDataset } from '../data/audio-folder.js';
import { cancellationPoint } from '../cancel.js';
import { GimError } from '../errors.js';
import type { AudioEncoderStack } from '../encoders/audio-stack.js';
import { poolGrid, pooledDim, type TimePooling } from '../encoders/pooling.js';
import type { LayerFeatures } from './features.js';
import { featureKey } from './features.js';
import type { FeatureSet } from './linear-probe.js';

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
      const dim = pooledDim(p, 1, 1, stack.layer(l).channels);
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

/** Equal-length clips (e.g. 1 s crops) and their class labels. */
export interface ClipSet {
  /** [n, samples] row-major. */
  samples: Float32Array;
  labels: Int32Array;
  n: number;
  /** Samples per clip. */
  length: number;
}

/**
 * Embeds equal-length clips in batches of `batchSize` up to the deepest layer asked for, and
 * pools each layer's frames over time into one vector per clip.
 */
export function extractClipFeatures(
  stack: AudioEncoderStack,
  clips: ClipSet,
  layers: number[],
  poolings: TimePooling[],
  batchSize = 32,
): LayerFeatures {
  const { n, length } = clips;
  if (length < stack.minimumSamples)
    throw new GimError(
      'invalid_argument',
      `clips of ${length} samples are shorter than the stack's minimum of ${stack.minimumSamples}`,
    );
  const out: LayerFeatures = new Map();
  for (const l of layers)
    for (const p of poolings) {
      const dim = pooledDim(p, 1, 1, stack.layer(l).channels);
      out.set(featureKey(l, p), { x: new Float32Array(n * dim), y: clips.labels.slice(), n, dim });
    }
  for (let start = 0; start < n; start += batchSize) {
    const b = Math.min(batchSize, n - start);
    const frames = stack.embed(
      clips.samples.subarray(start * length, (start + b) * length),
      b,
      layers,
    ); // layer → [b, frames, C]
    try {
      for (const [layer, seq] of frames) {
        const [, t, c] = seq.shape;
        const values = seq.dataSync() as Float32Array;
        for (let i = 0; i < b; i++) {
          const one = values.subarray(i * t * c, (i + 1) * t * c);
          for (const p of poolings) {
            const set = out.get(featureKey(layer, p)) as FeatureSet;
            set.x.set(
              poolGrid(one, { n: 1, rows: 1, cols: t, channels: c }, p),
              (start + i) * set.dim,
            );
          }
        }
      }
    } finally {
      tf.dispose([...frames.values()]);
    }
  }
  return out;
}

export interface LogBandOptions {
  sampleRate: number;
  /** Mel bands between fMin and fMax. */
  bands: number;
  frameMs: number;
  hopMs: number;
  fMin: number;
  fMax: number;
}

export const DEFAULT_LOG_BAND_OPTIONS: LogBandOptions = {
  sampleRate: 16000,
  bands: 40,
  frameMs: 25,
  hopMs: 10,
  fMin: 50,
  fMax: 8000,
};

/**
 * The spectral baseline for speaker identification: per clip, the log energies of mel bands over
 * Hann-windowed frames, summarised by their mean and standard deviation over time (2 x bands
 * values: the first `bands` the means, then the spreads). No learning: what plain spectral
 * statistics tell apart.
 */
export function logBandFeatures(clips: ClipSet, options: Partial<LogBandOptions> = {}): FeatureSet {
  const o = { ...DEFAULT_LOG_BAND_OPTIONS, ...options };
  const frame = Math.round((o.sampleRate * o.frameMs) / 1000);
  const hop = Math.round((o.sampleRate * o.hopMs) / 1000);
  let fft = 1;
  while (fft < frame) fft *= 2;
  const frames = clips.length < frame ? 0 : 1 + Math.floor((clips.length - frame) / hop);
  if (frames < 2)
    throw new GimError('invalid_argument', `clips of ${clips.length} samples give < 2 frames`);
  const window = Float64Array.from(
    { length: frame },
    (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (frame - 1)),
  );
  const filters = melFilters(o.bands, fft, o.sampleRate, o.fMin, o.fMax);
  const dim = 2 * o.bands;
  const x = new Float32Array(clips.n * dim);
  const transform = new FFT(fft);
  const input = new Float64Array(fft); // zero-padded past `frame`
  const spectrum: number[] = transform.createComplexArray(); // [re0, im0, re1, im1, ...]
  const power = new Float64Array(fft / 2 + 1);
  const logE = new Float64Array(frames * o.bands);
  for (let i = 0; i < clips.n; i++) {
    const clip = clips.samples.subarray(i * clips.length, (i + 1) * clips.length);
    for (let f = 0; f < frames; f++) {
      for (let k = 0; k < frame; k++)
        input[k] = (clip[f * hop + k] as number) * (window[k] as number);
      transform.realTransform(spectrum, input); // bins 0..fft/2 filled: all a power needs
      for (let k = 0; k <= fft / 2; k++)
        power[k] = (spectrum[2 * k] as number) ** 2 + (spectrum[2 * k + 1] as number) ** 2;
      for (let b = 0; b < o.bands; b++) {
        let e = 0;
        for (const [k, w] of filters[b] as [number, number][]) e += w * (power[k] as number);
        logE[f * o.bands + b] = Math.log(e + 1e-10);
      }
    }
    for (let b = 0; b < o.bands; b++) {
      let sum = 0;
      for (let f = 0; f < frames; f++) sum += logE[f * o.bands + b] as number;
      const mean = sum / frames;
      let sq = 0;
      for (let f = 0; f < frames; f++) sq += ((logE[f * o.bands + b] as number) - mean) ** 2;
      x[i * dim + b] = mean;
      x[i * dim + o.bands + b] = Math.sqrt(sq / frames);
    }
  }
  return { x, y: clips.labels.slice(), n: clips.n, dim };
}

export interface PitchOptions {
  sampleRate: number;
  /** Analysis frame (long enough for two periods of the lowest pitch) and hop. */
  frameMs: number;
  hopMs: number;
  /** The pitch range searched, in Hz. */
  fMin: number;
  fMax: number;
  /** A frame is voiced when its normalised autocorrelation peak reaches this. */
  voicing: number;
  /** Histogram bins of log f0 over [fMin, fMax]. */
  bins: number;
}

export const DEFAULT_PITCH_OPTIONS: PitchOptions = {
  sampleRate: 16000,
  frameMs: 40,
  hopMs: 10,
  fMin: 60,
  fMax: 400,
  voicing: 0.5,
  bins: 24,
};

/**
 * A pitch baseline for speaker identification: per clip, the fundamental frequency of each voiced
 * frame (the first peak of the normalised autocorrelation in [fMin, fMax] within 10% of the
 * highest, so a multiple of the period does not halve f0; refined by a parabola through its
 * neighbours), summarised as the mean, median, quartiles and 10-90% range of log f0,
 * the voiced fraction, and a normalised histogram of log f0 (`bins` values): 6 + bins values. It
 * sees only pitch: a reference for how well speakers who differ in pitch and nothing else (in
 * `bench:speakers`, the members of a family of similar voices) can be told apart from one clip.
 * A clip without a voiced frame gets zeros.
 */
export function pitchFeatures(clips: ClipSet, options: Partial<PitchOptions> = {}): FeatureSet {
  const o = { ...DEFAULT_PITCH_OPTIONS, ...options };
  const frame = Math.round((o.sampleRate * o.frameMs) / 1000);
  const hop = Math.round((o.sampleRate * o.hopMs) / 1000);
  const minLag = Math.max(2, Math.floor(o.sampleRate / o.fMax));
  const maxLag = Math.ceil(o.sampleRate / o.fMin);
  if (maxLag + 1 >= frame)
    throw new GimError('invalid_argument', `a ${o.frameMs} ms frame is too short for ${o.fMin} Hz`);
  const frames = clips.length < frame ? 0 : 1 + Math.floor((clips.length - frame) / hop);
  if (frames < 1)
    throw new GimError('invalid_argument', `clips of ${clips.length} samples give no frame`);
  const dim = 6 + o.bins;
  const x = new Float32Array(clips.n * dim);
  const buf = new Float64Array(frame);
  const ac = new Float64Array(maxLag + 2);
  const [lo, hi] = [Math.log(o.fMin), Math.log(o.fMax)];
  for (let i = 0; i < clips.n; i++) {
    const clip = clips.samples.subarray(i * clips.length, (i + 1) * clips.length);
    const logF0: number[] = [];
    for (let f = 0; f < frames; f++) {
      let mean = 0;
      for (let k = 0; k < frame; k++) mean += clip[f * hop + k] as number;
      mean /= frame;
      for (let k = 0; k < frame; k++) buf[k] = (clip[f * hop + k] as number) - mean;
      let energy = 0;
      for (let k = 0; k < frame; k++) energy += (buf[k] as number) ** 2;
      if (energy <= 1e-8 * frame) continue;
      for (let lag = minLag - 1; lag <= maxLag + 1; lag++) {
        let sum = 0;
        for (let k = 0; k + lag < frame; k++) sum += (buf[k] as number) * (buf[k + lag] as number);
        // Normalised by the overlap's length, so long lags are not penalised.
        ac[lag] = ((sum / (frame - lag)) * frame) / energy;
      }
      let top = -Infinity;
      for (let lag = minLag; lag <= maxLag; lag++) top = Math.max(top, ac[lag] as number);
      if (top < o.voicing) continue;
      let best = minLag;
      for (let lag = minLag; lag <= maxLag; lag++) {
        const v = ac[lag] as number;
        if (v >= 0.9 * top && v >= (ac[lag - 1] as number) && v >= (ac[lag + 1] as number)) {
          best = lag;
          break;
        }
      }
      const [a, b, c] = [ac[best - 1] as number, ac[best] as number, ac[best + 1] as number];
      const curve = a - 2 * b + c;
      const shift = curve < 0 ? Math.max(-0.5, Math.min(0.5, (0.5 * (a - c)) / curve)) : 0;
      logF0.push(Math.log(o.sampleRate / (best + shift)));
    }
    if (logF0.length === 0) continue;
    const sorted = logF0.slice().sort((p, q) => p - q);
    const quantile = (q: number) =>
      sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
    const row = i * dim;
    x[row] = logF0.reduce((p, q) => p + q, 0) / logF0.length;
    x[row + 1] = quantile(0.5);
    x[row + 2] = quantile(0.25);
    x[row + 3] = quantile(0.75);
    x[row + 4] = logF0.length / frames;
    x[row + 5] = quantile(0.9) - quantile(0.1);
    for (const v of logF0) {
      const bin = Math.min(o.bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * o.bins)));
      x[row + 6 + bin] = (x[row + 6 + bin] as number) + 1 / logF0.length;
    }
  }
  return { x, y: clips.labels.slice(), n: clips.n, dim };
}

const hzToMel = (hz: number) => 2595 * Math.log10(1 + hz / 700);
const melToHz = (mel: number) => 700 * (10 ** (mel / 2595) - 1);

/** Triangular mel filters over the bins 0..fft/2: per band, its (bin, weight) pairs. */
function melFilters(
  bands: number,
  fft: number,
  sampleRate: number,
  fMin: number,
  fMax: number,
): [number, number][][] {
  const lo = hzToMel(fMin);
  const hi = hzToMel(Math.min(fMax, sampleRate / 2));
  const edges = Array.from({ length: bands + 2 }, (_, i) =>
    melToHz(lo + ((hi - lo) * i) / (bands + 1)),
  );
  const binHz = sampleRate / fft;
  return Array.from({ length: bands }, (_, b) => {
    const [left, centre, right] = [edges[b], edges[b + 1], edges[b + 2]] as [
      number,
      number,
      number,
    ];
    const out: [number, number][] = [];
    for (let k = Math.floor(left / binHz); k <= Math.ceil(right / binHz) && k <= fft / 2; k++) {
      const hz = k * binHz;
      const w = hz <= centre ? (hz - left) / (centre - left) : (right - hz) / (right - centre);
      if (w > 0) out.push([k, w]);
    }
    // A band narrower than a bin still gets the bin nearest its centre.
    if (out.length === 0) out.push([Math.min(fft / 2, Math.round(centre / binHz)), 1]);
    return out;
  });
}
