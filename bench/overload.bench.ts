/**
 * npm run bench:overload — compute spent on requests already answered, under more load than the
 * server can serve; and whether an audio request at the default limits is answered in time.
 *
 * Starts the built server (`node dist/src/main.js`, rebuilt first when stale) in a child process
 * per scenario (--scenarios, default image,audio,fit):
 *
 * - image: the shipped fashion-gim stack; requests of 8 PNGs (multipart), with a deep queue
 *   (MAX_QUEUE 4096) and a short REQUEST_TIMEOUT_MS (--image-timeout-ms, 300).
 * - audio: a stack of the default audio recipe (`gim train audio`: 5 convs of 32 channels and a
 *   GRU of 32 units; built untrained here, which computes the same as a trained one), requests of
 *   4 clips of 1-3 s (16 kHz WAV), MAX_QUEUE 4096, REQUEST_TIMEOUT_MS --audio-timeout-ms (2000).
 *
 *   Each first measures the rate the server sustains (a closed loop of 16 or 4 clients for
 *   --capacity-seconds), then sends requests open-loop (at a fixed rate whatever the answers) at
 *   --overload times that rate (default 2), or at --rate req/s, for --duration seconds, and waits
 *   for every answer. Reported: requests answered 200/429/504/other; items the worker computed
 *   (the sum of `gim_items_total` over its outcomes); items computed for requests already
 *   answered, read from `gim_items_total{outcome="discarded"}` where the server has it, and on
 *   any server as computed minus the items of the 200 answers; p50/p99 of the 200s and how far
 *   past REQUEST_TIMEOUT_MS the latest 200 came (client-side times).
 *
 * - fit: the audio stack at the default settings (REQUEST_TIMEOUT_MS 10 s, MAX_ITEMS 64,
 *   MAX_BODY_BYTES 10 MiB), on an idle server, one request at a time of --fit-clips clips (8,16,32)
 *   of a few seconds each: speech from `npm run data:speech -- --out bench/data/speech` when it is
 *   there (16 kHz FLAC, needs espeak-ng, flite, sox, flac), else synthetic clips of 2.5-3.5 s.
 *   Reported: status, time, seconds of audio, the error's type; and, from the 200s, the compute
 *   time per second of audio, hence the seconds of audio that fit in the timeout.
 *
 * --server-dir DIR runs another checkout's build instead (e.g. the base commit's, for before and
 * after figures: `git archive <commit> | tar -x -C DIR`, `npm ci` there, then --server-dir DIR
 * --label before). Writes bench/results/overload-<label>.json (--label, default current; --out).
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/gim/backend/index.js';
import { audioModuleConfigs } from '../src/gim/encoders/audio-modules.js';
import { AudioEncoderStack } from '../src/gim/encoders/audio-stack.js';
import { defaultAudioAdapter } from '../src/gim/modality/audio.js';
import { StackStore } from '../src/gim/store/stack-store.js';
import { fixturePngs } from '../test/e2e/serve-fixtures.js';
import { untrainedDraft } from '../test/helpers/stack-draft.js';
import { machine, printTable, writeResult } from './common.js';
import { buildIfStale, startServer, type Server } from './server.js';

const ROOT = new URL('..', import.meta.url).pathname;
const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: 'image,audio,fit' },
    'server-dir': { type: 'string' },
    label: { type: 'string', default: 'current' },
    duration: { type: 'string', default: '20' },
    'capacity-seconds': { type: 'string', default: '8' },
    overload: { type: 'string', default: '2' },
    rate: { type: 'string' },
    'image-timeout-ms': { type: 'string', default: '300' },
    'audio-timeout-ms': { type: 'string', default: '2000' },
    'fit-clips': { type: 'string', default: '8,16,32' },
    speech: { type: 'string', default: join(ROOT, 'bench/data/speech') },
    out: { type: 'string' },
  },
});
const SCENARIOS = (values.scenarios as string).split(',');
const SERVER_DIR = values['server-dir'] ? resolve(values['server-dir']) : ROOT;
const LABEL = values.label as string;
const DURATION_S = positive('duration', values.duration);
const CAPACITY_S = positive('capacity-seconds', values['capacity-seconds']);
const OVERLOAD = positive('overload', values.overload);
const RATE = values.rate === undefined ? undefined : positive('rate', values.rate);
const FIT_CLIPS = (values['fit-clips'] as string).split(',').map((n) => positive('fit-clips', n));
const OUT = values.out ?? join(ROOT, `bench/results/overload-${LABEL}.json`);
const AUDIO_MODEL = 'speech-bench';
const DEEP_QUEUE = '4096';

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name}: expected a positive number, got "${text}"`);
  return n;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------- inputs

interface Part {
  bytes: Buffer;
  type: string;
  filename: string;
}

/** A multipart/form-data body with one file field per part. */
function multipart(parts: Part[]): { body: Buffer; contentType: string } {
  const boundary = 'gim-overload-bench-boundary';
  const chunks: Buffer[] = [];
  parts.forEach((p, i) => {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="item${i}"; ` +
          `filename="${p.filename}"\r\nContent-Type: ${p.type}\r\n\r\n`,
      ),
      p.bytes,
      Buffer.from('\r\n'),
    );
  });
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return {
    body: Buffer.concat(chunks),
    contentType: `multipart/form-data; boundary=${boundary}`,
  };
}

/** A 16 kHz mono 16-bit WAV of `seconds` of a deterministic speech-band signal. */
function syntheticWav(seconds: number, seed: number): Buffer {
  const rate = 16000;
  const n = Math.round(seconds * rate);
  const out = Buffer.alloc(44 + 2 * n);
  out.write('RIFF', 0, 'ascii');
  out.writeUInt32LE(36 + 2 * n, 4);
  out.write('WAVEfmt ', 8, 'ascii');
  out.writeUInt32LE(16, 16);
  out.writeUInt16LE(1, 20); // PCM
  out.writeUInt16LE(1, 22); // mono
  out.writeUInt32LE(rate, 24);
  out.writeUInt32LE(rate * 2, 28);
  out.writeUInt16LE(2, 32);
  out.writeUInt16LE(16, 34);
  out.write('data', 36, 'ascii');
  out.writeUInt32LE(2 * n, 40);
  let state = seed * 7919 + 1;
  for (let i = 0; i < n; i++) {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    const t = i / rate;
    const f0 = 110 + 40 * Math.sin(2 * Math.PI * 0.7 * t + seed);
    const v =
      0.3 * Math.sin(2 * Math.PI * f0 * t) +
      0.15 * Math.sin(2 * Math.PI * 3.1 * f0 * t) +
      0.05 * (state / 2 ** 30 - 1);
    out.writeInt16LE(Math.round(Math.max(-1, Math.min(1, v)) * 32767), 44 + 2 * i);
  }
  return out;
}

/** Clips of 1-3 s for the audio overload scenario, lengths spread (one pass per length). */
function overloadClips(): Part[] {
  return Array.from({ length: 16 }, (_, i) => ({
    bytes: syntheticWav(1 + (2 * ((i * 7) % 16)) / 15, i),
    type: 'audio/wav',
    filename: `clip${i}.wav`,
  }));
}

/**
 * `count` speech clips of a few seconds: from the generated corpus when it is there (the ones
 * closest to 3 s), else synthetic clips of 2.5-3.5 s. Also their total seconds.
 */
async function speechClips(
  count: number,
): Promise<{ parts: Part[]; seconds: number; source: string }> {
  const manifestPath = join(values.speech as string, 'manifest.json');
  const manifest = await readFile(manifestPath, 'utf8').catch(() => null);
  if (manifest !== null) {
    const files: string[] = [];
    for (const f of await readdir(values.speech as string, { recursive: true })) {
      if (f.endsWith('.flac')) files.push(f);
    }
    const withSeconds = await Promise.all(
      files.sort().map(async (f) => {
        const bytes = await readFile(join(values.speech as string, f));
        return { f, bytes, seconds: flacSeconds(bytes) };
      }),
    );
    const chosen = withSeconds.filter((c) => c.seconds >= 2 && c.seconds <= 4.5).slice(0, count);
    if (chosen.length === count) {
      return {
        parts: chosen.map((c) => ({ bytes: c.bytes, type: 'audio/flac', filename: c.f })),
        seconds: chosen.reduce((s, c) => s + c.seconds, 0),
        source: `speech corpus ${values.speech as string}`,
      };
    }
    log(
      `only ${chosen.length} clips of 2-4.5 s in ${values.speech as string}: synthetic clips instead`,
    );
  }
  const lengths = Array.from({ length: count }, (_, i) => 2.5 + ((i * 13) % 32) / 31);
  return {
    parts: lengths.map((s, i) => ({
      bytes: syntheticWav(s, i),
      type: 'audio/wav',
      filename: `c${i}.wav`,
    })),
    seconds: lengths.reduce((a, b) => a + b, 0),
    source: 'synthetic 16 kHz WAV',
  };
}

/** Seconds of a FLAC from its STREAMINFO block (total samples / sample rate). */
function flacSeconds(bytes: Buffer): number {
  const info = 8; // 'fLaC' + block header
  const rate = (bytes[info + 10]! << 12) | (bytes[info + 11]! << 4) | (bytes[info + 12]! >> 4);
  const samples = (bytes[info + 13]! & 0x0f) * 2 ** 32 + bytes.readUInt32BE(info + 14);
  return samples / rate;
}

/** A models directory with one stack of the default audio recipe. */
async function audioModelsDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gim-overload-bench-'));
  await selectBackend({ force: 'wasm' });
  const stack = AudioEncoderStack.create(defaultAudioAdapter(), audioModuleConfigs(), 1);
  await new StackStore(dir).publish(AUDIO_MODEL, await untrainedDraft(stack), {
    labels: ['latest'],
  });
  stack.dispose();
  return dir;
}

// ---------------------------------------------------------------- load

interface Answer {
  status: number;
  ms: number;
  errorType?: string;
}

async function send(url: string, body: Buffer, contentType: string): Promise<Answer> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, {
      method: 'POST',
      body,
      headers: { 'content-type': contentType },
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    let errorType: string | undefined;
    if (res.status !== 200) {
      try {
        errorType = (JSON.parse(text) as { error_type?: string }).error_type;
      } catch {
        errorType = 'not json';
      }
    }
    return { status: res.status, ms, errorType };
  } catch {
    return { status: 0, ms: performance.now() - t0 };
  }
}

/** 200 answers per second of `clients` loops, each sending its next request on an answer. */
async function closedLoopRate(
  url: string,
  body: Buffer,
  contentType: string,
  clients: number,
  seconds: number,
): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let ok = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) if ((await send(url, body, contentType)).status === 200) ok++;
    }),
  );
  return ok / seconds;
}

/** Sends at `rate` req/s for `seconds` whatever the answers, then waits for every answer. */
async function openLoop(
  url: string,
  bodies: { body: Buffer; contentType: string }[],
  rate: number,
  seconds: number,
): Promise<Answer[]> {
  const answers: Promise<Answer>[] = [];
  const start = performance.now();
  for (;;) {
    const elapsed = (performance.now() - start) / 1000;
    if (elapsed >= seconds) break;
    const due = Math.floor(elapsed * rate);
    while (answers.length < due) {
      const { body, contentType } = bodies[answers.length % bodies.length]!;
      answers.push(send(url, body, contentType));
    }
    await sleep(2);
  }
  return Promise.all(answers);
}

// ---------------------------------------------------------------- /metrics

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

/** Change of the sum of a metric's samples whose label text contains every `parts`. */
function delta(
  before: Map<string, number>,
  after: Map<string, number>,
  name: string,
  ...parts: string[]
): number | null {
  let sum = 0;
  let found = false;
  for (const [key, value] of after) {
    if (key.split('{')[0] !== name || !parts.every((p) => key.includes(p))) continue;
    found = true;
    sum += value - (before.get(key) ?? 0);
  }
  return found ? sum : null;
}

// ---------------------------------------------------------------- scenarios

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

interface OverloadResult {
  scenario: string;
  backend: string;
  env: Record<string, string>;
  itemsPerRequest: number;
  capacityRps: number | null;
  rateRps: number;
  seconds: number;
  requests: number;
  statusCodes: Record<string, number>;
  /** Items the worker computed: the sum of gim_items_total over its outcomes. */
  itemsComputed: number;
  /** Items of the requests answered 200. */
  itemsAnswered200: number;
  /** itemsComputed - itemsAnswered200: works on any server. */
  wastedInferred: number;
  wastedInferredFraction: number | null;
  /** gim_items_total{outcome="discarded"}: null where the server has no such outcome. */
  wastedMeasured: number | null;
  wastedMeasuredFraction: number | null;
  rejected: Record<string, number>;
  ok200P50Ms: number | null;
  ok200P99Ms: number | null;
  ok200MaxMs: number | null;
  /** Latest 200 minus REQUEST_TIMEOUT_MS (client-side; > 0: a 200 after the timeout). */
  latest200PastTimeoutMs: number | null;
  timeoutMs: number;
}

async function overload(
  scenario: string,
  server: Server,
  model: string,
  bodies: { body: Buffer; contentType: string }[],
  itemsPerRequest: number,
  clients: number,
): Promise<OverloadResult> {
  const url = `${server.base}/v1/models/${model}/embeddings`;
  const first = bodies[0]!;
  log(`${scenario}: warm-up`);
  await closedLoopRate(url, first.body, first.contentType, clients, 2);
  let capacityRps: number | null = null;
  let rate = RATE;
  if (rate === undefined) {
    capacityRps = await closedLoopRate(url, first.body, first.contentType, clients, CAPACITY_S);
    rate = OVERLOAD * capacityRps;
    log(`${scenario}: sustains ${capacityRps.toFixed(1)} req/s; sending ${rate.toFixed(1)} req/s`);
  }
  await sleep(Number(server.env.REQUEST_TIMEOUT_MS) + 500); // the closed loop's answers settle
  const before = await scrape(server.base);
  const answers = await openLoop(url, bodies, rate, DURATION_S);
  await sleep(500); // the last batch's counters
  const after = await scrape(server.base);

  const statusCodes: Record<string, number> = {};
  for (const a of answers) statusCodes[a.status] = (statusCodes[a.status] ?? 0) + 1;
  const ok = answers.filter((a) => a.status === 200).map((a) => a.ms);
  ok.sort((a, b) => a - b);
  const modelLabel = `model="${model}"`;
  const itemsComputed = delta(before, after, 'gim_items_total', modelLabel) ?? 0;
  const itemsAnswered200 = ok.length * itemsPerRequest;
  const wastedMeasured = delta(before, after, 'gim_items_total', modelLabel, 'outcome="discarded"');
  const rejected: Record<string, number> = {};
  for (const key of after.keys()) {
    const m = /^gim_rejected_total\{.*reason="([^"]+)"/.exec(key);
    if (m?.[1])
      rejected[m[1]] = (rejected[m[1]] ?? 0) + (after.get(key) ?? 0) - (before.get(key) ?? 0);
  }
  const timeoutMs = Number(server.env.REQUEST_TIMEOUT_MS ?? 10_000);
  const max = ok.length > 0 ? (ok[ok.length - 1] as number) : null;
  return {
    scenario,
    backend: server.ready.backend.name,
    env: server.env,
    itemsPerRequest,
    capacityRps,
    rateRps: rate,
    seconds: DURATION_S,
    requests: answers.length,
    statusCodes,
    itemsComputed,
    itemsAnswered200,
    wastedInferred: itemsComputed - itemsAnswered200,
    wastedInferredFraction:
      itemsComputed > 0 ? (itemsComputed - itemsAnswered200) / itemsComputed : null,
    wastedMeasured,
    wastedMeasuredFraction:
      wastedMeasured !== null && itemsComputed > 0 ? wastedMeasured / itemsComputed : null,
    rejected,
    ok200P50Ms: percentile(ok, 50),
    ok200P99Ms: percentile(ok, 99),
    ok200MaxMs: max,
    latest200PastTimeoutMs: max === null ? null : max - timeoutMs,
    timeoutMs,
  };
}

interface FitRow {
  clips: number;
  audioSeconds: number;
  bodyBytes: number;
  status: number;
  errorType?: string;
  ms: number;
}

async function fit(server: Server): Promise<{
  source: string;
  rows: FitRow[];
  msPerAudioSecond: number | null;
  secondsThatFit: number | null;
  timeoutMs: number;
}> {
  const url = `${server.base}/v1/models/${AUDIO_MODEL}/embeddings`;
  const rows: FitRow[] = [];
  let source = '';
  // Warm-up: one clip of each length class the sweep sends is not needed (no compile cache).
  const warm = await speechClips(2);
  const w = multipart(warm.parts);
  await send(url, w.body, w.contentType);
  for (const count of FIT_CLIPS) {
    const clips = await speechClips(count);
    source = clips.source;
    const { body, contentType } = multipart(clips.parts);
    log(`fit: ${count} clips, ${clips.seconds.toFixed(1)} s of audio, ${body.length} bytes`);
    const answer = await send(url, body, contentType);
    rows.push({
      clips: count,
      audioSeconds: clips.seconds,
      bodyBytes: body.length,
      status: answer.status,
      errorType: answer.errorType,
      ms: answer.ms,
    });
  }
  const ok = rows.filter((r) => r.status === 200);
  const msPerAudioSecond =
    ok.length > 0
      ? ok.reduce((s, r) => s + r.ms, 0) / ok.reduce((s, r) => s + r.audioSeconds, 0)
      : null;
  const timeoutMs = 10_000;
  return {
    source,
    rows,
    msPerAudioSecond,
    secondsThatFit: msPerAudioSecond === null ? null : timeoutMs / msPerAudioSecond,
    timeoutMs,
  };
}

// ---------------------------------------------------------------- main

const fmt = (v: number | null, digits = 0) => (v === null ? '-' : v.toFixed(digits));
const pct = (v: number | null) => (v === null ? '-' : `${(100 * v).toFixed(1)}%`);

async function main(): Promise<void> {
  await buildIfStale(SERVER_DIR);
  log(`server: ${SERVER_DIR}`);
  const results: OverloadResult[] = [];
  let fitResult: Awaited<ReturnType<typeof fit>> | undefined;
  let audioDir: string | undefined;
  try {
    if (SCENARIOS.includes('image')) {
      const server = await startServer(
        {
          MODELS_DIR: join(ROOT, 'models'),
          PRELOAD: 'fashion-gim',
          MAX_QUEUE: DEEP_QUEUE,
          REQUEST_TIMEOUT_MS: values['image-timeout-ms'] as string,
        },
        SERVER_DIR,
      );
      try {
        const pngs = await fixturePngs(64);
        const bodies = Array.from({ length: 8 }, (_, r) =>
          multipart(
            pngs.slice(r * 8, r * 8 + 8).map((bytes, i) => ({
              bytes,
              type: 'image/png',
              filename: `${i}.png`,
            })),
          ),
        );
        results.push(await overload('image', server, 'fashion-gim', bodies, 8, 16));
      } finally {
        await server.stop();
      }
    }
    if (SCENARIOS.includes('audio') || SCENARIOS.includes('fit')) audioDir = await audioModelsDir();
    if (SCENARIOS.includes('audio') && audioDir) {
      const server = await startServer(
        {
          MODELS_DIR: audioDir,
          PRELOAD: AUDIO_MODEL,
          MAX_QUEUE: DEEP_QUEUE,
          REQUEST_TIMEOUT_MS: values['audio-timeout-ms'] as string,
        },
        SERVER_DIR,
      );
      try {
        const clips = overloadClips();
        const bodies = Array.from({ length: 4 }, (_, r) =>
          multipart(clips.slice(r * 4, r * 4 + 4)),
        );
        results.push(await overload('audio', server, AUDIO_MODEL, bodies, 4, 4));
      } finally {
        await server.stop();
      }
    }
    if (SCENARIOS.includes('fit') && audioDir) {
      const server = await startServer({ MODELS_DIR: audioDir, PRELOAD: AUDIO_MODEL }, SERVER_DIR);
      try {
        fitResult = await fit(server);
      } finally {
        await server.stop();
      }
    }
  } finally {
    if (audioDir) await rm(audioDir, { recursive: true, force: true });
  }

  if (results.length > 0) {
    printTable(
      [
        'scenario',
        'backend',
        'req/s',
        '200',
        '429',
        '504',
        'other',
        'computed',
        'wasted (metric)',
        'wasted (computed-200)',
        '200 p50 ms',
        '200 p99 ms',
        'latest 200 past timeout ms',
      ],
      results.map((r) => [
        `${r.scenario} (${r.itemsPerRequest} items, ${r.timeoutMs} ms)`,
        r.backend,
        fmt(r.rateRps, 1),
        r.statusCodes['200'] ?? 0,
        r.statusCodes['429'] ?? 0,
        r.statusCodes['504'] ?? 0,
        r.requests -
          (r.statusCodes['200'] ?? 0) -
          (r.statusCodes['429'] ?? 0) -
          (r.statusCodes['504'] ?? 0),
        r.itemsComputed,
        r.wastedMeasured === null
          ? '- (no metric)'
          : `${r.wastedMeasured} (${pct(r.wastedMeasuredFraction)})`,
        `${r.wastedInferred} (${pct(r.wastedInferredFraction)})`,
        fmt(r.ok200P50Ms),
        fmt(r.ok200P99Ms),
        fmt(r.latest200PastTimeoutMs),
      ]),
    );
  }
  if (fitResult) {
    process.stdout.write(`\nfit: default settings, ${fitResult.source}\n`);
    printTable(
      ['clips', 'audio s', 'body bytes', 'status', 'error_type', 'ms'],
      fitResult.rows.map((r) => [
        r.clips,
        r.audioSeconds.toFixed(1),
        r.bodyBytes,
        r.status,
        r.errorType ?? '',
        fmt(r.ms),
      ]),
    );
    process.stdout.write(
      `compute per second of audio: ${fmt(fitResult.msPerAudioSecond, 1)} ms; ` +
        `seconds of audio per request that fit in ${fitResult.timeoutMs} ms: ${fmt(fitResult.secondsThatFit, 0)}\n`,
    );
  }
  await writeResult(OUT, {
    benchmark: 'overload',
    label: LABEL,
    serverDir: SERVER_DIR,
    machine: machine(),
    options: values,
    overload: results,
    fit: fitResult ?? null,
  });
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);
