import { Command, InvalidArgumentError, Option } from 'commander';
import { POOLINGS, parsePooling } from '../../gim/encoders/pooling.js';
import { openHeadData, trainHead } from '../../gim/classify/train-head.js';
import { EARLY_STOPPING_RULES, type EarlyStoppingRule } from '../../gim/classify/early-stopping.js';
import {
  DEFAULT_HEAD_OPTIONS,
  type ClassWeighting,
  type HeadReport,
  type HeadTrainingOptions,
} from '../../gim/classify/fit-head.js';
import type { ClassificationMetrics } from '../../gim/classify/classification-report.js';
import { DATASET_SPEC_HELP } from '../../gim/data/open-dataset.js';
import { HeadStore } from '../../gim/store/head-store.js';
import type { HeadManifest } from '../../gim/store/head-manifest.js';
import {
  backendOption,
  int,
  loadAnyStack,
  modelsDirOption,
  parseLayers,
  positiveNumber,
  startBackend,
} from '../shared.js';
import { Progress } from '../progress.js';
import { fitProgress } from '../fit-progress.js';
import {
  reportedRun,
  withProgressJsonOptions,
  type ProgressJsonOptions,
  type RunContext,
} from '../reported-run.js';

interface TrainHeadOptions extends ProgressJsonOptions {
  model: string;
  layer: string;
  pooling: string;
  normalize?: boolean;
  data: string;
  testData?: string;
  name: string;
  epochs: number;
  batchSize: number;
  lr: number;
  l2: number;
  classWeights: ClassWeighting;
  valFraction: number;
  earlyStopping: EarlyStoppingRule;
  patience: number;
  seed: number;
  label: string[];
  json?: boolean;
  modelsDir: string;
  backend?: string;
}

const D = DEFAULT_HEAD_OPTIONS;
const FILE_LIST_HELP = "or a .csv ('path,label' rows) / .json ([{path, label}]) file list";

export function classifierCommand(): Command {
  return new Command('classifier')
    .description('linear classification heads on frozen embeddings of one layer of a stack')
    .addCommand(trainCommand())
    .addCommand(listCommand());
}

function trainCommand(): Command {
  return withProgressJsonOptions(new Command('train'))
    .description('train a softmax-regression head on one layer, print its report and publish it')
    .requiredOption('--model <ref>', 'stack: name, name@version or name@label')
    .requiredOption(
      '--layer <k>',
      'layer 1..K or last; or best (every layer), or a list such as 2,3: the best on validation',
    )
    .option(
      '--pooling <p>',
      `${POOLINGS.join(', ')} (audio: mean, max, meanstd); or a list such as mean,grid2: the best on validation`,
      'mean',
    )
    .option('--normalize', 'L2-normalise each pooled vector before the head')
    .requiredOption(
      '--data <spec>',
      `labelled data: ${DATASET_SPEC_HELP}, a speaker folder (audio), ${FILE_LIST_HELP}`,
    )
    .option('--test-data <spec>', 'labelled data to score the head on (same forms as --data)')
    .requiredOption('--name <head>', 'head name (versions are numbered under it)')
    .option('--epochs <n>', 'at most this many epochs', int(1), D.epochs)
    .option('--batch-size <n>', 'minibatch size', int(1), D.batchSize)
    .option('--lr <x>', 'Adam learning rate', positiveNumber, D.learningRate)
    .option('--l2 <x>', 'L2 penalty on the weights', nonNegative, D.l2)
    .option(
      '--class-weights <w>',
      'none, balanced (inverse frequency) or one weight per class in sorted class-name order, e.g. 1,4',
      classWeights,
      D.classWeights,
    )
    .option(
      '--val-fraction <f>',
      'stratified share held out for early stopping (0: none)',
      fraction,
      D.validationFraction,
    )
    .addOption(
      new Option(
        '--early-stopping <rule>',
        'what a better validation epoch is: accuracy (ties: lower loss) or loss; its weights are kept',
      )
        .choices([...EARLY_STOPPING_RULES])
        .default(D.earlyStopping),
    )
    .option(
      '--patience <n>',
      'epochs without a better validation epoch before stopping',
      int(1),
      D.patience,
    )
    .option('--seed <n>', 'split and training seed', int(0), D.seed)
    .option('--label <label...>', 'labels to point at the new head version', ['latest'])
    .option('--json', 'print the published manifest as JSON')
    .addOption(modelsDirOption())
    .addOption(backendOption())
    .action((o: TrainHeadOptions) =>
      reportedRun({ ...o, command: 'classifier-train', name: o.name }, async (ctx) => {
        await startBackend(o.backend, o.json, ctx.log);
        await trainAndPublishHead(
          {
            model: o.model,
            name: o.name,
            layer: o.layer,
            pooling: o.pooling,
            normalize: Boolean(o.normalize),
            data: o.data,
            testData: o.testData,
            options: {
              epochs: o.epochs,
              batchSize: o.batchSize,
              learningRate: o.lr,
              l2: o.l2,
              classWeights: o.classWeights,
              validationFraction: o.valFraction,
              earlyStopping: o.earlyStopping,
              patience: o.patience,
              seed: o.seed,
            },
            labels: o.label,
            modelsDir: o.modelsDir,
            json: o.json,
          },
          ctx,
        );
      }),
    );
}

