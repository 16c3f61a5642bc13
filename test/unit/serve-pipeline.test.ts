import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type EmbedGrids, embeddingBatchRun } from '../../src/app/inference/embedding-batch.js';
import { parseEmbedOptions, resolveLayers } from '../../src/app/embeddings/embedding-options.js';
import { RouteTable } from '../../src/app/metrics/route-table.js';
import type { BatchContext } from '../../src/gim/batching/batcher.js';
import { GimError } from '../../src/gim/errors.js';

describe('embeddingBatchRun', () => {
  test('one call with the union of layers; each item gets its own slices of its own layers', async () => {
    const calls: { n: number; layers: number[]; input: number[] }[] = [];
    // A fake worker: grid [n, 1, 2, 1] per layer, value = 100 * layer + 10 * item + cell.
    const embed: EmbedGrids = async (input, n, layers) => {
      calls.push({ n, layers, input: Array.from(input) });
      const grids = new Map(
        layers.map((layer) => [
          layer,
          {
            data: Float32Array.from(
              { length: n * 2 },
              (_, i) => 100 * layer + 10 * Math.floor(i / 2) + (i % 2),
            ),
            shape: { n, rows: 1, cols: 2, channels: 1 },
          },
        ]),
      );
      return { grids };
    };
    const run = embeddingBatchRun(embed);
    const out = await run([
      { input: Float32Array.of(1, 2), layers: [3] },
      { input: Float32Array.of(3, 4), layers: [1, 3] },
    ]);
    assert.deepEqual(calls, [{ n: 2, layers: [1, 3], input: [1, 2, 3, 4] }]);
    const [a, b] = out as Map<number, { data: Float32Array }>[];
    assert.deepEqual([...a!.keys()], [3]);
    assert.deepEqual(Array.from(a!.get(3)!.data), [300, 301]);
    assert.deepEqual(Array.from(b!.get(1)!.data), [110, 111]);
    assert.deepEqual(Array.from(b!.get(3)!.data), [310, 311]);
  });

  test('items of different lengths (audio clips) are never padded together: one call per length', async () => {
    const calls: { n: number; layers: number[]; input: number[] }[] = [];
    // A fake audio worker: [n, 1, frames = T / 2, 1] per layer, each frame the sum of its 2 samples.
    const embed: EmbedGrids = async (input, n, layers) => {
      calls.push({ n, layers, input: Array.from(input) });
      const frames = input.length / n / 2;
      const data = Float32Array.from(
        { length: n * frames },
        (_, i) => (input[2 * i] as number) + (input[2 * i + 1] as number),
      );
      const shape = { n, rows: 1, cols: frames, channels: 1 };
      return { grids: new Map(layers.map((layer) => [layer, { data, shape }])) };
    };
    const out = await embeddingBatchRun(embed)([
      { input: Float32Array.of(1, 2, 3, 4), layers: [2] },
      { input: Float32Array.of(5, 6), layers: [1] },
      { input: Float32Array.of(7, 8, 9, 10), layers: [1] },
    ]);
    assert.deepEqual(calls, [
      { n: 2, layers: [1, 2], input: [1, 2, 3, 4, 7, 8, 9, 10] },
      { n: 1, layers: [1], input: [5, 6] },
    ]);
    const grids = out as Map<number, { data: Float32Array; shape: { cols: number } }>[];
    assert.deepEqual(Array.from(grids[0]!.get(2)!.data), [3, 7]);
    assert.deepEqual(Array.from(grids[1]!.get(1)!.data), [11]);
    assert.equal(grids[1]!.get(1)!.shape.cols, 1);
    assert.deepEqual(Array.from(grids[2]!.get(1)!.data), [15, 19]);
  });

  test('a failing length group fails only its own items', async () => {
    const boom = new GimError('invalid_data', 'too short');
    const run = embeddingBatchRun(async (input, n, layers) => {
      if (input.length / n < 2) throw boom;
      const shape = { n, rows: 1, cols: 1, channels: 1 };
      return { grids: new Map(layers.map((l) => [l, { data: new Float32Array(n), shape }])) };
    });
    const out = await run([
      { input: new Float32Array(2), layers: [1] },
      { input: new Float32Array(1), layers: [1] },
    ]);
    assert.ok(out[0] instanceof Map);
    assert.equal(out[1], boom);
  });

  test('each pass leaves out the items nobody waits for any more, and carries the latest deadline of the rest', async () => {
    const calls: { n: number; input: number[]; deadline?: number }[] = [];
    const wanted = new Set([0, 1, 2, 3]);
    const embed: EmbedGrids = async (input, n, layers, deadline) => {
      calls.push({ n, input: Array.from(input), deadline });
      // While the first pass runs, item 1 times out and item 3's client goes away.
      wanted.delete(1);
      wanted.delete(3);
      const shape = { n, rows: 1, cols: 1, channels: 1 };
      const data = Float32Array.from({ length: n }, (_, i) => input[(i * input.length) / n]!);
      return { grids: new Map(layers.map((layer) => [layer, { data, shape }])) };
    };
    const deadlines = [100, 200, 300, 400];
    const batch: BatchContext = {
      wanted: (i) => wanted.has(i),
      deadline: (i) => deadlines[i]!,
    };
    const out = await embeddingBatchRun(embed)(
      [
        { input: Float32Array.of(1, 1), layers: [1] },
        { input: Float32Array.of(2, 2, 2), layers: [1] },
        { input: Float32Array.of(3, 3, 3), layers: [1] },
        { input: Float32Array.of(4, 4, 4, 4), layers: [1] },
      ],
      batch,
    );
    const epoch = (ms: number) => performance.timeOrigin + ms;
    assert.deepEqual(calls, [
      { n: 1, input: [1, 1], deadline: epoch(100) },
      { n: 1, input: [3, 3, 3], deadline: epoch(300) }, // item 1 left out of its pass
    ]); // no pass at all for item 3
    assert.equal((out[0] as Map<number, { data: Float32Array }>).get(1)?.data[0], 1);
    assert.equal((out[2] as Map<number, { data: Float32Array }>).get(1)?.data[0], 3);
    for (const skipped of [out[1], out[3]]) {
      assert.ok(skipped instanceof GimError && /not computed/.test(skipped.message));
    }
  });
});

