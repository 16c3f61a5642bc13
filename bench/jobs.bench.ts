/**
 * npm run bench:jobs — what a training job and a label move cost the clients of the embedding API.
 *
 * Starts the built server (`node dist/src/main.js`, rebuilt first when stale) on a temporary
 * MODELS_DIR holding the shipped fashion-gim stack (version 1, `stable`) and a version 2 retrained
 * from module 3 by the `gim` CLI on the committed fixture (a few steps; `latest`), with
 * ADMIN_TOKEN set and DATA_ROOT=test/fixtures. Then, in one run:
 *
 * 1. Serving under a training job. A closed loop of --clients autocannon connections posts one
 *    Fashion-MNIST PNG per request to POST /v1/models/fashion-gim/embeddings?layer=last&pooling=mean
 *    (items/s = 2xx requests/s), in three phases of the same load:
 *    (a) no job, --idle-seconds;
 *    (b) while an encoder job (POST /admin/v1/training-jobs: the stack's own recipe, channels
 *        16/32/64, batch 32, on the 600-image fixture, epochs enough to outlast the phase) trains:
 *        the local runner's `gim` child process at nice JOB_NICENESS (10), --loaded-seconds. Before
 *        the load starts the job trains alone for --train-alone-seconds, so that its rate with and
 *        without serving load can be compared (from its record's progress: steps and trainer
 *        timestamps). Cancelled (POST .../cancel) after the phase;
 *    (c) no job again, --idle-seconds: idle before vs after shows the drift of a shared machine.
 *    Ratios loaded/idle-before of throughput and p50/p99, and CPU (cores) of the server, the
 *    trainer, this process (autocannon) and everything else on the machine per phase.
 * 2. A label move as clients see it. --clients closed-loop clients (node:http, keep-alive) embed
 *    against `?label=stable` (the embeddings route takes a label as `label`; `version` is a
 *    number), and `stable` is moved --moves times 1 -> 2 -> 1 ... with
 *    PUT /admin/v1/models/fashion-gim/labels/stable and If-Match (the ETag read by GET just
 *    before). Per move: the PUT's latency (it loads and warms the target first: only the first
 *    move finds it cold), the time from the PUT's answer until every client has had an answer
 *    from the new version (REF_CACHE_MS bounds it), failed requests (must be 0), answers from the
 *    old version after a client had the new one (must be 0), p99 of the requests sent during the
 *    switch against the --move-before-seconds before it.
 *
 * Writes bench/results/jobs.json. Options: --clients N (16), --warmup S (5), --idle-seconds S
 * (20), --loaded-seconds S (30), --train-alone-seconds S (8), --moves N (4),
 * --move-before-seconds S (3), --move-settle-seconds S (1), --ref-cache-ms N (server's
 * REF_CACHE_MS; default: the server's own, 1000), --niceness N (server's JOB_NICENESS; default
 * its own, 10), --backend NAME (GIM_BACKEND of the server, its trainer and the CLI; default: the
 * best available), --out PATH.
 */
import { spawnSync } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { fixturePngs } from '../test/e2e/serve-fixtures.js';
import {
  FIXTURE_DIR,
  machine,
  machineBusyTicks,
  printTable,
  processTicks,
  TICKS_PER_SECOND,
  writeResult,
} from './common.js';
import { analyseMove, median, type Answer, type MoveAnalysis } from './label-switch.js';
import { buildIfStale, loadOf, startServer, type Load, type Server } from './server.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '16' },
    warmup: { type: 'string', default: '5' },
    'idle-seconds': { type: 'string', default: '20' },
    'loaded-seconds': { type: 'string', default: '30' },
    'train-alone-seconds': { type: 'string', default: '8' },
    moves: { type: 'string', default: '4' },
    'move-before-seconds': { type: 'string', default: '3' },
    'move-settle-seconds': { type: 'string', default: '1' },
    'ref-cache-ms': { type: 'string' },
    niceness: { type: 'string' },
    backend: { type: 'string' },
    'one-replica': { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/jobs.json' },
  },
});
const CLIENTS = positive('clients', values.clients);
const WARMUP_S = positive('warmup', values.warmup);
const IDLE_S = positive('idle-seconds', values['idle-seconds']);
const LOADED_S = positive('loaded-seconds', values['loaded-seconds']);
const ALONE_S = positive('train-alone-seconds', values['train-alone-seconds']);
const MOVES = positive('moves', values.moves);
const MOVE_BEFORE_S = positive('move-before-seconds', values['move-before-seconds']);
const MOVE_SETTLE_S = positive('move-settle-seconds', values['move-settle-seconds']);

