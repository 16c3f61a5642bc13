import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { AudioDecodePool } from '../../src/app/embeddings/audio-decode-pool.js';
import type { AudioInputSpec } from '../../src/app/embeddings/audio-geometry.js';
import { decodeAudio } from '../../src/gim/data/decode-audio.js';
import { GimError } from '../../src/gim/errors.js';
import { normalizeAudio } from '../../src/gim/modality/audio.js';
import { gimError } from '../helpers/gim-error.js';

const AUDIO = fileURLToPath(new URL('../fixtures/audio/', import.meta.url));
const spec: AudioInputSpec = {
  sampleRate: 16_000,
  windowSamples: 20_480,
  normalize: 'rms',
  maxSeconds: 60,
  minSamples: 465,
};
const pool = new AudioDecodePool(2);
after(() => pool.close());

describe('AudioDecodePool', () => {
  test('decodes in its threads exactly what the calling thread would', async () => {
    for (const file of ['tone-44k-stereo.mp3', 'tone-8k-s24.flac', 'tone-22k-f32.wav']) {
      const bytes = await readFile(AUDIO + file);
      const before = pool.completed;
      const pooled = await pool.decode(bytes, spec);
      assert.equal(pool.completed, before + 1, file);
      const { samples } = await decodeAudio(bytes, spec);
      assert.deepEqual(pooled, normalizeAudio(samples, spec), file);
    }
  });

  test('gives back GimErrors with their codes', async () => {
    await assert.rejects(
      pool.decode(await readFile(AUDIO + 'truncated.flac'), spec),
      gimError('invalid_data'),
    );
    await assert.rejects(
      pool.decode(await readFile(AUDIO + 'too-short.wav'), spec),
      gimError('invalid_data'),
    );
    const long = await readFile(AUDIO + 'tone-16k-s16.wav');
    await assert.rejects(pool.decode(long, { ...spec, maxSeconds: 0.1 }), gimError('too_large'));
  });

  test('a clip whose client has gone is not decoded: the signal reason comes back', async () => {
    const gone = new GimError('cancelled', 'the client closed the connection');
    const bytes = await readFile(AUDIO + 'tone-16k-s16.flac');
    await assert.rejects(pool.decode(bytes, spec, AbortSignal.abort(gone)), (e) => e === gone);
    // The pool still works afterwards.
    assert.ok((await pool.decode(bytes, spec)).length > 0);
  });
});