describe('embedding options', () => {
  const parse = (values: Record<string, unknown>) =>
    parseEmbedOptions([{ where: 'query string', values }]);

  test('defaults and accepted forms', () => {
    assert.deepEqual(parse({}), {
      selector: undefined,
      layers: ['last'],
      pooling: 'mean',
      normalize: false,
    });
    assert.deepEqual(parse({ layer: '1,last', normalize: 'true', version: '2' }).layers, [
      1,
      'last',
    ]);
    assert.deepEqual(parse({ layer: ['3', '1'] }).layers, [3, 1]);
    assert.deepEqual(parse({ layer: [1, 'last'] }).layers, [1, 'last']);
    assert.equal(parse({ layer: 'all' }).layers, 'all');
    assert.equal(parse({ label: 'stable' }).selector, 'stable');
    assert.deepEqual(resolveLayers([3, 'last', 1], 3), [1, 3]);
    assert.deepEqual(resolveLayers('all', 2), [1, 2]);
  });

  test('bad values are invalid_argument; a missing layer is not_found', () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as GimError).code;
      }
      return 'ok';
    };
    for (const values of [
      { layer: '0' },
      { layer: '1.5' },
      { layer: '' },
      { pooling: 'foo' },
      { normalize: 'maybe' },
      { version: '0' },
      { label: 'Bad' },
      { version: '1', label: 'stable' },
      { pooling: ['mean', 'max'] },
      { nope: '1' },
    ]) {
      assert.equal(
        code(() => parse(values)),
        'invalid_argument',
        JSON.stringify(values),
      );
    }
    assert.equal(
      code(() =>
        parseEmbedOptions([
          { where: 'query string', values: { layer: '1' } },
          { where: 'body', values: { layer: 2 } },
        ]),
      ),
      'invalid_argument',
    );
    assert.equal(
      code(() => resolveLayers([4], 3)),
      'not_found',
    );
  });
});

describe('RouteTable', () => {
  test('matches patterns, literal segments first; anything else is unmatched', () => {
    const table = RouteTable.fromOpenApi({
      '/v2/models/{name}': { get: {} },
      '/v2/models/{name}/ready': { get: {} },
      '/v2/health/ready': { get: {} },
      '/v1/models/{name}/embeddings': { post: {} },
    });
    assert.equal(table.match('GET', '/v2/models/tiny'), '/v2/models/{name}');
    assert.equal(table.match('HEAD', '/v2/models/tiny/'), '/v2/models/{name}');
    assert.equal(table.match('GET', '/v2/models/tiny/ready'), '/v2/models/{name}/ready');
    assert.equal(table.match('POST', '/v1/models/x/embeddings'), '/v1/models/{name}/embeddings');
    assert.equal(table.match('GET', '/v1/models/x/embeddings'), undefined);
    assert.equal(table.match('GET', '/v2/models/a/b/c'), undefined);
  });
});
