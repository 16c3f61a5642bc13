/**
 * Golden embeddings: at publish, a stack version stores a compact summary of its embeddings of a
 * few fixed inputs at every layer; whoever loads it (another backend, another machine) computes
 * them again and compares within a stated tolerance before serving it. A version whose weights
 * were altered, or a backend whose numerics are off, is refused instead of serving wrong vectors.
 *
 * The inputs are generated from the manifest alone (no files, no weights), so any process can
 * regenerate them; `GOLDEN_GENERATOR` names the generator, and any change to what it produces
 * needs a new name (old records then compare against inputs they were not made from).
 *
 * The record's types, its check and `compareGolden` live in golden-record.ts (no tfjs) and are
 * re-exported here.
 */
import * as tf from '@tensorflow/tfjs';
import { currentBackend } from '../backend/select.js';
import { AudioEncoderStack } from '../encoders/audio-stack.js';
import { minimumSamples } from '../encoders/audio-modules.js';
import { EncoderStack } from '../encoders/encoder-stack.js';
import { poolGrid } from '../encoders/pooling.js';
import { GimError } from '../errors.js';
import { normalizeAudio } from '../modality/audio.js';
import {
  audioManifest,
  imageManifest,
  type AudioStackManifest,
  type ImageStackManifest,
  type StackManifest,
} from '../store/manifest.js';
import {
  DEFAULT_GOLDEN_COUNT,
  GOLDEN_FORMAT,
  GOLDEN_GENERATOR,
  GOLDEN_TOLERANCE,
  MAX_GOLDEN_COUNT,
  toBase64,
  type GoldenRecord,
  type GoldenSummary,
  type GoldenValues,
} from './golden-record.js';

export * from './golden-record.js';

/** One generated input, in the form the stack's `embed` takes for one item after decoding. */
export interface GoldenInput {
  id: string;
  /** Image: [height, width, channels] in [0, 1]; audio: [samples], normalised as the adapter says. */
  shape: number[];
  data: Float32Array;
}

export interface ComputeGoldenOptions {
  count?: number;
  /** The name recorded as `backend`; default the selected backend's, else `tf.getBackend()`. */
  backend?: string;
  /** Recorded as `tolerance.maxRelError`; default GOLDEN_TOLERANCE. */
  tolerance?: number;
}

// ---------------------------------------------------------------------------------------------
// Inputs

/**
 * `count` deterministic inputs for the stack `manifest` describes, made from its adapter (and, for
 * audio, the receptive field of its modules, so the clip is long enough for every layer): no
 * files, no weights, the same bytes in every process.
 */
export function goldenInputs(
  manifest: StackManifest,
  count: number = DEFAULT_GOLDEN_COUNT,
): GoldenInput[] {
  checkCount(count);
  if (manifest.modality === 'audio') return audioInputs(audioManifest(manifest), count);
  return imageInputs(imageManifest(manifest), count);
}

const IMAGE_PATTERNS = ['gradient', 'checker', 'noise', 'silhouette'] as const;

function imageInputs(manifest: ImageStackManifest, count: number): GoldenInput[] {
  const { height: H, width: W, channels: C } = manifest.adapter;
  return Array.from({ length: count }, (_, i) => {
    const pattern = IMAGE_PATTERNS[i] ?? 'noise';
    const id = i < IMAGE_PATTERNS.length ? pattern : `noise-${i}`;
    const rng = mulberry32(0x60d1e5 + 7919 * i);
    const data = new Float32Array(H * W * C);
    // Centre and radii of the silhouette: a bright object with a textured inside on a dark ground.
    const cy = (H - 1) / 2;
    const cx = (W - 1) / 2;
    const ry = Math.max(H * 0.4, 1);
    const rx = Math.max(W * 0.3, 1);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < C; c++) {
          let v: number;
          switch (pattern) {
            case 'gradient': {
              const a = [0.75, 0.5, 0.25][c] as number;
              v = a * (x / Math.max(W - 1, 1)) + (1 - a) * (y / Math.max(H - 1, 1));
              break;
            }
            case 'checker':
              v = (Math.floor(x / 4) + Math.floor(y / 4) + c) % 2 === 0 ? 0.9 : 0.1;
              break;
            case 'noise':
              v = rng();
              break;
            case 'silhouette': {
              const d = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2;
              v = d <= 1 ? 0.55 + 0.4 * rng() : 0.05 * rng();
              break;
            }
          }
          // 8-bit levels, as a decoded PNG gives: the input is exact in any float format.
          data[(y * W + x) * C + c] = Math.round(Math.min(Math.max(v, 0), 1) * 255) / 255;
        }
    return { id, shape: [H, W, C], data };
  });
}

