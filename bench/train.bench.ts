/**
 * npm run bench:train — training throughput and memory of the GIM trainer.
 *
 * For the demo configuration (16/32/64) and the fast one (8/16/32), on `wasm` and on the pure-JS
 * `cpu` backend in the same run: patches/s per schedule and convolution route, and the peak tensor
 * bytes of one step (tf.profile) of `sequential` versus `end-to-end` training.
 * Writes bench/results/train.json. Options: --steps N (timed steps on wasm, default 12),
 * --cpu-steps N (default 1), --no-cpu.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { selectBackend, type BackendName } from '../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../src/gim/encoders/encoder-stack.js';
import { channelStats, defaultImageAdapter } from '../src/gim/modality/image.js';
import { GreedyTrainer } from '../src/gim/training/greedy-trainer.js';
import { resolveTrainConfig, type ConvRoute, type Schedule } from '../src/gim/training/config.js';
import { Rng } from '../src/gim/random.js';
import { fashionMnist, machine, printTable, writeResult } from './common.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '12' },
    'cpu-steps': { type: 'string', default: '1' },
    'no-cpu': { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/train.json' },
  },
});
const BATCH = 32;
const { dataset, full } = await fashionMnist('train');
const sample = await dataset.read(Int32Array.from({ length: 16 * BATCH }, (_, i) => i));
const stats = channelStats(sample.images, 1);
const adapter = defaultImageAdapter({ ...stats });
const GRID_CELLS = 36; // 6x6 patches of 8x8 at stride 4
const batches = Array.from({ length: 16 }, (_, b) => ({
  data: sample.images.subarray(b * BATCH * 784, (b + 1) * BATCH * 784),
  n: BATCH,
}));

interface Row {
  backend: BackendName;
  channels: string;
  schedule: Schedule;
  route: ConvRoute;
  patchesPerSecond: number;
  imagesPerSecond: number;
  peakBytes: number;
  steps: number;
}
const rows: Row[] = [];

/** Steps (per phase for sequential) and the largest tf.profile peak of one step. */
async function measure(channels: number[], schedule: Schedule, route: ConvRoute, steps: number) {
  const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, channels), 1);
  const trainer = new GreedyTrainer(
    stack,
    resolveTrainConfig({ schedule, convRoute: route, batchSize: BATCH }),
  );
  const phases = schedule === 'sequential' ? [[1], [2], [3]] : [[1, 2, 3]];
  const rng = new Rng(7);
  let seconds = 0;
  let count = 0;
  let peakBytes = 0;
  let b = 0;
  const next = () => batches[b++ % batches.length] as (typeof batches)[number];
  for (const active of phases) {
    trainer.step(next(), active, rng); // warm-up: kernels, optimiser moments
    // The peak of tensor memory during one step, over every phase.
    const profile = await tf.profile(() => trainer.step(next(), active, rng));
    peakBytes = Math.max(peakBytes, profile.peakBytes);
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) trainer.step(next(), active, rng);
    seconds += (performance.now() - t0) / 1000;
    count += steps;
  }
  trainer.dispose();
  stack.dispose();
  const patchesPerSecond = (count * BATCH * GRID_CELLS) / seconds;
  return { patchesPerSecond, imagesPerSecond: (count * BATCH) / seconds, peakBytes, steps: count };
}

const backends: BackendName[] = values['no-cpu'] ? ['wasm'] : ['wasm', 'cpu'];
const configs = [
  [16, 32, 64],
  [8, 16, 32],
];
const plan: [Schedule, ConvRoute][] = [
  ['parallel', 'im2col'],
  ['parallel', 'conv'],
  ['sequential', 'im2col'],
  ['sequential', 'conv'],
  ['end-to-end', 'conv'],
];
const started = performance.now();
const total = backends.length * configs.length * plan.length;
for (const backend of backends) {
  await selectBackend({ force: backend, log: (l) => process.stderr.write(`${l}\n`) });
  const steps = Number(backend === 'cpu' ? values['cpu-steps'] : values.steps);
  for (const channels of configs)
    for (const [schedule, route] of plan) {
      const r = await measure(channels, schedule, route, steps);
      rows.push({ backend, channels: channels.join('/'), schedule, route, ...r });
      const done = rows.length;
      const elapsed = (performance.now() - started) / 1000;
      process.stderr.write(
        `[${done}/${total}] ${backend} ${channels.join('/')} ${schedule} ${route}: ` +
          `${r.patchesPerSecond.toFixed(0)} patches/s, peak ${(r.peakBytes / 2 ** 20).toFixed(1)} MiB ` +
          `(elapsed ${elapsed.toFixed(0)} s, ETA ${((elapsed / done) * (total - done)).toFixed(0)} s)\n`,
      );
    }
}

const find = (b: string, c: string, s: string, r: string) =>
  rows.find((x) => x.backend === b && x.channels === c && x.schedule === s && x.route === r);
printTable(
  ['backend', 'channels', 'schedule', 'route', 'patches/s', 'images/s', 'peak MiB'],
  rows.map((r) => [
    r.backend,
    r.channels,
    r.schedule,
    r.route,
    r.patchesPerSecond.toFixed(0),
    r.imagesPerSecond.toFixed(1),
    (r.peakBytes / 2 ** 20).toFixed(2),
  ]),
);
process.stdout.write(
  'patches/s counts patches through one optimiser step; a sequential step trains one module ' +
    '(the mean over its three phases), the others all three. peak: tf.profile peakBytes of one step.\n',
);
const checks: Record<string, number | null> = {};
for (const c of ['16/32/64', '8/16/32']) {
  const best = Math.max(
    find('wasm', c, 'parallel', 'im2col')?.patchesPerSecond ?? 0,
    find('wasm', c, 'parallel', 'conv')?.patchesPerSecond ?? 0,
  );
  checks[`wasm ${c} parallel patches/s (best route)`] = best;
  const seq = find('wasm', c, 'sequential', 'conv');
  const e2e = find('wasm', c, 'end-to-end', 'conv');
  checks[`wasm ${c} peak sequential/end-to-end (conv route)`] =
    seq && e2e ? seq.peakBytes / e2e.peakBytes : null;
  const seqCols = find('wasm', c, 'sequential', 'im2col');
  checks[`wasm ${c} peak sequential(im2col)/end-to-end`] =
    seqCols && e2e ? seqCols.peakBytes / e2e.peakBytes : null;
  const cpuBest = Math.max(
    find('cpu', c, 'parallel', 'im2col')?.patchesPerSecond ?? 0,
    find('cpu', c, 'parallel', 'conv')?.patchesPerSecond ?? 0,
  );
  checks[`wasm/cpu speed-up ${c} parallel, best route on each`] =
    cpuBest > 0 ? best / cpuBest : null;
  const cpu = find('cpu', c, 'parallel', 'conv');
  checks[`wasm/cpu speed-up ${c} parallel conv route`] = cpu
    ? (find('wasm', c, 'parallel', 'conv')?.patchesPerSecond ?? 0) / cpu.patchesPerSecond
    : null;
}
process.stdout.write('\n');
printTable(
  ['check', 'value'],
  Object.entries(checks).map(([k, v]) => [k, v === null ? '-' : v.toFixed(v < 10 ? 3 : 0)]),
);
await writeResult(values.out as string, {
  machine: machine(),
  data: full ? 'fashion-mnist (Debian)' : 'test fixture',
  batchSize: BATCH,
  targets: {
    'wasm 16/32/64 patches/s': 2000,
    'wasm 8/16/32 patches/s': 4000,
    'sequential/end-to-end peak bytes': 0.5,
  },
  rows,
  checks,
});