const ROOT = new URL('..', import.meta.url).pathname;
const MODEL = 'fashion-gim';
const ROUTE = `/v1/models/${MODEL}/embeddings?layer=last&pooling=mean`;
const LABEL_ROUTE = `${ROUTE}&label=stable`;
const TOKEN = 'bench-jobs-admin-token-0123456789';
const BATCH = 32;
/** The job's epochs: far more than the phases need (it is cancelled); ~4 s each here. */
const JOB_EPOCHS = 1000;
const PNGS = 64;

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name}: expected a positive number, got "${text}"`);
  return n;
}

const log = (line: string) => process.stderr.write(`${line}\n`);
const fmt = (v: number | null | undefined, digits = 2) =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
const ratio = (a: number | null | undefined, b: number | null | undefined) =>
  a === null || a === undefined || b === null || b === undefined || b === 0 ? null : a / b;

const plannedSeconds =
  25 + WARMUP_S + 2 * IDLE_S + ALONE_S + LOADED_S + MOVES * (MOVE_BEFORE_S + MOVE_SETTLE_S + 2);
const started = performance.now();
const progress = (what: string) => {
  const elapsed = (performance.now() - started) / 1000;
  log(
    `${what} (elapsed ${elapsed.toFixed(0)} s, ETA ~${Math.max(0, plannedSeconds - elapsed).toFixed(0)} s)`,
  );
};

// ---------------------------------------------------------------- admin API

async function admin<T>(
  server: Server,
  method: string,
  path: string,
  opts: { body?: unknown; headers?: Record<string, string>; expect?: number[] } = {},
): Promise<{ status: number; etag: string | null; body: T }> {
  const res = await fetch(`${server.base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...opts.headers,
    },
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  if (!(opts.expect ?? [200]).includes(res.status))
    throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
  return { status: res.status, etag: res.headers.get('etag'), body: JSON.parse(text) as T };
}

interface JobView {
  id: string;
  status: string;
  message?: string;
  attempts: { runnerRef?: string; exitCode?: number | null }[];
  progress?: {
    globalStep: number;
    epoch: number;
    unitsPerSecond: number;
    itemsPerSecond: number;
    unitName: string;
    at: string;
  };
}

const getJob = (server: Server, id: string) =>
  admin<JobView>(server, 'GET', `/admin/v1/training-jobs/${id}`).then((r) => r.body);

/** Training rate between two progress reports of the job, in its units (patches) per second. */
function trainingRate(a: JobView['progress'], b: JobView['progress']) {
  if (a === undefined || b === undefined || b.globalStep <= a.globalStep) return null;
  const seconds = (Date.parse(b.at) - Date.parse(a.at)) / 1000;
  const unitsPerItem = b.unitsPerSecond / b.itemsPerSecond; // patches per image
  const stepsPerSecond = (b.globalStep - a.globalStep) / seconds;
  return {
    unitsPerSecond: stepsPerSecond * BATCH * unitsPerItem,
    unitName: b.unitName,
    stepsPerSecond,
    steps: b.globalStep - a.globalStep,
    seconds,
  };
}

// ---------------------------------------------------------------- CPU

interface CpuSnapshot {
  at: number;
  machine: number | null;
  server: number | null;
  trainer: number | null;
  bench: NodeJS.CpuUsage;
}

async function cpuSnapshot(serverPid: number, trainerPid?: number): Promise<CpuSnapshot> {
  const [m, s, t] = await Promise.all([
    machineBusyTicks(),
    processTicks(serverPid),
    trainerPid === undefined ? null : processTicks(trainerPid),
  ]);
  return {
    at: performance.now(),
    machine: m,
    server: s?.ticks ?? null,
    trainer: t?.ticks ?? null,
    bench: process.cpuUsage(),
  };
}

/** Cores (CPU-seconds per second) over a phase: the server, the trainer, this process, the rest. */
interface CpuUse {
  server: number | null;
  trainer: number | null;
  loadGenerator: number;
  otherProcesses: number | null;
}

