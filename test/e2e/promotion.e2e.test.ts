import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import { Rng } from '../../src/gim/random.js';
import { readLabelMoves } from '../../src/gim/store/label-history.js';
import type { PromotionEvaluation, StackManifest } from '../../src/gim/store/manifest.js';
import { gim, stripesPng } from '../helpers/cli.js';
import {
  bootApp,
  FIXTURE,
  metric,
  publishStack,
  scrape,
  tinyStack,
  type TestApp,
  waitReady,
} from './serve-fixtures.js';

const TOKEN = 'promotion-test-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };

interface Promotion {
  promoted: boolean;
  dryRun: boolean;
  wouldPromote?: boolean;
  label: string;
  from: number | null;
  version: number;
  gate?: {
    passed: boolean;
    candidate: { version: number; accuracy: number };
    baseline: { version: number; accuracy: number } | null;
  };
  strandedHeads: {
    head: string;
    version: number;
    requiredEmbeddingSpaceId: string;
    givenEmbeddingSpaceId: string | null;
  }[];
  retrained?: { head: string; from: number; version: number; labels: string[] }[];
}

/**
 * Promotion that knows its consumers: the gate (probe accuracy of the candidate against the
 * label's current target, same data, same run), the head check before `stable` moves, heads
 * retrained and moved with the stack, through the CLI, the label routes and jobs.
 *
 * tiny@1 (stable) and tiny@2: random stacks with other weights (other embedding spaces); tiny@3
 * has all weights zero, so every image embeds to the same vector: a probe on it is at chance,
 * a version that is worse for certain. Head `stripes@1` is trained on tiny@1 layer 2.
 */
