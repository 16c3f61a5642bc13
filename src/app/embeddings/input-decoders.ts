import { decodeAudio } from '../../gim/data/decode-audio.js';
import { decodeImage } from '../../gim/data/decode-image.js';
import { GimError } from '../../gim/errors.js';
import { normalizeAudio } from '../../gim/modality/audio.js';
import type { ImageAdapterConfig } from '../../gim/modality/image.js';
import type { Modality, StackManifest } from '../../gim/store/manifest.js';
import { audioInputSpec, type AudioInputSpec } from './audio-geometry.js';

export interface DecodeLimits {
  maxInputPixels: number;
  /**
   * Decodes, mixes down, resamples and normalises one clip for an audio stack (the HTTP server
   * passes its AudioDecodePool). Default: on the calling thread.
   */
  decodeAudio?: (bytes: Uint8Array, spec: AudioInputSpec) => Promise<Float32Array>;
}

/** One item as a KServe v2 FP32 tensor: its shape (-1: any length) and the range of its values. */
export interface TensorInput {
  itemShape: number[];
  min: number;
  max: number;
  /** What the values are, for messages and metadata. */
  describe: string;
}

/**
 * Turns one encoded item (a file, a raw body, a base64 string) into the model input a stack of its
 * modality takes. One decoder per modality, picked from the manifest: the routes, the Batcher and
 * the worker are the same for every modality.
 */
export interface InputDecoder {
  readonly modality: Modality;
  /** Content-Types accepted as a raw single-item request body. */
  readonly mediaTypes: readonly string[];
  /** The formats it reads, for messages: `PNG, JPEG, ...`. */
  readonly formats: string;
  /** One item as a KServe v2 tensor. */
  tensorInput(manifest: StackManifest): TensorInput;
  decode(bytes: Uint8Array, manifest: StackManifest, limits: DecodeLimits): Promise<Float32Array>;
  /**
   * One item given as values (KServe v2, already checked against `tensorInput`) -> model input;
   * refuses what `decode` would refuse (too short, too long).
   */
  prepare(values: Float32Array, manifest: StackManifest): Float32Array;
}

const imageDecoder: InputDecoder = {
  modality: 'image',
  mediaTypes: ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'],
  formats: 'PNG, JPEG, WebP, GIF, TIFF or AVIF images',
  tensorInput: (manifest) => {
    const { height, width, channels } = imageAdapter(manifest);
    return { itemShape: [height, width, channels], min: 0, max: 1, describe: 'pixels' };
  },
  // sharp decodes on libuv's thread pool: items of one request decode in parallel.
  decode: (bytes, manifest, { maxInputPixels }) => {
    const { height, width, channels } = imageAdapter(manifest);
    return decodeImage(bytes, { height, width, channels, maxPixels: maxInputPixels });
  },
  prepare: (values) => values,
};

const audioDecoder: InputDecoder = {
  modality: 'audio',
  mediaTypes: [
    'audio/wav',
    'audio/x-wav',
    'audio/wave',
    'audio/flac',
    'audio/x-flac',
    'audio/mpeg',
    'audio/mp3',
    'audio/ogg',
  ],
  formats: 'WAV, FLAC, MP3 or Ogg (Vorbis, Opus) audio',
  tensorInput: () => ({ itemShape: [-1], min: -1, max: 1, describe: 'samples' }),
  // Decoded, mixed to mono and resampled to the adapter's rate; each clip keeps its own length.
  decode: async (bytes, manifest, limits) => {
    const spec = audioInputSpec(manifest);
    if (limits.decodeAudio) return limits.decodeAudio(bytes, spec);
    const { samples } = await decodeAudio(bytes, {
      sampleRate: spec.sampleRate,
      maxSeconds: spec.maxSeconds,
      minSamples: spec.minSamples,
    });
    return normalizeAudio(samples, spec);
  },
  prepare: (values, manifest) => {
    const spec = audioInputSpec(manifest);
    const ms = (n: number): string => `${((1000 * n) / spec.sampleRate).toFixed(1)} ms`;
    if (values.length > spec.maxSeconds * spec.sampleRate) {
      throw new GimError(
        'too_large',
        `${values.length} samples (${(values.length / spec.sampleRate).toFixed(2)} s) at ` +
          `${spec.sampleRate} Hz: the limit is ${spec.maxSeconds} s`,
      );
    }
    if (values.length < spec.minSamples) {
      throw new GimError(
        'invalid_data',
        `audio too short: ${values.length} samples (${ms(values.length)}) at ${spec.sampleRate} ` +
          `Hz, at least ${spec.minSamples} samples (${ms(spec.minSamples)}) needed`,
      );
    }
    return normalizeAudio(values, spec);
  },
};

function imageAdapter(manifest: StackManifest): ImageAdapterConfig {
  const { adapter } = manifest;
  if (adapter.kind !== 'image') {
    throw new GimError(
      'invalid_data',
      `${manifest.name}@${manifest.version} is an image stack with a ${adapter.kind} adapter`,
    );
  }
  return adapter;
}

const DECODERS: Record<Modality, InputDecoder> = { image: imageDecoder, audio: audioDecoder };

/** Every Content-Type a raw single-item body may have (the raw body parser takes these). */
export const RAW_MEDIA_TYPES: readonly string[] = Object.values(DECODERS).flatMap(
  (d) => d.mediaTypes,
);

export function decoderFor(manifest: StackManifest): InputDecoder {
  const decoder = DECODERS[manifest.modality] as InputDecoder | undefined;
  if (decoder === undefined) {
    throw new GimError(
      'unsupported_media',
      `${manifest.name}@${manifest.version} is a ${String(manifest.modality)} stack, which this server cannot decode input for`,
    );
  }
  return decoder;
}

/** `name@version is an audio stack: send WAV, FLAC, ...` */
export function whatItTakes(decoder: InputDecoder, manifest: StackManifest): string {
  return `${manifest.name}@${manifest.version} is an ${decoder.modality} stack: send ${decoder.formats}`;
}

/**
 * Decodes every item at once; if some fail, the error of the first failing item (by index) is
 * thrown, its code kept and its message prefixed with `item <i>`. An item in a format the stack
 * does not take (an image to an audio stack, random bytes) says what the stack takes.
 */
export async function decodeItems(
  decoder: InputDecoder,
  items: readonly Uint8Array[],
  manifest: StackManifest,
  limits: DecodeLimits,
): Promise<Float32Array[]> {
  const settled = await Promise.allSettled(items.map((b) => decoder.decode(b, manifest, limits)));
  return settled.map((outcome, i) => {
    if (outcome.status === 'fulfilled') return outcome.value;
    const error: unknown = outcome.reason;
    if (error instanceof GimError) {
      const hint = error.code === 'unsupported_media' ? ` (${whatItTakes(decoder, manifest)})` : '';
      throw new GimError(error.code, `item ${i}: ${error.message}${hint}`, {
        cause: error,
        details: { ...error.details, item: i },
      });
    }
    throw error;
  });
}