function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const cores = (x: number | null, y: number | null) =>
    x === null || y === null ? null : (y - x) / TICKS_PER_SECOND / seconds;
  const bench = process.cpuUsage(a.bench);
  const loadGenerator = (bench.user + bench.system) / 1e6 / seconds;
  const server = cores(a.server, b.server);
  const trainer = cores(a.trainer, b.trainer);
  const all = cores(a.machine, b.machine);
  const otherProcesses =
    all === null || server === null
      ? null
      : Math.max(0, all - server - (trainer ?? 0) - loadGenerator);
  return { server, trainer, loadGenerator, otherProcesses };
}

// ---------------------------------------------------------------- 1. serving under a job

/** A closed loop of `connections` clients for `seconds`, with a progress line every 5 s. */
async function drive(
  server: Server,
  pngs: Buffer[],
  seconds: number,
  what: string,
  onProgress?: () => Promise<string>,
): Promise<Load> {
  let next = 0;
  let ok = 0;
  let okAtLastLine = 0;
  let lineAt = performance.now();
  const t0 = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    const rate = (ok - okAtLastLine) / ((now - lineAt) / 1000);
    [okAtLastLine, lineAt] = [ok, now];
    void (onProgress?.() ?? Promise.resolve('')).then((extra) =>
      progress(
        `${what}: ${((now - t0) / 1000).toFixed(0)}/${seconds} s, ${rate.toFixed(0)} items/s` +
          (extra ? `, ${extra}` : ''),
      ),
    );
  }, 5000);
  try {
    const result = await new Promise<autocannon.Result>((resolve, reject) => {
      const instance = autocannon(
        {
          url: `${server.base}${ROUTE}`,
          connections: CLIENTS,
          duration: seconds,
          timeout: 30,
          requests: [
            {
              method: 'POST',
              headers: { 'content-type': 'image/png' },
              setupRequest: (req) => ({ ...req, body: pngs[next++ % pngs.length] }),
            },
          ],
        },
        (error: unknown, r) => (error ? reject(error as Error) : resolve(r)),
      );
      instance.on('response', (_client, status) => {
        if (status >= 200 && status < 300) ok++;
      });
    });
    return loadOf(result);
  } finally {
    clearInterval(ticker);
  }
}

interface Phase {
  phase: 'idle before' | 'training' | 'idle after';
  load: Load;
  cpuCores: CpuUse;
}

async function measured(
  server: Server,
  pngs: Buffer[],
  phase: Phase['phase'],
  seconds: number,
  trainerPid?: number,
  onProgress?: () => Promise<string>,
): Promise<Phase> {
  const a = await cpuSnapshot(server.pid, trainerPid);
  const load = await drive(server, pngs, seconds, phase, onProgress);
  const cpuCores = cpuUse(a, await cpuSnapshot(server.pid, trainerPid));
  progress(
    `${phase}: ${load.requestsPerSecond.toFixed(0)} items/s, p50 ${load.latencyP50Ms} ms, ` +
      `p99 ${load.latencyP99Ms} ms, failed ${load.non2xx + load.errors}; cores: server ` +
      `${fmt(cpuCores.server)}, trainer ${fmt(cpuCores.trainer)}, autocannon ` +
      `${fmt(cpuCores.loadGenerator)}, other processes ${fmt(cpuCores.otherProcesses)}`,
  );
  return { phase, load, cpuCores };
}

interface TrainingJob {
  id: string;
  trainerPid: number;
  trainerNice: number | null;
  backend: string | null;
  startSeconds: number;
  alone: ReturnType<typeof trainingRate>;
  loaded: ReturnType<typeof trainingRate>;
  aloneCpuCores: CpuUse;
  statusAfterLoad: string;
  cancel: { seconds: number; status: string; exitCode: number | null };
}

