/**
 * npm run bench:train — training throughput and memory of the GIM trainer on every backend here,
 * beside the PyTorch peer (../shared/peers/gim_torch.py) when torch is installed.
 *
 * Each backend (and, for the native one, each intra-op thread count: TensorFlow reads
 * TF_NUM_INTRAOP_THREADS once, when it starts) runs in its own child process: patches/s of the
 * demo configuration (16/32/64) and the fast one (8/16/32) per schedule and convolution route,
 * and the peak tensor bytes of one step (tf.profile) of `sequential` versus `end-to-end`. The peer
 * times the same model (parallel schedule, batch 32) at 1 and 2 threads in the same run, so the
 * ratios below compare like with like on one machine at one time.
 *
 * --profile adds where a step's time goes on each backend (kernels by name, outside kernels).
 * Writes bench/results/train.json. Options: --steps N (timed steps, default 12), --cpu-steps N
 * (default 1), --backends a,b (default: all available), --native-threads 1,2 (default 1 and the
 * core count), --no-cpu, --peer PATH|none, --peer-seconds S (default 15), --profile.
 */
import * as tf from '@tensorflow/tfjs';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { BACKEND_NAMES, selectBackend, type BackendName } from '../src/gim/backend/index.js';
import { EncoderStack, visionModuleConfigs } from '../src/gim/encoders/encoder-stack.js';
import { channelStats, defaultImageAdapter } from '../src/gim/modality/image.js';
import { GreedyTrainer } from '../src/gim/training/greedy-trainer.js';
import { resolveTrainConfig, type ConvRoute, type Schedule } from '../src/gim/training/config.js';
import { gridPairs, infoNceArrays, sampleNegatives } from '../src/gim/losses/info-nce.js';
import { infoNceSimd } from '../src/gim/losses/info-nce-simd.js';
import { Rng } from '../src/gim/random.js';
import { fashionMnist, machine, printTable, writeResult } from './common.js';

const ROOT = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '12' },
    'cpu-steps': { type: 'string', default: '1' },
    'no-cpu': { type: 'boolean', default: false },
    backends: { type: 'string' },
    'native-threads': { type: 'string' },
    peer: { type: 'string', default: resolve(ROOT, '../shared/peers/gim_torch.py') },
    'peer-seconds': { type: 'string', default: '15' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/train.json' },
    // Internal: run one backend in this process and print its rows as JSON.
    child: { type: 'string' },
  },
});
const BATCH = 32;
const GRID_CELLS = 36; // 6x6 patches of 8x8 at stride 4
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Row {
  backend: BackendName;
  threads: number | null;
  channels: string;
  schedule: Schedule;
  route: ConvRoute;
  patchesPerSecond: number;
  imagesPerSecond: number;
  /** Process CPU seconds per wall second while timing (how many cores the run kept busy). */
  cores: number;
  peakBytes: number;
  steps: number;
}
interface ProfileLine {
  name: string;
  msPerStep: number;
  callsPerStep: number;
}
interface ChildResult {
  backend: BackendName;
  threads: number | null;
  unavailable?: string;
  label?: string;
  /** Whether the full Fashion-MNIST was there (else the test fixture). */
  full?: boolean;
  rows: Row[];
  profile?: {
    msPerStep: number;
    kernelsMsPerStep: number;
    infoNceJsMsPerStep: number;
    kernels: ProfileLine[];
  };
}

const PLAN: [Schedule, ConvRoute][] = [
  ['parallel', 'im2col'],
  ['parallel', 'conv'],
  ['sequential', 'im2col'],
  ['sequential', 'conv'],
  ['end-to-end', 'conv'],
];
const CONFIGS = [
  [16, 32, 64],
  [8, 16, 32],
];

if (values.child !== undefined) {
  process.stdout.write(`${JSON.stringify(await runChild(values.child as BackendName))}\n`);
  process.exit(0);
}

