/**
 * npm run bench:speakers — speaker identification on voices the encoder never heard.
 *
 * Probes a trained audio stack (default `speech-gim@stable` in ./models) beside its untrained
 * twin and a spectral baseline, on a held-out corpus of similar voices:
 *
 * - The held-out corpus (`npm run data:speech -- --voices held-out`, made here if missing) uses
 *   only the base voices that `--held-out-voices` reserved when the stack's training corpus was
 *   made with `--voices train` (same seed): no base voice of it is in the training corpus. Its
 *   speakers come in families of 3: one base voice and accent at adjacent pitch levels (flite rms:
 *   adjacent speeds), each a different speaker.
 * - Each utterance gives `--crops` crops of `--crop-seconds` (seeded starts), each normalised as
 *   the service normalises a posted clip. Per split, `--train-clips` utterances of each speaker
 *   train the probe (their crops), the other utterances' crops test it. `--repeats` splits.
 * - Rows: every layer x time pooling (mean, max, meanstd) of the trained stack and of its untrained twin,
 *   made by `gim train audio --epochs 0` with the trained stack's seed and settings (the CLI's own
 *   code path, in a temporary models directory); and mean + spread of 40 log mel band energies
 *   (25 ms frames, 10 ms hop) over the same crops. All probed alike: a linear softmax probe
 *   (`LinearProbe`, standardised features), fixed epochs, no validation split.
 *
 * Writes bench/results/speakers.json. Needs espeak-ng, flite and sox only to make a missing corpus
 * (Debian: sudo apt-get install espeak-ng flite sox flac).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendName } from '../src/gim/backend/index.js';
import { openAudioFolder } from '../src/gim/data/audio-folder.js';
import { normalizeAudio, type AudioAdapterConfig } from '../src/gim/modality/audio.js';
import { AudioEncoderStack } from '../src/gim/encoders/audio-stack.js';
import {
  extractClipFeatures,
  logBandFeatures,
  pitchFeatures,
  type ClipSet,
} from '../src/gim/classify/audio-features.js';
import type { TimePooling } from '../src/gim/encoders/pooling.js';
import { featureKey, type LayerFeatures } from '../src/gim/classify/features.js';
import { LinearProbe, type FeatureSet } from '../src/gim/classify/linear-probe.js';
import { StackStore } from '../src/gim/store/stack-store.js';
import { isUntrained, type StackManifest } from '../src/gim/store/manifest.js';
import { Rng } from '../src/gim/random.js';
import { Progress, duration } from '../src/cli/progress.js';
import { machine, printTable, writeResult } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'speech-gim@stable' },
    'models-dir': { type: 'string', default: 'models' },
    'held-out': { type: 'string', default: 'bench/data/speech-heldout' },
    'held-out-speakers': { type: 'string', default: '36' },
    'held-out-utterances': { type: 'string', default: '12' },
    family: { type: 'string', default: '3' },
    'train-data': { type: 'string' },
    'train-clips': { type: 'string', default: '3' },
    crops: { type: 'string', default: '2' },
    'crop-seconds': { type: 'string', default: '1' },
    repeats: { type: 'string', default: '5' },
    'probe-epochs': { type: 'string', default: '100' },
    'probe-batch': { type: 'string', default: '32' },
    seed: { type: 'string', default: '1' },
    backend: { type: 'string' },
    out: { type: 'string', default: 'bench/results/speakers.json' },
  },
});
const started = performance.now();
const seed = Number(values.seed);
const trainClips = Number(values['train-clips']);
const cropsPerClip = Number(values.crops);
const repeats = Number(values.repeats);
const log = (line: string) => process.stderr.write(`${line}\n`);
const tsNode = [process.execPath, '--import', '@swc-node/register/esm-register'];
const run = (args: string[]) =>
  execFileSync(tsNode[0] as string, [...tsNode.slice(1), ...args], { stdio: 'inherit' });

const backend = await selectBackend({
  force: values.backend as BackendName | undefined,
  log: (l) => log(l),
});
const store = new StackStore(values['models-dir'] as string);
const loaded = await store.load(values.model as string);
const manifest = loaded.manifest;
if (manifest.modality !== 'audio') throw new Error(`${values.model} is not an audio stack`);
if (isUntrained(manifest)) throw new Error(`${values.model} is untrained; give a trained stack`);
const adapter = manifest.adapter as AudioAdapterConfig;
const corpus = manifest.data.corpus;

// The held-out corpus: the base voices the training corpus's split reserved.
const split = corpus?.settings ?? {};
const disjoint = split.voices === 'train' && Number(split.heldOutVoices) > 0;
if (!disjoint)
  log(
    `warning: ${values.model} records no training corpus made with --voices train: the held-out ` +
      'voices may be voices it was trained on',
  );
const heldOutDir = resolve(values['held-out'] as string);
const heldOutArgs = [
  ...['--speakers', values['held-out-speakers'] as string],
  ...['--utterances', values['held-out-utterances'] as string],
  ...['--held-out-voices', String(split.heldOutVoices ?? 12), '--voices', 'held-out'],
  ...['--family', values.family as string, '--seed', String(split.seed ?? seed)],
  ...['--first-id', '5001'],
];
if (!existsSync(join(heldOutDir, 'manifest.json')))
  log(`generating the held-out corpus in ${heldOutDir}`);
run(['scripts/make-speech-corpus.ts', ...heldOutArgs, '--out', heldOutDir]); // idempotent

// The untrained twin, by the CLI's --epochs 0 path with the stack's seed and settings.
const recorded = manifest.data.source.replace(/^audio-folder:/, '');
const trainData = resolve(
  values['train-data'] ?? (existsSync(recorded) ? recorded : 'bench/data/speech-train'),
);
if (!existsSync(join(trainData, 'manifest.json')) && corpus) {
  log(`regenerating the training corpus in ${trainData}: ${corpus.command}`);
  const flags = corpus.command.split(' ').slice(6); // after `npm run data:speech -- --out <out>`
  run(['scripts/make-speech-corpus.ts', '--out', trainData, ...flags]);
}
const twinDir = mkdtempSync(join(tmpdir(), 'gim-speakers-twin-'));
const cfg = manifest.training.config;
const firstConv = manifest.modules[0]?.config;
const gru = manifest.modules.at(-1)?.config;
run([
  'src/cli/main.ts',
  ...['train', 'audio', '--data', trainData, '--name', 'twin', '--models-dir', twinDir],
  ...['--epochs', '0', '--seed', String(manifest.training.seed)],
  ...['--channels', String(firstConv && 'channels' in firstConv ? firstConv.channels : 32)],
  ...['--gru-units', String(gru && 'units' in gru ? gru.units : 32)],
  ...['--window', String(adapter.windowSamples), '--normalize', adapter.normalize],
  ...['--batch-size', String(cfg.batchSize), '--negatives', String(cfg.negatives)],
  ...['--backend', backend.name],
]);
const twinLoaded = await new StackStore(twinDir).load('twin');
rmSync(twinDir, { recursive: true, force: true });
if (!isUntrained(twinLoaded.manifest)) throw new Error('the twin is not marked untrained');
const stacks: [string, StackManifest, AudioEncoderStack][] = [
  ['GIM', manifest, await AudioEncoderStack.fromManifest(manifest, loaded.modules)],
  [
    'untrained twin',
    twinLoaded.manifest,
    await AudioEncoderStack.fromManifest(twinLoaded.manifest, twinLoaded.modules),
  ],
];

// Crops: `cropsPerClip` per utterance at seeded starts, each normalised as a posted clip.
const dataset = await openAudioFolder(heldOutDir, { adapter });
const speakers = dataset.info.classNames.length;
const cropSamples = Math.round(Number(values['crop-seconds']) * adapter.sampleRate);
const n = dataset.info.count * cropsPerClip;
const clips: ClipSet = {
  samples: new Float32Array(n * cropSamples),
  labels: new Int32Array(n),
  n,
  length: cropSamples,
};
const cropUtterance = new Int32Array(n);
const rng = new Rng(seed);
for (let u = 0; u < dataset.info.count; u++) {
  const full = await dataset.readFull(u);
  for (let c = 0; c < cropsPerClip; c++) {
    const i = u * cropsPerClip + c;
    const start = rng.int(Math.max(1, full.length - cropSamples + 1));
    const crop = new Float32Array(cropSamples);
    crop.set(full.subarray(start, start + cropSamples));
    clips.samples.set(normalizeAudio(crop, adapter), i * cropSamples);
    clips.labels[i] = dataset.utterance(u).speaker;
    cropUtterance[i] = u;
  }
}
log(
  `${heldOutDir}: ${speakers} speakers, ${dataset.info.count} utterances, ${n} crops of ` +
    `${values['crop-seconds']} s; probe on ${trainClips} utterances per speaker, ${repeats} splits`,
);

/** Per repeat: which crops train the probe (`trainClips` utterances per speaker) and test it. */
const splits = Array.from({ length: repeats }, (_, r) => {
  const bySpeaker = new Map<number, number[]>();
  for (let u = 0; u < dataset.info.count; u++) {
    const s = dataset.utterance(u).speaker;
    bySpeaker.set(s, [...(bySpeaker.get(s) ?? []), u]);
  }
  const inTrain = new Set<number>();
  const splitRng = new Rng(seed * 1000 + r);
  for (const utts of bySpeaker.values()) {
    const order = splitRng.permutation(utts.length);
    for (let k = 0; k < Math.min(trainClips, utts.length - 1); k++)
      inTrain.add(utts[order[k] as number] as number);
  }
  const train: number[] = [];
  const test: number[] = [];
  for (let i = 0; i < n; i++) (inTrain.has(cropUtterance[i] as number) ? train : test).push(i);
  return { train, test };
});