async function servingUnderJob(
  server: Server,
  pngs: Buffer[],
): Promise<{ phases: Phase[]; job: TrainingJob }> {
  await drive(server, pngs, WARMUP_S, 'warm-up');
  const phases = [await measured(server, pngs, 'idle before', IDLE_S)];

  const submitAt = performance.now();
  const submitted = await admin<JobView>(server, 'POST', '/admin/v1/training-jobs', {
    expect: [202],
    body: {
      kind: 'encoder',
      model: MODEL,
      timeout_seconds: 3600,
      max_resumes: 0,
      spec: {
        modality: 'image',
        data: 'fashion-mnist-mini',
        channels: [16, 32, 64], // the shipped stack's recipe
        epochs: JOB_EPOCHS,
        batch_size: BATCH,
        labels: ['latest'],
      },
    },
  });
  const id = submitted.body.id;
  progress(`job ${id} submitted; waiting for its first progress report`);
  let job = await getJob(server, id);
  for (const until = Date.now() + 120_000; job.progress === undefined;) {
    if (!['queued', 'starting', 'running'].includes(job.status) || Date.now() > until)
      throw new Error(`the job did not start training: ${JSON.stringify(job)}`);
    await sleep(250);
    job = await getJob(server, id);
  }
  const startSeconds = (performance.now() - submitAt) / 1000;
  const trainerPid = Number(job.attempts.at(-1)?.runnerRef);
  // The job has epochs for an hour: if this process dies (Ctrl-C kills the server with SIGKILL,
  // which leaves its trainer running), the trainer goes with it.
  const killTrainer = () => {
    try {
      process.kill(trainerPid, 'SIGKILL');
    } catch {
      // gone already
    }
  };
  process.once('exit', killTrainer);
  const trainerNice = (await processTicks(trainerPid))?.nice ?? null;
  const logs = await fetch(`${server.base}/admin/v1/training-jobs/${id}/logs?tail=50`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  }).then((r) => r.text());
  const backend = /backend (\S+)$/m.exec(logs)?.[1] ?? null;
  progress(
    `job ${id} trains (pid ${trainerPid}, nice ${trainerNice}, backend ${backend}) after ` +
      `${startSeconds.toFixed(1)} s; training alone for ${ALONE_S} s`,
  );

  const aloneCpu = await cpuSnapshot(server.pid, trainerPid);
  const aloneFrom = job.progress;
  await sleep(ALONE_S * 1000);
  const aloneTo = (await getJob(server, id)).progress;
  const aloneCpuCores = cpuUse(aloneCpu, await cpuSnapshot(server.pid, trainerPid));
  const alone = trainingRate(aloneFrom, aloneTo);
  progress(
    `training alone: ${fmt(alone?.unitsPerSecond, 0)} ${alone?.unitName ?? 'units'}/s, ` +
      `trainer ${fmt(aloneCpuCores.trainer)} cores, other processes ${fmt(aloneCpuCores.otherProcesses)}`,
  );

  const loadedFrom = (await getJob(server, id)).progress;
  const loadedPhase = await measured(server, pngs, 'training', LOADED_S, trainerPid, async () => {
    const p = (await getJob(server, id)).progress;
    const rate = trainingRate(loadedFrom, p);
    return `job at epoch ${p?.epoch ?? '-'}, ${fmt(rate?.unitsPerSecond, 0)} ${p?.unitName ?? 'units'}/s`;
  });
  phases.push(loadedPhase);
  const after = await getJob(server, id);
  const loaded = trainingRate(loadedFrom, after.progress);
  progress(
    `training under load: ${fmt(loaded?.unitsPerSecond, 0)} ${loaded?.unitName ?? 'units'}/s; job ${after.status}`,
  );

  const cancelAt = performance.now();
  await admin(server, 'POST', `/admin/v1/training-jobs/${id}/cancel`, {
    body: { reason: 'bench:jobs' },
    expect: [202],
  });
  const done = await admin<JobView>(server, 'GET', `/admin/v1/training-jobs/${id}?wait_seconds=60`);
  const cancel = {
    seconds: (performance.now() - cancelAt) / 1000,
    status: done.body.status,
    exitCode: done.body.attempts.at(-1)?.exitCode ?? null,
  };
  if (cancel.status === 'cancelled') process.off('exit', killTrainer);
  progress(`job ${id} ${cancel.status} ${cancel.seconds.toFixed(1)} s after the cancel`);

  phases.push(await measured(server, pngs, 'idle after', IDLE_S));
  return {
    phases,
    job: {
      id,
      trainerPid,
      trainerNice,
      backend,
      startSeconds,
      alone,
      loaded,
      aloneCpuCores,
      statusAfterLoad: after.status,
      cancel,
    },
  };
}

