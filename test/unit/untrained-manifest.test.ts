import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { checkStackManifest } from '../../src/gim/store/manifest-schema.js';
import { isUntrained } from '../../src/gim/store/manifest.js';
import { resolveTrainConfig } from '../../src/gim/training/config.js';
import { gimError } from '../helpers/gim-error.js';

const throwsWith = (f: () => unknown, code: 'invalid_data' | 'invalid_argument', re: RegExp) =>
  assert.throws(f, gimError(code, re));

const SHIPPED = new URL('../../models/fashion-gim/1/manifest.json', import.meta.url);

describe('untrained versions (train --epochs 0) in the manifest', () => {
  test('a trained manifest without the field stays valid and reads as trained', async () => {
    const shipped = JSON.parse(await readFile(SHIPPED, 'utf8')) as Record<string, unknown>;
    const m = checkStackManifest(shipped, 'shipped');
    assert.equal(m.training.untrained, undefined);
    assert.equal(isUntrained(m), false);
  });

  test('untrained: true needs epochs and steps 0, no final losses and no parent', async () => {
    const shipped = JSON.parse(await readFile(SHIPPED, 'utf8')) as {
      training: Record<string, unknown>;
      modules: Record<string, unknown>[];
    };
    const untrained = {
      ...shipped,
      training: { ...shipped.training, epochs: 0, steps: 0, untrained: true },
      modules: shipped.modules.map((m) => ({ ...m, finalLoss: null })),
    };
    assert.equal(isUntrained(checkStackManifest(untrained, 'm.json')), true);

    const bad = (patch: (m: typeof untrained) => unknown, message: RegExp) =>
      throwsWith(
        () => checkStackManifest(patch(structuredClone(untrained)), 'm.json'),
        'invalid_data',
        message,
      );
    bad((m) => ({ ...m, training: { ...m.training, untrained: false } }), /untrained must be true/);
    bad((m) => ({ ...m, training: { ...m.training, epochs: 3 } }), /epochs and steps must be 0/);
    bad((m) => ({ ...m, training: { ...m.training, steps: 10 } }), /epochs and steps must be 0/);
    bad(
      (m) => ({ ...m, modules: m.modules.map((x, i) => (i === 1 ? { ...x, finalLoss: 1.5 } : x)) }),
      /finalLoss null/,
    );
    bad((m) => ({ ...m, parent: { version: 1, fromModule: 2 } }), /no parent/);
  });

  test('a training config takes 0 epochs, not fewer', () => {
    assert.equal(resolveTrainConfig({ epochs: 0 }).epochs, 0);
    throwsWith(
      () => resolveTrainConfig({ epochs: -1 }),
      'invalid_argument',
      /epochs must be a non-negative integer/,
    );
    throwsWith(() => resolveTrainConfig({ epochs: 1.5 }), 'invalid_argument', /epochs/);
  });
});
