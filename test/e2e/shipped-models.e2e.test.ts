import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { loadFashionMnist } from '../../src/gim/data/idx.js';
import { bootApp, FIXTURE, fixturePngs, ROOT, type TestApp, waitReady } from './serve-fixtures.js';

/** 1 s WAV crops of utterances the `speakers` head never saw, `<speaker>-<k>.wav`. */
const DEMO_SPEAKERS = join(ROOT, 'test/fixtures/audio/demo-speakers');

interface AudioResult {
  layer: number;
  dim: number;
  frames: number[];
  frame_rate_hz: number[];
  embeddings: number[][][];
}

/**
 * What `npm start` serves out of the box: the committed `models/` (read only here). The
 * Fashion-MNIST head `clothes` classifies the fixture's test images (Fashion-MNIST test images
 * the head never saw) through the stack's `stable` version; the speech stack `speech-gim` embeds
 * a posted WAV, and its head `speakers` names the speakers of committed WAV crops it never saw.
 */
describe('the shipped models (e2e)', () => {
  let t: TestApp;
  let pngs: Buffer[];
  let truth: string[];
  const COUNT = 60;

  before(async () => {
    pngs = await fixturePngs(COUNT);
    const ds = await loadFashionMnist(FIXTURE, 'test');
    const { labels } = await ds.read(Int32Array.from({ length: COUNT }, (_, i) => i));
    truth = Array.from(labels, (l) => ds.info.classNames[l] as string);
    t = await bootApp({
      MODELS_DIR: join(ROOT, 'models'),
      PRELOAD: 'fashion-gim@stable,speech-gim@stable',
    });
    await waitReady(t.server);
  });
  after(async () => {
    await t?.app.close();
  });

  test('the clothes head of fashion-gim classifies unseen Fashion-MNIST images', async () => {
    const res = await request(t.server)
      .post('/v1/models/fashion-gim/classifiers/clothes/classify?label=stable&top_k=1')
      .send({ inputs: pngs.map((png) => ({ b64: png.toString('base64') })) });
    assert.equal(res.status, 200, res.text);
    const top = (res.body.results as { label: string }[][]).map((r) => r[0]?.label);
    const correct = top.filter((label, i) => label === truth[i]).length;
    // clothes@2 (stable) scores 89.5% on the 10,000 test images (its manifest); 60 items at that rate
    // fall below 70% with probability < 0.1%. Fixed weights and images: deterministic here.
    assert.ok(correct >= 0.7 * COUNT, `${correct} of ${COUNT} correct: ${top.join(', ')}`);
    const classes = new Set(truth);
    assert.ok(classes.size >= 8, 'the fixture covers most classes');
  });
  test('speech-gim embeds a posted WAV: every layer, sane frames, deterministic', async () => {
    const first = (await readdir(DEMO_SPEAKERS)).filter((f) => f.endsWith('.wav')).sort()[0];
    const wav = await readFile(join(DEMO_SPEAKERS, first as string)); // 1 s at 16 kHz
    const embed = () =>
      request(t.server)
        .post('/v1/models/speech-gim/embeddings?label=stable&layer=all&pooling=none')
        .set('Content-Type', 'audio/wav')
        .send(wav);
    const [a, b] = [await embed(), await embed()];
    assert.equal(a.status, 200, a.text);
    const results = a.body.results as AudioResult[];
    assert.deepEqual(
      results.map((r) => r.layer),
      [1, 2, 3, 4, 5, 6],
    );
    // 16,000 samples through strides 5, 4, 2, 2, 2: ~3200, ~800, ~400, ~200, 100 frames; the GRU
    // keeps the last conv's 100 frames (10 ms each).
    const approx = [3200, 800, 400, 200, 100, 100];
    for (const r of results) {
      const frames = r.frames[0] as number;
      const want = approx[r.layer - 1] as number;
      assert.ok(Math.abs(frames - want) <= 0.02 * want, `layer ${r.layer}: ${frames} frames`);
      assert.equal(r.dim, 64, 'speech-gim@4: 64 channels, GRU 64');
      const seq = r.embeddings[0] as number[][];
      assert.equal(seq.length, frames);
      const values = seq.flat();
      assert.ok(values.every(Number.isFinite), `layer ${r.layer}: non-finite values`);
      assert.ok(new Set(values.map((v) => v.toFixed(4))).size > 100, `layer ${r.layer}: constant`);
      assert.ok(Math.abs((r.frame_rate_hz[0] as number) - (16000 * frames) / 16000) < 1e-9);
    }
    assert.deepEqual(b.body.results, a.body.results, 'the same WAV embeds the same twice');
  });

  test('the speakers head of speech-gim names unseen WAV crops of its demo speakers', async () => {
    const files = (await readdir(DEMO_SPEAKERS)).filter((f) => f.endsWith('.wav')).sort();
    const truth = files.map((f) => f.replace(/-\d+\.wav$/, ''));
    const req = request(t.server).post(
      '/v1/models/speech-gim/classifiers/speakers/classify?label=stable&top_k=1',
    );
    for (const f of files) req.attach(f, await readFile(join(DEMO_SPEAKERS, f)), f);
    const res = await req;
    assert.equal(res.status, 200, res.text);
    const top = (res.body.results as { label: string }[][]).map((r) => r[0]?.label);
    const correct = top.filter((label, i) => label === truth[i]).length;
    // The head scores 98.75% on the 80 test crops it never saw (its manifest), these 20 among them;
    // 20 crops at that rate fall below 75% with probability < 0.3%. Fixed weights and files:
    // deterministic here.
    assert.ok(correct >= 0.75 * files.length, `${correct} of ${files.length}: ${top.join(', ')}`);
    assert.equal(new Set(truth).size, 10, 'the fixtures cover the 10 demo speakers');
  });
});
