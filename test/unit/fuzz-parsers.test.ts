/**
 * Property-based fuzz of the request parsers: embedding and classify options, and the KServe v2
 * body. Each either returns a well-formed result or throws a GimError of a documented code (400
 * invalid_argument, 413 too_large, 415 unsupported_media, 422 invalid_data) with a clean,
 * bounded message; nothing else escapes. Fixed seeds (test/helpers/fuzz.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  EMBED_OPTION_NAMES,
  parseEmbedOptions,
  type EmbedOptions,
  type OptionSource,
} from '../../src/app/embeddings/embedding-options.js';
import { parseClassifyOptions } from '../../src/app/classifiers/classify-options.js';
import { parseInferRequest } from '../../src/app/kserve/infer-request.js';
import type { TensorInput } from '../../src/app/embeddings/input-decoders.js';
import { POOLINGS } from '../../src/gim/encoders/pooling.js';
import { assertDocumentedError, fuzzParams, stringsIn } from '../helpers/fuzz.js';

/** Strings a client might send for an option, near-valid ones included. */
const optionText = fc.oneof(
  fc.constantFrom(
    ...['1', '3', 'last', 'all', '1,last', '2,3', ' 2', '1,,2', ',', '', '0', '-1', '1.5', '1e3'],
    ...['99999999999999999999', 'mean', 'max', 'none', 'grid2', 'grid3', 'MEAN', 'true', 'false'],
    ...[
      'stable',
      'latest',
      'Stable',
      'a'.repeat(33),
      'x'.repeat(200),
      '\u0000',
      '\u2603',
      '\ud800',
    ],
  ),
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

/** Any JSON-ish value an option may take in a body. */
const optionValue = fc.oneof(
  { weight: 4, arbitrary: optionText },
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(optionText, fc.integer()), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
);

const optionKey = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...EMBED_OPTION_NAMES, 'head_version', 'top_k') },
  fc.constantFrom('poolin', '__proto__', 'constructor', 'toString', ''),
  fc.string({ maxLength: 60 }),
);

/** One to three sources (query string, body, parameters) of option records. */
const optionSources = fc.array(
  fc.record({
    where: fc.constantFrom('query string', 'body', 'parameters'),
    // Object.fromEntries makes own properties, "__proto__" included, as JSON.parse does.
    values: fc
      .array(fc.tuple(optionKey, optionValue), { maxLength: 4 })
      .map((entries) => Object.fromEntries(entries) as Record<string, unknown>),
  }),
  { minLength: 1, maxLength: 3 },
);

/** Runs that parsed and runs that were refused, per property: a fuzzer must reach both. */
const outcomes = {
  embed: { ok: 0, refused: 0 },
  classify: { ok: 0, refused: 0 },
  'an image stack': { ok: 0, refused: 0 },
  'an audio stack': { ok: 0, refused: 0 },
};
function assertBothOutcomes(what: keyof typeof outcomes): void {
  const { ok, refused } = outcomes[what];
  const share = ok / (ok + refused);
  assert.ok(share > 0.05 && share < 0.95, `${what}: ${ok} parsed, ${refused} refused`);
}

const LABEL_OR_VERSION = /^([1-9][0-9]{0,8}|[a-z][a-z0-9_-]{0,31})$/;

function assertEmbedOptions(o: EmbedOptions): void {
  if (o.selector !== undefined) assert.match(o.selector, LABEL_OR_VERSION);
  if (o.layers !== 'all') {
    assert.ok(o.layers.length > 0);
    for (const l of o.layers) assert.ok(l === 'last' || (Number.isSafeInteger(l) && l >= 1));
  }
  assert.ok((POOLINGS as readonly string[]).includes(o.pooling));
  assert.equal(typeof o.normalize, 'boolean');
}

describe('fuzz: option parsing', () => {
  test('embedding options: a valid result or a 400 with a clean message', () => {
    fc.assert(
      fc.property(optionSources, (sources: OptionSource[]) => {
        let parsed: EmbedOptions;
        try {
          parsed = parseEmbedOptions(sources);
          outcomes.embed.ok++;
        } catch (e) {
          assertDocumentedError(e, ['invalid_argument'], stringsIn(sources));
          outcomes.embed.refused++;
          return;
        }
        assertEmbedOptions(parsed);
        for (const { values } of sources) {
          for (const key of Object.keys(values)) {
            if (values[key] !== undefined) {
              assert.ok((EMBED_OPTION_NAMES as readonly string[]).includes(key), key);
            }
          }
        }
      }),
      fuzzParams(1401, 2000),
    );
    assertBothOutcomes('embed');
  });

  test('classify options: a valid result or a 400 with a clean message', () => {
    fc.assert(
      fc.property(optionSources, (sources: OptionSource[]) => {
        let parsed;
        try {
          parsed = parseClassifyOptions(sources);
          outcomes.classify.ok++;
        } catch (e) {
          assertDocumentedError(e, ['invalid_argument'], stringsIn(sources));
          outcomes.classify.refused++;
          return;
        }
        if (parsed.selector !== undefined) assert.match(parsed.selector, LABEL_OR_VERSION);
        if (parsed.headSelector !== undefined) {
          assert.match(parsed.headSelector, LABEL_OR_VERSION);
        }
        if (parsed.topK !== undefined) assert.ok(Number.isSafeInteger(parsed.topK));
        if (parsed.topK !== undefined) assert.ok(parsed.topK >= 1);
      }),
      fuzzParams(1402, 2000),
    );
    assertBothOutcomes('classify');
  });
});

