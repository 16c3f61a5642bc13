/**
 * What one poll of a job's Server-Sent Events stream costs (src/app/jobs/job-event-stream.ts:
 * every 500 ms per client) on events.ndjson files of growing length: the whole file read and
 * parsed again (`JobStore.readEvents(id, after)`, the stream before), against a read from the
 * byte offset where the last poll ended (`readNewLines`, the stream now), with no new event and
 * with one. Median of --polls polls each. Writes bench/results/job-events.json.
 *
 *   node --import @swc-node/register/esm-register bench/job-events.bench.ts
 */
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { JobStore, readNewLines } from '../src/jobs/job-store.js';
import { machine, printTable, writeResult } from './common.js';

const { values } = parseArgs({
  options: {
    polls: { type: 'string', default: '50' },
    out: { type: 'string', default: 'bench/results/job-events.json' },
  },
});
const POLLS = Number(values.polls);
const ID = '20261207-031502-3fa9c1';
const SIZES = [1_000, 10_000, 100_000];

/** A progress event as the controller records it (~330 bytes). */
function event(seq: number): string {
  return `${JSON.stringify({
    phase: 1,
    phases: 1,
    module: null,
    epoch: 1,
    epochs: 3,
    step: seq,
    stepsPerEpoch: 1875,
    globalStep: seq,
    totalSteps: 5625,
    losses: [2.0794, 2.0791, 2.0789],
    itemsPerSecond: 812.4,
    unitsPerSecond: 29246.4,
    unitName: 'patches',
    etaSeconds: 123,
    seq,
    t: '2026-12-07T03:15:02.000Z',
    type: 'progress',
  })}\n`;
}

async function median(fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < POLLS; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] as number;
}

const dir = await mkdtemp(join(tmpdir(), 'gim-bench-events-'));
const rows: (string | number)[][] = [];
const results = [];
try {
  for (const lines of SIZES) {
    const store = new JobStore(dir);
    await store.create({ id: ID } as never);
    const path = store.paths(ID).events;
    let text = '';
    for (let seq = 1; seq <= lines; seq++) text += event(seq);
    await writeFile(path, text);
    const bytes = Buffer.byteLength(text);
    // A client that has every event so far: each poll finds nothing new.
    const wholeIdle = await median(() => store.readEvents(ID, lines));
    const offsetIdle = await median(() => readNewLines(path, bytes));
    // One new event per poll.
    let seq = lines;
    let offset = bytes;
    const wholeOne = await median(async () => {
      await appendFile(path, event(++seq));
      await store.readEvents(ID, seq - 1);
    });
    const offsetOne = await median(async () => {
      await appendFile(path, event(++seq));
      const read = await readNewLines(path, offset);
      offset = read.offset;
      read.lines.map((l) => JSON.parse(l) as unknown);
    });
    const mib = (bytes / 2 ** 20).toFixed(1);
    rows.push([
      lines,
      mib,
      wholeIdle.toFixed(0),
      offsetIdle.toFixed(0),
      wholeOne.toFixed(0),
      offsetOne.toFixed(0),
    ]);
    results.push({ lines, bytes, wholeIdle, offsetIdle, wholeOne, offsetOne });
    await rm(join(dir, '.jobs'), { recursive: true, force: true });
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
printTable(
  [
    'events',
    'MiB',
    'whole file, idle (µs)',
    'from offset, idle (µs)',
    'whole file, +1 event (µs)',
    'from offset, +1 event (µs)',
  ],
  rows,
);
process.stdout.write(`median of ${POLLS} polls each; +1 includes appending the event\n`);
await writeResult(values.out, { machine: machine(), polls: POLLS, unit: 'microseconds', results });