function rows(set: FeatureSet, idx: number[]): FeatureSet {
  const x = new Float32Array(idx.length * set.dim);
  const y = new Int32Array(idx.length);
  idx.forEach((i, k) => {
    x.set(set.x.subarray(i * set.dim, (i + 1) * set.dim), k * set.dim);
    y[k] = set.y[i] as number;
  });
  return { x, y, n: idx.length, dim: set.dim };
}

// Families of similar voices: one base voice, accent and word gap; the members differ only in
// pitch (flite rms: speed). A prediction of another member of the right family is a family hit.
const heldOutManifest = JSON.parse(readFileSync(join(heldOutDir, 'manifest.json'), 'utf8')) as {
  speakers: { id: number; recipe: Record<string, unknown> }[];
};
const familyKey = (recipe: Record<string, unknown>) =>
  ['engine', 'voice', 'accent', 'variant', 'wordGap'].map((k) => String(recipe[k])).join('|');
const keyOf = new Map(heldOutManifest.speakers.map((s) => [String(s.id), familyKey(s.recipe)]));
const familyIds = new Map<string, number>();
const familyOf = dataset.info.classNames.map((name) => {
  const key = keyOf.get(name);
  if (key === undefined) throw new Error(`speaker ${name} is not in ${heldOutDir}/manifest.json`);
  if (!familyIds.has(key)) familyIds.set(key, familyIds.size);
  return familyIds.get(key) as number;
});
const families = familyIds.size;

