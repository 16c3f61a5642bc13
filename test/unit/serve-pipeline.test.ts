import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type EmbedGrids, embeddingBatchRun } from '../../src/app/inference/embedding-batch.js';
import { parseEmbedOptions, resolveLayers } from '../../src/app/embeddings/embedding-options.js';
import { RouteTable } from '../../src/app/metrics/route-table.js';
import { GimError } from '../../src/gim/errors.js';

describe('embeddingBatchRun', () => {
  test('one call with the union of layers; each item gets its own slices of its own layers', async () => {
    const calls: { n: number; layers: number[]; pixels: number[] }[] = [];
    // A fake worker: grid [n, 1, 2, 1] per layer, value = 100 * layer + 10 * item + cell.
    const embed: EmbedGrids = async (pixels, n, layers) => {
      calls.push({ n, layers, pixels: Array.from(pixels) });
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
      { pixels: Float32Array.of(1, 2), layers: [3] },
      { pixels: Float32Array.of(3, 4), layers: [1, 3] },
    ]);
    assert.deepEqual(calls, [{ n: 2, layers: [1, 3], pixels: [1, 2, 3, 4] }]);
    const [a, b] = out as Map<number, { data: Float32Array }>[];
    assert.deepEqual([...a!.keys()], [3]);
    assert.deepEqual(Array.from(a!.get(3)!.data), [300, 301]);
    assert.deepEqual(Array.from(b!.get(1)!.data), [110, 111]);
    assert.deepEqual(Array.from(b!.get(3)!.data), [310, 311]);
  });

  test('items of different sizes fail the batch', async () => {
    const run = embeddingBatchRun(async () => ({ grids: new Map() }));
    await assert.rejects(
      run([
        { pixels: new Float32Array(2), layers: [1] },
        { pixels: new Float32Array(3), layers: [1] },
      ]),
      GimError,
    );
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