/** What `trainAndPublishHead` trains: the `classifier train` options, resolved. */
export interface HeadTrainRequest {
  /** Stack ref: name, name@version or name@label. */
  model: string;
  name: string;
  /** `1..K`, `last`, `best` or a list: several are compared on validation. */
  layer: string;
  /** One pooling or a list. */
  pooling: string;
  normalize: boolean;
  data: string;
  testData?: string;
  options: HeadTrainingOptions;
  labels: string[];
  modelsDir: string;
  json?: boolean;
  /** `published` event of the head (default true; a promotion reports its heads itself). */
  emitPublished?: boolean;
}

/**
 * Trains a head on frozen embeddings of a stack and publishes it: progress and `published` /
 * `result` events on the run's stream, the report on its output. The backend must be started.
 */
export async function trainAndPublishHead(
  o: HeadTrainRequest,
  ctx: RunContext,
): Promise<HeadManifest> {
  const { events } = ctx;
  const say = (line: string) => {
    ctx.out.write(`${line}\n`);
    events.emit({ type: 'log', line });
  };
  const { manifest, stack, spaceDigests } = await loadAnyStack(o.modelsDir, o.model);
  try {
    const layers = parseLayers(o.layer === 'best' ? 'all' : o.layer, stack.depth);
    const poolings = o.pooling.split(',').map((p) => parsePooling(p.trim()));
    const progress = new Progress('classifier', 5000);
    const dataset = await openHeadData(o.data, stack);
    const testDataset = o.testData ? await openHeadData(o.testData, stack) : undefined;
    const items = 'paths' in dataset ? dataset.paths.length : dataset.info.count;
    const epochs = o.options.epochs;
    const fitEpoch = fitProgress(epochs, items);
    const trained = await trainHead({
      stack,
      manifest,
      spaceDigests,
      dataset,
      testDataset,
      layer: layers,
      pooling: poolings,
      normalize: o.normalize,
      options: o.options,
      onProgress: (what, d, t) => progress.update(d, t, what),
      onCandidate: (c) =>
        o.json ||
        say(
          `layer ${c.layer}  ${c.pooling.padEnd(5)}  dim ${String(c.dim).padStart(5)}  ` +
            `validation ${pct(c.validationAccuracy)}  loss ${c.validationLoss.toFixed(4)}`,
        ),
      onEpoch: (e, loss, v, fit) => {
        events.progress(fitEpoch(e, loss, v, fit), true);
        progress.update(
          e,
          epochs,
          `loss ${loss.toFixed(4)}${v === undefined ? '' : ` val ${v.toFixed(4)}`}`,
        );
      },
      signal: ctx.signal,
    });
    progress.stop();
    ctx.throwIfStopped();
    ctx.publishing();
    const store = new HeadStore(o.modelsDir);
    const head = await store.publish(manifest.name, o.name, trained.draft, { labels: o.labels });
    if (o.emitPublished !== false) {
      events.emit({
        type: 'published',
        kind: 'head',
        name: head.name,
        model: manifest.name,
        version: head.version,
        labels: o.labels,
      });
      events.emit({ type: 'result', ...headResult(head) });
    }
    if (o.json) {
      ctx.out.write(`${JSON.stringify(head, null, 2)}\n`);
      return head;
    }
    if (trained.layerSearch)
      say(
        `chose layer ${head.encoder.layer} ${head.encoder.pooling} (highest validation accuracy)`,
      );
    ctx.out.write(describeHead(head));
    ctx.out.write(formatReport(trained.report));
    say(
      `published head ${head.name}@${head.version} of ${manifest.name} (labels: ${o.labels.join(', ')})`,
    );
    return head;
  } finally {
    stack.dispose();
  }
}

/** The `result` event of a head: where it reads, and its scores on each set. */
function headResult(h: HeadManifest): Record<string, unknown> {
  const score = (m: ClassificationMetrics | null) =>
    m && { accuracy: m.accuracy, loss: m.loss, macroF1: m.macroF1, items: m.items };
  return {
    model: h.encoder.name,
    modelVersion: h.encoder.version,
    layer: h.encoder.layer,
    pooling: h.encoder.pooling,
    classes: h.classes,
    epochs: h.metrics.epochs,
    bestEpoch: h.metrics.bestEpoch,
    metrics: {
      train: score(h.metrics.train),
      validation: score(h.metrics.validation),
      test: score(h.metrics.test),
    },
  };
}

