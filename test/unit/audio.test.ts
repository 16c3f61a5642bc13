import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { dataSpecOfSource } from '../../src/gim/classify/train-head.js';
import { fileURLToPath } from 'node:url';
import { GimError } from '../../src/gim/errors.js';
import { Rng } from '../../src/gim/random.js';
import {
  decodeAudio,
  resampleAudio,
  sniffAudioFormat,
  type DecodedAudio,
} from '../../src/gim/data/decode-audio.js';
import { openAudioFolder, splitByUtterance } from '../../src/gim/data/audio-folder.js';
import {
  defaultAudioAdapter,
  normalizeAudio,
  randomWindow,
  validateAudioAdapter,
  type AudioAdapterConfig,
} from '../../src/gim/modality/audio.js';
import { gimError } from '../helpers/gim-error.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/audio', import.meta.url));
const SPEAKERS = join(FIXTURES, 'speakers');
const TONE_HZ = 440;

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gim-audio-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const fixture = (name: string): Promise<Buffer> => readFile(join(FIXTURES, name));

/** A canonical 44-byte-header WAV of the given channels (equal lengths). */
function wavBytes(channels: Float32Array[], rate: number, encoding: 'pcm16' | 'float32') {
  const nCh = channels.length;
  const frames = channels[0]?.length ?? 0;
  const width = encoding === 'pcm16' ? 2 : 4;
  const dataSize = frames * nCh * width;
  const view = new DataView(new ArrayBuffer(44 + dataSize));
  const text = (at: number, s: string) =>
    [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, 'RIFF');
  view.setUint32(4, 36 + dataSize, true);
  text(8, 'WAVE');
  text(12, 'fmt ');
  view.setUint32(16, 16, true);
  view.setUint16(20, encoding === 'pcm16' ? 1 : 3, true);
  view.setUint16(22, nCh, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * nCh * width, true);
  view.setUint16(32, nCh * width, true);
  view.setUint16(34, width * 8, true);
  text(36, 'data');
  view.setUint32(40, dataSize, true);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < nCh; c++) {
      const v = (channels[c] as Float32Array)[i] as number;
      const at = 44 + (i * nCh + c) * width;
      if (encoding === 'pcm16') view.setInt16(at, Math.round(v * 32767), true);
      else view.setFloat32(at, v, true);
    }
  }
  return new Uint8Array(view.buffer);
}

const tone = (n: number, rate: number, amp = 0.5) =>
  Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * TONE_HZ * i) / rate));

/** Frequency from rising zero crossings (linearly interpolated), away from the clip's edges. */
function toneFrequency(x: Float32Array, rate: number): number {
  const crossings: number[] = [];
  for (let i = Math.floor(x.length * 0.1); i < x.length * 0.9; i++) {
    const a = x[i - 1] as number;
    const b = x[i] as number;
    if (a < 0 && b >= 0) crossings.push(i - 1 + a / (a - b));
  }
  const first = crossings[0] as number;
  const last = crossings[crossings.length - 1] as number;
  return ((crossings.length - 1) * rate) / (last - first);
}

/** The first sample louder than a tenth of the tone's amplitude. */
const onset = (x: Float32Array) => x.findIndex((v) => Math.abs(v) > 0.05);

/**
 * Aligns `x` to `ref` (coarsely by onset, then by correlation within a third of a period) and
 * compares them on the reference's middle 80%, away from edge effects of codecs and resampling.
 */
function compareToReference(ref: Float32Array, x: Float32Array) {
  const from = Math.floor(ref.length * 0.1);
  const to = Math.floor(ref.length * 0.9);
  const at = (lag: number, i: number) => x[i + lag] ?? 0;
  const coarse = onset(x) - onset(ref);
  let lag = coarse;
  let best = -Infinity;
  for (let l = coarse - 12; l <= coarse + 12; l++) {
    let dot = 0;
    for (let i = from; i < to; i++) dot += (ref[i] as number) * at(l, i);
    if (dot > best) [best, lag] = [dot, l];
  }
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  let se = 0;
  for (let i = from; i < to; i++) {
    const r = ref[i] as number;
    const v = at(lag, i);
    sxy += r * v;
    sxx += r * r;
    syy += v * v;
    se += (r - v) ** 2;
  }
  return { lag, correlation: sxy / Math.sqrt(sxx * syy), rmsError: Math.sqrt(se / (to - from)) };
}

