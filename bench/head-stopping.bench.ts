/**
 * npm run bench:head-stopping — which early-stopping rule gives classification heads the best
 * held-out accuracy (needs Debian's dataset-fashion-mnist).
 *
 * Features of a published stack (default the shipped `fashion-gim`, layer 3, pooling grid2) on a
 * class-balanced subset of the Fashion-MNIST training set (--train-items, default 10,000) and on
 * all 10,000 test images, computed once and cached under the OS temp directory. For each seed,
 * one head is trained as `fitHead` trains it (stratified 10% validation split, Adam, the head
 * defaults) for --max-epochs epochs without stopping, scoring validation and test after every
 * epoch. The stopping rules are then replayed on that trajectory (a rule only decides when to
 * stop and which epoch's weights to keep, so the replay is exact): the trainer's two with the
 * same `EarlyStopping` class it uses, checked against real `fitHead` runs of the default and the
 * old rule, and a few variants written here (ties kept first, stop by one rule and keep by the
 * other, patience on either). Rules without a split (fixed epochs on every item) are fitted separately. The test set
 * plays no part in any choice. Prints a table, writes bench/results/head-stopping.json.
 *
 * Each rule is run at several Adam settings (--adam lr:batch,...; default the heads' old 0.01:64,
 * today's default and the probe's 0.003:256). About 10 minutes on 2 cores with wasm.
 *
 * Options: --model REF (default fashion-gim), --models-dir, --layer (3), --pooling (grid2),
 * --train-items (10000), --seeds (1,2,3,4,5), --max-epochs (100), --adam, --skip-fixed (no
 * fixed-epoch fits without a split), --out.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { selectBackend } from '../src/gim/backend/index.js';
import { stratifiedSplit } from '../src/gim/data/dataset.js';
import { parsePooling } from '../src/gim/encoders/pooling.js';
import { EarlyStopping, type EarlyStoppingRule } from '../src/gim/classify/early-stopping.js';
import { extractFeatures, featureKey } from '../src/gim/classify/features.js';
import {
  DEFAULT_HEAD_OPTIONS,
  fitHead,
  subset,
  validationSplit,
} from '../src/gim/classify/fit-head.js';
import {
  DEFAULT_PROBE_OPTIONS,
  LinearProbe,
  type FeatureSet,
} from '../src/gim/classify/linear-probe.js';
import { EncoderStack } from '../src/gim/encoders/encoder-stack.js';
import { StackStore } from '../src/gim/store/stack-store.js';
import { Progress } from '../src/cli/progress.js';
import { fashionMnist, machine, printTable, writeResult } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'fashion-gim' },
    'models-dir': { type: 'string', default: 'models' },
    layer: { type: 'string', default: '3' },
    pooling: { type: 'string', default: 'grid2' },
    'train-items': { type: 'string', default: '10000' },
    seeds: { type: 'string', default: '1,2,3,4,5' },
    'max-epochs': { type: 'string', default: '100' },
    adam: { type: 'string' },
    'skip-fixed': { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/results/head-stopping.json' },
  },
});
const LAYER = Number(values.layer);
const POOLING = parsePooling(values.pooling as string);
const TRAIN_ITEMS = Number(values['train-items']);
const SEEDS = (values.seeds as string).split(',').map(Number);
const MAX_EPOCHS = Number(values['max-epochs']);
const log = (line: string) => process.stderr.write(`${line}\n`);
const started = performance.now();
const backend = await selectBackend({ log });

// ---------------------------------------------------------------- features, cached

async function features(): Promise<{ train: FeatureSet; test: FeatureSet; source: string }> {
  const { manifest, modules } = await new StackStore(values['models-dir'] as string).load(
    values.model as string,
  );
  const source = `${manifest.name}@${manifest.version} layer ${LAYER} ${POOLING}`;
  const key = createHash('sha256')
    .update(JSON.stringify([manifest.name, manifest.version, manifest.createdAt]))
    .update(JSON.stringify([LAYER, POOLING, TRAIN_ITEMS]))
    .digest('hex')
    .slice(0, 16);
  const dir = join(tmpdir(), 'gim-bench-cache');
  const file = (split: string) => join(dir, `head-stopping-${key}-${split}.bin`);
  const cached = await Promise.all([readSet(file('train')), readSet(file('test'))]);
  if (cached[0] && cached[1]) {
    log(`features from ${dir} (${source})`);
    return { train: cached[0], test: cached[1], source };
  }
  const { dataset: trainData } = await fashionMnist('train', { requireFull: true });
  const { dataset: testData } = await fashionMnist('test', { requireFull: true });
  const labels = (
    await trainData.read(Int32Array.from({ length: trainData.info.count }, (_, i) => i))
  ).labels;
  // A class-balanced subset: Fashion-MNIST has 6,000 of each class, so 1,000 each at 10,000.
  const picked = stratifiedSplit(labels, TRAIN_ITEMS / trainData.info.count, 0).test;
  const stack = await EncoderStack.fromManifest(manifest, modules);
  const progress = new Progress('features', 10_000);
  const embed = async (data: typeof trainData, what: string, sub?: Int32Array) => {
    const sets = await extractFeatures(stack, data, [LAYER], [POOLING], {
      subset: sub,
      onProgress: (d, t) => progress.update(d, t, what),
    });
    return sets.get(featureKey(LAYER, POOLING)) as FeatureSet;
  };
  try {
    const train = await embed(trainData, 'embed train', picked);
    const test = await embed(testData, 'embed test');
    progress.stop();
    await mkdir(dir, { recursive: true });
    await writeSet(file('train'), train);
    await writeSet(file('test'), test);
    return { train, test, source };
  } finally {
    stack.dispose();
  }
}

async function readSet(path: string): Promise<FeatureSet | null> {
  const buf = await readFile(path).catch(() => null);
  if (!buf) return null;
  const [n, dim] = [buf.readUInt32LE(0), buf.readUInt32LE(4)];
  const bytes = buf.buffer.slice(buf.byteOffset + 8, buf.byteOffset + buf.length);
  return {
    n,
    dim,
    x: new Float32Array(bytes, 0, n * dim),
    y: new Int32Array(bytes, n * dim * 4, n),
  };
}

async function writeSet(path: string, set: FeatureSet): Promise<void> {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(set.n, 0);
  head.writeUInt32LE(set.dim, 4);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, Buffer.concat([head, Buffer.from(set.x.buffer), Buffer.from(set.y.buffer)]));
  await rename(tmp, path);
}

// ---------------------------------------------------------------- one trajectory per seed

/** Adam's step size and minibatch: the head defaults, and the probe's (bench:probe, gim probe). */
interface Hyper {
  name: string;
  learningRate: number;
  batchSize: number;
}
const H = DEFAULT_HEAD_OPTIONS;
const P = DEFAULT_PROBE_OPTIONS;
/** --adam lr:batch,...: the Adam settings to compare (default: the old head's and the probe's). */
const HYPERS: Hyper[] = values.adam
  ? values.adam.split(',').map((spec) => {
      const [lr, batch] = spec.split(':').map(Number);
      if (!(lr! > 0 && Number.isInteger(batch) && batch! > 0))
        throw new Error(`--adam: expected lr:batch pairs such as 0.003:256, got ${spec}`);
      return { name: `lr ${lr} b${batch}`, learningRate: lr!, batchSize: batch! };
    })
  : [
      { name: 'lr 0.01 b64', learningRate: 0.01, batchSize: 64 }, // the heads' defaults before
      { name: `lr ${H.learningRate} b${H.batchSize}`, ...pick(H) },
      { name: `lr ${P.learningRate} b${P.batchSize}`, ...pick(P) },
    ];
