/**
 * npm run bench:serve — HTTP throughput and latency of the embeddings API against the model's own.
 *
 * Starts the built server (`node dist/src/main.js`, rebuilt first when dist is stale) in a child
 * process, once with dynamic batching on (MAX_BATCH_SIZE 32) and once with it off (1), and drives
 * `POST /v1/models/fashion-gim/embeddings?layer=last&pooling=mean` with autocannon at 1, 16 and 64
 * connections, each body one of 64 Fashion-MNIST test PNGs in rotation. In the same run, the raw
 * throughput of the same stack and layer through an `InferenceClient` (batches of 32, same
 * backend) gives the ceiling: HTTP/raw at 64 clients with batching on should be >= 0.85. The
 * server's own event-loop delay under load comes from its /metrics (prom-client's
 * `nodejs_eventloop_lag_p99_seconds`, a monitorEventLoopDelay histogram reset by every scrape, so
 * one scrape before and one after a run bracket it); its p99 should stay under 20 ms. That
 * histogram samples every EVENT_LOOP_RESOLUTION_MS (10) and each sample includes the period, so
 * both are reported: the sample as read, and the delay (sample minus the period, as
 * @fastify/under-pressure computes it from the same histogram).
 *
 * Every backend that loads here is served in turn (the native one at 1 intra-op thread and at
 * all cores: TF_NUM_INTRAOP_THREADS in the server's environment), each with its own raw ceiling.
 *
 * Writes bench/results/serve.json. Options: --backends a,b (default: every one that loads),
 * --native-threads 1,2 (default 1 and the core count), --duration S (per run, default 10), --warmup S (per
 * server, default 5), --clients 1,16,64, --no-batching-off, --batch-delay-ms N (server's
 * MAX_BATCH_DELAY_MS, default 0 like the server), --max-batch-size N (default 32), --png grey|rgb
 * (default grey), --out PATH.
 */
import { spawnSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import sharp from 'sharp';
import { decodeImage, pngDecodesInline } from '../src/gim/data/decode-image.js';
import { loadFashionMnist } from '../src/gim/data/idx.js';
import { poolGrid } from '../src/gim/encoders/pooling.js';
import { EVENT_LOOP_RESOLUTION_MS } from '../src/app/metrics/metrics.service.js';
import { InferenceClient } from '../src/inference/inference-client.js';
import {
  FIXTURE_DIR,
  machine,
  machineBusyTicks,
  printTable,
  TICKS_PER_SECOND,
  writeResult,
} from './common.js';
import { buildIfStale, loadOf, startServer, type Load } from './server.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '5' },
    clients: { type: 'string', default: '1,16,64' },
    'no-batching-off': { type: 'boolean', default: false },
    'batch-delay-ms': { type: 'string', default: '0' },
    png: { type: 'string', default: 'grey' },
    'max-batch-size': { type: 'string', default: '32' },
    backends: { type: 'string' },
    'native-threads': { type: 'string' },
    out: { type: 'string', default: 'bench/results/serve.json' },
  },
});
const DURATION_S = positive('duration', values.duration);
const WARMUP_S = positive('warmup', values.warmup);
const CLIENTS = (values.clients as string).split(',').map((c) => positive('clients', c));
const BATCH_DELAY_MS = Number(values['batch-delay-ms']);
const PNG_COLOUR = values.png as string;
if (PNG_COLOUR !== 'grey' && PNG_COLOUR !== 'rgb') {
  throw new Error(`--png: grey or rgb, got "${PNG_COLOUR}"`);
}
const MODEL = 'fashion-gim';
const LAYER = 3; // `last` of the demo stack
const ROUTE = `/v1/models/${MODEL}/embeddings?layer=last&pooling=mean`;
const IMAGES = 64;
const RAW_BATCH = 32;
const ROOT = new URL('..', import.meta.url).pathname;
const MODELS_DIR = join(ROOT, 'models');
const TARGETS = { httpOverRaw: 0.85, eventLoopP99Ms: 20 };

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name}: expected a positive number, got "${text}"`);
  return n;
}

const log = (line: string) => process.stderr.write(`${line}\n`);
const fmt = (v: number | null, digits = 2) => (v === null ? '-' : v.toFixed(digits));

// ---------------------------------------------------------------- inputs

/**
 * The first IMAGES test images of the committed fixture as PNG bytes (8-bit grey, as the dataset
 * is; `--png rgb`: the same pixels as RGB, which the server must convert), and as the server
 * decodes them.
 */
async function prepareImages(): Promise<{ pngs: Buffer[]; pixels: Float32Array[] }> {
  const ds = await loadFashionMnist(FIXTURE_DIR, 'test');
  const { images } = await ds.read(Int32Array.from({ length: IMAGES }, (_, i) => i));
  const size = 28 * 28;
  const pngs = await Promise.all(
    Array.from({ length: IMAGES }, (_, i) => {
      const bytes = Uint8Array.from(images.subarray(i * size, (i + 1) * size), (v) =>
        Math.round(v * 255),
      );
      const image = sharp(bytes, { raw: { width: 28, height: 28, channels: 1 } });
      return (PNG_COLOUR === 'grey' ? image.toColourspace('b-w') : image.toColourspace('srgb'))
        .png()
        .toBuffer();
    }),
  );
  const pixels = await Promise.all(
    pngs.map((png) => decodeImage(png, { height: 28, width: 28, channels: 1 })),
  );
  return { pngs, pixels };
}

/**
 * CPU (all threads of this process: sharp works on libuv's pool) and wall time per image of the
 * server's decode, inline (pngjs, where `pngDecodesInline` allows) and through sharp.
 */
async function decodeCost(pngs: Buffer[]) {
  const opts = { height: 28, width: 28, channels: 1 } as const;
  const inlineShare = pngs.filter((png) => pngDecodesInline(png, opts)).length / pngs.length;
  const rows = [];
  for (const inlinePng of [true, false]) {
    const round = () => Promise.all(pngs.map((png) => decodeImage(png, { ...opts, inlinePng })));
    await round(); // warm-up
    const rounds = 20;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let r = 0; r < rounds; r++) await round();
    const wallMs = (performance.now() - t0) / (rounds * pngs.length);
    const cpu = process.cpuUsage(cpu0);
    const cpuMs = (cpu.user + cpu.system) / 1000 / (rounds * pngs.length);
    rows.push({
      path: inlinePng ? 'default' : 'sharp only',
      cpuMsPerImage: cpuMs,
      wallMsPerImage: wallMs,
    });
  }
  return { inlineShare, rows };
}

// ---------------------------------------------------------------- /metrics

/** Sample values of a Prometheus text exposition, by `name{labels}` as written. */
async function scrape(base: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    samples.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return samples;
}

/** Sum of the samples of a metric (over all label sets) whose key contains `labelPart`. */
function total(samples: Map<string, number>, name: string, labelPart = ''): number {
  let sum = 0;
  for (const [key, value] of samples) {
    const bare = key.split('{')[0];
    if (bare === name && key.includes(labelPart)) sum += value;
  }
  return sum;
}

interface ServerSide {
  /**
   * prom-client's monitorEventLoopDelay percentiles over the run, as read: each sample is the time
   * between two timer runs, the EVENT_LOOP_RESOLUTION_MS period included.
   */
  eventLoopP50Ms: number | null;
  eventLoopP99Ms: number | null;
  eventLoopMaxMs: number | null;
  /** The p99 delay: the p99 sample minus the sampling period. */
  eventLoopDelayP99Ms: number | null;
  meanBatchSize: number | null;
  /** Mean time of one batch in the worker, messaging included. */
  meanComputeMs: number | null;
  /** Mean wait of an item in the batch queue. */
  meanQueueMs: number | null;
  /** Mean request time seen by the server (first byte to end of response). */
  meanRequestMs: number | null;
  statusCodes: Record<string, number>;
  rejected: Record<string, number>;
}

function serverSide(before: Map<string, number>, after: Map<string, number>): ServerSide {
  const delta = (name: string, label = '') =>
    total(after, name, label) - total(before, name, label);
  const ratio = (num: number, den: number) => (den > 0 ? num / den : null);
  const gauge = (name: string) => (after.has(name) ? (after.get(name) as number) * 1000 : null);
  const byLabel = (name: string, label: string) => {
    const out: Record<string, number> = {};
    for (const key of after.keys()) {
      const m = key.match(new RegExp(`^${name}\\{.*${label}="([^"]+)"`));
      if (m?.[1] && !key.includes('route="/metrics"')) {
        const d = (after.get(key) as number) - (before.get(key) ?? 0);
        if (d > 0) out[m[1]] = (out[m[1]] ?? 0) + d;
      }
    }
    return out;
  };
  const routeLabel = 'embeddings';
  const loopP99 = gauge('nodejs_eventloop_lag_p99_seconds');
  return {
    eventLoopP50Ms: gauge('nodejs_eventloop_lag_p50_seconds'),
    eventLoopP99Ms: loopP99,
    eventLoopMaxMs: gauge('nodejs_eventloop_lag_max_seconds'),
    eventLoopDelayP99Ms: loopP99 === null ? null : Math.max(0, loopP99 - EVENT_LOOP_RESOLUTION_MS),
    meanBatchSize: ratio(delta('gim_batch_size_sum'), delta('gim_batch_size_count')),
    meanComputeMs: ratio(
      delta('gim_compute_duration_seconds_sum') * 1000,
      delta('gim_compute_duration_seconds_count'),
    ),
    meanQueueMs: ratio(
      delta('gim_queue_duration_seconds_sum') * 1000,
      delta('gim_queue_duration_seconds_count'),
    ),
    meanRequestMs: ratio(
      delta('gim_request_duration_seconds_sum', routeLabel) * 1000,
      delta('gim_request_duration_seconds_count', routeLabel),
    ),
    statusCodes: byLabel('gim_requests_total', 'code'),
    rejected: byLabel('gim_rejected_total', 'reason'),
  };
}