describe('decodeAudio: formats', () => {
  let ref: DecodedAudio;
  before(async () => {
    ref = await decodeAudio(await fixture('tone-16k-s16.wav'));
  });

  test('the reference WAV decodes to the 0.5 s tone', () => {
    assert.equal(ref.format, 'wav');
    assert.equal(ref.sourceRate, 16000);
    assert.equal(ref.sourceChannels, 1);
    assert.equal(ref.samples.length, 8000);
    const peak = ref.samples.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(Math.abs(peak - 0.5) < 1e-3, `peak ${peak}`);
    assert.ok(Math.abs(toneFrequency(ref.samples, 16000) - TONE_HZ) < 0.5);
    // sox's synth is within 1% of the ideal sine, not bit-exact.
    const cmp = compareToReference(tone(8000, 16000), ref.samples);
    assert.equal(cmp.lag, 0);
    assert.ok(cmp.correlation > 0.9999, `correlation ${cmp.correlation}`);
  });

  // Resampled and lossless inputs must line up at lag 0; the lossy codecs get looser bounds, and
  // the MP3 carries LAME's 1105-sample encoder + decoder delay (no gapless tag from sox).
  const cases = [
    // decode-wav scales positive 16-bit codes by 1/32767, the FLAC decoder by 1/32768: 1 LSB.
    { file: 'tone-16k-s16.flac', format: 'flac', rate: 16000, channels: 1, maxRms: 3e-5 },
    { file: 'tone-44k-s24-stereo.wav', format: 'wav', rate: 44100, channels: 2, maxRms: 1e-4 },
    { file: 'tone-22k-f32.wav', format: 'wav', rate: 22050, channels: 1, maxRms: 1e-4 },
    { file: 'tone-8k-s24.flac', format: 'flac', rate: 8000, channels: 1, maxRms: 1e-4 },
    { file: 'tone-16k.ogg', format: 'ogg', rate: 16000, channels: 1, maxRms: 0.03, lossy: true },
    {
      file: 'tone-44k-stereo.mp3',
      format: 'mp3',
      rate: 44100,
      channels: 2,
      maxRms: 0.05,
      lossy: true,
    },
  ] as const;

  for (const c of cases) {
    test(`${c.file} matches the reference`, async () => {
      const out = await decodeAudio(await fixture(c.file));
      assert.equal(out.format, c.format);
      assert.equal(out.sourceRate, c.rate);
      assert.equal(out.sourceChannels, c.channels);
      const cmp = compareToReference(ref.samples, out.samples);
      if (c.format === 'mp3') {
        assert.ok(Math.abs(cmp.lag - Math.round((1105 * 16000) / 44100)) <= 2, `lag ${cmp.lag}`);
        assert.ok(out.samples.length > 8000); // delay + padding
      } else {
        assert.equal(cmp.lag, 0);
        assert.equal(out.samples.length, 8000);
      }
      assert.ok(
        cmp.correlation > ('lossy' in c ? 0.999 : 0.9999),
        `correlation ${cmp.correlation}`,
      );
      assert.ok(cmp.rmsError < c.maxRms, `rms error ${cmp.rmsError}`);
    });
  }

  for (const file of ['tone-44k-s24-stereo.wav', 'tone-22k-f32.wav', 'tone-8k-s24.flac']) {
    test(`resampling ${file} to 16 kHz keeps 440 Hz`, async () => {
      const { samples } = await decodeAudio(await fixture(file));
      const hz = toneFrequency(samples, 16000);
      assert.ok(Math.abs(hz - TONE_HZ) < 2, `${hz} Hz`);
    });
  }

  test('stereo is mixed down to the mean of the channels', async () => {
    const left = tone(1600, 16000, 0.6);
    const right = Float32Array.from({ length: 1600 }, (_, i) => (i % 2 ? 0.2 : -0.2));
    const out = await decodeAudio(wavBytes([left, right], 16000, 'float32'));
    assert.equal(out.sourceChannels, 2);
    for (let i = 0; i < 1600; i++) {
      const mean = ((left[i] as number) + (right[i] as number)) / 2;
      assert.ok(Math.abs((out.samples[i] as number) - mean) < 1e-6);
    }
  });

  test('a stereo MP3 counts two source channels although the decoder returns one', async () => {
    const out = await decodeAudio(await fixture('tone-44k-stereo.mp3'));
    assert.equal(out.sourceChannels, 2);
  });

  test('resampleAudio keeps length and frequency', async () => {
    const out = await resampleAudio(tone(48000, 48000), 48000, 16000);
    assert.equal(out.length, 16000);
    assert.ok(Math.abs(toneFrequency(out, 16000) - TONE_HZ) < 0.5);
    await assert.rejects(resampleAudio(out, 16000, 0), gimError('invalid_argument'));
  });

  test('resampleAudio keeps the tail of inputs over 1M samples (resampled in chunks)', async () => {
    const out = await resampleAudio(tone(1_102_500, 44100), 44100, 16000);
    assert.equal(out.length, 400_000);
    const ideal = tone(400_000, 16000);
    // Unflushed, the wrapper drops the last ~46 samples: they must be there and right.
    for (let i = out.length - 50; i < out.length - 5; i++) {
      assert.ok(Math.abs((out[i] as number) - (ideal[i] as number)) < 5e-3, `sample ${i}`);
    }
  });

  test('sniffAudioFormat reads magic bytes only', () => {
    const bytes = (s: string) => Uint8Array.from(s, (ch) => ch.charCodeAt(0));
    assert.equal(sniffAudioFormat(bytes('RIFF\0\0\0\0WAVEfmt ')), 'wav');
    assert.equal(sniffAudioFormat(bytes('fLaC\0\0\0\x22')), 'flac');
    assert.equal(sniffAudioFormat(bytes('OggS\0\x02')), 'ogg');
    assert.equal(sniffAudioFormat(bytes('ID3\x04\0\0\0\0\0\0')), 'mp3');
    assert.equal(sniffAudioFormat(bytes('\xff\xfb\x90\x64')), 'mp3');
    assert.equal(sniffAudioFormat(bytes('\xff\xf1\x50\x80')), undefined); // AAC ADTS
    assert.equal(sniffAudioFormat(bytes('\x89PNG\r\n\x1a\n')), undefined);
  });
});