interface Row {
  method: string;
  layer: number | null;
  pooling: string;
  dim: number;
  accuracies: number[];
  mean: number;
  sd: number;
  /** Share of test crops given a speaker of their own family (chance: 1 / families). */
  familyAccuracy: number;
  /** Of the crops whose family was right, the share given the right speaker. */
  withinFamilyAccuracy: number;
}
const probeOptions = {
  epochs: Number(values['probe-epochs']),
  batchSize: Number(values['probe-batch']),
  seed,
};
const progress = new Progress('speakers-bench', 10_000);
function probe(method: string, layer: number | null, pooling: string, set: FeatureSet): Row {
  let [tested, familyHits, speakerHits] = [0, 0, 0];
  const accuracies = splits.map(({ train, test }) => {
    const testSet = rows(set, test);
    const fitted = LinearProbe.fit(rows(set, train), speakers, probeOptions);
    const proba = fitted.predictProba(testSet.x, testSet.n);
    fitted.dispose();
    let right = 0;
    for (let i = 0; i < testSet.n; i++) {
      const scores = proba.subarray(i * speakers, (i + 1) * speakers);
      const guess = scores.indexOf(Math.max(...scores));
      const truth = testSet.y[i] as number;
      if (guess === truth) right++;
      if (familyOf[guess] === familyOf[truth]) familyHits++;
    }
    tested += testSet.n;
    speakerHits += right;
    return right / testSet.n;
  });
  const mean = accuracies.reduce((a, b) => a + b, 0) / accuracies.length;
  const sd = Math.sqrt(accuracies.reduce((a, b) => a + (b - mean) ** 2, 0) / accuracies.length);
  const row = {
    method,
    layer,
    pooling,
    dim: set.dim,
    accuracies,
    mean,
    sd,
    familyAccuracy: familyHits / tested,
    withinFamilyAccuracy: familyHits > 0 ? speakerHits / familyHits : 0,
  };
  progress.log(
    `${method} ${layer === null ? '' : `layer ${layer} `}${pooling}: ${(100 * mean).toFixed(1)}% ` +
      `(sd ${(100 * sd).toFixed(1)}); family ${(100 * row.familyAccuracy).toFixed(1)}%, ` +
      `within family ${(100 * row.withinFamilyAccuracy).toFixed(1)}%`,
  );
  return row;
}

