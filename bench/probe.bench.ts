/**
 * npm run bench:probe — representation quality on Fashion-MNIST (needs Debian's
 * dataset-fashion-mnist).
 *
 * Trains the default stack (16/32/64, parallel) on the 60,000 training images (or probes a
 * published one with --model), then fits a linear probe per (layer, pooling) on frozen embeddings
 * of the training set and scores it on the 10,000 test images, beside two baselines measured in
 * the same run: logistic regression on raw pixels, and the untrained twin of the encoder: what
 * `gim train image --epochs 0` publishes with the same settings and seed (the same
 * `trainImageStack` call with 0 epochs, so the very weights and data-derived normalisation the
 * trained stack started from; with --model, its recorded adapter, modules and seed).
 * Writes bench/results/probe.json.
 *
 * Recipe options (a trained run; see `gim train image`): --channels, --lr, --seed, --batch-size,
 * --offsets, --directions, --patch-jitter, --patch-flip, --patch-brightness, --patch-contrast,
 * --loss-norm, --patch-stride, --residual-kernels, e.g. the CPC v2 options:
 *   npm run bench:probe -- --directions down,up,right,left --loss-norm layer
 */
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/gim/backend/index.js';
import { EncoderStack } from '../src/gim/encoders/encoder-stack.js';
import { parsePooling } from '../src/gim/encoders/pooling.js';
import { residualKernel } from '../src/gim/encoders/vision-module.js';
import { trainImageStack } from '../src/gim/training/train-image-stack.js';
import type { TrainConfig } from '../src/gim/training/config.js';
import { pixelFeatures } from '../src/gim/classify/features.js';
import { probeFeatures, probeLayers, type ProbeRow } from '../src/gim/classify/probe-layers.js';
import { StackStore } from '../src/gim/store/stack-store.js';
import { imageManifest } from '../src/gim/store/manifest.js';
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
    epochs: { type: 'string', default: '3' },
    'probe-epochs': { type: 'string', default: '20' },
    pooling: { type: 'string', default: 'mean,grid2,grid3,none' },
    model: { type: 'string' },
    'models-dir': { type: 'string', default: 'models' },
    out: { type: 'string', default: 'bench/results/probe.json' },
  },
});
const started = performance.now();
const backend = await selectBackend({ log: (l) => process.stderr.write(`${l}\n`) });
const { dataset: train } = await fashionMnist('train', { requireFull: true });
const { dataset: test } = await fashionMnist('test', { requireFull: true });
const poolings = (values.pooling as string).split(',').map(parsePooling);
const probeEpochs = Number(values['probe-epochs']);
const classes = train.info.classNames.length;
const progress = new Progress('probe-bench', 15_000);

/** The recorded offsets and directions of a training config (older manifests may lack them). */
function predictionGeometry(config: Record<string, unknown>): Partial<TrainConfig> {
  const { offsets, directions } = config as Partial<TrainConfig>;
  return { ...(offsets ? { offsets } : {}), ...(directions ? { directions } : {}) };
}

let stack: EncoderStack;
let trainedWith: Record<string, unknown>;
/** Training wall time: this run's, or the one the published stack's manifest records. */
let trainSeconds: number;
/** The stack's settings: what `--epochs 0` is given to make its untrained twin. */
let recipe: Omit<Parameters<typeof trainImageStack>[0], 'backend'>;
if (values.model) {
  const { manifest, modules } = await new StackStore(values['models-dir'] as string).load(
    values.model,
  );
  const m = imageManifest(manifest);
  stack = await EncoderStack.fromManifest(manifest, modules);
  trainedWith = { model: `${manifest.name}@${manifest.version}`, training: manifest.training };
  trainSeconds = manifest.training.durationSeconds;
  const { kind: _kind, ...adapter } = m.adapter;
  recipe = {
    dataset: train,
    adapter, // its mean/std as recorded, whatever data it was trained on
    channels: m.modules.map((x) => x.config.channels),
    strides: m.modules.map((x) => x.config.stride),
    residualKernels: m.modules.map((x) => residualKernel(x.config)),
    // The grid's prediction geometry too: a stack trained on a small grid with short offsets
    // (e.g. --patch-stride 5 --offsets 2,3,4) is refused the default offsets 2..5.
    train: { seed: manifest.training.seed, ...predictionGeometry(manifest.training.config) },
  };
} else {
  const args = recipeFromArgs(values);
  recipe = {
    dataset: train,
    channels: args.channels,
    ...(args.residualKernels ? { residualKernels: args.residualKernels } : {}),
    adapter: { patchStride: args.patchStride },
    train: { ...args.train, epochs: Number(values.epochs) },
  };
  const outcome = await trainImageStack({
    ...recipe,
    backend: backend.name,
    callbacks: progressCallbacks(progress),
  });
  progress.stop();
  stack = outcome.stack;
  trainedWith = { training: outcome.draft.manifest.training };
  trainSeconds = outcome.result.durationSeconds;
}
const twin = await trainImageStack({
  ...recipe,
  train: { ...recipe.train, epochs: 0 },
  backend: backend.name,
});
if (JSON.stringify(twin.stack.moduleConfigs) !== JSON.stringify(stack.moduleConfigs))
  throw new Error('the untrained twin has other modules than the stack it stands beside');