describe('decodeAudio: bad input', () => {
  test('empty bytes', async () => {
    await assert.rejects(decodeAudio(new Uint8Array(0)), gimError('invalid_data', /empty/));
  });

  test('random bytes are not a format', async () => {
    const rng = new Rng(11);
    for (let k = 0; k < 5; k++) {
      const bytes = Uint8Array.from({ length: 2000 }, () => rng.int(256));
      bytes[0] = 0x42; // keep clear of an MPEG frame sync (0xFF) by chance
      await assert.rejects(decodeAudio(bytes), gimError('unsupported_media'));
    }
  });

  test('the truncated FLAC (first 30%) decodes to nothing and is refused', async () => {
    await assert.rejects(
      decodeAudio(await fixture('truncated.flac')),
      gimError('invalid_data', /truncated/),
    );
  });

  test('a FLAC cut after its first frame is refused (declared vs decoded length)', async () => {
    const bytes = await fixture('tone-16k-s16.flac');
    await assert.rejects(
      decodeAudio(bytes.subarray(0, Math.floor(bytes.length * 0.8))),
      gimError('invalid_data', /declares 8000 samples but 4096/),
    );
  });

  test('a WAV shorter than its data chunk is refused', async () => {
    const bytes = await fixture('tone-16k-s16.wav');
    await assert.rejects(
      decodeAudio(bytes.subarray(0, 9000)),
      gimError('invalid_data', /WAV is truncated/),
    );
  });

  test('NaN and Inf samples in a float WAV', async () => {
    for (const bad of [NaN, Infinity]) {
      const samples = tone(1600, 16000);
      samples[700] = bad;
      await assert.rejects(
        decodeAudio(wavBytes([samples], 16000, 'float32')),
        gimError('invalid_data', /NaN or Inf/),
      );
    }
  });

  test('too short: the message gives the minimum and what came, in samples and ms', async () => {
    const bytes = await fixture('too-short.wav');
    assert.equal((await decodeAudio(bytes)).samples.length, 160);
    await assert.rejects(
      decodeAudio(bytes, { minSamples: 1600 }),
      gimError('invalid_data', /160 samples \(10\.0 ms\).*1600 samples \(100\.0 ms\)/),
    );
  });

  for (const file of [
    'tone-16k-s16.wav',
    'tone-16k-s16.flac',
    'tone-44k-stereo.mp3',
    'tone-16k.ogg',
  ]) {
    test(`too long: ${file} with maxSeconds 0.1`, async () => {
      await assert.rejects(
        decodeAudio(await fixture(file), { maxSeconds: 0.1 }),
        gimError('too_large', /limit is 0\.1 s/),
      );
    });
  }

  test('too long is read from the WAV header, before decoding anything', async () => {
    const header = wavBytes([new Float32Array(0)], 16000, 'pcm16');
    new DataView(header.buffer).setUint32(40, 16000 * 2 * 100, true); // claims 100 s, holds none
    await assert.rejects(decodeAudio(header), gimError('too_large', /100\.00 s/));
  });

  test('an unsupported WAV encoding is unsupported_media', async () => {
    const bytes = wavBytes([tone(100, 16000)], 16000, 'pcm16');
    new DataView(bytes.buffer).setUint16(20, 2, true); // MS ADPCM
    await assert.rejects(decodeAudio(bytes), gimError('unsupported_media', /0x2/));
  });

  test('fuzz: truncated, corrupted and magic-prefixed garbage never hang or crash', async () => {
    const rng = new Rng(5);
    const inputs: Uint8Array[] = [];
    for (const file of [
      'tone-16k-s16.wav',
      'tone-44k-s24-stereo.wav',
      'tone-22k-f32.wav',
      'tone-16k-s16.flac',
      'tone-8k-s24.flac',
      'tone-44k-stereo.mp3',
      'tone-16k.ogg',
    ]) {
      const bytes = new Uint8Array(await fixture(file));
      for (const fraction of [0.002, 0.02, 0.1, 0.5, 0.97]) {
        inputs.push(bytes.slice(0, Math.max(1, Math.floor(bytes.length * fraction))));
      }
      const corrupt = bytes.slice();
      for (let i = 40; i < corrupt.length; i += 1 + rng.int(16)) corrupt[i] = rng.int(256);
      inputs.push(corrupt);
    }
    const magics = [
      'RIFF\x24\0\0\0WAVEfmt ',
      'fLaC\0\0\0\x22',
      'ID3\x03\0\0\0\0\0\x20',
      '\xff\xfb\x90\x64',
      'OggS\0\x02',
    ];
    for (const magic of magics) {
      for (let k = 0; k < 3; k++) {
        const bytes = Uint8Array.from({ length: 64 + rng.int(3000) }, () => rng.int(256));
        for (let i = 0; i < magic.length; i++) bytes[i] = magic.charCodeAt(i);
        inputs.push(bytes);
      }
    }
    const codes = new Set(['invalid_data', 'unsupported_media', 'too_large']);
    for (const [k, bytes] of inputs.entries()) {
      try {
        const out = await decodeAudio(bytes);
        // Garbage that decodes (MPEG frames are self-synchronising) must still be sound.
        assert.ok(out.samples.length > 0 && out.samples.every(Number.isFinite), `input ${k}`);
      } catch (e) {
        assert.ok(e instanceof GimError && codes.has(e.code), `input ${k}: ${String(e)}`);
      }
    }
  });
});