// ------------------------------------------------------------------------------------------
// Child: one backend in this process.

async function runChild(backend: BackendName): Promise<ChildResult> {
  const threadsEnv = process.env.TF_NUM_INTRAOP_THREADS;
  const threads = backend.startsWith('tensorflow') && threadsEnv ? Number(threadsEnv) : null;
  let label: string;
  try {
    const info = await selectBackend({ force: backend });
    label = `${info.name} (${info.devices.join(', ')})`;
  } catch (e) {
    return { backend, threads, unavailable: (e as Error).message, rows: [] };
  }
  const { dataset, full } = await fashionMnist('train');
  const sample = await dataset.read(Int32Array.from({ length: 16 * BATCH }, (_, i) => i));
  const adapter = defaultImageAdapter({ ...channelStats(sample.images, 1) });
  const batches = Array.from({ length: 16 }, (_, b) => ({
    data: sample.images.subarray(b * BATCH * 784, (b + 1) * BATCH * 784),
    n: BATCH,
  }));
  const steps = Number(backend === 'cpu' ? values['cpu-steps'] : values.steps);
  const rows: Row[] = [];
  const newTrainer = (channels: number[], schedule: Schedule, route: ConvRoute) => {
    const stack = EncoderStack.create(adapter, visionModuleConfigs(adapter, channels), 1);
    const trainer = new GreedyTrainer(
      stack,
      resolveTrainConfig({ schedule, convRoute: route, batchSize: BATCH }),
    );
    return { stack, trainer };
  };
  let b = 0;
  const next = () => batches[b++ % batches.length] as (typeof batches)[number];

  for (const channels of CONFIGS)
    for (const [schedule, route] of PLAN) {
      const { stack, trainer } = newTrainer(channels, schedule, route);
      const phases = schedule === 'sequential' ? [[1], [2], [3]] : [[1, 2, 3]];
      const rng = new Rng(7);
      let seconds = 0;
      let cpuSeconds = 0;
      let count = 0;
      let peakBytes = 0;
      for (const active of phases) {
        trainer.step(next(), active, rng); // warm-up: kernels, optimiser moments
        const profile = await tf.profile(() => trainer.step(next(), active, rng));
        peakBytes = Math.max(peakBytes, profile.peakBytes);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let s = 0; s < steps; s++) trainer.step(next(), active, rng);
        seconds += (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        cpuSeconds += (cpu.user + cpu.system) / 1e6;
        count += steps;
      }
      trainer.dispose();
      stack.dispose();
      const row: Row = {
        backend,
        threads,
        channels: channels.join('/'),
        schedule,
        route,
        patchesPerSecond: (count * BATCH * GRID_CELLS) / seconds,
        imagesPerSecond: (count * BATCH) / seconds,
        cores: cpuSeconds / seconds,
        peakBytes,
        steps: count,
      };
      rows.push(row);
      log(
        `  ${backend}${threads ? ` x${threads}` : ''} ${row.channels} ${schedule} ${route}: ` +
          `${row.patchesPerSecond.toFixed(0)} patches/s`,
      );
    }

  let profile: ChildResult['profile'];
  // The pure-JS backend is too slow to profile (a conv step takes ~30 s).
  if (values.profile && backend !== 'cpu') {
    const { stack, trainer } = newTrainer([16, 32, 64], 'parallel', 'conv');
    const rng = new Rng(7);
    for (let i = 0; i < 3; i++) trainer.step(next(), [1, 2, 3], rng);
    const profileSteps = Math.max(steps, 10);
    const { msPerStep, kernelsMs, kernels } = profileKernels(
      () => trainer.step(next(), [1, 2, 3], rng),
      profileSteps,
    );
    trainer.dispose();
    stack.dispose();
    profile = {
      msPerStep,
      kernelsMsPerStep: kernelsMs,
      infoNceJsMsPerStep: infoNceJsMs([16, 32, 64]),
      kernels: kernels.slice(0, 10),
    };
  }
  return { backend, threads, label, full, rows, profile };
}