describe('promotion: gate, head check, heads moving with the stack (e2e)', () => {
  let dir = '';
  let models = '';
  let data = '';
  let t: TestApp;
  let png: Buffer;
  const gate = (extra: string[] = []) => [
    `--gate-data=${join(data, 'train')}`,
    `--gate-test-data=${join(data, 'test')}`,
    '--gate-layers=2',
    '--gate-pooling=grid2',
    '--gate-epochs=20',
    ...extra,
  ];
  const manifest = async (v: number): Promise<StackManifest> =>
    JSON.parse(await readFile(join(models, 'tiny', String(v), 'manifest.json'), 'utf8'));
  /** The promotion gates recorded in version v's manifest, oldest first. */
  const gates = async (v: number): Promise<PromotionEvaluation[]> =>
    ((await manifest(v)).evaluations ?? []).filter(
      (e): e is PromotionEvaluation => e.kind === 'promotion-gate',
    );
  const labels = async (head?: string): Promise<Record<string, number>> =>
    JSON.parse(
      await readFile(
        head === undefined
          ? join(models, 'tiny', 'labels.json')
          : join(models, 'tiny', 'classifiers', head, 'labels.json'),
        'utf8',
      ),
    );
  /** Runs `gim promote`; its exit code, stderr and the `promotion` event. */
  const promote = async (args: string[]) => {
    const events = join(dir, `events-${Math.random().toString(36).slice(2)}.ndjson`);
    let code = 0;
    let stderr: string;
    try {
      ({ stderr } = await gim([
        'promote',
        `--models-dir=${models}`,
        `--progress-json=${events}`,
        ...args,
      ]));
    } catch (e) {
      const err = e as { code: number; stderr: string };
      code = err.code;
      stderr = err.stderr;
    }
    const lines = (await readFile(events, 'utf8'))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { type: string } & Record<string, unknown>);
    const promotion = lines.find((e) => e.type === 'promotion') as unknown as Promotion | undefined;
    return { code, stderr, promotion };
  };

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-promotion-'));
    models = join(dir, 'models');
    data = join(dir, 'data');
    await publishStack(models, 'tiny', tinyStack(1), ['latest', 'stable']);
    await publishStack(models, 'tiny', tinyStack(2), ['latest']);
    const zero = tinyStack(3);
    for (const m of zero.modules)
      m.model.setWeights(m.model.getWeights().map((w) => tf.tidy(() => tf.zerosLike(w))));
    await publishStack(models, 'tiny', zero, ['latest']);
    zero.dispose();
    const rng = new Rng(11);
    for (const [c, name] of ['horizontal', 'vertical'].entries())
      for (const split of ['train', 'test']) {
        await mkdir(join(data, split, name), { recursive: true });
        for (let i = 0; i < (split === 'train' ? 16 : 8); i++)
          await stripesPng(join(data, split, name, `${i}.png`), c, rng);
      }
    await cp(FIXTURE, join(data, 'fmnist'), { recursive: true });
    [png] = [await readFile(join(data, 'test', 'vertical', '0.png'))];
    await gim([
      'classifier',
      'train',
      '--model=tiny@1',
      '--layer=2',
      '--pooling=grid2',
      `--data=${join(data, 'train')}`,
      '--name=stripes',
      '--epochs=40',
      `--models-dir=${models}`,
      '--label',
      'latest',
      'stable',
    ]);
    t = await bootApp({
      MODELS_DIR: models,
      ADMIN_TOKEN: TOKEN,
      DATA_ROOT: data,
      REF_CACHE_MS: '0',
    });
    await waitReady(t.server);
  });
  after(async () => {
    await t?.app.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the gate refuses a worse version: stable stays, the verdict is in the manifest and the history', async () => {
    const { code, promotion } = await promote(['--model=tiny@3', ...gate(), '--by=ci']);
    assert.equal(code, 0);
    assert.ok(promotion, 'a promotion event');
    assert.equal(promotion.promoted, false);
    assert.equal(promotion.gate?.passed, false);
    const { candidate, baseline } = promotion.gate ?? {};
    assert.equal(candidate?.version, 3);
    assert.equal(baseline?.version, 1);
    assert.ok(
      (candidate?.accuracy ?? 1) < (baseline?.accuracy ?? 0),
      `the all-zero stack scores below tiny@1: ${candidate?.accuracy} vs ${baseline?.accuracy}`,
    );
    assert.equal((await labels()).stable, 1);
    const evaluations = await gates(3);
    assert.equal(evaluations.length, 1);
    assert.equal(evaluations[0]?.passed, false);
    assert.equal(evaluations[0]?.candidate.accuracy, candidate?.accuracy);
    assert.equal(evaluations[0]?.baseline?.accuracy, baseline?.accuracy);
    // The gate's probe of the candidate is the version's recorded probe in the API.
    const described = await request(t.server).get('/v1/models/tiny/versions/3');
    assert.equal(described.body.probe?.best.test_accuracy, candidate?.accuracy);
    assert.equal(described.body.probe?.rows.length, evaluations[0]?.candidate.rows.length);
    const last = (await readLabelMoves(join(models, 'tiny', 'labels.history.ndjson'))).at(-1);
    assert.deepEqual(
      [last?.label, last?.from, last?.to, last?.by, last?.gate?.passed],
      ['stable', 1, 1, 'ci', false],
    );
    // A refusal moved nothing: a rollback does not treat it as a move.
    const state = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    assert.equal(state.body.history.at(-1).gate.passed, false);
  });

  test('a dry run reports the head the move would strand and moves nothing', async () => {
    const before = await readFile(join(models, 'tiny', 'labels.history.ndjson'), 'utf8');
    const { code, promotion } = await promote([
      '--model=tiny@2',
      ...gate(['--margin=-1']),
      '--dry-run',
    ]);
    assert.equal(code, 0);
    assert.equal(promotion?.dryRun, true);
    assert.equal(promotion?.gate?.passed, true, 'margin -1: the gate passes');
    assert.equal(promotion?.wouldPromote, false, 'but head stripes would be stranded');
    const [s] = promotion?.strandedHeads ?? [];
    assert.equal(s?.head, 'stripes');
    assert.equal(s?.version, 1);
    assert.match(s?.requiredEmbeddingSpaceId ?? '', /^[0-9a-f]{32}$/);
    assert.match(s?.givenEmbeddingSpaceId ?? '', /^[0-9a-f]{32}$/);
    assert.notEqual(s?.requiredEmbeddingSpaceId, s?.givenEmbeddingSpaceId);
    assert.equal((await labels()).stable, 1);
    assert.equal(await readFile(join(models, 'tiny', 'labels.history.ndjson'), 'utf8'), before);
    assert.equal((await gates(2)).at(-1)?.dryRun, true);
  });

  test('the head check: a move that would strand a head is refused, naming it and both spaces', async () => {
    const cli = await promote(['--model=tiny@2']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.match(
      cli.stderr,
      /strand head stripes@1 \(layer 2, grid2: needs space [0-9a-f]{32}, tiny@2 gives [0-9a-f]{32}\)/,
    );
    assert.equal((await labels()).stable, 1);

    const read = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const put = await request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', read.body.etag)
      .send({ version: 2 });
    assert.equal(put.status, 409, put.text);
    assert.equal(put.body.error_type, 'conflict');
    assert.match(put.body.error, /stripes@1/);
    const [s] = put.body.details.stranded_heads;
    assert.equal(s.head, 'stripes');
    assert.notEqual(s.required_embedding_space_id, s.given_embedding_space_id);
    assert.equal((await labels()).stable, 1);

    const job = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .send({ kind: 'promote', model: 'tiny', spec: { version: 2 } });
    assert.equal(job.status, 409, 'a promote job that would strand a head is refused at submit');
    assert.equal(job.body.details.stranded_heads[0].head, 'stripes');
  });

  test('retrain_heads: the head is retrained on the candidate, then stack and head move together', async () => {
    const { code, promotion, stderr } = await promote(['--model=tiny@2', '--retrain-heads']);
    assert.equal(code, 0, stderr);
    assert.equal(promotion?.promoted, true);
    assert.deepEqual(promotion?.retrained, [
      { head: 'stripes', from: 1, version: 2, labels: ['stable'] },
    ]);
    assert.equal((await labels()).stable, 2);
    assert.deepEqual(await labels('stripes'), { latest: 2, stable: 2 });
    const head: { encoder: { version: number; layer: number; pooling: string } } = JSON.parse(
      await readFile(join(models, 'tiny', 'classifiers', 'stripes', '2', 'manifest.json'), 'utf8'),
    );
    assert.deepEqual(head.encoder.version, 2);
    assert.deepEqual([head.encoder.layer, head.encoder.pooling], [2, 'grid2'], 'as recorded');

    // A head named without a version: the one that fits the stack version asked for.
    const classify = (query: string) =>
      request(t.server)
        .post(`/v1/models/tiny/classifiers/stripes/classify?${query}`)
        .set('content-type', 'image/png')
        .send(png);
    const onStable = await classify('label=stable');
    assert.equal(onStable.status, 200, onStable.text);
    assert.deepEqual([onStable.body.version, onStable.body.head_version], [2, 2]);
    const onOne = await classify('version=1');
    assert.equal(onOne.status, 200, onOne.text);
    assert.deepEqual([onOne.body.version, onOne.body.head_version], [1, 1]);

    // Rolling stable back strands nothing: stripes@1 still fits tiny@1.
    const read = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const back = await request(t.server)
      .post('/admin/v1/models/tiny/labels/stable/rollback')
      .set(auth)
      .set('if-match', read.body.etag)
      .send({ reason: 'test' });
    assert.equal(back.status, 200, back.text);
    assert.equal(back.body.labels.stable, 1);
  });

  test('strand_heads: true moves stable anyway, recorded with its reason', async () => {
    const read = await request(t.server).get('/admin/v1/models/tiny/labels').set(auth);
    const refused = await request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', read.body.etag)
      .send({ version: 3 });
    assert.equal(refused.status, 409, 'no stripes version fits the all-zero tiny@3');
    const forced = await request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', read.body.etag)
      .send({ version: 3, strand_heads: true, reason: 'incident 42' });
    assert.equal(forced.status, 200, forced.text);
    assert.equal(forced.body.labels.stable, 3);
    assert.equal(forced.body.history.at(-1).reason, 'incident 42');
    const samples = await scrape(t.server);
    const moves = (outcome: string) =>
      metric(samples, 'gim_label_moves_total', {
        model: 'tiny',
        head: '',
        label: 'stable',
        action: 'set',
        outcome,
      });
    assert.ok(moves('conflict') >= 2, 'the refused moves are counted as conflicts');
    assert.ok(moves('moved') >= 1);
    const back = await request(t.server)
      .put('/admin/v1/models/tiny/labels/stable')
      .set(auth)
      .set('if-match', forced.body.etag)
      .send({ version: 1, reason: 'undo' });
    assert.equal(back.status, 200, back.text);
  });

  test('jobs: an encoder job promotes the version it publishes (publishing -> evaluating -> succeeded)', async () => {
    const submit = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .send({
        kind: 'encoder',
        model: 'tiny',
        spec: {
          data: 'fmnist',
          parent: '1',
          from_module: 3,
          epochs: 1,
          max_steps_per_epoch: 2,
          promote: {
            label: 'candidate',
            gate: {
              data: 'train',
              test_data: 'test',
              layers: [2],
              pooling: ['grid2'],
              epochs: 20,
              margin: -1,
            },
          },
        },
      });
    assert.equal(submit.status, 202, submit.text);
    const id = submit.body.id as string;
    let job = submit.body;
    for (let i = 0; i < 5 && !['succeeded', 'failed', 'cancelled'].includes(job.status); i++)
      job = (await request(t.server).get(`/admin/v1/training-jobs/${id}?wait_seconds=60`).set(auth))
        .body;
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    const published = job.result.published.version as number;
    assert.equal(job.result.promotion.promoted, true);
    assert.equal(job.result.promotion.version, published);
    assert.equal(job.attempts.length, 2, 'training, then the promotion');
    assert.equal(job.attempts[1].resume, true);
    assert.equal((await labels()).candidate, published);
    assert.equal((await gates(published))[0]?.passed, true);
    const events = (
      await request(t.server)
        .get(`/admin/v1/training-jobs/${id}/events`)
        .set(auth)
        .set('accept', 'text/event-stream')
    ).text;
    const statuses = [...events.matchAll(/"status":"([a-z]+)"/g)].map((m) => m[1]);
    const order = ['running', 'publishing', 'evaluating', 'succeeded'].map((s) =>
      statuses.indexOf(s),
    );
    assert.ok(
      order.every((i, k) => i >= 0 && (k === 0 || i > (order[k - 1] as number))),
      statuses.join(','),
    );
    assert.match(events, /event: promotion/);
  });

  test('jobs: a promote job dry run reports its verdict; spec errors are 400s', async () => {
    const bad = await request(t.server)
      .post('/admin/v1/training-jobs/validate')
      .set(auth)
      .send({ kind: 'promote', model: 'tiny', spec: { version: 2, gate: { layers: [2] } } });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /gate\.data/);
    const outside = await request(t.server)
      .post('/admin/v1/training-jobs/validate')
      .set(auth)
      .send({ kind: 'promote', model: 'tiny', spec: { version: 2, gate: { data: '/etc' } } });
    assert.equal(outside.status, 400);
    assert.doesNotMatch(outside.body.error, /passwd/);
    const submit = await request(t.server)
      .post('/admin/v1/training-jobs')
      .set(auth)
      .send({
        kind: 'promote',
        model: 'tiny',
        spec: {
          version: 3,
          dry_run: true,
          gate: { data: 'train', test_data: 'test', layers: [2], pooling: ['grid2'], epochs: 20 },
        },
      });
    assert.equal(submit.status, 202, submit.text);
    const res = await request(t.server)
      .get(`/admin/v1/training-jobs/${submit.body.id}?wait_seconds=120`)
      .set(auth);
    assert.equal(res.body.status, 'succeeded', JSON.stringify(res.body));
    const p = res.body.result.promotion as Promotion;
    assert.deepEqual([p.dryRun, p.wouldPromote, p.gate?.passed], [true, false, false]);
    assert.match(res.body.message, /dry run: tiny@stable -> 3 would not be promoted/);
    assert.equal((await labels()).stable, 1);
  });
});