// ---------------------------------------------------------------- 2. label moves

/** POST one PNG over a keep-alive connection: status and the version the answer names. */
function embedOnce(
  agent: Agent,
  url: URL,
  png: Buffer,
): Promise<{ status: number; version: number | null }> {
  return new Promise((resolve) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'image/png', 'content-length': png.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let version: number | null = null;
          if (res.statusCode === 200) {
            const body = JSON.parse(Buffer.concat(chunks).toString()) as { version?: unknown };
            version = typeof body.version === 'number' ? body.version : null;
          }
          resolve({ status: res.statusCode ?? 0, version });
        });
        res.on('error', () => resolve({ status: 0, version: null }));
      },
    );
    req.on('error', () => resolve({ status: 0, version: null }));
    req.end(png);
  });
}

/** The clients of one replica: where they send, what they got. */
interface ClientGroup {
  replica: 'put' | 'other';
  url: URL;
  clients: number;
  answers: Answer[];
}

type MoveRow = MoveAnalysis & { replica: ClientGroup['replica']; move: number; cold: boolean };

interface LabelMoves {
  route: string;
  refCacheMs: string;
  clients: Record<ClientGroup['replica'], number>;
  moves: MoveRow[];
  answers: number;
  failedInAll: number;
}

/**
 * Moves `stable` MOVES times through the admin API of `server` while closed-loop clients embed
 * against `?label=stable`: on `server` itself and, when `other` is given, on that second replica
 * of the same MODELS_DIR (CLIENTS split between them), which learns of a move only by reading
 * labels.json again (REF_CACHE_MS) and then loads the version in the background before it switches.
 */
async function labelMoves(
  server: Server,
  other: Server | null,
  pngs: Buffer[],
): Promise<LabelMoves> {
  const onOther = other === null ? 0 : Math.floor(CLIENTS / 2);
  const groups: ClientGroup[] = [
    {
      replica: 'put',
      url: new URL(`${server.base}${LABEL_ROUTE}`),
      clients: CLIENTS - onOther,
      answers: [],
    },
    ...(other === null
      ? []
      : [
          {
            replica: 'other' as const,
            url: new URL(`${other.base}${LABEL_ROUTE}`),
            clients: onOther,
            answers: [],
          },
        ]),
  ];
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS });
  let stop = false;
  let next = 0;
  const loops = groups.flatMap((g) =>
    Array.from({ length: g.clients }, async (_, client) => {
      while (!stop) {
        const start = performance.now();
        const { status, version } = await embedOnce(
          agent,
          g.url,
          pngs[next++ % pngs.length] as Buffer,
        );
        g.answers.push({ client, start, end: performance.now(), status, version });
      }
    }),
  );
  const versions = [1, 2];
  const moves: MoveRow[] = [];
  // PRELOAD warmed the version `stable` named at start, on each replica.
  const warmed = new Map(groups.map((g) => [g.replica, new Set([1])]));
  try {
    await sleep(MOVE_BEFORE_S * 1000);
    for (let m = 0; m < MOVES; m++) {
      const from = versions[m % 2] as number;
      const to = versions[(m + 1) % 2] as number;
      const read = await admin<{ etag: string }>(server, 'GET', `/admin/v1/models/${MODEL}/labels`);
      const putStart = performance.now();
      await admin(server, 'PUT', `/admin/v1/models/${MODEL}/labels/stable`, {
        headers: { 'if-match': read.etag ?? read.body.etag },
        body: { version: to, reason: `bench:jobs move ${m + 1}` },
      });
      const putEnd = performance.now();
      // Until every client has had an answer from `to` (or 30 s), then the settle time.
      const watch = groups.map((g) => ({ g, seen: new Set<number>(), scanned: g.answers.length }));
      const allSeen = () => watch.every((w) => w.seen.size === w.g.clients);
      for (const until = Date.now() + 30_000; !allSeen() && Date.now() < until;) {
        await sleep(10);
        for (const w of watch) {
          for (const a of w.g.answers.slice(w.scanned))
            if (a.status === 200 && a.version === to) w.seen.add(a.client);
          w.scanned = w.g.answers.length;
        }
      }
      await sleep(MOVE_SETTLE_S * 1000);
      for (const g of groups) {
        const analysis = analyseMove(
          g.answers,
          g.clients,
          { from, to, putStart, putEnd },
          { beforeMs: MOVE_BEFORE_S * 1000, settleMs: MOVE_SETTLE_S * 1000 },
        );
        const hot = warmed.get(g.replica) as Set<number>;
        moves.push({ ...analysis, replica: g.replica, move: m + 1, cold: !hot.has(to) });
        hot.add(to);
        progress(
          `move ${m + 1}/${MOVES} stable ${from} -> ${to}, ${g.replica === 'put' ? 'replica that took the PUT' : 'other replica'}: ` +
            `PUT ${analysis.putMs.toFixed(0)} ms, every client on ${to} ${fmt(analysis.switchMs, 0)} ms after its answer, ` +
            `failed ${analysis.failed}, p99 before/during ${fmt(analysis.before.p99Ms, 1)}/` +
            `${fmt(analysis.during.p99Ms, 1)} ms`,
        );
      }
      // The next move's baseline: the settle time already passed, the rest of it here.
      await sleep(Math.max(0, MOVE_BEFORE_S - MOVE_SETTLE_S) * 1000);
    }
  } finally {
    stop = true;
    await Promise.all(loops);
    agent.destroy();
  }
  const all = groups.flatMap((g) => g.answers);
  return {
    route: `POST ${LABEL_ROUTE}`,
    refCacheMs: server.env.REF_CACHE_MS ?? process.env.REF_CACHE_MS ?? '1000 (the default)',
    clients: { put: CLIENTS - onOther, other: onOther },
    moves,
    answers: all.length,
    failedInAll: all.filter((a) => a.status !== 200).length,
  };
}

