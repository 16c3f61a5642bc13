/**
 * Encoded image bytes -> model-sized pixels. Shared by image folders, the HTTP API and `gim embed`.
 * The format is sniffed from magic bytes first, so "not an image we read" (unsupported_media) is
 * told apart from "an image we read, but broken" (invalid_data) without parsing sharp's messages.
 */
import sharp, { type OutputInfo } from 'sharp';
import { GimError } from '../errors.js';

export interface DecodeImageOptions {
  height: number;
  width: number;
  channels: 1 | 3;
  /** Refuse inputs with more pixels than this before decoding them. Default DEFAULT_MAX_PIXELS. */
  maxPixels?: number;
}

/** 40 megapixels: a large photo; its RGB decode is ~120 MB. */
export const DEFAULT_MAX_PIXELS = 40_000_000;

export type ImageFormat = 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff' | 'avif';

/** The format from the first bytes, or undefined for anything we do not decode (SVG included). */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | undefined {
  const at = (offset: number, ascii: string): boolean =>
    bytes.length >= offset + ascii.length &&
    [...ascii].every((ch, i) => bytes[offset + i] === ch.charCodeAt(0));
  if (at(0, '\x89PNG\r\n\x1a\n')) return 'png';
  if (at(0, '\xff\xd8\xff')) return 'jpeg';
  if (at(0, 'RIFF') && at(8, 'WEBP')) return 'webp';
  if (at(0, 'GIF87a') || at(0, 'GIF89a')) return 'gif';
  if (at(0, 'II*\x00') || at(0, 'MM\x00*')) return 'tiff';
  if (at(4, 'ftypavif') || at(4, 'ftypavis')) return 'avif';
  return undefined;
}

/** Throws invalid_argument unless the sizes are positive integers and channels is 1 or 3. */
export function checkDecodeOptions(opts: DecodeImageOptions): void {
  const { height, width, channels, maxPixels = DEFAULT_MAX_PIXELS } = opts;
  for (const [name, v] of [
    ['height', height],
    ['width', width],
    ['maxPixels', maxPixels],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new GimError('invalid_argument', `${name} must be a positive integer, got ${v}`);
    }
  }
  if (channels !== 1 && channels !== 3) {
    throw new GimError('invalid_argument', `channels must be 1 or 3, got ${String(channels)}`);
  }
}

/**
 * Decodes, orients (EXIF), resizes to exactly height x width (aspect ratio not kept: `fit: fill`),
 * converts to grey or sRGB, and scales to [0, 1]. Transparent pixels are composited onto black.
 * Returns [h, w, c].
 */
export async function decodeImage(
  bytes: Buffer | Uint8Array,
  opts: DecodeImageOptions,
): Promise<Float32Array> {
  checkDecodeOptions(opts);
  const { height, width, channels } = opts;
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (bytes.length === 0) throw new GimError('invalid_data', 'empty image');
  const format = sniffImageFormat(bytes);
  if (!format) {
    throw new GimError(
      'unsupported_media',
      'not a supported image format (expected PNG, JPEG, WebP, GIF, TIFF or AVIF)',
    );
  }

  let pipeline = sharp(bytes, { limitInputPixels: maxPixels, autoOrient: true })
    .resize(width, height, { fit: 'fill' })
    .flatten({ background: '#000000' });
  pipeline = channels === 1 ? pipeline.greyscale() : pipeline.toColourspace('srgb');

  let data: Buffer;
  let info: OutputInfo;
  try {
    ({ data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (/pixel limit/i.test(message))
      throw new GimError(
        'too_large',
        `image exceeds the limit of ${maxPixels} pixels: send a smaller image`,
        { cause: e },
      );
    throw new GimError('invalid_data', `cannot decode ${format}: ${message.split('\n')[0]}`, {
      cause: e,
    });
  }
  if (info.width !== width || info.height !== height || info.channels !== channels) {
    throw new GimError(
      'invalid_data',
      `decoded ${format} to ${info.height}x${info.width}x${info.channels}, ` +
        `expected ${height}x${width}x${channels}`,
    );
  }
  const pixels = new Float32Array(data.length); // [h, w, c]
  for (let i = 0; i < data.length; i++) pixels[i] = (data[i] as number) / 255;
  return pixels;
}
