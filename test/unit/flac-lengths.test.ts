import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { decodeAudio } from '../../src/gim/data/decode-audio.js';
import {
  FLAC_LENGTH_CASES,
  FLAC_RATE,
  flacReferenceMono,
  type FlacLengthCase,
} from '../helpers/flac-reference.js';

const fixture = (c: FlacLengthCase): Promise<Buffer> =>
  readFile(new URL(`../fixtures/audio/flac-lengths/${c.file}`, import.meta.url));

const references = new Map<FlacLengthCase, Float32Array>();
const reference = (c: FlacLengthCase): Float32Array => {
  const known = references.get(c) ?? flacReferenceMono(c);
  references.set(c, known);
  return known;
};

async function assertDecodesExactly(c: FlacLengthCase, bytes: Uint8Array, what: string) {
  const out = await decodeAudio(bytes, { maxSeconds: 60 });
  assert.equal(out.format, 'flac', what);
  assert.equal(out.sourceRate, FLAC_RATE, what);
  assert.equal(out.sourceChannels, c.channels, what);
  assert.equal(out.samples.length, c.samples, `${what}: every sample decodes`);
  const expected = reference(c);
  let worst = 0;
  for (let i = 0; i < c.samples; i++) {
    worst = Math.max(worst, Math.abs((out.samples[i] as number) - (expected[i] as number)));
  }
  // Lossless: the encoder's integer codes, scaled (and averaged, for stereo) in float32. One code
  // is 3e-5 at 16 bits, 1.2e-7 at 24; a lost or shifted sample moves the tone by far more.
  assert.ok(worst <= 1e-8, `${what}: max abs difference ${worst}`);
}

/** Offsets of the frame headers: the sync code with a header whose CRC-8 checks out. */
function frameHeaderOffsets(flac: Uint8Array): number[] {
  const offsets: number[] = [];
  for (let p = 4; p + 6 <= flac.length; p++) {
    if (flac[p] !== 0xff || ((flac[p + 1] as number) & 0xfe) !== 0xf8) continue;
    const blockCode = (flac[p + 2] as number) >> 4;
    const rateCode = (flac[p + 2] as number) & 0x0f;
    const first = flac[p + 4] as number;
    const utf8Extra = first < 0x80 ? 0 : first < 0xe0 ? 1 : first < 0xf0 ? 2 : first < 0xf8 ? 3 : 4;
    const crcAt =
      p + 5 + utf8Extra + [0, 0, 0, 0, 0, 0, 1, 2][blockCode & 7]! * (blockCode < 8 ? 1 : 0);
    const headerEnd = crcAt + (rateCode === 12 ? 1 : rateCode === 13 || rateCode === 14 ? 2 : 0);
    if (headerEnd >= flac.length) continue;
    let crc = 0;
    for (let i = p; i < headerEnd; i++) {
      crc ^= flac[i] as number;
      for (let k = 0; k < 8; k++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
    if (crc === flac[headerEnd]) offsets.push(p);
  }
  return offsets;
}

/**
 * `flac` with a PADDING metadata block after STREAMINFO, sized so that the frame header now at
 * `header` starts `before` bytes ahead of `boundary`: what a larger file's frames look like where
 * the decoder's input is cut into chunks.
 */
function withHeaderAt(flac: Uint8Array, header: number, boundary: number, before: number) {
  const streamInfoEnd = 8 + 34;
  const padding = boundary - before - header - 4;
  assert.ok(padding >= 0);
  const block = new Uint8Array(4 + padding);
  const streamInfoWasLast = ((flac[4] as number) & 0x80) !== 0;
  block[0] = (streamInfoWasLast ? 0x80 : 0) | 1; // PADDING, last if STREAMINFO was
  block[1] = padding >> 16;
  block[2] = (padding >> 8) & 0xff;
  block[3] = padding & 0xff;
  const out = new Uint8Array(flac.length + block.length);
  out.set(flac.subarray(0, streamInfoEnd));
  out[4] = (flac[4] as number) & 0x7f; // STREAMINFO is no longer the last block
  out.set(block, streamInfoEnd);
  out.set(flac.subarray(streamInfoEnd), streamInfoEnd + block.length);
  return out;
}

describe('FLAC lengths that are not a multiple of the block size', () => {
  for (const c of FLAC_LENGTH_CASES) {
    test(`${c.file}: every sample, exactly the encoder's`, async () => {
      await assertDecodesExactly(c, await fixture(c), c.file);
    });
  }

  // decodeAudio feeds the decoder 64 KiB at a time; a frame header cut in two by that boundary
  // used to be skipped, its frame merged into the one before and the last partial block lost
  // ("flac declares 107475 samples but 106496 decode").
  const CHUNK = 64 * 1024;
  for (const c of FLAC_LENGTH_CASES.filter((k) => k.samples > k.blocksize)) {
    test(`${c.file}: a frame header across a chunk boundary`, async () => {
      const flac = new Uint8Array(await fixture(c));
      const headers = frameHeaderOffsets(flac);
      assert.equal(headers.length, Math.ceil(c.samples / c.blocksize), 'one header per block');
      // The first frame (found by a search from the metadata), one in the middle, the last
      // (the partial block); every split of its header, up to the longest header (16 bytes).
      // The long clip, slower to decode, only with its last frame: the case issue 14 reported.
      const last = headers.length - 1;
      const picked = c.samples > 50_000 ? [last] : [...new Set([0, headers.length >> 1, last])];
      for (const h of picked.map((i) => headers[i] as number)) {
        for (let before = 1; before <= 16; before++) {
          const moved = withHeaderAt(flac, h, CHUNK, before);
          await assertDecodesExactly(
            c,
            moved,
            `header ${h} at ${before} bytes before the boundary`,
          );
        }
      }
    });
  }
});
