import assert from 'node:assert/strict';
import { gim, stripesPng } from '../helpers/cli.js';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import { Rng } from '../../src/gim/random.js';
import {
  type TestApp,
  bootApp,
  metric,
  publishStack,
  scrape,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

const TOKEN = 'test-admin-token-0123456789';
const CLASSIFY = '/v1/models/tiny/classifiers/stripes/classify';

interface LabelScore {
  label: string;
  score: number;
}

function near(got: LabelScore[], want: LabelScore[], tolerance: number, what: string): void {
  assert.deepEqual(
    got.map((p) => p.label),
    want.map((p) => p.label),
    what,
  );
  got.forEach((p, i) => {
    const diff = Math.abs(p.score - want[i]!.score);
    assert.ok(diff <= tolerance, `${what} ${p.label}: |${p.score} - ${want[i]!.score}| = ${diff}`);
  });
}

describe('classifier routes (e2e)', () => {
  let dir = '';
  let models = '';
  let tests: string[] = [];
  let pngs: Buffer[] = [];
  let t: TestApp;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-classifiers-e2e-'));
    models = join(dir, 'models');
    // tiny@1 (stable) and tiny@2 (latest): other weights, so other embedding spaces.
    for (const [seed, labels] of [
      [1, ['latest', 'stable']],
      [2, ['latest']],
    ] as const) {
      const stack = tinyStack(seed);
      await publishStack(models, 'tiny', stack, [...labels]);
      stack.dispose();
    }
    const rng = new Rng(7);
    for (const [c, name] of ['horizontal', 'vertical'].entries()) {
      await mkdir(join(dir, 'train', name), { recursive: true });
      for (let i = 0; i < 12; i++) await stripesPng(join(dir, 'train', name, `${i}.png`), c, rng);
    }
    await mkdir(join(dir, 'test'));
    tests = Array.from({ length: 6 }, (_, i) => join(dir, 'test', `${i}.png`));
    for (const [i, file] of tests.entries()) await stripesPng(file, i % 2, rng);
    pngs = await Promise.all(tests.map((file) => readFile(file)));
    // As an operator would: the CLI trains and publishes stripes@1 on tiny@1 layer 2, grid2.
    await gim([
      'classifier',
      'train',
      '--model=tiny@1',
      '--layer=2',
      '--pooling=grid2',
      `--data=${join(dir, 'train')}`,
      '--name=stripes',
      '--epochs=60',
      '--val-fraction=0.25',
      `--models-dir=${models}`,
    ]);
    t = await bootApp({ MODELS_DIR: models, MAX_BATCH_DELAY_MS: '20', ADMIN_TOKEN: TOKEN });
    await waitReady(t.server);
  });

  after(async () => {
    await t?.app.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const classifyOne = (png: Buffer, query = '') =>
    request(t.server).post(`${CLASSIFY}${query}`).set('Content-Type', 'image/png').send(png);

  test('GET lists the heads and a head’s manifest with its metrics', async () => {
    const list = await request(t.server).get('/v1/models/tiny/classifiers');
    assert.equal(list.status, 200, JSON.stringify(list.body));
    assert.equal(list.body.length, 1);
    const [head] = list.body;
    assert.deepEqual([head.name, head.default_version, head.labels], ['stripes', 1, { latest: 1 }]);
    const [v] = head.versions;
    assert.deepEqual(v.encoder, { version: 1, layer: 2, pooling: 'grid2', normalize: false });
    assert.deepEqual(v.classes, ['horizontal', 'vertical']);
    assert.match(v.embedding_space_id, /^[0-9a-f]{32}$/);
    assert.ok(v.accuracy.train > 0.9 && v.accuracy.validation !== null, JSON.stringify(v));

    const one = await request(t.server).get('/v1/models/tiny/classifiers/stripes?version=1');
    assert.equal(one.status, 200);
    assert.equal(one.body.format, 'gim-head/1');
    assert.equal(one.body.encoder.embeddingSpaceId, v.embedding_space_id);
    const train = one.body.metrics.train;
    assert.deepEqual(
      train.perClass.map((c: { label: string }) => c.label),
      ['horizontal', 'vertical'],
    );
    assert.ok(['precision', 'recall'].every((k) => k in train.perClass[0]));
    assert.equal(train.confusion.length, 2);

    assert.equal((await request(t.server).get('/v1/models/nope/classifiers')).status, 404);
    const missing = await request(t.server).get('/v1/models/tiny/classifiers/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error_type, 'not_found');
  });

  test('HTTP classify gives the probabilities of `gim classify` for the same files', async () => {
    const cli = JSON.parse(
      (
        await gim([
          'classify',
          tests[0]!,
          tests[1]!,
          '--model=tiny@1',
          '--head=stripes',
          '--top-k=2',
          `--models-dir=${models}`,
        ])
      ).stdout,
    ) as { items: { predictions: LabelScore[] }[] };
    const res = await request(t.server)
      .post(`${CLASSIFY}?top_k=2`)
      .attach('a', pngs[0]!, 'a.png')
      .attach('b', pngs[1]!, 'b.png');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      [res.body.model, res.body.version, res.body.head, res.body.head_version, res.body.items],
      ['tiny', 1, 'stripes', 1, 2],
    );
    assert.deepEqual([res.body.layer, res.body.pooling], [2, 'grid2']);
    res.body.results.forEach((got: LabelScore[], i: number) =>
      near(got, cli.items[i]!.predictions, 1e-5, `item ${i}`),
    );
    assert.deepEqual(
      res.body.results.map((r: LabelScore[]) => r[0]!.label),
      ['horizontal', 'vertical'],
    );
  });

  test('an item alone, in a multipart of N and in a JSON body of N is classified the same', async () => {
    const alone: LabelScore[][] = [];
    for (const png of pngs) {
      const res = await classifyOne(png);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.items, 1);
      alone.push(res.body.results[0] as LabelScore[]);
    }
    const before = await scrape(t.server);
    let multipart = request(t.server).post(CLASSIFY);
    pngs.forEach((png, i) => (multipart = multipart.attach(`f${i}`, png, `${i}.png`)));
    const batch = await multipart;
    assert.equal(batch.status, 200, JSON.stringify(batch.body));
    const json = await request(t.server)
      .post(CLASSIFY)
      .send({ inputs: pngs.map((png) => ({ b64: png.toString('base64') })), head_version: 1 });
    assert.equal(json.status, 200, JSON.stringify(json.body));
    for (const res of [batch, json]) {
      assert.equal(res.body.items, pngs.length);
      res.body.results.forEach((got: LabelScore[], i: number) =>
        near(got, alone[i]!, 1e-6, `item ${i}`),
      );
    }
    const after = await scrape(t.server);
    const counted = (s: typeof after) =>
      metric(s, 'gim_classifications_total', { model: 'tiny', head: 'stripes' });
    assert.equal(counted(after) - counted(before), 2 * pngs.length);
  });

  test('top_k ranks the classes; the full distribution sums to 1', async () => {
    const full = await classifyOne(pngs[2]!, '?top_k=2');
    assert.equal(full.status, 200);
    const [ranked] = full.body.results as LabelScore[][];
    assert.equal(ranked!.length, 2);
    assert.ok(ranked![0]!.score >= ranked![1]!.score);
    assert.ok(Math.abs(ranked![0]!.score + ranked![1]!.score - 1) < 1e-6);
    // The default (5) and larger values are capped at the class count; 1 keeps the best.
    const capped = await classifyOne(pngs[2]!, '?top_k=50');
    assert.deepEqual(capped.body.results, full.body.results);
    assert.deepEqual((await classifyOne(pngs[2]!)).body.results, full.body.results);
    const one = await classifyOne(pngs[2]!, '?top_k=1');
    assert.deepEqual(one.body.results, [[ranked![0]]]);
  });

  test('a head bound to tiny@1 is refused for tiny@2 with a 409 conflict', async () => {
    for (const query of ['?version=2', '?label=latest']) {
      const res = await classifyOne(pngs[0]!, query);
      assert.equal(res.status, 409, JSON.stringify(res.body));
      assert.equal(res.body.error_type, 'conflict');
      assert.match(res.body.error, /head 'stripes@1' needs embedding space [0-9a-f]{32}/);
      assert.match(res.body.error, /tiny@2 gives embedding space [0-9a-f]{32}/);
    }
    const stable = await classifyOne(pngs[0]!, '?label=stable');
    assert.equal(stable.status, 200);
  });

  test('bad requests: unknown head 404, bad options 400, unsupported media 415', async () => {
    const cases: [request.Test, number, string][] = [
      [
        request(t.server)
          .post('/v1/models/tiny/classifiers/nope/classify')
          .set('Content-Type', 'image/png')
          .send(pngs[0]!),
        404,
        'not_found',
      ],
      [classifyOne(pngs[0]!, '?head_version=9'), 404, 'not_found'],
      [classifyOne(pngs[0]!, '?top_k=0'), 400, 'invalid_argument'],
      [classifyOne(pngs[0]!, '?top_k=two'), 400, 'invalid_argument'],
      [classifyOne(pngs[0]!, '?layer=2'), 400, 'invalid_argument'],
      [
        request(t.server).post(`${CLASSIFY}?top_k=1`).send({ inputs: [], top_k: 1 }),
        400,
        'invalid_argument',
      ],
      [
        request(t.server).post(CLASSIFY).set('Content-Type', 'text/plain').send('hello'),
        415,
        'unsupported_media',
      ],
      [
        request(t.server).post(CLASSIFY).set('Content-Type', 'audio/wav').send(Buffer.alloc(64)),
        415,
        'unsupported_media',
      ],
      [
        request(t.server)
          .post(CLASSIFY)
          .set('Content-Type', 'image/png')
          .send(pngs[0]!.subarray(0, pngs[0]!.length - 40)),
        422,
        'invalid_data',
      ],
    ];
    for (const [pending, status, type] of cases) {
      const res = await pending;
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.equal(res.body.error_type, type, res.body.error);
    }
  });

  test('admin training needs the bearer token; the trained head then classifies', async () => {
    const route = '/admin/v1/models/tiny/classifiers';
    const body = {
      name: 'stripes-admin',
      data: join(dir, 'train'),
      layer: 3,
      pooling: 'mean',
      epochs: 40,
      val_fraction: 0.25,
      labels: ['latest', 'stable'],
    };
    for (const auth of [undefined, 'Bearer wrong-token-0123456789', TOKEN]) {
      const req = request(t.server).post(route);
      const res = await (auth ? req.set('Authorization', auth) : req).send(body);
      assert.equal(res.status, 401, JSON.stringify(res.body));
      assert.equal(res.body.error_type, 'unauthorized');
    }
    const authed = () => request(t.server).post(route).set('Authorization', `Bearer ${TOKEN}`);
    // The CLI's own checks answer as on a terminal: a layer the stack lacks is a 404.
    const bad = await authed().send({ ...body, layer: 7 });
    assert.equal(bad.status, 404, JSON.stringify(bad.body));
    assert.match(bad.body.error, /layer "7" does not exist/);
    const badData = await authed().send({ ...body, data: join(dir, 'missing') });
    assert.ok([400, 404].includes(badData.status), JSON.stringify(badData.body));
    const unknown = await authed().send({ ...body, colour: 'red' });
    assert.equal(unknown.status, 400);

    const trained = await authed().send(body);
    assert.equal(trained.status, 201, JSON.stringify(trained.body));
    assert.deepEqual(
      [trained.body.name, trained.body.version, trained.body.encoder.layer],
      ['stripes-admin', 1, 3],
    );
    const res = await request(t.server)
      .post('/v1/models/tiny/classifiers/stripes-admin/classify?top_k=2')
      .attach('a', pngs[0]!, 'a.png')
      .attach('b', pngs[1]!, 'b.png');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      [res.body.head, res.body.head_version, res.body.items],
      ['stripes-admin', 1, 2],
    );
    const list = await request(t.server).get('/v1/models/tiny/classifiers');
    assert.deepEqual(
      list.body.map((h: { name: string }) => h.name),
      ['stripes', 'stripes-admin'],
    );
  });

  test('admin layer sweep: one probe per layer, the best one, behind the token', async () => {
    const route = '/admin/v1/models/tiny/probe';
    const body = {
      data: join(dir, 'train'),
      layers: 'all',
      pooling: ['mean', 'grid2'],
      epochs: 20,
    };
    const denied = await request(t.server).post(route).send(body);
    assert.equal(denied.status, 401);
    const res = await request(t.server)
      .post(route)
      .set('Authorization', `Bearer ${TOKEN}`)
      .send(body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.model, 'tiny');
    assert.deepEqual(
      res.body.rows.map((r: { layer: number; pooling: string }) => `${r.layer}/${r.pooling}`),
      ['1/mean', '1/grid2', '2/mean', '2/grid2', '3/mean', '3/grid2'],
    );
    const best = Math.max(...res.body.rows.map((r: { testAccuracy: number }) => r.testAccuracy));
    assert.equal(res.body.best.testAccuracy, best);
    const bad = await request(t.server)
      .post(route)
      .set('Authorization', `Bearer ${TOKEN}`)
      .send({ ...body, layers: '9' });
    assert.equal(bad.status, 404, JSON.stringify(bad.body));
  });

  test('without ADMIN_TOKEN the admin routes answer 404', async () => {
    const off = await bootApp({ MODELS_DIR: models, PRELOAD: 'none' });
    try {
      const res = await request(off.server)
        .post('/admin/v1/models/tiny/classifiers')
        .set('Authorization', `Bearer ${TOKEN}`)
        .send({ name: 'x', data: 'y', layer: 1 });
      assert.equal(res.status, 404, JSON.stringify(res.body));
      assert.equal(res.body.error_type, 'not_found');
    } finally {
      await off.app.close();
    }
  });
});
