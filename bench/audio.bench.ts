/**
 * npm run bench:audio — GIM on raw speech: training speed and speaker identification.
 *
 * On a synthetic multi-speaker corpus (generated with `npm run data:speech` when --data is not
 * given; needs Debian's espeak-ng, flite and sox), trains the default audio stack (5 strided convs
 * + GRU, 32 channels) on 80% of each speaker's utterances, then fits a linear speaker-ID probe per
 * layer on time-pooled embeddings and scores it on the held-out 20%, beside the same probe on its
 * untrained twin (`--epochs 0`, same seed), in the same run. Writes bench/results/audio.json.
 * Utterances of the same speakers: an easy, closed-set test; `npm run bench:speakers` probes
 * voices the encoder never heard.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/gim/backend/index.js';
import { openAudioFolder, splitByUtterance } from '../src/gim/data/audio-folder.js';
import { defaultAudioAdapter } from '../src/gim/modality/audio.js';
import type { AudioEncoderStack } from '../src/gim/encoders/audio-stack.js';
import { trainAudioStack } from '../src/gim/training/train-audio-stack.js';
import { extractAudioFeatures } from '../src/gim/classify/audio-features.js';
import type { TimePooling } from '../src/gim/encoders/pooling.js';
import { probeFeatureSets, type ProbeRow } from '../src/gim/classify/probe-layers.js';
import { Progress, duration, progressCallbacks } from '../src/cli/progress.js';
import { machine, printTable, writeResult } from './common.js';

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    speakers: { type: 'string', default: '20' },
    utterances: { type: 'string', default: '30' },
    epochs: { type: 'string', default: '8' },
    'probe-epochs': { type: 'string', default: '60' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: 'bench/results/audio.json' },
  },
});
const seed = Number(values.seed);
const started = performance.now();
let dataDir = values.data;
if (!dataDir) {
  dataDir = `bench/data/speech-${values.speakers}x${values.utterances}`;
  if (!existsSync(`${dataDir}/manifest.json`))
    process.stderr.write(`generating the corpus in ${dataDir}\n`);
  // Idempotent: existing utterances are kept.
  execFileSync(
    process.execPath,
    [
      '--import',
      '@swc-node/register/esm-register',
      'scripts/make-speech-corpus.ts',
      '--speakers',
      String(values.speakers),
      '--utterances',
      String(values.utterances),
      '--out',
      dataDir,
    ],
    { stdio: 'inherit' },
  );
}
const backend = await selectBackend({ log: (l) => process.stderr.write(`${l}\n`) });
const adapter = defaultAudioAdapter();
const dataset = await openAudioFolder(dataDir, { adapter });
const speakers = dataset.info.classNames.length;
const split = splitByUtterance(dataset, 0.2, seed);
process.stderr.write(
  `${dataset.info.source}: ${speakers} speakers, ${split.train.length} training / ${split.test.length} held-out utterances\n`,
);
const progress = new Progress('audio-bench', 15_000);
let clipsPerSecond = 0;
const callbacks = progressCallbacks(progress);
const outcome = await trainAudioStack({
  dataset,
  subset: split.train,
  train: { epochs: Number(values.epochs), seed },
  backend: backend.name,
  callbacks: {
    ...callbacks,
    onStep: (p) => {
      clipsPerSecond = p.itemsPerSecond;
      callbacks.onStep?.(p);
    },
  },
});
progress.stop();
const trainSeconds = outcome.result.durationSeconds;
const stack = outcome.stack;
const layers = stack.modules.map((_, i) => i + 1);
const poolings: TimePooling[] = ['mean', 'max'];
const probeEpochs = Number(values['probe-epochs']);

async function probe(name: string, s: AudioEncoderStack): Promise<ProbeRow[]> {
  const onProgress = (what: string) => (d: number, t: number) =>
    progress.update(d, t, `${name} ${what}`);
  const train = await extractAudioFeatures(
    s,
    dataset,
    split.train,
    layers,
    poolings,
    onProgress('embed train'),
  );
  const test = await extractAudioFeatures(
    s,
    dataset,
    split.test,
    layers,
    poolings,
    onProgress('embed held-out'),
  );
  return probeFeatureSets(train, test, layers, poolings, speakers, {
    probe: { epochs: probeEpochs, seed },
    onRow: (r) =>
      progress.log(
        `${name} layer ${r.layer} ${r.pooling}: held-out ${(100 * r.testAccuracy).toFixed(1)}%`,
      ),
  });
}
const gim = await probe('GIM', stack);
// The untrained twin: the same job with --epochs 0 (the CLI's code path): the initial weights
// the trained stack started from.
const twin = await trainAudioStack({
  dataset,
  subset: split.train,
  train: { epochs: 0, seed },
  backend: backend.name,
});
if (JSON.stringify(twin.stack.moduleConfigs) !== JSON.stringify(stack.moduleConfigs))
  throw new Error('the untrained twin has other modules than the stack it stands beside');
const rand = await probe('untrained twin', twin.stack);
twin.stack.dispose();
stack.dispose();

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const table: (string | number)[][] = [];
for (const layer of layers)
  for (const pooling of poolings) {
    const g = gim.find((r) => r.layer === layer && r.pooling === pooling) as ProbeRow;
    const r = rand.find((x) => x.layer === layer && x.pooling === pooling) as ProbeRow;
    table.push([
      layer,
      layer === 6 ? 'GRU' : `conv${layer}`,
      pooling,
      g.dim,
      pct(g.testAccuracy),
      pct(r.testAccuracy),
    ]);
  }
printTable(['layer', 'module', 'pooling', 'dim', 'GIM held-out', 'untrained twin held-out'], table);
const best = gim.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
const totalSeconds = (performance.now() - started) / 1000;
process.stdout.write(
  `\nbest GIM layer ${best.layer} ${best.pooling}: ${pct(best.testAccuracy)} speaker ID on held-out utterances ` +
    `(${speakers} speakers; chance ${pct(1 / speakers)}); target >= 95%\n` +
    `training: ${clipsPerSecond.toFixed(1)} clips/s on ${backend.name}, ${duration(trainSeconds)}; total ${duration(totalSeconds)}\n`,
);
await writeResult(values.out as string, {
  machine: machine(),
  backend: backend.name,
  corpus: {
    dir: dataDir,
    speakers,
    utterances: dataset.info.count,
    train: split.train.length,
    heldOut: split.test.length,
  },
  training: outcome.draft.manifest.training,
  clipsPerSecond,
  probeEpochs,
  gim,
  untrainedTwin: rand,
  best,
  seconds: { training: trainSeconds, total: totalSeconds },
  target: { bestHeldOutAccuracy: 0.95 },
});