function pick(o: { learningRate: number; batchSize: number }) {
  return { learningRate: o.learningRate, batchSize: o.batchSize };
}

interface Trajectory {
  seed: number;
  hyper: string;
  validationLoss: number[];
  validationAccuracy: number[];
  testAccuracy: number[];
  seconds: number;
}

/** A head trained as fitHead trains it, never stopping, scored after every epoch. */
function trajectory(train: FeatureSet, test: FeatureSet, seed: number, hyper: Hyper): Trajectory {
  const t0 = performance.now();
  const split = validationSplit(train.y, H.validationFraction, seed);
  const testAccuracy: number[] = [];
  const probe = LinearProbe.fit(
    subset(train, split.train),
    10,
    {
      epochs: MAX_EPOCHS,
      batchSize: hyper.batchSize,
      learningRate: hyper.learningRate,
      l2: H.l2,
      seed,
      patience: MAX_EPOCHS, // never stops
      classWeights: null,
    },
    undefined,
    subset(train, split.validation),
    (_epoch, p) => testAccuracy.push(p.accuracy(test)),
  );
  const { validationLoss, validationAccuracy } = probe.history;
  probe.dispose();
  return {
    seed,
    hyper: hyper.name,
    validationLoss,
    validationAccuracy,
    testAccuracy,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** A rule replayed on a trajectory: the epoch it stops at and the epoch whose weights it keeps. */
interface Outcome {
  stop: number;
  kept: number;
}

const scoresAt = (t: Trajectory, e: number) => ({
  loss: t.validationLoss[e - 1] as number,
  accuracy: t.validationAccuracy[e - 1] as number,
});

function replay(t: Trajectory, rule: EarlyStoppingRule, patience: number): Outcome {
  const s = new EarlyStopping(rule, patience);
  for (let e = 1; e <= MAX_EPOCHS; e++) {
    s.update(e, scoresAt(t, e));
    if (s.exhausted(e) && e < MAX_EPOCHS) return { stop: e, kept: s.bestEpoch };
  }
  return { stop: MAX_EPOCHS, kept: s.bestEpoch };
}

/** Stops by one rule, keeps the best epoch seen under another. */
function stopByKeepBy(
  t: Trajectory,
  stopRule: EarlyStoppingRule,
  keepRule: EarlyStoppingRule,
  patience: number,
): Outcome {
  const { stop } = replay(t, stopRule, patience);
  const keep = new EarlyStopping(keepRule, 1);
  for (let e = 1; e <= stop; e++) keep.update(e, scoresAt(t, e));
  return { stop, kept: keep.bestEpoch };
}

/** Higher validation accuracy only: an equal one is no improvement. */
function strictAccuracy(t: Trajectory, patience: number): Outcome {
  let kept = 0;
  for (let e = 1; e <= MAX_EPOCHS; e++) {
    if (kept === 0 || scoresAt(t, e).accuracy > scoresAt(t, kept).accuracy) kept = e;
    if (e - kept >= patience && e < MAX_EPOCHS) return { stop: e, kept };
  }
  return { stop: MAX_EPOCHS, kept };
}

/** Patience counts epochs where neither loss nor accuracy improved; keeps the best accuracy. */
function eitherImproves(t: Trajectory, patience: number): Outcome {
  const byLoss = new EarlyStopping('loss', 1);
  const byAcc = new EarlyStopping('accuracy', 1);
  let last = 0;
  for (let e = 1; e <= MAX_EPOCHS; e++) {
    const a = byLoss.update(e, scoresAt(t, e));
    const b = byAcc.update(e, scoresAt(t, e));
    if (a || b) last = e;
    if (e - last >= patience && e < MAX_EPOCHS) return { stop: e, kept: byAcc.bestEpoch };
  }
  return { stop: MAX_EPOCHS, kept: byAcc.bestEpoch };
}

/** A head without a validation split: fixed epochs on every training item. */
function fixedOnAll(
  train: FeatureSet,
  test: FeatureSet,
  seed: number,
  epochs: number,
  hyper: Hyper,
): number {
  const probe = LinearProbe.fit(train, 10, {
    learningRate: hyper.learningRate,
    batchSize: hyper.batchSize,
    epochs,
    l2: H.l2,
    seed,
    classWeights: null,
  });
  try {
    return probe.accuracy(test);
  } finally {
    probe.dispose();
  }
}

// ---------------------------------------------------------------- main

const { train, test, source } = await features();
log(
  `${source}: ${train.n} training items (dim ${train.dim}), ${test.n} test; backend ${backend.name}`,
);

interface RuleRow {
  hyper: string;
  rule: string;
  perSeed: { seed: number; testAccuracy: number; stop: number; kept: number }[];
}
const rows: RuleRow[] = [];
const allTrajectories: Trajectory[] = [];
for (const hyper of HYPERS) {
  const trajectories: Trajectory[] = [];
  for (const seed of SEEDS) {
    const t = trajectory(train, test, seed, hyper);
    log(`${hyper.name} seed ${seed}: ${MAX_EPOCHS} epochs in ${t.seconds.toFixed(0)} s`);
    trajectories.push(t);
  }
  allTrajectories.push(...trajectories);
  const onTrajectories = (rule: string, outcome: (t: Trajectory) => Outcome) =>
    rows.push({
      hyper: hyper.name,
      rule,
      perSeed: trajectories.map((t) => {
        const o = outcome(t);
        return { seed: t.seed, testAccuracy: t.testAccuracy[o.kept - 1] as number, ...o };
      }),
    });
  for (const p of [10, 20]) onTrajectories(`val loss, patience ${p}`, (t) => replay(t, 'loss', p));
  onTrajectories('val accuracy (ties: first), patience 10', (t) => strictAccuracy(t, 10));
  for (const p of [5, 10, 20, 30])
    onTrajectories(`val accuracy (ties: lower loss), patience ${p}`, (t) =>
      replay(t, 'accuracy', p),
    );
  onTrajectories('stop on val loss (p10), keep best val accuracy', (t) =>
    stopByKeepBy(t, 'loss', 'accuracy', 10),
  );
  onTrajectories('patience on loss or accuracy (p10), keep best accuracy', (t) =>
    eitherImproves(t, 10),
  );
  for (const e of [20, 50, MAX_EPOCHS].filter((e) => e <= MAX_EPOCHS))
    onTrajectories(`fixed ${e} epochs on 90%, last weights`, () => ({ stop: e, kept: e }));
  for (const epochs of values['skip-fixed'] ? [] : [20]) {
    const t0 = performance.now();
    rows.push({
      hyper: hyper.name,
      rule: `fixed ${epochs} epochs on all (no split)`,
      perSeed: SEEDS.map((seed) => ({
        seed,
        testAccuracy: fixedOnAll(train, test, seed, epochs, hyper),
        stop: epochs,
        kept: epochs,
      })),
    });
    log(`${hyper.name} fixed ${epochs} on all: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
}

// The replay is the trainer: real fitHead runs must stop and keep where the replay says, with
// the same test accuracy: the old rule and Adam settings, and today's defaults.
const classes = Array.from({ length: 10 }, (_, i) => String(i));
const seed = SEEDS[0] as number;
const checkCases: { name: string; hyper: Hyper; options: Partial<typeof H> }[] = [
  {
    name: 'old defaults (loss, lr 0.01 b64)',
    hyper: { name: 'lr 0.01 b64', learningRate: 0.01, batchSize: 64 },
    options: { earlyStopping: 'loss', learningRate: 0.01, batchSize: 64 },
  },
  { name: 'defaults', hyper: { name: '', ...pick(H) }, options: {} },
];
const checks = checkCases.flatMap(({ name, hyper, options }) => {
  const t = allTrajectories.find(
    (x) => x.seed === seed && x.hyper === `lr ${hyper.learningRate} b${hyper.batchSize}`,
  );
  if (!t) return [];
  const fit = fitHead(train, classes, { epochs: MAX_EPOCHS, seed, ...options }, { test });
  const want = replay(t, fit.training.earlyStopping, fit.training.patience);
  const got = { stop: fit.report.epochs, kept: fit.report.bestEpoch };
  const testAccuracy = fit.report.test?.accuracy ?? NaN;
  const ok =
    got.stop === want.stop &&
    got.kept === want.kept &&
    Math.abs(testAccuracy - (t.testAccuracy[want.kept - 1] as number)) < 1e-9;
  if (!ok)
    throw new Error(
      `fitHead (${name}) stopped at ${got.stop} keeping ${got.kept} (test ${testAccuracy}); ` +
        `the replay says ${want.stop} keeping ${want.kept}`,
    );
  return [{ name, seed, rule: fit.training.earlyStopping, ...got, testAccuracy }];
});

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(xs.length - 1, 1));
};
const pct = (x: number) => (100 * x).toFixed(2);
const summary = rows.map((r) => {
  const acc = r.perSeed.map((s) => s.testAccuracy);
  return {
    ...r,
    meanTestAccuracy: mean(acc),
    sdTestAccuracy: sd(acc),
    meanStop: mean(r.perSeed.map((s) => s.stop)),
    meanKept: mean(r.perSeed.map((s) => s.kept)),
  };
});
process.stdout.write(
  `\nhead early stopping: ${source}, ${train.n} train (10% validation where split), ` +
    `${test.n} test, seeds ${SEEDS.join(',')}, at most ${MAX_EPOCHS} epochs, l2 ${H.l2}\n`,
);
printTable(
  ['adam', 'rule', 'test acc', 'sd', ...SEEDS.map((s) => `seed ${s}`), 'epochs', 'kept'],
  summary.map((r) => [
    r.hyper,
    r.rule,
    `${pct(r.meanTestAccuracy)}%`,
    pct(r.sdTestAccuracy),
    ...r.perSeed.map((s) => pct(s.testAccuracy)),
    r.meanStop.toFixed(1),
    r.meanKept.toFixed(1),
  ]),
);
const seconds = (performance.now() - started) / 1000;
process.stdout.write(
  `\nreplay checked against fitHead (seed ${seed}): ` +
    checks
      .map((c) => `${c.name} stops at ${c.stop}, keeps ${c.kept}, test ${pct(c.testAccuracy)}%`)
      .join('; ') +
    `\ntime ${seconds.toFixed(0)} s on ${backend.name}\n`,
);
await writeResult(values.out as string, {
  machine: machine(),
  backend: backend.name,
  features: { source, trainItems: train.n, testItems: test.n, dim: train.dim },
  headOptions: { ...H, epochs: MAX_EPOCHS },
  hypers: HYPERS,
  seeds: SEEDS,
  rules: summary,
  trajectories: allTrajectories,
  checks,
  seconds,
});