const results: Row[] = [];
const poolings: TimePooling[] = ['mean', 'max', 'meanstd'];
const embedSeconds: Record<string, number> = {};
for (const [method, , stack] of stacks) {
  const layers = stack.modules.map((_, i) => i + 1);
  const t0 = performance.now();
  const features: LayerFeatures = extractClipFeatures(stack, clips, layers, poolings);
  embedSeconds[method] = (performance.now() - t0) / 1000;
  for (const layer of layers)
    for (const pooling of poolings)
      results.push(
        probe(method, layer, pooling, features.get(featureKey(layer, pooling)) as FeatureSet),
      );
  stack.dispose();
}
const bandSet = logBandFeatures(clips, { sampleRate: adapter.sampleRate });
results.push(probe('log-mel bands', null, 'mean+sd', bandSet));
const bandMeans = rows(
  bandSet,
  Array.from({ length: n }, (_, i) => i),
);
const meanOnly = new Float32Array(n * 40);
for (let i = 0; i < n; i++) meanOnly.set(bandMeans.x.subarray(i * 80, i * 80 + 40), i * 40);
results.push(probe('log-mel bands', null, 'mean', { x: meanOnly, y: bandSet.y, n, dim: 40 }));
// Pitch alone, and with the spectral statistics: what a family's members differ in.
const pitchSet = pitchFeatures(clips, { sampleRate: adapter.sampleRate });
results.push(probe('pitch (autocorrelation f0)', null, 'statistics', pitchSet));
const both = new Float32Array(n * (bandSet.dim + pitchSet.dim));
for (let i = 0; i < n; i++) {
  both.set(bandSet.x.subarray(i * bandSet.dim, (i + 1) * bandSet.dim), (i * both.length) / n);
  both.set(
    pitchSet.x.subarray(i * pitchSet.dim, (i + 1) * pitchSet.dim),
    i * (both.length / n) + bandSet.dim,
  );
}
results.push(
  probe('log-mel bands + pitch', null, 'mean+sd, statistics', {
    x: both,
    y: bandSet.y,
    n,
    dim: bandSet.dim + pitchSet.dim,
  }),
);
progress.stop();
if (tf.memory().numTensors > 0) log(`note: ${tf.memory().numTensors} tensors alive at the end`);

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const cell = (r: Row) => `${pct(r.mean)} ± ${(100 * r.sd).toFixed(1)}`;
const hits = (r: Row) => `${pct(r.familyAccuracy)} / ${pct(r.withinFamilyAccuracy)}`;
const table: (string | number)[][] = [];
const gimRows = results.filter((r) => r.method === 'GIM');
for (const g of gimRows) {
  const t = results.find(
    (r) => r.method === 'untrained twin' && r.layer === g.layer && r.pooling === g.pooling,
  ) as Row;
  table.push([
    g.layer as number,
    g.layer === 6 ? 'GRU' : `conv${g.layer}`,
    g.pooling,
    g.dim,
    cell(g),
    hits(g),
    cell(t),
    hits(t),
  ]);
}
for (const b of results.filter((r) => r.layer === null))
  table.push(['-', b.method, b.pooling, b.dim, '', '', cell(b), hits(b)]);
printTable(
  [
    'layer',
    'module',
    'pooling',
    'dim',
    'GIM',
    'GIM family / within',
    'untrained twin / baseline',
    'family / within',
  ],
  table,
);

