import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type LabelMove, previousTarget } from '../../src/gim/store/label-history.js';

const move = (
  label: string,
  from: number | null,
  to: number | null,
  gate?: boolean,
): LabelMove => ({
  at: '2026-12-07T00:00:00.000Z',
  by: 'test',
  label,
  from,
  to,
  ...(gate === undefined ? {} : { gate: { passed: gate } }),
});

test('rollback skips the refusals a gate recorded (they moved nothing)', () => {
  const history = [
    move('stable', null, 1),
    move('latest', 1, 2),
    move('stable', 1, 2),
    move('stable', 2, 2, false), // a promotion of version 3 refused while stable was 2
    move('latest', 2, 3),
  ];
  assert.equal(previousTarget(history, 'stable', 2), 1);
  assert.equal(previousTarget(history, 'latest', 3), 2);
  // History that disagrees with labels.json knows no earlier target.
  assert.equal(previousTarget(history, 'stable', 3), undefined);
});