const AUDIO_PATTERNS = ['chirp', 'tones', 'noise', 'clicks'] as const;

/** Samples of every golden clip: 0.2 s, or the training window if shorter, at least the field. */
export function goldenClipSamples(manifest: AudioStackManifest): number {
  const configs = manifest.modules.map((m) => m.config);
  return Math.max(minimumSamples(configs), Math.min(manifest.adapter.windowSamples, 3200));
}

function audioInputs(manifest: AudioStackManifest, count: number): GoldenInput[] {
  const { sampleRate: sr } = manifest.adapter;
  const T = goldenClipSamples(manifest);
  const seconds = T / sr;
  return Array.from({ length: count }, (_, i) => {
    const pattern = AUDIO_PATTERNS[i] ?? 'noise';
    const id = i < AUDIO_PATTERNS.length ? pattern : `noise-${i}`;
    const rng = mulberry32(0xa0d10 + 7919 * i);
    const raw = new Float32Array(T);
    for (let k = 0; k < T; k++) {
      const t = k / sr;
      let v: number;
      switch (pattern) {
        case 'chirp': // 100 Hz to 4 kHz, linear
          v = 0.5 * Math.sin(2 * Math.PI * (100 * t + ((4000 - 100) * t * t) / (2 * seconds)));
          break;
        case 'tones':
          v =
            0.3 * Math.sin(2 * Math.PI * 220 * t) +
            0.2 * Math.sin(2 * Math.PI * 660 * t) +
            0.1 * Math.sin(2 * Math.PI * 1500 * t);
          break;
        case 'noise':
          v = 0.5 * (rng() - 0.5);
          break;
        case 'clicks': {
          // A decaying click every 20 ms, alternating in sign, over faint noise.
          const period = Math.round(0.02 * sr);
          const j = k % period;
          const sign = Math.floor(k / period) % 2 === 0 ? 1 : -1;
          v = sign * 0.8 * Math.exp(-j / 24) + 0.02 * (rng() - 0.5);
          break;
        }
      }
      // 16-bit PCM levels, as a decoded WAV gives; then normalised as the service does.
      raw[k] = Math.round(Math.min(Math.max(v, -1), 1) * 32767) / 32768;
    }
    return { id, shape: [T], data: normalizeAudio(raw, manifest.adapter) };
  });
}

/** mulberry32 inlined (not `Rng`): the generator's stream is part of GOLDEN_GENERATOR. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    let t = (state = (state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 1 || count > MAX_GOLDEN_COUNT)
    throw new GimError(
      'invalid_argument',
      `golden input count must be an integer in 1..${MAX_GOLDEN_COUNT}, got ${count}`,
    );
}

// ---------------------------------------------------------------------------------------------
// Computing

/**
 * The golden record of `stack` (built from `manifest`) on the current backend: one forward pass of
 * all inputs through every layer, each layer's output per input summarised (see GoldenSummary).
 * Every tensor it makes is disposed.
 */
