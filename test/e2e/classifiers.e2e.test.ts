import assert from 'node:assert/strict';
import { gim, stripesPng } from '../helpers/cli.js';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import { Rng } from '../../src/gim/random.js';
import { Lifecycle } from '../../src/app/lifecycle/lifecycle.service.js';
import {
  type TestApp,
  bootApp,
  metric,
  publishStack,
  scrape,
  tinyStack,
  until,
  waitReady,
} from './serve-fixtures.js';

const TOKEN = 'test-admin-token-0123456789';

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    });
  });
}
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
    t = await bootApp({
      MODELS_DIR: models,
      MAX_BATCH_DELAY_MS: '20',
      ADMIN_TOKEN: TOKEN,
      DATA_ROOT: dir,
    });
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

  const admin = (path: string) =>
    request(t.server).post(path).set('Authorization', `Bearer ${TOKEN}`);
  const jobCount = async (): Promise<number> => {
    const res = await request(t.server)
      .get('/admin/v1/training-jobs')
      .set('Authorization', `Bearer ${TOKEN}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return (res.body.jobs as unknown[]).length;
  };

  test('admin head training is a head job: 202 + Location, wait for it, the new head classifies', async () => {
    const route = '/admin/v1/models/tiny/classifiers';
    const body = {
      name: 'stripes-admin',
      data: 'train', // under DATA_ROOT
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

    // The request is not the job: 202 with the queued job, which goes on without it.
    const submitted = await admin(route).set('Idempotency-Key', 'head-1').send(body);
    assert.equal(submitted.status, 202, JSON.stringify(submitted.body));
    const id = submitted.body.id as string;
    assert.equal(submitted.headers.location, `/admin/v1/training-jobs/${id}`);
    assert.deepEqual(
      [submitted.body.kind, submitted.body.model, submitted.body.status],
      ['head', 'tiny', 'queued'],
    );
    assert.deepEqual(submitted.body.spec, body);
    assert.deepEqual(submitted.body.args.slice(0, 3), ['classifier', 'train', '--model=tiny']);
    assert.ok(submitted.body.args.includes(`--data=${join(dir, 'train')}`), submitted.text);

    // The same key, waiting this time: the same job, once it has finished (200), with its result.
    const done = await admin(`${route}?wait_seconds=120`)
      .set('Idempotency-Key', 'head-1')
      .send(body);
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.id, id, 'a retried request returns the same job');
    assert.equal(done.body.status, 'succeeded', JSON.stringify(done.body));
    assert.deepEqual(done.body.result.published, {
      kind: 'head',
      name: 'stripes-admin',
      version: 1,
      labels: ['latest', 'stable'],
    });
    const summary = done.body.result.summary;
    assert.deepEqual(
      [summary.model, summary.modelVersion, summary.layer, summary.pooling, summary.classes],
      ['tiny', 1, 3, 'mean', ['horizontal', 'vertical']],
    );
    assert.ok(summary.metrics.train.accuracy > 0.5, JSON.stringify(summary));
    const other = await admin(route)
      .set('Idempotency-Key', 'head-1')
      .send({ ...body, epochs: 41 });
    assert.equal(other.status, 409, JSON.stringify(other.body));
    assert.equal(other.body.error_type, 'conflict');

    const res = await request(t.server)
      .post('/v1/models/tiny/classifiers/stripes-admin/classify?top_k=2')
      .attach('a', pngs[0]!, 'a.png')
      .attach('b', pngs[1]!, 'b.png');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      [res.body.head, res.body.head_version, res.body.items, res.body.layer],
      ['stripes-admin', 1, 2, 3],
    );
    const list = await request(t.server).get('/v1/models/tiny/classifiers');
    assert.deepEqual(
      list.body.map((h: { name: string }) => h.name),
      ['stripes', 'stripes-admin'],
    );

    // The CLI's own checks fail the job, as on a terminal: a layer the stack lacks is bad input.
    const bad = await admin(`${route}?wait_seconds=120`).send({ ...body, layer: 7 });
    assert.equal(bad.status, 200, JSON.stringify(bad.body));
    assert.deepEqual([bad.body.status, bad.body.reason], ['failed', 'bad_input']);
    assert.match(bad.body.message, /layer "7" does not exist/);
  });

  test('admin layer sweep is a probe job: the table in result.summary', async () => {
    const route = '/admin/v1/models/tiny/probe';
    const body = { data: 'train', layers: 'all', pooling: ['mean', 'grid2'], epochs: 20 };
    const denied = await request(t.server).post(route).send(body);
    assert.equal(denied.status, 401);
    const res = await admin(`${route}?wait_seconds=120`).send(body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.match(res.headers.location ?? '', /^\/admin\/v1\/training-jobs\/[\w-]+$/);
    assert.deepEqual([res.body.kind, res.body.status], ['probe', 'succeeded']);
    const report = res.body.result.summary;
    assert.deepEqual([report.model, report.version], ['tiny', 1]);
    assert.deepEqual(
      report.rows.map((r: { layer: number; pooling: string }) => `${r.layer}/${r.pooling}`),
      ['1/mean', '1/grid2', '2/mean', '2/grid2', '3/mean', '3/grid2'],
    );
    const best = Math.max(...report.rows.map((r: { testAccuracy: number }) => r.testAccuracy));
    assert.equal(report.best.testAccuracy, best);
    // The job record is what the jobs API shows.
    const job = await request(t.server)
      .get(res.headers.location!)
      .set('Authorization', `Bearer ${TOKEN}`);
    assert.deepEqual(job.body.result, res.body.result);

    // Not recorded unless asked; with `record` the sweep is in the manifest and the version's
    // description, naming the dataset but no server path.
    const version = () => request(t.server).get('/v1/models/tiny/versions/1');
    assert.equal((await version()).body.probe, null);
    const recorded = await admin(`${route}?wait_seconds=120`).send({ ...body, record: true });
    assert.deepEqual([recorded.body.status, recorded.body.kind], ['succeeded', 'probe']);
    const { probe } = (await version()).body;
    const summary = recorded.body.result.summary;
    assert.deepEqual(probe.best, {
      layer: summary.best.layer,
      pooling: summary.best.pooling,
      test_accuracy: summary.best.testAccuracy,
    });
    assert.equal(probe.rows.length, 6);
    assert.deepEqual([probe.data, probe.test_data], ['train', null]);
    assert.doesNotMatch(JSON.stringify(probe), new RegExp(dir));
  });

  test('bad bodies and options of both routes: 400 invalid_argument, and no job', async () => {
    const head = '/admin/v1/models/tiny/classifiers';
    const probe = '/admin/v1/models/tiny/probe';
    const body = { name: 'x', data: 'train', layer: 1 };
    const before = await jobCount();
    const cases: [request.Test, RegExp][] = [
      [admin(head).send({ ...body, colour: 'red' }), /unknown field "spec\.colour"/],
      [admin(head).send({ name: 'x', data: 'train' }), /"spec\.layer" is required/],
      [admin(head).send({ ...body, layer: { a: 1 } }), /"spec\.layer" must be/],
      [admin(head).send([body]), /"spec" must be a JSON object/],
      // Dataset paths stay under DATA_ROOT (the route used to take any path on the server).
      [admin(head).send({ ...body, data: join(dir, 'train') }), /is an absolute path/],
      [admin(probe).send({ data: '../test' }), /leaves the data root/],
      [admin(probe).send({ data: 'missing' }), /no dataset "missing"/],
      [admin(probe).send({ data: 'train', layers: '1,2' }), /items without commas/],
      [admin(probe).send({ data: 'train', version: 1, label: 'stable' }), /either/],
      [admin('/admin/v1/models/Tiny/probe').send({ data: 'train' }), /"model" must be/],
      [admin(`${probe}?wait_seconds=601`).send({ data: 'train' }), /wait_seconds/],
      [admin(`${head}?wait_seconds=-1`).send(body), /wait_seconds/],
      [admin(head).set('Idempotency-Key', 'k'.repeat(201)).send(body), /Idempotency-Key/],
    ];
    for (const [pending, message] of cases) {
      const res = await pending;
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error_type, 'invalid_argument', res.body.error);
      assert.match(res.body.error, message);
      assert.ok(!res.body.error.includes(dir), `names the server's paths: ${res.body.error}`);
    }
    assert.equal(await jobCount(), before, 'no job was made');
  });

  test('the request is not the job: a client going away or a shutdown ends the wait, not the job', async () => {
    const models2 = join(dir, 'models-wait');
    const stack = tinyStack(1);
    await publishStack(models2, 'tiny', stack, ['latest', 'stable']);
    stack.dispose();
    const w = await bootApp({
      MODELS_DIR: models2,
      ADMIN_TOKEN: TOKEN,
      DATA_ROOT: dir,
      PRELOAD: 'none',
      JOB_STOP_GRACE_MS: '5000',
    });
    try {
      const base = await listen(w.server);
      const auth = { authorization: `Bearer ${TOKEN}` };
      const route = '/admin/v1/models/tiny/probe?wait_seconds=600';
      const body = { data: 'train', layers: [1], pooling: 'mean', epochs: 100 };
      const jobs = async (): Promise<{ id: string; status: string }[]> =>
        (await request(w.server).get('/admin/v1/training-jobs').set(auth)).body.jobs;

      // The client goes away while it waits: the job runs to its end all the same.
      const gone = new AbortController();
      const first = fetch(`${base}${route}`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: gone.signal,
      }).catch((e: unknown) => e);
      // Gone while the trainer runs (the request is waiting by then, not still submitting).
      let seen = '';
      await until(
        'the first job running',
        async () => {
          seen = (await jobs())[0]?.status ?? '';
          return !['', 'queued', 'starting'].includes(seen);
        },
        60_000,
      );
      assert.equal(seen, 'running', 'the client went away while the job ran');
      gone.abort();
      assert.ok((await first) instanceof Error, 'the client gave up');
      const [job] = await jobs();
      const done = await request(w.server)
        .get(`/admin/v1/training-jobs/${job!.id}?wait_seconds=120`)
        .set(auth);
      assert.equal(done.body.status, 'succeeded', JSON.stringify(done.body));

      // Shutdown starts while a client waits: it gets the unfinished job (202) at once, and
      // the job is handed back to the next process as every job is.
      const waiting = request(w.server)
        .post(route)
        .set(auth)
        .send(body)
        .then((res) => res);
      await until('the second job', async () => (await jobs()).length === 2, 60_000);
      w.app.get(Lifecycle).beginDrain();
      const res = await waiting;
      assert.equal(res.status, 202, JSON.stringify(res.body));
      assert.ok(
        ['queued', 'starting', 'running'].includes(res.body.status),
        JSON.stringify(res.body),
      );
    } finally {
      await w.app.close();
    }
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