const layers = stack.modules.map((_, i) => i + 1);
const onProgress = (what: string, d: number, t: number) => progress.update(d, t, what);

const gim = await probeLayers(stack, train, test, layers, poolings, {
  probe: { epochs: probeEpochs },
  onProgress,
  onRow: (r) =>
    progress.log(`GIM layer ${r.layer} ${r.pooling}: test ${(100 * r.testAccuracy).toFixed(2)}%`),
});
const random = twin.stack;
const rand = await probeLayers(random, train, test, layers, poolings, {
  probe: { epochs: probeEpochs },
  onProgress,
  onRow: (r) =>
    progress.log(
      `random layer ${r.layer} ${r.pooling}: test ${(100 * r.testAccuracy).toFixed(2)}%`,
    ),
});
random.dispose();
const pixels = probeFeatures(await pixelFeatures(train), await pixelFeatures(test), classes, {
  epochs: probeEpochs,
});
stack.dispose();

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const table: (string | number)[][] = [
  ['raw pixels', '-', '-', 784, pct(pixels.trainAccuracy), pct(pixels.testAccuracy)],
];
const add = (name: string, rows: ProbeRow[]) =>
  rows.forEach((r) =>
    table.push([name, r.layer, r.pooling, r.dim, pct(r.trainAccuracy), pct(r.testAccuracy)]),
  );
add('GIM', gim);
add(`random init (seed ${twin.draft.manifest.training.seed})`, rand);
printTable(['encoder', 'layer', 'pooling', 'dim', 'train acc', 'test acc'], table);
const best = gim.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
const bestRandom = rand.reduce((a, b) => (b.testAccuracy > a.testAccuracy ? b : a));
const randomSamePooling = rand.find(
  (r) => r.layer === best.layer && r.pooling === best.pooling,
) as ProbeRow;
const bestPerLayer = layers.map((l) =>
  Math.max(...gim.filter((g) => g.layer === l).map((g) => g.testAccuracy)),
);
const monotone = bestPerLayer.every((v, i) => i === 0 || v >= (bestPerLayer[i - 1] as number));
const totalSeconds = (performance.now() - started) / 1000;
const points = (x: number) => (x * 100).toFixed(2);
process.stdout.write(
  `\nbest GIM: layer ${best.layer} ${best.pooling} ${pct(best.testAccuracy)} ` +
    `(${points(best.testAccuracy - pixels.testAccuracy)} points over raw pixels ${pct(pixels.testAccuracy)}; ` +
    `${points(best.testAccuracy - randomSamePooling.testAccuracy)} over random init with the same pooling ` +
    `${pct(randomSamePooling.testAccuracy)}; best random-init ${pct(bestRandom.testAccuracy)})\n` +
    `best per layer ${bestPerLayer.map(pct).join(' / ')} (${monotone ? 'each' : 'NOT each'} deeper >= the one below)\n` +
    `targets (issue 13): >= 90% ${best.testAccuracy >= 0.9 ? 'met' : 'missed'}; ` +
    `>= 4 points over random init ${best.testAccuracy - randomSamePooling.testAccuracy >= 0.04 ? 'met' : 'missed'}; ` +
    `monotone ${monotone ? 'met' : 'missed'}\n` +
    `time: training ${duration(trainSeconds)}, total ${duration(totalSeconds)} on ${backend.name}\n`,
);
await writeResult(values.out as string, {
  machine: machine(),
  backend: backend.name,
  trainedWith,
  probeEpochs,
  rawPixels: pixels,
  gim,
  randomInit: rand,
  randomInitTraining: twin.draft.manifest.training,
  best,
  bestRandom,
  randomSamePooling,
  bestPerLayer,
  monotone,
  seconds: { training: trainSeconds, total: totalSeconds },
  targets: { bestTestAccuracy: 0.9, pointsOverRandomSamePooling: 4, monotone: true },
});
