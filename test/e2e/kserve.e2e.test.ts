import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { selectBackend } from '../../src/gim/backend/index.js';
import { decodeImage } from '../../src/gim/data/decode-image.js';
import {
  type TestApp,
  bootApp,
  fixturePngs,
  maxAbsDiff,
  publishStack,
  tinyStack,
  waitReady,
} from './serve-fixtures.js';

describe('model listing (v1) and the KServe v2 protocol (e2e)', () => {
  let dir = '';
  let pngs: Buffer[];
  let pixels: Float32Array[];
  let t: TestApp;

  before(async () => {
    await selectBackend({ force: 'wasm' });
    dir = await mkdtemp(join(tmpdir(), 'gim-kserve-e2e-'));
    const models = join(dir, 'models');
    for (const [seed, labels] of [
      [1, ['latest', 'stable']],
      [2, ['latest']],
    ] as const) {
      const stack = tinyStack(seed);
      await publishStack(models, 'tiny', stack, [...labels]);
      stack.dispose();
    }
    pngs = await fixturePngs(3);
    pixels = await Promise.all(
      pngs.map((png) => decodeImage(png, { height: 28, width: 28, channels: 1 })),
    );
    t = await bootApp({ MODELS_DIR: models, MAX_ITEMS: '16' });
    await waitReady(t.server);
  });

  after(async () => {
    await t?.app.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const get = (path: string) => request(t.server).get(path);

  test('GET /v1/models, /v1/models/{name} and /v1/models/{name}/versions/{version}', async () => {
    const list = await get('/v1/models');
    assert.equal(list.status, 200);
    // A trailing slash names the same route.
    assert.deepEqual((await get('/v1/models/')).body, list.body);
    assert.deepEqual(list.body, {
      models: [
        {
          name: 'tiny',
          modality: 'image',
          versions: [1, 2],
          labels: { latest: 2, stable: 1 },
          default_version: 1,
        },
      ],
      unavailable: [],
    });
    const model = await get('/v1/models/tiny');
    assert.equal(model.status, 200);
    assert.equal(model.body.version, 1);
    assert.deepEqual(model.body.version_labels, ['stable']);
    assert.deepEqual(model.body.input, { kind: 'image', height: 28, width: 28, channels: 1 });
    assert.deepEqual(model.body.layers[0], {
      layer: 1,
      output_shape: [8, 8, 4],
      grid_shape: [6, 6],
      embedding_dim: 4,
      dims: { mean: 4, max: 4, meanstd: 8, none: 144, grid2: 36, grid3: 16 },
    });
    assert.deepEqual(
      model.body.layers.map((l: { embedding_dim: number }) => l.embedding_dim),
      [4, 8, 8],
    );
    assert.equal((await get('/v1/models/tiny/versions/latest')).body.version, 2);
    assert.equal((await get('/v1/models/tiny/versions/2')).body.version, 2);
    for (const [path, status, type] of [
      ['/v1/models/ghost', 404, 'not_found'],
      ['/v1/models/tiny/versions/9', 404, 'not_found'],
      ['/v1/models/tiny/versions/nope', 404, 'not_found'],
      ['/v1/models/Bad!Name', 400, 'invalid_argument'],
      ['/v1/models/tiny/versions/0', 400, 'invalid_argument'],
    ] as const) {
      const res = await get(path);
      assert.equal(res.status, status, `${path}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error_type, type, path);
    }
  });

  test('GET /v2/models/{name}[/versions/{v}] gives metadata; /ready tells loaded versions', async () => {
    const meta = await get('/v2/models/tiny');
    assert.equal(meta.status, 200);
    assert.deepEqual(meta.body, {
      name: 'tiny',
      versions: ['1', '2'],
      platform: 'gim-serve',
      inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 28, 28, 1] }],
      outputs: [
        { name: 'layer_1', datatype: 'FP32', shape: [-1, 4] },
        { name: 'layer_2', datatype: 'FP32', shape: [-1, 8] },
        { name: 'layer_3', datatype: 'FP32', shape: [-1, 8] },
      ],
    });
    assert.deepEqual((await get('/v2/models/tiny/versions/2')).body.outputs, meta.body.outputs);
    assert.equal((await get('/v2/models/ghost')).status, 404);
    assert.equal((await get('/v2/models/tiny/versions/7')).status, 404);
    assert.deepEqual((await get('/v2/health/live')).body, { live: true });
    assert.deepEqual((await get('/v2/models/tiny/ready')).body, { name: 'tiny', ready: true });
    // Version 2 is not preloaded (PRELOAD defaults to each stack's default version).
    const cold = await get('/v2/models/tiny/versions/2/ready');
    assert.equal(cold.status, 503);
    assert.equal(cold.body.error_type, 'backend_unavailable');
  });

  test('POST /v2/models/{name}/infer equals the v1 embeddings of the same images', async () => {
    const data = pixels.flatMap((p) => Array.from(p));
    const res = await request(t.server)
      .post('/v2/models/tiny/infer')
      .send({
        id: 'req-1',
        inputs: [{ name: 'input', shape: [3, 28, 28, 1], datatype: 'FP32', data }],
        outputs: [{ name: 'layer_3' }, { name: 'layer_2' }],
        parameters: { pooling: 'max', normalize: true },
      });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.model_name, 'tiny');
    assert.equal(res.body.model_version, '1');
    assert.equal(res.body.id, 'req-1');
    assert.deepEqual(
      res.body.outputs.map((o: { name: string; shape: number[]; datatype: string }) => [
        o.name,
        o.shape,
        o.datatype,
      ]),
      [
        ['layer_2', [3, 8], 'FP32'],
        ['layer_3', [3, 8], 'FP32'],
      ],
    );

    let v1 = request(t.server).post(
      '/v1/models/tiny/embeddings?layer=2,3&pooling=max&normalize=true',
    );
    pngs.forEach((png, i) => (v1 = v1.attach(`f${i}`, png, `f${i}.png`)));
    const v1res = await v1;
    assert.equal(v1res.status, 200);
    v1res.body.results.forEach(
      (r: { embeddings: number[][]; embedding_space_id: string }, k: number) => {
        const out = res.body.outputs[k];
        assert.ok(maxAbsDiff(out.data, r.embeddings.flat()) <= 1e-5, `layer ${k + 2}`);
        assert.equal(out.parameters.embedding_space_id, r.embedding_space_id);
      },
    );

    // Defaults: the last layer, mean pooling; nested data; a version in the path.
    const nested = pixels
      .slice(0, 1)
      .map((p) =>
        Array.from({ length: 28 }, (_, y) =>
          Array.from({ length: 28 }, (_, x) => [p[y * 28 + x]!]),
        ),
      );
    const plain = await request(t.server)
      .post('/v2/models/tiny/versions/2/infer')
      .send({ inputs: [{ name: 'input', shape: [1, 28, 28, 1], datatype: 'FP32', data: nested }] });
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.model_version, '2');
    assert.deepEqual(
      plain.body.outputs.map((o: { name: string }) => o.name),
      ['layer_3'],
    );
    assert.deepEqual(plain.body.outputs[0].shape, [1, 8]);
    assert.equal(plain.body.outputs[0].parameters.pooling, 'mean');
    assert.deepEqual((await get('/v2/models/tiny/versions/2/ready')).body.ready, true);
  });

  test('bad KServe requests get their status and error_type', async () => {
    const input = (over: Record<string, unknown> = {}) => ({
      name: 'input',
      shape: [1, 28, 28, 1],
      datatype: 'FP32',
      data: Array.from(pixels[0]!),
      ...over,
    });
    const infer = (body: unknown, path = '/v2/models/tiny/infer') =>
      request(t.server)
        .post(path)
        .send(body as object);
    const cases: [string, () => request.Test, number, string][] = [
      [
        'a wrong shape',
        () => infer({ inputs: [input({ shape: [1, 28, 28, 3] })] }),
        400,
        'invalid_argument',
      ],
      [
        'a wrong datatype',
        () => infer({ inputs: [input({ datatype: 'INT8' })] }),
        400,
        'invalid_argument',
      ],
      [
        'a wrong input name',
        () => infer({ inputs: [input({ name: 'x' })] }),
        400,
        'invalid_argument',
      ],
      [
        'too few values',
        () => infer({ inputs: [input({ data: [0.5] })] }),
        400,
        'invalid_argument',
      ],
      [
        'a pixel out of [0, 1]',
        () => infer({ inputs: [input({ data: [1.5, ...Array.from(pixels[0]!).slice(1)] })] }),
        422,
        'invalid_data',
      ],
      [
        '17 items (MAX_ITEMS 16)',
        () =>
          infer({
            inputs: [input({ shape: [17, 28, 28, 1], data: new Array(17 * 784).fill(0) })],
          }),
        413,
        'too_large',
      ],
      [
        'an unknown output layer',
        () => infer({ inputs: [input()], outputs: [{ name: 'layer_9' }] }),
        404,
        'not_found',
      ],
      [
        'a bad output name',
        () => infer({ inputs: [input()], outputs: [{ name: 'emb' }] }),
        400,
        'invalid_argument',
      ],
      [
        'outputs and parameters.layer',
        () =>
          infer({ inputs: [input()], outputs: [{ name: 'layer_1' }], parameters: { layer: 2 } }),
        400,
        'invalid_argument',
      ],
      [
        'pooling=foo',
        () => infer({ inputs: [input()], parameters: { pooling: 'foo' } }),
        400,
        'invalid_argument',
      ],
      ['no inputs', () => infer({ inputs: [] }), 400, 'invalid_argument'],
      [
        'an unknown model',
        () => infer({ inputs: [input()] }, '/v2/models/ghost/infer'),
        404,
        'not_found',
      ],
      [
        'an unknown version',
        () => infer({ inputs: [input()] }, '/v2/models/tiny/versions/9/infer'),
        404,
        'not_found',
      ],
      [
        'a text body',
        () =>
          request(t.server)
            .post('/v2/models/tiny/infer')
            .set('Content-Type', 'text/plain')
            .send('x'),
        415,
        'unsupported_media',
      ],
    ];
    for (const [name, send, status, type] of cases) {
      const res = await send();
      assert.equal(res.status, status, `${name}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error_type, type, `${name}: ${res.body.error}`);
    }
  });
});
