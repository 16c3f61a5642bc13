import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import {
  decodeImage,
  pngDecodesInline,
  type DecodeImageOptions,
} from '../../src/gim/data/decode-image.js';
import { gimError } from '../helpers/gim-error.js';

/** Deterministic noise: every byte value shows up, so a wrong conversion cannot hide. */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

const raw = (w: number, h: number, channels: 1 | 2 | 3 | 4, seed = 7) =>
  sharp(noise(w * h * channels, seed), { raw: { width: w, height: h, channels } });

/** `png` with a chunk inserted after IHDR (CRC computed, as an encoder would write it). */
function withChunk(png: Buffer, type: string, data: Buffer): Buffer {
  const chunk = Buffer.alloc(12 + data.length);
  chunk.writeUInt32BE(data.length, 0);
  chunk.write(type, 4, 'latin1');
  data.copy(chunk, 8);
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + data.length)), 8 + data.length);
  const afterHeader = 8 + 12 + 13;
  return Buffer.concat([png.subarray(0, afterHeader), chunk, png.subarray(afterHeader)]);
}

/** `png` with its IHDR height changed (CRC fixed): a header that disagrees with its data. */
function withHeight(png: Buffer, height: number): Buffer {
  const out = Buffer.from(png);
  out.writeUInt32BE(height, 8 + 8 + 4);
  out.writeUInt32BE(crc32(out.subarray(12, 12 + 4 + 13)), 12 + 4 + 13);
  return out;
}

/** The same bytes decoded inline and through sharp. */
async function bothWays(png: Buffer, opts: DecodeImageOptions) {
  const inline = await decodeImage(png, opts);
  const viaSharp = await decodeImage(png, { ...opts, inlinePng: false });
  return { inline, viaSharp };
}

const grey28 = { height: 28, width: 28, channels: 1 } as const;
const rgb8x6 = { height: 6, width: 8, channels: 3 } as const;

describe('PNGs decoded inline', () => {
  test('give exactly what sharp gives, where the inline path applies', async () => {
    const cases: [string, Buffer, DecodeImageOptions][] = [
      [
        '8-bit grey, grey model',
        await raw(28, 28, 1).toColourspace('b-w').png().toBuffer(),
        grey28,
      ],
      [
        '8-bit grey with text and pHYs, grey model',
        withChunk(
          withChunk(
            await raw(28, 28, 1, 3).toColourspace('b-w').png({ compressionLevel: 0 }).toBuffer(),
            'tEXt',
            Buffer.from('Software\0gim-serve test', 'latin1'),
          ),
          'pHYs',
          Buffer.from([0, 0, 11, 19, 0, 0, 11, 19, 1]),
        ),
        grey28,
      ],
      ['8-bit RGB, RGB model', await raw(8, 6, 3).png().toBuffer(), rgb8x6],
      [
        '8-bit grey, RGB model',
        await raw(8, 6, 1, 11).toColourspace('b-w').png().toBuffer(),
        rgb8x6,
      ],
    ];
    for (const [what, png, opts] of cases) {
      assert.ok(pngDecodesInline(png, opts), `${what}: should decode inline`);
      const { inline, viaSharp } = await bothWays(png, opts);
      assert.equal(inline.length, opts.height * opts.width * opts.channels, what);
      assert.deepEqual(inline, viaSharp, what);
    }
  });

  test('leave to sharp every PNG that needs resizing, conversion, or is unusual', async () => {
    const cases: [string, Buffer, DecodeImageOptions][] = [
      ['another size', await raw(30, 28, 1).toColourspace('b-w').png().toBuffer(), grey28],
      ['RGB to a grey model', await raw(28, 28, 3).png().toBuffer(), grey28],
      ['grey + alpha', await raw(28, 28, 2).png().toBuffer(), grey28],
      ['RGBA', await raw(8, 6, 4).png().toBuffer(), rgb8x6],
      ['palette', await raw(8, 6, 3).png({ palette: true }).toBuffer(), rgb8x6],
      ['16-bit', await raw(8, 6, 3).toColourspace('rgb16').png().toBuffer(), rgb8x6],
      ['interlaced', await raw(8, 6, 3).png({ progressive: true }).toBuffer(), rgb8x6],
      ['ICC profile', await raw(8, 6, 3).withIccProfile('p3').png().toBuffer(), rgb8x6],
      [
        'gamma',
        withChunk(await raw(8, 6, 3).png().toBuffer(), 'gAMA', Buffer.from([0, 0, 0xb1, 0x8f])),
        rgb8x6,
      ],
      [
        'EXIF orientation',
        await raw(8, 6, 3).withMetadata({ orientation: 6 }).png().toBuffer(),
        { height: 8, width: 6, channels: 3 },
      ],
      [
        'larger than the inline limit',
        await raw(96, 96, 3).png().toBuffer(),
        { height: 96, width: 96, channels: 3 },
      ],
      ['a JPEG', await raw(8, 6, 3).jpeg().toBuffer(), rgb8x6],
    ];
    for (const [what, png, opts] of cases) {
      assert.equal(pngDecodesInline(png, opts), false, `${what}: should go to sharp`);
      const pixels = await decodeImage(png, opts);
      assert.equal(pixels.length, opts.height * opts.width * opts.channels, what);
    }
  });

  test('broken inline candidates get the errors sharp gives', async () => {
    const png = await raw(28, 28, 1).toColourspace('b-w').png().toBuffer();
    // A flipped bit in the image data: the CRC no longer matches, pngjs refuses, sharp words it.
    const idat = png.indexOf('IDAT');
    const corrupt = Buffer.from(png);
    corrupt[idat + 10] = (corrupt[idat + 10] as number) ^ 0xff;
    assert.ok(pngDecodesInline(corrupt, grey28), 'the header walk still accepts it');
    await assert.rejects(decodeImage(corrupt, grey28), gimError('invalid_data'));
    // Truncated: not inline (no IEND), and refused before either path (see 'Images cut short').
    const truncated = png.subarray(0, png.length - 20);
    assert.equal(pngDecodesInline(truncated, grey28), false);
    await assert.rejects(decodeImage(truncated, grey28), gimError('invalid_data'));
    // Data for fewer rows than the header says: pngjs would pad it with zeros, sharp refuses it.
    const short = withHeight(await raw(28, 27, 1).toColourspace('b-w').png().toBuffer(), 28);
    assert.ok(pngDecodesInline(short, grey28));
    await assert.rejects(decodeImage(short, grey28), gimError('invalid_data'));
    // Data for more rows than the header says, and a zlib bomb (4 MB of zeros in a few KB):
    // inflating stops one byte past the image, and sharp has the last word.
    for (const [what, rows] of [
      ['one row too many', 29],
      ['a zlib bomb', (4 * 1024 * 1024) / 29],
    ] as const) {
      const long = withHeight(
        await sharp(new Uint8Array(28 * Math.floor(rows)), {
          raw: { width: 28, height: Math.floor(rows), channels: 1 },
        })
          .toColourspace('b-w')
          .png()
          .toBuffer(),
        28,
      );
      assert.ok(pngDecodesInline(long, grey28), what);
      const inline = await decodeImage(long, grey28).catch((e: unknown) => e);
      const viaSharp = await decodeImage(long, { ...grey28, inlinePng: false }).catch(
        (e: unknown) => e,
      );
      assert.deepEqual(inline, viaSharp, `${what}: the same outcome as sharp's`);
    }
    // The pixel limit holds on the inline path too.
    await assert.rejects(
      decodeImage(png, { ...grey28, maxPixels: 100 }),
      gimError('too_large', /100 pixels/),
    );
  });
});