describe('audio adapter', () => {
  test('defaults and validation', () => {
    const cfg = defaultAudioAdapter();
    assert.deepEqual(cfg, {
      kind: 'audio',
      sampleRate: 16000,
      windowSamples: 10240,
      normalize: 'rms',
      maxSeconds: 60,
    });
    assert.throws(() => defaultAudioAdapter({ windowSamples: 0 }), gimError('invalid_argument'));
    assert.throws(
      () => validateAudioAdapter({ ...cfg, normalize: 'peak' } as unknown as AudioAdapterConfig),
      gimError('invalid_argument', /normalize/),
    );
    assert.throws(
      () => validateAudioAdapter({ ...cfg, sampleRate: 8000 } as unknown as AudioAdapterConfig),
      gimError('invalid_argument', /sampleRate/),
    );
    assert.throws(
      () => defaultAudioAdapter({ maxSeconds: 0.5 }),
      gimError('invalid_argument', /fit in maxSeconds/),
    );
  });

  test('rms normalisation: unit RMS, silence stays silent, none copies', () => {
    const x = tone(1600, 16000, 0.1);
    const y = normalizeAudio(x, { normalize: 'rms' });
    const rms = Math.sqrt(y.reduce((s, v) => s + v * v, 0) / y.length);
    assert.ok(Math.abs(rms - 1) < 1e-5);
    assert.deepEqual(
      normalizeAudio(new Float32Array(100), { normalize: 'rms' }),
      new Float32Array(100),
    );
    const hiss = Float32Array.from({ length: 1000 }, (_, i) => (i % 2 ? 1e-5 : -1e-5));
    assert.ok(Math.abs((normalizeAudio(hiss, { normalize: 'rms' })[0] as number) + 0.01) < 1e-6);
    const same = normalizeAudio(x, { normalize: 'none' });
    assert.deepEqual(same, x);
    assert.notEqual(same, x);
  });

  test('randomWindow: deterministic for a seed, in range, zero-padded when short', () => {
    const clip = Float32Array.from({ length: 1000 }, (_, i) => i + 1);
    const draw = (seed: number) => {
      const rng = new Rng(seed);
      return Array.from({ length: 50 }, () => randomWindow(clip, 100, rng));
    };
    const a = draw(3);
    assert.deepEqual(a, draw(3));
    assert.notDeepEqual(a, draw(4));
    const starts = a.map((w) => (w[0] as number) - 1);
    for (const [k, w] of a.entries()) {
      const start = starts[k] as number;
      assert.ok(start >= 0 && start <= 900);
      assert.deepEqual(w, clip.subarray(start, start + 100));
    }
    assert.ok(new Set(starts).size > 40);

    const rng = new Rng(3);
    const short = randomWindow(clip.subarray(0, 30), 100, rng);
    assert.deepEqual(Array.from(short.subarray(0, 30)), Array.from(clip.subarray(0, 30)));
    assert.ok(short.subarray(30).every((v) => v === 0));
    // One draw either way: the stream continues as if the clip had been long.
    const reference = new Rng(3);
    reference.next();
    assert.equal(rng.next(), reference.next());
    assert.throws(() => randomWindow(clip, 0, rng), gimError('invalid_argument'));
  });
});

