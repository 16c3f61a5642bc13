/**
 * npm run bench:classify — HTTP throughput of POST /v1/models/{name}/classifiers/{head}/classify,
 * and the test accuracy of a head per layer of the demo stack (the "layer sweep").
 *
 * Copies the demo stack `fashion-gim` into a temporary models directory, fits a head per layer
 * 1..3 (pooling grid2) in this process with `trainHead` on the committed Fashion-MNIST fixture
 * (with --full: the Debian full set, `apt-get install dataset-fashion-mnist`; minutes per layer on
 * a small CPU) and scores each on the test split; publishes the layer-3 head as `bench-clothes`. Then starts the
 * built server (`node dist/src/main.js`, rebuilt when stale) on that directory in a child process
 * and drives the classify route with autocannon: --clients connections (default 16), each request
 * a JSON body of --items base64 PNGs (default 32), top_k 3. Prints items/s, requests/s, p50/p99
 * and writes bench/results/classify.json. The server's MAX_QUEUE is raised to hold every client's
 * items at once. Options: --duration S (default 10), --warmup S
 * (default 3), --epochs N (head training, default 40), --out PATH.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import sharp from 'sharp';
import { selectBackend } from '../src/gim/backend/index.js';
import { trainHead } from '../src/gim/classify/train-head.js';
import type { ImageDataset } from '../src/gim/data/dataset.js';
import { HeadStore } from '../src/gim/store/head-store.js';
import { loadAnyStack } from '../src/cli/shared.js';
import { loadFashionMnist } from '../src/gim/data/idx.js';
import { FIXTURE_DIR, fashionMnist, machine, printTable, writeResult } from './common.js';
import { buildIfStale, loadOf, startServer, type Server } from './server.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    clients: { type: 'string', default: '16' },
    items: { type: 'string', default: '32' },
    epochs: { type: 'string', default: '40' },
    full: { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/classify.json' },
  },
});
const positive = (name: string, text: string | undefined): number => {
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name}: expected a positive number, got "${text}"`);
  return n;
};
const DURATION_S = positive('duration', values.duration);
const WARMUP_S = positive('warmup', values.warmup);
const CLIENTS = positive('clients', values.clients);
const ITEMS = positive('items', values.items);
const EPOCHS = positive('epochs', values.epochs);
const MODEL = 'fashion-gim';
const HEAD = 'bench-clothes';
const POOLING = 'grid2';
const ROOT = new URL('..', import.meta.url).pathname;
const log = (line: string) => process.stderr.write(`${line}\n`);

/** The fixture split, or with --full the Debian set (an error saying how to install it). */
async function dataset(split: 'train' | 'test'): Promise<ImageDataset> {
  if (values.full) return (await fashionMnist(split, { requireFull: true })).dataset;
  return loadFashionMnist(FIXTURE_DIR, split);
}

// ---------------------------------------------------------------- the layer sweep and the head

interface SweepRow {
  layer: number;
  dim: number;
  trainAccuracy: number;
  validationAccuracy: number | null;
  testAccuracy: number | null;
  bestEpoch: number;
  seconds: number;
}

async function sweepAndPublish(models: string): Promise<SweepRow[]> {
  const backend = await selectBackend({ log });
  log(`head training on tfjs backend ${backend.name}`);
  const { manifest, stack, spaceDigests } = await loadAnyStack(models, MODEL);
  const train = await dataset('train');
  const test = await dataset('test');
  const rows: SweepRow[] = [];
  try {
    for (let layer = 1; layer <= manifest.modules.length; layer++) {
      const started = performance.now();
      const trained = await trainHead({
        stack,
        manifest,
        spaceDigests,
        dataset: train,
        testDataset: test,
        layer,
        pooling: POOLING,
        options: { epochs: EPOCHS },
      });
      const { report } = trained;
      rows.push({
        layer,
        dim: trained.head.dim,
        trainAccuracy: report.train.accuracy,
        validationAccuracy: report.validation?.accuracy ?? null,
        testAccuracy: report.test?.accuracy ?? null,
        bestEpoch: report.bestEpoch,
        seconds: (performance.now() - started) / 1000,
      });
      if (layer === 3) await new HeadStore(models).publish(MODEL, HEAD, trained.draft);
    }
  } finally {
    stack.dispose();
  }
  return rows;
}