const IMAGE: TensorInput = { itemShape: [4, 3, 1], min: 0, max: 1, describe: 'pixels' };
const AUDIO: TensorInput = { itemShape: [-1], min: -1, max: 1, describe: 'samples' };
const MAX_ITEMS = 8;

/** A KServe body: mostly near-valid (each field right or wrong), sometimes anything at all. */
function inferBody(spec: TensorInput) {
  const dim = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 10 }) },
    fc.constantFrom(0, -1, 1.5, 2 ** 40, Number.MAX_SAFE_INTEGER + 2, NaN, '3', null),
  );
  const shape = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.tuple(
        dim,
        ...spec.itemShape.map((d) =>
          d < 0 ? dim : fc.oneof({ weight: 4, arbitrary: fc.constant(d) }, dim),
        ),
      ),
    },
    fc.array(dim, { maxLength: 6 }),
    fc.array(fc.integer(), { minLength: 100, maxLength: 300 }),
    fc.anything(),
  );
  const value = fc.oneof(
    { weight: 8, arbitrary: fc.double({ min: spec.min, max: spec.max, noNaN: true }) },
    fc.double(),
    fc.constantFrom('0.5', null, true, [0.5]),
  );
  const data = fc.oneof(
    { weight: 3, arbitrary: fc.array(value, { maxLength: 200 }) },
    fc.array(fc.array(value, { maxLength: 12 }), { maxLength: 20 }),
    fc.anything(),
  );
  const input = fc.record(
    {
      name: fc.oneof({ weight: 5, arbitrary: fc.constant('input') }, fc.string({ maxLength: 70 })),
      shape,
      datatype: fc.oneof(
        { weight: 5, arbitrary: fc.constant('FP32') },
        fc.constantFrom('INT8', 'fp32', ''),
      ),
      data,
    },
    { requiredKeys: [] },
  );
  const outputs = fc.oneof(
    fc.array(
      fc.record({
        name: fc.oneof(
          fc.constantFrom('layer_1', 'layer_3', 'layer_0', 'layer_99999', 'layer_x'),
          fc.string({ maxLength: 70 }),
        ),
      }),
      { maxLength: 3 },
    ),
    fc.anything(),
  );
  const body = fc.record(
    {
      id: fc.oneof(fc.string({ maxLength: 70 }), fc.integer()),
      inputs: fc.oneof(
        { weight: 5, arbitrary: fc.tuple(input) },
        fc.array(input, { maxLength: 2 }),
        fc.anything(),
      ),
      parameters: fc.oneof(
        fc.record(
          { pooling: optionValue, normalize: optionValue, layer: optionValue, label: optionValue },
          { requiredKeys: [] },
        ),
        fc.anything(),
      ),
      outputs,
      extra: fc.anything(),
    },
    { requiredKeys: ['inputs'] },
  );
  // Well-formed: n items of the item shape, values in range, flat or nested one level per item.
  const valid = fc
    .tuple(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 40 }),
      fc.boolean(),
      fc.option(fc.record({ pooling: fc.constantFrom('mean', 'max', 'grid2') }), {
        nil: undefined,
      }),
      fc.option(
        fc.constantFrom([{ name: 'layer_1' }], [{ name: 'layer_2' }, { name: 'layer_1' }]),
        {
          nil: undefined,
        },
      ),
    )
    .chain(([n, t, nested, parameters, outputs]) => {
      const item = spec.itemShape.map((d) => (d < 0 ? t : d));
      const length = item.reduce((a, b) => a * b, 1);
      return fc
        .array(fc.double({ min: spec.min, max: spec.max, noNaN: true }), {
          minLength: n * length,
          maxLength: n * length,
        })
        .map((flat) => ({
          inputs: [
            {
              name: 'input',
              shape: [n, ...item],
              datatype: 'FP32',
              data: nested
                ? Array.from({ length: n }, (_, i) => flat.slice(i * length, (i + 1) * length))
                : flat,
            },
          ],
          ...(parameters ? { parameters } : {}),
          ...(outputs ? { outputs } : {}),
        }));
    });
  return fc.oneof(
    { weight: 6, arbitrary: valid },
    { weight: 8, arbitrary: body },
    fc.anything(),
    fc.constant(Buffer.from('a=1&b=2')),
  );
}

describe('fuzz: the KServe v2 body', () => {
  for (const [what, spec, seed] of [
    ['an image stack', IMAGE, 1403],
    ['an audio stack', AUDIO, 1404],
  ] as const) {
    test(`${what}: items of the declared shape in range, or a documented error`, () => {
      fc.assert(
        fc.property(inferBody(spec), (body) => {
          let parsed;
          try {
            parsed = parseInferRequest(body, spec, MAX_ITEMS);
            outcomes[what].ok++;
          } catch (e) {
            outcomes[what].refused++;
            assertDocumentedError(
              e,
              ['invalid_argument', 'invalid_data', 'too_large', 'unsupported_media'],
              stringsIn(body),
            );
            return;
          }
          const input = (body as { inputs: { shape: number[] }[] }).inputs[0]!;
          const [n, ...item] = input.shape as [number, ...number[]];
          assert.equal(parsed.items.length, n);
          assert.ok(n >= 1 && n <= MAX_ITEMS);
          const itemLength = item.reduce((a, b) => a * b, 1);
          for (const values of parsed.items) {
            assert.equal(values.length, itemLength);
            for (const v of values) assert.ok(v >= spec.min && v <= spec.max, `${v}`);
          }
          assertEmbedOptions(parsed.options);
        }),
        fuzzParams(seed, 1500),
      );
      assertBothOutcomes(what);
    });
  }
});
