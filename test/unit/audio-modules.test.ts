import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/gim/backend/index.js';
import {
  AudioModule,
  audioFrameCounts,
  audioModuleConfigs,
  convOutputLength,
  minimumSamples,
} from '../../src/gim/encoders/audio-modules.js';
import { infoNce, sampleNegatives, timePairs } from '../../src/gim/losses/info-nce.js';
import { Predictor } from '../../src/gim/losses/predictor.js';
import { Rng } from '../../src/gim/random.js';

before(async () => {
  await selectBackend();
});

function clips(b: number, samples: number, seed: number): tf.Tensor4D {
  const rng = new Rng(seed);
  // A few sines plus noise per clip: structured enough to be speech-like in scale.
  const data = new Float32Array(b * samples);
  for (let i = 0; i < b; i++) {
    const f = 100 + 50 * i;
    for (let t = 0; t < samples; t++)
      data[i * samples + t] =
        0.5 * Math.sin((2 * Math.PI * f * t) / 16000) + 0.1 * (rng.next() - 0.5);
  }
  return tf.tensor4d(data, [b, 1, samples, 1]);
}

describe('audio encoder modules', () => {
  const configs = audioModuleConfigs(8, 8);

  test('GIM.md geometry: 160x downsampling, 64 frames for a 10,240-sample window', () => {
    assert.deepEqual(audioFrameCounts(10240, configs), [2047, 511, 256, 129, 64, 64]);
    assert.equal(convOutputLength(20480, { kernel: 10, stride: 5, padding: 2 }), 4095);
    // The shortest clip is one receptive field of a last-conv frame: 1 + 9 + 7*5 + 3*20 + 3*40 + 3*80.
    const min = minimumSamples(configs);
    assert.equal(min, 465);
    assert.ok(audioFrameCounts(min, configs).every((f) => f >= 1));
  });

  test('each module output length matches the conv arithmetic for several input lengths', () => {
    const modules = configs.map((c, i) => AudioModule.create(c, 10 + i, `a${i + 1}`));
    for (const samples of [1600, 3201, 10240, 10555]) {
      const expected = audioFrameCounts(samples, configs);
      tf.tidy(() => {
        let x: tf.Tensor4D = clips(2, samples, 1);
        modules.forEach((m, i) => {
          x = m.apply(x);
          assert.deepEqual(
            x.shape,
            [2, 1, expected[i], m.channels],
            `module ${i + 1}, ${samples} samples`,
          );
        });
      });
    }
    modules.forEach((m) => m.dispose());
  });

  test('step-0 InfoNCE of every module is close to ln(11) with 10 negatives', () => {
    const modules = configs.map((c, i) => AudioModule.create(c, 20 + i, `b${i + 1}`));
    const rng = new Rng(3);
    const B = 4;
    tf.tidy(() => {
      let x: tf.Tensor4D = clips(B, 10240, 2);
      modules.forEach((m, i) => {
        const input = x;
        x = m.apply(x);
        const frames = x.shape[2];
        const z = tf.reshape(x, [B * frames, m.channels]) as tf.Tensor2D;
        // The GRU module predicts future conv5 outputs (its input) from its context c_t.
        const isGru = m.config.kind === 'audio-gru';
        const targets = isGru
          ? (tf.reshape(input, [B * frames, input.shape[3]]) as tf.Tensor2D)
          : z;
        const predictor = new Predictor(m.channels, 12, 5 + i, targets.shape[1]);
        const pairs = timePairs(B, frames, 12, rng, i < 4 ? 64 : undefined);
        const loss = infoNce(predictor.predict(z), targets, pairs, sampleNegatives(pairs, 10, rng));
        const l = loss.dataSync()[0] as number;
        assert.ok(Math.abs(l - Math.log(11)) < 0.05, `module ${i + 1}: step-0 loss ${l}`);
        predictor.dispose();
      });
    });
    modules.forEach((m) => m.dispose());
  });

  test('time pairs: frame t predicts t + k inside one clip and one window', () => {
    const p = timePairs(3, 100, 12, new Rng(1), 64);
    assert.equal(p.poolSize, 300);
    p.steps.forEach(({ context, target }, s) => {
      assert.equal(context.length, 3 * (64 - (s + 1)));
      for (let i = 0; i < context.length; i++) {
        assert.equal(target[i]! - context[i]!, s + 1);
        assert.equal(Math.floor(context[i]! / 100), Math.floor(target[i]! / 100), 'same clip');
      }
    });
  });

  test('save and load give bit-identical outputs', async () => {
    for (const c of [configs[0]!, configs[5]!]) {
      const m = AudioModule.create(c, 7);
      let saved: tf.io.ModelArtifacts | undefined;
      await m.model.save(
        tf.io.withSaveHandler(
          async (a) => (
            (saved = a),
            { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } }
          ),
        ),
      );
      const again = await AudioModule.fromArtifacts(c, saved!);
      const x =
        c.kind === 'audio-conv'
          ? clips(2, 400, 4)
          : (tf.randomNormal([2, 1, 30, c.inChannels], 0, 1, 'float32', 4) as tf.Tensor4D);
      const a = m.apply(x);
      const b = again.apply(x);
      assert.deepEqual(a.dataSync(), b.dataSync());
      tf.dispose([x, a, b]);
      m.dispose();
      again.dispose();
    }
  });
});