function listCommand(): Command {
  return new Command('list')
    .description('list the heads of a stack: versions, labels, layer, pooling and accuracy')
    .requiredOption('--model <name>', 'stack name')
    .option('--json', 'print JSON')
    .addOption(modelsDirOption())
    .action(async (o: { model: string; json?: boolean; modelsDir: string }) => {
      const store = new HeadStore(o.modelsDir);
      const rows = [];
      for (const h of await store.list(o.model))
        for (const v of h.versions) {
          const m = await store.loadManifest(o.model, `${h.name}@${v}`);
          rows.push({
            name: h.name,
            version: v,
            labels: Object.entries(h.labels)
              .filter(([, lv]) => lv === v)
              .map(([l]) => l),
            encoder: m.encoder,
            classes: m.classes,
            validationAccuracy: m.metrics.validation?.accuracy ?? null,
            testAccuracy: m.metrics.test?.accuracy ?? null,
            createdAt: m.createdAt,
          });
        }
      if (o.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (rows.length === 0) process.stdout.write(`no heads for ${o.model} in ${store.root}\n`);
      for (const r of rows) {
        const acc = (what: string, a: number | null) => (a === null ? '' : `  ${what} ${pct(a)}`);
        process.stdout.write(
          `${r.name}@${r.version}${r.labels.length ? ` [${r.labels.join(', ')}]` : ''}  ` +
            `on ${r.encoder.name}@${r.encoder.version} layer ${r.encoder.layer} ${r.encoder.pooling}` +
            `${r.encoder.normalize ? ' normalized' : ''}  ${r.classes.length} classes` +
            `${acc('val', r.validationAccuracy)}${acc('test', r.testAccuracy)}  ${r.createdAt}\n`,
        );
      }
    });
}

function describeHead(h: HeadManifest): string {
  const e = h.encoder;
  const r = h.metrics;
  return (
    `head ${h.name}@${h.version} on ${e.name}@${e.version} layer ${e.layer} ${e.pooling}` +
    `${e.normalize ? ' normalized' : ''} (dim ${h.featureDim}), ${h.classes.length} classes, ` +
    `${r.train.items} train / ${r.validation?.items ?? 0} validation items\n` +
    `epochs ${r.epochs} (best ${r.bestEpoch}${r.stoppedEarly ? ', stopped early' : ''})\n`
  );
}

/** Accuracy, per-class precision/recall/F1 and the confusion matrix of each scored set. */
export function formatReport(report: HeadReport): string {
  const sets: [string, ClassificationMetrics | null][] = [
    ['train', report.train],
    ['validation', report.validation],
    ['test', report.test],
  ];
  let out = '';
  for (const [name, m] of sets) {
    if (!m) continue;
    const width = Math.max(5, ...m.perClass.map((c) => c.label.length));
    const num = (v: number | null) => (v === null ? '-' : v.toFixed(3)).padStart(9);
    out += `\n${name}: accuracy ${pct(m.accuracy)}  loss ${m.loss.toFixed(4)}  macro-F1 ${m.macroF1.toFixed(3)}  (${m.items} items)\n`;
    out += `  ${'class'.padEnd(width)} precision    recall        f1   support\n`;
    for (const c of m.perClass)
      out += `  ${c.label.padEnd(width)} ${num(c.precision)} ${num(c.recall)} ${num(c.f1)} ${String(c.support).padStart(9)}\n`;
    const cell = Math.max(5, ...m.confusion.flat().map((v) => String(v).length));
    out += `  confusion (rows: true class, columns: predicted, in the order above)\n`;
    m.confusion.forEach((row, i) => {
      out += `  ${(m.perClass[i]?.label ?? '').padEnd(width)} ${row.map((v) => String(v).padStart(cell)).join(' ')}\n`;
    });
  }
  return `${out}\n`;
}

function pct(v: number): string {
  return `${(100 * v).toFixed(2)}%`;
}

function nonNegative(value: string): number {
  const n = Number(value);
  if (!(Number.isFinite(n) && n >= 0)) throw new InvalidArgumentError('expected a number >= 0');
  return n;
}

function fraction(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n < 1)) throw new InvalidArgumentError('expected a number in [0, 1)');
  return n;
}

function classWeights(value: string): ClassWeighting {
  if (value === 'none' || value === 'balanced') return value;
  const weights = value.split(',').map((s) => Number(s.trim()));
  if (weights.length < 2 || weights.some((w) => !(Number.isFinite(w) && w >= 0)))
    throw new InvalidArgumentError("expected 'none', 'balanced' or weights such as 1,4,1");
  return weights;
}
