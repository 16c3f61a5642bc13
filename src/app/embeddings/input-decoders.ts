import { decodeImage } from '../../gim/data/decode-image.js';
import { GimError } from '../../gim/errors.js';
import type { ImageAdapterConfig } from '../../gim/modality/image.js';
import type { Modality, StackManifest } from '../../gim/store/manifest.js';

export interface DecodeLimits {
  maxInputPixels: number;
}

/**
 * Turns one encoded item (a file, a raw body, a base64 string) into the model-sized Float32Array
 * a stack of its modality takes. One decoder per modality: audio plugs in here (`audio/*` media
 * types, decoding and resampling to the adapter's sample rate and window) without touching the
 * routes or the batching.
 */
export interface InputDecoder {
  readonly modality: Modality;
  /** Content-Types accepted as a raw single-item request body. */
  readonly mediaTypes: readonly string[];
  /** The shape of one decoded item, e.g. [h, w, c]. */
  itemShape(manifest: StackManifest): number[];
  decode(bytes: Uint8Array, manifest: StackManifest, limits: DecodeLimits): Promise<Float32Array>;
}

const imageDecoder: InputDecoder = {
  modality: 'image',
  mediaTypes: ['image/png', 'image/jpeg', 'image/webp', 'image/gif', 'image/tiff', 'image/avif'],
  itemShape: (manifest) => {
    const { height, width, channels } = imageAdapter(manifest);
    return [height, width, channels];
  },
  // sharp decodes on libuv's thread pool: items of one request decode in parallel.
  decode: (bytes, manifest, { maxInputPixels }) => {
    const { height, width, channels } = imageAdapter(manifest);
    return decodeImage(bytes, { height, width, channels, maxPixels: maxInputPixels });
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

const DECODERS: Partial<Record<Modality, InputDecoder>> = { image: imageDecoder };

/** Every Content-Type a raw single-item body may have (the raw body parser takes these). */
export const RAW_MEDIA_TYPES: readonly string[] = Object.values(DECODERS).flatMap(
  (d) => d.mediaTypes,
);

export function decoderFor(manifest: StackManifest): InputDecoder {
  const decoder = DECODERS[manifest.modality];
  if (decoder === undefined) {
    throw new GimError(
      'unsupported_media',
      `${manifest.name}@${manifest.version} is a ${manifest.modality} stack, which this server cannot decode input for yet`,
    );
  }
  return decoder;
}

/**
 * Decodes every item at once; if some fail, the error of the first failing item (by index) is
 * thrown, its code kept and its message prefixed with `item <i>`.
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
      throw new GimError(error.code, `item ${i}: ${error.message}`, {
        cause: error,
        details: { ...error.details, item: i },
      });
    }
    throw error;
  });
}