// How far apart a family's members are in pitch: per speaker, the median over its crops of each
// crop's median f0, and the spread (sd) of that crop median in log f0; a family's separation is
// its mean gap between neighbours over its mean spread (about 1: neighbours overlap heavily).
const voicedPitch = (i: number) => pitchSet.x[i * pitchSet.dim + 1] as number; // log f0 median
const pitchBySpeaker = Array.from({ length: speakers }, (_, s) => {
  const logs: number[] = [];
  for (let i = 0; i < n; i++)
    if (clips.labels[i] === s && voicedPitch(i) !== 0) logs.push(voicedPitch(i));
  logs.sort((a, b) => a - b);
  const mean = logs.reduce((a, b) => a + b, 0) / Math.max(1, logs.length);
  const sd = Math.sqrt(logs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, logs.length));
  return { hz: Math.exp(logs[Math.floor(logs.length / 2)] ?? 0), sd };
});
const familyPitch = [...familyIds.keys()].map((key, f) => {
  const members = familyOf.flatMap((g, s) => (g === f ? [s] : []));
  const hz = members.map((s) => (pitchBySpeaker[s] as { hz: number }).hz).sort((a, b) => a - b);
  const gaps = hz.slice(1).map((h, j) => Math.log(h / (hz[j] as number)));
  const spread =
    members.reduce((a, s) => a + (pitchBySpeaker[s] as { sd: number }).sd, 0) / members.length;
  const separation =
    gaps.length > 0 ? gaps.reduce((a, b) => a + b, 0) / gaps.length / spread : null;
  return { family: key, members: members.map((s) => dataset.info.classNames[s]), hz, separation };
});
if (families < speakers) {
  printTable(
    ['family (engine|voice|accent|variant|word gap)', 'members', 'median f0 (Hz)', 'separation'],
    familyPitch.map((p) => [
      p.family,
      p.members.join(' '),
      p.hz.map((h) => h.toFixed(0)).join(' / '),
      p.separation === null ? '-' : `${p.separation.toFixed(1)} sd`,
    ]),
  );
}
const best = (method: string) =>
  results.filter((r) => r.method === method).reduce((a, b) => (b.mean > a.mean ? b : a));
const [bg, bt, bb, bp] = [
  best('GIM'),
  best('untrained twin'),
  best('log-mel bands'),
  best('log-mel bands + pitch'),
];
// The target's verdict, with the best row's standard error over the splits: a gap of a few tenths
// is noise at 5 splits (sd ~1.4 points), so "met" and "missed" need 2 standard errors of room.
// Rows' sd divides by the number of splits, so sd / sqrt(n - 1) is the usual sample estimate.
const TARGET = 0.95;
const standardError = repeats > 1 ? bg.sd / Math.sqrt(repeats - 1) : 0; // one split: no error bar
const verdict =
  bg.mean - 2 * standardError >= TARGET
    ? 'met'
    : bg.mean + 2 * standardError < TARGET
      ? 'missed'
      : 'undecided (within 2 standard errors: run more --repeats)';
const totalSeconds = (performance.now() - started) / 1000;
process.stdout.write(
  `\nheld-out voices: ${speakers} speakers in families of ${values.family}, ${trainClips} utterances ` +
    `(${trainClips * cropsPerClip} crops of ${values['crop-seconds']} s) per speaker to train the probe; chance ${pct(1 / speakers)}\n` +
    `best GIM layer ${bg.layer} ${bg.pooling}: ${pct(bg.mean)} (standard error ` +
    `${(100 * standardError).toFixed(2)} over ${repeats} splits); untrained twin layer ${bt.layer} ` +
    `${bt.pooling}: ${pct(bt.mean)}; log-mel bands ${bb.pooling}: ${pct(bb.mean)}; log-mel + ` +
    `pitch: ${pct(bp.mean)}; target GIM >= ${pct(TARGET)}: ${verdict}\n` +
    `${families} families (chance ${pct(1 / families)}); within a family chance ` +
    `${pct(families / speakers)}: "family / within" = right family / right speaker given the family\n` +
    `backend ${backend.name}; total ${duration(totalSeconds)}\n`,
);
await writeResult(values.out as string, {
  machine: machine(),
  backend: backend.name,
  model: { ref: values.model, name: manifest.name, version: manifest.version, data: manifest.data },
  twin: { training: twinLoaded.manifest.training },
  heldOut: {
    dir: heldOutDir,
    corpusArgs: heldOutArgs,
    disjointBaseVoices: disjoint,
    speakers: heldOutManifest.speakers,
    utterances: dataset.info.count,
  },
  protocol: {
    trainClipsPerSpeaker: trainClips,
    cropsPerClip,
    cropSeconds: Number(values['crop-seconds']),
    repeats,
    probe: probeOptions,
  },
  rows: results,
  best: { gim: bg, untrainedTwin: bt, spectral: bb, spectralAndPitch: bp },
  families,
  familyPitch,
  embedSeconds,
  seconds: totalSeconds,
  target: { gimHeldOutAccuracy: TARGET, bestStandardError: standardError, verdict },
});
