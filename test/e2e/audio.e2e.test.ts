import assert from 'node:assert/strict';
import { gim } from '../helpers/cli.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { EmbeddingsService } from '../../src/app/embeddings/embeddings.service.js';
import { selectBackend } from '../../src/gim/backend/index.js';
import { decodeAudio } from '../../src/gim/data/decode-audio.js';
import {
  ROOT,
  type TestApp,
  bootApp,
  fixturePngs,
  maxAbsDiff,
  metric,
  publishStack,
  scrape,
  tinyAudioStack,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

const AUDIO = join(ROOT, 'test/fixtures/audio');
const EMBED = '/v1/models/voice/embeddings';
/** Receptive field of one last-conv frame for kernels 10, 8, 4, 4, 4 and strides 5, 4, 2, 2, 2. */
const MIN_SAMPLES = 465;

interface AudioResult {
  layer: number;
  dim: number;
  shape: number[];
  embedding_space_id: string;
  frames: number[];
  frame_rate_hz: number[];
  shapes?: number[][];
  embeddings: number[][] | number[][][];
}

/** A mono PCM WAV (8 or 16 bits) of `samples` in [-1, 1]. */
function wav(samples: Float32Array, rate: number, bits: 8 | 16 = 16): Buffer {
  const width = bits / 8;
  const out = Buffer.alloc(44 + samples.length * width);
  out.write('RIFF', 0, 'ascii');
  out.writeUInt32LE(36 + samples.length * width, 4);
  out.write('WAVEfmt ', 8, 'ascii');
  out.writeUInt32LE(16, 16);
  out.writeUInt16LE(1, 20); // PCM
  out.writeUInt16LE(1, 22); // mono
  out.writeUInt32LE(rate, 24);
  out.writeUInt32LE(rate * width, 28);
  out.writeUInt16LE(width, 32);
  out.writeUInt16LE(bits, 34);
  out.write('data', 36, 'ascii');
  out.writeUInt32LE(samples.length * width, 40);
  samples.forEach((v, i) => {
    if (bits === 16) out.writeInt16LE(Math.round(v * 32767), 44 + 2 * i);
    else out.writeUInt8(Math.round(128 + v * 127), 44 + i);
  });
  return out;
}

const chirp = (n: number, rate = 16000): Float32Array =>
  Float32Array.from(
    { length: n },
    (_, i) => 0.4 * Math.sin((2 * Math.PI * (200 + i / 8) * i) / rate),
  );

const flat = (v: number[] | number[][]): number[] => (v as number[]).flat();

describe('audio stacks over HTTP (e2e)', () => {
  let dir = '';
  let models = '';
  let t: TestApp;
  let flac: Buffer;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-audio-e2e-'));
    models = join(dir, 'models');
    const voice = tinyAudioStack(1);
    const tiny = tinyStack(1);
    await publishStack(models, 'voice', voice, ['latest', 'stable']);
    await publishStack(models, 'tiny', tiny, ['latest', 'stable']);
    voice.dispose();
    tiny.dispose();
    flac = await readFile(join(AUDIO, 'tone-16k-s16.flac'));
    // A request's time counts from its arrival, decoding included: the first clip starts the
    // decode pool's thread, which under swc-node on a busy 2-core machine took 4-10 s.
    t = await bootApp({
      MODELS_DIR: models,
      MAX_BATCH_DELAY_MS: '20',
      REQUEST_TIMEOUT_MS: '60000',
    });
    await waitReady(t.server);
  });

  after(async () => {
    await t?.app.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const embedRaw = (body: Buffer, type: string, query = '', path = EMBED) =>
    request(t.server).post(`${path}${query}`).set('Content-Type', type).send(body);

  test('GET /v1/models/{name} and KServe metadata describe the audio input and frame rates', async () => {
    const res = await request(t.server).get('/v1/models/voice');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.modality, 'audio');
    assert.deepEqual(res.body.input, {
      kind: 'audio',
      sample_rate: 16000,
      window_samples: 3200,
      normalize: 'rms',
      max_seconds: 60,
      min_samples: MIN_SAMPLES,
    });
    const layers = res.body.layers as {
      channels: number;
      frame_rate_hz: number;
      dims: object;
    }[];
    assert.deepEqual(
      layers.map((l) => l.frame_rate_hz),
      [3200, 800, 400, 200, 100, 100],
    );
    for (const l of layers) {
      assert.equal(l.channels, 8);
      assert.deepEqual(l.dims, { mean: 8, max: 8, meanstd: 16 });
    }

    const meta = await request(t.server).get('/v2/models/voice');
    assert.equal(meta.status, 200);
    assert.deepEqual(meta.body.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, -1] }]);
    assert.equal(meta.body.outputs.length, 6);
    assert.deepEqual(meta.body.outputs[5], { name: 'layer_6', datatype: 'FP32', shape: [-1, 8] });

    // Swagger documents the audio media types and the audio response fields.
    const docs = (await request(t.server).get('/docs-json')).body;
    const content = docs.paths['/v1/models/{name}/embeddings'].post.requestBody.content;
    for (const type of ['audio/wav', 'audio/x-wav', 'audio/flac', 'audio/mpeg', 'audio/ogg']) {
      assert.ok(content[type], `embeddings body ${type}`);
    }
    const fields = Object.keys(docs.components.schemas.LayerEmbeddingsDto.properties);
    for (const field of ['frames', 'frame_rate_hz', 'shapes']) assert.ok(fields.includes(field));
    const input = Object.keys(docs.components.schemas.InputDto.properties);
    assert.ok(input.includes('min_samples') && input.includes('normalize'));
  });

  test('an HTTP embedding equals `gim embed` of the same FLAC, pooled and as frames', async () => {
    const file = join(AUDIO, 'tone-16k-s16.flac');
    const cliArgs = (pooling: string) => [
      'embed',
      file,
      '--model',
      'voice',
      '--models-dir',
      models,
      '--layer',
      '2,last',
      '--pooling',
      pooling,
    ];
    // The two CLI runs start first and overlap the HTTP requests (each boots tfjs).
    const cli = Promise.all([gim(cliArgs('mean')), gim(cliArgs('none'))]);
    const decodedBefore = t.app.get(EmbeddingsService).audioDecoding.completed;
    const mean = await embedRaw(flac, 'audio/flac', '?layer=2,last');
    // The clip was decoded in the audio decode pool, off the HTTP thread.
    assert.equal(t.app.get(EmbeddingsService).audioDecoding.completed, decodedBefore + 1);
    const none = await embedRaw(flac, 'audio/x-flac', '?layer=2,last&pooling=none');
    assert.equal(mean.status, 200, JSON.stringify(mean.body));
    assert.equal(none.status, 200, JSON.stringify(none.body));
    const [cliMean, cliNone] = (await cli).map((r) => JSON.parse(r.stdout));

    const frames: Record<number, number> = { 2: 399, 6: 50 }; // 8000 samples
    for (const r of mean.body.results as AudioResult[]) {
      const want = cliMean.items[0].layers[String(r.layer)];
      assert.deepEqual([r.dim, r.shape, r.frames], [8, [8], [frames[r.layer]]]);
      assert.ok(Math.abs(r.frame_rate_hz[0]! - want.frameRateHz) < 1e-9);
      assert.equal(r.frame_rate_hz[0], (16000 * frames[r.layer]!) / 8000);
      const diff = maxAbsDiff(r.embeddings[0] as number[], want.embedding);
      assert.ok(diff <= 1e-5, `mean, layer ${r.layer}: max abs diff ${diff} vs gim embed`);
      assert.equal(r.shapes, undefined);
    }
    for (const r of none.body.results as AudioResult[]) {
      const want = cliNone.items[0].layers[String(r.layer)];
      const f = frames[r.layer]!;
      assert.deepEqual([r.dim, r.shape, r.frames, r.shapes], [8, [-1, 8], [f], [[f, 8]]]);
      const seq = r.embeddings[0] as number[][];
      assert.equal(seq.length, f);
      assert.equal(want.embedding.length, f);
      const diff = maxAbsDiff(flat(seq), flat(want.embedding));
      assert.ok(diff <= 1e-5, `none, layer ${r.layer}: max abs diff ${diff} vs gim embed`);
    }
    // mean over the frames of `none` is the mean-pooled vector.
    const seq6 = (none.body.results as AudioResult[])[1]!.embeddings[0] as number[][];
    const avg = seq6[0]!.map((_, c) => seq6.reduce((s, fr) => s + fr[c]!, 0) / seq6.length);
    assert.ok(
      maxAbsDiff(avg, (mean.body.results as AudioResult[])[1]!.embeddings[0] as number[]) <= 1e-5,
    );
    // meanstd: the frames' mean then their standard deviation (2C); normalize scales all 2C.
    const sd = avg.map((m, c) =>
      Math.sqrt(seq6.reduce((s, fr) => s + (fr[c]! - m) ** 2, 0) / seq6.length),
    );
    for (const normalize of [false, true]) {
      const stats = await embedRaw(
        flac,
        'audio/flac',
        `?layer=last&pooling=meanstd&normalize=${normalize}`,
      );
      assert.equal(stats.status, 200, JSON.stringify(stats.body));
      const [r] = stats.body.results as AudioResult[];
      assert.deepEqual([r!.dim, r!.shape], [16, [16]]);
      const v = r!.embeddings[0] as number[];
      const want = [...avg, ...sd];
      const norm = normalize ? Math.hypot(...want) : 1;
      const diff = maxAbsDiff(
        v,
        want.map((x) => x / norm),
      );
      assert.ok(diff <= 1e-5, `meanstd normalize=${normalize}: max abs diff ${diff}`);
    }
  });

  test('the WAV and the FLAC of one tone embed alike; wav aliases and JSON b64 work', async () => {
    const wavBytes = await readFile(join(AUDIO, 'tone-16k-s16.wav'));
    const fromFlac = await embedRaw(flac, 'audio/flac', '?layer=all');
    assert.equal(fromFlac.status, 200, JSON.stringify(fromFlac.body));
    for (const type of ['audio/wav', 'audio/x-wav', 'audio/wave']) {
      const fromWav = await embedRaw(wavBytes, type, '?layer=all');
      assert.equal(fromWav.status, 200, `${type}: ${JSON.stringify(fromWav.body)}`);
      (fromWav.body.results as AudioResult[]).forEach((r, i) => {
        const other = (fromFlac.body.results as AudioResult[])[i]!;
        assert.equal(r.embedding_space_id, other.embedding_space_id);
        const diff = maxAbsDiff(r.embeddings[0] as number[], other.embeddings[0] as number[]);
        assert.ok(diff <= 1e-4, `${type} layer ${r.layer}: max abs diff ${diff} to the FLAC`);
      });
    }
    const json = await request(t.server)
      .post(EMBED)
      .send({ inputs: [{ b64: wavBytes.toString('base64') }], layer: 'all' });
    assert.equal(json.status, 200, JSON.stringify(json.body));
    assert.deepEqual(
      json.body.results,
      (await embedRaw(wavBytes, 'audio/wav', '?layer=all')).body.results,
    );
  });

  test('clips of different lengths in one request each equal their solo request', async () => {
    const short = wav(chirp(5600), 16000); // 5600 samples: 35 frames at layer 6
    const query = '?layer=1,last&pooling=none&normalize=true';
    const solo = [
      await embedRaw(flac, 'audio/flac', query),
      await embedRaw(short, 'audio/wav', query),
    ];
    const multi = await request(t.server)
      .post(`${EMBED}${query}`)
      .attach('a', flac, 'tone.flac')
      .attach('b', short, 'chirp.wav');
    const json = await request(t.server)
      .post(`${EMBED}${query}`)
      .send({ inputs: [{ b64: flac.toString('base64') }, { b64: short.toString('base64') }] });
    for (const res of [...solo, multi, json])
      assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const res of [multi, json]) {
      assert.equal(res.body.items, 2);
      (res.body.results as AudioResult[]).forEach((r, li) => {
        assert.deepEqual(r.frames, r.layer === 6 ? [50, 35] : [1599, 1119]);
        [0, 1].forEach((item) => {
          const alone = (solo[item]!.body.results as AudioResult[])[li]!;
          assert.deepEqual(r.shapes![item], alone.shapes![0]);
          assert.equal(r.frame_rate_hz[item], alone.frame_rate_hz[0]);
          const diff = maxAbsDiff(
            flat(r.embeddings[item] as number[][]),
            flat(alone.embeddings[0] as number[][]),
          );
          assert.ok(diff <= 1e-5, `layer ${r.layer} item ${item}: max abs diff ${diff} to solo`);
        });
      });
    }
    // normalize=true with pooling none: every frame has unit norm.
    const frame = ((multi.body.results as AudioResult[])[1]!.embeddings[1] as number[][])[7]!;
    assert.ok(Math.abs(Math.hypot(...frame) - 1) < 1e-5);
  });

  test('KServe v2 infer takes samples [n, T] in [-1, 1] and gives the v1 numbers', async () => {
    const { samples } = await decodeAudio(flac);
    const infer = (data: number[], shape: number[], parameters: object) =>
      request(t.server)
        .post('/v2/models/voice/infer')
        .send({
          inputs: [{ name: 'input', datatype: 'FP32', shape, data }],
          outputs: [{ name: 'layer_6' }],
          parameters,
        });
    const data = Array.from(samples);
    const v1 = await embedRaw(flac, 'audio/flac', '?pooling=max');
    const v2 = await infer(data, [1, samples.length], { pooling: 'max' });
    assert.equal(v2.status, 200, JSON.stringify(v2.body));
    const [out] = v2.body.outputs;
    assert.deepEqual(out.shape, [1, 8]);
    assert.equal(out.parameters.frame_rate_hz, 100);
    const v1Result = (v1.body.results as AudioResult[])[0]!;
    assert.equal(out.parameters.embedding_space_id, v1Result.embedding_space_id);
    assert.ok(maxAbsDiff(out.data, v1Result.embeddings[0] as number[]) <= 1e-5);

    const frames = await infer([...data, ...data], [2, samples.length], { pooling: 'none' });
    assert.equal(frames.status, 200, JSON.stringify(frames.body));
    assert.deepEqual(frames.body.outputs[0].shape, [2, 50, 8]);

    const tooShort = await infer(data.slice(0, 100), [1, 100], {});
    assert.equal(tooShort.status, 422, JSON.stringify(tooShort.body));
    assert.match(tooShort.body.error, /at least 465 samples/);
    const outOfRange = await infer([1.5, ...data.slice(1)], [1, samples.length], {});
    assert.equal(outOfRange.status, 422);
    const badShape = await infer(data, [1, 80, 100], {});
    assert.equal(badShape.status, 400);
  });

  test('bad audio gets its status and error_type; a modality mismatch names what the model takes', async () => {
    const cases: [string, () => Promise<request.Response>, number, string, RegExp?][] = [
      [
        'truncated FLAC',
        async () => embedRaw(await readFile(join(AUDIO, 'truncated.flac')), 'audio/flac'),
        422,
        'invalid_data',
        /item 0: .*truncated or corrupt/,
      ],
      [
        'too short',
        async () => embedRaw(await readFile(join(AUDIO, 'too-short.wav')), 'audio/wav'),
        422,
        'invalid_data',
        /160 samples.*at least 465 samples/,
      ],
      [
        'random bytes as audio/wav',
        async () =>
          embedRaw(
            Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)),
            'audio/wav',
          ),
        415,
        'unsupported_media',
        /not a supported audio format.*voice@1 is an audio stack: send WAV, FLAC/,
      ],
      [
        'over max_seconds (61 s)',
        async () => embedRaw(wav(new Float32Array(61 * 8000), 8000, 8), 'audio/wav'),
        413,
        'too_large',
        /limit is 60 s/,
      ],
      [
        'a PNG body to the audio stack',
        async () => embedRaw((await fixturePngs(1))[0]!, 'image/png'),
        415,
        'unsupported_media',
        /voice@1 is an audio stack: send WAV, FLAC, MP3 or Ogg/,
      ],
      [
        'a PNG file in a multipart body to the audio stack',
        async () =>
          request(t.server)
            .post(EMBED)
            .attach('a', (await fixturePngs(1))[0]!, 'x.png'),
        415,
        'unsupported_media',
        /item 0: .*voice@1 is an audio stack/,
      ],
      [
        'a FLAC body to the image stack',
        async () => embedRaw(flac, 'audio/flac', '', '/v1/models/tiny/embeddings'),
        415,
        'unsupported_media',
        /tiny@1 is an image stack: send PNG, JPEG/,
      ],
      [
        'pooling grid2',
        async () => embedRaw(flac, 'audio/flac', '?pooling=grid2'),
        400,
        'invalid_argument',
        /mean, max, meanstd, none/,
      ],
    ];
    for (const [name, send, status, type, message] of cases) {
      const res = await send();
      assert.equal(res.status, status, `${name}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error_type, type, `${name}: ${res.body.error}`);
      if (message) assert.match(res.body.error, message, name);
    }
  });

  test('the worker holds no more tensors after audio requests of many lengths', async () => {
    await embedRaw(flac, 'audio/flac', '?layer=all'); // every layer has run once
    const before = metric(await scrape(t.server), 'gim_tfjs_tensors');
    const lengths = [800, 1601, 4000, 8000, 12345];
    const responses = await Promise.all(
      lengths.map((n) => embedRaw(wav(chirp(n), 16000), 'audio/wav', '?layer=all&pooling=none')),
    );
    responses.forEach((res) => assert.equal(res.status, 200, JSON.stringify(res.body)));
    const after = metric(await scrape(t.server), 'gim_tfjs_tensors');
    assert.ok(before > 0);
    assert.equal(after, before);
  });
});
