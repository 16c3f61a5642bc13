/**
 * npm run bench:recipe — a quick, repeatable protocol for judging one change to the vision
 * training recipe (issue 13): GIM minus random init, in the same run (needs Debian's
 * dataset-fashion-mnist).
 *
 * Trains a stack for `--epochs` x `--steps` batches (a random part of the 60,000 training images
 * each epoch; `--steps` is capped at one full epoch, 1875 batches of 32), then probes it and its random-init twin (the same architecture with the very
 * initial weights training started from) with one linear probe per (layer, pooling) on a fixed
 * subset of the training set, scored on a fixed subset of the test set. Prints a table and appends
 * the run, labelled by `--name`, to bench/results/recipe.json (so a sweep is one file).
 *
 *   npm run bench:recipe -- --name baseline
 *   npm run bench:recipe -- --name lr2e-3 --lr 2e-3
 *   npm run bench:recipe -- --name cpc2 --directions down,up,right,left --patch-jitter 1 \
 *     --patch-flip --patch-brightness 0.3 --patch-contrast 0.3 --loss-norm layer
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/gim/backend/index.js';
import { EncoderStack } from '../src/gim/encoders/encoder-stack.js';
import { parsePooling } from '../src/gim/encoders/pooling.js';
import { trainImageStack } from '../src/gim/training/train-image-stack.js';
import type { TrainConfig } from '../src/gim/training/config.js';
import { probeLayers, type ProbeRow } from '../src/gim/classify/probe-layers.js';
import { Progress, duration, progressCallbacks } from '../src/cli/progress.js';
import {
  fashionMnist,
  machine,
  printTable,
  RECIPE_OPTIONS,
  recipeFromArgs,
  writeResult,
} from './common.js';

const { values } = parseArgs({
  options: {
    ...RECIPE_OPTIONS,
    name: { type: 'string', default: 'run' },
    epochs: { type: 'string', default: '1' },
    steps: { type: 'string', default: '1000' },
    negatives: { type: 'string', default: '16' },
    'crop-pad': { type: 'string', default: '2' },
    'probe-train': { type: 'string', default: '10000' },
    'probe-test': { type: 'string', default: '5000' },
    'probe-epochs': { type: 'string', default: '10' },
    pooling: { type: 'string', default: 'grid2,none,mean' },
    out: { type: 'string', default: 'bench/results/recipe.json' },
  },
});
const started = performance.now();
const backend = await selectBackend({ log: (l) => process.stderr.write(`${l}\n`) });
const { dataset: train } = await fashionMnist('train', { requireFull: true });
const { dataset: test } = await fashionMnist('test', { requireFull: true });
const poolings = (values.pooling as string).split(',').map(parsePooling);
const recipe = recipeFromArgs(values);
const channels = recipe.channels;
const seed = Number(values.seed);
const trainConfig: Partial<TrainConfig> = {
  ...recipe.train,
  epochs: Number(values.epochs),
  maxStepsPerEpoch: Number(values.steps),
  negatives: Number(values.negatives),
};
const adapter = {
  patchStride: recipe.patchStride,
  cropPad: Number(values['crop-pad']),
};
const progress = new Progress('recipe-bench', 15_000);
const outcome = await trainImageStack({
  dataset: train,
  channels,
  ...(recipe.residualKernels ? { residualKernels: recipe.residualKernels } : {}),
  adapter,
  train: trainConfig,
  backend: backend.name,
  callbacks: progressCallbacks(progress),
});
const trainSeconds = outcome.result.durationSeconds;
const stack = outcome.stack;
// The random-init twin: the same seed gives the weights training started from.
const random = EncoderStack.create(stack.adapter, stack.moduleConfigs, seed);

const first = (n: number) => Int32Array.from({ length: n }, (_, i) => i);
const opts = {
  probe: { epochs: Number(values['probe-epochs']) },
  trainSubset: first(Math.min(Number(values['probe-train']), train.info.count)),
  testSubset: first(Math.min(Number(values['probe-test']), test.info.count)),
  onProgress: (what: string, d: number, t: number) => progress.update(d, t, what),
};
const layers = stack.modules.map((_, i) => i + 1);
const gim = await probeLayers(stack, train, test, layers, poolings, opts);
const rand = await probeLayers(random, train, test, layers, poolings, opts);
progress.stop();
stack.dispose();
random.dispose();

const pct = (x: number) => (100 * x).toFixed(2);
const rows = gim.map((g, i) => {
  const r = rand[i] as ProbeRow;
  return [
    g.layer,
    g.pooling,
    g.dim,
    pct(g.testAccuracy),
    pct(r.testAccuracy),
    pct(g.testAccuracy - r.testAccuracy),
  ];
});
printTable(['layer', 'pooling', 'dim', 'GIM test %', 'random test %', 'GIM - random'], rows);
const best = (rs: ProbeRow[]) => rs.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
const bestG = best(gim);
const bestR = best(rand);
const sameRandom = rand.find(
  (r) => r.layer === bestG.layer && r.pooling === bestG.pooling,
) as ProbeRow;
const bestPerLayer = layers.map((l) =>
  Math.max(...gim.filter((g) => g.layer === l).map((g) => g.testAccuracy)),
);
const meanByLayer = layers.map(
  (l) => gim.find((g) => g.layer === l && g.pooling === 'mean')?.testAccuracy ?? null,
);
const totalSeconds = (performance.now() - started) / 1000;
const summary = {
  name: values.name,
  bestGim: { layer: bestG.layer, pooling: bestG.pooling, testAccuracy: bestG.testAccuracy },
  randomSamePooling: sameRandom.testAccuracy,
  bestRandom: { layer: bestR.layer, pooling: bestR.pooling, testAccuracy: bestR.testAccuracy },
  gainOverRandom: bestG.testAccuracy - sameRandom.testAccuracy,
  bestPerLayer,
  monotone: bestPerLayer.every((v, i) => i === 0 || v >= (bestPerLayer[i - 1] as number)),
  meanByLayer,
  finalLosses: outcome.result.finalLosses,
};
process.stdout.write(
  `\n${values.name}: best GIM layer ${bestG.layer} ${bestG.pooling} ${pct(bestG.testAccuracy)}% ` +
    `vs random ${pct(sameRandom.testAccuracy)}% (same pooling; +${pct(summary.gainOverRandom)}); ` +
    `best per layer ${bestPerLayer.map(pct).join(' / ')}; mean ${meanByLayer.map((m) => (m === null ? '-' : pct(m))).join(' / ')}\n` +
    `time: training ${duration(trainSeconds)} (${outcome.result.steps} steps), total ${duration(totalSeconds)} on ${backend.name}\n`,
);
const out = values.out as string;
let runs: unknown[];
try {
  runs = (JSON.parse(await readFile(out, 'utf8')) as { runs: unknown[] }).runs ?? [];
} catch {
  runs = [];
}
runs.push({
  ...summary,
  machine: machine(),
  backend: backend.name,
  trainConfig,
  adapter,
  channels,
  probe: {
    epochs: opts.probe.epochs,
    trainItems: opts.trainSubset.length,
    testItems: opts.testSubset.length,
  },
  gim,
  randomInit: rand,
  seconds: { training: trainSeconds, total: totalSeconds },
});
await writeResult(out, { runs });