// ---------------------------------------------------------------- the run

await buildIfStale();
const pngs = await fixturePngs(PNGS);
const modelsDir = await mkdtemp(join(tmpdir(), 'gim-bench-jobs-'));
try {
  await cp(join(ROOT, 'models', MODEL), join(modelsDir, MODEL), { recursive: true });
  const backendEnv: Record<string, string> = values.backend ? { GIM_BACKEND: values.backend } : {};
  const refCacheEnv: Record<string, string> = values['ref-cache-ms']
    ? { REF_CACHE_MS: values['ref-cache-ms'] }
    : {};
  // Version 2: modules 1-2 of version 1 kept, module 3 retrained for a few steps; `latest` only.
  const trainAt = performance.now();
  const trained = spawnSync(
    process.execPath,
    [
      join(ROOT, 'dist/src/cli/main.js'),
      'train',
      'image',
      `--name=${MODEL}`,
      `--models-dir=${modelsDir}`,
      `--data=${FIXTURE_DIR}`,
      `--parent=${MODEL}@1`,
      '--from-module=3',
      '--epochs=1',
      '--max-steps-per-epoch=4',
      '--label=latest',
    ],
    { env: { ...process.env, ...backendEnv }, encoding: 'utf8' },
  );
  if (trained.status !== 0)
    throw new Error(`gim train (version 2) failed: ${trained.status}\n${trained.stderr}`);
  progress(
    `version 2 of ${MODEL} published by the CLI in ${((performance.now() - trainAt) / 1000).toFixed(1)} s`,
  );

  const server = await startServer({
    MODELS_DIR: modelsDir,
    PRELOAD: MODEL,
    ADMIN_TOKEN: TOKEN,
    DATA_ROOT: join(ROOT, 'test/fixtures'),
    ...backendEnv,
    ...refCacheEnv,
    ...(values.niceness ? { JOB_NICENESS: values.niceness } : {}),
  });
  let result;
  try {
    progress(`server ready on ${server.base}, backend ${server.ready.backend.name}`);
    const serving = await servingUnderJob(server, pngs);
    // A second replica on the same MODELS_DIR (no admin token: it serves only), for the moves.
    const other = values['one-replica']
      ? null
      : await startServer({ MODELS_DIR: modelsDir, PRELOAD: MODEL, ...backendEnv, ...refCacheEnv });
    try {
      if (other) progress(`second replica ready on ${other.base}`);
      const labels = await labelMoves(server, other, pngs);
      result = { serving, labels, backend: server.ready.backend, env: server.env };
    } finally {
      await other?.stop();
    }
  } finally {
    await server.stop();
  }
  await report(result);
} finally {
  await rm(modelsDir, { recursive: true, force: true });
}

