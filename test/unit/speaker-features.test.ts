import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { AudioEncoderStack } from '../../src/gim/encoders/audio-stack.js';
import { audioModuleConfigs } from '../../src/gim/encoders/audio-modules.js';
import { defaultAudioAdapter } from '../../src/gim/modality/audio.js';
import {
  extractClipFeatures,
  logBandFeatures,
  pitchFeatures,
  DEFAULT_PITCH_OPTIONS,
  type ClipSet,
} from '../../src/gim/classify/audio-features.js';
import { featureKey } from '../../src/gim/classify/features.js';
import { openAudioFolder } from '../../src/gim/data/audio-folder.js';

const RATE = 16000;

function tones(freqs: number[], seconds: number): ClipSet {
  const length = Math.round(seconds * RATE);
  const samples = new Float32Array(freqs.length * length);
  freqs.forEach((f, i) => {
    for (let t = 0; t < length; t++)
      samples[i * length + t] = 0.5 * Math.sin((2 * Math.PI * f * t) / RATE);
  });
  return { samples, labels: Int32Array.from(freqs, (_, i) => i), n: freqs.length, length };
}

test('log mel band statistics: a tone peaks in its band, and a steady tone has no spread', () => {
  const set = logBandFeatures(tones([300, 3000], 0.5));
  assert.equal(set.dim, 80);
  const row = (i: number) => Array.from(set.x.subarray(i * 80, i * 80 + 40));
  const peak = (i: number) => row(i).indexOf(Math.max(...row(i)));
  // 40 mel bands over 50-8000 Hz: 300 Hz falls in band ~6, 3000 Hz in band ~27.
  assert.ok(peak(0) >= 4 && peak(0) <= 8, `300 Hz peaks in band ${peak(0)}`);
  assert.ok(peak(1) >= 24 && peak(1) <= 30, `3000 Hz peaks in band ${peak(1)}`);
  const spread = Array.from(set.x.subarray(40, 80));
  assert.ok(Math.max(...spread.slice(peak(0) - 1, peak(0) + 2)) < 0.05, 'steady near the peak');
  assert.deepEqual(Array.from(set.y), [0, 1]);
});

test('clip features: batches of equal-length clips pool each clip as it embeds alone', () => {
  tf.setBackend('cpu');
  const stack = AudioEncoderStack.create(defaultAudioAdapter(), audioModuleConfigs(8, 8), 5);
  try {
    const clips = tones([200, 450, 900, 1800, 2500], 0.25);
    const before = tf.memory().numTensors;
    const batched = extractClipFeatures(stack, clips, [2, 6], ['mean', 'max'], 2);
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
    for (let i = 0; i < clips.n; i++) {
      const alone = stack.embed(
        clips.samples.subarray(i * clips.length, (i + 1) * clips.length),
        1,
        [6],
      );
      const seq = alone.get(6) as tf.Tensor3D; // [1, frames, 8]
      const mean = Array.from(seq.mean(1).dataSync());
      const max = Array.from(seq.max(1).dataSync());
      tf.dispose([...alone.values()]);
      for (const [pooling, want] of [
        ['mean', mean],
        ['max', max],
      ] as const) {
        const set = batched.get(featureKey(6, pooling));
        assert.ok(set);
        const got = Array.from(set.x.subarray(i * 8, (i + 1) * 8));
        got.forEach((v, c) => assert.ok(Math.abs(v - (want[c] as number)) < 1e-5, pooling));
        assert.equal(set.y[i], i);
      }
    }
  } finally {
    stack.dispose();
  }
});

test('an audio folder made by data:speech carries its recipe and the command to remake it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gim-corpus-recipe-'));
  try {
    await cp(new URL('../fixtures/audio/speakers', import.meta.url).pathname, dir, {
      recursive: true,
    });
    const adapter = defaultAudioAdapter();
    assert.equal((await openAudioFolder(dir, { adapter })).info.corpus, undefined);
    const manifest = {
      generator: 'scripts/make-speech-corpus.ts',
      status: 'complete',
      settings: { speakers: 2, seed: 7, heldOutVoices: 12, voices: 'train', sampleRate: 16000 },
      tools: { 'espeak-ng': '1.51' },
    };
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
    const corpus = (await openAudioFolder(dir, { adapter })).info.corpus;
    assert.deepEqual(corpus?.settings, manifest.settings);
    assert.equal(
      corpus?.command,
      'npm run data:speech -- --out <out> --speakers 2 --seed 7 --held-out-voices 12 --voices train',
    );
    await writeFile(
      join(dir, 'manifest.json'),
      JSON.stringify({ ...manifest, status: 'incomplete' }),
    );
    assert.equal((await openAudioFolder(dir, { adapter })).info.corpus, undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Voiced-like clips: 8 harmonics of f0 with falling amplitudes, at `f0s` Hz. */
function voiced(f0s: number[], seconds: number): ClipSet {
  const length = Math.round(seconds * RATE);
  const samples = new Float32Array(f0s.length * length);
  f0s.forEach((f0, i) => {
    for (let t = 0; t < length; t++) {
      let v = 0;
      for (let h = 1; h <= 8; h++) v += Math.sin((2 * Math.PI * h * f0 * t) / RATE) / h;
      samples[i * length + t] = 0.2 * v;
    }
  });
  return { samples, labels: Int32Array.from(f0s, (_, i) => i), n: f0s.length, length };
}

test('pitch statistics: f0 of harmonic clips within 1%, no octave error, silence unvoiced', () => {
  const f0s = [75, 110, 150, 220, 330];
  const set = pitchFeatures(voiced(f0s, 0.5));
  assert.equal(set.dim, 6 + DEFAULT_PITCH_OPTIONS.bins);
  f0s.forEach((f0, i) => {
    const [mean, median, , , voicedShare, range] = Array.from(set.x.subarray(i * set.dim));
    assert.ok(
      Math.abs(Math.exp(median as number) / f0 - 1) < 0.01,
      `${f0} Hz: median ${Math.exp(median as number)}`,
    );
    assert.ok(Math.abs(Math.exp(mean as number) / f0 - 1) < 0.01, `${f0} Hz: mean`);
    assert.equal(voicedShare, 1, `${f0} Hz: every frame voiced`);
    assert.ok((range as number) < 0.01, `${f0} Hz: a steady pitch has no range`);
    const hist = Array.from(set.x.subarray(i * set.dim + 6, (i + 1) * set.dim));
    assert.ok(Math.abs(hist.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'the histogram sums to 1');
  });
  // Higher pitch, later histogram bin.
  const peakBin = (i: number) => {
    const hist = Array.from(set.x.subarray(i * set.dim + 6, (i + 1) * set.dim));
    return hist.indexOf(Math.max(...hist));
  };
  for (let i = 1; i < f0s.length; i++) assert.ok(peakBin(i) > peakBin(i - 1));

  const silence: ClipSet = {
    samples: new Float32Array(8000),
    labels: Int32Array.of(0),
    n: 1,
    length: 8000,
  };
  assert.deepEqual(Array.from(pitchFeatures(silence).x), new Array(set.dim).fill(0));
  let seed = 7;
  const noise = Float32Array.from({ length: 8000 }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  });
  const noisy = pitchFeatures({ samples: noise, labels: Int32Array.of(0), n: 1, length: 8000 });
  assert.ok((noisy.x[4] as number) < 0.1, `white noise voiced in ${noisy.x[4]} of frames`);
});
