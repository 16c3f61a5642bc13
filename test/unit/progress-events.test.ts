import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProgressEventWriter, type StepProgressEvent } from '../../src/cli/progress-events.js';

function step(globalStep: number, step: number, stepsPerEpoch = 4): StepProgressEvent {
  return {
    phase: 1,
    phases: 1,
    module: null,
    epoch: 1,
    epochs: 1,
    step,
    stepsPerEpoch,
    globalStep,
    totalSteps: stepsPerEpoch,
    losses: [2.5, null],
    itemsPerSecond: 10,
    unitsPerSecond: 360,
    unitName: 'patches',
    etaSeconds: 1,
  };
}

async function lines(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8');
  assert.ok(text.endsWith('\n'), 'the file ends with a complete line');
  return text
    .slice(0, -1)
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('appends one complete JSON line per event, with v, t and type, after what the file held', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gim-events-'));
  try {
    const path = join(dir, 'events.ndjson');
    await writeFile(path, '{"earlier":"attempt"}\n');
    const writer = ProgressEventWriter.open(path, { intervalMs: 1000, now: () => 0 });
    writer.emit({ type: 'log', line: 'a line with "quotes"\nand a newline' });
    writer.emit({ type: 'end', status: 'succeeded', exitCode: 0 });
    writer.close();
    const got = await lines(path);
    assert.deepEqual(got, [
      { earlier: 'attempt' },
      {
        v: 1,
        t: '1970-01-01T00:00:00.000Z',
        type: 'log',
        line: 'a line with "quotes"\nand a newline',
      },
      { v: 1, t: '1970-01-01T00:00:00.000Z', type: 'end', status: 'succeeded', exitCode: 0 },
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('progress events: the first goes, then at most one per interval unless forced', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gim-events-'));
  try {
    const path = join(dir, 'events.ndjson');
    let clock = 5000;
    const writer = ProgressEventWriter.open(path, { intervalMs: 1000, now: () => clock });
    writer.progress(step(1, 1)); // first: written
    clock += 400;
    writer.progress(step(2, 2)); // 400 ms later: dropped
    clock += 400;
    writer.progress(step(3, 3)); // 800 ms after the last written: dropped
    writer.progress(step(4, 4), true); // the epoch's last step: written
    clock += 999;
    writer.progress(step(5, 1)); // 999 ms after the last written: dropped
    clock += 1;
    writer.progress(step(6, 2)); // 1000 ms: written
    writer.close();
    const got = await lines(path);
    assert.deepEqual(
      got.map((e) => e.globalStep),
      [1, 4, 6],
    );
    assert.ok(got.every((e) => e.type === 'progress' && e.v === 1));
    assert.deepEqual(got[0]?.losses, [2.5, null]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('without a target nothing is written and nothing fails', () => {
  const writer = ProgressEventWriter.open(undefined, { intervalMs: 0 });
  assert.equal(writer.enabled, false);
  writer.emit({ type: 'log', line: 'x' });
  writer.progress(step(1, 1), true);
  writer.close();
});
