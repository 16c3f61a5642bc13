/**
 * Whether an encoded PNG or GIF reaches its end marker. libvips decodes a PNG that stops after its
 * last IDAT chunk (no IEND) and a GIF that stops before its trailer, since the pixels are all
 * there; but both formats require the marker (PNG: "IEND shall be the last chunk"; GIF89a: the
 * trailer ends the data stream), what is missing may change the image (an eXIf orientation after
 * IDAT, another GIF frame), and a file cut short is a client's bug to report, not to serve. JPEG
 * needs no walk here: libjpeg warns of a missing EOI ("premature end of JPEG image"), which
 * sharp's `failOn: 'warning'` makes an error. WebP, TIFF and AVIF cut short fail in their decoders.
 */
import type { ImageFormat } from './decode-image.js';

/** Why the image is cut short, or undefined when it reaches its end marker (or is not PNG/GIF). */
export function imageTruncation(bytes: Uint8Array, format: ImageFormat): string | undefined {
  if (format === 'png') return pngTruncation(bytes);
  if (format === 'gif') return gifTruncation(bytes);
  return undefined;
}

/** Walks the chunks (length, type, data, CRC) from the signature to IEND. */
function pngTruncation(b: Uint8Array): string | undefined {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 8;
  while (at + 12 <= b.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...b.subarray(at + 4, at + 8));
    if (at + 12 + length > b.length) {
      return `PNG is truncated: a chunk declares ${length} bytes, ${b.length - at - 12} follow`;
    }
    if (type === 'IEND') return undefined;
    at += 12 + length;
  }
  return 'PNG is truncated: it ends before its IEND chunk';
}

/**
 * Walks the blocks (extensions and images, each a run of sub-blocks) from the screen descriptor to
 * the trailer (0x3B). A byte that starts no block is left to the decoder to refuse.
 */
function gifTruncation(b: Uint8Array): string | undefined {
  const cut = 'GIF is truncated: it ends before its trailer';
  const colourTable = (packed: number): number => (packed & 0x80 ? 3 << ((packed & 7) + 1) : 0);
  let at = 13 + colourTable(b[10] ?? 0); // header (6) + logical screen descriptor (7)
  const skipSubBlocks = (): boolean => {
    for (;;) {
      const size = b[at];
      if (size === undefined) return false;
      at += 1 + size;
      if (size === 0) return true;
    }
  };
  for (;;) {
    const introducer = b[at];
    if (introducer === undefined) return cut;
    if (introducer === 0x3b) return undefined;
    if (introducer === 0x21) {
      at += 2; // introducer, label
    } else if (introducer === 0x2c) {
      const packed = b[at + 9];
      if (packed === undefined) return cut;
      at += 10 + colourTable(packed) + 1; // descriptor, local colour table, LZW code size
    } else {
      return undefined;
    }
    if (!skipSubBlocks()) return cut;
  }
}