async function requestBody(dataset: ImageDataset): Promise<string> {
  const { images } = await dataset.read(Int32Array.from({ length: ITEMS }, (_, i) => i));
  const size = 28 * 28;
  const pngs = await Promise.all(
    Array.from({ length: ITEMS }, (_, i) =>
      sharp(
        Uint8Array.from(images.subarray(i * size, (i + 1) * size), (v) => Math.round(v * 255)),
        { raw: { width: 28, height: 28, channels: 1 } },
      )
        .toColourspace('b-w') // 8-bit grey, as the dataset is (sharp writes RGB by default)
        .png()
        .toBuffer(),
    ),
  );
  return JSON.stringify({ inputs: pngs.map((p) => ({ b64: p.toString('base64') })), top_k: 3 });
}

async function load(url: string, body: string, seconds: number) {
  const result = await autocannon({
    url,
    connections: CLIENTS,
    duration: seconds,
    timeout: 30,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const run = loadOf(result);
  return { ...run, itemsPerSecond: run.requestsPerSecond * ITEMS };
}

// ---------------------------------------------------------------- main

const models = await mkdtemp(join(tmpdir(), 'gim-classify-bench-'));
let server: Server | undefined;
try {
  await cp(join(ROOT, 'models', MODEL), join(models, MODEL), { recursive: true });
  const sweep = await sweepAndPublish(models);
  process.stdout.write(`\nlayer sweep: ${MODEL} pooling ${POOLING}, ${EPOCHS} epochs max\n`);
  const pct = (v: number | null) => (v === null ? '-' : `${(100 * v).toFixed(2)}%`);
  printTable(
    ['layer', 'dim', 'train', 'validation', 'test', 'best epoch', 'seconds'],
    sweep.map((r) => [
      r.layer,
      r.dim,
      pct(r.trainAccuracy),
      pct(r.validationAccuracy),
      pct(r.testAccuracy),
      r.bestEpoch,
      r.seconds.toFixed(1),
    ]),
  );

  await buildIfStale();
  server = await startServer({
    MODELS_DIR: models,
    MAX_ITEMS: String(Math.max(64, ITEMS)),
    // Every client's items fit in the queue at once (the default 256 would answer 429s).
    MAX_QUEUE: String(Math.max(256, 2 * CLIENTS * ITEMS)),
  });
  const backend = server.ready.backend.name;
  const url = `${server.base}/v1/models/${MODEL}/classifiers/${HEAD}/classify`;
  const body = await requestBody(await dataset('test'));
  const check = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  if (!check.ok) throw new Error(`classify answered ${check.status}: ${await check.text()}`);
  log(`warm-up ${WARMUP_S} s, then ${DURATION_S} s at ${CLIENTS} clients x ${ITEMS} items`);
  await load(url, body, WARMUP_S);
  const run = await load(url, body, DURATION_S);
  await server.stop();

  process.stdout.write(`\nclassify: ${CLIENTS} clients, ${ITEMS} items per request (JSON b64)\n`);
  printTable(
    ['backend', 'items/s', 'requests/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors'],
    [
      [
        backend,
        run.itemsPerSecond.toFixed(0),
        run.requestsPerSecond.toFixed(1),
        run.latencyP50Ms.toFixed(1),
        run.latencyP99Ms.toFixed(1),
        run.non2xx,
        run.errors,
      ],
    ],
  );
  await writeResult(values.out as string, {
    machine: machine(),
    backend,
    data: values.full ? 'fashion-mnist (full, Debian)' : 'fashion-mnist-mini fixture',
    head: { model: MODEL, name: HEAD, layer: 3, pooling: POOLING },
    layerSweep: sweep,
    load: { clients: CLIENTS, itemsPerRequest: ITEMS, durationSeconds: DURATION_S, ...run },
  });
} finally {
  await server?.stop();
  await rm(models, { recursive: true, force: true });
}