describe('Images cut short', () => {
  /** The PNG without its last `n` bytes (IEND is the last 12). */
  const cut = (bytes: Buffer, n: number) => bytes.subarray(0, bytes.length - n);
  const rgb40 = async () => raw(40, 40, 3).png().toBuffer(); // resized and converted by sharp

  test('a PNG without its IEND chunk is refused on the inline path and through sharp', async () => {
    const grey = await raw(28, 28, 1).toColourspace('b-w').png().toBuffer();
    const cases: [string, Buffer, DecodeImageOptions][] = [
      ['inline candidate', grey, grey28],
      ['inline candidate, inline off', grey, { ...grey28, inlinePng: false }],
      ['RGB to a grey model (sharp)', await raw(28, 28, 3).png().toBuffer(), grey28],
      ['40x40 RGB resized to 28x28 (sharp)', await rgb40(), grey28],
      ['8-bit RGB, RGB model (inline)', await raw(8, 6, 3).png().toBuffer(), rgb8x6],
    ];
    for (const [what, png, opts] of cases) {
      // Whole, it decodes; so does it with bytes after IEND (not a truncation).
      assert.equal((await decodeImage(png, opts)).length, opts.height * opts.width * opts.channels);
      const trailing = Buffer.concat([png, Buffer.from('trailing bytes')]);
      await decodeImage(trailing, opts);
      for (const [how, n] of [
        ['no IEND', 12],
        ['half an IEND', 6],
        ['IEND without its CRC', 4],
      ] as const) {
        await assert.rejects(
          decodeImage(cut(png, n), opts),
          gimError('invalid_data', /^PNG is truncated: it ends before its IEND chunk$/),
          `${what}, ${how}`,
        );
      }
      // Cut inside the image data: the chunk walk says so before any decoder runs.
      await assert.rejects(
        decodeImage(cut(png, 20), opts),
        gimError('invalid_data', /^PNG is truncated: a chunk declares \d+ bytes, \d+ follow$/),
        `${what}, cut in IDAT`,
      );
    }
  });

  test('a JPEG without its EOI marker or cut in its scan is refused', async () => {
    const jpeg = await raw(40, 40, 3).jpeg().toBuffer();
    assert.equal((await decodeImage(jpeg, grey28)).length, 28 * 28);
    assert.deepEqual([...jpeg.subarray(-2)], [0xff, 0xd9], 'ends with EOI');
    for (const n of [2, 1, 12, Math.floor(jpeg.length / 2)]) {
      await assert.rejects(
        decodeImage(cut(jpeg, n), grey28),
        gimError('invalid_data', /premature end of JPEG/),
        `${n} bytes cut`,
      );
    }
  });

  test('a GIF without its trailer is refused; one with it, or with extensions, decodes', async () => {
    const gif = await raw(40, 40, 3).gif().toBuffer();
    // Two frames, a NETSCAPE looping extension and graphic control extensions.
    const frame = (seed: number) => raw(40, 40, 3, seed).png().toBuffer();
    const animated = await sharp([await frame(1), await frame(2)], { join: { animated: true } })
      .gif({ loop: 0, delay: [100, 100] })
      .toBuffer();
    assert.equal((await sharp(animated, { pages: -1 }).metadata()).pages, 2);
    for (const [what, whole] of [
      ['one frame', gif],
      ['two frames', animated],
    ] as const) {
      assert.equal(whole.at(-1), 0x3b, `${what}: ends with the trailer`);
      assert.equal((await decodeImage(whole, grey28)).length, 28 * 28, what);
      for (const n of [1, 2, 30]) {
        await assert.rejects(
          decodeImage(cut(whole, n), grey28),
          gimError('invalid_data', /^GIF is truncated/),
          `${what}: ${n} bytes cut`,
        );
      }
    }
  });
});