async function report(r: {
  serving: { phases: Phase[]; job: TrainingJob };
  labels: LabelMoves;
  backend: { name: string; devices: string[] };
  env: Record<string, string>;
}): Promise<void> {
  const { phases, job } = r.serving;
  const [idle, loaded, idleAfter] = phases as [Phase, Phase, Phase];
  process.stdout.write(
    `\nserver backend ${r.backend.name}; trainer backend ${job.backend ?? '?'} at nice ` +
      `${job.trainerNice ?? '?'}; ${CLIENTS} closed-loop clients, 1 PNG per request\n\n`,
  );
  printTable(
    [
      'phase',
      'items/s',
      'p50 ms',
      'p99 ms',
      'failed',
      'cores server/trainer/bench/other',
      'job units/s',
    ],
    phases.map((p) => [
      p.phase,
      p.load.requestsPerSecond.toFixed(0),
      p.load.latencyP50Ms,
      p.load.latencyP99Ms,
      p.load.non2xx + p.load.errors,
      `${fmt(p.cpuCores.server)}/${fmt(p.cpuCores.trainer)}/${fmt(p.cpuCores.loadGenerator)}/` +
        fmt(p.cpuCores.otherProcesses),
      p.phase === 'training' ? fmt(job.loaded?.unitsPerSecond, 0) : '-',
    ]),
  );
  const serving = {
    'throughput training / idle before': ratio(
      loaded.load.requestsPerSecond,
      idle.load.requestsPerSecond,
    ),
    'p50 training / idle before': ratio(loaded.load.latencyP50Ms, idle.load.latencyP50Ms),
    'p99 training / idle before': ratio(loaded.load.latencyP99Ms, idle.load.latencyP99Ms),
    'throughput idle after / idle before (drift)': ratio(
      idleAfter.load.requestsPerSecond,
      idle.load.requestsPerSecond,
    ),
    'job units/s under serving load / alone': ratio(
      job.loaded?.unitsPerSecond,
      job.alone?.unitsPerSecond,
    ),
  };
  process.stdout.write(
    `\njob ${job.id}: started training ${job.startSeconds.toFixed(1)} s after submit; ` +
      `${fmt(job.alone?.unitsPerSecond, 0)} ${job.alone?.unitName ?? 'units'}/s alone ` +
      `(${ALONE_S} s, trainer ${fmt(job.aloneCpuCores.trainer)} cores), ` +
      `${fmt(job.loaded?.unitsPerSecond, 0)} under serving load; ${job.cancel.status} ` +
      `${job.cancel.seconds.toFixed(1)} s after the cancel (exit ${job.cancel.exitCode})\n\n`,
  );
  printTable(
    ['ratio', 'value'],
    Object.entries(serving).map(([k, v]) => [k, fmt(v)]),
  );

  const { moves } = r.labels;
  const where = (replica: string) => (replica === 'put' ? 'the PUT' : 'other');
  process.stdout.write(
    `\nlabel moves: clients on ${r.labels.route}: ${r.labels.clients.put} on the replica that ` +
      `takes the PUT, ${r.labels.clients.other} on a second replica of the same MODELS_DIR; ` +
      `REF_CACHE_MS ${r.labels.refCacheMs}\n\n`,
  );
  printTable(
    [
      'move',
      'replica',
      'PUT ms',
      'all on new ms',
      'failed',
      'stale after PUT',
      'flip-backs',
      'p99 before ms',
      'p99 during ms',
      'n before/during',
    ],
    moves.map((m) => [
      `${m.move}: ${m.from} -> ${m.to}`,
      `${where(m.replica)}${m.cold ? ' (cold)' : ''}`,
      m.putMs.toFixed(0),
      fmt(m.switchMs, 0),
      m.failed,
      m.staleAfterPut,
      m.flipBacks,
      fmt(m.before.p99Ms, 1),
      fmt(m.during.p99Ms, 1),
      `${m.before.requests}/${m.during.requests}`,
    ]),
  );
  const summarise = (rows: MoveRow[]) => {
    const switches = rows.map((m) => m.switchMs);
    const switched = switches.filter((v): v is number => v !== null);
    return {
      moves: rows.length,
      putMsMedian: median(rows.map((m) => m.putMs)),
      putMsMax: Math.max(...rows.map((m) => m.putMs)),
      /** null: some client never got the new version. */
      switchMsMedian: switched.length === rows.length ? median(switched) : null,
      switchMsMax: switched.length === rows.length ? Math.max(...switched) : null,
      failed: rows.reduce((s, m) => s + m.failed, 0),
      flipBacks: rows.reduce((s, m) => s + m.flipBacks, 0),
      staleAfterPut: rows.reduce((s, m) => s + m.staleAfterPut, 0),
      p99DuringOverBeforeMedian: median(
        rows.flatMap((m) => {
          const q = ratio(m.during.p99Ms, m.before.p99Ms);
          return q === null ? [] : [q];
        }),
      ),
    };
  };
  const summary = Object.fromEntries(
    (['put', 'other'] as const)
      .filter((replica) => moves.some((m) => m.replica === replica))
      .map((replica) => [replica, summarise(moves.filter((m) => m.replica === replica))]),
  );
  process.stdout.write('\n');
  const columns = Object.keys(summary);
  const cell = (f: (x: ReturnType<typeof summarise>) => string) =>
    columns.map((c) => f(summary[c] as ReturnType<typeof summarise>));
  printTable(
    ['label moves (median / max)', ...columns.map(where).map((w) => `clients on ${w}`)],
    [
      ['PUT ms', ...cell((x) => `${fmt(x.putMsMedian, 0)} / ${fmt(x.putMsMax, 0)}`)],
      [
        'every client on the new version, ms after the PUT',
        ...cell((x) => `${fmt(x.switchMsMedian, 0)} / ${fmt(x.switchMsMax, 0)}`),
      ],
      ['p99 during / before the switch (median)', ...cell((x) => fmt(x.p99DuringOverBeforeMedian))],
      ['failed requests (must be 0)', ...cell((x) => String(x.failed))],
      ['flip-backs (must be 0)', ...cell((x) => String(x.flipBacks))],
      ['answers from the old version after the PUT', ...cell((x) => String(x.staleAfterPut))],
    ],
  );
  process.stdout.write(
    "all on new: from the PUT's answer to the last client's first answer from the new version. " +
      'stale after PUT: answers from the old version to requests sent after the PUT answered ' +
      '(the replica that takes the PUT clears its resolve cache; another reads labels.json again ' +
      'after REF_CACHE_MS, then loads the version before it switches). p99 before: requests sent ' +
      `in the ${MOVE_BEFORE_S} s before the PUT; during: from the PUT until every client of that ` +
      'replica had switched. (cold): that replica had not loaded the version yet.\n',
  );

  const all = Object.values(summary);
  const ok =
    all.every((x) => x.failed === 0 && x.flipBacks === 0 && x.switchMsMax !== null) &&
    phases.every((p) => p.load.non2xx + p.load.errors === 0) &&
    job.statusAfterLoad === 'running';
  if (job.statusAfterLoad !== 'running')
    log(`warning: the job was ${job.statusAfterLoad} at the end of the training phase`);
  await writeResult(values.out as string, {
    machine: machine(),
    backend: r.backend,
    serverEnv: { ...r.env, ADMIN_TOKEN: '(set)' },
    config: {
      clients: CLIENTS,
      route: `POST ${ROUTE}`,
      itemsPerRequest: 1,
      warmupSeconds: WARMUP_S,
      idleSeconds: IDLE_S,
      loadedSeconds: LOADED_S,
      trainAloneSeconds: ALONE_S,
      job: { channels: [16, 32, 64], batchSize: BATCH, data: 'test/fixtures/fashion-mnist-mini' },
      moves: MOVES,
      moveBeforeSeconds: MOVE_BEFORE_S,
      moveSettleSeconds: MOVE_SETTLE_S,
    },
    serving: { phases, job, ratios: serving },
    labels: { ...r.labels, summary },
    ok,
    notes: [
      'autocannon and the label-move clients run in the bench process, on the same machine as the server and the trainer.',
      'items/s: 2xx requests per second (one PNG each). cores: CPU-seconds per second from /proc.',
      'job units/s: patches/s from the job record (steps and the trainer timestamps of two progress reports).',
    ],
  });
  if (!ok) process.exitCode = 1;
}
