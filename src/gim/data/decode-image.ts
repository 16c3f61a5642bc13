/**
 * Encoded image bytes -> model-sized pixels. Shared by image folders, the HTTP API and `gim embed`.
 * The format is sniffed from magic bytes first, so "not an image we read" (unsupported_media) is
 * told apart from "an image we read, but broken" (invalid_data) without parsing sharp's messages.
 */
import { inflateSync } from 'node:zlib';
import pngjs from 'pngjs';
import sharp, { type OutputInfo } from 'sharp';
import { GimError } from '../errors.js';
import { imageTruncation } from './image-end.js';

export interface DecodeImageOptions {
  height: number;
  width: number;
  channels: 1 | 3;
  /** Refuse inputs with more pixels than this before decoding them. Default DEFAULT_MAX_PIXELS. */
  maxPixels?: number;
  /**
   * Decode small PNGs that need no conversion inline (`pngDecodesInline`) instead of through
   * sharp. Default true; the result is the same either way (tested), only the cost differs.
   */
  inlinePng?: boolean;
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
 * Values (height x width x channels) up to which a PNG that needs no conversion is decoded inline
 * (64x64 RGB: ~0.3 ms of main-thread time). Larger ones go to sharp, on libuv's pool.
 */
export const INLINE_PNG_MAX_VALUES = 64 * 64 * 3;

/** Encoded size beyond which a PNG goes to sharp (a small image's PNG is a few KB). */
const INLINE_PNG_MAX_BYTES = 64 * 1024;

/**
 * PNG chunks that change no pixel of the decode: a PNG with any other (eXIf, iCCP, gAMA, tRNS,
 * PLTE, ...) goes to sharp.
 */
const INLINE_PNG_CHUNKS = new Set(['IHDR', 'IDAT', 'IEND', 'tEXt', 'zTXt', 'iTXt', 'tIME', 'pHYs']);

/** An inline-decodable PNG: its image data (the IDAT chunks' contents) and its channels. */
interface InlinePng {
  idat: Uint8Array[];
  pngChannels: 1 | 3;
}

/**
 * True for a well-formed small PNG that is already what the model takes: exactly height x width,
 * 8-bit grey (for 1 or 3 channels) or 8-bit RGB (for 3), not interlaced, no alpha, no palette, no
 * colour profile, no EXIF. For those, sharp's resize, flatten and colour conversion are
 * identities, and its per-image pipeline (~1.4 ms of CPU at 28x28) costs ~15x the inline decode
 * with pngjs (~0.09 ms, conversion to floats included), which gives the same values (tested
 * against sharp). Both costs: `npm run bench:serve`, its decode table.
 */
export function pngDecodesInline(bytes: Uint8Array, opts: DecodeImageOptions): boolean {
  return inlinePng(bytes, opts) !== undefined;
}

function inlinePng(bytes: Uint8Array, opts: DecodeImageOptions): InlinePng | undefined {
  const { height, width, channels, maxPixels = DEFAULT_MAX_PIXELS } = opts;
  if (bytes.length > INLINE_PNG_MAX_BYTES || sniffImageFormat(bytes) !== 'png') return undefined;
  if (height * width * channels > INLINE_PNG_MAX_VALUES || height * width > maxPixels) {
    return undefined;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pngChannels: 1 | 3 | undefined;
  const idat: Uint8Array[] = [];
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const end = at + 12 + length;
    if (end > bytes.length || !INLINE_PNG_CHUNKS.has(type)) return undefined;
    if ((at === 8) !== (type === 'IHDR')) return undefined; // IHDR first, and only there
    if (type === 'IHDR') {
      const [depth, colour, , , interlace] = bytes.subarray(at + 16, at + 21);
      const fits =
        length === 13 &&
        view.getUint32(at + 8) === width &&
        view.getUint32(at + 12) === height &&
        depth === 8 &&
        (colour === 0 || (colour === 2 && channels === 3)) &&
        interlace === 0;
      if (!fits) return undefined;
      pngChannels = colour === 0 ? 1 : 3;
    }
    if (type === 'IDAT') idat.push(bytes.subarray(at + 8, end - 4));
    if (type === 'IEND') return pngChannels && idat.length > 0 ? { idat, pngChannels } : undefined;
    at = end;
  }
  return undefined; // cut short, or no IEND: refused by decodeImage before it gets here
}

/**
 * An inline PNG -> [h, w, c] in [0, 1]; undefined when its data is not exactly one image (sharp
 * then decodes it and words the error).
 */
function decodeInlinePng(
  bytes: Uint8Array,
  png: InlinePng,
  opts: DecodeImageOptions,
): Float32Array | undefined {
  const { height, width, channels } = opts;
  // pngjs pads an image whose data stops early with zeros, where sharp refuses it: so the data
  // must inflate to exactly one filter byte plus one row of pixels per row.
  const expected = (width * png.pngChannels + 1) * height;
  let decoded;
  try {
    const scanlines = inflateSync(Buffer.concat(png.idat), { maxOutputLength: expected + 1 });
    if (scanlines.length !== expected) return undefined;
    // pngjs: CRCs, unfiltering; its output is RGBA 8-bit whatever the input.
    decoded = pngjs.PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      checkCRC: true,
    });
  } catch {
    return undefined;
  }
  const { data } = decoded; // [h, w, 4]
  const pixels = new Float32Array(width * height * channels);
  for (let i = 0, p = 0; i < pixels.length; p += 4) {
    for (let c = 0; c < channels; c++) pixels[i++] = (data[p + c] as number) / 255;
  }
  return pixels;
}

/**
 * Decodes, orients (EXIF), resizes to exactly height x width (aspect ratio not kept: `fit: fill`),
 * converts to grey or sRGB, and scales to [0, 1]. Transparent pixels are composited onto black.
 * Returns [h, w, c]. Small PNGs already at that size and colour skip sharp (`pngDecodesInline`).
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
  // Before either path: the inline one sees no IEND and hands over to sharp, which decodes it.
  const truncated = imageTruncation(bytes, format);
  if (truncated !== undefined) throw new GimError('invalid_data', truncated);
  const inline = opts.inlinePng === false ? undefined : inlinePng(bytes, opts);
  if (inline !== undefined) {
    const pixels = decodeInlinePng(bytes, inline, opts);
    if (pixels !== undefined) return pixels;
  }

  // failOn 'warning' (sharp's default, kept on purpose): libjpeg's warning of a missing EOI or a
  // scan cut short is what makes a truncated JPEG an error rather than grey rows.
  let pipeline = sharp(bytes, { limitInputPixels: maxPixels, autoOrient: true, failOn: 'warning' })
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