// ---------------------------------------------------------------- CPU (Linux /proc; null elsewhere)

/** CPU ticks of each thread of a process, by thread id. */
async function threadTicks(pid: number): Promise<Map<number, number> | null> {
  try {
    const ticks = new Map<number, number>();
    for (const tid of await readdir(`/proc/${pid}/task`)) {
      const text = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null);
      if (text === null) continue;
      // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
      const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
      ticks.set(Number(tid), Number(rest[11]) + Number(rest[12]));
    }
    return ticks;
  } catch {
    return null;
  }
}

/** Busy cores of the whole machine over `seconds`, while this benchmark does nothing. */
async function otherLoad(seconds: number): Promise<number | null> {
  const a = await machineBusyTicks();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const b = await machineBusyTicks();
  return a === null || b === null ? null : (b - a) / TICKS_PER_SECOND / seconds;
}

interface CpuSnapshot {
  at: number;
  server: Map<number, number> | null;
  machine: number | null;
  bench: NodeJS.CpuUsage;
}

async function cpuSnapshot(serverPid: number): Promise<CpuSnapshot> {
  const [server, machine] = await Promise.all([threadTicks(serverPid), machineBusyTicks()]);
  return { at: performance.now(), server, machine, bench: process.cpuUsage() };
}

/** Cores (CPU-seconds per second) used over a run, by whom. */
interface CpuUse {
  /** The server process: every thread. */
  server: number | null;
  /** Its main thread: HTTP, decoding calls, batching, pooling, JSON. */
  serverMain: number | null;
  /** Its busiest other thread: the inference worker under load. */
  serverBusiestOther: number | null;
  /** This process: autocannon. */
  loadGenerator: number;
  /** Everything else on the machine: should be ~0 for numbers worth comparing. */
  otherProcesses: number | null;
}

function cpuUse(serverPid: number, a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const cores = (ticks: number) => ticks / TICKS_PER_SECOND / seconds;
  const bench = process.cpuUsage(a.bench);
  const loadGenerator = (bench.user + bench.system) / 1e6 / seconds;
  let server: number | null = null;
  let serverMain: number | null = null;
  let serverBusiestOther: number | null = null;
  if (a.server && b.server) {
    const delta = [...b.server].map(([tid, t]) => [tid, t - (a.server?.get(tid) ?? 0)] as const);
    server = cores(delta.reduce((s, [, d]) => s + d, 0));
    serverMain = cores(delta.find(([tid]) => tid === serverPid)?.[1] ?? 0);
    serverBusiestOther = cores(
      Math.max(0, ...delta.filter(([tid]) => tid !== serverPid).map(([, d]) => d)),
    );
  }
  // When the "server" is this process (the raw run), its CPU is not counted twice.
  const ours = (server ?? 0) + (serverPid === process.pid ? 0 : loadGenerator);
  const otherProcesses =
    a.machine !== null && b.machine !== null && server !== null
      ? Math.max(0, cores(b.machine - a.machine) - ours)
      : null;
  return { server, serverMain, serverBusiestOther, loadGenerator, otherProcesses };
}