describe('audio folder', () => {
  const adapter = defaultAudioAdapter({ windowSamples: 4000 });

  test('the LibriSpeech layout: 2 speakers, 6 utterances with chapters', async () => {
    const ds = await openAudioFolder(SPEAKERS, { adapter });
    assert.deepEqual(ds.info.classNames, ['101', '202']);
    assert.equal(ds.info.count, 6);
    assert.equal(ds.info.sampleRate, 16000);
    assert.match(ds.info.source, /^audio-folder:/);
    const u = ds.utterance(4);
    assert.equal(u.speaker, 1);
    assert.equal(u.chapter, '2002');
    assert.match(u.path, /202-2002-0002\.flac$/);
    assert.throws(() => ds.utterance(6), gimError('invalid_argument'));
  });

  test('the source records the folder as it was named: relative stays relative', async () => {
    const rel = relative(process.cwd(), SPEAKERS);
    assert.ok(!isAbsolute(rel), 'the fixture is under the working directory');
    const ds = await openAudioFolder(rel, { adapter });
    // A manifest that records it opens the same data from another checkout.
    assert.equal(ds.info.source, `audio-folder:${rel}`);
    assert.equal(dataSpecOfSource(ds.info.source), rel);
    assert.equal(
      (await openAudioFolder(SPEAKERS, { adapter })).info.source,
      `audio-folder:${SPEAKERS}`,
    );
  });

  test('readWindows: [n, window] cuts of the clips, speaker labels, new per epoch', async () => {
    const ds = await openAudioFolder(SPEAKERS, { adapter });
    const indices = [0, 3, 5, 1];
    const batch = await ds.readWindows(indices, new Rng(9), 4000);
    assert.equal(batch.n, 4);
    assert.equal(batch.samples.length, 4 * 4000);
    assert.deepEqual(Array.from(batch.labels), [0, 1, 1, 0]);

    // Same as cutting each full clip with the per-item generators, in request order.
    const rng = new Rng(9);
    const forks = indices.map(() => rng.fork());
    for (const [k, index] of indices.entries()) {
      const full = await ds.readFull(index);
      assert.ok(full.length > 12000 && full.length < 18000, `${full.length} samples`);
      const rms = Math.sqrt(full.reduce((s, v) => s + v * v, 0) / full.length);
      assert.ok(Math.abs(rms - 1) < 1e-3, `clip RMS ${rms}`); // adapter.normalize = 'rms'
      const expected = randomWindow(full, 4000, forks[k] as Rng);
      assert.deepEqual(batch.samples.subarray(k * 4000, (k + 1) * 4000), expected);
    }
    const again = await ds.readWindows(indices, new Rng(9), 4000);
    assert.deepEqual(again.samples, batch.samples);
    const nextEpoch = await ds.readWindows(indices, new Rng(10), 4000);
    assert.notDeepEqual(nextEpoch.samples, batch.samples);
  });

  test('readFull hands out copies; cacheBytes 0 still decodes', async () => {
    const ds = await openAudioFolder(SPEAKERS, { adapter, cacheBytes: 0 });
    const a = await ds.readFull(2);
    a.fill(0);
    const b = await ds.readFull(2);
    assert.ok(b.some((v) => v !== 0));
  });

  test('splitByUtterance keeps every speaker on both sides', async () => {
    const ds = await openAudioFolder(SPEAKERS, { adapter });
    for (const fraction of [0.1, 0.34, 0.9]) {
      const { train, test: held } = splitByUtterance(ds, fraction, 7);
      assert.equal(train.length + held.length, 6);
      assert.deepEqual([...train, ...held].sort(), [0, 1, 2, 3, 4, 5]);
      for (const side of [train, held]) {
        const speakers = new Set(Array.from(side, (i) => ds.utterance(i).speaker));
        assert.deepEqual([...speakers].sort(), [0, 1]);
      }
    }
    assert.deepEqual(splitByUtterance(ds, 0.34, 7), splitByUtterance(ds, 0.34, 7));
    assert.throws(() => splitByUtterance(ds, 0, 7), gimError('invalid_argument'));
  });

  test('the plain layout <speaker>/*.wav, fingerprint, and per-file errors', async () => {
    const root = join(tmp, 'plain');
    await mkdir(join(root, 'alice'), { recursive: true });
    await mkdir(join(root, 'bob'), { recursive: true });
    await copyFile(join(FIXTURES, 'tone-16k-s16.wav'), join(root, 'alice', 'a1.wav'));
    await copyFile(join(FIXTURES, 'tone-44k-stereo.mp3'), join(root, 'alice', 'a2.mp3'));
    await copyFile(join(FIXTURES, 'tone-16k.ogg'), join(root, 'bob', 'b1.ogg'));
    await writeFile(join(root, 'bob', 'notes.txt'), 'not audio');
    const ds = await openAudioFolder(root, { adapter });
    assert.deepEqual(ds.info.classNames, ['alice', 'bob']);
    assert.equal(ds.info.count, 3);
    assert.equal(ds.utterance(2).chapter, undefined);
    assert.equal(ds.utterance(2).speaker, 1);
    const batch = await ds.readWindows([2, 0], new Rng(1), 10240); // clips shorter: zero-padded
    assert.deepEqual(Array.from(batch.labels), [1, 0]);
    assert.ok(batch.samples.subarray(10240 + 8000).every((v) => v === 0));

    const fp = await ds.fingerprint();
    assert.match(fp, /^[0-9a-f]{64}$/);
    assert.equal(await (await openAudioFolder(root, { adapter })).fingerprint(), fp);
    assert.notEqual(await (await openAudioFolder(SPEAKERS, { adapter })).fingerprint(), fp);

    await writeFile(join(root, 'bob', 'b2.flac'), (await fixture('truncated.flac')).subarray(0));
    const withBad = await openAudioFolder(root, { adapter });
    assert.notEqual(await withBad.fingerprint(), fp);
    await assert.rejects(
      withBad.readWindows([3], new Rng(1), 4000),
      gimError('invalid_data', /b2\.flac: no audio decoded/),
    );
  });

  test('empty and missing roots', async () => {
    const empty = join(tmp, 'empty');
    await mkdir(empty, { recursive: true });
    await assert.rejects(openAudioFolder(empty, { adapter }), gimError('invalid_data', /speaker/));
    await assert.rejects(openAudioFolder(join(tmp, 'missing'), { adapter }), gimError('not_found'));
  });
});
