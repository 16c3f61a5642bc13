import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import {
  type TestApp,
  bootApp,
  fixturePngs,
  metric,
  publishStack,
  scrape,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

const EMBED_ROUTE = '/v1/models/{name}/embeddings';

interface Operation {
  parameters?: { name: string; in: string }[];
  requestBody?: { content: Record<string, unknown> };
  responses: Record<
    string,
    {
      content?: Record<string, { schema?: { $ref?: string } }>;
      headers?: Record<string, unknown>;
    }
  >;
}

describe('OpenAPI document and Prometheus metrics (e2e)', () => {
  let dir = '';
  let png: Buffer;
  let t: TestApp;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-docs-e2e-'));
    const stack = tinyStack(1);
    await publishStack(join(dir, 'models'), 'tiny', stack, ['latest']);
    stack.dispose();
    [png] = (await fixturePngs(1)) as [Buffer];
    t = await bootApp({ MODELS_DIR: join(dir, 'models'), MAX_BODY_BYTES: '4096' });
    await waitReady(t.server);
  });

  after(async () => {
    await t?.app.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const embed = (query = '') =>
    request(t.server)
      .post(`/v1/models/tiny/embeddings${query}`)
      .set('Content-Type', 'image/png')
      .send(png);

  test('/docs-json documents every route, its body, parameters and error responses', async () => {
    const res = await request(t.server).get('/docs-json');
    assert.equal(res.status, 200);
    const paths = res.body.paths as Record<string, Record<string, Operation>>;

    // Every route Nest mapped is in the document, with its method.
    const mapped = t.routes;
    assert.ok(mapped.length >= 15, `routes: ${mapped.join(', ')}`);
    const documented = Object.entries(paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m} ${p}`),
    );
    assert.deepEqual([...mapped].sort(), [...documented].sort());

    // Every operation documents error responses with the {error, error_type, details?} schema.
    const errorSchema = res.body.components.schemas.ErrorBodyDto;
    assert.deepEqual(Object.keys(errorSchema.properties).sort(), [
      'details',
      'error',
      'error_type',
    ]);
    assert.deepEqual([...errorSchema.required].sort(), ['error', 'error_type']);
    for (const [path, ops] of Object.entries(paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const errors = Object.entries(op.responses).filter(([status]) => Number(status) >= 400);
        assert.ok(errors.length > 0, `${method} ${path} documents no error`);
        for (const [status, response] of errors) {
          assert.equal(
            response.content?.['application/json']?.schema?.$ref,
            '#/components/schemas/ErrorBodyDto',
            `${method} ${path} ${status}`,
          );
        }
      }
    }
    const op = paths[EMBED_ROUTE]!.post!;
    for (const status of ['400', '404', '413', '415', '422', '429', '503', '504']) {
      assert.ok(op.responses[status], `embeddings documents ${status}`);
    }
    assert.ok(op.responses['429']!.headers?.['Retry-After']);
    assert.deepEqual((op.parameters ?? []).map((p) => `${p.in}:${p.name}`).sort(), [
      'path:name',
      'query:label',
      'query:layer',
      'query:normalize',
      'query:pooling',
      'query:version',
    ]);
    for (const type of ['image/png', 'image/jpeg', 'multipart/form-data', 'application/json']) {
      assert.ok(op.requestBody?.content[type], `embeddings body ${type}`);
    }
    assert.ok(paths['/v2/models/{name}/infer']!.post!.requestBody?.content['application/json']);

    const ui = await request(t.server).get('/docs');
    assert.equal(ui.status, 200);
    assert.match(ui.text, /swagger/i);
  });

  test('/metrics is Prometheus text whose counters follow the traffic', async () => {
    const before = await scrape(t.server);
    for (let i = 0; i < 3; i++) assert.equal((await embed()).status, 200);
    assert.equal((await embed('?pooling=foo')).status, 400);
    const oversized = await request(t.server)
      .post('/v1/models/tiny/embeddings')
      .set('Content-Type', 'image/png')
      .send(Buffer.alloc(5000)); // over MAX_BODY_BYTES: the body parser's 413
    assert.equal(oversized.status, 413);
    assert.equal((await request(t.server).get('/no/such/thing')).status, 404);
    assert.equal((await request(t.server).get('/v1/models/tiny')).status, 200);
    const after = await scrape(t.server);

    const delta = (name: string, labels: Record<string, string> = {}) =>
      metric(after, name, labels) - metric(before, name, labels);
    assert.equal(delta('gim_requests_total', { route: EMBED_ROUTE, code: '200' }), 3);
    assert.equal(delta('gim_requests_total', { route: EMBED_ROUTE, code: '400' }), 1);
    assert.equal(delta('gim_requests_total', { route: EMBED_ROUTE, code: '413' }), 1);
    assert.equal(delta('gim_requests_total', { route: 'unmatched', code: '404' }), 1);
    assert.equal(delta('gim_requests_total', { route: '/v1/models/{name}', code: '200' }), 1);
    assert.equal(delta('gim_request_duration_seconds_count', { route: EMBED_ROUTE }), 5);
    assert.equal(delta('gim_items_total', { model: 'tiny', version: '1' }), 3);
    assert.equal(delta('gim_batches_total', { model: 'tiny', version: '1' }), 3);
    assert.equal(delta('gim_batch_size_count', { model: 'tiny' }), 3);
    assert.equal(delta('gim_queue_duration_seconds_count', { model: 'tiny' }), 3);
    assert.equal(delta('gim_compute_duration_seconds_count', { model: 'tiny' }), 3);
    assert.equal(metric(after, 'gim_queue_depth', { model: 'tiny' }), 0);
    // Every embedding request has been answered; the scrape itself is in flight as it renders.
    assert.equal(metric(after, 'gim_requests_in_flight', { route: EMBED_ROUTE }), 0);
    assert.equal(metric(after, 'gim_requests_in_flight', { route: '/metrics' }), 1);
    assert.equal(metric(after, 'gim_backend_info', { backend: 'wasm' }), 1);
    assert.ok(metric(after, 'gim_tfjs_tensors') > 0);
    assert.ok(metric(after, 'gim_tfjs_bytes') > 0);
    assert.ok(after.some((s) => s.name === 'process_cpu_user_seconds_total'));
    assert.ok(
      after.some((s) => s.name === 'gim_rejected_total' && s.labels.reason === 'overloaded'),
    );
    // Route labels are patterns: no raw URL leaks into them.
    const routes = new Set(
      after.filter((s) => s.name === 'gim_requests_total').map((s) => s.labels.route),
    );
    assert.ok([...routes].every((r) => r === 'unmatched' || r!.startsWith('/')));
    assert.ok(![...routes].some((r) => r!.includes('tiny') || r!.includes('such')));
  });

  test('tensors in the inference worker do not grow across requests', async () => {
    const kserve = {
      inputs: [
        {
          name: 'input',
          shape: [2, 28, 28, 1],
          datatype: 'FP32',
          data: new Array(1568).fill(0),
        },
      ],
      outputs: [{ name: 'layer_1' }, { name: 'layer_3' }],
    };
    // Once, so anything a first call allocates for good is there before counting.
    await embed('?layer=all');
    const tensors = async () => metric(await scrape(t.server), 'gim_tfjs_tensors');
    const before = await tensors();
    const statuses = await Promise.all([
      ...Array.from({ length: 12 }, (_, i) =>
        embed(`?layer=${(i % 3) + 1}&pooling=${['mean', 'none', 'grid2'][i % 3]}`).then(
          (r) => r.status,
        ),
      ),
      request(t.server)
        .post('/v2/models/tiny/infer')
        .send(kserve)
        .then((r) => r.status),
      embed('?layer=4').then((r) => r.status),
    ]);
    assert.deepEqual(statuses, [...new Array(13).fill(200), 404]);
    assert.equal(await tensors(), before);
  });
});
