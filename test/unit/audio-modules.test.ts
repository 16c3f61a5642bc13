import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import {
  AudioModule,
  type AudioConvModuleConfig,
  audioFrameCounts,
  audioModuleConfigs,
  convOutputLength,
  minimumSamples,
} from '../../src/gim/encoders/audio-modules.js';
import { infoNce, sampleNegatives, timePairs } from '../../src/gim/losses/info-nce.js';
import { Predictor } from '../../src/gim/losses/predictor.js';
import { Rng } from '../../src/gim/random.js';
import { describeEachBackend, testBackends } from '../helpers/backends.js';

const plan = await testBackends();
const configs = audioModuleConfigs(8, 8);

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

function uniform(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => 2 * rng.next() - 1);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] as number));
  return m;
}

/** max |actual - expected| ≤ tol · max |expected|. */
function assertRelClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const scale = maxAbs(expected);
  assert.ok(scale > 0, `${what}: all zero`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++)
    worst = Math.max(worst, Math.abs((actual[i] as number) - (expected[i] as number)));
  assert.ok(worst <= tol * scale, `${what}: max diff ${worst} vs max ${scale}`);
}

/**
 * A conv module in float64, as GIM.md defines it: y = relu(conv1d(pad(x), kernel, stride) + b),
 * x [B, T, Cin] and kernel [K, Cin, C] row-major; and the gradients of sum(y * r).
 */
function convReference(
  x: Float32Array,
  B: number,
  T: number,
  kernel: Float32Array,
  bias: Float32Array,
  c: AudioConvModuleConfig,
  r: Float32Array,
) {
  const { kernel: K, stride: S, padding: P, inChannels: Ci, channels: Co } = c;
  const frames = convOutputLength(T, c);
  const y = new Float64Array(B * frames * Co);
  const dKernel = new Float64Array(K * Ci * Co);
  const dBias = new Float64Array(Co);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < frames; t++)
      for (let o = 0; o < Co; o++) {
        let pre = bias[o] as number;
        for (let k = 0; k < K; k++) {
          const at = t * S + k - P;
          if (at < 0 || at >= T) continue;
          for (let i = 0; i < Ci; i++)
            pre += (x[(b * T + at) * Ci + i] as number) * (kernel[(k * Ci + i) * Co + o] as number);
        }
        const out = (b * frames + t) * Co + o;
        y[out] = Math.max(pre, 0);
        if (pre <= 0) continue;
        const g = r[out] as number;
        dBias[o] = (dBias[o] as number) + g;
        for (let k = 0; k < K; k++) {
          const at = t * S + k - P;
          if (at < 0 || at >= T) continue;
          for (let i = 0; i < Ci; i++) {
            const w = (k * Ci + i) * Co + o;
            dKernel[w] = (dKernel[w] as number) + (x[(b * T + at) * Ci + i] as number) * g;
          }
        }
      }
  return { y, dKernel, dBias };
}

describe('audio encoder geometry', () => {
  test('GIM.md geometry: 160x downsampling, 64 frames for a 10,240-sample window', () => {
    assert.deepEqual(audioFrameCounts(10240, configs), [2047, 511, 256, 129, 64, 64]);
    assert.equal(convOutputLength(20480, { kernel: 10, stride: 5, padding: 2 }), 4095);
    // The shortest clip is one receptive field of a last-conv frame: 1 + 9 + 7*5 + 3*20 + 3*40 + 3*80.
    const min = minimumSamples(configs);
    assert.equal(min, 465);
    assert.ok(audioFrameCounts(min, configs).every((f) => f >= 1));
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
});

describeEachBackend(plan, 'audio encoder modules', () => {
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

  test('a strided conv module: output and weight gradients equal a float64 reference', () => {
    // conv2 of GIM.md (kernel 8, stride 4, padding 2), on 8 channels; loss = sum(y * r).
    const c = configs[1] as AudioConvModuleConfig;
    const m = AudioModule.create(c, 41);
    const rng = new Rng(8);
    const [B, T] = [2, 64];
    const X = uniform(rng, B * T * c.inChannels);
    const x = tf.tensor4d(X, [B, 1, T, c.inChannels]);
    const frames = convOutputLength(T, c);
    const R = uniform(rng, B * frames * c.channels);
    const r = tf.tensor4d(R, [B, 1, frames, c.channels]);
    const [kernel, bias] = m.variables.map((v) => v.dataSync()) as [Float32Array, Float32Array];
    const ref = convReference(X, B, T, kernel, bias, c, R);
    const y = m.apply(x);
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(m.apply(x), r)), m.variables);
    const [dKernel, dBias] = m.variables.map((v) => grads[v.name]!.dataSync());
    assert.deepEqual(y.shape, [B, 1, frames, c.channels]);
    assertRelClose(y.dataSync(), ref.y, 1e-5, 'output');
    assertRelClose(dKernel!, ref.dKernel, 1e-5, 'kernel gradient');
    assertRelClose(dBias!, ref.dBias, 1e-5, 'bias gradient');
    tf.dispose([x, r, y, value, ...Object.values(grads)]);
    m.dispose();
  });

  test('the GRU module: weight gradients match finite differences', () => {
    // loss = sum(y * r) for a fixed random r (the GRU is smooth: central differences work).
    const c = configs[5]!;
    const m = AudioModule.create(c, 43);
    const rng = new Rng(9);
    const frames = 12;
    const x = tf.tensor4d(uniform(rng, 2 * frames * c.inChannels), [2, 1, frames, c.inChannels]);
    const r = tf.tensor4d(uniform(rng, 2 * frames * m.channels), [2, 1, frames, m.channels]);
    const loss = () => tf.sum(tf.mul(m.apply(x), r)) as tf.Scalar;
    const { value, grads } = tf.variableGrads(loss, m.variables);
    assert.equal(m.variables.length, 3, 'kernel, recurrent kernel, bias');
    const eps = 1e-2;
    for (const v of m.variables) {
      const analytic = grads[v.name]!.dataSync();
      const scale = maxAbs(analytic);
      assert.ok(scale > 0, `${v.name}: zero gradient`);
      const w = Float32Array.from(v.dataSync());
      const lossWith = (j: number, delta: number) => {
        const moved = w.slice();
        moved[j] = w[j]! + delta;
        return tf.tidy(() => {
          v.assign(tf.tensor(moved, v.shape));
          return loss().dataSync()[0] as number;
        });
      };
      for (const j of [0, Math.floor(w.length / 3), Math.floor((2 * w.length) / 3), w.length - 1]) {
        const numeric = (lossWith(j, eps) - lossWith(j, -eps)) / (2 * eps);
        assert.ok(
          Math.abs(numeric - analytic[j]!) <= 1e-3 * scale,
          `${v.name}[${j}]: numeric ${numeric} vs analytic ${analytic[j]}`,
        );
      }
      tf.tidy(() => v.assign(tf.tensor(w, v.shape)));
    }
    tf.dispose([x, r, value, ...Object.values(grads)]);
    m.dispose();
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