// ---------------------------------------------------------------- load

async function drive(base: string, pngs: Buffer[], connections: number, seconds: number) {
  let next = 0;
  const result = await autocannon({
    url: `${base}${ROUTE}`,
    connections,
    duration: seconds,
    timeout: 30,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'image/png' },
        // One shared counter: the connections rotate through the bodies together.
        setupRequest: (req) => ({ ...req, body: pngs[next++ % pngs.length] }),
      },
    ],
  });
  return loadOf(result);
}

/** One request checked by hand: status, shape, and the first image's embedding for comparison. */
async function probeOnce(base: string, png: Buffer): Promise<{ dim: number; vector: number[] }> {
  const res = await fetch(`${base}${ROUTE}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: png,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${ROUTE}: ${res.status} ${text}`);
  const body = JSON.parse(text) as { results?: { dim: number; embeddings: number[][] }[] };
  const first = body.results?.[0];
  const vector = first?.embeddings[0];
  if (first === undefined || vector === undefined || vector.length !== first.dim) {
    throw new Error(`POST ${ROUTE}: unexpected body ${text.slice(0, 300)}`);
  }
  return { dim: first.dim, vector };
}

// ---------------------------------------------------------------- raw model throughput

async function rawThroughput(
  pixels: Float32Array[],
  backend: string,
  seconds: number,
): Promise<{
  itemsPerSecond: number;
  batches: number;
  meanBatchMs: number;
  cpuCores: { benchProcess: number | null; otherProcesses: number | null };
  first: Float32Array;
}> {
  const client = await InferenceClient.start({
    modelsDir: MODELS_DIR,
    backend: backend as Parameters<typeof InferenceClient.start>[0]['backend'],
  });
  try {
    const { manifest } = await client.load(MODEL);
    const item = 28 * 28;
    const batchAt = (b: number) => {
      const batch = new Float32Array(RAW_BATCH * item); // [32, 28, 28, 1]
      for (let i = 0; i < RAW_BATCH; i++) {
        batch.set(pixels[(b * RAW_BATCH + i) % pixels.length] as Float32Array, i * item);
      }
      return batch;
    };
    const embed = (b: number) =>
      client.embed(manifest.name, manifest.version, batchAt(b), RAW_BATCH, [LAYER]);
    const firstGrid = (await embed(0)).grids.get(LAYER);
    if (firstGrid === undefined) throw new Error(`no grid for layer ${LAYER}`);
    const first = poolGrid(
      firstGrid.data.subarray(0, firstGrid.data.length / RAW_BATCH),
      { ...firstGrid.shape, n: 1 },
      'mean',
    );
    const warmUntil = performance.now() + Math.min(2, seconds / 4) * 1000;
    for (let b = 1; performance.now() < warmUntil; b++) await embed(b);
    let batches = 0;
    const cpuBefore = await cpuSnapshot(process.pid);
    const t0 = performance.now();
    const until = t0 + seconds * 1000;
    while (performance.now() < until) await embed(batches++);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = cpuUse(process.pid, cpuBefore, await cpuSnapshot(process.pid));
    return {
      itemsPerSecond: (batches * RAW_BATCH) / elapsed,
      batches,
      meanBatchMs: (elapsed * 1000) / batches,
      cpuCores: { benchProcess: cpu.server, otherProcesses: cpu.otherProcesses },
      first,
    };
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------- the run

interface Row extends Load {
  /** The server's backend, with its TensorFlow intra-op threads (tensorflow x1). */
  backend: string;
  mode: 'batching on' | 'batching off';
  clients: number;
  server: ServerSide;
  cpuCores: CpuUse;
}

const modes = [
  {
    mode: 'batching on' as const,
    maxBatchSize: positive('max-batch-size', values['max-batch-size']),
  },
  ...(values['no-batching-off'] ? [] : [{ mode: 'batching off' as const, maxBatchSize: 1 }]),
];
let plannedSeconds =
  DURATION_S + modes.length * (5 + WARMUP_S + CLIENTS.length * (DURATION_S + 0.5));
const started = performance.now();
const progress = (what: string) => {
  const elapsed = (performance.now() - started) / 1000;
  log(
    `${what} (elapsed ${elapsed.toFixed(0)} s, ETA ~${Math.max(0, plannedSeconds - elapsed).toFixed(0)} s)`,
  );
};

await buildIfStale();

const quiet = await otherLoad(2);
if (quiet !== null && quiet > 0.25) {
  log(
    `warning: other processes keep ${quiet.toFixed(2)} cores busy; the numbers will be low and noisy`,
  );
}
const { pngs, pixels } = await prepareImages();
log(`${pngs.length} ${PNG_COLOUR} PNGs, ${pngs.reduce((s, p) => s + p.length, 0)} bytes in all`);
const decoding = await decodeCost(pngs);
log(
  `decode (${(decoding.inlineShare * 100).toFixed(0)}% of the PNGs inline): ` +
    decoding.rows.map((r) => `${r.path} ${r.cpuMsPerImage.toFixed(3)} ms CPU/image`).join(', '),
);

const rows: Row[] = [];
const servers: {
  mode: string;
  label: string;
  env: Record<string, string>;
  backend: string;
  devices: string[];
}[] = [];
const raws: ({ backend: string; label: string } & Awaited<ReturnType<typeof rawThroughput>>)[] = [];
const maxAbsDiff = new Map<string, number | null>();
/** The backends to serve on: every one that loads here (a child process asks), or --backends. */
async function availableBackends(): Promise<string[]> {
  if (values.backends) return values.backends.split(',');
  const found: string[] = [];
  for (const b of ['tensorflow-gpu', 'tensorflow', 'wasm']) {
    const probe = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { selectBackend } = await import('./dist/src/gim/backend/index.js'); await selectBackend({ force: '${b}' });`,
      ],
      { cwd: ROOT, stdio: 'ignore', env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' } },
    );
    if (probe.status === 0) found.push(b);
    else log(`backend ${b}: unavailable here, not served`);
  }
  return found;
}
const cores = os.cpus().length;
const nativeThreads = values['native-threads']
  ? values['native-threads'].split(',').map(Number)
  : [...new Set([1, cores])];
const configs = (await availableBackends()).flatMap((backend) =>
  backend.startsWith('tensorflow')
    ? nativeThreads.map((threads) => ({ backend, threads }))
    : [{ backend, threads: null as number | null }],
);
plannedSeconds *= configs.length;
for (const config of configs) await serveOn(config);

async function serveOn(config: { backend: string; threads: number | null }): Promise<void> {
  const label = config.threads ? `${config.backend} x${config.threads}` : config.backend;
  let httpVector: number[] | undefined;
  for (const { mode, maxBatchSize } of modes) {
    const server = await startServer({
      MODELS_DIR,
      PRELOAD: MODEL,
      MAX_BATCH_SIZE: String(maxBatchSize),
      MAX_BATCH_DELAY_MS: String(BATCH_DELAY_MS),
      GIM_BACKEND: config.backend,
      ...(config.threads ? { TF_NUM_INTRAOP_THREADS: String(config.threads) } : {}),
    });
    try {
      servers.push({
        mode,
        label,
        env: server.env,
        backend: server.ready.backend.name,
        devices: server.ready.backend.devices,
      });
      progress(`${label} ${mode}: server ready on ${server.base}`);
      httpVector ??= (await probeOnce(server.base, pngs[0] as Buffer)).vector;
      await drive(server.base, pngs, Math.max(...CLIENTS), WARMUP_S);
      progress(`${label} ${mode}: warmed up`);
      for (const clients of CLIENTS) {
        const before = await scrape(server.base);
        const cpuBefore = await cpuSnapshot(server.pid);
        const load = await drive(server.base, pngs, clients, DURATION_S);
        const cpu = cpuUse(server.pid, cpuBefore, await cpuSnapshot(server.pid));
        const side = serverSide(before, await scrape(server.base));
        rows.push({ backend: label, mode, clients, ...load, server: side, cpuCores: cpu });
        const failed = load.non2xx + load.errors;
        progress(
          `${label} ${mode}, ${clients} clients: ${load.requestsPerSecond.toFixed(0)} req/s, ` +
            `p50 ${load.latencyP50Ms} ms, p99 ${load.latencyP99Ms} ms, ` +
            `batch ${side.meanBatchSize?.toFixed(1) ?? '-'}, ` +
            `event loop p99 sample ${side.eventLoopP99Ms?.toFixed(1) ?? '-'} ms ` +
            `(delay ${side.eventLoopDelayP99Ms?.toFixed(1) ?? '-'} ms), ` +
            `cores: server ${fmt(cpu.server)} (main ${fmt(cpu.serverMain)}, ` +
            `worker ${fmt(cpu.serverBusiestOther)}), autocannon ${fmt(cpu.loadGenerator)}, ` +
            `other processes ${fmt(cpu.otherProcesses)}` +
            (failed > 0 ? `, ${failed} FAILED (${JSON.stringify(side.statusCodes)})` : ''),
        );
      }
    } finally {
      await server.stop();
    }
  }

  if (raws.some((r) => r.backend === config.backend)) return; // one raw run per backend
  // TensorFlow reads TF_NUM_INTRAOP_THREADS once per process, when it first loads.
  if (config.threads) process.env.TF_NUM_INTRAOP_THREADS ??= String(config.threads);
  progress(`raw: InferenceClient, batches of ${RAW_BATCH}, backend ${config.backend}`);
  const raw = await rawThroughput(pixels, config.backend, DURATION_S);
  raws.push({ backend: config.backend, label, ...raw });
  progress(
    `raw: ${raw.itemsPerSecond.toFixed(0)} items/s (${raw.meanBatchMs.toFixed(1)} ms/batch), ` +
      `cores: bench ${fmt(raw.cpuCores.benchProcess)}, other processes ${fmt(raw.cpuCores.otherProcesses)}`,
  );
  // HTTP and raw embed the same decoded image through the same stack: their vectors must agree.
  maxAbsDiff.set(
    config.backend,
    httpVector
      ? Math.max(...httpVector.map((v, i) => Math.abs(v - (raw.first[i] as number))))
      : null,
  );
}

printTable(
  ['decode path', 'CPU ms/image', 'wall ms/image'],
  decoding.rows.map((r) => [r.path, r.cpuMsPerImage.toFixed(3), r.wallMsPerImage.toFixed(3)]),
);
process.stdout.write(
  `decode: the server's decodeImage of the ${pngs.length} bench PNGs, 64 at a time; CPU of all ` +
    `threads (sharp decodes on libuv's pool). default decodes ` +
    `${(decoding.inlineShare * 100).toFixed(0)}% of them inline (pngjs).\n\n`,
);
printTable(
  [
    'backend',
    'mode',
    'clients',
    'req/s',
    'p50 ms',
    'p99 ms',
    'errors',
    'batch',
    'queue ms',
    'loop p99 sample/delay ms',
    'cores main/worker/all',
    'other cores',
  ],
  rows.map((r) => [
    r.backend,
    r.mode,
    r.clients,
    r.requestsPerSecond.toFixed(0),
    r.latencyP50Ms,
    r.latencyP99Ms,
    r.non2xx + r.errors,
    r.server.meanBatchSize?.toFixed(1) ?? '-',
    r.server.meanQueueMs?.toFixed(1) ?? '-',
    `${fmt(r.server.eventLoopP99Ms, 1)}/${fmt(r.server.eventLoopDelayP99Ms, 1)}`,
    `${fmt(r.cpuCores.serverMain)}/${fmt(r.cpuCores.serverBusiestOther)}/${fmt(r.cpuCores.server)}`,
    fmt(r.cpuCores.otherProcesses),
  ]),
);
process.stdout.write(
  'errors: non-2xx responses + connection errors. batch/queue: mean items per forward pass and ' +
    'mean queue wait, from the server. loop p99: the server event loop, monitorEventLoopDelay ' +
    `sampled every ${EVENT_LOOP_RESOLUTION_MS} ms: the p99 sample as read (it includes the ` +
    'period: an idle loop reads ~10 ms) and the p99 delay (sample minus the period). ' +
    'cores: CPU-seconds per second of the ' +
    "server's main thread, its busiest other thread (the inference worker) and all its threads; " +
    'other cores: processes other than the server and this one (should be ~0).\n\n',
);

const topClients = Math.max(...CLIENTS);
const checks: Record<string, number | null> = {};
for (const { backend, threads } of configs) {
  const label = threads ? `${backend} x${threads}` : backend;
  const raw = raws.find((r) => r.backend === backend);
  const top = rows.find(
    (r) => r.backend === label && r.mode === 'batching on' && r.clients === topClients,
  );
  const topOff = rows.find(
    (r) => r.backend === label && r.mode === 'batching off' && r.clients === topClients,
  );
  if (raw?.label === label) checks[`${backend}: rawItemsPerSecond`] = raw.itemsPerSecond;
  checks[`${label}: httpOverRaw (batching on, ${topClients} clients)`] =
    top && raw ? top.requestsPerSecond / raw.itemsPerSecond : null;
  checks[`${label}: eventLoopDelayP99Ms (batching on, ${topClients} clients)`] =
    top?.server.eventLoopDelayP99Ms ?? null;
  checks[`${label}: eventLoopSampleP99Ms, period included (batching on, ${topClients} clients)`] =
    top?.server.eventLoopP99Ms ?? null;
  checks[`${label}: batching on/off req/s (${topClients} clients)`] =
    top && topOff ? top.requestsPerSecond / topOff.requestsPerSecond : null;
  if (raw?.label === label)
    checks[`${backend}: max |HTTP - raw| of image 0`] = maxAbsDiff.get(backend) ?? null;
}
const wasmTop = rows.find(
  (r) => r.backend === 'wasm' && r.mode === 'batching on' && r.clients === topClients,
);
for (const r of rows.filter((x) => x.mode === 'batching on' && x.clients === topClients))
  if (wasmTop && r.backend !== 'wasm')
    checks[`${r.backend} / wasm req/s (batching on, ${topClients} clients)`] =
      r.requestsPerSecond / wasmTop.requestsPerSecond;
checks.errors = rows.reduce((s, r) => s + r.non2xx + r.errors, 0);
// CPU taken by processes other than the server and this one: above ~0.2 the numbers are low.
checks['max other-process cores in a run'] = Math.max(
  0,
  ...[
    ...rows.map((r) => r.cpuCores.otherProcesses),
    ...raws.map((r) => r.cpuCores.otherProcesses),
  ].map((v) => v ?? 0),
);
printTable(
  ['check', 'value', 'target'],
  Object.entries(checks).map(([k, v]) => [
    k,
    v === null
      ? '-'
      : Math.abs(v) < 10
        ? v.toPrecision(3)
        : Math.abs(v) < 1000
          ? v.toFixed(1)
          : v.toFixed(0),
    k.includes('httpOverRaw')
      ? `>= ${TARGETS.httpOverRaw}`
      : k.includes('eventLoop')
        ? `< ${TARGETS.eventLoopP99Ms}`
        : k === 'errors'
          ? '0'
          : k.startsWith('max other')
            ? '< 0.2'
            : '',
  ]),
);

await writeResult(values.out as string, {
  machine: machine(),
  data: `fashion-mnist-mini test fixture, first ${IMAGES} images as 8-bit ${PNG_COLOUR} PNG`,
  decoding,
  config: {
    route: `POST ${ROUTE}`,
    durationSeconds: DURATION_S,
    warmupSeconds: WARMUP_S,
    clients: CLIENTS,
    rawBatchSize: RAW_BATCH,
    layer: LAYER,
    servers,
  },
  targets: TARGETS,
  otherProcessCoresBeforeRun: quiet,
  raw: raws.map((r) => ({
    backend: r.label,
    itemsPerSecond: r.itemsPerSecond,
    batches: r.batches,
    meanBatchMs: r.meanBatchMs,
    cpuCores: r.cpuCores,
  })),
  rows,
  checks,
  notes: [
    'autocannon runs in the bench process, on the same machine as the server: they share the CPUs.',
    `Event-loop figures are prom-client default metrics (monitorEventLoopDelay, resolution ${EVENT_LOOP_RESOLUTION_MS} ms, ` +
      'reset on every scrape); a sample includes the timer period, the delay is the sample minus it.',
    "server.statusCodes counts a few 499s (and rejected 'cancelled') per run: the requests in " +
      'flight when autocannon stops and closes its connections; they are not errors.',
  ],
});
if ((checks.errors ?? 0) > 0) process.exitCode = 1;
