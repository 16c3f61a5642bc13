/**
 * Corpus-based fuzz of the image and audio decoders: real files of every format we read, cut,
 * bit-flipped, with bytes inserted or a length field overwritten, and random bytes behind each
 * format's magic. Each decode either gives the model input (right length, finite, in range) or a
 * GimError of a documented code (413 too_large, 415 unsupported_media, 422 invalid_data) with a
 * clean message, within the property timeout (a hang fails). Fixed seeds (test/helpers/fuzz.ts).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import sharp from 'sharp';
import { decodeAudio } from '../../src/gim/data/decode-audio.js';
import { decodeImage } from '../../src/gim/data/decode-image.js';
import { assertDocumentedError, fuzzParams } from '../helpers/fuzz.js';

type Mutation =
  | { kind: 'cut'; at: number }
  | { kind: 'flip'; at: number[]; xor: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'u32'; at: number; value: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('flip' as const),
    at: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
    xor: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  // Chunk lengths, dimensions, sample counts: the fields a parser trusts.
  fc.record({
    kind: fc.constant('u32' as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff, 0x10000), fc.nat()),
  }),
);

function mutate(bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = Uint8Array.from(bytes);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.kind === 'flip' ? 0 : m.at % out.length;
    if (m.kind === 'cut') {
      out = out.slice(0, at);
    } else if (m.kind === 'flip') {
      for (const i of m.at) if (out.length > 0) out[i % out.length]! ^= m.xor;
    } else if (m.kind === 'insert') {
      out = Uint8Array.from([...out.subarray(0, at), ...m.bytes, ...out.subarray(at)]);
    } else if (out.length >= 4) {
      new DataView(out.buffer).setUint32(Math.min(at, out.length - 4), m.value);
    }
  }
  return out;
}

/** A corpus file with 1-3 mutations, or random bytes behind one of `magics`. */
function fuzzedInput(corpus: Uint8Array[], magics: string[]): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc
        .tuple(fc.constantFrom(...corpus), fc.array(mutation, { minLength: 1, maxLength: 3 }))
        .map(([bytes, ms]) => mutate(bytes, ms)),
    },
    fc
      .tuple(fc.constantFrom(...magics), fc.uint8Array({ maxLength: 512 }))
      .map(([magic, rest]) => Uint8Array.from([...Buffer.from(magic, 'latin1'), ...rest])),
    fc.uint8Array({ maxLength: 256 }),
  );
}

describe('fuzz: decoders', () => {
  let images: Uint8Array[] = [];
  let clips: Uint8Array[] = [];

  before(async () => {
    const noise = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7919) % 251);
    const rgb = (w: number, h: number) =>
      sharp(noise(w * h * 3), { raw: { width: w, height: h, channels: 3 } });
    images = await Promise.all([
      sharp(noise(28 * 28), { raw: { width: 28, height: 28, channels: 1 } })
        .toColourspace('b-w')
        .png()
        .toBuffer(), // the inline path
      rgb(40, 30).png().toBuffer(),
      rgb(40, 30).jpeg().toBuffer(),
      rgb(40, 30).gif().toBuffer(),
      rgb(40, 30).webp().toBuffer(),
      rgb(16, 16).tiff().toBuffer(),
      rgb(16, 16).avif({ effort: 0 }).toBuffer(),
    ]);
    const audio = (name: string) => readFile(new URL(`../fixtures/audio/${name}`, import.meta.url));
    clips = await Promise.all(
      [
        'tone-16k-s16.wav',
        'tone-16k-s16.flac',
        'tone-8k-s24.flac',
        'flac-lengths/s16-stereo-9001.flac',
        'tone-16k.ogg',
        'tone-44k-stereo.mp3',
        'too-short.wav',
      ].map(audio),
    );
  });

  test('images: pixels in [0, 1] of the model size, or a documented error', async () => {
    const opts = { height: 28, width: 28, channels: 1 as const, maxPixels: 100_000 };
    const magics = ['\x89PNG\r\n\x1a\n', '\xff\xd8\xff', 'GIF89a', 'RIFF\0\0\0\0WEBPVP8 ', 'II*\0'];
    let decoded = 0;
    await fc.assert(
      fc.asyncProperty(fuzzedInput(images, magics), async (bytes) => {
        let pixels: Float32Array;
        try {
          pixels = await decodeImage(bytes, opts);
        } catch (e) {
          assertDocumentedError(e, ['invalid_data', 'unsupported_media', 'too_large']);
          return;
        }
        decoded++;
        assert.equal(pixels.length, 28 * 28);
        for (const v of pixels) assert.ok(v >= 0 && v <= 1, `pixel ${v}`);
      }),
      fuzzParams(1405, 300),
    );
    assert.ok(decoded > 10, `only ${decoded} fuzzed images decoded: the corpus is not reached`);
  });

  test('audio: finite samples within the limits, or a documented error', async () => {
    // 0.5 s: the tones are just within, the MP3 (encoder delay) and the 9001-sample FLAC just over.
    const limits = { sampleRate: 16000, maxSeconds: 0.5, minSamples: 100 };
    const magics = [
      'RIFF\0\0\0\0WAVEfmt ',
      'fLaC\0\0\0\x22',
      'OggS\0\x02',
      'ID3\x04\0\0',
      '\xff\xfb\x90\x64',
    ];
    let decoded = 0;
    await fc.assert(
      fc.asyncProperty(fuzzedInput(clips, magics), async (bytes) => {
        let samples: Float32Array;
        try {
          ({ samples } = await decodeAudio(bytes, limits));
        } catch (e) {
          assertDocumentedError(e, ['invalid_data', 'unsupported_media', 'too_large']);
          return;
        }
        decoded++;
        assert.ok(samples.length >= limits.minSamples, `${samples.length} samples`);
        assert.ok(samples.length <= limits.maxSeconds * limits.sampleRate + 1, `${samples.length}`);
        for (const v of samples) assert.ok(Number.isFinite(v), `sample ${v}`);
      }),
      fuzzParams(1406, 80),
    );
    assert.ok(decoded > 5, `only ${decoded} fuzzed clips decoded: the corpus is not reached`);
  });
});