export async function computeGolden(
  stack: EncoderStack | AudioEncoderStack,
  manifest: StackManifest,
  opts: ComputeGoldenOptions = {},
): Promise<GoldenRecord> {
  const count = opts.count ?? DEFAULT_GOLDEN_COUNT;
  const tolerance = opts.tolerance ?? GOLDEN_TOLERANCE;
  if (!(tolerance > 0 && Number.isFinite(tolerance)))
    throw new GimError('invalid_argument', `golden tolerance must be > 0, got ${tolerance}`);
  if (stack.depth !== manifest.modules.length)
    throw new GimError(
      'invalid_argument',
      `the stack has ${stack.depth} layers, its manifest ${manifest.modules.length}`,
    );
  if (stack.modality !== manifest.modality)
    throw new GimError(
      'invalid_argument',
      `a ${stack.modality} stack with a manifest of a ${manifest.modality} stack`,
    );
  const inputs = goldenInputs(manifest, count);
  const itemLength = inputs[0]?.data.length ?? 0;
  const batch = new Float32Array(count * itemLength);
  inputs.forEach((x, i) => batch.set(x.data, i * itemLength));
  const layers = Array.from({ length: stack.depth }, (_, i) => i + 1);

  const outputs = stack.embed(batch, count, layers) as Map<number, tf.Tensor>;
  const record: GoldenRecord = {
    format: GOLDEN_FORMAT,
    inputs: { generator: GOLDEN_GENERATOR, count, ids: inputs.map((x) => x.id) },
    backend: opts.backend ?? currentBackend()?.name ?? tf.getBackend(),
    tolerance: { maxRelError: tolerance },
    layers: [],
  };
  try {
    for (const layer of layers) {
      const t = outputs.get(layer) as tf.Tensor;
      const data = (await t.data()) as Float32Array;
      const values: GoldenValues[] = [];
      inputs.forEach((input, i) => {
        for (const s of summarise(data, t.shape, i, stack.modality))
          values.push({
            input: input.id,
            summary: s.summary,
            shape: s.shape,
            data: toBase64(s.data),
          });
      });
      record.layers.push({ layer, values });
    }
  } finally {
    tf.dispose([...outputs.values()]);
  }
  return record;
}

/**
 * The golden record of a draft's modules (what `StackStore.publish` records): the stack is built
 * from the artifacts being published, on the current backend, and disposed.
 */
export async function goldenFromArtifacts(
  manifest: StackManifest,
  modules: tf.io.ModelArtifacts[],
  opts: ComputeGoldenOptions = {},
): Promise<GoldenRecord> {
  const stack =
    manifest.modality === 'audio'
      ? await AudioEncoderStack.fromManifest(manifest, modules)
      : await EncoderStack.fromManifest(manifest, modules);
  try {
    return await computeGolden(stack, manifest, opts);
  } finally {
    stack.dispose();
  }
}

interface Summary {
  summary: GoldenSummary;
  shape: number[];
  data: Float32Array;
}

/** Item `i`'s summaries of one layer's output: image [n, rows, cols, C], audio [n, frames, C]. */
function summarise(
  data: Float32Array,
  shape: number[],
  i: number,
  modality: 'image' | 'audio',
): Summary[] {
  if (modality === 'image') {
    const [, rows, cols, C] = shape as [number, number, number, number];
    const grid = data.subarray(i * rows * cols * C, (i + 1) * rows * cols * C);
    const mean = poolGrid(grid, { n: 1, rows, cols, channels: C }, 'mean');
    return [{ summary: 'mean', shape: [C], data: mean }, regionMeans(grid, rows, cols, C)];
  }
  const [, F, C] = shape as [number, number, number];
  const frames = data.subarray(i * F * C, (i + 1) * F * C);
  const mean = poolGrid(frames, { n: 1, rows: 1, cols: F, channels: C }, 'mean');
  const k = Math.min(4, F);
  const picked = new Float32Array(k * C);
  for (let j = 0; j < k; j++) {
    const f = k === 1 ? 0 : Math.round((j * (F - 1)) / (k - 1));
    picked.set(frames.subarray(f * C, (f + 1) * C), j * C);
  }
  return [
    { summary: 'mean', shape: [C], data: mean },
    { summary: 'frames', shape: [k, C], data: picked },
  ];
}

/** Means over a min(3, rows) x min(3, cols) partition of a grid (region edges at floor(k*n/b)). */
function regionMeans(grid: Float32Array, rows: number, cols: number, C: number): Summary {
  const br = Math.min(3, rows);
  const bc = Math.min(3, cols);
  const out = new Float32Array(br * bc * C);
  for (let a = 0; a < br; a++)
    for (let b = 0; b < bc; b++) {
      const r0 = Math.floor((a * rows) / br);
      const r1 = Math.floor(((a + 1) * rows) / br);
      const q0 = Math.floor((b * cols) / bc);
      const q1 = Math.floor(((b + 1) * cols) / bc);
      const cells = (r1 - r0) * (q1 - q0);
      for (let c = 0; c < C; c++) {
        let sum = 0;
        for (let r = r0; r < r1; r++)
          for (let q = q0; q < q1; q++) sum += grid[(r * cols + q) * C + c] as number;
        out[(a * bc + b) * C + c] = sum / cells;
      }
    }
  return { summary: 'regions', shape: [br, bc, C], data: out };
}