/**
 * Times every kernel call of `step` (wrapping the backend's registered kernels); only the
 * outermost kernel of a nested call is counted, so the times add up.
 */
function profileKernels(step: () => void, steps: number) {
  const be = tf.getBackend();
  const times = new Map<string, { ms: number; n: number }>();
  let depth = 0;
  const configs = tf.getKernelsForBackend(be);
  for (const k of configs) {
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, be);
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        depth++;
        const t0 = performance.now();
        try {
          return inner(args);
        } finally {
          depth--;
          if (depth === 0) {
            const t = times.get(k.kernelName) ?? { ms: 0, n: 0 };
            t.ms += performance.now() - t0;
            t.n++;
            times.set(k.kernelName, t);
          }
        }
      },
    });
  }
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  const msPerStep = (performance.now() - t0) / steps;
  for (const k of configs) {
    tf.unregisterKernel(k.kernelName, be);
    tf.registerKernel(k);
  }
  const kernels = [...times.entries()]
    .map(([name, t]) => ({ name, msPerStep: t.ms / steps, callsPerStep: t.n / steps }))
    .sort((a, b) => b.msPerStep - a.msPerStep);
  return { msPerStep, kernelsMs: kernels.reduce((s, k) => s + k.msPerStep, 0), kernels };
}

/**
 * InfoNCE's host part (loss and gradient of the three modules) for one batch, ms: what training
 * runs (the WebAssembly SIMD kernel, or the JavaScript loop where it cannot load).
 */
function infoNceJsMs(channels: number[]): number {
  const pairs = gridPairs(BATCH, 6, 6, [2, 3, 4, 5]);
  const rng = new Rng(3);
  const M = BATCH * GRID_CELLS;
  const K = 4;
  const inputs = channels.map((C) => ({
    C,
    P: Float32Array.from({ length: M * K * C }, () => rng.next() - 0.5),
    Z: Float32Array.from({ length: M * C }, () => rng.next() - 0.5),
  }));
  const negatives = sampleNegatives(pairs, 16, rng);
  const once = () => {
    for (const { C, P, Z } of inputs) {
      const [dP, dZ] = [new Float32Array(P.length), new Float32Array(Z.length)];
      if (infoNceSimd(P, Z, C, K, pairs, negatives, dP, dZ) === null)
        infoNceArrays(P, Z, C, K, pairs, negatives, dP, dZ);
    }
  };
  for (let i = 0; i < 3; i++) once();
  const reps = 10;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) once();
  return (performance.now() - t0) / reps;
}

// ------------------------------------------------------------------------------------------
// Parent: one child per backend (and thread count), then the peer, then the tables.

const run = promisify(execFile);
const cores = os.cpus().length;
const wanted = (values.backends?.split(',') ?? BACKEND_NAMES).filter(
  (b) => !(values['no-cpu'] && b === 'cpu'),
) as BackendName[];
const nativeThreads = values['native-threads']
  ? values['native-threads'].split(',').map(Number)
  : [...new Set([1, cores])];
const jobs = wanted.flatMap((backend): { backend: BackendName; threads: number | null }[] =>
  backend.startsWith('tensorflow')
    ? nativeThreads.map((threads) => ({ backend, threads }))
    : [{ backend, threads: null }],
);

