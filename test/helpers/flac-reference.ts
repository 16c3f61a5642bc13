/**
 * The FLAC fixtures of test/fixtures/audio/flac-lengths/ and the exact samples they hold. The
 * signal is computed here in integers, so `scripts/make-flac-fixtures.ts` (which encodes it with
 * the reference `flac` encoder) and the tests (which compare the decode with it) agree to the last
 * bit without committing the WAVs. Every length is off the block size, so each file ends in a
 * partial block.
 */
export interface FlacLengthCase {
  file: string;
  /** Samples per channel. */
  samples: number;
  channels: 1 | 2;
  bits: 16 | 24;
  /** flac's --blocksize (its default at 16 kHz is 4096). */
  blocksize: number;
}

export const FLAC_RATE = 16000;

export const FLAC_LENGTH_CASES: readonly FlacLengthCase[] = [
  // The length of the clip issue 14 reported refused (26 blocks of 4096 + 979).
  { file: 's16-mono-107475.flac', samples: 107475, channels: 1, bits: 16, blocksize: 4096 },
  { file: 's16-mono-4097.flac', samples: 4097, channels: 1, bits: 16, blocksize: 4096 },
  { file: 's16-mono-1000.flac', samples: 1000, channels: 1, bits: 16, blocksize: 4096 },
  { file: 's16-stereo-9001.flac', samples: 9001, channels: 2, bits: 16, blocksize: 4096 },
  { file: 's24-mono-12345.flac', samples: 12345, channels: 1, bits: 24, blocksize: 4096 },
  { file: 's24-stereo-5000.flac', samples: 5000, channels: 2, bits: 24, blocksize: 4096 },
  { file: 's16-mono-7001-b1152.flac', samples: 7001, channels: 1, bits: 16, blocksize: 1152 },
];

/**
 * Integer sample codes, one array per channel: a quiet tone (330 Hz left, 550 Hz right, 1/64 of
 * full scale, so the files stay small) plus one bit of deterministic noise, so no two blocks are
 * alike and a lost or repeated block changes the samples.
 */
export function flacReferenceCodes(c: FlacLengthCase): Int32Array[] {
  const full = 2 ** (c.bits - 1);
  let seed = c.samples * 31 + c.channels * 7 + c.bits;
  return Array.from({ length: c.channels }, (_, ch) => {
    const hz = ch === 0 ? 330 : 550;
    const codes = new Int32Array(c.samples);
    for (let i = 0; i < c.samples; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const noise = seed >>> 31; // one bit: cheap to encode, and no two blocks alike
      codes[i] = Math.round((full / 64) * Math.sin((2 * Math.PI * hz * i) / FLAC_RATE)) + noise;
    }
    return codes;
  });
}

/**
 * What `decodeAudio` returns for the case: the mean of the channels, each code / (2^(bits-1) - 1)
 * (the scale of the libFLAC build in @audio/decode-flac, for both signs).
 */
export function flacReferenceMono(c: FlacLengthCase): Float32Array {
  const channels = flacReferenceCodes(c);
  const scale = 1 / (2 ** (c.bits - 1) - 1);
  const mono = new Float32Array(c.samples);
  for (let i = 0; i < c.samples; i++) {
    let sum = 0;
    for (const codes of channels) sum += Math.fround((codes[i] as number) * scale);
    mono[i] = sum / channels.length;
  }
  return mono;
}

/** A canonical PCM WAV of the codes (the encoder's input). */
export function pcmWav(channels: Int32Array[], bits: 16 | 24, rate: number): Buffer {
  const width = bits / 8;
  const frames = channels[0]?.length ?? 0;
  const data = Buffer.alloc(frames * channels.length * width);
  for (let i = 0; i < frames; i++) {
    channels.forEach((codes, ch) => {
      data.writeIntLE(codes[i] as number, (i * channels.length + ch) * width, width);
    });
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'latin1');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8, 'latin1');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(channels.length, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * channels.length * width, 28);
  header.writeUInt16LE(channels.length * width, 32);
  header.writeUInt16LE(bits, 34);
  header.write('data', 36, 'latin1');
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}