const started = performance.now();
const results: ChildResult[] = [];
for (const [i, job] of jobs.entries()) {
  const elapsed = (performance.now() - started) / 1000;
  const eta = i > 0 ? ` ETA ${((elapsed / i) * (jobs.length - i)).toFixed(0)} s` : '';
  log(
    `[${i + 1}/${jobs.length}] ${job.backend}${job.threads ? ` (${job.threads} intra-op threads)` : ''}` +
      ` (elapsed ${elapsed.toFixed(0)} s${eta})`,
  );
  const env: NodeJS.ProcessEnv = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' };
  if (job.threads !== null) env.TF_NUM_INTRAOP_THREADS = String(job.threads);
  const args = [
    '--import',
    '@swc-node/register/esm-register',
    'bench/train.bench.ts',
    '--child',
    job.backend,
    '--steps',
    values.steps as string,
    '--cpu-steps',
    values['cpu-steps'] as string,
    ...(values.profile ? ['--profile'] : []),
  ];
  const child = spawnSync(process.execPath, args, {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  const line = child.stdout.toString().trim().split('\n').pop() ?? '';
  let result: ChildResult;
  try {
    result = JSON.parse(line) as ChildResult;
  } catch {
    result = { ...job, unavailable: `child exited ${child.status} without a result`, rows: [] };
  }
  if (result.unavailable)
    log(`  ${job.backend}: unavailable (${result.unavailable.split('\n')[0]})`);
  results.push(result);
}

interface PeerRun {
  threads: number;
  patches_per_s: number;
  ms_per_step: number;
  cpu_s: number;
  wall_s: number;
}
const peer = await runPeer();

async function runPeer(): Promise<{ runs: PeerRun[]; torch: string } | { skipped: string }> {
  const script = values.peer as string;
  if (script === 'none') return { skipped: '--peer none' };
  if (!existsSync(script)) return { skipped: `${script} not found` };
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const torch = await run(python, ['-c', 'import torch; print(torch.__version__)']).catch(
    () => null,
  );
  if (!torch) return { skipped: `no torch for ${python} (Debian: apt-get install python3-torch)` };
  const dir = await mkdtemp(join(os.tmpdir(), 'gim-peer-'));
  try {
    log(
      `peer: ${python} ${script} --bench-seconds ${values['peer-seconds']} (torch ${torch.stdout.trim()})`,
    );
    const out = join(dir, 'peer.json');
    await run(
      python,
      [
        script,
        '--bench-seconds',
        values['peer-seconds'] as string,
        '--epochs',
        '0.01',
        '--no-probe',
        '--no-raw-baseline',
        '--out',
        out,
      ],
      { maxBuffer: 64 << 20 },
    );
    const summary = JSON.parse(await readFile(out, 'utf8')) as { bench_train?: PeerRun[] };
    return { runs: summary.bench_train ?? [], torch: torch.stdout.trim() };
  } catch (e) {
    return { skipped: `the peer failed: ${(e as Error).message.split('\n')[0]}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const rows = results.flatMap((r) => r.rows);
const name = (r: { backend: string; threads: number | null }) =>
  r.threads ? `${r.backend} x${r.threads}` : r.backend;
printTable(
  ['backend', 'channels', 'schedule', 'route', 'patches/s', 'images/s', 'cores', 'peak MiB'],
  rows.map((r) => [
    name(r),
    r.channels,
    r.schedule,
    r.route,
    r.patchesPerSecond.toFixed(0),
    r.imagesPerSecond.toFixed(1),
    r.cores.toFixed(2),
    (r.peakBytes / 2 ** 20).toFixed(2),
  ]),
);
process.stdout.write(
  'patches/s counts patches through one optimiser step; a sequential step trains one module ' +
    '(the mean over its three phases), the others all three. cores: process CPU time per wall ' +
    'time. xN: TensorFlow intra-op threads. peak: tf.profile peakBytes of one step.\n',
);
for (const b of new Set(results.filter((x) => x.unavailable).map((x) => x.backend))) {
  const r = results.find((x) => x.backend === b) as ChildResult;
  process.stdout.write(`not run: ${b}: ${r.unavailable?.split('\n')[0]}\n`);
}

const find = (b: string, t: number | null, c: string, s: string, route: string) =>
  rows.find(
    (x) =>
      x.backend === b &&
      x.threads === t &&
      x.channels === c &&
      x.schedule === s &&
      x.route === route,
  );
/** The default configuration: 16/32/64, parallel, the route `auto` picks (conv off pure JS). */
const defaultRow = (b: BackendName, t: number | null) =>
  find(b, t, '16/32/64', 'parallel', b === 'cpu' ? 'im2col' : 'conv');

const checks: Record<string, number | null> = {};
for (const c of ['16/32/64', '8/16/32']) {
  const best = Math.max(
    find('wasm', null, c, 'parallel', 'im2col')?.patchesPerSecond ?? 0,
    find('wasm', null, c, 'parallel', 'conv')?.patchesPerSecond ?? 0,
  );
  checks[`wasm ${c} parallel patches/s (best route)`] = best || null;
  const seq = find('wasm', null, c, 'sequential', 'conv');
  const e2e = find('wasm', null, c, 'end-to-end', 'conv');
  checks[`wasm ${c} peak sequential/end-to-end (conv route)`] =
    seq && e2e ? seq.peakBytes / e2e.peakBytes : null;
}
const peerRuns = 'runs' in peer ? peer.runs : [];
const peerAt = (threads: number) => peerRuns.find((p) => p.threads === threads)?.patches_per_s;
for (const r of results.filter((x) => !x.unavailable)) {
  const ours = defaultRow(r.backend, r.threads)?.patchesPerSecond;
  // wasm and cpu run on one thread; the native backend at its own intra-op thread count.
  const threads = r.threads ?? 1;
  const theirs = peerAt(threads);
  checks[`${name(r)} / peer at ${threads} thread${threads > 1 ? 's' : ''} (16/32/64 parallel)`] =
    ours && theirs ? ours / theirs : null;
}

process.stdout.write('\n');
if ('runs' in peer) {
  printTable(
    ['peer (PyTorch ' + peer.torch + ')', 'threads', 'patches/s', 'ms/step', 'cores'],
    peer.runs.map((p) => [
      'gim_torch.py 16/32/64 parallel',
      p.threads,
      p.patches_per_s.toFixed(0),
      p.ms_per_step.toFixed(1),
      (p.cpu_s / p.wall_s).toFixed(2),
    ]),
  );
} else process.stdout.write(`peer: not run (${peer.skipped})\n`);
process.stdout.write('\n');
printTable(
  ['check', 'value'],
  Object.entries(checks).map(([k, v]) => [k, v === null ? '-' : v.toFixed(v < 10 ? 3 : 0)]),
);

const profiled = results.filter((r) => r.profile);
for (const r of profiled) {
  const p = r.profile as NonNullable<ChildResult['profile']>;
  process.stdout.write(
    `\nprofile ${name(r)} (16/32/64 parallel conv): ${p.msPerStep.toFixed(1)} ms/step = ` +
      `kernels ${p.kernelsMsPerStep.toFixed(1)} + outside kernels ` +
      `${(p.msPerStep - p.kernelsMsPerStep).toFixed(1)} (of which InfoNCE's host kernel ` +
      `~${p.infoNceJsMsPerStep.toFixed(1)})\n`,
  );
  printTable(
    ['kernel', 'ms/step', 'calls/step'],
    p.kernels.map((k) => [k.name, k.msPerStep.toFixed(2), k.callsPerStep.toFixed(0)]),
  );
}

await writeResult(values.out as string, {
  machine: machine(),
  data: results.some((r) => r.full === false) ? 'test fixture' : 'fashion-mnist (Debian)',
  batchSize: BATCH,
  targets: {
    'wasm 16/32/64 patches/s': 2000,
    'wasm 8/16/32 patches/s': 4000,
    'sequential/end-to-end peak bytes': 0.5,
    'native / peer at the same thread count': 1,
    'wasm / peer at 1 thread': 0.5,
  },
  backends: results.map((r) => ({
    backend: r.backend,
    threads: r.threads,
    label: r.label,
    unavailable: r.unavailable,
    profile: r.profile,
  })),
  rows,
  peer,
  checks,
});
